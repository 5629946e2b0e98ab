#!/bin/bash
# SPDX-License-Identifier: MIT
# enospc.sh - a full pool: writes fail with ENOSPC, what was written stays
# readable, overwrites of allocated extents still work, the metadata stays
# consistent (umount commits, `vdpool check` is clean), and after an rm
# writes work again and df shows the space.
# shellcheck source=tests/e2e/lib.sh
. "$(dirname "$0")/lib.sh"

E=$((1024 * 1024)) # extent size
vdp_create full 2 64M --extent-size 1M
MNT=$VDP_TMP/mnt
vdp_mount full "$MNT"
total=$(df_total "$MNT")
free0=$(df_free "$MNT")
log "capacity $total, free $free0"
[ "$free0" -gt $((80 * E)) ] || die "an empty 2 x 64 MiB pool has only $free0 free"

step "fill the pool: dd must fail with ENOSPC"
randfile "$VDP_TMP/src" $((160 * E))
expect_fail "$VDP_TMP/err" dd if="$VDP_TMP/src" of="$MNT/a.img" bs=256K \
	conv=fsync
grep -q 'No space left on device' "$VDP_TMP/err" ||
	die "dd failed, but not with ENOSPC"
asize=$(fsize "$MNT/a.img")
log "a.img holds $asize bytes"
[ "$asize" -ge $((free0 - 2 * E)) ] && [ "$asize" -le "$free0" ] ||
	die "a.img has $asize bytes; the pool had $free0 free"
assert_free "$MNT" "$((free0 - (asize + E - 1) / E * E))" \
	"free space = capacity - a.img's extents"
cmp -n "$asize" "$VDP_TMP/src" "$MNT/a.img" || die "a.img differs from what was written"
log "ok: the written part of a.img reads back"

step "more writes to holes fail; overwrites of allocated extents work"
expect_fail "$VDP_TMP/err" dd if="$VDP_TMP/src" of="$MNT/b.img" bs=64K \
	count=1 conv=fsync
grep -q 'No space left on device' "$VDP_TMP/err" ||
	die "write to a new disk failed, but not with ENOSPC"
expect_fail "$VDP_TMP/err" fallocate -l 2M "$MNT/c.img"
grep -q 'No space left on device' "$VDP_TMP/err" ||
	die "fallocate failed, but not with ENOSPC"
run mkdir "$MNT/dir-when-full"
run touch "$MNT/dir-when-full/empty"
run truncate -s 1G "$MNT/dir-when-full/thin"
patch_bytes "$VDP_TMP/src" $((150 * E)) "$MNT/a.img" 12345 100000
patch_bytes "$VDP_TMP/src" $((150 * E)) "$VDP_TMP/src" 12345 100000
run sync "$MNT/a.img"
cmp -n "$asize" "$VDP_TMP/src" "$MNT/a.img" || die "overwrite when full failed"
log "ok: overwrite in a full pool"

step "umount commits; check is clean; the data is there after mount"
vdp_umount "$MNT"
vdp_check full
vdp_mount full "$MNT"
assert_eq "$(fsize "$MNT/a.img")" "$asize" "size of a.img after remount"
cmp -n "$asize" "$VDP_TMP/src" "$MNT/a.img" || die "a.img differs after remount"
[ -e "$MNT/dir-when-full/empty" ] || die "file made when full is gone"
assert_free "$MNT" "$((free0 - (asize + E - 1) / E * E))" \
	"free space after remount"

step "rm gives the space back; writes work again"
run rm "$MNT/a.img"
rm -f "$MNT/b.img" "$MNT/c.img"
assert_free "$MNT" "$free0" "free space after rm"
run dd if="$VDP_TMP/src" of="$MNT/b.img" bs=1M count=32 conv=fsync \
	status=none
cmp -n $((32 * E)) "$VDP_TMP/src" "$MNT/b.img" || die "b.img differs"
assert_free "$MNT" $((free0 - 32 * E)) "free after 32 MiB"

# Writers filling holes at once (QD 8) when the space they need was freed
# by an rm whose commit is still to run, or running for one of them: the
# others must wait for that commit, not fail with ENOSPC (they did, once
# holes were filled in parallel).
step "a full pool, rm, then parallel writes into holes all succeed"
need fio
run truncate -s 64M "$MNT/q.img"
run fallocate -l $(($(df_free "$MNT") - 4 * E)) "$MNT/filler.img"
fio --name=full --filename="$MNT/q.img" --rw=randwrite --bs=64k \
	--size=32M --ioengine=libaio --iodepth=8 --direct=1 \
	--output=/dev/null >/dev/null 2>&1 && die "fio on a full pool succeeded"
run rm "$MNT/filler.img"
run fio --name=after-rm --filename="$MNT/q.img" --rw=randwrite --bs=64k \
	--size=32M --ioengine=libaio --iodepth=8 --direct=1 --output=/dev/null ||
	die "parallel writes after rm failed"
log "ok: parallel hole filling after rm"
vdp_umount "$MNT"
vdp_check full
