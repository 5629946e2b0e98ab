#!/bin/bash
# SPDX-License-Identifier: MIT
# permissions.sh - a mount with allow_other,default_permissions lets a
# non-root user (nobody) use the disk it owns and nothing else, as a `qemu`
# user would; without allow_other, other users see nothing.
# shellcheck source=tests/e2e/lib.sh
. "$(dirname "$0")/lib.sh"
need setpriv qemu-io

getent passwd nobody >/dev/null || die "no user nobody"
NOBODY=$(id -u nobody)
NOGROUP=$(id -g nobody)
# as_nobody CMD...: run CMD as nobody with no supplementary groups.
as_nobody() {
	setpriv --reuid="$NOBODY" --regid="$NOGROUP" --clear-groups \
		--inh-caps=-all -- "$@"
}

chmod 0755 "$VDP_TMP" # nobody must reach the mountpoint
vdp_create perm 1 256M
MNT=$VDP_TMP/mnt
vdp_mount perm "$MNT" allow_other,default_permissions
findmnt -rn -M "$MNT" -o OPTIONS | grep -q allow_other ||
	die "allow_other not in the mount options"
run chmod 0755 "$MNT"

step "a disk owned by nobody, mode 0600"
run truncate -s 64M "$MNT/vm-nobody.img"
run chown "$NOBODY:$NOGROUP" "$MNT/vm-nobody.img"
run chmod 0600 "$MNT/vm-nobody.img"
randfile "$VDP_TMP/data" $((1024 * 1024))
chmod 0644 "$VDP_TMP/data"
log "+ as nobody: dd into vm-nobody.img, read it back"
as_nobody dd if="$VDP_TMP/data" of="$MNT/vm-nobody.img" bs=64K \
	conv=notrunc,fsync status=none || die "nobody cannot write its disk"
as_nobody cmp -n 1048576 "$VDP_TMP/data" "$MNT/vm-nobody.img" ||
	die "nobody cannot read back its disk"
as_nobody qemu-io -f raw -t none -c 'read -P 0 2M 1M' "$MNT/vm-nobody.img" \
	>/dev/null || die "nobody cannot open its disk with O_DIRECT"
log "ok: nobody uses its own disk"

step "a root disk, mode 0600, is closed to nobody"
run truncate -s 64M "$MNT/vm-root.img"
run chmod 0600 "$MNT/vm-root.img"
expect_fail "$VDP_TMP/err" as_nobody dd if="$MNT/vm-root.img" of=/dev/null \
	count=1 status=none
grep -q 'Permission denied' "$VDP_TMP/err" || die "read: wrong error"
expect_fail "$VDP_TMP/err" as_nobody dd if=/dev/zero of="$MNT/vm-root.img" \
	count=1 conv=notrunc status=none
grep -q 'Permission denied' "$VDP_TMP/err" || die "write: wrong error"
expect_fail "$VDP_TMP/err" as_nobody truncate -s 1G "$MNT/vm-root.img"
expect_fail "$VDP_TMP/err" as_nobody chmod 0666 "$MNT/vm-root.img"
expect_fail "$VDP_TMP/err" as_nobody rm -f "$MNT/vm-root.img"
expect_fail "$VDP_TMP/err" as_nobody touch "$MNT/new-by-nobody"
assert_eq "$(stat -c '%s %a %u' "$MNT/vm-root.img")" "67108864 600 0" \
	"vm-root.img unchanged"

step "a directory nobody owns: nobody creates and removes in it"
run mkdir -m 0700 "$MNT/nobody-dir"
run chown "$NOBODY:$NOGROUP" "$MNT/nobody-dir"
as_nobody truncate -s 1G "$MNT/nobody-dir/own.img" ||
	die "nobody cannot create a disk in its directory"
assert_eq "$(stat -c '%U %s' "$MNT/nobody-dir/own.img")" "nobody 1073741824" \
	"owner and size of nobody's new disk"
as_nobody rm "$MNT/nobody-dir/own.img" || die "nobody cannot remove its disk"
run mkdir -m 0700 "$MNT/root-dir"
expect_fail "$VDP_TMP/err" as_nobody ls "$MNT/root-dir"
grep -q 'Permission denied' "$VDP_TMP/err" || die "ls root-dir: wrong error"

step "ownership persists across a remount"
vdp_umount "$MNT"
vdp_mount perm "$MNT" allow_other,default_permissions
assert_eq "$(stat -c '%u %g %a' "$MNT/vm-nobody.img")" \
	"$NOBODY $NOGROUP 600" "vm-nobody.img after remount"
as_nobody cmp -n 1048576 "$VDP_TMP/data" "$MNT/vm-nobody.img" ||
	die "nobody cannot read its disk after remount"
expect_fail "$VDP_TMP/err" as_nobody dd if="$MNT/vm-root.img" of=/dev/null \
	count=1 status=none

step "without allow_other, other users cannot enter the mount"
vdp_umount "$MNT"
vdp_mount perm "$MNT"
expect_fail "$VDP_TMP/err" as_nobody ls "$MNT"
expect_fail "$VDP_TMP/err" as_nobody cat "$MNT/vm-nobody.img"
vdp_umount "$MNT"
vdp_check perm
