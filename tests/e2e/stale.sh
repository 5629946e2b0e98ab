#!/bin/bash
# SPDX-License-Identifier: MIT
# stale.sh - a disk never returns bytes it was not given: disk A fills the
# whole pool with 0xff and is deleted; disk B then gets every extent A had.
# B's scattered writes, fallocated ranges, partial extents and regrown
# tails must read exactly as an image built the same way outside the pool:
# zeros everywhere else.  Once without a commit between A's rm and B, once
# across a remount.
#
# The members are loop devices that do not support discard: freed extents
# keep A's bytes on the member (a file member's discard would punch them to
# zeros and hide a missing zero-fill), as on many real disks.
# shellcheck source=tests/e2e/lib.sh
. "$(dirname "$0")/lib.sh"
need fallocate losetup

K=1024
M=$((1024 * K))
E=$((64 * K)) # extent size
members=()
for i in 0 1; do
	truncate -s 64M "$VDP_TMP/st.m$i.img"
	members+=("$(vdp_losetup "$VDP_TMP/st.m$i.img" nodiscard)")
done
run "$VDPOOL" create --name st --extent-size 64K "${members[@]}" >&2
MNT=$VDP_TMP/mnt
vdp_mount st "$MNT"
free0=$(df_free "$MNT")

# fill_a: disk A takes every free extent, all bytes 0xff, synced.
fill_a() {
	local err=$VDP_TMP/fill.err
	log "filling the pool with 0xff through A.img"
	if tr '\0' '\377' </dev/zero |
		dd of="$MNT/A.img" bs=1M iflag=fullblock conv=fsync 2>"$err"; then
		die "writing 0xff until full did not fail"
	fi
	grep -q 'No space left on device' "$err" || die "$(cat "$err")"
	[ "$(df_free "$MNT")" -lt "$E" ] || die "pool not full after filling A"
	cmp -n $((4 * M)) "$MNT/A.img" <(tr '\0' '\377' </dev/zero) ||
		die "A.img does not hold 0xff"
	sync "$MNT/A.img"
	log "A.img: $(fsize "$MNT/A.img") bytes of 0xff"
}

# write_b DISK: the same writes into DISK (in the pool, or the expected
# image outside it).
write_b() {
	local d=$1 off
	truncate -s 48M "$d"
	# Small writes scattered over many extents, unaligned.
	for off in 0 $((E - 3)) $((5 * E + 100)) $((3 * M + 7)) $((17 * M)) \
		$((31 * M + E / 2)) $((47 * M + 5)); do
		patch_bytes "$VDP_TMP/pat" "$off" "$d" "$off" 33
	done
	# One 4K block and a 100K write across extents.
	patch_bytes "$VDP_TMP/pat" 0 "$d" $((10 * M)) 4096
	patch_bytes "$VDP_TMP/pat" 0 "$d" $((20 * M - 50 * K)) $((100 * K))
	# Allocated but never written.
	fallocate -o $((24 * M + 3)) -l $((3 * E)) "$d"
	fallocate -z -o $((40 * M)) -l $((E + 10)) "$d"
	# Written, cut in the middle of an extent, grown again.
	patch_bytes "$VDP_TMP/pat" 0 "$d" $((46 * M)) $((2 * E))
	truncate -s $((46 * M + 1000)) "$d"
	truncate -s 48M "$d"
}

randfile "$VDP_TMP/pat" $((64 * M))
write_b "$VDP_TMP/B.ref"

step "fill A, rm A, write B with no commit in between"
fill_a
run rm "$MNT/A.img"
assert_free "$MNT" "$free0" "free after rm A"
write_b "$MNT/B.img"
assert_eq "$(fsize "$MNT/B.img")" $((48 * M)) "size of B"
assert_cmp "$MNT/B.img" "$VDP_TMP/B.ref" "B (same transaction as rm A)"
if grep -qa $'\xff\xff\xff\xff' "$MNT/B.img"; then
	die "B.img contains 0xff runs"
fi
log "ok: no 0xff run in B"
vdp_umount "$MNT"
vdp_check st
vdp_mount st "$MNT"
assert_cmp "$MNT/B.img" "$VDP_TMP/B.ref" "B after remount"
run rm "$MNT/B.img"

step "fill A, rm A, remount, write B"
fill_a
run rm "$MNT/A.img"
vdp_umount "$MNT"
vdp_check st
vdp_mount st "$MNT"
write_b "$MNT/B.img"
assert_cmp "$MNT/B.img" "$VDP_TMP/B.ref" "B (after a remount)"
sync "$MNT/B.img"
vdp_kill "$MNT"
vdp_mount st "$MNT"
assert_cmp "$MNT/B.img" "$VDP_TMP/B.ref" "B after kill -9 and remount"
vdp_umount "$MNT"
vdp_check st
