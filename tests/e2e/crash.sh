#!/bin/bash
# SPDX-License-Identifier: MIT
# crash.sh - kill -9 of the daemon: every byte and name made durable by
# fsync before the kill is there after a remount, `vdpool check` is clean
# right after the crash and after the remount; writes in flight at the
# kill come back as old or new data, never anything else.
# shellcheck source=tests/e2e/lib.sh
. "$(dirname "$0")/lib.sh"

K=1024
M=$((1024 * K))
vdp_create c 2 256M --extent-size 64K
MNT=$VDP_TMP/mnt
REF=$VDP_TMP/ref
mkdir -p "$REF"
vdp_mount c "$MNT"

# verify_synced: every file under REF matches the same name in the mount.
verify_synced() {
	local f n=0
	for f in "$REF"/*; do
		cmp -- "$f" "$MNT/${f##*/}" ||
			die "synced file ${f##*/} differs after the crash"
		n=$((n + 1))
	done
	log "ok: $n synced files intact"
	for f in "$REF"/*.img; do
		local d=${f##*/}
		d=${d%.img}
		assert_eq "$(cat "$MNT/dir-$d/note")" "note $d" "dir-$d/note"
	done
}

crash_and_remount() {
	vdp_kill "$MNT"
	log "checking the pool as the crash left it"
	vdp_check c
	vdp_mount c "$MNT"
}

for round in 1 2 3; do
	step "round $round: synced writes, then kill -9"
	# A new disk with random data, fsync'ed by dd.
	size=$((round * 3 * M + round * 777))
	randfile "$REF/r$round.img" "$size"
	run dd if="$REF/r$round.img" of="$MNT/r$round.img" bs=256K conv=fsync \
		status=none
	# Unaligned overwrites of the previous rounds' disks, fsync'ed.
	for ((j = 1; j < round; j++)); do
		off=$((j * 100000 + round * 333))
		randfile "$VDP_TMP/patch" $((150 * K + j))
		patch_bytes "$VDP_TMP/patch" 0 "$REF/r$j.img" "$off" \
			$((150 * K + j))
		dd if="$VDP_TMP/patch" of="$MNT/r$j.img" bs=64K oflag=seek_bytes \
			seek="$off" conv=notrunc,fsync status=none
	done
	# A directory and a file in it, made durable by fsync of the file.
	mkdir "$MNT/dir-r$round"
	echo "note r$round" >"$MNT/dir-r$round/note"
	run sync "$MNT/dir-r$round/note"
	# Changes that are not synced: may or may not survive.
	echo unsynced >"$MNT/unsynced-$round"
	if [ "$round" -gt 1 ]; then
		# An unsynced change, then the synced bytes written back.
		printf 'x' | dd of="$MNT/r1.img" bs=1 seek="$M" conv=notrunc \
			status=none
		patch_bytes "$REF/r1.img" "$M" "$MNT/r1.img" "$M" 1
		sync "$MNT/r1.img"
	fi
	crash_and_remount
	verify_synced
	vdp_umount "$MNT"
	vdp_check c
	vdp_mount c "$MNT"
done

step "round 4: kill -9 with writes in flight"
# r1.img is overwritten, and new.img written, in loops that alternate two
# contents and are still running at the kill.  Nothing of it is synced.
randfile "$VDP_TMP/r1-a" "$(fsize "$REF/r1.img")"
randfile "$VDP_TMP/r1-b" "$(fsize "$REF/r1.img")"
randfile "$VDP_TMP/new-a" $((8 * M))
randfile "$VDP_TMP/new-b" $((8 * M))
# writer SRC-PREFIX DST BS: write SRC-a, SRC-b, SRC-a, ... over DST until
# that fails (the daemon is gone) or 1000 passes are done.
writer() {
	local i src
	for i in $(seq 1000); do
		src=$1-a
		[ $((i % 2)) -eq 0 ] && src=$1-b
		dd if="$src" of="$2" bs="$3" conv=notrunc status=none \
			2>/dev/null || break
	done
}
writer "$VDP_TMP/r1" "$MNT/r1.img" 96K &
writer1=$!
writer "$VDP_TMP/new" "$MNT/new.img" 128K &
writer2=$!
sleep 0.7
kill -0 "$writer1" 2>/dev/null && kill -0 "$writer2" 2>/dev/null ||
	die "the writers ended before the kill"
vdp_kill "$MNT"
wait "$writer1" "$writer2" || true
vdp_check c
vdp_mount c "$MNT"
mv "$REF/r1.img" "$VDP_TMP/r1-old"
verify_synced
# Every 512-byte sector of r1.img is old or one of the new contents; of
# new.img zeros or one of the new contents.
python3 - "$VDP_TMP" "$MNT" <<'EOF' || die "torn or foreign data after the crash"
import os, sys
S = 512
tmp, mnt = sys.argv[1:]
def read(name):
    return open(os.path.join(tmp, name), "rb").read()
def check(path, candidates, exact_size):
    if not os.path.exists(path):
        print("%s: absent (its creation was not committed)" % path)
        return
    got = open(path, "rb").read()
    size = len(candidates[-1])
    if len(got) > size or (exact_size and len(got) != size):
        sys.exit("%s: size %d, expected %d" % (path, len(got), size))
    counts = [0] * len(candidates)
    for off in range(0, len(got), S):
        g = got[off:off + S]
        for i, c in enumerate(candidates):
            if g == c[off:off + len(g)]:
                counts[i] += 1
                break
        else:
            sys.exit("%s: the sector at %d is none of the contents written"
                     % (path, off))
    print("%s: sectors per content (old, a, b): %s" % (path, counts))
check(os.path.join(mnt, "r1.img"), [read("r1-old"), read("r1-a"), read("r1-b")],
      True)
new = [read("new-a"), read("new-b")]
check(os.path.join(mnt, "new.img"), [bytes(len(new[0]))] + new, False)
EOF
vdp_umount "$MNT"
vdp_check c
