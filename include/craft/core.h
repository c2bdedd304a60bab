/* craft core: Raft as a pure, deterministic state machine.
 *
 * The core never performs I/O, never reads a clock, never blocks and never
 * prints. Its caller (the node in src/node, or the simulator in tests/sim)
 * feeds it events and carries out the update each event produces:
 *
 *     struct cr_update u;
 *     rv = cr_core_step(&core, &event, &u);
 *     persist u.hard_state / u.entries / u.snapshot   (asynchronously is fine)
 *     send u.messages                                 (at once)
 *     apply u.committed                               (in order)
 *     answer u.reads once applied >= their index
 *     when the writes of update u.persist_seq are durable:
 *         step CR_EVENT_PERSISTED { seq = u.persist_seq, last_index = ... }
 *
 * Time and randomness are inputs: every event carries `now` (milliseconds on
 * any monotonic clock) and cr_core_init takes the seed of the core's PRNG, so
 * one seed and one sequence of events always give one run.
 *
 * Durability is tracked by the core itself. Every message in an update may be
 * sent at once: a message that may only leave after a write is durable (a
 * vote, an append acknowledgement, anything carrying a term that is not yet
 * on disk) is held inside the core and released by the CR_EVENT_PERSISTED
 * that covers that write (Raft paper Figure 2: "Updated on stable storage
 * before responding to RPCs"). Requests leave at once: the leader's
 * AppendEntries and snapshots before its own write finishes (dissertation
 * §10.2.1; it counts itself only once the write is durable), and a
 * candidate's RequestVote before its new term and self-vote are durable
 * (it counts its own vote only once they are).
 *
 * Ownership: everything an update points to (messages, their entries, the
 * entries to persist, committed entries, read results) belongs to the core
 * and stays valid until the next call into the core. Copy what must live
 * longer. Payload bytes of entries live in reference-counted batches, see
 * cr_batch_*.
 *
 * The dissertation cited below is Diego Ongaro, "Consensus: Bridging Theory
 * and Practice", Stanford 2014; "paper" is the extended Raft paper (2014). */
#ifndef CRAFT_CORE_H
#define CRAFT_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "craft/alloc.h"
#include "craft/error.h"

typedef uint64_t cr_term;
typedef uint64_t cr_index;
typedef uint64_t cr_id; /* 0 means "no server" */
typedef uint64_t cr_msec;

/* A borrowed or owned byte range; ownership is stated where it is used. */
struct cr_buf
{
    void *base;
    size_t len;
};

/* ---------------------------------------------------------------------------
 * Configuration
 * ------------------------------------------------------------------------- */

/* At most this many servers (voters and learners) in one configuration.
 * Raft clusters have 3 to 7 voters; the cap keeps configurations inline and
 * free of allocation. */
#define CR_SERVERS_MAX 16
/* Longest peer address, including the terminating NUL. */
#define CR_ADDRESS_MAX 128

enum cr_suffrage {
    CR_VOTER = 1,
    /* Receives the log but neither votes nor counts for commitment. */
    CR_LEARNER = 2,
};

struct cr_server
{
    cr_id id;
    enum cr_suffrage suffrage;
    /* A learner with `promote` set is a server joining the cluster: the
     * leader catches it up in rounds and then makes it a voter (§4.2.1).
     * A learner without it stays a learner. */
    bool promote;
    char address[CR_ADDRESS_MAX];
};

struct cr_config
{
    unsigned n;
    struct cr_server servers[CR_SERVERS_MAX];
};

/* Returns the server with the given id, or NULL. */
const struct cr_server *cr_config_get(const struct cr_config *c, cr_id id);
/* Adds a server; CR_EEXIST, CR_EFULL, CR_EINVAL (id 0, address too long). */
int cr_config_add(struct cr_config *c,
                  cr_id id,
                  enum cr_suffrage suffrage,
                  const char *address);
/* Removes a server; CR_ENOTFOUND. */
int cr_config_remove(struct cr_config *c, cr_id id);
/* The number of voters. */
unsigned cr_config_voters(const struct cr_config *c);
bool cr_config_equal(const struct cr_config *a, const struct cr_config *b);

/* The encoded size of a configuration (as stored in a CR_ENTRY_CONFIG). */
size_t cr_config_encoded_size(const struct cr_config *c);
/* Encodes into buf, which has cr_config_encoded_size(c) bytes. */
void cr_config_encode(const struct cr_config *c, void *buf);
/* Decodes and validates; CR_ECORRUPT on any malformed input. */
int cr_config_decode(const void *buf, size_t len, struct cr_config *c);

/* ---------------------------------------------------------------------------
 * Log entries and payload batches
 * ------------------------------------------------------------------------- */

enum cr_entry_type {
    CR_ENTRY_COMMAND = 1, /* an opaque client command for the state machine */
    CR_ENTRY_CONFIG = 2,  /* an encoded struct cr_config */
    CR_ENTRY_NOOP = 3,    /* appended by a new leader (§5.4.2, §6.4) */
};

/* Payload bytes live in batches: one allocation holding a reference count
 * and the bytes of one or more entries. An entry whose `batch` is NULL
 * borrows its bytes from the caller. Batches are allocated with the core's
 * allocator and are immutable once filled. */
struct cr_entry
{
    cr_term term;
    enum cr_entry_type type;
    struct cr_buf buf;
    void *batch;
};

/* Allocates a batch with room for `size` bytes and one reference; returns
 * the start of that room, or NULL. `*batch` receives the handle. */
void *cr_batch_alloc(const struct cr_alloc *a, size_t size, void **batch);
void cr_batch_ref(void *batch);
/* Drops one reference; frees the batch with the last one. NULL is a no-op. */
void cr_batch_unref(const struct cr_alloc *a, void *batch);

/* ---------------------------------------------------------------------------
 * Snapshots
 * ------------------------------------------------------------------------- */

/* What the core knows of a snapshot: the last entry it covers and the
 * configuration as of that entry. The state itself never enters the core. */
struct cr_snapshot_meta
{
    cr_index index;
    cr_term term;
    cr_index config_index; /* index of the entry that held `config` */
    struct cr_config config;
};

/* ---------------------------------------------------------------------------
 * Messages between servers
 * ------------------------------------------------------------------------- */

enum cr_message_type {
    CR_MSG_REQUEST_VOTE = 1,
    CR_MSG_REQUEST_VOTE_RESULT,
    CR_MSG_APPEND_ENTRIES,
    CR_MSG_APPEND_ENTRIES_RESULT,
    /* Carries only the snapshot's metadata: the node streams the data and
     * steps this message in only once the data has fully arrived. */
    CR_MSG_INSTALL_SNAPSHOT,
    CR_MSG_TIMEOUT_NOW,
    CR_MSG_READ_INDEX,        /* follower -> leader: confirm leadership */
    CR_MSG_READ_INDEX_RESULT, /* leader -> follower */
};

struct cr_request_vote
{
    cr_index last_index;
    cr_term last_term;
    bool pre_vote; /* §9.6: a trial election that changes no state */
    bool transfer; /* sent after TimeoutNow: overrides the leader lease */
};

struct cr_request_vote_result
{
    bool granted;
    bool pre_vote;
};

struct cr_append_entries
{
    cr_index prev_index;
    cr_term prev_term;
    cr_index commit;
    /* Echoed in the result; a read registered at sequence s is confirmed by
     * a quorum of results with seq >= s (§6.4). */
    uint64_t seq;
    unsigned n_entries;
    struct cr_entry *entries; /* entries[i] has index prev_index + 1 + i */
};

struct cr_append_entries_result
{
    bool success;
    /* On success: the index up to which the log now matches the leader's
     * and is durable. On failure: the index of the rejected prev_index. */
    cr_index index;
    /* On failure, a hint for fast log repair (§5.3): the follower has no
     * entry matching the leader's after `hint_index`, and its entry there
     * has term `hint_term` (0 when none). */
    cr_index hint_index;
    cr_term hint_term;
    cr_index last_index; /* the follower's last log index */
    uint64_t seq;
};

struct cr_install_snapshot
{
    const struct cr_snapshot_meta *meta; /* borrowed */
};

struct cr_read_index
{
    uint64_t id; /* chosen by the follower's node; echoed */
};

struct cr_read_index_result
{
    uint64_t id;
    bool ok;
    cr_index index; /* safe to read once applied >= index */
};

struct cr_message
{
    enum cr_message_type type;
    cr_id from;
    cr_id to;
    cr_term term;
    uint64_t cluster_id;
    /* Copied from a request into the answer to it (vote and append
     * results), so that a transport can match answers to the calls that
     * carried the requests. The core never interprets it. */
    uint64_t context;
    union {
        struct cr_request_vote request_vote;
        struct cr_request_vote_result request_vote_result;
        struct cr_append_entries append_entries;
        struct cr_append_entries_result append_entries_result;
        struct cr_install_snapshot install_snapshot;
        struct cr_read_index read_index;
        struct cr_read_index_result read_index_result;
    };
};

/* ---------------------------------------------------------------------------
 * Events (input)
 * ------------------------------------------------------------------------- */

enum cr_event_type {
    CR_EVENT_TICK = 1,    /* only time has passed */
    CR_EVENT_RECEIVE,     /* a message arrived */
    CR_EVENT_PERSISTED,   /* the writes of updates up to seq are durable */
    CR_EVENT_PROPOSE,     /* client commands to append (leader only) */
    CR_EVENT_CHANGE,      /* add, remove or demote a server (leader only) */
    CR_EVENT_TRANSFER,    /* hand leadership to another voter (§3.10) */
    CR_EVENT_READ,        /* a linearizable read (§6.4) */
    CR_EVENT_SNAPSHOT,    /* the state machine saved a snapshot: compact */
    CR_EVENT_CAMPAIGN,    /* start an election now (operator or test) */
    CR_EVENT_UNREACHABLE, /* the node could not deliver to a peer */
};

enum cr_change_type {
    /* Join as a learner, caught up and promoted automatically (§4.1). */
    CR_CHANGE_ADD = 1,
    CR_CHANGE_ADD_LEARNER, /* join as a permanent learner */
    CR_CHANGE_REMOVE,
};

struct cr_event
{
    enum cr_event_type type;
    cr_msec now;
    union {
        struct
        {
            const struct cr_message *message;
        } receive;
        struct
        {
            uint64_t seq;
            /* The log's last index as of update `seq` (its
             * persist_last_index), echoed back. */
            cr_index last_index;
        } persisted;
        struct
        {
            /* Entries to append; the core copies their bytes (or takes a
             * reference when entries[i].batch is set). Terms are ignored. */
            const struct cr_entry *entries;
            unsigned n;
        } propose;
        struct
        {
            enum cr_change_type type;
            cr_id id;
            const char *address; /* for additions */
        } change;
        struct
        {
            cr_id target; /* 0: the most up-to-date voter */
        } transfer;
        struct
        {
            uint64_t id; /* reported back in the update's reads */
        } read;
        struct
        {
            /* The state machine's snapshot covers entries up to `index`
             * (<= the last committed index handed out) and is durable. */
            cr_index index;
            /* Keep this many entries before `index` for slow followers. */
            cr_index trailing;
        } snapshot;
        struct
        {
            cr_id id;
        } unreachable;
    };
};

/* ---------------------------------------------------------------------------
 * The update (output)
 * ------------------------------------------------------------------------- */

enum cr_role {
    CR_FOLLOWER = 1,
    CR_PRE_CANDIDATE, /* running a pre-vote (§9.6) */
    CR_CANDIDATE,
    CR_LEADER,
};

/* What must survive a crash. */
struct cr_hard_state
{
    cr_term term;
    cr_id vote;
    /* Recorded with the update's other writes, if it has any: a restart
     * applies at once what it knew was committed, and learns the rest from
     * the leader. A new commit index alone is no write (Raft Figure 2:
     * commitIndex is volatile). */
    cr_index commit;
};

/* A read whose index is known (or that failed). */
struct cr_read_result
{
    uint64_t id;
    int status;     /* 0, CR_ENOTLEADER, CR_ENOLEADER */
    cr_index index; /* answer once applied >= index */
};

enum cr_update_flags {
    CR_UPDATE_HARD_STATE = 1u << 0, /* persist term and vote */
    CR_UPDATE_ENTRIES = 1u << 1,    /* persist entries (see entries_first) */
    CR_UPDATE_SNAPSHOT = 1u << 2,   /* install the received snapshot */
    CR_UPDATE_STATE = 1u << 3,      /* role, term or leader changed */
    CR_UPDATE_CONFIG = 1u << 4,     /* the active configuration changed */
};

struct cr_update
{
    unsigned flags;

    /* Persistence. When persist_seq is nonzero the update has writes: the
     * node makes them durable in update order and then steps
     * CR_EVENT_PERSISTED with this seq and persist_last_index. Writes of
     * one update must become durable together or in the order listed:
     * snapshot, entries, hard state. */
    uint64_t persist_seq;
    cr_index persist_last_index;
    struct cr_hard_state hard_state;
    /* Entries to write at indexes entries_first, entries_first + 1, ...;
     * any persisted entry at entries_first or above is discarded first. */
    cr_index entries_first;
    unsigned n_entries;
    const struct cr_entry *entries;
    /* CR_UPDATE_SNAPSHOT: the snapshot the leader sent (whose data the node
     * holds) becomes the node's snapshot: restore the state machine from it
     * and discard the whole persisted log before writing `entries`. */
    struct cr_snapshot_meta snapshot;

    /* Messages to send now, in any order. */
    unsigned n_messages;
    const struct cr_message *messages;

    /* Newly committed entries, to apply in order. */
    cr_index committed_first;
    unsigned n_committed;
    const struct cr_entry *committed;

    unsigned n_reads;
    const struct cr_read_result *reads;

    /* Soft state, always filled; CR_UPDATE_STATE tells it changed. */
    enum cr_role role;
    cr_term term;
    cr_id leader;

    /* Results of CR_EVENT_PROPOSE and CR_EVENT_CHANGE: the index and term
     * of the first appended entry. The command committed iff the entry
     * committed at that index has that term. */
    cr_index index;
    cr_term index_term;

    /* Step again (CR_EVENT_TICK) no later than this time. */
    cr_msec deadline;
};

/* ---------------------------------------------------------------------------
 * Options and tracing
 * ------------------------------------------------------------------------- */

struct cr_options
{
    cr_msec election_timeout;   /* minimum; randomized in [t, 2t) */
    cr_msec heartbeat_interval; /* < election_timeout */
    bool pre_vote;              /* §9.6, default on */
    bool check_quorum;          /* §6.2 leader steps down; default on */
    unsigned max_inflight_msgs; /* per follower, pipelined appends */
    size_t max_inflight_bytes;  /* per follower */
    unsigned max_batch_entries; /* entries per AppendEntries */
    size_t max_batch_bytes;     /* payload bytes per AppendEntries */
    cr_msec snapshot_timeout;   /* re-send a snapshot after this long */
    /* How long an idle follower may go without hearing a new commit index
     * (0: at once). A busy follower learns it from the next append; only
     * an idle one needs a message of its own (hashicorp/raft's
     * CommitTimeout). */
    cr_msec commit_timeout;
};

/* Fills the defaults: election 1000 ms, heartbeat 100 ms, pre-vote and
 * check-quorum on, 64 messages / 8 MiB in flight, 1024 entries / 1 MiB per
 * message, snapshot timeout 10 x election timeout, commit timeout 10 ms. */
void cr_options_default(struct cr_options *o);

struct cr_core;

/* Trace points let the node log what the core decided and why. */
struct cr_trace
{
    const char *event;  /* "became_leader", "vote_granted", ... */
    const char *reason; /* why, for refusals; may be NULL */
    cr_id peer;         /* 0 when not about a peer */
    cr_term term;
    cr_index index;
};

struct cr_tracer
{
    void *data;
    void (*emit)(void *data,
                 const struct cr_core *core,
                 const struct cr_trace *t);
};

/* ---------------------------------------------------------------------------
 * The core
 * ------------------------------------------------------------------------- */

/* Leader's view of one follower (dissertation §10.2.1 pipelining, and
 * etcd-io/raft's probe / replicate / snapshot states). */
enum cr_progress_state {
    CR_PROBE = 1, /* one append at a time until the match point is found */
    CR_PIPELINE,  /* appends sent optimistically, up to the caps */
    CR_SNAPSHOT,  /* a snapshot is being sent */
};

#define CR__INFLIGHT_MAX 128

struct cr__progress
{
    cr_id id;
    enum cr_progress_state state;
    cr_index match;
    cr_index next;
    bool paused;             /* PROBE: an append is outstanding */
    cr_msec last_heard;      /* last answer in our term (§6.2) */
    bool removed;            /* being removed: served until it knows */
    uint64_t final_seq;      /* removed: seq of an append telling it so */
    uint64_t acked_seq;      /* highest append seq it answered (§6.4) */
    cr_index snapshot_index; /* SNAPSHOT: index being sent */
    cr_msec snapshot_sent;
    cr_msec last_send;
    cr_index commit_sent;        /* highest commit index sent to it */
    cr_index match_at_heartbeat; /* loss detection in PIPELINE */
    bool inflight_at_heartbeat;
    /* In-flight appends in PIPELINE: last index and bytes of each. */
    unsigned inflight_head, inflight_count;
    size_t inflight_bytes;
    cr_index inflight_last[CR__INFLIGHT_MAX];
    size_t inflight_size[CR__INFLIGHT_MAX];
    /* Catch-up rounds of a joining learner (§4.2.1). */
    cr_index round_index;
    cr_msec round_start;
    unsigned rounds;
};

/* Messages held until a write is durable. */
struct cr__held
{
    uint64_t seq;
    struct cr_message message;
};

struct cr__pending_read
{
    uint64_t id;
    cr_id from; /* 0: local; else the follower that asked */
    cr_index index;
    uint64_t seq; /* confirmed when a quorum acked >= seq */
};

/* All fields are private to the core; read them through the accessors. */
struct cr_core
{
    cr_id id;
    uint64_t cluster_id;
    struct cr_options opt;
    const struct cr_alloc *alloc;
    struct cr_tracer tracer;
    uint64_t rng;
    cr_msec now;

    /* Persistent state. */
    cr_term term;
    cr_id vote;
    cr_index commit;

    /* The in-memory log: entries[i] has index offset + 1 + i; the entry at
     * `offset` (compacted or in the snapshot) has term offset_term. */
    struct cr_entry *entries;
    unsigned n_entries, cap_entries;
    cr_index offset;
    cr_term offset_term;
    struct cr_snapshot_meta snapshot;
    bool has_snapshot;

    /* Configuration: the latest in the log, in force from when it is
     * appended (§4.1). */
    struct cr_config config;
    cr_index config_index;

    enum cr_role role;
    cr_id leader;
    cr_msec election_deadline;
    cr_msec last_leader_contact; /* for the lease check of §4.2.3 */
    bool heard_leader;
    bool transferring_election; /* our election came from TimeoutNow */

    /* Candidate. */
    bool votes[CR_SERVERS_MAX];
    uint64_t self_vote_seq; /* our own vote counts once durable */

    /* Leader. */
    struct cr__progress progress[CR_SERVERS_MAX];
    unsigned n_progress;
    cr_msec heartbeat_deadline;
    cr_msec commit_notify_deadline; /* 0: no idle follower is behind */
    cr_id transfer_target;
    cr_msec transfer_deadline;
    uint64_t append_seq;
    struct cr__pending_read *reads_pending;
    unsigned n_reads_pending, cap_reads_pending;
    uint64_t read_round_seq; /* the heartbeat round confirming reads */

    /* Durability. */
    uint64_t persist_seq;   /* last seq handed out */
    uint64_t durable_seq;   /* last seq reported durable */
    cr_index durable_index; /* log durable and matching up to here */
    uint64_t trunc_seq;     /* last update that truncated the log ... */
    cr_index trunc_index;   /* ... down to this index */
    struct cr__held *held;
    unsigned n_held, cap_held;

    /* The update being built. */
    bool dirty_hard_state;
    bool dirty_snapshot;
    cr_index dirty_from;  /* lowest changed log index, 0 if none */
    cr_index applied_out; /* last committed index handed out */
    struct cr_message *out;
    unsigned n_out, cap_out;
    struct cr_read_result *reads_out;
    unsigned n_reads_out, cap_reads_out;
    bool oom; /* an allocation failed in this step */
    enum cr_role prev_role;
    cr_term prev_term;
    cr_id prev_leader;
    bool config_changed;
};

/* Initializes a core for server `id` of cluster `cluster_id`, with an empty
 * log at term 0. `options` may be NULL for the defaults, `alloc` NULL for
 * cr_alloc_default. Then call cr_core_bootstrap (a new cluster's first
 * servers), cr_core_load (a restart), or nothing (a server that will join
 * and learn everything from the leader). */
int cr_core_init(struct cr_core *c,
                 cr_id id,
                 uint64_t cluster_id,
                 const struct cr_options *options,
                 const struct cr_alloc *alloc,
                 uint64_t seed,
                 cr_msec now);

/* Frees everything the core holds. NULL is a no-op. */
void cr_core_close(struct cr_core *c);

void cr_core_set_tracer(struct cr_core *c, const struct cr_tracer *t);

/* Makes the first log entry (index 1, term 1) the configuration `config`
 * and commits it. Every server of a new cluster bootstraps with the same
 * configuration. Only on a fresh core; the update holds the writes. */
int cr_core_bootstrap(struct cr_core *c,
                      const struct cr_config *config,
                      struct cr_update *out);

/* Restores what a previous run persisted: hard state, the newest snapshot
 * (NULL if none) and the entries from index `first` on, which must be
 * contiguous with first <= snapshot index + 1. Entries that overlap the
 * snapshot but do not reach its last entry, or disagree with it, are
 * discarded (a crash can make a snapshot durable before the truncation of
 * a stale tail). The core takes a reference on each entry's batch (or
 * copies borrowed bytes). CR_ECORRUPT if the pieces cannot fit together
 * (a gap, decreasing terms, a malformed configuration entry). */
int cr_core_load(struct cr_core *c,
                 const struct cr_hard_state *hs,
                 const struct cr_snapshot_meta *snapshot,
                 cr_index first,
                 const struct cr_entry *entries,
                 unsigned n);

/* Handles one event. Returns 0, or an error about the event (CR_ENOTLEADER
 * for a proposal on a follower, CR_ECLUSTER for a foreign message, ...). On
 * CR_ENOMEM an allocation failed: a message may have been dropped (which
 * Raft tolerates) or a proposal refused. Whatever the return value, `out`
 * describes what the core did and must be carried out. */
int cr_core_step(struct cr_core *c,
                 const struct cr_event *ev,
                 struct cr_update *out);

/* Accessors. */
enum cr_role cr_core_role(const struct cr_core *c);
cr_term cr_core_term(const struct cr_core *c);
cr_id cr_core_vote(const struct cr_core *c);
cr_id cr_core_leader(const struct cr_core *c);
cr_index cr_core_commit(const struct cr_core *c);
cr_index cr_core_last_index(const struct cr_core *c);
cr_term cr_core_last_term(const struct cr_core *c);
cr_index cr_core_first_index(const struct cr_core *c);
/* Term of the entry at index, 0 if unknown (compacted or beyond the log). */
cr_term cr_core_term_at(const struct cr_core *c, cr_index index);
/* The entry at index, or NULL when it is not in memory. */
const struct cr_entry *cr_core_entry(const struct cr_core *c, cr_index index);
const struct cr_config *cr_core_config(const struct cr_core *c);
/* The configuration in force as of `index` (for a snapshot's header);
 * CR_ENOTFOUND if the log does not reach back that far. */
int cr_core_config_at(const struct cr_core *c,
                      cr_index index,
                      struct cr_config *out,
                      cr_index *config_index);
cr_index cr_core_config_index(const struct cr_core *c);
const struct cr_snapshot_meta *cr_core_snapshot(const struct cr_core *c);
/* Leader only: the match index of a server, 0 if unknown. */
cr_index cr_core_match(const struct cr_core *c, cr_id id);
/* Leader only: how the leader replicates to a server ("probe",
 * "pipeline", "snapshot"), or "" if it does not. */
const char *cr_core_progress(const struct cr_core *c, cr_id id);
cr_id cr_core_transfer_target(const struct cr_core *c);
const char *cr_role_name(enum cr_role role);

#endif /* CRAFT_CORE_H */
