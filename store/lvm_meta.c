/* SPDX-License-Identifier: MIT */
/*
 * lvm_meta.c - LVM2's on-disk format, read from buffers: the PV label
 * (sectors 0-3: label_header + pv_header), the metadata area header
 * (mda_header + raw_locn), the text metadata of a VG (a tree of
 * `key = value` assignments and `name { ... }` sections), the map of an
 * LV's linear and striped segments onto its PVs, and the member spec.
 *
 * Written from LVM2's documented layout (lib/format_text/layout.h), not
 * from its code.  Never does I/O and never trusts a length, offset or
 * count it reads: the fuzzer (tests/fuzz/fuzz_lvm.c) feeds it anything.
 */
#include <ctype.h>
#include <endian.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lvm_meta.h"

static void why_set(char *why, size_t wl, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void why_set(char *why, size_t wl, const char *fmt, ...)
{
	va_list ap;

	if (!why || wl == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(why, wl, fmt, ap);
	va_end(ap);
}

static uint32_t get32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, 4);
	return le32toh(v);
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
	return le64toh(v);
}

/* ---- checksum ----------------------------------------------------------- */

uint32_t lvm_crc(uint32_t crc, const void *buf, size_t len)
{
	static uint32_t table[256];
	static _Atomic int ready;
	const uint8_t *p = buf;

	if (!ready) { /* idempotent: racing threads compute the same table */
		for (uint32_t i = 0; i < 256; i++) {
			uint32_t c = i;

			for (int k = 0; k < 8; k++)
				c = (c >> 1) ^ (c & 1 ? 0xedb88320u : 0);
			table[i] = c;
		}
		ready = 1;
	}
	while (len--)
		crc = (crc >> 8) ^ table[(crc ^ *p++) & 0xff];
	return crc;
}

/* ---- label and metadata area header ------------------------------------- */

#define LABEL_SIZE 512
#define LABEL_HDR 32 /* id[8] sector u64 crc u32 offset u32 type[8] */
#define PV_HDR_FIXED (LVM_UUID_LEN + 8)
#define MDA_FIXED 40 /* crc u32 magic[16] version u32 start u64 size u64 */
#define RLOCN_SIZE 24
#define RLOCN_IGNORED 0x1u

static const char mda_magic[16] = " LVM2 x[5A%r0N*>";

int lvm_label_parse(const uint8_t *buf, size_t len, struct lvm_label *out,
		    char *why, size_t wl)
{
	memset(out, 0, sizeof(*out));
	for (size_t s = 0; s < 4 && (s + 1) * LABEL_SIZE <= len; s++) {
		const uint8_t *l = buf + s * LABEL_SIZE;
		uint32_t crc, off;
		size_t p;

		if (memcmp(l, "LABELONE", 8) != 0)
			continue;
		if (get64(l + 8) != s) {
			why_set(why, wl, "label in sector %zu says sector %llu",
				s, (unsigned long long)get64(l + 8));
			return -EBADMSG;
		}
		crc = lvm_crc(LVM_CRC_INIT, l + 20, LABEL_SIZE - 20);
		if (crc != get32(l + 16)) {
			why_set(why, wl,
				"label checksum is wrong (0x%08x, computed "
				"0x%08x)",
				get32(l + 16), crc);
			return -EBADMSG;
		}
		if (memcmp(l + 24, "LVM2 001", 8) != 0) {
			why_set(why, wl, "label type is not \"LVM2 001\"");
			return -EBADMSG;
		}
		off = get32(l + 20);
		if (off < LABEL_HDR || off > LABEL_SIZE - PV_HDR_FIXED) {
			why_set(why, wl, "pv_header offset %u is out of bounds",
				off);
			return -EBADMSG;
		}
		memcpy(out->pv_uuid, l + off, LVM_UUID_LEN);
		for (int i = 0; i < LVM_UUID_LEN; i++)
			if (!isalnum((unsigned char)out->pv_uuid[i])) {
				why_set(why, wl, "PV UUID is not alphanumeric");
				return -EBADMSG;
			}
		out->dev_size = get64(l + off + LVM_UUID_LEN);
		/* Two lists of {offset, size}, each ended by {0, 0}: data
		 * areas, then metadata areas. */
		p = off + PV_HDR_FIXED;
		for (int list = 0; list < 2; list++) {
			for (;;) {
				uint64_t o, z;

				if (p + 16 > LABEL_SIZE) {
					why_set(why, wl,
						"pv_header area list runs past "
						"the label sector");
					return -EBADMSG;
				}
				o = get64(l + p);
				z = get64(l + p + 8);
				p += 16;
				if (o == 0 && z == 0)
					break;
				if (list == 0 && out->data_start == 0)
					out->data_start = o;
				if (list == 1) {
					if (out->nmdas == LVM_MAX_MDAS) {
						why_set(why, wl,
							"more than %d metadata "
							"areas",
							LVM_MAX_MDAS);
						return -EBADMSG;
					}
					out->mda_off[out->nmdas] = o;
					out->mda_size[out->nmdas++] = z;
				}
			}
		}
		return 0;
	}
	why_set(why, wl, "no LVM2 label in sectors 0-3");
	return -ENOENT;
}

int lvm_mda_header_parse(const uint8_t *buf, uint64_t start, uint64_t area_size,
			 struct lvm_rlocn *out, char *why, size_t wl)
{
	uint32_t crc = lvm_crc(LVM_CRC_INIT, buf + 4, LVM_MDA_HEADER_SIZE - 4);
	const uint8_t *r = buf + MDA_FIXED;

	memset(out, 0, sizeof(*out));
	if (crc != get32(buf)) {
		why_set(why, wl,
			"metadata area header checksum is wrong (0x%08x, "
			"computed 0x%08x)",
			get32(buf), crc);
		return -EBADMSG;
	}
	if (memcmp(buf + 4, mda_magic, 16) != 0) {
		why_set(why, wl, "metadata area header has no LVM2 magic");
		return -EBADMSG;
	}
	if (get32(buf + 20) != 1) {
		why_set(why, wl, "metadata area header version %u, not 1",
			get32(buf + 20));
		return -EBADMSG;
	}
	if (get64(buf + 24) != start || get64(buf + 32) != area_size) {
		why_set(why, wl,
			"metadata area header says start %llu size %llu, the "
			"label %llu and %llu",
			(unsigned long long)get64(buf + 24),
			(unsigned long long)get64(buf + 32),
			(unsigned long long)start,
			(unsigned long long)area_size);
		return -EBADMSG;
	}
	out->off = get64(r);
	out->size = get64(r + 8);
	out->csum = get32(r + 16);
	if (out->off == 0 && out->size == 0) {
		why_set(why, wl, "metadata area is empty");
		return -ENOENT;
	}
	if (get32(r + 20) & RLOCN_IGNORED) {
		why_set(why, wl, "metadata area is marked ignored");
		return -ENOENT;
	}
	if (area_size <= LVM_MDA_HEADER_SIZE ||
	    out->off < LVM_MDA_HEADER_SIZE || out->off >= area_size ||
	    out->size == 0 || out->size > area_size - LVM_MDA_HEADER_SIZE) {
		why_set(why, wl,
			"metadata text at offset %llu size %llu does not fit "
			"the %llu-byte area",
			(unsigned long long)out->off,
			(unsigned long long)out->size,
			(unsigned long long)area_size);
		return -EBADMSG;
	}
	return 0;
}

int lvm_mda_text(const uint8_t *area, uint64_t area_size,
		 const struct lvm_rlocn *rl, char **text, size_t *len,
		 char *why, size_t wl)
{
	uint64_t first, rest;
	uint32_t crc;
	char *t;

	*text = NULL;
	*len = 0;
	if (area_size <= LVM_MDA_HEADER_SIZE || rl->off < LVM_MDA_HEADER_SIZE ||
	    rl->off >= area_size || rl->size == 0 ||
	    rl->size > area_size - LVM_MDA_HEADER_SIZE ||
	    rl->size > SIZE_MAX - 1) {
		why_set(why, wl, "metadata text location is out of bounds");
		return -EBADMSG;
	}
	/* Text that runs past the end of the area continues right after
	 * the header (the area is a ring). */
	first = area_size - rl->off < rl->size ? area_size - rl->off : rl->size;
	rest = rl->size - first;
	if (rest > rl->off - LVM_MDA_HEADER_SIZE) {
		why_set(why, wl, "wrapped metadata text overlaps itself");
		return -EBADMSG;
	}
	crc = lvm_crc(LVM_CRC_INIT, area + rl->off, first);
	crc = lvm_crc(crc, area + LVM_MDA_HEADER_SIZE, rest);
	if (crc != rl->csum) {
		why_set(why, wl,
			"metadata text checksum is wrong (0x%08x, computed "
			"0x%08x)",
			rl->csum, crc);
		return -EBADMSG;
	}
	t = malloc(rl->size + 1);
	if (!t)
		return -ENOMEM;
	memcpy(t, area + rl->off, first);
	memcpy(t + first, area + LVM_MDA_HEADER_SIZE, rest);
	t[rl->size] = 0;
	*text = t;
	*len = strlen(t); /* the stored size counts the trailing NUL */
	return 0;
}

/* ---- the text: a tree of sections and assignments ----------------------- */

enum { V_INT, V_STR, V_OTHER };

struct cval {
	int type;
	long long i;
	char *s;
};

struct cnode {
	char *key;
	bool section;
	bool array;
	struct cval *vals;
	unsigned nvals;
	struct cnode *child, *next; /* section contents; siblings */
};

struct lexer {
	const char *p, *end;
	unsigned line;
	char *why;
	size_t wl;
	int err;
};

#define MAX_DEPTH 16
#define MAX_VALUES (1u << 20)

static void cnode_free(struct cnode *n)
{
	while (n) {
		struct cnode *next = n->next;

		for (unsigned i = 0; i < n->nvals; i++)
			free(n->vals[i].s);
		free(n->vals);
		cnode_free(n->child);
		free(n->key);
		free(n);
		n = next;
	}
}

static void skip_space(struct lexer *lx)
{
	while (lx->p < lx->end) {
		if (*lx->p == '#') {
			while (lx->p < lx->end && *lx->p != '\n')
				lx->p++;
		} else if (isspace((unsigned char)*lx->p)) {
			if (*lx->p == '\n')
				lx->line++;
			lx->p++;
		} else {
			break;
		}
	}
}

static int fail(struct lexer *lx, const char *what)
{
	if (lx->err == 0) {
		why_set(lx->why, lx->wl, "metadata text line %u: %s", lx->line,
			what);
		lx->err = -EBADMSG;
	}
	return lx->err;
}

/* The N bytes at S as a string.  Not strndup: S need not hold a NUL
 * anywhere (a metadata area is not a C string), and strndup may look for
 * one past N. */
static char *dup_bytes(const char *s, size_t n)
{
	char *d = malloc(n + 1);

	if (d) {
		memcpy(d, s, n);
		d[n] = 0;
	}
	return d;
}

static bool word_char(char c)
{
	return c && !isspace((unsigned char)c) && !strchr("{}[]=,\"#", c);
}

/* A bare word (key, section name or number) as a new string. */
static char *word(struct lexer *lx)
{
	const char *s = lx->p;

	while (lx->p < lx->end && word_char(*lx->p))
		lx->p++;
	if (lx->p == s) {
		fail(lx, "expected a name");
		return NULL;
	}
	return dup_bytes(s, (size_t)(lx->p - s));
}

/* A quoted string with \" and \\ escapes, as a new string. */
static char *quoted(struct lexer *lx)
{
	const char *s = ++lx->p;
	char *out, *o;

	while (lx->p < lx->end && *lx->p != '"') {
		if (*lx->p == '\\' && lx->p + 1 < lx->end)
			lx->p++;
		if (*lx->p == '\n')
			lx->line++;
		lx->p++;
	}
	if (lx->p >= lx->end) {
		fail(lx, "unterminated string");
		return NULL;
	}
	out = malloc((size_t)(lx->p - s) + 1);
	if (!out)
		return NULL;
	for (o = out; s < lx->p; s++) {
		if (*s == '\\' && s + 1 < lx->p)
			s++;
		*o++ = *s;
	}
	*o = 0;
	lx->p++;
	return out;
}

static int value(struct lexer *lx, struct cval *v)
{
	char *w, *e;

	skip_space(lx);
	if (lx->p >= lx->end)
		return fail(lx, "expected a value");
	if (*lx->p == '"') {
		v->type = V_STR;
		v->s = quoted(lx);
		return v->s ? 0 : (lx->err ? lx->err : -ENOMEM);
	}
	w = word(lx);
	if (!w)
		return lx->err ? lx->err : -ENOMEM;
	errno = 0;
	v->i = strtoll(w, &e, 10);
	if (*e == 0 && errno == 0 && e != w) {
		v->type = V_INT;
	} else {
		/* Floats and the like: kept, never used by us. */
		strtod(w, &e);
		if (*e != 0 || e == w) {
			free(w);
			return fail(lx, "expected a number or a string");
		}
		v->type = V_OTHER;
	}
	free(w);
	return 0;
}

static int push_value(struct lexer *lx, struct cnode *n)
{
	struct cval *nv;
	int r;

	if (n->nvals >= MAX_VALUES)
		return fail(lx, "too many values");
	nv = realloc(n->vals, (n->nvals + 1) * sizeof(*nv));
	if (!nv)
		return -ENOMEM;
	n->vals = nv;
	memset(&nv[n->nvals], 0, sizeof(*nv));
	r = value(lx, &nv[n->nvals]);
	n->nvals++; /* even on failure: its string, if any, is freed */
	return r;
}

/* The items of a section up to '}' (or the end, at depth 0). */
static int items(struct lexer *lx, struct cnode **head, int depth)
{
	struct cnode **tail = head;

	if (depth > MAX_DEPTH)
		return fail(lx, "sections nested too deeply");
	for (;;) {
		struct cnode *n;
		int r;

		skip_space(lx);
		if (lx->p >= lx->end || *lx->p == 0)
			return depth == 0 ? 0 : fail(lx, "missing '}'");
		if (*lx->p == '}') {
			if (depth == 0)
				return fail(lx, "unexpected '}'");
			lx->p++;
			return 0;
		}
		n = calloc(1, sizeof(*n));
		if (!n)
			return -ENOMEM;
		*tail = n;
		tail = &n->next;
		n->key = word(lx);
		if (!n->key)
			return lx->err ? lx->err : -ENOMEM;
		skip_space(lx);
		if (lx->p < lx->end && *lx->p == '{') {
			lx->p++;
			n->section = true;
			r = items(lx, &n->child, depth + 1);
			if (r < 0)
				return r;
			continue;
		}
		if (lx->p >= lx->end || *lx->p != '=')
			return fail(lx, "expected '=' or '{' after a name");
		lx->p++;
		skip_space(lx);
		if (lx->p < lx->end && *lx->p == '[') {
			lx->p++;
			n->array = true;
			for (;;) {
				skip_space(lx);
				if (lx->p < lx->end && *lx->p == ']') {
					lx->p++;
					break;
				}
				r = push_value(lx, n);
				if (r < 0)
					return r;
				skip_space(lx);
				if (lx->p < lx->end && *lx->p == ',')
					lx->p++;
				else if (lx->p >= lx->end || *lx->p != ']')
					return fail(lx, "expected ',' or ']'");
			}
		} else {
			r = push_value(lx, n);
			if (r < 0)
				return r;
		}
	}
}

static const struct cnode *find(const struct cnode *sec, const char *key)
{
	for (const struct cnode *n = sec ? sec->child : NULL; n; n = n->next)
		if (strcmp(n->key, key) == 0)
			return n;
	return NULL;
}

static const struct cnode *find_section(const struct cnode *sec,
					const char *key)
{
	const struct cnode *n = find(sec, key);

	return n && n->section ? n : NULL;
}

/* A non-negative integer KEY of SEC into *OUT; -EBADMSG if absent. */
static int get_u64(const struct cnode *sec, const char *key, uint64_t *out,
		   char *why, size_t wl)
{
	const struct cnode *n = find(sec, key);

	if (!n || n->section || n->array || n->nvals != 1 ||
	    n->vals[0].type != V_INT || n->vals[0].i < 0) {
		why_set(why, wl, "%s: %s is missing or not a number", sec->key,
			key);
		return -EBADMSG;
	}
	*out = (uint64_t)n->vals[0].i;
	return 0;
}

static const char *get_str(const struct cnode *sec, const char *key)
{
	const struct cnode *n = find(sec, key);

	if (!n || n->section || n->array || n->nvals != 1 ||
	    n->vals[0].type != V_STR)
		return NULL;
	return n->vals[0].s;
}

/* Whether array KEY of SEC holds the string FLAG. */
static bool has_flag(const struct cnode *sec, const char *key, const char *flag)
{
	const struct cnode *n = find(sec, key);

	for (unsigned i = 0; n && !n->section && i < n->nvals; i++)
		if (n->vals[i].type == V_STR && strcmp(n->vals[i].s, flag) == 0)
			return true;
	return false;
}

bool lvm_uuid_strip(const char *in, char out[LVM_UUID_LEN + 1])
{
	unsigned n = 0;

	for (; *in; in++) {
		if (*in == '-')
			continue;
		if (!isalnum((unsigned char)*in) || n == LVM_UUID_LEN)
			return false;
		out[n++] = *in;
	}
	out[n] = 0;
	return n == LVM_UUID_LEN;
}

static int get_uuid(const struct cnode *sec, char out[LVM_UUID_LEN + 1],
		    char *why, size_t wl)
{
	const char *s = get_str(sec, "id");

	if (!s || !lvm_uuid_strip(s, out)) {
		why_set(why, wl, "%s: id is missing or not a UUID", sec->key);
		return -EBADMSG;
	}
	return 0;
}

static unsigned count_sections(const struct cnode *sec)
{
	unsigned n = 0;

	for (const struct cnode *c = sec ? sec->child : NULL; c; c = c->next)
		n += c->section;
	return n;
}

static int parse_pvs(const struct cnode *vgs, struct lvm_vg *vg, char *why,
		     size_t wl)
{
	const struct cnode *pvs = find_section(vgs, "physical_volumes");
	unsigned n = count_sections(pvs);
	int r;

	vg->pvs = calloc(n ? n : 1, sizeof(*vg->pvs));
	if (!vg->pvs)
		return -ENOMEM;
	for (const struct cnode *c = pvs ? pvs->child : NULL; c; c = c->next) {
		struct lvm_pv *pv = &vg->pvs[vg->npvs];
		const char *dev = get_str(c, "device");

		if (!c->section)
			continue;
		vg->npvs++;
		pv->name = strdup(c->key);
		pv->device = dev ? strdup(dev) : NULL;
		if (!pv->name || (dev && !pv->device))
			return -ENOMEM;
		r = get_uuid(c, pv->uuid, why, wl);
		if (r == 0)
			r = get_u64(c, "pe_start", &pv->pe_start, why, wl);
		if (r == 0)
			r = get_u64(c, "pe_count", &pv->pe_count, why, wl);
		if (r < 0)
			return r;
		if (get_u64(c, "dev_size", &pv->dev_size, NULL, 0) < 0)
			pv->dev_size = 0;
		pv->missing = has_flag(c, "flags", "MISSING");
	}
	return 0;
}

static int pv_index(const struct lvm_vg *vg, const char *name)
{
	for (unsigned i = 0; i < vg->npvs; i++)
		if (strcmp(vg->pvs[i].name, name) == 0)
			return (int)i;
	return -1;
}

static int parse_seg(const struct cnode *c, const struct lvm_vg *vg,
		     struct lvm_seg *s, char *why, size_t wl)
{
	const char *type = get_str(c, "type"), *origin = get_str(c, "origin");
	const struct cnode *st;
	uint64_t n;
	int r;

	r = get_u64(c, "start_extent", &s->start, why, wl);
	if (r == 0)
		r = get_u64(c, "extent_count", &s->count, why, wl);
	if (r < 0)
		return r;
	if (!type) {
		why_set(why, wl, "%s: type is missing", c->key);
		return -EBADMSG;
	}
	s->type = strdup(type);
	s->origin = origin ? strdup(origin) : NULL;
	if (!s->type || (origin && !s->origin))
		return -ENOMEM;
	if (strcmp(type, "striped") != 0 && strcmp(type, "linear") != 0)
		return 0; /* kept by name only: lvm_lv_map refuses it */
	if (get_u64(c, "stripe_count", &n, NULL, 0) < 0)
		n = 1;
	if (n == 0 || n > LVM_MAX_STRIPES) {
		why_set(why, wl, "%s: stripe_count %llu is out of range",
			c->key, (unsigned long long)n);
		return -EBADMSG;
	}
	if (n > 1) {
		r = get_u64(c, "stripe_size", &s->stripe_size, why, wl);
		if (r < 0)
			return r;
	}
	st = find(c, "stripes");
	if (!st || !st->array || st->nvals != 2 * n) {
		why_set(why, wl, "%s: stripes must list %llu pairs", c->key,
			(unsigned long long)n);
		return -EBADMSG;
	}
	s->areas = calloc(n, sizeof(*s->areas));
	if (!s->areas)
		return -ENOMEM;
	s->nareas = (unsigned)n;
	for (unsigned i = 0; i < n; i++) {
		const struct cval *name = &st->vals[2 * i],
				  *start = &st->vals[2 * i + 1];

		if (name->type != V_STR || start->type != V_INT ||
		    start->i < 0) {
			why_set(why, wl,
				"%s: stripe %u is not \"name\", extent", c->key,
				i);
			return -EBADMSG;
		}
		s->areas[i].pv = pv_index(vg, name->s);
		s->areas[i].start = (uint64_t)start->i;
		if (s->areas[i].pv < 0) {
			s->areas[i].lv = strdup(name->s);
			if (!s->areas[i].lv)
				return -ENOMEM;
		}
	}
	return 0;
}

static int parse_lvs(const struct cnode *vgs, struct lvm_vg *vg, char *why,
		     size_t wl)
{
	const struct cnode *lvs = find_section(vgs, "logical_volumes");
	unsigned n = count_sections(lvs);
	int r;

	vg->lvs = calloc(n ? n : 1, sizeof(*vg->lvs));
	if (!vg->lvs)
		return -ENOMEM;
	for (const struct cnode *c = lvs ? lvs->child : NULL; c; c = c->next) {
		struct lvm_lv *lv = &vg->lvs[vg->nlvs];
		uint64_t nsegs;

		if (!c->section)
			continue;
		vg->nlvs++;
		lv->name = strdup(c->key);
		if (!lv->name)
			return -ENOMEM;
		r = get_uuid(c, lv->uuid, why, wl);
		if (r == 0)
			r = get_u64(c, "segment_count", &nsegs, why, wl);
		if (r < 0)
			return r;
		lv->visible = has_flag(c, "status", "VISIBLE");
		lv->readable = has_flag(c, "status", "READ");
		lv->writable = has_flag(c, "status", "WRITE");
		lv->locked = has_flag(c, "status", "LOCKED") ||
			     has_flag(c, "status", "PVMOVE");
		if (nsegs != count_sections(c) || nsegs == 0) {
			why_set(why, wl,
				"LV %s: segment_count %llu but %u segments",
				c->key, (unsigned long long)nsegs,
				count_sections(c));
			return -EBADMSG;
		}
		lv->segs = calloc(nsegs, sizeof(*lv->segs));
		if (!lv->segs)
			return -ENOMEM;
		for (const struct cnode *s = c->child; s; s = s->next) {
			if (!s->section)
				continue;
			r = parse_seg(s, vg, &lv->segs[lv->nsegs++], why, wl);
			if (r < 0)
				return r;
		}
	}
	return 0;
}

int lvm_vg_parse(const char *text, size_t len, struct lvm_vg **out, char *why,
		 size_t wl)
{
	struct lexer lx = {
		.p = text, .end = text, .line = 1, .why = why, .wl = wl};
	struct cnode *root = NULL, top = {.key = "metadata"};
	const struct cnode *vgs = NULL;
	struct lvm_vg *vg;
	int r;

	*out = NULL;
	while (lx.end < text + len && *lx.end)
		lx.end++;
	r = items(&lx, &root, 0);
	if (r < 0)
		goto out_free_tree;
	top.child = root;
	for (const struct cnode *c = root; c; c = c->next)
		if (c->section) {
			if (vgs) {
				why_set(why, wl, "more than one VG section");
				r = -EBADMSG;
				goto out_free_tree;
			}
			vgs = c;
		}
	if (!vgs || !get_str(&top, "contents") ||
	    strcmp(get_str(&top, "contents"), "Text Format Volume Group") !=
		    0) {
		why_set(why, wl, "not the text metadata of a volume group");
		r = -EBADMSG;
		goto out_free_tree;
	}
	vg = calloc(1, sizeof(*vg));
	if (!vg) {
		r = -ENOMEM;
		goto out_free_tree;
	}
	vg->name = strdup(vgs->key);
	if (!vg->name) {
		r = -ENOMEM;
		goto out_free_vg;
	}
	r = get_uuid(vgs, vg->uuid, why, wl);
	if (r == 0)
		r = get_u64(vgs, "seqno", &vg->seqno, why, wl);
	if (r == 0)
		r = get_u64(vgs, "extent_size", &vg->extent_size, why, wl);
	if (r < 0)
		goto out_free_vg;
	if (vg->extent_size == 0 || vg->extent_size > (1ull << 32)) {
		why_set(why, wl, "extent_size %llu is out of range",
			(unsigned long long)vg->extent_size);
		r = -EBADMSG;
		goto out_free_vg;
	}
	vg->writable = has_flag(vgs, "status", "WRITE");
	vg->exported = has_flag(vgs, "status", "EXPORTED");
	if (get_str(vgs, "lock_type") &&
	    strcmp(get_str(vgs, "lock_type"), "none") != 0) {
		vg->lock_type = strdup(get_str(vgs, "lock_type"));
		if (!vg->lock_type) {
			r = -ENOMEM;
			goto out_free_vg;
		}
	}
	r = parse_pvs(vgs, vg, why, wl);
	if (r == 0)
		r = parse_lvs(vgs, vg, why, wl);
	if (r < 0)
		goto out_free_vg;
	cnode_free(root);
	*out = vg;
	return 0;

out_free_vg:
	lvm_vg_free(vg);
out_free_tree:
	cnode_free(root);
	if (r == -ENOMEM)
		why_set(why, wl, "out of memory");
	return r;
}

void lvm_vg_free(struct lvm_vg *vg)
{
	if (!vg)
		return;
	for (unsigned i = 0; i < vg->npvs; i++) {
		free(vg->pvs[i].name);
		free(vg->pvs[i].device);
	}
	for (unsigned i = 0; i < vg->nlvs; i++) {
		struct lvm_lv *lv = &vg->lvs[i];

		for (unsigned s = 0; s < lv->nsegs; s++) {
			for (unsigned a = 0; a < lv->segs[s].nareas; a++)
				free(lv->segs[s].areas[a].lv);
			free(lv->segs[s].areas);
			free(lv->segs[s].type);
			free(lv->segs[s].origin);
		}
		free(lv->segs);
		free(lv->name);
	}
	free(vg->pvs);
	free(vg->lvs);
	free(vg->lock_type);
	free(vg->name);
	free(vg);
}

const struct lvm_lv *lvm_vg_find_lv(const struct lvm_vg *vg, const char *uuid,
				    const char *name)
{
	for (unsigned i = 0; uuid && *uuid && i < vg->nlvs; i++)
		if (strcmp(vg->lvs[i].uuid, uuid) == 0)
			return &vg->lvs[i];
	for (unsigned i = 0; name && i < vg->nlvs; i++)
		if (strcmp(vg->lvs[i].name, name) == 0)
			return &vg->lvs[i];
	return NULL;
}

/* ---- the map of an LV -----------------------------------------------------
 */

void lvm_map_free(struct lvm_map *m)
{
	if (!m)
		return;
	for (unsigned i = 0; i < m->nsegs; i++) {
		free(m->segs[i].pv);
		free(m->segs[i].pv_off);
	}
	free(m->segs);
	free(m);
}

/* The largest power of two up to 1 MiB that divides X (0: 1 MiB). */
static uint64_t pow2_of(uint64_t x)
{
	uint64_t a = 1u << 20;

	while (a > 1 && x % a)
		a >>= 1;
	return a;
}

static int map_seg(const struct lvm_vg *vg, const struct lvm_lv *lv,
		   const struct lvm_seg *s, struct lvm_map_seg *ms,
		   uint64_t ext, char *why, size_t wl)
{
	uint64_t per, per_bytes;

	if (strcmp(s->type, "striped") != 0 && strcmp(s->type, "linear") != 0) {
		why_set(why, wl,
			"LV %s has a segment of type %s, which vdpool cannot "
			"map without device-mapper (only linear and striped)",
			lv->name, s->type);
		return -EINVAL;
	}
	if (s->nareas == 0 || s->count % s->nareas) {
		why_set(why, wl,
			"LV %s: %llu extents do not divide into %u stripes",
			lv->name, (unsigned long long)s->count, s->nareas);
		return -EBADMSG;
	}
	per = s->count / s->nareas;
	per_bytes = per * ext; /* count * ext fits: checked by the caller */
	ms->nstripes = s->nareas;
	ms->chunk = ms->len;
	if (s->nareas > 1) {
		if (s->stripe_size == 0 || s->stripe_size > (1ull << 32) ||
		    per_bytes % (s->stripe_size * 512)) {
			why_set(why, wl,
				"LV %s: stripe size %llu sectors does not "
				"divide a stripe of %llu bytes",
				lv->name, (unsigned long long)s->stripe_size,
				(unsigned long long)per_bytes);
			return -EBADMSG;
		}
		ms->chunk = s->stripe_size * 512;
	}
	ms->pv = calloc(s->nareas, sizeof(*ms->pv));
	ms->pv_off = calloc(s->nareas, sizeof(*ms->pv_off));
	if (!ms->pv || !ms->pv_off)
		return -ENOMEM;
	for (unsigned i = 0; i < s->nareas; i++) {
		const struct lvm_area *a = &s->areas[i];
		const struct lvm_pv *pv;

		if (a->pv < 0) {
			why_set(why, wl,
				"LV %s has a segment on LV %s, not on a PV (a "
				"pvmove in progress?)",
				lv->name, a->lv ? a->lv : "?");
			return -EINVAL;
		}
		pv = &vg->pvs[a->pv];
		if (pv->missing) {
			why_set(why, wl, "PV %s (uuid %s) of LV %s is missing",
				pv->name, pv->uuid, lv->name);
			return -EINVAL;
		}
		/* The stripe ends inside the PV's extents, and below 2^63
		 * bytes, so no offset computed from it can wrap. */
		if (a->start > pv->pe_count || per > pv->pe_count - a->start ||
		    pv->pe_start > (1ull << 54) ||
		    a->start + per >
			    ((1ull << 63) - pv->pe_start * 512) / ext) {
			why_set(why, wl,
				"LV %s: extents %llu+%llu lie outside PV %s "
				"(%llu extents)",
				lv->name, (unsigned long long)a->start,
				(unsigned long long)per, pv->name,
				(unsigned long long)pv->pe_count);
			return -EBADMSG;
		}
		ms->pv[i] = (unsigned)a->pv;
		ms->pv_off[i] = pv->pe_start * 512 + a->start * ext;
	}
	return 0;
}

int lvm_lv_map(const struct lvm_vg *vg, const struct lvm_lv *lv,
	       struct lvm_map **out, char *why, size_t wl)
{
	uint64_t ext = vg->extent_size * 512, next = 0, align = 1u << 20;
	const struct lvm_seg **order;
	struct lvm_map *m;
	int r = 0;

	*out = NULL;
	if (!lv->visible) {
		why_set(why, wl,
			"LV %s is a hidden part of another LV, not a volume",
			lv->name);
		return -EINVAL;
	}
	if (lv->locked) {
		why_set(why, wl, "LV %s is locked by a pvmove", lv->name);
		return -EINVAL;
	}
	for (unsigned i = 0; i < vg->nlvs; i++)
		for (unsigned s = 0; s < vg->lvs[i].nsegs; s++)
			if (vg->lvs[i].segs[s].origin &&
			    strcmp(vg->lvs[i].segs[s].origin, lv->name) == 0) {
				why_set(why, wl,
					"LV %s is the origin of snapshot %s: "
					"writes from the PVs would skip its "
					"copy-on-write",
					lv->name, vg->lvs[i].name);
				return -EINVAL;
			}
	/* Segments in the order of their start (insertion sort: few). */
	order = calloc(lv->nsegs, sizeof(*order));
	m = calloc(1, sizeof(*m));
	if (m)
		m->segs = calloc(lv->nsegs, sizeof(*m->segs));
	if (!order || !m || !m->segs) {
		free(order);
		lvm_map_free(m);
		return -ENOMEM;
	}
	for (unsigned i = 0; i < lv->nsegs; i++) {
		unsigned j = i;

		while (j > 0 && order[j - 1]->start > lv->segs[i].start) {
			order[j] = order[j - 1];
			j--;
		}
		order[j] = &lv->segs[i];
	}
	for (unsigned i = 0; i < lv->nsegs && r == 0; i++) {
		const struct lvm_seg *s = order[i];
		struct lvm_map_seg *ms = &m->segs[m->nsegs++];

		if (s->start != next || s->count == 0 ||
		    s->count > (UINT64_MAX / 2 - next) / ext / 2) {
			why_set(why, wl,
				"LV %s: segment at extent %llu does not follow "
				"extent %llu",
				lv->name, (unsigned long long)s->start,
				(unsigned long long)next);
			r = -EBADMSG;
			break;
		}
		ms->start = next * ext;
		ms->len = s->count * ext;
		next += s->count;
		r = map_seg(vg, lv, s, ms, ext, why, wl);
		if (r == 0) {
			align = align < pow2_of(ms->chunk) ? align
							   : pow2_of(ms->chunk);
			for (unsigned k = 0; k < ms->nstripes; k++)
				if (pow2_of(ms->pv_off[k]) < align)
					align = pow2_of(ms->pv_off[k]);
			if (pow2_of(ms->start) < align)
				align = pow2_of(ms->start);
		}
	}
	free(order);
	if (r < 0) {
		lvm_map_free(m);
		return r;
	}
	m->size = next * ext;
	m->align = align;
	*out = m;
	return 0;
}

int lvm_map_find(const struct lvm_map *m, uint64_t off, unsigned *pv,
		 uint64_t *pv_off, uint64_t *run)
{
	unsigned lo = 0, hi = m->nsegs;
	const struct lvm_map_seg *s;
	uint64_t o, chunk, row;
	unsigned k;

	if (off >= m->size)
		return -EINVAL;
	while (hi - lo > 1) { /* the last segment starting at or before OFF */
		unsigned mid = lo + (hi - lo) / 2;

		if (m->segs[mid].start <= off)
			lo = mid;
		else
			hi = mid;
	}
	s = &m->segs[lo];
	o = off - s->start;
	if (s->nstripes == 1) {
		*pv = s->pv[0];
		*pv_off = s->pv_off[0] + o;
		*run = s->len - o;
		return 0;
	}
	chunk = o / s->chunk;
	k = (unsigned)(chunk % s->nstripes);
	row = chunk / s->nstripes;
	*pv = s->pv[k];
	*pv_off = s->pv_off[k] + row * s->chunk + o % s->chunk;
	*run = s->chunk - o % s->chunk;
	return 0;
}

/* ---- the member spec ---------------------------------------------------- */

static bool name_ok(const char *n, size_t len)
{
	if (len == 0 || len > LVM_NAME_MAX || n[0] == '-' ||
	    (len == 1 && n[0] == '.') || (len == 2 && !strncmp(n, "..", 2)))
		return false;
	for (size_t i = 0; i < len; i++)
		if (!isalnum((unsigned char)n[i]) && !strchr("+_.-", n[i]))
			return false;
	return true;
}

int lvm_dm_name(const char *vg, const char *lv, char *out, size_t size)
{
	size_t n = 0;

	for (int part = 0; part < 2; part++) {
		for (const char *c = part ? lv : vg; *c; c++) {
			if (n + 1 + (*c == '-') >= size)
				return -ENAMETOOLONG;
			if (*c == '-')
				out[n++] = '-';
			out[n++] = *c;
		}
		if (part == 0) {
			if (n + 1 >= size)
				return -ENAMETOOLONG;
			out[n++] = '-';
		}
	}
	out[n] = 0;
	return (int)n;
}

bool lvm_dm_name_split(const char *name, struct lvm_spec *s)
{
	char vg[LVM_NAME_MAX + 1], lv[LVM_NAME_MAX + 1];
	char *o = vg, *end = vg + LVM_NAME_MAX;
	bool in_lv = false;

	for (; *name; name++) {
		if (*name == '-' && name[1] == '-') {
			name++; /* a doubled '-' is one '-' of a name */
		} else if (*name == '-') {
			if (in_lv)
				return false;
			*o = 0;
			o = lv;
			end = lv + LVM_NAME_MAX;
			in_lv = true;
			continue;
		}
		if (o == end)
			return false;
		*o++ = *name;
	}
	*o = 0;
	if (!in_lv || !name_ok(vg, strlen(vg)) || !name_ok(lv, strlen(lv)))
		return false;
	memcpy(s->vg, vg, sizeof(vg));
	memcpy(s->lv, lv, sizeof(lv));
	return true;
}

void lvm_spec_clear(struct lvm_spec *s)
{
	free(s->pvs);
	memset(s, 0, sizeof(*s));
}

int lvm_spec_parse(const char *spec, struct lvm_spec *out, char *why, size_t wl)
{
	const char *p, *slash, *end;

	memset(out, 0, sizeof(*out));
	if (strncmp(spec, "lvm:", 4) != 0) {
		why_set(why, wl, "not an lvm: spec");
		return -EINVAL;
	}
	p = spec + 4;
	end = p + strcspn(p, "?");
	slash = memchr(p, '/', (size_t)(end - p));
	if (!slash || !name_ok(p, (size_t)(slash - p)) ||
	    !name_ok(slash + 1, (size_t)(end - slash - 1))) {
		why_set(why, wl,
			"expected lvm:VG/LV with names of A-Z a-z 0-9 + _ . - "
			"(not starting with '-')");
		return -EINVAL;
	}
	memcpy(out->vg, p, (size_t)(slash - p));
	memcpy(out->lv, slash + 1, (size_t)(end - slash - 1));
	p = *end ? end + 1 : end;
	while (*p) {
		size_t n = strcspn(p, "&");
		const char *v = p + strcspn(p, "=&") + 1;
		size_t vl = v <= p + n ? (size_t)(p + n - v) : 0;

		if (!strncmp(p, "uuid=", 5) && vl == 2 * LVM_UUID_LEN + 1 &&
		    v[LVM_UUID_LEN] == '/') {
			char a[2 * LVM_UUID_LEN + 2];

			memcpy(a, v, vl);
			a[LVM_UUID_LEN] = 0;
			a[vl] = 0;
			if (!lvm_uuid_strip(a, out->vg_uuid) ||
			    !lvm_uuid_strip(a + LVM_UUID_LEN + 1,
					    out->lv_uuid) ||
			    strchr(a, '-') || strchr(a + LVM_UUID_LEN + 1, '-'))
				goto bad_option;
		} else if (!strncmp(p, "pv=", 3) && vl > 0 && !out->pvs) {
			out->pvs = dup_bytes(v, vl);
			if (!out->pvs)
				return -ENOMEM;
		} else if (!strncmp(p, "dm=no", n) && n == 5) {
			out->nodm = true;
		} else {
			goto bad_option;
		}
		p += n;
		if (*p == '&')
			p++;
	}
	return 0;

bad_option:
	why_set(why, wl,
		"unknown or malformed option at '%.40s' (known: uuid=VGUUID/"
		"LVUUID, pv=DEV[,DEV...], dm=no)",
		p);
	lvm_spec_clear(out);
	return -EINVAL;
}

int lvm_spec_format(const struct lvm_spec *s, char *buf, size_t size)
{
	int n = snprintf(buf, size, "lvm:%s/%s", s->vg, s->lv);

	if (n >= 0 && s->vg_uuid[0] && s->lv_uuid[0] && (size_t)n < size)
		n += snprintf(buf + n, size - (size_t)n, "?uuid=%s/%s",
			      s->vg_uuid, s->lv_uuid);
	if (n >= 0 && s->pvs && (size_t)n < size)
		n += snprintf(buf + n, size - (size_t)n, "%cpv=%s",
			      strchr(buf, '?') ? '&' : '?', s->pvs);
	if (n >= 0 && s->nodm && (size_t)n < size)
		n += snprintf(buf + n, size - (size_t)n, "%cdm=no",
			      strchr(buf, '?') ? '&' : '?');
	if (n < 0 || (size_t)n >= size)
		return -ENAMETOOLONG;
	return n;
}
