/* The node's log: one line per event, on stderr.
 *
 *   ts=2026-11-26T20:01:02.345Z lvl=info node=2 term=3 role=leader
 *   evt=became_leader last_index=17
 *
 * or, with --log-format json, one JSON object per line with the same keys.
 * Fields after `evt` are key=value pairs without spaces in the value (the
 * logger turns spaces into underscores). The level comes from --log-level
 * or CR_LOG_LEVEL: debug, info (default), warn, error. */
#ifndef CRAFT_NODE_LOG_H
#define CRAFT_NODE_LOG_H

#include <stdbool.h>
#include <stdio.h>

#include "craft/core.h"

enum cr_log_level { CR_LOG_DEBUG = 0, CR_LOG_INFO, CR_LOG_WARN, CR_LOG_ERROR };

struct cr_log
{
    enum cr_log_level min;
    bool json;
    cr_id node;
    FILE *out;
};

/* Parses "debug", "info", "warn", "error"; false if none of them. */
bool cr_log_level_parse(const char *s, enum cr_log_level *out);

/* fmt gives the fields after evt: "k=v k=v". */
void cr_logf(const struct cr_log *l,
             enum cr_log_level lvl,
             cr_term term,
             const char *role,
             const char *evt,
             const char *fmt,
             ...) __attribute__((format(printf, 6, 7)));

#endif /* CRAFT_NODE_LOG_H */
