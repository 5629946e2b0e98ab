/* SPDX-License-Identifier: MIT */
/*
 * fuzz_namespace.c - libFuzzer target: bytes -> a directory blob and an
 * xattr blob, decoded by ns_load as at open, then used through the public
 * calls (readdir, lookup, getattr, list/get xattrs, check and, on a
 * writable pool, changes in memory).
 *
 * The blobs need no checksums: the harness stores them, sealed, as the
 * blob trees of the root directory of a small pool on an in-memory member,
 * beside an inode table of files and directories (inodes 2..NINODES-1)
 * that the entries can name.
 *
 * Input: flags, u16 LE length of the directory blob, the directory blob,
 * then the xattr blob (the rest, up to 64 KiB).  Flags: bit 0 writable
 * pool (orphans deleted at load; the changes below are made), bits 1-2 the
 * directory size the inode records (0 exact, 1 +1, 2 -1, 3 one leaf more),
 * bits 3-4 likewise for the xattr length.  FUZZ_DEBUG=1 in the
 * environment prints why ns_load refused an input.
 */
#include <endian.h>
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>

#include "fuzz.h"

#define NINODES (8 * VDP_INODES_PER_LEAF) /* 248: one interior, 8 leaves */
#define XATTR_MAX 65536

enum { F_RW = 1 };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t next_blk;

static uint8_t *new_blk(void)
{
	static uint8_t b[VDP_BLOCK_SIZE] __attribute__((aligned(4096)));

	memset(b, 0, sizeof(b));
	return b;
}

static void store(struct vdp_pool *p, uint8_t *blk, uint64_t addr, uint8_t tree,
		  uint64_t owner, uint8_t level)
{
	fuzz_meta_seal(p, blk, addr, tree, owner, level);
	if (fuzz_mem_put(p->members[0].m, addr * VDP_BLOCK_SIZE, blk,
			 VDP_BLOCK_SIZE) < 0)
		abort();
}

/* Stores LEN bytes of B as a blob tree of OWNER; sets *ROOT. */
static void put_blob(struct vdp_pool *p, const uint8_t *b, size_t len,
		     uint64_t owner, struct vdp_droot *root)
{
	size_t nleaves = (len + VDP_PAYLOAD - 1) / VDP_PAYLOAD;
	uint64_t first = next_blk + (nleaves > 1);
	uint8_t *blk;

	memset(root, 0, sizeof(*root));
	if (!len)
		return;
	for (size_t i = 0; i < nleaves; i++) {
		size_t n = len - i * VDP_PAYLOAD;

		blk = new_blk();
		memcpy(blk + sizeof(struct vdp_bhdr), b + i * VDP_PAYLOAD,
		       n < VDP_PAYLOAD ? n : VDP_PAYLOAD);
		store(p, blk, first + i, VDP_TREE_BLOB, owner, 0);
	}
	root->addr = htole64(next_blk);
	root->height = nleaves > 1 ? 2 : 1;
	if (nleaves > 1) {
		uint64_t *k;

		blk = new_blk();
		k = (uint64_t *)(blk + sizeof(struct vdp_bhdr));
		for (size_t i = 0; i < nleaves; i++)
			k[i] = htole64(first + i);
		store(p, blk, next_blk, VDP_TREE_BLOB, owner, 1);
	}
	next_blk = first + nleaves;
}

static uint64_t adjust(uint64_t len, unsigned how)
{
	switch (how & 3) {
	case 1:
		return len + 1;
	case 2:
		return len ? len - 1 : 0;
	case 3:
		return len + VDP_PAYLOAD;
	default:
		return len;
	}
}

/* The inode table: the root with the fuzzed blobs, then files and
 * directories with nothing in them.  Returns the root of the tree. */
static void put_inodes(struct vdp_pool *p, uint8_t flags,
		       const struct vdp_droot *dir, uint64_t dlen,
		       const struct vdp_droot *xattr, uint64_t xlen,
		       struct vdp_droot *root)
{
	const unsigned nleaves = NINODES / VDP_INODES_PER_LEAF;
	uint64_t top = next_blk, *k;
	uint8_t *blk;

	next_blk += 1 + nleaves;
	for (unsigned l = 0; l < nleaves; l++) {
		struct vdp_dinode *di;

		blk = new_blk();
		di = (struct vdp_dinode *)(blk + sizeof(struct vdp_bhdr));
		for (unsigned i = 0; i < VDP_INODES_PER_LEAF; i++) {
			uint64_t ino = l * VDP_INODES_PER_LEAF + i;
			bool isdir = ino == VDP_ROOT_INO || ino % 5 == 3;

			if (ino == 0)
				continue;
			di[i].mode = htole32(isdir ? S_IFDIR | 0755
						   : S_IFREG | 0644);
			di[i].nlink = htole32(isdir ? 2 : 1);
			di[i].parent = htole64(isdir ? VDP_ROOT_INO : 0);
			di[i].size = htole64(isdir ? 0 : ino << 12);
			if (ino == VDP_ROOT_INO) {
				di[i].size = htole64(adjust(dlen, flags >> 1));
				di[i].data = *dir;
				di[i].xattr = *xattr;
				di[i].xattr_len =
					htole64(adjust(xlen, flags >> 3));
			}
		}
		store(p, blk, top + 1 + l, VDP_TREE_INODES, 0, 0);
	}
	blk = new_blk();
	k = (uint64_t *)(blk + sizeof(struct vdp_bhdr));
	for (unsigned l = 0; l < nleaves; l++)
		k[l] = htole64(top + 1 + l);
	store(p, blk, top, VDP_TREE_INODES, 0, 1);
	root->addr = top;
	root->height = 2;
}

static void report(void *ctx, const char *line)
{
	(void)ctx;
	FUZZ_ASSERT(line && line[0]);
}

struct seen {
	char names[64][VDP_NAME_MAX + 1];
	unsigned n, calls;
};

static int on_entry(void *ctx, const char *name, const struct vdp_attr *attr,
		    uint64_t next)
{
	struct seen *s = ctx;
	size_t l = strlen(name);

	(void)attr;
	FUZZ_ASSERT(l >= 1 && l <= VDP_NAME_MAX && !strchr(name, '/'));
	FUZZ_ASSERT(next > 0);
	/* A 64 KiB blob holds fewer than 3500 entries: more means readdir
	 * repeats itself. */
	FUZZ_ASSERT(++s->calls < 10000);
	if (s->n < 64)
		memcpy(s->names[s->n++], name, l + 1);
	return 0;
}

static void use_xattrs(struct vdp_pool *p, uint64_t ino, bool rw)
{
	static char list[XATTR_MAX + 512], val[XATTR_MAX];
	ssize_t n = vdp_listxattr(p, ino, NULL, 0);
	ssize_t m;

	if (n < 0)
		return;
	m = vdp_listxattr(p, ino, list, sizeof(list));
	if (m < 0)
		return;
	FUZZ_ASSERT(m == n);
	for (ssize_t o = 0; o < m;) {
		size_t l = strnlen(list + o, (size_t)(m - o));
		ssize_t v;

		FUZZ_ASSERT(o + (ssize_t)l < m);
		v = vdp_getxattr(p, ino, list + o, NULL, 0);
		if (v >= 0)
			FUZZ_ASSERT(vdp_getxattr(p, ino, list + o, val,
						 sizeof(val)) == v);
		if (rw && o == 0)
			(void)vdp_removexattr(p, ino, list + o);
		o += (ssize_t)l + 1;
	}
	if (rw) {
		(void)vdp_setxattr(p, ino, "user.fuzz", "value", 5, 0);
		(void)vdp_setxattr(p, ino, "user.fuzz", "v", 1, XATTR_REPLACE);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t uuid[16] = "vdpool-fuzz-ns!";
	struct vdp_droot droot, xroot, iroot;
	struct vdp_member *m;
	struct vdp_pool *p;
	struct seen seen = {.n = 0, .calls = 0};
	struct vdp_attr a;
	size_t dlen, xlen;
	uint8_t flags;
	bool rw;
	int r;

	if (size < 3)
		return 0;
	flags = data[0];
	rw = flags & F_RW;
	dlen = data[1] | (size_t)data[2] << 8;
	data += 3, size -= 3;
	if (dlen > size)
		dlen = size;
	xlen = size - dlen;
	if (xlen > XATTR_MAX)
		xlen = XATTR_MAX;

	m = fuzz_mem_new(0);
	p = m ? fuzz_pool_new(m, uuid, 7, 1024, !rw) : NULL;
	if (!p)
		abort();
	next_blk = 1;
	put_blob(p, data, dlen, VDP_ROOT_INO, &droot);
	put_blob(p, data + dlen, xlen, VDP_ROOT_INO, &xroot);
	put_inodes(p, flags, &droot, dlen, &xroot, xlen, &iroot);
	p->sb_inodes = iroot;

	r = rtree_load(p, &p->inodes, &p->sb_inodes);
	FUZZ_ASSERT(r == 0); /* the harness's own blocks */
	r = ns_load(p);
	if (r < 0) {
		if (getenv("FUZZ_DEBUG"))
			fprintf(stderr, "ns_load: %s\n", vdp_last_error());
		FUZZ_ASSERT(*vdp_last_error() || r == -ENOMEM);
		goto out;
	}
	FUZZ_ASSERT(vdp_pool_check(p, report, NULL) >= 0);
	(void)vdp_readdir(p, VDP_ROOT_INO, 0, on_entry, &seen);
	for (unsigned i = 0; i < seen.n; i++) {
		if (vdp_lookup(p, VDP_ROOT_INO, seen.names[i], &a) < 0)
			continue;
		FUZZ_ASSERT(vdp_getattr(p, a.ino, &a) == 0);
		vdp_forget(p, a.ino, 1);
	}
	use_xattrs(p, VDP_ROOT_INO, rw);
	if (rw && seen.n > 2) {
		/* Changes on top of what was decoded (memory only). */
		if (vdp_create(p, VDP_ROOT_INO, "new", S_IFREG | 0644, 0, 0,
			       &a) == 0) {
			/* A new inode never shares a live one's number,
			 * whatever next_ino the superblock said (here 2). */
			unsigned same = 0;

			for (size_t b = 0; b < p->vtab_size; b++)
				for (struct vnode *v = p->vtab[b]; v;
				     v = v->hnext)
					same += v->ino == a.ino;
			FUZZ_ASSERT(same == 1);
		}
		(void)vdp_rename(p, VDP_ROOT_INO, seen.names[2], VDP_ROOT_INO,
				 "renamed", 0);
		(void)vdp_unlink(p, VDP_ROOT_INO, "renamed");
		(void)vdp_rmdir(p, VDP_ROOT_INO, "renamed");
		seen.calls = 0;
		(void)vdp_readdir(p, VDP_ROOT_INO, 0, on_entry, &seen);
	}
out:
	pool_free(p);
	return 0;
}
