/* SPDX-License-Identifier: MIT */
/*
 * test_reshape.c - adding and removing members under a writer, no FUSE:
 * a thread writes at random into two disks (one of them a clone's source,
 * so some extents are shared) while the main thread adds a member and
 * removes another, again and again, each removal moving extents the
 * writer is writing.  Every byte must match an in-memory model after each
 * removal and after a reopen, vdp_pool_check must find nothing, and a
 * member that grew must be grown by resize and by open.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "vdpool.h"

#define DISK (4u << 20)
#define EXT (1u << 16)
#define MSIZE (32u << 20)

static char dir[64], mp[4][96];
static uint8_t *model[2], *snap; /* disk a, disk b; the clone of a */
static uint64_t ino[3];
static struct vdp_pool *pool;
static atomic_bool stop;

static void report(void *ctx, const char *line)
{
	(void)ctx;
	fprintf(stderr, "check: %s\n", line);
}

static uint64_t xorshift(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* Random writes into disks a and b, each reflected in its model once
 * vdp_write returned (one writer: the model is what must be there). */
static void *writer(void *arg)
{
	uint64_t s = 0x12345678u;
	uint8_t buf[8192];

	(void)arg;
	while (!atomic_load(&stop)) {
		unsigned d = xorshift(&s) & 1;
		size_t len = 1 + xorshift(&s) % sizeof(buf);
		uint64_t off = xorshift(&s) % (DISK - len);

		for (size_t i = 0; i < len; i++)
			buf[i] = (uint8_t)xorshift(&s);
		CHECK_EQ(vdp_write(pool, ino[d], buf, len, off),
			 (long long)len);
		memcpy(model[d] + off, buf, len);
	}
	return NULL;
}

static void compare(const char *when)
{
	uint8_t *got = malloc(DISK);

	for (int d = 0; d < 3; d++) {
		const uint8_t *want = d < 2 ? model[d] : snap;

		CHECK_EQ(vdp_read(pool, ino[d], got, DISK, 0), DISK);
		if (memcmp(got, want, DISK) != 0) {
			fprintf(stderr, "%s: disk %d differs from its model\n",
				when, d);
			CHECK(0);
		}
	}
	free(got);
}

static void wait_task(void)
{
	struct vdp_task_info t;

	for (;;) {
		vdp_pool_task(pool, &t);
		if (t.state != VDP_TASK_RUNNING)
			break;
		usleep(2000);
	}
	if (t.state != VDP_TASK_DONE)
		fprintf(stderr, "task: state %d: %s\n", t.state, t.error);
	CHECK_EQ(t.state, VDP_TASK_DONE);
}

int main(void)
{
	const char *two[2] = {mp[0], mp[1]};
	struct vdp_create_opts o = {.name = "rs", .extent_shift = 16};
	struct vdp_attr a;
	struct vdp_statfs st, st2;
	struct vdp_task_info ti;
	char reg[128];
	uint64_t old, now;
	pthread_t t;

	snprintf(dir, sizeof(dir), "/tmp/vdp-reshape-XXXXXX");
	if (!mkdtemp(dir))
		return 1;
	snprintf(reg, sizeof(reg), "%s/reg", dir);
	setenv("VDPOOL_REGISTRY", reg, 1);
	for (int i = 0; i < 4; i++) {
		snprintf(mp[i], sizeof(mp[i]), "%s/m%d.img", dir, i);
		if (!make_member(mp[i], MSIZE))
			exit(1);
	}
	CHECK_EQ(vdp_pool_create(two, 2, &o), 0);
	CHECK_EQ(vdp_pool_open(mp[0], 0, &pool), 0);
	if (!pool)
		return check_done("test_reshape");
	model[0] = calloc(1, DISK);
	model[1] = calloc(1, DISK);
	snap = malloc(DISK);
	for (int d = 0; d < 3; d++) {
		char name[8];

		snprintf(name, sizeof(name), "d%d", d);
		CHECK_EQ(vdp_create(pool, VDP_ROOT_INO, name, S_IFREG | 0600, 0,
				    0, &a),
			 0);
		ino[d] = a.ino;
	}
	for (unsigned i = 0; i < DISK; i++)
		model[0][i] = model[1][i] = (uint8_t)(i * 7 + i / 4096);
	CHECK_EQ(vdp_write(pool, ino[0], model[0], DISK, 0), DISK);
	CHECK_EQ(vdp_write(pool, ino[1], model[1], DISK, 0), DISK);
	/* d2 shares every extent of d0; d0's writer copies on write. */
	CHECK_EQ(vdp_copy_range(pool, ino[0], 0, ino[2], 0, DISK), DISK);
	memcpy(snap, model[0], DISK);
	CHECK_EQ(vdp_pool_commit(pool), 0);

	/* Errors first: the last member, a member of this pool, not one. */
	CHECK_EQ(vdp_pool_add_member(pool, mp[1], false), -EEXIST);
	CHECK_EQ(vdp_pool_remove_member(pool, mp[3]), -ENOENT);

	atomic_store(&stop, false);
	pthread_create(&t, NULL, writer, NULL);
	/* m2 in, m1 out (it holds a metadata copy); m1 in, m0 out (the
	 * other copy); m3 in, m2 out. */
	const int add[3] = {2, 1, 3}, del[3] = {1, 0, 2};

	for (int round = 0; round < 3; round++) {
		CHECK_EQ(vdp_pool_add_member(pool, mp[add[round]], false), 0);
		CHECK_EQ(vdp_pool_remove_member(pool, mp[del[round]]), 0);
		wait_task();
	}
	atomic_store(&stop, true);
	pthread_join(t, NULL);
	compare("after three removals");
	CHECK_EQ(vdp_pool_check(pool, report, NULL), 0);

	/* Balance, then a member that grew: resize online, then at open. */
	CHECK_EQ(vdp_pool_balance(pool), 0);
	wait_task();
	compare("after balance");
	vdp_pool_statfs(pool, &st);
	CHECK(make_member(mp[2], MSIZE)); /* m2 is out: a spare */
	CHECK_EQ(truncate(mp[3], MSIZE + (4u << 20)), 0);
	CHECK_EQ(vdp_pool_resize_member(pool, mp[3], &old, &now), 0);
	CHECK_EQ(now - old, 4u << 20);
	vdp_pool_statfs(pool, &st2);
	CHECK_EQ(st2.total_extents - st.total_extents, (4u << 20) / EXT);
	CHECK_EQ(truncate(mp[3], MSIZE - (1u << 20)), 0);
	CHECK_EQ(vdp_pool_resize_member(pool, mp[3], &old, &now), -EINVAL);
	CHECK_EQ(truncate(mp[3], MSIZE + (4u << 20)), 0);
	CHECK_EQ(vdp_pool_close(pool), 0);
	CHECK_EQ(truncate(mp[1], MSIZE + (8u << 20)), 0);
	CHECK_EQ(vdp_pool_open(mp[3], 0, &pool), 0);
	vdp_pool_statfs(pool, &st);
	CHECK_EQ(st.total_extents - st2.total_extents, (8u << 20) / EXT);
	compare("after reopen");
	CHECK_EQ(vdp_pool_check(pool, report, NULL), 0);

	/* Cancel: a removal stopped at once leaves the member active. */
	CHECK_EQ(vdp_pool_add_member(pool, mp[2], false), 0);
	CHECK_EQ(vdp_pool_remove_member(pool, mp[1]), 0);
	CHECK_EQ(vdp_pool_cancel_task(pool), 0);
	CHECK_EQ(vdp_pool_cancel_task(pool), -ENOENT);
	compare("after cancel");

	/* A removal's rate limit is kept with its member: closed part way
	 * (one extent a second), the pool resumes it at that rate. */
	vdp_pool_set_move_rate(pool, EXT);
	CHECK_EQ(vdp_pool_remove_member(pool, mp[1]), 0);
	CHECK_EQ(vdp_pool_close(pool), 0);
	CHECK_EQ(vdp_pool_open(mp[3], 0, &pool), 0);
	vdp_pool_task(pool, &ti);
	CHECK_EQ(ti.state, VDP_TASK_RUNNING);
	CHECK_EQ(ti.rate, EXT);
	vdp_pool_set_move_rate(pool, 0);
	wait_task();
	compare("after a resumed removal");
	CHECK_EQ(vdp_pool_close(pool), 0);
	CHECK_EQ(vdp_pool_open(mp[3], VDP_OPEN_RDONLY, &pool), 0);
	CHECK_EQ(vdp_pool_check(pool, report, NULL), 0);
	compare("read-only, at the end");
	vdp_pool_close(pool);

	remove_test_dir(dir);
	free(model[0]);
	free(model[1]);
	free(snap);
	return check_done("test_reshape");
}
