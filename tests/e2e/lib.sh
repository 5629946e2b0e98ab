# SPDX-License-Identifier: MIT
# shellcheck shell=bash
#
# lib.sh - sourced by every end-to-end test in this folder.
#
# Gives each test its own temporary directory (members, mountpoints, the
# pool registry, expected images), helpers to create, mount and unmount
# pools through the real `vdpool` CLI and `vdpoolfs` daemon, and small
# assertions that print what they compare.  An EXIT trap unmounts whatever
# the test mounted, stops its daemons, detaches its loop devices and removes
# the directory, keeping the test's exit status.  It never touches mounts,
# processes or loop devices that this test did not make.
#
# Environment: VDPOOL_BUILD, the build tree whose tools/vdpool and
# fs/vdpoolfs are tested (CTest sets it; default: build/ of the checkout).
# VDPOOL_KEEP_TMP=1 keeps the temporary directory of a failed test.

set -euo pipefail
shopt -s inherit_errexit

TEST_NAME=$(basename "$0" .sh)
VDPOOL_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VDPOOL_BUILD=$(cd "${VDPOOL_BUILD:-$VDPOOL_SRC/build}" && pwd)
VDPOOL=$VDPOOL_BUILD/tools/vdpool
VDPOOLFS=$VDPOOL_BUILD/fs/vdpoolfs
export VDPOOLFS
export LC_ALL=C

# ---- messages ------------------------------------------------------------

log() { printf '[%s] %s\n' "$TEST_NAME" "$*" >&2; }
step() { printf '\n[%s] === %s\n' "$TEST_NAME" "$*" >&2; }
die() {
	log "FAIL: $*"
	exit 1
}
skip() {
	log "SKIP: $*"
	exit 77
}
# run CMD...: print the command, then run it.
run() {
	log "+ $*"
	"$@"
}

# ---- assertions ------------------------------------------------------------

# assert_eq ACTUAL EXPECTED WHAT
assert_eq() {
	if [ "$1" != "$2" ]; then
		die "$3: got '$1', expected '$2'"
	fi
	log "ok: $3 = $1"
}

# assert_cmp FILE1 FILE2 [WHAT]: byte-for-byte equal (sizes included).
assert_cmp() {
	local out
	if ! out=$(cmp -- "$1" "$2" 2>&1); then
		die "${3:-contents}: $1 differs from $2: $out"
	fi
	log "ok: ${3:-contents}: $1 == $2"
}

# assert_zeros FILE OFFSET LENGTH: that byte range of FILE reads as zeros.
assert_zeros() {
	local out
	if ! out=$(cmp -n "$3" -i "$2:0" -- "$1" /dev/zero 2>&1); then
		die "$1 [$2, +$3) is not all zeros: $out"
	fi
	log "ok: $1 [$2, +$3) reads as zeros"
}

# expect_fail OUTFILE CMD...: CMD must exit non-zero; its stderr goes to
# OUTFILE (and the log) and its exit status to $EXPECT_RC.
expect_fail() {
	local out=$1
	shift
	log "+ $* (must fail)"
	EXPECT_RC=0
	"$@" >"$out.stdout" 2>"$out" || EXPECT_RC=$?
	sed 's/^/    stderr: /' "$out" >&2
	if [ "$EXPECT_RC" -eq 0 ]; then
		die "'$*' succeeded but must fail"
	fi
	log "ok: failed with status $EXPECT_RC"
}

# ---- numbers ---------------------------------------------------------------

fsize() { stat -c %s -- "$1"; }
# st_blocks in 512-byte units
fblocks() { stat -c %b -- "$1"; }
# Pool capacity and free bytes as statfs reports them at MNT.
# (Shell arithmetic: awk prints products past 2^31 as 6.39e+09.)
df_total() { echo $(($(stat -f -c '%b * %S' -- "$1"))); }
df_free() { echo $(($(stat -f -c '%f * %S' -- "$1"))); }

# assert_free MNT BYTES WHAT: statfs free space at MNT becomes BYTES within
# 5 s (space of an unlinked file returns when the kernel forgets the inode,
# which it sends asynchronously).
assert_free() {
	local i
	for i in $(seq 50); do
		[ "$(df_free "$1")" = "$2" ] && break
		sleep 0.1
	done
	assert_eq "$(df_free "$1")" "$2" "$3"
}

# assert_blocks FILE ALLOC WHAT: st_blocks of FILE shows ALLOC bytes
# allocated, capped at its size rounded up to 512 as vdpoolfs reports it (a
# larger st_blocks makes tools take a disk for dense).
assert_blocks() {
	local cap
	cap=$((($(fsize "$1") + 511) / 512 * 512))
	[ "$2" -lt "$cap" ] && cap=$2
	assert_eq "$(fblocks "$1")" $((cap / 512)) "$3"
}

# ---- data ----------------------------------------------------------------

# randfile PATH BYTES: a file of random bytes.
randfile() {
	head -c "$2" /dev/urandom >"$1"
	[ "$(fsize "$1")" -eq "$2" ] || die "randfile $1: short"
}

# patch_bytes SRC SRCOFF DST DSTOFF LEN: copy LEN bytes at SRCOFF of SRC to
# DSTOFF of DST without truncating DST (unaligned offsets and lengths).
patch_bytes() {
	dd if="$1" of="$3" bs=64K iflag=skip_bytes,count_bytes \
		oflag=seek_bytes skip="$2" seek="$4" count="$5" conv=notrunc \
		status=none
}

# pyseek FILE OFFSET WHENCE: lseek(2) result, or "ENXIO".  WHENCE: DATA|HOLE.
pyseek() {
	python3 - "$@" <<'EOF'
import errno, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
w = {"DATA": os.SEEK_DATA, "HOLE": os.SEEK_HOLE}[sys.argv[3]]
try:
    print(os.lseek(fd, int(sys.argv[2]), w))
except OSError as e:
    if e.errno != errno.ENXIO:
        raise
    print("ENXIO")
EOF
}

# newest_slot FILE: the superblock slot (0 or 1) of member FILE with the
# higher txid (docs/format.md: the txid is the 4th u64 of each 16 KiB slot).
newest_slot() {
	python3 - "$1" <<'EOF'
import struct, sys
f = open(sys.argv[1], "rb")
t = []
for slot in (0, 1):
    f.seek(slot * 16384)
    t.append(struct.unpack("<4Q", f.read(32))[3])
print(0 if t[0] >= t[1] else 1)
EOF
}

# ---- the temporary directory and cleanup ---------------------------------

[ "$(id -u)" -eq 0 ] || skip "needs root (FUSE allow_other, loop devices)"
[ -c /dev/fuse ] || skip "/dev/fuse is missing: no FUSE on this machine"
for _b in "$VDPOOL" "$VDPOOLFS"; do
	[ -x "$_b" ] || die "$_b not built (set VDPOOL_BUILD or run cmake --build)"
done
unset _b

# need CMD...: the tools this test uses; scripts/install-deps.sh installs them.
need() {
	local c
	for c in "$@"; do
		command -v "$c" >/dev/null ||
			die "$c not found: run scripts/install-deps.sh"
	done
}
need cmp dd truncate stat findmnt fusermount3 python3 getfattr

VDP_TMP=$(mktemp -d "/var/tmp/vdpool-e2e-$TEST_NAME.XXXXXX")
export VDPOOL_REGISTRY=$VDP_TMP/registry
# The daemons' control sockets (vdpool add/remove on a mount), not /run.
export VDPOOL_RUN_DIR=$VDP_TMP/run
mkdir "$VDPOOL_REGISTRY" "$VDP_TMP/sanitizer"
: >"$VDP_TMP/loops"
: >"$VDP_TMP/pids"
# Sanitizer reports of every vdpool/vdpoolfs run go to files that the exit
# trap prints; any report fails the test.
export ASAN_OPTIONS="log_path=$VDP_TMP/sanitizer/asan:detect_leaks=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="log_path=$VDP_TMP/sanitizer/ubsan:print_stacktrace=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
log "temporary directory $VDP_TMP, build $VDPOOL_BUILD"

# Mountpoints under VDP_TMP, deepest first, as "TARGET FSTYPE" lines.
our_mounts() {
	findmnt -rn -o TARGET,FSTYPE | awk -v p="$VDP_TMP/" \
		'index($1, p) == 1' | sort -r
}

# Daemons of this test: pids we recorded plus any vdpoolfs whose arguments
# name our directory.
our_daemons() {
	local pid
	{
		cat "$VDP_TMP/pids"
		for pid in $(pgrep -x vdpoolfs || true); do
			tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null |
				grep -qF "$VDP_TMP/" && echo "$pid"
		done
	} | sort -u | while read -r pid; do
		[ -n "$pid" ] && alive "$pid" && echo "$pid"
	done
	return 0
}

cleanup() {
	local rc=$? target fstype dev pid i reports hook
	trap - EXIT
	trap '' INT TERM # finish the cleanup even when told to stop
	set +e
	kill "$VDP_WATCHDOG" 2>/dev/null
	if [ "$rc" -ne 0 ] && [ "$rc" -ne 77 ]; then
		log "exit status $rc; cleaning up"
	fi
	# Filesystems on loop devices first, then the loops, then the pools.
	our_mounts | while read -r target fstype; do
		case $fstype in
		fuse*) ;;
		*) umount "$target" 2>/dev/null || umount -l "$target" ;;
		esac
	done
	while read -r dev; do
		[ -n "$dev" ] && loop_detach "$dev"
	done <"$VDP_TMP/loops"
	our_mounts | while read -r target fstype; do
		log "cleanup: unmounting $target ($fstype)"
		timeout 30 "$VDPOOL" umount "$target" >/dev/null 2>&1 ||
			fusermount3 -u -z "$target" 2>/dev/null ||
			umount -l "$target"
	done
	for i in $(seq 50); do
		[ -z "$(our_daemons)" ] && break
		sleep 0.1
	done
	for pid in $(our_daemons); do
		log "cleanup: killing leftover vdpoolfs $pid"
		kill -9 "$pid"
	done
	# Services the test started for its members (an iSCSI target), once
	# no daemon uses them.
	for hook in "${VDP_CLEANUP_HOOKS[@]}"; do
		"$hook"
	done
	while read -r dev; do
		[ -n "$dev" ] && loop_remove "$dev"
	done <"$VDP_TMP/loops"
	reports=$(find "$VDP_TMP/sanitizer" -type f 2>/dev/null)
	if [ -n "$reports" ]; then
		log "sanitizer reports:"
		# shellcheck disable=SC2086
		cat $reports >&2
		[ "$rc" -eq 0 ] && rc=1
	fi
	if [ "$rc" -ne 0 ] && [ "$rc" -ne 77 ] &&
		[ "${VDPOOL_KEEP_TMP:-0}" = 1 ]; then
		log "keeping $VDP_TMP"
	else
		rm -rf --one-file-system "$VDP_TMP"
	fi
	if [ "$rc" -eq 0 ]; then
		log "PASS"
	elif [ "$rc" -ne 77 ]; then
		log "FAILED (status $rc)"
	fi
	exit "$rc"
}
# VDP_CLEANUP_HOOKS: commands the exit trap runs after the pools are
# unmounted and their daemons gone (tests append to it).
VDP_CLEANUP_HOOKS=()
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The watchdog: before CTest's own timeout kills this script outright (and
# so skips the cleanup), stop the command it waits for and end it with
# TERM, which runs the cleanup.  VDPOOL_TEST_TIMEOUT seconds, default 360
# (CTest's TIMEOUT is 420).
(
	trap - EXIT INT
	sleep "${VDPOOL_TEST_TIMEOUT:-360}" >/dev/null 2>&1 &
	sleeper=$!
	trap 'kill "$sleeper" 2>/dev/null; exit 0' TERM
	wait "$sleeper"
	log "TIMEOUT after ${VDPOOL_TEST_TIMEOUT:-360} s; stopping the test"
	kill -TERM "$$" 2>/dev/null
	for pid in $(ps -o pid= --ppid "$$"); do
		[ "$pid" -ne "$BASHPID" ] && kill -TERM "$pid" 2>/dev/null
	done
	sleep 5
	for pid in $(ps -o pid= --ppid "$$"); do
		[ "$pid" -ne "$BASHPID" ] && kill -KILL "$pid" 2>/dev/null
	done
) </dev/null >&2 &
VDP_WATCHDOG=$!

# ---- pools -----------------------------------------------------------------

# member NAME I: path of member I of pool NAME made by vdp_create.
member() { echo "$VDP_TMP/$1.m$2.img"; }

# vdp_create NAME NMEMBERS SIZE [CREATE-ARGS...]: sparse file members of
# SIZE (truncate syntax), then `vdpool create --name NAME ARGS... MEMBERS`.
vdp_create() {
	local name=$1 n=$2 size=$3 i
	local -a members=()
	shift 3
	for ((i = 0; i < n; i++)); do
		members+=("$(member "$name" "$i")")
		truncate -s "$size" "${members[i]}"
	done
	run "$VDPOOL" create --name "$name" "$@" "${members[@]}" >&2 ||
		die "vdpool create $name failed"
}

# daemon_pid MNT: pid of the vdpoolfs serving MNT.
daemon_pid() {
	local pid
	pid=$(getfattr --absolute-names --only-values -n trusted.vdpool.pid \
		"$1" 2>/dev/null) || pid=
	if [ -z "$pid" ]; then
		for pid in $(pgrep -x vdpoolfs || true); do
			tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null |
				grep -qxF "$1" && break
			pid=
		done
	fi
	[ -n "$pid" ] || die "no vdpoolfs process found for $1"
	echo "$pid"
}

# alive PID: some thread of the process has not exited.  The leader turns
# zombie before its other threads are gone, and they still hold the files
# (the members' locks), so every thread counts.
alive() {
	local t state
	for t in /proc/"$1"/task/*/stat; do
		state=$(sed 's/.*) //' "$t" 2>/dev/null) || continue
		state=${state%% *}
		[ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ] &&
			return 0
	done
	return 1
}

# is_mounted MNT: a FUSE mount is at MNT.
is_mounted() { findmnt -rn -M "$1" -o FSTYPE 2>/dev/null | grep -q '^fuse'; }

# vdp_mount POOL MNT [OPTS]: `vdpool mount [-o OPTS] POOL MNT`; checks the
# mount is live when it returns.
vdp_mount() {
	local pool=$1 mnt=$2 pid
	local -a opts=()
	[ $# -ge 3 ] && [ -n "$3" ] && opts=(-o "$3")
	mkdir -p "$mnt"
	run "$VDPOOL" mount "${opts[@]}" "$pool" "$mnt" ||
		die "vdpool mount $pool $mnt failed"
	is_mounted "$mnt" || die "vdpool mount returned but $mnt is not mounted"
	stat -f "$mnt" >/dev/null || die "statfs $mnt failed right after mount"
	pid=$(daemon_pid "$mnt")
	echo "$pid" >>"$VDP_TMP/pids"
	log "mounted $pool at $mnt (vdpoolfs pid $pid)"
}

# vdp_umount MNT: `vdpool umount MNT`; checks the mount and daemon are gone.
vdp_umount() {
	local mnt=$1 pid
	pid=$(daemon_pid "$mnt")
	run "$VDPOOL" umount "$mnt" || die "vdpool umount $mnt failed"
	! is_mounted "$mnt" || die "$mnt still mounted after vdpool umount"
	! alive "$pid" ||
		die "vdpoolfs $pid still running after vdpool umount returned"
}

# vdp_check POOL: `vdpool check POOL` must report a clean pool (exit 0).
vdp_check() {
	local rc=0
	log "+ $VDPOOL check $1"
	"$VDPOOL" check "$1" >&2 || rc=$?
	[ "$rc" -eq 0 ] || die "vdpool check $1: exit status $rc, expected 0"
}

# json_get MNT|POOL EXPR: a value of `vdpool status --json`, by a Python
# expression on j.
json_get() {
	"$VDPOOL" status --json "$1" | python3 -c \
		"import json,sys; j=json.load(sys.stdin); print($2)"
}

# vdp_kill MNT [keep]: kill -9 the daemon of MNT and remove the dead mount.
# With "keep" the dead mount stays, so that every access to MNT fails
# (ENOTCONN) rather than reaching the directory under it, until
# vdp_drop_mount MNT.
vdp_kill() {
	local mnt=$1 pid i
	pid=$(daemon_pid "$mnt")
	run kill -9 "$pid"
	for i in $(seq 100); do
		alive "$pid" || break
		sleep 0.05
	done
	! alive "$pid" || die "vdpoolfs $pid survived kill -9"
	[ "${2:-}" = keep ] || vdp_drop_mount "$mnt"
}

# vdp_drop_mount MNT: remove the dead mount at MNT.
vdp_drop_mount() {
	run fusermount3 -u -z "$1"
	! is_mounted "$1" || die "$1 still mounted after fusermount3 -u -z"
}

# vdp_lodetach DEV: detach and remove DEV.
vdp_lodetach() {
	log "+ losetup -d $1"
	loop_remove "$1"
	sed -i "\\|^$1\$|d" "$VDP_TMP/loops"
}

# loop_ctl ADD|REMOVE N: the /dev/loop-control ioctls; ADD adds the first
# free device number from 100 on and prints the device.
loop_ctl() {
	python3 - "$@" <<'EOF'
import fcntl, os, sys
LOOP_CTL_ADD, LOOP_CTL_REMOVE = 0x4C80, 0x4C81
ctl = os.open("/dev/loop-control", os.O_RDWR)
if sys.argv[1] == "REMOVE":
    fcntl.ioctl(ctl, LOOP_CTL_REMOVE, int(sys.argv[2]))
    sys.exit(0)
for n in range(100, 1000):
    try:
        fcntl.ioctl(ctl, LOOP_CTL_ADD, n)
    except OSError:
        continue
    print("/dev/loop%d" % n)
    sys.exit(0)
sys.exit("no free loop device number")
EOF
}

# vdp_losetup FILE [nodiscard | sector4k]: attach FILE (buffered I/O) to a
# loop device of this test's own, a new /dev/loopN with N >= 100, and print
# the device.  "nodiscard" turns its discard off, as on a disk whose freed
# blocks keep their old bytes; "sector4k" gives it 4 KiB logical sectors,
# as on a 4Kn disk.  The exit trap detaches and removes the
# device, so no setting of ours reaches the machine's shared loop devices
# (a loop device keeps its discard limit across detach and attach).
vdp_losetup() {
	local dev i opts=(--direct-io=off)
	[ "${2:-}" = sector4k ] && opts+=(--sector-size=4096)
	dev=$(loop_ctl ADD) || die "cannot add a loop device"
	echo "$dev" >>"$VDP_TMP/loops"
	for i in $(seq 50); do
		[ -b "$dev" ] && break
		sleep 0.1
	done
	losetup "${opts[@]}" "$dev" "$1" || die "losetup $dev $1 failed"
	if [ "${2:-}" = nodiscard ]; then
		echo 0 >"/sys/block/${dev#/dev/}/queue/discard_max_bytes" ||
			die "cannot turn discard off on $dev"
	fi
	log "attached $1 to $dev${2:+ ($2)}"
	echo "$dev"
}

# loop_detach DEV: detach DEV if it is bound to a file of this test.
# Returns 1 if another file is bound to it now (it is someone else's).
loop_detach() {
	local back
	back=$(losetup -n -O BACK-FILE "$1" 2>/dev/null) || back=
	case $back in
	"") ;;
	"$VDP_TMP"/*) losetup -d "$1" 2>/dev/null ;;
	*) return 1 ;;
	esac
	return 0
}

# loop_remove DEV: detach DEV if it is still ours, then remove the device.
loop_remove() {
	local i
	for i in $(seq 50); do
		loop_detach "$1" || return 0
		loop_ctl REMOVE "${1#/dev/loop}" 2>/dev/null && return 0
		sleep 0.1
	done
	log "cleanup: cannot remove $1"
}
