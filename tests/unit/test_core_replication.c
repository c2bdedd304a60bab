/* Log replication: the consistency check, conflicts, durability of
 * acknowledgements, commitment, pipelining, batching, heartbeats and
 * check-quorum (Raft paper §5.3, §5.4; dissertation §3.5, §6.2, §10.2). */
#include <string.h>

#include "fixture.h"

static const uint8_t payload[1] = {42};

/* Sends `to` an AppendEntries from `from` with one-byte commands of the
 * given terms after prev. */
static int append(struct fx *f,
                  cr_id to,
                  cr_id from,
                  cr_term term,
                  cr_index prev,
                  cr_term prev_term,
                  cr_index commit,
                  const cr_term *terms,
                  unsigned n)
{
    struct cr_entry entries[16];
    struct cr_message m;
    assert_true(n <= 16);
    memset(entries, 0, sizeof entries);
    for (unsigned i = 0; i < n; i++) {
        entries[i].term = terms[i];
        entries[i].type = CR_ENTRY_COMMAND;
        entries[i].buf.base = (void *)payload;
        entries[i].buf.len = sizeof payload;
    }
    fx_msg_init(&m, CR_MSG_APPEND_ENTRIES, from, to, term);
    m.append_entries.prev_index = prev;
    m.append_entries.prev_term = prev_term;
    m.append_entries.commit = commit;
    m.append_entries.n_entries = n;
    m.append_entries.entries = n > 0 ? entries : NULL;
    return fx_receive(f, to, &m);
}

/* The follower's answer to `to` once durable; copied, then dropped. */
static struct cr_append_entries_result ack(struct fx *f, cr_id id, cr_id to)
{
    struct cr_append_entries_result r;
    const struct cr_message *m;
    assert_int_equal(fx_persist(f, id), 0);
    m = fx_peek(f, id, to, CR_MSG_APPEND_ENTRIES_RESULT);
    assert_non_null(m);
    r = m->append_entries_result;
    fx_drop(f, id, to);
    return r;
}

/* Raft §5.3 (Figure 2, AppendEntries rule 2): a follower whose log has no
 * entry at prev_index with prev_term refuses, and changes nothing. */
static void consistency_check_rejects_mismatching_prev(void **state)
{
    struct fx *f = fx_new(3, NULL);
    const cr_term log[] = {1, 1, 2};
    const cr_term three[] = {3};
    struct cr_append_entries_result r;
    (void)state;
    assert_int_equal(fx_load(f, 2, 2, 0, 1, log, 3), 0);

    /* Same index, other term. */
    assert_int_equal(append(f, 2, 1, 3, 3, 3, 1, three, 1), 0);
    r = ack(f, 2, 1);
    assert_false(r.success);
    assert_int_equal(r.index, 3);
    assert_int_equal(r.last_index, 3);
    assert_int_equal(cr_core_last_index(&f->core[2]), 3);
    assert_int_equal(cr_core_term_at(&f->core[2], 3), 2);

    /* Beyond the end of the log. */
    assert_int_equal(append(f, 2, 1, 3, 5, 3, 1, three, 1), 0);
    r = ack(f, 2, 1);
    assert_false(r.success);
    assert_int_equal(r.index, 5);
    assert_true(r.hint_index <= 3);
    assert_int_equal(cr_core_last_index(&f->core[2]), 3);
    assert_int_equal(f->disk[2].n, 3);
    fx_free(f);
}

/* Raft §5.3 (Figure 2, AppendEntries rule 3): an existing entry that
 * conflicts with a new one (same index, other term) is deleted with all
 * that follow it, and the leader's entries take their place. */
static void conflicting_suffix_truncated_and_replaced(void **state)
{
    struct fx *f = fx_new(3, NULL);
    const cr_term log[] = {1, 1, 2, 2, 2, 2};
    const cr_term three[] = {3, 3};
    const struct cr_update *u = &f->u[2];
    struct cr_append_entries_result r;
    (void)state;
    assert_int_equal(fx_load(f, 2, 2, 0, 1, log, 6), 0);
    assert_int_equal(append(f, 2, 1, 3, 2, 1, 1, three, 2), 0);
    assert_true(u->flags & CR_UPDATE_ENTRIES);
    assert_int_equal(u->entries_first, 3);
    assert_int_equal(u->n_entries, 2);
    assert_int_equal(u->entries[0].term, 3);
    assert_int_equal(u->entries[1].term, 3);
    assert_int_equal(cr_core_last_index(&f->core[2]), 4);
    assert_int_equal(cr_core_term_at(&f->core[2], 3), 3);
    assert_int_equal(cr_core_term_at(&f->core[2], 4), 3);
    assert_int_equal(cr_core_term_at(&f->core[2], 5), 0);
    r = ack(f, 2, 1);
    assert_true(r.success);
    assert_int_equal(r.index, 4);
    /* The simulated disk applied the same truncation. */
    assert_int_equal(f->disk[2].n, 4);
    assert_int_equal(f->disk[2].entries[3].term, 3);
    fx_free(f);
}

/* Raft §5.3 ("if an existing entry conflicts..."): entries that match are
 * kept, and so is whatever follows them; a late or duplicated append must
 * not cut a log that is longer than the message. */
static void matching_entries_do_not_truncate(void **state)
{
    struct fx *f = fx_new(3, NULL);
    const cr_term log[] = {1, 1, 2, 2};
    const cr_term one[] = {1};
    struct cr_append_entries_result r;
    (void)state;
    assert_int_equal(fx_load(f, 2, 2, 0, 1, log, 4), 0);
    assert_int_equal(append(f, 2, 1, 2, 1, 1, 1, one, 1), 0);
    assert_false(f->u[2].flags & CR_UPDATE_ENTRIES);
    assert_int_equal(cr_core_last_index(&f->core[2]), 4);
    r = ack(f, 2, 1);
    assert_true(r.success);
    assert_int_equal(r.index, 2);
    fx_free(f);
}

/* Raft Figure 2: a follower acknowledges entries only once they are on
 * stable storage; the answer is held inside the core until then. */
static void follower_ack_held_until_durable(void **state)
{
    struct fx *f = fx_new(3, NULL);
    const cr_term two[] = {2};
    const struct cr_update *u = &f->u[2];
    const struct cr_message *m;
    (void)state;
    assert_int_equal(fx_bootstrap(f, 3), 0);
    assert_int_equal(append(f, 2, 1, 2, 1, 1, 1, two, 1), 0);
    assert_int_not_equal(u->persist_seq, 0);
    assert_int_equal(fx_upd_count(u, CR_MSG_APPEND_ENTRIES_RESULT, 0), 0);
    assert_int_equal(fx_tick(f, 2), 0);
    assert_int_equal(fx_upd_count(u, CR_MSG_APPEND_ENTRIES_RESULT, 0), 0);

    assert_int_equal(fx_persist(f, 2), 0);
    m = fx_upd_find(u, CR_MSG_APPEND_ENTRIES_RESULT, 1);
    assert_non_null(m);
    assert_true(m->append_entries_result.success);
    assert_int_equal(m->append_entries_result.index, 2);
    assert_int_equal(m->term, 2);
    fx_free(f);
}

/* Raft Figure 2: an acknowledgement promises durability of everything it
 * covers; with two appends in flight, making the first one durable
 * releases the first answer only. */
static void follower_acks_only_what_is_durable(void **state)
{
    struct fx *f = fx_new(3, NULL);
    const cr_term two[] = {2};
    const struct cr_update *u = &f->u[2];
    struct cr_event ev = {.type = CR_EVENT_PERSISTED};
    uint64_t seq1;
    cr_index last1;
    (void)state;
    assert_int_equal(fx_bootstrap(f, 3), 0);
    assert_int_equal(append(f, 2, 1, 2, 1, 1, 1, two, 1), 0);
    seq1 = u->persist_seq;
    last1 = u->persist_last_index;
    assert_int_equal(append(f, 2, 1, 2, 2, 2, 1, two, 1), 0);
    assert_true(u->persist_seq > seq1);

    ev.persisted.seq = seq1;
    ev.persisted.last_index = last1;
    assert_int_equal(fx_step(f, 2, &ev), 0);
    assert_int_equal(fx_upd_count(u, CR_MSG_APPEND_ENTRIES_RESULT, 1), 1);
    assert_int_equal(fx_upd_find(u, CR_MSG_APPEND_ENTRIES_RESULT, 1)
                         ->append_entries_result.index,
                     2);

    assert_int_equal(fx_persist(f, 2), 0);
    assert_int_equal(fx_upd_count(u, CR_MSG_APPEND_ENTRIES_RESULT, 1), 1);
    assert_int_equal(fx_upd_find(u, CR_MSG_APPEND_ENTRIES_RESULT, 1)
                         ->append_entries_result.index,
                     3);
    fx_free(f);
}

/* Raft §5.3 (the optimization at the end of the section): with the
 * follower's hint, the leader skips a whole conflicting term in one round
 * trip instead of one entry per round trip. */
static void conflict_hint_skips_whole_term(void **state)
{
    struct fx *f = fx_new(3, NULL);
    const cr_term leader_log[] = {1, 2, 2, 2, 2, 2, 2};
    const cr_term stale_log[] = {1, 3, 3, 3, 3, 3, 3, 3, 3, 3};
    const cr_term voter_log[] = {1, 2};
    unsigned appends = 0, rejections = 0;
    (void)state;
    assert_int_equal(fx_load(f, 1, 3, 0, 1, leader_log, 7), 0);
    assert_int_equal(fx_load(f, 2, 3, 0, 1, stale_log, 10), 0);
    assert_int_equal(fx_load(f, 3, 3, 0, 1, voter_log, 2), 0);
    f->cut[2] = true;
    fx_elect(f, 1);
    f->cut[2] = false;

    /* The next heartbeat probes server 2. */
    f->now += FX_HB;
    assert_int_equal(fx_tick(f, 1), 0);
    fx_drop(f, 1, 3);
    while (fx_count(f, 1, 2, CR_MSG_APPEND_ENTRIES) > 0) {
        appends += fx_deliver_type(f, 1, 2, CR_MSG_APPEND_ENTRIES);
        assert_int_equal(fx_persist(f, 2), 0);
        if (fx_peek(f, 2, 1, CR_MSG_APPEND_ENTRIES_RESULT) != NULL &&
            !fx_peek(f, 2, 1, CR_MSG_APPEND_ENTRIES_RESULT)
                 ->append_entries_result.success) {
            rejections++;
        }
        fx_deliver(f, 2, 1);
        assert_int_equal(fx_persist(f, 1), 0);
        fx_drop(f, 1, 3);
        assert_true(appends < 20);
    }
    assert_int_equal(rejections, 1);
    assert_int_equal(appends, 2);
    assert_int_equal(cr_core_last_index(&f->core[2]),
                     cr_core_last_index(&f->core[1]));
    for (cr_index i = 1; i <= cr_core_last_index(&f->core[1]); i++) {
        assert_int_equal(cr_core_term_at(&f->core[2], i),
                         cr_core_term_at(&f->core[1], i));
    }
    fx_free(f);
}

/* Dissertation §10.2.1: the leader sends new entries before its own write
 * of them is durable, but counts itself towards commitment only once it
 * is. */
static void leader_sends_before_durable_counts_itself_after(void **state)
{
    struct fx *f = fx_new(3, NULL);
    const struct cr_update *u = &f->u[1];
    const struct cr_message *m;
    cr_index index, commit;
    (void)state;
    assert_int_equal(fx_bootstrap(f, 3), 0);
    fx_elect(f, 1);
    commit = cr_core_commit(&f->core[1]);

    assert_int_equal(fx_propose(f, 1, 1, 8), 0);
    index = u->index;
    assert_int_not_equal(u->persist_seq, 0);
    m = fx_upd_find(u, CR_MSG_APPEND_ENTRIES, 2);
    assert_non_null(m);
    assert_int_equal(m->append_entries.n_entries, 1);
    assert_int_equal(m->append_entries.prev_index + 1, index);
    assert_non_null(fx_upd_find(u, CR_MSG_APPEND_ENTRIES, 3));

    /* One follower has it durable, the leader not yet: 1 of 3. */
    fx_deliver(f, 1, 2);
    assert_int_equal(fx_persist(f, 2), 0);
    fx_deliver(f, 2, 1);
    assert_int_equal(cr_core_match(&f->core[1], 2), index);
    assert_true(cr_core_match(&f->core[1], 1) < index);
    assert_int_equal(cr_core_commit(&f->core[1]), commit);

    assert_int_equal(fx_persist(f, 1), 0);
    assert_int_equal(cr_core_match(&f->core[1], 1), index);
    assert_int_equal(cr_core_commit(&f->core[1]), index);
    assert_int_equal(u->n_committed, 1);
    assert_int_equal(u->committed_first, index);
    fx_free(f);
}

/* Raft §5.4.2 (Figure 8): a leader never commits an entry of an earlier
 * term by counting replicas; only an entry of its own term commits that
 * way, and the earlier ones with it. */
static void commit_only_by_counting_current_term(void **state)
{
    struct fx *f = fx_new(3, NULL);
    const cr_term old_log[] = {1, 2};
    const cr_term short_log[] = {1};
    struct cr_message m;
    cr_term t;
    (void)state;
    assert_int_equal(fx_load(f, 1, 2, 0, 1, old_log, 2), 0);
    assert_int_equal(fx_load(f, 2, 2, 0, 1, old_log, 2), 0);
    assert_int_equal(fx_load(f, 3, 2, 0, 1, short_log, 1), 0);
    fx_elect_votes_only(f, 1);
    assert_int_equal(fx_persist(f, 1), 0);
    t = cr_core_term(&f->core[1]);
    assert_int_equal(cr_core_last_index(&f->core[1]), 3);
    assert_int_equal(cr_core_match(&f->core[1], 1), 3);

    /* Server 2 acknowledges index 2 (term 2): the leader and 2 hold it,
     * a majority, but it is of an earlier term. */
    fx_msg_init(&m, CR_MSG_APPEND_ENTRIES_RESULT, 2, 1, t);
    m.append_entries_result.success = true;
    m.append_entries_result.index = 2;
    m.append_entries_result.last_index = 2;
    assert_int_equal(fx_receive(f, 1, &m), 0);
    assert_int_equal(cr_core_match(&f->core[1], 2), 2);
    assert_int_equal(cr_core_commit(&f->core[1]), 1);
    assert_int_equal(f->u[1].n_committed, 0);

    /* Once 2 stores the no-op of term t, index 3 commits, and 2 with it. */
    fx_deliver(f, 1, 2);
    assert_int_equal(fx_persist(f, 2), 0);
    fx_deliver(f, 2, 1);
    assert_int_equal(cr_core_commit(&f->core[1]), 3);
    assert_int_equal(f->n_applied[1], 3);
    fx_free(f);
}

/* Raft §5.4.2 and dissertation §6.4: a new leader appends a no-op entry of
 * its term at once, and sends it. */
static void new_leader_appends_noop(void **state)
{
    struct fx *f = fx_new(3, NULL);
    const struct cr_entry *e;
    const struct cr_message *m;
    (void)state;
    assert_int_equal(fx_bootstrap(f, 3), 0);
    fx_elect_votes_only(f, 1);
    assert_int_equal(cr_core_last_index(&f->core[1]), 2);
    e = cr_core_entry(&f->core[1], 2);
    assert_non_null(e);
    assert_int_equal(e->type, CR_ENTRY_NOOP);
    assert_int_equal(e->term, cr_core_term(&f->core[1]));
    assert_int_equal(f->disk[1].n, 2);
    assert_int_equal(f->disk[1].entries[1].type, CR_ENTRY_NOOP);
    for (cr_id to = 2; to <= 3; to++) {
        m = fx_peek(f, 1, to, CR_MSG_APPEND_ENTRIES);
        assert_non_null(m);
        assert_int_equal(m->append_entries.n_entries, 1);
        assert_int_equal(m->append_entries.entries[0].type, CR_ENTRY_NOOP);
    }
    fx_free(f);
}

/* Appends to `to` waiting in the leader's outbox: count and entries. */
static unsigned outstanding(const struct fx *f,
                            cr_id to,
                            unsigned *entries,
                            unsigned *max_entries,
                            size_t *max_bytes)
{
    unsigned n = 0;
    *entries = 0;
    *max_entries = 0;
    *max_bytes = 0;
    for (unsigned i = 0; i < f->n_box[1]; i++) {
        const struct cr_message *m = &f->box[1][i].m;
        size_t bytes = 0;
        if (m->type != CR_MSG_APPEND_ENTRIES || m->to != to ||
            m->append_entries.n_entries == 0) {
            continue;
        }
        n++;
        *entries += m->append_entries.n_entries;
        if (m->append_entries.n_entries > *max_entries) {
            *max_entries = m->append_entries.n_entries;
        }
        for (unsigned j = 0; j < m->append_entries.n_entries; j++) {
            bytes += m->append_entries.entries[j].buf.len;
        }
        if (bytes > *max_bytes) {
            *max_bytes = bytes;
        }
    }
    return n;
}

/* A leader with followers in PIPELINE, everything committed. */
static struct fx *pipeline(struct cr_options *o)
{
    struct fx *f = fx_new(3, o);
    assert_int_equal(fx_bootstrap(f, 3), 0);
    fx_elect(f, 1);
    return f;
}

/* Dissertation §10.2.1 (pipelining): at most max_inflight_msgs appends are
 * outstanding per follower; each acknowledgement lets one more go. */
static void pipelining_respects_max_inflight_msgs(void **state)
{
    struct cr_options o;
    struct fx *f;
    unsigned entries, max_entries;
    size_t max_bytes;
    (void)state;
    fx_options(&o);
    o.max_batch_entries = 1;
    o.max_inflight_msgs = 3;
    f = pipeline(&o);
    assert_int_equal(fx_propose(f, 1, 10, 1), 0);
    assert_int_equal(outstanding(f, 2, &entries, &max_entries, &max_bytes), 3);
    assert_int_equal(outstanding(f, 3, &entries, &max_entries, &max_bytes), 3);

    /* 2 answers the first: one more append goes to 2. */
    assert_true(fx_deliver_one(f, 1, 2, CR_MSG_APPEND_ENTRIES));
    assert_int_equal(fx_persist(f, 2), 0);
    assert_int_equal(fx_deliver(f, 2, 1), 1);
    assert_int_equal(outstanding(f, 2, &entries, &max_entries, &max_bytes), 3);
    assert_int_equal(outstanding(f, 3, &entries, &max_entries, &max_bytes), 3);

    /* Everything gets there eventually. */
    fx_flush(f);
    assert_int_equal(cr_core_commit(&f->core[1]), 12);
    assert_int_equal(cr_core_last_index(&f->core[2]), 12);
    fx_free(f);
}

/* Dissertation §10.2.1: the leader stops sending to a follower once the
 * bytes in flight to it reach max_inflight_bytes. */
static void pipelining_respects_max_inflight_bytes(void **state)
{
    struct cr_options o;
    struct fx *f;
    unsigned n, entries, max_entries;
    size_t max_bytes;
    const size_t len = 40, cap = 100;
    (void)state;
    fx_options(&o);
    o.max_batch_entries = 1;
    o.max_inflight_bytes = cap;
    f = pipeline(&o);
    assert_int_equal(fx_propose(f, 1, 10, len), 0);
    n = outstanding(f, 2, &entries, &max_entries, &max_bytes);
    /* It sent while less than the cap was in flight, and then stopped. */
    assert_true((n - 1) * len < cap);
    assert_true(n * len >= cap);
    assert_true(n < 10);
    fx_flush(f);
    assert_int_equal(cr_core_last_index(&f->core[2]), 12);
    fx_free(f);
}

/* Dissertation §10.2.1 (batching): an AppendEntries carries at most
 * max_batch_entries entries. */
static void batching_respects_max_batch_entries(void **state)
{
    struct cr_options o;
    struct fx *f;
    unsigned n, entries, max_entries;
    size_t max_bytes;
    (void)state;
    fx_options(&o);
    o.max_batch_entries = 4;
    f = pipeline(&o);
    assert_int_equal(fx_propose(f, 1, 10, 1), 0);
    n = outstanding(f, 2, &entries, &max_entries, &max_bytes);
    assert_int_equal(entries, 10);
    assert_int_equal(max_entries, 4);
    assert_int_equal(n, 3);
    fx_free(f);
}

/* Dissertation §10.2.1: an AppendEntries carries at most max_batch_bytes
 * of payload, except that an oversized entry still goes, alone. */
static void batching_respects_max_batch_bytes(void **state)
{
    struct cr_options o;
    struct fx *f;
    unsigned n, entries, max_entries;
    size_t max_bytes;
    (void)state;
    fx_options(&o);
    o.max_batch_bytes = 100;
    f = pipeline(&o);
    assert_int_equal(fx_propose(f, 1, 10, 30), 0);
    n = outstanding(f, 2, &entries, &max_entries, &max_bytes);
    assert_int_equal(entries, 10);
    assert_int_equal(max_bytes, 90);
    assert_int_equal(n, 4);
    fx_flush(f);

    assert_int_equal(fx_propose(f, 1, 2, 200), 0);
    n = outstanding(f, 2, &entries, &max_entries, &max_bytes);
    assert_int_equal(entries, 2);
    assert_int_equal(max_entries, 1);
    assert_int_equal(n, 2);
    fx_free(f);
}

/* Raft §5.2-§5.3: heartbeats are empty AppendEntries that carry the
 * leader's commit index, which is how followers learn it. */
static void heartbeat_carries_commit(void **state)
{
    struct fx *f = fx_new(3, NULL);
    cr_index commit;
    (void)state;
    assert_int_equal(fx_bootstrap(f, 3), 0);
    fx_elect(f, 1);
    assert_int_equal(fx_propose(f, 1, 1, 4), 0);
    assert_int_equal(fx_persist(f, 1), 0);
    fx_deliver(f, 1, 2);
    fx_deliver(f, 1, 3);
    assert_int_equal(fx_persist(f, 2), 0);
    assert_int_equal(fx_persist(f, 3), 0);
    fx_deliver(f, 2, 1);
    fx_deliver(f, 3, 1);
    commit = cr_core_commit(&f->core[1]);
    assert_int_equal(commit, cr_core_last_index(&f->core[1]));
    /* The followers never hear of it... */
    fx_drop(f, 1, 0);
    assert_true(cr_core_commit(&f->core[2]) < commit);

    /* ...until the next heartbeat. */
    f->now += FX_HB;
    assert_int_equal(fx_tick(f, 1), 0);
    for (cr_id to = 2; to <= 3; to++) {
        const struct cr_message *m =
            fx_upd_find(&f->u[1], CR_MSG_APPEND_ENTRIES, to);
        assert_non_null(m);
        assert_int_equal(m->append_entries.n_entries, 0);
        assert_int_equal(m->append_entries.commit, commit);
    }
    fx_deliver(f, 1, 2);
    assert_int_equal(cr_core_commit(&f->core[2]), commit);
    assert_int_equal(f->applied[2], commit);
    fx_free(f);
}

/* Raft Figure 2 (AppendEntries rule 5): a follower sets its commit index
 * to min(leaderCommit, index of the last new entry): never beyond what the
 * message proved to match, even if its log is longer. */
static void follower_commit_is_min_of_leader_commit_and_last_new(void **state)
{
    struct fx *f = fx_new(3, NULL);
    const cr_term log[] = {1, 1, 1, 1, 1, 1};
    const cr_term two[] = {2};
    (void)state;
    assert_int_equal(fx_load(f, 2, 1, 0, 1, log, 6), 0);
    assert_int_equal(append(f, 2, 1, 2, 2, 1, 5, NULL, 0), 0);
    assert_int_equal(cr_core_commit(&f->core[2]), 2);
    assert_int_equal(append(f, 2, 1, 2, 2, 1, 5, two, 1), 0);
    assert_int_equal(cr_core_last_index(&f->core[2]), 3);
    assert_int_equal(cr_core_commit(&f->core[2]), 3);
    assert_int_equal(f->u[2].hard_state.commit, 3);
    fx_free(f);
}

/* Dissertation §6.2 (check-quorum): "if an election timeout elapses
 * without a successful round of heartbeats to a majority of its cluster,
 * the leader steps down". Here the followers answer every heartbeat until
 * time R (an answer at R itself), then fall silent; by R + ET (plus one
 * heartbeat interval of slack for tick granularity) the leader must have
 * stepped down.
 *
 * Before commit 003d28e cr__leader_tick checked once per election timeout
 * on flags it cleared at each check, so answers received just after a
 * check carried the leader through the next one as well and it stepped
 * down only at R + 2 ET. */
static void check_quorum_leader_without_responses_steps_down(void **state)
{
    struct fx *f = fx_new(3, NULL);
    cr_msec heard, down = 0;
    (void)state;
    assert_int_equal(fx_bootstrap(f, 3), 0);
    fx_elect(f, 1);
    /* Connected up to and including the check at ET. */
    fx_run(f, FX_ET);
    heard = f->now;
    assert_int_equal(cr_core_role(&f->core[1]), CR_LEADER);
    assert_true(cr_core_match(&f->core[1], 2) > 0);

    f->cut[2] = f->cut[3] = true;
    while (f->now < heard + 3 * FX_ET) {
        f->now += 10;
        assert_int_equal(fx_tick(f, 1), 0);
        fx_drop(f, 1, 0);
        if (cr_core_role(&f->core[1]) != CR_LEADER) {
            down = f->now;
            break;
        }
    }
    assert_int_not_equal(down, 0);
    assert_int_equal(f->u[1].role, CR_FOLLOWER);
    assert_int_equal(f->u[1].leader, 0);
    /* Not before an election timeout without answers... */
    assert_true(down >= heard + FX_ET);
    /* ...and not much after it. */
    if (down > heard + FX_ET + FX_HB) {
        print_error("last answer at %llu ms, stepped down at %llu ms\n",
                    (unsigned long long)heard, (unsigned long long)down);
    }
    assert_true(down <= heard + FX_ET + FX_HB);
    fx_free(f);
}

/* Dissertation §6.2: a leader that keeps hearing from a majority stays,
 * even with one server silent. */
static void check_quorum_leader_with_majority_stays(void **state)
{
    struct fx *f = fx_new(3, NULL);
    cr_term t;
    (void)state;
    assert_int_equal(fx_bootstrap(f, 3), 0);
    fx_elect(f, 1);
    t = cr_core_term(&f->core[1]);
    f->cut[3] = true;
    fx_run(f, 5 * FX_ET);
    assert_int_equal(cr_core_role(&f->core[1]), CR_LEADER);
    assert_int_equal(cr_core_term(&f->core[1]), t);
    fx_free(f);
}

/* Raft §5.3 and the state machine safety property (§5.4.3): committed
 * entries are handed out in log order, each exactly once, on the leader
 * and on followers, however commits arrive. (fx_step also checks every
 * update for this.) */
static void committed_entries_handed_out_in_order_once(void **state)
{
    struct fx *f = fx_new(3, NULL);
    (void)state;
    assert_int_equal(fx_bootstrap(f, 3), 0);
    fx_elect(f, 1);
    for (unsigned round = 0; round < 5; round++) {
        assert_int_equal(fx_propose(f, 1, round + 1, 3), 0);
        if (round % 2 == 0) {
            fx_deliver(f, 1, 2);
            assert_int_equal(fx_persist(f, 2), 0);
            fx_deliver(f, 2, 1);
        }
        assert_int_equal(fx_persist(f, 1), 0);
    }
    fx_flush(f);
    f->now += FX_HB;
    assert_int_equal(fx_tick(f, 1), 0);
    fx_flush(f);
    for (cr_id id = 1; id <= 3; id++) {
        cr_index commit = cr_core_commit(&f->core[id]);
        assert_int_equal(commit, cr_core_last_index(&f->core[1]));
        assert_int_equal(f->applied[id], commit);
        assert_int_equal(f->n_applied[id], commit);
    }
    fx_free(f);
}

/* Dissertation §10.2.1: appends to a follower the node could not reach are
 * lost; the leader goes back to probing it, and its next heartbeat resends
 * from the follower's match point. */
static void unreachable_follower_is_probed_again(void **state)
{
    struct fx *f = fx_new(3, NULL);
    struct cr_event ev = {.type = CR_EVENT_UNREACHABLE};
    const struct cr_message *m;
    cr_index match;
    (void)state;
    assert_int_equal(fx_bootstrap(f, 3), 0);
    fx_elect(f, 1);
    match = cr_core_match(&f->core[1], 3);
    assert_int_equal(fx_propose(f, 1, 3, 1), 0);
    fx_drop(f, 1, 3);
    ev.unreachable.id = 3;
    assert_int_equal(fx_step(f, 1, &ev), 0);

    f->now += FX_HB;
    assert_int_equal(fx_tick(f, 1), 0);
    m = fx_upd_find(&f->u[1], CR_MSG_APPEND_ENTRIES, 3);
    assert_non_null(m);
    assert_int_equal(m->append_entries.prev_index, match);
    assert_int_equal(m->append_entries.n_entries, 3);
    fx_flush(f);
    assert_int_equal(cr_core_match(&f->core[1], 3), match + 3);
    fx_free(f);
}

/* Raft §5.1: a follower refuses an AppendEntries from an older term and
 * answers with its term, which makes the stale leader step down. */
static void stale_leader_append_rejected(void **state)
{
    struct fx *f = fx_new(3, NULL);
    const cr_term log[] = {1, 1};
    const cr_term one[] = {1};
    struct cr_append_entries_result r;
    const struct cr_message *m;
    (void)state;
    assert_int_equal(fx_load(f, 2, 3, 0, 1, log, 2), 0);
    assert_int_equal(append(f, 2, 1, 2, 2, 1, 1, one, 1), 0);
    assert_int_equal(cr_core_last_index(&f->core[2]), 2);
    assert_int_equal(cr_core_leader(&f->core[2]), 0);
    m = fx_peek(f, 2, 1, CR_MSG_APPEND_ENTRIES_RESULT);
    assert_non_null(m);
    assert_int_equal(m->term, 3);
    r = ack(f, 2, 1);
    assert_false(r.success);
    fx_free(f);
}

/* A follower that lost entries it had acknowledged (a wiped or replaced
 * disk, a torn write the disk had called synced) restarts with a shorter
 * log. Raft assumes it never happens; the leader must not wait forever for
 * the follower to have what it once acknowledged: the follower refuses
 * the probe after its old match, the leader forgets that match, and the
 * follower gets the missing entries again. (Without the fix it is probed
 * at its old match forever.) */
static void follower_that_lost_acked_entries_catches_up(void **state)
{
    struct fx *f = fx_new(3, NULL);
    struct cr_event ev = {.type = CR_EVENT_UNREACHABLE};
    cr_term terms[16];
    cr_index match, last, keep = 1;
    (void)state;
    assert_int_equal(fx_bootstrap(f, 3), 0);
    fx_elect(f, 1);
    assert_int_equal(fx_propose(f, 1, 6, 1), 0);
    fx_flush(f);
    last = cr_core_last_index(&f->core[1]);
    match = cr_core_match(&f->core[1], 3);
    assert_int_equal(match, last);
    assert_true(last > keep + 3 && last <= 16);
    for (cr_index i = 1; i <= keep; i++) {
        terms[i - 1] = cr_core_term_at(&f->core[1], i);
    }

    /* Node 3 comes back with only its first `keep` entries (the
     * configuration), its term and vote kept. */
    fx_kill(f, 3);
    assert_int_equal(cr_core_init(&f->core[3], 3, FX_CLUSTER, &f->opt,
                                  &f->alloc, f->seed + 3, f->now),
                     0);
    f->live[3] = true;
    assert_int_equal(fx_load(f, 3, cr_core_term(&f->core[1]), 1, keep, terms,
                             (unsigned)keep),
                     0);
    assert_int_equal(cr_core_last_index(&f->core[3]), keep);
    fx_drop(f, 1, 3);
    fx_drop(f, 3, 1);

    /* Its connection dropped when it went down: the leader probes it. */
    ev.unreachable.id = 3;
    assert_int_equal(fx_step(f, 1, &ev), 0);

    /* A few heartbeats and probes later it has everything again. */
    for (int k = 0; k < 6; k++) {
        f->now += FX_HB;
        assert_int_equal(fx_tick(f, 1), 0);
        fx_flush(f);
    }
    assert_int_equal(cr_core_last_index(&f->core[3]), last);
    assert_int_equal(cr_core_match(&f->core[1], 3), last);
    assert_int_equal(cr_core_commit(&f->core[3]), cr_core_commit(&f->core[1]));
    fx_free(f);
}

/* With an argument, runs only the tests whose names match it (cmocka's
 * pattern: * and ? wildcards). */
int main(int argc, char **argv)
{
    if (argc > 1) {
        cmocka_set_test_filter(argv[1]);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(consistency_check_rejects_mismatching_prev),
        cmocka_unit_test(conflicting_suffix_truncated_and_replaced),
        cmocka_unit_test(matching_entries_do_not_truncate),
        cmocka_unit_test(follower_ack_held_until_durable),
        cmocka_unit_test(follower_acks_only_what_is_durable),
        cmocka_unit_test(conflict_hint_skips_whole_term),
        cmocka_unit_test(leader_sends_before_durable_counts_itself_after),
        cmocka_unit_test(commit_only_by_counting_current_term),
        cmocka_unit_test(new_leader_appends_noop),
        cmocka_unit_test(pipelining_respects_max_inflight_msgs),
        cmocka_unit_test(pipelining_respects_max_inflight_bytes),
        cmocka_unit_test(batching_respects_max_batch_entries),
        cmocka_unit_test(batching_respects_max_batch_bytes),
        cmocka_unit_test(heartbeat_carries_commit),
        cmocka_unit_test(follower_commit_is_min_of_leader_commit_and_last_new),
        cmocka_unit_test(check_quorum_leader_without_responses_steps_down),
        cmocka_unit_test(check_quorum_leader_with_majority_stays),
        cmocka_unit_test(committed_entries_handed_out_in_order_once),
        cmocka_unit_test(stale_leader_append_rejected),
        cmocka_unit_test(unreachable_follower_is_probed_again),
        cmocka_unit_test(follower_that_lost_acked_entries_catches_up),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
