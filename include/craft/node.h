/* craftd's node: the libuv loop that owns the core and carries out its
 * updates with the storage, the transport and the state machine.
 *
 * - Time: every event is stepped at uv_now(); a timer fires at the core's
 *   deadline.
 * - Persistence: updates go to the storage's writer thread; its done
 *   callback wakes the loop (uv_async), which steps CR_EVENT_PERSISTED.
 *   The core holds every vote and acknowledgement until then; the leader
 *   sends entries at once (dissertation §10.2.1).
 * - Client operations: the leader proposes them and answers once they
 *   commit and are applied; a follower forwards them to the leader, or
 *   answers "no leader" with a hint. A retry (same client id and sequence)
 *   is answered from the replicated session table (§6.3). Reads go through
 *   ReadIndex (§6.4), on followers too.
 * - Membership: JoinCluster adds a learner that the leader promotes once
 *   caught up; RemoveNode; TransferLeadership. A node started with a join
 *   address asks to join until it is a member.
 * - Snapshots: taken in the background every `snapshot_every` applied
 *   entries, streamed to followers too far behind, restored on start.
 * - Faults: a full disk refuses client writes (OP_REFUSED) until space
 *   returns; a failed fsync stops the node with a message (its page cache
 *   can no longer be trusted). */
#ifndef CRAFT_NODE_H
#define CRAFT_NODE_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "craft/core.h"

#define CR_NODE_PEERS_MAX 15
#define CR_NODE_ROUTES_MAX 32

struct cr_node_peer
{
    cr_id id;
    char address[CR_ADDRESS_MAX];
};

struct cr_node_config
{
    cr_id id;
    uint64_t cluster_id;         /* 0: derived from the initial voters' ids */
    char listen[CR_ADDRESS_MAX]; /* where to listen */
    char advertise[CR_ADDRESS_MAX]; /* where peers reach us */
    char data_dir[1024];
    struct cr_node_peer peers[CR_NODE_PEERS_MAX];
    unsigned n_peers;
    /* Where to dial a server, whatever address the configuration records
     * for it (a fault-injecting proxy, a NAT): peer calls and forwarded
     * client calls go there; leader hints still name the recorded one. */
    struct cr_node_peer routes[CR_NODE_ROUTES_MAX];
    unsigned n_routes;
    char join[CR_ADDRESS_MAX]; /* ask this server to let us join */
    unsigned election_timeout_ms;
    unsigned heartbeat_ms;
    unsigned rpc_timeout_ms;
    uint64_t snapshot_every;    /* applied entries between snapshots */
    uint64_t snapshot_trailing; /* entries kept before a snapshot */
    size_t segment_size;
    bool log_json;
    int log_level; /* enum cr_log_level */
    const char *tls_cert, *tls_key, *tls_ca;
};

void cr_node_config_default(struct cr_node_config *c);

struct cr_node;

/* Opens the data directory (recovering what it holds), bootstraps a new
 * cluster or prepares to join one, and starts serving. On failure errmsg
 * (512 bytes) says why and what to do. */
int cr_node_start(struct cr_node **out,
                  uv_loop_t *loop,
                  const struct cr_node_config *c,
                  char *errmsg);

/* Stops gracefully: refuses new requests, answers those in flight, makes
 * every write durable, closes everything. `done` runs on the loop with 0,
 * or CR_EIO if the storage had failed. */
void cr_node_stop(struct cr_node *n,
                  void (*done)(void *data, int status),
                  void *data);

#endif /* CRAFT_NODE_H */
