#!/bin/bash
# SPDX-License-Identifier: MIT
# thin.sh - thin provisioning through the mount: a disk larger than any
# member costs nothing; fallocate (mode 0, KEEP_SIZE) allocates; punch hole,
# zero range and truncate-down give whole extents back and read as zeros;
# SEEK_DATA/SEEK_HOLE report exact extent boundaries; rm returns space.
# shellcheck source=tests/e2e/lib.sh
. "$(dirname "$0")/lib.sh"
need fallocate

E=$((1024 * 1024)) # extent size
M=$((1024 * 1024))
vdp_create thin 2 256M --extent-size 1M
MNT=$VDP_TMP/mnt
vdp_mount thin "$MNT"
free0=$(df_free "$MNT")
log "free space of the empty pool: $free0"

step "a 30 GiB disk on 2 x 256 MiB members uses no space"
run truncate -s 30G "$MNT/big.img"
assert_eq "$(stat -c '%s %b' "$MNT/big.img")" "32212254720 0" \
	"size and st_blocks"
assert_free "$MNT" "$free0" "free space"
assert_zeros "$MNT/big.img" $((30 * 1024 * M - 3 * M)) $((3 * M))
printf end | dd of="$MNT/big.img" bs=1 seek=$((30 * 1024 * M - 3)) \
	conv=notrunc status=none
assert_eq "$(dd if="$MNT/big.img" bs=1 skip=$((30 * 1024 * M - 3)) \
	status=none)" end "last 3 bytes of the 30 GiB disk"
assert_eq "$(fblocks "$MNT/big.img")" $((E / 512)) "st_blocks after 3 bytes"

step "fallocate mode 0 allocates and reads as zeros"
run fallocate -l 8M "$MNT/falloc.img"
assert_eq "$(stat -c '%s %b' "$MNT/falloc.img")" "$((8 * M)) $((8 * E / 512))" \
	"size and st_blocks after fallocate -l 8M"
assert_free "$MNT" $((free0 - 9 * E)) "free after fallocate"
assert_zeros "$MNT/falloc.img" 0 $((8 * M))

step "fallocate --keep-size allocates beyond the end without growing"
run touch "$MNT/keep.img"
run fallocate -n -o 1M -l 2M "$MNT/keep.img"
# st_blocks never exceeds the size; the pool's free space shows it.
assert_eq "$(stat -c '%s %b' "$MNT/keep.img")" "0 0" \
	"size and st_blocks after fallocate -n"
assert_free "$MNT" $((free0 - 11 * E)) "free after fallocate -n of 2 MiB"
run truncate -s 4M "$MNT/keep.img"
assert_eq "$(fblocks "$MNT/keep.img")" $((2 * E / 512)) \
	"st_blocks after growing over the preallocated extents"
assert_zeros "$MNT/keep.img" 0 $((4 * M))
run rm "$MNT/keep.img"
assert_free "$MNT" $((free0 - 9 * E)) "free after rm"

step "punch hole: whole extents go back, the rest is zeroed in place"
randfile "$VDP_TMP/data.ref" $((8 * M))
cp "$VDP_TMP/data.ref" "$MNT/punch.img"
cp "$VDP_TMP/data.ref" "$VDP_TMP/punch.ref"
sync "$MNT/punch.img"
assert_eq "$(fblocks "$MNT/punch.img")" $((8 * E / 512)) "st_blocks before"
freebefore=$(df_free "$MNT")
# Aligned: extents 1, 2 and 3 go.
run fallocate -p -o 1M -l 3M "$MNT/punch.img"
fallocate -p -o 1M -l 3M "$VDP_TMP/punch.ref"
assert_eq "$(fblocks "$MNT/punch.img")" $((5 * E / 512)) \
	"st_blocks after an aligned punch of 3 extents"
assert_free "$MNT" $((freebefore + 3 * E)) "free after punch"
assert_zeros "$MNT/punch.img" $((1 * M)) $((3 * M))
# Unaligned: 4M+100K .. 6M+100K frees only extent 5; parts of 4 and 6 zeroed.
run fallocate -p -o $((4 * M + 102400)) -l $((2 * M)) "$MNT/punch.img"
fallocate -p -o $((4 * M + 102400)) -l $((2 * M)) "$VDP_TMP/punch.ref"
assert_eq "$(fblocks "$MNT/punch.img")" $((4 * E / 512)) \
	"st_blocks after an unaligned punch covering one whole extent"
assert_eq "$(fsize "$MNT/punch.img")" $((8 * M)) "size unchanged by punch"
assert_cmp "$MNT/punch.img" "$VDP_TMP/punch.ref" "punched disk"

step "zero range: whole extents go back, the rest is zeroed in place"
cp "$VDP_TMP/data.ref" "$MNT/zero.img"
cp "$VDP_TMP/data.ref" "$VDP_TMP/zero.ref"
run fallocate -z -o 2M -l 2M "$MNT/zero.img"
run fallocate -z -o $((5 * M + 4096)) -l $((M + 8192)) "$MNT/zero.img"
fallocate -z -o 2M -l 2M "$VDP_TMP/zero.ref"
fallocate -z -o $((5 * M + 4096)) -l $((M + 8192)) "$VDP_TMP/zero.ref"
assert_cmp "$MNT/zero.img" "$VDP_TMP/zero.ref" "zero-ranged disk"
assert_zeros "$MNT/zero.img" $((2 * M)) $((2 * M))
assert_eq "$(fblocks "$MNT/zero.img")" $((6 * E / 512)) \
	"st_blocks after zeroing 2 whole extents and 2 partial ones"
# Zero range past the end grows the file (no KEEP_SIZE).
run fallocate -z -o $((8 * M)) -l $((M + 5)) "$MNT/zero.img"
assert_eq "$(fsize "$MNT/zero.img")" $((9 * M + 5)) "size after zero range"
assert_zeros "$MNT/zero.img" $((8 * M)) $((M + 5))

step "truncate down frees extents; growing again shows zeros"
# Bytes of its own: a write of bytes another disk's extent holds and was
# just read whole would share that extent (docs/clones.md).
randfile "$VDP_TMP/data.ref" $((8 * M))
cp "$VDP_TMP/data.ref" "$MNT/trunc.img"
freebefore=$(df_free "$MNT")
run truncate -s $((2 * M + 1)) "$MNT/trunc.img"
assert_blocks "$MNT/trunc.img" $((3 * E)) \
	"st_blocks after truncate to 2 MiB + 1 (3 extents, capped at the size)"
assert_free "$MNT" $((freebefore + 5 * E)) "free after truncate"
run truncate -s 8M "$MNT/trunc.img"
cmp -n $((2 * M + 1)) "$MNT/trunc.img" "$VDP_TMP/data.ref" ||
	die "data below the cut changed"
assert_zeros "$MNT/trunc.img" $((2 * M + 1)) $((6 * M - 1))
assert_eq "$(fblocks "$MNT/trunc.img")" $((3 * E / 512)) \
	"st_blocks after growing again"

step "SEEK_DATA and SEEK_HOLE"
run truncate -s 16M "$MNT/seek.img"
assert_eq "$(pyseek "$MNT/seek.img" 0 DATA)" ENXIO "SEEK_DATA in a hole-only disk"
assert_eq "$(pyseek "$MNT/seek.img" 0 HOLE)" 0 "SEEK_HOLE at 0"
printf a | dd of="$MNT/seek.img" bs=1 seek=$((2 * M + 10)) conv=notrunc \
	status=none
printf bb | dd of="$MNT/seek.img" bs=1 seek=$((6 * M - 1)) conv=notrunc \
	status=none
printf c | dd of="$MNT/seek.img" bs=1 seek=$((16 * M - 1)) conv=notrunc \
	status=none
# data: [2M,3M) [5M,7M) [15M,16M)
for q in "0 DATA $((2 * M))" "$((2 * M)) HOLE $((3 * M))" \
	"$((2 * M + 7)) DATA $((2 * M + 7))" "$((3 * M)) DATA $((5 * M))" \
	"$((3 * M + 1)) HOLE $((3 * M + 1))" "$((5 * M)) HOLE $((7 * M))" \
	"$((7 * M)) DATA $((15 * M))" "$((15 * M)) HOLE $((16 * M))" \
	"$((16 * M - 1)) DATA $((16 * M - 1))" "$((16 * M)) DATA ENXIO" \
	"$((16 * M)) HOLE ENXIO"; do
	read -r from whence want <<<"$q"
	assert_eq "$(pyseek "$MNT/seek.img" "$from" "$whence")" "$want" \
		"SEEK_$whence from $from"
done
run fallocate -p -o $((5 * M)) -l $((1 * M)) "$MNT/seek.img"
assert_eq "$(pyseek "$MNT/seek.img" $((3 * M)) DATA)" $((6 * M)) \
	"SEEK_DATA after punching extent 5"
run truncate -s $((15 * M)) "$MNT/seek.img"
assert_eq "$(pyseek "$MNT/seek.img" $((7 * M)) DATA)" ENXIO \
	"SEEK_DATA after truncating the last data extent away"
assert_eq "$(pyseek "$MNT/seek.img" $((6 * M)) HOLE)" $((7 * M)) \
	"SEEK_HOLE after truncate"

step "remount keeps the allocation; rm returns all space"
vdp_umount "$MNT"
vdp_check thin
vdp_mount thin "$MNT"
assert_cmp "$MNT/punch.img" "$VDP_TMP/punch.ref" "punched disk after remount"
assert_eq "$(fblocks "$MNT/punch.img")" $((4 * E / 512)) \
	"st_blocks of punch.img after remount"
assert_eq "$(pyseek "$MNT/seek.img" 0 DATA)" $((2 * M)) \
	"SEEK_DATA after remount"
run rm "$MNT"/*.img
assert_free "$MNT" "$free0" "free space after rm"
vdp_umount "$MNT"
vdp_check thin
