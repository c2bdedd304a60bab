/* The transport's conversions between raft.proto and the core's messages
 * (src/transport/codec.c): round trips of every message between servers,
 * the values the original educational Raft sends (-1 for "no previous
 * entry", no cluster id), and the refusal of bad numbers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "transport_impl.h"

#define CLUSTER 0xC1u

/* Packs the core message m as we would send it, unpacks it as the peer
 * receives it, and converts it back. */
static int round_trip(enum cr__method method,
                      const struct cr_message *m,
                      struct cr_message *out,
                      struct cr_entry **entries)
{
    grpc_byte_buffer *bb = cr__peer_to_pb(m, m->from, CLUSTER, "h:1");
    ProtobufCMessage *pb;
    const char *why;
    int rv;
    assert_non_null(bb);
    pb = cr_grpc_unpack(cr__methods[method].request, bb, 1u << 20);
    grpc_byte_buffer_destroy(bb);
    assert_non_null(pb);
    rv = cr__peer_from_pb(method, pb, CLUSTER, out, entries, &why);
    /* The entries borrow from pb: copy what the test looks at. */
    if (rv == 0 && *entries != NULL) {
        for (unsigned i = 0; i < out->append_entries.n_entries; i++) {
            size_t len = out->append_entries.entries[i].buf.len;
            void *copy = malloc(len + 1);
            if (len > 0) {
                memcpy(copy, out->append_entries.entries[i].buf.base, len);
            }
            out->append_entries.entries[i].buf.base = copy;
        }
    }
    protobuf_c_message_free_unpacked(pb, NULL);
    return rv;
}

static void free_entries(struct cr_message *m, struct cr_entry *entries)
{
    if (entries == NULL) {
        return;
    }
    for (unsigned i = 0; i < m->append_entries.n_entries; i++) {
        free(entries[i].buf.base);
    }
    free(entries);
}

static void request_vote_round_trip(void **state)
{
    struct cr_message m, out;
    struct cr_entry *e;
    (void)state;
    memset(&m, 0, sizeof m);
    m.type = CR_MSG_REQUEST_VOTE;
    m.from = 3;
    m.term = 7;
    m.request_vote.last_index = 42;
    m.request_vote.last_term = 6;
    m.request_vote.pre_vote = true;
    m.request_vote.transfer = true;
    assert_int_equal(round_trip(CR__M_REQUEST_VOTE, &m, &out, &e), 0);
    assert_int_equal(out.type, CR_MSG_REQUEST_VOTE);
    assert_int_equal(out.from, 3);
    assert_int_equal(out.term, 7);
    assert_int_equal(out.cluster_id, CLUSTER);
    assert_int_equal(out.request_vote.last_index, 42);
    assert_int_equal(out.request_vote.last_term, 6);
    assert_true(out.request_vote.pre_vote);
    assert_true(out.request_vote.transfer);
}

static void append_entries_round_trip(void **state)
{
    struct cr_message m, out;
    struct cr_entry entries[3];
    struct cr_entry *e;
    (void)state;
    memset(&m, 0, sizeof m);
    memset(entries, 0, sizeof entries);
    entries[0].term = 4;
    entries[0].type = CR_ENTRY_COMMAND;
    entries[0].buf.base = "abc";
    entries[0].buf.len = 3;
    entries[1].term = 5;
    entries[1].type = CR_ENTRY_NOOP;
    entries[2].term = 5;
    entries[2].type = CR_ENTRY_CONFIG;
    entries[2].buf.base = "\x01\x00";
    entries[2].buf.len = 2;
    m.type = CR_MSG_APPEND_ENTRIES;
    m.from = 2;
    m.term = 5;
    m.append_entries.prev_index = 10;
    m.append_entries.prev_term = 4;
    m.append_entries.commit = 9;
    m.append_entries.seq = 77;
    m.append_entries.n_entries = 3;
    m.append_entries.entries = entries;
    assert_int_equal(round_trip(CR__M_APPEND_ENTRIES, &m, &out, &e), 0);
    assert_int_equal(out.type, CR_MSG_APPEND_ENTRIES);
    assert_int_equal(out.from, 2);
    assert_int_equal(out.append_entries.prev_index, 10);
    assert_int_equal(out.append_entries.prev_term, 4);
    assert_int_equal(out.append_entries.commit, 9);
    assert_int_equal(out.append_entries.seq, 77);
    assert_int_equal(out.append_entries.n_entries, 3);
    assert_int_equal(out.append_entries.entries[0].term, 4);
    assert_int_equal(out.append_entries.entries[0].type, CR_ENTRY_COMMAND);
    assert_int_equal(out.append_entries.entries[0].buf.len, 3);
    assert_memory_equal(out.append_entries.entries[0].buf.base, "abc", 3);
    assert_int_equal(out.append_entries.entries[1].type, CR_ENTRY_NOOP);
    assert_int_equal(out.append_entries.entries[2].type, CR_ENTRY_CONFIG);
    assert_int_equal(out.append_entries.entries[2].buf.len, 2);
    free_entries(&out, e);
}

static void answers_round_trip(void **state)
{
    struct cr_message m, out;
    grpc_byte_buffer *bb;
    ProtobufCMessage *pb;
    (void)state;
    memset(&m, 0, sizeof m);
    m.type = CR_MSG_APPEND_ENTRIES_RESULT;
    m.from = 2;
    m.term = 5;
    m.append_entries_result.success = false;
    m.append_entries_result.index = 10;
    m.append_entries_result.hint_index = 6;
    m.append_entries_result.hint_term = 3;
    m.append_entries_result.last_index = 8;
    m.append_entries_result.seq = 9;
    bb = cr__peer_to_pb(&m, 2, CLUSTER, "h:1");
    pb = cr_grpc_unpack(cr__methods[CR__M_APPEND_ENTRIES].response, bb,
                        1u << 20);
    grpc_byte_buffer_destroy(bb);
    assert_non_null(pb);
    assert_int_equal(
        cr__answer_from_pb(CR__M_APPEND_ENTRIES, pb, 1, 2, CLUSTER, &out), 0);
    protobuf_c_message_free_unpacked(pb, NULL);
    assert_int_equal(out.type, CR_MSG_APPEND_ENTRIES_RESULT);
    assert_int_equal(out.from, 2);
    assert_int_equal(out.to, 1);
    assert_false(out.append_entries_result.success);
    assert_int_equal(out.append_entries_result.index, 10);
    assert_int_equal(out.append_entries_result.hint_index, 6);
    assert_int_equal(out.append_entries_result.hint_term, 3);
    assert_int_equal(out.append_entries_result.last_index, 8);
    assert_int_equal(out.append_entries_result.seq, 9);

    memset(&m, 0, sizeof m);
    m.type = CR_MSG_REQUEST_VOTE_RESULT;
    m.term = 4;
    m.request_vote_result.granted = true;
    m.request_vote_result.pre_vote = true;
    bb = cr__peer_to_pb(&m, 3, CLUSTER, "h:1");
    pb = cr_grpc_unpack(cr__methods[CR__M_REQUEST_VOTE].response, bb, 1u << 20);
    grpc_byte_buffer_destroy(bb);
    assert_int_equal(
        cr__answer_from_pb(CR__M_REQUEST_VOTE, pb, 1, 3, CLUSTER, &out), 0);
    protobuf_c_message_free_unpacked(pb, NULL);
    assert_true(out.request_vote_result.granted);
    assert_true(out.request_vote_result.pre_vote);
    assert_int_equal(out.term, 4);
}

/* What the original sends: no cluster id, -1 for "no previous entry",
 * entries carrying the command as text. */
static void original_shapes_accepted(void **state)
{
    Raft__AppendEntriesRequest r;
    Raft__LogEntry le;
    Raft__LogEntry *lep = &le;
    struct cr_message out;
    struct cr_entry *e;
    const char *why;
    (void)state;
    raft__append_entries_request__init(&r);
    raft__log_entry__init(&le);
    r.term = 1;
    r.leader_id = 1;
    r.prev_log_index = -1;
    r.prev_log_term = 0;
    r.leader_commit = 0;
    le.term = 1;
    le.index = 0;
    le.command = "ADD 5 3";
    r.entries = &lep;
    r.n_entries = 1;
    assert_int_equal(cr__peer_from_pb(CR__M_APPEND_ENTRIES, &r.base, CLUSTER,
                                      &out, &e, &why),
                     0);
    assert_int_equal(out.append_entries.prev_index, 0);
    assert_int_equal(out.cluster_id, CLUSTER);
    assert_int_equal(out.append_entries.entries[0].buf.len, 7);
    assert_memory_equal(out.append_entries.entries[0].buf.base, "ADD 5 3", 7);
    free(e);
}

/* Bad numbers are refused with a reason; another cluster with
 * CR_ECLUSTER. */
static void bad_numbers_refused(void **state)
{
    Raft__RequestVoteRequest v;
    Raft__AppendEntriesRequest a;
    Raft__LogEntry le[2];
    Raft__LogEntry *lep[2] = {&le[0], &le[1]};
    struct cr_message out;
    struct cr_entry *e;
    const char *why = NULL;
    (void)state;
    raft__request_vote_request__init(&v);
    v.term = -1;
    v.candidate_id = 2;
    assert_int_equal(
        cr__peer_from_pb(CR__M_REQUEST_VOTE, &v.base, CLUSTER, &out, &e, &why),
        CR_EINVAL);
    assert_non_null(why);
    v.term = 1;
    v.candidate_id = 0;
    assert_int_equal(
        cr__peer_from_pb(CR__M_REQUEST_VOTE, &v.base, CLUSTER, &out, &e, &why),
        CR_EINVAL);
    v.candidate_id = 2;
    v.last_log_index = -2;
    assert_int_equal(
        cr__peer_from_pb(CR__M_REQUEST_VOTE, &v.base, CLUSTER, &out, &e, &why),
        CR_EINVAL);
    v.last_log_index = 0;
    v.cluster_id = CLUSTER + 1;
    assert_int_equal(
        cr__peer_from_pb(CR__M_REQUEST_VOTE, &v.base, CLUSTER, &out, &e, &why),
        CR_ECLUSTER);

    raft__append_entries_request__init(&a);
    raft__log_entry__init(&le[0]);
    raft__log_entry__init(&le[1]);
    a.term = 5;
    a.leader_id = 1;
    a.prev_log_index = 3;
    a.prev_log_term = 2;
    a.entries = lep;
    a.n_entries = 2;
    le[0].term = 4;
    le[1].term = 3; /* terms going backwards */
    assert_int_equal(cr__peer_from_pb(CR__M_APPEND_ENTRIES, &a.base, CLUSTER,
                                      &out, &e, &why),
                     CR_EINVAL);
    assert_null(e);
    le[1].term = 6; /* above the leader's term */
    assert_int_equal(cr__peer_from_pb(CR__M_APPEND_ENTRIES, &a.base, CLUSTER,
                                      &out, &e, &why),
                     CR_EINVAL);
    le[1].term = 4;
    le[1].index = 9; /* not prev + 2 */
    assert_int_equal(cr__peer_from_pb(CR__M_APPEND_ENTRIES, &a.base, CLUSTER,
                                      &out, &e, &why),
                     CR_EINVAL);
    le[1].index = 5;
    assert_int_equal(cr__peer_from_pb(CR__M_APPEND_ENTRIES, &a.base, CLUSTER,
                                      &out, &e, &why),
                     0);
    free(e);
}

/* Garbage never unpacks into a message, and an oversized one is
 * refused before it is parsed. */
static void garbage_refused(void **state)
{
    uint8_t junk[64];
    grpc_slice s;
    grpc_byte_buffer *bb;
    ProtobufCMessage *pb;
    (void)state;
    memset(junk, 0xff, sizeof junk);
    s = grpc_slice_from_copied_buffer((const char *)junk, sizeof junk);
    bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    pb =
        cr_grpc_unpack(&raft__append_entries_request__descriptor, bb, 1u << 20);
    assert_null(pb);
    pb = cr_grpc_unpack(&raft__append_entries_request__descriptor, bb, 16);
    assert_null(pb);
    grpc_byte_buffer_destroy(bb);
    assert_null(cr_grpc_unpack(&raft__append_entries_request__descriptor, NULL,
                               1u << 20));
}

/* Configurations survive the trip, learners and addresses included, and
 * malformed ones are refused. */
static void configuration_round_trip(void **state)
{
    struct cr_config c, back;
    struct cr__pb_config pb;
    const char *why;
    (void)state;
    memset(&c, 0, sizeof c);
    assert_int_equal(cr_config_add(&c, 1, CR_VOTER, "a:1"), 0);
    assert_int_equal(cr_config_add(&c, 4, CR_LEARNER, "d:4"), 0);
    c.servers[1].promote = true;
    cr__config_to_pb(&c, 17, 17, &pb);
    assert_int_equal(pb.pb.n_nodes, 1);
    assert_int_equal(pb.pb.nodes[0], 1);
    assert_int_equal(cr__config_from_pb(&pb.pb, &back, &why), 0);
    assert_true(cr_config_equal(&c, &back));
    pb.servers[1].id = 0;
    assert_int_equal(cr__config_from_pb(&pb.pb, &back, &why), CR_EINVAL);
    pb.servers[1].id = 1; /* twice */
    assert_int_equal(cr__config_from_pb(&pb.pb, &back, &why), CR_EINVAL);
    assert_int_equal(cr__config_from_pb(NULL, &back, &why), CR_EINVAL);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(request_vote_round_trip),
        cmocka_unit_test(append_entries_round_trip),
        cmocka_unit_test(answers_round_trip),
        cmocka_unit_test(original_shapes_accepted),
        cmocka_unit_test(bad_numbers_refused),
        cmocka_unit_test(garbage_refused),
        cmocka_unit_test(configuration_round_trip),
    };
    if (argc > 1) {
        cmocka_set_test_filter(argv[1]);
    }
    return cmocka_run_group_tests(tests, NULL, NULL);
}
