/* SPDX-License-Identifier: MIT */
/*
 * pool.c - creating, opening and closing pools: superblocks, the member
 * table, and reading/writing metadata blocks through the metadata chunks
 * (each block on up to two members).
 *
 * Must never: open a member of another pool as ours, write to a pool it
 * opened read-only, or write anything before every check of a create has
 * passed.
 */
#include <blkid/blkid.h>
#include <ctype.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "block.h"
#include "internal.h"

static __thread char last_error[1024];

const char *vdp_last_error(void)
{
	return last_error;
}

void vdp_clear_error(void)
{
	last_error[0] = 0;
}

void vdp_set_error(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(last_error, sizeof(last_error), fmt, ap);
	va_end(ap);
}

const char *vdp_registry_dir(void)
{
	const char *d = getenv("VDPOOL_REGISTRY");

	return d && *d ? d : "/etc/vdpool/pools";
}

static void uuid_str(const uint8_t u[16], char s[37])
{
	snprintf(s, 37,
		 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
		 "%02x%02x%02x%02x%02x%02x",
		 u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9],
		 u[10], u[11], u[12], u[13], u[14], u[15]);
}

void pool_member_offset(const struct vdp_pool *p, uint64_t pid,
			struct pmember **pm, uint64_t *off)
{
	struct pmember *m = (struct pmember *)&p->members[VDP_PID_MEMBER(pid)];

	*pm = m;
	*off = m->d.data_off + (VDP_PID_INDEX(pid) << p->extent_shift);
}

int member_error(struct vdp_pool *p, struct pmember *pm, enum io_kind kind,
		 const char *what, int r)
{
	atomic_uint_fast64_t *n[] = {&pm->err_read, &pm->err_write,
				     &pm->err_flush};

	(*n[kind])++;
	p->n_errors++;
	pthread_mutex_lock(&p->err_lock);
	snprintf(pm->last_error, sizeof(pm->last_error), "%s failed: %s", what,
		 strerror(-r));
	pthread_mutex_unlock(&p->err_lock);
	vdp_set_error("member %s: %s failed: %s", pm->m->path, what,
		      strerror(-r));
	return r;
}

bool chunk_in_data(const struct vdp_pool *p, const struct vdp_dchunk *c,
		   unsigned k)
{
	const struct vdp_dmember *d = &p->members[c->member[k]].d;
	uint64_t rel, room;

	if (c->offset[k] < d->data_off || d->state == VDP_MS_REMOVED)
		return false;
	rel = c->offset[k] - d->data_off;
	room = d->nextents << p->extent_shift;
	return !(rel & (p->extent_size - 1)) && rel < room &&
	       c->nblocks <= (room - rel) / VDP_BLOCK_SIZE;
}

uint64_t chunk_extents(const struct vdp_pool *p, const struct vdp_dchunk *c)
{
	return (c->nblocks * VDP_BLOCK_SIZE + p->extent_size - 1) >>
	       p->extent_shift;
}

bool chunk_data_run(const struct vdp_pool *p, const struct vdp_dchunk *c,
		    unsigned k, uint64_t *first, uint64_t *n)
{
	if (!chunk_in_data(p, c, k))
		return false;
	*first = (c->offset[k] - p->members[c->member[k]].d.data_off) >>
		 p->extent_shift;
	*n = chunk_extents(p, c);
	return true;
}

uint64_t pool_incompat(const struct vdp_pool *p)
{
	for (unsigned i = 0; i < p->nmembers; i++)
		if (p->members[i].d.state == VDP_MS_REMOVED)
			return VDP_FEAT_INCOMPAT_RESHAPE;
	for (unsigned c = 0; c < p->nchunks; c++)
		for (unsigned k = 0; k < p->chunks[c].ncopies; k++)
			if (chunk_in_data(p, &p->chunks[c], k))
				return VDP_FEAT_INCOMPAT_RESHAPE;
	return 0;
}

/* ---- metadata blocks ---------------------------------------------------- */

static const struct vdp_dchunk *chunk_of(const struct vdp_pool *p,
					 uint64_t addr)
{
	for (unsigned c = 0; c < p->nchunks; c++)
		if (addr >= p->chunks[c].lstart &&
		    addr - p->chunks[c].lstart < p->chunks[c].nblocks)
			return &p->chunks[c];
	return NULL;
}

int pool_meta_header_check(const struct vdp_pool *p, const void *blk,
			   uint8_t tree, uint64_t owner, int level, char *why,
			   size_t wl)
{
	const struct vdp_bhdr *h = (const struct vdp_bhdr *)blk;
	uint16_t type = le16toh(h->type);

	if (le64toh(h->txid) > p->txid) {
		snprintf(why, wl,
			 "written by transaction %llu, after the "
			 "last commit %llu",
			 (unsigned long long)le64toh(h->txid),
			 (unsigned long long)p->txid);
		return -EUCLEAN;
	}
	if (h->tree != tree || le64toh(h->owner) != owner ||
	    h->level != level || type != (level ? VDP_BT_NODE : VDP_BT_LEAF)) {
		snprintf(why, wl,
			 "holds tree %u owner %llu level %u, "
			 "expected tree %u owner %llu level %d",
			 h->tree, (unsigned long long)le64toh(h->owner),
			 h->level, tree, (unsigned long long)owner, level);
		return -EUCLEAN;
	}
	return 0;
}

int pool_meta_read(struct vdp_pool *p, uint64_t addr, void *blk, uint8_t tree,
		   uint64_t owner, int level)
{
	const struct vdp_dchunk *c = chunk_of(p, addr);
	char why[2][160] = {"", ""};
	int r = -EIO, bad = -1;

	if (!c) {
		vdp_set_error("metadata block %llu is outside the metadata "
			      "space",
			      (unsigned long long)addr);
		return -EUCLEAN;
	}
	for (unsigned k = 0; k < c->ncopies; k++) {
		struct pmember *pm = &p->members[c->member[k]];
		uint64_t off =
			c->offset[k] + (addr - c->lstart) * VDP_BLOCK_SIZE;

		r = pm->m->ops->pread(pm->m, blk, VDP_BLOCK_SIZE, off);
		if (r < 0) {
			pm->err_read++;
			snprintf(why[k], sizeof(why[k]), "%s", strerror(-r));
		} else {
			r = vdp_block_verify(blk, VDP_BLOCK_SIZE,
					     VDP_MAGIC_META, addr, p->uuid,
					     why[k], sizeof(why[k]));
		}
		if (r == 0)
			r = pool_meta_header_check(p, blk, tree, owner, level,
						   why[k], sizeof(why[k]));
		if (r == 0) {
			if (bad >= 0 && !p->rdonly) {
				/* Heal the bad copy from the good one; the
				 * next commit flushes it. */
				struct pmember *bm =
					&p->members[c->member[bad]];

				if (bm->m->ops->pwrite(
					    bm->m, blk, VDP_BLOCK_SIZE,
					    c->offset[bad] +
						    (addr - c->lstart) *
							    VDP_BLOCK_SIZE) ==
				    0)
					atomic_store(&bm->written, true);
			}
			return 0;
		}
		bad = (int)k;
		pm->bad_copies++;
		p->n_errors++;
		pthread_mutex_lock(&p->err_lock);
		snprintf(pm->last_error, sizeof(pm->last_error),
			 "metadata block %llu at offset %llu is bad: %s",
			 (unsigned long long)addr, (unsigned long long)off,
			 why[k]);
		pthread_mutex_unlock(&p->err_lock);
	}
	if (c->ncopies == 2)
		vdp_set_error("metadata block %llu is corrupt: on %s at "
			      "offset %llu: %s; on %s: %s",
			      (unsigned long long)addr,
			      p->members[c->member[0]].m->path,
			      (unsigned long long)(c->offset[0] +
						   (addr - c->lstart) *
							   VDP_BLOCK_SIZE),
			      why[0], p->members[c->member[1]].m->path, why[1]);
	else
		vdp_set_error("metadata block %llu is corrupt: on %s at "
			      "offset %llu: %s",
			      (unsigned long long)addr,
			      p->members[c->member[0]].m->path,
			      (unsigned long long)(c->offset[0] +
						   (addr - c->lstart) *
							   VDP_BLOCK_SIZE),
			      why[0]);
	return r == -EIO ? -EIO : -EUCLEAN;
}

/* Writes one sealed block to every copy; the caller flushes. */
int pool_meta_write(struct vdp_pool *p, uint64_t addr, const void *blk)
{
	const struct vdp_dchunk *c = chunk_of(p, addr);

	if (!c)
		return -EUCLEAN;
	for (unsigned k = 0; k < c->ncopies; k++) {
		struct pmember *pm = &p->members[c->member[k]];
		int r = pm->m->ops->pwrite(
			pm->m, blk, VDP_BLOCK_SIZE,
			c->offset[k] + (addr - c->lstart) * VDP_BLOCK_SIZE);

		if (r < 0)
			return member_error(p, pm, IO_WRITE, "metadata write",
					    r);
		atomic_store(&pm->written, true);
	}
	return 0;
}

/* ---- superblocks -------------------------------------------------------- */

static void super_build(const struct vdp_pool *p, unsigned mi, uint64_t txid,
			struct vdp_dsuper *s)
{
	memset(s, 0, sizeof(*s));
	s->h.magic = htole64(VDP_MAGIC_SUPER);
	s->h.blocknr = htole64(txid % VDP_SB_SLOTS);
	s->h.txid = htole64(txid);
	memcpy(s->h.pool_uuid, p->uuid, 16);
	s->h.type = htole16(VDP_BT_SUPER);
	s->version = htole32(VDP_FORMAT_VERSION);
	s->sb_size = htole32(VDP_SB_SIZE);
	s->feat_incompat = htole64(pool_incompat(p));
	memcpy(s->member_uuid, p->members[mi].d.uuid, 16);
	s->member_index = htole32(mi);
	s->extent_shift = htole32(p->extent_shift);
	s->nmembers = htole32(p->nmembers);
	s->nchunks = htole32(p->nchunks);
	memcpy(s->name, p->name, sizeof(p->name));
	s->create_time = htole64(p->create_time);
	s->next_ino = htole64(p->sb_next_ino);
	s->inodes.addr = htole64(p->sb_inodes.addr);
	s->inodes.height = p->sb_inodes.height;
	s->refc.addr = htole64(p->sb_refc.addr);
	s->refc.height = p->sb_refc.height;
	for (unsigned c = 0; c < p->nchunks; c++) {
		const struct vdp_dchunk *h = &p->chunks[c];
		struct vdp_dchunk *d = &s->chunks[c];

		d->lstart = htole64(h->lstart);
		d->nblocks = htole64(h->nblocks);
		d->ncopies = htole16(h->ncopies);
		for (unsigned k = 0; k < 2; k++) {
			d->member[k] = htole16(h->member[k]);
			d->offset[k] = htole64(h->offset[k]);
		}
	}
	for (unsigned i = 0; i < p->nmembers; i++) {
		const struct vdp_dmember *h = &p->members[i].d;
		struct vdp_dmember *d = &s->members[i];

		memcpy(d->uuid, h->uuid, 16);
		d->size = htole64(h->size);
		d->data_off = htole64(h->data_off);
		d->nextents = htole64(h->nextents);
		d->kind = htole32(h->kind);
		d->state = htole32(h->state);
		memcpy(d->path, h->path, sizeof(d->path));
		d->added_txid = htole64(h->added_txid);
		d->move_rate = htole64(h->move_rate);
	}
	vdp_block_seal(s, VDP_SB_SIZE, p->seed);
}

struct member_job {
	struct vdp_pool *p;
	unsigned i;
	int (*fn)(struct vdp_pool *p, unsigned i, void *ctx);
	void *ctx;
	int r;
	bool thread;
	pthread_t t;
};

static void *member_job_run(void *arg)
{
	struct member_job *j = arg;

	j->r = j->fn(j->p, j->i, j->ctx);
	return NULL;
}

int pool_each_member(struct vdp_pool *p, uint64_t mask,
		     int (*fn)(struct vdp_pool *p, unsigned i, void *ctx),
		     void *ctx)
{
	struct member_job jobs[VDP_MAX_MEMBERS];
	unsigned n = 0;

	for (unsigned i = 0; i < p->nmembers; i++)
		if (mask & (1ull << i))
			jobs[n++] = (struct member_job){
				.p = p, .i = i, .fn = fn, .ctx = ctx};
	/* The first runs here, the others on threads of their own. */
	for (unsigned k = 1; k < n; k++)
		jobs[k].thread = pthread_create(&jobs[k].t, NULL,
						member_job_run, &jobs[k]) == 0;
	for (unsigned k = 0; k < n; k++)
		if (k == 0 || !jobs[k].thread)
			member_job_run(&jobs[k]);
	for (unsigned k = 1; k < n; k++)
		if (jobs[k].thread)
			pthread_join(jobs[k].t, NULL);
	for (unsigned k = 0; k < n; k++) {
		struct pmember *pm = &p->members[jobs[k].i];

		if (jobs[k].r == 0)
			continue;
		/* The job's thread set its own vdp_last_error(). */
		pthread_mutex_lock(&p->err_lock);
		vdp_set_error("member %s: %s", pm->m->path, pm->last_error);
		pthread_mutex_unlock(&p->err_lock);
		return jobs[k].r;
	}
	return 0;
}

/* One member after another, in index order: after a crash the members
 * that lack the newest superblock are a suffix of the list, which is what
 * check accepts as a torn commit (fsck_super_states). */
int pool_write_super(struct vdp_pool *p, uint64_t txid)
{
	unsigned first = p->super_first;
	int r = 0;

	/* A member being added gets its superblock first: until one old
	 * member names it, nothing needs it, and once one does, it has one
	 * (reshape.c, docs/architecture.md "Growing and shrinking"). */
	if (first)
		r = pool_write_super_one(p, first - 1, txid);
	for (unsigned i = 0; i < p->nmembers && r == 0; i++)
		if (i + 1 != first && p->members[i].d.state != VDP_MS_REMOVED)
			r = pool_write_super_one(p, i, txid);
	if (r == 0)
		p->super_first = 0;
	return r;
}

int pool_write_super_one(struct vdp_pool *p, unsigned mi, uint64_t txid)
{
	struct vdp_member *m = p->members[mi].m;
	struct vdp_dsuper *s;
	int r;

	if (posix_memalign((void **)&s, 4096, sizeof(*s)) != 0)
		return -ENOMEM;
	super_build(p, mi, txid, s);
	r = m->ops->pwrite(m, s, VDP_SB_SIZE,
			   (txid % VDP_SB_SLOTS) * VDP_SB_SIZE);
	if (r < 0)
		member_error(p, &p->members[mi], IO_WRITE, "superblock write",
			     r);
	else if ((r = m->ops->flush(m)) < 0)
		member_error(p, &p->members[mi], IO_FLUSH, "superblock flush",
			     r);
	free(s);
	return r;
}

/* 0 if T is a valid superblock for slot K; else -EBADMSG/-ESTALE and why. */
static int super_slot_check(const struct vdp_dsuper *t, unsigned k, char *why,
			    size_t wl)
{
	int r = vdp_block_verify(t, VDP_SB_SIZE, VDP_MAGIC_SUPER, k,
				 t->h.pool_uuid, why, wl);

	if (r == 0 && le64toh(t->h.txid) % VDP_SB_SLOTS != k) {
		snprintf(why, wl, "txid in wrong slot");
		r = -EBADMSG;
	}
	return r;
}

/*
 * Reads both slots of M into S (16 KiB aligned) and keeps the valid one with
 * the highest txid.  Returns 0, or -EBADMSG/-ESTALE/-errno with the reason
 * in WHY when neither slot is valid.
 */
static int super_read(struct vdp_member *m, struct vdp_dsuper *s, char *why,
		      size_t wl)
{
	struct vdp_dsuper *t;
	uint64_t best = 0;
	int r, found = 0;
	char w[2][96];

	if (posix_memalign((void **)&t, 4096, sizeof(*t)) != 0)
		return -ENOMEM;
	for (unsigned k = 0; k < VDP_SB_SLOTS; k++) {
		r = m->size < (k + 1) * VDP_SB_SIZE
			    ? -EBADMSG
			    : m->ops->pread(m, t, VDP_SB_SIZE, k * VDP_SB_SIZE);
		if (r < 0) {
			snprintf(w[k], sizeof(w[k]), "%s", strerror(-r));
			continue;
		}
		r = super_slot_check(t, k, w[k], sizeof(w[k]));
		if (r == 0 && (!found || le64toh(t->h.txid) > best)) {
			best = le64toh(t->h.txid);
			memcpy(s, t, sizeof(*s));
			found = 1;
		}
	}
	free(t);
	if (found)
		return 0;
	snprintf(why, wl, "no valid superblock (slot 0: %.60s; slot 1: %.60s)",
		 w[0], w[1]);
	return -EBADMSG;
}

/* ---- pool object -------------------------------------------------------- */

struct vdp_pool *pool_alloc(void)
{
	struct vdp_pool *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	pthread_mutex_init(&p->meta_lock, NULL);
	pthread_mutex_init(&p->commit_lock, NULL);
	pthread_mutex_init(&p->err_lock, NULL);
	pthread_mutex_init(&p->task_lock, NULL);
	pthread_cond_init(&p->commit_cv, NULL);
	pthread_cond_init(&p->discard_cv, NULL);
	p->interval_ms = 2000;
	rtree_init(&p->inodes, VDP_TREE_INODES, sizeof(struct vdp_dinode), 0);
	rtree_init(&p->refc, VDP_TREE_REFC, sizeof(uint32_t), 0);
	return p;
}

void pool_free(struct vdp_pool *p)
{
	ns_free(p);
	rtree_destroy(&p->inodes);
	rtree_destroy(&p->refc);
	alloc_free_all(p);
	for (unsigned i = 0; i < p->nmembers; i++)
		vdp_member_close(p->members[i].m);
	for (size_t i = 0; i < p->nq; i++)
		free(p->q[i].blk);
	free(p->q);
	pthread_mutex_destroy(&p->meta_lock);
	pthread_mutex_destroy(&p->commit_lock);
	pthread_mutex_destroy(&p->err_lock);
	pthread_mutex_destroy(&p->task_lock);
	pthread_cond_destroy(&p->commit_cv);
	pthread_cond_destroy(&p->discard_cv);
	share_free(atomic_load(&p->share));
	free(p);
}

static int lock_members(struct vdp_pool *p, bool exclusive)
{
	for (unsigned i = 0; i < p->nmembers; i++) {
		struct vdp_member *m = p->members[i].m;
		int r = m && m->ops->lock ? m->ops->lock(m, exclusive) : 0;

		if (r == -EBUSY) {
			vdp_set_error("pool %s is in use: member %s is locked "
				      "by another process (mounted?)",
				      p->name, m->path);
			return r;
		}
		if (r < 0) {
			vdp_set_error("member %s: cannot lock: %s", m->path,
				      strerror(-r));
			return r;
		}
	}
	return 0;
}

/* ---- create ------------------------------------------------------------- */

static bool name_ok(const char *n)
{
	size_t l = strlen(n);

	if (l == 0 || l > VDP_POOL_NAME_MAX || n[0] == '.')
		return false;
	for (; *n; n++)
		if (!isalnum((unsigned char)*n) && !strchr("._-", *n))
			return false;
	return true;
}

/*
 * A probe for a member that has no path to open (an iSCSI LUN): a sparse
 * memfd of the member's size holding a copy of its first and last MiB,
 * where libblkid finds the signatures of filesystems, partition tables,
 * LVM and RAID.  *FD gets the memfd (the caller closes it); NULL if the
 * copy cannot be made.
 */
static blkid_probe probe_copy(struct vdp_member *m, int *fd)
{
	uint64_t span = m->size < (2u << 20) ? m->size : (1u << 20);
	uint64_t offs[2] = {0, m->size - span};
	blkid_probe pr = NULL;
	void *buf;

	*fd = memfd_create("vdpool-probe", MFD_CLOEXEC);
	if (*fd < 0)
		return NULL;
	if (posix_memalign(&buf, 4096, span) != 0)
		goto err_close;
	if (ftruncate(*fd, (off_t)m->size) < 0)
		goto err_free;
	for (int k = 0; k < 2; k++)
		if (vdp_member_read(m, buf, span, offs[k]) < 0 ||
		    pwrite(*fd, buf, span, (off_t)offs[k]) != (ssize_t)span)
			goto err_free;
	pr = blkid_new_probe();
	if (pr && blkid_probe_set_device(pr, *fd, 0, 0) != 0) {
		blkid_free_probe(pr);
		pr = NULL;
	}
err_free:
	free(buf);
	if (pr)
		return pr;
err_close:
	close(*fd);
	*fd = -1;
	return NULL;
}

/* Refuses member I if it reaches storage an earlier member reaches: the
 * same LVM LV (by dm and by its PVs), or a PV under another's LV. */
static int check_overlap(struct vdp_pool *p, unsigned i, const char *name)
{
	char why[200];

	for (unsigned j = 0; j < i; j++) {
		if (!p->members[i].m || !p->members[j].m ||
		    !vdp_member_overlap(p->members[i].m, p->members[j].m, why,
					sizeof(why)))
			continue;
		vdp_set_error("member %s overlaps member %s: %s", name,
			      p->members[j].m->path, why);
		return -EINVAL;
	}
	return 0;
}

/* Refuses a member that holds a vdpool or another known signature. */
static int check_signature(struct vdp_member *m, bool force)
{
	struct vdp_dsuper *s;
	char why[160];
	int r = 0;

	if (posix_memalign((void **)&s, 4096, sizeof(*s)) != 0)
		return -ENOMEM;
	if (super_read(m, s, why, sizeof(why)) == 0 && !force) {
		char u[37], name[65];

		uuid_str(s->h.pool_uuid, u);
		memcpy(name, s->name, 64);
		name[64] = 0;
		vdp_set_error("member %s already belongs to vdpool pool %s "
			      "(%s); use --force to overwrite it",
			      m->path, name, u);
		r = -EEXIST;
	}
	free(s);
	if (r < 0 || force)
		return r;

	blkid_probe pr = blkid_new_probe_from_filename(m->path);
	const char *type = NULL, *what = "filesystem";
	int copy = -1;

	if (!pr && !vdp_member_spec_is_path(m->path)) /* iSCSI, LVM */
		pr = probe_copy(m, &copy);
	if (!pr)
		return 0; /* unreadable by blkid: our own reads worked */
	blkid_probe_enable_superblocks(pr, 1);
	blkid_probe_set_superblocks_flags(pr, BLKID_SUBLKS_TYPE);
	blkid_probe_enable_partitions(pr, 1);
	blkid_probe_set_partitions_flags(pr, BLKID_PARTS_MAGIC);
	if (blkid_do_safeprobe(pr) == 0) {
		if (blkid_probe_lookup_value(pr, "TYPE", &type, NULL) != 0 &&
		    blkid_probe_lookup_value(pr, "PTTYPE", &type, NULL) == 0)
			what = "partition table";
		if (type) {
			vdp_set_error("member %s holds an existing %s %s; use "
				      "--force to overwrite it",
				      m->path, type, what);
			r = -EEXIST;
		}
	}
	blkid_free_probe(pr);
	if (copy >= 0)
		close(copy);
	return r;
}

static int register_pool(const struct vdp_pool *p, bool force)
{
	const char *dir = vdp_registry_dir();
	char path[PATH_MAX], tmp[PATH_MAX + 8], cur[PATH_MAX], u[37];
	FILE *f;

	/* mkdir -p */
	snprintf(cur, sizeof(cur), "%s", dir);
	for (char *s = cur + 1; *s; s++) {
		if (*s == '/') {
			*s = 0;
			mkdir(cur, 0755);
			*s = '/';
		}
	}
	if (mkdir(cur, 0755) < 0 && errno != EEXIST) {
		vdp_set_error("registry %s: %s", dir, strerror(errno));
		return -errno;
	}
	snprintf(path, sizeof(path), "%s/%s", dir, p->name);
	if (!force && access(path, F_OK) == 0) {
		vdp_set_error("a pool named %s is already registered in %s; "
			      "choose another --name or use --force",
			      p->name, path);
		return -EEXIST;
	}
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	f = fopen(tmp, "w");
	if (!f) {
		vdp_set_error("registry %s: %s", tmp, strerror(errno));
		return -errno;
	}
	uuid_str(p->uuid, u);
	fprintf(f, "# vdpool pool %s %s\n", p->name, u);
	for (unsigned i = 0; i < p->nmembers; i++)
		if (p->members[i].d.state != VDP_MS_REMOVED)
			fprintf(f, "%s\n", p->members[i].d.path);
	if (fflush(f) != 0 || fsync(fileno(f)) != 0) {
		fclose(f);
		vdp_set_error("registry %s: %s", tmp, strerror(errno));
		return -errno;
	}
	fclose(f);
	if (rename(tmp, path) < 0) {
		vdp_set_error("registry %s: %s", path, strerror(errno));
		return -errno;
	}
	return 0;
}

int vdp_pool_create(const char *const *paths, size_t n,
		    const struct vdp_create_opts *o)
{
	unsigned shift =
		o->extent_shift ? o->extent_shift : VDP_DEFAULT_EXTENT_SHIFT;
	uint64_t total = 0, meta_bytes, e;
	unsigned meta_m[2] = {0, 0}, nmeta;
	struct vdp_pool *p;
	int r;

	vdp_clear_error();
	if (!o->name || !name_ok(o->name)) {
		vdp_set_error("pool name '%s' is invalid: use 1-63 of "
			      "A-Z a-z 0-9 . _ - (not starting with '.')",
			      o->name ? o->name : "");
		return -EINVAL;
	}
	if (shift < VDP_MIN_EXTENT_SHIFT || shift > VDP_MAX_EXTENT_SHIFT) {
		vdp_set_error("extent size 2^%u is out of range (64 KiB to "
			      "64 MiB)",
			      shift);
		return -EINVAL;
	}
	if (n == 0 || n > VDP_MAX_MEMBERS) {
		vdp_set_error("a pool needs 1 to %d members", VDP_MAX_MEMBERS);
		return -EINVAL;
	}
	e = 1ull << shift;
	p = pool_alloc();
	if (!p)
		return -ENOMEM;
	snprintf(p->name, sizeof(p->name), "%s", o->name);
	p->extent_shift = shift;
	p->extent_size = e;
	p->create_time = (uint64_t)time(NULL);
	if (getrandom(p->uuid, 16, 0) != 16) {
		r = -errno;
		goto err_free;
	}
	p->uuid[6] = (p->uuid[6] & 0x0f) | 0x40;
	p->uuid[8] = (p->uuid[8] & 0x3f) | 0x80;
	p->seed = vdp_pool_seed(p->uuid);

	for (size_t i = 0; i < n; i++) {
		struct pmember *pm = &p->members[i];
		char real[PATH_MAX];
		struct stat a, b;

		bool url = !vdp_member_spec_is_path(paths[i]);

		/* A URL or lvm: spec is kept as given; the member strips a
		 * password, adds LVM UUIDs and checks its length (m->path). */
		if (url) {
			snprintf(real, sizeof(real), "%s", paths[i]);
		} else if (!realpath(paths[i], real)) {
			r = -errno;
			vdp_set_error("member %s: %s", paths[i], strerror(-r));
			goto err_free;
		}
		if (!url && strlen(real) >= sizeof(pm->d.path)) {
			r = -ENAMETOOLONG;
			vdp_set_error("member %s: path longer than %zu bytes",
				      real, sizeof(pm->d.path) - 1);
			goto err_free;
		}
		r = vdp_member_open(real, false, &pm->m);
		if (r < 0)
			goto err_free;
		p->nmembers++;
		if (!url)
			stat(real, &a);
		for (size_t j = 0; j < i; j++) {
			bool same = false;

			if (url)
				same = strcmp(pm->m->path,
					      p->members[j].d.path) == 0;
			else if (stat(p->members[j].d.path, &b) == 0)
				same = (S_ISBLK(a.st_mode) &&
					a.st_rdev == b.st_rdev) ||
				       (a.st_dev == b.st_dev &&
					a.st_ino == b.st_ino);
			if (same) {
				r = -EINVAL;
				vdp_set_error("member %s is listed twice (as "
					      "%s)",
					      paths[i], p->members[j].d.path);
				goto err_free;
			}
		}
		r = check_overlap(p, i, paths[i]);
		if (r < 0)
			goto err_free;
		r = lock_members(p, true);
		if (r < 0)
			goto err_free;
		r = check_signature(pm->m, o->force);
		if (r < 0)
			goto err_free;
		snprintf(pm->d.path, sizeof(pm->d.path), "%s", pm->m->path);
		pm->d.kind = (uint32_t)pm->m->kind;
		pm->d.size = pm->m->size;
		if (getrandom(pm->d.uuid, 16, 0) != 16) {
			r = -errno;
			goto err_free;
		}
		total += pm->m->size;
	}

	/* Metadata: 1/256 of the pool, at least 16 MiB, on the two largest
	 * members (one copy each); docs/format.md says why. */
	meta_bytes = total / 256;
	if (meta_bytes < (16u << 20))
		meta_bytes = 16u << 20;
	meta_bytes =
		(meta_bytes + (1u << 20) - 1) & ~(uint64_t)((1u << 20) - 1);
	nmeta = n >= 2 ? 2 : 1;
	for (unsigned k = 0; k < nmeta; k++) {
		int best = -1;

		for (unsigned i = 0; i < n; i++) {
			if (k == 1 && i == meta_m[0])
				continue;
			if (best < 0 ||
			    p->members[i].d.size > p->members[best].d.size)
				best = (int)i;
		}
		meta_m[k] = (unsigned)best;
	}
	p->nchunks = 1;
	p->chunks[0].lstart = 0;
	p->chunks[0].nblocks = meta_bytes / VDP_BLOCK_SIZE;
	p->chunks[0].ncopies = (uint16_t)nmeta;
	for (unsigned k = 0; k < nmeta; k++) {
		p->chunks[0].member[k] = (uint16_t)meta_m[k];
		p->chunks[0].offset[k] = VDP_HEADER_AREA;
	}
	p->meta_blocks = p->chunks[0].nblocks;
	for (unsigned i = 0; i < n; i++) {
		struct pmember *pm = &p->members[i];
		uint64_t start = VDP_HEADER_AREA;

		if (i == meta_m[0] || (nmeta == 2 && i == meta_m[1]))
			start += meta_bytes;
		pm->d.data_off = (start + e - 1) & ~(e - 1);
		pm->d.nextents =
			pm->d.size > pm->d.data_off
				? (pm->d.size - pm->d.data_off) >> shift
				: 0;
		if (pm->d.nextents < 16) {
			r = -ENOSPC;
			vdp_set_error(
				"member %s is too small: %llu bytes, "
				"needs at least %llu",
				pm->d.path, (unsigned long long)pm->d.size,
				(unsigned long long)(pm->d.data_off + 16 * e));
			goto err_free;
		}
	}
	r = alloc_init(p);
	if (r < 0)
		goto err_free;
	r = ns_init_root(p);
	if (r < 0)
		goto err_free;
	r = register_pool(p, o->force);
	if (r < 0)
		goto err_free;

	/* Clear both slots everywhere, so no older pool's superblock can
	 * outrank ours; then the first commit writes everything. */
	for (unsigned i = 0; i < n && r == 0; i++) {
		struct vdp_member *m = p->members[i].m;
		void *z;

		if (posix_memalign(&z, 4096, VDP_HEADER_AREA) != 0) {
			r = -ENOMEM;
			break;
		}
		memset(z, 0, VDP_HEADER_AREA);
		r = m->ops->pwrite(m, z, VDP_HEADER_AREA, 0);
		free(z);
		if (r < 0)
			vdp_set_error("member %s: write failed: %s", m->path,
				      strerror(-r));
	}
	if (r == 0)
		r = vdp_pool_commit(p);
	if (r < 0)
		goto err_free;
	pool_free(p);
	return 0;

err_free:
	pool_free(p);
	return r;
}

/* ---- open --------------------------------------------------------------- */

/*
 * Member path NTH (from 0) of a pool name from the registry, or SPEC itself
 * (NTH 0 only); UUID gets the pool UUID the registry promises ("" for a
 * path).  -ENOENT past the last one.
 */
static int resolve_spec(const char *spec, unsigned nth, char *path, size_t size,
			char uuid[37])
{
	char reg[PATH_MAX], line[PATH_MAX + 64];
	FILE *f;

	uuid[0] = 0;
	if (strchr(spec, '/') || access(spec, F_OK) == 0) {
		snprintf(path, size, "%s", spec);
		return nth ? -ENOENT : 0;
	}
	snprintf(reg, sizeof(reg), "%s/%s", vdp_registry_dir(), spec);
	f = fopen(reg, "r");
	if (!f) {
		vdp_set_error("%s: no such pool (not in %s) and no such "
			      "member path",
			      spec, vdp_registry_dir());
		return -ENOENT;
	}
	path[0] = 0;
	while (fgets(line, sizeof(line), f)) {
		char name[VDP_POOL_NAME_MAX + 1];

		line[strcspn(line, "\n")] = 0;
		if (sscanf(line, "# vdpool pool %63s %36s", name, uuid) == 2)
			continue;
		if (line[0] && line[0] != '#' && strlen(line) < size &&
		    nth-- == 0) {
			memcpy(path, line, strlen(line) + 1);
			break;
		}
	}
	fclose(f);
	if (!path[0]) {
		vdp_set_error("pool %s: registry file %s names no member", spec,
			      reg);
		return -ENOENT;
	}
	return 0;
}

static int load_super_fields(struct vdp_pool *p, const struct vdp_dsuper *s,
			     const char *where)
{
	uint64_t fc = le64toh(s->feat_incompat),
		 fr = le64toh(s->feat_ro_compat);

	if (le32toh(s->version) != VDP_FORMAT_VERSION ||
	    (fc & ~VDP_FEAT_INCOMPAT_KNOWN)) {
		vdp_set_error("%s: pool format version %u (features %#llx) "
			      "is newer than this vdpool understands; "
			      "upgrade vdpool",
			      where, le32toh(s->version),
			      (unsigned long long)fc);
		return -EPROTONOSUPPORT;
	}
	if ((fr & ~VDP_FEAT_RO_COMPAT_KNOWN) && !p->rdonly) {
		vdp_set_error("%s: pool has features %#llx this vdpool can "
			      "only read; open it read-only or upgrade",
			      where, (unsigned long long)fr);
		return -EROFS;
	}
	memcpy(p->uuid, s->h.pool_uuid, 16);
	p->seed = vdp_pool_seed(p->uuid);
	p->txid = le64toh(s->h.txid);
	memcpy(p->name, s->name, sizeof(p->name) - 1);
	/* Checked before they reach P: pool_free walks p->members up to
	 * p->nmembers, even after a failed open. */
	if (le32toh(s->extent_shift) < VDP_MIN_EXTENT_SHIFT ||
	    le32toh(s->extent_shift) > VDP_MAX_EXTENT_SHIFT ||
	    le32toh(s->nmembers) == 0 ||
	    le32toh(s->nmembers) > VDP_MAX_MEMBERS ||
	    le32toh(s->nchunks) == 0 || le32toh(s->nchunks) > VDP_MAX_CHUNKS) {
		vdp_set_error("%s: superblock has impossible values", where);
		return -EUCLEAN;
	}
	p->extent_shift = le32toh(s->extent_shift);
	p->nmembers = le32toh(s->nmembers);
	p->nchunks = le32toh(s->nchunks);
	p->extent_size = 1ull << p->extent_shift;
	p->create_time = le64toh(s->create_time);
	p->next_ino = le64toh(s->next_ino);
	p->sb_next_ino = p->next_ino;
	p->sb_inodes.addr = le64toh(s->inodes.addr);
	p->sb_inodes.height = s->inodes.height;
	p->sb_refc.addr = le64toh(s->refc.addr);
	p->sb_refc.height = s->refc.height;
	p->meta_blocks = 0;
	for (unsigned c = 0; c < p->nchunks; c++) {
		const struct vdp_dchunk *d = &s->chunks[c];
		struct vdp_dchunk *h = &p->chunks[c];

		h->lstart = le64toh(d->lstart);
		h->nblocks = le64toh(d->nblocks);
		h->ncopies = le16toh(d->ncopies);
		for (unsigned k = 0; k < 2; k++) {
			h->member[k] = le16toh(d->member[k]);
			h->offset[k] = le64toh(d->offset[k]);
		}
		if (h->ncopies < 1 || h->ncopies > 2 ||
		    h->member[0] >= p->nmembers ||
		    (h->ncopies == 2 && h->member[1] >= p->nmembers) ||
		    h->lstart != p->meta_blocks || h->nblocks == 0 ||
		    h->nblocks > (1ull << 40)) {
			vdp_set_error("%s: superblock has a bad metadata "
				      "chunk %u",
				      where, c);
			return -EUCLEAN;
		}
		p->meta_blocks += h->nblocks;
	}
	for (unsigned i = 0; i < p->nmembers; i++) {
		const struct vdp_dmember *d = &s->members[i];
		struct vdp_dmember *h = &p->members[i].d;

		memcpy(h->uuid, d->uuid, 16);
		h->size = le64toh(d->size);
		h->data_off = le64toh(d->data_off);
		h->nextents = le64toh(d->nextents);
		h->kind = le32toh(d->kind);
		h->state = le32toh(d->state);
		memcpy(h->path, d->path, sizeof(h->path) - 1);
		h->added_txid = le64toh(d->added_txid);
		h->move_rate = le64toh(d->move_rate);
		/* Without overflow: data_off + nextents extents <= size;
		 * the data clear of the superblock slots. */
		if (h->state > VDP_MS_REMOVED ||
		    (h->state == VDP_MS_REMOVED && h->nextents) ||
		    (h->state != VDP_MS_REMOVED &&
		     h->data_off < VDP_HEADER_AREA) ||
		    h->nextents >= (1ull << VDP_PID_IDX_BITS) ||
		    h->data_off > h->size ||
		    h->nextents > (h->size - h->data_off) >> p->extent_shift) {
			vdp_set_error("%s: superblock has a bad record for "
				      "member %u",
				      where, i);
			return -EUCLEAN;
		}
	}
	/* Each copy of a chunk lies between the header area and the data
	 * area of its member: that also bounds the metadata space, and the
	 * allocator's map of it, by the members' sizes. */
	for (unsigned c = 0; c < p->nchunks; c++) {
		const struct vdp_dchunk *h = &p->chunks[c];

		for (unsigned k = 0; k < h->ncopies; k++) {
			uint64_t end = p->members[h->member[k]].d.data_off;

			if (p->members[h->member[k]].d.state ==
			    VDP_MS_REMOVED) {
				vdp_set_error("%s: superblock puts metadata "
					      "chunk %u on removed member %u",
					      where, c, h->member[k]);
				return -EUCLEAN;
			}
			if (chunk_in_data(p, h, k))
				continue; /* put there by an add or removal */
			if (h->offset[k] < VDP_HEADER_AREA ||
			    h->offset[k] > end ||
			    h->nblocks >
				    (end - h->offset[k]) / VDP_BLOCK_SIZE) {
				vdp_set_error("%s: superblock puts metadata "
					      "chunk %u outside the metadata "
					      "area of member %u",
					      where, c, h->member[k]);
				return -EUCLEAN;
			}
		}
	}
	return 0;
}

int pool_super_decode(struct vdp_pool *p, const struct vdp_dsuper *s,
		      unsigned slot, char *why, size_t wl)
{
	int r = super_slot_check(s, slot, why, wl);

	if (r == 0) {
		r = load_super_fields(p, s, "superblock");
		if (r < 0)
			snprintf(why, wl, "%s", vdp_last_error());
	}
	return r;
}

/* Every extent with a reference is taken (rtree_load marked the blocks). */
static int refc_mark(void *ctx, const struct rnode *n, uint64_t base)
{
	struct vdp_pool *p = ctx;
	const uint32_t *c = (const uint32_t *)n->data;
	int r = 0;

	for (unsigned i = 0; r == 0 && n->level == 0 && i < p->refc.per_leaf;
	     i++)
		if (c[i]) {
			r = mark_extent_used(p, base + i);
			if (le32toh(c[i]) > 1)
				p->shared = true;
		}
	return r;
}

/*
 * A member may be smaller than its record says (a truncated file: check
 * reports it, repair extends it), but open allocates a bit per recorded
 * extent and metadata block: a record far beyond its member (damage, a
 * forged superblock) must not claim gigabytes of memory.  Repair, which
 * reads what it can, is let through.
 */
#define TRUNCATED_MAX (1ull << 40)

static int check_member_sizes(struct vdp_pool *p, unsigned flags)
{
	for (unsigned i = 0; i < p->nmembers && !(flags & POOL_OPEN_REPAIR);
	     i++) {
		const struct pmember *pm = &p->members[i];

		if (pm->m && pm->d.size > pm->m->size &&
		    pm->d.size - pm->m->size > TRUNCATED_MAX) {
			vdp_set_error("pool %s: member %s is %llu bytes but "
				      "its record says %llu, over 1 TiB more: "
				      "a damaged superblock or a wrong member",
				      p->name, pm->m->path,
				      (unsigned long long)pm->m->size,
				      (unsigned long long)pm->d.size);
			return -EUCLEAN;
		}
	}
	return 0;
}

/* Opens every member named in the superblock S read from FIRST; leaves in
 * S the newest superblock found on any member.  -EAGAIN with AGAIN set to
 * a member's path when that member has a newer superblock with more
 * members (an add that a crash cut short on the first member): the open
 * must start over from it. */
static int open_members(struct vdp_pool *p, struct vdp_member *first,
			struct vdp_dsuper *s, unsigned flags, char *again,
			size_t al)
{
	unsigned fi = le32toh(s->member_index);
	struct vdp_dsuper *t;
	char u[37], why[200];
	int r = 0;

	p->members[fi].m = first; /* fi checked by the caller */
	if (posix_memalign((void **)&t, 4096, sizeof(*t)) != 0)
		return -ENOMEM;
	for (unsigned i = 0; i < p->nmembers && r == 0; i++) {
		struct pmember *pm = &p->members[i];

		if (i == fi || pm->d.state == VDP_MS_REMOVED)
			continue;
		uuid_str(pm->d.uuid, u);
		r = vdp_member_open(pm->d.path, flags & VDP_OPEN_RDONLY,
				    &pm->m);
		if (r < 0 && pm->d.kind == VDP_MK_LVM) {
			/* The LVM member says which part is missing. */
			char e[600];

			snprintf(e, sizeof(e), "%s", vdp_last_error());
			vdp_set_error("pool %s: member %u (uuid %s) is "
				      "missing: %s",
				      p->name, i, u, e);
			break;
		}
		if (r < 0) {
			vdp_set_error("pool %s: member %u (uuid %s, last seen "
				      "at %s) is missing: %s",
				      p->name, i, u, pm->d.path, strerror(-r));
			break;
		}
		r = super_read(pm->m, t, why, sizeof(why));
		if (r < 0 && (flags & POOL_OPEN_REPAIR)) {
			r = 0; /* repair rewrites it */
		} else if (r < 0) {
			vdp_set_error("pool %s: member %s: %s", p->name,
				      pm->d.path, why);
		} else if (memcmp(t->h.pool_uuid, p->uuid, 16) != 0 ||
			   memcmp(t->member_uuid, pm->d.uuid, 16) != 0) {
			vdp_set_error("pool %s: %s is not member %u (uuid %s) "
				      "of this pool",
				      p->name, pm->d.path, i, u);
			r = -ESTALE;
		} else if (le64toh(t->h.txid) > p->txid &&
			   le32toh(t->nmembers) > p->nmembers) {
			snprintf(again, al, "%s", pm->d.path);
			vdp_set_error("pool %s: member %s has a newer "
				      "superblock listing %u members, not %u",
				      p->name, pm->d.path, le32toh(t->nmembers),
				      p->nmembers);
			r = -EAGAIN;
		} else if (le64toh(t->h.txid) > p->txid &&
			   le32toh(t->nmembers) != p->nmembers) {
			/* Members 0..i are open: another count would leak
			 * them or leave holes. */
			vdp_set_error("pool %s: member %s has a newer "
				      "superblock listing %u members, not %u",
				      p->name, pm->d.path, le32toh(t->nmembers),
				      p->nmembers);
			r = -EUCLEAN;
		} else if (le64toh(t->h.txid) > p->txid) {
			/* A newer commit reached this member: start over
			 * from its superblock.  The table is the same in v1. */
			r = load_super_fields(p, t, pm->d.path);
			memcpy(s, t, sizeof(*s));
		}
	}
	free(t);
	/* A newer superblock may say a member we opened (the first one, or
	 * an earlier one) is gone: a removal's last commit. */
	for (unsigned i = 0; i < p->nmembers && r == 0; i++)
		if (p->members[i].d.state == VDP_MS_REMOVED &&
		    p->members[i].m) {
			vdp_member_close(p->members[i].m);
			p->members[i].m = NULL;
		}
	/* An LV found by its UUID under a new name (lvrename): the next
	 * commit records the new name.  And no two members may reach the
	 * same LV or device (docs/members/lvm.md). */
	for (unsigned i = 0; i < p->nmembers && r == 0; i++) {
		struct pmember *pm = &p->members[i];

		if (pm->m && pm->d.kind == VDP_MK_LVM &&
		    strlen(pm->m->path) < sizeof(pm->d.path))
			snprintf(pm->d.path, sizeof(pm->d.path), "%s",
				 pm->m->path);
		r = check_overlap(p, i, pm->d.path);
	}
	return r;
}

/*
 * Opens the member of SPEC to start from, *FIRST, and reads its newest
 * valid superblock into S.  A repair open tries each member the registry
 * names in turn until one has a valid superblock; other opens only the
 * first.  On failure the error is the first member's.
 */
static int open_first(const char *spec, unsigned flags, char *path, size_t size,
		      char want_uuid[37], struct vdp_member **first,
		      struct vdp_dsuper *s)
{
	char why[200], err[1024] = "";
	unsigned nth;
	int r, r0 = 0;

	for (nth = 0;; nth++) {
		r = resolve_spec(spec, nth, path, size, want_uuid);
		if (r < 0)
			break;
		r = vdp_member_open(path, flags & VDP_OPEN_RDONLY, first);
		if (r == 0) {
			r = super_read(*first, s, why, sizeof(why));
			if (r == 0)
				return 0;
			vdp_set_error("%s: %s", path, why);
			vdp_member_close(*first);
			*first = NULL;
		}
		if (nth == 0) {
			r0 = r;
			snprintf(err, sizeof(err), "%s", vdp_last_error());
		}
		if (!(flags & POOL_OPEN_REPAIR))
			break;
	}
	if (nth > 0) {
		vdp_set_error("%s", err);
		r = r0;
	}
	return r;
}

/* vdp_pool_open started over from another member (open_members). */
static __thread bool reopening;

int vdp_pool_open(const char *spec, unsigned flags, struct vdp_pool **out)
{
	char path[PATH_MAX], want_uuid[37], u[37];
	struct vdp_member *first = NULL;
	struct vdp_dsuper *s = NULL;
	struct vdp_pool *p;
	int r;

	vdp_clear_error();
	p = pool_alloc();
	if (!p)
		return -ENOMEM;
	p->rdonly = flags & VDP_OPEN_RDONLY;
	if (posix_memalign((void **)&s, 4096, sizeof(*s)) != 0) {
		r = -ENOMEM;
		goto err_free;
	}
	r = open_first(spec, flags, path, sizeof(path), want_uuid, &first, s);
	if (r < 0)
		goto err_free;
	r = load_super_fields(p, s, path);
	if (r < 0)
		goto err_close_first;
	uuid_str(p->uuid, u);
	if (want_uuid[0] && strcmp(want_uuid, u) != 0) {
		vdp_set_error("pool %s: %s now belongs to pool %s (%s), not to "
			      "%s; the registry entry is stale",
			      spec, path, p->name, u, want_uuid);
		r = -ESTALE;
		goto err_close_first;
	}
	if (le32toh(s->member_index) >= p->nmembers) {
		vdp_set_error("%s: superblock names itself member %u of %u",
			      path, le32toh(s->member_index), p->nmembers);
		r = -EUCLEAN;
		goto err_close_first;
	}
	r = open_members(p, first, s, flags, path, sizeof(path));
	first = NULL; /* owned by p now */
	if (r == -EAGAIN && !reopening) {
		free(s);
		pool_free(p);
		reopening = true;
		r = vdp_pool_open(path, flags, out);
		reopening = false;
		return r;
	}
	if (r < 0)
		goto err_free;
	r = check_member_sizes(p, flags);
	if (r < 0)
		goto err_free;
	if (!p->rdonly && !(flags & POOL_OPEN_REPAIR))
		reshape_grow_at_open(p);
	if (!(flags & VDP_OPEN_NOLOCK)) {
		r = lock_members(p, !p->rdonly);
		if (r < 0)
			goto err_free;
	}
	r = alloc_init(p);
	if (r < 0)
		goto err_free;
	if (flags & POOL_OPEN_REPAIR) {
		/* repair.c loads the trees itself, tolerating damage. */
		free(s);
		*out = p;
		return 0;
	}
	r = rtree_load(p, &p->inodes, &p->sb_inodes);
	if (r == 0)
		r = rtree_load(p, &p->refc, &p->sb_refc);
	if (r == 0)
		r = rtree_visit(&p->refc, refc_mark, p);
	if (r == 0)
		r = ns_load(p);
	if (r < 0) {
		if (!*vdp_last_error())
			vdp_set_error("pool %s: cannot load metadata: %s",
				      p->name, strerror(-r));
		goto err_free;
	}
	if (!p->rdonly) {
		r = commit_start_threads(p);
		if (r < 0)
			goto err_free;
		/* A removal the last daemon left half done goes on. */
		reshape_resume(p);
	}
	free(s);
	*out = p;
	return 0;

err_close_first:
	vdp_member_close(first);
err_free:
	free(s);
	pool_free(p);
	return r;
}

void vdp_pool_set_commit_interval(struct vdp_pool *p, unsigned ms)
{
	pthread_mutex_lock(&p->commit_lock);
	p->interval_ms = ms;
	if (p->timer_started)
		pthread_cond_broadcast(&p->timer_cv);
	pthread_mutex_unlock(&p->commit_lock);
}

void vdp_pool_set_discard_sync(struct vdp_pool *p, bool sync)
{
	pthread_mutex_lock(&p->meta_lock);
	p->discard_sync = sync;
	pthread_mutex_unlock(&p->meta_lock);
}

int vdp_pool_close(struct vdp_pool *p)
{
	int r = 0;

	if (!p)
		return 0;
	vdp_aio_poll(true); /* the caller's reads and writes still in flight */
	reshape_stop(p);    /* a removal resumes at the next open */
	commit_stop_threads(p);
	if (!p->rdonly)
		r = vdp_pool_commit(p);
	pool_free(p);
	return r;
}

int pool_super_read(struct vdp_member *m, struct vdp_dsuper *s, char *why,
		    size_t wl)
{
	return super_read(m, s, why, wl);
}

int pool_check_signature(struct vdp_member *m, bool force)
{
	return check_signature(m, force);
}

int pool_register(const struct vdp_pool *p)
{
	return register_pool(p, true);
}

void vdp_pool_uuid(struct vdp_pool *p, char out[37])
{
	uuid_str(p->uuid, out);
}
