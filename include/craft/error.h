/* craft error codes.
 *
 * Every craft function that can fail returns an int: 0 on success, or one of
 * the codes below. Errors from libraries below craft (libuv's negative errno,
 * gRPC status codes) are translated at the module edge and never cross it. */
#ifndef CRAFT_ERROR_H
#define CRAFT_ERROR_H

/* X(name, code, message). Codes are stable: they appear in logs and tests. */
#define CR_ERROR_MAP(X)                                                     \
    X(CR_ENOMEM, 1, "out of memory")                                        \
    X(CR_EINVAL, 2, "invalid argument")                                     \
    X(CR_ENOTLEADER, 3, "this node is not the leader")                      \
    X(CR_ENOLEADER, 4, "no leader is known")                                \
    X(CR_ETRANSFER, 5, "a leadership transfer is in progress")              \
    X(CR_ECHANGE, 6, "a configuration change is already in progress")       \
    X(CR_ENOTREADY, 7, "the leader has not committed an entry of its term") \
    X(CR_ENOTFOUND, 8, "no such server in the configuration")               \
    X(CR_EEXIST, 9, "the server is already in the configuration")           \
    X(CR_ETOOBIG, 10, "too large")                                          \
    X(CR_ECLUSTER, 11, "message from another cluster")                      \
    X(CR_ECORRUPT, 12, "malformed or inconsistent data")                    \
    X(CR_ESTALE, 13, "stale request")                                       \
    X(CR_EREMOVED, 14, "this server is not a voter of the configuration")   \
    X(CR_EFULL, 15, "too many servers")                                     \
    X(CR_EIO, 16, "input/output error")                                     \
    X(CR_EBUSY, 17, "in use by another process")                            \
    X(CR_ENOSPC, 18, "no space left on the device")

enum cr_error {
    CR_OK = 0,
#define CR__ERROR_ENUM(name, code, msg) name = (code),
    CR_ERROR_MAP(CR__ERROR_ENUM)
#undef CR__ERROR_ENUM
};

/* A static, human-readable description of an error code; never NULL. */
const char *cr_strerror(int rv);

/* The symbolic name of an error code ("CR_ENOMEM"); never NULL. */
const char *cr_errname(int rv);

#endif /* CRAFT_ERROR_H */
