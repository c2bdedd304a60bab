/* Recovery: what a data directory holds, checked, for cr_storage_open and
 * cr_storage_inspect.
 *
 * The rule for damage: a crash can only tear what was being written when
 * it happened, which is the end of the newest segment (and the newer of the
 * two metadata files). Anything else that fails a check was damaged after
 * it was written (a bad disk, a bad copy, a person), and guessing around it
 * could lose acknowledged writes: recovery refuses, and says where. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "storage_impl.h"

struct listing
{
    bool meta[3];
    uint64_t *segs;
    unsigned n_segs, cap_segs;
    struct snap_name
    {
        cr_index index;
        cr_term term;
        char name[64];
    } * snaps;
    unsigned n_snaps, cap_snaps;
    char tmp[8][64];
    unsigned n_tmp;
    bool oom;
};

static bool parse_u64(const char *s, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    if (n == 0) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9' || v > (UINT64_MAX - 9) / 10) {
            return false;
        }
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *out = v;
    return true;
}

static void on_name(void *arg, const char *name)
{
    struct listing *l = arg;
    size_t len = strlen(name);
    size_t tlen = strlen(CR__TMP_SUFFIX);
    if (strcmp(name, "metadata1") == 0) {
        l->meta[1] = true;
    } else if (strcmp(name, "metadata2") == 0) {
        l->meta[2] = true;
    } else if (len > tlen && strcmp(name + len - tlen, CR__TMP_SUFFIX) == 0) {
        if (l->n_tmp < 8 && len < 64) {
            memcpy(l->tmp[l->n_tmp++], name, len + 1);
        }
    } else if (strncmp(name, CR__WAL_PREFIX, 4) == 0) {
        uint64_t seq;
        if (!parse_u64(name + 4, len - 4, &seq)) {
            return;
        }
        if (l->n_segs == l->cap_segs) {
            unsigned cap = l->cap_segs == 0 ? 16 : 2 * l->cap_segs;
            uint64_t *p = realloc(l->segs, cap * sizeof *p);
            if (p == NULL) {
                l->oom = true;
                return;
            }
            l->segs = p;
            l->cap_segs = cap;
        }
        l->segs[l->n_segs++] = seq;
    } else if (strncmp(name, CR__SNAP_PREFIX, 9) == 0 && len < 64) {
        const char *dash = strchr(name + 9, '-');
        struct snap_name *sn;
        uint64_t index, term;
        if (dash == NULL ||
            !parse_u64(name + 9, (size_t)(dash - name - 9), &index) ||
            !parse_u64(dash + 1, strlen(dash + 1), &term)) {
            return;
        }
        if (l->n_snaps == l->cap_snaps) {
            unsigned cap = l->cap_snaps == 0 ? 8 : 2 * l->cap_snaps;
            struct snap_name *p = realloc(l->snaps, cap * sizeof *p);
            if (p == NULL) {
                l->oom = true;
                return;
            }
            l->snaps = p;
            l->cap_snaps = cap;
        }
        sn = &l->snaps[l->n_snaps++];
        sn->index = index;
        sn->term = term;
        memcpy(sn->name, name, len + 1);
    }
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a;
    uint64_t y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int cmp_snap(const void *a, const void *b)
{
    const struct snap_name *x = a;
    const struct snap_name *y = b;
    return x->index < y->index ? -1 : x->index > y->index;
}

static void say(struct cr__scan *sc, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void say(struct cr__scan *sc, const char *fmt, ...)
{
    char text[CR_ERRMSG_SIZE + 64];
    va_list ap;
    if (sc->line == NULL) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    sc->line(sc->line_data, text);
}

/* ---------------------------------------------------------------------------
 * Metadata
 * ------------------------------------------------------------------------- */

/* Reads metadata<slot>: 0, CR_ENOTFOUND for a file that was never written
 * (empty, or zeros: a crash while the directory was being set up),
 * CR_ECORRUPT, or CR_EIO. */
static int read_meta(struct cr__scan *sc,
                     unsigned slot,
                     struct cr__meta *m,
                     const char **why)
{
    static const uint8_t zero[CR__META_SIZE];
    char path[CR_PATH_MAX];
    uint8_t buf[CR__META_SIZE];
    uint64_t size = 0;
    size_t len;
    int fd, rv;
    if (cr__join(path, sc->dir, slot == 1 ? "metadata1" : "metadata2") != 0) {
        return CR_EINVAL;
    }
    fd = sc->fs->open(sc->fs->data, path, CR_FS_READ);
    if (fd < 0) {
        *why = "cannot be opened";
        return CR_EIO;
    }
    rv = sc->fs->size(sc->fs->data, fd, &size);
    len = size < sizeof buf ? (size_t)size : sizeof buf;
    if (rv == 0 && len > 0) {
        rv = cr__read_full(sc->fs, fd, buf, len, 0);
    }
    sc->fs->close(sc->fs->data, fd);
    if (rv != 0) {
        *why = "cannot be read";
        return CR_EIO;
    }
    if (memcmp(buf, zero, len) == 0) {
        *why = "was never written";
        return CR_ENOTFOUND;
    }
    if (len < sizeof buf) {
        *why = "is too short";
        return CR_ECORRUPT;
    }
    if (cr__meta_decode(buf, sizeof buf, m) != 0) {
        *why = "fails its checksum";
        return CR_ECORRUPT;
    }
    return 0;
}

static int load_meta(struct cr__scan *sc,
                     const struct listing *l,
                     struct cr_recovery *rec,
                     char *errmsg)
{
    struct cr__meta m[3];
    const char *why[3] = {NULL, NULL, NULL};
    int rv[3] = {CR_ENOTFOUND, CR_ENOTFOUND, CR_ENOTFOUND};
    unsigned best = 0;
    for (unsigned slot = 1; slot <= 2; slot++) {
        if (!l->meta[slot]) {
            continue;
        }
        rv[slot] = read_meta(sc, slot, &m[slot], &why[slot]);
        if (rv[slot] == 0) {
            say(sc,
                "metadata%u: seq=%" PRIu64 " term=%" PRIu64 " vote=%" PRIu64
                " cluster=%" PRIu64,
                slot, m[slot].seq, m[slot].term, m[slot].vote,
                m[slot].cluster_id);
            if (best == 0 || m[slot].seq > m[best].seq) {
                best = slot;
            }
        } else {
            say(sc, "metadata%u: %s", slot, why[slot]);
        }
    }
    if (best == 0) {
        if ((!l->meta[1] || rv[1] == CR_ENOTFOUND) &&
            (!l->meta[2] || rv[2] == CR_ENOTFOUND)) {
            return CR_ENOTFOUND; /* never set up: fresh */
        }
        cr__errf(errmsg,
                 "%s/metadata1 and metadata2: no valid copy of term and vote "
                 "(%s, %s); the node cannot know what it voted, so it must "
                 "not start: restore the directory from a backup, or remove "
                 "it and let the node rejoin as a new member",
                 sc->dir, why[1] != NULL ? why[1] : "missing",
                 why[2] != NULL ? why[2] : "missing");
        return CR_ECORRUPT;
    }
    if (l->meta[3 - best] &&
        (rv[3 - best] == CR_ECORRUPT || rv[3 - best] == CR_ENOTFOUND)) {
        /* The newer write was torn by a crash (or the file was never
         * written); the other copy holds the last write that completed. */
        cr__errf(rec->warning,
                 "%s/metadata%u %s; using metadata%u (seq %" PRIu64 ")",
                 sc->dir, 3 - best, why[3 - best], best, m[best].seq);
    } else if (rv[3 - best] == CR_EIO) {
        cr__errf(errmsg, "%s/metadata%u %s", sc->dir, 3 - best, why[3 - best]);
        return CR_EIO;
    }
    sc->meta = m[best];
    sc->meta_slot = best;
    return 0;
}

/* ---------------------------------------------------------------------------
 * Snapshots
 * ------------------------------------------------------------------------- */

static int check_snapshot(struct cr__scan *sc,
                          const char *name,
                          struct cr_recovery *rec,
                          char *errmsg)
{
    struct cr_snapshot_reader *r;
    char path[CR_PATH_MAX];
    char why[CR_ERRMSG_SIZE];
    uint8_t buf[65536];
    size_t n;
    int rv;
    if (cr__join(path, sc->dir, name) != 0) {
        return CR_EINVAL;
    }
    rv = cr_snapshot_reader_open(&r, path, sc->fs, &rec->snapshot,
                                 &rec->snapshot_size, why);
    if (rv == 0) {
        do {
            rv = cr_snapshot_reader_read(r, buf, sizeof buf, &n);
        } while (rv == 0 && n > 0);
        cr_snapshot_reader_close(r);
        if (rv != 0) {
            snprintf(why, sizeof why, "its data fails the checksum");
        }
    }
    if (rv != 0) {
        cr__errf(errmsg,
                 "%s: %s; the newest snapshot cannot be read, so the state "
                 "it holds would be lost: restore it from a backup or "
                 "another node's copy, or remove the directory and let the "
                 "node rejoin as a new member",
                 path, why);
        return rv == CR_ENOMEM ? rv : CR_ECORRUPT;
    }
    snprintf(rec->snapshot_path, sizeof rec->snapshot_path, "%s", path);
    rec->has_snapshot = true;
    say(sc,
        "%s: index=%" PRIu64 " term=%" PRIu64 " config_index=%" PRIu64
        " servers=%u bytes=%" PRIu64,
        name, rec->snapshot.index, rec->snapshot.term,
        rec->snapshot.config_index, rec->snapshot.config.n, rec->snapshot_size);
    return 0;
}

/* ---------------------------------------------------------------------------
 * Segments
 * ------------------------------------------------------------------------- */

struct replay
{
    struct cr_entry *entries;
    unsigned n, cap;
    cr_index first; /* index of entries[0]; 0 before the first entry */
    cr_index base;  /* entries must start at base + 1 (0: anywhere) */
    cr_index commit;
    bool reset;
    cr_index reset_index;
    cr_term reset_term;
};

static void replay_truncate(struct replay *rp,
                            const struct cr_alloc *a,
                            cr_index from)
{
    while (rp->n > 0 && rp->first + rp->n - 1 >= from) {
        rp->n--;
        cr_batch_unref(a, rp->entries[rp->n].batch);
    }
}

static const char *type_name(enum cr_entry_type t)
{
    switch (t) {
        case CR_ENTRY_COMMAND:
            return "command";
        case CR_ENTRY_CONFIG:
            return "config";
        case CR_ENTRY_NOOP:
            return "noop";
    }
    return "?";
}

/* Offset of the first whole, valid batch at or after `from`, or 0. */
static uint64_t valid_batch_after(const uint8_t *buf,
                                  uint64_t size,
                                  uint64_t from)
{
    for (uint64_t off = cr__align8(from); off + CR__REC_HEADER <= size;
         off += 8) {
        if (buf[off + 8] == CR__REC_BATCH &&
            cr__batch_valid(buf + off, (size_t)(size - off))) {
            return off;
        }
    }
    return 0;
}

/* Applies one record to the replay. */
static int apply_record(struct cr__scan *sc,
                        struct replay *rp,
                        const struct cr__rec *r,
                        void *batch,
                        const char *path,
                        uint64_t off,
                        struct cr__segment *seg,
                        char *errmsg)
{
    switch (r->type) {
        case CR__REC_ENTRY: {
            struct cr_entry *e;
            if (rp->reset && r->index <= rp->base) {
                cr__errf(errmsg,
                         "%s offset %" PRIu64 ": entry %" PRIu64
                         " is covered by the snapshot installed before it "
                         "(index %" PRIu64
                         "); the log is damaged: restore "
                         "the directory from a backup, or remove it and let "
                         "the node rejoin as a new member",
                         path, off, r->index, rp->base);
                return CR_ECORRUPT;
            }
            if (rp->n == 0) {
                cr_index expect = rp->reset ? rp->base + 1 : r->index;
                if (r->index != expect) {
                    cr__errf(errmsg,
                             "%s offset %" PRIu64 ": entry %" PRIu64
                             " follows the snapshot install at %" PRIu64
                             ", the entries in between are missing; restore "
                             "the directory from a backup, or remove it and "
                             "let the node rejoin as a new member",
                             path, off, r->index, rp->base);
                    return CR_ECORRUPT;
                }
                rp->first = r->index;
            } else if (r->index > rp->first + rp->n) {
                cr__errf(errmsg,
                         "%s offset %" PRIu64 ": entry %" PRIu64
                         " follows entry %" PRIu64
                         ", the entries in between are missing; restore "
                         "the directory from a backup, or remove it and let "
                         "the node rejoin as a new member",
                         path, off, r->index, rp->first + rp->n - 1);
                return CR_ECORRUPT;
            } else if (r->index <= rp->first) {
                replay_truncate(rp, sc->alloc, 0);
                rp->first = r->index;
            } else {
                /* A later write replaced the log's tail (§5.3). */
                replay_truncate(rp, sc->alloc, r->index);
            }
            if (rp->n == rp->cap) {
                unsigned cap = rp->cap == 0 ? 1024 : 2 * rp->cap;
                void *p = sc->alloc->realloc(sc->alloc->data, rp->entries,
                                             cap * sizeof *rp->entries);
                if (p == NULL) {
                    return CR_ENOMEM;
                }
                rp->entries = p;
                rp->cap = cap;
            }
            e = &rp->entries[rp->n++];
            e->term = r->term;
            e->type = r->etype;
            e->buf.base = r->len > 0 ? (void *)(uintptr_t)r->payload : NULL;
            e->buf.len = r->len;
            e->batch = batch;
            cr_batch_ref(batch);
            if (r->index > seg->max_index) {
                seg->max_index = r->index;
            }
            say(sc,
                "%s @%" PRIu64 " entry index=%" PRIu64 " term=%" PRIu64
                " type=%s len=%" PRIu32,
                path, off, r->index, r->term, type_name(r->etype), r->len);
            return 0;
        }
        case CR__REC_COMMIT:
            if (r->index > rp->commit) {
                rp->commit = r->index;
            }
            say(sc, "%s @%" PRIu64 " commit index=%" PRIu64, path, off,
                r->index);
            return 0;
        case CR__REC_TRUNCATE:
            replay_truncate(rp, sc->alloc, r->index);
            say(sc, "%s @%" PRIu64 " truncate from=%" PRIu64, path, off,
                r->index);
            return 0;
        case CR__REC_RESET:
            replay_truncate(rp, sc->alloc, 0);
            rp->first = 0;
            rp->base = r->index;
            rp->reset = true;
            rp->reset_index = r->index;
            rp->reset_term = r->term;
            seg->has_reset = true;
            say(sc,
                "%s @%" PRIu64 " snapshot_install index=%" PRIu64
                " term=%" PRIu64,
                path, off, r->index, r->term);
            return 0;
        case CR__REC_BATCH:
            break; /* never here: bodies hold no batches */
    }
    return CR_ECORRUPT;
}

/* Zeros [from, to) and syncs: a torn tail must not be read again. */
/* Cuts a torn tail: the batch at `at` keeps the whole records of its body
 * up to `keep` (none if keep == at; the last one's padding may lie past
 * the end of the file, `size`: it is written as zeros), and everything
 * after it up to `to` becomes zeros, so that the next recovery finds a
 * clean end. */
static int cut_tail(struct cr__scan *sc,
                    const char *path,
                    const uint8_t *buf,
                    uint64_t size,
                    uint64_t at,
                    uint64_t keep,
                    uint64_t to)
{
    static const uint8_t zero[4096];
    int fd = sc->fs->open(sc->fs->data, path, CR_FS_WRITE);
    uint64_t from = keep < size ? keep : size;
    int rv = 0;
    if (fd < 0) {
        return fd;
    }
    if (keep > at) {
        uint8_t header[CR__REC_HEADER];
        uint64_t body = at + CR__REC_HEADER;
        uint64_t present = (keep < size ? keep : size) - body;
        uint32_t crc = cr_crc32c(0, buf + body, (size_t)present);
        for (uint64_t i = present; i < keep - body; i++) {
            crc = cr_crc32c(crc, zero, 1);
        }
        (void)cr__rec_encode(header, CR__REC_BATCH, 0, keep - body, crc, NULL,
                             0);
        rv = cr__write_full(sc->fs, fd, header, sizeof header, at);
    }
    if (to < keep) {
        to = keep; /* the padding of the last kept record */
    }
    while (from < to && rv == 0) {
        size_t n = to - from < sizeof zero ? (size_t)(to - from) : sizeof zero;
        rv = cr__write_full(sc->fs, fd, zero, n, from);
        from += n;
    }
    if (rv == 0) {
        rv = sc->fs->fdatasync(sc->fs->data, fd);
    }
    sc->fs->close(sc->fs->data, fd);
    return rv;
}

/* Applies the records of a batch body [from, to). Strict (a checksummed
 * body): every record must be valid. Otherwise (salvaging a torn batch):
 * the whole records up to the first bad one; *end says where they end. */
static int replay_body(struct cr__scan *sc,
                       struct replay *rp,
                       const uint8_t *buf,
                       uint64_t from,
                       uint64_t to,
                       bool strict,
                       void *batch,
                       const char *path,
                       struct cr__segment *seg,
                       uint64_t *end,
                       char *errmsg)
{
    uint64_t off = from;
    while (off < to) {
        struct cr__rec r;
        const char *why = "";
        enum cr__rec_status st =
            cr__rec_decode(buf + off, (size_t)(to - off), &r, &why);
        int rv;
        if (st == CR__REC_OK && r.type == CR__REC_BATCH) {
            st = CR__REC_BAD;
            why = "a batch inside a batch";
        }
        if (st == CR__REC_OK && strict && r.size != cr__rec_size(r.len)) {
            st = CR__REC_BAD;
            why = "a record cut short";
        }
        if (st != CR__REC_OK) {
            if (!strict) {
                break;
            }
            cr__errf(errmsg,
                     "%s offset %" PRIu64
                     ": %s inside a batch whose checksum matches; the log "
                     "is damaged: restore the directory from a backup, or "
                     "remove it and let the node rejoin as a new member",
                     path, off, why);
            return CR_ECORRUPT;
        }
        rv = apply_record(sc, rp, &r, batch, path, off, seg, errmsg);
        if (rv != 0) {
            return rv;
        }
        off += cr__rec_size(r.len); /* may pass `to` inside the padding */
    }
    *end = off;
    return 0;
}

static int replay_segment(struct cr__scan *sc,
                          struct replay *rp,
                          struct cr__segment *seg,
                          bool last,
                          struct cr_recovery *rec,
                          char *errmsg)
{
    char name[64];
    char path[CR_PATH_MAX];
    uint8_t *buf;
    void *batch;
    uint64_t size, off, seq;
    uint32_t version;
    int fd, rv;

    cr__seg_name(name, sizeof name, seg->seq);
    if (cr__join(path, sc->dir, name) != 0) {
        return CR_EINVAL;
    }
    fd = sc->fs->open(sc->fs->data, path, CR_FS_READ);
    if (fd < 0) {
        cr__errf(errmsg, "%s: cannot be opened (%s)", path, strerror(-fd));
        return CR_EIO;
    }
    rv = sc->fs->size(sc->fs->data, fd, &size);
    if (rv != 0 || size > SIZE_MAX / 2) {
        sc->fs->close(sc->fs->data, fd);
        cr__errf(errmsg, "%s: cannot be read", path);
        return CR_EIO;
    }
    seg->size = size;
    buf = cr_batch_alloc(sc->alloc, (size_t)size, &batch);
    if (buf == NULL) {
        sc->fs->close(sc->fs->data, fd);
        return CR_ENOMEM;
    }
    rv = size > 0 ? cr__read_full(sc->fs, fd, buf, (size_t)size, 0) : 0;
    sc->fs->close(sc->fs->data, fd);
    if (rv != 0) {
        cr_batch_unref(sc->alloc, batch);
        cr__errf(errmsg, "%s: cannot be read (%s)", path, strerror(-rv));
        return CR_EIO;
    }
    rv = cr__seg_header_decode(buf, (size_t)size, &seq, &version);
    if (rv == CR_EINVAL) {
        cr_batch_unref(sc->alloc, batch);
        cr__errf(errmsg,
                 "%s: a segment of format version %" PRIu32
                 "; this craft reads version %d: open the directory with "
                 "the craft that wrote it, or remove it and let the node "
                 "rejoin as a new member",
                 path, version, CR__SEG_VERSION);
        return CR_ECORRUPT;
    }
    if (rv != 0 || seq != seg->seq) {
        bool blank = valid_batch_after(buf, size, 0) == 0;
        cr_batch_unref(sc->alloc, batch);
        if (last && blank) {
            /* A crash while the segment was being created. */
            cr__errf(
                rec->warning,
                "%s: a segment whose creation a crash interrupted "
                "(no valid header, no records)%s",
                path,
                sc->read_only ? "; recovery would remove it" : "; removed");
            rec->torn = true;
            say(sc, "%s: torn segment header", path);
            seg->end = 0;
            if (!sc->read_only) {
                rv = sc->fs->unlink(sc->fs->data, path);
                if (rv == 0) {
                    rv = sc->fs->sync_dir(sc->fs->data, sc->dir);
                }
                if (rv != 0) {
                    cr__errf(errmsg, "%s: cannot be removed (%s)", path,
                             strerror(-rv));
                    return CR_EIO;
                }
            }
            return 1; /* dropped */
        }
        cr__errf(errmsg,
                 "%s offset 0: not a valid segment header; the log is "
                 "damaged: restore the directory from a backup, or remove "
                 "it and let the node rejoin as a new member",
                 path);
        return CR_ECORRUPT;
    }
    say(sc, "%s: segment seq=%" PRIu64 " bytes=%" PRIu64, path, seg->seq, size);
    off = CR__SEG_HEADER;
    for (;;) {
        struct cr__rec r;
        const char *why = "";
        enum cr__rec_status st =
            cr__rec_decode(buf + off, (size_t)(size - off), &r, &why);
        uint64_t body = off + CR__REC_HEADER;
        uint64_t scan_from = off + 8;
        uint64_t keep = off;
        uint64_t later, to;
        bool header_ok = false;
        if (st == CR__REC_OK && r.type != CR__REC_BATCH) {
            st = CR__REC_BAD;
            why = "a record outside a batch";
        }
        if (st == CR__REC_OK) {
            header_ok = true;
            if (r.index <= size - body &&
                cr_crc32c(0, buf + body, (size_t)r.index) == r.term) {
                say(sc, "%s @%" PRIu64 " batch bytes=%" PRIu64, path, off,
                    r.index);
                rv = replay_body(sc, rp, buf, body, body + r.index, true, batch,
                                 path, seg, &keep, errmsg);
                if (rv != 0) {
                    cr_batch_unref(sc->alloc, batch);
                    return rv;
                }
                off = body + r.index;
                continue;
            }
            why = r.index > size - body ? "a batch cut short"
                                        : "batch checksum mismatch";
            /* The next batch, if any, starts right after this one: not
             * inside its body, which may carry batch-shaped bytes. */
            scan_from = r.index <= size - body ? body + r.index : size;
        }
        seg->end = off;
        later = valid_batch_after(buf, size, scan_from);
        if (st == CR__REC_END && later == 0) {
            uint64_t rest = off;
            while (rest < size && buf[rest] == 0) {
                rest++;
            }
            if (rest == size) {
                break; /* zeros to the end: a clean end */
            }
            /* A lost batch header with (part of) its body behind it. */
            why = "bytes after the end of the log";
        }
        if (later != 0) {
            cr__errf(errmsg,
                     "%s offset %" PRIu64
                     ": %s, but a valid batch follows "
                     "(offset %" PRIu64
                     "): the log is damaged in the "
                     "middle, not torn at its end, so acknowledged writes "
                     "may be lost; restore the directory from a backup, or "
                     "remove it and let the node rejoin as a new member",
                     path, off, why, later);
            cr_batch_unref(sc->alloc, batch);
            return CR_ECORRUPT;
        }
        if (!last) {
            cr__errf(errmsg,
                     "%s offset %" PRIu64
                     ": %s in a segment that was "
                     "complete: the log is damaged; restore the "
                     "directory from a backup, or remove it and let the "
                     "node rejoin as a new member",
                     path, off, why);
            cr_batch_unref(sc->alloc, batch);
            return CR_ECORRUPT;
        }
        /* The last batch of the newest segment was torn by a crash: it was
         * never reported durable. Keep the whole records at its start. */
        if (header_ok) {
            uint64_t claimed = r.index <= size - body ? body + r.index : size;
            rv = replay_body(sc, rp, buf, body, claimed, false, batch, path,
                             seg, &keep, errmsg);
            if (rv != 0) {
                cr_batch_unref(sc->alloc, batch);
                return rv;
            }
            if (keep == body) {
                keep = off;
            }
        }
        seg->end = keep;
        to = size;
        while (to > keep && buf[to - 1] == 0) {
            to--;
        }
        rec->torn = true;
        cr__errf(rec->warning, "%s offset %" PRIu64 ": torn tail (%s) %s", path,
                 keep, why, sc->read_only ? "would be cut" : "cut");
        say(sc, "%s @%" PRIu64 " torn tail: %s", path, keep, why);
        if (!sc->read_only) {
            rv = cut_tail(sc, path, buf, size, off, keep, to);
            if (rv != 0) {
                cr__errf(errmsg, "%s: cannot cut the torn tail (%s)", path,
                         strerror(-rv));
                cr_batch_unref(sc->alloc, batch);
                return CR_EIO;
            }
        }
        break;
    }
    cr_batch_unref(sc->alloc, batch);
    return 0;
}

/* ---------------------------------------------------------------------------
 * The whole directory
 * ------------------------------------------------------------------------- */

void cr__scan_free(struct cr__scan *sc)
{
    free(sc->segs);
    sc->segs = NULL;
    sc->n_segs = 0;
}

void cr_recovery_free(struct cr_recovery *r, const struct cr_alloc *a)
{
    if (a == NULL) {
        a = &cr_alloc_default;
    }
    for (unsigned i = 0; i < r->n; i++) {
        cr_batch_unref(a, r->entries[i].batch);
    }
    a->free(a->data, r->entries);
    r->entries = NULL;
    r->n = 0;
}

int cr__recover(struct cr__scan *sc, struct cr_recovery *rec, char *errmsg)
{
    struct listing l;
    struct replay rp;
    int rv;

    memset(rec, 0, sizeof *rec);
    memset(&l, 0, sizeof l);
    memset(&rp, 0, sizeof rp);
    rv = sc->fs->list(sc->fs->data, sc->dir, on_name, &l);
    if (rv != 0) {
        cr__errf(errmsg, "%s: cannot be listed (%s)", sc->dir, strerror(-rv));
        return CR_EIO;
    }
    if (l.oom) {
        rv = CR_ENOMEM;
        goto out;
    }
    /* Leftovers of a crash while a snapshot was being written. */
    for (unsigned i = 0; i < l.n_tmp && !sc->read_only; i++) {
        char path[CR_PATH_MAX];
        if (cr__join(path, sc->dir, l.tmp[i]) == 0) {
            (void)sc->fs->unlink(sc->fs->data, path);
        }
    }
    rv = load_meta(sc, &l, rec, errmsg);
    if (rv == CR_ENOTFOUND) {
        if (l.n_segs > 0 || l.n_snaps > 0) {
            cr__errf(errmsg,
                     "%s: holds a log or snapshots but no metadata1 or "
                     "metadata2, so what this node voted is unknown; restore "
                     "the directory from a backup, or remove it and let the "
                     "node rejoin as a new member",
                     sc->dir);
            rv = CR_ECORRUPT;
            goto out;
        }
        rec->fresh = true;
        rv = 0;
        goto out;
    }
    if (rv != 0) {
        goto out;
    }
    rec->cluster_id = sc->meta.cluster_id;

    if (l.n_snaps > 1) {
        qsort(l.snaps, l.n_snaps, sizeof *l.snaps, cmp_snap);
    }
    if (l.n_snaps > 0) {
        rv = check_snapshot(sc, l.snaps[l.n_snaps - 1].name, rec, errmsg);
        if (rv != 0) {
            goto out;
        }
    }

    if (l.n_segs > 1) {
        qsort(l.segs, l.n_segs, sizeof *l.segs, cmp_u64);
    }
    for (unsigned i = 1; i < l.n_segs; i++) {
        if (l.segs[i] != l.segs[i - 1] + 1) {
            cr__errf(errmsg,
                     "%s: segment %s%016" PRIu64
                     " is missing (between %s"
                     "%016" PRIu64 " and %s%016" PRIu64
                     "); the log has a hole: restore the directory from a "
                     "backup, or remove it and let the node rejoin as a new "
                     "member",
                     sc->dir, CR__WAL_PREFIX, l.segs[i - 1] + 1, CR__WAL_PREFIX,
                     l.segs[i - 1], CR__WAL_PREFIX, l.segs[i]);
            rv = CR_ECORRUPT;
            goto out;
        }
    }
    sc->segs = calloc(l.n_segs == 0 ? 1 : l.n_segs, sizeof *sc->segs);
    if (sc->segs == NULL) {
        rv = CR_ENOMEM;
        goto out;
    }
    for (unsigned i = 0; i < l.n_segs; i++) {
        struct cr__segment *seg = &sc->segs[sc->n_segs];
        seg->seq = l.segs[i];
        rv = replay_segment(sc, &rp, seg, i + 1 == l.n_segs, rec, errmsg);
        if (rv == 1) {
            rv = 0;
            continue; /* a torn, empty newest segment: removed */
        }
        if (rv != 0) {
            goto out;
        }
        sc->n_segs++;
    }

    /* The pieces must fit together. */
    if (rp.reset &&
        (!rec->has_snapshot || rec->snapshot.index < rp.reset_index)) {
        cr__errf(errmsg,
                 "%s: the log was replaced by the snapshot at index %" PRIu64
                 " (term %" PRIu64
                 "), which is missing; restore it, or "
                 "remove the directory and let the node rejoin as a new "
                 "member",
                 sc->dir, rp.reset_index, rp.reset_term);
        rv = CR_ECORRUPT;
        goto out;
    }
    if (rp.n > 0) {
        cr_index floor = rec->has_snapshot ? rec->snapshot.index : 0;
        if (rp.first > floor + 1) {
            cr__errf(
                errmsg,
                "%s: the log starts at index %" PRIu64
                " but %s ends "
                "at %" PRIu64
                ": the entries in between are missing; "
                "restore the directory from a backup, or remove it and "
                "let the node rejoin as a new member",
                sc->dir, rp.first,
                rec->has_snapshot ? "the newest snapshot" : "nothing before it",
                floor);
            rv = CR_ECORRUPT;
            goto out;
        }
    }
    rec->hs.term = sc->meta.term;
    rec->hs.vote = sc->meta.vote;
    rec->hs.commit = rp.commit;
    rec->first = rp.n > 0 ? rp.first : 0;
    rec->entries = rp.entries;
    rec->n = rp.n;
    rp.entries = NULL;
    rp.n = 0;
    rv = 0;
out:
    replay_truncate(&rp, sc->alloc, 0);
    sc->alloc->free(sc->alloc->data, rp.entries);
    free(l.segs);
    free(l.snaps);
    if (rv != 0) {
        cr__scan_free(sc);
    }
    return rv;
}
