/* SPDX-License-Identifier: MIT */
/*
 * crashtest.c - the crash-test runner: power loss at random points of a
 * seeded workload, and an oracle that says what the pool may hold after.
 *
 * For point I = 1..N, with seed S_I derived from the base seed and I:
 *   1. dry run: a fresh pool (two 32 MiB file members on /dev/shm, 64 KiB
 *      extents) opened in this process under "powerloss:manual", the
 *      workload of S_I, a check of the live pool against the oracle, and
 *      the member writes and flushes it took;
 *   2. crash run: another fresh pool, the same workload, under a power-loss
 *      layer that fires after K writes or K flushes (K random within the
 *      dry run's count) keeping none, all, a prefix, a random subset or
 *      torn pieces of the unflushed writes;
 *   3. after the crash, through the real code and without layers: the pool
 *      opens, vdp_pool_check finds nothing, the namespace is the synced one
 *      or a later one, every synced byte is there and every unsynced sector
 *      holds old or new data of its own disk (oracle.h); then a writable
 *      open and close, and the check again.
 * In --mount mode step 2 runs through a real mount: `vdpool mount -f` with
 * VDPOOL_TEST_LAYERS=...,then=exit in the daemon's environment, the
 * workload as POSIX calls; the daemon _exit(86)s at the crash (some points
 * instead send it SIGUSR2 at a random moment); the dead mount is detached,
 * the pool checked, mounted again without layers and verified through the
 * mount.  The dry run stays in-process (the daemon's counts are its own),
 * so K only approximates; a point whose trigger was not reached gets
 * SIGUSR2 at the end.
 *
 * Each point runs in a child process (two at a time by default), so a
 * point's layers, signals and memory never reach the next.  The output is
 * one line per failed point and a summary with the command that replays
 * each failure:  crashtest --seed S --point I [--mount]
 *
 * Long mode: `crashtest --long` runs 3000 points in-process (2 to 5
 * minutes on the 2-core test machine), `crashtest --long --mount` 300
 * through the mount (under a minute); any --points N overrides.  CTest runs
 * crash.store (300 points) and crash.fuse (40 points, --mount).
 * docs/testing/crash.md explains the oracle and how to replay.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "backends.h"
#include "layer.h"
#include "oracle.h"
#include "vdpool.h"
#include "workload.h"

#ifndef CRASH_VDPOOL
#define CRASH_VDPOOL "vdpool"
#endif
#ifndef CRASH_VDPOOLFS
#define CRASH_VDPOOLFS "vdpoolfs"
#endif

#define MEMBER_SIZE (32ull << 20)
#define SPARE_SIZE (4ull << 30) /* --reshape's added member, sparse */
#define EXTENT_SHIFT 16
#define POINT_TIMEOUT 300 /* seconds; a hung point fails */

static const char *const keep_names[] = {"none", "all", "prefix", "random",
					 "torn"};

static struct {
	uint64_t seed;
	unsigned points, point, jobs, verbose;
	bool mount, keep, seed_given;
	char vdpool[PATH_MAX], vdpoolfs[PATH_MAX];
	char base[64]; /* this run's directory */
} opt = {.jobs = 2};

static uint64_t mix64(uint64_t z)
{
	z += 0x9e3779b97f4a7c15ull;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* ---- one point ------------------------------------------------------------
 */

struct point {
	unsigned index;
	uint64_t seed; /* the workload's */
	char dir[128];
	char m[3][160]; /* m[2]: the spare member --reshape adds */
	char log[160];
	char trigger[160]; /* as the failure line shows it */
	int state;	   /* the namespace state recovered */
	char fail[2048];
	FILE *trace;
};

static void problems_report(void *ctx, const char *line)
{
	char *first = ctx;

	if (!first[0])
		snprintf(first, 512, "%s", line);
}

/* A fresh pool on members P->m[0], P->m[1] (made now), and an empty
 * spare member file P->m[2]. */
static int make_pool(struct point *p)
{
	const char *members[2] = {p->m[0], p->m[1]};
	struct vdp_create_opts o = {
		.name = "crash", .extent_shift = EXTENT_SHIFT, .force = true};
	int r;

	for (int i = 0; i < 3; i++) {
		int fd = open(p->m[i], O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC,
			      0644);

		/* The spare of odd points is large (and sparse): adding it
		 * adds a metadata chunk too (the pool outgrows 256 x its
		 * area); even points keep a pool that can run full. */
		if (fd < 0 ||
		    ftruncate(fd, (off_t)(i == 2 && (p->index & 1)
						  ? SPARE_SIZE
						  : MEMBER_SIZE)) < 0) {
			snprintf(p->fail, sizeof(p->fail), "member %s: %s",
				 p->m[i], strerror(errno));
			if (fd >= 0)
				close(fd);
			return -1;
		}
		close(fd);
	}
	r = vdp_pool_create(members, 2, &o);
	if (r < 0) {
		snprintf(p->fail, sizeof(p->fail), "vdp_pool_create: %s",
			 vdp_last_error());
		return -1;
	}
	return 0;
}

static int open_pool(struct point *p, unsigned flags, struct vdp_pool **out,
		     const char *when)
{
	int r = vdp_pool_open(p->m[0], flags, out);

	if (r < 0) {
		snprintf(p->fail, sizeof(p->fail),
			 "%s: the pool does not open: %s", when,
			 vdp_last_error());
		return -1;
	}
	vdp_pool_set_commit_interval(*out, 0);
	vdp_pool_set_discard_sync(*out, true);
	return 0;
}

/* vdp_pool_check on a read-only open of the pool. */
static int check_pool(struct point *p, const char *when)
{
	struct vdp_pool *pool;
	char first[512] = "";
	int r;

	if (open_pool(p, VDP_OPEN_RDONLY, &pool, when) < 0)
		return -1;
	r = vdp_pool_check(pool, problems_report, first);
	vdp_pool_close(pool);
	if (r != 0) {
		snprintf(p->fail, sizeof(p->fail), "%s: check: %s", when,
			 r < 0 ? strerror(-r) : first);
		return -1;
	}
	return 0;
}

/* Puts "WHEN: " before the failure line. */
static void fail_prefix(struct point *p, const char *when)
{
	size_t l = strlen(when) + 2;

	if (l >= sizeof(p->fail))
		return;
	memmove(p->fail + l, p->fail, sizeof(p->fail) - l);
	p->fail[sizeof(p->fail) - 1] = 0;
	memcpy(p->fail, when, l - 2);
	memcpy(p->fail + l - 2, ": ", 2);
}

/* The in-process dry run: the workload without a crash; its counts. */
static int dry_run(struct point *p, uint64_t *writes, uint64_t *flushes,
		   struct wl_stats *st)
{
	struct vdp_pool *pool;
	struct backend *b;
	struct oracle *o;
	enum wl_result res;
	int r = -1;

	if (make_pool(p) < 0)
		return -1;
	/* A power-loss layer without a trigger: it only counts. */
	if (vdp_layers_set("powerloss:manual") < 0) {
		snprintf(p->fail, sizeof(p->fail), "layers: %s",
			 vdp_last_error());
		return -1;
	}
	if (open_pool(p, 0, &pool, "dry run") < 0)
		return -1;
	o = oracle_new(p->seed);
	b = store_backend_new(pool);
	if (!o || !b) {
		snprintf(p->fail, sizeof(p->fail), "out of memory");
		goto out;
	}
	store_backend_set_reshape(b, p->m[2], p->m[1]);
	if (p->trace && opt.verbose > 1)
		fprintf(p->trace, " dry run:\n");
	res = workload_run(p->seed, b, o, true,
			   opt.verbose > 1 ? p->trace : NULL, st, p->fail,
			   sizeof(p->fail));
	vdp_layers_counts(writes, flushes);
	if (res == WL_CRASHED)
		snprintf(p->fail, sizeof(p->fail),
			 "the power went without a trigger");
	if (res != WL_DONE ||
	    verify_pool(b, o, true, p->trace, p->fail, sizeof(p->fail)) < 0) {
		fail_prefix(p, "dry run");
		goto out;
	}
	r = 0;
out:
	store_backend_free(b);
	if (vdp_pool_close(pool) < 0 && r == 0) {
		snprintf(p->fail, sizeof(p->fail), "dry run: close: %s",
			 vdp_last_error());
		r = -1;
	}
	vdp_layers_set(NULL);
	oracle_free(o);
	if (r == 0)
		r = check_pool(p, "dry run");
	return r;
}

struct trigger {
	bool by_flushes, signal_only, at_end, all_async;
	uint64_t k, seed;
	unsigned keep, sig_step, sig_delay_us, commit_ms;
};

static void choose_trigger(struct point *p, uint64_t writes, uint64_t flushes,
			   unsigned steps, struct trigger *t)
{
	static const unsigned commit_ms[] = {0, 20, 100, 500};
	uint64_t r = mix64(p->seed ^ 0x7472696767657273ull);

	memset(t, 0, sizeof(*t));
	t->by_flushes = (r = mix64(r)) % 100 < 30 && flushes > 0;
	t->k = 1 + (r = mix64(r)) %
			   (t->by_flushes ? flushes : (writes ? writes : 1));
	t->keep = (unsigned)((r = mix64(r)) % 5);
	t->seed = (r = mix64(r)) % 1000000;
	if (opt.mount) {
		t->signal_only = (r = mix64(r)) % 100 < 25;
		t->sig_step = (unsigned)((r = mix64(r)) % (steps ? steps : 1));
		t->sig_delay_us = (unsigned)((r = mix64(r)) % 3000);
		t->commit_ms = commit_ms[(r = mix64(r)) % 4];
		t->all_async = (r = mix64(r)) % 2;
	}
}

static void layers_spec(const struct trigger *t, char *s, size_t sl)
{
	size_t at;

	if (t->signal_only)
		at = (size_t)snprintf(s, sl, "powerloss:signal=USR2");
	else
		at = (size_t)snprintf(s, sl, "powerloss:%s=%llu",
				      t->by_flushes ? "after_flushes"
						    : "after_writes",
				      (unsigned long long)t->k);
	snprintf(s + at, sl - at, "%s,keep=%s,seed=%llu,then=%s",
		 opt.mount && !t->signal_only ? ",signal=USR2" : "",
		 keep_names[t->keep], (unsigned long long)t->seed,
		 opt.mount ? "exit" : "freeze");
}

/* The trigger as a failure line shows it: the layers' spec and, through a
 * mount, the commit interval and when the signal goes. */
static void describe_trigger(struct point *p, const struct trigger *t)
{
	size_t at;

	layers_spec(t, p->trigger, sizeof(p->trigger));
	at = strlen(p->trigger);
	if (opt.mount)
		at += (size_t)snprintf(p->trigger + at, sizeof(p->trigger) - at,
				       ", commit_interval=%u%s", t->commit_ms,
				       t->all_async ? ", all I/O asynchronous"
						    : "");
	if (t->signal_only && at < sizeof(p->trigger))
		snprintf(p->trigger + at, sizeof(p->trigger) - at,
			 ", SIGUSR2 %u us into step %u", t->sig_delay_us,
			 t->sig_step);
}

/* The checks after a crash, in-process: read-only open, verify, then a
 * writable open and close, and the check again. */
static int verify_store(struct point *p, struct oracle *o)
{
	struct vdp_pool *pool;
	struct backend *b;
	int r;

	if (check_pool(p, "after the crash") < 0)
		return -1;
	if (open_pool(p, VDP_OPEN_RDONLY, &pool, "after the crash") < 0)
		return -1;
	b = store_backend_new(pool);
	r = b ? verify_pool(b, o, false, p->trace, p->fail, sizeof(p->fail))
	      : -1;
	p->state = r;
	store_backend_free(b);
	vdp_pool_close(pool);
	if (r < 0)
		return -1;
	if (open_pool(p, 0, &pool, "writable, after the crash") < 0)
		return -1;
	if (vdp_pool_close(pool) < 0) {
		snprintf(p->fail, sizeof(p->fail), "close after the crash: %s",
			 vdp_last_error());
		return -1;
	}
	return check_pool(p, "after a writable open and close");
}

/* The crash run in-process. */
static int crash_store(struct point *p, struct trigger *t, struct oracle *o,
		       struct wl_stats *st)
{
	struct vdp_pool *pool;
	struct backend *b;
	enum wl_result res;
	char spec[256];

	layers_spec(t, spec, sizeof(spec));
	if (make_pool(p) < 0)
		return -1;
	if (vdp_layers_set(spec) < 0) {
		snprintf(p->fail, sizeof(p->fail), "layers %s: %s", spec,
			 vdp_last_error());
		return -1;
	}
	if (open_pool(p, 0, &pool, "crash run") < 0)
		return -1;
	b = store_backend_new(pool);
	if (!b) {
		snprintf(p->fail, sizeof(p->fail), "out of memory");
		vdp_pool_close(pool);
		return -1;
	}
	store_backend_set_reshape(b, p->m[2], p->m[1]);
	if (p->trace && opt.verbose > 1)
		fprintf(p->trace, " crash run (%s):\n", spec);
	res = workload_run(p->seed, b, o, true,
			   opt.verbose > 1 ? p->trace : NULL, st, p->fail,
			   sizeof(p->fail));
	store_backend_free(b);
	if (res == WL_FAILED) {
		vdp_pool_close(pool);
		vdp_layers_set(NULL);
		return -1;
	}
	if (!vdp_powerloss_happened()) {
		/* The trigger lay in the final close: crash before it. */
		t->at_end = true;
		vdp_powerloss_now();
	}
	vdp_pool_close(pool); /* its commit fails: the members are frozen */
	vdp_layers_set(NULL);
	return verify_store(p, o);
}

/* The crash run through a mount. */
static int crash_mount(struct point *p, struct trigger *t, struct oracle *o,
		       struct wl_stats *st)
{
	char spec[256], mnt[160], reg[160], pidfile[160], why[512];
	struct mount_cfg c = {.vdpool = opt.vdpool,
			      .vdpoolfs = opt.vdpoolfs,
			      .registry = reg,
			      .log = p->log,
			      .pidfile = pidfile,
			      .commit_ms = t->commit_ms,
			      .all_async = t->all_async};
	struct backend *b;
	enum wl_result res;
	bool at_end;
	int r;

	layers_spec(t, spec, sizeof(spec));
	/* The daemon's control socket goes with the point's directory (a
	 * daemon that _exit()s leaves it behind). */
	setenv("VDPOOL_RUN_DIR", p->dir, 1);
	snprintf(pidfile, sizeof(pidfile), "%s/daemon.pid", p->dir);
	snprintf(mnt, sizeof(mnt), "%s/mnt", p->dir);
	snprintf(reg, sizeof(reg), "%s/registry", p->dir);
	if (make_pool(p) < 0)
		return -1;
	if (mount_backend_start(p->m[0], mnt, spec, &c, &b, why, sizeof(why)) <
	    0) {
		snprintf(p->fail, sizeof(p->fail), "mount: %s", why);
		return -1;
	}
	if (t->signal_only)
		mount_backend_plan_signal(b, t->sig_step, t->sig_delay_us);
	if (p->trace && opt.verbose > 1)
		fprintf(p->trace, " crash run (%s):\n", spec);
	res = workload_run(p->seed, b, o, true,
			   opt.verbose > 1 ? p->trace : NULL, st, p->fail,
			   sizeof(p->fail));
	r = mount_backend_crash_end(b, &at_end, why, sizeof(why));
	t->at_end = at_end;
	if (res == WL_FAILED)
		return -1;
	if (r < 0) {
		snprintf(p->fail, sizeof(p->fail), "%s", why);
		return -1;
	}
	if (check_pool(p, "after the crash") < 0)
		return -1;
	c.commit_ms = 2000;
	if (mount_backend_start(p->m[0], mnt, NULL, &c, &b, why, sizeof(why)) <
	    0) {
		snprintf(p->fail, sizeof(p->fail), "mount after the crash: %s",
			 why);
		return -1;
	}
	r = verify_pool(b, o, false, p->trace, p->fail, sizeof(p->fail));
	p->state = r;
	if (mount_backend_stop(b, why, sizeof(why)) < 0 && r == 0) {
		snprintf(p->fail, sizeof(p->fail),
			 "unmount after the crash: %s", why);
		r = -1;
	}
	if (r < 0)
		return -1;
	return check_pool(p, "after the remount");
}

/* Runs point P; 0 passed, -1 failed (P->fail says why). */
static int run_point(struct point *p)
{
	uint64_t writes = 0, flushes = 0;
	struct wl_stats dst, st;
	struct trigger t;
	struct oracle *o;
	int r;

	p->state = -1;
	if (dry_run(p, &writes, &flushes, &dst) < 0)
		return -1;
	choose_trigger(p, writes, flushes, dst.steps, &t);
	describe_trigger(p, &t);
	o = oracle_new(p->seed);
	if (!o) {
		snprintf(p->fail, sizeof(p->fail), "out of memory");
		return -1;
	}
	r = opt.mount ? crash_mount(p, &t, o, &st) : crash_store(p, &t, o, &st);
	if (opt.verbose)
		printf("point %u: %s; dry run %u steps, %llu writes, %llu "
		       "flushes%s; crash at step %u (%s)%s; %u writes (%u "
		       "batches, %u with an fdatasync), %u copies, %u syncs, "
		       "%u ENOSPC; came back at namespace state %d of the "
		       "%zu since the last sync: %s\n",
		       p->index, p->trigger, dst.steps,
		       (unsigned long long)writes, (unsigned long long)flushes,
		       dst.full_writes ? ", pool filled" : "", st.crash_step,
		       st.crash_op ? st.crash_op : "-",
		       t.at_end ? " (at the end)" : "", st.writes, st.batches,
		       st.batch_syncs, st.copies, st.syncs, st.enospc, p->state,
		       oracle_nstates(o), r == 0 ? "ok" : "FAILED");
	oracle_free(o);
	return r;
}

/* ---- the run ----------------------------------------------------------------
 */

static int rm_one(const char *path, const struct stat *sb, int flag,
		  struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

static void rm_rf(const char *dir)
{
	nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
}

static void point_paths(struct point *p, unsigned index)
{
	memset(p, 0, sizeof(*p));
	p->index = index;
	p->seed = mix64(opt.seed ^ mix64(index));
	snprintf(p->dir, sizeof(p->dir), "%s/p%u", opt.base, index);
	snprintf(p->m[0], sizeof(p->m[0]), "%s/m0.img", p->dir);
	snprintf(p->m[1], sizeof(p->m[1]), "%s/m1.img", p->dir);
	snprintf(p->m[2], sizeof(p->m[2]), "%s/m2.img", p->dir);
	snprintf(p->log, sizeof(p->log), "%s/log", p->dir);
}

/* The child: runs point INDEX, prints its line, exits 0 (passed) or 1. */
static void child_main(unsigned index)
{
	struct point p;
	char reg[160];
	int fd, r;

	point_paths(&p, index);
	if (mkdir(p.dir, 0755) < 0) {
		printf("FAIL point %u: mkdir %s: %s\n", index, p.dir,
		       strerror(errno));
		_exit(1);
	}
	snprintf(reg, sizeof(reg), "%s/registry", p.dir);
	setenv("VDPOOL_REGISTRY", reg, 1);
	/* The layers' and the store's messages go to the point's log. */
	fd = open(p.log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (fd >= 0 && opt.verbose < 2) {
		dup2(fd, STDERR_FILENO);
		close(fd);
	}
	if (opt.verbose > 1)
		p.trace = stdout;
	alarm(POINT_TIMEOUT);
	r = run_point(&p);
	if (r < 0)
		printf("FAIL point %u (seed %#llx, %s): %s\n", index,
		       (unsigned long long)p.seed, p.trigger, p.fail);
	fflush(stdout);
	_exit(r < 0 ? 1 : 0);
}

struct slot {
	pid_t pid;
	unsigned index;
};

/*
 * After a point's child ended: if it was killed (timeout, ^C), its daemon
 * may live on and its mount stay; both go.  Then the point's directory,
 * unless kept.
 */
static void point_cleanup(unsigned index, bool killed, bool failed)
{
	char mnt[160], pidfile[160];
	struct point p;
	FILE *f;
	int pid;

	point_paths(&p, index);
	snprintf(mnt, sizeof(mnt), "%s/mnt", p.dir);
	snprintf(pidfile, sizeof(pidfile), "%s/daemon.pid", p.dir);
	if (killed && (f = fopen(pidfile, "r"))) {
		/* Our child's child: reparented to us (a subreaper). */
		if (fscanf(f, "%d", &pid) == 1 && pid > 1 &&
		    kill(pid, SIGKILL) == 0)
			waitpid(pid, NULL, 0);
		fclose(f);
		umount2(mnt, MNT_DETACH);
	}
	if (!(failed && opt.keep))
		rm_rf(p.dir);
}

static volatile sig_atomic_t stop_requested;

static void on_stop(int sig)
{
	(void)sig;
	stop_requested = 1;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: crashtest [--points N] [--seed S] [--point I] "
		"[--mount | --reshape] [--long]\n"
		"                 [--jobs N] [--keep] [--verbose]...\n"
		"  --points N  crash points to try (default 100; --long: "
		"3000, or 300\n"
		"              with --mount)\n"
		"  --seed S    base seed (default: from the clock; printed)\n"
		"  --point I   run only point I (replay a failure)\n"
		"  --mount     through a real mount (vdpool mount, "
		"VDPOOL_TEST_LAYERS)\n"
		"  --reshape   in-process, the workload also adds a member and "
		"removes\n"
		"              one (vdpool add/remove; not with --mount)\n"
		"  --jobs N    points at once (default 2)\n"
		"  --keep      keep a failed point's members and log "
		"(/dev/shm/crashtest-*)\n"
		"  --verbose   a line per point; twice: every operation too\n"
		"Environment: VDPOOL_BUILD, the build tree whose tools/vdpool "
		"and fs/vdpoolfs\n"
		"--mount runs (default: the one this binary was built in).\n");
}

static void find_tools(void)
{
	const char *build = getenv("VDPOOL_BUILD");

	if (build && *build) {
		snprintf(opt.vdpool, sizeof(opt.vdpool), "%s/tools/vdpool",
			 build);
		snprintf(opt.vdpoolfs, sizeof(opt.vdpoolfs), "%s/fs/vdpoolfs",
			 build);
	} else {
		snprintf(opt.vdpool, sizeof(opt.vdpool), "%s", CRASH_VDPOOL);
		snprintf(opt.vdpoolfs, sizeof(opt.vdpoolfs), "%s",
			 CRASH_VDPOOLFS);
	}
}

static int parse_args(int argc, char **argv)
{
	static const struct option lo[] = {
		{"points", required_argument, NULL, 'n'},
		{"seed", required_argument, NULL, 's'},
		{"point", required_argument, NULL, 'p'},
		{"mount", no_argument, NULL, 'm'},
		{"reshape", no_argument, NULL, 'r'},
		{"long", no_argument, NULL, 'l'},
		{"jobs", required_argument, NULL, 'j'},
		{"keep", no_argument, NULL, 'k'},
		{"verbose", no_argument, NULL, 'v'},
		{"help", no_argument, NULL, 'h'},
		{0},
	};
	bool lng = false;
	char *end;
	int c;

	while ((c = getopt_long(argc, argv, "n:s:p:mrlj:kvh", lo, NULL)) !=
	       -1) {
		unsigned long long v = 0;

		if (optarg) {
			errno = 0;
			v = strtoull(optarg, &end, 0);
			if (errno || *end || end == optarg ||
			    (c != 's' && (v == 0 || v > 1000000))) {
				fprintf(stderr,
					"crashtest: bad number '%s' for "
					"--%s\n",
					optarg,
					c == 'n'   ? "points"
					: c == 's' ? "seed"
					: c == 'p' ? "point"
						   : "jobs");
				return -1;
			}
		}
		switch (c) {
		case 'n':
			opt.points = (unsigned)v;
			break;
		case 's':
			opt.seed = v;
			opt.seed_given = true;
			break;
		case 'p':
			opt.point = (unsigned)v;
			break;
		case 'm':
			opt.mount = true;
			break;
		case 'r':
			workload_reshape = true;
			break;
		case 'l':
			lng = true;
			break;
		case 'j':
			opt.jobs = (unsigned)v;
			break;
		case 'k':
			opt.keep = true;
			break;
		case 'v':
			opt.verbose++;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			return -1;
		}
	}
	if (optind != argc || (workload_reshape && opt.mount)) {
		usage(stderr);
		return -1;
	}
	if (!opt.points)
		opt.points = lng ? (opt.mount ? 300 : 3000) : 100;
	if (opt.point && !opt.seed_given) {
		fprintf(stderr, "crashtest: --point needs --seed\n");
		return -1;
	}
	if (!opt.seed_given) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		opt.seed =
			mix64((uint64_t)ts.tv_sec ^ (uint64_t)ts.tv_nsec << 20 ^
			      (uint64_t)getpid());
	}
	return 0;
}

int main(int argc, char **argv)
{
	unsigned first, last, next, running = 0, passed = 0, failed = 0;
	unsigned *fails = NULL;
	struct slot *slots;
	struct sigaction sa = {.sa_handler = on_stop};

	if (parse_args(argc, argv) < 0)
		return 2;
	find_tools();
	if (opt.mount) {
		if (geteuid() != 0) {
			printf("crashtest: SKIP: --mount needs root\n");
			return 77;
		}
		if (access("/dev/fuse", R_OK | W_OK) < 0) {
			printf("crashtest: SKIP: no /dev/fuse\n");
			return 77;
		}
		for (int i = 0; i < 2; i++) {
			const char *t = i ? opt.vdpoolfs : opt.vdpool;

			if (access(t, X_OK) < 0) {
				fprintf(stderr,
					"crashtest: %s: %s (build it, or set "
					"VDPOOL_BUILD)\n",
					t, strerror(errno));
				return 2;
			}
		}
	}
	snprintf(opt.base, sizeof(opt.base), "/dev/shm/crashtest-XXXXXX");
	if (!mkdtemp(opt.base)) {
		fprintf(stderr, "crashtest: mkdtemp /dev/shm: %s\n",
			strerror(errno));
		return 2;
	}
	first = opt.point ? opt.point : 1;
	last = opt.point ? opt.point : opt.points;
	slots = calloc(opt.jobs, sizeof(*slots));
	fails = calloc(last - first + 1, sizeof(*fails));
	if (!slots || !fails) {
		fprintf(stderr, "crashtest: out of memory\n");
		return 2;
	}
	/* Daemons of a killed point come to us, to be stopped and reaped. */
	prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	printf("crashtest: %s, seed %#llx, points %u..%u, %u at once, in %s\n",
	       opt.mount ? "through a mount" : "in-process",
	       (unsigned long long)opt.seed, first, last, opt.jobs, opt.base);
	fflush(stdout);

	for (next = first; next <= last || running;) {
		while (!stop_requested && next <= last && running < opt.jobs) {
			unsigned s = 0;
			pid_t pid;

			while (slots[s].pid)
				s++;
			fflush(stdout);
			pid = fork();
			if (pid < 0) {
				fprintf(stderr, "crashtest: fork: %s\n",
					strerror(errno));
				stop_requested = 1;
				break;
			}
			if (pid == 0)
				child_main(next);
			slots[s] = (struct slot){pid, next};
			running++;
			next++;
		}
		if (!running)
			break;
		int status;
		pid_t pid = wait(&status);

		if (pid < 0) {
			if (errno == EINTR) {
				/* Stop: end the running points. */
				for (unsigned s = 0; s < opt.jobs; s++)
					if (slots[s].pid)
						kill(slots[s].pid, SIGKILL);
				continue;
			}
			break;
		}
		for (unsigned s = 0; s < opt.jobs; s++) {
			if (slots[s].pid != pid)
				continue;
			bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;

			if (!WIFEXITED(status))
				printf("FAIL point %u: the runner's child died "
				       "of signal %d%s\n",
				       slots[s].index, WTERMSIG(status),
				       WTERMSIG(status) == SIGALRM
					       ? " (timed out)"
					       : "");
			if (ok)
				passed++;
			else
				fails[failed++] = slots[s].index;
			point_cleanup(slots[s].index, !WIFEXITED(status), !ok);
			slots[s].pid = 0;
			running--;
		}
		fflush(stdout);
	}
	printf("crash points: tried %u, passed %u, failed %u\n",
	       passed + failed, passed, failed);
	for (unsigned i = 0; i < failed; i++)
		printf("  replay: %s --seed %#llx --point %u%s%s%s\n", argv[0],
		       (unsigned long long)opt.seed, fails[i],
		       opt.mount ? " --mount" : "",
		       workload_reshape ? " --reshape" : "",
		       opt.keep ? " --keep" : "");
	if (failed && opt.keep)
		printf("  kept: %s/p<point>\n", opt.base);
	else
		rmdir(opt.base);
	free(slots);
	free(fails);
	if (stop_requested)
		return 2;
	return failed ? 1 : 0;
}
