/* SPDX-License-Identifier: MIT */
/*
 * control.c - the daemon's control socket (control.h has the protocol).
 *
 * Why a socket and not a setxattr on the root: a setxattr carries only an
 * errno back, while a removal needs a full sentence when it is refused and
 * a stream of progress while it runs; a socket carries both, and its mode
 * (0600) keeps it to root, which SO_PEERCRED checks again.
 *
 * This file only translates lines into vdp_pool_* calls, as vdpoolfs.c
 * does FUSE requests; the work runs in the store.  Must never block the
 * FUSE threads or let a client that stops reading stall a removal.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "control.h"
#include "vdpool.h"

#define LINE_MAX_LEN 4200
#define PROGRESS_MS 500

struct ctl {
	struct vdp_pool *pool;
	int fd;
	char path[108];
	pthread_t thread;
	atomic_bool stop;
	pthread_mutex_t lock;
	pthread_cond_t idle;
	unsigned active; /* connections being answered */
};

struct conn {
	struct ctl *c;
	int fd;
};

const char *ctl_dir(void)
{
	const char *d = getenv("VDPOOL_RUN_DIR");

	return d && *d ? d : "/run/vdpool";
}

const char *ctl_path(const struct ctl *c)
{
	return c ? c->path : "";
}

/* Sends one line; false once the client is gone. */
static bool say(int fd, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static bool say(int fd, const char *fmt, ...)
{
	char line[LINE_MAX_LEN];
	va_list ap;
	size_t len, off = 0;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return false;
	len = (size_t)n < sizeof(line) - 1 ? (size_t)n : sizeof(line) - 2;
	/* One line: the store's sentences have no newline, but be sure. */
	for (size_t i = 0; i < len; i++)
		if (line[i] == '\n')
			line[i] = ' ';
	line[len++] = '\n';
	while (off < len) {
		ssize_t w = send(fd, line + off, len - off, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return false;
		off += (size_t)w;
	}
	return true;
}

static void say_error(int fd, int r)
{
	const char *why = vdp_last_error();

	say(fd, "error %s", why && *why ? why : strerror(-r));
}

/* Follows the task numbered GEN until it ends, sending progress; returns
 * its last state (the client may have gone: the task runs on). */
static void follow_task(struct ctl *c, int fd, uint64_t gen)
{
	struct vdp_task_info t;
	bool client = true;

	for (;;) {
		vdp_pool_task(c->pool, &t);
		if (t.gen != gen || t.state != VDP_TASK_RUNNING)
			break;
		if (client)
			client = say(fd, "progress %llu %llu %lld",
				     (unsigned long long)t.done,
				     (unsigned long long)t.total,
				     (long long)t.eta_s);
		if (!client || atomic_load(&c->stop))
			return;
		poll(NULL, 0, PROGRESS_MS);
	}
	if (t.state == VDP_TASK_DONE)
		say(fd, "ok %s",
		    t.kind == VDP_TASK_REMOVE ? "removed" : "balanced");
	else if (t.state == VDP_TASK_FAILED)
		say(fd, "error %s", t.error);
	else if (t.state == VDP_TASK_CANCELLED)
		say(fd, "error cancelled");
	else
		say(fd, "error stopped: the pool is being unmounted; the "
			"removal resumes at the next mount");
}

static void answer(struct ctl *c, int fd, char *line)
{
	struct vdp_task_info t;
	char *arg = strchr(line, ' ');
	int r;

	if (arg)
		*arg++ = 0;
	else
		arg = line + strlen(line);
	if (!strcmp(line, "add")) {
		bool force = !strncmp(arg, "--force ", 8);

		r = vdp_pool_add_member(c->pool, force ? arg + 8 : arg, force);
		if (r < 0)
			say_error(fd, r);
		else
			say(fd, "ok added");
	} else if (!strcmp(line, "remove") || !strcmp(line, "balance")) {
		unsigned long long rate = 0;
		int n = 0;

		/* "--rate=BYTES " first: the move rate limit (0 = none),
		 * for the task this request starts, not for one it finds
		 * running (it then only follows it). */
		if (sscanf(arg, "--rate=%llu %n", &rate, &n) >= 1 && n)
			arg += n;
		vdp_pool_task(c->pool, &t);
		if (t.state != VDP_TASK_RUNNING)
			vdp_pool_set_move_rate(c->pool, rate);
		r = *line == 'r' ? vdp_pool_remove_member(c->pool, arg)
				 : vdp_pool_balance(c->pool);
		vdp_pool_task(c->pool, &t);
		if (r < 0)
			say_error(fd, r);
		else
			follow_task(c, fd, t.gen);
	} else if (!strcmp(line, "cancel")) {
		r = vdp_pool_cancel_task(c->pool);
		if (r < 0)
			say_error(fd, r);
		else
			say(fd, "ok cancelled");
	} else if (!strcmp(line, "resize")) {
		uint64_t old, now;

		r = vdp_pool_resize_member(c->pool, arg, &old, &now);
		if (r < 0)
			say_error(fd, r);
		else
			say(fd, "ok %llu %llu", (unsigned long long)old,
			    (unsigned long long)now);
	} else {
		say(fd, "error unknown request '%.40s'", line);
	}
}

static void *conn_main(void *arg)
{
	struct conn *k = arg;
	struct ctl *c = k->c;
	char line[LINE_MAX_LEN];
	size_t len = 0;

	/* One line, within a few seconds: a client that sends nothing does
	 * not hold a thread. */
	for (int waited = 0; len < sizeof(line) - 1 && waited < 50;) {
		struct pollfd pf = {.fd = k->fd, .events = POLLIN};
		ssize_t n;

		if (poll(&pf, 1, 100) == 0) {
			waited++;
			continue;
		}
		n = recv(k->fd, line + len, sizeof(line) - 1 - len, 0);
		if (n <= 0)
			break;
		len += (size_t)n;
		if (memchr(line, '\n', len))
			break;
	}
	line[len] = 0;
	if (strchr(line, '\n')) {
		*strchr(line, '\n') = 0;
		answer(c, k->fd, line);
	} else {
		say(k->fd, "error no request line");
	}
	close(k->fd);
	free(k);
	pthread_mutex_lock(&c->lock);
	if (--c->active == 0)
		pthread_cond_broadcast(&c->idle);
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

static bool peer_allowed(int fd)
{
	struct ucred cr;
	socklen_t l = sizeof(cr);

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &l) < 0)
		return false;
	return cr.uid == 0 || cr.uid == geteuid();
}

static void *accept_main(void *arg)
{
	struct ctl *c = arg;

	while (!atomic_load(&c->stop)) {
		struct pollfd pf = {.fd = c->fd, .events = POLLIN};
		struct conn *k;
		pthread_t t;
		int fd;

		if (poll(&pf, 1, 200) <= 0)
			continue;
		fd = accept4(c->fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		if (!peer_allowed(fd)) {
			say(fd, "error permission denied: root only");
			close(fd);
			continue;
		}
		k = malloc(sizeof(*k));
		if (!k) {
			close(fd);
			continue;
		}
		*k = (struct conn){.c = c, .fd = fd};
		pthread_mutex_lock(&c->lock);
		c->active++;
		pthread_mutex_unlock(&c->lock);
		if (pthread_create(&t, NULL, conn_main, k) != 0) {
			close(fd);
			free(k);
			pthread_mutex_lock(&c->lock);
			c->active--;
			pthread_mutex_unlock(&c->lock);
			continue;
		}
		pthread_detach(t);
	}
	return NULL;
}

int ctl_start(struct vdp_pool *pool, struct ctl **out)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	char uuid[37];
	struct ctl *c;
	int r;

	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->pool = pool;
	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->idle, NULL);
	vdp_pool_uuid(pool, uuid);
	if (mkdir(ctl_dir(), 0700) < 0 && errno != EEXIST) {
		r = -errno;
		goto err_free;
	}
	r = snprintf(c->path, sizeof(c->path), "%s/%s.sock", ctl_dir(), uuid);
	if (r < 0 || (size_t)r >= sizeof(sa.sun_path)) {
		r = -ENAMETOOLONG;
		goto err_free;
	}
	memcpy(sa.sun_path, c->path, strlen(c->path) + 1);
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		r = -errno;
		goto err_free;
	}
	/* A pool is mounted once (its members are locked): a socket left
	 * by a daemon that was killed is stale. */
	unlink(c->path);
	if (bind(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    chmod(c->path, 0600) < 0 || listen(c->fd, 8) < 0) {
		r = -errno;
		goto err_close;
	}
	r = -pthread_create(&c->thread, NULL, accept_main, c);
	if (r < 0)
		goto err_unlink;
	*out = c;
	return 0;

err_unlink:
	unlink(c->path);
err_close:
	close(c->fd);
err_free:
	pthread_mutex_destroy(&c->lock);
	pthread_cond_destroy(&c->idle);
	free(c);
	return r;
}

void ctl_stop(struct ctl *c)
{
	if (!c)
		return;
	atomic_store(&c->stop, true);
	pthread_join(c->thread, NULL);
	close(c->fd);
	unlink(c->path);
	pthread_mutex_lock(&c->lock);
	while (c->active)
		pthread_cond_wait(&c->idle, &c->lock);
	pthread_mutex_unlock(&c->lock);
	pthread_mutex_destroy(&c->lock);
	pthread_cond_destroy(&c->idle);
	free(c);
}
