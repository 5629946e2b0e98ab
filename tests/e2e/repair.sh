#!/bin/bash
# SPDX-License-Identifier: MIT
# repair.sh - `vdpool check --repair` on pools damaged on purpose, through
# the real CLI on file members.  For each damage: check reports it (exit
# 4, or a note for what a crash can leave), repair reports each change
# (exit 1), check is clean afterwards, a second repair changes nothing
# (exit 0), and a mount shows every surviving byte as written and zeros
# exactly where repair said data was lost, never garbage or another disk's
# bytes.  Damage: flipped bytes in one and in both copies of a metadata
# block (an extent map, the reference counts, a directory, xattrs), zeroed
# superblock slots, a truncated member (in its data and in its metadata
# area), and, through tests/helpers/vdp-damage, a wrong reference count,
# a leaked extent, an extent mapped twice, a wrong link count and a file
# without a name.  A mounted pool is refused.
# shellcheck source=tests/e2e/lib.sh
. "$(dirname "$0")/lib.sh"
need setfattr

DAMAGE=$VDPOOL_BUILD/tests/helpers/vdp-damage
[ -x "$DAMAGE" ] || die "$DAMAGE not built"
K=1024
M=$((1024 * K))
MNT=$VDP_TMP/mnt
REF=$VDP_TMP/ref
OUT=$VDP_TMP/out
REPAIRED=$VDP_TMP/repaired
M0=$(member r 0)
M1=$(member r 1)
mkdir -p "$REF" "$VDP_TMP/exp"

step "a pool with three disks, one in a directory, one with holes"
vdp_create r 2 256M
vdp_mount r "$MNT"
randfile "$REF/vm1.img" $((3 * M + 5))
randfile "$REF/vm2.img" $((2 * M + 7))
randfile "$VDP_TMP/part" $((2 * M + 3))
truncate -s $((5 * M)) "$REF/vm3.img"
patch_bytes "$VDP_TMP/part" 0 "$REF/vm3.img" 0 "$M"
patch_bytes "$VDP_TMP/part" "$M" "$REF/vm3.img" $((2 * M)) $((M + 3))
cp "$REF/vm1.img" "$REF/vm2.img" "$MNT/"
mkdir "$MNT/d"
cp --sparse=always "$REF/vm3.img" "$MNT/d/vm3.img"
setfattr -n user.note -v "kept" "$MNT/vm1.img"
vdp_umount "$MNT"
vdp_check r
cp --sparse=always "$M0" "$VDP_TMP/m0.save"
cp --sparse=always "$M1" "$VDP_TMP/m1.save"

restore() {
	cp --sparse=always "$VDP_TMP/m0.save" "$M0"
	cp --sparse=always "$VDP_TMP/m1.save" "$M1"
}

# scribble FILE OFFSET: overwrite 8 bytes at OFFSET of FILE.
scribble() {
	log "corrupting 8 bytes at $2 of $1"
	printf 'CORRUPT!' | dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}

# corrupt_copies TREE [all]: flips bytes in the first copy (or all copies)
# of the root block of TREE (see vdp-damage locate).
corrupt_copies() {
	local blk path off n=0
	while read -r blk path off; do
		log "block $blk of $1: copy on $path at $off"
		scribble "$path" $((off + 200))
		n=$((n + 1))
		[ "${2:-}" = all ] || break
	done < <("$DAMAGE" r locate "$1")
	[ "$n" -gt 0 ] || die "no copy of $1 found"
}

# cli RC ARGS...: runs vdpool ARGS with the output in $OUT (and the log);
# its exit status must be RC.
cli() {
	local want=$1 rc=0
	shift
	log "+ vdpool $*"
	"$VDPOOL" "$@" >"$OUT" 2>&1 || rc=$?
	sed 's/^/    /' "$OUT" >&2
	assert_eq "$rc" "$want" "exit status of vdpool $*"
}

# expect PATTERN...: each extended regexp matches a line of $OUT.
expect() {
	local p
	for p in "$@"; do
		grep -Eq -- "$p" "$OUT" || die "no line of the output matches /$p/"
	done
}

# check_finds PATTERN...: check exits 4 and says PATTERN.
check_finds() {
	cli 4 check r
	expect "$@"
}

# repair PATTERN...: repair exits 1 and reports PATTERN; then check is
# clean, and a second repair changes nothing.
repair() {
	cli 1 check --repair r
	expect "$@" "^r: repaired, [0-9]+ changes?; clean now"
	cp "$OUT" "$REPAIRED"
	vdp_check r
	cli 0 check --repair r
	assert_eq "$(wc -l <"$OUT")" 1 "lines of a repair with nothing to do"
	expect "^r: clean, nothing to repair"
}

# verify [PATH=REF]...: mounts the pool and compares every disk with its
# reference (default: the three disks where they were), whose byte ranges
# that the last repair reported as reading zeros are zeroed first.
verify() {
	local spec path ref
	local -a specs=("$@")
	[ ${#specs[@]} -gt 0 ] ||
		specs=("vm1.img=$REF/vm1.img" "vm2.img=$REF/vm2.img"
			"d/vm3.img=$REF/vm3.img")
	vdp_mount r "$MNT"
	for spec in "${specs[@]}"; do
		path=${spec%%=*}
		ref=${spec#*=}
		python3 - "$REPAIRED" "/$path" "$ref" "$VDP_TMP/exp/x" <<'EOF'
import re, shutil, sys
out, disk, ref, exp = sys.argv[1:]
shutil.copyfile(ref, exp)
size = len(open(ref, "rb").read())
with open(exp, "r+b") as f:
    for line in open(out):
        m = re.match(r"disk (\S+): .*?bytes (\d+)-(\d+) .*read as zeros", line)
        if m and m.group(1) == disk:
            a, b = int(m.group(2)), int(m.group(3)) + 1
            assert b <= size, line
            f.seek(a)
            f.write(bytes(b - a))
            print("expect zeros in %s [%d, %d)" % (disk, a, b), file=sys.stderr)
EOF
		assert_cmp "$MNT/$path" "$VDP_TMP/exp/x" "$path"
	done
	vdp_umount "$MNT"
}

step "repair of a clean pool changes nothing"
cli 0 check --repair r
assert_eq "$(wc -l <"$OUT")" 1 "lines of a repair with nothing to do"

step "one copy of an extent map block is bad"
restore
corrupt_copies map:/vm1.img
check_finds "extent map of inode [0-9]+.*copy on .* is bad: checksum mismatch"
repair "copy on $M0 at offset [0-9]+ was bad \(checksum mismatch\); rewritten from the copy on $M1"
verify

step "both copies of vm2's extent map are bad: vm2 reads zeros"
restore
corrupt_copies map:/vm2.img all
check_finds "corrupt.*checksum mismatch" "cannot be opened"
repair "^disk /vm2.img: metadata block [0-9]+ \(extent map, level 0\) has no good copy .*: bytes 0-$((2 * M + 6)) are lost; they now read as zeros" \
	"no disk maps (it|them); freed"
verify

step "both copies of the reference counts are bad: recounted"
restore
corrupt_copies refcounts all
check_finds "corrupt.*checksum mismatch"
repair "^reference-count tree: .* has no good copy .*recounted from the extent maps"
grep -q "read as zeros" "$REPAIRED" && die "reference counts lost no data"
verify

step "both copies of directory /d's entries are bad: vm3 goes to /lost+found"
restore
corrupt_copies dir:/d all
check_finds "corrupt.*checksum mismatch"
repair "^directory /d: metadata block [0-9]+ has no good copy .*entries from byte 0 on are lost" \
	"^directory /lost\+found created" \
	"^disk inode ([0-9]+) had no name; linked as /lost\+found/#[0-9]+"
ino=$(sed -En 's|^disk inode ([0-9]+) had no name.*|\1|p' "$REPAIRED")
verify "vm1.img=$REF/vm1.img" "vm2.img=$REF/vm2.img" \
	"lost+found/#$ino=$REF/vm3.img"

step "both copies of vm1's xattrs are bad: the xattrs go, the data stays"
restore
corrupt_copies xattr:/vm1.img all
check_finds "corrupt.*checksum mismatch"
repair "^disk /vm1.img: a block of its xattrs has no good copy .* its xattrs are removed"
verify
vdp_mount r "$MNT"
[ -z "$(getfattr --absolute-names -d "$MNT/vm1.img" 2>/dev/null)" ] ||
	die "vm1.img still has xattrs"
vdp_umount "$MNT"

# zero_slot FILE SLOT
zero_slot() {
	log "zeroing superblock slot $2 of $1"
	dd if=/dev/zero of="$1" bs=16K seek="$2" count=1 conv=notrunc \
		status=none
}

step "the newest superblock slot of member 0 is zeroed"
restore
slot=$(newest_slot "$M0")
zero_slot "$M0" "$slot"
check_finds "^member $M0: superblock slot $slot is bad: all zeros"
repair "^member $M0: superblock slot $slot rewritten \(it was bad: all zeros\)"
verify

step "the older slot of member 1 is zeroed: a crash can leave that"
restore
slot=$((1 - $(newest_slot "$M1")))
zero_slot "$M1" "$slot"
cli 0 check r
expect "^note: member $M1: superblock slot $slot is bad: all zeros \(as a commit interrupted by a crash leaves it"
repair "^member $M1: superblock slot $slot rewritten \(it was bad: all zeros\)"
vdp_check r
grep -q note "$OUT" && die "check still notes a bad slot"
verify

step "both superblock slots of member 0, the registry's first, are zeroed"
restore
zero_slot "$M0" 0
zero_slot "$M0" 1
check_finds "$M0: no valid superblock" "cannot be opened"
repair "^member $M0: superblock rewritten \(both slots were bad: slot 0: all zeros; slot 1: all zeros\)"
verify

# data_off FILE: where the data extents of member FILE start.
data_off() {
	python3 - "$1" <<'EOF'
import struct, sys
f = open(sys.argv[1], "rb")
best = None
for slot in (0, 1):
    f.seek(slot * 16384)
    sb = f.read(16384)
    txid = struct.unpack_from("<Q", sb, 24)[0]
    if sb[:8] == b"VDPSUPER" and (best is None or txid > best[0]):
        best = (txid, sb)
i = struct.unpack_from("<I", best[1], 112)[0]
print(struct.unpack_from("<Q", best[1], 4096 + i * 192 + 24)[0])
EOF
}

step "member 1 truncated in its data area, mid-extent"
restore
cut=$(($(data_off "$M1") + M / 2))
run truncate -s "$cut" "$M1"
check_finds "^member $M1 is $cut bytes, smaller than the $((256 * M)) bytes recorded"
repair "^member $M1: extended from $cut to its recorded $((256 * M)) bytes" \
	"lay on the cut-off part of member $M1; unmapped, they now read as zeros" \
	"lay on the cut-off part of member $M1; they now read as zeros"
assert_eq "$(fsize "$M1")" $((256 * M)) "size of $M1"
verify

step "member 1 truncated inside its metadata area"
restore
run truncate -s 69632 "$M1"
check_finds "^member $M1 is 69632 bytes" "copy on $M1 at offset [0-9]+ is bad"
repair "^member $M1: extended from 69632" \
	"copy on $M1 at offset [0-9]+ was bad \(beyond the end of the member, at 69632 bytes\); rewritten from the copy on $M0" \
	"lay on the cut-off part of member $M1; unmapped, they now read as zeros"
verify

step "a wrong reference count"
restore
run "$DAMAGE" r refcount /vm1.img 1 3
check_finds "has reference count 3 but 1 map entries"
repair "^disk /vm1.img: extent [0-9]+ of member .*: reference count 3 -> 1$"
verify

step "a leaked extent"
restore
run "$DAMAGE" r leak
check_finds "has reference count 1 but 0 map entries"
repair "^member .*: extent [0-9]+: reference count 1 -> 0, no disk maps it; freed$"
verify

step "an extent mapped by two disks with a count of 1"
restore
run "$DAMAGE" r crosslink /vm1.img 0 /d/vm3.img 1
check_finds "has reference count 1 but 2 map entries"
repair "reference count 1 -> 2$"
# The disks share the extent now, as a clone would: vm3 shows vm1's first
# extent where it had a hole; nothing else changed.
cp "$REF/vm3.img" "$VDP_TMP/vm3.shared"
patch_bytes "$REF/vm1.img" 0 "$VDP_TMP/vm3.shared" "$M" "$M"
verify "vm1.img=$REF/vm1.img" "vm2.img=$REF/vm2.img" \
	"d/vm3.img=$VDP_TMP/vm3.shared"

step "a wrong link count"
restore
run "$DAMAGE" r nlink /d 7
check_finds "directory [0-9]+ has link count 7, expected 2"
repair "^directory /d: link count 7 -> 2$"
verify

step "a disk without a name goes to /lost+found"
restore
run "$DAMAGE" r unname /vm2.img
check_finds "file [0-9]+ has link count 1 but 0 names"
repair "^directory /lost\+found created" \
	"^disk inode [0-9]+ had no name; linked as /lost\+found/#[0-9]+$"
ino=$(sed -En 's|^disk inode ([0-9]+) had no name.*|\1|p' "$REPAIRED")
verify "vm1.img=$REF/vm1.img" "lost+found/#$ino=$REF/vm2.img" \
	"d/vm3.img=$REF/vm3.img"

step "a mounted pool is refused"
restore
vdp_mount r "$MNT"
cli 8 check --repair r
expect "pool is mounted; unmount it first"
vdp_umount "$MNT"
vdp_check r
