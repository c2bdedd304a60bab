/* craft-proxy error codes.
 *
 * Every cp_ function that can fail returns an int: 0 on success or one of
 * the codes below, and, where it takes one, fills `errmsg`
 * (CP_ERRMSG_SIZE bytes) with a sentence a person can act on. gRPC status
 * codes and libuv errors are translated where they are met. */
#ifndef CRAFT_PROXY_ERROR_H
#define CRAFT_PROXY_ERROR_H

#define CP_ERRMSG_SIZE 256

/* X(name, code, message). */
#define CP_ERROR_MAP(X)                            \
    X(CP_ENOMEM, 1, "out of memory")               \
    X(CP_EINVAL, 2, "invalid argument")            \
    X(CP_EBIND, 3, "cannot listen on the address") \
    X(CP_EEXIST, 4, "already exists")              \
    X(CP_ENOTFOUND, 5, "not found")                \
    X(CP_EIO, 6, "input/output error")             \
    X(CP_EUNAVAILABLE, 7, "the proxy cannot be reached")

enum cp_error {
    CP_OK = 0,
#define CP__ERROR_ENUM(name, code, msg) name = (code),
    CP_ERROR_MAP(CP__ERROR_ENUM)
#undef CP__ERROR_ENUM
};

/* A static description of an error code; never NULL. */
const char *cp_strerror(int rv);

#endif /* CRAFT_PROXY_ERROR_H */
