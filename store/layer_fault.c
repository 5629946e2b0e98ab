/* SPDX-License-Identifier: MIT */
/*
 * layer_fault.c - the fault-injection test layer: a member that wraps
 * another and fails chosen operations with a chosen errno (or, with delay,
 * holds them up), either the Nth matching operation or each with
 * probability P, once (transient) or from then on (persist).
 * Deterministic per seed for a given order of calls.
 *
 * Must never let a failed operation reach the inner member: a failed write
 * changes nothing, as a disk that rejects the command would.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "layer_internal.h"

struct fault_member {
	struct vdp_member m;
	struct vdp_member *inner;
	struct fault_cfg cfg;
	pthread_mutex_t lock; /* the fields below */
	uint64_t count;	      /* matching operations so far */
	uint64_t rng;
	bool failed; /* one has failed */
};

static struct fault_member *fm_of(struct vdp_member *m)
{
	return m->priv;
}

static const char *op_name(unsigned op)
{
	switch (op) {
	case FAULT_READ:
		return "read";
	case FAULT_WRITE:
		return "write";
	case FAULT_FLUSH:
		return "flush";
	case FAULT_ZERO:
		return "write_zeroes";
	default:
		return "discard";
	}
}

/* 0 when operation OP on [OFF, OFF + LEN) may go ahead, else the -errno
 * it fails with.  The first injected failure on a member is logged. */
static int inject(struct fault_member *f, unsigned op, uint64_t off,
		  uint64_t len)
{
	bool fail, first;
	uint64_t n;

	if (!(f->cfg.ops & op))
		return 0;
	if (f->cfg.to && op != FAULT_FLUSH &&
	    (off >= f->cfg.to || off + len <= f->cfg.from))
		return 0;
	pthread_mutex_lock(&f->lock);
	n = ++f->count;
	if (f->cfg.persist && f->failed)
		fail = true;
	else if (f->cfg.nth)
		fail = n == f->cfg.nth;
	else /* 53 random bits as a double in [0, 1) */
		fail = (double)(layer_rand(&f->rng) >> 11) * 0x1.0p-53 <
		       f->cfg.p;
	first = fail && !f->failed;
	if (fail)
		f->failed = true;
	pthread_mutex_unlock(&f->lock);
	if (first && f->cfg.delay_ms)
		fprintf(stderr,
			"vdpool test layers: fault: member %s: %s #%llu waits "
			"%u ms%s\n",
			f->m.path, op_name(op), (unsigned long long)n,
			f->cfg.delay_ms,
			f->cfg.persist ? " (and every later one)" : "");
	else if (first)
		fprintf(stderr,
			"vdpool test layers: fault: member %s: %s #%llu fails "
			"with %s%s\n",
			f->m.path, op_name(op), (unsigned long long)n,
			strerror(f->cfg.err),
			f->cfg.persist ? " (and every later one)" : "");
	if (fail && f->cfg.delay_ms) {
		unsigned ms = f->cfg.delay_ms;
		struct timespec t = {ms / 1000, ms % 1000 * 1000000L};

		while (nanosleep(&t, &t) < 0 && errno == EINTR)
			;
		return 0;
	}
	return fail ? -f->cfg.err : 0;
}

static int fault_pread(struct vdp_member *m, void *buf, size_t len,
		       uint64_t off)
{
	struct fault_member *f = fm_of(m);
	int r = inject(f, FAULT_READ, off, len);

	return r ? r : f->inner->ops->pread(f->inner, buf, len, off);
}

static int fault_pwrite(struct vdp_member *m, const void *buf, size_t len,
			uint64_t off)
{
	struct fault_member *f = fm_of(m);
	int r = inject(f, FAULT_WRITE, off, len);

	return r ? r : f->inner->ops->pwrite(f->inner, buf, len, off);
}

static int fault_flush(struct vdp_member *m)
{
	struct fault_member *f = fm_of(m);
	int r = inject(f, FAULT_FLUSH, 0, 0);

	return r ? r : f->inner->ops->flush(f->inner);
}

static int fault_write_zeroes(struct vdp_member *m, uint64_t off, uint64_t len)
{
	struct fault_member *f = fm_of(m);
	int r = inject(f, FAULT_ZERO, off, len);

	return r ? r : f->inner->ops->write_zeroes(f->inner, off, len);
}

static int fault_discard(struct vdp_member *m, uint64_t off, uint64_t len)
{
	struct fault_member *f = fm_of(m);
	int r = inject(f, FAULT_DISCARD, off, len);

	if (r)
		return r;
	if (!f->inner->ops->discard)
		return -EOPNOTSUPP;
	return f->inner->ops->discard(f->inner, off, len);
}

static int fault_lock(struct vdp_member *m, bool exclusive)
{
	struct fault_member *f = fm_of(m);

	if (!f->inner->ops->lock)
		return 0;
	return f->inner->ops->lock(f->inner, exclusive);
}

static void fault_close(struct vdp_member *m)
{
	struct fault_member *f = fm_of(m);

	vdp_member_close(f->inner);
	pthread_mutex_destroy(&f->lock);
	free(f);
}

static const struct vdp_member_ops fault_ops = {
	.kind = "fault",
	.pread = fault_pread,
	.pwrite = fault_pwrite,
	.submit = layer_submit,
	.flush = fault_flush,
	.write_zeroes = fault_write_zeroes,
	.discard = fault_discard,
	.lock = fault_lock,
	.close = fault_close,
};

int fault_wrap(const struct fault_cfg *c, struct vdp_member *inner,
	       struct vdp_member **out)
{
	struct fault_member *f = calloc(1, sizeof(*f));

	if (!f)
		return -ENOMEM;
	f->inner = inner;
	f->cfg = *c;
	/* Members of one spec draw different sequences from one seed. */
	f->rng = c->seed ^ (c->index * 0xd1b54a32d192ed03ull);
	pthread_mutex_init(&f->lock, NULL);
	f->m.ops = &fault_ops;
	f->m.path = inner->path;
	f->m.size = inner->size;
	f->m.align = inner->align;
	f->m.kind = inner->kind;
	f->m.priv = f;
	*out = &f->m;
	return 0;
}
