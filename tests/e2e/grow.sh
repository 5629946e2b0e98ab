#!/bin/bash
# SPDX-License-Identifier: MIT
# grow.sh - growing a pool: `vdpool add` on a nearly full mounted pool
# while fio writes (the writes that would have failed with ENOSPC succeed),
# add on an unmounted pool, a member file that grew (resize-member online,
# and at mount), balance, and the errors of add and remove.
# shellcheck source=tests/e2e/lib.sh
. "$(dirname "$0")/lib.sh"
need fio python3

E=$((1024 * 1024))
MNT=$VDP_TMP/mnt

step "a nearly full mounted pool; fio writes 20 MiB more while a member is added"
vdp_create gp 2 48M
vdp_mount gp "$MNT"
free0=$(df_free "$MNT")
# Leave 8 MiB free: fio's 20 MiB cannot fit without the new member.
run dd if=/dev/urandom of="$MNT/fill.img" bs=1M count=$((free0 / E - 8)) \
	conv=fsync status=none
log "free before add: $(df_free "$MNT")"
truncate -s 64M "$VDP_TMP/new.img"
# 2 MiB/s: the first 8 MiB take about 4 s; the add takes well under that.
fio --name=grow --filename="$MNT/late.img" --rw=write --bs=64k --size=20M \
	--rate=2m --direct=1 --verify=crc32c --do_verify=1 \
	--output="$VDP_TMP/fio.out" &
fio_pid=$!
sleep 1
run "$VDPOOL" add "$MNT" "$VDP_TMP/new.img"
wait "$fio_pid" || {
	cat "$VDP_TMP/fio.out" >&2
	die "fio failed: the writes did not get the new member's space"
}
grep -q 'err= 0' "$VDP_TMP/fio.out" || die "fio reported errors"
log "ok: fio wrote and verified 20 MiB in a pool that had 8 MiB free"
assert_eq "$(json_get "$MNT" "len(j['members'])")" 3 "members after add"
[ "$(df_total "$MNT")" -gt $((100 * E)) ] || die "df did not grow"
sha_fill=$(sha256sum <"$MNT/fill.img")
sha_late=$(sha256sum <"$MNT/late.img")
vdp_umount "$MNT"
vdp_check gp
grep -qF "$VDP_TMP/new.img" "$VDPOOL_REGISTRY/gp" ||
	die "the registry does not list the new member"

step "mount finds the new member; the data is there"
vdp_mount gp "$MNT"
assert_eq "$(sha256sum <"$MNT/fill.img")" "$sha_fill" "fill.img after remount"
assert_eq "$(sha256sum <"$MNT/late.img")" "$sha_late" "late.img after remount"

step "balance spreads the extents"
run "$VDPOOL" balance "$MNT"
json_get "$MNT" "'\n'.join('%s %d/%d' % (m['path'], m['used'], m['size']) for m in j['members'])" >&2
spread=$(json_get "$MNT" "int(100 * (max(m['used']/m['size'] for m in j['members']) - min(m['used']/m['size'] for m in j['members'])))")
[ "$spread" -le 15 ] || die "after balance the members' fill differs by $spread%"
assert_eq "$(sha256sum <"$MNT/fill.img")" "$sha_fill" "fill.img after balance"
assert_eq "$(sha256sum <"$MNT/late.img")" "$sha_late" "late.img after balance"

step "resize-member: a member file that grew, online"
cap0=$(df_total "$MNT")
truncate -s 96M "$VDP_TMP/new.img"
run "$VDPOOL" resize-member "$MNT" "$VDP_TMP/new.img" |
	tee "$VDP_TMP/out" >&2
grep -q 'grown from' "$VDP_TMP/out" || die "resize-member did not say it grew"
assert_eq "$(($(df_total "$MNT") - cap0))" $((32 * E)) "capacity gained"
run "$VDPOOL" resize-member "$MNT" "$VDP_TMP/new.img" >"$VDP_TMP/out"
grep -q 'already uses all' "$VDP_TMP/out" || die "second resize-member changed something"
truncate -s 80M "$VDP_TMP/new.img"
expect_fail "$VDP_TMP/err" "$VDPOOL" resize-member "$MNT" "$VDP_TMP/new.img"
grep -q 'smaller than the .* the pool uses' "$VDP_TMP/err" ||
	die "shrunk member: wrong error"
truncate -s 96M "$VDP_TMP/new.img"
vdp_umount "$MNT"
vdp_check gp

step "a member that grew while unmounted is grown at mount"
truncate -s 80M "$(member gp 0)"
vdp_mount gp "$MNT"
assert_eq "$(($(df_total "$MNT") - cap0))" $((64 * E)) "capacity after mount"
vdp_umount "$MNT"
vdp_check gp

step "add to and remove from an unmounted pool"
truncate -s 32M "$VDP_TMP/off.img"
run "$VDPOOL" add gp "$VDP_TMP/off.img"
assert_eq "$(json_get gp "len(j['members'])")" 4 "members after offline add"
vdp_check gp
run "$VDPOOL" balance gp # some extents move onto it
[ "$(json_get gp "j['members'][3]['used']")" -gt 0 ] ||
	die "balance put nothing on the new member"
run "$VDPOOL" remove gp "$VDP_TMP/off.img"
assert_eq "$(json_get gp "len(j['members'])")" 3 "members after offline remove"
vdp_check gp
run "$VDPOOL" add gp "$VDP_TMP/off.img" # wiped: no --force needed
vdp_check gp

step "a large member grows the metadata area (a chunk with a copy on it)"
truncate -s 1G "$(member big 0)" "$(member big 1)"
run "$VDPOOL" create --name big "$(member big 0)" "$(member big 1)" >&2
truncate -s 4G "$VDP_TMP/big2.img"
vdp_mount big "$VDP_TMP/bmnt"
run dd if=/dev/urandom of="$VDP_TMP/bmnt/a.img" bs=1M count=40 status=none
run "$VDPOOL" add "$VDP_TMP/bmnt" "$VDP_TMP/big2.img"
assert_eq "$(json_get "$VDP_TMP/bmnt" "[m['metadata'] for m in j['members']]")" \
	"[True, True, True]" "members holding metadata after add"
run dd if=/dev/urandom of="$VDP_TMP/bmnt/b.img" bs=1M count=40 status=none
sha=$(cat "$VDP_TMP/bmnt/a.img" "$VDP_TMP/bmnt/b.img" | sha256sum)
vdp_umount "$VDP_TMP/bmnt"
vdp_check big
vdp_mount big "$VDP_TMP/bmnt"
run "$VDPOOL" remove "$VDP_TMP/bmnt" "$(member big 0)"
assert_eq "$(cat "$VDP_TMP/bmnt/a.img" "$VDP_TMP/bmnt/b.img" | sha256sum)" \
	"$sha" "data after the metadata moved"
vdp_umount "$VDP_TMP/bmnt"
vdp_check big

step "errors, each one clear line"
# expect_error WHAT PATTERN CMD...: CMD fails with one line matching PATTERN.
expect_error() {
	local what=$1 pat=$2
	shift 2
	expect_fail "$VDP_TMP/err" "$@"
	[ "$(wc -l <"$VDP_TMP/err")" -eq 1 ] ||
		die "$what: not one line: $(cat "$VDP_TMP/err")"
	grep -q "$pat" "$VDP_TMP/err" || die "$what: got: $(cat "$VDP_TMP/err")"
	log "ok: $what: $(cat "$VDP_TMP/err")"
}
vdp_mount gp "$MNT"
expect_error "already in this pool" "already in pool gp" \
	"$VDPOOL" add "$MNT" "$VDP_TMP/off.img"
vdp_create other 1 48M
expect_error "member of another pool" "already belongs to vdpool pool other" \
	"$VDPOOL" add "$MNT" "$(member other 0)"
truncate -s 8M "$VDP_TMP/tiny.img"
expect_error "too small" "too small" "$VDPOOL" add "$MNT" "$VDP_TMP/tiny.img"
expect_error "not a member" "is not a member of pool gp" \
	"$VDPOOL" remove "$MNT" "$VDP_TMP/tiny.img"
expect_error "nothing to cancel" "no removal or balance to cancel" \
	"$VDPOOL" remove --cancel "$MNT"
vdp_umount "$MNT"
expect_error "last member" "last member of pool other" \
	"$VDPOOL" remove other "$(member other 0)"
# A pool of 2 x 48 MiB with 60 MiB of data: neither member can go.
vdp_create tight 2 48M
vdp_mount tight "$VDP_TMP/tmnt"
run dd if=/dev/urandom of="$VDP_TMP/tmnt/d.img" bs=1M count=60 conv=fsync \
	status=none
expect_error "does not fit" "cannot remove .*: it holds .* MiB, but the other members have only" \
	"$VDPOOL" remove "$VDP_TMP/tmnt" "$(member tight 1)"
assert_eq "$(json_get "$VDP_TMP/tmnt" "[m['state'] for m in j['members']]")" \
	"['active', 'active']" "states after a refused removal"
vdp_umount "$VDP_TMP/tmnt"
vdp_check tight
vdp_check gp
