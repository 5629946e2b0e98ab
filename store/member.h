/* SPDX-License-Identifier: MIT */
/*
 * member.h - the one interface through which the pool reaches its members.
 *
 * A member kind (a file or block device, later an LVM volume or an iSCSI
 * LUN) implements struct vdp_member_ops in a file of its own; test layers
 * (fault injection, power loss) implement the same ops and wrap an inner
 * member.  Nothing above this interface knows which kind it talks to.
 */
#ifndef VDP_MEMBER_H
#define VDP_MEMBER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct vdp_member;

/* An asynchronous read or write of a member (vdp_member_submit). */
struct vdp_mio {
	struct vdp_member *member;
	bool write;
	void *buf; /* BUF, LEN and OFF aligned to member->align */
	size_t len;
	uint64_t off;
	/* Runs once when all LEN bytes moved (R = 0) or failed (-errno),
	 * in the submitting thread's vdp_aio_poll. */
	void (*done)(struct vdp_mio *io, int r);
	struct vdp_mio *next; /* aio_defer's list */
};

struct vdp_member_ops {
	const char *kind; /* "file", "block", ... */
	/* pread/pwrite: move all LEN bytes or fail with -errno.  BUF, LEN and
	 * OFF are multiples of m->align.  Safe to call from many threads. */
	int (*pread)(struct vdp_member *m, void *buf, size_t len, uint64_t off);
	int (*pwrite)(struct vdp_member *m, const void *buf, size_t len,
		      uint64_t off);
	/* submit: starts IO, as pread/pwrite would do it, and returns 0; or
	 * returns -errno and does nothing.  IO->done runs later, in this
	 * thread's vdp_aio_poll.  May be NULL. */
	int (*submit)(struct vdp_member *m, struct vdp_mio *io);
	/* flush: every write completed before the call is durable on return */
	int (*flush)(struct vdp_member *m);
	/* write_zeroes: the range reads as zeros afterwards (durable after the
	 * next flush).  Aligned to m->align. */
	int (*write_zeroes)(struct vdp_member *m, uint64_t off, uint64_t len);
	/* discard: the range's contents are no longer needed; may be NULL.
	 * Contents afterwards are unspecified. */
	int (*discard)(struct vdp_member *m, uint64_t off, uint64_t len);
	/* lock: an advisory lock that keeps a second pool instance off the
	 * member (exclusive for writers, shared for readers); -EBUSY when a
	 * conflicting lock is held.  Released by close.  May be NULL. */
	int (*lock)(struct vdp_member *m, bool exclusive);
	void (*close)(struct vdp_member *m);
};

struct vdp_member {
	const struct vdp_member_ops *ops;
	char *path;
	uint64_t size;	/* bytes */
	unsigned align; /* I/O alignment for pread/pwrite (power of two) */
	int kind;	/* enum vdp_member_kind */
	void *priv;	/* the kind's own state */
	/* What it occupies, for vdp_member_overlap; NULL: the file or
	 * device at PATH, whole.  Owned by the kind. */
	const struct vdp_member_id *id;
};

/* A device a member uses: a block device (DEV = st_rdev, INO 0) or a
 * file (st_dev, st_ino), WHOLE or only in part (a PV under an LV). */
struct vdp_dev_claim {
	uint64_t dev, ino;
	bool whole;
};

struct vdp_member_id {
	char lv_uuid[33]; /* the LVM LV it stands for, or "" */
	char lun[272];	  /* the iSCSI LUN it stands for, "IQN/LUN", or "" */
	unsigned ndevs;
	struct vdp_dev_claim *devs;
};

/*
 * vdp_member_overlap: whether A and B (open) reach the same storage: the
 * same file or device, the same LVM logical volume (by LV UUID, through
 * device-mapper or the PVs), the same iSCSI LUN (by target IQN and LUN,
 * whatever portal names it), or a device one uses whole that the other
 * uses in part (a PV under an LV).  Two LVs sharing a PV do not overlap.
 * On overlap writes the reason to WHY.
 */
bool vdp_member_overlap(const struct vdp_member *a, const struct vdp_member *b,
			char *why, size_t wl);

/* vdp_member_spec_names: whether SPEC, as a user types it, names the
 * member recorded as RECORD: the same string, or for LVM members the same
 * LV UUID or VG/LV names (lvm:VG/LV names lvm:VG/LV?uuid=...). */
bool vdp_member_spec_names(const char *record, const char *spec);

/* vdp_member_spec_is_path: SPEC names a file or device (not lvm:, not
 * iscsi://), so it can be resolved with realpath and probed by path. */
bool vdp_member_spec_is_path(const char *spec);

/*
 * vdp_member_open: open the member named by SPEC (a file or block-device
 * path, an iscsi:// URL or an lvm: spec).  RDONLY opens it read-only.  On
 * failure sets vdp_last_error() to a sentence naming SPEC and returns -errno.
 */
int vdp_member_open(const char *spec, bool rdonly, struct vdp_member **out);
void vdp_member_close(struct vdp_member *m);

/* The kinds' constructors (member_file.c, ...). */
int vdp_member_file_open(const char *path, bool rdonly,
			 struct vdp_member **out);
/* An LVM logical volume, lvm:VG/LV[?uuid=VGUUID/LVUUID][&pv=DEV,...]
 * [&dm=no] (member_lvm.c, docs/members/lvm.md); m->path is the canonical
 * spec with the UUIDs. */
int vdp_member_lvm_open(const char *spec, bool rdonly, struct vdp_member **out);
/* Whether libdevmapper reaches a kernel driver; if not, *WHY says why
 * (and the first call logged that the PVs are read instead). */
bool vdp_lvm_dm_available(const char **why);
/* An iSCSI LUN, iscsi://[user[%password]@]host[:port]/iqn/lun
 * (member_iscsi.c); m->path is the URL without the password. */
int vdp_member_iscsi_open(const char *url, bool rdonly,
			  struct vdp_member **out);
/* SPEC is an iscsi:// URL; and one with a password in it. */
bool vdp_member_is_iscsi(const char *spec);
bool vdp_member_url_has_password(const char *spec);

/*
 * vdp_member_read / vdp_member_write: any alignment of BUF, LEN and OFF.
 * Unaligned parts go through aligned bounce buffers; a write's partial
 * blocks are read, modified and written under a lock on that block, so
 * concurrent unaligned writes to one block do not lose each other.
 */
int vdp_member_read(struct vdp_member *m, void *buf, size_t len, uint64_t off);
int vdp_member_write(struct vdp_member *m, const void *buf, size_t len,
		     uint64_t off);

/* vdp_member_submit: starts IO (aligned) on IO->member and returns 0;
 * IO->done runs once, when it is complete, in the calling thread's
 * vdp_aio_poll.  It may wait for that poll to reach the member.  -errno when
 * the kind cannot (only files and block devices can, through io_uring) or not
 * now (a full ring): nothing was done. */
int vdp_member_submit(struct vdp_mio *io);

/* uring.c, a ring per thread: uring_submit queues IO on FD, to go to the
 * kernel with the thread's next vdp_aio_poll or a full batch; -errno if it
 * cannot (no io_uring, a full ring). */
int uring_submit(int fd, struct vdp_mio *io);
/* For a member that has no ring of its own (the test layers): IO is done
 * with the member's pread or pwrite in the thread's next vdp_aio_poll,
 * then completed, as if the device had taken it only then.  Returns 0. */
int aio_defer(struct vdp_mio *io);

#endif
