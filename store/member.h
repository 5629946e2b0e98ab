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

struct vdp_member_ops {
	const char *kind; /* "file", "block", ... */
	/* pread/pwrite: move all LEN bytes or fail with -errno.  BUF, LEN and
	 * OFF are multiples of m->align.  Safe to call from many threads. */
	int (*pread)(struct vdp_member *m, void *buf, size_t len, uint64_t off);
	int (*pwrite)(struct vdp_member *m, const void *buf, size_t len,
		      uint64_t off);
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
};

/*
 * vdp_member_open: open the member named by SPEC (a file or block-device
 * path).  RDONLY opens it read-only.  On failure sets vdp_last_error() to a
 * sentence naming SPEC and returns -errno.
 */
int vdp_member_open(const char *spec, bool rdonly, struct vdp_member **out);
void vdp_member_close(struct vdp_member *m);

/* The kinds' constructors (member_file.c, ...). */
int vdp_member_file_open(const char *path, bool rdonly,
			 struct vdp_member **out);

/*
 * vdp_member_read / vdp_member_write: any alignment of BUF, LEN and OFF.
 * Unaligned parts go through aligned bounce buffers; a write's partial
 * blocks are read, modified and written under a lock on that block, so
 * concurrent unaligned writes to one block do not lose each other.
 */
int vdp_member_read(struct vdp_member *m, void *buf, size_t len, uint64_t off);
int vdp_member_write(struct vdp_member *m, const void *buf, size_t len,
		     uint64_t off);

#endif
