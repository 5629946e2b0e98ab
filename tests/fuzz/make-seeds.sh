#!/bin/bash
# SPDX-License-Identifier: MIT
#
# make-seeds.sh - regenerate the seed corpus in tests/fuzz/corpus/ from a
# real pool: fuzz_pool builds its pool (two members, disks with data and
# holes, xattrs, nested and large directories, an orphan) and, with
# VDPOOL_FUZZ_SEEDS set, cuts from it the superblock slots, trees, blobs
# and patch lists the targets start from (tests/fuzz/seeds.c), then exits.
#
# Replaces the generated seeds of superblock/, block/, namespace/ and
# pool/; keeps the hand-written ones: spec/ and every regress-* input (a
# reproducer of a bug the fuzzers found, replayed on every run).
set -euo pipefail
cd "$(dirname "$0")/../.."

cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DVDPOOL_FUZZ=ON \
	-DVDPOOL_WERROR=ON >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target fuzz_pool >/dev/null

out=tests/fuzz/corpus
for t in superblock block namespace pool; do
	mkdir -p "$out/$t"
	find "$out/$t" -maxdepth 1 -type f ! -name 'regress-*' -delete
done
tmp=$(mktemp -d /dev/shm/vdpool-seeds.XXXXXX 2>/dev/null || mktemp -d)
trap 'rm -rf "$tmp"' EXIT
VDPOOL_FUZZ_TMP=$tmp VDPOOL_FUZZ_SEEDS=$PWD/$out \
	build-fuzz/tests/fuzz/fuzz_pool -runs=0 >/dev/null 2>&1
for t in superblock block namespace pool spec; do
	printf '%-11s %3d inputs\n' "$t" "$(find "$out/$t" -type f | wc -l)"
done
