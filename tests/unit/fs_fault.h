/* An in-memory struct cr_fs that loses what was not synced at a simulated
 * crash, runs out of space, fails fdatasync, and counts operations.
 *
 * The model:
 *   - a file has durable bytes (what survives a crash) and current bytes
 *     (what reads see); every pwrite, truncate and allocate since the last
 *     fdatasync is also kept in a list of unsynced changes. fdatasync makes
 *     the current bytes (and size) durable.
 *   - a directory has durable entries and current entries, plus the list of
 *     unsynced entry changes (creations, renames, removals) in order;
 *     sync_dir makes the current entries durable. mkdir is durable at once.
 *     A file that no durable entry names is gone after a crash, whatever
 *     was synced in it.
 *   - fs_fault_crash() drops every unsynced change. In a torn mode (driven
 *     by a seed) it keeps some unsynced writes instead:
 *       FS_FAULT_TORN_PREFIX  per file, an ordered prefix of the unsynced
 *                             changes, the last write possibly cut short
 *                             (write-back in order);
 *       FS_FAULT_TORN_SUBSET  per file, a random subset of the unsynced
 *                             changes, each write possibly cut short
 *                             (write-back in any order, as the page cache
 *                             does).
 *     With torn_dirs, a random prefix of each directory's unsynced entry
 *     changes survives too (a journaling file system keeps their order).
 *     A crash closes every descriptor.
 *   - fs_fault_crash_at(k): the k-th operation (counting every call through
 *     the table since fs_fault_new) crashes the file system before it runs;
 *     from then on every operation fails with -EIO (the process is dead)
 *     until fs_fault_revive().
 *   - a byte budget: a pwrite, allocate or truncate that would make the
 *     live files (named by a current entry, or open) hold more bytes than
 *     the budget fails with -ENOSPC; raising the budget lets it succeed.
 *   - fs_fault_fail_syncs(n): the next n fdatasync calls fail with -EIO
 *     (and make nothing durable).
 *   - lock() follows flock(): a second lock of a locked file fails with
 *     -EWOULDBLOCK until the first descriptor is closed.
 *
 * Paths are "dir/name" with dir a path given to mkdir first (or "." for a
 * bare name). All functions are thread-safe: one mutex guards everything,
 * as the storage calls the table from its writer thread. */
#ifndef CRAFT_TEST_FS_FAULT_H
#define CRAFT_TEST_FS_FAULT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "craft/storage.h"

enum fs_fault_torn {
    FS_FAULT_TORN_NONE = 0,
    FS_FAULT_TORN_PREFIX,
    FS_FAULT_TORN_SUBSET,
};

enum fs_fault_op {
    FS_OP_OPEN,
    FS_OP_CLOSE,
    FS_OP_PREAD,
    FS_OP_PWRITE,
    FS_OP_FDATASYNC,
    FS_OP_ALLOCATE,
    FS_OP_TRUNCATE,
    FS_OP_SIZE,
    FS_OP_RENAME,
    FS_OP_UNLINK,
    FS_OP_MKDIR,
    FS_OP_SYNC_DIR,
    FS_OP_LIST,
    FS_OP_LOCK,
    FS_OP_N,
};

struct fs_fault;

struct fs_fault *fs_fault_new(void);
/* Frees everything; descriptors still open are forgotten. */
void fs_fault_free(struct fs_fault *f);
/* The table to hand to the storage; valid until fs_fault_free. */
const struct cr_fs *fs_fault_fs(struct fs_fault *f);

/* Crashes now: drops unsynced changes (or keeps some, see the torn modes)
 * and closes every descriptor. The file system stays usable. */
void fs_fault_crash(struct fs_fault *f);
/* Crashes when operation number `op` (1-based, absolute) starts; 0
 * cancels. After that crash every operation fails with -EIO. */
void fs_fault_crash_at(struct fs_fault *f, uint64_t op);
/* True once a crash_at crash happened (until fs_fault_revive). */
bool fs_fault_crashed(struct fs_fault *f);
/* Ends the dead state after a crash_at crash ("reboot"). */
void fs_fault_revive(struct fs_fault *f);
void fs_fault_set_torn(struct fs_fault *f,
                       enum fs_fault_torn mode,
                       bool torn_dirs,
                       uint64_t seed);

/* Bytes the live files may hold (UINT64_MAX: no limit, the default). */
void fs_fault_set_budget(struct fs_fault *f, uint64_t bytes);
/* Bytes the live files hold now. */
uint64_t fs_fault_used(struct fs_fault *f);
/* The next n fdatasync calls fail with -EIO. */
void fs_fault_fail_syncs(struct fs_fault *f, unsigned n);
/* The fdatasync calls after the next `skip` ones fail with -EIO, n of
 * them. */
void fs_fault_fail_syncs_after(struct fs_fault *f, unsigned skip, unsigned n);
/* Every fdatasync first sleeps this long (to make group commit visible). */
void fs_fault_set_sync_delay(struct fs_fault *f, unsigned usec);

/* Operations so far: all of them, or of one kind. ENOSPC answers given. */
uint64_t fs_fault_ops(struct fs_fault *f);
uint64_t fs_fault_count(struct fs_fault *f, enum fs_fault_op op);
uint64_t fs_fault_enospc(struct fs_fault *f);
/* Unsynced file changes and directory changes pending now. */
unsigned fs_fault_unsynced(struct fs_fault *f);

/* Direct access for tests. These do not count as operations, work while
 * dead, and change current and durable state alike (as if done offline).
 * They return 0, or -ENOENT. */
bool fs_fault_exists(struct fs_fault *f, const char *path);
/* A malloc'ed copy of the current bytes; free() it. */
int fs_fault_read(struct fs_fault *f,
                  const char *path,
                  uint8_t **buf,
                  size_t *len);
/* Creates or replaces the file with these bytes. */
int fs_fault_write(struct fs_fault *f,
                   const char *path,
                   const void *buf,
                   size_t len);
/* XORs the byte at off with mask. */
int fs_fault_flip(struct fs_fault *f,
                  const char *path,
                  uint64_t off,
                  uint8_t mask);
int fs_fault_truncate(struct fs_fault *f, const char *path, uint64_t len);
int fs_fault_remove(struct fs_fault *f, const char *path);
int fs_fault_file_size(struct fs_fault *f, const char *path, uint64_t *len);
/* Calls fn with the name of every current entry of dir (in no order). */
void fs_fault_names(struct fs_fault *f,
                    const char *dir,
                    void (*fn)(void *arg, const char *name),
                    void *arg);
/* How many current entries of dir start with prefix. */
unsigned fs_fault_count_names(struct fs_fault *f,
                              const char *dir,
                              const char *prefix);
#endif /* CRAFT_TEST_FS_FAULT_H */
