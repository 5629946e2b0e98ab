#!/bin/bash
# SPDX-License-Identifier: MIT
#
# test.sh - the whole test suite, as CI runs it: install the dependencies,
# build with warnings as errors, check the formatting, run every test
# (unit and end-to-end), then build with ASan+UBSan and run every test
# again against those binaries, then run each fuzz target for a short
# while (tests/fuzz/run.sh).  Exits non-zero on any failure.
#
# Needs root (FUSE mounts with allow_other, loop devices) on Debian 12.
# Environment: JOBS (parallel build and test jobs, default nproc),
# FUZZ_SECONDS (per fuzz target, default 20).
set -euo pipefail
cd "$(dirname "$0")/.."

JOBS=${JOBS:-$(nproc)}
failed=()

section() { printf '\n==== %s\n' "$*"; }

section "dependencies"
./scripts/install-deps.sh

section "build (build/, -Werror)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DVDPOOL_WERROR=ON
cmake --build build -j"$JOBS"

section "clang-format"
if git rev-parse --git-dir >/dev/null 2>&1; then
	mapfile -t sources < <(git ls-files --cached --others --exclude-standard \
		-- '*.c' '*.h' ':!:build*/**')
else
	mapfile -t sources < <(find store fs tools tests -name '*.[ch]')
fi
if [ ${#sources[@]} -gt 0 ]; then
	if clang-format --dry-run -Werror "${sources[@]}"; then
		echo "clang-format: ${#sources[@]} files clean"
	else
		echo "clang-format: run clang-format -i on the files above"
		failed+=(clang-format)
	fi
fi

section "tests (build/)"
ctest --test-dir build --output-on-failure -j"$JOBS" || failed+=(build)

section "build (build-asan/, ASan+UBSan, -Werror)"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	-DVDPOOL_SANITIZE=ON -DVDPOOL_WERROR=ON
cmake --build build-asan -j"$JOBS"

section "tests (build-asan/)"
ctest --test-dir build-asan --output-on-failure -j"$JOBS" ||
	failed+=(build-asan)

section "fuzz (build-fuzz/, libFuzzer, ${FUZZ_SECONDS:-20} s per target)"
./tests/fuzz/run.sh || failed+=(fuzz)

if [ ${#failed[@]} -gt 0 ]; then
	section "FAILED: ${failed[*]}"
	exit 1
fi
section "all tests passed"
