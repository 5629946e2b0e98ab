#!/bin/bash
# SPDX-License-Identifier: MIT
#
# iscsi-faults.sh - an iSCSI target that goes away under a mounted pool
# (issue 8).  The pool's members are two LUNs of a tgtd of the test's own,
# so both metadata copies are on iSCSI.
#   1. tgtd is killed and restarted while fio (queue depth 32, fdatasync)
#      and a writer that logs every acknowledged fdatasync'ed block are
#      running: the writes complete after the reconnect, fio's verify
#      passes, every acknowledged block reads back after a remount, and
#      `vdpool check` finds the pool consistent.
#   2. tgtd stays away longer than VDPOOL_ISCSI_TIMEOUT: a write fails with
#      EIO instead of hanging; once the target is back the pool unmounts,
#      checks clean and still holds everything acknowledged before.
#   3. tgtd comes back with a larger LUN: `vdpool resize-member` grows the
#      mounted pool by it.
. "$(dirname "$0")/lib.sh"
need tgtd tgtadm fio ss

TGT_DIR=$VDP_TMP/tgt
# shellcheck source=iscsi/tgt.sh
. "$(dirname "$0")/iscsi/tgt.sh"
tgt_test_start
tgt_lun 1 1 "$VDP_TMP/lun1.img" 384M || die "tgtadm: lun 1"
tgt_lun 1 2 "$VDP_TMP/lun2.img" 384M 4096 || die "tgtadm: lun 2"
MNT=$VDP_TMP/mnt

# writer FILE BLOCKS LOG: writes 64 KiB block i (a pattern of i) then
# fdatasyncs, for i = 0.. BLOCKS-1, appending i to LOG once acknowledged;
# stops at the first error, which it prints.
writer() {
	python3 - "$@" <<'EOF'
import os, sys
path, n, log = sys.argv[1], int(sys.argv[2]), sys.argv[3]
fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
with open(log, "a", buffering=1) as lg:
    for i in range(n):
        blk = (b"%08d" % i) * 8192
        try:
            os.pwrite(fd, blk, i * 65536)
            os.fdatasync(fd)
        except OSError as e:
            print("writer: block %d: %s" % (i, e.strerror), file=sys.stderr)
            sys.exit(2)
        lg.write("%d\n" % i)
EOF
}

# check_acked FILE LOG: every block LOG names holds its pattern.
check_acked() {
	python3 - "$@" <<'EOF'
import sys
path, log = sys.argv[1], sys.argv[2]
acked = [int(x) for x in open(log).read().split()]
with open(path, "rb") as f:
    for i in acked:
        f.seek(i * 65536)
        if f.read(65536) != (b"%08d" % i) * 8192:
            sys.exit("block %d was acknowledged but reads back wrong" % i)
print(len(acked))
EOF
}

# wait_acks LOG N: until LOG names N blocks.
wait_acks() {
	local i
	for i in $(seq 600); do
		[ "$(wc -l <"$2" 2>/dev/null || echo 0)" -ge "$3" ] && return 0
		kill -0 "$1" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}

step "create a pool on two LUNs and mount it"
run "$VDPOOL" create --name flaky "$(tgt_url store 1)" "$(tgt_url store 2)" >&2 ||
	die "create failed"
vdp_mount flaky "$MNT"

step "tgtd killed and restarted under fio and an fdatasync writer"
: >"$VDP_TMP/acks1"
writer "$MNT/w.img" 2000 "$VDP_TMP/acks1" 2>"$VDP_TMP/writer1.err" &
wpid=$!
truncate -s 128M "$MNT/fio.img"
fio --name=restart --filename="$MNT/fio.img" --rw=randwrite --bs=16k \
	--iodepth=32 --ioengine=libaio --direct=1 --size=96M --fdatasync=8 \
	--rate=12m --verify=crc32c --verify_fatal=1 \
	--output="$VDP_TMP/fio.out" &
fpid=$!
wait_acks "$wpid" "$VDP_TMP/acks1" 100 ||
	die "the writer did not get going: $(cat "$VDP_TMP/writer1.err")"
log "killing tgtd $TGT_PID with I/O in flight"
tgt_kill
sleep 3
run tgt_restart || die "cannot restart tgtd"
log "tgtd back as $TGT_PID"
n=$(wc -l <"$VDP_TMP/acks1")
wait_acks "$wpid" "$VDP_TMP/acks1" $((n + 50)) ||
	die "writes did not resume after the restart: $(cat "$VDP_TMP/writer1.err")"
wait "$fpid" || die "fio failed across the restart: $(tail -n8 "$VDP_TMP/fio.out")"
log "fio's writes and verify passed across the restart"
wait "$wpid" || die "the writer failed: $(cat "$VDP_TMP/writer1.err")"
vdp_umount "$MNT"
vdp_check flaky
vdp_mount flaky "$MNT"
n=$(check_acked "$MNT/w.img" "$VDP_TMP/acks1") || die "acknowledged data lost"
log "ok: all $n acknowledged blocks read back after the remount"

step "tgtd away longer than VDPOOL_ISCSI_TIMEOUT: EIO, not a hang"
vdp_umount "$MNT"
VDPOOL_ISCSI_TIMEOUT=4 vdp_mount flaky "$MNT"
: >"$VDP_TMP/acks2"
writer "$MNT/w2.img" 1000000 "$VDP_TMP/acks2" 2>"$VDP_TMP/writer2.err" &
wpid=$!
wait_acks "$wpid" "$VDP_TMP/acks2" 50 || die "the second writer did not start"
tgt_kill
rc=0
t0=$SECONDS
timeout 120 tail --pid="$wpid" -f /dev/null || die "the writer hangs"
wait "$wpid" || rc=$?
log "writer ended with status $rc after $((SECONDS - t0)) s: $(cat "$VDP_TMP/writer2.err")"
[ "$rc" -eq 2 ] || die "the writer should have failed (status 2), got $rc"
grep -q "Input/output error" "$VDP_TMP/writer2.err" ||
	die "the write did not fail with EIO"
run tgt_restart || die "cannot restart tgtd"
"$VDPOOL" umount "$MNT" >&2 || log "umount reported an error (the pool saw failed I/O)"
is_mounted "$MNT" && die "$MNT still mounted"
vdp_check flaky
vdp_mount flaky "$MNT"
n=$(check_acked "$MNT/w.img" "$VDP_TMP/acks1") || die "older data lost"
n2=$(check_acked "$MNT/w2.img" "$VDP_TMP/acks2") ||
	die "data acknowledged before the outage lost"
log "ok: $n and $n2 acknowledged blocks read back"

step "a LUN that grew (target back with a larger file) grows the pool online"
cap0=$(df_total "$MNT")
tgt_kill
truncate -s 448M "$VDP_TMP/lun1.img"
run tgt_restart || die "cannot restart tgtd"
run "$VDPOOL" resize-member "$MNT" "$(tgt_url store 1)" | tee "$VDP_TMP/out" >&2
grep -q 'grown from' "$VDP_TMP/out" || die "resize-member did not grow the LUN"
assert_eq "$(($(df_total "$MNT") - cap0))" $((64 << 20)) "capacity gained"
n=$(check_acked "$MNT/w.img" "$VDP_TMP/acks1") || die "data lost after growth"
vdp_umount "$MNT"
vdp_check flaky
