/* SPDX-License-Identifier: MIT */
/*
 * vdpoolfs.c - the FUSE daemon: shows a pool as a directory whose regular
 * files are raw virtual disks.
 *
 * This file only translates.  It parses the command line, opens the pool,
 * mounts, and turns each low-level FUSE request into one call of the store's
 * public interface (vdpool.h), converting the -errno result once, at the
 * reply.  It must never know the on-disk format, keep its own copy of the
 * namespace, or cache data: the store owns all state, including the lookup
 * counts (every fuse_reply_entry/create that reaches the kernel matches one
 * reference taken in the store, and a reply that fails gives it back).
 */
#define FUSE_USE_VERSION 312 /* 3.12: fuse_loop_cfg_set_max_threads() */

#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/fuse.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <syslog.h>
#include <unistd.h>

#include "control.h"
#include "layer.h"
#include "vdpool.h"

#ifndef VDPOOL_VERSION
#define VDPOOL_VERSION "unknown"
#endif
#ifndef PR_SET_IO_FLUSHER
#define PR_SET_IO_FLUSHER 57
#endif

#define TIMEOUT 1.0	       /* entry and attribute cache, seconds */
#define DEFAULT_MAX_THREADS 64 /* >= the queue depth we expect */
#define MAX_MAX_THREADS 4096
#define STATFS_BSIZE 4096
#define STATFS_FREE_INODES (1ULL << 32) /* the namespace has no fixed table */

struct vdpfs {
	struct vdp_pool *pool;
	bool rdonly;	 /* -o ro: pool opened VDP_OPEN_RDONLY */
	bool page_cache; /* -o page_cache: no FOPEN_DIRECT_IO */
	int close_err;	 /* vdp_pool_close's result, from destroy */
	uint64_t extent_size;
	size_t copy_reply_max; /* fs_copy_file_range */
};

/* ---- logging ---- */

static bool log_syslog; /* set once daemonized */

__attribute__((format(printf, 2, 0))) static void
vlogmsg(int prio, const char *fmt, va_list ap)
{
	if (log_syslog) {
		vsyslog(prio, fmt, ap);
		return;
	}
	fputs("vdpoolfs: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
}

__attribute__((format(printf, 2, 3))) static void logmsg(int prio,
							 const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlogmsg(prio, fmt, ap);
	va_end(ap);
}

/* vdp_pool_problems callback: what went wrong opening the pool (a bad
 * metadata copy read from the other one, ...). */
static void log_problem(void *ctx, const char *line)
{
	(void)ctx;
	logmsg(LOG_WARNING, "warning: %s", line);
}

/* libfuse's own messages end in '\n' and start with "fuse: ". */
__attribute__((format(printf, 2, 0))) static void
fuse_log_cb(enum fuse_log_level level, const char *fmt, va_list ap)
{
	if (log_syslog)
		vsyslog((int)level, fmt, ap);
	else
		vfprintf(stderr, fmt, ap);
}

/* The store's sentence for the error just returned on this thread. */
static const char *store_error(int r)
{
	const char *s = vdp_last_error();

	return *s ? s : strerror(-r);
}

/* ---- replies ---- */

static struct vdpfs *fs_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

/* Answers REQ with R (0 or -errno).  EIO hides the store's reason from the
 * client, so that one is logged here, with the store's sentence. */
static void reply_err(fuse_req_t req, const char *op, fuse_ino_t ino, int r)
{
	if (r == -EIO)
		logmsg(LOG_ERR, "%s on inode %" PRIu64 ": %s", op,
		       (uint64_t)ino, store_error(r));
	fuse_reply_err(req, -r);
}

static void attr_to_stat(const struct vdp_attr *a, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = a->ino;
	st->st_mode = a->mode;
	st->st_nlink = a->nlink;
	st->st_uid = a->uid;
	st->st_gid = a->gid;
	st->st_size = (off_t)a->size;
	st->st_blocks = (blkcnt_t)a->blocks;
	st->st_blksize = a->blksize;
	st->st_atim = a->atime;
	st->st_mtim = a->mtime;
	st->st_ctim = a->ctime;
}

static void attr_to_entry(const struct vdp_attr *a, struct fuse_entry_param *e)
{
	memset(e, 0, sizeof(*e));
	e->ino = a->ino;
	e->attr_timeout = TIMEOUT;
	e->entry_timeout = TIMEOUT;
	attr_to_stat(a, &e->attr);
}

/* Replies with an entry whose reference the store took for us; if the
 * kernel never receives it, nobody else will give the reference back. */
static void reply_entry(fuse_req_t req, const struct vdp_attr *a)
{
	struct fuse_entry_param e;

	attr_to_entry(a, &e);
	if (fuse_reply_entry(req, &e) != 0)
		vdp_forget(fs_of(req)->pool, a->ino, 1);
}

static void reply_attr(fuse_req_t req, const struct vdp_attr *a)
{
	struct stat st;

	attr_to_stat(a, &st);
	fuse_reply_attr(req, &st, TIMEOUT);
}

/* Rejects offsets and lengths that are negative or overflow. */
static bool bad_range(off_t off, uint64_t len)
{
	return off < 0 || len > (uint64_t)(INT64_MAX - off);
}

/* ---- session ---- */

#define MAX_WRITE (1u << 20) /* the largest write request */

static void fs_init(void *userdata, struct fuse_conn_info *conn)
{
	(void)userdata;

	conn->max_write = MAX_WRITE;
	conn->max_readahead = 1 << 20;
	conn->max_background = 64;
	conn->congestion_threshold = 48;
	if (conn->capable & FUSE_CAP_ASYNC_DIO)
		conn->want |= FUSE_CAP_ASYNC_DIO;
	if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
		conn->want |= FUSE_CAP_PARALLEL_DIROPS;
	if (conn->capable & FUSE_CAP_READDIRPLUS)
		conn->want |= FUSE_CAP_READDIRPLUS;
	if (conn->capable & FUSE_CAP_READDIRPLUS_AUTO)
		conn->want |= FUSE_CAP_READDIRPLUS_AUTO;
	/* The store sees every write as it happens (no double caching), and
	 * O_TRUNC arrives as a SETATTR the kernel has permission-checked. */
	conn->want &=
		~(unsigned)(FUSE_CAP_WRITEBACK_CACHE | FUSE_CAP_ATOMIC_O_TRUNC);
	/* The workers' aligned buffers (run_loop) need requests read whole,
	 * not spliced into a pipe. */
	conn->want &= ~(unsigned)FUSE_CAP_SPLICE_READ;
}

static void fs_destroy(void *userdata)
{
	struct vdpfs *fs = userdata;

	fs->close_err = vdp_pool_close(fs->pool);
	if (fs->close_err < 0)
		logmsg(LOG_ERR, "closing the pool: %s",
		       store_error(fs->close_err));
	fs->pool = NULL;
}

/* ---- namespace ---- */

static void fs_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct vdp_attr a;
	int r = vdp_lookup(fs_of(req)->pool, parent, name, &a);

	if (r < 0)
		reply_err(req, "lookup", parent, r);
	else
		reply_entry(req, &a);
}

static void fs_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	vdp_forget(fs_of(req)->pool, ino, nlookup);
	fuse_reply_none(req);
}

static void fs_forget_multi(fuse_req_t req, size_t count,
			    struct fuse_forget_data *forgets)
{
	for (size_t i = 0; i < count; i++)
		vdp_forget(fs_of(req)->pool, forgets[i].ino,
			   forgets[i].nlookup);
	fuse_reply_none(req);
}

static void fs_getattr(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	struct vdp_attr a;
	int r = vdp_getattr(fs_of(req)->pool, ino, &a);

	(void)fi;
	if (r < 0)
		reply_err(req, "getattr", ino, r);
	else
		reply_attr(req, &a);
}

static void fs_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *st,
		       int to_set, struct fuse_file_info *fi)
{
	struct vdp_attr in = {0}, out;
	unsigned set = 0;
	int r;

	(void)fi;
	if (to_set & FUSE_SET_ATTR_MODE) {
		in.mode = st->st_mode;
		set |= VDP_SET_MODE;
	}
	if (to_set & FUSE_SET_ATTR_UID) {
		in.uid = st->st_uid;
		set |= VDP_SET_UID;
	}
	if (to_set & FUSE_SET_ATTR_GID) {
		in.gid = st->st_gid;
		set |= VDP_SET_GID;
	}
	if (to_set & FUSE_SET_ATTR_SIZE) {
		if (st->st_size < 0) {
			fuse_reply_err(req, EINVAL);
			return;
		}
		in.size = (uint64_t)st->st_size;
		set |= VDP_SET_SIZE;
	}
	/* The kernel sends ATIME with ATIME_NOW for UTIME_NOW. */
	if (to_set & FUSE_SET_ATTR_ATIME_NOW) {
		set |= VDP_SET_ATIME_NOW;
	} else if (to_set & FUSE_SET_ATTR_ATIME) {
		in.atime = st->st_atim;
		set |= VDP_SET_ATIME;
	}
	if (to_set & FUSE_SET_ATTR_MTIME_NOW) {
		set |= VDP_SET_MTIME_NOW;
	} else if (to_set & FUSE_SET_ATTR_MTIME) {
		in.mtime = st->st_mtim;
		set |= VDP_SET_MTIME;
	}
	if (to_set & FUSE_SET_ATTR_CTIME) {
		in.ctime = st->st_ctim;
		set |= VDP_SET_CTIME;
	}
	r = vdp_setattr(fs_of(req)->pool, ino, &in, set, &out);
	if (r < 0)
		reply_err(req, "setattr", ino, r);
	else
		reply_attr(req, &out);
}

/* Creates a file or directory as the caller; the store takes the entry's
 * reference.  Returns 0 or -errno, with *A filled on success. */
static int create_as_caller(fuse_req_t req, fuse_ino_t parent, const char *name,
			    mode_t mode, struct vdp_attr *a)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);

	if (!S_ISREG(mode) && !S_ISDIR(mode))
		return -EOPNOTSUPP; /* disks only: no devices, fifos, sockets */
	return vdp_create(fs_of(req)->pool, parent, name,
			  (mode & S_IFMT) | (mode & 07777), ctx->uid, ctx->gid,
			  a);
}

static void make_node(fuse_req_t req, fuse_ino_t parent, const char *name,
		      mode_t mode, const char *op)
{
	struct vdp_attr a;
	int r = create_as_caller(req, parent, name, mode, &a);

	if (r < 0)
		reply_err(req, op, parent, r);
	else
		reply_entry(req, &a);
}

static void fs_mknod(fuse_req_t req, fuse_ino_t parent, const char *name,
		     mode_t mode, dev_t rdev)
{
	(void)rdev;
	make_node(req, parent, name, mode, "mknod");
}

static void fs_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name,
		     mode_t mode)
{
	make_node(req, parent, name, S_IFDIR | mode, "mkdir");
}

/* No symlinks, hard links or special files: a pool holds disks. */
static void fs_symlink(fuse_req_t req, const char *link, fuse_ino_t parent,
		       const char *name)
{
	(void)link;
	(void)parent;
	(void)name;
	fuse_reply_err(req, EPERM);
}

static void fs_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent,
		    const char *newname)
{
	(void)ino;
	(void)newparent;
	(void)newname;
	fuse_reply_err(req, EPERM);
}

static void fs_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	reply_err(req, "unlink", parent,
		  vdp_unlink(fs_of(req)->pool, parent, name));
}

static void fs_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	reply_err(req, "rmdir", parent,
		  vdp_rmdir(fs_of(req)->pool, parent, name));
}

static void fs_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
		      fuse_ino_t newparent, const char *newname,
		      unsigned int flags)
{
	unsigned vflags = 0;

	if (flags & ~(unsigned)(RENAME_NOREPLACE | RENAME_EXCHANGE)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (flags & RENAME_NOREPLACE)
		vflags |= VDP_RENAME_NOREPLACE;
	if (flags & RENAME_EXCHANGE)
		vflags |= VDP_RENAME_EXCHANGE;
	reply_err(req, "rename", parent,
		  vdp_rename(fs_of(req)->pool, parent, name, newparent, newname,
			     vflags));
}

/* ---- files ---- */

/* Sets the open reply's flags.  fi->fh records whether the handle may
 * write, so that flush commits only for writers. */
static void set_open_flags(struct vdpfs *fs, struct fuse_file_info *fi)
{
	bool writer = (fi->flags & O_ACCMODE) != O_RDONLY;

	fi->fh = writer;
	fi->noflush = !writer;
	fi->keep_cache = 0;
	fi->direct_io = !fs->page_cache;
#if FUSE_VERSION >= FUSE_MAKE_VERSION(3, 15)
	fi->parallel_direct_writes = !fs->page_cache;
#endif
}

#if FUSE_VERSION < FUSE_MAKE_VERSION(3, 15)
/*
 * libfuse before 3.15 has no way to send FOPEN_PARALLEL_DIRECT_WRITES
 * (protocol 7.38), and without it the kernel runs direct writes to one
 * file one at a time: a guest's queue depth collapses to 1.  The open and
 * create replies are plain structs (fuse_open_out, after fuse_entry_out
 * for create), so build them here with every field fill_open() and
 * fill_entry() would set, plus that flag.  The store allows concurrent
 * writes to a disk (vnode io lock); the kernel still serialises writes
 * that extend the file.
 */
static struct fuse_open_out open_out(const struct fuse_file_info *fi)
{
	struct fuse_open_out o = {.fh = fi->fh};

	if (fi->direct_io)
		o.open_flags |= FOPEN_DIRECT_IO | FOPEN_PARALLEL_DIRECT_WRITES;
	if (fi->keep_cache)
		o.open_flags |= FOPEN_KEEP_CACHE;
	if (fi->nonseekable)
		o.open_flags |= FOPEN_NONSEEKABLE;
	if (fi->noflush)
		o.open_flags |= FOPEN_NOFLUSH;
	return o;
}

static int reply_open(fuse_req_t req, const struct fuse_file_info *fi)
{
	struct fuse_open_out o = open_out(fi);
	struct iovec iov = {.iov_base = &o, .iov_len = sizeof(o)};

	return fuse_reply_iov(req, &iov, 1);
}

static int reply_create(fuse_req_t req, const struct vdp_attr *a,
			const struct fuse_file_info *fi)
{
	struct {
		struct fuse_entry_out e;
		struct fuse_open_out o;
	} out = {.o = open_out(fi)};
	struct fuse_attr *fa = &out.e.attr;
	struct iovec iov = {.iov_base = &out, .iov_len = sizeof(out)};

	out.e.nodeid = a->ino;
	out.e.entry_valid = out.e.attr_valid = (uint64_t)TIMEOUT;
	out.e.entry_valid_nsec = out.e.attr_valid_nsec =
		(uint32_t)((TIMEOUT - (uint64_t)TIMEOUT) * 1e9);
	fa->ino = a->ino;
	fa->size = a->size;
	fa->blocks = a->blocks;
	fa->atime = (uint64_t)a->atime.tv_sec;
	fa->mtime = (uint64_t)a->mtime.tv_sec;
	fa->ctime = (uint64_t)a->ctime.tv_sec;
	fa->atimensec = (uint32_t)a->atime.tv_nsec;
	fa->mtimensec = (uint32_t)a->mtime.tv_nsec;
	fa->ctimensec = (uint32_t)a->ctime.tv_nsec;
	fa->mode = a->mode;
	fa->nlink = a->nlink;
	fa->uid = a->uid;
	fa->gid = a->gid;
	fa->blksize = a->blksize;
	return fuse_reply_iov(req, &iov, 1);
}
#else
static int reply_open(fuse_req_t req, const struct fuse_file_info *fi)
{
	return fuse_reply_open(req, fi);
}

static int reply_create(fuse_req_t req, const struct vdp_attr *a,
			const struct fuse_file_info *fi)
{
	struct fuse_entry_param e;

	attr_to_entry(a, &e);
	return fuse_reply_create(req, &e, fi);
}
#endif

static void fs_create(fuse_req_t req, fuse_ino_t parent, const char *name,
		      mode_t mode, struct fuse_file_info *fi)
{
	struct vdp_attr a;
	int r;

	r = create_as_caller(req, parent, name, S_IFREG | mode, &a);
	if (r < 0) {
		reply_err(req, "create", parent, r);
		return;
	}
	set_open_flags(fs_of(req), fi);
	if (reply_create(req, &a, fi) != 0)
		vdp_forget(fs_of(req)->pool, a.ino, 1);
}

/* O_TRUNC never reaches us: without FUSE_CAP_ATOMIC_O_TRUNC the kernel
 * truncates by SETATTR first and strips the flag. */
static void fs_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	set_open_flags(fs_of(req), fi);
	reply_open(req, fi);
}

/*
 * Reads and writes that vdp_read_start / vdp_write_start take run without
 * this worker waiting: it goes back to /dev/fuse while the member works,
 * and replies when it polls the completion (receive, worker_may_block).
 * Only when the daemon holds more than ASYNC_ABOVE requests (GO_ASYNC): at
 * a low queue depth a worker is quicker waiting for the member itself, as
 * 4 psync threads showed (41k against 31k IOPS always asynchronous).
 * AIO_PENDING counts them, so that the session is not torn down under a
 * reply.
 */
#define ASYNC_ABOVE 4
/* ASYNC_ABOVE, or VDPOOL_TEST_ASYNC_ABOVE: crash tests take every read and
 * write they can asynchronously (0), as a deep queue would; never set in
 * production. */
static unsigned async_above = ASYNC_ABOVE;
static atomic_uint aio_pending;
static __thread bool go_async;

struct loop;
static __thread struct loop *this_loop; /* a worker's own loop */
static void worker_may_block(void);

struct aio_req {
	fuse_req_t req;
	fuse_ino_t ino;
	void *buf; /* a read's, SIZE bytes; NULL for a write (the store copies)
		    */
};

static struct aio_req *aio_req_new(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	struct aio_req *q = malloc(sizeof(*q));

	if (!q)
		return NULL;
	q->buf = NULL;
	if (size && posix_memalign(&q->buf, VDP_AIO_ALIGN, size) != 0) {
		free(q);
		return NULL;
	}
	q->req = req;
	q->ino = ino;
	return q;
}

static void aio_req_free(struct aio_req *q)
{
	free(q->buf);
	free(q);
}

static void read_done(void *arg, ssize_t n)
{
	struct aio_req *q = arg;

	if (n < 0)
		reply_err(q->req, "read", q->ino, (int)n);
	else
		fuse_reply_buf(q->req, q->buf, (size_t)n);
	aio_req_free(q);
	atomic_fetch_sub(&aio_pending, 1);
}

static void write_done(void *arg, ssize_t n)
{
	struct aio_req *q = arg;

	if (n < 0)
		reply_err(q->req, "write", q->ino, (int)n);
	else
		fuse_reply_write(q->req, (size_t)n);
	aio_req_free(q);
	atomic_fetch_sub(&aio_pending, 1);
}

/* Waits until every asynchronous request has been answered. */
static void aio_drain(void)
{
	while (atomic_load(&aio_pending))
		usleep(1000);
}

static void fs_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct aio_req *q;
	ssize_t n;

	(void)fi;
	if (bad_range(off, size)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	/* At most max_pages (1 MiB). */
	q = aio_req_new(req, ino, size);
	if (!q) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	atomic_fetch_add(&aio_pending, 1);
	if (go_async && vdp_read_start(fs_of(req)->pool, ino, q->buf, size,
				       (uint64_t)off, read_done, q))
		return;
	atomic_fetch_sub(&aio_pending, 1);
	worker_may_block();
	n = vdp_read(fs_of(req)->pool, ino, q->buf, size, (uint64_t)off);
	if (n < 0)
		reply_err(req, "read", ino, (int)n);
	else
		fuse_reply_buf(req, q->buf, (size_t)n);
	aio_req_free(q);
}

/* Starts the write of SIZE bytes of BUF at OFF asynchronously if it can
 * (see vdp_write_start); false if not. */
static bool write_start(fuse_req_t req, fuse_ino_t ino, const char *buf,
			size_t size, off_t off)
{
	struct aio_req *q;

	if (!go_async || size > VDP_AIO_WRITE_MAX ||
	    (size | (uint64_t)off) % VDP_AIO_ALIGN)
		return false;
	q = aio_req_new(req, ino, 0);
	if (!q)
		return false;
	atomic_fetch_add(&aio_pending, 1);
	if (vdp_write_start(fs_of(req)->pool, ino, buf, size, (uint64_t)off,
			    write_done, q))
		return true;
	atomic_fetch_sub(&aio_pending, 1);
	aio_req_free(q);
	return false;
}

/*
 * A write to a handle opened O_DSYNC or O_SYNC (or sent with RWF_DSYNC) is
 * durable when acknowledged.  With FOPEN_DIRECT_IO the kernel sends no
 * FUSE_FSYNC after such a write (it does through the page cache), so the
 * write commits here; fi->flags carries the flags of this write.
 */
static void fs_write(fuse_req_t req, fuse_ino_t ino, const char *buf,
		     size_t size, off_t off, struct fuse_file_info *fi)
{
	struct vdpfs *fs = fs_of(req);
	ssize_t n;
	int r;

	if (bad_range(off, size)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	/* Writes that must be durable when answered wait for the commit. */
	if ((fs->page_cache || !(fi->flags & O_DSYNC)) &&
	    write_start(req, ino, buf, size, off))
		return;
	worker_may_block();
	n = vdp_write(fs->pool, ino, buf, size, (uint64_t)off);
	if (n < 0) {
		reply_err(req, "write", ino, (int)n);
		return;
	}
	if (!fs->page_cache && (fi->flags & O_DSYNC)) {
		r = vdp_fsync(fs->pool, ino, (fi->flags & O_SYNC) != O_SYNC);
		if (r < 0) {
			reply_err(req, "fsync after O_DSYNC write", ino, r);
			return;
		}
	}
	fuse_reply_write(req, (size_t)n);
}

/* An acknowledged flush (close of a writable handle) is durable. */
static void fs_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct vdpfs *fs = fs_of(req);

	if (!fi->fh || fs->rdonly) {
		fuse_reply_err(req, 0);
		return;
	}
	reply_err(req, "flush", ino, vdp_fsync(fs->pool, ino, true));
}

static void fs_fsync(fuse_req_t req, fuse_ino_t ino, int datasync,
		     struct fuse_file_info *fi)
{
	struct vdpfs *fs = fs_of(req);

	(void)fi;
	if (fs->rdonly) {
		fuse_reply_err(req, 0);
		return;
	}
	reply_err(req, "fsync", ino, vdp_fsync(fs->pool, ino, datasync != 0));
}

/* fsync(2) of a directory commits the whole pool, as a file's does.
 * Without this op the kernel would answer it itself, committing nothing
 * (tests/crash found names lost after an acknowledged directory fsync). */
static void fs_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync,
			struct fuse_file_info *fi)
{
	fs_fsync(req, ino, datasync, fi);
}

static void fs_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off,
			 off_t len, struct fuse_file_info *fi)
{
	(void)fi;
	if (len <= 0 || bad_range(off, (uint64_t)len)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	reply_err(req, "fallocate", ino,
		  vdp_fallocate(fs_of(req)->pool, ino, mode, (uint64_t)off,
				(uint64_t)len));
}

/*
 * copy_file_range between two disks of this mount: the store shares whole
 * extents (a clone in milliseconds) and copies the rest, the whole request
 * as one transaction.  The kernel sends it only within one FUSE mount;
 * elsewhere it copies through the page cache itself.  The reply's byte
 * count is 32 bits: the store may do more than one reply can say (a clone
 * of a whole multi-GiB disk, at once, so that no commit sees half of it);
 * the reply says at most COPY_REPLY_MAX and callers (cp, qemu-img) ask for
 * the rest, which the store finds done: the same extents, shared already.
 */
#define COPY_REPLY_MAX ((size_t)1 << 30)

/*
 * Whether a request is the first of a copy of a whole disk that the
 * kernel cut: Linux sends at most UINT_MAX rounded down to a page per
 * request (4 GiB - 4 KiB), so `cp` or `cat` of a larger disk arrives in
 * parts, and a commit between two parts would hold half a clone.  A
 * request from offset 0 to offset 0 of an empty disk, exactly that long,
 * is taken for the whole disk (the store clips at the source's end) and
 * done as one transaction; the parts after it find it done.  Only a
 * caller asking for exactly that many bytes into an empty disk gets more.
 */
static bool whole_clone(struct vdpfs *fs, fuse_ino_t ino_out, off_t off_in,
			off_t off_out, size_t len)
{
	uint64_t cut = UINT32_MAX & ~((uint64_t)sysconf(_SC_PAGESIZE) - 1);
	struct vdp_attr a;

	return off_in == 0 && off_out == 0 && len == cut &&
	       vdp_getattr(fs->pool, ino_out, &a) == 0 && a.size == 0 &&
	       a.blocks == 0;
}

static void fs_copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in,
			       struct fuse_file_info *fi_in, fuse_ino_t ino_out,
			       off_t off_out, struct fuse_file_info *fi_out,
			       size_t len, int flags)
{
	struct vdpfs *fs = fs_of(req);
	size_t max;
	ssize_t n;

	(void)fi_in;
	(void)fi_out;
	if (flags) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (off_in < 0 || off_out < 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	/* The store clips LEN at the source's end of file. */
	if (bad_range(off_out, len))
		len = (size_t)(INT64_MAX - off_out);
	if (whole_clone(fs, ino_out, off_in, off_out, len))
		len = (size_t)(INT64_MAX - off_out);
	n = vdp_copy_range(fs->pool, ino_in, (uint64_t)off_in, ino_out,
			   (uint64_t)off_out, len);
	/* A copy whose offsets do not line up inside an extent moves every
	 * byte, and the store does at most COPY_REPLY_MAX of it. */
	max = ((uint64_t)off_in - (uint64_t)off_out) % fs->extent_size
		      ? COPY_REPLY_MAX
		      : fs->copy_reply_max;
	if (n < 0)
		reply_err(req, "copy_file_range", ino_out, (int)n);
	else
		fuse_reply_write(req, (size_t)n < max ? (size_t)n : max);
}

/* The kernel answers SEEK_SET/CUR/END itself and sends only DATA/HOLE. */
static void fs_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
		     struct fuse_file_info *fi)
{
	int64_t r;

	(void)fi;
	if (off < 0 || (whence != SEEK_DATA && whence != SEEK_HOLE)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	r = vdp_lseek(fs_of(req)->pool, ino, (uint64_t)off, whence);
	if (r < 0)
		reply_err(req, "lseek", ino, (int)r);
	else
		fuse_reply_lseek(req, (off_t)r);
}

/* ---- directories ---- */

struct dent {
	uint64_t next;
	struct vdp_attr attr;
	bool ref; /* we hold a reference on attr.ino for the kernel */
	char name[VDP_NAME_MAX + 1];
};

/* One READDIR(PLUS) reply being built.  Plain entries go straight into
 * BUF; plus entries are collected first and take their references after
 * vdp_readdir() returns, so that no store call runs inside its callback. */
struct dirbuf {
	fuse_req_t req;
	bool plus;
	char *buf;
	size_t size, used; /* bytes of BUF filled (plain) or reserved (plus) */
	struct dent *ents;
	size_t n, cap;
};

static bool is_dot(const char *name)
{
	return !strcmp(name, ".") || !strcmp(name, "..");
}

static int dir_fill(void *ctx, const char *name, const struct vdp_attr *attr,
		    uint64_t next)
{
	struct dirbuf *db = ctx;
	size_t room = db->size - db->used, len;
	struct dent *d;

	if (!db->plus) {
		struct stat st = {.st_ino = attr->ino, .st_mode = attr->mode};

		len = fuse_add_direntry(db->req, db->buf + db->used, room, name,
					&st, (off_t)next);
		if (len > room)
			return 1;
		db->used += len;
		return 0;
	}
	len = fuse_add_direntry_plus(db->req, NULL, 0, name, NULL, 0);
	if (len > room || strlen(name) > VDP_NAME_MAX)
		return 1;
	if (db->n == db->cap) {
		size_t cap = db->cap ? 2 * db->cap : 16;

		d = realloc(db->ents, cap * sizeof(*d));
		if (!d)
			return -ENOMEM;
		db->ents = d;
		db->cap = cap;
	}
	d = &db->ents[db->n++];
	d->next = next;
	d->attr = *attr;
	d->ref = false;
	strcpy(d->name, name);
	db->used += len;
	return 0;
}

/* Adds the collected plus entries to BUF, each one but "." and ".." with a
 * reference from vdp_lookup.  Returns the bytes filled or -errno when not
 * even the first entry could be looked up. */
static ssize_t dir_fill_plus(struct dirbuf *db, fuse_ino_t dir)
{
	struct vdp_pool *pool = fs_of(db->req)->pool;
	struct fuse_entry_param e;
	size_t used = 0;

	for (size_t i = 0; i < db->n; i++) {
		struct dent *d = &db->ents[i];

		if (is_dot(d->name)) {
			attr_to_entry(&d->attr, &e);
			e.ino = 0; /* no reference; the kernel skips them */
		} else {
			int r = vdp_lookup(pool, dir, d->name, &d->attr);

			if (r == -ENOENT)
				continue; /* removed while listing */
			if (r < 0)
				return used ? (ssize_t)used : r;
			d->ref = true;
			attr_to_entry(&d->attr, &e);
		}
		used += fuse_add_direntry_plus(db->req, db->buf + used,
					       db->size - used, d->name, &e,
					       (off_t)d->next);
	}
	return (ssize_t)used;
}

static void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       bool plus)
{
	struct dirbuf db = {.req = req, .plus = plus, .size = size};
	struct vdp_pool *pool = fs_of(req)->pool;
	ssize_t used;
	int r;

	if (off < 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	db.buf = malloc(size ? size : 1);
	if (!db.buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	r = vdp_readdir(pool, ino, (uint64_t)off, dir_fill, &db);
	if (r < 0)
		goto err_reply;
	used = (ssize_t)db.used;
	if (plus) {
		used = dir_fill_plus(&db, ino);
		if (used < 0) {
			r = (int)used;
			goto err_reply;
		}
	}
	/* A reply the kernel never saw takes no references: give them back. */
	if (fuse_reply_buf(req, db.buf, (size_t)used) != 0) {
		for (size_t i = 0; i < db.n; i++)
			if (db.ents[i].ref)
				vdp_forget(pool, db.ents[i].attr.ino, 1);
	}
	goto out_free;

err_reply:
	reply_err(req, plus ? "readdirplus" : "readdir", ino, r);
out_free:
	free(db.ents);
	free(db.buf);
}

static void fs_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	(void)fi;
	do_readdir(req, ino, size, off, false);
}

static void fs_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size,
			   off_t off, struct fuse_file_info *fi)
{
	(void)fi;
	do_readdir(req, ino, size, off, true);
}

/* ---- pool-wide ---- */

static void fs_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct statvfs sv = {0};
	struct vdp_statfs s;
	uint64_t per_extent;

	(void)ino;
	vdp_pool_statfs(fs_of(req)->pool, &s);
	per_extent = s.extent_size / STATFS_BSIZE;
	sv.f_bsize = STATFS_BSIZE;
	sv.f_frsize = STATFS_BSIZE;
	sv.f_blocks = s.total_extents * per_extent;
	sv.f_bfree = s.free_extents * per_extent;
	sv.f_bavail = sv.f_bfree;
	sv.f_files = s.inodes + STATFS_FREE_INODES;
	sv.f_ffree = STATFS_FREE_INODES;
	sv.f_favail = STATFS_FREE_INODES;
	sv.f_namemax = VDP_NAME_MAX;
	fuse_reply_statfs(req, &sv);
}

/* Whether the caller of REQ belongs to group GID. */
/* ---- xattrs ---- */

/* The control socket (control.h) of a writable mount, for `vdpool add`,
 * `remove`, `balance` and `resize-member`; NULL read-only. */
static struct ctl *control;

/* Read-only xattrs of the root that serve the pool's status to the CLI,
 * and the path of its control socket.
 * Returns the malloc'ed value, or NULL with *R = -errno (-ENODATA when NAME
 * is not one of them). */
static char *special_xattr(struct vdp_pool *pool, const char *name, int *r)
{
	char *s = NULL;

	*r = 0;
	if (!strcmp(name, "trusted.vdpool.status"))
		*r = vdp_pool_status(pool, false, &s);
	else if (!strcmp(name, "trusted.vdpool.status.json"))
		*r = vdp_pool_status(pool, true, &s);
	else if (!strcmp(name, "trusted.vdpool.pid"))
		*r = asprintf(&s, "%ld", (long)getpid()) < 0 ? -ENOMEM : 0;
	else if (!strcmp(name, "trusted.vdpool.control") && control)
		*r = (s = strdup(ctl_path(control))) ? 0 : -ENOMEM;
	else
		*r = -ENODATA;
	return *r < 0 ? NULL : s;
}

static bool is_special_xattr(fuse_ino_t ino, const char *name)
{
	return ino == VDP_ROOT_INO && !strncmp(name, "trusted.vdpool.", 15);
}

static void fs_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
			const char *value, size_t size, int flags)
{
	if (is_special_xattr(ino, name)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	reply_err(
		req, "setxattr", ino,
		vdp_setxattr(fs_of(req)->pool, ino, name, value, size, flags));
}

/* Replies to a get/list request whose answer the store wrote into BUF. */
static void reply_xattr_result(fuse_req_t req, const char *op, fuse_ino_t ino,
			       size_t size, const void *buf, ssize_t n)
{
	if (n < 0)
		reply_err(req, op, ino, (int)n);
	else if (size == 0)
		fuse_reply_xattr(req, (size_t)n);
	else
		fuse_reply_buf(req, buf, (size_t)n);
}

static void fs_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
			size_t size)
{
	struct vdp_pool *pool = fs_of(req)->pool;
	char *buf;
	ssize_t n;
	int r;

	if (is_special_xattr(ino, name)) {
		buf = special_xattr(pool, name, &r);
		if (!buf)
			n = r;
		else if (size && strlen(buf) > size)
			n = -ERANGE;
		else
			n = (ssize_t)strlen(buf);
		reply_xattr_result(req, "getxattr", ino, size, buf, n);
		free(buf);
		return;
	}
	buf = size ? malloc(size) : NULL;
	if (size && !buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	n = vdp_getxattr(pool, ino, name, buf, size);
	reply_xattr_result(req, "getxattr", ino, size, buf, n);
	free(buf);
}

static void fs_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	char *buf = size ? malloc(size) : NULL;
	ssize_t n;

	if (size && !buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	n = vdp_listxattr(fs_of(req)->pool, ino, buf, size);
	reply_xattr_result(req, "listxattr", ino, size, buf, n);
	free(buf);
}

static void fs_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	if (is_special_xattr(ino, name)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	reply_err(req, "removexattr", ino,
		  vdp_removexattr(fs_of(req)->pool, ino, name));
}

/* opendir, release, releasedir: libfuse's defaults (reply 0) suffice.  No
 * copy_file_range, ioctl or locks: ENOSYS, and the kernel keeps locks. */
static const struct fuse_lowlevel_ops fs_ops = {
	.init = fs_init,
	.destroy = fs_destroy,
	.lookup = fs_lookup,
	.forget = fs_forget,
	.forget_multi = fs_forget_multi,
	.getattr = fs_getattr,
	.setattr = fs_setattr,
	.mknod = fs_mknod,
	.mkdir = fs_mkdir,
	.symlink = fs_symlink,
	.link = fs_link,
	.unlink = fs_unlink,
	.rmdir = fs_rmdir,
	.rename = fs_rename,
	.create = fs_create,
	.open = fs_open,
	.read = fs_read,
	.write = fs_write,
	.flush = fs_flush,
	.fsync = fs_fsync,
	.fsyncdir = fs_fsyncdir,
	.readdir = fs_readdir,
	.readdirplus = fs_readdirplus,
	.statfs = fs_statfs,
	.setxattr = fs_setxattr,
	.getxattr = fs_getxattr,
	.listxattr = fs_listxattr,
	.removexattr = fs_removexattr,
	.fallocate = fs_fallocate,
	.lseek = fs_lseek,
	.copy_file_range = fs_copy_file_range,
};

/* ---- command line ---- */

struct cmdline {
	char *pool;
	char *mountpoint;
	bool help, version, ro, page_cache, fsname, subtype;
	bool commit_set;
	unsigned commit_ms;
	unsigned max_threads;
};

/* Options by name, or by "name=" for those with a value.  PASS_OPTS go
 * to libfuse as they are (FUSE options and mount flags); DROP_OPTS are
 * fstab's, meant for mount(8) and systemd (as are "x-*"). */
static const char pass_opts[] =
	" allow_other allow_root auto_unmount default_permissions debug"
	" clone_fd max_idle_threads= fsname= subtype= max_read= user="
	" context= fscontext= defcontext= rootcontext= rw ro suid nosuid dev"
	" nodev exec noexec async sync dirsync atime noatime diratime"
	" nodiratime relatime norelatime strictatime nostrictatime -f -d -s ";
static const char drop_opts[] = " defaults auto noauto user nouser users"
				" owner _netdev nofail comment= ";

/* Whether LIST holds ARG's name (with its '=', if it has one). */
static bool opt_in(const char *list, const char *arg)
{
	size_t len = strcspn(arg, "= ");
	char key[32];

	if (arg[len] == '=')
		len++;
	else if (arg[len] != '\0')
		return false;
	if (len + 3 > sizeof(key))
		return false;
	snprintf(key, sizeof(key), " %.*s ", (int)len, arg);
	return strstr(list, key) != NULL;
}

/* Parses a decimal unsigned in [MIN, MAX] for option NAME. */
static int parse_uint(const char *name, const char *s, unsigned min,
		      unsigned max, unsigned *out)
{
	unsigned long v;
	char *end;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || end == s || *end || *s == '-' || v < min || v > max) {
		fprintf(stderr,
			"vdpoolfs: bad value '%s' for %s (expected %u..%u)\n",
			s, name, min, max);
		return -1;
	}
	*out = (unsigned)v;
	return 0;
}

/* fuse_opt_proc_t: returns 1 to hand ARG on to libfuse, 0 to consume it,
 * -1 to fail.  Every option must be known here, so that a typo fails
 * before anything is opened or mounted. */
static int opt_proc(void *data, const char *arg, int key,
		    struct fuse_args *outargs)
{
	struct cmdline *cl = data;

	(void)outargs;
	if (key == FUSE_OPT_KEY_NONOPT) {
		if (!cl->pool)
			return (cl->pool = strdup(arg)) ? 0 : -1;
		if (!cl->mountpoint)
			return (cl->mountpoint = strdup(arg)) ? 1 : -1;
		fprintf(stderr, "vdpoolfs: unexpected argument '%s'\n", arg);
		return -1;
	}
	if (!strcmp(arg, "-h") || !strcmp(arg, "--help")) {
		cl->help = true;
		return 0;
	}
	if (!strcmp(arg, "-V") || !strcmp(arg, "--version")) {
		cl->version = true;
		return 0;
	}
	if (!strcmp(arg, "page_cache")) {
		cl->page_cache = true;
		return 0;
	}
	if (!strncmp(arg, "commit_interval=", 16)) {
		cl->commit_set = true;
		return parse_uint("commit_interval", arg + 16, 0, 86400000,
				  &cl->commit_ms);
	}
	if (!strncmp(arg, "max_threads=", 12))
		return parse_uint("max_threads", arg + 12, 1, MAX_MAX_THREADS,
				  &cl->max_threads);
	if (opt_in(drop_opts, arg) || !strncmp(arg, "x-", 2))
		return 0;
	if (opt_in(pass_opts, arg)) {
		if (!strcmp(arg, "ro"))
			cl->ro = true;
		else if (!strcmp(arg, "rw"))
			cl->ro = false;
		if (!strncmp(arg, "fsname=", 7))
			cl->fsname = true;
		if (!strncmp(arg, "subtype=", 8))
			cl->subtype = true;
		return 1;
	}
	fprintf(stderr, "vdpoolfs: unknown option '%s'\n", arg);
	return -1;
}

static void usage(void)
{
	printf("usage: vdpoolfs [-f] [-d] [-o OPTS] POOL MOUNTPOINT\n"
	       "\n"
	       "Mounts the vdpool POOL (a pool name or a member's path) at "
	       "MOUNTPOINT.\n"
	       "\n"
	       "  -f                     stay in the foreground\n"
	       "  -d, -o debug           log every request (implies -f)\n"
	       "  -s                     single-threaded\n"
	       "  -h, --help             show this help\n"
	       "  -V, --version          show versions\n"
	       "\n"
	       "vdpoolfs options:\n"
	       "  -o ro                  open the pool read-only\n"
	       "  -o commit_interval=MS  commit pending changes every MS ms "
	       "(0: only on\n"
	       "                         fsync, flush and unmount)\n"
	       "  -o page_cache          use the kernel page cache (default: "
	       "direct I/O)\n"
	       "  -o max_threads=N       worker threads (default %d)\n"
	       "\n"
	       "FUSE options: allow_other, allow_root, default_permissions, "
	       "auto_unmount,\n"
	       "  clone_fd, max_idle_threads=N, fsname=S, subtype=S, "
	       "max_read=N.\n"
	       "Mount flags: rw, suid, nosuid, dev, nodev, exec, noexec, "
	       "sync, async,\n"
	       "  dirsync, [no]atime, [no]diratime, [no]relatime, "
	       "[no]strictatime.\n"
	       "Ignored (for fstab): defaults, auto, noauto, user, nouser, "
	       "users, owner,\n"
	       "  _netdev, nofail, x-*, comment=*.\n",
	       DEFAULT_MAX_THREADS);
}

/* Refuses a mount point that is missing, not a directory, or the root of
 * a mount already (mounting over it would hide that mount). */
static int check_mountpoint(const char *path)
{
	struct statx stx;

	if (statx(AT_FDCWD, path, 0, STATX_TYPE, &stx) < 0) {
		if (errno == ENOTCONN)
			fprintf(stderr,
				"vdpoolfs: mount point '%s': a FUSE daemon "
				"died here; run 'fusermount3 -u %s'\n",
				path, path);
		else
			fprintf(stderr, "vdpoolfs: mount point '%s': %s\n",
				path, strerror(errno));
		return -1;
	}
	if (!S_ISDIR(stx.stx_mode)) {
		fprintf(stderr,
			"vdpoolfs: mount point '%s' is not a directory\n",
			path);
		return -1;
	}
	if ((stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) &&
	    (stx.stx_attributes & STATX_ATTR_MOUNT_ROOT)) {
		fprintf(stderr,
			"vdpoolfs: mount point '%s' is busy: something is "
			"mounted there\n",
			path);
		return -1;
	}
	return 0;
}

/* Adds "-o NAME=VALUE", VALUE escaped for fuse_opt's comma splitting. */
static int add_opt(struct fuse_args *args, const char *name, const char *value)
{
	char *esc = NULL, *opt = NULL;
	int r = -1;

	if (fuse_opt_add_opt_escaped(&esc, value) < 0)
		return -1;
	if (asprintf(&opt, "%s=%s", name, esc) >= 0 &&
	    fuse_opt_add_arg(args, "-o") == 0)
		r = fuse_opt_add_arg(args, opt);
	free(opt);
	free(esc);
	return r;
}

/* Names the mount after the pool and types it fuse.vdpoolfs, as df(1),
 * /proc/mounts and fstab show it.  default_permissions is always on: the
 * kernel enforces the mode, owner and group the pool stores, and nothing
 * else checks them, so without it any user who can reach an allow_other
 * mount could open or chmod any disk. */
static int add_default_opts(struct fuse_args *args, const struct cmdline *cl)
{
	if (fuse_opt_add_arg(args, "-odefault_permissions") < 0)
		return -1;
	if (!cl->fsname && add_opt(args, "fsname", cl->pool) < 0)
		return -1;
	if (!cl->subtype && add_opt(args, "subtype", "vdpoolfs") < 0)
		return -1;
	return 0;
}

/* ---- daemon ---- */

/*
 * Forks.  The parent waits for one byte on a pipe and exits 0 when it
 * comes (the mount is live), else with the child's status: so "vdpoolfs
 * POOL MNT" in a script or from mount(8) returns only once the mount
 * works.  We fork before opening the pool because the store starts its
 * commit thread in vdp_pool_open(), and threads do not survive fork().
 * Returns the pipe's write end, in the child.
 */
static int daemon_fork(void)
{
	int fds[2], status;
	unsigned char ok;
	ssize_t n;
	pid_t pid;

	if (pipe2(fds, O_CLOEXEC) < 0)
		return -1;
	pid = fork();
	if (pid < 0) {
		close(fds[0]);
		close(fds[1]);
		return -1;
	}
	if (pid == 0) {
		close(fds[0]);
		return fds[1];
	}
	close(fds[1]);
	do
		n = read(fds[0], &ok, 1);
	while (n < 0 && errno == EINTR);
	if (n == 1)
		_exit(0);
	if (waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
	    WEXITSTATUS(status) != 0)
		_exit(WEXITSTATUS(status));
	_exit(1);
}

/* Detaches the child and tells the parent the mount is live. */
static void daemon_ready(int *fd)
{
	int null = open("/dev/null", O_RDWR);

	setsid();
	if (chdir("/") < 0)
		logmsg(LOG_WARNING, "chdir /: %s", strerror(errno));
	openlog("vdpoolfs", LOG_PID, LOG_DAEMON);
	log_syslog = true;
	if (null >= 0) {
		dup2(null, STDIN_FILENO);
		dup2(null, STDOUT_FILENO);
		dup2(null, STDERR_FILENO);
		if (null > STDERR_FILENO)
			close(null);
	}
	if (write(*fd, "", 1) != 1)
		logmsg(LOG_WARNING, "cannot signal the parent: %s",
		       strerror(errno));
	close(*fd);
	*fd = -1;
}

/*
 * The worker loop.  libfuse's fuse_session_loop_mt() receives each request
 * into a buffer from malloc(), where a write's data, which follows the
 * 40-byte fuse_in_header and the 40-byte fuse_write_in, is never aligned:
 * every write to an O_DIRECT member was copied once more, into an aligned
 * bounce buffer (a 1 MiB memcpy per sequential write).  These workers
 * receive into a buffer placed so that a write's data starts on a page, and
 * the member writes straight from the buffer the kernel filled.
 *
 * Like libfuse's loop, a worker that takes a request when no other is left
 * waiting starts one more, up to max_threads, so the workers (and the
 * buffers they touch) follow the peak concurrency; with max_idle_threads
 * set, a worker leaves when more than that many are waiting.  The workers
 * share the one /dev/fuse descriptor (clone_fd needs libfuse internals).
 */
#define WRITE_HDR (sizeof(struct fuse_in_header) + sizeof(struct fuse_write_in))
#define RECV_ALIGN 4096u
/* The kernel sends at most MAX_WRITE + WRITE_HDR bytes and refuses a read
 * into less; every other request is smaller. */
#define RECV_BUF (MAX_WRITE + 2 * RECV_ALIGN)

struct loop {
	struct fuse_session *se;
	pthread_mutex_t lock;
	sem_t left; /* posted by each worker that leaves */
	unsigned max_threads, max_idle;
	unsigned nthreads, idle;
	bool stopping; /* no worker starts or detaches any more */
	int error;     /* the first error that ended the loop, -errno */
	pthread_t *threads;
	bool *running; /* [max_threads]: threads[i] is to be joined */
};

static void *worker(void *arg);

/* Starts a worker; L->lock held.  Returns 0 or -errno. */
static int start_worker(struct loop *l)
{
	unsigned i = 0;
	int r;

	while (l->running[i])
		i++;
	r = pthread_create(&l->threads[i], NULL, worker, l);
	if (r != 0)
		return -r;
	l->running[i] = true;
	l->nthreads++;
	l->idle++;
	return 0;
}

/* Called before a request may wait (for a member, a lock, a commit):
 * finishes the I/O this worker started, whose completions only it can
 * reap (the wait could otherwise be for one of them), and keeps one worker
 * waiting for requests meanwhile.  Reads and writes that go
 * asynchronously need neither. */
static void worker_may_block(void)
{
	struct loop *l = this_loop;

	vdp_aio_poll(true);
	if (!l) /* -s: libfuse's single-threaded loop */
		return;
	pthread_mutex_lock(&l->lock);
	if (l->idle == 0 && !l->stopping && l->nthreads < l->max_threads &&
	    start_worker(l) < 0)
		logmsg(LOG_WARNING, "cannot start a worker thread");
	pthread_mutex_unlock(&l->lock);
}

/* Whether the calling worker, waiting again, is one too many: then it
 * detaches and is forgotten.  L->lock held. */
static bool worker_leaves(struct loop *l)
{
	if (l->stopping || l->idle <= l->max_idle)
		return false;
	for (unsigned i = 0; i < l->max_threads; i++) {
		if (l->running[i] &&
		    pthread_equal(l->threads[i], pthread_self())) {
			l->running[i] = false;
			break;
		}
	}
	pthread_detach(pthread_self());
	l->nthreads--;
	l->idle--;
	sem_post(&l->left);
	return true;
}

/* Reads one request into FBUF, as fuse_session_receive_buf would without
 * splice.  The descriptor is non-blocking: when no request is there the
 * worker sends the I/O it has gathered to the members and answers what
 * completed (vdp_aio_poll), then waits in epoll_wait on EP, which wakes
 * one waiter per request (EPOLLEXCLUSIVE), and this worker when its I/O
 * completes (EINTR, or vdp_aio_fd readable).  Returns the request's size, 0
 * when the connection has ended, -EINTR to read again, or -errno.  Cancellable
 * (at exit) only inside epoll_wait() and with no I/O in flight: a thread
 * cancelled in stdio would leave stderr locked, one with I/O in flight
 * its requests unanswered. */
static int receive(struct loop *l, int ep, struct fuse_buf *fbuf)
{
	/* Not on the stack: ASan takes a frame left by cancellation for one
	 * still in scope. */
	static __thread struct epoll_event ev;
	ssize_t n;
	int err;

	n = read(fuse_session_fd(l->se), fbuf->mem,
		 RECV_BUF - (RECV_ALIGN - WRITE_HDR));
	err = errno;
	if (n < 0 && err == EAGAIN && vdp_aio_poll(false) == 0) {
		bool cancel = vdp_aio_inflight() == 0;

		if (cancel)
			pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, NULL);
		(void)epoll_wait(ep, &ev, 1, -1);
		if (cancel)
			pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
	}
	if (fuse_session_exited(l->se))
		return 0;
	if (n < 0) {
		switch (err) {
		case ENOENT: /* the request was interrupted meanwhile */
		case EINTR:
		case EAGAIN:
			return -EINTR;
		case ENODEV: /* unmounted */
		case ECONNABORTED:
			/* Unmounted while this thread was taking a request
			 * (a release racing umount does it), or aborted
			 * through /sys/fs/fuse/connections. */
			return 0;
		}
		return -err;
	}
	if ((size_t)n < sizeof(struct fuse_in_header))
		return -EIO; /* the kernel never sends less */
	fbuf->size = (size_t)n;
	return (int)n;
}

/* Receives and handles requests in MEM until the session ends (*R: 0, or
 * -errno for an error) or the worker leaves (*R = 1). */
static void serve_requests(struct loop *l, int ep, void *mem, int *r)
{
	struct fuse_buf fbuf = {.mem = (char *)mem + RECV_ALIGN - WRITE_HDR};
	const struct fuse_in_header *in;
	unsigned held; /* requests the daemon holds, this one included */
	bool leave;

	while (!fuse_session_exited(l->se)) {
		*r = receive(l, ep, &fbuf);
		if (*r == -EINTR)
			continue;
		if (*r <= 0) /* 0: unmounted */
			return;
		in = (const struct fuse_in_header *)fbuf.mem;
		pthread_mutex_lock(&l->lock);
		held = --l->idle;
		held = l->nthreads - held + atomic_load(&aio_pending);
		pthread_mutex_unlock(&l->lock);
		/* Reads and writes may go asynchronously; they call it
		 * themselves when they do not. */
		go_async = held > async_above;
		if (in->opcode != FUSE_READ && in->opcode != FUSE_WRITE)
			worker_may_block();

		fuse_session_process_buf(l->se, &fbuf);

		pthread_mutex_lock(&l->lock);
		l->idle++;
		leave = worker_leaves(l);
		pthread_mutex_unlock(&l->lock);
		if (leave) {
			*r = 1;
			return;
		}
	}
	*r = 0;
}

static void close_fd(void *arg)
{
	close((int)(intptr_t)arg);
}

/* An epoll instance that waits for requests on L's /dev/fuse and for the
 * completions of this worker's I/O, or -errno.  Not inlined: its frame is
 * gone before the worker can be cancelled. */
__attribute__((noinline)) static int open_epoll(struct loop *l)
{
	struct epoll_event ev = {.events = EPOLLIN | EPOLLEXCLUSIVE};
	struct epoll_event aio = {.events = EPOLLIN};
	int ep = epoll_create1(EPOLL_CLOEXEC), fd = vdp_aio_fd(), err;

	if (ep < 0)
		return -errno;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, fuse_session_fd(l->se), &ev) < 0 ||
	    (fd >= 0 && epoll_ctl(ep, EPOLL_CTL_ADD, fd, &aio) < 0)) {
		err = errno;
		close(ep);
		return -err;
	}
	return ep;
}

static void *worker(void *arg)
{
	struct loop *l = arg;
	void *mem;
	int ep, r = -ENOMEM;

	/* Cancellable only where receive() allows it. */
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
	this_loop = l;
	ep = open_epoll(l);
	if (ep < 0) {
		r = ep;
	} else if (posix_memalign(&mem, RECV_ALIGN, RECV_BUF) == 0) {
		pthread_cleanup_push(close_fd, (void *)(intptr_t)ep);
		pthread_cleanup_push(free, mem);
		serve_requests(l, ep, mem, &r);
		vdp_aio_poll(true);
		pthread_cleanup_pop(1);
		pthread_cleanup_pop(0);
	}
	if (ep >= 0)
		close(ep);
	if (r > 0)
		return NULL; /* detached: L may be gone */

	/* Unmounted, or an error: the session ends; run_loop joins us. */
	pthread_mutex_lock(&l->lock);
	if (r < 0 && !l->error)
		l->error = r;
	l->nthreads--;
	l->idle--;
	pthread_mutex_unlock(&l->lock);
	fuse_session_exit(l->se);
	sem_post(&l->left);
	return NULL;
}

/* Runs the session until unmount or a signal.  Returns 0 or -errno. */
static int run_loop(struct fuse_session *se, struct fuse_cmdline_opts *opts,
		    unsigned max_threads)
{
	struct loop l = {
		.se = se,
		.max_threads = max_threads,
		/* UINT_MAX, the default: keep every worker, as libfuse does */
		.max_idle = opts->max_idle_threads,
	};
	int r;

	if (opts->singlethread)
		return fuse_session_loop(se) < 0 ? -EIO : 0;
	/* The workers read without blocking (receive). */
	r = fcntl(fuse_session_fd(se), F_GETFL);
	if (r < 0 || fcntl(fuse_session_fd(se), F_SETFL, r | O_NONBLOCK) < 0)
		return -errno;
	l.threads = calloc(max_threads, sizeof(*l.threads));
	l.running = calloc(max_threads, sizeof(*l.running));
	if (!l.threads || !l.running) {
		free(l.threads);
		free(l.running);
		return -ENOMEM;
	}
	pthread_mutex_init(&l.lock, NULL);
	sem_init(&l.left, 0, 0);

	pthread_mutex_lock(&l.lock);
	r = start_worker(&l);
	pthread_mutex_unlock(&l.lock);
	/* Woken by a leaving worker or by a signal (fuse_set_signal_handlers
	 * makes SIGINT, SIGTERM and SIGHUP end the session). */
	while (r == 0 && !fuse_session_exited(se)) {
		(void)sem_wait(&l.left);
		pthread_mutex_lock(&l.lock);
		if (l.nthreads == 0 && !fuse_session_exited(se))
			r = start_worker(&l); /* the last one left idle */
		pthread_mutex_unlock(&l.lock);
	}
	if (r < 0 && !l.error)
		l.error = r;
	fuse_session_exit(se);

	/* Workers waiting for a request are cancelled; one handling a request
	 * finishes it first (cancellation is off while it does). */
	pthread_mutex_lock(&l.lock);
	l.stopping = true;
	for (unsigned i = 0; i < max_threads; i++)
		if (l.running[i])
			pthread_cancel(l.threads[i]);
	pthread_mutex_unlock(&l.lock);
	for (unsigned i = 0; i < max_threads; i++)
		if (l.running[i])
			pthread_join(l.threads[i], NULL);

	sem_destroy(&l.left);
	pthread_mutex_destroy(&l.lock);
	free(l.threads);
	free(l.running);
	return l.error;
}

/* Opens, mounts, serves, unmounts.  *READY_FD >= 0: tell the parent
 * once mounted, and set it to -1. */
static int serve(struct cmdline *cl, struct fuse_args *args,
		 struct fuse_cmdline_opts *opts, int *ready_fd)
{
	struct vdpfs fs = {.rdonly = cl->ro, .page_cache = cl->page_cache};
	struct fuse_session *se;
	const char *test_layers, *test_copy, *test_async;
	struct vdp_statfs sfs;
	int r, ret = 1;

	/* Before any thread exists, so that all inherit it (needs
	 * CAP_SYS_RESOURCE; without it we merely risk reclaim deadlocks). */
	(void)prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0);

	/* Crash and fault tests (docs/testing/layers.md) wrap the members in
	 * test layers; the variable never matters in production. */
	test_layers = getenv("VDPOOL_TEST_LAYERS");
	if (test_layers && *test_layers) {
		r = vdp_layers_set(test_layers);
		if (r < 0) {
			logmsg(LOG_ERR, "VDPOOL_TEST_LAYERS: %s",
			       store_error(r));
			return 1;
		}
		logmsg(LOG_WARNING,
		       "test layers active (VDPOOL_TEST_LAYERS=%s): "
		       "not for real data",
		       test_layers);
	}
	r = vdp_pool_open(cl->pool, cl->ro ? VDP_OPEN_RDONLY : 0, &fs.pool);
	if (r < 0) {
		logmsg(LOG_ERR, "%s", store_error(r));
		return 1;
	}
	if (cl->commit_set)
		vdp_pool_set_commit_interval(fs.pool, cl->commit_ms);
	vdp_pool_problems(fs.pool, log_problem, NULL);
	vdp_pool_statfs(fs.pool, &sfs);
	fs.extent_size = sfs.extent_size;
	test_async = getenv("VDPOOL_TEST_ASYNC_ABOVE");
	if (test_async && *test_async)
		async_above = (unsigned)strtoul(test_async, NULL, 10);
	/* Crash tests make clones take many requests with a smaller reply
	 * (tests/crash); never set in production. */
	test_copy = getenv("VDPOOL_TEST_COPY_REPLY_MAX");
	fs.copy_reply_max = COPY_REPLY_MAX;
	if (test_copy && *test_copy) {
		unsigned long v = strtoul(test_copy, NULL, 10);

		fs.copy_reply_max = v ? v : 1;
	}

	se = fuse_session_new(args, &fs_ops, sizeof(fs_ops), &fs);
	if (!se)
		goto err_close_pool; /* libfuse said why */
	if (fuse_set_signal_handlers(se) < 0)
		goto err_destroy_session;
	if (fuse_session_mount(se, opts->mountpoint) < 0)
		goto err_remove_handlers;

	if (*ready_fd >= 0)
		daemon_ready(ready_fd);
	logmsg(LOG_INFO, "pool %s mounted on %s%s", cl->pool, opts->mountpoint,
	       cl->ro ? " read-only" : "");
	if (!cl->ro && (r = ctl_start(fs.pool, &control)) < 0)
		logmsg(LOG_WARNING,
		       "control socket in %s: %s (vdpool add/remove need "
		       "the pool unmounted)",
		       ctl_dir(), strerror(-r));
	r = run_loop(se, opts, cl->max_threads);
	aio_drain();
	ctl_stop(control);
	control = NULL;
	if (r < 0)
		logmsg(LOG_ERR, "FUSE loop: %s", strerror(-r));
	else
		ret = 0;
	fuse_session_unmount(se);
err_remove_handlers:
	fuse_remove_signal_handlers(se);
err_destroy_session:
	fuse_session_destroy(se); /* calls fs_destroy if init was seen */
err_close_pool:
	if (fs.pool) {
		fs.close_err = vdp_pool_close(fs.pool);
		if (fs.close_err < 0)
			logmsg(LOG_ERR, "closing the pool: %s",
			       store_error(fs.close_err));
	}
	if (fs.close_err < 0)
		ret = 1;
	else if (ret == 0)
		logmsg(LOG_INFO, "pool %s unmounted from %s", cl->pool,
		       opts->mountpoint);
	return ret;
}

/*
 * vdpoolfs [-f] [-d] [-o OPTS] POOL MOUNTPOINT: mounts a pool.  Exits 0
 * once the mount is live (or, in the foreground, after a clean unmount or
 * SIGTERM/SIGINT/SIGHUP with the pool committed and closed), 1 on any
 * error, with one line on stderr (or syslog once daemonized).
 */
int main(int argc, char *argv[])
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct cmdline cl = {.max_threads = DEFAULT_MAX_THREADS};
	struct fuse_cmdline_opts opts = {0};
	int ready_fd = -1, ret = 1;

	fuse_set_log_func(fuse_log_cb);
	if (fuse_opt_parse(&args, &cl, NULL, opt_proc) < 0)
		goto out_free_args;
	if (cl.help) {
		usage();
		ret = 0;
		goto out_free_args;
	}
	if (cl.version) {
		printf("vdpoolfs %s\nFUSE library version %s\n", VDPOOL_VERSION,
		       fuse_pkgversion());
		fflush(stdout); /* fusermount3 prints its version next */
		fuse_lowlevel_version();
		ret = 0;
		goto out_free_args;
	}
	if (!cl.mountpoint) {
		fprintf(stderr,
			"vdpoolfs: missing %s\n"
			"usage: vdpoolfs [-f] [-d] [-o OPTS] POOL "
			"MOUNTPOINT (see --help)\n",
			cl.pool ? "MOUNTPOINT" : "POOL and MOUNTPOINT");
		goto out_free_args;
	}
	if (check_mountpoint(cl.mountpoint) < 0)
		goto out_free_args;
	if (add_default_opts(&args, &cl) < 0)
		goto out_free_args;
	if (fuse_parse_cmdline(&args, &opts) < 0)
		goto out_free_args;

	if (!opts.foreground) {
		ready_fd = daemon_fork();
		if (ready_fd < 0) {
			logmsg(LOG_ERR, "cannot fork: %s", strerror(errno));
			goto out_free_opts;
		}
	}
	ret = serve(&cl, &args, &opts, &ready_fd);
	if (ready_fd >= 0)
		close(ready_fd); /* failed before the mount: parent sees EOF */

out_free_opts:
	free(opts.mountpoint);
out_free_args:
	fuse_opt_free_args(&args);
	free(cl.pool);
	free(cl.mountpoint);
	return ret;
}
