/* SPDX-License-Identifier: MIT */
/*
 * check.h - the few assertion macros the unit tests share.  A failed
 * CHECK prints where and why and counts; main returns non-zero if any
 * failed, and prints the "N passed, N failed" line CI reads.  Also the
 * removal of a test's temporary directory.
 */
#ifndef VDP_TEST_CHECK_H
#define VDP_TEST_CHECK_H

#include <fcntl.h>
#include <ftw.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static int checks_passed, checks_failed;

#define CHECK(cond)                                                            \
	do {                                                                   \
		if (cond) {                                                    \
			checks_passed++;                                       \
		} else {                                                       \
			checks_failed++;                                       \
			fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, \
				__LINE__, #cond);                              \
		}                                                              \
	} while (0)

#define CHECK_EQ(a, b)                                                         \
	do {                                                                   \
		long long va_ = (long long)(a), vb_ = (long long)(b);          \
		if (va_ == vb_) {                                              \
			checks_passed++;                                       \
		} else {                                                       \
			checks_failed++;                                       \
			fprintf(stderr,                                        \
				"%s:%d: %s == %lld, expected %s == %lld\n",    \
				__FILE__, __LINE__, #a, va_, #b, vb_);         \
		}                                                              \
	} while (0)

static int remove_one(const char *path, const struct stat *st, int flag,
		      struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path) < 0 ? -1 : 0;
}

/* Makes the test's temporary directory (DIR, 64 bytes) in /var/tmp, with
 * the pool registry inside it; false on failure. */
static inline bool make_test_dir(char dir[64])
{
	char reg[96];

	snprintf(dir, 64, "/var/tmp/vdp-unit-XXXXXX");
	if (!mkdtemp(dir))
		return false;
	snprintf(reg, sizeof(reg), "%s/reg", dir);
	return setenv("VDPOOL_REGISTRY", reg, 1) == 0;
}

/* Makes PATH (a member) a sparse file of SIZE zero bytes; false (and says
 * why) on failure. */
static inline bool make_member(const char *path, off_t size)
{
	int fd = open(path, O_CREAT | O_RDWR | O_TRUNC, 0600);
	bool ok = fd >= 0 && ftruncate(fd, size) == 0;

	if (!ok)
		perror(path);
	if (fd >= 0)
		close(fd);
	return ok;
}

/* Removes the test's temporary directory DIR and all in it (members,
 * the registry), unless a check failed: then it stays to be looked at. */
static inline void remove_test_dir(const char *dir)
{
	if (checks_failed == 0 &&
	    nftw(dir, remove_one, 16, FTW_DEPTH | FTW_PHYS) < 0)
		fprintf(stderr, "cannot remove %s\n", dir);
}

static inline int check_done(const char *name)
{
	printf("%s: %d passed, %d failed\n", name, checks_passed,
	       checks_failed);
	return checks_failed ? 1 : 0;
}

#endif
