/* craft-proxy: the running proxy.
 *
 * A proxy owns a gRPC completion queue drained by its own thread
 * (cr_grpc_loop, shared with craftd's transport), one gRPC server per
 * link, one channel per link to the link's target, the fault rules, the
 * counters and the timeline, and the control server. Everything runs on
 * the libuv loop thread given to cp_proxy_start; nothing here is
 * thread-safe. See proxy.proto for what the proxy does to calls. */
#ifndef CRAFT_PROXY_PROXY_H
#define CRAFT_PROXY_PROXY_H

#include <stdint.h>
#include <stdio.h>

#include <uv.h>

#include "proxy_config.h"

struct cp_proxy;

struct cp_proxy_config
{
    uint64_t seed;            /* of every link's generator */
    const char *control;      /* loopback HOST:PORT; port 0 picks one */
    size_t max_message_bytes; /* largest message accepted or sent */
    const struct cp_link_spec *links;
    size_t n_links;
    /* Methods declared unary (copied): served with the call's message and
     * forwarded in one batch. A method declared unary must be unary both
     * ways; an answer of several messages would hang until the deadline. */
    const char (*unary)[CP_METHOD_MAX];
    size_t n_unary;
    /* One line per event (links, faults, readiness), flushed at once;
     * NULL for none. Not owned. */
    FILE *log;
};

/* Calls grpc_init, starts the control server and every link. On failure
 * nothing is left running (the loop may still have to run once to close
 * handles) and errmsg says why. On success *out is owned by the caller
 * until cp_proxy_stop's callback. */
int cp_proxy_start(struct cp_proxy **out,
                   uv_loop_t *loop,
                   const struct cp_proxy_config *config,
                   char *errmsg);

/* The bound control address (the port resolved). */
const char *cp_proxy_control_address(const struct cp_proxy *p);

/* Stops the proxy: calls in progress end (UNAVAILABLE to callers, CANCELLED
 * to targets), servers shut down, the gRPC thread exits. `done` runs on
 * the loop once everything is freed and grpc_shutdown has been called. */
void cp_proxy_stop(struct cp_proxy *p, void (*done)(void *data), void *data);

#endif /* CRAFT_PROXY_PROXY_H */
