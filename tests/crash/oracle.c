/* SPDX-License-Identifier: MIT */
/*
 * oracle.c - the crash oracle of oracle.h: per-sector value sets and the
 * namespace states since the last sync.
 *
 * A sector value ("version") is a list of fragments: bytes [a, b) of the
 * sector are write W's bytes at those offsets plus a shift (0 unless a copy
 * moved them), W = 0 meaning zeros.  A write's bytes are a pure function of
 * (seed, W, absolute offset), so a version is the same whichever sector it
 * sits in, and the version "all of write W" is shared by every sector W
 * covers.  Partial sectors (unaligned writes, punches, a size that is not a
 * multiple of 512) get versions of their own, and so do sectors a copy
 * shifted.  Each sector holds its current version and, once changed since
 * the last sync, a list of candidates: the version it had at the sync plus
 * every version given to it since.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "oracle.h"

#define TAG_MAGIC "VDPCRSH1"

/* Byte x in [a, b) of sector S is write W's byte at S * SECTOR + x + shift
 * (shift 0 for zeros). */
struct frag {
	uint16_t a, b; /* byte range in the sector */
	uint32_t w;    /* write, 0 = zeros */
	int64_t shift; /* source offset - destination offset of the copies */
};

struct ver {
	uint32_t at, n; /* o->frags[at .. at + n) */
};

struct cand {
	uint32_t ver, next; /* next: index in o->cands, 0 = end */
};

struct sect {
	uint32_t live;	/* current version */
	uint32_t extra; /* candidate list, 0 = unchanged since the sync */
};

#define VEC(T)                                                                 \
	struct {                                                               \
		T *v;                                                          \
		size_t n, cap;                                                 \
	}

struct odisk {
	uint64_t ino, size;
	struct sect *s;
	uint64_t nsect;
	VEC(uint32_t) from; /* disks whose bytes copies brought here */
};

struct wrec {
	uint32_t disk;
	uint64_t off, len;
	uint32_t whole; /* version "all of this write", 0 = not made yet */
};

struct nsent {
	char name[NAME_LEN];
	uint32_t disk;
	uint64_t size, size_max; /* a copy growing the disk: a range */
};

struct nstate {
	size_t at, n; /* o->ents[at .. at + n), sorted by name */
};

struct touch {
	uint32_t disk;
	uint64_t sec;
};

struct undo {
	uint32_t disk, old;
	uint64_t sec;
};

/* The tag at the start of every sector a write starts. */
struct tag {
	char magic[8];
	uint32_t disk, w;
	uint64_t sec, check;
};

struct oracle {
	uint64_t seed;
	VEC(struct odisk) disks; /* index = id - 1 */
	VEC(struct wrec) writes; /* index = w; [0] unused */
	VEC(struct frag) frags;
	VEC(struct ver) vers; /* [0] = zeros */
	VEC(struct cand) cands;
	VEC(struct touch) touched;
	VEC(struct undo) undo;	 /* the last data call's changes */
	VEC(struct nsent) names; /* current: name -> disk */
	VEC(struct nsent) ents;	 /* entries of the recorded states */
	VEC(struct nstate) states;
};

static void *xgrow(void *v, size_t *cap, size_t need, size_t size)
{
	size_t c = *cap ? *cap : 16;

	if (need <= *cap)
		return v;
	while (c < need)
		c *= 2;
	v = realloc(v, c * size);
	if (!v) {
		fprintf(stderr, "crashtest: out of memory\n");
		exit(2);
	}
	*cap = c;
	return v;
}

#define PUSH(vec, x)                                                           \
	do {                                                                   \
		(vec).v = xgrow((vec).v, &(vec).cap, (vec).n + 1,              \
				sizeof(*(vec).v));                             \
		(vec).v[(vec).n++] = (x);                                      \
	} while (0)

static uint64_t mix64(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t tag_check(uint64_t seed, uint32_t disk, uint32_t w,
			  uint64_t sec)
{
	return mix64(seed ^ mix64(((uint64_t)disk << 32 | w) ^ mix64(sec)));
}

struct oracle *oracle_new(uint64_t seed)
{
	struct oracle *o = calloc(1, sizeof(*o));
	struct wrec none = {0};
	struct frag z = {0, SECTOR, 0, 0};
	struct ver zv = {0, 1};
	struct cand c0 = {0, 0};

	if (!o)
		return NULL;
	o->seed = seed;
	PUSH(o->writes, none);
	PUSH(o->frags, z);
	PUSH(o->vers, zv);
	PUSH(o->cands, c0);
	/* The empty namespace is the state at the start (the pool is new). */
	struct nstate s0 = {0, 0};
	PUSH(o->states, s0);
	return o;
}

void oracle_free(struct oracle *o)
{
	if (!o)
		return;
	for (size_t i = 0; i < o->disks.n; i++) {
		free(o->disks.v[i].s);
		free(o->disks.v[i].from.v);
	}
	free(o->disks.v);
	free(o->writes.v);
	free(o->frags.v);
	free(o->vers.v);
	free(o->cands.v);
	free(o->touched.v);
	free(o->undo.v);
	free(o->names.v);
	free(o->ents.v);
	free(o->states.v);
	free(o);
}

uint32_t oracle_nwrites(const struct oracle *o)
{
	return (uint32_t)(o->writes.n - 1);
}

size_t oracle_nstates(const struct oracle *o)
{
	return o->states.n;
}

/* ---- namespace ---------------------------------------------------------- */

static struct odisk *disk_of(const struct oracle *o, uint32_t id)
{
	if (id == 0 || id > o->disks.n) {
		fprintf(stderr, "crashtest: oracle: no disk %u\n", id);
		abort();
	}
	return &o->disks.v[id - 1];
}

uint32_t oracle_disk_new(struct oracle *o, uint64_t ino)
{
	struct odisk d = {.ino = ino};

	PUSH(o->disks, d);
	return (uint32_t)o->disks.n;
}

uint64_t oracle_disk_ino(const struct oracle *o, uint32_t disk)
{
	return disk_of(o, disk)->ino;
}

static int ent_cmp(const void *a, const void *b)
{
	return strcmp(((const struct nsent *)a)->name,
		      ((const struct nsent *)b)->name);
}

/*
 * Records the current namespace as a state unless it equals the last; in
 * it, disk GROW (0: none) has any size in [LO, HI].
 */
static void snapshot_range(struct oracle *o, uint32_t grow, uint64_t lo,
			   uint64_t hi)
{
	const struct nstate *last = &o->states.v[o->states.n - 1];
	struct nstate s = {o->ents.n, o->names.n};
	bool same = last->n == s.n;

	for (size_t i = 0; i < o->names.n; i++) {
		struct nsent e = o->names.v[i];

		e.size = e.size_max = disk_of(o, e.disk)->size;
		if (grow && e.disk == grow) {
			e.size = lo;
			e.size_max = hi;
		}
		PUSH(o->ents, e);
	}
	qsort(o->ents.v + s.at, s.n, sizeof(struct nsent), ent_cmp);
	for (size_t i = 0; same && i < s.n; i++) {
		const struct nsent *x = &o->ents.v[last->at + i];
		const struct nsent *y = &o->ents.v[s.at + i];

		same = !strcmp(x->name, y->name) && x->disk == y->disk &&
		       x->size == y->size && x->size_max == y->size_max;
	}
	if (same) {
		o->ents.n = s.at;
		return;
	}
	PUSH(o->states, s);
}

static void snapshot(struct oracle *o)
{
	snapshot_range(o, 0, 0, 0);
}

/* NAME names DISK (0: NAME goes), without recording a state. */
static void set_name(struct oracle *o, const char *name, uint32_t disk)
{
	size_t i;

	for (i = 0; i < o->names.n; i++)
		if (!strcmp(o->names.v[i].name, name))
			break;
	if (i < o->names.n) {
		if (disk)
			o->names.v[i].disk = disk;
		else
			o->names.v[i] = o->names.v[--o->names.n];
	} else if (disk) {
		struct nsent e = {.disk = disk};

		snprintf(e.name, sizeof(e.name), "%s", name);
		PUSH(o->names, e);
	}
}

void oracle_link(struct oracle *o, const char *name, uint32_t disk)
{
	set_name(o, name, disk);
	snapshot(o);
}

void oracle_rename(struct oracle *o, const char *from, const char *to)
{
	uint32_t d = oracle_lookup(o, from);

	if (!d || !strcmp(from, to))
		return;
	set_name(o, to, d);
	set_name(o, from, 0);
	snapshot(o);
}

uint32_t oracle_lookup(const struct oracle *o, const char *name)
{
	for (size_t i = 0; i < o->names.n; i++)
		if (!strcmp(o->names.v[i].name, name))
			return o->names.v[i].disk;
	return 0;
}

uint64_t oracle_size(const struct oracle *o, uint32_t disk)
{
	return disk_of(o, disk)->size;
}

/* ---- versions ----------------------------------------------------------- */

static uint32_t ver_new(struct oracle *o, const struct frag *f, size_t n)
{
	struct ver v = {(uint32_t)o->frags.n, (uint32_t)n};

	for (size_t i = 0; i < n; i++)
		PUSH(o->frags, f[i]);
	PUSH(o->vers, v);
	return (uint32_t)(o->vers.n - 1);
}

/* The version "all of write W". */
static uint32_t ver_whole(struct oracle *o, uint32_t w)
{
	struct frag f = {0, SECTOR, w, 0};

	if (w == 0)
		return 0;
	if (!o->writes.v[w].whole)
		o->writes.v[w].whole = ver_new(o, &f, 1);
	return o->writes.v[w].whole;
}

/* Appends F (cut to [lo, hi), moved by MOVE bytes) to OUT, merging it with
 * an equal neighbour unless at CUT. */
static void frag_push(struct frag *out, size_t *n, struct frag f, unsigned lo,
		      unsigned hi, int move, int cut)
{
	if (f.a < lo)
		f.a = (uint16_t)lo;
	if (f.b > hi)
		f.b = (uint16_t)hi;
	if (f.a >= f.b)
		return;
	f.a = (uint16_t)(f.a + move);
	f.b = (uint16_t)(f.b + move);
	if (f.w == 0)
		f.shift = 0;
	if (*n && out[*n - 1].w == f.w && out[*n - 1].shift == f.shift &&
	    out[*n - 1].b == f.a && f.a != cut)
		out[*n - 1].b = f.b;
	else
		out[(*n)++] = f;
}

/*
 * Version BASE with bytes [a, b) replaced by bytes [sa, sa + b - a) of
 * version SRC, whose writes' bytes move by SHIFT more (a copy from SHIFT
 * bytes further on).  CUT: [a, b) stays a fragment of its own at a even
 * where equal bytes precede it (the piece is written apart from them and
 * may come back without them).
 */
static uint32_t ver_splice(struct oracle *o, uint32_t base, unsigned a,
			   unsigned b, uint32_t src, unsigned sa, int64_t shift,
			   bool cut)
{
	struct frag out[SECTOR];
	struct ver bv = o->vers.v[base], sv = o->vers.v[src];
	size_t n = 0;

	for (uint32_t i = 0; i < bv.n; i++)
		frag_push(out, &n, o->frags.v[bv.at + i], 0, a, 0, -1);
	for (uint32_t i = 0; i < sv.n; i++) {
		struct frag f = o->frags.v[sv.at + i];

		f.shift += shift;
		frag_push(out, &n, f, sa, sa + (b - a), (int)a - (int)sa,
			  cut ? (int)a : -1);
	}
	for (uint32_t i = 0; i < bv.n; i++)
		frag_push(out, &n, o->frags.v[bv.at + i], b, SECTOR, 0, -1);
	if (n == 1 && out[0].shift == 0)
		return ver_whole(o, out[0].w);
	return ver_new(o, out, n);
}

/* Version BASE with bytes [a, b) replaced by write W's. */
static uint32_t ver_apply(struct oracle *o, uint32_t base, unsigned a,
			  unsigned b, uint32_t w)
{
	if (a == 0 && b == SECTOR)
		return ver_whole(o, w);
	return ver_splice(o, base, a, b, ver_whole(o, w), a, 0, false);
}

/* Sector SEC of write W's bytes (tag included where W starts it). */
static void gen_sector(const struct oracle *o, uint32_t w, uint64_t sec,
		       uint8_t *out)
{
	const struct wrec *r = &o->writes.v[w];
	uint64_t k = o->seed ^ ((uint64_t)w * 0x9e3779b97f4a7c15ull);
	uint64_t q[SECTOR / 8];

	for (unsigned i = 0; i < SECTOR / 8; i++)
		q[i] = mix64(
			k ^ ((sec * (SECTOR / 8) + i) * 0xd6e8feb86659fd93ull));
	if (sec * SECTOR >= r->off) {
		struct tag t;

		memcpy(t.magic, TAG_MAGIC, 8);
		t.disk = r->disk;
		t.w = w;
		t.sec = sec;
		t.check = tag_check(o->seed, r->disk, w, sec);
		memcpy(q, &t, sizeof(t));
	}
	memcpy(out, q, SECTOR);
}

/* Write W's LEN bytes at absolute offset OFF. */
static void fill_bytes(const struct oracle *o, uint32_t w, uint64_t off,
		       size_t len, uint8_t *out)
{
	uint8_t tmp[SECTOR];
	uint64_t end = off + len;

	for (uint64_t sec = off / SECTOR; sec * SECTOR < end; sec++) {
		uint64_t s0 = sec * SECTOR;
		uint64_t a = off > s0 ? off : s0;
		uint64_t b = end < s0 + SECTOR ? end : s0 + SECTOR;

		gen_sector(o, w, sec, tmp);
		memcpy(out + (a - off), tmp + (a - s0), b - a);
	}
}

static void ver_gen(const struct oracle *o, uint32_t v, uint64_t sec,
		    uint8_t *out)
{
	struct ver vv = o->vers.v[v];

	for (uint32_t i = 0; i < vv.n; i++) {
		struct frag f = o->frags.v[vv.at + i];

		if (f.w == 0)
			memset(out + f.a, 0, f.b - f.a);
		else
			fill_bytes(o, f.w,
				   (uint64_t)((int64_t)(sec * SECTOR + f.a) +
					      f.shift),
				   f.b - f.a, out + f.a);
	}
}

static void ver_describe(const struct oracle *o, uint32_t v, char *s, size_t sl)
{
	struct ver vv = o->vers.v[v];
	size_t at = 0;

	s[0] = 0;
	for (uint32_t i = 0; i < vv.n && at < sl; i++) {
		struct frag f = o->frags.v[vv.at + i];
		char w[40];

		if (f.w && f.shift)
			snprintf(w, sizeof(w), "w%u@%+lld", f.w,
				 (long long)f.shift);
		else if (f.w)
			snprintf(w, sizeof(w), "w%u", f.w);
		else
			snprintf(w, sizeof(w), "zeros");
		if (vv.n == 1)
			at += (size_t)snprintf(s + at, sl - at, "%s", w);
		else
			at += (size_t)snprintf(s + at, sl - at, "%s%s[%u,%u)",
					       i ? "+" : "", w, f.a, f.b);
	}
}

/* ---- sectors ------------------------------------------------------------ */

static void ensure_sectors(struct odisk *d, uint64_t n)
{
	if (n <= d->nsect)
		return;
	uint64_t c = d->nsect ? d->nsect : 64;
	while (c < n)
		c *= 2;
	d->s = realloc(d->s, c * sizeof(*d->s));
	if (!d->s) {
		fprintf(stderr, "crashtest: out of memory\n");
		exit(2);
	}
	memset(d->s + d->nsect, 0, (c - d->nsect) * sizeof(*d->s));
	d->nsect = c;
}

static bool in_list(const struct oracle *o, uint32_t head, uint32_t v)
{
	for (uint32_t c = head; c; c = o->cands.v[c].next)
		if (o->cands.v[c].ver == v)
			return true;
	return false;
}

static uint32_t cand_push(struct oracle *o, uint32_t v, uint32_t next)
{
	struct cand c = {v, next};

	PUSH(o->cands, c);
	return (uint32_t)(o->cands.n - 1);
}

/* Version V joins the candidates of sector SEC of disk ID (whose current
 * version stays one). */
static void sect_cand(struct oracle *o, uint32_t id, uint64_t sec, uint32_t v)
{
	struct sect *s = &disk_of(o, id)->s[sec];

	if (s->live == v && !s->extra)
		return;
	if (!s->extra) {
		struct touch t = {id, sec};

		s->extra = cand_push(o, s->live, 0);
		PUSH(o->touched, t);
	}
	if (!in_list(o, s->extra, v))
		s->extra = cand_push(o, v, s->extra);
}

/* Sector SEC of disk ID takes version V: it joins the candidates, and the
 * old one is kept for oracle_settle. */
static void sect_set(struct oracle *o, uint32_t id, uint64_t sec, uint32_t v)
{
	struct sect *s = &disk_of(o, id)->s[sec];
	struct undo u = {id, s->live, sec};

	if (s->live == v)
		return;
	PUSH(o->undo, u);
	sect_cand(o, id, sec, v);
	disk_of(o, id)->s[sec].live = v;
}

/* Gives [off, off + len) of disk ID write W's bytes (W = 0: zeros). */
static void apply(struct oracle *o, uint32_t id, uint64_t off, uint64_t len,
		  uint32_t w)
{
	struct odisk *d = disk_of(o, id);
	uint64_t end = off + len;

	if (!len)
		return;
	ensure_sectors(d, (end + SECTOR - 1) / SECTOR);
	for (uint64_t sec = off / SECTOR; sec * SECTOR < end; sec++) {
		uint64_t s0 = sec * SECTOR;
		unsigned a = off > s0 ? (unsigned)(off - s0) : 0;
		unsigned b = end < s0 + SECTOR ? (unsigned)(end - s0) : SECTOR;
		uint32_t v = ver_apply(o, d->s[sec].live, a, b, w);

		sect_set(o, id, sec, v);
	}
}

static uint32_t write_(struct oracle *o, uint32_t disk, uint64_t off,
		       size_t len, bool more)
{
	struct wrec r = {disk, off, len, 0};
	uint32_t w;

	PUSH(o->writes, r);
	w = (uint32_t)(o->writes.n - 1);
	if (!more)
		o->undo.n = 0;
	apply(o, disk, off, len, w);
	return w;
}

uint32_t oracle_write(struct oracle *o, uint32_t disk, uint64_t off, size_t len)
{
	return write_(o, disk, off, len, false);
}

uint32_t oracle_write_more(struct oracle *o, uint32_t disk, uint64_t off,
			   size_t len)
{
	return write_(o, disk, off, len, true);
}

void oracle_fill(const struct oracle *o, uint32_t w, uint64_t off, size_t len,
		 void *buf)
{
	fill_bytes(o, w, off, len, buf);
}

void oracle_zero(struct oracle *o, uint32_t disk, uint64_t off, uint64_t len)
{
	uint64_t size = disk_of(o, disk)->size;

	o->undo.n = 0;
	/* Past the end of file every byte is zero already. */
	if (off >= size)
		return;
	if (len > size - off)
		len = size - off;
	apply(o, disk, off, len, 0);
}

void oracle_set_size(struct oracle *o, uint32_t disk, uint64_t size)
{
	struct odisk *d = disk_of(o, disk);

	if (size < d->size)
		oracle_zero(o, disk, size, d->size - size);
	d = disk_of(o, disk);
	d->size = size;
	ensure_sectors(d, (size + SECTOR - 1) / SECTOR);
	snapshot(o);
}

/* ---- copies -------------------------------------------------------------- */

/* Whether disk ID may hold disk FROM's bytes because copies brought them
 * (FROM == ID: a copy within the disk moved them). */
static bool came_from(const struct oracle *o, uint32_t id, uint32_t from)
{
	const struct odisk *d = disk_of(o, id);

	for (size_t i = 0; i < d->from.n; i++)
		if (d->from.v[i] == from)
			return true;
	return false;
}

static void add_from(struct oracle *o, uint32_t id, uint32_t from)
{
	if (!came_from(o, id, from))
		PUSH(disk_of(o, id)->from, from);
}

#define MEMO_CAP 8192

/* A copy's versions of whole source sectors, by source version (the same
 * write moved by the same shift is one version, not one per sector). */
struct memo {
	uint32_t key[MEMO_CAP], val[MEMO_CAP]; /* key: version + 1 */
	size_t n;
};

/* BASE with bytes [x, y) from bytes [sa, ..) of source version V. */
static uint32_t moved(struct oracle *o, struct memo *m, uint32_t base,
		      unsigned x, unsigned y, uint32_t v, unsigned sa,
		      int64_t shift)
{
	size_t h;

	/* Past a source sector's start (X > 0 but SA = 0) the copy may
	 * have moved the two source sectors apart. */
	if (x != 0 || y != SECTOR || sa != 0)
		return ver_splice(o, base, x, y, v, sa, shift,
				  x > 0 && sa == 0);
	for (h = (v * 2654435761u) & (MEMO_CAP - 1); m->key[h];
	     h = (h + 1) & (MEMO_CAP - 1))
		if (m->key[h] == v + 1)
			return m->val[h];
	uint32_t r = ver_splice(o, base, x, y, v, sa, shift, false);

	if (m->n < MEMO_CAP / 2) {
		m->key[h] = v + 1;
		m->val[h] = r;
		m->n++;
	}
	return r;
}

void oracle_copy(struct oracle *o, uint32_t src, uint64_t off_in, uint32_t dst,
		 uint64_t off_out, uint64_t len)
{
	const int64_t shift = (int64_t)off_in - (int64_t)off_out;
	uint64_t s0 = off_in / SECTOR, ns, end = off_out + len, old;
	struct sect *snap;
	struct memo *m;
	size_t nfrom;

	o->undo.n = 0;
	if (!len)
		return;
	/* The source as it is now (a copy within one disk changes sectors
	 * next to the ones it reads). */
	ns = (off_in + len - 1) / SECTOR - s0 + 1;
	snap = malloc(ns * sizeof(*snap));
	m = calloc(1, sizeof(*m));
	if (!snap || !m) {
		fprintf(stderr, "crashtest: out of memory\n");
		exit(2);
	}
	ensure_sectors(disk_of(o, src), s0 + ns);
	memcpy(snap, disk_of(o, src)->s + s0, ns * sizeof(*snap));
	ensure_sectors(disk_of(o, dst), (end + SECTOR - 1) / SECTOR);
	for (uint64_t t = off_out / SECTOR; t * SECTOR < end; t++) {
		uint64_t t0 = t * SECTOR;
		struct {
			unsigned x, y, sa;
			uint64_t k;
		} pc[2];
		unsigned np = 0;
		uint32_t v = disk_of(o, dst)->s[t].live;

		/* Bytes [a, b) of this sector come from one source sector
		 * or, when the shift is not a multiple of SECTOR, two. */
		for (unsigned x = off_out > t0 ? (unsigned)(off_out - t0) : 0,
			      b = end - t0 < SECTOR ? (unsigned)(end - t0)
						    : SECTOR;
		     x < b;) {
			uint64_t at = (uint64_t)((int64_t)(t0 + x) + shift);
			unsigned sa = (unsigned)(at % SECTOR);
			unsigned y =
				x + (SECTOR - sa) < b ? x + (SECTOR - sa) : b;

			pc[np].x = x;
			pc[np].y = y;
			pc[np].sa = sa;
			pc[np++].k = at / SECTOR - s0;
			x = y;
		}
		for (unsigned i = 0; i < np; i++)
			v = moved(o, m, v, pc[i].x, pc[i].y, snap[pc[i].k].live,
				  pc[i].sa, shift);
		sect_set(o, dst, t, v);
		/* Whatever else the source sector could hold. */
		for (unsigned i = 0; i < np; i++)
			for (uint32_t c = snap[pc[i].k].extra; c;
			     c = o->cands.v[c].next)
				if (o->cands.v[c].ver != snap[pc[i].k].live)
					sect_cand(o, dst, t,
						  moved(o, m, v, pc[i].x,
							pc[i].y,
							o->cands.v[c].ver,
							pc[i].sa, shift));
	}
	free(snap);
	free(m);
	add_from(o, dst, src);
	nfrom = disk_of(o, src)->from.n;
	for (size_t i = 0; i < nfrom; i++)
		add_from(o, dst, disk_of(o, src)->from.v[i]);
	old = disk_of(o, dst)->size;
	if (end > old) {
		/* Caught part way, the copy leaves any size in between. */
		disk_of(o, dst)->size = end;
		snapshot_range(o, dst, old, end);
		snapshot(o);
	}
}

static void describe_got(const struct oracle *o, uint32_t disk, uint64_t sec,
			 const uint8_t *got, size_t visible, char *s, size_t sl)
{
	struct tag t;
	size_t i;

	for (i = 0; i < visible && !got[i]; i++)
		;
	if (i == visible) {
		snprintf(s, sl, "zeros");
		return;
	}
	if (visible >= sizeof(t)) {
		memcpy(&t, got, sizeof(t));
		if (!memcmp(t.magic, TAG_MAGIC, 8) &&
		    t.check == tag_check(o->seed, t.disk, t.w, t.sec)) {
			/* Bytes of another disk, or moved, are legitimate
			 * only where copies brought them. */
			bool copied = came_from(o, disk, t.disk);

			snprintf(s, sl, "w%u of disk %u sector %llu%s%s", t.w,
				 t.disk, (unsigned long long)t.sec,
				 t.disk == disk ? ""
				 : copied	? " (copied from that disk)"
						: " (ANOTHER DISK'S DATA)",
				 t.sec != sec && !copied ? " (misplaced)" : "");
			return;
		}
	}
	snprintf(s, sl, "unrecognized bytes (first nonzero at byte %zu)", i);
}

static bool ver_matches(const struct oracle *o, uint32_t v, uint64_t sec,
			const uint8_t *got, size_t visible)
{
	uint8_t want[SECTOR];

	ver_gen(o, v, sec, want);
	return !memcmp(want, got, visible);
}

/* First byte where GOT differs from version V. */
static size_t first_diff(const struct oracle *o, uint32_t v, uint64_t sec,
			 const uint8_t *got, size_t visible)
{
	uint8_t want[SECTOR];
	size_t i;

	ver_gen(o, v, sec, want);
	for (i = 0; i < visible && want[i] == got[i]; i++)
		;
	return i;
}

int oracle_settle(struct oracle *o, uint32_t disk, uint64_t sec,
		  const uint8_t *got, size_t visible, char *why, size_t wl)
{
	const struct odisk *d = disk_of(o, disk);
	char a[96], b[96], g[160];

	for (size_t i = 0; i < o->undo.n; i++) {
		struct sect *s = &d->s[sec];
		uint32_t old = o->undo.v[i].old;

		if (o->undo.v[i].sec != sec || o->undo.v[i].disk != disk)
			continue;
		if (!visible) {
			s->live = old;
			return 0;
		}
		if (ver_matches(o, s->live, sec, got, visible))
			return 0;
		if (ver_matches(o, old, sec, got, visible)) {
			s->live = old;
			return 0;
		}
		ver_describe(o, s->live, a, sizeof(a));
		ver_describe(o, old, b, sizeof(b));
		describe_got(o, disk, sec, got, visible, g, sizeof(g));
		snprintf(why, wl,
			 "offset %llu: expected {%s, %s}, got %s (differs "
			 "from %s at byte %zu)",
			 (unsigned long long)(sec * SECTOR), a, b, g, a,
			 first_diff(o, s->live, sec, got, visible));
		return -1;
	}
	return 0; /* not a sector of the call: nothing changed there */
}

void oracle_sync(struct oracle *o)
{
	struct nstate cur = o->states.v[o->states.n - 1];

	for (size_t i = 0; i < o->touched.n; i++)
		disk_of(o, o->touched.v[i].disk)->s[o->touched.v[i].sec].extra =
			0;
	o->touched.n = 0;
	o->cands.n = 1;
	/* The current namespace becomes state 0. */
	memmove(o->ents.v, o->ents.v + cur.at, cur.n * sizeof(struct nsent));
	o->ents.n = cur.n;
	o->states.v[0] = (struct nstate){0, cur.n};
	o->states.n = 1;
}

/* ---- checking ------------------------------------------------------------ */

static void describe_state(const struct oracle *o, size_t k, char *s, size_t sl)
{
	const struct nstate *st = &o->states.v[k];
	size_t at = 0;

	at += (size_t)snprintf(s, sl, "{");
	for (size_t i = 0; i < st->n && at < sl; i++) {
		const struct nsent *e = &o->ents.v[st->at + i];

		at += (size_t)snprintf(s + at, sl - at, "%s%s=d%u:%llu",
				       i ? " " : "", e->name, e->disk,
				       (unsigned long long)e->size);
		if (e->size_max != e->size && at < sl)
			at += (size_t)snprintf(s + at, sl - at, "..%llu",
					       (unsigned long long)e->size_max);
	}
	if (at < sl)
		snprintf(s + at, sl - at, "}");
}

int oracle_check_ns(const struct oracle *o, const struct rentry *e, size_t n,
		    bool live, uint32_t *disks, char *why, size_t wl)
{
	char got[512], syn[512], last[512];
	size_t at = 0;

	for (size_t i = 0; i < n; i++) {
		disks[i] = 0;
		for (size_t d = 0; d < o->disks.n; d++)
			if (o->disks.v[d].ino == e[i].ino)
				disks[i] = (uint32_t)(d + 1);
	}
	for (size_t k = live ? o->states.n - 1 : 0; k < o->states.n; k++) {
		const struct nstate *st = &o->states.v[k];
		bool same = st->n == n;

		for (size_t i = 0; same && i < n; i++) {
			const struct nsent *x = &o->ents.v[st->at + i];
			bool wild = !disks[i] && !disk_of(o, x->disk)->ino;

			same = !strcmp(x->name, e[i].name) &&
			       (x->disk == disks[i] || wild) &&
			       e[i].size >= x->size && e[i].size <= x->size_max;
		}
		if (same) {
			for (size_t i = 0; i < n; i++)
				if (!disks[i])
					disks[i] = o->ents.v[st->at + i].disk;
			return (int)k;
		}
	}
	at += (size_t)snprintf(got, sizeof(got), "{");
	for (size_t i = 0; i < n && at < sizeof(got); i++) {
		if (disks[i])
			at += (size_t)snprintf(got + at, sizeof(got) - at,
					       "%s%s=d%u:%llu", i ? " " : "",
					       e[i].name, disks[i],
					       (unsigned long long)e[i].size);
		else
			at += (size_t)snprintf(got + at, sizeof(got) - at,
					       "%s%s=ino%llu(unknown):%llu",
					       i ? " " : "", e[i].name,
					       (unsigned long long)e[i].ino,
					       (unsigned long long)e[i].size);
	}
	if (at < sizeof(got))
		snprintf(got + at, sizeof(got) - at, "}");
	describe_state(o, 0, syn, sizeof(syn));
	describe_state(o, o->states.n - 1, last, sizeof(last));
	if (live) {
		snprintf(why, wl, "namespace (no crash): got %s, expected %s",
			 got, last);
		return -1;
	}
	snprintf(why, wl,
		 "namespace: got %s, expected the synced %s or one of %zu "
		 "later states (the last %s)",
		 got, syn, o->states.n - 1, last);
	return -1;
}

/*
 * Unsynced values mix within a sector: each piece that a write or a
 * zeroing gave the sector comes back old or new on its own (a write lands
 * in place while the truncate or punch before it reverts with the
 * metadata, or the other way round).  So the sector is cut at every
 * fragment boundary of every candidate, and each piece must equal that
 * piece of some candidate.  Returns the start of the first piece that
 * matches none (its end in *END), or -1.
 */
static long piecewise_match(const struct oracle *o, uint32_t head, uint64_t sec,
			    const uint8_t *got, size_t visible, size_t *end)
{
	bool cut[SECTOR + 1] = {false};
	uint8_t *gen;
	size_t n = 0, i = 0, s, e;
	long bad = -1;

	for (uint32_t c = head; c; c = o->cands.v[c].next)
		n++;
	gen = malloc(n * SECTOR);
	if (!gen) {
		fprintf(stderr, "crashtest: out of memory\n");
		exit(2);
	}
	for (uint32_t c = head; c; c = o->cands.v[c].next, i++) {
		struct ver v = o->vers.v[o->cands.v[c].ver];

		ver_gen(o, o->cands.v[c].ver, sec, gen + i * SECTOR);
		for (uint32_t f = 0; f < v.n; f++) {
			cut[o->frags.v[v.at + f].a] = true;
			cut[o->frags.v[v.at + f].b] = true;
		}
	}
	for (s = 0; s < visible && bad < 0; s = e) {
		bool ok = false;

		for (e = s + 1; e < visible && !cut[e]; e++)
			;
		for (i = 0; i < n && !ok; i++)
			ok = !memcmp(gen + i * SECTOR + s, got + s, e - s);
		if (!ok) {
			bad = (long)s;
			*end = e;
		}
	}
	free(gen);
	return bad;
}

int oracle_check_sector(const struct oracle *o, uint32_t disk, uint64_t sec,
			const uint8_t *got, size_t visible, bool live,
			char *why, size_t wl)
{
	const struct odisk *d = disk_of(o, disk);
	uint32_t head = 0, value = 0;
	char exp[400], g[160], one[96];
	size_t at = 0, count = 0, end = 0;
	long bad;

	if (sec < d->nsect) {
		value = d->s[sec].live;
		if (!live)
			head = d->s[sec].extra;
	}
	if (!head) {
		/* One value: the sector must be exactly it. */
		if (ver_matches(o, value, sec, got, visible))
			return 0;
		ver_describe(o, value, exp, sizeof(exp));
		describe_got(o, disk, sec, got, visible, g, sizeof(g));
		snprintf(why, wl,
			 "offset %llu: expected {%s}, got %s (first "
			 "difference at byte %zu of the sector)",
			 (unsigned long long)(sec * SECTOR), exp, g,
			 first_diff(o, value, sec, got, visible));
		return -1;
	}
	bad = piecewise_match(o, head, sec, got, visible, &end);
	if (bad < 0)
		return 0;
	exp[0] = 0;
	for (uint32_t c = head; c; c = o->cands.v[c].next) {
		if (++count > 6)
			continue;
		ver_describe(o, o->cands.v[c].ver, one, sizeof(one));
		at += (size_t)snprintf(exp + at, sizeof(exp) - at, "%s%s",
				       at ? ", " : "", one);
		if (at >= sizeof(exp))
			at = sizeof(exp) - 1;
	}
	if (count > 6)
		snprintf(exp + at, sizeof(exp) - at, ", ... %zu in all", count);
	describe_got(o, disk, sec, got, visible, g, sizeof(g));
	snprintf(why, wl,
		 "offset %llu: bytes [%ld, %zu) of the sector match none of "
		 "{%s} (newest first); got %s",
		 (unsigned long long)(sec * SECTOR), bad, end, exp, g);
	return -1;
}
