/* A small synchronous client of raft.RaftService over the gRPC C core, for
 * craftctl and craft-bench.
 *
 * Two layers:
 *
 * - Calls: one call of one client method to one endpoint, with a deadline,
 *   answering the unpacked response or the gRPC status and its details
 *   (cr_cli_add() ... cr_cli_get_status(), and cr_cli_call_start() /
 *   cr_cli_call_end() for callers that run their own completion queue).
 *
 * - Operations: cr_cli_run() carries one client operation to the cluster.
 *   It starts at the endpoint that led last, follows the leader hint of an
 *   OP_NOT_LEADER answer, moves to the next endpoint when one is
 *   unreachable or does not answer in time, and backs off while no leader
 *   is known. A write carries this client's client_id and a new sequence;
 *   every retry of it carries the same pair, so the servers apply it at
 *   most once (dissertation §6.3). It ends within the configured time.
 *
 * Unlike the rest of craft, this module shows protobuf-c types: the callers
 * are tools that print every field of the answers.
 *
 * Everything here is single-threaded: one struct cr_cli per thread. */
#ifndef CRAFT_CLI_CLIENT_H
#define CRAFT_CLI_CLIENT_H

#include <stdbool.h>
#include <stdint.h>

#include <grpc/grpc.h>

#include "grpc_call.h"
#include "raft.pb-c.h"

#define CR_CLI_ENDPOINTS_MAX 16 /* given ones plus addresses from hints */
#define CR_CLI_ADDRESS_MAX 128
#define CR_CLI_DETAILS_MAX 256
#define CR_CLI_WHY_MAX 512

/* The client methods of raft.RaftService. */
enum cr_cli_method {
    CR_CLI_ADD = 0,
    CR_CLI_SUBMIT_OPERATION,
    CR_CLI_PUT,
    CR_CLI_GET,
    CR_CLI_CAS,
    CR_CLI_INCREMENT,
    CR_CLI_DELETE,
    CR_CLI_READ,
    CR_CLI_JOIN_CLUSTER,
    CR_CLI_REMOVE_NODE,
    CR_CLI_TRANSFER_LEADERSHIP,
    CR_CLI_GET_STATUS,
    CR_CLI_METHOD_COUNT
};

struct cr_cli_method_info
{
    const char *path; /* "/raft.RaftService/Add" */
    const char *name; /* "Add" */
    const ProtobufCMessageDescriptor *request;
    const ProtobufCMessageDescriptor *response;
    /* Changes the cluster's state: an attempt that may have reached the
     * leader has an unknown outcome until a later attempt tells. */
    bool write;
};

extern const struct cr_cli_method_info cr_cli_methods[CR_CLI_METHOD_COUNT];

struct cr_cli_endpoint
{
    char address[CR_CLI_ADDRESS_MAX]; /* host:port */
    grpc_channel *channel;
    void *handles[CR_CLI_METHOD_COUNT]; /* grpc_channel_register_call */
};

struct cr_cli_options
{
    unsigned timeout_ms;   /* whole operation, retries included (10000) */
    unsigned attempt_ms;   /* one attempt (3000, at most timeout_ms) */
    unsigned max_attempts; /* (50) */
};

/* A client. The caller allocates it; cr_cli_init() fills it. */
struct cr_cli
{
    struct cr_cli_endpoint endpoints[CR_CLI_ENDPOINTS_MAX];
    unsigned n_endpoints;
    unsigned n_given;          /* the first n_given came from the caller */
    unsigned leader;           /* the endpoint that led last (a guess) */
    grpc_completion_queue *cq; /* for pluck, serves the synchronous calls */
    struct cr_cli_options opt;
    /* Exactly-once: random, 63 bits, never 0; the sequence of the last
     * write (each cr_cli_run() of a write takes the next one). */
    uint64_t client_id;
    uint64_t sequence;
};

/* The gRPC outcome of one call. */
struct cr_cli_rpc_status
{
    grpc_status_code code;
    char details[CR_CLI_DETAILS_MAX];
};

/* One call in flight. The caller allocates it; cr_cli_call_end() frees
 * what it holds. */
struct cr_cli_call
{
    enum cr_cli_method method;
    grpc_call *call;
    grpc_byte_buffer *send;
    struct cr_grpc_reply reply;
};

void cr_cli_options_default(struct cr_cli_options *o);

/* Initialises gRPC (once per process; cr_cli_close() balances it) and
 * opens a channel to each endpoint of `endpoints`, a comma-separated list
 * of host:port. The channels connect on first use. Returns 0, or -1 with
 * errmsg (CR_CLI_WHY_MAX bytes) naming the bad endpoint. o may be NULL
 * (the defaults). */
int cr_cli_init(struct cr_cli *c,
                const char *endpoints,
                const struct cr_cli_options *o,
                char *errmsg);
/* Closes the channels and the queue. c may be NULL. */
void cr_cli_close(struct cr_cli *c);

/* The index of the endpoint with this address, added if it is new and
 * there is room; -1 if there is none. */
int cr_cli_endpoint(struct cr_cli *c, const char *address);

/* ---------------------------------------------------------------------------
 * Calls
 * ------------------------------------------------------------------------- */

/* Starts `m` with `req` on endpoint `ep`, deadline timeout_ms from now,
 * on completion queue cq with tag `tag`. Returns 0, or -1 (nothing
 * started, no event comes; st says why). */
int cr_cli_call_start(struct cr_cli *c,
                      unsigned ep,
                      enum cr_cli_method m,
                      const ProtobufCMessage *req,
                      unsigned timeout_ms,
                      grpc_completion_queue *cq,
                      void *tag,
                      struct cr_cli_call *call,
                      struct cr_cli_rpc_status *st);
/* Ends a call whose event came (ok as in the event). Returns 0 with
 * *resp (free it with cr_cli_free()), or -1 with st->code != OK (or
 * INTERNAL for a reply that does not unpack), *resp NULL. Frees
 * everything the call held. */
int cr_cli_call_end(struct cr_cli_call *call,
                    bool ok,
                    ProtobufCMessage **resp,
                    struct cr_cli_rpc_status *st);

/* One synchronous call: start, wait, end. */
int cr_cli_call(struct cr_cli *c,
                unsigned ep,
                enum cr_cli_method m,
                const ProtobufCMessage *req,
                unsigned timeout_ms,
                ProtobufCMessage **resp,
                struct cr_cli_rpc_status *st);

void cr_cli_free(ProtobufCMessage *msg);

/* The typed calls, one per client method: 0 with *resp, or -1 with st. */
int cr_cli_add(struct cr_cli *c,
               unsigned ep,
               const Raft__AddRequest *req,
               unsigned timeout_ms,
               Raft__AddResponse **resp,
               struct cr_cli_rpc_status *st);
int cr_cli_submit_operation(struct cr_cli *c,
                            unsigned ep,
                            const Raft__OperationRequest *req,
                            unsigned timeout_ms,
                            Raft__OperationResponse **resp,
                            struct cr_cli_rpc_status *st);
int cr_cli_put(struct cr_cli *c,
               unsigned ep,
               const Raft__KeyValueRequest *req,
               unsigned timeout_ms,
               Raft__OperationResponse **resp,
               struct cr_cli_rpc_status *st);
int cr_cli_get(struct cr_cli *c,
               unsigned ep,
               const Raft__KeyValueRequest *req,
               unsigned timeout_ms,
               Raft__OperationResponse **resp,
               struct cr_cli_rpc_status *st);
int cr_cli_compare_and_swap(struct cr_cli *c,
                            unsigned ep,
                            const Raft__KeyValueRequest *req,
                            unsigned timeout_ms,
                            Raft__OperationResponse **resp,
                            struct cr_cli_rpc_status *st);
int cr_cli_increment(struct cr_cli *c,
                     unsigned ep,
                     const Raft__KeyValueRequest *req,
                     unsigned timeout_ms,
                     Raft__OperationResponse **resp,
                     struct cr_cli_rpc_status *st);
int cr_cli_delete(struct cr_cli *c,
                  unsigned ep,
                  const Raft__KeyValueRequest *req,
                  unsigned timeout_ms,
                  Raft__OperationResponse **resp,
                  struct cr_cli_rpc_status *st);
int cr_cli_read(struct cr_cli *c,
                unsigned ep,
                const Raft__ReadRequest *req,
                unsigned timeout_ms,
                Raft__ReadResponse **resp,
                struct cr_cli_rpc_status *st);
int cr_cli_join_cluster(struct cr_cli *c,
                        unsigned ep,
                        const Raft__JoinRequest *req,
                        unsigned timeout_ms,
                        Raft__JoinResponse **resp,
                        struct cr_cli_rpc_status *st);
int cr_cli_remove_node(struct cr_cli *c,
                       unsigned ep,
                       const Raft__RemoveRequest *req,
                       unsigned timeout_ms,
                       Raft__RemoveResponse **resp,
                       struct cr_cli_rpc_status *st);
int cr_cli_transfer_leadership(struct cr_cli *c,
                               unsigned ep,
                               const Raft__TransferRequest *req,
                               unsigned timeout_ms,
                               Raft__TransferResponse **resp,
                               struct cr_cli_rpc_status *st);
int cr_cli_get_status(struct cr_cli *c,
                      unsigned ep,
                      unsigned timeout_ms,
                      Raft__StatusResponse **resp,
                      struct cr_cli_rpc_status *st);

/* GetStatus of the first n_given endpoints at once. resp[i] is the answer
 * of endpoint i (free each with cr_cli_free()) or NULL with st[i]. Both
 * arrays have n_given elements. */
void cr_cli_status_all(struct cr_cli *c,
                       unsigned timeout_ms,
                       Raft__StatusResponse **resp,
                       struct cr_cli_rpc_status *st);

/* Whether a failed call certainly never reached the server: gRPC could
 * not connect. Any other failure may come after the server took it. */
bool cr_cli_never_sent(const struct cr_cli_rpc_status *st);

/* ---------------------------------------------------------------------------
 * Operations
 * ------------------------------------------------------------------------- */

enum cr_cli_outcome {
    CR_CLI_OK = 0,
    /* Definitely not applied: the request is invalid, or every attempt
     * was refused or failed before it could reach a leader. */
    CR_CLI_FAILED,
    /* An attempt may have been applied and none told whether it was. */
    CR_CLI_UNKNOWN,
};

/* What an answer says, whatever its method. */
struct cr_cli_answer
{
    Raft__OpStatus status; /* OP_OK for StatusResponse */
    bool success;
    int32_t leader_id;          /* 0: not known */
    const char *leader_address; /* "" : not known; borrowed */
    const char *error;          /* "" : none; borrowed */
};

/* Reads the fields that every client answer has in some form. */
void cr_cli_answer_of(enum cr_cli_method m,
                      const ProtobufCMessage *resp,
                      struct cr_cli_answer *out);

struct cr_cli_result
{
    enum cr_cli_outcome outcome;
    /* The answer of the last attempt that got one (NULL: none did); with
     * CR_CLI_OK, the answer that succeeded. Free with
     * cr_cli_result_free(). */
    ProtobufCMessage *resp;
    unsigned endpoint; /* that answered resp */
    unsigned attempts;
    uint64_t client_id, sequence; /* that a write carried (0: none) */
    char why[CR_CLI_WHY_MAX];     /* for people, when not CR_CLI_OK */
};

/* Carries out `m` with `req` (its client_id and sequence, if it has them,
 * are set here; forwarded is cleared). Returns the outcome, also in
 * out->outcome. A CR_CLI_OK outcome means the servers answered OP_OK; the
 * state machine's own verdict (ADD's overflow, INCR of a text) is in the
 * answer's success and error. */
enum cr_cli_outcome cr_cli_run(struct cr_cli *c,
                               enum cr_cli_method m,
                               ProtobufCMessage *req,
                               struct cr_cli_result *out);
void cr_cli_result_free(struct cr_cli_result *r);

const char *cr_cli_op_status_name(Raft__OpStatus s);
const char *cr_cli_grpc_code_name(grpc_status_code code);

/* Time, for callers that measure. */
uint64_t cr_cli_now_ns(void);

#endif
