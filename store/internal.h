/* SPDX-License-Identifier: MIT */
/*
 * internal.h - what the store's own files share: the pool object, the
 * in-memory inode and directory entry, and the seams between allocator,
 * metadata I/O, commit and namespace.  Never included outside store/.
 *
 * Locking, from outer to inner:
 *   vnode->io (rwlock)  data I/O of a disk takes it shared; anything that
 *                       changes the disk's extent map takes it exclusive.
 *   p->meta_lock        every in-memory metadata structure: vnodes,
 *                       dentries, trees, allocators, pending lists.  Held
 *                       for memory work only, never across member I/O.
 *   p->commit_lock      one commit at a time (see commit.c).
 *   share.c's locks     innermost; nothing taken under them, no I/O.
 */
#ifndef VDP_INTERNAL_H
#define VDP_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "format.h"
#include "member.h"
#include "rtree.h"
#include "vdpool.h"

/* Clears the thread's vdp_last_error() sentence, at the start of each
 * public call that can set one. */
void vdp_clear_error(void);

/* Sets the thread's vdp_last_error() sentence. */
void vdp_set_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A growable array of u64 (pending frees). */
struct u64vec {
	uint64_t *v;
	size_t n, cap;
};
int u64vec_push(struct u64vec *a, uint64_t x);

/* A member as the pool sees it. */
struct pmember {
	struct vdp_member *m;
	struct vdp_dmember d; /* its record, host byte order */
	uint64_t *used;	      /* bit per extent: referenced or pending free */
	uint64_t nfree;	      /* clear bits */
	uint64_t cursor;      /* next-fit search start */
	atomic_bool written;  /* written since its last flush */
	/* Bit per extent: shared since the pool opened and not yet freed; the
	 * last commit may still map it twice, so it is never written in
	 * place again (extent_was_shared). */
	uint64_t *unshared;
	/* Health, shown by status: failed I/O by kind, metadata copies
	 * found bad, and the last error (under p->err_lock). */
	atomic_uint_fast64_t err_read, err_write, err_flush, bad_copies;
	char last_error[200];
};

/* What member_error counts. */
enum io_kind { IO_READ, IO_WRITE, IO_FLUSH };

struct dentry {
	struct dentry *hnext;	    /* p->dtab chain, keyed (parent, name) */
	struct dentry *prev, *next; /* the directory's entries, cookie order */
	uint64_t parent, ino, cookie;
	char name[];
};

struct vnode {
	struct vnode *hnext; /* p->vtab chain */
	uint64_t ino;
	struct vdp_dinode d; /* host byte order; roots are filled at commit */
	struct rtree data;   /* files: VDP_TREE_MAP; dirs: dirent blob */
	struct rtree xblob;  /* xattr blob */
	struct dentry *dhead, *dtail; /* dirs */
	uint64_t next_cookie;
	uint8_t *xattrs; /* serialized user.* xattrs, d.xattr_len bytes */
	uint64_t nlookup;
	bool dirty;	/* record changed */
	bool dir_dirty; /* directory entries changed */
	bool xdirty;	/* xattrs changed */
	bool listed;	/* on p->dirty */
	/* Directories: the last ns_walk_files that entered it. */
	uint64_t walk_gen;
	/* Held shared by reads and writes that leave the map as it is,
	 * exclusive by whatever changes it or moves data (vnode_lock_excl).
	 * AIO counts the I/O started under it shared and still running
	 * (vdp_read_start, vdp_write_start): an exclusive holder waits for
	 * it to reach zero. */
	pthread_rwlock_t io;
	atomic_uint aio;
	/* share.c: this disk's read and write streams (made on first use),
	 * and how many are gathering an extent now. */
	_Atomic(struct share_streams *) shs;
	atomic_uint shs_active;
};

struct qbuf {
	uint64_t addr;
	void *blk; /* VDP_BLOCK_SIZE, sealed */
};

/* The pool's one background task, a removal or a balance (reshape.c).
 * Fields under p->task_lock except STOP. */
struct reshape_task {
	pthread_t thread;
	bool joinable;	  /* a thread to join */
	atomic_bool stop; /* cancel or close: stop at the next extent */
	bool cancel;	  /* stop means cancel (the member becomes active) */
	int kind, state;  /* enum vdp_task_kind, enum vdp_task_state */
	unsigned member;  /* a removal's member index */
	uint64_t done, total, gen, start_ms, start_done;
	uint64_t rate; /* bytes per second moved at most, 0 = no limit */
	char path[128];
	char error[256];
};

struct vdp_pool {
	uint8_t uuid[16];
	uint64_t seed;
	char name[VDP_POOL_NAME_MAX + 1];
	unsigned extent_shift;
	uint64_t extent_size;
	uint64_t create_time;
	bool rdonly;
	unsigned nmembers;
	struct pmember members[VDP_MAX_MEMBERS];
	unsigned nchunks;
	struct vdp_dchunk chunks[VDP_MAX_CHUNKS]; /* host byte order */

	pthread_mutex_t meta_lock;
	uint64_t txid; /* last durable commit */
	uint64_t next_ino;
	struct rtree inodes, refc;
	uint64_t meta_blocks; /* logical metadata blocks in all chunks */
	uint64_t *meta_used;
	uint64_t meta_nfree, meta_cursor;
	struct vnode **vtab;
	size_t vtab_size, nvnodes;
	struct dentry **dtab;
	size_t dtab_size, ndentries;
	struct vnode **dirty;
	size_t ndirty, dirty_cap;
	/* ns_walk_files calls so far. */
	uint64_t walk_gen;
	bool dirty_lost;    /* a vnode could not be listed: rescan all */
	bool changed;	    /* something for the next commit */
	bool times_changed; /* only timestamps (fdatasync may skip them) */
	struct u64vec pend_ext, pend_meta; /* freed in the open transaction */
	size_t releasing; /* freed by the running commit, usable after it */
	struct qbuf *q;	  /* blocks of the commit being built */
	size_t nq, qcap;
	uint64_t build_txid;
	/* Roots of the last commit: loaded at open, set by each commit. */
	struct vdp_droot sb_inodes, sb_refc;
	uint64_t sb_next_ino;
	bool failed; /* a commit could not be built: refuse changes */
	/* Some extent is (or was, since open) shared by two map entries:
	 * writes must then check refcounts and copy a shared extent first. */
	atomic_bool shared;
	/* share.c: extents read whole lately (made on first use). */
	_Atomic(struct share *) share;
	pthread_mutex_t err_lock; /* innermost: the members' last_error */
	/* 1 + index of a member being added: its superblock is written
	 * first by the next commit (pool_write_super); 0 = none. */
	unsigned super_first;
	pthread_mutex_t task_lock; /* the background task's fields */
	struct reshape_task task;
	char commit_error[200]; /* why the last commit failed, "" if ok */

	pthread_mutex_t commit_lock;
	pthread_cond_t commit_cv;
	bool committing, stopping, want_times;
	uint64_t tickets, done_ticket;
	int done_result;
	unsigned interval_ms;
	bool timer_started;
	pthread_t timer;
	pthread_cond_t timer_cv; /* wakes the timer: stop, new interval */
	uint64_t last_commit_ms; /* CLOCK_MONOTONIC of the last full commit */
	/* The discarder (commit.c).  Under meta_lock: extents freed by
	 * durable commits wait in DISCARD for it; DISCARD_HELD counts them
	 * with the batch it is discarding, until they go to the allocator.
	 * DISCARD_CV wakes it and those who wait for it. */
	pthread_t discarder;
	bool discarder_started, discarder_stopping, discard_sync;
	struct u64vec discard;
	size_t discard_held;
	pthread_cond_t discard_cv;

	atomic_uint_fast64_t n_reads, n_writes, b_read, b_written, n_commits,
		n_errors;
};

/* pool.c */
/* A pool object with its locks and empty trees, and its release (members
 * closed, memory freed; nothing written).  NULL on ENOMEM. */
struct vdp_pool *pool_alloc(void);
void pool_free(struct vdp_pool *p);
/* What open does with superblock slot image S (VDP_SB_SIZE bytes) read
 * from slot SLOT: verify it, then load its fields into P.  No I/O; for
 * the fuzz targets.  0, or -errno with the reason in WHY. */
int pool_super_decode(struct vdp_pool *p, const struct vdp_dsuper *s,
		      unsigned slot, char *why, size_t wl);
int pool_meta_read(struct vdp_pool *p, uint64_t addr, void *blk, uint8_t tree,
		   uint64_t owner, int level);
/* The checks of a verified block's header pool_meta_read makes: written
 * by a committed transaction, of tree TREE, OWNER and LEVEL.  0, or
 * -EUCLEAN with the reason in WHY. */
int pool_meta_header_check(const struct vdp_pool *p, const void *blk,
			   uint8_t tree, uint64_t owner, int level, char *why,
			   size_t wl);
int pool_write_super(struct vdp_pool *p, uint64_t txid);
/* Writes and flushes superblock slot TXID % 2 of member MI only. */
int pool_write_super_one(struct vdp_pool *p, unsigned mi, uint64_t txid);
/* vdp_pool_open flag for repair.c: exclusive, tries every registered
 * member for a valid superblock, accepts members without one, and loads
 * no trees (no namespace, no commit timer). */
#define POOL_OPEN_REPAIR (1u << 16)
int pool_meta_write(struct vdp_pool *p, uint64_t addr, const void *blk);
void pool_member_offset(const struct vdp_pool *p, uint64_t pid,
			struct pmember **pm, uint64_t *off);
/* Runs FN for each member whose bit is set in MASK, all at once (a thread
 * each beyond the first), so that a commit waits for the slowest member
 * rather than for their sum.  Returns the first member's error, with its
 * sentence in vdp_last_error(). */
int pool_each_member(struct vdp_pool *p, uint64_t mask,
		     int (*fn)(struct vdp_pool *p, unsigned i, void *ctx),
		     void *ctx);
/* Counts a failed I/O of KIND on PM (R = -errno), remembers it for status
 * and sets vdp_last_error() to "member PATH: WHAT failed: reason".  Any
 * lock may be held.  Returns R. */
int member_error(struct vdp_pool *p, struct pmember *pm, enum io_kind kind,
		 const char *what, int r);

/* Whether copy K of metadata chunk C lies in its member's data area (an
 * add or a removal put it there; its extents are taken), whole and
 * aligned. */
bool chunk_in_data(const struct vdp_pool *p, const struct vdp_dchunk *c,
		   unsigned k);
/* The extents chunk C's copy takes in a data area, whole. */
uint64_t chunk_extents(const struct vdp_pool *p, const struct vdp_dchunk *c);
/* chunk_in_data, and then the extents [*FIRST, *FIRST + *N) of its member
 * that copy K takes. */
bool chunk_data_run(const struct vdp_pool *p, const struct vdp_dchunk *c,
		    unsigned k, uint64_t *first, uint64_t *n);
/* The incompat feature bits the pool's state needs (format.h). */
uint64_t pool_incompat(const struct vdp_pool *p);
/* What reshape.c needs of pool.c: the newest valid superblock of M, the
 * signature check of create (-EEXIST with a sentence), and rewriting the
 * registry entry with the current members. */
int pool_super_read(struct vdp_member *m, struct vdp_dsuper *s, char *why,
		    size_t wl);
int pool_check_signature(struct vdp_member *m, bool force);
int pool_register(const struct vdp_pool *p);

/* reshape.c */
/* At a writable open, before alloc_init: members whose file or device
 * grew are recorded at their new size (committed by the next commit). */
void reshape_grow_at_open(struct vdp_pool *p);
/* At a writable open: restart the removal of a LEAVING member. */
void reshape_resume(struct vdp_pool *p);
/* At close: stop the task (a removal stays LEAVING, resumed next open). */
void reshape_stop(struct vdp_pool *p);

/* alloc.c */
int alloc_init(struct vdp_pool *p);
void alloc_free_all(struct vdp_pool *p);
int alloc_meta(struct vdp_pool *p, uint64_t *addr);
void free_meta(struct vdp_pool *p, uint64_t addr);
int mark_meta_used(struct vdp_pool *p, uint64_t addr);
/* alloc_extent takes a free extent for the caller, in memory only; the
 * caller either maps it and takes its first reference (extent_ref) in one
 * meta_lock hold, so no commit can record one without the other, or gives
 * it back with unalloc_extent. */
int alloc_extent(struct vdp_pool *p, uint64_t *pid);
/* alloc_extent on member MI only (any state but REMOVED); for balance. */
int alloc_extent_on(struct vdp_pool *p, unsigned mi, uint64_t *pid);
/* Makes room for member MI to have NEXTENTS (more than now) extents. */
int alloc_grow_member(struct vdp_pool *p, unsigned mi, uint64_t nextents);
/* The first run of N free extents on member MI, or -ENOSPC. */
int alloc_find_run(struct vdp_pool *p, unsigned mi, uint64_t n,
		   uint64_t *first);
/* Takes (TAKE) or gives back extents [first, first + n) of member MI. */
void alloc_mark_run(struct vdp_pool *p, unsigned mi, uint64_t first, uint64_t n,
		    bool take);
void unalloc_extent(struct vdp_pool *p, uint64_t pid);
int mark_extent_used(struct vdp_pool *p, uint64_t pid);
int extent_ref(struct vdp_pool *p, uint64_t pid);
int extent_unref(struct vdp_pool *p, uint64_t pid);
/* Whether extent PID was named twice at some time since the pool opened
 * (it may still be in the last commit): copy it before writing it. */
bool extent_was_shared(struct vdp_pool *p, uint64_t pid);
uint32_t extent_refcount(struct vdp_pool *p, uint64_t pid);
void release_pending(struct vdp_pool *p, struct u64vec *ext,
		     struct u64vec *meta);
bool pid_valid(const struct vdp_pool *p, uint64_t pid);

/* commit.c */
int pool_sync(struct vdp_pool *p, bool times);
/* Runs PREP while no commit runs or starts, then a full commit of
 * everything, PREP's changes included.  For changes to the member table
 * and the metadata chunks, which a running commit reads without
 * meta_lock.  Returns PREP's error (the commit still runs), else the
 * commit's. */
int pool_commit_with(struct vdp_pool *p,
		     int (*prep)(struct vdp_pool *p, void *ctx), void *ctx);
int commit_queue(struct vdp_pool *p, uint64_t addr, void *blk);
/* The commit's threads: the timer and the discarder; stopping them
 * discards what waits first. */
int commit_start_threads(struct vdp_pool *p);
void commit_stop_threads(struct vdp_pool *p);

/* namespace.c */
/* An inode record between host byte order (H) and disk order (D). */
void dinode_to_disk(const struct vdp_dinode *h, struct vdp_dinode *d);
void dinode_from_disk(const struct vdp_dinode *d, struct vdp_dinode *h);
/* Replaces the blob (directory, xattrs) in T by LEN bytes of B. */
int blob_write(struct vdp_pool *p, struct rtree *t, const uint8_t *b,
	       uint64_t len);
int ns_load(struct vdp_pool *p);
int ns_init_root(struct vdp_pool *p);
void ns_free(struct vdp_pool *p);
int ns_commit(struct vdp_pool *p);
struct vnode *vnode_get(struct vdp_pool *p, uint64_t ino);
void vnode_dirty(struct vdp_pool *p, struct vnode *v);
/* Like vnode_dirty for a change of timestamps only. */
void vnode_dirty_times(struct vdp_pool *p, struct vnode *v);
void vnode_touch(struct vnode *v, bool mtime, bool ctime);
/* Takes V's io lock exclusive, then waits for its asynchronous I/O to
 * end (vdisk.c).  Released with pthread_rwlock_unlock. */
void vnode_lock_excl(struct vnode *v);
/* Calls FN for every regular file reachable from the root, with its path
 * ("/dir/x.img"), in directory order, entering each directory once (by
 * its first name); stops at FN's non-zero.  Under meta_lock. */
typedef int (*ns_file_fn)(void *ctx, const char *path, struct vnode *v);
int ns_walk_files(struct vdp_pool *p, ns_file_fn fn, void *ctx);

/* share.c: write-side sharing, see there.  A candidate: the extent PID
 * that virtual extent VEXT of inode INO mapped when it was read whole, and
 * the key of the bytes read. */
struct share;
struct share_streams;
struct share_cand {
	uint64_t key, ino, vext, pid;
};
/* The key of N bytes of BUF at offset S inside an extent (both multiples
 * of 512); keys of the pieces of an extent add up to the extent's key. */
uint64_t share_key(const void *buf, uint64_t s, size_t n);
/* Tests: only these bits of a key count (all: UINT64_MAX). */
extern uint64_t share_key_mask;
/* Extents a piece completed: up to SHARE_DONE_MAX (virtual extent, key). */
#define SHARE_DONE_MAX 4
struct share_done {
	unsigned n;
	uint64_t vext[SHARE_DONE_MAX], key[SHARE_DONE_MAX];
};
/* Feeds N bytes of BUF at offset S of virtual extent VEXT of V, just read
 * (WRITE false, PID the extent read) or written (WRITE true, PID 0), to
 * V's streams.  *D gets the extents done: gathered whole, piece by piece,
 * each byte once; and, for writes, an extent whose end was written or that
 * the writer left for a later one, keyed as if what was not written were
 * zeros (writers skip zeros; only the bytes compare decides).  Cheap (one
 * atomic load) for small pieces of a disk with no stream.  Any lock
 * held but the share locks. */
void share_feed(struct vdp_pool *p, struct vnode *v, bool write, uint64_t vext,
		uint64_t pid, uint64_t s, const void *buf, size_t n,
		struct share_done *d);
/* Ends V's write streams of extents before BEFORE (UINT64_MAX: all; at a
 * flush, or when a whole extent after them is written), into *D, keyed as
 * share_feed keys an extent the writer left. */
void share_finish(struct vdp_pool *p, struct vnode *v, uint64_t before,
		  struct share_done *d);
/* Remembers a whole extent read: a candidate.  Any lock held. */
void share_add(struct vdp_pool *p, uint64_t key, uint64_t ino, uint64_t vext,
	       uint64_t pid);
/* The most recent candidate with KEY, if any; share_forget drops one that
 * turned out stale. */
bool share_find(struct vdp_pool *p, uint64_t key, struct share_cand *c);
void share_forget(struct vdp_pool *p, const struct share_cand *c);
/* Whether any candidate is fresh: writes are keyed only then. */
bool share_wanted(struct vdp_pool *p);
/* Counts a write that shared an extent, or whose key matched but whose
 * bytes differed; share_stats reads the counts. */
void share_count(struct vdp_pool *p, bool shared);
void share_stats(struct vdp_pool *p, uint64_t *shared, uint64_t *differ);
/* Frees the table (pool_free) and a disk's streams (its vnode's end). */
void share_free(struct share *t);
void share_vnode_free(struct vnode *v);

/* vdisk.c */
/* Copies extent FROM to extent TO through BUF (aligned, an extent long);
 * TO's member is marked written, for the next commit to flush. */
int vdisk_copy_extent(struct vdp_pool *p, uint64_t from, uint64_t to,
		      void *buf);
/* If virtual extent VEXT of V maps OLD, maps it to PID instead: one
 * reference more on PID, one less on OLD (which the caller copied to PID).
 * Returns 1 if switched, 0 if VEXT no longer maps OLD, or -errno.  Under
 * v->io exclusive and meta_lock. */
int vdisk_remap(struct vdp_pool *p, struct vnode *v, uint64_t vext,
		uint64_t old, uint64_t pid);
int vdisk_truncate(struct vdp_pool *p, struct vnode *v, uint64_t size);
void vdisk_release_all(struct vdp_pool *p, struct vnode *v);
uint64_t vdisk_max_size(const struct vdp_pool *p);

#endif
