/* SPDX-License-Identifier: MIT */
/*
 * alloc.c - where new extents and metadata blocks come from, and the
 * extent reference counts.
 *
 * In memory, a bit per data extent and per metadata block says "taken".
 * The bits are rebuilt at open from the trees (the refcount tree for
 * extents, the set of reachable blocks for metadata), so they are never
 * written to disk and cannot disagree with it.
 *
 * The rule that keeps old data and old metadata safe: something freed in
 * the open transaction stays taken until that transaction is durable
 * (release_pending), because the last commit on disk may still reference
 * it.  So a crash can never show one disk's freed extent, already handed to
 * another disk, through the first disk's committed map.
 *
 * Placement policy: a new extent goes to the active member with the most
 * free extents (ties: lowest index), next-fit inside the member.  So a
 * member just added takes every new extent until it has no more free
 * extents than the others, and from then on the members fill evenly in
 * free space (docs/architecture.md, "Growing and shrinking").  A LEAVING
 * member takes none.  All under meta_lock.
 */
#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define BIT_GET(b, i) (((b)[(i) / 64] >> ((i) % 64)) & 1)
#define BIT_SET(b, i) ((b)[(i) / 64] |= 1ull << ((i) % 64))
#define BIT_CLR(b, i) ((b)[(i) / 64] &= ~(1ull << ((i) % 64)))

int u64vec_push(struct u64vec *a, uint64_t x)
{
	if (a->n == a->cap) {
		size_t cap = a->cap ? a->cap * 2 : 64;
		uint64_t *v = realloc(a->v, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		a->v = v;
		a->cap = cap;
	}
	a->v[a->n++] = x;
	return 0;
}

int alloc_init(struct vdp_pool *p)
{
	p->meta_used = calloc((p->meta_blocks + 63) / 64, 8);
	if (!p->meta_used) {
		vdp_set_error("pool %s: no memory for the map of %llu "
			      "metadata blocks",
			      p->name, (unsigned long long)p->meta_blocks);
		return -ENOMEM;
	}
	BIT_SET(p->meta_used, 0); /* address 0 means "none" */
	p->meta_nfree = p->meta_blocks - 1;
	p->meta_cursor = 1;
	for (unsigned i = 0; i < p->nmembers; i++) {
		struct pmember *pm = &p->members[i];

		pm->used = calloc((pm->d.nextents + 63) / 64 + 1, 8);
		pm->unshared = calloc((pm->d.nextents + 63) / 64 + 1, 8);
		if (!pm->used || !pm->unshared) {
			vdp_set_error("pool %s: no memory for the map of the "
				      "%llu extents of member %s",
				      p->name,
				      (unsigned long long)pm->d.nextents,
				      pm->d.path);
			return -ENOMEM;
		}
		pm->nfree = pm->d.nextents;
		pm->cursor = 0;
	}
	/* Metadata chunk copies an add or a removal put in a data area. */
	for (unsigned c = 0; c < p->nchunks; c++)
		for (unsigned k = 0; k < p->chunks[c].ncopies; k++) {
			const struct vdp_dchunk *ch = &p->chunks[c];
			uint64_t first, n;

			if (chunk_data_run(p, ch, k, &first, &n))
				alloc_mark_run(p, ch->member[k], first, n,
					       true);
		}
	return 0;
}

void alloc_mark_run(struct vdp_pool *p, unsigned mi, uint64_t first, uint64_t n,
		    bool take)
{
	struct pmember *pm = &p->members[mi];

	for (uint64_t i = first; i < first + n && i < pm->d.nextents; i++) {
		if (take && !BIT_GET(pm->used, i)) {
			BIT_SET(pm->used, i);
			pm->nfree--;
		} else if (!take && BIT_GET(pm->used, i)) {
			BIT_CLR(pm->used, i);
			pm->nfree++;
		}
	}
}

int alloc_find_run(struct vdp_pool *p, unsigned mi, uint64_t n, uint64_t *first)
{
	const struct pmember *pm = &p->members[mi];
	uint64_t run = 0;

	/* From the end: metadata out of the way of next-fit allocation. */
	for (uint64_t i = pm->d.nextents; i-- > 0;) {
		run = BIT_GET(pm->used, i) ? 0 : run + 1;
		if (run == n) {
			*first = i;
			return 0;
		}
	}
	return -ENOSPC;
}

int alloc_grow_member(struct vdp_pool *p, unsigned mi, uint64_t nextents)
{
	struct pmember *pm = &p->members[mi];
	size_t words = (nextents + 63) / 64 + 1;
	size_t old = (pm->d.nextents + 63) / 64 + 1;
	uint64_t *u = realloc(pm->used, words * 8);

	if (!u)
		return -ENOMEM;
	pm->used = u;
	u = realloc(pm->unshared, words * 8);
	if (!u)
		return -ENOMEM;
	pm->unshared = u;
	memset(pm->used + old, 0, (words - old) * 8);
	memset(pm->unshared + old, 0, (words - old) * 8);
	/* The bits past the old end in its last word are clear already. */
	pm->nfree += nextents - pm->d.nextents;
	pm->d.nextents = nextents;
	return 0;
}

void alloc_free_all(struct vdp_pool *p)
{
	free(p->meta_used);
	p->meta_used = NULL;
	for (unsigned i = 0; i < p->nmembers; i++) {
		free(p->members[i].used);
		p->members[i].used = NULL;
		free(p->members[i].unshared);
		p->members[i].unshared = NULL;
	}
	free(p->pend_ext.v);
	free(p->pend_meta.v);
	free(p->discard.v);
	memset(&p->pend_ext, 0, sizeof(p->pend_ext));
	memset(&p->pend_meta, 0, sizeof(p->pend_meta));
	memset(&p->discard, 0, sizeof(p->discard));
}

/* Next clear bit at or after FROM (wrapping) among N bits, or N. */
static uint64_t find_clear(const uint64_t *b, uint64_t n, uint64_t from)
{
	for (uint64_t pass = 0; pass < 2; pass++) {
		uint64_t i = pass ? 0 : from, end = pass ? from : n;

		while (i < end) {
			uint64_t w = b[i / 64] | ((1ull << (i % 64)) - 1);

			if (w != UINT64_MAX) {
				uint64_t j = (i & ~63ull) +
					     (uint64_t)__builtin_ctzll(~w);

				if (j < end)
					return j;
				break;
			}
			i = (i & ~63ull) + 64;
		}
	}
	return n;
}

int alloc_meta(struct vdp_pool *p, uint64_t *addr)
{
	uint64_t i = find_clear(p->meta_used, p->meta_blocks, p->meta_cursor);

	if (i >= p->meta_blocks) {
		vdp_set_error("pool %s: metadata space is full", p->name);
		return -ENOSPC;
	}
	BIT_SET(p->meta_used, i);
	p->meta_nfree--;
	p->meta_cursor = i + 1;
	*addr = i;
	return 0;
}

void free_meta(struct vdp_pool *p, uint64_t addr)
{
	/* On ENOMEM the block merely leaks until the next open. */
	(void)u64vec_push(&p->pend_meta, addr);
}

int mark_meta_used(struct vdp_pool *p, uint64_t addr)
{
	if (addr == 0 || addr >= p->meta_blocks) {
		vdp_set_error("metadata block %llu is outside the metadata "
			      "space (%llu blocks)",
			      (unsigned long long)addr,
			      (unsigned long long)p->meta_blocks);
		return -EUCLEAN;
	}
	if (BIT_GET(p->meta_used, addr)) {
		vdp_set_error("metadata block %llu is referenced twice",
			      (unsigned long long)addr);
		return -EUCLEAN;
	}
	BIT_SET(p->meta_used, addr);
	p->meta_nfree--;
	return 0;
}

bool pid_valid(const struct vdp_pool *p, uint64_t pid)
{
	unsigned m = VDP_PID_MEMBER(pid);

	return pid != 0 && VDP_PID_FLAGS(pid) == 0 && m < p->nmembers &&
	       VDP_PID_INDEX(pid) < p->members[m].d.nextents;
}

int mark_extent_used(struct vdp_pool *p, uint64_t pid)
{
	struct pmember *pm;
	uint64_t i;

	if (!pid_valid(p, pid)) {
		vdp_set_error("extent id %#llx is outside the pool",
			      (unsigned long long)pid);
		return -EUCLEAN;
	}
	pm = &p->members[VDP_PID_MEMBER(pid)];
	i = VDP_PID_INDEX(pid);
	if (!BIT_GET(pm->used, i)) {
		BIT_SET(pm->used, i);
		pm->nfree--;
	}
	return 0;
}

uint32_t extent_refcount(struct vdp_pool *p, uint64_t pid)
{
	const uint32_t *c = rtree_lookup(&p->refc, pid);

	return c ? le32toh(*c) : 0;
}

int extent_ref(struct vdp_pool *p, uint64_t pid)
{
	uint32_t *c = rtree_slot(&p->refc, pid);

	if (!c)
		return -ENOMEM;
	if (le32toh(*c) == UINT32_MAX)
		return -EMLINK;
	*c = htole32(le32toh(*c) + 1);
	p->changed = true;
	return 0;
}

int extent_unref(struct vdp_pool *p, uint64_t pid)
{
	uint32_t *c = rtree_slot(&p->refc, pid);

	if (!c)
		return -ENOMEM;
	if (*c == 0)
		return -EUCLEAN;
	if (le32toh(*c) > 1) {
		/* The last commit may still map it at the place it leaves:
		 * the places that keep it must not write it in place. */
		struct pmember *pm = &p->members[VDP_PID_MEMBER(pid)];

		BIT_SET(pm->unshared, VDP_PID_INDEX(pid));
	}
	*c = htole32(le32toh(*c) - 1);
	p->changed = true;
	if (*c == 0)
		return u64vec_push(&p->pend_ext, pid);
	return 0;
}

bool extent_was_shared(struct vdp_pool *p, uint64_t pid)
{
	const struct pmember *pm = &p->members[VDP_PID_MEMBER(pid)];

	return BIT_GET(pm->unshared, VDP_PID_INDEX(pid));
}

int alloc_extent(struct vdp_pool *p, uint64_t *pid)
{
	struct pmember *best = NULL;
	unsigned bi = 0;

	for (unsigned m = 0; m < p->nmembers; m++) {
		if (p->members[m].d.state != 0)
			continue;
		if (!best || p->members[m].nfree > best->nfree) {
			best = &p->members[m];
			bi = m;
		}
	}
	if (!best || best->nfree == 0)
		return -ENOSPC;
	return alloc_extent_on(p, bi, pid);
}

int alloc_extent_on(struct vdp_pool *p, unsigned bi, uint64_t *pid)
{
	struct pmember *best = &p->members[bi];
	uint64_t i;

	if (best->nfree == 0)
		return -ENOSPC;
	/* Keep 1/16 of the metadata space for the commits that must record
	 * what is already allocated: data runs out before metadata does, so
	 * a full pool is an ENOSPC on writes, never a failed commit. */
	if (p->meta_nfree < p->meta_blocks / 16) {
		vdp_set_error("pool %s: metadata space is nearly full",
			      p->name);
		return -ENOSPC;
	}
	i = find_clear(best->used, best->d.nextents, best->cursor);
	if (i >= best->d.nextents)
		return -ENOSPC; /* nfree was wrong; cannot happen */
	BIT_SET(best->used, i);
	best->nfree--;
	best->cursor = i + 1;
	*pid = VDP_PID_MAKE(bi, i);
	return 0;
}

void unalloc_extent(struct vdp_pool *p, uint64_t pid)
{
	struct pmember *pm = &p->members[VDP_PID_MEMBER(pid)];

	BIT_CLR(pm->used, VDP_PID_INDEX(pid));
	pm->nfree++;
}

void release_pending(struct vdp_pool *p, struct u64vec *ext,
		     struct u64vec *meta)
{
	for (size_t k = 0; k < ext->n; k++) {
		uint64_t pid = ext->v[k];
		struct pmember *pm = &p->members[VDP_PID_MEMBER(pid)];

		/* Re-referenced meanwhile (a later clone)?  Keep it. */
		if (extent_refcount(p, pid) != 0)
			continue;
		if (BIT_GET(pm->used, VDP_PID_INDEX(pid))) {
			BIT_CLR(pm->used, VDP_PID_INDEX(pid));
			pm->nfree++;
		}
		BIT_CLR(pm->unshared, VDP_PID_INDEX(pid));
	}
	for (size_t k = 0; k < meta->n; k++) {
		if (BIT_GET(p->meta_used, meta->v[k])) {
			BIT_CLR(p->meta_used, meta->v[k]);
			p->meta_nfree++;
		}
	}
}
