/* SPDX-License-Identifier: MIT */
/*
 * vdpool.c - the administrator's command-line tool: create, mount, umount,
 * status, check and repair of pools; add, remove, balance, resize-member.
 *
 * Each subcommand is one function found through a table; each parses its
 * own options with getopt_long.  The tool talks to pools only through
 * store/vdpool.h and to a mounted pool only through the daemon (the
 * trusted.vdpool.* xattrs on the mount's root, and the control socket they
 * name for add, remove, balance, resize-member); it never opens a pool that
 * a daemon holds for writing and never touches the on-disk format.
 *
 * Every failure ends in exactly one line on stderr, "vdpool CMD: WHAT: WHY",
 * and a non-zero exit status: 2 for usage errors (16 for check, as fsck).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "vdpool.h"

#ifndef VDPOOL_VERSION
#define VDPOOL_VERSION "0.1.0"
#endif

#define NAME_CHARS                                                             \
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-"

#define PRINTF(f, a) __attribute__((format(printf, f, a)))
#define FUSE_SUPER_MAGIC 0x65735546 /* <linux/magic.h> */
#define UMOUNT_TIMEOUT_MS 60000
#define UMOUNT_PATIENCE_S 2

extern char **environ;

struct command {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *summary;
	const char *help; /* "Usage: vdpool " + name + help */
	int usage_status; /* exit status of a usage error */
};

static const struct command *cur; /* the subcommand running, for messages */

/* Prints the one error line: "vdpool CMD: WHAT: WHY" (WHAT may be NULL). */
static PRINTF(2, 3) void errorf(const char *what, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "vdpool%s%s: ", cur ? " " : "", cur ? cur->name : "");
	if (what)
		fprintf(stderr, "%s: ", what);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* Whether S contains WORD delimited by neither NAME_CHARS nor '/'. */
static bool names(const char *s, const char *word)
{
	size_t n = strlen(word);
	const char *at;

	for (at = strstr(s, word); n && at; at = strstr(at + 1, word)) {
		char before = at > s ? at[-1] : ' ', after = at[n];

		if ((!before || !strchr(NAME_CHARS "/", before)) &&
		    (!after || !strchr(NAME_CHARS "/", after)))
			return true;
	}
	return false;
}

/* Reports a failed store call R on WHAT: the store's sentence if it set one
 * (without repeating WHAT if the sentence already names it), else errno's. */
static void store_error(const char *what, int r)
{
	const char *why = vdp_last_error();
	size_t len;

	if (!why || !*why)
		why = strerror(-r);
	else if (what && names(why, what))
		what = NULL;
	len = strlen(why);
	while (len && (why[len - 1] == '\n' || why[len - 1] == '.'))
		len--;
	errorf(what, "%.*s", (int)len, why);
}

static PRINTF(1, 2) int usage_error(const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	errorf(NULL, "%s (try 'vdpool %s --help')", msg, cur->name);
	return cur->usage_status;
}

/* The default branch of every option loop: --help, unknown options and
 * missing arguments (option strings start with ':'). */
static int option_error(int c, char **argv)
{
	if (c == 'h') {
		printf("Usage: vdpool %s%s", cur->name, cur->help);
		return 0;
	}
	if (c == ':')
		return usage_error("%s: option needs an argument",
				   argv[optind - 1]);
	if (optopt)
		return usage_error("-%c: unknown option", optopt);
	return usage_error("%s: unknown option", argv[optind - 1]);
}

/* "1 MiB", "3.9 GiB": binary units, one decimal unless exact. */
static const char *human(uint64_t bytes, char *buf, size_t size)
{
	static const char *const unit[] = {"B",	  "KiB", "MiB", "GiB",
					   "TiB", "PiB", "EiB"};
	unsigned i = 0;
	double d = (double)bytes;

	while (d >= 1024 && i < 6) {
		d /= 1024;
		i++;
	}
	if (i == 0 || (bytes & ((1ull << (10 * i)) - 1)) == 0)
		snprintf(buf, size, "%.0f %s", d, unit[i]);
	else
		snprintf(buf, size, "%.1f %s", d, unit[i]);
	return buf;
}

/* Parses "65536", "64K", "1M", "1MiB", "2G" (binary units) into *OUT. */
static int parse_size(const char *s, uint64_t *out)
{
	unsigned long long v;
	unsigned shift = 0;
	char *end;

	if (*s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno)
		return -ERANGE;
	switch (*end) {
	case 'k':
	case 'K':
		shift = 10;
		break;
	case 'm':
	case 'M':
		shift = 20;
		break;
	case 'g':
	case 'G':
		shift = 30;
		break;
	}
	if (shift) {
		end++;
		if (!strcmp(end, "iB") || !strcmp(end, "B"))
			end += strlen(end);
	}
	if (*end)
		return -EINVAL;
	if (v > UINT64_MAX >> shift)
		return -ERANGE;
	*out = (uint64_t)v << shift;
	return 0;
}

static bool valid_pool_name(const char *s)
{
	size_t n = strspn(s, NAME_CHARS);

	return !s[n] && n >= 1 && n <= VDP_POOL_NAME_MAX && strcmp(s, ".") &&
	       strcmp(s, "..");
}

/* The basename of MEMBER without its extension, characters other than
 * NAME_CHARS replaced by '_'; "" if nothing usable is left. */
static void default_pool_name(const char *member, char *out, size_t size)
{
	size_t len = strlen(member), start, i;
	const char *dot;

	while (len > 1 && member[len - 1] == '/')
		len--;
	start = len;
	while (start > 0 && member[start - 1] != '/' &&
	       member[start - 1] != ':')
		start--;
	dot = memrchr(member + start, '.', len - start);
	if (dot && dot > member + start)
		len = (size_t)(dot - member);
	if (len - start > size - 1)
		len = start + size - 1;
	for (i = start; i < len; i++)
		out[i - start] = member[i] && strchr(NAME_CHARS, member[i])
					 ? member[i]
					 : '_';
	out[len - start] = 0;
	if (!valid_pool_name(out))
		out[0] = 0;
}

/*
 * An iscsi:// member with a password (iscsi://user%password@host/...):
 * true, and in SHOWN (PATH_MAX bytes, unless NULL) the URL without it.
 */
static bool url_password(const char *m, char *shown)
{
	const char *rest = m + strlen("iscsi://"), *at, *pct;

	if (strncmp(m, "iscsi://", strlen("iscsi://")) != 0)
		return false;
	at = strchr(rest, '@');
	if (!at || (strchr(rest, '/') && strchr(rest, '/') < at))
		return false;
	pct = memchr(rest, '%', (size_t)(at - rest));
	if (!pct)
		return false;
	if (shown)
		snprintf(shown, PATH_MAX, "iscsi://%.*s%s", (int)(pct - rest),
			 rest, at);
	return true;
}

static int cmd_create(int argc, char **argv)
{
	static const struct option opts[] = {
		{"name", required_argument, NULL, 'n'},
		{"extent-size", required_argument, NULL, 's'},
		{"force", no_argument, NULL, 'f'},
		{"help", no_argument, NULL, 'h'},
		{0},
	};
	struct vdp_create_opts o = {0};
	char name[VDP_POOL_NAME_MAX + 1], b1[32], b2[32];
	struct vdp_statfs st;
	struct vdp_pool *p;
	uint64_t esize = 0;
	size_t n, i;
	int c, r;

	while ((c = getopt_long(argc, argv, ":n:s:fh", opts, NULL)) != -1) {
		switch (c) {
		case 'n':
			o.name = optarg;
			break;
		case 's':
			if (parse_size(optarg, &esize) || !esize ||
			    (esize & (esize - 1)) ||
			    esize < 1ull << VDP_MIN_EXTENT_SHIFT ||
			    esize > 1ull << VDP_MAX_EXTENT_SHIFT)
				return usage_error(
					"--extent-size %s: must be a power of "
					"two from 64K to 64M",
					optarg);
			o.extent_shift = (unsigned)__builtin_ctzll(esize);
			break;
		case 'f':
			o.force = true;
			break;
		default:
			return option_error(c, argv);
		}
	}
	n = (size_t)(argc - optind);
	if (n == 0)
		return usage_error("no MEMBER given");
	if (n > VDP_MAX_MEMBERS)
		return usage_error("%zu members given, at most %d allowed", n,
				   VDP_MAX_MEMBERS);
	if (o.name && !valid_pool_name(o.name))
		return usage_error(
			"--name %s: use 1 to %d of A-Z a-z 0-9 . _ -", o.name,
			VDP_POOL_NAME_MAX);
	if (!o.name) {
		default_pool_name(argv[optind], name, sizeof(name));
		if (!*name)
			return usage_error("cannot make a pool name from %s; "
					   "give --name",
					   argv[optind]);
		o.name = name;
	}

	for (i = 0; i < n; i++)
		if (url_password(argv[optind + i], NULL))
			fprintf(stderr,
				"vdpool: warning: the password in the URL of "
				"member %zu is visible to every user of this "
				"machine (ps); it is not stored, so mount "
				"needs VDPOOL_ISCSI_SECRET_FILE or "
				"VDPOOL_ISCSI_PASSWORD\n",
				i + 1);
	r = vdp_pool_create((const char *const *)&argv[optind], n, &o);
	if (r < 0) {
		store_error(o.name, r);
		return 1;
	}

	printf("Created pool %s\n", o.name);
	for (i = 0; i < n; i++) {
		char shown[PATH_MAX];
		const char *m = argv[optind + i];

		if (url_password(m, shown))
			m = shown;
		printf("  %-13s%s\n", i ? "" : "members:", m);
	}
	r = vdp_pool_open(o.name, VDP_OPEN_RDONLY, &p);
	if (r < 0) {
		store_error(o.name, r);
		return 1;
	}
	vdp_pool_statfs(p, &st);
	vdp_pool_close(p);
	printf("  capacity:    %s (%" PRIu64 " extents)\n",
	       human(st.total_extents * st.extent_size, b1, sizeof(b1)),
	       st.total_extents);
	printf("  extent size: %s\n", human(st.extent_size, b2, sizeof(b2)));
	printf("  registry:    %s/%s\n", vdp_registry_dir(), o.name);
	return 0;
}

/* Where the daemon is: $VDPOOLFS, beside this program, the build tree,
 * else "vdpoolfs" for a PATH search. */
static const char *find_daemon(char *buf, size_t size)
{
	const char *env = getenv("VDPOOLFS");
	ssize_t n;

	if (env && *env)
		return env;
	n = readlink("/proc/self/exe", buf, size - 1);
	if (n > 0) {
		char *slash;

		buf[n] = 0;
		slash = strrchr(buf, '/');
		if (slash &&
		    (size_t)(slash + 1 - buf) + sizeof("vdpoolfs") <= size) {
			strcpy(slash + 1, "vdpoolfs");
			if (access(buf, X_OK) == 0)
				return buf;
		}
	}
#ifdef VDPOOLFS_BUILD_PATH
	if (access(VDPOOLFS_BUILD_PATH, X_OK) == 0)
		return VDPOOLFS_BUILD_PATH;
#endif
	return "vdpoolfs";
}

static void daemon_error(const char *daemon, int err)
{
	if (err == ENOENT && !strchr(daemon, '/'))
		errorf(daemon, "not found beside vdpool nor in PATH (set "
			       "VDPOOLFS to its path)");
	else
		errorf(daemon, "cannot run: %s", strerror(err));
}

/* Whether directory PATH has no entries but "." and "..". */
static bool empty_dir(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *e;
	bool empty = true;

	if (!d)
		return true; /* the daemon will say why */
	while (empty && (e = readdir(d)))
		empty = !strcmp(e->d_name, ".") || !strcmp(e->d_name, "..");
	closedir(d);
	return empty;
}

static void warn_problems(const char *mountpoint);

static int cmd_mount(int argc, char **argv)
{
	static const struct option opts[] = {
		{"foreground", no_argument, NULL, 'f'},
		{"options", required_argument, NULL, 'o'},
		{"help", no_argument, NULL, 'h'},
		{0},
	};
	char exe[PATH_MAX], *mopts = NULL, *tmp;
	const char *dargv[8], *daemon, *why;
	bool fg = false;
	struct stat st;
	int c, i = 0, r, status;
	pid_t pid;

	while ((c = getopt_long(argc, argv, ":fo:h", opts, NULL)) != -1) {
		switch (c) {
		case 'f':
			fg = true;
			break;
		case 'o': /* several -o join with commas, as mount(8) */
			if (asprintf(&tmp, "%s%s%s", mopts ? mopts : "",
				     mopts ? "," : "", optarg) < 0)
				abort();
			free(mopts);
			mopts = tmp;
			break;
		default:
			free(mopts);
			return option_error(c, argv);
		}
	}
	if (argc - optind != 2) {
		free(mopts);
		return usage_error("expected POOL and MOUNTPOINT");
	}
	why = stat(argv[optind + 1], &st) < 0 ? strerror(errno)
	      : !S_ISDIR(st.st_mode)	      ? "not a directory"
	      : !empty_dir(argv[optind + 1])  ? "not empty (mounting would "
						"hide its files)"
					      : NULL;
	if (why) {
		errorf(argv[optind + 1], "%s", why);
		free(mopts);
		return 1;
	}

	/* Relative paths are fine: the daemon opens the pool and mounts
	 * before it changes directory. */
	daemon = find_daemon(exe, sizeof(exe));
	dargv[i++] = daemon;
	dargv[i++] = argv[optind];
	dargv[i++] = argv[optind + 1];
	if (fg)
		dargv[i++] = "-f";
	if (mopts) {
		dargv[i++] = "-o";
		dargv[i++] = mopts;
	}
	dargv[i] = NULL;
	fflush(NULL);
	if (fg) {
		execvp(daemon, (char *const *)dargv);
		r = errno;
	} else {
		/* The daemon's parent exits only once the mount is live (or
		 * failed, after saying why), so its status is ours. */
		r = posix_spawnp(&pid, daemon, NULL, NULL, (char *const *)dargv,
				 environ);
	}
	free(mopts);
	if (r) {
		daemon_error(daemon, r);
		return 1;
	}
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR) {
			errorf(daemon, "waitpid: %s", strerror(errno));
			return 1;
		}
	}
	if (WIFSIGNALED(status)) {
		errorf(daemon, "killed by signal %d (%s)", WTERMSIG(status),
		       strsignal(WTERMSIG(status)));
		return 1;
	}
	if (WEXITSTATUS(status) == 0)
		warn_problems(argv[optind + 1]);
	return WEXITSTATUS(status);
}

/* Reads xattr NAME of PATH into a malloc'ed NUL-terminated *OUT. */
static int read_xattr(const char *path, const char *name, char **out)
{
	for (;;) {
		ssize_t n = getxattr(path, name, NULL, 0), m;
		char *buf;

		if (n < 0)
			return -errno;
		buf = malloc((size_t)n + 1);
		if (!buf)
			return -ENOMEM;
		m = getxattr(path, name, buf, (size_t)n);
		if (m >= 0) {
			buf[m] = 0;
			*out = buf;
			return 0;
		}
		free(buf);
		if (errno != ERANGE) /* ERANGE: it grew in between */
			return -errno;
	}
}

/* After a mount: the problems the daemon met opening the pool (status
 * lines marked "!"), as warnings on stderr. */
static void warn_problems(const char *mountpoint)
{
	char *text, *line, *save;

	if (read_xattr(mountpoint, "trusted.vdpool.status", &text) < 0)
		return;
	for (line = strtok_r(text, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save))
		if (strncmp(line, "  ! ", 4) == 0)
			fprintf(stderr, "vdpool: warning: %s\n", line + 4);
	free(text);
}

/* Runs "fusermount3 -u MP" (for mounts we may not umount2), capturing its
 * message.  Returns 0, -EBUSY, -errno, or -ECANCELED after printing why. */
static int fusermount_u(const char *mp)
{
	const char *args[] = {"fusermount3", "-u", "--", mp, NULL};
	posix_spawn_file_actions_t fa;
	char msg[1024];
	size_t len = 0;
	int fds[2], r, status;
	ssize_t n;
	pid_t pid;

	if (pipe2(fds, O_CLOEXEC) < 0)
		return -errno;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, fds[1], STDERR_FILENO);
	r = posix_spawnp(&pid, args[0], &fa, NULL, (char *const *)args,
			 environ);
	posix_spawn_file_actions_destroy(&fa);
	close(fds[1]);
	if (r) {
		close(fds[0]);
		errorf(args[0], "cannot run: %s", strerror(r));
		return -ECANCELED;
	}
	while ((n = read(fds[0], msg + len, sizeof(msg) - 1 - len)) != 0) {
		if (n > 0)
			len += (size_t)n;
		else if (errno != EINTR)
			break;
		if (len == sizeof(msg) - 1)
			break;
	}
	close(fds[0]);
	msg[len] = 0;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	if (strstr(msg, "busy"))
		return -EBUSY;
	msg[strcspn(msg, "\n")] = 0;
	errorf(mp, "fusermount3 failed: %s", *msg ? msg : "no message");
	return -ECANCELED;
}

/* "waiting for vdpoolfs ..." after UMOUNT_PATIENCE_S: from SIGALRM, since
 * umount2() itself blocks while the daemon answers FUSE_DESTROY. */
static char wait_msg[80];
static size_t wait_msg_len;

static void on_alarm(int sig)
{
	(void)sig;
	if (write(STDERR_FILENO, wait_msg, wait_msg_len) < 0)
		return;
}

/* Waits until the daemon PID (PIDFD if >= 0) has exited; -ETIMEDOUT after
 * UMOUNT_TIMEOUT_MS.  A zombie counts as exited: its commit is done. */
static int wait_daemon(pid_t pid, int pidfd)
{
	struct pollfd pfd = {.fd = pidfd, .events = POLLIN};
	int waited;

	for (waited = 0; waited < UMOUNT_TIMEOUT_MS; waited += 50) {
		if (pidfd >= 0 ? poll(&pfd, 1, 0) > 0
			       : kill(pid, 0) < 0 && errno == ESRCH)
			return 0;
		if (pidfd >= 0)
			poll(&pfd, 1, 50);
		else
			usleep(50000);
	}
	return -ETIMEDOUT;
}

/* Whether MP is the root of a FUSE mount. */
static bool is_fuse_root(const char *mp)
{
	struct stat st, up;
	struct statfs sf;
	char *parent;
	bool root;

	if (statfs(mp, &sf) < 0 || sf.f_type != FUSE_SUPER_MAGIC ||
	    stat(mp, &st) < 0 || asprintf(&parent, "%s/..", mp) < 0)
		return false;
	root = stat(parent, &up) < 0 || up.st_dev != st.st_dev;
	free(parent);
	return root;
}

static int cmd_umount(int argc, char **argv)
{
	static const struct option opts[] = {
		{"help", no_argument, NULL, 'h'},
		{0},
	};
	const char *mp, *note = NULL;
	char *text = NULL, *end;
	int c, r, pidfd = -1;
	long pid = 0;

	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1)
		return option_error(c, argv);
	if (argc - optind != 1)
		return usage_error("expected one MOUNTPOINT");
	mp = argv[optind];

	r = read_xattr(mp, "trusted.vdpool.pid", &text);
	if (r == 0) {
		errno = 0;
		pid = strtol(text, &end, 10);
		if (errno || end == text || pid <= 0 || pid > INT_MAX) {
			errorf(mp, "bad trusted.vdpool.pid \"%s\"", text);
			free(text);
			return 1;
		}
		free(text);
	} else if (r == -ENOTCONN) {
		note = "its daemon is gone; removed the stale mount";
	} else if (r == -ENODATA && geteuid() != 0 && is_fuse_root(mp)) {
		/* trusted.* reads as absent without CAP_SYS_ADMIN */
		note = "not root: cannot find its daemon's pid, so did not "
		       "wait for its final commit";
	} else if (r == -ENODATA || r == -EOPNOTSUPP) {
		errorf(mp, "not a vdpool mount");
		return 1;
	} else {
		errorf(mp, "%s", strerror(-r));
		return 1;
	}

	if (pid) {
		struct sigaction sa = {.sa_handler = on_alarm,
				       .sa_flags = SA_RESTART};

#ifdef SYS_pidfd_open
		/* Hold the process before unmounting: pid reuse cannot fool
		 * us, and a zombie (its parent gone) reads as exited. */
		pidfd = (int)syscall(SYS_pidfd_open, (pid_t)pid, 0);
#endif
		snprintf(wait_msg, sizeof(wait_msg),
			 "waiting for vdpoolfs (pid %ld) to commit...\n", pid);
		wait_msg_len = strlen(wait_msg);
		sigaction(SIGALRM, &sa, NULL);
		alarm(UMOUNT_PATIENCE_S);
	}
	r = umount2(mp, 0) < 0 ? -errno : 0;
	if (r == -EPERM)
		r = fusermount_u(mp);
	if (r == -EBUSY) {
		errorf(NULL, "%s is busy (files open)", mp);
	} else if (r && r != -ECANCELED) {
		errorf(mp, "cannot unmount: %s", strerror(-r));
	} else if (r == 0 && pid) {
		r = wait_daemon((pid_t)pid, pidfd);
		if (r)
			errorf(mp,
			       "vdpoolfs (pid %ld) still running after %d s",
			       pid, UMOUNT_TIMEOUT_MS / 1000);
	} else if (r == 0 && note) {
		fprintf(stderr, "note: %s: %s\n", mp, note);
	}
	alarm(0);
	if (pidfd >= 0)
		close(pidfd);
	return r ? 1 : 0;
}

static void print_text(const char *s)
{
	size_t len = strlen(s);

	fputs(s, stdout);
	if (len && s[len - 1] != '\n')
		putchar('\n');
}

/* The mountpoint of a vdpoolfs mount whose source is SPEC (the pool name
 * or member path it was mounted by), from /proc/self/mounts. */
static bool find_mount(const char *spec, char *mnt, size_t size)
{
	char src[PATH_MAX], dir[PATH_MAX], type[64];
	bool found = false;
	FILE *f = fopen("/proc/self/mounts", "r");

	if (!f)
		return false;
	while (!found &&
	       fscanf(f, "%4095s %4095s %63s %*[^\n]", src, dir, type) == 3)
		if (strcmp(type, "fuse.vdpoolfs") == 0 &&
		    strcmp(src, spec) == 0 && strlen(dir) < size) {
			/* /proc/self/mounts escapes spaces as \040 etc.;
			 * such mountpoints simply are not found. */
			memcpy(mnt, dir, strlen(dir) + 1);
			found = true;
		}
	fclose(f);
	return found;
}

static int cmd_status(int argc, char **argv)
{
	static const struct option opts[] = {
		{"json", no_argument, NULL, 'j'},
		{"help", no_argument, NULL, 'h'},
		{0},
	};
	struct vdp_pool *p;
	bool json = false;
	struct stat st = {0};
	const char *arg;
	char *text;
	int c, r;

	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		if (c != 'j')
			return option_error(c, argv);
		json = true;
	}
	if (argc - optind != 1)
		return usage_error("expected one POOL or MOUNTPOINT");
	arg = argv[optind];

	/* A mounted pool: ask its daemon, which has the live numbers. */
	if (stat(arg, &st) < 0 && errno == ENOTCONN) {
		errorf(arg, "its daemon is gone (run vdpool umount %s)", arg);
		return 1;
	}
	if (S_ISDIR(st.st_mode)) {
		r = read_xattr(arg,
			       json ? "trusted.vdpool.status.json"
				    : "trusted.vdpool.status",
			       &text);
		if (r == 0) {
			print_text(text);
			free(text);
			return 0;
		}
		if (r == -ENODATA && geteuid() != 0 && is_fuse_root(arg)) {
			errorf(arg, "reading a mount's status needs root; give "
				    "the pool's name instead");
			return 1;
		}
		if (r != -ENODATA && r != -EOPNOTSUPP) {
			errorf(arg, "%s", strerror(-r));
			return 1;
		}
	}

	r = vdp_pool_open(arg, VDP_OPEN_RDONLY, &p);
	if (r == -EBUSY) {
		/* Mounted under the name given?  Then ask that daemon. */
		char mnt[PATH_MAX];

		if (find_mount(arg, mnt, sizeof(mnt)) &&
		    read_xattr(mnt,
			       json ? "trusted.vdpool.status.json"
				    : "trusted.vdpool.status",
			       &text) == 0) {
			print_text(text);
			free(text);
			return 0;
		}
		r = vdp_pool_open(arg, VDP_OPEN_RDONLY | VDP_OPEN_NOLOCK, &p);
		if (r == 0)
			fprintf(stderr,
				"note: pool is mounted; showing its last "
				"commit\n");
	}
	if (r < 0) {
		store_error(arg, r);
		return 1;
	}
	r = vdp_pool_status(p, json, &text);
	if (r < 0) {
		store_error(arg, r);
		vdp_pool_close(p);
		return 1;
	}
	print_text(text);
	free(text);
	vdp_pool_close(p);
	return 0;
}

static void check_report(void *ctx, const char *line)
{
	(void)ctx;
	print_text(line);
}

/* One line per phase of a repair, on a terminal only. */
static void repair_progress(void *ctx, const char *what)
{
	if (isatty(STDERR_FILENO))
		fprintf(stderr, "%s: %s...\n", (const char *)ctx, what);
}

/*
 * check --repair: mends POOL, printing each change, then checks it again.
 * Exit status 0 when there was nothing to repair, 1 when repaired and now
 * clean, 4 when problems remain, 8 on operational errors.
 */
static int run_repair(const char *arg)
{
	struct vdp_statfs st;
	struct vdp_pool *p;
	int changes, r;

	changes = vdp_pool_repair(arg, check_report, repair_progress,
				  (void *)arg);
	if (changes == -EBUSY) {
		errorf(arg, "pool is mounted; unmount it first");
		return 8;
	}
	if (changes == -EUCLEAN) {
		/* Damage repair does not mend: a finding, not a failure. */
		printf("%s\n%s: cannot repair; nothing was changed\n",
		       vdp_last_error(), arg);
		return 4;
	}
	if (changes < 0) {
		store_error(arg, changes);
		return 8;
	}
	fflush(stdout);
	repair_progress((void *)arg, "checking the result");
	r = vdp_pool_open(arg, VDP_OPEN_RDONLY, &p);
	if (r < 0) {
		printf("%s\n%s: still cannot be opened after repair\n",
		       *vdp_last_error() ? vdp_last_error() : strerror(-r),
		       arg);
		return 4;
	}
	vdp_pool_statfs(p, &st);
	r = vdp_pool_check(p, check_report, NULL);
	vdp_pool_close(p);
	if (r < 0) {
		store_error(arg, r);
		return 8;
	}
	if (r > 0) {
		printf("%s: %d change%s made, %d problem%s left\n", arg,
		       changes, changes == 1 ? "" : "s", r, r == 1 ? "" : "s");
		return 4;
	}
	if (changes == 0) {
		printf("%s: clean, nothing to repair, %" PRIu64 " inode%s, "
		       "%" PRIu64 "/%" PRIu64 " extents\n",
		       arg, st.inodes, st.inodes == 1 ? "" : "s",
		       st.total_extents - st.free_extents, st.total_extents);
		return 0;
	}
	printf("%s: repaired, %d change%s; clean now, %" PRIu64 " inode%s, "
	       "%" PRIu64 "/%" PRIu64 " extents\n",
	       arg, changes, changes == 1 ? "" : "s", st.inodes,
	       st.inodes == 1 ? "" : "s", st.total_extents - st.free_extents,
	       st.total_extents);
	return 1;
}

static int cmd_check(int argc, char **argv)
{
	static const struct option opts[] = {
		{"verbose", no_argument, NULL, 'v'},
		{"repair", no_argument, NULL, 'R'},
		{"help", no_argument, NULL, 'h'},
		{0},
	};
	struct timespec t0, t1;
	struct vdp_statfs st;
	struct vdp_pool *p;
	bool verbose = false, repair = false;
	const char *arg;
	char b[32];
	int c, r;

	while ((c = getopt_long(argc, argv, ":vh", opts, NULL)) != -1) {
		if (c == 'R')
			repair = true;
		else if (c == 'v')
			verbose = true;
		else
			return option_error(c, argv);
	}
	if (argc - optind != 1)
		return usage_error("expected one POOL");
	arg = argv[optind];
	if (repair)
		return run_repair(arg);

	r = vdp_pool_open(arg, VDP_OPEN_RDONLY, &p);
	if (r == -EBUSY) {
		errorf(arg, "pool is mounted; unmount it first");
		return 8;
	}
	if (r == -EUCLEAN || r == -EBADMSG || r == -ESTALE) {
		/* The metadata itself is damaged: that is the finding. */
		printf("%s\n%s: 1 problem found (the pool cannot be opened)\n",
		       *vdp_last_error() ? vdp_last_error() : strerror(-r),
		       arg);
		return 4;
	}
	if (r < 0) {
		store_error(arg, r);
		return 8;
	}
	vdp_pool_statfs(p, &st);
	if (verbose) {
		printf("%s: checking %" PRIu64 " inodes, %" PRIu64
		       " of %" PRIu64 " extents of %s in use\n",
		       arg, st.inodes, st.total_extents - st.free_extents,
		       st.total_extents, human(st.extent_size, b, sizeof(b)));
		fflush(stdout);
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	r = vdp_pool_check(p, check_report, NULL);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	if (r < 0) {
		store_error(arg, r);
		vdp_pool_close(p);
		return 8;
	}
	if (r == 0)
		printf("%s: clean, %" PRIu64 " inode%s, %" PRIu64 "/%" PRIu64
		       " extents\n",
		       arg, st.inodes, st.inodes == 1 ? "" : "s",
		       st.total_extents - st.free_extents, st.total_extents);
	else
		printf("%s: %d problem%s found\n", arg, r, r == 1 ? "" : "s");
	if (verbose)
		printf("%s: checked in %.3f s\n", arg,
		       (double)(t1.tv_sec - t0.tv_sec) +
			       (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
	vdp_pool_close(p);
	return r ? 4 : 0;
}

static const struct option long_help[] = {
	{"help", no_argument, NULL, 'h'},
	{0},
};

/* ---- growing and shrinking ---------------------------------------------- */

/* The control socket of the daemon that serves ARG (its mountpoint, or the
 * pool name or member path it was mounted by) into SOCK; false when ARG is
 * not a writable mount (then the pool is opened here). */
static bool control_socket(const char *arg, char *sock, size_t size)
{
	char mnt[PATH_MAX], *s;
	struct stat st;
	const char *dir = NULL;

	if (stat(arg, &st) == 0 && S_ISDIR(st.st_mode))
		dir = arg;
	else if (find_mount(arg, mnt, sizeof(mnt)))
		dir = mnt;
	if (!dir || read_xattr(dir, "trusted.vdpool.control", &s) < 0)
		return false;
	snprintf(sock, size, "%s", s);
	free(s);
	return true;
}

/* A progress bar on a terminal: "\r[####      ]  40%  12/30 extents". */
static bool show_progress(uint64_t done, uint64_t total, int64_t eta)
{
	static const char bar[] = "##############################";
	unsigned pct = total ? (unsigned)(done * 100 / total) : 0;
	int w = (int)sizeof(bar) - 1, fill = (int)(pct * (unsigned)w / 100);

	if (!isatty(STDERR_FILENO))
		return false;
	fprintf(stderr, "\r[%.*s%*s] %3u%%  %" PRIu64 "/%" PRIu64 " extents",
		fill, bar, w - fill, "", pct, done, total);
	if (eta >= 0)
		fprintf(stderr, ", about %" PRId64 " s left   ", eta);
	else
		fprintf(stderr, "                    ");
	return true;
}

/*
 * Sends request REQ to the daemon's control socket SOCK and follows the
 * answer: progress lines draw the bar, "ok TEXT" copies TEXT to OK and
 * returns 0, "error TEXT" prints the error line about WHAT and returns 1.
 */
static int ask_daemon(const char *sock, const char *req, const char *what,
		      char *ok, size_t oksize)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	char line[4300];
	bool bar = false;
	int fd, r = 1;
	FILE *f;

	if (strlen(sock) >= sizeof(sa.sun_path)) {
		errorf(sock, "socket path too long");
		return 1;
	}
	memcpy(sa.sun_path, sock, strlen(sock) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		errorf(sock, "cannot reach the daemon: %s", strerror(errno));
		if (fd >= 0)
			close(fd);
		return 1;
	}
	if (dprintf(fd, "%s\n", req) < 0 || !(f = fdopen(fd, "r"))) {
		errorf(sock, "%s", strerror(errno));
		close(fd);
		return 1;
	}
	while (fgets(line, sizeof(line), f)) {
		unsigned long long d, t;
		long long eta;

		line[strcspn(line, "\n")] = 0;
		if (sscanf(line, "progress %llu %llu %lld", &d, &t, &eta) ==
		    3) {
			bar = show_progress(d, t, eta) || bar;
			continue;
		}
		if (bar)
			fputc('\n', stderr);
		bar = false;
		if (!strncmp(line, "ok", 2)) {
			const char *txt = line[2] ? line + 3 : "";
			size_t l =
				strlen(txt) < oksize ? strlen(txt) : oksize - 1;

			memcpy(ok, txt, l);
			ok[l] = 0;
			r = 0;
		} else {
			const char *why =
				strncmp(line, "error ", 6) ? line : line + 6;

			errorf(what && names(why, what) ? NULL : what, "%s",
			       why);
		}
		fclose(f);
		return r;
	}
	if (bar)
		fputc('\n', stderr);
	errorf(what, "the daemon closed the connection without an answer");
	fclose(f);
	return 1;
}

/* Opens an unmounted pool for a change; prints the error line. */
static int open_for_change(const char *arg, struct vdp_pool **p)
{
	int r = vdp_pool_open(arg, 0, p);

	if (r == -EBUSY) {
		errorf(arg, "%s; give the mountpoint of the mounted pool",
		       vdp_last_error());
		return 1;
	}
	if (r < 0) {
		store_error(arg, r);
		return 1;
	}
	return 0;
}

/* Waits for the task of an unmounted pool, drawing the bar; 0 once done,
 * else 1 with the error line about WHAT. */
static int wait_task(struct vdp_pool *p, const char *what)
{
	struct vdp_task_info t;
	bool bar = false;

	for (;;) {
		vdp_pool_task(p, &t);
		if (t.state != VDP_TASK_RUNNING)
			break;
		bar = show_progress(t.done, t.total, t.eta_s) || bar;
		poll(NULL, 0, 250);
	}
	if (bar) {
		show_progress(t.total, t.total, -1);
		fputc('\n', stderr);
	}
	if (t.state == VDP_TASK_DONE)
		return 0;
	errorf(what, "%s",
	       t.state == VDP_TASK_FAILED      ? t.error
	       : t.state == VDP_TASK_CANCELLED ? "cancelled"
					       : "stopped");
	return 1;
}

/* MEMBER as an absolute path (the daemon's working directory is "/"). */
static const char *abs_member(const char *member, char *buf, size_t size)
{
	char real[PATH_MAX];

	if (!realpath(member, real))
		return member; /* the store says why */
	snprintf(buf, size, "%s", real);
	return buf;
}

static int cmd_add(int argc, char **argv)
{
	static const struct option opts[] = {
		{"force", no_argument, NULL, 'f'},
		{"help", no_argument, NULL, 'h'},
		{0},
	};
	char sock[PATH_MAX], req[PATH_MAX + 32], ok[256], abs[PATH_MAX];
	struct vdp_pool *p = NULL;
	bool force = false, mounted;
	int c, r = 0;

	while ((c = getopt_long(argc, argv, ":fh", opts, NULL)) != -1) {
		if (c != 'f')
			return option_error(c, argv);
		force = true;
	}
	if (argc - optind < 2)
		return usage_error("expected POOL|MOUNTPOINT and a MEMBER");
	mounted = control_socket(argv[optind], sock, sizeof(sock));
	if (!mounted && open_for_change(argv[optind], &p))
		return 1;
	for (int i = optind + 1; i < argc && r == 0; i++) {
		const char *m = abs_member(argv[i], abs, sizeof(abs));

		if (mounted) {
			snprintf(req, sizeof(req), "add %s%s",
				 force ? "--force " : "", m);
			r = ask_daemon(sock, req, argv[i], ok, sizeof(ok));
		} else if ((r = vdp_pool_add_member(p, m, force)) < 0) {
			store_error(argv[i], r);
			r = 1;
		}
		if (r == 0)
			printf("%s: added to the pool\n", argv[i]);
	}
	if (p && vdp_pool_close(p) < 0 && r == 0) {
		store_error(argv[optind], -EIO);
		r = 1;
	}
	return r;
}

static int cmd_remove(int argc, char **argv)
{
	static const struct option opts[] = {
		{"cancel", no_argument, NULL, 'c'},
		{"rate", required_argument, NULL, 'r'},
		{"help", no_argument, NULL, 'h'},
		{0},
	};
	char sock[PATH_MAX], req[PATH_MAX + 64], ok[256], abs[PATH_MAX];
	struct vdp_pool *p = NULL;
	bool cancel = false;
	const char *m = NULL;
	uint64_t rate = 0;
	int c, r;

	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		if (c == 'c')
			cancel = true;
		else if (c == 'r' && parse_size(optarg, &rate) < 0)
			return usage_error("--rate %s: not a size", optarg);
		else if (c != 'r')
			return option_error(c, argv);
	}
	if (argc - optind != 2 && !(cancel && argc - optind == 1))
		return usage_error("expected POOL|MOUNTPOINT and a MEMBER");
	if (argc - optind == 2)
		m = abs_member(argv[optind + 1], abs, sizeof(abs));
	if (control_socket(argv[optind], sock, sizeof(sock))) {
		if (cancel)
			snprintf(req, sizeof(req), "cancel");
		else
			snprintf(req, sizeof(req),
				 "remove --rate=%" PRIu64 " %s", rate, m);
		r = ask_daemon(sock, req, m ? argv[optind + 1] : argv[optind],
			       ok, sizeof(ok));
	} else {
		if (open_for_change(argv[optind], &p))
			return 1;
		vdp_pool_set_move_rate(p, rate);
		r = cancel ? vdp_pool_cancel_task(p)
			   : vdp_pool_remove_member(p, m);
		if (r < 0) {
			store_error(m ? argv[optind + 1] : argv[optind], r);
			r = 1;
		} else if (!cancel) {
			r = wait_task(p, argv[optind + 1]);
		}
		if (vdp_pool_close(p) < 0 && r == 0) {
			store_error(argv[optind], -EIO);
			r = 1;
		}
	}
	if (r == 0)
		printf("%s: %s\n", m ? argv[optind + 1] : argv[optind],
		       cancel ? "removal cancelled" : "removed from the pool");
	return r;
}

static int cmd_balance(int argc, char **argv)
{
	static const struct option opts[] = {
		{"rate", required_argument, NULL, 'r'},
		{"help", no_argument, NULL, 'h'},
		{0},
	};
	char sock[PATH_MAX], ok[256], req[64];
	struct vdp_pool *p;
	uint64_t rate = 0;
	int c, r;

	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		if (c != 'r')
			return option_error(c, argv);
		if (parse_size(optarg, &rate) < 0)
			return usage_error("--rate %s: not a size", optarg);
	}
	if (argc - optind != 1)
		return usage_error("expected one POOL or MOUNTPOINT");
	if (control_socket(argv[optind], sock, sizeof(sock))) {
		snprintf(req, sizeof(req), "balance --rate=%" PRIu64, rate);
		r = ask_daemon(sock, req, argv[optind], ok, sizeof(ok));
	} else {
		if (open_for_change(argv[optind], &p))
			return 1;
		vdp_pool_set_move_rate(p, rate);
		r = vdp_pool_balance(p);
		if (r < 0) {
			store_error(argv[optind], r);
			r = 1;
		} else {
			r = wait_task(p, argv[optind]);
		}
		if (vdp_pool_close(p) < 0 && r == 0) {
			store_error(argv[optind], -EIO);
			r = 1;
		}
	}
	if (r == 0)
		printf("%s: balanced\n", argv[optind]);
	return r;
}

static int cmd_resize_member(int argc, char **argv)
{
	char sock[PATH_MAX], req[PATH_MAX + 32], ok[256], abs[PATH_MAX];
	char h1[32], h2[32];
	unsigned long long a = 0, b = 0;
	struct vdp_pool *p;
	const char *m;
	int c, r;

	while ((c = getopt_long(argc, argv, ":h", long_help, NULL)) != -1)
		return option_error(c, argv);
	if (argc - optind != 2)
		return usage_error("expected POOL|MOUNTPOINT and a MEMBER");
	m = abs_member(argv[optind + 1], abs, sizeof(abs));
	if (control_socket(argv[optind], sock, sizeof(sock))) {
		snprintf(req, sizeof(req), "resize %s", m);
		r = ask_daemon(sock, req, argv[optind + 1], ok, sizeof(ok));
		if (r == 0 && sscanf(ok, "%llu %llu", &a, &b) != 2)
			a = b = 0;
	} else {
		uint64_t o = 0, n = 0;

		if (open_for_change(argv[optind], &p))
			return 1;
		r = vdp_pool_resize_member(p, m, &o, &n);
		if (r < 0) {
			store_error(argv[optind + 1], r);
			r = 1;
		}
		if (vdp_pool_close(p) < 0 && r == 0) {
			store_error(argv[optind], -EIO);
			r = 1;
		}
		a = o;
		b = n;
	}
	if (r == 0 && a == b)
		printf("%s: already uses all of its %s\n", argv[optind + 1],
		       human(b, h1, sizeof(h1)));
	else if (r == 0)
		printf("%s: grown from %s to %s\n", argv[optind + 1],
		       human(a, h1, sizeof(h1)), human(b, h2, sizeof(h2)));
	return r;
}

static const struct command commands[] = {
	{"create", cmd_create, "format members as a new, empty pool",
	 " [--name NAME] [--extent-size SIZE] [--force] MEMBER...\n"
	 "Format each MEMBER (a file, a block device, lvm:VG/LV or an\n"
	 "iscsi:// URL, see vdpool(8)) into a new, empty pool and register\n"
	 "the pool under NAME.\n\n"
	 "  -n, --name NAME         1-63 of A-Z a-z 0-9 . _ - (default: the\n"
	 "                          first member's name without extension)\n"
	 "  -s, --extent-size SIZE  a power of two from 64K to 64M, with\n"
	 "                          K/M/G suffix (default 1M)\n"
	 "  -f, --force             overwrite signatures found on members\n"
	 "  -h, --help              show this help\n\n"
	 "Example: vdpool create --name pool0 /dev/sdb /srv/pool0.img\n",
	 2},
	{"mount", cmd_mount, "mount a pool as a directory of disk files",
	 " [-f] [-o OPTS] POOL MOUNTPOINT\n"
	 "Start vdpoolfs to show POOL (a pool name or a member's path) as a\n"
	 "directory of raw disk files at MOUNTPOINT; return once mounted.\n\n"
	 "  -f, --foreground        keep the daemon in the foreground\n"
	 "  -o, --options OPTS      vdpoolfs mount options, comma-separated\n"
	 "                          (repeatable), e.g. allow_other\n"
	 "  -h, --help              show this help\n",
	 2},
	{"umount", cmd_umount, "unmount a pool and wait for its final commit",
	 " MOUNTPOINT\n"
	 "Unmount the vdpool at MOUNTPOINT and wait (up to 60 s) until its\n"
	 "daemon has committed and exited.\n\n"
	 "  -h, --help              show this help\n",
	 2},
	{"status", cmd_status, "show capacity, members and disks of a pool",
	 " [--json] POOL|MOUNTPOINT\n"
	 "Show a pool's capacity, members, disks and I/O counters.  Give\n"
	 "the MOUNTPOINT of a mounted pool to see its live numbers.\n\n"
	 "      --json              one JSON object, for scripts\n"
	 "  -h, --help              show this help\n",
	 2},
	{"check", cmd_check, "verify (or repair) an unmounted pool",
	 " [-v] [--repair] POOL\n"
	 "Verify, read-only, every metadata block, tree, directory and\n"
	 "reference count of an unmounted POOL; print each problem found.\n"
	 "With --repair, mend what can be mended from the pool's redundant\n"
	 "metadata in one commit, print each change, then check again.\n"
	 "Exit status: 0 clean (nothing repaired), 1 repaired and clean now,\n"
	 "4 problems found or left, 8 operational error, 16 usage error.\n\n"
	 "  -v, --verbose           say what is checked and how long it took\n"
	 "      --repair            repair the pool (see vdpool(8), Repair)\n"
	 "  -h, --help              show this help\n",
	 16},
	{"add", cmd_add, "add members to a pool, mounted or not",
	 " [--force] POOL|MOUNTPOINT MEMBER...\n"
	 "Format each MEMBER (a file, a block device, lvm:VG/LV or an\n"
	 "iscsi:// URL) and add it to the pool; its space can be used at\n"
	 "once, also by a mounted pool.\n\n"
	 "  -f, --force             overwrite signatures found on members\n"
	 "  -h, --help              show this help\n",
	 2},
	{"remove", cmd_remove, "move a member's data away and remove it",
	 " [--rate RATE] POOL|MOUNTPOINT MEMBER\n"
	 "       vdpool remove --cancel POOL|MOUNTPOINT\n"
	 "Mark MEMBER leaving, move its extents and metadata to the other\n"
	 "members while the disks stay in use, then drop it from the pool.\n"
	 "Shows a progress bar on a terminal; Ctrl-C leaves the removal\n"
	 "running in a mounted pool (see vdpool status).  A removal that\n"
	 "was interrupted resumes when the pool is opened again.\n\n"
	 "      --cancel            stop the removal; the member stays\n"
	 "      --rate RATE         move at most RATE bytes a second (K/M/G)\n"
	 "  -h, --help              show this help\n",
	 2},
	{"balance", cmd_balance, "spread allocated extents evenly",
	 " [--rate RATE] POOL|MOUNTPOINT\n"
	 "Move extents from the fullest members to the emptiest until each\n"
	 "is filled to about the pool's average.  vdpool remove --cancel\n"
	 "stops it.\n\n"
	 "      --rate RATE         move at most RATE bytes a second (K/M/G)\n"
	 "  -h, --help              show this help\n",
	 2},
	{"resize-member", cmd_resize_member,
	 "use the new size of a grown member",
	 " POOL|MOUNTPOINT MEMBER\n"
	 "Record MEMBER (a file, device or LUN that grew) at its current\n"
	 "size, so the pool can use the new space.  Mounting does the same\n"
	 "for every member.\n\n"
	 "  -h, --help              show this help\n",
	 2},
};

static void main_help(void)
{
	size_t i;

	printf("Usage: vdpool COMMAND [OPTION]... [ARG]...\n"
	       "Manage vdpool pools: members joined into one directory of\n"
	       "thin, cloneable virtual-machine disks.\n\nCommands:\n");
	for (i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		printf("  %-14s %s\n", commands[i].name, commands[i].summary);
	printf("\nRun 'vdpool COMMAND --help' for a command's options; "
	       "see vdpool(8).\n");
}

int main(int argc, char **argv)
{
	const char *name = argc > 1 ? argv[1] : NULL;
	size_t i;
	int r;

	if (!name) {
		errorf(NULL, "no command given (try 'vdpool --help')");
		return 2;
	}
	if (!strcmp(name, "--help") || !strcmp(name, "-h")) {
		main_help();
		return fflush(stdout) ? 1 : 0;
	}
	if (!strcmp(name, "--version") || !strcmp(name, "-V")) {
		printf("vdpool %s\n", VDPOOL_VERSION);
		return fflush(stdout) ? 1 : 0;
	}
	for (i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (!strcmp(name, commands[i].name))
			cur = &commands[i];
	if (!cur) {
		errorf(name, "unknown command (try 'vdpool --help')");
		return 2;
	}
	r = cur->run(argc - 1, argv + 1);
	if (fflush(stdout) || ferror(stdout)) {
		errorf("stdout", "%s", strerror(errno));
		return r ? r : 1;
	}
	return r;
}
