/* The fault-injecting in-memory file system of fs_fault.h.
 *
 * Inodes are never freed before fs_fault_free: a removed file may still be
 * named by a durable entry (a removal not yet synced), so a crash can bring
 * it back, and keeping every inode is the simplest way to allow that. */
#define _POSIX_C_SOURCE 200809L

#include "fs_fault.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define FF_NAME 128
#define FF_FDS 256
#define FF_FD_BASE 3

struct bytes
{
    uint8_t *p;
    size_t len, cap;
};

/* An unsynced change of a file: a write, or a new size. */
struct change
{
    bool is_write;
    bool extend_only; /* allocate: grows, never shrinks */
    uint64_t off;     /* write: where; size change: the new size */
    size_t len;
    uint8_t *data;
};

struct inode
{
    struct bytes cur, dur;
    struct change *ch;
    unsigned n_ch, cap_ch;
    unsigned opens;
    int lock_fd; /* -1: not locked */
};

struct entry
{
    char name[FF_NAME];
    struct inode *ino;
};

struct entries
{
    struct entry *e;
    unsigned n, cap;
};

enum dop_kind { DOP_CREATE, DOP_UNLINK, DOP_RENAME };

/* An unsynced change of a directory. */
struct dop
{
    enum dop_kind kind;
    char name[FF_NAME];
    char to[FF_NAME];
    struct inode *ino;
};

struct dir
{
    char path[CR_PATH_MAX];
    struct entries cur, dur;
    struct dop *ops;
    unsigned n_ops, cap_ops;
};

struct fd_slot
{
    struct inode *ino;
    bool used;
    bool write;
};

struct fs_fault
{
    pthread_mutex_t mu;
    struct cr_fs fs;
    struct inode **inodes;
    unsigned n_inodes, cap_inodes;
    struct dir **dirs;
    unsigned n_dirs, cap_dirs;
    struct fd_slot fds[FF_FDS];
    uint64_t ops;
    uint64_t crash_at;
    bool dead;
    enum fs_fault_torn torn;
    bool torn_dirs;
    uint64_t rng;
    uint64_t budget;
    unsigned fail_syncs;
    unsigned fail_skip;
    unsigned sync_delay;
    uint64_t counts[FS_OP_N];
    uint64_t enospc;
};

/* ---------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------- */

static void *xrealloc(void *p, size_t size)
{
    p = realloc(p, size == 0 ? 1 : size);
    if (p == NULL) {
        fprintf(stderr, "fs_fault: out of memory\n");
        abort();
    }
    return p;
}

static uint64_t next_rand(struct fs_fault *f)
{
    /* splitmix64 */
    uint64_t z = (f->rng += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static void bytes_resize(struct bytes *b, size_t len)
{
    if (len > b->cap) {
        size_t cap = b->cap == 0 ? 4096 : b->cap;
        while (cap < len) {
            cap *= 2;
        }
        b->p = xrealloc(b->p, cap);
        b->cap = cap;
    }
    if (len > b->len) {
        memset(b->p + b->len, 0, len - b->len);
    }
    b->len = len;
}

static void bytes_write(struct bytes *b,
                        uint64_t off,
                        const void *data,
                        size_t len)
{
    if (off + len > b->len) {
        bytes_resize(b, (size_t)(off + len));
    }
    if (len > 0) {
        memcpy(b->p + off, data, len);
    }
}

static void bytes_copy(struct bytes *dst, const struct bytes *src)
{
    dst->len = 0;
    bytes_resize(dst, src->len);
    if (src->len > 0) {
        memcpy(dst->p, src->p, src->len);
    }
}

static void change_apply(struct bytes *b, const struct change *c, size_t len)
{
    if (c->is_write) {
        bytes_write(b, c->off, c->data, len);
    } else if (!c->extend_only || c->off > b->len) {
        bytes_resize(b, (size_t)c->off);
    }
}

static void changes_clear(struct inode *ino)
{
    for (unsigned i = 0; i < ino->n_ch; i++) {
        free(ino->ch[i].data);
    }
    ino->n_ch = 0;
}

static void change_push(struct inode *ino, const struct change *c)
{
    if (ino->n_ch == ino->cap_ch) {
        ino->cap_ch = ino->cap_ch == 0 ? 16 : 2 * ino->cap_ch;
        ino->ch = xrealloc(ino->ch, ino->cap_ch * sizeof *ino->ch);
    }
    ino->ch[ino->n_ch++] = *c;
}

static struct inode *inode_new(struct fs_fault *f)
{
    struct inode *ino = xrealloc(NULL, sizeof *ino);
    memset(ino, 0, sizeof *ino);
    ino->lock_fd = -1;
    if (f->n_inodes == f->cap_inodes) {
        f->cap_inodes = f->cap_inodes == 0 ? 16 : 2 * f->cap_inodes;
        f->inodes = xrealloc(f->inodes, f->cap_inodes * sizeof *f->inodes);
    }
    f->inodes[f->n_inodes++] = ino;
    return ino;
}

static struct entry *entries_find(struct entries *es, const char *name)
{
    for (unsigned i = 0; i < es->n; i++) {
        if (strcmp(es->e[i].name, name) == 0) {
            return &es->e[i];
        }
    }
    return NULL;
}

static void entries_set(struct entries *es, const char *name, struct inode *ino)
{
    struct entry *e = entries_find(es, name);
    if (e == NULL) {
        if (es->n == es->cap) {
            es->cap = es->cap == 0 ? 16 : 2 * es->cap;
            es->e = xrealloc(es->e, es->cap * sizeof *es->e);
        }
        e = &es->e[es->n++];
        snprintf(e->name, sizeof e->name, "%s", name);
    }
    e->ino = ino;
}

static void entries_del(struct entries *es, const char *name)
{
    struct entry *e = entries_find(es, name);
    if (e != NULL) {
        *e = es->e[--es->n];
    }
}

static void entries_copy(struct entries *dst, const struct entries *src)
{
    if (dst->cap < src->n) {
        dst->cap = src->n;
        dst->e = xrealloc(dst->e, dst->cap * sizeof *dst->e);
    }
    if (src->n > 0) {
        memcpy(dst->e, src->e, src->n * sizeof *src->e);
    }
    dst->n = src->n;
}

static void dop_apply(struct entries *es, const struct dop *d)
{
    switch (d->kind) {
        case DOP_CREATE:
            entries_set(es, d->name, d->ino);
            break;
        case DOP_UNLINK:
            entries_del(es, d->name);
            break;
        case DOP_RENAME:
            entries_set(es, d->to, d->ino);
            entries_del(es, d->name);
            break;
    }
}

static void dop_push(struct dir *d,
                     enum dop_kind kind,
                     const char *name,
                     const char *to,
                     struct inode *ino)
{
    struct dop *op;
    if (d->n_ops == d->cap_ops) {
        d->cap_ops = d->cap_ops == 0 ? 16 : 2 * d->cap_ops;
        d->ops = xrealloc(d->ops, d->cap_ops * sizeof *d->ops);
    }
    op = &d->ops[d->n_ops++];
    memset(op, 0, sizeof *op);
    op->kind = kind;
    snprintf(op->name, sizeof op->name, "%s", name);
    if (to != NULL) {
        snprintf(op->to, sizeof op->to, "%s", to);
    }
    op->ino = ino;
}

static struct dir *dir_find(struct fs_fault *f, const char *path)
{
    for (unsigned i = 0; i < f->n_dirs; i++) {
        if (strcmp(f->dirs[i]->path, path) == 0) {
            return f->dirs[i];
        }
    }
    return NULL;
}

/* Splits "dir/name" into its directory and name; NULL if either is too
 * long or the directory is unknown. */
static struct dir *split(struct fs_fault *f,
                         const char *path,
                         char name[FF_NAME])
{
    char dpath[CR_PATH_MAX];
    const char *slash = strrchr(path, '/');
    size_t dlen;
    if (slash == NULL) {
        snprintf(dpath, sizeof dpath, ".");
        slash = path - 1;
    } else {
        dlen = (size_t)(slash - path);
        if (dlen >= sizeof dpath) {
            return NULL;
        }
        memcpy(dpath, path, dlen);
        dpath[dlen] = '\0';
    }
    if (strlen(slash + 1) >= FF_NAME || slash[1] == '\0') {
        return NULL;
    }
    snprintf(name, FF_NAME, "%s", slash + 1);
    return dir_find(f, dpath);
}

static struct inode *lookup(struct fs_fault *f, const char *path)
{
    char name[FF_NAME];
    struct dir *d = split(f, path, name);
    struct entry *e;
    if (d == NULL) {
        return NULL;
    }
    e = entries_find(&d->cur, name);
    return e != NULL ? e->ino : NULL;
}

static bool linked(struct fs_fault *f, const struct inode *ino)
{
    for (unsigned i = 0; i < f->n_dirs; i++) {
        const struct entries *es = &f->dirs[i]->cur;
        for (unsigned j = 0; j < es->n; j++) {
            if (es->e[j].ino == ino) {
                return true;
            }
        }
    }
    return false;
}

static uint64_t used_bytes(struct fs_fault *f)
{
    uint64_t used = 0;
    for (unsigned i = 0; i < f->n_inodes; i++) {
        struct inode *ino = f->inodes[i];
        if (ino->opens > 0 || linked(f, ino)) {
            used += ino->cur.len;
        }
    }
    return used;
}

/* Whether ino may grow to len bytes. */
static bool has_room(struct fs_fault *f, struct inode *ino, uint64_t len)
{
    uint64_t used;
    if (len <= ino->cur.len || f->budget == UINT64_MAX) {
        return true;
    }
    used = used_bytes(f) - ino->cur.len + len;
    if (used > f->budget) {
        f->enospc++;
        return false;
    }
    return true;
}

static struct inode *fd_inode(struct fs_fault *f, int fd, bool write)
{
    struct fd_slot *s;
    if (fd < FF_FD_BASE || fd >= FF_FD_BASE + FF_FDS) {
        return NULL;
    }
    s = &f->fds[fd - FF_FD_BASE];
    if (!s->used || (write && !s->write)) {
        return NULL;
    }
    return s->ino;
}

static int fd_new(struct fs_fault *f, struct inode *ino, bool write)
{
    for (int i = 0; i < FF_FDS; i++) {
        if (!f->fds[i].used) {
            f->fds[i].used = true;
            f->fds[i].ino = ino;
            f->fds[i].write = write;
            ino->opens++;
            return FF_FD_BASE + i;
        }
    }
    return -EMFILE;
}

static void fd_release(struct fs_fault *f, int fd)
{
    struct fd_slot *s = &f->fds[fd - FF_FD_BASE];
    if (s->ino->lock_fd == fd) {
        s->ino->lock_fd = -1;
    }
    s->ino->opens--;
    memset(s, 0, sizeof *s);
}

/* What survives of one file at a crash. */
static void crash_file(struct fs_fault *f, struct inode *ino)
{
    unsigned keep;
    switch (f->torn) {
        case FS_FAULT_TORN_NONE:
            break;
        case FS_FAULT_TORN_PREFIX:
            keep = (unsigned)(next_rand(f) % (ino->n_ch + 1));
            for (unsigned i = 0; i < keep; i++) {
                change_apply(&ino->dur, &ino->ch[i], ino->ch[i].len);
            }
            if (keep < ino->n_ch && ino->ch[keep].is_write &&
                ino->ch[keep].len > 1 && next_rand(f) % 2 == 0) {
                change_apply(&ino->dur, &ino->ch[keep],
                             (size_t)(next_rand(f) % ino->ch[keep].len));
            }
            break;
        case FS_FAULT_TORN_SUBSET:
            for (unsigned i = 0; i < ino->n_ch; i++) {
                const struct change *c = &ino->ch[i];
                switch (next_rand(f) % 4) {
                    case 0:
                    case 1:
                        break;
                    case 2:
                        change_apply(&ino->dur, c, c->len);
                        break;
                    default:
                        change_apply(&ino->dur, c,
                                     c->len > 0
                                         ? (size_t)(next_rand(f) % (c->len + 1))
                                         : 0);
                        break;
                }
            }
            break;
    }
    bytes_copy(&ino->cur, &ino->dur);
    changes_clear(ino);
}

static void crash_locked(struct fs_fault *f)
{
    for (unsigned i = 0; i < f->n_dirs; i++) {
        struct dir *d = f->dirs[i];
        if (f->torn_dirs) {
            unsigned keep = (unsigned)(next_rand(f) % (d->n_ops + 1));
            for (unsigned j = 0; j < keep; j++) {
                dop_apply(&d->dur, &d->ops[j]);
            }
        }
        entries_copy(&d->cur, &d->dur);
        d->n_ops = 0;
    }
    for (unsigned i = 0; i < f->n_inodes; i++) {
        crash_file(f, f->inodes[i]);
        f->inodes[i]->opens = 0;
        f->inodes[i]->lock_fd = -1;
    }
    memset(f->fds, 0, sizeof f->fds);
}

/* Every operation starts here, under the mutex: counts it, crashes if its
 * number came, and fails it if the file system is dead. */
static int enter(struct fs_fault *f, enum fs_fault_op op)
{
    pthread_mutex_lock(&f->mu);
    f->ops++;
    f->counts[op]++;
    if (f->crash_at != 0 && f->ops == f->crash_at) {
        crash_locked(f);
        f->dead = true;
    }
    return f->dead ? -EIO : 0;
}

/* ---------------------------------------------------------------------------
 * The table
 * ------------------------------------------------------------------------- */

static int ff_open(void *data, const char *path, unsigned flags)
{
    struct fs_fault *f = data;
    char name[FF_NAME];
    struct dir *d;
    struct entry *e;
    struct inode *ino;
    int rv = enter(f, FS_OP_OPEN);
    if (rv != 0) {
        goto out;
    }
    d = split(f, path, name);
    if (d == NULL) {
        rv = -ENOENT;
        goto out;
    }
    e = entries_find(&d->cur, name);
    if (e != NULL && (flags & CR_FS_CREATE) && (flags & CR_FS_EXCL)) {
        rv = -EEXIST;
        goto out;
    }
    if (e == NULL && !(flags & CR_FS_CREATE)) {
        rv = -ENOENT;
        goto out;
    }
    if (e == NULL) {
        ino = inode_new(f);
        entries_set(&d->cur, name, ino);
        dop_push(d, DOP_CREATE, name, NULL, ino);
    } else {
        ino = e->ino;
    }
    rv = fd_new(f, ino, (flags & CR_FS_WRITE) != 0);
out:
    pthread_mutex_unlock(&f->mu);
    return rv;
}

static int ff_close(void *data, int fd)
{
    struct fs_fault *f = data;
    int rv = enter(f, FS_OP_CLOSE);
    /* A descriptor is released even by a dead file system. */
    if (fd_inode(f, fd, false) == NULL) {
        rv = -EBADF;
    } else {
        fd_release(f, fd);
    }
    pthread_mutex_unlock(&f->mu);
    return rv;
}

static long ff_pread(void *data, int fd, void *buf, size_t len, uint64_t off)
{
    struct fs_fault *f = data;
    struct inode *ino;
    long rv = enter(f, FS_OP_PREAD);
    if (rv != 0) {
        goto out;
    }
    ino = fd_inode(f, fd, false);
    if (ino == NULL) {
        rv = -EBADF;
        goto out;
    }
    if (off >= ino->cur.len) {
        rv = 0;
        goto out;
    }
    if (len > ino->cur.len - off) {
        len = (size_t)(ino->cur.len - off);
    }
    memcpy(buf, ino->cur.p + off, len);
    rv = (long)len;
out:
    pthread_mutex_unlock(&f->mu);
    return rv;
}

static long ff_pwrite(void *data,
                      int fd,
                      const void *buf,
                      size_t len,
                      uint64_t off)
{
    struct fs_fault *f = data;
    struct inode *ino;
    struct change c;
    long rv = enter(f, FS_OP_PWRITE);
    if (rv != 0) {
        goto out;
    }
    ino = fd_inode(f, fd, true);
    if (ino == NULL) {
        rv = -EBADF;
        goto out;
    }
    if (!has_room(f, ino, off + len)) {
        rv = -ENOSPC;
        goto out;
    }
    bytes_write(&ino->cur, off, buf, len);
    memset(&c, 0, sizeof c);
    c.is_write = true;
    c.off = off;
    c.len = len;
    c.data = xrealloc(NULL, len);
    if (len > 0) {
        memcpy(c.data, buf, len);
    }
    change_push(ino, &c);
    rv = (long)len;
out:
    pthread_mutex_unlock(&f->mu);
    return rv;
}

static int ff_fdatasync(void *data, int fd)
{
    struct fs_fault *f = data;
    struct inode *ino;
    int rv;
    unsigned delay;
    pthread_mutex_lock(&f->mu);
    delay = f->sync_delay;
    pthread_mutex_unlock(&f->mu);
    if (delay > 0) {
        struct timespec ts = {0, (long)delay * 1000L};
        nanosleep(&ts, NULL);
    }
    rv = enter(f, FS_OP_FDATASYNC);
    if (rv != 0) {
        goto out;
    }
    ino = fd_inode(f, fd, false);
    if (ino == NULL) {
        rv = -EBADF;
        goto out;
    }
    if (f->fail_skip > 0) {
        f->fail_skip--;
    } else if (f->fail_syncs > 0) {
        f->fail_syncs--;
        rv = -EIO;
        goto out;
    }
    bytes_copy(&ino->dur, &ino->cur);
    changes_clear(ino);
out:
    pthread_mutex_unlock(&f->mu);
    return rv;
}

static int resize(struct fs_fault *f,
                  enum fs_fault_op op,
                  int fd,
                  uint64_t len,
                  bool extend_only)
{
    struct inode *ino;
    struct change c;
    int rv = enter(f, op);
    if (rv != 0) {
        goto out;
    }
    ino = fd_inode(f, fd, true);
    if (ino == NULL) {
        rv = -EBADF;
        goto out;
    }
    if (!has_room(f, ino, len)) {
        rv = -ENOSPC;
        goto out;
    }
    memset(&c, 0, sizeof c);
    c.extend_only = extend_only;
    c.off = len;
    change_apply(&ino->cur, &c, 0);
    change_push(ino, &c);
out:
    pthread_mutex_unlock(&f->mu);
    return rv;
}

static int ff_allocate(void *data, int fd, uint64_t len)
{
    return resize(data, FS_OP_ALLOCATE, fd, len, true);
}

static int ff_truncate(void *data, int fd, uint64_t len)
{
    return resize(data, FS_OP_TRUNCATE, fd, len, false);
}

static int ff_size(void *data, int fd, uint64_t *len)
{
    struct fs_fault *f = data;
    struct inode *ino;
    int rv = enter(f, FS_OP_SIZE);
    if (rv == 0) {
        ino = fd_inode(f, fd, false);
        if (ino == NULL) {
            rv = -EBADF;
        } else {
            *len = ino->cur.len;
        }
    }
    pthread_mutex_unlock(&f->mu);
    return rv;
}

static int ff_rename(void *data, const char *from, const char *to)
{
    struct fs_fault *f = data;
    char name[FF_NAME], name2[FF_NAME];
    struct dir *d, *d2;
    struct entry *e;
    struct inode *ino;
    int rv = enter(f, FS_OP_RENAME);
    if (rv != 0) {
        goto out;
    }
    d = split(f, from, name);
    d2 = split(f, to, name2);
    if (d == NULL || d2 == NULL) {
        rv = -ENOENT;
        goto out;
    }
    if (d != d2) {
        rv = -EXDEV;
        goto out;
    }
    e = entries_find(&d->cur, name);
    if (e == NULL) {
        rv = -ENOENT;
        goto out;
    }
    ino = e->ino;
    if (strcmp(name, name2) != 0) {
        entries_set(&d->cur, name2, ino);
        entries_del(&d->cur, name);
        dop_push(d, DOP_RENAME, name, name2, ino);
    }
out:
    pthread_mutex_unlock(&f->mu);
    return rv;
}

static int ff_unlink(void *data, const char *path)
{
    struct fs_fault *f = data;
    char name[FF_NAME];
    struct dir *d;
    int rv = enter(f, FS_OP_UNLINK);
    if (rv != 0) {
        goto out;
    }
    d = split(f, path, name);
    if (d == NULL || entries_find(&d->cur, name) == NULL) {
        rv = -ENOENT;
        goto out;
    }
    entries_del(&d->cur, name);
    dop_push(d, DOP_UNLINK, name, NULL, NULL);
out:
    pthread_mutex_unlock(&f->mu);
    return rv;
}

static void dir_add(struct fs_fault *f, const char *path)
{
    struct dir *d = xrealloc(NULL, sizeof *d);
    memset(d, 0, sizeof *d);
    snprintf(d->path, sizeof d->path, "%s", path);
    if (f->n_dirs == f->cap_dirs) {
        f->cap_dirs = f->cap_dirs == 0 ? 4 : 2 * f->cap_dirs;
        f->dirs = xrealloc(f->dirs, f->cap_dirs * sizeof *f->dirs);
    }
    f->dirs[f->n_dirs++] = d;
}

static int ff_mkdir(void *data, const char *path)
{
    struct fs_fault *f = data;
    int rv = enter(f, FS_OP_MKDIR);
    if (rv == 0 && dir_find(f, path) == NULL) {
        if (strlen(path) >= CR_PATH_MAX) {
            rv = -ENAMETOOLONG;
        } else {
            dir_add(f, path);
        }
    }
    pthread_mutex_unlock(&f->mu);
    return rv;
}

static int ff_sync_dir(void *data, const char *path)
{
    struct fs_fault *f = data;
    struct dir *d;
    int rv = enter(f, FS_OP_SYNC_DIR);
    if (rv == 0) {
        d = dir_find(f, path);
        if (d == NULL) {
            rv = -ENOENT;
        } else {
            entries_copy(&d->dur, &d->cur);
            d->n_ops = 0;
        }
    }
    pthread_mutex_unlock(&f->mu);
    return rv;
}

static int ff_list(void *data,
                   const char *path,
                   void (*fn)(void *arg, const char *name),
                   void *arg)
{
    struct fs_fault *f = data;
    struct dir *d;
    char(*names)[FF_NAME] = NULL;
    unsigned n = 0;
    int rv = enter(f, FS_OP_LIST);
    if (rv == 0) {
        d = dir_find(f, path);
        if (d == NULL) {
            rv = -ENOENT;
        } else {
            n = d->cur.n;
            names = xrealloc(NULL, (n + 1) * sizeof *names);
            for (unsigned i = 0; i < n; i++) {
                memcpy(names[i], d->cur.e[i].name, FF_NAME);
            }
        }
    }
    pthread_mutex_unlock(&f->mu);
    /* The callback runs without the mutex, so that it may use the file
     * system. */
    for (unsigned i = 0; i < n; i++) {
        fn(arg, names[i]);
    }
    free(names);
    return rv;
}

static int ff_lock(void *data, const char *path)
{
    struct fs_fault *f = data;
    char name[FF_NAME];
    struct dir *d;
    struct entry *e;
    struct inode *ino;
    int rv = enter(f, FS_OP_LOCK);
    if (rv != 0) {
        goto out;
    }
    d = split(f, path, name);
    if (d == NULL) {
        rv = -ENOENT;
        goto out;
    }
    e = entries_find(&d->cur, name);
    if (e == NULL) {
        ino = inode_new(f);
        entries_set(&d->cur, name, ino);
        dop_push(d, DOP_CREATE, name, NULL, ino);
    } else {
        ino = e->ino;
    }
    if (ino->lock_fd >= 0) {
        rv = -EWOULDBLOCK;
        goto out;
    }
    rv = fd_new(f, ino, true);
    if (rv >= 0) {
        ino->lock_fd = rv;
    }
out:
    pthread_mutex_unlock(&f->mu);
    return rv;
}

/* ---------------------------------------------------------------------------
 * Control
 * ------------------------------------------------------------------------- */

struct fs_fault *fs_fault_new(void)
{
    struct fs_fault *f = xrealloc(NULL, sizeof *f);
    memset(f, 0, sizeof *f);
    pthread_mutex_init(&f->mu, NULL);
    f->budget = UINT64_MAX;
    f->fs.data = f;
    f->fs.open = ff_open;
    f->fs.close = ff_close;
    f->fs.pread = ff_pread;
    f->fs.pwrite = ff_pwrite;
    f->fs.fdatasync = ff_fdatasync;
    f->fs.allocate = ff_allocate;
    f->fs.truncate = ff_truncate;
    f->fs.size = ff_size;
    f->fs.rename = ff_rename;
    f->fs.unlink = ff_unlink;
    f->fs.mkdir = ff_mkdir;
    f->fs.sync_dir = ff_sync_dir;
    f->fs.list = ff_list;
    f->fs.lock = ff_lock;
    dir_add(f, ".");
    return f;
}

void fs_fault_free(struct fs_fault *f)
{
    if (f == NULL) {
        return;
    }
    for (unsigned i = 0; i < f->n_inodes; i++) {
        struct inode *ino = f->inodes[i];
        changes_clear(ino);
        free(ino->ch);
        free(ino->cur.p);
        free(ino->dur.p);
        free(ino);
    }
    for (unsigned i = 0; i < f->n_dirs; i++) {
        free(f->dirs[i]->cur.e);
        free(f->dirs[i]->dur.e);
        free(f->dirs[i]->ops);
        free(f->dirs[i]);
    }
    free(f->inodes);
    free(f->dirs);
    pthread_mutex_destroy(&f->mu);
    free(f);
}

const struct cr_fs *fs_fault_fs(struct fs_fault *f)
{
    return &f->fs;
}

void fs_fault_crash(struct fs_fault *f)
{
    pthread_mutex_lock(&f->mu);
    crash_locked(f);
    pthread_mutex_unlock(&f->mu);
}

void fs_fault_crash_at(struct fs_fault *f, uint64_t op)
{
    pthread_mutex_lock(&f->mu);
    f->crash_at = op;
    pthread_mutex_unlock(&f->mu);
}

bool fs_fault_crashed(struct fs_fault *f)
{
    bool dead;
    pthread_mutex_lock(&f->mu);
    dead = f->dead;
    pthread_mutex_unlock(&f->mu);
    return dead;
}

void fs_fault_revive(struct fs_fault *f)
{
    pthread_mutex_lock(&f->mu);
    f->dead = false;
    f->crash_at = 0;
    pthread_mutex_unlock(&f->mu);
}

void fs_fault_set_torn(struct fs_fault *f,
                       enum fs_fault_torn mode,
                       bool torn_dirs,
                       uint64_t seed)
{
    pthread_mutex_lock(&f->mu);
    f->torn = mode;
    f->torn_dirs = torn_dirs;
    f->rng = seed;
    pthread_mutex_unlock(&f->mu);
}

void fs_fault_set_budget(struct fs_fault *f, uint64_t bytes)
{
    pthread_mutex_lock(&f->mu);
    f->budget = bytes;
    pthread_mutex_unlock(&f->mu);
}

uint64_t fs_fault_used(struct fs_fault *f)
{
    uint64_t used;
    pthread_mutex_lock(&f->mu);
    used = used_bytes(f);
    pthread_mutex_unlock(&f->mu);
    return used;
}

void fs_fault_fail_syncs(struct fs_fault *f, unsigned n)
{
    pthread_mutex_lock(&f->mu);
    f->fail_skip = 0;
    f->fail_syncs = n;
    pthread_mutex_unlock(&f->mu);
}

void fs_fault_fail_syncs_after(struct fs_fault *f, unsigned skip, unsigned n)
{
    pthread_mutex_lock(&f->mu);
    f->fail_skip = skip;
    f->fail_syncs = n;
    pthread_mutex_unlock(&f->mu);
}

void fs_fault_set_sync_delay(struct fs_fault *f, unsigned usec)
{
    pthread_mutex_lock(&f->mu);
    f->sync_delay = usec;
    pthread_mutex_unlock(&f->mu);
}

uint64_t fs_fault_ops(struct fs_fault *f)
{
    uint64_t n;
    pthread_mutex_lock(&f->mu);
    n = f->ops;
    pthread_mutex_unlock(&f->mu);
    return n;
}

uint64_t fs_fault_count(struct fs_fault *f, enum fs_fault_op op)
{
    uint64_t n;
    pthread_mutex_lock(&f->mu);
    n = f->counts[op];
    pthread_mutex_unlock(&f->mu);
    return n;
}

uint64_t fs_fault_enospc(struct fs_fault *f)
{
    uint64_t n;
    pthread_mutex_lock(&f->mu);
    n = f->enospc;
    pthread_mutex_unlock(&f->mu);
    return n;
}

unsigned fs_fault_unsynced(struct fs_fault *f)
{
    unsigned n = 0;
    pthread_mutex_lock(&f->mu);
    for (unsigned i = 0; i < f->n_inodes; i++) {
        n += f->inodes[i]->n_ch;
    }
    for (unsigned i = 0; i < f->n_dirs; i++) {
        n += f->dirs[i]->n_ops;
    }
    pthread_mutex_unlock(&f->mu);
    return n;
}

/* ---------------------------------------------------------------------------
 * Direct access
 * ------------------------------------------------------------------------- */

/* Makes a file's current bytes durable, as the direct edits do. */
static void settle(struct inode *ino)
{
    bytes_copy(&ino->dur, &ino->cur);
    changes_clear(ino);
}

bool fs_fault_exists(struct fs_fault *f, const char *path)
{
    bool found;
    pthread_mutex_lock(&f->mu);
    found = lookup(f, path) != NULL;
    pthread_mutex_unlock(&f->mu);
    return found;
}

int fs_fault_read(struct fs_fault *f,
                  const char *path,
                  uint8_t **buf,
                  size_t *len)
{
    struct inode *ino;
    int rv = 0;
    pthread_mutex_lock(&f->mu);
    ino = lookup(f, path);
    if (ino == NULL) {
        rv = -ENOENT;
    } else {
        *buf = xrealloc(NULL, ino->cur.len);
        if (ino->cur.len > 0) {
            memcpy(*buf, ino->cur.p, ino->cur.len);
        }
        *len = ino->cur.len;
    }
    pthread_mutex_unlock(&f->mu);
    return rv;
}

int fs_fault_write(struct fs_fault *f,
                   const char *path,
                   const void *buf,
                   size_t len)
{
    char name[FF_NAME];
    struct dir *d;
    struct entry *e;
    struct inode *ino;
    int rv = 0;
    pthread_mutex_lock(&f->mu);
    d = split(f, path, name);
    if (d == NULL) {
        rv = -ENOENT;
        goto out;
    }
    e = entries_find(&d->cur, name);
    if (e == NULL) {
        ino = inode_new(f);
        entries_set(&d->cur, name, ino);
        entries_set(&d->dur, name, ino);
    } else {
        ino = e->ino;
        entries_set(&d->dur, name, ino);
    }
    ino->cur.len = 0;
    bytes_write(&ino->cur, 0, buf, len);
    settle(ino);
out:
    pthread_mutex_unlock(&f->mu);
    return rv;
}

int fs_fault_flip(struct fs_fault *f,
                  const char *path,
                  uint64_t off,
                  uint8_t mask)
{
    struct inode *ino;
    int rv = 0;
    pthread_mutex_lock(&f->mu);
    ino = lookup(f, path);
    if (ino == NULL || off >= ino->cur.len) {
        rv = -ENOENT;
    } else {
        ino->cur.p[off] ^= mask;
        settle(ino);
    }
    pthread_mutex_unlock(&f->mu);
    return rv;
}

int fs_fault_truncate(struct fs_fault *f, const char *path, uint64_t len)
{
    struct inode *ino;
    int rv = 0;
    pthread_mutex_lock(&f->mu);
    ino = lookup(f, path);
    if (ino == NULL) {
        rv = -ENOENT;
    } else {
        bytes_resize(&ino->cur, (size_t)len);
        settle(ino);
    }
    pthread_mutex_unlock(&f->mu);
    return rv;
}

int fs_fault_remove(struct fs_fault *f, const char *path)
{
    char name[FF_NAME];
    struct dir *d;
    int rv = 0;
    pthread_mutex_lock(&f->mu);
    d = split(f, path, name);
    if (d == NULL || entries_find(&d->cur, name) == NULL) {
        rv = -ENOENT;
    } else {
        entries_del(&d->cur, name);
        entries_copy(&d->dur, &d->cur);
        d->n_ops = 0;
    }
    pthread_mutex_unlock(&f->mu);
    return rv;
}

int fs_fault_file_size(struct fs_fault *f, const char *path, uint64_t *len)
{
    struct inode *ino;
    int rv = 0;
    pthread_mutex_lock(&f->mu);
    ino = lookup(f, path);
    if (ino == NULL) {
        rv = -ENOENT;
    } else {
        *len = ino->cur.len;
    }
    pthread_mutex_unlock(&f->mu);
    return rv;
}

void fs_fault_names(struct fs_fault *f,
                    const char *dir,
                    void (*fn)(void *arg, const char *name),
                    void *arg)
{
    struct dir *d;
    char(*names)[FF_NAME] = NULL;
    unsigned n = 0;
    pthread_mutex_lock(&f->mu);
    d = dir_find(f, dir);
    if (d != NULL) {
        n = d->cur.n;
        names = xrealloc(NULL, (n + 1) * sizeof *names);
        for (unsigned i = 0; i < n; i++) {
            memcpy(names[i], d->cur.e[i].name, FF_NAME);
        }
    }
    pthread_mutex_unlock(&f->mu);
    for (unsigned i = 0; i < n; i++) {
        fn(arg, names[i]);
    }
    free(names);
}

unsigned fs_fault_count_names(struct fs_fault *f,
                              const char *dir,
                              const char *prefix)
{
    struct dir *d;
    unsigned n = 0;
    pthread_mutex_lock(&f->mu);
    d = dir_find(f, dir);
    for (unsigned i = 0; d != NULL && i < d->cur.n; i++) {
        if (strncmp(d->cur.e[i].name, prefix, strlen(prefix)) == 0) {
            n++;
        }
    }
    pthread_mutex_unlock(&f->mu);
    return n;
}
