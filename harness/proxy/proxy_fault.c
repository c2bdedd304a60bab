/* See proxy_fault.h. */
#include "proxy_fault.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------
 * Links and selectors */

/* Parses a node id of exactly `len` bytes at s. */
static bool parse_node(const char *s, size_t len, cp_node *out)
{
    uint64_t v = 0;
    if (len == 0 || len > 10) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return false;
        }
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (v == 0 || v > UINT32_MAX) {
        return false;
    }
    *out = (cp_node)v;
    return true;
}

/* Splits "A-B" at its only '-' and parses each side: a node id, or "*"
 * when wildcards are allowed (stored as 0). */
static int parse_pair(const char *s,
                      bool wildcards,
                      cp_node *from,
                      cp_node *to,
                      char *errmsg)
{
    const char *dash = strchr(s, '-');
    const char *what = wildcards ? "a link selector (FROM-TO, FROM-*, *-TO "
                                   "or *; node ids 1 to 4294967295)"
                                 : "a link name (FROM-TO, node ids 1 to "
                                   "4294967295)";
    size_t la, lb;
    if (wildcards && strcmp(s, "*") == 0) {
        *from = *to = 0;
        return 0;
    }
    if (dash == NULL || strchr(dash + 1, '-') != NULL) {
        snprintf(errmsg, CP_ERRMSG_SIZE, "\"%.40s\" is not %s", s, what);
        return CP_EINVAL;
    }
    la = (size_t)(dash - s);
    lb = strlen(dash + 1);
    if (wildcards && la == 1 && s[0] == '*') {
        *from = 0;
    } else if (!parse_node(s, la, from)) {
        snprintf(errmsg, CP_ERRMSG_SIZE, "\"%.40s\" is not %s", s, what);
        return CP_EINVAL;
    }
    if (wildcards && lb == 1 && dash[1] == '*') {
        *to = 0;
    } else if (!parse_node(dash + 1, lb, to)) {
        snprintf(errmsg, CP_ERRMSG_SIZE, "\"%.40s\" is not %s", s, what);
        return CP_EINVAL;
    }
    if (*from != 0 && *from == *to) {
        snprintf(errmsg, CP_ERRMSG_SIZE,
                 "\"%.40s\": a link joins two different nodes", s);
        return CP_EINVAL;
    }
    return 0;
}

int cp_link_parse(const char *s, cp_node *from, cp_node *to, char *errmsg)
{
    return parse_pair(s, false, from, to, errmsg);
}

void cp_link_format(cp_node from, cp_node to, char *buf)
{
    snprintf(buf, CP_LINK_NAME_MAX, "%" PRIu32 "-%" PRIu32, from, to);
}

int cp_selector_parse(const char *s, struct cp_selector *out, char *errmsg)
{
    return parse_pair(s, true, &out->from, &out->to, errmsg);
}

void cp_selector_format(const struct cp_selector *s, char *buf)
{
    char a[12], b[12];
    if (s->from == 0 && s->to == 0) {
        snprintf(buf, CP_LINK_NAME_MAX, "*");
        return;
    }
    snprintf(a, sizeof a, "%" PRIu32, s->from);
    snprintf(b, sizeof b, "%" PRIu32, s->to);
    snprintf(buf, CP_LINK_NAME_MAX, "%s-%s", s->from == 0 ? "*" : a,
             s->to == 0 ? "*" : b);
}

bool cp_selector_matches(const struct cp_selector *s, cp_node from, cp_node to)
{
    return (s->from == 0 || s->from == from) && (s->to == 0 || s->to == to);
}

bool cp_selector_covers(const struct cp_selector *outer,
                        const struct cp_selector *inner)
{
    return (outer->from == 0 || outer->from == inner->from) &&
           (outer->to == 0 || outer->to == inner->to);
}

bool cp_selector_is_link(const struct cp_selector *s)
{
    return s->from != 0 && s->to != 0;
}

/* ------------------------------------------------------------------------
 * The generator */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

void cp_rng_seed(struct cp_rng *r, uint64_t seed, const char *name)
{
    /* FNV-1a of the name, mixed into the seed: a different stream per
     * link, the same one for the same seed and name. */
    uint64_t h = 0xcbf29ce484222325u;
    uint64_t x;
    for (const char *p = name; *p != '\0'; p++) {
        h ^= (unsigned char)*p;
        h *= 0x100000001b3u;
    }
    x = seed ^ h;
    for (int i = 0; i < 4; i++) {
        r->s[i] = splitmix64(&x);
    }
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

uint64_t cp_rng_next(struct cp_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double cp_rng_uniform(struct cp_rng *r)
{
    return (double)(cp_rng_next(r) >> 11) * 0x1.0p-53;
}

uint32_t cp_rng_upto(struct cp_rng *r, uint32_t n)
{
    /* The modulo bias is below 2^-32 for the ranges used (<= an hour in
     * ms), far under what any test can see. */
    return (uint32_t)(cp_rng_next(r) % ((uint64_t)n + 1));
}

/* ------------------------------------------------------------------------
 * Faults */

static const char *const kind_names[] = {
    [CP_DROP_REQUEST] = "drop-request",
    [CP_DROP_RESPONSE] = "drop-response",
    [CP_DELAY_REQUEST] = "delay-request",
    [CP_DELAY_RESPONSE] = "delay-response",
    [CP_DUPLICATE] = "duplicate",
    [CP_HOLD] = "hold",
    [CP_BLACKHOLE] = "blackhole",
    [CP_RESET] = "reset",
};

const char *cp_fault_kind_name(int kind)
{
    if (kind < CP_DROP_REQUEST || kind > CP_FAULT_KIND_MAX) {
        return NULL;
    }
    return kind_names[kind];
}

int cp_fault_kind_parse(const char *s, enum cp_fault_kind *out, char *errmsg)
{
    for (int k = CP_DROP_REQUEST; k <= CP_FAULT_KIND_MAX; k++) {
        if (strcmp(s, kind_names[k]) == 0) {
            *out = (enum cp_fault_kind)k;
            return 0;
        }
    }
    snprintf(errmsg, CP_ERRMSG_SIZE,
             "unknown fault kind \"%.40s\" (drop-request, drop-response, "
             "delay-request, delay-response, duplicate, hold, blackhole, "
             "reset)",
             s);
    return CP_EINVAL;
}

static bool has_delay(enum cp_fault_kind k)
{
    return k == CP_DELAY_REQUEST || k == CP_DELAY_RESPONSE || k == CP_DUPLICATE;
}

bool cp_method_valid(const char *m)
{
    const char *slash;
    if (m[0] != '/' || strlen(m) >= CP_METHOD_MAX) {
        return false;
    }
    slash = strchr(m + 1, '/');
    if (slash == NULL || slash == m + 1 || slash[1] == '\0' ||
        strchr(slash + 1, '/') != NULL) {
        return false;
    }
    for (const char *p = m; *p != '\0'; p++) {
        if (*p <= ' ' || *p > '~') {
            return false;
        }
    }
    return true;
}

int cp_fault_check(const struct cp_fault *f, char *errmsg)
{
    const char *name = cp_fault_kind_name((int)f->kind);
    if (name == NULL) {
        snprintf(errmsg, CP_ERRMSG_SIZE,
                 "the fault kind is missing or unknown (%d)", (int)f->kind);
        return CP_EINVAL;
    }
    if (!(f->probability >= 0.0 && f->probability <= 1.0)) {
        snprintf(errmsg, CP_ERRMSG_SIZE, "probability %g is outside [0, 1]",
                 f->probability);
        return CP_EINVAL;
    }
    if (memchr(f->method, '\0', sizeof f->method) == NULL ||
        (f->method[0] != '\0' && !cp_method_valid(f->method))) {
        snprintf(errmsg, CP_ERRMSG_SIZE,
                 "method \"%.60s\" is not a full method name like "
                 "/raft.RaftService/AppendEntries",
                 f->method);
        return CP_EINVAL;
    }
    if (f->delay_ms > CP_DELAY_MAX_MS || f->jitter_ms > CP_DELAY_MAX_MS) {
        snprintf(errmsg, CP_ERRMSG_SIZE, "delays and jitters are at most %u ms",
                 CP_DELAY_MAX_MS);
        return CP_EINVAL;
    }
    if (!has_delay(f->kind) && (f->delay_ms != 0 || f->jitter_ms != 0)) {
        snprintf(errmsg, CP_ERRMSG_SIZE,
                 "%s takes no delay or jitter (only delay-request, "
                 "delay-response and duplicate do)",
                 name);
        return CP_EINVAL;
    }
    if ((f->kind == CP_DELAY_REQUEST || f->kind == CP_DELAY_RESPONSE) &&
        f->delay_ms == 0 && f->jitter_ms == 0) {
        snprintf(errmsg, CP_ERRMSG_SIZE,
                 "%s needs a delay or a jitter above 0 ms", name);
        return CP_EINVAL;
    }
    if (f->blackhole && f->kind != CP_DROP_REQUEST &&
        f->kind != CP_DROP_RESPONSE) {
        snprintf(errmsg, CP_ERRMSG_SIZE,
                 "blackhole applies to drop-request and drop-response only");
        return CP_EINVAL;
    }
    return 0;
}

int cp_delay_check(int64_t v, const char *what, uint32_t *out, char *errmsg)
{
    if (v < 0) {
        snprintf(errmsg, CP_ERRMSG_SIZE, "%s %" PRId64 " is negative", what, v);
        return CP_EINVAL;
    }
    if (v > (int64_t)CP_DELAY_MAX_MS) {
        snprintf(errmsg, CP_ERRMSG_SIZE, "%s %" PRId64 " is above %u ms", what,
                 v, CP_DELAY_MAX_MS);
        return CP_EINVAL;
    }
    *out = (uint32_t)v;
    return 0;
}

void cp_fault_describe(const struct cp_fault *f, char *buf, size_t len)
{
    char sel[CP_LINK_NAME_MAX];
    const char *name = cp_fault_kind_name((int)f->kind);
    size_t n;
    cp_selector_format(&f->links, sel);
    n = (size_t)snprintf(buf, len, "%s %s", name != NULL ? name : "?", sel);
    if (n < len && f->probability < 1.0) {
        n += (size_t)snprintf(buf + n, len - n, " p=%g", f->probability);
    }
    if (n < len && has_delay(f->kind)) {
        n += (size_t)snprintf(buf + n, len - n, " delay=%" PRIu32 "ms",
                              f->delay_ms);
        if (n < len && f->jitter_ms != 0) {
            n += (size_t)snprintf(buf + n, len - n, "+U[0,%" PRIu32 "]ms",
                                  f->jitter_ms);
        }
    }
    if (n < len && f->method[0] != '\0') {
        n += (size_t)snprintf(buf + n, len - n, " method=%s", f->method);
    }
    if (n < len && f->blackhole) {
        n += (size_t)snprintf(buf + n, len - n, " blackhole");
    }
    if (n < len && f->partition) {
        snprintf(buf + n, len - n, " (partition)");
    }
}

void cp_faults_init(struct cp_faults *fs)
{
    fs->v = NULL;
    fs->n = fs->cap = 0;
    fs->next_id = 1;
}

void cp_faults_close(struct cp_faults *fs)
{
    if (fs != NULL) {
        free(fs->v);
        fs->v = NULL;
        fs->n = fs->cap = 0;
    }
}

int cp_faults_add(struct cp_faults *fs, const struct cp_fault *f, uint64_t *id)
{
    if (fs->n == fs->cap) {
        size_t cap = fs->cap == 0 ? 16 : fs->cap * 2;
        struct cp_fault *v = realloc(fs->v, cap * sizeof *v);
        if (v == NULL) {
            return CP_ENOMEM;
        }
        fs->v = v;
        fs->cap = cap;
    }
    fs->v[fs->n] = *f;
    fs->v[fs->n].id = fs->next_id++;
    *id = fs->v[fs->n].id;
    fs->n++;
    return 0;
}

bool cp_faults_remove(struct cp_faults *fs, uint64_t id)
{
    for (size_t i = 0; i < fs->n; i++) {
        if (fs->v[i].id == id) {
            memmove(&fs->v[i], &fs->v[i + 1],
                    (fs->n - i - 1) * sizeof fs->v[0]);
            fs->n--;
            return true;
        }
    }
    return false;
}

const struct cp_fault *cp_faults_find(const struct cp_faults *fs, uint64_t id)
{
    for (size_t i = 0; i < fs->n; i++) {
        if (fs->v[i].id == id) {
            return &fs->v[i];
        }
    }
    return NULL;
}

static bool method_matches(const struct cp_fault *f,
                           const char *method,
                           size_t method_len)
{
    return f->method[0] == '\0' || (strlen(f->method) == method_len &&
                                    memcmp(f->method, method, method_len) == 0);
}

bool cp_faults_hold(const struct cp_faults *fs,
                    cp_node from,
                    cp_node to,
                    const char *method,
                    size_t method_len)
{
    for (size_t i = 0; i < fs->n; i++) {
        const struct cp_fault *f = &fs->v[i];
        if (f->kind == CP_HOLD && cp_selector_matches(&f->links, from, to) &&
            method_matches(f, method, method_len)) {
            return true;
        }
    }
    return false;
}

static uint32_t add_capped(uint32_t a, uint32_t b)
{
    uint64_t s = (uint64_t)a + b;
    return s > CP_DELAY_MAX_MS ? CP_DELAY_MAX_MS : (uint32_t)s;
}

static void first(uint64_t *slot, uint64_t id)
{
    if (*slot == 0) {
        *slot = id;
    }
}

void cp_decide(const struct cp_faults *fs,
               cp_node from,
               cp_node to,
               const char *method,
               size_t method_len,
               struct cp_rng *rng,
               struct cp_decision *out)
{
    memset(out, 0, sizeof *out);
    for (size_t i = 0; i < fs->n; i++) {
        const struct cp_fault *f = &fs->v[i];
        uint32_t ms;
        if (!cp_selector_matches(&f->links, from, to) ||
            !method_matches(f, method, method_len)) {
            continue;
        }
        /* One draw per covering rule, hit or miss, so that whether a
         * later rule hits does not depend on earlier outcomes. */
        if (!(cp_rng_uniform(rng) < f->probability)) {
            continue;
        }
        ms = f->delay_ms;
        if (f->jitter_ms != 0) {
            ms = add_capped(ms, cp_rng_upto(rng, f->jitter_ms));
        }
        switch (f->kind) {
            case CP_RESET:
                first(&out->reset, f->id);
                break;
            case CP_BLACKHOLE:
                first(&out->blackhole, f->id);
                break;
            case CP_DROP_REQUEST:
                if (out->drop_request == 0) {
                    out->drop_request = f->id;
                    out->drop_request_blackhole = f->blackhole;
                }
                break;
            case CP_DROP_RESPONSE:
                if (out->drop_response == 0) {
                    out->drop_response = f->id;
                    out->drop_response_blackhole = f->blackhole;
                }
                break;
            case CP_HOLD:
                first(&out->hold, f->id);
                break;
            case CP_DELAY_REQUEST:
                first(&out->delay_request, f->id);
                out->request_delay_ms = add_capped(out->request_delay_ms, ms);
                break;
            case CP_DELAY_RESPONSE:
                first(&out->delay_response, f->id);
                out->response_delay_ms = add_capped(out->response_delay_ms, ms);
                break;
            case CP_DUPLICATE:
                if (out->duplicate == 0) {
                    out->duplicate = f->id;
                    out->duplicate_delay_ms = ms;
                }
                break;
        }
    }
}
