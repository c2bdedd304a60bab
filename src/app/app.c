/* The replicated state machine: running total, key-value store and client
 * sessions. See include/craft/app.h.
 *
 * Two open-addressing hash tables (keys, sessions) with tombstones; every
 * decision depends only on the commands applied and their order, never on
 * table layout, so all servers agree (snapshots and digests sort). */
#include <stdlib.h>
#include <string.h>

#include "craft/app.h"
#include "craft/error.h"

#define SWEEP_EVERY 1024 /* indexes between sweeps of expired sessions */

struct kv
{
    char *key; /* NULL: empty; TOMB: deleted */
    size_t key_len;
    char *value;
    size_t value_len;
    uint64_t hash;
    uint64_t digest; /* its share of kv_digest */
};

struct session
{
    uint64_t id; /* 0: empty; UINT64_MAX: deleted */
    uint64_t seq;
    uint64_t last_time;
    struct cr_result result;
};

struct cr_app
{
    const struct cr_alloc *a;
    struct cr_app_options opt;
    uint64_t applied;
    int64_t total;
    struct kv *kv;
    size_t kv_cap, kv_n, kv_used; /* used: live + tombstones */
    struct session *ss;
    size_t ss_cap, ss_n, ss_used;
    /* cr_app_digest in O(1): sums of per-item hashes, kept up to date by
     * every change (a sum does not depend on table order). */
    uint64_t kv_digest, ss_digest;
};

static char tomb;
#define TOMB (&tomb)
#define SS_DEAD UINT64_MAX

void cr_app_options_default(struct cr_app_options *o)
{
    o->session_ttl_ms = 24u * 3600u * 1000u;
    o->max_sessions = 100000;
}

/* ---------------------------------------------------------------------------
 * Hashing
 * ------------------------------------------------------------------------- */

static uint64_t mix64(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xFF51AFD7ED558CCDull;
    h ^= h >> 33;
    h *= 0xC4CEB9FE1A85EC53ull;
    return h ^ (h >> 33);
}

static uint64_t hash_bytes(const void *p, size_t n, uint64_t seed)
{
    const uint8_t *b = p;
    uint64_t h = 0xCBF29CE484222325ull ^ seed ^ (n * 0x9E3779B97F4A7C15ull);
    for (size_t i = 0; i < n; i++) {
        h = (h ^ b[i]) * 0x100000001B3ull;
    }
    return mix64(h);
}

/* ---------------------------------------------------------------------------
 * Keys
 * ------------------------------------------------------------------------- */

static struct kv *kv_find(const struct cr_app *app,
                          const char *key,
                          size_t len,
                          uint64_t h)
{
    if (app->kv_cap == 0) {
        return NULL;
    }
    for (size_t i = h & (app->kv_cap - 1), probes = 0; probes < app->kv_cap;
         i = (i + 1) & (app->kv_cap - 1), probes++) {
        struct kv *e = &app->kv[i];
        if (e->key == NULL) {
            return NULL;
        }
        if (e->key != TOMB && e->hash == h && e->key_len == len &&
            memcmp(e->key, key, len) == 0) {
            return e;
        }
    }
    return NULL;
}

static int kv_grow(struct cr_app *app)
{
    size_t cap = app->kv_cap == 0 ? 64 : app->kv_cap * 2;
    struct kv *t;
    if (app->kv_cap != 0 && app->kv_n * 4 < app->kv_cap) {
        cap = app->kv_cap; /* mostly tombstones: rehash in place */
    }
    t = app->a->malloc(app->a->data, cap * sizeof *t);
    if (t == NULL) {
        return CR_ENOMEM;
    }
    memset(t, 0, cap * sizeof *t);
    for (size_t i = 0; i < app->kv_cap; i++) {
        struct kv *e = &app->kv[i];
        size_t j;
        if (e->key == NULL || e->key == TOMB) {
            continue;
        }
        for (j = e->hash & (cap - 1); t[j].key != NULL;
             j = (j + 1) & (cap - 1)) {
        }
        t[j] = *e;
    }
    app->a->free(app->a->data, app->kv);
    app->kv = t;
    app->kv_cap = cap;
    app->kv_used = app->kv_n;
    return 0;
}

static char *dup_bytes(const struct cr_app *app, const char *p, size_t n)
{
    char *d = app->a->malloc(app->a->data, n + 1);
    if (d != NULL) {
        if (n > 0) {
            memcpy(d, p, n);
        }
        d[n] = '\0';
    }
    return d;
}

static uint64_t kv_item_digest(const struct kv *e)
{
    return mix64(e->hash ^ hash_bytes(e->value, e->value_len, 1));
}

/* Sets key to value. All or nothing. */
static int kv_set(struct cr_app *app,
                  const char *key,
                  size_t klen,
                  const char *value,
                  size_t vlen)
{
    uint64_t h = hash_bytes(key, klen, 0);
    struct kv *e = kv_find(app, key, klen, h);
    char *v = dup_bytes(app, value, vlen);
    char *k;
    size_t i;
    if (v == NULL) {
        return CR_ENOMEM;
    }
    if (e != NULL) {
        app->a->free(app->a->data, e->value);
        e->value = v;
        e->value_len = vlen;
        app->kv_digest -= e->digest;
        e->digest = kv_item_digest(e);
        app->kv_digest += e->digest;
        return 0;
    }
    if ((app->kv_used + 1) * 4 > app->kv_cap * 3 && kv_grow(app) != 0) {
        app->a->free(app->a->data, v);
        return CR_ENOMEM;
    }
    k = dup_bytes(app, key, klen);
    if (k == NULL) {
        app->a->free(app->a->data, v);
        return CR_ENOMEM;
    }
    for (i = h & (app->kv_cap - 1);
         app->kv[i].key != NULL && app->kv[i].key != TOMB;
         i = (i + 1) & (app->kv_cap - 1)) {
    }
    if (app->kv[i].key == NULL) {
        app->kv_used++;
    }
    app->kv[i].key = k;
    app->kv[i].key_len = klen;
    app->kv[i].value = v;
    app->kv[i].value_len = vlen;
    app->kv[i].hash = h;
    app->kv[i].digest = kv_item_digest(&app->kv[i]);
    app->kv_digest += app->kv[i].digest;
    app->kv_n++;
    return 0;
}

static void kv_del(struct cr_app *app, struct kv *e)
{
    app->kv_digest -= e->digest;
    app->a->free(app->a->data, e->key);
    app->a->free(app->a->data, e->value);
    e->key = TOMB;
    e->value = NULL;
    app->kv_n--;
}

/* ---------------------------------------------------------------------------
 * Sessions
 * ------------------------------------------------------------------------- */

static struct session *ss_find(const struct cr_app *app, uint64_t id)
{
    if (app->ss_cap == 0) {
        return NULL;
    }
    for (size_t i = mix64(id) & (app->ss_cap - 1), probes = 0;
         probes < app->ss_cap; i = (i + 1) & (app->ss_cap - 1), probes++) {
        struct session *s = &app->ss[i];
        if (s->id == 0) {
            return NULL;
        }
        if (s->id == id) {
            return s;
        }
    }
    return NULL;
}

static int ss_grow(struct cr_app *app)
{
    size_t cap = app->ss_cap == 0 ? 64 : app->ss_cap * 2;
    struct session *t;
    if (app->ss_cap != 0 && app->ss_n * 4 < app->ss_cap) {
        cap = app->ss_cap;
    }
    t = app->a->malloc(app->a->data, cap * sizeof *t);
    if (t == NULL) {
        return CR_ENOMEM;
    }
    memset(t, 0, cap * sizeof *t);
    for (size_t i = 0; i < app->ss_cap; i++) {
        struct session *s = &app->ss[i];
        size_t j;
        if (s->id == 0 || s->id == SS_DEAD) {
            continue;
        }
        for (j = mix64(s->id) & (cap - 1); t[j].id != 0;
             j = (j + 1) & (cap - 1)) {
        }
        t[j] = *s;
    }
    app->a->free(app->a->data, app->ss);
    app->ss = t;
    app->ss_cap = cap;
    app->ss_used = app->ss_n;
    return 0;
}

static uint64_t ss_item_digest(const struct session *s)
{
    return mix64(s->id * 31 + s->seq) ^ mix64(s->last_time);
}

/* Every change to a live session's seq or time goes through here. */
static void ss_set(struct cr_app *app,
                   struct session *s,
                   uint64_t seq,
                   uint64_t last_time)
{
    app->ss_digest -= ss_item_digest(s);
    s->seq = seq;
    s->last_time = last_time;
    app->ss_digest += ss_item_digest(s);
}

static void ss_drop(struct cr_app *app, struct session *s)
{
    app->ss_digest -= ss_item_digest(s);
    s->id = SS_DEAD;
    app->ss_n--;
}

/* The least recently used session (ties: the smaller id), to make room. */
static void ss_evict_one(struct cr_app *app)
{
    struct session *old = NULL;
    for (size_t i = 0; i < app->ss_cap; i++) {
        struct session *s = &app->ss[i];
        if (s->id == 0 || s->id == SS_DEAD) {
            continue;
        }
        if (old == NULL || s->last_time < old->last_time ||
            (s->last_time == old->last_time && s->id < old->id)) {
            old = s;
        }
    }
    if (old != NULL) {
        ss_drop(app, old);
    }
}

static void ss_sweep(struct cr_app *app, uint64_t now)
{
    for (size_t i = 0; i < app->ss_cap; i++) {
        struct session *s = &app->ss[i];
        if (s->id != 0 && s->id != SS_DEAD &&
            s->last_time + app->opt.session_ttl_ms < now) {
            ss_drop(app, s);
        }
    }
}

static struct session *ss_add(struct cr_app *app, uint64_t id)
{
    size_t i;
    while (app->ss_n >= app->opt.max_sessions && app->ss_n > 0) {
        ss_evict_one(app);
    }
    if ((app->ss_used + 1) * 4 > app->ss_cap * 3 && ss_grow(app) != 0) {
        return NULL;
    }
    for (i = mix64(id) & (app->ss_cap - 1);
         app->ss[i].id != 0 && app->ss[i].id != SS_DEAD;
         i = (i + 1) & (app->ss_cap - 1)) {
    }
    if (app->ss[i].id == 0) {
        app->ss_used++;
    }
    memset(&app->ss[i], 0, sizeof app->ss[i]);
    app->ss[i].id = id;
    app->ss_digest += ss_item_digest(&app->ss[i]);
    app->ss_n++;
    return &app->ss[i];
}

/* ---------------------------------------------------------------------------
 * Life cycle
 * ------------------------------------------------------------------------- */

int cr_app_new(struct cr_app **out,
               const struct cr_app_options *o,
               const struct cr_alloc *alloc)
{
    const struct cr_alloc *a = alloc != NULL ? alloc : &cr_alloc_default;
    struct cr_app *app = a->malloc(a->data, sizeof *app);
    if (app == NULL) {
        return CR_ENOMEM;
    }
    memset(app, 0, sizeof *app);
    app->a = a;
    if (o != NULL) {
        app->opt = *o;
    } else {
        cr_app_options_default(&app->opt);
    }
    if (app->opt.max_sessions == 0) {
        app->opt.max_sessions = 1;
    }
    *out = app;
    return 0;
}

static void clear(struct cr_app *app)
{
    for (size_t i = 0; i < app->kv_cap; i++) {
        if (app->kv[i].key != NULL && app->kv[i].key != TOMB) {
            app->a->free(app->a->data, app->kv[i].key);
            app->a->free(app->a->data, app->kv[i].value);
        }
    }
    app->a->free(app->a->data, app->kv);
    app->a->free(app->a->data, app->ss);
    app->kv = NULL;
    app->ss = NULL;
    app->kv_cap = app->kv_n = app->kv_used = 0;
    app->ss_cap = app->ss_n = app->ss_used = 0;
    app->applied = 0;
    app->total = 0;
    app->kv_digest = app->ss_digest = 0;
}

void cr_app_free(struct cr_app *app)
{
    if (app == NULL) {
        return;
    }
    clear(app);
    app->a->free(app->a->data, app);
}

/* ---------------------------------------------------------------------------
 * Applying
 * ------------------------------------------------------------------------- */

static void set_text_i64(struct cr_result *r, int64_t v)
{
    char tmp[24];
    size_t n = 0;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u > 0);
    if (v < 0) {
        tmp[n++] = '-';
    }
    for (size_t i = 0; i < n; i++) {
        r->text[i] = tmp[n - 1 - i];
    }
    r->text[n] = '\0';
}

static void set_text(struct cr_result *r, const char *s)
{
    size_t n = strlen(s);
    if (n >= sizeof r->text) {
        n = sizeof r->text - 1;
    }
    memcpy(r->text, s, n);
    r->text[n] = '\0';
}

/* Parses a decimal int64 from [p, p + n). */
static bool parse_i64(const char *p, size_t n, int64_t *out)
{
    bool neg = false;
    uint64_t v = 0;
    size_t i = 0;
    if (n > 0 && (p[0] == '-' || p[0] == '+')) {
        neg = p[0] == '-';
        i = 1;
    }
    if (i == n || n - i > 19) {
        return false;
    }
    for (; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return false;
        }
        v = v * 10 + (uint64_t)(p[i] - '0');
    }
    if (neg ? v > (uint64_t)INT64_MAX + 1 : v > (uint64_t)INT64_MAX) {
        return false;
    }
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return true;
}

static int execute(struct cr_app *app,
                   const struct cr_command *c,
                   struct cr_result *r)
{
    uint64_t h;
    struct kv *e;
    int64_t sum;
    switch (c->op) {
        case CR_OP_ADD:
            if (__builtin_add_overflow(c->a, c->b, &sum) ||
                __builtin_add_overflow(app->total, sum, &r->total)) {
                r->status = CR_RESULT_INVALID;
                r->total = app->total;
                set_text(r, "overflow");
                return 0;
            }
            app->total = r->total;
            r->number = sum;
            set_text_i64(r, sum);
            return 0;
        case CR_OP_PUT:
            set_text(r, "OK");
            return kv_set(app, c->key, c->key_len, c->value, c->value_len);
        case CR_OP_CAS: {
            const char *cur = NULL;
            size_t cur_len = 0;
            bool match;
            h = hash_bytes(c->key, c->key_len, 0);
            e = kv_find(app, c->key, c->key_len, h);
            if (e != NULL) {
                cur = e->value;
                cur_len = e->value_len;
            }
            match = e == NULL ? c->expected_len == 0
                              : cur_len == c->expected_len &&
                                    (cur_len == 0 ||
                                     memcmp(cur, c->expected, cur_len) == 0);
            set_text(r, match ? "true" : "false");
            r->number = match;
            return match
                       ? kv_set(app, c->key, c->key_len, c->value, c->value_len)
                       : 0;
        }
        case CR_OP_INCR: {
            int64_t v = 0;
            char buf[24];
            struct cr_result tmp;
            h = hash_bytes(c->key, c->key_len, 0);
            e = kv_find(app, c->key, c->key_len, h);
            if (e != NULL && !parse_i64(e->value, e->value_len, &v)) {
                r->status = CR_RESULT_INVALID;
                set_text(r, "not a number");
                return 0;
            }
            if (__builtin_add_overflow(v, c->a, &v)) {
                r->status = CR_RESULT_INVALID;
                set_text(r, "overflow");
                return 0;
            }
            set_text_i64(&tmp, v);
            memcpy(buf, tmp.text, sizeof buf);
            r->number = v;
            set_text(r, buf);
            return kv_set(app, c->key, c->key_len, buf, strlen(buf));
        }
        case CR_OP_DEL:
            h = hash_bytes(c->key, c->key_len, 0);
            e = kv_find(app, c->key, c->key_len, h);
            if (e != NULL) {
                kv_del(app, e);
            }
            r->number = e != NULL;
            set_text(r, e != NULL ? "1" : "0");
            return 0;
        case CR_OP_GET:
        case CR_OP_TOTAL:
            break;
    }
    r->status = CR_RESULT_INVALID;
    set_text(r, "not a command");
    return 0;
}

int cr_app_apply(struct cr_app *app,
                 uint64_t index,
                 const struct cr_command *c,
                 struct cr_result *r)
{
    struct session *s = NULL;
    bool fresh = false;
    int rv;
    memset(r, 0, sizeof *r);
    if (index % SWEEP_EVERY == 0) {
        ss_sweep(app, c->time_ms);
    }
    if (c->client_id != 0) {
        s = ss_find(app, c->client_id);
        if (s != NULL && s->last_time + app->opt.session_ttl_ms < c->time_ms) {
            ss_drop(app, s); /* expired: a new session starts */
            s = NULL;
        }
        if (s != NULL && c->sequence <= s->seq) {
            /* Dissertation §6.3: seen before; never apply it twice. */
            if (c->sequence == s->seq) {
                /* The first answer, total included: the total after this
                 * request, not after whatever came since. */
                *r = s->result;
                r->duplicate = true;
            } else {
                r->status = CR_RESULT_STALE;
                set_text(r, "stale request");
                r->total = app->total;
            }
            ss_set(app, s, s->seq,
                   c->time_ms > s->last_time ? c->time_ms : s->last_time);
            app->applied = index;
            return 0;
        }
        if (s == NULL) {
            s = ss_add(app, c->client_id);
            if (s == NULL) {
                return CR_ENOMEM;
            }
            fresh = true;
        }
    }
    rv = execute(app, c, r);
    if (rv != 0) {
        if (fresh) {
            ss_drop(app, s); /* nothing changed, as promised */
        }
        return rv;
    }
    r->total = app->total;
    if (s != NULL) {
        ss_set(app, s, c->sequence, c->time_ms);
        s->result = *r;
    }
    app->applied = index;
    return 0;
}

void cr_app_skip(struct cr_app *app, uint64_t index)
{
    app->applied = index;
}

uint64_t cr_app_applied(const struct cr_app *app)
{
    return app->applied;
}

int64_t cr_app_total(const struct cr_app *app)
{
    return app->total;
}

bool cr_app_get(const struct cr_app *app,
                const char *key,
                size_t key_len,
                const char **value,
                size_t *value_len)
{
    const struct kv *e =
        kv_find(app, key, key_len, hash_bytes(key, key_len, 0));
    if (e == NULL) {
        return false;
    }
    *value = e->value;
    *value_len = e->value_len;
    return true;
}

unsigned cr_app_sessions(const struct cr_app *app)
{
    return (unsigned)app->ss_n;
}

unsigned cr_app_keys(const struct cr_app *app)
{
    return (unsigned)app->kv_n;
}

uint64_t cr_app_digest(const struct cr_app *app)
{
    return (mix64(app->applied) ^ mix64((uint64_t)app->total + 1)) +
           app->kv_digest + app->ss_digest;
}

/* ---------------------------------------------------------------------------
 * Commands: text and binary forms
 * ------------------------------------------------------------------------- */

static void errf(char *errmsg, const char *msg)
{
    if (errmsg != NULL) {
        size_t n = strlen(msg);
        if (n > 127) {
            n = 127;
        }
        memcpy(errmsg, msg, n);
        errmsg[n] = '\0';
    }
}

/* Splits text into at most 5 words. */
static unsigned words(const char *text, const char *w[5], size_t wl[5])
{
    unsigned n = 0;
    const char *p = text;
    for (;;) {
        while (*p == ' ' || *p == '\t') {
            p++;
        }
        if (*p == '\0' || *p == '\n' || *p == '\r') {
            return n;
        }
        if (n == 5) {
            return 6;
        }
        w[n] = p;
        while (*p != '\0' && *p != ' ' && *p != '\t' && *p != '\n' &&
               *p != '\r') {
            p++;
        }
        wl[n] = (size_t)(p - w[n]);
        n++;
    }
}

static bool word_is(const char *w, size_t len, const char *name)
{
    size_t n = strlen(name);
    if (len != n) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char c = w[i];
        if (c >= 'a' && c <= 'z') {
            c = (char)(c - 'a' + 'A');
        }
        if (c != name[i]) {
            return false;
        }
    }
    return true;
}

int cr_command_parse(const char *text, struct cr_command *c, char *errmsg)
{
    const char *w[5];
    size_t wl[5];
    unsigned n = words(text, w, wl);
    memset(c, 0, sizeof *c);
    if (n == 0) {
        errf(errmsg, "empty operation");
        return CR_EINVAL;
    }
    if (n > 4) {
        errf(errmsg, "too many words");
        return CR_EINVAL;
    }
    if (n > 1 && wl[1] > CR_APP_KEY_MAX) {
        errf(errmsg, "key too long");
        return CR_EINVAL;
    }
    if (n > 1) {
        c->key = w[1];
        c->key_len = wl[1];
    }
    if (word_is(w[0], wl[0], "ADD")) {
        c->op = CR_OP_ADD;
        if (n != 3 || !parse_i64(w[1], wl[1], &c->a) ||
            !parse_i64(w[2], wl[2], &c->b)) {
            errf(errmsg, "ADD takes two integers: ADD 5 3");
            return CR_EINVAL;
        }
        c->key = NULL;
        c->key_len = 0;
        return 0;
    }
    if (word_is(w[0], wl[0], "PUT") || word_is(w[0], wl[0], "SET")) {
        c->op = CR_OP_PUT;
        if (n != 3 || wl[2] > CR_APP_VALUE_MAX) {
            errf(errmsg, "PUT takes a key and a value: PUT k v");
            return CR_EINVAL;
        }
        c->value = w[2];
        c->value_len = wl[2];
        return 0;
    }
    if (word_is(w[0], wl[0], "GET")) {
        c->op = CR_OP_GET;
        if (n != 2) {
            errf(errmsg, "GET takes a key: GET k");
            return CR_EINVAL;
        }
        return 0;
    }
    if (word_is(w[0], wl[0], "CAS")) {
        c->op = CR_OP_CAS;
        if (n != 4 || wl[2] > CR_APP_VALUE_MAX || wl[3] > CR_APP_VALUE_MAX) {
            errf(errmsg,
                 "CAS takes a key, the old and the new value: "
                 "CAS k old new");
            return CR_EINVAL;
        }
        c->expected = w[2];
        c->expected_len = wl[2];
        c->value = w[3];
        c->value_len = wl[3];
        return 0;
    }
    if (word_is(w[0], wl[0], "INCR")) {
        c->op = CR_OP_INCR;
        if (n != 3 || !parse_i64(w[2], wl[2], &c->a)) {
            errf(errmsg, "INCR takes a key and an integer: INCR k 1");
            return CR_EINVAL;
        }
        return 0;
    }
    if (word_is(w[0], wl[0], "DEL") || word_is(w[0], wl[0], "DELETE")) {
        c->op = CR_OP_DEL;
        if (n != 2) {
            errf(errmsg, "DEL takes a key: DEL k");
            return CR_EINVAL;
        }
        return 0;
    }
    if (word_is(w[0], wl[0], "TOTAL")) {
        c->op = CR_OP_TOTAL;
        if (n != 1) {
            errf(errmsg, "TOTAL takes nothing");
            return CR_EINVAL;
        }
        return 0;
    }
    errf(errmsg, "unknown operation (ADD, PUT, GET, CAS, INCR, DEL, TOTAL)");
    return CR_EINVAL;
}

/* Binary form:
 *   0 u8 version (1)  1 u8 op  2..7 zero
 *   8 u64 client id  16 u64 sequence  24 u64 time
 *  32 i64 a  40 i64 b
 *  48 u32 key length  52 u32 value length  56 u32 expected length
 *  60 u32 zero  64 key, value, expected */
#define CMD_HEADER 64

static void put64(uint8_t *p, uint64_t v)
{
    for (unsigned i = 0; i < 8; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < 8; i++) {
        v |= (uint64_t)p[i] << (8 * i);
    }
    return v;
}

static void put32(uint8_t *p, uint32_t v)
{
    for (unsigned i = 0; i < 4; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static uint32_t get32(const uint8_t *p)
{
    uint32_t v = 0;
    for (unsigned i = 0; i < 4; i++) {
        v |= (uint32_t)p[i] << (8 * i);
    }
    return v;
}

size_t cr_command_size(const struct cr_command *c)
{
    return CMD_HEADER + c->key_len + c->value_len + c->expected_len;
}

void cr_command_encode(const struct cr_command *c, void *buf)
{
    uint8_t *p = buf;
    memset(p, 0, CMD_HEADER);
    p[0] = 1;
    p[1] = (uint8_t)c->op;
    put64(p + 8, c->client_id);
    put64(p + 16, c->sequence);
    put64(p + 24, c->time_ms);
    put64(p + 32, (uint64_t)c->a);
    put64(p + 40, (uint64_t)c->b);
    put32(p + 48, (uint32_t)c->key_len);
    put32(p + 52, (uint32_t)c->value_len);
    put32(p + 56, (uint32_t)c->expected_len);
    p += CMD_HEADER;
    if (c->key_len > 0) {
        memcpy(p, c->key, c->key_len);
    }
    p += c->key_len;
    if (c->value_len > 0) {
        memcpy(p, c->value, c->value_len);
    }
    p += c->value_len;
    if (c->expected_len > 0) {
        memcpy(p, c->expected, c->expected_len);
    }
}

int cr_command_decode(const void *buf, size_t len, struct cr_command *c)
{
    const uint8_t *p = buf;
    uint64_t klen, vlen, elen;
    memset(c, 0, sizeof *c);
    if (buf == NULL || len < CMD_HEADER || p[0] != 1 || p[1] < CR_OP_ADD ||
        p[1] > CR_OP_DEL) {
        return CR_ECORRUPT;
    }
    klen = get32(p + 48);
    vlen = get32(p + 52);
    elen = get32(p + 56);
    if (klen > CR_APP_KEY_MAX || vlen > CR_APP_VALUE_MAX ||
        elen > CR_APP_VALUE_MAX || CMD_HEADER + klen + vlen + elen != len) {
        return CR_ECORRUPT;
    }
    c->op = (enum cr_op)p[1];
    c->client_id = get64(p + 8);
    c->sequence = get64(p + 16);
    c->time_ms = get64(p + 24);
    c->a = (int64_t)get64(p + 32);
    c->b = (int64_t)get64(p + 40);
    c->key = (const char *)p + CMD_HEADER;
    c->key_len = (size_t)klen;
    c->value = c->key + klen;
    c->value_len = (size_t)vlen;
    c->expected = c->value + vlen;
    c->expected_len = (size_t)elen;
    return 0;
}

/* ---------------------------------------------------------------------------
 * Snapshots
 *
 *   "CRAPP001" u64 applied, i64 total, u64 keys, u64 sessions
 *   keys, sorted: u32 key length, u32 value length, key, value
 *   sessions, sorted by id: u64 id, u64 seq, u64 last time,
 *     u8 status, u8 text length, i64 number, i64 total, text
 * ------------------------------------------------------------------------- */

#define SNAP_HEADER 40

static int cmp_kv(const void *x, const void *y)
{
    const struct kv *a = *(const struct kv *const *)x;
    const struct kv *b = *(const struct kv *const *)y;
    size_t n = a->key_len < b->key_len ? a->key_len : b->key_len;
    int c = n > 0 ? memcmp(a->key, b->key, n) : 0;
    if (c != 0) {
        return c;
    }
    return a->key_len < b->key_len ? -1 : a->key_len > b->key_len;
}

static int cmp_ss(const void *x, const void *y)
{
    const struct session *a = *(const struct session *const *)x;
    const struct session *b = *(const struct session *const *)y;
    return a->id < b->id ? -1 : a->id > b->id;
}

size_t cr_app_snapshot_size(const struct cr_app *app)
{
    size_t size = SNAP_HEADER;
    for (size_t i = 0; i < app->kv_cap; i++) {
        const struct kv *e = &app->kv[i];
        if (e->key != NULL && e->key != TOMB) {
            size += 8 + e->key_len + e->value_len;
        }
    }
    for (size_t i = 0; i < app->ss_cap; i++) {
        const struct session *s = &app->ss[i];
        if (s->id != 0 && s->id != SS_DEAD) {
            size += 42 + strlen(s->result.text);
        }
    }
    return size;
}

int cr_app_snapshot(const struct cr_app *app, void *buf, size_t len)
{
    const struct kv **keys = NULL;
    const struct session **ss = NULL;
    size_t nk = 0, ns = 0;
    uint8_t *p = buf;
    if (len != cr_app_snapshot_size(app)) {
        return CR_EINVAL;
    }
    if (app->kv_n > 0) {
        keys = app->a->malloc(app->a->data, app->kv_n * sizeof *keys);
    }
    if (app->ss_n > 0) {
        ss = app->a->malloc(app->a->data, app->ss_n * sizeof *ss);
    }
    if ((app->kv_n > 0 && keys == NULL) || (app->ss_n > 0 && ss == NULL)) {
        app->a->free(app->a->data, keys);
        app->a->free(app->a->data, ss);
        return CR_ENOMEM;
    }
    for (size_t i = 0; i < app->kv_cap; i++) {
        if (app->kv[i].key != NULL && app->kv[i].key != TOMB) {
            keys[nk++] = &app->kv[i];
        }
    }
    for (size_t i = 0; i < app->ss_cap; i++) {
        if (app->ss[i].id != 0 && app->ss[i].id != SS_DEAD) {
            ss[ns++] = &app->ss[i];
        }
    }
    if (nk > 1) {
        qsort(keys, nk, sizeof *keys, cmp_kv);
    }
    if (ns > 1) {
        qsort(ss, ns, sizeof *ss, cmp_ss);
    }
    memcpy(p, "CRAPP001", 8);
    put64(p + 8, app->applied);
    put64(p + 16, (uint64_t)app->total);
    put64(p + 24, nk);
    put64(p + 32, ns);
    p += SNAP_HEADER;
    for (size_t i = 0; i < nk; i++) {
        put32(p, (uint32_t)keys[i]->key_len);
        put32(p + 4, (uint32_t)keys[i]->value_len);
        memcpy(p + 8, keys[i]->key, keys[i]->key_len);
        if (keys[i]->value_len > 0) {
            memcpy(p + 8 + keys[i]->key_len, keys[i]->value,
                   keys[i]->value_len);
        }
        p += 8 + keys[i]->key_len + keys[i]->value_len;
    }
    for (size_t i = 0; i < ns; i++) {
        size_t tl = strlen(ss[i]->result.text);
        put64(p, ss[i]->id);
        put64(p + 8, ss[i]->seq);
        put64(p + 16, ss[i]->last_time);
        p[24] = (uint8_t)ss[i]->result.status;
        p[25] = (uint8_t)tl;
        put64(p + 26, (uint64_t)ss[i]->result.number);
        put64(p + 34, (uint64_t)ss[i]->result.total);
        memcpy(p + 42, ss[i]->result.text, tl);
        p += 42 + tl;
    }
    app->a->free(app->a->data, keys);
    app->a->free(app->a->data, ss);
    return 0;
}

int cr_app_restore(struct cr_app *app, const void *buf, size_t len)
{
    struct cr_app *fresh;
    const uint8_t *p = buf;
    const uint8_t *end = p + len;
    uint64_t nk, ns;
    int rv;
    if (buf == NULL || len < SNAP_HEADER || memcmp(p, "CRAPP001", 8) != 0) {
        return CR_ECORRUPT;
    }
    rv = cr_app_new(&fresh, &app->opt, app->a);
    if (rv != 0) {
        return rv;
    }
    fresh->applied = get64(p + 8);
    fresh->total = (int64_t)get64(p + 16);
    nk = get64(p + 24);
    ns = get64(p + 32);
    p += SNAP_HEADER;
    rv = CR_ECORRUPT;
    for (uint64_t i = 0; i < nk; i++) {
        uint32_t kl, vl;
        if (end - p < 8) {
            goto bad;
        }
        kl = get32(p);
        vl = get32(p + 4);
        if (kl > CR_APP_KEY_MAX || vl > CR_APP_VALUE_MAX ||
            (size_t)(end - p - 8) < (size_t)kl + vl) {
            goto bad;
        }
        if (kv_set(fresh, (const char *)p + 8, kl, (const char *)p + 8 + kl,
                   vl) != 0) {
            rv = CR_ENOMEM;
            goto bad;
        }
        p += 8 + kl + vl;
    }
    if (fresh->kv_n != nk) {
        goto bad; /* duplicate keys */
    }
    for (uint64_t i = 0; i < ns; i++) {
        struct session *s;
        uint8_t tl;
        uint64_t id;
        if (end - p < 42) {
            goto bad;
        }
        id = get64(p);
        tl = p[25];
        if (id == 0 || id == SS_DEAD || tl >= sizeof s->result.text ||
            end - p - 42 < tl || p[24] > CR_RESULT_INVALID ||
            ss_find(fresh, id) != NULL) {
            goto bad;
        }
        fresh->opt.max_sessions = (unsigned)(ns + 1);
        s = ss_add(fresh, id);
        if (s == NULL) {
            rv = CR_ENOMEM;
            goto bad;
        }
        ss_set(fresh, s, get64(p + 8), get64(p + 16));
        s->result.status = (enum cr_result_status)p[24];
        s->result.number = (int64_t)get64(p + 26);
        s->result.total = (int64_t)get64(p + 34);
        memcpy(s->result.text, p + 42, tl);
        s->result.text[tl] = '\0';
        p += 42 + tl;
    }
    if (p != end) {
        goto bad;
    }
    fresh->opt = app->opt;
    clear(app);
    app->applied = fresh->applied;
    app->total = fresh->total;
    app->kv = fresh->kv;
    app->kv_cap = fresh->kv_cap;
    app->kv_n = fresh->kv_n;
    app->kv_used = fresh->kv_used;
    app->ss = fresh->ss;
    app->ss_cap = fresh->ss_cap;
    app->ss_n = fresh->ss_n;
    app->ss_used = fresh->ss_used;
    app->kv_digest = fresh->kv_digest;
    app->ss_digest = fresh->ss_digest;
    fresh->kv = NULL;
    fresh->ss = NULL;
    fresh->kv_cap = fresh->ss_cap = 0;
    cr_app_free(fresh);
    return 0;
bad:
    cr_app_free(fresh);
    return rv;
}
