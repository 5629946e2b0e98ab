/* SPDX-License-Identifier: MIT */
/*
 * uring.c - asynchronous member I/O through io_uring, for the members that
 * are files or block devices.
 *
 * A FUSE worker that waited in pread/pwrite for each 4 KiB request slept
 * and woke once more per request, and the daemon needed a thread for each
 * request in flight; most of its CPU went there (docs/benchmarks.md).
 * Through the ring a worker hands the I/O to the kernel and goes back to
 * /dev/fuse at once.  Submissions are gathered: the kernel gets them when a
 * worker has nothing else to do (uring_flush) or a batch is full, so that
 * one system call and one doorbell of the device carry many.  One thread
 * reaps completions, many at a wake-up, and runs each one's done callback
 * (which replies to FUSE).
 *
 * One ring serves every member of the process.  It is made at the first
 * submission, so tools that never submit start no thread and the daemon
 * starts it after it has forked, and freed when the last member that may
 * use it closes.  Where io_uring is missing or disabled, submission fails
 * and the caller does the I/O synchronously.
 */
#include <errno.h>
#include <liburing.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

#include "internal.h"
#include "member.h"

#define RING_ENTRIES 256
#define BATCH 16 /* queued submissions that go without waiting for a flush */

static struct {
	pthread_mutex_t lock; /* all below, and the submission queue */
	struct io_uring ring;
	bool made, failed; /* the ring exists; making it failed */
	unsigned users;	   /* uring_hold without uring_release */
	pthread_t reaper;
	atomic_uint inflight; /* queued or submitted, not yet reaped */
	atomic_uint queued;   /* queued, not yet submitted */
	atomic_bool stopping;
} U = {.lock = PTHREAD_MUTEX_INITIALIZER};

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

static void *reaper(void *arg)
{
	(void)arg;
	for (;;) {
		struct io_uring_cqe *cqe;
		unsigned head, n = 0;
		int r = io_uring_wait_cqe(&U.ring, &cqe);

		if (r == -EINTR)
			continue;
		if (r < 0)
			break; /* cannot happen with a valid ring */
		io_uring_for_each_cqe(&U.ring, head, cqe)
		{
			struct vdp_mio *io = io_uring_cqe_get_data(cqe);
			int res = cqe->res;

			n++;
			if (!io) /* the stop marker */
				continue;
			if (res >= 0 && (size_t)res < io->len)
				res = finish_short(io, (size_t)res);
			else if (res > 0)
				res = 0;
			io->done(io, res);
		}
		io_uring_cq_advance(&U.ring, n);
		if (atomic_fetch_sub(&U.inflight, n) == n &&
		    atomic_load(&U.stopping))
			break;
	}
	return NULL;
}

/* Makes the ring and its reaper; U.lock held.  Returns 0 or -errno. */
static int make_ring(void)
{
	sigset_t all, old;
	int r = io_uring_queue_init(RING_ENTRIES, &U.ring, 0);

	if (r < 0)
		return r;
	atomic_store(&U.stopping, false);
	/* Signals go to the daemon's other threads, which act on them. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	r = -pthread_create(&U.reaper, NULL, reaper, NULL);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r < 0)
		io_uring_queue_exit(&U.ring);
	return r;
}

/* io_uring_submit until the kernel takes the queue; U.lock held. */
static void submit_queued(void)
{
	int r;

	while ((r = io_uring_submit(&U.ring)) < 0) {
		if (r != -EAGAIN && r != -EBUSY && r != -EINTR) {
			/* Not for a valid ring: said, and tried again at
			 * the next flush. */
			syslog(LOG_ERR, "io_uring_submit: %s", strerror(-r));
			return;
		}
		sched_yield();
	}
	atomic_store(&U.queued, 0);
}

void uring_hold(void)
{
	pthread_mutex_lock(&U.lock);
	U.users++;
	pthread_mutex_unlock(&U.lock);
}

void uring_release(void)
{
	pthread_mutex_lock(&U.lock);
	if (--U.users == 0 && U.made) {
		struct io_uring_sqe *sqe;

		/* The marker wakes the reaper, which leaves once every I/O
		 * before it is reaped. */
		atomic_store(&U.stopping, true);
		while (!(sqe = io_uring_get_sqe(&U.ring)))
			submit_queued();
		io_uring_prep_nop(sqe);
		io_uring_sqe_set_data(sqe, NULL);
		atomic_fetch_add(&U.inflight, 1);
		submit_queued();
		pthread_join(U.reaper, NULL);
		io_uring_queue_exit(&U.ring);
		U.made = false;
	}
	pthread_mutex_unlock(&U.lock);
}

int uring_submit(int fd, struct vdp_mio *io)
{
	struct io_uring_sqe *sqe;
	int r = 0;

	if (io->len > UINT32_MAX)
		return -EINVAL;
	pthread_mutex_lock(&U.lock);
	if (!U.made && !U.failed) {
		r = make_ring();
		U.made = r == 0;
		U.failed = r < 0;
		if (r < 0) {
			fprintf(stderr,
				"vdpool: no io_uring (%s): member I/O is "
				"synchronous\n",
				strerror(-r));
			syslog(LOG_WARNING,
			       "no io_uring (%s): member I/O is synchronous",
			       strerror(-r));
		}
	}
	if (!U.made)
		r = -ENOTSUP;
	else if (atomic_load(&U.inflight) >= RING_ENTRIES ||
		 !(sqe = io_uring_get_sqe(&U.ring)))
		r = -EAGAIN; /* full: the caller goes synchronous */
	if (r < 0) {
		pthread_mutex_unlock(&U.lock);
		return r;
	}
	if (io->write)
		io_uring_prep_write(sqe, fd, io->buf, (unsigned)io->len,
				    io->off);
	else
		io_uring_prep_read(sqe, fd, io->buf, (unsigned)io->len,
				   io->off);
	io_uring_sqe_set_data(sqe, io);
	atomic_fetch_add(&U.inflight, 1);
	if (atomic_fetch_add(&U.queued, 1) + 1 >= BATCH)
		submit_queued();
	pthread_mutex_unlock(&U.lock);
	return 0;
}

void vdp_aio_flush(void)
{
	if (atomic_load(&U.queued) == 0)
		return;
	pthread_mutex_lock(&U.lock);
	if (atomic_load(&U.queued))
		submit_queued();
	pthread_mutex_unlock(&U.lock);
}
