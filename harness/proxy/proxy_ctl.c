/* See proxy_ctl.h. One synchronous call per command on a pluck completion
 * queue; answers are printed as text, or with --json as the answer
 * message itself (field names of proto/proxy.proto). */
#include "proxy_ctl.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/log.h>
#include <grpc/support/time.h>

#include "grpc_call.h"
#include "proxy.pb-c.h"
#include "proxy_fault.h"

#define ARGS_MAX 64

void cp_ctl_usage(FILE *f)
{
    fprintf(
        f,
        "usage: craft-proxy ctl [--control ADDR] [--timeout MS] [--json] "
        "COMMAND\n"
        "\n"
        "  --control ADDR   the proxy's control address (env "
        "CRAFT_PROXY_CONTROL)\n"
        "  --timeout MS     deadline of the call (5000)\n"
        "  --json           print the answer as JSON (proto/proxy.proto's "
        "fields)\n"
        "\n"
        "LINKS is a link selector: 1-2 (one link), 1-* (from node 1), *-2 "
        "(to\n"
        "node 2) or '*' (all). KIND is one of drop-request, drop-response,\n"
        "delay-request, delay-response, duplicate, hold, blackhole, reset.\n"
        "\n"
        "commands:\n"
        "  links                         links, addresses, calls, faults\n"
        "  add-link FROM-TO TARGET [--listen HOST:PORT]   (127.0.0.1:0)\n"
        "  remove-link FROM-TO\n"
        "  fault set LINKS KIND [--p P] [--method /pkg.Svc/M] [--delay MS]\n"
        "            [--jitter MS] [--blackhole]\n"
        "      --p: chance per call (1); --delay, --jitter: for delay-* and\n"
        "      duplicate (the copy's lag); --blackhole: a dropped call waits "
        "for\n"
        "      its deadline instead of failing with UNAVAILABLE\n"
        "  fault clear ID... | fault clear --links LINKS | fault clear "
        "--all\n"
        "  faults                        every fault in force\n"
        "  partition [--blackhole] SPEC  replaces the current partition:\n"
        "      isolate 3 | components 1,2 3,4,5 | majorities-ring "
        "[1,2,3,4,5]\n"
        "      | bridge [1,2 3 4,5] | one-way 1,2>3   (groups: '|' or "
        "blanks)\n"
        "  heal                          removes the partition\n"
        "  hold LINKS [--method M] [--p P]   calls wait for release\n"
        "  release LINKS                 held calls go on; holds removed\n"
        "  counters [LINKS] [--method M] per link and method\n"
        "  timeline [--after SEQ]        every change, with times\n");
}

struct ctl
{
    const char *control;
    long timeout_ms;
    bool json;
    grpc_channel *ch;
    grpc_completion_queue *cq;
};

/* ------------------------------------------------------------------------
 * JSON, generically from the message descriptors */

static void json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if (*p == '"' || *p == '\\') {
            fputc('\\', f);
            fputc(*p, f);
        } else if (*p < 0x20) {
            fprintf(f, "\\u%04x", *p);
        } else {
            fputc(*p, f);
        }
    }
    fputc('"', f);
}

static void json_message(FILE *f, const ProtobufCMessage *m);

static void json_value(FILE *f,
                       const ProtobufCFieldDescriptor *fd,
                       const void *v)
{
    switch (fd->type) {
        case PROTOBUF_C_TYPE_INT32:
        case PROTOBUF_C_TYPE_SINT32:
        case PROTOBUF_C_TYPE_SFIXED32:
            fprintf(f, "%" PRId32, *(const int32_t *)v);
            break;
        case PROTOBUF_C_TYPE_UINT32:
        case PROTOBUF_C_TYPE_FIXED32:
            fprintf(f, "%" PRIu32, *(const uint32_t *)v);
            break;
        case PROTOBUF_C_TYPE_INT64:
        case PROTOBUF_C_TYPE_SINT64:
        case PROTOBUF_C_TYPE_SFIXED64:
            fprintf(f, "%" PRId64, *(const int64_t *)v);
            break;
        case PROTOBUF_C_TYPE_UINT64:
        case PROTOBUF_C_TYPE_FIXED64:
            fprintf(f, "%" PRIu64, *(const uint64_t *)v);
            break;
        case PROTOBUF_C_TYPE_FLOAT:
            fprintf(f, "%.9g", (double)*(const float *)v);
            break;
        case PROTOBUF_C_TYPE_DOUBLE:
            fprintf(f, "%.17g", *(const double *)v);
            break;
        case PROTOBUF_C_TYPE_BOOL:
            fputs(*(const protobuf_c_boolean *)v ? "true" : "false", f);
            break;
        case PROTOBUF_C_TYPE_ENUM: {
            const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(
                fd->descriptor, *(const int *)v);
            if (ev != NULL) {
                json_string(f, ev->name);
            } else {
                fprintf(f, "%d", *(const int *)v);
            }
            break;
        }
        case PROTOBUF_C_TYPE_STRING:
            json_string(f, *(char *const *)v);
            break;
        case PROTOBUF_C_TYPE_MESSAGE:
            json_message(f, *(ProtobufCMessage *const *)v);
            break;
        case PROTOBUF_C_TYPE_BYTES:
            fputs("null", f); /* proxy.proto has no bytes fields */
            break;
    }
}

static size_t type_size(ProtobufCType t)
{
    switch (t) {
        case PROTOBUF_C_TYPE_INT32:
        case PROTOBUF_C_TYPE_SINT32:
        case PROTOBUF_C_TYPE_SFIXED32:
        case PROTOBUF_C_TYPE_UINT32:
        case PROTOBUF_C_TYPE_FIXED32:
        case PROTOBUF_C_TYPE_FLOAT:
        case PROTOBUF_C_TYPE_ENUM:
            return 4;
        case PROTOBUF_C_TYPE_BOOL:
            return sizeof(protobuf_c_boolean);
        case PROTOBUF_C_TYPE_STRING:
        case PROTOBUF_C_TYPE_MESSAGE:
            return sizeof(void *);
        case PROTOBUF_C_TYPE_BYTES:
            return sizeof(ProtobufCBinaryData);
        default:
            return 8;
    }
}

static void json_message(FILE *f, const ProtobufCMessage *m)
{
    const ProtobufCMessageDescriptor *d;
    bool first = true;
    if (m == NULL) {
        fputs("null", f);
        return;
    }
    d = m->descriptor;
    fputc('{', f);
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *fd = &d->fields[i];
        const char *base = (const char *)m;
        if ((fd->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
            *(const uint32_t *)(const void *)(base + fd->quantifier_offset) !=
                fd->id) {
            continue;
        }
        fprintf(f, "%s\"%s\":", first ? "" : ",", fd->name);
        first = false;
        if (fd->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n =
                *(const size_t *)(const void *)(base + fd->quantifier_offset);
            const char *arr = *(char *const *)(const void *)(base + fd->offset);
            fputc('[', f);
            for (size_t k = 0; k < n; k++) {
                fputs(k > 0 ? "," : "", f);
                json_value(f, fd, arr + k * type_size(fd->type));
            }
            fputc(']', f);
        } else {
            json_value(f, fd, base + fd->offset);
        }
    }
    fputc('}', f);
}

/* ------------------------------------------------------------------------
 * Calls */

static void quiet_log(gpr_log_func_args *args)
{
    (void)args;
}

/* Sends `req` to `method` and unpacks the answer into *resp (free it with
 * protobuf_c_message_free_unpacked). Prints the error and returns 1 if the
 * proxy refused or could not be reached. */
static int rpc(struct ctl *c,
               const char *method,
               const ProtobufCMessage *req,
               const ProtobufCMessageDescriptor *rd,
               ProtobufCMessage **resp)
{
    grpc_byte_buffer *send = cr_grpc_pack(req);
    struct cr_grpc_reply reply;
    grpc_op ops[6];
    grpc_call *call;
    grpc_event ev;
    int rv = 1;
    gpr_timespec deadline =
        gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                     gpr_time_from_millis(c->timeout_ms, GPR_TIMESPAN));
    cr_grpc_reply_init(&reply);
    call = grpc_channel_create_call(c->ch, NULL, GRPC_PROPAGATE_DEFAULTS, c->cq,
                                    grpc_slice_from_static_string(method), NULL,
                                    deadline, NULL);
    if (grpc_call_start_batch(call, ops, cr_grpc_unary_ops(send, &reply, ops),
                              c, NULL) != GRPC_CALL_OK) {
        fprintf(stderr, "craft-proxy ctl: cannot start the call\n");
        goto out;
    }
    ev = grpc_completion_queue_pluck(c->cq, c,
                                     gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    if (ev.type != GRPC_OP_COMPLETE) {
        fprintf(stderr, "craft-proxy ctl: the call did not complete\n");
        goto out;
    }
    if (reply.status != GRPC_STATUS_OK) {
        int n = (int)GRPC_SLICE_LENGTH(reply.details);
        const char *d = (const char *)GRPC_SLICE_START_PTR(reply.details);
        if (reply.status == GRPC_STATUS_UNAVAILABLE ||
            reply.status == GRPC_STATUS_DEADLINE_EXCEEDED) {
            fprintf(stderr,
                    "craft-proxy ctl: cannot reach the proxy at %s "
                    "(status %d: %.*s)\n",
                    c->control, (int)reply.status, n, d);
        } else {
            fprintf(stderr, "craft-proxy ctl: refused: %.*s\n", n, d);
        }
        goto out;
    }
    *resp = cr_grpc_unpack(rd, reply.recv, SIZE_MAX);
    if (*resp == NULL) {
        fprintf(stderr, "craft-proxy ctl: the answer cannot be parsed as %s\n",
                rd->name);
        goto out;
    }
    rv = 0;
out:
    grpc_byte_buffer_destroy(send);
    cr_grpc_reply_destroy(&reply);
    grpc_call_unref(call);
    return rv;
}

/* Prints the answer as JSON, or calls `text`. */
static int show(struct ctl *c,
                ProtobufCMessage *resp,
                void (*text)(const ProtobufCMessage *))
{
    if (c->json) {
        json_message(stdout, resp);
        fputc('\n', stdout);
    } else {
        text(resp);
    }
    protobuf_c_message_free_unpacked(resp, NULL);
    return 0;
}

#define CALL(c, name, req, lower, text)                                      \
    do {                                                                     \
        ProtobufCMessage *resp_ = NULL;                                      \
        if (rpc((c), "/craft.proxy.ProxyControl/" name, &(req).base,         \
                &craft__proxy__##lower##_response__descriptor, &resp_) != 0) \
            return 1;                                                        \
        return show((c), resp_, (text));                                     \
    } while (0)

static void print_ids(const char *label, const uint64_t *ids, size_t n)
{
    printf("%s", label);
    if (n == 0) {
        printf(" none");
    }
    for (size_t i = 0; i < n; i++) {
        printf("%s%" PRIu64, i == 0 ? " " : ",", ids[i]);
    }
    printf("\n");
}

/* ------------------------------------------------------------------------
 * Commands */

/* Finds "--name VALUE" in args (removing both); NULL if absent. A flag
 * without its value is reported and exits. */
static const char *take(int *argc, char **argv, const char *name, bool *bad)
{
    for (int i = 0; i < *argc; i++) {
        if (strcmp(argv[i], name) == 0) {
            const char *v;
            if (i + 1 >= *argc) {
                fprintf(stderr, "craft-proxy ctl: %s needs a value\n", name);
                *bad = true;
                return NULL;
            }
            v = argv[i + 1];
            memmove(&argv[i], &argv[i + 2],
                    (size_t)(*argc - i - 2) * sizeof argv[0]);
            *argc -= 2;
            return v;
        }
    }
    return NULL;
}

/* Finds a "--name" switch in args (removing it). */
static bool take_flag(int *argc, char **argv, const char *name)
{
    for (int i = 0; i < *argc; i++) {
        if (strcmp(argv[i], name) == 0) {
            memmove(&argv[i], &argv[i + 1],
                    (size_t)(*argc - i - 1) * sizeof argv[0]);
            (*argc)--;
            return true;
        }
    }
    return false;
}

static int usage_error(const char *what)
{
    fprintf(stderr, "craft-proxy ctl: %s (see craft-proxy ctl --help)\n", what);
    return 2;
}

/* Refuses leftover options and extra words. */
static int leftovers(int argc, char **argv, int expected)
{
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "--", 2) == 0) {
            fprintf(stderr, "craft-proxy ctl: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (argc != expected) {
        return usage_error(argc < expected ? "missing arguments"
                                           : "too many arguments");
    }
    return 0;
}

static bool parse_int64(const char *s, int64_t *out)
{
    char *end;
    long long v;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno != 0 || *s == '\0' || *end != '\0') {
        return false;
    }
    *out = v;
    return true;
}

static void text_links(const ProtobufCMessage *m)
{
    const Craft__Proxy__ListLinksResponse *r =
        (const Craft__Proxy__ListLinksResponse *)m;
    printf("%-12s %-22s %-22s %7s %5s %s\n", "LINK", "LISTEN", "TARGET",
           "ACTIVE", "HELD", "FAULTS");
    for (size_t i = 0; i < r->n_links; i++) {
        const Craft__Proxy__Link *l = r->links[i];
        printf("%-12s %-22s %-22s %7" PRIu32 " %5" PRIu32 " ", l->name,
               l->listen, l->target, l->active_calls, l->held_calls);
        print_ids("", l->fault_ids, l->n_fault_ids);
    }
    printf("seed %" PRIu64 "\n", r->seed);
}

static void text_add_link(const ProtobufCMessage *m)
{
    const Craft__Proxy__Link *l =
        ((const Craft__Proxy__AddLinkResponse *)m)->link;
    if (l != NULL) {
        printf("link %s listen %s target %s\n", l->name, l->listen, l->target);
    }
}

static void text_remove_link(const ProtobufCMessage *m)
{
    const Craft__Proxy__RemoveLinkResponse *r =
        (const Craft__Proxy__RemoveLinkResponse *)m;
    printf("removed; %" PRIu32 " calls cancelled\n", r->cancelled_calls);
    print_ids("faults removed:", r->removed_fault_ids, r->n_removed_fault_ids);
}

static void text_fault(const ProtobufCMessage *m)
{
    const Craft__Proxy__Fault *f =
        ((const Craft__Proxy__SetFaultResponse *)m)->fault;
    if (f != NULL) {
        printf("fault %" PRIu64 ": %s\n", f->id, f->description);
    }
}

static void text_faults(const ProtobufCMessage *m)
{
    const Craft__Proxy__ListFaultsResponse *r =
        (const Craft__Proxy__ListFaultsResponse *)m;
    if (r->n_faults == 0) {
        printf("no faults\n");
    }
    for (size_t i = 0; i < r->n_faults; i++) {
        printf("%" PRIu64 ": %s\n", r->faults[i]->id,
               r->faults[i]->description);
    }
}

static void text_clear(const ProtobufCMessage *m)
{
    const Craft__Proxy__ClearFaultsResponse *r =
        (const Craft__Proxy__ClearFaultsResponse *)m;
    print_ids("faults removed:", r->removed_ids, r->n_removed_ids);
    printf("held calls released: %" PRIu32 "\n", r->released_calls);
}

static void text_partition(const ProtobufCMessage *m)
{
    const Craft__Proxy__PartitionResponse *r =
        (const Craft__Proxy__PartitionResponse *)m;
    printf("cuts (messages from > do not reach):");
    if (r->n_cuts == 0) {
        printf(" none");
    }
    for (size_t i = 0; i < r->n_cuts; i++) {
        printf(" %" PRIu32 ">%" PRIu32, r->cuts[i]->from_id, r->cuts[i]->to_id);
    }
    printf("\n");
    print_ids("faults:", r->fault_ids, r->n_fault_ids);
    print_ids("replaced:", r->replaced_ids, r->n_replaced_ids);
}

static void text_heal(const ProtobufCMessage *m)
{
    const Craft__Proxy__HealResponse *r = (const Craft__Proxy__HealResponse *)m;
    print_ids("faults removed:", r->removed_ids, r->n_removed_ids);
}

static void text_release(const ProtobufCMessage *m)
{
    const Craft__Proxy__ReleaseResponse *r =
        (const Craft__Proxy__ReleaseResponse *)m;
    printf("released %" PRIu32 " calls\n", r->released_calls);
    print_ids("hold faults removed:", r->removed_ids, r->n_removed_ids);
}

static void text_counters(const ProtobufCMessage *m)
{
    const Craft__Proxy__CountersResponse *r =
        (const Craft__Proxy__CountersResponse *)m;
    printf(
        "%-10s %-36s %8s %8s %8s %7s %10s %10s %6s %6s %6s %6s %5s %5s "
        "%5s %5s\n",
        "LINK", "METHOD", "CALLS", "FWD", "OK", "FAILED", "REQ_BYTES",
        "RESP_BYTES", "DRQ", "DRS", "DLQ", "DLS", "DUP", "HELD", "BH", "RST");
    for (size_t i = 0; i < r->n_counters; i++) {
        const Craft__Proxy__Counters *c = r->counters[i];
        printf("%-10s %-36s %8" PRIu64 " %8" PRIu64 " %8" PRIu64 " %7" PRIu64
               " %10" PRIu64 " %10" PRIu64 " %6" PRIu64 " %6" PRIu64
               " %6" PRIu64 " %6" PRIu64 " %5" PRIu64 " %5" PRIu64 " %5" PRIu64
               " %5" PRIu64 "\n",
               c->link, c->method, c->calls, c->forwarded, c->ok, c->failed,
               c->request_bytes, c->response_bytes, c->requests_dropped,
               c->responses_dropped, c->requests_delayed, c->responses_delayed,
               c->duplicated, c->held, c->blackholed, c->reset);
    }
    printf(
        "(DRQ/DRS: requests/responses dropped, DLQ/DLS: delayed, DUP: "
        "copies sent, BH: blackholed, RST: reset)\n");
}

static void text_timeline(const ProtobufCMessage *m)
{
    const Craft__Proxy__TimelineResponse *r =
        (const Craft__Proxy__TimelineResponse *)m;
    for (size_t i = 0; i < r->n_events; i++) {
        const Craft__Proxy__TimelineEvent *e = r->events[i];
        printf("%" PRIu64 " %s mono=%" PRIu64 " %-11s %s", e->seq, e->time,
               e->mono_ms, e->action, e->detail);
        if (e->n_fault_ids > 0) {
            print_ids("  faults", e->fault_ids, e->n_fault_ids);
        } else {
            printf("\n");
        }
    }
}

static int cmd_fault_set(struct ctl *c, int argc, char **argv, bool hold)
{
    Craft__Proxy__SetFaultRequest req = CRAFT__PROXY__SET_FAULT_REQUEST__INIT;
    Craft__Proxy__Fault f = CRAFT__PROXY__FAULT__INIT;
    char errmsg[CP_ERRMSG_SIZE];
    enum cp_fault_kind kind = CP_HOLD;
    bool bad = false;
    const char *method = take(&argc, argv, "--method", &bad);
    const char *p = take(&argc, argv, "--p", &bad);
    const char *delay = hold ? NULL : take(&argc, argv, "--delay", &bad);
    const char *jitter = hold ? NULL : take(&argc, argv, "--jitter", &bad);
    bool blackhole = !hold && take_flag(&argc, argv, "--blackhole");
    int rv;
    if (bad || (rv = leftovers(argc, argv, hold ? 1 : 2)) != 0) {
        return 2;
    }
    if (!hold && cp_fault_kind_parse(argv[1], &kind, errmsg) != 0) {
        return usage_error(errmsg);
    }
    f.links = argv[0];
    f.kind = (Craft__Proxy__FaultKind)kind;
    f.method = (char *)(method != NULL ? method : "");
    if (p != NULL) {
        char *end;
        errno = 0;
        f.probability = strtod(p, &end);
        if (errno != 0 || *p == '\0' || *end != '\0') {
            return usage_error("--p takes a number, e.g. 0.25");
        }
        f.chance_case = CRAFT__PROXY__FAULT__CHANCE_PROBABILITY;
    }
    if ((delay != NULL && !parse_int64(delay, &f.delay_ms)) ||
        (jitter != NULL && !parse_int64(jitter, &f.jitter_ms))) {
        return usage_error("--delay and --jitter take milliseconds");
    }
    f.blackhole = blackhole;
    req.fault = &f;
    CALL(c, "SetFault", req, set_fault, text_fault);
}

static int cmd_fault_clear(struct ctl *c, int argc, char **argv)
{
    Craft__Proxy__ClearFaultsRequest req =
        CRAFT__PROXY__CLEAR_FAULTS_REQUEST__INIT;
    uint64_t ids[ARGS_MAX];
    bool bad = false;
    const char *links = take(&argc, argv, "--links", &bad);
    bool all = take_flag(&argc, argv, "--all");
    if (bad || leftovers(argc, argv, argc) != 0) {
        return 2;
    }
    if ((links != NULL) + all + (argc > 0) != 1) {
        return usage_error(
            "fault clear takes fault ids, --links LINKS or --all");
    }
    for (int i = 0; i < argc; i++) {
        int64_t v;
        if (!parse_int64(argv[i], &v) || v <= 0) {
            return usage_error("fault ids are positive numbers");
        }
        ids[i] = (uint64_t)v;
    }
    req.n_ids = (size_t)argc;
    req.ids = ids;
    req.links = (char *)(all ? "*" : links != NULL ? links : "");
    CALL(c, "ClearFaults", req, clear_faults, text_clear);
}

static int cmd_partition(struct ctl *c, int argc, char **argv)
{
    Craft__Proxy__PartitionRequest req = CRAFT__PROXY__PARTITION_REQUEST__INIT;
    char spec[1024];
    size_t used = 0;
    req.blackhole = take_flag(&argc, argv, "--blackhole");
    if (argc == 0) {
        return usage_error("partition needs a spec, e.g. isolate 3");
    }
    spec[0] = '\0';
    for (int i = 0; i < argc && used < sizeof spec; i++) {
        used += (size_t)snprintf(spec + used, sizeof spec - used, "%s%s",
                                 i > 0 ? " " : "", argv[i]);
    }
    if (used >= sizeof spec) {
        return usage_error("the partition spec is too long");
    }
    req.spec = spec;
    CALL(c, "Partition", req, partition, text_partition);
}

static int dispatch(struct ctl *c, int argc, char **argv)
{
    const char *cmd = argv[0];
    bool bad = false;
    argc--;
    argv++;
    if (strcmp(cmd, "links") == 0) {
        Craft__Proxy__ListLinksRequest req =
            CRAFT__PROXY__LIST_LINKS_REQUEST__INIT;
        if (leftovers(argc, argv, 0) != 0) {
            return 2;
        }
        CALL(c, "ListLinks", req, list_links, text_links);
    } else if (strcmp(cmd, "add-link") == 0) {
        Craft__Proxy__AddLinkRequest req = CRAFT__PROXY__ADD_LINK_REQUEST__INIT;
        const char *listen = take(&argc, argv, "--listen", &bad);
        if (bad || leftovers(argc, argv, 2) != 0) {
            return 2;
        }
        req.name = argv[0];
        req.target = argv[1];
        req.listen = (char *)(listen != NULL ? listen : "");
        CALL(c, "AddLink", req, add_link, text_add_link);
    } else if (strcmp(cmd, "remove-link") == 0) {
        Craft__Proxy__RemoveLinkRequest req =
            CRAFT__PROXY__REMOVE_LINK_REQUEST__INIT;
        if (leftovers(argc, argv, 1) != 0) {
            return 2;
        }
        req.name = argv[0];
        CALL(c, "RemoveLink", req, remove_link, text_remove_link);
    } else if (strcmp(cmd, "fault") == 0 && argc > 0 &&
               strcmp(argv[0], "set") == 0) {
        return cmd_fault_set(c, argc - 1, argv + 1, false);
    } else if (strcmp(cmd, "fault") == 0 && argc > 0 &&
               strcmp(argv[0], "clear") == 0) {
        return cmd_fault_clear(c, argc - 1, argv + 1);
    } else if (strcmp(cmd, "faults") == 0 ||
               (strcmp(cmd, "fault") == 0 && argc == 1 &&
                strcmp(argv[0], "list") == 0)) {
        Craft__Proxy__ListFaultsRequest req =
            CRAFT__PROXY__LIST_FAULTS_REQUEST__INIT;
        if (strcmp(cmd, "faults") == 0 && leftovers(argc, argv, 0) != 0) {
            return 2;
        }
        CALL(c, "ListFaults", req, list_faults, text_faults);
    } else if (strcmp(cmd, "partition") == 0) {
        return cmd_partition(c, argc, argv);
    } else if (strcmp(cmd, "heal") == 0) {
        Craft__Proxy__HealRequest req = CRAFT__PROXY__HEAL_REQUEST__INIT;
        if (leftovers(argc, argv, 0) != 0) {
            return 2;
        }
        CALL(c, "Heal", req, heal, text_heal);
    } else if (strcmp(cmd, "hold") == 0) {
        return cmd_fault_set(c, argc, argv, true);
    } else if (strcmp(cmd, "release") == 0) {
        Craft__Proxy__ReleaseRequest req = CRAFT__PROXY__RELEASE_REQUEST__INIT;
        if (leftovers(argc, argv, 1) != 0) {
            return 2;
        }
        req.links = argv[0];
        CALL(c, "Release", req, release, text_release);
    } else if (strcmp(cmd, "counters") == 0) {
        Craft__Proxy__CountersRequest req =
            CRAFT__PROXY__COUNTERS_REQUEST__INIT;
        const char *method = take(&argc, argv, "--method", &bad);
        if (bad || leftovers(argc, argv, argc > 0 ? 1 : 0) != 0) {
            return 2;
        }
        req.links = argc > 0 ? argv[0] : (char *)"";
        req.method = (char *)(method != NULL ? method : "");
        CALL(c, "GetCounters", req, counters, text_counters);
    } else if (strcmp(cmd, "timeline") == 0) {
        Craft__Proxy__TimelineRequest req =
            CRAFT__PROXY__TIMELINE_REQUEST__INIT;
        const char *after = take(&argc, argv, "--after", &bad);
        int64_t v = 0;
        if (bad || leftovers(argc, argv, 0) != 0) {
            return 2;
        }
        if (after != NULL && (!parse_int64(after, &v) || v < 0)) {
            return usage_error("--after takes a sequence number");
        }
        req.after = (uint64_t)v;
        CALL(c, "GetTimeline", req, timeline, text_timeline);
    }
    fprintf(stderr, "craft-proxy ctl: unknown command \"%s\"\n", cmd);
    cp_ctl_usage(stderr);
    return 2;
}

int cp_ctl_main(int argc, char **argv)
{
    struct ctl c;
    char *args[ARGS_MAX];
    int n = 0, rv;
    bool bad = false;
    memset(&c, 0, sizeof c);
    c.control = getenv("CRAFT_PROXY_CONTROL");
    c.timeout_ms = 5000;
    if (argc - 1 > ARGS_MAX) {
        return usage_error("too many arguments");
    }
    for (int i = 1; i < argc; i++) {
        args[n++] = argv[i];
    }
    if (take_flag(&n, args, "--help") || take_flag(&n, args, "-h")) {
        cp_ctl_usage(stdout);
        return 0;
    }
    {
        const char *control = take(&n, args, "--control", &bad);
        const char *timeout = take(&n, args, "--timeout", &bad);
        int64_t ms;
        if (bad) {
            return 2;
        }
        if (control != NULL) {
            c.control = control;
        }
        if (timeout != NULL) {
            if (!parse_int64(timeout, &ms) || ms <= 0 || ms > 3600000) {
                return usage_error("--timeout takes 1 to 3600000 ms");
            }
            c.timeout_ms = (long)ms;
        }
    }
    c.json = take_flag(&n, args, "--json");
    if (c.control == NULL || c.control[0] == '\0') {
        return usage_error(
            "say where the proxy is: --control HOST:PORT "
            "(or CRAFT_PROXY_CONTROL)");
    }
    if (n == 0) {
        cp_ctl_usage(stderr);
        return 2;
    }
    gpr_set_log_function(quiet_log);
    grpc_init();
    {
        grpc_channel_credentials *creds = grpc_insecure_credentials_create();
        c.ch = grpc_channel_create(c.control, creds, NULL);
        grpc_channel_credentials_release(creds);
    }
    c.cq = grpc_completion_queue_create_for_pluck(NULL);
    rv = dispatch(&c, n, args);
    grpc_channel_destroy(c.ch);
    grpc_completion_queue_shutdown(c.cq);
    while (grpc_completion_queue_pluck(c.cq, NULL,
                                       gpr_inf_future(GPR_CLOCK_REALTIME), NULL)
               .type != GRPC_QUEUE_SHUTDOWN) {
    }
    grpc_completion_queue_destroy(c.cq);
    grpc_shutdown();
    return rv;
}
