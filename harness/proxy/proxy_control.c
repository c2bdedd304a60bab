/* The control service, craft.proxy.ProxyControl (proto/proxy.proto), on
 * its own gRPC server on the proxy's completion queue: decodes a request,
 * runs the matching cp__op_* (which checks everything before it changes
 * anything) and answers. The only file that sees protobuf-c types of the
 * running proxy. */
#include <inttypes.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>

#include "grpc_call.h"
#include "proxy.pb-c.h"
#include "proxy_impl.h"

#define ARMED 2 /* requests armed per control method */

#define CONTAINER(ptr, type, field) \
    ((type *)(void *)((char *)(ptr)-offsetof(type, field)))

_Static_assert(CRAFT__PROXY__FAULT_KIND__RESET == (int)CP_RESET &&
                   CRAFT__PROXY__FAULT_KIND__DROP_REQUEST ==
                       (int)CP_DROP_REQUEST,
               "cp_fault_kind follows proxy.proto's FaultKind");

/* What a handler gives back: a packed answer, or a code and message. */
struct answer
{
    grpc_byte_buffer *reply;
    int rv;
    char errmsg[CP_ERRMSG_SIZE];
};

typedef void (*handler_fn)(struct cp_proxy *p,
                           const ProtobufCMessage *req,
                           struct answer *a);

static void pack(const ProtobufCMessage *m, struct answer *a)
{
    a->reply = cr_grpc_pack(m);
}

/* ------------------------------------------------------------------------
 * Conversions */

struct link_out
{
    Craft__Proxy__Link msg;
    struct cp_ids ids;
};

static int link_to_pb(const struct cp_proxy *p,
                      struct cp_link *l,
                      struct link_out *o)
{
    Craft__Proxy__Link init = CRAFT__PROXY__LINK__INIT;
    o->msg = init;
    memset(&o->ids, 0, sizeof o->ids);
    o->msg.name = l->name;
    o->msg.from_id = l->from;
    o->msg.to_id = l->to;
    o->msg.listen = l->listen;
    o->msg.target = l->target;
    o->msg.active_calls = cp__link_active(l);
    o->msg.held_calls = l->n_held;
    for (size_t i = 0; i < p->faults.n; i++) {
        if (cp_selector_matches(&p->faults.v[i].links, l->from, l->to) &&
            cp__ids_push(&o->ids, p->faults.v[i].id) != 0) {
            cp__ids_free(&o->ids);
            return CP_ENOMEM;
        }
    }
    o->msg.n_fault_ids = o->ids.n;
    o->msg.fault_ids = o->ids.v;
    return 0;
}

struct fault_out
{
    Craft__Proxy__Fault msg;
    char links[CP_LINK_NAME_MAX];
    char description[400];
};

static void fault_to_pb(const struct cp_fault *f, struct fault_out *o)
{
    Craft__Proxy__Fault init = CRAFT__PROXY__FAULT__INIT;
    o->msg = init;
    cp_selector_format(&f->links, o->links);
    cp_fault_describe(f, o->description, sizeof o->description);
    o->msg.id = f->id;
    o->msg.links = o->links;
    o->msg.method = (char *)f->method;
    o->msg.kind = (Craft__Proxy__FaultKind)f->kind;
    o->msg.chance_case = CRAFT__PROXY__FAULT__CHANCE_PROBABILITY;
    o->msg.probability = f->probability;
    o->msg.delay_ms = f->delay_ms;
    o->msg.jitter_ms = f->jitter_ms;
    o->msg.blackhole = f->blackhole;
    o->msg.partition = f->partition;
    o->msg.description = o->description;
}

static int fault_from_pb(const Craft__Proxy__Fault *m,
                         struct cp_fault *f,
                         char *errmsg)
{
    int rv;
    memset(f, 0, sizeof *f);
    if ((rv = cp_selector_parse(m->links, &f->links, errmsg)) != 0) {
        return rv;
    }
    if (strlen(m->method) >= sizeof f->method) {
        snprintf(errmsg, CP_ERRMSG_SIZE, "method is longer than %d bytes",
                 CP_METHOD_MAX - 1);
        return CP_EINVAL;
    }
    snprintf(f->method, sizeof f->method, "%s", m->method);
    f->kind = (enum cp_fault_kind)m->kind;
    f->probability = m->chance_case == CRAFT__PROXY__FAULT__CHANCE_PROBABILITY
                         ? m->probability
                         : 1.0;
    if ((rv = cp_delay_check(m->delay_ms, "delay_ms", &f->delay_ms, errmsg)) !=
            0 ||
        (rv = cp_delay_check(m->jitter_ms, "jitter_ms", &f->jitter_ms,
                             errmsg)) != 0) {
        return rv;
    }
    f->blackhole = m->blackhole;
    return cp_fault_check(f, errmsg);
}

/* ------------------------------------------------------------------------
 * Handlers */

static void list_links(struct cp_proxy *p,
                       const ProtobufCMessage *req,
                       struct answer *a)
{
    Craft__Proxy__ListLinksResponse r = CRAFT__PROXY__LIST_LINKS_RESPONSE__INIT;
    struct link_out *outs;
    size_t n = 0, made = 0;
    (void)req;
    for (struct cp_link *l = p->links; l != NULL; l = l->next) {
        n++;
    }
    outs = calloc(n + 1, sizeof *outs);
    r.links = calloc(n + 1, sizeof *r.links);
    if (outs == NULL || r.links == NULL) {
        a->rv = CP_ENOMEM;
        goto out;
    }
    for (struct cp_link *l = p->links; l != NULL; l = l->next) {
        if ((a->rv = link_to_pb(p, l, &outs[made])) != 0) {
            goto out;
        }
        r.links[made] = &outs[made].msg;
        made++;
    }
    r.n_links = made;
    r.seed = p->seed;
    pack(&r.base, a);
out:
    for (size_t i = 0; i < made; i++) {
        cp__ids_free(&outs[i].ids);
    }
    free(outs);
    free(r.links);
}

static void add_link(struct cp_proxy *p,
                     const ProtobufCMessage *req,
                     struct answer *a)
{
    const Craft__Proxy__AddLinkRequest *m =
        (const Craft__Proxy__AddLinkRequest *)req;
    Craft__Proxy__AddLinkResponse r = CRAFT__PROXY__ADD_LINK_RESPONSE__INIT;
    struct link_out o;
    struct cp_link *l;
    a->rv = cp__op_add_link(p, m->name,
                            m->listen[0] != '\0' ? m->listen : "127.0.0.1:0",
                            m->target, &l, a->errmsg);
    if (a->rv != 0 || (a->rv = link_to_pb(p, l, &o)) != 0) {
        return;
    }
    r.link = &o.msg;
    pack(&r.base, a);
    cp__ids_free(&o.ids);
}

static void remove_link(struct cp_proxy *p,
                        const ProtobufCMessage *req,
                        struct answer *a)
{
    const Craft__Proxy__RemoveLinkRequest *m =
        (const Craft__Proxy__RemoveLinkRequest *)req;
    Craft__Proxy__RemoveLinkResponse r =
        CRAFT__PROXY__REMOVE_LINK_RESPONSE__INIT;
    struct cp_ids removed = {NULL, 0, 0};
    unsigned cancelled = 0;
    a->rv = cp__op_remove_link(p, m->name, &cancelled, &removed, a->errmsg);
    if (a->rv == 0) {
        r.cancelled_calls = cancelled;
        r.n_removed_fault_ids = removed.n;
        r.removed_fault_ids = removed.v;
        pack(&r.base, a);
    }
    cp__ids_free(&removed);
}

static void set_fault(struct cp_proxy *p,
                      const ProtobufCMessage *req,
                      struct answer *a)
{
    const Craft__Proxy__SetFaultRequest *m =
        (const Craft__Proxy__SetFaultRequest *)req;
    Craft__Proxy__SetFaultResponse r = CRAFT__PROXY__SET_FAULT_RESPONSE__INIT;
    struct cp_fault f;
    struct fault_out o;
    if (m->fault == NULL) {
        snprintf(a->errmsg, CP_ERRMSG_SIZE, "the request has no fault");
        a->rv = CP_EINVAL;
        return;
    }
    if ((a->rv = fault_from_pb(m->fault, &f, a->errmsg)) != 0 ||
        (a->rv = cp__op_set_fault(p, &f, a->errmsg)) != 0) {
        return;
    }
    fault_to_pb(&f, &o);
    r.fault = &o.msg;
    pack(&r.base, a);
}

static void clear_faults(struct cp_proxy *p,
                         const ProtobufCMessage *req,
                         struct answer *a)
{
    const Craft__Proxy__ClearFaultsRequest *m =
        (const Craft__Proxy__ClearFaultsRequest *)req;
    Craft__Proxy__ClearFaultsResponse r =
        CRAFT__PROXY__CLEAR_FAULTS_RESPONSE__INIT;
    struct cp_ids removed = {NULL, 0, 0};
    unsigned released = 0;
    if ((m->n_ids > 0) == (m->links[0] != '\0')) {
        snprintf(a->errmsg, CP_ERRMSG_SIZE,
                 "give either ids or links (\"*\" clears every fault)");
        a->rv = CP_EINVAL;
        return;
    }
    if (m->n_ids > 0) {
        a->rv = cp__op_clear_ids(p, m->ids, m->n_ids, &removed, &released,
                                 a->errmsg);
    } else {
        a->rv = cp__op_clear_links(p, m->links, &removed, &released, a->errmsg);
    }
    if (a->rv == 0) {
        r.n_removed_ids = removed.n;
        r.removed_ids = removed.v;
        r.released_calls = released;
        pack(&r.base, a);
    }
    cp__ids_free(&removed);
}

static void list_faults(struct cp_proxy *p,
                        const ProtobufCMessage *req,
                        struct answer *a)
{
    Craft__Proxy__ListFaultsResponse r =
        CRAFT__PROXY__LIST_FAULTS_RESPONSE__INIT;
    struct fault_out *outs = calloc(p->faults.n + 1, sizeof *outs);
    (void)req;
    r.faults = calloc(p->faults.n + 1, sizeof *r.faults);
    if (outs == NULL || r.faults == NULL) {
        a->rv = CP_ENOMEM;
    } else {
        for (size_t i = 0; i < p->faults.n; i++) {
            fault_to_pb(&p->faults.v[i], &outs[i]);
            r.faults[i] = &outs[i].msg;
        }
        r.n_faults = p->faults.n;
        pack(&r.base, a);
    }
    free(outs);
    free(r.faults);
}

static void partition(struct cp_proxy *p,
                      const ProtobufCMessage *req,
                      struct answer *a)
{
    const Craft__Proxy__PartitionRequest *m =
        (const Craft__Proxy__PartitionRequest *)req;
    Craft__Proxy__PartitionResponse r = CRAFT__PROXY__PARTITION_RESPONSE__INIT;
    struct cp_ids made = {NULL, 0, 0}, replaced = {NULL, 0, 0};
    struct cp_cut *cuts = NULL;
    size_t n_cuts = 0;
    Craft__Proxy__Cut *cut_msgs = NULL;
    a->rv = cp__op_partition(p, m->spec, m->blackhole, &cuts, &n_cuts, &made,
                             &replaced, a->errmsg);
    if (a->rv != 0) {
        return;
    }
    cut_msgs = calloc(n_cuts + 1, sizeof *cut_msgs);
    r.cuts = calloc(n_cuts + 1, sizeof *r.cuts);
    if (cut_msgs == NULL || r.cuts == NULL) {
        /* The partition is in force; only the answer could not be made. */
        a->rv = CP_ENOMEM;
    } else {
        for (size_t i = 0; i < n_cuts; i++) {
            Craft__Proxy__Cut init = CRAFT__PROXY__CUT__INIT;
            cut_msgs[i] = init;
            cut_msgs[i].from_id = cuts[i].from;
            cut_msgs[i].to_id = cuts[i].to;
            r.cuts[i] = &cut_msgs[i];
        }
        r.n_cuts = n_cuts;
        r.n_fault_ids = made.n;
        r.fault_ids = made.v;
        r.n_replaced_ids = replaced.n;
        r.replaced_ids = replaced.v;
        pack(&r.base, a);
    }
    free(cut_msgs);
    free(r.cuts);
    free(cuts);
    cp__ids_free(&made);
    cp__ids_free(&replaced);
}

static void heal(struct cp_proxy *p,
                 const ProtobufCMessage *req,
                 struct answer *a)
{
    Craft__Proxy__HealResponse r = CRAFT__PROXY__HEAL_RESPONSE__INIT;
    struct cp_ids removed = {NULL, 0, 0};
    (void)req;
    if ((a->rv = cp__op_heal(p, &removed)) == 0) {
        r.n_removed_ids = removed.n;
        r.removed_ids = removed.v;
        pack(&r.base, a);
    }
    cp__ids_free(&removed);
}

static void release(struct cp_proxy *p,
                    const ProtobufCMessage *req,
                    struct answer *a)
{
    const Craft__Proxy__ReleaseRequest *m =
        (const Craft__Proxy__ReleaseRequest *)req;
    Craft__Proxy__ReleaseResponse r = CRAFT__PROXY__RELEASE_RESPONSE__INIT;
    struct cp_ids removed = {NULL, 0, 0};
    unsigned released = 0;
    a->rv = cp__op_release(p, m->links, &released, &removed, a->errmsg);
    if (a->rv == 0) {
        r.released_calls = released;
        r.n_removed_ids = removed.n;
        r.removed_ids = removed.v;
        pack(&r.base, a);
    }
    cp__ids_free(&removed);
}

static void counters_to_pb(const char *link,
                           const char *method,
                           const struct cp_counters *c,
                           Craft__Proxy__Counters *o)
{
    Craft__Proxy__Counters init = CRAFT__PROXY__COUNTERS__INIT;
    *o = init;
    o->link = (char *)link;
    o->method = (char *)method;
    o->calls = c->calls;
    o->forwarded = c->forwarded;
    o->ok = c->ok;
    o->failed = c->failed;
    o->request_bytes = c->request_bytes;
    o->response_bytes = c->response_bytes;
    o->requests_dropped = c->requests_dropped;
    o->responses_dropped = c->responses_dropped;
    o->requests_delayed = c->requests_delayed;
    o->responses_delayed = c->responses_delayed;
    o->duplicated = c->duplicated;
    o->held = c->held;
    o->blackholed = c->blackholed;
    o->reset = c->reset;
}

static int method_cmp(const void *a, const void *b)
{
    const Craft__Proxy__Counters *x = *(Craft__Proxy__Counters *const *)a;
    const Craft__Proxy__Counters *y = *(Craft__Proxy__Counters *const *)b;
    int c = strcmp(x->link, y->link);
    return c != 0 ? c : strcmp(x->method, y->method);
}

static void get_counters(struct cp_proxy *p,
                         const ProtobufCMessage *req,
                         struct answer *a)
{
    const Craft__Proxy__CountersRequest *m =
        (const Craft__Proxy__CountersRequest *)req;
    Craft__Proxy__CountersResponse r = CRAFT__PROXY__COUNTERS_RESPONSE__INIT;
    Craft__Proxy__Counters *outs;
    struct cp_selector sel = {0, 0};
    size_t cap = 0, n = 0;
    if (m->links[0] != '\0' &&
        (a->rv = cp_selector_parse(m->links, &sel, a->errmsg)) != 0) {
        return;
    }
    for (struct cp_link *l = p->links; l != NULL; l = l->next) {
        cap += l->stats.n + 1;
    }
    outs = calloc(cap + 1, sizeof *outs);
    r.counters = calloc(cap + 1, sizeof *r.counters);
    if (outs == NULL || r.counters == NULL) {
        a->rv = CP_ENOMEM;
        goto out;
    }
    for (struct cp_link *l = p->links; l != NULL; l = l->next) {
        if (!cp_selector_matches(&sel, l->from, l->to)) {
            continue;
        }
        for (size_t i = 0; i <= l->stats.n; i++) {
            const struct cp_method_stats *ms =
                i < l->stats.n ? l->stats.v[i] : &l->stats.other;
            if ((i == l->stats.n && ms->c.calls == 0) ||
                (m->method[0] != '\0' && strcmp(m->method, ms->method) != 0)) {
                continue;
            }
            counters_to_pb(l->name, ms->method, &ms->c, &outs[n]);
            r.counters[n] = &outs[n];
            n++;
        }
    }
    /* Links are already in (from, to) order; names sort differently
     * ("10-1" < "2-1"), so sort by what the answer shows. */
    qsort(r.counters, n, sizeof r.counters[0], method_cmp);
    r.n_counters = n;
    pack(&r.base, a);
out:
    free(outs);
    free(r.counters);
}

static void get_timeline(struct cp_proxy *p,
                         const ProtobufCMessage *req,
                         struct answer *a)
{
    const Craft__Proxy__TimelineRequest *m =
        (const Craft__Proxy__TimelineRequest *)req;
    Craft__Proxy__TimelineResponse r = CRAFT__PROXY__TIMELINE_RESPONSE__INIT;
    size_t first = m->after < p->timeline.n ? (size_t)m->after : p->timeline.n;
    size_t n = p->timeline.n - first;
    Craft__Proxy__TimelineEvent *outs = calloc(n + 1, sizeof *outs);
    char(*times)[40] = calloc(n + 1, sizeof *times);
    r.events = calloc(n + 1, sizeof *r.events);
    if (outs == NULL || times == NULL || r.events == NULL) {
        a->rv = CP_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        const struct cp_event *e = &p->timeline.v[first + i];
        Craft__Proxy__TimelineEvent init = CRAFT__PROXY__TIMELINE_EVENT__INIT;
        outs[i] = init;
        cp_format_time(e->wall_ms, times[i], sizeof times[i]);
        outs[i].seq = e->seq;
        outs[i].time = times[i];
        outs[i].mono_ms = e->mono_ms;
        outs[i].action = (char *)e->action;
        outs[i].detail = e->detail;
        outs[i].n_fault_ids = e->n_ids;
        outs[i].fault_ids = e->ids;
        r.events[i] = &outs[i];
    }
    r.n_events = n;
    pack(&r.base, a);
out:
    free(outs);
    free(times);
    free(r.events);
}

/* ------------------------------------------------------------------------
 * The server */

static const struct
{
    const char *path;
    const ProtobufCMessageDescriptor *req;
    handler_fn fn;
} methods[] = {
    {"/craft.proxy.ProxyControl/ListLinks",
     &craft__proxy__list_links_request__descriptor, list_links},
    {"/craft.proxy.ProxyControl/AddLink",
     &craft__proxy__add_link_request__descriptor, add_link},
    {"/craft.proxy.ProxyControl/RemoveLink",
     &craft__proxy__remove_link_request__descriptor, remove_link},
    {"/craft.proxy.ProxyControl/SetFault",
     &craft__proxy__set_fault_request__descriptor, set_fault},
    {"/craft.proxy.ProxyControl/ClearFaults",
     &craft__proxy__clear_faults_request__descriptor, clear_faults},
    {"/craft.proxy.ProxyControl/ListFaults",
     &craft__proxy__list_faults_request__descriptor, list_faults},
    {"/craft.proxy.ProxyControl/Partition",
     &craft__proxy__partition_request__descriptor, partition},
    {"/craft.proxy.ProxyControl/Heal", &craft__proxy__heal_request__descriptor,
     heal},
    {"/craft.proxy.ProxyControl/Release",
     &craft__proxy__release_request__descriptor, release},
    {"/craft.proxy.ProxyControl/GetCounters",
     &craft__proxy__counters_request__descriptor, get_counters},
    {"/craft.proxy.ProxyControl/GetTimeline",
     &craft__proxy__timeline_request__descriptor, get_timeline},
};
#define N_METHODS (sizeof methods / sizeof methods[0])

struct ctl_call
{
    struct cr_grpc_op op;
    struct cp_proxy *p;
    unsigned m;
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_byte_buffer *payload;
    grpc_byte_buffer *reply;
    grpc_slice details;
    int cancelled;
};

static void control_maybe_drained(struct cp_proxy *p)
{
    if (p->control != NULL && p->control_shut_down && p->control_pending == 0) {
        grpc_server_destroy(p->control);
        p->control = NULL;
        free(p->control_methods);
        p->control_methods = NULL;
        cp__maybe_stopped(p);
    }
}

static void ctl_free(struct ctl_call *c)
{
    struct cp_proxy *p = c->p;
    grpc_metadata_array_destroy(&c->md);
    if (c->payload != NULL) {
        grpc_byte_buffer_destroy(c->payload);
    }
    if (c->reply != NULL) {
        grpc_byte_buffer_destroy(c->reply);
    }
    grpc_slice_unref(c->details);
    if (c->call != NULL) {
        grpc_call_unref(c->call);
    }
    free(c);
    p->control_pending--;
    control_maybe_drained(p);
}

static void on_ctl_done(struct cr_grpc_op *op, bool ok)
{
    (void)ok;
    ctl_free(CONTAINER(op, struct ctl_call, op));
}

static void ctl_arm(struct cp_proxy *p, unsigned m);

static grpc_status_code status_of(int rv)
{
    switch (rv) {
        case CP_OK:
            return GRPC_STATUS_OK;
        case CP_ENOMEM:
            return GRPC_STATUS_RESOURCE_EXHAUSTED;
        case CP_EINVAL:
        case CP_EBIND:
        case CP_EEXIST:
        case CP_ENOTFOUND:
            return GRPC_STATUS_INVALID_ARGUMENT;
        default:
            return GRPC_STATUS_INTERNAL;
    }
}

/* Runs the handler of the call's method and answers in one batch. */
static void ctl_handle(struct ctl_call *c)
{
    struct answer a;
    ProtobufCMessage *req = NULL;
    grpc_op ops[4];
    size_t n = 0;
    grpc_status_code code;
    memset(&a, 0, sizeof a);
    req = cr_grpc_unpack(methods[c->m].req, c->payload, SIZE_MAX);
    if (req == NULL) {
        a.rv = CP_EINVAL;
        snprintf(a.errmsg, sizeof a.errmsg,
                 "cannot parse the request as %s (see proto/proxy.proto)",
                 methods[c->m].req->name);
    } else {
        methods[c->m].fn(c->p, req, &a);
        protobuf_c_message_free_unpacked(req, NULL);
    }
    if (a.rv != 0 && a.errmsg[0] == '\0') {
        snprintf(a.errmsg, sizeof a.errmsg, "%s", cp_strerror(a.rv));
    }
    code = status_of(a.rv);
    c->details = grpc_slice_from_copied_string(a.rv == 0 ? "" : a.errmsg);
    c->reply = a.rv == 0 ? a.reply : NULL;
    if (a.rv != 0 && a.reply != NULL) {
        grpc_byte_buffer_destroy(a.reply);
    }
    memset(ops, 0, sizeof ops);
    ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
    if (c->reply != NULL) {
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n].data.send_message.send_message = c->reply;
        n++;
    }
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = code;
    ops[n].data.send_status_from_server.status_details = &c->details;
    n++;
    ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[n].data.recv_close_on_server.cancelled = &c->cancelled;
    n++;
    c->op.cb = on_ctl_done;
    if (grpc_call_start_batch(c->call, ops, n, &c->op, NULL) != GRPC_CALL_OK) {
        ctl_free(c);
    }
}

static void on_ctl_new(struct cr_grpc_op *op, bool ok)
{
    struct ctl_call *c = CONTAINER(op, struct ctl_call, op);
    struct cp_proxy *p = c->p;
    if (!ok) {
        ctl_free(c);
        return;
    }
    if (!p->stopping) {
        ctl_arm(p, c->m);
    }
    ctl_handle(c);
}

static void ctl_arm(struct cp_proxy *p, unsigned m)
{
    struct ctl_call *c = calloc(1, sizeof *c);
    if (c == NULL) {
        return;
    }
    c->p = p;
    c->m = m;
    c->op.cb = on_ctl_new;
    c->details = grpc_empty_slice();
    grpc_metadata_array_init(&c->md);
    if (grpc_server_request_registered_call(
            p->control, p->control_methods[m], &c->call, &c->deadline, &c->md,
            &c->payload, p->gl.cq, p->gl.cq, &c->op) != GRPC_CALL_OK) {
        grpc_metadata_array_destroy(&c->md);
        free(c);
        return;
    }
    p->control_pending++;
}

static void on_control_shutdown(struct cr_grpc_op *op, bool ok)
{
    struct cp_proxy *p = CONTAINER(op, struct cp_proxy, control_shutdown_op);
    (void)ok;
    p->control_shut_down = true;
    p->control_pending--;
    control_maybe_drained(p);
}

/* 127.0.0.1, any 127.x.y.z, localhost or [::1]. */
static bool loopback(const char *address)
{
    size_t host_len = (size_t)(strrchr(address, ':') - address);
    return strncmp(address, "127.", 4) == 0 ||
           (host_len == 9 && strncmp(address, "localhost", 9) == 0) ||
           (host_len == 5 && strncmp(address, "[::1]", 5) == 0);
}

int cp__control_start(struct cp_proxy *p, const char *address, char *errmsg)
{
    grpc_server_credentials *creds;
    grpc_arg args[16];
    grpc_channel_args ca;
    int port, rv;
    if ((rv = cp_address_check(address, "--control", errmsg)) != 0) {
        return rv;
    }
    if (!loopback(address)) {
        snprintf(errmsg, CP_ERRMSG_SIZE,
                 "--control %.80s: the control API listens on a loopback "
                 "address only (127.0.0.1:PORT)",
                 address);
        return CP_EINVAL;
    }
    p->control_methods = calloc(N_METHODS, sizeof *p->control_methods);
    if (p->control_methods == NULL) {
        return CP_ENOMEM;
    }
    p->control = grpc_server_create(cp__channel_args(p, true, args, &ca), NULL);
    grpc_server_register_completion_queue(p->control, p->gl.cq, NULL);
    for (unsigned m = 0; m < N_METHODS; m++) {
        p->control_methods[m] = grpc_server_register_method(
            p->control, methods[m].path, NULL,
            GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
    }
    creds = grpc_insecure_server_credentials_create();
    port = grpc_server_add_http2_port(p->control, address, creds);
    grpc_server_credentials_release(creds);
    if (port == 0) {
        snprintf(errmsg, CP_ERRMSG_SIZE,
                 "cannot listen on %.80s (--control): in use, or not an "
                 "address of this machine",
                 address);
        grpc_server_destroy(p->control);
        p->control = NULL;
        free(p->control_methods);
        p->control_methods = NULL;
        return CP_EBIND;
    }
    grpc_server_start(p->control);
    p->control_shut_down = false;
    snprintf(p->control_address, sizeof p->control_address, "%.*s:%d",
             (int)(strrchr(address, ':') - address), address, port);
    for (unsigned m = 0; m < N_METHODS; m++) {
        for (unsigned i = 0; i < ARMED; i++) {
            ctl_arm(p, m);
        }
    }
    return 0;
}

void cp__control_stop(struct cp_proxy *p)
{
    if (p->control == NULL) {
        return;
    }
    p->control_shutdown_op.cb = on_control_shutdown;
    p->control_pending++;
    grpc_server_shutdown_and_notify(p->control, p->gl.cq,
                                    &p->control_shutdown_op);
    grpc_server_cancel_all_calls(p->control);
}

bool cp__control_drained(const struct cp_proxy *p)
{
    return p->control == NULL;
}
