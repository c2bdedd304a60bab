/* Allocation failures (STYLE.md: "a fault allocator fails the Nth
 * allocation", as canonical/raft's heap fixture and SQLite's OOM loops).
 *
 * Each test runs one scenario over the core's entry points again and
 * again, failing allocation number N = 1, 2, ... of the run, until a run
 * makes fewer than N allocations; then again failing allocation N and
 * every later one. In every run:
 *   - the call in which the allocation failed reports an error (CR_ENOMEM
 *     from bootstrap, load and proposals, some error from a step), and no
 *     call reports CR_ENOMEM without a failure (checked in fx_step);
 *   - what failed left the state as it was: a failed proposal, change,
 *     bootstrap or load appended nothing and can be retried (and with a
 *     single failure, the retry works);
 *   - with a single failure, once it is behind, the cluster converges
 *     again (a leader, every voter with the whole log, all committed);
 *   - after cr_core_close nothing is left allocated (fx_free, and
 *     cmocka's block check at the end of the test). */
#include "fixture.h"

typedef void (*scenario_fn)(struct fx *f);

static cr_id leader_of(const struct fx *f)
{
    for (cr_id id = 1; id <= f->n; id++) {
        if (f->live[id] && cr_core_role(&f->core[id]) == CR_LEADER) {
            return id;
        }
    }
    return 0;
}

/* The outcome of a retry after CR_ENOMEM: success, unless every
 * allocation fails from now on. */
static void retried(const struct fx *f, int rv)
{
    if (f->fail_repeat && rv == CR_ENOMEM) {
        return;
    }
    assert_int_equal(rv, 0);
}

/* Bootstraps cores 1..voters; a failed bootstrap changed nothing and is
 * retried. */
static void bootstrap(struct fx *f, unsigned voters)
{
    fx_config(&f->config, voters);
    for (cr_id id = 1; id <= voters; id++) {
        int rv = fx_bootstrap_config(f, id, &f->config);
        if (rv != 0) {
            assert_int_equal(rv, CR_ENOMEM);
            assert_int_equal(cr_core_last_index(&f->core[id]), 0);
            assert_int_equal(cr_core_term(&f->core[id]), 0);
            rv = fx_bootstrap_config(f, id, &f->config);
        }
        retried(f, rv);
        (void)fx_persist(f, id);
    }
}

/* Campaigns on id and lets the cluster settle; id may not win. */
static void elect(struct fx *f, cr_id id)
{
    (void)fx_campaign(f, id);
    fx_flush(f);
}

/* Proposes on the leader, if any: all or nothing. */
static void propose(struct fx *f, unsigned n, size_t len)
{
    cr_id l = leader_of(f);
    cr_index last;
    int rv;
    if (l == 0) {
        return;
    }
    last = cr_core_last_index(&f->core[l]);
    rv = fx_propose(f, l, n, len);
    if (rv == 0) {
        assert_int_equal(cr_core_last_index(&f->core[l]), last + n);
        assert_int_equal(f->u[l].index, last + 1);
    } else {
        assert_int_equal(rv, CR_ENOMEM);
        assert_int_equal(cr_core_last_index(&f->core[l]), last);
    }
}

/* After the failure: time passes, the cluster must converge. */
static void converge(struct fx *f)
{
    cr_id l;
    const struct cr_config *cfg;
    fx_run(f, 3 * FX_ET);
    l = leader_of(f);
    assert_int_not_equal(l, 0);
    /* Commit what is left (a no-op that failed is retried on ticks). */
    (void)fx_propose(f, l, 1, 1);
    fx_run(f, 3 * FX_HB);
    l = leader_of(f);
    assert_int_not_equal(l, 0);
    assert_int_equal(cr_core_commit(&f->core[l]),
                     cr_core_last_index(&f->core[l]));
    cfg = cr_core_config(&f->core[l]);
    for (unsigned i = 0; i < cfg->n; i++) {
        cr_id id = cfg->servers[i].id;
        if (cfg->servers[i].suffrage != CR_VOTER || !f->live[id]) {
            continue;
        }
        assert_int_equal(cr_core_last_index(&f->core[id]),
                         cr_core_last_index(&f->core[l]));
        assert_int_equal(cr_core_commit(&f->core[id]),
                         cr_core_commit(&f->core[l]));
    }
}

/* Runs the scenario failing allocation N (and with repeat, every later
 * one) for N = 1, 2, ... until a run makes fewer than N allocations;
 * returns how many runs failed one. */
static unsigned long run_mode(scenario_fn scenario, unsigned n, bool repeat)
{
    unsigned long fail_at;
    for (fail_at = 1;; fail_at++) {
        struct fx *f = fx_new(n, NULL);
        bool failed;
        f->fail_at = fail_at;
        f->fail_repeat = repeat;
        scenario(f);
        failed = f->n_failed > 0;
        f->fail_at = 0;
        if (!repeat) {
            converge(f);
        }
        fx_free(f);
        if (!failed) {
            break;
        }
        assert_true(fail_at < 100000);
    }
    return fail_at - 1;
}

static void run(scenario_fn scenario, unsigned n)
{
    unsigned long once = run_mode(scenario, n, false);
    unsigned long repeat = run_mode(scenario, n, true);
    /* Every scenario allocates, and as often whichever the mode until the
     * first failure. */
    assert_true(once > 0);
    assert_true(repeat > 0);
}

/* init + bootstrap + an election. */
static void scenario_bootstrap(struct fx *f)
{
    bootstrap(f, 3);
    elect(f, 1);
}

/* A leader appending proposals of several sizes while followers answer
 * late: the log array and the outboxes grow. */
static void scenario_leader(struct fx *f)
{
    bootstrap(f, 3);
    elect(f, 1);
    for (unsigned k = 1; k <= 5; k++) {
        propose(f, k * 9, k * 100);
        if (leader_of(f) != 0) {
            (void)fx_persist(f, leader_of(f));
        }
        fx_deliver(f, 1, 2);
        (void)fx_persist(f, 2);
        fx_deliver(f, 2, 1);
    }
    fx_flush(f);
}

/* Followers receiving appends that conflict with their logs: truncation,
 * growth, held acknowledgements (the logs come from cr_core_load). */
static void scenario_follower(struct fx *f)
{
    const cr_term leader_log[] = {1, 2, 2, 2};
    const cr_term stale_log[] = {1, 1, 1, 1, 1, 1, 1};
    int rv;
    fx_config(&f->config, 3);
    rv = fx_load(f, 1, 2, 0, 1, leader_log, 4);
    if (rv != 0) {
        assert_int_equal(rv, CR_ENOMEM);
        assert_int_equal(cr_core_last_index(&f->core[1]), 0);
        rv = fx_restart(f, 1);
    }
    retried(f, rv);
    rv = fx_load(f, 2, 1, 0, 1, stale_log, 7);
    if (rv != 0) {
        rv = fx_restart(f, 2);
    }
    retried(f, rv);
    rv = fx_load(f, 3, 2, 0, 1, leader_log, 2);
    if (rv != 0) {
        rv = fx_restart(f, 3);
    }
    retried(f, rv);
    elect(f, 1);
    propose(f, 30, 10);
    fx_flush(f);
}

/* Compaction, InstallSnapshot to a lagging follower, and a restart from a
 * snapshot. */
static void scenario_snapshot(struct fx *f)
{
    cr_id l;
    int rv;
    bootstrap(f, 3);
    f->cut[3] = true;
    elect(f, 1);
    propose(f, 5, 20);
    fx_flush(f);
    l = leader_of(f);
    if (l != 0 && f->applied[l] > 1) {
        (void)fx_snapshot(f, l, f->applied[l], 1);
    }
    f->cut[3] = false;
    fx_run(f, 2 * FX_HB);
    if (f->applied[2] > 1) {
        (void)fx_snapshot(f, 2, f->applied[2], 0);
    }
    (void)fx_persist(f, 2);
    rv = fx_restart(f, 2);
    if (rv != 0) {
        assert_int_equal(rv, CR_ENOMEM);
        rv = fx_restart(f, 2);
    }
    retried(f, rv);
}

/* Reads on the leader (more than the first allocation holds) and reads
 * forwarded by a follower. */
static void scenario_reads(struct fx *f)
{
    bootstrap(f, 3);
    elect(f, 1);
    for (uint64_t id = 1; id <= 20; id++) {
        int rv = fx_read(f, 1, id);
        assert_true(rv == 0 || rv == CR_ENOMEM || rv == CR_ENOLEADER ||
                    rv == CR_ENOTLEADER);
        rv = fx_read(f, 2, 100 + id);
        assert_true(rv == 0 || rv == CR_ENOMEM || rv == CR_ENOLEADER);
    }
    fx_flush(f);
    f->now += FX_HB;
    (void)fx_tick(f, 1);
    fx_flush(f);
    for (cr_id id = 1; id <= 2; id++) {
        for (unsigned i = 0; i < f->n_reads[id]; i++) {
            const struct cr_read_result *r = &f->reads[id][i];
            /* Each read is answered at most once. */
            for (unsigned j = 0; j < i; j++) {
                assert_true(f->reads[id][j].id != r->id);
            }
            if (r->status == 0) {
                assert_true(r->index <= cr_core_commit(&f->core[1]));
            }
        }
    }
}

/* Adding a server (learner, promotion) and removing one. A failed change
 * leaves the configuration as it was. */
static void scenario_config(struct fx *f)
{
    cr_id l;
    bootstrap(f, 3);
    elect(f, 1);
    l = leader_of(f);
    if (l != 0) {
        struct cr_config before = *cr_core_config(&f->core[l]);
        cr_index last = cr_core_last_index(&f->core[l]);
        int rv = fx_change(f, l, CR_CHANGE_ADD, 4);
        if (rv == CR_ENOMEM) {
            assert_true(cr_config_equal(cr_core_config(&f->core[l]), &before));
            assert_int_equal(cr_core_last_index(&f->core[l]), last);
            rv = fx_change(f, l, CR_CHANGE_ADD, 4);
        }
        assert_true(rv == 0 || rv == CR_ENOTREADY ||
                    (f->fail_repeat && rv == CR_ENOMEM));
    }
    fx_flush(f);
    fx_run(f, 2 * FX_HB);
    l = leader_of(f);
    if (l != 0) {
        (void)fx_change(f, l, CR_CHANGE_REMOVE, l == 3 ? 2 : 3);
    }
    fx_flush(f);
}

/* Restarts: every core reloads what it wrote. */
static void scenario_load(struct fx *f)
{
    bootstrap(f, 3);
    elect(f, 1);
    propose(f, 3, 50);
    fx_flush(f);
    for (cr_id id = 1; id <= 3; id++) {
        int rv;
        (void)fx_persist(f, id);
        rv = fx_restart(f, id);
        if (rv != 0) {
            assert_int_equal(rv, CR_ENOMEM);
            assert_int_equal(cr_core_last_index(&f->core[id]), 0);
            assert_null(cr_core_snapshot(&f->core[id]));
            rv = fx_restart(f, id);
        }
        retried(f, rv);
        if (rv == 0) {
            assert_int_equal(cr_core_last_index(&f->core[id]),
                             f->disk[id].first + f->disk[id].n - 1);
        }
    }
}

/* A leadership transfer. */
static void scenario_transfer(struct fx *f)
{
    bootstrap(f, 3);
    elect(f, 1);
    propose(f, 2, 10);
    if (leader_of(f) != 0) {
        (void)fx_transfer(f, leader_of(f), 3);
    }
    fx_flush(f);
}

static void oom_init_bootstrap(void **state)
{
    (void)state;
    run(scenario_bootstrap, 3);
}

static void oom_leader_proposals(void **state)
{
    (void)state;
    run(scenario_leader, 3);
}

static void oom_follower_appends(void **state)
{
    (void)state;
    run(scenario_follower, 3);
}

static void oom_snapshots(void **state)
{
    (void)state;
    run(scenario_snapshot, 3);
}

static void oom_reads(void **state)
{
    (void)state;
    run(scenario_reads, 3);
}

static void oom_config_changes(void **state)
{
    (void)state;
    run(scenario_config, 4);
}

static void oom_load(void **state)
{
    (void)state;
    run(scenario_load, 3);
}

static void oom_transfer(void **state)
{
    (void)state;
    run(scenario_transfer, 3);
}

/* With an argument, runs only the tests whose names match it (cmocka's
 * pattern: * and ? wildcards). */
int main(int argc, char **argv)
{
    if (argc > 1) {
        cmocka_set_test_filter(argv[1]);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(oom_init_bootstrap),
        cmocka_unit_test(oom_leader_proposals),
        cmocka_unit_test(oom_follower_appends),
        cmocka_unit_test(oom_snapshots),
        cmocka_unit_test(oom_reads),
        cmocka_unit_test(oom_config_changes),
        cmocka_unit_test(oom_load),
        cmocka_unit_test(oom_transfer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
