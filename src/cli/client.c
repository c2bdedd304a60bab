/* The client of raft.RaftService: see client.h. */
#define _POSIX_C_SOURCE 200809L

#include "client.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/log.h>
#include <grpc/support/time.h>

#define MAX_MESSAGE (64 << 20) /* as the servers' default */
#define BACKOFF_MIN_MS 25
#define BACKOFF_MAX_MS 400

const struct cr_cli_method_info cr_cli_methods[CR_CLI_METHOD_COUNT] = {
    [CR_CLI_ADD] = {"/raft.RaftService/Add", "Add",
                    &raft__add_request__descriptor,
                    &raft__add_response__descriptor, true},
    [CR_CLI_SUBMIT_OPERATION] = {"/raft.RaftService/SubmitOperation",
                                 "SubmitOperation",
                                 &raft__operation_request__descriptor,
                                 &raft__operation_response__descriptor, true},
    [CR_CLI_PUT] = {"/raft.RaftService/Put", "Put",
                    &raft__key_value_request__descriptor,
                    &raft__operation_response__descriptor, true},
    [CR_CLI_GET] = {"/raft.RaftService/Get", "Get",
                    &raft__key_value_request__descriptor,
                    &raft__operation_response__descriptor, false},
    [CR_CLI_CAS] = {"/raft.RaftService/CompareAndSwap", "CompareAndSwap",
                    &raft__key_value_request__descriptor,
                    &raft__operation_response__descriptor, true},
    [CR_CLI_INCREMENT] = {"/raft.RaftService/Increment", "Increment",
                          &raft__key_value_request__descriptor,
                          &raft__operation_response__descriptor, true},
    [CR_CLI_DELETE] = {"/raft.RaftService/Delete", "Delete",
                       &raft__key_value_request__descriptor,
                       &raft__operation_response__descriptor, true},
    [CR_CLI_READ] = {"/raft.RaftService/Read", "Read",
                     &raft__read_request__descriptor,
                     &raft__read_response__descriptor, false},
    [CR_CLI_JOIN_CLUSTER] = {"/raft.RaftService/JoinCluster", "JoinCluster",
                             &raft__join_request__descriptor,
                             &raft__join_response__descriptor, true},
    [CR_CLI_REMOVE_NODE] = {"/raft.RaftService/RemoveNode", "RemoveNode",
                            &raft__remove_request__descriptor,
                            &raft__remove_response__descriptor, true},
    [CR_CLI_TRANSFER_LEADERSHIP] = {"/raft.RaftService/TransferLeadership",
                                    "TransferLeadership",
                                    &raft__transfer_request__descriptor,
                                    &raft__transfer_response__descriptor, true},
    [CR_CLI_GET_STATUS] = {"/raft.RaftService/GetStatus", "GetStatus",
                           &raft__status_request__descriptor,
                           &raft__status_response__descriptor, false},
};

/* ---------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------- */

uint64_t cr_cli_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t now_ms(void)
{
    return cr_cli_now_ns() / 1000000u;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts;
    ts.tv_sec = (time_t)(ms / 1000);
    ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) != 0) {
    }
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

/* A random 63-bit client id, never 0 (0 means "no session"), so that it
 * is also a valid int64 for OperationRequest. */
static uint64_t random_client_id(void)
{
    uint64_t v = 0;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        if (read(fd, &v, sizeof v) != (ssize_t)sizeof v) {
            v = 0;
        }
        close(fd);
    }
    if (v == 0) {
        /* No /dev/urandom: the clock and the pid, mixed (splitmix64). */
        v = cr_cli_now_ns() ^ ((uint64_t)getpid() << 32);
        v += 0x9e3779b97f4a7c15u;
        v = (v ^ (v >> 30)) * 0xbf58476d1ce4e5b9u;
        v = (v ^ (v >> 27)) * 0x94d049bb133111ebu;
        v ^= v >> 31;
    }
    v &= INT64_MAX;
    return v == 0 ? 1 : v;
}

static void quiet_log(gpr_log_func_args *args)
{
    (void)args;
}

const char *cr_cli_op_status_name(Raft__OpStatus s)
{
    switch (s) {
        case RAFT__OP_STATUS__OP_OK:
            return "OP_OK";
        case RAFT__OP_STATUS__OP_NOT_LEADER:
            return "OP_NOT_LEADER";
        case RAFT__OP_STATUS__OP_UNAVAILABLE:
            return "OP_UNAVAILABLE";
        case RAFT__OP_STATUS__OP_UNKNOWN:
            return "OP_UNKNOWN";
        case RAFT__OP_STATUS__OP_INVALID:
            return "OP_INVALID";
        case RAFT__OP_STATUS__OP_REFUSED:
            return "OP_REFUSED";
        default:
            return "OP_?";
    }
}

const char *cr_cli_grpc_code_name(grpc_status_code code)
{
    static const char *const names[] = {
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    };
    if ((unsigned)code < sizeof names / sizeof names[0]) {
        return names[code];
    }
    return "?";
}

/* ---------------------------------------------------------------------------
 * Setting up
 * ------------------------------------------------------------------------- */

void cr_cli_options_default(struct cr_cli_options *o)
{
    o->timeout_ms = 10000;
    o->attempt_ms = 3000;
    o->max_attempts = 50;
}

static int endpoint_open(struct cr_cli *c, const char *address, size_t len)
{
    struct cr_cli_endpoint *e;
    grpc_channel_credentials *creds;
    grpc_arg args[6];
    grpc_channel_args ca;
    int n = 0;
    if (c->n_endpoints == CR_CLI_ENDPOINTS_MAX || len == 0 ||
        len >= CR_CLI_ADDRESS_MAX) {
        return -1;
    }
    e = &c->endpoints[c->n_endpoints];
    memcpy(e->address, address, len);
    e->address[len] = '\0';
    /* GRPC-C-CORE.md: with the default backoff a restarted server is
     * reached again only after seconds; these keep it under one. */
    cr_grpc_arg_int(args, &n, GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, MAX_MESSAGE);
    cr_grpc_arg_int(args, &n, GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    cr_grpc_arg_int(args, &n, GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
    cr_grpc_arg_int(args, &n, GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
    cr_grpc_arg_int(args, &n, GRPC_ARG_DNS_MIN_TIME_BETWEEN_RESOLUTIONS_MS,
                    500);
    ca.num_args = (size_t)n;
    ca.args = args;
    creds = grpc_insecure_credentials_create();
    e->channel = grpc_channel_create(e->address, creds, &ca);
    grpc_channel_credentials_release(creds);
    if (e->channel == NULL) {
        return -1;
    }
    for (unsigned m = 0; m < CR_CLI_METHOD_COUNT; m++) {
        e->handles[m] = grpc_channel_register_call(
            e->channel, cr_cli_methods[m].path, NULL, NULL);
    }
    return (int)c->n_endpoints++;
}

/* host:port with a port of 1..65535. */
static bool address_ok(const char *a, size_t len)
{
    size_t colon = len;
    unsigned long port = 0;
    for (size_t i = 0; i < len; i++) {
        if (a[i] == ':') {
            colon = i;
        }
    }
    if (colon == 0 || colon >= len - 1 || len - colon - 1 > 5) {
        return false;
    }
    for (size_t i = colon + 1; i < len; i++) {
        if (a[i] < '0' || a[i] > '9') {
            return false;
        }
        port = port * 10 + (unsigned long)(a[i] - '0');
    }
    return port > 0 && port <= 65535;
}

int cr_cli_init(struct cr_cli *c,
                const char *endpoints,
                const struct cr_cli_options *o,
                char *errmsg)
{
    const char *p = endpoints;
    memset(c, 0, sizeof *c);
    cr_cli_options_default(&c->opt);
    if (o != NULL) {
        c->opt = *o;
    }
    if (c->opt.attempt_ms > c->opt.timeout_ms) {
        c->opt.attempt_ms = c->opt.timeout_ms;
    }
    if (c->opt.max_attempts == 0) {
        c->opt.max_attempts = 1;
    }
    /* Before grpc_init: gRPC's own log lines would repeat on stderr what
     * the answers say. CRAFT_GRPC_LOG=1 keeps them. */
    if (getenv("CRAFT_GRPC_LOG") == NULL) {
        gpr_set_log_function(quiet_log);
    }
    grpc_init();
    c->cq = grpc_completion_queue_create_for_pluck(NULL);
    c->client_id = random_client_id();
    while (p != NULL && *p != '\0') {
        const char *comma = strchr(p, ',');
        size_t len = comma != NULL ? (size_t)(comma - p) : strlen(p);
        while (len > 0 && (*p == ' ' || *p == '\t')) {
            p++;
            len--;
        }
        while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t')) {
            len--;
        }
        if (len > 0) {
            if (!address_ok(p, len) || len >= CR_CLI_ADDRESS_MAX) {
                snprintf(errmsg, CR_CLI_WHY_MAX,
                         "bad endpoint \"%.*s\": expected host:port", (int)len,
                         p);
                cr_cli_close(c);
                return -1;
            }
            if (endpoint_open(c, p, len) < 0) {
                snprintf(errmsg, CR_CLI_WHY_MAX,
                         "too many endpoints (at most %d)",
                         CR_CLI_ENDPOINTS_MAX);
                cr_cli_close(c);
                return -1;
            }
        }
        p = comma != NULL ? comma + 1 : NULL;
    }
    if (c->n_endpoints == 0) {
        snprintf(errmsg, CR_CLI_WHY_MAX, "no endpoints");
        cr_cli_close(c);
        return -1;
    }
    c->n_given = c->n_endpoints;
    return 0;
}

void cr_cli_close(struct cr_cli *c)
{
    grpc_event ev;
    if (c == NULL || c->cq == NULL) {
        return;
    }
    for (unsigned i = 0; i < c->n_endpoints; i++) {
        grpc_channel_destroy(c->endpoints[i].channel);
    }
    c->n_endpoints = 0;
    /* Every call has ended (the calls are synchronous): the queue is empty
     * and reports its shutdown at once. */
    grpc_completion_queue_shutdown(c->cq);
    do {
        ev = grpc_completion_queue_pluck(
            c->cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    } while (ev.type != GRPC_QUEUE_SHUTDOWN);
    grpc_completion_queue_destroy(c->cq);
    c->cq = NULL;
    grpc_shutdown();
}

int cr_cli_endpoint(struct cr_cli *c, const char *address)
{
    size_t len = address != NULL ? strlen(address) : 0;
    if (len == 0) {
        return -1;
    }
    for (unsigned i = 0; i < c->n_endpoints; i++) {
        if (strcmp(c->endpoints[i].address, address) == 0) {
            return (int)i;
        }
    }
    if (!address_ok(address, len)) {
        return -1;
    }
    return endpoint_open(c, address, len);
}

/* ---------------------------------------------------------------------------
 * Calls
 * ------------------------------------------------------------------------- */

static void status_set(struct cr_cli_rpc_status *st,
                       grpc_status_code code,
                       const char *details)
{
    st->code = code;
    copy_str(st->details, sizeof st->details, details);
}

int cr_cli_call_start(struct cr_cli *c,
                      unsigned ep,
                      enum cr_cli_method m,
                      const ProtobufCMessage *req,
                      unsigned timeout_ms,
                      grpc_completion_queue *cq,
                      void *tag,
                      struct cr_cli_call *call,
                      struct cr_cli_rpc_status *st)
{
    gpr_timespec deadline =
        gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                     gpr_time_from_millis((int64_t)timeout_ms, GPR_TIMESPAN));
    struct cr_cli_endpoint *e;
    grpc_op ops[6];
    memset(call, 0, sizeof *call);
    call->method = m;
    cr_grpc_reply_init(&call->reply);
    if (ep >= c->n_endpoints || (unsigned)m >= CR_CLI_METHOD_COUNT ||
        req->descriptor != cr_cli_methods[m].request) {
        status_set(st, GRPC_STATUS_INVALID_ARGUMENT,
                   "no such endpoint, or the wrong request type");
        return -1;
    }
    e = &c->endpoints[ep];
    call->call = grpc_channel_create_registered_call(
        e->channel, NULL, GRPC_PROPAGATE_DEFAULTS, cq, e->handles[m], deadline,
        NULL);
    if (call->call == NULL) {
        status_set(st, GRPC_STATUS_INTERNAL, "cannot create the call");
        return -1;
    }
    call->send = cr_grpc_pack(req);
    if (grpc_call_start_batch(call->call, ops,
                              cr_grpc_unary_ops(call->send, &call->reply, ops),
                              tag, NULL) != GRPC_CALL_OK) {
        cr_grpc_reply_destroy(&call->reply);
        grpc_byte_buffer_destroy(call->send);
        grpc_call_unref(call->call);
        call->call = NULL;
        status_set(st, GRPC_STATUS_INTERNAL, "cannot start the call");
        return -1;
    }
    return 0;
}

int cr_cli_call_end(struct cr_cli_call *call,
                    bool ok,
                    ProtobufCMessage **resp,
                    struct cr_cli_rpc_status *st)
{
    int rv = -1;
    *resp = NULL;
    if (!ok) {
        status_set(st, GRPC_STATUS_INTERNAL, "the call failed");
    } else if (call->reply.status != GRPC_STATUS_OK) {
        char *d = grpc_slice_to_c_string(call->reply.details);
        st->code = call->reply.status;
        /* The details say it for people; the error string (a debug dump)
         * only when they are empty. */
        copy_str(st->details, sizeof st->details,
                 d != NULL && d[0] != '\0'          ? d
                 : call->reply.error_string != NULL ? call->reply.error_string
                                                    : "");
        gpr_free(d);
    } else {
        *resp = cr_grpc_unpack(cr_cli_methods[call->method].response,
                               call->reply.recv, MAX_MESSAGE);
        if (*resp == NULL) {
            status_set(st, GRPC_STATUS_INTERNAL,
                       "the reply is missing or malformed");
        } else {
            status_set(st, GRPC_STATUS_OK, "");
            rv = 0;
        }
    }
    cr_grpc_reply_destroy(&call->reply);
    if (call->send != NULL) {
        grpc_byte_buffer_destroy(call->send);
    }
    grpc_call_unref(call->call);
    memset(call, 0, sizeof *call);
    return rv;
}

int cr_cli_call(struct cr_cli *c,
                unsigned ep,
                enum cr_cli_method m,
                const ProtobufCMessage *req,
                unsigned timeout_ms,
                ProtobufCMessage **resp,
                struct cr_cli_rpc_status *st)
{
    struct cr_cli_call call;
    grpc_event ev;
    *resp = NULL;
    if (cr_cli_call_start(c, ep, m, req, timeout_ms, c->cq, &call, &call, st) !=
        0) {
        return -1;
    }
    /* The call ends by its deadline; the queue needs no other. */
    ev = grpc_completion_queue_pluck(c->cq, &call,
                                     gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    return cr_cli_call_end(&call, ev.type == GRPC_OP_COMPLETE && ev.success,
                           resp, st);
}

void cr_cli_free(ProtobufCMessage *msg)
{
    if (msg != NULL) {
        protobuf_c_message_free_unpacked(msg, NULL);
    }
}

#define TYPED_CALL(fn, M, Req, Resp)                                           \
    int fn(struct cr_cli *c, unsigned ep, const Req *req, unsigned timeout_ms, \
           Resp **resp, struct cr_cli_rpc_status *st)                          \
    {                                                                          \
        ProtobufCMessage *r = NULL;                                            \
        int rv = cr_cli_call(c, ep, M, &req->base, timeout_ms, &r, st);        \
        *resp = (Resp *)r;                                                     \
        return rv;                                                             \
    }

TYPED_CALL(cr_cli_add, CR_CLI_ADD, Raft__AddRequest, Raft__AddResponse)
TYPED_CALL(cr_cli_submit_operation,
           CR_CLI_SUBMIT_OPERATION,
           Raft__OperationRequest,
           Raft__OperationResponse)
TYPED_CALL(cr_cli_put,
           CR_CLI_PUT,
           Raft__KeyValueRequest,
           Raft__OperationResponse)
TYPED_CALL(cr_cli_get,
           CR_CLI_GET,
           Raft__KeyValueRequest,
           Raft__OperationResponse)
TYPED_CALL(cr_cli_compare_and_swap,
           CR_CLI_CAS,
           Raft__KeyValueRequest,
           Raft__OperationResponse)
TYPED_CALL(cr_cli_increment,
           CR_CLI_INCREMENT,
           Raft__KeyValueRequest,
           Raft__OperationResponse)
TYPED_CALL(cr_cli_delete,
           CR_CLI_DELETE,
           Raft__KeyValueRequest,
           Raft__OperationResponse)
TYPED_CALL(cr_cli_read, CR_CLI_READ, Raft__ReadRequest, Raft__ReadResponse)
TYPED_CALL(cr_cli_join_cluster,
           CR_CLI_JOIN_CLUSTER,
           Raft__JoinRequest,
           Raft__JoinResponse)
TYPED_CALL(cr_cli_remove_node,
           CR_CLI_REMOVE_NODE,
           Raft__RemoveRequest,
           Raft__RemoveResponse)
TYPED_CALL(cr_cli_transfer_leadership,
           CR_CLI_TRANSFER_LEADERSHIP,
           Raft__TransferRequest,
           Raft__TransferResponse)
#undef TYPED_CALL

int cr_cli_get_status(struct cr_cli *c,
                      unsigned ep,
                      unsigned timeout_ms,
                      Raft__StatusResponse **resp,
                      struct cr_cli_rpc_status *st)
{
    Raft__StatusRequest req;
    ProtobufCMessage *r = NULL;
    int rv;
    raft__status_request__init(&req);
    rv = cr_cli_call(c, ep, CR_CLI_GET_STATUS, &req.base, timeout_ms, &r, st);
    *resp = (Raft__StatusResponse *)r;
    return rv;
}

void cr_cli_status_all(struct cr_cli *c,
                       unsigned timeout_ms,
                       Raft__StatusResponse **resp,
                       struct cr_cli_rpc_status *st)
{
    struct cr_cli_call calls[CR_CLI_ENDPOINTS_MAX];
    bool started[CR_CLI_ENDPOINTS_MAX];
    Raft__StatusRequest req;
    raft__status_request__init(&req);
    /* All at once: an endpoint that hangs costs one deadline, not one
     * each. */
    for (unsigned i = 0; i < c->n_given; i++) {
        resp[i] = NULL;
        started[i] =
            cr_cli_call_start(c, i, CR_CLI_GET_STATUS, &req.base, timeout_ms,
                              c->cq, &calls[i], &calls[i], &st[i]) == 0;
    }
    for (unsigned i = 0; i < c->n_given; i++) {
        ProtobufCMessage *r = NULL;
        grpc_event ev;
        if (!started[i]) {
            continue;
        }
        ev = grpc_completion_queue_pluck(
            c->cq, &calls[i], gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        (void)cr_cli_call_end(
            &calls[i], ev.type == GRPC_OP_COMPLETE && ev.success, &r, &st[i]);
        resp[i] = (Raft__StatusResponse *)r;
    }
}

/* ---------------------------------------------------------------------------
 * Operations
 * ------------------------------------------------------------------------- */

void cr_cli_answer_of(enum cr_cli_method m,
                      const ProtobufCMessage *resp,
                      struct cr_cli_answer *out)
{
    out->status = RAFT__OP_STATUS__OP_OK;
    out->success = true;
    out->leader_id = 0;
    out->leader_address = "";
    out->error = "";
    switch (m) {
        case CR_CLI_ADD: {
            const Raft__AddResponse *r = (const void *)resp;
            out->status = r->status;
            out->success = r->success;
            out->leader_id = r->leader_id;
            out->leader_address = r->leader_address;
            out->error = r->error;
            break;
        }
        case CR_CLI_SUBMIT_OPERATION:
        case CR_CLI_PUT:
        case CR_CLI_GET:
        case CR_CLI_CAS:
        case CR_CLI_INCREMENT:
        case CR_CLI_DELETE: {
            const Raft__OperationResponse *r = (const void *)resp;
            out->status = r->status;
            out->success = r->success;
            out->leader_id = r->leader_id;
            out->leader_address = r->leader_address;
            out->error =
                r->error[0] != '\0' || r->success ? r->error : r->result;
            break;
        }
        case CR_CLI_READ: {
            const Raft__ReadResponse *r = (const void *)resp;
            out->status = r->status;
            out->success = r->success;
            out->leader_id = r->leader_id;
            out->leader_address = r->leader_address;
            out->error = r->error;
            break;
        }
        case CR_CLI_JOIN_CLUSTER: {
            const Raft__JoinResponse *r = (const void *)resp;
            out->status = r->status;
            /* An old server says no only through `success`. */
            if (!r->success && r->status == RAFT__OP_STATUS__OP_OK) {
                out->status = RAFT__OP_STATUS__OP_REFUSED;
            }
            out->success = r->success;
            out->leader_id = r->current_leader;
            out->leader_address = r->leader_address;
            out->error = r->error;
            break;
        }
        case CR_CLI_REMOVE_NODE: {
            const Raft__RemoveResponse *r = (const void *)resp;
            out->status = r->status;
            if (!r->success && r->status == RAFT__OP_STATUS__OP_OK) {
                out->status = RAFT__OP_STATUS__OP_REFUSED;
            }
            out->success = r->success;
            out->leader_id = r->leader_id;
            out->leader_address = r->leader_address;
            out->error = r->error;
            break;
        }
        case CR_CLI_TRANSFER_LEADERSHIP: {
            /* No status field: a refusal while no leader is known is worth
             * a retry, any other is final. */
            const Raft__TransferResponse *r = (const void *)resp;
            out->success = r->success;
            out->status = r->success ? RAFT__OP_STATUS__OP_OK
                          : r->leader_id == 0 && r->leader_address[0] == '\0'
                              ? RAFT__OP_STATUS__OP_UNAVAILABLE
                              : RAFT__OP_STATUS__OP_INVALID;
            out->leader_id = r->leader_id;
            out->leader_address = r->leader_address;
            out->error = r->error;
            break;
        }
        case CR_CLI_GET_STATUS: {
            const Raft__StatusResponse *r = (const void *)resp;
            out->leader_id = r->current_leader;
            out->leader_address = r->leader_address;
            break;
        }
        case CR_CLI_METHOD_COUNT:
            break;
    }
    if (out->leader_id < 0) {
        out->leader_id = 0;
    }
}

/* Sets the session of a write and clears `forwarded`. */
static void prepare(struct cr_cli *c,
                    enum cr_cli_method m,
                    ProtobufCMessage *req,
                    struct cr_cli_result *out)
{
    switch (m) {
        case CR_CLI_ADD: {
            Raft__AddRequest *r = (void *)req;
            r->client_id = c->client_id;
            r->sequence = ++c->sequence;
            r->forwarded = false;
            out->client_id = r->client_id;
            out->sequence = r->sequence;
            break;
        }
        case CR_CLI_SUBMIT_OPERATION: {
            Raft__OperationRequest *r = (void *)req;
            r->client_id = (int64_t)c->client_id;
            r->sequence = ++c->sequence;
            r->forwarded = false;
            out->client_id = c->client_id;
            out->sequence = r->sequence;
            break;
        }
        case CR_CLI_PUT:
        case CR_CLI_CAS:
        case CR_CLI_INCREMENT:
        case CR_CLI_DELETE: {
            Raft__KeyValueRequest *r = (void *)req;
            r->client_id = c->client_id;
            r->sequence = ++c->sequence;
            r->forwarded = false;
            out->client_id = r->client_id;
            out->sequence = r->sequence;
            break;
        }
        case CR_CLI_GET:
            ((Raft__KeyValueRequest *)(void *)req)->forwarded = false;
            break;
        case CR_CLI_JOIN_CLUSTER:
            ((Raft__JoinRequest *)(void *)req)->forwarded = false;
            break;
        case CR_CLI_REMOVE_NODE:
            ((Raft__RemoveRequest *)(void *)req)->forwarded = false;
            break;
        case CR_CLI_TRANSFER_LEADERSHIP:
            ((Raft__TransferRequest *)(void *)req)->forwarded = false;
            break;
        case CR_CLI_READ:
        case CR_CLI_GET_STATUS:
        case CR_CLI_METHOD_COUNT:
            break;
    }
}

/* What to do after an attempt. */
enum next {
    NEXT_DONE,      /* OP_OK */
    NEXT_STOP,      /* a definite failure that a retry cannot change */
    NEXT_HINT,      /* at the leader a hint names, at once */
    NEXT_SAME,      /* at the same endpoint, after a pause */
    NEXT_ROTATE,    /* at the next endpoint, after a pause */
    NEXT_ROTATE_NOW /* at the next endpoint, at once */
};

/* gRPC's words for a call that never left this process because no
 * connection could be made: "failed to connect to all addresses" (a
 * channel that is connecting or waiting to retry fails calls with it).
 * Anything else (a reset, "Socket closed", the server's own UNAVAILABLE
 * "the server is stopping") may come after the server took the request. */
bool cr_cli_never_sent(const struct cr_cli_rpc_status *st)
{
    return st->code == GRPC_STATUS_UNAVAILABLE &&
           (strstr(st->details, "failed to connect") != NULL ||
            strstr(st->details, "Failed to connect") != NULL ||
            strstr(st->details, "Connection refused") != NULL);
}

/* Judges one attempt. Sets *maybe_applied when a write's attempt has an
 * unknown outcome, and `why`. */
static enum next judge(struct cr_cli *c,
                       enum cr_cli_method m,
                       unsigned ep,
                       const ProtobufCMessage *resp,
                       const struct cr_cli_rpc_status *st,
                       int *hint,
                       bool *maybe_applied,
                       char *why)
{
    const char *addr = c->endpoints[ep].address;
    bool write = cr_cli_methods[m].write;
    struct cr_cli_answer a;
    *maybe_applied = false;
    *hint = -1;
    if (resp == NULL) {
        snprintf(why, CR_CLI_WHY_MAX, "%s: gRPC %s%s%s", addr,
                 cr_cli_grpc_code_name(st->code),
                 st->details[0] != '\0' ? ": " : "", st->details);
        switch (st->code) {
            case GRPC_STATUS_UNAVAILABLE:
                if (cr_cli_never_sent(st)) {
                    return NEXT_ROTATE_NOW;
                }
                *maybe_applied = write;
                return NEXT_ROTATE_NOW;
            case GRPC_STATUS_DEADLINE_EXCEEDED:
            case GRPC_STATUS_CANCELLED:
            case GRPC_STATUS_UNKNOWN:
            case GRPC_STATUS_INTERNAL:
            case GRPC_STATUS_ABORTED:
            case GRPC_STATUS_DATA_LOSS:
                *maybe_applied = write;
                return NEXT_ROTATE_NOW;
            default:
                /* INVALID_ARGUMENT, FAILED_PRECONDITION (another
                 * cluster), UNIMPLEMENTED (not a craft server), ... */
                return NEXT_STOP;
        }
    }
    cr_cli_answer_of(m, resp, &a);
    snprintf(why, CR_CLI_WHY_MAX, "%s: %s%s%s", addr,
             cr_cli_op_status_name(a.status), a.error[0] != '\0' ? ": " : "",
             a.error);
    if (a.leader_address[0] != '\0') {
        *hint = cr_cli_endpoint(c, a.leader_address);
    }
    switch (a.status) {
        case RAFT__OP_STATUS__OP_OK:
            return NEXT_DONE;
        case RAFT__OP_STATUS__OP_NOT_LEADER:
            return *hint >= 0 && (unsigned)*hint != ep ? NEXT_HINT
                                                       : NEXT_ROTATE;
        case RAFT__OP_STATUS__OP_UNAVAILABLE:
            return NEXT_ROTATE;
        case RAFT__OP_STATUS__OP_REFUSED:
            return NEXT_SAME;
        case RAFT__OP_STATUS__OP_UNKNOWN:
            /* A retry with the same session learns the outcome; a follower
             * whose forwarding failed names the leader it tried. */
            *maybe_applied = write;
            return *hint >= 0 && (unsigned)*hint != ep ? NEXT_HINT : NEXT_SAME;
        case RAFT__OP_STATUS__OP_INVALID:
        default:
            return NEXT_STOP;
    }
}

enum cr_cli_outcome cr_cli_run(struct cr_cli *c,
                               enum cr_cli_method m,
                               ProtobufCMessage *req,
                               struct cr_cli_result *out)
{
    uint64_t start = now_ms();
    uint64_t end = start + c->opt.timeout_ms;
    unsigned ep = c->leader < c->n_endpoints ? c->leader : 0;
    unsigned backoff = BACKOFF_MIN_MS;
    char unknown_why[CR_CLI_WHY_MAX] = "";
    char why[CR_CLI_WHY_MAX] = "no attempt was made";
    enum next next = NEXT_STOP;
    unsigned quick = 0; /* attempts since the last pause */
    memset(out, 0, sizeof *out);
    prepare(c, m, req, out);
    while (out->attempts < c->opt.max_attempts) {
        uint64_t now = now_ms();
        ProtobufCMessage *resp = NULL;
        struct cr_cli_rpc_status st;
        bool maybe;
        int hint;
        unsigned timeout;
        if (now >= end) {
            break;
        }
        timeout = (unsigned)(end - now) < c->opt.attempt_ms
                      ? (unsigned)(end - now)
                      : c->opt.attempt_ms;
        out->attempts++;
        (void)cr_cli_call(c, ep, m, req, timeout, &resp, &st);
        next = judge(c, m, ep, resp, &st, &hint, &maybe, why);
        if (maybe && unknown_why[0] == '\0') {
            memcpy(unknown_why, why, sizeof unknown_why);
        }
        if (resp != NULL) {
            cr_cli_free(out->resp);
            out->resp = resp;
            out->endpoint = ep;
        }
        if (next == NEXT_DONE) {
            c->leader = hint >= 0 ? (unsigned)hint : ep;
            out->outcome = CR_CLI_OK;
            return CR_CLI_OK;
        }
        if (next == NEXT_STOP) {
            break;
        }
        if (next == NEXT_HINT) {
            ep = (unsigned)hint;
        } else if (next == NEXT_ROTATE || next == NEXT_ROTATE_NOW) {
            ep = (ep + 1) % c->n_endpoints;
        }
        if ((next == NEXT_HINT || next == NEXT_ROTATE_NOW) &&
            ++quick <= c->n_endpoints) {
            continue;
        }
        {
            /* A pause while no leader is known, and after a round of quick
             * moves (a follower may name a leader that has just died):
             * elections take a few hundred ms. */
            uint64_t t = now_ms();
            unsigned pause = t + backoff < end ? backoff
                             : t < end         ? (unsigned)(end - t)
                                               : 0;
            sleep_ms(pause);
            quick = 0;
            backoff =
                backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
        }
    }
    /* Definitely failed only if no attempt may have been applied: an
     * earlier attempt that timed out may have committed even though the
     * last one was turned away (it carried the same session, but a "not
     * the leader" says nothing about the earlier one). */
    if (unknown_why[0] != '\0') {
        out->outcome = CR_CLI_UNKNOWN;
        if (strcmp(unknown_why, why) == 0) {
            snprintf(out->why, sizeof out->why, "%s", why);
        } else {
            snprintf(out->why, sizeof out->why,
                     "%.200s; an earlier attempt's outcome is unknown "
                     "(%.200s)",
                     why, unknown_why);
        }
    } else {
        out->outcome = CR_CLI_FAILED;
        snprintf(out->why, sizeof out->why, "%s", why);
    }
    if (next != NEXT_STOP) {
        size_t len = strlen(out->why);
        snprintf(out->why + len, sizeof out->why - len,
                 " (gave up after %u attempts in %.1f s)", out->attempts,
                 (double)(now_ms() - start) / 1e3);
    }
    return out->outcome;
}

void cr_cli_result_free(struct cr_cli_result *r)
{
    if (r != NULL) {
        cr_cli_free(r->resp);
        r->resp = NULL;
    }
}
