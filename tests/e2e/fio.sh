#!/bin/bash
# SPDX-License-Identifier: MIT
# fio.sh - fio writes and verifies disks in the mount: libaio with O_DIRECT
# at queue depth 16, psync from two jobs at once, writes with an fsync
# every 16, and four jobs allocating in one disk at once; then the data is
# verified again after a remount.  Also: writes from threads through one
# descriptor that create(2) opened reach the daemon in parallel.
# shellcheck source=tests/e2e/lib.sh
. "$(dirname "$0")/lib.sh"
need fio

vdp_create f 2 384M --extent-size 256K
MNT=$VDP_TMP/mnt
vdp_mount f "$MNT"

# runfio NAME ARGS...: one fio run that must finish with no error and no
# verification failure.
runfio() {
	local name=$1 out=$VDP_TMP/fio-$1.out
	shift
	log "+ fio $*"
	# fio keeps its verify state files in the current directory.
	if ! (cd "$VDP_TMP" && fio --name="$name" --directory="$MNT" \
		--verify_fatal=1 --verify_dump=0 --exitall_on_error=1 "$@") \
		>"$out" 2>&1; then
		cat "$out" >&2
		die "fio $name failed"
	fi
	grep -E 'err=|WRITE:|READ:' "$out" >&2
	if grep -Eq 'err= *[1-9]|verify: bad|verify failed' "$out"; then
		cat "$out" >&2
		die "fio $name reported errors"
	fi
	log "ok: fio $name verified"
}

step "libaio, O_DIRECT, iodepth 16, random writes of 4k-256k, crc32c"
runfio aio --ioengine=libaio --direct=1 --iodepth=16 --rw=randwrite \
	--bsrange=4k-256k --size=128M --verify=crc32c --do_verify=1

step "psync, 2 jobs on their own disks, sequential and random mixes, md5"
runfio psync --ioengine=psync --numjobs=2 --rw=randwrite --bs=64k \
	--size=64M --verify=md5 --do_verify=1

step "psync writes with fsync every 16, unaligned block sizes"
runfio fsync --ioengine=psync --rw=write --bsrange=1k-96k --blockalign=512 \
	--size=64M --fsync=16 --verify=crc32c --do_verify=1

step "4 jobs on one fresh thin disk at once (concurrent allocation), QD 8"
# Each job owns a 24 MiB region of one file; their 4k-64k random writes
# race for the same disk's extent map while allocating.
runfio shared --filename=shared.img --ioengine=libaio --direct=1 \
	--iodepth=8 --numjobs=4 --offset_increment=24M --size=24M \
	--rw=randwrite --bsrange=4k-64k --verify=crc32c --do_verify=1

step "8 threads writing through one descriptor from create(2) run in parallel"
CONN=/sys/fs/fuse/connections/$(stat -c %d "$MNT")
most=$(python3 "$(dirname "$0")/parallel_writes.py" "$MNT/parallel.img" \
	"$CONN/waiting") ||
	die "writes through one created descriptor ran one at a time ($most)"
log "ok: up to $most requests held at once"

step "the data verifies again after a remount"
vdp_umount "$MNT"
vdp_check f
vdp_mount f "$MNT"
# verify_only replays the same job (same seed) and checks without writing.
runfio aio --ioengine=libaio --direct=1 --iodepth=16 --rw=randwrite \
	--bsrange=4k-256k --size=128M --verify=crc32c --verify_only=1
runfio fsync --ioengine=psync --rw=write --bsrange=1k-96k --blockalign=512 \
	--size=64M --verify=crc32c --verify_only=1
vdp_umount "$MNT"
vdp_check f
