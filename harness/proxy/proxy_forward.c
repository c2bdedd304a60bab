/* Links and the calls on them: every link's server accepts any method
 * (the generic grpc_server_request_call path) and, through registered
 * methods, the methods declared unary (--unary); each call gets its fault
 * decision, then its raw messages go to the target on one or two client
 * calls ("legs": the original and a duplicate) and the original's answer
 * comes back. Nothing is decoded. Everything runs on the loop thread.
 *
 * Two paths, because every completion costs a hand-off between the gRPC
 * thread and the loop (see grpc_loop.h):
 * - a declared unary call arrives with its message; one batch sends it to
 *   the target with the half-close and receives the answer and status: 4
 *   batches per call, one hand-off before the target sees it;
 * - any other call is a stream both ways: its messages are read one by
 *   one and relayed as they come, the answer's likewise until the end: 10
 *   batches for a unary call, three hand-offs before the target sees it. */
#include <assert.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "grpc_call.h"
#include "proxy_impl.h"

#define CONTAINER(ptr, type, field) \
    ((type *)(void *)((char *)(ptr)-offsetof(type, field)))

/* One client call to the target. */
struct leg
{
    grpc_call *call; /* NULL until started */
    struct cr_grpc_op send_op, recv_op, status_op;
    /* Request messages not yet handed to gRPC, oldest first. */
    grpc_byte_buffer **q;
    size_t q_head, q_n, q_cap;
    grpc_byte_buffer *sending; /* in flight; freed when sent */
    bool send_busy, sent_init, sent_close, send_failed;
    /* The answer (reply.recv: the message just received). */
    struct cr_grpc_reply reply;
    bool recv_done, status_done;
};

enum stage {
    ST_ARMED,      /* waiting for a caller */
    ST_HELD,       /* in the link's held queue */
    ST_DELAYING,   /* request delay */
    ST_FORWARDING, /* legs running */
    ST_ANSWERED,   /* the answer is in; response delay */
    ST_REPLYING,   /* answering the caller */
    ST_SILENT,     /* blackholed: the caller waits for its deadline */
    ST_OVER        /* the caller is gone or has its answer */
};

struct cp_call
{
    struct cr_grpc_op new_op, close_op, recv_op, send_op;
    struct cp_link *link;
    enum stage stage;
    unsigned pending; /* gRPC batches, timers and callbacks in progress */
    grpc_call *in;    /* the caller's call */
    int rm;           /* the declared unary method (p->unary), or -1 */
    grpc_call_details details; /* generic calls */
    grpc_slice method;         /* details.method, or p->unary[rm] */
    gpr_timespec deadline;
    grpc_metadata_array in_md;
    int cancelled; /* RECV_CLOSE_ON_SERVER's answer */
    bool closed;   /* RECV_CLOSE_ON_SERVER completed */
    struct cp_counters *ctr;
    struct cp_decision d;
    /* Reading the caller's messages (a declared unary call's one message
     * comes into in_buf with the call). */
    grpc_byte_buffer *in_buf;
    bool reading, in_eos, in_failed;
    bool eos_pending; /* on p->eos_list, see on_in_recv */
    struct cp_call *eos_next;
    bool unary; /* a declared unary call */
    /* legs[0] is the original, legs[1] the duplicate. */
    struct leg legs[2];
    unsigned n_legs;
    bool dup_pending; /* legs[1] waits for dup_timer */
    /* The answer to the caller. */
    grpc_byte_buffer **resp;
    size_t n_resp, cap_resp, resp_sent;
    uint64_t relay_bytes; /* of the send batch in flight */
    bool sending;         /* a send batch to the caller is in flight */
    bool outcome_due;     /* closed while sending: count_outcome waits */
    bool sent_in_init, status_sent;
    grpc_status_code sent_code;
    grpc_slice reply_details; /* of a status made by the proxy */
    bool has_reply_details;
    /* Delays. */
    uv_timer_t timer, dup_timer;
    bool timer_inited, dup_timer_inited;
    unsigned closing_handles;
    struct cp_call *prev, *next; /* link->calls */
    struct cp_call *held_next;
};

static void on_new(struct cr_grpc_op *op, bool ok);
static void on_close(struct cr_grpc_op *op, bool ok);
static void on_in_recv(struct cr_grpc_op *op, bool ok);
static void on_in_sent(struct cr_grpc_op *op, bool ok);
static void on_leg0_send(struct cr_grpc_op *op, bool ok);
static void on_leg1_send(struct cr_grpc_op *op, bool ok);
static void on_leg0_recv(struct cr_grpc_op *op, bool ok);
static void on_leg1_recv(struct cr_grpc_op *op, bool ok);
static void on_leg0_status(struct cr_grpc_op *op, bool ok);
static void on_leg1_status(struct cr_grpc_op *op, bool ok);
static void call_free(struct cp_call *c);
static void link_maybe_free(struct cp_link *l);
static void start_reading(struct cp_call *c);

static grpc_completion_queue *cq_of(const struct cp_call *c)
{
    return c->link->p->gl.cq;
}

static void call_ref(struct cp_call *c)
{
    c->pending++;
}

static void call_unref(struct cp_call *c)
{
    assert(c->pending > 0);
    if (--c->pending == 0) {
        call_free(c);
    }
}

/* Starts a batch that holds a reference on c until it completes. A
 * refusal is a bug in this file (an op started twice), not something a
 * caller or target can cause; it is logged and the batch treated as
 * failed by the caller of start(). */
static bool start(struct cp_call *c,
                  grpc_call *call,
                  const grpc_op *ops,
                  size_t n,
                  struct cr_grpc_op *tag)
{
    grpc_call_error e = grpc_call_start_batch(call, ops, n, tag, NULL);
    if (e != GRPC_CALL_OK) {
        cp__log(c->link->p, "grpc-error", "link=%s call_error=%d",
                c->link->name, (int)e);
        return false;
    }
    call_ref(c);
    return true;
}

/* Drops the hop-by-hop and gRPC-reserved keys, which the C core sets by
 * itself on the next hop, and keeps the application's metadata. */
static bool forwardable(grpc_slice key)
{
    static const char *const hop[] = {
        "content-type",   "te",
        "user-agent",     "host",
        "connection",     "upgrade",
        "content-length", "transfer-encoding",
        "keep-alive",     "proxy-connection",
    };
    const char *k = (const char *)GRPC_SLICE_START_PTR(key);
    size_t n = GRPC_SLICE_LENGTH(key);
    if (n == 0 || k[0] == ':' || (n >= 5 && memcmp(k, "grpc-", 5) == 0)) {
        return false;
    }
    for (size_t i = 0; i < sizeof hop / sizeof hop[0]; i++) {
        if (strlen(hop[i]) == n && memcmp(hop[i], k, n) == 0) {
            return false;
        }
    }
    return true;
}

/* Keeps the forwardable entries, in place (the slices belong to the call
 * that received them). */
static void filter_md(grpc_metadata_array *a)
{
    size_t w = 0;
    for (size_t i = 0; i < a->count; i++) {
        if (forwardable(a->metadata[i].key)) {
            a->metadata[w++] = a->metadata[i];
        }
    }
    a->count = w;
}

static const char *method_ptr(const struct cp_call *c)
{
    return (const char *)GRPC_SLICE_START_PTR(c->method);
}

static size_t method_len(const struct cp_call *c)
{
    return GRPC_SLICE_LENGTH(c->method);
}

/* ------------------------------------------------------------------------
 * Timers */

static void timer_arm(struct cp_call *c,
                      uv_timer_t *t,
                      bool *inited,
                      uint64_t ms,
                      uv_timer_cb cb)
{
    if (!*inited) {
        int rv = uv_timer_init(c->link->p->loop, t);
        assert(rv == 0); /* it cannot fail on Linux */
        (void)rv;
        t->data = c;
        *inited = true;
    }
    uv_timer_start(t, cb, ms, 0);
    call_ref(c);
}

/* Stops an armed timer; the caller holds a reference on c. */
static void timer_disarm(struct cp_call *c, uv_timer_t *t, bool inited)
{
    if (inited && uv_is_active((uv_handle_t *)t)) {
        uv_timer_stop(t);
        assert(c->pending > 1);
        c->pending--;
    }
}

/* ------------------------------------------------------------------------
 * Answering the caller */

/* Ends the caller's call with a status made by the proxy. */
static void reply_status(struct cp_call *c,
                         grpc_status_code code,
                         const char *fmt,
                         ...) __attribute__((format(printf, 3, 4)));

static void reply_status(struct cp_call *c,
                         grpc_status_code code,
                         const char *fmt,
                         ...)
{
    grpc_op ops[2];
    char msg[256];
    va_list ap;
    size_t n = 0;
    if (c->status_sent || c->closed) {
        c->stage = ST_OVER;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    c->reply_details = grpc_slice_from_copied_string(msg);
    c->has_reply_details = true;
    memset(ops, 0, sizeof ops);
    if (!c->sent_in_init) {
        ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
        n++;
        c->sent_in_init = true;
    }
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = code;
    ops[n].data.send_status_from_server.status_details = &c->reply_details;
    n++;
    c->status_sent = true;
    c->sent_code = code;
    c->relay_bytes = 0;
    c->stage = ST_REPLYING;
    if (!start(c, c->in, ops, n, &c->send_op)) {
        c->stage = ST_OVER;
    } else {
        c->sending = true;
    }
}

/* Sends the next part of the original leg's answer: initial metadata and
 * a message, then one message per batch, the status with the last. */
static void relay_next(struct cp_call *c)
{
    struct leg *g = &c->legs[0];
    grpc_op ops[3];
    size_t n = 0;
    memset(ops, 0, sizeof ops);
    if (!c->sent_in_init) {
        filter_md(&g->reply.md_init);
        ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
        ops[n].data.send_initial_metadata.count = g->reply.md_init.count;
        ops[n].data.send_initial_metadata.metadata = g->reply.md_init.metadata;
        n++;
        c->sent_in_init = true;
    }
    c->relay_bytes = 0;
    if (c->resp_sent < c->n_resp) {
        grpc_byte_buffer *bb = c->resp[c->resp_sent++];
        c->relay_bytes = grpc_byte_buffer_length(bb);
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n].data.send_message.send_message = bb;
        n++;
    }
    if (c->resp_sent == c->n_resp) {
        filter_md(&g->reply.md_trail);
        ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
        ops[n].data.send_status_from_server.trailing_metadata_count =
            g->reply.md_trail.count;
        ops[n].data.send_status_from_server.trailing_metadata =
            g->reply.md_trail.metadata;
        ops[n].data.send_status_from_server.status = g->reply.status;
        ops[n].data.send_status_from_server.status_details = &g->reply.details;
        n++;
        c->status_sent = true;
        c->sent_code = g->reply.status;
    }
    if (!start(c, c->in, ops, n, &c->send_op)) {
        c->stage = ST_OVER;
    } else {
        c->sending = true;
    }
}

static void relay(struct cp_call *c)
{
    if (c->closed) {
        c->stage = ST_OVER;
        return;
    }
    c->stage = ST_REPLYING;
    relay_next(c);
}

/* A call ends counted ok or failed once its close has completed and no
 * send to the caller is in flight (the two complete in either order). */
static void count_outcome(struct cp_call *c)
{
    if (c->status_sent && !c->cancelled && c->sent_code == GRPC_STATUS_OK) {
        c->ctr->ok++;
    } else {
        c->ctr->failed++;
    }
}

static void on_in_sent(struct cr_grpc_op *op, bool ok)
{
    struct cp_call *c = CONTAINER(op, struct cp_call, send_op);
    c->sending = false;
    if (ok) {
        c->ctr->response_bytes += c->relay_bytes;
    }
    if (c->outcome_due) {
        /* The caller's close completed first: the call is counted now,
         * with its bytes, so counters that say a call ended also say
         * everything it sent. */
        c->outcome_due = false;
        count_outcome(c);
    }
    if (ok) {
        if (!c->status_sent) {
            relay_next(c);
        } else {
            c->stage = ST_OVER;
        }
    } else {
        c->stage = ST_OVER;
    }
    call_unref(c);
}

static void on_response_delay(uv_timer_t *t)
{
    struct cp_call *c = t->data;
    relay(c);
    call_unref(c);
}

/* The original leg is over: its answer (or failure) goes to the caller,
 * unless a fault says otherwise. */
static void on_answer(struct cp_call *c)
{
    const struct cp_link *l = c->link;
    if (c->closed || c->status_sent) {
        c->stage = ST_OVER;
        return;
    }
    c->stage = ST_ANSWERED;
    if (c->d.drop_response != 0) {
        c->ctr->responses_dropped++;
        if (c->d.drop_response_blackhole) {
            c->stage = ST_SILENT;
        } else {
            reply_status(c, GRPC_STATUS_UNAVAILABLE,
                         "craft-proxy: answer dropped on link %s (fault "
                         "%" PRIu64 ")",
                         l->name, c->d.drop_response);
        }
    } else if (c->d.response_delay_ms > 0) {
        c->ctr->responses_delayed++;
        timer_arm(c, &c->timer, &c->timer_inited, c->d.response_delay_ms,
                  on_response_delay);
    } else {
        relay(c);
    }
}

/* ------------------------------------------------------------------------
 * Legs: client calls to the target */

static struct leg *leg_of(struct cp_call *c, unsigned i)
{
    return &c->legs[i];
}

static bool leg_live(const struct leg *g)
{
    return g->call != NULL && !g->send_failed && !g->status_done;
}

/* Whether leg i takes the caller's next message: it is live, or it is
 * the duplicate, which has yet to start. */
static bool leg_wants(const struct cp_call *c, unsigned i)
{
    const struct leg *g = &c->legs[i];
    if (i >= c->n_legs) {
        return false;
    }
    return g->call == NULL ? i == 1 && c->dup_pending : leg_live(g);
}

static void leg_cancel(struct leg *g)
{
    if (g->call != NULL && !(g->recv_done && g->status_done)) {
        grpc_call_cancel(g->call, NULL);
    }
}

static int leg_push(struct leg *g, grpc_byte_buffer *bb)
{
    if (g->q_head + g->q_n == g->q_cap) {
        if (g->q_head > 0) {
            memmove(g->q, g->q + g->q_head, g->q_n * sizeof g->q[0]);
            g->q_head = 0;
        } else {
            size_t cap = g->q_cap == 0 ? 4 : g->q_cap * 2;
            grpc_byte_buffer **q = realloc(g->q, cap * sizeof *q);
            if (q == NULL) {
                return CP_ENOMEM;
            }
            g->q = q;
            g->q_cap = cap;
        }
    }
    g->q[g->q_head + g->q_n++] = bb;
    return 0;
}

/* A streaming leg: hands the next message (with the initial metadata
 * first, and the half-close once the caller has half-closed and nothing
 * is left) to gRPC. */
static void leg_pump(struct cp_call *c, unsigned i)
{
    struct leg *g = leg_of(c, i);
    grpc_op ops[3];
    size_t n = 0;
    if (c->unary || !leg_live(g) || g->send_busy ||
        (g->q_n == 0 && !(c->in_eos && !g->sent_close))) {
        return;
    }
    memset(ops, 0, sizeof ops);
    if (!g->sent_init) {
        ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
        ops[n].data.send_initial_metadata.count = c->in_md.count;
        ops[n].data.send_initial_metadata.metadata = c->in_md.metadata;
        n++;
        g->sent_init = true;
    }
    if (g->q_n > 0) {
        g->sending = g->q[g->q_head++];
        g->q_n--;
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n].data.send_message.send_message = g->sending;
        n++;
    }
    if (g->q_n == 0 && c->in_eos && !g->sent_close) {
        ops[n].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
        n++;
        g->sent_close = true;
    }
    g->send_busy = true;
    if (!start(c, g->call, ops, n, &g->send_op)) {
        g->send_busy = false;
        g->send_failed = true;
        leg_cancel(g);
    }
}

static void leg_sent(struct cp_call *c, unsigned i, bool ok)
{
    struct leg *g = leg_of(c, i);
    g->send_busy = false;
    if (g->sending != NULL) {
        grpc_byte_buffer_destroy(g->sending);
        g->sending = NULL;
    }
    if (!ok) {
        /* The call is over or broken; its status will say how. */
        g->send_failed = true;
    } else {
        leg_pump(c, i);
        start_reading(c);
    }
}

static void on_leg0_send(struct cr_grpc_op *op, bool ok)
{
    struct cp_call *c = CONTAINER(op, struct cp_call, legs[0].send_op);
    leg_sent(c, 0, ok);
    call_unref(c);
}

static void on_leg1_send(struct cr_grpc_op *op, bool ok)
{
    struct cp_call *c = CONTAINER(op, struct cp_call, legs[1].send_op);
    leg_sent(c, 1, ok);
    call_unref(c);
}

static void leg_maybe_done(struct cp_call *c, unsigned i)
{
    struct leg *g = leg_of(c, i);
    if (i == 0 && g->recv_done && g->status_done) {
        on_answer(c);
    }
}

/* Asks for the next message of the answer. */
static void leg_recv(struct cp_call *c, unsigned i, bool with_init)
{
    struct leg *g = leg_of(c, i);
    grpc_op ops[2];
    size_t n = 0;
    memset(ops, 0, sizeof ops);
    if (with_init) {
        ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
        ops[n].data.recv_initial_metadata.recv_initial_metadata =
            &g->reply.md_init;
        n++;
    }
    ops[n].op = GRPC_OP_RECV_MESSAGE;
    ops[n].data.recv_message.recv_message = &g->reply.recv;
    n++;
    if (!start(c, g->call, ops, n, &g->recv_op)) {
        g->recv_done = true;
        leg_cancel(g);
    }
}

static int resp_push(struct cp_call *c, grpc_byte_buffer *bb)
{
    if (c->n_resp == c->cap_resp) {
        size_t cap = c->cap_resp == 0 ? 2 : c->cap_resp * 2;
        grpc_byte_buffer **v = realloc(c->resp, cap * sizeof *v);
        if (v == NULL) {
            return CP_ENOMEM;
        }
        c->resp = v;
        c->cap_resp = cap;
    }
    c->resp[c->n_resp++] = bb;
    return 0;
}

static void leg_received(struct cp_call *c, unsigned i, bool ok)
{
    struct leg *g = leg_of(c, i);
    grpc_byte_buffer *bb = g->reply.recv;
    g->reply.recv = NULL;
    if (c->unary) {
        /* The one batch of a unary leg: request sent, answer and status
         * received. */
        if (g->sending != NULL) {
            grpc_byte_buffer_destroy(g->sending);
            g->sending = NULL;
        }
        if (bb != NULL && (i != 0 || resp_push(c, bb) != 0)) {
            grpc_byte_buffer_destroy(bb);
        }
        g->recv_done = g->status_done = true;
        leg_maybe_done(c, i);
        return;
    }
    if (bb != NULL) {
        /* The duplicate's answer goes nowhere; the original's waits until
         * the status is in, for the response faults. */
        if (i != 0 || resp_push(c, bb) != 0) {
            grpc_byte_buffer_destroy(bb);
            if (i == 0) {
                leg_cancel(g);
            }
        }
        if (ok) {
            leg_recv(c, i, false);
            return;
        }
    }
    g->recv_done = true;
    leg_maybe_done(c, i);
}

static void on_leg0_recv(struct cr_grpc_op *op, bool ok)
{
    struct cp_call *c = CONTAINER(op, struct cp_call, legs[0].recv_op);
    leg_received(c, 0, ok);
    call_unref(c);
}

static void on_leg1_recv(struct cr_grpc_op *op, bool ok)
{
    struct cp_call *c = CONTAINER(op, struct cp_call, legs[1].recv_op);
    leg_received(c, 1, ok);
    call_unref(c);
}

static void leg_status(struct cp_call *c, unsigned i)
{
    struct leg *g = leg_of(c, i);
    g->status_done = true;
    leg_maybe_done(c, i);
}

static void on_leg0_status(struct cr_grpc_op *op, bool ok)
{
    struct cp_call *c = CONTAINER(op, struct cp_call, legs[0].status_op);
    (void)ok; /* RECV_STATUS_ON_CLIENT always succeeds */
    leg_status(c, 0);
    call_unref(c);
}

static void on_leg1_status(struct cr_grpc_op *op, bool ok)
{
    struct cp_call *c = CONTAINER(op, struct cp_call, legs[1].status_op);
    (void)ok;
    leg_status(c, 1);
    call_unref(c);
}

/* A unary leg in one batch: the caller's metadata, its message (if any),
 * the half-close, and the answer's metadata, message and status. (An
 * answer of more messages than one would never complete: a method is
 * declared unary only if it is.) */
static void leg_start_unary(struct cp_call *c, unsigned i)
{
    struct leg *g = leg_of(c, i);
    grpc_op ops[6];
    size_t n = 0;
    memset(ops, 0, sizeof ops);
    ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[n].data.send_initial_metadata.count = c->in_md.count;
    ops[n].data.send_initial_metadata.metadata = c->in_md.metadata;
    n++;
    if (g->q_n > 0) {
        g->sending = g->q[g->q_head++];
        g->q_n--;
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n].data.send_message.send_message = g->sending;
        n++;
    }
    ops[n++].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    n += cr_grpc_reply_ops(&g->reply, ops + n);
    g->sent_init = g->sent_close = true;
    if (!start(c, g->call, ops, n, &g->recv_op)) {
        if (g->sending != NULL) {
            grpc_byte_buffer_destroy(g->sending);
            g->sending = NULL;
        }
        g->reply.status = GRPC_STATUS_INTERNAL;
        g->send_failed = g->recv_done = g->status_done = true;
        grpc_call_cancel(g->call, NULL);
        leg_maybe_done(c, i);
    }
}

/* Starts a client call to the target with the caller's method, metadata
 * and deadline. */
static void leg_start(struct cp_call *c, unsigned i, gpr_timespec deadline)
{
    struct leg *g = leg_of(c, i);
    grpc_op op;
    g->call = grpc_channel_create_call(c->link->channel, NULL,
                                       GRPC_PROPAGATE_DEFAULTS, cq_of(c),
                                       c->method, NULL, deadline, NULL);
    if (g->call == NULL) {
        g->reply.status = GRPC_STATUS_UNAVAILABLE;
        g->reply.details = grpc_slice_from_static_string(
            "craft-proxy: cannot create a call to the target");
        g->recv_done = g->status_done = true;
        leg_maybe_done(c, i);
        return;
    }
    c->ctr->forwarded++;
    if (c->unary) {
        leg_start_unary(c, i);
        return;
    }
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    op.data.recv_status_on_client.trailing_metadata = &g->reply.md_trail;
    op.data.recv_status_on_client.status = &g->reply.status;
    op.data.recv_status_on_client.status_details = &g->reply.details;
    op.data.recv_status_on_client.error_string = &g->reply.error_string;
    if (!start(c, g->call, &op, 1, &g->status_op)) {
        g->reply.status = GRPC_STATUS_INTERNAL;
        g->status_done = true;
        leg_cancel(g);
    }
    leg_recv(c, i, true);
    leg_pump(c, i);
}

static void on_dup_delay(uv_timer_t *t)
{
    struct cp_call *c = t->data;
    c->dup_pending = false;
    c->ctr->duplicated++;
    leg_start(
        c, 1,
        gpr_time_add(c->deadline, gpr_time_from_millis(c->d.duplicate_delay_ms,
                                                       GPR_TIMESPAN)));
    call_unref(c);
}

/* ------------------------------------------------------------------------
 * Reading the caller's messages */

/* Reads the caller's next message, unless a live leg already has two
 * waiting (the caller then waits on HTTP/2 flow control). A duplicate
 * that has not started yet keeps every message for later. */
static void start_reading(struct cp_call *c)
{
    grpc_op op;
    if (c->reading || c->in_eos || c->eos_pending || c->in_failed ||
        c->closed || c->status_sent) {
        return;
    }
    for (unsigned i = 0; i < c->n_legs; i++) {
        if (leg_live(&c->legs[i]) && c->legs[i].q_n >= 2) {
            return;
        }
    }
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &c->in_buf;
    if (start(c, c->in, &op, 1, &c->recv_op)) {
        c->reading = true;
    }
}

static void cancel_legs(struct cp_call *c)
{
    for (unsigned i = 0; i < c->n_legs; i++) {
        leg_cancel(&c->legs[i]);
    }
    if (c->dup_pending) {
        c->dup_pending = false;
        timer_disarm(c, &c->dup_timer, c->dup_timer_inited);
    }
}

/* Hands a message of the caller to every leg that wants it: the original
 * takes the buffer, the duplicate a copy (which shares the slices). */
static void legs_push(struct cp_call *c, grpc_byte_buffer *bb)
{
    for (unsigned i = c->n_legs; i-- > 0;) {
        grpc_byte_buffer *mine = i == 0 ? bb : grpc_byte_buffer_copy(bb);
        bool wanted = leg_wants(c, i);
        if (!wanted || leg_push(&c->legs[i], mine) != 0) {
            grpc_byte_buffer_destroy(mine);
            if (wanted) {
                leg_cancel(&c->legs[i]);
            }
        }
    }
}

static void on_in_recv(struct cr_grpc_op *op, bool ok)
{
    struct cp_call *c = CONTAINER(op, struct cp_call, recv_op);
    grpc_byte_buffer *bb = c->in_buf;
    c->reading = false;
    c->in_buf = NULL;
    if (bb == NULL) {
        if (!ok || grpc_call_failed_before_recv_message(c->in)) {
            /* The caller's stream broke (cancelled, reset, too large):
             * the target must not take what came so far for the whole
             * stream. */
            c->in_failed = true;
            cancel_legs(c);
        } else {
            /* The end of the caller's messages. The C core reports a
             * stream that was reset the same way when the reset races
             * with this read; the cancellation then comes as the close
             * of the call, usually among the same completions. The
             * half-close goes to the target only after them (cp__eos),
             * so that the target does not take a broken stream for a
             * whole one. */
            struct cp_proxy *p = c->link->p;
            c->eos_pending = true;
            call_ref(c);
            c->eos_next = p->eos_list;
            p->eos_list = c;
            uv_check_start(&p->eos_check, cp__eos);
        }
        call_unref(c);
        return;
    }
    c->ctr->request_bytes += grpc_byte_buffer_length(bb);
    legs_push(c, bb);
    for (unsigned i = 0; i < c->n_legs; i++) {
        leg_pump(c, i);
    }
    start_reading(c);
    call_unref(c);
}

void cp__eos(uv_check_t *h)
{
    struct cp_proxy *p = h->data;
    struct cp_call *c = p->eos_list;
    p->eos_list = NULL;
    uv_check_stop(h);
    while (c != NULL) {
        struct cp_call *next = c->eos_next;
        c->eos_next = NULL;
        c->eos_pending = false;
        if (!c->in_failed && !(c->closed && c->cancelled)) {
            c->in_eos = true;
            for (unsigned i = 0; i < c->n_legs; i++) {
                leg_pump(c, i);
            }
        }
        call_unref(c);
        c = next;
    }
}

/* ------------------------------------------------------------------------
 * The life of a call */

static void forward(struct cp_call *c)
{
    c->stage = ST_FORWARDING;
    c->n_legs = c->d.duplicate != 0 ? 2 : 1;
    if (c->d.duplicate != 0 && c->d.duplicate_delay_ms > 0) {
        c->dup_pending = true;
    }
    if (c->unary && c->in_buf != NULL) {
        /* The one message came with the call; the legs are yet to start. */
        grpc_byte_buffer *bb = c->in_buf;
        c->in_buf = NULL;
        c->ctr->request_bytes += grpc_byte_buffer_length(bb);
        if (c->n_legs == 2 &&
            leg_push(&c->legs[1], grpc_byte_buffer_copy(bb)) != 0) {
            c->n_legs = 1;
            c->dup_pending = false;
        }
        if (leg_push(&c->legs[0], bb) != 0) {
            grpc_byte_buffer_destroy(bb);
            reply_status(c, GRPC_STATUS_RESOURCE_EXHAUSTED,
                         "craft-proxy: out of memory");
            return;
        }
    }
    leg_start(c, 0, c->deadline);
    if (c->d.duplicate != 0) {
        if (!c->dup_pending) {
            c->ctr->duplicated++;
            leg_start(c, 1, c->deadline);
        } else {
            timer_arm(c, &c->dup_timer, &c->dup_timer_inited,
                      c->d.duplicate_delay_ms, on_dup_delay);
        }
    }
    start_reading(c);
}

static void on_request_delay(uv_timer_t *t)
{
    struct cp_call *c = t->data;
    if (!c->closed) {
        forward(c);
    }
    call_unref(c);
}

/* After the hold (if any): the request delay, then forwarding. */
static void proceed(struct cp_call *c)
{
    if (c->d.request_delay_ms > 0) {
        c->ctr->requests_delayed++;
        c->stage = ST_DELAYING;
        timer_arm(c, &c->timer, &c->timer_inited, c->d.request_delay_ms,
                  on_request_delay);
    } else {
        forward(c);
    }
}

static void held_remove(struct cp_link *l, struct cp_call *c)
{
    for (struct cp_call **pp = &l->held_head; *pp != NULL;
         pp = &(*pp)->held_next) {
        if (*pp == c) {
            *pp = c->held_next;
            c->held_next = NULL;
            l->n_held--;
            break;
        }
    }
    l->held_tail = NULL;
    for (struct cp_call *h = l->held_head; h != NULL; h = h->held_next) {
        l->held_tail = h;
    }
}

static void on_close(struct cr_grpc_op *op, bool ok)
{
    struct cp_call *c = CONTAINER(op, struct cp_call, close_op);
    (void)ok;
    c->closed = true;
    if (c->sending) {
        c->outcome_due = true;
    } else {
        count_outcome(c);
    }
    if (c->cancelled) {
        /* Deadline, cancellation, or the link went away: whatever the
         * call was waiting for stops, and the target's calls are
         * cancelled as they would be without the proxy. */
        c->in_failed = true;
        if (c->stage == ST_HELD) {
            held_remove(c->link, c);
        }
        timer_disarm(c, &c->timer, c->timer_inited);
        cancel_legs(c);
    }
    /* Otherwise the caller has its answer; a duplicate still on its way
     * goes on. */
    c->stage = ST_OVER;
    call_unref(c);
}

static void arm(struct cp_link *l, int rm);

/* Frees a call that never arrived (its request came back refused). */
static void slot_free(struct cp_call *c)
{
    if (c->rm < 0) {
        grpc_call_details_destroy(&c->details);
    }
    grpc_metadata_array_destroy(&c->in_md);
    free(c);
}

static void on_new(struct cr_grpc_op *op, bool ok)
{
    struct cp_call *c = CONTAINER(op, struct cp_call, new_op);
    struct cp_link *l = c->link;
    struct cp_proxy *p = l->p;
    grpc_op close;
    l->armed--;
    if (!ok) {
        /* The server is shutting down. */
        slot_free(c);
        link_maybe_free(l);
        return;
    }
    if (!l->closing) {
        arm(l, c->rm);
    }
    if (c->rm < 0) {
        c->method = c->details.method;
        c->deadline = c->details.deadline;
    }
    c->pending = 1; /* this callback */
    c->next = l->calls;
    if (l->calls != NULL) {
        l->calls->prev = c;
    }
    l->calls = c;
    l->n_calls++;
    c->ctr = cp_stats_get(&l->stats, method_ptr(c), method_len(c));
    c->ctr->calls++;
    filter_md(&c->in_md);
    memset(&close, 0, sizeof close);
    close.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    close.data.recv_close_on_server.cancelled = &c->cancelled;
    if (!start(c, c->in, &close, 1, &c->close_op)) {
        grpc_call_cancel(c->in, NULL);
        c->stage = ST_OVER;
        call_unref(c);
        return;
    }
    if (l->closing) {
        reply_status(c, GRPC_STATUS_UNAVAILABLE,
                     "craft-proxy: link %s is being removed", l->name);
        call_unref(c);
        return;
    }
    cp_decide(&p->faults, l->from, l->to, method_ptr(c), method_len(c), &l->rng,
              &c->d);
    if (c->d.reset != 0) {
        c->ctr->reset++;
        reply_status(c, GRPC_STATUS_UNAVAILABLE,
                     "craft-proxy: link %s reset (fault %" PRIu64 ")", l->name,
                     c->d.reset);
    } else if (c->d.blackhole != 0) {
        c->ctr->blackholed++;
        c->stage = ST_SILENT;
    } else if (c->d.drop_request != 0) {
        c->ctr->requests_dropped++;
        if (c->d.drop_request_blackhole) {
            c->stage = ST_SILENT;
        } else {
            reply_status(c, GRPC_STATUS_UNAVAILABLE,
                         "craft-proxy: request dropped on link %s (fault "
                         "%" PRIu64 ")",
                         l->name, c->d.drop_request);
        }
    } else if (c->d.hold != 0) {
        c->ctr->held++;
        c->stage = ST_HELD;
        if (l->held_tail != NULL) {
            l->held_tail->held_next = c;
        } else {
            l->held_head = c;
        }
        l->held_tail = c;
        l->n_held++;
    } else {
        proceed(c);
    }
    call_unref(c);
}

/* Arms a request for a new call: of declared unary method rm (whose
 * message comes with the call), or of any other method (rm < 0). */
static void arm(struct cp_link *l, int rm)
{
    struct cp_call *c = calloc(1, sizeof *c);
    grpc_completion_queue *cq = l->p->gl.cq;
    grpc_call_error e;
    if (c == NULL) {
        cp__log(l->p, "warning", "link=%s cannot arm a call: out of memory",
                l->name);
        return;
    }
    c->link = l;
    c->rm = rm;
    c->unary = rm >= 0;
    c->new_op.cb = on_new;
    c->close_op.cb = on_close;
    c->recv_op.cb = on_in_recv;
    c->send_op.cb = on_in_sent;
    c->legs[0].send_op.cb = on_leg0_send;
    c->legs[1].send_op.cb = on_leg1_send;
    c->legs[0].recv_op.cb = on_leg0_recv;
    c->legs[1].recv_op.cb = on_leg1_recv;
    c->legs[0].status_op.cb = on_leg0_status;
    c->legs[1].status_op.cb = on_leg1_status;
    for (unsigned i = 0; i < 2; i++) {
        cr_grpc_reply_init(&c->legs[i].reply);
    }
    grpc_metadata_array_init(&c->in_md);
    if (rm >= 0) {
        c->method = grpc_slice_from_static_string(l->p->unary[rm]);
        e = grpc_server_request_registered_call(l->server, l->unary_methods[rm],
                                                &c->in, &c->deadline, &c->in_md,
                                                &c->in_buf, cq, cq, &c->new_op);
    } else {
        grpc_call_details_init(&c->details);
        e = grpc_server_request_call(l->server, &c->in, &c->details, &c->in_md,
                                     cq, cq, &c->new_op);
    }
    if (e != GRPC_CALL_OK) {
        cp__log(l->p, "grpc-error", "link=%s request_call=%d", l->name, (int)e);
        slot_free(c);
        return;
    }
    l->armed++;
}

static void leg_destroy(struct leg *g)
{
    for (size_t k = 0; k < g->q_n; k++) {
        grpc_byte_buffer_destroy(g->q[g->q_head + k]);
    }
    free(g->q);
    assert(g->sending == NULL && g->reply.recv == NULL);
    cr_grpc_reply_destroy(&g->reply);
    if (g->call != NULL) {
        grpc_call_unref(g->call);
    }
}

static void on_handle_closed(uv_handle_t *h)
{
    struct cp_call *c = h->data;
    if (--c->closing_handles == 0) {
        free(c);
    }
}

static void call_free(struct cp_call *c)
{
    struct cp_link *l = c->link;
    if (c->in_buf != NULL) {
        /* A declared unary call's message, never forwarded. */
        grpc_byte_buffer_destroy(c->in_buf);
    }
    if (c->prev != NULL) {
        c->prev->next = c->next;
    } else {
        l->calls = c->next;
    }
    if (c->next != NULL) {
        c->next->prev = c->prev;
    }
    l->n_calls--;
    for (unsigned i = 0; i < 2; i++) {
        leg_destroy(&c->legs[i]);
    }
    for (size_t k = 0; k < c->n_resp; k++) {
        grpc_byte_buffer_destroy(c->resp[k]);
    }
    free(c->resp);
    if (c->has_reply_details) {
        grpc_slice_unref(c->reply_details);
    }
    grpc_metadata_array_destroy(&c->in_md);
    if (c->rm < 0) {
        grpc_call_details_destroy(&c->details);
    }
    grpc_call_unref(c->in);
    c->link = NULL;
    if (c->timer_inited) {
        c->closing_handles++;
        uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    }
    if (c->dup_timer_inited) {
        c->closing_handles++;
        uv_close((uv_handle_t *)&c->dup_timer, on_handle_closed);
    }
    if (c->closing_handles == 0) {
        free(c);
    }
    link_maybe_free(l);
}

/* ------------------------------------------------------------------------
 * Links */

/* HOST:PORT with the port the server bound. */
static void bound_address(const char *listen, int port, char *out)
{
    const char *colon = strrchr(listen, ':');
    int host_len = colon != NULL ? (int)(colon - listen) : 0;
    snprintf(out, CP_ADDRESS_MAX, "%.*s:%d", host_len, listen, port);
}

int cp__link_open(struct cp_proxy *p,
                  cp_node from,
                  cp_node to,
                  const char *listen,
                  const char *target,
                  struct cp_link **out,
                  char *errmsg)
{
    struct cp_link *l = calloc(1, sizeof *l);
    grpc_server_credentials *creds;
    grpc_arg args[16];
    grpc_channel_args ca;
    int port;
    if (l == NULL) {
        return CP_ENOMEM;
    }
    l->p = p;
    l->from = from;
    l->to = to;
    cp_link_format(from, to, l->name);
    snprintf(l->target, sizeof l->target, "%s", target);
    l->server = grpc_server_create(cp__channel_args(p, true, args, &ca), NULL);
    grpc_server_register_completion_queue(l->server, p->gl.cq, NULL);
    l->unary_methods = calloc(p->n_unary + 1, sizeof *l->unary_methods);
    if (l->unary_methods == NULL) {
        grpc_server_destroy(l->server);
        free(l);
        return CP_ENOMEM;
    }
    for (size_t i = 0; i < p->n_unary; i++) {
        l->unary_methods[i] = grpc_server_register_method(
            l->server, p->unary[i], NULL,
            GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
    }
    creds = grpc_insecure_server_credentials_create();
    port = grpc_server_add_http2_port(l->server, listen, creds);
    grpc_server_credentials_release(creds);
    if (port == 0) {
        snprintf(errmsg, CP_ERRMSG_SIZE,
                 "link %s: cannot listen on %.80s (in use, or not an "
                 "address of this machine)",
                 l->name, listen);
        grpc_server_destroy(l->server);
        free(l->unary_methods);
        free(l);
        return CP_EBIND;
    }
    grpc_server_start(l->server);
    bound_address(listen, port, l->listen);
    l->channel = grpc_channel_create(target, p->creds,
                                     cp__channel_args(p, false, args, &ca));
    cp_rng_seed(&l->rng, p->seed, l->name);
    cp_stats_init(&l->stats);
    for (unsigned i = 0; i < CP__ARMED; i++) {
        arm(l, -1);
    }
    for (size_t m = 0; m < p->n_unary; m++) {
        for (unsigned i = 0; i < CP__ARMED_UNARY; i++) {
            arm(l, (int)m);
        }
    }
    *out = l;
    return 0;
}

static void on_link_shutdown(struct cr_grpc_op *op, bool ok)
{
    struct cp_link *l = CONTAINER(op, struct cp_link, shutdown_op);
    (void)ok;
    l->shut_down = true;
    link_maybe_free(l);
}

static void link_maybe_free(struct cp_link *l)
{
    struct cp_proxy *p = l->p;
    if (!l->closing || !l->shut_down || l->armed > 0 || l->n_calls > 0) {
        return;
    }
    for (struct cp_link **pp = &p->dying; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == l) {
            *pp = l->next;
            break;
        }
    }
    grpc_server_destroy(l->server);
    grpc_channel_destroy(l->channel);
    cp_stats_close(&l->stats);
    free(l->unary_methods);
    free(l);
    cp__maybe_stopped(p);
}

/* Ends a call now, whatever it was doing (the link goes away). */
static void call_abort(struct cp_call *c, const char *why)
{
    call_ref(c);
    if (!c->closed) {
        grpc_call_cancel_with_status(c->in, GRPC_STATUS_UNAVAILABLE, why, NULL);
    }
    if (c->stage == ST_HELD) {
        held_remove(c->link, c);
        c->stage = ST_OVER;
    }
    timer_disarm(c, &c->timer, c->timer_inited);
    cancel_legs(c);
    call_unref(c);
}

unsigned cp__link_close(struct cp_link *l)
{
    struct cp_proxy *p = l->p;
    unsigned n = 0;
    char why[96];
    snprintf(why, sizeof why, "craft-proxy: link %s was removed", l->name);
    l->closing = true;
    for (struct cp_call *c = l->calls, *next; c != NULL; c = next) {
        next = c->next;
        if (!c->closed) {
            n++;
        }
        call_abort(c, why);
    }
    l->shutdown_op.cb = on_link_shutdown;
    grpc_server_shutdown_and_notify(l->server, p->gl.cq, &l->shutdown_op);
    grpc_server_cancel_all_calls(l->server);
    l->next = p->dying;
    p->dying = l;
    return n;
}

unsigned cp__link_release(struct cp_link *l, bool all)
{
    struct cp_call *h = l->held_head;
    unsigned n = 0;
    l->held_head = l->held_tail = NULL;
    l->n_held = 0;
    while (h != NULL) {
        struct cp_call *c = h;
        h = h->held_next;
        c->held_next = NULL;
        if (all || !cp_faults_hold(&l->p->faults, l->from, l->to, method_ptr(c),
                                   method_len(c))) {
            call_ref(c);
            proceed(c);
            call_unref(c);
            n++;
        } else {
            if (l->held_tail != NULL) {
                l->held_tail->held_next = c;
            } else {
                l->held_head = c;
            }
            l->held_tail = c;
            l->n_held++;
        }
    }
    return n;
}

unsigned cp__link_active(const struct cp_link *l)
{
    unsigned n = 0;
    for (const struct cp_call *c = l->calls; c != NULL; c = c->next) {
        if (!c->closed) {
            n++;
        }
    }
    return n;
}
