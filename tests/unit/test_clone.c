/* SPDX-License-Identifier: MIT */
/*
 * test_clone.c - clones through the store API, no FUSE: a whole-disk
 * copy_file_range is one transaction and the follow-up requests FUSE
 * makes of it change nothing at all; holes copied stay holes; write-side
 * sharing shares an extent written with the bytes of one just read
 * (whole, or in pieces cut anywhere and out of order), and never one whose
 * key matches but whose bytes differ (keys truncated to 0 bits: every
 * extent collides) or whose source was overwritten between the read and
 * the write; pieces written asynchronously share too, compared only once
 * they have landed.  vdp_pool_check must find nothing wrong after each
 * case.
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
#include "vdpool.h"

#define EXT (1u << 16) /* the pool's extent size (.extent_shift below) */

static char dir[64], m0[96];
static uint64_t rng = 0x2545f4914f6cdd1dull;

static void report(void *ctx, const char *line)
{
	(void)ctx;
	fprintf(stderr, "check: %s\n", line);
}

static void fill(uint8_t *b, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		rng ^= rng << 13;
		rng ^= rng >> 7;
		rng ^= rng << 17;
		b[i] = (uint8_t)rng;
	}
}

static uint64_t mkfile(struct vdp_pool *p, const char *name)
{
	struct vdp_attr a;

	CHECK_EQ(vdp_create(p, VDP_ROOT_INO, name, S_IFREG | 0600, 0, 0, &a),
		 0);
	return a.ino;
}

/* The extent id virtual extent X of INO maps (0: a hole). */
static uint64_t pid_of(struct vdp_pool *p, uint64_t ino, uint64_t x)
{
	struct vnode *v;
	const uint64_t *s;
	uint64_t pid = 0;

	pthread_mutex_lock(&p->meta_lock);
	v = vnode_get(p, ino);
	s = v ? rtree_lookup(&v->data, x) : NULL;
	if (s)
		pid = le64toh(*s);
	pthread_mutex_unlock(&p->meta_lock);
	return pid;
}

static uint32_t refs(struct vdp_pool *p, uint64_t pid)
{
	uint32_t r;

	pthread_mutex_lock(&p->meta_lock);
	r = extent_refcount(p, pid);
	pthread_mutex_unlock(&p->meta_lock);
	return r;
}

static uint64_t free_extents(struct vdp_pool *p)
{
	struct vdp_statfs st;

	vdp_pool_statfs(p, &st);
	return st.free_extents;
}

static void same_bytes(struct vdp_pool *p, uint64_t ino, const uint8_t *want,
		       size_t n)
{
	uint8_t *got = malloc(n);

	CHECK_EQ(vdp_read(p, ino, got, n, 0), (ssize_t)n);
	CHECK(memcmp(got, want, n) == 0);
	free(got);
}

/* A whole-disk clone of 40 extents and a bit, asked for in 7-extent
 * requests as FUSE would after a capped reply: the first request does it
 * all in one commit's worth of changes, the others are exact no-ops. */
static void whole_clone(struct vdp_pool *p)
{
	const size_t n = 40 * EXT + 12345;
	uint8_t *b = malloc(n);
	uint64_t src = mkfile(p, "golden.img"), dst = mkfile(p, "clone.img");
	uint64_t before;

	fill(b, n);
	CHECK_EQ(vdp_write(p, src, b, n, 0), (ssize_t)n);
	CHECK_EQ(vdp_pool_commit(p), 0);
	before = free_extents(p);
	CHECK_EQ(vdp_copy_range(p, src, 0, dst, 0, n), (ssize_t)n);
	CHECK_EQ(free_extents(p), before); /* the partial tail too */
	for (uint64_t x = 0; x <= 40; x++) {
		CHECK_EQ(pid_of(p, dst, x), pid_of(p, src, x));
		CHECK_EQ(refs(p, pid_of(p, src, x)), 2);
	}
	CHECK_EQ(vdp_pool_commit(p), 0);
	for (size_t off = 7 * EXT; off < n; off += 7 * EXT) {
		CHECK_EQ(vdp_copy_range(p, src, off, dst, off, n - off),
			 (ssize_t)(n - off));
		CHECK(!p->changed);
		CHECK_EQ(p->ndirty, 0);
	}
	for (uint64_t x = 0; x <= 40; x++)
		CHECK_EQ(refs(p, pid_of(p, src, x)), 2);
	same_bytes(p, dst, b, n);
	/* A clone into a disk that is longer: the tail is copied. */
	uint64_t longer = mkfile(p, "longer.img");
	struct vdp_attr a = {.size = n + 1};
	CHECK_EQ(vdp_setattr(p, longer, &a, VDP_SET_SIZE, &a), 0);
	CHECK_EQ(vdp_copy_range(p, src, 0, longer, 0, n), (ssize_t)n);
	CHECK(pid_of(p, longer, 40) != pid_of(p, src, 40));
	CHECK_EQ(pid_of(p, longer, 39), pid_of(p, src, 39));
	CHECK_EQ(vdp_pool_check(p, report, NULL), 0);
	free(b);
}

/* A copy of holes whose offsets do not line up leaves holes, also where
 * the destination had whole extents. */
static void holes_stay_holes(struct vdp_pool *p)
{
	uint64_t src = mkfile(p, "holey.img"), dst = mkfile(p, "dense.img");
	struct vdp_attr a = {.size = 4 * EXT};
	uint8_t *b = malloc(4 * EXT);

	fill(b, 4 * EXT);
	CHECK_EQ(vdp_setattr(p, src, &a, VDP_SET_SIZE, &a), 0);
	CHECK_EQ(vdp_write(p, dst, b, 4 * EXT, 0), 4 * EXT);
	CHECK_EQ(vdp_copy_range(p, src, 100, dst, EXT, 2 * EXT), 2 * EXT);
	CHECK_EQ(pid_of(p, dst, 1), 0);
	CHECK_EQ(pid_of(p, dst, 2), 0);
	memset(b + EXT, 0, 2 * EXT);
	same_bytes(p, dst, b, 4 * EXT);
	CHECK_EQ(vdp_pool_check(p, report, NULL), 0);
	free(b);
}

/* A clone lined up but not aligned, asked for again from a later offset
 * (the kernel's follow-up requests after a short reply): the follow-up
 * starts inside an extent that already is the source's, copies nothing
 * and takes no space; every whole extent stays shared. */
static void lined_up_followup(struct vdp_pool *p)
{
	uint8_t *a = malloc(6 * EXT);
	uint64_t src = mkfile(p, "lu-src.img"), dst = mkfile(p, "lu-dst.img");
	uint64_t before;

	fill(a, 6 * EXT);
	CHECK_EQ(vdp_write(p, src, a, 6 * EXT, 0), 6 * EXT);
	CHECK_EQ(vdp_copy_range(p, src, 100, dst, 100, 6 * EXT - 100),
		 6 * EXT - 100);
	before = free_extents(p);
	CHECK_EQ(vdp_copy_range(p, src, 2 * EXT + 100, dst, 2 * EXT + 100,
				4 * EXT - 100),
		 4 * EXT - 100);
	CHECK_EQ(free_extents(p), before);
	for (uint64_t x = 1; x < 6; x++)
		CHECK_EQ(pid_of(p, dst, x), pid_of(p, src, x));
	memset(a, 0, 100);
	same_bytes(p, dst, a, 6 * EXT);
	free(a);
}

/* Reads extent X of INO whole, as cp does, or in PIECES. */
static void read_extent_of(struct vdp_pool *p, uint64_t ino, uint64_t x,
			   unsigned pieces)
{
	uint8_t *b = malloc(EXT);
	size_t step = EXT / pieces;

	for (size_t o = 0; o < EXT; o += step)
		CHECK_EQ(vdp_read(p, ino, b + o, step, x * EXT + o),
			 (ssize_t)step);
	free(b);
}

static void write_side(struct vdp_pool *p)
{
	uint8_t *a = malloc(4 * EXT), *b = malloc(4 * EXT);
	uint64_t src = mkfile(p, "src.img"), d1 = mkfile(p, "d1.img");
	uint64_t d2 = mkfile(p, "d2.img"), d3 = mkfile(p, "d3.img");
	uint64_t shared, differ, s0, d0, before;
	/* Cut anywhere (the kernel splits unaligned user buffers), given
	 * out of order, one byte never written (a zero rsync skipped). */
	static const struct {
		size_t off, len;
	} cut[] = {{30001, EXT - 30001 - 100},
		   {0, 29000},
		   {EXT - 100, 100},
		   {29001, 1000}};

	fill(a, 4 * EXT);
	a[EXT + 29000] = 0;
	CHECK_EQ(vdp_write(p, src, a, 4 * EXT, 0), 4 * EXT);
	CHECK_EQ(vdp_pool_commit(p), 0);
	share_stats(p, &s0, &d0);

	/* Whole-extent writes of bytes just read: shared, nothing stored. */
	read_extent_of(p, src, 0, 1);
	before = free_extents(p);
	CHECK_EQ(vdp_write(p, d1, a, EXT, 0), EXT);
	CHECK_EQ(pid_of(p, d1, 0), pid_of(p, src, 0));
	CHECK_EQ(free_extents(p), before);
	share_stats(p, &shared, &differ);
	CHECK_EQ(shared, s0 + 1);
	same_bytes(p, d1, a, EXT);

	/* Pieces: the private copy is let go once shared. */
	read_extent_of(p, src, 1, 2); /* 32 KiB pieces start a stream */
	for (unsigned i = 0; i < sizeof(cut) / sizeof(cut[0]); i++)
		CHECK_EQ(vdp_write(p, d1, a + EXT + cut[i].off, cut[i].len,
				   EXT + cut[i].off),
			 (ssize_t)cut[i].len);
	CHECK_EQ(vdp_fsync(p, d1, false), 0); /* the writer is done */
	CHECK_EQ(pid_of(p, d1, 1), pid_of(p, src, 1));
	CHECK_EQ(refs(p, pid_of(p, src, 1)), 2);
	same_bytes(p, d1, a, 2 * EXT);

	/* Keys cut to no bits: every extent collides; only equal bytes
	 * share. */
	share_key_mask = 0;
	read_extent_of(p, src, 2, 1);
	fill(b, EXT);
	CHECK_EQ(vdp_write(p, d2, b, EXT, 0), EXT);
	CHECK(pid_of(p, d2, 0) != pid_of(p, src, 2));
	CHECK_EQ(refs(p, pid_of(p, d2, 0)), 1);
	share_stats(p, &shared, &differ);
	CHECK(differ > d0);
	same_bytes(p, d2, b, EXT); /* the latest candidate now */
	read_extent_of(p, src, 2, 1);
	CHECK_EQ(vdp_write(p, d2, a + 2 * EXT, EXT, EXT), EXT);
	CHECK_EQ(pid_of(p, d2, 1), pid_of(p, src, 2)); /* equal: shared */
	share_key_mask = UINT64_MAX;

	/* The source changes between the read and the write. */
	read_extent_of(p, src, 3, 1);
	memcpy(b, a + 3 * EXT, EXT);
	b[777] ^= 1;
	CHECK_EQ(vdp_write(p, src, b + 777, 1, 3 * EXT + 777), 1);
	CHECK_EQ(vdp_write(p, d3, a + 3 * EXT, EXT, 0), EXT);
	CHECK(pid_of(p, d3, 0) != pid_of(p, src, 3));
	same_bytes(p, d3, a + 3 * EXT, EXT);
	/* ... or after the share: copy-on-write keeps the clone. */
	read_extent_of(p, src, 3, 1);
	CHECK_EQ(vdp_write(p, d3, b, EXT, EXT), EXT);
	CHECK_EQ(pid_of(p, d3, 1), pid_of(p, src, 3));
	CHECK_EQ(vdp_write(p, src, "x", 1, 3 * EXT), 1);
	CHECK(pid_of(p, d3, 1) != pid_of(p, src, 3));
	uint8_t *got = malloc(2 * EXT);
	CHECK_EQ(vdp_read(p, d3, got, 2 * EXT, 0), 2 * EXT);
	CHECK(memcmp(got + EXT, b, EXT) == 0);
	free(got);

	CHECK_EQ(vdp_pool_commit(p), 0);
	CHECK_EQ(vdp_pool_check(p, report, NULL), 0);
	free(a);
	free(b);
}

static void on_done(void *arg, ssize_t r)
{
	*(ssize_t *)arg = r;
}

/* Writes EXT bytes of B over the allocated extent 0 of INO in 4 KiB
 * pieces, last piece first, each taken asynchronously (a deep queue's
 * writes), and waits for them. */
static void write_async(struct vdp_pool *p, uint64_t ino, const uint8_t *b)
{
	ssize_t r[EXT / 4096];

	for (unsigned i = EXT / 4096; i-- > 0;) {
		r[i] = 0;
		CHECK(vdp_write_start(p, ino, b + i * 4096, 4096, i * 4096,
				      on_done, &r[i]));
	}
	vdp_aio_poll(true);
	for (unsigned i = 0; i < EXT / 4096; i++)
		CHECK_EQ(r[i], 4096);
}

/* Write-side sharing of writes taken asynchronously, as a deep queue's
 * are while a copy goes on: they share as the synchronous ones do, and the
 * bytes compared are the ones written, not what the extent held while the
 * writes were in flight. */
static void write_side_async(struct vdp_pool *p)
{
	uint8_t *a = malloc(EXT), *b = malloc(EXT);
	uint64_t src = mkfile(p, "as-src.img"), d = mkfile(p, "as-d.img");
	uint64_t e = mkfile(p, "as-e.img");

	fill(a, EXT);
	fill(b, EXT);
	CHECK_EQ(vdp_write(p, src, a, EXT, 0), EXT);
	/* Allocated, and like no candidate: e is src but for one byte. */
	CHECK_EQ(vdp_write(p, d, b, EXT, 0), EXT);
	a[0] ^= 1;
	CHECK_EQ(vdp_write(p, e, a, EXT, 0), EXT);
	a[0] ^= 1;

	read_extent_of(p, src, 0, 1);
	write_async(p, d, a);
	CHECK_EQ(pid_of(p, d, 0), pid_of(p, src, 0));
	CHECK_EQ(refs(p, pid_of(p, src, 0)), 2);
	same_bytes(p, d, a, EXT);

	/* Every key collides.  e's extent holds src's bytes, and B is them
	 * but one byte in the piece written last: compared while that piece
	 * is in flight, e would be shared and the byte lost. */
	share_key_mask = 0;
	CHECK_EQ(vdp_write(p, e, a, 1, 0), 1);
	CHECK_EQ(vdp_fsync(p, e, true), 0); /* ends that write's stream */
	memcpy(b, a, EXT);
	b[100] ^= 1;
	read_extent_of(p, src, 0, 1);
	write_async(p, e, b);
	share_key_mask = UINT64_MAX;
	CHECK(pid_of(p, e, 0) != pid_of(p, src, 0));
	same_bytes(p, e, b, EXT);
	same_bytes(p, src, a, EXT);

	CHECK_EQ(vdp_pool_commit(p), 0);
	CHECK_EQ(vdp_pool_check(p, report, NULL), 0);
	free(a);
	free(b);
}

int main(void)
{
	struct vdp_create_opts o = {.name = "clone", .extent_shift = 16};
	const char *members[1] = {m0};
	struct vdp_pool *p = NULL;

	if (!make_test_dir(dir))
		return 1;
	snprintf(m0, sizeof(m0), "%s/m0", dir);
	if (!make_member(m0, 64 << 20))
		return 1;
	CHECK_EQ(vdp_pool_create(members, 1, &o), 0);
	if (vdp_pool_open(m0, 0, &p) < 0) {
		fprintf(stderr, "open: %s\n", vdp_last_error());
		return 1;
	}
	vdp_pool_set_commit_interval(p, 0); /* commits only when told */
	whole_clone(p);
	lined_up_followup(p);
	holes_stay_holes(p);
	write_side(p);
	write_side_async(p);
	CHECK_EQ(vdp_pool_close(p), 0);
	CHECK_EQ(vdp_pool_open(m0, VDP_OPEN_RDONLY, &p), 0);
	CHECK_EQ(vdp_pool_check(p, report, NULL), 0);
	CHECK_EQ(vdp_pool_close(p), 0);
	remove_test_dir(dir);
	return check_done("test_clone");
}
