/* craft-bench: load generators that report numbers.
 *
 *   craft-bench wal [--dir DIR] [--writers 1,16,64,256] [--seconds S]
 *                   [--size BYTES] [--json]
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
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

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

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "wal") == 0) {
        return bench_wal(argc - 1, argv + 1);
    }
    fprintf(argc >= 2 && strcmp(argv[1], "--help") == 0 ? stdout : stderr,
            "usage: craft-bench wal [--dir DIR] [--writers 1,16,64,256] "
            "[--seconds S] [--size BYTES] [--json]\n");
    return argc >= 2 && strcmp(argv[1], "--help") == 0 ? 0 : 2;
}
