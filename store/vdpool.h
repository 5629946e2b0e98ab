/* SPDX-License-Identifier: MIT */
/*
 * vdpool.h - the pool library's public interface, the only header fs/ and
 * tools/ include.
 *
 * A pool joins members (files, block devices, later LVs and iSCSI LUNs) into
 * one space of extents and keeps a namespace of directories and virtual
 * disks in it.  Everything here is FUSE-agnostic: the daemon translates
 * requests into these calls and never touches the on-disk format.
 *
 * Conventions: functions return 0 (or a byte count) on success and -errno
 * on failure.  Where a failure deserves a sentence for the user (a member
 * missing, a checksum wrong), the store writes one line naming the thing and
 * the reason into a thread-local buffer that vdp_last_error() returns; the
 * caller prints it once.  All calls on an open pool are thread-safe.
 */
#ifndef VDPOOL_H
#define VDPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#define VDP_ROOT_INO 1
#define VDP_NAME_MAX 255
#define VDP_POOL_NAME_MAX 63
#define VDP_MAX_MEMBERS 64
#define VDP_DEFAULT_EXTENT_SHIFT 20 /* 1 MiB, see docs/format.md */
#define VDP_MIN_EXTENT_SHIFT 16
#define VDP_MAX_EXTENT_SHIFT 26

struct vdp_pool; /* opaque */

/* The last error sentence set on this thread ("" if none). */
const char *vdp_last_error(void);

/* ---- pool life cycle -------------------------------------------------- */

struct vdp_create_opts {
	const char *name;      /* pool name, [A-Za-z0-9._-]{1,63} */
	unsigned extent_shift; /* 0 = VDP_DEFAULT_EXTENT_SHIFT */
	bool force;	       /* overwrite existing signatures */
};

/*
 * vdp_pool_create: format MEMBERS as a new, empty pool.  Refuses (and
 * writes nothing) if a member is missing, too small, listed twice, or
 * carries a vdpool or another signature and !force.  On success every
 * member holds a durable superblock and the pool is registered under its
 * name (see vdp_registry_dir()).
 */
int vdp_pool_create(const char *const *members, size_t n,
		    const struct vdp_create_opts *opts);

enum {
	VDP_OPEN_RDONLY = 1 << 0, /* never write; for status and check */
	VDP_OPEN_NOLOCK = 1 << 1, /* do not take the members' locks */
};

/*
 * vdp_pool_open: open the pool named by SPEC, which is a pool name from
 * the registry or the path of any member.  Finds every member, picks the
 * newest valid superblock and loads the metadata.  Takes a lock on every
 * member: exclusive, or shared when RDONLY; -EBUSY if a writer (a mounted
 * daemon) holds it, with vdp_last_error() naming the member.  NOLOCK skips
 * the locks (status of a mounted pool's last commit).  A writable open
 * starts the periodic commit timer, records members that grew at their
 * new size and resumes a removal that was under way (see
 * vdp_pool_remove_member).
 */
int vdp_pool_open(const char *spec, unsigned flags, struct vdp_pool **out);

/* vdp_pool_close: stop a running removal or balance (a removal resumes at
 * the next writable open), commit (unless read-only), close members, free.
 * NULL ok. */
int vdp_pool_close(struct vdp_pool *p);

/*
 * vdp_pool_commit: make every change and every acknowledged write so far
 * durable on every member, and what the changes freed allocatable again
 * (discarded on its members).  Concurrent callers share one commit.  A commit
 * that fails on a member's write or flush returns that error and changes
 * nothing on disk that the last commit needs; the next commit tries again
 * with everything.  Only when a commit cannot even be built (no memory)
 * does the pool refuse further changes (-EIO) until reopened.
 */
int vdp_pool_commit(struct vdp_pool *p);

/* Directory where pool names map to member paths; $VDPOOL_REGISTRY or
 * /etc/vdpool/pools. */
const char *vdp_registry_dir(void);

/* ---- status ------------------------------------------------------------ */

struct vdp_statfs {
	uint64_t extent_size;
	uint64_t total_extents; /* data extents in all members */
	uint64_t free_extents;	/* allocatable now, or freed and allocatable
				 * once committed and discarded */
	uint64_t inodes;	/* inodes in use */
};
void vdp_pool_statfs(struct vdp_pool *p, struct vdp_statfs *st);

/*
 * vdp_pool_status: a report of the pool (name, uuid, txid, extent size,
 * capacity/used/free, each member with kind, path, size, used extents and
 * whether it holds metadata, each disk with path, size and allocation, and
 * I/O counters) as human-readable text or as one JSON object, into a
 * malloc'ed NUL-terminated string *OUT that the caller frees.  The daemon
 * serves the same text through the root's xattrs "trusted.vdpool.status"
 * and "trusted.vdpool.status.json", so the CLI can show a mounted pool.
 */
int vdp_pool_status(struct vdp_pool *p, bool json, char **out);

/*
 * vdp_pool_problems: one line through FN for each thing that went wrong
 * since the pool was opened: a member's failed reads, writes and flushes
 * and the metadata copies found bad on it (read from the other copy, and
 * rewritten unless read-only), the last failed commit, a pool that
 * refuses changes.  Nothing when all is well.  Status shows the same.
 */
void vdp_pool_problems(struct vdp_pool *p,
		       void (*fn)(void *ctx, const char *line), void *ctx);

/* Commit at least every MS milliseconds while changes are pending
 * (default 2000; 0 disables the timer). */
void vdp_pool_set_commit_interval(struct vdp_pool *p, unsigned ms);

/* Extents a commit frees go back to their members (discard) on a thread
 * of the pool's after the commit (the default), or with SYNC inside the
 * commit: for tests that replay a pool's member I/O exactly. */
void vdp_pool_set_discard_sync(struct vdp_pool *p, bool sync);

/*
 * vdp_pool_check: read-only verification of every member's size and
 * superblock slots, every copy of every metadata block (checksum,
 * location, txid), every tree, the namespace and the extent reference
 * counts against the maps.  Prints one line per problem through
 * REPORT, and lines starting "note: " for what is not a problem (a
 * superblock slot as a crash leaves it).  Returns the number of problems
 * found (0 = clean) or -errno if the check itself could not run.
 */
int vdp_pool_check(struct vdp_pool *p,
		   void (*report)(void *ctx, const char *line), void *ctx);

/*
 * vdp_pool_repair: opens the pool named by SPEC exclusively (-EBUSY with
 * vdp_last_error() set when it is mounted) and mends what check finds,
 * from what is redundant in the pool: bad metadata copies and superblock
 * slots are rewritten from good ones, a truncated file member is extended
 * back to its recorded size, a metadata block with no good copy is cut out
 * (the bytes of a disk it mapped then read as zeros; the reference counts
 * it held are recounted), reference counts and link counts are recounted,
 * leaked extents freed, and inodes left without a name linked into
 * /lost+found.  Everything goes into one commit.  REPORT gets one line per
 * change, each line only once the change is durable; PROGRESS, if not
 * NULL, a short name of each phase as it starts.  Returns the number of
 * changes (0: nothing to repair; then nothing was written) or -errno,
 * with vdp_last_error() saying why: -EUCLEAN when the damage is beyond
 * what repair mends (no member has a valid superblock, a block device
 * member is shorter than recorded, inode 1 is not a directory).
 */
int vdp_pool_repair(const char *spec,
		    void (*report)(void *ctx, const char *line),
		    void (*progress)(void *ctx, const char *what), void *ctx);

/* ---- growing and shrinking ----------------------------------------------
 * docs/architecture.md, "Growing and shrinking".  Each call below that
 * changes the member table commits before it returns; on failure
 * vdp_last_error() has one line naming the member and the reason. */

/* The pool's UUID as text (36 characters and a NUL). */
void vdp_pool_uuid(struct vdp_pool *p, char out[37]);

/*
 * vdp_pool_add_member: format the file or block device at PATH as a new
 * member and record it in every member's superblock in one commit; its
 * extents can be allocated as soon as this returns.  Refuses (writing
 * nothing) a member of this or another pool, a device with another
 * signature unless FORCE, one too small for 16 extents, a 65th member.
 */
int vdp_pool_add_member(struct vdp_pool *p, const char *path, bool force);

/*
 * vdp_pool_remove_member: start removing MEMBER (its path): mark it
 * leaving (committed: no new extent goes there, and a crash or restart
 * resumes the removal at the next open), then, on a thread of the pool's,
 * move its metadata copies and extents to the other members while the
 * disks stay in use, and finally drop it from the pool and wipe its
 * superblocks.  Returns once the removal has started; vdp_pool_task shows
 * its progress.  Refuses the last member and a member whose data the
 * others cannot hold; -EBUSY while another task runs.
 */
int vdp_pool_remove_member(struct vdp_pool *p, const char *member);

/* vdp_pool_set_move_rate: removals and balances move at most BYTES_PER_S
 * (0: as fast as they can, the default), to leave the disks' I/O room;
 * for the tasks that start after the call and the running one.  A
 * removal's rate is kept in the leaving member's record (from the next
 * commit), and a removal resumed at open keeps to it. */
void vdp_pool_set_move_rate(struct vdp_pool *p, uint64_t bytes_per_s);

/* vdp_pool_balance: start moving extents, on the pool's thread, from the
 * fullest members to the emptiest until every member is filled to within
 * an extent or two of the pool's average (by fraction of its size). */
int vdp_pool_balance(struct vdp_pool *p);

/* vdp_pool_cancel_task: stop the running removal (the member becomes
 * active again and keeps what was not moved yet; what was moved stays
 * moved) or balance, and wait for it.  Also reactivates a member left
 * leaving by a removal that failed.  -ENOENT if there is nothing to
 * cancel. */
int vdp_pool_cancel_task(struct vdp_pool *p);

/* vdp_pool_resize_member: record MEMBER at its current size (a file or
 * LUN or LV that grew); *OLD and *NEW get the sizes in bytes.  A writable
 * open does the same for every member. */
int vdp_pool_resize_member(struct vdp_pool *p, const char *member,
			   uint64_t *old_size, uint64_t *new_size);

enum vdp_task_kind { VDP_TASK_NONE, VDP_TASK_REMOVE, VDP_TASK_BALANCE };
enum vdp_task_state {
	VDP_TASK_IDLE,
	VDP_TASK_RUNNING,
	VDP_TASK_DONE,
	VDP_TASK_FAILED,
	VDP_TASK_CANCELLED,
	VDP_TASK_STOPPED, /* paused by close; resumed by the next open */
};

struct vdp_task_info {
	int kind, state;      /* enum vdp_task_kind, enum vdp_task_state */
	char member[128];     /* a removal's member */
	uint64_t done, total; /* extents moved and to move (an estimate) */
	int64_t eta_s;	      /* seconds left, -1 unknown */
	uint64_t gen;	      /* increases with each task started */
	uint64_t rate;	      /* bytes moved per second at most, 0 no limit */
	char error[256];      /* why it failed */
};

/* The pool's current or last task.  Thread-safe. */
void vdp_pool_task(struct vdp_pool *p, struct vdp_task_info *out);

/* ---- namespace ---------------------------------------------------------- */

struct vdp_attr {
	uint64_t ino;
	uint64_t size;
	uint64_t blocks; /* 512-byte units actually allocated */
	uint32_t mode;	 /* S_IFREG or S_IFDIR | permission bits */
	uint32_t uid, gid, nlink;
	struct timespec atime, mtime, ctime;
	uint32_t blksize; /* preferred I/O size: the extent size */
};

/* Bits for vdp_setattr's TO_SET. */
enum {
	VDP_SET_MODE = 1 << 0,
	VDP_SET_UID = 1 << 1,
	VDP_SET_GID = 1 << 2,
	VDP_SET_SIZE = 1 << 3,
	VDP_SET_ATIME = 1 << 4,
	VDP_SET_MTIME = 1 << 5,
	VDP_SET_ATIME_NOW = 1 << 6,
	VDP_SET_MTIME_NOW = 1 << 7,
	VDP_SET_CTIME = 1 << 8,
};

/* Rename flags, values as in <linux/fs.h>. */
#define VDP_RENAME_NOREPLACE (1 << 0)
#define VDP_RENAME_EXCHANGE (1 << 1)

/*
 * Lookup counting: every call below that fills a vdp_attr for a name
 * (lookup, create, mkdir) takes one reference on the inode; the caller
 * drops them with vdp_forget.  An unlinked file lives until its last
 * reference is dropped (the FUSE lookup-count contract).
 */
int vdp_lookup(struct vdp_pool *p, uint64_t parent, const char *name,
	       struct vdp_attr *out);
void vdp_forget(struct vdp_pool *p, uint64_t ino, uint64_t n);
int vdp_getattr(struct vdp_pool *p, uint64_t ino, struct vdp_attr *out);
/* Changes the attributes in TO_SET; SIZE truncates or extends (thin). */
int vdp_setattr(struct vdp_pool *p, uint64_t ino, const struct vdp_attr *in,
		unsigned to_set, struct vdp_attr *out);
/* Creates a regular file (S_IFREG) or a directory (S_IFDIR) per MODE. */
int vdp_create(struct vdp_pool *p, uint64_t parent, const char *name,
	       uint32_t mode, uint32_t uid, uint32_t gid, struct vdp_attr *out);
int vdp_unlink(struct vdp_pool *p, uint64_t parent, const char *name);
int vdp_rmdir(struct vdp_pool *p, uint64_t parent, const char *name);
int vdp_rename(struct vdp_pool *p, uint64_t parent, const char *name,
	       uint64_t newparent, const char *newname, unsigned flags);

/*
 * vdp_readdir: calls FN for each entry of directory INO whose cookie is
 * >= COOKIE, in cookie order, until FN returns non-zero.  NEXT is the
 * cookie that resumes after this entry.  "." and ".." are included (cookies
 * 0 and 1).  Entries added or removed during a listing are seen or not, but
 * no other entry is skipped or repeated.  ATTR is filled for every entry.
 */
typedef int (*vdp_dirent_fn)(void *ctx, const char *name,
			     const struct vdp_attr *attr, uint64_t next);
int vdp_readdir(struct vdp_pool *p, uint64_t ino, uint64_t cookie,
		vdp_dirent_fn fn, void *ctx);

/* user.* extended attributes (other namespaces: -EOPNOTSUPP).  get/list
 * with SIZE 0 return the size needed; too small a buffer gives -ERANGE. */
int vdp_setxattr(struct vdp_pool *p, uint64_t ino, const char *name,
		 const void *value, size_t size, int flags);
ssize_t vdp_getxattr(struct vdp_pool *p, uint64_t ino, const char *name,
		     void *buf, size_t size);
ssize_t vdp_listxattr(struct vdp_pool *p, uint64_t ino, char *buf, size_t size);
int vdp_removexattr(struct vdp_pool *p, uint64_t ino, const char *name);

/* ---- disk data ---------------------------------------------------------- */

/* Reads up to LEN bytes at OFF; short only at end of file.  Holes read as
 * zeros.  Any alignment. */
ssize_t vdp_read(struct vdp_pool *p, uint64_t ino, void *buf, size_t len,
		 uint64_t off);
/* Writes LEN bytes at OFF (any alignment), allocating extents for holes
 * and extending the size.  A whole extent (written at once or in pieces)
 * whose bytes equal those of an extent read whole a moment ago shares that
 * extent instead (write-side sharing, docs/clones.md).  Returns LEN, or
 * fewer bytes when the pool ran full part way, or -ENOSPC when not even
 * the first byte fitted. */
ssize_t vdp_write(struct vdp_pool *p, uint64_t ino, const void *buf, size_t len,
		  uint64_t off);
/*
 * vdp_read_start / vdp_write_start: vdp_read and vdp_write without waiting
 * for the member, for the common case: LEN bytes inside one allocated
 * extent, within the size; LEN, OFF and a read's BUF multiples of
 * VDP_AIO_ALIGN, a write at most VDP_AIO_WRITE_MAX bytes;
 * for a write an extent not shared with another disk, and not the whole
 * extent while write-side sharing goes on; on a member that can (a file
 * or block device).
 * Return true when started: DONE(ARG, R) then runs once (R = LEN, or
 * -errno) on the calling thread, inside a later vdp_aio_poll.
 * False when the request is not such a case (or the disk is busy being
 * changed): nothing was done, the caller uses vdp_read or vdp_write.
 * A read's BUF stays the caller's until DONE; a write copies BUF before
 * it returns (the copy costs less than holding a 1 MiB receive buffer).
 */
#define VDP_AIO_ALIGN 4096u
#define VDP_AIO_WRITE_MAX (128u << 10)
/* The member I/O of the calls above is gathered and may not reach the
 * members before the starting thread calls vdp_aio_poll, which submits it
 * and runs the done callbacks of what completed; with WAIT, until none of
 * the thread's I/O is left.  Returns how many callbacks ran.  A thread
 * with I/O in flight (vdp_aio_inflight) polls before it waits for anything
 * else (another request, a lock, I/O of its own): its completions are
 * delivered to it alone, and it must wait on vdp_aio_fd beside what else
 * it waits for.  Calls that change a disk's map wait for the I/O in flight
 * on that disk, the caller's own included (vdp_aio_poll with WAIT first).
 */
unsigned vdp_aio_poll(bool wait);
unsigned vdp_aio_inflight(void);
/* The descriptor that is readable (POLLIN) when the calling thread has
 * completions to poll: one to wait on beside others.  Makes the thread's
 * ring if it has none; -errno when it cannot (the thread's reads and
 * writes are then never started). */
int vdp_aio_fd(void);
typedef void vdp_done_fn(void *arg, ssize_t r);
bool vdp_read_start(struct vdp_pool *p, uint64_t ino, void *buf, size_t len,
		    uint64_t off, vdp_done_fn *done, void *arg);
bool vdp_write_start(struct vdp_pool *p, uint64_t ino, const void *buf,
		     size_t len, uint64_t off, vdp_done_fn *done, void *arg);
/* fallocate(2) MODE: 0, KEEP_SIZE, PUNCH_HOLE|KEEP_SIZE, ZERO_RANGE
 * [|KEEP_SIZE]; others -EOPNOTSUPP. */
int vdp_fallocate(struct vdp_pool *p, uint64_t ino, int mode, uint64_t off,
		  uint64_t len);
/*
 * vdp_copy_range: copy_file_range(2) within the pool: LEN bytes at OFF_IN
 * of INO_IN to OFF_OUT of INO_OUT (clipped at the source's end of file).
 * Whole extents that line up are shared, not copied: writes to either disk
 * later copy a shared extent first (copy-on-write).  Holes stay holes.
 * One call is one transaction: its map, reference count and size changes
 * are made together, so no commit holds part of them.  When the offsets
 * line up inside an extent the whole range is done, however long (a call
 * again for a part of it finds it done and changes nothing); otherwise at
 * most 1 GiB.  Returns the bytes copied (fewer when the pool ran full part
 * way, or that 1 GiB), or -errno: -EINVAL for overlapping ranges of one
 * disk.
 */
ssize_t vdp_copy_range(struct vdp_pool *p, uint64_t ino_in, uint64_t off_in,
		       uint64_t ino_out, uint64_t off_out, size_t len);
/* SEEK_DATA / SEEK_HOLE per lseek(2); -ENXIO past the end. */
int64_t vdp_lseek(struct vdp_pool *p, uint64_t ino, uint64_t off, int whence);
/* fsync: every acknowledged write and every change is durable on every
 * member on return (a pool commit).  Also ends INO's write-side sharing
 * streams (a flush ends a copy).  DATASYNC: timestamps may stay behind
 * (fdatasync(2) semantics); size and allocation never do. */
int vdp_fsync(struct vdp_pool *p, uint64_t ino, bool datasync);

#endif
