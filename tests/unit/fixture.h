/* Shared fixture of the core's unit tests.
 *
 * A struct fx owns up to FX_MAX cores (ids 1..n) that share one allocator
 * built on cmocka's test_malloc, so that a block the core forgets to free
 * fails the test. The allocator counts allocations and can fail the Nth
 * one (the OOM tests).
 *
 * Every step goes through fx_step, which keeps what the update says:
 *   - the update itself in f->u[id] (valid until the core is stepped again);
 *   - a copy of every message in the sender's outbox (entries referenced,
 *     snapshot metadata copied), to deliver later with fx_deliver*;
 *   - the writes on a simulated disk, reported durable by fx_persist;
 *   - the committed entries, checked to come out in order and once.
 *
 * Tests allocate the fixture with fx_new and free it with fx_free before
 * they return: cmocka checks for leaked blocks at the end of each test. */
#ifndef CRAFT_TEST_FIXTURE_H
#define CRAFT_TEST_FIXTURE_H

/* cmocka.h needs these before it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "craft/core.h"

#define FX_MAX 6
#define FX_BOX 1024
#define FX_CLUSTER 0x5eedu
/* The fixture's timing: election timeout and heartbeat interval (ms). */
#define FX_ET 1000
#define FX_HB 100
/* Room for any encoded configuration. */
#define FX_CONFIG_BUF 2304
/* "Any message type" for the filters below. */
#define FX_ANY ((enum cr_message_type)0)

/* A message copied out of an update: it owns its entries array (holding a
 * reference on each batch) and its snapshot metadata. */
struct fx_msg
{
    struct cr_message m;
    struct cr_entry *entries;
    struct cr_snapshot_meta *meta;
};

/* What a core has written, as a node's storage would hold it. */
struct fx_disk
{
    struct cr_hard_state hs;
    bool has_snapshot;
    struct cr_snapshot_meta snapshot;
    cr_index first; /* index of entries[0] */
    struct cr_entry *entries;
    unsigned n, cap;
};

struct fx
{
    /* The cores' allocator: counts, and fails allocation number fail_at
     * (1-based; 0 never), and every later one if fail_repeat is set. */
    struct cr_alloc alloc;
    unsigned long n_allocs;
    unsigned long fail_at;
    bool fail_repeat;
    unsigned long n_failed;
    long n_live; /* blocks allocated through alloc or plain, not freed */
    /* The fixture's own allocator: never fails. */
    struct cr_alloc plain;

    struct cr_options opt;
    uint64_t seed;
    cr_msec now;
    unsigned n;
    struct cr_config config; /* the bootstrap configuration */

    struct cr_core core[FX_MAX + 1];
    bool live[FX_MAX + 1]; /* initialized and not closed */
    bool cut[FX_MAX + 1];  /* fx_flush drops messages from and to it */
    struct cr_update u[FX_MAX + 1];
    int rv[FX_MAX + 1];
    uint64_t unpersisted_seq[FX_MAX + 1]; /* latest persist_seq */
    cr_index unpersisted_last[FX_MAX + 1];
    uint64_t persisted_seq[FX_MAX + 1]; /* latest reported durable */
    cr_index applied[FX_MAX + 1];       /* last committed index seen */
    cr_index n_applied[FX_MAX + 1];     /* committed entries handed out */
    uint64_t hash;                      /* digest of every update */
    /* Read results of every update, in order. */
    struct cr_read_result reads[FX_MAX + 1][64];
    unsigned n_reads[FX_MAX + 1];

    struct fx_msg box[FX_MAX + 1][FX_BOX];
    unsigned n_box[FX_MAX + 1];
    struct fx_disk disk[FX_MAX + 1];
};

/* The fixture's options: cr_options_default with FX_ET and FX_HB. */
void fx_options(struct cr_options *o);
/* n cores (ids 1..n) initialized with `opt` (NULL: fx_options), seed id
 * (fx_new_seeded: seed + id), at time 0. */
struct fx *fx_new(unsigned n, const struct cr_options *opt);
struct fx *fx_new_seeded(unsigned n, const struct cr_options *opt, uint64_t s);
/* Closes everything and frees the fixture; fails if any block allocated
 * through the fixture's allocators is left. */
void fx_free(struct fx *f);

/* Voters 1..voters, addresses "sN". */
void fx_config(struct cr_config *cfg, unsigned voters);
/* Bootstraps cores 1..voters with fx_config(voters) and persists. */
int fx_bootstrap(struct fx *f, unsigned voters);
/* Bootstraps core id with cfg (does not persist). */
int fx_bootstrap_config(struct fx *f, cr_id id, const struct cr_config *cfg);
/* Loads core id with a log whose entry 1 is f->config (fx_config(3) if
 * unset) and whose entries 2..n are one-byte commands; terms[i] is the
 * term of entry i + 1. The disk gets the same. */
int fx_load(struct fx *f,
            cr_id id,
            cr_term term,
            cr_id vote,
            cr_index commit,
            const cr_term *terms,
            unsigned n);
/* Closes core id and restores it from its disk (what fx_persist made
 * durable and everything written after; tests persist first). */
int fx_restart(struct fx *f, cr_id id);
/* Closes core id; its messages stay in the boxes. */
void fx_kill(struct fx *f, cr_id id);

/* Steps core id at f->now and records the update. */
int fx_step(struct fx *f, cr_id id, struct cr_event *ev);
int fx_tick(struct fx *f, cr_id id);
int fx_campaign(struct fx *f, cr_id id);
/* Reports the latest update's writes durable (no-op if none pending). */
int fx_persist(struct fx *f, cr_id id);
/* Proposes n commands of len bytes each (bytes: a pattern). */
int fx_propose(struct fx *f, cr_id id, unsigned n, size_t len);
int fx_change(struct fx *f, cr_id id, enum cr_change_type type, cr_id target);
int fx_transfer(struct fx *f, cr_id id, cr_id target);
int fx_read(struct fx *f, cr_id id, uint64_t read_id);
int fx_snapshot(struct fx *f, cr_id id, cr_index index, cr_index trailing);
int fx_receive(struct fx *f, cr_id id, const struct cr_message *m);

/* A message of this cluster, zeroed but for the header. */
void fx_msg_init(struct cr_message *m,
                 enum cr_message_type type,
                 cr_id from,
                 cr_id to,
                 cr_term term);
/* Encodes cfg into buf (FX_CONFIG_BUF bytes); returns the length. */
size_t fx_config_encode(const struct cr_config *cfg, uint8_t *buf);

/* Outboxes. `to` 0 and FX_ANY match anything. Delivery steps the
 * receiver (ignoring f->cut) and returns how many were delivered. */
unsigned fx_count(const struct fx *f,
                  cr_id from,
                  cr_id to,
                  enum cr_message_type type);
const struct cr_message *fx_peek(const struct fx *f,
                                 cr_id from,
                                 cr_id to,
                                 enum cr_message_type type);
unsigned fx_deliver(struct fx *f, cr_id from, cr_id to);
unsigned fx_deliver_type(struct fx *f,
                         cr_id from,
                         cr_id to,
                         enum cr_message_type type);
/* Delivers only the first matching message. */
bool fx_deliver_one(struct fx *f,
                    cr_id from,
                    cr_id to,
                    enum cr_message_type type);
/* Delivers, in order, the messages for which pred is true. */
unsigned fx_deliver_if(struct fx *f,
                       cr_id from,
                       cr_id to,
                       bool (*pred)(const struct cr_message *m));
/* Drops what `from` sent to `to` (0: to anyone). */
void fx_drop(struct fx *f, cr_id from, cr_id to);
void fx_drop_type(struct fx *f,
                  cr_id from,
                  cr_id to,
                  enum cr_message_type type);
/* The last read result of core id for read_id, or NULL. */
const struct cr_read_result *fx_read_result(const struct fx *f,
                                            cr_id id,
                                            uint64_t read_id);
/* Persists and delivers until nothing moves; messages from or to a cut
 * core are dropped. Time does not advance. */
void fx_flush(struct fx *f);
/* Advances time by ms in steps of 10 ms, ticking every live core whose
 * deadline passed and flushing after each step. */
void fx_run(struct fx *f, cr_msec ms);

/* Campaigns on id and flushes; asserts id leads. */
void fx_elect(struct fx *f, cr_id id);
/* Campaigns on id and delivers only votes (and persists) until id leads:
 * its no-op and appends stay in its outbox, nothing is committed. */
void fx_elect_votes_only(struct fx *f, cr_id id);

/* Messages of an update. */
unsigned fx_upd_count(const struct cr_update *u,
                      enum cr_message_type type,
                      cr_id to);
const struct cr_message *fx_upd_find(const struct cr_update *u,
                                     enum cr_message_type type,
                                     cr_id to);

#endif /* CRAFT_TEST_FIXTURE_H */
