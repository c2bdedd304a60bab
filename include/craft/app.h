/* craft's replicated state machine.
 *
 * What every server applies, in log order: additions to a running total
 * (the original educational Raft's `Add`), and a key-value store with put,
 * compare-and-swap, increment and delete. Reads (GET, the total) do not go
 * through the log; the node serves them from this state once a ReadIndex
 * says it is current (dissertation §6.4).
 *
 * Client sessions (dissertation §6.3). A command may carry a client id and
 * a sequence number. The state machine remembers, per client, the highest
 * sequence it applied and that command's result; a command whose sequence
 * is not above it is not applied again: its result comes from the table
 * (or, for a sequence older than the last one, an error saying so). The
 * table is part of the replicated state (it is in snapshots), so a retry
 * is answered the same way by any server. Sessions expire after a time
 * without commands, measured on the clock the leader puts into each
 * command, so every server expires the same sessions at the same index.
 *
 * The module is pure: no I/O, no clock, deterministic. */
#ifndef CRAFT_APP_H
#define CRAFT_APP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "craft/alloc.h"

enum cr_op {
    CR_OP_ADD = 1, /* total += a + b; result: a + b */
    CR_OP_PUT,     /* key = value */
    CR_OP_CAS,     /* key = value if key == expected ("" matches absent) */
    CR_OP_INCR,    /* key += delta (absent counts as 0) */
    CR_OP_DEL,     /* remove key; result: "1" if it was there, else "0" */
    CR_OP_GET,     /* a read: not a command (parse only) */
    CR_OP_TOTAL,   /* a read of the running total (parse only) */
};

#define CR_APP_KEY_MAX 1024
#define CR_APP_VALUE_MAX (64 * 1024)

/* A command, as a client asks for it. Strings are borrowed. */
struct cr_command
{
    enum cr_op op;
    int64_t a, b;    /* ADD operands; INCR's delta in a */
    const char *key; /* PUT, CAS, INCR, DEL, GET */
    size_t key_len;
    const char *value; /* PUT, CAS (new value) */
    size_t value_len;
    const char *expected; /* CAS */
    size_t expected_len;
    uint64_t client_id; /* 0: no session */
    uint64_t sequence;
    uint64_t time_ms; /* the leader's clock, set when proposed */
};

/* Parses the text form: "ADD 5 3", "PUT k v", "GET k", "CAS k old new",
 * "INCR k d", "DEL k", "TOTAL". Words are separated by spaces; a value is
 * one word. Returns 0, or CR_EINVAL with a message in errmsg (128 bytes).
 * The command borrows from text. */
int cr_command_parse(const char *text, struct cr_command *c, char *errmsg);

/* The encoded size of a command in a log entry, and the encoding. */
size_t cr_command_size(const struct cr_command *c);
void cr_command_encode(const struct cr_command *c, void *buf);
/* Decodes an entry's payload (borrowing strings from it); CR_ECORRUPT. */
int cr_command_decode(const void *buf, size_t len, struct cr_command *c);

enum cr_result_status {
    CR_RESULT_OK = 0,
    CR_RESULT_STALE,   /* an older sequence than the session's last */
    CR_RESULT_INVALID, /* e.g. INCR of a value that is not a number */
};

/* The outcome of applying a command. `text` is what the client gets:
 * "8", "true"/"false" for CAS, the new value for INCR, ... */
struct cr_result
{
    enum cr_result_status status;
    int64_t number; /* ADD's sum, INCR's new value */
    int64_t total;  /* the running total after it */
    bool duplicate; /* answered from the session table */
    char text[64];
};

struct cr_app_options
{
    uint64_t session_ttl_ms; /* expire a session unused this long */
    unsigned max_sessions;   /* beyond: the least recently used goes */
};

void cr_app_options_default(struct cr_app_options *o);

struct cr_app;

int cr_app_new(struct cr_app **out,
               const struct cr_app_options *o,
               const struct cr_alloc *alloc);
void cr_app_free(struct cr_app *app);

/* Applies the command at log index `index` (strictly increasing). Returns
 * 0 or CR_ENOMEM (nothing changed then: the node must stop, as a state
 * machine that skipped an entry would diverge). */
int cr_app_apply(struct cr_app *app,
                 uint64_t index,
                 const struct cr_command *c,
                 struct cr_result *r);
/* Notes an index that holds no command (a no-op, a configuration). */
void cr_app_skip(struct cr_app *app, uint64_t index);

uint64_t cr_app_applied(const struct cr_app *app);
int64_t cr_app_total(const struct cr_app *app);
/* Looks a key up; returns false if absent. *value is borrowed. */
bool cr_app_get(const struct cr_app *app,
                const char *key,
                size_t key_len,
                const char **value,
                size_t *value_len);
/* A hash of the whole replicated state (total, keys, sessions, applied
 * index): equal on every server that applied the same log. */
uint64_t cr_app_digest(const struct cr_app *app);
unsigned cr_app_sessions(const struct cr_app *app);
unsigned cr_app_keys(const struct cr_app *app);

/* Snapshots: the whole state as bytes, streamed out in chunks, and read
 * back. cr_app_snapshot_size() is exact; the chunks concatenate to the
 * image. */
size_t cr_app_snapshot_size(const struct cr_app *app);
int cr_app_snapshot(const struct cr_app *app, void *buf, size_t len);
/* Replaces the state by a snapshot image; CR_ECORRUPT leaves it as it
 * was. */
int cr_app_restore(struct cr_app *app, const void *buf, size_t len);

#endif /* CRAFT_APP_H */
