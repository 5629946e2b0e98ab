#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""blockcheck.py - self-describing 4 KiB blocks, written and checked.

Checks the promise "a disk never shows bytes it was not given" while
member writes and flushes fail (tests/e2e/faults-verify.sh).  Every 4 KiB
block written says which block of the disk it is and which write made it
(a sequence number unique over the run), and its body is derived from
both.  For each block the run keeps the set of contents it may hold:

  - after a write of the block that succeeded: exactly that write's;
  - after one that failed: what it could hold before, or that write's;
  - after a punched hole: zeros (a failed punch: zeros too, or as before);
  - after a clone (copy_file_range): what the source block could hold;
  - after a copy by reading and writing: what was read.

Another block's data, a torn block, zeros or a write's data that is not
in the block's set is a bug.

    blockcheck.py run STATE DISK... [--threads N] [--ops N] [--rounds N]
                  [--seed N] [--extent BYTES] [--must-sync]
        writes, punches, reads back, copies extents of the first disk to
        the second by reading and writing, and clones the first disk onto
        the second between rounds, from N threads with O_DIRECT (BYTES:
        the pool's extent size, for whole-extent I/O); checks every
        block of every disk at the end; then fsyncs each disk until one
        fsync succeeds (so everything is durable) and saves the sets in
        STATE.  Exit 1 on a bad block, or (--must-sync) when 100 fsyncs
        in a row failed; 0 otherwise.
    blockcheck.py verify STATE DISK...
        checks every block against STATE (after a remount).
"""
import ctypes
import json
import mmap
import os
import random
import struct
import sys
import threading

BS = 4096
MAGIC = b"VDPCHK01"
ZERO = 0  # the "sequence number" of a zero block
FALLOC_FL_KEEP_SIZE = 1
FALLOC_FL_PUNCH_HOLE = 2

libc = ctypes.CDLL(None, use_errno=True)
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long,
                           ctypes.c_long]


def block_bytes(disk, blk, seq):
    """The 4 KiB that write SEQ puts in block BLK (first made on DISK)."""
    head = MAGIC + struct.pack("<IIQQ", disk, 0, blk, seq)
    word = struct.pack("<QQ", seq * 0x9E3779B97F4A7C15 % (1 << 64),
                       (blk << 20 | disk) ^ 0x5555AAAA5555AAAA)
    return head + word * ((BS - len(head)) // len(word))


class Disk:
    def __init__(self, idx, path):
        self.idx = idx
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_DIRECT)
        self.nblocks = os.fstat(self.fd).st_size // BS
        # Possible contents of each block: a set of sequence numbers;
        # and every content it was ever given (if no commit got through
        # at the end, a remount may show any of those).
        self.sets = [{ZERO} for _ in range(self.nblocks)]
        self.hist = [{ZERO} for _ in range(self.nblocks)]


class Run:
    def __init__(self, disks, extent):
        self.disks = disks
        self.extent = extent
        self.lock = threading.Condition()
        self.busy = [set() for _ in disks]
        self.seq = 0
        self.bad = []
        self.counts = {}

    def next_seq(self):
        with self.lock:
            self.seq += 1
            return self.seq

    def count(self, what):
        with self.lock:
            self.counts[what] = self.counts.get(what, 0) + 1

    # Blocks [a, b) of disk d are used by one thread at a time, so the
    # order of writes to a block is the order of the calls.
    def take(self, d, a, b):
        with self.lock:
            while any(i in self.busy[d] for i in range(a, b)):
                self.lock.wait()
            self.busy[d].update(range(a, b))

    def give(self, d, a, b):
        with self.lock:
            self.busy[d].difference_update(range(a, b))
            self.lock.notify_all()

    def complain(self, msg):
        with self.lock:
            if len(self.bad) < 50:
                print("blockcheck: " + msg, file=sys.stderr, flush=True)
            self.bad.append(msg)


def check_block(run, disk, blk, data, sets=None):
    """Checks one 4 KiB block read from DISK; complains if wrong."""
    allowed = (sets or disk.sets)[blk]
    if data == bytes(BS):
        if ZERO not in allowed:
            run.complain("%s block %d (offset %d): zeros, expected write %s"
                         % (disk.path, blk, blk * BS, sorted(allowed)))
        return
    if data[:8] != MAGIC:
        run.complain("%s block %d (offset %d): neither zeros nor a block "
                     "of this test: %r" % (disk.path, blk, blk * BS,
                                           data[:32]))
        return
    odisk, _, oblk, seq = struct.unpack("<IIQQ", data[8:32])
    if oblk != blk:
        run.complain("%s block %d (offset %d) holds block %d (offset %d) "
                     "of write %d: data of another offset"
                     % (disk.path, blk, blk * BS, oblk, oblk * BS, seq))
        return
    if data != block_bytes(odisk, oblk, seq):
        run.complain("%s block %d (offset %d): torn block of write %d"
                     % (disk.path, blk, blk * BS, seq))
        return
    if seq not in allowed:
        run.complain("%s block %d (offset %d): write %d, expected one of "
                     "%s" % (disk.path, blk, blk * BS, seq,
                             sorted(allowed)[:8]))


def read_check(run, disk, a, b, buf):
    """Reads blocks [a, b) of DISK (under take) and checks each."""
    n = (b - a) * BS
    try:
        got = os.preadv(disk.fd, [memoryview(buf)[:n]], a * BS)
    except OSError as e:
        run.complain("%s: read of blocks %d-%d failed: %s"
                     % (disk.path, a, b, e.strerror))
        return
    if got != n:
        run.complain("%s: short read at block %d: %d of %d bytes"
                     % (disk.path, a, got, n))
        return
    for i in range(a, b):
        o = (i - a) * BS
        check_block(run, disk, i, bytes(buf[o:o + BS]))


def do_write(run, disk, a, nb, buf):
    seqs = []
    for i in range(nb):
        s = run.next_seq()
        seqs.append(s)
        buf[i * BS:(i + 1) * BS] = block_bytes(disk.idx, a + i, s)
    try:
        done = os.pwritev(disk.fd, [memoryview(buf)[:nb * BS]], a * BS)
        run.count("write ok" if done == nb * BS else "write short")
    except OSError:
        done = 0
        run.count("write failed")
    for i in range(nb):
        if (i + 1) * BS <= done:
            disk.sets[a + i] = {seqs[i]}
        else:
            disk.sets[a + i].add(seqs[i])
        disk.hist[a + i].add(seqs[i])


def do_punch(run, disk, a, nb):
    r = libc.fallocate(disk.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                       a * BS, nb * BS)
    run.count("punch ok" if r == 0 else "punch failed")
    for i in range(a, a + nb):
        if r == 0:
            disk.sets[i] = {ZERO}
        else:
            disk.sets[i].add(ZERO)


def do_copy(run, src, dst, a, nb, buf, rng):
    """Copies blocks [a, a + nb) of SRC to the same place of DST by reading
    and writing (as cp without reflink does: write-side sharing may turn
    it into a shared extent), whole or in 64 KiB pieces."""
    n = nb * BS
    try:
        got = os.preadv(src.fd, [memoryview(buf)[:n]], a * BS)
    except OSError as e:
        run.complain("%s: read at block %d failed: %s"
                     % (src.path, a, e.strerror))
        return
    seqs = []
    for i in range(nb):
        data = bytes(buf[i * BS:(i + 1) * BS])
        check_block(run, src, a + i, data)
        seqs.append(ZERO if data == bytes(BS) or data[:8] != MAGIC
                    else struct.unpack("<Q", data[24:32])[0])
    if got != n:
        return
    step = nb if rng.random() < 0.5 else 16
    for p in range(0, nb, step):
        try:
            piece = memoryview(buf)[p * BS:(p + step) * BS]
            done = os.pwritev(dst.fd, [piece], (a + p) * BS)
            run.count("copy write ok")
        except OSError:
            done = 0
            run.count("copy write failed")
        for i in range(p, p + step):
            if (i - p + 1) * BS <= done:
                dst.sets[a + i] = {seqs[i]}
            else:
                dst.sets[a + i].add(seqs[i])
            dst.hist[a + i].add(seqs[i])


def worker(run, nops, seed):
    rng = random.Random(seed)
    buf = mmap.mmap(-1, 2 * run.extent)  # page-aligned, for O_DIRECT
    ext_blocks = run.extent // BS
    for _ in range(nops):
        disk = rng.choice(run.disks)
        x = rng.random()
        if x < 0.50:  # 4 KiB
            nb = 1
            a = rng.randrange(disk.nblocks)
        elif x < 0.62:  # 64 KiB, aligned
            nb = 16
            a = rng.randrange(disk.nblocks // 16) * 16
        elif x < 0.67:  # a whole extent
            nb = ext_blocks
            a = rng.randrange(disk.nblocks // nb) * nb
        elif x < 0.72:  # 8 KiB across an extent boundary
            nb = 2
            a = rng.randrange(1, disk.nblocks // ext_blocks) * ext_blocks - 1
        elif x < 0.77:  # a punched hole, up to two extents
            nb = rng.choice([1, 16, ext_blocks, 2 * ext_blocks])
            a = rng.randrange(disk.nblocks - nb + 1)
        elif x < 0.80 and len(run.disks) > 1:  # a copy by data
            nb = ext_blocks
            a = rng.randrange(run.disks[0].nblocks // nb) * nb
            src, dst = run.disks[0], run.disks[1]
            run.take(src.idx, a, a + nb)
            run.take(dst.idx, a, a + nb)
            try:
                do_copy(run, src, dst, a, nb, buf, rng)
            finally:
                run.give(dst.idx, a, a + nb)
                run.give(src.idx, a, a + nb)
            continue
        elif x < 0.84:  # fdatasync / fsync
            try:
                (os.fdatasync if rng.random() < 0.7 else os.fsync)(disk.fd)
                run.count("fsync ok")
            except OSError:
                run.count("fsync failed")
            continue
        else:  # read back: a whole extent (a copy's signature) or 64 KiB
            nb = ext_blocks if rng.random() < 0.5 else 16
            a = rng.randrange(disk.nblocks // nb) * nb
            run.take(disk.idx, a, a + nb)
            try:
                read_check(run, disk, a, a + nb, buf)
            finally:
                run.give(disk.idx, a, a + nb)
            run.count("read")
            continue
        run.take(disk.idx, a, a + nb)
        try:
            if x < 0.72:
                do_write(run, disk, a, nb, buf)
            else:
                do_punch(run, disk, a, nb)
        finally:
            run.give(disk.idx, a, a + nb)


def clone(run, src, dst):
    """copy_file_range the whole of SRC over DST (no writer running)."""
    size = src.nblocks * BS
    off = 0
    while off < size:
        try:
            n = os.copy_file_range(src.fd, dst.fd, size - off, off, off)
        except OSError as e:
            run.count("clone failed")
            # The rest of DST: as before, or the source's.
            for i in range(off // BS, src.nblocks):
                dst.sets[i] |= src.sets[i]
                dst.hist[i] |= src.sets[i]
            return e.strerror
        if n == 0:
            break
        for i in range(off // BS, (off + n) // BS):
            dst.sets[i] = set(src.sets[i])
            dst.hist[i] |= src.sets[i]
        off += n
    run.count("clone ok")
    return None


def check_all(run, sets_of=None):
    buf = mmap.mmap(-1, run.extent)
    nb = run.extent // BS
    for disk in run.disks:
        sets = sets_of[disk.idx] if sets_of else None
        for a in range(0, disk.nblocks, nb):
            b = min(a + nb, disk.nblocks)
            try:
                got = os.preadv(disk.fd, [memoryview(buf)[:(b - a) * BS]],
                                a * BS)
            except OSError as e:
                run.complain("%s: read at block %d failed: %s"
                             % (disk.path, a, e.strerror))
                continue
            if got != (b - a) * BS:
                run.complain("%s: short read at block %d" % (disk.path, a))
                continue
            for i in range(a, b):
                o = (i - a) * BS
                check_block(run, disk, i, bytes(buf[o:o + BS]), sets)


def main():
    args = sys.argv[1:]
    opts = {"--threads": 12, "--ops": 2000, "--rounds": 3, "--seed": 1,
            "--extent": 1 << 20}
    pos = []
    must_sync = False
    while args:
        a = args.pop(0)
        if a == "--must-sync":
            must_sync = True
        elif a in opts:
            opts[a] = int(args.pop(0))
        else:
            pos.append(a)
    if len(pos) < 3 or pos[0] not in ("run", "verify"):
        sys.exit(__doc__)
    mode, state, paths = pos[0], pos[1], pos[2:]
    disks = [Disk(i, p) for i, p in enumerate(paths)]
    run = Run(disks, opts["--extent"])
    if mode == "verify":
        with open(state) as f:
            saved = json.load(f)
        # Synced: exactly as before the unmount; else any content each
        # block was given.
        key = "sets" if saved["synced"] else "hist"
        sets_of = [[set(s) for s in d] for d in saved[key]]
        check_all(run, sets_of)
        print("blockcheck: verified %d blocks on %d disks (%s): %d bad"
              % (sum(d.nblocks for d in disks), len(disks),
                 "as acknowledged" if saved["synced"]
                 else "no sync got through: any data of the same block",
                 len(run.bad)), file=sys.stderr)
        sys.exit(1 if run.bad else 0)

    for r in range(opts["--rounds"]):
        ts = [threading.Thread(target=worker,
                               args=(run, opts["--ops"],
                                     opts["--seed"] * 1000 + r * 100 + t))
              for t in range(opts["--threads"])]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        if len(disks) > 1 and r + 1 < opts["--rounds"]:
            err = clone(run, disks[0], disks[1])
            if err:
                print("blockcheck: clone %s -> %s failed: %s"
                      % (disks[0].path, disks[1].path, err), file=sys.stderr)
        check_all(run)
        if run.bad:
            break
    synced = True
    for disk in disks:
        for _ in range(100):
            try:
                os.fsync(disk.fd)
                break
            except OSError:
                run.count("final fsync failed")
        else:
            synced = False
    with open(state, "w") as f:
        json.dump({"synced": synced,
                   "sets": [[sorted(s) for s in d.sets] for d in disks],
                   "hist": [[sorted(s) for s in d.hist] for d in disks]},
                  f)
    print("blockcheck: %d blocks written in %d rounds of %d threads, %s; "
          "%d bad blocks%s" % (run.seq, opts["--rounds"], opts["--threads"],
                        ", ".join("%s %d" % kv
                                  for kv in sorted(run.counts.items())),
                        len(run.bad), "" if synced else
                        "; no final fsync succeeded"), file=sys.stderr)
    if must_sync and not synced:
        print("blockcheck: 100 fsyncs in a row failed: the pool no longer "
              "commits", file=sys.stderr)
    sys.exit(1 if run.bad or (must_sync and not synced) else 0)


if __name__ == "__main__":
    main()
