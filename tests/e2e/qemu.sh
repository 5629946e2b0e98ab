#!/bin/bash
# SPDX-License-Identifier: MIT
# qemu.sh - QEMU's tools on disks in the mount: qemu-img create, convert,
# compare and map (holes), and qemu-io with cache=none (O_DIRECT) and
# aio=threads/native: pattern writes and reads, unaligned writes, discard
# and write-zeroes.
# shellcheck source=tests/e2e/lib.sh
. "$(dirname "$0")/lib.sh"
need qemu-img qemu-io

M=$((1024 * 1024))
vdp_create q 2 256M --extent-size 1M
MNT=$VDP_TMP/mnt
vdp_mount q "$MNT"

# qio FILE AIO CMD...: qemu-io -f raw -t none -i AIO with -c for each CMD;
# fails on any error or pattern mismatch.
qio() {
	local file=$1 aio=$2 out
	local -a args=()
	shift 2
	for c in "$@"; do args+=(-c "$c"); done
	log "+ qemu-io -f raw -t none -i $aio $* $file"
	out=$(qemu-io -f raw -t none -i "$aio" "${args[@]}" "$file" 2>&1) ||
		die "qemu-io failed: $out"
	if grep -Eiq 'fail|error' <<<"$out"; then
		die "qemu-io reported: $out"
	fi
}

step "qemu-img create -f raw is thin"
run qemu-img create -q -f raw "$MNT/vm1.img" 1G
assert_eq "$(fsize "$MNT/vm1.img")" 1073741824 "size of the new raw disk"
# qemu-img writes the first 4 KiB (zeros) so that O_DIRECT alignment
# probing works later: at most that one extent is allocated.
[ "$(fblocks "$MNT/vm1.img")" -le $((M / 512)) ] ||
	die "a new 1 GiB raw disk has $(fblocks "$MNT/vm1.img") blocks allocated"
assert_zeros "$MNT/vm1.img" 0 $((4 * M))

for aio in threads native; do
	step "qemu-io -t none -i $aio"
	qio "$MNT/vm1.img" "$aio" 'write -P 0xab 0 1M' 'read -P 0xab 0 1M' \
		'write -P 0xcd 1047552 4096' 'read -P 0xcd 1047552 4096' \
		'read -P 0xab 0 1047552' 'read -P 0 2M 1M'
	# Unaligned (512-byte) writes under O_DIRECT, in the middle of data.
	qio "$MNT/vm1.img" "$aio" 'write -P 0x11 4608 1536' \
		'read -P 0x11 4608 1536' 'read -P 0xab 0 4608' \
		'read -P 0xab 6144 1041408' 'write -P 0x22 511M 512' \
		'read -P 0x22 511M 512' 'read -P 0 535822848 1048064'
	# Several requests in flight, each checked.
	qio "$MNT/vm1.img" "$aio" 'aio_write -P 0x31 100M 1M' \
		'aio_write -P 0x32 101M 1M' 'aio_write -P 0x33 102M 64k' \
		'aio_flush' 'aio_read -P 0x31 100M 1M' \
		'aio_read -P 0x32 101M 1M' 'aio_read -P 0x33 102M 64k' \
		'aio_flush'
	qemu-io -f raw -c 'read -P 0x32 101M 1M' "$MNT/vm1.img" >/dev/null ||
		die "buffered read of the aio_write data failed"
done
qemu-io -f raw -t none -c 'read -P 0x11 4608 1536' "$MNT/vm1.img" \
	>/dev/null || die "unaligned write not read back"

step "qemu-io discard and write-zeroes give whole extents back"
blocks=$(fblocks "$MNT/vm1.img")
qio "$MNT/vm1.img" native 'write -P 0x44 200M 3M'
assert_eq "$(fblocks "$MNT/vm1.img")" $((blocks + 3 * M / 512)) \
	"st_blocks after writing 3 MiB"
log "+ qemu-io -d unmap discard 200M 1M, write -z -u 201M 1M"
qemu-io -f raw -t none -d unmap -c 'discard 200M 1M' \
	-c 'write -z -u 201M 1M' "$MNT/vm1.img" >/dev/null || die "qemu-io failed"
qio "$MNT/vm1.img" threads 'read -P 0 200M 2M' 'read -P 0x44 202M 1M'
assert_eq "$(fblocks "$MNT/vm1.img")" $((blocks + M / 512)) \
	"st_blocks after discarding 2 MiB"

step "qemu-img convert a qcow2 into the pool"
Q=$VDP_TMP/src.qcow2
run qemu-img create -q -f qcow2 "$Q" 16M
qemu-io -f qcow2 -c 'write -P 0x5a 1M 2M' -c 'write -P 0xa5 9M 1M' \
	-c 'write -P 0x01 12M 4096' "$Q" >/dev/null || die "qemu-io on qcow2"
run qemu-img convert -f qcow2 -O raw "$Q" "$MNT/vm2.img"
assert_eq "$(fsize "$MNT/vm2.img")" $((16 * M)) "size of the converted disk"
run qemu-img compare -f qcow2 -F raw "$Q" "$MNT/vm2.img"
qio "$MNT/vm2.img" threads 'read -P 0x5a 1M 2M' 'read -P 0xa5 9M 1M' \
	'read -P 0x01 12M 4096' 'read -P 0 3M 6M'
# A changed byte must make compare fail, or the compare proves nothing.
printf '\x07' | dd of="$MNT/vm2.img" bs=1 seek=$((14 * M)) conv=notrunc \
	status=none
rc=0
qemu-img compare -q -f qcow2 -F raw "$Q" "$MNT/vm2.img" || rc=$?
assert_eq "$rc" 1 "qemu-img compare exit status after changing a byte"
printf '\0' | dd of="$MNT/vm2.img" bs=1 seek=$((14 * M)) conv=notrunc \
	status=none
run qemu-img compare -f qcow2 -F raw "$Q" "$MNT/vm2.img"

step "qemu-img map shows the holes"
# Extent 14 (the byte written and zeroed again) stays allocated.  Only
# extent 0 may be allocated besides the data: qemu-img convert writes the
# first block when it creates a raw file.
qemu-img map -f raw --output=json "$MNT/vm2.img" >"$VDP_TMP/map.json"
cat "$VDP_TMP/map.json" >&2
python3 - "$VDP_TMP/map.json" <<'EOF' || die "qemu-img map is wrong"
import json, sys
M = 1 << 20
data = set()
end = 0
for e in json.load(open(sys.argv[1])):
    assert e["start"] == end, "map has a gap at %d" % end
    end = e["start"] + e["length"]
    if e["data"]:
        data.update(range(e["start"] // M, (end + M - 1) // M))
assert end == 16 * M, "map ends at %d" % end
need = {1, 2, 9, 12, 14}
assert need <= data, "data missing in extents %s" % (need - data)
assert data <= need | {0}, "holes reported as data: extents %s" % (data - need)
print("map ok: data in extents", sorted(data))
EOF

step "qemu-img convert back out, and qemu-img info"
run qemu-img convert -f raw -O qcow2 "$MNT/vm2.img" "$VDP_TMP/back.qcow2"
run qemu-img compare -f qcow2 -F qcow2 "$Q" "$VDP_TMP/back.qcow2"
qemu-img info -f raw "$MNT/vm1.img" | grep -q 'virtual size: 1 GiB' ||
	die "qemu-img info does not show 1 GiB"

step "remount and compare again"
vdp_umount "$MNT"
vdp_check q
vdp_mount q "$MNT"
run qemu-img compare -f qcow2 -F raw "$Q" "$MNT/vm2.img"
qio "$MNT/vm1.img" native 'read -P 0xab 0 4608' 'read -P 0x11 4608 1536' \
	'read -P 0x22 511M 512' 'read -P 0x32 101M 1M' 'read -P 0x44 202M 1M'
vdp_umount "$MNT"
vdp_check q
