/* SPDX-License-Identifier: MIT */
/*
 * seeds.h - writing the seed corpus of every fuzz target from the images
 * of a real pool (fuzz_pool with VDPOOL_FUZZ_SEEDS, make-seeds.sh).
 */
#ifndef VDP_FUZZ_SEEDS_H
#define VDP_FUZZ_SEEDS_H

#include <stddef.h>
#include <stdint.h>

/*
 * fuzz_write_seeds: writes DIR/superblock, DIR/block, DIR/namespace and
 * DIR/pool seeds taken from IMG[0] and IMG[1], the first SPAN bytes of the
 * two members of a pool (superblocks and metadata blocks in use).  The
 * directories must exist.  0 or -errno.
 */
int fuzz_write_seeds(const char *dir, const uint8_t *const img[2],
		     uint64_t span);

#endif
