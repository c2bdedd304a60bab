/* Internals of the running proxy, shared by proxy.c (state and control
 * operations), proxy_forward.c (links and calls) and proxy_control.c (the
 * control service). Everything runs on the loop thread.
 *
 * Lifetimes. A link lives in p->links from cp__link_open until
 * cp__link_close, then in p->dying until its server has shut down and its
 * last call is freed. A call (struct cp_call) is allocated when a request
 * for a new call is armed on the link's server, and freed when its last
 * gRPC batch or timer has completed (`pending` drops to 0). A call never
 * outlives its link, and a link never outlives the proxy. */
#ifndef CRAFT_PROXY_IMPL_H
#define CRAFT_PROXY_IMPL_H

#include <stdbool.h>
#include <stdint.h>

#include <grpc/grpc.h>

#include "grpc_loop.h"
#include "proxy.h"
#include "proxy_fault.h"
#include "proxy_partition.h"
#include "proxy_stats.h"

#define CP__ARMED 16       /* generic new-call requests armed per link */
#define CP__ARMED_UNARY 16 /* requests armed per link and unary method */

struct cp_call;

struct cp_link
{
    struct cp_proxy *p;
    cp_node from, to;
    char name[CP_LINK_NAME_MAX];
    char listen[CP_ADDRESS_MAX]; /* as bound */
    char target[CP_ADDRESS_MAX];
    grpc_server *server;
    void **unary_methods; /* registered on server, one per p->unary */
    grpc_channel *channel;
    struct cp_rng rng;
    struct cp_link_stats stats;
    struct cp_call *calls; /* arrived, not yet freed */
    unsigned n_calls;
    struct cp_call *held_head, *held_tail; /* in arrival order */
    unsigned n_held;
    unsigned armed; /* requests armed on the server */
    bool closing;
    bool shut_down; /* the server's shutdown notification came */
    struct cr_grpc_op shutdown_op;
    struct cp_link *next;
};

/* A list of rule ids, for answers and the timeline. */
struct cp_ids
{
    uint64_t *v;
    size_t n, cap;
};

struct cp_proxy
{
    uv_loop_t *loop;
    struct cr_grpc_loop gl;
    uint64_t seed;
    size_t max_message_bytes;
    FILE *log;
    grpc_channel_credentials *creds;
    struct cp_faults faults;
    struct cp_timeline timeline;
    struct cp_link *links; /* by (from, to) */
    struct cp_link *dying; /* closed, draining */
    /* Methods declared unary (--unary): served through registered methods,
     * whose first message comes with the call, and forwarded in one batch.
     * Owned; the strings live as long as the proxy. */
    char **unary;
    size_t n_unary;
    /* Calls whose caller half-closed, checked once the completions at
     * hand have run (cp__eos). */
    uv_check_t eos_check;
    struct cp_call *eos_list;
    /* The control server (proxy_control.c). */
    grpc_server *control;
    char control_address[CP_ADDRESS_MAX];
    void **control_methods;
    unsigned control_pending; /* armed requests and replies in flight */
    bool control_shut_down;
    struct cr_grpc_op control_shutdown_op;
    /* Stopping. */
    bool stopping;
    void (*stop_done)(void *data);
    void *stop_data;
};

/* ------------------------------------------------------------------------
 * proxy.c */

/* Records a change in the timeline and the log. */
void cp__record(struct cp_proxy *p,
                const char *action,
                const char *detail,
                const uint64_t *ids,
                size_t n_ids);

/* Logs one line "evt=<evt> <fields>" (printf-style fields). */
void cp__log(struct cp_proxy *p, const char *evt, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The channel arguments of the proxy's servers (server true) and of its
 * channels to targets; `args` has room for 16. */
grpc_channel_args *cp__channel_args(const struct cp_proxy *p,
                                    bool server,
                                    grpc_arg *args,
                                    grpc_channel_args *out);

/* The live link FROM-TO, or NULL. */
struct cp_link *cp__link_find(struct cp_proxy *p, cp_node from, cp_node to);

/* Called when a closed link or the control server has drained: finishes
 * cp_proxy_stop once nothing is left. */
void cp__maybe_stopped(struct cp_proxy *p);

int cp__ids_push(struct cp_ids *ids, uint64_t id);
void cp__ids_free(struct cp_ids *ids);

/* The control operations. Each checks everything first: an error (with
 * errmsg) changes nothing. Outputs in cp_ids are the caller's to free. */
int cp__op_add_link(struct cp_proxy *p,
                    const char *name,
                    const char *listen,
                    const char *target,
                    struct cp_link **out,
                    char *errmsg);
int cp__op_remove_link(struct cp_proxy *p,
                       const char *name,
                       unsigned *cancelled,
                       struct cp_ids *removed,
                       char *errmsg);
int cp__op_set_fault(struct cp_proxy *p, struct cp_fault *f, char *errmsg);
int cp__op_clear_ids(struct cp_proxy *p,
                     const uint64_t *ids,
                     size_t n,
                     struct cp_ids *removed,
                     unsigned *released,
                     char *errmsg);
int cp__op_clear_links(struct cp_proxy *p,
                       const char *selector,
                       struct cp_ids *removed,
                       unsigned *released,
                       char *errmsg);
int cp__op_partition(struct cp_proxy *p,
                     const char *spec,
                     bool blackhole,
                     struct cp_cut **cuts,
                     size_t *n_cuts,
                     struct cp_ids *made,
                     struct cp_ids *replaced,
                     char *errmsg);
int cp__op_heal(struct cp_proxy *p, struct cp_ids *removed);
int cp__op_release(struct cp_proxy *p,
                   const char *selector,
                   unsigned *released,
                   struct cp_ids *removed,
                   char *errmsg);

/* ------------------------------------------------------------------------
 * proxy_forward.c */

/* Binds `listen`, starts the link's server and its channel to `target`.
 * The link is not yet in p->links (the caller inserts it). */
int cp__link_open(struct cp_proxy *p,
                  cp_node from,
                  cp_node to,
                  const char *listen,
                  const char *target,
                  struct cp_link **out,
                  char *errmsg);

/* Takes the link out of service: its calls end at once, its server shuts
 * down; it is freed once drained. The caller has removed it from
 * p->links. Returns the number of calls that were in progress. */
unsigned cp__link_close(struct cp_link *l);

/* Lets held calls go on, in arrival order: all of them, or (all false)
 * those that no HOLD rule covers any more. Returns how many went on. */
unsigned cp__link_release(struct cp_link *l, bool all);

/* Calls in progress on the link. */
unsigned cp__link_active(const struct cp_link *l);

/* p->eos_check's callback: passes the half-close of the calls on
 * p->eos_list on to their targets, unless the call turned out to be
 * cancelled. */
void cp__eos(uv_check_t *h);

/* ------------------------------------------------------------------------
 * proxy_control.c */

int cp__control_start(struct cp_proxy *p, const char *address, char *errmsg);

/* Shuts the control server down; cp__maybe_stopped follows once it has
 * drained. */
void cp__control_stop(struct cp_proxy *p);

/* Whether the control server has drained (or never started). */
bool cp__control_drained(const struct cp_proxy *p);

#endif /* CRAFT_PROXY_IMPL_H */
