/* SPDX-License-Identifier: MIT */
/*
 * fuzz_superblock.c - libFuzzer target: bytes -> one superblock slot, as
 * vdp_pool_open verifies and decodes it (pool_super_decode).
 *
 * Input: one flag byte, then the slot image (up to 16 KiB; shorter inputs
 * are padded with zeros).  Flags: bit 0 the slot number the image was
 * "read" from, bit 1 reseal the image with the checksum of the UUID it
 * names (else nearly every mutation stops at the checksum), bit 2 open
 * read-only.  A decoded superblock must describe a pool the rest of the
 * store can address without overflow; that is asserted.
 */
#include <endian.h>
#include <string.h>

#include "block.h"
#include "fuzz.h"

enum { F_SLOT1 = 1, F_RESEAL = 2, F_RDONLY = 4 };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* What the rest of the store relies on once the superblock is accepted. */
static void check_decoded(const struct vdp_pool *p)
{
	uint64_t lblocks = 0;

	FUZZ_ASSERT(p->nmembers >= 1 && p->nmembers <= VDP_MAX_MEMBERS);
	FUZZ_ASSERT(p->nchunks >= 1 && p->nchunks <= VDP_MAX_CHUNKS);
	FUZZ_ASSERT(p->extent_shift >= VDP_MIN_EXTENT_SHIFT &&
		    p->extent_shift <= VDP_MAX_EXTENT_SHIFT);
	FUZZ_ASSERT(p->extent_size == 1ull << p->extent_shift);
	for (unsigned c = 0; c < p->nchunks; c++) {
		const struct vdp_dchunk *ch = &p->chunks[c];

		FUZZ_ASSERT(ch->ncopies == 1 || ch->ncopies == 2);
		for (unsigned k = 0; k < ch->ncopies; k++)
			FUZZ_ASSERT(ch->member[k] < p->nmembers);
		FUZZ_ASSERT(ch->lstart == lblocks);
		lblocks += ch->nblocks;
	}
	FUZZ_ASSERT(lblocks == p->meta_blocks);
	FUZZ_ASSERT(p->meta_blocks >= 1); /* block 0 exists, taken as "none" */
	for (unsigned i = 0; i < p->nmembers; i++) {
		const struct vdp_dmember *d = &p->members[i].d;
		uint64_t bytes, end;

		FUZZ_ASSERT(d->nextents < (1ull << VDP_PID_IDX_BITS));
		/* Every extent's byte range is computed as
		 * data_off + index << extent_shift: no wrap-around. */
		FUZZ_ASSERT(!__builtin_mul_overflow(d->nextents, p->extent_size,
						    &bytes));
		FUZZ_ASSERT(!__builtin_add_overflow(d->data_off, bytes, &end));
		FUZZ_ASSERT(end <= d->size);
	}
	/* Metadata lies between a member's header area and its data, or
	 * (after an add or a removal) over whole extents of its data area. */
	for (unsigned c = 0; c < p->nchunks; c++) {
		const struct vdp_dchunk *ch = &p->chunks[c];

		for (unsigned k = 0; k < ch->ncopies; k++) {
			const struct vdp_dmember *d =
				&p->members[ch->member[k]].d;

			FUZZ_ASSERT(ch->offset[k] >= VDP_HEADER_AREA);
			FUZZ_ASSERT(chunk_in_data(p, ch, k) ||
				    ch->offset[k] + ch->nblocks *
							    VDP_BLOCK_SIZE <=
					    d->data_off);
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct vdp_dsuper *s;
	struct vdp_pool *p;
	char why[256];
	uint8_t flags;

	if (size < 1)
		return 0;
	if (!s && posix_memalign((void **)&s, 4096, sizeof(*s)) != 0)
		abort();
	flags = data[0];
	data++, size--;
	if (size > sizeof(*s))
		size = sizeof(*s);
	memset(s, 0, sizeof(*s));
	memcpy(s, data, size);
	if (flags & F_RESEAL)
		vdp_block_seal(s, VDP_SB_SIZE, vdp_pool_seed(s->h.pool_uuid));

	p = pool_alloc();
	if (!p)
		abort();
	p->rdonly = flags & F_RDONLY;
	if (pool_super_decode(p, s, flags & F_SLOT1, why, sizeof(why)) == 0)
		check_decoded(p);
	else
		FUZZ_ASSERT(why[0] != 0); /* a refusal always says why */
	pool_free(p);
	return 0;
}
