#!/bin/bash
# SPDX-License-Identifier: MIT
# remove.sh - shrinking a pool: `vdpool remove` of a member that holds a
# metadata copy and extents of cloned and plain disks while fio writes and
# verifies those disks (no write to an extent being moved may be lost); a
# daemon killed with -9 half way (the removal resumes at mount and
# finishes, check is clean); a cancelled removal; a member that fails
# during the removal (it stops, nothing is lost).
# shellcheck source=tests/e2e/lib.sh
. "$(dirname "$0")/lib.sh"
need fio python3

E=$((1024 * 1024))
MNT=$VDP_TMP/mnt

# clone SRC DST: copy_file_range, which shares whole extents.
clone() {
	python3 - "$1" "$2" <<'EOF'
import os, sys
i = os.open(sys.argv[1], os.O_RDONLY)
o = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT, 0o644)
n, left = 0, os.fstat(i).st_size
while left:
    k = os.copy_file_range(i, o, left)
    if k <= 0:
        sys.exit("copy_file_range stopped")
    left -= k
EOF
}

# wait_progress MNT PCT: until the running task has moved PCT percent.
wait_progress() {
	local i p
	for i in $(seq 600); do
		p=$(json_get "$1" "j.get('task', {}).get('percent', -1) if j.get('task', {}).get('state') == 'running' else -1")
		[ "$p" -ge "$2" ] && return 0
		sleep 0.1
	done
	die "the removal did not reach $2%"
}

vdp_create rp 3 96M
M1=$(member rp 1) # holds one metadata copy (create puts them on 0 and 1)

step "disks with extents on every member, a clone sharing them"
vdp_mount rp "$MNT"
run dd if=/dev/urandom of="$VDP_TMP/base" bs=1M count=40 status=none
run cp "$VDP_TMP/base" "$MNT/base.img"
run clone "$MNT/base.img" "$MNT/clone.img"
run sync "$MNT/clone.img"
assert_eq "$(json_get "$MNT" "j['members'][1]['metadata']")" True \
	"member 1 holds metadata"
[ "$(json_get "$MNT" "j['members'][1]['used']")" -gt 0 ] ||
	die "member 1 holds no extents"

step "remove member 1 while fio writes and verifies two disks"
# fio lays its files out first (extents on every member), then rewrites
# them at random, verifying every block as it goes and at the end.
fio --name=a --filename="$MNT/fio-a.img" --size=24M --bs=4k \
	--rw=randwrite --rate=2m --direct=1 --verify=crc32c \
	--verify_backlog=256 --do_verify=1 --output="$VDP_TMP/fio-a.out" &
fa=$!
fio --name=b --filename="$MNT/fio-b.img" --size=16M --bs=64k \
	--rw=randwrite --rate=2m --direct=1 --verify=md5 --do_verify=1 \
	--output="$VDP_TMP/fio-b.out" &
fb=$!
sleep 3 # laid out, random writes running
run "$VDPOOL" remove --rate 8M "$MNT" "$M1"
alive "$fa" && log "fio a was still writing when the removal ended"
wait "$fa" || { cat "$VDP_TMP/fio-a.out" >&2; die "fio a failed"; }
wait "$fb" || { cat "$VDP_TMP/fio-b.out" >&2; die "fio b failed"; }
grep -q 'err= 0' "$VDP_TMP/fio-a.out" || die "fio a reported errors"
grep -q 'err= 0' "$VDP_TMP/fio-b.out" || die "fio b reported errors"
log "ok: fio verified every block written during the removal"
assert_eq "$(json_get "$MNT" "len(j['members'])")" 2 "members after remove"
assert_eq "$(json_get "$MNT" "sum(m['metadata'] for m in j['members'])")" 2 \
	"members holding metadata"
assert_cmp "$VDP_TMP/base" "$MNT/base.img" "base.img after remove"
assert_cmp "$VDP_TMP/base" "$MNT/clone.img" "clone.img after remove"
# The clone still shares its extents: they moved once, not twice.
[ "$(json_get "$MNT" "[d['shared'] for d in j['disks'] if d['path'] == '/clone.img'][0]")" -eq $((40 * E)) ] ||
	die "the clone's extents are no longer shared"
[ "$(json_get "$MNT" "j['saved_by_sharing']")" -eq $((40 * E)) ] ||
	die "status counts the wrong space saved by sharing"
vdp_umount "$MNT"
vdp_check rp
grep -qF "$M1" "$VDPOOL_REGISTRY/rp" && die "the registry still lists $M1"
python3 - "$M1" <<'EOF' || die "$M1 still has a superblock"
import sys
d = open(sys.argv[1], "rb").read(32768)
sys.exit(1 if any(d) else 0)
EOF
log "ok: the removed member's superblocks are wiped"

step "add it back; kill -9 the daemon half way through removing it again"
vdp_mount rp "$MNT"
run "$VDPOOL" add "$MNT" "$M1"
run cp "$VDP_TMP/base" "$MNT/more.img" # most of it lands on the new member
run sync "$MNT/more.img"
"$VDPOOL" remove --rate 4M "$MNT" "$M1" >/dev/null 2>"$VDP_TMP/rm.err" &
rm_pid=$!
wait_progress "$MNT" 20
json_get "$MNT" "j['task']" >&2
vdp_kill "$MNT"
wait "$rm_pid" || true
log "remove said: $(cat "$VDP_TMP/rm.err")"
assert_eq "$("$VDPOOL" status --json rp | python3 -c "import json,sys; print([m['state'] for m in json.load(sys.stdin)['members']])")" \
	"['active', 'leaving', 'active']" "states after the kill"
vdp_check rp

step "mount resumes the removal; it finishes"
vdp_mount rp "$MNT"
for _ in $(seq 300); do
	[ "$(json_get "$MNT" "len(j['members'])")" -eq 2 ] && break
	sleep 0.1
done
assert_eq "$(json_get "$MNT" "len(j['members'])")" 2 "members after the resumed removal"
assert_cmp "$VDP_TMP/base" "$MNT/more.img" "more.img after the resumed removal"
assert_cmp "$VDP_TMP/base" "$MNT/clone.img" "clone.img after the resumed removal"
vdp_umount "$MNT"
vdp_check rp

step "cancel a removal"
vdp_mount rp "$MNT"
run rm "$MNT/fio-a.img" "$MNT/fio-b.img" "$MNT/more.img"
run "$VDPOOL" add "$MNT" "$M1"
run cp "$VDP_TMP/base" "$MNT/third.img"
run sync "$MNT/third.img"
expect_fail "$VDP_TMP/rm.err" "$VDPOOL" remove --rate 2M "$MNT" "$M1" &
rm_pid=$!
wait_progress "$MNT" 10
run "$VDPOOL" remove --cancel "$MNT"
wait "$rm_pid" || die "the cancelled remove did not fail"
grep -q cancelled "$VDP_TMP/rm.err" || die "remove did not say it was cancelled"
assert_eq "$(json_get "$MNT" "[m['state'] for m in j['members']]")" \
	"['active', 'active', 'active']" "states after cancel"
assert_cmp "$VDP_TMP/base" "$MNT/third.img" "third.img after cancel"
vdp_umount "$MNT"
vdp_check rp

step "a member whose reads fail during the removal: it stops, nothing lost"
VDPOOL_TEST_LAYERS="fault:op=read,nth=3,persist,only=$(basename "$M1")" \
	vdp_mount rp "$MNT"
expect_fail "$VDP_TMP/rm.err" "$VDPOOL" remove "$MNT" "$M1"
grep -q "$(basename "$M1").*read failed" "$VDP_TMP/rm.err" ||
	die "the error does not name the member and the failed read"
assert_eq "$(json_get "$MNT" "[m['state'] for m in j['members']]")" \
	"['active', 'leaving', 'active']" "states after the failed removal"
run "$VDPOOL" remove --cancel "$MNT"
vdp_umount "$MNT"
vdp_check rp
vdp_mount rp "$MNT"
assert_cmp "$VDP_TMP/base" "$MNT/third.img" "third.img after the failure"
vdp_umount "$MNT"
vdp_check rp
