#!/bin/bash
# SPDX-License-Identifier: MIT
# guest.sh - a real QEMU guest on vdpool disks.  Debian's kernel and a
# busybox initramfs that this test builds in its temporary directory
# (guest/init.sh is its /init, driven by the kernel command line) boot with
# a virtio-blk disk that is a file in the mount; the guest formats it
# ext4, writes files whose sha256 it prints on its serial console, syncs
# and powers off; the host then runs e2fsck -fn on the image and checks the
# checksums through a read-only loop mount.
#   1  three guests at once, cache=none,aio=native / cache=none,aio=threads
#      / cache=writeback
#   2  discard=unmap,detect-zeroes=unmap: the guest deletes files and runs
#      fstrim; st_blocks of the image and the pool's df give the space back
#   3  a second guest boots from a cp of the first disk, both at once; each
#      writes its own files (one also a file of zeros), both check clean,
#      neither sees the other's
#   4  a pool that runs full: werror=stop pauses the VM (HMP "info status":
#      paused (io-error)) until the host frees space and says "cont";
#      werror=report gives the guest I/O errors, files synced before stay
#      intact and the pool checks clean once space is freed
#   5  kill -9 of the daemon while the guest writes with cache=none and
#      syncs file by file: after a remount the synced files are intact and
#      e2fsck -fy recovers the journal, then -fn is clean
# The guest formats with e2fsprogs' mke2fs, copied into the initramfs with
# its libraries (busybox's makes only ext2); part 4 formats on the host
# (mke2fs on the image file) to measure the pool's free space after it.
# KVM where it works, else TCG (GUEST_ACCEL=tcg|kvm to choose).  About
# 80 s under TCG on 2 cores.  Against an ASan build of the daemon (CI's
# second run) part 1 boots cache=none,aio=native only, about 60 s in all:
# the other two modes reach the daemon by paths (buffered, threaded
# writes) that other tests run under ASan too.
# GUEST_TIMEOUT: seconds a guest may run (default 150).
# shellcheck source=tests/e2e/lib.sh
. "$(dirname "$0")/lib.sh"
need qemu-system-x86_64 cpio e2fsck losetup sha256sum fallocate

GUEST_SRC=$VDPOOL_SRC/tests/e2e/guest
M=$((1024 * 1024))

# ---- the guest's kernel and initramfs ----------------------------------------

# The newest installed kernel and its modules.
KERNEL=$(find /boot -maxdepth 1 -name 'vmlinuz-*' | sort -V | tail -n 1)
[ -n "$KERNEL" ] || die "no /boot/vmlinuz-*: run scripts/install-deps.sh"
KVER=${KERNEL#/boot/vmlinuz-}
MODDIR=/lib/modules/$KVER
[ -f "$MODDIR/modules.dep" ] || die "$MODDIR/modules.dep missing"
BUSYBOX=$(command -v busybox) ||
	die "busybox not found: run scripts/install-deps.sh"
if ldd "$BUSYBOX" >/dev/null 2>&1; then
	die "$BUSYBOX is linked dynamically: install busybox-static"
fi

# The modules the guest insmods, in this order; each one's dependencies
# (modules.dep) go before it.  Built-in ones are left out.
GUEST_MODULES=(virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev
	virtio_pci virtio_blk crc16 mbcache jbd2 crc32c_generic libcrc32c ext4)

# add_module PATH: PATH (relative to MODDIR) and its dependencies, not yet
# in MOD_ORDER, appended to it.  modules.dep lists a module's dependencies
# so that the last one must load first.
declare -A MOD_SEEN=()
MOD_ORDER=()
add_module() {
	local line dep
	local -a deps
	[ -n "${MOD_SEEN[$1]:-}" ] && return 0
	MOD_SEEN[$1]=1
	line=$(grep -m1 "^$1:" "$MODDIR/modules.dep") ||
		die "$1 not in $MODDIR/modules.dep"
	read -r -a deps <<<"${line#*:}"
	for ((dep = ${#deps[@]} - 1; dep >= 0; dep--)); do
		add_module "${deps[dep]}"
	done
	MOD_ORDER+=("$1")
}

# build_initramfs OUT: busybox-static, e2fsprogs' mke2fs with its
# libraries, the modules and guest/init.sh as /init, as an uncompressed
# newc cpio (the kernel unpacks it fastest).
build_initramfs() {
	local root=$VDP_TMP/initramfs name line path lib out
	rm -rf "$root"
	mkdir -p "$root"/{bin,sbin,lib,lib64,etc,dev,proc,sys,mnt,modules}
	cp "$BUSYBOX" "$root/bin/busybox"
	ln -s busybox "$root/bin/sh" # for /init's #!; it installs the rest
	cp "$GUEST_SRC/init.sh" "$root/init"
	chmod 755 "$root/init"
	mknod -m 600 "$root/dev/console" c 5 1
	# busybox's mke2fs makes only ext2: the guest gets the real one.
	cp /sbin/mke2fs "$root/sbin/mke2fs"
	cp /etc/mke2fs.conf "$root/etc/"
	ldd /sbin/mke2fs | while read -r line; do
		case $line in
		*ld-linux*) cp -L "${line%% *}" "$root/lib64/" ;;
		*"=> /"*)
			lib=${line#*=> }
			cp -L "${lib%% *}" "$root/lib/"
			;;
		esac
	done
	for name in "${GUEST_MODULES[@]}"; do
		if grep -Eq "/$name\.ko" "$MODDIR/modules.builtin"; then
			continue
		fi
		line=$(grep -Em1 "(^|/)$name\.ko(\.xz|\.zst|\.gz)?:" \
			"$MODDIR/modules.dep") ||
			die "module $name not in $MODDIR/modules.dep"
		add_module "${line%%:*}"
	done
	for path in "${MOD_ORDER[@]}"; do
		name=$(basename "$path")
		out=$root/modules/${name%.ko*}.ko
		case $path in
		*.xz) xz -dc "$MODDIR/$path" >"$out" ;;
		*.zst) zstd -qdc "$MODDIR/$path" >"$out" ;;
		*.gz) gzip -dc "$MODDIR/$path" >"$out" ;;
		*) cp "$MODDIR/$path" "$out" ;;
		esac
		echo "/modules/${name%.ko*}.ko" >>"$root/insmod.list"
	done
	(cd "$root" && find . | cpio -o -H newc --quiet) >"$1" ||
		die "cpio of the initramfs failed"
	log "initramfs $1: $(($(fsize "$1") / 1024)) KiB, kernel $KERNEL," \
		"modules: $(tr '\n' ' ' <"$root/insmod.list")"
}

INITRD=$VDP_TMP/initrd.cpio
build_initramfs "$INITRD"

# KVM where it works, else TCG.  /dev/kvm may exist and still not run a
# guest (nested virtualisation that hangs in the kernel's early boot), so
# the probe boots the kernel without a root filesystem: it must reach its
# panic (and with -no-reboot exit) within 5 s (about 1 s where KVM works).
# GUEST_ACCEL=tcg|kvm overrides the probe.
kvm_boots() {
	[ -c /dev/kvm ] || return 1
	timeout 5 qemu-system-x86_64 -accel kvm -m 128 -nodefaults \
		-display none -no-reboot -kernel "$KERNEL" \
		-append "console=ttyS0 panic=-1" \
		-serial "file:$VDP_TMP/kvm-probe" </dev/null >/dev/null 2>&1
	grep -q 'Kernel panic' "$VDP_TMP/kvm-probe"
}
ACCEL=${GUEST_ACCEL:-}
if [ -z "$ACCEL" ]; then
	ACCEL=tcg
	kvm_boots && ACCEL=kvm
fi
# Under TCG the default CPU has no RDRAND: the guest kernel then takes
# seconds to seed its random pool, and mke2fs waits for that (getrandom).
GUEST_CPU=()
[ "$ACCEL" = tcg ] && GUEST_CPU=(-cpu max)
log "QEMU accelerator: $ACCEL ${GUEST_CPU[*]}"

# ---- guests ----------------------------------------------------------------

: >"$VDP_TMP/qemu.pids"
# Our QEMUs go before lib.sh's cleanup, which unmounts the pools they use.
# qemu.pids lists the QEMUs not yet reaped (reaped() takes them off), so a
# pid reused by another process is never killed.
guest_cleanup() {
	local rc=$? pid
	set +e
	while read -r pid; do
		kill -9 "$pid" 2>/dev/null
	done <"$VDP_TMP/qemu.pids"
	while read -r pid; do
		wait "$pid" 2>/dev/null
	done <"$VDP_TMP/qemu.pids"
	(exit "$rc")
	cleanup
}

# reaped PID: QEMU PID was waited for.
reaped() { sed -i "/^$1\$/d" "$VDP_TMP/qemu.pids"; }
trap guest_cleanup EXIT

# guest_start NAME DISK DRIVE-OPTS STEPS: boot guest NAME in the background
# with DISK as its virtio disk (-drive ...,DRIVE-OPTS) running init.sh's
# STEPS; its console goes to $VDP_TMP/NAME/console, its HMP monitor
# listens on $VDP_TMP/NAME/mon.
guest_start() {
	local name=$1 disk=$2 drive=$3 steps=$4 d=$VDP_TMP/$1
	mkdir -p "$d"
	: >"$d/console"
	log "+ guest $name: -drive file=$disk,format=raw,if=virtio,$drive" \
		"vdp=$steps"
	qemu-system-x86_64 -accel "$ACCEL" "${GUEST_CPU[@]}" -m 256 -smp 1 \
		-nographic -nodefaults -no-reboot \
		-kernel "$KERNEL" -initrd "$INITRD" \
		-append "console=ttyS0 panic=-1 quiet vdp=$steps" \
		-serial "file:$d/console" \
		-monitor "unix:$d/mon,server=on,wait=off" \
		-drive "file=$disk,format=raw,if=virtio,$drive" \
		</dev/null >"$d/qemu.out" 2>&1 &
	echo $! >"$d/pid"
	echo $! >>"$VDP_TMP/qemu.pids"
	date +%s >"$d/start"
}

# console NAME: guest NAME's console so far, without carriage returns.
console() { tr -d '\r' <"$VDP_TMP/$1/console"; }

# show_console NAME: the console's markers (not checksums) and kernel
# messages, to the log.
show_console() {
	console "$1" | grep -a -e '^VDP-' -e '^\[ *[0-9]' | grep -v '^VDP-SUM' |
		sed "s/^/    $1: /" >&2 || true
}

# guest_wait NAME [FAILS]: wait for guest NAME to power off (at most
# GUEST_TIMEOUT s); it must have finished its steps, and QEMU must exit 0.
# Unless FAILS is "fails", no step may have failed.
guest_wait() {
	local name=$1 d=$VDP_TMP/$1 pid rc=0 t=0
	pid=$(cat "$d/pid")
	while kill -0 "$pid" 2>/dev/null; do
		sleep 0.5
		t=$((t + 1))
		if [ "$t" -gt $((2 * GUEST_TIMEOUT)) ]; then
			show_console "$name"
			die "guest $name still running after $GUEST_TIMEOUT s"
		fi
	done
	wait "$pid" || rc=$?
	reaped "$pid"
	log "guest $name powered off after $(($(date +%s) - $(cat "$d/start"))) s"
	show_console "$name"
	if [ "$rc" -ne 0 ]; then
		cat "$d/qemu.out" >&2
		die "qemu of guest $name exited with status $rc"
	fi
	console "$name" | grep -qx VDP-DONE ||
		die "guest $name did not finish its steps"
	if [ "${2:-}" != fails ] && console "$name" | grep -q '^VDP-FAIL'; then
		die "guest $name: a step failed ($(console "$name" |
			grep -m1 '^VDP-FAIL'))"
	fi
	return 0
}
GUEST_TIMEOUT=${GUEST_TIMEOUT:-150}

# sums NAME [DIR]: the checksums guest NAME printed (of files under DIR).
sums() {
	console "$1" | sed -n "s|^VDP-SUM \(.*  ${2:-}\)|\1|p"
}

# hmp NAME COMMAND: run COMMAND on guest NAME's HMP monitor and print its
# output (without the echo and prompt).  Prints nothing when QEMU has
# gone (as after "quit").
hmp() {
	python3 - "$VDP_TMP/$1/mon" "$2" <<'PY'
import re, socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(30)
s.connect(sys.argv[1])
def prompt():
    buf = b""
    while not buf.endswith(b"(qemu) "):
        d = s.recv(4096)
        if not d:
            break
        buf += d
    return buf.decode(errors="replace")
prompt()
s.sendall(sys.argv[2].encode() + b"\n")
out = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", prompt()).replace("\r", "")
lines = out.split("\n")[1:]  # the first line echoes the command
print("\n".join(l for l in lines if l and l != "(qemu) "))
PY
}

# vm_status NAME: "running", "paused (io-error)", ... from "info status".
vm_status() { hmp "$1" "info status" | sed -n 's/^VM status: //p'; }

# wait_synced NAME N: wait until guest NAME's console has N "VDP-SYNCED"
# lines; fails when the guest ends first.
wait_synced() {
	local t
	for t in $(seq $((GUEST_TIMEOUT * 10))); do
		[ "$(console "$1" | grep -c '^VDP-SYNCED ')" -ge "$2" ] &&
			return 0
		kill -0 "$(cat "$VDP_TMP/$1/pid")" 2>/dev/null || break
		sleep 0.1
	done
	show_console "$1"
	die "guest $1: fewer than $2 VDP-SYNCED lines on its console"
}

# files_kb N KB: KiB that init.sh's write:D:N:KB writes.
files_kb() {
	local j kb=0
	for ((j = 1; j <= $1; j++)); do
		kb=$((kb + $2 * (j % 3 + 1) / 2 + j))
	done
	echo "$kb"
}

# ---- host-side checks ------------------------------------------------------

# fsck_clean IMAGE: e2fsck -fn finds nothing to fix.
fsck_clean() {
	local out rc=0
	out=$(e2fsck -fn "$1" 2>&1) || rc=$?
	[ "$rc" -eq 0 ] || die "e2fsck -fn $1: status $rc: $out"
	log "ok: e2fsck -fn $1: $(tail -n 1 <<<"$out")"
}

# fsck_repair IMAGE OUT: e2fsck -fy IMAGE (status 0 or 1: clean or
# repaired), its report logged and kept in OUT.
fsck_repair() {
	local rc=0
	e2fsck -fy "$1" >"$2" 2>&1 || rc=$?
	sed 's/^/    e2fsck -fy: /' "$2" >&2
	[ "$rc" -le 1 ] || die "e2fsck -fy $1: status $rc"
}

# check_files IMAGE SUMS [ABSENT...]: loop-mount IMAGE read-only; every
# "sha256  path" line of file SUMS matches, and no ABSENT path exists.
check_files() {
	local img=$1 sums=$2 dev mnt=$VDP_TMP/ro p out rc=0
	shift 2
	[ -s "$sums" ] || die "no checksums to check in $sums"
	dev=$(vdp_losetup "$img")
	mkdir -p "$mnt"
	run mount -t ext4 -o ro "$dev" "$mnt"
	out=$(cd "$mnt" && sha256sum -c --quiet "$sums" 2>&1) || rc=$?
	for p in "$@"; do
		[ ! -e "$mnt/$p" ] || { out="$p exists" && rc=1; }
	done
	umount "$mnt"
	vdp_lodetach "$dev"
	[ "$rc" -eq 0 ] || die "files in $img: $out"
	log "ok: $(wc -l <"$sums") files in $img match the guest's" \
		"checksums${1:+; absent: $*}"
}

# ---- 1: a guest per cache mode -----------------------------------------------

vdp_create g 2 512M
MNT=$VDP_TMP/mnt
vdp_mount g "$MNT"
DISK_SIZE=128M

step "1: guests format their disks, write files and power off, a mode each"
# At once: three guests on one pool.
MODES=("cache=none,aio=native" "cache=none,aio=threads" "cache=writeback")
if grep -qx 'VDPOOL_SANITIZE:BOOL=ON' "$VDPOOL_BUILD/CMakeCache.txt" \
	2>/dev/null; then
	log "sanitizer build: part 1 runs ${MODES[0]} only"
	MODES=("${MODES[0]}")
fi
for i in "${!MODES[@]}"; do
	truncate -s "$DISK_SIZE" "$MNT/m$i.img"
	guest_start "m$i" "$MNT/m$i.img" "${MODES[i]}" \
		mkfs,mount,write:t:6:200,umount
done
for i in "${!MODES[@]}"; do
	guest_wait "m$i"
	sums "m$i" >"$VDP_TMP/m$i.sums"
	fsck_clean "$MNT/m$i.img"
	check_files "$MNT/m$i.img" "$VDP_TMP/m$i.sums"
done

# ---- 2: discard and fstrim -------------------------------------------------

step "2: discard=unmap,detect-zeroes=unmap: fstrim gives the pool space back"
DISCARD=cache=none,aio=native,discard=unmap,detect-zeroes=unmap
truncate -s "$DISK_SIZE" "$MNT/d.img"
guest_start d1 "$MNT/d.img" "$DISCARD" \
	mkfs,mount,write:t:4:200,write:big:6:4096,umount
guest_wait d1
fsck_clean "$MNT/d.img"
blocks1=$(fblocks "$MNT/d.img")
free1=$(df_free "$MNT")
log "d.img: $((blocks1 / 2048)) MiB allocated, pool free $((free1 / M)) MiB"
# The sync lets ext4 commit the deletion: fstrim skips blocks freed in a
# transaction still open.
guest_start d2 "$MNT/d.img" "$DISCARD" \
	mount,verify:t,verify:big,rm:big,sync,fstrim,write:u:3:100,umount
guest_wait d2
console d2 | grep -a '^/mnt: .* trimmed' >&2 || die "fstrim printed no summary"
blocks2=$(fblocks "$MNT/d.img")
free2=$(df_free "$MNT")
log "after rm and fstrim: d.img $((blocks2 / 2048)) MiB allocated, pool" \
	"free $((free2 / M)) MiB"
# At least 3/4 of the deleted files' bytes come back (ext4 trims whole
# free ranges; the pool frees the whole extents in them).
big=$(files_kb 6 4096)
[ $(((blocks1 - blocks2) * 512)) -ge $((big * 1024 * 3 / 4)) ] ||
	die "fstrim of $((big / 1024)) MiB of deleted files freed only" \
		"$(((blocks1 - blocks2) / 2048)) MiB of d.img"
# Only d.img changed: the pool's free space grew by what it lost.
assert_eq $((free2 - free1)) $(((blocks1 - blocks2) * 512)) \
	"pool free space gained by fstrim (bytes)"
{ sums d1 t/ && sums d2 u/; } >"$VDP_TMP/d.sums"
fsck_clean "$MNT/d.img"
check_files "$MNT/d.img" "$VDP_TMP/d.sums" big

# ---- 3: a clone ------------------------------------------------------------

step "3: a second guest boots from a cp of the first disk; both change apart"
run cp "$MNT/d.img" "$MNT/c.img"
# Shared or copied: coreutils 9.1 copies a thin disk (docs/clones.md);
# either way the two disks must change apart.
"$VDPOOL" status "$MNT" | grep -E '^ *(disk|/[dc]\.img) ' >&2 ||
	die "vdpool status $MNT failed"
# Both at once: each writes its own files and checks the common ones; a
# also writes 16 MiB of zeros, which detect-zeroes=unmap turns into
# punches (they must read back as zeros).  Each ~1.25 MiB run of zeros
# reaches the daemon as a 4 KiB write of zeros at its start and a punch of
# the rest (strace, QEMU 7.2); zeros over a hole allocate nothing, over
# extents ext4 reuses they are written: the growth depends on where ext4
# puts the file, so it is logged, not asserted (docs/hypervisors.md).
blocks1=$(fblocks "$MNT/d.img")
guest_start a "$MNT/d.img" "$DISCARD" \
	mount,verify:t,verify:u,write:a:4:300,zeros:a:16384,umount
guest_start b "$MNT/c.img" cache=none,aio=threads \
	mount,verify:t,verify:u,write:b:4:300,rm:u,umount
guest_wait a
guest_wait b
blocks2=$(fblocks "$MNT/d.img")
log "d.img: $((blocks1 / 2048)) MiB allocated before guest a, $((blocks2 / \
	2048)) MiB after it wrote 1.2 MiB of files and 16 MiB of zeros"
{ cat "$VDP_TMP/d.sums" && sums a a/; } >"$VDP_TMP/a.sums"
{ sums d1 t/ && sums b b/; } >"$VDP_TMP/b.sums"
for img in d c; do fsck_clean "$MNT/$img.img"; done
check_files "$MNT/d.img" "$VDP_TMP/a.sums" b b.sha256
check_files "$MNT/c.img" "$VDP_TMP/b.sums" a a.sha256 u

# ---- 4: a pool that runs full ----------------------------------------------

# A pool of 2 x 64 MiB with a 64 MiB disk; the host formats it (mke2fs on
# the file: part 1 has shown the guest's mkfs) and fills the pool up to
# FREE_LEFT bytes with a filler disk; the guest then writes more than that.
FMNT=$VDP_TMP/fmnt
vdp_create f 2 64M
vdp_mount f "$FMNT"
FREE_LEFT=$((4 * M))
# noinit_itable: no background inode-table zeroing, so the guest writes
# only what its steps say.
FULL_STEPS=mount:noinit_itable

# fill_pool DISK: mke2fs on the new 64 MiB DISK, then a filler disk that
# leaves FREE_LEFT bytes of the pool free.
fill_pool() {
	truncate -s 64M "$1"
	run mkfs.ext4 -q -F "$1"
	run fallocate -l $(($(df_free "$FMNT") - FREE_LEFT)) "$FMNT/filler.img"
	log "pool f: $(($(df_free "$FMNT") / M)) MiB free"
}

# await_status NAME STATUS: guest NAME's HMP "info status" shows STATUS.
await_status() {
	local t st=
	for t in $(seq $((GUEST_TIMEOUT * 2))); do
		st=$(vm_status "$1" 2>/dev/null) || st=
		[ "$st" = "$2" ] && break
		kill -0 "$(cat "$VDP_TMP/$1/pid")" 2>/dev/null || break
		sleep 0.5
	done
	[ "$st" = "$2" ] || {
		show_console "$1"
		die "guest $1: VM status '$st', expected '$2'"
	}
	log "ok: guest $1: info status: VM status: $st"
}

step "4a: werror=stop: the VM pauses on ENOSPC and resumes after rm"
fill_pool "$FMNT/s.img"
guest_start s "$FMNT/s.img" cache=none,aio=native,werror=stop,rerror=stop \
	"$FULL_STEPS,write:w:6:2048,sync,umount"
await_status s "paused (io-error)"
# and for want of space: "info block" shows the device's I/O status.
out=$(hmp s "info block")
grep -q 'I/O status: *nospace' <<<"$out" ||
	die "guest s: paused, but not for want of space: info block: $out"
log "ok: guest s: info block: I/O status: nospace"
run rm "$FMNT/filler.img"
# The filler's extents return when the kernel forgets its inode, which it
# sends asynchronously.
for t in $(seq 100); do
	[ "$(df_free "$FMNT")" -gt $((32 * M)) ] && break
	sleep 0.1
done
[ "$(df_free "$FMNT")" -gt $((32 * M)) ] ||
	die "pool f: only $(($(df_free "$FMNT") / M)) MiB free after rm filler.img"
log "pool f: $(($(df_free "$FMNT") / M)) MiB free"
run hmp s cont
guest_wait s
sums s >"$VDP_TMP/s.sums"
fsck_clean "$FMNT/s.img"
check_files "$FMNT/s.img" "$VDP_TMP/s.sums"

step "4b: werror=report: the guest sees I/O errors; freed, the pool is clean"
run rm "$FMNT/s.img"
fill_pool "$FMNT/r.img"
guest_start r "$FMNT/r.img" cache=none,aio=native,werror=report,rerror=report \
	"$FULL_STEPS,synced:pre:2:256,synced:w:6:2048,errors,umount"
guest_wait r fails
assert_eq "$(console r | grep -c '^VDP-SYNCED pre/')" 2 \
	"files in pre/ the guest synced before the pool ran full"
console r | grep -qx 'VDP-FAIL synced:w:6:2048' ||
	die "guest r: writing past the pool's end did not fail"
console r | grep -aq '^VDP-DMESG.*I/O error' ||
	die "guest r: no I/O error in its kernel log"
run rm "$FMNT/filler.img"
vdp_umount "$FMNT"
vdp_check f
vdp_mount f "$FMNT"
# The guest's ext4 aborted its journal on the errors: e2fsck -fy repairs
# (status 0 or 1), then finds nothing; the files synced before are intact.
fsck_repair "$FMNT/r.img" "$VDP_TMP/r.fsck"
fsck_clean "$FMNT/r.img"
sums r pre/ >"$VDP_TMP/r.sums"
check_files "$FMNT/r.img" "$VDP_TMP/r.sums"
vdp_umount "$FMNT"
vdp_check f

# ---- 5: kill -9 of the daemon under a guest --------------------------------

step "5: kill -9 of the daemon while a guest writes; its synced files survive"
truncate -s "$DISK_SIZE" "$MNT/k.img"
guest_start k "$MNT/k.img" cache=none,aio=native,werror=report,rerror=report \
	mkfs,mount,synced:s:200:32,umount
wait_synced k 3
vdp_kill "$MNT"
# The guest now gets I/O errors (and may power off); stop it as a power
# cut would.
pid=$(cat "$VDP_TMP/k/pid")
hmp k quit >/dev/null 2>&1 || kill -9 "$pid" 2>/dev/null || true
rc=0
wait "$pid" || rc=$?
reaped "$pid"
log "guest k: QEMU ended with status $rc"
cat "$VDP_TMP/k/qemu.out" >&2
show_console k
console k | sed -n 's|^VDP-SYNCED ||p' >"$VDP_TMP/k.synced"
log "guest k: $(wc -l <"$VDP_TMP/k.synced") files synced before it stopped"
[ "$(wc -l <"$VDP_TMP/k.synced")" -lt 200 ] ||
	die "guest k synced all its files before the kill: give it more"
sums k s/ | awk 'NR == FNR { synced[$0]; next } $2 in synced' \
	"$VDP_TMP/k.synced" - >"$VDP_TMP/k.sums"
assert_eq "$(wc -l <"$VDP_TMP/k.sums")" "$(wc -l <"$VDP_TMP/k.synced")" \
	"checksums of the synced files"
vdp_check g
vdp_mount g "$MNT"
fsck_repair "$MNT/k.img" "$VDP_TMP/k.fsck"
grep -q 'recovering journal' "$VDP_TMP/k.fsck" ||
	die "e2fsck -fy $MNT/k.img did not recover the journal"
fsck_clean "$MNT/k.img"
check_files "$MNT/k.img" "$VDP_TMP/k.sums"
vdp_umount "$MNT"
vdp_check g
