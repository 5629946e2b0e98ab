/* SPDX-License-Identifier: MIT */
/*
 * test_iscsi_url.c - what the iSCSI member decides before it reaches a
 * target: which specs are iSCSI URLs, which carry a password, the errors
 * for malformed, too long or option-carrying URLs and for bad secrets,
 * and that no error message ever quotes the password.  The network cases
 * connect to a closed port of 127.0.0.1 (refused at once) and to a
 * listening one that never answers (the login gives up).  Talking
 * to a real target is tests/e2e/iscsi.sh's job.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"
#include "member.h"
#include "vdpool.h"

#define SECRET "Sekr1t-Pw"

/* Opens SPEC, which must fail with WANT_ERR and an error holding WANT. */
static void open_fails(const char *spec, int want_err, const char *want)
{
	struct vdp_member *m = NULL;
	int r = vdp_member_open(spec, true, &m);
	const char *e = vdp_last_error();

	CHECK_EQ(r, want_err);
	CHECK(m == NULL);
	if (!strstr(e, want))
		fprintf(stderr, "  %s: error '%s' lacks '%s'\n", spec, e, want);
	CHECK(strstr(e, want) != NULL);
	CHECK(strstr(e, SECRET) == NULL);
	CHECK(strchr(e, '\n') == NULL);
}

/* A portal that accepts the connection (the kernel does, from the listen
 * backlog) and never answers: the login must give up, not hang. */
static void silent_portal(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET};
	socklen_t al = sizeof(a);
	char url[128];
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	CHECK(fd >= 0);
	CHECK(bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0);
	CHECK(listen(fd, 4) == 0);
	CHECK(getsockname(fd, (struct sockaddr *)&a, &al) == 0);
	snprintf(url, sizeof(url), "iscsi://127.0.0.1:%u/iqn.x:y/1",
		 ntohs(a.sin_port));
	setenv("VDPOOL_ISCSI_TIMEOUT", "2", 1); /* 5 s per login */
	open_fails(url, -ETIMEDOUT, "did not answer the login");
	unsetenv("VDPOOL_ISCSI_TIMEOUT");
	close(fd);
}

int main(void)
{
	char longurl[300], path[] = "/tmp/vdpool-test-secret.XXXXXX";
	int fd;

	CHECK(vdp_member_is_iscsi("iscsi://h/iqn.x:y/0"));
	CHECK(!vdp_member_is_iscsi("/dev/sdb"));
	CHECK(!vdp_member_is_iscsi("iscsi:/h/iqn/0"));
	CHECK(vdp_member_url_has_password("iscsi://u%p@h/iqn/0"));
	CHECK(!vdp_member_url_has_password("iscsi://u@h/iqn/0"));
	CHECK(!vdp_member_url_has_password("iscsi://h/iqn%3a1/0"));
	CHECK(!vdp_member_url_has_password("/srv/a%b@c"));

	open_fails("iscsi://127.0.0.1/iqn.2026-01.org.vdpool:t", -EINVAL,
		   "not an iSCSI URL");
	open_fails("iscsi://127.0.0.1/iqn.2026-01.org.vdpool:t/x", -EINVAL,
		   "not an iSCSI URL");
	open_fails("iscsi://127.0.0.1//1", -EINVAL, "not an iSCSI URL");
	open_fails("iscsi://u%" SECRET "@127.0.0.1/iqn.x:y", -EINVAL,
		   "member iscsi://u@127.0.0.1/iqn.x:y: not an iSCSI URL");
	open_fails("iscsi://127.0.0.1/iqn.x:y/1?target_password=" SECRET,
		   -EINVAL, "URL options (?...) are not supported");
	snprintf(longurl, sizeof(longurl),
		 "iscsi://u%%%s@127.0.0.1/iqn.%0200d/1", SECRET, 0);
	open_fails(longurl, -ENAMETOOLONG, "URL longer than 127 bytes");
	/* The redacted URL fits: the password does not count. */
	snprintf(longurl, sizeof(longurl),
		 "iscsi://u%%%s%080d@127.0.0.1:1/iqn.x:y/1", SECRET, 0);
	open_fails(longurl, -ECONNREFUSED,
		   "portal 127.0.0.1:1 is unreachable: Connection refused");

	setenv("VDPOOL_ISCSI_PASSWORD", SECRET, 1);
	open_fails("iscsi://127.0.0.1:1/iqn.x:y/1", -EINVAL,
		   "a CHAP password is set but no user name");
	unsetenv("VDPOOL_ISCSI_PASSWORD");
	setenv("VDPOOL_ISCSI_SECRET_FILE", "/nonexistent/chap.secret", 1);
	open_fails("iscsi://127.0.0.1:1/iqn.x:y/1", -ENOENT,
		   "cannot read VDPOOL_ISCSI_SECRET_FILE /nonexistent");
	/* A file of user:password is read, then the portal is refused. */
	fd = mkstemp(path);
	CHECK(fd >= 0);
	CHECK(write(fd, "bob:" SECRET "\n", strlen(SECRET) + 5) > 0);
	close(fd);
	setenv("VDPOOL_ISCSI_SECRET_FILE", path, 1);
	open_fails("iscsi://127.0.0.1:1/iqn.x:y/1", -ECONNREFUSED,
		   "unreachable");
	setenv("VDPOOL_ISCSI_TARGET_SECRET_FILE", path, 1);
	open_fails("iscsi://127.0.0.1:1/iqn.x:y/1", -ECONNREFUSED,
		   "unreachable");
	unsetenv("VDPOOL_ISCSI_SECRET_FILE");
	open_fails("iscsi://127.0.0.1:1/iqn.x:y/1", -EINVAL,
		   "mutual CHAP needs the initiator's CHAP secret too");
	unsetenv("VDPOOL_ISCSI_TARGET_SECRET_FILE");
	unlink(path);
	silent_portal();
	return check_done("test_iscsi_url");
}
