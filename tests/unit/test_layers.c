/* SPDX-License-Identifier: MIT */
/*
 * test_layers.c - the test layers (store/layer.h) on real temporary files
 * opened through vdp_member_open(): spec errors; fault injection per
 * operation, errno, nth/p, transient/persist and only=; power loss: reads
 * overlaid with unflushed writes, flushes, the exact image each keep mode
 * may leave on two members at once, exact trigger points, freeze, then=exit
 * and the signal trigger in forked children, many threads at once; and a
 * whole pool crashed at every write of a small workload, reopened without
 * layers, checked clean and holding a committed state.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "layer.h"
#include "member.h"
#include "vdpool.h"

#define MSIZE (1u << 20) /* member files */
#define S 4096u		 /* a sector */

static char dir[64], fa[96], fb[96];
static uint8_t *img[2], *want[2]; /* MSIZE each */

static void *abuf(size_t n)
{
	void *p;

	if (posix_memalign(&p, 4096, n) != 0)
		abort();
	memset(p, 0, n);
	return p;
}

/* Creates PATH holding MSIZE bytes of FILL. */
static void make_file(const char *path, uint8_t fill)
{
	uint8_t *b = abuf(MSIZE);
	int fd = open(path, O_CREAT | O_TRUNC | O_RDWR, 0600);

	memset(b, fill, MSIZE);
	if (fd < 0 || pwrite(fd, b, MSIZE, 0) != MSIZE || close(fd) < 0) {
		perror(path);
		exit(1);
	}
	free(b);
}

/* The file's bytes as they are on disk, not through any layer. */
static void read_file(const char *path, uint8_t *buf)
{
	int fd = open(path, O_RDONLY);

	if (fd < 0 || pread(fd, buf, MSIZE, 0) != MSIZE) {
		perror(path);
		exit(1);
	}
	close(fd);
}

static struct vdp_member *mopen(const char *path)
{
	struct vdp_member *m = NULL;
	int r = vdp_member_open(path, false, &m);

	if (r < 0) {
		fprintf(stderr, "open %s: %s (%s)\n", path, strerror(-r),
			vdp_last_error());
		exit(1);
	}
	return m;
}

static int set(const char *spec)
{
	int r = vdp_layers_set(spec);

	if (r < 0)
		fprintf(stderr, "vdp_layers_set(%s): %s\n",
			spec ? spec : "NULL", vdp_last_error());
	return r;
}

/* ---- spec errors ----------------------------------------------------------
 */

static void test_spec(void)
{
	static const struct {
		const char *spec, *error;
	} bad[] = {
		{"powerloss:foo=1,after_writes=1",
		 "test layers: powerloss: unknown key 'foo'"},
		{"bogus", "test layers: unknown layer 'bogus' (fault or "
			  "powerloss)"},
		{"fault:op=read", "test layers: fault: give nth=N or p=FLOAT"},
		{"fault:nth=2,p=0.5",
		 "test layers: fault: give nth=N or p=FLOAT, not both"},
		{"fault:nth=0", "test layers: fault: bad value '0' for nth"},
		{"fault:nth=-1", "test layers: fault: bad value '-1' for nth"},
		{"fault:p=1.5", "test layers: fault: bad value '1.5' for p"},
		{"fault:p=x", "test layers: fault: bad value 'x' for p"},
		{"fault:nth=1,err=EFOO",
		 "test layers: fault: bad value 'EFOO' for err"},
		{"fault:nth=1,op=read+bogus",
		 "test layers: fault: bad value 'read+bogus' for op"},
		{"fault:nth=1,nth=2",
		 "test layers: fault: key 'nth' given twice"},
		{"fault:nth=1,persist=1",
		 "test layers: fault: key 'persist' takes no value"},
		{"fault:nth", "test layers: fault: key 'nth' needs a value"},
		{"fault:nth=1,keep=all",
		 "test layers: fault: unknown key 'keep'"},
		{"fault:nth=1,,op=read", "test layers: fault: empty key"},
		{"powerloss", "test layers: powerloss: needs a trigger"},
		{"powerloss:keep=all",
		 "test layers: powerloss: needs a trigger"},
		{"powerloss:after_writes=x",
		 "test layers: powerloss: bad value 'x' for after_writes"},
		{"powerloss:after_flushes=99999999999999999999",
		 "test layers: powerloss: bad value"},
		{"powerloss:manual,keep=half",
		 "test layers: powerloss: bad value 'half' for keep"},
		{"powerloss:manual,then=reboot",
		 "test layers: powerloss: bad value 'reboot' for then"},
		{"powerloss:signal=HUP",
		 "test layers: powerloss: bad value 'HUP' for signal"},
		{"powerloss:manual,nth=3",
		 "test layers: powerloss: unknown key "
		 "'nth'"},
		{"powerloss:manual;powerloss:after_writes=3",
		 "test layers: powerloss: given twice"},
		{"fault:nth=1;;powerloss:manual", "test layers: empty layer"},
		{"fault:nth=1;", "test layers: empty layer"},
		{"fault:nth=1,only=", "test layers: fault: bad value '' for "
				      "only"},
		{"fault:nth=1,range=8K", "test layers: fault: bad value '8K' "
					 "for range"},
		{"fault:nth=1,range=8K-4K", "test layers: fault: bad value"},
		{"fault:nth=1,range=1X-", "test layers: fault: bad value"},
		{"powerloss:manual,range=0-",
		 "test layers: powerloss: unknown key 'range'"},
	};
	static const char *const good[] = {
		"",
		"  ",
		"fault:nth=3",
		"fault:op=write+flush,p=0.25,err=ETIMEDOUT,persist,seed=9",
		"powerloss:after_writes=300,keep=torn,seed=5;fault:op=read,"
		"p=0.01,err=EIO",
		" powerloss : after_flushes = 2 , keep = prefix , then = exit ",
		"powerloss:signal=USR2,keep=none;fault:op=all,nth=1,only=x",
		"powerloss:manual,only=m0",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int r = vdp_layers_set(bad[i].spec);
		const char *e = vdp_last_error();

		CHECK_EQ(r, -EINVAL);
		if (strncmp(e, bad[i].error, strlen(bad[i].error)) != 0) {
			fprintf(stderr,
				"spec '%s': error '%s', expected '%s'\n",
				bad[i].spec, e, bad[i].error);
			CHECK(0);
		}
	}
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		CHECK_EQ(set(good[i]), 0);
	CHECK_EQ(set(NULL), 0);

	/* A bad spec changes nothing: the good one before stays. */
	CHECK_EQ(set("fault:op=read,nth=1"), 0);
	CHECK_EQ(vdp_layers_set("fault:bad"), -EINVAL);
	make_file(fa, 0x11);
	{
		struct vdp_member *m = mopen(fa);
		uint8_t *b = abuf(S);

		CHECK(strcmp(m->ops->kind, "fault") == 0);
		CHECK_EQ(m->ops->pread(m, b, S, 0), -EIO);
		vdp_member_close(m);
		free(b);
	}
	CHECK_EQ(set(NULL), 0);
	{
		struct vdp_member *m = mopen(fa);

		CHECK(strcmp(m->ops->kind, "file") == 0);
		vdp_member_close(m);
	}
}

/* ---- fault ----------------------------------------------------------------
 */

enum { OP_READ, OP_WRITE, OP_FLUSH, OP_ZERO, OP_DISCARD, NOPS };
static const char *const op_names[] = {"read", "write", "flush", "zero",
				       "discard"};

/* Round J of operation K: writes touch a sector of their own per round. */
static int do_op(struct vdp_member *m, int k, int j, uint8_t *b)
{
	switch (k) {
	case OP_READ:
		return m->ops->pread(m, b, S, 0);
	case OP_WRITE:
		memset(b, 0x40 + j, S);
		return m->ops->pwrite(m, b, S, (uint64_t)j * S);
	case OP_FLUSH:
		return m->ops->flush(m);
	case OP_ZERO:
		return m->ops->write_zeroes(m, (uint64_t)(16 + j) * S, S);
	default:
		return m->ops->discard(m, (uint64_t)(32 + j) * S, S);
	}
}

/* The nth=3 failure of each op kind, transient and persistent, with its
 * errno; no other kind fails; a failed change never reaches the file. */
static void test_fault_nth(void)
{
	uint8_t *b = abuf(S);
	char spec[96];

	for (int k = 0; k < NOPS; k++) {
		for (int persist = 0; persist < 2; persist++) {
			struct vdp_member *m;

			snprintf(spec, sizeof(spec),
				 "fault:op=%s,nth=3,err=ENOSPC%s", op_names[k],
				 persist ? ",persist" : "");
			CHECK_EQ(set(spec), 0);
			make_file(fa, 0x11);
			m = mopen(fa);
			for (int j = 1; j <= 5; j++)
				for (int o = 0; o < NOPS; o++) {
					bool fail =
						o == k &&
						(j == 3 || (persist && j > 3));

					CHECK_EQ(do_op(m, o, j, b),
						 fail ? -ENOSPC : 0);
				}
			vdp_member_close(m);
			read_file(fa, img[0]);
			for (int j = 1; j <= 5; j++) {
				bool fail = j == 3 || (persist && j > 3);
				uint8_t w =
					k == OP_WRITE && fail ? 0x11 : 0x40 + j;
				uint8_t z = (k == OP_ZERO || k == OP_DISCARD) &&
							    fail
						    ? 0x11
						    : 0;

				CHECK_EQ(img[0][(size_t)j * S], w);
				CHECK_EQ(img[0][(size_t)(16 + j) * S],
					 k == OP_ZERO ? z : 0);
				CHECK_EQ(img[0][(size_t)(32 + j) * S],
					 k == OP_DISCARD ? z : 0);
			}
		}
	}

	/* Default errno and op=all: the 4th operation of any kind fails. */
	CHECK_EQ(set("fault:nth=4"), 0);
	{
		struct vdp_member *m = mopen(fa);

		for (int o = 0; o < NOPS; o++)
			CHECK_EQ(do_op(m, o, 1, b), o == 3 ? -EIO : 0);
		vdp_member_close(m);
	}
	/* Two kinds joined by '+', counted together. */
	CHECK_EQ(set("fault:op=write+flush,nth=2,err=ETIMEDOUT"), 0);
	{
		struct vdp_member *m = mopen(fa);

		CHECK_EQ(do_op(m, OP_READ, 1, b), 0);
		CHECK_EQ(do_op(m, OP_WRITE, 1, b), 0);
		CHECK_EQ(do_op(m, OP_READ, 1, b), 0);
		CHECK_EQ(do_op(m, OP_FLUSH, 1, b), -ETIMEDOUT);
		CHECK_EQ(do_op(m, OP_WRITE, 2, b), 0);
		vdp_member_close(m);
	}
	/* Each member counts its own operations. */
	CHECK_EQ(set("fault:op=read,nth=2"), 0);
	make_file(fb, 0x22);
	{
		struct vdp_member *m = mopen(fa), *n = mopen(fb);

		CHECK_EQ(do_op(m, OP_READ, 1, b), 0);
		CHECK_EQ(do_op(n, OP_READ, 1, b), 0);
		CHECK_EQ(do_op(m, OP_READ, 1, b), -EIO);
		CHECK_EQ(do_op(n, OP_READ, 1, b), -EIO);
		vdp_member_close(m);
		vdp_member_close(n);
	}
	free(b);
}

/* Which of 1000 reads fail under SPEC, as a bitmap; returns the count. */
static int fault_pattern(const char *spec, uint8_t pattern[1000])
{
	uint8_t *b = abuf(S);
	struct vdp_member *m;
	int n = 0;

	CHECK_EQ(set(spec), 0);
	m = mopen(fa);
	for (int i = 0; i < 1000; i++) {
		int r = m->ops->pread(m, b, S, 0);

		CHECK(r == 0 || r == -EIO);
		pattern[i] = r < 0;
		n += r < 0;
	}
	vdp_member_close(m);
	free(b);
	return n;
}

static void test_fault_p(void)
{
	uint8_t p1[1000], p2[1000], p3[1000];
	int n, first = -1;

	n = fault_pattern("fault:op=read,p=0.5,seed=7", p1);
	CHECK(n > 350 && n < 650);
	CHECK_EQ(fault_pattern("fault:op=read,p=0.5,seed=7", p2), n);
	CHECK(memcmp(p1, p2, sizeof(p1)) == 0); /* deterministic per seed */
	fault_pattern("fault:op=read,p=0.5,seed=8", p3);
	CHECK(memcmp(p1, p3, sizeof(p1)) != 0);
	CHECK_EQ(fault_pattern("fault:op=read,p=1", p1), 1000);
	CHECK_EQ(fault_pattern("fault:op=read,p=0", p1), 0);
	CHECK_EQ(fault_pattern("fault:op=write,p=1", p1), 0);

	/* persist: from the first failure on, every read fails. */
	n = fault_pattern("fault:op=read,p=0.02,persist,seed=3", p1);
	for (int i = 0; i < 1000 && first < 0; i++)
		if (p1[i])
			first = i;
	CHECK(first >= 0);
	CHECK_EQ(n, 1000 - first);
}

static void test_fault_only_and_stack(void)
{
	char a[128], b[128];
	uint8_t *buf = abuf(S);
	struct vdp_member *ma, *mb;

	snprintf(a, sizeof(a), "%s/a.img", dir);
	snprintf(b, sizeof(b), "%s/b.img", dir);
	make_file(a, 0x11);
	make_file(b, 0x22);
	CHECK_EQ(set("fault:op=read,nth=1,only=b.img"), 0);
	ma = mopen(a);
	mb = mopen(b);
	CHECK(strcmp(ma->ops->kind, "file") == 0);
	CHECK(strcmp(mb->ops->kind, "fault") == 0);
	CHECK_EQ(ma->ops->pread(ma, buf, S, 0), 0);
	CHECK_EQ(mb->ops->pread(mb, buf, S, 0), -EIO);
	CHECK_EQ(mb->ops->pread(mb, buf, S, 0), 0);
	/* The wrapper shows the inner member's path, size and alignment. */
	CHECK(strcmp(mb->path, b) == 0);
	CHECK_EQ(mb->size, MSIZE);
	CHECK_EQ(mb->align, ma->align);
	vdp_member_close(ma);
	vdp_member_close(mb);

	/* range=: only I/O touching [8K, 12K) fails; flushes are not
	 * limited by it. */
	CHECK_EQ(set("fault:op=read+write+flush,p=1,range=8K-12K"), 0);
	ma = mopen(a);
	CHECK_EQ(ma->ops->pread(ma, buf, S, 0), 0);
	CHECK_EQ(ma->ops->pread(ma, buf, S, 4096), 0);
	CHECK_EQ(ma->ops->pread(ma, buf, S, 8192), -EIO);
	CHECK_EQ(ma->ops->pread(ma, buf, 2 * S, 4096), -EIO);
	CHECK_EQ(ma->ops->pwrite(ma, buf, S, 8192), -EIO);
	CHECK_EQ(ma->ops->pwrite(ma, buf, S, 12288), 0);
	CHECK_EQ(ma->ops->flush(ma), -EIO);
	vdp_member_close(ma);
	CHECK_EQ(set("fault:op=read,p=1,range=1M-"), 0);
	ma = mopen(a);
	CHECK_EQ(ma->ops->pread(ma, buf, S, MSIZE - S), 0);
	vdp_member_close(ma);

	/* Two fault layers stacked: each fails its own kind. */
	CHECK_EQ(set("fault:op=write,nth=1;fault:op=read,nth=1,err=ETIMEDOUT"),
		 0);
	ma = mopen(a);
	CHECK_EQ(ma->ops->pwrite(ma, buf, S, 0), -EIO);
	CHECK_EQ(ma->ops->pread(ma, buf, S, 0), -ETIMEDOUT);
	CHECK_EQ(ma->ops->pwrite(ma, buf, S, 0), 0);
	CHECK_EQ(ma->ops->pread(ma, buf, S, 0), 0);
	vdp_member_close(ma);
	unlink(a);
	unlink(b);
	free(buf);
}

/* ---- power loss: a model of two members -----------------------------------
 */

struct w {
	int mi;	  /* 0: fa, 1: fb */
	int kind; /* OP_WRITE, OP_ZERO or OP_DISCARD */
	uint64_t off, len;
	uint8_t val; /* OP_WRITE: the byte of sector s is val + s */
};

static void model_apply(uint8_t *const m[2], const struct w *w, uint64_t from,
			uint64_t to)
{
	for (uint64_t o = from; o < to; o++)
		m[w->mi][o] = w->kind == OP_WRITE
				      ? (uint8_t)(w->val + (o - w->off) / S)
				      : 0;
}

static int member_apply(struct vdp_member *m[2], const struct w *w)
{
	struct vdp_member *x = m[w->mi];
	uint8_t *b;
	int r;

	if (w->kind == OP_ZERO)
		return x->ops->write_zeroes(x, w->off, w->len);
	if (w->kind == OP_DISCARD)
		return x->ops->discard(x, w->off, w->len);
	b = abuf(w->len);
	for (uint64_t s = 0; s < w->len / S; s++)
		memset(b + s * S, (uint8_t)(w->val + s), S);
	r = x->ops->pwrite(x, b, w->len, w->off);
	free(b);
	return r;
}

static void images_read(void)
{
	read_file(fa, img[0]);
	read_file(fb, img[1]);
}

static bool images_are(uint8_t *const m[2])
{
	return memcmp(img[0], m[0], MSIZE) == 0 &&
	       memcmp(img[1], m[1], MSIZE) == 0;
}

/* Reads both members through the layers and compares with the model. */
static void check_reads(struct vdp_member *m[2], uint8_t *const model[2])
{
	uint8_t *b = abuf(MSIZE);

	for (int i = 0; i < 2; i++) {
		CHECK_EQ(m[i]->ops->pread(m[i], b, MSIZE, 0), 0);
		CHECK(memcmp(b, model[i], MSIZE) == 0);
		/* and a piece in the middle of the written area */
		CHECK_EQ(m[i]->ops->pread(m[i], b, 3 * S, 5 * S), 0);
		CHECK(memcmp(b, model[i] + 5 * S, 3 * S) == 0);
	}
	free(b);
}

/* Writes generated from SEED: OVERLAP lets them overlap each other, else
 * write i owns sectors [8i, 8i + 8).  Every fourth zeroes or discards. */
static size_t gen_writes(struct w *ws, size_t n, uint64_t seed, bool overlap)
{
	uint64_t x = seed * 2654435761u + 1;

	for (size_t i = 0; i < n; i++) {
		x = x * 6364136223846793005ull + 1442695040888963407ull;
		ws[i].mi = (int)(i % 2);
		ws[i].kind = i % 4 == 3 ? (i % 8 == 3 ? OP_ZERO : OP_DISCARD)
					: OP_WRITE;
		ws[i].len = (1 + (x >> 40) % 4) * S;
		ws[i].off = overlap ? ((x >> 20) % 24) * S
				    : (64 + 8 * (uint64_t)i) * S;
		ws[i].val = (uint8_t)(0x30 + 5 * i);
	}
	return n;
}

#define NW 24

/*
 * One crash with KEEP and SEED over two members: a few flushed writes,
 * then NW unflushed ones across both, then vdp_powerloss_now().  Leaves
 * the images in img[] and the flushed state in base[].
 */
static void crash_run(const char *keep, uint64_t seed, bool overlap,
		      struct w *ws, uint8_t *base[2])
{
	struct vdp_member *m[2];
	struct w pre[4];
	char spec[96];
	uint64_t nw, nf;

	snprintf(spec, sizeof(spec), "powerloss:manual,keep=%s,seed=%llu", keep,
		 (unsigned long long)seed);
	CHECK_EQ(set(spec), 0);
	make_file(fa, 0x11);
	make_file(fb, 0x22);
	memset(base[0], 0x11, MSIZE);
	memset(base[1], 0x22, MSIZE);
	m[0] = mopen(fa);
	m[1] = mopen(fb);
	CHECK(strcmp(m[0]->ops->kind, "powerloss") == 0);
	gen_writes(pre, 4, seed + 1000, true);
	for (int i = 0; i < 4; i++) {
		CHECK_EQ(member_apply(m, &pre[i]), 0);
		model_apply(base, &pre[i], pre[i].off, pre[i].off + pre[i].len);
	}
	CHECK_EQ(m[0]->ops->flush(m[0]), 0);
	CHECK_EQ(m[1]->ops->flush(m[1]), 0);
	gen_writes(ws, NW, seed, overlap);
	for (int i = 0; i < NW; i++)
		CHECK_EQ(member_apply(m, &ws[i]), 0);
	vdp_layers_counts(&nw, &nf);
	CHECK_EQ(nw, 4 + NW);
	CHECK_EQ(nf, 2);
	CHECK(!vdp_powerloss_happened());
	vdp_powerloss_now();
	CHECK(vdp_powerloss_happened());
	vdp_powerloss_now(); /* once only: no second crash */
	images_read();
	/* Frozen: everything fails, nothing reaches the file. */
	for (int i = 0; i < 2; i++) {
		uint8_t *b = abuf(S);

		memset(b, 0x77, S);
		CHECK_EQ(m[i]->ops->pread(m[i], b, S, 0), -EIO);
		CHECK_EQ(m[i]->ops->pwrite(m[i], b, S, 0), -EIO);
		CHECK_EQ(m[i]->ops->write_zeroes(m[i], 0, S), -EIO);
		CHECK_EQ(m[i]->ops->discard(m[i], 0, S), -EIO);
		CHECK_EQ(m[i]->ops->flush(m[i]), -EIO);
		vdp_member_close(m[i]);
		free(b);
	}
	vdp_layers_counts(&nw, &nf);
	CHECK_EQ(nw, 4 + NW); /* nothing counted after the crash */
	{
		uint8_t *after[2] = {abuf(MSIZE), abuf(MSIZE)};

		read_file(fa, after[0]);
		read_file(fb, after[1]);
		CHECK(images_are(after));
		free(after[0]);
		free(after[1]);
	}
}

/* Whether img[] is BASE with the first K of WS applied, for some K. */
static bool is_prefix(uint8_t *base[2], const struct w *ws, size_t n)
{
	for (size_t k = 0; k <= n; k++) {
		memcpy(want[0], base[0], MSIZE);
		memcpy(want[1], base[1], MSIZE);
		for (size_t i = 0; i < k; i++)
			model_apply(want, &ws[i], ws[i].off,
				    ws[i].off + ws[i].len);
		if (images_are(want))
			return true;
	}
	return false;
}

/* For disjoint writes: img[] is BASE except that each SECTOR of each
 * write (each whole write unless TORN) holds the old or the new data.
 * Counts writes kept whole, lost whole and torn. */
static bool is_subset(uint8_t *base[2], const struct w *ws, size_t n, bool torn,
		      int *whole, int *lost, int *part)
{
	memcpy(want[0], base[0], MSIZE);
	memcpy(want[1], base[1], MSIZE);
	*whole = *lost = *part = 0;
	for (size_t i = 0; i < n; i++) {
		int kept = 0, ns = (int)(ws[i].len / S);

		for (uint64_t o = ws[i].off; o < ws[i].off + ws[i].len;
		     o += S) {
			uint8_t *now = img[ws[i].mi] + o;

			model_apply(want, &ws[i], o, o + S);
			if (memcmp(now, want[ws[i].mi] + o, S) == 0) {
				kept++;
				continue;
			}
			memcpy(want[ws[i].mi] + o, base[ws[i].mi] + o, S);
			if (memcmp(now, want[ws[i].mi] + o, S) != 0)
				return false; /* neither old nor new */
		}
		if (!torn && kept != 0 && kept != ns)
			return false;
		*whole += kept == ns;
		*lost += kept == 0;
		*part += kept != 0 && kept != ns;
	}
	return images_are(want); /* and nothing else changed */
}

static void test_keep_modes(void)
{
	uint8_t *base[2] = {abuf(MSIZE), abuf(MSIZE)};
	uint8_t *first[2] = {abuf(MSIZE), abuf(MSIZE)};
	struct w ws[NW];
	int whole, lost, part;

	for (int overlap = 0; overlap < 2; overlap++) {
		for (uint64_t seed = 1; seed <= 6; seed++) {
			crash_run("none", seed, overlap, ws, base);
			CHECK(images_are(base));

			crash_run("all", seed, overlap, ws, base);
			memcpy(want[0], base[0], MSIZE);
			memcpy(want[1], base[1], MSIZE);
			for (int i = 0; i < NW; i++)
				model_apply(want, &ws[i], ws[i].off,
					    ws[i].off + ws[i].len);
			CHECK(images_are(want));

			crash_run("prefix", seed, overlap, ws, base);
			CHECK(is_prefix(base, ws, NW));
		}
	}
	for (uint64_t seed = 1; seed <= 6; seed++) {
		crash_run("random", seed, false, ws, base);
		CHECK(is_subset(base, ws, NW, false, &whole, &lost, &part));
		CHECK(whole > 0 && lost > 0 && part == 0);
		memcpy(first[0], img[0], MSIZE);
		memcpy(first[1], img[1], MSIZE);
		crash_run("random", seed, false, ws, base);
		CHECK(images_are(first)); /* deterministic per seed */

		crash_run("torn", seed, false, ws, base);
		CHECK(is_subset(base, ws, NW, true, &whole, &lost, &part));
		CHECK(part > 0);
	}
	/* A prefix is some prefix: over seeds, not always all or none. */
	{
		int mid = 0;

		for (uint64_t seed = 1; seed <= 6; seed++) {
			crash_run("prefix", seed, false, ws, base);
			CHECK(is_subset(base, ws, NW, false, &whole, &lost,
					&part));
			mid += whole > 0 && lost > 0;
		}
		CHECK(mid > 0);
	}
	free(base[0]);
	free(base[1]);
	free(first[0]);
	free(first[1]);
}

/* Unflushed writes are seen by reads, not by the file; a flush applies
 * them in order; a clean close applies what is left. */
static void test_overlay(void)
{
	uint8_t *model[2] = {abuf(MSIZE), abuf(MSIZE)};
	uint8_t *disk[2] = {abuf(MSIZE), abuf(MSIZE)};
	struct vdp_member *m[2];
	struct w ws[NW];
	uint64_t nw, nf;

	CHECK_EQ(set("powerloss:manual"), 0);
	make_file(fa, 0x11);
	make_file(fb, 0x22);
	memset(model[0], 0x11, MSIZE);
	memset(model[1], 0x22, MSIZE);
	m[0] = mopen(fa);
	m[1] = mopen(fb);
	gen_writes(ws, NW, 42, true);
	for (int i = 0; i < NW; i++) {
		CHECK_EQ(member_apply(m, &ws[i]), 0);
		model_apply(model, &ws[i], ws[i].off, ws[i].off + ws[i].len);
	}
	check_reads(m, model);
	images_read();
	for (size_t i = 0; i < MSIZE; i++)
		if (img[0][i] != 0x11 || img[1][i] != 0x22) {
			CHECK(!"an unflushed write reached the file");
			break;
		}
	vdp_layers_counts(&nw, &nf);
	CHECK_EQ(nw, NW);
	CHECK_EQ(nf, 0);

	/* Flushing member 0 applies its writes, not member 1's. */
	CHECK_EQ(m[0]->ops->flush(m[0]), 0);
	memset(disk[1], 0x22, MSIZE);
	memcpy(disk[0], model[0], MSIZE);
	images_read();
	CHECK(images_are(disk));
	check_reads(m, model);
	vdp_layers_counts(&nw, &nf);
	CHECK_EQ(nf, 1);

	/* More writes over flushed ones, then a clean close of both. */
	gen_writes(ws, NW, 43, true);
	for (int i = 0; i < NW; i++) {
		CHECK_EQ(member_apply(m, &ws[i]), 0);
		model_apply(model, &ws[i], ws[i].off, ws[i].off + ws[i].len);
	}
	check_reads(m, model);
	vdp_member_close(m[0]);
	vdp_member_close(m[1]);
	images_read();
	CHECK(images_are(model));
	CHECK(!vdp_powerloss_happened());
	for (int i = 0; i < 2; i++) {
		free(model[i]);
		free(disk[i]);
	}
}

/* ---- triggers ---------------------------------------------------------------
 */

static const struct w tw[] = {
	{0, OP_WRITE, 0, 2 * S, 0x50}, /* 1 */
	{1, OP_WRITE, S, S, 0x60},     /* 2 */
	{0, OP_WRITE, 4 * S, S, 0x70}, /* 3 */
	{1, OP_ZERO, 8 * S, S, 0},     /* 4 */
	{0, OP_WRITE, 6 * S, S, 0x80}, /* 5 */
	{1, OP_WRITE, 9 * S, S, 0x90}, /* 6 */
};

static void trig_model(uint8_t *m[2], const int *which, int n)
{
	memset(m[0], 0x11, MSIZE);
	memset(m[1], 0x22, MSIZE);
	for (int i = 0; i < n; i++) {
		const struct w *w = &tw[which[i]];

		model_apply(m, w, w->off, w->off + w->len);
	}
}

static void test_after_writes(void)
{
	struct vdp_member *m[2];
	uint64_t nw, nf;

	for (int all = 0; all < 2; all++) {
		CHECK_EQ(set(all ? "powerloss:after_writes=5,keep=all"
				 : "powerloss:after_writes=5,keep=none"),
			 0);
		make_file(fa, 0x11);
		make_file(fb, 0x22);
		m[0] = mopen(fa);
		m[1] = mopen(fb);
		CHECK_EQ(member_apply(m, &tw[0]), 0);
		CHECK_EQ(m[0]->ops->flush(m[0]), 0);
		for (int i = 1; i < 4; i++)
			CHECK_EQ(member_apply(m, &tw[i]), 0);
		CHECK(!vdp_powerloss_happened());
		/* The 5th write is accepted, then the power goes. */
		CHECK_EQ(member_apply(m, &tw[4]), 0);
		CHECK(vdp_powerloss_happened());
		CHECK_EQ(member_apply(m, &tw[5]), -EIO);
		vdp_layers_counts(&nw, &nf);
		CHECK_EQ(nw, 5);
		CHECK_EQ(nf, 1);
		vdp_member_close(m[0]);
		vdp_member_close(m[1]);
		images_read();
		if (all) { /* the 5th write was among the unflushed ones */
			int which[] = {0, 1, 2, 3, 4};

			trig_model(want, which, 5);
		} else {
			int which[] = {0};

			trig_model(want, which, 1);
		}
		CHECK(images_are(want));
	}
}

static void test_after_flushes(void)
{
	struct vdp_member *m[2];
	uint64_t nw, nf;
	int which[] = {0, 1};

	CHECK_EQ(set("powerloss:after_flushes=2,keep=none"), 0);
	make_file(fa, 0x11);
	make_file(fb, 0x22);
	m[0] = mopen(fa);
	m[1] = mopen(fb);
	CHECK_EQ(member_apply(m, &tw[0]), 0);
	CHECK_EQ(m[0]->ops->flush(m[0]), 0); /* 1 */
	CHECK(!vdp_powerloss_happened());
	CHECK_EQ(member_apply(m, &tw[1]), 0); /* member 1, flushed next */
	CHECK_EQ(member_apply(m, &tw[2]), 0); /* member 0, never flushed */
	CHECK_EQ(m[1]->ops->flush(m[1]), 0);  /* 2: returns, then the crash */
	CHECK(vdp_powerloss_happened());
	CHECK_EQ(m[0]->ops->flush(m[0]), -EIO);
	vdp_layers_counts(&nw, &nf);
	CHECK_EQ(nw, 3);
	CHECK_EQ(nf, 2);
	vdp_member_close(m[0]);
	vdp_member_close(m[1]);
	images_read();
	trig_model(want, which, 2);
	CHECK(images_are(want));

	/* A member opened after the crash is frozen too; a new spec resets
	 * the domain but not members frozen by the old crash. */
	m[0] = mopen(fa);
	CHECK_EQ(m[0]->ops->flush(m[0]), -EIO);
	CHECK_EQ(set("powerloss:manual,keep=all"), 0);
	CHECK(!vdp_powerloss_happened());
	vdp_layers_counts(&nw, &nf);
	CHECK_EQ(nw + nf, 0);
	CHECK_EQ(m[0]->ops->flush(m[0]), -EIO);
	m[1] = mopen(fb);
	CHECK_EQ(m[1]->ops->flush(m[1]), 0);
	vdp_member_close(m[0]);
	vdp_member_close(m[1]);
	CHECK_EQ(set(NULL), 0);
}

/* ---- forked children: then=exit and signals -------------------------------
 */

/* Runs FN in a child; returns its exit status, or -1. */
static int in_child(int (*fn)(int ready_fd), int signo)
{
	int fds[2], status;
	pid_t pid;
	char c;

	if (pipe(fds) < 0)
		return -1;
	fflush(NULL);
	pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		close(fds[0]);
		_exit(fn(fds[1]));
	}
	close(fds[1]);
	if (signo && read(fds[0], &c, 1) == 1)
		kill(pid, signo);
	close(fds[0]);
	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status))
		return -1;
	return WEXITSTATUS(status);
}

static int child_exit(int fd)
{
	struct vdp_member *m[2];

	(void)fd;
	if (set("powerloss:after_writes=3,keep=all,then=exit") < 0)
		return 2;
	m[0] = mopen(fa);
	m[1] = mopen(fb);
	for (int i = 0; i < 3; i++)
		member_apply(m, &tw[i]);
	return 3; /* not reached */
}

static int child_signal_exit(int fd)
{
	struct vdp_member *m[2];

	if (set("powerloss:signal=USR1,keep=all,then=exit") < 0)
		return 2;
	m[0] = mopen(fa);
	m[1] = mopen(fb);
	member_apply(m, &tw[0]);
	if (m[0]->ops->flush(m[0]) < 0)
		return 4;
	member_apply(m, &tw[1]);
	member_apply(m, &tw[2]);
	if (write(fd, "r", 1) != 1)
		return 5;
	for (;;)
		pause();
}

static int child_signal_freeze(int fd)
{
	struct timespec ms = {0, 1000000};
	struct vdp_member *m[2];
	uint8_t *b = abuf(S);

	if (set("powerloss:signal=USR2,keep=none") < 0)
		return 2;
	m[0] = mopen(fa);
	m[1] = mopen(fb);
	member_apply(m, &tw[0]);
	if (m[0]->ops->flush(m[0]) < 0)
		return 4;
	member_apply(m, &tw[1]);
	if (write(fd, "r", 1) != 1)
		return 5;
	/* The crash thread runs soon; the test's own timeout bounds this. */
	while (!vdp_powerloss_happened())
		nanosleep(&ms, NULL);
	if (m[1]->ops->pread(m[1], b, S, 0) != -EIO)
		return 6;
	vdp_member_close(m[0]);
	vdp_member_close(m[1]);
	return 0;
}

static void test_children(void)
{
	int which[] = {0, 1, 2};

	make_file(fa, 0x11);
	make_file(fb, 0x22);
	CHECK_EQ(in_child(child_exit, 0), VDP_POWERLOSS_EXIT);
	images_read();
	trig_model(want, which, 3);
	CHECK(images_are(want));

	make_file(fa, 0x11);
	make_file(fb, 0x22);
	CHECK_EQ(in_child(child_signal_exit, SIGUSR1), VDP_POWERLOSS_EXIT);
	images_read();
	trig_model(want, which, 3);
	CHECK(images_are(want));

	make_file(fa, 0x11);
	make_file(fb, 0x22);
	CHECK_EQ(in_child(child_signal_freeze, SIGUSR2), 0);
	images_read();
	trig_model(want, which, 1); /* keep=none: only the flushed write */
	CHECK(images_are(want));
}

/* ---- many threads -----------------------------------------------------------
 */

#define NT 4
#define TSECT 16

static struct vdp_member *tm;
static uint8_t *tmodel;
static atomic_int tbad;

/* Each thread owns TSECT sectors: writes one, reads it back through the
 * layer, flushes now and then, while the others do the same. */
static void *thread_main(void *arg)
{
	int t = (int)(intptr_t)arg;
	uint8_t *b = abuf(S), *r = abuf(S);
	uint64_t x = (uint64_t)t + 1;

	for (int i = 0; i < 300; i++) {
		uint64_t s;

		x = x * 6364136223846793005ull + 1442695040888963407ull;
		s = (uint64_t)t * TSECT + (x >> 33) % TSECT;
		memset(b, (uint8_t)(t * 64 + i), S);
		if (tm->ops->pwrite(tm, b, S, s * S) < 0)
			tbad++;
		memcpy(tmodel + s * S, b, S);
		if (tm->ops->pread(tm, r, S, s * S) < 0 || memcmp(r, b, S) != 0)
			tbad++;
		if (i % 10 == 9 && tm->ops->flush(tm) < 0)
			tbad++;
	}
	free(b);
	free(r);
	return NULL;
}

static void test_threads(void)
{
	pthread_t th[NT];
	uint8_t *got = abuf(MSIZE);
	uint64_t nw, nf;

	CHECK_EQ(set("powerloss:manual,keep=all"), 0);
	make_file(fa, 0x11);
	tmodel = abuf(MSIZE);
	memset(tmodel, 0x11, MSIZE);
	tm = mopen(fa);
	for (int t = 0; t < NT; t++)
		pthread_create(&th[t], NULL, thread_main, (void *)(intptr_t)t);
	for (int t = 0; t < NT; t++)
		pthread_join(th[t], NULL);
	CHECK_EQ(tbad, 0);
	vdp_layers_counts(&nw, &nf);
	CHECK_EQ(nw, NT * 300);
	CHECK_EQ(nf, NT * 30);
	vdp_powerloss_now();
	vdp_member_close(tm);
	read_file(fa, got);
	CHECK(memcmp(got, tmodel, MSIZE) == 0);
	free(got);
	free(tmodel);
	CHECK_EQ(set(NULL), 0);
}

/* ---- a whole pool
 * ------------------------------------------------------------ */

static char pm0[96], pm1[96];

static void report(void *ctx, const char *line)
{
	(void)ctx;
	fprintf(stderr, "check: %s\n", line);
}

static void pool_fill(uint8_t *b, size_t n, int tag)
{
	for (size_t i = 0; i < n; i++)
		b[i] = (uint8_t)(tag * 37 + i / 512 + (i & 0x3f));
}

/* The workload's durable states, by the number of commits that made it. */
#define A_LEN (192u << 10)
#define B_LEN (128u << 10)
#define C_LEN (64u << 10)

/*
 * The workload on an open pool: commit 1 holds a.img (A); commit 2 extends
 * it (B) and adds b.img; then an unsynced overwrite (C).  Errors after a
 * crash are expected; returns how many commits were acknowledged, and
 * after each stage the write count in COUNTS.
 */
static int workload(struct vdp_pool *p, uint64_t counts[3])
{
	uint8_t *b = malloc(A_LEN);
	struct vdp_attr a, bb;
	int acked = 0;

	vdp_pool_set_commit_interval(p, 0); /* no timer commits */
	vdp_pool_set_discard_sync(p, true); /* write counts replay */
	pool_fill(b, A_LEN, 1);
	if (vdp_create(p, VDP_ROOT_INO, "a.img", S_IFREG | 0600, 0, 0, &a) < 0)
		goto out;
	if (vdp_write(p, a.ino, b, A_LEN, 0) == A_LEN &&
	    vdp_fsync(p, a.ino, false) == 0)
		acked = 1;
	vdp_layers_counts(&counts[0], NULL);
	pool_fill(b, B_LEN, 2);
	if (vdp_write(p, a.ino, b, B_LEN, A_LEN) == B_LEN &&
	    vdp_create(p, VDP_ROOT_INO, "b.img", S_IFREG | 0600, 0, 0, &bb) ==
		    0 &&
	    vdp_write(p, bb.ino, b, B_LEN, 0) == B_LEN &&
	    vdp_fsync(p, bb.ino, false) == 0 && acked == 1)
		acked = 2;
	vdp_layers_counts(&counts[1], NULL);
	pool_fill(b, C_LEN, 3);
	(void)vdp_write(p, a.ino, b, C_LEN, 4096);
	vdp_layers_counts(&counts[2], NULL);
	vdp_forget(p, a.ino, 1);
	if (acked == 2)
		vdp_forget(p, bb.ino, 1);
out:
	free(b);
	return acked;
}

/* After a crash: the pool opens without layers, checks clean, and holds
 * the state of commit 1 or 2 (or none), at least ACKED, whole; a.img's
 * overwritten range holds A or C per sector (C was never synced). */
static void verify_pool(int acked, const char *what)
{
	uint8_t *got = malloc(A_LEN + B_LEN), *x = malloc(A_LEN + B_LEN);
	uint8_t *c = malloc(C_LEN);
	struct vdp_pool *p = NULL;
	struct vdp_attr a, bb;
	int r, state, bad = 0;

	r = vdp_pool_open(pm0, 0, &p);
	if (r < 0) {
		fprintf(stderr, "%s: reopen: %s\n", what, vdp_last_error());
		CHECK(0);
		goto out;
	}
	CHECK_EQ(vdp_pool_check(p, report, NULL), 0);
	if (vdp_lookup(p, VDP_ROOT_INO, "a.img", &a) < 0)
		state = 0;
	else if (vdp_lookup(p, VDP_ROOT_INO, "b.img", &bb) < 0)
		state = 1;
	else
		state = 2;
	if (state == 1 && a.size != A_LEN)
		state = -1; /* a.img without its data: no commit held that */
	if (state < acked) {
		fprintf(stderr,
			"%s: found the state of commit %d, but commit "
			"%d was acknowledged\n",
			what, state, acked);
		CHECK(0);
	}
	if (state >= 1) {
		uint64_t want_size = state == 1 ? A_LEN : A_LEN + B_LEN;

		CHECK_EQ(a.size, want_size);
		CHECK_EQ(vdp_read(p, a.ino, got, A_LEN + B_LEN, 0),
			 (ssize_t)want_size);
		pool_fill(x, A_LEN, 1);
		if (state == 2)
			pool_fill(x + A_LEN, B_LEN, 2);
		pool_fill(c, C_LEN, 3);
		for (size_t s = 0; s < want_size; s += 512) {
			bool in_c = s >= 4096 && s + 512 <= 4096 + C_LEN;

			if (memcmp(got + s, x + s, 512) != 0 &&
			    !(in_c &&
			      memcmp(got + s, c + (s - 4096), 512) == 0))
				bad++;
		}
		if (bad) {
			fprintf(stderr,
				"%s: a.img: %d sectors hold neither "
				"the committed nor the unsynced data\n",
				what, bad);
			CHECK(0);
		}
		vdp_forget(p, a.ino, 1);
	}
	if (state == 2) {
		CHECK_EQ(bb.size, B_LEN);
		CHECK_EQ(vdp_read(p, bb.ino, got, B_LEN, 0), (ssize_t)B_LEN);
		pool_fill(x, B_LEN, 2);
		CHECK(memcmp(got, x, B_LEN) == 0);
		vdp_forget(p, bb.ino, 1);
	}
	CHECK_EQ(vdp_pool_close(p), 0);
out:
	free(got);
	free(x);
	free(c);
}

static void pool_create(void)
{
	struct vdp_create_opts o = {
		.name = "layers", .extent_shift = 16, .force = true};
	const char *members[2] = {pm0, pm1};

	for (int i = 0; i < 2; i++) {
		int fd = open(members[i], O_CREAT | O_TRUNC | O_RDWR, 0600);

		if (fd < 0 || ftruncate(fd, 32 << 20) < 0) {
			perror(members[i]);
			exit(1);
		}
		close(fd);
	}
	if (vdp_pool_create(members, 2, &o) < 0) {
		fprintf(stderr, "pool create: %s\n", vdp_last_error());
		exit(1);
	}
}

static void test_pool(void)
{
	static const char *const keeps[] = {"none", "all", "prefix", "random",
					    "torn"};
	uint64_t counts[3], dry[3];
	struct vdp_pool *p;
	char spec[128], what[160];
	int acked, points = 0;

	snprintf(pm0, sizeof(pm0), "%s/p0", dir);
	snprintf(pm1, sizeof(pm1), "%s/p1", dir);

	/* Dry run: how many writes each stage takes. */
	CHECK_EQ(set(NULL), 0);
	pool_create();
	CHECK_EQ(set("powerloss:manual,keep=all"), 0);
	CHECK_EQ(vdp_pool_open(pm0, 0, &p), 0);
	CHECK_EQ(workload(p, dry), 2);
	CHECK_EQ(vdp_pool_close(p), 0);
	CHECK(!vdp_powerloss_happened());
	CHECK_EQ(set(NULL), 0);
	verify_pool(2, "dry run");
	CHECK(dry[0] > 0 && dry[1] > dry[0] && dry[2] > dry[1]);

	/* A crash at every write of the workload, keep modes in turn. */
	for (uint64_t n = 1; n <= dry[2] + 1; n++) {
		const char *keep = keeps[n % 5];

		snprintf(spec, sizeof(spec),
			 "powerloss:after_writes=%llu,keep=%s,seed=%llu",
			 (unsigned long long)n, keep, (unsigned long long)n);
		snprintf(what, sizeof(what), "pool crash %s", spec);
		CHECK_EQ(set(NULL), 0);
		pool_create();
		CHECK_EQ(set(spec), 0);
		if (vdp_pool_open(pm0, 0, &p) < 0) {
			fprintf(stderr, "%s: open: %s\n", what,
				vdp_last_error());
			CHECK(0);
			continue;
		}
		acked = workload(p, counts);
		/* The stages took the dry run's writes until the crash. */
		if (n > dry[1])
			CHECK_EQ(acked, 2);
		if (!vdp_powerloss_happened())
			vdp_powerloss_now();
		(void)vdp_pool_close(p); /* fails (EIO); must not hang */
		CHECK_EQ(set(NULL), 0);
		verify_pool(acked, what);
		points++;
	}
	printf("pool: crashed at %d points (dry run: %llu, %llu, %llu "
	       "writes)\n",
	       points, (unsigned long long)dry[0], (unsigned long long)dry[1],
	       (unsigned long long)dry[2]);
	unlink(pm0);
	unlink(pm1);
}

int main(void)
{
	char reg[96];

	snprintf(dir, sizeof(dir), "/var/tmp/vdp-layers-XXXXXX");
	if (!mkdtemp(dir))
		return 1;
	snprintf(fa, sizeof(fa), "%s/m0", dir);
	snprintf(fb, sizeof(fb), "%s/m1", dir);
	snprintf(reg, sizeof(reg), "%s/reg", dir);
	setenv("VDPOOL_REGISTRY", reg, 1);
	for (int i = 0; i < 2; i++) {
		img[i] = abuf(MSIZE);
		want[i] = abuf(MSIZE);
	}

	test_spec();
	test_fault_nth();
	test_fault_p();
	test_fault_only_and_stack();
	test_overlay();
	test_keep_modes();
	test_after_writes();
	test_after_flushes();
	test_children();
	test_threads();
	test_pool();

	remove_test_dir(dir);
	return check_done("test_layers");
}
