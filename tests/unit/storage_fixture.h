/* Helpers shared by the storage's unit tests (test_storage_*.c).
 *
 *   - st_alloc: a thread-safe counting allocator (cmocka's test_malloc is
 *     not thread-safe, and the writer thread frees what the test thread
 *     allocated), so that a test can check that nothing leaked.
 *   - st_waiter: the done callback, recording the highest durable seq
 *     under a mutex and a condition variable; every wait has a deadline.
 *   - st_upd: builds the struct cr_update that cr_storage_submit takes,
 *     with entry payloads derived from (index, term), so that a recovered
 *     entry can be checked byte for byte.
 *   - snapshots with data derived from (index, term). */
#ifndef CRAFT_TEST_STORAGE_FIXTURE_H
#define CRAFT_TEST_STORAGE_FIXTURE_H

/* cmocka.h needs these before it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>

#include "craft/storage.h"
#include "fs_fault.h"
#include "storage_impl.h"

/* The data directory of tests on the fault file system. */
#define ST_DIR "data"
/* Deadline of every wait for the writer thread. */
#define ST_WAIT_MS 10000
/* Most entries one st_upd holds. */
#define ST_MAX_ENTRIES 64
/* A small segment size, so that tests span several segments. */
#define ST_SEGMENT 4096

struct st_alloc
{
    struct cr_alloc a;
    atomic_long live;
};

void st_alloc_init(struct st_alloc *sa);

struct st_waiter
{
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t durable;    /* highest seq reported with status 0 */
    cr_index last_index; /* its last_index */
    int status;          /* first failure reported, 0 if none */
    uint64_t failed_seq; /* seq reported with that failure */
    unsigned calls;      /* done callbacks so far */
    bool out_of_order;   /* a report went backwards */
    bool success_after_failure;
};

void st_waiter_init(struct st_waiter *w);
void st_waiter_destroy(struct st_waiter *w);
/* The done callback; data is a struct st_waiter. */
void st_on_done(void *data, uint64_t seq, cr_index last_index, int status);
/* Waits until seq is durable (0) or a failure was reported (its status),
 * or the deadline passed (-1). */
int st_wait(struct st_waiter *w, uint64_t seq, unsigned ms);
/* Waits until at least n callbacks came; false at the deadline. */
bool st_wait_calls(struct st_waiter *w, unsigned n, unsigned ms);
uint64_t st_durable(struct st_waiter *w);
unsigned st_calls(struct st_waiter *w);

/* Payload of the entry at (index, term): its type, length and bytes. */
enum cr_entry_type st_entry_type(cr_index index, cr_term term);
size_t st_payload_len(cr_index index, cr_term term);
/* A byte pattern of len bytes for (index, term). */
void st_payload(uint8_t *buf, size_t len, cr_index index, cr_term term);
/* The payload of the entry at (index, term), st_payload_len bytes: an
 * encoded configuration for a CR_ENTRY_CONFIG entry, else st_payload. */
void st_entry_payload(uint8_t *buf, cr_index index, cr_term term);
/* Whether the recovered entry at index exists with this term and its
 * payload. */
bool st_entry_ok(const struct cr_recovery *r, cr_index index, cr_term term);
/* The recovered log's last index (the snapshot's if the log is empty). */
cr_index st_last_index(const struct cr_recovery *r);

struct st_upd
{
    struct cr_update u;
    struct cr_entry e[ST_MAX_ENTRIES];
};

void st_upd_init(struct st_upd *b, uint64_t seq);
/* Entries first .. first + n - 1 of the given term (n 0: a truncation of
 * everything from first on). */
void st_upd_entries(struct st_upd *b, cr_index first, unsigned n, cr_term t);
void st_upd_hs(struct st_upd *b, cr_term term, cr_id vote, cr_index commit);
/* A snapshot install (the snapshot file must exist first). */
void st_upd_snapshot(struct st_upd *b, cr_index index, cr_term term);
void st_upd_free(struct st_upd *b);

/* Voters 1..n, addresses "host-N:900N". */
void st_config(struct cr_config *c, unsigned n);
void st_snapshot_meta(struct cr_snapshot_meta *m, cr_index index, cr_term t);
/* The size of the state machine data of the snapshot at (index, term). */
size_t st_snapshot_size(cr_index index, cr_term term);
/* Writes a snapshot file with st_snapshot_meta and its data, in chunks.
 * Returns 0 or the first error. */
int st_write_snapshot(const struct cr_fs *fs,
                      const char *dir,
                      cr_index index,
                      cr_term term,
                      unsigned keep);
/* Reads the snapshot at path back: 0 if its metadata and data are those
 * st_write_snapshot wrote for (index, term); CR_ECORRUPT, or the error. */
int st_check_snapshot(const struct cr_fs *fs,
                      const char *path,
                      cr_index index,
                      cr_term term);

/* Loads the recovery into a new core (server 1 of cluster 42), as a node
 * would at a restart; returns what cr_core_load does. */
int st_core_load(const struct cr_recovery *rec, const struct cr_alloc *a);

/* Opens the storage of ST_DIR on fs with segment size ST_SEGMENT. */
int st_open(struct cr_storage **s,
            const struct cr_fs *fs,
            struct st_alloc *sa,
            struct st_waiter *w,
            struct cr_recovery *rec,
            char *errmsg);

/* Submits u and waits until it is durable; returns what st_wait does, or
 * the submit's error. */
int st_submit_wait(struct cr_storage *s,
                   struct st_waiter *w,
                   const struct cr_update *u);

/* Name of segment seq in ST_DIR ("data/wal-000...0seq"). */
void st_seg_path(char *buf, size_t len, uint64_t seq);

/* A record on the disk, inside a valid batch (storage_impl.h: every record
 * is written in a batch, a header record then the body). */
struct st_rec
{
    uint64_t seg;       /* the segment's sequence number */
    uint64_t batch;     /* offset of its batch's header */
    uint64_t batch_end; /* offset right after its batch */
    uint64_t off;       /* its own offset */
    size_t size;        /* the bytes it takes, padding included */
    enum cr__rec_type type;
    enum cr_entry_type etype;
    cr_index index;
    cr_term term;
    uint32_t len;
};

/* Walks the valid batches of a segment's bytes from its header on, up to
 * the first thing that is not a valid batch, and appends the records of
 * their bodies to out (*n of max used). Returns the offset where the walk
 * stopped. A record of a valid batch that does not decode fails the
 * test. */
uint64_t st_scan_segment(const uint8_t *buf,
                         size_t len,
                         uint64_t seq,
                         struct st_rec *out,
                         unsigned max,
                         unsigned *n);
/* The records of every segment of ST_DIR (current bytes), in order;
 * returns how many. */
unsigned st_scan(struct fs_fault *ff, struct st_rec *out, unsigned max);
/* The highest sequence number of a segment of ST_DIR, 0 if none. */
uint64_t st_newest_segment(struct fs_fault *ff);

bool st_contains(const char *haystack, const char *needle);

/* The files of ST_DIR on a fault file system (current bytes), to start
 * several rounds of a test from the same directory. */
struct st_saved
{
    unsigned n;
    char name[32][80];
    uint8_t *buf[32];
    size_t len[32];
};

void st_save(struct fs_fault *ff, struct st_saved *sv);
/* A new fault file system holding exactly the saved files, durable. */
struct fs_fault *st_restore(const struct st_saved *sv);
void st_saved_free(struct st_saved *sv);

#endif /* CRAFT_TEST_STORAGE_FIXTURE_H */
