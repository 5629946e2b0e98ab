/* SPDX-License-Identifier: MIT */
/*
 * test_discard.c - the extents a commit frees go back to the member on the
 * pool's discard thread, after the commit.  On a member whose discards
 * are slow (a fault layer with delay): the fdatasync that commits the
 * removal of a disk returns before the discards are done; the freed space
 * counts as free meanwhile; a write that needs those extents waits for
 * their discards instead of failing with ENOSPC, and keeps its bytes (an
 * extent handed out before its discard would be punched under it);
 * vdp_pool_commit returns with every discard done.  With
 * vdp_pool_set_discard_sync the commit discards itself.
 */
#include <errno.h>
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
#define A 16u	       /* extents of the disk removed: a MiB, one discard */
#define C 8u	       /* extents written after */

static char dir[64], m0[96];

static void report(void *ctx, const char *line)
{
	(void)ctx;
	fprintf(stderr, "check: %s\n", line);
}

static uint64_t mkfile(struct vdp_pool *p, const char *name)
{
	struct vdp_attr a;

	CHECK_EQ(vdp_create(p, VDP_ROOT_INO, name, S_IFREG | 0600, 0, 0, &a),
		 0);
	return a.ino;
}

static void rmfile(struct vdp_pool *p, const char *name, uint64_t ino)
{
	CHECK_EQ(vdp_unlink(p, VDP_ROOT_INO, name), 0);
	vdp_forget(p, ino, 1); /* vdp_create's lookup reference */
}

static uint64_t free_extents(struct vdp_pool *p)
{
	struct vdp_statfs st;

	vdp_pool_statfs(p, &st);
	return st.free_extents;
}

static size_t held(struct vdp_pool *p)
{
	size_t n;

	pthread_mutex_lock(&p->meta_lock);
	n = p->discard_held;
	pthread_mutex_unlock(&p->meta_lock);
	return n;
}

/* The member file's allocated bytes: a discard punches a hole, and each
 * commit writes some metadata blocks, less than SLACK. */
#define SLACK (4 * EXT)
static uint64_t member_bytes(void)
{
	struct stat st;

	CHECK_EQ(stat(m0, &st), 0);
	return (uint64_t)st.st_blocks * 512;
}

int main(void)
{
	struct vdp_create_opts o = {.name = "discard", .extent_shift = 16};
	const char *members[1] = {m0};
	struct vdp_pool *p = NULL;
	uint64_t a, b, c, f, nfree, before;
	uint8_t *buf, *got;

	if (!make_test_dir(dir))
		return 1;
	snprintf(m0, sizeof(m0), "%s/m0", dir);
	if (!make_member(m0, 64 << 20))
		return 1;
	CHECK_EQ(vdp_pool_create(members, 1, &o), 0);
	/* Every discard call waits 2 s; the member is a sparse file, so a
	 * done discard shows in its allocation. */
	CHECK_EQ(vdp_layers_set("fault:op=discard,p=1,delay=2000"), 0);
	if (vdp_pool_open(m0, 0, &p) < 0) {
		fprintf(stderr, "open: %s\n", vdp_last_error());
		return 1;
	}
	vdp_pool_set_commit_interval(p, 0); /* commits only when told */
	nfree = free_extents(p);
	CHECK(nfree > A + 1);
	buf = malloc(nfree * EXT);
	got = malloc(nfree * EXT);
	memset(buf, 0xa5, nfree * EXT);

	/* The pool full: a holds A extents (one discard call), b one, f the
	 * rest. */
	a = mkfile(p, "a.img");
	b = mkfile(p, "b.img");
	f = mkfile(p, "f.img");
	CHECK_EQ(vdp_write(p, a, buf, A * EXT, 0), (ssize_t)(A * EXT));
	CHECK_EQ(vdp_write(p, b, buf, EXT, 0), (ssize_t)EXT);
	CHECK_EQ(vdp_write(p, f, buf, (nfree - A - 1) * EXT, 0),
		 (ssize_t)((nfree - A - 1) * EXT));
	CHECK_EQ(vdp_fsync(p, b, true), 0);
	CHECK_EQ(free_extents(p), 0);
	before = member_bytes();

	/* The fdatasync that commits a's removal returns before its
	 * extents are discarded; they count as free. */
	rmfile(p, "a.img", a);
	CHECK_EQ(vdp_fsync(p, b, true), 0);
	CHECK_EQ(held(p), A);
	CHECK(member_bytes() + SLACK > before); /* nothing punched */
	CHECK_EQ(free_extents(p), A);

	/* A write that needs them waits for the discards, then keeps its
	 * bytes.  (The pause gives a discarder that let them go before
	 * discarding the time to do it, and this write to get them.) */
	usleep(200 * 1000);
	c = mkfile(p, "c.img");
	memset(buf, 0x3c, C * EXT);
	CHECK_EQ(vdp_write(p, c, buf, C * EXT, 0), (ssize_t)(C * EXT));
	CHECK_EQ(vdp_pool_commit(p), 0);
	CHECK_EQ(held(p), 0u);
	CHECK(member_bytes() + (A - C) * EXT <= before + SLACK);
	CHECK_EQ(vdp_read(p, c, got, C * EXT, 0), (ssize_t)(C * EXT));
	CHECK(memcmp(got, buf, C * EXT) == 0);
	CHECK_EQ(free_extents(p), A - C);

	/* Synchronous discards: done when the fdatasync returns. */
	vdp_pool_set_discard_sync(p, true);
	before = member_bytes();
	rmfile(p, "c.img", c);
	CHECK_EQ(vdp_fsync(p, b, true), 0);
	CHECK_EQ(held(p), 0u);
	CHECK(member_bytes() + C * EXT <= before + SLACK);
	CHECK_EQ(free_extents(p), A);

	CHECK_EQ(vdp_pool_check(p, report, NULL), 0);
	CHECK_EQ(vdp_pool_close(p), 0);
	CHECK_EQ(vdp_layers_set(NULL), 0);
	free(buf);
	free(got);
	remove_test_dir(dir);
	return check_done("test_discard");
}
