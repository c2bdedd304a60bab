/* Elections: timeouts, pre-vote, votes (Raft §5.2, §5.4.1; dissertation
 * §3.4, §4.2.3, §9.6). */
#include <string.h>

#include "core_impl.h"

void cr__become_follower(struct cr_core *c, cr_term term, cr_id leader)
{
    bool was_leader = c->role == CR_LEADER;
    enum cr_role old = c->role;
    if (term > c->term) {
        /* §5.1: a new term starts with no vote cast in it. */
        cr__set_hard_state(c, term, 0);
    }
    if (was_leader) {
        cr__reads_fail(c, CR_ENOTLEADER);
        if (c->transfer_target != 0) {
            c->transfer_target = 0;
        }
    }
    c->role = CR_FOLLOWER;
    c->leader = leader;
    c->transferring_election = false;
    if (leader != 0) {
        c->heard_leader = true;
        c->last_leader_contact = c->now;
    }
    cr__reset_election_timer(c);
    if (old != CR_FOLLOWER) {
        cr__trace(c, "became_follower", was_leader ? "stepped down" : NULL,
                  leader, c->term, 0);
    }
}

static int config_pos(const struct cr_core *c, cr_id id)
{
    for (unsigned i = 0; i < c->config.n; i++) {
        if (c->config.servers[i].id == id) {
            return (int)i;
        }
    }
    return -1;
}

/* Whether this server may start an election. A voter of the latest
 * configuration may. So may a server that the latest configuration
 * removes while that change is not known to be committed: it may be
 * truncated away, and until it commits the cluster can still need this
 * server to elect a leader (§4.2.2). Such a candidate counts votes in its
 * latest configuration, without its own. Learners, joining servers and
 * servers whose removal committed never campaign (§4.2.3). */
bool cr__can_campaign(const struct cr_core *c)
{
    struct cr_config prev;
    cr_index index;
    const struct cr_server *s;
    if (cr__is_voter(c, c->id)) {
        return true;
    }
    if (c->config_index <= c->commit || c->config_index == 0 ||
        cr_config_get(&c->config, c->id) != NULL ||
        !cr__log_config_at(c, c->config_index - 1, &prev, &index)) {
        return false;
    }
    s = cr_config_get(&prev, c->id);
    return s != NULL && s->suffrage == CR_VOTER;
}

void cr__start_election(struct cr_core *c, bool pre_vote, bool transfer)
{
    struct cr_message m;
    cr_term request_term;

    if (c->role == CR_LEADER || !cr__can_campaign(c)) {
        return;
    }
    memset(c->votes, 0, sizeof c->votes);
    c->leader = 0;
    c->heard_leader = false;
    cr__reset_election_timer(c);
    if (pre_vote) {
        /* §9.6: ask first whether we could win, without touching our term,
         * so that a partitioned server does not disrupt the cluster when
         * it returns. */
        c->role = CR_PRE_CANDIDATE;
        request_term = c->term + 1;
        cr__trace(c, "became_pre_candidate", NULL, 0, request_term, 0);
    } else {
        c->role = CR_CANDIDATE;
        cr__set_hard_state(c, c->term + 1, c->id);
        /* Our own vote counts only once it is durable: otherwise a crash
         * could let us vote twice in this term. */
        c->self_vote_seq = CR__SEQ_PENDING;
        c->transferring_election = transfer;
        request_term = c->term;
        cr__trace(c, "became_candidate",
                  transfer ? "leadership transfer" : NULL, 0, request_term, 0);
    }
    for (unsigned i = 0; i < c->config.n; i++) {
        const struct cr_server *s = &c->config.servers[i];
        if (s->id == c->id || s->suffrage != CR_VOTER) {
            continue;
        }
        memset(&m, 0, sizeof m);
        m.type = CR_MSG_REQUEST_VOTE;
        m.to = s->id;
        m.term = request_term;
        m.request_vote.last_index = cr__log_last(c);
        m.request_vote.last_term = cr__log_term(c, cr__log_last(c));
        m.request_vote.pre_vote = pre_vote;
        m.request_vote.transfer = transfer;
        /* A request may leave before our vote is durable: we do not count
         * that vote until it is (see maybe_win). */
        cr__send(c, &m, false);
    }
    cr__maybe_win(c);
}

void cr__maybe_win(struct cr_core *c)
{
    unsigned granted = 0;
    bool self;
    if (c->role != CR_PRE_CANDIDATE && c->role != CR_CANDIDATE) {
        return;
    }
    self =
        c->role == CR_PRE_CANDIDATE || (c->self_vote_seq != CR__SEQ_PENDING &&
                                        c->self_vote_seq <= c->durable_seq);
    for (unsigned i = 0; i < c->config.n; i++) {
        const struct cr_server *s = &c->config.servers[i];
        if (s->suffrage != CR_VOTER) {
            continue;
        }
        if (s->id == c->id ? self : c->votes[i]) {
            granted++;
        }
    }
    if (granted < cr__quorum(c)) {
        return;
    }
    if (c->role == CR_PRE_CANDIDATE) {
        cr__start_election(c, false, false);
    } else {
        cr__become_leader(c);
    }
}

void cr__election_tick(struct cr_core *c)
{
    if (c->now < c->election_deadline) {
        return;
    }
    if (!cr__can_campaign(c)) {
        cr__reset_election_timer(c);
        return;
    }
    /* §5.2: no word from a leader (or no winner) within the timeout. */
    cr__start_election(c, c->opt.pre_vote, false);
}

static void reply_vote(struct cr_core *c,
                       const struct cr_message *m,
                       bool granted,
                       const char *reason)
{
    struct cr_message r;
    bool pre = m->request_vote.pre_vote;
    memset(&r, 0, sizeof r);
    r.type = CR_MSG_REQUEST_VOTE_RESULT;
    r.to = m->from;
    /* A granted pre-vote answers in the term it was asked about, which we
     * have not adopted; anything else carries our own term. */
    r.term = pre && granted ? m->term : c->term;
    r.request_vote_result.granted = granted;
    r.request_vote_result.pre_vote = pre;
    r.context = m->context;
    cr__trace(c,
              granted ? (pre ? "pre_vote_granted" : "vote_granted")
                      : (pre ? "pre_vote_refused" : "vote_refused"),
              reason, m->from, m->term, 0);
    /* A real vote changes what we must remember: answer only once it is
     * durable. A pre-vote changes nothing. */
    cr__send(c, &r, !pre);
}

void cr__recv_request_vote(struct cr_core *c, const struct cr_message *m)
{
    const struct cr_request_vote *rv = &m->request_vote;
    cr_index last = cr__log_last(c);
    cr_term last_term = cr__log_term(c, last);
    bool up_to_date;

    if (m->term > c->term && !rv->transfer && cr__lease_active(c)) {
        /* §4.2.3: a live leader exists; neither adopt the term nor vote.
         * No answer either: the candidate's timer handles it. */
        cr__trace(c, rv->pre_vote ? "pre_vote_ignored" : "vote_ignored",
                  "heard from a leader within the election timeout", m->from,
                  m->term, 0);
        return;
    }
    if (m->term < c->term) {
        reply_vote(c, m, false, "stale term");
        return;
    }
    if (!rv->pre_vote && m->term > c->term) {
        cr__become_follower(c, m->term, 0);
    }
    /* §5.4.1: vote only for a candidate whose log is at least as
     * up-to-date as ours (last term, then last index). */
    up_to_date = rv->last_term > last_term ||
                 (rv->last_term == last_term && rv->last_index >= last);
    if (rv->pre_vote) {
        if (m->term <= c->term) {
            reply_vote(c, m, false, "stale term");
        } else if (!up_to_date) {
            reply_vote(c, m, false, "candidate log is behind");
        } else {
            reply_vote(c, m, true, NULL);
        }
        return;
    }
    if (c->vote != 0 && c->vote != m->from) {
        reply_vote(c, m, false, "already voted in this term");
        return;
    }
    if (c->vote == 0 && c->leader != 0) {
        reply_vote(c, m, false, "a leader of this term is known");
        return;
    }
    if (!up_to_date) {
        reply_vote(c, m, false, "candidate log is behind");
        return;
    }
    cr__set_hard_state(c, c->term, m->from);
    cr__reset_election_timer(c);
    reply_vote(c, m, true, NULL);
}

void cr__recv_request_vote_result(struct cr_core *c, const struct cr_message *m)
{
    const struct cr_request_vote_result *r = &m->request_vote_result;
    int pos;
    if (r->pre_vote) {
        if (r->granted) {
            if (c->role != CR_PRE_CANDIDATE || m->term != c->term + 1) {
                return;
            }
        } else {
            if (m->term > c->term) {
                cr__become_follower(c, m->term, 0);
            }
            return;
        }
    } else {
        if (m->term > c->term) {
            cr__become_follower(c, m->term, 0);
            return;
        }
        if (c->role != CR_CANDIDATE || m->term != c->term) {
            return;
        }
        if (!r->granted) {
            return;
        }
    }
    pos = config_pos(c, m->from);
    if (pos < 0) {
        return;
    }
    c->votes[pos] = true;
    cr__maybe_win(c);
}
