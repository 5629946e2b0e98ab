/* SPDX-License-Identifier: MIT */
/*
 * repair.c - `vdpool check --repair`: mends an unmounted pool from what is
 * redundant in it, and reports every change as one line.
 *
 * It reads the pool as check.c does, but tolerates damage: the superblock
 * comes from any member that has a valid one, each metadata block from
 * whichever copy is good (fsck.h), and a block with no good copy is cut out
 * of its tree and what it held is reported lost.  Then, in memory, the
 * trees are made consistent: bad copies are rewritten, extents that no
 * longer exist are unmapped, reference counts are recounted from the
 * extent maps (leaked extents freed), directories lose entries that name
 * nothing, nameless inodes go to /lost+found, link and allocation counts
 * are recounted.  All of it is written by ONE ordinary commit (commit.c),
 * so a crash during repair leaves the pool as it was or fully repaired.
 *
 * Everything is read and decided before anything is written, so what
 * repair refuses (or an I/O error stops) it leaves untouched.  Before the
 * commit only two writes happen, both harmless on their own: a file member
 * shorter than its record is extended with zeros to its recorded size, and
 * a member's superblock slot of the last commit, when bad, is rewritten
 * with that same last commit.  The commit itself writes the other slot on
 * every member.
 *
 * Must never: write over a block the last commit references, turn lost
 * bytes into anything but zeros, or report a change it did not make.
 * docs/man/vdpool.8.md ("Repair") says what it does with each damage.
 */
#include <endian.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fsck.h"
#include "internal.h"

#define XATTR_TOTAL_MAX 65536 /* as namespace.c */
#define LF_NAME "lost+found"

/* A directory entry as repair holds it. */
struct rent {
	uint64_t ino, cookie;
	char *name;
};

/* An inode as repair holds it: its record and trees, and what the
 * directories say of it. */
struct rino {
	uint64_t ino;
	struct vdp_dinode d; /* host byte order */
	struct vdp_droot ondisk_data, ondisk_xattr;
	struct rtree data, xblob;
	struct rent *ents; /* directories, once parsed */
	size_t nents, cap;
	bool parsed, ents_dirty, rec_dirty, drop_xattrs;
	bool created;	/* by repair: its counts are not changes */
	bool reached;	/* named from the root */
	char *path;	/* its first name from the root */
	uint64_t names; /* files: entries naming it */
	uint64_t subdirs, parent;
	uint64_t nmapped, nmapped0; /* files: now, and before repair */
};

/* A metadata block with no good copy, cut out of its tree. */
struct loss {
	uint8_t tree; /* enum vdp_tree */
	bool xattr;   /* the blob is the xattrs, not the directory */
	uint64_t owner, addr;
	int level;
	uint64_t first, end; /* the keys it held */
	bool told;	     /* reported */
	char why[400];
};

/* A metadata block with a bad copy, rewritten by the commit. */
struct copyfix {
	uint8_t tree;
	bool xattr;
	uint64_t owner, addr;
	int level;
	unsigned good; /* member of the good copy */
	unsigned bad;  /* member of the bad one */
	uint64_t off;  /* of the bad one */
	char why[160];
};

struct pair {
	uint64_t pid, ino;
};

struct rp {
	struct vdp_pool *p;
	void (*report)(void *ctx, const char *line);
	void (*phase)(void *ctx, const char *what);
	void *ctx;
	int changes;
	char **lines; /* reported once the commit is durable */
	size_t nlines, lcap;
	bool front;	 /* change() inserts before the others... */
	size_t nfront;	 /* ...after the NFRONT inserted so */
	struct rino *in; /* sorted by inode number */
	size_t nin, incap;
	struct loss *loss;
	size_t nloss, losscap;
	struct copyfix *fix;
	size_t nfix, fixcap;
	struct pair *maps; /* every map entry kept */
	size_t nmaps, mapcap;
	uint64_t old_size[VDP_MAX_MEMBERS]; /* before an extension */
	bool force_commit; /* a superblock slot only the commit rewrites */
	void *blk;
	int err; /* -ENOMEM met deep inside */
};

/* ---- small helpers ------------------------------------------------------- */

static int grow(void **v, size_t *cap, size_t n, size_t size)
{
	size_t c;
	void *x;

	if (n < *cap)
		return 0;
	c = *cap ? *cap * 2 : 16;
	x = realloc(*v, c * size);
	if (!x)
		return -ENOMEM;
	*v = x;
	*cap = c;
	return 0;
}

/* Reports a change now (it is already made). */
static void done(struct rp *R, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void done(struct rp *R, const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	R->report(R->ctx, line);
	R->changes++;
}

/* Records a change that the commit makes; reported once it is durable. */
static void change(struct rp *R, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void change(struct rp *R, const char *fmt, ...)
{
	char line[1024], *s;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	s = strdup(line);
	if (!s ||
	    grow((void **)&R->lines, &R->lcap, R->nlines, sizeof(char *)) < 0) {
		free(s);
		R->err = -ENOMEM;
		return;
	}
	if (R->front) {
		memmove(&R->lines[R->nfront + 1], &R->lines[R->nfront],
			(R->nlines - R->nfront) * sizeof(char *));
		R->lines[R->nfront++] = s;
	} else {
		R->lines[R->nlines] = s;
	}
	R->nlines++;
}

static uint64_t sat_add(uint64_t a, uint64_t b)
{
	return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

static uint64_t sat_mul(uint64_t a, uint64_t b)
{
	return b && a > UINT64_MAX / b ? UINT64_MAX : a * b;
}

/* Keys covered by one node of LEVEL in T. */
static uint64_t span(const struct rtree *t, int level)
{
	uint64_t s = t->per_leaf;

	while (level-- > 0)
		s = sat_mul(s, VDP_FANOUT);
	return s;
}

static struct rino *find(struct rp *R, uint64_t ino)
{
	size_t lo = 0, hi = R->nin;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (R->in[mid].ino < ino)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < R->nin && R->in[lo].ino == ino ? &R->in[lo] : NULL;
}

static const char *mpath(struct rp *R, unsigned m)
{
	const struct pmember *pm = &R->p->members[m];

	return pm->m ? pm->m->path : pm->d.path; /* a tombstone has no m */
}

/* "on /a.img at offset 1: why; on /b.img at offset 2: why" */
static void copies_why(struct rp *R, const struct meta_copies *mc, char *buf,
		       size_t size)
{
	size_t o = 0;

	buf[0] = 0;
	for (unsigned k = 0; k < mc->n && o < size; k++)
		o += (size_t)snprintf(
			buf + o, size - o, "%son %s at offset %llu: %s",
			k ? "; " : "", mpath(R, mc->c[k].member),
			(unsigned long long)mc->c[k].off, mc->c[k].why);
}

/* ---- tolerant loading ---------------------------------------------------- */

/* The tree being loaded. */
struct tctx {
	struct rp *R;
	struct rtree *t;
	bool xattr;
};

static void add_loss(struct tctx *x, uint64_t addr, int level, uint64_t base,
		     const char *why)
{
	struct rp *R = x->R;
	struct loss *l;

	if (grow((void **)&R->loss, &R->losscap, R->nloss, sizeof(*l)) < 0) {
		R->err = -ENOMEM;
		return;
	}
	l = &R->loss[R->nloss++];
	memset(l, 0, sizeof(*l));
	l->tree = x->t->tree;
	l->xattr = x->xattr;
	l->owner = x->t->owner;
	l->addr = addr;
	l->level = level;
	l->first = base;
	l->end = sat_add(base, span(x->t, level));
	snprintf(l->why, sizeof(l->why), "%s", why);
}

static void add_fixes(struct tctx *x, uint64_t addr, int level,
		      const struct meta_copies *mc)
{
	struct rp *R = x->R;

	for (unsigned k = 0; k < mc->n; k++) {
		struct copyfix *f;

		if (mc->c[k].good)
			continue;
		if (grow((void **)&R->fix, &R->fixcap, R->nfix, sizeof(*f)) <
		    0) {
			R->err = -ENOMEM;
			return;
		}
		f = &R->fix[R->nfix++];
		f->tree = x->t->tree;
		f->xattr = x->xattr;
		f->owner = x->t->owner;
		f->addr = addr;
		f->level = level;
		f->good = mc->c[mc->best].member;
		f->bad = mc->c[k].member;
		f->off = mc->c[k].off;
		snprintf(f->why, sizeof(f->why), "%s", mc->c[k].why);
	}
}

/*
 * Loads the node at ADDR (LEVEL, first key BASE) and what lies below it.
 * Returns NULL where nothing good is there (recorded as a loss).  *DIRTY
 * is set when the node or one below it must be rewritten: a copy was bad
 * or a child was cut out.
 */
static struct rnode *load_node(struct tctx *x, uint64_t addr, int level,
			       uint64_t base, bool *dirty)
{
	struct rp *R = x->R;
	struct vdp_pool *p = R->p;
	struct meta_copies mc;
	struct rnode *n;
	char why[400];
	uint64_t *kids;
	int r;

	if (R->err)
		return NULL;
	if (mark_meta_used(p, addr) < 0) {
		add_loss(x, addr, level, base, vdp_last_error());
		return NULL;
	}
	r = fsck_meta_read(p, addr, x->t->tree, x->t->owner, level, R->blk,
			   &mc);
	if (r == -ENOMEM) {
		R->err = r;
		return NULL;
	}
	if (r < 0) {
		copies_why(R, &mc, why, sizeof(why));
		for (unsigned k = 0; k < mc.n; k++)
			if (mc.c[k].err) {
				/* It may read tomorrow: drop nothing today. */
				vdp_set_error("metadata block %llu cannot be "
					      "read (%s); repair stops rather "
					      "than drop what it holds",
					      (unsigned long long)addr, why);
				R->err = mc.c[k].err;
				return NULL;
			}
		add_loss(x, addr, level, base, why);
		free_meta(p, addr); /* reusable once the repair is durable */
		return NULL;
	}
	n = calloc(1, sizeof(*n));
	if (!n) {
		R->err = -ENOMEM;
		return NULL;
	}
	n->addr = addr;
	n->level = (uint8_t)level;
	if (!mc.c[0].good || (mc.n > 1 && !mc.c[1].good)) {
		add_fixes(x, addr, level, &mc);
		n->dirty = true;
	}
	if (level == 0) {
		memcpy(n->data, (uint8_t *)R->blk + sizeof(struct vdp_bhdr),
		       VDP_PAYLOAD);
	} else {
		uint64_t s = span(x->t, level - 1);

		kids = malloc(VDP_PAYLOAD);
		if (!kids) {
			free(n);
			R->err = -ENOMEM;
			return NULL;
		}
		memcpy(kids, (uint8_t *)R->blk + sizeof(struct vdp_bhdr),
		       VDP_PAYLOAD);
		for (unsigned i = 0; i < VDP_FANOUT; i++) {
			uint64_t c = le64toh(kids[i]);
			bool cd = false;

			if (!c)
				continue;
			n->kids[i] =
				load_node(x, c, level - 1,
					  sat_add(base, sat_mul(i, s)), &cd);
			if (!n->kids[i] || cd)
				n->dirty = true;
		}
		free(kids);
	}
	if (n->dirty)
		*dirty = true;
	return n;
}

/* Loads tree T from ROOT, cutting out what has no good copy. */
static void load_tree(struct rp *R, struct rtree *t, bool xattr,
		      const struct vdp_droot *root)
{
	struct tctx x = {.R = R, .t = t, .xattr = xattr};
	bool dirty = false;
	char why[64];

	if (root->addr == 0)
		return;
	if (root->height == 0 || root->height > 12) {
		snprintf(why, sizeof(why), "the root claims height %u",
			 root->height);
		add_loss(&x, root->addr, 11, 0, why);
		return;
	}
	t->root = load_node(&x, root->addr, root->height - 1, 0, &dirty);
	t->height = t->root ? root->height : 0;
}

/* The inodes of every inode-tree leaf that survived. */
static int inode_leaf(void *arg, const struct rnode *n, uint64_t base)
{
	struct rp *R = arg;
	const struct vdp_dinode *di = (const struct vdp_dinode *)n->data;

	if (n->level)
		return 0;
	for (unsigned i = 0; i < VDP_INODES_PER_LEAF; i++) {
		struct rino *ri;

		if (di[i].mode == 0)
			continue;
		if (grow((void **)&R->in, &R->incap, R->nin, sizeof(*ri)) < 0)
			return -ENOMEM;
		ri = &R->in[R->nin++];
		memset(ri, 0, sizeof(*ri));
		ri->ino = base + i;
		dinode_from_disk(&di[i], &ri->d);
		ri->ondisk_data = ri->d.data;
		ri->ondisk_xattr = ri->d.xattr;
	}
	return 0;
}

/* Extents with a count are taken, as open does. */
static int refc_leaf_mark(void *arg, const struct rnode *n, uint64_t base)
{
	struct vdp_pool *p = arg;
	const uint32_t *c = (const uint32_t *)n->data;

	for (unsigned i = 0; n->level == 0 && i < p->refc.per_leaf; i++)
		if (c[i] && pid_valid(p, base + i))
			(void)mark_extent_used(p, base + i);
	return 0;
}

static int load_all(struct rp *R)
{
	struct vdp_pool *p = R->p;
	int r;

	load_tree(R, &p->inodes, false, &p->sb_inodes);
	load_tree(R, &p->refc, false, &p->sb_refc);
	if (R->err)
		return R->err;
	rtree_visit(&p->refc, refc_leaf_mark, p);
	r = rtree_visit(&p->inodes, inode_leaf, R);
	if (r < 0)
		return r;
	for (size_t i = 0; i < R->nin; i++) {
		struct rino *ri = &R->in[i];
		bool dir = S_ISDIR(ri->d.mode);

		rtree_init(&ri->data, dir ? VDP_TREE_BLOB : VDP_TREE_MAP,
			   dir ? VDP_PAYLOAD : sizeof(uint64_t), ri->ino);
		rtree_init(&ri->xblob, VDP_TREE_BLOB, VDP_PAYLOAD, ri->ino);
		if (!dir && !S_ISREG(ri->d.mode))
			continue; /* dropped below */
		load_tree(R, &ri->data, false, &ri->d.data);
		load_tree(R, &ri->xblob, true, &ri->d.xattr);
		if (R->err)
			return R->err;
	}
	return 0;
}

/* ---- superblocks and member sizes ---------------------------------------- */

/* Notes each member's size; refuses a block device shorter than its
 * record, which cannot be grown back. */
static int check_sizes(struct rp *R)
{
	struct vdp_pool *p = R->p;

	for (unsigned i = 0; i < p->nmembers; i++) {
		struct pmember *pm = &p->members[i];

		if (pm->d.state == VDP_MS_REMOVED)
			continue;
		R->old_size[i] = pm->m->size;
		if (pm->m->size < pm->d.size && pm->m->kind != VDP_MK_FILE) {
			vdp_set_error("member %s is %llu bytes, smaller than "
				      "the %llu bytes recorded; a device "
				      "cannot be grown back: restore it, then "
				      "repair",
				      pm->m->path,
				      (unsigned long long)pm->m->size,
				      (unsigned long long)pm->d.size);
			return -EUCLEAN;
		}
	}
	return 0;
}

/* Extends truncated file members and rewrites bad superblock slots of the
 * last commit: the writes made before the commit. */
static int fix_members(struct rp *R)
{
	struct vdp_pool *p = R->p;
	struct sb_state st[VDP_MAX_MEMBERS];
	int r;

	for (unsigned i = 0; i < p->nmembers; i++) {
		struct pmember *pm = &p->members[i];
		static const uint8_t zero[1];

		if (pm->d.state == VDP_MS_REMOVED || pm->m->size >= pm->d.size)
			continue;
		/* Writing the last byte makes the file its recorded size;
		 * what was cut off reads as zeros. */
		r = vdp_member_write(pm->m, zero, 1, pm->d.size - 1);
		if (r == 0)
			r = pm->m->ops->flush(pm->m);
		if (r < 0) {
			vdp_set_error("member %s: cannot extend it: %s",
				      pm->m->path, strerror(-r));
			return r;
		}
		pm->m->size = pm->d.size;
		done(R,
		     "member %s: extended from %llu to its recorded %llu "
		     "bytes (it was truncated); what was cut off now reads "
		     "as zeros",
		     pm->m->path, (unsigned long long)R->old_size[i],
		     (unsigned long long)pm->d.size);
	}

	r = fsck_super_states(p, st);
	if (r < 0)
		return r;
	for (unsigned i = 0; i < p->nmembers; i++) {
		unsigned a = p->txid % VDP_SB_SLOTS, b = 1 - a;
		bool bad_a = st[i].bad[a] || st[i].note[a];
		bool bad_b = st[i].bad[b] || st[i].note[b];
		const char *path = mpath(R, i);

		if (p->members[i].d.state == VDP_MS_REMOVED)
			continue;
		if (bad_a || st[i].stale) {
			/* The last commit's superblock, as every member that
			 * has it holds it. */
			r = pool_write_super_one(p, i, p->txid);
			if (r < 0)
				return r;
		}
		if (bad_b)
			R->force_commit = true;
		if (bad_a && bad_b)
			done(R,
			     "member %s: superblock rewritten (both slots were "
			     "bad: slot 0: %s; slot 1: %s)",
			     path, st[i].why[0], st[i].why[1]);
		else if (bad_a)
			done(R,
			     "member %s: superblock slot %u rewritten (it was "
			     "bad: %s)",
			     path, a, st[i].why[a]);
		else if (bad_b)
			change(R,
			       "member %s: superblock slot %u rewritten (it "
			       "was bad: %s)",
			       path, b, st[i].why[b]);
		else if (st[i].stale)
			done(R,
			     "member %s: superblock rewritten (it was stale: "
			     "transaction %llu, the pool's is %llu)",
			     path,
			     (unsigned long long)(st[i].txid[0] > st[i].txid[1]
							  ? st[i].txid[0]
							  : st[i].txid[1]),
			     (unsigned long long)p->txid);
	}
	return 0;
}

/* ---- the namespace ------------------------------------------------------- */

static const char *shown(const struct rino *ri)
{
	return ri->path && ri->path[0] ? ri->path : "/";
}

/* "disk /a.img", "directory /d", "inode 12" */
static void name_of(struct rp *R, uint64_t ino, char *buf, size_t size)
{
	struct rino *ri = find(R, ino);

	if (ri && ri->path)
		snprintf(buf, size, "%s %s",
			 S_ISDIR(ri->d.mode) ? "directory" : "disk", shown(ri));
	else
		snprintf(buf, size, "inode %llu", (unsigned long long)ino);
}

static struct loss *loss_of(struct rp *R, uint8_t tree, bool xattr,
			    uint64_t owner, uint64_t key)
{
	for (size_t i = 0; i < R->nloss; i++) {
		struct loss *l = &R->loss[i];

		if (l->tree == tree && l->xattr == xattr && l->owner == owner &&
		    key >= l->first && key < l->end)
			return l;
	}
	return NULL;
}

static int ent_add(struct rino *dir, uint64_t ino, uint64_t cookie,
		   const char *name, size_t len)
{
	struct rent *e;

	if (grow((void **)&dir->ents, &dir->cap, dir->nents, sizeof(*e)) < 0)
		return -ENOMEM;
	e = &dir->ents[dir->nents];
	e->name = strndup(name, len);
	if (!e->name)
		return -ENOMEM;
	e->ino = ino;
	e->cookie = cookie;
	dir->nents++;
	return 0;
}

static int cmp_ent_name(const void *a, const void *b)
{
	const struct rent *x = *(const struct rent *const *)a;
	const struct rent *y = *(const struct rent *const *)b;
	int c = strcmp(x->name, y->name);

	return c ? c : (x < y ? -1 : x > y);
}

/* Parses directory DIR's blob into dir->ents: stops at the first byte
 * that is lost or malformed, drops repeated names; reports both. */
static int parse_dir(struct rp *R, struct rino *dir)
{
	uint64_t len = dir->d.size, o = 0, avail = 0;
	uint8_t *b = NULL;
	struct loss *l = NULL;
	struct rent **by;
	bool malformed = false;
	int r = 0;

	dir->parsed = true;
	/* The bytes up to the first missing leaf. */
	while (avail < len) {
		const uint8_t *leaf =
			rtree_lookup(&dir->data, avail / VDP_PAYLOAD);
		uint8_t *nb;

		if (!leaf) {
			l = loss_of(R, VDP_TREE_BLOB, false, dir->ino,
				    avail / VDP_PAYLOAD);
			break;
		}
		nb = realloc(b, avail + VDP_PAYLOAD);
		if (!nb) {
			free(b);
			return -ENOMEM;
		}
		b = nb;
		memcpy(b + avail, leaf, VDP_PAYLOAD);
		avail += VDP_PAYLOAD;
	}
	if (avail > len)
		avail = len;
	while (o < avail) {
		uint64_t ino, ck;
		uint16_t nl;

		/* An entry cut by the end of what is there: malformed only
		 * if nothing was lost after it. */
		if (avail - o < VDP_DIRENT_FIXED) {
			malformed = avail == len;
			break;
		}
		memcpy(&ino, b + o, 8);
		memcpy(&ck, b + o + 8, 8);
		memcpy(&nl, b + o + 16, 2);
		nl = le16toh(nl);
		if (nl == 0 || nl > VDP_NAME_MAX ||
		    (avail - o - VDP_DIRENT_FIXED >= nl &&
		     (memchr(b + o + VDP_DIRENT_FIXED, '/', nl) ||
		      memchr(b + o + VDP_DIRENT_FIXED, 0, nl)))) {
			malformed = true;
			break;
		}
		if (avail - o - VDP_DIRENT_FIXED < nl) {
			malformed = avail == len;
			break;
		}
		if (ino == 0) {
			change(R,
			       "directory %s: entry '%.*s' named inode 0; "
			       "removed",
			       shown(dir), (int)nl,
			       (const char *)b + o + VDP_DIRENT_FIXED);
			dir->ents_dirty = true;
		} else {
			r = ent_add(dir, le64toh(ino), le64toh(ck),
				    (const char *)b + o + VDP_DIRENT_FIXED, nl);
			if (r < 0)
				goto out;
		}
		o += VDP_DIRENT_FIXED + nl;
	}
	if (malformed)
		l = NULL;
	if (o < len) {
		dir->ents_dirty = true;
		if (l)
			l->told = true;
		if (l)
			change(R,
			       "directory %s: metadata block %llu has no good "
			       "copy (%s): its entries from byte %llu on are "
			       "lost; the files and directories they named go "
			       "to /" LF_NAME,
			       shown(dir), (unsigned long long)l->addr, l->why,
			       (unsigned long long)o);
		else
			change(R,
			       "directory %s: the entry at byte %llu is "
			       "malformed or missing; it and the %llu bytes "
			       "after it are dropped (what they named goes to "
			       "/" LF_NAME ")",
			       shown(dir), (unsigned long long)o,
			       (unsigned long long)(len - o));
	}
	/* Repeated names: the first in directory order stays. */
	by = malloc((dir->nents ? dir->nents : 1) * sizeof(*by));
	if (!by) {
		r = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < dir->nents; i++)
		by[i] = &dir->ents[i];
	qsort(by, dir->nents, sizeof(*by), cmp_ent_name);
	for (size_t i = 1; i < dir->nents; i++)
		if (!strcmp(by[i]->name, by[i - 1]->name) && by[i]->ino) {
			change(R,
			       "directory %s: entry '%s' for inode %llu "
			       "repeats "
			       "a name; removed",
			       shown(dir), by[i]->name,
			       (unsigned long long)by[i]->ino);
			by[i]->ino = 0; /* removed below */
			dir->ents_dirty = true;
		}
	free(by);
out:
	free(b);
	return r;
}

/* Drops the entries whose ino was zeroed. */
static void ents_compact(struct rino *dir)
{
	size_t k = 0;

	for (size_t i = 0; i < dir->nents; i++) {
		if (dir->ents[i].ino)
			dir->ents[k++] = dir->ents[i];
		else
			free(dir->ents[i].name);
	}
	dir->nents = k;
}

static int set_path(struct rino *ri, const struct rino *dir, const char *name)
{
	if (asprintf(&ri->path, "%s/%s", dir->path, name) < 0) {
		ri->path = NULL;
		return -ENOMEM;
	}
	return 0;
}

/*
 * Walks from directory index DI through every directory it reaches:
 * counts names and subdirectories, sets paths and true parents, and
 * removes entries naming nothing, the root, or a directory already named.
 */
static int walk(struct rp *R, size_t di)
{
	size_t *queue = NULL, nq = 0, qcap = 0, at = 0;
	int r = 0;

	if (grow((void **)&queue, &qcap, nq, sizeof(*queue)) < 0)
		return -ENOMEM;
	queue[nq++] = di;
	while (at < nq && r == 0) {
		struct rino *dir = &R->in[queue[at++]];

		if (!dir->parsed)
			r = parse_dir(R, dir);
		for (size_t j = 0; j < dir->nents && r == 0; j++) {
			struct rent *e = &dir->ents[j];
			struct rino *c = find(R, e->ino);

			if (!e->ino)
				continue;
			if (!c || c->ino == VDP_ROOT_INO ||
			    (S_ISDIR(c->d.mode) && c->reached)) {
				change(R,
				       "directory %s: entry '%s' named %s; "
				       "removed",
				       shown(dir), e->name,
				       !c ? (loss_of(R, VDP_TREE_INODES, false,
						     0, e->ino)
						     ? "a lost inode"
						     : "an inode that does not "
						       "exist")
				       : c->ino == VDP_ROOT_INO
					       ? "the root directory"
					       : "a directory named elsewhere");
				e->ino = 0;
				dir->ents_dirty = true;
				continue;
			}
			if (!c->reached) {
				c->reached = true;
				r = set_path(c, dir, e->name);
			}
			if (S_ISDIR(c->d.mode)) {
				c->parent = dir->ino;
				dir->subdirs++;
				if (grow((void **)&queue, &qcap, nq,
					 sizeof(*queue)) < 0)
					r = -ENOMEM;
				else
					queue[nq++] = (size_t)(c - R->in);
			} else {
				c->names++;
			}
		}
		ents_compact(dir);
	}
	free(queue);
	return r;
}

static uint64_t next_cookie(const struct rino *dir)
{
	uint64_t c = 2;

	for (size_t i = 0; i < dir->nents; i++)
		if (dir->ents[i].cookie >= c)
			c = dir->ents[i].cookie + 1;
	return c;
}

static bool has_name(const struct rino *dir, const char *name)
{
	for (size_t i = 0; i < dir->nents; i++)
		if (!strcmp(dir->ents[i].name, name))
			return true;
	return false;
}

/* Adds a new inode record INO (a directory, MODE) to R->in, sorted. */
static struct rino *new_dir(struct rp *R, uint64_t ino, uint32_t mode,
			    uint64_t parent)
{
	struct timespec ts;
	struct rino *ri;
	size_t at = R->nin;

	if (grow((void **)&R->in, &R->incap, R->nin, sizeof(*ri)) < 0)
		return NULL;
	while (at > 0 && R->in[at - 1].ino > ino)
		at--;
	memmove(&R->in[at + 1], &R->in[at], (R->nin - at) * sizeof(*ri));
	R->nin++;
	ri = &R->in[at];
	memset(ri, 0, sizeof(*ri));
	clock_gettime(CLOCK_REALTIME, &ts);
	ri->ino = ino;
	ri->d.mode = S_IFDIR | mode;
	ri->d.nlink = 2;
	ri->d.parent = parent;
	ri->d.atime_sec = ri->d.mtime_sec = ri->d.ctime_sec = ts.tv_sec;
	ri->d.atime_nsec = ri->d.mtime_nsec = ri->d.ctime_nsec =
		(uint32_t)ts.tv_nsec;
	rtree_init(&ri->data, VDP_TREE_BLOB, VDP_PAYLOAD, ino);
	rtree_init(&ri->xblob, VDP_TREE_BLOB, VDP_PAYLOAD, ino);
	ri->parsed = ri->ents_dirty = ri->rec_dirty = ri->created = true;
	return ri;
}

/* /lost+found, made when first needed; its index in R->in. */
static int lost_found(struct rp *R, size_t *out)
{
	struct rino *root = find(R, VDP_ROOT_INO), *lf;
	char name[32] = LF_NAME;
	uint64_t ino;

	for (size_t i = 0; i < root->nents; i++) {
		struct rino *c = find(R, root->ents[i].ino);

		if (!strcmp(root->ents[i].name, LF_NAME) && c &&
		    S_ISDIR(c->d.mode)) {
			*out = (size_t)(c - R->in);
			return 0;
		}
	}
	for (unsigned k = 1; has_name(root, name); k++)
		snprintf(name, sizeof(name), LF_NAME ".%u", k);
	ino = R->p->next_ino++;
	lf = new_dir(R, ino, 0700, VDP_ROOT_INO);
	if (!lf)
		return -ENOMEM;
	root = find(R, VDP_ROOT_INO); /* R->in moved */
	lf->reached = true;
	lf->parent = VDP_ROOT_INO;
	if (set_path(lf, root, name) < 0 ||
	    ent_add(root, ino, next_cookie(root), name, strlen(name)) < 0)
		return -ENOMEM;
	root->ents_dirty = true;
	root->subdirs++;
	change(R, "directory %s created (inode %llu)", lf->path,
	       (unsigned long long)ino);
	*out = (size_t)(lf - R->in);
	return 0;
}

/* Links the nameless inode at index I into /lost+found as "#INO". */
static int attach(struct rp *R, size_t i)
{
	char name[40];
	struct rino *lf, *ri;
	size_t li;
	int r = lost_found(R, &li);

	if (r < 0)
		return r;
	lf = &R->in[li];
	if (!lf->parsed && (r = parse_dir(R, lf)) < 0)
		return r;
	ri = &R->in[i]; /* a new lost+found sorts last: I still holds */
	snprintf(name, sizeof(name), "#%llu", (unsigned long long)ri->ino);
	for (unsigned k = 1; has_name(lf, name); k++)
		snprintf(name, sizeof(name), "#%llu.%u",
			 (unsigned long long)ri->ino, k);
	r = ent_add(lf, ri->ino, next_cookie(lf), name, strlen(name));
	if (r < 0)
		return r;
	lf->ents_dirty = true;
	ri->reached = true;
	r = set_path(ri, lf, name);
	change(R, "%s inode %llu had no name; linked as %s",
	       S_ISDIR(ri->d.mode) ? "directory" : "disk",
	       (unsigned long long)ri->ino, ri->path ? ri->path : name);
	if (S_ISDIR(ri->d.mode)) {
		ri->parent = lf->ino;
		lf->subdirs++;
		if (r == 0)
			r = walk(R, i);
	} else {
		ri->names++;
	}
	return r;
}

/* An inode to link into /lost+found: no name from the root, and a link
 * count (or, for a directory, entries).  One with neither was unlinked
 * while open: the next mount frees it. */
static bool wants_home(const struct rino *ri)
{
	return !ri->reached &&
	       (ri->d.nlink > 0 || (S_ISDIR(ri->d.mode) && ri->d.size > 0));
}

/* A nameless directory whose recorded parent is not one too: the top of a
 * nameless subtree. */
static bool orphan_top(struct rp *R, const struct rino *ri)
{
	const struct rino *up = find(R, ri->d.parent);

	return !(up && up != ri && S_ISDIR(up->d.mode) && wants_home(up));
}

static int fix_namespace(struct rp *R)
{
	struct vdp_pool *p = R->p;
	struct vdp_dinode *slot;
	struct rino *root;
	uint64_t max = 0;
	int r;

	/* Records that are neither file nor directory. */
	for (size_t i = 0; i < R->nin; i++) {
		struct rino *ri = &R->in[i];

		if (S_ISREG(ri->d.mode) || S_ISDIR(ri->d.mode))
			continue;
		if (ri->ino == VDP_ROOT_INO)
			continue; /* refused below */
		slot = rtree_slot(&p->inodes, ri->ino);
		if (!slot)
			return -ENOMEM;
		memset(slot, 0, sizeof(*slot));
		change(R,
		       "inode %llu: record has unsupported mode %#o; removed",
		       (unsigned long long)ri->ino, ri->d.mode);
		rtree_destroy(&ri->data);
		rtree_destroy(&ri->xblob);
		memmove(ri, ri + 1, (R->nin - i - 1) * sizeof(*ri));
		R->nin--;
		i--;
	}
	for (size_t i = 0; i < R->nin; i++)
		if (R->in[i].ino > max)
			max = R->in[i].ino;
	if (p->next_ino <= max) {
		change(R, "next inode number %llu -> %llu",
		       (unsigned long long)p->next_ino,
		       (unsigned long long)(max + 1));
		p->next_ino = max + 1;
	}
	root = find(R, VDP_ROOT_INO);
	if (root && !S_ISDIR(root->d.mode)) {
		vdp_set_error("pool %s: inode 1, the root directory, is not a "
			      "directory (mode %#o); repair cannot rebuild "
			      "the namespace",
			      p->name, root->d.mode);
		return -EUCLEAN;
	}
	if (!root) {
		root = new_dir(R, VDP_ROOT_INO, 0755, VDP_ROOT_INO);
		if (!root)
			return -ENOMEM;
		change(R, "the root directory (inode 1) was lost; made anew, "
			  "empty");
	}
	root->reached = true;
	root->path = strdup("");
	if (!root->path)
		return -ENOMEM;
	r = walk(R, (size_t)(root - R->in));
	/* Nameless directories: the top of each nameless subtree first. */
	for (bool again = true; r == 0 && again;) {
		size_t low = R->nin;

		again = false;
		for (size_t i = 0; i < R->nin && r == 0; i++) {
			if (!S_ISDIR(R->in[i].d.mode) || !wants_home(&R->in[i]))
				continue;
			if (low == R->nin)
				low = i;
			if (orphan_top(R, &R->in[i])) {
				r = attach(R, i);
				again = true;
			}
		}
		if (r == 0 && !again && low < R->nin) {
			r = attach(R, low); /* a loop of directories */
			again = true;
		}
	}
	for (size_t i = 0; i < R->nin && r == 0; i++)
		if (S_ISREG(R->in[i].d.mode) && wants_home(&R->in[i]))
			r = attach(R, i);
	if (r < 0)
		return r;
	/* Link counts and parents, from what the directories say. */
	for (size_t i = 0; i < R->nin; i++) {
		struct rino *ri = &R->in[i];
		uint64_t want;

		if (!ri->reached)
			continue;
		if (S_ISDIR(ri->d.mode)) {
			want = ri->ino == VDP_ROOT_INO ? VDP_ROOT_INO
						       : ri->parent;
			if (ri->d.parent != want) {
				if (!ri->created)
					change(R,
					       "directory %s: parent inode "
					       "%llu "
					       "-> %llu",
					       shown(ri),
					       (unsigned long long)ri->d.parent,
					       (unsigned long long)want);
				ri->d.parent = want;
				ri->rec_dirty = true;
			}
			want = 2 + ri->subdirs;
		} else {
			want = ri->names;
		}
		if (ri->d.nlink != want) {
			if (!ri->created)
				change(R, "%s %s: link count %u -> %llu",
				       S_ISDIR(ri->d.mode) ? "directory"
							   : "disk",
				       shown(ri), ri->d.nlink,
				       (unsigned long long)want);
			ri->d.nlink = (uint32_t)want;
			ri->rec_dirty = true;
		}
	}
	/* Xattrs of which a block is lost, or too long to be real. */
	static struct loss missing = {.why = "missing"};

	for (size_t i = 0; i < R->nin; i++) {
		struct rino *ri = &R->in[i];
		char who[300];
		struct loss *l = NULL;
		bool hole = false;

		for (uint64_t k = 0;
		     k * VDP_PAYLOAD < ri->d.xattr_len &&
		     ri->d.xattr_len <= XATTR_TOTAL_MAX && !hole;
		     k++)
			if (!rtree_lookup(&ri->xblob, k)) {
				hole = true;
				l = loss_of(R, VDP_TREE_BLOB, true, ri->ino, k);
			}
		if (!hole && ri->d.xattr_len <= XATTR_TOTAL_MAX)
			continue;
		if (hole && !l)
			l = &missing;
		name_of(R, ri->ino, who, sizeof(who));
		if (l)
			l->told = true;
		if (l)
			change(R,
			       "%s: a block of its xattrs has no good copy "
			       "(%s); its xattrs are removed",
			       who, l->why);
		else
			change(R,
			       "%s: xattrs of %llu bytes, over the %d-byte "
			       "limit; removed",
			       who, (unsigned long long)ri->d.xattr_len,
			       XATTR_TOTAL_MAX);
		ri->drop_xattrs = true;
	}
	return 0;
}

/* ---- extent maps and reference counts ------------------------------------ */

/* A run of virtual extents of one disk that repair reports together. */
struct run {
	uint64_t ino, first, end; /* [first, end) virtual extents */
	const char *what;	  /* NULL: no run */
	bool unmapped;
};

static void run_flush(struct rp *R, struct run *u)
{
	struct rino *ri;
	uint64_t a, b, size;
	char who[300];

	if (!u->what)
		return;
	ri = find(R, u->ino);
	size = ri ? ri->d.size : 0;
	a = sat_mul(u->first, R->p->extent_size);
	b = sat_mul(u->end, R->p->extent_size);
	name_of(R, u->ino, who, sizeof(who));
	if (a >= size)
		change(R, "%s: extents %llu-%llu, beyond its end, %s; unmapped",
		       who, (unsigned long long)u->first,
		       (unsigned long long)(u->end - 1), u->what);
	else
		change(R, "%s: bytes %llu-%llu %s; %sthey now read as zeros",
		       who, (unsigned long long)a,
		       (unsigned long long)((b < size ? b : size) - 1), u->what,
		       u->unmapped ? "unmapped, " : "");
	u->what = NULL;
}

static void run_add(struct rp *R, struct run *u, uint64_t ino, uint64_t vext,
		    const char *what, bool unmapped)
{
	if (u->what && (u->ino != ino || u->end != vext || u->what != what))
		run_flush(R, u);
	if (!u->what) {
		u->ino = ino;
		u->first = vext;
		u->what = what;
		u->unmapped = unmapped;
	}
	u->end = vext + 1;
}

struct mapwalk {
	struct rp *R;
	struct rino *ri;
	struct run run;
	struct u64vec unmap; /* virtual extents to unmap */
	char why[VDP_MAX_MEMBERS][200];
};

static int map_leaf(void *arg, const struct rnode *n, uint64_t base)
{
	struct mapwalk *w = arg;
	struct rp *R = w->R;
	struct vdp_pool *p = R->p;
	const uint64_t *e = (const uint64_t *)n->data;

	if (n->level)
		return 0;
	for (unsigned i = 0; i < VDP_PAYLOAD / 8; i++) {
		uint64_t pid = le64toh(e[i]), vext = base + i, start, cut;
		unsigned m;

		if (!pid)
			continue;
		w->ri->nmapped0++;
		if (!pid_valid(p, pid)) {
			run_add(R, &w->run, w->ri->ino, vext,
				"were mapped outside the pool", true);
			if (u64vec_push(&w->unmap, vext) < 0)
				return -ENOMEM;
			continue;
		}
		m = VDP_PID_MEMBER(pid);
		start = p->members[m].d.data_off +
			(VDP_PID_INDEX(pid) << p->extent_shift);
		cut = R->old_size[m];
		if (start >= cut) {
			run_add(R, &w->run, w->ri->ino, vext, w->why[m], true);
			if (u64vec_push(&w->unmap, vext) < 0)
				return -ENOMEM;
			continue;
		}
		if (start + p->extent_size > cut) {
			/* Stays mapped: its cut-off tail reads as zeros. */
			uint64_t a = sat_add(sat_mul(vext, p->extent_size),
					     cut - start),
				 b = sat_mul(vext + 1, p->extent_size);
			char who[300];

			if (b > w->ri->d.size)
				b = w->ri->d.size;
			name_of(R, w->ri->ino, who, sizeof(who));
			if (a < b)
				change(R,
				       "%s: bytes %llu-%llu lay on the cut-off "
				       "part of member %s; they now read as "
				       "zeros",
				       who, (unsigned long long)a,
				       (unsigned long long)(b - 1),
				       mpath(R, m));
		}
		if (grow((void **)&R->maps, &R->mapcap, R->nmaps,
			 sizeof(*R->maps)) < 0)
			return -ENOMEM;
		R->maps[R->nmaps].pid = pid;
		R->maps[R->nmaps++].ino = w->ri->ino;
		w->ri->nmapped++;
	}
	return 0;
}

/* Lost parts of extent maps, as lines. */
static void report_map_losses(struct rp *R)
{
	for (size_t i = 0; i < R->nloss; i++) {
		struct loss *l = &R->loss[i];
		struct rino *ri = find(R, l->owner);
		uint64_t a, b, size;
		char who[300];

		if (l->tree != VDP_TREE_MAP || !ri)
			continue;
		l->told = true;
		size = ri->d.size;
		a = sat_mul(l->first, R->p->extent_size);
		b = sat_mul(l->end, R->p->extent_size);
		name_of(R, l->owner, who, sizeof(who));
		if (a >= size)
			change(R,
			       "%s: metadata block %llu (extent map, level %d) "
			       "has no good copy (%s); it mapped only beyond "
			       "the end of the disk; dropped",
			       who, (unsigned long long)l->addr, l->level,
			       l->why);
		else
			change(R,
			       "%s: metadata block %llu (extent map, level %d) "
			       "has no good copy (%s): bytes %llu-%llu are "
			       "lost; they now read as zeros",
			       who, (unsigned long long)l->addr, l->level,
			       l->why, (unsigned long long)a,
			       (unsigned long long)((b < size ? b : size) - 1));
	}
}

static int fix_maps(struct rp *R)
{
	struct vdp_pool *p = R->p;
	int r = 0;

	report_map_losses(R);
	for (size_t i = 0; i < R->nin && r == 0; i++) {
		struct rino *ri = &R->in[i];
		struct mapwalk w = {.R = R, .ri = ri};

		if (!S_ISREG(ri->d.mode))
			continue;
		for (unsigned m = 0; m < p->nmembers; m++)
			snprintf(w.why[m], sizeof(w.why[m]),
				 "lay on the cut-off part of member %s",
				 mpath(R, m));
		r = rtree_visit(&ri->data, map_leaf, &w);
		run_flush(R, &w.run);
		for (size_t k = 0; k < w.unmap.n && r == 0; k++) {
			uint64_t *slot = rtree_slot(&ri->data, w.unmap.v[k]);

			if (!slot)
				r = -ENOMEM;
			else
				*slot = 0;
		}
		free(w.unmap.v);
		/* Unmapping changes the count too; report only a count that
		 * was wrong already. */
		if (ri->d.nalloc != ri->nmapped0)
			change(R, "disk %s: allocation count %llu -> %llu",
			       shown(ri), (unsigned long long)ri->d.nalloc,
			       (unsigned long long)ri->nmapped);
		if (ri->d.nalloc != ri->nmapped) {
			ri->d.nalloc = ri->nmapped;
			ri->rec_dirty = true;
		}
	}
	return r;
}

static int cmp_pair(const void *a, const void *b)
{
	const struct pair *x = a, *y = b;

	if (x->pid != y->pid)
		return x->pid < y->pid ? -1 : 1;
	return x->ino < y->ino ? -1 : x->ino > y->ino;
}

/* Runs of extents whose count changes the same way, reported together. */
struct crun {
	uint64_t first, last, ino; /* pids; the first disk mapping them */
	uint32_t have;
	uint64_t want;
	bool on;
};

static void crun_flush(struct rp *R, struct crun *c)
{
	unsigned m;
	char who[300], ext[64];

	if (!c->on)
		return;
	c->on = false;
	m = VDP_PID_MEMBER(c->first);
	if (c->first == c->last)
		snprintf(ext, sizeof(ext), "extent %llu",
			 (unsigned long long)VDP_PID_INDEX(c->first));
	else
		snprintf(ext, sizeof(ext), "extents %llu-%llu",
			 (unsigned long long)VDP_PID_INDEX(c->first),
			 (unsigned long long)VDP_PID_INDEX(c->last));
	if (c->want == 0) {
		change(R,
		       "member %s: %s: reference count %u -> 0, no disk maps "
		       "%s; freed",
		       mpath(R, m), ext, c->have,
		       c->first == c->last ? "it" : "them");
		return;
	}
	name_of(R, c->ino, who, sizeof(who));
	change(R, "%s: %s of member %s: reference count %u -> %llu", who, ext,
	       mpath(R, m), c->have, (unsigned long long)c->want);
}

static int fix_count(struct rp *R, struct crun *c, uint64_t pid, uint32_t have,
		     uint64_t want, uint64_t ino)
{
	struct vdp_pool *p = R->p;
	uint32_t *slot;

	if (have == want)
		return 0;
	if (!pid_valid(p, pid)) {
		crun_flush(R, c);
		change(R,
		       "reference count of extent id %#llx, outside the pool: "
		       "%u -> 0",
		       (unsigned long long)pid, have);
		slot = rtree_slot(&p->refc, pid);
		if (!slot)
			return -ENOMEM;
		*slot = 0;
		return 0;
	}
	if (want > UINT32_MAX)
		want = UINT32_MAX;
	if (c->on &&
	    (pid != c->last + 1 || have != c->have || want != c->want ||
	     VDP_PID_MEMBER(pid) != VDP_PID_MEMBER(c->first) ||
	     (want && ino != c->ino)))
		crun_flush(R, c);
	if (!c->on) {
		*c = (struct crun){.first = pid,
				   .ino = ino,
				   .have = have,
				   .want = want,
				   .on = true};
	}
	c->last = pid;
	slot = rtree_slot(&p->refc, pid);
	if (!slot)
		return -ENOMEM;
	*slot = htole32((uint32_t)want);
	if (want == 0)
		return u64vec_push(&p->pend_ext, pid); /* freed after commit */
	return mark_extent_used(p, pid);
}

struct countwalk {
	struct rp *R;
	struct crun run;
	size_t at; /* in R->maps */
	int r;
};

/* Entries of R->maps for the pid at c->at: how many, and the first disk. */
static uint64_t take(struct countwalk *c, uint64_t *pid, uint64_t *ino)
{
	struct rp *R = c->R;
	uint64_t n = 0;

	*pid = R->maps[c->at].pid;
	*ino = R->maps[c->at].ino;
	while (c->at < R->nmaps && R->maps[c->at].pid == *pid) {
		c->at++;
		n++;
	}
	return n;
}

static int refc_leaf(void *arg, const struct rnode *n, uint64_t base)
{
	struct countwalk *c = arg;
	struct rp *R = c->R;
	const uint32_t *e = (const uint32_t *)n->data;

	if (n->level)
		return 0;
	for (unsigned i = 0; i < VDP_PAYLOAD / 4 && c->r == 0; i++) {
		uint64_t pid = base + i, want = 0, ino = 0, x;
		uint32_t have = le32toh(e[i]);

		while (c->at < R->nmaps && R->maps[c->at].pid < pid) {
			uint64_t w = take(c, &x, &ino);

			c->r = fix_count(R, &c->run, x, 0, w, ino);
		}
		if (c->at < R->nmaps && R->maps[c->at].pid == pid)
			want = take(c, &x, &ino);
		if (c->r == 0)
			c->r = fix_count(R, &c->run, pid, have, want, ino);
	}
	return c->r;
}

static int fix_refcounts(struct rp *R)
{
	struct vdp_pool *p = R->p;
	struct countwalk c = {.R = R};
	struct rtree old;
	int r;

	for (size_t i = 0; i < R->nloss; i++) {
		struct loss *l = &R->loss[i];

		if (l->tree != VDP_TREE_REFC)
			continue;
		l->told = true;
		change(R,
		       "reference-count tree: metadata block %llu (level %d) "
		       "has no good copy (%s); the counts it held are "
		       "recounted from the extent maps",
		       (unsigned long long)l->addr, l->level, l->why);
	}
	if (R->nmaps)
		qsort(R->maps, R->nmaps, sizeof(*R->maps), cmp_pair);
	/* Walk a snapshot of the counts: fixing them changes the tree. */
	old = p->refc;
	r = rtree_visit(&old, refc_leaf, &c);
	while (r == 0 && c.r == 0 && c.at < R->nmaps) {
		uint64_t pid, ino, w = take(&c, &pid, &ino);

		c.r = fix_count(R, &c.run, pid, 0, w, ino);
	}
	crun_flush(R, &c.run);
	return r < 0 ? r : c.r;
}

/* ---- writing ------------------------------------------------------------- */

/* The losses of the inode tree and the rewritten copies, as the first
 * lines of the report. */
static void report_losses_and_fixes(struct rp *R)
{
	char what[400];

	R->front = true;
	for (size_t i = 0; i < R->nloss; i++) {
		struct loss *l = &R->loss[i];
		uint64_t last = l->end - 1;

		if (l->tree != VDP_TREE_INODES)
			continue;
		l->told = true;
		if (l->first == 0)
			l->first = 1; /* there is no inode 0 */
		if (last >= R->p->next_ino)
			last = R->p->next_ino - 1;
		change(R,
		       "inode tree: metadata block %llu (level %d) has no good "
		       "copy (%s): inodes %llu-%llu are lost, with the disks "
		       "and directories they were",
		       (unsigned long long)l->addr, l->level, l->why,
		       (unsigned long long)l->first, (unsigned long long)last);
	}
	for (size_t i = 0; i < R->nfix; i++) {
		const struct copyfix *f = &R->fix[i];

		if (f->tree == VDP_TREE_INODES || f->tree == VDP_TREE_REFC) {
			snprintf(what, sizeof(what), "%s",
				 fsck_tree_name(f->tree));
		} else {
			char who[300];

			name_of(R, f->owner, who, sizeof(who));
			snprintf(what, sizeof(what), "%s of %s",
				 f->xattr		   ? "xattrs"
				 : f->tree == VDP_TREE_MAP ? "extent map"
							   : "entries",
				 who);
		}
		change(R,
		       "metadata block %llu (%s, level %d): copy on %s at "
		       "offset %llu was bad (%s); rewritten from the copy on "
		       "%s",
		       (unsigned long long)f->addr, what, f->level,
		       mpath(R, f->bad), (unsigned long long)f->off, f->why,
		       mpath(R, f->good));
	}
	R->front = false;
}

/* Losses no other line told of: blocks of blobs past their length. */
static void report_other_losses(struct rp *R)
{
	for (size_t i = 0; i < R->nloss; i++) {
		struct loss *l = &R->loss[i];
		char who[300];

		if (l->told)
			continue;
		name_of(R, l->owner, who, sizeof(who));
		change(R,
		       "%s: metadata block %llu (%s, level %d) has no good "
		       "copy "
		       "(%s); dropped",
		       who, (unsigned long long)l->addr,
		       l->xattr ? "xattrs" : fsck_tree_name(l->tree), l->level,
		       l->why);
	}
}

static int write_dir(struct vdp_pool *p, struct rino *dir)
{
	uint64_t len = 0, o = 0;
	uint8_t *b;
	int r;

	for (size_t i = 0; i < dir->nents; i++)
		len += VDP_DIRENT_FIXED + strlen(dir->ents[i].name);
	b = malloc(len ? len : 1);
	if (!b)
		return -ENOMEM;
	for (size_t i = 0; i < dir->nents; i++) {
		uint64_t ino = htole64(dir->ents[i].ino),
			 ck = htole64(dir->ents[i].cookie);
		uint16_t l = htole16((uint16_t)strlen(dir->ents[i].name));

		memcpy(b + o, &ino, 8);
		memcpy(b + o + 8, &ck, 8);
		memcpy(b + o + 16, &l, 2);
		b[o + 18] = 0;
		memcpy(b + o + VDP_DIRENT_FIXED, dir->ents[i].name,
		       strlen(dir->ents[i].name));
		o += VDP_DIRENT_FIXED + strlen(dir->ents[i].name);
	}
	r = blob_write(p, &dir->data, b, len);
	free(b);
	dir->d.size = len;
	return r;
}

static bool root_eq(const struct vdp_droot *a, const struct vdp_droot *b)
{
	return a->addr == b->addr && a->height == b->height;
}

/* Serialises every changed inode into the inode tree and queues the blocks
 * of its own trees in the commit being built.  Under meta_lock. */
static int stage(struct rp *R)
{
	struct vdp_pool *p = R->p;
	int r = 0;

	p->build_txid = p->txid + 1; /* what do_commit will use */
	for (size_t i = 0; i < R->nin && r == 0; i++) {
		struct rino *ri = &R->in[i];
		struct vdp_dinode *slot;

		if (ri->ents_dirty)
			r = write_dir(p, ri);
		if (r == 0 && ri->drop_xattrs) {
			rtree_release(p, &ri->xblob);
			ri->d.xattr_len = 0;
		}
		if (r == 0)
			r = rtree_commit(p, &ri->data, &ri->d.data);
		if (r == 0)
			r = rtree_commit(p, &ri->xblob, &ri->d.xattr);
		if (r < 0)
			break;
		if (ri->ents_dirty || ri->drop_xattrs ||
		    !root_eq(&ri->d.data, &ri->ondisk_data) ||
		    !root_eq(&ri->d.xattr, &ri->ondisk_xattr))
			ri->rec_dirty = true;
		if (!ri->rec_dirty)
			continue;
		slot = rtree_slot(&p->inodes, ri->ino);
		if (!slot)
			r = -ENOMEM;
		else
			dinode_to_disk(&ri->d, slot);
	}
	p->changed = true;
	return r;
}

static void free_all(struct rp *R)
{
	for (size_t i = 0; i < R->nin; i++) {
		struct rino *ri = &R->in[i];

		rtree_destroy(&ri->data);
		rtree_destroy(&ri->xblob);
		for (size_t k = 0; k < ri->nents; k++)
			free(ri->ents[k].name);
		free(ri->ents);
		free(ri->path);
	}
	for (size_t i = 0; i < R->nlines; i++)
		free(R->lines[i]);
	free(R->lines);
	free(R->in);
	free(R->loss);
	free(R->fix);
	free(R->maps);
	free(R->blk);
}

static void phase(struct rp *R, const char *what)
{
	if (R->phase)
		R->phase(R->ctx, what);
}

int vdp_pool_repair(const char *spec,
		    void (*report)(void *ctx, const char *line),
		    void (*progress)(void *ctx, const char *what), void *ctx)
{
	struct rp R = {.report = report, .phase = progress, .ctx = ctx};
	struct vdp_pool *p;
	int r;

	phase(&R, "opening the pool");
	r = vdp_pool_open(spec, POOL_OPEN_REPAIR, &p);
	if (r == -EBADMSG || r == -ESTALE) {
		char err[1024];

		snprintf(err, sizeof(err), "%s", vdp_last_error());
		vdp_set_error("%s; %s", err,
			      strchr(spec, '/') || access(spec, F_OK) == 0
				      ? "give the pool's name, so that repair "
					"can read another member's superblock"
				      : "no member has a valid superblock of "
					"this pool to repair from");
		return -EUCLEAN;
	}
	if (r < 0)
		return r;
	R.p = p;
	if (posix_memalign(&R.blk, 4096, VDP_BLOCK_SIZE) != 0) {
		r = -ENOMEM;
		goto out;
	}
	r = check_sizes(&R);
	if (r < 0)
		goto out;
	/* Everything is read and decided in memory before anything is
	 * written, so what repair refuses, it refuses untouched. */
	pthread_mutex_lock(&p->meta_lock);
	phase(&R, "metadata blocks");
	r = load_all(&R);
	if (r == 0) {
		phase(&R, "directories and inodes");
		r = fix_namespace(&R);
	}
	if (r == 0) {
		phase(&R, "extent maps and reference counts");
		report_losses_and_fixes(&R);
		r = fix_maps(&R);
	}
	if (r == 0)
		r = fix_refcounts(&R);
	if (r == 0)
		report_other_losses(&R);
	if (r == 0)
		r = R.err;
	pthread_mutex_unlock(&p->meta_lock);
	if (r == 0) {
		phase(&R, "members and superblocks");
		r = fix_members(&R);
	}
	pthread_mutex_lock(&p->meta_lock);
	if (r == 0 && (R.nlines || R.force_commit))
		r = stage(&R);
	pthread_mutex_unlock(&p->meta_lock);
	if (r == 0 && (R.nlines || R.force_commit)) {
		phase(&R, "committing");
		r = vdp_pool_commit(p);
		if (r == 0) {
			for (size_t i = 0; i < R.nlines; i++)
				R.report(R.ctx, R.lines[i]);
			R.changes += (int)R.nlines;
		}
	}
out:
	if (r < 0) {
		/* Nothing more may be written: not even close's commit. */
		pthread_mutex_lock(&p->meta_lock);
		p->failed = true;
		pthread_mutex_unlock(&p->meta_lock);
		if (r == -ENOMEM && !*vdp_last_error())
			vdp_set_error("pool %s: out of memory", p->name);
	}
	free_all(&R);
	{
		char err[1024];

		/* close must not replace the sentence of a failure */
		snprintf(err, sizeof(err), "%s", vdp_last_error());
		vdp_pool_close(p);
		if (r < 0)
			vdp_set_error("%s", err);
	}
	return r < 0 ? r : R.changes;
}
