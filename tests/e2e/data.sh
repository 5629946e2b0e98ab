#!/bin/bash
# SPDX-License-Identifier: MIT
# data.sh - bytes written through the mount read back exactly: random data
# across extent and member boundaries, unaligned offsets and lengths,
# O_DIRECT, never-written ranges as zeros; and all of it again after a
# remount (by member path) and a clean `vdpool check`.
# shellcheck source=tests/e2e/lib.sh
. "$(dirname "$0")/lib.sh"

E=65536 # extent size
M=$((1024 * 1024))
vdp_create d 2 160M --extent-size 64K
MNT=$VDP_TMP/mnt
vdp_mount d "$MNT"

step "statfs shows the pool: 2 x 160 MiB less the metadata areas"
total=$(df_total "$MNT")
log "capacity $total bytes"
[ "$total" -gt $((270 * M)) ] && [ "$total" -le $((320 * M)) ] ||
	die "statfs capacity $total not in (270 MiB, 320 MiB]"

step "192 MiB + 12345 bytes of random data: more than one member holds"
SIZE=$((192 * M + 12345))
randfile "$VDP_TMP/big.ref" "$SIZE"
run dd if="$VDP_TMP/big.ref" of="$MNT/big.img" bs=1M conv=fsync status=none
assert_eq "$(fsize "$MNT/big.img")" "$SIZE" "size of big.img"
assert_cmp "$MNT/big.img" "$VDP_TMP/big.ref" "big.img after sequential write"
assert_blocks "$MNT/big.img" $(((SIZE + E - 1) / E * E)) \
	"st_blocks of big.img"
assert_free "$MNT" $((total - (SIZE + E - 1) / E * E)) \
	"free space after writing big.img"

step "odd-sized reads (bs=4097) return the same bytes"
dd if="$MNT/big.img" bs=4097 status=none | cmp - "$VDP_TMP/big.ref" ||
	die "reading big.img with bs=4097 gave other bytes"

step "unaligned overwrites across extent boundaries"
randfile "$VDP_TMP/patch" $((3 * M))
# offset:length pairs: inside one extent, across one boundary, across
# several, one byte, a 1 MiB write starting 1 byte before a boundary, the
# last byte of the file.
for w in "100:7" "$((E - 7)):14" "$((3 * E - 1000)):200000" "12345678:1" \
	"$((100 * E - 1)):$M" "$((150 * M + 511)):$((E + 2))" \
	"$((SIZE - 1)):1"; do
	off=${w%:*} len=${w#*:}
	src=$(((off * 7) % (2 * M)))
	log "write $len bytes at $off"
	patch_bytes "$VDP_TMP/patch" "$src" "$MNT/big.img" "$off" "$len"
	patch_bytes "$VDP_TMP/patch" "$src" "$VDP_TMP/big.ref" "$off" "$len"
done
assert_eq "$(fsize "$MNT/big.img")" "$SIZE" "size after overwrites"
assert_cmp "$MNT/big.img" "$VDP_TMP/big.ref" "big.img after unaligned writes"

step "unaligned reads"
for r in "0:1" "$((E - 3)):6" "$((5 * E + 17)):$((2 * E + 5))" \
	"$((SIZE - 10)):10"; do
	off=${r%:*} len=${r#*:}
	cmp -n "$len" -i "$off:$off" "$MNT/big.img" "$VDP_TMP/big.ref" ||
		die "read of $len bytes at $off differs"
	a=$(dd if="$MNT/big.img" bs=64K iflag=skip_bytes,count_bytes \
		skip="$off" count="$len" status=none | sha256sum)
	b=$(dd if="$VDP_TMP/big.ref" bs=64K iflag=skip_bytes,count_bytes \
		skip="$off" count="$len" status=none | sha256sum)
	assert_eq "$a" "$b" "dd read of $len bytes at $off"
done

step "O_DIRECT writes and reads"
randfile "$VDP_TMP/direct.ref" $((4 * M))
run dd if="$VDP_TMP/direct.ref" of="$MNT/direct.img" bs=128K oflag=direct \
	status=none
dd if="$MNT/direct.img" bs=64K iflag=direct status=none |
	cmp - "$VDP_TMP/direct.ref" || die "O_DIRECT read-back differs"
log "ok: O_DIRECT round trip"

step "never-written ranges read as zeros"
run truncate -s 64M "$MNT/holes.img"
truncate -s 64M "$VDP_TMP/holes.ref"
assert_eq "$(fblocks "$MNT/holes.img")" 0 "st_blocks of an unwritten disk"
assert_zeros "$MNT/holes.img" 0 $((64 * M))
for off in $((10 * M + 3)) $((33 * M - 2)); do
	patch_bytes "$VDP_TMP/patch" 0 "$MNT/holes.img" "$off" 4
	patch_bytes "$VDP_TMP/patch" 0 "$VDP_TMP/holes.ref" "$off" 4
done
assert_cmp "$MNT/holes.img" "$VDP_TMP/holes.ref" "sparse disk"
assert_zeros "$MNT/holes.img" 0 $((10 * M + 3))
assert_zeros "$MNT/holes.img" $((10 * M + 7)) $((23 * M - 9))
# 3 extents: one at 10M, two across the boundary at 33M.
assert_eq "$(fblocks "$MNT/holes.img")" $((3 * E / 512)) \
	"st_blocks after 3 small writes"

step "a write past the end extends the file with zeros before it"
patch_bytes "$VDP_TMP/patch" 0 "$MNT/grow.img" $((5 * M + 1)) 10
patch_bytes "$VDP_TMP/patch" 0 "$VDP_TMP/grow.ref" $((5 * M + 1)) 10
assert_eq "$(fsize "$MNT/grow.img")" $((5 * M + 11)) "size of grow.img"
assert_cmp "$MNT/grow.img" "$VDP_TMP/grow.ref" "grow.img"

step "remount by a member's path"
vdp_umount "$MNT"
vdp_check d
vdp_mount "$(member d 1)" "$MNT"
for f in big direct holes grow; do
	assert_cmp "$MNT/$f.img" "$VDP_TMP/$f.ref" "$f.img after remount"
done
assert_eq "$(fblocks "$MNT/holes.img")" $((3 * E / 512)) \
	"st_blocks of holes.img after remount"
vdp_umount "$MNT"
vdp_check d
