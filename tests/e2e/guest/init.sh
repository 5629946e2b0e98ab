#!/bin/sh
# SPDX-License-Identifier: MIT
#
# init.sh - /init of the guest that tests/e2e/guest.sh boots (busybox sh).
#
# Loads the virtio and ext4 modules listed in /insmod.list (a path a line,
# in order), then runs the steps named on the kernel command line as
# vdp=STEP,STEP,... against /dev/vda, printing to the serial console, and
# powers off.  It must never reboot or wait for input: the host reads its
# console log afterwards and must always see the VM end.
#
# Steps (ARGs separated by ':'):
#   mkfs            mke2fs -t ext4 on /dev/vda (e2fsprogs' mke2fs, copied
#                   in with its libraries: busybox's makes only ext2)
#   mount[:OPTS]    mount /dev/vda (ext4) on /mnt
#   umount          umount /mnt
#   write:D:N:KB    N files of about KB KiB of random bytes in a tree under
#                   /mnt/D, a line per file on the console: "VDP-SUM
#                   <sha256>  D/<path>" (what the guest wrote, read back
#                   through its page cache)
#   synced:D:N:KB   like write, but each file written with fsync, then
#                   sync(1), then "VDP-SYNCED D/<path>"
#   zeros:D:KB      a file D/zeros of KB KiB of zeros, with its VDP-SUM line
#   sync            sync(1)
#   verify:D        sha256sum -c of D's checksums (kept in /mnt/D.sha256)
#   rm:D            rm -r /mnt/D
#   fstrim          fstrim -v /mnt
#   errors          print the kernel's I/O error lines ("VDP-DMESG ...")
# Markers: "VDP-STEP s (at T s)" before a step (T: the guest's uptime),
# "VDP-FAIL s" when it fails (the remaining steps still run, so that the
# host sees every failure, except after a failed mkfs or mount), "VDP-END
# at T s" and "VDP-DONE" at the end.

/bin/busybox --install -s /bin
export PATH=/sbin:/bin LD_LIBRARY_PATH=/lib
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
exec </dev/null >/dev/ttyS0 2>&1
echo # the firmware left the cursor mid-line

say() { echo "$*"; }
off() {
	sync
	say "VDP-END at $(cut -d' ' -f1 /proc/uptime) s"
	say "VDP-DONE"
	poweroff -f
	sleep 60
}

while read -r m; do
	insmod "$m" || say "VDP-FAIL insmod $m"
done </insmod.list

i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do
	sleep 0.1
	i=$((i + 1))
done
[ -b /dev/vda ] || {
	say "VDP-FAIL no /dev/vda"
	off
}

steps=$(sed -n 's/.*vdp=\([^ ]*\).*/\1/p' /proc/cmdline)

# files D N KB SYNC: write N random files in a tree under /mnt/D and print
# a "VDP-SUM <sha256>  D/<path>" line for each; with SYNC=1 each file is
# written with fsync and followed by sync(1) and a "VDP-SYNCED D/<path>"
# line once both returned.
files() {
	mkdir -p "/mnt/$1" || return 1
	j=1
	while [ $j -le "$2" ]; do
		# Sizes vary so that files end mid-block and mid-extent.
		kb=$(($3 * (j % 3 + 1) / 2 + j))
		# A tree: D/f1, D/a/f2, D/a/b/f3, D/f4, ...
		case $((j % 3)) in
		0) f=$1/a/b/f$j ;;
		1) f=$1/f$j ;;
		2) f=$1/a/f$j ;;
		esac
		mkdir -p "/mnt/${f%/*}" || return 1
		if [ "$4" = 1 ]; then
			dd if=/dev/urandom of="/mnt/$f" bs=1024 count=$kb \
				conv=fsync 2>/dev/null || return 1
		else
			dd if=/dev/urandom of="/mnt/$f" bs=1024 count=$kb \
				2>/dev/null || return 1
		fi
		sum=$(cd /mnt && sha256sum "$f") || return 1
		echo "$sum" >>"/mnt/$1.sha256"
		say "VDP-SUM $sum"
		if [ "$4" = 1 ]; then
			sync || return 1
			say "VDP-SYNCED $f"
		fi
		j=$((j + 1))
	done
}

step() {
	IFS=: read -r op a b c <<-X
		$1
	X
	case $op in
	mkfs) /sbin/mke2fs -q -F -t ext4 /dev/vda ;;
	mount) mount -t ext4 ${a:+-o "$a"} /dev/vda /mnt ;;
	umount) umount /mnt ;;
	write) files "$a" "$b" "$c" 0 ;;
	synced) files "$a" "$b" "$c" 1 ;;
	zeros)
		mkdir -p "/mnt/$a" &&
			dd if=/dev/zero of="/mnt/$a/zeros" bs=1024 count="$b" \
				2>/dev/null &&
			sum=$(cd /mnt && sha256sum "$a/zeros") &&
			echo "$sum" >>"/mnt/$a.sha256" && say "VDP-SUM $sum"
		;;
	sync) sync ;;
	verify) (cd /mnt && sha256sum -c -s "$a.sha256") ;;
	rm) rm -r "/mnt/${a:?}" "/mnt/$a.sha256" ;;
	fstrim) fstrim -v /mnt ;;
	errors) dmesg | grep -e 'I/O error' -e 'EXT4-fs' | sed 's/^/VDP-DMESG /' ;;
	*)
		say "unknown step $op"
		return 1
		;;
	esac
}

IFS=,
for s in $steps; do
	IFS=' '
	say "VDP-STEP $s (at $(cut -d' ' -f1 /proc/uptime) s)"
	if ! step "$s"; then
		say "VDP-FAIL $s"
		case ${s%%:*} in mkfs | mount) off ;; esac
	fi
	IFS=,
done
IFS=' '
off
