/* SPDX-License-Identifier: MIT */
/*
 * seeds.c - the seed corpus, cut from the member images of a real pool:
 * its superblock slots, its trees block by block, its directory and xattr
 * blobs, and a few patch lists for the whole-pool target.  Each seed is in
 * the input format of its target (see the target's header comment).
 *
 * The images are trusted here (we just made them); nothing is validated.
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "format.h"
#include "seeds.h"
#include "vdpool.h"

#define MAX_TREE_BLOCKS 12 /* as fuzz_block.c */
#define BLOB_MAX (80u << 10)

struct src {
	const uint8_t *img;
	uint64_t span;
	const struct vdp_dsuper *sb; /* the newest slot */
};

static int write_seed(const char *dir, const char *target, const char *name,
		      const void *a, size_t alen, const void *b, size_t blen)
{
	char path[PATH_MAX];
	FILE *f;
	int r = 0;

	snprintf(path, sizeof(path), "%s/%s/%s", dir, target, name);
	f = fopen(path, "w");
	if (!f)
		return -errno;
	if (fwrite(a, 1, alen, f) != alen ||
	    (blen && fwrite(b, 1, blen, f) != blen))
		r = -EIO;
	if (fclose(f) != 0 && r == 0)
		r = -errno;
	if (r < 0)
		fprintf(stderr, "seeds: %s: %s\n", path, strerror(-r));
	return r;
}

static const uint8_t *block(const struct src *s, uint64_t addr)
{
	uint64_t off = VDP_HEADER_AREA + addr * VDP_BLOCK_SIZE;

	return addr && off + VDP_BLOCK_SIZE <= s->span ? s->img + off : NULL;
}

static const uint64_t *kids(const uint8_t *blk)
{
	return (const uint64_t *)(blk + sizeof(struct vdp_bhdr));
}

/* The blocks of the tree at ADDR, breadth-first, at most MAX. */
static size_t tree_blocks(const struct src *s, uint64_t addr,
			  const uint8_t **out, size_t max)
{
	size_t n = 0, at = 0;

	if (block(s, addr))
		out[n++] = block(s, addr);
	for (; at < n; at++) {
		const struct vdp_bhdr *h = (const struct vdp_bhdr *)out[at];

		if (h->level == 0)
			continue;
		for (unsigned i = 0; i < VDP_FANOUT && n < max; i++) {
			const uint8_t *b = block(s, le64toh(kids(out[at])[i]));

			if (b)
				out[n++] = b;
		}
	}
	return n;
}

/* A fuzz_block input: flags (tree kind), height, owner, the blocks. */
static int block_seed(const char *dir, const char *name, const struct src *s,
		      unsigned kind, const struct vdp_droot *root,
		      uint64_t owner)
{
	const uint8_t *b[MAX_TREE_BLOCKS];
	size_t n = tree_blocks(s, le64toh(root->addr), b, MAX_TREE_BLOCKS);
	uint8_t *buf = malloc(3 + n * VDP_BLOCK_SIZE);
	int r;

	if (!buf)
		return -ENOMEM;
	buf[0] = (uint8_t)(kind << 1);
	buf[1] = root->height;
	buf[2] = (uint8_t)owner;
	for (size_t i = 0; i < n; i++)
		memcpy(buf + 3 + i * VDP_BLOCK_SIZE, b[i], VDP_BLOCK_SIZE);
	r = write_seed(dir, "block", name, buf, 3 + n * VDP_BLOCK_SIZE, NULL,
		       0);
	free(buf);
	return r;
}

/* Copies the leaves of the blob tree at ADDR (LEVEL) into OUT at BASE. */
static void blob_leaves(const struct src *s, uint64_t addr, unsigned level,
			uint64_t base, uint8_t *out, uint64_t len)
{
	const uint8_t *b = block(s, addr);
	uint64_t span = 1;

	if (!b)
		return;
	if (level == 0) {
		uint64_t o = base * VDP_PAYLOAD;

		if (o < len)
			memcpy(out + o, b + sizeof(struct vdp_bhdr),
			       len - o < VDP_PAYLOAD ? len - o : VDP_PAYLOAD);
		return;
	}
	for (unsigned l = 1; l < level; l++)
		span *= VDP_FANOUT;
	for (unsigned i = 0; i < VDP_FANOUT; i++)
		if (kids(b)[i])
			blob_leaves(s, le64toh(kids(b)[i]), level - 1,
				    base + i * span, out, len);
}

/* The inode record of INO (inode tree of height <= 2), or NULL. */
static const struct vdp_dinode *inode(const struct src *s, uint64_t ino)
{
	const struct vdp_droot *r = &s->sb->inodes;
	uint64_t leaf = ino / VDP_INODES_PER_LEAF;
	const uint8_t *b = block(s, le64toh(r->addr));

	if (!b || r->height == 0 || r->height > 2)
		return NULL;
	if (r->height == 2)
		b = leaf < VDP_FANOUT ? block(s, le64toh(kids(b)[leaf])) : NULL;
	else if (leaf)
		return NULL;
	if (!b)
		return NULL;
	return (const struct vdp_dinode *)(b + sizeof(struct vdp_bhdr)) +
	       ino % VDP_INODES_PER_LEAF;
}

/* The bytes of a blob (a directory's entries or an inode's xattrs). */
static uint8_t *blob(const struct src *s, const struct vdp_droot *root,
		     uint64_t len, uint64_t *outlen)
{
	uint8_t *b;

	if (len > BLOB_MAX)
		len = BLOB_MAX;
	b = calloc(1, len ? len : 1);
	if (b && root->height)
		blob_leaves(s, le64toh(root->addr), root->height - 1u, 0, b,
			    len);
	*outlen = len;
	return b;
}

/* The inode number NAME has in the directory blob D, or 0. */
static uint64_t lookup(const uint8_t *d, uint64_t len, const char *name)
{
	for (uint64_t o = 0; o + VDP_DIRENT_FIXED <= len;) {
		uint64_t ino;
		uint16_t l;

		memcpy(&ino, d + o, 8);
		memcpy(&l, d + o + 16, 2);
		l = le16toh(l);
		if (l == strlen(name) &&
		    memcmp(d + o + VDP_DIRENT_FIXED, name, l) == 0)
			return le64toh(ino);
		o += VDP_DIRENT_FIXED + l;
	}
	return 0;
}

/* A fuzz_namespace input: flags, u16 length of the directory blob of DIR,
 * that blob, the xattr blob of XINO. */
static int ns_seed(const char *dir, const char *name, const struct src *s,
		   uint64_t dino, uint64_t xino)
{
	const struct vdp_dinode *di = inode(s, dino), *xi = inode(s, xino);
	uint64_t dl = 0, xl = 0;
	uint8_t *d, *x, hdr[3];
	int r = -ENOMEM;

	if (!di || !xi)
		return -ENOENT;
	d = blob(s, &di->data, le64toh(di->size), &dl);
	x = blob(s, &xi->xattr, le64toh(xi->xattr_len), &xl);
	if (d && x) {
		uint8_t *both = malloc(dl + xl + 1);

		if (dl > UINT16_MAX)
			dl = UINT16_MAX;
		hdr[0] = 0;
		hdr[1] = (uint8_t)dl;
		hdr[2] = (uint8_t)(dl >> 8);
		if (both) {
			memcpy(both, d, dl);
			memcpy(both + dl, x, xl);
			r = write_seed(dir, "namespace", name, hdr, 3, both,
				       dl + xl);
			free(both);
		}
	}
	free(d);
	free(x);
	return r;
}

/* Superblock seeds: flag byte (the slot), the slot without its zero tail. */
static int sb_seeds(const char *dir, const uint8_t *const img[2])
{
	int r = 0;

	for (unsigned m = 0; m < 2 && r == 0; m++)
		for (unsigned k = 0; k < VDP_SB_SLOTS && r == 0; k++) {
			const uint8_t *sl = img[m] + k * VDP_SB_SIZE;
			size_t len = VDP_SB_SIZE;
			uint8_t flag = (uint8_t)k;
			char name[32];

			while (len > 0 && sl[len - 1] == 0)
				len--;
			snprintf(name, sizeof(name), "member%u-slot%u", m, k);
			r = write_seed(dir, "superblock", name, &flag, 1, sl,
				       len);
		}
	return r;
}

/* A fuzz_pool patch: SEL, 24-bit OFF, then LEN bytes of DATA. */
static size_t patch(uint8_t *out, uint8_t sel, uint32_t off, const void *data,
		    uint8_t len)
{
	out[0] = sel;
	out[1] = (uint8_t)off;
	out[2] = (uint8_t)(off >> 8);
	out[3] = (uint8_t)(off >> 16);
	out[4] = len;
	memcpy(out + 5, data, len);
	return 5u + len;
}

static int pool_seeds(const char *dir, const struct src *s)
{
	static const uint8_t one = 1, name[4] = {'f', 'u', 'z', 'Z'};
	uint64_t nblk = (s->span - VDP_HEADER_AREA) / VDP_BLOCK_SIZE;
	uint8_t in[64];
	size_t n;
	int r;

	in[0] = 0; /* clean, through member 0 and through member 1 */
	r = write_seed(dir, "pool", "clean", in, 1, NULL, 0);
	in[0] = 4;
	if (r == 0)
		r = write_seed(dir, "pool", "clean-via1", in, 1, NULL, 0);
	/* A resealed superblock with another name (member 0, slot of the
	 * newest commit), and one bit of member 1's copy of block 1. */
	in[0] = 1;
	n = 1 + patch(in + 1, 0,
		      (uint32_t)(le64toh(s->sb->h.txid) % 2 * VDP_SB_SIZE +
				 offsetof(struct vdp_dsuper, name)),
		      name, sizeof(name));
	if (r == 0)
		r = write_seed(dir, "pool", "sb-name", in, n, NULL, 0);
	in[0] = 2;
	n = 1 + patch(in + 1, 1 | 1 << 1, VDP_BLOCK_SIZE + 100, &one, 1);
	if (r == 0)
		r = write_seed(dir, "pool", "flip-copy1", in, n, NULL, 0);
	/* Each metadata block in use: one resealed XOR in its payload. */
	for (uint64_t b = 1; b < nblk && r == 0; b++) {
		char fn[32];

		if (!block(s, b) ||
		    le64toh(((const struct vdp_bhdr *)block(s, b))->magic) !=
			    VDP_MAGIC_META)
			continue;
		in[0] = 1 | 2;
		n = 1 + patch(in + 1, 1 << 1,
			      (uint32_t)(b * VDP_BLOCK_SIZE + 64 + b % 512),
			      &one, 1);
		snprintf(fn, sizeof(fn), "reseal-block%03llu",
			 (unsigned long long)b);
		r = write_seed(dir, "pool", fn, in, n, NULL, 0);
	}
	return r;
}

int fuzz_write_seeds(const char *dir, const uint8_t *const img[2],
		     uint64_t span)
{
	const struct vdp_dsuper *s0 = (const void *)img[0];
	const struct vdp_dsuper *s1 = (const void *)(img[0] + VDP_SB_SIZE);
	struct src s = {.img = img[0], .span = span};
	const struct vdp_dinode *root, *a;
	uint64_t rl = 0, ino_a, ino_vm, ino_many;
	uint8_t *rb;
	int r;

	s.sb = le64toh(s1->h.txid) > le64toh(s0->h.txid) ? s1 : s0;
	root = inode(&s, VDP_ROOT_INO);
	if (!root)
		return -ENOENT;
	rb = blob(&s, &root->data, le64toh(root->size), &rl);
	if (!rb)
		return -ENOMEM;
	ino_a = lookup(rb, rl, "a.img");
	ino_vm = lookup(rb, rl, "vm");
	ino_many = lookup(rb, rl, "many");
	free(rb);
	a = inode(&s, ino_a);
	if (!a || !ino_vm || !ino_many)
		return -ENOENT;

	r = sb_seeds(dir, img);
	if (r == 0)
		r = block_seed(dir, "inodes", &s, 0, &s.sb->inodes, 0);
	if (r == 0)
		r = block_seed(dir, "map-2-levels", &s, 1, &a->data, ino_a);
	if (r == 0)
		r = block_seed(dir, "refcounts", &s, 2, &s.sb->refc, 0);
	if (r == 0)
		r = block_seed(dir, "xattr-blob", &s, 3, &a->xattr, ino_a);
	if (r == 0)
		r = block_seed(dir, "dir-blob", &s, 3,
			       &inode(&s, ino_many)->data, ino_many);
	if (r == 0)
		r = ns_seed(dir, "root-and-xattrs", &s, VDP_ROOT_INO, ino_a);
	if (r == 0)
		r = ns_seed(dir, "vm", &s, ino_vm, ino_vm);
	if (r == 0)
		r = ns_seed(dir, "many", &s, ino_many, VDP_ROOT_INO);
	if (r == 0)
		r = pool_seeds(dir, &s);
	return r;
}
