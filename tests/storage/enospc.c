/* A real full disk: fills a small tmpfs until the storage's writer stalls
 * on ENOSPC, makes room (the caller's command grows the tmpfs), and checks
 * that the writer resumes by itself and that every entry is then durable,
 * once, intact, after a reopen. Run by enospc.sh, which makes the tmpfs.
 *
 *   storage-enospc DATA_DIR "COMMAND THAT MAKES ROOM"  */
#define _GNU_SOURCE

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "craft/storage.h"

#define ENTRY_SIZE 4096
#define MAX_ENTRIES 4096

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static uint64_t durable;
static int failed;

static void on_done(void *data, uint64_t seq, cr_index last, int status)
{
    (void)data;
    (void)last;
    pthread_mutex_lock(&mu);
    if (status != 0) {
        failed = status;
    }
    durable = seq;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

/* Waits until `seq` is durable or `ms` pass; returns the durable seq. */
static uint64_t wait_durable(uint64_t seq, unsigned ms)
{
    struct timespec deadline;
    uint64_t d;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += ms / 1000;
    deadline.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&mu);
    while (durable < seq && failed == 0 &&
           pthread_cond_timedwait(&cv, &mu, &deadline) == 0) {
    }
    d = durable;
    pthread_mutex_unlock(&mu);
    return d;
}

static int fail(const char *what)
{
    fprintf(stderr, "storage-enospc: FAIL: %s\n", what);
    return 1;
}

int main(int argc, char **argv)
{
    struct cr_storage *s;
    struct cr_storage_options o;
    struct cr_recovery rec;
    char errmsg[CR_ERRMSG_SIZE];
    static uint8_t payload[ENTRY_SIZE];
    uint64_t seq = 0, stalled_at = 0;
    int rv;

    if (argc != 3) {
        fprintf(stderr, "usage: storage-enospc DATA_DIR COMMAND\n");
        return 2;
    }
    cr_storage_options_default(&o);
    o.segment_size = 128u << 10;
    rv = cr_storage_open(&s, argv[1], &o, NULL, NULL, on_done, NULL, &rec,
                         errmsg);
    if (rv != 0) {
        fprintf(stderr, "storage-enospc: open: %s\n", errmsg);
        return 1;
    }
    cr_recovery_free(&rec, NULL);
    while (seq < MAX_ENTRIES) {
        struct cr_entry e;
        struct cr_update u;
        memset(payload, (int)((seq + 1) & 0xff), sizeof payload);
        memset(&e, 0, sizeof e);
        e.term = 1;
        e.type = CR_ENTRY_COMMAND;
        e.buf.base = payload;
        e.buf.len = sizeof payload;
        memset(&u, 0, sizeof u);
        u.flags = CR_UPDATE_ENTRIES;
        u.persist_seq = ++seq;
        u.persist_last_index = seq;
        u.entries_first = seq;
        u.n_entries = 1;
        u.entries = &e;
        if (cr_storage_submit(s, &u) != 0) {
            return fail("submit refused");
        }
        if (wait_durable(seq, 200) < seq && cr_storage_stalled(s)) {
            stalled_at = seq;
            break;
        }
    }
    if (stalled_at == 0) {
        return fail("the disk never filled up");
    }
    printf("stalled on a full disk with %" PRIu64 " of %" PRIu64
           " entries durable\n",
           wait_durable(0, 0), seq);
    /* Stalled: nothing more becomes durable while there is no room. */
    if (wait_durable(seq, 500) >= seq || !cr_storage_stalled(s)) {
        return fail("the writer did not stay stalled");
    }
    if (system(argv[2]) != 0) {
        return fail("the command that makes room failed");
    }
    if (wait_durable(seq, 10000) < seq) {
        return fail("the writer did not resume within 10 s of making room");
    }
    if (cr_storage_stalled(s) || failed != 0) {
        return fail("still stalled, or failed, after resuming");
    }
    printf("resumed: all %" PRIu64 " entries durable\n", seq);
    if (cr_storage_close(s) != 0) {
        return fail("close");
    }
    rv = cr_storage_open(&s, argv[1], &o, NULL, NULL, NULL, NULL, &rec, errmsg);
    if (rv != 0) {
        fprintf(stderr, "storage-enospc: reopen: %s\n", errmsg);
        return 1;
    }
    if (rec.n != seq || rec.first != 1 || rec.torn) {
        return fail("the reopened log does not hold every entry once");
    }
    for (unsigned i = 0; i < rec.n; i++) {
        const uint8_t *p = rec.entries[i].buf.base;
        if (rec.entries[i].buf.len != ENTRY_SIZE || p[0] != ((i + 1) & 0xff) ||
            p[ENTRY_SIZE - 1] != ((i + 1) & 0xff)) {
            return fail("an entry came back damaged");
        }
    }
    printf("reopened: %u entries, intact\n", rec.n);
    cr_recovery_free(&rec, NULL);
    cr_storage_close(s);
    return 0;
}
