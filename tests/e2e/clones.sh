#!/bin/bash
# SPDX-License-Identifier: MIT
# clones.sh - copy_file_range shares extents: `cp` of a dense disk and
# `qemu-img convert -C` make clones that take no space, each clone changes
# alone (copy-on-write on write, punch, zero range, truncate), removing the
# original keeps the clones, unaligned and holey ranges copy exactly as the
# source reads, two writers on two clones of one extent do not meet, status
# shows shared space, and all of it survives a remount and kill -9.
# Copies across two pools are the kernel's ordinary copy.
# shellcheck source=tests/e2e/lib.sh
. "$(dirname "$0")/lib.sh"
need qemu-img

M=$((1024 * 1024))
vdp_create c 2 512M
vdp_create o 1 128M
MNT=$VDP_TMP/mnt
OTHER=$VDP_TMP/other
vdp_mount c "$MNT"
vdp_mount o "$OTHER"
used() { echo $(($(df_total "$MNT") - $(df_free "$MNT"))); }
status_json() { "$VDPOOL" status --json "$MNT"; }

# cfr SRC SOFF DST DOFF LEN: one copy_file_range(2) call, as cp and qemu-img
# make them; prints the bytes copied.
cfr() {
	python3 - "$@" <<'EOF'
import os, sys
src, soff, dst, doff, n = sys.argv[1], *map(int, sys.argv[2:3]), sys.argv[3], *map(int, sys.argv[4:6])
fi = os.open(src, os.O_RDONLY)
fo = os.open(dst, os.O_WRONLY | os.O_CREAT, 0o644)
done = 0
while done < n:
    k = os.copy_file_range(fi, fo, n - done, soff + done, doff + done)
    if k == 0:
        break
    done += k
print(done)
EOF
}

step "cp of a dense disk is a clone: no data moves, no space taken"
randfile "$VDP_TMP/golden" $((40 * M + 12345))
run cp "$VDP_TMP/golden" "$MNT/golden.img"
before=$(used)
run cp "$MNT/golden.img" "$MNT/web1.img"
run cp "$MNT/web1.img" "$MNT/web1@snap.img"
run chmod a-w "$MNT/web1@snap.img"
after=$(used)
# Even the last, partial extent is shared: it ends both files.
[ $((after - before)) -eq 0 ] ||
	die "two clones of 41 MiB took $(((after - before) / M)) MiB"
log "ok: two clones took $(((after - before) / M)) MiB of the pool"
assert_cmp "$VDP_TMP/golden" "$MNT/web1.img" "web1.img"
assert_cmp "$VDP_TMP/golden" "$MNT/web1@snap.img" "web1@snap.img"
assert_eq "$(fblocks "$MNT/web1.img")" "$(fblocks "$MNT/golden.img")" \
	"st_blocks of the clone"
assert_eq "$(status_json | jq '[.disks[] | select(.path == "/web1@snap.img")][0].shared')" \
	$((41 * M)) "shared bytes of web1@snap.img"
[ "$(status_json | jq .saved_by_sharing)" -ge $((80 * M)) ] ||
	die "status: saved_by_sharing is $(status_json | jq .saved_by_sharing)"

step "each clone changes alone"
cp "$VDP_TMP/golden" "$VDP_TMP/web1"
randfile "$VDP_TMP/patch" $((3 * M + 777))
patch_bytes "$VDP_TMP/patch" 0 "$MNT/web1.img" $((5 * M + 100)) $((3 * M + 777))
patch_bytes "$VDP_TMP/patch" 0 "$VDP_TMP/web1" $((5 * M + 100)) $((3 * M + 777))
run fallocate -p -o $((20 * M)) -l $((2 * M)) "$MNT/web1.img"
run fallocate -p -o $((20 * M)) -l $((2 * M)) "$VDP_TMP/web1"
run fallocate -z -o $((30 * M + 5)) -l 1000 "$MNT/web1.img"
run fallocate -z -o $((30 * M + 5)) -l 1000 "$VDP_TMP/web1"
assert_cmp "$VDP_TMP/web1" "$MNT/web1.img" "web1.img after writes, punch, zero"
assert_cmp "$VDP_TMP/golden" "$MNT/golden.img" "golden.img untouched"
assert_cmp "$VDP_TMP/golden" "$MNT/web1@snap.img" "web1@snap.img untouched"
# Shrink, then grow over a shared extent: the regrown tail reads zeros in
# the clone, the others keep their bytes.
cp "$MNT/golden.img" "$MNT/t.img"
run truncate -s $((10 * M + 3)) "$MNT/t.img"
run truncate -s $((12 * M)) "$MNT/t.img"
head -c $((10 * M + 3)) "$VDP_TMP/golden" >"$VDP_TMP/t"
truncate -s $((12 * M)) "$VDP_TMP/t"
assert_cmp "$VDP_TMP/t" "$MNT/t.img" "t.img after shrink and regrow"
assert_cmp "$VDP_TMP/golden" "$MNT/golden.img" "golden.img untouched"

step "removing the original keeps the clones"
run rm "$MNT/golden.img"
assert_cmp "$VDP_TMP/web1" "$MNT/web1.img" "web1.img"
assert_cmp "$VDP_TMP/golden" "$MNT/web1@snap.img" "web1@snap.img"

step "qemu-img convert -C (copy offloading) shares too"
before=$(used)
run qemu-img convert -C -f raw -O raw "$MNT/web1@snap.img" "$MNT/db1.img"
after=$(used)
[ $((after - before)) -le $((2 * M)) ] ||
	die "qemu-img convert -C took $(((after - before) / M)) MiB"
# qemu-img rounds the size up to whole 512-byte sectors.
cp "$VDP_TMP/golden" "$VDP_TMP/db1"
truncate -s %512 "$VDP_TMP/db1"
assert_cmp "$VDP_TMP/db1" "$MNT/db1.img" "db1.img"

step "unaligned ranges and holes copy exactly as the source reads"
truncate -s $((9 * M)) "$VDP_TMP/holey"
patch_bytes "$VDP_TMP/patch" 0 "$VDP_TMP/holey" $((1 * M + 3)) $((2 * M))
patch_bytes "$VDP_TMP/patch" 7 "$VDP_TMP/holey" $((6 * M)) $((M / 2))
run cp --sparse=always "$VDP_TMP/holey" "$MNT/holey.img"
assert_eq "$(cfr "$MNT/holey.img" 0 "$MNT/h1.img" 0 $((9 * M)))" $((9 * M)) \
	"bytes copied"
assert_cmp "$VDP_TMP/holey" "$MNT/h1.img" "h1.img"
assert_eq "$(fblocks "$MNT/h1.img")" "$(fblocks "$MNT/holey.img")" \
	"st_blocks of the holey clone"
assert_eq "$(pyseek "$MNT/h1.img" $((4 * M)) DATA)" $((6 * M)) \
	"SEEK_DATA over the hole"
# Odd offsets on both sides, into an existing disk and beyond its end.
cp "$VDP_TMP/web1" "$VDP_TMP/x"
patch_bytes "$VDP_TMP/holey" 4097 "$VDP_TMP/x" $((3 * M + 511)) $((5 * M))
patch_bytes "$VDP_TMP/holey" 0 "$VDP_TMP/x" $((41 * M + 9)) $((9 * M))
cp "$MNT/web1.img" "$MNT/x.img"
assert_eq "$(cfr "$MNT/holey.img" 4097 "$MNT/x.img" $((3 * M + 511)) $((5 * M)))" \
	$((5 * M)) "bytes copied (unaligned)"
assert_eq "$(cfr "$MNT/holey.img" 0 "$MNT/x.img" $((41 * M + 9)) $((9 * M)))" \
	$((9 * M)) "bytes copied (past the end)"
assert_cmp "$VDP_TMP/x" "$MNT/x.img" "x.img"
assert_eq "$(cfr "$MNT/holey.img" $((8 * M)) "$MNT/x.img" 0 $((5 * M)))" $M \
	"bytes copied from 1 MiB before the source's end"
patch_bytes "$VDP_TMP/holey" $((8 * M)) "$VDP_TMP/x" 0 $M
assert_cmp "$VDP_TMP/x" "$MNT/x.img" "x.img"
expect_fail "$VDP_TMP/err" cfr "$MNT/x.img" 0 "$MNT/x.img" $M $((2 * M))
grep -q "Invalid argument" "$VDP_TMP/err" || die "overlap: $(cat "$VDP_TMP/err")"

step "two writers on two clones of the same extents"
cp "$MNT/web1.img" "$MNT/a.img"
cp "$MNT/web1.img" "$MNT/b.img"
randfile "$VDP_TMP/pa" $((8 * M))
randfile "$VDP_TMP/pb" $((8 * M))
writers=()
for i in 1 2 3 4; do
	dd if="$VDP_TMP/pa" of="$MNT/a.img" bs=64K oflag=direct conv=notrunc \
		seek=$((i * 16)) skip=$((i * 16)) count=64 status=none &
	writers+=($!)
	dd if="$VDP_TMP/pb" of="$MNT/b.img" bs=64K oflag=direct conv=notrunc \
		seek=$((i * 16)) skip=$((i * 16)) count=64 status=none &
	writers+=($!)
done
for pid in "${writers[@]}"; do
	wait "$pid" || die "a writer failed"
done
cp "$VDP_TMP/web1" "$VDP_TMP/a"
cp "$VDP_TMP/web1" "$VDP_TMP/b"
for i in 1 2 3 4; do
	dd if="$VDP_TMP/pa" of="$VDP_TMP/a" bs=64K conv=notrunc \
		seek=$((i * 16)) skip=$((i * 16)) count=64 status=none
	dd if="$VDP_TMP/pb" of="$VDP_TMP/b" bs=64K conv=notrunc \
		seek=$((i * 16)) skip=$((i * 16)) count=64 status=none
done
assert_cmp "$VDP_TMP/a" "$MNT/a.img" "a.img"
assert_cmp "$VDP_TMP/b" "$MNT/b.img" "b.img"
assert_cmp "$VDP_TMP/web1" "$MNT/web1.img" "web1.img untouched"

step "a copy from another pool is a plain copy"
run cp "$MNT/web1.img" "$OTHER/w.img"
assert_cmp "$VDP_TMP/web1" "$OTHER/w.img" "w.img in pool o"
vdp_umount "$OTHER"
vdp_check o

step "clones survive a remount and kill -9"
run cp "$MNT/db1.img" "$MNT/db2.img"
run sync "$MNT/db2.img"
vdp_kill "$MNT"
vdp_check c
vdp_mount c "$MNT"
assert_cmp "$VDP_TMP/golden" "$MNT/web1@snap.img" "web1@snap.img"
assert_cmp "$VDP_TMP/db1" "$MNT/db1.img" "db1.img"
assert_cmp "$VDP_TMP/db1" "$MNT/db2.img" "db2.img"

assert_cmp "$VDP_TMP/web1" "$MNT/web1.img" "web1.img"
assert_cmp "$VDP_TMP/x" "$MNT/x.img" "x.img"
run rm "$MNT"/*.img
assert_free "$MNT" "$(df_total "$MNT")" "free space with every disk removed"
vdp_umount "$MNT"
vdp_check c
