/* See proxy_bench.h. The target server and the client each block on their
 * own completion queue (no libuv), so that what they cost stays small and
 * the same with and without the proxy; the proxy runs as a child process,
 * as it does in front of a cluster. */
#include "proxy_bench.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "grpc_call.h"

/* The proxy child declares the first unary (--unary), not the second: the
 * two paths of proxy_forward.c. */
static const char *const methods[2] = {
    "/craft.bench.Bench/Echo",
    "/craft.bench.Bench/EchoAny",
};
#define ARMED 32 /* requests armed on the target */
#define RUNS_MAX 15
#define CASES_MAX 8
#define PATHS 3 /* direct, through the proxy declared unary, generic */

static const char *const path_names[PATHS] = {"direct", "unary", "generic"};

extern char **environ;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static grpc_slice payload(size_t size)
{
    grpc_slice s = grpc_slice_malloc(size);
    memset(GRPC_SLICE_START_PTR(s), 'x', size);
    return s;
}

/* ------------------------------------------------------------------------
 * The target: answers every call with `size` bytes. */

struct target
{
    grpc_server *server;
    grpc_completion_queue *cq;
    void *method[2];
    pthread_t thread;
    grpc_slice reply;
    int port;
};

struct target_call
{
    struct target *t;
    int m;
    bool replying;
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_byte_buffer *payload, *reply;
    grpc_slice details;
    int cancelled;
};

static void target_arm(struct target *t, int m)
{
    struct target_call *c = calloc(1, sizeof *c);
    if (c == NULL) {
        return;
    }
    c->t = t;
    c->m = m;
    grpc_metadata_array_init(&c->md);
    if (grpc_server_request_registered_call(t->server, t->method[m], &c->call,
                                            &c->deadline, &c->md, &c->payload,
                                            t->cq, t->cq, c) != GRPC_CALL_OK) {
        grpc_metadata_array_destroy(&c->md);
        free(c);
    }
}

static void target_call_free(struct target_call *c)
{
    grpc_metadata_array_destroy(&c->md);
    if (c->payload != NULL) {
        grpc_byte_buffer_destroy(c->payload);
    }
    if (c->reply != NULL) {
        grpc_byte_buffer_destroy(c->reply);
    }
    if (c->call != NULL) {
        grpc_call_unref(c->call);
    }
    free(c);
}

static void *target_main(void *arg)
{
    struct target *t = arg;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(
            t->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        struct target_call *c;
        grpc_op ops[4];
        if (ev.type == GRPC_QUEUE_SHUTDOWN) {
            break;
        }
        c = ev.tag;
        if (c == NULL) {
            continue; /* the server's shutdown notification */
        }
        if (c->replying || !ev.success) {
            target_call_free(c);
            continue;
        }
        target_arm(t, c->m);
        c->replying = true;
        c->reply = grpc_raw_byte_buffer_create(&t->reply, 1);
        c->details = grpc_empty_slice();
        memset(ops, 0, sizeof ops);
        ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
        ops[1].op = GRPC_OP_SEND_MESSAGE;
        ops[1].data.send_message.send_message = c->reply;
        ops[2].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
        ops[2].data.send_status_from_server.status = GRPC_STATUS_OK;
        ops[2].data.send_status_from_server.status_details = &c->details;
        ops[3].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
        ops[3].data.recv_close_on_server.cancelled = &c->cancelled;
        if (grpc_call_start_batch(c->call, ops, 4, c, NULL) != GRPC_CALL_OK) {
            target_call_free(c);
        }
    }
    return NULL;
}

static int target_start(struct target *t, size_t size)
{
    grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
    memset(t, 0, sizeof *t);
    t->reply = payload(size);
    t->cq = grpc_completion_queue_create_for_next(NULL);
    t->server = grpc_server_create(NULL, NULL);
    grpc_server_register_completion_queue(t->server, t->cq, NULL);
    for (int m = 0; m < 2; m++) {
        t->method[m] = grpc_server_register_method(
            t->server, methods[m], NULL,
            GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
    }
    t->port = grpc_server_add_http2_port(t->server, "127.0.0.1:0", creds);
    grpc_server_credentials_release(creds);
    if (t->port == 0) {
        return -1;
    }
    grpc_server_start(t->server);
    for (int i = 0; i < ARMED; i++) {
        target_arm(t, 0);
        target_arm(t, 1);
    }
    return pthread_create(&t->thread, NULL, target_main, t) == 0 ? 0 : -1;
}

static void target_stop(struct target *t)
{
    grpc_server_shutdown_and_notify(t->server, t->cq, NULL);
    grpc_server_cancel_all_calls(t->server);
    /* The thread frees the armed requests as they come back. Destroying
     * the server needs its shutdown notification, which the thread sees
     * before the queue's own shutdown. */
    grpc_completion_queue_shutdown(t->cq);
    pthread_join(t->thread, NULL);
    grpc_server_destroy(t->server);
    grpc_completion_queue_destroy(t->cq);
    grpc_slice_unref(t->reply);
}

/* ------------------------------------------------------------------------
 * The client: a closed loop of `inflight` calls. */

struct client_call
{
    grpc_call *call;
    uint64_t started;
    grpc_byte_buffer *send;
    struct cr_grpc_reply reply;
};

struct result
{
    double calls_per_s;
    double p50_us, p99_us;
    uint64_t errors;
};

static int client_start_call(grpc_channel *ch,
                             void *handle,
                             grpc_completion_queue *cq,
                             grpc_slice msg,
                             struct client_call *c)
{
    grpc_op ops[6];
    memset(c, 0, sizeof *c);
    c->started = now_ns();
    c->call = grpc_channel_create_registered_call(
        ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, handle,
        gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                     gpr_time_from_seconds(10, GPR_TIMESPAN)),
        NULL);
    c->send = grpc_raw_byte_buffer_create(&msg, 1);
    cr_grpc_reply_init(&c->reply);
    return grpc_call_start_batch(c->call, ops,
                                 cr_grpc_unary_ops(c->send, &c->reply, ops), c,
                                 NULL) == GRPC_CALL_OK
               ? 0
               : -1;
}

static void client_call_clean(struct client_call *c)
{
    grpc_byte_buffer_destroy(c->send);
    cr_grpc_reply_destroy(&c->reply);
    grpc_call_unref(c->call);
}

static int u64_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Keeps `inflight` calls going to `address` for warm-up + measure
 * seconds; counts and times the calls that start after the warm-up and
 * end before the end. */
static int client_run(const char *address,
                      const char *method,
                      size_t size,
                      int inflight,
                      double warmup_s,
                      double measure_s,
                      struct result *out)
{
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    grpc_channel *ch = grpc_channel_create(address, creds, NULL);
    grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
    void *handle = grpc_channel_register_call(ch, method, NULL, NULL);
    struct client_call *calls = calloc((size_t)inflight, sizeof *calls);
    grpc_slice msg = payload(size);
    size_t cap = 1 << 20, n = 0;
    uint64_t *lat = malloc(cap * sizeof *lat);
    uint64_t start, warm_end, end;
    int outstanding = 0, rv = 0;
    grpc_channel_credentials_release(creds);
    memset(out, 0, sizeof *out);
    if (calls == NULL || lat == NULL) {
        rv = -1;
        goto out;
    }
    start = now_ns();
    warm_end = start + (uint64_t)(warmup_s * 1e9);
    end = warm_end + (uint64_t)(measure_s * 1e9);
    for (int i = 0; i < inflight; i++) {
        if (client_start_call(ch, handle, cq, msg, &calls[i]) == 0) {
            outstanding++;
        }
    }
    while (outstanding > 0) {
        grpc_event ev = grpc_completion_queue_next(
            cq,
            gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                         gpr_time_from_seconds(15, GPR_TIMESPAN)),
            NULL);
        struct client_call *c;
        uint64_t t;
        if (ev.type != GRPC_OP_COMPLETE) {
            fprintf(stderr, "craft-proxy bench: no answer for 15 s\n");
            rv = -1;
            break;
        }
        c = ev.tag;
        t = now_ns();
        if (c->reply.status != GRPC_STATUS_OK) {
            out->errors++;
        } else if (c->started >= warm_end && t <= end) {
            if (n == cap) {
                uint64_t *more = realloc(lat, 2 * cap * sizeof *lat);
                if (more != NULL) {
                    lat = more;
                    cap *= 2;
                }
            }
            if (n < cap) {
                lat[n++] = t - c->started;
            }
        }
        client_call_clean(c);
        outstanding--;
        if (t < end && client_start_call(ch, handle, cq, msg, c) == 0) {
            outstanding++;
        }
    }
    if (n > 0) {
        qsort(lat, n, sizeof lat[0], u64_cmp);
        out->calls_per_s = (double)n / measure_s;
        out->p50_us = (double)lat[n / 2] / 1000.0;
        out->p99_us = (double)lat[(size_t)((double)n * 0.99)] / 1000.0;
    }
out:
    grpc_channel_destroy(ch);
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC),
                                      NULL)
               .type != GRPC_QUEUE_SHUTDOWN) {
    }
    grpc_completion_queue_destroy(cq);
    grpc_slice_unref(msg);
    free(calls);
    free(lat);
    return rv;
}

/* ------------------------------------------------------------------------
 * The proxy child */

struct child
{
    pid_t pid;
    FILE *out;
    char listen[128];
};

/* Starts `self` with one link to the target and reads its stdout until it
 * is ready (10 s at most). */
static int child_start(struct child *ch, const char *self, int target_port)
{
    char link[96];
    char *argv[] = {(char *)self,       "--link", link, "--control",
                    "127.0.0.1:0",      "--seed", "1",  "--unary",
                    (char *)methods[0], NULL};
    posix_spawn_file_actions_t fa;
    int fds[2];
    uint64_t deadline = now_ns() + 10000000000u;
    char line[1024];
    snprintf(link, sizeof link, "1-2=127.0.0.1:0,127.0.0.1:%d", target_port);
    memset(ch, 0, sizeof *ch);
    if (pipe(fds) != 0) {
        return -1;
    }
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    posix_spawn_file_actions_addclose(&fa, fds[0]);
    if (posix_spawn(&ch->pid, self, &fa, NULL, argv, environ) != 0) {
        posix_spawn_file_actions_destroy(&fa);
        close(fds[0]);
        close(fds[1]);
        fprintf(stderr, "craft-proxy bench: cannot start %s\n", self);
        return -1;
    }
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    ch->out = fdopen(fds[0], "r");
    if (ch->out != NULL) {
        /* Unbuffered, so that poll() sees every line fgets has not read. */
        setvbuf(ch->out, NULL, _IONBF, 0);
    }
    while (ch->out != NULL) {
        struct pollfd pfd = {fds[0], POLLIN, 0};
        uint64_t t = now_ns();
        const char *l;
        if (t >= deadline ||
            poll(&pfd, 1, (int)((deadline - t) / 1000000)) <= 0 ||
            fgets(line, sizeof line, ch->out) == NULL) {
            break;
        }
        if ((l = strstr(line, "listen=")) != NULL && ch->listen[0] == '\0') {
            sscanf(l, "listen=%127[^ \"]", ch->listen);
        }
        if (strstr(line, "evt=ready") != NULL) {
            return ch->listen[0] != '\0' ? 0 : -1;
        }
    }
    fprintf(stderr, "craft-proxy bench: the proxy did not get ready\n");
    return -1;
}

static void child_stop(struct child *ch)
{
    int status;
    if (ch->pid > 0) {
        /* SIGTERM, then SIGKILL after 10 s: the bench never hangs. */
        kill(ch->pid, SIGTERM);
        for (int i = 0; i < 1000; i++) {
            if (waitpid(ch->pid, &status, WNOHANG) == ch->pid) {
                ch->pid = 0;
                break;
            }
            usleep(10000);
        }
        if (ch->pid > 0) {
            fprintf(stderr, "craft-proxy bench: the proxy ignored SIGTERM\n");
            kill(ch->pid, SIGKILL);
            waitpid(ch->pid, &status, 0);
        }
    }
    if (ch->out != NULL) {
        fclose(ch->out);
    }
}

/* ------------------------------------------------------------------------
 * Main */

static int dbl_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof v[0], dbl_cmp);
    return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: craft-proxy bench [--runs N] [--seconds S] [--warmup S]\n"
            "                         [--size BYTES] [--inflight 1,16]\n"
            "\n"
            "Unary calls of --size bytes each way to a C target server in "
            "this\n"
            "process with --inflight calls in flight: directly, and through "
            "one\n"
            "link of a craft-proxy child, both to a method declared with "
            "--unary\n"
            "and to another (the generic path). --runs runs (3) of "
            "--seconds (2)\n"
            "per case after --warmup (0.5). Prints every run, then the "
            "medians:\n"
            "calls/s, p50 and p99 latency, and what the proxy adds.\n");
}

int cp_bench_main(int argc, char **argv, const char *self)
{
    int runs = 3, inflight[CASES_MAX], n_cases = 0;
    double seconds = 2, warmup = 0.5;
    size_t size = 100;
    const char *list = "1,16";
    struct target t;
    struct child ch;
    struct result res[CASES_MAX][PATHS][RUNS_MAX];
    char direct[64];
    int rv = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        char *end = NULL;
        if (strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (v == NULL) {
            usage(stderr);
            return 2;
        }
        i++;
        errno = 0;
        if (strcmp(a, "--runs") == 0) {
            runs = (int)strtol(v, &end, 10);
        } else if (strcmp(a, "--seconds") == 0) {
            seconds = strtod(v, &end);
        } else if (strcmp(a, "--warmup") == 0) {
            warmup = strtod(v, &end);
        } else if (strcmp(a, "--size") == 0) {
            size = (size_t)strtoul(v, &end, 10);
        } else if (strcmp(a, "--inflight") == 0) {
            list = v;
            end = (char *)v + strlen(v);
        } else {
            usage(stderr);
            return 2;
        }
        if (errno != 0 || *end != '\0' || runs < 1 || runs > RUNS_MAX ||
            !(seconds > 0 && seconds <= 600) ||
            !(warmup >= 0 && warmup <= 60) || size > (1u << 24)) {
            fprintf(stderr, "craft-proxy bench: bad value %s %s\n", a, v);
            return 2;
        }
    }
    for (const char *p = list; *p != '\0' && n_cases < CASES_MAX;) {
        char *end;
        long k = strtol(p, &end, 10);
        if (end == p || k < 1 || k > 1024 || (*end != ',' && *end != '\0')) {
            fprintf(stderr,
                    "craft-proxy bench: --inflight %s: numbers 1 to "
                    "1024, comma-separated\n",
                    list);
            return 2;
        }
        inflight[n_cases++] = (int)k;
        p = *end == ',' ? end + 1 : end;
    }

    grpc_init();
    if (target_start(&t, size) != 0) {
        fprintf(stderr, "craft-proxy bench: cannot start the target\n");
        grpc_shutdown();
        return 1;
    }
    if (child_start(&ch, self, t.port) != 0) {
        child_stop(&ch);
        target_stop(&t);
        grpc_shutdown();
        return 1;
    }
    snprintf(direct, sizeof direct, "127.0.0.1:%d", t.port);
    printf(
        "craft-proxy bench: %zu-byte unary calls each way, %d run(s) of "
        "%.1f s per case after %.1f s of warm-up\n"
        "target 127.0.0.1:%d (in this process), proxy link 1-2 %s (pid "
        "%d)\n",
        size, runs, seconds, warmup, t.port, ch.listen, (int)ch.pid);
    for (int r = 0; r < runs && rv == 0; r++) {
        for (int k = 0; k < n_cases && rv == 0; k++) {
            for (int via = 0; via < PATHS && rv == 0; via++) {
                struct result *x = &res[k][via][r];
                rv =
                    client_run(via == 0 ? direct : ch.listen, methods[via == 2],
                               size, inflight[k], warmup, seconds, x);
                printf(
                    "run %d inflight %3d %-7s %9.0f calls/s  p50 %7.1f us  "
                    "p99 %7.1f us  errors %" PRIu64 "\n",
                    r + 1, inflight[k], path_names[via], x->calls_per_s,
                    x->p50_us, x->p99_us, x->errors);
                fflush(stdout);
            }
        }
    }
    if (rv == 0) {
        printf(
            "\nmedians of %d run(s); unary: through the proxy, method "
            "declared\nwith --unary; generic: through the proxy, any "
            "other method\n",
            runs);
        printf("%8s %-8s %10s %9s %9s\n", "inflight", "path", "calls/s",
               "p50_us", "p99_us");
        for (int k = 0; k < n_cases; k++) {
            double m[PATHS][3];
            for (int via = 0; via < PATHS; via++) {
                double v[3][RUNS_MAX];
                for (int r = 0; r < runs; r++) {
                    v[0][r] = res[k][via][r].calls_per_s;
                    v[1][r] = res[k][via][r].p50_us;
                    v[2][r] = res[k][via][r].p99_us;
                }
                for (int q = 0; q < 3; q++) {
                    m[via][q] = median(v[q], runs);
                }
                printf("%8d %-8s %10.0f %9.1f %9.1f\n", inflight[k],
                       path_names[via], m[via][0], m[via][1], m[via][2]);
            }
            for (int via = 1; via < PATHS; via++) {
                printf(
                    "%8d %-8s %9.2fx %+9.1f %+9.1f   (%s vs direct: "
                    "calls/s ratio, added p50, p99)\n",
                    inflight[k], "added", m[via][0] / m[0][0],
                    m[via][1] - m[0][1], m[via][2] - m[0][2], path_names[via]);
            }
        }
    }
    child_stop(&ch);
    target_stop(&t);
    grpc_shutdown();
    return rv == 0 ? 0 : 1;
}
