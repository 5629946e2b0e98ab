/* SPDX-License-Identifier: MIT */
/*
 * check.h - the few assertion macros the unit tests share.  A failed
 * CHECK prints where and why and counts; main returns non-zero if any
 * failed, and prints the "N passed, N failed" line CI reads.
 */
#ifndef VDP_TEST_CHECK_H
#define VDP_TEST_CHECK_H

#include <stdio.h>
#include <stdlib.h>

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

static inline int check_done(const char *name)
{
	printf("%s: %d passed, %d failed\n", name, checks_passed,
	       checks_failed);
	return checks_failed ? 1 : 0;
}

#endif
