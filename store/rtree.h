/* SPDX-License-Identifier: MIT */
/*
 * rtree.h - copy-on-write radix trees of metadata blocks.
 *
 * Every persistent map of the pool is one: the inode table, each disk's
 * extent map, the extent reference counts, and the byte blobs that hold
 * directories and xattrs.  A tree maps a u64 key to a fixed-size value;
 * leaves hold VDP_PAYLOAD / vsize values, interior nodes VDP_FANOUT child
 * addresses.  A tree lives wholly in memory once loaded; a commit writes
 * each node changed since the last commit to a new block (never over a
 * block the last commit references) and frees the old one, so commit cost
 * is proportional to what changed.
 *
 * Locking is the caller's: the pool's meta_lock for changes and commits.
 * rtree_lookup only reads node contents, which commit never changes, so it
 * may run under a lock that excludes changes to this tree only.
 */
#ifndef VDP_RTREE_H
#define VDP_RTREE_H

#include <stdbool.h>
#include <stdint.h>

#include "format.h"

struct vdp_pool;

struct rnode {
	uint64_t addr; /* block of the last commit that wrote it, 0 = none */
	bool dirty;    /* changed since that commit */
	uint8_t level; /* 0 = leaf */
	union {
		struct rnode *kids[VDP_FANOUT];
		uint8_t data[VDP_PAYLOAD];
	};
};

struct rtree {
	struct rnode *root;
	unsigned height; /* levels; 0 = empty */
	unsigned vsize;
	unsigned per_leaf;
	uint8_t tree; /* enum vdp_tree */
	uint64_t owner;
};

void rtree_init(struct rtree *t, uint8_t tree, unsigned vsize, uint64_t owner);

/* The value slot of KEY, or NULL where no leaf exists (value all zeros). */
void *rtree_lookup(const struct rtree *t, uint64_t key);

/* The value slot of KEY for writing: creates the leaf and grows the tree
 * as needed and marks the path dirty.  NULL only on ENOMEM. */
void *rtree_slot(struct rtree *t, uint64_t key);

/* The first leaf, in key order, that holds keys >= KEY or lies after KEY;
 * *BASE is its first key.  NULL when there is none. */
struct rnode *rtree_leaf_from(const struct rtree *t, uint64_t key,
			      uint64_t *base);

/* Calls FN for every node (ADDR of its last commit, its level) and, for
 * leaves, with its DATA and first key BASE.  Stops at FN's non-zero. */
typedef int (*rtree_visit_fn)(void *ctx, const struct rnode *n, uint64_t base);
int rtree_visit(const struct rtree *t, rtree_visit_fn fn, void *ctx);

/* Frees the memory of the tree; no effect on disk. */
void rtree_destroy(struct rtree *t);

/* Loads the whole tree at R from disk, verifying every block, and marks
 * each block used in the metadata allocator (mark_meta_used): a block
 * already marked, by this tree or another, is an error (-EUCLEAN). */
int rtree_load(struct vdp_pool *p, struct rtree *t, const struct vdp_droot *r);

/* Writes every dirty node to a new block (queued in the open commit) and
 * sets *OUT to the new root.  Under meta_lock. */
int rtree_commit(struct vdp_pool *p, struct rtree *t, struct vdp_droot *out);

/* Frees every block of the tree (reusable after the next commit) and its
 * memory; the tree is empty afterwards. */
void rtree_release(struct vdp_pool *p, struct rtree *t);

/* True if the tree changed since its last commit. */
bool rtree_dirty(const struct rtree *t);

#endif
