/* SPDX-License-Identifier: MIT */
/*
 * rtree.c - copy-on-write radix trees of metadata blocks (see rtree.h).
 *
 * Must never write over a block that the last durable commit references:
 * a changed node always gets a fresh block at commit, and its old block is
 * only freed into the open transaction's pending list.
 */
#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block.h"
#include "internal.h"
#include "rtree.h"

void rtree_init(struct rtree *t, uint8_t tree, unsigned vsize, uint64_t owner)
{
	memset(t, 0, sizeof(*t));
	t->tree = tree;
	t->vsize = vsize;
	t->per_leaf = VDP_PAYLOAD / vsize;
	t->owner = owner;
}

/* Keys covered by one node of LEVEL, saturating at UINT64_MAX. */
static uint64_t span(const struct rtree *t, unsigned level)
{
	uint64_t s = t->per_leaf;

	while (level-- > 0) {
		if (s > UINT64_MAX / VDP_FANOUT)
			return UINT64_MAX;
		s *= VDP_FANOUT;
	}
	return s;
}

/* Keys the tree can hold at its present height (UINT64_MAX: all).
 * The root of a tree of height H is a node of level H - 1. */
static uint64_t capacity(const struct rtree *t)
{
	return span(t, t->height - 1);
}

static struct rnode *node_new(uint8_t level)
{
	struct rnode *n = calloc(1, sizeof(*n));

	if (n) {
		n->level = level;
		n->dirty = true;
	}
	return n;
}

void *rtree_lookup(const struct rtree *t, uint64_t key)
{
	struct rnode *n = t->root;

	if (!n || key >= capacity(t))
		return NULL;
	while (n->level > 0) {
		uint64_t s = span(t, n->level - 1);

		n = n->kids[key / s];
		if (!n)
			return NULL;
		key %= s;
	}
	return n->data + key * t->vsize;
}

void *rtree_slot(struct rtree *t, uint64_t key)
{
	struct rnode *n;

	if (!t->root) {
		t->root = node_new(0);
		if (!t->root)
			return NULL;
		t->height = 1;
	}
	while (key >= capacity(t) && capacity(t) != UINT64_MAX) {
		struct rnode *r = node_new((uint8_t)t->height);

		if (!r)
			return NULL;
		r->kids[0] = t->root;
		t->root = r;
		t->height++;
	}
	n = t->root;
	n->dirty = true;
	while (n->level > 0) {
		uint64_t s = span(t, n->level - 1);
		struct rnode **k = &n->kids[key / s];

		if (!*k) {
			*k = node_new(n->level - 1);
			if (!*k)
				return NULL;
		}
		n = *k;
		n->dirty = true;
		key %= s;
	}
	return n->data + key * t->vsize;
}

static struct rnode *leaf_from(const struct rtree *t, struct rnode *n,
			       uint64_t nbase, uint64_t key, uint64_t *base)
{
	if (n->level == 0) {
		*base = nbase;
		return n;
	}
	uint64_t s = span(t, n->level - 1);
	uint64_t i = key > nbase ? (key - nbase) / s : 0;

	for (; i < VDP_FANOUT; i++) {
		struct rnode *l;

		if (!n->kids[i])
			continue;
		l = leaf_from(t, n->kids[i], nbase + i * s, key, base);
		if (l)
			return l;
	}
	return NULL;
}

struct rnode *rtree_leaf_from(const struct rtree *t, uint64_t key,
			      uint64_t *base)
{
	if (!t->root)
		return NULL;
	/* A leaf holding KEY qualifies, so search from KEY's leaf start. */
	key -= key % t->per_leaf;
	if (key >= capacity(t))
		return NULL;
	return leaf_from(t, t->root, 0, key, base);
}

static int visit(const struct rtree *t, const struct rnode *n, uint64_t base,
		 rtree_visit_fn fn, void *ctx)
{
	int r = fn(ctx, n, base);

	if (r || n->level == 0)
		return r;
	uint64_t s = span(t, n->level - 1);

	for (unsigned i = 0; i < VDP_FANOUT && r == 0; i++)
		if (n->kids[i])
			r = visit(t, n->kids[i], base + i * s, fn, ctx);
	return r;
}

int rtree_visit(const struct rtree *t, rtree_visit_fn fn, void *ctx)
{
	return t->root ? visit(t, t->root, 0, fn, ctx) : 0;
}

static void node_free(struct rnode *n)
{
	if (n->level > 0)
		for (unsigned i = 0; i < VDP_FANOUT; i++)
			if (n->kids[i])
				node_free(n->kids[i]);
	free(n);
}

void rtree_destroy(struct rtree *t)
{
	if (t->root)
		node_free(t->root);
	t->root = NULL;
	t->height = 0;
}

static int load_node(struct vdp_pool *p, struct rtree *t, uint64_t addr,
		     int level, struct rnode **out)
{
	struct rnode *n = node_new((uint8_t)level);
	uint8_t *blk = NULL;
	int r;

	if (!n || posix_memalign((void **)&blk, 4096, VDP_BLOCK_SIZE) != 0) {
		free(n);
		return -ENOMEM;
	}
	/* Marked before it is read: a block named twice (a subtree shared
	 * by forged or damaged nodes) stops the load here, where loading
	 * first and marking later could take 504^height nodes of memory. */
	r = mark_meta_used(p, addr);
	if (r == 0)
		r = pool_meta_read(p, addr, blk, t->tree, t->owner, level);
	if (r < 0)
		goto err;
	n->addr = addr;
	n->dirty = false;
	if (level == 0) {
		memcpy(n->data, blk + sizeof(struct vdp_bhdr), VDP_PAYLOAD);
	} else {
		const uint64_t *a =
			(const uint64_t *)(blk + sizeof(struct vdp_bhdr));

		for (unsigned i = 0; i < VDP_FANOUT; i++) {
			uint64_t c = le64toh(a[i]);

			if (!c)
				continue;
			r = load_node(p, t, c, level - 1, &n->kids[i]);
			if (r < 0)
				goto err;
		}
	}
	free(blk);
	*out = n;
	return 0;

err:
	free(blk);
	node_free(n);
	return r;
}

int rtree_load(struct vdp_pool *p, struct rtree *t, const struct vdp_droot *r)
{
	int e;

	rtree_destroy(t);
	if (r->addr == 0)
		return 0;
	if (r->height == 0 || r->height > 12) {
		vdp_set_error("tree root at metadata block %llu has height %u",
			      (unsigned long long)r->addr, r->height);
		return -EUCLEAN;
	}
	e = load_node(p, t, r->addr, r->height - 1, &t->root);
	if (e == 0)
		t->height = r->height;
	return e;
}

static int commit_node(struct vdp_pool *p, struct rtree *t, struct rnode *n)
{
	struct vdp_bhdr *h;
	uint8_t *blk;
	int r;

	if (!n->dirty)
		return 0;
	if (n->level > 0)
		for (unsigned i = 0; i < VDP_FANOUT; i++)
			if (n->kids[i] &&
			    (r = commit_node(p, t, n->kids[i])) < 0)
				return r;
	if (posix_memalign((void **)&blk, 4096, VDP_BLOCK_SIZE) != 0)
		return -ENOMEM;
	memset(blk, 0, sizeof(*h));
	if (n->level == 0) {
		memcpy(blk + sizeof(*h), n->data, VDP_PAYLOAD);
	} else {
		uint64_t *a = (uint64_t *)(blk + sizeof(*h));

		for (unsigned i = 0; i < VDP_FANOUT; i++)
			a[i] = htole64(n->kids[i] ? n->kids[i]->addr : 0);
	}
	if (n->addr)
		free_meta(p, n->addr);
	r = alloc_meta(p, &n->addr);
	if (r < 0) {
		n->addr = 0;
		free(blk);
		return r;
	}
	h = (struct vdp_bhdr *)blk;
	h->magic = htole64(VDP_MAGIC_META);
	h->blocknr = htole64(n->addr);
	h->txid = htole64(p->build_txid);
	memcpy(h->pool_uuid, p->uuid, 16);
	h->owner = htole64(t->owner);
	h->type = htole16(n->level ? VDP_BT_NODE : VDP_BT_LEAF);
	h->tree = t->tree;
	h->level = n->level;
	vdp_block_seal(blk, VDP_BLOCK_SIZE, p->seed);
	r = commit_queue(p, n->addr, blk);
	if (r < 0)
		return r;
	n->dirty = false;
	return 0;
}

int rtree_commit(struct vdp_pool *p, struct rtree *t, struct vdp_droot *out)
{
	int r = 0;

	if (t->root)
		r = commit_node(p, t, t->root);
	memset(out, 0, sizeof(*out));
	if (r == 0 && t->root) {
		out->addr = t->root->addr;
		out->height = (uint8_t)t->height;
	}
	return r;
}

static void node_release(struct vdp_pool *p, struct rnode *n)
{
	if (n->level > 0)
		for (unsigned i = 0; i < VDP_FANOUT; i++)
			if (n->kids[i])
				node_release(p, n->kids[i]);
	if (n->addr)
		free_meta(p, n->addr);
	free(n);
}

void rtree_release(struct vdp_pool *p, struct rtree *t)
{
	if (t->root)
		node_release(p, t->root);
	t->root = NULL;
	t->height = 0;
}

bool rtree_dirty(const struct rtree *t)
{
	return t->root && t->root->dirty;
}
