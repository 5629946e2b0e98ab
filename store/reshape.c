/* SPDX-License-Identifier: MIT */
/*
 * reshape.c - growing and shrinking a pool while its disks are in use:
 * adding a member, removing one (its metadata copies and extents move to
 * the others), balancing, and recording a member that grew.
 *
 * Moving an extent: a scan of every disk's map finds the entries that name
 * it.  Those disks are locked (io exclusive, in inode order, as
 * copy_file_range does), the extent is copied once, and every entry that
 * still names it is switched to the copy in one hold of meta_lock; then
 * the locks are dropped.  No write can land in the old extent between the
 * copy and the switch: its writers wait on the io lock.  A disk that took
 * a share of it after the scan (a clone) never writes it in place (its
 * count was above one, so it stays marked shared, extent_was_shared,
 * after the switch drops the others) and is found by the next pass.  The
 * old extent is freed by the switch and, like any freed extent, reused
 * only once the commit that stops naming it is durable; until then a
 * crash finds the old map and the old extent, untouched.
 *
 * Changes to the member table and the metadata chunks happen in
 * pool_commit_with's PREP, while no commit runs (a commit reads both
 * without meta_lock), and are durable when it returns.
 *
 * Must never: lose a write to an extent being moved, reuse what the last
 * commit still names, or drop a member that still holds anything.
 */
#include <endian.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>

#include "internal.h"

#define COMMIT_EVERY_MS 1000 /* a moving task commits at least this often */

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static bool same_file(const char *a, const char *b)
{
	struct stat x, y;

	if (stat(a, &x) < 0 || stat(b, &y) < 0)
		return false;
	if (S_ISBLK(x.st_mode) && S_ISBLK(y.st_mode))
		return x.st_rdev == y.st_rdev;
	return x.st_dev == y.st_dev && x.st_ino == y.st_ino;
}

/* The index of the member (not removed) at path SPEC, or -ENOENT with a
 * sentence. */
static int find_member(struct vdp_pool *p, const char *spec)
{
	char real[PATH_MAX];

	if (!realpath(spec, real))
		snprintf(real, sizeof(real), "%s", spec);
	for (unsigned i = 0; i < p->nmembers; i++) {
		const struct pmember *pm = &p->members[i];

		if (pm->d.state == VDP_MS_REMOVED)
			continue;
		if (!strcmp(pm->d.path, real) || same_file(pm->d.path, spec) ||
		    vdp_member_spec_names(pm->d.path, spec))
			return (int)i;
	}
	vdp_set_error("%s is not a member of pool %s", spec, p->name);
	return -ENOENT;
}

/* The start of a public call that changes member SPEC: its index, or
 * -EROFS, or -ENOENT with a sentence. */
static int member_to_change(struct vdp_pool *p, const char *spec)
{
	vdp_clear_error();
	if (p->rdonly)
		return -EROFS;
	return find_member(p, spec);
}

static unsigned count_state(const struct vdp_pool *p, uint32_t state)
{
	unsigned n = 0;

	for (unsigned i = 0; i < p->nmembers; i++)
		n += p->members[i].d.state == state;
	return n;
}

/* ---- add ----------------------------------------------------------------- */

struct add_ctx {
	struct vdp_member *m;
	struct vdp_dmember d;
	unsigned idx;
	bool added; /* PREP put it in the table */
};

/*
 * The metadata area grows with the pool: when the members' total size
 * after the add calls for more than 1/256 of it (what create gives), a new
 * chunk of the missing size (whole MiB) gets one copy at the front of the
 * new member (its data_off moves past it) and the other in a run of free
 * extents of the active member with the most free extents.  Without such a
 * run, or with 16 chunks already, no chunk is added.  Under meta_lock, in
 * PREP; A->d is updated.
 */
static int add_chunk(struct vdp_pool *p, struct add_ctx *a, unsigned idx)
{
	uint64_t total = a->d.size, have = p->meta_blocks * VDP_BLOCK_SIZE;
	uint64_t bytes, e = p->extent_size, need, first = 0, data_off, *mu;
	struct vdp_dchunk *ch;
	int t = -1;

	for (unsigned i = 0; i < p->nmembers; i++)
		if (p->members[i].d.state != VDP_MS_REMOVED)
			total += p->members[i].d.size;
	if (p->nchunks >= VDP_MAX_CHUNKS || total / 256 <= have)
		return 0;
	bytes = (total / 256 - have + (1u << 20) - 1) &
		~(uint64_t)((1u << 20) - 1);
	data_off = (VDP_HEADER_AREA + bytes + e - 1) & ~(e - 1);
	if (a->m->size < data_off + 16 * e)
		return 0; /* the new member is too small to carry it */
	need = (bytes + e - 1) >> p->extent_shift;
	for (unsigned i = 0; i < p->nmembers; i++) {
		uint64_t f;

		if (i == idx || p->members[i].d.state != VDP_MS_ACTIVE ||
		    (t >= 0 && p->members[i].nfree <= p->members[t].nfree))
			continue;
		if (alloc_find_run(p, i, need, &f) == 0) {
			t = (int)i;
			first = f;
		}
	}
	if (t < 0)
		return 0;
	mu = realloc(p->meta_used,
		     ((p->meta_blocks + bytes / VDP_BLOCK_SIZE + 63) / 64) * 8);
	if (!mu)
		return -ENOMEM;
	p->meta_used = mu;
	/* Clear the new bits, from the old end (its word's high bits are
	 * clear already: no block beyond meta_blocks was ever taken). */
	memset(mu + (p->meta_blocks + 63) / 64, 0,
	       ((p->meta_blocks + bytes / VDP_BLOCK_SIZE + 63) / 64 -
		(p->meta_blocks + 63) / 64) *
		       8);
	alloc_mark_run(p, (unsigned)t, first, need, true);
	ch = &p->chunks[p->nchunks++];
	memset(ch, 0, sizeof(*ch));
	ch->lstart = p->meta_blocks;
	ch->nblocks = bytes / VDP_BLOCK_SIZE;
	ch->ncopies = 2;
	ch->member[0] = (uint16_t)idx;
	ch->offset[0] = VDP_HEADER_AREA;
	ch->member[1] = (uint16_t)t;
	ch->offset[1] = p->members[t].d.data_off + (first << p->extent_shift);
	p->meta_blocks += ch->nblocks;
	p->meta_nfree += ch->nblocks;
	a->d.data_off = data_off;
	a->d.nextents = (a->m->size - data_off) >> p->extent_shift;
	if (a->d.nextents >= (1ull << VDP_PID_IDX_BITS))
		a->d.nextents = (1ull << VDP_PID_IDX_BITS) - 1;
	return 0;
}

static int add_prep(struct vdp_pool *p, void *ctx)
{
	struct add_ctx *a = ctx;
	uint64_t *used = calloc((a->d.nextents + 63) / 64 + 1, 8);
	uint64_t *unshared = calloc((a->d.nextents + 63) / 64 + 1, 8);
	struct pmember *pm;
	unsigned idx;
	int r = 0;

	pthread_mutex_lock(&p->meta_lock);
	for (idx = 0; idx < p->nmembers; idx++)
		if (p->members[idx].d.state == VDP_MS_REMOVED)
			break; /* reuse a tombstone: nothing names it */
	if (used && unshared && idx < VDP_MAX_MEMBERS)
		r = add_chunk(p, a, idx); /* only shrinks a->d.nextents */
	if (!used || !unshared || idx >= VDP_MAX_MEMBERS || r < 0) {
		pthread_mutex_unlock(&p->meta_lock);
		free(used);
		free(unshared);
		if (idx >= VDP_MAX_MEMBERS) {
			vdp_set_error("pool %s already has %d members", p->name,
				      VDP_MAX_MEMBERS);
			return -EMLINK;
		}
		return -ENOMEM;
	}
	pm = &p->members[idx];
	free(pm->used);
	free(pm->unshared);
	pm->used = used;
	pm->unshared = unshared;
	pm->d = a->d;
	pm->d.added_txid = p->txid + 1; /* the commit that follows PREP */
	pm->m = a->m;
	pm->nfree = a->d.nextents;
	pm->cursor = 0;
	pm->err_read = pm->err_write = pm->err_flush = pm->bad_copies = 0;
	pm->last_error[0] = 0;
	atomic_store(&pm->written, false);
	if (idx == p->nmembers)
		p->nmembers++;
	p->super_first = idx + 1;
	a->idx = idx;
	a->added = true;
	pthread_mutex_unlock(&p->meta_lock);
	return 0;
}

/* Whether superblock S (valid) says M is a member of P that P still has. */
static bool is_our_member(const struct vdp_pool *p, const struct vdp_dsuper *s)
{
	if (memcmp(s->h.pool_uuid, p->uuid, 16) != 0)
		return false;
	for (unsigned i = 0; i < p->nmembers; i++)
		if (p->members[i].d.state != VDP_MS_REMOVED &&
		    !memcmp(p->members[i].d.uuid, s->member_uuid, 16))
			return true;
	return false;
}

int vdp_pool_add_member(struct vdp_pool *p, const char *path, bool force)
{
	struct add_ctx a = {0};
	struct vdp_dsuper *s = NULL;
	char real[PATH_MAX], why[200];
	uint64_t e = p->extent_size;
	void *z = NULL;
	int r;

	vdp_clear_error();
	if (p->rdonly)
		return -EROFS;
	/* As create: a URL or lvm: spec is kept as given (the member kind
	 * makes its m->path), a path is resolved. */
	if (!vdp_member_spec_is_path(path)) {
		snprintf(real, sizeof(real), "%s", path);
	} else if (!realpath(path, real)) {
		r = -errno;
		vdp_set_error("member %s: %s", path, strerror(-r));
		return r;
	} else if (strlen(real) >= sizeof(a.d.path)) {
		vdp_set_error("member %s: path longer than %zu bytes", real,
			      sizeof(a.d.path) - 1);
		return -ENAMETOOLONG;
	}
	if (count_state(p, VDP_MS_REMOVED) == 0 &&
	    p->nmembers >= VDP_MAX_MEMBERS) {
		vdp_set_error("pool %s already has %d members", p->name,
			      VDP_MAX_MEMBERS);
		return -EMLINK;
	}
	r = vdp_member_open(real, false, &a.m);
	if (r < 0)
		return r;
	for (unsigned i = 0; i < p->nmembers; i++) {
		const struct pmember *pm = &p->members[i];

		if (pm->d.state != VDP_MS_REMOVED && pm->m &&
		    vdp_member_overlap(a.m, pm->m, why, sizeof(why))) {
			vdp_set_error("member %s is already in pool %s (%s)",
				      path, p->name, why);
			r = -EEXIST;
			goto err_close;
		}
	}
	if (a.m->ops->lock && (r = a.m->ops->lock(a.m, true)) < 0) {
		vdp_set_error("member %s is in use by another process (a "
			      "member of a mounted pool?)",
			      path);
		goto err_close;
	}
	r = -ENOMEM;
	if (posix_memalign((void **)&s, 4096, sizeof(*s)) != 0)
		goto err_close;
	if (pool_super_read(a.m, s, why, sizeof(why)) == 0 &&
	    memcmp(s->h.pool_uuid, p->uuid, 16) == 0) {
		/* Ours: a member of the pool under another path, or what an
		 * interrupted add or a removal left (free to take). */
		r = 0;
		if (is_our_member(p, s)) {
			vdp_set_error("member %s is already in pool %s", path,
				      p->name);
			r = -EEXIST;
		}
	} else {
		r = pool_check_signature(a.m, force);
	}
	if (r < 0)
		goto err_close;
	a.d.data_off = (VDP_HEADER_AREA + e - 1) & ~(e - 1);
	a.d.nextents = a.m->size > a.d.data_off
			       ? (a.m->size - a.d.data_off) >> p->extent_shift
			       : 0;
	if (a.d.nextents >= (1ull << VDP_PID_IDX_BITS))
		a.d.nextents = (1ull << VDP_PID_IDX_BITS) - 1;
	if (a.d.nextents < 16) {
		vdp_set_error("member %s is too small: %llu bytes, needs at "
			      "least %llu",
			      path, (unsigned long long)a.m->size,
			      (unsigned long long)(a.d.data_off + 16 * e));
		r = -ENOSPC;
		goto err_close;
	}
	a.d.size = a.m->size;
	a.d.kind = (uint32_t)a.m->kind;
	a.d.state = VDP_MS_ACTIVE;
	snprintf(a.d.path, sizeof(a.d.path), "%s", a.m->path);
	if (getrandom(a.d.uuid, 16, 0) != 16) {
		r = -errno;
		goto err_close;
	}
	/* No superblock of an older pool may outrank ours on it. */
	r = -ENOMEM;
	if (posix_memalign(&z, 4096, VDP_HEADER_AREA) != 0)
		goto err_close;
	memset(z, 0, VDP_HEADER_AREA);
	r = a.m->ops->pwrite(a.m, z, VDP_HEADER_AREA, 0);
	if (r == 0)
		r = a.m->ops->flush(a.m);
	free(z);
	if (r < 0) {
		vdp_set_error("member %s: write failed: %s", path,
			      strerror(-r));
		goto err_close;
	}
	free(s);
	s = NULL;
	r = pool_commit_with(p, add_prep, &a);
	if (r < 0 && !a.added)
		goto err_close;
	if (r < 0)
		return r; /* in the pool now; the next commit retries */
	return pool_register(p);

err_close:
	free(s);
	vdp_member_close(a.m);
	return r;
}

/* ---- moving extents ------------------------------------------------------ */

struct ent {
	uint64_t pid, ino, vext;
};

struct entvec {
	struct ent *v;
	size_t n, cap;
};

static int ent_push(struct entvec *a, uint64_t pid, uint64_t ino, uint64_t vext)
{
	if (a->n == a->cap) {
		size_t cap = a->cap ? a->cap * 2 : 256;
		struct ent *v = realloc(a->v, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		a->v = v;
		a->cap = cap;
	}
	a->v[a->n++] = (struct ent){pid, ino, vext};
	return 0;
}

static int ent_cmp(const void *a, const void *b)
{
	const struct ent *x = a, *y = b;

	if (x->pid != y->pid)
		return x->pid < y->pid ? -1 : 1;
	if (x->ino != y->ino)
		return x->ino < y->ino ? -1 : 1;
	return x->vext < y->vext ? -1 : x->vext > y->vext;
}

/* Every map entry of every disk whose extent is on a member with its bit
 * set in MASK, sorted by extent, then inode. */
static int scan_maps(struct vdp_pool *p, uint64_t mask, struct entvec *out)
{
	int r = 0;

	pthread_mutex_lock(&p->meta_lock);
	for (size_t b = 0; b < p->vtab_size && r == 0; b++)
		for (struct vnode *v = p->vtab[b]; v && r == 0; v = v->hnext) {
			uint64_t base, key = 0;
			struct rnode *leaf;

			if (!S_ISREG(v->d.mode))
				continue;
			while (r == 0 &&
			       (leaf = rtree_leaf_from(&v->data, key, &base))) {
				const uint64_t *e =
					(const uint64_t *)leaf->data;

				for (unsigned i = 0;
				     i < v->data.per_leaf && r == 0; i++) {
					uint64_t pid = le64toh(e[i]);

					if (pid && pid_valid(p, pid) &&
					    (mask >> VDP_PID_MEMBER(pid) & 1))
						r = ent_push(out, pid, v->ino,
							     base + i);
				}
				key = base + v->data.per_leaf;
				if (key < base)
					break;
			}
		}
	pthread_mutex_unlock(&p->meta_lock);
	if (r == 0 && out->n)
		qsort(out->v, out->n, sizeof(out->v[0]), ent_cmp);
	return r;
}

/* A new extent: on member TARGET, or by the allocation policy (< 0). */
static int take_for_move(struct vdp_pool *p, int target, uint64_t *pid)
{
	int r;

	for (int tries = 0;; tries++) {
		pthread_mutex_lock(&p->meta_lock);
		r = target < 0 ? alloc_extent(p, pid)
			       : alloc_extent_on(p, (unsigned)target, pid);
		pthread_mutex_unlock(&p->meta_lock);
		if (r != -ENOSPC || tries)
			break;
		/* What the open transaction freed is free after a commit. */
		r = vdp_pool_commit(p);
		if (r < 0)
			break;
	}
	if (r == -ENOSPC)
		vdp_set_error("pool %s: no free extent left on the other "
			      "members",
			      p->name);
	return r;
}

/*
 * Moves extent PID, named by the N entries G (sorted by inode), to a new
 * extent (see take_for_move).  Returns 1 if moved, 0 if no entry named it
 * any more, or -errno with a sentence (nothing changed).
 */
static int move_group(struct vdp_pool *p, const struct ent *g, size_t n,
		      int target, void *buf)
{
	struct vnode **vs = calloc(n, sizeof(*vs));
	uint64_t npid = 0;
	size_t nv = 0, still = 0;
	int r = 0;

	if (!vs)
		return -ENOMEM;
	/* Pin each disk (a lookup reference, so an unlink cannot free it
	 * under us), then lock them in inode order. */
	pthread_mutex_lock(&p->meta_lock);
	for (size_t i = 0; i < n; i++) {
		struct vnode *v;

		if (nv && vs[nv - 1]->ino == g[i].ino)
			continue;
		v = vnode_get(p, g[i].ino);
		if (v && S_ISREG(v->d.mode)) {
			v->nlookup++;
			vs[nv++] = v;
		}
	}
	pthread_mutex_unlock(&p->meta_lock);
	for (size_t i = 0; i < nv; i++)
		vnode_lock_excl(vs[i]);

	for (size_t i = 0, k = 0; i < n; i++) {
		const uint64_t *s;

		while (k < nv && vs[k]->ino < g[i].ino)
			k++;
		if (k == nv || vs[k]->ino != g[i].ino)
			continue;
		s = rtree_lookup(&vs[k]->data, g[i].vext);
		still += s && le64toh(*s) == g[0].pid;
	}
	if (still == 0)
		goto out;
	r = take_for_move(p, target, &npid);
	if (r < 0)
		goto out;
	/* Flushed by the commit before any map names it. */
	r = vdisk_copy_extent(p, g[0].pid, npid, buf);
	pthread_mutex_lock(&p->meta_lock);
	still = 0;
	for (size_t i = 0, k = 0; i < n && r >= 0; i++) {
		int s;

		while (k < nv && vs[k]->ino < g[i].ino)
			k++;
		if (k == nv || vs[k]->ino != g[i].ino)
			continue;
		s = vdisk_remap(p, vs[k], g[i].vext, g[0].pid, npid);
		if (s < 0)
			r = s;
		still += s > 0;
	}
	if (still == 0)
		unalloc_extent(p, npid);
	pthread_mutex_unlock(&p->meta_lock);
	if (r == 0)
		r = still > 0;
out:
	for (size_t i = nv; i-- > 0;)
		pthread_rwlock_unlock(&vs[i]->io);
	for (size_t i = 0; i < nv; i++)
		vdp_forget(p, vs[i]->ino, 1);
	free(vs);
	return r;
}

static bool stopping(struct vdp_pool *p)
{
	return atomic_load(&p->task.stop);
}

static void task_add_done(struct vdp_pool *p, uint64_t n)
{
	pthread_mutex_lock(&p->task_lock);
	p->task.done += n;
	if (p->task.done > p->task.total)
		p->task.total = p->task.done;
	pthread_mutex_unlock(&p->task_lock);
}

void vdp_pool_set_move_rate(struct vdp_pool *p, uint64_t bytes_per_s)
{
	pthread_mutex_lock(&p->task_lock);
	p->task.rate = bytes_per_s;
	/* A removal's rate is kept with its member, from the next commit. */
	pthread_mutex_lock(&p->meta_lock);
	for (unsigned i = 0; i < p->nmembers; i++)
		if (p->members[i].d.state == VDP_MS_LEAVING &&
		    p->members[i].d.move_rate != bytes_per_s) {
			p->members[i].d.move_rate = bytes_per_s;
			p->changed = true;
		}
	pthread_mutex_unlock(&p->meta_lock);
	pthread_mutex_unlock(&p->task_lock);
}

/* Sleeps so that N extents moved since START_MS keep to the rate limit
 * (vdp_pool_set_move_rate); wakes early to stop. */
static void throttle(struct vdp_pool *p, uint64_t start_ms, uint64_t n)
{
	uint64_t rate, due;

	pthread_mutex_lock(&p->task_lock);
	rate = p->task.rate;
	pthread_mutex_unlock(&p->task_lock);
	if (!rate)
		return;
	due = start_ms + (uint64_t)((double)n * (double)p->extent_size *
				    1000.0 / (double)rate);
	while (now_ms() < due && !stopping(p)) {
		struct timespec ts = {0, 20 * 1000000};

		nanosleep(&ts, NULL);
	}
}

/* Commits if the last one was long ago: bounds what a crash redoes and
 * lets the freed extents be reused. */
static int maybe_commit(struct vdp_pool *p, uint64_t *last)
{
	if (now_ms() - *last < COMMIT_EVERY_MS)
		return 0;
	*last = now_ms();
	return vdp_pool_commit(p);
}

/* One pass of a removal: moves every extent a disk maps on member MI.
 * *FOUND gets how many extents the scan found there. */
static int evacuate_pass(struct vdp_pool *p, unsigned mi, size_t *found)
{
	struct entvec es = {0};
	uint64_t last = now_ms(), start = last, moved = 0;
	void *buf = NULL;
	int r = scan_maps(p, 1ull << mi, &es);

	*found = 0;
	if (r == 0 && es.n &&
	    posix_memalign(&buf, 4096, (size_t)p->extent_size) != 0)
		r = -ENOMEM;
	for (size_t i = 0, j; r >= 0 && i < es.n && !stopping(p); i = j) {
		for (j = i + 1; j < es.n && es.v[j].pid == es.v[i].pid; j++)
			;
		(*found)++;
		r = move_group(p, &es.v[i], j - i, -1, buf);
		if (r > 0) {
			task_add_done(p, 1);
			throttle(p, start, ++moved);
		}
		if (r >= 0)
			r = maybe_commit(p, &last);
	}
	free(buf);
	free(es.v);
	return r < 0 ? r : 0;
}

/* ---- moving metadata chunk copies ---------------------------------------- */

struct chunk_move {
	unsigned c, k;	/* chunk, copy */
	int target;	/* member, or -1: drop the copy */
	uint64_t first; /* first extent of the run on TARGET */
};

/* The extents that copy K of chunk CH took in a data area are freed by
 * the commit that stops naming them (as a freed extent is).  Under
 * meta_lock, before the chunk changes. */
static void release_chunk_copy(struct vdp_pool *p, const struct vdp_dchunk *ch,
			       unsigned k)
{
	uint64_t first, n;

	if (!chunk_data_run(p, ch, k, &first, &n))
		return;
	for (uint64_t x = first; x < first + n; x++)
		/* On ENOMEM they merely stay taken until the next open. */
		(void)u64vec_push(&p->pend_ext, VDP_PID_MAKE(ch->member[k], x));
}

/* Copies copy K of chunk C to its new place and switches the chunk to it;
 * no commit runs meanwhile, and nothing else writes metadata. */
static int chunk_prep(struct vdp_pool *p, void *ctx)
{
	struct chunk_move *cm = ctx;
	struct vdp_dchunk *ch = &p->chunks[cm->c];
	uint64_t len = ch->nblocks * VDP_BLOCK_SIZE, step = 1u << 20, noff;
	struct pmember *tm;
	void *buf;
	int r = 0;

	if (cm->target < 0) {
		/* Two members left to one: keep the other copy only. */
		pthread_mutex_lock(&p->meta_lock);
		release_chunk_copy(p, ch, cm->k);
		ch->member[0] = ch->member[1 - cm->k];
		ch->offset[0] = ch->offset[1 - cm->k];
		ch->member[1] = 0;
		ch->offset[1] = 0;
		ch->ncopies = 1;
		pthread_mutex_unlock(&p->meta_lock);
		return 0;
	}
	tm = &p->members[cm->target];
	noff = tm->d.data_off + (cm->first << p->extent_shift);
	if (posix_memalign(&buf, 4096, step) != 0)
		return -ENOMEM;
	for (uint64_t o = 0; r == 0 && o < len; o += step) {
		size_t n = (size_t)(len - o < step ? len - o : step);

		r = -EIO;
		for (unsigned k = 0; r < 0 && k < ch->ncopies; k++) {
			/* The leaving copy first; the other if it fails. */
			unsigned kk = k == 0 ? cm->k : 1 - cm->k;
			struct pmember *sm = &p->members[ch->member[kk]];

			r = sm->m->ops->pread(sm->m, buf, n,
					      ch->offset[kk] + o);
			if (r < 0)
				member_error(p, sm, IO_READ, "metadata read",
					     r);
		}
		if (r == 0) {
			r = tm->m->ops->pwrite(tm->m, buf, n, noff + o);
			if (r < 0)
				member_error(p, tm, IO_WRITE, "metadata write",
					     r);
		}
	}
	free(buf);
	if (r == 0 && (r = tm->m->ops->flush(tm->m)) < 0)
		member_error(p, tm, IO_FLUSH, "flush", r);
	pthread_mutex_lock(&p->meta_lock);
	if (r == 0) {
		release_chunk_copy(p, ch, cm->k);
		ch->member[cm->k] = (uint16_t)cm->target;
		ch->offset[cm->k] = noff;
	} else {
		alloc_mark_run(p, (unsigned)cm->target, cm->first,
			       chunk_extents(p, ch), false);
	}
	pthread_mutex_unlock(&p->meta_lock);
	return r;
}

/*
 * Where copy K of chunk CH, on member MI, can go: the active member with
 * the most free extents that has a run of them for it and does not hold
 * the chunk's other copy (its index, the run's start in *FIRST), or -1.
 * -1 with *HOMELESS false means the copy can simply be dropped: the only
 * other member holds the other copy.  Under meta_lock.
 */
static int chunk_target(struct vdp_pool *p, const struct vdp_dchunk *ch,
			unsigned k, unsigned mi, uint64_t *first,
			bool *homeless)
{
	int other = ch->ncopies == 2 ? ch->member[1 - k] : -1, t = -1;
	bool elsewhere = false; /* a third member exists */

	for (unsigned i = 0; i < p->nmembers; i++) {
		uint64_t f;

		if (p->members[i].d.state != VDP_MS_ACTIVE || (int)i == other ||
		    i == mi)
			continue;
		elsewhere = true;
		if (t >= 0 && p->members[i].nfree <= p->members[t].nfree)
			continue;
		if (alloc_find_run(p, i, chunk_extents(p, ch), &f) == 0) {
			t = (int)i;
			*first = f;
		}
	}
	*homeless = t < 0 && (other < 0 || elsewhere);
	return t;
}

/* Moves every metadata chunk copy on member MI to another member (see
 * chunk_target), or drops it when the only other member holds the other
 * copy. */
static int move_chunks(struct vdp_pool *p, unsigned mi)
{
	for (unsigned c = 0; c < p->nchunks && !stopping(p); c++)
		for (unsigned k = 0; k < p->chunks[c].ncopies; k++) {
			struct vdp_dchunk *ch = &p->chunks[c];
			struct chunk_move cm = {.c = c, .k = k};
			uint64_t need = chunk_extents(p, ch);
			bool homeless;
			int r;

			if (ch->member[k] != mi)
				continue;
			pthread_mutex_lock(&p->meta_lock);
			cm.target = chunk_target(p, ch, k, mi, &cm.first,
						 &homeless);
			if (cm.target >= 0)
				alloc_mark_run(p, (unsigned)cm.target, cm.first,
					       need, true);
			pthread_mutex_unlock(&p->meta_lock);
			if (homeless) {
				vdp_set_error("pool %s: no member has %llu "
					      "free extents in a row for "
					      "metadata chunk %u of member %s",
					      p->name, (unsigned long long)need,
					      c, p->members[mi].d.path);
				return -ENOSPC;
			}
			r = pool_commit_with(p, chunk_prep, &cm);
			if (r < 0)
				return r;
			k = (unsigned)-1; /* the copies moved: look again */
		}
	return 0;
}

/* ---- the task thread -------------------------------------------------- */

struct drop_ctx {
	unsigned mi;
	struct vdp_member *m;
};

/* The last step of a removal: the member becomes a tombstone. */
static int drop_prep(struct vdp_pool *p, void *ctx)
{
	struct drop_ctx *d = ctx;
	struct pmember *pm = &p->members[d->mi];
	int r = 0;

	pthread_mutex_lock(&p->meta_lock);
	for (unsigned c = 0; c < p->nchunks; c++)
		for (unsigned k = 0; k < p->chunks[c].ncopies; k++)
			if (p->chunks[c].member[k] == d->mi)
				r = -EBUSY;
	if (r == 0 && pm->nfree != pm->d.nextents)
		r = -EBUSY;
	if (r < 0) {
		vdp_set_error("member %s still has %llu extents in use that "
			      "no disk maps; run vdpool check",
			      pm->d.path,
			      (unsigned long long)(pm->d.nextents - pm->nfree));
	} else {
		d->m = pm->m;
		pm->m = NULL;
		memset(&pm->d, 0, sizeof(pm->d));
		pm->d.state = VDP_MS_REMOVED;
		pm->nfree = 0;
		atomic_store(&pm->written, false);
	}
	pthread_mutex_unlock(&p->meta_lock);
	return r;
}

/* Clears both superblock slots of a member that left: it can be added to
 * a pool again without --force, and no open mistakes it for ours. */
static void wipe_member(struct vdp_member *m)
{
	void *z;

	if (posix_memalign(&z, 4096, 2 * VDP_SB_SIZE) != 0)
		return;
	memset(z, 0, 2 * VDP_SB_SIZE);
	if (m->ops->pwrite(m, z, 2 * VDP_SB_SIZE, 0) == 0)
		(void)m->ops->flush(m);
	free(z);
}

/* The task's end state from its result R: failed, stopped (cancelled, if
 * a cancel asked) or done.  CANCEL is read under task_lock, where
 * task_stop wrote it. */
static void task_finish(struct vdp_pool *p, int r)
{
	pthread_mutex_lock(&p->task_lock);
	if (r < 0)
		p->task.state = VDP_TASK_FAILED;
	else if (stopping(p))
		p->task.state =
			p->task.cancel ? VDP_TASK_CANCELLED : VDP_TASK_STOPPED;
	else
		p->task.state = VDP_TASK_DONE;
	if (p->task.state == VDP_TASK_DONE)
		p->task.done = p->task.total;
	if (r < 0)
		snprintf(p->task.error, sizeof(p->task.error), "%s",
			 *vdp_last_error() ? vdp_last_error() : strerror(-r));
	pthread_mutex_unlock(&p->task_lock);
}

static int remove_run(struct vdp_pool *p, unsigned mi)
{
	struct drop_ctx d = {.mi = mi};
	size_t found = 0;
	int r = move_chunks(p, mi), empty = 0;

	while (r == 0 && !stopping(p)) {
		r = evacuate_pass(p, mi, &found);
		if (r < 0 || stopping(p) || found)
			continue;
		/* Nothing mapped there: commit so the frees are released,
		 * then it must be empty. */
		r = vdp_pool_commit(p);
		pthread_mutex_lock(&p->meta_lock);
		bool done = p->members[mi].nfree == p->members[mi].d.nextents;
		pthread_mutex_unlock(&p->meta_lock);
		if (r == 0 && (done || ++empty >= 3))
			break;
	}
	if (r < 0 || stopping(p))
		return r;
	r = pool_commit_with(p, drop_prep, &d);
	if (d.m) {
		if (r == 0) {
			wipe_member(d.m);
			(void)pool_register(p);
		}
		vdp_member_close(d.m);
	}
	return r;
}

static int balance_run(struct vdp_pool *p);

static void *task_main(void *arg)
{
	struct vdp_pool *p = arg;
	int r, kind;
	unsigned mi;

	vdp_clear_error();
	pthread_mutex_lock(&p->task_lock);
	kind = p->task.kind;
	mi = p->task.member;
	pthread_mutex_unlock(&p->task_lock);
	r = kind == VDP_TASK_REMOVE ? remove_run(p, mi) : balance_run(p);
	task_finish(p, r);
	return NULL;
}

/* Starts the task thread; *P->task is set up by the caller, under
 * task_lock, which is held. */
static int task_start(struct vdp_pool *p, int kind, unsigned mi, uint64_t total)
{
	struct reshape_task *t = &p->task;
	int r;

	if (t->joinable) {
		pthread_join(t->thread, NULL);
		t->joinable = false;
	}
	t->kind = kind;
	t->member = mi;
	snprintf(t->path, sizeof(t->path), "%s",
		 kind == VDP_TASK_REMOVE ? p->members[mi].d.path : "");
	t->state = VDP_TASK_RUNNING;
	t->done = t->start_done = 0;
	t->total = total;
	t->gen++;
	t->start_ms = now_ms();
	t->error[0] = 0;
	t->cancel = false;
	atomic_store(&t->stop, false);
	r = -pthread_create(&t->thread, NULL, task_main, p);
	if (r < 0) {
		t->state = VDP_TASK_FAILED;
		snprintf(t->error, sizeof(t->error), "cannot start: %s",
			 strerror(-r));
		return r;
	}
	t->joinable = true;
	return 0;
}

static uint64_t used_extents(struct vdp_pool *p, unsigned mi)
{
	uint64_t n;

	pthread_mutex_lock(&p->meta_lock);
	n = p->members[mi].d.nextents - p->members[mi].nfree;
	pthread_mutex_unlock(&p->meta_lock);
	return n;
}

/* Whether every metadata chunk copy on member MI has somewhere to go (see
 * move_chunks); else the number of extents in a row that one needs.  Under
 * meta_lock. */
static uint64_t chunks_homeless(struct vdp_pool *p, unsigned mi)
{
	for (unsigned c = 0; c < p->nchunks; c++)
		for (unsigned k = 0; k < p->chunks[c].ncopies; k++) {
			const struct vdp_dchunk *ch = &p->chunks[c];
			uint64_t first;
			bool homeless;

			if (ch->member[k] != mi)
				continue;
			(void)chunk_target(p, ch, k, mi, &first, &homeless);
			if (homeless)
				return chunk_extents(p, ch);
		}
	return 0;
}

/* CTX: member, state and, for a leaving member, its removal's rate limit
 * (kept in its record, so a resumed removal keeps to it). */
struct new_state {
	unsigned member, state;
	uint64_t rate;
};

static int set_state_prep(struct vdp_pool *p, void *ctx)
{
	const struct new_state *a = ctx;

	pthread_mutex_lock(&p->meta_lock);
	p->members[a->member].d.state = a->state;
	p->members[a->member].d.move_rate =
		a->state == VDP_MS_LEAVING ? a->rate : 0;
	pthread_mutex_unlock(&p->meta_lock);
	return 0;
}

int vdp_pool_remove_member(struct vdp_pool *p, const char *member)
{
	uint64_t used, need = 0, avail = 0, e = p->extent_size, run;
	int mi = member_to_change(p, member), r;

	if (mi < 0)
		return mi;
	pthread_mutex_lock(&p->task_lock);
	if (p->task.state == VDP_TASK_RUNNING) {
		bool same = p->task.kind == VDP_TASK_REMOVE &&
			    p->task.member == (unsigned)mi;
		bool removal = p->task.kind == VDP_TASK_REMOVE;

		pthread_mutex_unlock(&p->task_lock);
		if (same)
			return 0; /* already on its way: follow it */
		vdp_set_error("pool %s is busy with %s; wait for it or "
			      "cancel it (vdpool remove --cancel)",
			      p->name,
			      removal ? "another removal" : "a balance");
		return -EBUSY;
	}
	pthread_mutex_lock(&p->meta_lock);
	bool others = false;

	for (unsigned i = 0; i < p->nmembers; i++)
		if (i != (unsigned)mi &&
		    p->members[i].d.state == VDP_MS_ACTIVE) {
			others = true;
			avail += p->members[i].nfree;
		}
	used = p->members[mi].d.nextents - p->members[mi].nfree;
	run = chunks_homeless(p, (unsigned)mi);
	for (unsigned c = 0; c < p->nchunks; c++)
		for (unsigned k = 0; k < p->chunks[c].ncopies; k++)
			if (p->chunks[c].member[k] == mi &&
			    !chunk_in_data(p, &p->chunks[c], k))
				need += chunk_extents(p, &p->chunks[c]);
	pthread_mutex_unlock(&p->meta_lock);
	r = 0;
	if (!others) {
		vdp_set_error("cannot remove %s: it is the last member of "
			      "pool %s",
			      member, p->name);
		r = -EINVAL;
	} else if (used + need > avail) {
		vdp_set_error("cannot remove %s: it holds %llu MiB, but the "
			      "other members have only %llu MiB free",
			      member,
			      (unsigned long long)(((used + need) * e) >> 20),
			      (unsigned long long)((avail * e) >> 20));
		r = -ENOSPC;
	} else if (run) {
		vdp_set_error("cannot remove %s: its metadata copy needs %llu "
			      "MiB of free space in a row on another member, "
			      "and none has that much; add a member first",
			      member, (unsigned long long)((run * e) >> 20));
		r = -ENOSPC;
	}
	/* Marked leaving with the rate it is to keep. */
	if (r == 0 && p->members[mi].d.state != VDP_MS_LEAVING) {
		struct new_state a = {(unsigned)mi, VDP_MS_LEAVING,
				      p->task.rate};
		struct new_state was = {(unsigned)mi, p->members[mi].d.state,
					p->members[mi].d.move_rate};

		r = pool_commit_with(p, set_state_prep, &a);
		if (r < 0)
			set_state_prep(p, &was);
	}
	if (r == 0)
		r = task_start(p, VDP_TASK_REMOVE, (unsigned)mi, used);
	pthread_mutex_unlock(&p->task_lock);
	return r;
}

void reshape_resume(struct vdp_pool *p)
{
	for (unsigned i = 0; i < p->nmembers; i++)
		if (p->members[i].d.state == VDP_MS_LEAVING) {
			pthread_mutex_lock(&p->task_lock);
			p->task.rate = p->members[i].d.move_rate;
			(void)task_start(p, VDP_TASK_REMOVE, i,
					 used_extents(p, i));
			pthread_mutex_unlock(&p->task_lock);
			return; /* one at a time; the API starts the next */
		}
}

/* Stops the task thread and waits for it. */
static void task_stop(struct vdp_pool *p, bool cancel)
{
	pthread_mutex_lock(&p->task_lock);
	if (p->task.state == VDP_TASK_RUNNING) {
		p->task.cancel = cancel;
		atomic_store(&p->task.stop, true);
	}
	if (p->task.joinable) {
		pthread_mutex_unlock(&p->task_lock);
		pthread_join(p->task.thread, NULL);
		pthread_mutex_lock(&p->task_lock);
		p->task.joinable = false;
	}
	pthread_mutex_unlock(&p->task_lock);
}

void reshape_stop(struct vdp_pool *p)
{
	task_stop(p, false);
}

int vdp_pool_cancel_task(struct vdp_pool *p)
{
	struct new_state a = {0, VDP_MS_ACTIVE, 0};
	int leaving = -1;

	vdp_clear_error();
	if (p->rdonly)
		return -EROFS;
	task_stop(p, true);
	pthread_mutex_lock(&p->meta_lock);
	for (unsigned i = 0; i < p->nmembers; i++)
		if (p->members[i].d.state == VDP_MS_LEAVING)
			leaving = (int)i;
	pthread_mutex_unlock(&p->meta_lock);
	if (leaving < 0) {
		pthread_mutex_lock(&p->task_lock);
		bool was = p->task.state == VDP_TASK_CANCELLED &&
			   p->task.kind == VDP_TASK_BALANCE;
		pthread_mutex_unlock(&p->task_lock);
		if (was)
			return 0;
		vdp_set_error("pool %s: no removal or balance to cancel",
			      p->name);
		return -ENOENT;
	}
	a.member = (unsigned)leaving;
	pthread_mutex_lock(&p->task_lock);
	if (p->task.kind == VDP_TASK_REMOVE)
		p->task.state = VDP_TASK_CANCELLED;
	pthread_mutex_unlock(&p->task_lock);
	return pool_commit_with(p, set_state_prep, &a);
}

void vdp_pool_task(struct vdp_pool *p, struct vdp_task_info *out)
{
	const struct reshape_task *t = &p->task;

	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&p->task_lock);
	out->kind = t->kind;
	out->state = t->state;
	snprintf(out->member, sizeof(out->member), "%s", t->path);
	out->done = t->done;
	out->total = t->total;
	out->gen = t->gen;
	out->rate = t->rate;
	out->eta_s = -1;
	if (t->state == VDP_TASK_RUNNING && t->done > t->start_done) {
		uint64_t ms = now_ms() - t->start_ms;

		out->eta_s = (int64_t)((double)ms / 1000.0 *
				       (double)(t->total - t->done) /
				       (double)(t->done - t->start_done));
	}
	snprintf(out->error, sizeof(out->error), "%s", t->error);
	pthread_mutex_unlock(&p->task_lock);
}

/* ---- balance ------------------------------------------------------------ */

/*
 * One pass over every mapped extent: an extent on a member filled above
 * the pool's average (by fraction of its extents) moves to the active
 * member filled least, while that one stays at or below the average.
 * Counts are kept here, as the moves change them: the bitmaps lag behind
 * until the commit that releases the old extents.
 */
static int balance_run(struct vdp_pool *p)
{
	uint64_t used[VDP_MAX_MEMBERS] = {0}, cap[VDP_MAX_MEMBERS] = {0};
	uint64_t tot_used = 0, tot_cap = 0, excess = 0, last = now_ms();
	uint64_t start = last, moved = 0;
	struct entvec es = {0};
	uint64_t mask = 0;
	void *buf = NULL;
	int r;

	pthread_mutex_lock(&p->meta_lock);
	for (unsigned i = 0; i < p->nmembers; i++) {
		if (p->members[i].d.state != VDP_MS_ACTIVE)
			continue;
		cap[i] = p->members[i].d.nextents;
		used[i] = cap[i] - p->members[i].nfree;
		tot_used += used[i];
		tot_cap += cap[i];
	}
	pthread_mutex_unlock(&p->meta_lock);
	if (!tot_cap)
		return 0;
		/* Member I's fair share is tot_used * cap[i] / tot_cap. */
#define SHARE(i)                                                               \
	((uint64_t)((double)tot_used * (double)cap[i] / (double)tot_cap))
	for (unsigned i = 0; i < p->nmembers; i++)
		if (cap[i] && used[i] > SHARE(i) + 1) {
			mask |= 1ull << i;
			excess += used[i] - SHARE(i) - 1;
		}
	pthread_mutex_lock(&p->task_lock);
	p->task.total = excess;
	pthread_mutex_unlock(&p->task_lock);
	r = mask ? scan_maps(p, mask, &es) : 0;
	if (r == 0 && es.n &&
	    posix_memalign(&buf, 4096, (size_t)p->extent_size) != 0)
		r = -ENOMEM;
	for (size_t i = 0, j; r >= 0 && i < es.n && !stopping(p); i = j) {
		unsigned src = VDP_PID_MEMBER(es.v[i].pid);
		int dst = -1;

		for (j = i + 1; j < es.n && es.v[j].pid == es.v[i].pid; j++)
			;
		if (used[src] <= SHARE(src) + 1)
			continue;
		for (unsigned t = 0; t < p->nmembers; t++) {
			if (!cap[t] || t == src || used[t] + 1 > SHARE(t))
				continue;
			if (dst < 0 ||
			    (double)used[t] / (double)cap[t] <
				    (double)used[dst] / (double)cap[dst])
				dst = (int)t;
		}
		if (dst < 0)
			break; /* everyone is at their share */
		r = move_group(p, &es.v[i], j - i, dst, buf);
		if (r > 0) {
			used[src]--;
			used[dst]++;
			task_add_done(p, 1);
			throttle(p, start, ++moved);
		}
		if (r >= 0)
			r = maybe_commit(p, &last);
	}
#undef SHARE
	free(buf);
	free(es.v);
	if (r >= 0)
		r = vdp_pool_commit(p);
	return r < 0 ? r : 0;
}

int vdp_pool_balance(struct vdp_pool *p)
{
	int r;

	vdp_clear_error();
	if (p->rdonly)
		return -EROFS;
	pthread_mutex_lock(&p->task_lock);
	if (p->task.state == VDP_TASK_RUNNING) {
		bool removal = p->task.kind == VDP_TASK_REMOVE;

		pthread_mutex_unlock(&p->task_lock);
		vdp_set_error("pool %s is busy with %s; wait for it or "
			      "cancel it",
			      p->name, removal ? "a removal" : "a balance");
		return -EBUSY;
	}
	r = task_start(p, VDP_TASK_BALANCE, 0, 0);
	pthread_mutex_unlock(&p->task_lock);
	return r;
}

/* ---- members that grew --------------------------------------------------- */

static uint64_t extents_for(const struct vdp_pool *p,
			    const struct vdp_dmember *d, uint64_t size)
{
	uint64_t n = size > d->data_off
			     ? (size - d->data_off) >> p->extent_shift
			     : 0;

	return n < (1ull << VDP_PID_IDX_BITS) ? n
					      : (1ull << VDP_PID_IDX_BITS) - 1;
}

void reshape_grow_at_open(struct vdp_pool *p)
{
	for (unsigned i = 0; i < p->nmembers; i++) {
		struct pmember *pm = &p->members[i];

		if (pm->d.state == VDP_MS_REMOVED || !pm->m ||
		    pm->m->size <= pm->d.size)
			continue;
		pm->d.nextents = extents_for(p, &pm->d, pm->m->size);
		pm->d.size = pm->m->size;
		p->changed = true; /* the next commit records it */
	}
}

struct grow_ctx {
	unsigned mi;
	uint64_t size;
};

static int grow_prep(struct vdp_pool *p, void *ctx)
{
	struct grow_ctx *g = ctx;
	struct pmember *pm = &p->members[g->mi];
	uint64_t n = extents_for(p, &pm->d, g->size);
	int r = 0;

	pthread_mutex_lock(&p->meta_lock);
	if (n > pm->d.nextents)
		r = alloc_grow_member(p, g->mi, n);
	if (r == 0) {
		pm->d.size = g->size;
		pm->m->size = g->size;
	}
	pthread_mutex_unlock(&p->meta_lock);
	return r;
}

int vdp_pool_resize_member(struct vdp_pool *p, const char *member,
			   uint64_t *old_size, uint64_t *new_size)
{
	struct grow_ctx g;
	struct vdp_member *m;
	int mi = member_to_change(p, member), r;

	if (mi < 0)
		return mi;
	/* A second handle sees the size as it is now, whatever the kind. */
	r = vdp_member_open(p->members[mi].d.path, true, &m);
	if (r < 0)
		return r;
	g.mi = (unsigned)mi;
	g.size = m->size;
	vdp_member_close(m);
	*old_size = p->members[mi].d.size;
	*new_size = g.size;
	if (g.size < *old_size) {
		vdp_set_error("member %s is %llu bytes, smaller than the %llu "
			      "the pool uses; shrinking a member is not "
			      "supported (remove it instead)",
			      member, (unsigned long long)g.size,
			      (unsigned long long)*old_size);
		return -EINVAL;
	}
	if (g.size == *old_size)
		return 0;
	return pool_commit_with(p, grow_prep, &g);
}
