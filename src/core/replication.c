/* Log replication: the leader's side (progress, pipelining, batching,
 * commitment) and the follower's side (the consistency check, conflicts,
 * snapshots). Raft §5.3, §5.4, dissertation §3.5, §5, §10.2. */
#include <string.h>

#include "core_impl.h"

struct cr__progress *cr__progress_get(struct cr_core *c, cr_id id)
{
    for (unsigned i = 0; i < c->n_progress; i++) {
        if (c->progress[i].id == id) {
            return &c->progress[i];
        }
    }
    return NULL;
}

static void inflight_reset(struct cr__progress *p)
{
    p->inflight_head = 0;
    p->inflight_count = 0;
    p->inflight_bytes = 0;
}

void cr__progress_probe(struct cr__progress *p)
{
    p->state = CR_PROBE;
    p->paused = false;
    p->next = p->match + 1;
    inflight_reset(p);
}

static void progress_pipeline(struct cr__progress *p)
{
    p->state = CR_PIPELINE;
    p->paused = false;
    p->next = p->match + 1;
    inflight_reset(p);
}

static void inflight_push(struct cr__progress *p, cr_index last, size_t size)
{
    unsigned slot = (p->inflight_head + p->inflight_count) % CR__INFLIGHT_MAX;
    assert(p->inflight_count < CR__INFLIGHT_MAX);
    p->inflight_last[slot] = last;
    p->inflight_size[slot] = size;
    p->inflight_count++;
    p->inflight_bytes += size;
}

static void inflight_free_to(struct cr__progress *p, cr_index index)
{
    while (p->inflight_count > 0 &&
           p->inflight_last[p->inflight_head] <= index) {
        p->inflight_bytes -= p->inflight_size[p->inflight_head];
        p->inflight_head = (p->inflight_head + 1) % CR__INFLIGHT_MAX;
        p->inflight_count--;
    }
}

static void progress_init(struct cr_core *c, struct cr__progress *p, cr_id id)
{
    memset(p, 0, sizeof *p);
    p->id = id;
    p->state = CR_PROBE;
    p->next = cr__log_last(c) + 1;
    p->last_heard = c->now;
    /* The first catch-up round of a joining server (§4.2.1). */
    p->round_index = cr__log_last(c);
    p->round_start = c->now;
    p->rounds = 1;
}

/* One progress entry per server of the configuration other than us, plus
 * the server the latest change removed: it keeps receiving entries until it
 * has the one that removes it, so that it learns it is out and stops
 * campaigning (§4.2.2, §4.2.3). */
void cr__progress_sync(struct cr_core *c)
{
    struct cr__progress next[CR_SERVERS_MAX];
    unsigned n = 0;
    for (unsigned i = 0; i < c->config.n; i++) {
        cr_id id = c->config.servers[i].id;
        struct cr__progress *old;
        if (id == c->id) {
            continue;
        }
        old = cr__progress_get(c, id);
        if (old != NULL) {
            next[n] = *old;
            next[n].removed = false;
        } else {
            progress_init(c, &next[n], id);
        }
        n++;
    }
    for (unsigned i = 0; i < c->n_progress && n < CR_SERVERS_MAX; i++) {
        const struct cr__progress *old = &c->progress[i];
        if (!old->removed && cr_config_get(&c->config, old->id) == NULL) {
            next[n] = *old;
            next[n].removed = true;
            n++;
        }
    }
    memcpy(c->progress, next, n * sizeof next[0]);
    c->n_progress = n;
}

static void progress_drop(struct cr_core *c, cr_id id)
{
    for (unsigned i = 0; i < c->n_progress; i++) {
        if (c->progress[i].id == id) {
            memmove(&c->progress[i], &c->progress[i + 1],
                    (c->n_progress - i - 1) * sizeof c->progress[0]);
            c->n_progress--;
            return;
        }
    }
}

/* The seq for an append to p. A removed server is served until it has
 * the configuration that removes it and knows it committed; the first
 * append that can tell it both gets a seq of its own, whose
 * acknowledgement ends the service (see recv_append_entries_result). */
static uint64_t append_seq_for(struct cr_core *c,
                               struct cr__progress *p,
                               cr_index prev)
{
    if (p->removed && p->final_seq == 0 && c->commit >= c->config_index &&
        prev >= c->config_index) {
        p->final_seq = ++c->append_seq;
    }
    return c->append_seq;
}

static bool term_known(const struct cr_core *c, cr_index index)
{
    return index == 0 || cr__log_term(c, index) != 0;
}

static void send_snapshot(struct cr_core *c, struct cr__progress *p)
{
    struct cr_message m;
    if (!c->has_snapshot) {
        cr__trace(c, "snapshot_unavailable", "log compacted without one", p->id,
                  c->term, p->next);
        return;
    }
    memset(&m, 0, sizeof m);
    m.type = CR_MSG_INSTALL_SNAPSHOT;
    m.to = p->id;
    m.install_snapshot.meta = &c->snapshot;
    cr__send(c, &m, false);
    p->state = CR_SNAPSHOT;
    p->snapshot_index = c->snapshot.index;
    p->snapshot_sent = c->now;
    p->last_send = c->now;
    inflight_reset(p);
    cr__trace(c, "snapshot_sent", NULL, p->id, c->term, c->snapshot.index);
}

/* Sends one AppendEntries to p if its state allows; returns whether it
 * sent something. Dissertation §10.2.1: the leader may send entries before
 * they are durable on its own disk. */
static bool send_append(struct cr_core *c,
                        struct cr__progress *p,
                        bool allow_empty)
{
    struct cr_message m;
    cr_index prev = p->next - 1;
    cr_index last = cr__log_last(c);
    unsigned n = 0;
    size_t bytes = 0;

    if (p->state == CR_SNAPSHOT || (p->state == CR_PROBE && p->paused)) {
        return false;
    }
    if (p->state == CR_PIPELINE &&
        (p->inflight_count >= c->opt.max_inflight_msgs ||
         p->inflight_bytes >= c->opt.max_inflight_bytes)) {
        return false;
    }
    if (prev < c->offset || !term_known(c, prev)) {
        /* The entries it needs are compacted away. */
        send_snapshot(c, p);
        return true;
    }
    /* Batching: as many entries as fit the per-message caps, and at least
     * one so that an oversized entry still goes out. */
    for (cr_index i = p->next; i <= last && n < c->opt.max_batch_entries; i++) {
        size_t len = cr__log_at(c, i)->buf.len;
        if (n > 0 && bytes + len > c->opt.max_batch_bytes) {
            break;
        }
        bytes += len;
        n++;
    }
    if (n == 0 && !allow_empty) {
        return false;
    }
    memset(&m, 0, sizeof m);
    m.type = CR_MSG_APPEND_ENTRIES;
    m.to = p->id;
    m.append_entries.prev_index = prev;
    m.append_entries.prev_term = cr__log_term(c, prev);
    m.append_entries.commit = c->commit;
    m.append_entries.seq = append_seq_for(c, p, prev + n);
    p->commit_sent = c->commit;
    m.append_entries.n_entries = n;
    /* entries is resolved by finish() once the log stops moving. */
    cr__send(c, &m, false);
    p->last_send = c->now;
    if (p->state == CR_PROBE) {
        p->paused = true;
    } else if (n > 0) {
        inflight_push(p, prev + n, bytes);
        p->next = prev + n + 1;
    }
    return true;
}

void cr__send_append(struct cr_core *c,
                     struct cr__progress *p,
                     bool allow_empty)
{
    (void)send_append(c, p, allow_empty);
}

/* Sends what p may receive now: in PIPELINE as many batches as the caps
 * allow, otherwise at most one message. */
static void replicate(struct cr_core *c, struct cr__progress *p)
{
    if (p->state == CR_PIPELINE) {
        while (p->next <= cr__log_last(c) && send_append(c, p, false)) {
        }
    } else {
        (void)send_append(c, p, false);
    }
}

/* A heartbeat is an AppendEntries without entries whose prev is the
 * follower's match point, so that it always passes the consistency check
 * and carries the commit index (§5.2, §5.3). */
void cr__send_heartbeat(struct cr_core *c, struct cr__progress *p)
{
    struct cr_message m;
    cr_index prev = p->match;
    if (!term_known(c, prev) || prev < c->offset) {
        prev = 0;
    }
    memset(&m, 0, sizeof m);
    m.type = CR_MSG_APPEND_ENTRIES;
    m.to = p->id;
    m.append_entries.prev_index = prev;
    m.append_entries.prev_term = cr__log_term(c, prev);
    m.append_entries.commit = c->commit;
    m.append_entries.seq = append_seq_for(c, p, prev);
    p->commit_sent = c->commit;
    cr__send(c, &m, false);
    p->last_send = c->now;
}

void cr__broadcast_append(struct cr_core *c)
{
    for (unsigned i = 0; i < c->n_progress; i++) {
        replicate(c, &c->progress[i]);
    }
}

void cr__broadcast_heartbeat(struct cr_core *c)
{
    for (unsigned i = 0; i < c->n_progress; i++) {
        struct cr__progress *p = &c->progress[i];
        if (p->state == CR_PROBE) {
            /* The probe doubles as the heartbeat. */
            p->paused = false;
            (void)send_append(c, p, true);
        } else {
            cr__send_heartbeat(c, p);
        }
    }
}

static void append_noop(struct cr_core *c)
{
    struct cr_buf none = {NULL, 0};
    if (cr__log_append_owned(c, c->term, CR_ENTRY_NOOP, none, NULL) != 0) {
        /* Retried at the next heartbeat, see cr__leader_tick. */
        cr__note_oom(c);
    }
}

void cr__become_leader(struct cr_core *c)
{
    assert(c->role == CR_CANDIDATE);
    c->role = CR_LEADER;
    c->leader = c->id;
    c->transfer_target = 0;
    c->transferring_election = false;
    c->n_progress = 0;
    cr__progress_sync(c);
    c->heartbeat_deadline = c->now + c->opt.heartbeat_interval;
    c->commit_notify_deadline = 0;
    c->read_round_seq = 0;
    /* Every follower gets a full election timeout to answer (§6.2). */
    for (unsigned i = 0; i < c->n_progress; i++) {
        c->progress[i].last_heard = c->now;
    }
    cr__trace(c, "became_leader", NULL, 0, c->term, cr__log_last(c));
    /* §5.4.2 and §6.4: a new leader commits an entry of its own term at
     * once, which also commits everything before it and tells the leader
     * its commit index is current. */
    append_noop(c);
    cr__broadcast_append(c);
    for (unsigned i = 0; i < c->n_progress; i++) {
        if (c->progress[i].last_send != c->now) {
            cr__send_heartbeat(c, &c->progress[i]);
        }
    }
}

int cr__propose(struct cr_core *c, const struct cr_entry *entries, unsigned n)
{
    int rv;
    if (c->role != CR_LEADER) {
        return c->leader != 0 ? CR_ENOTLEADER : CR_ENOLEADER;
    }
    if (c->transfer_target != 0) {
        /* §3.10: refuse proposals while leadership is being handed over. */
        return CR_ETRANSFER;
    }
    if (n == 0 || entries == NULL) {
        return CR_EINVAL;
    }
    for (unsigned i = 0; i < n; i++) {
        if (entries[i].type != CR_ENTRY_COMMAND ||
            (entries[i].buf.len > 0 && entries[i].buf.base == NULL)) {
            return CR_EINVAL;
        }
    }
    rv = cr__log_append(c, entries, n, c->term);
    if (rv != 0) {
        return rv;
    }
    cr__broadcast_append(c);
    return 0;
}

/* Sends p the commit index if it has not had it and nothing in flight to
 * it will bring it an answer soon: new entries if there are any, else a
 * heartbeat. */
static void notify_commit(struct cr_core *c, struct cr__progress *p)
{
    if (p->commit_sent >= c->commit || p->state == CR_SNAPSHOT ||
        (p->state == CR_PIPELINE && p->inflight_count > 0) ||
        (p->state == CR_PROBE && p->paused)) {
        return;
    }
    if (p->next > cr__log_last(c) || !send_append(c, p, false)) {
        cr__send_heartbeat(c, p);
    }
}

static void notify_commit_all(struct cr_core *c)
{
    c->commit_notify_deadline = 0;
    for (unsigned i = 0; i < c->n_progress; i++) {
        notify_commit(c, &c->progress[i]);
    }
}

/* A follower behind on the commit index hears of it within
 * commit_timeout: under load the next append carries it (one message,
 * not two, per write), an idle follower gets a heartbeat when the timeout
 * expires (see cr__leader_tick). */
static void schedule_commit_notify(struct cr_core *c)
{
    if (c->opt.commit_timeout == 0) {
        notify_commit_all(c);
    } else if (c->commit_notify_deadline == 0) {
        c->commit_notify_deadline = c->now + c->opt.commit_timeout;
    }
}

/* Raft §5.3/§5.4.2 (Figure 8): the leader commits an index once a majority
 * of voters store it, and only if the entry there is of the current term;
 * earlier entries then commit indirectly. The leader counts itself only
 * for what is durable on its own disk (§10.2.1); a leader being removed
 * does not count itself at all (§4.2.2). */
void cr__maybe_commit(struct cr_core *c)
{
    cr_index match[CR_SERVERS_MAX];
    unsigned n = 0;
    unsigned q;
    cr_index index;
    if (c->role != CR_LEADER) {
        return;
    }
    for (unsigned i = 0; i < c->config.n; i++) {
        const struct cr_server *s = &c->config.servers[i];
        cr_index m;
        unsigned j;
        if (s->suffrage != CR_VOTER) {
            continue;
        }
        if (s->id == c->id) {
            m = c->durable_index;
        } else {
            struct cr__progress *p = cr__progress_get(c, s->id);
            m = p != NULL ? p->match : 0;
        }
        /* Insertion sort, descending. */
        for (j = n; j > 0 && match[j - 1] < m; j--) {
            match[j] = match[j - 1];
        }
        match[j] = m;
        n++;
    }
    if (n == 0) {
        return;
    }
    q = n / 2 + 1;
    index = match[q - 1];
    if (index <= c->commit || cr__log_term(c, index) != c->term) {
        return;
    }
    cr__set_commit(c, index);
    schedule_commit_notify(c);
    cr__after_commit(c);
}

static void reply_append(struct cr_core *c,
                         const struct cr_message *m,
                         bool success,
                         cr_index index,
                         cr_index hint_index)
{
    struct cr_message r;
    memset(&r, 0, sizeof r);
    r.type = CR_MSG_APPEND_ENTRIES_RESULT;
    r.to = m->from;
    r.term = c->term;
    r.append_entries_result.success = success;
    r.context = m->context;
    r.append_entries_result.index = index;
    r.append_entries_result.hint_index = hint_index;
    r.append_entries_result.hint_term = cr__log_term(c, hint_index);
    r.append_entries_result.last_index = cr__log_last(c);
    r.append_entries_result.seq =
        m->type == CR_MSG_APPEND_ENTRIES ? m->append_entries.seq : 0;
    /* An acknowledgement promises that the entries are durable: hold it
     * until every write so far is. */
    cr__send(c, &r, true);
}

/* Follows the leader of the current term that sent m. */
static void heard_from_leader(struct cr_core *c, const struct cr_message *m)
{
    if (c->role != CR_FOLLOWER || c->leader != m->from) {
        cr__become_follower(c, c->term, m->from);
        cr__trace(c, "leader_changed", NULL, m->from, c->term, 0);
    }
    c->heard_leader = true;
    c->last_leader_contact = c->now;
    cr__reset_election_timer(c);
}

static bool entries_valid(const struct cr_message *m)
{
    const struct cr_append_entries *ae = &m->append_entries;
    cr_term prev = ae->prev_term;
    for (unsigned i = 0; i < ae->n_entries; i++) {
        const struct cr_entry *e = &ae->entries[i];
        struct cr_config scratch;
        if (e->term < prev || e->term > m->term || e->term == 0) {
            return false;
        }
        prev = e->term;
        if (e->buf.len > 0 && e->buf.base == NULL) {
            return false;
        }
        switch (e->type) {
            case CR_ENTRY_COMMAND:
            case CR_ENTRY_NOOP:
                break;
            case CR_ENTRY_CONFIG:
                if (cr_config_decode(e->buf.base, e->buf.len, &scratch) != 0) {
                    return false;
                }
                break;
            default:
                return false;
        }
    }
    return true;
}

void cr__recv_append_entries(struct cr_core *c, const struct cr_message *m)
{
    const struct cr_append_entries *ae = &m->append_entries;
    const struct cr_entry *entries = ae->entries;
    unsigned n = ae->n_entries;
    cr_index prev = ae->prev_index;
    cr_index last;
    cr_index match;
    bool config = false;

    if (m->term < c->term) {
        /* A stale leader: our term in the answer makes it step down. */
        reply_append(c, m, false, ae->prev_index, 0);
        return;
    }
    if (c->role == CR_LEADER) {
        /* Two leaders in one term cannot happen (§5.2); ignore. */
        cr__trace(c, "append_ignored", "from another leader of our term",
                  m->from, m->term, 0);
        return;
    }
    heard_from_leader(c, m);
    if (!entries_valid(m) || (prev == 0 && ae->prev_term != 0)) {
        cr__trace(c, "append_rejected", "malformed entries", m->from, m->term,
                  prev);
        return;
    }
    /* Entries up to our commit index are committed, hence identical to the
     * leader's (Log Matching, Leader Completeness): skip them. */
    if (prev < c->commit) {
        cr_index skip = c->commit - prev;
        if (skip >= n) {
            reply_append(c, m, true, c->commit, 0);
            return;
        }
        entries += skip;
        n -= (unsigned)skip;
        prev = c->commit;
        if (cr__log_term(c, prev) != entries[-1].term) {
            cr__trace(c, "append_rejected",
                      "leader disagrees with a committed entry", m->from,
                      m->term, prev);
            return;
        }
    } else if (prev > cr__log_last(c) ||
               cr__log_term(c, prev) != ae->prev_term) {
        /* §5.3 consistency check failed. Hint where our log could match:
         * the last index at or before prev whose term is <= the leader's
         * prev term, so that the leader skips a whole term at a time. */
        cr_index hint = cr__log_find_conflict(c, prev, ae->prev_term);
        reply_append(c, m, false, ae->prev_index, hint);
        return;
    }
    last = cr__log_last(c);
    for (unsigned k = 0; k < n; k++) {
        cr_index index = prev + 1 + k;
        if (index <= last) {
            if (cr__log_term(c, index) == entries[k].term) {
                continue;
            }
            /* §5.3: a conflicting entry and all that follow it go. Never a
             * committed one. */
            assert(index > c->commit);
            cr__trace(c, "log_truncated", NULL, m->from, m->term, index);
            if (cr__log_at(c, index) != NULL) {
                for (cr_index j = index; j <= last; j++) {
                    if (cr__log_at(c, j)->type == CR_ENTRY_CONFIG) {
                        config = true;
                    }
                }
            }
            cr__log_truncate(c, index);
        }
        for (unsigned j = k; j < n; j++) {
            if (entries[j].type == CR_ENTRY_CONFIG) {
                config = true;
            }
        }
        if (cr__log_append(c, entries + k, n - k, 0) != 0) {
            cr__note_oom(c);
            if (config) {
                cr__config_recompute(c);
            }
            return;
        }
        break;
    }
    if (config) {
        /* §4.1: a configuration is in force as soon as it is in the log,
         * and the previous one again if it is truncated away. */
        cr__config_recompute(c);
    }
    match = prev + n;
    cr__set_commit(c, ae->commit < match ? ae->commit : match);
    reply_append(c, m, true, match, 0);
}

void cr__recv_append_entries_result(struct cr_core *c,
                                    const struct cr_message *m)
{
    const struct cr_append_entries_result *r = &m->append_entries_result;
    struct cr__progress *p;
    if (c->role != CR_LEADER || m->term < c->term) {
        return;
    }
    p = cr__progress_get(c, m->from);
    if (p == NULL) {
        return;
    }
    p->last_heard = c->now;
    if (r->seq > p->acked_seq && r->seq <= c->append_seq) {
        p->acked_seq = r->seq;
    }
    if (r->success) {
        bool progressed = false;
        if (r->index > cr__log_last(c)) {
            return; /* claims entries we never had: ignore */
        }
        if (r->index > p->match) {
            p->match = r->index;
            progressed = true;
        }
        switch (p->state) {
            case CR_PROBE:
                progress_pipeline(p);
                break;
            case CR_PIPELINE:
                inflight_free_to(p, r->index);
                if (p->next <= p->match) {
                    p->next = p->match + 1;
                }
                break;
            case CR_SNAPSHOT:
                if (p->match >= p->snapshot_index) {
                    cr__trace(c, "snapshot_done", NULL, p->id, c->term,
                              p->match);
                    progress_pipeline(p);
                }
                break;
        }
        if (p->removed && p->final_seq != 0 && r->seq >= p->final_seq) {
            cr__trace(c, "removed_server_informed", NULL, p->id, c->term,
                      p->match);
            progress_drop(c, p->id);
            return;
        }
        if (progressed) {
            cr__maybe_commit(c);
            cr__transfer_check(c, p);
            cr__catch_up(c, p);
        }
        cr__reads_check(c);
        if (c->role == CR_LEADER) {
            replicate(c, p);
            if (p->commit_sent < c->commit) {
                schedule_commit_notify(c);
            }
        }
        return;
    }
    cr__reads_check(c);
    if (p->state == CR_SNAPSHOT) {
        return;
    }
    if (p->state == CR_PIPELINE && r->index <= p->match) {
        return; /* answers something older than what it has acked */
    }
    if (p->state == CR_PROBE && r->index != p->next - 1) {
        return; /* answers an older probe */
    }
    /* Move next back to just after where the logs may agree (§5.3). */
    {
        cr_index next;
        if (r->hint_term > 0) {
            next = cr__log_find_conflict(c, r->hint_index, r->hint_term) + 1;
        } else {
            next = r->hint_index + 1;
        }
        if (next > r->index) {
            next = r->index;
        }
        if (p->state == CR_PROBE && next <= p->match) {
            /* The follower refuses the probe just after what it had
             * acknowledged: its log lost durable entries (a wiped or
             * replaced disk, a torn write the disk had reported synced).
             * Figure 2 assumes this never happens, and waiting for the
             * entries to come back would stall the follower for good, so
             * the leader forgets them. The refusal answers the current
             * probe (checked above), and a follower that restarted is
             * probed: its connection dropped (CR_EVENT_UNREACHABLE), or
             * appends in flight went unanswered (loss detection at the
             * heartbeat). Lowering match is safe: commit never goes back,
             * and a lower match only counts the follower for less. (A
             * late answer to an old probe at the same index costs one
             * extra round, nothing more.) */
            cr__trace(c, "follower_lost_entries", NULL, p->id, c->term,
                      p->match);
            p->match = next > 0 ? next - 1 : 0;
        }
        cr__progress_probe(p);
        if (next > p->match + 1) {
            p->next = next;
        }
        if (p->next == 0) {
            p->next = 1;
        }
    }
    (void)send_append(c, p, true);
}

void cr__recv_install_snapshot(struct cr_core *c, const struct cr_message *m)
{
    const struct cr_snapshot_meta *meta = m->install_snapshot.meta;
    if (m->term < c->term) {
        reply_append(c, m, false, meta->index, 0);
        return;
    }
    if (c->role == CR_LEADER) {
        return;
    }
    heard_from_leader(c, m);
    if (meta->index == 0 || meta->term == 0 ||
        meta->config_index > meta->index || meta->config.n > CR_SERVERS_MAX ||
        cr_config_voters(&meta->config) == 0) {
        cr__trace(c, "snapshot_rejected", "malformed metadata", m->from,
                  m->term, meta->index);
        return;
    }
    if (meta->index <= c->commit) {
        reply_append(c, m, true, c->commit, 0);
        return;
    }
    if (meta->index <= cr__log_last(c) &&
        cr__log_term(c, meta->index) == meta->term) {
        /* Our log already holds the snapshot's last entry, hence all that
         * precedes it: it only tells us what is committed. */
        cr__set_commit(c, meta->index);
        reply_append(c, m, true, meta->index, 0);
        return;
    }
    cr__trace(c, "snapshot_installed", NULL, m->from, m->term, meta->index);
    cr__log_install(c, meta->index, meta->term);
    c->snapshot = *meta;
    c->has_snapshot = true;
    c->dirty_snapshot = true;
    cr__set_commit(c, meta->index);
    c->applied_out = meta->index;
    cr__config_apply(c, &meta->config, meta->config_index);
    reply_append(c, m, true, meta->index, 0);
}

void cr__leader_tick(struct cr_core *c)
{
    if (c->opt.check_quorum) {
        /* §6.2: a leader that has not heard from a majority within an
         * election timeout steps down, so that clients find the real
         * leader and reads never come from a deposed one. Checked at every
         * heartbeat, so it steps down within ET + one heartbeat. */
        unsigned active = cr__is_voter(c, c->id) ? 1 : 0;
        for (unsigned i = 0; i < c->n_progress; i++) {
            const struct cr__progress *p = &c->progress[i];
            if (cr__is_voter(c, p->id) &&
                c->now - p->last_heard < c->opt.election_timeout) {
                active++;
            }
        }
        if (active < cr__quorum(c)) {
            cr__trace(c, "lost_quorum",
                      "no majority heard from in an election timeout", 0,
                      c->term, 0);
            cr__become_follower(c, c->term, 0);
            return;
        }
    }
    if (c->transfer_target != 0 && c->now >= c->transfer_deadline) {
        cr__transfer_abort(c, "target did not take over in time");
    }
    if (c->commit_notify_deadline != 0 && c->now >= c->commit_notify_deadline) {
        notify_commit_all(c);
    }
    if (c->now < c->heartbeat_deadline) {
        return;
    }
    c->heartbeat_deadline = c->now + c->opt.heartbeat_interval;
    if (cr__log_term(c, cr__log_last(c)) != c->term) {
        append_noop(c);
    }
    for (unsigned i = 0; i < c->n_progress; i++) {
        struct cr__progress *p = &c->progress[i];
        if (p->state == CR_PIPELINE) {
            /* Appends were in flight a heartbeat ago and none has been
             * acknowledged since: assume they were lost and probe. */
            if (p->inflight_count > 0 && p->inflight_at_heartbeat &&
                p->match == p->match_at_heartbeat) {
                cr__trace(c, "replication_stalled", NULL, p->id, c->term,
                          p->match);
                cr__progress_probe(p);
            }
            p->match_at_heartbeat = p->match;
            p->inflight_at_heartbeat = p->inflight_count > 0;
        } else if (p->state == CR_SNAPSHOT &&
                   c->now - p->snapshot_sent >= c->opt.snapshot_timeout) {
            cr__trace(c, "snapshot_timeout", NULL, p->id, c->term,
                      p->snapshot_index);
            cr__progress_probe(p);
        }
    }
    cr__broadcast_heartbeat(c);
    cr__membership_tick(c);
}
