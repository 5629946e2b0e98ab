/* SPDX-License-Identifier: MIT */
/*
 * backends.h - the two backends of the crash test (workload.h): the store
 * API in this process, and a real mount served by the vdpoolfs daemon.
 */
#ifndef CRASH_BACKENDS_H
#define CRASH_BACKENDS_H

#include <stdbool.h>
#include <sys/types.h>

#include "workload.h"

struct vdp_pool;

/* Sorts struct rentry by name (qsort). */
int rentry_cmp(const void *a, const void *b);

/* ---- backend_store.c ------------------------------------------------------
 */

/* The workload on pool P (not owned). */
struct backend *store_backend_new(struct vdp_pool *p);
void store_backend_free(struct backend *b);
/* crashtest --reshape: the member SPARE to add, LEAVING to remove. */
void store_backend_set_reshape(struct backend *b, const char *spare,
			       const char *leaving);

/* ---- backend_mount.c ------------------------------------------------------
 */

struct mount_cfg {
	const char *vdpool;   /* the CLI */
	const char *vdpoolfs; /* the daemon it runs ($VDPOOLFS) */
	const char *registry; /* $VDPOOL_REGISTRY */
	const char *log;      /* the daemon's stdout and stderr */
	const char *pidfile;  /* gets the daemon's pid (for a killed runner) */
	unsigned commit_ms;   /* -o commit_interval */
	bool all_async;	      /* VDPOOL_TEST_ASYNC_ABOVE=0: every read and
			       * write the store takes asynchronously */
};

/*
 * mount_backend_start: `vdpool mount -f -o commit_interval=MS POOL MNT`
 * (the daemon in the foreground, as this process's child) with LAYERS in
 * its environment as VDPOOL_TEST_LAYERS (NULL: none); returns once the
 * mount is live.  0, or -1 with WHY.
 */
int mount_backend_start(const char *pool, const char *mnt, const char *layers,
			const struct mount_cfg *c, struct backend **out,
			char *why, size_t wl);

/* Sends the daemon SIGUSR2 DELAY_US microseconds after step STEP starts. */
void mount_backend_plan_signal(struct backend *b, unsigned step,
			       unsigned delay_us);

/*
 * mount_backend_stop: a clean unmount: closes the workload's descriptors,
 * unmounts, waits for the daemon's final commit and exit.  Frees B.  0, or
 * -1 with WHY (the daemon failed or did not exit 0).
 */
int mount_backend_stop(struct backend *b, char *why, size_t wl);

/*
 * mount_backend_crash_end: after a crash run's workload: if the daemon
 * still runs (its trigger was not reached), SIGUSR2 crashes it (*AT_END
 * set); waits for it, then detaches the dead mount.  Frees B.  0 if the
 * daemon exited with the power-loss status 86, else -1 with WHY.
 */
int mount_backend_crash_end(struct backend *b, bool *at_end, char *why,
			    size_t wl);

#endif
