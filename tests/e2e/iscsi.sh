#!/bin/bash
# SPDX-License-Identifier: MIT
#
# iscsi.sh - iSCSI LUNs as pool members (issue 8), against a real tgtd of
# the test's own on 127.0.0.1: a pool on two LUNs (512- and 4096-byte
# blocks, one thin) plus a file and a loop device, both metadata copies on
# the LUNs; data and fio verify (queue depth 32) through the mount; UNMAP
# reaching a thin LUN; CHAP right, wrong, mutual and in the URL (warned,
# never stored); the one-line errors of create (unknown IQN, absent LUN,
# unreachable portal, data on the LUN, too small, URL too long).
# Faults (the target restarting mid-write) are in iscsi-faults.sh.
. "$(dirname "$0")/lib.sh"
need tgtd tgtadm fio ss jq mkfs.ext4

TGT_DIR=$VDP_TMP/tgt
# shellcheck source=iscsi/tgt.sh
. "$(dirname "$0")/iscsi/tgt.sh"
tgt_test_start
tgt_lun 1 1 "$VDP_TMP/lun1.img" 512M || die "tgtadm: lun 1"
tgt_lun 1 2 "$VDP_TMP/lun2.img" 512M 4096 thin || die "tgtadm: lun 2"
U1=$(tgt_url store 1)
U2=$(tgt_url store 2)
MNT=$VDP_TMP/mnt

status_field() { "$VDPOOL" status --json "$1" | jq -r "$2"; }

step "create: two LUNs (512 and 4096-byte blocks), a file, a loop device"
truncate -s 256M "$VDP_TMP/file.img" "$VDP_TMP/loop.img"
LOOP=$(vdp_losetup "$VDP_TMP/loop.img")
run "$VDPOOL" create --name san "$U1" "$U2" "$VDP_TMP/file.img" "$LOOP" >&2 ||
	die "vdpool create on LUNs failed"
assert_eq "$(status_field san '[.members[].kind] | join(",")')" \
	"iscsi,iscsi,file,block" "member kinds"
assert_eq "$(status_field san '[.members[].path] | join(" ")')" \
	"$U1 $U2 $VDP_TMP/file.img $LOOP" "member paths"
# The two largest members (the LUNs) hold the two metadata copies.
assert_eq "$(status_field san '[.members[] | select(.metadata) | .kind] | join(",")')" \
	"iscsi,iscsi" "members with a metadata copy"
grep -qxF "$U1" "$VDPOOL_REGISTRY/san" || die "registry does not name $U1"

step "data through the mount, unaligned writes on both block sizes"
vdp_mount san "$MNT"
# The LUNs cannot be flocked: their lock files keep a second instance off.
mkdir -p "$VDP_TMP/mnt2"
expect_fail "$VDP_TMP/busy" "$VDPOOL" mount san "$VDP_TMP/mnt2"
grep -q "in use: member $U1 is locked" "$VDP_TMP/busy" ||
	die "a second mount of the pool: wrong message"
randfile "$VDP_TMP/a.img" $((48 << 20))
cp "$VDP_TMP/a.img" "$MNT/a.img"
sync "$MNT/a.img"
assert_cmp "$MNT/a.img" "$VDP_TMP/a.img" "copy through the pool"
# Small writes at odd offsets: read-modify-write of 512 and 4096-byte
# blocks on the LUNs.
randfile "$VDP_TMP/p.bin" 70000
for off in 1 4095 511 1048577 33554431; do
	patch_bytes "$VDP_TMP/p.bin" 0 "$MNT/a.img" "$off" 70000
	patch_bytes "$VDP_TMP/p.bin" 0 "$VDP_TMP/a.img" "$off" 70000
done
assert_cmp "$MNT/a.img" "$VDP_TMP/a.img" "after unaligned writes"

step "fio verify, queue depth 32, through the mount"
truncate -s 256M "$MNT/fio.img"
run fio --name=verify --filename="$MNT/fio.img" --rw=randwrite --bs=4k \
	--iodepth=32 --ioengine=libaio --direct=1 --size=128M \
	--verify=crc32c --verify_fatal=1 --randrepeat=0 \
	--output="$VDP_TMP/fio.out" ||
	die "fio verify failed: $(tail -n5 "$VDP_TMP/fio.out")"
run fio --name=seq --filename="$MNT/fio.img" --rw=write --bs=1M \
	--iodepth=32 --ioengine=libaio --direct=1 --size=256M \
	--verify=md5 --verify_fatal=1 --output="$VDP_TMP/fio2.out" ||
	die "fio sequential verify failed: $(tail -n5 "$VDP_TMP/fio2.out")"
vdp_umount "$MNT"
vdp_check san
if ls /run/vdpool/iscsi-127.0.0.1_"${TGT_PORT}"_* 2>/dev/null; then
	die "lock files left behind once nothing holds them"
fi
vdp_mount san "$MNT"
assert_cmp "$MNT/a.img" "$VDP_TMP/a.img" "after remount"

step "freed extents are unmapped on the thin LUN (UNMAP)"
before=$(($(fblocks "$VDP_TMP/lun2.img") * 512))
rm "$MNT/fio.img"
sync -f "$MNT"
for _ in $(seq 100); do
	after=$(($(fblocks "$VDP_TMP/lun2.img") * 512))
	[ "$after" -lt $((before - (32 << 20))) ] && break
	sleep 0.1
done
log "thin LUN backing file: $((before >> 20)) MiB allocated before, $((after >> 20)) MiB after"
[ "$after" -lt $((before - (32 << 20))) ] ||
	die "the thin LUN's backing file did not shrink: UNMAP never reached it"
vdp_umount "$MNT"
vdp_check san

step "errors at create are one line naming the LUN and the reason"
truncate -s 256M "$VDP_TMP/f2.img"
expect_fail "$VDP_TMP/e1" "$VDPOOL" create --name e1 \
	"$(tgt_url nosuch 1)" "$VDP_TMP/f2.img"
grep -q "target $TGT_IQN_BASE:nosuch is unknown on portal" "$VDP_TMP/e1" ||
	die "unknown IQN: wrong message"
expect_fail "$VDP_TMP/e2" "$VDPOOL" create --name e2 "$(tgt_url store 9)"
grep -q "LUN 9 does not exist on target" "$VDP_TMP/e2" ||
	die "absent LUN: wrong message"
port=$(tgt_free_port)
expect_fail "$VDP_TMP/e3" "$VDPOOL" create --name e3 \
	"iscsi://127.0.0.1:$port/$TGT_IQN_BASE:store/1"
grep -q "portal 127.0.0.1:$port is unreachable: Connection refused" \
	"$VDP_TMP/e3" || die "unreachable portal: wrong message"
expect_fail "$VDP_TMP/e4" "$VDPOOL" create --name e4 "$U1"
grep -q "member $U1 already belongs to vdpool pool san" "$VDP_TMP/e4" ||
	die "LUN of another pool: wrong message"
expect_fail "$VDP_TMP/e5" "$VDPOOL" create --name e5 \
	"iscsi://127.0.0.1:$TGT_PORT/$TGT_IQN_BASE:store"
grep -q "not an iSCSI URL" "$VDP_TMP/e5" || die "bad URL: wrong message"
long=$(printf 'x%.0s' $(seq 120))
expect_fail "$VDP_TMP/e6" "$VDPOOL" create --name e6 \
	"iscsi://127.0.0.1:$TGT_PORT/$TGT_IQN_BASE:$long/1"
grep -q "URL longer than 127 bytes" "$VDP_TMP/e6" || die "long URL: wrong message"
tgt_target 2 small || die "tgtadm: target 2"
tgt_lun 2 1 "$VDP_TMP/small.img" 8M || die "tgtadm: small lun"
tgt_lun 2 2 "$VDP_TMP/ext4.img" 128M || die "tgtadm: ext4 lun"
expect_fail "$VDP_TMP/e7" "$VDPOOL" create --name e7 "$(tgt_url small 1)"
grep -q "is too small" "$VDP_TMP/e7" || die "small LUN: wrong message"
# A filesystem on the LUN, found by probing a copy of its first blocks.
mkfs.ext4 -q -F "$VDP_TMP/ext4.img" >/dev/null
expect_fail "$VDP_TMP/e8" "$VDPOOL" create --name e8 "$(tgt_url small 2)"
grep -q "holds an existing ext4 filesystem; use --force" "$VDP_TMP/e8" ||
	die "ext4 on the LUN: wrong message"
# One LUN named two ways (the portal by name and by address).
expect_fail "$VDP_TMP/e9" "$VDPOOL" create --force --name e9 \
	"$(tgt_url small 2)" "iscsi://localhost:$TGT_PORT/$TGT_IQN_BASE:small/2"
grep -q "both are iSCSI LUN $TGT_IQN_BASE:small/2" "$VDP_TMP/e9" ||
	die "one LUN twice: wrong message"
run "$VDPOOL" create --force --name e8 "$(tgt_url small 2)" >&2 ||
	die "create --force over ext4 failed"
for f in e1 e2 e3 e4 e5 e6 e7 e8 e9; do
	[ "$(wc -l <"$VDP_TMP/$f")" -le 1 ] || die "$f: more than one line"
done

step "CHAP: refused with a wrong secret, accepted from a file or the URL"
tgt_target 3 chap || die "tgtadm: target 3"
tgt_lun 3 1 "$VDP_TMP/lun3.img" 256M || die "tgtadm: lun 3"
tgt_chap 3 alice 'Secret-Pass-1234' || die "tgtadm: chap"
UC=$(tgt_url chap 1)
expect_fail "$VDP_TMP/c1" "$VDPOOL" create --name chap "$UC"
grep -q "CHAP authentication refused by target $TGT_IQN_BASE:chap" \
	"$VDP_TMP/c1" || die "no secret: wrong message"
echo 'alice:Wrong-Pass-99999' >"$VDP_TMP/bad.secret"
VDPOOL_ISCSI_SECRET_FILE=$VDP_TMP/bad.secret expect_fail "$VDP_TMP/c2" \
	"$VDPOOL" create --name chap "$UC"
grep -q "CHAP authentication refused" "$VDP_TMP/c2" ||
	die "wrong secret: wrong message"
if grep -q "Wrong-Pass" "$VDP_TMP/c2"; then
	die "the error message shows the secret"
fi
echo 'alice:Secret-Pass-1234' >"$VDP_TMP/chap.secret"
chmod 600 "$VDP_TMP/chap.secret"
export VDPOOL_ISCSI_SECRET_FILE=$VDP_TMP/chap.secret
run "$VDPOOL" create --name chap "$UC" >&2 || die "create with CHAP failed"
vdp_mount chap "$MNT"
cp "$VDP_TMP/a.img" "$MNT/a.img"
vdp_umount "$MNT"
vdp_check chap
unset VDPOOL_ISCSI_SECRET_FILE
expect_fail "$VDP_TMP/c3" "$VDPOOL" status chap
grep -q "CHAP authentication refused" "$VDP_TMP/c3" ||
	die "mount-time open without the secret: wrong message"
# The user in the URL, the password from the environment.
VDPOOL_ISCSI_PASSWORD='Secret-Pass-1234' run "$VDPOOL" check \
	"iscsi://alice@127.0.0.1:$TGT_PORT/$TGT_IQN_BASE:chap/1" >&2 ||
	die "check with VDPOOL_ISCSI_PASSWORD failed"

step "mutual CHAP: the target proves itself too"
tgt_chap 3 target3 'Target-Pass-5678' outgoing || die "tgtadm: outgoing"
echo 'target3:Target-Pass-5678' >"$VDP_TMP/target.secret"
VDPOOL_ISCSI_SECRET_FILE=$VDP_TMP/chap.secret \
	VDPOOL_ISCSI_TARGET_SECRET_FILE=$VDP_TMP/target.secret \
	run "$VDPOOL" check chap >&2 || die "check with mutual CHAP failed"
echo 'target3:Not-The-Target-0000' >"$VDP_TMP/target.bad"
VDPOOL_ISCSI_SECRET_FILE=$VDP_TMP/chap.secret \
	VDPOOL_ISCSI_TARGET_SECRET_FILE=$VDP_TMP/target.bad \
	expect_fail "$VDP_TMP/c4" "$VDPOOL" check chap
grep -q "target $TGT_IQN_BASE:chap failed mutual CHAP" "$VDP_TMP/c4" ||
	die "a target with the wrong mutual CHAP secret: wrong message"

step "a password in the URL works, is warned about and never stored"
"$VDPOOL" umount "$MNT" 2>/dev/null || true
tgt_lun 3 2 "$VDP_TMP/lun4.img" 256M || die "tgtadm: lun 4"
UP="iscsi://alice%Secret-Pass-1234@127.0.0.1:$TGT_PORT/$TGT_IQN_BASE:chap/2"
log "+ $VDPOOL create --name inurl (URL with a password)"
"$VDPOOL" create --name inurl "$UP" >"$VDP_TMP/w.out" 2>"$VDP_TMP/w.err" ||
	die "create with a password in the URL failed: $(cat "$VDP_TMP/w.err")"
sed 's/^/    /' "$VDP_TMP/w.out" "$VDP_TMP/w.err" >&2
grep -q "warning: .*password.*visible" "$VDP_TMP/w.err" ||
	die "no warning about the password in the URL"
if grep -q "Secret-Pass" "$VDP_TMP/w.out" "$VDP_TMP/w.err" \
	"$VDPOOL_REGISTRY/inurl"; then
	die "the password was printed or registered"
fi
if grep -qa "Secret-Pass" "$VDP_TMP/lun4.img"; then
	die "the password is on the LUN (superblock)"
fi
assert_eq "$(VDPOOL_ISCSI_PASSWORD=Secret-Pass-1234 status_field inurl '.members[0].path')" \
	"iscsi://alice@127.0.0.1:$TGT_PORT/$TGT_IQN_BASE:chap/2" \
	"recorded URL (no password)"
VDPOOL_ISCSI_PASSWORD='Secret-Pass-1234' vdp_mount inurl "$MNT"
pid=$(daemon_pid "$MNT")
if tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "Secret-Pass"; then
	die "the password is in the daemon's command line"
fi
cp "$VDP_TMP/a.img" "$MNT/a.img"
assert_cmp "$MNT/a.img" "$VDP_TMP/a.img" "pool on a CHAP LUN"
vdp_umount "$MNT"
