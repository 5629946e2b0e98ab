/* SPDX-License-Identifier: MIT */
/*
 * test_store.c - the whole store API on real member files, no FUSE:
 * a random sequence of writes, reads, holes, zero ranges, truncates,
 * commits and reopens checked byte for byte against an in-memory model
 * (in the spirit of fsx); then namespace and xattrs across a reopen; a
 * process that dies without closing (kill -9); the no-stale-data case;
 * and a full pool.  vdp_pool_check must find nothing wrong after each.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "vdpool.h"

#define NFILES 3
#define MAXSZ (6u << 20)
#define EXT (1u << 16) /* the pool's extent size (.extent_shift below) */

static char dir[64], m0[96], m1[96];
static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(uint64_t n)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return n ? rng % n : 0;
}

static void report(void *ctx, const char *line)
{
	(void)ctx;
	fprintf(stderr, "check: %s\n", line);
}

static struct vdp_pool *open_pool(void)
{
	struct vdp_pool *p = NULL;
	int r = vdp_pool_open(m0, 0, &p);

	if (r < 0) {
		fprintf(stderr, "open: %s (%s)\n", strerror(-r),
			vdp_last_error());
		exit(1);
	}
	return p;
}

static void check_clean(struct vdp_pool *p)
{
	CHECK_EQ(vdp_pool_check(p, report, NULL), 0);
}

struct model {
	uint64_t ino;
	uint64_t size;
	uint8_t *data; /* MAXSZ + slack */
};

static void verify(struct vdp_pool *p, struct model *m)
{
	static uint8_t buf[MAXSZ + (1 << 20)];
	struct vdp_attr a;
	ssize_t n;

	CHECK_EQ(vdp_getattr(p, m->ino, &a), 0);
	CHECK_EQ(a.size, m->size);
	n = vdp_read(p, m->ino, buf, sizeof(buf), 0);
	CHECK_EQ(n, (ssize_t)m->size);
	if (n == (ssize_t)m->size && memcmp(buf, m->data, m->size) != 0) {
		for (uint64_t i = 0; i < m->size; i++)
			if (buf[i] != m->data[i]) {
				fprintf(stderr, "ino %llu differs at %llu\n",
					(unsigned long long)m->ino,
					(unsigned long long)i);
				break;
			}
		CHECK(0);
	}
	/* Every hole lseek reports reads as zeros in the model. */
	for (uint64_t off = 0; off < m->size;) {
		int64_t h = vdp_lseek(p, m->ino, off, SEEK_HOLE), d;

		CHECK(h >= (int64_t)off && h <= (int64_t)m->size);
		if (h < (int64_t)off)
			break;
		d = vdp_lseek(p, m->ino, (uint64_t)h, SEEK_DATA);
		uint64_t end = d < 0 ? m->size : (uint64_t)d;
		for (uint64_t i = (uint64_t)h; i < end; i++)
			if (m->data[i]) {
				CHECK(!"hole reported over data");
				break;
			}
		if (d < 0)
			break;
		off = (uint64_t)d + 1;
	}
}

static void random_ops(struct vdp_pool **pp, struct model *f, int nops)
{
	static uint8_t buf[400 << 10];

	for (int i = 0; i < nops; i++) {
		struct model *m = &f[rnd(NFILES)];
		struct vdp_pool *p = *pp;
		uint64_t off = rnd(MAXSZ - (400 << 10)),
			 len = 1 + rnd(400 << 10);
		int op = (int)rnd(100);

		if (op < 8) {
			/* A clone of a random range of a random disk, often
			 * at extent boundaries so that extents are shared. */
			struct model *src = &f[rnd(NFILES)];
			uint64_t ioff = rnd(MAXSZ - (400 << 10)), n;
			ssize_t got;

			if (rnd(2)) {
				ioff &= ~(uint64_t)(EXT - 1);
				off &= ~(uint64_t)(EXT - 1);
				len = rnd(4) * EXT + rnd(2) * rnd(EXT);
			}
			n = ioff >= src->size	     ? 0
			    : ioff + len > src->size ? src->size - ioff
						     : len;
			got = vdp_copy_range(p, src->ino, ioff, m->ino, off,
					     len);
			if (src == m && n && ioff < off + n && off < ioff + n) {
				CHECK_EQ(got, -EINVAL);
				continue;
			}
			CHECK_EQ(got, (ssize_t)n);
			/* The model keeps zeros past each end of file. */
			memmove(m->data + off, src->data + ioff, n);
			if (n && off + n > m->size)
				m->size = off + n;
		} else if (op < 45) {
			for (uint64_t k = 0; k < len; k++)
				buf[k] = (uint8_t)rnd(256);
			CHECK_EQ(vdp_write(p, m->ino, buf, len, off), len);
			memcpy(m->data + off, buf, len);
			if (off + len > m->size)
				m->size = off + len;
		} else if (op < 60) {
			ssize_t want =
				off >= m->size
					? 0
					: (ssize_t)(off + len > m->size
							    ? m->size - off
							    : len);
			CHECK_EQ(vdp_read(p, m->ino, buf, len, off), want);
			CHECK(memcmp(buf, m->data + off, (size_t)want) == 0);
		} else if (op < 70) {
			CHECK_EQ(vdp_fallocate(p, m->ino,
					       FALLOC_FL_PUNCH_HOLE |
						       FALLOC_FL_KEEP_SIZE,
					       off, len),
				 0);
			if (off < m->size)
				memset(m->data + off, 0,
				       off + len > m->size ? m->size - off
							   : len);
		} else if (op < 76) {
			CHECK_EQ(vdp_fallocate(p, m->ino, FALLOC_FL_ZERO_RANGE,
					       off, len),
				 0);
			memset(m->data + off, 0, len);
			if (off + len > m->size)
				m->size = off + len;
		} else if (op < 80) {
			CHECK_EQ(vdp_fallocate(p, m->ino, 0, off, len), 0);
			if (off + len > m->size) {
				memset(m->data + m->size, 0,
				       off + len - m->size);
				m->size = off + len;
			}
		} else if (op < 88) {
			struct vdp_attr a = {.size = rnd(MAXSZ)};

			CHECK_EQ(vdp_setattr(p, m->ino, &a, VDP_SET_SIZE, NULL),
				 0);
			if (a.size > m->size)
				memset(m->data + m->size, 0, a.size - m->size);
			else
				memset(m->data + a.size, 0, m->size - a.size);
			m->size = a.size;
		} else if (op < 95) {
			CHECK_EQ(vdp_fsync(p, m->ino, true), 0);
		} else if (op < 97) {
			CHECK_EQ(vdp_pool_close(p), 0);
			*pp = open_pool();
			for (int k = 0; k < NFILES; k++)
				verify(*pp, &f[k]);
		} else {
			verify(p, m);
		}
	}
}

static int names(void *ctx, const char *name, const struct vdp_attr *a,
		 uint64_t next)
{
	char *s = ctx;

	(void)a;
	(void)next;
	strcat(s, name);
	strcat(s, " ");
	return 0;
}

static void namespace_tests(void)
{
	struct vdp_pool *p = open_pool();
	struct vdp_attr a, d, b;
	char list[512] = "", val[16];

	CHECK_EQ(vdp_create(p, VDP_ROOT_INO, "dir", S_IFDIR | 0750, 1, 2, &d),
		 0);
	CHECK_EQ(vdp_create(p, d.ino, "x.img", S_IFREG | 0600, 3, 4, &a), 0);
	CHECK_EQ(vdp_create(p, d.ino, "x.img", S_IFREG | 0600, 3, 4, &b),
		 -EEXIST);
	CHECK_EQ(vdp_rmdir(p, VDP_ROOT_INO, "dir"), -ENOTEMPTY);
	CHECK_EQ(vdp_create(p, VDP_ROOT_INO, "y.img", S_IFREG | 0644, 0, 0, &b),
		 0);
	CHECK_EQ(vdp_rename(p, VDP_ROOT_INO, "y.img", d.ino, "x.img",
			    VDP_RENAME_NOREPLACE),
		 -EEXIST);
	CHECK_EQ(vdp_rename(p, VDP_ROOT_INO, "y.img", d.ino, "x.img",
			    VDP_RENAME_EXCHANGE),
		 0);
	CHECK_EQ(vdp_rename(p, VDP_ROOT_INO, "dir", d.ino, "sub", 0), -EINVAL);
	CHECK_EQ(vdp_setxattr(p, a.ino, "user.vm", "web1", 4, 0), 0);
	CHECK_EQ(vdp_setxattr(p, a.ino, "trusted.x", "1", 1, 0), -EOPNOTSUPP);
	CHECK_EQ(vdp_setxattr(p, b.ino, "user.gone", "1", 1, 0), 0);
	CHECK_EQ(vdp_removexattr(p, b.ino, "user.gone"), 0);
	CHECK_EQ(vdp_pool_close(p), 0);

	p = open_pool();
	/* After the exchange: root/y.img is the old x.img (ino a). */
	CHECK_EQ(vdp_lookup(p, VDP_ROOT_INO, "y.img", &b), 0);
	CHECK_EQ(b.ino, a.ino);
	CHECK_EQ(b.uid, 3);
	CHECK_EQ(b.mode, S_IFREG | 0600);
	CHECK_EQ(vdp_getxattr(p, a.ino, "user.vm", val, sizeof(val)), 4);
	CHECK(memcmp(val, "web1", 4) == 0);
	CHECK_EQ(vdp_listxattr(p, a.ino, NULL, 0), 8);
	CHECK_EQ(vdp_lookup(p, VDP_ROOT_INO, "dir", &d), 0);
	CHECK_EQ(d.nlink, 2);
	CHECK_EQ(d.mode, S_IFDIR | 0750);
	CHECK_EQ(vdp_readdir(p, d.ino, 0, names, list), 0);
	CHECK(strcmp(list, ". .. x.img ") == 0);
	CHECK_EQ(vdp_unlink(p, d.ino, "x.img"), 0);
	CHECK_EQ(vdp_rmdir(p, VDP_ROOT_INO, "dir"), 0);
	CHECK_EQ(vdp_unlink(p, VDP_ROOT_INO, "y.img"), 0);
	check_clean(p);
	CHECK_EQ(vdp_pool_close(p), 0);
}

/* A writer that dies without closing: synced data survives, the rest is
 * old or new, and the pool checks clean. */
static void kill9_test(void)
{
	static uint8_t a[2 << 20], b[2 << 20], got[4 << 20];
	struct vdp_pool *p;
	struct vdp_attr at;
	pid_t pid;
	int st;

	memset(a, 0xa1, sizeof(a));
	memset(b, 0xb2, sizeof(b));
	pid = fork();
	if (pid == 0) {
		p = open_pool();
		if (vdp_create(p, VDP_ROOT_INO, "k.img", S_IFREG | 0600, 0, 0,
			       &at) < 0 ||
		    vdp_write(p, at.ino, a, sizeof(a), 0) < 0 ||
		    vdp_fsync(p, at.ino, true) < 0)
			_exit(2);
		/* Not synced: an overwrite and an extension. */
		if (vdp_write(p, at.ino, b, sizeof(b), 1 << 20) < 0)
			_exit(3);
		_exit(0); /* no close, no commit */
	}
	CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) &&
	      WEXITSTATUS(st) == 0);
	p = open_pool();
	check_clean(p);
	CHECK_EQ(vdp_lookup(p, VDP_ROOT_INO, "k.img", &at), 0);
	CHECK_EQ(at.size, sizeof(a));
	CHECK_EQ(vdp_read(p, at.ino, got, sizeof(got), 0), sizeof(a));
	CHECK(memcmp(got, a, 1 << 20) == 0);
	for (size_t i = 1 << 20; i < sizeof(a); i++)
		if (got[i] != 0xa1 && got[i] != 0xb2) {
			CHECK(!"unsynced byte is neither old nor new");
			break;
		}
	CHECK_EQ(vdp_unlink(p, VDP_ROOT_INO, "k.img"), 0);
	CHECK_EQ(vdp_pool_close(p), 0);
}

/* A deleted disk's data never shows through a new disk. */
static void stale_test(void)
{
	static uint8_t buf[8 << 20];
	struct vdp_pool *p = open_pool();
	struct vdp_attr a, b;
	bool clean = true;

	CHECK_EQ(vdp_create(p, VDP_ROOT_INO, "a.img", S_IFREG | 0600, 0, 0, &a),
		 0);
	memset(buf, 0xff, sizeof(buf));
	CHECK_EQ(vdp_write(p, a.ino, buf, sizeof(buf), 0), sizeof(buf));
	CHECK_EQ(vdp_fsync(p, a.ino, true), 0);
	CHECK_EQ(vdp_unlink(p, VDP_ROOT_INO, "a.img"), 0);
	vdp_forget(p, a.ino, 1);
	CHECK_EQ(vdp_pool_commit(p), 0);
	CHECK_EQ(vdp_create(p, VDP_ROOT_INO, "b.img", S_IFREG | 0600, 0, 0, &b),
		 0);
	struct vdp_attr sz = {.size = sizeof(buf)};
	CHECK_EQ(vdp_setattr(p, b.ino, &sz, VDP_SET_SIZE, NULL), 0);
	for (int i = 0; i < 8; i++)
		CHECK_EQ(vdp_write(p, b.ino, "B", 1, (uint64_t)i * 999331), 1);
	CHECK_EQ(vdp_read(p, b.ino, buf, sizeof(buf), 0), sizeof(buf));
	for (size_t i = 0; i < sizeof(buf); i++) {
		uint8_t want = i % 999331 == 0 && i / 999331 < 8 ? 'B' : 0;

		if (buf[i] != want)
			clean = false;
	}
	CHECK(clean);
	CHECK_EQ(vdp_unlink(p, VDP_ROOT_INO, "b.img"), 0);
	vdp_forget(p, b.ino, 1);
	CHECK_EQ(vdp_pool_close(p), 0);
}

static void enospc_test(void)
{
	static uint8_t buf[1 << 20];
	struct vdp_pool *p = open_pool();
	struct vdp_statfs st;
	struct vdp_attr a;
	uint64_t off = 0;
	ssize_t r;

	memset(buf, 0x5a, sizeof(buf));
	CHECK_EQ(vdp_create(p, VDP_ROOT_INO, "full.img", S_IFREG | 0600, 0, 0,
			    &a),
		 0);
	while ((r = vdp_write(p, a.ino, buf, sizeof(buf), off)) > 0)
		off += (uint64_t)r;
	CHECK_EQ(r, -ENOSPC);
	vdp_pool_statfs(p, &st);
	CHECK_EQ(st.free_extents, 0);
	CHECK_EQ(vdp_fsync(p, a.ino, true), 0);
	check_clean(p);
	struct vdp_attr sz = {.size = off / 2};
	CHECK_EQ(vdp_setattr(p, a.ino, &sz, VDP_SET_SIZE, NULL), 0);
	CHECK_EQ(vdp_pool_commit(p), 0);
	CHECK_EQ(vdp_write(p, a.ino, buf, sizeof(buf), off / 2), sizeof(buf));
	CHECK_EQ(vdp_unlink(p, VDP_ROOT_INO, "full.img"), 0);
	vdp_forget(p, a.ino, 1);
	check_clean(p);
	CHECK_EQ(vdp_pool_close(p), 0);
}

/* Threads that fill the same holes at once: fill_hole writes a new extent
 * with the disk's io lock shared and maps it with the lock exclusive; a
 * writer that finds the hole filled meanwhile writes into that extent. */
#define HT_THREADS 4
#define HT_EXTENTS 8
#define HT_BLOCKS (HT_EXTENTS * (EXT / 4096))

struct hole_writer {
	struct vdp_pool *p;
	uint64_t ino;
	unsigned t;
	int failed;
};

static uint8_t block_byte(unsigned k)
{
	return (uint8_t)(1 + k % 251);
}

static void *hole_writer(void *arg)
{
	struct hole_writer *w = arg;
	uint8_t b[4096];

	/* Thread T writes blocks T, T + HT_THREADS, ...: every extent gets
	 * blocks from every thread at about the same time. */
	for (unsigned k = w->t; k < HT_BLOCKS; k += HT_THREADS) {
		memset(b, block_byte(k), sizeof(b));
		if (vdp_write(w->p, w->ino, b, sizeof(b), (uint64_t)k * 4096) !=
		    (ssize_t)sizeof(b))
			w->failed++;
	}
	return NULL;
}

static void holes_test(void)
{
	struct vdp_pool *p = open_pool();
	uint8_t b[4096], zero[4096] = {0};
	struct vdp_attr a = {.size = (uint64_t)HT_EXTENTS * EXT};

	for (int round = 0; round < 20; round++) {
		struct hole_writer w[HT_THREADS];
		pthread_t t[HT_THREADS];
		struct vdp_attr got;

		CHECK_EQ(vdp_create(p, VDP_ROOT_INO, "holes.img",
				    S_IFREG | 0600, 0, 0, &got),
			 0);
		CHECK_EQ(vdp_setattr(p, got.ino, &a, VDP_SET_SIZE, &got), 0);
		for (unsigned i = 0; i < HT_THREADS; i++) {
			w[i] = (struct hole_writer){p, got.ino, i, 0};
			pthread_create(&t[i], NULL, hole_writer, &w[i]);
		}
		for (unsigned i = 0; i < HT_THREADS; i++) {
			pthread_join(t[i], NULL);
			CHECK_EQ(w[i].failed, 0);
		}
		for (unsigned k = 0; k < HT_BLOCKS; k++) {
			CHECK_EQ(vdp_read(p, got.ino, b, sizeof(b),
					  (uint64_t)k * 4096),
				 (ssize_t)sizeof(b));
			CHECK_EQ(b[0], block_byte(k));
			CHECK_EQ(b[4095], block_byte(k));
		}
		/* One extent each, none lost to a race. */
		CHECK_EQ(vdp_getattr(p, got.ino, &got), 0);
		CHECK_EQ(got.blocks, (uint64_t)HT_EXTENTS * EXT / 512);
		check_clean(p);
		CHECK_EQ(vdp_unlink(p, VDP_ROOT_INO, "holes.img"), 0);
		vdp_forget(p, got.ino, 1);
	}

	/* Zeros written over a hole leave it a hole; over data they are
	 * written. */
	CHECK_EQ(vdp_create(p, VDP_ROOT_INO, "zeros.img", S_IFREG | 0600, 0, 0,
			    &a),
		 0);
	CHECK_EQ(vdp_write(p, a.ino, zero, sizeof(zero), 3 * EXT), 4096);
	CHECK_EQ(vdp_getattr(p, a.ino, &a), 0);
	CHECK_EQ(a.size, 3 * EXT + 4096);
	CHECK_EQ(a.blocks, 0);
	memset(b, 0x5a, sizeof(b));
	CHECK_EQ(vdp_write(p, a.ino, b, sizeof(b), 0), 4096);
	CHECK_EQ(vdp_write(p, a.ino, zero, sizeof(zero), 0), 4096);
	CHECK_EQ(vdp_read(p, a.ino, b, sizeof(b), 0), 4096);
	CHECK_EQ(memcmp(b, zero, sizeof(b)), 0);
	CHECK_EQ(vdp_getattr(p, a.ino, &a), 0);
	CHECK_EQ(a.blocks, EXT / 512);
	check_clean(p);
	CHECK_EQ(vdp_unlink(p, VDP_ROOT_INO, "zeros.img"), 0);
	vdp_forget(p, a.ino, 1);
	CHECK_EQ(vdp_pool_close(p), 0);
}

static void count_report(void *ctx, const char *line)
{
	fprintf(stderr, "check (expected): %s\n", line);
	++*(int *)ctx;
}

/* Flips a byte in every metadata block on MEMBER (live or not). */
static void corrupt_meta(const char *member)
{
	uint8_t blk[4096];
	int fd = open(member, O_RDWR), n = 0;

	for (off_t off = 65536; fd >= 0 && off < (16 << 20); off += 4096) {
		if (pread(fd, blk, 4096, off) != 4096)
			break;
		if (memcmp(blk, "VDPMETA", 7) != 0)
			continue;
		blk[300] ^= 0xff;
		CHECK(pwrite(fd, blk, 4096, off) == 4096);
		n++;
	}
	CHECK(n > 0);
	if (fd >= 0)
		close(fd);
}

/* Bad copies are reported by check while the other copy serves; both
 * copies bad makes the open fail, naming the block and the reason. */
static void corrupt_test(void)
{
	struct vdp_pool *p = NULL;
	int lines = 0;

	corrupt_meta(m0);
	CHECK_EQ(vdp_pool_open(m0, VDP_OPEN_RDONLY, &p), 0);
	CHECK(vdp_pool_check(p, count_report, &lines) >= 1);
	CHECK(lines >= 1);
	vdp_pool_close(p);
	corrupt_meta(m1);
	CHECK_EQ(vdp_pool_open(m0, VDP_OPEN_RDONLY, &p), -EUCLEAN);
	CHECK(strstr(vdp_last_error(), "checksum mismatch") != NULL);
}

int main(void)
{
	struct vdp_create_opts o = {.name = "unit", .extent_shift = 16};
	const char *members[2] = {m0, m1};
	struct model f[NFILES];
	struct vdp_pool *p;

	if (!make_test_dir(dir))
		return 1;
	snprintf(m0, sizeof(m0), "%s/m0", dir);
	snprintf(m1, sizeof(m1), "%s/m1", dir);
	if (!make_member(m0, 48 << 20) || !make_member(m1, 48 << 20))
		return 1;
	CHECK_EQ(vdp_pool_create(members, 2, &o), 0);
	p = open_pool();
	for (int i = 0; i < NFILES; i++) {
		struct vdp_attr a;
		char name[16];

		snprintf(name, sizeof(name), "f%d.img", i);
		CHECK_EQ(vdp_create(p, VDP_ROOT_INO, name, S_IFREG | 0600, 0, 0,
				    &a),
			 0);
		f[i].ino = a.ino;
		f[i].size = 0;
		f[i].data = calloc(1, MAXSZ + (1 << 20));
	}
	random_ops(&p, f, 3000);
	for (int i = 0; i < NFILES; i++)
		verify(p, &f[i]);
	check_clean(p);
	for (int i = 0; i < NFILES; i++) {
		char name[16];

		snprintf(name, sizeof(name), "f%d.img", i);
		CHECK_EQ(vdp_unlink(p, VDP_ROOT_INO, name), 0);
		vdp_forget(p, f[i].ino, 1);
		free(f[i].data);
	}
	CHECK_EQ(vdp_pool_close(p), 0);

	namespace_tests();
	kill9_test();
	stale_test();
	holes_test();
	enospc_test();

	p = open_pool();
	check_clean(p);
	vdp_pool_close(p);
	corrupt_test();
	remove_test_dir(dir);
	return check_done("test_store");
}
