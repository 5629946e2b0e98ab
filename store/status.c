/* SPDX-License-Identifier: MIT */
/*
 * status.c - what `df` and `vdpool status` show: capacity and use of the
 * pool, of each member and of each disk, and the I/O counters.  One
 * function writes both the text and the JSON, so the two cannot disagree.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

void vdp_pool_statfs(struct vdp_pool *p, struct vdp_statfs *st)
{
	memset(st, 0, sizeof(*st));
	pthread_mutex_lock(&p->meta_lock);
	st->extent_size = p->extent_size;
	for (unsigned i = 0; i < p->nmembers; i++) {
		st->total_extents += p->members[i].d.nextents;
		if (p->members[i].d.state == 0)
			st->free_extents += p->members[i].nfree;
	}
	/* Freed by the open transaction: usable after the next commit,
	 * which a write that finds the pool full forces. */
	st->free_extents += p->pend_ext.n;
	/* Freed by a commit, on their way back to the members: usable once
	 * discarded, which a write that finds the pool full waits for. */
	st->free_extents += p->discard_held;
	st->inodes = p->nvnodes;
	pthread_mutex_unlock(&p->meta_lock);
}

struct sbuf {
	char *s;
	size_t len, cap;
	int err;
};

static void put(struct sbuf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void put(struct sbuf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (b->err)
		return;
	for (;;) {
		va_start(ap, fmt);
		/* NULL + 0 is undefined: no buffer yet means no pointer. */
		n = vsnprintf(b->s ? b->s + b->len : NULL, b->cap - b->len, fmt,
			      ap);
		va_end(ap);
		if (n < 0) {
			b->err = -EINVAL;
			return;
		}
		if ((size_t)n < b->cap - b->len)
			break;
		size_t cap = (b->cap + (size_t)n) * 2;
		char *s = realloc(b->s, cap);

		if (!s) {
			b->err = -ENOMEM;
			return;
		}
		b->s = s;
		b->cap = cap;
	}
	b->len += (size_t)n;
}

/* JSON string body: escapes quotes, backslashes and control bytes. */
static void put_json_str(struct sbuf *b, const char *s)
{
	put(b, "\"");
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch == '"' || ch == '\\')
			put(b, "\\%c", ch);
		else if (ch < 0x20)
			put(b, "\\u%04x", ch);
		else
			put(b, "%c", ch);
	}
	put(b, "\"");
}

static void human(uint64_t v, char *out, size_t size)
{
	const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
	double d = (double)v;
	unsigned i = 0;

	while (d >= 1024 && i < 6) {
		d /= 1024;
		i++;
	}
	snprintf(out, size, i ? "%.1f %s" : "%.0f %s", d, u[i]);
}

static bool holds_meta(const struct vdp_pool *p, unsigned m)
{
	for (unsigned c = 0; c < p->nchunks; c++)
		for (unsigned k = 0; k < p->chunks[c].ncopies; k++)
			if (p->chunks[c].member[k] == m)
				return true;
	return false;
}

/* Pool state for status: "failed" (refuses changes until reopened),
 * "degraded" (I/O errors or bad metadata copies seen since open, or the
 * last commit failed), or "ok". */
static const char *pool_state(struct vdp_pool *p)
{
	if (p->failed)
		return "failed";
	if (p->commit_error[0])
		return "degraded";
	for (unsigned i = 0; i < p->nmembers; i++) {
		const struct pmember *pm = &p->members[i];

		if (pm->err_read || pm->err_write || pm->err_flush ||
		    pm->bad_copies)
			return "degraded";
	}
	return "ok";
}

void vdp_pool_problems(struct vdp_pool *p,
		       void (*fn)(void *ctx, const char *line), void *ctx)
{
	char line[512];

	pthread_mutex_lock(&p->err_lock);
	if (p->failed)
		fn(ctx, "pool refuses changes until it is mounted again");
	if (p->commit_error[0]) {
		snprintf(line, sizeof(line), "last commit failed: %s",
			 p->commit_error);
		fn(ctx, line);
	}
	for (unsigned i = 0; i < p->nmembers; i++) {
		const struct pmember *pm = &p->members[i];

		if (!pm->err_read && !pm->err_write && !pm->err_flush &&
		    !pm->bad_copies)
			continue;
		snprintf(line, sizeof(line),
			 "member %u (%s): %llu read, %llu write, %llu flush "
			 "errors, %llu bad metadata copies (read from the "
			 "other copy%s); last: %s",
			 i, pm->m ? pm->m->path : pm->d.path,
			 (unsigned long long)pm->err_read,
			 (unsigned long long)pm->err_write,
			 (unsigned long long)pm->err_flush,
			 (unsigned long long)pm->bad_copies,
			 p->rdonly ? "" : ", rewritten", pm->last_error);
		fn(ctx, line);
	}
	pthread_mutex_unlock(&p->err_lock);
}

static void put_problem(void *ctx, const char *line)
{
	put(ctx, "  ! %s\n", line);
}

struct disk_ctx {
	struct vdp_pool *p;
	struct sbuf *b;
	bool json, first;
	uint64_t mapped; /* map entries of all disks */
	uint64_t shared; /* of this disk: extents another entry names too */
};

static int count_shared(void *arg, const struct rnode *n, uint64_t base)
{
	struct disk_ctx *c = arg;
	const uint64_t *e = (const uint64_t *)n->data;

	(void)base;
	if (n->level == 0)
		for (unsigned i = 0; i < VDP_PAYLOAD / 8; i++)
			if (e[i] && extent_refcount(c->p, le64toh(e[i])) > 1)
				c->shared++;
	return 0;
}

static int put_disk(void *arg, const char *path, struct vnode *v)
{
	struct disk_ctx *c = arg;
	uint64_t es = c->p->extent_size, alloc = v->d.nalloc * es;
	char h1[32], h2[32], h3[32];

	c->shared = 0;
	if (atomic_load(&c->p->shared))
		rtree_visit(&v->data, count_shared, c);
	c->mapped += v->d.nalloc;
	if (c->json) {
		put(c->b, "%s{\"path\":", c->first ? "" : ",");
		put_json_str(c->b, path);
		put(c->b,
		    ",\"ino\":%llu,\"size\":%llu,\"allocated\":%llu,"
		    "\"shared\":%llu,\"exclusive\":%llu}",
		    (unsigned long long)v->ino, (unsigned long long)v->d.size,
		    (unsigned long long)alloc,
		    (unsigned long long)(c->shared * es),
		    (unsigned long long)(alloc - c->shared * es));
	} else {
		human(v->d.size, h1, sizeof(h1));
		human(alloc, h2, sizeof(h2));
		human(c->shared * es, h3, sizeof(h3));
		put(c->b, "  %-40s %12s %12s %12s\n", path, h1, h2, h3);
	}
	c->first = false;
	return 0;
}

static const char *const task_kinds[] = {"none", "remove", "balance"};
static const char *const task_states[] = {"idle",   "running",	 "done",
					  "failed", "cancelled", "stopped"};

/* The running or last task: text, a line after the members; JSON, a
 * "task" member of the pool's object (after "members"). */
static void put_task(struct sbuf *b, const struct vdp_task_info *t, bool json)
{
	unsigned pct = t->total ? (unsigned)(t->done * 100 / t->total) : 0;
	const char *what =
		t->kind == VDP_TASK_REMOVE ? "removal of member" : "balance";

	if (t->kind == VDP_TASK_NONE || t->kind > VDP_TASK_BALANCE ||
	    t->state > VDP_TASK_STOPPED)
		return;
	if (t->state == VDP_TASK_DONE && !json)
		return;
	if (json) {
		put(b,
		    ",\"task\":{\"kind\":\"%s\",\"state\":\"%s\","
		    "\"member\":",
		    task_kinds[t->kind], task_states[t->state]);
		put_json_str(b, t->member);
		put(b,
		    ",\"done\":%llu,\"total\":%llu,\"percent\":%u,"
		    "\"eta_seconds\":%lld,\"error\":",
		    (unsigned long long)t->done, (unsigned long long)t->total,
		    pct, (long long)t->eta_s);
		put_json_str(b, t->error);
		put(b, "}");
		return;
	}
	if (t->state == VDP_TASK_RUNNING && t->eta_s >= 0)
		put(b,
		    "\n  %s %s: %u%% (%llu of %llu extents), about %llds "
		    "left\n",
		    what, t->member, pct, (unsigned long long)t->done,
		    (unsigned long long)t->total, (long long)t->eta_s);
	else if (t->state == VDP_TASK_RUNNING)
		put(b, "\n  %s %s: %u%% (%llu of %llu extents)\n", what,
		    t->member, pct, (unsigned long long)t->done,
		    (unsigned long long)t->total);
	else
		put(b, "\n  %s %s: %s%s%s\n", what, t->member,
		    task_states[t->state], t->error[0] ? ": " : "", t->error);
}

int vdp_pool_status(struct vdp_pool *p, bool json, char **out)
{
	struct sbuf b = {0};
	struct vdp_statfs st;
	char u[37], h1[32], h2[32], h3[32];
	const uint8_t *id = p->uuid;
	uint64_t cap, used, saved, discarding;
	struct vdp_task_info task;
	bool first = true;

	vdp_pool_task(p, &task); /* before meta_lock: task_lock is outer */
	vdp_pool_statfs(p, &st);
	cap = st.total_extents * st.extent_size;
	used = (st.total_extents - st.free_extents) * st.extent_size;
	snprintf(u, sizeof(u),
		 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
		 "%02x%02x%02x%02x%02x%02x",
		 id[0], id[1], id[2], id[3], id[4], id[5], id[6], id[7], id[8],
		 id[9], id[10], id[11], id[12], id[13], id[14], id[15]);
	pthread_mutex_lock(&p->meta_lock);
	/* Free, on their way back to the members (commit.c, the discarder):
	 * still in the members' use columns. */
	discarding = p->discard_held * p->extent_size;
	if (json) {
		put(&b, "{\"name\":");
		put_json_str(&b, p->name);
		put(&b, ",\"state\":\"%s\",\"commit_error\":", pool_state(p));
		pthread_mutex_lock(&p->err_lock);
		put_json_str(&b, p->commit_error);
		pthread_mutex_unlock(&p->err_lock);
		put(&b,
		    ",\"uuid\":\"%s\",\"txid\":%llu,\"extent_size\":%llu,"
		    "\"capacity\":%llu,\"used\":%llu,\"free\":%llu,"
		    "\"discarding\":%llu,\"members\":[",
		    u, (unsigned long long)p->txid,
		    (unsigned long long)p->extent_size, (unsigned long long)cap,
		    (unsigned long long)used, (unsigned long long)(cap - used),
		    (unsigned long long)discarding);
	} else {
		char es[32];

		human(p->extent_size, es, sizeof(es));
		human(cap, h1, sizeof(h1));
		human(used, h2, sizeof(h2));
		human(cap - used, h3, sizeof(h3));
		put(&b,
		    "pool %s (%s): %s\n  transaction %llu, extent size %s\n"
		    "  capacity %s, used %s, free %s\n",
		    p->name, u, pool_state(p), (unsigned long long)p->txid, es,
		    h1, h2, h3);
		if (discarding) {
			human(discarding, h1, sizeof(h1));
			put(&b, "  of the free space, %s is being discarded\n",
			    h1);
		}
		put(&b, "\n  %-3s %-6s %-40s %12s %12s %s\n", "#", "kind",
		    "member", "size", "used", "metadata");
	}
	for (unsigned i = 0; i < p->nmembers; i++) {
		const struct pmember *pm = &p->members[i];
		uint64_t msize = pm->d.nextents * p->extent_size;
		uint64_t mused = (pm->d.nextents - pm->nfree) * p->extent_size;
		const char *kind = pm->m ? pm->m->ops->kind : "?";

		if (pm->d.state == VDP_MS_REMOVED)
			continue; /* a tombstone: nothing to show */
		if (json) {
			put(&b, "%s{\"index\":%u,\"kind\":\"%s\",\"path\":",
			    first ? "" : ",", i, kind);
			put_json_str(&b, pm->m ? pm->m->path : pm->d.path);
			put(&b,
			    ",\"size\":%llu,\"used\":%llu,\"metadata\":%s,"
			    "\"state\":\"%s\",\"errors\":{\"read\":%llu,"
			    "\"write\":%llu,\"flush\":%llu},"
			    "\"bad_metadata_copies\":%llu,\"last_error\":",
			    (unsigned long long)msize,
			    (unsigned long long)mused,
			    holds_meta(p, i) ? "true" : "false",
			    pm->d.state == VDP_MS_LEAVING ? "leaving"
							  : "active",
			    (unsigned long long)pm->err_read,
			    (unsigned long long)pm->err_write,
			    (unsigned long long)pm->err_flush,
			    (unsigned long long)pm->bad_copies);
			pthread_mutex_lock(&p->err_lock);
			put_json_str(&b, pm->last_error);
			pthread_mutex_unlock(&p->err_lock);
			put(&b, "}");
		} else {
			human(msize, h1, sizeof(h1));
			human(mused, h2, sizeof(h2));
			put(&b, "  %-3u %-6s %-40s %12s %12s %s%s\n", i, kind,
			    pm->m ? pm->m->path : pm->d.path, h1, h2,
			    holds_meta(p, i) ? "yes" : "no",
			    pm->d.state == VDP_MS_LEAVING ? "  (leaving)" : "");
		}
		first = false;
	}
	if (json)
		put(&b, "]");
	put_task(&b, &task, json);
	if (!json)
		vdp_pool_problems(p, put_problem, &b);
	put(&b, json ? ",\"disks\":[" : "\n  %-40s %12s %12s %12s\n", "disk",
	    "size", "allocated", "shared");
	struct disk_ctx dc = {.p = p, .b = &b, .json = json, .first = true};

	ns_walk_files(p, put_disk, &dc);
	pthread_mutex_unlock(&p->meta_lock);
	/* Every map entry beyond the first of an extent is space saved; the
	 * extents a removal gave to metadata chunk copies are not mapped. */
	uint64_t data_ext = used / st.extent_size;

	for (unsigned c = 0; c < p->nchunks; c++)
		for (unsigned k = 0; k < p->chunks[c].ncopies; k++)
			if (chunk_in_data(p, &p->chunks[c], k))
				data_ext -=
					(p->chunks[c].nblocks * VDP_BLOCK_SIZE +
					 p->extent_size - 1) >>
					p->extent_shift;
	saved = dc.mapped > data_ext ? (dc.mapped - data_ext) * st.extent_size
				     : 0;
	if (json) {
		put(&b, "],\"saved_by_sharing\":%llu",
		    (unsigned long long)saved);
	} else {
		human(saved, h1, sizeof(h1));
		put(&b, "\n  saved by sharing extents: %s\n", h1);
	}
	if (json)
		put(&b,
		    ",\"io\":{\"reads\":%llu,\"writes\":%llu,"
		    "\"bytes_read\":%llu,\"bytes_written\":%llu,"
		    "\"commits\":%llu,\"errors\":%llu}}\n",
		    (unsigned long long)p->n_reads,
		    (unsigned long long)p->n_writes,
		    (unsigned long long)p->b_read,
		    (unsigned long long)p->b_written,
		    (unsigned long long)p->n_commits,
		    (unsigned long long)p->n_errors);
	else
		put(&b,
		    "\n  io: %llu reads (%llu bytes), %llu writes (%llu "
		    "bytes), %llu commits, %llu errors\n",
		    (unsigned long long)p->n_reads,
		    (unsigned long long)p->b_read,
		    (unsigned long long)p->n_writes,
		    (unsigned long long)p->b_written,
		    (unsigned long long)p->n_commits,
		    (unsigned long long)p->n_errors);
	if (b.err) {
		free(b.s);
		return b.err;
	}
	*out = b.s;
	return 0;
}
