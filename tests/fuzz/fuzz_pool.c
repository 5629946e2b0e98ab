/* SPDX-License-Identifier: MIT */
/*
 * fuzz_pool.c - libFuzzer target: a whole pool image, damaged, opened and
 * used read-only.  The strongest of the targets: every parser of on-disk
 * bytes (superblocks, member table, chunks, tree nodes, inode records,
 * directory and xattr blobs, extent ids) meets the input in the order and
 * context vdp_pool_open and the calls after it give them.
 *
 * Once per process: a real pool on two files (tmpfs), built through the
 * store API: disks with data and holes, a map two levels deep, xattrs,
 * nested and large directories, an orphan.  Per input: patch the member
 * images, vdp_pool_open read-only, vdp_pool_check, readdir every directory,
 * lookup and getattr every name, read every disk around its data, get
 * every xattr, status and statfs; close; undo the patches.
 *
 * Input: one flag byte, then patches of 5 header bytes and LEN bytes:
 *   sel (bit 0 member; bits 1-2 region: 0 the superblock slots, 1-2 the
 *   metadata blocks in use, 3 anywhere in the first SPAN bytes), offset
 *   (3 bytes LE, taken modulo the region), len (1 byte), the bytes.
 * Flags: bit 0 reseal every patched superblock slot and metadata block
 * with a correct checksum (else the fuzzer only exercises the checksum
 * rejection), bit 1 XOR the bytes in instead of overwriting, bit 2 open
 * the pool through member 1 instead of member 0.
 *
 * Properties besides "no crash, leak or UB": an input without patches
 * opens and checks clean; damage to one member's metadata copy only
 * (without resealing) never stops the open, since the other copy is good;
 * every refusal to open says why; every name read back is a valid name.
 *
 * VDPOOL_FUZZ_TMP: where the pool files go (default /dev/shm); removed at
 * exit.  VDPOOL_FUZZ_SEEDS=DIR: write the seed corpus of every target
 * from this pool into DIR/<target>/ and exit (tests/fuzz/make-seeds.sh).
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "block.h"
#include "fuzz.h"
#include "seeds.h"
#include "vdpool.h"

#define MEMBER_SIZE (36ull << 20)
#define MAX_TOUCHED 256

enum { F_RESEAL = 1, F_XOR = 2, F_VIA1 = 4 };

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct {
	char dir[PATH_MAX];
	char path[2][PATH_MAX];
	int fd[2];
	uint8_t *orig[2], *work[2]; /* bytes [0, span) of each member */
	uint64_t span;		    /* header area + metadata blocks in use */
	uint64_t seed;		    /* the pool's checksum seed */
} img;

static void die(const char *what, int r)
{
	fprintf(stderr, "fuzz_pool: %s: %s (%s)\n", what,
		strerror(r < 0 ? -r : r), vdp_last_error());
	exit(1);
}

static void cleanup(void)
{
	char reg[PATH_MAX + 32];

	for (int i = 0; i < 2; i++) {
		if (img.fd[i] > 0)
			close(img.fd[i]);
		unlink(img.path[i]);
		free(img.orig[i]);
		free(img.work[i]);
	}
	snprintf(reg, sizeof(reg), "%s/registry/fuzz", img.dir);
	unlink(reg);
	snprintf(reg, sizeof(reg), "%s/registry", img.dir);
	rmdir(reg);
	rmdir(img.dir);
}

/* ---- the pool, built once ----------------------------------------------- */

static uint64_t mkfile(struct vdp_pool *p, uint64_t dir, const char *name,
		       uint32_t mode)
{
	struct vdp_attr a;
	int r = vdp_create(p, dir, name, mode, 0, 0, &a);

	if (r < 0)
		die(name, r);
	return a.ino;
}

static void put(struct vdp_pool *p, uint64_t ino, uint64_t off, size_t len,
		uint8_t fill)
{
	uint8_t *b = malloc(len);
	ssize_t r;

	if (!b)
		die("malloc", -ENOMEM);
	for (size_t i = 0; i < len; i++)
		b[i] = (uint8_t)(fill + i);
	r = vdp_write(p, ino, b, len, off);
	free(b);
	if (r != (ssize_t)len)
		die("write", r < 0 ? (int)r : -EIO);
}

static void xset(struct vdp_pool *p, uint64_t ino, const char *name, size_t len)
{
	char v[3000];
	int r;

	memset(v, 'v', sizeof(v));
	r = vdp_setxattr(p, ino, name, v, len, 0);
	if (r < 0)
		die(name, r);
}

static void populate(struct vdp_pool *p)
{
	uint64_t a, vm, sub, b, c, many, o;
	struct vdp_attr in = {.size = 10u << 20};
	char name[32];
	int r;

	a = mkfile(p, VDP_ROOT_INO, "a.img", S_IFREG | 0644);
	put(p, a, 0, 8192, 1);
	put(p, a, (3u << 20) + 100, 5000, 2); /* unaligned, after a hole */
	put(p, a, 600ull << 20, 4096, 3);     /* extent 600: a 2-level map */
	xset(p, a, "user.x", 5);
	xset(p, a, "user.empty", 0);
	xset(p, a, "user.big", 3000);
	xset(p, a, "user.big2", 2000); /* the blob spans two leaves */
	vm = mkfile(p, VDP_ROOT_INO, "vm", S_IFDIR | 0755);
	xset(p, vm, "user.dir", 7);
	sub = mkfile(p, vm, "sub", S_IFDIR | 0700);
	b = mkfile(p, vm, "b.img", S_IFREG | 0600);
	put(p, b, 0, (1u << 20) + 4096, 4);
	c = mkfile(p, sub, "c.img", S_IFREG | 0600);
	r = vdp_setattr(p, c, &in, VDP_SET_SIZE, NULL); /* all hole */
	if (r < 0)
		die("truncate", r);
	/* Enough names for a two-leaf directory blob and inode tree. */
	many = mkfile(p, VDP_ROOT_INO, "many", S_IFDIR | 0755);
	for (int i = 0; i < 200; i++) {
		snprintf(name, sizeof(name), "disk-%03d.img", i);
		mkfile(p, many, name, S_IFREG | 0644);
	}
	r = vdp_pool_commit(p);
	if (r < 0)
		die("commit", r);
	/* A second commit that frees and moves things. */
	for (int i = 0; i < 200; i += 7) {
		snprintf(name, sizeof(name), "disk-%03d.img", i);
		if ((r = vdp_unlink(p, many, name)) < 0)
			die(name, r);
	}
	r = vdp_rename(p, many, "disk-001.img", vm, "moved.img", 0);
	if (r < 0)
		die("rename", r);
	put(p, b, 4096, 100, 5);
	/* Unlinked while still referenced: an orphan on disk. */
	o = mkfile(p, VDP_ROOT_INO, "orphan.img", S_IFREG | 0644);
	put(p, o, 0, 4096, 6);
	if ((r = vdp_unlink(p, VDP_ROOT_INO, "orphan.img")) < 0)
		die("unlink", r);
}

/* The end of the metadata blocks in use on either member. */
static uint64_t meta_span(void)
{
	uint8_t blk[VDP_BLOCK_SIZE];
	uint64_t end = VDP_HEADER_AREA;

	for (int m = 0; m < 2; m++)
		for (uint64_t o = VDP_HEADER_AREA; o < (4ull << 20);
		     o += VDP_BLOCK_SIZE) {
			uint64_t magic;

			if (pread(img.fd[m], blk, sizeof(blk), (off_t)o) !=
			    (ssize_t)sizeof(blk))
				die("pread", -errno);
			memcpy(&magic, blk, 8);
			if (le64toh(magic) == VDP_MAGIC_META &&
			    o + VDP_BLOCK_SIZE > end)
				end = o + VDP_BLOCK_SIZE;
		}
	return end;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *base = getenv("VDPOOL_FUZZ_TMP");
	const char *seeds = getenv("VDPOOL_FUZZ_SEEDS");
	struct vdp_create_opts o = {.name = "fuzz"};
	const char *paths[2];
	struct vdp_pool *p;
	char reg[PATH_MAX + 16];
	int r;

	(void)argc, (void)argv;
	snprintf(img.dir, sizeof(img.dir), "%s/vdpool-fuzz-XXXXXX",
		 base && *base ? base : "/dev/shm");
	if (!mkdtemp(img.dir))
		die(img.dir, -errno);
	atexit(cleanup);
	snprintf(reg, sizeof(reg), "%s/registry", img.dir);
	setenv("VDPOOL_REGISTRY", reg, 1);
	for (int i = 0; i < 2; i++) {
		int fd;

		snprintf(img.path[i], sizeof(img.path[i]), "%s/m%d.img",
			 img.dir, i);
		fd = open(img.path[i], O_RDWR | O_CREAT | O_EXCL, 0600);
		if (fd < 0 || ftruncate(fd, (off_t)MEMBER_SIZE) < 0)
			die(img.path[i], -errno);
		close(fd);
		paths[i] = img.path[i];
	}
	if ((r = vdp_pool_create(paths, 2, &o)) < 0)
		die("create", r);
	if ((r = vdp_pool_open(paths[0], 0, &p)) < 0)
		die("open", r);
	vdp_pool_set_commit_interval(p, 0);
	populate(p);
	if ((r = vdp_pool_close(p)) < 0)
		die("close", r);

	for (int i = 0; i < 2; i++) {
		img.fd[i] = open(img.path[i], O_RDWR);
		if (img.fd[i] < 0)
			die(img.path[i], -errno);
	}
	img.span = meta_span();
	for (int i = 0; i < 2; i++) {
		img.orig[i] = malloc(img.span);
		img.work[i] = malloc(img.span);
		if (!img.orig[i] || !img.work[i])
			die("malloc", -ENOMEM);
		if (pread(img.fd[i], img.orig[i], img.span, 0) !=
		    (ssize_t)img.span)
			die("pread", -errno);
		memcpy(img.work[i], img.orig[i], img.span);
	}
	img.seed = vdp_pool_seed(((struct vdp_bhdr *)img.orig[0])->pool_uuid);
	if (seeds) {
		r = fuzz_write_seeds(seeds, (const uint8_t *const *)img.orig,
				     img.span);
		if (r < 0)
			die(seeds, r);
		exit(0);
	}
	return 0;
}

/* ---- per input ------------------------------------------------------- */

struct touched {
	uint64_t blk[MAX_TOUCHED]; /* member << 63 | 4 KiB block index */
	size_t n;
	bool meta_only[2]; /* only metadata blocks of that member changed */
	bool changed[2];
};

static void touch(struct touched *t, unsigned m, uint64_t b)
{
	uint64_t k = (uint64_t)m << 63 | b;

	for (size_t i = 0; i < t->n; i++)
		if (t->blk[i] == k)
			return;
	if (t->n < MAX_TOUCHED)
		t->blk[t->n++] = k;
}

/* Applies the patches of the input to img.work, noting what changed. */
static void apply(const uint8_t *d, size_t n, uint8_t flags, struct touched *t)
{
	uint64_t meta = img.span - VDP_HEADER_AREA;

	t->meta_only[0] = t->meta_only[1] = true;
	while (n >= 5 && t->n + 3 < MAX_TOUCHED) {
		unsigned m = d[0] & 1, region = (d[0] >> 1) & 3;
		uint64_t off =
			d[1] | (uint64_t)d[2] << 8 | (uint64_t)d[3] << 16;
		size_t len = d[4];

		d += 5, n -= 5;
		if (len > n)
			len = n;
		if (region == 0)
			off %= VDP_SB_SLOTS * VDP_SB_SIZE;
		else if (region == 3)
			off %= img.span;
		else
			off = VDP_HEADER_AREA + off % meta;
		if (len > img.span - off)
			len = (size_t)(img.span - off);
		for (size_t i = 0; i < len; i++) {
			uint8_t *w = &img.work[m][off + i];
			uint8_t v = flags & F_XOR ? *w ^ d[i] : d[i];

			if (v != img.orig[m][off + i]) {
				t->changed[m] = true;
				if (off + i < VDP_HEADER_AREA)
					t->meta_only[m] = false;
			}
			*w = v;
		}
		if (len) {
			touch(t, m, off / VDP_BLOCK_SIZE);
			touch(t, m, (off + len - 1) / VDP_BLOCK_SIZE);
		}
		d += len, n -= len;
	}
}

/* Seals each changed superblock slot and metadata block again. */
static void reseal(struct touched *t)
{
	size_t n = t->n;

	for (size_t i = 0; i < n; i++) {
		unsigned m = (unsigned)(t->blk[i] >> 63);
		uint64_t off = (t->blk[i] & ~(1ull << 63)) * VDP_BLOCK_SIZE;

		if (off < VDP_SB_SLOTS * VDP_SB_SIZE) {
			uint64_t slot = off - off % VDP_SB_SIZE;
			struct vdp_bhdr *h =
				(struct vdp_bhdr *)(img.work[m] + slot);

			vdp_block_seal(h, VDP_SB_SIZE,
				       vdp_pool_seed(h->pool_uuid));
			touch(t, m, slot / VDP_BLOCK_SIZE);
		} else if (off >= VDP_HEADER_AREA) {
			vdp_block_seal(img.work[m] + off, VDP_BLOCK_SIZE,
				       img.seed);
		}
	}
}

static void write_touched(const struct touched *t)
{
	for (size_t i = 0; i < t->n; i++) {
		unsigned m = (unsigned)(t->blk[i] >> 63);
		uint64_t off = (t->blk[i] & ~(1ull << 63)) * VDP_BLOCK_SIZE;

		if (pwrite(img.fd[m], img.work[m] + off, VDP_BLOCK_SIZE,
			   (off_t)off) != VDP_BLOCK_SIZE)
			die("pwrite", -errno);
	}
}

static void report(void *ctx, const char *line)
{
	(void)ctx;
	FUZZ_ASSERT(line && line[0] && strlen(line) < 1024);
}

struct walk {
	struct vdp_pool *p;
	unsigned depth, entries;
	uint64_t dirs[64]; /* inodes of the directories to visit */
	unsigned ndirs;
};

static void use_xattrs(struct vdp_pool *p, uint64_t ino)
{
	char list[1024], val[1024];
	ssize_t n = vdp_listxattr(p, ino, NULL, 0);

	if (n <= 0)
		return;
	n = vdp_listxattr(p, ino, list, sizeof(list));
	if (n <= 0)
		return;
	FUZZ_ASSERT((size_t)n <= sizeof(list));
	for (ssize_t o = 0; o < n;) {
		size_t l = strnlen(list + o, (size_t)(n - o));

		FUZZ_ASSERT(o + (ssize_t)l < n); /* each name NUL-terminated */
		(void)vdp_getxattr(p, ino, list + o, NULL, 0);
		(void)vdp_getxattr(p, ino, list + o, val, sizeof(val));
		o += (ssize_t)l + 1;
	}
}

/* Reads the disk at its start, at each data run lseek finds, at its end. */
static void use_file(struct vdp_pool *p, const struct vdp_attr *a)
{
	static uint8_t buf[64 << 10];
	uint64_t off = 0;

	(void)vdp_read(p, a->ino, buf, sizeof(buf), 0);
	for (int i = 0; i < 8; i++) {
		int64_t d = vdp_lseek(p, a->ino, off, SEEK_DATA);
		int64_t h;

		if (d < 0)
			break;
		FUZZ_ASSERT((uint64_t)d >= off && (uint64_t)d < a->size);
		(void)vdp_read(p, a->ino, buf, sizeof(buf), (uint64_t)d);
		h = vdp_lseek(p, a->ino, (uint64_t)d, SEEK_HOLE);
		if (h <= d)
			break;
		off = (uint64_t)h;
	}
	if (a->size)
		(void)vdp_read(p, a->ino, buf, 4096, a->size - 1);
}

static int on_entry(void *ctx, const char *name, const struct vdp_attr *attr,
		    uint64_t next)
{
	struct walk *w = ctx;
	struct vdp_attr a;
	size_t l = strlen(name);

	(void)next;
	FUZZ_ASSERT(l >= 1 && l <= VDP_NAME_MAX && !strchr(name, '/'));
	if (++w->entries > 4000)
		return 1;
	if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
		return 0;
	if (vdp_getattr(w->p, attr->ino, &a) == 0) {
		FUZZ_ASSERT(a.ino == attr->ino);
		use_xattrs(w->p, a.ino);
		if (S_ISREG(a.mode))
			use_file(w->p, &a);
		else if (S_ISDIR(a.mode) && w->ndirs < 64)
			w->dirs[w->ndirs++] = a.ino;
	}
	return 0;
}

static void use_pool(struct vdp_pool *p)
{
	struct walk w = {.p = p};
	struct vdp_statfs st;
	struct vdp_attr a;
	char *s;
	int r = vdp_pool_check(p, report, NULL);

	FUZZ_ASSERT(r >= 0 || *vdp_last_error() || r == -ENOMEM);
	w.dirs[w.ndirs++] = VDP_ROOT_INO;
	for (unsigned i = 0; i < w.ndirs; i++) {
		use_xattrs(p, w.dirs[i]);
		(void)vdp_readdir(p, w.dirs[i], 0, on_entry, &w);
	}
	if (vdp_lookup(p, VDP_ROOT_INO, "a.img", &a) == 0)
		vdp_forget(p, a.ino, 1);
	vdp_pool_statfs(p, &st);
	if (vdp_pool_status(p, false, &s) == 0)
		free(s);
	if (vdp_pool_status(p, true, &s) == 0)
		free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct touched t = {.n = 0};
	struct vdp_pool *p;
	uint8_t flags;
	int r;

	if (size < 1)
		return 0;
	flags = data[0];
	apply(data + 1, size - 1, flags, &t);
	if (flags & F_RESEAL)
		reseal(&t);
	write_touched(&t);

	r = vdp_pool_open(img.path[flags & F_VIA1 ? 1 : 0], VDP_OPEN_RDONLY,
			  &p);
	if (r == 0) {
		if (!t.changed[0] && !t.changed[1])
			FUZZ_ASSERT(vdp_pool_check(p, report, NULL) == 0);
		use_pool(p);
		vdp_pool_close(p);
	} else {
		FUZZ_ASSERT(*vdp_last_error());
		FUZZ_ASSERT(t.changed[0] || t.changed[1]);
		/* Damage to one member's metadata copy alone (checksums
		 * wrong) never stops the open: the other copy is good. */
		for (unsigned m = 0; m < 2; m++)
			FUZZ_ASSERT(flags & F_RESEAL || !t.changed[m] ||
				    !t.meta_only[m] || t.changed[!m]);
	}

	/* Undo: every touched block back to the pristine image. */
	for (size_t i = 0; i < t.n; i++) {
		unsigned m = (unsigned)(t.blk[i] >> 63);
		uint64_t off = (t.blk[i] & ~(1ull << 63)) * VDP_BLOCK_SIZE;

		memcpy(img.work[m] + off, img.orig[m] + off, VDP_BLOCK_SIZE);
	}
	write_touched(&t);
	return 0;
}
