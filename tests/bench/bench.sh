#!/bin/bash
# SPDX-License-Identifier: MIT
#
# bench.sh - the benchmark of issue 5: vdpool side by side with the raw
# backing file and the other FUSE block stores, in one run on one machine,
# each target on a backing file of the same size on the same filesystem.
#
# Targets (all opened by fio with O_DIRECT):
#   raw          fio straight on a backing file: the limit;
#   vdpool       a fully allocated disk on a mounted pool of two file members;
#   vdpool-thin  a thin disk on the same pool, truncated to nothing and
#                committed before every run (its first writes allocate);
#   qemu-fuse    qemu-storage-daemon's FUSE export of the raw file
#                (cache.direct=on, aio=native);
#   nbdfuse      nbdfuse over nbdkit's file plugin on the raw file;
#   iscsi-raw    an iSCSI LUN of a tgtd of this run (on a file of SIZE),
#                read and written by fio's nbd engine through
#                qemu-storage-daemon's libiscsi driver: the limit of a
#                userspace initiator on this machine (Debian's fio has no
#                libiscsi engine; its nbd engine cannot fdatasync, so
#                fsync16-write is not run there);
#   vdpool-iscsi an allocated disk on a pool whose one member is a second
#                LUN of that tgtd.
# The iSCSI targets run in full and quick mode when tgtd is installed.
# raw, qemu-fuse and nbdfuse use the same backing file, one after another.
# Jobs: fio, repeated, the median reported; metadata jobs: mount time and
# daemon memory at 10^4..10^6 allocated extents, commit latency, clone time.
# Writes results.md (Markdown tables, ratio to raw) and results.json (every
# sample, the machine) to the output directory and prints results.md.
#
# It never touches mounts or processes it did not start: the exit trap
# unmounts and stops only what this run made, then removes its work dir.
set -euo pipefail
shopt -s inherit_errexit
export LC_ALL=C

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$SRC/tests/bench
ARGS=("$@")

usage() {
	cat <<EOF
Usage: tests/bench/bench.sh [--quick|--smoke] [OPTION]...
Benchmark vdpool against the raw backing file, qemu-storage-daemon's FUSE
export and nbdfuse+nbdkit (see docs/benchmarks.md).  Run as root on an
otherwise idle machine.

  --quick            short run (under 2 minutes): 1 GiB files, 1 s jobs, 1 run
  --smoke            raw and vdpool only, tiny jobs: checks the script works
  --dir DIR          where the backing files go (default /var/tmp)
  --build DIR        build tree with tools/vdpool and fs/vdpoolfs
                     (default \$VDPOOL_BUILD or build/)
  --out DIR          results directory (default
                     /var/tmp/vdpool-bench-results/TIME-MODE)
  --size SIZE        size of each backing file and disk (full: 4G)
  --runtime SEC      seconds measured per job (full: 12)
  --ramp SEC         seconds of warm-up before measuring (full: 3)
  --repeat N         runs of each job; the median is reported (full: 3)
  --targets LIST     comma-separated subset of: $ALL_TARGETS
  --jobs LIST        comma-separated subset of: $ALL_JOBS
  --no-meta          skip the metadata jobs
  -h, --help         show this help
EOF
}

ALL_TARGETS=raw,vdpool,vdpool-thin,qemu-fuse,nbdfuse,iscsi-raw,vdpool-iscsi
ALL_JOBS=seq-write,seq-read,rand-write,rand-read,rand-rw,psync4-write,fsync16-write
mode=full dir=/var/tmp build=${VDPOOL_BUILD:-$SRC/build} out=''
size='' runtime='' ramp='' repeat='' targets='' jobs='' meta=1
while [ $# -gt 0 ]; do
	case $1 in
	--quick) mode=quick ;;
	--smoke) mode=smoke ;;
	--dir) dir=${2:?--dir needs a directory} && shift ;;
	--build) build=${2:?--build needs a directory} && shift ;;
	--out) out=${2:?--out needs a directory} && shift ;;
	--size) size=${2:?--size needs a size} && shift ;;
	--runtime) runtime=${2:?--runtime needs seconds} && shift ;;
	--ramp) ramp=${2:?--ramp needs seconds} && shift ;;
	--repeat) repeat=${2:?--repeat needs a count} && shift ;;
	--targets) targets=${2:?--targets needs a list} && shift ;;
	--jobs) jobs=${2:?--jobs needs a list} && shift ;;
	--no-meta) meta=0 ;;
	-h | --help) usage && exit 0 ;;
	*) echo "bench: unknown argument '$1' (see --help)" >&2 && exit 2 ;;
	esac
	shift
done

# Per mode: file size, seconds measured, warm-up, runs, extent counts of
# the metadata pools.
case $mode in
full) defaults=(4G 12 3 3 "10000 100000 1000000") ;;
quick) defaults=(1G 1 0.5 1 "10000 100000 1000000") ;;
smoke)
	defaults=(64M 0.5 0 1 "10000")
	: "${targets:=raw,vdpool,vdpool-thin}"
	;;
esac
size=${size:-${defaults[0]}} runtime=${runtime:-${defaults[1]}}
ramp=${ramp:-${defaults[2]}} repeat=${repeat:-${defaults[3]}}
if [ -z "$targets" ] && ! command -v tgtd >/dev/null; then
	echo "bench: tgtd not installed (package tgt): no iSCSI targets" >&2
	targets=${ALL_TARGETS%%,iscsi-raw*}
fi
targets=${targets:-$ALL_TARGETS} jobs=${jobs:-$ALL_JOBS}
read -ra META_COUNTS <<<"${defaults[4]}"
IFS=, read -ra TARGETS <<<"$targets"
IFS=, read -ra JOBS <<<"$jobs"

log() { printf '[bench %3ds] %s\n' "$SECONDS" "$*" >&2; }
die() {
	printf 'bench: %s\n' "$*" >&2
	exit 1
}
has() { # has WORD LIST...: WORD is one of LIST
	local w=$1 x
	shift
	for x in "$@"; do [ "$x" = "$w" ] && return 0; done
	return 1
}
# Seconds (may be fractional) as fio's milliseconds.
fio_ms() { awk -v s="$1" 'BEGIN { printf "%dms", s * 1000 }'; }

for t in "${TARGETS[@]}"; do
	has "$t" ${ALL_TARGETS//,/ } || die "unknown target '$t' (one of $ALL_TARGETS)"
done
for j in "${JOBS[@]}"; do
	has "$j" ${ALL_JOBS//,/ } || die "unknown job '$j' (one of $ALL_JOBS)"
done
[[ $repeat =~ ^[1-9][0-9]*$ ]] || die "--repeat $repeat: not a positive count"
SIZE=$(numfmt --from=iec "$size" 2>/dev/null) || die "--size $size: not a size"
[ $((SIZE % (4 << 20))) -eq 0 ] && [ "$SIZE" -ge $((64 << 20)) ] ||
	die "--size $size: must be a multiple of 4M, at least 64M"
# cannot MESSAGE: the machine cannot run the benchmark at all; the smoke
# test (CTest) skips, as the end-to-end tests do.
cannot() {
	[ "$mode" = smoke ] && printf 'bench: SKIP: %s\n' "$*" >&2 && exit 77
	die "$*"
}
[ "$(id -u)" -eq 0 ] || cannot "must run as root (FUSE mounts)"
[ -c /dev/fuse ] || cannot "/dev/fuse is missing: no FUSE on this machine"
[ -d "$dir" ] || die "--dir $dir: no such directory"
build=$(cd "$build" 2>/dev/null && pwd) || die "build tree $build not found"
VDPOOL=$build/tools/vdpool
VDPOOLFS=$build/fs/vdpoolfs
export VDPOOLFS
for b in "$VDPOOL" "$VDPOOLFS"; do
	[ -x "$b" ] || die "$b not built (cmake --build, or --build DIR)"
done
need=(fio python3 getfattr numfmt findmnt fusermount3)
has qemu-fuse "${TARGETS[@]}" && need+=(qemu-storage-daemon)
has nbdfuse "${TARGETS[@]}" && need+=(nbdkit nbdfuse)
ISCSI=0
if has iscsi-raw "${TARGETS[@]}" || has vdpool-iscsi "${TARGETS[@]}"; then
	ISCSI=1
	need+=(tgtd tgtadm ss qemu-storage-daemon)
fi
for c in "${need[@]}"; do
	command -v "$c" >/dev/null || die "$c not found: run scripts/install-deps.sh"
done

# The space this run may hold at once on DIR: the raw file, the allocated
# and the thin vdpool disk, and a margin.
avail=$(($(stat -f -c '%a * %S' "$dir")))
want=$((3 * SIZE + (1 << 30)))
[ $ISCSI = 0 ] || want=$((want + 2 * SIZE + (128 << 20))) # the two LUNs
[ "$avail" -ge "$want" ] ||
	die "--dir $dir: $((avail >> 20)) MiB free, this run needs $((want >> 20)) MiB"

W=$(mktemp -d "$dir/vdpool-bench.XXXXXX")
W=$(cd "$W" && pwd)
export VDPOOL_REGISTRY=$W/registry
mkdir -p "$W/registry" "$W/fio"
if [ -z "$out" ]; then
	if [ "$mode" = smoke ]; then
		out=$W/out
	else
		out=/var/tmp/vdpool-bench-results/$(date -u +%Y%m%dT%H%M%SZ)-$mode
	fi
fi
mkdir -p "$out/fio"
out=$(cd "$out" && pwd)
SAMPLES=$W/samples.tsv
: >"$SAMPLES"

# ---- cleanup: only what this run started ------------------------------

wait_gone() { # wait_gone PID SECONDS: true once PID has exited
	local _
	for _ in $(seq $(($2 * 10))); do
		kill -0 "$1" 2>/dev/null || return 0
		sleep 0.1
	done
	! kill -0 "$1" 2>/dev/null
}
stop_pidfile() { # stop_pidfile FILE NAME: TERM the pid in FILE, then KILL
	local pid
	[ -s "$1" ] || return 0
	pid=$(cat "$1")
	rm -f "$1"
	kill -0 "$pid" 2>/dev/null || return 0
	kill -TERM "$pid" 2>/dev/null || true
	wait_gone "$pid" 10 && return 0
	log "cleanup: $2 $pid ignored TERM; killing it"
	kill -KILL "$pid" 2>/dev/null || true
}
cleanup() {
	local rc=$? target fstype
	trap - EXIT
	trap '' INT TERM
	set +e
	# vdpool pools, then the FUSE exports, then their servers.
	findmnt -rn -o TARGET,FSTYPE | awk -v p="$W/" 'index($1, p) == 1' |
		sort -r | while read -r target fstype; do
		case $fstype in
		fuse.vdpoolfs) timeout 60 "$VDPOOL" umount "$target" >/dev/null 2>&1 ||
			umount -l "$target" ;;
		tmpfs) umount "$target" || umount -l "$target" ;;
		esac
	done
	stop_pidfile "$W/qsd.pid" qemu-storage-daemon
	stop_pidfile "$W/qsd-iscsi.pid" qemu-storage-daemon
	if declare -F tgt_stop >/dev/null; then
		tgt_stop
	fi
	if findmnt -M "$W/nbd" >/dev/null 2>&1; then
		fusermount3 -u "$W/nbd" || fusermount3 -u -z "$W/nbd"
	fi
	[ -s "$W/nbdfuse.pid" ] && { wait_gone "$(cat "$W/nbdfuse.pid")" 10 ||
		stop_pidfile "$W/nbdfuse.pid" nbdfuse; }
	stop_pidfile "$W/nbdkit.pid" nbdkit
	if findmnt -rn -o TARGET | grep -qF "$W/"; then
		log "cleanup: mounts remain under $W; not removing it"
	else
		rm -rf --one-file-system "$W"
	fi
	[ "$rc" -eq 0 ] || log "FAILED (status $rc)"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- the machine ---------------------------------------------------------

# key=value lines; report.py turns them into JSON.
first_line() { "$@" 2>&1 | head -n1 || true; }
commit=$(git -C "$SRC" rev-parse HEAD 2>/dev/null || echo unknown)
dirty=$(git -C "$SRC" status --porcelain --untracked-files=no 2>/dev/null |
	head -n1 || true)
{
	echo "cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
	echo "cores=$(nproc)"
	echo "memory_gib=$(awk '/^MemTotal/ { printf "%.1f", $2 / 1048576 }' /proc/meminfo)"
	echo "kernel=$(uname -sr)"
	echo "os=$(. /etc/os-release && echo "$PRETTY_NAME")"
	echo "dir=$dir"
	echo "dir_fs=$(findmnt -n -o FSTYPE -T "$dir") on $(findmnt -n -o SOURCE -T "$dir")"
	echo "fio=$(first_line fio --version)"
	echo "qemu=$(first_line qemu-storage-daemon --version)"
	echo "nbdkit=$(first_line nbdkit --version)"
	echo "nbdfuse=$(first_line nbdfuse --version)"
	[ $ISCSI = 0 ] || echo "tgt=$(first_line tgtd --version)"
	echo "vdpool=$(first_line "$VDPOOLFS" -V), build $build"
	echo "vdpool_commit=$commit${dirty:+ (uncommitted changes)}"
	echo "load_start=$(cut -d' ' -f1-3 /proc/loadavg)"
	echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
} >"$W/machine.txt"
{
	echo "mode=$mode"
	echo "command=tests/bench/bench.sh ${ARGS[*]}"
	echo "size=$SIZE"
	echo "runtime_s=$runtime"
	echo "ramp_s=$ramp"
	echo "repeat=$repeat"
	echo "targets=$targets"
	echo "jobs=$jobs"
} >"$W/config.txt"
load=$(cut -d' ' -f1 /proc/loadavg)
if [ "$mode" = full ] && awk -v l="$load" 'BEGIN { exit !(l > 0.5) }'; then
	log "warning: load average $load before the run: the numbers may be noise"
fi

# ---- targets ------------------------------------------------------------

declare -A FILE
EXTENT=$((1 << 20)) # vdpool's default extent size, used by the data pool

# fill FILE: write every byte once (1 MiB sequential), so that no target
# measures the first touch of its backing filesystem.
fill() {
	fio --name=fill --filename="$1" --rw=write --bs=1M --ioengine=libaio \
		--iodepth=8 --direct=1 --size="$SIZE" --output=/dev/null ||
		die "filling $1 failed"
}

# daemon_pid MNT: the vdpoolfs serving MNT.
daemon_pid() {
	getfattr --absolute-names --only-values -n trusted.vdpool.pid "$1" ||
		die "no vdpoolfs pid for $1"
}

# setup_iscsi: tgtd with LUN 1 (for iscsi-raw, filled) and LUN 2 (the
# member of the pool of vdpool-iscsi), then qemu-storage-daemon's NBD
# export of LUN 1 through its libiscsi driver.
setup_iscsi() {
	TGT_DIR=$W/tgt
	mkdir -p "$TGT_DIR"
	# shellcheck source=../e2e/iscsi/tgt.sh
	. "$SRC/tests/e2e/iscsi/tgt.sh"
	tgt_start || die "cannot start tgtd"
	tgt_target 1 bench || die "tgtadm: target"
	log "iscsi: tgtd on 127.0.0.1:$TGT_PORT"
	if has iscsi-raw "${TARGETS[@]}"; then
		truncate -s "$SIZE" "$W/lun1.img"
		fill "$W/lun1.img"
		tgt_lun 1 1 "$W/lun1.img" "$SIZE" || die "tgtadm: lun 1"
		qemu-storage-daemon --daemonize --pidfile "$W/qsd-iscsi.pid" \
			--blockdev "driver=iscsi,node-name=lun1,transport=tcp,portal=127.0.0.1:$TGT_PORT,target=$TGT_IQN_BASE:bench,lun=1,initiator-name=iqn.2026-01.org.vdpool:bench,cache.direct=on" \
			--nbd-server "addr.type=unix,addr.path=$W/iscsi-nbd.sock" \
			--export type=nbd,id=exp1,node-name=lun1,writable=on \
			>"$W/qsd-iscsi.log" 2>&1 ||
			die "qemu-storage-daemon (iscsi) failed: $(tail -n1 "$W/qsd-iscsi.log")"
		FILE[iscsi-raw]="nbd+unix:///lun1?socket=$W/iscsi-nbd.sock"
	fi
	if has vdpool-iscsi "${TARGETS[@]}"; then
		tgt_lun 1 2 "$W/lun2.img" $((SIZE + (128 << 20))) ||
			die "tgtadm: lun 2"
		"$VDPOOL" create --name bench-iscsi "$(tgt_url bench 2)" \
			>/dev/null || die "vdpool create on the LUN failed"
		mkdir -p "$W/pool-iscsi"
		"$VDPOOL" mount bench-iscsi "$W/pool-iscsi" ||
			die "vdpool mount bench-iscsi failed"
		FILE[vdpool-iscsi]=$W/pool-iscsi/alloc.img
		log "vdpool-iscsi: filling ${FILE[vdpool-iscsi]} ($size)"
		truncate -s "$SIZE" "${FILE[vdpool-iscsi]}"
		fill "${FILE[vdpool-iscsi]}"
		sync "${FILE[vdpool-iscsi]}"
	fi
}

setup_targets() {
	local need_raw=0 t
	for t in raw qemu-fuse nbdfuse; do
		if has $t "${TARGETS[@]}"; then
			need_raw=1
		fi
	done
	if [ $need_raw = 1 ]; then
		log "raw: filling $W/raw.img ($size)"
		truncate -s "$SIZE" "$W/raw.img"
		fill "$W/raw.img"
		FILE[raw]=$W/raw.img
	fi
	if has vdpool "${TARGETS[@]}" || has vdpool-thin "${TARGETS[@]}"; then
		# One pool for both disks: two members, each with room for one.
		truncate -s $((SIZE + (128 << 20))) "$W/m0.img" "$W/m1.img"
		"$VDPOOL" create --name bench "$W/m0.img" "$W/m1.img" >/dev/null ||
			die "vdpool create failed"
		mkdir -p "$W/pool"
		"$VDPOOL" mount bench "$W/pool" || die "vdpool mount failed"
		FILE[vdpool]=$W/pool/alloc.img
		FILE[vdpool-thin]=$W/pool/thin.img
		truncate -s "$SIZE" "${FILE[vdpool-thin]}"
	fi
	if has vdpool "${TARGETS[@]}"; then
		log "vdpool: filling ${FILE[vdpool]} ($size)"
		truncate -s "$SIZE" "${FILE[vdpool]}"
		fill "${FILE[vdpool]}"
		sync "${FILE[vdpool]}"
	fi
	if has qemu-fuse "${TARGETS[@]}"; then
		touch "$W/qsd.img"
		qemu-storage-daemon --daemonize --pidfile "$W/qsd.pid" \
			--blockdev "driver=file,node-name=file0,filename=$W/raw.img,cache.direct=on,aio=native" \
			--export "type=fuse,id=exp0,node-name=file0,mountpoint=$W/qsd.img,writable=on" \
			>"$W/qsd.log" 2>&1 ||
			die "qemu-storage-daemon failed: $(tail -n1 "$W/qsd.log")"
		findmnt -M "$W/qsd.img" >/dev/null ||
			die "qemu-storage-daemon started but $W/qsd.img is not mounted"
		FILE[qemu-fuse]=$W/qsd.img
	fi
	if has nbdfuse "${TARGETS[@]}"; then
		# nbdkit 1.32's file plugin cannot open O_DIRECT; cache=none
		# evicts what it read or wrote, the nearest it has.
		nbdkit -U "$W/nbd.sock" -P "$W/nbdkit.pid" file "$W/raw.img" \
			cache=none >"$W/nbdkit.log" 2>&1 ||
			die "nbdkit failed: $(tail -n1 "$W/nbdkit.log")"
		mkdir -p "$W/nbd"
		nbdfuse -P "$W/nbdfuse.pid" "$W/nbd" --unix "$W/nbd.sock" \
			</dev/null >"$W/nbdfuse.log" 2>&1 &
		for _ in $(seq 100); do
			[ -s "$W/nbdfuse.pid" ] && break
			sleep 0.1
		done
		[ -s "$W/nbdfuse.pid" ] && [ -e "$W/nbd/nbd" ] ||
			die "nbdfuse did not come up: $(tail -n1 "$W/nbdfuse.log")"
		FILE[nbdfuse]=$W/nbd/nbd
	fi
	if [ $ISCSI = 1 ]; then
		setup_iscsi
	fi
}

# thin_reset: make the thin disk a fresh, empty disk of SIZE and commit,
# then wait until the daemon has discarded its old extents on the members
# (it does that after the commit, in the background), so that the next run
# starts on an idle pool.  Prints how long that took: freeing a disk is a
# cost users meet too (rm of a VM image), so it is reported.
thin_reset() {
	local t0 mnt
	t0=$(date +%s%N)
	mnt=$(dirname "${FILE[vdpool-thin]}")
	truncate -s 0 "${FILE[vdpool-thin]}"
	truncate -s "$SIZE" "${FILE[vdpool-thin]}"
	sync "${FILE[vdpool-thin]}"
	until [ "$("$VDPOOL" status --json "$mnt" | python3 -c \
		'import json,sys; print(json.load(sys.stdin)["discarding"])')" = 0 ]; do
		sleep 0.05
	done
	echo $((($(date +%s%N) - t0) / 1000000))
}

# ---- fio jobs -------------------------------------------------------------

declare -A JOBARGS
JOBARGS[seq-write]="--rw=write --bs=1M --ioengine=libaio --iodepth=8"
JOBARGS[seq-read]="--rw=read --bs=1M --ioengine=libaio --iodepth=8"
JOBARGS[rand-write]="--rw=randwrite --bs=4k --ioengine=libaio --iodepth=32"
JOBARGS[rand-read]="--rw=randread --bs=4k --ioengine=libaio --iodepth=32"
JOBARGS[rand-rw]="--rw=randrw --rwmixread=70 --bs=4k --ioengine=libaio --iodepth=32"
JOBARGS[psync4-write]="--rw=randwrite --bs=4k --ioengine=psync --numjobs=4"
JOBARGS[fsync16-write]="--rw=randwrite --bs=4k --ioengine=psync --fdatasync=16"
# The commit-latency job: one 4 KiB write then fdatasync per extent, so on
# a thin disk every write allocates and every fdatasync commits.  One pass
# only: fio counts the bytes it writes, so --size alone would wrap around
# and measure overwrites after the first pass.
JOBARGS[commit]="--rw=write:$((EXTENT - 4096)) --bs=4k --ioengine=psync --fdatasync=1 --number_ios=$((SIZE / EXTENT))"

# thin_skips JOB: the thin disk does not run JOB.  Reads would only see
# holes on a fresh thin disk.  The quick mode also leaves out the jobs
# after which freeing the disk for the next run took minutes on a busy
# ext4 (docs/benchmarks.md), far longer than the run itself.
thin_skips() {
	case $1 in
	seq-read | rand-read | rand-rw) return 0 ;;
	psync4-write | fsync16-write) [ "$mode" = quick ] ;;
	*) return 1 ;;
	esac
}

# run_fio TARGET JOB REP: one fio run, its JSON kept, a line in SAMPLES.
run_fio() {
	local t=$1 j=$2 rep=$3 f=${FILE[$1]} res=$out/fio/$1.$2.$3.json extra=''
	local -a a
	read -ra a <<<"${JOBARGS[$j]}"
	if [ "$t" = iscsi-raw ]; then
		# fio's nbd engine on qemu-storage-daemon's export: same
		# pattern, depth and size; its psync jobs run at depth 1.
		a=("${a[@]/--ioengine=*/--ioengine=nbd}" --uri="$f")
	else
		a+=(--filename="$f" --direct=1)
	fi
	a+=(--name="$j" --group_reporting
		--lat_percentiles=1 --percentile_list=50:99:99.9
		--runtime="$(fio_ms "$runtime")" --output-format=json)
	if [ "$t" = vdpool-thin ]; then
		# A fresh disk per run, no warm-up (it would eat the first
		# writes), every block written at most once: the run ends
		# when the disk is full or the runtime is up.
		extra="free_prev_ms=$(thin_reset)"
		case $j in
		psync4-write) a+=(--size=$((SIZE / 4)) --offset_increment=$((SIZE / 4))) ;;
		*) a+=(--size="$SIZE") ;;
		esac
	elif [ "$j" = commit ]; then
		a+=(--size="$SIZE")
	else
		a+=(--size="$SIZE" --time_based --norandommap --randrepeat=0
			--ramp_time="$(fio_ms "$ramp")")
	fi
	# fio keeps verify and lock state in the current directory.
	(cd "$W/fio" && fio "${a[@]}") >"$res" 2>"$res.err" ||
		die "fio $j on $t failed: $(tail -n3 "$res.err" | tr '\n' ' ')"
	[ -s "$res.err" ] || rm -f "$res.err"
	if [ "$t" = vdpool-thin ]; then
		extra+=" allocated_mib=$(($(stat -c %b "$f") / 2048))"
	fi
	printf '%s\t%s\t%s\t%s\t%s\n' "$t" "$j" "$rep" "$res" "$extra" >>"$SAMPLES"
	log "$(printf '%-13s %-14s run %d: %s' "$t" "$j" "$rep" \
		"$(python3 "$HERE/report.py" brief "$res")")"
}

run_jobs() {
	local rep j t
	for rep in $(seq "$repeat"); do
		for j in "${JOBS[@]}"; do
			for t in "${TARGETS[@]}"; do
				if [ "$t" = iscsi-raw ] && [ "$j" = fsync16-write ]; then
					continue # fio's nbd engine has no fdatasync
				fi
				if [ "$t" != vdpool-thin ] || ! thin_skips "$j"; then
					run_fio "$t" "$j" "$rep"
				fi
			done
		done
	done
}

run_commit_latency() {
	local rep t
	for rep in $(seq "$repeat"); do
		for t in raw vdpool vdpool-thin; do
			if has $t "${TARGETS[@]}"; then
				run_fio "$t" commit "$rep"
			fi
		done
	done
}

# ---- metadata jobs -------------------------------------------------------

META=$W/meta.tsv
: >"$META"

# meta_pool N: a pool of 64 KiB extents with one disk of exactly N
# allocated extents, then its mount time and daemon memory, REPEAT times.
# The members are built on a tmpfs mounted over their directory, where the
# daemon's zeroing of each new extent is a cheap hole punch, so a million
# extents take seconds and hold no 61 GiB; then they are copied sparsely
# onto DIR under the same paths (the superblocks name them).  Mount reads
# only metadata, which is byte for byte what the daemon wrote.
meta_pool() {
	local n=$1 es=65536 d=$W/meta mnt=$W/meta-mnt t0 t1 pid rep used
	local -a ms=("$W/meta/m0.img" "$W/meta/m1.img")
	mkdir -p "$d" "$W/stage" "$mnt"
	mount -t tmpfs -o size=4G,mode=0700 vdpool-bench "$d" ||
		die "cannot mount a tmpfs on $d"
	truncate -s $((n / 2 * es / 20 * 21 + (128 << 20))) "${ms[@]}"
	"$VDPOOL" create --name meta$n --extent-size 64K "${ms[@]}" >/dev/null ||
		die "vdpool create meta$n failed"
	"$VDPOOL" mount meta$n "$mnt" || die "vdpool mount meta$n failed"
	t0=$(date +%s%N)
	fallocate -l $((n * es)) "$mnt/disk.img" ||
		die "fallocate of $n extents in meta$n failed"
	t1=$(date +%s%N)
	"$VDPOOL" umount "$mnt" || die "vdpool umount meta$n failed"
	cp --sparse=always "${ms[@]}" "$W/stage/"
	umount "$d" || die "cannot unmount the tmpfs on $d"
	mv "$W/stage/m0.img" "$W/stage/m1.img" "$d/"
	sync "${ms[@]}" # so the first mount does not wait for their writeback
	log "meta: $n extents allocated in $(((t1 - t0) / 1000000)) ms"
	for rep in $(seq "$repeat"); do
		t0=$(date +%s%N)
		"$VDPOOL" mount meta$n "$mnt" || die "vdpool mount meta$n failed"
		t1=$(date +%s%N)
		pid=$(daemon_pid "$mnt")
		used=$("$VDPOOL" status --json "$mnt" | python3 -c \
			'import json,sys; print(json.load(sys.stdin)["used"])')
		printf 'mount\t%s\t%s\tmount_us=%s %s extents_used=%s members_kib=%s\n' \
			"$n" "$rep" $(((t1 - t0) / 1000)) \
			"$(awk '/^Vm(RSS|HWM):/ { printf "%s=%s ", $1, $2 }' \
				"/proc/$pid/status" | tr -d :)" \
			$((used / es)) "$(du -kc "${ms[@]}" | tail -n1 | cut -f1)" \
			>>"$META"
		"$VDPOOL" umount "$mnt" || die "vdpool umount meta$n failed"
	done
	log "meta: $n extents: $(tail -n1 "$META" | cut -f4)"
	clone_sample "$n" "$mnt"
	rm -f "${ms[@]}" "$VDPOOL_REGISTRY/meta$n"
}

# cfr SRC DST: copy SRC to a new file DST with copy_file_range(2), then
# fsync DST; prints the microseconds of each.  Fails if the call does.
cfr() {
	python3 - "$1" "$2" <<'EOF'
import os, sys, time
src = os.open(sys.argv[1], os.O_RDONLY)
dst = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
size, off = os.fstat(src).st_size, 0
t0 = time.monotonic()
while off < size:
    n = os.copy_file_range(src, dst, size - off, off, off)
    if n <= 0:
        sys.exit("copy_file_range %s: stopped at %d of %d" % (sys.argv[1], off, size))
    off += n
t1 = time.monotonic()
os.fsync(dst)
t2 = time.monotonic()
print("%d %d" % ((t1 - t0) * 1e6, (t2 - t1) * 1e6))
EOF
}

# clone_sample N MNT: on the pool of N extents, the time to clone its disk
# (copy_file_range sharing every extent, issue 4) and to commit the clone.
# Once per run a 64 KiB probe decides whether this build shares extents at
# all: if the pool's free space drops, copy_file_range copied, and cloning
# a disk would only copy it, so no clone row is measured.
CLONES=unknown
clone_sample() {
	local n=$1 mnt=$2 f0 r
	"$VDPOOL" mount meta$n "$mnt" || die "vdpool mount meta$n failed"
	if [ $CLONES = unknown ]; then
		head -c 65536 /dev/urandom >"$mnt/probe.img"
		sync "$mnt/probe.img"
		f0=$(stat -f -c %f "$mnt")
		CLONES=no
		if cfr "$mnt/probe.img" "$mnt/probe-clone.img" >/dev/null 2>&1 &&
			[ "$(stat -f -c %f "$mnt")" = "$f0" ]; then
			CLONES=yes
		fi
		rm -f "$mnt/probe.img" "$mnt/probe-clone.img"
		log "clones: copy_file_range $([ $CLONES = yes ] && echo shares ||
			echo copies) extents"
	fi
	if [ $CLONES = yes ]; then
		r=$(cfr "$mnt/disk.img" "$mnt/clone.img") ||
			die "cloning the disk of meta$n failed"
		printf 'clone\t%s\t1\tclone_us=%s commit_us=%s\n' "$n" "${r% *}" \
			"${r#* }" >>"$META"
		log "meta: $n extents: clone $((${r% *} / 1000)) ms, commit $((${r#* } / 1000)) ms"
	fi
	"$VDPOOL" umount "$mnt" || die "vdpool umount meta$n failed"
}

# ---- the run ---------------------------------------------------------------

log "mode $mode: $size per target, ${runtime}s per job after ${ramp}s, $repeat run(s); work dir $W"
setup_targets
run_jobs
if [ $meta = 1 ]; then
	run_commit_latency
	for n in "${META_COUNTS[@]}"; do
		meta_pool "$n"
	done
fi
echo "load_end=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$W/machine.txt"

python3 "$HERE/report.py" report --machine "$W/machine.txt" \
	--config "$W/config.txt" --samples "$SAMPLES" --meta "$META" \
	--json "$out/results.json" --markdown "$out/results.md" ||
	die "report failed"
cat "$out/results.md"
log "results: $out/results.md and $out/results.json"
