/* See grpc_loop.h. */
#include "grpc_loop.h"

#include <stdlib.h>

static void *cq_main(void *arg)
{
    struct cr_grpc_loop *g = arg;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(
            g->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) {
            break;
        }
        if (ev.type != GRPC_OP_COMPLETE) {
            continue;
        }
        {
            struct cr_grpc_op *op = ev.tag;
            op->ok = ev.success != 0;
            op->next = NULL;
            pthread_mutex_lock(&g->mu);
            if (g->tail == NULL) {
                g->head = op;
            } else {
                g->tail->next = op;
            }
            g->tail = op;
            pthread_mutex_unlock(&g->mu);
            uv_async_send(&g->async);
        }
    }
    return NULL;
}

static void on_async(uv_async_t *a)
{
    struct cr_grpc_loop *g = a->data;
    struct cr_grpc_op *op;
    pthread_mutex_lock(&g->mu);
    op = g->head;
    g->head = g->tail = NULL;
    pthread_mutex_unlock(&g->mu);
    while (op != NULL) {
        struct cr_grpc_op *next = op->next;
        op->cb(op, op->ok);
        op = next;
    }
}

int cr_grpc_loop_start(struct cr_grpc_loop *g, uv_loop_t *loop)
{
    g->loop = loop;
    g->head = g->tail = NULL;
    g->cq = grpc_completion_queue_create_for_next(NULL);
    if (g->cq == NULL) {
        return -1;
    }
    pthread_mutex_init(&g->mu, NULL);
    if (uv_async_init(loop, &g->async, on_async) != 0) {
        grpc_completion_queue_destroy(g->cq);
        return -1;
    }
    g->async.data = g;
    if (pthread_create(&g->thread, NULL, cq_main, g) != 0) {
        uv_close((uv_handle_t *)&g->async, NULL);
        grpc_completion_queue_destroy(g->cq);
        return -1;
    }
    return 0;
}

static void on_closed(uv_handle_t *h)
{
    struct cr_grpc_loop *g = h->data;
    pthread_mutex_destroy(&g->mu);
    if (g->on_shutdown != NULL) {
        g->on_shutdown(g->data);
    }
}

void cr_grpc_loop_stop(struct cr_grpc_loop *g,
                       void (*done)(void *data),
                       void *data)
{
    grpc_completion_queue_shutdown(g->cq);
    pthread_join(g->thread, NULL);
    grpc_completion_queue_destroy(g->cq);
    /* Completions that arrived before the shutdown still run. */
    on_async(&g->async);
    g->on_shutdown = done;
    g->data = data;
    uv_close((uv_handle_t *)&g->async, on_closed);
}
