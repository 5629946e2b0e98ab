#!/bin/bash
# SPDX-License-Identifier: MIT
# cp.sh - the everyday copies of a thin disk are clones.  A 3 GiB disk with
# data spread over it (pool members sparse files) is copied with plain `cp`
# (coreutils 9.1 reads and writes a sparse file: write-side sharing), with
# `cat` (one copy_file_range for the whole disk, more than one FUSE reply
# can say: a clone in one transaction) and with `qemu-img convert -C`; a
# clone of a clone of a clone; writes to each generation change only that
# one; `rm` frees only what was exclusive.  Then the copies that read and
# write a smaller disk: qemu-img convert without -C, rsync -S, dd, and a
# libvirt vol-clone style loop; a copy whose source changed between read and
# write keeps its own extent; a read-only snapshot (chmod a-w) refuses
# writes from its owner, not from root.  Every stage ends with a remount
# and a clean `vdpool check`.
# shellcheck source=tests/e2e/lib.sh
. "$(dirname "$0")/lib.sh"
need qemu-img jq rsync cp cat setpriv
getent passwd nobody >/dev/null || die "no user nobody"

M=$((1024 * 1024))
G=$((1024 * M))
vdp_create p 2 3G
MNT=$VDP_TMP/mnt
vdp_mount p "$MNT"
used() { echo $(($(df_total "$MNT") - $(df_free "$MNT"))); }
status_json() { "$VDPOOL" status --json "$MNT"; }
# disk_field NAME FIELD: a disk's field in status --json (allocated, shared,
# exclusive).
disk_field() {
	status_json | jq "[.disks[] | select(.path == \"/$1\")][0].$2"
}
# remount_check: the pool survives a remount and is clean.
remount_check() {
	vdp_umount "$MNT"
	vdp_check p
	vdp_mount p "$MNT"
}
# same_window FILE REF OFF LEN: those bytes of FILE equal REF's.
same_window() {
	cmp -n "$4" -i "$3:$3" -- "$1" "$2" ||
		die "$1 differs from $2 in [$3, +$4)"
}

step "a 3 GiB thin disk"
REF=$VDP_TMP/golden
truncate -s $((3 * G)) "$REF"
n=0
for off in 0 3 500 501 502 1024 1500 2047 2048 2900 3071; do
	patch_bytes /dev/urandom 0 "$REF" $((off * M)) $M
	n=$((n + 1))
done
# Data that fills part of an extent, as a guest leaves it.
patch_bytes /dev/urandom 0 "$REF" $((1800 * M + 4096)) $((300 * 1024))
n=$((n + 1))
run cp "$REF" "$MNT/golden.img"
assert_eq "$(disk_field golden.img allocated)" $((n * M)) "golden.img allocated"
base=$(used)

step "cp of a thin disk: write-side sharing, no space taken"
start=$(date +%s%N)
run cp "$MNT/golden.img" "$MNT/gen1.img"
log "cp took $((($(date +%s%N) - start) / 1000000)) ms"
assert_eq "$(disk_field gen1.img shared)" $((n * M)) "gen1.img shared"
assert_eq "$(used)" "$base" "pool used after cp"
assert_eq "$(fblocks "$MNT/gen1.img")" "$(fblocks "$MNT/golden.img")" \
	"st_blocks of gen1.img (honest: the clone's own allocation)"
assert_cmp "$REF" "$MNT/gen1.img" "gen1.img"
remount_check

step "cat of the clone: one copy_file_range of 3 GiB, one transaction"
start=$(date +%s%N)
cat "$MNT/gen1.img" >"$MNT/gen2.img"
log "cat took $((($(date +%s%N) - start) / 1000000)) ms"
assert_eq "$(disk_field gen2.img shared)" $((n * M)) "gen2.img shared"
assert_eq "$(used)" "$base" "pool used after cat"
assert_cmp "$REF" "$MNT/gen2.img" "gen2.img"
remount_check

step "cat of a 6 GiB disk: the kernel cuts it at 4 GiB, still one clone"
run truncate -s $((6 * G)) "$MNT/big.img"
patch_bytes "$REF" $((3 * M)) "$MNT/big.img" 0 $M
patch_bytes "$REF" $((500 * M)) "$MNT/big.img" $((6 * G - M)) $M
cat "$MNT/big.img" >"$MNT/big2.img"
assert_eq "$(fsize "$MNT/big2.img")" $((6 * G)) "size of big2.img"
assert_eq "$(disk_field big2.img shared)" $((2 * M)) "big2.img shared"
same_window "$MNT/big2.img" "$MNT/big.img" 0 $((2 * M))
same_window "$MNT/big2.img" "$MNT/big.img" $((6 * G - 2 * M)) $((2 * M))
assert_eq "$(pyseek "$MNT/big2.img" $M DATA)" $((6 * G - M)) \
	"SEEK_DATA over the 6 GiB hole"
run rm "$MNT/big.img" "$MNT/big2.img"
assert_free "$MNT" $(($(df_total "$MNT") - base)) "free space after rm"

step "qemu-img convert -C of the clone of the clone"
run qemu-img convert -C -f raw -O raw "$MNT/gen2.img" "$MNT/gen3.img"
assert_eq "$(disk_field gen3.img shared)" $((n * M)) "gen3.img shared"
assert_eq "$(used)" "$base" "pool used after qemu-img convert -C"
assert_cmp "$REF" "$MNT/gen3.img" "gen3.img"
assert_eq "$(status_json | jq .saved_by_sharing)" $((3 * n * M)) \
	"saved_by_sharing with three clones"
remount_check

step "a write to each generation changes only that one"
i=0
for d in golden gen1 gen2 gen3; do
	cp --sparse=always "$REF" "$VDP_TMP/$d.want" 2>/dev/null ||
		cp "$REF" "$VDP_TMP/$d.want"
	randfile "$VDP_TMP/patch.$d" $((M + 777))
	# Into a shared extent (500), and across a hole (2100).
	for off in $((500 * M + 1000 + i)) $((2100 * M - 9 - i)); do
		patch_bytes "$VDP_TMP/patch.$d" 0 "$MNT/$d.img" "$off" $((M + 777))
		patch_bytes "$VDP_TMP/patch.$d" 0 "$VDP_TMP/$d.want" "$off" \
			$((M + 777))
	done
	i=$((i + 1))
done
for d in golden gen1 gen2 gen3; do
	for off in $((499 * M)) $((2098 * M)); do
		same_window "$MNT/$d.img" "$VDP_TMP/$d.want" "$off" $((4 * M))
	done
	log "ok: $d.img has its own writes and no one else's"
done
remount_check
for d in golden gen1 gen2 gen3; do
	for off in $((499 * M)) $((2098 * M)); do
		same_window "$MNT/$d.img" "$VDP_TMP/$d.want" "$off" $((4 * M))
	done
done
assert_cmp "$VDP_TMP/gen3.want" "$MNT/gen3.img" "gen3.img after remount"

step "rm frees only what was exclusive"
for d in golden gen1 gen2; do
	excl=$(disk_field $d.img exclusive)
	before=$(df_free "$MNT")
	run rm "$MNT/$d.img"
	assert_free "$MNT" $((before + excl)) "free space after rm $d.img"
done
assert_cmp "$VDP_TMP/gen3.want" "$MNT/gen3.img" "gen3.img after the rest went"
remount_check
assert_eq "$(disk_field gen3.img shared)" 0 "gen3.img shares nothing now"
run rm "$MNT/gen3.img"
assert_free "$MNT" "$(df_total "$MNT")" "free space with every disk removed"
rm -f "$VDP_TMP"/*.want "$REF"

step "copies that read and write: each shares every data extent"
SMALL=$VDP_TMP/small
truncate -s $((256 * M)) "$SMALL"
n=0
for off in 0 7 8 9 100 255; do
	patch_bytes /dev/urandom 0 "$SMALL" $((off * M)) $M
	n=$((n + 1))
done
# Partial extents: rsync -S and qemu-img skip their zeros.
patch_bytes /dev/urandom 0 "$SMALL" $((50 * M + 5 * 1024)) $((300 * 1024))
patch_bytes /dev/urandom 0 "$SMALL" $((60 * M + 123)) $((200 * 1024))
n=$((n + 2))
run cp "$SMALL" "$MNT/small.img"
run sync "$MNT/small.img"
# copy NAME CMD...: CMD makes NAME from small.img; all of it is shared.
copy() {
	local name=$1 start
	shift
	start=$(date +%s%N)
	run "$@"
	log "took $((($(date +%s%N) - start) / 1000000)) ms"
	assert_cmp "$SMALL" "$MNT/$name" "$name"
	assert_eq "$(disk_field "$name" shared)" $((n * M)) "$name shared"
}
S=$MNT/small.img
copy q.img qemu-img convert -f raw -O raw "$S" "$MNT/q.img"
copy r.img rsync -S "$S" "$MNT/r.img"
copy c.img sh -c "cat '$S' >'$MNT/c.img'"
copy t.img cp "$S" "$MNT/t.img"
copy d.img dd if="$S" of="$MNT/d.img" bs=1M conv=sparse status=none
# libvirt 9.0's vol-clone of a raw file (virStorageBackendCopyToFD): read
# 1 MiB, write st_blksize pieces, seek over all-zero ones; its buffers are
# not aligned, so the kernel cuts its requests anywhere.
copy v.img python3 - "$S" "$MNT/v.img" <<'EOF'
import os, sys
fi = os.open(sys.argv[1], os.O_RDONLY)
fo = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
size = os.fstat(fi).st_size
os.ftruncate(fo, size)
bs = os.fstat(fo).st_blksize
off = 0
while off < size:
    buf = os.pread(fi, 1 << 20, off)
    for o in range(0, len(buf), bs):
        piece = buf[o:o + bs]
        if piece.count(0) != len(piece):
            os.pwrite(fo, piece, off + o)
    off += len(buf)
os.fsync(fo)
EOF
# Every clone shares each data extent with small.img: one extent, seven
# names, one copy in the pool.
assert_eq "$(status_json | jq .saved_by_sharing)" $((6 * n * M)) \
	"saved_by_sharing with six copies"
remount_check

step "a source changed between the read and the write is not shared"
# Bytes no other disk holds: the only candidate is the changed extent.
randfile "$VDP_TMP/late-src" $((2 * M))
run cp "$VDP_TMP/late-src" "$MNT/late-src.img"
python3 - "$MNT/late-src.img" "$MNT/late.img" <<'EOF'
import os, sys
src = os.open(sys.argv[1], os.O_RDWR)
dst = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT, 0o600)
old = os.pread(src, 1 << 20, 1 << 20)         # read whole: a candidate
os.pwrite(src, bytes([old[5] ^ 1]), (1 << 20) + 5)  # then the source changes
os.pwrite(dst, old, 0)                         # the old bytes go out
os.fsync(dst)
EOF
assert_eq "$(disk_field late.img shared)" 0 "late.img shared"
patch_bytes "$VDP_TMP/late-src" $M "$VDP_TMP/late" 0 $M
assert_cmp "$VDP_TMP/late" "$MNT/late.img" "late.img"
step "a read-only snapshot: no write for users, root bypasses the mode"
vdp_umount "$MNT"
vdp_mount p "$MNT" allow_other
chmod 0755 "$VDP_TMP" "$MNT"
NOBODY=$(id -u nobody)
run cp "$MNT/small.img" "$MNT/snap.img"
run chown nobody "$MNT/snap.img"
run chmod a-w "$MNT/snap.img"
expect_fail "$VDP_TMP/err" setpriv --reuid="$NOBODY" --regid="$(id -g nobody)" \
	--clear-groups --inh-caps=-all -- \
	dd if=/dev/zero of="$MNT/snap.img" bs=4k count=1 conv=notrunc
grep -q "Permission denied" "$VDP_TMP/err" ||
	die "write to the snapshot as its owner: $(cat "$VDP_TMP/err")"
assert_cmp "$SMALL" "$MNT/snap.img" "snap.img untouched"
run dd if=/dev/zero of="$MNT/snap.img" bs=4k count=1 conv=notrunc status=none
assert_zeros "$MNT/snap.img" 0 4096
log "ok: root writes a read-only snapshot (default_permissions: DAC override)"

run rm "$MNT"/*.img
assert_free "$MNT" "$(df_total "$MNT")" "free space with every disk removed"
vdp_umount "$MNT"
vdp_check p
