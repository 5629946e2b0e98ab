/* SPDX-License-Identifier: MIT */
/*
 * member.c - what every member kind shares: picking the kind from a spec,
 * and turning reads and writes of any alignment into the aligned I/O the
 * kinds accept (O_DIRECT needs aligned buffers, offsets and lengths; FUSE
 * hands us data right after a request header, so never aligned).
 *
 * Never caches data: every call reaches the member before it returns.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "layer_internal.h"
#include "member.h"

#define BOUNCE_MAX (2u << 20)
#define RMW_LOCKS 64

static pthread_key_t bounce_key;
static pthread_once_t bounce_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t rmw_locks[RMW_LOCKS];

struct bounce {
	void *buf;
	size_t size;
};

static void bounce_free(void *arg)
{
	struct bounce *b = arg;

	free(b->buf);
	free(b);
}

static void bounce_init(void)
{
	pthread_key_create(&bounce_key, bounce_free);
	for (int i = 0; i < RMW_LOCKS; i++)
		pthread_mutex_init(&rmw_locks[i], NULL);
}

/* A per-thread aligned buffer of at least SIZE bytes, or NULL. */
static void *bounce_get(size_t size)
{
	struct bounce *b;

	pthread_once(&bounce_once, bounce_init);
	b = pthread_getspecific(bounce_key);
	if (!b) {
		b = calloc(1, sizeof(*b));
		if (!b)
			return NULL;
		pthread_setspecific(bounce_key, b);
	}
	if (b->size < size) {
		void *n;

		if (posix_memalign(&n, 4096, size) != 0)
			return NULL;
		free(b->buf);
		b->buf = n;
		b->size = size;
	}
	return b->buf;
}

int vdp_member_open(const char *spec, bool rdonly, struct vdp_member **out)
{
	/* Later kinds are told apart by prefix (iscsi://, lvm:). */
	int r = vdp_member_file_open(spec, rdonly, out);

	/* Test layers (layer.h), if a test set any, wrap the real member. */
	if (r == 0)
		r = layers_wrap(out);
	return r;
}

void vdp_member_close(struct vdp_member *m)
{
	if (m)
		m->ops->close(m);
}

int vdp_member_read(struct vdp_member *m, void *buf, size_t len, uint64_t off)
{
	uint64_t a = m->align;

	while (len > 0) {
		uint64_t start = off & ~(a - 1);
		size_t chunk = len < BOUNCE_MAX - a ? len : BOUNCE_MAX - a;
		uint64_t end = (off + chunk + a - 1) & ~(a - 1);
		uint8_t *b;
		int r;

		if (((uintptr_t)buf & (a - 1)) == 0 && start == off &&
		    (chunk & (a - 1)) == 0) {
			r = m->ops->pread(m, buf, chunk, off);
			if (r < 0)
				return r;
		} else {
			b = bounce_get(end - start);
			if (!b)
				return -ENOMEM;
			r = m->ops->pread(m, b, end - start, start);
			if (r < 0)
				return r;
			memcpy(buf, b + (off - start), chunk);
		}
		buf = (uint8_t *)buf + chunk;
		off += chunk;
		len -= chunk;
	}
	return 0;
}

/*
 * Read-modify-write of the aligned span around [off, off + len).  The locks
 * of the span's first and last blocks are held (in index order), so two
 * unaligned writes that share a block serialise.  An unaligned write racing
 * an overlapping aligned one may still interleave, as on any block device.
 */
static int write_rmw(struct vdp_member *m, const void *buf, size_t len,
		     uint64_t off, uint8_t *b)
{
	uint64_t a = m->align;
	uint64_t start = off & ~(a - 1);
	uint64_t end = (off + len + a - 1) & ~(a - 1);
	unsigned l1 = (start / a) % RMW_LOCKS, l2 = ((end - a) / a) % RMW_LOCKS;
	int r = 0;

	if (l1 > l2) {
		unsigned t = l1;
		l1 = l2;
		l2 = t;
	}
	pthread_mutex_lock(&rmw_locks[l1]);
	if (l2 != l1)
		pthread_mutex_lock(&rmw_locks[l2]);
	if (start != off)
		r = m->ops->pread(m, b, a, start);
	if (r == 0 && end != off + len && (end - a != start || start == off))
		r = m->ops->pread(m, b + (end - a - start), a, end - a);
	if (r == 0) {
		memcpy(b + (off - start), buf, len);
		r = m->ops->pwrite(m, b, end - start, start);
	}
	if (l2 != l1)
		pthread_mutex_unlock(&rmw_locks[l2]);
	pthread_mutex_unlock(&rmw_locks[l1]);
	return r;
}

int vdp_member_write(struct vdp_member *m, const void *buf, size_t len,
		     uint64_t off)
{
	uint64_t a = m->align;

	while (len > 0) {
		size_t chunk =
			len < BOUNCE_MAX - 2 * a ? len : BOUNCE_MAX - 2 * a;
		uint8_t *b = bounce_get(BOUNCE_MAX);
		int r;

		if (!b)
			return -ENOMEM;
		if ((off & (a - 1)) == 0 && (chunk & (a - 1)) == 0) {
			if (((uintptr_t)buf & (a - 1)) == 0) {
				r = m->ops->pwrite(m, buf, chunk, off);
			} else {
				memcpy(b, buf, chunk);
				r = m->ops->pwrite(m, b, chunk, off);
			}
		} else {
			r = write_rmw(m, buf, chunk, off, b);
		}
		if (r < 0)
			return r;
		buf = (const uint8_t *)buf + chunk;
		off += chunk;
		len -= chunk;
	}
	return 0;
}
