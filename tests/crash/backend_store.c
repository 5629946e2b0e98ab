/* SPDX-License-Identifier: MIT */
/*
 * backend_store.c - the crash test's in-process backend: the workload's
 * operations as calls of the store API (store/vdpool.h) on a pool opened in
 * this process, whose members the power-loss layer wraps (store/layer.h,
 * then=freeze: after the crash every member I/O fails with EIO).
 *
 * A disk's handle is its inode number, on which the backend holds the
 * lookup reference vdp_create gave, as an open file would: an unlinked disk
 * lives until close drops it.  The commit timer is off, so a point replays
 * exactly: commits happen at syncs, at a full pool, where the workload
 * plays the timer (commit) and at close only.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "backends.h"
#include "layer.h"
#include "vdpool.h"

struct store_backend {
	struct backend b;
	struct vdp_pool *p;
	const char *spare, *leaving; /* reshape's members */
};

static struct vdp_pool *pool_of(struct backend *b)
{
	return ((struct store_backend *)b)->p;
}

static int st_create(struct backend *b, const char *name, int64_t *h,
		     uint64_t *ino)
{
	struct vdp_attr a;
	int r = vdp_create(pool_of(b), VDP_ROOT_INO, name, S_IFREG | 0644, 0, 0,
			   &a);

	if (r == 0) {
		*h = (int64_t)a.ino;
		*ino = a.ino;
	}
	return r;
}

static int st_close(struct backend *b, int64_t h)
{
	vdp_forget(pool_of(b), (uint64_t)h, 1);
	return 0;
}

static int st_unlink(struct backend *b, const char *name)
{
	return vdp_unlink(pool_of(b), VDP_ROOT_INO, name);
}

static int st_rename(struct backend *b, const char *from, const char *to)
{
	return vdp_rename(pool_of(b), VDP_ROOT_INO, from, VDP_ROOT_INO, to, 0);
}

static int st_open(struct backend *b, const char *name, int64_t *h)
{
	struct vdp_attr a;
	int r = vdp_lookup(pool_of(b), VDP_ROOT_INO, name, &a);

	if (r == 0)
		*h = (int64_t)a.ino;
	return r;
}

static ssize_t st_pwrite(struct backend *b, int64_t h, const void *buf,
			 size_t len, uint64_t off)
{
	return vdp_write(pool_of(b), (uint64_t)h, buf, len, off);
}

static int st_fsync(struct backend *b, int64_t h, bool datasync)
{
	return vdp_fsync(pool_of(b), h < 0 ? VDP_ROOT_INO : (uint64_t)h,
			 datasync);
}

static void batch_done(void *arg, ssize_t r)
{
	((struct wreq *)arg)->res = r;
}

struct batch_sync {
	struct backend *b;
	struct wbatch *wb;
};

static void *batch_sync(void *arg)
{
	struct batch_sync *bs = arg;

	bs->wb->sync_res = st_fsync(bs->b, bs->wb->sync_h, true);
	return NULL;
}

/* As the daemon does with a deep queue: asynchronously where the store
 * takes it, all submitted before any completes.  The batch's fdatasync
 * runs in another thread before this one polls, which is when the test
 * layers do the writes: it flushes the members before the writes reach
 * them, as a flush that overtook them on a device would.  Unless that
 * fdatasync waits for these writes (write-side sharing tries an extent
 * they complete, under the disk's io lock): then, after SYNC_WAIT_MS,
 * this thread polls them, as a worker of the daemon would. */
#define SYNC_WAIT_MS 200
static void st_pwrite_batch(struct backend *b, int64_t h, struct wbatch *wb)
{
	struct batch_sync bs = {b, wb};
	struct timespec ts;
	pthread_t th;

	for (size_t i = 0; i < wb->n; i++) {
		struct wreq *q = &wb->q[i];

		if (!vdp_write_start(pool_of(b), (uint64_t)h, q->buf, q->len,
				     q->off, batch_done, q))
			q->res = vdp_write(pool_of(b), (uint64_t)h, q->buf,
					   q->len, q->off);
	}
	if (wb->sync && pthread_create(&th, NULL, batch_sync, &bs) == 0) {
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += SYNC_WAIT_MS * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		if (pthread_timedjoin_np(th, NULL, &ts) != 0) {
			vdp_aio_poll(true);
			pthread_join(th, NULL);
		}
	} else if (wb->sync)
		batch_sync(&bs);
	vdp_aio_poll(true);
}

static ssize_t st_pread(struct backend *b, int64_t h, void *buf, size_t len,
			uint64_t off)
{
	return vdp_read(pool_of(b), (uint64_t)h, buf, len, off);
}

static int st_truncate(struct backend *b, int64_t h, uint64_t size)
{
	struct vdp_attr a = {.size = size};

	return vdp_setattr(pool_of(b), (uint64_t)h, &a, VDP_SET_SIZE, NULL);
}

static int st_fallocate(struct backend *b, int64_t h, int mode, uint64_t off,
			uint64_t len)
{
	return vdp_fallocate(pool_of(b), (uint64_t)h, mode, off, len);
}

/* What fs_copy_file_range does with a reply that says at most REPLY_MAX
 * for a copy whose offsets line up inside an extent (the FUSE reply is 32
 * bits; 3 extents here, as crash.fuse's daemon is told): the first call
 * does the whole clone, as one transaction, and reports a part; the
 * workload calls again for the rest (no-ops), and crashes land between
 * the calls. */
#define REPLY_MAX (3u << 16)

static ssize_t st_copy(struct backend *b, int64_t in, uint64_t off_in,
		       int64_t out, uint64_t off_out, size_t len)
{
	ssize_t n = vdp_copy_range(pool_of(b), (uint64_t)in, off_in,
				   (uint64_t)out, off_out, len);

	if ((off_in - off_out) % (1u << 16) == 0 && n > (ssize_t)REPLY_MAX)
		n = REPLY_MAX; /* 1 << 16: the pool's extent size */
	return n;
}

static int st_size(struct backend *b, int64_t h, uint64_t *size)
{
	struct vdp_attr a;
	int r = vdp_getattr(pool_of(b), (uint64_t)h, &a);

	if (r == 0)
		*size = a.size;
	return r;
}

struct listing {
	struct rentry *e;
	size_t n, cap;
	int err;
};

static int list_one(void *ctx, const char *name, const struct vdp_attr *a,
		    uint64_t next)
{
	struct listing *l = ctx;

	(void)next;
	if (!S_ISREG(a->mode))
		return 0;
	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 16;
		struct rentry *e = realloc(l->e, cap * sizeof(*e));

		if (!e) {
			l->err = -ENOMEM;
			return 1;
		}
		l->e = e;
		l->cap = cap;
	}
	snprintf(l->e[l->n].name, NAME_LEN, "%.*s", NAME_LEN - 1, name);
	l->e[l->n].ino = a->ino;
	l->e[l->n].size = a->size;
	l->n++;
	return 0;
}

int rentry_cmp(const void *a, const void *b)
{
	return strcmp(((const struct rentry *)a)->name,
		      ((const struct rentry *)b)->name);
}

static int st_list(struct backend *b, struct rentry **e, size_t *n)
{
	struct listing l = {0};
	int r = vdp_readdir(pool_of(b), VDP_ROOT_INO, 0, list_one, &l);

	if (r == 0)
		r = l.err;
	if (r < 0) {
		free(l.e);
		return r;
	}
	if (l.n)
		qsort(l.e, l.n, sizeof(*l.e), rentry_cmp);
	*e = l.e;
	*n = l.n;
	return 0;
}

static int st_commit(struct backend *b)
{
	return vdp_pool_commit(pool_of(b));
}

static bool st_crashed(struct backend *b, int err)
{
	(void)b;
	(void)err;
	return vdp_powerloss_happened();
}

static int st_reshape(struct backend *b, bool add)
{
	struct store_backend *s = (struct store_backend *)b;
	struct vdp_task_info t;
	int r;

	if (!s->spare)
		return -EOPNOTSUPP;
	if (add)
		return vdp_pool_add_member(s->p, s->spare, false);
	r = vdp_pool_remove_member(s->p, s->leaving);
	if (r < 0)
		return r;
	/* The removal runs on the pool's thread; the power may go there. */
	do {
		struct timespec ts = {0, 2 * 1000000};

		nanosleep(&ts, NULL);
		vdp_pool_task(s->p, &t);
	} while (t.state == VDP_TASK_RUNNING);
	if (t.state != VDP_TASK_DONE && !vdp_powerloss_happened())
		fprintf(stderr, "crashtest: the removal failed: %s\n", t.error);
	return t.state == VDP_TASK_DONE ? 0 : -EIO;
}

static const struct backend_ops store_ops = {
	.name = "store",
	.create = st_create,
	.close = st_close,
	.unlink = st_unlink,
	.rename = st_rename,
	.open = st_open,
	.pwrite = st_pwrite,
	.pwrite_batch = st_pwrite_batch,
	.pread = st_pread,
	.truncate = st_truncate,
	.fallocate = st_fallocate,
	.copy = st_copy,
	.fsync = st_fsync,
	.size = st_size,
	.list = st_list,
	.commit = st_commit,
	.crashed = st_crashed,
	.reshape = st_reshape,
};

void store_backend_set_reshape(struct backend *b, const char *spare,
			       const char *leaving)
{
	struct store_backend *s = (struct store_backend *)b;

	s->spare = spare;
	s->leaving = leaving;
}

struct backend *store_backend_new(struct vdp_pool *p)
{
	struct store_backend *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->b.ops = &store_ops;
	s->p = p;
	return &s->b;
}

void store_backend_free(struct backend *b)
{
	free(b);
}
