#!/bin/bash
# SPDX-License-Identifier: MIT
# layers.sh - the daemon's test layers (VDPOOL_TEST_LAYERS, see
# docs/testing/layers.md): a bad spec fails the mount with one clear line;
# a good one is announced; a power loss on SIGUSR1 with then=exit takes the
# daemon down, and the pool, remounted without layers, is clean and holds
# exactly what was fsynced; a failing flush fails fsync with EIO and
# changes nothing durable; `vdpool check` ignores the variable.
# shellcheck source=tests/e2e/lib.sh
. "$(dirname "$0")/lib.sh"

vdp_create L 2 64M --extent-size 64K
MNT=$VDP_TMP/mnt
mkdir -p "$MNT"
head -c $((1024 * 1024)) /dev/urandom >"$VDP_TMP/a.ref"
head -c $((512 * 1024)) /dev/urandom >"$VDP_TMP/b.ref"

step "a bad spec fails the mount"
expect_fail "$VDP_TMP/bad" env VDPOOL_TEST_LAYERS='powerloss:foo=1' \
	"$VDPOOL" mount L "$MNT"
grep -qF "VDPOOL_TEST_LAYERS: test layers: powerloss: unknown key 'foo'" \
	"$VDP_TMP/bad" || die "the mount did not say what is wrong with the spec"
! is_mounted "$MNT" || die "mounted in spite of a bad spec"

step "power loss on SIGUSR1: the daemon exits, fsynced data survives"
VDPOOL_TEST_LAYERS='powerloss:signal=USR1,keep=none,then=exit' \
	vdp_mount L "$MNT" commit_interval=0 2>"$VDP_TMP/mount.err" ||
	die "mount with test layers failed: $(cat "$VDP_TMP/mount.err")"
cat "$VDP_TMP/mount.err" >&2
grep -qF "test layers active (VDPOOL_TEST_LAYERS=powerloss:signal=USR1" \
	"$VDP_TMP/mount.err" || die "the daemon did not say test layers are on"
run dd if="$VDP_TMP/a.ref" of="$MNT/a.img" bs=256K conv=fsync status=none
# b.img: created and written, never synced nor closed (any close, even of
# a dup, sends FUSE_FLUSH, and a close after writing commits).
python3 - "$MNT/b.img" "$VDP_TMP/b.ref" "$VDP_TMP/written" <<'PY' &
import os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
os.write(fd, open(sys.argv[2], "rb").read())
open(sys.argv[3], "w").close()
time.sleep(600)
PY
writer=$!
for _ in $(seq 300); do
	[ -e "$VDP_TMP/written" ] && break
	sleep 0.1
done
[ -e "$VDP_TMP/written" ] || die "the writer of b.img did not finish"
pid=$(daemon_pid "$MNT")
run kill -USR1 "$pid"
for _ in $(seq 100); do
	alive "$pid" || break
	sleep 0.1
done
! alive "$pid" || die "vdpoolfs $pid still runs after the power loss"
kill "$writer"
wait "$writer" || true
! stat "$MNT/a.img" 2>/dev/null || die "the dead mount still answers"
run fusermount3 -u -z "$MNT"
# The CLI never reads the variable: a bad spec there changes nothing.
VDPOOL_TEST_LAYERS='bogus' vdp_check L
vdp_mount L "$MNT"
assert_cmp "$VDP_TMP/a.ref" "$MNT/a.img"
[ ! -e "$MNT/b.img" ] || die "b.img was never synced, yet it survived"
vdp_umount "$MNT"

step "a failing flush fails fsync and changes nothing durable"
VDPOOL_TEST_LAYERS='fault:op=flush,nth=1,persist,err=EIO' \
	vdp_mount L "$MNT" commit_interval=0
expect_fail "$VDP_TMP/dd" dd if="$VDP_TMP/b.ref" of="$MNT/c.img" bs=256K \
	conv=fsync status=none
grep -q "Input/output error" "$VDP_TMP/dd" || die "fsync did not fail EIO"
vdp_kill "$MNT"
vdp_check L
vdp_mount L "$MNT"
assert_cmp "$VDP_TMP/a.ref" "$MNT/a.img"
[ ! -e "$MNT/c.img" ] || die "c.img survived a commit that failed"
vdp_umount "$MNT"
vdp_check L
