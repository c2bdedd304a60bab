/* Crashes, full disks and failed syncs, on the fault file system
 * (fs_fault.h).
 *
 * The crash sweep runs one workload (appends over several segments, term
 * and vote changes, tail overwrites, a truncation, a local snapshot with
 * compaction, a snapshot install, grouped submissions) and crashes the file
 * system at its k-th operation, for every k. After each crash a reopen
 * must succeed and hold a state the workload passed through at or after
 * the last update the done callback reported durable: no acknowledged
 * entry, commit index, term or vote is lost, and nothing appears that was
 * never written. Writing then goes on from what was recovered until the
 * writer moves on to a new segment, and a crash and reopen find all of it
 * after what was recovered. The sweep
 * runs with unsynced writes all lost, with an ordered prefix of them kept
 * (the last possibly cut short), with a random subset kept, and with
 * directory changes kept in part. */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fs_fault.h"
#include "storage_fixture.h"
#include "storage_impl.h"

#define W_MAX_STEPS 128
#define W_MAX_RECS 512
#define W_MAX_INDEX 1024
/* The term of the entries written after a recovery. */
#define AFTER_TERM 100
/* How long a run of the sweep waits for an update after a crash: much
 * more than the failure takes to be reported, short enough that a sweep
 * with many hangs ends. */
#define SWEEP_WAIT_MS 500

/* ---------------------------------------------------------------------------
 * The workload and its model
 * ------------------------------------------------------------------------- */

/* One record the storage should write, as the model sees it. */
struct mrec
{
    enum cr__rec_type type;
    cr_index index;
    cr_term term;
};

enum wkind { W_UPDATE = 1, W_SNAPSHOT, W_COMPACT };

struct wstep
{
    enum wkind kind;
    /* W_UPDATE */
    uint64_t seq;
    bool wait; /* wait until durable before the next step */
    bool entries;
    cr_index entries_first;
    unsigned n_entries;
    cr_term entries_term;
    bool install;
    cr_term term; /* the hard state as of this update */
    cr_id vote;
    cr_index commit;
    unsigned rec_end; /* records of the workload up to this update */
    /* W_SNAPSHOT (a snapshot file) and W_COMPACT */
    cr_index index;
    cr_term snap_term;
};

struct workload
{
    struct wstep steps[W_MAX_STEPS];
    unsigned n_steps;
    struct mrec recs[W_MAX_RECS];
    unsigned n_recs;
    /* The builder's view. */
    cr_term log[W_MAX_INDEX];
    cr_index last, commit, sub_commit;
    cr_term term;
    cr_id vote;
    uint64_t seq;
};

/* The log as of some record of the workload. */
struct mstate
{
    cr_index base, last, commit;
    cr_term log[W_MAX_INDEX];
};

static void mstate_apply(struct mstate *m, const struct mrec *r)
{
    switch (r->type) {
        case CR__REC_ENTRY:
            m->log[r->index] = r->term;
            m->last = r->index;
            break;
        case CR__REC_COMMIT:
            if (r->index > m->commit) {
                m->commit = r->index;
            }
            break;
        case CR__REC_TRUNCATE:
            if (m->last >= r->index) {
                m->last = r->index - 1;
            }
            break;
        case CR__REC_RESET:
            m->base = m->last = r->index;
            break;
        case CR__REC_BATCH:
            fail_msg("the model holds records, not batch headers");
            break;
    }
}

static void wl_rec(struct workload *w,
                   enum cr__rec_type type,
                   cr_index index,
                   cr_term term)
{
    assert_true(w->n_recs < W_MAX_RECS);
    w->recs[w->n_recs].type = type;
    w->recs[w->n_recs].index = index;
    w->recs[w->n_recs].term = term;
    w->n_recs++;
}

static struct wstep *wl_step(struct workload *w, enum wkind kind)
{
    struct wstep *st;
    assert_true(w->n_steps < W_MAX_STEPS);
    st = &w->steps[w->n_steps++];
    memset(st, 0, sizeof *st);
    st->kind = kind;
    return st;
}

/* An update: optionally a snapshot install, entries (n 0 with `entries`:
 * a truncation), and the hard state. Its records are those that
 * cr_storage_submit writes, in its order: reset, entries or truncate,
 * commit (only when it changed). */
static void wl_update(struct workload *w,
                      bool install,
                      cr_index snap_index,
                      bool entries,
                      cr_index first,
                      unsigned n,
                      cr_term eterm,
                      cr_index commit,
                      bool wait)
{
    struct wstep *st = wl_step(w, W_UPDATE);
    st->seq = ++w->seq;
    st->wait = wait;
    st->install = install;
    st->index = snap_index;
    st->snap_term = w->term;
    st->entries = entries;
    st->entries_first = first;
    st->n_entries = n;
    st->entries_term = eterm;
    st->term = w->term;
    st->vote = w->vote;
    st->commit = commit;
    if (install) {
        wl_rec(w, CR__REC_RESET, snap_index, w->term);
        w->last = snap_index;
    }
    if (entries) {
        for (unsigned i = 0; i < n; i++) {
            wl_rec(w, CR__REC_ENTRY, first + i, eterm);
            w->log[first + i] = eterm;
        }
        if (n == 0 && !install) {
            wl_rec(w, CR__REC_TRUNCATE, first, 0);
        }
        w->last = first + n - 1;
    }
    if (commit != w->sub_commit) {
        wl_rec(w, CR__REC_COMMIT, commit, 0);
        w->sub_commit = commit;
        if (commit > w->commit) {
            w->commit = commit;
        }
    }
    st->rec_end = w->n_recs;
}

static void wl_append(struct workload *w, unsigned n, cr_index commit)
{
    wl_update(w, false, 0, true, w->last + 1, n, w->term, commit, true);
}

static void wl_hard_state(struct workload *w, cr_term term, cr_id vote)
{
    w->term = term;
    w->vote = vote;
    wl_update(w, false, 0, false, 0, 0, 0, w->commit, true);
}

static void wl_snapshot_file(struct workload *w, cr_index index, cr_term t)
{
    struct wstep *st = wl_step(w, W_SNAPSHOT);
    st->index = index;
    st->snap_term = t;
}

static void wl_compact(struct workload *w, cr_index upto)
{
    struct wstep *st = wl_step(w, W_COMPACT);
    st->index = upto;
}

/* The workload of the crash sweep. */
static void build_workload(struct workload *w)
{
    memset(w, 0, sizeof *w);
    wl_hard_state(w, 1, 1);
    for (unsigned i = 0; i < 8; i++) {
        wl_append(w, 1 + i % 4, w->last);
    }
    /* A new term and vote; the new leader replaces the tail. */
    wl_hard_state(w, 2, 2);
    wl_update(w, false, 0, true, w->last - 2, 4, 2, w->last - 4, true);
    /* A truncation. */
    wl_update(w, false, 0, true, w->last - 1, 0, 0, w->commit, true);
    for (unsigned i = 0; i < 6; i++) {
        wl_append(w, 1 + i % 3, w->last - 1);
    }
    /* A local snapshot, and compaction up to it. */
    wl_snapshot_file(w, w->commit, w->log[w->commit]);
    wl_compact(w, w->commit);
    for (unsigned i = 0; i < 4; i++) {
        wl_append(w, 2 + i % 3, w->last);
    }
    /* Three updates in flight at once. */
    for (unsigned i = 0; i < 3; i++) {
        wl_update(w, false, 0, true, w->last + 1, 2, w->term, w->last, i == 2);
    }
    /* A snapshot from a leader of term 3, installed with three entries
     * after it. */
    w->term = 3;
    w->vote = 3;
    wl_snapshot_file(w, w->last + 15, 3);
    wl_update(w, true, w->last + 15, true, w->last + 16, 3, 3, w->last + 15,
              true);
    for (unsigned i = 0; i < 6; i++) {
        wl_append(w, 1 + i % 4, w->last - 1);
    }
    /* Drops the segments before the install. */
    wl_compact(w, 0);
    for (unsigned i = 0; i < 3; i++) {
        wl_append(w, 3, w->last);
    }
    /* A term without a vote, then a vote in it. */
    wl_hard_state(w, 4, 0);
    wl_hard_state(w, 4, 2);
    wl_append(w, 2, w->last);
    wl_append(w, 1, w->last);
    assert_true(w->last < W_MAX_INDEX);
}

/* ---------------------------------------------------------------------------
 * Running it
 * ------------------------------------------------------------------------- */

struct run
{
    struct fs_fault *ff;
    const struct cr_fs *fs;
    struct st_alloc sa;
    struct st_waiter w;
    struct cr_storage *s;
    struct cr_recovery rec;
    char errmsg[CR_ERRMSG_SIZE];
    /* What the workload got to. */
    unsigned submitted;    /* steps carried out (submitted, written) */
    uint64_t last_seq;     /* highest seq submitted */
    cr_index snap_written; /* highest snapshot file written (0: none) */
    uint64_t hung_seq;     /* an update never reported */
    bool refused_after;    /* the reopen after write_after_recovery was */
};

static int run_open(struct run *r, const struct cr_storage_options *o)
{
    r->errmsg[0] = '\0';
    return cr_storage_open(&r->s, ST_DIR, o, r->fs, &r->sa.a, st_on_done, &r->w,
                           &r->rec, r->errmsg);
}

static void options(struct cr_storage_options *o)
{
    cr_storage_options_default(o);
    o->segment_size = ST_SEGMENT;
    o->cluster_id = 42;
}

static void submit_step(struct run *r, const struct wstep *st)
{
    struct st_upd b;
    st_upd_init(&b, st->seq);
    if (st->install) {
        st_upd_snapshot(&b, st->index, st->snap_term);
    }
    if (st->entries) {
        st_upd_entries(&b, st->entries_first, st->n_entries, st->entries_term);
    }
    st_upd_hs(&b, st->term, st->vote, st->commit);
    if (st->install && !st->entries) {
        b.u.persist_last_index = st->index;
    }
    r->errmsg[0] = '\0';
    if (cr_storage_submit(r->s, &b.u) == 0) {
        r->submitted++;
        r->last_seq = st->seq;
    }
    st_upd_free(&b);
}

/* Waits for seq as st_wait does: up to ST_WAIT_MS, but only
 * SWEEP_WAIT_MS once the file system crashed (the writer then fails at
 * its next operation and must say so at once). */
static int sweep_wait(struct run *r, uint64_t seq)
{
    unsigned waited = 0, after_crash = 0;
    for (;;) {
        int rv = st_wait(&r->w, seq, 50);
        if (rv != -1) {
            return rv;
        }
        waited += 50;
        if (fs_fault_crashed(r->ff)) {
            after_crash += 50;
        }
        if (waited >= ST_WAIT_MS || after_crash >= SWEEP_WAIT_MS) {
            return -1;
        }
    }
}

/* Carries out the workload until it ends or the storage fails. Returns
 * false if an update was neither reported durable nor failed in time. */
static bool run_workload(struct run *r, const struct workload *w)
{
    for (unsigned i = 0; i < w->n_steps; i++) {
        const struct wstep *st = &w->steps[i];
        int rv;
        switch (st->kind) {
            case W_UPDATE: {
                unsigned before = r->submitted;
                submit_step(r, st);
                if (r->submitted == before) {
                    return true;
                }
                if (st->wait) {
                    rv = sweep_wait(r, st->seq);
                    if (rv == -1) {
                        r->hung_seq = st->seq;
                        return false;
                    }
                    if (rv != 0) {
                        return true;
                    }
                }
                break;
            }
            case W_SNAPSHOT:
                if (st_write_snapshot(r->fs, ST_DIR, st->index, st->snap_term,
                                      2) != 0) {
                    return true;
                }
                r->submitted++;
                if (st->index > r->snap_written) {
                    r->snap_written = st->index;
                }
                break;
            case W_COMPACT:
                if (cr_storage_compact(r->s, st->index) != 0) {
                    return true;
                }
                r->submitted++;
                break;
        }
    }
    return true;
}

/* ---------------------------------------------------------------------------
 * Checking what a recovery found
 * ------------------------------------------------------------------------- */

/* Whether the recovery holds the log state m. */
static bool state_matches(const struct mstate *m, const struct cr_recovery *r)
{
    cr_index floor = m->base;
    if (r->has_snapshot && r->snapshot.index > floor) {
        floor = r->snapshot.index;
    }
    if (st_last_index(r) != m->last || r->hs.commit != m->commit) {
        return false;
    }
    if (m->last > floor && r->n == 0) {
        return false;
    }
    if (r->n > 0 && r->first > floor + 1) {
        return false;
    }
    for (cr_index i = r->first; i < r->first + r->n; i++) {
        if (i <= m->base || i > m->last || !st_entry_ok(r, i, m->log[i])) {
            return false;
        }
    }
    return true;
}

/* The update step with this seq. */
static const struct wstep *step_of(const struct workload *w, uint64_t seq)
{
    for (unsigned i = 0; i < w->n_steps; i++) {
        if (w->steps[i].kind == W_UPDATE && w->steps[i].seq == seq) {
            return &w->steps[i];
        }
    }
    return NULL;
}

/* The term of the snapshot file at index, from the workload. */
static cr_term snapshot_term(const struct workload *w, cr_index index)
{
    for (unsigned i = 0; i < w->n_steps; i++) {
        if (w->steps[i].kind == W_SNAPSHOT && w->steps[i].index == index) {
            return w->steps[i].snap_term;
        }
    }
    return 0;
}

/* Checks a recovery after a crash against the workload, given the highest
 * seq reported durable and the highest submitted. Returns NULL if it is
 * fine, else what is wrong (in buf). */
static const char *check_recovery(const struct workload *w,
                                  const struct run *r,
                                  uint64_t acked,
                                  char *buf,
                                  size_t len)
{
    const struct cr_recovery *rec = &r->rec;
    const struct wstep *a = acked > 0 ? step_of(w, acked) : NULL;
    const struct wstep *last = r->last_seq > 0 ? step_of(w, r->last_seq) : NULL;
    unsigned from = a != NULL ? a->rec_end : 0;
    unsigned to = last != NULL ? last->rec_end : 0;
    struct mstate *m = calloc(1, sizeof *m);
    bool hs_ok = false, log_ok = false;
    assert_non_null(m);
    /* Term and vote: those of an update at or after the acknowledged one
     * (the initial state if none was). */
    if (acked == 0 && rec->hs.term == 0 && rec->hs.vote == 0) {
        hs_ok = true;
    }
    for (unsigned i = 0; i < w->n_steps && !hs_ok; i++) {
        const struct wstep *st = &w->steps[i];
        if (st->kind == W_UPDATE && st->seq >= acked &&
            st->seq <= r->last_seq && st->term == rec->hs.term &&
            st->vote == rec->hs.vote) {
            hs_ok = true;
        }
    }
    if (!hs_ok) {
        snprintf(buf, len,
                 "term %" PRIu64 " vote %" PRIu64
                 " is not a hard state written at or after seq %" PRIu64,
                 rec->hs.term, rec->hs.vote, acked);
        free(m);
        return buf;
    }
    /* The log: the state after some record at or after the acknowledged
     * update's. */
    for (unsigned i = 0; i <= to && !log_ok; i++) {
        if (i >= from && state_matches(m, rec)) {
            log_ok = true;
        }
        if (i < to) {
            mstate_apply(m, &w->recs[i]);
        }
    }
    free(m);
    if (!log_ok) {
        snprintf(buf, len,
                 "log first %" PRIu64 " n %u last %" PRIu64 " commit %" PRIu64
                 " snapshot %" PRIu64
                 " matches no state between records %u and %u (acked seq "
                 "%" PRIu64 ", submitted %" PRIu64 ")",
                 rec->first, rec->n, st_last_index(rec), rec->hs.commit,
                 rec->has_snapshot ? rec->snapshot.index : 0, from, to, acked,
                 r->last_seq);
        return buf;
    }
    /* A node can start from it. */
    if (st_core_load(rec, &r->sa.a) != 0) {
        snprintf(buf, len, "cr_core_load refuses the recovered state");
        return buf;
    }
    /* Snapshots written survive, and the newest one reads back. */
    if (r->snap_written > 0 &&
        (!rec->has_snapshot || rec->snapshot.index < r->snap_written)) {
        snprintf(buf, len, "snapshot %" PRIu64 " lost", r->snap_written);
        return buf;
    }
    if (rec->has_snapshot &&
        st_check_snapshot(r->fs, rec->snapshot_path, rec->snapshot.index,
                          snapshot_term(w, rec->snapshot.index)) != 0) {
        snprintf(buf, len, "snapshot %.200s does not read back",
                 rec->snapshot_path);
        return buf;
    }
    return NULL;
}

/* After a recovery: updates of three entries each until the writer has
 * moved on to a new segment (so that the segment the crash left is closed
 * with what the writer wrote over its end), a close, a crash, a reopen;
 * the log recovered before them is still there and they follow it. */
static const char *write_after_recovery(struct run *r, char *buf, size_t len)
{
    struct cr_storage_options o;
    struct st_upd b;
    cr_index first = r->rec.first, n = r->rec.n;
    cr_index last = st_last_index(&r->rec);
    cr_index commit = r->rec.hs.commit;
    cr_index next = last + 1;
    uint64_t newest = st_newest_segment(r->ff);
    unsigned updates = 0;
    cr_term *terms = calloc(n + 1, sizeof *terms);
    const char *bad = NULL;
    int rv;
    assert_non_null(terms);
    for (cr_index i = 0; i < n; i++) {
        terms[i] = r->rec.entries[i].term;
    }
    cr_recovery_free(&r->rec, &r->sa.a);
    do {
        st_upd_init(&b, 1000000 + updates);
        st_upd_entries(&b, next, 3, AFTER_TERM);
        st_upd_hs(&b, AFTER_TERM, 1, commit);
        rv = st_submit_wait(r->s, &r->w, &b.u);
        st_upd_free(&b);
        if (rv != 0) {
            snprintf(buf, len, "a write after recovery failed: %d", rv);
            free(terms);
            (void)cr_storage_close(r->s);
            r->s = NULL;
            return buf;
        }
        next += 3;
        updates++;
    } while (st_newest_segment(r->ff) == newest && updates < 40);
    assert_true(st_newest_segment(r->ff) > newest);
    assert_int_equal(cr_storage_close(r->s), 0);
    r->s = NULL;
    fs_fault_crash(r->ff);
    options(&o);
    rv = run_open(r, &o);
    if (rv != 0) {
        r->refused_after = true;
        snprintf(buf, len, "reopen after writing refused: %s", r->errmsg);
        free(terms);
        r->s = NULL;
        return buf;
    }
    if (st_last_index(&r->rec) != next - 1 || r->rec.hs.term != AFTER_TERM ||
        r->rec.hs.commit != commit) {
        snprintf(buf, len,
                 "after writing: last %" PRIu64 " (not %" PRIu64
                 "), term %" PRIu64 ", commit %" PRIu64,
                 st_last_index(&r->rec), next - 1, r->rec.hs.term,
                 r->rec.hs.commit);
        bad = buf;
    }
    for (cr_index i = last + 1; i < next && bad == NULL; i++) {
        if (!st_entry_ok(&r->rec, i, AFTER_TERM)) {
            snprintf(buf, len, "entry %" PRIu64 " written after is lost", i);
            bad = buf;
        }
    }
    for (cr_index i = 0; i < n && bad == NULL; i++) {
        if (!st_entry_ok(&r->rec, first + i, terms[i])) {
            snprintf(buf, len, "entry %" PRIu64 " changed after writing",
                     first + i);
            bad = buf;
        }
    }
    free(terms);
    return bad;
}

struct outcome
{
    uint64_t ops;     /* operations the run made before its crash */
    bool refused;     /* a reopen after the crash was refused */
    bool hung;        /* an update was never reported */
    bool leaked;      /* the failed storage leaked memory */
    const char *what; /* else what was wrong, or NULL */
    char buf[CR_ERRMSG_SIZE + 256];
};

/* One run: the workload with a crash at operation crash_at (0: after
 * it), the checks after it. */
static void run_once(const struct workload *w,
                     enum fs_fault_torn torn,
                     bool torn_dirs,
                     uint64_t seed,
                     uint64_t crash_at,
                     struct outcome *out)
{
    struct run *r = calloc(1, sizeof *r);
    struct cr_storage_options o;
    uint64_t acked;
    bool hung = false;
    long live = 0;
    int rv;
    assert_non_null(r);
    memset(out, 0, sizeof *out);
    r->ff = fs_fault_new();
    r->fs = fs_fault_fs(r->ff);
    st_alloc_init(&r->sa);
    st_waiter_init(&r->w);
    fs_fault_set_torn(r->ff, torn, torn_dirs, seed);
    fs_fault_crash_at(r->ff, crash_at);
    options(&o);
    if (run_open(r, &o) == 0) {
        assert_true(r->rec.fresh);
        cr_recovery_free(&r->rec, &r->sa.a);
        hung = !run_workload(r, w);
        (void)cr_storage_close(r->s);
        r->s = NULL;
    }
    out->ops = fs_fault_ops(r->ff);
    acked = st_durable(&r->w);
    assert_false(r->w.out_of_order);
    assert_false(r->w.success_after_failure);
    live = atomic_load(&r->sa.live);
    /* A new waiter for the storage after the crash. */
    st_waiter_destroy(&r->w);
    st_waiter_init(&r->w);
    if (!fs_fault_crashed(r->ff)) {
        fs_fault_crash(r->ff);
    }
    fs_fault_revive(r->ff);

    rv = run_open(r, &o);
    if (rv != 0) {
        out->refused = true;
        snprintf(out->buf, sizeof out->buf, "refused (%d): %s", rv, r->errmsg);
        out->what = out->buf;
    } else {
        out->what = check_recovery(w, r, acked, out->buf, sizeof out->buf);
        if (out->what == NULL) {
            out->what = write_after_recovery(r, out->buf, sizeof out->buf);
        }
        if (r->s != NULL) {
            cr_recovery_free(&r->rec, &r->sa.a);
            (void)cr_storage_close(r->s);
        }
        out->refused = r->refused_after;
    }
    if (out->what == NULL && hung) {
        snprintf(out->buf, sizeof out->buf,
                 "update %" PRIu64
                 " was accepted but never reported, neither durable nor "
                 "failed",
                 r->hung_seq);
        out->what = out->buf;
        out->hung = true;
    }
    if (out->what == NULL && live != 0) {
        snprintf(out->buf, sizeof out->buf,
                 "%ld blocks leaked by the storage that failed (last "
                 "update submitted: %" PRIu64 ", acknowledged: %" PRIu64 ")",
                 live, r->last_seq, acked);
        out->what = out->buf;
        out->leaked = true;
    }
    assert_int_equal(atomic_load(&r->sa.live), live);
    st_waiter_destroy(&r->w);
    fs_fault_free(r->ff);
    free(r);
}

struct sweep_result
{
    unsigned runs, bad, refused, hung, leaked;
    char first[CR_ERRMSG_SIZE + 512]; /* the first bad run */
};

/* Crashes at every operation of the workload, `seeds` torn variants of
 * each. */
static void sweep(enum fs_fault_torn torn,
                  bool torn_dirs,
                  unsigned seeds,
                  struct sweep_result *res)
{
    struct workload *w = malloc(sizeof *w);
    struct outcome out;
    uint64_t total;
    bool verbose = getenv("CR_TEST_VERBOSE") != NULL;
    assert_non_null(w);
    build_workload(w);
    memset(res, 0, sizeof *res);
    /* A run without a crash: everything, and how many operations. */
    run_once(w, FS_FAULT_TORN_NONE, false, 0, 0, &out);
    if (out.what != NULL) {
        fail_msg("without a crash: %s", out.what);
    }
    total = out.ops;
    assert_true(total > 150);
    for (uint64_t k = 1; k <= total + 2; k++) {
        for (unsigned s = 0; s < seeds; s++) {
            uint64_t seed = k * 1000 + s + 1;
            run_once(w, torn, torn_dirs, seed, k, &out);
            res->runs++;
            if (out.what == NULL) {
                continue;
            }
            if (verbose) {
                fprintf(stderr, "op %" PRIu64 " seed %" PRIu64 ": %s\n", k,
                        seed, out.what);
            }
            if (res->bad++ == 0) {
                snprintf(res->first, sizeof res->first,
                         "crash at op %" PRIu64 " of %" PRIu64 " (seed %" PRIu64
                         "): %s",
                         k, total, seed, out.what);
            }
            res->refused += out.refused;
            res->hung += out.hung;
            res->leaked += out.leaked;
        }
    }
    if (verbose) {
        fprintf(stderr,
                "sweep: %" PRIu64
                " operations, %u runs, %u bad (%u "
                "refused, %u hung, %u leaked)\n",
                total, res->runs, res->bad, res->refused, res->hung,
                res->leaked);
    }
    free(w);
}

static void assert_sweep(const struct sweep_result *res)
{
    if (res->bad > 0) {
        fail_msg(
            "%u of %u runs bad (%u refused, %u hung, %u leaked); "
            "first: %s",
            res->bad, res->runs, res->refused, res->hung, res->leaked,
            res->first);
    }
}

/* Unsynced writes and directory changes all lost at the crash. */
static void crash_at_every_operation(void **state)
{
    struct sweep_result res;
    (void)state;
    sweep(FS_FAULT_TORN_NONE, false, 1, &res);
    assert_sweep(&res);
}

/* A prefix of the unsynced writes of each file survives, its last write
 * possibly cut short (write-back in order). */
static void crash_torn_in_order(void **state)
{
    struct sweep_result res;
    (void)state;
    sweep(FS_FAULT_TORN_PREFIX, false, 2, &res);
    assert_sweep(&res);
}

/* Any subset of the unsynced writes survives, each possibly cut short:
 * the page cache writes pages back in any order, so a crash can keep a
 * later record of a batch and lose an earlier one, or keep a batch's body
 * and lose its header. Since a batch is started only once the one before
 * it is durable, such damage is always in the last batch of the newest
 * segment: recovery cuts it (keeping its whole leading records) and never
 * refuses, then or after more writes. (The earlier expectation, that a
 * later record surviving an earlier one is refused, is gone: that is a
 * torn last batch now, cut.) Several seeds per operation: the states that
 * matter are rare. This includes a batch whose body survived and whose
 * header did not: its leftovers are cut too, so that the segment stays
 * readable once the writer has moved on (torn_batch_without_its_header in
 * test_storage_recovery shows that state every time). */
static void crash_torn_any_order(void **state)
{
    struct sweep_result res;
    (void)state;
    sweep(FS_FAULT_TORN_SUBSET, false, 16, &res);
    assert_sweep(&res);
}

/* Unsynced directory changes survive in part too (a prefix of each
 * directory's, as a journaling file system keeps their order), with file
 * writes kept in order. */
static void crash_torn_directories(void **state)
{
    struct sweep_result res;
    (void)state;
    sweep(FS_FAULT_TORN_PREFIX, true, 1, &res);
    assert_sweep(&res);
}

/* ---------------------------------------------------------------------------
 * Full disk and failed syncs
 * ------------------------------------------------------------------------- */

struct cfx
{
    struct fs_fault *ff;
    const struct cr_fs *fs;
    struct st_alloc sa;
    struct st_waiter w;
    struct cr_storage *s;
    struct cr_recovery rec;
    char errmsg[CR_ERRMSG_SIZE];
    uint64_t seq;
    cr_index last;
};

static int csetup(void **state)
{
    struct cfx *f = calloc(1, sizeof *f);
    struct cr_storage_options o;
    assert_non_null(f);
    f->ff = fs_fault_new();
    f->fs = fs_fault_fs(f->ff);
    st_alloc_init(&f->sa);
    st_waiter_init(&f->w);
    options(&o);
    assert_int_equal(cr_storage_open(&f->s, ST_DIR, &o, f->fs, &f->sa.a,
                                     st_on_done, &f->w, &f->rec, f->errmsg),
                     0);
    cr_recovery_free(&f->rec, &f->sa.a);
    *state = f;
    return 0;
}

static int cteardown(void **state)
{
    struct cfx *f = *state;
    if (f->s != NULL) {
        (void)cr_storage_close(f->s);
    }
    assert_int_equal(atomic_load(&f->sa.live), 0);
    assert_false(f->w.out_of_order);
    fs_fault_free(f->ff);
    st_waiter_destroy(&f->w);
    free(f);
    return 0;
}

/* Submits entries last+1..last+n (term 1, commit last) without waiting;
 * returns the seq. */
static uint64_t csubmit(struct cfx *f, unsigned n)
{
    struct st_upd b;
    st_upd_init(&b, ++f->seq);
    st_upd_entries(&b, f->last + 1, n, 1);
    st_upd_hs(&b, 1, 1, f->last);
    assert_int_equal(cr_storage_submit(f->s, &b.u), 0);
    st_upd_free(&b);
    f->last += n;
    return f->seq;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Polls cond until true or ms pass. */
static bool eventually(bool (*cond)(struct cfx *), struct cfx *f, unsigned ms)
{
    for (unsigned waited = 0; waited < ms; waited += 2) {
        if (cond(f)) {
            return true;
        }
        sleep_ms(2);
    }
    return cond(f);
}

static bool is_stalled(struct cfx *f)
{
    return cr_storage_stalled(f->s);
}

/* Reopens (after a clean close and a crash) and checks that entries
 * 1..f->last are there exactly once: in the recovery, and as records on
 * the disk. */
static void creopen_check(struct cfx *f)
{
    struct cr_storage_options o;
    unsigned *seen = calloc(f->last + 1, sizeof *seen);
    assert_non_null(seen);
    assert_int_equal(cr_storage_close(f->s), 0);
    f->s = NULL;
    fs_fault_crash(f->ff);
    options(&o);
    assert_int_equal(cr_storage_open(&f->s, ST_DIR, &o, f->fs, &f->sa.a,
                                     st_on_done, &f->w, &f->rec, f->errmsg),
                     0);
    assert_int_equal(f->rec.first, 1);
    assert_int_equal(f->rec.n, f->last);
    for (cr_index i = 1; i <= f->last; i++) {
        assert_true(st_entry_ok(&f->rec, i, 1));
    }
    cr_recovery_free(&f->rec, &f->sa.a);
    /* Each entry was written once: no record repeated after a retry (the
     * records of the valid batches, which recovery read whole). */
    {
        static struct st_rec recs[4096];
        unsigned n = st_scan(f->ff, recs, 4096);
        for (unsigned i = 0; i < n; i++) {
            if (recs[i].type == CR__REC_ENTRY) {
                assert_true(recs[i].index <= f->last);
                seen[recs[i].index]++;
            }
        }
    }
    for (cr_index i = 1; i <= f->last; i++) {
        if (seen[i] != 1) {
            fail_msg("entry %" PRIu64 " written %u times", i, seen[i]);
        }
    }
    free(seen);
}

/* No space: the writer stalls (cr_storage_stalled, nothing more reported
 * durable, submissions still accepted), and resumes by itself when space
 * returns, with nothing lost or written twice. */
static void enospc_stalls_and_resumes(void **state)
{
    struct cfx *f = *state;
    struct cr_storage_stats stats;
    uint64_t seq, durable;
    for (unsigned i = 0; i < 20; i++) {
        seq = csubmit(f, 3);
        assert_int_equal(st_wait(&f->w, seq, ST_WAIT_MS), 0);
    }
    assert_false(cr_storage_stalled(f->s));
    /* Room for what is there, not for another segment. */
    fs_fault_set_budget(f->ff, fs_fault_used(f->ff) + 1000);
    for (unsigned i = 0; i < 40 && !cr_storage_stalled(f->s); i++) {
        seq = csubmit(f, 2);
        (void)st_wait(&f->w, seq, 200);
    }
    assert_true(eventually(is_stalled, f, ST_WAIT_MS));
    durable = st_durable(&f->w);
    assert_true(durable < f->seq);
    /* More submissions queue up meanwhile; nothing becomes durable. */
    for (unsigned i = 0; i < 5; i++) {
        (void)csubmit(f, 4);
    }
    sleep_ms(100);
    assert_true(cr_storage_stalled(f->s));
    assert_int_equal(st_durable(&f->w), durable);
    assert_int_equal(f->w.status, 0);
    assert_true(fs_fault_enospc(f->ff) > 0);
    /* Space returns. */
    fs_fault_set_budget(f->ff, UINT64_MAX);
    assert_int_equal(st_wait(&f->w, f->seq, ST_WAIT_MS), 0);
    assert_false(cr_storage_stalled(f->s));
    assert_int_equal(f->w.last_index, f->last);
    seq = csubmit(f, 1);
    assert_int_equal(st_wait(&f->w, seq, ST_WAIT_MS), 0);
    cr_storage_stats(f->s, &stats);
    assert_true(stats.enospc > 0);
    creopen_check(f);
}

/* Space runs out and returns several times, with updates in flight. */
static void enospc_repeatedly(void **state)
{
    struct cfx *f = *state;
    for (unsigned round = 0; round < 4; round++) {
        fs_fault_set_budget(f->ff, fs_fault_used(f->ff) + 500);
        for (unsigned i = 0; i < 60 && !cr_storage_stalled(f->s); i++) {
            (void)csubmit(f, 3);
            sleep_ms(1);
        }
        assert_true(eventually(is_stalled, f, ST_WAIT_MS));
        (void)csubmit(f, 2);
        fs_fault_set_budget(f->ff, UINT64_MAX);
        assert_int_equal(st_wait(&f->w, f->seq, ST_WAIT_MS), 0);
        assert_false(cr_storage_stalled(f->s));
    }
    creopen_check(f);
}

/* Closing while stalled does not hang; what was acknowledged stays. */
static void enospc_close_while_stalled(void **state)
{
    struct cfx *f = *state;
    struct cr_storage_options o;
    uint64_t durable;
    cr_index durable_last;
    for (unsigned i = 0; i < 5; i++) {
        assert_int_equal(st_wait(&f->w, csubmit(f, 3), ST_WAIT_MS), 0);
    }
    fs_fault_set_budget(f->ff, fs_fault_used(f->ff));
    for (unsigned i = 0; i < 60 && !cr_storage_stalled(f->s); i++) {
        (void)csubmit(f, 3);
        sleep_ms(1);
    }
    assert_true(eventually(is_stalled, f, ST_WAIT_MS));
    durable = st_durable(&f->w);
    durable_last = f->w.last_index;
    assert_true(durable < f->seq);
    (void)cr_storage_close(f->s);
    f->s = NULL;
    fs_fault_crash(f->ff);
    fs_fault_set_budget(f->ff, UINT64_MAX);
    options(&o);
    assert_int_equal(cr_storage_open(&f->s, ST_DIR, &o, f->fs, &f->sa.a,
                                     st_on_done, &f->w, &f->rec, f->errmsg),
                     0);
    assert_true(st_last_index(&f->rec) >= durable_last);
    for (cr_index i = 1; i <= st_last_index(&f->rec); i++) {
        assert_true(st_entry_ok(&f->rec, i, 1));
    }
    cr_recovery_free(&f->rec, &f->sa.a);
}

/* A failed fdatasync of a segment: the done callback reports CR_EIO, the
 * storage takes nothing more (submit, compact: CR_EIO), close says
 * CR_EIO, and what was acknowledged before is still there. */
static void fsync_failure_is_fatal(void **state)
{
    struct cfx *f = *state;
    struct cr_storage_options o;
    uint64_t seq, bad_seq;
    struct st_upd b;
    for (unsigned i = 0; i < 10; i++) {
        assert_int_equal(st_wait(&f->w, csubmit(f, 2), ST_WAIT_MS), 0);
    }
    seq = f->seq;
    fs_fault_fail_syncs(f->ff, 1);
    bad_seq = csubmit(f, 2);
    assert_int_equal(st_wait(&f->w, bad_seq, ST_WAIT_MS), CR_EIO);
    /* The failure comes with the last seq reported durable before it (as
     * for any failure, a batch of compactions alone included), not with
     * the seq of the update that failed. */
    assert_int_equal(f->w.failed_seq, seq);
    assert_int_equal(st_durable(&f->w), seq);
    st_upd_init(&b, ++f->seq);
    st_upd_entries(&b, f->last + 1, 1, 1);
    assert_int_equal(cr_storage_submit(f->s, &b.u), CR_EIO);
    st_upd_free(&b);
    assert_int_equal(cr_storage_compact(f->s, 1), CR_EIO);
    assert_int_equal(cr_storage_close(f->s), CR_EIO);
    f->s = NULL;
    assert_false(f->w.success_after_failure);
    fs_fault_crash(f->ff);
    options(&o);
    assert_int_equal(cr_storage_open(&f->s, ST_DIR, &o, f->fs, &f->sa.a,
                                     st_on_done, &f->w, &f->rec, f->errmsg),
                     0);
    assert_int_equal(st_last_index(&f->rec), 20);
    for (cr_index i = 1; i <= 20; i++) {
        assert_true(st_entry_ok(&f->rec, i, 1));
    }
    cr_recovery_free(&f->rec, &f->sa.a);
}

/* A failed fdatasync of the metadata file (a vote) is fatal too, and
 * the vote is not reported durable. */
static void fsync_failure_of_vote(void **state)
{
    struct cfx *f = *state;
    struct cr_storage_options o;
    struct st_upd b;
    uint64_t durable = csubmit(f, 2);
    assert_int_equal(st_wait(&f->w, durable, ST_WAIT_MS), 0);
    st_upd_init(&b, ++f->seq);
    st_upd_hs(&b, 7, 3, 1);
    /* The commit record's sync passes, the metadata's fails. */
    fs_fault_fail_syncs_after(f->ff, 1, 1);
    assert_int_equal(st_submit_wait(f->s, &f->w, &b.u), CR_EIO);
    /* Reported with the last seq that was durable before. */
    assert_int_equal(f->w.failed_seq, durable);
    assert_int_equal(st_durable(&f->w), durable);
    assert_int_equal(cr_storage_submit(f->s, &b.u), CR_EIO);
    assert_int_equal(cr_storage_close(f->s), CR_EIO);
    f->s = NULL;
    fs_fault_crash(f->ff);
    options(&o);
    assert_int_equal(cr_storage_open(&f->s, ST_DIR, &o, f->fs, &f->sa.a,
                                     st_on_done, &f->w, &f->rec, f->errmsg),
                     0);
    /* The last acknowledged hard state, or the new one: never anything
     * else. */
    assert_true((f->rec.hs.term == 1 && f->rec.hs.vote == 1) ||
                (f->rec.hs.term == 7 && f->rec.hs.vote == 3));
    assert_int_equal(st_last_index(&f->rec), 2);
    cr_recovery_free(&f->rec, &f->sa.a);
}

/* A compaction that fails (here: the file system dies at its first
 * unlink) stops the storage for good (cr_storage_submit then returns
 * CR_EIO), and the done callback says so with CR_EIO, although the batch
 * held compactions alone (storage.h: the callback is called "with CR_EIO
 * when the storage failed for good"), with the last seq reported durable
 * before. */
static void compaction_failure_is_reported(void **state)
{
    struct cfx *f = *state;
    struct st_upd b;
    unsigned calls;
    uint64_t durable;
    bool reported;
    int rv;
    for (unsigned i = 0; i < 40; i++) {
        assert_int_equal(st_wait(&f->w, csubmit(f, 3), ST_WAIT_MS), 0);
    }
    durable = st_durable(&f->w);
    assert_int_equal(durable, f->seq);
    assert_true(fs_fault_count_names(f->ff, ST_DIR, "wal-") >= 3);
    assert_int_equal(st_write_snapshot(f->fs, ST_DIR, 60, 1, 2), 0);
    calls = st_calls(&f->w);
    fs_fault_crash_at(f->ff, fs_fault_ops(f->ff) + 1);
    assert_int_equal(cr_storage_compact(f->s, 60), 0);
    reported = st_wait_calls(&f->w, calls + 1, 2000);
    /* The storage did fail. */
    st_upd_init(&b, ++f->seq);
    st_upd_entries(&b, f->last + 1, 1, 1);
    rv = cr_storage_submit(f->s, &b.u);
    st_upd_free(&b);
    assert_int_equal(rv, CR_EIO);
    if (!reported) {
        fail_msg(
            "the storage failed in a compaction and the done callback "
            "never said so");
    }
    assert_int_equal(f->w.status, CR_EIO);
    /* With the last seq reported durable before the failure. */
    assert_int_equal(f->w.failed_seq, durable);
    assert_int_equal(st_durable(&f->w), durable);
}

/* An allocator that can hold the next allocation until the storage has
 * reported a failure (and its writer had time to finish), to put a
 * submission exactly in the race with the writer's failure. */
struct gate_alloc
{
    struct cr_alloc a;
    struct st_alloc *inner;
    struct st_waiter *w;
    atomic_bool hold_next;
};

static void *gate_malloc(void *data, size_t size)
{
    struct gate_alloc *g = data;
    if (atomic_exchange(&g->hold_next, false)) {
        /* The submitting thread is between its status check and its
         * enqueue: let the writer fail and finish meanwhile. */
        (void)st_wait(g->w, UINT64_MAX, 2000);
        sleep_ms(100);
    }
    return g->inner->a.malloc(g->inner->a.data, size);
}

static void *gate_realloc(void *data, void *ptr, size_t size)
{
    struct gate_alloc *g = data;
    return g->inner->a.realloc(g->inner->a.data, ptr, size);
}

static void gate_free(void *data, void *ptr)
{
    struct gate_alloc *g = data;
    g->inner->a.free(g->inner->a.data, ptr);
}

/* An update submitted while the writer fails (it passed the status check
 * before the failure and enqueues after the writer dropped its queue) is
 * not lost: cr_storage_submit returns CR_EIO and frees it, and nothing of
 * the storage is left allocated after the close. */
static void submission_racing_a_failure(void **state)
{
    struct cfx *f = *state;
    struct gate_alloc g;
    struct st_alloc inner;
    struct cr_storage *s;
    struct cr_recovery rec;
    struct cr_storage_options o;
    struct st_upd b;
    long live;
    int rv, close_rv;
    st_alloc_init(&inner);
    /* A segment, so that the reopen below has one to replay. */
    assert_int_equal(st_wait(&f->w, csubmit(f, 1), ST_WAIT_MS), 0);
    g.a.data = &g;
    g.a.malloc = gate_malloc;
    g.a.realloc = gate_realloc;
    g.a.free = gate_free;
    g.inner = &inner;
    g.w = &f->w;
    atomic_init(&g.hold_next, false);
    assert_int_equal(cr_storage_close(f->s), 0);
    f->s = NULL;
    options(&o);
    assert_int_equal(cr_storage_open(&s, ST_DIR, &o, f->fs, &g.a, st_on_done,
                                     &f->w, &rec, f->errmsg),
                     0);
    cr_recovery_free(&rec, &g.a);
    /* The next fdatasync takes a while and fails. */
    fs_fault_set_sync_delay(f->ff, 50000);
    fs_fault_fail_syncs(f->ff, 1);
    st_upd_init(&b, ++f->seq);
    st_upd_entries(&b, 2, 1, 1);
    assert_int_equal(cr_storage_submit(s, &b.u), 0);
    st_upd_free(&b);
    sleep_ms(10);
    /* The writer is in its fdatasync; this one passes the status check
     * and then waits in its allocation until the writer failed. */
    atomic_store(&g.hold_next, true);
    st_upd_init(&b, ++f->seq);
    st_upd_entries(&b, 3, 1, 1);
    rv = cr_storage_submit(s, &b.u);
    st_upd_free(&b);
    assert_int_equal(f->w.status, CR_EIO);
    /* Refused: the writer had stopped for good when it was queued. */
    assert_int_equal(rv, CR_EIO);
    close_rv = cr_storage_close(s);
    fs_fault_set_sync_delay(f->ff, 0);
    live = atomic_load(&inner.live);
    assert_int_equal(close_rv, CR_EIO);
    if (live != 0) {
        fail_msg("submit returned %d; %ld blocks of the storage never freed",
                 rv, live);
    }
}

/* A term and vote reported durable survive a crash when the metadata
 * file they went to did not exist before (a crash during the first open
 * can leave metadata1 without metadata2): write_meta syncs the directory
 * after it creates the file. */
static void vote_durable_when_metadata_file_was_missing(void **state)
{
    struct cfx *f = *state;
    struct cr_storage_options o;
    struct st_upd b;
    assert_int_equal(st_wait(&f->w, csubmit(f, 2), ST_WAIT_MS), 0);
    assert_int_equal(cr_storage_close(f->s), 0);
    f->s = NULL;
    /* metadata1 holds the newest copy (term 1, vote 1); metadata2 as a
     * crash in init_meta leaves it: gone. */
    assert_int_equal(fs_fault_remove(f->ff, ST_DIR "/metadata2"), 0);
    options(&o);
    assert_int_equal(cr_storage_open(&f->s, ST_DIR, &o, f->fs, &f->sa.a,
                                     st_on_done, &f->w, &f->rec, f->errmsg),
                     0);
    assert_int_equal(f->rec.hs.term, 1);
    cr_recovery_free(&f->rec, &f->sa.a);
    st_upd_init(&b, ++f->seq);
    st_upd_hs(&b, 5, 2, 1);
    assert_int_equal(st_submit_wait(f->s, &f->w, &b.u), 0);
    assert_int_equal(cr_storage_close(f->s), 0);
    f->s = NULL;
    fs_fault_crash(f->ff);
    assert_int_equal(cr_storage_open(&f->s, ST_DIR, &o, f->fs, &f->sa.a,
                                     st_on_done, &f->w, &f->rec, f->errmsg),
                     0);
    cr_recovery_free(&f->rec, &f->sa.a);
    if (f->rec.hs.term != 5 || f->rec.hs.vote != 2) {
        fail_msg("acknowledged term 5 vote 2, recovered term %" PRIu64
                 " vote %" PRIu64,
                 f->rec.hs.term, f->rec.hs.vote);
    }
}

/* A crash during the very first open, after metadata1's name reached the
 * disk but before its bytes did (a journaling file system may commit the
 * creation first: a zero-length file, or one of zeros, after the crash),
 * leaves a metadata1 that was never written and nothing else: a fresh
 * directory, which opens (and is set up again). */
static void crash_in_first_open_leaves_empty_metadata(void **state)
{
    static const uint8_t zeros[CR__META_SIZE];
    /* metadata1's size, metadata2's (-1: missing): never written, both
     * or one missing. */
    static const int cases[][2] = {{0, -1},
                                   {CR__META_SIZE, -1},
                                   {17, -1},
                                   {0, 0},
                                   {CR__META_SIZE, 0},
                                   {-1, CR__META_SIZE},
                                   {CR__META_SIZE, CR__META_SIZE}};
    (void)state;
    for (unsigned c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        struct fs_fault *ff = fs_fault_new();
        const struct cr_fs *fs = fs_fault_fs(ff);
        struct st_alloc sa;
        struct cr_storage *s = NULL;
        struct cr_recovery rec;
        struct cr_storage_options o;
        char errmsg[CR_ERRMSG_SIZE] = "";
        int rv;
        st_alloc_init(&sa);
        assert_int_equal(fs->mkdir(fs->data, ST_DIR), 0);
        assert_int_equal(fs_fault_write(ff, ST_DIR "/LOCK", "", 0), 0);
        for (unsigned slot = 1; slot <= 2; slot++) {
            char path[64];
            snprintf(path, sizeof path, "%s/metadata%u", ST_DIR, slot);
            if (cases[c][slot - 1] >= 0) {
                assert_int_equal(
                    fs_fault_write(ff, path, zeros, (size_t)cases[c][slot - 1]),
                    0);
            }
        }
        options(&o);
        rv = cr_storage_open(&s, ST_DIR, &o, fs, &sa.a, NULL, NULL, &rec,
                             errmsg);
        if (rv != 0) {
            fs_fault_free(ff);
            fail_msg("case %u: refused after a crash in the first open: %s", c,
                     errmsg);
        }
        assert_true(rec.fresh);
        assert_false(rec.torn);
        cr_recovery_free(&rec, &sa.a);
        assert_int_equal(cr_storage_close(s), 0);
        /* Set up again, durably: both copies valid after a crash. */
        fs_fault_crash(ff);
        for (unsigned slot = 1; slot <= 2; slot++) {
            char path[64];
            struct cr__meta m;
            uint8_t *buf;
            size_t len;
            snprintf(path, sizeof path, "%s/metadata%u", ST_DIR, slot);
            assert_int_equal(fs_fault_read(ff, path, &buf, &len), 0);
            assert_int_equal(cr__meta_decode(buf, len, &m), 0);
            assert_int_equal(m.cluster_id, 42);
            free(buf);
        }
        rv = cr_storage_open(&s, ST_DIR, &o, fs, &sa.a, NULL, NULL, &rec,
                             errmsg);
        assert_int_equal(rv, 0);
        assert_false(rec.fresh);
        cr_recovery_free(&rec, &sa.a);
        assert_int_equal(cr_storage_close(s), 0);
        assert_int_equal(atomic_load(&sa.live), 0);
        fs_fault_free(ff);
    }
}

/* A crash during recovery itself (while it removes a temporary snapshot,
 * cuts a torn tail, reopens the last segment), at every operation: the
 * next recovery finds the same state as an uninterrupted one. */
static void crash_during_recovery(void **state)
{
    struct cfx *f = *state;
    struct st_saved sv;
    struct cr_storage_options o;
    struct cr_recovery ref;
    char path[64];
    uint64_t size;
    uint64_t total;
    for (unsigned i = 0; i < 30; i++) {
        assert_int_equal(st_wait(&f->w, csubmit(f, 2), ST_WAIT_MS), 0);
    }
    assert_int_equal(cr_storage_close(f->s), 0);
    f->s = NULL;
    /* A torn tail: the last record (the commit of the last update, in
     * the last batch) gets a flipped bit. A temporary snapshot file is
     * left over too. */
    {
        static struct st_rec recs[4096];
        unsigned n = st_scan(f->ff, recs, 4096);
        assert_true(n > 0);
        assert_int_equal(recs[n - 1].type, CR__REC_COMMIT);
        assert_int_equal(recs[n - 1].seg, st_newest_segment(f->ff));
        st_seg_path(path, sizeof path, recs[n - 1].seg);
        assert_int_equal(fs_fault_flip(f->ff, path, recs[n - 1].off + 5, 0x10),
                         0);
    }
    assert_int_equal(fs_fault_write(f->ff, ST_DIR "/snapshot-1-1.tmp", "x", 1),
                     0);
    assert_int_equal(fs_fault_file_size(f->ff, path, &size), 0);
    st_save(f->ff, &sv);

    /* The reference: an uninterrupted recovery. */
    options(&o);
    fs_fault_free(f->ff);
    f->ff = st_restore(&sv);
    f->fs = fs_fault_fs(f->ff);
    assert_int_equal(cr_storage_open(&f->s, ST_DIR, &o, f->fs, &f->sa.a, NULL,
                                     NULL, &ref, f->errmsg),
                     0);
    assert_true(ref.torn);
    assert_int_equal(cr_storage_close(f->s), 0);
    f->s = NULL;
    total = fs_fault_ops(f->ff);

    for (uint64_t k = 1; k <= total; k++) {
        for (unsigned torn = 0; torn < 2; torn++) {
            int rv;
            fs_fault_free(f->ff);
            f->ff = st_restore(&sv);
            f->fs = fs_fault_fs(f->ff);
            fs_fault_set_torn(f->ff,
                              torn ? FS_FAULT_TORN_PREFIX : FS_FAULT_TORN_NONE,
                              torn != 0, k);
            fs_fault_crash_at(f->ff, k);
            rv = cr_storage_open(&f->s, ST_DIR, &o, f->fs, &f->sa.a, NULL, NULL,
                                 &f->rec, f->errmsg);
            if (rv == 0) {
                cr_recovery_free(&f->rec, &f->sa.a);
                (void)cr_storage_close(f->s);
                f->s = NULL;
            }
            fs_fault_revive(f->ff);
            rv = cr_storage_open(&f->s, ST_DIR, &o, f->fs, &f->sa.a, NULL, NULL,
                                 &f->rec, f->errmsg);
            if (rv != 0) {
                fail_msg("crash at op %" PRIu64 " of recovery: refused: %s", k,
                         f->errmsg);
            }
            assert_int_equal(f->rec.hs.term, ref.hs.term);
            assert_int_equal(f->rec.hs.vote, ref.hs.vote);
            assert_int_equal(f->rec.hs.commit, ref.hs.commit);
            assert_int_equal(f->rec.first, ref.first);
            assert_int_equal(f->rec.n, ref.n);
            for (cr_index i = 0; i < ref.n; i++) {
                assert_true(
                    st_entry_ok(&f->rec, ref.first + i, ref.entries[i].term));
            }
            cr_recovery_free(&f->rec, &f->sa.a);
            assert_int_equal(cr_storage_close(f->s), 0);
            f->s = NULL;
        }
    }
    cr_recovery_free(&ref, &f->sa.a);
    st_saved_free(&sv);
    /* For the teardown. */
    assert_int_equal(cr_storage_open(&f->s, ST_DIR, &o, f->fs, &f->sa.a,
                                     st_on_done, &f->w, &f->rec, f->errmsg),
                     0);
    cr_recovery_free(&f->rec, &f->sa.a);
}

int main(int argc, char **argv)
{
    if (argc > 1) {
        cmocka_set_test_filter(argv[1]);
    }
#define T(name) cmocka_unit_test_setup_teardown(name, csetup, cteardown)
    const struct CMUnitTest tests[] = {
        T(enospc_stalls_and_resumes),
        T(enospc_repeatedly),
        T(enospc_close_while_stalled),
        T(fsync_failure_is_fatal),
        T(fsync_failure_of_vote),
        T(compaction_failure_is_reported),
        T(submission_racing_a_failure),
        T(vote_durable_when_metadata_file_was_missing),
        T(crash_during_recovery),
        cmocka_unit_test(crash_in_first_open_leaves_empty_metadata),
        cmocka_unit_test(crash_at_every_operation),
        cmocka_unit_test(crash_torn_in_order),
        cmocka_unit_test(crash_torn_directories),
        cmocka_unit_test(crash_torn_any_order),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
