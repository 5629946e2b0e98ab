#!/bin/bash
# SPDX-License-Identifier: MIT
#
# install-deps.sh - install everything needed to build vdpool and run its
# whole test suite on Debian 12 (bookworm), as root.
#
# Idempotent: when every package is already installed it does nothing and
# needs no network.  Never removes or upgrades anything else.
set -euo pipefail

PACKAGES=(
	# build
	build-essential cmake pkg-config git
	libfuse3-dev fuse3 libxxhash-dev libblkid-dev liburing-dev
	libdevmapper-dev libiscsi-dev
	# clang-format check; gcc's libasan/libubsan come with build-essential
	clang clang-format
	# fuzzing (tests/fuzz/run.sh): libFuzzer and clang's sanitizer
	# runtimes (only recommended by clang-14), llvm-symbolizer for stacks
	libclang-rt-14-dev llvm-14
	# benchmark (tests/bench/bench.sh): qemu-storage-daemon, nbdfuse, nbdkit
	qemu-system-common libnbd-bin nbdkit
	# end-to-end tests
	qemu-utils fio e2fsprogs util-linux mount coreutils diffutils xxd
	attr psmisc procps python3 jq
	# LVM members (tests/e2e/lvm.sh): pvcreate, vgcreate, lvcreate, dmsetup
	lvm2
	# tests/e2e/guest.sh boots a real guest: QEMU, Debian's kernel (the
	# newest /boot/vmlinuz-* and its modules) and busybox-static, which
	# the test packs with cpio into its initramfs
	qemu-system-x86 linux-image-amd64 busybox-static cpio
	# the copies that write-side sharing turns into clones (e2e.cp)
	rsync
	# iSCSI members (tests/e2e/iscsi*.sh): a target to test against; ss
	tgt iproute2
)

missing=()
for p in "${PACKAGES[@]}"; do
	status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
	[ "$status" = "install ok installed" ] || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
	echo "install-deps: all ${#PACKAGES[@]} packages already installed"
	exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps: run as root to install: ${missing[*]}" >&2
	exit 1
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq </dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null \
	>/dev/null
echo "install-deps: done"
