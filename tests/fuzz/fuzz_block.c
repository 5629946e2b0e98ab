/* SPDX-License-Identifier: MIT */
/*
 * fuzz_block.c - libFuzzer target: bytes -> metadata blocks -> a radix
 * tree, through the path open takes: pool_meta_read (vdp_block_verify and
 * the header checks) and rtree_load (node decode), then the walks every
 * later user of a tree makes (rtree_visit with the open-time marking,
 * rtree_leaf_from, rtree_lookup).
 *
 * Input: 3 header bytes, then up to MAX_BLOCKS blocks of 4096 bytes (the
 * last one may be short; zeros follow).
 *   byte 0: bit 0 reseal every block with the pool's checksum (the fuzzer
 *           cannot forge XXH3), bits 1-2 which tree (inodes, extent map,
 *           reference counts, blob);
 *   byte 1: the root's height as the superblock or inode would give it;
 *   byte 2: the tree's owner (inode number).
 * Each block sits at the logical address its header names (if free and
 * below NBLOCKS; else at its position + 1), so blocks taken from a real
 * pool keep their child pointers.  The first block is the root; the pool's
 * UUID and last txid are the root's.  Blocks not in the input read as
 * zeros.
 */
#include <endian.h>
#include <string.h>

#include "block.h"
#include "fuzz.h"

#define MAX_BLOCKS 12
#define NBLOCKS 4096 /* the metadata space */

enum { F_RESEAL = 1 };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct walk {
	struct vdp_pool *p;
	struct rtree *t;
	unsigned nodes;
};

/* Each node was marked taken by the load; open then marks the extents
 * that reference counts name. */
static int mark(void *ctx, const struct rnode *n, uint64_t base)
{
	struct walk *w = ctx;
	int r = 0;

	w->nodes++;
	FUZZ_ASSERT(n->addr > 0 && n->addr < NBLOCKS);
	FUZZ_ASSERT(w->p->meta_used[n->addr / 64] >> (n->addr % 64) & 1);
	if (n->level == 0 && w->t->tree == VDP_TREE_REFC) {
		const uint32_t *c = (const uint32_t *)n->data;

		for (unsigned i = 0; i < w->t->per_leaf && r == 0; i++)
			if (c[i])
				r = mark_extent_used(w->p, base + i);
	}
	return r;
}

/* Every leaf in key order, and every value through rtree_lookup. */
static void walk_leaves(const struct rtree *t)
{
	uint64_t key = 0, base, prev = 0;
	struct rnode *leaf;
	unsigned n = 0;

	while ((leaf = rtree_leaf_from(t, key, &base))) {
		FUZZ_ASSERT(leaf->level == 0);
		FUZZ_ASSERT(n == 0 || base > prev);
		FUZZ_ASSERT(base % t->per_leaf == 0);
		for (unsigned i = 0; i < t->per_leaf; i++)
			FUZZ_ASSERT(rtree_lookup(t, base + i) ==
				    leaf->data + i * t->vsize);
		prev = base;
		n++;
		key = base + t->per_leaf;
		if (key < base)
			break;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t trees[4] = {VDP_TREE_INODES, VDP_TREE_MAP,
					 VDP_TREE_REFC, VDP_TREE_BLOB};
	static const unsigned vsizes[4] = {sizeof(struct vdp_dinode), 8, 4,
					   VDP_PAYLOAD};
	static uint8_t *blk;
	uint64_t addrs[MAX_BLOCKS];
	struct vdp_member *m;
	struct vdp_droot root;
	struct vdp_pool *p;
	struct rtree t;
	struct vdp_bhdr h0;
	unsigned kind, nb;
	uint8_t flags;

	if (size < 3 + sizeof(struct vdp_bhdr))
		return 0;
	if (!blk && posix_memalign((void **)&blk, 4096, VDP_BLOCK_SIZE) != 0)
		abort();
	flags = data[0];
	kind = (flags >> 1) & 3;
	memset(&root, 0, sizeof(root));
	root.height = data[1];
	rtree_init(&t, trees[kind], vsizes[kind], data[2]);
	data += 3, size -= 3;
	memcpy(&h0, data, sizeof(h0));

	m = fuzz_mem_new(0);
	if (!m)
		abort();
	p = fuzz_pool_new(m, h0.pool_uuid, le64toh(h0.txid), NBLOCKS, true);
	if (!p)
		abort();
	nb = (unsigned)((size + VDP_BLOCK_SIZE - 1) / VDP_BLOCK_SIZE);
	if (nb > MAX_BLOCKS)
		nb = MAX_BLOCKS;
	for (unsigned i = 0; i < nb; i++) {
		size_t len = size - (size_t)i * VDP_BLOCK_SIZE;
		uint64_t a;

		if (len > VDP_BLOCK_SIZE)
			len = VDP_BLOCK_SIZE;
		memset(blk, 0, VDP_BLOCK_SIZE);
		memcpy(blk, data + (size_t)i * VDP_BLOCK_SIZE, len);
		a = le64toh(((struct vdp_bhdr *)blk)->blocknr);
		for (unsigned j = 0; j < i; j++)
			if (addrs[j] == a)
				a = 0;
		if (a == 0 || a >= NBLOCKS)
			a = i + 1;
		for (unsigned j = 0; j < i; j++)
			if (addrs[j] == a)
				a = NBLOCKS - 1 - i; /* rare: any free spot */
		addrs[i] = a;
		if (flags & F_RESEAL)
			vdp_block_seal(blk, VDP_BLOCK_SIZE, p->seed);
		if (fuzz_mem_put(m, a * VDP_BLOCK_SIZE, blk, VDP_BLOCK_SIZE) <
		    0)
			abort();
	}
	root.addr = addrs[0];

	if (rtree_load(p, &t, &root) == 0) {
		struct walk w = {.p = p, .t = &t};

		FUZZ_ASSERT(t.root && t.height == root.height);
		(void)rtree_visit(&t, mark, &w);
		/* Each block loaded once: no node shared. */
		FUZZ_ASSERT(w.nodes <= nb);
		walk_leaves(&t);
	} else {
		FUZZ_ASSERT(t.root == NULL);
	}
	rtree_destroy(&t);
	pool_free(p);
	return 0;
}
