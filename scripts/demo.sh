#!/bin/bash
# SPDX-License-Identifier: MIT
#
# demo.sh - build vdpool (if needed) and mount a demo pool made of two
# sparse 20 GiB file members, with a 30 GiB thin disk in it.
#
#   members     /var/lib/vdpool-demo/m0.img, m1.img
#   pool        demo (registered in /etc/vdpool/pools, or $VDPOOL_REGISTRY)
#   mountpoint  /mnt/vdpool-demo
#
# Safe to run again: an existing pool is reused, a live mount is left as
# it is.  Needs root; run scripts/install-deps.sh first.
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=/var/lib/vdpool-demo
MNT=/mnt/vdpool-demo
POOL=demo
VDPOOL=$PWD/build/tools/vdpool
export VDPOOLFS=$PWD/build/fs/vdpoolfs

say() { printf '\n==> %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
	echo "demo.sh: run as root (FUSE mounts with allow_other)" >&2
	exit 1
fi

say "building in build/"
if [ ! -f build/CMakeCache.txt ]; then
	cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo
fi
cmake --build build -j"$(nproc)"

if findmnt -rn -M "$MNT" >/dev/null; then
	if ! stat -f "$MNT" >/dev/null 2>&1; then
		echo "demo.sh: $MNT is a dead mount (its daemon is gone);" \
			"run: $VDPOOL umount $MNT" >&2
		exit 1
	fi
	say "$MNT is already mounted; leaving it as it is"
else
	if ! "$VDPOOL" status "$POOL" >/dev/null 2>&1; then
		say "creating pool $POOL on two sparse 20 GiB files in $DIR"
		mkdir -p "$DIR"
		for m in m0 m1; do
			[ -e "$DIR/$m.img" ] || truncate -s 20G "$DIR/$m.img"
		done
		"$VDPOOL" create --name "$POOL" "$DIR/m0.img" "$DIR/m1.img"
	else
		say "pool $POOL exists"
	fi
	say "mounting $POOL at $MNT"
	mkdir -p "$MNT"
	"$VDPOOL" mount -o allow_other,default_permissions "$POOL" "$MNT"
fi

if [ ! -e "$MNT/vm1.img" ]; then
	say "a 30 GiB thin disk, larger than either member"
	truncate -s 30G "$MNT/vm1.img"
	say "qemu-io with cache=none: write 1 MiB of 0xab, read it back"
	qemu-io -f raw -t none -c 'write -P 0xab 0 1M' \
		-c 'read -P 0xab 0 1M' "$MNT/vm1.img"
fi

say "ls -ls $MNT  (first column: KiB actually allocated)"
ls -ls "$MNT"
say "df -h $MNT  (the pool's capacity and use)"
df -h "$MNT"
say "vdpool status $MNT"
"$VDPOOL" status "$MNT"

cat <<EOF

The pool is mounted at $MNT.  Try:
  truncate -s 10G $MNT/vm2.img
  qemu-img convert -O raw SOME.qcow2 $MNT/vm3.img
To unmount (commits and waits for the daemon to exit), then check:
  $VDPOOL umount $MNT
  $VDPOOL check $POOL
EOF
