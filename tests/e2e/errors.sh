#!/bin/bash
# SPDX-License-Identifier: MIT
# errors.sh - each bad input gives one clear line on stderr, a non-zero exit
# status, and changes nothing: missing, too small, duplicate or already
# used members, filesystem signatures, a member missing at mount, corrupt
# superblocks and metadata blocks, unknown options and commands, missing
# and busy mountpoints.  And --help of every command works.
# shellcheck source=tests/e2e/lib.sh
. "$(dirname "$0")/lib.sh"
need mkfs.ext4

ERR=$VDP_TMP/err

# state FILE...: a checksum of each file's size and contents, and a listing
# of the registry.  Only the data segments of these sparse files are read;
# the checksum covers each non-zero 64 KiB chunk with its offset, so it does
# not depend on how the filesystem reports holes.
state() {
	python3 - "$@" <<'EOF2'
import hashlib, os, sys
C = 1 << 16
ZERO = bytes(C)
for path in sys.argv[1:]:
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY)
    size = os.fstat(fd).st_size
    off = 0  # chunks below OFF are done
    while off < size:
        try:
            data = os.lseek(fd, off, os.SEEK_DATA)
        except OSError:
            break
        end = os.lseek(fd, data, os.SEEK_HOLE)
        off = max(off, data // C * C)
        while off < end:
            chunk = os.pread(fd, C, off)
            if chunk != ZERO[:len(chunk)]:
                h.update(b"%d:" % off + chunk)
            off += C
    os.close(fd)
    print(h.hexdigest(), size, path)
EOF2
	ls -lA --time-style=+%s.%N "$VDPOOL_REGISTRY"
}

# refuse WHAT PATTERN CMD...: CMD fails with exactly one line on stderr that
# contains PATTERN (grep -E), and the members and registry are as before.
# Set FILES to the files that must not change.
refuse() {
	local what=$1 pattern=$2 before
	shift 2
	step "$what"
	before=$(state "${FILES[@]}")
	expect_fail "$ERR" "$@"
	assert_eq "$(wc -l <"$ERR")" 1 "lines on stderr"
	grep -Eq -- "$pattern" "$ERR" || die "the message does not match /$pattern/"
	[ "$(state "${FILES[@]}")" = "$before" ] ||
		die "something changed: $(diff <(echo "$before") \
			<(state "${FILES[@]}"))"
	log "ok: nothing changed"
}

m() { echo "$VDP_TMP/$1.img"; }
for f in a b c d; do truncate -s 128M "$(m $f)"; done
truncate -s 1M "$(m tiny)"
FILES=("$(m a)" "$(m b)" "$(m c)" "$(m d)" "$(m tiny)")

step "--help of every command"
for cmd in "" create mount umount status check; do
	out=$("$VDPOOL" $cmd --help) || die "vdpool $cmd --help: exit status $?"
	grep -q '^Usage: vdpool' <<<"$out" || die "vdpool $cmd --help: no usage"
	log "ok: vdpool $cmd --help"
done
"$VDPOOLFS" --help >"$VDP_TMP/help" 2>&1 || die "vdpoolfs --help failed"
grep -qi usage "$VDP_TMP/help" || die "vdpoolfs --help: no usage"

refuse "create: a member that does not exist" "$(m nope)" \
	"$VDPOOL" create --name p1 "$(m a)" "$(m nope)"
refuse "create: a member too small" "$(m tiny)" \
	"$VDPOOL" create --name p1 "$(m a)" "$(m tiny)"
refuse "create: a member listed twice" "$(m a)" \
	"$VDPOOL" create --name p1 "$(m a)" "$(m b)" "$(m a)"
refuse "create: a member listed twice under two spellings" "a\.img" \
	"$VDPOOL" create --name p1 "$(m a)" "$VDP_TMP/./a.img"
refuse "create: unknown option" "--bogus" \
	"$VDPOOL" create --bogus --name p1 "$(m a)"
assert_eq "$EXPECT_RC" 2 "exit status of a usage error"
refuse "create: bad extent size" "extent-size" \
	"$VDPOOL" create --extent-size 3000 --name p1 "$(m a)"
refuse "create: bad pool name" "name" \
	"$VDPOOL" create --name 'a/b' "$(m a)"
refuse "unknown command" "frobnicate" "$VDPOOL" frobnicate
refuse "mount: unknown option" "--bogus" \
	"$VDPOOL" mount --bogus p1 "$VDP_TMP"
refuse "check: unknown option" "--bogus" "$VDPOOL" check --bogus p1
assert_eq "$EXPECT_RC" 16 "exit status of a check usage error"
refuse "status of a pool that does not exist" "nosuchpool" \
	"$VDPOOL" status nosuchpool
refuse "check of a pool that does not exist" "nosuchpool" \
	"$VDPOOL" check nosuchpool
assert_eq "$EXPECT_RC" 8 "exit status of check's operational error"

step "create p1 on a and b"
run "$VDPOOL" create --name p1 "$(m a)" "$(m b)" >&2
[ -e "$VDPOOL_REGISTRY/p1" ] || die "p1 is not in the registry"

refuse "create: a member already in a pool" "$(m a)" \
	"$VDPOOL" create --name p2 "$(m c)" "$(m a)"
refuse "create: a pool name already taken" "p1" \
	"$VDPOOL" create --name p1 "$(m c)"

step "create: an ext4 signature"
mkfs.ext4 -q -F "$(m d)"
refuse "create: a member with an ext4 signature" "$(m d)" \
	"$VDPOOL" create --name p3 "$(m d)"
run "$VDPOOL" create --force --name p3 "$(m d)" >&2
run "$VDPOOL" check p3 >&2

step "mount and umount errors"
MNT=$VDP_TMP/mnt
MNT2=$VDP_TMP/mnt2
mkdir -p "$MNT" "$MNT2"
refuse "mount on a mountpoint that does not exist" "$VDP_TMP/nodir" \
	"$VDPOOL" mount p1 "$VDP_TMP/nodir"
refuse "mount of a pool that does not exist" "nosuchpool" \
	"$VDPOOL" mount nosuchpool "$MNT"
! is_mounted "$MNT" || die "$MNT mounted after a failed mount"
mkdir -p "$VDP_TMP/full"
touch "$VDP_TMP/full/file"
refuse "mount on a directory that is not empty" "not empty" \
	"$VDPOOL" mount p1 "$VDP_TMP/full"
vdp_mount p1 "$MNT"
refuse "mount on a busy mountpoint" "busy" "$VDPOOL" mount p3 "$MNT"
echo hello >"$MNT/hello"
refuse "mount of a pool that is already mounted" "$(m a)|$(m b)|busy|mounted" \
	"$VDPOOL" mount p1 "$MNT2"
! is_mounted "$MNT2" || die "$MNT2 mounted after a failed mount"
assert_eq "$(cat "$MNT/hello")" hello "the first mount still works"
assert_eq "$(findmnt -rn -M "$MNT" | wc -l)" 1 "mounts at $MNT"
refuse "check of a mounted pool" "mounted" "$VDPOOL" check p1
assert_eq "$EXPECT_RC" 8 "exit status of check on a mounted pool"
exec {fd}<"$MNT/hello"
refuse "umount with a file open" "busy" "$VDPOOL" umount "$MNT"
exec {fd}<&-
sleep 0.2
refuse "umount of a directory that is not a vdpool mount" "$VDP_TMP" \
	"$VDPOOL" umount "$VDP_TMP"
vdp_umount "$MNT"

step "mount with a member missing"
run mv "$(m b)" "$VDP_TMP/b.away"
FILES=("$(m a)" "$VDP_TMP/b.away" "$(m c)" "$(m d)")
refuse "mount p1 with b.img missing (by name)" "$(m b)" \
	"$VDPOOL" mount p1 "$MNT"
refuse "mount p1 with b.img missing (by member path)" "$(m b)" \
	"$VDPOOL" mount "$(m a)" "$MNT"
refuse "check p1 with b.img missing" "$(m b)" "$VDPOOL" check p1
assert_eq "$EXPECT_RC" 8 "exit status of check with a member missing"
! is_mounted "$MNT" || die "$MNT mounted with a member missing"
[ -z "$(our_daemons)" ] || die "a vdpoolfs is left running: $(our_daemons)"
run mv "$VDP_TMP/b.away" "$(m b)"
FILES=("$(m a)" "$(m b)" "$(m c)" "$(m d)")

# Writes some data to p1 and commits it.
populate() {
	vdp_mount p1 "$MNT"
	randfile "$VDP_TMP/data.ref" $((3 * 1024 * 1024 + 5))
	cp "$VDP_TMP/data.ref" "$MNT/disk.img"
	mkdir -p "$MNT/dir"
	vdp_umount "$MNT"
	vdp_check p1
}
populate

# meta_copies MEMBER: "PATH OFFSET" of each copy of the inode tree's root
# block, read from MEMBER's newest valid superblock (store/format.h).
meta_copies() {
	python3 - "$1" <<'EOF'
import struct, sys
SB, MAGIC_SUPER, MAGIC_META = 16384, 0x5245505553504456, 0x004154454d504456
f = open(sys.argv[1], "rb")
best = None
for slot in (0, 1):
    f.seek(slot * SB)
    sb = f.read(SB)
    magic, _, _, txid = struct.unpack_from("<4Q", sb, 0)
    if magic == MAGIC_SUPER and (best is None or txid > best[0]):
        best = (txid, sb)
if best is None:
    sys.exit("no superblock")
sb = best[1]
nchunks, = struct.unpack_from("<I", sb, 124)
root, = struct.unpack_from("<Q", sb, 208)
paths = [sb[4096 + i * 192 + 48:4096 + i * 192 + 176].split(b"\0")[0].decode()
         for i in range(struct.unpack_from("<I", sb, 120)[0])]
for c in range(nchunks):
    lstart, nblocks, ncopies, m0, m1, _, o0, o1 = struct.unpack_from(
        "<QQHHHHQQ", sb, 384 + c * 40)
    if lstart <= root < lstart + nblocks:
        for m, o in list(zip((m0, m1), (o0, o1)))[:ncopies]:
            off = o + (root - lstart) * 4096
            with open(paths[m], "rb") as g:
                g.seek(off)
                magic, _, blocknr = struct.unpack("<3Q", g.read(24))
            if magic != MAGIC_META or blocknr != root:
                sys.exit("block %d not found at %s:%d" % (root, paths[m], off))
            print(paths[m], off)
        sys.exit(0)
sys.exit("root block %d in no chunk" % root)
EOF
}

# scribble FILE OFFSET: overwrite 8 bytes at OFFSET of FILE.
scribble() {
	log "corrupting 8 bytes at $2 of $1"
	printf 'CORRUPT!' | dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}

step "a corrupt copy of a metadata block: the other copy serves"
copies=$(meta_copies "$(m a)") || die "cannot locate the inode tree root"
log "inode tree root copies: $copies"
assert_eq "$(wc -l <<<"$copies")" 2 "copies of a metadata block in a 2-member pool"
cp --sparse=always "$(m a)" "$VDP_TMP/a.save"
cp --sparse=always "$(m b)" "$VDP_TMP/b.save"
read -r path off <<<"$(head -1 <<<"$copies")"
scribble "$path" $((off + 200))
vdp_mount p1 "$MNT"
assert_cmp "$MNT/disk.img" "$VDP_TMP/data.ref" "data with one bad metadata copy"
vdp_umount "$MNT"

step "both copies corrupt: mount and check name the block"
cp --sparse=always "$VDP_TMP/a.save" "$(m a)"
cp --sparse=always "$VDP_TMP/b.save" "$(m b)"
while read -r path off; do scribble "$path" $((off + 200)); done <<<"$copies"
FILES=("$(m a)" "$(m b)")
refuse "mount with a corrupt metadata block" "checksum|corrupt|bad" \
	"$VDPOOL" mount p1 "$MNT"
grep -Eq "$(m a)|$(m b)|block|offset" "$ERR" ||
	die "the message does not say where the bad block is"
! is_mounted "$MNT" || die "mounted with a corrupt metadata block"
log "+ $VDPOOL check p1"
rc=0
"$VDPOOL" check p1 >"$VDP_TMP/check.out" 2>&1 || rc=$?
cat "$VDP_TMP/check.out" >&2
# 4: problems found; 8: the pool cannot be opened (as e2fsck without a
# valid superblock).  Either way check must say which block and where.
[ "$rc" -eq 4 ] || [ "$rc" -eq 8 ] ||
	die "check of a pool with a corrupt metadata block: exit status $rc"
grep -Eq "block.*($(m a)|$(m b))" "$VDP_TMP/check.out" ||
	die "check does not name the corrupt block and its member"

step "the newest superblock slot corrupt on every member"
cp --sparse=always "$VDP_TMP/a.save" "$(m a)"
cp --sparse=always "$VDP_TMP/b.save" "$(m b)"
vdp_check p1
for f in "$(m a)" "$(m b)"; do
	scribble "$f" $(($(newest_slot "$f") * 16384 + 100))
done
log "+ $VDPOOL mount p1 $MNT"
rc=0
"$VDPOOL" mount p1 "$MNT" 2>"$ERR" || rc=$?
cat "$ERR" >&2
if [ "$rc" -eq 0 ]; then
	log "mounted from the older superblock slot"
	is_mounted "$MNT" || die "mount succeeded but nothing is mounted"
	daemon_pid "$MNT" >>"$VDP_TMP/pids"
	ls "$MNT" >/dev/null || die "cannot list the root after a fallback"
	vdp_umount "$MNT"
	# The pool went back one commit: check says so, repair rewrites the
	# slots (tests/e2e/repair.sh tests repair itself).
	rc=0
	"$VDPOOL" check p1 >&2 || rc=$?
	assert_eq "$rc" 4 "exit status of check with the newest slots bad"
	rc=0
	"$VDPOOL" check --repair p1 >&2 || rc=$?
	assert_eq "$rc" 1 "exit status of check --repair"
	vdp_check p1
else
	assert_eq "$(wc -l <"$ERR")" 1 "lines on stderr"
	grep -Eq "superblock" "$ERR" || die "the message does not name the superblock"
fi

step "both superblock slots of one member corrupt"
cp --sparse=always "$VDP_TMP/a.save" "$(m a)"
cp --sparse=always "$VDP_TMP/b.save" "$(m b)"
scribble "$(m b)" 100
scribble "$(m b)" $((16384 + 100))
rc=0
log "+ $VDPOOL mount p1 $MNT"
"$VDPOOL" mount p1 "$MNT" 2>"$ERR" || rc=$?
cat "$ERR" >&2
if [ "$rc" -eq 0 ]; then
	log "mounted with member b's superblocks rebuilt from member a"
	daemon_pid "$MNT" >>"$VDP_TMP/pids"
	assert_cmp "$MNT/disk.img" "$VDP_TMP/data.ref" "data"
	vdp_umount "$MNT"
	vdp_check p1
else
	assert_eq "$(wc -l <"$ERR")" 1 "lines on stderr"
	grep -qF "$(m b)" "$ERR" || die "the message does not name $(m b)"
	! is_mounted "$MNT" || die "mounted with a corrupt member"
fi

step "create --force over a pool member"
run "$VDPOOL" create --force --name p4 "$(m a)" "$(m c)" >&2
vdp_check p4
