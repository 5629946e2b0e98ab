/* SPDX-License-Identifier: MIT */
/*
 * member_file.c - members that are regular files (on any local or network
 * filesystem) or block devices, reached with O_DIRECT so that the host's
 * page cache never holds a second copy of disk data.
 *
 * Filesystems without O_DIRECT (tmpfs, some FUSE filesystems) fall back to
 * buffered I/O; flush is fdatasync either way, so durability is the same.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "format.h"
#include "internal.h"
#include "member.h"

struct file_member {
	struct vdp_member m;
	int fd;
	bool is_block;
};

static int file_fd(struct vdp_member *m)
{
	return ((struct file_member *)m)->fd;
}

static int file_pread(struct vdp_member *m, void *buf, size_t len, uint64_t off)
{
	while (len > 0) {
		ssize_t n = pread(file_fd(m), buf, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0) { /* past the end of a file member: zeros */
			memset(buf, 0, len);
			return 0;
		}
		buf = (char *)buf + n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
	return 0;
}

static int file_pwrite(struct vdp_member *m, const void *buf, size_t len,
		       uint64_t off)
{
	while (len > 0) {
		ssize_t n = pwrite(file_fd(m), buf, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO;
		buf = (const char *)buf + n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
	return 0;
}

static int file_flush(struct vdp_member *m)
{
	return fdatasync(file_fd(m)) < 0 ? -errno : 0;
}

static int zeroes_by_writing(struct vdp_member *m, uint64_t off, uint64_t len)
{
	size_t bs = 1u << 20;
	void *z;
	int r = 0;

	if (posix_memalign(&z, 4096, bs) != 0)
		return -ENOMEM;
	memset(z, 0, bs);
	while (len > 0 && r == 0) {
		size_t n = len < bs ? (size_t)len : bs;

		r = file_pwrite(m, z, n, off);
		off += n;
		len -= n;
	}
	free(z);
	return r;
}

static int file_write_zeroes(struct vdp_member *m, uint64_t off, uint64_t len)
{
	struct file_member *f = (struct file_member *)m;

	if (f->is_block) {
		uint64_t range[2] = {off, len};

		if (ioctl(f->fd, BLKZEROOUT, range) == 0)
			return 0;
	} else {
		if (fallocate(f->fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
			      (off_t)off, (off_t)len) == 0)
			return 0;
		/* On a file, a punched hole reads as zeros too. */
		if (fallocate(f->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			      (off_t)off, (off_t)len) == 0)
			return 0;
	}
	return zeroes_by_writing(m, off, len);
}

static int file_discard(struct vdp_member *m, uint64_t off, uint64_t len)
{
	struct file_member *f = (struct file_member *)m;
	int r;

	if (f->is_block) {
		uint64_t range[2] = {off, len};

		r = ioctl(f->fd, BLKDISCARD, range);
	} else {
		r = fallocate(f->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			      (off_t)off, (off_t)len);
	}
	return r < 0 ? -errno : 0;
}

static int file_lock(struct vdp_member *m, bool exclusive)
{
	if (flock(file_fd(m), (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB) == 0)
		return 0;
	return errno == EWOULDBLOCK ? -EBUSY : -errno;
}

static int file_submit(struct vdp_member *m, struct vdp_mio *io)
{
	return uring_submit(file_fd(m), io);
}

static void file_close(struct vdp_member *m)
{
	struct file_member *f = (struct file_member *)m;

	close(f->fd);
	free(m->path);
	free(f);
}

static const struct vdp_member_ops file_ops = {
	.kind = "file",
	.pread = file_pread,
	.pwrite = file_pwrite,
	.submit = file_submit,
	.flush = file_flush,
	.write_zeroes = file_write_zeroes,
	.discard = file_discard,
	.lock = file_lock,
	.close = file_close,
};

static const struct vdp_member_ops block_ops = {
	.kind = "block",
	.pread = file_pread,
	.pwrite = file_pwrite,
	.submit = file_submit,
	.flush = file_flush,
	.write_zeroes = file_write_zeroes,
	.discard = file_discard,
	.lock = file_lock,
	.close = file_close,
};

int vdp_member_file_open(const char *path, bool rdonly, struct vdp_member **out)
{
	int flags = (rdonly ? O_RDONLY : O_RDWR) | O_CLOEXEC;
	struct file_member *f;
	struct stat st;
	int fd, r;

	fd = open(path, flags | O_DIRECT);
	if (fd < 0 && errno == EINVAL)
		fd = open(path, flags);
	if (fd < 0) {
		r = -errno;
		vdp_set_error("member %s: cannot open: %s", path, strerror(-r));
		return r;
	}
	if (fstat(fd, &st) < 0) {
		r = -errno;
		vdp_set_error("member %s: %s", path, strerror(-r));
		goto err_close_fd;
	}
	if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
		r = -EINVAL;
		vdp_set_error("member %s: not a regular file or block device",
			      path);
		goto err_close_fd;
	}
	f = calloc(1, sizeof(*f));
	if (!f) {
		r = -ENOMEM;
		goto err_close_fd;
	}
	f->fd = fd;
	f->is_block = S_ISBLK(st.st_mode);
	f->m.ops = f->is_block ? &block_ops : &file_ops;
	f->m.kind = f->is_block ? VDP_MK_BLOCK : VDP_MK_FILE;
	f->m.align = 4096;
	f->m.size = (uint64_t)st.st_size;
	f->m.priv = f;
	if (f->is_block) {
		int ss = 0;

		if (ioctl(fd, BLKGETSIZE64, &f->m.size) < 0) {
			r = -errno;
			vdp_set_error("member %s: cannot get size: %s", path,
				      strerror(-r));
			goto err_free;
		}
		if (ioctl(fd, BLKSSZGET, &ss) == 0 && ss > 4096)
			f->m.align = (unsigned)ss;
	}
	f->m.path = strdup(path);
	if (!f->m.path) {
		r = -ENOMEM;
		goto err_free;
	}
	*out = &f->m;
	return 0;

err_free:
	free(f);
err_close_fd:
	close(fd);
	return r;
}
