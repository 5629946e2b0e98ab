#!/bin/bash
# SPDX-License-Identifier: MIT
# faults.sh - a member that fails I/O, through the fault test layer
# (docs/testing/layers.md) in the real daemon:
#   - one copy of the metadata unreadable, or corrupt on disk: the pool
#     mounts from the other copy, `vdpool mount` and `status` say so, and
#     the corrupt copy is rewritten;
#   - reads failing on one member's data: only the reads of extents on that
#     member fail (EIO), the rest read back right, status counts them;
#   - one write failing: only that write fails, it leaves no extent behind;
#   - a flush failing at each step of a commit: that fsync fails, the next
#     one succeeds, and after kill -9 everything it covered is there.
# After each case the pool is mounted without faults: `vdpool check` is
# clean and every byte is what was written.
# shellcheck source=tests/e2e/lib.sh
. "$(dirname "$0")/lib.sh"

M=$((1024 * 1024))
vdp_create f 2 256M
M0=$(member f 0)
M1=$(member f 1)
MNT=$VDP_TMP/mnt
REF=$VDP_TMP/ref
ERR=$VDP_TMP/err
# Equal members: member 0 holds copy 0 of the metadata, member 1 copy 1,
# each at 64 KiB..16 MiB+64 KiB; data starts at 17 MiB (1 MiB extents).
META=64K-16448K
DATA=17M-

# A 24 MiB disk written in 1 MiB pieces: the allocator spreads them over
# both members (most free space first).
randfile "$REF" $((24 * M))
vdp_mount f "$MNT"
run dd if="$REF" of="$MNT/d.img" bs=1M conv=fsync status=none
vdp_umount "$MNT"

# mount_faulty SPEC: mount with the fault layer SPEC and no commit timer
# (only fsync commits, so the injected failure meets the fsync that needs
# it); vdpool mount's stderr goes to $ERR.
mount_faulty() {
	log "VDPOOL_TEST_LAYERS=$1"
	VDPOOL_TEST_LAYERS=$1 vdp_mount f "$MNT" commit_interval=0 2>"$ERR"
	sed 's/^/    stderr: /' "$ERR" >&2
}

# status_field JQ-EXPR: a field of the mounted pool's status --json.
status_field() { "$VDPOOL" status --json "$MNT" | jq -r "$1"; }

# clean_remount: without faults, check is clean and d.img is intact.
clean_remount() {
	vdp_check f
	vdp_mount f "$MNT"
	assert_cmp "$REF" "$MNT/d.img" "d.img after remount"
	assert_eq "$(status_field .state)" ok "pool state without faults"
	vdp_umount "$MNT"
}

step "copy 0 of the metadata unreadable: mounts from copy 1 and says so"
mount_faulty "fault:op=read,p=1,only=f.m0,range=$META"
grep -q "warning: member 0 .*bad metadata copies" "$ERR" ||
	die "vdpool mount did not warn about the unreadable copy"
assert_eq "$(status_field .state)" degraded "pool state"
[ "$(status_field '.members[0].bad_metadata_copies')" -gt 0 ] ||
	die "status counts no bad copy on member 0"
assert_cmp "$REF" "$MNT/d.img" "d.img read through copy 1"
vdp_umount "$MNT"
clean_remount

step "copy 0 of the metadata corrupt on disk: read from copy 1, rewritten"
# Garbage over member 0's whole metadata copy.
head -c $((16 * M)) /dev/urandom |
	dd of="$M0" bs=1M seek=64K oflag=seek_bytes conv=notrunc status=none
expect_fail "$ERR" "$VDPOOL" check f
vdp_mount f "$MNT" 2>"$ERR"
grep -q "warning: member 0 .*bad metadata copies (read from the other copy, rewritten)" "$ERR" ||
	die "vdpool mount did not warn about the corrupt copy"
assert_cmp "$REF" "$MNT/d.img" "d.img read through copy 1"
vdp_umount "$MNT"
log "the unmount's commit flushed the rewritten copy: check is clean"
clean_remount

step "reads fail on member 1's data: only those reads fail"
mount_faulty "fault:op=read,p=1,only=f.m1,range=$DATA"
good=0 bad=0
for ((i = 0; i < 24; i++)); do
	if dd if="$MNT/d.img" of="$VDP_TMP/piece" bs=1M skip=$i count=1 \
		iflag=direct status=none 2>"$ERR"; then
		cmp -s "$VDP_TMP/piece" <(dd if="$REF" bs=1M skip=$i count=1 \
			status=none) || die "extent $i read back wrong"
		good=$((good + 1))
	else
		grep -q "Input/output error" "$ERR" || die "extent $i: $(cat "$ERR")"
		bad=$((bad + 1))
	fi
done
log "extents read: $good right, $bad failed with EIO"
[ "$good" -gt 0 ] && [ "$bad" -gt 0 ] ||
	die "expected extents on both members: $good read, $bad failed"
assert_eq "$(status_field '.members[1].errors.read')" "$bad" \
	"read errors on member 1"
assert_eq "$(status_field '.members[0].errors.read')" 0 \
	"read errors on member 0"
assert_eq "$(status_field .state)" degraded "pool state"
vdp_umount "$MNT"
clean_remount

step "the 2nd write to member 1's data fails: only that write, no extent left"
mount_faulty "fault:op=write,nth=2,only=f.m1,range=$DATA"
run truncate -s $((16 * M)) "$MNT/w.img"
randfile "$VDP_TMP/wref" $((16 * M))
truncate -s $((16 * M)) "$VDP_TMP/want"
failed=()
for ((i = 0; i < 16; i++)); do
	if dd if="$VDP_TMP/wref" of="$MNT/w.img" bs=1M skip=$i seek=$i \
		count=1 oflag=direct conv=notrunc status=none 2>"$ERR"; then
		dd if="$VDP_TMP/wref" of="$VDP_TMP/want" bs=1M skip=$i \
			seek=$i count=1 conv=notrunc status=none
	else
		grep -q "Input/output error" "$ERR" || die "piece $i: $(cat "$ERR")"
		failed+=("$i")
	fi
done
assert_eq "${#failed[@]}" 1 "writes that failed"
run sync "$MNT/w.img"
assert_eq "$(status_field '.members[1].errors.write')" 1 \
	"write errors on member 1"
assert_eq "$(fblocks "$MNT/w.img")" $((15 * M / 512)) \
	"w.img allocation (the failed piece holds no extent)"
vdp_umount "$MNT"
vdp_check f
vdp_mount f "$MNT"
assert_cmp "$VDP_TMP/want" "$MNT/w.img" "w.img: written pieces, a hole"
run rm "$MNT/w.img"
vdp_umount "$MNT"

# Each commit flushes member 1 three times: the data it was written (1),
# after the metadata copy (2), after its superblock (3).  Fail each.  The
# disk exists before the faulty mount: dd's first close (it moves the fd to
# stdout) would otherwise commit the create and meet the fault first.
for nth in 1 2 3; do
	step "flush #$nth of member 1 fails: that fsync fails, the next commits"
	vdp_mount f "$MNT"
	run touch "$MNT/s$nth.img"
	vdp_umount "$MNT"
	mount_faulty "fault:op=flush,nth=$nth,only=f.m1"
	randfile "$VDP_TMP/s$nth" $((3 * M + 4321))
	ok=0
	for try in 1 2 3; do
		if dd if="$VDP_TMP/s$nth" of="$MNT/s$nth.img" bs=1M \
			conv=fsync,notrunc status=none 2>"$ERR"; then
			ok=$try
			break
		fi
		grep -q "Input/output error" "$ERR" || die "dd: $(cat "$ERR")"
		log "try $try: fsync failed with EIO, as injected"
	done
	[ "$ok" -gt 1 ] || die "expected the first fsync to fail, then one to succeed (ok at try $ok)"
	assert_eq "$(status_field '.members[1].errors.flush')" 1 \
		"flush errors on member 1"
	log "kill -9: only what the successful fsync covered is promised"
	vdp_kill "$MNT"
	vdp_check f
	vdp_mount f "$MNT"
	assert_cmp "$VDP_TMP/s$nth" "$MNT/s$nth.img" "s$nth.img after the crash"
	assert_cmp "$REF" "$MNT/d.img" "d.img after the crash"
	vdp_umount "$MNT"
done
clean_remount
log "all member failures contained"
