/* SPDX-License-Identifier: MIT */
/*
 * format.h - the on-disk format, version 1.  docs/format.md is the prose
 * version of this file; the two change together.
 *
 * Every field is little-endian and fixed-width; every struct has explicit
 * padding and a static assert on its size.  Code outside store/ never
 * includes this file.
 */
#ifndef VDP_FORMAT_H
#define VDP_FORMAT_H

#include <assert.h>
#include <stdint.h>

#define VDP_FORMAT_VERSION 1
#define VDP_BLOCK_SIZE 4096u   /* metadata block */
#define VDP_SB_SIZE 16384u     /* one superblock slot */
#define VDP_SB_SLOTS 2	       /* at member offsets 0 and VDP_SB_SIZE */
#define VDP_HEADER_AREA 65536u /* superblocks + reserved, start of member */

#define VDP_MAGIC_SUPER 0x5245505553504456ull /* "VDPSUPER" */
#define VDP_MAGIC_META 0x004154454d504456ull  /* "VDPMETA\0" */

/* Feature bits: an old binary opens a pool with unknown COMPAT bits, opens
 * it read-only with unknown RO_COMPAT bits and refuses unknown INCOMPAT
 * bits.  RESHAPE: a member record is a tombstone (VDP_MS_REMOVED) or a
 * metadata chunk copy lies in a member's data area (put there by an add
 * or a removal); set while either is true, docs/format.md. */
#define VDP_FEAT_INCOMPAT_RESHAPE (1ull << 0)
#define VDP_FEAT_COMPAT_KNOWN 0ull
#define VDP_FEAT_RO_COMPAT_KNOWN 0ull
#define VDP_FEAT_INCOMPAT_KNOWN VDP_FEAT_INCOMPAT_RESHAPE

/* Header of every metadata block and of each superblock slot. */
struct vdp_bhdr {
	uint64_t magic;
	uint64_t csum;	  /* XXH3-64 of bytes [16, size), seed = pool seed */
	uint64_t blocknr; /* logical metadata block number, or slot number */
	uint64_t txid;	  /* transaction that wrote this block */
	uint8_t pool_uuid[16];
	uint64_t owner; /* inode number for per-inode trees, else 0 */
	uint16_t type;	/* enum vdp_btype */
	uint8_t tree;	/* enum vdp_tree */
	uint8_t level;	/* 0 = leaf */
	uint32_t pad;
};
static_assert(sizeof(struct vdp_bhdr) == 64, "bhdr size");

enum vdp_btype { VDP_BT_SUPER = 1, VDP_BT_NODE = 2, VDP_BT_LEAF = 3 };

/* Trees and their leaf values.  Interior nodes of every tree hold
 * VDP_FANOUT little-endian u64 child addresses (0 = empty subtree). */
enum vdp_tree {
	VDP_TREE_INODES = 1, /* key ino -> struct vdp_dinode */
	VDP_TREE_MAP = 2,    /* key virtual extent -> u64 pid (0 = hole) */
	VDP_TREE_REFC = 3,   /* key pid -> u32 reference count */
	VDP_TREE_BLOB = 4,   /* key block index -> 4032 raw bytes */
};
#define VDP_PAYLOAD (VDP_BLOCK_SIZE - sizeof(struct vdp_bhdr)) /* 4032 */
#define VDP_FANOUT (VDP_PAYLOAD / 8)			       /* 504 */

/* Root of a tree: addr 0 means empty.  HEIGHT is the number of levels. */
struct vdp_droot {
	uint64_t addr;
	uint8_t height;
	uint8_t pad[7];
};
static_assert(sizeof(struct vdp_droot) == 16, "droot size");

/*
 * A physical extent id ("pid"): bits 0-39 extent index in the member's
 * data area, bits 40-55 member index + 1, bits 56-63 flags (0 in v1).
 * pid 0 is "no extent".
 */
#define VDP_PID_IDX_BITS 40
#define VDP_PID_MAKE(m, i) ((((uint64_t)(m) + 1) << VDP_PID_IDX_BITS) | (i))
#define VDP_PID_MEMBER(pid)                                                    \
	((unsigned)(((pid) >> VDP_PID_IDX_BITS) & 0xffff) - 1)
#define VDP_PID_INDEX(pid) ((pid) & ((1ull << VDP_PID_IDX_BITS) - 1))
#define VDP_PID_FLAGS(pid) ((pid) >> 56)

/* Inode record: 31 per leaf of the inode tree; mode 0 = free slot. */
struct vdp_dinode {
	uint32_t mode, uid, gid, nlink;
	uint64_t size; /* files: bytes; directories: dirent blob bytes */
	int64_t atime_sec, mtime_sec, ctime_sec;
	uint32_t atime_nsec, mtime_nsec, ctime_nsec, flags;
	uint64_t parent;	/* directories: ino of "..", files: 0 */
	struct vdp_droot data;	/* files: VDP_TREE_MAP; dirs: dirent blob */
	struct vdp_droot xattr; /* blob of user.* xattrs */
	uint64_t xattr_len;
	uint64_t nalloc; /* files: mapped extents (for st_blocks) */
	uint8_t reserved[8];
};
static_assert(sizeof(struct vdp_dinode) == 128, "dinode size");
#define VDP_INODES_PER_LEAF (VDP_PAYLOAD / sizeof(struct vdp_dinode)) /* 31 */

/* Directory blob entry, packed byte stream: u64 ino, u64 cookie,
 * u16 namelen, u8 dtype (S_IFMT >> 12), then the name (no NUL). */
#define VDP_DIRENT_FIXED 19
/* Xattr blob entry: u16 namelen, u32 valuelen, name (no NUL), value. */
#define VDP_XATTR_FIXED 6

/* Metadata chunk: logical blocks [lstart, lstart + nblocks) live at
 * OFFSET[c] of member MEMBER[c] for each of NCOPIES copies. */
struct vdp_dchunk {
	uint64_t lstart, nblocks;
	uint16_t ncopies;
	uint16_t member[2];
	uint16_t pad;
	uint64_t offset[2];
};
static_assert(sizeof(struct vdp_dchunk) == 40, "dchunk size");
#define VDP_MAX_CHUNKS 16

enum vdp_member_kind {
	VDP_MK_FILE = 1,
	VDP_MK_BLOCK = 2,
	VDP_MK_ISCSI = 3,
	VDP_MK_LVM = 4, /* path: lvm:VG/LV?uuid=VGUUID/LVUUID (member_lvm.c) */
};

/* A member record's state.  LEAVING: no new extents go there and a
 * removal moves its extents and metadata copies away (resumed at open).
 * REMOVED: a tombstone that keeps the other members' indices (extent ids
 * name members by index); every other field is zero, nothing is opened,
 * and a later add may reuse the slot. */
enum vdp_member_state {
	VDP_MS_ACTIVE = 0,
	VDP_MS_LEAVING = 1,
	VDP_MS_REMOVED = 2,
};

struct vdp_dmember {
	uint8_t uuid[16];
	uint64_t size;	   /* bytes of the member usable by the pool */
	uint64_t data_off; /* byte offset of extent 0 */
	uint64_t nextents;
	uint32_t kind;	     /* enum vdp_member_kind */
	uint32_t state;	     /* enum vdp_member_state */
	char path[128];	     /* where it was last seen, NUL-terminated */
	uint64_t added_txid; /* the commit that added it; 0: create's */
	uint64_t move_rate;  /* leaving: its removal's bytes/s limit, 0 none */
};
static_assert(sizeof(struct vdp_dmember) == 192, "dmember size");

/* One superblock slot (16 KiB).  Slot txid % 2 is written by commit TXID
 * on every member; the newest valid slot on any member wins at mount. */
struct vdp_dsuper {
	struct vdp_bhdr h; /* blocknr = slot number */
	uint32_t version;
	uint32_t sb_size;
	uint64_t feat_compat, feat_ro_compat, feat_incompat;
	uint8_t member_uuid[16]; /* the member this copy sits on */
	uint32_t member_index;
	uint32_t extent_shift;
	uint32_t nmembers;
	uint32_t nchunks;
	char name[64];
	uint64_t create_time;
	uint64_t next_ino;
	struct vdp_droot inodes;
	struct vdp_droot refc;
	uint8_t reserved1[144];
	struct vdp_dchunk chunks[VDP_MAX_CHUNKS]; /* 640 bytes at 384 */
	uint8_t reserved2[4096 - 384 - 640];
	struct vdp_dmember members[64]; /* at 4096 */
};
static_assert(sizeof(struct vdp_dsuper) == VDP_SB_SIZE, "dsuper size");

#endif
