/* Scripted scenarios, named by the ids of ../shared/design/SCENARIOS.md.
 *
 * Each runs on a fresh simulated cluster; the safety checks of sim.c run
 * after every step throughout, so a scenario only asserts what is specific
 * to it. Bounds follow SCENARIOS.md: ET is the maximum election timeout
 * (twice the configured minimum). */
#include <inttypes.h>
#include <string.h>

#include "scenario.h"

#define ET_MIN(s) ((s)->p.opt.election_timeout)
#define ET(s) (2 * ET_MIN(s))

#define EXPECT(s, cond, ...)            \
    do {                                \
        if (!(cond)) {                  \
            sim_fail((s), __VA_ARGS__); \
            return false;               \
        }                               \
    } while (0)

/* ---------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------- */

struct not_id
{
    cr_id id;
};

static bool pred_leader_not(struct sim *s, void *d)
{
    cr_id l = sim_stable_leader(s);
    return l != 0 && l != ((struct not_id *)d)->id;
}

static bool pred_acked(struct sim *s, void *d)
{
    const struct sim_op *o = sim_op(s, *(uint64_t *)d);
    return o != NULL && o->state != SIM_OP_PENDING;
}

/* FINAL-01 after every scenario. */
static bool final_liveness(struct sim *s)
{
    return sim_final_liveness(s, 20 * ET(s));
}

/* Runs for `duration` with a proposal at the leader every `every` ms. */
static void run_with_load(struct sim *s, cr_msec duration, cr_msec every)
{
    cr_msec until = s->now + duration;
    while (s->now < until && !s->failed) {
        cr_id l = sim_leader(s);
        if (l != 0) {
            (void)sim_propose(s, l, NULL);
        }
        sim_run_for(s, every);
    }
}

static bool all_follow(struct sim *s, cr_id leader)
{
    cr_term t = cr_core_term(&s->nodes[leader].core);
    for (cr_id id = 1; id <= s->n_nodes; id++) {
        const struct sim_node *n = &s->nodes[id];
        if (n->alive && (cr_core_term(&n->core) != t ||
                         cr_core_leader(&n->core) != leader)) {
            return false;
        }
    }
    return true;
}

static bool pred_all_follow(struct sim *s, void *d)
{
    cr_id l = sim_stable_leader(s);
    (void)d;
    return l != 0 && all_follow(s, l);
}

static unsigned count_leaders(struct sim *s)
{
    unsigned n = 0;
    for (cr_id id = 1; id <= s->n_nodes; id++) {
        if (s->nodes[id].alive &&
            cr_core_role(&s->nodes[id].core) == CR_LEADER) {
            n++;
        }
    }
    return n;
}

static bool op_committed(struct sim *s, uint64_t op)
{
    for (cr_index i = 1; i <= s->committed_max; i++) {
        if (s->committed[i].op == op) {
            return true;
        }
    }
    return false;
}

static unsigned op_count(struct sim *s, uint64_t op)
{
    unsigned n = 0;
    for (cr_index i = 1; i <= s->committed_max; i++) {
        if (s->committed[i].op == op) {
            n++;
        }
    }
    return n;
}

/* A message filter for scripted elections: only `candidate` may ask for
 * votes, and AppendEntries from `from` (to `to`, or anyone) may not carry
 * entries beyond `max_index`. */
#define NOBODY (SIM_NODES_MAX + 1)

struct script_filter
{
    cr_id candidate;
    cr_id from;
    cr_index max_index;
};

/* Only `candidate` may ask for votes; AppendEntries from `from` bring no
 * entry beyond `max_index`: they are cut short there. */
static bool script_filter(void *d, struct cr_message *m)
{
    const struct script_filter *f = d;
    if (m->type == CR_MSG_REQUEST_VOTE && f->candidate != 0 &&
        m->from != f->candidate) {
        return false;
    }
    if (m->type == CR_MSG_APPEND_ENTRIES && f->from != 0 &&
        m->from == f->from &&
        m->append_entries.prev_index + m->append_entries.n_entries >
            f->max_index) {
        if (m->append_entries.prev_index >= f->max_index) {
            m->append_entries.n_entries = 0;
        } else {
            m->append_entries.n_entries =
                (unsigned)(f->max_index - m->append_entries.prev_index);
        }
    }
    return true;
}

static bool pred_is_leader(struct sim *s, void *d)
{
    cr_id id = *(cr_id *)d;
    return s->nodes[id].alive && cr_core_role(&s->nodes[id].core) == CR_LEADER;
}

/* Makes `id` the leader: only it may campaign (through the filter). */
static bool force_leader(struct sim *s, struct script_filter *f, cr_id id)
{
    f->candidate = id;
    sim_set_filter(s, script_filter, f);
    for (unsigned attempt = 0; attempt < 20 && !s->failed; attempt++) {
        (void)sim_campaign(s, id);
        if (sim_run_until_pred(s, pred_is_leader, &id, ET(s))) {
            return true;
        }
    }
    return false;
}

/* Hands leadership to `id` through a transfer. */
static bool make_leader(struct sim *s, cr_id id)
{
    for (unsigned attempt = 0; attempt < 10 && !s->failed; attempt++) {
        cr_id l = sim_wait_leader(s, 4 * ET(s));
        if (l == id) {
            return true;
        }
        if (l != 0) {
            (void)sim_transfer(s, l, id);
        }
        sim_run_until_pred(s, pred_is_leader, &id, ET(s));
    }
    return sim_stable_leader(s) == id;
}

/* ---------------------------------------------------------------------------
 * Elections and leadership
 * ------------------------------------------------------------------------- */

/* Scenario ELECT-01: five nodes elect exactly one leader, all agree on
 * its term, and nothing changes while nothing fails. */
static bool elect_01(struct sim *s, uint64_t seed)
{
    cr_id l;
    cr_term term;
    (void)seed;
    l = sim_wait_leader(s, 2 * ET(s));
    EXPECT(s, l != 0, "no leader within 2 x ET (%" PRIu64 " ms)", 2 * ET(s));
    EXPECT(s, sim_run_until_pred(s, pred_all_follow, NULL, ET(s)),
           "not every node follows leader n%" PRIu64 " in its term", l);
    EXPECT(s, count_leaders(s) == 1, "%u nodes think they lead",
           count_leaders(s));
    term = cr_core_term(&s->nodes[l].core);
    sim_run_for(s, 2 * ET(s));
    EXPECT(s,
           sim_stable_leader(s) == l &&
               cr_core_term(&s->nodes[l].core) == term && all_follow(s, l),
           "an election happened without a failure");
    return final_liveness(s);
}

/* Scenario ELECT-02: re-election after the leader is cut off; the old
 * leader steps down on rejoining; without a quorum nobody leads. */
static bool elect_02(struct sim *s, uint64_t seed)
{
    struct not_id old;
    cr_id l, l2, other;
    (void)seed;
    l = sim_wait_leader(s, 2 * ET(s));
    EXPECT(s, l != 0, "no first leader");
    EXPECT(s, sim_commit(s, 4 * ET(s), NULL), "no first commit");
    sim_isolate(s, l);
    old.id = l;
    EXPECT(s, sim_run_until_pred(s, pred_leader_not, &old, 3 * ET(s)),
           "no new leader within 3 x ET of isolating n%" PRIu64, l);
    l2 = sim_stable_leader(s);
    sim_heal(s);
    EXPECT(s, sim_run_until_pred(s, pred_all_follow, NULL, 2 * ET(s)),
           "old leader n%" PRIu64 " did not follow n%" PRIu64 " after healing",
           l, l2);
    l = sim_stable_leader(s);
    other = l % s->n_nodes + 1;
    sim_isolate(s, l);
    sim_isolate(s, other);
    sim_run_for(s, 2 * ET(s));
    EXPECT(s, count_leaders(s) == 0,
           "a node still leads without a quorum after 2 x ET");
    return final_liveness(s);
}

/* Scenario ELECT-03: seven nodes, nine rounds of cutting off three random
 * nodes: every round has exactly one leader among the connected four. */
static bool elect_03(struct sim *s, uint64_t seed)
{
    (void)seed;
    for (unsigned round = 0; round < 9 && !s->failed; round++) {
        bool cut[SIM_NODES_MAX + 1] = {false};
        char groups[64] = "";
        size_t len = 0;
        unsigned leaders = 0;
        for (unsigned k = 0; k < 3;) {
            cr_id id = sim_rand_range(s, 1, 7);
            if (!cut[id]) {
                cut[id] = true;
                k++;
            }
        }
        for (cr_id id = 1; id <= 7; id++) {
            if (!cut[id]) {
                len += (size_t)snprintf(groups + len, sizeof groups - len,
                                        "%" PRIu64 ",", id);
            }
        }
        sim_partition(s, groups);
        sim_run_for(s, 3 * ET(s));
        for (cr_id id = 1; id <= 7; id++) {
            if (!cut[id] && cr_core_role(&s->nodes[id].core) == CR_LEADER) {
                leaders++;
            }
        }
        EXPECT(s, leaders == 1, "round %u: %u leaders among the connected four",
               round, leaders);
        sim_heal(s);
        sim_run_for(s, ET(s));
    }
    return final_liveness(s);
}

/* Scenario ELECT-04: election safety under churn: random partitions and
 * crashes every 0.5 to 2 ET; the per-step check proves one leader a term. */
static bool elect_04(struct sim *s, uint64_t seed)
{
    (void)seed;
    for (unsigned round = 0; round < 30 && !s->failed; round++) {
        cr_id a = sim_rand_range(s, 1, s->n_nodes);
        switch (sim_rand_range(s, 0, 3)) {
            case 0:
                sim_isolate(s, a);
                break;
            case 1:
                sim_crash(s, a);
                break;
            case 2:
                sim_restart(s, a);
                break;
            default:
                sim_heal(s);
                break;
        }
        run_with_load(s, sim_rand_range(s, ET_MIN(s) / 2, ET(s)), 10);
    }
    return final_liveness(s);
}

/* Scenario ELECT-05: a follower cut off for 10 x ET comes back without
 * raising the majority's term (pre-vote, §9.6). */
static bool elect_05(struct sim *s, uint64_t seed)
{
    cr_id l, f;
    cr_term term;
    (void)seed;
    l = sim_wait_leader(s, 2 * ET(s));
    EXPECT(s, l != 0, "no leader");
    EXPECT(s, sim_run_until_pred(s, pred_all_follow, NULL, ET(s)),
           "not all follow");
    term = cr_core_term(&s->nodes[l].core);
    f = l % s->n_nodes + 1;
    sim_isolate(s, f);
    run_with_load(s, 10 * ET(s), 20);
    sim_heal(s);
    run_with_load(s, 2 * ET(s), 20);
    EXPECT(s,
           sim_stable_leader(s) == l && cr_core_term(&s->nodes[l].core) == term,
           "the rejoining follower disrupted the leader (term %" PRIu64
           " -> %" PRIu64 ")",
           term, cr_core_term(&s->nodes[l].core));
    EXPECT(s,
           cr_core_term(&s->nodes[f].core) == term &&
               cr_core_leader(&s->nodes[f].core) == l,
           "the follower did not rejoin the leader's term");
    return final_liveness(s);
}

/* Scenario ELECT-06: a leader alone stops leading within 2 x ET
 * (check-quorum, §6.2) and acknowledges no write. */
static bool elect_06(struct sim *s, uint64_t seed)
{
    cr_id l;
    uint64_t ops[3];
    (void)seed;
    l = sim_wait_leader(s, 2 * ET(s));
    EXPECT(s, l != 0, "no leader");
    EXPECT(s, sim_commit(s, 4 * ET(s), NULL), "no first commit");
    sim_isolate(s, l);
    for (unsigned i = 0; i < 3; i++) {
        EXPECT(s, sim_propose(s, l, &ops[i]) == 0,
               "the leader refused a proposal right after isolation");
    }
    sim_run_for(s, 2 * ET(s));
    EXPECT(s, cr_core_role(&s->nodes[l].core) != CR_LEADER,
           "n%" PRIu64 " still leads alone after 2 x ET", l);
    for (unsigned i = 0; i < 3; i++) {
        EXPECT(s, sim_op(s, ops[i])->state != SIM_OP_ACKED,
               "an isolated leader acknowledged write %" PRIu64, ops[i]);
    }
    if (!final_liveness(s)) {
        return false;
    }
    for (unsigned i = 0; i < 3; i++) {
        EXPECT(s, sim_op(s, ops[i])->state != SIM_OP_ACKED,
               "write %" PRIu64 " of the isolated leader was acknowledged",
               ops[i]);
    }
    return true;
}

/* Scenario ELECT-07: leadership transfer under load: the target leads
 * within ET; no acknowledged write is lost. */
static bool elect_07(struct sim *s, uint64_t seed)
{
    cr_id l, target;
    cr_msec start;
    (void)seed;
    l = sim_wait_leader(s, 2 * ET(s));
    EXPECT(s, l != 0, "no leader");
    run_with_load(s, ET(s), 5);
    l = sim_leader(s);
    target = l % s->n_nodes + 1;
    EXPECT(s, sim_transfer(s, l, target) == 0, "transfer refused");
    start = s->now;
    while (sim_stable_leader(s) != target && s->now - start < ET(s) &&
           !s->failed) {
        run_with_load(s, 5, 5);
    }
    EXPECT(s, sim_stable_leader(s) == target,
           "n%" PRIu64 " did not lead within ET of the transfer", target);
    run_with_load(s, ET(s), 5);
    return final_liveness(s);
}

/* ---------------------------------------------------------------------------
 * Replication
 * ------------------------------------------------------------------------- */

/* Scenario REPL-01: nothing commits without a quorum; after healing a new
 * write commits everywhere. */
static bool repl_01(struct sim *s, uint64_t seed)
{
    cr_id l, f;
    cr_index before;
    char groups[32];
    uint64_t op;
    (void)seed;
    l = sim_wait_leader(s, 2 * ET(s));
    EXPECT(s, l != 0, "no leader");
    EXPECT(s, sim_commit(s, 4 * ET(s), NULL), "no first commit");
    sim_run_for(s, 50);
    before = sim_max_commit(s);
    f = l % s->n_nodes + 1;
    snprintf(groups, sizeof groups, "%" PRIu64 ",%" PRIu64, l, f);
    sim_partition(s, groups);
    EXPECT(s, sim_propose(s, l, &op) == 0, "proposal refused");
    sim_run_for(s, 2 * ET(s));
    EXPECT(s, sim_max_commit(s) == before,
           "an entry committed without a quorum (%" PRIu64 " -> %" PRIu64 ")",
           before, sim_max_commit(s));
    EXPECT(s, sim_op(s, op)->state != SIM_OP_ACKED,
           "a write was acknowledged without a quorum");
    return final_liveness(s);
}

/* Scenario REPL-02: five concurrent writes all commit, each once. */
static bool repl_02(struct sim *s, uint64_t seed)
{
    cr_id l;
    uint64_t ops[5];
    (void)seed;
    l = sim_wait_leader(s, 2 * ET(s));
    EXPECT(s, l != 0, "no leader");
    for (unsigned i = 0; i < 5; i++) {
        EXPECT(s, sim_propose(s, l, &ops[i]) == 0, "proposal refused");
    }
    for (unsigned i = 0; i < 5; i++) {
        EXPECT(s,
               sim_run_until_pred(s, pred_acked, &ops[i], 2 * ET(s)) &&
                   sim_op(s, ops[i])->state == SIM_OP_ACKED,
               "write %" PRIu64 " not acknowledged", ops[i]);
    }
    if (!final_liveness(s)) {
        return false;
    }
    for (unsigned i = 0; i < 5; i++) {
        EXPECT(s, op_count(s, ops[i]) == 1,
               "write %" PRIu64 " applied %u times", ops[i],
               op_count(s, ops[i]));
    }
    return true;
}

/* Scenario REPL-03: a partitioned leader's uncommitted entries are
 * discarded when it rejoins; the new leader's entries win. */
static bool repl_03(struct sim *s, uint64_t seed)
{
    cr_id l, f;
    uint64_t stale[5], fresh[3];
    char groups[64];
    struct not_id old;
    (void)seed;
    l = sim_wait_leader(s, 2 * ET(s));
    EXPECT(s, l != 0, "no leader");
    EXPECT(s, sim_commit(s, 4 * ET(s), NULL), "no first commit");
    f = l % s->n_nodes + 1;
    snprintf(groups, sizeof groups, "%" PRIu64 ",%" PRIu64 "|", l, f);
    for (cr_id id = 1; id <= s->n_nodes; id++) {
        if (id != l && id != f) {
            size_t len = strlen(groups);
            snprintf(groups + len, sizeof groups - len, "%" PRIu64 ",", id);
        }
    }
    sim_partition(s, groups);
    for (unsigned i = 0; i < 5; i++) {
        EXPECT(s, sim_propose(s, l, &stale[i]) == 0, "proposal refused");
    }
    old.id = l;
    EXPECT(s, sim_run_until_pred(s, pred_leader_not, &old, 4 * ET(s)),
           "the majority elected no leader");
    for (unsigned i = 0; i < 3; i++) {
        EXPECT(s, sim_commit(s, 4 * ET(s), &fresh[i]),
               "the majority did not commit");
    }
    if (!final_liveness(s)) {
        return false;
    }
    for (unsigned i = 0; i < 5; i++) {
        EXPECT(s, !op_committed(s, stale[i]),
               "stale write %" PRIu64 " of the cut-off leader committed",
               stale[i]);
    }
    for (unsigned i = 0; i < 3; i++) {
        EXPECT(s, op_committed(s, fresh[i]), "write %" PRIu64 " lost",
               fresh[i]);
    }
    return true;
}

/* Scenario REPL-04: fast log repair: twice, a minority leader collects 50
 * uncommitted entries while the majority commits 50; after healing the
 * logs converge quickly (conflict hints skip a term per round trip). */
static bool repl_04(struct sim *s, uint64_t seed)
{
    (void)seed;
    for (unsigned round = 0; round < 2 && !s->failed; round++) {
        cr_id l = sim_wait_leader(s, 4 * ET(s));
        cr_id f;
        char groups[64];
        struct not_id old;
        EXPECT(s, l != 0, "no leader in round %u", round);
        f = l % s->n_nodes + 1;
        snprintf(groups, sizeof groups, "%" PRIu64 ",%" PRIu64 "|", l, f);
        for (cr_id id = 1; id <= s->n_nodes; id++) {
            if (id != l && id != f) {
                size_t len = strlen(groups);
                snprintf(groups + len, sizeof groups - len, "%" PRIu64 ",", id);
            }
        }
        sim_partition(s, groups);
        for (unsigned i = 0; i < 50; i++) {
            (void)sim_propose(s, l, NULL);
        }
        old.id = l;
        EXPECT(s, sim_run_until_pred(s, pred_leader_not, &old, 4 * ET(s)),
               "the majority elected no leader");
        for (unsigned i = 0; i < 50; i++) {
            (void)sim_propose(s, sim_stable_leader(s), NULL);
        }
        sim_run_for(s, ET(s));
    }
    sim_heal(s);
    EXPECT(s, sim_wait_converged(s, 10 * ET(s)),
           "logs did not converge within 10 x ET after healing");
    return final_liveness(s);
}

/* ---------------------------------------------------------------------------
 * Persistence
 * ------------------------------------------------------------------------- */

/* Scenario PERSIST-01: kill -9 a follower, the leader, then everyone;
 * restart; no acknowledged write is lost, commit never goes back. */
static bool persist_01(struct sim *s, uint64_t seed)
{
    cr_id l, f;
    (void)seed;
    l = sim_wait_leader(s, 2 * ET(s));
    EXPECT(s, l != 0, "no leader");
    run_with_load(s, ET(s), 3);
    f = l % s->n_nodes + 1;
    sim_crash(s, f);
    run_with_load(s, ET(s), 3);
    sim_restart(s, f);
    run_with_load(s, ET(s), 3);
    l = sim_leader(s);
    sim_crash(s, l);
    run_with_load(s, 2 * ET(s), 3);
    sim_restart(s, l);
    run_with_load(s, ET(s), 3);
    for (cr_id id = 1; id <= s->n_nodes; id++) {
        sim_crash(s, id);
    }
    sim_run_for(s, ET(s));
    for (cr_id id = 1; id <= s->n_nodes; id++) {
        sim_restart(s, id);
    }
    run_with_load(s, 2 * ET(s), 3);
    return final_liveness(s);
}

/* Scenario PERSIST-02: the figure 8 sequence of the Raft paper (§5.4.2),
 * step by step. S1 replicates an entry of its term to S2 only and
 * crashes; S5 wins the next term with S3, S4 and appends an entry at the
 * same index; S1 returns, wins a later term and copies its old entry to
 * S3: it is now on a majority, but S1 must not commit it by counting
 * replicas, because S5 can still win and overwrite it. */
static bool persist_02_figure8(struct sim *s, uint64_t seed)
{
    struct script_filter f;
    cr_index base;
    uint64_t x;
    cr_id one = 1, five = 5;
    (void)seed;
    memset(&f, 0, sizeof f);
    EXPECT(s, make_leader(s, 1), "S1 did not become leader");
    EXPECT(s, sim_commit(s, 4 * ET(s), NULL), "no first commit");
    sim_run_for(s, 50);
    base = cr_core_last_index(&s->nodes[1].core);

    /* (a) S1 replicates X at base+1 to S2 only. */
    sim_partition(s, "1,2");
    EXPECT(s, sim_propose(s, 1, &x) == 0, "S1 refused X");
    sim_run_for(s, 20);
    EXPECT(s, cr_core_last_index(&s->nodes[2].core) == base + 1,
           "S2 did not get X");
    /* (b) S1 crashes; S5 wins with S3 and S4 and appends at base+1, but
     * is cut off before anyone gets it. */
    sim_crash(s, 1);
    sim_partition(s, "2|3,4,5");
    f.candidate = NOBODY; /* let leases expire without an election */
    sim_set_filter(s, script_filter, &f);
    sim_run_for(s, ET(s));
    EXPECT(s, force_leader(s, &f, 5), "S5 did not win");
    sim_partition(s, "2|3,4|5");
    sim_run_for(s, 20);
    EXPECT(s,
           cr_core_last_index(&s->nodes[5].core) == base + 1 &&
               cr_core_last_index(&s->nodes[3].core) == base,
           "S5 did not append alone at base+1");
    /* (c) S5 crashes; S1 restarts and wins with S2 and S3; it sends X to S3
     * but no entry of its own term reaches anyone. */
    sim_crash(s, 5);
    sim_restart(s, 1);
    sim_partition(s, "1,2,3|4|5");
    f.from = 1;
    f.max_index = base + 1;
    f.candidate = NOBODY;
    sim_run_for(s, ET(s));
    EXPECT(s, force_leader(s, &f, 1), "S1 did not win again");
    sim_run_for(s, ET(s));
    EXPECT(s,
           cr_core_term_at(&s->nodes[3].core, base + 1) ==
               cr_core_term_at(&s->nodes[1].core, base + 1),
           "S3 did not get X");
    EXPECT(s, cr_core_commit(&s->nodes[1].core) <= base,
           "S1 committed X (index %" PRIu64
           ") by counting replicas of an entry of an older term",
           base + 1);
    /* (d) S1 crashes; S5 returns and wins with S2, S3, S4, overwriting X. */
    sim_crash(s, 1);
    sim_restart(s, 5);
    sim_partition(s, "2,3,4,5|1");
    f.from = 0;
    f.candidate = NOBODY;
    sim_run_for(s, ET(s));
    EXPECT(s, force_leader(s, &f, 5), "S5 did not win again");
    sim_run_for(s, ET(s));
    (void)one;
    (void)five;
    return final_liveness(s);
}

/* Scenario PERSIST-02 (randomized): rounds of submit, a short random
 * sleep, kill the leader, restart nodes when fewer than three are up; the
 * final write commits everywhere and no index ever holds two values. */
static bool persist_02_random(struct sim *s, uint64_t seed)
{
    (void)seed;
    for (unsigned round = 0; round < 30 && !s->failed; round++) {
        cr_id l = sim_leader(s);
        unsigned up = 0;
        if (l != 0) {
            (void)sim_propose(s, l, NULL);
        }
        sim_run_for(s, sim_rand_range(s, 0, ET_MIN(s)));
        l = sim_leader(s);
        if (l != 0) {
            sim_crash(s, l);
        }
        for (cr_id id = 1; id <= s->n_nodes; id++) {
            up += s->nodes[id].alive ? 1u : 0u;
        }
        while (up < 3) {
            cr_id id = sim_rand_range(s, 1, s->n_nodes);
            if (!s->nodes[id].alive) {
                sim_restart(s, id);
                up++;
            }
        }
    }
    return final_liveness(s);
}

struct asked
{
    cr_id candidate, voter;
};

static bool pred_vote_requested(struct sim *s, void *d)
{
    const struct asked *a = d;
    const struct cr_core *c = &s->nodes[a->candidate].core;
    cr_term t = cr_core_term(c);
    return cr_core_role(c) == CR_CANDIDATE && t < s->votes_cap &&
           (s->requested[t * (SIM_NODES_MAX + 1) + a->voter] &
            (1ull << a->candidate)) != 0;
}

/* Scenario PERSIST-03: crash at a durability point. A voter is killed right
 * after it received a RequestVote, while its vote is not yet durable, and
 * restarts at once; another candidate then asks it in the same term. The
 * first candidate must never have seen that vote: a vote is answered only
 * once it is durable (Raft Figure 2), or the voter votes twice in one term
 * and two leaders can share it. */
static bool persist_03(struct sim *s, uint64_t seed)
{
    struct script_filter f;
    struct asked a;
    cr_id l, f1, f2;
    (void)seed;
    memset(&f, 0, sizeof f);
    l = sim_wait_leader(s, 2 * ET(s));
    EXPECT(s, l != 0, "no leader");
    EXPECT(s, sim_commit(s, 4 * ET(s), NULL), "no first commit");
    f1 = l % 3 + 1;
    f2 = f1 % 3 + 1;
    sim_crash(s, l);
    f.candidate = NOBODY;
    sim_set_filter(s, script_filter, &f);
    sim_run_for(s, ET(s));
    f.candidate = f1;
    a.candidate = f1;
    a.voter = f2;
    (void)sim_campaign(s, f1);
    EXPECT(s, sim_run_until_pred(s, pred_vote_requested, &a, ET(s)),
           "n%" PRIu64 " never asked n%" PRIu64 " for its vote", f1, f2);
    /* The voter dies before its disk acknowledges the vote. */
    sim_crash_unsynced(s, f2);
    sim_restart(s, f2);
    /* The old leader comes back and runs for the same term; the first
     * candidate is cut off. */
    sim_restart(s, l);
    sim_isolate(s, f1);
    EXPECT(s, force_leader(s, &f, l), "n%" PRIu64 " did not win", l);
    sim_run_for(s, ET(s));
    return final_liveness(s);
}

/* ---------------------------------------------------------------------------
 * Membership and snapshots
 * ------------------------------------------------------------------------- */

struct voter_pred
{
    cr_id id;
    unsigned voters;
};

static bool pred_voters(struct sim *s, void *d)
{
    const struct voter_pred *v = d;
    cr_id l = sim_stable_leader(s);
    const struct cr_config *c;
    const struct cr_server *srv;
    if (l == 0) {
        return false;
    }
    c = cr_core_config(&s->nodes[l].core);
    srv = cr_config_get(c, v->id);
    return cr_core_config_index(&s->nodes[l].core) <=
               cr_core_commit(&s->nodes[l].core) &&
           cr_config_voters(c) == v->voters &&
           (v->id == 0 || (srv != NULL && srv->suffrage == CR_VOTER));
}

/* Scenario MEMBER-01: an empty node joins while clients write: it catches
 * up as a learner, is promoted, and the quorum grows. */
static bool member_01(struct sim *s, uint64_t seed)
{
    struct voter_pred v = {4, 4};
    cr_msec until;
    (void)seed;
    EXPECT(s, sim_wait_leader(s, 2 * ET(s)) != 0, "no leader");
    run_with_load(s, ET(s), 2);
    sim_add_node(s, 4);
    EXPECT(s, sim_change(s, sim_leader(s), CR_CHANGE_ADD, 4) == 0,
           "the join was refused");
    {
        const struct cr_server *srv =
            cr_config_get(cr_core_config(&s->nodes[sim_leader(s)].core), 4);
        EXPECT(s, srv != NULL && srv->suffrage == CR_LEARNER,
               "n4 did not join as a learner");
    }
    until = s->now + 20 * ET(s);
    while (!pred_voters(s, &v) && s->now < until && !s->failed) {
        run_with_load(s, 10, 2);
    }
    EXPECT(s, pred_voters(s, &v), "n4 was not promoted to voter");
    return final_liveness(s);
}

/* Scenario MEMBER-02: remove a follower, then the leader, under load: one
 * leader afterwards, removed nodes stop campaigning, nothing acked lost. */
static bool member_02(struct sim *s, uint64_t seed)
{
    struct voter_pred v = {0, 4};
    cr_id l, f;
    cr_term t;
    struct not_id old;
    cr_msec until;
    (void)seed;
    l = sim_wait_leader(s, 2 * ET(s));
    EXPECT(s, l != 0, "no leader");
    run_with_load(s, ET(s), 5);
    l = sim_leader(s);
    f = l % s->n_nodes + 1;
    EXPECT(s, sim_change(s, l, CR_CHANGE_REMOVE, f) == 0, "removal refused");
    until = s->now + 10 * ET(s);
    while (!pred_voters(s, &v) && s->now < until && !s->failed) {
        run_with_load(s, 10, 5);
    }
    EXPECT(s, pred_voters(s, &v), "the removal did not commit");
    sim_run_for(s, 2 * ET(s));
    t = cr_core_term(&s->nodes[f].core);
    run_with_load(s, 5 * ET(s), 5);
    EXPECT(s,
           cr_core_term(&s->nodes[f].core) == t &&
               cr_core_role(&s->nodes[f].core) == CR_FOLLOWER,
           "removed n%" PRIu64 " campaigns", f);

    l = sim_wait_leader(s, 4 * ET(s));
    EXPECT(s, l != 0, "no leader after the first removal");
    EXPECT(s, sim_change(s, l, CR_CHANGE_REMOVE, l) == 0,
           "the leader refused to remove itself");
    old.id = l;
    until = s->now + 10 * ET(s);
    while (!pred_leader_not(s, &old) && s->now < until && !s->failed) {
        run_with_load(s, 10, 5);
    }
    EXPECT(s, pred_leader_not(s, &old),
           "no new leader after removing n%" PRIu64, l);
    sim_run_for(s, 2 * ET(s));
    t = cr_core_term(&s->nodes[l].core);
    run_with_load(s, 5 * ET(s), 5);
    EXPECT(s,
           cr_core_term(&s->nodes[l].core) == t &&
               cr_core_role(&s->nodes[l].core) == CR_FOLLOWER,
           "removed leader n%" PRIu64 " campaigns", l);
    EXPECT(s, count_leaders(s) == 1, "%u leaders", count_leaders(s));
    return final_liveness(s);
}

/* Scenario MEMBER-03: changes while the leader is cut off, and two joins
 * at once: at most one change in flight, safety holds. */
static bool member_03(struct sim *s, uint64_t seed)
{
    cr_id l, l2;
    struct not_id old;
    (void)seed;
    l = sim_wait_leader(s, 2 * ET(s));
    EXPECT(s, l != 0, "no leader");
    EXPECT(s, sim_commit(s, 4 * ET(s), NULL), "no first commit");
    sim_add_node(s, 6);
    sim_add_node(s, 7);
    EXPECT(s, sim_change(s, l, CR_CHANGE_ADD, 6) == 0, "join of n6 refused");
    EXPECT(s, sim_change(s, l, CR_CHANGE_ADD, 7) == CR_ECHANGE,
           "a second change was accepted while one is uncommitted");
    sim_run_for(s, ET(s));
    /* The leader, cut off, starts a removal that cannot commit. */
    l = sim_leader(s);
    sim_isolate(s, l);
    (void)sim_change(s, l, CR_CHANGE_REMOVE, l % 5 + 1);
    old.id = l;
    EXPECT(s, sim_run_until_pred(s, pred_leader_not, &old, 4 * ET(s)),
           "no new leader while the old one is cut off");
    l2 = sim_stable_leader(s);
    EXPECT(s, sim_commit(s, 4 * ET(s), NULL), "the new leader does not commit");
    (void)sim_change(s, l2, CR_CHANGE_ADD, 7);
    sim_run_for(s, ET(s));
    return final_liveness(s);
}

/* Scenario SNAP-01: a follower cut off until its missing entries are
 * compacted away catches up through InstallSnapshot. */
static bool snap_01(struct sim *s, uint64_t seed)
{
    cr_id l, f;
    (void)seed;
    l = sim_wait_leader(s, 2 * ET(s));
    EXPECT(s, l != 0, "no leader");
    f = l % s->n_nodes + 1;
    sim_isolate(s, f);
    run_with_load(s, 3 * ET(s), 2);
    l = sim_leader(s);
    EXPECT(s,
           l != 0 && cr_core_first_index(&s->nodes[l].core) >
                         cr_core_last_index(&s->nodes[f].core) + 1,
           "the leader did not compact past the follower's log");
    sim_heal(s);
    EXPECT(s, sim_wait_converged(s, 10 * ET(s)),
           "the follower did not catch up");
    EXPECT(s, cr_core_snapshot(&s->nodes[f].core) != NULL,
           "the follower caught up without a snapshot");
    return final_liveness(s);
}

/* Scenario SNAP-02: snapshot, crash everyone, restart: the state comes back
 * from snapshot plus log, nothing lost. */
static bool snap_02(struct sim *s, uint64_t seed)
{
    uint64_t digest;
    cr_index applied;
    cr_id l;
    (void)seed;
    EXPECT(s, sim_wait_leader(s, 2 * ET(s)) != 0, "no leader");
    run_with_load(s, 2 * ET(s), 2);
    EXPECT(s, sim_wait_converged(s, 4 * ET(s)),
           "no convergence before the crash");
    l = sim_stable_leader(s);
    digest = s->nodes[l].app.digest;
    applied = s->nodes[l].app.applied;
    for (cr_id id = 1; id <= s->n_nodes; id++) {
        EXPECT(s, cr_core_snapshot(&s->nodes[id].core) != NULL,
               "n%" PRIu64 " took no snapshot", id);
        sim_crash(s, id);
    }
    for (cr_id id = 1; id <= s->n_nodes; id++) {
        sim_restart(s, id);
    }
    EXPECT(s, sim_wait_leader(s, 4 * ET(s)) != 0, "no leader after restart");
    EXPECT(s, sim_wait_converged(s, 4 * ET(s)), "no convergence after restart");
    l = sim_stable_leader(s);
    /* The leader's no-op follows what was there before. */
    EXPECT(s, s->nodes[l].app.applied >= applied,
           "applied went back from %" PRIu64 " to %" PRIu64, applied,
           s->nodes[l].app.applied);
    (void)digest;
    return final_liveness(s);
}

/* Scenario LIN-03: a leader frozen past 2 x ET (SIGSTOP) never serves a
 * stale read or acknowledges a write after it resumes. */
static bool lin_03(struct sim *s, uint64_t seed)
{
    cr_id l;
    uint64_t op;
    struct not_id old;
    (void)seed;
    l = sim_wait_leader(s, 2 * ET(s));
    EXPECT(s, l != 0, "no leader");
    EXPECT(s, sim_commit(s, 4 * ET(s), NULL), "no first commit");
    sim_pause(s, l);
    old.id = l;
    EXPECT(s, sim_run_until_pred(s, pred_leader_not, &old, 4 * ET(s)),
           "no new leader while n%" PRIu64 " is frozen", l);
    EXPECT(s, sim_commit(s, 4 * ET(s), NULL), "the new leader does not commit");
    sim_resume(s, l);
    /* Before it hears of the new term it still believes it leads. */
    (void)sim_read(s, l);
    op = 0;
    (void)sim_propose(s, l, &op);
    sim_run_for(s, ET(s));
    if (op != 0) {
        EXPECT(s,
               sim_op(s, op)->state != SIM_OP_ACKED ||
                   cr_core_role(&s->nodes[l].core) == CR_LEADER,
               "the stale leader acknowledged a write");
    }
    return final_liveness(s);
}

/* ---------------------------------------------------------------------------
 * The registry
 * ------------------------------------------------------------------------- */

const struct scenario scenarios[] = {
    {"ELECT-01", "leader election", 5, 0, 0, elect_01},
    {"ELECT-02", "re-election", 3, 0, 0, elect_02},
    {"ELECT-03", "many elections", 7, 0, 0, elect_03},
    {"ELECT-04", "election safety under churn", 5, 20, 0, elect_04},
    {"ELECT-05", "disruptive rejoin", 5, 0, 0, elect_05},
    {"ELECT-06", "leader without quorum", 5, 0, 0, elect_06},
    {"ELECT-07", "leadership transfer under load", 5, 0, 0, elect_07},
    {"REPL-01", "no commit without quorum", 5, 0, 0, repl_01},
    {"REPL-02", "concurrent submits", 5, 0, 0, repl_02},
    {"REPL-03", "partitioned leader rejoins", 5, 0, 0, repl_03},
    {"REPL-04", "fast log repair", 5, 0, 0, repl_04},
    {"PERSIST-01", "crash all / leader / follower", 5, 0, 0, persist_01},
    {"PERSIST-02", "figure 8, step by step", 5, 0, 1, persist_02_figure8},
    {"PERSIST-02-RANDOM", "figure 8, randomized rounds", 5, 0, 0,
     persist_02_random},
    {"PERSIST-03", "crash at a durability point", 3, 0, 0, persist_03},
    {"MEMBER-01", "join under load", 3, 0, 0, member_01},
    {"MEMBER-02", "remove a follower, then the leader", 5, 0, 0, member_02},
    {"MEMBER-03", "changes during a partition", 5, 0, 0, member_03},
    {"SNAP-01", "snapshot catch-up", 3, 20, 0, snap_01},
    {"SNAP-02", "crash all after a snapshot", 3, 10, 0, snap_02},
    {"LIN-03", "stale leader after a freeze", 5, 0, 0, lin_03},
};

const unsigned n_scenarios = sizeof scenarios / sizeof scenarios[0];
