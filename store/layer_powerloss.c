/* SPDX-License-Identifier: MIT */
/*
 * layer_powerloss.c - the power-loss test layer: a member that behaves
 * like a disk with a volatile write cache, and a crash that empties every
 * such cache in the process at once, as a power cut would.
 *
 * Writes (pwrite; write_zeroes and discard as "zero this range") that no
 * flush has covered yet stay in memory, per member and in order; reads see
 * the inner member's data overlaid with them.  A flush applies the
 * member's pending writes to the inner member in order and flushes it.
 * The crash (a trigger: the Nth write, the Nth flush, a signal, or
 * vdp_powerloss_now()) happens once, under the domain lock, to all members
 * together: each keeps what was flushed plus a subset of the unflushed
 * writes chosen by the keep mode and a seeded PRNG, applied in their
 * original order; then every operation fails with EIO (freeze) or the
 * process calls _exit(86) (exit).
 *
 * Must never let an unflushed write reach the inner member before a flush,
 * a crash or a clean close, or let anything reach it after the crash.
 *
 * Locking: dom.lock (the domain: member list, counters, triggers) before
 * a member's rwlock (its pending list).  Reads hold the rwlock shared
 * across the inner read and the overlay, so a flush cannot move writes
 * from the list to the inner member in between; writes and flushes hold it
 * exclusive.  A flush does its inner I/O without dom.lock.
 */
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "layer.h"
#include "layer_internal.h"

#define SECTOR 4096u /* the unit a torn write keeps or loses */

struct pending {
	uint64_t seq; /* order among all power-loss members' writes */
	uint64_t off, len;
	uint8_t *data; /* aligned copy; NULL: zeros */
};

struct pl_member {
	struct vdp_member m;
	struct vdp_member *inner;
	pthread_rwlock_t lock; /* the fields below */
	struct pending *pend;  /* unflushed writes, oldest first */
	size_t npend, cap;
	uint64_t lo, hi; /* every pending write lies in [lo, hi) */
	bool frozen;	 /* crashed: every op fails */
	struct pl_member *prev, *next; /* dom.head list, under dom.lock */
};

static const char *const keep_names[] = {"none", "all", "prefix", "random",
					 "torn"};

/* The power-loss domain: one per process. */
static struct {
	pthread_mutex_t lock;
	struct powerloss_cfg cfg;
	struct pl_member *head;
	uint64_t writes, flushes; /* since the last configure, to the crash */
	uint64_t seq;
	bool crashed;
	/* The signal trigger: a handler that posts SEM, and a thread that
	 * waits on it and applies the crash. */
	int signo; /* whose handler is installed; 0: none */
	struct sigaction old_sa;
	sem_t sem;
	pid_t thread_pid; /* the process the thread runs in */
} dom = {.lock = PTHREAD_MUTEX_INITIALIZER};

static struct pl_member *pl_of(struct vdp_member *m)
{
	return m->priv;
}

/* ---- pending writes ------------------------------------------------------ */

/* Writes [FROM, TO) of pending write W to the inner member. */
static int apply_range(struct pl_member *pm, const struct pending *w,
		       uint64_t from, uint64_t to)
{
	struct vdp_member *in = pm->inner;

	if (w->data)
		return in->ops->pwrite(in, w->data + (from - w->off),
				       (size_t)(to - from), from);
	return in->ops->write_zeroes(in, from, to - from);
}

/* Frees the first N pending writes and moves the rest up. */
static void drop_pending(struct pl_member *pm, size_t n)
{
	if (n == 0)
		return;
	for (size_t i = 0; i < n; i++)
		free(pm->pend[i].data);
	memmove(pm->pend, pm->pend + n, (pm->npend - n) * sizeof(*pm->pend));
	pm->npend -= n;
	if (pm->npend == 0)
		pm->lo = pm->hi = 0;
}

/* Applies every pending write in order (under the exclusive lock).  On a
 * failure the failed write and those after it stay pending. */
static int apply_pending(struct pl_member *pm)
{
	size_t i;
	int r = 0;

	for (i = 0; i < pm->npend; i++) {
		const struct pending *w = &pm->pend[i];

		r = apply_range(pm, w, w->off, w->off + w->len);
		if (r < 0)
			break;
	}
	drop_pending(pm, i);
	return r;
}

/* Copies the pending writes over BUF, which holds the inner member's
 * [OFF, OFF + LEN) (under the shared lock). */
static void overlay(struct pl_member *pm, uint8_t *buf, size_t len,
		    uint64_t off)
{
	uint64_t end = off + len;

	if (pm->npend == 0 || off >= pm->hi || end <= pm->lo)
		return;
	for (size_t i = 0; i < pm->npend; i++) {
		const struct pending *w = &pm->pend[i];
		uint64_t s = w->off > off ? w->off : off;
		uint64_t e = w->off + w->len < end ? w->off + w->len : end;

		if (s >= e)
			continue;
		if (w->data)
			memcpy(buf + (s - off), w->data + (s - w->off),
			       (size_t)(e - s));
		else
			memset(buf + (s - off), 0, (size_t)(e - s));
	}
}

/* ---- the crash ---------------------------------------------------------- */

struct ref {
	struct pl_member *pm;
	const struct pending *w;
};

static int by_seq(const void *a, const void *b)
{
	uint64_t x = ((const struct ref *)a)->w->seq;
	uint64_t y = ((const struct ref *)b)->w->seq;

	return x < y ? -1 : x > y;
}

/* Applies W's SECTOR-aligned pieces, each with probability 1/2 (a write
 * shorter than a sector: all or nothing), merging neighbours into one call.
 * Returns how many pieces were applied; adds the count to *TOTAL. */
static size_t apply_torn(struct pl_member *pm, const struct pending *w,
			 uint64_t *rng, size_t *total)
{
	uint64_t unit = pm->m.align > SECTOR ? pm->m.align : SECTOR;
	uint64_t end = w->off + w->len, run = 0, s;
	size_t kept = 0;
	bool in_run = false;

	for (s = w->off; s < end;) {
		uint64_t e = (s / unit + 1) * unit;
		bool keep = layer_rand(rng) & 1;

		if (e > end || w->len < unit) /* a short write: one piece */
			e = end;
		++*total;
		if (keep) {
			kept++;
			if (!in_run)
				run = s;
			in_run = true;
		} else if (in_run) {
			(void)apply_range(pm, w, run, s);
			in_run = false;
		}
		s = e;
	}
	if (in_run)
		(void)apply_range(pm, w, run, end);
	return kept;
}

/*
 * The power cut, under dom.lock: once per configure.  Every member's
 * rwlock is taken, so no read or flush is half done; the chosen unflushed
 * writes reach the inner members in their original order, which are then
 * flushed, and every member freezes (or the process exits).
 */
static void crash_locked(const char *trigger)
{
	const struct powerloss_cfg *c = &dom.cfg;
	uint64_t rng = c->seed, k = 0;
	size_t n = 0, nm = 0, applied = 0, pieces = 0, pieces_kept = 0;
	struct ref *all = NULL;
	struct pl_member *pm;
	char torn[64] = "";

	if (dom.crashed)
		return;
	dom.crashed = true;
	for (pm = dom.head; pm; pm = pm->next) {
		pthread_rwlock_wrlock(&pm->lock);
		n += pm->npend;
		nm++;
	}
	if (n > 0) {
		all = malloc(n * sizeof(*all));
		if (!all)
			fprintf(stderr,
				"vdpool test layers: power loss: out of "
				"memory: dropping every unflushed "
				"write\n");
	}
	if (all) {
		size_t j = 0;

		for (pm = dom.head; pm; pm = pm->next)
			for (size_t i = 0; i < pm->npend; i++)
				all[j++] = (struct ref){pm, &pm->pend[i]};
		qsort(all, n, sizeof(*all), by_seq);
		if (c->keep == KEEP_PREFIX)
			k = layer_rand(&rng) % ((uint64_t)n + 1);
		for (size_t i = 0; i < n; i++) {
			const struct pending *w = all[i].w;
			bool keep = false;
			size_t kept;

			switch (c->keep) {
			case KEEP_NONE:
				break;
			case KEEP_ALL:
				keep = true;
				break;
			case KEEP_PREFIX:
				keep = i < k;
				break;
			case KEEP_RANDOM:
				keep = layer_rand(&rng) & 1;
				break;
			case KEEP_TORN:
				kept = apply_torn(all[i].pm, w, &rng, &pieces);
				pieces_kept += kept;
				applied += kept > 0;
				continue;
			}
			if (keep) {
				(void)apply_range(all[i].pm, w, w->off,
						  w->off + w->len);
				applied++;
			}
		}
		free(all);
	}
	for (pm = dom.head; pm; pm = pm->next) {
		(void)pm->inner->ops->flush(pm->inner);
		drop_pending(pm, pm->npend);
		pm->frozen = true;
	}
	if (c->keep == KEEP_TORN)
		snprintf(torn, sizeof(torn),
			 " in whole or in part (%zu of %zu sectors)",
			 pieces_kept, pieces);
	fprintf(stderr,
		"vdpool test layers: power loss (%s): %zu unflushed writes on "
		"%zu members, %zu applied%s (keep=%s, seed=%llu); %s\n",
		trigger, n, nm, applied, torn, keep_names[c->keep],
		(unsigned long long)c->seed,
		c->exit ? "exiting with status 86" : "members frozen");
	if (c->exit)
		_exit(VDP_POWERLOSS_EXIT);
	for (pm = dom.head; pm; pm = pm->next)
		pthread_rwlock_unlock(&pm->lock);
}

/* ---- the signal trigger -------------------------------------------------- */

static void on_signal(int sig)
{
	int e = errno;

	(void)sig;
	sem_post(&dom.sem); /* async-signal-safe; the thread does the work */
	errno = e;
}

static void *crash_thread(void *arg)
{
	sigset_t all;
	char trigger[32];

	(void)arg;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	for (;;) {
		if (sem_wait(&dom.sem) < 0)
			continue; /* EINTR */
		pthread_mutex_lock(&dom.lock);
		if (dom.cfg.signo) {
			snprintf(trigger, sizeof(trigger), "signal %s",
				 dom.cfg.signo == SIGUSR1 ? "USR1" : "USR2");
			crash_locked(trigger);
		}
		pthread_mutex_unlock(&dom.lock);
	}
	return NULL;
}

/* Starts the crash thread in this process unless it runs (a forked child
 * has none).  Under dom.lock. */
static int ensure_thread(void)
{
	pthread_attr_t a;
	pthread_t t;
	int r;

	if (dom.thread_pid == getpid())
		return 0;
	if (sem_init(&dom.sem, 0, 0) < 0)
		return -errno;
	pthread_attr_init(&a);
	pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
	r = pthread_create(&t, &a, crash_thread, NULL);
	pthread_attr_destroy(&a);
	if (r != 0)
		return -r;
	dom.thread_pid = getpid();
	return 0;
}

/* Installs the handler for SIGNO (0: none), restoring the previous
 * handler's signal.  Under dom.lock. */
static int set_signal(int signo)
{
	struct sigaction sa;

	if (signo == dom.signo)
		return 0;
	if (dom.signo) {
		sigaction(dom.signo, &dom.old_sa, NULL);
		dom.signo = 0;
	}
	if (!signo)
		return 0;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sa.sa_flags = SA_RESTART;
	sigemptyset(&sa.sa_mask);
	if (sigaction(signo, &sa, &dom.old_sa) < 0)
		return -errno;
	dom.signo = signo;
	return 0;
}

int powerloss_configure(const struct powerloss_cfg *c)
{
	static const struct powerloss_cfg defaults = {.keep = KEEP_RANDOM,
						      .seed = 1};
	int r = 0;

	pthread_mutex_lock(&dom.lock);
	if (c && c->signo)
		r = ensure_thread();
	if (r == 0)
		r = set_signal(c ? c->signo : 0);
	if (r < 0) {
		vdp_set_error("test layers: powerloss: cannot set up the "
			      "signal trigger: %s",
			      strerror(-r));
	} else {
		dom.cfg = c ? *c : defaults;
		dom.writes = dom.flushes = 0;
		dom.crashed = false;
	}
	pthread_mutex_unlock(&dom.lock);
	return r;
}

/* ---- the public calls ---------------------------------------------------- */

void vdp_powerloss_now(void)
{
	pthread_mutex_lock(&dom.lock);
	crash_locked("vdp_powerloss_now");
	pthread_mutex_unlock(&dom.lock);
}

bool vdp_powerloss_happened(void)
{
	bool r;

	pthread_mutex_lock(&dom.lock);
	r = dom.crashed;
	pthread_mutex_unlock(&dom.lock);
	return r;
}

void vdp_layers_counts(uint64_t *writes, uint64_t *flushes)
{
	pthread_mutex_lock(&dom.lock);
	if (writes)
		*writes = dom.writes;
	if (flushes)
		*flushes = dom.flushes;
	pthread_mutex_unlock(&dom.lock);
}

/* ---- the member ops ------------------------------------------------------ */

static int pl_pread(struct vdp_member *m, void *buf, size_t len, uint64_t off)
{
	struct pl_member *pm = pl_of(m);
	int r = -EIO;

	pthread_rwlock_rdlock(&pm->lock);
	if (!pm->frozen) {
		r = pm->inner->ops->pread(pm->inner, buf, len, off);
		if (r == 0)
			overlay(pm, buf, len, off);
	}
	pthread_rwlock_unlock(&pm->lock);
	return r;
}

/* Appends a write (DATA, or zeros if NULL; owned by us) and counts it;
 * fires the after_writes trigger on the Nth. */
static int record(struct pl_member *pm, uint64_t off, uint64_t len,
		  uint8_t *data)
{
	char trigger[48];
	int r = 0;

	pthread_mutex_lock(&dom.lock);
	pthread_rwlock_wrlock(&pm->lock);
	if (pm->frozen) {
		r = -EIO;
	} else if (pm->npend == pm->cap) {
		size_t cap = pm->cap ? 2 * pm->cap : 64;
		struct pending *p = realloc(pm->pend, cap * sizeof(*p));

		if (p) {
			pm->pend = p;
			pm->cap = cap;
		} else {
			r = -ENOMEM;
		}
	}
	if (r == 0) {
		pm->pend[pm->npend++] = (struct pending){
			.seq = ++dom.seq, .off = off, .len = len, .data = data};
		if (pm->npend == 1 || off < pm->lo)
			pm->lo = off;
		if (pm->npend == 1 || off + len > pm->hi)
			pm->hi = off + len;
	}
	pthread_rwlock_unlock(&pm->lock);
	if (r == 0) {
		dom.writes++;
		if (dom.writes == dom.cfg.after_writes) {
			snprintf(trigger, sizeof(trigger), "after_writes=%llu",
				 (unsigned long long)dom.writes);
			crash_locked(trigger);
		}
	}
	pthread_mutex_unlock(&dom.lock);
	if (r < 0)
		free(data);
	return r;
}

static int pl_pwrite(struct vdp_member *m, const void *buf, size_t len,
		     uint64_t off)
{
	struct pl_member *pm = pl_of(m);
	void *copy;

	if (len == 0)
		return 0;
	/* Aligned: it goes to the inner member's O_DIRECT pwrite later. */
	if (posix_memalign(&copy, m->align > SECTOR ? m->align : SECTOR, len) !=
	    0)
		return -ENOMEM;
	memcpy(copy, buf, len);
	return record(pm, off, len, copy);
}

static int pl_write_zeroes(struct vdp_member *m, uint64_t off, uint64_t len)
{
	if (len == 0)
		return 0;
	return record(pl_of(m), off, len, NULL);
}

/* A discard is pending as zeros: a discarded range's contents are
 * unspecified, and zeros are one valid outcome. */
static int pl_discard(struct vdp_member *m, uint64_t off, uint64_t len)
{
	return pl_write_zeroes(m, off, len);
}

static int pl_flush(struct vdp_member *m)
{
	struct pl_member *pm = pl_of(m);
	char trigger[48];
	int r;

	pthread_rwlock_wrlock(&pm->lock);
	if (pm->frozen) {
		pthread_rwlock_unlock(&pm->lock);
		return -EIO;
	}
	r = apply_pending(pm);
	if (r == 0)
		r = pm->inner->ops->flush(pm->inner);
	pthread_rwlock_unlock(&pm->lock);

	/* The flush has returned, as far as the disk is concerned: count it
	 * and fire the after_flushes trigger on the Nth. */
	pthread_mutex_lock(&dom.lock);
	if (!dom.crashed) {
		dom.flushes++;
		if (dom.flushes == dom.cfg.after_flushes) {
			snprintf(trigger, sizeof(trigger), "after_flushes=%llu",
				 (unsigned long long)dom.flushes);
			crash_locked(trigger);
		}
	}
	pthread_mutex_unlock(&dom.lock);
	return r;
}

static int pl_lock(struct vdp_member *m, bool exclusive)
{
	struct pl_member *pm = pl_of(m);

	if (!pm->inner->ops->lock)
		return 0;
	return pm->inner->ops->lock(pm->inner, exclusive);
}

/* A clean close: the process lives on, so its unflushed writes reach the
 * inner member (as the host's page cache would write them back). */
static void pl_close(struct vdp_member *m)
{
	struct pl_member *pm = pl_of(m);

	pthread_mutex_lock(&dom.lock);
	if (pm->prev)
		pm->prev->next = pm->next;
	else
		dom.head = pm->next;
	if (pm->next)
		pm->next->prev = pm->prev;
	pthread_mutex_unlock(&dom.lock);

	pthread_rwlock_wrlock(&pm->lock);
	if (!pm->frozen)
		(void)apply_pending(pm);
	drop_pending(pm, pm->npend);
	pthread_rwlock_unlock(&pm->lock);
	vdp_member_close(pm->inner);
	pthread_rwlock_destroy(&pm->lock);
	free(pm->pend);
	free(pm);
}

static const struct vdp_member_ops pl_ops = {
	.kind = "powerloss",
	.pread = pl_pread,
	.pwrite = pl_pwrite,
	.submit = layer_submit,
	.flush = pl_flush,
	.write_zeroes = pl_write_zeroes,
	.discard = pl_discard,
	.lock = pl_lock,
	.close = pl_close,
};

int powerloss_wrap(struct vdp_member *inner, struct vdp_member **out)
{
	struct pl_member *pm = calloc(1, sizeof(*pm));
	pthread_rwlockattr_t a;
	int r = 0;

	if (!pm)
		return -ENOMEM;
	/* Writers first: a stream of reads must not starve a flush. */
	pthread_rwlockattr_init(&a);
	pthread_rwlockattr_setkind_np(
		&a, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&pm->lock, &a);
	pthread_rwlockattr_destroy(&a);
	pm->inner = inner;
	pm->m.ops = &pl_ops;
	pm->m.path = inner->path;
	pm->m.size = inner->size;
	pm->m.align = inner->align;
	pm->m.kind = inner->kind;
	pm->m.priv = pm;

	pthread_mutex_lock(&dom.lock);
	if (dom.cfg.signo) /* a forked child starts its own thread */
		r = ensure_thread();
	if (r == 0) {
		pm->frozen = dom.crashed; /* the power is off */
		pm->next = dom.head;
		if (dom.head)
			dom.head->prev = pm;
		dom.head = pm;
	}
	pthread_mutex_unlock(&dom.lock);
	if (r < 0) {
		pthread_rwlock_destroy(&pm->lock);
		free(pm);
		return r;
	}
	*out = &pm->m;
	return 0;
}
