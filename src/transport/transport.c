/* The transport: the gRPC server, the channels to peers, and the calls.
 * See include/craft/transport.h. Everything here runs on the loop thread
 * (callbacks come through grpc_loop.c). */

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/log.h>

#include "craft/storage.h"
#include "grpc_call.h"
#include "grpc_loop.h"
#include "transport_impl.h"

#define ARMED 8      /* requests kept armed per method */
#define BUCKETS 1024 /* of the map of calls awaiting a core answer */

const struct cr__method_info cr__methods[CR__M_COUNT] = {
    [CR__M_REQUEST_VOTE] = {"/raft.RaftService/RequestVote",
                            &raft__request_vote_request__descriptor,
                            &raft__request_vote_response__descriptor, false,
                            true},
    [CR__M_APPEND_ENTRIES] = {"/raft.RaftService/AppendEntries",
                              &raft__append_entries_request__descriptor,
                              &raft__append_entries_response__descriptor, false,
                              true},
    [CR__M_SUBMIT_OPERATION] = {"/raft.RaftService/SubmitOperation",
                                &raft__operation_request__descriptor,
                                &raft__operation_response__descriptor, false,
                                false},
    [CR__M_FORWARD_TO_LEADER] = {"/raft.RaftService/ForwardToLeader",
                                 &raft__operation_request__descriptor,
                                 &raft__operation_response__descriptor, false,
                                 false},
    [CR__M_ADD] = {"/raft.RaftService/Add", &raft__add_request__descriptor,
                   &raft__add_response__descriptor, false, false},
    [CR__M_JOIN_CLUSTER] = {"/raft.RaftService/JoinCluster",
                            &raft__join_request__descriptor,
                            &raft__join_response__descriptor, false, false},
    [CR__M_GET_STATUS] = {"/raft.RaftService/GetStatus",
                          &raft__status_request__descriptor,
                          &raft__status_response__descriptor, false, false},
    [CR__M_INSTALL_SNAPSHOT] = {"/raft.RaftService/InstallSnapshot",
                                &raft__install_snapshot_chunk__descriptor,
                                &raft__install_snapshot_response__descriptor,
                                true, true},
    [CR__M_TIMEOUT_NOW] = {"/raft.RaftService/TimeoutNow",
                           &raft__timeout_now_request__descriptor,
                           &raft__timeout_now_response__descriptor, false,
                           true},
    [CR__M_READ_INDEX] = {"/raft.RaftService/ReadIndex",
                          &raft__read_index_request__descriptor,
                          &raft__read_index_response__descriptor, false, true},
    [CR__M_REMOVE_NODE] = {"/raft.RaftService/RemoveNode",
                           &raft__remove_request__descriptor,
                           &raft__remove_response__descriptor, false, false},
    [CR__M_TRANSFER_LEADERSHIP] = {"/raft.RaftService/TransferLeadership",
                                   &raft__transfer_request__descriptor,
                                   &raft__transfer_response__descriptor, false,
                                   false},
    [CR__M_READ] = {"/raft.RaftService/Read", &raft__read_request__descriptor,
                    &raft__read_response__descriptor, false, false},
    [CR__M_PUT] = {"/raft.RaftService/Put",
                   &raft__key_value_request__descriptor,
                   &raft__operation_response__descriptor, false, false},
    [CR__M_GET] = {"/raft.RaftService/Get",
                   &raft__key_value_request__descriptor,
                   &raft__operation_response__descriptor, false, false},
    [CR__M_CAS] = {"/raft.RaftService/CompareAndSwap",
                   &raft__key_value_request__descriptor,
                   &raft__operation_response__descriptor, false, false},
    [CR__M_INCREMENT] = {"/raft.RaftService/Increment",
                         &raft__key_value_request__descriptor,
                         &raft__operation_response__descriptor, false, false},
    [CR__M_DELETE] = {"/raft.RaftService/Delete",
                      &raft__key_value_request__descriptor,
                      &raft__operation_response__descriptor, false, false},
};

/* ---------------------------------------------------------------------------
 * Structures
 * ------------------------------------------------------------------------- */

struct chan
{
    char address[CR_ADDRESS_MAX];
    grpc_channel *ch;
    void *handles[CR__M_COUNT];
};

struct peer
{
    cr_id id;
    struct chan *chan;
    bool streaming; /* a snapshot is on its way to it */
};

struct srv_slot
{
    struct cr_grpc_op op;
    struct cr_transport *t;
    enum cr__method m;
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_byte_buffer *payload;
};

struct in_call;

struct cr_client_call
{
    struct in_call *ic;
    struct cr_client_request req;
};

struct in_call
{
    struct cr_grpc_op close_op, send_op, recv_op;
    struct cr_transport *t;
    enum cr__method m;
    grpc_call *call;
    gpr_timespec deadline;
    int cancelled;
    unsigned pending; /* batches in flight on this call */
    bool replied;
    bool node_owns;   /* a client call the node has not answered yet */
    uint64_t context; /* awaiting a core answer (0: not) */
    uint64_t read_id;
    struct in_call *map_next;
    struct in_call *all_prev, *all_next;
    ProtobufCMessage *req;
    grpc_byte_buffer *send_buf;
    grpc_byte_buffer *recv_buf;
    grpc_slice details;
    struct cr_client_call client;
    /* InstallSnapshot, receiving. */
    struct cr_snapshot_writer *sw;
    struct cr_snapshot_meta meta;
    cr_term term;
    cr_id leader;
    uint64_t received;
    uint32_t crc;
    bool got_first;
};

struct out_call
{
    struct cr_grpc_op op;
    struct cr_transport *t;
    enum cr__method m;
    cr_id peer;
    grpc_call *call;
    grpc_byte_buffer *send;
    struct cr_grpc_reply reply;
    struct out_call *prev, *next;
    /* Forwarded client calls. */
    cr_client_done_fn done;
    void *data;
    /* InstallSnapshot, sending. */
    struct cr_snapshot_reader *reader;
    struct cr_snapshot_meta meta;
    cr_term term;
    uint64_t offset, size;
    uint32_t total_crc;
    bool finishing;
    uint8_t *chunk;
};

struct cr_transport
{
    uv_loop_t *loop;
    struct cr_grpc_loop gl;
    struct cr_transport_config cfg;
    char listen[CR_ADDRESS_MAX];
    char data_dir[CR_PATH_MAX];
    struct cr_transport_handlers h;
    grpc_server *server;
    grpc_channel_credentials *creds;
    int port;
    void *methods[CR__M_COUNT];
    struct peer *peers;
    unsigned n_peers, cap_peers;
    struct chan **fwd; /* channels by address, for forwarding */
    unsigned n_fwd, cap_fwd;
    struct in_call *map[BUCKETS];
    struct in_call *all;
    struct out_call *outs;
    uint64_t next_context;
    unsigned outstanding; /* gRPC batches in flight */
    bool closing;
    struct cr_grpc_op shutdown_op;
    void (*close_done)(void *data);
    void *close_data;
    struct cr_transport_stats stats;
};

/* ---------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------- */

static gpr_timespec deadline_in(unsigned ms)
{
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                        gpr_time_from_millis((int64_t)ms, GPR_TIMESPAN));
}

static void copy_str(char *dst, size_t cap, const char *src)
{
    size_t n = src == NULL ? 0 : strlen(src);
    if (n >= cap) {
        n = cap - 1;
    }
    if (n > 0) {
        memcpy(dst, src, n);
    }
    dst[n] = '\0';
}

static void finish_close(struct cr_transport *t);

static void op_done(struct cr_transport *t)
{
    t->outstanding--;
    if (t->closing && t->outstanding == 0) {
        finish_close(t);
    }
}

static grpc_channel_args *channel_args(const struct cr_transport *t,
                                       bool server,
                                       grpc_arg *args,
                                       grpc_channel_args *out)
{
    int n = 0;
    /* GRPC-C-CORE.md: reconnect backoff tuned so that a restarted peer
     * is reached again within an election timeout; DNS re-resolution for
     * a peer that comes back on a new address; keepalive to notice a peer
     * that hangs with its connection open. */
    cr_grpc_common_args(args, &n, (int)t->cfg.max_message_bytes, server);
    if (!server) {
        cr_grpc_arg_int(args, &n, GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
        cr_grpc_arg_int(args, &n, GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
        cr_grpc_arg_int(args, &n, GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
        cr_grpc_arg_int(args, &n, GRPC_ARG_DNS_MIN_TIME_BETWEEN_RESOLUTIONS_MS,
                        500);
        cr_grpc_arg_int(args, &n, GRPC_ARG_KEEPALIVE_TIME_MS, 2000);
        cr_grpc_arg_int(args, &n, GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 2000);
    }
    out->num_args = (size_t)n;
    out->args = args;
    return out;
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    long n;
    if (f == NULL) {
        return NULL;
    }
    if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || n > (1 << 20) ||
        fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return NULL;
    }
    buf = malloc((size_t)n + 1);
    if (buf != NULL && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    if (buf != NULL) {
        buf[n] = '\0';
    }
    fclose(f);
    return buf;
}

static struct chan *chan_new(struct cr_transport *t, const char *address)
{
    struct chan *c = calloc(1, sizeof *c);
    grpc_arg args[16];
    grpc_channel_args ca;
    if (c == NULL) {
        return NULL;
    }
    copy_str(c->address, sizeof c->address, address);
    c->ch = grpc_channel_create(address, t->creds,
                                channel_args(t, false, args, &ca));
    if (c->ch == NULL) {
        free(c);
        return NULL;
    }
    for (unsigned m = 0; m < CR__M_COUNT; m++) {
        c->handles[m] =
            grpc_channel_register_call(c->ch, cr__methods[m].path, NULL, NULL);
    }
    return c;
}

static void chan_free(struct chan *c)
{
    if (c != NULL) {
        grpc_channel_destroy(c->ch);
        free(c);
    }
}

static struct peer *peer_get(struct cr_transport *t, cr_id id)
{
    for (unsigned i = 0; i < t->n_peers; i++) {
        if (t->peers[i].id == id) {
            return &t->peers[i];
        }
    }
    return NULL;
}

/* ---------------------------------------------------------------------------
 * The map of incoming calls awaiting a core answer
 * ------------------------------------------------------------------------- */

static void map_put(struct cr_transport *t, struct in_call *ic)
{
    unsigned b = (unsigned)(ic->context % BUCKETS);
    ic->map_next = t->map[b];
    t->map[b] = ic;
}

static struct in_call *map_take(struct cr_transport *t, uint64_t context)
{
    struct in_call **p = &t->map[context % BUCKETS];
    while (*p != NULL) {
        if ((*p)->context == context) {
            struct in_call *ic = *p;
            *p = ic->map_next;
            ic->context = 0;
            return ic;
        }
        p = &(*p)->map_next;
    }
    return NULL;
}

/* ---------------------------------------------------------------------------
 * Incoming calls
 * ------------------------------------------------------------------------- */

static void ic_maybe_free(struct in_call *ic)
{
    struct cr_transport *t = ic->t;
    if (ic->pending > 0 || ic->node_owns) {
        return;
    }
    if (!ic->replied && !ic->cancelled && !t->closing && ic->context != 0) {
        return; /* still waiting for the core's answer */
    }
    if (ic->context != 0) {
        (void)map_take(t, ic->context);
    }
    if (ic->all_prev != NULL) {
        ic->all_prev->all_next = ic->all_next;
    } else {
        t->all = ic->all_next;
    }
    if (ic->all_next != NULL) {
        ic->all_next->all_prev = ic->all_prev;
    }
    if (ic->req != NULL) {
        protobuf_c_message_free_unpacked(ic->req, NULL);
    }
    if (ic->send_buf != NULL) {
        grpc_byte_buffer_destroy(ic->send_buf);
    }
    if (ic->recv_buf != NULL) {
        grpc_byte_buffer_destroy(ic->recv_buf);
    }
    if (ic->sw != NULL) {
        cr_snapshot_writer_abort(ic->sw);
    }
    grpc_slice_unref(ic->details);
    grpc_call_unref(ic->call);
    free(ic);
}

static void on_ic_sent(struct cr_grpc_op *op, bool ok)
{
    struct in_call *ic =
        (struct in_call *)((char *)op - offsetof(struct in_call, send_op));
    struct cr_transport *t = ic->t;
    (void)ok;
    ic->pending--;
    ic_maybe_free(ic);
    op_done(t);
}

static void on_ic_closed(struct cr_grpc_op *op, bool ok)
{
    struct in_call *ic =
        (struct in_call *)((char *)op - offsetof(struct in_call, close_op));
    struct cr_transport *t = ic->t;
    (void)ok;
    ic->pending--;
    if (ic->cancelled && !ic->replied && ic->context != 0) {
        /* The caller gave up: a late core answer finds nothing. */
        (void)map_take(t, ic->context);
    }
    ic_maybe_free(ic);
    op_done(t);
}

/* Sends the reply (a message, or none with an error status) once. */
static void ic_reply(struct in_call *ic,
                     grpc_status_code code,
                     const char *details,
                     grpc_byte_buffer *msg)
{
    struct cr_transport *t = ic->t;
    grpc_op ops[3];
    size_t n = 0;
    if (ic->replied) {
        if (msg != NULL) {
            grpc_byte_buffer_destroy(msg);
        }
        return;
    }
    ic->replied = true;
    memset(ops, 0, sizeof ops);
    ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
    n++;
    if (msg != NULL && code == GRPC_STATUS_OK) {
        ic->send_buf = msg;
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n].data.send_message.send_message = msg;
        n++;
        t->stats.bytes_out += grpc_byte_buffer_length(msg);
    } else if (msg != NULL) {
        grpc_byte_buffer_destroy(msg);
    }
    ic->details = grpc_slice_from_copied_string(details != NULL ? details : "");
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = code;
    ops[n].data.send_status_from_server.status_details =
        details != NULL ? &ic->details : NULL;
    n++;
    ic->send_op.cb = on_ic_sent;
    if (grpc_call_start_batch(ic->call, ops, n, &ic->send_op, NULL) ==
        GRPC_CALL_OK) {
        ic->pending++;
        t->outstanding++;
    }
}

static void ic_bad(struct in_call *ic, grpc_status_code code, const char *why)
{
    struct cr_transport *t = ic->t;
    if (code == GRPC_STATUS_FAILED_PRECONDITION) {
        t->stats.foreign_cluster++;
    } else {
        t->stats.bad_input++;
    }
    ic_reply(ic, code, why, NULL);
}

static void ic_reply_pb(struct in_call *ic, const ProtobufCMessage *msg)
{
    ic_reply(ic, GRPC_STATUS_OK, NULL, cr_grpc_pack(msg));
}

/* ---------------------------------------------------------------------------
 * Client calls: requests
 * ------------------------------------------------------------------------- */

static void client_dispatch(struct in_call *ic)
{
    struct cr_transport *t = ic->t;
    struct cr_client_request *req = &ic->client.req;
    char err[128];
    memset(req, 0, sizeof *req);
    ic->client.ic = ic;
    switch (ic->m) {
        case CR__M_SUBMIT_OPERATION:
        case CR__M_FORWARD_TO_LEADER: {
            const Raft__OperationRequest *r = (const void *)ic->req;
            if (r->client_id < 0) {
                ic_bad(ic, GRPC_STATUS_INVALID_ARGUMENT,
                       "client_id must not be negative");
                return;
            }
            if (cr_command_parse(r->operation, &req->command, err) != 0) {
                Raft__OperationResponse resp;
                raft__operation_response__init(&resp);
                resp.success = false;
                resp.status = RAFT__OP_STATUS__OP_INVALID;
                resp.error = err;
                resp.result = err;
                t->stats.bad_input++;
                ic_reply_pb(ic, &resp.base);
                return;
            }
            req->kind =
                req->command.op == CR_OP_GET || req->command.op == CR_OP_TOTAL
                    ? CR_CLIENT_READ
                    : CR_CLIENT_OPERATION;
            req->command.client_id = (uint64_t)r->client_id;
            req->command.sequence = r->sequence;
            req->forwarded = r->forwarded || ic->m == CR__M_FORWARD_TO_LEADER;
            req->text_form = true;
            break;
        }
        case CR__M_ADD: {
            const Raft__AddRequest *r = (const void *)ic->req;
            req->kind = CR_CLIENT_ADD;
            req->command.op = CR_OP_ADD;
            req->command.a = r->num1;
            req->command.b = r->num2;
            req->command.client_id = r->client_id;
            req->command.sequence = r->sequence;
            req->forwarded = r->forwarded;
            break;
        }
        case CR__M_PUT:
        case CR__M_GET:
        case CR__M_CAS:
        case CR__M_INCREMENT:
        case CR__M_DELETE: {
            const Raft__KeyValueRequest *r = (const void *)ic->req;
            size_t kl = strlen(r->key);
            if (kl == 0 || kl > CR_APP_KEY_MAX ||
                strlen(r->value) > CR_APP_VALUE_MAX ||
                strlen(r->expected) > CR_APP_VALUE_MAX) {
                ic_bad(ic, GRPC_STATUS_INVALID_ARGUMENT,
                       "a key must have 1 to 1024 bytes, a value at most "
                       "65536");
                return;
            }
            req->kind =
                ic->m == CR__M_GET ? CR_CLIENT_READ : CR_CLIENT_OPERATION;
            req->command.op = ic->m == CR__M_PUT         ? CR_OP_PUT
                              : ic->m == CR__M_GET       ? CR_OP_GET
                              : ic->m == CR__M_CAS       ? CR_OP_CAS
                              : ic->m == CR__M_INCREMENT ? CR_OP_INCR
                                                         : CR_OP_DEL;
            req->command.key = r->key;
            req->command.key_len = kl;
            req->command.value = r->value;
            req->command.value_len = strlen(r->value);
            req->command.expected = r->expected;
            req->command.expected_len = strlen(r->expected);
            req->command.a = r->delta;
            req->command.client_id = r->client_id;
            req->command.sequence = r->sequence;
            req->forwarded = r->forwarded;
            break;
        }
        case CR__M_READ: {
            const Raft__ReadRequest *r = (const void *)ic->req;
            req->kind = CR_CLIENT_READ;
            req->command.op = r->key[0] == '\0' ? CR_OP_TOTAL : CR_OP_GET;
            req->command.key = r->key;
            req->command.key_len = strlen(r->key);
            break;
        }
        case CR__M_JOIN_CLUSTER: {
            const Raft__JoinRequest *r = (const void *)ic->req;
            if (r->node_id <= 0 || r->address[0] == '\0' ||
                strlen(r->address) >= CR_ADDRESS_MAX) {
                ic_bad(ic, GRPC_STATUS_INVALID_ARGUMENT,
                       "node_id must be positive and address a host:port "
                       "of at most 127 bytes");
                return;
            }
            req->kind = CR_CLIENT_JOIN;
            req->node_id = (cr_id)r->node_id;
            copy_str(req->address, sizeof req->address, r->address);
            /* The original JoinRequest has no voter field: joining means
             * becoming a voter unless a craft client asks otherwise. */
            req->voter = true;
            req->cluster_id = r->cluster_id;
            req->forwarded = r->forwarded;
            break;
        }
        case CR__M_REMOVE_NODE: {
            const Raft__RemoveRequest *r = (const void *)ic->req;
            if (r->node_id <= 0) {
                ic_bad(ic, GRPC_STATUS_INVALID_ARGUMENT,
                       "node_id must be positive");
                return;
            }
            req->kind = CR_CLIENT_REMOVE;
            req->node_id = (cr_id)r->node_id;
            req->forwarded = r->forwarded;
            break;
        }
        case CR__M_TRANSFER_LEADERSHIP: {
            const Raft__TransferRequest *r = (const void *)ic->req;
            if (r->node_id < 0) {
                ic_bad(ic, GRPC_STATUS_INVALID_ARGUMENT,
                       "node_id must not be negative");
                return;
            }
            req->kind = CR_CLIENT_TRANSFER;
            req->node_id = (cr_id)r->node_id;
            req->forwarded = r->forwarded;
            break;
        }
        case CR__M_GET_STATUS:
            req->kind = CR_CLIENT_STATUS;
            break;
        default:
            ic_bad(ic, GRPC_STATUS_UNIMPLEMENTED, "not a client method");
            return;
    }
    ic->node_owns = true;
    t->h.on_client(t->h.data, &ic->client);
}

const struct cr_client_request *cr_client_request(
    const struct cr_client_call *call)
{
    return &call->req;
}

int64_t cr_client_time_left(const struct cr_client_call *call)
{
    gpr_timespec left = gpr_time_sub(
        gpr_convert_clock_type(call->ic->deadline, GPR_CLOCK_MONOTONIC),
        gpr_now(GPR_CLOCK_MONOTONIC));
    if (left.tv_sec > 1000000) {
        return INT64_MAX / 4;
    }
    return left.tv_sec * 1000 + left.tv_nsec / 1000000;
}

/* ---------------------------------------------------------------------------
 * Client calls: replies
 * ------------------------------------------------------------------------- */

static Raft__OpStatus op_status(enum cr_op_status s)
{
    return (Raft__OpStatus)s;
}

void cr_client_reply(struct cr_client_call *call,
                     const struct cr_client_reply *r)
{
    struct in_call *ic = call->ic;
    const struct cr_client_request *req = &call->req;
    struct cr__pb_config cfg;
    char text[64];
    bool ok = r->status == CR_OPS_OK;
    ic->node_owns = false;
    if (r->config != NULL) {
        cr__config_to_pb(r->config, r->config_index, r->config_index, &cfg);
    }
    switch (ic->m) {
        case CR__M_SUBMIT_OPERATION:
        case CR__M_FORWARD_TO_LEADER:
        case CR__M_PUT:
        case CR__M_GET:
        case CR__M_CAS:
        case CR__M_INCREMENT:
        case CR__M_DELETE: {
            Raft__OperationResponse resp;
            raft__operation_response__init(&resp);
            resp.success = ok && r->result.status == CR_RESULT_OK;
            if (req->kind == CR_CLIENT_READ) {
                if (req->command.op == CR_OP_TOTAL) {
                    snprintf(text, sizeof text, "%" PRId64, r->total);
                    resp.result = text;
                } else {
                    resp.result = ok && r->found ? (char *)(uintptr_t)r->value
                                                 : (char *)"";
                }
            } else {
                resp.result = (char *)(uintptr_t)r->result.text;
            }
            resp.leader_id = (int32_t)r->leader;
            resp.status = op_status(r->status);
            resp.leader_address = (char *)(uintptr_t)(r->leader_address != NULL
                                                          ? r->leader_address
                                                          : "");
            resp.error =
                (char *)(uintptr_t)(r->error != NULL ? r->error
                                    : ok && req->kind != CR_CLIENT_READ &&
                                            r->result.status != CR_RESULT_OK
                                        ? r->result.text
                                        : "");
            if (!ok && r->error != NULL) {
                resp.result = (char *)(uintptr_t)r->error;
            }
            resp.index = (int64_t)r->index;
            resp.at_most_once = r->at_most_once;
            ic_reply_pb(ic, &resp.base);
            break;
        }
        case CR__M_ADD: {
            Raft__AddResponse resp;
            raft__add_response__init(&resp);
            resp.success = ok && r->result.status == CR_RESULT_OK;
            resp.sum = r->result.number;
            resp.error =
                (char *)(uintptr_t)(r->error != NULL ? r->error
                                    : ok && r->result.status != CR_RESULT_OK
                                        ? r->result.text
                                        : "");
            resp.status = op_status(r->status);
            resp.leader_id = (int32_t)r->leader;
            resp.leader_address = (char *)(uintptr_t)(r->leader_address != NULL
                                                          ? r->leader_address
                                                          : "");
            resp.total = r->result.total;
            resp.index = (int64_t)r->index;
            resp.at_most_once = r->at_most_once;
            ic_reply_pb(ic, &resp.base);
            break;
        }
        case CR__M_READ: {
            Raft__ReadResponse resp;
            raft__read_response__init(&resp);
            resp.success = ok;
            if (req->command.op == CR_OP_TOTAL) {
                snprintf(text, sizeof text, "%" PRId64, r->total);
                resp.value = text;
                resp.found = ok;
            } else {
                resp.value =
                    ok && r->found ? (char *)(uintptr_t)r->value : (char *)"";
                resp.found = ok && r->found;
            }
            resp.status = op_status(r->status);
            resp.leader_id = (int32_t)r->leader;
            resp.leader_address = (char *)(uintptr_t)(r->leader_address != NULL
                                                          ? r->leader_address
                                                          : "");
            resp.error = (char *)(uintptr_t)(r->error != NULL ? r->error : "");
            resp.index = (int64_t)r->index;
            ic_reply_pb(ic, &resp.base);
            break;
        }
        case CR__M_JOIN_CLUSTER: {
            Raft__JoinResponse resp;
            raft__join_response__init(&resp);
            resp.success = ok;
            resp.error = (char *)(uintptr_t)(r->error != NULL ? r->error : "");
            resp.cluster_config = r->config != NULL ? &cfg.pb : NULL;
            resp.current_term = (int64_t)r->term;
            resp.log_index = (int64_t)r->last_index;
            resp.current_leader = (int32_t)r->leader;
            resp.cluster_id = r->cluster_id;
            resp.status = op_status(r->status);
            resp.leader_address = (char *)(uintptr_t)(r->leader_address != NULL
                                                          ? r->leader_address
                                                          : "");
            ic_reply_pb(ic, &resp.base);
            break;
        }
        case CR__M_REMOVE_NODE: {
            Raft__RemoveResponse resp;
            raft__remove_response__init(&resp);
            resp.success = ok;
            resp.error = (char *)(uintptr_t)(r->error != NULL ? r->error : "");
            resp.status = op_status(r->status);
            resp.leader_id = (int32_t)r->leader;
            resp.leader_address = (char *)(uintptr_t)(r->leader_address != NULL
                                                          ? r->leader_address
                                                          : "");
            resp.cluster_config = r->config != NULL ? &cfg.pb : NULL;
            ic_reply_pb(ic, &resp.base);
            break;
        }
        case CR__M_TRANSFER_LEADERSHIP: {
            Raft__TransferResponse resp;
            raft__transfer_response__init(&resp);
            resp.success = ok;
            resp.status = op_status(r->status);
            resp.error = (char *)(uintptr_t)(r->error != NULL ? r->error : "");
            resp.leader_id = (int32_t)r->leader;
            resp.leader_address = (char *)(uintptr_t)(r->leader_address != NULL
                                                          ? r->leader_address
                                                          : "");
            ic_reply_pb(ic, &resp.base);
            break;
        }
        case CR__M_GET_STATUS: {
            Raft__StatusResponse resp;
            Raft__TransportCounters counters;
            Raft__PeerProgress pp[CR_SERVERS_MAX];
            Raft__PeerProgress *ppp[CR_SERVERS_MAX];
            int32_t ids[CR_SERVERS_MAX];
            char digest[24];
            unsigned n_ids = 0;
            raft__status_response__init(&resp);
            resp.current_term = (int64_t)r->term;
            resp.state = (char *)(uintptr_t)(r->role != NULL ? r->role : "");
            resp.current_leader = (int32_t)r->leader;
            resp.log_size = (int64_t)r->last_index;
            resp.commit_index = (int64_t)r->commit;
            if (r->config != NULL) {
                for (unsigned i = 0; i < r->config->n; i++) {
                    if (r->config->servers[i].id != r->node_id) {
                        ids[n_ids++] = (int32_t)r->config->servers[i].id;
                    }
                }
                resp.config = &cfg.pb;
            }
            resp.peer_ids = ids;
            resp.n_peer_ids = n_ids;
            resp.node_id = (int32_t)r->node_id;
            resp.leader_address = (char *)(uintptr_t)(r->leader_address != NULL
                                                          ? r->leader_address
                                                          : "");
            resp.applied_index = (int64_t)r->applied;
            resp.last_log_index = (int64_t)r->last_index;
            resp.snapshot_index = (int64_t)r->snapshot_index;
            for (unsigned i = 0; i < r->n_peers && i < CR_SERVERS_MAX; i++) {
                raft__peer_progress__init(&pp[i]);
                pp[i].id = (int32_t)r->peers[i].id;
                pp[i].match_index = (int64_t)r->peers[i].match;
                pp[i].state = (char *)(uintptr_t)r->peers[i].state;
                ppp[i] = &pp[i];
            }
            resp.peers = ppp;
            resp.n_peers = r->n_peers;
            resp.cluster_id = r->cluster_id;
            resp.total = r->total;
            snprintf(digest, sizeof digest, "%016" PRIx64, r->digest);
            resp.state_digest = digest;
            raft__transport_counters__init(&counters);
            counters.calls_in = ic->t->stats.calls_in;
            counters.calls_out = ic->t->stats.calls_out;
            counters.calls_failed = ic->t->stats.calls_failed;
            counters.bad_input = ic->t->stats.bad_input;
            counters.foreign_cluster = ic->t->stats.foreign_cluster;
            counters.bytes_in = ic->t->stats.bytes_in;
            counters.bytes_out = ic->t->stats.bytes_out;
            resp.counters = &counters;
            ic_reply_pb(ic, &resp.base);
            break;
        }
        default:
            ic_reply(ic, GRPC_STATUS_INTERNAL, "no reply", NULL);
            break;
    }
    ic_maybe_free(ic);
}

/* ---------------------------------------------------------------------------
 * Peer calls, incoming
 * ------------------------------------------------------------------------- */

static void peer_dispatch(struct in_call *ic)
{
    struct cr_transport *t = ic->t;
    struct cr_message m;
    struct cr_entry *entries = NULL;
    const char *why = "";
    int rv =
        cr__peer_from_pb(ic->m, ic->req, t->cfg.cluster_id, &m, &entries, &why);
    if (rv == CR_ECLUSTER) {
        ic_bad(ic, GRPC_STATUS_FAILED_PRECONDITION,
               "the request comes from another cluster");
        return;
    }
    if (rv != 0) {
        ic_bad(ic, GRPC_STATUS_INVALID_ARGUMENT, why);
        return;
    }
    m.to = t->cfg.id;
    if (ic->m == CR__M_TIMEOUT_NOW) {
        Raft__TimeoutNowResponse resp;
        raft__timeout_now_response__init(&resp);
        resp.term = (int64_t)m.term;
        ic_reply_pb(ic, &resp.base);
    } else {
        ic->context = ++t->next_context;
        if (ic->m == CR__M_READ_INDEX) {
            ic->read_id = m.read_index.id;
            m.read_index.id = ic->context;
        }
        m.context = ic->context;
        map_put(t, ic);
    }
    t->h.on_message(t->h.data, &m);
    free(entries);
}

/* An answer of the core to a call we received. */
static void answer_call(struct cr_transport *t, const struct cr_message *m)
{
    uint64_t context = m->type == CR_MSG_READ_INDEX_RESULT
                           ? m->read_index_result.id
                           : m->context;
    struct in_call *ic = context != 0 ? map_take(t, context) : NULL;
    grpc_byte_buffer *bb;
    if (ic == NULL) {
        return; /* the caller gave up, or not ours */
    }
    if (ic->m == CR__M_INSTALL_SNAPSHOT) {
        Raft__InstallSnapshotResponse resp;
        raft__install_snapshot_response__init(&resp);
        resp.term = (int64_t)m->term;
        resp.success = m->append_entries_result.success;
        resp.cluster_id = t->cfg.cluster_id;
        resp.follower_id = (int32_t)t->cfg.id;
        resp.index = (int64_t)m->append_entries_result.index;
        bb = cr_grpc_pack(&resp.base);
    } else if (m->type == CR_MSG_READ_INDEX_RESULT) {
        struct cr_message copy = *m;
        copy.read_index_result.id = ic->read_id;
        bb = cr__peer_to_pb(&copy, t->cfg.id, t->cfg.cluster_id, t->listen);
    } else {
        bb = cr__peer_to_pb(m, t->cfg.id, t->cfg.cluster_id, t->listen);
    }
    if (bb == NULL) {
        ic_reply(ic, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory", NULL);
    } else {
        ic_reply(ic, GRPC_STATUS_OK, NULL, bb);
    }
    ic_maybe_free(ic);
}

/* InstallSnapshot, receiving: chunk after chunk into a snapshot file. */
static void snap_recv_next(struct in_call *ic);

static void snap_recv_fail(struct in_call *ic,
                           grpc_status_code code,
                           const char *why)
{
    if (ic->sw != NULL) {
        cr_snapshot_writer_abort(ic->sw);
        ic->sw = NULL;
    }
    ic_bad(ic, code, why);
}

static void on_snap_recv(struct cr_grpc_op *op, bool ok)
{
    struct in_call *ic =
        (struct in_call *)((char *)op - offsetof(struct in_call, recv_op));
    struct cr_transport *t = ic->t;
    Raft__InstallSnapshotChunk *c;
    char errmsg[CR_ERRMSG_SIZE];
    ic->pending--;
    op_done(t);
    if (!ok || ic->recv_buf == NULL || t->closing) {
        snap_recv_fail(ic, GRPC_STATUS_CANCELLED,
                       "the stream ended before its last chunk");
        ic_maybe_free(ic);
        return;
    }
    t->stats.bytes_in += grpc_byte_buffer_length(ic->recv_buf);
    c = (Raft__InstallSnapshotChunk *)cr_grpc_unpack(
        &raft__install_snapshot_chunk__descriptor, ic->recv_buf,
        t->cfg.max_message_bytes);
    grpc_byte_buffer_destroy(ic->recv_buf);
    ic->recv_buf = NULL;
    if (c == NULL) {
        snap_recv_fail(ic, GRPC_STATUS_INVALID_ARGUMENT, "malformed chunk");
        ic_maybe_free(ic);
        return;
    }
    if (!ic->got_first) {
        const char *why = "";
        ic->got_first = true;
        memset(&ic->meta, 0, sizeof ic->meta);
        if (c->term < 0 || c->leader_id <= 0 || c->last_index <= 0 ||
            c->last_term <= 0 || c->config == NULL ||
            cr__config_from_pb(c->config, &ic->meta.config, &why) != 0 ||
            c->config->index < 0 || c->config->index > c->last_index) {
            protobuf_c_message_free_unpacked(&c->base, NULL);
            snap_recv_fail(ic, GRPC_STATUS_INVALID_ARGUMENT,
                           "a snapshot needs a positive index, term, leader "
                           "and a valid configuration");
            ic_maybe_free(ic);
            return;
        }
        if (c->cluster_id != 0 && t->cfg.cluster_id != 0 &&
            c->cluster_id != t->cfg.cluster_id) {
            protobuf_c_message_free_unpacked(&c->base, NULL);
            snap_recv_fail(ic, GRPC_STATUS_FAILED_PRECONDITION,
                           "the snapshot comes from another cluster");
            ic_maybe_free(ic);
            return;
        }
        ic->meta.index = (cr_index)c->last_index;
        ic->meta.term = (cr_term)c->last_term;
        ic->meta.config_index = (cr_index)c->config->index;
        ic->term = (cr_term)c->term;
        ic->leader = (cr_id)c->leader_id;
        if (cr_snapshot_writer_open(&ic->sw, t->data_dir, NULL, &ic->meta,
                                    errmsg) != 0) {
            protobuf_c_message_free_unpacked(&c->base, NULL);
            snap_recv_fail(ic, GRPC_STATUS_UNAVAILABLE, errmsg);
            ic_maybe_free(ic);
            return;
        }
    }
    if (c->offset != ic->received ||
        cr_crc32c(0, c->data.data, c->data.len) != c->crc32c) {
        protobuf_c_message_free_unpacked(&c->base, NULL);
        snap_recv_fail(ic, GRPC_STATUS_INVALID_ARGUMENT,
                       "a chunk out of order or failing its checksum");
        ic_maybe_free(ic);
        return;
    }
    if (c->data.len > 0 &&
        cr_snapshot_writer_write(ic->sw, c->data.data, c->data.len) != 0) {
        protobuf_c_message_free_unpacked(&c->base, NULL);
        snap_recv_fail(ic, GRPC_STATUS_UNAVAILABLE,
                       "the snapshot cannot be written");
        ic_maybe_free(ic);
        return;
    }
    ic->received += c->data.len;
    ic->crc = cr_crc32c(ic->crc, c->data.data, c->data.len);
    if (!c->done) {
        protobuf_c_message_free_unpacked(&c->base, NULL);
        snap_recv_next(ic);
        return;
    }
    if (c->total_size != ic->received || c->total_crc32c != ic->crc) {
        protobuf_c_message_free_unpacked(&c->base, NULL);
        snap_recv_fail(ic, GRPC_STATUS_INVALID_ARGUMENT,
                       "the snapshot's size or checksum does not match");
        ic_maybe_free(ic);
        return;
    }
    protobuf_c_message_free_unpacked(&c->base, NULL);
    {
        struct cr_snapshot_writer *sw = ic->sw;
        struct cr_message m;
        ic->sw = NULL;
        if (cr_snapshot_writer_commit(sw, 2, NULL) != 0) {
            ic_bad(ic, GRPC_STATUS_UNAVAILABLE,
                   "the snapshot cannot be stored");
            ic_maybe_free(ic);
            return;
        }
        memset(&m, 0, sizeof m);
        m.type = CR_MSG_INSTALL_SNAPSHOT;
        m.from = ic->leader;
        m.to = t->cfg.id;
        m.term = ic->term;
        m.cluster_id = t->cfg.cluster_id;
        m.install_snapshot.meta = &ic->meta;
        ic->context = ++t->next_context;
        m.context = ic->context;
        map_put(t, ic);
        t->h.on_message(t->h.data, &m);
    }
}

static void snap_recv_next(struct in_call *ic)
{
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &ic->recv_buf;
    ic->recv_op.cb = on_snap_recv;
    if (grpc_call_start_batch(ic->call, &op, 1, &ic->recv_op, NULL) ==
        GRPC_CALL_OK) {
        ic->pending++;
        ic->t->outstanding++;
    }
}

/* ---------------------------------------------------------------------------
 * The server
 * ------------------------------------------------------------------------- */

static void slot_arm(struct srv_slot *s);

static void on_new_call(struct cr_grpc_op *op, bool ok)
{
    struct srv_slot *s = (struct srv_slot *)op;
    struct cr_transport *t = s->t;
    struct in_call *ic;
    grpc_op close;
    if (!ok || t->closing) {
        if (ok && s->call != NULL) {
            grpc_call_unref(s->call);
        }
        if (s->payload != NULL) {
            grpc_byte_buffer_destroy(s->payload);
        }
        grpc_metadata_array_destroy(&s->md);
        free(s);
        op_done(t);
        return;
    }
    ic = calloc(1, sizeof *ic);
    t->stats.calls_in++;
    if (ic == NULL) {
        grpc_call_cancel_with_status(s->call, GRPC_STATUS_RESOURCE_EXHAUSTED,
                                     "out of memory", NULL);
        grpc_call_unref(s->call);
    } else {
        ic->t = t;
        ic->m = s->m;
        ic->call = s->call;
        ic->deadline = s->deadline;
        ic->details = grpc_empty_slice();
        ic->all_next = t->all;
        if (t->all != NULL) {
            t->all->all_prev = ic;
        }
        t->all = ic;
    }
    {
        grpc_byte_buffer *payload = s->payload;
        s->payload = NULL;
        s->call = NULL;
        grpc_metadata_array_destroy(&s->md);
        grpc_metadata_array_init(&s->md);
        t->outstanding--;
        slot_arm(s);
        if (ic == NULL) {
            if (payload != NULL) {
                grpc_byte_buffer_destroy(payload);
            }
            return;
        }
        /* Learn when the caller gives up. */
        memset(&close, 0, sizeof close);
        close.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
        close.data.recv_close_on_server.cancelled = &ic->cancelled;
        ic->close_op.cb = on_ic_closed;
        if (grpc_call_start_batch(ic->call, &close, 1, &ic->close_op, NULL) ==
            GRPC_CALL_OK) {
            ic->pending++;
            t->outstanding++;
        }
        if (cr__methods[ic->m].streaming) {
            snap_recv_next(ic);
            return;
        }
        if (payload != NULL) {
            t->stats.bytes_in += grpc_byte_buffer_length(payload);
        }
        ic->req = cr_grpc_unpack(cr__methods[ic->m].request, payload,
                                 t->cfg.max_message_bytes);
        if (payload != NULL) {
            grpc_byte_buffer_destroy(payload);
        }
    }
    if (ic->req == NULL) {
        ic_bad(ic, GRPC_STATUS_INVALID_ARGUMENT,
               "the message is malformed or too large");
        ic_maybe_free(ic);
        return;
    }
    if (cr__methods[ic->m].peer) {
        peer_dispatch(ic);
    } else {
        client_dispatch(ic);
    }
    ic_maybe_free(ic);
}

static void slot_arm(struct srv_slot *s)
{
    struct cr_transport *t = s->t;
    grpc_call_error e;
    if (t->closing) {
        grpc_metadata_array_destroy(&s->md);
        free(s);
        return;
    }
    s->op.cb = on_new_call;
    e = grpc_server_request_registered_call(
        t->server, t->methods[s->m], &s->call, &s->deadline, &s->md,
        cr__methods[s->m].streaming ? NULL : &s->payload, t->gl.cq, t->gl.cq,
        &s->op);
    if (e != GRPC_CALL_OK) {
        grpc_metadata_array_destroy(&s->md);
        free(s);
        return;
    }
    t->outstanding++;
}

/* ---------------------------------------------------------------------------
 * Outgoing calls
 * ------------------------------------------------------------------------- */

static void out_free(struct out_call *o)
{
    struct cr_transport *t = o->t;
    if (o->prev != NULL) {
        o->prev->next = o->next;
    } else if (t->outs == o) {
        t->outs = o->next;
    }
    if (o->next != NULL) {
        o->next->prev = o->prev;
    }
    cr_grpc_reply_destroy(&o->reply);
    if (o->send != NULL) {
        grpc_byte_buffer_destroy(o->send);
    }
    if (o->call != NULL) {
        grpc_call_unref(o->call);
    }
    if (o->reader != NULL) {
        cr_snapshot_reader_close(o->reader);
    }
    free(o->chunk);
    free(o);
}

static struct out_call *out_new(struct cr_transport *t,
                                struct chan *c,
                                enum cr__method m,
                                unsigned timeout_ms)
{
    struct out_call *o = calloc(1, sizeof *o);
    if (o == NULL) {
        return NULL;
    }
    o->t = t;
    o->m = m;
    cr_grpc_reply_init(&o->reply);
    o->call = grpc_channel_create_registered_call(
        c->ch, NULL, GRPC_PROPAGATE_DEFAULTS, t->gl.cq, c->handles[m],
        deadline_in(timeout_ms), NULL);
    if (o->call == NULL) {
        cr_grpc_reply_destroy(&o->reply);
        free(o);
        return NULL;
    }
    o->next = t->outs;
    if (t->outs != NULL) {
        t->outs->prev = o;
    }
    t->outs = o;
    t->stats.calls_out++;
    return o;
}

static void on_out_done(struct cr_grpc_op *op, bool ok);

/* Why a call to a peer failed, for the log: its status and details. */
static void call_failure(struct out_call *o, bool ok, char *why, size_t size)
{
    char *d = grpc_slice_to_c_string(o->reply.details);
    if (!ok) {
        snprintf(why, size, "the call did not complete");
    } else if (o->reply.status != GRPC_STATUS_OK) {
        const char *name =
            o->reply.status == GRPC_STATUS_UNAVAILABLE ? "UNAVAILABLE"
            : o->reply.status == GRPC_STATUS_DEADLINE_EXCEEDED
                ? "DEADLINE_EXCEEDED"
            : o->reply.status == GRPC_STATUS_CANCELLED ? "CANCELLED"
                                                       : "status";
        snprintf(why, size, "%s (%d): %s", name, (int)o->reply.status,
                 d != NULL ? d : "");
    } else {
        snprintf(why, size, "an answer that could not be decoded");
    }
    gpr_free(d);
}

/* A unary call: one batch with everything. */
static bool out_start(struct out_call *o)
{
    grpc_op ops[6];
    size_t n = cr_grpc_unary_ops(o->send, &o->reply, ops);
    o->op.cb = on_out_done;
    o->t->stats.bytes_out += grpc_byte_buffer_length(o->send);
    if (grpc_call_start_batch(o->call, ops, n, &o->op, NULL) != GRPC_CALL_OK) {
        return false;
    }
    o->t->outstanding++;
    return true;
}

static void on_out_done(struct cr_grpc_op *op, bool ok)
{
    struct out_call *o = (struct out_call *)op;
    struct cr_transport *t = o->t;
    ProtobufCMessage *resp = NULL;
    if (ok && o->reply.status == GRPC_STATUS_OK && o->reply.recv != NULL) {
        t->stats.bytes_in += grpc_byte_buffer_length(o->reply.recv);
        resp = cr_grpc_unpack(cr__methods[o->m].response, o->reply.recv,
                              t->cfg.max_message_bytes);
    }
    if (o->done != NULL) {
        /* A forwarded client call: hand the reply over as it is. */
        struct cr_client_reply r;
        char err[160];
        memset(&r, 0, sizeof r);
        if (resp == NULL) {
            char *d = grpc_slice_to_c_string(o->reply.details);
            /* A call that found no connection to the leader was never
             * sent: a definite failure. Anything else (a deadline, a
             * connection lost mid-call) may have been applied there. */
            bool never_sent =
                o->reply.status == GRPC_STATUS_UNAVAILABLE &&
                o->reply.md_init.count == 0 && d != NULL &&
                (strstr(d, "onnect") != NULL || strstr(d, "DNS") != NULL);
            snprintf(err, sizeof err, "forwarding to the leader failed: %s",
                     d != NULL && d[0] != '\0' ? d : "no reply");
            gpr_free(d);
            r.status = never_sent ? CR_OPS_UNAVAILABLE : CR_OPS_UNKNOWN;
            r.error = err;
            t->stats.calls_failed++;
        } else {
            switch (o->m) {
                case CR__M_FORWARD_TO_LEADER:
                case CR__M_SUBMIT_OPERATION:
                case CR__M_PUT:
                case CR__M_CAS:
                case CR__M_INCREMENT:
                case CR__M_DELETE: {
                    const Raft__OperationResponse *x = (const void *)resp;
                    r.status = (enum cr_op_status)x->status;
                    copy_str(r.result.text, sizeof r.result.text, x->result);
                    r.result.status = x->success || x->status != 0
                                          ? CR_RESULT_OK
                                          : CR_RESULT_INVALID;
                    r.error = x->error[0] != '\0' ? x->error : NULL;
                    r.leader = (cr_id)(x->leader_id > 0 ? x->leader_id : 0);
                    r.leader_address = x->leader_address;
                    r.index = (cr_index)(x->index > 0 ? x->index : 0);
                    r.at_most_once = x->at_most_once;
                    break;
                }
                case CR__M_ADD: {
                    const Raft__AddResponse *x = (const void *)resp;
                    r.status = (enum cr_op_status)x->status;
                    r.result.status = x->success || x->status != 0
                                          ? CR_RESULT_OK
                                          : CR_RESULT_INVALID;
                    r.result.number = x->sum;
                    r.result.total = x->total;
                    snprintf(r.result.text, sizeof r.result.text, "%" PRId64,
                             x->sum);
                    r.error = x->error[0] != '\0' ? x->error : NULL;
                    r.leader = (cr_id)(x->leader_id > 0 ? x->leader_id : 0);
                    r.leader_address = x->leader_address;
                    r.index = (cr_index)(x->index > 0 ? x->index : 0);
                    r.at_most_once = x->at_most_once;
                    break;
                }
                case CR__M_JOIN_CLUSTER: {
                    const Raft__JoinResponse *x = (const void *)resp;
                    static struct cr_config cfg;
                    const char *why;
                    r.status = (enum cr_op_status)x->status;
                    if (!x->success && r.status == CR_OPS_OK) {
                        r.status = CR_OPS_REFUSED;
                    }
                    r.error = x->error[0] != '\0' ? x->error : NULL;
                    r.leader =
                        (cr_id)(x->current_leader > 0 ? x->current_leader : 0);
                    r.leader_address = x->leader_address;
                    r.cluster_id = x->cluster_id;
                    r.term =
                        (cr_term)(x->current_term > 0 ? x->current_term : 0);
                    if (x->cluster_config != NULL &&
                        cr__config_from_pb(x->cluster_config, &cfg, &why) ==
                            0) {
                        r.config = &cfg;
                        r.config_index =
                            (cr_index)(x->cluster_config->index > 0
                                           ? x->cluster_config->index
                                           : 0);
                    }
                    break;
                }
                case CR__M_REMOVE_NODE: {
                    const Raft__RemoveResponse *x = (const void *)resp;
                    r.status = (enum cr_op_status)x->status;
                    if (!x->success && r.status == CR_OPS_OK) {
                        r.status = CR_OPS_REFUSED;
                    }
                    r.error = x->error[0] != '\0' ? x->error : NULL;
                    r.leader = (cr_id)(x->leader_id > 0 ? x->leader_id : 0);
                    r.leader_address = x->leader_address;
                    break;
                }
                case CR__M_TRANSFER_LEADERSHIP: {
                    const Raft__TransferResponse *x = (const void *)resp;
                    r.status = (enum cr_op_status)x->status;
                    if (!x->success && r.status == CR_OPS_OK) {
                        r.status = CR_OPS_REFUSED;
                    }
                    r.error = x->error[0] != '\0' ? x->error : NULL;
                    r.leader = (cr_id)(x->leader_id > 0 ? x->leader_id : 0);
                    r.leader_address = x->leader_address;
                    break;
                }
                default:
                    r.status = CR_OPS_UNKNOWN;
                    break;
            }
        }
        o->done(o->data, &r);
    } else if (resp != NULL) {
        struct cr_message m;
        if (cr__answer_from_pb(o->m, resp, t->cfg.id, o->peer,
                               t->cfg.cluster_id, &m) == 0) {
            t->h.on_message(t->h.data, &m);
        } else {
            t->stats.bad_input++;
        }
    } else {
        t->stats.calls_failed++;
        if (o->m != CR__M_TIMEOUT_NOW) {
            char why[160];
            call_failure(o, ok, why, sizeof why);
            t->h.on_unreachable(t->h.data, o->peer, why);
        }
    }
    if (resp != NULL) {
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    out_free(o);
    op_done(t);
}

static struct chan *peer_chan(struct cr_transport *t, cr_id id)
{
    struct peer *p = peer_get(t, id);
    return p != NULL ? p->chan : NULL;
}

/* InstallSnapshot, sending: one chunk per batch, the last with the close
 * and the receipt of the answer. */
static void snap_send_next(struct out_call *o);

static void snap_fail(struct out_call *o)
{
    struct cr_transport *t = o->t;
    struct peer *p = peer_get(t, o->peer);
    if (p != NULL) {
        p->streaming = false;
    }
    t->stats.calls_failed++;
    t->h.on_unreachable(t->h.data, o->peer, "the snapshot stream failed");
    out_free(o);
}

static void on_snap_sent(struct cr_grpc_op *op, bool ok)
{
    struct out_call *o = (struct out_call *)op;
    struct cr_transport *t = o->t;
    op_done(t);
    if (o->send != NULL) {
        grpc_byte_buffer_destroy(o->send);
        o->send = NULL;
    }
    if (!o->finishing) {
        if (!ok || t->closing) {
            grpc_call_cancel(o->call, NULL);
            /* The cancelled call still has no batch in flight. */
            snap_fail(o);
            return;
        }
        snap_send_next(o);
        return;
    }
    {
        struct peer *p = peer_get(t, o->peer);
        ProtobufCMessage *resp = NULL;
        struct cr_message m;
        if (p != NULL) {
            p->streaming = false;
        }
        if (ok && o->reply.status == GRPC_STATUS_OK && o->reply.recv != NULL) {
            resp = cr_grpc_unpack(&raft__install_snapshot_response__descriptor,
                                  o->reply.recv, t->cfg.max_message_bytes);
        }
        if (resp != NULL &&
            cr__answer_from_pb(CR__M_INSTALL_SNAPSHOT, resp, t->cfg.id, o->peer,
                               t->cfg.cluster_id, &m) == 0) {
            t->h.on_message(t->h.data, &m);
        } else {
            char why[160];
            call_failure(o, ok, why, sizeof why);
            t->stats.calls_failed++;
            t->h.on_unreachable(t->h.data, o->peer, why);
        }
        if (resp != NULL) {
            protobuf_c_message_free_unpacked(resp, NULL);
        }
        out_free(o);
    }
}

static void snap_send_next(struct out_call *o)
{
    struct cr_transport *t = o->t;
    Raft__InstallSnapshotChunk c;
    struct cr__pb_config cfg;
    grpc_op ops[6];
    size_t n_ops = 0;
    size_t got = 0;
    int rv;
    raft__install_snapshot_chunk__init(&c);
    rv = cr_snapshot_reader_read(o->reader, o->chunk,
                                 t->cfg.snapshot_chunk_bytes, &got);
    if (rv != 0) {
        grpc_call_cancel(o->call, NULL);
        snap_fail(o);
        return;
    }
    c.term = (int64_t)o->term;
    c.leader_id = (int32_t)t->cfg.id;
    c.cluster_id = t->cfg.cluster_id;
    c.last_index = (int64_t)o->meta.index;
    c.last_term = (int64_t)o->meta.term;
    if (o->offset == 0) {
        cr__config_to_pb(&o->meta.config, o->meta.config_index,
                         o->meta.config_index, &cfg);
        c.config = &cfg.pb;
    }
    c.offset = o->offset;
    c.data.data = o->chunk;
    c.data.len = got;
    c.crc32c = cr_crc32c(0, o->chunk, got);
    o->total_crc = cr_crc32c(o->total_crc, o->chunk, got);
    o->offset += got;
    c.done = o->offset >= o->size;
    if (c.done) {
        c.total_size = o->size;
        c.total_crc32c = o->total_crc;
    }
    o->send = cr_grpc_pack(&c.base);
    t->stats.bytes_out += grpc_byte_buffer_length(o->send);
    memset(ops, 0, sizeof ops);
    if (c.offset == 0) {
        ops[n_ops++].op = GRPC_OP_SEND_INITIAL_METADATA;
    }
    ops[n_ops].op = GRPC_OP_SEND_MESSAGE;
    ops[n_ops].data.send_message.send_message = o->send;
    n_ops++;
    if (c.done) {
        o->finishing = true;
        ops[n_ops++].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
        n_ops += cr_grpc_reply_ops(&o->reply, ops + n_ops);
    }
    o->op.cb = on_snap_sent;
    if (grpc_call_start_batch(o->call, ops, n_ops, &o->op, NULL) !=
        GRPC_CALL_OK) {
        snap_fail(o);
        return;
    }
    t->outstanding++;
}

static void send_snapshot(struct cr_transport *t, const struct cr_message *m)
{
    struct peer *p = peer_get(t, m->to);
    const char *path;
    struct out_call *o;
    struct cr_snapshot_meta meta;
    uint64_t size;
    char errmsg[CR_ERRMSG_SIZE];
    if (p == NULL || p->chan == NULL) {
        t->h.on_unreachable(t->h.data, m->to, "no address known");
        return;
    }
    if (p->streaming) {
        return; /* one at a time; the core asks again if this one fails */
    }
    path = t->h.snapshot_path != NULL
               ? t->h.snapshot_path(t->h.data, m->install_snapshot.meta)
               : NULL;
    /* A snapshot of the whole state can take long to send: give it ten
     * times the usual deadline. */
    o = path != NULL ? out_new(t, p->chan, CR__M_INSTALL_SNAPSHOT,
                               t->cfg.rpc_timeout_ms * 10 + 10000)
                     : NULL;
    if (o == NULL) {
        t->h.on_unreachable(t->h.data, m->to, "the call could not start");
        return;
    }
    o->peer = m->to;
    o->term = m->term;
    if (cr_snapshot_reader_open(&o->reader, path, NULL, &meta, &size, errmsg) !=
            0 ||
        meta.index != m->install_snapshot.meta->index ||
        (o->chunk = malloc(t->cfg.snapshot_chunk_bytes)) == NULL) {
        grpc_call_cancel(o->call, NULL);
        snap_fail(o);
        return;
    }
    o->meta = meta;
    o->size = size;
    p->streaming = true;
    snap_send_next(o);
}

void cr_transport_send(struct cr_transport *t, const struct cr_message *m)
{
    enum cr__method method;
    struct chan *c;
    struct out_call *o;
    if (t->closing) {
        return;
    }
    switch (m->type) {
        case CR_MSG_REQUEST_VOTE_RESULT:
        case CR_MSG_APPEND_ENTRIES_RESULT:
        case CR_MSG_READ_INDEX_RESULT:
            answer_call(t, m);
            return;
        case CR_MSG_INSTALL_SNAPSHOT:
            send_snapshot(t, m);
            return;
        case CR_MSG_REQUEST_VOTE:
            method = CR__M_REQUEST_VOTE;
            break;
        case CR_MSG_APPEND_ENTRIES:
            method = CR__M_APPEND_ENTRIES;
            break;
        case CR_MSG_TIMEOUT_NOW:
            method = CR__M_TIMEOUT_NOW;
            break;
        case CR_MSG_READ_INDEX:
            method = CR__M_READ_INDEX;
            break;
        default:
            return;
    }
    c = peer_chan(t, m->to);
    o = c != NULL ? out_new(t, c, method, t->cfg.rpc_timeout_ms) : NULL;
    if (o == NULL) {
        t->h.on_unreachable(t->h.data, m->to, "the call could not start");
        return;
    }
    o->peer = m->to;
    o->send = cr__peer_to_pb(m, t->cfg.id, t->cfg.cluster_id, t->listen);
    if (o->send == NULL || !out_start(o)) {
        out_free(o);
        t->h.on_unreachable(t->h.data, m->to, "the call could not start");
    }
}

static struct chan *fwd_chan(struct cr_transport *t, const char *address)
{
    struct chan *c;
    for (unsigned i = 0; i < t->n_fwd; i++) {
        if (strcmp(t->fwd[i]->address, address) == 0) {
            return t->fwd[i];
        }
    }
    if (t->n_fwd == t->cap_fwd) {
        unsigned cap = t->cap_fwd == 0 ? 8 : 2 * t->cap_fwd;
        struct chan **p = realloc(t->fwd, cap * sizeof *p);
        if (p == NULL) {
            return NULL;
        }
        t->fwd = p;
        t->cap_fwd = cap;
    }
    c = chan_new(t, address);
    if (c != NULL) {
        t->fwd[t->n_fwd++] = c;
    }
    return c;
}

void cr_transport_forward(struct cr_transport *t,
                          const char *address,
                          const struct cr_client_request *req,
                          unsigned timeout_ms,
                          cr_client_done_fn done,
                          void *data)
{
    struct chan *c = t->closing ? NULL : fwd_chan(t, address);
    struct out_call *o = NULL;
    enum cr__method m;
    const struct cr_command *cmd = &req->command;
    char text[64];
    switch (req->kind) {
        case CR_CLIENT_ADD:
            m = CR__M_ADD;
            break;
        case CR_CLIENT_JOIN:
            m = CR__M_JOIN_CLUSTER;
            break;
        case CR_CLIENT_REMOVE:
            m = CR__M_REMOVE_NODE;
            break;
        case CR_CLIENT_TRANSFER:
            m = CR__M_TRANSFER_LEADERSHIP;
            break;
        default:
            m = cmd->op == CR_OP_PUT    ? CR__M_PUT
                : cmd->op == CR_OP_CAS  ? CR__M_CAS
                : cmd->op == CR_OP_INCR ? CR__M_INCREMENT
                : cmd->op == CR_OP_DEL  ? CR__M_DELETE
                : cmd->op == CR_OP_ADD  ? CR__M_ADD
                                        : CR__M_FORWARD_TO_LEADER;
            break;
    }
    if (c != NULL) {
        o = out_new(t, c, m, timeout_ms);
    }
    if (o == NULL) {
        struct cr_client_reply r;
        memset(&r, 0, sizeof r);
        r.status = CR_OPS_UNAVAILABLE;
        r.error = "cannot reach the leader";
        done(data, &r);
        return;
    }
    o->done = done;
    o->data = data;
    switch (m) {
        case CR__M_ADD: {
            Raft__AddRequest r;
            raft__add_request__init(&r);
            r.num1 = cmd->a;
            r.num2 = cmd->b;
            r.client_id = cmd->client_id;
            r.sequence = cmd->sequence;
            r.forwarded = req->forwarded;
            o->send = cr_grpc_pack(&r.base);
            break;
        }
        case CR__M_PUT:
        case CR__M_CAS:
        case CR__M_INCREMENT:
        case CR__M_DELETE: {
            Raft__KeyValueRequest r;
            char *key = strndup(cmd->key, cmd->key_len);
            char *value =
                strndup(cmd->value != NULL ? cmd->value : "", cmd->value_len);
            char *expected = strndup(cmd->expected != NULL ? cmd->expected : "",
                                     cmd->expected_len);
            raft__key_value_request__init(&r);
            if (key != NULL && value != NULL && expected != NULL) {
                r.key = key;
                r.value = value;
                r.expected = expected;
                r.delta = cmd->a;
                r.client_id = cmd->client_id;
                r.sequence = cmd->sequence;
                r.forwarded = req->forwarded;
                o->send = cr_grpc_pack(&r.base);
            }
            free(key);
            free(value);
            free(expected);
            break;
        }
        case CR__M_JOIN_CLUSTER: {
            Raft__JoinRequest r;
            raft__join_request__init(&r);
            r.node_id = (int32_t)req->node_id;
            r.address = (char *)(uintptr_t)req->address;
            r.cluster_id = req->cluster_id;
            r.voter = req->voter;
            r.forwarded = req->forwarded;
            o->send = cr_grpc_pack(&r.base);
            break;
        }
        case CR__M_REMOVE_NODE: {
            Raft__RemoveRequest r;
            raft__remove_request__init(&r);
            r.node_id = (int32_t)req->node_id;
            r.forwarded = req->forwarded;
            o->send = cr_grpc_pack(&r.base);
            break;
        }
        case CR__M_TRANSFER_LEADERSHIP: {
            Raft__TransferRequest r;
            raft__transfer_request__init(&r);
            r.node_id = (int32_t)req->node_id;
            r.forwarded = req->forwarded;
            o->send = cr_grpc_pack(&r.base);
            break;
        }
        default: {
            Raft__OperationRequest r;
            raft__operation_request__init(&r);
            /* Only ADD reaches here in text form without a typed RPC. */
            snprintf(text, sizeof text, "ADD %" PRId64 " %" PRId64, cmd->a,
                     cmd->b);
            r.operation = text;
            r.client_id = (int64_t)cmd->client_id;
            r.sequence = cmd->sequence;
            r.forwarded = req->forwarded;
            o->send = cr_grpc_pack(&r.base);
            break;
        }
    }
    if (o->send == NULL || !out_start(o)) {
        struct cr_client_reply r;
        out_free(o);
        memset(&r, 0, sizeof r);
        r.status = CR_OPS_UNAVAILABLE;
        r.error = "cannot reach the leader";
        done(data, &r);
    }
}

/* ---------------------------------------------------------------------------
 * Setting up and closing
 * ------------------------------------------------------------------------- */

void cr_transport_config_default(struct cr_transport_config *c)
{
    memset(c, 0, sizeof *c);
    c->listen = "127.0.0.1:50051";
    c->data_dir = ".";
    c->rpc_timeout_ms = 1000;
    c->max_message_bytes = 64u << 20;
    c->snapshot_chunk_bytes = 1u << 20;
}

void cr_transport_set_peer(struct cr_transport *t,
                           cr_id id,
                           const char *address)
{
    struct peer *p = peer_get(t, id);
    if (id == t->cfg.id || address == NULL || address[0] == '\0') {
        return;
    }
    if (p != NULL && p->chan != NULL &&
        strcmp(p->chan->address, address) == 0) {
        return;
    }
    if (p == NULL) {
        if (t->n_peers == t->cap_peers) {
            unsigned cap = t->cap_peers == 0 ? 8 : 2 * t->cap_peers;
            struct peer *n = realloc(t->peers, cap * sizeof *n);
            if (n == NULL) {
                return;
            }
            t->peers = n;
            t->cap_peers = cap;
        }
        p = &t->peers[t->n_peers++];
        memset(p, 0, sizeof *p);
        p->id = id;
    }
    /* A changed address: a new channel; calls in flight on the old one
     * keep it alive (gRPC counts references) until they end. */
    chan_free(p->chan);
    p->chan = chan_new(t, address);
}

int cr_transport_port(const struct cr_transport *t)
{
    return t->port;
}

void cr_transport_stats(const struct cr_transport *t,
                        struct cr_transport_stats *out)
{
    *out = t->stats;
}

static void quiet_log(gpr_log_func_args *args)
{
    (void)args;
}

int cr_transport_open(struct cr_transport **out,
                      uv_loop_t *loop,
                      const struct cr_transport_config *config,
                      const struct cr_transport_handlers *h,
                      char *errmsg)
{
    struct cr_transport *t = calloc(1, sizeof *t);
    grpc_server_credentials *screds;
    grpc_arg args[16];
    grpc_channel_args ca;
    if (t == NULL) {
        return CR_ENOMEM;
    }
    gpr_set_log_function(quiet_log);
    grpc_init();
    t->loop = loop;
    t->cfg = *config;
    t->h = *h;
    copy_str(t->listen, sizeof t->listen, config->listen);
    copy_str(t->data_dir, sizeof t->data_dir, config->data_dir);
    t->cfg.listen = t->listen;
    t->cfg.data_dir = t->data_dir;
    if (t->cfg.snapshot_chunk_bytes == 0) {
        t->cfg.snapshot_chunk_bytes = 1u << 20;
    }
    if (config->tls_cert != NULL && config->tls_key != NULL &&
        config->tls_ca != NULL) {
        char *cert = read_file(config->tls_cert);
        char *key = read_file(config->tls_key);
        char *ca_pem = read_file(config->tls_ca);
        grpc_ssl_pem_key_cert_pair pair;
        if (cert == NULL || key == NULL || ca_pem == NULL) {
            snprintf(errmsg, 256,
                     "cannot read the TLS files (--tls-cert %s, --tls-key "
                     "%s, --tls-ca %s)",
                     config->tls_cert, config->tls_key, config->tls_ca);
            free(cert);
            free(key);
            free(ca_pem);
            free(t);
            return CR_EINVAL;
        }
        pair.private_key = key;
        pair.cert_chain = cert;
        screds = grpc_ssl_server_credentials_create_ex(
            ca_pem, &pair, 1,
            GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY, NULL);
        t->creds = grpc_ssl_credentials_create(ca_pem, &pair, NULL, NULL);
        free(cert);
        free(key);
        free(ca_pem);
    } else {
        screds = grpc_insecure_server_credentials_create();
        t->creds = grpc_insecure_credentials_create();
    }
    if (cr_grpc_loop_start(&t->gl, loop) != 0) {
        snprintf(errmsg, 256, "cannot start the gRPC thread");
        grpc_server_credentials_release(screds);
        grpc_channel_credentials_release(t->creds);
        free(t);
        return CR_ENOMEM;
    }
    t->server = grpc_server_create(channel_args(t, true, args, &ca), NULL);
    grpc_server_register_completion_queue(t->server, t->gl.cq, NULL);
    for (unsigned m = 0; m < CR__M_COUNT; m++) {
        t->methods[m] = grpc_server_register_method(
            t->server, cr__methods[m].path, NULL,
            cr__methods[m].streaming
                ? GRPC_SRM_PAYLOAD_NONE
                : GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER,
            0);
    }
    t->port = grpc_server_add_http2_port(t->server, t->listen, screds);
    grpc_server_credentials_release(screds);
    if (t->port == 0) {
        snprintf(errmsg, 256,
                 "cannot listen on %s (--listen): in use, or not an address "
                 "of this machine",
                 t->listen);
        grpc_server_destroy(t->server);
        t->server = NULL;
        t->closing = true;
        cr_grpc_loop_stop(&t->gl, NULL, NULL);
        grpc_channel_credentials_release(t->creds);
        /* The loop frees the async handle; t stays until then. */
        return CR_EINVAL;
    }
    grpc_server_start(t->server);
    for (unsigned m = 0; m < CR__M_COUNT; m++) {
        for (unsigned i = 0; i < ARMED; i++) {
            struct srv_slot *s = calloc(1, sizeof *s);
            if (s == NULL) {
                continue;
            }
            s->t = t;
            s->m = (enum cr__method)m;
            grpc_metadata_array_init(&s->md);
            slot_arm(s);
        }
    }
    *out = t;
    return 0;
}

static void on_server_shutdown(struct cr_grpc_op *op, bool ok)
{
    struct cr_transport *t =
        (struct cr_transport *)((char *)op -
                                offsetof(struct cr_transport, shutdown_op));
    (void)ok;
    op_done(t);
}

static void on_loop_stopped(void *data)
{
    struct cr_transport *t = data;
    void (*done)(void *) = t->close_done;
    void *done_data = t->close_data;
    free(t);
    grpc_shutdown();
    if (done != NULL) {
        done(done_data);
    }
}

static void finish_close(struct cr_transport *t)
{
    /* Client calls the node never answered are let go here. */
    while (t->all != NULL) {
        struct in_call *ic = t->all;
        ic->node_owns = false;
        ic->pending = 0;
        ic->replied = true;
        ic_maybe_free(ic);
    }
    grpc_server_destroy(t->server);
    for (unsigned i = 0; i < t->n_peers; i++) {
        chan_free(t->peers[i].chan);
    }
    free(t->peers);
    for (unsigned i = 0; i < t->n_fwd; i++) {
        chan_free(t->fwd[i]);
    }
    free(t->fwd);
    grpc_channel_credentials_release(t->creds);
    cr_grpc_loop_stop(&t->gl, on_loop_stopped, t);
}

void cr_transport_close(struct cr_transport *t,
                        void (*done)(void *data),
                        void *data)
{
    t->closing = true;
    t->close_done = done;
    t->close_data = data;
    t->shutdown_op.cb = on_server_shutdown;
    grpc_server_shutdown_and_notify(t->server, t->gl.cq, &t->shutdown_op);
    t->outstanding++;
    grpc_server_cancel_all_calls(t->server);
    for (struct out_call *o = t->outs; o != NULL; o = o->next) {
        grpc_call_cancel(o->call, NULL);
    }
    /* Node-owned client calls: answer them now so that their batches
     * end too. */
    for (struct in_call *ic = t->all; ic != NULL; ic = ic->all_next) {
        if (!ic->replied) {
            ic_reply(ic, GRPC_STATUS_UNAVAILABLE, "the server is stopping",
                     NULL);
        }
    }
}
