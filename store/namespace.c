/* SPDX-License-Identifier: MIT */
/*
 * namespace.c - directories, names, attributes and user xattrs, kept in
 * the pool itself: inode records in the inode tree, each directory's
 * entries and each inode's xattrs in byte blobs.
 *
 * In memory every inode is a struct vnode and every name a struct dentry
 * (hashed by parent and name); a commit serialises what changed.  An
 * inode is freed when it has no name left and the kernel holds no
 * reference (FUSE lookup counts); one still open at a crash has nlink 0 on
 * disk and is freed by the next writable open.
 *
 * Must never: call back into the caller (readdir's FN) with meta_lock held,
 * or free a vnode the kernel still references.
 */
#include <endian.h>
#include <errno.h>
#include <linux/limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define XATTR_TOTAL_MAX 65536

/* ---- hashing ------------------------------------------------------------ */

static uint64_t mix(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	return x;
}

static uint64_t dhash(uint64_t parent, const char *name)
{
	uint64_t h = mix(parent);

	for (; *name; name++)
		h = (h ^ (unsigned char)*name) * 0x100000001b3ull;
	return mix(h);
}

static int grow(void ***tab, size_t *size, size_t count,
		uint64_t (*key)(const void *), size_t next_off)
{
	size_t ns;
	void **nt;

	if (count < *size)
		return 0;
	ns = *size ? *size * 2 : 256;
	nt = calloc(ns, sizeof(*nt));
	if (!nt)
		return -ENOMEM;
	for (size_t i = 0; i < *size; i++) {
		void *e = (*tab)[i];

		while (e) {
			void **nextp = (void **)((char *)e + next_off);
			void *next = *nextp;
			size_t b = key(e) & (ns - 1);

			*nextp = nt[b];
			nt[b] = e;
			e = next;
		}
	}
	free(*tab);
	*tab = nt;
	*size = ns;
	return 0;
}

static uint64_t vkey(const void *e)
{
	return mix(((const struct vnode *)e)->ino);
}

static uint64_t dkey(const void *e)
{
	const struct dentry *d = e;

	return dhash(d->parent, d->name);
}

struct vnode *vnode_get(struct vdp_pool *p, uint64_t ino)
{
	if (!p->vtab_size)
		return NULL;
	for (struct vnode *v = p->vtab[mix(ino) & (p->vtab_size - 1)]; v;
	     v = v->hnext)
		if (v->ino == ino)
			return v;
	return NULL;
}

static struct dentry *dentry_find(struct vdp_pool *p, uint64_t parent,
				  const char *name)
{
	if (!p->dtab_size)
		return NULL;
	for (struct dentry *d =
		     p->dtab[dhash(parent, name) & (p->dtab_size - 1)];
	     d; d = d->hnext)
		if (d->parent == parent && strcmp(d->name, name) == 0)
			return d;
	return NULL;
}

static void list_dirty(struct vdp_pool *p, struct vnode *v);

void vnode_dirty(struct vdp_pool *p, struct vnode *v)
{
	p->changed = true;
	list_dirty(p, v);
}

void vnode_dirty_times(struct vdp_pool *p, struct vnode *v)
{
	p->times_changed = true;
	list_dirty(p, v);
}

static void list_dirty(struct vdp_pool *p, struct vnode *v)
{
	v->dirty = true;
	if (v->listed)
		return;
	if (p->ndirty == p->dirty_cap) {
		size_t cap = p->dirty_cap ? p->dirty_cap * 2 : 64;
		struct vnode **n = realloc(p->dirty, cap * sizeof(*n));

		if (!n) {
			p->dirty_lost = true; /* ns_commit rescans */
			return;
		}
		p->dirty = n;
		p->dirty_cap = cap;
	}
	p->dirty[p->ndirty++] = v;
	v->listed = true;
}

static void now(struct timespec *ts)
{
	clock_gettime(CLOCK_REALTIME, ts);
}

void vnode_touch(struct vnode *v, bool mtime, bool ctime)
{
	struct timespec ts;

	now(&ts);
	if (mtime) {
		v->d.mtime_sec = ts.tv_sec;
		v->d.mtime_nsec = (uint32_t)ts.tv_nsec;
	}
	if (ctime) {
		v->d.ctime_sec = ts.tv_sec;
		v->d.ctime_nsec = (uint32_t)ts.tv_nsec;
	}
}

static struct vnode *vnode_new(struct vdp_pool *p, uint64_t ino, uint32_t mode)
{
	struct vnode *v;

	if (grow((void ***)&p->vtab, &p->vtab_size, p->nvnodes, vkey,
		 offsetof(struct vnode, hnext)) < 0)
		return NULL;
	v = calloc(1, sizeof(*v));
	if (!v)
		return NULL;
	v->ino = ino;
	v->d.mode = mode;
	if (S_ISDIR(mode))
		rtree_init(&v->data, VDP_TREE_BLOB, VDP_PAYLOAD, ino);
	else
		rtree_init(&v->data, VDP_TREE_MAP, sizeof(uint64_t), ino);
	rtree_init(&v->xblob, VDP_TREE_BLOB, VDP_PAYLOAD, ino);
	v->next_cookie = 2;
	/* Writers first: a disk read or written without pause must not
	 * starve the exclusive holds of copy-on-write, hole filling, clones
	 * and extent moves (nothing takes v->io shared twice). */
	pthread_rwlockattr_t a;
	pthread_rwlockattr_init(&a);
	pthread_rwlockattr_setkind_np(
		&a, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&v->io, &a);
	pthread_rwlockattr_destroy(&a);
	size_t b = mix(ino) & (p->vtab_size - 1);
	v->hnext = p->vtab[b];
	p->vtab[b] = v;
	p->nvnodes++;
	return v;
}

/* Adds NAME -> INO to directory DIR with the next cookie. */
static int dentry_add(struct vdp_pool *p, struct vnode *dir, const char *name,
		      uint64_t ino, uint64_t cookie)
{
	size_t l = strlen(name);
	struct dentry *d;

	if (grow((void ***)&p->dtab, &p->dtab_size, p->ndentries, dkey,
		 offsetof(struct dentry, hnext)) < 0)
		return -ENOMEM;
	d = malloc(sizeof(*d) + l + 1);
	if (!d)
		return -ENOMEM;
	memcpy(d->name, name, l + 1);
	d->parent = dir->ino;
	d->ino = ino;
	d->cookie = cookie ? cookie : dir->next_cookie;
	if (d->cookie >= dir->next_cookie)
		dir->next_cookie = d->cookie + 1;
	d->next = NULL;
	d->prev = dir->dtail;
	if (dir->dtail)
		dir->dtail->next = d;
	else
		dir->dhead = d;
	dir->dtail = d;
	size_t b = dkey(d) & (p->dtab_size - 1);
	d->hnext = p->dtab[b];
	p->dtab[b] = d;
	p->ndentries++;
	dir->d.size += VDP_DIRENT_FIXED + l; /* the blob's length, kept live */
	dir->dir_dirty = true;
	return 0;
}

static void dentry_del(struct vdp_pool *p, struct vnode *dir, struct dentry *d)
{
	struct dentry **pp = &p->dtab[dkey(d) & (p->dtab_size - 1)];

	while (*pp != d)
		pp = &(*pp)->hnext;
	*pp = d->hnext;
	if (d->prev)
		d->prev->next = d->next;
	else
		dir->dhead = d->next;
	if (d->next)
		d->next->prev = d->prev;
	else
		dir->dtail = d->prev;
	p->ndentries--;
	dir->d.size -= VDP_DIRENT_FIXED + strlen(d->name);
	dir->dir_dirty = true;
	free(d);
}

/* ---- on-disk records ---------------------------------------------------- */

static void droot_put(struct vdp_droot *d, const struct vdp_droot *h)
{
	memset(d, 0, sizeof(*d));
	d->addr = htole64(h->addr);
	d->height = h->height;
}

void dinode_to_disk(const struct vdp_dinode *h, struct vdp_dinode *d)
{
	memset(d, 0, sizeof(*d));
	d->mode = htole32(h->mode);
	d->uid = htole32(h->uid);
	d->gid = htole32(h->gid);
	d->nlink = htole32(h->nlink);
	d->size = htole64(h->size);
	d->atime_sec = (int64_t)htole64((uint64_t)h->atime_sec);
	d->mtime_sec = (int64_t)htole64((uint64_t)h->mtime_sec);
	d->ctime_sec = (int64_t)htole64((uint64_t)h->ctime_sec);
	d->atime_nsec = htole32(h->atime_nsec);
	d->mtime_nsec = htole32(h->mtime_nsec);
	d->ctime_nsec = htole32(h->ctime_nsec);
	d->flags = htole32(h->flags);
	d->parent = htole64(h->parent);
	droot_put(&d->data, &h->data);
	droot_put(&d->xattr, &h->xattr);
	d->xattr_len = htole64(h->xattr_len);
	d->nalloc = htole64(h->nalloc);
}

void dinode_from_disk(const struct vdp_dinode *d, struct vdp_dinode *h)
{
	memset(h, 0, sizeof(*h));
	h->mode = le32toh(d->mode);
	h->uid = le32toh(d->uid);
	h->gid = le32toh(d->gid);
	h->nlink = le32toh(d->nlink);
	h->size = le64toh(d->size);
	h->atime_sec = (int64_t)le64toh((uint64_t)d->atime_sec);
	h->mtime_sec = (int64_t)le64toh((uint64_t)d->mtime_sec);
	h->ctime_sec = (int64_t)le64toh((uint64_t)d->ctime_sec);
	h->atime_nsec = le32toh(d->atime_nsec);
	h->mtime_nsec = le32toh(d->mtime_nsec);
	h->ctime_nsec = le32toh(d->ctime_nsec);
	h->flags = le32toh(d->flags);
	h->parent = le64toh(d->parent);
	h->data.addr = le64toh(d->data.addr);
	h->data.height = d->data.height;
	h->xattr.addr = le64toh(d->xattr.addr);
	h->xattr.height = d->xattr.height;
	h->xattr_len = le64toh(d->xattr_len);
	h->nalloc = le64toh(d->nalloc);
}

static uint8_t *blob_read(const struct rtree *t, uint64_t len)
{
	uint8_t *b = malloc(len ? len : 1);

	if (!b)
		return NULL;
	for (uint64_t i = 0; i * VDP_PAYLOAD < len; i++) {
		const uint8_t *leaf = rtree_lookup(t, i);
		uint64_t n = len - i * VDP_PAYLOAD;

		if (n > VDP_PAYLOAD)
			n = VDP_PAYLOAD;
		if (leaf)
			memcpy(b + i * VDP_PAYLOAD, leaf, n);
		else
			memset(b + i * VDP_PAYLOAD, 0, n);
	}
	return b;
}

/* Replaces the blob in T by LEN bytes of B (every leaf rewritten). */
int blob_write(struct vdp_pool *p, struct rtree *t, const uint8_t *b,
	       uint64_t len)
{
	rtree_release(p, t);
	for (uint64_t i = 0; i * VDP_PAYLOAD < len; i++) {
		uint8_t *leaf = rtree_slot(t, i);
		uint64_t n = len - i * VDP_PAYLOAD;

		if (!leaf)
			return -ENOMEM;
		memcpy(leaf, b + i * VDP_PAYLOAD,
		       n > VDP_PAYLOAD ? VDP_PAYLOAD : n);
	}
	return 0;
}

static int dir_serialize(struct vnode *dir, uint8_t **out, uint64_t *len)
{
	uint64_t n = 0, o = 0;
	uint8_t *b;

	for (struct dentry *d = dir->dhead; d; d = d->next)
		n += VDP_DIRENT_FIXED + strlen(d->name);
	b = malloc(n ? n : 1);
	if (!b)
		return -ENOMEM;
	for (struct dentry *d = dir->dhead; d; d = d->next) {
		uint64_t ino = htole64(d->ino), ck = htole64(d->cookie);
		uint16_t l = htole16((uint16_t)strlen(d->name));

		memcpy(b + o, &ino, 8);
		memcpy(b + o + 8, &ck, 8);
		memcpy(b + o + 16, &l, 2);
		b[o + 18] = 0;
		memcpy(b + o + VDP_DIRENT_FIXED, d->name, strlen(d->name));
		o += VDP_DIRENT_FIXED + strlen(d->name);
	}
	*out = b;
	*len = n;
	return 0;
}

static int dir_parse(struct vdp_pool *p, struct vnode *dir, const uint8_t *b,
		     uint64_t len)
{
	uint64_t o = 0, last = 1; /* cookies 0 and 1 are "." and ".." */

	while (o < len) {
		uint64_t ino, ck;
		uint16_t l;
		char name[VDP_NAME_MAX + 1];
		int r;

		if (len - o < VDP_DIRENT_FIXED)
			goto bad;
		memcpy(&ino, b + o, 8);
		memcpy(&ck, b + o + 8, 8);
		memcpy(&l, b + o + 16, 2);
		l = le16toh(l);
		ck = le64toh(ck);
		if (l == 0 || l > VDP_NAME_MAX ||
		    len - o - VDP_DIRENT_FIXED < l)
			goto bad;
		/* Entries are stored in cookie order, and readdir resumes
		 * at cookie + 1: increasing, and never the last u64. */
		if (ck <= last || ck == UINT64_MAX)
			goto bad;
		last = ck;
		memcpy(name, b + o + VDP_DIRENT_FIXED, l);
		name[l] = 0;
		if (memchr(name, '/', l) || memchr(name, 0, l) ||
		    strcmp(name, ".") == 0 || strcmp(name, "..") == 0 ||
		    dentry_find(p, dir->ino, name))
			goto bad;
		r = dentry_add(p, dir, name, le64toh(ino), ck);
		if (r < 0)
			return r;
		o += VDP_DIRENT_FIXED + l;
	}
	dir->dir_dirty = false;
	return 0;
bad:
	vdp_set_error("directory inode %llu: entry at byte %llu is malformed",
		      (unsigned long long)dir->ino, (unsigned long long)o);
	return -EUCLEAN;
}

/* ---- load, commit, free ------------------------------------------------- */

static void vnode_unhash(struct vdp_pool *p, struct vnode *v)
{
	struct vnode **pp = &p->vtab[mix(v->ino) & (p->vtab_size - 1)];

	while (*pp != v)
		pp = &(*pp)->hnext;
	*pp = v->hnext;
	p->nvnodes--;
	if (v->listed)
		for (size_t i = 0; i < p->ndirty; i++)
			if (p->dirty[i] == v) {
				p->dirty[i] = p->dirty[--p->ndirty];
				break;
			}
}

static void vnode_mem_free(struct vnode *v)
{
	rtree_destroy(&v->data);
	rtree_destroy(&v->xblob);
	free(v->xattrs);
	share_vnode_free(v);
	pthread_rwlock_destroy(&v->io);
	free(v);
}

/* Frees inode V for good: its extents, its blocks and its record. */
static void vnode_delete(struct vdp_pool *p, struct vnode *v)
{
	struct vdp_dinode *slot;

	if (S_ISREG(v->d.mode))
		vdisk_release_all(p, v);
	rtree_release(p, &v->data);
	rtree_release(p, &v->xblob);
	slot = rtree_slot(&p->inodes, v->ino);
	if (slot)
		memset(slot, 0, sizeof(*slot));
	p->changed = true;
	vnode_unhash(p, v);
	vnode_mem_free(v);
}

static void maybe_delete(struct vdp_pool *p, struct vnode *v)
{
	if (v->d.nlink == 0 && v->nlookup == 0)
		vnode_delete(p, v);
}

/* Whether V's xattr blob is what the xattr calls walk without further
 * checks: whole entries, each name 1..XATTR_NAME_MAX bytes without a NUL,
 * nothing left over. */
static int xattrs_check(const struct vnode *v)
{
	uint64_t o = 0, len = v->d.xattr_len;

	while (o < len) {
		uint16_t l;
		uint32_t vl;

		if (len - o < VDP_XATTR_FIXED)
			goto bad;
		memcpy(&l, v->xattrs + o, 2);
		memcpy(&vl, v->xattrs + o + 2, 4);
		l = le16toh(l);
		vl = le32toh(vl);
		if (l == 0 || l > XATTR_NAME_MAX ||
		    len - o - VDP_XATTR_FIXED < (uint64_t)l + vl ||
		    memchr(v->xattrs + o + VDP_XATTR_FIXED, 0, l))
			goto bad;
		o += VDP_XATTR_FIXED + (uint64_t)l + vl;
	}
	return 0;
bad:
	vdp_set_error("inode %llu: xattr entry at byte %llu is malformed",
		      (unsigned long long)v->ino, (unsigned long long)o);
	return -EUCLEAN;
}

static int count_leaf(void *ctx, const struct rnode *n, uint64_t base)
{
	(void)base;
	if (n->level == 0)
		(*(uint64_t *)ctx)++;
	return 0;
}

struct load_ctx {
	struct vdp_pool *p;
	int err;
};

static int load_leaf(void *arg, const struct rnode *n, uint64_t base)
{
	struct load_ctx *c = arg;
	struct vdp_pool *p = c->p;
	const struct vdp_dinode *di = (const struct vdp_dinode *)n->data;

	if (n->level != 0)
		return 0;
	for (unsigned i = 0; i < VDP_INODES_PER_LEAF; i++) {
		struct vdp_dinode h;
		struct vnode *v;
		int r;

		if (di[i].mode == 0)
			continue;
		dinode_from_disk(&di[i], &h);
		if (!S_ISREG(h.mode) && !S_ISDIR(h.mode)) {
			vdp_set_error("inode %llu has unsupported mode %o",
				      (unsigned long long)(base + i), h.mode);
			return -EUCLEAN;
		}
		v = vnode_new(p, base + i, h.mode);
		if (!v)
			return -ENOMEM;
		v->d = h;
		r = rtree_load(p, &v->data, &h.data);
		if (r == 0)
			r = rtree_load(p, &v->xblob, &h.xattr);
		if (r == 0 && h.xattr_len > XATTR_TOTAL_MAX)
			r = -EUCLEAN;
		if (r == 0 && h.xattr_len) {
			v->xattrs = blob_read(&v->xblob, h.xattr_len);
			r = v->xattrs ? xattrs_check(v) : -ENOMEM;
		}
		if (r < 0)
			return r;
	}
	return 0;
}

int ns_load(struct vdp_pool *p)
{
	struct load_ctx c = {.p = p};
	struct vnode *root;
	int r;

	r = rtree_visit(&p->inodes, load_leaf, &c);
	if (r < 0)
		return r;
	root = vnode_get(p, VDP_ROOT_INO);
	if (!root || !S_ISDIR(root->d.mode)) {
		vdp_set_error("pool %s: root directory inode is missing",
			      p->name);
		return -EUCLEAN;
	}
	/* Directory entries, once every inode exists. */
	for (size_t b = 0; b < p->vtab_size; b++)
		for (struct vnode *v = p->vtab[b]; v; v = v->hnext) {
			uint8_t *blob;

			if (!S_ISDIR(v->d.mode))
				continue;
			uint64_t len = v->d.size, leaves = 0;

			/* The size comes from disk: no more than the blob's
			 * leaves hold, or it could ask for any memory. */
			rtree_visit(&v->data, count_leaf, &leaves);
			if (len > leaves * VDP_PAYLOAD) {
				vdp_set_error("directory inode %llu: size %llu "
					      "is more than its %llu blocks "
					      "hold",
					      (unsigned long long)v->ino,
					      (unsigned long long)len,
					      (unsigned long long)leaves);
				return -EUCLEAN;
			}
			blob = blob_read(&v->data, len);
			if (!blob)
				return -ENOMEM;
			v->d.size = 0; /* dentry_add counts it up again */
			r = dir_parse(p, v, blob, len);
			free(blob);
			if (r < 0)
				return r;
		}
	for (size_t b = 0; b < p->dtab_size; b++)
		for (struct dentry *d = p->dtab[b]; d; d = d->hnext)
			if (!vnode_get(p, d->ino)) {
				vdp_set_error("directory inode %llu: entry "
					      "'%s' names missing inode %llu",
					      (unsigned long long)d->parent,
					      d->name,
					      (unsigned long long)d->ino);
				return -EUCLEAN;
			}
	if (p->rdonly)
		return 0;
	/* Orphans: unlinked while open when the pool last went down. */
	for (size_t b = 0; b < p->vtab_size; b++) {
		struct vnode *v = p->vtab[b];

		while (v) {
			struct vnode *next = v->hnext;

			if (v->d.nlink == 0)
				vnode_delete(p, v);
			v = next;
		}
	}
	return 0;
}

int ns_init_root(struct vdp_pool *p)
{
	struct vnode *v = vnode_new(p, VDP_ROOT_INO, S_IFDIR | 0755);

	if (!v)
		return -ENOMEM;
	v->d.nlink = 2;
	v->d.parent = VDP_ROOT_INO;
	v->d.uid = (uint32_t)getuid();
	v->d.gid = (uint32_t)getgid();
	vnode_touch(v, true, true);
	v->d.atime_sec = v->d.mtime_sec;
	v->d.atime_nsec = v->d.mtime_nsec;
	v->dir_dirty = true;
	p->next_ino = VDP_ROOT_INO + 1;
	vnode_dirty(p, v);
	return 0;
}

void ns_free(struct vdp_pool *p)
{
	for (size_t b = 0; b < p->dtab_size; b++)
		for (struct dentry *d = p->dtab[b], *n; d; d = n) {
			n = d->hnext;
			free(d);
		}
	for (size_t b = 0; b < p->vtab_size; b++)
		for (struct vnode *v = p->vtab[b], *n; v; v = n) {
			n = v->hnext;
			vnode_mem_free(v);
		}
	free(p->dtab);
	free(p->vtab);
	free(p->dirty);
	p->dtab = NULL;
	p->vtab = NULL;
	p->dirty = NULL;
	p->dtab_size = p->vtab_size = p->ndirty = p->dirty_cap = 0;
}

static int vnode_commit(struct vdp_pool *p, struct vnode *v)
{
	struct vdp_dinode *slot;
	int r = 0;

	if (v->dir_dirty) {
		uint8_t *b;
		uint64_t len;

		r = dir_serialize(v, &b, &len);
		if (r < 0)
			return r;
		r = blob_write(p, &v->data, b, len);
		free(b);
		if (r < 0)
			return r;
		v->dir_dirty = false;
	}
	if (v->xdirty) {
		r = blob_write(p, &v->xblob, v->xattrs, v->d.xattr_len);
		if (r < 0)
			return r;
		v->xdirty = false;
	}
	r = rtree_commit(p, &v->data, &v->d.data);
	if (r == 0)
		r = rtree_commit(p, &v->xblob, &v->d.xattr);
	if (r < 0)
		return r;
	slot = rtree_slot(&p->inodes, v->ino);
	if (!slot)
		return -ENOMEM;
	dinode_to_disk(&v->d, slot);
	v->dirty = false;
	return 0;
}

int ns_commit(struct vdp_pool *p)
{
	int r = 0;

	for (size_t i = 0; i < p->ndirty && r == 0; i++) {
		p->dirty[i]->listed = false;
		r = vnode_commit(p, p->dirty[i]);
	}
	p->ndirty = 0;
	if (!p->dirty_lost || r < 0)
		return r;
	/* A vnode that could not be listed (ENOMEM) is still dirty. */
	p->dirty_lost = false;
	for (size_t b = 0; b < p->vtab_size && r == 0; b++)
		for (struct vnode *v = p->vtab[b]; v && r == 0; v = v->hnext)
			if (v->dirty || v->dir_dirty || v->xdirty ||
			    rtree_dirty(&v->data))
				r = vnode_commit(p, v);
	return r;
}

/* ---- attributes --------------------------------------------------------- */

static void fill_attr(const struct vdp_pool *p, const struct vnode *v,
		      struct vdp_attr *a)
{
	memset(a, 0, sizeof(*a));
	a->ino = v->ino;
	a->size = v->d.size;
	a->mode = v->d.mode;
	a->uid = v->d.uid;
	a->gid = v->d.gid;
	a->nlink = v->d.nlink;
	a->atime.tv_sec = v->d.atime_sec;
	a->atime.tv_nsec = v->d.atime_nsec;
	a->mtime.tv_sec = v->d.mtime_sec;
	a->mtime.tv_nsec = v->d.mtime_nsec;
	a->ctime.tv_sec = v->d.ctime_sec;
	a->ctime.tv_nsec = v->d.ctime_nsec;
	a->blksize = (uint32_t)p->extent_size;
	if (S_ISREG(v->d.mode)) {
		/* Real allocation, but never more than the size (rounded to
		 * 512): tools take st_blocks * 512 > size as "dense" and
		 * libvirt even uses it as a length. */
		uint64_t alloc = v->d.nalloc << p->extent_shift;
		uint64_t cap = (v->d.size + 511) & ~511ull;

		a->blocks = (alloc < cap ? alloc : cap) / 512;
	} else {
		a->blocks = (v->d.size + 511) / 512;
	}
}

int vdp_getattr(struct vdp_pool *p, uint64_t ino, struct vdp_attr *out)
{
	struct vnode *v;
	int r = -ENOENT;

	pthread_mutex_lock(&p->meta_lock);
	v = vnode_get(p, ino);
	if (v) {
		fill_attr(p, v, out);
		r = 0;
	}
	pthread_mutex_unlock(&p->meta_lock);
	return r;
}

int vdp_lookup(struct vdp_pool *p, uint64_t parent, const char *name,
	       struct vdp_attr *out)
{
	struct dentry *d;
	struct vnode *v, *dir;
	int r = 0;

	pthread_mutex_lock(&p->meta_lock);
	dir = vnode_get(p, parent);
	if (!dir || !S_ISDIR(dir->d.mode)) {
		r = dir ? -ENOTDIR : -ENOENT;
		goto out;
	}
	if (strcmp(name, ".") == 0)
		v = dir;
	else if (strcmp(name, "..") == 0)
		v = vnode_get(p, dir->d.parent);
	else
		v = (d = dentry_find(p, parent, name)) ? vnode_get(p, d->ino)
						       : NULL;
	if (!v) {
		r = -ENOENT;
		goto out;
	}
	v->nlookup++;
	fill_attr(p, v, out);
out:
	pthread_mutex_unlock(&p->meta_lock);
	return r;
}

void vdp_forget(struct vdp_pool *p, uint64_t ino, uint64_t n)
{
	struct vnode *v;

	pthread_mutex_lock(&p->meta_lock);
	v = vnode_get(p, ino);
	if (v && ino != VDP_ROOT_INO) {
		v->nlookup = v->nlookup > n ? v->nlookup - n : 0;
		if (!p->rdonly)
			maybe_delete(p, v);
	}
	pthread_mutex_unlock(&p->meta_lock);
}

static bool writable(struct vdp_pool *p)
{
	if (p->rdonly)
		return false;
	if (p->failed)
		return false;
	return true;
}

int vdp_setattr(struct vdp_pool *p, uint64_t ino, const struct vdp_attr *in,
		unsigned to_set, struct vdp_attr *out)
{
	struct vnode *v;
	int r = 0;

	pthread_mutex_lock(&p->meta_lock);
	v = vnode_get(p, ino);
	pthread_mutex_unlock(&p->meta_lock);
	if (!v)
		return -ENOENT;
	if (!writable(p))
		return p->rdonly ? -EROFS : -EIO;
	if (to_set & VDP_SET_SIZE) {
		if (S_ISDIR(v->d.mode))
			return -EISDIR;
		if (in->size > vdisk_max_size(p))
			return -EFBIG;
		vnode_lock_excl(v);
		r = vdisk_truncate(p, v, in->size);
		pthread_rwlock_unlock(&v->io);
		if (r < 0)
			return r;
	}
	pthread_mutex_lock(&p->meta_lock);
	if (to_set & VDP_SET_MODE)
		v->d.mode = (v->d.mode & S_IFMT) | (in->mode & 07777);
	if (to_set & VDP_SET_UID)
		v->d.uid = in->uid;
	if (to_set & VDP_SET_GID)
		v->d.gid = in->gid;
	if (to_set & VDP_SET_ATIME_NOW) {
		struct timespec ts;

		now(&ts);
		v->d.atime_sec = ts.tv_sec;
		v->d.atime_nsec = (uint32_t)ts.tv_nsec;
	} else if (to_set & VDP_SET_ATIME) {
		v->d.atime_sec = in->atime.tv_sec;
		v->d.atime_nsec = (uint32_t)in->atime.tv_nsec;
	}
	if (to_set & VDP_SET_MTIME_NOW) {
		vnode_touch(v, true, false);
	} else if (to_set & VDP_SET_MTIME) {
		v->d.mtime_sec = in->mtime.tv_sec;
		v->d.mtime_nsec = (uint32_t)in->mtime.tv_nsec;
	}
	vnode_touch(v, false, true);
	if (to_set & VDP_SET_CTIME) {
		v->d.ctime_sec = in->ctime.tv_sec;
		v->d.ctime_nsec = (uint32_t)in->ctime.tv_nsec;
	}
	vnode_dirty(p, v);
	if (out)
		fill_attr(p, v, out);
	pthread_mutex_unlock(&p->meta_lock);
	return 0;
}

static int name_check(const char *name)
{
	size_t l = strlen(name);

	if (l == 0 || strchr(name, '/'))
		return -EINVAL;
	if (l > VDP_NAME_MAX)
		return -ENAMETOOLONG;
	if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
		return -EEXIST;
	return 0;
}

/* Directory PARENT for a change, with meta_lock held. */
static int dir_for_change(struct vdp_pool *p, uint64_t parent,
			  struct vnode **out)
{
	struct vnode *dir = vnode_get(p, parent);

	if (!dir)
		return -ENOENT;
	if (!S_ISDIR(dir->d.mode))
		return -ENOTDIR;
	if (!writable(p))
		return p->rdonly ? -EROFS : -EIO;
	*out = dir;
	return 0;
}

int vdp_create(struct vdp_pool *p, uint64_t parent, const char *name,
	       uint32_t mode, uint32_t uid, uint32_t gid, struct vdp_attr *out)
{
	struct vnode *dir, *v;
	int r = name_check(name);

	if (r < 0)
		return r;
	if (!S_ISREG(mode) && !S_ISDIR(mode))
		return -EOPNOTSUPP;
	pthread_mutex_lock(&p->meta_lock);
	r = dir_for_change(p, parent, &dir);
	if (r < 0)
		goto out;
	if (dentry_find(p, parent, name)) {
		r = -EEXIST;
		goto out;
	}
	/* Past any live inode a damaged next_ino would hand out again (check
	 * reports such a next_ino, repair raises it). */
	while (vnode_get(p, p->next_ino))
		p->next_ino++;
	v = vnode_new(p, p->next_ino, mode);
	if (!v) {
		r = -ENOMEM;
		goto out;
	}
	r = dentry_add(p, dir, name, v->ino, 0);
	if (r < 0) {
		vnode_unhash(p, v);
		vnode_mem_free(v);
		goto out;
	}
	p->next_ino++;
	v->d.uid = uid;
	v->d.gid = gid;
	if (dir->d.mode & S_ISGID) { /* BSD group semantics, as ext4 */
		v->d.gid = dir->d.gid;
		if (S_ISDIR(mode))
			v->d.mode |= S_ISGID;
	}
	vnode_touch(v, true, true);
	v->d.atime_sec = v->d.mtime_sec;
	v->d.atime_nsec = v->d.mtime_nsec;
	if (S_ISDIR(mode)) {
		v->d.nlink = 2;
		v->d.parent = parent;
		v->dir_dirty = true;
		dir->d.nlink++;
	} else {
		v->d.nlink = 1;
	}
	v->nlookup = 1;
	vnode_touch(dir, true, true);
	vnode_dirty(p, dir);
	vnode_dirty(p, v);
	fill_attr(p, v, out);
out:
	pthread_mutex_unlock(&p->meta_lock);
	return r;
}

static int remove_name(struct vdp_pool *p, uint64_t parent, const char *name,
		       bool want_dir)
{
	struct vnode *dir, *v;
	struct dentry *d;
	int r;

	pthread_mutex_lock(&p->meta_lock);
	r = dir_for_change(p, parent, &dir);
	if (r < 0)
		goto out;
	d = dentry_find(p, parent, name);
	v = d ? vnode_get(p, d->ino) : NULL;
	if (!v) {
		r = -ENOENT;
		goto out;
	}
	if (want_dir && !S_ISDIR(v->d.mode)) {
		r = -ENOTDIR;
		goto out;
	}
	if (!want_dir && S_ISDIR(v->d.mode)) {
		r = -EISDIR;
		goto out;
	}
	if (want_dir && v->dhead) {
		r = -ENOTEMPTY;
		goto out;
	}
	dentry_del(p, dir, d);
	if (want_dir) {
		dir->d.nlink--;
		v->d.nlink = 0;
	} else {
		v->d.nlink--;
	}
	vnode_touch(dir, true, true);
	vnode_touch(v, false, true);
	vnode_dirty(p, dir);
	vnode_dirty(p, v);
	maybe_delete(p, v);
out:
	pthread_mutex_unlock(&p->meta_lock);
	return r;
}

int vdp_unlink(struct vdp_pool *p, uint64_t parent, const char *name)
{
	return remove_name(p, parent, name, false);
}

int vdp_rmdir(struct vdp_pool *p, uint64_t parent, const char *name)
{
	return remove_name(p, parent, name, true);
}

/* True if directory ANC is DIR or one of its ancestors. */
static bool is_ancestor(struct vdp_pool *p, uint64_t anc, uint64_t dir)
{
	for (unsigned depth = 0; depth < 4096; depth++) {
		struct vnode *v;

		if (dir == anc)
			return true;
		if (dir == VDP_ROOT_INO)
			return false;
		v = vnode_get(p, dir);
		if (!v)
			return false;
		dir = v->d.parent;
	}
	return true;
}

int vdp_rename(struct vdp_pool *p, uint64_t parent, const char *name,
	       uint64_t newparent, const char *newname, unsigned flags)
{
	struct vnode *sdir, *ddir, *sv, *dv = NULL;
	struct dentry *sd, *dd;
	int r = name_check(newname);

	if (r < 0)
		return r;
	if ((flags & ~(VDP_RENAME_NOREPLACE | VDP_RENAME_EXCHANGE)) ||
	    (flags & VDP_RENAME_NOREPLACE && flags & VDP_RENAME_EXCHANGE))
		return -EINVAL;
	pthread_mutex_lock(&p->meta_lock);
	r = dir_for_change(p, parent, &sdir);
	if (r == 0)
		r = dir_for_change(p, newparent, &ddir);
	if (r < 0)
		goto out;
	sd = dentry_find(p, parent, name);
	sv = sd ? vnode_get(p, sd->ino) : NULL;
	if (!sv) {
		r = -ENOENT;
		goto out;
	}
	dd = dentry_find(p, newparent, newname);
	if (dd)
		dv = vnode_get(p, dd->ino);
	if (dd && flags & VDP_RENAME_NOREPLACE) {
		r = -EEXIST;
		goto out;
	}
	if (!dd && flags & VDP_RENAME_EXCHANGE) {
		r = -ENOENT;
		goto out;
	}
	if (dv == sv) /* same inode: nothing to do */
		goto out;
	if (S_ISDIR(sv->d.mode) && is_ancestor(p, sv->ino, newparent)) {
		r = -EINVAL;
		goto out;
	}
	if (flags & VDP_RENAME_EXCHANGE) {
		if (S_ISDIR(dv->d.mode) && is_ancestor(p, dv->ino, parent)) {
			r = -EINVAL;
			goto out;
		}
		sd->ino = dv->ino;
		dd->ino = sv->ino;
		if (parent != newparent) {
			if (S_ISDIR(sv->d.mode)) {
				sv->d.parent = newparent;
				sdir->d.nlink--;
				ddir->d.nlink++;
			}
			if (S_ISDIR(dv->d.mode)) {
				dv->d.parent = parent;
				ddir->d.nlink--;
				sdir->d.nlink++;
			}
		}
		sdir->dir_dirty = ddir->dir_dirty = true;
		vnode_touch(dv, false, true);
		vnode_dirty(p, dv);
	} else {
		if (dv) {
			if (S_ISDIR(dv->d.mode) && !S_ISDIR(sv->d.mode)) {
				r = -EISDIR;
				goto out;
			}
			if (!S_ISDIR(dv->d.mode) && S_ISDIR(sv->d.mode)) {
				r = -ENOTDIR;
				goto out;
			}
			if (S_ISDIR(dv->d.mode) && dv->dhead) {
				r = -ENOTEMPTY;
				goto out;
			}
		}
		r = dentry_add(p, ddir, newname, sv->ino, 0);
		if (r < 0)
			goto out;
		if (dv) {
			/* The new entry was appended; drop the old one. */
			dentry_del(p, ddir, dd);
			if (S_ISDIR(dv->d.mode)) {
				ddir->d.nlink--;
				dv->d.nlink = 0;
			} else {
				dv->d.nlink--;
			}
			vnode_touch(dv, false, true);
			vnode_dirty(p, dv);
		}
		dentry_del(p, sdir, sd);
		if (S_ISDIR(sv->d.mode) && parent != newparent) {
			sv->d.parent = newparent;
			sdir->d.nlink--;
			ddir->d.nlink++;
		}
	}
	vnode_touch(sv, false, true);
	vnode_touch(sdir, true, true);
	vnode_touch(ddir, true, true);
	vnode_dirty(p, sv);
	vnode_dirty(p, sdir);
	vnode_dirty(p, ddir);
	if (dv && !(flags & VDP_RENAME_EXCHANGE))
		maybe_delete(p, dv);
out:
	pthread_mutex_unlock(&p->meta_lock);
	return r;
}

/* ---- readdir ------------------------------------------------------------ */

#define READDIR_BATCH 128

struct rd_ent {
	char name[VDP_NAME_MAX + 1];
	struct vdp_attr attr;
	uint64_t next;
};

int vdp_readdir(struct vdp_pool *p, uint64_t ino, uint64_t cookie,
		vdp_dirent_fn fn, void *ctx)
{
	struct rd_ent *batch = malloc(READDIR_BATCH * sizeof(*batch));
	int r = 0;

	if (!batch)
		return -ENOMEM;
	for (;;) {
		struct vnode *dir, *v;
		size_t n = 0;

		pthread_mutex_lock(&p->meta_lock);
		dir = vnode_get(p, ino);
		if (!dir || !S_ISDIR(dir->d.mode)) {
			pthread_mutex_unlock(&p->meta_lock);
			r = dir ? -ENOTDIR : -ENOENT;
			break;
		}
		if (cookie == 0) {
			strcpy(batch[n].name, ".");
			fill_attr(p, dir, &batch[n].attr);
			batch[n++].next = 1;
		}
		if (cookie <= 1 && (v = vnode_get(p, dir->d.parent))) {
			strcpy(batch[n].name, "..");
			fill_attr(p, v, &batch[n].attr);
			batch[n++].next = 2;
		}
		for (struct dentry *d = dir->dhead; d && n < READDIR_BATCH;
		     d = d->next) {
			if (d->cookie < cookie || !(v = vnode_get(p, d->ino)))
				continue;
			strcpy(batch[n].name, d->name);
			fill_attr(p, v, &batch[n].attr);
			batch[n++].next = d->cookie + 1;
		}
		pthread_mutex_unlock(&p->meta_lock);
		if (n == 0)
			break;
		for (size_t i = 0; i < n; i++) {
			if (fn(ctx, batch[i].name, &batch[i].attr,
			       batch[i].next)) {
				free(batch);
				return 0;
			}
			cookie = batch[i].next;
		}
		if (n < READDIR_BATCH)
			break;
	}
	free(batch);
	return r;
}

static int walk_dir(struct vdp_pool *p, struct vnode *dir, char *path,
		    size_t len, unsigned depth, ns_file_fn fn, void *ctx)
{
	int r = 0;

	if (depth > 1024)
		return -ELOOP;
	for (struct dentry *d = dir->dhead; d && r == 0; d = d->next) {
		struct vnode *v = vnode_get(p, d->ino);
		size_t l = strlen(d->name);

		if (!v || len + l + 2 > 4096)
			continue;
		/* Each directory once: a damaged namespace may name one
		 * twice or in a cycle, and walking it again each time would
		 * take exponential time. */
		if (S_ISDIR(v->d.mode) && v->walk_gen == p->walk_gen)
			continue;
		path[len] = '/';
		memcpy(path + len + 1, d->name, l + 1);
		if (S_ISDIR(v->d.mode)) {
			v->walk_gen = p->walk_gen;
			r = walk_dir(p, v, path, len + l + 1, depth + 1, fn,
				     ctx);
		} else {
			r = fn(ctx, path, v);
		}
		path[len] = 0;
	}
	return r;
}

int ns_walk_files(struct vdp_pool *p, ns_file_fn fn, void *ctx)
{
	struct vnode *root = vnode_get(p, VDP_ROOT_INO);
	char path[4096] = "";

	if (!root)
		return 0;
	root->walk_gen = ++p->walk_gen;
	return walk_dir(p, root, path, 0, 0, fn, ctx);
}

/* ---- xattrs ------------------------------------------------------------- */

/* Offset of NAME's entry in V's xattrs, or -1. */
static long xfind(const struct vnode *v, const char *name, uint32_t *vlen)
{
	size_t nl = strlen(name);
	uint64_t o = 0;

	while (o + VDP_XATTR_FIXED <= v->d.xattr_len) {
		uint16_t l;
		uint32_t vl;

		memcpy(&l, v->xattrs + o, 2);
		memcpy(&vl, v->xattrs + o + 2, 4);
		l = le16toh(l);
		vl = le32toh(vl);
		if (l == nl &&
		    memcmp(v->xattrs + o + VDP_XATTR_FIXED, name, nl) == 0) {
			*vlen = vl;
			return (long)o;
		}
		o += VDP_XATTR_FIXED + l + vl;
	}
	return -1;
}

static int xattr_ns_ok(const char *name)
{
	if (strncmp(name, "user.", 5) != 0)
		return -EOPNOTSUPP;
	if (strlen(name) > XATTR_NAME_MAX)
		return -ERANGE;
	return 0;
}

static void xremove_at(struct vnode *v, long o, uint32_t vl)
{
	uint16_t l;
	size_t n;

	memcpy(&l, v->xattrs + o, 2);
	n = VDP_XATTR_FIXED + le16toh(l) + vl;
	memmove(v->xattrs + o, v->xattrs + o + n, v->d.xattr_len - o - n);
	v->d.xattr_len -= n;
}

int vdp_setxattr(struct vdp_pool *p, uint64_t ino, const char *name,
		 const void *value, size_t size, int flags)
{
	struct vnode *v;
	uint32_t vl;
	long o;
	int r = xattr_ns_ok(name);

	if (r < 0)
		return r;
	if (size > XATTR_SIZE_MAX)
		return -E2BIG;
	pthread_mutex_lock(&p->meta_lock);
	v = vnode_get(p, ino);
	if (!v) {
		r = -ENOENT;
		goto out;
	}
	if (!writable(p)) {
		r = p->rdonly ? -EROFS : -EIO;
		goto out;
	}
	o = xfind(v, name, &vl);
	if (o >= 0 && (flags & XATTR_CREATE)) {
		r = -EEXIST;
		goto out;
	}
	if (o < 0 && (flags & XATTR_REPLACE)) {
		r = -ENODATA;
		goto out;
	}
	size_t nl = strlen(name), need = VDP_XATTR_FIXED + nl + size;
	uint64_t keep =
		v->d.xattr_len - (o >= 0 ? VDP_XATTR_FIXED + nl + vl : 0);

	if (keep + need > XATTR_TOTAL_MAX) {
		r = -ENOSPC;
		goto out;
	}
	uint8_t *nb = realloc(v->xattrs, keep + need);
	if (!nb) {
		r = -ENOMEM;
		goto out;
	}
	v->xattrs = nb;
	if (o >= 0)
		xremove_at(v, o, vl);
	uint16_t l16 = htole16((uint16_t)nl);
	uint32_t v32 = htole32((uint32_t)size);
	uint8_t *e = v->xattrs + v->d.xattr_len;

	memcpy(e, &l16, 2);
	memcpy(e + 2, &v32, 4);
	memcpy(e + VDP_XATTR_FIXED, name, nl);
	memcpy(e + VDP_XATTR_FIXED + nl, value, size);
	v->d.xattr_len += need;
	v->xdirty = true;
	vnode_touch(v, false, true);
	vnode_dirty(p, v);
out:
	pthread_mutex_unlock(&p->meta_lock);
	return r;
}

ssize_t vdp_getxattr(struct vdp_pool *p, uint64_t ino, const char *name,
		     void *buf, size_t size)
{
	struct vnode *v;
	uint32_t vl;
	ssize_t r = xattr_ns_ok(name);
	long o;

	if (r < 0)
		return r == -EOPNOTSUPP ? -ENODATA : r;
	pthread_mutex_lock(&p->meta_lock);
	v = vnode_get(p, ino);
	if (!v) {
		r = -ENOENT;
	} else if ((o = xfind(v, name, &vl)) < 0) {
		r = -ENODATA;
	} else if (size == 0) {
		r = vl;
	} else if (size < vl) {
		r = -ERANGE;
	} else {
		memcpy(buf, v->xattrs + o + VDP_XATTR_FIXED + strlen(name), vl);
		r = vl;
	}
	pthread_mutex_unlock(&p->meta_lock);
	return r;
}

ssize_t vdp_listxattr(struct vdp_pool *p, uint64_t ino, char *buf, size_t size)
{
	struct vnode *v;
	size_t need = 0;
	ssize_t r;

	pthread_mutex_lock(&p->meta_lock);
	v = vnode_get(p, ino);
	if (!v) {
		pthread_mutex_unlock(&p->meta_lock);
		return -ENOENT;
	}
	for (int pass = 0; pass < 2; pass++) {
		uint64_t o = 0;
		size_t at = 0;

		while (o + VDP_XATTR_FIXED <= v->d.xattr_len) {
			uint16_t l;
			uint32_t vl;

			memcpy(&l, v->xattrs + o, 2);
			memcpy(&vl, v->xattrs + o + 2, 4);
			l = le16toh(l);
			if (pass == 1) {
				memcpy(buf + at,
				       v->xattrs + o + VDP_XATTR_FIXED, l);
				buf[at + l] = 0;
			}
			at += l + 1u;
			o += VDP_XATTR_FIXED + l + le32toh(vl);
		}
		need = at;
		if (size == 0 || size < need)
			break;
	}
	r = size == 0 ? (ssize_t)need : size < need ? -ERANGE : (ssize_t)need;
	pthread_mutex_unlock(&p->meta_lock);
	return r;
}

int vdp_removexattr(struct vdp_pool *p, uint64_t ino, const char *name)
{
	struct vnode *v;
	uint32_t vl;
	long o;
	int r = xattr_ns_ok(name);

	if (r < 0)
		return r == -EOPNOTSUPP ? -ENODATA : r;
	pthread_mutex_lock(&p->meta_lock);
	v = vnode_get(p, ino);
	if (!v) {
		r = -ENOENT;
	} else if (!writable(p)) {
		r = p->rdonly ? -EROFS : -EIO;
	} else if ((o = xfind(v, name, &vl)) < 0) {
		r = -ENODATA;
	} else {
		xremove_at(v, o, vl);
		v->xdirty = true;
		vnode_touch(v, false, true);
		vnode_dirty(p, v);
	}
	pthread_mutex_unlock(&p->meta_lock);
	return r;
}
