/* SPDX-License-Identifier: MIT */
/*
 * test_aio.c - vdp_read_start / vdp_write_start on a pool of one file
 * member, no FUSE: what they take and what they leave to the synchronous
 * calls, that the bytes go and come back, and that a truncate (an
 * exclusive io lock) waits for a write still in flight: the write is held
 * back in the submission queue until its thread polls, so without that
 * wait the truncate would free the extent under it.  A thread that
 * truncates under its own write finishes the write first, and the ring's
 * descriptor says when there are completions to poll.  Last, on power-loss
 * members, that a write acknowledged after another thread's fdatasync
 * flushed its member is flushed by the next one.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "layer.h"
#include "vdpool.h"

#define EXT (1u << 16) /* the pool's extent size (.extent_shift below) */
#define BS 4096u

static char dir[64], m0[96];

struct done {
	atomic_bool called;
	atomic_long r;
};

static void on_done(void *arg, ssize_t r)
{
	struct done *d = arg;

	atomic_store(&d->r, (long)r);
	atomic_store(&d->called, true);
}

/* Waits for the thread's I/O; returns the result of D's callback. */
static long wait_done(struct done *d)
{
	vdp_aio_poll(true);
	CHECK_EQ(vdp_aio_inflight(), 0u);
	CHECK(atomic_load(&d->called));
	return atomic_load(&d->r);
}

static void *aligned(size_t n, int byte)
{
	void *b = NULL;

	CHECK_EQ(posix_memalign(&b, BS, n), 0);
	memset(b, byte, n);
	return b;
}

static uint64_t mkfile(struct vdp_pool *p, const char *name)
{
	struct vdp_attr a;

	CHECK_EQ(vdp_create(p, VDP_ROOT_INO, name, S_IFREG | 0600, 0, 0, &a),
		 0);
	return a.ino;
}

static void set_size(struct vdp_pool *p, uint64_t ino, uint64_t size)
{
	struct vdp_attr a = {.size = size};

	CHECK_EQ(vdp_setattr(p, ino, &a, VDP_SET_SIZE, &a), 0);
}

/* Bytes written asynchronously read back, synchronously and not. */
static void round_trip(struct vdp_pool *p, uint64_t ino)
{
	struct done w = {0}, r = {0};
	uint8_t *out = aligned(BS, 0x5a), *in = aligned(BS, 0);

	CHECK(vdp_write_start(p, ino, out, BS, EXT + BS, on_done, &w));
	memset(out, 0, BS); /* the write copied it */
	CHECK_EQ(wait_done(&w), (long)BS);
	CHECK_EQ(vdp_read(p, ino, in, BS, EXT + BS), (ssize_t)BS);
	CHECK(in[0] == 0x5a && in[BS - 1] == 0x5a);
	memset(in, 0, BS);
	CHECK(vdp_read_start(p, ino, in, BS, EXT + BS, on_done, &r));
	CHECK_EQ(wait_done(&r), (long)BS);
	CHECK(in[0] == 0x5a && in[BS - 1] == 0x5a);
	free(out);
	free(in);
}

/* What goes to the synchronous calls: nothing done, false. */
static void refusals(struct vdp_pool *p, uint64_t ino, uint64_t hole_ino)
{
	struct done d = {0};
	uint8_t *b = aligned(2 * BS, 1);
	uint64_t clone = mkfile(p, "clone");

	CHECK(!vdp_write_start(p, ino, b, BS, 512, on_done, &d));
	CHECK(!vdp_read_start(p, ino, b + 512, BS, 0, on_done, &d));
	CHECK(!vdp_write_start(p, ino, b, 2 * BS, EXT - BS, on_done, &d));
	CHECK(!vdp_write_start(p, ino, b, BS, 2 * EXT, on_done, &d));
	CHECK(!vdp_read_start(p, hole_ino, b, BS, 0, on_done, &d));
	/* A shared extent is read, never written, in place. */
	CHECK_EQ(vdp_copy_range(p, ino, 0, clone, 0, 2 * EXT),
		 (ssize_t)(2 * EXT));
	CHECK(!vdp_write_start(p, ino, b, BS, 0, on_done, &d));
	CHECK(vdp_read_start(p, clone, b, BS, 0, on_done, &d));
	CHECK_EQ(wait_done(&d), (long)BS);
	CHECK_EQ(vdp_unlink(p, VDP_ROOT_INO, "clone"), 0);
	free(b);
}

struct truncation {
	struct vdp_pool *p;
	uint64_t ino;
	atomic_bool finished;
};

static void *truncate_thread(void *arg)
{
	struct truncation *t = arg;

	set_size(t->p, t->ino, 0);
	atomic_store(&t->finished, true);
	return NULL;
}

/* A truncate waits for the write in flight on the extent it frees. */
static void truncate_waits(struct vdp_pool *p, uint64_t ino)
{
	struct truncation t = {.p = p, .ino = ino};
	uint8_t *b = aligned(EXT, 7);
	struct done w = {0};
	pthread_t th;

	/* A new extent: the ones refusals() cloned count as shared. */
	CHECK_EQ(vdp_write(p, ino, b, EXT, 2 * EXT), (ssize_t)EXT);
	CHECK(vdp_write_start(p, ino, b, BS, 2 * EXT, on_done, &w));
	CHECK_EQ(pthread_create(&th, NULL, truncate_thread, &t), 0);
	usleep(200 * 1000);
	CHECK(!atomic_load(&t.finished)); /* held back, so still in flight */
	CHECK(!atomic_load(&w.called));
	CHECK_EQ(wait_done(&w), (long)BS);
	CHECK_EQ(pthread_join(th, NULL), 0);
	CHECK(atomic_load(&t.finished));

	/* The same thread: the write completes before the truncate. */
	CHECK_EQ(vdp_write(p, ino, b, EXT, 2 * EXT), (ssize_t)EXT);
	w = (struct done){0};
	CHECK(vdp_write_start(p, ino, b, BS, 2 * EXT, on_done, &w));
	set_size(p, ino, 0);
	CHECK(atomic_load(&w.called));
	CHECK_EQ(atomic_load(&w.r), (long)BS);
	free(b);
}

/* vdp_aio_fd is readable once a read has completed, and only then.  A
 * read the device finished while it was being submitted is reaped by the
 * same poll: then another, until one is still in flight. */
static void fd_wakes(struct vdp_pool *p, uint64_t ino)
{
	struct pollfd pfd = {.fd = vdp_aio_fd(), .events = POLLIN};
	uint8_t *b = aligned(BS, 0);
	struct done d;
	unsigned tries = 0;
	int r;

	CHECK(pfd.fd >= 0);
	do {
		CHECK_EQ(poll(&pfd, 1, 0), 0);
		d = (struct done){0};
		CHECK(vdp_read_start(p, ino, b, BS, EXT, on_done, &d));
	} while (vdp_aio_poll(false) == 1 && atomic_load(&d.called) &&
		 ++tries < 1000);
	if (tries == 1000) {
		fprintf(stderr, "fd_wakes: SKIPPED: every read completed "
				"while it was submitted\n");
		free(b);
		return;
	}
	/* EINTR: the kernel finishing the read on this thread. */
	while ((r = poll(&pfd, 1, 10000)) < 0 && errno == EINTR)
		;
	CHECK_EQ(r, 1);
	CHECK(!atomic_load(&d.called));
	CHECK_EQ(vdp_aio_poll(false), 1u);
	CHECK(atomic_load(&d.called) && atomic_load(&d.r) == (long)BS);
	CHECK_EQ(poll(&pfd, 1, 0), 0);
	free(b);
}

static void *fdatasync_thread(void *arg)
{
	struct truncation *t = arg;

	CHECK_EQ(vdp_fsync(t->p, t->ino, true), 0);
	return NULL;
}

/*
 * An acknowledged write is durable after the next fdatasync, also when an
 * fdatasync of another thread flushed its member while it was in flight.
 * On power-loss members (their writes stay in a volatile cache until a
 * flush; keep=none loses all the rest) the write reaches the member only
 * when its thread polls, after that flush.  The next fdatasync, which for
 * an overwrite only flushes the members written, must still flush this
 * one.
 */
static void late_write_is_flushed(void)
{
	uint8_t *old = aligned(EXT, 0x11), *new = aligned(BS, 0x22);
	uint8_t *got = aligned(BS, 0);
	struct truncation t = {0};
	struct done w = {0};
	pthread_t th;

	CHECK_EQ(vdp_layers_set("powerloss:manual,keep=none"), 0);
	CHECK_EQ(vdp_pool_open(m0, 0, &t.p), 0);
	vdp_pool_set_commit_interval(t.p, 0);
	t.ino = mkfile(t.p, "late");
	CHECK_EQ(vdp_write(t.p, t.ino, old, EXT, 0), (ssize_t)EXT);
	CHECK_EQ(vdp_fsync(t.p, t.ino, false), 0);

	CHECK(vdp_write_start(t.p, t.ino, new, BS, 0, on_done, &w));
	CHECK_EQ(pthread_create(&th, NULL, fdatasync_thread, &t), 0);
	CHECK_EQ(pthread_join(th, NULL), 0);
	CHECK_EQ(wait_done(&w), (long)BS); /* written and acknowledged */
	CHECK_EQ(vdp_fsync(t.p, t.ino, true), 0);
	vdp_powerloss_now();
	CHECK(vdp_pool_close(t.p) < 0); /* the members are frozen */

	CHECK_EQ(vdp_layers_set(NULL), 0);
	CHECK_EQ(vdp_pool_open(m0, VDP_OPEN_RDONLY, &t.p), 0);
	CHECK_EQ(vdp_read(t.p, t.ino, got, BS, 0), (ssize_t)BS);
	CHECK(got[0] == 0x22 && got[BS - 1] == 0x22);
	CHECK_EQ(vdp_pool_close(t.p), 0);
	free(old);
	free(new);
	free(got);
}

int main(void)
{
	struct vdp_create_opts o = {.name = "aio", .extent_shift = 16};
	const char *members[1] = {m0};
	struct vdp_pool *p = NULL;
	uint8_t *b;
	uint64_t ino, hole;

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
	ino = mkfile(p, "disk");
	hole = mkfile(p, "thin");
	set_size(p, hole, EXT);
	b = aligned(2 * EXT, 3);
	CHECK_EQ(vdp_write(p, ino, b, 2 * EXT, 0), (ssize_t)(2 * EXT));
	free(b);

	round_trip(p, ino);
	fd_wakes(p, ino);
	refusals(p, ino, hole);
	truncate_waits(p, ino);

	CHECK_EQ(vdp_pool_close(p), 0);
	late_write_is_flushed();
	remove_test_dir(dir);
	return check_done("test_aio");
}
