/* craft's deterministic cluster simulator.
 *
 * A cluster of craft cores in one process: a simulated network (latency,
 * loss, duplication, reordering, symmetric and one-way partitions),
 * simulated disks (write latency; a crash keeps only a prefix of the writes
 * not yet reported durable, possibly torn), crashes and restarts, clients,
 * membership changes, transfers, reads and snapshots. Simulated time is in
 * milliseconds and one seed gives one run.
 *
 * After every step of every core the simulator checks Raft's safety
 * properties (paper Figure 3, dissertation §3.6) and a few more of craft's
 * own; the first violation stops the run with a description and the tail
 * of the event trace. */
#ifndef CRAFT_SIM_H
#define CRAFT_SIM_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "craft/core.h"

#define SIM_NODES_MAX 12
#define SIM_TRACE_RING 64

struct sim_params
{
    unsigned nodes; /* initial voters, ids 1..nodes */
    cr_msec latency_min, latency_max;
    double drop;            /* probability a message is lost */
    double dup;             /* probability a message arrives twice */
    double long_delay;      /* probability of a long delay (reordering) */
    cr_msec long_delay_max; /* upper bound of a long delay */
    cr_msec disk_min, disk_max;
    double torn;             /* probability that a crash tears a write */
    unsigned payload;        /* bytes per client command (>= 8) */
    cr_index snapshot_every; /* applied entries between snapshots, 0: none */
    cr_index snapshot_trailing;
    bool check;                   /* run the invariant checks */
    const struct cr_alloc *alloc; /* for the cores; NULL: the default */
    struct cr_options opt;
};

void sim_params_default(struct sim_params *p);

/* The state machine of a simulated node: a hash chain over what it
 * applied, which doubles as its state digest. */
struct sim_app
{
    cr_index applied;
    uint64_t digest;
};

/* One entry of a node's shadow of its core's log (for the checks). */
struct sim_shadow
{
    cr_term term;
    uint64_t chain; /* hash of this entry and every one before it */
    uint8_t type;
    uint64_t op;
};

struct sim_write;
struct sim_msg;

struct sim_disk
{
    struct cr_hard_state hs;
    bool has_snapshot;
    struct cr_snapshot_meta snapshot;
    struct sim_app snapshot_app;
    cr_index first; /* index of entries[0] */
    struct cr_entry *entries;
    unsigned n, cap;
    struct sim_write *pending; /* FIFO, not yet durable */
    struct sim_write *pending_tail;
    cr_msec busy_until; /* writes complete in order */
};

struct sim_node
{
    cr_id id;
    bool started; /* has ever run */
    bool alive;
    unsigned incarnation;
    struct cr_core core;
    struct sim_disk disk;
    struct sim_app app;
    struct sim_app snapshot_app; /* the snapshot the node would send */
    struct sim_app incoming_app; /* the snapshot it last received */
    cr_msec tick_at;
    /* Shadow log: shadow[i] describes index i (i > shadow_floor). */
    struct sim_shadow *shadow;
    cr_index shadow_last, shadow_cap, shadow_floor;
    uint64_t floor_chain;
    cr_index latest_config;
    cr_index commit_seen;
    cr_index durable_commit; /* commit in the last write reported durable */
    bool paused;             /* SIGSTOP: its events wait in `deferred` */
    enum cr_role role_seen;
    cr_term term_seen;
    unsigned updates;
};

/* Committed entries as first observed by any node. */
struct sim_committed
{
    cr_term term;
    uint64_t chain;
    cr_term commit_term; /* term of the node that first saw it committed */
    uint64_t op;
};

enum sim_op_state { SIM_OP_PENDING = 1, SIM_OP_ACKED, SIM_OP_FAILED };

struct sim_op
{
    uint64_t id;
    cr_id node;
    cr_index index;
    cr_term term;
    enum sim_op_state state;
    cr_msec invoked, completed;
};

struct sim_read
{
    uint64_t id;
    cr_id node;
    cr_index min_index; /* highest commit anywhere when it was invoked */
    cr_msec invoked;
    bool done;
};

/* A compact record of one thing that happened, formatted only on failure. */
struct sim_trace
{
    cr_msec t;
    cr_id node;
    char kind; /* 'r' receive, 's' send, 'e' event, 'x' fault, 'c' core */
    const char *what;
    cr_id peer;
    cr_term term;
    uint64_t a, b, c;
};

/* Decides the fate of a message about to be delivered: false drops it. It
 * may also shorten an AppendEntries (lower n_entries) to script exactly
 * what a receiver gets. */
typedef bool (*sim_filter_fn)(void *data, struct cr_message *m);

struct sim
{
    struct sim_params p;
    uint64_t seed;
    uint64_t rng;
    cr_msec now;
    uint64_t cluster_id;
    struct sim_node nodes[SIM_NODES_MAX + 1]; /* by id; [0] unused */
    unsigned n_nodes;                         /* highest id in use */
    bool link[SIM_NODES_MAX + 1][SIM_NODES_MAX + 1];

    /* Event queue: a binary heap ordered by (time, seq). */
    struct sim_event *heap;
    unsigned heap_n, heap_cap;
    uint64_t event_seq;

    /* Checks. */
    cr_id *leader_of_term;
    cr_term leader_of_term_cap;
    uint64_t *voted_for; /* [(term * (NODES+1) + voter)] -> candidate */
    uint64_t *requested; /* bitmask of candidates that asked, by (term,node) */
    cr_term votes_cap;
    struct sim_committed *committed;
    cr_index committed_cap, committed_max;
    struct sim_op *ops;
    unsigned n_ops, cap_ops;
    struct sim_read *reads;
    unsigned n_reads, cap_reads;
    char violation[512];
    bool failed;

    /* Trace ring and verbosity. */
    struct sim_trace trace[SIM_TRACE_RING];
    unsigned trace_n;
    FILE *log; /* every trace record as it happens, or NULL */

    struct sim_event *deferred;
    unsigned n_deferred, cap_deferred;

    sim_filter_fn filter;
    void *filter_data;

    /* Statistics. */
    uint64_t steps, messages, dropped, applied_total;
    uint64_t commits_acked;
};

int sim_init(struct sim *s, const struct sim_params *p, uint64_t seed);
void sim_close(struct sim *s);

/* Runs the next event; false when none is left or a check failed. */
bool sim_step(struct sim *s);
/* Runs until simulated time `until` (or a failure). */
void sim_run_until(struct sim *s, cr_msec until);
void sim_run_for(struct sim *s, cr_msec duration);
/* Runs until pred holds (checked after each event) or `timeout` ms pass. */
bool sim_run_until_pred(struct sim *s,
                        bool (*pred)(struct sim *s, void *d),
                        void *data,
                        cr_msec timeout);

/* Faults and topology. */
void sim_crash(struct sim *s, cr_id id);
/* A crash that loses every write not yet reported durable. */
void sim_crash_unsynced(struct sim *s, cr_id id);
void sim_restart(struct sim *s, cr_id id);
void sim_heal(struct sim *s);                      /* every link up */
void sim_cut(struct sim *s, cr_id from, cr_id to); /* one way */
void sim_isolate(struct sim *s, cr_id id);
/* Freezes a node as SIGSTOP would: nothing it receives, writes or times
 * is seen until sim_resume. */
void sim_pause(struct sim *s, cr_id id);
void sim_resume(struct sim *s, cr_id id);
/* groups: e.g. "1,2|3,4,5"; nodes not named are isolated. */
void sim_partition(struct sim *s, const char *groups);
void sim_set_filter(struct sim *s, sim_filter_fn fn, void *data);

/* Starts a new, empty node (to be joined). */
void sim_add_node(struct sim *s, cr_id id);

/* Client operations. Return a core error code (0: accepted). */
int sim_propose(struct sim *s, cr_id node, uint64_t *op_id);
/* Proposes entries whose bytes the caller owns, without tracking them. */
int sim_propose_batch(struct sim *s,
                      cr_id node,
                      const struct cr_entry *e,
                      unsigned n);
int sim_change(struct sim *s, cr_id node, enum cr_change_type type, cr_id id);
int sim_transfer(struct sim *s, cr_id node, cr_id target);
int sim_read(struct sim *s, cr_id node);
int sim_campaign(struct sim *s, cr_id node);
int sim_snapshot(struct sim *s, cr_id node);

/* Observations. */
/* The leader with the highest term among live nodes, or 0. */
cr_id sim_leader(struct sim *s);
/* A live leader that a majority of its voters follow in its term, or 0. */
cr_id sim_stable_leader(struct sim *s);
bool sim_converged(struct sim *s);
const struct sim_op *sim_op(struct sim *s, uint64_t id);
unsigned sim_acked(struct sim *s);
cr_index sim_max_commit(struct sim *s);

/* Marks a failure (used by checks and scenarios). */
void sim_fail(struct sim *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Prints the violation and the trace tail. */
void sim_report(struct sim *s, FILE *f);
/* Final checks after a run: no acknowledged write is missing. */
bool sim_final_checks(struct sim *s);

/* Waits up to `timeout` for a leader a majority follows; 0 if none. */
cr_id sim_wait_leader(struct sim *s, cr_msec timeout);
/* Proposes at whichever node leads, again after each change of leader,
 * until one write is acknowledged or `timeout` passes. */
bool sim_commit(struct sim *s, cr_msec timeout, uint64_t *op_id);
bool sim_wait_converged(struct sim *s, cr_msec timeout);
/* Undoes every fault: no filter, a reliable network, every link up, every
 * node running again. */
void sim_heal_all(struct sim *s);
/* Liveness (FINAL-01): after sim_heal_all, a write commits and every member
 * converges within `bound`; then sim_final_checks. */
bool sim_final_liveness(struct sim *s, cr_msec bound);

/* Deterministic randomness: splitmix64 over a caller's state, and the
 * simulation's own stream. */
uint64_t sim_splitmix(uint64_t *state);
uint64_t sim_rand(struct sim *s);
double sim_randf(struct sim *s);
uint64_t sim_rand_range(struct sim *s, uint64_t lo, uint64_t hi);

#endif /* CRAFT_SIM_H */
