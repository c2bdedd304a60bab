/* See log.h. */
#include "log.h"

#include <inttypes.h>
#include <stdarg.h>
#include <string.h>
#include <time.h>

static const char *level_name(enum cr_log_level l)
{
    switch (l) {
        case CR_LOG_DEBUG:
            return "debug";
        case CR_LOG_INFO:
            return "info";
        case CR_LOG_WARN:
            return "warn";
        case CR_LOG_ERROR:
            return "error";
    }
    return "info";
}

bool cr_log_level_parse(const char *s, enum cr_log_level *out)
{
    for (int l = CR_LOG_DEBUG; l <= CR_LOG_ERROR; l++) {
        if (strcmp(s, level_name((enum cr_log_level)l)) == 0) {
            *out = (enum cr_log_level)l;
            return true;
        }
    }
    return false;
}

/* RFC 3339, UTC, milliseconds. */
static void timestamp(char *buf, size_t len)
{
    struct timespec ts;
    struct tm tm;
    size_t n;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, len - n, ".%03ldZ", ts.tv_nsec / 1000000);
}

static void json_string(FILE *f, const char *s, size_t n)
{
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            fputc('\\', f);
            fputc(c, f);
        } else if (c < 0x20) {
            fprintf(f, "\\u%04x", c);
        } else {
            fputc(c, f);
        }
    }
    fputc('"', f);
}

void cr_logf(const struct cr_log *l,
             enum cr_log_level lvl,
             cr_term term,
             const char *role,
             const char *evt,
             const char *fmt,
             ...)
{
    char ts[40];
    char fields[1024];
    va_list ap;
    if (lvl < l->min) {
        return;
    }
    timestamp(ts, sizeof ts);
    fields[0] = '\0';
    if (fmt != NULL) {
        va_start(ap, fmt);
        vsnprintf(fields, sizeof fields, fmt, ap);
        va_end(ap);
    }
    if (!l->json) {
        fprintf(l->out,
                "ts=%s lvl=%s node=%" PRIu64 " term=%" PRIu64
                " role=%s evt=%s%s%s\n",
                ts, level_name(lvl), l->node, term, role, evt,
                fields[0] != '\0' ? " " : "", fields);
        fflush(l->out);
        return;
    }
    fprintf(l->out,
            "{\"ts\":\"%s\",\"lvl\":\"%s\",\"node\":%" PRIu64
            ",\"term\":%" PRIu64 ",\"role\":\"%s\",\"evt\":\"%s\"",
            ts, level_name(lvl), l->node, term, role, evt);
    for (const char *p = fields; *p != '\0';) {
        const char *eq = strchr(p, '=');
        const char *end = strchr(p, ' ');
        if (end == NULL) {
            end = p + strlen(p);
        }
        if (eq != NULL && eq < end) {
            fputc(',', l->out);
            json_string(l->out, p, (size_t)(eq - p));
            fputc(':', l->out);
            json_string(l->out, eq + 1, (size_t)(end - eq - 1));
        }
        p = *end == ' ' ? end + 1 : end;
    }
    fputs("}\n", l->out);
    fflush(l->out);
}
