#!/bin/bash
# SPDX-License-Identifier: MIT
# lvm.sh - LVM logical volumes as members (lvm:VG/LV, docs/members/lvm.md),
# on a VG of loop devices made here.  Where there is no device-mapper (this
# build machine, containers) LVs are made with `lvcreate --driverloaded n
# -an` and vdpool reads their metadata from the PVs: pools on a linear LV,
# on a striped LV across two PVs, on an LV of two segments that are not
# contiguous and on an LV of a PV with 4 KiB sectors; data written through the mount is checked against an image
# of each LV that this script assembles from the PVs by what LVM itself
# reports (lvs --segments), so vdpool's map is checked by LVM's.  Then a
# remount, an lvrename, an lvextend and a grow, and every refusal.  The
# device-mapper path runs only where the kernel has device-mapper.
# shellcheck source=tests/e2e/lib.sh
. "$(dirname "$0")/lib.sh"
need pvcreate vgcreate lvcreate lvextend lvrename lvs pvs vgs vgremove dmsetup \
	pvremove mkfs.ext4 losetup

ERR=$VDP_TMP/err
VG=vdpt$$
VG2=vdpu$$
VG3=vdpw$$

# A private LVM configuration: only our loop devices, no udev, no backups
# in /etc/lvm; the host's own VGs are never scanned.
export LVM_SYSTEM_DIR=$VDP_TMP/lvm LVM_SUPPRESS_FD_WARNINGS=1
mkdir -p "$LVM_SYSTEM_DIR"
DEVS=()
for i in 1 2 3 4; do
	truncate -s 256M "$VDP_TMP/pv$i.img"
	DEVS+=("$(vdp_losetup "$VDP_TMP/pv$i.img")")
done
truncate -s 256M "$VDP_TMP/pv5.img"
DEVS+=("$(vdp_losetup "$VDP_TMP/pv5.img" sector4k)")
L1=${DEVS[0]} L2=${DEVS[1]} L3=${DEVS[2]} L4=${DEVS[3]} L5=${DEVS[4]}
filter=$(printf '"a|^%s$|", ' "${DEVS[@]}")
cat >"$LVM_SYSTEM_DIR/lvm.conf" <<EOF
devices { filter = [ $filter "r|.*|" ] obtain_device_list_from_udev = 0
          use_devicesfile = 0 hints = "none" }
activation { udev_sync = 0 udev_rules = 0 }
backup { backup = 0 archive = 0 }
EOF

# The VGs go before lib.sh's cleanup detaches their loop devices; our LV
# lock files too.
lvm_cleanup() {
	local u
	for u in $(lvs --noheadings -o lv_uuid "$VG" "$VG2" "$VG3" 2>/dev/null); do
		rm -f "/run/lock/vdpool/lv-${u//-/}"
	done
	vgremove -f "$VG" "$VG2" "$VG3" >/dev/null 2>&1
	pvremove -ff -y "${DEVS[@]}" >/dev/null 2>&1
	return 0
}
trap 'rc=$?; set +e; lvm_cleanup; (exit $rc); cleanup' EXIT

# lvm CMD ARGS...: an LVM command that changes metadata, without
# device-mapper; its chatter about the missing driver is dropped.
lvm() {
	log "+ $*"
	"$@" >"$VDP_TMP/lvm.out" 2>&1 || {
		cat "$VDP_TMP/lvm.out" >&2
		die "$1 failed"
	}
}

# Device-mapper works when its driver answers (a /dev/mapper/control node
# alone, which LVM tools create, proves nothing).
dm=no
dmsetup version 2>/dev/null | grep -q '^Driver version' && dm=yes
DRV=(--driverloaded n)
[ "$dm" = yes ] && DRV=()
ACT=("${DRV[@]}" -an -Zn)
NODM= # the PV path, also where device-mapper works
[ "$dm" = yes ] && NODM="?dm=no"

step "a VG of three PVs and four LVs"
lvm pvcreate -q "${DEVS[@]}"
lvm vgcreate -q "$VG" "$L1" "$L2" "$L3"
lvm lvcreate -q "${ACT[@]}" -L 64M -n lin "$VG" "$L1"
lvm lvcreate -q "${ACT[@]}" -L 64M -i2 -I64k -n str "$VG" "$L2" "$L3"
# frag: 32 MiB, then "gap" takes the extents after it, then frag grows
# past gap: two segments that are not contiguous on the PV.
lvm lvcreate -q "${ACT[@]}" -L 32M -n frag "$VG" "$L1"
lvm lvcreate -q "${ACT[@]}" -L 8M -n gap "$VG" "$L1"
lvm lvextend -q "${DRV[@]}" -L +32M "$VG/frag" "$L1"
# L3's metadata area now, before "small" exists: put back later, it makes
# L3's copy of the VG older than the others'.
dd if="$L3" of="$VDP_TMP/l3.mda" bs=4096 skip=1 count=255 status=none
lvm lvcreate -q "${ACT[@]}" -L 8M -n small "$VG" "$L1"
lvs --segments -o lv_name,seg_start_pe,seg_size_pe,stripes,seg_pe_ranges \
	"$VG" >&2 2>/dev/null
assert_eq "$(lvs --noheadings -o seg_count "$VG/frag" 2>/dev/null | tr -d ' ')" 2 \
	"segments of frag"

# lv_image LV OUT [VG]: the LV's bytes, assembled from its PVs by what LVM
# reports: per segment the stripes' PE ranges, pe_start and stripe size.
lv_image() {
	local ext vg=${3:-$VG}
	ext=$(vgs --noheadings --units b --nosuffix -o vg_extent_size "$vg" 2>/dev/null)
	pvs --noheadings --units b --nosuffix --separator ';' \
		-o pv_name,pe_start 2>/dev/null >"$VDP_TMP/pvs"
	lvs --segments --noheadings --units b --nosuffix --separator ';' \
		-o seg_start_pe,seg_size_pe,stripes,stripe_size,seg_pe_ranges \
		"$vg/$1" 2>/dev/null >"$VDP_TMP/segs"
	python3 - "$ext" "$VDP_TMP/pvs" "$VDP_TMP/segs" "$2" <<'EOF'
import sys
ext = int(sys.argv[1])
pe_start = {}
for line in open(sys.argv[2]):
    name, start = line.strip().split(";")
    pe_start[name] = int(start)
out = open(sys.argv[4], "wb")
for line in open(sys.argv[3]):
    start, size, stripes, ssize, ranges = line.strip().split(";")
    start, size, stripes, ssize = int(start), int(size), int(stripes), int(ssize)
    areas = []  # (device, byte offset of the stripe)
    for r in ranges.split():
        dev, pes = r.rsplit(":", 1)
        areas.append((dev, pe_start[dev] + int(pes.split("-")[0]) * ext))
    assert len(areas) == stripes
    total = size * ext
    chunk = ssize if stripes > 1 else total
    out.seek(start * ext)
    fds = {d: open(d, "rb") for d, _ in areas}
    for o in range(0, total, chunk):
        row, k = divmod(o // chunk, stripes)
        dev, base = areas[k]
        f = fds[dev]
        f.seek(base + row * chunk)
        out.write(f.read(chunk))
EOF
}

# pool_on NAME LV SPEC [VG]: create a pool on one LV, write a pattern
# through the mount, check it, unmount; then the LV assembled from the PVs
# by LVM's report must hold the same pool: `vdpool check` passes on that
# image and the disk read from it is the pattern.
pool_on() {
	local name=$1 lv=$2 mnt=$VDP_TMP/mnt-$1 spec=$3
	step "a pool on $lv: $spec"
	run "$VDPOOL" create --name "$name" "$spec" 2>"$ERR" || {
		cat "$ERR" >&2
		die "create on $spec failed"
	}
	cat "$ERR" >&2
	if [ "$dm" = no ]; then
		grep -q "device-mapper not available.*reading LVM metadata from the PVs" \
			"$ERR" || die "no note that device-mapper is missing"
	fi
	randfile "$VDP_TMP/$name.pat" $((40 << 20))
	vdp_mount "$name" "$mnt"
	run dd if="$VDP_TMP/$name.pat" of="$mnt/disk" bs=1M conv=fsync \
		status=none
	assert_cmp "$mnt/disk" "$VDP_TMP/$name.pat" "$name: read back"
	vdp_umount "$mnt"
	vdp_check "$name"
	lv_image "$lv" "$VDP_TMP/$name.lv" "${4:-$VG}"
	vdp_check "$VDP_TMP/$name.lv"
	vdp_mount "$VDP_TMP/$name.lv" "$mnt"
	assert_cmp "$mnt/disk" "$VDP_TMP/$name.pat" \
		"$name: the disk in the LV as LVM maps it"
	vdp_umount "$mnt"
	rm -f "$VDP_TMP/$name.lv"
}

if [ "$dm" = no ]; then
	pool_on plin lin "lvm:$VG/lin"
	pool_on pstr str "lvm:$VG/str?pv=$L2,$L3"
	pool_on pfrag frag "lvm:$VG/frag"
else
	log "device-mapper is here: the PV path is tested with dm=no"
	pool_on plin lin "lvm:$VG/lin?dm=no"
	pool_on pstr str "lvm:$VG/str?pv=$L2,$L3&dm=no"
	pool_on pfrag frag "lvm:$VG/frag?dm=no"
fi

# A PV with 4 KiB logical sectors (a 4Kn disk): its label cannot be read
# alone with O_DIRECT, and the member's I/O goes in 4 KiB units.
lvm vgcreate -q "$VG3" "$L5"
lvm lvcreate -q "${ACT[@]}" -L 64M -n four "$VG3"
pool_on p4k four "lvm:$VG3/four$NODM" "$VG3"

step "the registry holds each LV's UUIDs"
grep -E "^lvm:$VG/lin\?uuid=[A-Za-z0-9]{32}/[A-Za-z0-9]{32}" \
	"$VDPOOL_REGISTRY/plin" || die "registry: $(cat "$VDPOOL_REGISTRY/plin")"

step "remount by name finds every member"
for p in plin pstr pfrag; do
	vdp_mount "$p" "$VDP_TMP/mnt-$p"
	assert_cmp "$VDP_TMP/mnt-$p/disk" "$VDP_TMP/$p.pat" "$p after remount"
	vdp_umount "$VDP_TMP/mnt-$p"
done

step "lvrename: the pool finds the LV by its UUID"
lvm lvrename "${DRV[@]}" "$VG" lin lin2
vdp_mount plin "$VDP_TMP/mnt-plin"
assert_cmp "$VDP_TMP/mnt-plin/disk" "$VDP_TMP/plin.pat" "plin after lvrename"
vdp_umount "$VDP_TMP/mnt-plin"
"$VDPOOL" status plin >"$VDP_TMP/status" || die "status plin failed"
grep -q "lvm:$VG/lin2?uuid=" "$VDP_TMP/status" ||
	die "status does not show the new name: $(cat "$VDP_TMP/status")"
log "ok: the record names lin2 now"

step "lvextend, then resize-member on the mounted pool"
vdp_mount plin "$VDP_TMP/mnt-plin"
total0=$(df_total "$VDP_TMP/mnt-plin")
lvm lvextend -q "${DRV[@]}" -L +32M "$VG/lin2" "$L1"
run "$VDPOOL" resize-member "$VDP_TMP/mnt-plin" "lvm:$VG/lin2" ||
	die "resize-member failed"
total1=$(df_total "$VDP_TMP/mnt-plin")
[ "$total1" -gt "$total0" ] || die "capacity $total0 -> $total1 after grow"
log "ok: capacity $total0 -> $total1"
# The new extents are used: a second disk fills the pool past the old end.
randfile "$VDP_TMP/more.pat" $((30 << 20))
run dd if="$VDP_TMP/more.pat" of="$VDP_TMP/mnt-plin/more" bs=1M \
	conv=fsync status=none
assert_cmp "$VDP_TMP/mnt-plin/more" "$VDP_TMP/more.pat" "data in the new space"
vdp_umount "$VDP_TMP/mnt-plin"
vdp_check plin
vdp_mount plin "$VDP_TMP/mnt-plin"
assert_cmp "$VDP_TMP/mnt-plin/more" "$VDP_TMP/more.pat" "grown space, remounted"
assert_cmp "$VDP_TMP/mnt-plin/disk" "$VDP_TMP/plin.pat" "old data, remounted"
vdp_umount "$VDP_TMP/mnt-plin"

# refuse WHAT PATTERN CMD...: CMD fails with one line on stderr (besides
# the note that device-mapper is missing) that matches PATTERN.
refuse() {
	local what=$1 pattern=$2
	shift 2
	step "refused: $what"
	expect_fail "$ERR" "$@"
	grep -v "device-mapper not available" "$ERR" >"$ERR.1" || true
	assert_eq "$(wc -l <"$ERR.1")" 1 "lines on stderr"
	grep -Eq -- "$pattern" "$ERR.1" || die "the message does not match /$pattern/"
}

refuse "VG not found" "VG nosuch$$ not found on the disks and loop devices" \
	"$VDPOOL" create --name e1 "lvm:nosuch$$/x$NODM"
refuse "LV not found" "LV nolv not found in VG $VG" \
	"$VDPOOL" create --name e1 "lvm:$VG/nolv$NODM"
# With an older copy of the VG on L3 the newest (highest seqno) still
# wins: LV small is found (and is too small).
dd if="$VDP_TMP/l3.mda" of="$L3" bs=4096 seek=1 conv=notrunc,fsync status=none
refuse "LV too small" "lvm:$VG/small.* is too small" \
	"$VDPOOL" create --name e1 "lvm:$VG/small$NODM"
refuse "LV already holds a pool" "already belongs to vdpool pool plin" \
	"$VDPOOL" create --name e1 "lvm:$VG/lin2$NODM"
refuse "a PV not among the devices given" \
	"PV pv[0-9] \(uuid [A-Za-z0-9]{32}, last seen at $L3\) of VG $VG is missing" \
	"$VDPOOL" create --name e1 "lvm:$VG/str?pv=$L1,$L2${NODM:+&dm=no}"
mkdir -p "$VDP_TMP/mnt-e"
refuse "a pv= device that does not exist" \
	"member lvm:$VG/str\?pv=$L2,$VDP_TMP/nope.*: $VDP_TMP/nope: No such file or directory" \
	"$VDPOOL" create --name e1 "lvm:$VG/str?pv=$L2,$VDP_TMP/nope${NODM:+&dm=no}"
refuse "a PV missing at mount" \
	"PV pv0 \(uuid .*, last seen at $L1\) of VG $VG is missing from the devices in VDPOOL_LVM_DEVICES" \
	env VDPOOL_LVM_DEVICES="$L2" "$VDPOOL" mount pfrag "$VDP_TMP/mnt-e"
refuse "the same LV twice" "overlaps member .*: both are LVM logical volume" \
	"$VDPOOL" create --name e1 "lvm:$VG/gap$NODM" "lvm:$VG/gap?pv=$L1${NODM:+&dm=no}"
refuse "a PV of an LV as a second member" "overlaps member .*is a PV under" \
	"$VDPOOL" create --name e1 --force "lvm:$VG/gap$NODM" "$L1"
refuse "a bad spec" "expected lvm:VG/LV" \
	"$VDPOOL" create --name e1 "lvm:$VG"
refuse "a record too long" "more than the 127 a pool keeps" \
	"$VDPOOL" create --name e1 "lvm:$VG/gap?pv=$L1,$L1,$L1,$L1,$L1,$L1${NODM:+&dm=no}"

# Thin, raid, cache, snapshot and mirror LVs cannot be made without
# device-mapper (test_lvm_meta refuses them from edited metadata); a zero
# LV can.
lvm lvcreate -q "${ACT[@]}" --type zero -L 64M -n zero "$VG"
refuse "an LV type that cannot be mapped" \
	"LV zero has a segment of type zero, which vdpool cannot map without device-mapper" \
	"$VDPOOL" create --name e1 "lvm:$VG/zero?dm=no"

step "refused: an LV holding a filesystem"
lvm lvcreate -q "${ACT[@]}" -L 48M -n fs "$VG" "$L1"
truncate -s 48M "$VDP_TMP/fs.img"
mkfs.ext4 -q -F "$VDP_TMP/fs.img"
lv_image fs "$VDP_TMP/fs.before" # where fs lies: one linear segment
read -r fs_pe < <(lvs --segments --noheadings -o seg_pe_ranges "$VG/fs" 2>/dev/null |
	sed 's/.*://; s/-.*//')
ext=$(vgs --noheadings --units b --nosuffix -o vg_extent_size "$VG" 2>/dev/null)
pe_start=$(pvs --noheadings --units b --nosuffix -o pe_start "$L1" 2>/dev/null)
dd if="$VDP_TMP/fs.img" of="$L1" bs=1M seek=$(((pe_start + fs_pe * ext) >> 20)) \
	conv=notrunc,fsync status=none
refuse "ext4 on the LV" "holds an existing ext4 filesystem" \
	"$VDPOOL" create --name e1 "lvm:$VG/fs$NODM"

# Sets a byte of the first metadata area of PV DEV to 'X' with O_DIRECT:
# WHAT "text", 20 bytes into the current text (the area's header is at
# 4096 on a PV made by pvcreate; its first raw_locn, at 40, says where the
# text is), or "header", a byte of the header's magic.
poke_mda() {
	python3 - "$1" "$2" <<'PY'
import mmap, os, struct, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_DIRECT)
buf = mmap.mmap(-1, 4096)  # page-aligned, as O_DIRECT wants
os.preadv(fd, [buf], 4096)
off = 4096 + (struct.unpack_from("<Q", buf, 40)[0] + 20
              if sys.argv[2] == "text" else 8)
base = off - off % 4096
os.preadv(fd, [buf], base)
buf[off - base] = ord("X")
os.pwritev(fd, [buf], base)
os.fsync(fd)
PY
}

step "refused: a damaged metadata area"
lvm vgcreate -q "$VG2" "$L4"
lvm lvcreate -q "${ACT[@]}" -L 64M -n one "$VG2"
# A byte of the current metadata text changed: the text's checksum no
# longer matches.  poke_mda writes with O_DIRECT, as LVM does: a page of
# the PV that a buffered read cached while LVM wrote (udev's probe after
# lvcreate, say) may hold the header from before lvcreate; a buffered
# poke would then land in the old text, or write that old page back.
udevadm settle 2>/dev/null || true
poke_mda "$L4" text
refuse "mda text checksum" \
	"VG $VG2 not found .*$L4: metadata area 0: metadata text checksum is wrong" \
	"$VDPOOL" create --name e1 "lvm:$VG2/one$NODM"
# And a byte of the header's magic: the header's checksum.
poke_mda "$L4" header
refuse "mda header checksum" \
	"VG $VG2 not found .*$L4: metadata area 0: metadata area header checksum is wrong" \
	"$VDPOOL" create --name e1 "lvm:$VG2/one$NODM"

if [ "$dm" = no ]; then
	log "device-mapper path: SKIPPED: the kernel has no device-mapper" \
		"driver (dmsetup version reports none);" \
		"the PV path was tested instead"
else
	step "the device-mapper path"
	lvm lvcreate -q -an -Zn -L 64M -n dmlv "$VG" "$L2"
	refuse "an inactive LV" "LV $VG/dmlv is inactive" \
		"$VDPOOL" create --name pdm "lvm:$VG/dmlv"
	lvm lvchange -ay "$VG/dmlv"
	run "$VDPOOL" create --name pdm "lvm:$VG/dmlv" || die "create on dm failed"
	refuse "the PVs of an active LV" "is active in device-mapper" \
		"$VDPOOL" create --name e2 --force "lvm:$VG/dmlv?dm=no"
	vdp_mount pdm "$VDP_TMP/mnt-pdm"
	randfile "$VDP_TMP/pdm.pat" $((20 << 20))
	cp "$VDP_TMP/pdm.pat" "$VDP_TMP/mnt-pdm/disk"
	vdp_umount "$VDP_TMP/mnt-pdm"
	lvm lvrename "$VG" dmlv dmlv2
	vdp_mount pdm "$VDP_TMP/mnt-pdm"
	assert_cmp "$VDP_TMP/mnt-pdm/disk" "$VDP_TMP/pdm.pat" "dm: after lvrename"
	vdp_umount "$VDP_TMP/mnt-pdm"
	lvm lvchange -an "$VG/dmlv2"
fi
