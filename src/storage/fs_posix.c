/* The real file system behind struct cr_fs. */
#define _GNU_SOURCE

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "storage_impl.h"

static int px_open(void *data, const char *path, unsigned flags)
{
    int f = O_CLOEXEC;
    int fd;
    (void)data;
    f |= (flags & CR_FS_WRITE) ? O_RDWR : O_RDONLY;
    if (flags & CR_FS_CREATE) {
        f |= O_CREAT;
    }
    if (flags & CR_FS_EXCL) {
        f |= O_EXCL;
    }
    fd = open(path, f, 0644);
    return fd < 0 ? -errno : fd;
}

static int px_close(void *data, int fd)
{
    (void)data;
    return close(fd) < 0 ? -errno : 0;
}

static long px_pread(void *data, int fd, void *buf, size_t len, uint64_t off)
{
    ssize_t n;
    (void)data;
    n = pread(fd, buf, len, (off_t)off);
    return n < 0 ? -errno : (long)n;
}

static long px_pwrite(void *data,
                      int fd,
                      const void *buf,
                      size_t len,
                      uint64_t off)
{
    ssize_t n;
    (void)data;
    n = pwrite(fd, buf, len, (off_t)off);
    return n < 0 ? -errno : (long)n;
}

static int px_fdatasync(void *data, int fd)
{
    (void)data;
    return fdatasync(fd) < 0 ? -errno : 0;
}

static int px_allocate(void *data, int fd, uint64_t len)
{
    int rv;
    (void)data;
    /* posix_fallocate returns the error instead of setting errno. */
    rv = posix_fallocate(fd, 0, (off_t)len);
    return -rv;
}

static int px_truncate(void *data, int fd, uint64_t len)
{
    (void)data;
    return ftruncate(fd, (off_t)len) < 0 ? -errno : 0;
}

static int px_size(void *data, int fd, uint64_t *len)
{
    struct stat st;
    (void)data;
    if (fstat(fd, &st) < 0) {
        return -errno;
    }
    *len = (uint64_t)st.st_size;
    return 0;
}

static int px_rename(void *data, const char *from, const char *to)
{
    (void)data;
    return rename(from, to) < 0 ? -errno : 0;
}

static int px_unlink(void *data, const char *path)
{
    (void)data;
    return unlink(path) < 0 ? -errno : 0;
}

static int px_mkdir(void *data, const char *path)
{
    (void)data;
    if (mkdir(path, 0755) < 0 && errno != EEXIST) {
        return -errno;
    }
    return 0;
}

static int px_sync_dir(void *data, const char *path)
{
    int fd;
    int rv = 0;
    (void)data;
    fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        return -errno;
    }
    if (fsync(fd) < 0) {
        rv = -errno;
    }
    close(fd);
    return rv;
}

static int px_list(void *data,
                   const char *path,
                   void (*fn)(void *arg, const char *name),
                   void *arg)
{
    DIR *d;
    struct dirent *e;
    (void)data;
    d = opendir(path);
    if (d == NULL) {
        return -errno;
    }
    errno = 0;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' &&
            (e->d_name[1] == '\0' ||
             (e->d_name[1] == '.' && e->d_name[2] == '\0'))) {
            continue;
        }
        fn(arg, e->d_name);
    }
    closedir(d);
    return 0;
}

static int px_lock(void *data, const char *path)
{
    int fd;
    (void)data;
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        return -errno;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

const struct cr_fs cr_fs_posix = {
    .data = NULL,
    .open = px_open,
    .close = px_close,
    .pread = px_pread,
    .pwrite = px_pwrite,
    .fdatasync = px_fdatasync,
    .allocate = px_allocate,
    .truncate = px_truncate,
    .size = px_size,
    .rename = px_rename,
    .unlink = px_unlink,
    .mkdir = px_mkdir,
    .sync_dir = px_sync_dir,
    .list = px_list,
    .lock = px_lock,
};
