/* SPDX-License-Identifier: MIT */
/*
 * workload.c - the crash test's workload: a seeded, deterministic sequence
 * of operations on a few disks (writes of random size and alignment, some
 * extending; fsync, fdatasync and directory fsync; truncate up and down;
 * punch holes; zero ranges; preallocation; creates, unlinks, renames, also
 * over an existing disk; closes of unlinked disks; clones: copy_file_range
 * into other disks, new ones (`cp`) and the same one, extent-aligned so
 * extents are shared or not so they are copied, and copies by reading and
 * writing (write-side sharing), then writes, punches and truncates on both
 * sides for copy-on-write), with a pool-full phase in
 * half the points.  Each operation tells the oracle what it may leave
 * behind; what the pool answers decides nothing but sizes and how much was
 * done after ENOSPC.
 *
 * Also the verification of a pool against the oracle (verify_pool).
 *
 * Must never: let an operation's effect go untold to the oracle when the
 * power went during it, or tell it something the pool was not asked to do.
 */
#include <errno.h>
#include <linux/falloc.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "workload.h"

#define NNAMES 6		  /* vm0.img .. vm5.img */
#define MAXSIZE (6u << 20)	  /* where random operations land */
#define BATCH_REGION (256u << 10) /* op_batch's */
#define MAXLEN (512u << 10)	  /* one FUSE request at most: no torn sizes */
#define FULL_CHUNK (512u << 10)	  /* the pool-full phase's appends */
#define FULL_MAX 200		  /* appends at most (the pool is ~32 MiB) */
#define READ_CHUNK (1u << 20)
#define EXTENT 65536u	   /* the pool's extent size (crashtest.c) */
#define MAXCOPY (6u << 20) /* a copy's length at most */

struct wdisk {
	uint32_t id;
	int64_t h;
	bool open;
	char name[NAME_LEN]; /* "" once unlinked */
};

struct wl {
	uint64_t rng;
	struct backend *b;
	struct oracle *o;
	struct wdisk *d;
	size_t nd, cap;
	bool live;
	FILE *trace;
	struct wl_stats *st;
	char *fail;
	size_t fl;
	uint8_t *buf;
	uint8_t *batch; /* op_batch's buffers, BATCH_MAX * 16 KiB, aligned */
	bool no_zero_range; /* the kernel refused FALLOC_FL_ZERO_RANGE */
	const char *op;	    /* the operation running, for messages */
	/* The last copy: both sides get more operations, in that range
	 * half the time (copy-on-write).  Oracle disk ids, 0 = none. */
	uint32_t hot[2];
	uint64_t hot_off[2], hot_len;
};

static uint64_t rnd(struct wl *w)
{
	uint64_t z = (w->rng += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Uniform in [0, n), 0 if n is 0. */
static uint64_t below(struct wl *w, uint64_t n)
{
	return n ? rnd(w) % n : 0;
}

static bool chance(struct wl *w, unsigned percent)
{
	return below(w, 100) < percent;
}

__attribute__((format(printf, 2, 3))) static void trace(struct wl *w,
							const char *fmt, ...)
{
	va_list ap;

	if (!w->trace)
		return;
	va_start(ap, fmt);
	fprintf(w->trace, "  step %u: ", w->st->steps);
	vfprintf(w->trace, fmt, ap);
	fputc('\n', w->trace);
	va_end(ap);
}

/*
 * The outcome of an operation that returned R: 0 if it succeeded, 1 if
 * the power went (the caller tells the oracle what may have happened and
 * stops), -1 if it failed otherwise (FAIL says so).
 */
static int outcome(struct wl *w, long r, const char *what)
{
	if (r >= 0)
		return 0;
	if (w->b->ops->crashed(w->b, (int)-r)) {
		w->st->crash_op = w->op;
		trace(w, "%s: %s: the power went", what, strerror((int)-r));
		return 1;
	}
	snprintf(w->fail, w->fl, "%s failed without a crash: %s", what,
		 strerror((int)-r));
	return -1;
}

/* Compares the pool's size of D with the oracle's. */
static int check_size(struct wl *w, const struct wdisk *d)
{
	uint64_t size;
	int r;

	if (!w->live)
		return 0;
	r = w->b->ops->size(w->b, d->h, &size);
	if (r < 0)
		return outcome(w, r, "size");
	if (size != oracle_size(w->o, d->id)) {
		snprintf(w->fail, w->fl,
			 "after %s: disk d%u has size %llu, expected %llu",
			 w->op, d->id, (unsigned long long)size,
			 (unsigned long long)oracle_size(w->o, d->id));
		return -1;
	}
	return 0;
}

/* ---- picking disks and names --------------------------------------------- */

static struct wdisk *add_disk(struct wl *w)
{
	if (w->nd == w->cap) {
		size_t cap = w->cap ? w->cap * 2 : 16;
		struct wdisk *n = realloc(w->d, cap * sizeof(*n));

		if (!n) {
			fprintf(stderr, "crashtest: out of memory\n");
			exit(2);
		}
		w->d = n;
		w->cap = cap;
	}
	memset(&w->d[w->nd], 0, sizeof(w->d[0]));
	return &w->d[w->nd++];
}

/* A random disk that has a name (NAMED) or is open, NULL if none. */
static struct wdisk *pick(struct wl *w, bool named)
{
	size_t n = 0, k;

	for (size_t i = 0; i < w->nd; i++)
		n += named ? w->d[i].name[0] != 0 : w->d[i].open;
	if (!n)
		return NULL;
	k = below(w, n);
	for (size_t i = 0; i < w->nd; i++)
		if ((named ? w->d[i].name[0] != 0 : w->d[i].open) && !k--)
			return &w->d[i];
	return NULL;
}

/* An open disk that has no name any more, NULL if none. */
static struct wdisk *pick_unlinked(struct wl *w)
{
	for (size_t i = 0; i < w->nd; i++)
		if (w->d[i].open && !w->d[i].name[0])
			return &w->d[i];
	return NULL;
}

static struct wdisk *by_name(struct wl *w, const char *name)
{
	for (size_t i = 0; i < w->nd; i++)
		if (!strcmp(w->d[i].name, name))
			return &w->d[i];
	return NULL;
}

/* A name no disk has (FREE) or one a disk has; false if none. */
static bool pick_name(struct wl *w, bool free, char *name)
{
	unsigned start = (unsigned)below(w, NNAMES);

	for (unsigned i = 0; i < NNAMES; i++) {
		snprintf(name, NAME_LEN, "vm%u.img", (start + i) % NNAMES);
		if ((by_name(w, name) == NULL) == free)
			return true;
	}
	return false;
}

/* ---- operations ---------------------------------------------------------- */

static int op_create(struct wl *w, const char *name)
{
	struct wdisk *d;
	int64_t h = -1;
	uint64_t ino = 0;
	int r, k;

	w->op = "create";
	r = w->b->ops->create(w->b, name, &h, &ino);
	k = outcome(w, r, "create");
	if (k < 0)
		return k;
	d = add_disk(w);
	/* Cut by the crash: the name may exist, with an inode unknown. */
	d->id = oracle_disk_new(w->o, k ? 0 : ino);
	d->h = h;
	d->open = k == 0;
	snprintf(d->name, sizeof(d->name), "%s", name);
	oracle_link(w->o, name, d->id);
	trace(w, "create %s -> d%u (inode %llu)", name, d->id,
	      (unsigned long long)ino);
	return k;
}

static int op_unlink(struct wl *w, struct wdisk *d)
{
	int r, k;

	w->op = "unlink";
	trace(w, "unlink %s (d%u)", d->name, d->id);
	r = w->b->ops->unlink(w->b, d->name);
	k = outcome(w, r, "unlink");
	if (k < 0)
		return k;
	oracle_link(w->o, d->name, 0);
	d->name[0] = 0;
	return k;
}

static int op_rename(struct wl *w, struct wdisk *d, const char *to)
{
	struct wdisk *t = by_name(w, to);
	int r, k;

	w->op = "rename";
	trace(w, "rename %s (d%u) -> %s%s", d->name, d->id, to,
	      t ? " (replacing a disk)" : "");
	r = w->b->ops->rename(w->b, d->name, to);
	k = outcome(w, r, "rename");
	if (k < 0)
		return k;
	oracle_rename(w->o, d->name, to);
	if (t)
		t->name[0] = 0;
	snprintf(d->name, sizeof(d->name), "%s", to);
	return k;
}

static int op_close(struct wl *w, struct wdisk *d)
{
	int r, k;

	w->op = "close";
	trace(w, "close d%u", d->id);
	r = w->b->ops->close(w->b, d->h);
	k = outcome(w, r, "close");
	d->open = false; /* closed even when it failed */
	return k;
}

static int op_sync(struct wl *w, struct wdisk *d, bool datasync)
{
	int r, k;

	w->op = d ? (datasync ? "fdatasync" : "fsync") : "fsync(directory)";
	trace(w, "%s%s%u", w->op, d ? " d" : "", d ? d->id : 0);
	r = w->b->ops->fsync(w->b, d ? d->h : -1, datasync);
	k = outcome(w, r, w->op);
	if (k == 0) {
		oracle_sync(w->o);
		w->st->syncs++;
	}
	return k;
}

/*
 * After the last data call to D stopped part way (the pool ran full): each
 * sector from FIRST up to END (bytes) reads back as the call's new value
 * or the old one, which the oracle adopts; SIZE is D's size now.
 */
static int settle(struct wl *w, struct wdisk *d, uint64_t first, uint64_t end,
		  uint64_t size)
{
	for (uint64_t sec = first; sec * SECTOR < end; sec++) {
		uint8_t got[SECTOR];
		size_t vis = 0;
		char why[512];
		ssize_t n;

		if (sec * SECTOR < size) {
			vis = size - sec * SECTOR < SECTOR
				      ? (size_t)(size - sec * SECTOR)
				      : SECTOR;
			n = w->b->ops->pread(w->b, d->h, got, vis,
					     sec * SECTOR);
			if (n != (ssize_t)vis) {
				int k = outcome(w, n < 0 ? n : -EIO,
						"read back");

				return k ? k : -1;
			}
		}
		if (oracle_settle(w->o, d->id, sec, got, vis, why,
				  sizeof(why))) {
			snprintf(w->fail, w->fl,
				 "disk d%u: after the %s cut "
				 "short by a full pool: %s",
				 d->id, w->op, why);
			return -1;
		}
	}
	return 0;
}

/*
 * Checks how write SEQ of LEN bytes at OFF to D ended: N bytes written (or
 * -errno); OLD is D's size before it.  A short write or ENOSPC (the pool
 * is full) leaves each sector of the rest as old or new data, which the
 * pool is asked: a sector that is neither fails the point.
 */
static int write_ended(struct wl *w, struct wdisk *d, uint32_t seq,
		       uint64_t off, size_t len, uint64_t old, ssize_t n)
{
	uint64_t size;
	int k;

	if (n == (ssize_t)len)
		return check_size(w, d);
	if (n < 0 && n != -ENOSPC)
		return outcome(w, (int)n, w->op);
	/* Short or ENOSPC: the pool is full. */
	w->st->enospc++;
	if (n < 0)
		n = 0;
	k = outcome(w, w->b->ops->size(w->b, d->h, &size), "size");
	if (k)
		return k;
	trace(w, "  w%u wrote %zd of %zu bytes (pool full); size %llu", seq, n,
	      len, (unsigned long long)size);
	if (size < old || size > (off + len > old ? off + len : old)) {
		snprintf(w->fail, w->fl,
			 "short write w%u [%llu, +%zu) to d%u: size %llu, "
			 "expected %llu to %llu",
			 seq, (unsigned long long)off, len, d->id,
			 (unsigned long long)size, (unsigned long long)old,
			 (unsigned long long)(off + len));
		return -1;
	}
	k = settle(w, d, (off + (uint64_t)n) / SECTOR, off + len, size);
	if (k)
		return k;
	oracle_set_size(w->o, d->id, size);
	return 0;
}

/* Writes LEN bytes at OFF of D. */
static int op_write(struct wl *w, struct wdisk *d, uint64_t off, size_t len)
{
	uint64_t old = oracle_size(w->o, d->id);
	uint32_t seq;
	ssize_t n;

	w->op = "write";
	seq = oracle_write(w->o, d->id, off, len);
	if (off + len > old)
		oracle_set_size(w->o, d->id, off + len);
	trace(w, "write w%u d%u [%llu, +%zu)%s", seq, d->id,
	      (unsigned long long)off, len,
	      off + len > old ? " extending" : "");
	oracle_fill(w->o, seq, off, len, w->buf);
	n = w->b->ops->pwrite(w->b, d->h, w->buf, len, off);
	w->st->writes++;
	return write_ended(w, d, seq, off, len, old, n);
}

/*
 * Up to BATCH_MAX writes of whole 4 KiB blocks in a 256 KiB region inside
 * D's size, at once: enough requests in flight for the daemon to take them
 * asynchronously, while the power may go.  Half the time the region is
 * written first, so that the batch overwrites allocated extents (the
 * asynchronous path takes no hole).  The writes do not overlap, so the
 * oracle takes them as one write after another, none synced.
 *
 * A third of the batches have an fdatasync of some open disk issued while
 * the writes are in flight: the writes may reach the members after its
 * flush, and the next sync (half the time at once) must still cover them.
 * The fdatasync during the batch tells the oracle nothing (which of the
 * batch it covers is unknown), so the states since the last sync stay
 * possible: a weaker check here, never a wrong one.
 */
static int op_batch(struct wl *w, struct wdisk *d)
{
	uint64_t size = oracle_size(w->o, d->id), base, blocks;
	struct wbatch wb = {.n = 5 + (size_t)below(w, BATCH_MAX - 4)};
	struct wreq *q = wb.q;
	uint32_t seq[BATCH_MAX];
	struct wdisk *s;
	int k = 0;

	if (size < BATCH_REGION)
		return 0;
	base = below(w, (size - BATCH_REGION) / EXTENT + 1) * EXTENT;
	blocks = BATCH_REGION / 4096;
	if (chance(w, 50) && (k = op_write(w, d, base, BATCH_REGION)) != 0)
		return k;
	w->op = "batched write";
	for (size_t i = 0; i < wb.n; i++) {
		uint8_t *buf = w->batch + i * 4 * 4096;
		unsigned tries = 0;
		bool clash;

		q[i].len = 4096 * (1 + (size_t)below(w, 4));
		do { /* a place no other write of the batch has */
			if (++tries > 50) /* fragmented: one block fits */
				q[i].len = 4096;
			q[i].off =
				base +
				below(w, blocks - q[i].len / 4096 + 1) * 4096;
			clash = false;
			for (size_t j = 0; j < i; j++)
				clash |= q[i].off < q[j].off + q[j].len &&
					 q[j].off < q[i].off + q[i].len;
		} while (clash);
		q[i].buf = buf;
		seq[i] = (i ? oracle_write_more
			    : oracle_write)(w->o, d->id, q[i].off, q[i].len);
		trace(w, "batched write w%u d%u [%llu, +%zu)", seq[i], d->id,
		      (unsigned long long)q[i].off, q[i].len);
		oracle_fill(w->o, seq[i], q[i].off, q[i].len, buf);
	}
	if (chance(w, 33) && (s = pick(w, false)) != NULL) {
		wb.sync = true;
		wb.sync_h = s->h;
		trace(w, "fdatasync d%u while they are in flight", s->id);
		w->st->batch_syncs++;
	}
	w->b->ops->pwrite_batch(w->b, d->h, &wb);
	w->st->writes += (unsigned)wb.n;
	w->st->batches++;
	for (size_t i = 0; i < wb.n && k == 0; i++)
		k = write_ended(w, d, seq[i], q[i].off, q[i].len, size,
				q[i].res);
	if (k == 0 && wb.sync)
		k = outcome(w, wb.sync_res, "fdatasync during a batch");
	/* What QEMU does next: the fdatasync that must hold the batch. */
	if (k == 0 && wb.sync && chance(w, 50))
		k = op_sync(w, d, true);
	return k;
}

/* After an operation failed with ENOSPC: D's size must not have moved. */
static int same_size(struct wl *w, struct wdisk *d)
{
	uint64_t size = oracle_size(w->o, d->id), real;
	int k;

	w->st->enospc++;
	k = outcome(w, w->b->ops->size(w->b, d->h, &real), "size");
	if (k)
		return k;
	if (real != size) {
		snprintf(w->fail, w->fl,
			 "%s on d%u failed with ENOSPC but the size moved "
			 "from %llu to %llu",
			 w->op, d->id, (unsigned long long)size,
			 (unsigned long long)real);
		return -1;
	}
	return 0;
}

static int op_truncate(struct wl *w, struct wdisk *d, uint64_t size)
{
	int r, k;

	w->op = "truncate";
	trace(w, "truncate d%u %llu -> %llu", d->id,
	      (unsigned long long)oracle_size(w->o, d->id),
	      (unsigned long long)size);
	r = w->b->ops->truncate(w->b, d->h, size);
	if (r == -ENOSPC) {
		/* Growing over a shared extent copies it first. */
		trace(w, "  no space (pool full): nothing changed");
		return same_size(w, d);
	}
	k = outcome(w, r, "truncate");
	if (k < 0)
		return k;
	oracle_set_size(w->o, d->id, size);
	return k ? k : check_size(w, d);
}

/* fallocate MODE: PUNCH_HOLE|KEEP_SIZE, ZERO_RANGE[|KEEP_SIZE] or 0. */
static int op_fallocate(struct wl *w, struct wdisk *d, int mode, uint64_t off,
			uint64_t len)
{
	uint64_t size = oracle_size(w->o, d->id);
	int r, k;

	w->op = mode & FALLOC_FL_PUNCH_HOLE   ? "punch hole"
		: mode & FALLOC_FL_ZERO_RANGE ? "zero range"
					      : "fallocate";
	trace(w, "%s%s d%u [%llu, +%llu)", w->op,
	      mode & FALLOC_FL_KEEP_SIZE ? " keep-size" : "", d->id,
	      (unsigned long long)off, (unsigned long long)len);
	r = w->b->ops->fallocate(w->b, d->h, mode, off, len);
	if (r == -EOPNOTSUPP && (mode & FALLOC_FL_ZERO_RANGE)) {
		trace(w, "  zero range not supported here: skipped from now");
		w->no_zero_range = true;
		return 0;
	}
	if (r == -ENOSPC) {
		/* Preallocation found the pool full: zeros stay zeros.  A
		 * punch or zero range copies the shared extents it cuts
		 * into: those done read as zeros, the rest as before.  The
		 * size must not have moved. */
		trace(w, "  no space (pool full)");
		k = same_size(w, d);
		if (k ||
		    !(mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)))
			return k;
		oracle_zero(w->o, d->id, off, len);
		return settle(w, d, off / SECTOR,
			      off + len < size ? off + len : size, size);
	}
	k = outcome(w, r, w->op);
	if (k < 0)
		return k;
	if (mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE))
		oracle_zero(w->o, d->id, off, len);
	if (!(mode & FALLOC_FL_KEEP_SIZE) && off + len > size)
		oracle_set_size(w->o, d->id, off + len);
	return k ? k : check_size(w, d);
}

/* A copy of DONE bytes from OFF_IN of S to OFF_OUT of D happened and the
 * oracle knows: remember the range (the next crash may land on it), and
 * check D's size. */
static int copied(struct wl *w, struct wdisk *s, uint64_t off_in,
		  struct wdisk *d, uint64_t off_out, uint64_t done)
{
	if (done) {
		w->hot[0] = s->id;
		w->hot[1] = d->id;
		w->hot_off[0] = off_in;
		w->hot_off[1] = off_out;
		w->hot_len = done;
	}
	return check_size(w, d);
}

/*
 * copy_file_range of LEN bytes at OFF_IN of S to OFF_OUT of D, called again
 * after a short count as cp does: clipped at S's end of file (as it was
 * before the copy: a copy within one disk may grow it); S == D with
 * overlapping ranges must fail with EINVAL and change nothing.  A full pool
 * may stop it part way: exactly the bytes it reports were copied.  Cut by
 * the crash: any part of it may have happened.
 */
static int op_copy(struct wl *w, struct wdisk *s, uint64_t off_in,
		   struct wdisk *d, uint64_t off_out, uint64_t len)
{
	uint64_t size_in = oracle_size(w->o, s->id), want, done = 0;
	bool overlap, first = true;
	int r, k;

	w->op = "copy";
	want = off_in >= size_in	? 0
	       : len < size_in - off_in ? len
					: size_in - off_in;
	overlap = s == d && want && off_in < off_out + want &&
		  off_out < off_in + want;
	trace(w, "copy d%u [%llu, +%llu) -> d%u at %llu: %llu bytes%s%s%s",
	      s->id, (unsigned long long)off_in, (unsigned long long)len, d->id,
	      (unsigned long long)off_out, (unsigned long long)want,
	      off_in % EXTENT == 0 && off_out % EXTENT == 0 ? ", aligned" : "",
	      off_out + want > oracle_size(w->o, d->id) ? ", extending" : "",
	      overlap ? ", overlapping" : "");
	w->st->copies++;
	for (r = 0; r == 0 && (first || done < want); first = false) {
		/* The first call asks for LEN (past the source's end too);
		 * the next ones for the rest of what it should copy. */
		ssize_t n = w->b->ops->copy(w->b, s->h, off_in + done, d->h,
					    off_out + done,
					    (size_t)(done ? want - done : len));

		if (n != (ssize_t)(want - done))
			trace(w, "  copy_file_range: %zd", n);
		if (n < 0)
			r = (int)n;
		else if (n == 0)
			break;
		else
			done += (uint64_t)n;
	}
	if (overlap) {
		if (r == -EINVAL && done == 0)
			return 0;
		k = r < 0 ? outcome(w, r, "copy") : 0;
		if (k > 0)
			return k; /* nothing to tell: it must fail anyway */
		snprintf(w->fail, w->fl,
			 "overlapping copy d%u [%llu, +%llu) -> at %llu: "
			 "copied %llu bytes%s%s, expected EINVAL",
			 s->id, (unsigned long long)off_in,
			 (unsigned long long)len, (unsigned long long)off_out,
			 (unsigned long long)done, r < 0 ? ", then " : "",
			 r < 0 ? strerror(-r) : "");
		return -1;
	}
	if (r == -ENOSPC) {
		w->st->enospc++;
		trace(w, "  copied %llu of %llu bytes (pool full)",
		      (unsigned long long)done, (unsigned long long)want);
	} else if (r < 0) {
		k = outcome(w, r, "copy");
		if (k > 0)
			oracle_copy(w->o, s->id, off_in, d->id, off_out, want);
		return k;
	} else if (done != want) {
		snprintf(w->fail, w->fl,
			 "copy d%u [%llu, +%llu) -> d%u at %llu copied %llu "
			 "bytes, expected %llu",
			 s->id, (unsigned long long)off_in,
			 (unsigned long long)len, d->id,
			 (unsigned long long)off_out, (unsigned long long)done,
			 (unsigned long long)want);
		return -1;
	}
	if (done > want) {
		snprintf(w->fail, w->fl,
			 "copy d%u -> d%u copied %llu bytes, more than the "
			 "%llu the source has there",
			 s->id, d->id, (unsigned long long)done,
			 (unsigned long long)want);
		return -1;
	}
	oracle_copy(w->o, s->id, off_in, d->id, off_out, done);
	return copied(w, s, off_in, d, off_out, done);
}

/*
 * A copy by reading and writing, as `cp` of a thin disk, rsync or qemu-img
 * without -C make it: up to LEN bytes (at most MAXLEN) at OFF_IN of S read
 * (whole extents: keys for write-side sharing), then written at OFF_OUT of
 * D in one piece or, half the time, two (an extent completed piece by
 * piece).  The bytes are the source's: the oracle is told a copy.  A full
 * pool may stop the write part way: exactly what it reports was copied.
 */
static int op_rwcopy(struct wl *w, struct wdisk *s, uint64_t off_in,
		     struct wdisk *d, uint64_t off_out, uint64_t len)
{
	uint64_t size_in = oracle_size(w->o, s->id);
	size_t done = 0, cut;
	ssize_t n;
	int k;

	w->op = "read-write copy";
	if (off_in >= size_in)
		return 0;
	len = len < size_in - off_in ? len : size_in - off_in;
	len = len < MAXLEN ? len : MAXLEN;
	if (s == d && off_in < off_out + len && off_out < off_in + len)
		return 0; /* cp never reads what it writes */
	cut = chance(w, 50) ? (size_t)below(w, len) : (size_t)len;
	trace(w,
	      "read-write copy d%u [%llu, +%llu) -> d%u at %llu%s, cut at %zu",
	      s->id, (unsigned long long)off_in, (unsigned long long)len, d->id,
	      (unsigned long long)off_out,
	      off_in % EXTENT == off_out % EXTENT ? ", lined up" : "", cut);
	w->st->copies++;
	n = w->b->ops->pread(w->b, s->h, w->buf, (size_t)len, off_in);
	if (n < 0)
		return outcome(w, n, "read");
	if ((uint64_t)n != len) {
		snprintf(w->fail, w->fl, "read of d%u [%llu, +%llu): %zd bytes",
			 s->id, (unsigned long long)off_in,
			 (unsigned long long)len, n);
		return -1;
	}
	for (size_t at = 0; at < len;) {
		size_t piece = at < cut ? cut - at : (size_t)len - at;

		n = w->b->ops->pwrite(w->b, d->h, w->buf + at, piece,
				      off_out + at);
		if (n < 0 && n != -ENOSPC) {
			k = outcome(w, n, "write");
			if (k > 0)
				oracle_copy(w->o, s->id, off_in + at, d->id,
					    off_out + at, piece);
			return k;
		}
		/* Each piece is a write of its own: a crash may keep one
		 * and not the other, even within a sector. */
		if (n > 0) {
			oracle_copy(w->o, s->id, off_in + at, d->id,
				    off_out + at, (uint64_t)n);
			at += (size_t)n;
		}
		done = at;
		if (n != (ssize_t)piece) {
			w->st->enospc++;
			trace(w, "  wrote %zu of %llu bytes (pool full)", done,
			      (unsigned long long)len);
			break;
		}
	}
	return copied(w, s, off_in, d, off_out, done);
}

/* `cp S NAME`: a new disk, and the whole of disk S (index SI) copied in. */
static int op_cp(struct wl *w, size_t si, const char *name)
{
	int k;

	trace(w, "cp d%u %s:", w->d[si].id, name);
	k = op_create(w, name);
	if (k)
		return k;
	/* op_create may move w->d: take both disks after it. */
	return op_copy(w, &w->d[si], 0, &w->d[w->nd - 1], 0,
		       oracle_size(w->o, w->d[si].id));
}

/* ---- the random operation ------------------------------------------------ */

/* An open disk with the oracle id ID, NULL if none. */
static struct wdisk *by_id(struct wl *w, uint32_t id)
{
	for (size_t i = 0; i < w->nd; i++)
		if (w->d[i].id == id && w->d[i].open)
			return &w->d[i];
	return NULL;
}

/*
 * The disk for a data operation: D, or a third of the time a side of the
 * last copy (whose extents it may share).  *HOT: then an offset inside the
 * copied range of that side, else UINT64_MAX.
 */
static struct wdisk *pick_data(struct wl *w, struct wdisk *d, uint64_t *hot)
{
	unsigned side = (unsigned)below(w, 2);
	struct wdisk *h = w->hot[side] ? by_id(w, w->hot[side]) : NULL;

	*hot = UINT64_MAX;
	if (!h || !chance(w, 33))
		return d;
	if (chance(w, 60))
		*hot = w->hot_off[side] + below(w, w->hot_len);
	return h;
}

/*
 * A copy from S: offsets extent-aligned most of the time (whole extents are
 * shared) and not the rest (pieces are copied); into another disk, the
 * same one (not overlapping, but for a few that must fail) or one open but
 * unlinked; lengths of whole extents, to the source's end or past it, or
 * any; at and beyond the destination's end; sources with holes (the
 * workload's disks are sparse) and past their end.
 */
static int random_copy(struct wl *w, struct wdisk *s)
{
	struct wdisk *d = pick(w, true), *u = pick_unlinked(w);
	uint64_t sin, sout, off_in, off_out, len;
	char name[NAME_LEN];
	unsigned kind;

	/* Mostly from a disk with data, into another disk. */
	for (int i = 0; i < 3 && !oracle_size(w->o, s->id); i++)
		s = pick(w, true);
	for (int i = 0; i < 3 && d == s; i++)
		d = pick(w, true);
	if (d == s && !chance(w, 25) && pick_name(w, true, name))
		return op_cp(w, (size_t)(s - w->d), name); /* the only one */
	if (chance(w, 20))
		d = s;
	else if (u && chance(w, 10))
		d = u;
	sin = oracle_size(w->o, s->id);
	sout = oracle_size(w->o, d->id);
	kind = (unsigned)below(w, 100);
	if (kind < 40)
		len = EXTENT * (1 + below(w, 24));
	else if (kind < 60)
		len = sin + below(w, EXTENT); /* to the end, clipped */
	else
		len = 1 + below(w, 2u << 20);
	if (chance(w, 5))
		off_in = sin + below(w, 2 * EXTENT); /* past the end: 0 */
	else if (chance(w, 65))
		off_in = below(w, (sin + EXTENT - 1) / EXTENT) * EXTENT;
	else
		off_in = below(w, sin);
	kind = (unsigned)below(w, 100);
	if (off_in % EXTENT == 0 && kind < 70) {
		uint64_t end = (sout + EXTENT - 1) / EXTENT;

		if (kind < 35)
			off_out = below(w, MAXSIZE / EXTENT) * EXTENT;
		else if (kind < 50)
			off_out = end * EXTENT; /* append */
		else
			off_out = (end + 1 + below(w, 8)) * EXTENT;
	} else if (kind < 85) {
		off_out = below(w, MAXSIZE);
	} else {
		off_out = sout + below(w, 1u << 20);
	}
	if (len > MAXCOPY)
		len = MAXCOPY;
	if (off_out > MAXSIZE + (2u << 20))
		off_out = MAXSIZE + (2u << 20);
	if (d == s && !chance(w, 10)) {
		/* Within one disk: past the source range, keeping the
		 * alignment. */
		uint64_t want = off_in >= sin	     ? 0
				: len < sin - off_in ? len
						     : sin - off_in;

		if (off_out < off_in + want && off_in < off_out + want)
			off_out = off_in + want +
				  (off_out % EXTENT == 0
					   ? (EXTENT - want % EXTENT) % EXTENT
					   : below(w, EXTENT));
	}
	if (chance(w, 40))
		return op_rwcopy(w, s, off_in, d, off_out, len);
	return op_copy(w, s, off_in, d, off_out, len);
}

/* A write's offset and length: small, aligned and unaligned; inside,
 * across and past the end of file. */
static void write_range(struct wl *w, uint64_t size, uint64_t *off, size_t *len)
{
	unsigned kind = (unsigned)below(w, 100);

	if (kind < 30)
		*len = 1 + below(w, 4096);
	else if (kind < 60)
		*len = 4096 * (1 + below(w, 64));
	else
		*len = 1 + below(w, MAXLEN);
	kind = (unsigned)below(w, 100);
	if (kind < 45)
		*off = below(w, MAXSIZE);
	else if (kind < 65)
		*off = size; /* append */
	else if (kind < 80)
		*off = size > *len ? size - *len + below(w, 2 * *len) : 0;
	else
		*off = below(w, MAXSIZE / 4096) * 4096;
	if (*off > MAXSIZE)
		*off = MAXSIZE;
}

static uint64_t range_len(struct wl *w)
{
	if (chance(w, 40))
		return 65536 * (1 + below(w, 32)); /* whole extents */
	return 1 + below(w, 2u << 20);
}

static int random_op(struct wl *w)
{
	struct wdisk *d = pick(w, true);
	unsigned x = (unsigned)below(w, 112);
	char name[NAME_LEN];
	uint64_t off, size, hot = UINT64_MAX;
	size_t len;

	if (!d || (x < 8 && pick_name(w, true, name))) {
		if (!pick_name(w, true, name))
			return 0;
		/* A third of the creates are `cp` of a disk. */
		if (d && chance(w, 33))
			return op_cp(w, (size_t)(d - w->d), name);
		return op_create(w, name);
	}
	if (x < 77)
		d = pick_data(w, d, &hot);
	size = oracle_size(w->o, d->id);
	if (x < 48) {
		/* Now and then to a disk that is open but has no name. */
		struct wdisk *u = pick_unlinked(w);

		if (u && chance(w, 15))
			d = u;
		size = oracle_size(w->o, d->id);
		write_range(w, size, &off, &len);
		if (hot != UINT64_MAX && d->id != w->hot[0] &&
		    d->id != w->hot[1])
			hot = UINT64_MAX;
		if (chance(w, 10))
			return op_batch(w, d);
		if (hot != UINT64_MAX && chance(w, 50))
			off = hot;
		else if (hot != UINT64_MAX)
			off = hot & ~(uint64_t)(EXTENT - 1);
		return op_write(w, d, off, len);
	}
	if (x < 52)
		return op_sync(w, pick(w, false), false);
	if (x < 56)
		return op_sync(w, pick(w, false), true);
	if (x < 58)
		return op_sync(w, NULL, chance(w, 50));
	if (x < 65) {
		if (hot != UINT64_MAX)
			size = hot; /* cut into a shared extent */
		else if (chance(w, 45))
			size = below(w, size + 1);
		else if (chance(w, 70))
			size += below(w, 2u << 20);
		else
			size = below(w, MAXSIZE);
		return op_truncate(w, d, size);
	}
	if (x < 72) {
		off = hot != UINT64_MAX ? hot
		      : chance(w, 50)	? below(w, MAXSIZE / 65536) * 65536
					: below(w, size + 65536);
		return op_fallocate(w, d,
				    FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				    off, range_len(w));
	}
	if (x < 77) {
		if (w->no_zero_range)
			return 0;
		off = hot != UINT64_MAX ? hot : below(w, size + 65536);
		return op_fallocate(
			w, d,
			FALLOC_FL_ZERO_RANGE |
				(chance(w, 50) ? FALLOC_FL_KEEP_SIZE : 0),
			off, range_len(w));
	}
	if (x < 80) {
		off = below(w, MAXSIZE);
		return op_fallocate(w, d,
				    chance(w, 50) ? FALLOC_FL_KEEP_SIZE : 0,
				    off, 1 + below(w, 1u << 20));
	}
	if (x < 86) {
		struct wdisk *t;

		/* Over an existing disk half the time. */
		if (chance(w, 50) && pick_name(w, false, name) &&
		    (t = by_name(w, name)) && t != d)
			return op_rename(w, d, name);
		if (pick_name(w, true, name))
			return op_rename(w, d, name);
		return 0;
	}
	if (x < 91)
		return op_unlink(w, d);
	if (x < 95) {
		struct wdisk *u = pick_unlinked(w);

		return u ? op_close(w, u) : 0;
	}
	if (x < 98) {
		/* A timer commit: durable, but not promised to anyone, so
		 * the oracle learns nothing; after a crash the pool may
		 * come back at this state. */
		if (!w->b->ops->commit)
			return 0;
		w->op = "commit";
		trace(w, "commit (as the timer would)");
		return outcome(w, w->b->ops->commit(w->b), "commit");
	}
	/* Clones: copy_file_range, from a disk with a name or, now and
	 * then, one open but unlinked. */
	struct wdisk *u = pick_unlinked(w);

	return random_copy(w, u && chance(w, 10) ? u : d);
}

/*
 * The pool-full phase: appends of FULL_CHUNK to the smallest disks (made
 * as needed) until the pool says ENOSPC; then a disk goes or half of one
 * is punched, and writing goes on (space freed by an uncommitted
 * transaction comes back after the commit a full write makes).
 */
static int full_phase(struct wl *w)
{
	char name[NAME_LEN];
	unsigned enospc = w->st->enospc, after = 0;
	int k = 0;

	trace(w, "pool-full phase");
	for (unsigned i = 0; i < FULL_MAX && k == 0 && after < 4; i++) {
		struct wdisk *d = NULL;
		unsigned linked = 0;

		for (size_t j = 0; j < w->nd; j++)
			if (w->d[j].name[0] && w->d[j].open) {
				linked++;
				if (!d || oracle_size(w->o, w->d[j].id) <
						  oracle_size(w->o, d->id))
					d = &w->d[j];
			}
		if (linked < 3 && pick_name(w, true, name)) {
			k = op_create(w, name);
			continue;
		}
		if (!d)
			break;
		if (w->st->enospc > enospc) {
			/* Full: make room, then a few more appends. */
			struct wdisk *big = d;

			for (size_t j = 0; j < w->nd; j++)
				if (w->d[j].name[0] && w->d[j].open &&
				    oracle_size(w->o, w->d[j].id) >
					    oracle_size(w->o, big->id))
					big = &w->d[j];
			enospc = UINT32_MAX; /* once */
			if (chance(w, 50)) {
				k = op_unlink(w, big);
			} else {
				uint64_t s = oracle_size(w->o, big->id);

				k = op_fallocate(w, big,
						 FALLOC_FL_PUNCH_HOLE |
							 FALLOC_FL_KEEP_SIZE,
						 s / 2, s - s / 2 + 1);
			}
			continue;
		}
		if (enospc == UINT32_MAX)
			after++;
		w->st->full_writes++;
		k = op_write(w, d, oracle_size(w->o, d->id), FULL_CHUNK);
	}
	return k;
}

bool workload_reshape;

/* Adds or removes a member (workload_reshape): the disks' contents stay,
 * so the oracle hears nothing; a removal that does not fit is skipped. */
static int op_reshape(struct wl *w, bool add)
{
	int r;

	w->op = add ? "add member" : "remove member";
	trace(w, "%s", w->op);
	r = w->b->ops->reshape(w->b, add);
	if (r == -ENOSPC && !w->b->ops->crashed(w->b, ENOSPC)) {
		trace(w, "%s: does not fit, skipped", w->op);
		return 0;
	}
	return outcome(w, r, w->op);
}

enum wl_result workload_run(uint64_t seed, struct backend *b, struct oracle *o,
			    bool live_checks, FILE *trace_file,
			    struct wl_stats *st, char *fail, size_t fl)
{
	struct wl w = {.rng = seed,
		       .b = b,
		       .o = o,
		       .live = live_checks,
		       .trace = trace_file,
		       .st = st,
		       .fail = fail,
		       .fl = fl};
	unsigned nsteps, full_at;
	int k = 0;

	memset(st, 0, sizeof(*st));
	w.buf = malloc(FULL_CHUNK > MAXLEN ? FULL_CHUNK : MAXLEN);
	if (posix_memalign((void **)&w.batch, 4096, BATCH_MAX * 4 * 4096))
		w.batch = NULL;
	if (!w.buf || !w.batch) {
		snprintf(fail, fl, "out of memory");
		return WL_FAILED;
	}
	nsteps = 30 + (unsigned)below(&w, 60);
	full_at = chance(&w, 50) ? (unsigned)below(&w, nsteps) : UINT32_MAX;
	for (st->steps = 0; st->steps < nsteps && k == 0; st->steps++) {
		if (b->ops->tick)
			b->ops->tick(b, st->steps);
		if (st->steps == full_at)
			k = full_phase(&w);
		else
			k = random_op(&w);
		/* No draw from the generator: a seed's other steps stay. */
		if (k == 0 && workload_reshape && b->ops->reshape &&
		    (st->steps == nsteps / 3 || st->steps == 2 * nsteps / 3))
			k = op_reshape(&w, st->steps == nsteps / 3);
	}
	if (k > 0)
		st->crash_step = st->steps - 1;
	/* Unlinked disks still open stay open: the backend's close of the
	 * pool (or the crash) drops them. */
	free(w.d);
	free(w.buf);
	free(w.batch);
	return k > 0 ? WL_CRASHED : k < 0 ? WL_FAILED : WL_DONE;
}

/* ---- verification ---------------------------------------------------------
 */

int verify_pool(struct backend *b, const struct oracle *o, bool live,
		FILE *trace_file, char *fail, size_t fl)
{
	struct rentry *e = NULL;
	uint32_t *disks = NULL;
	uint8_t *buf = NULL;
	size_t n = 0, bad = 0;
	char why[1024];
	int r, state = -1;

	fail[0] = 0;
	r = b->ops->list(b, &e, &n);
	if (r < 0) {
		snprintf(fail, fl, "cannot list the root directory: %s",
			 strerror(-r));
		return -1;
	}
	disks = calloc(n ? n : 1, sizeof(*disks));
	buf = malloc(READ_CHUNK);
	if (!disks || !buf) {
		snprintf(fail, fl, "out of memory");
		bad++;
		goto out;
	}
	state = oracle_check_ns(o, e, n, live, disks, why, sizeof(why));
	if (state < 0) {
		snprintf(fail, fl, "%s", why);
		goto out_bad;
	}
	for (size_t i = 0; i < n; i++) {
		int64_t h;

		r = b->ops->open(b, e[i].name, &h);
		if (r < 0) {
			snprintf(fail, fl, "cannot open %s: %s", e[i].name,
				 strerror(-r));
			goto out_bad;
		}
		for (uint64_t at = 0; at < e[i].size; at += READ_CHUNK) {
			size_t want = e[i].size - at < READ_CHUNK
					      ? (size_t)(e[i].size - at)
					      : READ_CHUNK;
			ssize_t got = b->ops->pread(b, h, buf, want, at);

			if (got != (ssize_t)want) {
				snprintf(fail, fl, "%s: read at %llu: %s",
					 e[i].name, (unsigned long long)at,
					 got < 0 ? strerror((int)-got)
						 : "short read");
				b->ops->close(b, h);
				goto out_bad;
			}
			for (size_t s = 0; s < want; s += SECTOR) {
				size_t vis =
					want - s < SECTOR ? want - s : SECTOR;

				if (!oracle_check_sector(o, disks[i],
							 (at + s) / SECTOR,
							 buf + s, vis, live,
							 why, sizeof(why)))
					continue;
				if (!bad++)
					snprintf(fail, fl, "disk d%u (%s) %s",
						 disks[i], e[i].name, why);
				if (trace_file && bad <= 20)
					fprintf(trace_file,
						"  mismatch: disk d%u (%s) "
						"%s\n",
						disks[i], e[i].name, why);
			}
		}
		b->ops->close(b, h);
	}
	if (bad > 1 && strlen(fail) + 40 < fl)
		snprintf(fail + strlen(fail), fl - strlen(fail),
			 " (and %zu more bad sectors)", bad - 1);
	goto out;
out_bad:
	bad++;
out:
	free(e);
	free(disks);
	free(buf);
	return bad ? -1 : state;
}
