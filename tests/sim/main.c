/* craft-sim: runs craft's core in a simulated cluster.
 *
 *   craft-sim --seeds A:B [--nodes N] [--duration MS] [--trace]
 *   craft-sim --scenario ID|all [--seed S] [--trace]
 *   craft-sim --bench [--entries N] [--batch B]
 *   craft-sim --list
 *
 * Every run is deterministic: a failure prints the seed, the violated
 * property, the tail of the event trace and the command that replays it. */
#define _POSIX_C_SOURCE 200809L

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "scenario.h"

static double wall_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: craft-sim --seeds A:B [--nodes N] [--duration MS] "
            "[--trace]\n"
            "       craft-sim --scenario ID|all [--seed S] [--trace]\n"
            "       craft-sim --bench [--entries N] [--batch B]\n"
            "       craft-sim --list\n"
            "\n"
            "  --seeds A:B     randomized schedules for seeds A..B-1\n"
            "  --nodes N       cluster size (default: 3 to 7 by seed)\n"
            "  --duration MS   simulated fault phase per seed (default "
            "3000)\n"
            "  --long          a fault phase of 30000 ms\n"
            "  --scenario ID   a scripted scenario (see --list), or all\n"
            "  --seed S        seed of a scenario (default 1)\n"
            "  --trace         print every event to stderr\n"
            "  --bench         throughput of a 3-node cluster at zero "
            "latency\n");
}

static int run_seeds(uint64_t a,
                     uint64_t b,
                     unsigned nodes,
                     cr_msec duration,
                     bool trace_all)
{
    unsigned passed = 0, failed = 0;
    uint64_t steps = 0;
    double t0 = wall_seconds(), dt;
    for (uint64_t seed = a; seed < b; seed++) {
        struct sim s;
        struct random_opts o;
        unsigned n = 0;
        bool ok;
        memset(&o, 0, sizeof o);
        o.nodes = nodes;
        o.fault_duration = duration;
        o.log = trace_all ? stderr : NULL;
        ok = random_run(seed, &o, &n, &s);
        steps += s.steps;
        if (ok) {
            passed++;
        } else {
            failed++;
            printf("FAIL seed=%" PRIu64 " nodes=%u\n", seed, n);
            sim_report(&s, stdout);
            printf("  replay: craft-sim --seeds %" PRIu64 ":%" PRIu64
                   " --nodes %u --duration %" PRIu64 " --trace\n",
                   seed, seed + 1, n, duration);
            fflush(stdout);
        }
        sim_close(&s);
    }
    dt = wall_seconds() - t0;
    printf("simulated %" PRIu64
           " steps in %.1f s: %.0f steps/s, %.0f "
           "seeds/min\n",
           steps, dt, dt > 0 ? (double)steps / dt : 0,
           dt > 0 ? 60.0 * (passed + failed) / dt : 0);
    printf("seeds: %u passed, %u failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}

static int run_scenarios(const char *id, uint64_t seed, bool trace_all)
{
    unsigned passed = 0, failed = 0;
    bool found = false;
    for (unsigned i = 0; i < n_scenarios; i++) {
        const struct scenario *sc = &scenarios[i];
        struct sim_params p;
        struct sim s;
        bool ok;
        double t0;
        if (strcmp(id, "all") != 0 && strcmp(id, sc->id) != 0) {
            continue;
        }
        found = true;
        sim_params_default(&p);
        p.nodes = sc->nodes;
        p.snapshot_every = sc->snapshot_every;
        if (sc->max_batch != 0) {
            p.opt.max_batch_entries = sc->max_batch;
        }
        sim_init(&s, &p, seed);
        s.log = trace_all ? stderr : NULL;
        t0 = wall_seconds();
        ok = sc->run(&s, seed) && !s.failed;
        if (ok) {
            passed++;
            printf("ok   %-18s %-40s %6" PRIu64 " ms simulated, %.3f s\n",
                   sc->id, sc->title, s.now, wall_seconds() - t0);
        } else {
            failed++;
            printf("FAIL %-18s %s (seed %" PRIu64 ")\n", sc->id, sc->title,
                   seed);
            sim_report(&s, stdout);
            printf("  replay: craft-sim --scenario %s --seed %" PRIu64
                   " --trace\n",
                   sc->id, seed);
        }
        fflush(stdout);
        sim_close(&s);
    }
    if (!found) {
        fprintf(stderr, "craft-sim: no scenario %s (see --list)\n", id);
        return 2;
    }
    printf("scenarios: %u passed, %u failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}

/* A counting allocator, to report the memory a node's core holds. */
struct counter
{
    size_t now, peak;
};

struct counted
{
    size_t size;
    size_t pad;
};

static void *count_malloc(void *data, size_t size)
{
    struct counter *c = data;
    struct counted *h = malloc(sizeof *h + size);
    if (h == NULL) {
        return NULL;
    }
    h->size = size;
    c->now += size;
    if (c->now > c->peak) {
        c->peak = c->now;
    }
    return h + 1;
}

static void count_free(void *data, void *ptr)
{
    struct counter *c = data;
    struct counted *h;
    if (ptr == NULL) {
        return;
    }
    h = (struct counted *)ptr - 1;
    c->now -= h->size;
    free(h);
}

static void *count_realloc(void *data, void *ptr, size_t size)
{
    struct counter *c = data;
    struct counted *h;
    size_t old;
    if (ptr == NULL) {
        return count_malloc(data, size);
    }
    h = (struct counted *)ptr - 1;
    old = h->size;
    h = realloc(h, sizeof *h + size);
    if (h == NULL) {
        return NULL;
    }
    h->size = size;
    c->now = c->now - old + size;
    if (c->now > c->peak) {
        c->peak = c->now;
    }
    return h + 1;
}

static bool pred_leader(struct sim *s, void *d)
{
    (void)d;
    return sim_stable_leader(s) != 0;
}

static int run_bench(uint64_t entries, unsigned batch)
{
    struct counter counter = {0, 0};
    struct cr_alloc alloc = {&counter, count_malloc, count_realloc, count_free};
    struct sim_params p;
    struct sim s;
    struct cr_entry *e;
    uint8_t payload[100];
    cr_id l;
    cr_index start, target;
    double t0, dt;
    uint64_t steps0;

    sim_params_default(&p);
    p.nodes = 3;
    p.latency_min = p.latency_max = 0;
    p.disk_min = p.disk_max = 0;
    p.torn = 0;
    p.payload = sizeof payload;
    p.check = false;
    p.snapshot_every = 65536;
    p.snapshot_trailing = 1024;
    p.alloc = &alloc;
    p.opt.max_batch_entries = 4096;
    p.opt.max_batch_bytes = 1u << 20;
    p.opt.max_inflight_msgs = 16;
    sim_init(&s, &p, 1);
    if (!sim_run_until_pred(&s, pred_leader, NULL, 10000)) {
        fprintf(stderr, "bench: no leader\n");
        return 1;
    }
    l = sim_stable_leader(&s);
    e = calloc(batch, sizeof *e);
    memset(payload, 'x', sizeof payload);
    for (unsigned i = 0; i < batch; i++) {
        e[i].type = CR_ENTRY_COMMAND;
        e[i].buf.base = payload;
        e[i].buf.len = sizeof payload;
    }
    start = cr_core_commit(&s.nodes[l].core);
    target = start + entries;
    steps0 = s.steps;
    t0 = wall_seconds();
    while (cr_core_commit(&s.nodes[l].core) < target) {
        /* Keep a few batches in flight: propose whenever the leader's log
         * is less than four batches ahead of its commit index. */
        if (cr_core_last_index(&s.nodes[l].core) <
            cr_core_commit(&s.nodes[l].core) + 4 * batch) {
            if (sim_propose_batch(&s, l, e, batch) != 0) {
                fprintf(stderr, "bench: proposal refused\n");
                return 1;
            }
        }
        if (!sim_step(&s)) {
            break;
        }
    }
    dt = wall_seconds() - t0;
    printf(
        "bench: 3 nodes, zero latency, %u-entry batches of %zu-byte "
        "entries\n",
        batch, sizeof payload);
    printf("  committed %" PRIu64 " entries in %.3f s: %.0f entries/s\n",
           (uint64_t)(cr_core_commit(&s.nodes[l].core) - start), dt,
           (double)(cr_core_commit(&s.nodes[l].core) - start) / dt);
    printf("  core steps: %" PRIu64 " (%.0f steps/s)\n", s.steps - steps0,
           (double)(s.steps - steps0) / dt);
    printf("  memory held by the cores: peak %.1f MiB, %.1f MiB per node\n",
           (double)counter.peak / 1048576.0,
           (double)counter.peak / 3.0 / 1048576.0);
    free(e);
    sim_close(&s);
    return 0;
}

int main(int argc, char **argv)
{
    const char *seeds = NULL;
    const char *scenario = NULL;
    unsigned nodes = 0;
    cr_msec duration = 3000;
    uint64_t seed = 1;
    uint64_t entries = 2000000;
    unsigned batch = 256;
    bool trace_all = false, bench = false;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--seeds") == 0 && v != NULL) {
            seeds = v;
            i++;
        } else if (strcmp(a, "--nodes") == 0 && v != NULL) {
            nodes = (unsigned)strtoul(v, NULL, 10);
            i++;
        } else if (strcmp(a, "--duration") == 0 && v != NULL) {
            duration = strtoull(v, NULL, 10);
            i++;
        } else if (strcmp(a, "--long") == 0) {
            duration = 30000;
        } else if (strcmp(a, "--scenario") == 0 && v != NULL) {
            scenario = v;
            i++;
        } else if (strcmp(a, "--seed") == 0 && v != NULL) {
            seed = strtoull(v, NULL, 10);
            i++;
        } else if (strcmp(a, "--trace") == 0) {
            trace_all = true;
        } else if (strcmp(a, "--bench") == 0) {
            bench = true;
        } else if (strcmp(a, "--entries") == 0 && v != NULL) {
            entries = strtoull(v, NULL, 10);
            i++;
        } else if (strcmp(a, "--batch") == 0 && v != NULL) {
            batch = (unsigned)strtoul(v, NULL, 10);
            i++;
        } else if (strcmp(a, "--list") == 0) {
            for (unsigned k = 0; k < n_scenarios; k++) {
                printf("%-18s %s (%u nodes)\n", scenarios[k].id,
                       scenarios[k].title, scenarios[k].nodes);
            }
            return 0;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "craft-sim: unknown or incomplete option %s\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (nodes > SIM_NODES_MAX) {
        fprintf(stderr, "craft-sim: --nodes must be 1 to %d\n", SIM_NODES_MAX);
        return 2;
    }
    if (bench) {
        if (batch == 0 || entries == 0) {
            fprintf(stderr, "craft-sim: --batch and --entries must be > 0\n");
            return 2;
        }
        return run_bench(entries, batch);
    }
    if (scenario != NULL) {
        return run_scenarios(scenario, seed, trace_all);
    }
    if (seeds != NULL) {
        char *end;
        uint64_t a = strtoull(seeds, &end, 10);
        uint64_t b;
        if (*end != ':') {
            fprintf(stderr, "craft-sim: --seeds takes A:B\n");
            return 2;
        }
        b = strtoull(end + 1, &end, 10);
        if (*end != '\0' || b <= a) {
            fprintf(stderr, "craft-sim: --seeds takes A:B with A < B\n");
            return 2;
        }
        return run_seeds(a, b, nodes, duration, trace_all);
    }
    usage(stderr);
    return 2;
}
