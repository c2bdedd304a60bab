/* Leadership transfer (dissertation §3.10). */
#include "fixture.h"

/* A leader (1) whose latest proposals reached 2 but not 3: what 1 sent to
 * 3 is still in its outbox. */
static struct fx *lagging_three(void)
{
    struct fx *f = fx_new(3, NULL);
    assert_int_equal(fx_bootstrap(f, 3), 0);
    fx_elect(f, 1);
    assert_int_equal(fx_propose(f, 1, 3, 5), 0);
    assert_int_equal(fx_persist(f, 1), 0);
    fx_deliver(f, 1, 2);
    assert_int_equal(fx_persist(f, 2), 0);
    fx_deliver(f, 2, 1);
    assert_true(cr_core_match(&f->core[1], 3) <
                cr_core_last_index(&f->core[1]));
    return f;
}

/* Dissertation §3.10: the leader first brings the target's log up to date
 * and only then sends TimeoutNow. */
static void timeout_now_only_after_target_caught_up(void **state)
{
    struct fx *f = lagging_three();
    cr_term t = cr_core_term(&f->core[1]);
    bool sent = false;
    (void)state;
    assert_int_equal(fx_transfer(f, 1, 3), 0);
    assert_int_equal(cr_core_transfer_target(&f->core[1]), 3);
    assert_null(fx_upd_find(&f->u[1], CR_MSG_TIMEOUT_NOW, 0));

    for (unsigned round = 0; round < 10 && !sent; round++) {
        fx_deliver(f, 1, 3);
        assert_int_equal(fx_persist(f, 3), 0);
        while (!sent && fx_deliver_one(f, 3, 1, FX_ANY)) {
            cr_index match = cr_core_match(&f->core[1], 3);
            sent = fx_count(f, 1, 3, CR_MSG_TIMEOUT_NOW) > 0;
            if (sent) {
                assert_int_equal(match, cr_core_last_index(&f->core[1]));
            } else {
                assert_true(match < cr_core_last_index(&f->core[1]));
            }
        }
    }
    assert_true(sent);
    fx_flush(f);
    assert_int_equal(cr_core_role(&f->core[3]), CR_LEADER);
    assert_int_equal(cr_core_term(&f->core[3]), t + 1);
    assert_int_equal(cr_core_role(&f->core[1]), CR_FOLLOWER);
    assert_int_equal(cr_core_transfer_target(&f->core[1]), 0);
    fx_free(f);
}

/* Dissertation §3.10: during a transfer the leader refuses client
 * requests, so that the target can catch up with a log that stays put. */
static void proposals_refused_during_transfer(void **state)
{
    struct fx *f = lagging_three();
    cr_index last = cr_core_last_index(&f->core[1]);
    (void)state;
    assert_int_equal(fx_transfer(f, 1, 3), 0);
    assert_int_equal(fx_propose(f, 1, 1, 1), CR_ETRANSFER);
    assert_int_equal(fx_change(f, 1, CR_CHANGE_ADD, 5), CR_ETRANSFER);
    assert_int_equal(fx_transfer(f, 1, 2), CR_ETRANSFER);
    assert_int_equal(cr_core_last_index(&f->core[1]), last);
    assert_int_equal(f->u[1].persist_seq, 0);
    assert_int_equal(cr_core_transfer_target(&f->core[1]), 3);
    fx_free(f);
}

/* Dissertation §3.10: if the transfer does not complete within an
 * election timeout, the leader aborts it and resumes accepting requests. */
static void transfer_aborted_after_election_timeout(void **state)
{
    struct fx *f = lagging_three();
    (void)state;
    f->cut[3] = true;
    fx_drop(f, 1, 3);
    assert_int_equal(fx_transfer(f, 1, 3), 0);
    assert_true(f->u[1].deadline <= f->now + FX_ET);
    fx_run(f, FX_ET - 10);
    assert_int_equal(cr_core_transfer_target(&f->core[1]), 3);
    assert_int_equal(fx_propose(f, 1, 1, 1), CR_ETRANSFER);
    fx_run(f, 20);
    assert_int_equal(cr_core_transfer_target(&f->core[1]), 0);
    assert_int_equal(cr_core_role(&f->core[1]), CR_LEADER);
    assert_int_equal(fx_propose(f, 1, 1, 1), 0);
    fx_free(f);
}

/* Dissertation §3.10: on TimeoutNow the target starts an election at once,
 * without pre-vote, and its requests carry the transfer flag so that
 * servers that still hear from the old leader vote anyway (§4.2.3). */
static void target_campaigns_without_pre_vote_with_transfer_flag(void **state)
{
    struct fx *f = fx_new(3, NULL);
    const struct cr_update *u = &f->u[3];
    cr_term t;
    (void)state;
    assert_int_equal(fx_bootstrap(f, 3), 0);
    fx_elect(f, 1);
    t = cr_core_term(&f->core[1]);
    assert_int_equal(fx_transfer(f, 1, 3), 0);
    assert_non_null(fx_upd_find(&f->u[1], CR_MSG_TIMEOUT_NOW, 3));

    assert_true(fx_deliver_one(f, 1, 3, CR_MSG_TIMEOUT_NOW));
    assert_int_equal(u->role, CR_CANDIDATE);
    assert_int_equal(u->term, t + 1);
    assert_int_equal(cr_core_vote(&f->core[3]), 3);
    assert_int_equal(fx_upd_count(u, CR_MSG_REQUEST_VOTE, 0), 2);
    for (cr_id to = 1; to <= 2; to++) {
        const struct cr_message *m = fx_upd_find(u, CR_MSG_REQUEST_VOTE, to);
        assert_non_null(m);
        assert_false(m->request_vote.pre_vote);
        assert_true(m->request_vote.transfer);
        assert_int_equal(m->term, t + 1);
    }
    fx_flush(f);
    assert_int_equal(cr_core_role(&f->core[3]), CR_LEADER);
    assert_int_equal(cr_core_term(&f->core[3]), t + 1);
    assert_int_equal(cr_core_leader(&f->core[2]), 3);
    fx_free(f);
}

/* Dissertation §3.10: without a named target the leader picks the most
 * up-to-date voter; an unknown target or a follower refuses. */
static void transfer_target_choice(void **state)
{
    struct fx *f = lagging_three();
    (void)state;
    assert_int_equal(fx_transfer(f, 2, 3), CR_ENOTLEADER);
    assert_int_equal(fx_transfer(f, 1, 7), CR_ENOTFOUND);
    assert_int_equal(cr_core_transfer_target(&f->core[1]), 0);
    assert_int_equal(fx_transfer(f, 1, 0), 0);
    assert_int_equal(cr_core_transfer_target(&f->core[1]), 2);
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
        cmocka_unit_test(timeout_now_only_after_target_caught_up),
        cmocka_unit_test(proposals_refused_during_transfer),
        cmocka_unit_test(transfer_aborted_after_election_timeout),
        cmocka_unit_test(target_campaigns_without_pre_vote_with_transfer_flag),
        cmocka_unit_test(transfer_target_choice),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
