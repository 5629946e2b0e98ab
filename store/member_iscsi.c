/* SPDX-License-Identifier: MIT */
/*
 * member_iscsi.c - members that are iSCSI LUNs, reached in userspace with
 * libiscsi: iscsi://[user[%password]@]host[:port]/target-iqn/lun.
 *
 * One session and one event-loop thread per LUN.  The member ops are
 * synchronous and called from many threads at once: each call cuts its
 * range into SCSI commands (at most the LUN's maximum transfer length
 * each), hands them to the loop thread and sleeps until all have
 * completed, so the LUN sees as many commands in flight as there are
 * callers.  Only the loop thread touches the libiscsi context; callers and
 * loop meet on s->lock (the submit queue) and each batch's condition.
 *
 * When the connection drops or the target restarts, the loop logs in
 * again and sends every unfinished command once more; a command that
 * cannot complete within VDPOOL_ISCSI_TIMEOUT seconds of its submission
 * fails with -EIO.  docs/members/iscsi.md has the URL form, the secrets,
 * the SCSI commands used and how sense data maps to errno.
 *
 * Never prints or records a CHAP secret: m->path is the URL without it.
 * The only file that includes <iscsi/iscsi.h>.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "format.h"
#include "internal.h"
#include "member.h"

#define URL_PREFIX "iscsi://"
#define DEFAULT_TIMEOUT_S 30
#define MAX_SENDS 32		    /* times one command is sent at most */
#define DEFAULT_MAX_XFER (1u << 20) /* bytes, when the LUN names none */
#define ZERO_CHUNK (1u << 20)	    /* bytes per WRITE of zeros */

enum op { OP_READ, OP_WRITE, OP_FLUSH, OP_UNMAP, OP_WSAME, OP_RECAP };

/* What one member call waits for: every command of its range. */
struct batch {
	pthread_cond_t cond;
	unsigned pending;  /* commands not yet completed (s->lock) */
	int err;	   /* first failure (s->lock) */
	uint64_t deadline; /* CLOCK_MONOTONIC ns */
};

/* One SCSI command and its retries. */
struct req {
	struct req *next;	    /* on the submit or the retry queue */
	struct req **sprev, *snext; /* on s->sent while libiscsi holds it */
	struct iscsi_member *s;
	struct batch *b;
	enum op op;
	uint64_t lba;
	uint32_t nblocks;
	void *buf;	       /* WRITE SAME: one block of zeros */
	struct scsi_iovec iov; /* READ/WRITE: the caller's buffer */
	bool unmap;	       /* WRITE SAME with UNMAP */
	unsigned sends;
	uint64_t not_before; /* ns: a retry waits for a busy target */
};

struct iscsi_member {
	struct vdp_member m;
	/* The LUN, from the URL and the environment; the secrets stay in
	 * this struct (and in libiscsi's context) only. */
	char portal[256], target[256], initiator[256];
	char user[256], password[256], tuser[256], tpassword[256];
	int lun;
	unsigned bs;		 /* logical block size */
	uint32_t max_xfer;	 /* blocks per READ/WRITE */
	uint32_t max_ws;	 /* blocks per WRITE SAME */
	uint32_t max_unmap;	 /* blocks per UNMAP descriptor */
	bool lbpme, lbpu, lbpws; /* READ CAPACITY(16), VPD b2 */
	bool lbprz;
	atomic_bool ws_ok; /* WRITE SAME(16) accepted so far */
	bool rdonly;
	int timeout_s;
	int lock_fd;
	char lock_path[600];
	struct vdp_member_id id; /* target IQN and LUN, for overlap checks */
	/* The session's ISID, the same at every login: a target that still
	 * holds the old session then reinstates it, aborting its commands,
	 * so none of them can run after the ones sent again. */
	uint32_t isid_rnd, isid_qual;

	pthread_t thread;
	int efd; /* eventfd: wakes the loop */
	pthread_mutex_t lock;
	struct req *subq, **subq_tail; /* submitted, not yet seen (lock) */
	bool stop;		       /* close asked the loop to end (lock) */

	/* Owned by the loop thread. */
	struct iscsi_context *ctx;
	bool broken;		/* the session must be dropped */
	struct req *retryq;	/* waiting to be sent (again) */
	unsigned inflight;	/* commands libiscsi holds */
	struct req *sent;	/* those commands (but READ CAPACITY) */
	uint64_t next_connect;	/* ns: the next login attempt */
	unsigned connect_fails; /* in a row */
	uint64_t down_since;
	bool recap;	     /* capacity changed: read it again */
	bool recap_inflight; /* the READ CAPACITY is out */
	bool fail_logged;    /* one -EIO line per outage */
	unsigned nsense;     /* SCSI errors logged: the first few only */
	char errbuf[2048];   /* the last login failure */
	/* The connect, login or command that await waits for (here, not on
	 * a stack: libiscsi keeps the pointer until it calls back). */
	bool aw_done;
	int aw_status;
	struct scsi_task *aw_task; /* await_task's */
};

static uint64_t now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

/* One line on stderr and to syslog (where vdpoolfs logs once it runs in
 * the background): the daemon has no other way to tell of an outage. */
__attribute__((format(printf, 2, 3))) static void
ilog(const struct iscsi_member *s, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fprintf(stderr, "vdpool: member %s: %s\n", s->m.path, msg);
	syslog(LOG_WARNING, "member %s: %s", s->m.path, msg);
}

/* SENSE_LOG: ilog for SCSI errors, which may come by the thousand: the first
 * SENSE_LOG_MAX of each member, then one line saying the rest are not. */
#define SENSE_LOG_MAX 8
#define SENSE_LOG(s, ...)                                                      \
	do {                                                                   \
		if ((s)->nsense < SENSE_LOG_MAX)                               \
			ilog(s, __VA_ARGS__);                                  \
		else if ((s)->nsense == SENSE_LOG_MAX)                         \
			ilog(s, "more SCSI errors; not logging them");         \
		(s)->nsense++;                                                 \
	} while (0)

/* ---- the URL, the secrets, the initiator name ---------------------------- */

bool vdp_member_is_iscsi(const char *spec)
{
	return strncmp(spec, URL_PREFIX, strlen(URL_PREFIX)) == 0;
}

/*
 * The URL without the password: iscsi://user@host... keeps the user name,
 * drops "%password".  Fails if the result does not fit in SIZE.
 */
static int redact_url(const char *url, char *out, size_t size)
{
	const char *rest = url + strlen(URL_PREFIX);
	const char *slash = strchr(rest, '/');
	const char *at = strchr(rest, '@');
	const char *pct;
	int n;

	if (at && (!slash || at < slash)) {
		pct = memchr(rest, '%', (size_t)(at - rest));
		if (pct)
			n = snprintf(out, size, "%s%.*s%s", URL_PREFIX,
				     (int)(pct - rest), rest, at);
		else
			n = snprintf(out, size, "%s", url);
	} else {
		n = snprintf(out, size, "%s", url);
	}
	return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

bool vdp_member_url_has_password(const char *spec)
{
	const char *rest, *slash, *at;

	if (!vdp_member_is_iscsi(spec))
		return false;
	rest = spec + strlen(URL_PREFIX);
	slash = strchr(rest, '/');
	at = strchr(rest, '@');
	return at && (!slash || at < slash) &&
	       memchr(rest, '%', (size_t)(at - rest));
}

/*
 * Passwords typed into URLs, kept in this process's memory only, by the
 * URL without them: create opens the members by the URL as typed, then
 * reopens them by the recorded URL, which has no password.
 */
struct url_secret {
	struct url_secret *next;
	char *url; /* redacted */
	char password[256];
};
static pthread_mutex_t url_secrets_lock = PTHREAD_MUTEX_INITIALIZER;
static struct url_secret *url_secrets;

static void url_secret_put(const char *url, const char *password)
{
	struct url_secret *e;

	pthread_mutex_lock(&url_secrets_lock);
	for (e = url_secrets; e && strcmp(e->url, url) != 0; e = e->next)
		;
	if (!e) {
		e = calloc(1, sizeof(*e));
		if (e && !(e->url = strdup(url))) {
			free(e);
			e = NULL;
		}
		if (e) {
			e->next = url_secrets;
			url_secrets = e;
		}
	}
	if (e)
		snprintf(e->password, sizeof(e->password), "%s", password);
	pthread_mutex_unlock(&url_secrets_lock);
}

static void url_secret_get(const char *url, char *password, size_t size)
{
	pthread_mutex_lock(&url_secrets_lock);
	for (struct url_secret *e = url_secrets; e; e = e->next)
		if (strcmp(e->url, url) == 0)
			snprintf(password, size, "%s", e->password);
	pthread_mutex_unlock(&url_secrets_lock);
}

/* Reads "password" or "user:password" from the first line of PATH. */
static int read_secret_file(const char *path, char *user, size_t ul, char *pass,
			    size_t pl)
{
	char line[512], *colon;
	FILE *f = fopen(path, "re");
	int r = 0;

	if (!f)
		return -errno;
	if (!fgets(line, sizeof(line), f))
		line[0] = 0;
	fclose(f);
	line[strcspn(line, "\r\n")] = 0;
	colon = strchr(line, ':');
	if (colon) {
		*colon = 0;
		if (strlen(line) >= ul)
			r = -ENAMETOOLONG;
		else
			snprintf(user, ul, "%s", line);
		colon++;
	} else {
		colon = line;
	}
	if (r == 0 && strlen(colon) >= pl)
		r = -ENAMETOOLONG;
	if (r == 0)
		snprintf(pass, pl, "%s", colon);
	explicit_bzero(line, sizeof(line));
	return r;
}

/* CHAP credentials: the URL's, then the secret file, then the environment;
 * mutual CHAP from VDPOOL_ISCSI_TARGET_SECRET_FILE ("user:password"). */
static int load_secrets(struct iscsi_member *s, const struct iscsi_url *u)
{
	const char *file = getenv("VDPOOL_ISCSI_SECRET_FILE");
	const char *env = getenv("VDPOOL_ISCSI_PASSWORD");
	const char *tfile = getenv("VDPOOL_ISCSI_TARGET_SECRET_FILE");
	char fuser[256] = "";
	int r;

	snprintf(s->password, sizeof(s->password), "%s", u->passwd);
	if (u->user[0])
		snprintf(s->user, sizeof(s->user), "%s", u->user);
	if (s->password[0])
		url_secret_put(s->m.path, s->password);
	else
		url_secret_get(s->m.path, s->password, sizeof(s->password));
	if (!s->password[0] && file && *file) {
		r = read_secret_file(file, fuser, sizeof(fuser), s->password,
				     sizeof(s->password));
		if (r < 0) {
			vdp_set_error("member %s: cannot read "
				      "VDPOOL_ISCSI_SECRET_FILE %s: %s",
				      s->m.path, file, strerror(-r));
			return r;
		}
		if (!s->user[0])
			snprintf(s->user, sizeof(s->user), "%s", fuser);
	}
	if (!s->password[0] && env && *env)
		snprintf(s->password, sizeof(s->password), "%s", env);
	if (!s->user[0] && getenv("VDPOOL_ISCSI_USER"))
		snprintf(s->user, sizeof(s->user), "%s",
			 getenv("VDPOOL_ISCSI_USER"));
	if (s->password[0] && !s->user[0]) {
		vdp_set_error("member %s: a CHAP password is set but no user "
			      "name (put it in the URL, user@host, or in the "
			      "secret file as user:password)",
			      s->m.path);
		return -EINVAL;
	}
	if (tfile && *tfile) {
		r = read_secret_file(tfile, s->tuser, sizeof(s->tuser),
				     s->tpassword, sizeof(s->tpassword));
		if (r == 0 && (!s->tuser[0] || !s->tpassword[0]))
			r = -EINVAL;
		if (r < 0) {
			vdp_set_error("member %s: VDPOOL_ISCSI_TARGET_SECRET_"
				      "FILE %s: %s (want user:password)",
				      s->m.path, tfile, strerror(-r));
			return r;
		}
		if (!s->password[0]) {
			vdp_set_error("member %s: mutual CHAP needs the "
				      "initiator's CHAP secret too",
				      s->m.path);
			return -EINVAL;
		}
	}
	return 0;
}

/* $VDPOOL_ISCSI_INITIATOR, or iqn.2026-01.org.vdpool:<hostname>. */
static void initiator_name(char *out, size_t size)
{
	const char *env = getenv("VDPOOL_ISCSI_INITIATOR");
	char host[128] = "localhost";

	if (env && *env) {
		snprintf(out, size, "%s", env);
		return;
	}
	gethostname(host, sizeof(host) - 1);
	host[sizeof(host) - 1] = 0;
	/* An IQN allows lower-case letters, digits, '.', '-' and ':'. */
	for (char *c = host; *c; c++) {
		*c = (char)tolower((unsigned char)*c);
		if (!isalnum((unsigned char)*c) && *c != '.' && *c != '-')
			*c = '-';
	}
	snprintf(out, size, "iqn.2026-01.org.vdpool:%s", host);
}

static int env_seconds(const char *name, int def)
{
	const char *v = getenv(name);
	char *end;
	long x;

	if (!v || !*v)
		return def;
	x = strtol(v, &end, 10);
	return *end || x < 1 || x > 86400 ? def : (int)x;
}

/* ---- the session --------------------------------------------------------- */

/* libiscsi's timeout for one command, and ours for a connect or a login:
 * a third of VDPOOL_ISCSI_TIMEOUT, so a command is sent a few times
 * before its caller's deadline. */
static int session_timeout_s(const struct iscsi_member *s)
{
	return s->timeout_s > 15 ? s->timeout_s / 3 : 5;
}

/* libiscsi's last error on one line (some of its messages hold several). */
static const char *ierr(struct iscsi_context *c, char *buf, size_t size)
{
	snprintf(buf, size, "%s", iscsi_get_error(c));
	for (char *p = buf; *p; p++)
		if (*p == '\n' || *p == '\r')
			*p = ' ';
	return buf;
}

/*
 * A plain TCP connect to the portal, so that "unreachable" comes with the
 * system's reason (refused, no route, timed out) rather than whatever
 * libiscsi's state machine reports.  0 or -errno.
 */
static int probe_portal(const char *portal, int timeout_ms)
{
	char host[256], *port = NULL, *e;
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai, *a;
	int r = -EHOSTUNREACH;

	snprintf(host, sizeof(host), "%s", portal);
	e = strrchr(host, ',');
	if (e)
		*e = 0; /* a portal group tag */
	e = strrchr(host, ':');
	if (e && !strchr(e, ']')) {
		*e = 0;
		port = e + 1;
	}
	if (host[0] == '[') {
		memmove(host, host + 1, strlen(host));
		e = strchr(host, ']');
		if (e)
			*e = 0;
	}
	if (getaddrinfo(host, port && *port ? port : "3260", &hints, &ai) != 0)
		return -ENXIO; /* the caller says "cannot resolve" */
	for (a = ai; a && r < 0; a = a->ai_next) {
		int fd = socket(a->ai_family,
				SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		struct pollfd pfd = {.fd = fd, .events = POLLOUT};
		socklen_t sl = sizeof(int);
		int err = 0;

		if (fd < 0)
			continue;
		if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
			r = 0;
		} else if (errno != EINPROGRESS) {
			r = -errno;
		} else if (poll(&pfd, 1, timeout_ms) == 0) {
			r = -ETIMEDOUT;
		} else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &sl) <
				   0 ||
			   err) {
			r = err ? -err : -errno;
		} else {
			r = 0;
		}
		close(fd);
	}
	freeaddrinfo(ai);
	return r;
}

static void await_cb(struct iscsi_context *c, int status, void *data,
		     void *priv)
{
	struct iscsi_member *s = priv;

	(void)c, (void)data;
	s->aw_status = status;
	s->aw_done = true;
}

/*
 * Services C until the connect, login, logout or command it runs calls
 * await_cb, for at most about the per-command timeout.  Not libiscsi's
 * sync calls: their loop services the context only on events (never on a
 * poll timeout, so libiscsi's own timeouts never fire), so a target that
 * accepts the connection and never answers (stopped, hung) would hold
 * the loop thread, and every caller past its deadline, or an open or a
 * close, forever.  0 if it ended GOOD, -ETIMEDOUT, or -EIO (libiscsi's
 * error is set).
 */
static int await(struct iscsi_member *s, struct iscsi_context *c)
{
	/* libiscsi times the login out itself; this is the backstop. */
	uint64_t deadline =
		now_ns() + (uint64_t)(session_timeout_s(s) + 2) * 1000000000ull;

	while (!s->aw_done) {
		struct pollfd pfd = {.fd = iscsi_get_fd(c),
				     .events = (short)iscsi_which_events(c)};
		uint64_t now = now_ns();
		int n;

		if (now >= deadline)
			return -ETIMEDOUT;
		n = poll(&pfd, 1, (int)((deadline - now) / 1000000 + 1));
		if (n < 0 && errno != EINTR)
			return -errno;
		if (iscsi_service(c, n > 0 ? pfd.revents : 0) < 0 &&
		    !s->aw_done)
			return -EIO;
	}
	return s->aw_status == SCSI_STATUS_GOOD ? 0 : -EIO;
}

/* await_cb for a SCSI command: its task, with its status, in aw_task. */
static void await_task_cb(struct iscsi_context *c, int status, void *data,
			  void *priv)
{
	struct scsi_task *t = data;
	struct iscsi_member *s = priv;

	if (t)
		t->status = status;
	s->aw_task = t;
	await_cb(c, status, data, priv);
}

/*
 * What libiscsi's sync calls return, for a command T just queued with
 * await_task_cb (open's checks): T once completed, its status set, for
 * the caller to free; or NULL, libiscsi's error set.  After a timeout T
 * stays libiscsi's until the context is destroyed.
 */
static struct scsi_task *await_task(struct iscsi_member *s, struct scsi_task *t)
{
	if (!t)
		return NULL;
	s->aw_done = false;
	s->aw_task = NULL;
	(void)await(s, s->ctx);
	return s->aw_done ? s->aw_task : NULL;
}

/*
 * Connects and logs in to the LUN with a new context in s->ctx.  On
 * failure leaves in s->errbuf a sentence that says which step failed.
 */
static int session_connect(struct iscsi_member *s)
{
	struct iscsi_context *c = iscsi_create_context(s->initiator);
	char e[512];
	int w = 0;

	if (!c) {
		snprintf(s->errbuf, sizeof(s->errbuf),
			 "cannot create an iSCSI context");
		return -ENOMEM;
	}
	iscsi_set_isid_random(c, s->isid_rnd, s->isid_qual);
	iscsi_set_targetname(c, s->target);
	iscsi_set_session_type(c, ISCSI_SESSION_NORMAL);
	iscsi_set_header_digest(c, ISCSI_HEADER_DIGEST_NONE_CRC32C);
	/* The loop reconnects itself, with its own deadlines. */
	iscsi_set_noautoreconnect(c, 1);
	iscsi_set_timeout(c, session_timeout_s(s));
	iscsi_set_tcp_syncnt(c, 2); /* an unreachable portal fails in ~7 s */
	if (s->user[0] &&
	    iscsi_set_initiator_username_pwd(c, s->user, s->password) != 0)
		goto err;
	if (s->tuser[0] &&
	    iscsi_set_target_username_pwd(c, s->tuser, s->tpassword) != 0)
		goto err;
	s->aw_done = false;
	if (iscsi_connect_async(c, s->portal, await_cb, s) != 0 ||
	    (w = await(s, c)) != 0) {
		snprintf(s->errbuf, sizeof(s->errbuf),
			 "portal %s is unreachable: %s", s->portal,
			 w == -ETIMEDOUT ? "no answer" : ierr(c, e, sizeof(e)));
		iscsi_destroy_context(c);
		return -EHOSTUNREACH;
	}
	s->aw_done = false;
	if (iscsi_login_async(c, await_cb, s) != 0 || (w = await(s, c)) != 0) {
		int r = -EIO;

		ierr(c, e, sizeof(e));
		if (w == -ETIMEDOUT || strcasestr(e, "timed out")) {
			snprintf(s->errbuf, sizeof(s->errbuf),
				 "target %s did not answer the login on "
				 "portal %s",
				 s->target, s->portal);
			r = -ETIMEDOUT;
		} else if (strcasestr(e, "not found") ||
			   strcasestr(e, "removed")) {
			snprintf(s->errbuf, sizeof(s->errbuf),
				 "target %s is unknown on portal %s (%s)",
				 s->target, s->portal, e);
			r = -ENOENT;
		} else if (strstr(e, "CHAP_R")) {
			snprintf(s->errbuf, sizeof(s->errbuf),
				 "target %s failed mutual CHAP: its answer "
				 "does not match "
				 "VDPOOL_ISCSI_TARGET_SECRET_FILE",
				 s->target);
			r = -EACCES;
		} else if (strcasestr(e, "auth")) {
			snprintf(s->errbuf, sizeof(s->errbuf),
				 "CHAP authentication refused by target %s "
				 "(%s); check the user name and secret",
				 s->target, e);
			r = -EACCES;
		} else if (strcasestr(e, "reconnect") ||
			   strcasestr(e, "socket")) {
			snprintf(s->errbuf, sizeof(s->errbuf),
				 "portal %s closed the connection during "
				 "login: not an iSCSI target?",
				 s->portal);
			r = -ECONNRESET;
		} else {
			snprintf(s->errbuf, sizeof(s->errbuf),
				 "login to target %s failed: %s", s->target, e);
		}
		iscsi_destroy_context(c);
		return r;
	}
	s->ctx = c;
	return 0;
err:
	snprintf(s->errbuf, sizeof(s->errbuf), "%s", ierr(c, e, sizeof(e)));
	iscsi_destroy_context(c);
	return -EINVAL;
}

/* A SCSI failure as a sentence: "MEDIUM_ERROR (UNRECOVERED_READ_ERROR)". */
static void sense_str(const struct scsi_task *t, char *out, size_t size)
{
	snprintf(out, size, "%s (%s, asc/ascq 0x%04x)",
		 scsi_sense_key_str(t->sense.key),
		 scsi_sense_ascq_str(t->sense.ascq), t->sense.ascq);
}

/* Runs TASK (a sync libiscsi call's result) through the open-time checks:
 * 0 if GOOD, else a sentence in s->errbuf. */
static int task_ok(struct iscsi_member *s, struct scsi_task *t,
		   const char *what)
{
	char sense[160], e[512];

	if (!t) {
		snprintf(s->errbuf, sizeof(s->errbuf), "%s failed: %s", what,
			 ierr(s->ctx, e, sizeof(e)));
		return -EIO;
	}
	if (t->status == SCSI_STATUS_GOOD)
		return 0;
	if (t->status == SCSI_STATUS_CHECK_CONDITION) {
		sense_str(t, sense, sizeof(sense));
		if (t->sense.ascq ==
		    SCSI_SENSE_ASCQ_LOGICAL_UNIT_NOT_SUPPORTED) {
			snprintf(s->errbuf, sizeof(s->errbuf),
				 "LUN %d does not exist on target %s", s->lun,
				 s->target);
			scsi_free_scsi_task(t);
			return -ENXIO;
		}
		snprintf(s->errbuf, sizeof(s->errbuf), "%s failed: %s", what,
			 sense);
	} else {
		snprintf(s->errbuf, sizeof(s->errbuf),
			 "%s failed: status 0x%x: %s", what, t->status,
			 ierr(s->ctx, e, sizeof(e)));
	}
	scsi_free_scsi_task(t);
	return -EIO;
}

/* TEST UNIT READY until the LUN answers without a unit attention (one
 * follows every login), then INQUIRY: the LUN must be a disk. */
static int check_lun(struct iscsi_member *s)
{
	struct scsi_inquiry_standard *inq;
	struct scsi_task *t;
	int r;

	for (int i = 0;; i++) {
		t = await_task(s, iscsi_testunitready_task(s->ctx, s->lun,
							   await_task_cb, s));
		if (t && t->status == SCSI_STATUS_CHECK_CONDITION &&
		    (t->sense.key == SCSI_SENSE_UNIT_ATTENTION ||
		     t->sense.key == SCSI_SENSE_NOT_READY) &&
		    i < 10) {
			scsi_free_scsi_task(t);
			continue;
		}
		break;
	}
	r = task_ok(s, t, "TEST UNIT READY");
	if (r < 0)
		return r;
	scsi_free_scsi_task(t);
	t = await_task(s, iscsi_inquiry_task(s->ctx, s->lun, 0, 0, 255,
					     await_task_cb, s));
	r = task_ok(s, t, "INQUIRY");
	if (r < 0)
		return r;
	inq = scsi_datain_unmarshall(t);
	if (!inq ||
	    inq->qualifier != SCSI_INQUIRY_PERIPHERAL_QUALIFIER_CONNECTED) {
		snprintf(s->errbuf, sizeof(s->errbuf),
			 "LUN %d does not exist on target %s", s->lun,
			 s->target);
		r = -ENXIO;
	} else if (inq->device_type !=
		   SCSI_INQUIRY_PERIPHERAL_DEVICE_TYPE_DIRECT_ACCESS) {
		snprintf(s->errbuf, sizeof(s->errbuf),
			 "LUN %d of target %s is not a disk (SCSI device "
			 "type %d)",
			 s->lun, s->target, inq->device_type);
		r = -ENOTBLK;
	}
	scsi_free_scsi_task(t);
	return r;
}

/* READ CAPACITY(16): block size, size, provisioning bits. */
static int read_capacity(struct iscsi_member *s)
{
	struct scsi_task *t = await_task(
		s, iscsi_readcapacity16_task(s->ctx, s->lun, await_task_cb, s));
	struct scsi_readcapacity16 *rc;
	int r = task_ok(s, t, "READ CAPACITY(16)");

	if (r < 0)
		return r;
	rc = scsi_datain_unmarshall(t);
	if (!rc || rc->block_length < 512 || rc->block_length > 65536 ||
	    (rc->block_length & (rc->block_length - 1))) {
		snprintf(s->errbuf, sizeof(s->errbuf),
			 "READ CAPACITY(16) returned an unusable block size");
		scsi_free_scsi_task(t);
		return -EIO;
	}
	s->bs = rc->block_length;
	s->m.size = (rc->returned_lba + 1) * rc->block_length;
	s->lbpme = rc->lbpme;
	s->lbprz = rc->lbprz;
	scsi_free_scsi_task(t);
	return 0;
}

/* VPD pages b0 (block limits) and b2 (logical block provisioning); a LUN
 * without them gets the defaults. */
static void read_limits(struct iscsi_member *s)
{
	struct scsi_inquiry_block_limits *bl;
	struct scsi_inquiry_logical_block_provisioning *lbp;
	struct scsi_task *t;

	s->max_xfer = DEFAULT_MAX_XFER / s->bs;
	s->max_ws = DEFAULT_MAX_XFER * 64 / s->bs;
	s->max_unmap = DEFAULT_MAX_XFER * 64 / s->bs;
	t = await_task(s, iscsi_inquiry_task(s->ctx, s->lun, 1,
					     SCSI_INQUIRY_PAGECODE_BLOCK_LIMITS,
					     255, await_task_cb, s));
	if (t && t->status == SCSI_STATUS_GOOD &&
	    (bl = scsi_datain_unmarshall(t))) {
		/* Zero means "no limit" for all three. */
		if (bl->max_xfer_len && bl->max_xfer_len < s->max_xfer)
			s->max_xfer = bl->max_xfer_len;
		if (bl->max_ws_len && bl->max_ws_len < s->max_ws)
			s->max_ws = (uint32_t)bl->max_ws_len;
		if (bl->max_unmap && bl->max_unmap < s->max_unmap)
			s->max_unmap = bl->max_unmap;
	}
	if (t)
		scsi_free_scsi_task(t);
	if (!s->lbpme)
		return;
	t = await_task(s,
		       iscsi_inquiry_task(
			       s->ctx, s->lun, 1,
			       SCSI_INQUIRY_PAGECODE_LOGICAL_BLOCK_PROVISIONING,
			       255, await_task_cb, s));
	if (t && t->status == SCSI_STATUS_GOOD &&
	    (lbp = scsi_datain_unmarshall(t))) {
		s->lbpu = lbp->lbpu;
		s->lbpws = lbp->lbpws;
	}
	if (t)
		scsi_free_scsi_task(t);
}

/* ---- the loop thread ----------------------------------------------------- */

static void wake(struct iscsi_member *s)
{
	uint64_t one = 1;

	if (write(s->efd, &one, sizeof(one)) < 0) {
		/* The counter is full: the loop is awake anyway. */
	}
}

/* Ends one command of its batch with R (0 or -errno). */
static void req_done(struct iscsi_member *s, struct req *q, int r)
{
	struct batch *b = q->b;

	pthread_mutex_lock(&s->lock);
	if (r < 0 && b->err == 0)
		b->err = r;
	if (--b->pending == 0)
		pthread_cond_signal(&b->cond);
	pthread_mutex_unlock(&s->lock);
}

/* Puts Q back to be sent again after DELAY_MS, or fails it when it has
 * been sent too often. */
static void req_retry(struct iscsi_member *s, struct req *q, unsigned delay_ms)
{
	if (q->sends >= MAX_SENDS) {
		if (!s->fail_logged)
			ilog(s, "command failed %u times; giving up with EIO",
			     q->sends);
		s->fail_logged = true;
		req_done(s, q, -EIO);
		return;
	}
	q->not_before = now_ns() + delay_ms * 1000000ull;
	q->next = s->retryq;
	s->retryq = q;
}

/* Sense data of a failed command as errno; -EAGAIN: send it again. */
static int sense_errno(struct iscsi_member *s, struct req *q,
		       struct scsi_task *t, unsigned *delay_ms)
{
	char sense[160];

	sense_str(t, sense, sizeof(sense));
	switch (t->sense.key) {
	case SCSI_SENSE_UNIT_ATTENTION:
		if (t->sense.ascq == SCSI_SENSE_ASCQ_CAPACITY_DATA_HAS_CHANGED)
			s->recap = true;
		return -EAGAIN;
	case SCSI_SENSE_NOT_READY:
		*delay_ms = 500;
		return -EAGAIN;
	case SCSI_SENSE_ILLEGAL_REQUEST:
		if (t->sense.ascq ==
		    SCSI_SENSE_ASCQ_LOGICAL_UNIT_NOT_SUPPORTED) {
			/* A target that restarts may accept logins before
			 * its LUNs are back: wait for it, as for NOT READY. */
			*delay_ms = 500;
			return -EAGAIN;
		}
		if (q->op == OP_WSAME &&
		    (t->sense.ascq == SCSI_SENSE_ASCQ_INVALID_OPERATION_CODE ||
		     t->sense.ascq == SCSI_SENSE_ASCQ_INVALID_FIELD_IN_CDB))
			return -EOPNOTSUPP; /* write zeros instead */
		SENSE_LOG(s, "the target rejects a command: %s", sense);
		return t->sense.ascq == SCSI_SENSE_ASCQ_LBA_OUT_OF_RANGE
			       ? -EIO
			       : -EINVAL;
	case SCSI_SENSE_COMMAND_ABORTED:
	case SCSI_SENSE_NO_SENSE:
	case SCSI_SENSE_RECOVERED_ERROR:
		*delay_ms = 10;
		return -EAGAIN;
	case SCSI_SENSE_DATA_PROTECTION:
		SENSE_LOG(s, "the target refuses writes: %s", sense);
		return -EROFS;
	default: /* MEDIUM ERROR, HARDWARE ERROR, ... */
		SENSE_LOG(s, "I/O error at block %llu: %s",
			  (unsigned long long)q->lba, sense);
		return -EIO;
	}
}

/* The capacity read again (after a UNIT ATTENTION or a reconnection):
 * m->size follows a LUN that grew; pool growth is resize-member's job. */
static void recap_done(struct iscsi_member *s, int status, struct scsi_task *t)
{
	struct scsi_readcapacity16 *rc;

	s->recap_inflight = false;
	if (status == SCSI_STATUS_GOOD && (rc = scsi_datain_unmarshall(t)) &&
	    rc->block_length == s->bs) {
		uint64_t size = (rc->returned_lba + 1) * s->bs;

		if (size != s->m.size)
			ilog(s, "LUN size changed from %llu to %llu bytes",
			     (unsigned long long)s->m.size,
			     (unsigned long long)size);
		__atomic_store_n(&s->m.size, size, __ATOMIC_RELAXED);
	} else if (status == SCSI_STATUS_CHECK_CONDITION && t &&
		   t->sense.key == SCSI_SENSE_UNIT_ATTENTION) {
		s->recap = true; /* once the unit attention is reported */
	} else if (status != SCSI_STATUS_GOOD) {
		s->broken = true;
	}
}

/*
 * libiscsi's callback for every command, in the loop thread (inside
 * iscsi_service or iscsi_destroy_context): complete the command, or put it
 * back to be sent again.
 */
static void task_cb(struct iscsi_context *c, int status, void *data, void *priv)
{
	struct scsi_task *t = data;
	struct req *q = priv;
	struct iscsi_member *s = q->s;
	unsigned delay_ms = 0;
	int r;

	(void)c;
	s->inflight--;
	if (q->sprev) {
		*q->sprev = q->snext;
		if (q->snext)
			q->snext->sprev = q->sprev;
		q->sprev = NULL;
	}
	if (q->op == OP_RECAP) {
		recap_done(s, status, t);
		if (t)
			scsi_free_scsi_task(t);
		free(q);
		return;
	}
	switch (status) {
	case SCSI_STATUS_GOOD:
		/* A transfer cut short leaves part of the caller's buffer
		 * as it was (another request's bytes): never a success. */
		r = t && t->residual_status == SCSI_RESIDUAL_UNDERFLOW &&
				    t->residual > 0
			    ? -EIO
			    : 0;
		if (r < 0)
			SENSE_LOG(s,
				  "%s of %u blocks at %llu moved %zu bytes "
				  "too few",
				  q->op == OP_READ ? "READ" : "command",
				  q->nblocks, (unsigned long long)q->lba,
				  t->residual);
		break;
	case SCSI_STATUS_CHECK_CONDITION:
		r = sense_errno(s, q, t, &delay_ms);
		break;
	case SCSI_STATUS_BUSY:
	case SCSI_STATUS_TASK_SET_FULL:
	case SCSI_STATUS_TASK_ABORTED:
		r = -EAGAIN;
		delay_ms = 50;
		break;
	case SCSI_STATUS_RESERVATION_CONFLICT:
		SENSE_LOG(s, "reservation conflict: another initiator holds "
			     "the LUN");
		r = -EBUSY;
		break;
	default: /* CANCELLED, ERROR, TIMEOUT: the session is gone */
		/* After a TIMEOUT libiscsi may still hold Data-Out PDUs that
		 * point into the caller's buffer: broken makes the loop
		 * destroy the context before it services it again, so a
		 * caller that req_retry fails (MAX_SENDS) may return. */
		s->broken = true;
		r = -EAGAIN;
		break;
	}
	if (t)
		scsi_free_scsi_task(t);
	if (r == -EAGAIN)
		req_retry(s, q, delay_ms);
	else
		req_done(s, q, r);
}

/* Hands Q to libiscsi; false if it would not take it. */
static bool req_send(struct iscsi_member *s, struct req *q)
{
	struct iscsi_context *c = s->ctx;
	struct scsi_task *t = NULL;
	uint32_t len = q->nblocks * s->bs;

	q->sends++;
	switch (q->op) {
	case OP_READ:
		t = iscsi_read16_iov_task(c, s->lun, q->lba, len, (int)s->bs, 0,
					  0, 0, 0, 0, task_cb, q, &q->iov, 1);
		break;
	case OP_WRITE:
		t = iscsi_write16_iov_task(c, s->lun, q->lba, NULL, len,
					   (int)s->bs, 0, 0, 0, 0, 0, task_cb,
					   q, &q->iov, 1);
		break;
	case OP_FLUSH:
		t = iscsi_synchronizecache16_task(c, s->lun, 0, 0, 0, 0,
						  task_cb, q);
		break;
	case OP_UNMAP: {
		struct unmap_list ul = {.lba = q->lba, .num = q->nblocks};

		t = iscsi_unmap_task(c, s->lun, 0, 0, &ul, 1, task_cb, q);
		break;
	}
	case OP_WSAME:
		t = iscsi_writesame16_task(c, s->lun, q->lba, q->buf, s->bs,
					   q->nblocks, 0, q->unmap, 0, 0,
					   task_cb, q);
		break;
	case OP_RECAP:
		t = iscsi_readcapacity16_task(c, s->lun, task_cb, q);
		break;
	}
	if (!t)
		return false;
	s->inflight++;
	if (q->op != OP_RECAP) {
		q->snext = s->sent;
		if (s->sent)
			s->sent->sprev = &q->snext;
		q->sprev = &s->sent;
		s->sent = q;
	}
	return true;
}

/* Drops the session: libiscsi calls back every command it holds with
 * CANCELLED, which puts it on the retry queue. */
static void session_drop(struct iscsi_member *s, const char *why)
{
	if (!s->down_since) {
		ilog(s, "connection lost (%s); reconnecting", why);
		s->down_since = now_ns();
	}
	iscsi_destroy_context(s->ctx);
	s->ctx = NULL;
	/* libiscsi called back every command it held with CANCELLED (they
	 * are on the retry queue now); any it dropped silently (a failure
	 * while not logged in) go there too, now that none can be used. */
	while (s->sent) {
		struct req *q = s->sent;

		s->sent = q->snext;
		q->sprev = NULL;
		req_retry(s, q, 0);
	}
	s->inflight = 0;
	s->broken = false;
	s->recap_inflight = false;
	s->next_connect = now_ns();
}

static void session_reconnect(struct iscsi_member *s)
{
	uint64_t now = now_ns();
	unsigned backoff;

	if (session_connect(s) == 0) {
		ilog(s, "reconnected after %.1f s",
		     (double)(now_ns() - s->down_since) / 1e9);
		s->connect_fails = 0;
		s->down_since = 0;
		s->fail_logged = false;
		s->recap = true; /* the target may have grown the LUN */
		return;
	}
	if (s->connect_fails++ == 0)
		ilog(s, "reconnect failed: %s; retrying", s->errbuf);
	backoff = s->connect_fails < 5 ? 100u << s->connect_fails : 2000;
	s->next_connect = now + backoff * 1000000ull;
}

/* Fails, with -EIO, every waiting command past its batch's deadline. */
static void expire(struct iscsi_member *s, uint64_t now)
{
	struct req **pp = &s->retryq;

	while (*pp) {
		struct req *q = *pp;

		if (now < q->b->deadline) {
			pp = &q->next;
			continue;
		}
		*pp = q->next;
		if (!s->fail_logged)
			ilog(s,
			     "I/O did not complete within %d s%s; failing "
			     "it with EIO",
			     s->timeout_s,
			     s->ctx ? "" : " (target unreachable)");
		s->fail_logged = true;
		req_done(s, q, -EIO);
	}
}

/* Sends every waiting command that may go now; returns the ms until the
 * next one may (or -1). */
static int dispatch(struct iscsi_member *s, uint64_t now)
{
	struct req **pp, *keep = NULL, **kt = &keep;
	uint64_t next = UINT64_MAX;

	if (s->recap && !s->recap_inflight) {
		struct req *q = calloc(1, sizeof(*q));

		if (q) {
			q->op = OP_RECAP;
			q->s = s;
			if (req_send(s, q)) {
				s->recap = false;
				s->recap_inflight = true;
			} else {
				free(q);
			}
		}
	}
	/* The retry queue is LIFO; send the oldest first. */
	{
		struct req *rev = NULL;

		while (s->retryq) {
			struct req *q = s->retryq;

			s->retryq = q->next;
			q->next = rev;
			rev = q;
		}
		pp = &rev;
		while (*pp) {
			struct req *q = *pp;

			*pp = q->next;
			if (q->not_before > now) {
				if (q->not_before < next)
					next = q->not_before;
				q->next = NULL;
				*kt = q;
				kt = &q->next;
			} else if (!req_send(s, q)) {
				q->sends--;
				s->broken = true;
				q->next = NULL;
				*kt = q;
				kt = &q->next;
			}
		}
	}
	/* Put back the ones kept, in order, ahead of newer retries. */
	*kt = s->retryq;
	s->retryq = keep;
	if (next == UINT64_MAX)
		return -1;
	return (int)((next - now) / 1000000 + 1);
}

static void *loop_main(void *arg)
{
	struct iscsi_member *s = arg;

	for (;;) {
		struct pollfd pfd[2];
		int nfd = 1, timeout = 1000, t, ev;
		uint64_t now;
		bool stop;

		/* New commands join the retry queue (not yet sent once). */
		pthread_mutex_lock(&s->lock);
		while (s->subq) {
			struct req *q = s->subq;

			s->subq = q->next;
			q->next = s->retryq;
			s->retryq = q;
		}
		s->subq_tail = &s->subq;
		stop = s->stop;
		pthread_mutex_unlock(&s->lock);
		if (stop && !s->retryq && s->inflight == 0)
			break;

		now = now_ns();
		if (s->ctx && s->broken) {
			char e[512];

			session_drop(s, ierr(s->ctx, e, sizeof(e)));
		}
		if (!s->ctx && now >= s->next_connect)
			session_reconnect(s);
		now = now_ns();
		expire(s, now);
		if (s->ctx) {
			t = dispatch(s, now);
			if (t >= 0 && t < timeout)
				timeout = t;
		} else {
			timeout = 100;
		}

		pfd[0] = (struct pollfd){.fd = s->efd, .events = POLLIN};
		ev = s->ctx ? iscsi_which_events(s->ctx) : 0;
		if (s->ctx && ev) {
			pfd[1] = (struct pollfd){.fd = iscsi_get_fd(s->ctx),
						 .events = (short)ev};
			nfd = 2;
		} else if (s->ctx) {
			timeout = 100; /* libiscsi asks for a pause */
		}
		if (s->retryq && timeout > 100)
			timeout = 100; /* deadlines */
		if (poll(pfd, (nfds_t)nfd, timeout) < 0 && errno != EINTR)
			continue;
		if (pfd[0].revents & POLLIN) {
			uint64_t x;

			if (read(s->efd, &x, sizeof(x)) < 0) {
				/* nothing to read: woken twice */
			}
		}
		if (!s->ctx)
			continue;
		/* Also with no events: libiscsi times out PDUs in here. */
		if (iscsi_service(s->ctx, nfd == 2 ? pfd[1].revents : 0) < 0)
			s->broken = true;
		if (s->ctx && !iscsi_is_logged_in(s->ctx))
			s->broken = true;
	}
	return NULL;
}

/* ---- the member ops ------------------------------------------------------ */

static struct iscsi_member *ism(struct vdp_member *m)
{
	return (struct iscsi_member *)m;
}

/* Sends the N commands of Q (all of one batch) and waits for them. */
static int run_batch(struct iscsi_member *s, struct req *q, size_t n)
{
	struct batch b = {
		.pending = (unsigned)n,
		.deadline = now_ns() + (uint64_t)s->timeout_s * 1000000000ull,
	};
	int r;

	if (n == 0)
		return 0;
	pthread_cond_init(&b.cond, NULL);
	pthread_mutex_lock(&s->lock);
	for (size_t i = 0; i < n; i++) {
		q[i].s = s;
		q[i].b = &b;
		q[i].next = NULL;
		*s->subq_tail = &q[i];
		s->subq_tail = &q[i].next;
	}
	pthread_mutex_unlock(&s->lock);
	wake(s);
	pthread_mutex_lock(&s->lock);
	while (b.pending > 0)
		pthread_cond_wait(&b.cond, &s->lock);
	r = b.err;
	pthread_mutex_unlock(&s->lock);
	pthread_cond_destroy(&b.cond);
	return r;
}

/* Cuts [off, off + len) into commands of at most MAXB blocks each. */
static struct req *split(struct iscsi_member *s, enum op op, void *buf,
			 uint64_t off, uint64_t len, uint32_t maxb, size_t *n)
{
	uint64_t lba = off / s->bs, nb = len / s->bs;
	size_t cnt = (size_t)((nb + maxb - 1) / maxb);
	struct req *q = calloc(cnt ? cnt : 1, sizeof(*q));

	if (!q)
		return NULL;
	for (size_t i = 0; i < cnt; i++) {
		uint32_t k = nb - i * (uint64_t)maxb < maxb
				     ? (uint32_t)(nb - i * (uint64_t)maxb)
				     : maxb;

		q[i].op = op;
		q[i].lba = lba + i * (uint64_t)maxb;
		q[i].nblocks = k;
		if (buf && (op == OP_READ || op == OP_WRITE)) {
			q[i].iov.iov_base =
				(uint8_t *)buf + i * (uint64_t)maxb * s->bs;
			q[i].iov.iov_len = (size_t)k * s->bs;
		}
		q[i].buf = op == OP_WSAME ? buf : NULL;
	}
	*n = cnt;
	return q;
}

static int check_range(struct iscsi_member *s, uint64_t off, uint64_t len)
{
	uint64_t size = __atomic_load_n(&s->m.size, __ATOMIC_RELAXED);

	if ((off | len) & (s->bs - 1))
		return -EINVAL;
	if (off > size || len > size - off)
		return -ENOSPC;
	return 0;
}

static int rw(struct vdp_member *m, enum op op, void *buf, size_t len,
	      uint64_t off)
{
	struct iscsi_member *s = ism(m);
	struct req *q;
	size_t n;
	int r;

	if (op == OP_WRITE && s->rdonly)
		return -EROFS;
	r = check_range(s, off, len);
	if (r < 0)
		return r;
	q = split(s, op, buf, off, len, s->max_xfer, &n);
	if (!q)
		return -ENOMEM;
	r = run_batch(s, q, n);
	free(q);
	return r;
}

static int iscsi_pread(struct vdp_member *m, void *buf, size_t len,
		       uint64_t off)
{
	return rw(m, OP_READ, buf, len, off);
}

static int iscsi_pwrite(struct vdp_member *m, const void *buf, size_t len,
			uint64_t off)
{
	/* libiscsi only reads a WRITE's buffer. */
	return rw(m, OP_WRITE, (void *)buf, len, off);
}

static int iscsi_flush(struct vdp_member *m)
{
	struct req q = {.op = OP_FLUSH};

	if (ism(m)->rdonly)
		return 0;
	return run_batch(ism(m), &q, 1);
}

/* Zeros written as data: many 1 MiB WRITEs of one zero buffer. */
static int zeroes_by_writing(struct iscsi_member *s, uint64_t off, uint64_t len)
{
	uint32_t maxb = ZERO_CHUNK / s->bs;
	struct req *q;
	void *z;
	size_t n;
	int r;

	if (maxb > s->max_xfer)
		maxb = s->max_xfer;
	z = calloc(1, (size_t)maxb * s->bs);
	if (!z)
		return -ENOMEM;
	q = split(s, OP_WRITE, NULL, off, len, maxb, &n);
	if (!q) {
		free(z);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		q[i].iov.iov_base = z;
		q[i].iov.iov_len = (size_t)q[i].nblocks * s->bs;
	}
	r = run_batch(s, q, n);
	free(q);
	free(z);
	return r;
}

/*
 * WRITE SAME(16) of a zero block, with UNMAP when the LUN unmaps that way
 * and reads unmapped blocks as zeros; written zeros when the LUN has no
 * WRITE SAME.
 */
static int iscsi_write_zeroes(struct vdp_member *m, uint64_t off, uint64_t len)
{
	struct iscsi_member *s = ism(m);
	struct req *q;
	void *z;
	size_t n;
	int r;

	if (s->rdonly)
		return -EROFS;
	r = check_range(s, off, len);
	if (r < 0 || len == 0)
		return r;
	if (!atomic_load(&s->ws_ok))
		return zeroes_by_writing(s, off, len);
	z = calloc(1, s->bs);
	if (!z)
		return -ENOMEM;
	q = split(s, OP_WSAME, z, off, len, s->max_ws, &n);
	if (!q) {
		free(z);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++)
		q[i].unmap = s->lbpme && s->lbpws && s->lbprz;
	r = run_batch(s, q, n);
	free(q);
	free(z);
	if (r == -EOPNOTSUPP) {
		atomic_store(&s->ws_ok, false);
		r = zeroes_by_writing(s, off, len);
	}
	return r;
}

/* UNMAP: only offered when the LUN says it unmaps (LBPME and LBPU). */
static int iscsi_discard(struct vdp_member *m, uint64_t off, uint64_t len)
{
	struct iscsi_member *s = ism(m);
	struct req *q;
	size_t n;
	int r;

	if (s->rdonly)
		return -EROFS;
	/* Whole blocks only: a partial block keeps its data. */
	len -= (off + len) % s->bs < len ? (off + len) % s->bs : 0;
	if (off % s->bs) {
		uint64_t skip = s->bs - off % s->bs;

		if (skip >= len)
			return 0;
		off += skip;
		len -= skip;
	}
	r = check_range(s, off, len);
	if (r < 0 || len == 0)
		return r;
	q = split(s, OP_UNMAP, NULL, off, len, s->max_unmap, &n);
	if (!q)
		return -ENOMEM;
	r = run_batch(s, q, n);
	free(q);
	return r;
}

/*
 * An iSCSI LUN has no flock: the lock is a file under /run/vdpool named
 * for the LUN, which keeps a second pool instance on this host off it.
 * Hosts do not see each other's locks (docs/members/iscsi.md).  The last
 * holder removes the file at close; a locker that finds it has locked a
 * file removed meanwhile tries again with the new one.
 */
/* Where the LUNs' lock files live: the daemons' run directory, as for
 * their control sockets (fs/control.c); tests point it at a directory of
 * their own. */
static const char *lock_dir(void)
{
	const char *d = getenv("VDPOOL_RUN_DIR");

	return d && *d ? d : "/run/vdpool";
}

static int iscsi_lock(struct vdp_member *m, bool exclusive)
{
	struct iscsi_member *s = ism(m);
	char name[520];
	size_t j = 0;

	if (!s->lock_path[0]) {
		/* The LUN, not the portal: one target may be reached by
		 * several names and addresses. */
		snprintf(name, sizeof(name), "%s_%d", s->target, s->lun);
		for (char *c = name; *c && j < sizeof(name) - 1; c++)
			name[j++] = isalnum((unsigned char)*c) || *c == '.' ||
						    *c == '-'
					    ? *c
					    : '_';
		name[j] = 0;
		snprintf(s->lock_path, sizeof(s->lock_path), "%s/iscsi-%s.lock",
			 lock_dir(), name);
	}
	for (int tries = 0; tries < 10; tries++) {
		struct stat a, b;

		if (s->lock_fd < 0) {
			mkdir(lock_dir(), 0755);
			s->lock_fd = open(s->lock_path,
					  O_RDWR | O_CREAT | O_CLOEXEC, 0600);
			if (s->lock_fd < 0)
				return -errno;
		}
		if (flock(s->lock_fd,
			  (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB) < 0)
			return errno == EWOULDBLOCK ? -EBUSY : -errno;
		if (fstat(s->lock_fd, &a) == 0 && stat(s->lock_path, &b) == 0 &&
		    a.st_ino == b.st_ino && a.st_dev == b.st_dev)
			return 0;
		close(s->lock_fd); /* removed by its last holder: again */
		s->lock_fd = -1;
	}
	return -EAGAIN;
}

static void iscsi_close(struct vdp_member *m)
{
	struct iscsi_member *s = ism(m);

	pthread_mutex_lock(&s->lock);
	s->stop = true;
	pthread_mutex_unlock(&s->lock);
	wake(s);
	pthread_join(s->thread, NULL);
	if (s->ctx) {
		/* Not iscsi_logout_sync: a hung target would hang close. */
		s->aw_done = false;
		if (iscsi_is_logged_in(s->ctx) &&
		    iscsi_logout_async(s->ctx, await_cb, s) == 0)
			(void)await(s, s->ctx);
		iscsi_destroy_context(s->ctx);
	}
	close(s->efd);
	if (s->lock_fd >= 0) {
		/* The last holder (no one else has it, even shared) removes
		 * the file. */
		if (flock(s->lock_fd, LOCK_EX | LOCK_NB) == 0)
			unlink(s->lock_path);
		close(s->lock_fd);
	}
	pthread_mutex_destroy(&s->lock);
	explicit_bzero(s->password, sizeof(s->password));
	explicit_bzero(s->tpassword, sizeof(s->tpassword));
	free(m->path);
	free(s);
}

static const struct vdp_member_ops iscsi_ops = {
	.kind = "iscsi",
	.pread = iscsi_pread,
	.pwrite = iscsi_pwrite,
	.flush = iscsi_flush,
	.write_zeroes = iscsi_write_zeroes,
	.discard = iscsi_discard,
	.lock = iscsi_lock,
	.close = iscsi_close,
};

/* The same, for a LUN that does not unmap. */
static const struct vdp_member_ops iscsi_ops_nodiscard = {
	.kind = "iscsi",
	.pread = iscsi_pread,
	.pwrite = iscsi_pwrite,
	.flush = iscsi_flush,
	.write_zeroes = iscsi_write_zeroes,
	.discard = NULL,
	.lock = iscsi_lock,
	.close = iscsi_close,
};

/* iscsi://[userinfo@]host[:port]/target/lun with a numeric LUN. */
static bool url_shape_ok(const char *url)
{
	const char *rest = url + strlen(URL_PREFIX);
	const char *at = strchr(rest, '@'), *slash = strchr(rest, '/');
	const char *last = strrchr(rest, '/');

	if (at && slash && at < slash)
		rest = at + 1;
	slash = strchr(rest, '/');
	if (!slash || slash == rest || last <= slash + 1 || last[1] == 0 ||
	    strspn(last + 1, "0123456789") != strlen(last + 1) ||
	    strlen(last + 1) > 5)
		return false;
	return true;
}

/* Fills S from URL: the portal, target and LUN, the redacted path. */
static int parse_url(struct iscsi_member *s, const char *url)
{
	char path[sizeof(((struct vdp_dmember *)0)->path)];
	struct iscsi_context *c;
	struct iscsi_url *u;
	int r;

	if (strchr(url, '?')) {
		vdp_set_error("member %.*s: URL options (?...) are not "
			      "supported; use the environment (see "
			      "docs/members/iscsi.md)",
			      (int)strcspn(url, "?"), url);
		return -EINVAL;
	}
	if (!url_shape_ok(url)) {
		if (redact_url(url, path, sizeof(path)) < 0)
			snprintf(path, sizeof(path), "%.60s...", URL_PREFIX);
		/* Checked here, not by libiscsi: it prints to stderr. */
		vdp_set_error("member %s: not an iSCSI URL of the form "
			      "iscsi://[user[%%password]@]host[:port]/"
			      "target-iqn/lun",
			      path);
		return -EINVAL;
	}
	r = redact_url(url, path, sizeof(path));
	if (r < 0) {
		char shown[4096];

		if (redact_url(url, shown, sizeof(shown)) < 0)
			snprintf(shown, sizeof(shown), "%.60s...", URL_PREFIX);
		vdp_set_error("member %s: URL longer than %zu bytes (the "
			      "superblock records at most that); use a "
			      "shorter host name or target IQN",
			      shown, sizeof(path) - 1);
		return r;
	}
	s->m.path = strdup(path);
	if (!s->m.path)
		return -ENOMEM;
	/* The user name of iscsi://user@host/... (libiscsi keeps it only
	 * when a password follows it). */
	{
		const char *rest = url + strlen(URL_PREFIX);
		const char *at = strchr(rest, '@'), *sl = strchr(rest, '/');

		if (at && at < sl) {
			size_t n = strcspn(rest, "%@");

			if (n >= sizeof(s->user))
				n = sizeof(s->user) - 1;
			memcpy(s->user, rest, n);
			s->user[n] = 0;
		}
	}
	c = iscsi_create_context(s->initiator);
	if (!c)
		return -ENOMEM;
	u = iscsi_parse_full_url(c, url);
	if (!u) {
		/* Not libiscsi's message: it may quote the password. */
		vdp_set_error("member %s: not an iSCSI URL of the form "
			      "iscsi://[user[%%password]@]host[:port]/"
			      "target-iqn/lun",
			      s->m.path);
		iscsi_destroy_context(c);
		return -EINVAL;
	}
	snprintf(s->portal, sizeof(s->portal), "%s", u->portal);
	snprintf(s->target, sizeof(s->target), "%s", u->target);
	s->lun = u->lun;
	r = load_secrets(s, u);
	explicit_bzero(u->passwd, sizeof(u->passwd));
	iscsi_destroy_url(u);
	iscsi_destroy_context(c);
	return r;
}

/* Told apart the ISIDs of this process's sessions (libiscsi's own are
 * drawn from rand(), shared by all threads). */
static atomic_uint isid_counter;

int vdp_member_iscsi_open(const char *url, bool rdonly, struct vdp_member **out)
{
	struct iscsi_member *s = calloc(1, sizeof(*s));
	int r;

	if (!s)
		return -ENOMEM;
	s->m.ops = &iscsi_ops;
	s->m.kind = VDP_MK_ISCSI;
	s->m.priv = s;
	s->rdonly = rdonly;
	s->lock_fd = -1;
	s->efd = -1;
	s->timeout_s = env_seconds("VDPOOL_ISCSI_TIMEOUT", DEFAULT_TIMEOUT_S);
	if (getrandom(&s->isid_rnd, sizeof(s->isid_rnd), 0) < 0)
		s->isid_rnd = (uint32_t)getpid() ^ (uint32_t)time(NULL);
	s->isid_qual = atomic_fetch_add(&isid_counter, 1);
	atomic_init(&s->ws_ok, true);
	initiator_name(s->initiator, sizeof(s->initiator));
	r = parse_url(s, url);
	if (r < 0)
		goto err_free;
	snprintf(s->id.lun, sizeof(s->id.lun), "%s/%d", s->target, s->lun);
	s->m.id = &s->id;
	r = probe_portal(s->portal, 10000);
	if (r < 0) {
		vdp_set_error("member %s: portal %s is unreachable: %s",
			      s->m.path, s->portal,
			      r == -ENXIO ? "cannot resolve the host name"
					  : strerror(-r));
		goto err_free;
	}
	r = session_connect(s);
	if (r == 0)
		r = check_lun(s);
	if (r == 0)
		r = read_capacity(s);
	if (r < 0) {
		vdp_set_error("member %s: %s", s->m.path, s->errbuf);
		goto err_ctx;
	}
	read_limits(s);
	s->m.align = s->bs;
	if (!(s->lbpme && s->lbpu))
		s->m.ops = &iscsi_ops_nodiscard;
	s->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (s->efd < 0) {
		r = -errno;
		goto err_ctx;
	}
	pthread_mutex_init(&s->lock, NULL);
	s->subq_tail = &s->subq;
	r = -pthread_create(&s->thread, NULL, loop_main, s);
	if (r < 0) {
		vdp_set_error("member %s: cannot start its thread: %s",
			      s->m.path, strerror(-r));
		pthread_mutex_destroy(&s->lock);
		close(s->efd);
		goto err_ctx;
	}
	*out = &s->m;
	return 0;

err_ctx:
	if (s->ctx)
		iscsi_destroy_context(s->ctx);
err_free:
	explicit_bzero(s->password, sizeof(s->password));
	explicit_bzero(s->tpassword, sizeof(s->tpassword));
	free(s->m.path);
	free(s);
	return r;
}
