/* SPDX-License-Identifier: MIT */
/*
 * vdisk.c - the data path of a virtual disk: reads, writes, holes,
 * truncate, fallocate and lseek, all through the disk's extent map.
 *
 * Invariants this file keeps:
 *   - a new extent is zero-filled (except what the write covers) and its
 *     data written before the map names it, so no reader and no crash can
 *     see the extent's earlier contents (another disk's freed data);
 *   - bytes of a mapped extent beyond the end of the file are zeros; they
 *     are zeroed when the size grows over them, never when it shrinks, so
 *     an uncommitted shrink loses nothing;
 *   - the map of a disk changes only under its io lock held exclusive, so
 *     readers holding it shared may read the map without meta_lock (a
 *     hole is filled by writing a new extent under the lock shared, then
 *     mapping it under the lock exclusive: fill_hole).
 */
#include <endian.h>
#include <errno.h>
#include <linux/falloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

static const uint8_t zeros[4096];

uint64_t vdisk_max_size(const struct vdp_pool *p)
{
	(void)p;
	return 1ull << 60;
}

static uint64_t map_get(const struct vnode *v, uint64_t vext)
{
	const uint64_t *s = rtree_lookup(&v->data, vext);

	return s ? le64toh(*s) : 0;
}

static int get_file(struct vdp_pool *p, uint64_t ino, struct vnode **out)
{
	struct vnode *v;

	vdp_clear_error(); /* each data call starts with a clean sentence */
	pthread_mutex_lock(&p->meta_lock);
	v = vnode_get(p, ino);
	pthread_mutex_unlock(&p->meta_lock);
	if (!v)
		return -ENOENT;
	if (S_ISDIR(v->d.mode))
		return -EISDIR;
	*out = v;
	return 0;
}

/* Whether LEN bytes at OFF of a disk may be written at all. */
static int may_write(struct vdp_pool *p, uint64_t off, uint64_t len)
{
	if (p->rdonly)
		return -EROFS;
	if (p->failed)
		return -EIO;
	if (off > vdisk_max_size(p) || len > vdisk_max_size(p) - off)
		return -EFBIG;
	return 0;
}

static uint64_t file_size(struct vdp_pool *p, struct vnode *v)
{
	uint64_t s;

	pthread_mutex_lock(&p->meta_lock);
	s = v->d.size;
	pthread_mutex_unlock(&p->meta_lock);
	return s;
}

/* A map entry that passed its block's checksum can still name an extent
 * outside the pool (a bug, a forged block): fail the I/O rather than let it
 * reach another place (another member, the metadata area).  Check reports
 * the entry. */
static int bad_pid(struct vdp_pool *p, uint64_t pid)
{
	p->n_errors++;
	vdp_set_error("a disk map names extent id %#llx, outside the pool; "
		      "run vdpool check",
		      (unsigned long long)pid);
	return -EUCLEAN;
}

/* Zeros bytes [from, to) of extent PID. */
static int zero_in_extent(struct vdp_pool *p, uint64_t pid, uint64_t from,
			  uint64_t to)
{
	struct pmember *pm;
	uint64_t base, a;
	int r = 0;

	if (!pid_valid(p, pid))
		return bad_pid(p, pid);
	pool_member_offset(p, pid, &pm, &base);
	a = pm->m->align;
	while (r == 0 && from < to && (from & (a - 1))) {
		uint64_t n = ((from + a) & ~(a - 1)) - from;

		n = n < to - from ? n : to - from;
		r = vdp_member_write(pm->m, zeros, n, base + from);
		from += n;
	}
	if (r == 0 && (to & ~(a - 1)) > from) {
		r = pm->m->ops->write_zeroes(pm->m, base + from,
					     (to & ~(a - 1)) - from);
		from = to & ~(a - 1);
	}
	if (r == 0 && from < to)
		r = vdp_member_write(pm->m, zeros, to - from, base + from);
	atomic_store(&pm->written, true);
	return r < 0 ? member_error(p, pm, IO_WRITE, "zeroing", r) : 0;
}

/* A free extent for the caller (see alloc_extent). */
static int take_extent(struct vdp_pool *p, uint64_t *pid)
{
	size_t pending;
	int r;

	pthread_mutex_lock(&p->meta_lock);
	r = alloc_extent(p, pid);
	/* Frees of the open transaction, or of a commit running now (its
	 * writer may be another thread): a commit makes them usable. */
	pending =
		p->pend_ext.n + p->pend_meta.n + p->releasing + p->discard_held;
	pthread_mutex_unlock(&p->meta_lock);
	if (r == -ENOSPC && pending) {
		/* Extents freed by the open transaction become usable once
		 * it is durable and they are discarded: commit (which waits
		 * for the discarder) and try again, as a full ext4 does. */
		r = vdp_pool_commit(p);
		if (r == 0) {
			pthread_mutex_lock(&p->meta_lock);
			r = alloc_extent(p, pid);
			pthread_mutex_unlock(&p->meta_lock);
		}
	}
	return r;
}

/*
 * Whether extent PID is named by more than one map entry (a clone), or was
 * since the pool opened: the last commit may still name it at a place that
 * has since let go of it (a copy-on-write, a punch, an unlink), and a crash
 * would show that place whatever is written here in place.
 */
static bool is_shared_locked(struct vdp_pool *p, uint64_t pid)
{
	return atomic_load(&p->shared) &&
	       (extent_refcount(p, pid) > 1 || extent_was_shared(p, pid));
}

static bool is_shared(struct vdp_pool *p, uint64_t pid)
{
	bool shared;

	if (!atomic_load(&p->shared))
		return false;
	pthread_mutex_lock(&p->meta_lock);
	shared = is_shared_locked(p, pid);
	pthread_mutex_unlock(&p->meta_lock);
	return shared;
}

/* Copies extent FROM to extent TO through BUF (an aligned extent's worth);
 * TO's member is marked written, to be flushed by the next commit. */
int vdisk_copy_extent(struct vdp_pool *p, uint64_t from, uint64_t to, void *buf)
{
	struct pmember *om, *nm;
	uint64_t obase, nbase;
	int r;

	pool_member_offset(p, from, &om, &obase);
	pool_member_offset(p, to, &nm, &nbase);
	r = om->m->ops->pread(om->m, buf, p->extent_size, obase);
	if (r < 0)
		return member_error(p, om, IO_READ, "read", r);
	r = nm->m->ops->pwrite(nm->m, buf, p->extent_size, nbase);
	atomic_store(&nm->written, true);
	return r < 0 ? member_error(p, nm, IO_WRITE, "write", r) : 0;
}

/*
 * Copy-on-write: when extent *PID of virtual extent VEXT of V is shared
 * with another disk (or another place of this one), gives V a copy of its
 * own first and sets *PID to it; the other sharers keep the old extent, and
 * nothing writes it in place while they do (every writer comes here).  The
 * copy is durable on its member before a commit can name it, as a new
 * extent's zeros are.  Under v->io exclusive.
 */
static int cow_extent(struct vdp_pool *p, struct vnode *v, uint64_t vext,
		      uint64_t *pidp)
{
	uint64_t old = *pidp, pid, *slot;
	void *buf;
	int r;

	if (!is_shared(p, old))
		return 0;
	if (posix_memalign(&buf, 4096, p->extent_size) != 0)
		return -ENOMEM;
	r = take_extent(p, &pid);
	if (r < 0) {
		free(buf);
		return r;
	}
	r = vdisk_copy_extent(p, old, pid, buf);
	free(buf);
	pthread_mutex_lock(&p->meta_lock);
	slot = r == 0 ? rtree_slot(&v->data, vext) : NULL;
	if (r == 0 && !slot)
		r = -ENOMEM;
	if (r == 0)
		r = extent_ref(p, pid);
	if (r == 0) {
		/* The old extent keeps its other sharers' references. */
		*slot = htole64(pid);
		vnode_dirty(p, v);
		r = extent_unref(p, old);
		*pidp = pid;
	} else {
		unalloc_extent(p, pid);
	}
	pthread_mutex_unlock(&p->meta_lock);
	return r;
}

/* Zeros the mapped bytes between the old end of file SIZE and UPTO, in
 * the extent that holds SIZE.  Under v->io exclusive. */
static int zero_tail(struct vdp_pool *p, struct vnode *v, uint64_t size,
		     uint64_t upto)
{
	uint64_t e = p->extent_size, vext = size >> p->extent_shift;
	uint64_t pid = map_get(v, vext), end = (vext + 1) * e;
	int r;

	if (!(size & (e - 1)) || !pid)
		return 0;
	r = pid_valid(p, pid) ? cow_extent(p, v, vext, &pid) : bad_pid(p, pid);
	if (r < 0)
		return r;
	return zero_in_extent(p, pid, size & (e - 1),
			      (upto < end ? upto : end) - vext * e);
}

/*
 * Takes a free extent and writes LEN bytes of BUF at offset S inside it,
 * zeros around them (BUF NULL: all zeros); *PID is the extent.  Nothing
 * names it yet, so any io lock of the disk will do.  On failure the extent
 * is free again.
 */
static int fill_new(struct vdp_pool *p, const void *buf, uint64_t s, size_t len,
		    uint64_t *pidp)
{
	struct pmember *pm;
	uint64_t pid, base;
	int r = take_extent(p, &pid);

	if (r < 0)
		return r;
	pool_member_offset(p, pid, &pm, &base);
	if (!buf || s != 0 || len != p->extent_size)
		r = pm->m->ops->write_zeroes(pm->m, base, p->extent_size);
	if (r == 0 && buf)
		r = vdp_member_write(pm->m, buf, len, base + s);
	atomic_store(&pm->written, true);
	if (r < 0) {
		pthread_mutex_lock(&p->meta_lock);
		member_error(p, pm, IO_WRITE, "write", r);
		unalloc_extent(p, pid);
		pthread_mutex_unlock(&p->meta_lock);
		return r;
	}
	*pidp = pid;
	return 0;
}

/* Maps the filled extent PID at the hole VEXT of V, or frees it on
 * failure.  Map and reference in one hold of meta_lock: a commit sees both
 * or neither.  Under v->io exclusive. */
static int map_new(struct vdp_pool *p, struct vnode *v, uint64_t vext,
		   uint64_t pid)
{
	uint64_t *slot;
	int r;

	pthread_mutex_lock(&p->meta_lock);
	slot = rtree_slot(&v->data, vext);
	r = slot ? extent_ref(p, pid) : -ENOMEM;
	if (r == 0) {
		*slot = htole64(pid);
		v->d.nalloc++;
		vnode_dirty(p, v);
	} else {
		unalloc_extent(p, pid);
	}
	pthread_mutex_unlock(&p->meta_lock);
	return r;
}

/*
 * Gives virtual extent VEXT of V a new extent holding LEN bytes of BUF at
 * offset S inside it (BUF NULL: all zeros).  Under v->io exclusive.
 */
static int alloc_piece(struct vdp_pool *p, struct vnode *v, uint64_t vext,
		       const void *buf, uint64_t s, size_t len)
{
	uint64_t pid;
	int r = fill_new(p, buf, s, len, &pid);

	return r < 0 ? r : map_new(p, v, vext, pid);
}

/*
 * Fills the hole at virtual extent VEXT of V with LEN bytes of BUF at S,
 * for a writer holding v->io shared: the new extent is written while the
 * disk's other I/O goes on (thin disks are written mostly here), and only
 * mapping it takes v->io exclusive, which it keeps (*EXCL).  Returns 1 if
 * the piece is written, 0 if another writer filled the hole meanwhile (the
 * new extent went back; the caller writes into theirs), or -errno.
 */
static int fill_hole(struct vdp_pool *p, struct vnode *v, uint64_t vext,
		     const void *buf, uint64_t s, size_t len, bool *excl)
{
	uint64_t pid;
	int r = fill_new(p, buf, s, len, &pid);

	if (r < 0)
		return r;
	pthread_rwlock_unlock(&v->io);
	vnode_lock_excl(v);
	*excl = true;
	if (map_get(v, vext)) {
		pthread_mutex_lock(&p->meta_lock);
		unalloc_extent(p, pid);
		pthread_mutex_unlock(&p->meta_lock);
		return 0;
	}
	r = map_new(p, v, vext, pid);
	return r < 0 ? r : 1;
}

/*
 * New extents past the end of file that a write maps only at its end, in
 * the hold of meta_lock that sets the new size: a commit must not record
 * such an extent without the size that covers it, or a crash followed by
 * a truncate up would show its bytes where zeros belong.
 */
struct later {
	size_t n, cap;
	uint64_t *vext, *pid;
};

/* fill_new for virtual extent VEXT, to be mapped by map_later. */
static int fill_later(struct vdp_pool *p, struct later *l, uint64_t vext,
		      const void *buf, uint64_t s, size_t len)
{
	uint64_t pid;
	int r;

	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 8;
		uint64_t *a = realloc(l->vext, cap * sizeof(*a));
		uint64_t *b = a ? realloc(l->pid, cap * sizeof(*b)) : NULL;

		if (a)
			l->vext = a;
		if (!b)
			return -ENOMEM;
		l->pid = b;
		l->cap = cap;
	}
	r = fill_new(p, buf, s, len, &pid);
	if (r == 0) {
		l->vext[l->n] = vext;
		l->pid[l->n++] = pid;
	}
	return r;
}

/* Maps L's extents (in write order) for a write of *DONE bytes at OFF;
 * one that cannot be mapped ends the write there.  Under meta_lock and
 * v->io exclusive. */
static void map_later(struct vdp_pool *p, struct vnode *v, struct later *l,
		      uint64_t off, size_t *done)
{
	size_t i = 0;

	for (; i < l->n; i++) {
		uint64_t *slot = rtree_slot(&v->data, l->vext[i]);

		if (!slot || extent_ref(p, l->pid[i]) < 0)
			break;
		*slot = htole64(l->pid[i]);
		v->d.nalloc++;
	}
	if (i < l->n) { /* out of memory: the write ends before it */
		uint64_t at = l->vext[i] << p->extent_shift;

		if (at < off + *done)
			*done = at > off ? (size_t)(at - off) : 0;
		for (; i < l->n; i++)
			unalloc_extent(p, l->pid[i]);
	}
	if (l->n)
		vnode_dirty(p, v);
	free(l->vext);
	free(l->pid);
}

/*
 * After a write let go of V's io lock to take it exclusive at offset O: a
 * truncate may have run meanwhile.  If the file now ends before O, the
 * bytes from its end to O must read as zeros once this write extends it
 * again (a shrink keeps the tail of its last extent), and *SIZE follows.
 */
static int relocked(struct vdp_pool *p, struct vnode *v, uint64_t o,
		    uint64_t *size)
{
	uint64_t now = file_size(p, v);

	if (now >= *size)
		return 0;
	*size = now;
	return o > now ? zero_tail(p, v, now, o) : 0;
}

/* Whether LEN bytes at BUF are all zeros. */
static bool all_zeros(const void *buf, size_t len)
{
	const uint8_t *b = buf;

	return len == 0 || (b[0] == 0 && memcmp(b, b + 1, len - 1) == 0);
}

/* Unmaps virtual extents [first, end) of V.  Under meta_lock and v->io
 * exclusive. */
static int unmap_range(struct vdp_pool *p, struct vnode *v, uint64_t first,
		       uint64_t end)
{
	uint64_t base, key = first;
	struct rnode *leaf;
	int r = 0;

	while (key < end && (leaf = rtree_leaf_from(&v->data, key, &base))) {
		const uint64_t *e = (const uint64_t *)leaf->data;

		for (unsigned i = 0; i < v->data.per_leaf && r == 0; i++) {
			uint64_t k = base + i, pid = le64toh(e[i]);
			uint64_t *slot;

			if (k < first || !pid)
				continue;
			if (k >= end)
				break;
			slot = rtree_slot(&v->data, k);
			if (!slot)
				return -ENOMEM;
			*slot = 0;
			v->d.nalloc--;
			r = extent_unref(p, pid);
		}
		if (r < 0)
			return r;
		key = base + v->data.per_leaf;
		if (key < base)
			break;
	}
	vnode_dirty(p, v);
	return 0;
}

static int release_leaf(void *ctx, const struct rnode *n, uint64_t base)
{
	struct vdp_pool *p = ctx;
	const uint64_t *e = (const uint64_t *)n->data;

	(void)base;
	if (n->level == 0)
		for (unsigned i = 0; i < VDP_PAYLOAD / 8; i++)
			if (e[i])
				(void)extent_unref(p, le64toh(e[i]));
	return 0;
}

void vdisk_release_all(struct vdp_pool *p, struct vnode *v)
{
	rtree_visit(&v->data, release_leaf, p);
	v->d.nalloc = 0;
}

/* Tells share.c of N bytes read at S of virtual extent VEXT of V (extent
 * PID): an extent read whole, at once or piece by piece, is a candidate
 * for write-side sharing. */
static void note_read(struct vdp_pool *p, struct vnode *v, uint64_t vext,
		      uint64_t pid, uint64_t s, const void *buf, size_t n)
{
	struct share_done d;

	if (s == 0 && n == p->extent_size) {
		share_add(p, share_key(buf, 0, n), v->ino, vext, pid);
		return;
	}
	share_feed(p, v, false, vext, pid, s, buf, n, &d);
	for (unsigned i = 0; i < d.n; i++)
		share_add(p, d.key[i], v->ino, d.vext[i], pid);
}

ssize_t vdp_read(struct vdp_pool *p, uint64_t ino, void *buf, size_t len,
		 uint64_t off)
{
	struct vnode *v;
	uint64_t size;
	size_t done = 0;
	int r = get_file(p, ino, &v);

	if (r < 0)
		return r;
	pthread_rwlock_rdlock(&v->io);
	size = file_size(p, v);
	if (off >= size)
		len = 0;
	else if (len > size - off)
		len = (size_t)(size - off);
	while (done < len) {
		uint64_t o = off + done, s = o & (p->extent_size - 1);
		uint64_t pid = map_get(v, o >> p->extent_shift);
		size_t n = len - done;

		if (n > p->extent_size - s)
			n = (size_t)(p->extent_size - s);
		if (pid && !pid_valid(p, pid)) {
			r = bad_pid(p, pid);
			break;
		} else if (pid) {
			struct pmember *pm;
			uint64_t base;

			pool_member_offset(p, pid, &pm, &base);
			r = vdp_member_read(pm->m, (char *)buf + done, n,
					    base + s);
			if (r < 0) {
				member_error(p, pm, IO_READ, "read", r);
				break;
			}
			note_read(p, v, o >> p->extent_shift, pid, s,
				  (char *)buf + done, n);
		} else {
			memset((char *)buf + done, 0, n);
		}
		done += n;
	}
	pthread_rwlock_unlock(&v->io);
	p->n_reads++;
	p->b_read += done;
	return r < 0 ? r : (ssize_t)done;
}

static void share_written(struct vdp_pool *p, struct vnode *v, const void *buf,
			  size_t n, uint64_t off);

/*
 * Asynchronous reads and writes (vdp_read_start, vdp_write_start).  Each
 * counts in v->aio from the moment it is checked under v->io shared to its
 * completion, so an exclusive holder (vnode_lock_excl) never sees the map
 * change under an I/O still in flight: as if the I/O held v->io shared
 * until then, without a thread holding it.
 */
struct aio {
	struct vdp_mio mio; /* first: aio_done gets it */
	struct vdp_pool *p;
	struct vnode *v;
	struct pmember *pm;
	uint64_t vext, pid, s;
	vdp_done_fn *done;
	void *arg;
};

static pthread_mutex_t aio_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t aio_cond = PTHREAD_COND_INITIALIZER;
static atomic_uint aio_waiters; /* threads in vnode_lock_excl's wait */

void vnode_lock_excl(struct vnode *v)
{
	/* This thread's own I/O on V completes only when it polls. */
	vdp_aio_poll(true);
	pthread_rwlock_wrlock(&v->io);
	if (atomic_load(&v->aio) == 0)
		return;
	atomic_fetch_add(&aio_waiters, 1);
	pthread_mutex_lock(&aio_lock);
	while (atomic_load(&v->aio))
		pthread_cond_wait(&aio_cond, &aio_lock);
	pthread_mutex_unlock(&aio_lock);
	atomic_fetch_sub(&aio_waiters, 1);
}

static void aio_end(struct vnode *v)
{
	if (atomic_fetch_sub(&v->aio, 1) == 1 && atomic_load(&aio_waiters)) {
		pthread_mutex_lock(&aio_lock);
		pthread_cond_broadcast(&aio_cond);
		pthread_mutex_unlock(&aio_lock);
	}
}

static void aio_done(struct vdp_mio *mio, int r)
{
	struct aio *a = (struct aio *)mio;
	struct vdp_pool *p = a->p;

	/* Marked when done, as vdp_write does: a flush that ran while the
	 * write was in flight may not hold it, and clears the mark. */
	if (mio->write)
		atomic_store(&a->pm->written, true);
	if (r < 0) {
		member_error(p, a->pm, mio->write ? IO_WRITE : IO_READ,
			     mio->write ? "write" : "read", r);
	} else if (mio->write) {
		p->n_writes++;
		p->b_written += mio->len;
	} else {
		note_read(p, a->v, a->vext, a->pid, a->s, mio->buf, mio->len);
		p->n_reads++;
		p->b_read += mio->len;
	}
	aio_end(a->v);
	a->done(a->arg, r < 0 ? r : (ssize_t)mio->len);
	if (mio->write)
		free(mio->buf); /* aio_start's copy */
	free(a);
}

/* The checks of vdp_read_start and vdp_write_start, and the start. */
static bool aio_start(struct vdp_pool *p, uint64_t ino, void *buf, size_t len,
		      uint64_t off, bool write, vdp_done_fn *done, void *arg)
{
	uint64_t s = off & (p->extent_size - 1), vext = off >> p->extent_shift;
	uint64_t pid, base;
	struct pmember *pm;
	struct vnode *v;
	struct aio *a;
	const void *orig = buf;
	void *copy = NULL;
	bool ok;

	if (len == 0 || s + len > p->extent_size ||
	    ((len | off) & (VDP_AIO_ALIGN - 1)) ||
	    (write ? len > VDP_AIO_WRITE_MAX
		   : ((uintptr_t)buf & (VDP_AIO_ALIGN - 1)) != 0) ||
	    get_file(p, ino, &v) < 0)
		return false;
	/* While copies go on (share_wanted), a whole extent written may be
	 * shared instead: write_sharing tries that before it writes. */
	if (write && (may_write(p, off, len) < 0 ||
		      (len == p->extent_size && share_wanted(p))))
		return false;
	/* Busy: an exclusive holder, or one waiting (it goes first). */
	if (pthread_rwlock_tryrdlock(&v->io) != 0)
		return false;
	pid = map_get(v, vext);
	if (!pid || !pid_valid(p, pid))
		goto slow;
	pool_member_offset(p, pid, &pm, &base);
	if (pm->m->align > VDP_AIO_ALIGN)
		goto slow;
	pthread_mutex_lock(&p->meta_lock);
	ok = off + len <= v->d.size && !(write && is_shared_locked(p, pid));
	if (ok && write) {
		vnode_touch(v, true, true);
		vnode_dirty_times(p, v);
	}
	pthread_mutex_unlock(&p->meta_lock);
	if (!ok)
		goto slow;
	if (write) { /* the caller's buffer is free on return */
		if (posix_memalign(&copy, VDP_AIO_ALIGN, len) != 0)
			goto slow;
		memcpy(copy, buf, len);
		buf = copy;
	}
	a = malloc(sizeof(*a));
	if (!a)
		goto slow;
	*a = (struct aio){
		.mio = {.member = pm->m,
			.write = write,
			.buf = buf,
			.len = len,
			.off = base + s,
			.done = aio_done},
		.p = p,
		.v = v,
		.pm = pm,
		.vext = vext,
		.pid = pid,
		.s = s,
		.done = done,
		.arg = arg,
	};
	atomic_fetch_add(&v->aio, 1);
	pthread_rwlock_unlock(&v->io);
	if (vdp_member_submit(&a->mio) == 0) {
		if (write && share_wanted(p))
			share_written(p, v, orig, len, off);
		return true;
	}
	aio_end(v); /* not started: the caller does it synchronously */
	free(a);
	free(copy);
	return false;

slow:
	pthread_rwlock_unlock(&v->io);
	free(copy);
	return false;
}

bool vdp_read_start(struct vdp_pool *p, uint64_t ino, void *buf, size_t len,
		    uint64_t off, vdp_done_fn *done, void *arg)
{
	return aio_start(p, ino, buf, len, off, false, done, arg);
}

bool vdp_write_start(struct vdp_pool *p, uint64_t ino, const void *buf,
		     size_t len, uint64_t off, vdp_done_fn *done, void *arg)
{
	/* Only read, and copied before the return. */
	return aio_start(p, ino, (void *)buf, len, off, true, done, arg);
}

/*
 * Writes LEN bytes of BUF at OFF of V under v->io, held exclusive when
 * *EXCL, else shared and taken exclusive (*EXCL set) once the map must
 * change: a hole to fill, a shared extent to copy.  Grows the size.
 * Returns the bytes written, or -errno when none were.
 */
static ssize_t write_locked(struct vdp_pool *p, struct vnode *v,
			    const void *buf, size_t len, uint64_t off,
			    bool *excl)
{
	uint64_t size = file_size(p, v);
	struct later later = {0};
	size_t done = 0;
	int r = 0;

	if (*excl && off > size)
		r = zero_tail(p, v, size, off);
	while (r == 0 && done < len) {
		uint64_t o = off + done, s = o & (p->extent_size - 1);
		uint64_t vext = o >> p->extent_shift, pid = map_get(v, vext);
		size_t n = len - done;

		if (n > p->extent_size - s)
			n = (size_t)(p->extent_size - s);
		/* Zeros written over a hole leave the hole (it reads as zeros):
		 * what QEMU's detect-zeroes and copies that write zeros expect
		 * of a thin disk.  fallocate is the way to reserve space. */
		if (!pid && all_zeros((const char *)buf + done, n)) {
			done += n;
			continue;
		}
		if (!pid && !*excl) {
			r = fill_hole(p, v, vext, (const char *)buf + done, s,
				      n, excl);
			if (r >= 0) {
				int z = relocked(p, v, o, &size);

				r = z < 0 ? z : r;
			}
			if (r < 0)
				break;
			if (r > 0) {
				done += n;
				r = 0;
				continue;
			}
			pid = map_get(v, vext); /* filled by another writer */
		}
		if (pid && is_shared(p, pid) && !*excl) {
			pthread_rwlock_unlock(&v->io);
			vnode_lock_excl(v);
			*excl = true;
			r = relocked(p, v, o, &size);
			pid = map_get(v, vext);
		}
		if (r < 0)
			break;
		if (pid && !pid_valid(p, pid))
			r = bad_pid(p, pid);
		else if (pid && *excl)
			r = cow_extent(p, v, vext, &pid);
		if (r == 0 && pid) {
			struct pmember *pm;
			uint64_t base;

			pool_member_offset(p, pid, &pm, &base);
			r = vdp_member_write(pm->m, (const char *)buf + done, n,
					     base + s);
			atomic_store(&pm->written, true);
			if (r < 0)
				member_error(p, pm, IO_WRITE, "write", r);
		} else if (r == 0 && o >= size) {
			r = fill_later(p, &later, vext,
				       (const char *)buf + done, s, n);
		} else if (r == 0) {
			r = alloc_piece(p, v, vext, (const char *)buf + done, s,
					n);
		}
		if (r == 0)
			done += n;
	}
	pthread_mutex_lock(&p->meta_lock);
	map_later(p, v, &later, off, &done);
	if (done) {
		vnode_touch(v, true, true);
		if (off + done > v->d.size) {
			v->d.size = off + done;
			vnode_dirty(p, v);
		} else {
			vnode_dirty_times(p, v); /* allocation dirtied it */
		}
	}
	pthread_mutex_unlock(&p->meta_lock);
	return done ? (ssize_t)done : r;
}

/* Writes LEN bytes of BUF at OFF of V, taking v->io: vdp_write without
 * write-side sharing. */
static ssize_t write_range(struct vdp_pool *p, struct vnode *v, const void *buf,
			   size_t len, uint64_t off)
{
	ssize_t n;
	bool excl;

	/* Writes that extend the file run alone: they zero the old tail. */
	excl = off + len > file_size(p, v);
	if (excl)
		vnode_lock_excl(v);
	else
		pthread_rwlock_rdlock(&v->io);
	if (!excl && off + len > file_size(p, v)) { /* shrunk meanwhile */
		pthread_rwlock_unlock(&v->io);
		vnode_lock_excl(v);
		excl = true;
	}
	n = write_locked(p, v, buf, len, off, &excl);
	pthread_rwlock_unlock(&v->io);
	return n;
}

static ssize_t write_sharing(struct vdp_pool *p, struct vnode *v,
			     const void *buf, size_t len, uint64_t off);

ssize_t vdp_write(struct vdp_pool *p, uint64_t ino, const void *buf, size_t len,
		  uint64_t off)
{
	struct vnode *v;
	ssize_t n;
	int r = get_file(p, ino, &v);

	if (r == 0)
		r = may_write(p, off, len);
	if (r < 0)
		return r;
	/* Keys cost a hash of the bytes: only while some extent read lately
	 * could match. */
	if (share_wanted(p))
		n = write_sharing(p, v, buf, len, off);
	else
		n = write_range(p, v, buf, len, off);
	p->n_writes++;
	if (n > 0)
		p->b_written += (uint64_t)n;
	return n;
}

int vdisk_truncate(struct vdp_pool *p, struct vnode *v, uint64_t size)
{
	uint64_t old = file_size(p, v);
	int r = 0;

	if (size > old)
		r = zero_tail(p, v, old, size);
	if (r < 0)
		return r;
	pthread_mutex_lock(&p->meta_lock);
	if (size < old)
		r = unmap_range(p, v,
				(size + p->extent_size - 1) >> p->extent_shift,
				UINT64_MAX);
	v->d.size = size;
	vnode_touch(v, true, true);
	vnode_dirty(p, v);
	pthread_mutex_unlock(&p->meta_lock);
	return r;
}

/* Makes [off, end) of V read as zeros, freeing the whole extents in it. */
static int clear_range(struct vdp_pool *p, struct vnode *v, uint64_t off,
		       uint64_t end)
{
	uint64_t e = p->extent_size, sh = p->extent_shift;
	uint64_t first = (off + e - 1) >> sh, last = end >> sh;
	int r = 0;

	if (off >= end)
		return 0;
	if (first < last) {
		pthread_mutex_lock(&p->meta_lock);
		r = unmap_range(p, v, first, last);
		pthread_mutex_unlock(&p->meta_lock);
	}
	/* The partial extents at either end. */
	for (uint64_t x = off >> sh; r == 0 && x <= (end - 1) >> sh; x++) {
		uint64_t s = x == off >> sh ? off - x * e : 0;
		uint64_t t = x == (end - 1) >> sh ? end - x * e : e;
		uint64_t pid;

		if (x >= first && x < last) {
			x = last - 1; /* whole extents: done above */
			continue;
		}
		pid = map_get(v, x);
		if (pid && pid_valid(p, pid))
			r = cow_extent(p, v, x, &pid);
		if (r == 0 && pid)
			r = zero_in_extent(p, pid, s, t);
	}
	return r;
}

int vdp_fallocate(struct vdp_pool *p, uint64_t ino, int mode, uint64_t off,
		  uint64_t len)
{
	const int known = FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE |
			  FALLOC_FL_ZERO_RANGE;
	struct vnode *v;
	uint64_t size, end;
	int r = get_file(p, ino, &v);

	if (r < 0)
		return r;
	if ((mode & ~known) ||
	    ((mode & FALLOC_FL_PUNCH_HOLE) && !(mode & FALLOC_FL_KEEP_SIZE)) ||
	    ((mode & FALLOC_FL_PUNCH_HOLE) && (mode & FALLOC_FL_ZERO_RANGE)))
		return -EOPNOTSUPP;
	if (len == 0)
		return -EINVAL;
	r = may_write(p, off, len);
	if (r < 0)
		return r;
	end = off + len;
	vnode_lock_excl(v);
	size = file_size(p, v);
	if (mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) {
		/* Past the end of file everything already reads as zeros. */
		r = clear_range(p, v, off, end < size ? end : size);
	} else {
		for (uint64_t x = off >> p->extent_shift;
		     r == 0 && x <= (end - 1) >> p->extent_shift; x++)
			if (!map_get(v, x))
				r = alloc_piece(p, v, x, NULL, 0, 0);
	}
	if (r == 0 && !(mode & FALLOC_FL_KEEP_SIZE) && end > size) {
		r = zero_tail(p, v, size, end);
		pthread_mutex_lock(&p->meta_lock);
		if (r == 0)
			v->d.size = end;
		pthread_mutex_unlock(&p->meta_lock);
	}
	pthread_mutex_lock(&p->meta_lock);
	vnode_touch(v, true, true);
	vnode_dirty(p, v);
	pthread_mutex_unlock(&p->meta_lock);
	pthread_rwlock_unlock(&v->io);
	return r;
}

/* The first virtual extent >= FROM that is mapped (WANT) or not. */
static uint64_t find_extent(const struct vnode *v, uint64_t from, bool want)
{
	uint64_t key = from, base;
	const struct rnode *leaf;

	while ((leaf = rtree_leaf_from(&v->data, key, &base))) {
		const uint64_t *e = (const uint64_t *)leaf->data;

		if (base > key) {
			if (!want)
				return key; /* a gap with no leaf */
			key = base;
		}
		for (uint64_t i = key - base; i < v->data.per_leaf; i++)
			if ((e[i] != 0) == want)
				return base + i;
		key = base + v->data.per_leaf;
	}
	return want ? UINT64_MAX : key;
}

int64_t vdp_lseek(struct vdp_pool *p, uint64_t ino, uint64_t off, int whence)
{
	struct vnode *v;
	uint64_t size, x, pos;
	int r = get_file(p, ino, &v);

	if (r < 0)
		return r;
	if (whence != SEEK_DATA && whence != SEEK_HOLE)
		return -EINVAL;
	pthread_rwlock_rdlock(&v->io);
	size = file_size(p, v);
	if (off >= size) {
		pthread_rwlock_unlock(&v->io);
		return -ENXIO;
	}
	x = find_extent(v, off >> p->extent_shift, whence == SEEK_DATA);
	pthread_rwlock_unlock(&v->io);
	if (x == UINT64_MAX ||
	    x >= (size + p->extent_size - 1) >> p->extent_shift)
		return whence == SEEK_DATA ? -ENXIO : (int64_t)size;
	pos = x << p->extent_shift;
	if (pos < off)
		pos = off;
	if (pos > size)
		pos = size;
	return (int64_t)pos;
}

/*
 * Virtual extent XO of VO becomes what XI of VI is: the same extent, one
 * more reference (or a hole).  Returns 1 if that changed the map, 0 if it
 * already was so.  Under both io locks exclusive and meta_lock; the extent
 * id was checked (pid_valid) by the caller.
 */
static int share_locked(struct vdp_pool *p, struct vnode *vi, uint64_t xi,
			struct vnode *vo, uint64_t xo)
{
	uint64_t pid = map_get(vi, xi), old = map_get(vo, xo), *slot;
	int r;

	if (pid == old)
		return 0; /* a follow-up request of a clone done whole */
	if (!pid) {
		r = unmap_range(p, vo, xo, xo + 1);
	} else {
		slot = rtree_slot(&vo->data, xo);
		r = slot ? extent_ref(p, pid) : -ENOMEM;
		if (r < 0)
			return r;
		atomic_store(&p->shared, true);
		*slot = htole64(pid);
		if (old)
			r = extent_unref(p, old);
		else
			vo->d.nalloc++;
		vnode_dirty(p, vo);
	}
	return r < 0 ? r : 1;
}

/* Reads LEN bytes at OFF of V, all inside one extent, into BUF (zeros for
 * a hole).  Under v->io. */
static int read_piece(struct vdp_pool *p, struct vnode *v, void *buf,
		      size_t len, uint64_t off)
{
	uint64_t pid = map_get(v, off >> p->extent_shift), base;
	struct pmember *pm;
	int r;

	if (!pid) {
		memset(buf, 0, len);
		return 0;
	}
	if (!pid_valid(p, pid))
		return bad_pid(p, pid);
	pool_member_offset(p, pid, &pm, &base);
	r = vdp_member_read(pm->m, buf, len,
			    base + (off & (p->extent_size - 1)));
	return r < 0 ? member_error(p, pm, IO_READ, "read", r) : 0;
}

static void lock_pair(struct vnode *a, struct vnode *b, bool lock)
{
	struct vnode *first = a->ino < b->ino ? a : b;
	struct vnode *second = first == a ? b : a;

	if (!lock) {
		pthread_rwlock_unlock(&a->io);
		if (a != b)
			pthread_rwlock_unlock(&b->io);
		return;
	}
	vnode_lock_excl(first);
	if (a != b)
		vnode_lock_excl(second);
}

/* The most a copy whose offsets do not line up inside an extent moves in
 * one call (it copies every byte through the daemon). */
#define COPY_MAX (1ull << 30)

/* What a copy does to destination extent XO at its commit point: map the
 * new extent PID it filled for a hole, or (PID 0) unmap it, a whole extent
 * of the source's holes. */
struct fresh {
	uint64_t xo, pid;
};

/* The copy's state for one call. */
struct copy {
	struct vnode *vi, *vo;
	uint64_t off_in, off_out, size_in, size_out; /* sizes at the start */
	bool same;
	bool wrote; /* bytes were copied in place */
};

/*
 * The piece of the copy at DONE: *N bytes inside one destination extent.
 * Returns whether it is shared whole: both sides start an extent and it is
 * a whole extent, or it is the source's partial last extent going to the
 * destination's last one (nothing of the destination lies past it, so the
 * zeros past the source's end of file are zeros past the destination's).
 */
static bool copy_piece_at(const struct vdp_pool *p, const struct copy *c,
			  uint64_t done, uint64_t len, uint64_t *n)
{
	const uint64_t m = p->extent_size - 1;
	uint64_t i = c->off_in + done, o = c->off_out + done;

	*n = len - done < p->extent_size - (o & m) ? len - done
						   : p->extent_size - (o & m);
	if ((i & m) || (o & m))
		return false;
	if (*n == p->extent_size)
		return true;
	return !c->same && i + *n == c->size_in && c->size_out <= o + *n;
}

/*
 * Copies the N bytes at I of the source to O of the destination, inside
 * one destination extent, by data: into that extent in place (given its own
 * copy first when it is shared) or, for a hole, into a fresh extent that is
 * mapped later (*F).  A source hole over a destination hole stays a hole;
 * over a whole destination extent, it makes one later (*F, pid 0).
 * Returns 1 when *F holds something to do, 0 when not, or -errno.  Under
 * both io locks exclusive.
 */
static int copy_bytes(struct vdp_pool *p, struct copy *c, uint64_t i,
		      uint64_t o, uint64_t n, void *buf, struct fresh *f)
{
	const uint64_t e = p->extent_size, sh = p->extent_shift, m = e - 1;
	uint64_t xo = o >> sh, dpid = map_get(c->vo, xo), n1, base;
	bool hole =
		!map_get(c->vi, i >> sh) && !map_get(c->vi, (i + n - 1) >> sh);
	struct pmember *pm;
	int r;

	f->xo = xo;
	f->pid = 0;
	if (dpid && !pid_valid(p, dpid))
		return bad_pid(p, dpid);
	if (hole && !dpid)
		return 0;
	/* The destination maps the source's very extent here, lined up: the
	 * bytes are the same already (a follow-up request of a clone done
	 * whole starts inside an extent when the offsets are not aligned).
	 * Copying would only un-share it, and may fail on a full pool. */
	if (dpid && (i & m) == (o & m) && dpid == map_get(c->vi, i >> sh))
		return 0;
	if (hole && n == e)
		return 1; /* unmapped at the commit point */
	if (dpid) {
		c->wrote = true;
		r = cow_extent(p, c->vo, xo, &dpid);
		if (r == 0 && hole)
			r = zero_in_extent(p, dpid, o & m, (o & m) + n);
		if (r < 0 || hole)
			return r;
	}
	n1 = n < e - (i & m) ? n : e - (i & m);
	r = read_piece(p, c->vi, buf, n1, i);
	if (r == 0 && n1 < n)
		r = read_piece(p, c->vi, (char *)buf + n1, n - n1, i + n1);
	if (r < 0)
		return r;
	if (!dpid) {
		r = take_extent(p, &dpid);
		if (r < 0)
			return r;
		f->pid = dpid;
	}
	pool_member_offset(p, dpid, &pm, &base);
	if (f->pid && n != e)
		r = pm->m->ops->write_zeroes(pm->m, base, e);
	if (r == 0)
		r = vdp_member_write(pm->m, buf, n, base + (o & m));
	atomic_store(&pm->written, true);
	if (r < 0 && f->pid) {
		pthread_mutex_lock(&p->meta_lock);
		unalloc_extent(p, f->pid);
		pthread_mutex_unlock(&p->meta_lock);
		f->pid = 0;
	}
	if (r < 0)
		return member_error(p, pm, IO_WRITE, "write", r);
	return f->pid != 0;
}

/*
 * The commit point of a copy: maps the shared extents and the fresh ones
 * of the first *DONE bytes, and grows the destination, all in one hold of
 * meta_lock, so that a commit sees all of it or nothing.  On a failure
 * part way *DONE becomes what was applied; the fresh extents not mapped go
 * back.  Under both io locks exclusive.
 */
static int copy_apply(struct vdp_pool *p, const struct copy *c, uint64_t *done,
		      struct fresh *fr, size_t nf)
{
	const uint64_t sh = p->extent_shift;
	uint64_t d = 0, n, *slot;
	bool changed = c->wrote;
	size_t k = 0;
	int r = 0;

	pthread_mutex_lock(&p->meta_lock);
	while (r == 0 && d < *done) {
		uint64_t o = c->off_out + d;

		if (copy_piece_at(p, c, d, *done, &n)) {
			r = share_locked(p, c->vi, (c->off_in + d) >> sh, c->vo,
					 o >> sh);
			changed |= r > 0;
			r = r < 0 ? r : 0;
		} else if (k < nf && fr[k].xo == o >> sh && !fr[k].pid) {
			r = unmap_range(p, c->vo, o >> sh, (o >> sh) + 1);
			changed = true;
			k++;
		} else if (k < nf && fr[k].xo == o >> sh) {
			slot = rtree_slot(&c->vo->data, o >> sh);
			r = slot ? extent_ref(p, fr[k].pid) : -ENOMEM;
			if (r == 0) {
				*slot = htole64(fr[k].pid);
				c->vo->d.nalloc++;
				changed = true;
				k++;
			}
		}
		if (r == 0)
			d += n;
	}
	*done = d;
	for (; k < nf; k++)
		if (fr[k].pid)
			unalloc_extent(p, fr[k].pid);
	if (c->off_out + d > c->vo->d.size) {
		c->vo->d.size = c->off_out + d;
		changed = true;
	}
	/* A follow-up request of a clone done whole changes nothing: it
	 * leaves the disk clean, so no commit follows it. */
	if (changed) {
		vnode_touch(c->vo, true, true);
		vnode_dirty(p, c->vo);
	}
	pthread_mutex_unlock(&p->meta_lock);
	return r;
}

/*
 * copy_file_range, as one transaction: first the data work (the pieces
 * that are not whole shared extents are copied, holes stay holes), then
 * every map change in one hold of meta_lock (copy_apply).  Both disks are
 * locked exclusive for the call, so no write lands in a source extent
 * between the check and the share.  When the offsets line up inside an
 * extent the whole range is done, however long (only a partial extent at
 * either end moves data); else at most COPY_MAX.
 */
ssize_t vdp_copy_range(struct vdp_pool *p, uint64_t ino_in, uint64_t off_in,
		       uint64_t ino_out, uint64_t off_out, size_t len)
{
	const uint64_t m = p->extent_size - 1, sh = p->extent_shift;
	struct copy c = {.off_in = off_in, .off_out = off_out};
	struct fresh *fr = NULL;
	uint64_t done = 0, n;
	size_t nf = 0;
	void *buf = NULL;
	int r = get_file(p, ino_in, &c.vi);

	if (r == 0)
		r = get_file(p, ino_out, &c.vo);
	if (r < 0)
		return r;
	c.same = c.vi == c.vo;
	lock_pair(c.vi, c.vo, true);
	c.size_in = file_size(p, c.vi);
	if (off_in >= c.size_in)
		len = 0;
	else if (len > c.size_in - off_in)
		len = (size_t)(c.size_in - off_in);
	if (c.same && len && off_in < off_out + len && off_out < off_in + len)
		r = -EINVAL; /* overlapping, as copy_file_range(2) says */
	if ((off_in & m) != (off_out & m) && len > COPY_MAX)
		len = COPY_MAX;
	if (r == 0)
		r = may_write(p, off_out, len);
	if (r == 0 && len && off_out > file_size(p, c.vo))
		r = zero_tail(p, c.vo, file_size(p, c.vo), off_out);
	c.size_out = file_size(p, c.vo);
	/* Lined up, only the first and the last piece can need a fresh
	 * extent. */
	if (r == 0 && len) {
		fr = calloc(((off_in & m) == (off_out & m) ? 0 : len >> sh) + 2,
			    sizeof(*fr));
		if (!fr)
			r = -ENOMEM;
	}
	while (r == 0 && done < len) {
		uint64_t i = off_in + done;

		if (copy_piece_at(p, &c, done, len, &n)) {
			uint64_t pid = map_get(c.vi, i >> sh);

			if (pid && !pid_valid(p, pid))
				r = bad_pid(p, pid);
		} else if (!buf &&
			   posix_memalign(&buf, 4096, p->extent_size) != 0) {
			r = -ENOMEM;
		} else {
			r = copy_bytes(p, &c, i, off_out + done, n, buf,
				       &fr[nf]);
			if (r > 0)
				nf++;
		}
		if (r >= 0) {
			r = 0;
			done += n;
		}
	}
	if (done) {
		int a = copy_apply(p, &c, &done, fr, nf);

		r = r < 0 ? r : a;
	}
	lock_pair(c.vi, c.vo, false);
	free(buf);
	free(fr);
	return done ? (ssize_t)done : r;
}

int vdisk_remap(struct vdp_pool *p, struct vnode *v, uint64_t vext,
		uint64_t old, uint64_t pid)
{
	uint64_t *slot;
	int r;

	if (map_get(v, vext) != old)
		return 0; /* rewritten, copied-on-write or punched meanwhile */
	slot = rtree_slot(&v->data, vext);
	if (!slot)
		return -ENOMEM;
	r = extent_ref(p, pid);
	if (r == 0)
		r = extent_unref(p, old);
	if (r < 0)
		return r;
	*slot = htole64(pid);
	vnode_dirty(p, v);
	return 1;
}

/* Reads extent PID whole into BUF (extent_size, aligned). */
static int read_extent(struct vdp_pool *p, uint64_t pid, void *buf)
{
	struct pmember *pm;
	uint64_t base;
	int r;

	pool_member_offset(p, pid, &pm, &base);
	r = pm->m->ops->pread(pm->m, buf, p->extent_size, base);
	return r < 0 ? member_error(p, pm, IO_READ, "read", r) : 0;
}

/*
 * Write-side sharing: virtual extent X of V becomes candidate C's extent
 * (one more reference) if that extent holds the bytes WANT or, WANT NULL,
 * the bytes X of V holds now (its private copy is then let go).  The bytes
 * are compared with both disks' io locks held exclusive, so no write
 * changes either side between the compare and the share; a candidate
 * whose disk no longer maps its extent there is dropped.  Returns 1 if X
 * shares C's extent now, 0 if not, or -errno.  No lock held on entry.
 */
static int share_from(struct vdp_pool *p, struct vnode *v, uint64_t x,
		      const void *want, const struct share_cand *c)
{
	const uint64_t e = p->extent_size;
	const bool whole = want != NULL; /* a write, not done yet */
	uint64_t pid, dpid, size;
	void *a = NULL, *b = NULL;
	struct vnode *vs;
	int r = 0;

	/* A lookup reference keeps the source's vnode while we use it. */
	pthread_mutex_lock(&p->meta_lock);
	vs = vnode_get(p, c->ino);
	if (vs && S_ISREG(vs->d.mode))
		vs->nlookup++;
	else
		vs = NULL;
	pthread_mutex_unlock(&p->meta_lock);
	if (!vs) {
		share_forget(p, c);
		return 0;
	}
	lock_pair(vs, v, true);
	pid = map_get(vs, c->vext);
	dpid = map_get(v, x);
	size = file_size(p, v);
	if (pid != c->pid || !pid_valid(p, pid) ||
	    (dpid && !pid_valid(p, dpid))) {
		share_forget(p, c);
		goto out;
	}
	if (!want && (!dpid || dpid == pid))
		goto out; /* punched meanwhile, or shares it already */
	if (posix_memalign(&a, 4096, e) != 0 ||
	    (!want && posix_memalign(&b, 4096, e) != 0)) {
		r = -ENOMEM;
		goto out;
	}
	r = read_extent(p, pid, a);
	if (r == 0 && !want) {
		r = read_extent(p, dpid, b);
		want = b;
	}
	if (r < 0)
		goto out;
	if (memcmp(a, want, e) != 0) {
		share_count(p, false);
		goto out;
	}
	/* A whole-extent write past the end of file: the old tail first. */
	if (whole && x * e > size)
		r = zero_tail(p, v, size, x * e);
	if (r < 0)
		goto out;
	pthread_mutex_lock(&p->meta_lock);
	r = share_locked(p, vs, c->vext, v, x);
	if (r >= 0) {
		if (whole && (x + 1) * e > v->d.size)
			v->d.size = (x + 1) * e;
		vnode_touch(v, true, true);
		vnode_dirty(p, v);
		r = 1;
	}
	pthread_mutex_unlock(&p->meta_lock);
	if (r > 0)
		share_count(p, true);
out:
	lock_pair(vs, v, false);
	free(a);
	free(b);
	vdp_forget(p, c->ino, 1);
	return r;
}

/* Tries the extents of V that *D says a writer is done with. */
static void share_done_try(struct vdp_pool *p, struct vnode *v,
			   const struct share_done *d)
{
	struct share_cand c;

	for (unsigned i = 0; i < d->n; i++)
		if (share_find(p, d->key[i], &c))
			(void)share_from(p, v, d->vext[i], NULL, &c);
}

/* Feeds the N bytes of BUF at OFF, inside one extent, written or on their
 * way (vdp_write_start), to V's write streams, and tries the extents that
 * they complete: share_from waits for V's writes in flight. */
static void share_written(struct vdp_pool *p, struct vnode *v, const void *buf,
			  size_t n, uint64_t off)
{
	struct share_done d;

	share_feed(p, v, true, off >> p->extent_shift, 0,
		   off & (p->extent_size - 1), buf, n, &d);
	share_done_try(p, v, &d);
}

/*
 * vdp_write while candidates are fresh.  A write of one whole extent
 * whose key matches a candidate is shared instead of written if the bytes
 * are equal.  Any other write is written as always (its size changes
 * once, as a commit must see it), and then each whole extent in it whose
 * key matches, and each extent that its pieces and earlier ones complete,
 * is switched to the candidate's extent if the bytes are equal.
 */
static ssize_t write_sharing(struct vdp_pool *p, struct vnode *v,
			     const void *buf, size_t len, uint64_t off)
{
	const uint64_t e = p->extent_size, sh = p->extent_shift;
	bool one = !(off & (e - 1)) && len == e;
	struct share_cand c;
	struct share_done d;
	ssize_t w;

	if (one && share_find(p, share_key(buf, 0, e), &c) &&
	    share_from(p, v, off >> sh, buf, &c) > 0)
		return (ssize_t)len;
	w = write_range(p, v, buf, len, off);
	for (size_t done = 0; w > 0 && done < (size_t)w;) {
		uint64_t o = off + done, s = o & (e - 1);
		size_t n = (size_t)w - done < e - s ? (size_t)w - done
						    : (size_t)(e - s);
		const char *b = (const char *)buf + done;

		if (n == e) {
			if (!one && share_find(p, share_key(b, 0, e), &c))
				(void)share_from(p, v, o >> sh, NULL, &c);
			share_finish(p, v, o >> sh, &d); /* moved on */
			share_done_try(p, v, &d);
		} else {
			share_written(p, v, b, n, o);
		}
		done += n;
	}
	return w;
}

int vdp_fsync(struct vdp_pool *p, uint64_t ino, bool datasync)
{
	struct share_done d;
	struct vnode *v;

	/* A flush (close) ends a copy: the extents its writer left. */
	if (get_file(p, ino, &v) == 0) {
		share_finish(p, v, UINT64_MAX, &d);
		share_done_try(p, v, &d);
	}
	return pool_sync(p, !datasync);
}
