/* Recovery of a data directory (src/storage/recovery.c, storage.c):
 * open/submit/close/reopen round trips, snapshot installs and compaction,
 * the log cut at every byte of its last record, flipped bits in every kind
 * of record and file, and what cr_storage_open says about each: a torn
 * tail of the newest segment is cut with a warning naming the file and
 * offset; any other damage is refused with CR_ECORRUPT and a message
 * naming the file, the offset and what to do (storage.h). Also CR_EBUSY,
 * CR_ECLUSTER, read-only inspection. */
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

struct rpos
{
    uint64_t seg;
    uint64_t off;
    size_t size;
    enum cr__rec_type type;
    cr_index index;
    uint32_t len;
};

/* The records of every segment, in order. */
static unsigned scan(struct rfx *f, struct rpos *out, unsigned max)
{
    unsigned n = 0;
    for (uint64_t seq = 1; seq < 256; seq++) {
        char path[64];
        uint8_t *buf;
        size_t len;
        uint64_t off = CR__SEG_HEADER;
        st_seg_path(path, sizeof path, seq);
        if (fs_fault_read(f->ff, path, &buf, &len) != 0) {
            continue;
        }
        for (;;) {
            struct cr__rec r;
            const char *why;
            if (off >= len ||
                cr__rec_decode(buf + off, len - off, &r, &why) != CR__REC_OK) {
                break;
            }
            assert_true(n < max);
            out[n].seg = seq;
            out[n].off = off;
            out[n].size = cr__rec_size(r.len);
            out[n].type = r.type;
            out[n].index = r.index;
            out[n].len = r.len;
            n++;
            off += cr__rec_size(r.len);
        }
        free(buf);
    }
    return n;
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
 * offset, and says what to do. */
static void assert_names(const char *msg, const char *path, uint64_t off)
{
    char where[64];
    if (!st_contains(msg, path)) {
        fail_msg("\"%s\" does not name %s", msg, path);
    }
    if (off != UINT64_MAX) {
        snprintf(where, sizeof where, "offset %" PRIu64, off);
        if (!st_contains(msg, where)) {
            fail_msg("\"%s\" does not name the %s", msg, where);
        }
    }
}

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

/* BUG? Reopening a directory that holds metadata but no segment yet (a
 * node restarted before its first write) calls qsort(NULL, 0, ...) in
 * cr__recover (recovery.c, "qsort(l.segs, l.n_segs, ...)" with no
 * segments listed): undefined behaviour, which the -DCR_SANITIZE=
 * address,undefined build turns into an abort. Kept near the end: under
 * that build the report ends the program. */
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
    struct rpos recs[1024];
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

/* A log whose last record is an entry of `len` bytes (with padding if
 * len % 8 != 0), in the second segment or later; returns its position. */
static struct rpos write_log_ending_with_entry(struct rfx *f)
{
    struct rpos recs[256];
    unsigned n;
    assert_int_equal(rfx_open(f), 0);
    rfx_fill(f, 40, 1);
    f->commit_before = f->commit;
    /* An entry with a payload that needs padding. */
    for (cr_term t = 2;; t++) {
        size_t len = st_payload_len(41, t);
        if (len % 8 != 0 && len > 40 &&
            st_entry_type(41, t) == CR_ENTRY_COMMAND) {
            rfx_append(f, 41, 1, t, 40);
            break;
        }
    }
    rfx_close(f);
    n = scan(f, recs, 256);
    assert_true(n > 0);
    assert_true(recs[n - 1].seg >= 2);
    /* The commit record comes after the entry in the same update. */
    assert_int_equal(recs[n - 1].type, CR__REC_COMMIT);
    assert_int_equal(recs[n - 2].type, CR__REC_ENTRY);
    return recs[n - 1];
}

/* Cut at every record boundary of the last segment: recovery yields
 * exactly the records before the cut, and nothing is torn. */
static void truncate_at_record_boundaries(void **state)
{
    struct rfx *f = *state;
    struct rpos recs[256];
    char path[64];
    uint8_t *orig;
    size_t len;
    unsigned n;
    cr_index last = 0;
    (void)write_log_ending_with_entry(f);
    n = scan(f, recs, 256);
    st_seg_path(path, sizeof path, recs[n - 1].seg);
    assert_int_equal(fs_fault_read(f->ff, path, &orig, &len), 0);
    for (unsigned i = 0; i < n; i++) {
        if (recs[i].seg != recs[n - 1].seg) {
            continue;
        }
        /* Cut right before record i: the file ends there. */
        assert_int_equal(fs_fault_write(f->ff, path, orig, recs[i].off), 0);
        assert_int_equal(rfx_open(f), 0);
        assert_false(f->rec.torn);
        last = 0;
        for (unsigned j = 0; j < i; j++) {
            if (recs[j].type == CR__REC_ENTRY) {
                last = recs[j].index;
            }
        }
        assert_int_equal(st_last_index(&f->rec), last);
        for (cr_index k = 1; k <= last; k++) {
            assert_true(st_entry_ok(&f->rec, k, f->terms[k]));
        }
        rfx_close(f);
    }
    /* The whole file: everything. */
    assert_int_equal(fs_fault_write(f->ff, path, orig, len), 0);
    assert_int_equal(rfx_open(f), 0);
    rfx_check(f, 1);
    free(orig);
}

/* Cut at every byte of the last entry record (header and payload; the
 * file ends at the cut): recovery yields exactly the records before it,
 * and says a torn tail was cut whenever part of the record was there.
 * (A cut after the payload, in its padding, is the last test; a cut at the
 * record's end is truncate_at_record_boundaries.)
 *
 * BUG? When fewer than 32 bytes of the record (a partial header) are left,
 * recovery takes them for the end of the log: rec.torn stays false and no
 * warning is given, although storage.h says a partial record is cut off
 * with a warning (recovery.c: cr__rec_decode's "no room for a record
 * header" is CR__REC_END, and replay_segment cuts only CR__REC_BAD). */
static void truncate_every_offset_of_last_record(void **state)
{
    struct rfx *f = *state;
    struct rpos recs[256];
    struct rpos e;
    char path[64];
    char bad[CR_ERRMSG_SIZE] = "";
    uint8_t *orig;
    size_t len;
    unsigned n, n_bad = 0;
    (void)write_log_ending_with_entry(f);
    n = scan(f, recs, 256);
    e = recs[n - 2]; /* the entry; the commit after it goes too */
    st_seg_path(path, sizeof path, e.seg);
    assert_int_equal(fs_fault_read(f->ff, path, &orig, &len), 0);
    for (uint64_t cut = e.off + 1; cut < e.off + CR__REC_HEADER + e.len;
         cut++) {
        assert_int_equal(fs_fault_write(f->ff, path, orig, (size_t)cut), 0);
        assert_int_equal(rfx_open(f), 0);
        /* The records before the cut, exactly. */
        assert_int_equal(st_last_index(&f->rec), 40);
        assert_int_equal(f->rec.first, 1);
        assert_int_equal(f->rec.hs.commit, f->commit_before);
        for (cr_index k = 1; k <= 40; k++) {
            assert_true(st_entry_ok(&f->rec, k, f->terms[k]));
        }
        if (!f->rec.torn) {
            if (n_bad++ < 40) {
                snprintf(bad + strlen(bad), sizeof bad - strlen(bad),
                         " %" PRIu64, cut - e.off);
            }
            rfx_close(f);
            continue;
        }
        assert_names(f->rec.warning, path, e.off);
        rfx_close(f);
        /* Cut once, the log reopens clean. */
        assert_int_equal(rfx_open(f), 0);
        assert_false(f->rec.torn);
        assert_int_equal(st_last_index(&f->rec), 40);
        rfx_close(f);
    }
    free(orig);
    if (n_bad > 0) {
        fail_msg(
            "no torn tail reported for %u cuts (bytes of the record "
            "left:%s)",
            n_bad, bad);
    }
}

/* A torn write in a preallocated segment: the record's first bytes made
 * it, the rest of the file is zeros. At every byte of the last entry the
 * records before it come back, the tail is cut (zeroed) with a warning
 * naming the file and offset, and writing goes on after it. */
static void torn_write_every_offset_of_last_record(void **state)
{
    struct rfx *f = *state;
    struct rpos recs[256];
    struct rpos e;
    struct st_saved sv;
    char path[64];
    uint8_t *orig, *copy;
    size_t len;
    unsigned n;
    cr_term t41, term;
    cr_index commit;
    (void)write_log_ending_with_entry(f);
    t41 = f->terms[41];
    term = f->term;
    commit = f->commit;
    n = scan(f, recs, 256);
    e = recs[n - 2];
    st_seg_path(path, sizeof path, e.seg);
    st_save(f->ff, &sv);
    assert_int_equal(fs_fault_read(f->ff, path, &orig, &len), 0);
    copy = malloc(len);
    assert_non_null(copy);
    for (uint64_t cut = e.off; cut <= e.off + e.size; cut++) {
        bool complete = cut >= e.off + CR__REC_HEADER + e.len;
        bool nonzero = false;
        uint8_t *back;
        size_t back_len;
        restore_files(f, &sv);
        memcpy(copy, orig, len);
        memset(copy + cut, 0, len - cut);
        for (uint64_t k = e.off; k < cut; k++) {
            nonzero = nonzero || copy[k] != 0;
        }
        assert_int_equal(fs_fault_write(f->ff, path, copy, len), 0);
        /* The model: the entry if complete; the commit after it is gone
         * in any case; term and vote were written after both. */
        f->last = complete ? 41 : 40;
        f->terms[41] = t41;
        f->commit = f->commit_before;
        f->term = term;
        assert_int_equal(rfx_open(f), 0);
        rfx_check(f, 1);
        if (f->rec.torn != (!complete && nonzero)) {
            fail_msg("cut at +%" PRIu64 ": torn %d", cut - e.off, f->rec.torn);
        }
        if (f->rec.torn) {
            assert_names(f->rec.warning, path, e.off);
        }
        rfx_close(f);
        /* The cut zeroed what was torn. */
        assert_int_equal(fs_fault_read(f->ff, path, &back, &back_len), 0);
        assert_int_equal(back_len, len);
        for (uint64_t k = complete ? e.off + e.size : e.off; k < len; k++) {
            if (back[k] != 0) {
                fail_msg("cut at +%" PRIu64 ": byte %" PRIu64 " not zeroed",
                         cut - e.off, k);
            }
        }
        free(back);
        /* Write one more entry where the tail was, and read it back. */
        assert_int_equal(rfx_open(f), 0);
        assert_false(f->rec.torn);
        rfx_append(f, f->last + 1, 1, 9, f->commit);
        rfx_reopen(f);
        assert_false(f->rec.torn);
        rfx_check(f, 1);
        rfx_close(f);
    }
    (void)commit;
    free(copy);
    free(orig);
    st_saved_free(&sv);
}

/* BUG? A segment that ends inside the zero padding of its last record
 * (after the payload, before the next multiple of 8) makes recovery read
 * past the end of its buffer: replay_segment advances `off` by the padded
 * size beyond `size` and passes size - off (wrapped around) to
 * cr__rec_decode as the room left. Under AddressSanitizer this is a
 * heap-buffer-overflow; without it the outcome depends on the heap. The
 * expected outcome: the complete record is recovered and nothing is torn.
 * Kept last: under sanitizers the report ends the program. */
static void truncate_in_padding_of_last_record(void **state)
{
    struct rfx *f = *state;
    struct rpos recs[256];
    struct rpos e;
    char path[64];
    uint8_t *orig;
    size_t len;
    unsigned n;
    (void)write_log_ending_with_entry(f);
    n = scan(f, recs, 256);
    e = recs[n - 2];
    assert_true(e.size > CR__REC_HEADER + e.len);
    st_seg_path(path, sizeof path, e.seg);
    assert_int_equal(fs_fault_read(f->ff, path, &orig, &len), 0);
    for (uint64_t cut = e.off + CR__REC_HEADER + e.len; cut < e.off + e.size;
         cut++) {
        assert_int_equal(fs_fault_write(f->ff, path, orig, (size_t)cut), 0);
        assert_int_equal(rfx_open(f), 0);
        assert_int_equal(st_last_index(&f->rec), 41);
        assert_true(st_entry_ok(&f->rec, 41, f->terms[41]));
        assert_false(f->rec.torn);
        rfx_close(f);
    }
    free(orig);
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

struct img
{
    uint8_t seg[IMG_SEGS][ST_SEGMENT];
    size_t used[IMG_SEGS];
    unsigned n;
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

static void img_segment(struct img *m)
{
    assert_true(m->n < IMG_SEGS);
    cr__seg_header_encode(m->seg[m->n], m->n + 1);
    m->used[m->n] = CR__SEG_HEADER;
    m->n++;
}

/* Appends the next record of type t to the last segment; returns its
 * offset. Entries continue the log; a commit commits it all; a truncate
 * drops its last entry; a reset installs a snapshot 10 entries ahead. */
static uint64_t img_rec(struct img *m, enum cr__rec_type t)
{
    uint8_t payload[512];
    uint8_t *seg = m->seg[m->n - 1];
    uint64_t off = m->used[m->n - 1];
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
    }
    assert_true(off + cr__rec_size(len) <= ST_SEGMENT);
    m->used[m->n - 1] +=
        cr__rec_encode(seg + off, t, et, index,
                       t == CR__REC_ENTRY || t == CR__REC_RESET ? IMG_TERM : 0,
                       payload, (uint32_t)len);
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

static uint64_t rng_next(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static const enum cr__rec_type all_types[] = {CR__REC_ENTRY, CR__REC_COMMIT,
                                              CR__REC_TRUNCATE, CR__REC_RESET};
static const char *const type_names[] = {"", "entry", "commit", "truncate",
                                         "reset"};

/* Where the damaged record sits. */
enum where {
    LAST_OF_LAST,     /* the tail of the newest segment */
    FOLLOWED_IN_LAST, /* valid records follow it in the newest segment */
    LAST_OF_CLOSED,   /* the end of a segment that is not the newest */
    FOLLOWED_IN_CLOSED,
};

/* An image with a record of type t at `where`; *off and *seg say where,
 * *before is the state before it. */
static void img_with(struct img *m,
                     enum cr__rec_type t,
                     enum where where,
                     uint64_t *off,
                     unsigned *seg,
                     struct img_state *before)
{
    img_init(m);
    img_entries(m, 4);
    (void)img_rec(m, CR__REC_COMMIT);
    if (where == LAST_OF_LAST || where == FOLLOWED_IN_LAST) {
        img_segment(m);
        img_entries(m, 3);
    }
    *before = m->st;
    *seg = m->n;
    *off = img_rec(m, t);
    if (where == FOLLOWED_IN_LAST || where == FOLLOWED_IN_CLOSED) {
        img_entries(m, 2);
    }
    if (where == LAST_OF_CLOSED || where == FOLLOWED_IN_CLOSED) {
        img_segment(m);
        img_entries(m, 2);
    }
}

/* Bits flipped at random offsets of the last record of the newest
 * segment, of every type: the record is cut as a torn tail (rec.torn, a
 * warning naming the file and offset), the state before it comes back,
 * the tail is zeroed, and the log takes new writes. */
static void flip_in_tail_is_torn(void **state)
{
    struct rfx *f = *state;
    uint64_t rng = 1;
    for (unsigned ti = 0; ti < 4; ti++) {
        for (unsigned round = 0; round < 12; round++) {
            enum cr__rec_type t = all_types[ti];
            struct img m;
            struct img_state before;
            uint64_t off, at;
            unsigned seg;
            char path[64];
            uint8_t *back;
            size_t len;
            img_with(&m, t, LAST_OF_LAST, &off, &seg, &before);
            img_write(f, &m);
            st_seg_path(path, sizeof path, seg);
            /* Somewhere in what its CRC covers (padding: see
             * test_storage_format's record_padding_flip_detected). */
            at = off + rng_next(&rng) % (CR__REC_HEADER +
                                         cr__get32(m.seg[seg - 1] + off + 4));
            assert_int_equal(
                fs_fault_flip(f->ff, path, at,
                              (uint8_t)(1u << (rng_next(&rng) % 8))),
                0);
            assert_int_equal(rfx_open(f), 0);
            if (!f->rec.torn) {
                fail_msg("%s record: flip at +%" PRIu64 " not seen",
                         type_names[t], at - off);
            }
            assert_names(f->rec.warning, path, off);
            assert_state(f, &before);
            rfx_close(f);
            assert_int_equal(fs_fault_read(f->ff, path, &back, &len), 0);
            for (uint64_t k = off; k < len; k++) {
                assert_int_equal(back[k], 0);
            }
            free(back);
            /* Cut once: clean from now on. */
            assert_int_equal(rfx_open(f), 0);
            assert_false(f->rec.torn);
            assert_state(f, &before);
            rfx_close(f);
        }
    }
}

/* Bits flipped in a record of every type that valid records follow, or
 * in a segment that is not the newest: refused, naming file and offset. */
static void flip_elsewhere_is_refused(void **state)
{
    static const enum where wheres[] = {FOLLOWED_IN_LAST, LAST_OF_CLOSED,
                                        FOLLOWED_IN_CLOSED};
    struct rfx *f = *state;
    uint64_t rng = 2;
    for (unsigned wi = 0; wi < 3; wi++) {
        for (unsigned ti = 0; ti < 4; ti++) {
            for (unsigned round = 0; round < 6; round++) {
                enum cr__rec_type t = all_types[ti];
                struct img m;
                struct img_state before;
                uint64_t off, at;
                unsigned seg;
                char path[64];
                uint8_t *rec_start;
                uint32_t covered;
                img_with(&m, t, wheres[wi], &off, &seg, &before);
                img_write(f, &m);
                /* Somewhere in what its CRC covers. */
                rec_start = m.seg[seg - 1] + off;
                covered = CR__REC_HEADER + cr__get32(rec_start + 4);
                at = off + rng_next(&rng) % covered;
                st_seg_path(path, sizeof path, seg);
                assert_int_equal(
                    fs_fault_flip(f->ff, path, at,
                                  (uint8_t)(1u << (rng_next(&rng) % 8))),
                    0);
                assert_refused(f, path, off);
            }
        }
    }
}

/* The intact images of the tests above recover completely (so that what
 * the refusals and cuts see is the flip and nothing else). */
static void intact_images_recover(void **state)
{
    struct rfx *f = *state;
    for (unsigned wi = 0; wi < 4; wi++) {
        for (unsigned ti = 0; ti < 4; ti++) {
            struct img m;
            struct img_state before;
            uint64_t off;
            unsigned seg;
            img_with(&m, all_types[ti], (enum where)wi, &off, &seg, &before);
            img_write(f, &m);
            assert_int_equal(rfx_open(f), 0);
            assert_false(f->rec.torn);
            assert_state(f, &m.st);
            if (m.reset_at != 0) {
                assert_true(f->rec.has_snapshot);
                assert_int_equal(f->rec.snapshot.index, m.reset_at);
            }
            rfx_close(f);
        }
    }
}

/* Segment headers: a flip in the header of a segment with records, newest
 * or not, is refused at offset 0; a newest segment holding nothing but a
 * bad header (a crash while it was created) is removed with a warning. */
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
        assert_int_equal(rfx_open(f), 0);
        assert_true(f->rec.torn);
        assert_names(f->rec.warning, SEG2, UINT64_MAX);
        assert_state(f, &before);
        assert_false(fs_fault_exists(f->ff, SEG2));
        /* The removal is durable. */
        rfx_close(f);
        fs_fault_crash(f->ff);
        assert_false(fs_fault_exists(f->ff, SEG2));
    }
}

/* Bytes flipped in the zeros after the last record: in the newest segment
 * a torn tail; in an older one, damage. */
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
    img_write(f, &m);
    assert_int_equal(fs_fault_flip(f->ff, SEG2, end + 5, 0x01), 0);
    assert_int_equal(rfx_open(f), 0);
    assert_true(f->rec.torn);
    assert_names(f->rec.warning, SEG2, end);
    assert_state(f, &st);
    rfx_close(f);
    img_write(f, &m);
    assert_int_equal(fs_fault_flip(f->ff, SEG1, m.used[0] + 8, 0x01), 0);
    assert_refused(f, SEG1, m.used[0]);
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

/* One metadata copy bad: the other is used, with a warning naming the bad
 * one. Both bad: refused, naming both. None, with a log: refused. */
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
        for (size_t b = 0; b < 48; b += 7) {
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

/* BUG? A torn tail whose payload happens to hold the bytes of a valid
 * record (an entry carrying, say, a copy of a log record) is refused as
 * damage in the middle of the log: valid_after() in recovery.c scans the
 * torn record's own payload and finds the embedded record. storage.h: a
 * partial record at the end of the newest segment is a torn tail, cut
 * with a warning; a plain crash must not stop the node from starting. */
static void torn_entry_with_record_shaped_payload(void **state)
{
    struct rfx *f = *state;
    struct rpos recs[256];
    struct st_upd b;
    uint8_t payload[96];
    char path[64];
    uint8_t *buf;
    size_t len;
    unsigned n;
    assert_int_equal(rfx_open(f), 0);
    rfx_fill(f, 10, 1);
    /* An entry whose payload starts with an encoded commit record. */
    memset(payload, 0x5a, sizeof payload);
    (void)cr__rec_encode(payload, CR__REC_COMMIT, 0, 3, 0, NULL, 0);
    st_upd_init(&b, ++f->seq);
    b.u.flags = CR_UPDATE_ENTRIES;
    b.u.entries_first = 11;
    b.u.n_entries = 1;
    b.u.entries = b.e;
    b.e[0].term = 1;
    b.e[0].type = CR_ENTRY_COMMAND;
    b.e[0].buf.base = payload;
    b.e[0].buf.len = sizeof payload;
    b.u.persist_last_index = 11;
    assert_int_equal(st_submit_wait(f->s, &f->w, &b.u), 0);
    rfx_close(f);
    n = scan(f, recs, 256);
    assert_int_equal(recs[n - 1].index, 11);
    assert_int_equal(recs[n - 1].type, CR__REC_ENTRY);
    /* A crash tore the write: the header and the start of the payload
     * made it to the disk, the end of the payload did not. */
    st_seg_path(path, sizeof path, recs[n - 1].seg);
    assert_int_equal(fs_fault_read(f->ff, path, &buf, &len), 0);
    memset(buf + recs[n - 1].off + CR__REC_HEADER + 40, 0, sizeof payload - 40);
    assert_int_equal(fs_fault_write(f->ff, path, buf, len), 0);
    free(buf);
    if (rfx_open(f) != 0) {
        fail_msg("a torn tail was refused: %s", f->errmsg);
    }
    assert_true(f->rec.torn);
    assert_int_equal(st_last_index(&f->rec), 10);
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
    cr_recovery_free(&rec, NULL);

    /* Torn: reported, not cut. */
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

    /* Damage: CR_ECORRUPT and the message, nothing listed past it. */
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
        T(intact_images_recover),
        T(flip_in_tail_is_torn),
        T(flip_elsewhere_is_refused),
        T(segment_header_damage),
        T(flip_in_zero_tail),
        T(missing_segment),
        T(index_gap),
        T(reset_without_snapshot),
        T(bad_snapshot),
        T(metadata_damage),
        T(torn_entry_with_record_shaped_payload),
        T(second_open_is_busy),
        T(other_cluster),
        T(inspect_reads_only),
        /* Last: under sanitizers the bugs they show end the program. */
        T(reopen_before_any_write),
        T(truncate_in_padding_of_last_record),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
