/* SPDX-License-Identifier: MIT */
/*
 * layer.h - test layers: members that wrap the real member to inject I/O
 * errors (fault) or to simulate a power loss (powerloss), stacked from a
 * spec string, in the manner of SQLite's test VFS.  For tests only: the
 * daemon turns them on from $VDPOOL_TEST_LAYERS, unit and crash tests call
 * vdp_layers_set() directly.  docs/testing/layers.md has the grammar.
 *
 * Spec: LAYER[;LAYER...], LAYER = KIND[:KEY=VAL[,KEY=VAL...]] (flag keys
 * such as "persist" stand bare); the first layer is the innermost, next to
 * the real member.  For example
 *   powerloss:after_writes=300,keep=torn,seed=5;fault:op=read,p=0.01,err=EIO
 *
 * fault:     op=read|write|flush|zero|discard|all (default all; several
 *            joined by '+'), nth=N | p=FLOAT (one is required), err=EIO|
 *            ENOSPC|ETIMEDOUT (default EIO), persist, seed=N (default 1),
 *            only=SUBSTR, range=START-[END] (only I/O touching those
 *            bytes; K, M, G suffixes; flushes are not limited by it),
 *            delay=MS (the chosen ops do not fail: each waits MS
 *            milliseconds, then goes ahead: a slow member).  A failed op
 *            never reaches the inner member.
 * powerloss: after_writes=N, after_flushes=N, signal=USR1|USR2, manual (at
 *            least one trigger), keep=none|all|prefix|random|torn (default
 *            random), seed=N (default 1), then=freeze|exit (default
 *            freeze), only=SUBSTR.  Writes not covered by a flush stay in
 *            memory; the crash keeps every member's flushed state plus the
 *            KEEP subset of the unflushed writes, then every op returns EIO
 *            (freeze) or the process calls _exit(86) (exit).
 *
 * All four calls are thread-safe.
 */
#ifndef VDP_LAYER_H
#define VDP_LAYER_H

#include <stdbool.h>
#include <stdint.h>

/* The exit status of a process whose power-loss crash said then=exit. */
#define VDP_POWERLOSS_EXIT 86

/*
 * vdp_layers_set: every member opened by vdp_member_open() after this call,
 * in this process, is wrapped in the layers of SPEC (innermost first).
 * NULL or "" = no layers.  Members already open keep theirs.  Resets the
 * power-loss domain (write and flush counters, crashed flag) and installs
 * its triggers (a signal trigger installs a handler for that signal;
 * without one the signal's previous disposition is restored).  Returns 0,
 * or -EINVAL on a bad spec with vdp_last_error() naming the bad part
 * ("test layers: powerloss: unknown key 'foo'"), changing nothing.
 */
int vdp_layers_set(const char *spec);

/*
 * vdp_powerloss_now: power loss now, as if the trigger fired: applies the
 * crash (keep mode and seed of the current spec; keep=random, seed=1 and
 * then=freeze without a powerloss layer) to every power-loss member open in
 * the process, once.  Returns after the crash (then=freeze), or never
 * (then=exit).
 */
void vdp_powerloss_now(void);

/* vdp_powerloss_happened: true once the crash has happened (since the last
 * vdp_layers_set). */
bool vdp_powerloss_happened(void);

/*
 * vdp_layers_counts: the writes (pwrite, write_zeroes, discard) and flushes
 * seen by power-loss members since the last vdp_layers_set, up to the
 * crash: a dry run's counts bound the trigger points of a test.  Either
 * pointer may be NULL.
 */
void vdp_layers_counts(uint64_t *writes, uint64_t *flushes);

#endif
