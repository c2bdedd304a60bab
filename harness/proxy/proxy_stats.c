/* See proxy_stats.h. */
#include "proxy_stats.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void cp_stats_init(struct cp_link_stats *s)
{
    memset(s, 0, sizeof *s);
    snprintf(s->other.method, sizeof s->other.method, "%s", CP_STATS_OTHER);
}

void cp_stats_close(struct cp_link_stats *s)
{
    if (s != NULL) {
        for (size_t i = 0; i < s->n; i++) {
            free(s->v[i]);
        }
        s->n = 0;
    }
}

struct cp_counters *cp_stats_get(struct cp_link_stats *s,
                                 const char *method,
                                 size_t method_len)
{
    struct cp_method_stats *m;
    if (method_len >= CP_METHOD_MAX) {
        return &s->other.c;
    }
    for (size_t i = 0; i < s->n; i++) {
        m = s->v[i];
        if (strncmp(m->method, method, method_len) == 0 &&
            m->method[method_len] == '\0') {
            return &m->c;
        }
    }
    if (s->n == CP_STATS_METHODS_MAX || (m = calloc(1, sizeof *m)) == NULL) {
        return &s->other.c;
    }
    memcpy(m->method, method, method_len);
    m->method[method_len] = '\0';
    s->v[s->n++] = m;
    return &m->c;
}

void cp_timeline_init(struct cp_timeline *t)
{
    memset(t, 0, sizeof *t);
}

void cp_timeline_close(struct cp_timeline *t)
{
    if (t != NULL) {
        for (size_t i = 0; i < t->n; i++) {
            free(t->v[i].detail);
            free(t->v[i].ids);
        }
        free(t->v);
        memset(t, 0, sizeof *t);
    }
}

int cp_timeline_add(struct cp_timeline *t,
                    int64_t wall_ms,
                    uint64_t mono_ms,
                    const char *action,
                    const char *detail,
                    const uint64_t *ids,
                    size_t n_ids)
{
    struct cp_event *e;
    size_t len = strlen(detail);
    if (t->n == t->cap) {
        size_t cap = t->cap == 0 ? 64 : t->cap * 2;
        struct cp_event *v = realloc(t->v, cap * sizeof *v);
        if (v == NULL) {
            return CP_ENOMEM;
        }
        t->v = v;
        t->cap = cap;
    }
    e = &t->v[t->n];
    memset(e, 0, sizeof *e);
    e->detail = malloc(len + 1);
    if (e->detail == NULL) {
        return CP_ENOMEM;
    }
    memcpy(e->detail, detail, len + 1);
    if (n_ids > 0) {
        e->ids = malloc(n_ids * sizeof *ids);
        if (e->ids == NULL) {
            free(e->detail);
            return CP_ENOMEM;
        }
        memcpy(e->ids, ids, n_ids * sizeof *ids);
    }
    e->n_ids = n_ids;
    e->seq = t->n + 1;
    e->wall_ms = wall_ms;
    e->mono_ms = mono_ms;
    snprintf(e->action, sizeof e->action, "%s", action);
    t->n++;
    return 0;
}

void cp_format_time(int64_t wall_ms, char *buf, size_t len)
{
    time_t secs = (time_t)(wall_ms / 1000);
    struct tm tm;
    size_t n;
    gmtime_r(&secs, &tm);
    n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, len - n, ".%03dZ", (int)(wall_ms % 1000));
}
