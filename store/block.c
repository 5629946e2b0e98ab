/* SPDX-License-Identifier: MIT */
/*
 * block.c - checksums for self-describing blocks.  A block proves it is
 * intact (XXH3-64), where it belongs (its own location) and whose it is
 * (the pool UUID), the way dm's persistent-data blocks do; that catches
 * torn, misdirected and stale writes.
 */
#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <xxhash.h>

#include "block.h"

uint64_t vdp_pool_seed(const uint8_t uuid[16])
{
	uint64_t s;

	memcpy(&s, uuid, 8);
	return le64toh(s);
}

static uint64_t block_csum(const void *blk, size_t size, uint64_t seed)
{
	return XXH3_64bits_withSeed((const char *)blk + 16, size - 16, seed);
}

void vdp_block_seal(void *blk, size_t size, uint64_t seed)
{
	struct vdp_bhdr *h = blk;

	h->csum = htole64(block_csum(blk, size, seed));
}

int vdp_block_verify(const void *blk, size_t size, uint64_t magic,
		     uint64_t blocknr, const uint8_t uuid[16], char *why,
		     size_t whylen)
{
	const struct vdp_bhdr *h = blk;

	if (le64toh(h->magic) != magic) {
		snprintf(why, whylen, "bad magic (not a vdpool block)");
		return -EBADMSG;
	}
	if (le64toh(h->csum) != block_csum(blk, size, vdp_pool_seed(uuid))) {
		if (memcmp(h->pool_uuid, uuid, 16) != 0) {
			snprintf(why, whylen, "block of another pool");
			return -ESTALE;
		}
		snprintf(why, whylen, "checksum mismatch");
		return -EBADMSG;
	}
	if (memcmp(h->pool_uuid, uuid, 16) != 0) {
		snprintf(why, whylen, "block of another pool");
		return -ESTALE;
	}
	if (le64toh(h->blocknr) != blocknr) {
		snprintf(why, whylen, "block claims to be block %llu",
			 (unsigned long long)le64toh(h->blocknr));
		return -EBADMSG;
	}
	return 0;
}
