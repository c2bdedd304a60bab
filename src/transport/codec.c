/* Conversions between raft.proto messages and the core's messages, with
 * every check that input from the network needs. */
#include <stdlib.h>
#include <string.h>

#include "transport_impl.h"

/* ---------------------------------------------------------------------------
 * Configurations
 * ------------------------------------------------------------------------- */

/* Fills pb (and its arrays, from the caller's storage) from c. */
void cr__config_to_pb(const struct cr_config *c,
                      cr_index index,
                      uint64_t version,
                      struct cr__pb_config *out)
{
    unsigned voters = 0;
    raft__cluster_config__init(&out->pb);
    for (unsigned i = 0; i < c->n; i++) {
        Raft__Server *s = &out->servers[i];
        raft__server__init(s);
        s->id = (int32_t)c->servers[i].id;
        s->address = (char *)(uintptr_t)c->servers[i].address;
        s->role = c->servers[i].suffrage == CR_VOTER ? RAFT__ROLE__VOTER
                                                     : RAFT__ROLE__LEARNER;
        s->promote = c->servers[i].promote;
        out->server_ptrs[i] = s;
        if (c->servers[i].suffrage == CR_VOTER) {
            out->nodes[voters++] = (int32_t)c->servers[i].id;
        }
    }
    out->pb.n_servers = c->n;
    out->pb.servers = out->server_ptrs;
    out->pb.n_nodes = voters;
    out->pb.nodes = out->nodes;
    out->pb.version = (int32_t)version;
    out->pb.index = (int64_t)index;
}

int cr__config_from_pb(const Raft__ClusterConfig *pb,
                       struct cr_config *c,
                       const char **why)
{
    memset(c, 0, sizeof *c);
    if (pb == NULL) {
        *why = "missing configuration";
        return CR_EINVAL;
    }
    if (pb->n_servers > CR_SERVERS_MAX) {
        *why = "too many servers in the configuration";
        return CR_EINVAL;
    }
    for (size_t i = 0; i < pb->n_servers; i++) {
        const Raft__Server *s = pb->servers[i];
        int rv;
        if (s->id <= 0) {
            *why = "a server id must be positive";
            return CR_EINVAL;
        }
        rv = cr_config_add(
            c, (cr_id)s->id,
            s->role == RAFT__ROLE__LEARNER ? CR_LEARNER : CR_VOTER, s->address);
        if (rv != 0) {
            *why = rv == CR_EEXIST ? "a server appears twice"
                                   : "a server address is too long";
            return CR_EINVAL;
        }
        c->servers[c->n - 1].promote =
            s->promote && s->role == RAFT__ROLE__LEARNER;
    }
    if (cr_config_voters(c) == 0) {
        *why = "a configuration needs a voter";
        return CR_EINVAL;
    }
    return 0;
}

/* ---------------------------------------------------------------------------
 * Peer messages: proto -> core
 * ------------------------------------------------------------------------- */

/* -1 ("no previous entry" in the original) means 0; other negatives are
 * bad input. */
static bool index_ok(int64_t v, cr_index *out)
{
    if (v < -1) {
        return false;
    }
    *out = v < 0 ? 0 : (cr_index)v;
    return true;
}

static bool term_ok(int64_t v, cr_term *out)
{
    if (v < 0) {
        return false;
    }
    *out = (cr_term)v;
    return true;
}

static int cluster_check(uint64_t theirs, uint64_t ours, uint64_t *out)
{
    /* 0: an old peer or a harness that does not send one. */
    if (theirs != 0 && ours != 0 && theirs != ours) {
        return CR_ECLUSTER;
    }
    *out = ours;
    return 0;
}

int cr__peer_from_pb(enum cr__method m,
                     const ProtobufCMessage *pb,
                     uint64_t cluster_id,
                     struct cr_message *out,
                     struct cr_entry **entries,
                     const char **why)
{
    memset(out, 0, sizeof *out);
    *entries = NULL;
    *why = "bad numbers";
    switch (m) {
        case CR__M_REQUEST_VOTE: {
            const Raft__RequestVoteRequest *r = (const void *)pb;
            out->type = CR_MSG_REQUEST_VOTE;
            if (!term_ok(r->term, &out->term) || r->candidate_id <= 0 ||
                !index_ok(r->last_log_index, &out->request_vote.last_index) ||
                !term_ok(r->last_log_term, &out->request_vote.last_term)) {
                *why =
                    "terms and indexes must not be negative, the "
                    "candidate id must be positive";
                return CR_EINVAL;
            }
            out->from = (cr_id)r->candidate_id;
            out->request_vote.pre_vote = r->pre_vote;
            out->request_vote.transfer = r->transfer;
            return cluster_check(r->cluster_id, cluster_id, &out->cluster_id);
        }
        case CR__M_APPEND_ENTRIES: {
            const Raft__AppendEntriesRequest *r = (const void *)pb;
            struct cr_append_entries *ae = &out->append_entries;
            out->type = CR_MSG_APPEND_ENTRIES;
            if (!term_ok(r->term, &out->term) || r->leader_id <= 0 ||
                !index_ok(r->prev_log_index, &ae->prev_index) ||
                !term_ok(r->prev_log_term, &ae->prev_term) ||
                !index_ok(r->leader_commit, &ae->commit)) {
                *why =
                    "terms and indexes must not be negative, the leader "
                    "id must be positive";
                return CR_EINVAL;
            }
            out->from = (cr_id)r->leader_id;
            ae->seq = r->seq;
            if (r->n_entries > 0) {
                cr_term last = ae->prev_term;
                struct cr_entry *e = calloc(r->n_entries, sizeof *e);
                if (e == NULL) {
                    *why = "out of memory";
                    return CR_ENOMEM;
                }
                for (size_t i = 0; i < r->n_entries; i++) {
                    const Raft__LogEntry *le = r->entries[i];
                    if (le->term <= 0 || (cr_term)le->term < last ||
                        le->term > r->term ||
                        (le->index != 0 &&
                         le->index != (int64_t)(ae->prev_index + 1 + i))) {
                        free(e);
                        *why =
                            "entries must have positive, non-decreasing "
                            "terms no greater than the leader's and "
                            "consecutive indexes";
                        return CR_EINVAL;
                    }
                    last = (cr_term)le->term;
                    e[i].term = last;
                    switch (le->type) {
                        case RAFT__ENTRY_TYPE__ENTRY_CONFIG:
                            e[i].type = CR_ENTRY_CONFIG;
                            break;
                        case RAFT__ENTRY_TYPE__ENTRY_NOOP:
                            e[i].type = CR_ENTRY_NOOP;
                            break;
                        default:
                            e[i].type = CR_ENTRY_COMMAND;
                            break;
                    }
                    if (le->data.len > 0) {
                        e[i].buf.base = le->data.data;
                        e[i].buf.len = le->data.len;
                    } else if (le->command != NULL && le->command[0] != 0) {
                        e[i].buf.base = le->command;
                        e[i].buf.len = strlen(le->command);
                    }
                }
                ae->entries = e;
                ae->n_entries = (unsigned)r->n_entries;
                *entries = e;
            }
            return cluster_check(r->cluster_id, cluster_id, &out->cluster_id);
        }
        case CR__M_TIMEOUT_NOW: {
            const Raft__TimeoutNowRequest *r = (const void *)pb;
            out->type = CR_MSG_TIMEOUT_NOW;
            if (!term_ok(r->term, &out->term) || r->leader_id <= 0) {
                return CR_EINVAL;
            }
            out->from = (cr_id)r->leader_id;
            return cluster_check(r->cluster_id, cluster_id, &out->cluster_id);
        }
        case CR__M_READ_INDEX: {
            const Raft__ReadIndexRequest *r = (const void *)pb;
            out->type = CR_MSG_READ_INDEX;
            if (!term_ok(r->term, &out->term) || r->follower_id <= 0) {
                return CR_EINVAL;
            }
            out->from = (cr_id)r->follower_id;
            out->read_index.id = r->id;
            return cluster_check(r->cluster_id, cluster_id, &out->cluster_id);
        }
        default:
            *why = "not a message between servers";
            return CR_EINVAL;
    }
}

/* Answers (responses to our calls), proto -> core. `to` is us, `peer`
 * the server we called. */
int cr__answer_from_pb(enum cr__method m,
                       const ProtobufCMessage *pb,
                       cr_id self,
                       cr_id peer,
                       uint64_t cluster_id,
                       struct cr_message *out)
{
    memset(out, 0, sizeof *out);
    out->from = peer;
    out->to = self;
    switch (m) {
        case CR__M_REQUEST_VOTE: {
            const Raft__RequestVoteResponse *r = (const void *)pb;
            out->type = CR_MSG_REQUEST_VOTE_RESULT;
            if (!term_ok(r->term, &out->term)) {
                return CR_EINVAL;
            }
            out->request_vote_result.granted = r->vote_granted;
            out->request_vote_result.pre_vote = r->pre_vote;
            return cluster_check(r->cluster_id, cluster_id, &out->cluster_id);
        }
        case CR__M_APPEND_ENTRIES: {
            const Raft__AppendEntriesResponse *r = (const void *)pb;
            struct cr_append_entries_result *a = &out->append_entries_result;
            out->type = CR_MSG_APPEND_ENTRIES_RESULT;
            if (!term_ok(r->term, &out->term) ||
                !index_ok(r->index, &a->index) ||
                !index_ok(r->hint_index, &a->hint_index) ||
                !term_ok(r->hint_term, &a->hint_term) ||
                !index_ok(r->last_log_index, &a->last_index)) {
                return CR_EINVAL;
            }
            a->success = r->success;
            a->seq = r->seq;
            return cluster_check(r->cluster_id, cluster_id, &out->cluster_id);
        }
        case CR__M_INSTALL_SNAPSHOT: {
            const Raft__InstallSnapshotResponse *r = (const void *)pb;
            struct cr_append_entries_result *a = &out->append_entries_result;
            out->type = CR_MSG_APPEND_ENTRIES_RESULT;
            if (!term_ok(r->term, &out->term) ||
                !index_ok(r->index, &a->index)) {
                return CR_EINVAL;
            }
            a->success = r->success;
            return cluster_check(r->cluster_id, cluster_id, &out->cluster_id);
        }
        case CR__M_READ_INDEX: {
            const Raft__ReadIndexResponse *r = (const void *)pb;
            out->type = CR_MSG_READ_INDEX_RESULT;
            if (!term_ok(r->term, &out->term) ||
                !index_ok(r->index, &out->read_index_result.index)) {
                return CR_EINVAL;
            }
            out->read_index_result.ok = r->ok;
            out->read_index_result.id = r->id;
            out->cluster_id = cluster_id;
            return 0;
        }
        default:
            return CR_EINVAL;
    }
}

/* ---------------------------------------------------------------------------
 * Peer messages: core -> proto (packed)
 * ------------------------------------------------------------------------- */

grpc_byte_buffer *cr__peer_to_pb(const struct cr_message *m,
                                 cr_id self,
                                 uint64_t cluster_id,
                                 const char *self_address)
{
    switch (m->type) {
        case CR_MSG_REQUEST_VOTE: {
            Raft__RequestVoteRequest r;
            raft__request_vote_request__init(&r);
            r.term = (int64_t)m->term;
            r.candidate_id = (int32_t)self;
            r.last_log_index = (int64_t)m->request_vote.last_index;
            r.last_log_term = (int64_t)m->request_vote.last_term;
            r.cluster_id = cluster_id;
            r.pre_vote = m->request_vote.pre_vote;
            r.transfer = m->request_vote.transfer;
            return cr_grpc_pack(&r.base);
        }
        case CR_MSG_REQUEST_VOTE_RESULT: {
            Raft__RequestVoteResponse r;
            raft__request_vote_response__init(&r);
            r.term = (int64_t)m->term;
            r.vote_granted = m->request_vote_result.granted;
            r.cluster_id = cluster_id;
            r.pre_vote = m->request_vote_result.pre_vote;
            r.voter_id = (int32_t)self;
            return cr_grpc_pack(&r.base);
        }
        case CR_MSG_APPEND_ENTRIES: {
            const struct cr_append_entries *ae = &m->append_entries;
            Raft__AppendEntriesRequest r;
            Raft__LogEntry *les = NULL;
            Raft__LogEntry **ptrs = NULL;
            grpc_byte_buffer *bb;
            raft__append_entries_request__init(&r);
            r.term = (int64_t)m->term;
            r.leader_id = (int32_t)self;
            r.prev_log_index = (int64_t)ae->prev_index;
            r.prev_log_term = (int64_t)ae->prev_term;
            r.leader_commit = (int64_t)ae->commit;
            r.cluster_id = cluster_id;
            r.seq = ae->seq;
            r.leader_address = (char *)(uintptr_t)self_address;
            if (ae->n_entries > 0) {
                les = malloc(ae->n_entries * sizeof *les);
                ptrs = malloc(ae->n_entries * sizeof *ptrs);
                if (les == NULL || ptrs == NULL) {
                    free(les);
                    free(ptrs);
                    return NULL;
                }
                for (unsigned i = 0; i < ae->n_entries; i++) {
                    const struct cr_entry *e = &ae->entries[i];
                    raft__log_entry__init(&les[i]);
                    les[i].term = (int64_t)e->term;
                    les[i].index = (int64_t)(ae->prev_index + 1 + i);
                    les[i].type = e->type == CR_ENTRY_CONFIG
                                      ? RAFT__ENTRY_TYPE__ENTRY_CONFIG
                                  : e->type == CR_ENTRY_NOOP
                                      ? RAFT__ENTRY_TYPE__ENTRY_NOOP
                                      : RAFT__ENTRY_TYPE__ENTRY_COMMAND;
                    les[i].data.data = e->buf.base;
                    les[i].data.len = e->buf.len;
                    ptrs[i] = &les[i];
                }
                r.entries = ptrs;
                r.n_entries = ae->n_entries;
            }
            bb = cr_grpc_pack(&r.base);
            free(les);
            free(ptrs);
            return bb;
        }
        case CR_MSG_APPEND_ENTRIES_RESULT: {
            const struct cr_append_entries_result *a =
                &m->append_entries_result;
            Raft__AppendEntriesResponse r;
            raft__append_entries_response__init(&r);
            r.term = (int64_t)m->term;
            r.success = a->success;
            r.cluster_id = cluster_id;
            r.follower_id = (int32_t)self;
            r.index = (int64_t)a->index;
            r.hint_index = (int64_t)a->hint_index;
            r.hint_term = (int64_t)a->hint_term;
            r.last_log_index = (int64_t)a->last_index;
            r.seq = a->seq;
            return cr_grpc_pack(&r.base);
        }
        case CR_MSG_TIMEOUT_NOW: {
            Raft__TimeoutNowRequest r;
            raft__timeout_now_request__init(&r);
            r.term = (int64_t)m->term;
            r.leader_id = (int32_t)self;
            r.cluster_id = cluster_id;
            return cr_grpc_pack(&r.base);
        }
        case CR_MSG_READ_INDEX: {
            Raft__ReadIndexRequest r;
            raft__read_index_request__init(&r);
            r.term = (int64_t)m->term;
            r.follower_id = (int32_t)self;
            r.cluster_id = cluster_id;
            r.id = m->read_index.id;
            return cr_grpc_pack(&r.base);
        }
        case CR_MSG_READ_INDEX_RESULT: {
            Raft__ReadIndexResponse r;
            raft__read_index_response__init(&r);
            r.term = (int64_t)m->term;
            r.ok = m->read_index_result.ok;
            r.index = (int64_t)m->read_index_result.index;
            r.id = m->read_index_result.id;
            return cr_grpc_pack(&r.base);
        }
        case CR_MSG_INSTALL_SNAPSHOT:
            break; /* streamed by the transport */
    }
    return NULL;
}
