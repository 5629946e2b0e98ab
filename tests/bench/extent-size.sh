#!/bin/bash
# SPDX-License-Identifier: MIT
# extent-size.sh - measures what the extent size costs, to choose the
# default (docs/format.md).  For each extent size: a fresh thin disk on a
# pool of two file members, then fio through the mount with O_DIRECT:
#   alloc-4k   2048 4 KiB random writes over a fresh 2 GiB disk, QD 16
#              (mostly first touches: each allocates and zero-fills)
#   over-4k    the same offsets again (extents now mapped)
#   MiB used   what those 8 MiB of random writes allocated
#   seq-1m     1 MiB sequential writes on a fresh disk (allocate), QD 4
# and the time to open (mount) the pool afterwards.  Prints one table.
# Usage: tests/bench/extent-size.sh [BUILD_DIR] [SIZES...]
set -euo pipefail
build=${1:-build}
shift || true
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(64K 256K 1M 4M)
build=$(cd "$build" && pwd)
tmp=$(mktemp -d /var/tmp/vdpool-bench.XXXXXX)
export VDPOOL_REGISTRY=$tmp/reg
cleanup() {
	mountpoint -q "$tmp/mnt" && "$build/tools/vdpool" umount "$tmp/mnt"
	rm -rf "$tmp"
}
trap cleanup EXIT
mkdir -p "$tmp/mnt"

fio_iops() { # NAME RW BS DEPTH IO_SIZE → "IOPS MiB/s"
	fio --name="$1" --filename="$tmp/mnt/disk.img" --rw="$2" --bs="$3" \
		--iodepth="$4" --ioengine=libaio --direct=1 --size=2G \
		--io_size="$5" \
		--randrepeat=1 --norandommap --output-format=json 2>/dev/null |
		python3 -c 'import json,sys; j=json.load(sys.stdin)["jobs"][0]["write"]; print("%.0f %.1f" % (j["iops"], j["bw"]/1024))'
}

printf '%-8s %14s %14s %16s %14s %10s\n' extent "alloc-4k IOPS" "over-4k IOPS" \
	"alloc-4k MiB used" "seq-1m MiB/s" "mount ms"
for es in "${sizes[@]}"; do
	rm -f "$tmp"/m0 "$tmp"/m1 "$tmp"/reg/*
	truncate -s 8G "$tmp/m0" "$tmp/m1"
	"$build/tools/vdpool" create --name bench --extent-size "$es" "$tmp/m0" "$tmp/m1" >/dev/null
	"$build/tools/vdpool" mount bench "$tmp/mnt"
	truncate -s 2G "$tmp/mnt/disk.img"
	a=$(fio_iops alloc randwrite 4k 16 8M | cut -d' ' -f1)
	o=$(fio_iops over randwrite 4k 16 8M | cut -d' ' -f1)
	u=$(($(stat -c %b "$tmp/mnt/disk.img") / 2048))
	rm "$tmp/mnt/disk.img"
	truncate -s 2G "$tmp/mnt/disk.img"
	s=$(fio_iops seq write 1M 4 1G | cut -d' ' -f2)
	"$build/tools/vdpool" umount "$tmp/mnt"
	t0=$(date +%s%N)
	"$build/tools/vdpool" mount bench "$tmp/mnt"
	t1=$(date +%s%N)
	"$build/tools/vdpool" umount "$tmp/mnt"
	printf '%-8s %14s %14s %16s %14s %10s\n' "$es" "$a" "$o" "$u" "$s" \
		$(((t1 - t0) / 1000000))
done
