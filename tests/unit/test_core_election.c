/* Elections: timeouts, pre-vote, votes, the leader lease, durability of
 * votes (Raft paper §5.2, §5.4.1; dissertation §3.4, §4.2.3, §9.6). */
#include <string.h>

#include "fixture.h"

/* Sends voter a RequestVote from `from`. */
static int request_vote(struct fx *f,
                        cr_id voter,
                        cr_id from,
                        cr_term term,
                        cr_index last_index,
                        cr_term last_term,
                        bool pre_vote,
                        bool transfer)
{
    struct cr_message m;
    fx_msg_init(&m, CR_MSG_REQUEST_VOTE, from, voter, term);
    m.request_vote.last_index = last_index;
    m.request_vote.last_term = last_term;
    m.request_vote.pre_vote = pre_vote;
    m.request_vote.transfer = transfer;
    return fx_receive(f, voter, &m);
}

/* The voter's answer to `to` once its writes are durable, or NULL. */
static const struct cr_message *answer(struct fx *f, cr_id voter, cr_id to)
{
    assert_int_equal(fx_persist(f, voter), 0);
    return fx_peek(f, voter, to, CR_MSG_REQUEST_VOTE_RESULT);
}

static void assert_granted(struct fx *f, cr_id voter, cr_id to, bool granted)
{
    const struct cr_message *r = answer(f, voter, to);
    assert_non_null(r);
    assert_int_equal(r->request_vote_result.granted, granted);
    fx_drop(f, voter, to);
}

/* Raft §5.2, dissertation §9.6: a follower that hears from no leader for
 * an election timeout starts a pre-vote for term + 1, which changes
 * neither its term nor its vote and writes nothing. */
static void follower_timeout_starts_pre_vote(void **state)
{
    struct fx *f = fx_new(3, NULL);
    const struct cr_update *u = &f->u[1];
    cr_msec deadline;
    (void)state;
    assert_int_equal(fx_bootstrap(f, 3), 0);
    deadline = u->deadline;

    f->now = deadline - 1;
    assert_int_equal(fx_tick(f, 1), 0);
    assert_int_equal(u->role, CR_FOLLOWER);
    assert_int_equal(u->n_messages, 0);

    f->now = deadline;
    assert_int_equal(fx_tick(f, 1), 0);
    assert_int_equal(u->role, CR_PRE_CANDIDATE);
    assert_int_equal(cr_core_term(&f->core[1]), 1);
    assert_int_equal(cr_core_vote(&f->core[1]), 0);
    assert_int_equal(u->persist_seq, 0);
    assert_false(u->flags & CR_UPDATE_HARD_STATE);
    assert_int_equal(fx_upd_count(u, CR_MSG_REQUEST_VOTE, 0), 2);
    for (cr_id to = 2; to <= 3; to++) {
        const struct cr_message *m = fx_upd_find(u, CR_MSG_REQUEST_VOTE, to);
        assert_non_null(m);
        assert_true(m->request_vote.pre_vote);
        assert_false(m->request_vote.transfer);
        assert_int_equal(m->term, 2);
        assert_int_equal(m->request_vote.last_index, 1);
        assert_int_equal(m->request_vote.last_term, 1);
    }
    fx_free(f);
}

/* Dissertation §9.6: a pre-vote changes nothing on the voter; once a
 * majority would vote, the pre-candidate runs a real election: term + 1,
 * a vote for itself, requests for that term. */
static void pre_vote_success_starts_real_campaign(void **state)
{
    struct fx *f = fx_new(3, NULL);
    const struct cr_message *r;
    const struct cr_update *u = &f->u[1];
    (void)state;
    assert_int_equal(fx_bootstrap(f, 3), 0);
    assert_int_equal(fx_campaign(f, 1), 0);
    assert_int_equal(u->role, CR_PRE_CANDIDATE);

    assert_int_equal(fx_deliver(f, 1, 2), 1);
    /* A pre-vote answer needs no write: it leaves at once. */
    r = fx_upd_find(&f->u[2], CR_MSG_REQUEST_VOTE_RESULT, 1);
    assert_non_null(r);
    assert_true(r->request_vote_result.pre_vote);
    assert_true(r->request_vote_result.granted);
    assert_int_equal(r->term, 2);
    assert_int_equal(cr_core_term(&f->core[2]), 1);
    assert_int_equal(cr_core_vote(&f->core[2]), 0);
    assert_int_equal(f->u[2].persist_seq, 0);

    assert_int_equal(fx_deliver(f, 2, 1), 1);
    assert_int_equal(u->role, CR_CANDIDATE);
    assert_int_equal(u->term, 2);
    assert_int_equal(cr_core_vote(&f->core[1]), 1);
    assert_true(u->flags & CR_UPDATE_HARD_STATE);
    assert_int_equal(u->hard_state.term, 2);
    assert_int_equal(u->hard_state.vote, 1);
    for (cr_id to = 2; to <= 3; to++) {
        const struct cr_message *m = fx_upd_find(u, CR_MSG_REQUEST_VOTE, to);
        assert_non_null(m);
        assert_false(m->request_vote.pre_vote);
        assert_int_equal(m->term, 2);
    }
    fx_free(f);
}

/* Raft §5.4.1: a vote goes only to a candidate whose log is at least as
 * up-to-date: the later last term wins, whatever the lengths. */
static void vote_requires_up_to_date_last_term(void **state)
{
    struct fx *f = fx_new(3, NULL);
    const cr_term terms[] = {1, 1, 3};
    (void)state;
    assert_int_equal(fx_load(f, 2, 3, 0, 1, terms, 3), 0);
    assert_int_equal(fx_load(f, 3, 3, 0, 1, terms, 3), 0);

    /* Longer log, older last term: refused. */
    assert_int_equal(request_vote(f, 2, 1, 4, 10, 2, false, false), 0);
    assert_granted(f, 2, 1, false);
    assert_int_equal(cr_core_vote(&f->core[2]), 0);

    /* Shorter log, newer last term: granted. */
    assert_int_equal(request_vote(f, 3, 1, 4, 1, 4, false, false), 0);
    assert_granted(f, 3, 1, true);
    assert_int_equal(cr_core_vote(&f->core[3]), 1);
    fx_free(f);
}

/* Raft §5.4.1: with equal last terms, the longer log is more up-to-date;
 * an equal one is up-to-date. Pre-votes apply the same rule. */
static void vote_requires_up_to_date_last_index(void **state)
{
    struct fx *f = fx_new(3, NULL);
    const cr_term terms[] = {1, 2, 2};
    (void)state;
    assert_int_equal(fx_load(f, 2, 2, 0, 1, terms, 3), 0);

    /* Pre-votes first: they leave the voter's term alone. */
    assert_int_equal(request_vote(f, 2, 1, 3, 2, 2, true, false), 0);
    assert_granted(f, 2, 1, false);
    assert_int_equal(request_vote(f, 2, 3, 3, 3, 2, true, false), 0);
    assert_granted(f, 2, 3, true);

    assert_int_equal(request_vote(f, 2, 1, 3, 2, 2, false, false), 0);
    assert_granted(f, 2, 1, false);
    assert_int_equal(cr_core_vote(&f->core[2]), 0);
    assert_int_equal(request_vote(f, 2, 3, 3, 3, 2, false, false), 0);
    assert_granted(f, 2, 3, true);
    assert_int_equal(cr_core_vote(&f->core[2]), 3);
    fx_free(f);
}

/* Raft §5.2: each server votes for at most one candidate in a term,
 * first-come-first-served (asking again gets the same answer). */
static void one_vote_per_term(void **state)
{
    struct fx *f = fx_new(3, NULL);
    (void)state;
    assert_int_equal(fx_bootstrap(f, 3), 0);
    assert_int_equal(request_vote(f, 3, 1, 2, 1, 1, false, false), 0);
    assert_granted(f, 3, 1, true);
    assert_int_equal(request_vote(f, 3, 2, 2, 1, 1, false, false), 0);
    assert_granted(f, 3, 2, false);
    assert_int_equal(cr_core_vote(&f->core[3]), 1);
    assert_int_equal(request_vote(f, 3, 1, 2, 1, 1, false, false), 0);
    assert_granted(f, 3, 1, true);
    fx_free(f);
}

/* Raft §5.1 (Figure 2, votedFor): a new term starts with no vote cast, so
 * a server that voted for A in term t can vote for B in term t + 1. */
static void vote_reset_on_new_term(void **state)
{
    struct fx *f = fx_new(3, NULL);
    (void)state;
    assert_int_equal(fx_bootstrap(f, 3), 0);
    assert_int_equal(request_vote(f, 3, 1, 2, 1, 1, false, false), 0);
    assert_granted(f, 3, 1, true);
    assert_int_equal(request_vote(f, 3, 2, 3, 1, 1, false, false), 0);
    assert_granted(f, 3, 2, true);
    assert_int_equal(cr_core_term(&f->core[3]), 3);
    assert_int_equal(cr_core_vote(&f->core[3]), 2);
    assert_int_equal(f->disk[3].hs.term, 3);
    assert_int_equal(f->disk[3].hs.vote, 2);
    fx_free(f);
}

/* Raft Figure 2 (votedFor is persistent): a vote survives a restart, so a
 * restarted server does not vote twice in one term. */
static void vote_survives_restart(void **state)
{
    struct fx *f = fx_new(3, NULL);
    (void)state;
    assert_int_equal(fx_bootstrap(f, 3), 0);
    assert_int_equal(request_vote(f, 3, 1, 2, 1, 1, false, false), 0);
    assert_granted(f, 3, 1, true);
    assert_int_equal(fx_restart(f, 3), 0);
    assert_int_equal(cr_core_term(&f->core[3]), 2);
    assert_int_equal(cr_core_vote(&f->core[3]), 1);
    assert_int_equal(request_vote(f, 3, 2, 2, 1, 1, false, false), 0);
    assert_granted(f, 3, 2, false);
    fx_free(f);
}

/* Raft §5.1: a server that sees a higher term adopts it and, if it was a
 * leader, becomes a follower. */
static void higher_term_makes_leader_step_down(void **state)
{
    struct fx *f = fx_new(3, NULL);
    struct cr_message m;
    cr_term t;
    (void)state;
    assert_int_equal(fx_bootstrap(f, 3), 0);
    fx_elect(f, 1);
    t = cr_core_term(&f->core[1]);

    fx_msg_init(&m, CR_MSG_APPEND_ENTRIES_RESULT, 2, 1, t + 1);
    m.append_entries_result.index = 1;
    assert_int_equal(fx_receive(f, 1, &m), 0);
    assert_int_equal(f->u[1].role, CR_FOLLOWER);
    assert_int_equal(f->u[1].term, t + 1);
    assert_int_equal(f->u[1].leader, 0);
    assert_true(f->u[1].flags & CR_UPDATE_STATE);
    assert_true(f->u[1].flags & CR_UPDATE_HARD_STATE);
    assert_int_equal(f->u[1].hard_state.vote, 0);
    fx_free(f);
}

/* Raft §5.2: a candidate that hears from a leader of a term at least its
 * own, or of any higher term, returns to follower. */
static void higher_term_makes_candidate_step_down(void **state)
{
    struct cr_options o;
    struct fx *f;
    struct cr_message m;
    (void)state;
    fx_options(&o);
    o.pre_vote = false;
    f = fx_new(3, &o);
    assert_int_equal(fx_bootstrap(f, 3), 0);
    assert_int_equal(fx_campaign(f, 1), 0);
    assert_int_equal(f->u[1].role, CR_CANDIDATE);
    assert_int_equal(f->u[1].term, 2);

    /* A refusal from a later term. */
    fx_msg_init(&m, CR_MSG_REQUEST_VOTE_RESULT, 2, 1, 3);
    assert_int_equal(fx_receive(f, 1, &m), 0);
    assert_int_equal(f->u[1].role, CR_FOLLOWER);
    assert_int_equal(f->u[1].term, 3);

    /* Again a candidate (term 4), then an append from a term-5 leader. */
    assert_int_equal(fx_campaign(f, 1), 0);
    assert_int_equal(f->u[1].role, CR_CANDIDATE);
    fx_msg_init(&m, CR_MSG_APPEND_ENTRIES, 3, 1, 5);
    m.append_entries.prev_index = 1;
    m.append_entries.prev_term = 1;
    assert_int_equal(fx_receive(f, 1, &m), 0);
    assert_int_equal(f->u[1].role, CR_FOLLOWER);
    assert_int_equal(f->u[1].term, 5);
    assert_int_equal(f->u[1].leader, 3);
    fx_free(f);
}

/* Raft §5.1 (Figure 2, RequestVote rule 1): a request from an older term
 * is refused, and the answer carries the voter's term. */
static void stale_term_vote_request_rejected(void **state)
{
    struct fx *f = fx_new(3, NULL);
    const cr_term terms[] = {1, 2};
    const struct cr_message *r;
    (void)state;
    assert_int_equal(fx_load(f, 2, 3, 0, 1, terms, 2), 0);
    assert_int_equal(request_vote(f, 2, 1, 2, 5, 2, false, false), 0);
    r = answer(f, 2, 1);
    assert_non_null(r);
    assert_false(r->request_vote_result.granted);
    assert_int_equal(r->term, 3);
    assert_int_equal(cr_core_term(&f->core[2]), 3);
    assert_int_equal(cr_core_vote(&f->core[2]), 0);
    fx_free(f);
}

/* Dissertation §4.2.3: a server that heard from a current leader within
 * the minimum election timeout neither grants (pre-)votes nor adopts the
 * requester's term; once the timeout has passed without word, it does. */
static void leader_lease_ignores_votes(void **state)
{
    struct fx *f = fx_new(3, NULL);
    cr_term t;
    (void)state;
    assert_int_equal(fx_bootstrap(f, 3), 0);
    fx_elect(f, 1);
    t = cr_core_term(&f->core[2]);

    f->now += FX_ET - 1;
    assert_int_equal(request_vote(f, 2, 3, t + 1, 10, t, true, false), 0);
    assert_null(answer(f, 2, 3));
    assert_int_equal(request_vote(f, 2, 3, t + 1, 10, t, false, false), 0);
    assert_null(answer(f, 2, 3));
    assert_int_equal(cr_core_term(&f->core[2]), t);
    assert_int_equal(cr_core_leader(&f->core[2]), 1);

    f->now += 1;
    assert_int_equal(request_vote(f, 2, 3, t + 1, 10, t, true, false), 0);
    assert_granted(f, 2, 3, true);
    assert_int_equal(cr_core_term(&f->core[2]), t);
    assert_int_equal(request_vote(f, 2, 3, t + 1, 10, t, false, false), 0);
    assert_granted(f, 2, 3, true);
    assert_int_equal(cr_core_term(&f->core[2]), t + 1);
    fx_free(f);
}

/* Dissertation §3.10 with §4.2.3: a request sent because of TimeoutNow
 * (transfer set) overrides the lease. */
static void leader_lease_overridden_by_transfer(void **state)
{
    struct fx *f = fx_new(3, NULL);
    cr_term t;
    (void)state;
    assert_int_equal(fx_bootstrap(f, 3), 0);
    fx_elect(f, 1);
    t = cr_core_term(&f->core[2]);
    assert_int_equal(request_vote(f, 2, 3, t + 1, 10, t, false, true), 0);
    assert_granted(f, 2, 3, true);
    assert_int_equal(cr_core_term(&f->core[2]), t + 1);
    assert_int_equal(cr_core_vote(&f->core[2]), 3);
    fx_free(f);
}

/* Raft Figure 2 ("updated on stable storage before responding to RPCs"):
 * a granted vote leaves only once the write of the vote is durable. */
static void vote_response_held_until_persisted(void **state)
{
    struct fx *f = fx_new(3, NULL);
    const struct cr_update *u = &f->u[2];
    const struct cr_message *r;
    (void)state;
    assert_int_equal(fx_bootstrap(f, 3), 0);
    assert_int_equal(request_vote(f, 2, 1, 2, 1, 1, false, false), 0);
    assert_int_equal(fx_upd_count(u, CR_MSG_REQUEST_VOTE_RESULT, 0), 0);
    assert_int_not_equal(u->persist_seq, 0);
    assert_true(u->flags & CR_UPDATE_HARD_STATE);
    assert_int_equal(u->hard_state.vote, 1);

    /* An unrelated step does not release it either. */
    assert_int_equal(fx_tick(f, 2), 0);
    assert_int_equal(fx_upd_count(u, CR_MSG_REQUEST_VOTE_RESULT, 0), 0);

    assert_int_equal(fx_persist(f, 2), 0);
    r = fx_upd_find(u, CR_MSG_REQUEST_VOTE_RESULT, 1);
    assert_non_null(r);
    assert_true(r->request_vote_result.granted);
    assert_false(r->request_vote_result.pre_vote);
    assert_int_equal(r->term, 2);
    fx_free(f);
}

/* Raft Figure 2, dissertation §10.2.1: a candidate counts its own vote only
 * once it is durable, so a single-voter cluster elects itself only after
 * the write of term and vote is reported persisted. */
static void candidate_counts_own_vote_only_when_durable(void **state)
{
    struct fx *f = fx_new(1, NULL);
    const struct cr_update *u = &f->u[1];
    uint64_t seq;
    (void)state;
    assert_int_equal(fx_bootstrap(f, 1), 0);
    assert_int_equal(fx_campaign(f, 1), 0);
    assert_int_equal(u->role, CR_CANDIDATE);
    assert_int_equal(u->term, 2);
    seq = u->persist_seq;
    assert_int_not_equal(seq, 0);
    assert_int_equal(fx_tick(f, 1), 0);
    assert_int_equal(u->role, CR_CANDIDATE);

    assert_int_equal(fx_persist(f, 1), 0);
    assert_int_equal(u->role, CR_LEADER);
    assert_int_equal(u->leader, 1);
    assert_int_equal(cr_core_term(&f->core[1]), 2);
    fx_free(f);
}

/* Raft §5.2, dissertation §3.4: election timeouts are drawn from
 * [T, 2T), and differ between servers and between rounds. */
static void election_timeout_randomized(void **state)
{
    struct fx *f = fx_new(1, NULL);
    struct cr_config cfg;
    bool seen[FX_ET];
    unsigned distinct = 0;
    (void)state;
    memset(seen, 0, sizeof seen);
    fx_config(&cfg, 3);
    for (uint64_t seed = 0; seed < 200; seed++) {
        struct cr_core c;
        struct cr_update u;
        struct cr_event ev = {.type = CR_EVENT_TICK};
        cr_msec now = 5000;
        assert_int_equal(
            cr_core_init(&c, 1, FX_CLUSTER, &f->opt, &f->alloc, seed, now), 0);
        assert_int_equal(cr_core_bootstrap(&c, &cfg, &u), 0);
        assert_true(u.deadline >= now + FX_ET);
        assert_true(u.deadline < now + 2 * FX_ET);
        if (!seen[u.deadline - now - FX_ET]) {
            seen[u.deadline - now - FX_ET] = true;
            distinct++;
        }
        /* The next round draws again from [T, 2T) after the timeout. */
        now = u.deadline;
        ev.now = now;
        assert_int_equal(cr_core_step(&c, &ev, &u), 0);
        assert_int_equal(u.role, CR_PRE_CANDIDATE);
        assert_true(u.deadline >= now + FX_ET);
        assert_true(u.deadline < now + 2 * FX_ET);
        cr_core_close(&c);
    }
    assert_true(distinct >= 100);
    fx_free(f);
}

/* Dissertation §4.2.1-§4.2.3: learners and servers outside the
 * configuration never start elections. */
static void learner_and_non_member_never_campaign(void **state)
{
    struct fx *f = fx_new(5, NULL);
    struct cr_config cfg;
    (void)state;
    fx_config(&cfg, 2);
    assert_int_equal(cr_config_add(&cfg, 3, CR_LEARNER, "s3"), 0);
    for (cr_id id = 1; id <= 4; id++) {
        assert_int_equal(fx_bootstrap_config(f, id, &cfg), 0);
        assert_int_equal(fx_persist(f, id), 0);
    }
    /* 3: a learner; 4: bootstrapped but not a member; 5: blank. */
    for (cr_id id = 3; id <= 5; id++) {
        for (unsigned i = 0; i < 5; i++) {
            f->now += 2 * FX_ET;
            assert_int_equal(fx_tick(f, id), 0);
            assert_int_equal(f->u[id].role, CR_FOLLOWER);
            assert_int_equal(f->u[id].n_messages, 0);
            assert_int_equal(f->u[id].persist_seq, 0);
        }
        assert_int_equal(fx_campaign(f, id), CR_EREMOVED);
        assert_int_equal(f->u[id].role, CR_FOLLOWER);
        assert_int_equal(f->u[id].n_messages, 0);
        assert_int_equal(cr_core_term(&f->core[id]), id <= 4 ? 1 : 0);
    }
    /* A voter of the same configuration does campaign. */
    f->now += 2 * FX_ET;
    assert_int_equal(fx_tick(f, 1), 0);
    assert_int_equal(f->u[1].role, CR_PRE_CANDIDATE);
    fx_free(f);
}

/* A run of a 3-server cluster: elections by timeout, proposals, commits. */
static uint64_t run(uint64_t seed)
{
    struct fx *f = fx_new_seeded(3, NULL, seed);
    uint64_t hash;
    cr_id leader = 0;
    assert_int_equal(fx_bootstrap(f, 3), 0);
    fx_run(f, 4 * FX_ET);
    for (cr_id id = 1; id <= 3; id++) {
        if (cr_core_role(&f->core[id]) == CR_LEADER) {
            leader = id;
        }
    }
    assert_int_not_equal(leader, 0);
    assert_int_equal(fx_propose(f, leader, 3, 10), 0);
    fx_run(f, FX_ET);
    assert_int_equal(cr_core_commit(&f->core[leader]),
                     cr_core_last_index(&f->core[leader]));
    hash = f->hash;
    fx_free(f);
    return hash;
}

/* The core is deterministic: one seed and one sequence of events give one
 * sequence of updates (core.h); another seed gives other timeouts. */
static void same_seed_same_events_same_outputs(void **state)
{
    (void)state;
    assert_true(run(42) == run(42));
    assert_true(run(42) != run(43));
}

/* With an argument, runs only the tests whose names match it (cmocka's
 * pattern: * and ? wildcards). */
int main(int argc, char **argv)
{
    if (argc > 1) {
        cmocka_set_test_filter(argv[1]);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(follower_timeout_starts_pre_vote),
        cmocka_unit_test(pre_vote_success_starts_real_campaign),
        cmocka_unit_test(vote_requires_up_to_date_last_term),
        cmocka_unit_test(vote_requires_up_to_date_last_index),
        cmocka_unit_test(one_vote_per_term),
        cmocka_unit_test(vote_reset_on_new_term),
        cmocka_unit_test(vote_survives_restart),
        cmocka_unit_test(higher_term_makes_leader_step_down),
        cmocka_unit_test(higher_term_makes_candidate_step_down),
        cmocka_unit_test(stale_term_vote_request_rejected),
        cmocka_unit_test(leader_lease_ignores_votes),
        cmocka_unit_test(leader_lease_overridden_by_transfer),
        cmocka_unit_test(vote_response_held_until_persisted),
        cmocka_unit_test(candidate_counts_own_vote_only_when_durable),
        cmocka_unit_test(election_timeout_randomized),
        cmocka_unit_test(learner_and_non_member_never_campaign),
        cmocka_unit_test(same_seed_same_events_same_outputs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
