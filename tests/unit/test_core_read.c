/* Linearizable reads with ReadIndex (dissertation §6.4). */
#include "fixture.h"

static bool is_heartbeat(const struct cr_message *m)
{
    return m->type == CR_MSG_APPEND_ENTRIES && m->append_entries.n_entries == 0;
}

/* Dissertation §6.4 step 3: the leader answers a read only after a
 * heartbeat round sent after the read was registered has been acknowledged
 * by a majority; older acknowledgements do not count. */
static void read_on_leader_waits_for_quorum_heartbeat(void **state)
{
    struct fx *f = fx_new(3, NULL);
    const struct cr_message *hb;
    const struct cr_read_result *r;
    struct cr_message old;
    uint64_t seq;
    (void)state;
    assert_int_equal(fx_bootstrap(f, 3), 0);
    fx_elect(f, 1);
    assert_int_equal(fx_read(f, 1, 7), 0);
    assert_int_equal(f->u[1].n_reads, 0);
    for (cr_id to = 2; to <= 3; to++) {
        hb = fx_upd_find(&f->u[1], CR_MSG_APPEND_ENTRIES, to);
        assert_non_null(hb);
        assert_true(is_heartbeat(hb));
    }
    seq = hb->append_entries.seq;
    assert_true(seq > 0);

    /* An answer to an older append confirms nothing about this read. */
    fx_msg_init(&old, CR_MSG_APPEND_ENTRIES_RESULT, 2, 1,
                cr_core_term(&f->core[1]));
    old.append_entries_result.success = true;
    old.append_entries_result.index = cr_core_last_index(&f->core[1]);
    old.append_entries_result.seq = seq - 1;
    assert_int_equal(fx_receive(f, 1, &old), 0);
    assert_null(fx_read_result(f, 1, 7));

    fx_deliver(f, 1, 2);
    assert_null(fx_read_result(f, 1, 7));
    fx_deliver(f, 2, 1);
    r = fx_read_result(f, 1, 7);
    assert_non_null(r);
    assert_int_equal(r->status, 0);
    assert_int_equal(r->index, cr_core_commit(&f->core[1]));
    assert_int_equal(f->u[1].n_reads, 1);
    fx_free(f);
}

/* Dissertation §6.4 (amortized confirmation): reads that arrive while a
 * heartbeat round is in flight send nothing and share the next round; the
 * round in flight, sent before they arrived, does not answer them. */
static void reads_share_heartbeat_rounds(void **state)
{
    struct fx *f = fx_new(3, NULL);
    (void)state;
    assert_int_equal(fx_bootstrap(f, 3), 0);
    fx_elect(f, 1);
    assert_int_equal(fx_read(f, 1, 7), 0);
    assert_non_null(fx_upd_find(&f->u[1], CR_MSG_APPEND_ENTRIES, 2));
    /* Round 1 in flight: two more reads send nothing. */
    assert_int_equal(fx_read(f, 1, 8), 0);
    assert_null(fx_upd_find(&f->u[1], CR_MSG_APPEND_ENTRIES, 2));
    assert_int_equal(fx_read(f, 1, 9), 0);
    assert_null(fx_upd_find(&f->u[1], CR_MSG_APPEND_ENTRIES, 2));

    /* Round 1 confirmed by node 2: read 7 only, and round 2 starts. */
    assert_true(fx_deliver_if(f, 1, 2, is_heartbeat) > 0);
    assert_true(fx_deliver(f, 2, 1) > 0);
    assert_non_null(fx_read_result(f, 1, 7));
    assert_null(fx_read_result(f, 1, 8));
    assert_null(fx_read_result(f, 1, 9));
    assert_non_null(fx_upd_find(&f->u[1], CR_MSG_APPEND_ENTRIES, 2));

    /* Round 2 answers both. */
    assert_true(fx_deliver_if(f, 1, 2, is_heartbeat) > 0);
    assert_true(fx_deliver(f, 2, 1) > 0);
    assert_non_null(fx_read_result(f, 1, 8));
    assert_non_null(fx_read_result(f, 1, 9));
    assert_int_equal(f->u[1].n_reads, 2);
    fx_free(f);
}

/* Dissertation §6.4 step 1: a new leader answers reads only once it has
 * committed an entry of its term, for only then is its commit index at
 * least that of any earlier leader. */
static void read_waits_for_commit_in_leader_term(void **state)
{
    struct fx *f = fx_new(3, NULL);
    const struct cr_read_result *r;
    (void)state;
    assert_int_equal(fx_bootstrap(f, 3), 0);
    fx_elect_votes_only(f, 1);
    assert_int_equal(fx_read(f, 1, 7), 0);
    assert_int_equal(fx_persist(f, 1), 0);
    /* A majority answers the heartbeat round; the no-op is not there. */
    for (cr_id to = 2; to <= 3; to++) {
        assert_true(fx_deliver_if(f, 1, to, is_heartbeat) > 0);
        assert_int_equal(fx_persist(f, to), 0);
        assert_true(fx_deliver(f, to, 1) > 0);
        assert_null(fx_read_result(f, 1, 7));
    }
    assert_int_equal(cr_core_commit(&f->core[1]), 1);

    fx_flush(f);
    assert_int_equal(cr_core_commit(&f->core[1]), 2);
    r = fx_read_result(f, 1, 7);
    assert_non_null(r);
    assert_int_equal(r->status, 0);
    assert_int_equal(r->index, 2);
    fx_free(f);
}

/* Dissertation §6.4 ("reads from followers"): a follower asks the leader
 * for a read index and reports it once the leader confirmed it. */
static void follower_read_goes_to_leader(void **state)
{
    struct fx *f = fx_new(3, NULL);
    const struct cr_message *m;
    const struct cr_read_result *r;
    (void)state;
    assert_int_equal(fx_bootstrap(f, 3), 0);
    fx_elect(f, 1);
    assert_int_equal(fx_read(f, 2, 9), 0);
    assert_int_equal(f->u[2].n_reads, 0);
    m = fx_upd_find(&f->u[2], CR_MSG_READ_INDEX, 1);
    assert_non_null(m);
    assert_int_equal(m->read_index.id, 9);

    assert_int_equal(fx_deliver(f, 2, 1), 1);
    assert_null(fx_peek(f, 1, 2, CR_MSG_READ_INDEX_RESULT));
    fx_flush(f);
    r = fx_read_result(f, 2, 9);
    assert_non_null(r);
    assert_int_equal(r->status, 0);
    assert_int_equal(r->index, cr_core_commit(&f->core[1]));
    assert_null(fx_read_result(f, 1, 9));
    fx_free(f);
}

/* Dissertation §6.4: reads the leader could not confirm fail with
 * CR_ENOTLEADER when it steps down (here by check-quorum, §6.2), local
 * ones in its update and remote ones by a negative answer. */
static void pending_reads_fail_when_leader_steps_down(void **state)
{
    struct fx *f = fx_new(3, NULL);
    const struct cr_read_result *r;
    const struct cr_message *m = NULL;
    (void)state;
    assert_int_equal(fx_bootstrap(f, 3), 0);
    fx_elect(f, 1);
    assert_int_equal(fx_read(f, 1, 5), 0);
    assert_int_equal(fx_read(f, 2, 6), 0);
    assert_int_equal(fx_deliver(f, 2, 1), 1);
    fx_drop(f, 1, 0);

    while (cr_core_role(&f->core[1]) == CR_LEADER) {
        f->now += 10;
        assert_int_equal(fx_tick(f, 1), 0);
        m = fx_upd_find(&f->u[1], CR_MSG_READ_INDEX_RESULT, 2);
        fx_drop_type(f, 1, 0, CR_MSG_APPEND_ENTRIES);
        assert_true(f->now < 3 * FX_ET);
    }
    r = fx_read_result(f, 1, 5);
    assert_non_null(r);
    assert_int_equal(r->status, CR_ENOTLEADER);
    assert_non_null(m);
    assert_false(m->read_index_result.ok);
    assert_int_equal(m->read_index_result.id, 6);

    assert_int_equal(fx_deliver(f, 1, 2), 1);
    r = fx_read_result(f, 2, 6);
    assert_non_null(r);
    assert_int_equal(r->status, CR_ENOTLEADER);
    fx_free(f);
}

/* A read on a follower that knows no leader fails at once. */
static void read_without_leader_fails_with_enoleader(void **state)
{
    struct fx *f = fx_new(3, NULL);
    (void)state;
    assert_int_equal(fx_bootstrap(f, 3), 0);
    assert_int_equal(fx_read(f, 2, 1), CR_ENOLEADER);
    assert_int_equal(f->u[2].n_messages, 0);
    assert_int_equal(f->u[2].n_reads, 0);
    fx_free(f);
}

/* Dissertation §6.4: with a single voter, the leader is a majority by
 * itself: a read is answered at once. */
static void single_voter_read_is_immediate(void **state)
{
    struct fx *f = fx_new(1, NULL);
    const struct cr_read_result *r;
    (void)state;
    assert_int_equal(fx_bootstrap(f, 1), 0);
    fx_elect(f, 1);
    assert_int_equal(fx_read(f, 1, 3), 0);
    r = fx_read_result(f, 1, 3);
    assert_non_null(r);
    assert_int_equal(r->status, 0);
    assert_int_equal(r->index, 2);
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
        cmocka_unit_test(read_on_leader_waits_for_quorum_heartbeat),
        cmocka_unit_test(reads_share_heartbeat_rounds),
        cmocka_unit_test(read_waits_for_commit_in_leader_term),
        cmocka_unit_test(follower_read_goes_to_leader),
        cmocka_unit_test(pending_reads_fail_when_leader_steps_down),
        cmocka_unit_test(read_without_leader_fails_with_enoleader),
        cmocka_unit_test(single_voter_read_is_immediate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
