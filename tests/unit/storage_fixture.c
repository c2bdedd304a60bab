/* Helpers shared by the storage's unit tests; see storage_fixture.h. */
#define _POSIX_C_SOURCE 200809L

#include "storage_fixture.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---------------------------------------------------------------------------
 * Counting allocator
 * ------------------------------------------------------------------------- */

static void *sa_malloc(void *data, size_t size)
{
    struct st_alloc *sa = data;
    void *p = malloc(size);
    if (p != NULL) {
        atomic_fetch_add(&sa->live, 1);
    }
    return p;
}

static void *sa_realloc(void *data, void *ptr, size_t size)
{
    struct st_alloc *sa = data;
    void *p = realloc(ptr, size);
    if (p != NULL && ptr == NULL) {
        atomic_fetch_add(&sa->live, 1);
    }
    return p;
}

static void sa_free(void *data, void *ptr)
{
    struct st_alloc *sa = data;
    if (ptr != NULL) {
        atomic_fetch_sub(&sa->live, 1);
    }
    free(ptr);
}

void st_alloc_init(struct st_alloc *sa)
{
    sa->a.data = sa;
    sa->a.malloc = sa_malloc;
    sa->a.realloc = sa_realloc;
    sa->a.free = sa_free;
    atomic_init(&sa->live, 0);
}

/* ---------------------------------------------------------------------------
 * Waiting for the writer
 * ------------------------------------------------------------------------- */

void st_waiter_init(struct st_waiter *w)
{
    pthread_condattr_t attr;
    memset(w, 0, sizeof *w);
    pthread_mutex_init(&w->mu, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&w->cv, &attr);
    pthread_condattr_destroy(&attr);
}

void st_waiter_destroy(struct st_waiter *w)
{
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
}

void st_on_done(void *data, uint64_t seq, cr_index last_index, int status)
{
    struct st_waiter *w = data;
    pthread_mutex_lock(&w->mu);
    w->calls++;
    if (status == 0) {
        if (w->status != 0) {
            w->success_after_failure = true;
        }
        if (seq <= w->durable) {
            w->out_of_order = true;
        } else {
            w->durable = seq;
            w->last_index = last_index;
        }
    } else if (w->status == 0) {
        w->status = status;
        w->failed_seq = seq;
    }
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static struct timespec deadline_in(unsigned ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

int st_wait(struct st_waiter *w, uint64_t seq, unsigned ms)
{
    struct timespec until = deadline_in(ms);
    int rv = -1;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        if (w->durable >= seq) {
            rv = 0;
            break;
        }
        if (w->status != 0) {
            rv = w->status;
            break;
        }
        if (pthread_cond_timedwait(&w->cv, &w->mu, &until) == ETIMEDOUT) {
            break;
        }
    }
    pthread_mutex_unlock(&w->mu);
    return rv;
}

bool st_wait_calls(struct st_waiter *w, unsigned n, unsigned ms)
{
    struct timespec until = deadline_in(ms);
    bool ok = false;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        if (w->calls >= n) {
            ok = true;
            break;
        }
        if (pthread_cond_timedwait(&w->cv, &w->mu, &until) == ETIMEDOUT) {
            break;
        }
    }
    pthread_mutex_unlock(&w->mu);
    return ok;
}

uint64_t st_durable(struct st_waiter *w)
{
    uint64_t seq;
    pthread_mutex_lock(&w->mu);
    seq = w->durable;
    pthread_mutex_unlock(&w->mu);
    return seq;
}

unsigned st_calls(struct st_waiter *w)
{
    unsigned n;
    pthread_mutex_lock(&w->mu);
    n = w->calls;
    pthread_mutex_unlock(&w->mu);
    return n;
}

/* ---------------------------------------------------------------------------
 * Entries
 * ------------------------------------------------------------------------- */

enum cr_entry_type st_entry_type(cr_index index, cr_term term)
{
    if ((index + term) % 7 == 3) {
        return CR_ENTRY_NOOP;
    }
    if ((index + 2 * term) % 11 == 5) {
        return CR_ENTRY_CONFIG;
    }
    return CR_ENTRY_COMMAND;
}

/* The configuration a CR_ENTRY_CONFIG entry at (index, term) holds. */
static void entry_config(struct cr_config *c, cr_index index, cr_term term)
{
    st_config(c, (unsigned)(1 + (index + term) % 5));
}

size_t st_payload_len(cr_index index, cr_term term)
{
    struct cr_config c;
    switch (st_entry_type(index, term)) {
        case CR_ENTRY_NOOP:
            return 0;
        case CR_ENTRY_CONFIG:
            entry_config(&c, index, term);
            return cr_config_encoded_size(&c);
        case CR_ENTRY_COMMAND:
            break;
    }
    return (size_t)((index * 37 + term * 11) % 301);
}

void st_entry_payload(uint8_t *buf, cr_index index, cr_term term)
{
    struct cr_config c;
    if (st_entry_type(index, term) == CR_ENTRY_CONFIG) {
        entry_config(&c, index, term);
        cr_config_encode(&c, buf);
        return;
    }
    st_payload(buf, st_payload_len(index, term), index, term);
}

void st_payload(uint8_t *buf, size_t len, cr_index index, cr_term term)
{
    for (size_t i = 0; i < len; i++) {
        buf[i] = (uint8_t)(index * 131 + term * 7 + i * 13 + (i >> 8) + 1);
    }
}

bool st_entry_ok(const struct cr_recovery *r, cr_index index, cr_term term)
{
    const struct cr_entry *e;
    uint8_t expect[512];
    size_t len = st_payload_len(index, term);
    if (r->n == 0 || index < r->first || index >= r->first + r->n) {
        return false;
    }
    e = &r->entries[index - r->first];
    if (e->term != term || e->type != st_entry_type(index, term) ||
        e->buf.len != len) {
        return false;
    }
    st_entry_payload(expect, index, term);
    return len == 0 || memcmp(e->buf.base, expect, len) == 0;
}

cr_index st_last_index(const struct cr_recovery *r)
{
    if (r->n > 0) {
        return r->first + r->n - 1;
    }
    return r->has_snapshot ? r->snapshot.index : 0;
}

void st_upd_init(struct st_upd *b, uint64_t seq)
{
    memset(b, 0, sizeof *b);
    b->u.persist_seq = seq;
}

void st_upd_entries(struct st_upd *b, cr_index first, unsigned n, cr_term t)
{
    assert_true(n <= ST_MAX_ENTRIES);
    b->u.flags |= CR_UPDATE_ENTRIES;
    b->u.entries_first = first;
    b->u.n_entries = n;
    b->u.entries = b->e;
    for (unsigned i = 0; i < n; i++) {
        cr_index index = first + i;
        size_t len = st_payload_len(index, t);
        b->e[i].term = t;
        b->e[i].type = st_entry_type(index, t);
        b->e[i].buf.len = len;
        b->e[i].buf.base = NULL;
        b->e[i].batch = NULL;
        if (len > 0) {
            b->e[i].buf.base = malloc(len);
            assert_non_null(b->e[i].buf.base);
            st_entry_payload(b->e[i].buf.base, index, t);
        }
    }
    b->u.persist_last_index = n > 0 ? first + n - 1 : first - 1;
}

void st_upd_hs(struct st_upd *b, cr_term term, cr_id vote, cr_index commit)
{
    b->u.flags |= CR_UPDATE_HARD_STATE;
    b->u.hard_state.term = term;
    b->u.hard_state.vote = vote;
    b->u.hard_state.commit = commit;
}

void st_upd_snapshot(struct st_upd *b, cr_index index, cr_term term)
{
    b->u.flags |= CR_UPDATE_SNAPSHOT;
    st_snapshot_meta(&b->u.snapshot, index, term);
    if (!(b->u.flags & CR_UPDATE_ENTRIES)) {
        b->u.persist_last_index = index;
    }
}

void st_upd_free(struct st_upd *b)
{
    for (unsigned i = 0; i < b->u.n_entries; i++) {
        free(b->e[i].buf.base);
        b->e[i].buf.base = NULL;
    }
}

/* ---------------------------------------------------------------------------
 * Snapshots
 * ------------------------------------------------------------------------- */

void st_config(struct cr_config *c, unsigned n)
{
    memset(c, 0, sizeof *c);
    for (unsigned i = 1; i <= n; i++) {
        char address[64];
        snprintf(address, sizeof address, "host-%u:900%u", i, i);
        assert_int_equal(cr_config_add(c, i, CR_VOTER, address), 0);
    }
}

void st_snapshot_meta(struct cr_snapshot_meta *m, cr_index index, cr_term t)
{
    memset(m, 0, sizeof *m);
    m->index = index;
    m->term = t;
    m->config_index = index > 1 ? index / 2 : 1;
    st_config(&m->config, 3);
}

size_t st_snapshot_size(cr_index index, cr_term term)
{
    return (size_t)((index * 977 + term * 131) % 20000);
}

static void snapshot_bytes(uint8_t *buf,
                           size_t len,
                           size_t pos,
                           cr_index index,
                           cr_term term)
{
    for (size_t i = 0; i < len; i++) {
        size_t k = pos + i;
        buf[i] = (uint8_t)(index * 3 + term * 5 + k * 7 + (k >> 9));
    }
}

int st_write_snapshot(const struct cr_fs *fs,
                      const char *dir,
                      cr_index index,
                      cr_term term,
                      unsigned keep)
{
    struct cr_snapshot_writer *w;
    struct cr_snapshot_meta meta;
    char errmsg[CR_ERRMSG_SIZE];
    uint8_t buf[3001];
    size_t size = st_snapshot_size(index, term);
    size_t pos = 0;
    int rv;
    st_snapshot_meta(&meta, index, term);
    rv = cr_snapshot_writer_open(&w, dir, fs, &meta, errmsg);
    if (rv != 0) {
        return rv;
    }
    while (pos < size) {
        /* Chunks of changing sizes. */
        size_t n = 1 + (pos * 7 + 13) % sizeof buf;
        if (n > size - pos) {
            n = size - pos;
        }
        snapshot_bytes(buf, n, pos, index, term);
        rv = cr_snapshot_writer_write(w, buf, n);
        if (rv != 0) {
            cr_snapshot_writer_abort(w);
            return rv;
        }
        pos += n;
    }
    return cr_snapshot_writer_commit(w, keep, NULL);
}

int st_check_snapshot(const struct cr_fs *fs,
                      const char *path,
                      cr_index index,
                      cr_term term)
{
    struct cr_snapshot_reader *r;
    struct cr_snapshot_meta meta, expect_meta;
    char errmsg[CR_ERRMSG_SIZE];
    uint8_t buf[1000], expect[1000];
    uint64_t size, pos = 0;
    size_t n;
    int rv;
    rv = cr_snapshot_reader_open(&r, path, fs, &meta, &size, errmsg);
    if (rv != 0) {
        return rv;
    }
    st_snapshot_meta(&expect_meta, index, term);
    if (meta.index != index || meta.term != term ||
        meta.config_index != expect_meta.config_index ||
        !cr_config_equal(&meta.config, &expect_meta.config) ||
        size != st_snapshot_size(index, term)) {
        cr_snapshot_reader_close(r);
        return CR_ECORRUPT;
    }
    for (;;) {
        /* Reads of changing sizes too. */
        size_t want = 1 + (size_t)(pos * 3 % sizeof buf);
        rv = cr_snapshot_reader_read(r, buf, want, &n);
        if (rv != 0 || n == 0) {
            break;
        }
        snapshot_bytes(expect, n, (size_t)pos, index, term);
        if (memcmp(buf, expect, n) != 0) {
            rv = CR_ECORRUPT;
            break;
        }
        pos += n;
    }
    cr_snapshot_reader_close(r);
    if (rv == 0 && pos != size) {
        rv = CR_ECORRUPT;
    }
    return rv;
}

/* ---------------------------------------------------------------------------
 * The storage
 * ------------------------------------------------------------------------- */

int st_open(struct cr_storage **s,
            const struct cr_fs *fs,
            struct st_alloc *sa,
            struct st_waiter *w,
            struct cr_recovery *rec,
            char *errmsg)
{
    struct cr_storage_options o;
    cr_storage_options_default(&o);
    o.segment_size = ST_SEGMENT;
    o.cluster_id = 42;
    return cr_storage_open(s, ST_DIR, &o, fs, &sa->a, st_on_done, w, rec,
                           errmsg);
}

int st_submit_wait(struct cr_storage *s,
                   struct st_waiter *w,
                   const struct cr_update *u)
{
    int rv = cr_storage_submit(s, u);
    if (rv != 0) {
        return rv;
    }
    return st_wait(w, u->persist_seq, ST_WAIT_MS);
}

void st_seg_path(char *buf, size_t len, uint64_t seq)
{
    snprintf(buf, len, "%s/wal-%016" PRIu64, ST_DIR, seq);
}

uint64_t st_scan_segment(const uint8_t *buf,
                         size_t len,
                         uint64_t seq,
                         struct st_rec *out,
                         unsigned max,
                         unsigned *n)
{
    uint64_t off = CR__SEG_HEADER;
    while (off < len && cr__batch_valid(buf + off, len - off)) {
        uint64_t body = off + CR__REC_HEADER;
        uint64_t end = body + cr__get64(buf + off + 16);
        uint64_t at = body;
        while (at < end) {
            struct cr__rec r;
            const char *why = "";
            if (cr__rec_decode(buf + at, (size_t)(end - at), &r, &why) !=
                    CR__REC_OK ||
                r.type == CR__REC_BATCH) {
                fail_msg("segment %" PRIu64 " offset %" PRIu64
                         ": a bad record (%s) in a valid batch",
                         seq, at, why);
            }
            assert_true(*n < max);
            out[*n].seg = seq;
            out[*n].batch = off;
            out[*n].batch_end = end;
            out[*n].off = at;
            out[*n].size = r.size;
            out[*n].type = r.type;
            out[*n].etype = r.etype;
            out[*n].index = r.index;
            out[*n].term = r.term;
            out[*n].len = r.len;
            (*n)++;
            at += r.size;
        }
        off = end;
    }
    return off;
}

unsigned st_scan(struct fs_fault *ff, struct st_rec *out, unsigned max)
{
    unsigned n = 0;
    uint64_t newest = st_newest_segment(ff);
    for (uint64_t seq = 1; seq <= newest; seq++) {
        char path[64];
        uint8_t *buf;
        size_t len;
        st_seg_path(path, sizeof path, seq);
        if (fs_fault_read(ff, path, &buf, &len) != 0) {
            continue;
        }
        (void)st_scan_segment(buf, len, seq, out, max, &n);
        free(buf);
    }
    return n;
}

static void on_seg_name(void *arg, const char *name)
{
    uint64_t *newest = arg;
    uint64_t seq = 0;
    if (strncmp(name, "wal-", 4) != 0) {
        return;
    }
    for (const char *p = name + 4; *p != '\0'; p++) {
        if (*p < '0' || *p > '9') {
            return;
        }
        seq = seq * 10 + (uint64_t)(*p - '0');
    }
    if (seq > *newest) {
        *newest = seq;
    }
}

uint64_t st_newest_segment(struct fs_fault *ff)
{
    uint64_t newest = 0;
    fs_fault_names(ff, ST_DIR, on_seg_name, &newest);
    return newest;
}

bool st_contains(const char *haystack, const char *needle)
{
    return strstr(haystack, needle) != NULL;
}

/* ---------------------------------------------------------------------------
 * Saved directories
 * ------------------------------------------------------------------------- */

static void on_saved_name(void *arg, const char *name)
{
    struct st_saved *sv = arg;
    assert_true(sv->n < 32);
    snprintf(sv->name[sv->n++], sizeof sv->name[0], "%s", name);
}

void st_save(struct fs_fault *ff, struct st_saved *sv)
{
    const struct cr_fs *fs = fs_fault_fs(ff);
    memset(sv, 0, sizeof *sv);
    assert_int_equal(fs->list(fs->data, ST_DIR, on_saved_name, sv), 0);
    for (unsigned i = 0; i < sv->n; i++) {
        char path[128];
        snprintf(path, sizeof path, "%s/%s", ST_DIR, sv->name[i]);
        assert_int_equal(fs_fault_read(ff, path, &sv->buf[i], &sv->len[i]), 0);
    }
}

struct fs_fault *st_restore(const struct st_saved *sv)
{
    struct fs_fault *ff = fs_fault_new();
    const struct cr_fs *fs = fs_fault_fs(ff);
    assert_int_equal(fs->mkdir(fs->data, ST_DIR), 0);
    for (unsigned i = 0; i < sv->n; i++) {
        char path[128];
        snprintf(path, sizeof path, "%s/%s", ST_DIR, sv->name[i]);
        assert_int_equal(fs_fault_write(ff, path, sv->buf[i], sv->len[i]), 0);
    }
    return ff;
}

void st_saved_free(struct st_saved *sv)
{
    for (unsigned i = 0; i < sv->n; i++) {
        free(sv->buf[i]);
    }
    sv->n = 0;
}

int st_core_load(const struct cr_recovery *rec, const struct cr_alloc *a)
{
    struct cr_core *c = malloc(sizeof *c);
    int rv;
    assert_non_null(c);
    assert_int_equal(cr_core_init(c, 1, 42, NULL, a, 1, 0), 0);
    rv = cr_core_load(c, &rec->hs, rec->has_snapshot ? &rec->snapshot : NULL,
                      rec->first, rec->entries, rec->n);
    cr_core_close(c);
    free(c);
    return rv;
}
