/* The simulator's engine: event queue, network, disks, nodes, clients, and
 * the safety checks run after every step. See sim.h. */
#include "sim.h"

#include <assert.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------------
 * Events
 * ------------------------------------------------------------------------- */

enum sim_event_type {
    SIM_EV_DELIVER = 1,
    SIM_EV_PERSIST,
    SIM_EV_TICK,
};

struct sim_msg
{
    struct cr_message m;
    struct cr_entry *entries;
    unsigned n_entries; /* references held, whatever a filter trims */
    struct cr_snapshot_meta meta;
    struct sim_app app; /* the snapshot's state, for INSTALL_SNAPSHOT */
};

struct sim_event
{
    cr_msec time;
    uint64_t seq;
    enum sim_event_type type;
    cr_id node;
    unsigned incarnation;
    struct sim_msg *msg;
};

/* A write of one update, durable once its completion event runs. */
struct sim_write
{
    struct sim_write *next;
    uint64_t seq;
    cr_index last_index;
    bool has_hs;
    struct cr_hard_state hs;
    bool has_entries;
    cr_index entries_first;
    struct cr_entry *entries;
    unsigned n;
    bool has_snapshot;
    struct cr_snapshot_meta snapshot;
    struct sim_app app;
};

/* The allocator of the cores, which also frees the batches they share
 * with the simulator's disks and messages. One simulation runs at a time. */
static const struct cr_alloc *sim_a = &cr_alloc_default;

static void *xmalloc(size_t n)
{
    void *p = malloc(n == 0 ? 1 : n);
    if (p == NULL) {
        abort();
    }
    return p;
}

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n == 0 ? 1 : n);
    if (p == NULL) {
        abort();
    }
    return p;
}

static bool ev_less(const struct sim_event *a, const struct sim_event *b)
{
    return a->time < b->time || (a->time == b->time && a->seq < b->seq);
}

static void heap_push(struct sim *s, struct sim_event ev)
{
    unsigned i;
    if (s->heap_n == s->heap_cap) {
        s->heap_cap = s->heap_cap == 0 ? 1024 : 2 * s->heap_cap;
        s->heap = xrealloc(s->heap, s->heap_cap * sizeof *s->heap);
    }
    ev.seq = ++s->event_seq;
    i = s->heap_n++;
    while (i > 0) {
        unsigned parent = (i - 1) / 2;
        if (!ev_less(&ev, &s->heap[parent])) {
            break;
        }
        s->heap[i] = s->heap[parent];
        i = parent;
    }
    s->heap[i] = ev;
}

static struct sim_event heap_pop(struct sim *s)
{
    struct sim_event top = s->heap[0];
    struct sim_event last = s->heap[--s->heap_n];
    unsigned i = 0;
    for (;;) {
        unsigned l = 2 * i + 1;
        unsigned r = l + 1;
        unsigned m = i;
        const struct sim_event *best = &last;
        if (l < s->heap_n && ev_less(&s->heap[l], best)) {
            m = l;
            best = &s->heap[l];
        }
        if (r < s->heap_n && ev_less(&s->heap[r], best)) {
            m = r;
        }
        if (m == i) {
            break;
        }
        s->heap[i] = s->heap[m];
        i = m;
    }
    if (s->heap_n > 0) {
        s->heap[i] = last;
    }
    return top;
}

/* ---------------------------------------------------------------------------
 * Randomness, tracing, failures
 * ------------------------------------------------------------------------- */

uint64_t sim_splitmix(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

uint64_t sim_rand(struct sim *s)
{
    return sim_splitmix(&s->rng);
}

double sim_randf(struct sim *s)
{
    return (double)(sim_rand(s) >> 11) / 9007199254740992.0;
}

uint64_t sim_rand_range(struct sim *s, uint64_t lo, uint64_t hi)
{
    if (hi <= lo) {
        return lo;
    }
    return lo + sim_rand(s) % (hi - lo + 1);
}

static const char *msg_name(enum cr_message_type t)
{
    switch (t) {
        case CR_MSG_REQUEST_VOTE:
            return "RequestVote";
        case CR_MSG_REQUEST_VOTE_RESULT:
            return "RequestVoteResult";
        case CR_MSG_APPEND_ENTRIES:
            return "AppendEntries";
        case CR_MSG_APPEND_ENTRIES_RESULT:
            return "AppendEntriesResult";
        case CR_MSG_INSTALL_SNAPSHOT:
            return "InstallSnapshot";
        case CR_MSG_TIMEOUT_NOW:
            return "TimeoutNow";
        case CR_MSG_READ_INDEX:
            return "ReadIndex";
        case CR_MSG_READ_INDEX_RESULT:
            return "ReadIndexResult";
    }
    return "?";
}

static void trace(struct sim *s,
                  cr_id node,
                  char kind,
                  const char *what,
                  cr_id peer,
                  cr_term term,
                  uint64_t a,
                  uint64_t b,
                  uint64_t c)
{
    struct sim_trace *t = &s->trace[s->trace_n++ % SIM_TRACE_RING];
    t->t = s->now;
    t->node = node;
    t->kind = kind;
    t->what = what;
    t->peer = peer;
    t->term = term;
    t->a = a;
    t->b = b;
    t->c = c;
    if (s->log != NULL) {
        fprintf(s->log,
                "t=%-6" PRIu64 " n%" PRIu64 " %c %-22s peer=%" PRIu64
                " term=%" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 "\n",
                t->t, t->node, t->kind, t->what, t->peer, t->term, t->a, t->b,
                t->c);
    }
}

static void trace_msg(struct sim *s, char kind, const struct cr_message *m)
{
    uint64_t a = 0, b = 0, c = 0;
    switch (m->type) {
        case CR_MSG_REQUEST_VOTE:
            a = m->request_vote.last_index;
            b = m->request_vote.last_term;
            c = m->request_vote.pre_vote;
            break;
        case CR_MSG_REQUEST_VOTE_RESULT:
            a = m->request_vote_result.granted;
            c = m->request_vote_result.pre_vote;
            break;
        case CR_MSG_APPEND_ENTRIES:
            a = m->append_entries.prev_index;
            b = m->append_entries.n_entries;
            c = m->append_entries.commit;
            break;
        case CR_MSG_APPEND_ENTRIES_RESULT:
            a = m->append_entries_result.success;
            b = m->append_entries_result.index;
            c = m->append_entries_result.hint_index;
            break;
        case CR_MSG_INSTALL_SNAPSHOT:
            a = m->install_snapshot.meta->index;
            b = m->install_snapshot.meta->term;
            break;
        default:
            break;
    }
    trace(s, kind == 'r' ? m->to : m->from, kind, msg_name(m->type),
          kind == 'r' ? m->from : m->to, m->term, a, b, c);
}

void sim_fail(struct sim *s, const char *fmt, ...)
{
    va_list ap;
    if (s->failed) {
        return;
    }
    s->failed = true;
    va_start(ap, fmt);
    vsnprintf(s->violation, sizeof s->violation, fmt, ap);
    va_end(ap);
}

void sim_report(struct sim *s, FILE *f)
{
    unsigned n = s->trace_n < SIM_TRACE_RING ? s->trace_n : SIM_TRACE_RING;
    fprintf(f, "  violation: %s\n", s->violation);
    fprintf(f, "  at simulated time %" PRIu64 " ms; last %u events:\n", s->now,
            n);
    for (unsigned i = s->trace_n - n; i < s->trace_n; i++) {
        const struct sim_trace *t = &s->trace[i % SIM_TRACE_RING];
        fprintf(f,
                "    t=%-6" PRIu64 " n%-2" PRIu64 " %c %-22s peer=%" PRIu64
                " term=%" PRIu64 " a=%" PRIu64 " b=%" PRIu64 " c=%" PRIu64 "\n",
                t->t, t->node, t->kind, t->what, t->peer, t->term, t->a, t->b,
                t->c);
    }
}

/* ---------------------------------------------------------------------------
 * Parameters and setup
 * ------------------------------------------------------------------------- */

void sim_params_default(struct sim_params *p)
{
    memset(p, 0, sizeof *p);
    p->nodes = 3;
    p->latency_min = 1;
    p->latency_max = 5;
    p->long_delay_max = 200;
    p->disk_min = 1;
    p->disk_max = 3;
    p->torn = 0.5;
    p->payload = 16;
    p->snapshot_every = 0;
    p->snapshot_trailing = 8;
    p->check = true;
    cr_options_default(&p->opt);
    p->opt.election_timeout = 100;
    p->opt.heartbeat_interval = 20;
    p->opt.snapshot_timeout = 500;
}

static void shadow_reserve(struct sim_node *n, cr_index index)
{
    if (index < n->shadow_cap) {
        return;
    }
    cr_index cap = n->shadow_cap == 0 ? 1024 : n->shadow_cap;
    while (cap <= index) {
        cap *= 2;
    }
    n->shadow = xrealloc(n->shadow, cap * sizeof *n->shadow);
    n->shadow_cap = cap;
}

static void disk_free(struct sim_disk *d)
{
    struct sim_write *w = d->pending;
    for (unsigned i = 0; i < d->n; i++) {
        cr_batch_unref(sim_a, d->entries[i].batch);
    }
    free(d->entries);
    while (w != NULL) {
        struct sim_write *next = w->next;
        for (unsigned i = 0; i < w->n; i++) {
            cr_batch_unref(sim_a, w->entries[i].batch);
        }
        free(w->entries);
        free(w);
        w = next;
    }
    memset(d, 0, sizeof *d);
}

static void grow_votes(struct sim *s, cr_term term)
{
    if (term < s->votes_cap) {
        return;
    }
    cr_term cap = s->votes_cap == 0 ? 256 : s->votes_cap;
    while (cap <= term) {
        cap *= 2;
    }
    size_t per = SIM_NODES_MAX + 1;
    s->voted_for = xrealloc(s->voted_for, cap * per * sizeof *s->voted_for);
    s->requested = xrealloc(s->requested, cap * per * sizeof *s->requested);
    memset(s->voted_for + s->votes_cap * per, 0,
           (cap - s->votes_cap) * per * sizeof *s->voted_for);
    memset(s->requested + s->votes_cap * per, 0,
           (cap - s->votes_cap) * per * sizeof *s->requested);
    s->leader_of_term =
        xrealloc(s->leader_of_term, cap * sizeof *s->leader_of_term);
    memset(s->leader_of_term + s->votes_cap, 0,
           (cap - s->votes_cap) * sizeof *s->leader_of_term);
    s->votes_cap = cap;
    s->leader_of_term_cap = cap;
}

static void committed_reserve(struct sim *s, cr_index index)
{
    if (index < s->committed_cap) {
        return;
    }
    cr_index cap = s->committed_cap == 0 ? 1024 : s->committed_cap;
    while (cap <= index) {
        cap *= 2;
    }
    s->committed = xrealloc(s->committed, cap * sizeof *s->committed);
    memset(s->committed + s->committed_cap, 0,
           (cap - s->committed_cap) * sizeof *s->committed);
    s->committed_cap = cap;
}

static uint64_t mix(uint64_t h, uint64_t v)
{
    h ^= v + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2);
    h *= 0xFF51AFD7ED558CCDull;
    return h ^ (h >> 33);
}

/* A fast 64-bit hash of a payload, eight bytes at a time. */
static uint64_t hash_bytes(const void *p, size_t n)
{
    const uint8_t *b = p;
    uint64_t h = 1469598103934665603ull ^ n;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, b, 8);
        h = (h ^ w) * 0x100000001B3ull;
        h ^= h >> 29;
        b += 8;
        n -= 8;
    }
    while (n > 0) {
        h = (h ^ *b++) * 0x100000001B3ull;
        n--;
    }
    return h ^ (h >> 32);
}

static uint64_t entry_op(const struct cr_entry *e)
{
    uint64_t op = 0;
    if (e->type == CR_ENTRY_COMMAND && e->buf.len >= 8) {
        memcpy(&op, e->buf.base, 8);
    }
    return op;
}

static uint64_t entry_hash(const struct cr_entry *e)
{
    return mix(mix((uint64_t)e->type, e->term),
               hash_bytes(e->buf.base, e->buf.len));
}

/* ---------------------------------------------------------------------------
 * Nodes
 * ------------------------------------------------------------------------- */

static void node_apply_update(struct sim *s,
                              struct sim_node *n,
                              const struct cr_update *u,
                              enum cr_role role_before,
                              cr_term term_before,
                              cr_index last_before);

static uint64_t node_seed(struct sim *s, struct sim_node *n)
{
    return mix(mix(s->seed, n->id), n->incarnation);
}

static void schedule_tick(struct sim *s, struct sim_node *n, cr_msec at)
{
    struct sim_event ev;
    if (at < s->now) {
        at = s->now;
    }
    if (n->tick_at != 0 && n->tick_at <= at) {
        return;
    }
    n->tick_at = at;
    memset(&ev, 0, sizeof ev);
    ev.time = at;
    ev.type = SIM_EV_TICK;
    ev.node = n->id;
    ev.incarnation = n->incarnation;
    heap_push(s, ev);
}

/* Steps one event into a node and carries out the update. */
static int node_step(struct sim *s,
                     struct sim_node *n,
                     const struct cr_event *ev)
{
    struct cr_update u;
    enum cr_role role = cr_core_role(&n->core);
    cr_term term = cr_core_term(&n->core);
    cr_index last = cr_core_last_index(&n->core);
    int rv = cr_core_step(&n->core, ev, &u);
    s->steps++;
    node_apply_update(s, n, &u, role, term, last);
    return rv;
}

static void node_start(struct sim *s,
                       struct sim_node *n,
                       bool bootstrap,
                       const struct cr_config *config)
{
    int rv = cr_core_init(&n->core, n->id, s->cluster_id, &s->p.opt, sim_a,
                          node_seed(s, n), s->now);
    assert(rv == 0);
    (void)rv;
    n->alive = true;
    n->started = true;
    n->tick_at = 0;
    n->role_seen = CR_FOLLOWER;
    n->term_seen = 0;
    if (bootstrap) {
        struct cr_update u;
        rv = cr_core_bootstrap(&n->core, config, &u);
        assert(rv == 0);
        node_apply_update(s, n, &u, CR_FOLLOWER, 0, 0);
    } else {
        schedule_tick(s, n, s->now + s->p.opt.election_timeout);
    }
}

int sim_init(struct sim *s, const struct sim_params *p, uint64_t seed)
{
    struct cr_config config;
    memset(s, 0, sizeof *s);
    s->p = *p;
    sim_a = p->alloc != NULL ? p->alloc : &cr_alloc_default;
    s->seed = seed;
    s->rng = mix(seed, 0x5151);
    s->cluster_id = 0xC0FFEE;
    if (p->nodes == 0 || p->nodes > SIM_NODES_MAX || p->payload < 8) {
        return -1;
    }
    s->n_nodes = p->nodes;
    sim_heal(s);
    memset(&config, 0, sizeof config);
    for (cr_id id = 1; id <= p->nodes; id++) {
        char addr[32];
        snprintf(addr, sizeof addr, "node%" PRIu64 ":50051", id);
        cr_config_add(&config, id, CR_VOTER, addr);
    }
    grow_votes(s, 1);
    committed_reserve(s, 1);
    for (cr_id id = 1; id <= p->nodes; id++) {
        struct sim_node *n = &s->nodes[id];
        n->id = id;
        node_start(s, n, true, &config);
    }
    return 0;
}

static void msg_free(struct sim_msg *m)
{
    if (m == NULL) {
        return;
    }
    if (m->entries != NULL) {
        for (unsigned i = 0; i < m->n_entries; i++) {
            cr_batch_unref(sim_a, m->entries[i].batch);
        }
        free(m->entries);
    }
    free(m);
}

void sim_close(struct sim *s)
{
    for (unsigned i = 0; i < s->heap_n; i++) {
        msg_free(s->heap[i].msg);
    }
    for (unsigned i = 0; i < s->n_deferred; i++) {
        msg_free(s->deferred[i].msg);
    }
    free(s->heap);
    free(s->deferred);
    for (cr_id id = 1; id <= SIM_NODES_MAX; id++) {
        struct sim_node *n = &s->nodes[id];
        if (n->alive) {
            cr_core_close(&n->core);
        }
        disk_free(&n->disk);
        free(n->shadow);
    }
    free(s->leader_of_term);
    free(s->voted_for);
    free(s->requested);
    free(s->committed);
    free(s->ops);
    free(s->reads);
    memset(s, 0, sizeof *s);
}

void sim_add_node(struct sim *s, cr_id id)
{
    struct sim_node *n;
    assert(id >= 1 && id <= SIM_NODES_MAX);
    n = &s->nodes[id];
    assert(!n->started);
    n->id = id;
    if (id > s->n_nodes) {
        for (cr_id i = 1; i <= SIM_NODES_MAX; i++) {
            s->link[i][id] = true;
            s->link[id][i] = true;
        }
        s->n_nodes = (unsigned)id;
    }
    trace(s, id, 'x', "node_added", 0, 0, 0, 0, 0);
    node_start(s, n, false, NULL);
}

/* ---------------------------------------------------------------------------
 * Disk
 * ------------------------------------------------------------------------- */

static struct cr_entry *copy_entries(const struct cr_entry *src, unsigned n)
{
    struct cr_entry *e = xmalloc(n * sizeof *e);
    for (unsigned i = 0; i < n; i++) {
        e[i] = src[i];
        if (e[i].batch != NULL) {
            cr_batch_ref(e[i].batch);
        }
    }
    return e;
}

static void disk_truncate_from(struct sim_disk *d, cr_index from)
{
    while (d->n > 0 && d->first + d->n - 1 >= from) {
        d->n--;
        cr_batch_unref(sim_a, d->entries[d->n].batch);
    }
}

static void disk_drop_upto(struct sim_disk *d, cr_index upto)
{
    unsigned drop = 0;
    while (drop < d->n && d->first + drop <= upto) {
        cr_batch_unref(sim_a, d->entries[drop].batch);
        drop++;
    }
    if (drop == 0) {
        return;
    }
    memmove(d->entries, d->entries + drop, (d->n - drop) * sizeof *d->entries);
    d->n -= drop;
    d->first += drop;
}

/* Makes (part of) a write durable. n_entries limits how many of its
 * entries are kept (a torn write); the hard state is kept only whole. */
static void disk_apply(struct sim_disk *d,
                       struct sim_write *w,
                       unsigned n_entries,
                       bool whole)
{
    if (w->has_snapshot) {
        if (!whole) {
            return; /* a snapshot install is all or nothing */
        }
        d->has_snapshot = true;
        d->snapshot = w->snapshot;
        d->snapshot_app = w->app;
        disk_truncate_from(d, 0);
        d->n = 0;
        d->first = w->snapshot.index + 1;
    }
    if (w->has_entries) {
        if (d->n == 0) {
            d->first = w->entries_first;
        }
        disk_truncate_from(d, w->entries_first);
        if (d->n == 0) {
            d->first = w->entries_first;
        }
        if (d->first + d->n == w->entries_first) {
            if (d->n + n_entries > d->cap) {
                d->cap = (d->n + n_entries) * 2;
                d->entries = xrealloc(d->entries, d->cap * sizeof *d->entries);
            }
            for (unsigned i = 0; i < n_entries; i++) {
                d->entries[d->n] = w->entries[i];
                if (d->entries[d->n].batch != NULL) {
                    cr_batch_ref(d->entries[d->n].batch);
                }
                d->n++;
            }
        }
    }
    if (whole && w->has_hs) {
        d->hs.term = w->hs.term;
        d->hs.vote = w->hs.vote;
    }
    if (whole && w->hs.commit > d->hs.commit) {
        d->hs.commit = w->hs.commit;
    }
}

static void write_free(struct sim_write *w)
{
    for (unsigned i = 0; i < w->n; i++) {
        cr_batch_unref(sim_a, w->entries[i].batch);
    }
    free(w->entries);
    free(w);
}

static void disk_submit(struct sim *s,
                        struct sim_node *n,
                        const struct cr_update *u)
{
    struct sim_write *w = xmalloc(sizeof *w);
    struct sim_event ev;
    cr_msec done;
    memset(w, 0, sizeof *w);
    w->seq = u->persist_seq;
    w->last_index = u->persist_last_index;
    /* Term and vote when the update says so; the commit index with any
     * write, as craft's storage records it. */
    w->has_hs = (u->flags & CR_UPDATE_HARD_STATE) != 0;
    w->hs = u->hard_state;
    if (u->flags & CR_UPDATE_ENTRIES) {
        w->has_entries = true;
        w->entries_first = u->entries_first;
        w->n = u->n_entries;
        w->entries = copy_entries(u->entries, u->n_entries);
    }
    if (u->flags & CR_UPDATE_SNAPSHOT) {
        w->has_snapshot = true;
        w->snapshot = u->snapshot;
        w->app = n->incoming_app;
    }
    if (n->disk.pending_tail == NULL) {
        n->disk.pending = w;
    } else {
        n->disk.pending_tail->next = w;
    }
    n->disk.pending_tail = w;
    done = s->now + sim_rand_range(s, s->p.disk_min, s->p.disk_max);
    if (done < n->disk.busy_until) {
        done = n->disk.busy_until;
    }
    n->disk.busy_until = done;
    memset(&ev, 0, sizeof ev);
    ev.time = done;
    ev.type = SIM_EV_PERSIST;
    ev.node = n->id;
    ev.incarnation = n->incarnation;
    heap_push(s, ev);
}

static void disk_complete(struct sim *s, struct sim_node *n)
{
    struct sim_write *w = n->disk.pending;
    struct cr_event ev;
    assert(w != NULL);
    n->disk.pending = w->next;
    if (n->disk.pending == NULL) {
        n->disk.pending_tail = NULL;
    }
    disk_apply(&n->disk, w, w->n, true);
    if (w->hs.commit > n->durable_commit) {
        n->durable_commit = w->hs.commit;
    }
    memset(&ev, 0, sizeof ev);
    ev.type = CR_EVENT_PERSISTED;
    ev.now = s->now;
    ev.persisted.seq = w->seq;
    ev.persisted.last_index = w->last_index;
    write_free(w);
    node_step(s, n, &ev);
}

/* ---------------------------------------------------------------------------
 * Network
 * ------------------------------------------------------------------------- */

static struct sim_msg *msg_copy(struct sim *s, const struct cr_message *m)
{
    struct sim_msg *c = xmalloc(sizeof *c);
    memset(c, 0, sizeof *c);
    c->m = *m;
    if (m->type == CR_MSG_APPEND_ENTRIES && m->append_entries.n_entries > 0) {
        c->entries = copy_entries(m->append_entries.entries,
                                  m->append_entries.n_entries);
        c->n_entries = m->append_entries.n_entries;
        c->m.append_entries.entries = c->entries;
    }
    if (m->type == CR_MSG_INSTALL_SNAPSHOT) {
        c->meta = *m->install_snapshot.meta;
        c->m.install_snapshot.meta = &c->meta;
        c->app = s->nodes[m->from].snapshot_app;
    }
    return c;
}

static void net_send(struct sim *s, const struct cr_message *m)
{
    unsigned copies = 1;
    s->messages++;
    trace_msg(s, 's', m);
    if (m->to == 0 || m->to > SIM_NODES_MAX) {
        return;
    }
    if (sim_randf(s) < s->p.drop) {
        s->dropped++;
        return;
    }
    if (sim_randf(s) < s->p.dup) {
        copies = 2;
    }
    for (unsigned i = 0; i < copies; i++) {
        struct sim_event ev;
        cr_msec delay = sim_rand_range(s, s->p.latency_min, s->p.latency_max);
        if (s->p.long_delay > 0 && sim_randf(s) < s->p.long_delay) {
            delay += sim_rand_range(s, 0, s->p.long_delay_max);
        }
        memset(&ev, 0, sizeof ev);
        ev.time = s->now + delay;
        ev.type = SIM_EV_DELIVER;
        ev.node = m->to;
        ev.msg = msg_copy(s, m);
        heap_push(s, ev);
    }
}

static void deliver(struct sim *s, struct sim_msg *msg)
{
    struct sim_node *n = &s->nodes[msg->m.to];
    struct cr_event ev;
    if (!n->alive || !s->link[msg->m.from][msg->m.to] ||
        (s->filter != NULL && !s->filter(s->filter_data, &msg->m))) {
        s->dropped++;
        return;
    }
    trace_msg(s, 'r', &msg->m);
    if (msg->m.type == CR_MSG_REQUEST_VOTE && !msg->m.request_vote.pre_vote) {
        /* Remember who asked this node for its vote, in which term. */
        grow_votes(s, msg->m.term);
        s->requested[msg->m.term * (SIM_NODES_MAX + 1) + n->id] |=
            1ull << msg->m.from;
    }
    if (msg->m.type == CR_MSG_INSTALL_SNAPSHOT) {
        n->incoming_app = msg->app;
    }
    memset(&ev, 0, sizeof ev);
    ev.type = CR_EVENT_RECEIVE;
    ev.now = s->now;
    ev.receive.message = &msg->m;
    node_step(s, n, &ev);
}

/* ---------------------------------------------------------------------------
 * Checks
 * ------------------------------------------------------------------------- */

static void record_committed(struct sim *s, struct sim_node *n, cr_index index)
{
    struct sim_committed *c;
    const struct sim_shadow *sh;
    if (index <= n->shadow_floor) {
        return; /* arrived in a snapshot: checked when it was committed */
    }
    sh = &n->shadow[index];
    committed_reserve(s, index);
    c = &s->committed[index];
    if (c->term == 0) {
        c->term = sh->term;
        c->chain = sh->chain;
        c->commit_term = cr_core_term(&n->core);
        c->op = sh->op;
        if (index > s->committed_max) {
            s->committed_max = index;
        }
        /* Leader Completeness (§5.4): every leader of a later term holds
         * every committed entry. */
        for (cr_id id = 1; id <= s->n_nodes; id++) {
            struct sim_node *l = &s->nodes[id];
            if (!l->alive || cr_core_role(&l->core) != CR_LEADER ||
                cr_core_term(&l->core) <= c->commit_term) {
                continue;
            }
            if (index > l->shadow_last ||
                (index > l->shadow_floor &&
                 l->shadow[index].chain != c->chain)) {
                sim_fail(s,
                         "leader completeness: leader n%" PRIu64
                         " of term %" PRIu64 " lacks entry %" PRIu64
                         " committed in term %" PRIu64,
                         id, cr_core_term(&l->core), index, c->commit_term);
                return;
            }
        }
        return;
    }
    if (c->term != sh->term || c->chain != sh->chain) {
        sim_fail(s,
                 "state machine safety: n%" PRIu64 " committed index %" PRIu64
                 " with term %" PRIu64 ", but term %" PRIu64
                 " was committed there before",
                 n->id, index, sh->term, c->term);
    }
}

static void check_leader_complete(struct sim *s, struct sim_node *n)
{
    cr_term t = cr_core_term(&n->core);
    for (cr_index i = s->committed_max; i > 0; i--) {
        const struct sim_committed *c = &s->committed[i];
        if (c->term == 0 || c->commit_term > t) {
            continue;
        }
        /* By log matching, checking the highest such entry suffices. */
        if (i > n->shadow_last ||
            (i > n->shadow_floor && n->shadow[i].chain != c->chain)) {
            sim_fail(s,
                     "leader completeness: n%" PRIu64
                     " became leader of term %" PRIu64 " without entry %" PRIu64
                     " committed in term %" PRIu64,
                     n->id, t, i, c->commit_term);
        }
        return;
    }
}

static void shadow_update(struct sim *s,
                          struct sim_node *n,
                          const struct cr_update *u)
{
    if (u->flags & CR_UPDATE_SNAPSHOT) {
        cr_index idx = u->snapshot.index;
        committed_reserve(s, idx);
        if (s->committed[idx].term != u->snapshot.term) {
            sim_fail(s,
                     "n%" PRIu64 " installed a snapshot at %" PRIu64
                     " term %" PRIu64
                     " that does not match the committed "
                     "entry (term %" PRIu64 ")",
                     n->id, idx, u->snapshot.term, s->committed[idx].term);
            return;
        }
        n->shadow_floor = idx;
        n->floor_chain = s->committed[idx].chain;
        n->shadow_last = idx;
        n->latest_config = u->snapshot.config_index;
    }
    if (u->flags & CR_UPDATE_ENTRIES) {
        cr_index first = u->entries_first;
        bool rescan =
            n->latest_config >= first && n->latest_config > n->shadow_floor;
        n->shadow_last = first - 1;
        shadow_reserve(n, first + u->n_entries);
        for (unsigned i = 0; i < u->n_entries; i++) {
            cr_index idx = first + i;
            const struct cr_entry *e = &u->entries[i];
            uint64_t prev =
                idx - 1 <= n->shadow_floor
                    ? (idx - 1 == n->shadow_floor ? n->floor_chain : 0)
                    : n->shadow[idx - 1].chain;
            struct sim_shadow *sh = &n->shadow[idx];
            sh->term = e->term;
            sh->type = (uint8_t)e->type;
            sh->chain = mix(prev, entry_hash(e));
            sh->op = entry_op(e);
            n->shadow_last = idx;
        }
        if (rescan) {
            cr_index i = first - 1;
            while (i > n->shadow_floor &&
                   n->shadow[i].type != CR_ENTRY_CONFIG) {
                i--;
            }
            if (i > n->shadow_floor) {
                n->latest_config = i;
            } else {
                const struct cr_snapshot_meta *m = cr_core_snapshot(&n->core);
                n->latest_config = m != NULL ? m->config_index : 0;
            }
        }
        for (unsigned i = 0; i < u->n_entries; i++) {
            if (u->entries[i].type == CR_ENTRY_CONFIG) {
                n->latest_config = first + i;
            }
        }
        /* Log Matching (§5.3): the same index and term means the same
         * entries up to there; the shadow chains must agree with every
         * committed entry they share an index and term with. */
        for (unsigned i = 0; i < u->n_entries; i++) {
            cr_index idx = first + i;
            if (idx < s->committed_cap && s->committed[idx].term != 0 &&
                s->committed[idx].term == n->shadow[idx].term &&
                s->committed[idx].chain != n->shadow[idx].chain) {
                sim_fail(s,
                         "log matching: n%" PRIu64 " has index %" PRIu64
                         " term %" PRIu64
                         " like a committed entry, but a different history",
                         n->id, idx, n->shadow[idx].term);
                return;
            }
        }
    }
}

static void apply_committed(struct sim *s,
                            struct sim_node *n,
                            const struct cr_update *u)
{
    if (u->n_committed == 0) {
        return;
    }
    if (u->committed_first != n->app.applied + 1) {
        sim_fail(s,
                 "n%" PRIu64 " was handed committed entries from %" PRIu64
                 " but had applied up to %" PRIu64,
                 n->id, u->committed_first, n->app.applied);
        return;
    }
    for (unsigned i = 0; i < u->n_committed; i++) {
        const struct cr_entry *e = &u->committed[i];
        cr_index idx = u->committed_first + i;
        uint64_t op = entry_op(e);
        n->app.digest = mix(n->app.digest, entry_hash(e));
        n->app.applied = idx;
        s->applied_total++;
        /* State machine safety: what is applied at an index is what was
         * committed there. */
        if (idx < s->committed_cap && s->committed[idx].term != 0 &&
            s->committed[idx].term != e->term) {
            sim_fail(s,
                     "state machine safety: n%" PRIu64 " applied term %" PRIu64
                     " at %" PRIu64 ", committed there was term %" PRIu64,
                     n->id, e->term, idx, s->committed[idx].term);
            return;
        }
        if (op != 0 && op <= s->n_ops) {
            struct sim_op *o = &s->ops[op - 1];
            if (o->node == n->id && o->index == idx && o->term == e->term &&
                o->state == SIM_OP_PENDING) {
                o->state = SIM_OP_ACKED;
                o->completed = s->now;
                s->commits_acked++;
            }
        }
    }
}

/* Whether the state machine is due for a snapshot. Taken only once the
 * update is fully carried out: stepping the core again invalidates what
 * the update points to. */
static bool snapshot_due(struct sim *s, struct sim_node *n)
{
    const struct cr_snapshot_meta *m = cr_core_snapshot(&n->core);
    return s->p.snapshot_every > 0 &&
           n->app.applied - (m != NULL ? m->index : 0) >= s->p.snapshot_every;
}

static void check_reads(struct sim *s,
                        struct sim_node *n,
                        const struct cr_update *u)
{
    for (unsigned i = 0; i < u->n_reads; i++) {
        const struct cr_read_result *r = &u->reads[i];
        struct sim_read *rd;
        if (r->id == 0 || r->id > s->n_reads) {
            sim_fail(s, "n%" PRIu64 " answered unknown read %" PRIu64, n->id,
                     r->id);
            return;
        }
        rd = &s->reads[r->id - 1];
        if (rd->node != n->id) {
            sim_fail(s,
                     "read %" PRIu64 " answered by n%" PRIu64
                     ", it was asked of n%" PRIu64,
                     r->id, n->id, rd->node);
            return;
        }
        /* A duplicated request may be answered twice; the node keeps the
         * first answer, but both must be valid. */
        rd->done = true;
        /* Linearizable reads (§6.4): the read index covers every entry
         * committed anywhere before the read began. */
        if (r->status == 0 && r->index < rd->min_index) {
            sim_fail(s,
                     "stale read: n%" PRIu64 " read at index %" PRIu64
                     " but %" PRIu64 " was committed before the read began",
                     n->id, r->index, rd->min_index);
            return;
        }
    }
}

static void check_votes(struct sim *s,
                        struct sim_node *n,
                        const struct cr_update *u)
{
    cr_term term = cr_core_term(&n->core);
    cr_id vote = cr_core_vote(&n->core);
    for (unsigned i = 0; i < u->n_messages; i++) {
        const struct cr_message *m = &u->messages[i];
        uint64_t *slot;
        if (m->type != CR_MSG_REQUEST_VOTE_RESULT ||
            m->request_vote_result.pre_vote ||
            !m->request_vote_result.granted) {
            continue;
        }
        grow_votes(s, m->term);
        slot = &s->voted_for[m->term * (SIM_NODES_MAX + 1) + n->id];
        if (*slot != 0 && *slot != m->to) {
            sim_fail(s,
                     "double vote: n%" PRIu64
                     " granted its vote in term %" PRIu64 " to n%" PRIu64
                     " and to n%" PRIu64,
                     n->id, m->term, *slot, m->to);
            return;
        }
        *slot = m->to;
    }
    /* A vote is cast in the term it is recorded with: for a candidate that
     * asked in that term, or for ourselves as candidate of that term. */
    if (vote != 0) {
        grow_votes(s, term);
        if (vote == n->id) {
            if (!(s->requested[term * (SIM_NODES_MAX + 1) + n->id] &
                  (1ull << n->id))) {
                sim_fail(s,
                         "n%" PRIu64
                         " records a vote for itself in term %" PRIu64
                         " without having been a candidate in it",
                         n->id, term);
            }
        } else if (!(s->requested[term * (SIM_NODES_MAX + 1) + n->id] &
                     (1ull << vote))) {
            sim_fail(s,
                     "n%" PRIu64 " records a vote for n%" PRIu64
                     " in term %" PRIu64 ", which never asked it in that term",
                     n->id, vote, term);
        }
    }
}

static void check_config(struct sim *s, struct sim_node *n)
{
    /* §4.1: the configuration in force is the latest one in the log. */
    if (cr_core_config_index(&n->core) != n->latest_config) {
        sim_fail(s,
                 "n%" PRIu64 " uses the configuration of index %" PRIu64
                 " but the latest one in its log is at %" PRIu64,
                 n->id, cr_core_config_index(&n->core), n->latest_config);
    }
}

static void check_one_change(struct sim *s,
                             struct sim_node *n,
                             const struct cr_update *u)
{
    /* §4.1: a leader never has more than one uncommitted change. */
    cr_index commit = cr_core_commit(&n->core);
    unsigned count = 0;
    bool appended = false;
    for (unsigned i = 0; i < u->n_entries; i++) {
        if (u->entries[i].type == CR_ENTRY_CONFIG) {
            appended = true;
        }
    }
    if (!appended) {
        return;
    }
    for (cr_index i = n->shadow_last; i > commit && i > n->shadow_floor; i--) {
        if (n->shadow[i].type == CR_ENTRY_CONFIG) {
            count++;
        }
    }
    if (count > 1) {
        sim_fail(s,
                 "leader n%" PRIu64
                 " has %u uncommitted configuration "
                 "changes",
                 n->id, count);
    }
}

static void node_apply_update(struct sim *s,
                              struct sim_node *n,
                              const struct cr_update *u,
                              enum cr_role role_before,
                              cr_term term_before,
                              cr_index last_before)
{
    cr_term term = cr_core_term(&n->core);
    cr_index commit = cr_core_commit(&n->core);
    bool check = s->p.check;
    n->updates++;

    if (u->flags & CR_UPDATE_STATE) {
        trace(s, n->id, 'c', cr_role_name(u->role), u->leader, u->term,
              cr_core_last_index(&n->core), commit, 0);
    }
    if (u->flags & CR_UPDATE_SNAPSHOT) {
        /* Restore the state machine from the received snapshot. */
        n->app = n->incoming_app;
        n->snapshot_app = n->incoming_app;
        trace(s, n->id, 'c', "snapshot_install", 0, term, u->snapshot.index, 0,
              0);
    }
    if (u->persist_seq != 0) {
        disk_submit(s, n, u);
    }
    if (check) {
        /* Leader Append-Only (§5.3): a leader never overwrites or deletes
         * entries of its log. */
        if (role_before == CR_LEADER && u->role == CR_LEADER &&
            term_before == term && (u->flags & CR_UPDATE_ENTRIES) &&
            u->entries_first <= last_before) {
            sim_fail(s,
                     "leader append-only: leader n%" PRIu64
                     " rewrote its log from %" PRIu64 " (last was %" PRIu64 ")",
                     n->id, u->entries_first, last_before);
        }
        if (term < term_before) {
            sim_fail(s,
                     "n%" PRIu64 " went back from term %" PRIu64 " to %" PRIu64,
                     n->id, term_before, term);
        }
    }
    if (check) {
        shadow_update(s, n, u);
    }
    if (u->role == CR_CANDIDATE) {
        grow_votes(s, term);
        s->requested[term * (SIM_NODES_MAX + 1) + n->id] |= 1ull << n->id;
    }
    if (check) {
        check_config(s, n);
        if (u->role == CR_LEADER) {
            check_one_change(s, n, u);
        }
        check_votes(s, n, u);
    }
    /* Election Safety (§5.2): at most one leader per term. */
    if (u->role == CR_LEADER) {
        grow_votes(s, term);
        if (s->leader_of_term[term] == 0) {
            s->leader_of_term[term] = n->id;
        } else if (s->leader_of_term[term] != n->id) {
            sim_fail(s,
                     "election safety: n%" PRIu64 " and n%" PRIu64
                     " both lead term %" PRIu64,
                     s->leader_of_term[term], n->id, term);
        }
        if (role_before != CR_LEADER && check) {
            check_leader_complete(s, n);
        }
    }
    /* The commit index never goes back. */
    if (commit < n->commit_seen) {
        sim_fail(s,
                 "n%" PRIu64 " commit index went back from %" PRIu64
                 " to %" PRIu64,
                 n->id, n->commit_seen, commit);
    }
    for (cr_index i = n->commit_seen + 1; check && i <= commit && !s->failed;
         i++) {
        record_committed(s, n, i);
    }
    n->commit_seen = commit;
    apply_committed(s, n, u);
    if (check) {
        check_reads(s, n, u);
    }
    for (unsigned i = 0; i < u->n_messages; i++) {
        net_send(s, &u->messages[i]);
    }
    n->role_seen = u->role;
    n->term_seen = term;
    schedule_tick(s, n, u->deadline);
    if (!s->failed && snapshot_due(s, n)) {
        (void)sim_snapshot(s, n->id);
    }
}

/* ---------------------------------------------------------------------------
 * Running
 * ------------------------------------------------------------------------- */

bool sim_step(struct sim *s)
{
    struct sim_event ev;
    struct sim_node *n;
    if (s->failed || s->heap_n == 0) {
        return false;
    }
    ev = heap_pop(s);
    s->now = ev.time;
    n = &s->nodes[ev.node];
    if (n->paused) {
        if (s->n_deferred == s->cap_deferred) {
            s->cap_deferred = s->cap_deferred == 0 ? 64 : 2 * s->cap_deferred;
            s->deferred =
                xrealloc(s->deferred, s->cap_deferred * sizeof *s->deferred);
        }
        s->deferred[s->n_deferred++] = ev;
        return true;
    }
    switch (ev.type) {
        case SIM_EV_DELIVER:
            deliver(s, ev.msg);
            msg_free(ev.msg);
            break;
        case SIM_EV_PERSIST:
            if (n->alive && ev.incarnation == n->incarnation) {
                disk_complete(s, n);
            }
            break;
        case SIM_EV_TICK:
            if (n->alive && ev.incarnation == n->incarnation &&
                ev.time == n->tick_at) {
                struct cr_event tick;
                memset(&tick, 0, sizeof tick);
                tick.type = CR_EVENT_TICK;
                tick.now = s->now;
                n->tick_at = 0;
                node_step(s, n, &tick);
            }
            break;
    }
    return !s->failed;
}

void sim_run_until(struct sim *s, cr_msec until)
{
    while (!s->failed && s->heap_n > 0 && s->heap[0].time <= until) {
        sim_step(s);
    }
    if (s->now < until) {
        s->now = until;
    }
}

void sim_run_for(struct sim *s, cr_msec duration)
{
    sim_run_until(s, s->now + duration);
}

bool sim_run_until_pred(struct sim *s,
                        bool (*pred)(struct sim *s, void *d),
                        void *data,
                        cr_msec timeout)
{
    cr_msec until = s->now + timeout;
    if (pred(s, data)) {
        return true;
    }
    while (!s->failed && s->heap_n > 0 && s->heap[0].time <= until) {
        sim_step(s);
        if (pred(s, data)) {
            return true;
        }
    }
    if (s->now < until && !s->failed) {
        s->now = until;
    }
    return !s->failed && pred(s, data);
}

/* ---------------------------------------------------------------------------
 * Faults
 * ------------------------------------------------------------------------- */

static void crash(struct sim *s, cr_id id, bool lose_all)
{
    struct sim_node *n = &s->nodes[id];
    struct sim_write *w;
    unsigned survive = 0;
    unsigned count = 0;
    if (!n->alive) {
        return;
    }
    /* Writes not yet reported durable: a random prefix made it, and the
     * next one may be torn (part of its entries, no hard state). */
    for (w = n->disk.pending; w != NULL; w = w->next) {
        count++;
    }
    survive = lose_all ? 0 : (unsigned)sim_rand_range(s, 0, count);
    w = n->disk.pending;
    for (unsigned i = 0; i < survive; i++) {
        disk_apply(&n->disk, w, w->n, true);
        w = w->next;
    }
    if (w != NULL && !lose_all && sim_randf(s) < s->p.torn && w->n > 0) {
        disk_apply(&n->disk, w, (unsigned)sim_rand_range(s, 0, w->n - 1),
                   false);
    }
    w = n->disk.pending;
    while (w != NULL) {
        struct sim_write *next = w->next;
        write_free(w);
        w = next;
    }
    n->disk.pending = NULL;
    n->disk.pending_tail = NULL;
    n->disk.busy_until = 0;
    cr_core_close(&n->core);
    n->alive = false;
    n->incarnation++;
    trace(s, id, 'x', "crash", 0, 0, survive, count, 0);
}

void sim_crash(struct sim *s, cr_id id)
{
    crash(s, id, false);
}

void sim_crash_unsynced(struct sim *s, cr_id id)
{
    crash(s, id, true);
}

void sim_restart(struct sim *s, cr_id id)
{
    struct sim_node *n = &s->nodes[id];
    struct sim_disk *d = &n->disk;
    int rv;
    if (n->alive || !n->started) {
        return;
    }
    rv = cr_core_init(&n->core, n->id, s->cluster_id, &s->p.opt, sim_a,
                      node_seed(s, n), s->now);
    assert(rv == 0);
    rv = cr_core_load(&n->core, &d->hs, d->has_snapshot ? &d->snapshot : NULL,
                      d->n > 0 ? d->first : 0, d->entries, d->n);
    if (rv != 0) {
        sim_fail(s, "n%" PRIu64 " failed to load its disk: %s", id,
                 cr_strerror(rv));
        cr_core_close(&n->core);
        return;
    }
    n->alive = true;
    n->tick_at = 0;
    /* Volatile state is gone; rebuild it from the disk. */
    n->app = d->has_snapshot ? d->snapshot_app : (struct sim_app){0, 0};
    n->snapshot_app = n->app;
    n->commit_seen = cr_core_commit(&n->core);
    if (n->commit_seen < d->hs.commit &&
        d->hs.commit <= cr_core_last_index(&n->core)) {
        sim_fail(s,
                 "n%" PRIu64 " restarted with commit %" PRIu64
                 " below its durable commit %" PRIu64,
                 id, n->commit_seen, d->hs.commit);
    }
    /* Rebuild the shadow from what was loaded. */
    n->shadow_floor = cr_core_first_index(&n->core) - 1;
    n->floor_chain = 0;
    if (n->shadow_floor > 0) {
        committed_reserve(s, n->shadow_floor);
        n->floor_chain = s->committed[n->shadow_floor].chain;
    }
    n->shadow_last = n->shadow_floor;
    shadow_reserve(n, cr_core_last_index(&n->core) + 1);
    for (cr_index i = n->shadow_floor + 1; i <= cr_core_last_index(&n->core);
         i++) {
        const struct cr_entry *e = cr_core_entry(&n->core, i);
        uint64_t prev =
            i - 1 == n->shadow_floor ? n->floor_chain : n->shadow[i - 1].chain;
        n->shadow[i].term = e->term;
        n->shadow[i].type = (uint8_t)e->type;
        n->shadow[i].chain = mix(prev, entry_hash(e));
        n->shadow[i].op = entry_op(e);
        n->shadow_last = i;
    }
    n->latest_config = cr_core_config_index(&n->core);
    if (n->shadow_floor > 0 && (n->shadow_floor >= s->committed_cap ||
                                s->committed[n->shadow_floor].term == 0)) {
        /* The loaded log starts after uncommitted ground: no chain to
         * anchor on. Never expected: the floor is a snapshot index. */
        sim_fail(s,
                 "n%" PRIu64 " loaded a log starting after %" PRIu64
                 ", which was never committed",
                 id, n->shadow_floor);
    }
    trace(s, id, 'x', "restart", 0, cr_core_term(&n->core),
          cr_core_last_index(&n->core), cr_core_commit(&n->core), 0);
    schedule_tick(s, n, s->now);
}

void sim_pause(struct sim *s, cr_id id)
{
    s->nodes[id].paused = true;
    trace(s, id, 'x', "pause", 0, 0, 0, 0, 0);
}

void sim_resume(struct sim *s, cr_id id)
{
    unsigned kept = 0;
    s->nodes[id].paused = false;
    trace(s, id, 'x', "resume", 0, 0, 0, 0, 0);
    /* What it missed arrives now, in the order it happened. */
    for (unsigned i = 0; i < s->n_deferred; i++) {
        struct sim_event ev = s->deferred[i];
        if (ev.node == id) {
            ev.time = s->now;
            if (ev.type == SIM_EV_TICK) {
                s->nodes[id].tick_at = s->now;
            }
            heap_push(s, ev);
        } else {
            s->deferred[kept++] = ev;
        }
    }
    s->n_deferred = kept;
}

void sim_heal(struct sim *s)
{
    for (cr_id i = 0; i <= SIM_NODES_MAX; i++) {
        for (cr_id j = 0; j <= SIM_NODES_MAX; j++) {
            s->link[i][j] = true;
        }
    }
    trace(s, 0, 'x', "heal", 0, 0, 0, 0, 0);
}

void sim_cut(struct sim *s, cr_id from, cr_id to)
{
    s->link[from][to] = false;
    trace(s, from, 'x', "cut", to, 0, 0, 0, 0);
}

void sim_isolate(struct sim *s, cr_id id)
{
    for (cr_id j = 0; j <= SIM_NODES_MAX; j++) {
        if (j != id) {
            s->link[id][j] = false;
            s->link[j][id] = false;
        }
    }
    trace(s, id, 'x', "isolate", 0, 0, 0, 0, 0);
}

void sim_partition(struct sim *s, const char *groups)
{
    int group_of[SIM_NODES_MAX + 1];
    int g = 0;
    for (cr_id i = 0; i <= SIM_NODES_MAX; i++) {
        group_of[i] = -1 - (int)i; /* unnamed: alone */
    }
    for (const char *p = groups; *p != '\0'; p++) {
        if (*p == '|') {
            g++;
        } else if (*p >= '0' && *p <= '9') {
            unsigned long id = strtoul(p, (char **)&p, 10);
            p--;
            if (id <= SIM_NODES_MAX) {
                group_of[id] = g;
            }
        }
    }
    for (cr_id i = 0; i <= SIM_NODES_MAX; i++) {
        for (cr_id j = 0; j <= SIM_NODES_MAX; j++) {
            s->link[i][j] = i == j || group_of[i] == group_of[j];
        }
    }
    trace(s, 0, 'x', "partition", 0, 0, (uint64_t)g + 1, 0, 0);
}

void sim_set_filter(struct sim *s, sim_filter_fn fn, void *data)
{
    s->filter = fn;
    s->filter_data = data;
}

/* ---------------------------------------------------------------------------
 * Clients and operator actions
 * ------------------------------------------------------------------------- */

static int node_event(struct sim *s, cr_id id, struct cr_event *ev)
{
    struct sim_node *n = &s->nodes[id];
    if (id == 0 || id > SIM_NODES_MAX || !n->alive || n->paused) {
        return CR_EINVAL;
    }
    ev->now = s->now;
    return node_step(s, n, ev);
}

int sim_propose(struct sim *s, cr_id node, uint64_t *op_id)
{
    struct sim_node *n = &s->nodes[node];
    struct cr_event ev;
    struct cr_entry e;
    uint8_t buf[4096];
    uint64_t id;
    struct sim_op *o;
    int rv;
    if (node == 0 || node > SIM_NODES_MAX || !n->alive || n->paused ||
        cr_core_role(&n->core) != CR_LEADER) {
        return CR_ENOTLEADER;
    }
    if (s->n_ops == s->cap_ops) {
        s->cap_ops = s->cap_ops == 0 ? 256 : 2 * s->cap_ops;
        s->ops = xrealloc(s->ops, s->cap_ops * sizeof *s->ops);
    }
    id = s->n_ops + 1;
    memset(buf, 0, sizeof buf);
    memcpy(buf, &id, 8);
    memset(&e, 0, sizeof e);
    e.type = CR_ENTRY_COMMAND;
    e.buf.base = buf;
    e.buf.len = s->p.payload < sizeof buf ? s->p.payload : sizeof buf;
    memset(&ev, 0, sizeof ev);
    ev.type = CR_EVENT_PROPOSE;
    ev.propose.entries = &e;
    ev.propose.n = 1;
    o = &s->ops[s->n_ops];
    memset(o, 0, sizeof *o);
    o->id = id;
    o->node = node;
    o->invoked = s->now;
    o->state = SIM_OP_PENDING;
    s->n_ops++;
    ev.now = s->now;
    {
        struct cr_update u;
        enum cr_role role = cr_core_role(&n->core);
        cr_term term = cr_core_term(&n->core);
        cr_index last = cr_core_last_index(&n->core);
        rv = cr_core_step(&n->core, &ev, &u);
        s->steps++;
        if (rv == 0) {
            o->index = u.index;
            o->term = u.index_term;
        } else {
            o->state = SIM_OP_FAILED;
        }
        trace(s, node, 'e', "propose", 0, term, id, o->index, (uint64_t)rv);
        node_apply_update(s, n, &u, role, term, last);
    }
    if (op_id != NULL) {
        *op_id = id;
    }
    return rv;
}

int sim_propose_batch(struct sim *s,
                      cr_id node,
                      const struct cr_entry *e,
                      unsigned n)
{
    struct cr_event ev;
    memset(&ev, 0, sizeof ev);
    ev.type = CR_EVENT_PROPOSE;
    ev.propose.entries = e;
    ev.propose.n = n;
    return node_event(s, node, &ev);
}

int sim_change(struct sim *s, cr_id node, enum cr_change_type type, cr_id id)
{
    struct cr_event ev;
    char addr[32];
    int rv;
    snprintf(addr, sizeof addr, "node%" PRIu64 ":50051", id);
    memset(&ev, 0, sizeof ev);
    ev.type = CR_EVENT_CHANGE;
    ev.change.type = type;
    ev.change.id = id;
    ev.change.address = addr;
    rv = node_event(s, node, &ev);
    trace(s, node, 'e',
          type == CR_CHANGE_REMOVE ? "remove_server" : "add_server", id, 0,
          (uint64_t)rv, 0, 0);
    return rv;
}

int sim_transfer(struct sim *s, cr_id node, cr_id target)
{
    struct cr_event ev;
    int rv;
    memset(&ev, 0, sizeof ev);
    ev.type = CR_EVENT_TRANSFER;
    ev.transfer.target = target;
    rv = node_event(s, node, &ev);
    trace(s, node, 'e', "transfer", target, 0, (uint64_t)rv, 0, 0);
    return rv;
}

int sim_read(struct sim *s, cr_id node)
{
    struct cr_event ev;
    struct sim_read *r;
    int rv;
    if (s->n_reads == s->cap_reads) {
        s->cap_reads = s->cap_reads == 0 ? 256 : 2 * s->cap_reads;
        s->reads = xrealloc(s->reads, s->cap_reads * sizeof *s->reads);
    }
    r = &s->reads[s->n_reads++];
    memset(r, 0, sizeof *r);
    r->id = s->n_reads;
    r->node = node;
    r->invoked = s->now;
    r->min_index = sim_max_commit(s);
    memset(&ev, 0, sizeof ev);
    ev.type = CR_EVENT_READ;
    ev.read.id = r->id;
    rv = node_event(s, node, &ev);
    if (rv != 0) {
        s->reads[s->n_reads - 1].done = true;
    }
    return rv;
}

int sim_campaign(struct sim *s, cr_id node)
{
    struct cr_event ev;
    memset(&ev, 0, sizeof ev);
    ev.type = CR_EVENT_CAMPAIGN;
    trace(s, node, 'e', "campaign", 0, 0, 0, 0, 0);
    return node_event(s, node, &ev);
}

int sim_snapshot(struct sim *s, cr_id node)
{
    struct sim_node *n = &s->nodes[node];
    struct cr_event ev;
    const struct cr_snapshot_meta *meta;
    int rv;
    if (!n->alive || n->app.applied == 0) {
        return CR_EINVAL;
    }
    memset(&ev, 0, sizeof ev);
    ev.type = CR_EVENT_SNAPSHOT;
    ev.snapshot.index = n->app.applied;
    ev.snapshot.trailing = s->p.snapshot_trailing;
    /* The snapshot file is durable before the core hears of it. */
    rv = node_event(s, node, &ev);
    if (rv != 0) {
        return rv;
    }
    meta = cr_core_snapshot(&n->core);
    n->snapshot_app = n->app;
    n->disk.has_snapshot = true;
    n->disk.snapshot = *meta;
    n->disk.snapshot_app = n->app;
    if (cr_core_first_index(&n->core) > 1) {
        disk_drop_upto(&n->disk, cr_core_first_index(&n->core) - 1);
    }
    trace(s, node, 'e', "snapshot", 0, 0, meta->index, 0, 0);
    return 0;
}

/* ---------------------------------------------------------------------------
 * Observations and final checks
 * ------------------------------------------------------------------------- */

cr_id sim_leader(struct sim *s)
{
    cr_id best = 0;
    cr_term term = 0;
    for (cr_id id = 1; id <= s->n_nodes; id++) {
        struct sim_node *n = &s->nodes[id];
        if (n->alive && cr_core_role(&n->core) == CR_LEADER &&
            cr_core_term(&n->core) >= term) {
            best = id;
            term = cr_core_term(&n->core);
        }
    }
    return best;
}

cr_id sim_stable_leader(struct sim *s)
{
    cr_id l = sim_leader(s);
    const struct cr_config *c;
    unsigned follow = 0;
    if (l == 0) {
        return 0;
    }
    c = cr_core_config(&s->nodes[l].core);
    for (unsigned i = 0; i < c->n; i++) {
        struct sim_node *n = &s->nodes[c->servers[i].id];
        if (c->servers[i].suffrage == CR_VOTER && n->alive &&
            cr_core_term(&n->core) == cr_core_term(&s->nodes[l].core) &&
            cr_core_leader(&n->core) == l) {
            follow++;
        }
    }
    return follow >= cr_config_voters(c) / 2 + 1 ? l : 0;
}

cr_index sim_max_commit(struct sim *s)
{
    return s->committed_max;
}

/* Every member of the leader's configuration is alive and has applied
 * exactly what the leader has, with the same digest. */
bool sim_converged(struct sim *s)
{
    cr_id l = sim_stable_leader(s);
    const struct sim_node *ln;
    const struct cr_config *c;
    if (l == 0) {
        return false;
    }
    ln = &s->nodes[l];
    if (ln->app.applied != cr_core_last_index(&ln->core) ||
        cr_core_commit(&ln->core) != cr_core_last_index(&ln->core)) {
        return false;
    }
    c = cr_core_config(&ln->core);
    for (unsigned i = 0; i < c->n; i++) {
        const struct sim_node *n = &s->nodes[c->servers[i].id];
        if (!n->alive || n->app.applied != ln->app.applied ||
            n->app.digest != ln->app.digest) {
            return false;
        }
    }
    return true;
}

const struct sim_op *sim_op(struct sim *s, uint64_t id)
{
    return id == 0 || id > s->n_ops ? NULL : &s->ops[id - 1];
}

unsigned sim_acked(struct sim *s)
{
    unsigned n = 0;
    for (unsigned i = 0; i < s->n_ops; i++) {
        if (s->ops[i].state == SIM_OP_ACKED) {
            n++;
        }
    }
    return n;
}

bool sim_final_checks(struct sim *s)
{
    if (s->failed) {
        return false;
    }
    /* No acknowledged write is lost: each sits, committed, at the index it
     * was acknowledged at. */
    for (unsigned i = 0; i < s->n_ops; i++) {
        const struct sim_op *o = &s->ops[i];
        if (o->state != SIM_OP_ACKED) {
            continue;
        }
        if (o->index >= s->committed_cap ||
            s->committed[o->index].term != o->term ||
            s->committed[o->index].op != o->id) {
            sim_fail(s,
                     "acknowledged write %" PRIu64 " (index %" PRIu64
                     ", term %" PRIu64 ") is not in the committed log",
                     o->id, o->index, o->term);
            return false;
        }
    }
    return true;
}

static bool pred_stable_leader(struct sim *s, void *d)
{
    (void)d;
    return sim_stable_leader(s) != 0;
}

static bool pred_op_done(struct sim *s, void *d)
{
    const struct sim_op *o = sim_op(s, *(uint64_t *)d);
    return o != NULL && o->state != SIM_OP_PENDING;
}

static bool pred_converged(struct sim *s, void *d)
{
    (void)d;
    return sim_converged(s);
}

cr_id sim_wait_leader(struct sim *s, cr_msec timeout)
{
    if (sim_run_until_pred(s, pred_stable_leader, NULL, timeout)) {
        return sim_stable_leader(s);
    }
    return 0;
}

bool sim_commit(struct sim *s, cr_msec timeout, uint64_t *op_id)
{
    cr_msec until = s->now + timeout;
    while (s->now < until && !s->failed) {
        uint64_t id;
        cr_id l = sim_wait_leader(s, until - s->now);
        if (l == 0) {
            return false;
        }
        if (sim_propose(s, l, &id) != 0) {
            sim_run_for(s, 5);
            continue;
        }
        /* The leader may change under the write: retry at the new one. */
        if (sim_run_until_pred(s, pred_op_done, &id,
                               4 * s->p.opt.election_timeout) &&
            sim_op(s, id)->state == SIM_OP_ACKED) {
            if (op_id != NULL) {
                *op_id = id;
            }
            return true;
        }
    }
    return false;
}

bool sim_wait_converged(struct sim *s, cr_msec timeout)
{
    return sim_run_until_pred(s, pred_converged, NULL, timeout);
}

void sim_heal_all(struct sim *s)
{
    sim_set_filter(s, NULL, NULL);
    s->p.drop = 0;
    s->p.dup = 0;
    s->p.long_delay = 0;
    sim_heal(s);
    for (cr_id id = 1; id <= s->n_nodes; id++) {
        if (s->nodes[id].paused) {
            sim_resume(s, id);
        }
        if (s->nodes[id].started && !s->nodes[id].alive) {
            sim_restart(s, id);
        }
    }
}

bool sim_final_liveness(struct sim *s, cr_msec bound)
{
    cr_msec until;
    sim_heal_all(s);
    until = s->now + bound;
    if (!sim_commit(s, bound, NULL)) {
        sim_fail(s,
                 "liveness: no write committed within %" PRIu64
                 " ms of healing (leader: n%" PRIu64 ")",
                 bound, sim_stable_leader(s));
        return false;
    }
    if (!sim_wait_converged(s, until > s->now ? until - s->now : 0)) {
        sim_fail(s,
                 "liveness: members did not converge within %" PRIu64
                 " ms of healing",
                 bound);
        return false;
    }
    return sim_final_checks(s);
}
