/* SPDX-License-Identifier: MIT */
/*
 * check.c - `vdpool check`: verification of a pool opened read-only, and
 * the readers of copies and superblock slots that repair.c shares
 * (fsck.h).
 *
 * Opening already verified one good copy of every metadata block
 * (checksum, location, pool, transaction, tree, owner and level) and that
 * no block is referenced twice.  This reads every other copy too, and both
 * superblock slots of every member, and adds what needs the whole picture:
 * every member is as large as its record, every reference count equals
 * the number of map entries naming the extent, every extent named lies
 * inside its member, each disk's allocation count is right, and the
 * namespace is a tree rooted at inode 1 with correct link counts.  Each
 * problem found here is one that repair.c mends.  Never writes.
 */
#include <endian.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "block.h"
#include "fsck.h"
#include "internal.h"

/* ---- copies and slots, shared with repair.c ------------------------------ */

const char *fsck_tree_name(uint8_t tree)
{
	switch (tree) {
	case VDP_TREE_INODES:
		return "inode tree";
	case VDP_TREE_MAP:
		return "extent map";
	case VDP_TREE_REFC:
		return "reference-count tree";
	case VDP_TREE_BLOB:
		return "blob";
	}
	return "tree";
}

static bool all_zero(const void *b, size_t n)
{
	const uint8_t *c = b;

	return n == 0 || (c[0] == 0 && memcmp(c, c + 1, n - 1) == 0);
}

int fsck_meta_read(struct vdp_pool *p, uint64_t addr, uint8_t tree,
		   uint64_t owner, int level, void *blk, struct meta_copies *mc)
{
	const struct vdp_dchunk *ch = NULL;
	void *t;

	memset(mc, 0, sizeof(*mc));
	mc->best = -1;
	for (unsigned c = 0; c < p->nchunks; c++)
		if (addr >= p->chunks[c].lstart &&
		    addr - p->chunks[c].lstart < p->chunks[c].nblocks)
			ch = &p->chunks[c];
	if (!ch || addr == 0)
		return -EUCLEAN;
	if (posix_memalign(&t, 4096, VDP_BLOCK_SIZE) != 0)
		return -ENOMEM;
	mc->n = ch->ncopies;
	for (unsigned k = 0; k < mc->n; k++) {
		struct meta_copy *c = &mc->c[k];
		struct pmember *pm = &p->members[ch->member[k]];
		int r;

		c->member = ch->member[k];
		c->off = ch->offset[k] + (addr - ch->lstart) * VDP_BLOCK_SIZE;
		if (c->off + VDP_BLOCK_SIZE > pm->m->size) {
			snprintf(c->why, sizeof(c->why),
				 "beyond the end of the member, at %llu bytes",
				 (unsigned long long)pm->m->size);
			continue;
		}
		r = pm->m->ops->pread(pm->m, t, VDP_BLOCK_SIZE, c->off);
		if (r < 0) {
			c->err = r;
			snprintf(c->why, sizeof(c->why), "%s", strerror(-r));
			continue;
		}
		if (all_zero(t, VDP_BLOCK_SIZE)) {
			snprintf(c->why, sizeof(c->why), "all zeros");
			continue;
		}
		if (vdp_block_verify(t, VDP_BLOCK_SIZE, VDP_MAGIC_META, addr,
				     p->uuid, c->why, sizeof(c->why)) < 0 ||
		    pool_meta_header_check(p, t, tree, owner, level, c->why,
					   sizeof(c->why)) < 0)
			continue;
		c->good = true;
		c->txid = le64toh(((const struct vdp_bhdr *)t)->txid);
		if (mc->best < 0 || c->txid > mc->c[mc->best].txid) {
			mc->best = (int)k;
			memcpy(blk, t, VDP_BLOCK_SIZE);
		}
	}
	free(t);
	/* A good copy older than the other one missed the last write there:
	 * the parent names the newer one. */
	for (unsigned k = 0; mc->best >= 0 && k < mc->n; k++) {
		struct meta_copy *c = &mc->c[k];

		if (c->good && c->txid < mc->c[mc->best].txid) {
			c->good = false;
			snprintf(
				c->why, sizeof(c->why),
				"stale: written by transaction %llu, the other "
				"copy by %llu",
				(unsigned long long)c->txid,
				(unsigned long long)mc->c[mc->best].txid);
		}
	}
	return mc->best >= 0 ? 0 : -EUCLEAN;
}

/* Reads and verifies both slots of member MI into ST (good, txid, why);
 * *ZERO[k] says slot k is all zeros. */
static int super_slots(struct vdp_pool *p, unsigned mi, struct sb_state *st,
		       bool zero[2])
{
	struct pmember *pm = &p->members[mi];
	struct vdp_dsuper *s;

	memset(st, 0, sizeof(*st));
	if (posix_memalign((void **)&s, 4096, sizeof(*s)) != 0)
		return -ENOMEM;
	for (unsigned k = 0; k < VDP_SB_SLOTS; k++) {
		char *why = st->why[k];
		size_t wl = sizeof(st->why[k]);
		int r = 0;

		zero[k] = false;
		if (pm->m->size < (k + 1) * (uint64_t)VDP_SB_SIZE)
			snprintf(why, wl, "beyond the end of the member");
		else if ((r = pm->m->ops->pread(pm->m, s, VDP_SB_SIZE,
						k * VDP_SB_SIZE)) < 0)
			snprintf(why, wl, "%s", strerror(-r));
		else if ((zero[k] = all_zero(s, VDP_SB_SIZE)))
			snprintf(why, wl, "all zeros");
		else if (vdp_block_verify(s, VDP_SB_SIZE, VDP_MAGIC_SUPER, k,
					  p->uuid, why, wl) < 0)
			;
		else if (le64toh(s->h.txid) % VDP_SB_SLOTS != k)
			snprintf(why, wl, "transaction %llu in the wrong slot",
				 (unsigned long long)le64toh(s->h.txid));
		else if (memcmp(s->member_uuid, pm->d.uuid, 16) != 0 ||
			 le32toh(s->member_index) != mi)
			snprintf(why, wl, "belongs to another member");
		else if (le64toh(s->h.txid) > p->txid)
			snprintf(why, wl,
				 "transaction %llu is after the last commit",
				 (unsigned long long)le64toh(s->h.txid));
		else {
			st->good[k] = true;
			st->txid[k] = le64toh(s->h.txid);
		}
	}
	free(s);
	return 0;
}

int fsck_super_states(struct vdp_pool *p, struct sb_state *st)
{
	unsigned n = p->nmembers, a = p->txid % VDP_SB_SLOTS, b = 1 - a;
	bool zero[VDP_MAX_MEMBERS][2], lack_a[VDP_MAX_MEMBERS],
		lack_b[VDP_MAX_MEMBERS], all_a = true;
	unsigned first_a = n, first_b = n, nlack_b = 0;

	bool fresh[VDP_MAX_MEMBERS] = {false}, first_in_b[VDP_MAX_MEMBERS];

	for (unsigned i = 0; i < n; i++) {
		int r;

		if (p->members[i].d.state == VDP_MS_REMOVED) {
			/* A tombstone: nothing is read, nothing lacks. */
			memset(&st[i], 0, sizeof(st[i]));
			lack_a[i] = lack_b[i] = first_in_b[i] = false;
			continue;
		}
		r = super_slots(p, i, &st[i], zero[i]);
		if (r < 0)
			return r;
		/* Added by commit T: its other slot was cleared by the add,
		 * and its slot T was written before any other member's. */
		fresh[i] = p->members[i].d.added_txid == p->txid &&
			   zero[i][b] && st[i].good[a] &&
			   st[i].txid[a] == p->txid;
		if (fresh[i])
			st[i].why[b][0] = 0;
		/* Added by commit T - 1: that commit wrote it first. */
		first_in_b[i] = p->txid > 1 &&
				p->members[i].d.added_txid == p->txid - 1;
		/* Create clears both slots and commits 1 into slot 1. */
		if (p->txid == 1 && zero[i][0])
			st[i].why[0][0] = 0;
		lack_a[i] = !(st[i].good[a] && st[i].txid[a] == p->txid);
		lack_b[i] = !st[i].good[b] && st[i].why[b][0];
		if (p->txid > 1)
			lack_b[i] =
				!fresh[i] && !(st[i].good[b] &&
					       st[i].txid[b] == p->txid - 1);
		if (lack_a[i] && first_a == n)
			first_a = i;
		if (lack_b[i] && first_b == n && !first_in_b[i])
			first_b = i;
		all_a = all_a && !lack_a[i];
		nlack_b += lack_b[i];
	}
	/* What a crash leaves: commit T stopped at member FIRST_A, or a later
	 * commit stopped at member 0, or T - 1 stopped at FIRST_B >= 1 and T
	 * went through.  A member a commit added is written before the
	 * others, so it is never part of that commit's missing suffix. */
	bool suffix_a = true, suffix_b = true;

	for (unsigned i = 0; i < n; i++) {
		if (p->members[i].d.state == VDP_MS_REMOVED)
			continue;
		if (i >= first_a && !lack_a[i] && !fresh[i])
			suffix_a = false;
		if (first_in_b[i] ? lack_b[i] : i >= first_b && !lack_b[i])
			suffix_b = false;
	}
	suffix_b = all_a && ((suffix_b && first_b >= 1) ||
			     (first_b == 0 && nlack_b == 1));
	for (unsigned i = 0; i < n; i++) {
		uint64_t newest = st[i].txid[0] > st[i].txid[1] ? st[i].txid[0]
								: st[i].txid[1];

		if (p->members[i].d.state == VDP_MS_REMOVED)
			continue;
		for (unsigned k = 0; k < VDP_SB_SLOTS; k++) {
			bool crash;

			if (st[i].good[k] || !st[i].why[k][0])
				continue;
			crash = k == a ? suffix_a && st[i].good[b] &&
						 st[i].txid[b] + 1 == p->txid
				       : suffix_b;
			st[i].note[k] = crash;
			st[i].bad[k] = !crash;
		}
		st[i].stale =
			!st[i].bad[0] && !st[i].bad[1] && newest + 1 < p->txid;
	}
	return 0;
}

/* ---- check --------------------------------------------------------------- */

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

/* Prints a line that is not a problem. */
static void note(struct ck *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void vreport(struct ck *c, bool problem, const char *fmt, va_list ap)
	__attribute__((format(printf, 3, 0)));

static void vreport(struct ck *c, bool problem, const char *fmt, va_list ap)
{
	char line[512];

	vsnprintf(line, sizeof(line), fmt, ap);
	c->report(c->ctx, line);
	c->problems += problem;
}

static void note(struct ck *c, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vreport(c, false, fmt, ap);
	va_end(ap);
}

static void say(struct ck *c, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vreport(c, true, fmt, ap);
	va_end(ap);
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

/* How many of the sorted map entries from c->at on name the same extent;
 * moves past them. */
static uint64_t take_run(struct ck *c)
{
	uint64_t n = 0, pid = c->pids.v[c->at];

	while (c->at < c->pids.n && c->pids.v[c->at] == pid) {
		n++;
		c->at++;
	}
	return n;
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
			uint64_t x = c->pids.v[c->at];

			refs_mismatch(c, x, take_run(c), 0);
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

/* Whether the parent chain of directory V ends at the root.  Each link of
 * the chain is checked against the entries elsewhere. */
static bool reachable(struct vdp_pool *p, const struct vnode *v)
{
	for (size_t depth = 0; depth <= p->nvnodes; depth++) {
		if (v->ino == VDP_ROOT_INO)
			return true;
		v = vnode_get(p, v->d.parent);
		if (!v || !S_ISDIR(v->d.mode))
			return false;
	}
	return false;
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
			uint64_t names = count_names(named, v->ino),
				 subdirs = 0;

			if (v->ino >= p->next_ino)
				say(c,
				    "inode %llu is not below the next inode "
				    "number %llu",
				    (unsigned long long)v->ino,
				    (unsigned long long)p->next_ino);
			if (v->d.nlink == 0 && names == 0)
				continue; /* unlinked while open: freed later */
			if (S_ISDIR(v->d.mode) && !reachable(p, v))
				say(c,
				    "directory %llu is not reachable from the "
				    "root",
				    (unsigned long long)v->ino);
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

/* A tree whose every node's copies are read, and how to name it. */
struct cp {
	struct ck *c;
	const struct rtree *t;
	const char *what; /* "inode tree", "extent map of inode 12", ... */
	void *blk;
};

static int copies_node(void *arg, const struct rnode *n, uint64_t base)
{
	struct cp *x = arg;
	struct vdp_pool *p = x->c->p;
	struct meta_copies mc;
	int r;

	(void)base;
	if (n->addr == 0)
		return 0; /* new since the last commit */
	r = fsck_meta_read(p, n->addr, x->t->tree, x->t->owner, n->level,
			   x->blk, &mc);
	if (r == -ENOMEM)
		return r;
	if (mc.n == 0)
		say(x->c,
		    "metadata block %llu (%s) is outside the metadata "
		    "space",
		    (unsigned long long)n->addr, x->what);
	for (unsigned k = 0; k < mc.n; k++)
		if (!mc.c[k].good)
			say(x->c,
			    "metadata block %llu (%s, level %u): copy on %s "
			    "at offset %llu is bad: %s",
			    (unsigned long long)n->addr, x->what, n->level,
			    p->members[mc.c[k].member].m->path,
			    (unsigned long long)mc.c[k].off, mc.c[k].why);
	return 0;
}

static int copies_tree(struct ck *c, const struct rtree *t, const char *what,
		       uint64_t ino)
{
	char name[96];
	struct cp x = {.c = c, .t = t, .what = name};
	int r;

	if (ino)
		snprintf(name, sizeof(name), "%s of inode %llu", what,
			 (unsigned long long)ino);
	else
		snprintf(name, sizeof(name), "%s", what);
	if (posix_memalign(&x.blk, 4096, VDP_BLOCK_SIZE) != 0)
		return -ENOMEM;
	r = rtree_visit(t, copies_node, &x);
	free(x.blk);
	return r;
}

/* Every copy of every metadata block, not just the one open read. */
static int check_copies(struct ck *c)
{
	struct vdp_pool *p = c->p;
	int r = copies_tree(c, &p->inodes, "inode tree", 0);

	if (r == 0)
		r = copies_tree(c, &p->refc, "reference-count tree", 0);
	for (size_t b = 0; b < p->vtab_size && r == 0; b++)
		for (struct vnode *v = p->vtab[b]; v && r == 0; v = v->hnext) {
			r = copies_tree(c, &v->data,
					S_ISDIR(v->d.mode) ? "directory"
							   : "extent map",
					v->ino);
			if (r == 0)
				r = copies_tree(c, &v->xblob, "xattrs", v->ino);
		}
	return r;
}

/* A metadata chunk copy that an add or a removal put in a data area: no disk
 * may map its extents (they hold no reference). */
static void check_chunks_in_data(struct ck *c)
{
	struct vdp_pool *p = c->p;

	for (unsigned ch = 0; ch < p->nchunks; ch++)
		for (unsigned k = 0; k < p->chunks[ch].ncopies; k++) {
			const struct vdp_dchunk *d = &p->chunks[ch];
			const struct pmember *pm = &p->members[d->member[k]];
			uint64_t first, n;

			if (!chunk_data_run(p, d, k, &first, &n))
				continue;
			for (uint64_t x = first; x < first + n; x++)
				if (extent_refcount(
					    p, VDP_PID_MAKE(d->member[k], x)))
					say(c,
					    "extent %llu of member %s holds "
					    "metadata chunk %u and is mapped "
					    "by a disk too",
					    (unsigned long long)x, pm->m->path,
					    ch);
		}
}

/* Every member is as large as recorded and has two good superblocks. */
static int check_members(struct ck *c)
{
	struct vdp_pool *p = c->p;

	struct sb_state st[VDP_MAX_MEMBERS];
	int r = fsck_super_states(p, st);

	if (r < 0)
		return r;
	check_chunks_in_data(c);
	for (unsigned i = 0; i < p->nmembers; i++) {
		struct pmember *pm = &p->members[i];

		if (pm->d.state == VDP_MS_REMOVED)
			continue;
		if (pm->d.state == VDP_MS_LEAVING)
			note(c,
			     "note: member %s is leaving: its removal resumes "
			     "when the pool is mounted (vdpool remove --cancel "
			     "keeps it)",
			     pm->m->path);
		if (pm->m->size < pm->d.size)
			say(c,
			    "member %s is %llu bytes, smaller than the %llu "
			    "bytes recorded (truncated?)",
			    pm->m->path, (unsigned long long)pm->m->size,
			    (unsigned long long)pm->d.size);
		if (st[i].bad[0] && st[i].bad[1])
			say(c,
			    "member %s: no valid superblock (slot 0: %s; "
			    "slot 1: %s)",
			    pm->m->path, st[i].why[0], st[i].why[1]);
		for (unsigned k = 0; k < VDP_SB_SLOTS; k++) {
			if (st[i].bad[k] && !st[i].bad[1 - k])
				say(c,
				    "member %s: superblock slot %u is bad: %s",
				    pm->m->path, k, st[i].why[k]);
			if (st[i].note[k])
				note(c,
				     "note: member %s: superblock slot %u is "
				     "bad: %s (as a commit interrupted by a "
				     "crash leaves it; later commits rewrite "
				     "it)",
				     pm->m->path, k, st[i].why[k]);
		}
		if (st[i].stale)
			say(c,
			    "member %s: superblock is stale: its newest is "
			    "transaction %llu, the pool's is %llu",
			    pm->m->path,
			    (unsigned long long)(st[i].txid[0] > st[i].txid[1]
							 ? st[i].txid[0]
							 : st[i].txid[1]),
			    (unsigned long long)p->txid);
	}
	return 0;
}

int vdp_pool_check(struct vdp_pool *p,
		   void (*report)(void *ctx, const char *line), void *ctx)
{
	struct ck c = {.p = p, .report = report, .ctx = ctx};
	int r = 0;

	pthread_mutex_lock(&p->meta_lock);
	r = check_members(&c);
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
		while (r == 0 && c.at < c.pids.n) {
			uint64_t x = c.pids.v[c.at];

			refs_mismatch(&c, x, take_run(&c), 0);
		}
	}
	if (r == 0)
		r = check_namespace(&c);
	if (r == 0)
		r = check_copies(&c);
	pthread_mutex_unlock(&p->meta_lock);
	free(c.pids.v);
	return r < 0 ? r : c.problems;
}
