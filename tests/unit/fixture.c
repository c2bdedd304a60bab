/* The unit tests' fixture; see fixture.h. */
#include "fixture.h"

#include <string.h>

/* ---------------------------------------------------------------------------
 * Allocators
 * ------------------------------------------------------------------------- */

static bool should_fail(struct fx *f)
{
    f->n_allocs++;
    if (f->fail_at != 0 && (f->n_allocs == f->fail_at ||
                            (f->fail_repeat && f->n_allocs > f->fail_at))) {
        f->n_failed++;
        return true;
    }
    return false;
}

static void *plain_malloc(void *data, size_t size)
{
    struct fx *f = data;
    void *p = test_malloc(size);
    if (p != NULL) {
        f->n_live++;
    }
    return p;
}

static void *plain_realloc(void *data, void *ptr, size_t size)
{
    struct fx *f = data;
    void *p = test_realloc(ptr, size);
    if (p != NULL && ptr == NULL) {
        f->n_live++;
    }
    return p;
}

static void *fx_malloc(void *data, size_t size)
{
    struct fx *f = data;
    assert_true(size > 0);
    if (should_fail(f)) {
        return NULL;
    }
    return plain_malloc(data, size);
}

static void *fx_realloc(void *data, void *ptr, size_t size)
{
    struct fx *f = data;
    assert_true(size > 0);
    if (should_fail(f)) {
        return NULL;
    }
    return plain_realloc(data, ptr, size);
}

static void fx_free_block(void *data, void *ptr)
{
    struct fx *f = data;
    if (ptr != NULL) {
        f->n_live--;
        test_free(ptr);
    }
}

/* ---------------------------------------------------------------------------
 * Setup
 * ------------------------------------------------------------------------- */

void fx_options(struct cr_options *o)
{
    cr_options_default(o);
    o->election_timeout = FX_ET;
    o->heartbeat_interval = FX_HB;
    o->snapshot_timeout = 10 * FX_ET;
}

struct fx *fx_new_seeded(unsigned n, const struct cr_options *opt, uint64_t s)
{
    struct fx *f = test_calloc(1, sizeof *f);
    assert_non_null(f);
    assert_true(n >= 1 && n <= FX_MAX);
    f->alloc.data = f;
    f->alloc.malloc = fx_malloc;
    f->alloc.realloc = fx_realloc;
    f->alloc.free = fx_free_block;
    f->plain.data = f;
    f->plain.malloc = plain_malloc;
    f->plain.realloc = plain_realloc;
    f->plain.free = fx_free_block;
    if (opt != NULL) {
        f->opt = *opt;
    } else {
        fx_options(&f->opt);
    }
    f->seed = s;
    f->n = n;
    f->hash = 1469598103934665603ull;
    for (cr_id id = 1; id <= n; id++) {
        assert_int_equal(cr_core_init(&f->core[id], id, FX_CLUSTER, &f->opt,
                                      &f->alloc, s + id, f->now),
                         0);
        f->live[id] = true;
        f->disk[id].first = 1;
    }
    return f;
}

struct fx *fx_new(unsigned n, const struct cr_options *opt)
{
    return fx_new_seeded(n, opt, 0);
}

static void msg_release(struct fx *f, struct fx_msg *m)
{
    if (m->entries != NULL) {
        for (unsigned i = 0; i < m->m.append_entries.n_entries; i++) {
            cr_batch_unref(&f->plain, m->entries[i].batch);
        }
        test_free(m->entries);
    }
    if (m->meta != NULL) {
        test_free(m->meta);
    }
    memset(m, 0, sizeof *m);
}

static void disk_truncate(struct fx *f, struct fx_disk *d, unsigned keep)
{
    for (unsigned i = keep; i < d->n; i++) {
        cr_batch_unref(&f->plain, d->entries[i].batch);
    }
    if (keep < d->n) {
        d->n = keep;
    }
}

void fx_kill(struct fx *f, cr_id id)
{
    if (f->live[id]) {
        cr_core_close(&f->core[id]);
        f->live[id] = false;
        /* The last update pointed into the core. */
        memset(&f->u[id], 0, sizeof f->u[id]);
    }
}

void fx_free(struct fx *f)
{
    for (cr_id id = 1; id <= FX_MAX; id++) {
        fx_kill(f, id);
        for (unsigned i = 0; i < f->n_box[id]; i++) {
            msg_release(f, &f->box[id][i]);
        }
        disk_truncate(f, &f->disk[id], 0);
        if (f->disk[id].entries != NULL) {
            test_free(f->disk[id].entries);
        }
    }
    if (f->n_live != 0) {
        print_error("%ld block(s) leaked (failing allocation %lu)\n", f->n_live,
                    f->fail_at);
        fail();
    }
    test_free(f);
}

void fx_config(struct cr_config *cfg, unsigned voters)
{
    memset(cfg, 0, sizeof *cfg);
    for (unsigned i = 1; i <= voters; i++) {
        char address[8] = {'s', (char)('0' + i % 10), 0};
        assert_int_equal(cr_config_add(cfg, i, CR_VOTER, address), 0);
    }
}

size_t fx_config_encode(const struct cr_config *cfg, uint8_t *buf)
{
    size_t len = cr_config_encoded_size(cfg);
    assert_true(len <= FX_CONFIG_BUF);
    cr_config_encode(cfg, buf);
    return len;
}

/* ---------------------------------------------------------------------------
 * Recording updates
 * ------------------------------------------------------------------------- */

static void mix(struct fx *f, uint64_t v)
{
    for (unsigned i = 0; i < 8; i++) {
        f->hash ^= (v >> (8 * i)) & 0xff;
        f->hash *= 1099511628211ull;
    }
}

static void disk_reserve(struct fx_disk *d, unsigned more)
{
    if (d->n + more > d->cap) {
        unsigned cap = d->cap == 0 ? 64 : d->cap;
        while (cap < d->n + more) {
            cap *= 2;
        }
        d->entries = test_realloc(d->entries, cap * sizeof *d->entries);
        assert_non_null(d->entries);
        d->cap = cap;
    }
}

/* Takes a reference on e's bytes, copying borrowed ones into a batch. */
static struct cr_entry entry_hold(struct fx *f, const struct cr_entry *e)
{
    struct cr_entry c = *e;
    if (c.batch != NULL) {
        cr_batch_ref(c.batch);
    } else if (c.buf.len > 0) {
        void *data = cr_batch_alloc(&f->plain, c.buf.len, &c.batch);
        assert_non_null(data);
        memcpy(data, e->buf.base, c.buf.len);
        c.buf.base = data;
    }
    return c;
}

static void disk_write(struct fx *f, cr_id id, const struct cr_update *u)
{
    struct fx_disk *d = &f->disk[id];
    if (u->flags & CR_UPDATE_SNAPSHOT) {
        disk_truncate(f, d, 0);
        d->snapshot = u->snapshot;
        d->has_snapshot = true;
        d->first = u->snapshot.index + 1;
    }
    if (u->flags & CR_UPDATE_ENTRIES) {
        assert_true(u->entries_first >= d->first);
        assert_true(u->entries_first <= d->first + d->n);
        disk_truncate(f, d, (unsigned)(u->entries_first - d->first));
        disk_reserve(d, u->n_entries);
        for (unsigned i = 0; i < u->n_entries; i++) {
            d->entries[d->n++] = entry_hold(f, &u->entries[i]);
        }
    }
    if (u->flags & CR_UPDATE_HARD_STATE) {
        d->hs.term = u->hard_state.term;
        d->hs.vote = u->hard_state.vote;
    }
    /* As craft's storage does: the commit index rides with any write. */
    if (u->hard_state.commit > d->hs.commit) {
        d->hs.commit = u->hard_state.commit;
    }
}

static void box_push(struct fx *f, cr_id from, const struct cr_message *m)
{
    struct fx_msg *b;
    assert_true(f->n_box[from] < FX_BOX);
    b = &f->box[from][f->n_box[from]++];
    memset(b, 0, sizeof *b);
    b->m = *m;
    if (m->type == CR_MSG_APPEND_ENTRIES && m->append_entries.n_entries > 0) {
        unsigned n = m->append_entries.n_entries;
        b->entries = test_malloc(n * sizeof *b->entries);
        assert_non_null(b->entries);
        for (unsigned i = 0; i < n; i++) {
            b->entries[i] = entry_hold(f, &m->append_entries.entries[i]);
        }
        b->m.append_entries.entries = b->entries;
    }
    if (m->type == CR_MSG_INSTALL_SNAPSHOT && m->install_snapshot.meta) {
        b->meta = test_malloc(sizeof *b->meta);
        assert_non_null(b->meta);
        *b->meta = *m->install_snapshot.meta;
        b->m.install_snapshot.meta = b->meta;
    }
}

static void record(struct fx *f, cr_id id, int rv)
{
    const struct cr_update *u = &f->u[id];
    f->rv[id] = rv;
    mix(f, id);
    mix(f, (uint64_t)rv);
    mix(f, u->flags);
    mix(f, u->persist_seq);
    mix(f, u->role);
    mix(f, u->term);
    mix(f, u->leader);
    mix(f, u->deadline);
    mix(f, u->n_committed);
    if (u->persist_seq != 0) {
        assert_true(u->persist_seq > f->unpersisted_seq[id]);
        f->unpersisted_seq[id] = u->persist_seq;
        f->unpersisted_last[id] = u->persist_last_index;
        disk_write(f, id, u);
    }
    if (u->flags & CR_UPDATE_SNAPSHOT) {
        f->applied[id] = u->snapshot.index;
    }
    if (u->n_committed > 0) {
        /* Committed entries come out in order, each once. */
        assert_int_equal(u->committed_first, f->applied[id] + 1);
        f->applied[id] += u->n_committed;
        f->n_applied[id] += u->n_committed;
    }
    for (unsigned i = 0; i < u->n_reads; i++) {
        assert_true(f->n_reads[id] < 64);
        f->reads[id][f->n_reads[id]++] = u->reads[i];
        mix(f, u->reads[i].id);
        mix(f, u->reads[i].index);
    }
    for (unsigned i = 0; i < u->n_messages; i++) {
        const struct cr_message *m = &u->messages[i];
        assert_int_equal(m->from, id);
        assert_int_equal(m->cluster_id, FX_CLUSTER);
        mix(f, m->type);
        mix(f, m->to);
        mix(f, m->term);
        box_push(f, id, m);
    }
}

int fx_step(struct fx *f, cr_id id, struct cr_event *ev)
{
    unsigned long failed = f->n_failed;
    int rv;
    assert_true(f->live[id]);
    ev->now = f->now;
    rv = cr_core_step(&f->core[id], ev, &f->u[id]);
    if (f->n_failed != failed && rv == 0) {
        /* An allocation failed inside: the step must say so. */
        print_error(
            "allocation %lu failed in a step (event %d) of core %llu"
            " that returned 0\n",
            f->fail_at, (int)ev->type, (unsigned long long)id);
        fail();
    }
    if (f->n_failed == failed && rv == CR_ENOMEM) {
        print_error("CR_ENOMEM without a failed allocation (event %d)\n",
                    (int)ev->type);
        fail();
    }
    record(f, id, rv);
    return rv;
}

/* ---------------------------------------------------------------------------
 * Bootstrap, load, restart
 * ------------------------------------------------------------------------- */

int fx_bootstrap_config(struct fx *f, cr_id id, const struct cr_config *cfg)
{
    unsigned long failed = f->n_failed;
    int rv = cr_core_bootstrap(&f->core[id], cfg, &f->u[id]);
    if (f->n_failed != failed) {
        assert_int_equal(rv, CR_ENOMEM);
    }
    record(f, id, rv);
    return rv;
}

int fx_bootstrap(struct fx *f, unsigned voters)
{
    fx_config(&f->config, voters);
    for (cr_id id = 1; id <= voters; id++) {
        int rv = fx_bootstrap_config(f, id, &f->config);
        if (rv != 0) {
            return rv;
        }
        rv = fx_persist(f, id);
        if (rv != 0) {
            return rv;
        }
    }
    return 0;
}

static int load(struct fx *f, cr_id id)
{
    struct fx_disk *d = &f->disk[id];
    unsigned long failed = f->n_failed;
    int rv = cr_core_load(&f->core[id], &d->hs,
                          d->has_snapshot ? &d->snapshot : NULL, d->first,
                          d->entries, d->n);
    if (f->n_failed != failed) {
        assert_int_equal(rv, CR_ENOMEM);
    }
    f->applied[id] = d->has_snapshot ? d->snapshot.index : 0;
    f->unpersisted_seq[id] = 0;
    f->persisted_seq[id] = 0;
    return rv;
}

int fx_load(struct fx *f,
            cr_id id,
            cr_term term,
            cr_id vote,
            cr_index commit,
            const cr_term *terms,
            unsigned n)
{
    struct fx_disk *d = &f->disk[id];
    assert_true(n >= 1);
    if (f->config.n == 0) {
        fx_config(&f->config, 3);
    }
    disk_truncate(f, d, 0);
    d->first = 1;
    d->has_snapshot = false;
    disk_reserve(d, n);
    for (unsigned i = 0; i < n; i++) {
        struct cr_entry *e = &d->entries[d->n++];
        size_t len = i == 0 ? cr_config_encoded_size(&f->config) : 1;
        uint8_t *data = cr_batch_alloc(&f->plain, len, &e->batch);
        assert_non_null(data);
        e->term = terms[i];
        e->buf.base = data;
        e->buf.len = len;
        if (i == 0) {
            e->type = CR_ENTRY_CONFIG;
            cr_config_encode(&f->config, data);
        } else {
            e->type = CR_ENTRY_COMMAND;
            data[0] = (uint8_t)(i + 1);
        }
    }
    d->hs.term = term;
    d->hs.vote = vote;
    d->hs.commit = commit;
    return load(f, id);
}

int fx_restart(struct fx *f, cr_id id)
{
    fx_kill(f, id);
    assert_int_equal(cr_core_init(&f->core[id], id, FX_CLUSTER, &f->opt,
                                  &f->alloc, f->seed + id, f->now),
                     0);
    f->live[id] = true;
    return load(f, id);
}

/* ---------------------------------------------------------------------------
 * Events
 * ------------------------------------------------------------------------- */

int fx_tick(struct fx *f, cr_id id)
{
    struct cr_event ev = {.type = CR_EVENT_TICK};
    return fx_step(f, id, &ev);
}

int fx_campaign(struct fx *f, cr_id id)
{
    struct cr_event ev = {.type = CR_EVENT_CAMPAIGN};
    return fx_step(f, id, &ev);
}

int fx_persist(struct fx *f, cr_id id)
{
    struct cr_event ev = {.type = CR_EVENT_PERSISTED};
    int rv;
    if (f->unpersisted_seq[id] <= f->persisted_seq[id]) {
        return 0;
    }
    ev.persisted.seq = f->unpersisted_seq[id];
    ev.persisted.last_index = f->unpersisted_last[id];
    rv = fx_step(f, id, &ev);
    if (rv == 0 || rv == CR_ENOMEM) {
        f->persisted_seq[id] = ev.persisted.seq;
    }
    return rv;
}

int fx_propose(struct fx *f, cr_id id, unsigned n, size_t len)
{
    static uint8_t bytes[1 << 16];
    struct cr_entry entries[64];
    struct cr_event ev = {.type = CR_EVENT_PROPOSE};
    assert_true(n <= 64 && len <= sizeof bytes);
    for (size_t i = 0; i < len; i++) {
        bytes[i] = (uint8_t)(i * 7 + 1);
    }
    memset(entries, 0, sizeof entries);
    for (unsigned i = 0; i < n; i++) {
        entries[i].type = CR_ENTRY_COMMAND;
        entries[i].buf.base = len > 0 ? bytes : NULL;
        entries[i].buf.len = len;
    }
    ev.propose.entries = entries;
    ev.propose.n = n;
    return fx_step(f, id, &ev);
}

int fx_change(struct fx *f, cr_id id, enum cr_change_type type, cr_id target)
{
    struct cr_event ev = {.type = CR_EVENT_CHANGE};
    ev.change.type = type;
    ev.change.id = target;
    ev.change.address = "new";
    return fx_step(f, id, &ev);
}

int fx_transfer(struct fx *f, cr_id id, cr_id target)
{
    struct cr_event ev = {.type = CR_EVENT_TRANSFER};
    ev.transfer.target = target;
    return fx_step(f, id, &ev);
}

int fx_read(struct fx *f, cr_id id, uint64_t read_id)
{
    struct cr_event ev = {.type = CR_EVENT_READ};
    ev.read.id = read_id;
    return fx_step(f, id, &ev);
}

int fx_snapshot(struct fx *f, cr_id id, cr_index index, cr_index trailing)
{
    struct cr_event ev = {.type = CR_EVENT_SNAPSHOT};
    int rv;
    ev.snapshot.index = index;
    ev.snapshot.trailing = trailing;
    rv = fx_step(f, id, &ev);
    if (rv == 0) {
        /* The node saved the snapshot itself; its log stays on disk. */
        f->disk[id].snapshot = *cr_core_snapshot(&f->core[id]);
        f->disk[id].has_snapshot = true;
    }
    return rv;
}

int fx_receive(struct fx *f, cr_id id, const struct cr_message *m)
{
    struct cr_event ev = {.type = CR_EVENT_RECEIVE};
    ev.receive.message = m;
    return fx_step(f, id, &ev);
}

void fx_msg_init(struct cr_message *m,
                 enum cr_message_type type,
                 cr_id from,
                 cr_id to,
                 cr_term term)
{
    memset(m, 0, sizeof *m);
    m->type = type;
    m->from = from;
    m->to = to;
    m->term = term;
    m->cluster_id = FX_CLUSTER;
}

/* ---------------------------------------------------------------------------
 * Outboxes
 * ------------------------------------------------------------------------- */

static bool matches(const struct cr_message *m,
                    cr_id to,
                    enum cr_message_type type)
{
    return (to == 0 || m->to == to) && (type == FX_ANY || m->type == type);
}

unsigned fx_count(const struct fx *f,
                  cr_id from,
                  cr_id to,
                  enum cr_message_type type)
{
    unsigned n = 0;
    for (unsigned i = 0; i < f->n_box[from]; i++) {
        n += matches(&f->box[from][i].m, to, type) ? 1 : 0;
    }
    return n;
}

const struct cr_message *fx_peek(const struct fx *f,
                                 cr_id from,
                                 cr_id to,
                                 enum cr_message_type type)
{
    for (unsigned i = 0; i < f->n_box[from]; i++) {
        if (matches(&f->box[from][i].m, to, type)) {
            return &f->box[from][i].m;
        }
    }
    return NULL;
}

/* Removes message i of from's box into *out. */
static void box_take(struct fx *f, cr_id from, unsigned i, struct fx_msg *out)
{
    *out = f->box[from][i];
    memmove(&f->box[from][i], &f->box[from][i + 1],
            (f->n_box[from] - i - 1) * sizeof f->box[from][0]);
    f->n_box[from]--;
    if (out->entries != NULL) {
        out->m.append_entries.entries = out->entries;
    }
    if (out->meta != NULL) {
        out->m.install_snapshot.meta = out->meta;
    }
}

static void deliver_at(struct fx *f, cr_id from, unsigned i)
{
    struct fx_msg m;
    box_take(f, from, i, &m);
    if (f->live[m.m.to]) {
        (void)fx_receive(f, m.m.to, &m.m);
    }
    msg_release(f, &m);
}

bool fx_deliver_one(struct fx *f,
                    cr_id from,
                    cr_id to,
                    enum cr_message_type type)
{
    for (unsigned i = 0; i < f->n_box[from]; i++) {
        if (matches(&f->box[from][i].m, to, type)) {
            deliver_at(f, from, i);
            return true;
        }
    }
    return false;
}

unsigned fx_deliver_type(struct fx *f,
                         cr_id from,
                         cr_id to,
                         enum cr_message_type type)
{
    unsigned n = 0;
    while (fx_deliver_one(f, from, to, type)) {
        n++;
    }
    return n;
}

unsigned fx_deliver(struct fx *f, cr_id from, cr_id to)
{
    return fx_deliver_type(f, from, to, FX_ANY);
}

unsigned fx_deliver_if(struct fx *f,
                       cr_id from,
                       cr_id to,
                       bool (*pred)(const struct cr_message *m))
{
    unsigned i = 0, n = 0;
    while (i < f->n_box[from]) {
        const struct cr_message *m = &f->box[from][i].m;
        if (matches(m, to, FX_ANY) && pred(m)) {
            deliver_at(f, from, i);
            n++;
        } else {
            i++;
        }
    }
    return n;
}

const struct cr_read_result *fx_read_result(const struct fx *f,
                                            cr_id id,
                                            uint64_t read_id)
{
    const struct cr_read_result *r = NULL;
    for (unsigned i = 0; i < f->n_reads[id]; i++) {
        if (f->reads[id][i].id == read_id) {
            r = &f->reads[id][i];
        }
    }
    return r;
}

void fx_drop(struct fx *f, cr_id from, cr_id to)
{
    fx_drop_type(f, from, to, FX_ANY);
}

void fx_drop_type(struct fx *f, cr_id from, cr_id to, enum cr_message_type type)
{
    unsigned i = 0;
    while (i < f->n_box[from]) {
        if (matches(&f->box[from][i].m, to, type)) {
            struct fx_msg m;
            box_take(f, from, i, &m);
            msg_release(f, &m);
        } else {
            i++;
        }
    }
}

void fx_flush(struct fx *f)
{
    for (unsigned round = 0; round < 10000; round++) {
        bool busy = false;
        for (cr_id id = 1; id <= f->n; id++) {
            if (f->live[id] && f->unpersisted_seq[id] > f->persisted_seq[id]) {
                (void)fx_persist(f, id);
                busy = true;
            }
        }
        for (cr_id from = 1; from <= f->n; from++) {
            while (f->n_box[from] > 0) {
                cr_id to = f->box[from][0].m.to;
                if (f->cut[from] || f->cut[to] || !f->live[to]) {
                    struct fx_msg m;
                    box_take(f, from, 0, &m);
                    msg_release(f, &m);
                } else {
                    deliver_at(f, from, 0);
                }
                busy = true;
            }
        }
        if (!busy) {
            return;
        }
    }
    fail_msg("the cluster did not settle");
}

void fx_run(struct fx *f, cr_msec ms)
{
    cr_msec end = f->now + ms;
    while (f->now < end) {
        f->now += 10;
        for (cr_id id = 1; id <= f->n; id++) {
            if (f->live[id]) {
                (void)fx_tick(f, id);
            }
        }
        fx_flush(f);
    }
}

void fx_elect(struct fx *f, cr_id id)
{
    assert_int_equal(fx_campaign(f, id), 0);
    fx_flush(f);
    assert_int_equal(cr_core_role(&f->core[id]), CR_LEADER);
}

static bool is_vote(enum cr_message_type t)
{
    return t == CR_MSG_REQUEST_VOTE || t == CR_MSG_REQUEST_VOTE_RESULT;
}

void fx_elect_votes_only(struct fx *f, cr_id id)
{
    assert_int_equal(fx_campaign(f, id), 0);
    for (unsigned round = 0; round < 100; round++) {
        if (cr_core_role(&f->core[id]) == CR_LEADER) {
            return;
        }
        for (cr_id i = 1; i <= f->n; i++) {
            if (f->live[i]) {
                (void)fx_persist(f, i);
            }
        }
        for (cr_id from = 1; from <= f->n; from++) {
            unsigned i = 0;
            while (i < f->n_box[from]) {
                const struct cr_message *m = &f->box[from][i].m;
                if (!is_vote(m->type)) {
                    i++;
                } else if (f->cut[from] || f->cut[m->to]) {
                    struct fx_msg drop;
                    box_take(f, from, i, &drop);
                    msg_release(f, &drop);
                } else {
                    deliver_at(f, from, i);
                }
            }
        }
    }
    assert_int_equal(cr_core_role(&f->core[id]), CR_LEADER);
}

/* ---------------------------------------------------------------------------
 * Updates
 * ------------------------------------------------------------------------- */

unsigned fx_upd_count(const struct cr_update *u,
                      enum cr_message_type type,
                      cr_id to)
{
    unsigned n = 0;
    for (unsigned i = 0; i < u->n_messages; i++) {
        n += matches(&u->messages[i], to, type) ? 1 : 0;
    }
    return n;
}

const struct cr_message *fx_upd_find(const struct cr_update *u,
                                     enum cr_message_type type,
                                     cr_id to)
{
    for (unsigned i = 0; i < u->n_messages; i++) {
        if (matches(&u->messages[i], to, type)) {
            return &u->messages[i];
        }
    }
    return NULL;
}
