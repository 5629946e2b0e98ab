#!/bin/bash
# SPDX-License-Identifier: MIT
# fsx.sh - an fsx-style exerciser through the real mount (xfstests' fsx is
# not packaged in Debian): a seeded random sequence of pwrite, pread,
# truncate, fallocate (mode 0, KEEP_SIZE, PUNCH_HOLE, ZERO_RANGE), fsync
# and SEEK_DATA/SEEK_HOLE on three disks, half of them opened O_DIRECT,
# every result compared with an in-memory model, and the pool unmounted
# and mounted again between rounds.  A failure prints the seed and the
# operation; FSX_SEED=N replays it, FSX_OPS=N sets the length of a round.
# shellcheck source=tests/e2e/lib.sh
. "$(dirname "$0")/lib.sh"

vdp_create fsx 2 128M --extent-size 64K
MNT=$VDP_TMP/mnt
seed=${FSX_SEED:-$RANDOM}
ops=${FSX_OPS:-1500}
log "seed $seed, $ops operations a round"
model=$VDP_TMP/model
mkdir -p "$model"

for round in 1 2 3; do
	step "round $round"
	vdp_mount fsx "$MNT"
	python3 - "$MNT" "$model" "$((seed + round))" "$ops" <<'PYEOF' ||
import ctypes, mmap, os, random, sys

mnt, model_dir, seed, nops = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
libc = ctypes.CDLL(None, use_errno=True)
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
KEEP, PUNCH, ZERO = 0x01, 0x02, 0x10
SEEK_DATA, SEEK_HOLE = 3, 4
MAXSZ = 6 << 20
rng = random.Random(seed)
names = ["a.img", "b.img", "c.img"]

def load(name):
    try:
        return bytearray(open(os.path.join(model_dir, name), "rb").read())
    except FileNotFoundError:
        return bytearray()

model = {n: load(n) for n in names}
fds = {}
for i, n in enumerate(names):
    flags = os.O_RDWR | os.O_CREAT | (os.O_DIRECT if i % 2 == 0 else 0)
    fds[n] = (os.open(os.path.join(mnt, n), flags, 0o600), i % 2 == 0)

def fail(msg):
    sys.exit("fsx: seed %d: %s" % (seed, msg))

def aligned(n):
    buf = mmap.mmap(-1, max(4096, (n + 4095) & ~4095))
    return buf

def check_size(n, what):
    st = os.fstat(fds[n][0])
    if st.st_size != len(model[n]):
        fail("%s: %s: size %d, model %d" % (what, n, st.st_size, len(model[n])))
    if st.st_blocks * 512 > ((st.st_size + 511) & ~511):
        fail("%s: %s: st_blocks above the size" % (what, n))

def do_read(n, off, ln, what):
    fd, direct = fds[n]
    if direct:
        off &= ~4095
        ln = max(4096, ln & ~4095)
        buf = aligned(ln)
        got = os.preadv(fd, [buf], off)
        data = bytes(buf[:got])
    else:
        data = os.pread(fd, ln, off)
    want = bytes(model[n][off:off + ln])
    if data != want:
        at = next((i for i in range(min(len(data), len(want))) if data[i] != want[i]), None)
        fail("%s: read %s [%d,+%d): got %d bytes, want %d, first difference at %s"
             % (what, n, off, ln, len(data), len(want), at))

for i in range(nops):
    n = rng.choice(names)
    fd, direct = fds[n]
    m = model[n]
    op = rng.randrange(100)
    off = rng.randrange(MAXSZ - (600 << 10))
    ln = rng.randrange(1, 600 << 10)
    what = "op %d" % i
    if op < 40:
        if direct:
            off &= ~4095
            ln = max(4096, ln & ~4095)
            buf = aligned(ln)
            data = bytes(rng.getrandbits(8) for _ in range(64)) * (ln // 64)
            buf[:ln] = data
            if os.pwritev(fd, [memoryview(buf)[:ln]], off) != ln:
                fail("%s: short O_DIRECT write" % what)
        else:
            data = os.urandom(ln)
            if os.pwrite(fd, data, off) != ln:
                fail("%s: short write" % what)
        if off > len(m):
            m.extend(bytes(off - len(m)))
        m[off:off + ln] = data
    elif op < 55:
        do_read(n, off, ln, what)
    elif op < 63:
        if libc.fallocate(fd, PUNCH | KEEP, off, ln) != 0:
            fail("%s: punch: %s" % (what, os.strerror(ctypes.get_errno())))
        end = min(off + ln, len(m))
        if off < end:
            m[off:end] = bytes(end - off)
    elif op < 69:
        keep = rng.random() < 0.5
        if libc.fallocate(fd, ZERO | (KEEP if keep else 0), off, ln) != 0:
            fail("%s: zero range: %s" % (what, os.strerror(ctypes.get_errno())))
        end = off + ln if not keep else min(off + ln, len(m))
        if end > len(m):
            m.extend(bytes(end - len(m)))
        if off < end:
            m[off:end] = bytes(end - off)
    elif op < 74:
        keep = rng.random() < 0.5
        if libc.fallocate(fd, KEEP if keep else 0, off, ln) != 0:
            fail("%s: fallocate: %s" % (what, os.strerror(ctypes.get_errno())))
        if not keep and off + ln > len(m):
            m.extend(bytes(off + ln - len(m)))
    elif op < 82:
        size = rng.randrange(MAXSZ)
        os.ftruncate(fd, size)
        if size < len(m):
            del m[size:]
        else:
            m.extend(bytes(size - len(m)))
    elif op < 88:
        os.fsync(fd)
    elif op < 94:
        # Every range SEEK_HOLE calls a hole reads as zeros in the model,
        # and SEEK_DATA never skips data.
        pos = rng.randrange(len(m)) if m else 0
        if pos < len(m):
            h = os.lseek(fd, pos, SEEK_HOLE)
            if h < pos or h > len(m):
                fail("%s: SEEK_HOLE from %d gave %d (size %d)" % (what, pos, h, len(m)))
            try:
                d = os.lseek(fd, h, SEEK_DATA)
            except OSError:
                d = len(m)
            if any(m[h:d]):
                fail("%s: [%d,%d) reported as a hole holds data" % (what, h, d))
            try:
                d0 = os.lseek(fd, pos, SEEK_DATA)
            except OSError:
                d0 = len(m)
            if any(m[pos:d0]):
                fail("%s: SEEK_DATA from %d skipped data before %d" % (what, pos, d0))
    else:
        check_size(n, what)
        do_read(n, 0, len(m) + 4096, what)

for n in names:
    check_size(n, "end")
    do_read(n, 0, len(model[n]) + 4096, "end")
    os.fsync(fds[n][0])
    os.close(fds[n][0])
    open(os.path.join(model_dir, n), "wb").write(model[n])
print("fsx: %d operations match the model" % nops)
PYEOF
		die "fsx found a difference (replay: FSX_SEED=$seed)"
	vdp_umount "$MNT"
	vdp_check fsx
done
log "ok: 3 rounds, remounted in between, seed $seed"
