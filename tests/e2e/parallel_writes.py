#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""parallel_writes.py FILE WAITING: creates FILE (O_CREAT | O_EXCL), fills
16 MiB, then writes 4 KiB blocks from 8 threads through that one
descriptor while it reads the FUSE connection's WAITING count (requests
the daemon holds); prints the most seen.  Above 1 only when the kernel
lets direct writes to one file run in parallel (FOPEN_PARALLEL_DIRECT_WRITES
in the create reply); otherwise it runs them one at a time."""
import os, sys, threading, mmap
path, waiting = sys.argv[1], sys.argv[2]
fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
os.ftruncate(fd, 16 << 20)
big = mmap.mmap(-1, 1 << 20)
for off in range(0, 16 << 20, 1 << 20):
    os.pwrite(fd, big, off)
buf = mmap.mmap(-1, 4096)
stop = False
def writer(k):
    i = 0
    while not stop:
        os.pwrite(fd, buf, ((k * 7919 + i * 13) % 4096) * 4096)
        i += 1
ts = [threading.Thread(target=writer, args=(k,)) for k in range(8)]
for t in ts:
    t.start()
most = 0
for _ in range(5000):
    most = max(most, int(open(waiting).read()))
    if most >= 2:
        break
stop = True
for t in ts:
    t.join()
print(most)
sys.exit(0 if most >= 2 else 1)
