/* SPDX-License-Identifier: MIT */
/*
 * share.c - write-side sharing: the keys that let a write of the bytes of
 * an extent read a moment ago share that extent instead of storing a copy.
 * That is what turns the read-and-write copies of `cp` (of a thin disk),
 * `qemu-img convert` without -C, libvirt's vol-clone, rsync and `cat` into
 * clones (docs/clones.md).
 *
 * A key is the sum, over the 512-byte sectors of an extent, of XXH3-64 of
 * the first 64 bytes of each sector seeded with its index in the extent:
 * every read of a whole extent is keyed, and a sample keeps that to an
 * eighth of the bytes (a sequential read paid ~10 % for whole sectors);
 * the byte compare before sharing catches what the sample misses.  Being
 * a sum, it can be gathered from pieces in any order (requests of one read
 * or write arrive split and in parallel); a bitmap makes sure each sector
 * counts once.
 * Reads of a disk feed its read streams, and an extent read whole becomes a
 * candidate in a small pool-wide table (least recently added goes first).
 * Writes, while a candidate is fresh, feed write streams the same way (or
 * key a whole-extent write at once); a writer that skips zeros is taken as
 * done with an extent when it writes the extent's end, moves on or
 * flushes.  vdisk.c looks the key up and, on a match, compares the bytes
 * with the candidate extent under both disks' io locks before it shares
 * (share_from).
 *
 * Must never: decide anything on a key alone; do member I/O (this file
 * does none); take a lock on a request too small to start a stream when
 * its disk has no stream (the random 4 KiB path).  Lock order: the stream
 * and table locks are innermost; no other lock is taken under them.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <xxhash.h>

#include "internal.h"

#define SECTOR 512u
#define SAMPLE 64u	      /* bytes of each sector the key covers */
#define NCANDS 256	      /* extents remembered, pool-wide */
#define NSTREAMS 4	      /* extents gathered at once, per disk and way */
#define NPARTS 4	      /* cut sectors waiting, per stream */
#define START_MIN (32u << 10) /* the smallest piece that starts a stream */
#define TTL_MS 60000	      /* a candidate this old is forgotten */

struct share {
	pthread_mutex_t lock;
	uint64_t clock;
	/* The last candidate added or read stream started; 0: never. */
	atomic_uint_fast64_t last_ms;
	struct share_cand cand[NCANDS];
	uint64_t stamp[NCANDS]; /* 0: empty slot */
	uint64_t added_ms[NCANDS];
	atomic_uint_fast64_t n_shared, n_differ;
};

/* A sector that pieces cut (user buffers need not be aligned, so the
 * kernel splits requests anywhere): its bytes wait here until complete. */
struct part {
	uint64_t idx; /* sector index in the extent; UINT64_MAX: free */
	uint64_t have[SECTOR / 64];
	uint8_t b[SECTOR];
};

struct stream {
	uint64_t vext, pid, key, stamp; /* stamp 0: free */
	uint64_t nsect;
	bool write;
	uint64_t *seen; /* bit per sector of the extent */
	struct part part[NPARTS];
};

struct share_streams {
	pthread_mutex_t lock;
	uint64_t clock;
	struct stream s[2 * NSTREAMS];
};

uint64_t share_key_mask = UINT64_MAX;

static uint64_t now_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &t);
	return (uint64_t)t.tv_sec * 1000 + (uint64_t)t.tv_nsec / 1000000;
}

/* The key of the one sector at B, sector I of its extent. */
static uint64_t sector_key(const void *b, uint64_t i)
{
	return XXH3_64bits_withSeed(b, SAMPLE, i);
}

uint64_t share_key(const void *buf, uint64_t s, size_t n)
{
	uint64_t k = 0;

	for (size_t o = 0; o < n; o += SECTOR)
		k += sector_key((const char *)buf + o, (s + o) / SECTOR);
	return k;
}

/* P's table, made on first use; NULL without memory. */
static struct share *table(struct vdp_pool *p)
{
	struct share *t = atomic_load(&p->share), *none = NULL;

	if (t)
		return t;
	t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	pthread_mutex_init(&t->lock, NULL);
	if (!atomic_compare_exchange_strong(&p->share, &none, t)) {
		share_free(t);
		return none;
	}
	return t;
}

void share_free(struct share *t)
{
	if (!t)
		return;
	pthread_mutex_destroy(&t->lock);
	free(t);
}

bool share_wanted(struct vdp_pool *p)
{
	struct share *t = atomic_load(&p->share);
	uint64_t last = t ? atomic_load(&t->last_ms) : 0;

	return last && now_ms() - last < TTL_MS;
}

void share_add(struct vdp_pool *p, uint64_t key, uint64_t ino, uint64_t vext,
	       uint64_t pid)
{
	struct share *t = table(p);
	unsigned best = 0;

	if (!t)
		return; /* no memory: no sharing, nothing else lost */
	key &= share_key_mask;
	pthread_mutex_lock(&t->lock);
	for (unsigned i = 0; i < NCANDS; i++) {
		if (t->stamp[i] && t->cand[i].ino == ino &&
		    t->cand[i].vext == vext) {
			best = i; /* the same place read again */
			break;
		}
		if (t->stamp[i] < t->stamp[best])
			best = i;
	}
	t->cand[best] = (struct share_cand){
		.key = key, .ino = ino, .vext = vext, .pid = pid};
	t->stamp[best] = ++t->clock;
	t->added_ms[best] = now_ms();
	atomic_store(&t->last_ms, t->added_ms[best]);
	pthread_mutex_unlock(&t->lock);
}

bool share_find(struct vdp_pool *p, uint64_t key, struct share_cand *c)
{
	struct share *t = atomic_load(&p->share);
	uint64_t best = 0, now = now_ms();

	if (!t)
		return false;
	key &= share_key_mask;
	pthread_mutex_lock(&t->lock);
	for (unsigned i = 0; i < NCANDS; i++)
		if (t->stamp[i] > best && t->cand[i].key == key &&
		    now - t->added_ms[i] < TTL_MS) {
			best = t->stamp[i];
			*c = t->cand[i];
		}
	pthread_mutex_unlock(&t->lock);
	return best != 0;
}

void share_forget(struct vdp_pool *p, const struct share_cand *c)
{
	struct share *t = atomic_load(&p->share);

	if (!t)
		return;
	pthread_mutex_lock(&t->lock);
	for (unsigned i = 0; i < NCANDS; i++)
		if (t->stamp[i] && t->cand[i].ino == c->ino &&
		    t->cand[i].vext == c->vext && t->cand[i].pid == c->pid)
			t->stamp[i] = 0;
	pthread_mutex_unlock(&t->lock);
}

void share_count(struct vdp_pool *p, bool shared)
{
	struct share *t = atomic_load(&p->share);

	if (t)
		atomic_fetch_add(shared ? &t->n_shared : &t->n_differ, 1);
}

void share_stats(struct vdp_pool *p, uint64_t *shared, uint64_t *differ)
{
	struct share *t = atomic_load(&p->share);

	*shared = t ? atomic_load(&t->n_shared) : 0;
	*differ = t ? atomic_load(&t->n_differ) : 0;
}

static void streams_free(struct share_streams *ss)
{
	if (!ss)
		return;
	for (unsigned i = 0; i < 2 * NSTREAMS; i++)
		free(ss->s[i].seen);
	pthread_mutex_destroy(&ss->lock);
	free(ss);
}

void share_vnode_free(struct vnode *v)
{
	streams_free(atomic_load(&v->shs));
}

/* V's streams, made on first use; NULL without memory. */
static struct share_streams *streams(struct vdp_pool *p, struct vnode *v)
{
	struct share_streams *ss = atomic_load(&v->shs), *none = NULL;
	size_t words = (p->extent_size / SECTOR + 63) / 64;

	if (ss)
		return ss;
	ss = calloc(1, sizeof(*ss));
	if (!ss)
		return NULL;
	pthread_mutex_init(&ss->lock, NULL);
	for (unsigned i = 0; i < 2 * NSTREAMS; i++) {
		ss->s[i].seen = calloc(words, sizeof(uint64_t));
		if (!ss->s[i].seen) {
			streams_free(ss);
			return NULL;
		}
	}
	if (!atomic_compare_exchange_strong(&v->shs, &none, ss)) {
		streams_free(ss); /* another thread made them first */
		return none;
	}
	return ss;
}

static void stream_end(struct vnode *v, struct stream *st)
{
	st->stamp = 0;
	atomic_fetch_sub(&v->shs_active, 1);
}

/* The stream of V (under SS->lock) gathering virtual extent VEXT that way,
 * or NULL; *SLOT gets a free slot or the least recently fed one. */
static struct stream *stream_find(struct share_streams *ss, bool write,
				  uint64_t vext, struct stream **slot)
{
	struct stream *st = NULL;

	*slot = NULL;
	for (unsigned i = 0; i < 2 * NSTREAMS; i++) {
		struct stream *x = &ss->s[i];

		if (x->stamp && x->write == write && x->vext == vext)
			st = x;
		else if (!*slot || x->stamp < (*slot)->stamp)
			*slot = x;
	}
	return st;
}

/* Marks sector I of ST seen; false if it was already. */
static bool see(struct stream *st, uint64_t i)
{
	uint64_t bit = 1ull << (i % 64);

	if (st->seen[i / 64] & bit)
		return false;
	st->seen[i / 64] |= bit;
	st->nsect++;
	return true;
}

/* The key of cut sector PT, its missing bytes zeros. */
static uint64_t part_key(const struct part *pt)
{
	uint8_t tmp[SECTOR];

	for (unsigned x = 0; x < SECTOR; x++)
		tmp[x] = (pt->have[x / 64] >> (x % 64)) & 1 ? pt->b[x] : 0;
	return sector_key(tmp, pt->idx);
}

/* Adds bytes [a, b) of sector I (BYTES) to ST's cut sectors, counting the
 * sector once complete.  False if the stream cannot go on (bytes given
 * twice). */
static bool add_part(struct stream *st, uint64_t i, unsigned a, unsigned b,
		     const uint8_t *bytes)
{
	struct part *pt = NULL;
	bool full = true;

	for (unsigned k = 0; k < NPARTS && !pt; k++)
		if (st->part[k].idx == i)
			pt = &st->part[k];
	for (unsigned k = 0; k < NPARTS && !pt; k++)
		if (st->part[k].idx == UINT64_MAX)
			pt = &st->part[k];
	if (!pt) {
		/* No room: the lowest waiting sector is taken as complete,
		 * its missing bytes zeros (rsync -S skips single zero bytes;
		 * if they were not zeros, the key just matches nothing). */
		pt = &st->part[0];
		for (unsigned k = 1; k < NPARTS; k++)
			if (st->part[k].idx < pt->idx)
				pt = &st->part[k];
		st->key += part_key(pt);
		if (!see(st, pt->idx))
			return false;
	}
	if (pt->idx != i) {
		pt->idx = i;
		memset(pt->have, 0, sizeof(pt->have));
	}
	for (unsigned x = a; x < b; x++) {
		if (pt->have[x / 64] & (1ull << (x % 64)))
			return false;
		pt->have[x / 64] |= 1ull << (x % 64);
	}
	memcpy(pt->b + a, bytes, b - a);
	for (unsigned k = 0; k < SECTOR / 64; k++)
		full &= pt->have[k] == UINT64_MAX;
	if (!full)
		return true;
	pt->idx = UINT64_MAX;
	st->key += sector_key(pt->b, i);
	return see(st, i);
}

/*
 * The key ST would have if the sectors it has not seen were zeros (cut
 * sectors: their missing bytes).  For a write stream whose writer skipped
 * zeros or moved on: the bytes compare decides.
 */
static uint64_t key_with_zeros(const struct stream *st, uint64_t nsect)
{
	static const uint8_t zero[SECTOR];
	uint64_t k = st->key;

	for (uint64_t i = 0; i < nsect; i++) {
		const uint8_t *b = zero;

		if (st->seen[i / 64] & (1ull << (i % 64)))
			continue;
		for (unsigned j = 0; j < NPARTS; j++)
			if (st->part[j].idx == i) {
				k += part_key(&st->part[j]);
				b = NULL;
			}
		if (b)
			k += sector_key(b, i);
	}
	return k;
}

static void found(struct share_done *d, uint64_t vext, uint64_t key)
{
	if (d->n < SHARE_DONE_MAX) {
		d->vext[d->n] = vext;
		d->key[d->n++] = key;
	}
}

/* Ends V's write streams of extents before BEFORE, into *D.  Under
 * SS->lock. */
static void finish(struct vnode *v, struct share_streams *ss, uint64_t before,
		   uint64_t nsect, struct share_done *d)
{
	for (unsigned i = 0; i < 2 * NSTREAMS; i++) {
		struct stream *x = &ss->s[i];

		if (!x->stamp || !x->write || x->vext >= before)
			continue;
		/* A few small writes are not a copy: not worth a key. */
		if (x->nsect * SECTOR >= START_MIN)
			found(d, x->vext, key_with_zeros(x, nsect));
		stream_end(v, x);
	}
}

void share_finish(struct vdp_pool *p, struct vnode *v, uint64_t before,
		  struct share_done *d)
{
	struct share_streams *ss = atomic_load(&v->shs);

	d->n = 0;
	if (!ss || !atomic_load(&v->shs_active))
		return;
	pthread_mutex_lock(&ss->lock);
	finish(v, ss, before, p->extent_size / SECTOR, d);
	pthread_mutex_unlock(&ss->lock);
}

void share_feed(struct vdp_pool *p, struct vnode *v, bool write, uint64_t vext,
		uint64_t pid, uint64_t s, const void *buf, size_t n,
		struct share_done *d)
{
	const uint64_t nsect = p->extent_size / SECTOR;
	/* Whole sectors [w0, w1) of the piece, and the cut ones around. */
	const uint64_t w0 = (s + SECTOR - 1) / SECTOR, w1 = (s + n) / SECTOR;
	const uint8_t *b = buf;
	/* Writes are fed only while copies go on (share_wanted), and a
	 * writer that skips zeros may start an extent with any piece.  A
	 * read starts a stream only with a long piece: random reads must
	 * neither pay for keys nor make writes keyed. */
	bool starts = write || n >= START_MIN;
	bool ok = true;
	struct share_streams *ss;
	struct stream *st, *slot;
	uint64_t k = 0;

	d->n = 0;
	/* The random small-I/O path: one atomic load. */
	if (!n || (!starts && !atomic_load(&v->shs_active)))
		return;
	ss = streams(p, v);
	if (!ss)
		return;
	if (n >= START_MIN && w0 < w1) /* long: hash outside the lock */
		k = share_key(b + (w0 * SECTOR - s), w0 * SECTOR,
			      (w1 - w0) * SECTOR);
	pthread_mutex_lock(&ss->lock);
	st = stream_find(ss, write, vext, &slot);
	if (st && st->pid != pid) {
		stream_end(v, st); /* another extent there now */
		slot = st;
		st = NULL;
	}
	if (!st && starts) {
		/* A writer that moved on to a later extent is done with
		 * the earlier ones: what it skipped reads as zeros (if
		 * not, the bytes compare says so). */
		if (write) {
			finish(v, ss, vext, nsect, d);
		} else {
			/* Writes are keyed from now on: a copy's writes of
			 * this extent may come before its last read. */
			struct share *t = table(p);

			if (t)
				atomic_store(&t->last_ms, now_ms());
		}
		if (slot->stamp)
			stream_end(v, slot);
		st = slot;
		st->vext = vext;
		st->pid = pid;
		st->write = write;
		st->key = 0;
		st->nsect = 0;
		memset(st->seen, 0, (nsect + 63) / 64 * sizeof(uint64_t));
		for (unsigned i = 0; i < NPARTS; i++)
			st->part[i].idx = UINT64_MAX;
		atomic_fetch_add(&v->shs_active, 1);
	}
	if (!st)
		goto out;
	if (n < START_MIN && w0 < w1) /* short: under the lock */
		k = share_key(b + (w0 * SECTOR - s), w0 * SECTOR,
			      (w1 - w0) * SECTOR);
	if (w0 > w1) { /* inside one sector */
		ok = add_part(st, s / SECTOR, s % SECTOR,
			      (unsigned)(s % SECTOR + n), b);
	} else {
		if (s % SECTOR)
			ok = add_part(st, s / SECTOR, s % SECTOR, SECTOR, b);
		if (ok && (s + n) % SECTOR)
			ok = add_part(st, w1, 0, (s + n) % SECTOR,
				      b + (w1 * SECTOR - s));
		for (uint64_t i = w0; ok && i < w1; i++)
			ok = see(st, i);
	}
	if (!ok) {
		stream_end(v, st); /* bytes twice, or too cut up */
		goto out;
	}
	st->stamp = ++ss->clock;
	st->key += k;
	if (st->nsect == nsect) {
		found(d, vext, st->key);
		stream_end(v, st);
	} else if (write && s + n == p->extent_size &&
		   st->nsect * SECTOR >= START_MIN) {
		/* The writer reached the end of the extent, perhaps having
		 * skipped zeros: try it as it is, and go on gathering. */
		found(d, vext, key_with_zeros(st, nsect));
	}
out:
	pthread_mutex_unlock(&ss->lock);
}
