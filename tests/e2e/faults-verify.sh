#!/bin/bash
# SPDX-License-Identifier: MIT
#
# faults-verify.sh - "a disk never shows bytes it was not given", while
# member writes, zeroings, discards and flushes fail at random (the fault
# layer, docs/testing/layers.md).  blockcheck.py writes self-describing
# 4 KiB blocks (the block's offset and the write's number, a body made from
# both) from many threads with O_DIRECT: 4 KiB, 64 KiB, whole extents, and
# pieces across an extent boundary, on a thin disk and on an allocated one,
# with punched holes, fsyncs, reads that check as they go, extents copied
# from the first disk to the second by reading and writing (write-side
# sharing), and a clone (copy_file_range) of the first disk onto the second
# between rounds, so copy-on-write runs.  Every block must hold the last write acknowledged
# for it, or (when a later write or punch failed) what it held before or
# that failed write's data: never another offset's data, a torn block, or
# stale bytes.  After a final fsync that succeeds, the pool is remounted
# without faults, checked, and every block must still be so; with faults,
# 100 fsyncs in a row must not all fail (a pool whose commits keep failing
# at a modest error rate has stopped committing).  A run without faults is
# the control.
#
# Environment (for longer hunts): FV_OPS (operations per thread per
# round), FV_ROUNDS, FV_THREADS, FV_SEED, FV_EXTENT (the pool's extent size
# in KiB), FV_SPECS (fault specs, ';;'-separated runs, "none" for the
# control).
# shellcheck source=tests/e2e/lib.sh
. "$(dirname "$0")/lib.sh"
need python3

CHECK=$(dirname "$0")/blockcheck.py
OPS=${FV_OPS:-300}
ROUNDS=${FV_ROUNDS:-3}
THREADS=${FV_THREADS:-12}
EXTENT=${FV_EXTENT:-1024}
SEED=${FV_SEED:-$RANDOM}
# Members of 192 MiB: metadata copies at 64 KiB..16 MiB+64 KiB, data
# from 17 MiB (1 MiB extents).  Run 2: writes, zeroings and discards of
# data fail, and flushes (so a commit now and then).  Run 3: metadata
# writes and flushes fail often enough that about a third of the commits
# fail, and many zeroings (hole fills, punches): the commits that follow a
# failed one must still get through (each used to carry every block of the
# failed ones too, until none could).  Reads do not fail (the check reads
# through the same mount).
S=$SEED
DEFAULT_SPECS="none"
DEFAULT_SPECS+=";;fault:op=write+zero+discard,p=0.02,range=17M-,seed=$S"
DEFAULT_SPECS+=";fault:op=flush,p=0.05,seed=$((S + 1))"
DEFAULT_SPECS+=";;fault:op=write,p=0.03,range=64K-17M,seed=$S"
DEFAULT_SPECS+=";fault:op=flush,p=0.03,seed=$((S + 1))"
DEFAULT_SPECS+=";fault:op=zero,p=0.2,seed=$((S + 2))"
SPECS=${FV_SPECS:-$DEFAULT_SPECS}
MNT=$VDP_TMP/mnt
ERR=$VDP_TMP/err
log "seed $SEED, $THREADS threads, $ROUNDS rounds of $OPS operations each"

vdp_create fv 2 192M --extent-size "${EXTENT}K"
n=0
while [ -n "$SPECS" ]; do
	spec=${SPECS%%;;*}
	[ "$spec" = "$SPECS" ] && SPECS='' || SPECS=${SPECS#*;;}
	n=$((n + 1))
	step "run $n: ${spec}"
	[ "$spec" = none ] && spec=''
	# thin.img: holes filled as it goes; alloc.img: allocated first;
	# copy.img: the clone's destination.  Made without faults.
	vdp_mount fv "$MNT"
	rm -f "$MNT"/*.img
	truncate -s 24M "$MNT/thin.img" "$MNT/copy.img"
	fallocate -l 24M "$MNT/alloc.img"
	vdp_umount "$MNT"
	VDPOOL_TEST_LAYERS=$spec vdp_mount fv "$MNT" commit_interval=200
	rc=0
	python3 "$CHECK" run "$VDP_TMP/state" "$MNT/thin.img" "$MNT/copy.img" \
		"$MNT/alloc.img" --threads "$THREADS" --ops "$OPS" \
		--rounds "$ROUNDS" --seed "$SEED" --extent $((EXTENT << 10)) \
		--must-sync 2>"$ERR" || rc=$?
	cat "$ERR" >&2
	[ "$rc" -eq 0 ] ||
		die "run $n (${spec:-no faults}, seed $SEED): $(tail -n1 "$ERR")"
	# The unmount's commit may meet a fault too: everything the final
	# fsync covered is durable whatever it says.
	"$VDPOOL" umount "$MNT" >&2 || log "umount reported an error"
	is_mounted "$MNT" && die "$MNT still mounted"
	vdp_check fv
	vdp_mount fv "$MNT"
	python3 "$CHECK" verify "$VDP_TMP/state" "$MNT/thin.img" \
		"$MNT/copy.img" "$MNT/alloc.img" ||
		die "run $n (${spec:-no faults}, seed $SEED): wrong blocks after the remount"
	vdp_umount "$MNT"
done
log "ok: no block showed bytes it was not given"
