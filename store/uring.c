/* SPDX-License-Identifier: MIT */
/*
 * uring.c - asynchronous member I/O through io_uring, for the members that
 * are files or block devices.
 *
 * A FUSE worker that waited in pread/pwrite for each 4 KiB request slept
 * and woke once more per request, and the daemon needed a thread for each
 * request in flight; most of its CPU went there (docs/benchmarks.md).
 * Through a ring a worker hands the I/O to the kernel and goes back to
 * /dev/fuse at once.
 *
 * Each thread that submits has a ring of its own, and reaps it itself
 * (vdp_aio_poll): the kernel finishes most completions on the thread that
 * submitted them (task work), so a shared ring with a reaper thread woke
 * two threads per completion, the submitter and then the reaper.  Here the
 * submitter is woken once (a system call it sleeps in returns EINTR, or
 * the ring's descriptor it polls is readable: completions of I/O the
 * kernel had to hand to its own workers come that way), and runs the done
 * callbacks (which reply to FUSE) itself.  Submissions are
 * gathered: the kernel gets them when the thread polls, or a batch is full,
 * so that one system call and one doorbell of the device carry many.
 *
 * A ring is made at a thread's first submission and freed when the thread
 * exits, after its I/O completed.  Where io_uring is missing or disabled,
 * submission fails and the caller does the I/O synchronously.
 */
#include <errno.h>
#include <liburing.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

#include "internal.h"
#include "member.h"

#define RING_ENTRIES 64 /* also the most I/O in flight per thread */
#define BATCH 16	/* queued submissions that go without a poll */

struct ring {
	struct io_uring ring;
	unsigned inflight; /* queued or submitted, not yet reaped */
	unsigned queued;   /* queued, not yet submitted */
	bool reaping;	   /* in reap(): a done callback polling is ignored */
};

static __thread struct ring *T;
static __thread bool t_failed; /* this thread could not make its ring */
static pthread_key_t ring_key;
static pthread_once_t ring_once = PTHREAD_ONCE_INIT;
static atomic_bool said; /* the warning about a missing io_uring */

/* Finishes what a short transfer left, synchronously (rare: O_DIRECT moves
 * all or nothing except at the end of a file member). */
static int finish_short(struct vdp_mio *io, size_t done)
{
	struct vdp_member *m = io->member;
	char *b = (char *)io->buf + done;

	if (io->write)
		return m->ops->pwrite(m, b, io->len - done, io->off + done);
	return m->ops->pread(m, b, io->len - done, io->off + done);
}

/* Runs the done callback of every completion there is.  Returns how many. */
static unsigned reap(struct ring *t)
{
	struct io_uring_cqe *cqe;
	unsigned n = 0;

	t->reaping = true;
	/* Each entry is seen before its callback runs: one that submits
	 * finds room. */
	while (io_uring_peek_cqe(&t->ring, &cqe) == 0) {
		struct vdp_mio *io = io_uring_cqe_get_data(cqe);
		int res = cqe->res;

		io_uring_cqe_seen(&t->ring, cqe);
		t->inflight--;
		n++;
		if (res >= 0 && (size_t)res < io->len)
			res = finish_short(io, (size_t)res);
		else if (res > 0)
			res = 0;
		io->done(io, res);
	}
	t->reaping = false;
	return n;
}

/* Hands the queued submissions to the kernel. */
static void submit_queued(struct ring *t)
{
	int r;

	while (t->queued && (r = io_uring_submit(&t->ring)) < 0) {
		if (r != -EAGAIN && r != -EBUSY && r != -EINTR) {
			/* Not for a valid ring: said, and tried again at
			 * the next poll. */
			syslog(LOG_ERR, "io_uring_submit: %s", strerror(-r));
			return;
		}
		if (!reap(t))
			sched_yield();
	}
	t->queued = 0;
}

/* Waits for the thread's I/O, then frees its ring (at thread exit). */
static void ring_free(void *arg)
{
	struct ring *t = arg;

	T = t;
	vdp_aio_poll(true);
	T = NULL;
	io_uring_queue_exit(&t->ring);
	free(t);
}

static void make_key(void)
{
	(void)pthread_key_create(&ring_key, ring_free);
}

/* Makes the calling thread's ring.  Returns 0 or -errno. */
static int make_ring(void)
{
	unsigned flags = IORING_SETUP_SINGLE_ISSUER |
			 IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG;
	struct ring *t = calloc(1, sizeof(*t));
	int r;

	if (!t)
		return -ENOMEM;
	/* No IPI per completion (COOP_TASKRUN); kernels before 6.0 refuse
	 * these flags, and get none. */
	r = io_uring_queue_init(RING_ENTRIES, &t->ring, flags);
	if (r == -EINVAL)
		r = io_uring_queue_init(RING_ENTRIES, &t->ring, 0);
	if (r == 0) {
		(void)pthread_once(&ring_once, make_key);
		r = -pthread_setspecific(ring_key, t);
		if (r < 0)
			io_uring_queue_exit(&t->ring);
	}
	if (r < 0) {
		free(t);
		return r;
	}
	T = t;
	return 0;
}

int vdp_aio_fd(void)
{
	int r;

	if (!T && !t_failed && (r = make_ring()) < 0) {
		t_failed = true;
		if (!atomic_exchange(&said, true)) {
			fprintf(stderr,
				"vdpool: no io_uring (%s): member I/O is "
				"synchronous\n",
				strerror(-r));
			syslog(LOG_WARNING,
			       "no io_uring (%s): member I/O is synchronous",
			       strerror(-r));
		}
	}
	return T ? T->ring.ring_fd : -ENOTSUP;
}

int uring_submit(int fd, struct vdp_mio *io)
{
	struct io_uring_sqe *sqe;

	if (io->len > UINT32_MAX)
		return -EINVAL;
	if (vdp_aio_fd() < 0)
		return -ENOTSUP;
	if (T->inflight >= RING_ENTRIES || !(sqe = io_uring_get_sqe(&T->ring)))
		return -EAGAIN; /* full: the caller goes synchronous */
	if (io->write)
		io_uring_prep_write(sqe, fd, io->buf, (unsigned)io->len,
				    io->off);
	else
		io_uring_prep_read(sqe, fd, io->buf, (unsigned)io->len,
				   io->off);
	io_uring_sqe_set_data(sqe, io);
	T->inflight++;
	if (++T->queued >= BATCH)
		submit_queued(T);
	return 0;
}

/* aio_defer's I/O, oldest first. */
static __thread struct vdp_mio *def_head, *def_tail;
static __thread unsigned def_count;
static __thread bool def_running; /* in run_deferred: a poll skips it */

int aio_defer(struct vdp_mio *io)
{
	io->next = NULL;
	if (def_tail)
		def_tail->next = io;
	else
		def_head = io;
	def_tail = io;
	def_count++;
	return 0;
}

/* Does and completes the deferred I/O.  Returns how many. */
static unsigned run_deferred(void)
{
	unsigned n = 0;

	if (def_running)
		return 0;
	def_running = true;
	while (def_head) {
		struct vdp_mio *io = def_head;
		struct vdp_member *m = io->member;
		int r;

		def_head = io->next;
		if (!def_head)
			def_tail = NULL;
		def_count--;
		r = io->write ? m->ops->pwrite(m, io->buf, io->len, io->off)
			      : m->ops->pread(m, io->buf, io->len, io->off);
		io->done(io, r);
		n++;
	}
	def_running = false;
	return n;
}

unsigned vdp_aio_poll(bool wait)
{
	struct ring *t = T;
	unsigned n = run_deferred();

	if (!t || t->reaping)
		return n;
	for (;;) {
		struct io_uring_cqe *cqe;
		int r;

		submit_queued(t);
		n += reap(t);
		if (!wait || t->inflight == 0)
			return n;
		if (t->queued) { /* not submitted: nothing to wait for yet */
			sched_yield();
			continue;
		}
		r = io_uring_wait_cqe(&t->ring, &cqe);
		if (r < 0 && r != -EINTR && r != -EAGAIN) {
			/* Not for a valid ring. */
			syslog(LOG_ERR, "io_uring_wait_cqe: %s", strerror(-r));
			sched_yield();
		}
	}
}

unsigned vdp_aio_inflight(void)
{
	return (T ? T->inflight : 0) + def_count;
}
