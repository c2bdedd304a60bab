/* The proxy's state: links, fault rules, partitions, the timeline; start
 * and stop. See proxy.h and proxy_impl.h. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <grpc/grpc_security.h>

#include "grpc_call.h"
#include "proxy_impl.h"

/* ------------------------------------------------------------------------
 * Small helpers */

int cp__ids_push(struct cp_ids *ids, uint64_t id)
{
    if (ids->n == ids->cap) {
        size_t cap = ids->cap == 0 ? 8 : ids->cap * 2;
        uint64_t *v = realloc(ids->v, cap * sizeof *v);
        if (v == NULL) {
            return CP_ENOMEM;
        }
        ids->v = v;
        ids->cap = cap;
    }
    ids->v[ids->n++] = id;
    return 0;
}

void cp__ids_free(struct cp_ids *ids)
{
    free(ids->v);
    ids->v = NULL;
    ids->n = ids->cap = 0;
}

static void now(int64_t *wall_ms, uint64_t *mono_ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    *wall_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    *mono_ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void cp__log(struct cp_proxy *p, const char *evt, const char *fmt, ...)
{
    char ts[40];
    int64_t wall;
    uint64_t mono;
    va_list ap;
    if (p->log == NULL) {
        return;
    }
    now(&wall, &mono);
    cp_format_time(wall, ts, sizeof ts);
    fprintf(p->log, "ts=%s evt=%s ", ts, evt);
    va_start(ap, fmt);
    vfprintf(p->log, fmt, ap);
    va_end(ap);
    fputc('\n', p->log);
    fflush(p->log);
}

/* "3,4,5" (or "-") into buf. */
static void format_ids(const uint64_t *ids, size_t n, char *buf, size_t len)
{
    size_t used = 0;
    buf[0] = '\0';
    if (n == 0) {
        snprintf(buf, len, "-");
        return;
    }
    for (size_t i = 0; i < n && used < len; i++) {
        used += (size_t)snprintf(buf + used, len - used, "%s%" PRIu64,
                                 i > 0 ? "," : "", ids[i]);
    }
}

void cp__record(struct cp_proxy *p,
                const char *action,
                const char *detail,
                const uint64_t *ids,
                size_t n_ids)
{
    int64_t wall;
    uint64_t mono;
    char list[256];
    now(&wall, &mono);
    if (cp_timeline_add(&p->timeline, wall, mono, action, detail, ids, n_ids) !=
        0) {
        cp__log(p, "warning", "msg=\"timeline: out of memory\"");
    }
    format_ids(ids, n_ids, list, sizeof list);
    cp__log(p, action, "seq=%zu faults=%s detail=\"%s\"", p->timeline.n, list,
            detail);
}

grpc_channel_args *cp__channel_args(const struct cp_proxy *p,
                                    bool server,
                                    grpc_arg *args,
                                    grpc_channel_args *out)
{
    int n = 0;
    /* craftd pings every 2 s (keepalive): the servers accept it. */
    cr_grpc_common_args(args, &n, (int)p->max_message_bytes, server);
    cr_grpc_arg_int(args, &n, GRPC_ARG_HTTP2_BDP_PROBE, 0);
    if (!server) {
        /* GRPC-C-CORE.md: a restarted target is reached again within
         * about a second, a target that comes back on a new address is
         * re-resolved, and one that hangs with its connection open is
         * noticed by keepalive. The minimum "backoff" is the time a
         * connection attempt may take (handshake included): 100 ms was
         * too short on a loaded machine, 1 s still fails a hung target
         * quickly. Retries are off: the proxy sends exactly what the
         * faults say, and a target that is down gives UNAVAILABLE at once
         * (calls do not wait for it). Each link has its own connection
         * even when two links share a target, as two nodes would. */
        cr_grpc_arg_int(args, &n, GRPC_ARG_ENABLE_RETRIES, 0);
        cr_grpc_arg_int(args, &n, GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
        cr_grpc_arg_int(args, &n, GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
        cr_grpc_arg_int(args, &n, GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 1000);
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

struct cp_link *cp__link_find(struct cp_proxy *p, cp_node from, cp_node to)
{
    for (struct cp_link *l = p->links; l != NULL; l = l->next) {
        if (l->from == from && l->to == to) {
            return l;
        }
    }
    return NULL;
}

/* "1-2, 1-3, 2-1" (the first ones) into buf, for error messages. */
static void link_names(const struct cp_proxy *p, char *buf, size_t len)
{
    size_t used = 0;
    snprintf(buf, len, "none");
    for (const struct cp_link *l = p->links; l != NULL && used + 24 < len;
         l = l->next) {
        used += (size_t)snprintf(buf + used, len - used, "%s%s",
                                 used > 0 ? ", " : "", l->name);
    }
}

static int unknown_link(const struct cp_proxy *p,
                        cp_node from,
                        cp_node to,
                        char *errmsg)
{
    char names[120];
    link_names(p, names, sizeof names);
    snprintf(errmsg, CP_ERRMSG_SIZE,
             "unknown link %" PRIu32 "-%" PRIu32 " (links: %s)", from, to,
             names);
    return CP_EINVAL;
}

/* Held calls that no HOLD rule covers any more go on. */
static unsigned sweep_holds(struct cp_proxy *p)
{
    unsigned n = 0;
    for (struct cp_link *l = p->links; l != NULL; l = l->next) {
        if (l->n_held > 0) {
            n += cp__link_release(l, false);
        }
    }
    return n;
}

/* Removes the rules whose ids are in `ids` and records it. */
static void remove_rules(struct cp_proxy *p,
                         const struct cp_ids *ids,
                         const char *action,
                         const char *why)
{
    char detail[512];
    size_t used;
    used = (size_t)snprintf(detail, sizeof detail, "%s", why);
    for (size_t i = 0; i < ids->n; i++) {
        const struct cp_fault *f = cp_faults_find(&p->faults, ids->v[i]);
        char one[200];
        if (f != NULL) {
            cp_fault_describe(f, one, sizeof one);
            if (used < sizeof detail) {
                used += (size_t)snprintf(detail + used, sizeof detail - used,
                                         "%s%" PRIu64 ": %s",
                                         used > 0 ? "; " : "", f->id, one);
            }
        }
        cp_faults_remove(&p->faults, ids->v[i]);
    }
    if (detail[0] == '\0') {
        snprintf(detail, sizeof detail, "no faults");
    }
    cp__record(p, action, detail, ids->v, ids->n);
}

/* ------------------------------------------------------------------------
 * Control operations */

int cp__op_add_link(struct cp_proxy *p,
                    const char *name,
                    const char *listen,
                    const char *target,
                    struct cp_link **out,
                    char *errmsg)
{
    struct cp_link *l, **pp;
    cp_node from, to;
    char detail[CP_ADDRESS_MAX * 2 + 64];
    int rv;
    if ((rv = cp_link_parse(name, &from, &to, errmsg)) != 0 ||
        (rv = cp_address_check(listen, "listen address", errmsg)) != 0 ||
        (rv = cp_address_check(target, "target address", errmsg)) != 0) {
        return rv;
    }
    if ((l = cp__link_find(p, from, to)) != NULL) {
        snprintf(errmsg, CP_ERRMSG_SIZE,
                 "link %s exists already (listening on %.150s)", l->name,
                 l->listen);
        return CP_EEXIST;
    }
    if (p->stopping) {
        snprintf(errmsg, CP_ERRMSG_SIZE, "the proxy is stopping");
        return CP_EINVAL;
    }
    if ((rv = cp__link_open(p, from, to, listen, target, &l, errmsg)) != 0) {
        return rv;
    }
    for (pp = &p->links; *pp != NULL; pp = &(*pp)->next) {
        if ((*pp)->from > from || ((*pp)->from == from && (*pp)->to > to)) {
            break;
        }
    }
    l->next = *pp;
    *pp = l;
    snprintf(detail, sizeof detail, "%s listen=%s target=%s", l->name,
             l->listen, l->target);
    cp__record(p, "link-add", detail, NULL, 0);
    *out = l;
    return 0;
}

int cp__op_remove_link(struct cp_proxy *p,
                       const char *name,
                       unsigned *cancelled,
                       struct cp_ids *removed,
                       char *errmsg)
{
    struct cp_link *l, **pp;
    cp_node from, to;
    char detail[CP_ADDRESS_MAX + 64];
    int rv = cp_link_parse(name, &from, &to, errmsg);
    if (rv != 0) {
        return rv;
    }
    if ((l = cp__link_find(p, from, to)) == NULL) {
        return unknown_link(p, from, to, errmsg);
    }
    for (size_t i = 0; i < p->faults.n; i++) {
        const struct cp_fault *f = &p->faults.v[i];
        if (f->links.from == from && f->links.to == to &&
            cp__ids_push(removed, f->id) != 0) {
            cp__ids_free(removed);
            return CP_ENOMEM;
        }
    }
    for (pp = &p->links; *pp != l; pp = &(*pp)->next) {
    }
    *pp = l->next;
    snprintf(detail, sizeof detail, "%s listen=%s", l->name, l->listen);
    *cancelled = cp__link_close(l);
    for (size_t i = 0; i < removed->n; i++) {
        cp_faults_remove(&p->faults, removed->v[i]);
    }
    cp__record(p, "link-remove", detail, removed->v, removed->n);
    return 0;
}

int cp__op_set_fault(struct cp_proxy *p, struct cp_fault *f, char *errmsg)
{
    char detail[400];
    int rv = cp_fault_check(f, errmsg);
    if (rv != 0) {
        return rv;
    }
    if (cp_selector_is_link(&f->links) &&
        cp__link_find(p, f->links.from, f->links.to) == NULL) {
        return unknown_link(p, f->links.from, f->links.to, errmsg);
    }
    if ((rv = cp_faults_add(&p->faults, f, &f->id)) != 0) {
        return rv;
    }
    cp_fault_describe(f, detail, sizeof detail);
    cp__record(p, "fault-set", detail, &f->id, 1);
    return 0;
}

int cp__op_clear_ids(struct cp_proxy *p,
                     const uint64_t *ids,
                     size_t n,
                     struct cp_ids *removed,
                     unsigned *released,
                     char *errmsg)
{
    for (size_t i = 0; i < n; i++) {
        if (cp_faults_find(&p->faults, ids[i]) == NULL) {
            snprintf(errmsg, CP_ERRMSG_SIZE,
                     "no fault with id %" PRIu64 " (see ListFaults)", ids[i]);
            return CP_EINVAL;
        }
    }
    for (size_t i = 0; i < n; i++) {
        bool seen = false;
        for (size_t j = 0; j < i; j++) {
            seen = seen || ids[j] == ids[i];
        }
        if (!seen && cp__ids_push(removed, ids[i]) != 0) {
            cp__ids_free(removed);
            return CP_ENOMEM;
        }
    }
    remove_rules(p, removed, "fault-clear", "");
    *released = sweep_holds(p);
    return 0;
}

int cp__op_clear_links(struct cp_proxy *p,
                       const char *selector,
                       struct cp_ids *removed,
                       unsigned *released,
                       char *errmsg)
{
    struct cp_selector sel;
    int rv = cp_selector_parse(selector, &sel, errmsg);
    if (rv != 0) {
        return rv;
    }
    for (size_t i = 0; i < p->faults.n; i++) {
        if (cp_selector_covers(&sel, &p->faults.v[i].links) &&
            cp__ids_push(removed, p->faults.v[i].id) != 0) {
            cp__ids_free(removed);
            return CP_ENOMEM;
        }
    }
    *released = 0;
    if (removed->n > 0) {
        remove_rules(p, removed, "fault-clear", "");
        *released = sweep_holds(p);
    }
    return 0;
}

/* The nodes of partitions: the targets of live links, without repeats. */
static int known_nodes(const struct cp_proxy *p, cp_node **out, size_t *n)
{
    size_t cap = 0, k = 0;
    cp_node *v;
    for (const struct cp_link *l = p->links; l != NULL; l = l->next) {
        cap++;
    }
    v = malloc((cap + 1) * sizeof *v);
    if (v == NULL) {
        return CP_ENOMEM;
    }
    for (const struct cp_link *l = p->links; l != NULL; l = l->next) {
        bool seen = false;
        for (size_t i = 0; i < k && !seen; i++) {
            seen = v[i] == l->to;
        }
        if (!seen) {
            v[k++] = l->to;
        }
    }
    *out = v;
    *n = k;
    return 0;
}

int cp__op_partition(struct cp_proxy *p,
                     const char *spec,
                     bool blackhole,
                     struct cp_cut **cuts,
                     size_t *n_cuts,
                     struct cp_ids *made,
                     struct cp_ids *replaced,
                     char *errmsg)
{
    cp_node *nodes;
    size_t n_nodes, n_faults;
    struct cp_fault *faults;
    char detail[600];
    size_t used;
    int rv = known_nodes(p, &nodes, &n_nodes);
    if (rv != 0) {
        return rv;
    }
    rv = cp_partition_parse(spec, nodes, n_nodes, cuts, n_cuts, errmsg);
    free(nodes);
    if (rv != 0) {
        return rv;
    }
    if ((rv = cp_partition_faults(*cuts, *n_cuts, blackhole, &faults,
                                  &n_faults)) != 0) {
        goto err_after_cuts;
    }
    for (size_t i = 0; i < p->faults.n; i++) {
        if (p->faults.v[i].partition &&
            (rv = cp__ids_push(replaced, p->faults.v[i].id)) != 0) {
            goto err_after_faults;
        }
    }
    for (size_t i = 0; i < n_faults; i++) {
        uint64_t id;
        if ((rv = cp__ids_push(made, 0)) != 0 ||
            (rv = cp_faults_add(&p->faults, &faults[i], &id)) != 0) {
            /* Take back what was added: nothing changes. */
            for (size_t j = 0; j < i; j++) {
                cp_faults_remove(&p->faults, made->v[j]);
            }
            goto err_after_faults;
        }
        made->v[made->n - 1] = id;
    }
    free(faults);
    if (replaced->n > 0) {
        remove_rules(p, replaced, "heal", "replaced by a new partition");
    }
    used = (size_t)snprintf(detail, sizeof detail, "%s%s; cuts", spec,
                            blackhole ? " (blackhole)" : "");
    for (size_t i = 0; i < *n_cuts && used < sizeof detail; i++) {
        used += (size_t)snprintf(detail + used, sizeof detail - used,
                                 " %" PRIu32 ">%" PRIu32, (*cuts)[i].from,
                                 (*cuts)[i].to);
    }
    if (*n_cuts == 0) {
        snprintf(detail + used, sizeof detail - used, " none");
    }
    cp__record(p, "partition", detail, made->v, made->n);
    return 0;

err_after_faults:
    free(faults);
err_after_cuts:
    free(*cuts);
    *cuts = NULL;
    *n_cuts = 0;
    cp__ids_free(made);
    cp__ids_free(replaced);
    return rv;
}

int cp__op_heal(struct cp_proxy *p, struct cp_ids *removed)
{
    for (size_t i = 0; i < p->faults.n; i++) {
        if (p->faults.v[i].partition &&
            cp__ids_push(removed, p->faults.v[i].id) != 0) {
            cp__ids_free(removed);
            return CP_ENOMEM;
        }
    }
    remove_rules(p, removed, "heal", "");
    return 0;
}

int cp__op_release(struct cp_proxy *p,
                   const char *selector,
                   unsigned *released,
                   struct cp_ids *removed,
                   char *errmsg)
{
    struct cp_selector sel;
    char detail[64], why[CP_LINK_NAME_MAX];
    int rv = cp_selector_parse(selector, &sel, errmsg);
    if (rv != 0) {
        return rv;
    }
    if (cp_selector_is_link(&sel) &&
        cp__link_find(p, sel.from, sel.to) == NULL) {
        return unknown_link(p, sel.from, sel.to, errmsg);
    }
    for (size_t i = 0; i < p->faults.n; i++) {
        const struct cp_fault *f = &p->faults.v[i];
        if (f->kind == CP_HOLD && cp_selector_covers(&sel, &f->links) &&
            cp__ids_push(removed, f->id) != 0) {
            cp__ids_free(removed);
            return CP_ENOMEM;
        }
    }
    for (size_t i = 0; i < removed->n; i++) {
        cp_faults_remove(&p->faults, removed->v[i]);
    }
    *released = 0;
    for (struct cp_link *l = p->links; l != NULL; l = l->next) {
        if (cp_selector_matches(&sel, l->from, l->to)) {
            *released += cp__link_release(l, true);
        }
    }
    cp_selector_format(&sel, why);
    snprintf(detail, sizeof detail, "%s: %u calls released", why, *released);
    cp__record(p, "release", detail, removed->v, removed->n);
    return 0;
}

/* ------------------------------------------------------------------------
 * Start and stop */

static void free_proxy(struct cp_proxy *p)
{
    for (size_t i = 0; i < p->n_unary; i++) {
        free(p->unary[i]);
    }
    free(p->unary);
    cp_faults_close(&p->faults);
    cp_timeline_close(&p->timeline);
    free(p);
}

static void on_loop_stopped(void *data)
{
    struct cp_proxy *p = data;
    void (*done)(void *) = p->stop_done;
    void *done_data = p->stop_data;
    free_proxy(p);
    grpc_shutdown();
    if (done != NULL) {
        done(done_data);
    }
}

static void on_eos_check_closed(uv_handle_t *h)
{
    struct cp_proxy *p = h->data;
    cr_grpc_loop_stop(&p->gl, on_loop_stopped, p);
}

void cp__maybe_stopped(struct cp_proxy *p)
{
    if (!p->stopping || p->links != NULL || p->dying != NULL ||
        !cp__control_drained(p) || p->creds == NULL) {
        return;
    }
    grpc_channel_credentials_release(p->creds);
    p->creds = NULL;
    uv_close((uv_handle_t *)&p->eos_check, on_eos_check_closed);
}

void cp_proxy_stop(struct cp_proxy *p, void (*done)(void *data), void *data)
{
    if (p->stopping) {
        return;
    }
    p->stopping = true;
    p->stop_done = done;
    p->stop_data = data;
    cp__log(p, "stopping", "links=%s", p->links != NULL ? "closing" : "none");
    while (p->links != NULL) {
        struct cp_link *l = p->links;
        p->links = l->next;
        cp__link_close(l);
    }
    cp__control_stop(p);
    cp__maybe_stopped(p);
}

const char *cp_proxy_control_address(const struct cp_proxy *p)
{
    return p->control_address;
}

int cp_proxy_start(struct cp_proxy **out,
                   uv_loop_t *loop,
                   const struct cp_proxy_config *config,
                   char *errmsg)
{
    struct cp_proxy *p = calloc(1, sizeof *p);
    int rv;
    if (p == NULL) {
        snprintf(errmsg, CP_ERRMSG_SIZE, "out of memory");
        return CP_ENOMEM;
    }
    grpc_init();
    p->loop = loop;
    p->seed = config->seed;
    p->max_message_bytes = config->max_message_bytes;
    p->log = config->log;
    cp_faults_init(&p->faults);
    cp_timeline_init(&p->timeline);
    p->unary = calloc(config->n_unary + 1, sizeof *p->unary);
    for (size_t i = 0; p->unary != NULL && i < config->n_unary; i++) {
        if ((p->unary[i] = strdup(config->unary[i])) == NULL) {
            break;
        }
        p->n_unary++;
    }
    if (p->unary == NULL || p->n_unary < config->n_unary) {
        snprintf(errmsg, CP_ERRMSG_SIZE, "out of memory");
        free_proxy(p);
        grpc_shutdown();
        return CP_ENOMEM;
    }
    p->creds = grpc_insecure_credentials_create();
    p->control_shut_down = true; /* until it starts */
    if (cr_grpc_loop_start(&p->gl, loop) != 0) {
        snprintf(errmsg, CP_ERRMSG_SIZE, "cannot start the gRPC thread");
        grpc_channel_credentials_release(p->creds);
        free_proxy(p);
        grpc_shutdown();
        return CP_ENOMEM;
    }
    uv_check_init(loop, &p->eos_check);
    p->eos_check.data = p;
    rv = cp__control_start(p, config->control, errmsg);
    for (size_t i = 0; rv == 0 && i < config->n_links; i++) {
        const struct cp_link_spec *s = &config->links[i];
        char name[CP_LINK_NAME_MAX];
        struct cp_link *l;
        cp_link_format(s->from, s->to, name);
        rv = cp__op_add_link(p, name, s->listen, s->target, &l, errmsg);
    }
    if (rv != 0) {
        /* Undo in the normal way; the caller runs the loop to its end. */
        cp_proxy_stop(p, NULL, NULL);
        return rv;
    }
    cp__log(p, "ready", "control=%s seed=%" PRIu64 " links=%zu unary=%zu",
            p->control_address, p->seed, config->n_links, p->n_unary);
    *out = p;
    return 0;
}
