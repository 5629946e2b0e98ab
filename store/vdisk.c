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
 *     readers holding it shared may read the map without meta_lock.
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
	pending = p->pend_ext.n + p->pend_meta.n;
	pthread_mutex_unlock(&p->meta_lock);
	if (r == -ENOSPC && pending) {
		/* Extents freed by the open transaction become usable once
		 * it is durable: commit and try again, as a full ext4 does. */
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
static bool is_shared(struct vdp_pool *p, uint64_t pid)
{
	bool shared;

	if (!atomic_load(&p->shared))
		return false;
	pthread_mutex_lock(&p->meta_lock);
	shared = extent_refcount(p, pid) > 1 || extent_was_shared(p, pid);
	pthread_mutex_unlock(&p->meta_lock);
	return shared;
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
	uint64_t old = *pidp, pid, obase, nbase, *slot;
	struct pmember *om, *nm;
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
	pool_member_offset(p, old, &om, &obase);
	pool_member_offset(p, pid, &nm, &nbase);
	r = om->m->ops->pread(om->m, buf, p->extent_size, obase);
	if (r < 0) {
		member_error(p, om, IO_READ, "read", r);
	} else {
		r = nm->m->ops->pwrite(nm->m, buf, p->extent_size, nbase);
		atomic_store(&nm->written, true);
		if (r < 0)
			member_error(p, nm, IO_WRITE, "write", r);
	}
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
 * Gives virtual extent VEXT of V a new extent holding LEN bytes of BUF at
 * offset S inside it (BUF NULL: all zeros).  Under v->io exclusive.
 */
static int alloc_piece(struct vdp_pool *p, struct vnode *v, uint64_t vext,
		       const void *buf, uint64_t s, size_t len)
{
	struct pmember *pm;
	uint64_t pid, base;
	uint64_t *slot;
	int r = take_extent(p, &pid);

	if (r < 0)
		return r;
	pool_member_offset(p, pid, &pm, &base);
	if (!buf || s != 0 || len != p->extent_size)
		r = pm->m->ops->write_zeroes(pm->m, base, p->extent_size);
	if (r == 0 && buf)
		r = vdp_member_write(pm->m, buf, len, base + s);
	atomic_store(&pm->written, true);
	pthread_mutex_lock(&p->meta_lock);
	if (r == 0) {
		/* Map and reference in one hold of meta_lock: a commit sees
		 * both or neither. */
		slot = rtree_slot(&v->data, vext);
		r = slot ? extent_ref(p, pid) : -ENOMEM;
		if (r == 0) {
			*slot = htole64(pid);
			v->d.nalloc++;
			vnode_dirty(p, v);
		}
	} else {
		member_error(p, pm, IO_WRITE, "write", r);
	}
	if (r < 0)
		unalloc_extent(p, pid);
	pthread_mutex_unlock(&p->meta_lock);
	return r;
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
		if ((!pid || is_shared(p, pid)) && !*excl) {
			pthread_rwlock_unlock(&v->io);
			pthread_rwlock_wrlock(&v->io);
			*excl = true;
			pid = map_get(v, vext);
		}
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
		} else if (r == 0) {
			r = alloc_piece(p, v, vext, (const char *)buf + done, s,
					n);
		}
		if (r == 0)
			done += n;
	}
	pthread_mutex_lock(&p->meta_lock);
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

ssize_t vdp_write(struct vdp_pool *p, uint64_t ino, const void *buf, size_t len,
		  uint64_t off)
{
	struct vnode *v;
	ssize_t n;
	bool excl;
	int r = get_file(p, ino, &v);

	if (r == 0)
		r = may_write(p, off, len);
	if (r < 0)
		return r;
	/* Writes that extend the file run alone: they zero the old tail. */
	excl = off + len > file_size(p, v);
	if (excl)
		pthread_rwlock_wrlock(&v->io);
	else
		pthread_rwlock_rdlock(&v->io);
	if (!excl && off + len > file_size(p, v)) { /* shrunk meanwhile */
		pthread_rwlock_unlock(&v->io);
		pthread_rwlock_wrlock(&v->io);
		excl = true;
	}
	n = write_locked(p, v, buf, len, off, &excl);
	pthread_rwlock_unlock(&v->io);
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
	pthread_rwlock_wrlock(&v->io);
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
 * more reference (or a hole).  Under both io locks exclusive.
 */
static int share_extent(struct vdp_pool *p, struct vnode *vi, uint64_t xi,
			struct vnode *vo, uint64_t xo)
{
	uint64_t pid = map_get(vi, xi), old = map_get(vo, xo), *slot;
	int r = 0;

	if (pid == old)
		return 0;
	if (pid && !pid_valid(p, pid))
		return bad_pid(p, pid);
	pthread_mutex_lock(&p->meta_lock);
	if (pid) {
		slot = rtree_slot(&vo->data, xo);
		r = slot ? extent_ref(p, pid) : -ENOMEM;
		if (r == 0) {
			atomic_store(&p->shared, true);
			*slot = htole64(pid);
			if (old)
				r = extent_unref(p, old);
			else
				vo->d.nalloc++;
			vnode_dirty(p, vo);
		}
	} else {
		r = unmap_range(p, vo, xo, xo + 1);
	}
	pthread_mutex_unlock(&p->meta_lock);
	return r;
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
	pthread_rwlock_wrlock(&first->io);
	if (a != b)
		pthread_rwlock_wrlock(&second->io);
}

/*
 * copy_file_range: whole extents that line up in source and destination
 * are shared (a reference more, no data moved) or become holes where the
 * source has holes; the pieces around them are copied, their holes kept as
 * holes.  Both disks are locked exclusive for the call, so no write lands
 * in a source extent between the check and the share.  The destination
 * grows as a write would make it.
 */
ssize_t vdp_copy_range(struct vdp_pool *p, uint64_t ino_in, uint64_t off_in,
		       uint64_t ino_out, uint64_t off_out, size_t len)
{
	const uint64_t e = p->extent_size, sh = p->extent_shift;
	struct vnode *vi, *vo;
	uint64_t size_in;
	size_t done = 0;
	bool excl = true;
	void *buf = NULL;
	int r = get_file(p, ino_in, &vi);

	if (r == 0)
		r = get_file(p, ino_out, &vo);
	if (r == 0)
		r = may_write(p, off_out, len);
	if (r < 0)
		return r;
	lock_pair(vi, vo, true);
	size_in = file_size(p, vi);
	if (off_in >= size_in)
		len = 0;
	else if (len > size_in - off_in)
		len = (size_t)(size_in - off_in);
	if (vi == vo && len && off_in < off_out + len && off_out < off_in + len)
		r = -EINVAL; /* overlapping, as copy_file_range(2) says */
	else if (len && off_out > file_size(p, vo))
		r = zero_tail(p, vo, file_size(p, vo), off_out);
	while (r == 0 && done < len) {
		uint64_t i = off_in + done, o = off_out + done;
		size_t n = len - done;

		if (!(i & (e - 1)) && !(o & (e - 1)) && n >= e) {
			n = (size_t)e;
			r = share_extent(p, vi, i >> sh, vo, o >> sh);
		} else {
			if (n > e - (i & (e - 1)))
				n = (size_t)(e - (i & (e - 1)));
			if (n > e - (o & (e - 1)))
				n = (size_t)(e - (o & (e - 1)));
			if (!map_get(vi, i >> sh)) {
				r = clear_range(p, vo, o, o + n);
			} else {
				if (!buf && posix_memalign(&buf, 4096, e) != 0)
					r = -ENOMEM;
				if (r == 0)
					r = read_piece(p, vi, buf, n, i);
				if (r == 0) {
					ssize_t w = write_locked(p, vo, buf, n,
								 o, &excl);

					r = w < 0 ? (int)w : 0;
					n = w < 0 ? 0 : (size_t)w;
				}
			}
		}
		if (r < 0)
			break;
		done += n;
		pthread_mutex_lock(&p->meta_lock);
		if (off_out + done > vo->d.size)
			vo->d.size = off_out + done;
		pthread_mutex_unlock(&p->meta_lock);
	}
	if (done) {
		pthread_mutex_lock(&p->meta_lock);
		vnode_touch(vo, true, true);
		vnode_dirty(p, vo);
		pthread_mutex_unlock(&p->meta_lock);
	}
	lock_pair(vi, vo, false);
	free(buf);
	return done ? (ssize_t)done : r;
}

int vdp_fsync(struct vdp_pool *p, uint64_t ino, bool datasync)
{
	(void)ino;
	return pool_sync(p, !datasync);
}
