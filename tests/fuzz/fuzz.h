/* SPDX-License-Identifier: MIT */
/*
 * fuzz.h - what the libFuzzer targets in tests/fuzz share: an assertion
 * that aborts (so libFuzzer records the input), an in-memory member, and a
 * small pool whose metadata lives on that member, for targets that feed
 * bytes to one decoder without building a whole pool on files.
 *
 * Test code only: it includes the store's internal headers, as the unit
 * tests do.
 */
#ifndef VDP_FUZZ_H
#define VDP_FUZZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"

/* A property the code under test promises; a violation is a bug like a
 * crash, so abort and let libFuzzer save the input. */
#define FUZZ_ASSERT(cond)                                                      \
	do {                                                                   \
		if (!(cond)) {                                                 \
			fprintf(stderr, "%s:%d: FUZZ_ASSERT failed: %s\n",     \
				__FILE__, __LINE__, #cond);                    \
			abort();                                               \
		}                                                              \
	} while (0)

/*
 * fuzz_mem_new: a member of SIZE bytes (settable later through m->size) held in
 * memory as a sparse set of 4 KiB blocks (unset blocks read as zeros).  Reads
 * only: pwrite, write_zeroes and discard fail with -EROFS, so a decoder that
 * tries to "heal" fuzzed metadata cannot change the input.  Closed by
 * vdp_member_close (or pool_free).  NULL on ENOMEM.
 */
struct vdp_member *fuzz_mem_new(uint64_t size);

/* fuzz_mem_put: sets the 4 KiB block at byte OFF (a multiple of 4096) of M
 * to the LEN (<= 4096) bytes of BLK followed by zeros.  -ENOMEM, -EINVAL. */
int fuzz_mem_put(struct vdp_member *m, uint64_t off, const void *blk,
		 size_t len);

/*
 * fuzz_pool_new: an open-looking pool of one member M (taken over: closed
 * by pool_free) whose single metadata chunk holds logical blocks
 * [0, NBLOCKS) at offset 0 of M, with pool UUID and last commit TXID, and
 * 64 data extents of 1 MiB after the metadata (M's size is set to match).  The
 * allocator is ready, the trees are empty; nothing is read.  Free with
 * pool_free().  NULL on ENOMEM.
 */
struct vdp_pool *fuzz_pool_new(struct vdp_member *m, const uint8_t uuid[16],
			       uint64_t txid, uint64_t nblocks, bool rdonly);

/* fuzz_meta_seal: fills the header of metadata block BLK (4096 bytes)
 * as a commit of P would (address ADDR, P's txid and UUID) and seals it. */
void fuzz_meta_seal(const struct vdp_pool *p, void *blk, uint64_t addr,
		    uint8_t tree, uint64_t owner, uint8_t level);

#endif
