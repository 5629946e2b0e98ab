/* SPDX-License-Identifier: MIT */
/*
 * workload.h - the crash test's seeded workload, and the backend interface
 * it drives: the same sequence of operations runs in-process on the store
 * API (backend_store.c) or through POSIX calls on a real mount
 * (backend_mount.c).
 *
 * Every operation is told to the oracle (oracle.h) together with what the
 * pool may hold if the power goes at any moment of it; the workload stops
 * at the first operation that fails because the power went.
 */
#ifndef CRASH_WORKLOAD_H
#define CRASH_WORKLOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "oracle.h"

struct backend;

/* One write of a batch (pwrite_batch): RES is what it returned. */
struct wreq {
	const void *buf; /* 4 KiB aligned */
	size_t len;
	uint64_t off;
	ssize_t res;
};
#define BATCH_MAX 16

/* Writes issued at once, none overlapping another, and with SYNC an
 * fdatasync of disk SYNC_H issued while they are in flight (SYNC_RES). */
struct wbatch {
	struct wreq q[BATCH_MAX];
	size_t n;
	bool sync;
	int64_t sync_h;
	int sync_res;
};

/*
 * A backend: the pool under test, one point at a time.  Data calls take a
 * handle H from create (the store: an inode with a lookup reference the
 * workload holds; the mount: an open descriptor).  Every call returns 0 (or
 * a count) or -errno, never retries, and never looks at the oracle.
 */
struct backend_ops {
	const char *name;
	/* Creates NAME in the root directory (exclusive) and opens it. */
	int (*create)(struct backend *b, const char *name, int64_t *h,
		      uint64_t *ino);
	/* Drops H; an unlinked disk is freed once dropped. */
	int (*close)(struct backend *b, int64_t h);
	int (*unlink)(struct backend *b, const char *name);
	/* rename(2) FROM to TO in the root, replacing TO. */
	int (*rename)(struct backend *b, const char *from, const char *to);
	/* Opens NAME for reading (verification). */
	int (*open)(struct backend *b, const char *name, int64_t *h);
	ssize_t (*pwrite)(struct backend *b, int64_t h, const void *buf,
			  size_t len, uint64_t off);
	ssize_t (*pread)(struct backend *b, int64_t h, void *buf, size_t len,
			 uint64_t off);
	/* The writes of WB to H at once: all are in flight together (and
	 * WB's fdatasync comes while they are), and each one's result is in
	 * its RES. */
	void (*pwrite_batch)(struct backend *b, int64_t h, struct wbatch *wb);
	int (*truncate)(struct backend *b, int64_t h, uint64_t size);
	int (*fallocate)(struct backend *b, int64_t h, int mode, uint64_t off,
			 uint64_t len);
	/* copy_file_range(2) of LEN bytes at OFF_IN of IN to OFF_OUT of
	 * OUT (the store: vdp_copy_range): the bytes copied. */
	ssize_t (*copy)(struct backend *b, int64_t in, uint64_t off_in,
			int64_t out, uint64_t off_out, size_t len);
	/* fsync(2) or fdatasync(2) of H; H < 0: of the root directory. */
	int (*fsync)(struct backend *b, int64_t h, bool datasync);
	int (*size)(struct backend *b, int64_t h, uint64_t *size);
	/* The root directory's files, sorted by name (malloc'ed). */
	int (*list)(struct backend *b, struct rentry **e, size_t *n);
	/* A commit nobody waits for, as the daemon's commit timer makes
	 * (the store; NULL where a real timer runs). */
	int (*commit)(struct backend *b);
	/* True once the power loss happened; ERR is the error the last call
	 * returned (the mount waits a moment for the daemon to go). */
	bool (*crashed)(struct backend *b, int err);
	/* Called before each operation (the mount's signal trigger). */
	void (*tick)(struct backend *b, unsigned step);
	/* Changes the pool's members (crashtest --reshape; NULL where not
	 * supported): ADD adds the spare member, else the second member is
	 * removed, its extents moved, and the call returns when it is gone.
	 * The disks' contents do not change.  -ENOSPC: it did not fit. */
	int (*reshape)(struct backend *b, bool add);
};

struct backend {
	const struct backend_ops *ops;
};

enum wl_result {
	WL_DONE,    /* every step ran */
	WL_CRASHED, /* stopped at the power loss */
	WL_FAILED,  /* a live check failed (FAIL has the line) */
};

/* Set by the workload: what it did, for --verbose. */
struct wl_stats {
	unsigned steps, writes, batches, batch_syncs, syncs, enospc,
		full_writes, copies;
	unsigned crash_step; /* the step that saw the power loss */
	const char *crash_op;
};

/* crashtest --reshape: the workload adds a member a third of the way
 * through its steps and removes one at two thirds (backends with
 * reshape only).  Set before workload_run. */
extern bool workload_reshape;

/*
 * workload_run: runs the workload of SEED on B, telling O.  LIVE_CHECKS:
 * compare sizes with the oracle after each operation (no crash expected
 * while they run).  TRACE: one line per operation, or NULL.  Returns a
 * wl_result; on WL_FAILED, FAIL holds one line.
 */
enum wl_result workload_run(uint64_t seed, struct backend *b, struct oracle *o,
			    bool live_checks, FILE *trace, struct wl_stats *st,
			    char *fail, size_t fl);

/*
 * verify_pool: the oracle's checks on B's current contents: the namespace
 * is one of the allowed states (LIVE: the current one) and every visible
 * sector of every disk holds one of its allowed values.  Returns the index
 * of the namespace state found (0: the synced one), or -1 with the first
 * mismatch in FAIL (and, with TRACE, every mismatch there).
 */
int verify_pool(struct backend *b, const struct oracle *o, bool live,
		FILE *trace, char *fail, size_t fl);

#endif
