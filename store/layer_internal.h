/* SPDX-License-Identifier: MIT */
/*
 * layer_internal.h - the seam between the test layers' spec parser and
 * registry (layer.c) and the layers themselves (layer_fault.c,
 * layer_powerloss.c).  Never included outside store/.
 */
#ifndef VDP_LAYER_INTERNAL_H
#define VDP_LAYER_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "member.h"

enum layer_kind { LAYER_FAULT, LAYER_POWERLOSS };

/* The member operations a fault layer can fail (op=...). */
enum {
	FAULT_READ = 1 << 0,
	FAULT_WRITE = 1 << 1,
	FAULT_FLUSH = 1 << 2,
	FAULT_ZERO = 1 << 3,
	FAULT_DISCARD = 1 << 4,
	FAULT_ALL = (1 << 5) - 1,
};

struct fault_cfg {
	unsigned ops;	   /* FAULT_* bits */
	uint64_t nth;	   /* 0: not given */
	double p;	   /* < 0: not given */
	int err;	   /* positive errno */
	bool persist;	   /* once failed, always failing */
	unsigned delay_ms; /* 0: fail; else wait that long and go ahead */
	uint64_t seed;	   /* mixed with the member's index */
	uint64_t index;	   /* set per member by layer.c: n-th wrapped by this */
	uint64_t from, to; /* range=: only I/O touching [from, to); to 0 =
			    * no range (flushes are never limited by it) */
};

enum pl_keep { KEEP_NONE, KEEP_ALL, KEEP_PREFIX, KEEP_RANDOM, KEEP_TORN };

struct powerloss_cfg {
	uint64_t after_writes;	/* 0: no such trigger */
	uint64_t after_flushes; /* 0: no such trigger */
	int signo;		/* 0: no signal trigger */
	bool manual;		/* only vdp_powerloss_now() */
	enum pl_keep keep;
	uint64_t seed;
	bool exit; /* then=exit: _exit(86) after applying */
};

struct layer_cfg {
	enum layer_kind kind;
	char *only; /* wrap only members whose path holds this; NULL: all */
	uint64_t nwrapped; /* members wrapped so far (fault seeds) */
	union {
		struct fault_cfg fault;
		struct powerloss_cfg pl;
	};
};

/*
 * fault_wrap / powerloss_wrap: a new member that wraps INNER and owns it
 * (its close closes INNER).  It has INNER's path, size, alignment and kind.
 * Returns 0 or -ENOMEM; INNER is untouched on failure.
 */
int fault_wrap(const struct fault_cfg *c, struct vdp_member *inner,
	       struct vdp_member **out);
int powerloss_wrap(struct vdp_member *inner, struct vdp_member **out);

/* The layers' submit: the I/O goes through their pread or pwrite when the
 * thread next polls (aio_defer), so that the pool's asynchronous path meets
 * their faults and power losses too, at the latest moment a device could
 * have taken it. */
int layer_submit(struct vdp_member *m, struct vdp_mio *io);

/*
 * powerloss_configure: resets the power-loss domain (counters, crashed
 * flag) and sets its triggers and keep mode from C (NULL: no triggers, the
 * defaults for vdp_powerloss_now()).  Installs or removes the signal
 * trigger.  Returns 0 or -errno with vdp_last_error() set.
 */
int powerloss_configure(const struct powerloss_cfg *c);

/*
 * layers_wrap: wraps *M, a member just opened by vdp_member_open(), in the
 * layers of the current spec (innermost first) and replaces *M with the
 * outermost.  On failure closes *M (and what wraps it so far), sets
 * vdp_last_error() and returns -errno.
 */
int layers_wrap(struct vdp_member **m);

/* splitmix64: the layers' small seeded PRNG, deterministic per seed. */
static inline uint64_t layer_rand(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

#endif
