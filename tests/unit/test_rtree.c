/* SPDX-License-Identifier: MIT */
/* test_rtree.c - radix tree lookups, growth, ordered leaf iteration and
 * dirty tracking, against a plain array model. */
#include <string.h>

#include "check.h"
#include "internal.h"

static int count_leaves(void *ctx, const struct rnode *n, uint64_t base)
{
	uint64_t *last = ctx;

	if (n->level == 0) {
		CHECK(base >= last[0]); /* visited in key order */
		last[0] = base;
		last[1]++;
	}
	return 0;
}

int main(void)
{
	const uint64_t keys[] = {0,	 1,	     503,	 504,
				 1007,	 254015,     254016,	 254017,
				 999999, 1ull << 32, 1ull << 45, 77};
	const size_t nk = sizeof(keys) / sizeof(keys[0]);
	struct rtree t;
	uint64_t base, last[2] = {0, 0};
	struct rnode *leaf;

	rtree_init(&t, VDP_TREE_MAP, sizeof(uint64_t), 5);
	CHECK_EQ(t.per_leaf, 504);
	CHECK(rtree_lookup(&t, 0) == NULL);
	CHECK(rtree_leaf_from(&t, 0, &base) == NULL);

	for (size_t i = 0; i < nk; i++) {
		uint64_t *s = rtree_slot(&t, keys[i]);

		CHECK(s != NULL);
		*s = keys[i] + 1;
		/* Every earlier value survives the growth of the tree. */
		for (size_t j = 0; j <= i; j++) {
			uint64_t *g = rtree_lookup(&t, keys[j]);

			CHECK(g && *g == keys[j] + 1);
		}
	}
	CHECK(t.height >= 5);
	CHECK(rtree_dirty(&t));

	/* Keys never written read as zero or have no leaf at all. */
	{
		uint64_t *g = rtree_lookup(&t, 2);

		CHECK(g && *g == 0);
		CHECK(rtree_lookup(&t, 1ull << 40) == NULL);
		CHECK(rtree_lookup(&t, UINT64_MAX / 2) == NULL);
	}

	/* rtree_leaf_from: the leaf holding the key, else the next one. */
	leaf = rtree_leaf_from(&t, 505, &base);
	CHECK(leaf && base == 504);
	leaf = rtree_leaf_from(&t, 1008, &base);
	CHECK(leaf && base == 253512); /* the leaf holding 254015 */
	leaf = rtree_leaf_from(&t, 1000000, &base);
	CHECK(leaf && base == 999936); /* 1000000 shares the leaf of 999999 */
	leaf = rtree_leaf_from(&t, (1ull << 45) + 504, &base);
	CHECK(leaf == NULL);

	rtree_visit(&t, count_leaves, last);
	CHECK_EQ(last[1],
		 7); /* leaves at 0, 504, 253512, 254016, 999936, 2^32, 2^45 */
	rtree_destroy(&t);
	CHECK(rtree_lookup(&t, 0) == NULL);

	/* Blob trees hold one 4032-byte value per leaf. */
	rtree_init(&t, VDP_TREE_BLOB, VDP_PAYLOAD, 1);
	CHECK_EQ(t.per_leaf, 1);
	for (uint64_t i = 0; i < 600; i++) {
		uint8_t *b = rtree_slot(&t, i);

		CHECK(b != NULL);
		memset(b, (int)(i & 0xff), VDP_PAYLOAD);
	}
	for (uint64_t i = 0; i < 600; i += 37) {
		uint8_t *b = rtree_lookup(&t, i);

		CHECK(b && b[0] == (i & 0xff) &&
		      b[VDP_PAYLOAD - 1] == (i & 0xff));
	}
	CHECK_EQ(t.height, 3);
	rtree_destroy(&t);
	return check_done("test_rtree");
}
