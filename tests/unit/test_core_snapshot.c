/* Snapshots and restarts: compaction, InstallSnapshot, cr_core_load
 * (Raft paper §7; dissertation §5). */
#include <string.h>

#include "fixture.h"

/* A cluster of 3 whose leader (1) committed entries 1..12. */
static struct fx *committed_twelve(void)
{
    struct fx *f = fx_new(3, NULL);
    assert_int_equal(fx_bootstrap(f, 3), 0);
    fx_elect(f, 1);
    assert_int_equal(fx_propose(f, 1, 10, 3), 0);
    fx_flush(f);
    assert_int_equal(cr_core_commit(&f->core[1]), 12);
    return f;
}

/* Raft §7, dissertation §5.1: once the state machine has saved a snapshot,
 * the log up to it can go, except for a few trailing entries kept for
 * followers that are slightly behind. */
static void snapshot_event_compacts_log(void **state)
{
    struct fx *f = committed_twelve();
    const struct cr_snapshot_meta *meta;
    cr_term t = cr_core_term(&f->core[1]);
    (void)state;
    assert_null(cr_core_snapshot(&f->core[1]));
    assert_int_equal(fx_snapshot(f, 1, 10, 3), 0);
    assert_int_equal(cr_core_first_index(&f->core[1]), 8);
    assert_null(cr_core_entry(&f->core[1], 7));
    assert_non_null(cr_core_entry(&f->core[1], 8));
    assert_int_equal(cr_core_last_index(&f->core[1]), 12);
    assert_int_equal(cr_core_term_at(&f->core[1], 10), t);
    meta = cr_core_snapshot(&f->core[1]);
    assert_non_null(meta);
    assert_int_equal(meta->index, 10);
    assert_int_equal(meta->term, t);
    assert_int_equal(meta->config_index, 1);
    assert_true(cr_config_equal(&meta->config, &f->config));
    /* Compaction is the node's business: nothing to write. */
    assert_int_equal(f->u[1].persist_seq, 0);

    /* Without trailing entries the log starts right after it. */
    assert_int_equal(fx_snapshot(f, 1, 12, 0), 0);
    assert_int_equal(cr_core_first_index(&f->core[1]), 13);
    assert_int_equal(cr_core_last_index(&f->core[1]), 12);
    assert_int_equal(cr_core_last_term(&f->core[1]), t);

    /* The leader keeps working. */
    assert_int_equal(fx_propose(f, 1, 1, 1), 0);
    fx_flush(f);
    assert_int_equal(cr_core_commit(&f->core[1]), 13);
    fx_free(f);
}

/* A snapshot covers only what was handed out as committed, and only moves
 * forward. */
static void snapshot_event_validated(void **state)
{
    struct fx *f = committed_twelve();
    (void)state;
    assert_int_equal(fx_snapshot(f, 1, 13, 0), CR_EINVAL);
    assert_int_equal(fx_snapshot(f, 1, 10, 0), 0);
    assert_int_equal(fx_snapshot(f, 1, 10, 0), CR_ESTALE);
    assert_int_equal(fx_snapshot(f, 1, 5, 0), CR_ESTALE);
    assert_int_equal(cr_core_snapshot(&f->core[1])->index, 10);
    assert_int_equal(cr_core_first_index(&f->core[1]), 11);
    fx_free(f);
}

/* A leader (1) that compacted its log through index 7 while 3 was cut off
 * with only entry 1. */
static struct fx *three_far_behind(void)
{
    struct fx *f = fx_new(3, NULL);
    assert_int_equal(fx_bootstrap(f, 3), 0);
    f->cut[3] = true;
    fx_elect(f, 1);
    assert_int_equal(fx_propose(f, 1, 5, 2), 0);
    fx_flush(f);
    assert_int_equal(cr_core_commit(&f->core[1]), 7);
    assert_int_equal(fx_snapshot(f, 1, 7, 0), 0);
    f->cut[3] = false;
    return f;
}

/* Raft §7: a follower that needs entries the leader has discarded gets
 * the snapshot instead. */
static void lagging_follower_gets_install_snapshot(void **state)
{
    struct fx *f = three_far_behind();
    const struct cr_message *m;
    (void)state;
    f->now += FX_HB;
    assert_int_equal(fx_tick(f, 1), 0);
    m = fx_upd_find(&f->u[1], CR_MSG_INSTALL_SNAPSHOT, 3);
    assert_non_null(m);
    assert_non_null(m->install_snapshot.meta);
    assert_int_equal(m->install_snapshot.meta->index, 7);
    assert_int_equal(m->install_snapshot.meta->term, cr_core_term(&f->core[1]));
    assert_null(fx_upd_find(&f->u[1], CR_MSG_INSTALL_SNAPSHOT, 2));
    fx_free(f);
}

/* Raft §7 (InstallSnapshot receiver rules 6-8): a follower whose log does
 * not hold the snapshot's last entry discards its log, takes the
 * snapshot (commit = its index) and continues after it. */
static void follower_installs_snapshot(void **state)
{
    struct fx *f = three_far_behind();
    const struct cr_update *u = &f->u[3];
    const struct cr_message *m;
    (void)state;
    f->now += FX_HB;
    assert_int_equal(fx_tick(f, 1), 0);
    fx_drop_type(f, 1, 2, FX_ANY);
    assert_int_equal(fx_deliver(f, 1, 3), 1);
    assert_true(u->flags & CR_UPDATE_SNAPSHOT);
    assert_int_equal(u->snapshot.index, 7);
    assert_int_equal(u->snapshot.term, cr_core_term(&f->core[1]));
    assert_true(cr_config_equal(&u->snapshot.config, &f->config));
    assert_int_equal(u->n_committed, 0);
    assert_int_equal(cr_core_commit(&f->core[3]), 7);
    assert_int_equal(u->hard_state.commit, 7);
    assert_int_equal(cr_core_first_index(&f->core[3]), 8);
    assert_int_equal(cr_core_last_index(&f->core[3]), 7);
    assert_int_equal(cr_core_last_term(&f->core[3]), cr_core_term(&f->core[1]));
    assert_non_null(cr_core_snapshot(&f->core[3]));
    /* The answer waits for the snapshot to be durable. */
    assert_int_equal(fx_upd_count(u, CR_MSG_APPEND_ENTRIES_RESULT, 1), 0);
    assert_int_equal(fx_persist(f, 3), 0);
    m = fx_upd_find(u, CR_MSG_APPEND_ENTRIES_RESULT, 1);
    assert_non_null(m);
    assert_true(m->append_entries_result.success);
    assert_int_equal(m->append_entries_result.index, 7);

    /* Replication resumes after the snapshot. */
    fx_flush(f);
    assert_int_equal(cr_core_match(&f->core[1], 3), 7);
    assert_int_equal(fx_propose(f, 1, 1, 1), 0);
    fx_run(f, FX_HB);
    assert_int_equal(cr_core_last_index(&f->core[3]), 8);
    assert_int_equal(f->applied[3], 8);
    fx_free(f);
}

/* Sends `to` an InstallSnapshot from 1 for (index, term) of f->config. */
static int install(struct fx *f, cr_id to, cr_index index, cr_term term)
{
    struct cr_snapshot_meta meta;
    struct cr_message m;
    memset(&meta, 0, sizeof meta);
    meta.index = index;
    meta.term = term;
    meta.config_index = 1;
    meta.config = f->config;
    fx_msg_init(&m, CR_MSG_INSTALL_SNAPSHOT, 1, to, cr_core_term(&f->core[1]));
    m.install_snapshot.meta = &meta;
    return fx_receive(f, to, &m);
}

/* Raft §7 (InstallSnapshot receiver rule 6): if the follower's log has the
 * snapshot's last entry, it keeps its log and the entries after it; a
 * snapshot at or below its commit index changes nothing. */
static void snapshot_matching_log_keeps_entries(void **state)
{
    struct fx *f = committed_twelve();
    const struct cr_message *m;
    cr_term t = cr_core_term(&f->core[1]);
    (void)state;
    f->now += FX_HB;
    assert_int_equal(fx_tick(f, 1), 0);
    fx_flush(f);
    assert_int_equal(cr_core_commit(&f->core[3]), 12);

    /* At or below the commit index: acknowledged, nothing installed. */
    assert_int_equal(install(f, 3, 10, t), 0);
    assert_false(f->u[3].flags & CR_UPDATE_SNAPSHOT);
    assert_int_equal(cr_core_last_index(&f->core[3]), 12);
    assert_int_equal(cr_core_first_index(&f->core[3]), 1);
    m = fx_peek(f, 3, 1, CR_MSG_APPEND_ENTRIES_RESULT);
    assert_non_null(m);
    assert_true(m->append_entries_result.success);
    assert_int_equal(m->append_entries_result.index, 12);
    fx_drop(f, 3, 0);

    /* Entries 13..14 reach 2 but not their commit. */
    f->cut[3] = true;
    assert_int_equal(fx_propose(f, 1, 2, 1), 0);
    fx_deliver(f, 1, 2);
    assert_int_equal(fx_persist(f, 2), 0);
    assert_int_equal(cr_core_last_index(&f->core[2]), 14);
    assert_int_equal(cr_core_commit(&f->core[2]), 12);
    assert_int_equal(install(f, 2, 13, t), 0);
    assert_false(f->u[2].flags & CR_UPDATE_SNAPSHOT);
    assert_int_equal(cr_core_last_index(&f->core[2]), 14);
    assert_int_equal(cr_core_commit(&f->core[2]), 13);
    assert_int_equal(f->applied[2], 13);
    fx_free(f);
}

/* Entries of one-byte commands with the given terms (bytes borrowed). */
static void make_entries(struct cr_entry *e, const cr_term *terms, unsigned n)
{
    static const uint8_t byte = 1;
    memset(e, 0, n * sizeof *e);
    for (unsigned i = 0; i < n; i++) {
        e[i].term = terms[i];
        e[i].type = CR_ENTRY_COMMAND;
        e[i].buf.base = (void *)&byte;
        e[i].buf.len = 1;
    }
}

static void meta_init(struct cr_snapshot_meta *m, cr_index index, cr_term term)
{
    memset(m, 0, sizeof *m);
    m->index = index;
    m->term = term;
    m->config_index = 1;
    fx_config(&m->config, 3);
}

/* cr_core_load (core.h): a snapshot plus the entries that follow it (and
 * overlap it) restore the log, the snapshot and the hard state; entries
 * committed after the snapshot are handed out again. */
static void load_with_snapshot_and_entries(void **state)
{
    struct fx *f = fx_new(3, NULL);
    struct cr_core *c = &f->core[2];
    const cr_term terms[] = {2, 2, 3, 3, 3};
    struct cr_entry e[5];
    struct cr_snapshot_meta meta;
    struct cr_hard_state hs = {.term = 3, .vote = 1, .commit = 6};
    (void)state;
    meta_init(&meta, 5, 2);
    make_entries(e, terms, 5);
    assert_int_equal(cr_core_load(c, &hs, &meta, 4, e, 5), 0);
    assert_int_equal(cr_core_first_index(c), 4);
    assert_int_equal(cr_core_last_index(c), 8);
    assert_int_equal(cr_core_term_at(c, 5), 2);
    assert_int_equal(cr_core_term_at(c, 8), 3);
    assert_int_equal(cr_core_term(c), 3);
    assert_int_equal(cr_core_vote(c), 1);
    assert_int_equal(cr_core_commit(c), 6);
    assert_non_null(cr_core_snapshot(c));
    assert_int_equal(cr_core_snapshot(c)->index, 5);
    assert_true(cr_config_equal(cr_core_config(c), &meta.config));
    assert_int_equal(cr_core_role(c), CR_FOLLOWER);

    f->applied[2] = 5;
    assert_int_equal(fx_tick(f, 2), 0);
    assert_int_equal(f->u[2].committed_first, 6);
    assert_int_equal(f->u[2].n_committed, 1);
    fx_free(f);
}

/* cr_core_load: pieces that cannot fit together are CR_ECORRUPT, and leave
 * the core as it was (it can still load good data). */
static void load_rejects_inconsistent_input(void **state)
{
    struct fx *f = fx_new(3, NULL);
    struct cr_core *c = &f->core[2];
    struct cr_hard_state hs = {.term = 3, .vote = 0, .commit = 1};
    struct cr_snapshot_meta meta;
    struct cr_entry e[4];
    uint8_t bad_config[3] = {1, 1, 0};
    (void)state;
    meta_init(&meta, 5, 2);

    /* A gap between the snapshot and the entries. */
    make_entries(e, (const cr_term[]){3, 3}, 2);
    assert_int_equal(cr_core_load(c, &hs, &meta, 7, e, 2), CR_ECORRUPT);
    /* A gap before the log without a snapshot. */
    assert_int_equal(cr_core_load(c, &hs, NULL, 2, e, 2), CR_ECORRUPT);
    assert_int_equal(cr_core_load(c, &hs, NULL, 0, e, 2), CR_ECORRUPT);
    /* Decreasing terms. */
    make_entries(e, (const cr_term[]){1, 3, 2}, 3);
    assert_int_equal(cr_core_load(c, &hs, NULL, 1, e, 3), CR_ECORRUPT);
    /* Term 0. */
    make_entries(e, (const cr_term[]){1, 0}, 2);
    assert_int_equal(cr_core_load(c, &hs, NULL, 1, e, 2), CR_ECORRUPT);
    /* After the snapshot, a term below the snapshot's. */
    make_entries(e, (const cr_term[]){1}, 1);
    assert_int_equal(cr_core_load(c, &hs, &meta, 6, e, 1), CR_ECORRUPT);
    /* A malformed configuration entry. */
    make_entries(e, (const cr_term[]){1, 1}, 2);
    e[1].type = CR_ENTRY_CONFIG;
    e[1].buf.base = bad_config;
    e[1].buf.len = sizeof bad_config;
    assert_int_equal(cr_core_load(c, &hs, NULL, 1, e, 2), CR_ECORRUPT);
    /* An unknown entry type. */
    make_entries(e, (const cr_term[]){1, 1}, 2);
    e[1].type = (enum cr_entry_type)9;
    assert_int_equal(cr_core_load(c, &hs, NULL, 1, e, 2), CR_ECORRUPT);
    /* Snapshot metadata that contradicts itself. */
    meta.config_index = 6;
    assert_int_equal(cr_core_load(c, &hs, &meta, 0, NULL, 0), CR_ECORRUPT);
    meta_init(&meta, 5, 0);
    assert_int_equal(cr_core_load(c, &hs, &meta, 0, NULL, 0), CR_ECORRUPT);

    assert_int_equal(cr_core_last_index(c), 0);
    assert_null(cr_core_snapshot(c));
    make_entries(e, (const cr_term[]){1, 2}, 2);
    e[0].type = CR_ENTRY_NOOP;
    e[0].buf.len = 0;
    assert_int_equal(cr_core_load(c, &hs, NULL, 1, e, 2), 0);
    assert_int_equal(cr_core_last_index(c), 2);
    fx_free(f);
}

/* cr_core_load (core.h): entries that overlap the snapshot but stop short
 * of its last entry, or disagree with it, are a stale tail the snapshot
 * replaced: they are discarded and the log starts after the snapshot. */
static void load_discards_entries_not_reaching_snapshot(void **state)
{
    struct fx *f = fx_new(3, NULL);
    struct cr_hard_state hs = {.term = 3, .vote = 0, .commit = 5};
    struct cr_snapshot_meta meta;
    struct cr_entry e[4];
    (void)state;
    meta_init(&meta, 5, 2);
    make_entries(e, (const cr_term[]){2, 2}, 2);
    assert_int_equal(cr_core_load(&f->core[2], &hs, &meta, 3, e, 2), 0);
    assert_int_equal(cr_core_first_index(&f->core[2]), 6);
    assert_int_equal(cr_core_last_index(&f->core[2]), 5);
    assert_int_equal(cr_core_last_term(&f->core[2]), 2);

    /* Reaching it with another term at its index: also stale. */
    make_entries(e, (const cr_term[]){1, 1, 1, 3}, 4);
    assert_int_equal(cr_core_load(&f->core[3], &hs, &meta, 3, e, 4), 0);
    assert_int_equal(cr_core_first_index(&f->core[3]), 6);
    assert_int_equal(cr_core_last_index(&f->core[3]), 5);
    assert_int_equal(cr_core_term_at(&f->core[3], 5), 2);
    fx_free(f);
}

/* Raft Figure 2 (persistent state): a restarted server has the term, the
 * vote and the log it had written. The commit index is volatile: learning
 * a new one is no write of its own, it is recorded with the next write,
 * and a restart applies at once up to what was recorded. */
static void restart_restores_term_vote_commit(void **state)
{
    struct fx *f = committed_twelve();
    struct cr_core *c = &f->core[2];
    cr_term term;
    cr_id vote;
    cr_index last;
    (void)state;
    f->now += FX_HB;
    assert_int_equal(fx_tick(f, 1), 0);
    assert_true(fx_deliver(f, 1, 2) > 0);
    /* The heartbeat brought commit 12: nothing to write, the answer goes
     * out at once. */
    assert_int_equal(cr_core_commit(c), 12);
    assert_int_equal(f->u[2].persist_seq, 0);
    assert_non_null(fx_upd_find(&f->u[2], CR_MSG_APPEND_ENTRIES_RESULT, 1));
    fx_flush(f);

    /* The next write (entry 13) records commit 12 with it. */
    assert_int_equal(fx_propose(f, 1, 1, 1), 0);
    assert_true(fx_deliver(f, 1, 2) > 0);
    assert_int_equal(fx_persist(f, 2), 0);
    term = cr_core_term(c);
    vote = cr_core_vote(c);
    last = cr_core_last_index(c);
    assert_int_equal(vote, 1);
    assert_int_equal(last, 13);

    assert_int_equal(fx_restart(f, 2), 0);
    assert_int_equal(cr_core_term(c), term);
    assert_int_equal(cr_core_vote(c), vote);
    assert_int_equal(cr_core_commit(c), 12);
    assert_int_equal(cr_core_last_index(c), last);
    assert_int_equal(cr_core_role(c), CR_FOLLOWER);
    assert_int_equal(cr_core_leader(c), 0);
    assert_true(cr_config_equal(cr_core_config(c), &f->config));
    /* The state machine starts over: committed entries come out again. */
    assert_int_equal(fx_tick(f, 2), 0);
    assert_int_equal(f->u[2].committed_first, 1);
    assert_int_equal(f->u[2].n_committed, 12);

    /* With a snapshot, from after the snapshot. */
    assert_int_equal(fx_snapshot(f, 2, 10, 2), 0);
    assert_int_equal(fx_restart(f, 2), 0);
    assert_int_equal(cr_core_snapshot(c)->index, 10);
    assert_int_equal(cr_core_commit(c), 12);
    assert_int_equal(cr_core_term(c), term);
    assert_int_equal(fx_tick(f, 2), 0);
    assert_int_equal(f->u[2].committed_first, 11);
    assert_int_equal(f->u[2].n_committed, 2);

    /* And it rejoins: the leader's entries reach it and commit. */
    fx_flush(f);
    assert_int_equal(fx_propose(f, 1, 1, 1), 0);
    fx_run(f, 2 * FX_HB);
    assert_int_equal(cr_core_last_index(c), 14);
    assert_int_equal(cr_core_commit(c), 14);
    fx_free(f);
}

/* cr_core_load: a hard state torn by a crash never takes the server back:
 * the term is at least the log's last term, the commit index at most the
 * log's end and at least the snapshot. */
static void load_repairs_torn_hard_state(void **state)
{
    struct fx *f = fx_new(3, NULL);
    const cr_term terms[] = {1, 2, 4};
    struct cr_snapshot_meta meta;
    struct cr_hard_state hs = {.term = 1, .vote = 0, .commit = 0};
    (void)state;
    assert_int_equal(fx_load(f, 2, 3, 2, 9, terms, 3), 0);
    assert_int_equal(cr_core_term(&f->core[2]), 4);
    assert_int_equal(cr_core_vote(&f->core[2]), 0);
    assert_int_equal(cr_core_commit(&f->core[2]), 3);

    meta_init(&meta, 5, 2);
    assert_int_equal(cr_core_load(&f->core[3], &hs, &meta, 0, NULL, 0), 0);
    assert_int_equal(cr_core_commit(&f->core[3]), 5);
    assert_int_equal(cr_core_term(&f->core[3]), 2);
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
        cmocka_unit_test(snapshot_event_compacts_log),
        cmocka_unit_test(snapshot_event_validated),
        cmocka_unit_test(lagging_follower_gets_install_snapshot),
        cmocka_unit_test(follower_installs_snapshot),
        cmocka_unit_test(snapshot_matching_log_keeps_entries),
        cmocka_unit_test(load_with_snapshot_and_entries),
        cmocka_unit_test(load_rejects_inconsistent_input),
        cmocka_unit_test(load_discards_entries_not_reaching_snapshot),
        cmocka_unit_test(restart_restores_term_vote_commit),
        cmocka_unit_test(load_repairs_torn_hard_state),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
