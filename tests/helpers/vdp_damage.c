/* SPDX-License-Identifier: MIT */
/*
 * vdp_damage.c - the test-only tool that causes the damage `vdpool check
 * --repair` must mend, where flipping bytes with dd cannot: it opens an
 * unmounted pool through the store's internals and commits a wrong
 * reference count, a leaked extent, an extent mapped twice, a wrong link
 * count or a file without a name, exactly as a bug in the store would
 * write them (checksums and all).  And it tells the tests where the
 * copies of a tree's blocks lie, so that they can damage those bytes.
 *
 * Never installed, never linked into the product: tests/e2e/repair.sh and
 * tests/unit/test_repair.c use it.
 *
 *   vdp-damage POOL locate TREE [KEY]   print "BLOCK MEMBER OFFSET" for
 *       each copy of the root block of TREE, or of the leaf that holds
 *       KEY: TREE is inodes, refcounts, map:/DISK, dir:/DIR or xattr:/PATH
 *   vdp-damage POOL refcount /DISK VEXT COUNT   set the reference count of
 *       the extent mapped at virtual extent VEXT of /DISK
 *   vdp-damage POOL leak    give a free extent a count of 1, map it nowhere
 *   vdp-damage POOL crosslink /SRC VEXT /DST VEXT2   map SRC's extent at
 *       VEXT at VEXT2 of DST too, with no second reference
 *   vdp-damage POOL nlink /PATH N       set the link count of /PATH
 *   vdp-damage POOL unname /DISK        remove the name of /DISK, keep it
 */
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "internal.h"

static struct vdp_pool *pool;

static void die(const char *what, int r)
{
	fprintf(stderr, "vdp-damage: %s: %s%s%s\n", what, strerror(-r),
		*vdp_last_error() ? ": " : "", vdp_last_error());
	exit(1);
}

/* The inode of absolute PATH; its parent's inode and last name too. */
static uint64_t lookup(const char *path, uint64_t *parent, char *last)
{
	char buf[4096], *save = NULL, *c;
	uint64_t ino = VDP_ROOT_INO;

	snprintf(buf, sizeof(buf), "%s", path);
	for (c = strtok_r(buf, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
		struct vdp_attr a;
		int r = vdp_lookup(pool, ino, c, &a);

		if (r < 0)
			die(path, r);
		if (parent)
			*parent = ino;
		if (last)
			snprintf(last, VDP_NAME_MAX + 1, "%s", c);
		ino = a.ino;
	}
	return ino;
}

static struct vnode *vnode_of(const char *path)
{
	uint64_t ino = lookup(path, NULL, NULL);
	struct vnode *v;

	pthread_mutex_lock(&pool->meta_lock);
	v = vnode_get(pool, ino);
	pthread_mutex_unlock(&pool->meta_lock);
	if (!v)
		die(path, -ENOENT);
	return v;
}

static uint64_t map_get(struct vnode *v, uint64_t vext)
{
	const uint64_t *s = rtree_lookup(&v->data, vext);

	return s ? le64toh(*s) : 0;
}

static void locate(const char *what, const char *key)
{
	const struct rtree *t;
	const struct rnode *n;
	uint64_t k = key ? strtoull(key, NULL, 0) : 0;

	if (!strcmp(what, "inodes"))
		t = &pool->inodes;
	else if (!strcmp(what, "refcounts"))
		t = &pool->refc;
	else if (!strncmp(what, "map:", 4) || !strncmp(what, "dir:", 4))
		t = &vnode_of(what + 4)->data;
	else if (!strncmp(what, "xattr:", 6))
		t = &vnode_of(what + 6)->xblob;
	else
		die(what, -EINVAL);
	n = t->root;
	if (!n)
		die("the tree is empty", -ENOENT);
	while (key && n->level > 0) {
		uint64_t s = t->per_leaf;

		for (unsigned l = 1; l < n->level; l++)
			s *= VDP_FANOUT;
		n = n->kids[k / s];
		k %= s;
		if (!n)
			die("no leaf holds that key", -ENOENT);
	}
	for (unsigned c = 0; c < pool->nchunks; c++) {
		const struct vdp_dchunk *ch = &pool->chunks[c];

		if (n->addr < ch->lstart || n->addr - ch->lstart >= ch->nblocks)
			continue;
		for (unsigned i = 0; i < ch->ncopies; i++)
			printf("%" PRIu64 " %s %" PRIu64 "\n", n->addr,
			       pool->members[ch->member[i]].m->path,
			       ch->offset[i] +
				       (n->addr - ch->lstart) * VDP_BLOCK_SIZE);
	}
}

static void set_count(uint64_t pid, uint32_t count)
{
	uint32_t *c = rtree_slot(&pool->refc, pid);

	if (!c)
		die("refcount", -ENOMEM);
	*c = htole32(count);
	pool->changed = true;
}

int main(int argc, char **argv)
{
	bool rdonly = argc >= 3 && !strcmp(argv[2], "locate");
	const char *cmd;
	int r;

	if (argc < 3) {
		fprintf(stderr, "usage: vdp-damage POOL COMMAND ARGS...\n");
		return 2;
	}
	r = vdp_pool_open(argv[1], rdonly ? VDP_OPEN_RDONLY : 0, &pool);
	if (r < 0)
		die(argv[1], r);
	vdp_pool_set_commit_interval(pool, 0);
	cmd = argv[2];
	if (!strcmp(cmd, "locate") && argc >= 4) {
		locate(argv[3], argc > 4 ? argv[4] : NULL);
	} else if (!strcmp(cmd, "refcount") && argc == 6) {
		struct vnode *v = vnode_of(argv[3]);
		uint64_t pid = map_get(v, strtoull(argv[4], NULL, 0));

		if (!pid)
			die("that extent is a hole", -ENOENT);
		pthread_mutex_lock(&pool->meta_lock);
		set_count(pid, (uint32_t)strtoul(argv[5], NULL, 0));
		pthread_mutex_unlock(&pool->meta_lock);
	} else if (!strcmp(cmd, "leak") && argc == 3) {
		uint64_t pid;

		pthread_mutex_lock(&pool->meta_lock);
		r = alloc_extent(pool, &pid);
		if (r == 0)
			set_count(pid, 1);
		pthread_mutex_unlock(&pool->meta_lock);
		if (r < 0)
			die("leak", r);
		printf("%u %llu\n", VDP_PID_MEMBER(pid),
		       (unsigned long long)VDP_PID_INDEX(pid));
	} else if (!strcmp(cmd, "crosslink") && argc == 7) {
		struct vnode *s = vnode_of(argv[3]), *d = vnode_of(argv[5]);
		uint64_t pid = map_get(s, strtoull(argv[4], NULL, 0));
		uint64_t *slot, to = strtoull(argv[6], NULL, 0);

		if (!pid || map_get(d, to))
			die("crosslink needs data at VEXT, a hole at VEXT2",
			    -EINVAL);
		pthread_mutex_lock(&pool->meta_lock);
		slot = rtree_slot(&d->data, to);
		if (!slot)
			die("crosslink", -ENOMEM);
		*slot = htole64(pid);
		d->d.nalloc++;
		vnode_dirty(pool, d);
		pthread_mutex_unlock(&pool->meta_lock);
	} else if (!strcmp(cmd, "nlink") && argc == 5) {
		struct vnode *v = vnode_of(argv[3]);

		pthread_mutex_lock(&pool->meta_lock);
		v->d.nlink = (uint32_t)strtoul(argv[4], NULL, 0);
		vnode_dirty(pool, v);
		pthread_mutex_unlock(&pool->meta_lock);
	} else if (!strcmp(cmd, "unname") && argc == 4) {
		char name[VDP_NAME_MAX + 1];
		uint64_t parent, ino = lookup(argv[3], &parent, name);
		struct vnode *v;

		/* Our lookup holds the inode: unlink leaves it alive. */
		r = vdp_unlink(pool, parent, name);
		if (r < 0)
			die(argv[3], r);
		pthread_mutex_lock(&pool->meta_lock);
		v = vnode_get(pool, ino);
		v->d.nlink = 1;
		vnode_dirty(pool, v);
		pthread_mutex_unlock(&pool->meta_lock);
	} else {
		fprintf(stderr,
			"vdp-damage: %s: unknown command or wrong "
			"arguments\n",
			cmd);
		return 2;
	}
	r = vdp_pool_close(pool);
	if (r < 0)
		die("commit", r);
	return 0;
}
