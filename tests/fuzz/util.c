/* SPDX-License-Identifier: MIT */
/*
 * util.c - the in-memory member and the small pool of fuzz.h.
 *
 * The member implements struct vdp_member_ops like any member kind, so
 * the store reads fuzzed metadata through its real code path
 * (pool_meta_read, rtree_load, ns_load); it never writes.
 */
#include <endian.h>
#include <errno.h>
#include <string.h>

#include "block.h"
#include "fuzz.h"

struct mem_block {
	uint64_t off;
	uint8_t data[VDP_BLOCK_SIZE];
};

struct mem_member {
	struct vdp_member m;
	struct mem_block *blocks;
	size_t n, cap;
};

static const struct mem_block *mem_find(const struct mem_member *mm,
					uint64_t off)
{
	for (size_t i = 0; i < mm->n; i++)
		if (mm->blocks[i].off == off)
			return &mm->blocks[i];
	return NULL;
}

static int mem_pread(struct vdp_member *m, void *buf, size_t len, uint64_t off)
{
	const struct mem_member *mm = m->priv;

	if (off > m->size || len > m->size - off)
		return -EIO; /* as a file member's short read */
	for (size_t done = 0; done < len; done += VDP_BLOCK_SIZE) {
		const struct mem_block *b = mem_find(mm, off + done);

		if (b)
			memcpy((uint8_t *)buf + done, b->data, VDP_BLOCK_SIZE);
		else
			memset((uint8_t *)buf + done, 0, VDP_BLOCK_SIZE);
	}
	return 0;
}

static int mem_pwrite(struct vdp_member *m, const void *buf, size_t len,
		      uint64_t off)
{
	(void)m, (void)buf, (void)len, (void)off;
	return -EROFS;
}

static int mem_flush(struct vdp_member *m)
{
	(void)m;
	return 0;
}

static int mem_zero(struct vdp_member *m, uint64_t off, uint64_t len)
{
	(void)m, (void)off, (void)len;
	return -EROFS;
}

static void mem_close(struct vdp_member *m)
{
	struct mem_member *mm = m->priv;

	free(mm->blocks);
	free(m->path);
	free(mm);
}

static const struct vdp_member_ops mem_ops = {
	.kind = "memory",
	.pread = mem_pread,
	.pwrite = mem_pwrite,
	.flush = mem_flush,
	.write_zeroes = mem_zero,
	.discard = mem_zero,
	.close = mem_close,
};

struct vdp_member *fuzz_mem_new(uint64_t size)
{
	struct mem_member *mm = calloc(1, sizeof(*mm));

	if (!mm)
		return NULL;
	mm->m.ops = &mem_ops;
	mm->m.path = strdup("(fuzz input)");
	mm->m.size = size;
	mm->m.align = VDP_BLOCK_SIZE;
	mm->m.kind = VDP_MK_FILE;
	mm->m.priv = mm;
	if (!mm->m.path) {
		free(mm);
		return NULL;
	}
	return &mm->m;
}

int fuzz_mem_put(struct vdp_member *m, uint64_t off, const void *blk,
		 size_t len)
{
	struct mem_member *mm = m->priv;
	struct mem_block *b = (struct mem_block *)mem_find(mm, off);

	if (off % VDP_BLOCK_SIZE || len > VDP_BLOCK_SIZE)
		return -EINVAL;
	if (!b) {
		if (mm->n == mm->cap) {
			size_t cap = mm->cap ? mm->cap * 2 : 16;
			struct mem_block *n =
				realloc(mm->blocks, cap * sizeof(*n));

			if (!n)
				return -ENOMEM;
			mm->blocks = n;
			mm->cap = cap;
		}
		b = &mm->blocks[mm->n++];
		b->off = off;
	}
	memcpy(b->data, blk, len);
	memset(b->data + len, 0, VDP_BLOCK_SIZE - len);
	return 0;
}

struct vdp_pool *fuzz_pool_new(struct vdp_member *m, const uint8_t uuid[16],
			       uint64_t txid, uint64_t nblocks, bool rdonly)
{
	struct vdp_pool *p = pool_alloc();
	struct pmember *pm;

	if (!p) {
		vdp_member_close(m);
		return NULL;
	}
	memcpy(p->uuid, uuid, 16);
	p->seed = vdp_pool_seed(uuid);
	p->txid = txid;
	snprintf(p->name, sizeof(p->name), "fuzz");
	p->rdonly = rdonly;
	p->extent_shift = 20;
	p->extent_size = 1u << 20;
	p->next_ino = 2;
	p->nmembers = 1;
	pm = &p->members[0];
	pm->m = m;
	pm->d.kind = VDP_MK_FILE;
	pm->d.data_off = (nblocks * VDP_BLOCK_SIZE + (1u << 20) - 1) &
			 ~(uint64_t)((1u << 20) - 1);
	pm->d.nextents = 64;
	pm->d.size = pm->d.data_off + (64u << 20);
	snprintf(pm->d.path, sizeof(pm->d.path), "%s", m->path);
	m->size = pm->d.size;
	p->nchunks = 1;
	p->chunks[0].nblocks = nblocks;
	p->chunks[0].ncopies = 1;
	p->meta_blocks = nblocks;
	if (alloc_init(p) < 0) {
		pool_free(p);
		return NULL;
	}
	return p;
}

void fuzz_meta_seal(const struct vdp_pool *p, void *blk, uint64_t addr,
		    uint8_t tree, uint64_t owner, uint8_t level)
{
	struct vdp_bhdr *h = blk;

	memset(h, 0, sizeof(*h));
	h->magic = htole64(VDP_MAGIC_META);
	h->blocknr = htole64(addr);
	h->txid = htole64(p->txid);
	memcpy(h->pool_uuid, p->uuid, 16);
	h->owner = htole64(owner);
	h->type = htole16(level ? VDP_BT_NODE : VDP_BT_LEAF);
	h->tree = tree;
	h->level = level;
	vdp_block_seal(blk, VDP_BLOCK_SIZE, p->seed);
}
