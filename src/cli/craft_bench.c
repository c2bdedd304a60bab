/* craft-bench: load generators that report numbers.
 *
 *   craft-bench run [--endpoints H:P,...] [--clients N] [--seconds S]
 *                   [--size BYTES] [--op put|add|get|status] [--json]
 *   craft-bench failover [--endpoints H:P,...] --kill-cmd CMD
 *                   [--restart-cmd CMD] [--rounds R] [--clients N]
 *                   [--op put|add] [--json]
 *   craft-bench wal [--dir DIR] [--writers 1,16,64,256] [--seconds S]
 *                   [--size BYTES] [--json]
 *
 * `run` is a closed loop over gRPC: N clients, each with its own session
 * (client id and sequence), issue one operation, wait for its answer and
 * issue the next, all on one completion queue of the asynchronous C core
 * API (--op: a put, an add, a linearizable get of the client's key, or
 * GetStatus, which measures the transport alone). It finds the leader first and
 * sends to it, following hints when leadership moves. It prints a progress line
 * every second on stderr, then operations/s, latency (p50, p99, max: from the
 * first attempt of an operation to its answer, retries included) and errors.
 *
 * `failover` keeps such a load running and, R times, runs CMD with {id}
 * replaced by the leader's id (CMD kills it), then measures the time until
 * a write succeeds again at another leader; with --restart-cmd it brings
 * the node back before the next round. With --op add it checks at the end
 * that the running total grew by exactly the acknowledged additions.
 *
 * `wal` measures the storage alone: W writers each append one entry, wait
 * until it is durable, and append the next (a closed loop), for S seconds
 * per writer count; it prints entries/s, fdatasyncs/s and the latency from
 * submit to durable (p50, p99, max). It first measures the disk's raw rate
 * of one 100-byte append plus fdatasync, on a new file and on a
 * preallocated one, which is the physical limit. */
#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <grpc/support/time.h>

#include "client.h"
#include "craft/storage.h"
static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a;
    uint64_t y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The raw rate: append `size` bytes and fdatasync, again and again. */
static double raw_rate(const char *dir,
                       bool prealloc,
                       double seconds,
                       size_t size)
{
    char path[CR_PATH_MAX];
    char buf[4096];
    uint64_t end, off = 0;
    unsigned long n = 0;
    int fd;
    snprintf(path, sizeof path, "%s/raw-%d", dir, getpid());
    fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        return -1;
    }
    if (prealloc && posix_fallocate(fd, 0, 256 << 20) != 0) {
        close(fd);
        unlink(path);
        return -1;
    }
    fsync(fd);
    memset(buf, 'r', sizeof buf);
    end = now_ns() + (uint64_t)(seconds * 1e9);
    while (now_ns() < end) {
        if (pwrite(fd, buf, size, (off_t)off) != (ssize_t)size ||
            fdatasync(fd) != 0) {
            break;
        }
        off += size;
        n++;
    }
    close(fd);
    unlink(path);
    return (double)n / seconds;
}

struct bench
{
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t durable;
    int status;
};

static void on_done(void *data, uint64_t seq, cr_index last, int status)
{
    struct bench *b = data;
    (void)last;
    pthread_mutex_lock(&b->mu);
    if (status != 0) {
        b->status = status;
    }
    if (seq > b->durable) {
        b->durable = seq;
    }
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

struct result
{
    unsigned writers;
    double entries_per_s, syncs_per_s;
    double p50_us, p99_us, max_us;
};

static int remove_dir(const char *dir)
{
    char cmd[CR_PATH_MAX + 32];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd);
}

static int run_wal(const char *base,
                   unsigned writers,
                   double seconds,
                   size_t size,
                   struct result *res)
{
    char dir[CR_PATH_MAX];
    char errmsg[CR_ERRMSG_SIZE];
    struct cr_storage *s;
    struct cr_storage_options o;
    struct cr_recovery rec;
    struct cr_storage_stats st0, st1;
    struct bench b;
    uint64_t *submit_ns, *seq_of, *lat;
    size_t n_lat = 0, cap_lat = 1u << 20;
    uint64_t next_seq = 0;
    cr_index next_index = 1;
    char *payload;
    uint64_t start, end;
    int rv;

    snprintf(dir, sizeof dir, "%s/craft-bench-wal-%d-%u", base, getpid(),
             writers);
    remove_dir(dir);
    cr_storage_options_default(&o);
    o.segment_size = 64u << 20;
    memset(&b, 0, sizeof b);
    pthread_mutex_init(&b.mu, NULL);
    pthread_cond_init(&b.cv, NULL);
    rv = cr_storage_open(&s, dir, &o, NULL, NULL, on_done, &b, &rec, errmsg);
    if (rv != 0) {
        fprintf(stderr, "craft-bench: %s\n", errmsg);
        return 1;
    }
    cr_recovery_free(&rec, NULL);
    submit_ns = calloc(writers, sizeof *submit_ns);
    seq_of = calloc(writers, sizeof *seq_of);
    lat = malloc(cap_lat * sizeof *lat);
    payload = malloc(size == 0 ? 1 : size);
    if (submit_ns == NULL || seq_of == NULL || lat == NULL || payload == NULL) {
        return 1;
    }
    memset(payload, 'p', size);

    cr_storage_stats(s, &st0);
    start = now_ns();
    end = start + (uint64_t)(seconds * 1e9);
    for (;;) {
        uint64_t durable, t = now_ns();
        /* Every writer whose entry is durable (or that has none yet)
         * appends the next one. */
        pthread_mutex_lock(&b.mu);
        durable = b.durable;
        pthread_mutex_unlock(&b.mu);
        for (unsigned w = 0; w < writers && t < end; w++) {
            struct cr_entry e;
            struct cr_update u;
            if (seq_of[w] != 0 && seq_of[w] > durable) {
                continue;
            }
            if (seq_of[w] != 0 && n_lat < cap_lat) {
                lat[n_lat++] = t - submit_ns[w];
            }
            memset(&e, 0, sizeof e);
            e.term = 1;
            e.type = CR_ENTRY_COMMAND;
            e.buf.base = payload;
            e.buf.len = size;
            memset(&u, 0, sizeof u);
            u.flags = CR_UPDATE_ENTRIES;
            u.persist_seq = ++next_seq;
            u.persist_last_index = next_index;
            u.entries_first = next_index++;
            u.n_entries = 1;
            u.entries = &e;
            if (cr_storage_submit(s, &u) != 0) {
                fprintf(stderr, "craft-bench: submit failed\n");
                return 1;
            }
            seq_of[w] = u.persist_seq;
            submit_ns[w] = t;
        }
        if (t >= end) {
            break;
        }
        pthread_mutex_lock(&b.mu);
        while (b.durable == durable && b.status == 0) {
            pthread_cond_wait(&b.cv, &b.mu);
        }
        rv = b.status;
        pthread_mutex_unlock(&b.mu);
        if (rv != 0) {
            fprintf(stderr, "craft-bench: the storage failed: %s\n",
                    cr_strerror(rv));
            return 1;
        }
    }
    end = now_ns();
    cr_storage_stats(s, &st1);
    cr_storage_close(s);
    remove_dir(dir);

    qsort(lat, n_lat, sizeof *lat, cmp_u64);
    res->writers = writers;
    res->entries_per_s = (double)n_lat / ((double)(end - start) / 1e9);
    res->syncs_per_s =
        (double)(st1.syncs - st0.syncs) / ((double)(end - start) / 1e9);
    res->p50_us = n_lat > 0 ? (double)lat[n_lat / 2] / 1e3 : 0;
    res->p99_us = n_lat > 0 ? (double)lat[n_lat * 99 / 100] / 1e3 : 0;
    res->max_us = n_lat > 0 ? (double)lat[n_lat - 1] / 1e3 : 0;
    free(submit_ns);
    free(seq_of);
    free(lat);
    free(payload);
    pthread_mutex_destroy(&b.mu);
    pthread_cond_destroy(&b.cv);
    return 0;
}

static int bench_wal(int argc, char **argv)
{
    const char *dir = ".";
    const char *list = "1,16,64,256";
    double seconds = 3;
    size_t size = 100;
    bool json = false;
    double raw_new, raw_pre;
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(argv[i], "--dir") == 0 && v != NULL) {
            dir = v;
            i++;
        } else if (strcmp(argv[i], "--writers") == 0 && v != NULL) {
            list = v;
            i++;
        } else if (strcmp(argv[i], "--seconds") == 0 && v != NULL) {
            seconds = strtod(v, NULL);
            i++;
        } else if (strcmp(argv[i], "--size") == 0 && v != NULL) {
            size = (size_t)strtoul(v, NULL, 10);
            i++;
        } else if (strcmp(argv[i], "--json") == 0) {
            json = true;
        } else {
            fprintf(stderr, "craft-bench wal: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (seconds <= 0 || seconds > 3600 || size > (16u << 20)) {
        fprintf(stderr,
                "craft-bench wal: --seconds must be in (0, 3600], "
                "--size at most 16 MiB\n");
        return 2;
    }
    raw_new = raw_rate(dir, false, seconds < 2 ? seconds : 2, size);
    raw_pre = raw_rate(dir, true, seconds < 2 ? seconds : 2, size);
    if (!json) {
        printf(
            "raw %zu-byte append + fdatasync in %s: %.0f/s on a new "
            "file, %.0f/s on a preallocated one\n",
            size, dir, raw_new, raw_pre);
        printf("%8s %12s %10s %10s %10s %10s\n", "writers", "entries/s",
               "fsyncs/s", "p50 ms", "p99 ms", "max ms");
    } else {
        printf("{\"raw_new\": %.0f, \"raw_preallocated\": %.0f, \"runs\": [",
               raw_new, raw_pre);
    }
    for (const char *p = list; *p != '\0';) {
        struct result r;
        char *next;
        unsigned long w = strtoul(p, &next, 10);
        if (next == p || w == 0 || w > 65536) {
            fprintf(stderr, "craft-bench wal: bad --writers list %s\n", list);
            return 2;
        }
        if (run_wal(dir, (unsigned)w, seconds, size, &r) != 0) {
            return 1;
        }
        if (json) {
            printf(
                "%s{\"writers\": %u, \"entries_per_s\": %.0f, "
                "\"fsyncs_per_s\": %.0f, \"p50_ms\": %.3f, "
                "\"p99_ms\": %.3f, \"max_ms\": %.3f}",
                p == list ? "" : ", ", r.writers, r.entries_per_s,
                r.syncs_per_s, r.p50_us / 1e3, r.p99_us / 1e3, r.max_us / 1e3);
        } else {
            printf("%8u %12.0f %10.0f %10.3f %10.3f %10.3f\n", r.writers,
                   r.entries_per_s, r.syncs_per_s, r.p50_us / 1e3,
                   r.p99_us / 1e3, r.max_us / 1e3);
        }
        fflush(stdout);
        p = *next == ',' ? next + 1 : next;
    }
    if (json) {
        printf("]}\n");
    }
    return 0;
}

/* ---------------------------------------------------------------------------
 * Load over gRPC: run, failover
 * ------------------------------------------------------------------------- */

#define CALL_MS 2000      /* deadline of one attempt */
#define RETRY_PAUSE_MS 10 /* before a retry that no hint directs */
#define DRAIN_MS 5000     /* the most the end waits for calls */
#define MAX_SAMPLES (50u << 20)

/* What each client does, and the method it calls. `get` is a
 * linearizable read (ReadIndex, no log entry); `status` is GetStatus,
 * which never touches Raft: the ceiling of the transport alone. */
enum load_op { LOAD_PUT, LOAD_ADD, LOAD_GET, LOAD_STATUS };

static const struct
{
    const char *name;
    enum cr_cli_method method;
} load_ops[] = {
    [LOAD_PUT] = {"put", CR_CLI_PUT},
    [LOAD_ADD] = {"add", CR_CLI_ADD},
    [LOAD_GET] = {"get", CR_CLI_GET},
    [LOAD_STATUS] = {"status", CR_CLI_GET_STATUS},
};

/* What went wrong with attempts, by kind. */
struct errors
{
    uint64_t not_leader, unavailable, refused, unknown, invalid, rejected;
    uint64_t grpc_unavailable, grpc_deadline, grpc_other;
};

static uint64_t errors_sum(const struct errors *e)
{
    return e->not_leader + e->unavailable + e->refused + e->unknown +
           e->invalid + e->rejected + e->grpc_unavailable + e->grpc_deadline +
           e->grpc_other;
}

struct load;

/* One closed-loop client: its own session, one operation at a time. */
struct slot
{
    struct load *l;
    unsigned idx;
    struct cr_cli_call call;
    bool busy;        /* a call is in flight */
    bool pending;     /* an operation is not answered yet */
    uint64_t wake_ns; /* a retry waits until then (0: none) */
    unsigned ep;      /* of the attempt in flight */
    uint64_t client_id, sequence;
    uint64_t op_start_ns; /* first attempt of the operation */
    char key[32];
    Raft__KeyValueRequest put; /* also the get */
    Raft__StatusRequest status;
    Raft__AddRequest add;
};

struct load
{
    struct cr_cli cli; /* channels, endpoints, synchronous calls */
    grpc_completion_queue *cq;
    struct slot *slots;
    unsigned n_slots;
    enum load_op op;
    char *value;
    unsigned target; /* the endpoint that new attempts go to */
    bool stopping;   /* no new operations, no retries */
    /* Results. */
    uint64_t *lat; /* ns, one per acknowledged operation */
    size_t n_lat, cap_lat;
    uint64_t acked, abandoned;
    struct errors err;
    /* The last acknowledged operation. */
    uint64_t last_ok_ns;
    int32_t last_ok_leader;
    /* The progress window. */
    uint64_t *win;
    size_t n_win, cap_win;
    uint64_t win_err;
};

static int cmp_lat(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a;
    uint64_t y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct_ms(const uint64_t *v, size_t n, unsigned pct)
{
    size_t i;
    if (n == 0) {
        return 0;
    }
    i = n * pct / 100;
    return (double)v[i < n ? i : n - 1] / 1e6;
}

static void push(uint64_t **v, size_t *n, size_t *cap, uint64_t x)
{
    if (*n == *cap) {
        size_t c = *cap == 0 ? 4096 : *cap * 2;
        uint64_t *p;
        if (c > MAX_SAMPLES) {
            return;
        }
        p = realloc(*v, c * sizeof *p);
        if (p == NULL) {
            return;
        }
        *v = p;
        *cap = c;
    }
    (*v)[(*n)++] = x;
}

static void slot_start(struct slot *s);

static void slot_retry(struct slot *s, unsigned pause_ms)
{
    if (s->l->stopping) {
        s->pending = false;
        s->l->abandoned++;
        return;
    }
    if (pause_ms == 0) {
        slot_start(s);
    } else {
        s->wake_ns = cr_cli_now_ns() + (uint64_t)pause_ms * 1000000u;
    }
}

/* The endpoint of the failed attempt is no good: move the shared target
 * on, once (the other clients that fail there find it moved). */
static void rotate(struct load *l, unsigned ep)
{
    if (l->target == ep) {
        l->target = (ep + 1) % l->cli.n_endpoints;
    }
}

static void slot_start(struct slot *s)
{
    struct load *l = s->l;
    struct cr_cli_rpc_status st;
    const ProtobufCMessage *req;
    enum cr_cli_method m;
    s->wake_ns = 0;
    if (!s->pending) {
        if (l->stopping) {
            return;
        }
        /* A new operation: a new sequence. Its retries keep it. */
        s->pending = true;
        s->sequence++;
        s->op_start_ns = cr_cli_now_ns();
    }
    m = load_ops[l->op].method;
    switch (l->op) {
        case LOAD_PUT:
            s->put.client_id = s->client_id;
            s->put.sequence = s->sequence;
            s->put.value = l->value;
            req = &s->put.base;
            break;
        case LOAD_GET:
            s->put.client_id = 0; /* reads need no session */
            s->put.sequence = 0;
            s->put.value = NULL;
            req = &s->put.base;
            break;
        case LOAD_STATUS:
            req = &s->status.base;
            break;
        case LOAD_ADD:
        default:
            s->add.client_id = s->client_id;
            s->add.sequence = s->sequence;
            req = &s->add.base;
            break;
    }
    s->ep = l->target;
    if (cr_cli_call_start(&l->cli, s->ep, m, req, CALL_MS, l->cq, s, &s->call,
                          &st) != 0) {
        l->err.grpc_other++;
        l->win_err++;
        slot_retry(s, RETRY_PAUSE_MS);
        return;
    }
    s->busy = true;
}

/* An attempt ended. */
static void slot_done(struct slot *s, bool ok)
{
    struct load *l = s->l;
    ProtobufCMessage *resp = NULL;
    struct cr_cli_rpc_status st;
    struct cr_cli_answer a;
    enum cr_cli_method m = load_ops[l->op].method;
    uint64_t now = cr_cli_now_ns();
    int hint = -1;
    s->busy = false;
    if (cr_cli_call_end(&s->call, ok, &resp, &st) != 0) {
        l->win_err++;
        if (st.code == GRPC_STATUS_DEADLINE_EXCEEDED) {
            l->err.grpc_deadline++;
        } else if (st.code == GRPC_STATUS_UNAVAILABLE) {
            l->err.grpc_unavailable++;
        } else {
            l->err.grpc_other++;
        }
        rotate(l, s->ep);
        /* The same session: a retry is never applied twice. */
        slot_retry(s, cr_cli_never_sent(&st) ? RETRY_PAUSE_MS : 0);
        return;
    }
    cr_cli_answer_of(m, resp, &a);
    if (a.leader_address[0] != '\0') {
        hint = cr_cli_endpoint(&l->cli, a.leader_address);
    }
    switch (a.status) {
        case RAFT__OP_STATUS__OP_OK:
            if (!a.success) {
                l->err.rejected++; /* the state machine said no */
                l->win_err++;
            }
            l->acked++;
            push(&l->lat, &l->n_lat, &l->cap_lat, now - s->op_start_ns);
            push(&l->win, &l->n_win, &l->cap_win, now - s->op_start_ns);
            l->last_ok_ns = now;
            l->last_ok_leader = a.leader_id;
            if (hint >= 0 && (unsigned)hint != l->target &&
                l->target == s->ep) {
                l->target = (unsigned)hint;
            }
            s->pending = false;
            slot_start(s);
            break;
        case RAFT__OP_STATUS__OP_NOT_LEADER:
        case RAFT__OP_STATUS__OP_UNKNOWN:
            if (a.status == RAFT__OP_STATUS__OP_NOT_LEADER) {
                l->err.not_leader++;
            } else {
                l->err.unknown++;
            }
            l->win_err++;
            if (hint >= 0 && (unsigned)hint != s->ep) {
                if (l->target == s->ep) {
                    l->target = (unsigned)hint;
                }
                slot_retry(s, 0);
            } else {
                rotate(l, s->ep);
                slot_retry(s, RETRY_PAUSE_MS);
            }
            break;
        case RAFT__OP_STATUS__OP_UNAVAILABLE:
        case RAFT__OP_STATUS__OP_REFUSED:
            if (a.status == RAFT__OP_STATUS__OP_UNAVAILABLE) {
                l->err.unavailable++;
                rotate(l, s->ep);
            } else {
                l->err.refused++;
            }
            l->win_err++;
            slot_retry(s, RETRY_PAUSE_MS);
            break;
        default:
            /* Malformed: a retry would fail the same way. */
            l->err.invalid++;
            l->win_err++;
            s->pending = false;
            slot_retry(s, RETRY_PAUSE_MS);
            break;
    }
    cr_cli_free(resp);
}

/* Runs the queue until `until_ns`, or until stop(l, data) says so (checked
 * after each event; may be NULL). Prints a progress line every second if
 * `progress`. Returns true if stop said so. */
static bool load_loop(struct load *l,
                      uint64_t until_ns,
                      bool progress,
                      bool (*stop)(struct load *l, void *data),
                      void *data)
{
    uint64_t start = cr_cli_now_ns();
    uint64_t next_tick = start + 1000000000u;
    uint64_t prev_acked = l->acked;
    unsigned tick = 0;
    for (;;) {
        uint64_t now = cr_cli_now_ns();
        uint64_t wait_until = until_ns < next_tick ? until_ns : next_tick;
        grpc_event ev;
        bool any_busy = false;
        for (unsigned i = 0; i < l->n_slots; i++) {
            struct slot *s = &l->slots[i];
            if (s->wake_ns != 0 && s->wake_ns <= now) {
                slot_start(s);
            } else if (s->wake_ns != 0 && s->wake_ns < wait_until) {
                wait_until = s->wake_ns;
            }
            any_busy = any_busy || s->busy;
        }
        if (stop != NULL && stop(l, data)) {
            return true;
        }
        if (now >= until_ns) {
            return false;
        }
        if (progress && now >= next_tick) {
            qsort(l->win, l->n_win, sizeof *l->win, cmp_lat);
            tick++;
            fprintf(stderr,
                    "[%3us] %8" PRIu64
                    " ops/s  p50 %7.3f ms  p99 %7.3f ms  "
                    "errors %" PRIu64 "  (total %" PRIu64 ")\n",
                    tick, l->acked - prev_acked, pct_ms(l->win, l->n_win, 50),
                    pct_ms(l->win, l->n_win, 99), l->win_err, l->acked);
            prev_acked = l->acked;
            l->n_win = 0;
            l->win_err = 0;
            next_tick += 1000000000u;
            continue;
        }
        if (!any_busy && wait_until > now + 50000000u) {
            wait_until = now + 50000000u; /* nothing in flight: poll */
        }
        ev = grpc_completion_queue_next(
            l->cq,
            gpr_time_add(
                gpr_now(GPR_CLOCK_MONOTONIC),
                gpr_time_from_micros(
                    (int64_t)((wait_until > now ? wait_until - now : 0) /
                              1000u),
                    GPR_TIMESPAN)),
            NULL);
        if (ev.type == GRPC_OP_COMPLETE) {
            slot_done(ev.tag, ev.success != 0);
        }
    }
}

/* Ends the load: no new operations or retries; waits for the calls in
 * flight (cancelling them after DRAIN_MS). */
static void load_drain(struct load *l)
{
    uint64_t end = cr_cli_now_ns() + (uint64_t)DRAIN_MS * 1000000u;
    bool cancelled = false;
    l->stopping = true;
    for (;;) {
        unsigned busy = 0;
        grpc_event ev;
        for (unsigned i = 0; i < l->n_slots; i++) {
            struct slot *s = &l->slots[i];
            if (s->wake_ns != 0) {
                s->wake_ns = 0;
                slot_retry(s, 0); /* abandons it */
            }
            busy += s->busy;
        }
        if (busy == 0) {
            return;
        }
        if (!cancelled && cr_cli_now_ns() >= end) {
            for (unsigned i = 0; i < l->n_slots; i++) {
                if (l->slots[i].busy) {
                    grpc_call_cancel(l->slots[i].call.call, NULL);
                }
            }
            cancelled = true;
        }
        ev = grpc_completion_queue_next(
            l->cq,
            gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                         gpr_time_from_millis(100, GPR_TIMESPAN)),
            NULL);
        if (ev.type == GRPC_OP_COMPLETE) {
            slot_done(ev.tag, ev.success != 0);
        }
    }
}

static int load_init(struct load *l,
                     const char *endpoints,
                     unsigned clients,
                     enum load_op op,
                     size_t size)
{
    char errmsg[CR_CLI_WHY_MAX];
    memset(l, 0, sizeof *l);
    if (cr_cli_init(&l->cli, endpoints, NULL, errmsg) != 0) {
        fprintf(stderr, "craft-bench: --endpoints: %s\n", errmsg);
        return -1;
    }
    l->cq = grpc_completion_queue_create_for_next(NULL);
    l->slots = calloc(clients, sizeof *l->slots);
    l->value = malloc(size + 1);
    if (l->slots == NULL || l->value == NULL) {
        fprintf(stderr, "craft-bench: out of memory\n");
        return -1;
    }
    for (size_t i = 0; i < size; i++) {
        l->value[i] = (char)('a' + i % 26);
    }
    l->value[size] = '\0';
    l->n_slots = clients;
    l->op = op;
    for (unsigned i = 0; i < clients; i++) {
        struct slot *s = &l->slots[i];
        s->l = l;
        s->idx = i;
        /* One session per client: the servers keep one sequence per
         * session, so concurrent operations need their own. */
        s->client_id = (l->cli.client_id + i) & INT64_MAX;
        if (s->client_id == 0) {
            s->client_id = 1;
        }
        snprintf(s->key, sizeof s->key, "bench-%u", i);
        raft__key_value_request__init(&s->put);
        s->put.key = s->key;
        s->put.value = l->value;
        raft__status_request__init(&s->status);
        raft__add_request__init(&s->add);
        s->add.num1 = 1;
        s->add.num2 = 0;
    }
    return 0;
}

static void load_close(struct load *l)
{
    grpc_event ev;
    if (l->cq != NULL) {
        grpc_completion_queue_shutdown(l->cq);
        do {
            ev = grpc_completion_queue_next(
                l->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        } while (ev.type != GRPC_QUEUE_SHUTDOWN);
        grpc_completion_queue_destroy(l->cq);
    }
    cr_cli_close(&l->cli);
    free(l->slots);
    free(l->value);
    free(l->lat);
    free(l->win);
}

static void load_begin(struct load *l)
{
    for (unsigned i = 0; i < l->n_slots; i++) {
        slot_start(&l->slots[i]);
    }
}

/* Finds the leader: the endpoint that says LEADER in the highest term.
 * Tries until timeout_ms; with `whole`, also waits until every given
 * endpoint answers and names that leader. Returns the endpoint or -1. */
static int find_leader(struct load *l,
                       unsigned timeout_ms,
                       bool whole,
                       int32_t *leader_id)
{
    uint64_t end = cr_cli_now_ns() + (uint64_t)timeout_ms * 1000000u;
    for (;;) {
        Raft__StatusResponse *resp[CR_CLI_ENDPOINTS_MAX];
        struct cr_cli_rpc_status st[CR_CLI_ENDPOINTS_MAX];
        int best = -1;
        int64_t best_term = -1;
        unsigned agree = 0;
        cr_cli_status_all(&l->cli, 1000, resp, st);
        for (unsigned i = 0; i < l->cli.n_given; i++) {
            if (resp[i] != NULL && strcmp(resp[i]->state, "LEADER") == 0 &&
                resp[i]->current_term > best_term) {
                best = (int)i;
                best_term = resp[i]->current_term;
                *leader_id = resp[i]->node_id;
            }
        }
        for (unsigned i = 0; i < l->cli.n_given; i++) {
            if (best >= 0 && resp[i] != NULL &&
                resp[i]->current_leader == *leader_id &&
                resp[i]->current_term == best_term) {
                agree++;
            }
            cr_cli_free(resp[i] != NULL ? &resp[i]->base : NULL);
        }
        if (best >= 0 && (!whole || agree == l->cli.n_given)) {
            return best;
        }
        if (cr_cli_now_ns() >= end) {
            return -1;
        }
        usleep(100000);
    }
}

/* The running total (a linearizable read), or INT64_MIN. */
static int64_t read_total(struct load *l)
{
    Raft__ReadRequest req;
    struct cr_cli_result r;
    int64_t total = INT64_MIN;
    raft__read_request__init(&req);
    req.key = (char *)"";
    if (cr_cli_run(&l->cli, CR_CLI_READ, &req.base, &r) == CR_CLI_OK) {
        const Raft__ReadResponse *resp = (const void *)r.resp;
        char *end;
        long long v = strtoll(resp->value, &end, 10);
        if (*end == '\0') {
            total = (int64_t)v;
        }
    }
    cr_cli_result_free(&r);
    return total;
}

static void print_errors_json(const struct errors *e)
{
    printf("{\"not_leader\": %" PRIu64 ", \"unavailable\": %" PRIu64
           ", \"refused\": %" PRIu64 ", \"unknown\": %" PRIu64
           ", \"invalid\": %" PRIu64 ", \"rejected\": %" PRIu64
           ", \"grpc_unavailable\": %" PRIu64 ", \"grpc_deadline\": %" PRIu64
           ", \"grpc_other\": %" PRIu64 "}",
           e->not_leader, e->unavailable, e->refused, e->unknown, e->invalid,
           e->rejected, e->grpc_unavailable, e->grpc_deadline, e->grpc_other);
}

static void print_errors_text(const struct errors *e)
{
    printf("errors: %" PRIu64 " (not_leader %" PRIu64 ", unavailable %" PRIu64
           ", refused %" PRIu64 ", unknown %" PRIu64 ", invalid %" PRIu64
           ", rejected %" PRIu64 ", grpc_unavailable %" PRIu64
           ", grpc_deadline %" PRIu64 ", grpc_other %" PRIu64 ")\n",
           errors_sum(e), e->not_leader, e->unavailable, e->refused, e->unknown,
           e->invalid, e->rejected, e->grpc_unavailable, e->grpc_deadline,
           e->grpc_other);
}

struct load_args
{
    const char *endpoints;
    unsigned clients;
    double seconds;
    size_t size;
    enum load_op op;
    bool json;
    unsigned rounds;
    const char *kill_cmd, *restart_cmd;
};

/* Options shared by run and failover. Returns 0, 1 (consumed a value) or
 * -1 (not one of them; or a bad value: *bad set). */
static int load_option(struct load_args *a,
                       const char *cmd,
                       const char *opt,
                       const char *v,
                       bool *bad)
{
    char *end = NULL;
    *bad = false;
    if (strcmp(opt, "--json") == 0) {
        a->json = true;
        return 0;
    }
    if (strcmp(opt, "--endpoints") != 0 && strcmp(opt, "--clients") != 0 &&
        strcmp(opt, "--op") != 0 && strcmp(opt, "--seconds") != 0 &&
        strcmp(opt, "--size") != 0) {
        return -1;
    }
    if (v == NULL) {
        fprintf(stderr, "craft-bench %s: %s needs a value\n", cmd, opt);
        *bad = true;
        return -1;
    }
    if (strcmp(opt, "--endpoints") == 0) {
        a->endpoints = v;
    } else if (strcmp(opt, "--op") == 0) {
        *bad = true;
        for (unsigned i = 0; i < sizeof load_ops / sizeof load_ops[0]; i++) {
            if (strcmp(v, load_ops[i].name) == 0) {
                a->op = (enum load_op)i;
                *bad = false;
            }
        }
    } else if (strcmp(opt, "--seconds") == 0) {
        a->seconds = strtod(v, &end);
        *bad = *end != '\0' || !isfinite(a->seconds) || a->seconds <= 0 ||
               a->seconds > 3600;
    } else {
        unsigned long n = strtoul(v, &end, 10);
        if (strcmp(opt, "--clients") == 0) {
            *bad = *end != '\0' || v[0] == '-' || n == 0 || n > 4096;
            a->clients = (unsigned)n;
        } else {
            *bad = *end != '\0' || v[0] == '-' || n > 65536;
            a->size = (size_t)n;
        }
    }
    if (*bad) {
        fprintf(stderr,
                "craft-bench %s: bad %s \"%s\" (--clients 1..4096, --seconds "
                "(0, 3600], --size 0..65536, --op put|add|get|status)\n",
                cmd, opt, v);
        return -1;
    }
    return 1;
}

static int bench_run(int argc, char **argv)
{
    struct load_args a;
    struct load l;
    int32_t leader_id = 0;
    int ep;
    uint64_t start, end;
    double secs;
    memset(&a, 0, sizeof a);
    a.endpoints = getenv("CRAFT_ENDPOINTS");
    a.clients = 1;
    a.seconds = 10;
    a.size = 100;
    for (int i = 1; i < argc; i++) {
        bool bad;
        int rv = load_option(&a, "run", argv[i],
                             i + 1 < argc ? argv[i + 1] : NULL, &bad);
        if (bad) {
            return 2;
        }
        if (rv < 0) {
            fprintf(stderr, "craft-bench run: unknown option %s\n", argv[i]);
            return 2;
        }
        i += rv;
    }
    if (a.endpoints == NULL || a.endpoints[0] == '\0') {
        a.endpoints = "127.0.0.1:50051";
    }
    if (load_init(&l, a.endpoints, a.clients, a.op, a.size) != 0) {
        load_close(&l);
        return 2;
    }
    ep = find_leader(&l, 10000, false, &leader_id);
    if (ep < 0) {
        fprintf(stderr, "craft-bench run: no leader among %s within 10 s\n",
                a.endpoints);
        load_close(&l);
        return 1;
    }
    l.target = (unsigned)ep;
    fprintf(stderr,
            "craft-bench run: leader node %" PRId32
            " at %s; %u clients, %s of %zu bytes, %.1f s\n",
            leader_id, l.cli.endpoints[ep].address, a.clients,
            load_ops[a.op].name, a.op == LOAD_PUT ? a.size : 8, a.seconds);
    start = cr_cli_now_ns();
    load_begin(&l);
    (void)load_loop(&l, start + (uint64_t)(a.seconds * 1e9), true, NULL, NULL);
    end = cr_cli_now_ns();
    load_drain(&l);
    secs = (double)(end - start) / 1e9;
    qsort(l.lat, l.n_lat, sizeof *l.lat, cmp_lat);
    if (a.json) {
        printf(
            "{\"clients\": %u, \"op\": \"%s\", \"size\": %zu, "
            "\"seconds\": %.3f, \"ops\": %" PRIu64
            ", \"ops_per_s\": %.1f, \"p50_ms\": %.3f, \"p99_ms\": %.3f, "
            "\"max_ms\": %.3f, \"errors\": %" PRIu64 ", \"abandoned\": %" PRIu64
            ", \"errors_by_kind\": ",
            a.clients, load_ops[a.op].name, a.size, secs, l.acked,
            (double)l.acked / secs, pct_ms(l.lat, l.n_lat, 50),
            pct_ms(l.lat, l.n_lat, 99),
            l.n_lat > 0 ? (double)l.lat[l.n_lat - 1] / 1e6 : 0,
            errors_sum(&l.err), l.abandoned);
        print_errors_json(&l.err);
        printf("}\n");
    } else {
        printf("%u clients, %s, %.1f s: %" PRIu64 " ops, %.0f ops/s\n",
               a.clients, load_ops[a.op].name, secs, l.acked,
               (double)l.acked / secs);
        printf("latency: p50 %.3f ms, p99 %.3f ms, max %.3f ms\n",
               pct_ms(l.lat, l.n_lat, 50), pct_ms(l.lat, l.n_lat, 99),
               l.n_lat > 0 ? (double)l.lat[l.n_lat - 1] / 1e6 : 0);
        print_errors_text(&l.err);
        if (l.abandoned > 0) {
            printf("abandoned at the end (unanswered): %" PRIu64 "\n",
                   l.abandoned);
        }
    }
    load_close(&l);
    return 0;
}

/* A copy of cmd with every {id} replaced by id. */
static char *expand(const char *cmd, int32_t id)
{
    char num[16];
    size_t n = 0, cap = strlen(cmd) * 2 + 32;
    char *out = malloc(cap);
    if (out == NULL) {
        return NULL;
    }
    snprintf(num, sizeof num, "%" PRId32, id);
    for (const char *p = cmd; *p != '\0';) {
        const char *add = p;
        size_t len = 1;
        if (strncmp(p, "{id}", 4) == 0) {
            add = num;
            len = strlen(num);
            p += 4;
        } else {
            p++;
        }
        if (n + len + 1 > cap) {
            char *q;
            cap = (n + len + 1) * 2;
            q = realloc(out, cap);
            if (q == NULL) {
                free(out);
                return NULL;
            }
            out = q;
        }
        memcpy(out + n, add, len);
        n += len;
    }
    out[n] = '\0';
    return out;
}

static int run_cmd(const char *what, const char *cmd, int32_t id)
{
    char *c = expand(cmd, id);
    int rv;
    if (c == NULL) {
        return -1;
    }
    rv = system(c);
    if (rv != 0) {
        fprintf(stderr, "craft-bench failover: the %s command (%s) exited %d\n",
                what, c, rv);
    }
    free(c);
    return rv;
}

struct resumed
{
    uint64_t after_ns; /* the kill */
    int32_t killed;
};

/* A write acknowledged by another leader since the kill. */
static bool writes_resumed(struct load *l, void *data)
{
    const struct resumed *r = data;
    return l->last_ok_ns > r->after_ns && l->last_ok_leader != 0 &&
           l->last_ok_leader != r->killed;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a;
    double y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int bench_failover(int argc, char **argv)
{
    struct load_args a;
    struct load l;
    double times[100];
    unsigned n_times = 0;
    int64_t total_before = INT64_MIN, total_after;
    int rc = 0;
    memset(&a, 0, sizeof a);
    a.endpoints = getenv("CRAFT_ENDPOINTS");
    a.clients = 4;
    a.size = 100;
    a.op = LOAD_ADD;
    a.rounds = 5;
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool bad;
        int rv;
        if (strcmp(argv[i], "--kill-cmd") == 0 && v != NULL) {
            a.kill_cmd = v;
            i++;
            continue;
        }
        if (strcmp(argv[i], "--restart-cmd") == 0 && v != NULL) {
            a.restart_cmd = v;
            i++;
            continue;
        }
        if (strcmp(argv[i], "--rounds") == 0 && v != NULL) {
            char *end;
            unsigned long n = strtoul(v, &end, 10);
            if (*end != '\0' || v[0] == '-' || n == 0 || n > 100) {
                fprintf(stderr,
                        "craft-bench failover: --rounds must be 1..100, not "
                        "\"%s\"\n",
                        v);
                return 2;
            }
            a.rounds = (unsigned)n;
            i++;
            continue;
        }
        rv = load_option(&a, "failover", argv[i], v, &bad);
        if (bad) {
            return 2;
        }
        if (rv < 0) {
            fprintf(stderr, "craft-bench failover: unknown option %s\n",
                    argv[i]);
            return 2;
        }
        i += rv;
    }
    if (a.op != LOAD_PUT && a.op != LOAD_ADD) {
        fprintf(stderr,
                "craft-bench failover: --op must be put or add: it "
                "measures how long writes stop\n");
        return 2;
    }
    if (a.kill_cmd == NULL || strstr(a.kill_cmd, "{id}") == NULL) {
        fprintf(stderr,
                "craft-bench failover: --kill-cmd CMD is required and must "
                "contain {id}, e.g. --kill-cmd 'kill -9 $(cat "
                "/tmp/n{id}.pid)'\n");
        return 2;
    }
    if (a.endpoints == NULL || a.endpoints[0] == '\0') {
        a.endpoints = "127.0.0.1:50051";
    }
    if (load_init(&l, a.endpoints, a.clients, a.op, a.size) != 0) {
        load_close(&l);
        return 2;
    }
    if (a.op == LOAD_ADD) {
        total_before = read_total(&l);
    }
    for (unsigned r = 1; r <= a.rounds; r++) {
        struct resumed res;
        int32_t leader_id = 0;
        uint64_t acked;
        bool resumed;
        /* A whole cluster that agrees on its leader (the node killed last
         * round is back, if there is a restart command). */
        int ep = find_leader(&l, 20000, a.restart_cmd != NULL, &leader_id);
        if (ep < 0) {
            fprintf(stderr,
                    "craft-bench failover: round %u: no leader (that every "
                    "endpoint agrees on) within 20 s\n",
                    r);
            rc = 1;
            break;
        }
        l.target = (unsigned)ep;
        if (r == 1) {
            load_begin(&l);
        }
        /* The load runs for a second before the kill. */
        acked = l.acked;
        (void)load_loop(&l, cr_cli_now_ns() + 1000000000u, false, NULL, NULL);
        if (l.acked == acked) {
            fprintf(stderr,
                    "craft-bench failover: round %u: no write succeeded "
                    "in the second before the kill\n",
                    r);
        }
        res.killed = leader_id;
        res.after_ns = cr_cli_now_ns();
        if (run_cmd("kill", a.kill_cmd, leader_id) < 0) {
            rc = 1;
            break;
        }
        resumed = load_loop(&l, res.after_ns + 20000000000u, false,
                            writes_resumed, &res);
        if (!resumed) {
            fprintf(stderr,
                    "round %u: killed node %" PRId32
                    "; no write succeeded at another leader within 20 s\n",
                    r, leader_id);
            rc = 1;
        } else {
            times[n_times] = (double)(l.last_ok_ns - res.after_ns) / 1e9;
            if (!a.json) {
                printf("round %u: killed leader node %" PRId32
                       ", writes resumed after %.3f s at node %" PRId32 "\n",
                       r, leader_id, times[n_times], l.last_ok_leader);
                fflush(stdout);
            }
            n_times++;
        }
        if (a.restart_cmd != NULL) {
            if (run_cmd("restart", a.restart_cmd, leader_id) < 0) {
                rc = 1;
                break;
            }
        }
        if (!resumed) {
            break;
        }
    }
    load_drain(&l);
    qsort(times, n_times, sizeof times[0], cmp_double);
    total_after = a.op == LOAD_ADD ? read_total(&l) : INT64_MIN;
    if (a.json) {
        printf("{\"rounds\": %u, \"times_s\": [", n_times);
        for (unsigned i = 0; i < n_times; i++) {
            printf("%s%.3f", i > 0 ? ", " : "", times[i]);
        }
        printf("], \"median_s\": %.3f, \"acked\": %" PRIu64
               ", \"abandoned\": %" PRIu64,
               n_times > 0 ? times[n_times / 2] : 0, l.acked, l.abandoned);
        if (total_before != INT64_MIN && total_after != INT64_MIN) {
            printf(", \"total_delta\": %" PRId64, total_after - total_before);
        }
        printf(", \"errors_by_kind\": ");
        print_errors_json(&l.err);
        printf("}\n");
    } else {
        printf("failover: %u rounds, median %.3f s (sorted:", n_times,
               n_times > 0 ? times[n_times / 2] : 0);
        for (unsigned i = 0; i < n_times; i++) {
            printf(" %.3f", times[i]);
        }
        printf(")\n");
        print_errors_text(&l.err);
    }
    if (total_before != INT64_MIN && total_after != INT64_MIN) {
        /* Every acknowledged addition of 1 is in the total once; the
         * abandoned ones may or may not be. */
        int64_t delta = total_after - total_before;
        bool ok = delta >= (int64_t)l.acked &&
                  delta <= (int64_t)(l.acked + l.abandoned);
        fprintf(a.json ? stderr : stdout,
                "exactly-once check: the total grew by %" PRId64
                ", acknowledged %" PRIu64 ", abandoned %" PRIu64 ": %s\n",
                delta, l.acked, l.abandoned,
                ok ? "ok" : "MISMATCH (lost or duplicated additions)");
        if (!ok) {
            rc = 1;
        }
    }
    load_close(&l);
    return rc;
}

static void bench_usage(FILE *f)
{
    fprintf(
        f,
        "usage: craft-bench run [--endpoints H:P,...] [--clients N] "
        "[--seconds S]\n"
        "                       [--size BYTES] [--op put|add|get|status] "
        "[--json]\n"
        "       craft-bench failover [--endpoints H:P,...] --kill-cmd CMD\n"
        "                       [--restart-cmd CMD] [--rounds R] [--clients "
        "N]\n"
        "                       [--op put|add] [--json]\n"
        "       craft-bench wal [--dir DIR] [--writers 1,16,64,256] "
        "[--seconds S]\n"
        "                       [--size BYTES] [--json]\n"
        "\n"
        "run: N clients (1) in a closed loop over gRPC, each with its own "
        "session:\n"
        "  typed Put of a BYTES-byte value (100) to key bench-<client>, "
        "Add 1,\n"
        "  Get of that key (a linearizable read), or GetStatus (no Raft at "
        "all:\n"
        "  what the transport alone can do);\n"
        "  sent to the leader (found first with GetStatus), following "
        "leader hints.\n"
        "  A progress line a second on stderr; then ops/s, latency p50/p99/max"
        " (first\n"
        "  attempt to answer, retries included) and errors by kind. Stops "
        "after S\n"
        "  seconds (10) and the calls in flight.\n"
        "failover: clients (4) add 1 in a closed loop; R times (5): find the "
        "leader,\n"
        "  run CMD (--kill-cmd, {id} replaced by the leader's id) to kill it, "
        "and\n"
        "  measure the time until a write succeeds at another leader "
        "(bounded by\n"
        "  20 s); then run --restart-cmd (same {id}), if given, and wait "
        "until every\n"
        "  endpoint is back. Prints each round and the median; with --op add,"
        " checks\n"
        "  that the total grew by exactly the acknowledged additions (exit 1 "
        "if not).\n"
        "  Without --restart-cmd each round leaves one node fewer.\n"
        "  e.g. --kill-cmd 'kill -9 $(cat /tmp/cc/n{id}.pid)'\n"
        "wal: the storage alone (see the source).\n"
        "\n"
        "--endpoints defaults to env CRAFT_ENDPOINTS, else 127.0.0.1:50051. "
        "Exit 0\n"
        "success, 1 failure, 2 usage.\n");
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "wal") == 0) {
        return bench_wal(argc - 1, argv + 1);
    }
    if (argc >= 2 && strcmp(argv[1], "run") == 0) {
        return bench_run(argc - 1, argv + 1);
    }
    if (argc >= 2 && strcmp(argv[1], "failover") == 0) {
        return bench_failover(argc - 1, argv + 1);
    }
    if (argc >= 2 &&
        (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        bench_usage(stdout);
        return 0;
    }
    bench_usage(stderr);
    return 2;
}
