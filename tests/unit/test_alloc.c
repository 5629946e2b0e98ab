/* SPDX-License-Identifier: MIT */
/*
 * test_alloc.c - the allocator: placement policy, ENOSPC, reference
 * counts, and the rule that a freed extent or metadata block is not handed
 * out again before the transaction that freed it is durable.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "internal.h"

static struct vdp_pool *fake_pool(uint64_t e0, uint64_t e1, uint64_t meta)
{
	struct vdp_pool *p = calloc(1, sizeof(*p));

	p->nmembers = 2;
	p->members[0].d.nextents = e0;
	p->members[1].d.nextents = e1;
	p->meta_blocks = meta;
	p->extent_shift = 20;
	p->extent_size = 1 << 20;
	strcpy(p->name, "unit");
	rtree_init(&p->refc, VDP_TREE_REFC, sizeof(uint32_t), 0);
	CHECK_EQ(alloc_init(p), 0);
	return p;
}

/* What a commit does once durable: release what it freed. */
static void commit_done(struct vdp_pool *p)
{
	struct u64vec ext = p->pend_ext, meta = p->pend_meta;

	memset(&p->pend_ext, 0, sizeof(p->pend_ext));
	memset(&p->pend_meta, 0, sizeof(p->pend_meta));
	release_pending(p, &ext, &meta);
	free(ext.v);
	free(meta.v);
}

int main(void)
{
	struct vdp_pool *p = fake_pool(10, 6, 8);
	uint64_t pid, got[16], addr;
	int n0 = 0, n1 = 0;

	/* Most free space first: member 0 until it has as little free as
	 * member 1, then alternating. */
	for (int i = 0; i < 16; i++) {
		CHECK_EQ(alloc_extent(p, &got[i]), 0);
		CHECK(pid_valid(p, got[i]));
		CHECK_EQ(extent_refcount(p, got[i]), 0); /* not mapped yet */
		CHECK_EQ(extent_ref(p, got[i]), 0);
		CHECK_EQ(extent_refcount(p, got[i]), 1);
		if (VDP_PID_MEMBER(got[i]) == 0)
			n0++;
		else
			n1++;
		for (int j = 0; j < i; j++)
			CHECK(got[j] != got[i]);
	}
	CHECK_EQ(VDP_PID_MEMBER(got[0]), 0);
	CHECK_EQ(VDP_PID_MEMBER(got[3]), 0);
	CHECK_EQ(n0, 10);
	CHECK_EQ(n1, 6);
	CHECK_EQ(alloc_extent(p, &pid), -ENOSPC);

	/* An extent taken but given back (its write failed) is free again. */
	unalloc_extent(p, got[2]);
	CHECK_EQ(alloc_extent(p, &pid), 0);
	CHECK_EQ(pid, got[2]);

	/* A second reference keeps the extent alive after the first goes. */
	CHECK_EQ(extent_ref(p, got[5]), 0);
	CHECK_EQ(extent_unref(p, got[5]), 0);
	CHECK_EQ(extent_refcount(p, got[5]), 1);
	CHECK_EQ(p->pend_ext.n, 0);

	/* Freed, but not reusable until the freeing commit is durable. */
	CHECK_EQ(extent_unref(p, got[5]), 0);
	CHECK_EQ(extent_refcount(p, got[5]), 0);
	CHECK_EQ(p->pend_ext.n, 1);
	CHECK_EQ(alloc_extent(p, &pid), -ENOSPC);
	CHECK_EQ(extent_unref(p, got[5]), -EUCLEAN); /* no underflow */

	commit_done(p);
	CHECK_EQ(alloc_extent(p, &pid), 0);
	CHECK_EQ(pid, got[5]);

	/* Metadata blocks: block 0 is never handed out; 7 usable. */
	for (int i = 0; i < 7; i++) {
		CHECK_EQ(alloc_meta(p, &addr), 0);
		CHECK(addr >= 1 && addr < 8);
	}
	CHECK_EQ(alloc_meta(p, &addr), -ENOSPC);
	free_meta(p, 3);
	CHECK_EQ(alloc_meta(p, &addr), -ENOSPC); /* still pending */
	commit_done(p);
	CHECK_EQ(alloc_meta(p, &addr), 0);
	CHECK_EQ(addr, 3);

	/* Marking at open: twice is corruption, outside is corruption. */
	CHECK_EQ(mark_meta_used(p, 3), -EUCLEAN);
	CHECK_EQ(mark_meta_used(p, 99), -EUCLEAN);
	CHECK_EQ(mark_extent_used(p, VDP_PID_MAKE(1, 6)), -EUCLEAN);
	CHECK_EQ(mark_extent_used(p, VDP_PID_MAKE(5, 0)), -EUCLEAN);

	rtree_destroy(&p->refc);
	alloc_free_all(p);
	free(p);
	return check_done("test_alloc");
}
