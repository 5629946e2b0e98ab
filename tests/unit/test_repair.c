/* SPDX-License-Identifier: MIT */
/*
 * test_repair.c - vdp_pool_repair on pools damaged through the store's
 * own structures, for what the end-to-end test (tests/e2e/repair.sh)
 * cannot reach cheaply: a lost leaf of the inode tree (its disks gone,
 * their names and extents with them), the whole inode tree lost (the root
 * made anew), a lost root directory blob (a subtree moved whole into
 * /lost+found), a one-member pool (one copy: any bad block is a loss), a
 * pool opened elsewhere (-EBUSY), and which bad superblock slots check
 * calls problems and which it notes as a crash's leftovers.  After each
 * repair: check is clean, a second repair changes nothing, and what
 * survived reads back as written.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "fsck.h"
#include "internal.h"
#include "vdpool.h"

#define NF 40 /* files: more than the 31 inodes of one inode-tree leaf */
#define EXT (64u << 10)

static char dir[64], m[3][96], out[1 << 16];

static void collect(void *ctx, const char *line)
{
	size_t n = strlen(out);

	(void)ctx;
	fprintf(stderr, "repair: %s\n", line);
	snprintf(out + n, sizeof(out) - n, "%s\n", line);
}

static void report(void *ctx, const char *line)
{
	++*(int *)ctx;
	fprintf(stderr, "check: %s\n", line);
}

static struct vdp_pool *open_pool(unsigned flags)
{
	struct vdp_pool *p = NULL;
	int r = vdp_pool_open(m[0], flags, &p);

	if (r < 0) {
		fprintf(stderr, "open: %s\n", vdp_last_error());
		exit(1);
	}
	return p;
}

static void make_pool(unsigned n)
{
	struct vdp_create_opts o = {
		.name = "rep", .extent_shift = 16, .force = true};
	const char *mem[3] = {m[0], m[1], m[2]};

	for (unsigned i = 0; i < n; i++) {
		int fd = open(m[i], O_CREAT | O_TRUNC | O_RDWR, 0600);

		if (fd < 0 || ftruncate(fd, 40 << 20) < 0)
			exit(1);
		close(fd);
	}
	CHECK_EQ(vdp_pool_create(mem, n, &o), 0);
}

static void fill(uint8_t *b, size_t n, unsigned tag)
{
	for (size_t i = 0; i < n; i++)
		b[i] = (uint8_t)(tag * 131 + i / 7);
}

/* NF files "fNN" (inode NN + 2) in the root, each one extent of its own
 * pattern, and /a/b/x.img (inodes 42, 43, 44). */
static void populate(void)
{
	static uint8_t b[EXT];
	struct vdp_pool *p = open_pool(0);
	struct vdp_attr a, d1, d2;

	for (unsigned i = 0; i < NF; i++) {
		char name[16];

		snprintf(name, sizeof(name), "f%02u", i);
		CHECK_EQ(vdp_create(p, VDP_ROOT_INO, name, S_IFREG | 0600, 0, 0,
				    &a),
			 0);
		fill(b, EXT, i);
		CHECK_EQ(vdp_write(p, a.ino, b, EXT, 0), EXT);
	}
	CHECK_EQ(vdp_create(p, VDP_ROOT_INO, "a", S_IFDIR | 0700, 0, 0, &d1),
		 0);
	CHECK_EQ(vdp_create(p, d1.ino, "b", S_IFDIR | 0700, 0, 0, &d2), 0);
	CHECK_EQ(vdp_create(p, d2.ino, "x.img", S_IFREG | 0600, 0, 0, &a), 0);
	fill(b, EXT, 99);
	CHECK_EQ(vdp_write(p, a.ino, b, EXT, 0), EXT);
	CHECK_EQ(vdp_pool_close(p), 0);
}

/* Whether file PATH (relative to the root) holds one extent of TAG. */
static bool holds(struct vdp_pool *p, const char *path, unsigned tag)
{
	static uint8_t b[EXT], want[EXT];
	char buf[256], *save = NULL, *c;
	uint64_t ino = VDP_ROOT_INO;
	struct vdp_attr a;

	snprintf(buf, sizeof(buf), "%s", path);
	for (c = strtok_r(buf, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
		if (vdp_lookup(p, ino, c, &a) < 0)
			return false;
		ino = a.ino;
	}
	fill(want, EXT, tag);
	return vdp_read(p, ino, b, EXT, 0) == EXT && !memcmp(b, want, EXT);
}

/* Flips a byte in every copy of the block of tree T that holds KEY (its
 * root if KEY is UINT64_MAX), of an open pool. */
static void corrupt(struct vdp_pool *p, const struct rtree *t, uint64_t key)
{
	const struct rnode *n = t->root;
	uint8_t blk[4096];

	while (key != UINT64_MAX && n->level > 0) {
		uint64_t s = t->per_leaf;

		for (unsigned l = 1; l < n->level; l++)
			s *= VDP_FANOUT;
		n = n->kids[key / s];
		key %= s;
	}
	for (unsigned c = 0; c < p->nchunks; c++) {
		const struct vdp_dchunk *ch = &p->chunks[c];

		if (n->addr < ch->lstart || n->addr - ch->lstart >= ch->nblocks)
			continue;
		for (unsigned k = 0; k < ch->ncopies; k++) {
			int fd =
				open(p->members[ch->member[k]].m->path, O_RDWR);
			off_t off = (off_t)(ch->offset[k] +
					    (n->addr - ch->lstart) * 4096);

			CHECK(fd >= 0 && pread(fd, blk, 4096, off) == 4096);
			blk[1000] ^= 0x5a;
			CHECK(pwrite(fd, blk, 4096, off) == 4096);
			close(fd);
		}
	}
}

/* Repairs; then check is clean and a second repair changes nothing. */
static int repair(void)
{
	struct vdp_pool *p;
	int r, problems = 0;

	out[0] = 0;
	r = vdp_pool_repair(m[0], collect, NULL, NULL);
	if (r < 0)
		fprintf(stderr, "repair: %s\n", vdp_last_error());
	p = open_pool(VDP_OPEN_RDONLY);
	CHECK_EQ(vdp_pool_check(p, report, &problems), 0);
	CHECK_EQ(problems, 0);
	vdp_pool_close(p);
	CHECK_EQ(vdp_pool_repair(m[0], collect, NULL, NULL), 0);
	return r;
}

static void inode_leaf_lost(void)
{
	struct vdp_pool *p;
	int kept = 0, gone = 0;

	make_pool(2);
	populate();
	p = open_pool(VDP_OPEN_RDONLY);
	corrupt(p, &p->inodes, 40); /* inodes 31-61 */
	vdp_pool_close(p);
	CHECK(repair() > 0);
	CHECK(strstr(out, "inode tree: metadata block") != NULL);
	CHECK(strstr(out, "inodes 31-") != NULL);
	CHECK(strstr(out, "named a lost inode; removed") != NULL);
	CHECK(strstr(out, "no disk maps them; freed") != NULL);
	p = open_pool(VDP_OPEN_RDONLY);
	for (unsigned i = 0; i < NF; i++) {
		char name[16];

		snprintf(name, sizeof(name), "f%02u", i);
		/* The root is inode 1, fNN is inode NN + 2. */
		if (i + 2 < 31) {
			kept++;
			CHECK(holds(p, name, i));
		} else {
			struct vdp_attr a;

			gone++;
			CHECK_EQ(vdp_lookup(p, VDP_ROOT_INO, name, &a),
				 -ENOENT);
		}
	}
	CHECK(kept > 0 && gone > 0);
	vdp_pool_close(p);
}

static void inode_tree_lost(void)
{
	struct vdp_statfs st;
	struct vdp_pool *p;
	struct vdp_attr a;

	make_pool(2);
	populate();
	p = open_pool(VDP_OPEN_RDONLY);
	corrupt(p, &p->inodes, UINT64_MAX);
	vdp_pool_close(p);
	CHECK(repair() > 0);
	CHECK(strstr(out, "the root directory (inode 1) was lost; made anew") !=
	      NULL);
	p = open_pool(VDP_OPEN_RDONLY);
	vdp_pool_statfs(p, &st);
	CHECK_EQ(st.inodes, 1);
	CHECK_EQ(st.free_extents, st.total_extents);
	CHECK_EQ(vdp_lookup(p, VDP_ROOT_INO, "f00", &a), -ENOENT);
	vdp_pool_close(p);
}

static void root_dir_lost(void)
{
	struct vdp_pool *p;
	struct vdp_attr a;
	char path[64];

	make_pool(2);
	populate();
	p = open_pool(VDP_OPEN_RDONLY);
	corrupt(p, &vnode_get(p, VDP_ROOT_INO)->data, UINT64_MAX);
	vdp_pool_close(p);
	CHECK(repair() > 0);
	CHECK(strstr(out, "directory /lost+found created") != NULL);
	/* /a goes over whole: one line for it, none for b or x.img. */
	CHECK(strstr(out, "directory inode 42 had no name") != NULL);
	CHECK(strstr(out, "directory inode 43 had no name") == NULL);
	CHECK(strstr(out, "inode 44 had no name") == NULL);
	p = open_pool(VDP_OPEN_RDONLY);
	for (unsigned i = 0; i < NF; i++) {
		snprintf(path, sizeof(path), "lost+found/#%u", i + 2);
		CHECK(holds(p, path, i));
	}
	CHECK(holds(p, "lost+found/#42/b/x.img", 99));
	CHECK_EQ(vdp_lookup(p, VDP_ROOT_INO, "f00", &a), -ENOENT);
	vdp_pool_close(p);
}

static void one_copy(void)
{
	static uint8_t b[EXT];
	struct vdp_pool *p;
	ssize_t n;

	make_pool(1);
	populate();
	p = open_pool(VDP_OPEN_RDONLY);
	corrupt(p, &vnode_get(p, 5)->data, UINT64_MAX); /* f03 */
	vdp_pool_close(p);
	CHECK(repair() > 0);
	CHECK(strstr(out, "disk /f03: metadata block") != NULL);
	p = open_pool(VDP_OPEN_RDONLY);
	CHECK(holds(p, "f02", 2));
	CHECK(holds(p, "f04", 4));
	n = vdp_read(p, 5, b, EXT, 0);
	CHECK_EQ(n, EXT);
	for (unsigned i = 0; i < EXT; i++)
		if (b[i]) {
			CHECK(!"f03 reads zeros");
			break;
		}
	vdp_pool_close(p);
}

static void busy(void)
{
	struct vdp_pool *p;

	make_pool(2);
	p = open_pool(0);
	CHECK_EQ(vdp_pool_repair(m[0], collect, NULL, NULL), -EBUSY);
	CHECK(strstr(vdp_last_error(), "in use") != NULL);
	vdp_pool_close(p);
	CHECK_EQ(vdp_pool_repair(m[0], collect, NULL, NULL), 0);
}

/* Zeros slot SLOT (0, 1; 2: the newest, 3: the older) of member I. */
static void zero_slot(struct vdp_pool *p, unsigned i, unsigned slot)
{
	static uint8_t z[VDP_SB_SIZE];
	int fd = open(m[i], O_RDWR);

	if (slot >= 2)
		slot = (unsigned)((p->txid + (slot == 3)) % 2);
	CHECK(fd >= 0 && pwrite(fd, z, sizeof(z), slot * VDP_SB_SIZE) ==
				 (ssize_t)sizeof(z));
	close(fd);
}

/* Which slots fsck_super_states calls bad ('B') or notes ('n'), per member
 * and slot, as "..|.B|n." */
static void judge(char *s)
{
	struct sb_state st[VDP_MAX_MEMBERS];
	struct vdp_pool *p = open_pool(VDP_OPEN_RDONLY);

	CHECK_EQ(fsck_super_states(p, st), 0);
	for (unsigned i = 0; i < p->nmembers; i++) {
		for (unsigned k = 0; k < 2; k++)
			*s++ = st[i].bad[k] ? 'B' : st[i].note[k] ? 'n' : '.';
		*s++ = '|';
	}
	s[-1] = 0;
	vdp_pool_close(p);
}

static void super_slots(void)
{
	static const struct {
		unsigned member, slot; /* slot 2 newest, 3 older */
		unsigned member2, slot2;
		bool problem;
	} cases[] = {
		{2, 2, 9, 0, false}, /* commit stopped at the last member */
		{1, 2, 9, 0, true},  /* member 2 has it: not a crash */
		{1, 2, 2, 2, false}, /* commit stopped at member 1 */
		{0, 3, 9, 0, false}, /* the next commit stopped at member 0 */
		{1, 3, 2, 3, false}, /* T-1 stopped at member 1, T went on */
		{0, 3, 2, 3, true},  {0, 2, 9, 0, true},
	};
	char got[32];

	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		struct vdp_pool *p;

		struct vdp_attr a;

		make_pool(3);
		populate();
		p = open_pool(0); /* one more commit: txid 3 */
		CHECK_EQ(vdp_create(p, VDP_ROOT_INO, "more", S_IFREG | 0600, 0,
				    0, &a),
			 0);
		vdp_pool_close(p);
		p = open_pool(VDP_OPEN_RDONLY);
		zero_slot(p, cases[c].member, cases[c].slot);
		if (cases[c].member2 != 9)
			zero_slot(p, cases[c].member2, cases[c].slot2);
		vdp_pool_close(p);
		judge(got);
		fprintf(stderr, "case %zu: %s\n", c, got);
		CHECK_EQ(strchr(got, 'B') != NULL, cases[c].problem);
		CHECK_EQ(strchr(got, 'n') != NULL, !cases[c].problem);
		CHECK(repair() > 0);
		CHECK(strstr(out, "superblock slot") != NULL);
		judge(got);
		CHECK(!strcmp(got, "..|..|.."));
	}
}

/* A member added by commit T - 1 got that commit's superblock before the
 * old members did: T - 1 stopped at member 1 and T went through is what a
 * crash leaves (crashtest --reshape found check calling it a problem), and
 * so is member 0 alone lacking it (T + 1 stopped there); the added member
 * lacking T - 1 is not. */
static void super_slots_added(void)
{
	static const struct {
		unsigned member;
		bool problem;
	} cases[] = {{1, false}, {0, false}, {2, true}};
	char got[32];

	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		struct vdp_pool *p;
		struct vdp_attr a;

		make_pool(2);
		CHECK(make_member(m[2], 40 << 20));
		p = open_pool(0);
		CHECK_EQ(vdp_pool_add_member(p, m[2], false), 0);
		CHECK_EQ(vdp_create(p, VDP_ROOT_INO, "more", S_IFREG | 0600, 0,
				    0, &a),
			 0);
		vdp_pool_close(p);
		p = open_pool(VDP_OPEN_RDONLY);
		CHECK_EQ(le64toh(p->members[2].d.added_txid), p->txid - 1);
		zero_slot(p, cases[c].member, 3);
		vdp_pool_close(p);
		judge(got);
		fprintf(stderr, "added, case %zu: %s\n", c, got);
		CHECK_EQ(strchr(got, 'B') != NULL, cases[c].problem);
		CHECK_EQ(strchr(got, 'n') != NULL, !cases[c].problem);
	}
}

int main(void)
{
	char reg[96];

	snprintf(dir, sizeof(dir), "/var/tmp/vdp-repair-XXXXXX");
	if (!mkdtemp(dir))
		return 1;
	for (int i = 0; i < 3; i++)
		snprintf(m[i], sizeof(m[i]), "%s/m%d", dir, i);
	snprintf(reg, sizeof(reg), "%s/reg", dir);
	setenv("VDPOOL_REGISTRY", reg, 1);

	inode_leaf_lost();
	inode_tree_lost();
	root_dir_lost();
	one_copy();
	busy();
	super_slots();
	super_slots_added();

	remove_test_dir(dir);
	return check_done("test_repair");
}
