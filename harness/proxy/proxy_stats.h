/* Counters per link and method, and the fault timeline (pure: times come
 * in as arguments). */
#ifndef CRAFT_PROXY_STATS_H
#define CRAFT_PROXY_STATS_H

#include <stddef.h>
#include <stdint.h>

#include "proxy_fault.h"

/* The fields of proxy.proto's Counters, same meaning. */
struct cp_counters
{
    uint64_t calls, forwarded, ok, failed;
    uint64_t request_bytes, response_bytes;
    uint64_t requests_dropped, responses_dropped;
    uint64_t requests_delayed, responses_delayed;
    uint64_t duplicated, held, blackholed, reset;
};

/* Distinct methods counted per link; calls of further methods (a caller
 * can name any) are counted under CP_STATS_OTHER. */
#define CP_STATS_METHODS_MAX 64
#define CP_STATS_OTHER "(other)"

struct cp_method_stats
{
    char method[CP_METHOD_MAX];
    struct cp_counters c;
};

/* One link's counters. Entries never move once made, so a call may keep
 * the pointer cp_stats_get gave it for as long as the link lives. */
struct cp_link_stats
{
    struct cp_method_stats *v[CP_STATS_METHODS_MAX];
    size_t n;
    struct cp_method_stats other; /* CP_STATS_OTHER */
};

void cp_stats_init(struct cp_link_stats *s);
void cp_stats_close(struct cp_link_stats *s);

/* The counters of `method` (method_len bytes), made on first use; never
 * NULL (past the limit, or out of memory, the CP_STATS_OTHER entry). */
struct cp_counters *cp_stats_get(struct cp_link_stats *s,
                                 const char *method,
                                 size_t method_len);

/* ------------------------------------------------------------------------
 * The timeline */

#define CP_ACTION_MAX 16

struct cp_event
{
    uint64_t seq;
    int64_t wall_ms; /* CLOCK_REALTIME, ms since the epoch */
    uint64_t mono_ms;
    char action[CP_ACTION_MAX];
    char *detail;  /* owned */
    uint64_t *ids; /* owned, n_ids of them */
    size_t n_ids;
};

/* Every event since the start; it grows by one event per control change,
 * never per call. */
struct cp_timeline
{
    struct cp_event *v;
    size_t n, cap;
};

void cp_timeline_init(struct cp_timeline *t);
void cp_timeline_close(struct cp_timeline *t);

/* Appends an event with the next seq (copies detail and ids). */
int cp_timeline_add(struct cp_timeline *t,
                    int64_t wall_ms,
                    uint64_t mono_ms,
                    const char *action,
                    const char *detail,
                    const uint64_t *ids,
                    size_t n_ids);

/* RFC 3339, UTC, milliseconds: "2024-05-01T12:00:00.123Z" (buf of at
 * least 32 bytes). */
void cp_format_time(int64_t wall_ms, char *buf, size_t len);

#endif /* CRAFT_PROXY_STATS_H */
