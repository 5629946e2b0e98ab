/* SPDX-License-Identifier: MIT */
/*
 * commit.c - transactions: turning the changes in memory into the next
 * durable state of the pool, in an order that survives a crash anywhere.
 *
 * A commit (docs/architecture.md, "the life of a write"):
 *   1. under meta_lock: write every changed tree node to a fresh block (in
 *      memory, sealed), take the lists of what this transaction freed;
 *   2. flush every member that was written: the data of newly allocated
 *      extents is durable before any metadata that maps it;
 *   3. write the new metadata blocks to each of their copies, flush;
 *   4. write superblock slot txid % 2 on every member, flush each;
 *   5. only now release the metadata blocks the transaction freed, and
 *      hand its freed extents to the discarder, which gives them back to
 *      their members (discard) and then to the allocator.
 * A crash before 4 completes on some member leaves the previous commit
 * (whose blocks nothing overwrote) or this one; both are whole.
 *
 * The discarder is a thread of its own because a punch per extent of a
 * member file that small writes cut up can take the host filesystem's
 * journal seconds: a commit that discarded held back every fsync in the
 * pool meanwhile (11 s after removing a disk of 2 GiB of random 4 KiB
 * writes).  A crash before the discards loses only them: the extents are
 * free in the commit, and a new extent is zeroed before it is read.
 *
 * Must never: write a superblock after a failed write or flush (the
 * commit fails; the next one retries it, see requeue()), reuse a freed
 * block or extent before the transaction that freed it is durable, or
 * an extent before its discard is done.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

static uint64_t now_ms(void);

int commit_queue(struct vdp_pool *p, uint64_t addr, void *blk)
{
	if (p->nq == p->qcap) {
		size_t cap = p->qcap ? p->qcap * 2 : 64;
		struct qbuf *q = realloc(p->q, cap * sizeof(*q));

		if (!q) {
			free(blk);
			return -ENOMEM;
		}
		p->q = q;
		p->qcap = cap;
	}
	p->q[p->nq].addr = addr;
	p->q[p->nq].blk = blk;
	p->nq++;
	return 0;
}

static int flush_job(struct vdp_pool *p, unsigned i, void *ctx)
{
	struct pmember *pm = &p->members[i];
	int r = pm->m->ops->flush(pm->m);

	(void)ctx;
	if (r < 0) {
		atomic_store(&pm->written, true);
		member_error(p, pm, IO_FLUSH, "flush", r);
	}
	return r;
}

/* Flushes every member written since its last flush, all at once. */
static int flush_members(struct vdp_pool *p)
{
	uint64_t mask = 0;

	for (unsigned i = 0; i < p->nmembers; i++)
		if (atomic_exchange(&p->members[i].written, false))
			mask |= 1ull << i;
	return mask ? pool_each_member(p, mask, flush_job, NULL) : 0;
}

static int write_queue(struct vdp_pool *p, struct qbuf *q, size_t nq)
{
	for (size_t i = 0; i < nq; i++) {
		int r = pool_meta_write(p, q[i].addr, q[i].blk);

		if (r < 0)
			return r;
	}
	return flush_members(p);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* The most one discard call gives back: each call holds the member file's
 * inode lock for as long as the host filesystem takes over the range (a
 * range that small writes cut into pieces takes long), and the pool's
 * writes and flushes to that member wait meanwhile.  Another disk's
 * fdatasync waited up to 2.5 s with a whole run per call, 46-55 ms with a
 * MiB, for the same total time (11 s for 2 GiB). */
#define DISCARD_MAX (1u << 20)

/* Discards the extents in EXT: a run of neighbours up to DISCARD_MAX (or
 * one extent) per call. */
static void discard_extents(struct vdp_pool *p, struct u64vec *ext)
{
	if (ext->n == 0)
		return;
	qsort(ext->v, ext->n, sizeof(ext->v[0]), cmp_u64);
	for (size_t i = 0, j; i < ext->n; i = j) {
		struct pmember *pm;
		uint64_t off;

		/* Same member and the next index: the next extent on disk. */
		for (j = i + 1;
		     j < ext->n && ext->v[j] == ext->v[j - 1] + 1 &&
		     VDP_PID_MEMBER(ext->v[j]) == VDP_PID_MEMBER(ext->v[i]) &&
		     (j - i + 1) * p->extent_size <= DISCARD_MAX;
		     j++)
			;
		pool_member_offset(p, ext->v[i], &pm, &off);
		if (pm->m->ops->discard)
			(void)pm->m->ops->discard(pm->m, off,
						  (j - i) * p->extent_size);
	}
}

/* Hands the extents in EXT to the discarder, if it runs, and empties EXT;
 * what it cannot take (no memory) stays in EXT. */
static void discard_later(struct vdp_pool *p, struct u64vec *ext)
{
	size_t i = 0;

	pthread_mutex_lock(&p->meta_lock);
	if (p->discarder_started && !p->discarder_stopping &&
	    !p->discard_sync) {
		if (p->discard.n == 0) {
			free(p->discard.v);
			p->discard = *ext;
			i = ext->n;
			memset(ext, 0, sizeof(*ext));
		}
		for (; i < ext->n; i++)
			if (u64vec_push(&p->discard, ext->v[i]) < 0)
				break;
		p->discard_held += i;
		pthread_cond_broadcast(&p->discard_cv);
	}
	pthread_mutex_unlock(&p->meta_lock);
	if (i && ext->n) {
		memmove(ext->v, ext->v + i, (ext->n - i) * sizeof(ext->v[0]));
		ext->n -= i;
	}
}

/* Waits until the discarder has let go of every extent handed to it. */
static void discard_wait(struct vdp_pool *p)
{
	pthread_mutex_lock(&p->meta_lock);
	while (p->discard_held)
		pthread_cond_wait(&p->discard_cv, &p->meta_lock);
	pthread_mutex_unlock(&p->meta_lock);
}

/* The discarder: takes what waits in p->discard, discards it, and releases
 * it to the allocator, until told to stop with nothing left. */
static void *discard_main(void *arg)
{
	struct vdp_pool *p = arg;
	struct u64vec b, none = {0};
	size_t n, live;

	pthread_mutex_lock(&p->meta_lock);
	for (;;) {
		while (p->discard.n == 0 && !p->discarder_stopping)
			pthread_cond_wait(&p->discard_cv, &p->meta_lock);
		if (p->discard.n == 0)
			break;
		b = p->discard;
		memset(&p->discard, 0, sizeof(p->discard));
		/* One referenced again is not discarded (release_pending
		 * keeps it too). */
		n = b.n;
		for (size_t i = live = 0; i < n; i++)
			if (extent_refcount(p, b.v[i]) == 0)
				b.v[live++] = b.v[i];
		b.n = live;
		pthread_mutex_unlock(&p->meta_lock);
		discard_extents(p, &b);
		pthread_mutex_lock(&p->meta_lock);
		release_pending(p, &b, &none);
		p->discard_held -= n;
		free(b.v);
		pthread_cond_broadcast(&p->discard_cv);
	}
	pthread_mutex_unlock(&p->meta_lock);
	return NULL;
}

/*
 * Drops from Q the blocks a failed commit handed back (its first NREQ, see
 * requeue()) that this transaction frees: their nodes changed again and
 * went to new blocks, so no superblock will name them (they stay taken
 * until the commit is durable, like every free).  Without this each failed
 * commit added all its blocks to the next one, and under a member that
 * fails now and then a commit grew until none could get through.  Returns
 * the blocks left.
 */
static size_t drop_superseded(struct qbuf *q, size_t nq, size_t nreq,
			      struct u64vec *meta)
{
	size_t n = 0;

	if (nreq == 0 || meta->n == 0)
		return nq;
	qsort(meta->v, meta->n, sizeof(meta->v[0]), cmp_u64);
	for (size_t i = 0; i < nq; i++) {
		if (i < nreq && bsearch(&q[i].addr, meta->v, meta->n,
					sizeof(meta->v[0]), cmp_u64)) {
			free(q[i].blk);
			continue;
		}
		q[n++] = q[i];
	}
	return n;
}

/*
 * Hands the blocks and frees of a commit that failed on I/O back to the
 * open transaction.  The next commit has the same txid and writes these
 * blocks again before its own (its nodes that changed since go to new
 * blocks, and these become its frees).  So a failed write or flush fails
 * the fsync that needed it, and a later commit that gets through makes
 * everything durable.  Under meta_lock; the pool's queue is empty here.
 * Returns 0, or -ENOMEM after which the pool refuses changes.
 */
static int requeue(struct vdp_pool *p, struct qbuf *q, size_t nq,
		   const struct u64vec *ext, const struct u64vec *meta)
{
	p->q = q;
	p->nq = p->qcap = nq;
	p->changed = true;
	for (size_t i = 0; i < ext->n; i++)
		if (u64vec_push(&p->pend_ext, ext->v[i]) < 0)
			goto nomem;
	for (size_t i = 0; i < meta->n; i++)
		if (u64vec_push(&p->pend_meta, meta->v[i]) < 0)
			goto nomem;
	return 0;
nomem:
	p->failed = true;
	return -ENOMEM;
}

/* Commits (FULL: timestamps too) or, when nothing else changed, only
 * flushes the members written since their last flush. */
static int do_commit(struct vdp_pool *p, bool full)
{
	struct u64vec ext, meta;
	struct qbuf *q;
	size_t nq, nreq;
	uint64_t txid;
	int r;

	pthread_mutex_lock(&p->meta_lock);
	if (p->failed) {
		pthread_mutex_unlock(&p->meta_lock);
		vdp_set_error("pool %s: an earlier commit failed; remount",
			      p->name);
		return -EIO;
	}
	if (!p->changed && !(full && p->times_changed) && p->pend_ext.n == 0 &&
	    p->pend_meta.n == 0) {
		pthread_mutex_unlock(&p->meta_lock);
		return flush_members(p);
	}
	txid = p->txid + 1;
	p->build_txid = txid;
	nreq = p->nq; /* what a failed commit handed back */
	r = ns_commit(p);
	if (r == 0)
		r = rtree_commit(p, &p->refc, &p->sb_refc);
	if (r == 0)
		r = rtree_commit(p, &p->inodes, &p->sb_inodes);
	p->sb_next_ino = p->next_ino;
	q = p->q;
	nq = p->nq;
	p->q = NULL;
	p->nq = p->qcap = 0;
	ext = p->pend_ext;
	meta = p->pend_meta;
	memset(&p->pend_ext, 0, sizeof(p->pend_ext));
	memset(&p->pend_meta, 0, sizeof(p->pend_meta));
	p->releasing = ext.n + meta.n;
	p->changed = p->times_changed = false;
	if (r < 0)
		p->failed = true;
	pthread_mutex_unlock(&p->meta_lock);

	if (r == 0)
		nq = drop_superseded(q, nq, nreq, &meta);
	if (r == 0)
		r = flush_members(p);
	if (r == 0)
		r = write_queue(p, q, nq);
	if (r == 0)
		r = pool_write_super(p, txid);
	if (r == 0) {
		discard_later(p, &ext);
		discard_extents(p, &ext);
	}

	pthread_mutex_lock(&p->meta_lock);
	pthread_mutex_lock(&p->err_lock);
	snprintf(p->commit_error, sizeof(p->commit_error), "%s",
		 r ? vdp_last_error() : "");
	pthread_mutex_unlock(&p->err_lock);
	p->releasing = 0;
	if (r == 0) {
		p->txid = txid;
		release_pending(p, &ext, &meta);
	} else if (!p->failed) {
		/* An I/O error: no superblock names this transaction's blocks
		 * on every member yet.  The next commit takes them over. */
		if (requeue(p, q, nq, &ext, &meta) < 0)
			r = -ENOMEM;
		q = NULL;
		nq = 0;
	}
	pthread_mutex_unlock(&p->meta_lock);
	p->n_commits++;
	for (size_t i = 0; i < nq; i++)
		free(q[i].blk);
	free(q);
	free(ext.v);
	free(meta.v);
	return r;
}

/*
 * Group commit: callers that arrive while a commit runs wait and share the
 * next one, which covers everything done before any of them asked.  TIMES:
 * the caller needs timestamps durable too (fsync); fdatasync does not, and
 * after overwrites of mapped extents, the only change, it costs one flush
 * per written member and no metadata write at all.
 */
static int sync_with(struct vdp_pool *p, bool times,
		     int (*prep)(struct vdp_pool *p, void *ctx), void *ctx)
{
	uint64_t mine, covers;
	bool full;
	int r, rp = 0;

	if (p->rdonly)
		return 0;
	vdp_clear_error();
	pthread_mutex_lock(&p->commit_lock);
	if (times)
		p->want_times = true;
	mine = ++p->tickets;
	while (p->committing)
		pthread_cond_wait(&p->commit_cv, &p->commit_lock);
	if (!prep && p->done_ticket >= mine) {
		/* A commit that started after we asked covered us. */
		r = p->done_result;
		pthread_mutex_unlock(&p->commit_lock);
		return r;
	}
	p->committing = true;
	covers = p->tickets;
	full = p->want_times;
	p->want_times = false;
	pthread_mutex_unlock(&p->commit_lock);

	if (prep) {
		rp = prep(p, ctx);
		pthread_mutex_lock(&p->meta_lock);
		p->changed = true;
		pthread_mutex_unlock(&p->meta_lock);
	}
	r = do_commit(p, full);

	pthread_mutex_lock(&p->commit_lock);
	if (full)
		p->last_commit_ms = now_ms();
	p->committing = false;
	p->done_ticket = covers;
	p->done_result = r;
	pthread_cond_broadcast(&p->commit_cv);
	pthread_mutex_unlock(&p->commit_lock);
	return rp ? rp : r;
}

int pool_sync(struct vdp_pool *p, bool times)
{
	return sync_with(p, times, NULL, NULL);
}

int pool_commit_with(struct vdp_pool *p,
		     int (*prep)(struct vdp_pool *p, void *ctx), void *ctx)
{
	return sync_with(p, true, prep, ctx);
}

int vdp_pool_commit(struct vdp_pool *p)
{
	int r = pool_sync(p, true);

	/* What it freed is usable (and discarded) on return. */
	discard_wait(p);
	return r;
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/*
 * The commit timer: a full commit at most INTERVAL after the last one while
 * anything is pending.  It sleeps on its own condition variable, so the
 * end of every fsync's commit does not wake it.
 */
static void *timer_main(void *arg)
{
	struct vdp_pool *p = arg;

	pthread_mutex_lock(&p->commit_lock);
	while (!p->stopping) {
		unsigned ms = p->interval_ms ? p->interval_ms : 3600000;
		uint64_t due_at = p->last_commit_ms + ms, now = now_ms();
		struct timespec ts;

		if (now < due_at || !p->interval_ms) {
			uint64_t wait = p->interval_ms ? due_at - now : ms;

			clock_gettime(CLOCK_MONOTONIC, &ts);
			ts.tv_sec += (time_t)(wait / 1000);
			ts.tv_nsec += (long)(wait % 1000) * 1000000;
			if (ts.tv_nsec >= 1000000000) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000;
			}
			pthread_cond_timedwait(&p->timer_cv, &p->commit_lock,
					       &ts);
			continue;
		}
		pthread_mutex_unlock(&p->commit_lock);
		pthread_mutex_lock(&p->meta_lock);
		bool due = p->changed || p->times_changed || p->pend_ext.n ||
			   p->pend_meta.n;
		pthread_mutex_unlock(&p->meta_lock);
		if (due)
			(void)pool_sync(p, true);
		pthread_mutex_lock(&p->commit_lock);
		if (!due)
			p->last_commit_ms = now_ms(); /* nothing to do: rest */
	}
	pthread_mutex_unlock(&p->commit_lock);
	return NULL;
}

int commit_start_threads(struct vdp_pool *p)
{
	pthread_condattr_t ca;
	int r;

	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	r = pthread_cond_init(&p->timer_cv, &ca);
	pthread_condattr_destroy(&ca);
	if (r != 0)
		return -r;
	p->last_commit_ms = now_ms();
	r = pthread_create(&p->timer, NULL, timer_main, p);
	if (r != 0)
		return -r;
	p->timer_started = true;
	r = pthread_create(&p->discarder, NULL, discard_main, p);
	if (r != 0) {
		commit_stop_threads(p);
		return -r;
	}
	p->discarder_started = true;
	return 0;
}

void commit_stop_threads(struct vdp_pool *p)
{
	if (p->discarder_started) {
		pthread_mutex_lock(&p->meta_lock);
		p->discarder_stopping = true;
		pthread_cond_broadcast(&p->discard_cv);
		pthread_mutex_unlock(&p->meta_lock);
		pthread_join(p->discarder, NULL);
		pthread_mutex_lock(&p->meta_lock);
		p->discarder_started = false;
		pthread_mutex_unlock(&p->meta_lock);
	}
	if (!p->timer_started)
		return;
	pthread_mutex_lock(&p->commit_lock);
	p->stopping = true;
	pthread_cond_broadcast(&p->timer_cv);
	pthread_mutex_unlock(&p->commit_lock);
	pthread_join(p->timer, NULL);
	pthread_cond_destroy(&p->timer_cv);
	p->timer_started = false;
}
