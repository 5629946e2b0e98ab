/* SPDX-License-Identifier: MIT */
/*
 * lvm_meta.h - pure functions over LVM2's on-disk bytes: the PV label,
 * the metadata area header, the text metadata of a volume group, the map
 * of a logical volume's linear and striped segments onto its PVs, and the
 * `lvm:VG/LV?...` member spec.  They read only the buffers they are given
 * (no I/O, no globals), so the fuzzer and the unit tests call them
 * directly; member_lvm.c does the reading.
 *
 * Every function treats its input as hostile: lengths, offsets and counts
 * are checked before use, and a refusal says why in WHY (one phrase,
 * without the device or LV name, which the caller adds).
 */
#ifndef VDP_LVM_META_H
#define VDP_LVM_META_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LVM_UUID_LEN 32		/* without dashes */
#define LVM_NAME_MAX 127	/* VG and LV names */
#define LVM_LABEL_SCAN 2048	/* the label is in one of sectors 0-3 */
#define LVM_MDA_HEADER_SIZE 512 /* metadata area header */
#define LVM_CRC_INIT 0xf597a6cfu
#define LVM_MAX_MDAS 2
#define LVM_MAX_STRIPES 128

/* lvm_crc: LVM2's checksum (CRC-32, reflected polynomial 0xedb88320, no
 * final inversion) of LEN bytes of BUF continuing from CRC. */
uint32_t lvm_crc(uint32_t crc, const void *buf, size_t len);

/* What a PV label says. */
struct lvm_label {
	char pv_uuid[LVM_UUID_LEN + 1];
	uint64_t dev_size;   /* bytes, as pvcreate saw the device */
	uint64_t data_start; /* byte offset of the first data area */
	unsigned nmdas;	     /* metadata areas (0 to LVM_MAX_MDAS) */
	uint64_t mda_off[LVM_MAX_MDAS], mda_size[LVM_MAX_MDAS];
};

/*
 * lvm_label_parse: finds and checks the label in the first LEN bytes of a
 * device (LVM_LABEL_SCAN bytes: sectors 0-3).  Returns 0, -ENOENT when no
 * sector holds "LABELONE" (not a PV), -EBADMSG when the label is there but
 * wrong (checksum, type, sector, pv_header out of bounds).
 */
int lvm_label_parse(const uint8_t *buf, size_t len, struct lvm_label *out,
		    char *why, size_t wl);

/* Where the current metadata text lies in a metadata area. */
struct lvm_rlocn {
	uint64_t off;  /* from the start of the area */
	uint64_t size; /* bytes, the terminating NUL included */
	uint32_t csum; /* lvm_crc of those bytes */
};

/*
 * lvm_mda_header_parse: checks the LVM_MDA_HEADER_SIZE bytes of BUF as the
 * header of the metadata area at byte START of its device, AREA_SIZE bytes
 * long (from the label): checksum, magic, version, start and size.
 * Returns 0 with the first raw_locn in OUT, -ENOENT when the area holds no
 * metadata (none written, or marked ignored), -EBADMSG when damaged.
 */
int lvm_mda_header_parse(const uint8_t *buf, uint64_t start, uint64_t area_size,
			 struct lvm_rlocn *out, char *why, size_t wl);

/*
 * lvm_mda_text: the metadata text RL locates in AREA (the whole metadata
 * area, AREA_SIZE bytes, header included), unwrapped if it runs past the
 * end of the area, its checksum checked.  On success *TEXT is a new
 * NUL-terminated string of *LEN bytes (free it).  -EBADMSG, -ENOMEM.
 */
int lvm_mda_text(const uint8_t *area, uint64_t area_size,
		 const struct lvm_rlocn *rl, char **text, size_t *len,
		 char *why, size_t wl);

struct lvm_pv {
	char *name; /* "pv0" */
	char uuid[LVM_UUID_LEN + 1];
	char *device; /* where LVM last saw it (a hint), or NULL */
	uint64_t dev_size, pe_start, pe_count; /* sectors, sectors, extents */
	bool missing;			       /* flags = ["MISSING"] */
};

/* One area of a segment: START extents into PV (an index into vg->pvs),
 * or, when PV is -1, into another LV named by LV (pvmove, raid images). */
struct lvm_area {
	int pv;
	char *lv;
	uint64_t start;
};

struct lvm_seg {
	uint64_t start, count; /* extents of the LV */
	char *type;	       /* "striped", "thin", "raid1", ... */
	unsigned nareas;       /* striped: stripe_count */
	uint64_t stripe_size;  /* sectors; 0 when one stripe */
	struct lvm_area *areas;
	char *origin; /* snapshot segments: the origin LV's name */
};

struct lvm_lv {
	char *name;
	char uuid[LVM_UUID_LEN + 1];
	bool visible, readable, writable, locked;
	unsigned nsegs;
	struct lvm_seg *segs;
};

struct lvm_vg {
	char *name;
	char uuid[LVM_UUID_LEN + 1];
	uint64_t seqno;
	uint64_t extent_size; /* sectors */
	bool writable, exported;
	char *lock_type; /* lvmlockd's, or NULL */
	unsigned npvs, nlvs;
	struct lvm_pv *pvs;
	struct lvm_lv *lvs;
};

/*
 * lvm_vg_parse: parses LEN bytes of TEXT (stopping at a NUL) as the text
 * metadata of one volume group.  Segments of any type are kept (their
 * type named), so that lvm_lv_map can refuse them by name.  Returns 0 with
 * a new *OUT (lvm_vg_free), -EBADMSG with the line at fault in WHY, or
 * -ENOMEM.
 */
int lvm_vg_parse(const char *text, size_t len, struct lvm_vg **out, char *why,
		 size_t wl);
void lvm_vg_free(struct lvm_vg *vg);

/* lvm_vg_find_lv: the LV with UUID (32 chars) if UUID is non-empty and one
 * has it, else the LV named NAME (if non-NULL), else NULL. */
const struct lvm_lv *lvm_vg_find_lv(const struct lvm_vg *vg, const char *uuid,
				    const char *name);

/* An LV segment in bytes: its stripes' starts on their PVs. */
struct lvm_map_seg {
	uint64_t start, len; /* bytes of the LV */
	uint64_t chunk;	     /* stripe size in bytes; len when one stripe */
	unsigned nstripes;
	unsigned *pv;	  /* per stripe: index into vg->pvs */
	uint64_t *pv_off; /* per stripe: byte offset on that PV */
};

struct lvm_map {
	uint64_t size; /* bytes of the LV */
	unsigned nsegs;
	struct lvm_map_seg *segs; /* by start, contiguous from 0 */
	uint64_t align;		  /* largest power of two (<= 1 MiB) that
				   * divides every boundary and offset */
};

/*
 * lvm_lv_map: the byte map of LV (of VG) onto its PVs.  Refuses, saying
 * why: segment types other than linear and striped (naming the type), a
 * hidden sub-LV, an LV under a pvmove (locked) or a snapshot's origin
 * (writes from the PVs would skip the copy-on-write), areas on other LVs
 * or on missing PVs, and any segment that does not fit its PVs or the
 * LV's extents.  Returns 0 with a new *OUT (lvm_map_free), -EINVAL (not
 * mappable), -EBADMSG (inconsistent metadata), -ENOMEM.
 */
int lvm_lv_map(const struct lvm_vg *vg, const struct lvm_lv *lv,
	       struct lvm_map **out, char *why, size_t wl);
void lvm_map_free(struct lvm_map *m);

/*
 * lvm_map_find: where byte OFF (< m->size) of the LV is: *PV (index into
 * vg->pvs), *PV_OFF on it, and *RUN, the bytes from there that continue on
 * that PV contiguously (to the end of the stripe chunk or the segment).
 * Returns 0, or -EINVAL when OFF is past the end.
 */
int lvm_map_find(const struct lvm_map *m, uint64_t off, unsigned *pv,
		 uint64_t *pv_off, uint64_t *run);

/* A parsed member spec: lvm:VG/LV[?uuid=VGUUID/LVUUID][&pv=DEV,DEV...] */
struct lvm_spec {
	char vg[LVM_NAME_MAX + 1], lv[LVM_NAME_MAX + 1];
	char vg_uuid[LVM_UUID_LEN + 1], lv_uuid[LVM_UUID_LEN + 1]; /* or "" */
	char *pvs; /* comma-separated device paths, or NULL */
	bool nodm; /* dm=no: read the PVs even where dm exists */
};

/*
 * lvm_spec_parse: parses SPEC ("lvm:" prefix included).  Names follow
 * LVM's rules (A-Z a-z 0-9 + _ . -, not starting with '-', not "." or
 * ".."), UUIDs are 32 letters and digits.  Returns 0 or -EINVAL with
 * WHY; -ENOMEM.  Free with lvm_spec_clear.
 */
int lvm_spec_parse(const char *spec, struct lvm_spec *out, char *why,
		   size_t wl);
void lvm_spec_clear(struct lvm_spec *s);

/* lvm_spec_format: the canonical spec of S into BUF (SIZE bytes);
 * returns its length, or -ENAMETOOLONG when it does not fit. */
int lvm_spec_format(const struct lvm_spec *s, char *buf, size_t size);

/* lvm_dm_name: the device-mapper name of VG/LV, each '-' in either name
 * doubled and the two joined by '-' ("my-vg", "lv" -> "my--vg-lv"), into
 * OUT (SIZE bytes).  Returns its length or -ENAMETOOLONG. */
int lvm_dm_name(const char *vg, const char *lv, char *out, size_t size);

/* lvm_dm_name_split: the inverse, into S->vg and S->lv (the rest of S
 * untouched); false when NAME is not such a name of two valid names. */
bool lvm_dm_name_split(const char *name, struct lvm_spec *s);

/* lvm_uuid_strip: IN ("xxxxxx-xxxx-...", dashes anywhere) to 32 letters
 * and digits in OUT; false when it is not a UUID. */
bool lvm_uuid_strip(const char *in, char out[LVM_UUID_LEN + 1]);

#endif
