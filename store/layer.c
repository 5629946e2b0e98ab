/* SPDX-License-Identifier: MIT */
/*
 * layer.c - the test layers' spec parser and registry: vdp_layers_set()
 * parses a spec ("powerloss:after_writes=3;fault:op=read,nth=2") into a
 * list of layer configurations, and vdp_member_open() calls layers_wrap()
 * to stack them around every member it opens.
 *
 * Never wraps a member that was opened before the spec was set, and never
 * changes anything when a spec is bad: the previous spec stays in force.
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "layer.h"
#include "layer_internal.h"

#define MAX_LAYERS 16

static pthread_mutex_t cfg_lock = PTHREAD_MUTEX_INITIALIZER;
static struct layer_cfg *cur_layers; /* under cfg_lock */
static size_t cur_n;

/* ---- parsing ------------------------------------------------------------ */

enum key {
	K_OP,
	K_NTH,
	K_P,
	K_ERR,
	K_PERSIST,
	K_DELAY,
	K_SEED,
	K_ONLY,
	K_RANGE,
	K_AFTER_WRITES,
	K_AFTER_FLUSHES,
	K_SIGNAL,
	K_MANUAL,
	K_KEEP,
	K_THEN,
};

#define F (1u << LAYER_FAULT)
#define P (1u << LAYER_POWERLOSS)

static const struct {
	const char *name;
	unsigned kinds; /* layers that take it */
	bool flag;	/* stands bare, takes no value */
} keys[] = {
	[K_OP] = {"op", F, false},
	[K_NTH] = {"nth", F, false},
	[K_P] = {"p", F, false},
	[K_ERR] = {"err", F, false},
	[K_PERSIST] = {"persist", F, true},
	[K_DELAY] = {"delay", F, false},
	[K_SEED] = {"seed", F | P, false},
	[K_ONLY] = {"only", F | P, false},
	[K_RANGE] = {"range", F, false},
	[K_AFTER_WRITES] = {"after_writes", P, false},
	[K_AFTER_FLUSHES] = {"after_flushes", P, false},
	[K_SIGNAL] = {"signal", P, false},
	[K_MANUAL] = {"manual", P, true},
	[K_KEEP] = {"keep", P, false},
	[K_THEN] = {"then", P, false},
};

#undef F
#undef P

/* Strips leading and trailing blanks in place. */
static char *trim(char *s)
{
	char *e;

	while (isspace((unsigned char)*s))
		s++;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = 0;
	return s;
}

static bool parse_u64(const char *v, uint64_t *out)
{
	unsigned long long x;
	char *end;

	if (!isdigit((unsigned char)*v))
		return false;
	errno = 0;
	x = strtoull(v, &end, 10);
	if (errno || *end)
		return false;
	*out = x;
	return true;
}

/* A byte count with an optional K, M or G (binary) suffix. */
static bool parse_size(const char *v, uint64_t *out)
{
	static const char units[] = "KMG";
	char num[32];
	size_t n = strlen(v);
	const char *u = n ? strchr(units, v[n - 1]) : NULL;
	unsigned shift = u && *u ? 10 * (unsigned)(u - units + 1) : 0;

	if (shift)
		n--;
	if (n == 0 || n >= sizeof(num))
		return false;
	memcpy(num, v, n);
	num[n] = 0;
	if (!parse_u64(num, out) || *out > UINT64_MAX >> shift)
		return false;
	*out <<= shift;
	return true;
}

/* range=START-[END]: END omitted = to the end of the member. */
static bool parse_range(const char *v, uint64_t *from, uint64_t *to)
{
	char buf[64], *dash;

	if (strlen(v) >= sizeof(buf))
		return false;
	strcpy(buf, v);
	dash = strchr(buf, '-');
	if (!dash)
		return false;
	*dash = 0;
	if (!parse_size(buf, from))
		return false;
	if (!dash[1]) {
		*to = UINT64_MAX;
		return true;
	}
	return parse_size(dash + 1, to) && *to > *from;
}

/* Index of V in NAMES (NULL-terminated), or -1. */
static int lookup(const char *const *names, const char *v)
{
	for (int i = 0; names[i]; i++)
		if (strcmp(names[i], v) == 0)
			return i;
	return -1;
}

static int parse_ops(const char *v, unsigned *ops)
{
	static const char *const names[] = {"read",    "write", "flush", "zero",
					    "discard", "all",	NULL};
	char buf[128], *save = NULL, *t;

	if (strlen(v) >= sizeof(buf))
		return -1;
	strcpy(buf, v);
	*ops = 0;
	for (t = strtok_r(buf, "+", &save); t; t = strtok_r(NULL, "+", &save)) {
		int i = lookup(names, t);

		if (i < 0)
			return -1;
		*ops |= i == 5 ? FAULT_ALL : 1u << i;
	}
	return *ops ? 0 : -1;
}

/* Applies KEY=V to C; a sentence in ERR on failure. */
static int set_key(struct layer_cfg *c, enum key k, const char *v, char *err,
		   size_t el)
{
	static const char *const errs[] = {"EIO", "ENOSPC", "ETIMEDOUT", NULL};
	static const int errnos[] = {EIO, ENOSPC, ETIMEDOUT};
	static const char *const keeps[] = {"none",   "all",  "prefix",
					    "random", "torn", NULL};
	static const char *const thens[] = {"freeze", "exit", NULL};
	static const char *const sigs[] = {"USR1", "USR2", "SIGUSR1", "SIGUSR2",
					   NULL};
	const char *want = NULL;
	uint64_t n = 0;
	char *end;
	int i;

	switch (k) {
	case K_OP:
		if (parse_ops(v, &c->fault.ops) < 0)
			want = "read, write, flush, zero, discard or all, "
			       "joined by '+'";
		break;
	case K_NTH:
	case K_AFTER_WRITES:
	case K_AFTER_FLUSHES:
		if (!parse_u64(v, &n) || n == 0)
			want = "a whole number >= 1";
		else if (k == K_NTH)
			c->fault.nth = n;
		else if (k == K_AFTER_WRITES)
			c->pl.after_writes = n;
		else
			c->pl.after_flushes = n;
		break;
	case K_P:
		errno = 0;
		c->fault.p = strtod(v, &end);
		if (errno || end == v || *end || !isfinite(c->fault.p) ||
		    c->fault.p < 0 || c->fault.p > 1)
			want = "a probability from 0 to 1";
		break;
	case K_ERR:
		i = lookup(errs, v);
		if (i < 0)
			want = "EIO, ENOSPC or ETIMEDOUT";
		else
			c->fault.err = errnos[i];
		break;
	case K_DELAY:
		if (!parse_u64(v, &n) || n == 0 || n > 600000)
			want = "milliseconds from 1 to 600000";
		else
			c->fault.delay_ms = (unsigned)n;
		break;
	case K_SEED:
		if (!parse_u64(v, &n))
			want = "a whole number";
		else if (c->kind == LAYER_FAULT)
			c->fault.seed = n;
		else
			c->pl.seed = n;
		break;
	case K_ONLY:
		if (!*v) {
			want = "a non-empty string";
			break;
		}
		c->only = strdup(v);
		if (!c->only)
			return -ENOMEM;
		break;
	case K_RANGE:
		if (!parse_range(v, &c->fault.from, &c->fault.to))
			want = "START-END or START- in bytes, K, M or G";
		break;
	case K_SIGNAL:
		i = lookup(sigs, v);
		if (i < 0)
			want = "USR1 or USR2";
		else
			c->pl.signo = i % 2 ? SIGUSR2 : SIGUSR1;
		break;
	case K_KEEP:
		i = lookup(keeps, v);
		if (i < 0)
			want = "none, all, prefix, random or torn";
		else
			c->pl.keep = (enum pl_keep)i;
		break;
	case K_THEN:
		i = lookup(thens, v);
		if (i < 0)
			want = "freeze or exit";
		else
			c->pl.exit = i == 1;
		break;
	case K_PERSIST:
		c->fault.persist = true;
		break;
	case K_MANUAL:
		c->pl.manual = true;
		break;
	}
	if (want) {
		snprintf(err, el, "bad value '%s' for %s (%s)", v, keys[k].name,
			 want);
		return -EINVAL;
	}
	return 0;
}

/* Parses one LAYER (S is modified) into C; a sentence in ERR on failure. */
static int parse_layer(char *s, struct layer_cfg *c, char *err, size_t el)
{
	char *colon = strchr(s, ':'), *kind, *item, why[200] = "";
	unsigned seen = 0;
	int r;

	if (colon)
		*colon = 0;
	kind = trim(s);
	memset(c, 0, sizeof(*c));
	if (strcmp(kind, "fault") == 0) {
		c->kind = LAYER_FAULT;
		c->fault.ops = FAULT_ALL;
		c->fault.p = -1;
		c->fault.err = EIO;
		c->fault.seed = 1;
	} else if (strcmp(kind, "powerloss") == 0) {
		c->kind = LAYER_POWERLOSS;
		c->pl.keep = KEEP_RANDOM;
		c->pl.seed = 1;
	} else {
		snprintf(err, el, "unknown layer '%s' (fault or powerloss)",
			 kind);
		return -EINVAL;
	}
	for (item = colon ? colon + 1 : NULL; item;) {
		char *comma = strchr(item, ','), *eq, *key, *val = NULL;
		enum key k;

		if (comma)
			*comma = 0;
		eq = strchr(item, '=');
		if (eq) {
			*eq = 0;
			val = trim(eq + 1);
		}
		key = trim(item);
		item = comma ? comma + 1 : NULL;
		if (!*key) {
			snprintf(err, el, "%s: empty key", kind);
			return -EINVAL;
		}
		for (k = 0; k < sizeof(keys) / sizeof(keys[0]); k++)
			if (strcmp(keys[k].name, key) == 0 &&
			    (keys[k].kinds & (1u << c->kind)))
				break;
		if (k == sizeof(keys) / sizeof(keys[0])) {
			snprintf(err, el, "%s: unknown key '%s'", kind, key);
			return -EINVAL;
		}
		if (seen & (1u << k)) {
			snprintf(err, el, "%s: key '%s' given twice", kind,
				 key);
			return -EINVAL;
		}
		seen |= 1u << k;
		if (keys[k].flag && val) {
			snprintf(err, el, "%s: key '%s' takes no value", kind,
				 key);
			return -EINVAL;
		}
		if (!keys[k].flag && !val) {
			snprintf(err, el, "%s: key '%s' needs a value (%s=...)",
				 kind, key, key);
			return -EINVAL;
		}
		r = set_key(c, k, val, why, sizeof(why));
		if (r < 0) {
			snprintf(err, el, "%s: %s", kind, why);
			return r;
		}
	}
	if (c->kind == LAYER_FAULT) {
		bool nth = seen & (1u << K_NTH), p = seen & (1u << K_P);

		if (nth == p) {
			snprintf(err, el, "fault: give nth=N or p=FLOAT%s",
				 nth ? ", not both" : "");
			return -EINVAL;
		}
	} else if (!c->pl.after_writes && !c->pl.after_flushes &&
		   !c->pl.signo && !c->pl.manual) {
		snprintf(err, el,
			 "powerloss: needs a trigger (after_writes=N, "
			 "after_flushes=N, signal=USR1|USR2 or manual)");
		return -EINVAL;
	}
	return 0;
}

static void layers_free(struct layer_cfg *l, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(l[i].only);
	free(l);
}

/* Parses SPEC into a new array *OUT of *N layers.  -EINVAL with the
 * reason in vdp_last_error() on a bad spec. */
static int parse_spec(const char *spec, struct layer_cfg **out, size_t *n)
{
	struct layer_cfg *l = NULL;
	char err[320] = "", *copy, *s, *semi;
	bool have_pl = false;
	size_t k = 0;
	int r = 0;

	*out = NULL;
	*n = 0;
	if (!spec)
		return 0;
	copy = strdup(spec);
	l = calloc(MAX_LAYERS, sizeof(*l));
	if (!copy || !l) {
		r = -ENOMEM;
		goto out;
	}
	if (!*trim(copy))
		goto out; /* blank: no layers */
	for (s = copy; s; s = semi ? semi + 1 : NULL) {
		semi = strchr(s, ';');
		if (semi)
			*semi = 0;
		if (!*trim(s)) {
			snprintf(err, sizeof(err), "empty layer in '%s'", spec);
			r = -EINVAL;
			break;
		}
		if (k == MAX_LAYERS) {
			snprintf(err, sizeof(err), "more than %d layers",
				 MAX_LAYERS);
			r = -EINVAL;
			break;
		}
		r = parse_layer(s, &l[k], err, sizeof(err));
		k++; /* its ONLY string is ours to free, even on failure */
		if (r < 0)
			break;
		if (l[k - 1].kind == LAYER_POWERLOSS) {
			if (have_pl) {
				snprintf(err, sizeof(err),
					 "powerloss: given twice (the power-"
					 "loss domain is one per process)");
				r = -EINVAL;
				break;
			}
			have_pl = true;
		}
	}
out:
	free(copy);
	if (r == -EINVAL)
		vdp_set_error("test layers: %s", err);
	else if (r < 0)
		vdp_set_error("test layers: %s", strerror(-r));
	if (r < 0 || k == 0) {
		layers_free(l, k);
		return r;
	}
	*out = l;
	*n = k;
	return 0;
}

/* ---- the registry ------------------------------------------------------- */

int vdp_layers_set(const char *spec)
{
	struct layer_cfg *l, *old;
	const struct powerloss_cfg *pl = NULL;
	size_t n, old_n;
	int r;

	vdp_clear_error();
	r = parse_spec(spec, &l, &n);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n; i++)
		if (l[i].kind == LAYER_POWERLOSS)
			pl = &l[i].pl;
	r = powerloss_configure(pl);
	if (r < 0) {
		layers_free(l, n);
		return r;
	}
	pthread_mutex_lock(&cfg_lock);
	old = cur_layers;
	old_n = cur_n;
	cur_layers = l;
	cur_n = n;
	pthread_mutex_unlock(&cfg_lock);
	layers_free(old, old_n);
	return 0;
}

int layers_wrap(struct vdp_member **m)
{
	int r = 0;

	pthread_mutex_lock(&cfg_lock);
	for (size_t i = 0; i < cur_n && r == 0; i++) {
		struct layer_cfg *c = &cur_layers[i];
		struct vdp_member *w;

		if (c->only && !strstr((*m)->path, c->only))
			continue;
		if (c->kind == LAYER_FAULT) {
			struct fault_cfg fc = c->fault;

			fc.index = c->nwrapped;
			r = fault_wrap(&fc, *m, &w);
		} else {
			r = powerloss_wrap(*m, &w);
		}
		if (r == 0) {
			c->nwrapped++;
			*m = w;
		}
	}
	pthread_mutex_unlock(&cfg_lock);
	if (r < 0) {
		vdp_set_error("member %s: cannot add test layers: %s",
			      (*m)->path, strerror(-r));
		vdp_member_close(*m);
		*m = NULL;
	}
	return r;
}

int layer_submit(struct vdp_member *m, struct vdp_mio *io)
{
	(void)m;
	return aio_defer(io);
}
