/* The bridge between a gRPC completion queue and a libuv loop.
 *
 * One thread blocks in grpc_completion_queue_next and appends each event to
 * a mutex-protected list, then wakes the loop with uv_async_send; on the
 * loop thread, every event's tag (a struct cr_grpc_op) gets its callback
 * with the event's `ok`. The loop thread starts every gRPC operation, so
 * all gRPC state is touched from one thread. (Measured on this machine:
 * polling from a timer adds about 1 ms per call, uv_idle burns a core; the
 * thread and async hand-off costs 20-30 us of CPU per call.)
 *
 * Shared by craftd's transport and by craft-proxy. */
#ifndef CRAFT_GRPC_LOOP_H
#define CRAFT_GRPC_LOOP_H

#include <pthread.h>
#include <stdbool.h>

#include <grpc/grpc.h>
#include <uv.h>

struct cr_grpc_op;
typedef void (*cr_grpc_op_fn)(struct cr_grpc_op *op, bool ok);

/* The tag of every gRPC batch: embed it, set cb, pass its address. */
struct cr_grpc_op
{
    cr_grpc_op_fn cb;
    struct cr_grpc_op *next; /* private */
    bool ok;                 /* private */
};

struct cr_grpc_loop
{
    grpc_completion_queue *cq;
    uv_loop_t *loop;
    uv_async_t async;
    pthread_t thread;
    pthread_mutex_t mu;
    struct cr_grpc_op *head, *tail;
    bool shut_down; /* the queue reported GRPC_QUEUE_SHUTDOWN */
    void (*on_shutdown)(void *data);
    void *data;
};

/* Creates the queue, the async handle on `loop` and the thread. */
int cr_grpc_loop_start(struct cr_grpc_loop *g, uv_loop_t *loop);

/* Shuts the queue down (every pending operation must already be
 * cancelled or complete), waits for the thread, then closes the async
 * handle; `done` runs on the loop once everything is freed. */
void cr_grpc_loop_stop(struct cr_grpc_loop *g,
                       void (*done)(void *data),
                       void *data);

#endif /* CRAFT_GRPC_LOOP_H */
