/* SPDX-License-Identifier: MIT */
/*
 * test_commit.c - commits that fail on I/O, then one that gets through.
 * The member's first flushes fail (fault layers, one failure each); each
 * round writes a new extent and fsyncs.  A failed commit hands its blocks
 * to the next one, which must write only those still needed: the blocks
 * of nodes that changed again are superseded.  They used to be written
 * again too, so every failed commit made the next one bigger, and under a
 * member that fails now and then commits grew until none got through.
 * Once a flush succeeds everything written is durable: it reads back after
 * a reopen without faults, and vdp_pool_check finds nothing wrong.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "internal.h"
#include "layer.h"
#include "vdpool.h"

#define EXT (1u << 16) /* the pool's extent size (.extent_shift below) */
#define FAILS 15       /* flushes that fail: one fault layer each */
#define ROUNDS 40

static char dir[64], m0[96];

static void report(void *ctx, const char *line)
{
	(void)ctx;
	fprintf(stderr, "check: %s\n", line);
}

/* Blocks queued for the next commit (what failed commits handed back). */
static size_t queued(struct vdp_pool *p)
{
	size_t n;

	pthread_mutex_lock(&p->meta_lock);
	n = p->nq;
	pthread_mutex_unlock(&p->meta_lock);
	return n;
}

static void fill(uint8_t *b, int round)
{
	for (size_t i = 0; i < 4096; i++)
		b[i] = (uint8_t)(round * 31 + i);
}

int main(void)
{
	struct vdp_create_opts o = {.name = "commit", .extent_shift = 16};
	const char *members[1] = {m0};
	struct vdp_pool *p = NULL;
	struct vdp_attr a;
	char spec[16 * 24] = "";
	uint8_t b[4096], got[4096];
	size_t first = 0, most = 0;
	int r, round, failed = 0;

	if (!make_test_dir(dir))
		return 1;
	snprintf(m0, sizeof(m0), "%s/m0", dir);
	if (!make_member(m0, 64 << 20))
		return 1;
	CHECK_EQ(vdp_pool_create(members, 1, &o), 0);

	/* The file first, durable, without faults. */
	CHECK_EQ(vdp_pool_open(m0, 0, &p), 0);
	CHECK_EQ(vdp_create(p, VDP_ROOT_INO, "d.img", S_IFREG | 0600, 0, 0, &a),
		 0);
	CHECK_EQ(vdp_pool_close(p), 0);

	/* Layer k fails the first flush it sees; the later ones pass
	 * through to the next: the first FAILS flushes fail. */
	for (int k = 0; k < FAILS; k++)
		strcat(spec,
		       k ? ";fault:op=flush,nth=1" : "fault:op=flush,nth=1");
	CHECK_EQ(vdp_layers_set(spec), 0);
	CHECK_EQ(vdp_pool_open(m0, 0, &p), 0);
	vdp_pool_set_commit_interval(p, 0); /* commits only when told */
	for (round = 0; round < ROUNDS; round++) {
		fill(b, round);
		CHECK_EQ(vdp_write(p, a.ino, b, sizeof(b),
				   (uint64_t)round * EXT),
			 (long long)sizeof(b));
		r = vdp_fsync(p, a.ino, false);
		if (r == 0)
			break;
		CHECK_EQ(r, -EIO);
		failed++;
		if (failed == 1)
			first = queued(p);
		if (queued(p) > most)
			most = queued(p);
	}
	printf("%d commits failed, then one got through; blocks queued after "
	       "the first failure %zu, at most %zu\n",
	       failed, first, most);
	CHECK(failed >= FAILS - 2 && round < ROUNDS);
	/* Each round changes the same few nodes again: what is queued stays
	 * their latest blocks, whatever the number of failures. */
	CHECK(first > 0 && most <= first + 4);
	CHECK_EQ(queued(p), 0);
	CHECK_EQ(vdp_pool_close(p), 0);

	/* Everything the successful commit covered reads back. */
	CHECK_EQ(vdp_layers_set(NULL), 0);
	CHECK_EQ(vdp_pool_open(m0, VDP_OPEN_RDONLY, &p), 0);
	for (int i = 0; i <= round; i++) {
		fill(b, i);
		CHECK_EQ(
			vdp_read(p, a.ino, got, sizeof(got), (uint64_t)i * EXT),
			(long long)sizeof(got));
		CHECK(memcmp(got, b, sizeof(b)) == 0);
	}
	CHECK_EQ(vdp_pool_check(p, report, NULL), 0);
	CHECK_EQ(vdp_pool_close(p), 0);
	remove_test_dir(dir);
	return check_done("test_commit");
}
