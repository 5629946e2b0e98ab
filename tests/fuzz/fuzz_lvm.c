/* SPDX-License-Identifier: MIT */
/*
 * fuzz_lvm.c - libFuzzer target: bytes -> LVM2's on-disk format as
 * store/lvm_meta.c reads it, the parser of bytes that come from any disk
 * vdpool scans for PVs.  The first byte picks what the rest is:
 *   0  the first sectors of a device: the PV label
 *   1  a metadata area (header at 0): its header, then its text, then
 *      that text as VG metadata, as member_lvm.c chains them
 *   2  VG text metadata; then every LV is mapped onto its PVs
 *   3  a member spec (lvm:VG/LV?...)
 *
 * Properties: a refusal says why; a label names at most two metadata
 * areas; an accepted text is NUL-terminated and as long as it says; every
 * byte of a mapped LV lands inside the extents of a PV of the VG, in a run
 * that stays inside them; a spec that is accepted formats to a spec that
 * parses to the same fields, and its device-mapper name splits back into
 * its VG and LV names.
 */
#include <errno.h>
#include <string.h>

#include "fuzz.h"
#include "lvm_meta.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Checks where byte OFF of LV's map M lands. */
static void check_at(const struct lvm_vg *vg, const struct lvm_map *m,
		     uint64_t off)
{
	uint64_t ext = vg->extent_size * 512, pv_off, run, lo, hi;
	unsigned pv;

	FUZZ_ASSERT(lvm_map_find(m, off, &pv, &pv_off, &run) == 0);
	FUZZ_ASSERT(pv < vg->npvs);
	FUZZ_ASSERT(run > 0 && run <= m->size - off);
	lo = vg->pvs[pv].pe_start * 512;
	hi = lo + vg->pvs[pv].pe_count * ext;
	FUZZ_ASSERT(pv_off >= lo && pv_off < hi && run <= hi - pv_off);
}

static void vg_text(const char *text, size_t len)
{
	struct lvm_vg *vg = NULL;
	char why[300] = "";

	if (lvm_vg_parse(text, len, &vg, why, sizeof(why)) < 0) {
		FUZZ_ASSERT(why[0]);
		FUZZ_ASSERT(vg == NULL);
		return;
	}
	for (unsigned i = 0; i < vg->nlvs; i++) {
		const struct lvm_lv *lv = &vg->lvs[i];
		struct lvm_map *m = NULL;

		FUZZ_ASSERT(lvm_vg_find_lv(vg, lv->uuid, NULL) != NULL);
		why[0] = 0;
		if (lvm_lv_map(vg, lv, &m, why, sizeof(why)) < 0) {
			FUZZ_ASSERT(why[0] && m == NULL);
			continue;
		}
		FUZZ_ASSERT(m->size > 0 && m->align > 0);
		FUZZ_ASSERT(lvm_map_find(m, m->size, &(unsigned){0},
					 &(uint64_t){0},
					 &(uint64_t){0}) == -EINVAL);
		/* Each segment's first and last byte, and the middle. */
		for (unsigned s = 0; s < m->nsegs; s++) {
			const struct lvm_map_seg *ms = &m->segs[s];

			check_at(vg, m, ms->start);
			check_at(vg, m,
				 ms->start + ms->len / 2 + 1 < m->size
					 ? ms->start + ms->len / 2 + 1
					 : ms->start);
			check_at(vg, m, ms->start + ms->len - 1);
		}
		lvm_map_free(m);
	}
	lvm_vg_free(vg);
}

static void label(const uint8_t *d, size_t n)
{
	struct lvm_label lb;
	char why[200] = "";

	if (lvm_label_parse(d, n, &lb, why, sizeof(why)) < 0) {
		FUZZ_ASSERT(why[0]);
		return;
	}
	FUZZ_ASSERT(lb.nmdas <= LVM_MAX_MDAS);
	FUZZ_ASSERT(strlen(lb.pv_uuid) == LVM_UUID_LEN);
}

static void area(const uint8_t *d, size_t n)
{
	struct lvm_rlocn rl;
	char why[200] = "", *text;
	size_t len;

	if (n < LVM_MDA_HEADER_SIZE)
		return;
	/* The area as the label would describe it: at 4096, all of it. */
	if (lvm_mda_header_parse(d, 4096, n, &rl, why, sizeof(why)) < 0) {
		FUZZ_ASSERT(why[0]);
		return;
	}
	if (lvm_mda_text(d, n, &rl, &text, &len, why, sizeof(why)) < 0) {
		FUZZ_ASSERT(why[0]);
		return;
	}
	FUZZ_ASSERT(len < rl.size + 1 && text[len] == 0);
	vg_text(text, len);
	free(text);
}

static void spec(const uint8_t *d, size_t n)
{
	/* Not strndup: the input holds no NUL (strict_string_checks). */
	char *s = malloc(n + 1), why[200] = "", buf[4096];
	struct lvm_spec a, b;

	if (!s)
		return;
	memcpy(s, d, n);
	s[n] = 0;
	if (lvm_spec_parse(s, &a, why, sizeof(why)) < 0) {
		FUZZ_ASSERT(why[0]);
		free(s);
		return;
	}
	/* The dm name of an accepted spec splits back into its names. */
	if (lvm_dm_name(a.vg, a.lv, buf, sizeof(buf)) >= 0) {
		FUZZ_ASSERT(lvm_dm_name_split(buf, &b));
		FUZZ_ASSERT(strcmp(a.vg, b.vg) == 0 && strcmp(a.lv, b.lv) == 0);
	}
	if (lvm_spec_format(&a, buf, sizeof(buf)) >= 0) {
		FUZZ_ASSERT(lvm_spec_parse(buf, &b, why, sizeof(why)) == 0);
		FUZZ_ASSERT(strcmp(a.vg, b.vg) == 0 && strcmp(a.lv, b.lv) == 0);
		FUZZ_ASSERT(strcmp(a.vg_uuid, b.vg_uuid) == 0 &&
			    strcmp(a.lv_uuid, b.lv_uuid) == 0);
		FUZZ_ASSERT(!a.pvs == !b.pvs &&
			    (!a.pvs || strcmp(a.pvs, b.pvs) == 0));
		FUZZ_ASSERT(a.nodm == b.nodm);
		lvm_spec_clear(&b);
	}
	lvm_spec_clear(&a);
	free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	switch (data[0] & 3) {
	case 0:
		label(data + 1, size - 1);
		break;
	case 1:
		area(data + 1, size - 1);
		break;
	case 2:
		vg_text((const char *)data + 1, size - 1);
		break;
	default:
		spec(data + 1, size - 1);
		break;
	}
	return 0;
}
