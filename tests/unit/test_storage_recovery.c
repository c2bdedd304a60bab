/* Recovery of a data directory (src/storage/recovery.c, storage.c):
 * open/submit/close/reopen round trips, snapshot installs and compaction,
 * the log cut at every byte of its last record and at every record
 * boundary, flipped bits in every kind of record and file, holes, and what
 * cr_storage_open says about each.
 *
 * The rules (storage_impl.h): records are written in batches, a header
 * checksumming the body, one per group commit and segment, a batch only
 * once the one before it is durable. A bad last batch of the newest
 * segment that no valid batch follows is a torn tail: it is cut keeping
 * the whole records at the start of its body, with rec.torn and a warning
 * naming the file and where the cut starts. Any other damage (a bad batch
 * that a valid one follows, anything in a closed segment) is refused with
 * CR_ECORRUPT and a message naming the file, the offset and what to do.
 * Also CR_EBUSY, CR_ECLUSTER, read-only inspection. */
#define _POSIX_C_SOURCE 200809L

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fs_fault.h"
#include "storage_fixture.h"
#include "storage_impl.h"

#define MAX_INDEX 2048
#define SEG1 ST_DIR "/wal-0000000000000001"
#define SEG2 ST_DIR "/wal-0000000000000002"
#define SEG3 ST_DIR "/wal-0000000000000003"

/* ---------------------------------------------------------------------------
 * Fixture: a fault file system, a storage on it, and a model of the log
 * ------------------------------------------------------------------------- */

struct rfx
{
    struct fs_fault *ff;
    const struct cr_fs *fs;
    struct st_alloc sa;
    struct st_waiter w;
    struct cr_storage *s;
    struct cr_recovery rec;
    bool has_rec;
    char errmsg[CR_ERRMSG_SIZE];
    uint64_t seq;
    /* What the log should hold: terms[i] of entry i in (base, last]. */
    cr_term terms[MAX_INDEX];
    cr_index base, last, commit;
    cr_term term;
    cr_index commit_before; /* see write_log_ending_with_entry */
};

static int setup(void **state)
{
    struct rfx *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->ff = fs_fault_new();
    f->fs = fs_fault_fs(f->ff);
    st_alloc_init(&f->sa);
    st_waiter_init(&f->w);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct rfx *f = *state;
    if (f->s != NULL) {
        (void)cr_storage_close(f->s);
    }
    if (f->has_rec) {
        cr_recovery_free(&f->rec, &f->sa.a);
    }
    assert_int_equal(atomic_load(&f->sa.live), 0);
    assert_false(f->w.out_of_order);
    fs_fault_free(f->ff);
    st_waiter_destroy(&f->w);
    free(f);
    return 0;
}

static void drop_rec(struct rfx *f)
{
    if (f->has_rec) {
        cr_recovery_free(&f->rec, &f->sa.a);
        f->has_rec = false;
    }
}

static int rfx_open(struct rfx *f)
{
    int rv;
    assert_null(f->s);
    drop_rec(f);
    memset(f->errmsg, 0, sizeof f->errmsg);
    rv = st_open(&f->s, f->fs, &f->sa, &f->w, &f->rec, f->errmsg);
    if (rv == 0) {
        f->has_rec = true;
    } else {
        f->s = NULL;
    }
    return rv;
}

static void rfx_close(struct rfx *f)
{
    assert_non_null(f->s);
    assert_int_equal(cr_storage_close(f->s), 0);
    f->s = NULL;
}

static void rfx_reopen(struct rfx *f)
{
    rfx_close(f);
    assert_int_equal(rfx_open(f), 0);
}

/* A fresh file system (the storage must be closed). */
static void rfx_new_fs(struct rfx *f)
{
    assert_null(f->s);
    drop_rec(f);
    fs_fault_free(f->ff);
    f->ff = fs_fault_new();
    f->fs = fs_fault_fs(f->ff);
    f->base = f->last = f->commit = 0;
    f->term = 0;
}

static cr_id vote_of(cr_term term)
{
    return term % 3 + 1;
}

/* Appends entries first..first+n-1 of `term` with commit index `commit`,
 * and waits until they are durable. */
static void rfx_append(struct rfx *f,
                       cr_index first,
                       unsigned n,
                       cr_term term,
                       cr_index commit)
{
    struct st_upd b;
    assert_true(first + n < MAX_INDEX);
    st_upd_init(&b, ++f->seq);
    st_upd_entries(&b, first, n, term);
    st_upd_hs(&b, term, vote_of(term), commit);
    assert_int_equal(st_submit_wait(f->s, &f->w, &b.u), 0);
    st_upd_free(&b);
    for (unsigned i = 0; i < n; i++) {
        f->terms[first + i] = term;
    }
    f->last = first + n - 1;
    if (n == 0) {
        f->last = first - 1;
    }
    if (commit > f->commit) {
        f->commit = commit;
    }
    f->term = term;
}

/* Appends entries up to index `to`, a few at a time, committing as it
 * goes. */
static void rfx_fill(struct rfx *f, cr_index to, cr_term term)
{
    while (f->last < to) {
        unsigned n = (unsigned)(1 + f->last % 5);
        if (f->last + n > to) {
            n = (unsigned)(to - f->last);
        }
        rfx_append(f, f->last + 1, n, term, f->last);
    }
}

/* The recovery matches the model: hard state, and exactly the entries
 * lo..last (lo 0: base + 1). */
static void rfx_check(struct rfx *f, cr_index lo)
{
    const struct cr_recovery *r = &f->rec;
    if (lo == 0) {
        lo = f->base + 1;
    }
    assert_true(f->has_rec);
    assert_int_equal(r->hs.term, f->term);
    assert_int_equal(r->hs.vote, f->term > 0 ? vote_of(f->term) : 0);
    assert_int_equal(r->hs.commit, f->commit);
    assert_int_equal(st_last_index(r), f->last);
    if (f->last >= lo) {
        assert_int_equal(r->first, lo);
        assert_int_equal(r->n, f->last - lo + 1);
    } else {
        assert_int_equal(r->n, 0);
    }
    for (cr_index i = lo; i <= f->last; i++) {
        if (!st_entry_ok(r, i, f->terms[i])) {
            fail_msg("entry %" PRIu64 " (term %" PRIu64 ") is wrong", i,
                     f->terms[i]);
        }
    }
    /* A node can start from it. */
    assert_int_equal(st_core_load(r, &f->sa.a), 0);
}

/* ---------------------------------------------------------------------------
 * Reading what is on the disk
 * ------------------------------------------------------------------------- */

/* The records of every segment, walking their batches, in order (each with
 * its offset and its batch's). */
static unsigned scan(struct rfx *f, struct st_rec *out, unsigned max)
{
    return st_scan(f->ff, out, max);
}

static unsigned n_segments(struct rfx *f)
{
    return fs_fault_count_names(f->ff, ST_DIR, "wal-");
}

/* A new file system holding exactly the saved files; the model stays. */
static void restore_files(struct rfx *f, const struct st_saved *sv)
{
    assert_null(f->s);
    drop_rec(f);
    fs_fault_free(f->ff);
    f->ff = st_restore(sv);
    f->fs = fs_fault_fs(f->ff);
}

/* Checks that msg names the path and, if off is not UINT64_MAX, the
 * offset. */
static void assert_names(const char *msg, const char *path, uint64_t off)
{
    char where[64];
    if (!st_contains(msg, path)) {
        fail_msg("\"%s\" does not name %s", msg, path);
    }
    if (off != UINT64_MAX) {
        snprintf(where, sizeof where, "offset %" PRIu64 ":", off);
        if (!st_contains(msg, where)) {
            snprintf(where, sizeof where, "offset %" PRIu64 ")", off);
        }
        if (!st_contains(msg, where)) {
            fail_msg("\"%s\" does not name the offset %" PRIu64, msg, off);
        }
    }
}

/* Opening is refused with CR_ECORRUPT and a message naming the path, the
 * offset (unless UINT64_MAX) and what to do. */
static void assert_refused(struct rfx *f, const char *path, uint64_t off)
{
    int rv = rfx_open(f);
    if (rv != CR_ECORRUPT) {
        fail_msg("open returned %d, not CR_ECORRUPT (warning \"%s\")", rv,
                 f->rec.warning);
    }
    assert_names(f->errmsg, path, off);
    if (!st_contains(f->errmsg, "restore")) {
        fail_msg("\"%s\" does not say what to do", f->errmsg);
    }
}

/* The open that just happened cut a torn tail of path at off: rec.torn,
 * and a warning naming both. */
static void assert_torn(struct rfx *f, const char *path, uint64_t off)
{
    if (!f->rec.torn) {
        fail_msg("no torn tail reported (%s at offset %" PRIu64 " expected)",
                 path, off);
    }
    assert_names(f->rec.warning, path, off);
}

/* cr_storage_inspect (read-only) reports the torn tail of path at off
 * (UINT64_MAX: any offset) as recovery would, and changes nothing on the
 * disk. Returns the number of entries it recovered. */
static unsigned inspect_torn(struct rfx *f, const char *path, uint64_t off)
{
    struct cr_recovery rec;
    char errmsg[CR_ERRMSG_SIZE] = "";
    uint8_t *before, *after;
    size_t len_before, len_after;
    unsigned n;
    unsigned segs = n_segments(f);
    assert_int_equal(fs_fault_read(f->ff, path, &before, &len_before), 0);
    if (cr_storage_inspect(ST_DIR, f->fs, NULL, NULL, &rec, errmsg) != 0) {
        free(before);
        fail_msg("inspect refused a torn tail: %s", errmsg);
    }
    assert_true(rec.torn);
    assert_names(rec.warning, path, off);
    n = rec.n;
    cr_recovery_free(&rec, NULL);
    assert_int_equal(n_segments(f), segs);
    assert_int_equal(fs_fault_read(f->ff, path, &after, &len_after), 0);
    assert_int_equal(len_after, len_before);
    assert_memory_equal(after, before, len_before);
    free(before);
    free(after);
    return n;
}

/* The bytes of path from `from` to its end are zeros. */
static void assert_zeros_from(struct rfx *f, const char *path, uint64_t from)
{
    uint8_t *buf;
    size_t len;
    assert_int_equal(fs_fault_read(f->ff, path, &buf, &len), 0);
    for (uint64_t k = from; k < len; k++) {
        if (buf[k] != 0) {
            free(buf);
            fail_msg("%s: byte %" PRIu64
                     " is not zero (the cut starts at "
                     "%" PRIu64 ")",
                     path, k, from);
        }
    }
    free(buf);
}

/* Writes len zeros at off of path (as a lost write leaves them). */
static void zero_range(struct rfx *f,
                       const char *path,
                       uint64_t off,
                       uint64_t len)
{
    uint8_t *buf;
    size_t size;
    assert_int_equal(fs_fault_read(f->ff, path, &buf, &size), 0);
    assert_true(off + len <= size);
    memset(buf + off, 0, (size_t)len);
    assert_int_equal(fs_fault_write(f->ff, path, buf, size), 0);
    free(buf);
}

/* ---------------------------------------------------------------------------
 * Round trips
 * ------------------------------------------------------------------------- */

/* A new directory: fresh, with both metadata files written and synced. */
static void fresh_directory(void **state)
{
    struct rfx *f = *state;
    uint8_t *buf;
    size_t len;
    assert_int_equal(rfx_open(f), 0);
    assert_true(f->rec.fresh);
    assert_false(f->rec.torn);
    assert_false(f->rec.has_snapshot);
    assert_int_equal(f->rec.cluster_id, 42);
    assert_int_equal(f->rec.n, 0);
    assert_int_equal(f->rec.hs.term, 0);
    assert_int_equal(f->rec.hs.vote, 0);
    assert_int_equal(f->rec.hs.commit, 0);
    /* Both metadata files, valid, durable at once. */
    rfx_close(f);
    fs_fault_crash(f->ff);
    for (unsigned slot = 1; slot <= 2; slot++) {
        struct cr__meta m;
        char path[64];
        snprintf(path, sizeof path, "%s/metadata%u", ST_DIR, slot);
        assert_int_equal(fs_fault_read(f->ff, path, &buf, &len), 0);
        assert_int_equal(cr__meta_decode(buf, len, &m), 0);
        assert_int_equal(m.seq, slot);
        assert_int_equal(m.cluster_id, 42);
        assert_int_equal(m.term, 0);
        free(buf);
    }
    assert_int_equal(n_segments(f), 0);
}

/* Reopening a directory that holds metadata but no segment yet (a node
 * restarted before its first write) recovers an empty log, and an update
 * with nothing to write is accepted and never reported. (recovery.c once
 * called qsort(NULL, 0, ...) here, which the sanitizers report.) */
static void reopen_before_any_write(void **state)
{
    struct rfx *f = *state;
    struct st_upd b;
    assert_int_equal(rfx_open(f), 0);
    assert_true(f->rec.fresh);
    rfx_close(f);
    fs_fault_crash(f->ff);
    assert_int_equal(rfx_open(f), 0);
    assert_false(f->rec.fresh);
    assert_int_equal(f->rec.cluster_id, 42);
    assert_int_equal(f->rec.n, 0);
    /* An update with nothing to write (persist_seq 0) is accepted and
     * never reported. */
    st_upd_init(&b, 0);
    st_upd_hs(&b, 9, 9, 9);
    assert_int_equal(cr_storage_submit(f->s, &b.u), 0);
    rfx_reopen(f);
    assert_int_equal(f->rec.hs.term, 0);
    assert_int_equal(st_calls(&f->w), 0);
}

/* The storage's counters once they count at least `records` records
 * (the writer publishes them when it next looks for work). */
static void settled_stats(struct rfx *f,
                          struct cr_storage_stats *stats,
                          uint64_t records)
{
    for (unsigned i = 0; i < 2000; i++) {
        cr_storage_stats(f->s, stats);
        if (stats->records >= records && stats->segments == n_segments(f)) {
            return;
        }
        {
            struct timespec ts = {0, 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    fail_msg("the counters never showed %" PRIu64 " records", records);
}

/* Entries, commit indexes, terms and votes over many segments survive a
 * close and reopen, byte for byte, and writing goes on after a reopen. */
static void round_trip_across_segments(void **state)
{
    struct rfx *f = *state;
    struct cr_storage_stats stats;
    assert_int_equal(rfx_open(f), 0);
    rfx_fill(f, 100, 1);
    rfx_fill(f, 250, 2);
    /* The writer publishes its counters after its callback. */
    settled_stats(f, &stats, 250);
    assert_true(stats.segments >= 4);
    assert_true(stats.records >= 250);
    assert_true(stats.syncs >= 1);
    assert_true(stats.bytes > 250 * CR__REC_HEADER);
    assert_int_equal(stats.enospc, 0);
    assert_int_equal(n_segments(f), stats.segments);
    assert_int_equal(f->w.last_index, 250);
    rfx_reopen(f);
    assert_false(f->rec.fresh);
    assert_false(f->rec.torn);
    assert_string_equal(f->rec.warning, "");
    rfx_check(f, 1);
    rfx_fill(f, 300, 3);
    rfx_reopen(f);
    rfx_check(f, 1);
    /* And after a crash with nothing unsynced, the same. */
    rfx_close(f);
    fs_fault_crash(f->ff);
    assert_int_equal(rfx_open(f), 0);
    rfx_check(f, 1);
}

/* Several updates in flight at once: group commit reports them in order
 * and every one is on disk after a reopen. */
static void group_commit(void **state)
{
    struct rfx *f = *state;
    struct st_upd b[40];
    struct cr_storage_stats stats;
    assert_int_equal(rfx_open(f), 0);
    fs_fault_set_sync_delay(f->ff, 2000);
    for (unsigned i = 0; i < 40; i++) {
        st_upd_init(&b[i], ++f->seq);
        st_upd_entries(&b[i], i + 1, 1, 1);
        st_upd_hs(&b[i], 1, vote_of(1), i);
        assert_int_equal(cr_storage_submit(f->s, &b[i].u), 0);
        f->terms[i + 1] = 1;
    }
    assert_int_equal(st_wait(&f->w, f->seq, ST_WAIT_MS), 0);
    for (unsigned i = 0; i < 40; i++) {
        st_upd_free(&b[i]);
    }
    f->last = 40;
    f->commit = 39;
    f->term = 1;
    settled_stats(f, &stats, 40);
    /* Fewer syncs than updates: they were shared. */
    assert_true(stats.syncs >= 1);
    assert_true(stats.syncs < 40);
    assert_true(st_calls(&f->w) < 40);
    assert_int_equal(f->w.last_index, 40);
    fs_fault_set_sync_delay(f->ff, 0);
    rfx_reopen(f);
    rfx_check(f, 1);
}

/* Appends that replace the tail (entries_first below the end) and
 * truncations (no entries) are replayed as the core meant them. */
static void overwrite_and_truncate(void **state)
{
    struct rfx *f = *state;
    struct st_upd b;
    assert_int_equal(rfx_open(f), 0);
    rfx_fill(f, 30, 1);
    rfx_append(f, 20, 5, 2, 19);
    rfx_reopen(f);
    rfx_check(f, 1);
    /* A truncation: everything from 15 on goes. */
    st_upd_init(&b, ++f->seq);
    st_upd_entries(&b, 15, 0, 3);
    st_upd_hs(&b, 3, vote_of(3), f->commit);
    assert_int_equal(st_submit_wait(f->s, &f->w, &b.u), 0);
    assert_int_equal(f->w.last_index, 14);
    f->last = 14;
    f->term = 3;
    rfx_reopen(f);
    rfx_check(f, 1);
    rfx_append(f, 15, 2, 3, 14);
    /* Replacing from the very first entry. */
    rfx_append(f, 1, 3, 4, 14);
    rfx_reopen(f);
    rfx_check(f, 1);
    rfx_fill(f, 200, 4);
    rfx_append(f, 150, 1, 5, 149);
    rfx_reopen(f);
    rfx_check(f, 1);
}

/* CR_UPDATE_SNAPSHOT writes a reset record: after a reopen the log holds
 * only what came after the snapshot, and the snapshot is there. */
static void snapshot_install(void **state)
{
    struct rfx *f = *state;
    struct st_upd b;
    assert_int_equal(rfx_open(f), 0);
    rfx_fill(f, 120, 1);
    /* The received snapshot is stored first (storage.h). */
    assert_int_equal(st_write_snapshot(f->fs, ST_DIR, 500, 3, 2), 0);
    st_upd_init(&b, ++f->seq);
    st_upd_snapshot(&b, 500, 3);
    st_upd_entries(&b, 501, 4, 3);
    st_upd_hs(&b, 3, vote_of(3), 500);
    assert_int_equal(st_submit_wait(f->s, &f->w, &b.u), 0);
    st_upd_free(&b);
    assert_int_equal(f->w.last_index, 504);
    f->base = 500;
    f->last = 504;
    f->commit = 500;
    f->term = 3;
    for (cr_index i = 501; i <= 504; i++) {
        f->terms[i] = 3;
    }
    rfx_reopen(f);
    rfx_check(f, 501);
    assert_true(f->rec.has_snapshot);
    assert_int_equal(f->rec.snapshot.index, 500);
    assert_int_equal(f->rec.snapshot.term, 3);
    assert_int_equal(f->rec.snapshot_size, st_snapshot_size(500, 3));
    assert_true(st_contains(f->rec.snapshot_path,
                            ST_DIR "/snapshot-0000000000000500-"
                                   "0000000000000003"));
    assert_int_equal(st_check_snapshot(f->fs, f->rec.snapshot_path, 500, 3), 0);
    rfx_fill(f, 520, 3);
    /* A second install without entries: the log is empty, its last index
     * is the snapshot's. */
    assert_int_equal(st_write_snapshot(f->fs, ST_DIR, 900, 4, 2), 0);
    st_upd_init(&b, ++f->seq);
    st_upd_snapshot(&b, 900, 4);
    st_upd_hs(&b, 4, vote_of(4), 900);
    assert_int_equal(st_submit_wait(f->s, &f->w, &b.u), 0);
    assert_int_equal(f->w.last_index, 900);
    f->base = f->last = f->commit = 900;
    f->term = 4;
    rfx_reopen(f);
    rfx_check(f, 901);
    assert_int_equal(f->rec.snapshot.index, 900);
    assert_int_equal(st_check_snapshot(f->fs, f->rec.snapshot_path, 900, 4), 0);
    rfx_fill(f, 910, 4);
    rfx_reopen(f);
    rfx_check(f, 901);
    /* Compaction may now drop every segment before the last reset. */
    {
        unsigned before = n_segments(f);
        assert_true(before >= 3);
        assert_int_equal(cr_storage_compact(f->s, 0), 0);
        rfx_append(f, 911, 1, 4, 910);
        assert_true(n_segments(f) < before);
        rfx_reopen(f);
        rfx_check(f, 901);
        assert_int_equal(f->rec.snapshot.index, 900);
    }
}

/* Compaction drops whole segments whose entries are all at or below the
 * compaction point (never the active one); recovery then yields the
 * snapshot and every entry after it. */
static void compaction(void **state)
{
    struct rfx *f = *state;
    static struct st_rec recs[1024];
    unsigned n, before;
    uint64_t first_seg;
    assert_int_equal(rfx_open(f), 0);
    rfx_fill(f, 400, 2);
    before = n_segments(f);
    assert_true(before >= 8);
    /* Compacting below everything drops nothing. */
    assert_int_equal(cr_storage_compact(f->s, 0), 0);
    rfx_append(f, 401, 1, 2, 400);
    assert_int_equal(n_segments(f), before);

    assert_int_equal(st_write_snapshot(f->fs, ST_DIR, 250, 2, 2), 0);
    assert_int_equal(cr_storage_compact(f->s, 250), 0);
    rfx_append(f, 402, 1, 2, 401);
    assert_true(n_segments(f) < before);
    n = scan(f, recs, 1024);
    first_seg = recs[0].seg;
    assert_true(first_seg > 1);
    /* The first segment left is the active one, or holds an entry above
     * the compaction point. */
    {
        cr_index max = 0;
        for (unsigned i = 0; i < n && recs[i].seg == first_seg; i++) {
            if (recs[i].type == CR__REC_ENTRY && recs[i].index > max) {
                max = recs[i].index;
            }
        }
        assert_true(recs[n - 1].seg == first_seg || max > 250);
    }
    rfx_reopen(f);
    assert_true(f->rec.has_snapshot);
    assert_int_equal(f->rec.snapshot.index, 250);
    assert_true(f->rec.first <= 251);
    assert_true(f->rec.first > 1);
    rfx_check(f, f->rec.first);
    /* Writing and compacting go on after a reopen. */
    rfx_fill(f, 500, 3);
    assert_int_equal(st_write_snapshot(f->fs, ST_DIR, 480, 3, 2), 0);
    assert_int_equal(cr_storage_compact(f->s, 480), 0);
    rfx_append(f, 501, 1, 3, 500);
    rfx_reopen(f);
    assert_int_equal(f->rec.snapshot.index, 480);
    assert_true(f->rec.first <= 481);
    rfx_check(f, f->rec.first);
    /* The two newest snapshots are kept. */
    assert_int_equal(fs_fault_count_names(f->ff, ST_DIR, "snapshot-"), 2);
}

/* ---------------------------------------------------------------------------
 * The log cut short
 * ------------------------------------------------------------------------- */

/* A log whose last update wrote entries 41-43 of a new term (43 with a
 * payload of more than 40 bytes that needs padding) and a commit record,
 * in one batch, the last of a segment after the first. Returns the commit
 * record's position; scan() shows the rest. */
static struct st_rec write_log_ending_with_entry(struct rfx *f)
{
    struct st_rec recs[256];
    unsigned n;
    assert_int_equal(rfx_open(f), 0);
    rfx_fill(f, 40, 1);
    f->commit_before = f->commit;
    for (cr_term t = 2;; t++) {
        size_t len = st_payload_len(43, t);
        if (len % 8 != 0 && len > 40 &&
            st_entry_type(43, t) == CR_ENTRY_COMMAND) {
            rfx_append(f, 41, 3, t, 40);
            break;
        }
    }
    rfx_close(f);
    n = scan(f, recs, 256);
    assert_true(n > 5);
    assert_true(recs[n - 1].seg >= 2);
    /* One batch: the three entries, then the commit record of the same
     * update; another batch before it. */
    assert_int_equal(recs[n - 1].type, CR__REC_COMMIT);
    assert_int_equal(recs[n - 1].index, 40);
    for (unsigned i = 2; i <= 4; i++) {
        assert_int_equal(recs[n - i].type, CR__REC_ENTRY);
        assert_int_equal(recs[n - i].index, 45 - i);
        assert_int_equal(recs[n - i].batch, recs[n - 1].batch);
    }
    assert_int_equal(recs[n - 4].off, recs[n - 1].batch + CR__REC_HEADER);
    assert_int_equal(recs[n - 1].batch_end, recs[n - 1].off + recs[n - 1].size);
    assert_true(recs[n - 5].seg != recs[n - 1].seg ||
                recs[n - 5].batch_end == recs[n - 1].batch);
    return recs[n - 1];
}

/* Cut at every batch and record boundary of the last segment (the file
 * ends there): recovery yields exactly the records before the cut. A cut
 * between batches is a clean end; one inside a batch (between two of its
 * records) cuts the batch short: a torn tail, whose whole leading records
 * are kept, with a warning naming the file and the cut (the batch's own
 * offset when none of its records is left). Cut once, the log reopens
 * clean. */
static void truncate_at_record_boundaries(void **state)
{
    struct rfx *f = *state;
    struct st_rec recs[256];
    uint64_t cuts[600];
    char path[64];
    uint8_t *orig;
    size_t len;
    unsigned n, n_cuts = 0;
    uint64_t seg;
    (void)write_log_ending_with_entry(f);
    n = scan(f, recs, 256);
    seg = recs[n - 1].seg;
    st_seg_path(path, sizeof path, seg);
    assert_int_equal(fs_fault_read(f->ff, path, &orig, &len), 0);
    for (unsigned i = 0; i < n; i++) {
        if (recs[i].seg != seg) {
            continue;
        }
        if (recs[i].off == recs[i].batch + CR__REC_HEADER) {
            cuts[n_cuts++] = recs[i].batch;
        }
        cuts[n_cuts++] = recs[i].off;
    }
    cuts[n_cuts++] = recs[n - 1].batch_end;
    assert_true(n_cuts > 8);
    for (unsigned c = 0; c < n_cuts; c++) {
        uint64_t cut = cuts[c];
        uint64_t batch = 0;
        bool inside = false;
        cr_index last = 0, commit = 0;
        for (unsigned j = 0; j < n; j++) {
            if (recs[j].seg < seg || recs[j].off + recs[j].size <= cut) {
                if (recs[j].type == CR__REC_ENTRY) {
                    last = recs[j].index;
                }
                if (recs[j].type == CR__REC_COMMIT && recs[j].index > commit) {
                    commit = recs[j].index;
                }
            }
            if (recs[j].seg == seg && recs[j].batch < cut &&
                cut < recs[j].batch_end) {
                inside = true;
                batch = recs[j].batch;
            }
        }
        assert_int_equal(fs_fault_write(f->ff, path, orig, (size_t)cut), 0);
        assert_int_equal(rfx_open(f), 0);
        if (f->rec.torn != inside) {
            fail_msg("cut at %" PRIu64 ": torn %d (%s)", cut, f->rec.torn,
                     f->rec.warning);
        }
        if (inside) {
            assert_torn(f, path, cut == batch + CR__REC_HEADER ? batch : cut);
        }
        assert_int_equal(st_last_index(&f->rec), last);
        assert_int_equal(f->rec.hs.commit, commit);
        for (cr_index k = 1; k <= last; k++) {
            assert_true(st_entry_ok(&f->rec, k, f->terms[k]));
        }
        rfx_close(f);
        assert_int_equal(rfx_open(f), 0);
        assert_false(f->rec.torn);
        assert_int_equal(st_last_index(&f->rec), last);
        assert_int_equal(f->rec.hs.commit, commit);
        rfx_close(f);
    }
    /* The whole file: everything. */
    assert_int_equal(fs_fault_write(f->ff, path, orig, len), 0);
    assert_int_equal(rfx_open(f), 0);
    assert_false(f->rec.torn);
    rfx_check(f, 1);
    free(orig);
}

/* Cut at every byte of the last entry record (header and payload; the
 * file ends at the cut): recovery yields exactly the records before it
 * (entries 41 and 42, at the start of the same batch, are kept), and says
 * a torn tail was cut at the entry's offset, fewer than 32 bytes of its
 * header left included (a partial header). Cut once, the log reopens
 * clean. (A cut in its padding is truncate_in_padding_of_last_record; one
 * at its start, truncate_at_record_boundaries.) */
static void truncate_every_offset_of_last_record(void **state)
{
    struct rfx *f = *state;
    struct st_rec recs[256];
    struct st_rec e;
    char path[64];
    uint8_t *orig;
    size_t len;
    unsigned n;
    (void)write_log_ending_with_entry(f);
    n = scan(f, recs, 256);
    e = recs[n - 2]; /* entry 43; the commit after it goes too */
    assert_int_equal(e.index, 43);
    st_seg_path(path, sizeof path, e.seg);
    assert_int_equal(fs_fault_read(f->ff, path, &orig, &len), 0);
    for (uint64_t cut = e.off + 1; cut < e.off + CR__REC_HEADER + e.len;
         cut++) {
        assert_int_equal(fs_fault_write(f->ff, path, orig, (size_t)cut), 0);
        assert_int_equal(rfx_open(f), 0);
        assert_torn(f, path, e.off);
        /* The records before the cut, exactly. */
        assert_int_equal(st_last_index(&f->rec), 42);
        assert_int_equal(f->rec.first, 1);
        assert_int_equal(f->rec.hs.commit, f->commit_before);
        for (cr_index k = 1; k <= 42; k++) {
            assert_true(st_entry_ok(&f->rec, k, f->terms[k]));
        }
        rfx_close(f);
        /* Cut once, the log reopens clean. */
        assert_int_equal(rfx_open(f), 0);
        assert_false(f->rec.torn);
        assert_int_equal(st_last_index(&f->rec), 42);
        assert_int_equal(f->rec.hs.commit, f->commit_before);
        rfx_close(f);
    }
    free(orig);
}

/* A torn write in a preallocated segment: the last batch's first bytes
 * made it, up to a byte of entry 43, and the rest of the file is zeros.
 * At every byte of the entry the records before it come back (41 and 42,
 * and 43 once its payload is whole), the commit record after it never
 * (the batch is torn in any case: its checksum fails), the tail is cut
 * (the batch header rewritten to cover the records kept, the rest zeroed)
 * with a warning naming the file and where the cut starts, and writing
 * goes on after it. */
static void torn_write_every_offset_of_last_record(void **state)
{
    struct rfx *f = *state;
    struct st_rec recs[256];
    struct st_rec e;
    struct st_saved sv;
    char path[64];
    uint8_t *orig, *copy;
    size_t len;
    unsigned n;
    cr_term t43, term;
    (void)write_log_ending_with_entry(f);
    t43 = f->terms[43];
    term = f->term;
    n = scan(f, recs, 256);
    e = recs[n - 2];
    st_seg_path(path, sizeof path, e.seg);
    st_save(f->ff, &sv);
    assert_int_equal(fs_fault_read(f->ff, path, &orig, &len), 0);
    copy = malloc(len);
    assert_non_null(copy);
    for (uint64_t cut = e.off; cut <= e.off + e.size; cut++) {
        bool complete = cut >= e.off + CR__REC_HEADER + e.len;
        uint64_t keep = complete ? e.off + e.size : e.off;
        struct st_rec after[256];
        unsigned n_after;
        restore_files(f, &sv);
        memcpy(copy, orig, len);
        memset(copy + cut, 0, len - cut);
        assert_int_equal(fs_fault_write(f->ff, path, copy, len), 0);
        /* The model: 43 if complete; the commit after it is gone in any
         * case; term and vote were written after the batch was. */
        f->last = complete ? 43 : 42;
        f->terms[43] = t43;
        f->commit = f->commit_before;
        f->term = term;
        assert_int_equal(rfx_open(f), 0);
        rfx_check(f, 1);
        assert_torn(f, path, keep);
        rfx_close(f);
        /* The cut zeroed what was torn, and the batch now ends where the
         * records kept end. */
        assert_zeros_from(f, path, keep);
        n_after = scan(f, after, 256);
        assert_int_equal(n_after, complete ? n - 1 : n - 2);
        assert_int_equal(after[n_after - 1].batch, e.batch);
        assert_int_equal(after[n_after - 1].batch_end, keep);
        /* Write one more entry where the tail was, and read it back. */
        assert_int_equal(rfx_open(f), 0);
        assert_false(f->rec.torn);
        rfx_append(f, f->last + 1, 1, 9, f->commit);
        rfx_reopen(f);
        assert_false(f->rec.torn);
        rfx_check(f, 1);
        rfx_close(f);
    }
    free(copy);
    free(orig);
    st_saved_free(&sv);
}

/* A segment that ends inside the zero padding of entry 43 (after its
 * payload, before the next multiple of 8): the entry is whole and comes
 * back; the commit record after it in the batch is cut off, so the batch
 * is torn (cut, with a warning). Cut once, the log reopens clean with
 * entry 43, and writing goes on after it.
 *
 * The first open keeps entry 43 and cuts the batch where the file ends,
 * writing the missing padding as zeros, so that the rewritten batch ends
 * at the padded end of its last record: the next open finds a clean,
 * aligned log (a log cut once must reopen clean). */
static void truncate_in_padding_of_last_record(void **state)
{
    struct rfx *f = *state;
    struct st_rec recs[256];
    struct st_rec e;
    struct st_saved sv;
    char path[64];
    uint8_t *orig;
    size_t len;
    unsigned n;
    (void)write_log_ending_with_entry(f);
    n = scan(f, recs, 256);
    e = recs[n - 2];
    assert_true(e.size > CR__REC_HEADER + e.len);
    st_seg_path(path, sizeof path, e.seg);
    st_save(f->ff, &sv);
    assert_int_equal(fs_fault_read(f->ff, path, &orig, &len), 0);
    for (uint64_t cut = e.off + CR__REC_HEADER + e.len; cut < e.off + e.size;
         cut++) {
        int rv;
        restore_files(f, &sv);
        assert_int_equal(fs_fault_write(f->ff, path, orig, (size_t)cut), 0);
        rv = rfx_open(f);
        if (rv != 0) {
            free(orig);
            st_saved_free(&sv);
            fail_msg("cut at +%" PRIu64 " of the entry: refused: %s",
                     cut - e.off, f->errmsg);
        }
        assert_int_equal(st_last_index(&f->rec), 43);
        assert_true(st_entry_ok(&f->rec, 43, f->terms[43]));
        assert_int_equal(f->rec.hs.commit, f->commit_before);
        assert_true(f->rec.torn);
        assert_names(f->rec.warning, path, UINT64_MAX);
        rfx_close(f);
        rv = rfx_open(f);
        if (rv != 0) {
            free(orig);
            st_saved_free(&sv);
            fail_msg("cut at +%" PRIu64
                     " of the entry: cut once, the log "
                     "is refused: %s",
                     cut - e.off, f->errmsg);
        }
        assert_false(f->rec.torn);
        assert_int_equal(st_last_index(&f->rec), 43);
        assert_true(st_entry_ok(&f->rec, 43, f->terms[43]));
        f->last = 43;
        f->commit = f->commit_before;
        rfx_append(f, 44, 1, f->term, f->commit);
        rfx_reopen(f);
        assert_false(f->rec.torn);
        rfx_check(f, 1);
        rfx_close(f);
    }
    free(orig);
    st_saved_free(&sv);
}

/* ---------------------------------------------------------------------------
 * Hand-made directories, to put any record anywhere
 * ------------------------------------------------------------------------- */

#define IMG_SEGS 4
#define IMG_TERM 2

struct img_state
{
    cr_index last, commit, base;
};

/* Segments of records in batches, as the writer makes them: img_rec adds
 * a record to the open batch of the last segment (opening one if none is
 * open) and rewrites that batch's header to cover it; img_batch ends the
 * batch, so that the next record starts another. */
struct img
{
    uint8_t seg[IMG_SEGS][ST_SEGMENT];
    size_t used[IMG_SEGS];
    unsigned n;
    uint64_t open; /* the open batch's header in the last segment, 0: none */
    struct img_state st;
    cr_index reset_at;
};

static void img_init(struct img *m)
{
    memset(m, 0, sizeof *m);
    m->n = 1;
    cr__seg_header_encode(m->seg[0], 1);
    m->used[0] = CR__SEG_HEADER;
}

/* Ends the open batch; returns its offset (0 if none was open). */
static uint64_t img_batch(struct img *m)
{
    uint64_t at = m->open;
    m->open = 0;
    return at;
}

static void img_segment(struct img *m)
{
    assert_true(m->n < IMG_SEGS);
    m->open = 0;
    cr__seg_header_encode(m->seg[m->n], m->n + 1);
    m->used[m->n] = CR__SEG_HEADER;
    m->n++;
}

/* Appends the next record of type t to the open batch of the last segment;
 * returns its offset. Entries continue the log; a commit commits it all; a
 * truncate drops its last entry; a reset installs a snapshot 10 entries
 * ahead. */
static uint64_t img_rec(struct img *m, enum cr__rec_type t)
{
    uint8_t payload[512];
    uint8_t *seg = m->seg[m->n - 1];
    size_t *used = &m->used[m->n - 1];
    uint64_t off;
    cr_index index = 0;
    size_t len = 0;
    enum cr_entry_type et = 0;
    switch (t) {
        case CR__REC_ENTRY:
            index = ++m->st.last;
            et = st_entry_type(index, IMG_TERM);
            len = st_payload_len(index, IMG_TERM);
            st_entry_payload(payload, index, IMG_TERM);
            break;
        case CR__REC_COMMIT:
            index = m->st.commit = m->st.last;
            break;
        case CR__REC_TRUNCATE:
            assert_true(m->st.last > m->st.base + 1);
            index = m->st.last--;
            break;
        case CR__REC_RESET:
            index = m->st.base = m->st.last = m->st.last + 10;
            m->reset_at = index;
            break;
        case CR__REC_BATCH:
            fail_msg("img_rec makes the batch headers itself");
            break;
    }
    if (m->open == 0) {
        assert_true(*used + CR__REC_HEADER <= ST_SEGMENT);
        m->open = *used;
        *used += CR__REC_HEADER;
    }
    off = *used;
    assert_true(off + cr__rec_size(len) <= ST_SEGMENT);
    *used +=
        cr__rec_encode(seg + off, t, et, index,
                       t == CR__REC_ENTRY || t == CR__REC_RESET ? IMG_TERM : 0,
                       payload, (uint32_t)len);
    (void)cr__batch_encode(seg + m->open, seg + m->open + CR__REC_HEADER,
                           *used - m->open - CR__REC_HEADER);
    return off;
}

static void img_entries(struct img *m, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        (void)img_rec(m, CR__REC_ENTRY);
    }
}

static void write_meta_file(struct rfx *f, unsigned slot, uint64_t seq)
{
    struct cr__meta meta = {.seq = seq, .term = 5, .vote = 1, .cluster_id = 42};
    uint8_t buf[CR__META_SIZE];
    char path[64];
    cr__meta_encode(buf, &meta);
    snprintf(path, sizeof path, "%s/metadata%u", ST_DIR, slot);
    assert_int_equal(fs_fault_write(f->ff, path, buf, sizeof buf), 0);
}

/* A fresh file system holding the image: metadata (term 5, vote 1,
 * metadata2 the newer), the segments (preallocated), the snapshot of the
 * last reset. */
static void img_write(struct rfx *f, const struct img *m)
{
    rfx_new_fs(f);
    assert_int_equal(f->fs->mkdir(f->fs->data, ST_DIR), 0);
    write_meta_file(f, 1, 1);
    write_meta_file(f, 2, 2);
    for (unsigned i = 0; i < m->n; i++) {
        char path[64];
        st_seg_path(path, sizeof path, i + 1);
        assert_int_equal(fs_fault_write(f->ff, path, m->seg[i], ST_SEGMENT), 0);
    }
    if (m->reset_at != 0) {
        assert_int_equal(
            st_write_snapshot(f->fs, ST_DIR, m->reset_at, IMG_TERM, 2), 0);
    }
}

/* The recovery holds exactly the state s of an image. */
static void assert_state(struct rfx *f, const struct img_state *s)
{
    assert_int_equal(f->rec.hs.term, 5);
    assert_int_equal(f->rec.hs.vote, 1);
    assert_int_equal(f->rec.hs.commit, s->commit);
    assert_int_equal(st_last_index(&f->rec), s->last);
    if (s->last > s->base) {
        assert_int_equal(f->rec.first, s->base + 1);
    }
    for (cr_index i = s->base + 1; i <= s->last; i++) {
        assert_true(st_entry_ok(&f->rec, i, IMG_TERM));
    }
}

/* With the storage open on an image in state *s: one more entry, durable,
 * then a reopen that finds it after the others. */
static void img_append_one(struct rfx *f, struct img_state *s)
{
    struct st_upd b;
    st_upd_init(&b, ++f->seq);
    st_upd_entries(&b, s->last + 1, 1, IMG_TERM);
    st_upd_hs(&b, 5, 1, s->commit);
    assert_int_equal(st_submit_wait(f->s, &f->w, &b.u), 0);
    st_upd_free(&b);
    s->last++;
    rfx_reopen(f);
    assert_false(f->rec.torn);
    assert_state(f, s);
}

static uint64_t rng_next(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static const enum cr__rec_type all_types[] = {CR__REC_ENTRY, CR__REC_COMMIT,
                                              CR__REC_TRUNCATE, CR__REC_RESET};
static const char *const type_names[] = {"",         "entry", "commit",
                                         "truncate", "reset", "batch"};

/* Where the damaged record sits. */
enum where {
    IN_LAST_BATCH,       /* the last batch of the newest segment, after two
                            records of it and before one */
    FIRST_OF_LAST_BATCH, /* the first record of that batch */
    BEFORE_LAST_BATCH,   /* in a batch of the newest segment that another
                            batch follows */
    IN_CLOSED,           /* in the last batch of a segment that is not the
                            newest */
    BEFORE_LAST_IN_CLOSED,
    N_WHERE
};
static const char *const where_names[] = {
    "in the last batch", "first of the last batch", "before the last batch",
    "in a closed segment", "before the last batch of a closed segment"};

struct img_pos
{
    unsigned seg;                  /* the segment (1-based) */
    uint64_t off;                  /* the record */
    uint64_t batch;                /* its batch */
    uint64_t batch_end;            /* the end of its batch */
    uint32_t len;                  /* its payload length */
    struct img_state before;       /* the state before the record */
    struct img_state before_batch; /* the state before its batch */
};

/* An image with a record of type t at `where`. */
static void img_with(struct img *m,
                     enum cr__rec_type t,
                     enum where where,
                     struct img_pos *p)
{
    bool newest = where == IN_LAST_BATCH || where == FIRST_OF_LAST_BATCH ||
                  where == BEFORE_LAST_BATCH;
    img_init(m);
    img_entries(m, 4);
    (void)img_rec(m, CR__REC_COMMIT);
    (void)img_batch(m);
    if (newest) {
        img_segment(m);
        img_entries(m, 3);
        (void)img_batch(m);
    }
    p->before_batch = m->st;
    if (where != FIRST_OF_LAST_BATCH) {
        img_entries(m, 2);
    }
    p->before = m->st;
    p->seg = m->n;
    p->off = img_rec(m, t);
    p->batch = m->open;
    p->len = cr__get32(m->seg[m->n - 1] + p->off + 4);
    img_entries(m, 1);
    (void)img_batch(m);
    p->batch_end = m->used[m->n - 1];
    if (where == BEFORE_LAST_BATCH || where == BEFORE_LAST_IN_CLOSED) {
        img_entries(m, 2);
        (void)img_batch(m);
    }
    if (where == IN_CLOSED || where == BEFORE_LAST_IN_CLOSED) {
        img_segment(m);
        img_entries(m, 2);
        (void)img_batch(m);
    }
}

/* The intact images of the tests below recover completely (so that what
 * the refusals and cuts see is the damage and nothing else). */
static void intact_images_recover(void **state)
{
    struct rfx *f = *state;
    for (unsigned wi = 0; wi < N_WHERE; wi++) {
        for (unsigned ti = 0; ti < 4; ti++) {
            struct img m;
            struct img_pos p;
            img_with(&m, all_types[ti], (enum where)wi, &p);
            img_write(f, &m);
            assert_int_equal(rfx_open(f), 0);
            assert_false(f->rec.torn);
            assert_string_equal(f->rec.warning, "");
            assert_state(f, &m.st);
            if (m.reset_at != 0) {
                assert_true(f->rec.has_snapshot);
                assert_int_equal(f->rec.snapshot.index, m.reset_at);
            }
            rfx_close(f);
        }
    }
}

/* Bits flipped at random offsets of a record of every type in the last
 * batch of the newest segment (after two records of that batch, or its
 * first), or of that batch's header: the batch is a torn tail, cut from
 * the damaged record on (rec.torn, a warning naming the file and the
 * damaged record's offset, or the batch's when nothing of it is kept);
 * the state before the damaged record comes back, the rest of the file
 * is zeroed, the log reopens clean and takes new writes. Inspection
 * reports the same first, and writes nothing. */
static void flip_in_tail_is_torn(void **state)
{
    static const enum where wheres[] = {IN_LAST_BATCH, FIRST_OF_LAST_BATCH};
    struct rfx *f = *state;
    uint64_t rng = 1;
    for (unsigned wi = 0; wi < 2; wi++) {
        for (unsigned ti = 0; ti < 4; ti++) {
            for (unsigned round = 0; round < 12; round++) {
                enum cr__rec_type t = all_types[ti];
                bool header = round % 4 == 3;
                struct img m;
                struct img_pos p;
                struct img_state st;
                uint64_t at, keep;
                char path[64];
                img_with(&m, t, wheres[wi], &p);
                img_write(f, &m);
                st_seg_path(path, sizeof path, p.seg);
                /* Somewhere in what a CRC covers (the padding: see
                 * test_storage_format's record_padding_flip_detected). */
                at = header ? p.batch + rng_next(&rng) % CR__REC_HEADER
                            : p.off + rng_next(&rng) % (CR__REC_HEADER + p.len);
                assert_int_equal(
                    fs_fault_flip(f->ff, path, at,
                                  (uint8_t)(1u << (rng_next(&rng) % 8))),
                    0);
                st = header ? p.before_batch : p.before;
                keep = header || wheres[wi] == FIRST_OF_LAST_BATCH ? p.batch
                                                                   : p.off;
                (void)inspect_torn(f, path, keep);
                assert_int_equal(rfx_open(f), 0);
                if (!f->rec.torn) {
                    fail_msg("%s record %s: flip at %" PRIu64 " not seen",
                             type_names[t], where_names[wheres[wi]], at);
                }
                assert_torn(f, path, keep);
                assert_state(f, &st);
                rfx_close(f);
                assert_zeros_from(f, path, keep);
                /* Cut once: clean from now on, and writable. */
                assert_int_equal(rfx_open(f), 0);
                assert_false(f->rec.torn);
                assert_state(f, &st);
                img_append_one(f, &st);
                rfx_close(f);
            }
        }
    }
}

/* Bits flipped in a record of every type, or in its batch's header, in a
 * batch that a valid batch follows, or in a segment that is not the
 * newest: refused, naming the file and the damaged batch's offset (and
 * that of the valid batch after it). */
static void flip_elsewhere_is_refused(void **state)
{
    static const enum where wheres[] = {BEFORE_LAST_BATCH, IN_CLOSED,
                                        BEFORE_LAST_IN_CLOSED};
    struct rfx *f = *state;
    uint64_t rng = 2;
    for (unsigned wi = 0; wi < 3; wi++) {
        for (unsigned ti = 0; ti < 4; ti++) {
            for (unsigned round = 0; round < 6; round++) {
                enum cr__rec_type t = all_types[ti];
                bool header = round % 3 == 2;
                struct img m;
                struct img_pos p;
                uint64_t at;
                char path[64];
                img_with(&m, t, wheres[wi], &p);
                img_write(f, &m);
                at = header ? p.batch + rng_next(&rng) % CR__REC_HEADER
                            : p.off + rng_next(&rng) % (CR__REC_HEADER + p.len);
                st_seg_path(path, sizeof path, p.seg);
                assert_int_equal(
                    fs_fault_flip(f->ff, path, at,
                                  (uint8_t)(1u << (rng_next(&rng) % 8))),
                    0);
                assert_refused(f, path, p.batch);
                if (wheres[wi] != IN_CLOSED) {
                    assert_names(f->errmsg, path, p.batch_end);
                }
            }
        }
    }
}

/* A damaged batch (a flipped bit in its body or header, a hole of zeros
 * in its body, its header zeroed) followed by a valid batch in the newest
 * segment is damage, not a torn tail: refused, and the message names the
 * file, both offsets and what to do. */
static void damaged_batch_followed_by_valid_batch(void **state)
{
    struct rfx *f = *state;
    for (unsigned k = 0; k < 5; k++) {
        struct img m;
        uint64_t b1, b2, b3, r2;
        img_init(&m);
        img_entries(&m, 4);
        (void)img_rec(&m, CR__REC_COMMIT);
        (void)img_batch(&m);
        img_segment(&m);
        img_entries(&m, 2);
        b1 = img_batch(&m);
        img_entries(&m, 1);
        r2 = img_rec(&m, CR__REC_ENTRY);
        img_entries(&m, 1);
        b2 = img_batch(&m);
        img_entries(&m, 2);
        b3 = img_batch(&m);
        assert_true(b1 < b2 && b2 < b3);
        img_write(f, &m);
        switch (k) {
            case 0: /* a bit of a record of its body */
                assert_int_equal(fs_fault_flip(f->ff, SEG2, r2 + 20, 0x10), 0);
                break;
            case 1: /* a bit of its header */
                assert_int_equal(fs_fault_flip(f->ff, SEG2, b2 + 17, 0x01), 0);
                break;
            case 2: /* a hole in its body */
                zero_range(f, SEG2, r2 + 8, 40);
                break;
            case 3: /* its header zeroed: the log seems to end there */
                zero_range(f, SEG2, b2, CR__REC_HEADER);
                break;
            default: /* the same in the first batch of the segment */
                assert_int_equal(fs_fault_flip(f->ff, SEG2, b1 + 40, 0x04), 0);
                b3 = b2;
                b2 = b1;
                break;
        }
        assert_refused(f, SEG2, b2);
        assert_names(f->errmsg, SEG2, b3);
    }
}

/* A torn last batch with a hole: the page cache wrote a later part of it
 * back and not an earlier one (zeros in the middle of the body, valid
 * records after them). The batch is cut keeping the records before the
 * hole, wherever the hole starts (at a record, or inside one), and the
 * records after the hole are dropped with the rest (zeroed). Inspection
 * reports the same first, and writes nothing. */
static void torn_last_batch_with_hole(void **state)
{
    struct rfx *f = *state;
    for (unsigned k = 0; k < 3; k++) {
        struct st_rec recs[256];
        unsigned n, first;
        char path[64];
        uint64_t hole, hole_end;
        cr_term term;
        rfx_new_fs(f);
        assert_int_equal(rfx_open(f), 0);
        rfx_fill(f, 30, 1);
        f->commit_before = f->commit;
        rfx_append(f, 31, 10, 2, 30);
        term = f->term;
        rfx_close(f);
        n = scan(f, recs, 256);
        /* The last batch: entries 31-40 and the commit, or the part of them
         * that went to the newest segment. */
        first = n - 1;
        while (first > 0 && recs[first - 1].batch == recs[n - 1].batch &&
               recs[first - 1].seg == recs[n - 1].seg) {
            first--;
        }
        assert_true(n - first >= 7);
        assert_int_equal(recs[first].type, CR__REC_ENTRY);
        st_seg_path(path, sizeof path, recs[n - 1].seg);
        switch (k) {
            case 0: /* two whole records */
                hole = recs[first + 2].off;
                hole_end = recs[first + 4].off;
                break;
            case 1: /* from inside one record to inside the next */
                hole = recs[first + 2].off + 8;
                hole_end = recs[first + 3].off + 16;
                break;
            default: /* a few bytes of one payload */
                hole = recs[first + 2].off + CR__REC_HEADER;
                hole_end = hole + 4;
                break;
        }
        if (k == 2 && recs[first + 2].len < 4) {
            hole = recs[first + 2].off + 4;
            hole_end = hole + 4;
        }
        zero_range(f, path, hole, hole_end - hole);
        /* The model: the records before the one the hole starts in. */
        f->last = recs[first + 1].index;
        f->commit = f->commit_before;
        f->term = term;
        assert_int_equal(inspect_torn(f, path, recs[first + 2].off), f->last);
        assert_int_equal(rfx_open(f), 0);
        assert_torn(f, path, recs[first + 2].off);
        rfx_check(f, 1);
        rfx_close(f);
        assert_zeros_from(f, path, recs[first + 2].off);
        assert_int_equal(rfx_open(f), 0);
        assert_false(f->rec.torn);
        rfx_check(f, 1);
        rfx_append(f, f->last + 1, 2, 3, f->commit);
        rfx_reopen(f);
        assert_false(f->rec.torn);
        rfx_check(f, 1);
        rfx_close(f);
    }
}

/* Rewrites the header of the batch at `batch` of path so that its
 * checksum matches a body of len bytes (what is there now). */
static void reseal_batch(struct rfx *f,
                         const char *path,
                         uint64_t batch,
                         uint64_t len)
{
    uint8_t *buf;
    size_t size;
    assert_int_equal(fs_fault_read(f->ff, path, &buf, &size), 0);
    assert_true(batch + CR__REC_HEADER + len <= size);
    (void)cr__batch_encode(buf + batch, buf + batch + CR__REC_HEADER,
                           (size_t)len);
    assert_int_equal(fs_fault_write(f->ff, path, buf, size), 0);
    free(buf);
}

/* A batch whose checksum matches holds only whole, valid records: a bad
 * record in it (a flipped bit, non-zero padding or reserved bytes, a batch
 * header, a record the batch's length cuts short) is damage, refused
 * naming the file and the record's offset, even in the last batch of the
 * newest segment. */
static void valid_batch_with_bad_record_is_refused(void **state)
{
    struct rfx *f = *state;
    for (unsigned k = 0; k < 5; k++) {
        struct img m;
        uint64_t batch, x, len;
        uint32_t plen;
        img_init(&m);
        img_entries(&m, 4);
        (void)img_rec(&m, CR__REC_COMMIT);
        (void)img_batch(&m);
        img_segment(&m);
        img_entries(&m, 2);
        (void)img_batch(&m);
        img_entries(&m, 1);
        /* An entry with a padded payload. */
        while (st_payload_len(m.st.last + 1, IMG_TERM) % 8 == 0 ||
               st_entry_type(m.st.last + 1, IMG_TERM) != CR_ENTRY_COMMAND) {
            m.st.last++;
        }
        x = img_rec(&m, CR__REC_ENTRY);
        plen = cr__get32(m.seg[1] + x + 4);
        batch = m.open;
        len = m.used[1] - batch - CR__REC_HEADER;
        switch (k) {
            case 0: /* a flipped bit */
                m.seg[1][x + 24] ^= 0x01;
                break;
            case 1: /* non-zero padding */
                m.seg[1][x + CR__REC_HEADER + plen] = 0x80;
                break;
            case 2: /* a non-zero reserved byte, the CRC matching */
                m.seg[1][x + 12] = 1;
                cr__put32(m.seg[1] + x, cr_crc32c(0, m.seg[1] + x + 4,
                                                  CR__REC_HEADER - 4 + plen));
                break;
            case 3: /* a batch header */
                (void)cr__batch_encode(m.seg[1] + x, m.seg[1] + batch, 8);
                break;
            default: /* cut short by the batch's length */
                len -= cr__rec_size(plen) - CR__REC_HEADER - plen / 2;
                break;
        }
        img_write(f, &m);
        reseal_batch(f, SEG2, batch, len);
        assert_refused(f, SEG2, x);
    }
}

/* A record outside a batch (no batch header before it) is never replayed:
 * at the end of the newest segment it is a header where the log should
 * end, a torn tail, cut; followed by a valid batch, or in a segment that
 * is not the newest, it is damage, refused naming its offset. */
static void record_outside_a_batch(void **state)
{
    struct rfx *f = *state;
    for (unsigned k = 0; k < 3; k++) {
        struct img m;
        struct img_state st;
        uint8_t payload[512];
        uint64_t bare, next = 0;
        unsigned seg;
        cr_index index;
        size_t len;
        char path[64];
        img_init(&m);
        img_entries(&m, 4);
        (void)img_rec(&m, CR__REC_COMMIT);
        (void)img_batch(&m);
        if (k < 2) {
            img_segment(&m);
            img_entries(&m, 2);
            (void)img_batch(&m);
        }
        st = m.st;
        seg = m.n;
        /* The next entry, bare. */
        index = m.st.last + 1;
        len = st_payload_len(index, IMG_TERM);
        st_entry_payload(payload, index, IMG_TERM);
        bare = m.used[seg - 1];
        m.used[seg - 1] += cr__rec_encode(m.seg[seg - 1] + bare, CR__REC_ENTRY,
                                          st_entry_type(index, IMG_TERM), index,
                                          IMG_TERM, payload, (uint32_t)len);
        m.st.last = index;
        if (k == 1) {
            img_entries(&m, 1);
            next = img_batch(&m);
        }
        if (k == 2) {
            img_segment(&m);
            img_entries(&m, 2);
            (void)img_batch(&m);
        }
        img_write(f, &m);
        st_seg_path(path, sizeof path, seg);
        if (k == 0) {
            assert_int_equal(rfx_open(f), 0);
            assert_torn(f, path, bare);
            assert_state(f, &st);
            rfx_close(f);
            assert_zeros_from(f, path, bare);
        } else {
            assert_refused(f, path, bare);
            if (k == 1) {
                assert_names(f->errmsg, path, next);
            }
        }
    }
}

/* A data directory written before records went in batches (bare records,
 * segment header version 1) is refused by name, never cut: recovery
 * refuses what it cannot read rather than guess around it, and a newest
 * segment of another version is not taken for one whose creation a crash
 * interrupted either. */
static void old_format_segment_is_not_cut(void **state)
{
    struct rfx *f = *state;
    uint8_t seg[ST_SEGMENT];
    uint8_t payload[512];
    uint64_t off = CR__SEG_HEADER;
    int rv;
    memset(seg, 0, sizeof seg);
    /* A segment header of version 1, the format before batches. */
    memcpy(seg, CR__SEG_MAGIC, 8);
    cr__put32(seg + 8, 1);
    cr__put64(seg + 16, 1);
    cr__put32(seg + 12,
              cr_crc32c(cr_crc32c(0, seg, 12), seg + 16, CR__SEG_HEADER - 16));
    for (cr_index i = 1; i <= 5; i++) {
        size_t len = st_payload_len(i, IMG_TERM);
        st_entry_payload(payload, i, IMG_TERM);
        off +=
            cr__rec_encode(seg + off, CR__REC_ENTRY, st_entry_type(i, IMG_TERM),
                           i, IMG_TERM, payload, (uint32_t)len);
    }
    off += cr__rec_encode(seg + off, CR__REC_COMMIT, 0, 5, 0, NULL, 0);
    rfx_new_fs(f);
    assert_int_equal(f->fs->mkdir(f->fs->data, ST_DIR), 0);
    write_meta_file(f, 1, 1);
    write_meta_file(f, 2, 2);
    assert_int_equal(fs_fault_write(f->ff, SEG1, seg, sizeof seg), 0);
    rv = rfx_open(f);
    if (rv == 0 && st_last_index(&f->rec) != 5) {
        fail_msg(
            "a segment of the format before batches (5 entries, commit "
            "5) opened with last index %" PRIu64 ", commit %" PRIu64 " (%s)",
            st_last_index(&f->rec), f->rec.hs.commit, f->rec.warning);
    }
    if (rv != 0) {
        assert_int_equal(rv, CR_ECORRUPT);
        assert_names(f->errmsg, SEG1, UINT64_MAX);
    }
}

/* Segment headers: a flip in the header of a segment with records, newest
 * or not, is refused at offset 0, as is one in the header of an empty
 * segment that is not the newest; a newest segment holding nothing but a
 * bad header (a crash while it was created) is removed with a warning
 * (inspection reports it and removes nothing). */
static void segment_header_damage(void **state)
{
    struct rfx *f = *state;
    for (size_t b = 0; b < CR__SEG_HEADER; b += 3) {
        struct img m;
        img_init(&m);
        img_entries(&m, 4);
        img_segment(&m);
        img_entries(&m, 3);
        for (unsigned seg = 1; seg <= 2; seg++) {
            char path[64];
            st_seg_path(path, sizeof path, seg);
            img_write(f, &m);
            assert_int_equal(fs_fault_flip(f->ff, path, b, 0x04), 0);
            assert_refused(f, path, 0);
        }
    }
    for (size_t b = 0; b < CR__SEG_HEADER; b += 5) {
        struct img m;
        struct img_state before;
        img_init(&m);
        img_entries(&m, 4);
        (void)img_rec(&m, CR__REC_COMMIT);
        before = m.st;
        img_segment(&m);
        img_write(f, &m);
        assert_int_equal(fs_fault_flip(f->ff, SEG2, b, 0x40), 0);
        (void)inspect_torn(f, SEG2, UINT64_MAX);
        assert_true(fs_fault_exists(f->ff, SEG2));
        assert_int_equal(rfx_open(f), 0);
        assert_true(f->rec.torn);
        assert_names(f->rec.warning, SEG2, UINT64_MAX);
        assert_state(f, &before);
        assert_false(fs_fault_exists(f->ff, SEG2));
        /* The removal is durable. */
        rfx_close(f);
        fs_fault_crash(f->ff);
        assert_false(fs_fault_exists(f->ff, SEG2));
        /* An empty segment with a bad header before a newer one. */
        img_segment(&m);
        img_entries(&m, 2);
        img_write(f, &m);
        assert_int_equal(fs_fault_flip(f->ff, SEG2, b, 0x40), 0);
        assert_refused(f, SEG2, 0);
    }
}

/* Bytes flipped in the zeros right after the last batch (a header where
 * the log should end that is not zeros): in the newest segment a torn
 * tail; in an older one, damage. */
static void flip_in_zero_tail(void **state)
{
    struct rfx *f = *state;
    struct img m;
    struct img_state st;
    uint64_t end;
    img_init(&m);
    img_entries(&m, 4);
    img_segment(&m);
    img_entries(&m, 3);
    st = m.st;
    end = m.used[1];
    for (uint64_t b = 0; b < CR__REC_HEADER; b += 5) {
        img_write(f, &m);
        assert_int_equal(fs_fault_flip(f->ff, SEG2, end + b, 0x01), 0);
        assert_int_equal(rfx_open(f), 0);
        assert_torn(f, SEG2, end);
        assert_state(f, &st);
        rfx_close(f);
        assert_zeros_from(f, SEG2, end);
        img_write(f, &m);
        assert_int_equal(fs_fault_flip(f->ff, SEG1, m.used[0] + b, 0x01), 0);
        assert_refused(f, SEG1, m.used[0]);
    }
}

/* A segment whose file ends fewer than 32 bytes after its last batch:
 * zeros there are a clean end; anything else is a partial header, a torn
 * tail in the newest segment (cut, the log reopens clean) and damage in an
 * older one. */
static void partial_header_at_end_of_segment(void **state)
{
    struct rfx *f = *state;
    struct img m;
    struct img_state st;
    uint64_t end;
    img_init(&m);
    img_entries(&m, 4);
    (void)img_rec(&m, CR__REC_COMMIT);
    img_segment(&m);
    img_entries(&m, 3);
    st = m.st;
    end = m.used[1];
    for (uint64_t k = 1; k < CR__REC_HEADER; k++) {
        /* Zeros. */
        img_write(f, &m);
        assert_int_equal(fs_fault_truncate(f->ff, SEG2, end + k), 0);
        assert_int_equal(rfx_open(f), 0);
        assert_false(f->rec.torn);
        assert_state(f, &st);
        rfx_close(f);
        /* A partial header. */
        assert_int_equal(fs_fault_flip(f->ff, SEG2, end + k - 1, 0x20), 0);
        assert_int_equal(rfx_open(f), 0);
        assert_torn(f, SEG2, end);
        assert_state(f, &st);
        rfx_close(f);
        assert_zeros_from(f, SEG2, end);
        assert_int_equal(rfx_open(f), 0);
        assert_false(f->rec.torn);
        assert_state(f, &st);
        rfx_close(f);
        /* The same at the end of an older segment. */
        img_write(f, &m);
        assert_int_equal(fs_fault_truncate(f->ff, SEG1, m.used[0] + k), 0);
        assert_int_equal(rfx_open(f), 0);
        assert_false(f->rec.torn);
        rfx_close(f);
        assert_int_equal(fs_fault_flip(f->ff, SEG1, m.used[0] + k - 1, 0x20),
                         0);
        assert_refused(f, SEG1, m.used[0]);
    }
}

static void missing_segment(void **state)
{
    struct rfx *f = *state;
    struct img m;
    img_init(&m);
    img_entries(&m, 3);
    img_segment(&m);
    img_entries(&m, 3);
    img_segment(&m);
    img_entries(&m, 3);
    img_write(f, &m);
    assert_int_equal(fs_fault_remove(f->ff, SEG2), 0);
    assert_refused(f, "wal-0000000000000002", UINT64_MAX);
    assert_true(st_contains(f->errmsg, "missing"));
    /* Without its first segment the log starts at 4 with nothing before
     * it. */
    img_write(f, &m);
    assert_int_equal(fs_fault_remove(f->ff, SEG1), 0);
    assert_refused(f, ST_DIR, UINT64_MAX);
    assert_true(st_contains(f->errmsg, "missing"));
}

/* An entry whose index skips ahead, within a segment and across two, and
 * an entry after a reset that does not follow the snapshot. */
static void index_gap(void **state)
{
    struct rfx *f = *state;
    struct img m;
    uint64_t off;
    img_init(&m);
    img_entries(&m, 3);
    m.st.last++; /* entry 4 never written */
    off = img_rec(&m, CR__REC_ENTRY);
    img_entries(&m, 2);
    img_write(f, &m);
    assert_refused(f, SEG1, off);
    assert_true(st_contains(f->errmsg, "missing"));

    img_init(&m);
    img_entries(&m, 3);
    img_segment(&m);
    m.st.last += 2;
    off = img_rec(&m, CR__REC_ENTRY);
    img_write(f, &m);
    assert_refused(f, SEG2, off);

    img_init(&m);
    img_entries(&m, 3);
    (void)img_rec(&m, CR__REC_RESET);
    m.st.last++;
    off = img_rec(&m, CR__REC_ENTRY);
    img_write(f, &m);
    assert_refused(f, SEG1, off);
}

/* A reset record whose snapshot is missing, or older than it. */
static void reset_without_snapshot(void **state)
{
    struct rfx *f = *state;
    struct img m;
    char path[CR_PATH_MAX];
    img_init(&m);
    img_entries(&m, 3);
    (void)img_rec(&m, CR__REC_RESET);
    img_entries(&m, 2);
    img_write(f, &m);
    snprintf(path, sizeof path, "%s/snapshot-%016" PRIu64 "-%016" PRIu64,
             ST_DIR, m.reset_at, (uint64_t)IMG_TERM);
    assert_true(fs_fault_exists(f->ff, path));
    assert_int_equal(fs_fault_remove(f->ff, path), 0);
    assert_refused(f, ST_DIR, UINT64_MAX);
    assert_true(st_contains(f->errmsg, "snapshot"));
    /* An older snapshot does not cover it either. */
    img_write(f, &m);
    assert_int_equal(fs_fault_remove(f->ff, path), 0);
    assert_int_equal(
        st_write_snapshot(f->fs, ST_DIR, m.reset_at - 1, IMG_TERM, 2), 0);
    assert_refused(f, ST_DIR, UINT64_MAX);
}

/* The newest snapshot damaged (header, data, cut short): refused, naming
 * the snapshot file. */
static void bad_snapshot(void **state)
{
    struct rfx *f = *state;
    char path[CR_PATH_MAX];
    uint64_t size;
    struct img m;
    img_init(&m);
    img_entries(&m, 3);
    (void)img_rec(&m, CR__REC_RESET);
    img_entries(&m, 2);
    snprintf(path, sizeof path, "%s/snapshot-%016" PRIu64 "-%016" PRIu64,
             ST_DIR, (uint64_t)13, (uint64_t)IMG_TERM);
    assert_int_equal(m.reset_at, 13);
    for (unsigned k = 0; k < 4; k++) {
        img_write(f, &m);
        assert_int_equal(fs_fault_file_size(f->ff, path, &size), 0);
        assert_true(size > 200);
        switch (k) {
            case 0:
                assert_int_equal(fs_fault_flip(f->ff, path, 20, 0x01), 0);
                break;
            case 1:
                assert_int_equal(fs_fault_flip(f->ff, path, 70, 0x01), 0);
                break;
            case 2:
                assert_int_equal(fs_fault_flip(f->ff, path, size - 1, 0x80), 0);
                break;
            default:
                assert_int_equal(fs_fault_truncate(f->ff, path, size - 1), 0);
                break;
        }
        assert_refused(f, path, UINT64_MAX);
    }
}

/* One metadata copy bad (a flipped bit anywhere in it, the reserved zeros
 * at 48-63 included; cut short): the other is used, with a warning naming
 * the bad one. Both bad: refused, naming both. None, with a log:
 * refused. */
static void metadata_damage(void **state)
{
    struct rfx *f = *state;
    struct img m;
    img_init(&m);
    img_entries(&m, 3);
    img_write(f, &m);
    for (unsigned slot = 1; slot <= 2; slot++) {
        char path[64];
        snprintf(path, sizeof path, "%s/metadata%u", ST_DIR, slot);
        for (size_t b = 0; b < CR__META_SIZE; b += 3) {
            img_write(f, &m);
            assert_int_equal(fs_fault_flip(f->ff, path, b, 0x02), 0);
            assert_int_equal(rfx_open(f), 0);
            assert_names(f->rec.warning, path, UINT64_MAX);
            assert_state(f, &m.st);
            rfx_close(f);
        }
        /* Cut short. */
        img_write(f, &m);
        assert_int_equal(fs_fault_truncate(f->ff, path, 30), 0);
        assert_int_equal(rfx_open(f), 0);
        assert_names(f->rec.warning, path, UINT64_MAX);
        rfx_close(f);
    }
    img_write(f, &m);
    assert_int_equal(fs_fault_flip(f->ff, ST_DIR "/metadata1", 17, 1), 0);
    assert_int_equal(fs_fault_flip(f->ff, ST_DIR "/metadata2", 9, 1), 0);
    assert_int_equal(rfx_open(f), CR_ECORRUPT);
    assert_names(f->errmsg, ST_DIR "/metadata1", UINT64_MAX);
    assert_true(st_contains(f->errmsg, "metadata2"));
    assert_true(st_contains(f->errmsg, "restore"));
    img_write(f, &m);
    assert_int_equal(fs_fault_remove(f->ff, ST_DIR "/metadata1"), 0);
    assert_int_equal(fs_fault_remove(f->ff, ST_DIR "/metadata2"), 0);
    assert_refused(f, ST_DIR, UINT64_MAX);
    /* The newer copy wins, whichever file holds it. */
    img_write(f, &m);
    write_meta_file(f, 1, 3);
    assert_int_equal(rfx_open(f), 0);
    assert_string_equal(f->rec.warning, "");
    rfx_close(f);
}

/* A metadata file that was never written (empty, or zeros: a crash while
 * the directory was being set up): with the other copy valid, that copy
 * is used with a warning naming the file; with neither valid and nothing
 * else in the directory, the directory is fresh (set up again); with
 * neither valid and a log or a snapshot, refused (what the node voted is
 * unknown). */
static void metadata_never_written(void **state)
{
    static const uint8_t zeros[CR__META_SIZE];
    static const size_t sizes[] = {0, 1, 40, CR__META_SIZE};
    struct rfx *f = *state;
    struct img m;
    img_init(&m);
    img_entries(&m, 3);
    for (unsigned i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        for (unsigned slot = 1; slot <= 2; slot++) {
            char path[64];
            snprintf(path, sizeof path, "%s/metadata%u", ST_DIR, slot);
            /* One never written, the other valid. */
            img_write(f, &m);
            assert_int_equal(fs_fault_write(f->ff, path, zeros, sizes[i]), 0);
            assert_int_equal(rfx_open(f), 0);
            assert_false(f->rec.fresh);
            assert_names(f->rec.warning, path, UINT64_MAX);
            assert_state(f, &m.st);
            rfx_close(f);
        }
        /* Both never written, with a log. */
        img_write(f, &m);
        assert_int_equal(
            fs_fault_write(f->ff, ST_DIR "/metadata1", zeros, sizes[i]), 0);
        assert_int_equal(fs_fault_write(f->ff, ST_DIR "/metadata2", zeros,
                                        sizes[(i + 1) % 4]),
                         0);
        assert_refused(f, ST_DIR, UINT64_MAX);
        /* Both never written, and a snapshot only. */
        for (unsigned k = 0; k < m.n; k++) {
            char path[64];
            st_seg_path(path, sizeof path, k + 1);
            assert_int_equal(fs_fault_remove(f->ff, path), 0);
        }
        assert_int_equal(st_write_snapshot(f->fs, ST_DIR, 9, 1, 2), 0);
        assert_refused(f, ST_DIR, UINT64_MAX);
        /* Both never written, nothing else: fresh. */
        rfx_new_fs(f);
        assert_int_equal(f->fs->mkdir(f->fs->data, ST_DIR), 0);
        assert_int_equal(
            fs_fault_write(f->ff, ST_DIR "/metadata1", zeros, sizes[i]), 0);
        assert_int_equal(fs_fault_write(f->ff, ST_DIR "/metadata2", zeros,
                                        sizes[(i + 3) % 4]),
                         0);
        assert_int_equal(rfx_open(f), 0);
        assert_true(f->rec.fresh);
        assert_int_equal(f->rec.n, 0);
        rfx_fill(f, 3, 1);
        rfx_close(f);
        fs_fault_crash(f->ff);
        assert_int_equal(rfx_open(f), 0);
        assert_false(f->rec.fresh);
        rfx_check(f, 1);
        rfx_close(f);
    }
}

/* Submits entry 11 (term 1) whose payload starts with a whole, valid
 * batch (header and a body holding a commit record), as an entry carrying
 * a copy of log bytes would; returns the entry's position (the last record
 * on the disk, alone in the last batch). */
static struct st_rec write_entry_with_batch_payload(struct rfx *f,
                                                    uint8_t *payload,
                                                    size_t len)
{
    struct st_rec recs[256];
    struct st_upd b;
    unsigned n;
    assert_true(len >= 160);
    assert_int_equal(rfx_open(f), 0);
    rfx_fill(f, 10, 1);
    memset(payload, 0x5a, len);
    (void)cr__rec_encode(payload + CR__REC_HEADER, CR__REC_COMMIT, 0, 3, 0,
                         NULL, 0);
    (void)cr__batch_encode(payload, payload + CR__REC_HEADER, CR__REC_HEADER);
    assert_true(cr__batch_valid(payload, 2 * CR__REC_HEADER));
    st_upd_init(&b, ++f->seq);
    b.u.flags = CR_UPDATE_ENTRIES;
    b.u.entries_first = 11;
    b.u.n_entries = 1;
    b.u.entries = b.e;
    b.e[0].term = 1;
    b.e[0].type = CR_ENTRY_COMMAND;
    b.e[0].buf.base = payload;
    b.e[0].buf.len = len;
    b.u.persist_last_index = 11;
    assert_int_equal(st_submit_wait(f->s, &f->w, &b.u), 0);
    rfx_close(f);
    n = scan(f, recs, 256);
    assert_int_equal(recs[n - 1].index, 11);
    assert_int_equal(recs[n - 1].type, CR__REC_ENTRY);
    assert_int_equal(recs[n - 1].off, recs[n - 1].batch + CR__REC_HEADER);
    /* The embedded batch is where a search for batches would look. */
    assert_int_equal((recs[n - 1].off + CR__REC_HEADER) % 8, 0);
    return recs[n - 1];
}

/* A torn last batch whose only record's payload holds the bytes of a
 * whole, valid batch: a crash tore the write (the header and the start of
 * the payload made it to the disk, the end of the payload did not). The
 * search for a valid batch after the torn one skips the torn batch's
 * claimed body, so the embedded one is not taken for a later batch: the
 * tail is cut with a warning (not refused), and the entry goes. */
static void torn_batch_with_batch_shaped_payload(void **state)
{
    struct rfx *f = *state;
    uint8_t payload[200];
    struct st_rec e =
        write_entry_with_batch_payload(f, payload, sizeof payload);
    char path[64];
    st_seg_path(path, sizeof path, e.seg);
    zero_range(f, path, e.off + CR__REC_HEADER + 100, sizeof payload - 100);
    if (rfx_open(f) != 0) {
        fail_msg("a torn tail was refused: %s", f->errmsg);
    }
    assert_torn(f, path, e.batch);
    assert_int_equal(st_last_index(&f->rec), 10);
    rfx_close(f);
    assert_zeros_from(f, path, e.batch);
    assert_int_equal(rfx_open(f), 0);
    assert_false(f->rec.torn);
    assert_int_equal(st_last_index(&f->rec), 10);
}

/* The same torn batch, but the file ends inside its body (after the
 * embedded batch): a batch cut short whose header is intact, its claimed
 * body running past the end of the file. Nothing can follow it, so it is
 * a torn tail as well, and is cut.
 *
 * For a batch cut short, the search for a later valid batch starts after
 * its claimed body (past the end of the file), never inside it: the valid
 * batch inside the torn batch's own payload is not taken for a later
 * batch, and the torn tail is cut. */
static void torn_batch_cut_short_with_batch_shaped_payload(void **state)
{
    struct rfx *f = *state;
    uint8_t payload[200];
    struct st_rec e =
        write_entry_with_batch_payload(f, payload, sizeof payload);
    char path[64];
    st_seg_path(path, sizeof path, e.seg);
    assert_int_equal(
        fs_fault_truncate(f->ff, path, e.off + CR__REC_HEADER + 100), 0);
    if (rfx_open(f) != 0) {
        fail_msg("a torn tail was refused: %s", f->errmsg);
    }
    assert_torn(f, path, e.batch);
    assert_int_equal(st_last_index(&f->rec), 10);
    rfx_close(f);
    assert_zeros_from(f, path, e.batch);
    assert_int_equal(rfx_open(f), 0);
    assert_false(f->rec.torn);
    assert_int_equal(st_last_index(&f->rec), 10);
}

/* A torn last batch whose header did not reach the disk (zeros) while its
 * body did: the page cache writes back in any order. Recovery finds the
 * log ending where that batch starts, and writing goes on there: a small
 * batch, then one too big for the rest of the segment, which goes to a
 * new segment, so that the one holding what is left of the lost batch's
 * body is no longer the newest. A crash like this must never make the
 * directory refused later: the next open recovers everything written
 * after it.
 *
 * A zero batch header with non-zero bytes after it (the lost batch's
 * body) at the end of the newest segment is a torn tail: reported and
 * zeroed, so that the writer's next batches leave no leftovers behind
 * and the segment reopens clean after the writer has moved on (the crash
 * sweep in test_storage_crash, crash_torn_any_order, reaches this state
 * too). */
static void torn_batch_without_its_header(void **state)
{
    struct rfx *f = *state;
    struct img m;
    struct img_state st;
    struct st_upd b;
    uint8_t *big = malloc(3800);
    uint64_t lost;
    int rv;
    assert_non_null(big);
    img_init(&m);
    img_entries(&m, 4);
    (void)img_rec(&m, CR__REC_COMMIT);
    (void)img_batch(&m);
    img_segment(&m);
    img_entries(&m, 2);
    (void)img_batch(&m);
    st = m.st;
    img_entries(&m, 10);
    lost = img_batch(&m);
    assert_true(m.used[1] - lost > 1000);
    img_write(f, &m);
    zero_range(f, SEG2, lost, CR__REC_HEADER);
    assert_int_equal(rfx_open(f), 0);
    assert_state(f, &st);
    /* A small batch where the lost one started. */
    st_upd_init(&b, ++f->seq);
    st_upd_entries(&b, st.last + 1, 1, IMG_TERM);
    st_upd_hs(&b, 5, 1, st.commit);
    assert_int_equal(st_submit_wait(f->s, &f->w, &b.u), 0);
    st_upd_free(&b);
    st.last++;
    /* A big entry: it does not fit in what is left of the segment. */
    st_payload(big, 3800, st.last + 1, IMG_TERM);
    st_upd_init(&b, ++f->seq);
    b.u.flags = CR_UPDATE_ENTRIES;
    b.u.entries_first = st.last + 1;
    b.u.n_entries = 1;
    b.u.entries = b.e;
    b.e[0].term = IMG_TERM;
    b.e[0].type = CR_ENTRY_COMMAND;
    b.e[0].buf.base = big;
    b.e[0].buf.len = 3800;
    b.u.persist_last_index = st.last + 1;
    assert_int_equal(st_submit_wait(f->s, &f->w, &b.u), 0);
    assert_true(fs_fault_exists(f->ff, SEG3));
    rfx_close(f);
    rv = rfx_open(f);
    if (rv != 0) {
        free(big);
        fail_msg(
            "refused after a crash that lost a batch header and "
            "writes after it: %s",
            f->errmsg);
    }
    assert_false(f->rec.torn);
    assert_int_equal(f->rec.hs.commit, st.commit);
    assert_int_equal(st_last_index(&f->rec), st.last + 1);
    for (cr_index i = 1; i <= st.last; i++) {
        assert_true(st_entry_ok(&f->rec, i, IMG_TERM));
    }
    assert_int_equal(f->rec.entries[f->rec.n - 1].buf.len, 3800);
    assert_memory_equal(f->rec.entries[f->rec.n - 1].buf.base, big, 3800);
    free(big);
}

/* ---------------------------------------------------------------------------
 * Locks, clusters, inspection
 * ------------------------------------------------------------------------- */

static void remove_tree(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    assert_non_null(d);
    while ((e = readdir(d)) != NULL) {
        char path[CR_PATH_MAX];
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) {
            continue;
        }
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        assert_int_equal(unlink(path), 0);
    }
    closedir(d);
    assert_int_equal(rmdir(dir), 0);
}

/* A second open of a directory that is open fails with CR_EBUSY, on the
 * real file system (flock) and on the fault one; after the first closes,
 * it opens. */
static void second_open_is_busy(void **state)
{
    struct rfx *f = *state;
    char dir[] = "/tmp/craft-busy-XXXXXX";
    struct cr_storage *a, *b;
    struct cr_recovery ra, rb;
    struct cr_storage_options o;
    char errmsg[CR_ERRMSG_SIZE];
    struct st_upd u;
    assert_non_null(mkdtemp(dir));
    cr_storage_options_default(&o);
    o.segment_size = ST_SEGMENT;
    assert_int_equal(cr_storage_open(&a, dir, &o, NULL, NULL, st_on_done, &f->w,
                                     &ra, errmsg),
                     0);
    assert_true(ra.fresh);
    errmsg[0] = '\0';
    assert_int_equal(cr_storage_open(&b, dir, &o, NULL, NULL, st_on_done, &f->w,
                                     &rb, errmsg),
                     CR_EBUSY);
    assert_true(st_contains(errmsg, dir));
    /* The first one is unharmed. */
    st_upd_init(&u, ++f->seq);
    st_upd_entries(&u, 1, 3, 1);
    st_upd_hs(&u, 1, 1, 2);
    assert_int_equal(st_submit_wait(a, &f->w, &u.u), 0);
    st_upd_free(&u);
    assert_int_equal(cr_storage_close(a), 0);
    cr_recovery_free(&ra, NULL);
    assert_int_equal(cr_storage_open(&b, dir, &o, &cr_fs_posix, NULL, NULL,
                                     NULL, &rb, errmsg),
                     0);
    assert_int_equal(rb.n, 3);
    assert_int_equal(rb.first, 1);
    assert_int_equal(rb.hs.commit, 2);
    assert_true(st_entry_ok(&rb, 3, 1));
    assert_int_equal(cr_storage_close(b), 0);
    cr_recovery_free(&rb, NULL);
    remove_tree(dir);

    /* The fault file system's lock behaves the same. */
    assert_int_equal(rfx_open(f), 0);
    assert_int_equal(st_open(&b, f->fs, &f->sa, &f->w, &rb, errmsg), CR_EBUSY);
    rfx_fill(f, 2, 1);
    rfx_close(f);
    assert_int_equal(rfx_open(f), 0);
    rfx_check(f, 1);
}

static int open_cluster(struct rfx *f, uint64_t cluster_id)
{
    struct cr_storage_options o;
    int rv;
    assert_null(f->s);
    drop_rec(f);
    cr_storage_options_default(&o);
    o.segment_size = ST_SEGMENT;
    o.cluster_id = cluster_id;
    f->errmsg[0] = '\0';
    rv = cr_storage_open(&f->s, ST_DIR, &o, f->fs, &f->sa.a, st_on_done, &f->w,
                         &f->rec, f->errmsg);
    f->has_rec = rv == 0;
    if (rv != 0) {
        f->s = NULL;
    }
    return rv;
}

/* A directory of another cluster is refused with CR_ECLUSTER; cluster id
 * 0 takes what the directory holds; a directory without one adopts the
 * first id it is opened with. */
static void other_cluster(void **state)
{
    struct rfx *f = *state;
    assert_int_equal(open_cluster(f, 42), 0);
    rfx_fill(f, 5, 1);
    rfx_close(f);
    assert_int_equal(open_cluster(f, 43), CR_ECLUSTER);
    assert_true(st_contains(f->errmsg, "42"));
    assert_true(st_contains(f->errmsg, "43"));
    assert_true(st_contains(f->errmsg, ST_DIR));
    assert_int_equal(open_cluster(f, 0), 0);
    assert_int_equal(f->rec.cluster_id, 42);
    rfx_check(f, 1);
    rfx_close(f);

    rfx_new_fs(f);
    assert_int_equal(open_cluster(f, 0), 0);
    assert_true(f->rec.fresh);
    rfx_fill(f, 3, 1);
    rfx_close(f);
    assert_int_equal(open_cluster(f, 7), 0);
    assert_int_equal(f->rec.cluster_id, 7);
    rfx_check(f, 1);
    rfx_close(f);
    fs_fault_crash(f->ff);
    assert_int_equal(open_cluster(f, 8), CR_ECLUSTER);
    assert_int_equal(open_cluster(f, 7), 0);
    rfx_check(f, 1);
}

struct lines
{
    char text[256][160];
    unsigned n;
};

static void on_line(void *data, const char *text)
{
    struct lines *l = data;
    if (l->n < 256) {
        snprintf(l->text[l->n], sizeof l->text[0], "%s", text);
    }
    l->n++;
}

static unsigned lines_with(const struct lines *l, const char *needle)
{
    unsigned n = 0;
    for (unsigned i = 0; i < l->n && i < 256; i++) {
        n += st_contains(l->text[i], needle);
    }
    return n;
}

/* cr_storage_inspect lists files and records, reports a torn tail without
 * cutting it (nothing on the disk changes), and refuses damage as
 * recovery would. The read_only option of cr_storage_open cuts nothing
 * either. */
static void inspect_reads_only(void **state)
{
    struct rfx *f = *state;
    struct cr_recovery rec;
    struct lines *l = calloc(1, sizeof *l);
    char errmsg[CR_ERRMSG_SIZE];
    struct img m;
    uint8_t *before, *after;
    size_t len_before, len_after;
    uint64_t last_off;
    assert_non_null(l);
    img_init(&m);
    img_entries(&m, 5);
    (void)img_rec(&m, CR__REC_COMMIT);
    img_segment(&m);
    img_entries(&m, 4);
    (void)img_rec(&m, CR__REC_TRUNCATE);
    last_off = img_rec(&m, CR__REC_ENTRY);
    img_write(f, &m);

    assert_int_equal(
        cr_storage_inspect(ST_DIR, f->fs, on_line, l, &rec, errmsg), 0);
    assert_false(rec.torn);
    assert_int_equal(rec.n, 9);
    assert_int_equal(rec.hs.term, 5);
    assert_int_equal(lines_with(l, " entry index="), 10);
    assert_int_equal(lines_with(l, " commit index=5"), 1);
    assert_int_equal(lines_with(l, " truncate from=9"), 1);
    assert_int_equal(lines_with(l, "metadata1"), 1);
    assert_int_equal(lines_with(l, "metadata2"), 1);
    assert_int_equal(lines_with(l, "segment seq=1"), 1);
    assert_int_equal(lines_with(l, "segment seq=2"), 1);
    assert_int_equal(lines_with(l, " batch bytes="), 2);
    cr_recovery_free(&rec, NULL);

    /* Torn (the last record of the last batch): reported, the 5 records
     * before it in its batch kept, nothing cut. */
    assert_int_equal(fs_fault_flip(f->ff, SEG2, last_off + 20, 0x08), 0);
    assert_int_equal(fs_fault_read(f->ff, SEG2, &before, &len_before), 0);
    memset(l, 0, sizeof *l);
    assert_int_equal(
        cr_storage_inspect(ST_DIR, f->fs, on_line, l, &rec, errmsg), 0);
    assert_true(rec.torn);
    assert_names(rec.warning, SEG2, last_off);
    assert_int_equal(rec.n, 8);
    assert_int_equal(lines_with(l, "torn"), 1);
    cr_recovery_free(&rec, NULL);
    /* The same through a read-only open. */
    {
        struct cr_storage_options o;
        cr_storage_options_default(&o);
        o.read_only = true;
        assert_int_equal(cr_storage_open(&f->s, ST_DIR, &o, f->fs, &f->sa.a,
                                         NULL, NULL, &f->rec, errmsg),
                         0);
        f->has_rec = true;
        assert_true(f->rec.torn);
        assert_int_equal(f->rec.n, 8);
        rfx_close(f);
    }
    assert_int_equal(fs_fault_read(f->ff, SEG2, &after, &len_after), 0);
    assert_int_equal(len_after, len_before);
    assert_memory_equal(after, before, len_before);
    free(before);
    free(after);

    /* Damage (the header of the first batch of the older segment):
     * CR_ECORRUPT and the message. */
    assert_int_equal(fs_fault_flip(f->ff, SEG1, CR__SEG_HEADER + 3, 0x01), 0);
    assert_int_equal(
        cr_storage_inspect(ST_DIR, f->fs, on_line, l, &rec, errmsg),
        CR_ECORRUPT);
    assert_names(errmsg, SEG1, CR__SEG_HEADER);
    /* A directory that does not exist. */
    assert_int_equal(
        cr_storage_inspect("nowhere", f->fs, on_line, l, &rec, errmsg), CR_EIO);
    assert_true(st_contains(errmsg, "nowhere"));
    free(l);
}

int main(int argc, char **argv)
{
    if (argc > 1) {
        cmocka_set_test_filter(argv[1]);
    }
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(fresh_directory),
        T(round_trip_across_segments),
        T(group_commit),
        T(overwrite_and_truncate),
        T(snapshot_install),
        T(compaction),
        T(truncate_at_record_boundaries),
        T(truncate_every_offset_of_last_record),
        T(torn_write_every_offset_of_last_record),
        T(truncate_in_padding_of_last_record),
        T(intact_images_recover),
        T(flip_in_tail_is_torn),
        T(flip_elsewhere_is_refused),
        T(damaged_batch_followed_by_valid_batch),
        T(torn_last_batch_with_hole),
        T(valid_batch_with_bad_record_is_refused),
        T(record_outside_a_batch),
        T(segment_header_damage),
        T(flip_in_zero_tail),
        T(partial_header_at_end_of_segment),
        T(missing_segment),
        T(index_gap),
        T(reset_without_snapshot),
        T(bad_snapshot),
        T(metadata_damage),
        T(metadata_never_written),
        T(torn_batch_with_batch_shaped_payload),
        T(torn_batch_cut_short_with_batch_shaped_payload),
        T(torn_batch_without_its_header),
        T(old_format_segment_is_not_cut),
        T(second_open_is_busy),
        T(other_cluster),
        T(inspect_reads_only),
        T(reopen_before_any_write),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
