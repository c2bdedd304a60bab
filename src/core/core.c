/* The core's entry points: initialization, restore, the step function that
 * dispatches events, and the assembly of each update.
 *
 * Every step has the same shape: begin (reset the output), handle the
 * event, finish (assign the persist seq, release held messages whose
 * writes are durable, hand out newly committed entries, compute the next
 * deadline). Handlers only change state and queue messages; nothing is
 * emitted behind the caller's back. */
#include <string.h>

#include "core_impl.h"

void cr_options_default(struct cr_options *o)
{
    memset(o, 0, sizeof *o);
    o->election_timeout = 1000;
    o->heartbeat_interval = 100;
    o->pre_vote = true;
    o->check_quorum = true;
    o->max_inflight_msgs = 64;
    o->max_inflight_bytes = 8u << 20;
    o->max_batch_entries = 1024;
    o->max_batch_bytes = 1u << 20;
    o->snapshot_timeout = 10 * o->election_timeout;
    o->commit_timeout = 10;
}

static bool options_valid(const struct cr_options *o)
{
    return o->election_timeout > 0 && o->heartbeat_interval > 0 &&
           o->heartbeat_interval < o->election_timeout &&
           o->max_inflight_msgs > 0 &&
           o->max_inflight_msgs <= CR__INFLIGHT_MAX &&
           o->max_inflight_bytes > 0 && o->max_batch_entries > 0 &&
           o->max_batch_bytes > 0 && o->snapshot_timeout > 0;
}

int cr_core_init(struct cr_core *c,
                 cr_id id,
                 uint64_t cluster_id,
                 const struct cr_options *options,
                 const struct cr_alloc *alloc,
                 uint64_t seed,
                 cr_msec now)
{
    memset(c, 0, sizeof *c);
    if (id == 0) {
        return CR_EINVAL;
    }
    if (options != NULL) {
        if (!options_valid(options)) {
            return CR_EINVAL;
        }
        c->opt = *options;
    } else {
        cr_options_default(&c->opt);
    }
    c->id = id;
    c->cluster_id = cluster_id;
    c->alloc = alloc != NULL ? alloc : &cr_alloc_default;
    /* A zero state would make the generator useless; mix the seed with a
     * constant and the id so that servers sharing a seed differ. */
    c->rng = seed ^ 0x9E3779B97F4A7C15ull ^ (id * 0xBF58476D1CE4E5B9ull);
    c->now = now;
    c->role = CR_FOLLOWER;
    c->prev_role = CR_FOLLOWER;
    cr__reset_election_timer(c);
    return 0;
}

void cr_core_close(struct cr_core *c)
{
    if (c == NULL) {
        return;
    }
    cr__log_free(c);
    c->alloc->free(c->alloc->data, c->held);
    c->alloc->free(c->alloc->data, c->out);
    c->alloc->free(c->alloc->data, c->reads_out);
    c->alloc->free(c->alloc->data, c->reads_pending);
    memset(c, 0, sizeof *c);
}

void cr_core_set_tracer(struct cr_core *c, const struct cr_tracer *t)
{
    if (t == NULL) {
        memset(&c->tracer, 0, sizeof c->tracer);
    } else {
        c->tracer = *t;
    }
}

/* ---------------------------------------------------------------------------
 * Shared helpers
 * ------------------------------------------------------------------------- */

/* splitmix64: small, fast, and good enough for timeouts. */
uint64_t cr__rand(struct cr_core *c)
{
    uint64_t z = (c->rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Raft §5.2 / dissertation §3.4: election timeouts are chosen randomly
 * from [T, 2T) so that split votes are rare and resolve quickly. */
void cr__reset_election_timer(struct cr_core *c)
{
    cr_msec t = c->opt.election_timeout;
    c->election_deadline = c->now + t + cr__rand(c) % t;
}

void cr__trace(struct cr_core *c,
               const char *event,
               const char *reason,
               cr_id peer,
               cr_term term,
               cr_index index)
{
    struct cr_trace t;
    if (c->tracer.emit == NULL) {
        return;
    }
    t.event = event;
    t.reason = reason;
    t.peer = peer;
    t.term = term;
    t.index = index;
    c->tracer.emit(c->tracer.data, c, &t);
}

void cr__note_oom(struct cr_core *c)
{
    if (!c->oom) {
        cr__trace(c, "out_of_memory", NULL, 0, c->term, 0);
    }
    c->oom = true;
}

static bool grow(struct cr_core *c,
                 void **array,
                 unsigned *cap,
                 unsigned need,
                 size_t elem)
{
    unsigned n;
    void *p;
    if (need <= *cap) {
        return true;
    }
    n = *cap == 0 ? 16 : *cap * 2;
    while (n < need) {
        n *= 2;
    }
    p = c->alloc->realloc(c->alloc->data, *array, n * elem);
    if (p == NULL) {
        return false;
    }
    *array = p;
    *cap = n;
    return true;
}

void cr__send(struct cr_core *c, struct cr_message *m, bool durable)
{
    assert(m->to != c->id);
    m->from = c->id;
    m->cluster_id = c->cluster_id;
    if (m->term == 0) {
        m->term = c->term;
    }
    if (durable) {
        void *held = c->held;
        if (!grow(c, &held, &c->cap_held, c->n_held + 1, sizeof *c->held)) {
            cr__note_oom(c);
            return;
        }
        c->held = held;
        c->held[c->n_held].seq = CR__SEQ_PENDING;
        c->held[c->n_held].message = *m;
        c->n_held++;
        return;
    }
    {
        void *out = c->out;
        if (!grow(c, &out, &c->cap_out, c->n_out + 1, sizeof *c->out)) {
            cr__note_oom(c);
            return;
        }
        c->out = out;
        c->out[c->n_out++] = *m;
    }
}

void cr__read_result(struct cr_core *c, uint64_t id, int status, cr_index index)
{
    void *r = c->reads_out;
    if (!grow(c, &r, &c->cap_reads_out, c->n_reads_out + 1,
              sizeof *c->reads_out)) {
        /* The node times the read out. */
        cr__note_oom(c);
        return;
    }
    c->reads_out = r;
    c->reads_out[c->n_reads_out].id = id;
    c->reads_out[c->n_reads_out].status = status;
    c->reads_out[c->n_reads_out].index = index;
    c->n_reads_out++;
}

bool cr__is_voter(const struct cr_core *c, cr_id id)
{
    const struct cr_server *s = cr_config_get(&c->config, id);
    return s != NULL && s->suffrage == CR_VOTER;
}

unsigned cr__quorum(const struct cr_core *c)
{
    return cr_config_voters(&c->config) / 2 + 1;
}

void cr__set_hard_state(struct cr_core *c, cr_term term, cr_id vote)
{
    if (term != c->term || vote != c->vote) {
        c->term = term;
        c->vote = vote;
        c->dirty_hard_state = true;
    }
}

void cr__set_commit(struct cr_core *c, cr_index commit)
{
    /* commitIndex is volatile state (Raft Figure 2): it rides along with
     * the next write (see cr_hard_state) and never costs an fsync, or an
     * answer held back, of its own. */
    if (commit > c->commit) {
        c->commit = commit;
    }
}

/* Dissertation §4.2.3: a server that has heard from a current leader within
 * the minimum election timeout does not grant (pre-)votes nor adopt the
 * candidate's term, so that a server outside the configuration (or a
 * partitioned one) cannot disrupt a working cluster. A leader holds its own
 * lease while check-quorum keeps it honest (§6.2). */
bool cr__lease_active(const struct cr_core *c)
{
    if (c->role == CR_LEADER) {
        return c->opt.check_quorum;
    }
    return c->leader != 0 && c->heard_leader &&
           c->now - c->last_leader_contact < c->opt.election_timeout;
}

/* ---------------------------------------------------------------------------
 * Bootstrap and load
 * ------------------------------------------------------------------------- */

static void begin(struct cr_core *c, struct cr_update *out)
{
    memset(out, 0, sizeof *out);
    c->n_out = 0;
    c->n_reads_out = 0;
    c->dirty_hard_state = false;
    c->dirty_snapshot = false;
    c->dirty_from = 0;
    c->config_changed = false;
    c->prev_role = c->role;
    c->prev_term = c->term;
    c->prev_leader = c->leader;
    c->oom = false;
}

static cr_msec next_deadline(const struct cr_core *c)
{
    cr_msec d;
    if (c->role == CR_LEADER) {
        d = c->heartbeat_deadline;
        if (c->transfer_target != 0 && c->transfer_deadline < d) {
            d = c->transfer_deadline;
        }
        if (c->commit_notify_deadline != 0 && c->commit_notify_deadline < d) {
            d = c->commit_notify_deadline;
        }
        return d;
    }
    if (cr__can_campaign(c)) {
        return c->election_deadline;
    }
    /* Not a voter: nothing is due, but a tick now and then is harmless. */
    return c->now + c->opt.election_timeout;
}

static void finish(struct cr_core *c, struct cr_update *out)
{
    cr_index last = cr__log_last(c);
    uint64_t need;
    unsigned released = 0;

    if (c->dirty_hard_state || c->dirty_from != 0 || c->dirty_snapshot) {
        out->persist_seq = ++c->persist_seq;
        out->persist_last_index = last;
        if (c->dirty_hard_state) {
            out->flags |= CR_UPDATE_HARD_STATE;
        }
        if (c->dirty_from != 0) {
            out->flags |= CR_UPDATE_ENTRIES;
            out->entries_first = c->dirty_from;
            if (c->dirty_from <= last) {
                out->n_entries = (unsigned)(last - c->dirty_from + 1);
                out->entries = cr__log_at(c, c->dirty_from);
            }
        }
        if (c->dirty_snapshot) {
            out->flags |= CR_UPDATE_SNAPSHOT;
            out->snapshot = c->snapshot;
        }
        if (c->trunc_seq == CR__SEQ_PENDING) {
            c->trunc_seq = out->persist_seq;
        }
        if (c->self_vote_seq == CR__SEQ_PENDING) {
            c->self_vote_seq = out->persist_seq;
        }
    }
    need = c->persist_seq;
    if (c->self_vote_seq == CR__SEQ_PENDING) {
        c->self_vote_seq = need;
    }
    for (unsigned i = 0; i < c->n_held; i++) {
        if (c->held[i].seq == CR__SEQ_PENDING) {
            c->held[i].seq = need;
        }
    }
    /* Release held messages whose writes are durable, in order. */
    while (released < c->n_held && c->held[released].seq <= c->durable_seq) {
        void *o = c->out;
        if (!grow(c, &o, &c->cap_out, c->n_out + 1, sizeof *c->out)) {
            cr__note_oom(c);
            break;
        }
        c->out = o;
        c->out[c->n_out++] = c->held[released].message;
        released++;
    }
    if (released > 0) {
        memmove(c->held, c->held + released,
                (c->n_held - released) * sizeof *c->held);
        c->n_held -= released;
    }
    /* Messages carrying entries point into the log; resolve the pointers
     * now that the log no longer moves in this step. */
    for (unsigned i = 0; i < c->n_out; i++) {
        struct cr_message *m = &c->out[i];
        if (m->type == CR_MSG_APPEND_ENTRIES &&
            m->append_entries.n_entries > 0) {
            m->append_entries.entries =
                cr__log_at(c, m->append_entries.prev_index + 1);
            assert(m->append_entries.entries != NULL);
        }
    }
    out->n_messages = c->n_out;
    out->messages = c->out;

    if (c->commit > c->applied_out) {
        cr_index first = c->applied_out + 1;
        assert(first > c->offset);
        out->committed_first = first;
        out->n_committed = (unsigned)(c->commit - c->applied_out);
        out->committed = cr__log_at(c, first);
        c->applied_out = c->commit;
    }
    out->n_reads = c->n_reads_out;
    out->reads = c->reads_out;

    out->hard_state.term = c->term;
    out->hard_state.vote = c->vote;
    out->hard_state.commit = c->commit;
    out->role = c->role;
    out->term = c->term;
    out->leader = c->leader;
    if (c->role != c->prev_role || c->term != c->prev_term ||
        c->leader != c->prev_leader) {
        out->flags |= CR_UPDATE_STATE;
    }
    if (c->config_changed) {
        out->flags |= CR_UPDATE_CONFIG;
    }
    out->deadline = next_deadline(c);
}

int cr_core_bootstrap(struct cr_core *c,
                      const struct cr_config *config,
                      struct cr_update *out)
{
    struct cr_config sorted;
    size_t size;
    void *batch;
    uint8_t *buf;
    struct cr_buf b;
    int rv;

    begin(c, out);
    if (c->term != 0 || cr__log_last(c) != 0 || c->has_snapshot ||
        cr_config_voters(config) == 0) {
        finish(c, out);
        return CR_EINVAL;
    }
    /* Every first server must write the very same entry, whatever order
     * it lists the servers in: sort them by id. */
    sorted = *config;
    for (unsigned i = 1; i < sorted.n; i++) {
        struct cr_server s = sorted.servers[i];
        unsigned j = i;
        while (j > 0 && sorted.servers[j - 1].id > s.id) {
            sorted.servers[j] = sorted.servers[j - 1];
            j--;
        }
        sorted.servers[j] = s;
    }
    config = &sorted;
    size = cr_config_encoded_size(config);
    buf = cr_batch_alloc(c->alloc, size, &batch);
    if (buf == NULL) {
        finish(c, out);
        return CR_ENOMEM;
    }
    cr_config_encode(config, buf);
    b.base = buf;
    b.len = size;
    rv = cr__log_append_owned(c, 1, CR_ENTRY_CONFIG, b, batch);
    if (rv != 0) {
        cr_batch_unref(c->alloc, batch);
        finish(c, out);
        return rv;
    }
    /* Every first server writes this same entry, so it is committed
     * everywhere from the start and log matching holds at index 1. */
    cr__set_hard_state(c, 1, 0);
    cr__set_commit(c, 1);
    cr__config_apply(c, config, 1);
    finish(c, out);
    return 0;
}

int cr_core_load(struct cr_core *c,
                 const struct cr_hard_state *hs,
                 const struct cr_snapshot_meta *snapshot,
                 cr_index first,
                 const struct cr_entry *entries,
                 unsigned n)
{
    cr_index snap_index = snapshot != NULL ? snapshot->index : 0;
    cr_term last_term;
    int rv;

    if (c->term != 0 || cr__log_last(c) != 0 || c->has_snapshot) {
        return CR_EINVAL;
    }
    if (n > 0) {
        if (first == 0 || first > snap_index + 1) {
            return CR_ECORRUPT;
        }
        if (first <= snap_index &&
            (first + n - 1 < snap_index ||
             entries[snap_index - first].term != snapshot->term)) {
            /* A crash can make a snapshot durable before the write that
             * truncated a stale log tail: entries that do not reach the
             * snapshot's last entry, or disagree with it, were replaced by
             * what the snapshot covers (it holds only committed entries),
             * and so was everything after them. The snapshot wins. */
            first = snap_index + 1;
            n = 0;
        } else if (first > snap_index && snapshot != NULL &&
                   entries[0].term < snapshot->term) {
            return CR_ECORRUPT;
        }
        for (unsigned i = 0; i < n; i++) {
            struct cr_config scratch;
            if (entries[i].term == 0 ||
                (i > 0 && entries[i].term < entries[i - 1].term)) {
                return CR_ECORRUPT;
            }
            if (entries[i].type == CR_ENTRY_CONFIG &&
                cr_config_decode(entries[i].buf.base, entries[i].buf.len,
                                 &scratch) != 0) {
                return CR_ECORRUPT;
            }
            if (entries[i].type != CR_ENTRY_COMMAND &&
                entries[i].type != CR_ENTRY_CONFIG &&
                entries[i].type != CR_ENTRY_NOOP) {
                return CR_ECORRUPT;
            }
        }
    } else {
        first = snap_index + 1;
    }
    if (snapshot != NULL) {
        if (snapshot->index == 0 || snapshot->term == 0 ||
            snapshot->config_index > snapshot->index) {
            return CR_ECORRUPT;
        }
        c->snapshot = *snapshot;
        c->has_snapshot = true;
    }
    c->offset = first - 1;
    c->offset_term =
        c->offset == snap_index && snapshot != NULL ? snapshot->term : 0;
    rv = cr__log_append(c, entries, n, 0);
    if (rv != 0) {
        cr__log_free(c);
        c->has_snapshot = false;
        c->offset = 0;
        return rv;
    }
    c->dirty_from = 0; /* what was loaded is on disk already */

    /* A torn write may have kept entries of a term whose hard state did not
     * make it; never run at a term below the log's. */
    last_term = cr__log_term(c, cr__log_last(c));
    if (hs->term >= last_term) {
        c->term = hs->term;
        c->vote = hs->vote;
    } else {
        c->term = last_term;
        c->vote = 0;
    }
    c->commit = hs->commit;
    if (c->commit < snap_index) {
        c->commit = snap_index;
    }
    if (c->commit > cr__log_last(c)) {
        c->commit = cr__log_last(c);
    }
    c->applied_out = snap_index;
    c->durable_index = cr__log_last(c);
    c->prev_term = c->term;
    cr__config_recompute(c);
    c->config_changed = false;
    cr__reset_election_timer(c);
    return 0;
}

/* ---------------------------------------------------------------------------
 * Step
 * ------------------------------------------------------------------------- */

static void on_persisted(struct cr_core *c, uint64_t seq, cr_index last)
{
    cr_index durable = last;
    if (seq < c->trunc_seq && c->trunc_seq != CR__SEQ_PENDING &&
        durable > c->trunc_index) {
        durable = c->trunc_index;
    }
    if (durable > cr__log_last(c)) {
        durable = cr__log_last(c);
    }
    c->durable_seq = seq;
    c->durable_index = durable;
    if (c->role == CR_CANDIDATE) {
        cr__maybe_win(c);
    } else if (c->role == CR_LEADER) {
        cr__maybe_commit(c);
        cr__reads_check(c);
    }
}

static int receive(struct cr_core *c, const struct cr_message *m)
{
    if (m->cluster_id != c->cluster_id) {
        cr__trace(c, "message_rejected", "foreign cluster", m->from, m->term,
                  0);
        return CR_ECLUSTER;
    }
    if (m->from == 0 || m->from == c->id || (m->to != 0 && m->to != c->id)) {
        return CR_EINVAL;
    }
    switch (m->type) {
        case CR_MSG_REQUEST_VOTE:
            cr__recv_request_vote(c, m);
            return 0;
        case CR_MSG_REQUEST_VOTE_RESULT:
            cr__recv_request_vote_result(c, m);
            return 0;
        default:
            break;
    }
    /* Any other message from a higher term: adopt it (§5.1). A server that
     * sends AppendEntries, a snapshot or TimeoutNow is that term's leader. */
    if (m->term > c->term) {
        bool from_leader = m->type == CR_MSG_APPEND_ENTRIES ||
                           m->type == CR_MSG_INSTALL_SNAPSHOT ||
                           m->type == CR_MSG_TIMEOUT_NOW;
        if (m->type == CR_MSG_READ_INDEX_RESULT) {
            return 0; /* from a leader we have not heard of yet; stale */
        }
        cr__become_follower(c, m->term, from_leader ? m->from : 0);
    }
    switch (m->type) {
        case CR_MSG_APPEND_ENTRIES:
            if (m->append_entries.n_entries > 0 &&
                m->append_entries.entries == NULL) {
                return CR_EINVAL;
            }
            cr__recv_append_entries(c, m);
            return 0;
        case CR_MSG_APPEND_ENTRIES_RESULT:
            cr__recv_append_entries_result(c, m);
            return 0;
        case CR_MSG_INSTALL_SNAPSHOT:
            if (m->install_snapshot.meta == NULL) {
                return CR_EINVAL;
            }
            cr__recv_install_snapshot(c, m);
            return 0;
        case CR_MSG_TIMEOUT_NOW:
            cr__recv_timeout_now(c, m);
            return 0;
        case CR_MSG_READ_INDEX:
            cr__recv_read_index(c, m);
            return 0;
        case CR_MSG_READ_INDEX_RESULT:
            cr__recv_read_index_result(c, m);
            return 0;
        default:
            return CR_EINVAL;
    }
}

static void tick(struct cr_core *c)
{
    if (c->role == CR_LEADER) {
        cr__leader_tick(c);
    } else {
        cr__election_tick(c);
    }
}

static int snapshot_taken(struct cr_core *c, cr_index index, cr_index trailing)
{
    struct cr_snapshot_meta meta;
    cr_index upto;
    if (index > c->applied_out || index <= c->offset) {
        return index <= c->offset ? CR_ESTALE : CR_EINVAL;
    }
    if (c->has_snapshot && index <= c->snapshot.index) {
        return CR_ESTALE;
    }
    memset(&meta, 0, sizeof meta);
    meta.index = index;
    meta.term = cr__log_term(c, index);
    if (!cr__log_config_at(c, index, &meta.config, &meta.config_index)) {
        return CR_EINVAL;
    }
    c->snapshot = meta;
    c->has_snapshot = true;
    upto = index > trailing ? index - trailing : 0;
    if (upto > c->offset) {
        cr__log_compact(c, upto);
        cr__trace(c, "log_compacted", NULL, 0, c->term, upto);
    }
    return 0;
}

int cr_core_step(struct cr_core *c,
                 const struct cr_event *ev,
                 struct cr_update *out)
{
    int rv = 0;
    begin(c, out);
    if (ev->now > c->now) {
        c->now = ev->now;
    }
    switch (ev->type) {
        case CR_EVENT_TICK:
            tick(c);
            break;
        case CR_EVENT_RECEIVE:
            if (ev->receive.message == NULL) {
                rv = CR_EINVAL;
                break;
            }
            rv = receive(c, ev->receive.message);
            break;
        case CR_EVENT_PERSISTED:
            if (ev->persisted.seq > c->persist_seq ||
                ev->persisted.seq < c->durable_seq) {
                rv = CR_EINVAL;
                break;
            }
            on_persisted(c, ev->persisted.seq, ev->persisted.last_index);
            break;
        case CR_EVENT_PROPOSE:
            rv = cr__propose(c, ev->propose.entries, ev->propose.n);
            break;
        case CR_EVENT_CHANGE:
            rv = cr__change(c, ev->change.type, ev->change.id,
                            ev->change.address);
            break;
        case CR_EVENT_TRANSFER:
            rv = cr__transfer(c, ev->transfer.target);
            break;
        case CR_EVENT_READ:
            rv = cr__read(c, ev->read.id, 0);
            break;
        case CR_EVENT_SNAPSHOT:
            rv = snapshot_taken(c, ev->snapshot.index, ev->snapshot.trailing);
            break;
        case CR_EVENT_CAMPAIGN:
            if (c->role == CR_LEADER) {
                rv = 0;
            } else if (!cr__can_campaign(c)) {
                rv = CR_EREMOVED;
            } else {
                cr__start_election(c, c->opt.pre_vote, false);
            }
            break;
        case CR_EVENT_UNREACHABLE:
            if (c->role == CR_LEADER) {
                struct cr__progress *p =
                    cr__progress_get(c, ev->unreachable.id);
                if (p != NULL && p->state != CR_PROBE) {
                    cr__progress_probe(p);
                }
            }
            break;
        default:
            rv = CR_EINVAL;
            break;
    }
    if (rv == 0 &&
        (ev->type == CR_EVENT_PROPOSE || ev->type == CR_EVENT_CHANGE)) {
        out->index = cr__log_last(c) -
                     (ev->type == CR_EVENT_PROPOSE ? ev->propose.n - 1 : 0);
        out->index_term = c->term;
    }
    finish(c, out);
    if (rv == 0 && c->oom) {
        rv = CR_ENOMEM;
    }
    return rv;
}

/* ---------------------------------------------------------------------------
 * Accessors
 * ------------------------------------------------------------------------- */

enum cr_role cr_core_role(const struct cr_core *c)
{
    return c->role;
}

cr_term cr_core_term(const struct cr_core *c)
{
    return c->term;
}

cr_id cr_core_vote(const struct cr_core *c)
{
    return c->vote;
}

cr_id cr_core_leader(const struct cr_core *c)
{
    return c->leader;
}

cr_index cr_core_commit(const struct cr_core *c)
{
    return c->commit;
}

cr_index cr_core_last_index(const struct cr_core *c)
{
    return cr__log_last(c);
}

cr_term cr_core_last_term(const struct cr_core *c)
{
    return cr__log_term(c, cr__log_last(c));
}

cr_index cr_core_first_index(const struct cr_core *c)
{
    return c->offset + 1;
}

cr_term cr_core_term_at(const struct cr_core *c, cr_index index)
{
    return cr__log_term(c, index);
}

const struct cr_entry *cr_core_entry(const struct cr_core *c, cr_index index)
{
    return cr__log_at(c, index);
}

const struct cr_config *cr_core_config(const struct cr_core *c)
{
    return &c->config;
}

int cr_core_config_at(const struct cr_core *c,
                      cr_index index,
                      struct cr_config *out,
                      cr_index *config_index)
{
    if (index < c->offset || index > cr__log_last(c) ||
        !cr__log_config_at(c, index, out, config_index)) {
        return CR_ENOTFOUND;
    }
    return 0;
}

cr_index cr_core_config_index(const struct cr_core *c)
{
    return c->config_index;
}

const struct cr_snapshot_meta *cr_core_snapshot(const struct cr_core *c)
{
    return c->has_snapshot ? &c->snapshot : NULL;
}

cr_index cr_core_match(const struct cr_core *c, cr_id id)
{
    if (c->role != CR_LEADER) {
        return 0;
    }
    if (id == c->id) {
        return c->durable_index;
    }
    for (unsigned i = 0; i < c->n_progress; i++) {
        if (c->progress[i].id == id) {
            return c->progress[i].match;
        }
    }
    return 0;
}

const char *cr_core_progress(const struct cr_core *c, cr_id id)
{
    if (c->role != CR_LEADER) {
        return "";
    }
    for (unsigned i = 0; i < c->n_progress; i++) {
        if (c->progress[i].id == id) {
            switch (c->progress[i].state) {
                case CR_PROBE:
                    return "probe";
                case CR_PIPELINE:
                    return "pipeline";
                case CR_SNAPSHOT:
                    return "snapshot";
            }
        }
    }
    return "";
}

cr_id cr_core_transfer_target(const struct cr_core *c)
{
    return c->transfer_target;
}

const char *cr_role_name(enum cr_role role)
{
    switch (role) {
        case CR_FOLLOWER:
            return "follower";
        case CR_PRE_CANDIDATE:
            return "pre-candidate";
        case CR_CANDIDATE:
            return "candidate";
        case CR_LEADER:
            return "leader";
        default:
            return "unknown";
    }
}
