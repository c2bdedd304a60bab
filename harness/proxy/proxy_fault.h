/* Fault rules and the per-call decision (pure: no gRPC, no libuv, no
 * clock).
 *
 * A link is a directed pair of node ids, FROM-TO: the calls node FROM makes
 * to node TO. A selector names a set of links ("1-2", "1-*", "*-2", "*").
 * A fault is a rule: a selector, an optional method, a kind and a
 * probability. When a call arrives on a link, cp_decide() goes through the
 * rules in the order they were added (their ids grow); every rule that
 * covers the link and the method draws exactly once from the link's
 * generator (and once more for jitter if it hits and has any), so the same
 * seed and the same sequence of calls on a link give the same decisions,
 * whatever happens on other links. */
#ifndef CRAFT_PROXY_FAULT_H
#define CRAFT_PROXY_FAULT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proxy_error.h"

/* A node id, 1 to UINT32_MAX; 0 stands for "any" in selectors. */
typedef uint32_t cp_node;

#define CP_METHOD_MAX 256        /* bytes of a method name, NUL included */
#define CP_LINK_NAME_MAX 24      /* "4294967295-4294967295" and NUL */
#define CP_DELAY_MAX_MS 3600000u /* delays and jitters: at most an hour */

/* ------------------------------------------------------------------------
 * Links and selectors */

struct cp_selector
{
    cp_node from; /* 0: any */
    cp_node to;   /* 0: any */
};

/* Parses a link name "FROM-TO" (both ids, different). */
int cp_link_parse(const char *s, cp_node *from, cp_node *to, char *errmsg);

/* Formats "FROM-TO" into buf (CP_LINK_NAME_MAX bytes). */
void cp_link_format(cp_node from, cp_node to, char *buf);

/* Parses a selector: "FROM-TO", "FROM-*", "*-TO", "*" or "*-*". */
int cp_selector_parse(const char *s, struct cp_selector *out, char *errmsg);

/* Formats a selector as cp_selector_parse reads it (CP_LINK_NAME_MAX). */
void cp_selector_format(const struct cp_selector *s, char *buf);

/* Whether the selector covers the link from-to. */
bool cp_selector_matches(const struct cp_selector *s, cp_node from, cp_node to);

/* Whether every link `inner` covers is covered by `outer`. */
bool cp_selector_covers(const struct cp_selector *outer,
                        const struct cp_selector *inner);

/* Whether the selector names one link (no wildcard). */
bool cp_selector_is_link(const struct cp_selector *s);

/* ------------------------------------------------------------------------
 * The generator: xoshiro256**, one per link. */

struct cp_rng
{
    uint64_t s[4];
};

/* Seeds the generator from the proxy's seed and the link's name, so that
 * links do not perturb each other. */
void cp_rng_seed(struct cp_rng *r, uint64_t seed, const char *name);

uint64_t cp_rng_next(struct cp_rng *r);

/* Uniform in [0, 1), 53 bits. */
double cp_rng_uniform(struct cp_rng *r);

/* Uniform in [0, n]. */
uint32_t cp_rng_upto(struct cp_rng *r, uint32_t n);

/* ------------------------------------------------------------------------
 * Faults */

/* The numbers are those of proxy.proto's FaultKind. */
enum cp_fault_kind {
    CP_DROP_REQUEST = 1,
    CP_DROP_RESPONSE = 2,
    CP_DELAY_REQUEST = 3,
    CP_DELAY_RESPONSE = 4,
    CP_DUPLICATE = 5,
    CP_HOLD = 6,
    CP_BLACKHOLE = 7,
    CP_RESET = 8,
};
#define CP_FAULT_KIND_MAX CP_RESET

/* "drop-request", "drop-response", "delay-request", "delay-response",
 * "duplicate", "hold", "blackhole", "reset"; NULL for anything else. */
const char *cp_fault_kind_name(int kind);

/* The reverse of cp_fault_kind_name. */
int cp_fault_kind_parse(const char *s, enum cp_fault_kind *out, char *errmsg);

struct cp_fault
{
    uint64_t id; /* given by cp_faults_add */
    struct cp_selector links;
    char method[CP_METHOD_MAX]; /* "" for every method */
    enum cp_fault_kind kind;
    double probability; /* [0, 1] */
    uint32_t delay_ms;  /* DELAY_*, DUPLICATE */
    uint32_t jitter_ms; /* DELAY_*, DUPLICATE: uniform extra */
    bool blackhole;     /* DROP_*: the caller's deadline */
    bool partition;     /* made by a partition */
};

/* Whether m is a full method name: "/package.Service/Method", printable
 * ASCII without blanks, shorter than CP_METHOD_MAX. */
bool cp_method_valid(const char *m);

/* Checks what a caller can get wrong: the kind, the probability (NaN or
 * outside [0, 1]), delays above CP_DELAY_MAX_MS, a method that is not
 * "/package.Service/Method"-shaped, options that the kind ignores
 * (delays on a drop, blackhole on a delay). */
int cp_fault_check(const struct cp_fault *f, char *errmsg);

/* Checks a delay given as a signed number (the control API's int64):
 * `what` names it in the message ("delay_ms"). */
int cp_delay_check(int64_t v, const char *what, uint32_t *out, char *errmsg);

/* "drop-request 1-2 p=0.5 method=/raft.RaftService/AppendEntries
 * blackhole": the fault as a person reads it. */
void cp_fault_describe(const struct cp_fault *f, char *buf, size_t len);

/* The rules in force, by growing id. */
struct cp_faults
{
    struct cp_fault *v;
    size_t n, cap;
    uint64_t next_id; /* ids start at 1 and are never reused */
};

void cp_faults_init(struct cp_faults *fs);
void cp_faults_close(struct cp_faults *fs);

/* Appends a copy of *f with a new id (returned in *id and stored). */
int cp_faults_add(struct cp_faults *fs, const struct cp_fault *f, uint64_t *id);

/* Removes the rule with this id; false if there is none. */
bool cp_faults_remove(struct cp_faults *fs, uint64_t id);

/* The rule with this id, or NULL. */
const struct cp_fault *cp_faults_find(const struct cp_faults *fs, uint64_t id);

/* Whether some HOLD rule covers this link and method (ignoring its
 * probability: a held call stays held while such a rule exists). */
bool cp_faults_hold(const struct cp_faults *fs,
                    cp_node from,
                    cp_node to,
                    const char *method,
                    size_t method_len);

/* ------------------------------------------------------------------------
 * The decision for one call */

struct cp_decision
{
    /* The id of the first rule of each kind that hit, or 0. */
    uint64_t reset, blackhole, drop_request, drop_response, hold, duplicate;
    uint64_t delay_request, delay_response;
    bool drop_request_blackhole;  /* of the first DROP_REQUEST that hit */
    bool drop_response_blackhole; /* of the first DROP_RESPONSE that hit */
    /* Sums over every rule that hit, capped at CP_DELAY_MAX_MS. */
    uint32_t request_delay_ms, response_delay_ms, duplicate_delay_ms;
};

/* Decides the fate of one call on link from-to for `method` (method_len
 * bytes, not NUL-terminated). Draws from *rng as the header comment says. */
void cp_decide(const struct cp_faults *fs,
               cp_node from,
               cp_node to,
               const char *method,
               size_t method_len,
               struct cp_rng *rng,
               struct cp_decision *out);

#endif /* CRAFT_PROXY_FAULT_H */
