/* Linearizable reads without log writes: ReadIndex (dissertation §6.4).
 *
 * The leader records its commit index as the read index, once it has
 * committed an entry of its own term (so that its commit index is at least
 * that of any earlier leader); it then confirms that it is still the leader
 * by a round of heartbeats: every AppendEntries carries a sequence number
 * and a read registered at sequence s is safe once a majority of voters
 * answered a message with seq >= s. The node answers the read once its
 * state machine has applied the read index. Followers ask the leader for a
 * read index (§6.4 "reads from followers").
 *
 * Reads are confirmed in batches (§6.4: "to improve efficiency further,
 * the leader can amortize the cost of confirming its leadership"): one
 * round of heartbeats is in flight at a time; reads that arrive meanwhile
 * wait for it to end and share the next one. Under load that is one round
 * per round trip instead of one per read; a lone read still gets its
 * round at once. */
#include <string.h>

#include "core_impl.h"

static void answer_remote(struct cr_core *c,
                          cr_id to,
                          uint64_t id,
                          bool ok,
                          cr_index index)
{
    struct cr_message m;
    memset(&m, 0, sizeof m);
    m.type = CR_MSG_READ_INDEX_RESULT;
    m.to = to;
    m.read_index_result.id = id;
    m.read_index_result.ok = ok;
    m.read_index_result.index = index;
    cr__send(c, &m, false);
}

int cr__read(struct cr_core *c, uint64_t id, cr_id from)
{
    struct cr__pending_read *r;
    if (c->role != CR_LEADER) {
        struct cr_message m;
        if (from != 0) {
            answer_remote(c, from, id, false, 0);
            return 0;
        }
        if (c->leader == 0) {
            return CR_ENOLEADER;
        }
        memset(&m, 0, sizeof m);
        m.type = CR_MSG_READ_INDEX;
        m.to = c->leader;
        m.read_index.id = id;
        cr__send(c, &m, false);
        return 0;
    }
    if (c->n_reads_pending == c->cap_reads_pending) {
        unsigned cap =
            c->cap_reads_pending == 0 ? 16 : 2 * c->cap_reads_pending;
        void *p = c->alloc->realloc(c->alloc->data, c->reads_pending,
                                    cap * sizeof *c->reads_pending);
        if (p == NULL) {
            if (from != 0) {
                answer_remote(c, from, id, false, 0);
            }
            return CR_ENOMEM;
        }
        c->reads_pending = p;
        c->cap_reads_pending = cap;
    }
    r = &c->reads_pending[c->n_reads_pending++];
    r->id = id;
    r->from = from;
    r->index = 0;
    r->seq = 0; /* joins the next round */
    cr__reads_check(c);
    return 0;
}

/* Whether a majority of voters answered a message sent at seq or later. */
static bool seq_confirmed(const struct cr_core *c, uint64_t seq)
{
    unsigned acks = cr__is_voter(c, c->id) ? 1 : 0;
    for (unsigned j = 0; j < c->n_progress; j++) {
        const struct cr__progress *p = &c->progress[j];
        if (p->acked_seq >= seq && cr__is_voter(c, p->id)) {
            acks++;
        }
    }
    return acks >= cr__quorum(c);
}

/* Starts a round for the reads waiting for one, unless a round is in
 * flight. Every message sent from now on carries seq or more, so an
 * append in flight confirms as well as a heartbeat. */
static bool start_round(struct cr_core *c)
{
    bool waiting = false;
    uint64_t seq;
    for (unsigned i = 0; i < c->n_reads_pending && !waiting; i++) {
        waiting = c->reads_pending[i].seq == 0;
    }
    if (!waiting ||
        (c->read_round_seq != 0 && !seq_confirmed(c, c->read_round_seq))) {
        return false;
    }
    seq = ++c->append_seq;
    for (unsigned i = 0; i < c->n_reads_pending; i++) {
        if (c->reads_pending[i].seq == 0) {
            c->reads_pending[i].seq = seq;
        }
    }
    c->read_round_seq = seq;
    /* Confirm leadership now rather than at the next heartbeat. */
    for (unsigned i = 0; i < c->n_progress; i++) {
        if (cr__is_voter(c, c->progress[i].id)) {
            cr__send_heartbeat(c, &c->progress[i]);
        }
    }
    return true;
}

/* Answers the reads whose round a majority confirmed, once the leader's
 * commit index is of its own term. Returns how many. */
static unsigned answer_confirmed(struct cr_core *c)
{
    unsigned kept = 0, answered = 0;
    bool ready_term = cr__log_term(c, c->commit) == c->term;
    for (unsigned i = 0; i < c->n_reads_pending; i++) {
        struct cr__pending_read *r = &c->reads_pending[i];
        if (r->index == 0 && ready_term) {
            r->index = c->commit;
        }
        if (r->index == 0 || r->seq == 0 || !seq_confirmed(c, r->seq)) {
            c->reads_pending[kept++] = *r;
            continue;
        }
        if (r->from == 0) {
            cr__read_result(c, r->id, 0, r->index);
        } else {
            answer_remote(c, r->from, r->id, true, r->index);
        }
        answered++;
    }
    c->n_reads_pending = kept;
    return answered;
}

void cr__reads_check(struct cr_core *c)
{
    if (c->role != CR_LEADER) {
        return;
    }
    /* A round that a single voter confirms at once may let the next
     * start at once too. */
    while (c->n_reads_pending > 0) {
        bool started = start_round(c);
        if (answer_confirmed(c) == 0 && !started) {
            break;
        }
    }
}

void cr__reads_fail(struct cr_core *c, int status)
{
    for (unsigned i = 0; i < c->n_reads_pending; i++) {
        struct cr__pending_read *r = &c->reads_pending[i];
        if (r->from == 0) {
            cr__read_result(c, r->id, status, 0);
        } else {
            answer_remote(c, r->from, r->id, false, 0);
        }
    }
    c->n_reads_pending = 0;
    c->read_round_seq = 0;
}

void cr__recv_read_index(struct cr_core *c, const struct cr_message *m)
{
    int rv = cr__read(c, m->read_index.id, m->from);
    if (rv != 0) {
        cr__note_oom(c);
    }
}

void cr__recv_read_index_result(struct cr_core *c, const struct cr_message *m)
{
    const struct cr_read_index_result *r = &m->read_index_result;
    if (m->term != c->term || m->from != c->leader) {
        return; /* from a leader we no longer follow: the node retries */
    }
    cr__read_result(c, r->id, r->ok ? 0 : CR_ENOTLEADER, r->index);
}
