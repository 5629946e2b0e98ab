/* SPDX-License-Identifier: MIT */
/*
 * check.c - `vdpool check`: verification of a pool opened read-only.
 *
 * Opening already verified one good copy of every metadata block
 * (checksum, location, pool, transaction, tree, owner and level) and that
 * no block is referenced twice.  This reads every other copy too, and adds
 * what needs the whole picture: every reference count
 * equals the number of map entries naming the extent, every extent named
 * lies inside its member, each disk's allocation count is right, and the
 * namespace is a tree with correct link counts.  Never writes.
 */
#include <endian.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "internal.h"

struct ck {
	struct vdp_pool *p;
	void (*report)(void *ctx, const char *line);
	void *ctx;
	int problems;
	struct u64vec pids; /* every map entry */
	size_t at;	    /* merge position in the sorted pids */
	uint64_t count;	    /* entries of the file being walked */
	uint64_t ino;
};

static void say(struct ck *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void say(struct ck *c, const char *fmt, ...)
{
	char line[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	c->report(c->ctx, line);
	c->problems++;
}

static int map_leaf(void *arg, const struct rnode *n, uint64_t base)
{
	struct ck *c = arg;
	const uint64_t *e = (const uint64_t *)n->data;

	if (n->level)
		return 0;
	for (unsigned i = 0; i < VDP_PAYLOAD / 8; i++) {
		uint64_t pid = le64toh(e[i]);

		if (!pid)
			continue;
		c->count++;
		if (!pid_valid(c->p, pid)) {
			say(c,
			    "inode %llu: extent %llu maps to %#llx, outside "
			    "the pool",
			    (unsigned long long)c->ino,
			    (unsigned long long)(base + i),
			    (unsigned long long)pid);
			continue;
		}
		if (u64vec_push(&c->pids, pid) < 0)
			return -ENOMEM;
	}
	return 0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static void refs_mismatch(struct ck *c, uint64_t pid, uint64_t want,
			  uint64_t have)
{
	say(c,
	    "extent %u:%llu has reference count %llu but %llu map "
	    "entries",
	    VDP_PID_MEMBER(pid), (unsigned long long)VDP_PID_INDEX(pid),
	    (unsigned long long)have, (unsigned long long)want);
}

/* Merges the sorted map entries with the refcount leaves (key order). */
static int refc_leaf(void *arg, const struct rnode *n, uint64_t base)
{
	struct ck *c = arg;
	const uint32_t *e = (const uint32_t *)n->data;

	if (n->level)
		return 0;
	for (unsigned i = 0; i < VDP_PAYLOAD / 4; i++) {
		uint64_t pid = base + i, want = 0;
		uint32_t have = le32toh(e[i]);

		while (c->at < c->pids.n && c->pids.v[c->at] < pid) {
			refs_mismatch(c, c->pids.v[c->at], 1, 0);
			c->at++;
		}
		while (c->at < c->pids.n && c->pids.v[c->at] == pid) {
			want++;
			c->at++;
		}
		if (have != want)
			refs_mismatch(c, pid, want, have);
		if (have && !pid_valid(c->p, pid))
			say(c, "reference count for %#llx, outside the pool",
			    (unsigned long long)pid);
	}
	return 0;
}

/* How many entries of the sorted array NAMED are INO. */
static uint64_t count_names(const struct u64vec *named, uint64_t ino)
{
	size_t lo = 0, hi = named->n, n = 0;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (named->v[mid] < ino)
			lo = mid + 1;
		else
			hi = mid;
	}
	while (lo + n < named->n && named->v[lo + n] == ino)
		n++;
	return n;
}

static int check_namespace(struct ck *c)
{
	struct vdp_pool *p = c->p;
	struct u64vec names_v = {0}, *named = &names_v;

	for (size_t k = 0; k < p->dtab_size; k++)
		for (struct dentry *d = p->dtab[k]; d; d = d->hnext)
			if (u64vec_push(named, d->ino) < 0) {
				free(named->v);
				return -ENOMEM;
			}
	if (named->n)
		qsort(named->v, named->n, sizeof(uint64_t), cmp_u64);

	for (size_t b = 0; b < p->vtab_size; b++)
		for (struct vnode *v = p->vtab[b]; v; v = v->hnext) {
			uint64_t names = 0, subdirs = 0;

			if (v->d.nlink == 0)
				continue; /* unlinked while open: freed later */
			names = count_names(named, v->ino);
			if (S_ISDIR(v->d.mode)) {
				for (struct dentry *d = v->dhead; d;
				     d = d->next) {
					struct vnode *k = vnode_get(p, d->ino);

					if (k && S_ISDIR(k->d.mode)) {
						subdirs++;
						if (k->d.parent != v->ino)
							say(c,
							    "directory %llu "
							    "names %llu whose "
							    "parent is %llu",
							    (unsigned long long)
								    v->ino,
							    (unsigned long long)
								    k->ino,
							    (unsigned long long)
								    k->d.parent);
					}
				}
				if (v->d.nlink != 2 + subdirs)
					say(c,
					    "directory %llu has link count "
					    "%u, expected %llu",
					    (unsigned long long)v->ino,
					    v->d.nlink,
					    (unsigned long long)(2 + subdirs));
				if (v->ino != VDP_ROOT_INO && names != 1)
					say(c, "directory %llu has %llu names",
					    (unsigned long long)v->ino,
					    (unsigned long long)names);
			} else if (v->d.nlink != names) {
				say(c,
				    "file %llu has link count %u but %llu "
				    "names",
				    (unsigned long long)v->ino, v->d.nlink,
				    (unsigned long long)names);
			}
		}
	free(named->v);
	return 0;
}

static int copies_node(void *arg, const struct rnode *n, uint64_t base)
{
	struct ck *c = arg;
	int bad;

	(void)base;
	bad = pool_meta_check_copies(c->p, n->addr, c->report, c->ctx);
	if (bad < 0)
		return bad;
	c->problems += bad;
	return 0;
}

/* Every copy of every metadata block, not just the one open read. */
static int check_copies(struct ck *c)
{
	struct vdp_pool *p = c->p;
	int r = rtree_visit(&p->inodes, copies_node, c);

	if (r == 0)
		r = rtree_visit(&p->refc, copies_node, c);
	for (size_t b = 0; b < p->vtab_size && r == 0; b++)
		for (struct vnode *v = p->vtab[b]; v && r == 0; v = v->hnext) {
			r = rtree_visit(&v->data, copies_node, c);
			if (r == 0)
				r = rtree_visit(&v->xblob, copies_node, c);
		}
	return r;
}

int vdp_pool_check(struct vdp_pool *p,
		   void (*report)(void *ctx, const char *line), void *ctx)
{
	struct ck c = {.p = p, .report = report, .ctx = ctx};
	int r = 0;

	pthread_mutex_lock(&p->meta_lock);
	for (size_t b = 0; b < p->vtab_size && r == 0; b++)
		for (struct vnode *v = p->vtab[b]; v && r == 0; v = v->hnext) {
			if (!S_ISREG(v->d.mode))
				continue;
			c.count = 0;
			c.ino = v->ino;
			r = rtree_visit(&v->data, map_leaf, &c);
			if (r == 0 && c.count != v->d.nalloc)
				say(&c,
				    "file %llu maps %llu extents but "
				    "records %llu",
				    (unsigned long long)v->ino,
				    (unsigned long long)c.count,
				    (unsigned long long)v->d.nalloc);
		}
	if (r == 0) {
		if (c.pids.n)
			qsort(c.pids.v, c.pids.n, sizeof(uint64_t), cmp_u64);
		r = rtree_visit(&p->refc, refc_leaf, &c);
		for (; r == 0 && c.at < c.pids.n; c.at++)
			refs_mismatch(&c, c.pids.v[c.at], 1, 0);
	}
	if (r == 0)
		r = check_namespace(&c);
	if (r == 0)
		r = check_copies(&c);
	pthread_mutex_unlock(&p->meta_lock);
	free(c.pids.v);
	return r < 0 ? r : c.problems;
}
