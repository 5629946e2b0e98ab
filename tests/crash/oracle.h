/* SPDX-License-Identifier: MIT */
/*
 * oracle.h - what a pool may hold after a crash, given what the workload
 * did and what it synced.
 *
 * vdpool's promise (docs/architecture.md): an acknowledged fsync or
 * fdatasync of any file or directory commits the whole pool, the data of
 * every disk and the namespace, atomically.  Nothing else is promised
 * before a crash.  So the oracle keeps, per 512-byte sector of every disk,
 * the set of values the sector may hold (its value at the last sync plus
 * every value given to it since), and the list of namespace states (names,
 * disks, sizes) since the last sync; after a crash the recovered namespace
 * must be one of those states and every visible sector made of those
 * values (piece by piece where writes and zeroings cut it: see
 * oracle_check_sector).  A sync collapses every set to its current value.
 * Timestamps, modes and xattrs are not modelled.
 *
 * Data is self-describing: write W fills each 512-byte sector it starts
 * with a tag (magic, disk id, W, sector number, check word) followed by
 * bytes seeded by (run seed, W, offset), so a sector read back can be
 * decoded ("disk 3's write 57, sector 12") when it matches nothing.
 *
 * Clones (copy_file_range) carry those bytes, tags included, to another
 * place: a copied sector's values are the source's, shifted; another
 * disk's bytes are accepted only where a copy put them.
 *
 * Single-threaded; never does I/O.
 */
#ifndef CRASH_ORACLE_H
#define CRASH_ORACLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SECTOR 512
#define NAME_LEN 32

struct oracle;

/* A file found in the recovered root directory. */
struct rentry {
	char name[NAME_LEN];
	uint64_t ino;
	uint64_t size;
};

struct oracle *oracle_new(uint64_t seed);
void oracle_free(struct oracle *o);

/* ---- namespace ---------------------------------------------------------- */

/* A new disk (id >= 1): size 0, no name yet, inode INO in the store. */
uint32_t oracle_disk_new(struct oracle *o, uint64_t ino);
uint64_t oracle_disk_ino(const struct oracle *o, uint32_t disk);
/* NAME now names DISK (replacing whatever it named); 0 removes NAME.
 * Each change records a namespace state. */
void oracle_link(struct oracle *o, const char *name, uint32_t disk);
/* rename(2): TO names FROM's disk (replacing TO's), FROM goes; one state. */
void oracle_rename(struct oracle *o, const char *from, const char *to);
/* The disk NAME names, 0 if none. */
uint32_t oracle_lookup(const struct oracle *o, const char *name);
uint64_t oracle_size(const struct oracle *o, uint32_t disk);
/*
 * The size of DISK becomes SIZE.  A shrink gives the bytes past SIZE the
 * value zero (what they read as once the size grows over them again).
 */
void oracle_set_size(struct oracle *o, uint32_t disk, uint64_t size);

/* ---- data --------------------------------------------------------------- */

/*
 * A write of LEN bytes at OFF to DISK, about to be issued: returns its
 * sequence number W (>= 1).  The sectors take the new values, which join
 * their sets; their previous values are kept until the next data call for
 * oracle_settle().  Does not change the size.
 */
uint32_t oracle_write(struct oracle *o, uint32_t disk, uint64_t off,
		      size_t len);
/* oracle_write for the second and later writes of a batch issued at once
 * (none overlapping another): the previous values the batch's earlier
 * writes replaced are kept as well, and oracle_settle settles any of them.
 */
uint32_t oracle_write_more(struct oracle *o, uint32_t disk, uint64_t off,
			   size_t len);
/* The LEN bytes write W writes at OFF (inside its range). */
void oracle_fill(const struct oracle *o, uint32_t w, uint64_t off, size_t len,
		 void *buf);
/*
 * After the last data call (oracle_write or oracle_zero) failed part way
 * (ENOSPC, a short write): sector SEC of DISK reads as GOT (its first
 * VISIBLE bytes).  The sector's current value becomes the new value or the
 * previous one, whichever GOT is; neither: returns -1 and describes the
 * mismatch in WHY.  VISIBLE 0 (the sector lies past the end of file): the
 * previous value.  A sector the call did not change: nothing.
 */
int oracle_settle(struct oracle *o, uint32_t disk, uint64_t sec,
		  const uint8_t *got, size_t visible, char *why, size_t wl);
/* [OFF, OFF + LEN) of DISK becomes zeros (punch, zero range). */
void oracle_zero(struct oracle *o, uint32_t disk, uint64_t off, uint64_t len);
/*
 * A copy (copy_file_range, a clone) of LEN bytes at OFF_IN of SRC to
 * OFF_OUT of DST, LEN already clipped at SRC's end of file; SRC == DST
 * only for ranges that do not overlap.  Each destination sector takes the
 * source's current value (holes: zeros) and, until the next sync, may also
 * hold any value the source sector could hold at the time of the copy, or
 * its own earlier ones.  A destination that grows may be caught at any
 * size in between (the copy is not atomic); then it has OFF_OUT + LEN.
 * From now on DST may hold SRC's bytes (and those SRC got by copies).
 */
void oracle_copy(struct oracle *o, uint32_t src, uint64_t off_in, uint32_t dst,
		 uint64_t off_out, uint64_t len);

/* An acknowledged sync: the current state is the only one possible. */
void oracle_sync(struct oracle *o);

/* ---- checking ------------------------------------------------------------ */

/*
 * Is the recovered root directory E[0..N) (sorted by name) one of the
 * namespace states since the last sync (LIVE: the current state)?
 * Returns that state's index (0 = the synced one), or -1 with the
 * mismatch in WHY.  DISKS[i] gets the disk id of E[i].  A disk created
 * with inode 0 (its create was cut by the crash) matches any inode the
 * oracle does not know.
 */
int oracle_check_ns(const struct oracle *o, const struct rentry *e, size_t n,
		    bool live, uint32_t *disks, char *why, size_t wl);
/*
 * Is GOT (the first VISIBLE bytes of sector SEC of DISK) made of the
 * sector's possible values?  Each piece between two fragment boundaries of
 * any candidate must equal that piece of some candidate (unsynced pieces
 * of one sector come back old or new independently).  LIVE: GOT must be
 * exactly the current value.  0, or -1 with "expected {..}, got .." in WHY.
 */
int oracle_check_sector(const struct oracle *o, uint32_t disk, uint64_t sec,
			const uint8_t *got, size_t visible, bool live,
			char *why, size_t wl);

/* Counters for --verbose. */
uint32_t oracle_nwrites(const struct oracle *o);
size_t oracle_nstates(const struct oracle *o);

#endif
