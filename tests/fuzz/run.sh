#!/bin/bash
# SPDX-License-Identifier: MIT
#
# run.sh - build the libFuzzer targets (build-fuzz/, clang, ASan + UBSan)
# and run each one for a while on a copy of its seed corpus
# (tests/fuzz/corpus/TARGET/); the repository is never written.  Fails on
# any crash, leak, undefined behaviour, failed property, timeout or
# out-of-memory, and then keeps the temporary directory with the log and
# the input that did it (printed at the end).
#
# Environment:
#   FUZZ_SECONDS  seconds per target (default 20; the long mode is the same
#                 with a bigger number, see docs/testing/fuzzing.md)
#   FUZZ_TARGETS  the targets to run (default: all that were built)
#   JOBS          parallel build jobs (default nproc)
set -euo pipefail
cd "$(dirname "$0")/../.."

SECONDS_PER=${FUZZ_SECONDS:-20}
JOBS=${JOBS:-$(nproc)}
BUILD=build-fuzz

cmake -S . -B "$BUILD" -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	-DVDPOOL_FUZZ=ON -DVDPOOL_WERROR=ON >/dev/null
cmake --build "$BUILD" -j"$JOBS" >/dev/null

if [ -z "${FUZZ_TARGETS:-}" ]; then
	FUZZ_TARGETS=""
	for f in "$BUILD"/tests/fuzz/fuzz_*; do
		[ -x "$f" ] && FUZZ_TARGETS+=" ${f##*/fuzz_}"
	done
fi

tmp=$(mktemp -d /tmp/vdpool-fuzz.XXXXXX)
# The whole-pool target keeps its member files here (tmpfs when it can).
pooltmp=$(mktemp -d /dev/shm/vdpool-fuzz.XXXXXX 2>/dev/null || mktemp -d "$tmp/pool.XXXXXX")
keep=0
cleanup() {
	rm -rf "$pooltmp"
	[ "$keep" = 1 ] || rm -rf "$tmp"
}
trap cleanup EXIT

asan=detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export VDPOOL_FUZZ_TMP=$pooltmp
sym=/usr/lib/llvm-14/bin/llvm-symbolizer
[ -x "$sym" ] && export ASAN_SYMBOLIZER_PATH=$sym

# The longest input worth mutating, per target (see each target's comment).
max_len() {
	case $1 in
	superblock) echo 16385 ;;        # flag + one 16 KiB slot
	block) echo 49155 ;;             # 3 bytes + 12 blocks
	namespace) echo 24000 ;;         # both blobs; seeds reach 5 KiB
	pool) echo 1024 ;;               # a list of patches
	lvm) echo 16384 ;;               # mode byte + label, metadata area or text
	*) echo 4096 ;;
	esac
}

failed=()
printf '%-11s %9s %8s %6s  %s\n' target runs exec/s new result
for t in $FUZZ_TARGETS; do
	mkdir -p "$tmp/corpus/$t" "$tmp/artifacts/$t"
	if [ -d "tests/fuzz/corpus/$t" ]; then
		cp -r "tests/fuzz/corpus/$t/." "$tmp/corpus/$t/"
	fi
	log=$tmp/$t.log
	if ASAN_OPTIONS=$asan "$BUILD/tests/fuzz/fuzz_$t" \
		-max_total_time="$SECONDS_PER" -rss_limit_mb=2048 -timeout=30 \
		-max_len="$(max_len "$t")" \
		-print_final_stats=1 -artifact_prefix="$tmp/artifacts/$t/" \
		"$tmp/corpus/$t" >"$log" 2>&1; then
		result=ok
	else
		result=FAILED
		failed+=("$t")
	fi
	runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
	rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
	new=$(sed -n 's/^stat::new_units_added: *//p' "$log")
	printf '%-11s %9s %8s %6s  %s\n' "$t" "${runs:-?}" "${rate:-?}" \
		"${new:-?}" "$result"
done

if [ ${#failed[@]} -gt 0 ]; then
	keep=1
	for t in "${failed[@]}"; do
		echo
		echo "---- fuzz_$t: last lines of $tmp/$t.log"
		tail -n 40 "$tmp/$t.log"
		echo "---- inputs that fail: $(ls -d "$tmp/artifacts/$t"/* 2>/dev/null || echo none)"
		echo "---- replay: $BUILD/tests/fuzz/fuzz_$t INPUT"
	done
	echo
	echo "fuzz: FAILED: ${failed[*]} (kept $tmp)"
	exit 1
fi
echo "fuzz: all targets clean, ${SECONDS_PER} s each"
