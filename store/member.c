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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "internal.h"
#include "layer_internal.h"
#include "lvm_meta.h"
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
	const struct vdp_member_id *id = NULL;
	int r;

	/* Kinds are told apart by prefix (iscsi://, lvm:). */
	if (vdp_member_is_iscsi(spec))
		r = vdp_member_iscsi_open(spec, rdonly, out);
	else if (strncmp(spec, "lvm:", 4) == 0)
		r = vdp_member_lvm_open(spec, rdonly, out);
	else
		r = vdp_member_file_open(spec, rdonly, out);
	if (r == 0)
		id = (*out)->id;

	/* Test layers (layer.h), if a test set any, wrap the real member;
	 * the outermost carries the kind's identity. */
	if (r == 0)
		r = layers_wrap(out);
	if (r == 0)
		(*out)->id = id;
	return r;
}

bool vdp_member_spec_names(const char *record, const char *spec)
{
	struct lvm_spec a, b;
	bool same = false;

	if (strcmp(record, spec) == 0)
		return true;
	if (lvm_spec_parse(record, &a, NULL, 0) < 0)
		return false;
	if (lvm_spec_parse(spec, &b, NULL, 0) == 0)
		same = b.lv_uuid[0]
			       ? !strcmp(a.lv_uuid, b.lv_uuid)
			       : !strcmp(a.vg, b.vg) && !strcmp(a.lv, b.lv);
	lvm_spec_clear(&a);
	lvm_spec_clear(&b);
	return same;
}

bool vdp_member_spec_is_path(const char *spec)
{
	return !vdp_member_is_iscsi(spec) && strncmp(spec, "lvm:", 4) != 0;
}

/* M's claims: its own, or its path's file or device, whole. */
static const struct vdp_member_id *claims_of(const struct vdp_member *m,
					     struct vdp_member_id *tmp,
					     struct vdp_dev_claim *one)
{
	struct stat st;

	if (m->id)
		return m->id;
	memset(tmp, 0, sizeof(*tmp));
	if (stat(m->path, &st) == 0) {
		one->whole = true;
		one->dev = S_ISBLK(st.st_mode) ? st.st_rdev : st.st_dev;
		one->ino = S_ISBLK(st.st_mode) ? 0 : st.st_ino;
		tmp->devs = one;
		tmp->ndevs = 1;
	}
	return tmp;
}

bool vdp_member_overlap(const struct vdp_member *a, const struct vdp_member *b,
			char *why, size_t wl)
{
	struct vdp_member_id ta, tb;
	struct vdp_dev_claim oa, ob;
	const struct vdp_member_id *ia = claims_of(a, &ta, &oa),
				   *ib = claims_of(b, &tb, &ob);

	if (ia->lv_uuid[0] && strcmp(ia->lv_uuid, ib->lv_uuid) == 0) {
		snprintf(why, wl, "both are LVM logical volume %s",
			 ia->lv_uuid);
		return true;
	}
	if (ia->lun[0] && strcmp(ia->lun, ib->lun) == 0) {
		snprintf(why, wl, "both are iSCSI LUN %s", ia->lun);
		return true;
	}
	for (unsigned i = 0; i < ia->ndevs; i++)
		for (unsigned j = 0; j < ib->ndevs; j++) {
			const struct vdp_dev_claim *x = &ia->devs[i],
						   *y = &ib->devs[j];

			if (x->dev != y->dev || x->ino != y->ino ||
			    (!x->whole && !y->whole))
				continue;
			if (x->whole && y->whole)
				snprintf(why, wl, "the same file or device");
			else
				snprintf(why, wl,
					 "device %u:%u is a PV under %s",
					 major(x->dev), minor(x->dev),
					 x->whole ? b->path : a->path);
			return true;
		}
	return false;
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

int vdp_member_submit(struct vdp_mio *io)
{
	struct vdp_member *m = io->member;

	return m->ops->submit ? m->ops->submit(m, io) : -ENOTSUP;
}
