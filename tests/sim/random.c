/* Randomized schedules: every fault the simulator knows, mixed by a seed.
 *
 * A run has a fault phase (network faults, crashes, freezes, client
 * writes and reads, joins, removals, transfers, snapshots, all at random
 * times) and then a healing phase: the network becomes reliable, every node
 * runs again, and a write must commit and every member converge within a
 * bounded simulated time (liveness). Safety is checked after every step. */
#include <inttypes.h>
#include <string.h>

#include "scenario.h"

static uint64_t pick(uint64_t *x, uint64_t lo, uint64_t hi)
{
    return lo + sim_splitmix(x) % (hi - lo + 1);
}

static double chance(uint64_t *x)
{
    return (double)(sim_splitmix(x) >> 11) / 9007199254740992.0;
}

/* Schedules of the second kind replay figure 8 of the Raft paper at
 * random, as the MIT 6.824 tests do: write, wait a little, crash the
 * leader, restart servers when fewer than a majority run. Small batches
 * let an old entry reach a majority before the new leader's no-op does:
 * the situation where counting replicas of an older term is unsafe. */
static bool figure8_mode(uint64_t seed)
{
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 3;
    return chance(&x) < 0.3;
}

static void random_params(uint64_t seed, unsigned nodes, struct sim_params *p)
{
    uint64_t x = seed * 0x2545F4914F6CDD1Dull + 17;
    sim_params_default(p);
    /* Draw the size even when it is given, so that --nodes N replays the
     * same schedule as the seed that chose N. */
    p->nodes = (unsigned)pick(&x, 3, 7);
    if (nodes != 0) {
        p->nodes = nodes;
    }
    p->latency_min = pick(&x, 0, 3);
    p->latency_max = p->latency_min + pick(&x, 0, 15);
    p->drop = chance(&x) < 0.5 ? 0 : chance(&x) * 0.15;
    p->dup = chance(&x) < 0.5 ? 0 : chance(&x) * 0.05;
    p->long_delay = chance(&x) < 0.5 ? 0 : chance(&x) * 0.05;
    p->long_delay_max = pick(&x, 50, 400);
    p->disk_min = pick(&x, 0, 2);
    p->disk_max = p->disk_min + pick(&x, 0, chance(&x) < 0.2 ? 30 : 8);
    p->snapshot_every = chance(&x) < 0.3 ? 0 : pick(&x, 5, 60);
    p->snapshot_trailing = pick(&x, 0, 10);
    p->opt.pre_vote = chance(&x) < 0.85;
    p->opt.check_quorum = chance(&x) < 0.85;
    p->opt.max_inflight_msgs = (unsigned)pick(&x, 1, 32);
    p->opt.max_batch_entries = (unsigned)pick(&x, 1, 64);
    p->opt.max_batch_bytes = pick(&x, 16, 4096);
    if (figure8_mode(seed)) {
        p->opt.max_batch_entries = (unsigned)pick(&x, 1, 2);
        p->drop = 0;
        p->snapshot_every = 0;
    }
}

static cr_id random_node(struct sim *s)
{
    return sim_rand_range(s, 1, s->n_nodes);
}

static void figure8_action(struct sim *s)
{
    cr_id l = sim_leader(s);
    unsigned up = 0;
    if (l != 0) {
        (void)sim_propose(s, l, NULL);
    }
    /* Mostly a short sleep, now and then a long one. */
    sim_run_for(s, sim_rand_range(s, 0, 9) == 0
                       ? sim_rand_range(s, 0, 2 * s->p.opt.election_timeout)
                       : sim_rand_range(s, 0, s->p.opt.election_timeout / 8));
    l = sim_leader(s);
    if (l != 0 && sim_rand_range(s, 0, 1) == 0) {
        sim_crash(s, l);
    }
    if (sim_rand_range(s, 0, 4) == 0) {
        cr_id id = random_node(s);
        if (s->nodes[id].alive) {
            sim_crash(s, id);
            sim_restart(s, id);
        }
    }
    for (cr_id id = 1; id <= s->n_nodes; id++) {
        up += s->nodes[id].alive ? 1u : 0u;
    }
    while (up < s->n_nodes / 2 + 1) {
        cr_id id = sim_rand_range(s, 1, s->n_nodes);
        if (!s->nodes[id].alive) {
            sim_restart(s, id);
            up++;
        }
    }
}

static void random_partition(struct sim *s)
{
    char groups[128] = "";
    size_t len = 0;
    unsigned k = (unsigned)sim_rand_range(s, 2, 3);
    for (unsigned g = 0; g < k; g++) {
        for (cr_id id = 1; id <= s->n_nodes; id++) {
            if (sim_rand_range(s, 0, k - 1) == g) {
                len += (size_t)snprintf(groups + len, sizeof groups - len,
                                        "%" PRIu64 ",", id);
            }
        }
        len += (size_t)snprintf(groups + len, sizeof groups - len, "|");
    }
    sim_partition(s, groups);
}

static void random_action(struct sim *s)
{
    cr_id l = sim_leader(s);
    cr_id a = random_node(s);
    unsigned r = (unsigned)sim_rand_range(s, 0, 99);
    if (r < 30) {
        unsigned n = (unsigned)sim_rand_range(s, 1, 5);
        for (unsigned i = 0; i < n && l != 0; i++) {
            (void)sim_propose(s, l, NULL);
        }
    } else if (r < 38) {
        if (s->nodes[a].alive && !s->nodes[a].paused) {
            (void)sim_read(s, a);
        }
    } else if (r < 46) {
        random_partition(s);
    } else if (r < 50) {
        sim_cut(s, a, random_node(s));
    } else if (r < 58) {
        sim_heal(s);
    } else if (r < 64) {
        if (!s->nodes[a].paused) {
            sim_crash(s, a);
        }
    } else if (r < 72) {
        sim_restart(s, a);
    } else if (r < 75) {
        cr_id id = s->n_nodes + 1;
        if (l != 0 && id <= SIM_NODES_MAX) {
            sim_add_node(s, id);
            (void)sim_change(s, l, CR_CHANGE_ADD, id);
        }
    } else if (r < 78) {
        if (l != 0) {
            (void)sim_change(s, l, CR_CHANGE_REMOVE, a);
        }
    } else if (r < 81) {
        if (l != 0) {
            (void)sim_transfer(s, l, sim_rand_range(s, 0, 1) ? a : 0);
        }
    } else if (r < 84) {
        if (s->nodes[a].paused) {
            sim_resume(s, a);
        } else if (s->nodes[a].alive) {
            sim_pause(s, a);
        }
    } else if (r < 86) {
        (void)sim_snapshot(s, a);
    } else if (r < 88) {
        if (s->nodes[a].alive && !s->nodes[a].paused) {
            (void)sim_campaign(s, a);
        }
    } else if (r < 94) {
        /* kill -9 and an immediate restart: what the node said but had
         * not yet made durable is gone, while its messages are in flight. */
        if (s->nodes[a].alive && !s->nodes[a].paused) {
            sim_crash(s, a);
            sim_restart(s, a);
        }
    }
}

bool random_run(uint64_t seed,
                const struct random_opts *o,
                unsigned *nodes_out,
                struct sim *s)
{
    struct sim_params p;
    cr_msec end;
    random_params(seed, o->nodes, &p);
    *nodes_out = p.nodes;
    if (sim_init(s, &p, seed) != 0) {
        sim_fail(s, "bad parameters");
        return false;
    }
    s->log = o->log;
    end = o->fault_duration;
    while (s->now < end && !s->failed) {
        if (figure8_mode(seed)) {
            figure8_action(s);
            continue;
        }
        random_action(s);
        sim_run_for(s, sim_rand_range(s, 1, p.opt.election_timeout));
    }
    if (s->failed) {
        return false;
    }
    return sim_final_liveness(s, 40 * p.opt.election_timeout);
}
