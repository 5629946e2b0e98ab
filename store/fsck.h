/* SPDX-License-Identifier: MIT */
/*
 * fsck.h - what check.c and repair.c share: reading every copy of a
 * metadata block and both superblock slots of a member, and judging each
 * one, so that `vdpool check` flags exactly what `vdpool check --repair`
 * mends.  Never included outside store/.
 */
#ifndef VDP_FSCK_H
#define VDP_FSCK_H

#include <stdbool.h>
#include <stdint.h>

#include "internal.h"

/* One copy of a metadata block. */
struct meta_copy {
	unsigned member; /* index in p->members */
	uint64_t off;	 /* byte offset on that member */
	uint64_t txid;	 /* the copy's txid, when it verified */
	int err;	 /* -errno when it could not be read at all */
	bool good;
	char why[160]; /* why it is bad */
};

struct meta_copies {
	unsigned n; /* copies of the block: 1 or 2 (0: ADDR in no chunk) */
	int best;   /* the copy served, -1 if none is good */
	struct meta_copy c[2];
};

/*
 * fsck_meta_read: reads every copy of metadata block ADDR, which its
 * parent expects to hold TREE, OWNER and LEVEL, into MC, and the good copy
 * with the highest txid into BLK (VDP_BLOCK_SIZE, 4096-aligned).  A copy
 * is bad if it cannot be read, is not a sealed block of this pool at ADDR,
 * holds another tree, owner or level, is newer than the last commit, or is
 * older than the other copy (a lost write: stale).  Never writes.  Returns
 * 0 if a copy is good, -EUCLEAN if none is or ADDR lies in no metadata
 * chunk (MC->n == 0), -ENOMEM.
 */
int fsck_meta_read(struct vdp_pool *p, uint64_t addr, uint8_t tree,
		   uint64_t owner, int level, void *blk,
		   struct meta_copies *mc);

/* Both superblock slots of a member, judged against the last commit. */
struct sb_state {
	bool good[2];	  /* a valid slot of this pool and member */
	uint64_t txid[2]; /* of the good slots */
	bool bad[2];	  /* not good, and a problem */
	bool note[2];	  /* not good, but as a commit interrupted by a
			   * crash leaves it: later commits rewrite it */
	bool stale;	  /* no bad slot, but the newest is older than the
			   * commit before the last: an old image of it */
	char why[2][120]; /* why a slot that is not good is not */
};

/*
 * fsck_super_states: reads and judges both slots of every member into
 * ST[p->nmembers].  Commit T writes slot T % 2 of member 0, 1, ... in
 * turn, so a crash can leave one torn or unwritten slot: on the members
 * from some index on, the slot T % 2 of the last commit (their other slot
 * holding T - 1), or after one more commit the other slot.  Such slots are
 * notes; other bad slots are problems (the never-written slot 0 of a pool
 * whose only commit is 1 is neither).  Never writes.  0, or -ENOMEM.
 */
int fsck_super_states(struct vdp_pool *p, struct sb_state *st);

/* Human name of tree kind TREE ("extent map", ...). */
const char *fsck_tree_name(uint8_t tree);

#endif
