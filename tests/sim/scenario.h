/* Scripted scenarios and randomized schedules run by craft-sim. */
#ifndef CRAFT_SIM_SCENARIO_H
#define CRAFT_SIM_SCENARIO_H

#include "sim.h"

struct scenario
{
    const char *id; /* the id of ../shared/design/SCENARIOS.md */
    const char *title;
    unsigned nodes;          /* cluster size */
    cr_index snapshot_every; /* 0: no snapshots */
    unsigned max_batch;      /* entries per AppendEntries, 0: default */
    /* Returns true on success; on failure sim_fail() says why. */
    bool (*run)(struct sim *s, uint64_t seed);
};

extern const struct scenario scenarios[];
extern const unsigned n_scenarios;

/* Options of a randomized run. */
struct random_opts
{
    unsigned nodes;         /* 0: 3 to 7 chosen by the seed */
    cr_msec fault_duration; /* simulated ms of faults before healing */
    FILE *log;              /* trace every event here, or NULL */
};

/* Runs the randomized schedule of one seed; true if every check held.
 * *nodes_out receives the cluster size used. */
bool random_run(uint64_t seed,
                const struct random_opts *o,
                unsigned *nodes_out,
                struct sim *keep);

#endif /* CRAFT_SIM_SCENARIO_H */
