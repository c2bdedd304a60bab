/* Snapshot files, written and read in chunks so that a snapshot can stream
 * over the network without being held in memory whole.
 *
 * Writing: a temporary name, the data, then the header (now that size and
 * checksum are known), fdatasync, rename to the final name, fsync of the
 * directory: a crash leaves either the old set of snapshots or the new one,
 * plus a temporary file that recovery removes. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "storage_impl.h"

struct cr_snapshot_writer
{
    const struct cr_fs *fs;
    char dir[CR_PATH_MAX];
    char tmp[CR_PATH_MAX + 8];
    char path[CR_PATH_MAX];
    int fd;
    struct cr_snapshot_meta meta;
    size_t header_len;
    uint64_t size;
    uint32_t crc;
};

int cr_snapshot_writer_open(struct cr_snapshot_writer **out,
                            const char *dir,
                            const struct cr_fs *fs,
                            const struct cr_snapshot_meta *meta,
                            char *errmsg)
{
    struct cr_snapshot_writer *w;
    char name[96];
    uint8_t zero[CR__SNAP_FIXED + 8192];
    int rv;
    if (fs == NULL) {
        fs = &cr_fs_posix;
    }
    if (meta->index == 0 || meta->term == 0 ||
        meta->config_index > meta->index || meta->config.n == 0) {
        cr__errf(errmsg, "snapshot metadata is not valid");
        return CR_EINVAL;
    }
    w = calloc(1, sizeof *w);
    if (w == NULL) {
        return CR_ENOMEM;
    }
    w->fs = fs;
    w->meta = *meta;
    w->header_len = cr__snap_header_size(meta);
    snprintf(w->dir, sizeof w->dir, "%s", dir);
    cr__snap_name(name, sizeof name, meta->index, meta->term);
    if (cr__join(w->path, dir, name) != 0 ||
        strlen(w->path) + sizeof CR__TMP_SUFFIX > sizeof w->tmp) {
        free(w);
        return CR_EINVAL;
    }
    snprintf(w->tmp, sizeof w->tmp, "%s%s", w->path, CR__TMP_SUFFIX);
    w->fd = fs->open(fs->data, w->tmp, CR_FS_WRITE | CR_FS_CREATE);
    if (w->fd < 0) {
        cr__errf(errmsg, "%s: cannot be created (%s)", w->tmp,
                 strerror(-w->fd));
        free(w);
        return CR_EIO;
    }
    memset(zero, 0, w->header_len);
    rv = fs->truncate(fs->data, w->fd, 0);
    if (rv == 0) {
        rv = cr__write_full(fs, w->fd, zero, w->header_len, 0);
    }
    if (rv != 0) {
        cr__errf(errmsg, "%s: cannot be written (%s)", w->tmp, strerror(-rv));
        cr_snapshot_writer_abort(w);
        return rv == -ENOSPC ? CR_ENOSPC : CR_EIO;
    }
    *out = w;
    return 0;
}

int cr_snapshot_writer_write(struct cr_snapshot_writer *w,
                             const void *buf,
                             size_t len)
{
    int rv = cr__write_full(w->fs, w->fd, buf, len, w->header_len + w->size);
    if (rv != 0) {
        /* No space is not fatal: the node can try again later. */
        return rv == -ENOSPC ? CR_ENOSPC : CR_EIO;
    }
    w->crc = cr_crc32c(w->crc, buf, len);
    w->size += len;
    return 0;
}

struct old_snaps
{
    cr_index index[64];
    cr_term term[64];
    unsigned n;
};

static void on_snap(void *arg, const char *name)
{
    struct old_snaps *o = arg;
    unsigned long long index, term;
    char tail;
    if (o->n < 64 && sscanf(name, CR__SNAP_PREFIX "%llu-%llu%c", &index, &term,
                            &tail) == 2) {
        o->index[o->n] = index;
        o->term[o->n] = term;
        o->n++;
    }
}

/* Removes all snapshots but the `keep` newest. */
static void prune(const struct cr_fs *fs, const char *dir, unsigned keep)
{
    struct old_snaps o;
    o.n = 0;
    if (fs->list(fs->data, dir, on_snap, &o) != 0 || o.n <= keep) {
        return;
    }
    for (unsigned i = 0; i < o.n; i++) {
        unsigned newer = 0;
        for (unsigned j = 0; j < o.n; j++) {
            if (o.index[j] > o.index[i] ||
                (o.index[j] == o.index[i] && o.term[j] > o.term[i])) {
                newer++;
            }
        }
        if (newer >= keep) {
            char name[96];
            char path[CR_PATH_MAX];
            cr__snap_name(name, sizeof name, o.index[i], o.term[i]);
            if (cr__join(path, dir, name) == 0) {
                (void)fs->unlink(fs->data, path);
            }
        }
    }
    (void)fs->sync_dir(fs->data, dir);
}

int cr_snapshot_writer_commit(struct cr_snapshot_writer *w,
                              unsigned keep,
                              char *path)
{
    uint8_t header[CR__SNAP_FIXED + 8192];
    const struct cr_fs *fs = w->fs;
    int rv;
    cr__snap_header_encode(header, &w->meta, w->size, w->crc);
    rv = cr__write_full(fs, w->fd, header, w->header_len, 0);
    if (rv == 0) {
        rv = fs->fdatasync(fs->data, w->fd);
    }
    (void)fs->close(fs->data, w->fd);
    w->fd = -1;
    if (rv == 0) {
        rv = fs->rename(fs->data, w->tmp, w->path);
    }
    if (rv == 0) {
        rv = fs->sync_dir(fs->data, w->dir);
    }
    if (rv != 0) {
        (void)fs->unlink(fs->data, w->tmp);
        free(w);
        return rv == -ENOSPC ? CR_ENOSPC : CR_EIO;
    }
    if (path != NULL) {
        snprintf(path, CR_PATH_MAX, "%s", w->path);
    }
    prune(fs, w->dir, keep == 0 ? 1 : keep);
    free(w);
    return 0;
}

void cr_snapshot_writer_abort(struct cr_snapshot_writer *w)
{
    if (w == NULL) {
        return;
    }
    if (w->fd >= 0) {
        (void)w->fs->close(w->fs->data, w->fd);
    }
    (void)w->fs->unlink(w->fs->data, w->tmp);
    free(w);
}

struct cr_snapshot_reader
{
    const struct cr_fs *fs;
    int fd;
    size_t header_len;
    uint64_t size;
    uint64_t pos;
    uint32_t expect;
    uint32_t crc;
    bool checked;
};

int cr_snapshot_reader_open(struct cr_snapshot_reader **out,
                            const char *path,
                            const struct cr_fs *fs,
                            struct cr_snapshot_meta *meta,
                            uint64_t *size,
                            char *errmsg)
{
    struct cr_snapshot_reader *r;
    uint8_t header[CR__SNAP_FIXED + 8192];
    uint64_t file_size;
    int rv;
    if (fs == NULL) {
        fs = &cr_fs_posix;
    }
    r = calloc(1, sizeof *r);
    if (r == NULL) {
        return CR_ENOMEM;
    }
    r->fs = fs;
    r->fd = fs->open(fs->data, path, CR_FS_READ);
    if (r->fd < 0) {
        cr__errf(errmsg, "cannot be opened (%s)", strerror(-r->fd));
        free(r);
        return CR_EIO;
    }
    rv = fs->size(fs->data, r->fd, &file_size);
    if (rv != 0 || file_size < CR__SNAP_FIXED) {
        cr__errf(errmsg, "too short for a snapshot header");
        goto bad;
    }
    rv = cr__read_full(fs, r->fd, header, CR__SNAP_FIXED, 0);
    if (rv != 0 ||
        cr__snap_header_peek(header, CR__SNAP_FIXED, &r->header_len) != 0 ||
        file_size < r->header_len) {
        cr__errf(errmsg, "not a valid snapshot header");
        goto bad;
    }
    rv = cr__read_full(fs, r->fd, header, r->header_len, 0);
    if (rv != 0 || cr__snap_header_decode(header, r->header_len, meta, &r->size,
                                          &r->expect) != 0) {
        cr__errf(errmsg, "the snapshot header fails its checks");
        goto bad;
    }
    if (file_size != r->header_len + r->size) {
        cr__errf(errmsg, "the file has %llu bytes but its header says %llu",
                 (unsigned long long)file_size,
                 (unsigned long long)(r->header_len + r->size));
        goto bad;
    }
    *size = r->size;
    *out = r;
    return 0;
bad:
    cr_snapshot_reader_close(r);
    return CR_ECORRUPT;
}

int cr_snapshot_reader_read(struct cr_snapshot_reader *r,
                            void *buf,
                            size_t len,
                            size_t *n)
{
    uint64_t left = r->size - r->pos;
    size_t take = left < len ? (size_t)left : len;
    int rv;
    if (take > 0) {
        rv = cr__read_full(r->fs, r->fd, buf, take, r->header_len + r->pos);
        if (rv != 0) {
            return rv == -EIO ? CR_ECORRUPT : CR_EIO;
        }
        r->crc = cr_crc32c(r->crc, buf, take);
        r->pos += take;
    }
    *n = take;
    if (r->pos == r->size && !r->checked) {
        r->checked = true;
        if (r->crc != r->expect) {
            return CR_ECORRUPT;
        }
    }
    return 0;
}

void cr_snapshot_reader_close(struct cr_snapshot_reader *r)
{
    if (r == NULL) {
        return;
    }
    if (r->fd >= 0) {
        (void)r->fs->close(r->fs->data, r->fd);
    }
    free(r);
}

int cr_snapshot_path(char *path, const char *dir, cr_index index, cr_term term)
{
    char name[96];
    cr__snap_name(name, sizeof name, index, term);
    return cr__join(path, dir, name);
}
