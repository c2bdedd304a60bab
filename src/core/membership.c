/* Membership changes one server at a time (dissertation §4.1-§4.2),
 * learner catch-up (§4.2.1), removal of the leader (§4.2.2), and
 * leadership transfer (§3.10). */
#include <string.h>

#include "core_impl.h"

void cr__config_apply(struct cr_core *c,
                      const struct cr_config *config,
                      cr_index index)
{
    bool same = cr_config_equal(&c->config, config);
    c->config = *config;
    c->config_index = index;
    if (!same) {
        c->config_changed = true;
        cr__trace(c, "config_changed", NULL, 0, c->term, index);
    }
    if (c->role == CR_LEADER) {
        cr__progress_sync(c);
    }
}

/* §4.1: the configuration in force is the latest one in the log, committed
 * or not. Used after the log lost or gained configuration entries. */
void cr__config_recompute(struct cr_core *c)
{
    struct cr_config config;
    cr_index index;
    if (!cr__log_config_at(c, cr__log_last(c), &config, &index)) {
        memset(&config, 0, sizeof config);
        index = 0;
    }
    cr__config_apply(c, &config, index);
}

static int append_config(struct cr_core *c, const struct cr_config *config)
{
    size_t size = cr_config_encoded_size(config);
    void *batch;
    uint8_t *buf = cr_batch_alloc(c->alloc, size, &batch);
    struct cr_buf b;
    int rv;
    if (buf == NULL) {
        return CR_ENOMEM;
    }
    cr_config_encode(config, buf);
    b.base = buf;
    b.len = size;
    rv = cr__log_append_owned(c, c->term, CR_ENTRY_CONFIG, b, batch);
    if (rv != 0) {
        cr_batch_unref(c->alloc, batch);
        return rv;
    }
    cr__config_apply(c, config, cr__log_last(c));
    cr__broadcast_append(c);
    return 0;
}

/* Whether the leader may start a configuration change now. */
static int can_change(const struct cr_core *c)
{
    if (c->role != CR_LEADER) {
        return c->leader != 0 ? CR_ENOTLEADER : CR_ENOLEADER;
    }
    if (c->transfer_target != 0) {
        return CR_ETRANSFER;
    }
    /* §4.1: at most one change may be uncommitted at a time. */
    if (c->config_index > c->commit) {
        return CR_ECHANGE;
    }
    /* §4.1 (and the correction posted by Ongaro in 2015): a new leader
     * must commit an entry of its own term before changing the
     * configuration, or two changes could overlap across leaders. */
    if (cr__log_term(c, c->commit) != c->term) {
        return CR_ENOTREADY;
    }
    return 0;
}

int cr__change(struct cr_core *c,
               enum cr_change_type type,
               cr_id id,
               const char *address)
{
    struct cr_config next = c->config;
    int rv = can_change(c);
    if (rv != 0) {
        return rv;
    }
    switch (type) {
        case CR_CHANGE_ADD:
        case CR_CHANGE_ADD_LEARNER:
            /* §4.2.1: a new server joins without a vote, so that it cannot
             * hold up commitment while it catches up. */
            rv = cr_config_add(&next, id, CR_LEARNER, address);
            if (rv != 0) {
                return rv;
            }
            next.servers[next.n - 1].promote = type == CR_CHANGE_ADD;
            break;
        case CR_CHANGE_REMOVE: {
            const struct cr_server *s = cr_config_get(&next, id);
            if (s == NULL) {
                return CR_ENOTFOUND;
            }
            if (s->suffrage == CR_VOTER && cr_config_voters(&next) == 1) {
                return CR_EINVAL; /* the last voter */
            }
            rv = cr_config_remove(&next, id);
            if (rv != 0) {
                return rv;
            }
            break;
        }
        default:
            return CR_EINVAL;
    }
    rv = append_config(c, &next);
    if (rv == 0) {
        cr__trace(
            c, type == CR_CHANGE_REMOVE ? "server_removing" : "server_adding",
            NULL, id, c->term, cr__log_last(c));
    }
    return rv;
}

/* §4.2.1: replicate to a joining learner in rounds; each round ends when
 * it has what the leader had at the round's start. A round that took less
 * than an election timeout means the learner keeps up: promote it. */
void cr__catch_up(struct cr_core *c, struct cr__progress *p)
{
    const struct cr_server *s = cr_config_get(&c->config, p->id);
    struct cr_config next;
    if (c->role != CR_LEADER || s == NULL || s->suffrage != CR_LEARNER ||
        !s->promote || p->match < p->round_index) {
        return;
    }
    if (c->now - p->round_start > c->opt.election_timeout) {
        p->rounds++;
        p->round_index = cr__log_last(c);
        p->round_start = c->now;
        cr__trace(c, "catch_up_round", NULL, p->id, c->term, p->round_index);
        return;
    }
    if (can_change(c) != 0) {
        return; /* caught up; promoted once the change is allowed */
    }
    next = c->config;
    for (unsigned i = 0; i < next.n; i++) {
        if (next.servers[i].id == p->id) {
            next.servers[i].suffrage = CR_VOTER;
            next.servers[i].promote = false;
        }
    }
    if (append_config(c, &next) != 0) {
        cr__note_oom(c);
        return;
    }
    cr__trace(c, "learner_promoted", NULL, p->id, c->term, cr__log_last(c));
}

void cr__membership_tick(struct cr_core *c)
{
    for (unsigned i = 0; i < c->n_progress && c->role == CR_LEADER; i++) {
        cr__catch_up(c, &c->progress[i]);
    }
    if (c->role == CR_LEADER && c->transfer_target != 0) {
        struct cr__progress *p = cr__progress_get(c, c->transfer_target);
        if (p != NULL) {
            cr__transfer_check(c, p);
        }
    }
}

static struct cr__progress *best_voter(struct cr_core *c)
{
    struct cr__progress *best = NULL;
    for (unsigned i = 0; i < c->n_progress; i++) {
        struct cr__progress *p = &c->progress[i];
        if (cr__is_voter(c, p->id) &&
            (best == NULL || p->match > best->match)) {
            best = p;
        }
    }
    return best;
}

static void send_timeout_now(struct cr_core *c, cr_id to)
{
    struct cr_message m;
    memset(&m, 0, sizeof m);
    m.type = CR_MSG_TIMEOUT_NOW;
    m.to = to;
    cr__send(c, &m, false);
    cr__trace(c, "timeout_now_sent", NULL, to, c->term, cr__log_last(c));
}

void cr__after_commit(struct cr_core *c)
{
    if (c->role != CR_LEADER) {
        return;
    }
    if (c->config_index <= c->commit && !cr__is_voter(c, c->id)) {
        /* §4.2.2: a leader that removed itself steps down once the new
         * configuration is committed. Hand over at once to a caught-up
         * voter rather than leave the cluster to time out. */
        struct cr__progress *p = best_voter(c);
        if (p != NULL && p->match == cr__log_last(c)) {
            send_timeout_now(c, p->id);
        }
        cr__trace(c, "leader_removed", NULL, 0, c->term, c->config_index);
        cr__become_follower(c, c->term, 0);
        return;
    }
    for (unsigned i = 0; i < c->n_progress && c->role == CR_LEADER; i++) {
        cr__catch_up(c, &c->progress[i]);
    }
    cr__reads_check(c);
}

int cr__transfer(struct cr_core *c, cr_id target)
{
    struct cr__progress *p;
    if (c->role != CR_LEADER) {
        return c->leader != 0 ? CR_ENOTLEADER : CR_ENOLEADER;
    }
    if (c->transfer_target != 0) {
        return CR_ETRANSFER;
    }
    if (target == c->id) {
        return 0; /* already leads */
    }
    if (target == 0) {
        p = best_voter(c);
    } else {
        p = cr__is_voter(c, target) ? cr__progress_get(c, target) : NULL;
    }
    if (p == NULL) {
        return CR_ENOTFOUND;
    }
    /* §3.10: stop accepting proposals, bring the target up to date, then
     * tell it to start an election at once; give up after an election
     * timeout. */
    c->transfer_target = p->id;
    c->transfer_deadline = c->now + c->opt.election_timeout;
    cr__trace(c, "transfer_started", NULL, p->id, c->term, cr__log_last(c));
    cr__transfer_check(c, p);
    if (c->transfer_target != 0 && p->match < cr__log_last(c)) {
        cr__send_append(c, p, false);
    }
    return 0;
}

void cr__transfer_check(struct cr_core *c, struct cr__progress *p)
{
    if (c->role != CR_LEADER || c->transfer_target != p->id ||
        p->match < cr__log_last(c)) {
        return;
    }
    send_timeout_now(c, p->id);
}

void cr__transfer_abort(struct cr_core *c, const char *reason)
{
    cr__trace(c, "transfer_aborted", reason, c->transfer_target, c->term, 0);
    c->transfer_target = 0;
}

void cr__recv_timeout_now(struct cr_core *c, const struct cr_message *m)
{
    if (m->term < c->term || c->role == CR_LEADER || !cr__is_voter(c, c->id)) {
        return;
    }
    cr__trace(c, "timeout_now_received", NULL, m->from, m->term, 0);
    /* §3.10: campaign at once, skipping pre-vote; the requests carry the
     * transfer flag so that voters set aside their leader lease. */
    cr__start_election(c, false, true);
}
