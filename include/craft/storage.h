/* craft storage: the write-ahead log, hard state and snapshot files of one
 * data directory, and crash recovery.
 *
 * The storage carries out the persistence half of the core's updates
 * (include/craft/core.h): cr_storage_submit() takes an update's writes on
 * the caller's thread (it encodes and checksums them at once, so it keeps
 * no reference to the update), and a writer thread makes them durable in
 * order. Many submissions share one fdatasync (group commit); the done
 * callback then reports the highest durable update, which the node steps
 * into the core as CR_EVENT_PERSISTED.
 *
 * Layout of a data directory:
 *
 *   LOCK                       flock()ed while a storage has it open
 *   metadata1, metadata2       term, vote and cluster id, written in turn,
 *                              each with a sequence number and a CRC32C;
 *                              the valid one with the higher sequence wins
 *   wal-<seq>                  log segments, numbered without gaps, each
 *                              preallocated; records of entries, commit
 *                              indexes, truncations and snapshot installs,
 *                              each with its CRC32C, index and term
 *   snapshot-<index>-<term>    snapshot files: a checksummed header (index,
 *                              term, configuration, size, data CRC32C),
 *                              then the state machine's bytes; the last
 *                              two are kept
 *
 * Recovery (cr_storage_open) loads the hard state, the newest snapshot and
 * replays the segments. A torn tail of the newest segment (a partial
 * record, zeros, a final record with a bad CRC, with no valid record after
 * it) is cut off with a warning. Any other damage (a bad record followed
 * by valid ones, a missing segment, an index gap, a bad snapshot, bad
 * metadata) makes it fail with CR_ECORRUPT and one message naming the file,
 * the offset and what to do. Nothing is dropped silently.
 *
 * Errors while writing: ENOSPC (no space, at any write) stalls the writer,
 * which retries with a backoff and resumes when space returns; meanwhile
 * cr_storage_stalled() is true and nothing more becomes durable. Any other
 * write or sync error is fatal: the done callback reports CR_EIO and the
 * storage accepts nothing more; after a failed fsync the page cache can no
 * longer be trusted, so the node must stop (as PostgreSQL does). */
#ifndef CRAFT_STORAGE_H
#define CRAFT_STORAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "craft/core.h"

/* Longest path the storage builds (directory + "/" + file name). */
#define CR_PATH_MAX 4096
#define CR_ERRMSG_SIZE 512

/* ---------------------------------------------------------------------------
 * The file system table
 *
 * All I/O goes through this table, so that tests can swap in a file system
 * that loses unsynced writes at a simulated crash, runs out of space, or
 * fails fsync. Functions return 0 (or a byte count) on success and a
 * negative errno on failure, like the Linux system calls they stand for.
 * ------------------------------------------------------------------------- */

enum cr_fs_open_flags {
    CR_FS_READ = 1u << 0,   /* read only */
    CR_FS_WRITE = 1u << 1,  /* read and write */
    CR_FS_CREATE = 1u << 2, /* create if missing */
    CR_FS_EXCL = 1u << 3,   /* fail if it exists */
};

struct cr_fs
{
    void *data;
    int (*open)(void *data, const char *path, unsigned flags);
    int (*close)(void *data, int fd);
    long (*pread)(void *data, int fd, void *buf, size_t len, uint64_t off);
    long (
        *pwrite)(void *data, int fd, const void *buf, size_t len, uint64_t off);
    int (*fdatasync)(void *data, int fd);
    /* Reserves [0, len): later writes inside it need no new space. */
    int (*allocate)(void *data, int fd, uint64_t len);
    int (*truncate)(void *data, int fd, uint64_t len);
    int (*size)(void *data, int fd, uint64_t *len);
    int (*rename)(void *data, const char *from, const char *to);
    int (*unlink)(void *data, const char *path);
    int (*mkdir)(void *data, const char *path);
    /* Makes the directory's entries (creations, renames, removals)
     * durable. */
    int (*sync_dir)(void *data, const char *path);
    /* Calls fn for each entry of the directory but "." and "..". */
    int (*list)(void *data,
                const char *path,
                void (*fn)(void *arg, const char *name),
                void *arg);
    /* Takes an exclusive lock on the file (created if missing) for as long
     * as the returned descriptor is open; -EWOULDBLOCK if taken. */
    int (*lock)(void *data, const char *path);
};

/* The real file system (POSIX calls, fdatasync, posix_fallocate). */
extern const struct cr_fs cr_fs_posix;

/* ---------------------------------------------------------------------------
 * Opening and recovery
 * ------------------------------------------------------------------------- */

struct cr_storage_options
{
    uint64_t cluster_id;     /* 0: take whatever the directory holds */
    size_t segment_size;     /* bytes preallocated per segment (8 MiB) */
    unsigned keep_snapshots; /* snapshot files kept (2) */
    bool read_only;          /* inspect only: cut nothing, write nothing */
};

void cr_storage_options_default(struct cr_storage_options *o);

/* What recovery found. Entries' payloads live in batches allocated with
 * the allocator given to cr_storage_open; cr_recovery_free releases them
 * (after cr_core_load has taken its own references). */
struct cr_recovery
{
    uint64_t cluster_id;
    struct cr_hard_state hs;
    bool has_snapshot;
    struct cr_snapshot_meta snapshot;
    char snapshot_path[CR_PATH_MAX];
    uint64_t snapshot_size; /* bytes of state machine data */
    cr_index first;         /* index of entries[0] */
    struct cr_entry *entries;
    unsigned n;
    /* Set when a torn tail was cut (or, read-only, would be). */
    bool torn;
    char warning[CR_ERRMSG_SIZE];
    bool fresh; /* the directory held no state */
};

void cr_recovery_free(struct cr_recovery *r, const struct cr_alloc *a);

struct cr_storage;

/* Called on the writer thread when updates up to `seq` are durable
 * (status 0), or with CR_EIO when the storage failed for good. */
typedef void (*cr_storage_done_fn)(void *data,
                                   uint64_t seq,
                                   cr_index last_index,
                                   int status);

/* Opens (creating if needed) the data directory `dir`, recovers what it
 * holds into *rec and starts the writer thread. fs and alloc may be NULL
 * for cr_fs_posix and cr_alloc_default. On failure, errmsg says what is
 * wrong and what to do; returns CR_ECORRUPT (damage), CR_EIO (an I/O
 * error), CR_EBUSY (another process has the directory), CR_ECLUSTER (it
 * belongs to another cluster) or CR_ENOMEM. */
int cr_storage_open(struct cr_storage **out,
                    const char *dir,
                    const struct cr_storage_options *options,
                    const struct cr_fs *fs,
                    const struct cr_alloc *alloc,
                    cr_storage_done_fn done,
                    void *done_data,
                    struct cr_recovery *rec,
                    char *errmsg);

/* Queues the writes of one update (nothing to do if u->persist_seq is 0).
 * Submissions must come from one thread, in update order. With
 * CR_UPDATE_SNAPSHOT the received snapshot must already be stored (see
 * cr_snapshot_writer). CR_EIO once the storage failed; CR_ENOMEM. */
int cr_storage_submit(struct cr_storage *s, const struct cr_update *u);

/* Drops whole segments that hold only entries at or below `upto` (after a
 * snapshot), in order with the writes. */
int cr_storage_compact(struct cr_storage *s, cr_index upto);

/* True while the writer waits for space (ENOSPC). */
bool cr_storage_stalled(struct cr_storage *s);

/* Makes everything submitted durable, stops the writer thread and frees
 * the storage. NULL is a no-op. Returns the writer's final status. */
int cr_storage_close(struct cr_storage *s);

/* Counters, for tests and benchmarks. */
struct cr_storage_stats
{
    uint64_t syncs;    /* fdatasync calls on segments */
    uint64_t records;  /* records written */
    uint64_t bytes;    /* bytes written to segments */
    uint64_t segments; /* segments created */
    uint64_t enospc;   /* writes that found no space */
};

void cr_storage_stats(struct cr_storage *s, struct cr_storage_stats *out);

/* ---------------------------------------------------------------------------
 * Snapshot files, written and read in chunks
 * ------------------------------------------------------------------------- */

struct cr_snapshot_writer;

/* Starts a snapshot file in `dir` for the state as of `meta`, under a
 * temporary name. */
int cr_snapshot_writer_open(struct cr_snapshot_writer **out,
                            const char *dir,
                            const struct cr_fs *fs,
                            const struct cr_snapshot_meta *meta,
                            char *errmsg);
/* Appends data. CR_ENOSPC when the disk is full (abort, and try again
 * later), CR_EIO on any other error. */
int cr_snapshot_writer_write(struct cr_snapshot_writer *w,
                             const void *buf,
                             size_t len);
/* Fsyncs, renames to its final name, fsyncs the directory, and removes
 * older snapshots beyond `keep`. path (CR_PATH_MAX bytes, may be NULL)
 * receives the final name. Frees the writer whatever the outcome. */
int cr_snapshot_writer_commit(struct cr_snapshot_writer *w,
                              unsigned keep,
                              char *path);
/* Abandons the file. Frees the writer. */
void cr_snapshot_writer_abort(struct cr_snapshot_writer *w);

struct cr_snapshot_reader;

/* Opens a snapshot file and checks its header; *meta and *size describe
 * it. The data's checksum is checked as it is read: the read that reaches
 * the end returns CR_ECORRUPT if it does not match. */
int cr_snapshot_reader_open(struct cr_snapshot_reader **out,
                            const char *path,
                            const struct cr_fs *fs,
                            struct cr_snapshot_meta *meta,
                            uint64_t *size,
                            char *errmsg);
/* Reads up to len bytes; *n is 0 at the end. */
int cr_snapshot_reader_read(struct cr_snapshot_reader *r,
                            void *buf,
                            size_t len,
                            size_t *n);
void cr_snapshot_reader_close(struct cr_snapshot_reader *r);

/* ---------------------------------------------------------------------------
 * Inspection (craftctl wal check / dump)
 * ------------------------------------------------------------------------- */

/* Calls `line` with one line of text per file and per record of the data
 * directory, in order, and returns what a recovery would: 0 (healthy, or a
 * torn tail that recovery cuts: rec->torn), CR_ECORRUPT with errmsg, ...
 * Reads only. */
int cr_storage_inspect(const char *dir,
                       const struct cr_fs *fs,
                       void (*line)(void *data, const char *text),
                       void *data,
                       struct cr_recovery *rec,
                       char *errmsg);

/* The path (CR_PATH_MAX bytes) of the snapshot file for (index, term) in
 * dir, as cr_snapshot_writer_commit names it. */
int cr_snapshot_path(char *path, const char *dir, cr_index index, cr_term term);

/* CRC32C (Castagnoli) of buf, continuing from crc (0 to start). */
uint32_t cr_crc32c(uint32_t crc, const void *buf, size_t len);

#endif /* CRAFT_STORAGE_H */
