/* The storage: opening a data directory, and the writer thread that makes
 * submitted updates durable with group commit.
 *
 * cr_storage_submit runs on the node's loop thread: it encodes the update's
 * records (entries, commit index, truncation, snapshot install) into one
 * buffer, checksums included, and queues it. The writer thread takes every
 * queued request at once, appends their records to the active segment,
 * calls fdatasync once for all of them, writes term and vote to the
 * alternate metadata file if they changed (and fdatasyncs it), and reports
 * the highest update made durable. Payload bytes are copied at submit, so
 * the writer never touches the core's reference counts. */
#define _GNU_SOURCE

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "storage_impl.h"

/* Times the writer looks for more work before it sleeps. */
#define SPIN_ROUNDS 50

enum req_kind { REQ_WRITE = 1, REQ_COMPACT };

struct req
{
    struct req *next;
    enum req_kind kind;
    uint64_t seq;
    cr_index last_index;
    bool has_meta;
    cr_term term;
    cr_id vote;
    bool reset;
    cr_index compact_upto;
    bool compacted;
    size_t len;
    uint8_t *buf;
};

struct seg
{
    uint64_t seq;
    cr_index max_index;
    bool has_reset;
};

struct cr_storage
{
    const struct cr_fs *fs;
    const struct cr_alloc *alloc;
    struct cr_storage_options opt;
    char dir[CR_PATH_MAX];
    int lock_fd;
    cr_storage_done_fn done;
    void *done_data;

    pthread_t thread;
    bool thread_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct req *head, *tail;
    atomic_bool stop;
    bool exited; /* the writer stopped taking requests (under mu) */
    atomic_int status;
    atomic_bool stalled;
    struct cr_storage_stats stats;     /* the writer's own counters */
    struct cr_storage_stats published; /* a copy under mu, per batch */

    /* The submitting thread's view of what it queued. */
    cr_term sub_term;
    cr_id sub_vote;
    cr_index sub_commit;

    /* The writer thread's state. */
    struct seg *segs;
    unsigned n_segs, cap_segs;
    int fd; /* the active segment, -1 if none */
    uint64_t off, cap;
    bool dirty;    /* written since the last fdatasync */
    uint8_t *wbuf; /* the records of the batch being written */
    size_t wlen, wcap;
    size_t wdone; /* written so far (ENOSPC resumes here) */
    struct cr__meta meta;
    unsigned meta_slot;    /* the file holding `meta` */
    uint64_t reported_seq; /* the last update reported durable */
    cr_index reported_index;
};

void cr_storage_options_default(struct cr_storage_options *o)
{
    memset(o, 0, sizeof *o);
    o->segment_size = 8u << 20;
    o->keep_snapshots = 2;
}

/* ---------------------------------------------------------------------------
 * Writer side
 * ------------------------------------------------------------------------- */

static int seg_path(const struct cr_storage *s, uint64_t seq, char *path)
{
    char name[64];
    cr__seg_name(name, sizeof name, seq);
    return cr__join(path, s->dir, name);
}

static int push_seg(struct cr_storage *s, uint64_t seq)
{
    if (s->n_segs == s->cap_segs) {
        unsigned cap = s->cap_segs == 0 ? 16 : 2 * s->cap_segs;
        struct seg *p = realloc(s->segs, cap * sizeof *p);
        if (p == NULL) {
            return -ENOMEM;
        }
        s->segs = p;
        s->cap_segs = cap;
    }
    memset(&s->segs[s->n_segs], 0, sizeof s->segs[0]);
    s->segs[s->n_segs].seq = seq;
    s->n_segs++;
    return 0;
}

/* Closes the active segment after making it durable. */
static int close_active(struct cr_storage *s)
{
    int rv = 0;
    if (s->fd < 0) {
        return 0;
    }
    if (s->dirty) {
        rv = s->fs->fdatasync(s->fs->data, s->fd);
        s->stats.syncs++;
        s->dirty = false;
    }
    (void)s->fs->close(s->fs->data, s->fd);
    s->fd = -1;
    return rv;
}

/* Starts the next segment with room for at least `need` bytes. A failed
 * attempt leaves no file behind, so it can be retried. */
static int new_segment(struct cr_storage *s, size_t need)
{
    char path[CR_PATH_MAX];
    uint8_t header[CR__SEG_HEADER];
    uint64_t seq = s->n_segs > 0 ? s->segs[s->n_segs - 1].seq + 1 : 1;
    uint64_t size = s->opt.segment_size;
    int fd, rv;
    if (size < CR__SEG_HEADER + need) {
        size = CR__SEG_HEADER + need;
    }
    rv = close_active(s);
    if (rv != 0) {
        return rv;
    }
    if (seg_path(s, seq, path) != 0) {
        return -ENAMETOOLONG;
    }
    (void)s->fs->unlink(s->fs->data, path); /* a failed earlier attempt */
    fd =
        s->fs->open(s->fs->data, path, CR_FS_WRITE | CR_FS_CREATE | CR_FS_EXCL);
    if (fd < 0) {
        return fd;
    }
    rv = s->fs->allocate(s->fs->data, fd, size);
    if (rv == 0) {
        cr__seg_header_encode(header, seq);
        rv = cr__write_full(s->fs, fd, header, sizeof header, 0);
    }
    if (rv == 0) {
        rv = s->fs->fdatasync(s->fs->data, fd);
    }
    if (rv == 0) {
        /* The new name must survive a crash before anything in it counts. */
        rv = s->fs->sync_dir(s->fs->data, s->dir);
    }
    if (rv == 0) {
        rv = push_seg(s, seq);
    }
    if (rv != 0) {
        (void)s->fs->close(s->fs->data, fd);
        (void)s->fs->unlink(s->fs->data, path);
        return rv;
    }
    s->fd = fd;
    s->off = CR__SEG_HEADER;
    s->cap = size;
    s->stats.segments++;
    return 0;
}

/* Notes what the records in [from, to) of the write buffer hold. */
static void note_records(struct cr_storage *s, size_t from, size_t to)
{
    struct seg *cur = &s->segs[s->n_segs - 1];
    while (from < to) {
        const uint8_t *rec = s->wbuf + from;
        if (rec[8] == CR__REC_ENTRY && cr__get64(rec + 16) > cur->max_index) {
            cur->max_index = cr__get64(rec + 16);
        }
        if (rec[8] == CR__REC_RESET) {
            cur->has_reset = true;
        }
        s->stats.records++;
        from += cr__rec_size(cr__get32(rec + 4));
    }
}

/* Writes the batch's records from where it stopped: in each segment, one
 * batch header and as many whole records as fit. */
static int write_records(struct cr_storage *s)
{
    while (s->wdone < s->wlen) {
        uint64_t room = s->fd >= 0 ? s->cap - s->off : 0;
        size_t fit = 0;
        uint8_t header[CR__REC_HEADER];
        int rv;
        while (s->wdone + fit < s->wlen) {
            size_t rs = cr__rec_size(cr__get32(s->wbuf + s->wdone + fit + 4));
            if (CR__REC_HEADER + fit + rs > room) {
                break;
            }
            fit += rs;
        }
        if (fit == 0) {
            size_t first = cr__rec_size(cr__get32(s->wbuf + s->wdone + 4));
            rv = new_segment(s, CR__REC_HEADER + first);
            if (rv != 0) {
                return rv;
            }
            continue;
        }
        (void)cr__batch_encode(header, s->wbuf + s->wdone, fit);
        rv = cr__write_full(s->fs, s->fd, header, sizeof header, s->off);
        if (rv == 0) {
            rv = cr__write_full(s->fs, s->fd, s->wbuf + s->wdone, fit,
                                s->off + CR__REC_HEADER);
        }
        if (rv != 0) {
            return rv;
        }
        note_records(s, s->wdone, s->wdone + fit);
        s->off += CR__REC_HEADER + fit;
        s->dirty = true;
        s->stats.bytes += CR__REC_HEADER + fit;
        s->wdone += fit;
    }
    return 0;
}

/* Gathers the records of a batch's writes into the write buffer. */
static int gather(struct cr_storage *s, struct req *batch)
{
    size_t len = 0;
    for (struct req *r = batch; r != NULL; r = r->next) {
        if (r->kind == REQ_WRITE) {
            len += r->len;
        }
    }
    if (len > s->wcap) {
        uint8_t *p = realloc(s->wbuf, len);
        if (p == NULL) {
            return -ENOMEM;
        }
        s->wbuf = p;
        s->wcap = len;
    }
    s->wlen = 0;
    s->wdone = 0;
    for (struct req *r = batch; r != NULL; r = r->next) {
        if (r->kind == REQ_WRITE && r->len > 0) {
            memcpy(s->wbuf + s->wlen, r->buf, r->len);
            s->wlen += r->len;
        }
    }
    return 0;
}

static int write_meta(struct cr_storage *s, cr_term term, cr_id vote)
{
    struct cr__meta m = s->meta;
    uint8_t buf[CR__META_SIZE];
    char path[CR_PATH_MAX];
    unsigned slot = 3 - s->meta_slot;
    bool created = false;
    int fd, rv;
    m.seq++;
    m.term = term;
    m.vote = vote;
    cr__meta_encode(buf, &m);
    if (cr__join(path, s->dir, slot == 1 ? "metadata1" : "metadata2") != 0) {
        return -ENAMETOOLONG;
    }
    fd = s->fs->open(s->fs->data, path, CR_FS_WRITE);
    if (fd == -ENOENT) {
        fd = s->fs->open(s->fs->data, path, CR_FS_WRITE | CR_FS_CREATE);
        created = true;
    }
    if (fd < 0) {
        return fd;
    }
    rv = cr__write_full(s->fs, fd, buf, sizeof buf, 0);
    if (rv == 0) {
        rv = s->fs->fdatasync(s->fs->data, fd);
    }
    (void)s->fs->close(s->fs->data, fd);
    if (rv == 0 && created) {
        /* A new file's name must be durable too, or a crash takes the
         * term and vote it holds away with it. */
        rv = s->fs->sync_dir(s->fs->data, s->dir);
    }
    if (rv == 0) {
        s->meta = m;
        s->meta_slot = slot;
    }
    return rv;
}

/* Drops whole segments from the front (never the active one): those
 * before a snapshot install and those whose entries are all <= upto. */
static int compact(struct cr_storage *s, cr_index upto)
{
    unsigned last_reset = 0;
    unsigned drop = 0;
    int rv = 0;
    for (unsigned i = 0; i < s->n_segs; i++) {
        if (s->segs[i].has_reset) {
            last_reset = i;
        }
    }
    while (drop + 1 < s->n_segs &&
           (drop < last_reset || s->segs[drop].max_index <= upto)) {
        char path[CR_PATH_MAX];
        if (seg_path(s, s->segs[drop].seq, path) != 0) {
            break;
        }
        rv = s->fs->unlink(s->fs->data, path);
        if (rv != 0 && rv != -ENOENT) {
            break;
        }
        rv = 0;
        drop++;
    }
    if (drop > 0) {
        memmove(s->segs, s->segs + drop, (s->n_segs - drop) * sizeof *s->segs);
        s->n_segs -= drop;
        if (rv == 0) {
            rv = s->fs->sync_dir(s->fs->data, s->dir);
        }
    }
    return rv;
}

/* Makes a batch durable, then carries out its compactions. Returns 0,
 * -ENOSPC (call again later: the progress is kept) or another negative
 * errno (fatal). */
static int write_batch(struct cr_storage *s,
                       struct req *batch,
                       bool *gathered,
                       bool *meta_done)
{
    bool has_meta = false;
    cr_term term = 0;
    cr_id vote = 0;
    int rv;
    if (!*gathered) {
        rv = gather(s, batch);
        if (rv != 0) {
            return rv;
        }
        *gathered = true;
    }
    rv = write_records(s);
    if (rv != 0) {
        return rv;
    }
    if (s->dirty) {
        rv = s->fs->fdatasync(s->fs->data, s->fd);
        s->stats.syncs++;
        if (rv != 0) {
            return rv == -ENOSPC ? -EIO : rv;
        }
        s->dirty = false;
    }
    for (struct req *r = batch; r != NULL; r = r->next) {
        if (r->kind == REQ_WRITE && r->has_meta) {
            has_meta = true;
            term = r->term;
            vote = r->vote;
        }
    }
    if (has_meta && !*meta_done) {
        rv = write_meta(s, term, vote);
        if (rv != 0) {
            return rv;
        }
        *meta_done = true;
    }
    for (struct req *r = batch; r != NULL; r = r->next) {
        if (r->kind == REQ_COMPACT && !r->compacted) {
            rv = compact(s, r->compact_upto);
            if (rv != 0) {
                return rv;
            }
            r->compacted = true; /* if a later step has to be retried */
        }
    }
    return 0;
}

static void free_batch(struct cr_storage *s, struct req *r)
{
    while (r != NULL) {
        struct req *next = r->next;
        s->alloc->free(s->alloc->data, r->buf);
        s->alloc->free(s->alloc->data, r);
        r = next;
    }
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void *writer_main(void *arg)
{
    struct cr_storage *s = arg;
    for (;;) {
        struct req *batch, *last = NULL;
        bool gathered = false;
        bool meta_done = false;
        unsigned backoff = 10;
        int rv;
        pthread_mutex_lock(&s->mu);
        s->published = s->stats;
        /* A writer that waits for its last append to be durable sends the
         * next one within microseconds: look for it briefly before going
         * to sleep, which would cost a wake-up on the next append. */
        for (unsigned spin = 0;
             spin < SPIN_ROUNDS && s->head == NULL && !atomic_load(&s->stop);
             spin++) {
            pthread_mutex_unlock(&s->mu);
            sched_yield();
            pthread_mutex_lock(&s->mu);
        }
        while (s->head == NULL && !atomic_load(&s->stop)) {
            pthread_cond_wait(&s->cv, &s->mu);
        }
        batch = s->head;
        s->head = s->tail = NULL;
        pthread_mutex_unlock(&s->mu);
        if (batch == NULL) {
            break; /* stopping, and nothing left */
        }
        for (;;) {
            rv = write_batch(s, batch, &gathered, &meta_done);
            if (rv != -ENOSPC) {
                break;
            }
            /* No space: keep everything as it is and try again, slower and
             * slower, until space returns or the storage closes. */
            s->stats.enospc++;
            atomic_store(&s->stalled, true);
            if (atomic_load(&s->stop)) {
                break;
            }
            sleep_ms(backoff);
            backoff = backoff < 1000 ? backoff * 2 : 1000;
        }
        atomic_store(&s->stalled, false);
        for (struct req *r = batch; r != NULL; r = r->next) {
            if (r->kind == REQ_WRITE) {
                last = r;
            }
        }
        if (rv != 0) {
            /* After a failed write or fsync nothing on disk can be trusted
             * to match what we think is there: stop for good, and say so
             * (with the last update that did become durable). */
            pthread_mutex_lock(&s->mu);
            atomic_store(&s->status, CR_EIO);
            s->exited = true;
            pthread_mutex_unlock(&s->mu);
            if (s->done != NULL) {
                s->done(s->done_data, s->reported_seq, s->reported_index,
                        CR_EIO);
            }
            free_batch(s, batch);
            break;
        }
        if (last != NULL) {
            s->reported_seq = last->seq;
            s->reported_index = last->last_index;
            if (s->done != NULL) {
                s->done(s->done_data, last->seq, last->last_index, 0);
            }
        }
        free_batch(s, batch);
    }
    /* Whatever is still queued after a failure is dropped; submissions
     * from now on are refused (see enqueue). */
    pthread_mutex_lock(&s->mu);
    s->exited = true;
    free_batch(s, s->head);
    s->head = s->tail = NULL;
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* ---------------------------------------------------------------------------
 * Submitting side
 * ------------------------------------------------------------------------- */

/* Queues a request, or frees it and returns CR_EIO if the writer has
 * stopped for good (a check under the queue's lock, so that no request
 * slips in after the writer dropped its queue). */
static int enqueue(struct cr_storage *s, struct req *r)
{
    pthread_mutex_lock(&s->mu);
    if (s->exited) {
        pthread_mutex_unlock(&s->mu);
        free_batch(s, r);
        return CR_EIO;
    }
    if (s->tail == NULL) {
        s->head = r;
    } else {
        s->tail->next = r;
    }
    s->tail = r;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

int cr_storage_submit(struct cr_storage *s, const struct cr_update *u)
{
    struct req *r;
    size_t len = 0;
    uint8_t *p;
    bool commit = false;
    bool truncate = false;
    if (atomic_load(&s->status) != 0) {
        return CR_EIO;
    }
    if (u->persist_seq == 0) {
        return 0;
    }
    if (u->flags & CR_UPDATE_SNAPSHOT) {
        len += cr__rec_size(0);
    }
    if (u->flags & CR_UPDATE_ENTRIES) {
        for (unsigned i = 0; i < u->n_entries; i++) {
            if (u->entries[i].buf.len > UINT32_MAX - 64) {
                return CR_ETOOBIG;
            }
            len += cr__rec_size(u->entries[i].buf.len);
        }
        if (u->n_entries == 0 && !(u->flags & CR_UPDATE_SNAPSHOT)) {
            truncate = true;
            len += cr__rec_size(0);
        }
    }
    /* The commit index rides with any write (see cr_hard_state). */
    if (u->hard_state.commit > s->sub_commit) {
        commit = true;
        len += cr__rec_size(0);
    }
    r = s->alloc->malloc(s->alloc->data, sizeof *r);
    if (r == NULL) {
        return CR_ENOMEM;
    }
    memset(r, 0, sizeof *r);
    r->buf = len > 0 ? s->alloc->malloc(s->alloc->data, len) : NULL;
    if (len > 0 && r->buf == NULL) {
        s->alloc->free(s->alloc->data, r);
        return CR_ENOMEM;
    }
    r->kind = REQ_WRITE;
    r->seq = u->persist_seq;
    r->last_index = u->persist_last_index;
    r->len = len;
    p = r->buf;
    if (u->flags & CR_UPDATE_SNAPSHOT) {
        p += cr__rec_encode(p, CR__REC_RESET, 0, u->snapshot.index,
                            u->snapshot.term, NULL, 0);
        r->reset = true;
    }
    if (u->flags & CR_UPDATE_ENTRIES) {
        for (unsigned i = 0; i < u->n_entries; i++) {
            const struct cr_entry *e = &u->entries[i];
            p += cr__rec_encode(p, CR__REC_ENTRY, e->type, u->entries_first + i,
                                e->term, e->buf.base, (uint32_t)e->buf.len);
        }
        if (truncate) {
            p += cr__rec_encode(p, CR__REC_TRUNCATE, 0, u->entries_first, 0,
                                NULL, 0);
        }
    }
    if (commit) {
        p += cr__rec_encode(p, CR__REC_COMMIT, 0, u->hard_state.commit, 0, NULL,
                            0);
        s->sub_commit = u->hard_state.commit;
    }
    if ((u->flags & CR_UPDATE_HARD_STATE) &&
        (u->hard_state.term != s->sub_term ||
         u->hard_state.vote != s->sub_vote)) {
        r->has_meta = true;
        r->term = u->hard_state.term;
        r->vote = u->hard_state.vote;
        s->sub_term = r->term;
        s->sub_vote = r->vote;
    }
    return enqueue(s, r);
}

int cr_storage_compact(struct cr_storage *s, cr_index upto)
{
    struct req *r;
    if (atomic_load(&s->status) != 0) {
        return CR_EIO;
    }
    r = s->alloc->malloc(s->alloc->data, sizeof *r);
    if (r == NULL) {
        return CR_ENOMEM;
    }
    memset(r, 0, sizeof *r);
    r->kind = REQ_COMPACT;
    r->compact_upto = upto;
    return enqueue(s, r);
}

bool cr_storage_stalled(struct cr_storage *s)
{
    return atomic_load(&s->stalled);
}

void cr_storage_stats(struct cr_storage *s, struct cr_storage_stats *out)
{
    pthread_mutex_lock(&s->mu);
    *out = s->published;
    pthread_mutex_unlock(&s->mu);
}

/* ---------------------------------------------------------------------------
 * Open and close
 * ------------------------------------------------------------------------- */

/* A fresh directory gets both metadata files, valid (sequence 1 and 2), so
 * that a torn write later is told from a missing file. */
static int init_meta(struct cr_storage *s, uint64_t cluster_id)
{
    int rv;
    s->meta.seq = 0;
    s->meta.cluster_id = cluster_id;
    s->meta_slot = 2; /* so that the first write goes to metadata1 */
    rv = write_meta(s, 0, 0);
    if (rv == 0) {
        rv = write_meta(s, 0, 0);
    }
    if (rv == 0) {
        rv = s->fs->sync_dir(s->fs->data, s->dir);
    }
    return rv;
}

static int start_writer(struct cr_storage *s, const struct cr__scan *sc)
{
    char path[CR_PATH_MAX];
    for (unsigned i = 0; i < sc->n_segs; i++) {
        int rv = push_seg(s, sc->segs[i].seq);
        if (rv != 0) {
            return rv;
        }
        s->segs[i].max_index = sc->segs[i].max_index;
        s->segs[i].has_reset = sc->segs[i].has_reset;
    }
    if (sc->n_segs > 0) {
        const struct cr__segment *last = &sc->segs[sc->n_segs - 1];
        if (last->end + CR__REC_HEADER <= last->size) {
            int fd;
            if (seg_path(s, last->seq, path) != 0) {
                return -ENAMETOOLONG;
            }
            fd = s->fs->open(s->fs->data, path, CR_FS_WRITE);
            if (fd < 0) {
                return fd;
            }
            s->fd = fd;
            s->off = last->end;
            s->cap = last->size;
        }
    }
    return 0;
}

static void storage_free(struct cr_storage *s)
{
    if (s->fd >= 0) {
        (void)s->fs->close(s->fs->data, s->fd);
    }
    if (s->lock_fd >= 0) {
        (void)s->fs->close(s->fs->data, s->lock_fd);
    }
    free_batch(s, s->head); /* a read-only storage never had a writer */
    free(s->segs);
    free(s->wbuf);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}

int cr_storage_open(struct cr_storage **out,
                    const char *dir,
                    const struct cr_storage_options *options,
                    const struct cr_fs *fs,
                    const struct cr_alloc *alloc,
                    cr_storage_done_fn done,
                    void *done_data,
                    struct cr_recovery *rec,
                    char *errmsg)
{
    struct cr_storage *s;
    struct cr__scan sc;
    char path[CR_PATH_MAX];
    int rv;

    s = calloc(1, sizeof *s);
    if (s == NULL) {
        return CR_ENOMEM;
    }
    s->fs = fs != NULL ? fs : &cr_fs_posix;
    s->alloc = alloc != NULL ? alloc : &cr_alloc_default;
    if (options != NULL) {
        s->opt = *options;
    } else {
        cr_storage_options_default(&s->opt);
    }
    if (s->opt.segment_size < 4096) {
        s->opt.segment_size = 4096;
    }
    s->done = done;
    s->done_data = done_data;
    s->fd = -1;
    s->lock_fd = -1;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    if (snprintf(s->dir, sizeof s->dir, "%s", dir) >= (int)sizeof s->dir ||
        cr__join(path, dir, "LOCK") != 0) {
        cr__errf(errmsg, "%s: path too long", dir);
        storage_free(s);
        return CR_EINVAL;
    }
    rv = s->fs->mkdir(s->fs->data, dir);
    if (rv != 0) {
        cr__errf(errmsg, "%s: cannot be created (%s)", dir, strerror(-rv));
        storage_free(s);
        return CR_EIO;
    }
    s->lock_fd = s->fs->lock(s->fs->data, path);
    if (s->lock_fd < 0) {
        int busy = s->lock_fd == -EWOULDBLOCK;
        cr__errf(errmsg, "%s: %s", path,
                 busy ? "another process is using this data directory"
                      : strerror(-s->lock_fd));
        s->lock_fd = -1;
        storage_free(s);
        return busy ? CR_EBUSY : CR_EIO;
    }

    memset(&sc, 0, sizeof sc);
    sc.fs = s->fs;
    sc.alloc = s->alloc;
    sc.dir = s->dir;
    sc.read_only = s->opt.read_only;
    rv = cr__recover(&sc, rec, errmsg);
    if (rv != 0) {
        storage_free(s);
        return rv;
    }
    if (rec->fresh) {
        rv = s->opt.read_only ? 0 : init_meta(s, s->opt.cluster_id);
        rec->cluster_id = s->opt.cluster_id;
    } else {
        s->meta = sc.meta;
        s->meta_slot = sc.meta_slot;
        if (s->opt.cluster_id != 0 && sc.meta.cluster_id != 0 &&
            s->opt.cluster_id != sc.meta.cluster_id) {
            cr__errf(errmsg,
                     "%s holds the data of cluster %" PRIu64
                     ", not of cluster %" PRIu64
                     ": point the node at its own data directory",
                     dir, sc.meta.cluster_id, s->opt.cluster_id);
            cr__scan_free(&sc);
            cr_recovery_free(rec, s->alloc);
            storage_free(s);
            return CR_ECLUSTER;
        }
        if (s->opt.cluster_id != 0 && sc.meta.cluster_id == 0 &&
            !s->opt.read_only) {
            s->meta.cluster_id = s->opt.cluster_id;
            rv = write_meta(s, s->meta.term, s->meta.vote);
            rec->cluster_id = s->opt.cluster_id;
        }
        rv = rv != 0 ? rv : start_writer(s, &sc);
    }
    cr__scan_free(&sc);
    if (rv != 0) {
        cr__errf(errmsg, "%s: cannot be prepared for writing (%s)", dir,
                 strerror(-rv));
        cr_recovery_free(rec, s->alloc);
        storage_free(s);
        return CR_EIO;
    }
    s->exited = s->opt.read_only; /* nothing to write with */
    s->sub_term = rec->hs.term;
    s->sub_vote = rec->hs.vote;
    s->sub_commit = rec->hs.commit;
    if (!s->opt.read_only) {
        if (pthread_create(&s->thread, NULL, writer_main, s) != 0) {
            cr__errf(errmsg, "cannot start the storage thread");
            cr_recovery_free(rec, s->alloc);
            storage_free(s);
            return CR_ENOMEM;
        }
        s->thread_started = true;
    }
    *out = s;
    return 0;
}

int cr_storage_close(struct cr_storage *s)
{
    int status;
    if (s == NULL) {
        return 0;
    }
    pthread_mutex_lock(&s->mu);
    atomic_store(&s->stop, true);
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    if (s->thread_started) {
        pthread_join(s->thread, NULL);
    }
    status = atomic_load(&s->status);
    if (status == 0 && !s->opt.read_only && close_active(s) != 0) {
        status = CR_EIO;
    }
    storage_free(s);
    return status;
}

int cr_storage_inspect(const char *dir,
                       const struct cr_fs *fs,
                       void (*line)(void *data, const char *text),
                       void *data,
                       struct cr_recovery *rec,
                       char *errmsg)
{
    struct cr__scan sc;
    int rv;
    memset(&sc, 0, sizeof sc);
    sc.fs = fs != NULL ? fs : &cr_fs_posix;
    sc.alloc = &cr_alloc_default;
    sc.dir = dir;
    sc.read_only = true;
    sc.line = line;
    sc.line_data = data;
    rv = cr__recover(&sc, rec, errmsg);
    cr__scan_free(&sc);
    return rv;
}
