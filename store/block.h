/* SPDX-License-Identifier: MIT */
/*
 * block.h - sealing and verifying checksummed blocks (metadata blocks and
 * superblock slots).  Pure functions, no I/O.
 */
#ifndef VDP_BLOCK_H
#define VDP_BLOCK_H

#include <stddef.h>
#include <stdint.h>

#include "format.h"

/* The checksum seed of a pool: the first 8 bytes of its UUID. */
uint64_t vdp_pool_seed(const uint8_t uuid[16]);

/* vdp_block_seal: store the XXH3-64 checksum of BLK[16, SIZE) into the
 * header; every other header field must be set already. */
void vdp_block_seal(void *blk, size_t size, uint64_t seed);

/*
 * vdp_block_verify: 0 if BLK is a sealed block of pool UUID with MAGIC at
 * location BLOCKNR; otherwise -EBADMSG (or -ESTALE for a block of another
 * pool) and a short reason in WHY ("checksum mismatch", "block claims to be
 * block 17", ...).
 */
int vdp_block_verify(const void *blk, size_t size, uint64_t magic,
		     uint64_t blocknr, const uint8_t uuid[16], char *why,
		     size_t whylen);

#endif
