/* craft transport: raft.RaftService over the gRPC C core, driven from a
 * libuv loop.
 *
 * The transport is the only module that sees grpc.h and protobuf-c types.
 * Towards the node it speaks the core's struct cr_message (between
 * servers) and the plain structs below (clients). One thread blocks in
 * grpc_completion_queue_next and hands each completion to the loop thread
 * (a mutex-protected list and uv_async_send); every callback below runs on
 * the loop thread, and every function is called from it.
 *
 * Between servers, each core request becomes a unary call (an InstallSnapshot
 * a client-streaming one) with a deadline; its answer comes back as the
 * core's answer message through on_message. An incoming request is handed
 * to on_message with `context` set; the core's answer (carrying the same
 * context) given to cr_transport_send completes that call. A request the
 * core never answers ends when its caller gives up (its deadline).
 *
 * Bad input (a malformed message, a negative index, an id of 0, a term
 * going backwards in a list of entries, a message too large) is answered
 * with INVALID_ARGUMENT and a message and counted; a message from another
 * cluster with FAILED_PRECONDITION. Nothing the network sends can crash the
 * node. */
#ifndef CRAFT_TRANSPORT_H
#define CRAFT_TRANSPORT_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "craft/app.h"
#include "craft/core.h"

struct cr_transport;

/* ---------------------------------------------------------------------------
 * Client calls, as the node sees them
 * ------------------------------------------------------------------------- */

enum cr_client_kind {
    CR_CLIENT_OPERATION = 1, /* SubmitOperation, ForwardToLeader, KV RPCs */
    CR_CLIENT_ADD,           /* Add */
    CR_CLIENT_READ,          /* Read (and GET, TOTAL through operations) */
    CR_CLIENT_JOIN,          /* JoinCluster */
    CR_CLIENT_REMOVE,        /* RemoveNode */
    CR_CLIENT_TRANSFER,      /* TransferLeadership */
    CR_CLIENT_STATUS,        /* GetStatus */
};

/* How an operation ended (mirrors raft.OpStatus). */
enum cr_op_status {
    CR_OPS_OK = 0,
    CR_OPS_NOT_LEADER = 1,  /* definitely not applied; see the hint */
    CR_OPS_UNAVAILABLE = 2, /* definitely not applied; no leader known */
    CR_OPS_UNKNOWN = 3,     /* may have been applied; retry to learn */
    CR_OPS_INVALID = 4,     /* definitely not applied; malformed */
    CR_OPS_REFUSED = 5,     /* definitely not applied; try later */
};

struct cr_client_request
{
    enum cr_client_kind kind;
    /* OPERATION, ADD: the command (strings point into the request, valid
     * until the call is answered); forwarded: do not forward again. */
    struct cr_command command;
    bool forwarded;
    bool text_form; /* came as SubmitOperation/ForwardToLeader text */
    /* JOIN, REMOVE, TRANSFER. */
    cr_id node_id;
    char address[CR_ADDRESS_MAX];
    bool voter;
    uint64_t cluster_id;
};

struct cr_peer_status
{
    cr_id id;
    cr_index match;
    const char *state;
};

struct cr_client_reply
{
    enum cr_op_status status;
    const char *error; /* NULL if none */
    cr_id leader;
    const char *leader_address;
    /* Operations. */
    struct cr_result result;
    bool found;        /* reads: the key exists */
    const char *value; /* reads: borrowed until the reply is sent */
    size_t value_len;
    cr_index index;
    bool at_most_once;
    /* Join, remove, status. */
    const struct cr_config *config;
    cr_index config_index;
    uint64_t cluster_id;
    cr_term term;
    cr_index commit, applied, last_index, snapshot_index;
    const char *role;
    cr_id node_id;
    int64_t total;
    uint64_t digest;
    const struct cr_peer_status *peers;
    unsigned n_peers;
};

struct cr_client_call;

/* Answers a client call, once, and frees it. */
void cr_client_reply(struct cr_client_call *call,
                     const struct cr_client_reply *reply);
const struct cr_client_request *cr_client_request(
    const struct cr_client_call *call);
/* Milliseconds until the caller's deadline (a large number if none). */
int64_t cr_client_time_left(const struct cr_client_call *call);

/* ---------------------------------------------------------------------------
 * The transport
 * ------------------------------------------------------------------------- */

struct cr_transport_handlers
{
    void *data;
    /* A message from a peer: an incoming request (its answer, given to
     * cr_transport_send, completes the call), or the answer to one of ours.
     * For INSTALL_SNAPSHOT the data is stored first (see
     * cr_transport_config.data_dir) and the message carries its meta. */
    void (*on_message)(void *data, const struct cr_message *m);
    /* A call to a peer failed (unreachable, deadline): the core should
     * probe it again. `why` says what happened, for the log. */
    void (*on_unreachable)(void *data, cr_id peer, const char *why);
    /* A client call; answer with cr_client_reply, now or later. */
    void (*on_client)(void *data, struct cr_client_call *call);
    /* The path of the snapshot file to stream to a follower for `meta`;
     * NULL if there is none (the core then retries later). */
    const char *(*snapshot_path)(void *data,
                                 const struct cr_snapshot_meta *meta);
};

struct cr_transport_config
{
    cr_id id;
    uint64_t cluster_id;
    const char *listen; /* host:port */
    /* Where received snapshots are written before the core hears of them. */
    const char *data_dir;
    unsigned rpc_timeout_ms;  /* deadline of every call to a peer */
    size_t max_message_bytes; /* largest message accepted or sent */
    size_t snapshot_chunk_bytes;
    /* Mutual TLS, all three or none (PEM file paths). */
    const char *tls_cert, *tls_key, *tls_ca;
};

void cr_transport_config_default(struct cr_transport_config *c);

/* Starts the server (binds `listen`; errmsg says why it could not) and
 * the completion-queue thread. `loop` must outlive the transport. */
int cr_transport_open(struct cr_transport **out,
                      uv_loop_t *loop,
                      const struct cr_transport_config *config,
                      const struct cr_transport_handlers *h,
                      char *errmsg);

/* The port the server listens on (useful with port 0). */
int cr_transport_port(const struct cr_transport *t);

/* Tells the transport where peer `id` listens (from the configuration);
 * a changed address reconnects. */
void cr_transport_set_peer(struct cr_transport *t,
                           cr_id id,
                           const char *address);

/* Sends a core message: a request becomes a call to m->to; an answer
 * completes the incoming call it answers. Errors are reported through
 * on_unreachable, never here. */
void cr_transport_send(struct cr_transport *t, const struct cr_message *m);

/* Client calls the node makes itself: forwarding an operation to the
 * leader, and asking a server to let this one join. The callback runs on
 * the loop thread with the reply (status CR_OPS_UNAVAILABLE with an error
 * when the call failed). */
typedef void (*cr_client_done_fn)(void *data,
                                  const struct cr_client_reply *reply);
void cr_transport_forward(struct cr_transport *t,
                          const char *address,
                          const struct cr_client_request *req,
                          unsigned timeout_ms,
                          cr_client_done_fn done,
                          void *data);

/* Counters: calls in and out, bad input refused, bytes. */
struct cr_transport_stats
{
    uint64_t calls_in, calls_out, calls_failed, bad_input, foreign_cluster;
    uint64_t bytes_in, bytes_out;
};
void cr_transport_stats(const struct cr_transport *t,
                        struct cr_transport_stats *out);

/* Stops accepting calls, cancels what is in flight, joins the thread and
 * frees everything; the loop must run until `done` is called. */
void cr_transport_close(struct cr_transport *t,
                        void (*done)(void *data),
                        void *data);

#endif /* CRAFT_TRANSPORT_H */
