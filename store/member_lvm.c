/* SPDX-License-Identifier: MIT */
/*
 * member_lvm.c - members that are LVM2 logical volumes, `lvm:VG/LV`.
 *
 * Two ways to reach an LV (docs/members/lvm.md):
 *   - device-mapper, where the kernel has it: libdevmapper names the active
 *     LV's dm device (by its "LVM-" + VG UUID + LV UUID, or by the name
 *     VG-LV with '-' doubled), which must be live and not open elsewhere;
 *     its node is opened like a block member (member_file.c).
 *   - the PVs, where it has not (containers, build machines): the PV labels
 *     and metadata areas are read from the devices, the newest valid
 *     metadata of the VG is parsed (lvm_meta.c), and the LV's linear and
 *     striped segments are mapped onto the PVs here, each PV opened like a
 *     block member.  Every request is split at segment and stripe
 *     boundaries and sent to the PV ranges that hold it.
 *
 * The member's path is its canonical spec, lvm:VG/LV?uuid=VGUUID/LVUUID,
 * so the pool finds it again by UUID after a rename.  Never writes LVM
 * metadata; never reaches an LV both ways at once (an LV active in dm is
 * refused from the PVs, and both ways take the same per-LV lock).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libdevmapper.h>
#include <limits.h>
#include <linux/fs.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <syslog.h>
#include <unistd.h>

#include "format.h"
#include "internal.h"
#include "lvm_meta.h"
#include "member.h"

#define MDA_MAX (64u << 20) /* a bigger metadata area is refused */
#define LOCK_DIR "/run/lock/vdpool"
#define MAX_SLOTS 256 /* PVs one LV may lie on */

struct lvm_member {
	struct vdp_member m;
	struct vdp_member_id id;
	int lock_fd; /* the per-LV lock file, or -1 */
	char lv_uuid[LVM_UUID_LEN + 1];
	/* The dm way: the LV's node. */
	struct vdp_member *node;
	/* The PV way: the map, whose PV numbers are slots of PVS (opened
	 * PVs, by PV UUID in PV_UUID).  A grown LV gets a new map and maybe
	 * new slots (refresh); earlier maps stay in RETIRED until close, as
	 * I/O may still read them.  Slots are never reused or moved. */
	struct lvm_map *_Atomic map;
	struct lvm_map **retired;
	unsigned nretired;
	pthread_mutex_t refresh_lock;
	struct lvm_spec spec; /* to find the VG and LV again */
	bool rdonly;
	atomic_uint npvs; /* slots in use */
	struct vdp_member *pvs[MAX_SLOTS];
	char pv_uuid[MAX_SLOTS][LVM_UUID_LEN + 1];
	atomic_bool written[MAX_SLOTS]; /* since the PV's last flush */
};

/* ---- device-mapper ------------------------------------------------------ */

static void dm_quiet(int level, const char *file, int line, int dm_errno,
		     const char *f, ...)
{
	(void)level, (void)file, (void)line, (void)dm_errno, (void)f;
}

static pthread_once_t dm_once = PTHREAD_ONCE_INIT;
static bool dm_ok;
static char dm_why[160];

/* Whether /proc/misc lists the device-mapper driver. */
static bool dm_in_proc_misc(void)
{
	char line[128];
	bool found = false;
	FILE *f = fopen("/proc/misc", "r");

	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f))
		found = strstr(line, " device-mapper") != NULL;
	fclose(f);
	return found;
}

static void dm_probe(void)
{
	char version[64];

	/* Without the driver, libdevmapper would only fail loudly (or try
	 * to create /dev/mapper/control): ask it only when there is one. */
	dm_log_with_errno_init(dm_quiet);
	if (access("/dev/mapper/control", F_OK) != 0 && !dm_in_proc_misc()) {
		snprintf(dm_why, sizeof(dm_why),
			 "no /dev/mapper/control and no device-mapper in "
			 "/proc/misc");
	} else if (!dm_driver_version(version, sizeof(version))) {
		snprintf(dm_why, sizeof(dm_why),
			 "libdevmapper cannot reach the kernel driver");
	} else {
		dm_ok = true;
		return;
	}
	fprintf(stderr,
		"vdpool: device-mapper not available (%s): reading LVM "
		"metadata from the PVs\n",
		dm_why);
	syslog(LOG_NOTICE,
	       "device-mapper not available (%s): reading LVM metadata from "
	       "the PVs",
	       dm_why);
}

bool vdp_lvm_dm_available(const char **why)
{
	pthread_once(&dm_once, dm_probe);
	if (why)
		*why = dm_ok ? "" : dm_why;
	return dm_ok;
}

struct dm_lv {
	bool exists, live, suspended;
	int open_count;
	dev_t dev;
	char name[2 * LVM_NAME_MAX + 4];
	char uuid[4 + 2 * LVM_UUID_LEN + 1];
};

/* DM_DEVICE_INFO of the device with dm UUID (if UUID) or dm NAME. */
static int dm_lookup(const char *uuid, const char *name, struct dm_lv *out)
{
	struct dm_task *t = dm_task_create(DM_DEVICE_INFO);
	struct dm_info info;
	int r = -EIO;

	memset(out, 0, sizeof(*out));
	if (!t)
		return -ENOMEM;
	if (!(uuid ? dm_task_set_uuid(t, uuid) : dm_task_set_name(t, name)) ||
	    !dm_task_run(t) || !dm_task_get_info(t, &info))
		goto out;
	r = 0;
	if (!info.exists)
		goto out;
	out->exists = true;
	out->live = info.live_table;
	out->suspended = info.suspended;
	out->open_count = info.open_count;
	out->dev = makedev(info.major, info.minor);
	snprintf(out->name, sizeof(out->name), "%s",
		 dm_task_get_name(t) ? dm_task_get_name(t) : "");
	snprintf(out->uuid, sizeof(out->uuid), "%s",
		 dm_task_get_uuid(t) ? dm_task_get_uuid(t) : "");
out:
	dm_task_destroy(t);
	return r;
}

/* ---- finding PVs and the VG's metadata ---------------------------------- */

/* A device read while looking for the VG. */
struct scanned {
	char *path;
	dev_t rdev; /* or st_dev of a file */
	ino_t ino;  /* 0 for a block device */
	uint64_t size;
	struct lvm_label label;
	struct lvm_vg *vg; /* its newest valid metadata, or NULL */
	char why[200];	   /* why it has none, if it is a PV */
};

struct scan {
	struct scanned *d;
	size_t n, cap;
	const char *source; /* "pv=", "VDPOOL_LVM_DEVICES", "/dev" */
};

static void scan_free(struct scan *s)
{
	for (size_t i = 0; i < s->n; i++) {
		free(s->d[i].path);
		lvm_vg_free(s->d[i].vg);
	}
	free(s->d);
}

/*
 * LVM writes its metadata with O_DIRECT, and it is read here the same way:
 * a buffered read racing LVM's write (udev probing the PV, for one) can
 * leave a page of what was there before in the device's cache.  A read
 * that O_DIRECT refuses (not aligned to the device's sectors, a PV image on
 * a filesystem without O_DIRECT) is done buffered.  Buffers are aligned to
 * PV_ALIGN.
 */
#define PV_ALIGN 4096

static int open_pv(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_DIRECT);

	if (fd < 0 && errno == EINVAL)
		fd = open(path, O_RDONLY | O_CLOEXEC);
	return fd;
}

static int pread_all(int fd, void *buf, size_t len, uint64_t off)
{
	while (len > 0) {
		ssize_t n = pread(fd, buf, len, (off_t)off);
		int fl;

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EINVAL &&
		    (fl = fcntl(fd, F_GETFL)) >= 0 && (fl & O_DIRECT) &&
		    fcntl(fd, F_SETFL, fl & ~O_DIRECT) == 0)
			continue; /* not aligned for it: buffered */
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO; /* past the end */
		buf = (char *)buf + n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
	return 0;
}

/* The newest valid VG metadata in the metadata areas of D (open as FD). */
static void read_metadata(int fd, struct scanned *d)
{
	for (unsigned k = 0; k < d->label.nmdas; k++) {
		uint64_t off = d->label.mda_off[k], size = d->label.mda_size[k];
		struct lvm_rlocn rl;
		struct lvm_vg *vg;
		uint8_t *area;
		char *text, why[160];
		size_t len;
		int r;

		if (size <= LVM_MDA_HEADER_SIZE || size > MDA_MAX ||
		    off > d->size || size > d->size - off) {
			snprintf(d->why, sizeof(d->why),
				 "metadata area %u (offset %llu size %llu) "
				 "%s",
				 k, (unsigned long long)off,
				 (unsigned long long)size,
				 size > MDA_MAX ? "is larger than the 64 MiB "
						  "vdpool reads"
						: "does not fit the device");
			continue;
		}
		if (posix_memalign((void **)&area, PV_ALIGN, size) != 0)
			continue;
		r = pread_all(fd, area, size, off);
		if (r < 0) {
			snprintf(d->why, sizeof(d->why),
				 "cannot read metadata area %u: %s", k,
				 strerror(-r));
			free(area);
			continue;
		}
		r = lvm_mda_header_parse(area, off, size, &rl, why,
					 sizeof(why));
		if (r == 0)
			r = lvm_mda_text(area, size, &rl, &text, &len, why,
					 sizeof(why));
		free(area);
		if (r == -ENOENT)
			continue;
		if (r < 0) {
			snprintf(d->why, sizeof(d->why), "metadata area %u: %s",
				 k, why);
			continue;
		}
		r = lvm_vg_parse(text, len, &vg, why, sizeof(why));
		free(text);
		if (r < 0) {
			snprintf(d->why, sizeof(d->why), "metadata area %u: %s",
				 k, why);
			continue;
		}
		if (!d->vg || vg->seqno > d->vg->seqno) {
			lvm_vg_free(d->vg);
			d->vg = vg;
		} else {
			lvm_vg_free(vg);
		}
	}
}

/* Reads the label and metadata of PATH, if it is a PV, into S. */
static int scan_one(struct scan *s, const char *path)
{
	/* All of sector 0 of a 4 KiB-sector device, which O_DIRECT wants. */
	_Alignas(PV_ALIGN) uint8_t head[PV_ALIGN];
	struct scanned d = {0};
	struct stat st;
	int fd, r;

	fd = open_pv(path);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0 ||
	    (!S_ISBLK(st.st_mode) && !S_ISREG(st.st_mode)))
		goto out_close;
	d.rdev = S_ISBLK(st.st_mode) ? st.st_rdev : st.st_dev;
	d.ino = S_ISBLK(st.st_mode) ? 0 : st.st_ino;
	d.size = (uint64_t)st.st_size;
	if (S_ISBLK(st.st_mode) && ioctl(fd, BLKGETSIZE64, &d.size) < 0)
		goto out_close;
	if (d.size < sizeof(head) || pread_all(fd, head, sizeof(head), 0) < 0)
		goto out_close;
	r = lvm_label_parse(head, LVM_LABEL_SCAN, &d.label, d.why,
			    sizeof(d.why));
	if (r == -ENOENT)
		goto out_close;
	if (r == 0) {
		d.why[0] = 0;
		read_metadata(fd, &d);
	}
	if (s->n == s->cap) {
		size_t cap = s->cap ? 2 * s->cap : 16;
		struct scanned *nd = realloc(s->d, cap * sizeof(*nd));

		if (!nd) {
			lvm_vg_free(d.vg);
			close(fd);
			return -ENOMEM;
		}
		s->d = nd;
		s->cap = cap;
	}
	d.path = strdup(path);
	if (!d.path) {
		lvm_vg_free(d.vg);
		close(fd);
		return -ENOMEM;
	}
	if (r < 0)
		d.label.pv_uuid[0] = 0; /* a damaged label names no PV */
	s->d[s->n++] = d;
out_close:
	close(fd);
	return 0;
}

static bool default_device(const char *name)
{
	static const char *const prefixes[] = {"loop", "sd", "vd", "nvme",
					       "xvd"};

	for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++)
		if (!strncmp(name, prefixes[i], strlen(prefixes[i])))
			return strcmp(name, "loop-control") != 0;
	return false;
}

/* Reads every device of LIST (separated by ',') into S. */
static int scan_list(struct scan *s, const char *list)
{
	char *copy = strdup(list), *save = NULL;
	int r = 0;

	if (!copy)
		return -ENOMEM;
	for (char *p = strtok_r(copy, ",", &save); p && r == 0;
	     p = strtok_r(NULL, ",", &save)) {
		r = scan_one(s, p);
		if (r < 0 && r != -ENOMEM) {
			vdp_set_error("%s: %s", p, strerror(-r));
			r = -ENODEV;
		}
	}
	free(copy);
	return r;
}

/* The devices to read: the spec's pv=, else $VDPOOL_LVM_DEVICES, else the
 * disks and loop devices in /dev.  -ENODEV with an error set when a named
 * device cannot be read. */
static int scan_devices(const struct lvm_spec *spec, struct scan *s)
{
	const char *env = getenv("VDPOOL_LVM_DEVICES");
	struct dirent *e;
	DIR *dir;
	int r = 0;

	if (spec->pvs) {
		s->source = "the devices given with pv=";
		return scan_list(s, spec->pvs);
	}
	if (env && *env) {
		s->source = "the devices in VDPOOL_LVM_DEVICES";
		return scan_list(s, env);
	}
	s->source = "the disks and loop devices in /dev";
	dir = opendir("/dev");
	if (!dir)
		return 0;
	while (r == 0 && (e = readdir(dir))) {
		char path[PATH_MAX];

		if (!default_device(e->d_name))
			continue;
		snprintf(path, sizeof(path), "/dev/%s", e->d_name);
		r = scan_one(s, path);
		if (r != -ENOMEM)
			r = 0; /* unreadable devices are not ours */
	}
	closedir(dir);
	return r;
}

/* The scanned device holding the PV with UUID; -ENOENT, or -EEXIST with
 * *DUP set when two devices carry it. */
static int find_pv(const struct scan *s, const char *uuid,
		   const struct scanned **out, const struct scanned **dup)
{
	*out = NULL;
	for (size_t i = 0; i < s->n; i++) {
		if (strcmp(s->d[i].label.pv_uuid, uuid) != 0)
			continue;
		if (*out && (s->d[i].rdev != (*out)->rdev ||
			     s->d[i].ino != (*out)->ino)) {
			*dup = &s->d[i];
			return -EEXIST;
		}
		*out = &s->d[i];
	}
	return *out ? 0 : -ENOENT;
}

/*
 * The newest metadata of the VG SPEC names: by VG UUID when the spec has
 * one and some PV holds it, else by name (refused if two VGs share it).
 */
static int choose_vg(const struct lvm_spec *spec, const struct scan *s,
		     const char *what, const struct lvm_vg **out)
{
	const struct lvm_vg *best = NULL;
	char bad[400] = "";

	for (int by_uuid = 1; by_uuid >= 0 && !best; by_uuid--) {
		if (by_uuid && !spec->vg_uuid[0])
			continue;
		for (size_t i = 0; i < s->n; i++) {
			const struct lvm_vg *vg = s->d[i].vg;

			if (!vg || (by_uuid ? strcmp(vg->uuid, spec->vg_uuid)
					    : strcmp(vg->name, spec->vg)))
				continue;
			if (!by_uuid && best && strcmp(best->uuid, vg->uuid)) {
				vdp_set_error("member %s: two VGs are named "
					      "%s (uuids %s and %s); give "
					      "the PVs of one with pv=",
					      what, spec->vg, best->uuid,
					      vg->uuid);
				return -ENOTUNIQ;
			}
			if (!best || vg->seqno > best->seqno)
				best = vg;
		}
	}
	if (best) {
		*out = best;
		return 0;
	}
	/* Not found: a PV whose metadata is damaged may be why. */
	for (size_t i = 0; i < s->n && !bad[0]; i++)
		if (s->d[i].why[0])
			snprintf(bad, sizeof(bad), "; %s: %s", s->d[i].path,
				 s->d[i].why);
	vdp_set_error("member %s: VG %s not found on %s%s", what, spec->vg,
		      s->source, bad);
	return -ENOENT;
}

/* ---- the member ---------------------------------------------------------- */

static struct lvm_member *lm_of(struct vdp_member *m)
{
	return m->priv;
}

static int refresh(struct lvm_member *l);

/* Calls FN on each PV piece of [OFF, OFF + LEN) of the LV, in order. */
static int each_piece(struct lvm_member *l, uint64_t off, uint64_t len,
		      int (*fn)(struct lvm_member *l, unsigned pv,
				uint64_t pv_off, uint64_t n, uint64_t done,
				void *ctx),
		      void *ctx)
{
	struct lvm_map *map = atomic_load(&l->map);
	uint64_t done = 0;

	/* Past the end of the map: the LV grew (lvextend, and the pool was
	 * told with resize-member), read its metadata again. */
	if (off > map->size || len > map->size - off) {
		int r = refresh(l);

		map = atomic_load(&l->map);
		if (r < 0 || off > map->size || len > map->size - off)
			return r < 0 ? r : -EINVAL;
	}
	while (done < len) {
		uint64_t pv_off, run;
		unsigned pv;
		int r = lvm_map_find(map, off + done, &pv, &pv_off, &run);

		if (r < 0)
			return r;
		if (run > len - done)
			run = len - done;
		r = fn(l, pv, pv_off, run, done, ctx);
		if (r < 0)
			return r;
		done += run;
	}
	return 0;
}

static int piece_read(struct lvm_member *l, unsigned pv, uint64_t pv_off,
		      uint64_t n, uint64_t done, void *ctx)
{
	struct vdp_member *d = l->pvs[pv];

	return d->ops->pread(d, (uint8_t *)ctx + done, (size_t)n, pv_off);
}

static int piece_write(struct lvm_member *l, unsigned pv, uint64_t pv_off,
		       uint64_t n, uint64_t done, void *ctx)
{
	struct vdp_member *d = l->pvs[pv];
	int r = d->ops->pwrite(d, (const uint8_t *)ctx + done, (size_t)n,
			       pv_off);

	if (r == 0)
		atomic_store(&l->written[pv], true);
	return r;
}

static int piece_zero(struct lvm_member *l, unsigned pv, uint64_t pv_off,
		      uint64_t n, uint64_t done, void *ctx)
{
	struct vdp_member *d = l->pvs[pv];
	int r = d->ops->write_zeroes(d, pv_off, n);

	(void)done, (void)ctx;
	if (r == 0)
		atomic_store(&l->written[pv], true);
	return r;
}

static int piece_discard(struct lvm_member *l, unsigned pv, uint64_t pv_off,
			 uint64_t n, uint64_t done, void *ctx)
{
	struct vdp_member *d = l->pvs[pv];

	(void)done, (void)ctx;
	return d->ops->discard ? d->ops->discard(d, pv_off, n) : -EOPNOTSUPP;
}

static int lvm_pread(struct vdp_member *m, void *buf, size_t len, uint64_t off)
{
	struct lvm_member *l = lm_of(m);

	if (l->node)
		return l->node->ops->pread(l->node, buf, len, off);
	return each_piece(l, off, len, piece_read, buf);
}

static int lvm_pwrite(struct vdp_member *m, const void *buf, size_t len,
		      uint64_t off)
{
	struct lvm_member *l = lm_of(m);

	if (l->node)
		return l->node->ops->pwrite(l->node, buf, len, off);
	return each_piece(l, off, len, piece_write, (void *)buf);
}

/* Flushes every PV written since its last flush: a write that completed
 * before this call set its flag before it returned. */
static int lvm_flush(struct vdp_member *m)
{
	struct lvm_member *l = lm_of(m);
	int r = 0;

	if (l->node)
		return l->node->ops->flush(l->node);
	for (unsigned i = 0; i < l->npvs; i++) {
		int e;

		if (!l->pvs[i] || !atomic_exchange(&l->written[i], false))
			continue;
		e = l->pvs[i]->ops->flush(l->pvs[i]);
		if (e < 0) {
			atomic_store(&l->written[i], true);
			r = r ? r : e;
		}
	}
	return r;
}

static int lvm_write_zeroes(struct vdp_member *m, uint64_t off, uint64_t len)
{
	struct lvm_member *l = lm_of(m);

	if (l->node)
		return l->node->ops->write_zeroes(l->node, off, len);
	return each_piece(l, off, len, piece_zero, NULL);
}

static int lvm_discard(struct vdp_member *m, uint64_t off, uint64_t len)
{
	struct lvm_member *l = lm_of(m);

	if (l->node)
		return l->node->ops->discard
			       ? l->node->ops->discard(l->node, off, len)
			       : -EOPNOTSUPP;
	return each_piece(l, off, len, piece_discard, NULL);
}

/* The same lock file for both ways to the LV, named by its UUID, keeps a
 * second pool (or process) off it either way. */
static int lvm_lock(struct vdp_member *m, bool exclusive)
{
	struct lvm_member *l = lm_of(m);
	char path[sizeof(LOCK_DIR) + LVM_UUID_LEN + 8];

	if (l->lock_fd < 0) {
		mkdir("/run/lock", 0755);
		mkdir(LOCK_DIR, 0755);
		snprintf(path, sizeof(path), LOCK_DIR "/lv-%s", l->lv_uuid);
		l->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
		if (l->lock_fd < 0)
			return -errno;
	}
	if (flock(l->lock_fd, (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB) < 0)
		return errno == EWOULDBLOCK ? -EBUSY : -errno;
	if (l->node && l->node->ops->lock)
		return l->node->ops->lock(l->node, exclusive);
	return 0;
}

static void lvm_close(struct vdp_member *m)
{
	struct lvm_member *l = lm_of(m);

	vdp_member_close(l->node);
	for (unsigned i = 0; i < l->npvs; i++)
		vdp_member_close(l->pvs[i]);
	lvm_map_free(atomic_load(&l->map));
	for (unsigned i = 0; i < l->nretired; i++)
		lvm_map_free(l->retired[i]);
	free(l->retired);
	pthread_mutex_destroy(&l->refresh_lock);
	lvm_spec_clear(&l->spec);
	if (l->lock_fd >= 0)
		close(l->lock_fd);
	free(l->id.devs);
	free(m->path);
	free(l);
}

static const struct vdp_member_ops lvm_ops = {
	.kind = "lvm",
	.pread = lvm_pread,
	.pwrite = lvm_pwrite,
	.flush = lvm_flush,
	.write_zeroes = lvm_write_zeroes,
	.discard = lvm_discard,
	.lock = lvm_lock,
	.close = lvm_close,
};

static int id_add(struct vdp_member_id *id, uint64_t dev, uint64_t ino,
		  bool whole)
{
	struct vdp_dev_claim *n =
		realloc(id->devs, (id->ndevs + 1) * sizeof(*n));

	if (!n)
		return -ENOMEM;
	id->devs = n;
	n[id->ndevs++] = (struct vdp_dev_claim){dev, ino, whole};
	return 0;
}

/* The canonical spec of the LV into l->m.path; refused if the pool's
 * record (127 bytes) cannot hold it. */
static int set_path(struct lvm_member *l, struct lvm_spec *spec, const char *vg,
		    const char *lv, const char *vg_uuid, const char *lv_uuid,
		    const char *what)
{
	char buf[1024];
	int n;

	snprintf(spec->vg, sizeof(spec->vg), "%s", vg);
	snprintf(spec->lv, sizeof(spec->lv), "%s", lv);
	snprintf(spec->vg_uuid, sizeof(spec->vg_uuid), "%s", vg_uuid);
	snprintf(spec->lv_uuid, sizeof(spec->lv_uuid), "%s", lv_uuid);
	snprintf(l->lv_uuid, sizeof(l->lv_uuid), "%s", lv_uuid);
	n = lvm_spec_format(spec, buf, sizeof(buf));
	if (n < 0 || (size_t)n >= sizeof(((struct vdp_dmember *)0)->path)) {
		vdp_set_error("member %s: its record, %s, is %d bytes, more "
			      "than the %zu a pool keeps; use shorter VG and "
			      "LV names%s",
			      what, n < 0 ? "(too long)" : buf, n,
			      sizeof(((struct vdp_dmember *)0)->path) - 1,
			      spec->pvs ? ", or VDPOOL_LVM_DEVICES instead of "
					  "pv="
					: "");
		return -ENAMETOOLONG;
	}
	l->m.path = strdup(buf);
	return l->m.path ? 0 : -ENOMEM;
}

/* Adds the PVs under the dm device DEV (its sysfs slaves) as parts. */
static void id_add_slaves(struct vdp_member_id *id, dev_t dev)
{
	char dir[96], path[PATH_MAX];
	struct dirent *e;
	DIR *d;

	snprintf(dir, sizeof(dir), "/sys/dev/block/%u:%u/slaves", major(dev),
		 minor(dev));
	d = opendir(dir);
	if (!d)
		return;
	while ((e = readdir(d))) {
		struct stat st;

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/dev/%s", e->d_name);
		if (stat(path, &st) == 0 && S_ISBLK(st.st_mode))
			id_add(id, st.st_rdev, 0, false);
	}
	closedir(d);
}

/* The dm way: the active LV's node.  -ENOENT (no error set) when dm has no
 * such device, so the caller can tell inactive from unknown. */
static int open_dm(struct lvm_member *l, struct lvm_spec *spec, bool rdonly,
		   const char *what)
{
	char name[2 * LVM_NAME_MAX + 4], uuid[4 + 2 * LVM_UUID_LEN + 1];
	char node[PATH_MAX];
	struct lvm_spec found = {0};
	struct dm_lv d = {0};
	struct stat st;
	int r;

	if (spec->vg_uuid[0] && spec->lv_uuid[0]) {
		snprintf(uuid, sizeof(uuid), "LVM-%s%s", spec->vg_uuid,
			 spec->lv_uuid);
		r = dm_lookup(uuid, NULL, &d);
		if (r < 0)
			return r;
	}
	if (!d.exists) {
		if (lvm_dm_name(spec->vg, spec->lv, name, sizeof(name)) < 0)
			return -ENOENT; /* no dm device can have that name */
		r = dm_lookup(NULL, name, &d);
		if (r < 0)
			return r;
	}
	if (!d.exists)
		return -ENOENT;
	if (strncmp(d.uuid, "LVM-", 4) != 0 ||
	    strlen(d.uuid) != 4 + 2 * LVM_UUID_LEN ||
	    !lvm_dm_name_split(d.name, &found)) {
		vdp_set_error("member %s: device-mapper device %s (uuid %s) "
			      "is not a whole LVM logical volume",
			      what, d.name, d.uuid);
		return -EINVAL;
	}
	if (!d.live || d.suspended) {
		vdp_set_error("member %s: LV %s/%s is %s in device-mapper",
			      what, found.vg, found.lv,
			      d.suspended ? "suspended"
					  : "without a live table");
		return -EBUSY;
	}
	/* A read-only open may be our own second look (resize-member,
	 * status) at an LV the pool has open. */
	if (d.open_count > 0 && !rdonly) {
		vdp_set_error("member %s: LV %s/%s is in use: its device "
			      "%s is open %d times (mounted, or used by a VM?)",
			      what, found.vg, found.lv, d.name, d.open_count);
		return -EBUSY;
	}
	snprintf(node, sizeof(node), "/dev/mapper/%s", d.name);
	if (stat(node, &st) != 0 || st.st_rdev != d.dev)
		snprintf(node, sizeof(node), "/dev/dm-%u", minor(d.dev));
	{
		char vgu[LVM_UUID_LEN + 1], lvu[LVM_UUID_LEN + 1];

		memcpy(vgu, d.uuid + 4, LVM_UUID_LEN);
		vgu[LVM_UUID_LEN] = 0;
		memcpy(lvu, d.uuid + 4 + LVM_UUID_LEN, LVM_UUID_LEN);
		lvu[LVM_UUID_LEN] = 0;
		r = set_path(l, spec, found.vg, found.lv, vgu, lvu, what);
		if (r < 0)
			return r;
	}
	r = vdp_member_file_open(node, rdonly, &l->node);
	if (r < 0)
		return r;
	l->m.size = l->node->size;
	l->m.align = l->node->align;
	r = id_add(&l->id, d.dev, 0, true);
	id_add_slaves(&l->id, d.dev);
	return r;
}

/*
 * Gives every PV that MAP (of VG) names a slot of L, opening the PVs not
 * open yet (found in S by their UUIDs), and renumbers MAP's PVs to slots.
 */
static int attach_pvs(struct lvm_member *l, const struct scan *s,
		      const struct lvm_vg *vg, struct lvm_map *map, bool rdonly,
		      unsigned *align, const char *what)
{
	uint64_t ext = vg->extent_size * 512;
	unsigned *slot_of;
	int r = 0;

	slot_of = malloc((vg->npvs ? vg->npvs : 1) * sizeof(*slot_of));
	if (!slot_of)
		return -ENOMEM;
	for (unsigned p = 0; p < vg->npvs; p++)
		slot_of[p] = UINT_MAX;
	for (unsigned i = 0; i < map->nsegs && r == 0; i++) {
		for (unsigned k = 0; k < map->segs[i].nstripes && r == 0; k++) {
			unsigned p = map->segs[i].pv[k], n;
			const struct lvm_pv *pv = &vg->pvs[p];
			const struct scanned *d, *dup = NULL;

			if (slot_of[p] != UINT_MAX)
				continue;
			for (n = 0; n < l->npvs; n++)
				if (!strcmp(l->pv_uuid[n], pv->uuid))
					break;
			slot_of[p] = n;
			if (n < l->npvs)
				continue; /* open already */
			if (n == MAX_SLOTS) {
				vdp_set_error("member %s: the LV lies on more "
					      "than %d PVs",
					      what, MAX_SLOTS);
				r = -E2BIG;
				break;
			}
			r = find_pv(s, pv->uuid, &d, &dup);
			if (r == -EEXIST) {
				vdp_set_error(
					"member %s: PV %s (uuid %s) is on "
					"both %s and %s; name the right "
					"one with pv=",
					what, pv->name, pv->uuid, d->path,
					dup->path);
				r = -ENOTUNIQ;
				break;
			}
			if (r < 0) {
				vdp_set_error("member %s: PV %s (uuid %s, last "
					      "seen at %s) of VG %s is missing "
					      "from %s",
					      what, pv->name, pv->uuid,
					      pv->device ? pv->device : "?",
					      vg->name, s->source);
				r = -ENODEV;
				break;
			}
			if (pv->pe_start > d->size / 512 ||
			    pv->pe_count >
				    (d->size - pv->pe_start * 512) / ext) {
				vdp_set_error("member %s: PV %s on %s is %llu "
					      "bytes, smaller than its %llu "
					      "extents need",
					      what, pv->name, d->path,
					      (unsigned long long)d->size,
					      (unsigned long long)pv->pe_count);
				r = -EINVAL;
				break;
			}
			r = vdp_member_file_open(d->path, rdonly, &l->pvs[n]);
			if (r < 0)
				break;
			if (l->pvs[n]->align > *align)
				*align = l->pvs[n]->align;
			memcpy(l->pv_uuid[n], pv->uuid, sizeof(l->pv_uuid[n]));
			l->npvs = n + 1; /* published by the map that uses it */
			r = id_add(&l->id, d->rdev, d->ino, false);
		}
	}
	for (unsigned i = 0; i < map->nsegs && r == 0; i++)
		for (unsigned k = 0; k < map->segs[i].nstripes; k++)
			map->segs[i].pv[k] = slot_of[map->segs[i].pv[k]];
	free(slot_of);
	return r;
}

/* Whether NEW maps [0, OLD->size) of the LV as OLD does (same PV, same
 * offset): an LV may only have grown at its end while we used it. */
static bool map_extends(const struct lvm_map *old, const struct lvm_map *new)
{
	uint64_t off = 0;

	if (new->size < old->size)
		return false;
	while (off < old->size) {
		uint64_t o1, o2, n1, n2;
		unsigned p1, p2;

		if (lvm_map_find(old, off, &p1, &o1, &n1) < 0 ||
		    lvm_map_find(new, off, &p2, &o2, &n2) < 0 || p1 != p2 ||
		    o1 != o2)
			return false;
		off += n1 < n2 ? n1 : n2;
	}
	return true;
}

/*
 * Reads the LV's metadata again and takes its new, longer map, if the
 * part in use is unchanged.  Serialised by refresh_lock; I/O keeps using
 * the old map meanwhile.  Logs why it fails (the I/O error alone would
 * not say).
 */
static int refresh(struct lvm_member *l)
{
	struct lvm_map *old, *map = NULL, **ret = NULL;
	const struct lvm_vg *vg;
	const struct lvm_lv *lv;
	unsigned align = l->m.align;
	struct scan s = {0};
	char why[300];
	int r;

	pthread_mutex_lock(&l->refresh_lock);
	old = atomic_load(&l->map);
	r = scan_devices(&l->spec, &s);
	if (r == 0)
		r = choose_vg(&l->spec, &s, l->m.path, &vg);
	if (r < 0)
		goto out;
	lv = lvm_vg_find_lv(vg, l->spec.lv_uuid, NULL);
	if (!lv) {
		vdp_set_error("member %s: the LV is gone from VG %s", l->m.path,
			      vg->name);
		r = -ENODEV;
		goto out;
	}
	r = lvm_lv_map(vg, lv, &map, why, sizeof(why));
	if (r < 0) {
		vdp_set_error("member %s: %s", l->m.path, why);
		goto out;
	}
	/* Renumbered to slots before the comparison, which needs them. */
	r = attach_pvs(l, &s, vg, map, l->rdonly, &align, l->m.path);
	if (r == 0 && (!map_extends(old, map) || map->align < align ||
		       align > l->m.align)) {
		vdp_set_error("member %s: the LV's extents moved on its PVs "
			      "while in use (pvmove?); remount the pool",
			      l->m.path);
		r = -EIO;
	}
	if (r == 0) {
		ret = realloc(l->retired, (l->nretired + 1) * sizeof(*ret));
		r = ret ? 0 : -ENOMEM;
	}
	if (r < 0)
		goto out;
	l->retired = ret;
	l->retired[l->nretired++] = old;
	atomic_store(&l->map, map);
	map = NULL;
out:
	if (r < 0) {
		fprintf(stderr, "vdpool: %s\n", vdp_last_error());
		syslog(LOG_ERR, "%s", vdp_last_error());
	}
	lvm_map_free(map);
	scan_free(&s);
	pthread_mutex_unlock(&l->refresh_lock);
	return r;
}

/* The PV way: read the VG's metadata, map the LV, open its PVs. */
static int open_pvs(struct lvm_member *l, struct lvm_spec *spec, bool rdonly,
		    const char *what, const struct scan *s,
		    const struct lvm_vg *vg, const struct lvm_lv *lv)
{
	struct lvm_map *map;
	char why[300];
	int r;

	if (vg->exported) {
		vdp_set_error("member %s: VG %s is exported (vgimport it "
			      "first)",
			      what, vg->name);
		return -EINVAL;
	}
	if (vg->lock_type) {
		vdp_set_error("member %s: VG %s is shared through lvmlockd "
			      "(lock_type %s), whose locks vdpool cannot take",
			      what, vg->name, vg->lock_type);
		return -EINVAL;
	}
	if (!rdonly && (!vg->writable || !lv->writable)) {
		vdp_set_error("member %s: %s %s is read-only", what,
			      vg->writable ? "LV" : "VG",
			      vg->writable ? lv->name : vg->name);
		return -EROFS;
	}
	r = lvm_lv_map(vg, lv, &map, why, sizeof(why));
	if (r < 0) {
		vdp_set_error("member %s: %s", what,
			      r == -ENOMEM ? "out of memory" : why);
		return r;
	}
	l->m.align = 4096;
	r = attach_pvs(l, s, vg, map, rdonly, &l->m.align, what);
	if (r < 0) {
		lvm_map_free(map);
		return r;
	}
	if (map->align < l->m.align) {
		vdp_set_error("member %s: the LV's extents or stripes on its "
			      "PVs are aligned to %llu bytes, not to the %u "
			      "the PVs need for direct I/O",
			      what, (unsigned long long)map->align, l->m.align);
		lvm_map_free(map);
		return -EINVAL;
	}
	atomic_store(&l->map, map);
	l->m.size = map->size;
	return set_path(l, spec, vg->name, lv->name, vg->uuid, lv->uuid, what);
}

int vdp_member_lvm_open(const char *what, bool rdonly, struct vdp_member **out)
{
	struct lvm_spec spec;
	struct scan s = {0};
	const struct lvm_vg *vg = NULL;
	const struct lvm_lv *lv = NULL;
	struct lvm_member *l;
	bool dm = false;
	char why[300];
	int r;

	r = lvm_spec_parse(what, &spec, why, sizeof(why));
	if (r < 0) {
		vdp_set_error("member %s: %s", what, why);
		return r;
	}
	l = calloc(1, sizeof(*l));
	if (!l) {
		r = -ENOMEM;
		goto err_spec;
	}
	l->lock_fd = -1;
	l->rdonly = rdonly;
	pthread_mutex_init(&l->refresh_lock, NULL);
	l->m.ops = &lvm_ops;
	l->m.kind = VDP_MK_LVM;
	l->m.priv = l;
	l->m.id = &l->id;
	if (!spec.nodm && vdp_lvm_dm_available(NULL)) {
		dm = true;
		vdp_clear_error();
		r = open_dm(l, &spec, rdonly, what);
		if (r < 0 && r != -ENOENT && !*vdp_last_error())
			vdp_set_error("member %s: device-mapper lookup failed: "
				      "%s",
				      what, strerror(-r));
		if (r != -ENOENT)
			goto done;
	}
	/* No dm, or dm has no such device: the metadata on the PVs tells
	 * whether the LV exists (and, without dm, where it lies). */
	r = scan_devices(&spec, &s);
	if (r == -ENODEV) { /* a device named in a list: say for whom */
		char e[300];

		snprintf(e, sizeof(e), "%s", vdp_last_error());
		vdp_set_error("member %s: %s", what, e);
	}
	if (r == 0)
		r = choose_vg(&spec, &s, what, &vg);
	if (r < 0)
		goto done;
	lv = lvm_vg_find_lv(vg, spec.lv_uuid, spec.lv);
	if (!lv) {
		vdp_set_error("member %s: LV %s not found in VG %s (seqno "
			      "%llu, %u LVs)",
			      what, spec.lv, vg->name,
			      (unsigned long long)vg->seqno, vg->nlvs);
		r = -ENOENT;
		goto done;
	}
	if (dm) {
		vdp_set_error("member %s: LV %s/%s is inactive; activate it "
			      "(lvchange -ay %s/%s) or add dm=no to read it "
			      "from its PVs",
			      what, vg->name, lv->name, vg->name, lv->name);
		r = -ENXIO;
		goto done;
	}
	if (spec.nodm && vdp_lvm_dm_available(NULL)) {
		struct dm_lv d;
		char uuid[4 + 2 * LVM_UUID_LEN + 1];

		snprintf(uuid, sizeof(uuid), "LVM-%s%s", vg->uuid, lv->uuid);
		if (dm_lookup(uuid, NULL, &d) == 0 && d.exists) {
			vdp_set_error("member %s: LV %s/%s is active in "
				      "device-mapper (%s); use it without "
				      "dm=no",
				      what, vg->name, lv->name, d.name);
			r = -EBUSY;
			goto done;
		}
	}
	r = open_pvs(l, &spec, rdonly, what, &s, vg, lv);
done:
	if (r == 0) {
		snprintf(l->id.lv_uuid, sizeof(l->id.lv_uuid), "%s",
			 l->lv_uuid);
		l->spec = spec; /* now with both UUIDs: kept for refresh */
		memset(&spec, 0, sizeof(spec));
		*out = &l->m;
	} else {
		if (r == -ENOMEM && !*vdp_last_error())
			vdp_set_error("member %s: out of memory", what);
		lvm_close(&l->m);
	}
	scan_free(&s);
err_spec:
	lvm_spec_clear(&spec);
	return r;
}
