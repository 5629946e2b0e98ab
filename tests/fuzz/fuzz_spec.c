/* SPDX-License-Identifier: MIT */
/*
 * fuzz_spec.c - libFuzzer target: bytes -> the test-layer spec parser
 * (vdp_layers_set, store/layer.c), the one parser of a string users type
 * ($VDPOOL_TEST_LAYERS).  A spec it accepts is then used: a scratch file
 * is opened through vdp_member_open, so wrapped in the layers the spec
 * describes, and read, written, zeroed, flushed and closed; then the layers
 * are reset.
 *
 * Input: the spec, up to the first NUL.  Specs that ask for then=exit are
 * parsed but not used, since their crash ends the process by design.
 * Properties: a refused spec says why and changes nothing; an accepted one
 * can be replaced by "" (no layers) again.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <unistd.h>

#include "fuzz.h"
#include "layer.h"
#include "vdpool.h"

#define FILE_SIZE (64u << 10)

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char scratch[PATH_MAX];

static void cleanup(void)
{
	unlink(scratch);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *base = getenv("VDPOOL_FUZZ_TMP");
	int fd;

	(void)argc, (void)argv;
	snprintf(scratch, sizeof(scratch), "%s/vdpool-fuzz-spec-XXXXXX",
		 base && *base ? base : "/dev/shm");
	fd = mkstemp(scratch);
	if (fd < 0 || ftruncate(fd, FILE_SIZE) < 0) {
		perror(scratch);
		exit(1);
	}
	close(fd);
	atexit(cleanup);
	return 0;
}

/* Every op of the member interface once, through the layers. */
static void use_member(void)
{
	static uint8_t buf[8192] __attribute__((aligned(4096)));
	struct vdp_member *m;

	if (vdp_member_open(scratch, false, &m) < 0)
		return;
	memset(buf, 0x5a, sizeof(buf));
	(void)m->ops->pwrite(m, buf, 4096, 0);
	(void)m->ops->pread(m, buf, sizeof(buf), 0);
	(void)m->ops->write_zeroes(m, 4096, 4096);
	if (m->ops->discard)
		(void)m->ops->discard(m, 8192, 4096);
	(void)m->ops->flush(m);
	(void)m->ops->pwrite(m, buf, sizeof(buf), 16384);
	(void)vdp_member_write(m, buf, 100, 5); /* unaligned: bounce path */
	(void)vdp_member_read(m, buf, 100, 4090);
	if (m->ops->lock)
		(void)m->ops->lock(m, true);
	vdp_member_close(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *spec = malloc(size + 1);
	int r;

	if (!spec)
		return 0;
	memcpy(spec, data, size); /* up to the first NUL, if any */
	spec[size] = 0;
	r = vdp_layers_set(spec);
	if (r < 0) {
		FUZZ_ASSERT(*vdp_last_error()); /* a refusal says why */
	} else if (!strcasestr(spec, "exit")) {
		use_member();
		vdp_powerloss_now(); /* on no open member: a no-op crash */
		(void)vdp_powerloss_happened();
		vdp_layers_counts(NULL, NULL);
	}
	FUZZ_ASSERT(vdp_layers_set("") == 0);
	free(spec);
	return 0;
}
