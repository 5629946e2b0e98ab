/* SPDX-License-Identifier: MIT */
/*
 * control.h - the daemon's control socket: how `vdpool add/remove/balance/
 * resize-member` reach a mounted pool (docs/architecture.md, "Growing and
 * shrinking").  A unix stream socket, root only, one request line per
 * connection:
 *
 *   add [--force] PATH | remove [--rate=BYTES] PATH | cancel |
 *   balance [--rate=BYTES] | resize PATH
 *
 * answered by zero or more "progress DONE TOTAL ETA_S" lines while a
 * removal or balance runs, then one "ok TEXT" or "error TEXT" line.  A
 * client that goes away does not stop a removal: it runs on in the store.
 */
#ifndef VDP_CONTROL_H
#define VDP_CONTROL_H

struct vdp_pool;
struct ctl;

/* Directory of the sockets, one per mounted pool: <dir>/<pool-uuid>.sock.
 * $VDPOOL_RUN_DIR or /run/vdpool. */
const char *ctl_dir(void);

/* Creates the socket for POOL and starts serving it on a thread of its
 * own.  -errno with a sentence in vdp_last_error() on failure. */
int ctl_start(struct vdp_pool *pool, struct ctl **out);

/* The socket's path, for the trusted.vdpool.control xattr. */
const char *ctl_path(const struct ctl *c);

/* Stops serving: closes the socket, removes it, waits for the requests
 * being answered (a removal they follow keeps running).  NULL ok. */
void ctl_stop(struct ctl *c);

#endif
