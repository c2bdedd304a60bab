/* Private to src/core: the functions the core's files share.
 *
 * Naming: cr__<area>_<verb>. Everything here runs inside cr_core_step (or
 * init/load), on one thread, and never performs I/O. */
#ifndef CRAFT_CORE_IMPL_H
#define CRAFT_CORE_IMPL_H

#include <assert.h>

#include "craft/core.h"

/* Placeholder seq of a held message until its update's seq is known. */
#define CR__SEQ_PENDING UINT64_MAX

/* core.c: time, randomness, output. */
uint64_t cr__rand(struct cr_core *c);
void cr__reset_election_timer(struct cr_core *c);
void cr__trace(struct cr_core *c,
               const char *event,
               const char *reason,
               cr_id peer,
               cr_term term,
               cr_index index);
/* Queues a message; `durable`: hold it until this step's writes (and every
 * earlier one) are durable. Allocation failure drops the message. */
void cr__send(struct cr_core *c, struct cr_message *m, bool durable);
void cr__read_result(struct cr_core *c,
                     uint64_t id,
                     int status,
                     cr_index index);
bool cr__is_voter(const struct cr_core *c, cr_id id);
unsigned cr__quorum(const struct cr_core *c);
void cr__set_hard_state(struct cr_core *c, cr_term term, cr_id vote);
void cr__set_commit(struct cr_core *c, cr_index commit);
bool cr__lease_active(const struct cr_core *c);
void cr__note_oom(struct cr_core *c);

/* log.c: the in-memory log. */
cr_index cr__log_last(const struct cr_core *c);
cr_term cr__log_term(const struct cr_core *c, cr_index index);
struct cr_entry *cr__log_at(const struct cr_core *c, cr_index index);
/* Appends copies of entries (bytes copied into one new batch, or a
 * reference taken when entries[i].batch is set), all with `term` when
 * term is nonzero. All or nothing: CR_ENOMEM leaves the log unchanged. */
int cr__log_append(struct cr_core *c,
                   const struct cr_entry *entries,
                   unsigned n,
                   cr_term term);
/* Appends one entry taking over a reference the caller holds on batch. */
int cr__log_append_owned(struct cr_core *c,
                         cr_term term,
                         enum cr_entry_type type,
                         struct cr_buf buf,
                         void *batch);
void cr__log_truncate(struct cr_core *c, cr_index from);
void cr__log_compact(struct cr_core *c, cr_index upto);
void cr__log_reset(struct cr_core *c, cr_index index, cr_term term);
/* Replaces the whole log by a snapshot's last entry (index, term). */
void cr__log_install(struct cr_core *c, cr_index index, cr_term term);
void cr__log_free(struct cr_core *c);
/* §5.3 optimization: the largest index <= index whose term <= term. */
cr_index cr__log_find_conflict(const struct cr_core *c,
                               cr_index index,
                               cr_term term);
/* The configuration in force as of `index`: the latest config entry at or
 * below it, else the snapshot's. Returns false if none is known. */
bool cr__log_config_at(const struct cr_core *c,
                       cr_index index,
                       struct cr_config *out,
                       cr_index *out_index);

/* election.c */
bool cr__can_campaign(const struct cr_core *c);
void cr__become_follower(struct cr_core *c, cr_term term, cr_id leader);
void cr__start_election(struct cr_core *c, bool pre_vote, bool transfer);
void cr__recv_request_vote(struct cr_core *c, const struct cr_message *m);
void cr__recv_request_vote_result(struct cr_core *c,
                                  const struct cr_message *m);
void cr__maybe_win(struct cr_core *c);
void cr__election_tick(struct cr_core *c);

/* replication.c */
void cr__become_leader(struct cr_core *c);
void cr__send_append(struct cr_core *c,
                     struct cr__progress *p,
                     bool allow_empty);
void cr__send_heartbeat(struct cr_core *c, struct cr__progress *p);
void cr__broadcast_append(struct cr_core *c);
void cr__broadcast_heartbeat(struct cr_core *c);
void cr__maybe_commit(struct cr_core *c);
void cr__recv_append_entries(struct cr_core *c, const struct cr_message *m);
void cr__recv_append_entries_result(struct cr_core *c,
                                    const struct cr_message *m);
void cr__recv_install_snapshot(struct cr_core *c, const struct cr_message *m);
void cr__leader_tick(struct cr_core *c);
struct cr__progress *cr__progress_get(struct cr_core *c, cr_id id);
void cr__progress_sync(struct cr_core *c);
void cr__progress_probe(struct cr__progress *p);
int cr__propose(struct cr_core *c, const struct cr_entry *entries, unsigned n);

/* membership.c */
void cr__config_apply(struct cr_core *c,
                      const struct cr_config *config,
                      cr_index index);
void cr__config_recompute(struct cr_core *c);
int cr__change(struct cr_core *c,
               enum cr_change_type type,
               cr_id id,
               const char *address);
void cr__catch_up(struct cr_core *c, struct cr__progress *p);
void cr__membership_tick(struct cr_core *c);
void cr__after_commit(struct cr_core *c);
int cr__transfer(struct cr_core *c, cr_id target);
void cr__transfer_check(struct cr_core *c, struct cr__progress *p);
void cr__transfer_abort(struct cr_core *c, const char *reason);
void cr__recv_timeout_now(struct cr_core *c, const struct cr_message *m);

/* read.c */
int cr__read(struct cr_core *c, uint64_t id, cr_id from);
void cr__reads_check(struct cr_core *c);
void cr__reads_fail(struct cr_core *c, int status);
void cr__recv_read_index(struct cr_core *c, const struct cr_message *m);
void cr__recv_read_index_result(struct cr_core *c, const struct cr_message *m);

#endif /* CRAFT_CORE_IMPL_H */
