/* SPDX-License-Identifier: MIT */
/* test_block.c - sealed blocks detect corruption, misdirection and blocks
 * of another pool. */
#include <errno.h>
#include <string.h>

#include "block.h"
#include "check.h"

int main(void)
{
	static uint8_t blk[VDP_BLOCK_SIZE];
	uint8_t uuid[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
	uint8_t other[16] = {9};
	struct vdp_bhdr *h = (struct vdp_bhdr *)blk;
	char why[128];

	for (size_t i = 0; i < sizeof(blk); i++)
		blk[i] = (uint8_t)(i * 7);
	h->magic = VDP_MAGIC_META;
	h->blocknr = 42;
	h->txid = 7;
	memcpy(h->pool_uuid, uuid, 16);
	vdp_block_seal(blk, sizeof(blk), vdp_pool_seed(uuid));
	CHECK_EQ(vdp_block_verify(blk, sizeof(blk), VDP_MAGIC_META, 42, uuid,
				  why, sizeof(why)),
		 0);

	/* Misdirected: read at another location. */
	CHECK_EQ(vdp_block_verify(blk, sizeof(blk), VDP_MAGIC_META, 43, uuid,
				  why, sizeof(why)),
		 -EBADMSG);
	CHECK(strstr(why, "claims to be block 42") != NULL);

	/* Another pool's block, even one sealed correctly for that pool. */
	CHECK_EQ(vdp_block_verify(blk, sizeof(blk), VDP_MAGIC_META, 42, other,
				  why, sizeof(why)),
		 -ESTALE);

	/* Wrong kind of block. */
	CHECK_EQ(vdp_block_verify(blk, sizeof(blk), VDP_MAGIC_SUPER, 42, uuid,
				  why, sizeof(why)),
		 -EBADMSG);

	/* One flipped bit anywhere after the checksum is caught. */
	for (size_t off = 16; off < sizeof(blk); off += 509) {
		blk[off] ^= 0x10;
		CHECK_EQ(vdp_block_verify(blk, sizeof(blk), VDP_MAGIC_META, 42,
					  uuid, why, sizeof(why)),
			 -EBADMSG);
		blk[off] ^= 0x10;
	}
	CHECK(strstr(why, "checksum") != NULL);

	/* A torn write: the second half from an older version. */
	memset(blk + 2048, 0xee, 2048);
	CHECK_EQ(vdp_block_verify(blk, sizeof(blk), VDP_MAGIC_META, 42, uuid,
				  why, sizeof(why)),
		 -EBADMSG);
	return check_done("test_block");
}
