#!/bin/bash
# SPDX-License-Identifier: MIT
# ext4.sh - a guest filesystem on a disk in the pool: mkfs.ext4 on a file in
# the mount, mounted through a loop device, files written and checksummed,
# e2fsck -f clean, fstrim punching space back into the pool; then the pool
# is remounted and everything is checked again.
# shellcheck source=tests/e2e/lib.sh
. "$(dirname "$0")/lib.sh"
need mkfs.ext4 e2fsck losetup fstrim sha256sum

M=$((1024 * 1024))
vdp_create x 2 512M --extent-size 1M
MNT=$VDP_TMP/mnt
EXT=$VDP_TMP/ext
DISK=$MNT/guest.img
mkdir -p "$EXT"
vdp_mount x "$MNT"

# fsck DEV: e2fsck -f -n must find nothing.
fsck_clean() {
	run e2fsck -f -n "$1" >&2 || die "e2fsck -f -n $1: exit status $?"
}

step "mkfs.ext4 on a 512 MiB thin disk"
run truncate -s 512M "$DISK"
run mkfs.ext4 -q -F "$DISK"
log "allocated after mkfs: $(fblocks "$DISK") blocks"
[ "$(fblocks "$DISK")" -lt $((512 * M / 512 / 2)) ] ||
	die "mkfs.ext4 filled more than half the thin disk"

step "loop mount, write files"
LOOP=$(vdp_losetup "$DISK")
run mount -t ext4 "$LOOP" "$EXT"
mkdir -p "$EXT/a/b/c"
for i in 1 2 3 4 5 6; do
	randfile "$EXT/a/f$i" $((i * 3 * M + i * 4099))
done
randfile "$EXT/a/b/c/deep" 12345
for i in $(seq 50); do echo "small $i" >"$EXT/a/b/s$i"; done
randfile "$EXT/trimme" $((64 * M))
(cd "$EXT" && find . -type f ! -name trimme -print0 | sort -z |
	xargs -0 sha256sum) >"$VDP_TMP/sums"
log "$(wc -l <"$VDP_TMP/sums") files checksummed"

step "rm + fstrim punch space back into the pool"
run sync -f "$EXT"
before=$(fblocks "$DISK")
run rm "$EXT/trimme"
run sync -f "$EXT" # blocks are free for fstrim once the journal commits
run fstrim -v "$EXT" >&2
after=$(fblocks "$DISK")
log "st_blocks of the disk: $before before rm + fstrim, $after after"
[ "$after" -le $((before - 48 * M / 512)) ] ||
	die "fstrim of a freed 64 MiB file gave back less than 48 MiB"

step "umount, e2fsck clean"
run umount "$EXT"
fsck_clean "$LOOP"
vdp_lodetach "$LOOP"

step "remount the pool, loop mount again, verify"
vdp_umount "$MNT"
vdp_check x
vdp_mount x "$MNT"
LOOP=$(vdp_losetup "$DISK")
fsck_clean "$LOOP"
run mount -t ext4 "$LOOP" "$EXT"
(cd "$EXT" && sha256sum --quiet -c "$VDP_TMP/sums") >&2 ||
	die "files changed across the remount"
log "ok: all checksums match"
# More writes on the remounted pool, then a last check.
randfile "$EXT/a/after" $((5 * M + 3))
sha=$(sha256sum <"$EXT/a/after")
run umount "$EXT"
fsck_clean "$LOOP"
run mount -o ro -t ext4 "$LOOP" "$EXT"
assert_eq "$(sha256sum <"$EXT/a/after")" "$sha" "file written after remount"
run umount "$EXT"
vdp_lodetach "$LOOP"
vdp_umount "$MNT"
vdp_check x
