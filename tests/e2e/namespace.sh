#!/bin/bash
# SPDX-License-Identifier: MIT
# namespace.sh - directories and names through the mount: cp, mv (rename,
# RENAME_NOREPLACE, RENAME_EXCHANGE), rm of an open file, mkdir/rmdir, ls,
# stat (size, st_blocks, mode, owner, times), df, user xattrs, status; and
# that all of it survives a remount.
# shellcheck source=tests/e2e/lib.sh
. "$(dirname "$0")/lib.sh"
need setfattr

E=$((1024 * 1024)) # extent size
vdp_create ns 2 256M --extent-size 1M
MNT=$VDP_TMP/mnt
vdp_mount ns "$MNT"

# renameat2 SRC DST FLAGS: prints "ok" or the errno name.
renameat2() {
	python3 - "$@" <<'EOF'
import ctypes, errno, os, sys
libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100
flags = {"noreplace": 1, "exchange": 2}[sys.argv[3]]
r = libc.renameat2(AT_FDCWD, sys.argv[1].encode(), AT_FDCWD,
                   sys.argv[2].encode(), flags)
print("ok" if r == 0 else errno.errorcode[ctypes.get_errno()])
EOF
}

step "statfs: capacity of two 256 MiB members, all free"
total=$(df_total "$MNT")
free0=$(df_free "$MNT")
log "capacity $total, free $free0"
[ "$total" -gt $((440 * E)) ] && [ "$total" -le $((512 * E)) ] ||
	die "capacity $total not in (440 MiB, 512 MiB]"
[ "$free0" -le "$total" ] && [ "$free0" -ge $((total - 4 * E)) ] ||
	die "free $free0 of an empty pool is not about the capacity $total"

step "a new file, then a 10 GiB thin disk"
run touch "$MNT/a.img"
assert_eq "$(stat -c '%s %b %F' "$MNT/a.img")" "0 0 regular empty file" \
	"new file"
run truncate -s 10G "$MNT/a.img"
assert_eq "$(stat -c '%s %b' "$MNT/a.img")" "10737418240 0" \
	"size and blocks after truncate"
assert_free "$MNT" "$free0" "free space after a thin truncate"

step "st_blocks and df follow allocation"
printf x | dd of="$MNT/a.img" bs=1 seek=$((5 * E + 3)) conv=notrunc \
	status=none
assert_eq "$(fblocks "$MNT/a.img")" $((E / 512)) "st_blocks after 1 byte"
printf y | dd of="$MNT/a.img" bs=1 seek=$((5 * E + 900)) conv=notrunc \
	status=none
assert_eq "$(fblocks "$MNT/a.img")" $((E / 512)) \
	"st_blocks after a 2nd byte in the same extent"
printf zz | dd of="$MNT/a.img" bs=1 seek=$((8 * E - 1)) conv=notrunc \
	status=none
assert_eq "$(fblocks "$MNT/a.img")" $((3 * E / 512)) \
	"st_blocks after 2 bytes across an extent boundary"
assert_eq "$(fsize "$MNT/a.img")" 10737418240 "size unchanged by writes"
assert_free "$MNT" $((free0 - 3 * E)) "free space after 3 extents"
assert_eq "$(dd if="$MNT/a.img" bs=1 skip=$((8 * E - 1)) count=2 \
	status=none)" zz "bytes across the boundary"

step "cp keeps the bytes and the holes"
run cp "$MNT/a.img" "$MNT/b.img"
assert_eq "$(fsize "$MNT/b.img")" 10737418240 "size of the copy"
cmp -n $((9 * E)) "$MNT/a.img" "$MNT/b.img" || die "copy differs"
assert_eq "$(fblocks "$MNT/b.img")" "$(fblocks "$MNT/a.img")" \
	"st_blocks of the copy"
# cp reads and writes a thin disk: the daemon shares each extent it reads
# whole and gets back (docs/clones.md), so the copy takes no space.
assert_free "$MNT" $((free0 - 3 * E)) "free after cp"
randfile "$VDP_TMP/r.ref" 300000
run cp "$VDP_TMP/r.ref" "$MNT/r.img"
assert_cmp "$MNT/r.img" "$VDP_TMP/r.ref" "cp into the mount"
run cp "$MNT/r.img" "$VDP_TMP/r.back"
assert_cmp "$VDP_TMP/r.back" "$VDP_TMP/r.ref" "cp out of the mount"

step "mv renames in place, into a directory, and over a file"
ino=$(stat -c %i "$MNT/b.img")
run mv "$MNT/b.img" "$MNT/c.img"
[ ! -e "$MNT/b.img" ] || die "b.img still exists after mv"
assert_eq "$(stat -c %i "$MNT/c.img")" "$ino" "inode number kept by rename"
run mkdir "$MNT/tenant-a"
run mv "$MNT/c.img" "$MNT/tenant-a/c.img"
assert_eq "$(ls "$MNT/tenant-a")" c.img "listing of tenant-a"
cmp -n $((9 * E)) "$MNT/a.img" "$MNT/tenant-a/c.img" ||
	die "moved file differs"
cp "$VDP_TMP/r.ref" "$MNT/victim.img"
freebefore=$(df_free "$MNT")
run mv -f "$MNT/tenant-a/c.img" "$MNT/victim.img"
[ ! -e "$MNT/tenant-a/c.img" ] || die "source still there after mv over"
assert_eq "$(fsize "$MNT/victim.img")" 10737418240 "size of the replacement"
assert_free "$MNT" $((freebefore + E)) \
	"space of the replaced file returned"

step "RENAME_NOREPLACE and RENAME_EXCHANGE"
printf one >"$MNT/one"
printf two >"$MNT/tenant-a/two"
assert_eq "$(renameat2 "$MNT/one" "$MNT/tenant-a/two" noreplace)" EEXIST \
	"renameat2(NOREPLACE) onto an existing name"
assert_eq "$(cat "$MNT/one"):$(cat "$MNT/tenant-a/two")" one:two \
	"both files unchanged"
assert_eq "$(renameat2 "$MNT/one" "$MNT/tenant-a/three" noreplace)" ok \
	"renameat2(NOREPLACE) onto a free name"
assert_eq "$(renameat2 "$MNT/tenant-a/three" "$MNT/tenant-a/two" exchange)" \
	ok "renameat2(EXCHANGE)"
assert_eq "$(cat "$MNT/tenant-a/three"):$(cat "$MNT/tenant-a/two")" \
	two:one "contents after exchange"
assert_eq "$(renameat2 "$MNT/tenant-a/two" "$MNT/nothere" exchange)" \
	ENOENT "renameat2(EXCHANGE) with a missing target"

step "mkdir, rmdir, rm"
run mkdir -p "$MNT/d1/d2"
expect_fail "$VDP_TMP/err" rmdir "$MNT/d1"
grep -q 'not empty' "$VDP_TMP/err" || die "rmdir of non-empty dir: wrong error"
expect_fail "$VDP_TMP/err" mkdir "$MNT/d1"
grep -q 'File exists' "$VDP_TMP/err" || die "mkdir of existing: wrong error"
run rmdir "$MNT/d1/d2" "$MNT/d1"
[ ! -e "$MNT/d1" ] || die "d1 still exists"
expect_fail "$VDP_TMP/err" rmdir "$MNT/a.img"
grep -q 'Not a directory' "$VDP_TMP/err" || die "rmdir of a file: wrong error"
long=$(printf 'n%.0s' $(seq 255))
run touch "$MNT/$long"
[ -e "$MNT/$long" ] || die "255-byte name not found"
run rm "$MNT/$long"

step "readdir of 300 entries"
run mkdir "$MNT/many"
(cd "$MNT/many" && for i in $(seq 300); do : >"f$i"; done)
assert_eq "$(ls "$MNT/many" | wc -l)" 300 "entries listed"
assert_eq "$(ls "$MNT/many" | sort -u | wc -l)" 300 "distinct entries"
(cd "$MNT/many" && for i in $(seq 2 2 300); do rm "f$i"; done)
assert_eq "$(ls "$MNT/many" | wc -l)" 150 "entries after removing half"
run ls -ls "$MNT" >&2

step "rm of an open file: readable until closed, then its space returns"
randfile "$VDP_TMP/open.ref" $((2 * E))
cp "$VDP_TMP/open.ref" "$MNT/open.img"
freebefore=$(df_free "$MNT")
exec {fd}<"$MNT/open.img"
run rm "$MNT/open.img"
[ ! -e "$MNT/open.img" ] || die "open.img still listed after rm"
cmp - "$VDP_TMP/open.ref" <&"$fd" || die "unlinked open file unreadable"
log "ok: unlinked file still readable through its descriptor"
exec {fd}<&-
assert_free "$MNT" $((freebefore + 2 * E)) \
	"free after the last close"

step "chmod, chown, touch -d"
run chmod 0640 "$MNT/a.img"
run chown 1234:5678 "$MNT/a.img"
run touch -m -d '2001-02-03 04:05:06.5 UTC' "$MNT/a.img"
run touch -a -d '2002-03-04 05:06:07 UTC' "$MNT/a.img"
run chmod 0711 "$MNT/tenant-a"
run chown 42:43 "$MNT/tenant-a"
ATTRS="%a %u %g %s %b %Y %X"
want_a="640 1234 5678 10737418240 $((3 * E / 512)) 981173106 1015218367"
assert_eq "$(stat -c "$ATTRS" "$MNT/a.img")" "$want_a" "attributes of a.img"
assert_eq "$(stat -c '%.1Y' "$MNT/a.img")" 981173106.5 "mtime nanoseconds"
assert_eq "$(stat -c '%a %u %g %F' "$MNT/tenant-a")" "711 42 43 directory" \
	"attributes of tenant-a"
before=$(stat -c %Z "$MNT/r.img")
sleep 1.1
printf q | dd of="$MNT/r.img" bs=1 seek=5 conv=notrunc status=none
[ "$(stat -c %Y "$MNT/r.img")" -gt "$before" ] || die "write did not set mtime"
log "ok: a write moves mtime"

step "user xattrs"
xattr() { getfattr --absolute-names --only-values -n "$1" "$2"; }
run setfattr -n user.owner -v tenant-a "$MNT/a.img"
run setfattr -n user.empty "$MNT/a.img"
run setfattr -n user.bin -v 0x00ff00 "$MNT/tenant-a"
assert_eq "$(xattr user.owner "$MNT/a.img")" tenant-a \
	"user.owner"
run setfattr -n user.owner -v tenant-b "$MNT/a.img"
assert_eq "$(xattr user.owner "$MNT/a.img")" tenant-b \
	"user.owner replaced"
assert_eq "$(getfattr -e hex --absolute-names -n user.bin "$MNT/tenant-a" |
	grep '^user')" user.bin=0x00ff00 "binary xattr"
assert_eq "$(getfattr -m - --absolute-names "$MNT/a.img" | grep -c '^user\.')" \
	2 "xattrs listed"
run setfattr -n user.gone -v 1 "$MNT/a.img"
run setfattr -x user.gone "$MNT/a.img"
expect_fail "$VDP_TMP/err" getfattr --absolute-names -n user.gone "$MNT/a.img"
grep -q 'No such attribute' "$VDP_TMP/err" || die "removed xattr: wrong error"
expect_fail "$VDP_TMP/err" setfattr -n trusted.x -v 1 "$MNT/a.img"

step "vdpool status of the mount"
run "$VDPOOL" status "$MNT" >"$VDP_TMP/status.txt"
cat "$VDP_TMP/status.txt" >&2
grep -qF a.img "$VDP_TMP/status.txt" || die "status does not list a.img"
run "$VDPOOL" status --json "$MNT" >"$VDP_TMP/status.json"
python3 -c 'import json, sys; json.load(open(sys.argv[1]))' \
	"$VDP_TMP/status.json" || die "status --json is not JSON"
grep -qF victim.img "$VDP_TMP/status.json" ||
	die "status --json does not list victim.img"

step "everything survives a remount"
listing() {
	(cd "$MNT" && find . -printf '%p %y %m %U %G %s %b %T@\n' | sort)
}
listing >"$VDP_TMP/list.before"
freebefore=$(df_free "$MNT")
vdp_umount "$MNT"
vdp_check ns
run "$VDPOOL" status --json ns >"$VDP_TMP/status2.json"
python3 -c 'import json, sys; json.load(open(sys.argv[1]))' \
	"$VDP_TMP/status2.json" || die "status --json of the pool is not JSON"
vdp_mount ns "$MNT"
listing >"$VDP_TMP/list.after"
diff "$VDP_TMP/list.before" "$VDP_TMP/list.after" >&2 ||
	die "names or attributes changed across remount"
log "ok: $(wc -l <"$VDP_TMP/list.after") entries identical after remount"
assert_free "$MNT" "$freebefore" "free space after remount"
assert_eq "$(xattr user.owner "$MNT/a.img")" tenant-b \
	"user.owner after remount"
assert_eq "$(getfattr -e hex --absolute-names -n user.bin "$MNT/tenant-a" |
	grep '^user')" user.bin=0x00ff00 "binary xattr after remount"
assert_eq "$(cat "$MNT/tenant-a/three"):$(cat "$MNT/tenant-a/two")" \
	two:one "exchanged files after remount"
assert_eq "$(dd if="$MNT/a.img" bs=1 skip=$((8 * E - 1)) count=2 \
	status=none)" zz "bytes after remount"

step "rm returns everything"
run rm -rf "$MNT/a.img" "$MNT/victim.img" "$MNT/tenant-a" "$MNT/many" \
	"$MNT/r.img"
assert_eq "$(ls -A "$MNT")" "" "empty root"
assert_free "$MNT" "$free0" "free space back to the start"
vdp_umount "$MNT"
vdp_check ns
