/* SPDX-License-Identifier: MIT */
/*
 * backend_mount.c - the crash test's mount backend: the workload's
 * operations as POSIX calls on a real mount, served by vdpoolfs started
 * through `vdpool mount -f` as a child of this process, its members wrapped
 * in the power-loss layer by VDPOOL_TEST_LAYERS (then=exit: the daemon
 * _exit(86)s at the crash, and the mount answers ENOTCONN from then on).
 *
 * A disk's handle is an open descriptor.  Every call is made once, its
 * result returned as it came (a short write stays short).
 *
 * Must never: unmount, signal or wait for anything this process did not
 * start; leave a mount or a daemon behind when a point ends.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "backends.h"

#define MAX_FDS 256
#define EXIT_POWERLOSS 86 /* VDP_POWERLOSS_EXIT */

extern char **environ;

struct mount_backend {
	struct backend b;
	char mnt[4096];
	int rootfd;
	pid_t pid;
	pthread_mutex_t lock; /* exited, status (the signal thread reads) */
	bool exited;
	int status;
	int fds[MAX_FDS];
	size_t nfds;
	/* The planned SIGUSR2. */
	bool sig_planned, sig_started;
	unsigned sig_step, sig_delay_us;
	pthread_t sig_thread;
	char log[4096]; /* the daemon's output */
};

static struct mount_backend *mb_of(struct backend *b)
{
	return (struct mount_backend *)b;
}

static void sleep_us(unsigned us)
{
	struct timespec ts = {us / 1000000, (long)(us % 1000000) * 1000};

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* Reaps the daemon if it has exited (WAIT: block up to MS). */
static bool reap(struct mount_backend *m, unsigned ms)
{
	for (unsigned waited = 0;; waited += 2) {
		int status;
		pid_t r;

		pthread_mutex_lock(&m->lock);
		if (!m->exited) {
			r = waitpid(m->pid, &status, WNOHANG);
			if (r == m->pid) {
				m->exited = true;
				m->status = status;
			}
		}
		bool done = m->exited;
		pthread_mutex_unlock(&m->lock);
		if (done || waited >= ms)
			return done;
		sleep_us(2000);
	}
}

static void track(struct mount_backend *m, int fd)
{
	if (m->nfds < MAX_FDS)
		m->fds[m->nfds++] = fd;
}

static void untrack(struct mount_backend *m, int fd)
{
	for (size_t i = 0; i < m->nfds; i++)
		if (m->fds[i] == fd) {
			m->fds[i] = m->fds[--m->nfds];
			return;
		}
}

/* ---- the operations ------------------------------------------------------ */

static int mt_create(struct backend *b, const char *name, int64_t *h,
		     uint64_t *ino)
{
	struct mount_backend *m = mb_of(b);
	struct stat st;
	int fd = openat(m->rootfd, name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC,
			0644);

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		int r = -errno;

		close(fd);
		return r;
	}
	track(m, fd);
	*h = fd;
	*ino = st.st_ino;
	return 0;
}

static int mt_close(struct backend *b, int64_t h)
{
	untrack(mb_of(b), (int)h);
	return close((int)h) < 0 ? -errno : 0;
}

static int mt_unlink(struct backend *b, const char *name)
{
	return unlinkat(mb_of(b)->rootfd, name, 0) < 0 ? -errno : 0;
}

static int mt_rename(struct backend *b, const char *from, const char *to)
{
	int fd = mb_of(b)->rootfd;

	return renameat(fd, from, fd, to) < 0 ? -errno : 0;
}

static int mt_open(struct backend *b, const char *name, int64_t *h)
{
	struct mount_backend *m = mb_of(b);
	int fd = openat(m->rootfd, name, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	track(m, fd);
	*h = fd;
	return 0;
}

static ssize_t mt_pwrite(struct backend *b, int64_t h, const void *buf,
			 size_t len, uint64_t off)
{
	ssize_t n = pwrite((int)h, buf, len, (off_t)off);

	(void)b;
	return n < 0 ? -errno : n;
}

struct batch_writer {
	int fd;
	struct wreq *q;	   /* NULL: fdatasync */
	struct wbatch *wb; /* with Q NULL */
};

static void *batch_writer(void *arg)
{
	struct batch_writer *bw = arg;
	ssize_t n;

	if (!bw->q) {
		bw->wb->sync_res = fdatasync(bw->fd) < 0 ? -errno : 0;
		return NULL;
	}
	n = pwrite(bw->fd, bw->q->buf, bw->q->len, (off_t)bw->q->off);
	bw->q->res = n < 0 ? -errno : n;
	return NULL;
}

/* A thread per write, so that all are requests the daemon holds at once
 * (a thread's pwrite has one in flight), and one more for the fdatasync,
 * started last. */
static void mt_pwrite_batch(struct backend *b, int64_t h, struct wbatch *wb)
{
	struct batch_writer bw[BATCH_MAX + 1];
	pthread_t th[BATCH_MAX + 1];
	bool started[BATCH_MAX + 1];
	size_t n = wb->n;

	(void)b;
	for (size_t i = 0; i < n; i++)
		bw[i] = (struct batch_writer){.fd = (int)h, .q = &wb->q[i]};
	if (wb->sync)
		bw[n++] =
			(struct batch_writer){.fd = (int)wb->sync_h, .wb = wb};
	for (size_t i = 0; i < n; i++) {
		started[i] =
			pthread_create(&th[i], NULL, batch_writer, &bw[i]) == 0;
		if (!started[i])
			batch_writer(&bw[i]);
	}
	for (size_t i = 0; i < n; i++)
		if (started[i])
			pthread_join(th[i], NULL);
}

static ssize_t mt_pread(struct backend *b, int64_t h, void *buf, size_t len,
			uint64_t off)
{
	size_t done = 0;

	(void)b;
	while (done < len) {
		ssize_t n = pread((int)h, (char *)buf + done, len - done,
				  (off_t)(off + done));

		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		done += (size_t)n;
	}
	return (ssize_t)done;
}

static int mt_truncate(struct backend *b, int64_t h, uint64_t size)
{
	(void)b;
	return ftruncate((int)h, (off_t)size) < 0 ? -errno : 0;
}

static int mt_fallocate(struct backend *b, int64_t h, int mode, uint64_t off,
			uint64_t len)
{
	(void)b;
	return fallocate((int)h, mode, (off_t)off, (off_t)len) < 0 ? -errno : 0;
}

/* The copy_file_range(2) system call: on this mount, the daemon's FUSE
 * copy_file_range, which shares extents. */
static ssize_t mt_copy(struct backend *b, int64_t in, uint64_t off_in,
		       int64_t out, uint64_t off_out, size_t len)
{
	loff_t i = (loff_t)off_in, o = (loff_t)off_out;
	ssize_t n = copy_file_range((int)in, &i, (int)out, &o, len, 0);

	(void)b;
	return n < 0 ? -errno : n;
}

static int mt_fsync(struct backend *b, int64_t h, bool datasync)
{
	int fd = h < 0 ? mb_of(b)->rootfd : (int)h;

	return (datasync ? fdatasync(fd) : fsync(fd)) < 0 ? -errno : 0;
}

static int mt_size(struct backend *b, int64_t h, uint64_t *size)
{
	struct stat st;

	(void)b;
	if (fstat((int)h, &st) < 0)
		return -errno;
	*size = (uint64_t)st.st_size;
	return 0;
}

static int mt_list(struct backend *b, struct rentry **out, size_t *nout)
{
	struct mount_backend *m = mb_of(b);
	struct rentry *e = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	DIR *d;
	int fd = openat(m->rootfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int r = 0;

	if (fd < 0)
		return -errno;
	d = fdopendir(fd);
	if (!d) {
		r = -errno;
		close(fd);
		return r;
	}
	errno = 0;
	while ((de = readdir(d))) {
		struct stat st;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (fstatat(m->rootfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) <
		    0) {
			r = -errno;
			break;
		}
		if (!S_ISREG(st.st_mode))
			continue;
		if (n == cap) {
			struct rentry *x;

			cap = cap ? 2 * cap : 16;
			x = realloc(e, cap * sizeof(*x));
			if (!x) {
				r = -ENOMEM;
				break;
			}
			e = x;
		}
		/* A longer name (none of ours) shows cut, and matches none. */
		snprintf(e[n].name, NAME_LEN, "%.*s", NAME_LEN - 1, de->d_name);
		e[n].ino = st.st_ino;
		e[n].size = (uint64_t)st.st_size;
		n++;
		errno = 0;
	}
	if (r == 0 && errno)
		r = -errno;
	closedir(d);
	if (r < 0) {
		free(e);
		return r;
	}
	if (n)
		qsort(e, n, sizeof(*e), rentry_cmp);
	*out = e;
	*nout = n;
	return 0;
}

/* The daemon is gone once a call fails as a dead FUSE connection does. */
static bool mt_crashed(struct backend *b, int err)
{
	struct mount_backend *m = mb_of(b);

	if (err == ENOTCONN || err == ECONNABORTED || err == EIO ||
	    err == ENODEV)
		return reap(m, 10000);
	return reap(m, 0);
}

static void *signal_main(void *arg)
{
	struct mount_backend *m = arg;

	sleep_us(m->sig_delay_us);
	pthread_mutex_lock(&m->lock);
	if (!m->exited)
		kill(m->pid, SIGUSR2);
	pthread_mutex_unlock(&m->lock);
	return NULL;
}

static void mt_tick(struct backend *b, unsigned step)
{
	struct mount_backend *m = mb_of(b);

	if (m->sig_planned && !m->sig_started && step >= m->sig_step)
		m->sig_started = pthread_create(&m->sig_thread, NULL,
						signal_main, m) == 0;
}

static const struct backend_ops mount_ops = {
	.name = "mount",
	.create = mt_create,
	.close = mt_close,
	.unlink = mt_unlink,
	.rename = mt_rename,
	.open = mt_open,
	.pwrite = mt_pwrite,
	.pwrite_batch = mt_pwrite_batch,
	.pread = mt_pread,
	.truncate = mt_truncate,
	.fallocate = mt_fallocate,
	.copy = mt_copy,
	.fsync = mt_fsync,
	.size = mt_size,
	.list = mt_list,
	.crashed = mt_crashed,
	.tick = mt_tick,
};

/* ---- life cycle -----------------------------------------------------------
 */

static bool is_fuse(const char *path)
{
	struct statfs sf;

	return statfs(path, &sf) == 0 && sf.f_type == FUSE_SUPER_MAGIC;
}

/* environ without our variables, plus NAME=VALUE for each given pair. */
static char **make_env(const char *const *add, size_t nadd)
{
	static const char *const drop[] = {
		"VDPOOL_TEST_LAYERS=", "VDPOOLFS=", "VDPOOL_REGISTRY=",
		"VDPOOL_TEST_COPY_REPLY_MAX=", "VDPOOL_TEST_ASYNC_ABOVE="};
	size_t n = 0, k = 0;
	char **env;

	while (environ[n])
		n++;
	env = calloc(n + nadd + 1, sizeof(*env));
	if (!env)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		bool skip = false;

		for (size_t j = 0; j < sizeof(drop) / sizeof(drop[0]); j++)
			skip |= !strncmp(environ[i], drop[j], strlen(drop[j]));
		if (!skip)
			env[k++] = environ[i];
	}
	for (size_t i = 0; i < nadd; i++)
		env[k++] = (char *)add[i];
	return env;
}

int mount_backend_start(const char *pool, const char *mnt, const char *layers,
			const struct mount_cfg *c, struct backend **out,
			char *why, size_t wl)
{
	char opt[64], layers_var[512], fs_var[4200], reg_var[4200];
	/* Replies to copy_file_range say at most 3 extents: a clone takes
	 * many requests, the first doing it all (fs_copy_file_range), and
	 * crashes land between them. */
	char copy_var[] = "VDPOOL_TEST_COPY_REPLY_MAX=196608";
	char async_var[] = "VDPOOL_TEST_ASYNC_ABOVE=0";
	const char *add[5];
	size_t nadd = 0;
	posix_spawn_file_actions_t fa;
	struct mount_backend *m;
	char **env;
	int r;

	m = calloc(1, sizeof(*m));
	if (!m) {
		snprintf(why, wl, "out of memory");
		return -1;
	}
	m->b.ops = &mount_ops;
	m->rootfd = -1;
	pthread_mutex_init(&m->lock, NULL);
	snprintf(m->mnt, sizeof(m->mnt), "%s", mnt);
	if (mkdir(mnt, 0755) < 0 && errno != EEXIST) {
		snprintf(why, wl, "mkdir %s: %s", mnt, strerror(errno));
		goto err_free;
	}
	snprintf(opt, sizeof(opt), "commit_interval=%u", c->commit_ms);
	snprintf(fs_var, sizeof(fs_var), "VDPOOLFS=%s", c->vdpoolfs);
	snprintf(reg_var, sizeof(reg_var), "VDPOOL_REGISTRY=%s", c->registry);
	add[nadd++] = fs_var;
	add[nadd++] = reg_var;
	add[nadd++] = copy_var;
	if (c->all_async)
		add[nadd++] = async_var;
	if (layers) {
		snprintf(layers_var, sizeof(layers_var),
			 "VDPOOL_TEST_LAYERS=%s", layers);
		add[nadd++] = layers_var;
	}
	env = make_env(add, nadd);
	if (!env) {
		snprintf(why, wl, "out of memory");
		goto err_free;
	}
	char *const argv[] = {(char *)c->vdpool, "mount",     "-f", "-o", opt,
			      (char *)pool,	 (char *)mnt, NULL};
	snprintf(m->log, sizeof(m->log), "%s", c->log);
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_addopen(&fa, 1, c->log,
					 O_WRONLY | O_CREAT | O_APPEND, 0644);
	posix_spawn_file_actions_adddup2(&fa, 1, 2);
	r = posix_spawn(&m->pid, c->vdpool, &fa, NULL, argv, env);
	posix_spawn_file_actions_destroy(&fa);
	free(env);
	if (r != 0) {
		snprintf(why, wl, "cannot run %s: %s", c->vdpool, strerror(r));
		goto err_free;
	}
	if (c->pidfile) {
		FILE *f = fopen(c->pidfile, "w");

		if (f) {
			fprintf(f, "%d\n", (int)m->pid);
			fclose(f);
		}
	}
	/* -f: the daemon stays in the foreground; the mount appears when
	 * it has opened the pool. */
	for (unsigned waited = 0; !is_fuse(mnt); waited += 2) {
		if (reap(m, 0)) {
			snprintf(why, wl,
				 "vdpool mount %s exited (status %#x) before "
				 "the mount was live; see %s",
				 mnt, m->status, c->log);
			goto err_free;
		}
		if (waited > 30000) {
			snprintf(why, wl, "%s not mounted after 30 s; see %s",
				 mnt, c->log);
			kill(m->pid, SIGKILL);
			reap(m, 10000);
			umount2(mnt, MNT_DETACH);
			goto err_free;
		}
		sleep_us(2000);
	}
	m->rootfd = open(mnt, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (m->rootfd < 0) {
		snprintf(why, wl, "open %s: %s", mnt, strerror(errno));
		kill(m->pid, SIGKILL);
		reap(m, 10000);
		umount2(mnt, MNT_DETACH);
		goto err_free;
	}
	*out = &m->b;
	return 0;

err_free:
	pthread_mutex_destroy(&m->lock);
	free(m);
	return -1;
}

void mount_backend_plan_signal(struct backend *b, unsigned step,
			       unsigned delay_us)
{
	struct mount_backend *m = mb_of(b);

	m->sig_planned = true;
	m->sig_step = step;
	m->sig_delay_us = delay_us;
}

/* Joins the signal thread; closes every descriptor. */
static void quiesce(struct mount_backend *m)
{
	if (m->sig_started)
		pthread_join(m->sig_thread, NULL);
	m->sig_started = false;
	m->sig_planned = false;
	for (size_t i = 0; i < m->nfds; i++)
		close(m->fds[i]);
	m->nfds = 0;
	if (m->rootfd >= 0)
		close(m->rootfd);
	m->rootfd = -1;
}

/* How the daemon ended, and the last line it printed: the log goes with
 * the point's directory unless --keep. */
static void describe_status(const struct mount_backend *m, char *s, size_t sl)
{
	char line[512] = "", last[512] = "";
	FILE *f = fopen(m->log, "r");
	size_t at;

	while (f && fgets(line, sizeof(line), f))
		if (line[0] != '\n')
			snprintf(last, sizeof(last), "%s", line);
	if (f)
		fclose(f);
	last[strcspn(last, "\n")] = 0;
	if (WIFEXITED(m->status))
		at = (size_t)snprintf(s, sl, "exit status %d",
				      WEXITSTATUS(m->status));
	else if (WIFSIGNALED(m->status))
		at = (size_t)snprintf(s, sl, "signal %d (%s)",
				      WTERMSIG(m->status),
				      strsignal(WTERMSIG(m->status)));
	else
		at = (size_t)snprintf(s, sl, "status %#x", m->status);
	if (last[0] && at < sl)
		snprintf(s + at, sl - at, " (its last words: %s)", last);
}

static void backend_free(struct mount_backend *m)
{
	pthread_mutex_destroy(&m->lock);
	free(m);
}

int mount_backend_stop(struct backend *b, char *why, size_t wl)
{
	struct mount_backend *m = mb_of(b);
	char st[600];
	int r = 0;

	quiesce(m);
	for (unsigned waited = 0; umount2(m->mnt, 0) < 0; waited += 10) {
		if (errno != EBUSY || waited > 10000) {
			snprintf(why, wl, "umount %s: %s", m->mnt,
				 strerror(errno));
			r = -1;
			umount2(m->mnt, MNT_DETACH);
			break;
		}
		sleep_us(10000);
	}
	if (!reap(m, 60000)) {
		snprintf(why, wl, "vdpoolfs %d still runs 60 s after unmount",
			 (int)m->pid);
		kill(m->pid, SIGKILL);
		reap(m, 10000);
		r = -1;
	} else if (!WIFEXITED(m->status) || WEXITSTATUS(m->status) != 0) {
		describe_status(m, st, sizeof(st));
		snprintf(why, wl, "vdpoolfs ended with %s at unmount", st);
		r = -1;
	}
	backend_free(m);
	return r;
}

int mount_backend_crash_end(struct backend *b, bool *at_end, char *why,
			    size_t wl)
{
	struct mount_backend *m = mb_of(b);
	char st[600];
	int r = 0;

	*at_end = false;
	if (m->sig_started)
		pthread_join(m->sig_thread, NULL);
	m->sig_started = false;
	if (!reap(m, 0)) {
		*at_end = true;
		kill(m->pid, SIGUSR2);
	}
	if (!reap(m, 60000)) {
		snprintf(why, wl,
			 "vdpoolfs %d did not die of the power loss within "
			 "60 s",
			 (int)m->pid);
		kill(m->pid, SIGKILL);
		reap(m, 10000);
		r = -1;
	} else if (!WIFEXITED(m->status) ||
		   WEXITSTATUS(m->status) != EXIT_POWERLOSS) {
		describe_status(m, st, sizeof(st));
		snprintf(why, wl,
			 "vdpoolfs ended with %s, not the power loss's %d", st,
			 EXIT_POWERLOSS);
		r = -1;
	}
	quiesce(m);
	if (umount2(m->mnt, MNT_DETACH) < 0 && r == 0) {
		snprintf(why, wl, "umount -l %s: %s", m->mnt, strerror(errno));
		r = -1;
	}
	backend_free(m);
	return r;
}
