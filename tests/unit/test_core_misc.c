/* Input validation, foreign clusters, error strings, batches, options. */
#include <string.h>

#include "fixture.h"

/* A snapshot of what a core's accessors say, to check nothing changed. */
struct view
{
    enum cr_role role;
    cr_term term;
    cr_id vote, leader;
    cr_index commit, first, last;
    cr_term last_term;
};

static struct view view_of(const struct cr_core *c)
{
    struct view v;
    memset(&v, 0, sizeof v);
    v.role = cr_core_role(c);
    v.term = cr_core_term(c);
    v.vote = cr_core_vote(c);
    v.leader = cr_core_leader(c);
    v.commit = cr_core_commit(c);
    v.first = cr_core_first_index(c);
    v.last = cr_core_last_index(c);
    v.last_term = cr_core_last_term(c);
    return v;
}

static void assert_unchanged(const struct cr_core *c, const struct view *v)
{
    struct view now = view_of(c);
    assert_int_equal(now.role, v->role);
    assert_int_equal(now.term, v->term);
    assert_int_equal(now.vote, v->vote);
    assert_int_equal(now.leader, v->leader);
    assert_int_equal(now.commit, v->commit);
    assert_int_equal(now.first, v->first);
    assert_int_equal(now.last, v->last);
    assert_int_equal(now.last_term, v->last_term);
}

static void assert_no_output(const struct cr_update *u)
{
    assert_int_equal(u->n_messages, 0);
    assert_int_equal(u->persist_seq, 0);
    assert_int_equal(u->n_committed, 0);
    assert_int_equal(u->flags, 0);
}

/* Messages of another cluster (cluster_id differs) are refused with
 * CR_ECLUSTER and change nothing, whatever their type and term. */
static void foreign_cluster_message_rejected(void **state)
{
    struct fx *f = fx_new(3, NULL);
    const enum cr_message_type types[] = {
        CR_MSG_REQUEST_VOTE,      CR_MSG_REQUEST_VOTE_RESULT,
        CR_MSG_APPEND_ENTRIES,    CR_MSG_APPEND_ENTRIES_RESULT,
        CR_MSG_TIMEOUT_NOW,       CR_MSG_READ_INDEX,
        CR_MSG_READ_INDEX_RESULT, CR_MSG_INSTALL_SNAPSHOT,
    };
    struct cr_snapshot_meta meta;
    struct cr_entry e;
    (void)state;
    assert_int_equal(fx_bootstrap(f, 3), 0);
    fx_elect(f, 1);
    memset(&meta, 0, sizeof meta);
    meta.index = 100;
    meta.term = 50;
    fx_config(&meta.config, 3);
    memset(&e, 0, sizeof e);
    e.term = 50;
    e.type = CR_ENTRY_NOOP;
    for (cr_id id = 1; id <= 2; id++) {
        for (unsigned i = 0; i < sizeof types / sizeof types[0]; i++) {
            struct cr_message m;
            struct view v = view_of(&f->core[id]);
            fx_msg_init(&m, types[i], 3, id, 50);
            m.cluster_id = FX_CLUSTER + 1;
            m.request_vote.transfer = true;
            if (types[i] == CR_MSG_APPEND_ENTRIES) {
                m.append_entries.prev_index = 2;
                m.append_entries.prev_term = 2;
                m.append_entries.commit = 3;
                m.append_entries.n_entries = 1;
                m.append_entries.entries = &e;
            } else if (types[i] == CR_MSG_INSTALL_SNAPSHOT) {
                m.install_snapshot.meta = &meta;
            }
            assert_int_equal(fx_receive(f, id, &m), CR_ECLUSTER);
            assert_unchanged(&f->core[id], &v);
            assert_no_output(&f->u[id]);
        }
    }
    fx_free(f);
}

/* Every first server writes the same bootstrap entry whatever order its
 * configuration lists the servers in (each lists itself first, say):
 * otherwise log matching breaks at index 1. */
static void bootstrap_entry_is_canonical(void **state)
{
    struct fx *f = fx_new(2, NULL);
    struct cr_config a, b;
    const struct cr_entry *e1, *e2;
    (void)state;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    assert_int_equal(cr_config_add(&a, 1, CR_VOTER, "h1:1"), 0);
    assert_int_equal(cr_config_add(&a, 2, CR_VOTER, "h2:1"), 0);
    assert_int_equal(cr_config_add(&a, 3, CR_VOTER, "h3:1"), 0);
    assert_int_equal(cr_config_add(&b, 2, CR_VOTER, "h2:1"), 0);
    assert_int_equal(cr_config_add(&b, 3, CR_VOTER, "h3:1"), 0);
    assert_int_equal(cr_config_add(&b, 1, CR_VOTER, "h1:1"), 0);
    assert_int_equal(fx_bootstrap_config(f, 1, &a), 0);
    assert_int_equal(fx_bootstrap_config(f, 2, &b), 0);
    e1 = cr_core_entry(&f->core[1], 1);
    e2 = cr_core_entry(&f->core[2], 1);
    assert_non_null(e1);
    assert_non_null(e2);
    assert_int_equal(e1->buf.len, e2->buf.len);
    assert_memory_equal(e1->buf.base, e2->buf.base, e1->buf.len);
    fx_free(f);
}

/* Answers carry the context of the request they answer, so that a
 * transport can match them to the calls that brought the requests: a vote
 * result (held until durable) and append results (success and refusal). */
static void answers_echo_request_context(void **state)
{
    struct fx *f = fx_new(3, NULL);
    struct cr_message m;
    const struct cr_message *r;
    (void)state;
    assert_int_equal(fx_bootstrap(f, 3), 0);

    fx_msg_init(&m, CR_MSG_REQUEST_VOTE, 3, 2, 2);
    m.request_vote.last_index = 1;
    m.request_vote.last_term = 1;
    m.context = 0xfeed;
    assert_int_equal(fx_receive(f, 2, &m), 0);
    assert_int_equal(fx_persist(f, 2), 0);
    r = fx_peek(f, 2, 3, CR_MSG_REQUEST_VOTE_RESULT);
    assert_non_null(r);
    assert_true(r->request_vote_result.granted);
    assert_int_equal(r->context, 0xfeed);

    fx_msg_init(&m, CR_MSG_APPEND_ENTRIES, 3, 1, 2);
    m.append_entries.prev_index = 1;
    m.append_entries.prev_term = 1;
    m.context = 0xbeef;
    assert_int_equal(fx_receive(f, 1, &m), 0);
    assert_int_equal(fx_persist(f, 1), 0);
    r = fx_peek(f, 1, 3, CR_MSG_APPEND_ENTRIES_RESULT);
    assert_non_null(r);
    assert_true(r->append_entries_result.success);
    assert_int_equal(r->context, 0xbeef);

    fx_drop(f, 1, 3);
    fx_msg_init(&m, CR_MSG_APPEND_ENTRIES, 3, 1, 2);
    m.append_entries.prev_index = 7;
    m.append_entries.prev_term = 2;
    m.context = 0xcafe;
    assert_int_equal(fx_receive(f, 1, &m), 0);
    assert_int_equal(fx_persist(f, 1), 0);
    r = fx_peek(f, 1, 3, CR_MSG_APPEND_ENTRIES_RESULT);
    assert_non_null(r);
    assert_false(r->append_entries_result.success);
    assert_int_equal(r->context, 0xcafe);
    fx_free(f);
}

/* Messages that are malformed in their header are refused with CR_EINVAL
 * and change nothing. */
static void malformed_message_rejected(void **state)
{
    struct fx *f = fx_new(3, NULL);
    struct cr_event ev = {.type = CR_EVENT_RECEIVE};
    struct cr_message m;
    struct view v;
    (void)state;
    assert_int_equal(fx_bootstrap(f, 3), 0);
    fx_elect(f, 1);
    v = view_of(&f->core[2]);

    ev.receive.message = NULL;
    assert_int_equal(fx_step(f, 2, &ev), CR_EINVAL);
    assert_no_output(&f->u[2]);

    /* Entries announced but missing. */
    fx_msg_init(&m, CR_MSG_APPEND_ENTRIES, 1, 2, v.term + 1);
    m.append_entries.prev_index = v.last;
    m.append_entries.prev_term = v.last_term;
    m.append_entries.n_entries = 2;
    m.append_entries.entries = NULL;
    assert_int_equal(fx_receive(f, 2, &m), CR_EINVAL);
    assert_int_equal(cr_core_last_index(&f->core[2]), v.last);
    assert_int_equal(fx_persist(f, 2), 0);
    assert_int_equal(fx_count(f, 2, 1, CR_MSG_APPEND_ENTRIES_RESULT), 0);
    fx_drop(f, 2, 0);
    v = view_of(&f->core[2]);

    /* A snapshot without metadata. */
    fx_msg_init(&m, CR_MSG_INSTALL_SNAPSHOT, 1, 2, v.term);
    assert_int_equal(fx_receive(f, 2, &m), CR_EINVAL);
    /* No sender, ourselves as sender, someone else as receiver. */
    fx_msg_init(&m, CR_MSG_APPEND_ENTRIES_RESULT, 0, 2, v.term + 5);
    assert_int_equal(fx_receive(f, 2, &m), CR_EINVAL);
    fx_msg_init(&m, CR_MSG_REQUEST_VOTE, 2, 2, v.term + 5);
    assert_int_equal(fx_receive(f, 2, &m), CR_EINVAL);
    fx_msg_init(&m, CR_MSG_REQUEST_VOTE, 3, 1, v.term + 5);
    assert_int_equal(fx_receive(f, 2, &m), CR_EINVAL);
    /* An unknown type. */
    fx_msg_init(&m, (enum cr_message_type)99, 1, 2, v.term);
    assert_int_equal(fx_receive(f, 2, &m), CR_EINVAL);
    assert_unchanged(&f->core[2], &v);
    assert_int_equal(f->u[2].n_messages, 0);
    fx_free(f);
}

/* Sends core 2 (term 1, log [1]) an append of one entry from leader 1. */
static int append_entry(struct fx *f, cr_term term, const struct cr_entry *e)
{
    struct cr_message m;
    fx_msg_init(&m, CR_MSG_APPEND_ENTRIES, 1, 2, term);
    m.append_entries.prev_index = 1;
    m.append_entries.prev_term = 1;
    m.append_entries.commit = 1;
    m.append_entries.n_entries = 1;
    m.append_entries.entries = (struct cr_entry *)e;
    return fx_receive(f, 2, &m);
}

/* Entries that cannot come from a correct leader are not appended and not
 * acknowledged: a term above the message's, a payload pointer missing, a
 * configuration that does not decode, an unknown type, term 0. */
static void malformed_entries_rejected(void **state)
{
    struct fx *f = fx_new(3, NULL);
    uint8_t junk[5] = {1, 9, 9, 9, 9};
    struct cr_entry bad[5];
    int rv;
    (void)state;
    assert_int_equal(fx_bootstrap(f, 3), 0);
    memset(bad, 0, sizeof bad);
    bad[0].term = 3; /* above the message term (2) */
    bad[0].type = CR_ENTRY_COMMAND;
    bad[1].term = 2;
    bad[1].type = CR_ENTRY_COMMAND;
    bad[1].buf.len = 4; /* no bytes */
    bad[2].term = 2;
    bad[2].type = CR_ENTRY_CONFIG;
    bad[2].buf.base = junk;
    bad[2].buf.len = sizeof junk;
    bad[3].term = 2;
    bad[3].type = (enum cr_entry_type)0;
    bad[4].term = 0;
    bad[4].type = CR_ENTRY_NOOP;
    for (unsigned i = 0; i < 5; i++) {
        rv = append_entry(f, 2, &bad[i]);
        assert_true(rv == 0 || rv == CR_EINVAL);
        assert_int_equal(cr_core_last_index(&f->core[2]), 1);
        assert_int_equal(cr_core_config(&f->core[2])->n, 3);
        assert_false(f->u[2].flags & CR_UPDATE_ENTRIES);
        assert_int_equal(fx_persist(f, 2), 0);
        assert_null(fx_peek(f, 2, 1, CR_MSG_APPEND_ENTRIES_RESULT));
    }
    fx_free(f);
}

/* A configuration entry with an empty payload is malformed: rejected from
 * a peer, CR_ECORRUPT from disk, CR_ECORRUPT from the decoder, without
 * undefined behaviour: an empty payload may have a NULL base (that is how
 * the core itself represents one, see cr__log_append), and decoding it
 * once did arithmetic on the null pointer (C11 6.5.6p8; clang
 * -fsanitize=undefined aborted here) until commit 4b09006. Kept last in
 * this file so that a sanitizer abort would not hide the other tests. */
static void empty_config_entry_rejected(void **state)
{
    struct fx *f = fx_new(3, NULL);
    struct cr_entry e[2];
    struct cr_hard_state hs = {.term = 1, .vote = 0, .commit = 1};
    struct cr_config c;
    (void)state;
    assert_int_equal(cr_config_decode(NULL, 0, &c), CR_ECORRUPT);

    assert_int_equal(fx_bootstrap(f, 2), 0);
    memset(e, 0, sizeof e);
    e[0].term = 2;
    e[0].type = CR_ENTRY_CONFIG; /* buf {NULL, 0} */
    assert_int_equal(append_entry(f, 2, &e[0]), 0);
    assert_int_equal(cr_core_last_index(&f->core[2]), 1);
    assert_int_equal(cr_core_config(&f->core[2])->n, 2);

    e[0].term = 1;
    e[0].type = CR_ENTRY_NOOP;
    e[1].term = 1;
    e[1].type = CR_ENTRY_CONFIG;
    assert_int_equal(cr_core_load(&f->core[3], &hs, NULL, 1, e, 2),
                     CR_ECORRUPT);
    fx_free(f);
}

/* Events with impossible contents are refused with CR_EINVAL and change
 * nothing. */
static void malformed_events_rejected(void **state)
{
    struct fx *f = fx_new(3, NULL);
    struct cr_event ev;
    struct cr_entry e;
    uint8_t byte = 7;
    struct view v;
    (void)state;
    assert_int_equal(fx_bootstrap(f, 3), 0);
    fx_elect(f, 1);
    v = view_of(&f->core[1]);

    memset(&ev, 0, sizeof ev);
    ev.type = (enum cr_event_type)77;
    assert_int_equal(fx_step(f, 1, &ev), CR_EINVAL);
    memset(&ev, 0, sizeof ev);
    ev.type = CR_EVENT_PERSISTED;
    ev.persisted.seq = f->unpersisted_seq[1] + 1;
    assert_int_equal(fx_step(f, 1, &ev), CR_EINVAL);

    memset(&e, 0, sizeof e);
    e.type = CR_ENTRY_CONFIG;
    e.buf.base = &byte;
    e.buf.len = 1;
    memset(&ev, 0, sizeof ev);
    ev.type = CR_EVENT_PROPOSE;
    ev.propose.entries = &e;
    ev.propose.n = 1;
    assert_int_equal(fx_step(f, 1, &ev), CR_EINVAL);
    e.type = CR_ENTRY_COMMAND;
    e.buf.base = NULL;
    assert_int_equal(fx_step(f, 1, &ev), CR_EINVAL);
    ev.propose.n = 0;
    assert_int_equal(fx_step(f, 1, &ev), CR_EINVAL);
    ev.propose.entries = NULL;
    ev.propose.n = 1;
    assert_int_equal(fx_step(f, 1, &ev), CR_EINVAL);
    assert_unchanged(&f->core[1], &v);
    assert_no_output(&f->u[1]);

    /* A proposal on a follower. */
    assert_int_equal(fx_propose(f, 2, 1, 1), CR_ENOTLEADER);
    fx_free(f);
}

/* Every error code has its own name and message; unknown codes have a
 * fallback; neither is ever NULL. */
static void error_strings(void **state)
{
    const char *names[32];
    unsigned n = 0;
    (void)state;
    assert_string_equal(cr_errname(0), "CR_OK");
    assert_string_equal(cr_strerror(0), "success");
#define CHECK(name, code, msg)                                   \
    assert_string_equal(cr_errname(code), #name);                \
    assert_string_equal(cr_strerror(code), msg);                 \
    assert_string_not_equal(cr_strerror(code), "unknown error"); \
    names[n++] = cr_errname(code);
    CR_ERROR_MAP(CHECK)
#undef CHECK
    /* Codes run from 1 without gaps: the highest is the count. */
    {
        int highest = 0;
#define HIGHEST(name, code, msg) highest = code > highest ? code : highest;
        CR_ERROR_MAP(HIGHEST)
#undef HIGHEST
        assert_int_equal(n, (unsigned)highest);
        assert_string_equal(cr_errname(highest + 1), "CR_EUNKNOWN");
    }
    for (unsigned i = 0; i < n; i++) {
        for (unsigned j = i + 1; j < n; j++) {
            assert_string_not_equal(names[i], names[j]);
        }
    }
    assert_string_equal(cr_errname(CR_ENOMEM), "CR_ENOMEM");
    assert_string_equal(cr_strerror(CR_ECLUSTER),
                        "message from another cluster");
    assert_string_equal(cr_errname(-1), "CR_EUNKNOWN");
    assert_string_equal(cr_strerror(999), "unknown error");
    assert_string_equal(cr_role_name(CR_LEADER), "leader");
    assert_string_equal(cr_role_name((enum cr_role)0), "unknown");
}

/* A batch lives as long as its last reference. */
static void batch_refcounting(void **state)
{
    struct fx *f = fx_new(1, NULL);
    unsigned long allocs = f->n_allocs;
    void *batch = NULL;
    uint8_t *data = cr_batch_alloc(&f->alloc, 16, &batch);
    (void)state;
    assert_non_null(data);
    assert_non_null(batch);
    assert_int_equal(f->n_allocs, allocs + 1);
    memset(data, 0xab, 16);
    cr_batch_ref(batch);
    cr_batch_unref(&f->alloc, batch);
    /* Still alive: ASan would flag this after a free. */
    assert_int_equal(data[15], 0xab);
    cr_batch_unref(&f->alloc, batch);
    cr_batch_unref(&f->alloc, NULL);

    data = cr_batch_alloc(&f->alloc, 0, &batch);
    assert_non_null(data);
    cr_batch_unref(&f->alloc, batch);

    f->fail_at = f->n_allocs + 1;
    batch = NULL;
    assert_null(cr_batch_alloc(&f->alloc, 8, &batch));
    assert_null(batch);
    assert_null(cr_batch_alloc(&f->alloc, SIZE_MAX - 4, &batch));
    fx_free(f);
}

/* The core takes a reference on a proposal's batch instead of copying it,
 * and copies borrowed bytes into one batch of its own. */
static void core_shares_batches(void **state)
{
    struct fx *f = fx_new(1, NULL);
    struct cr_event ev = {.type = CR_EVENT_PROPOSE};
    struct cr_entry e[2];
    uint8_t borrowed[2][3] = {{1, 2, 3}, {4, 5, 6}};
    const struct cr_entry *a, *b;
    void *batch;
    uint8_t *data;
    (void)state;
    assert_int_equal(fx_bootstrap(f, 1), 0);
    fx_elect(f, 1);

    data = cr_batch_alloc(&f->alloc, 4, &batch);
    assert_non_null(data);
    memcpy(data, "abcd", 4);
    memset(e, 0, sizeof e);
    e[0].type = CR_ENTRY_COMMAND;
    e[0].buf.base = data;
    e[0].buf.len = 4;
    e[0].batch = batch;
    ev.propose.entries = e;
    ev.propose.n = 1;
    assert_int_equal(fx_step(f, 1, &ev), 0);
    cr_batch_unref(&f->alloc, batch); /* the core keeps its own */
    a = cr_core_entry(&f->core[1], f->u[1].index);
    assert_ptr_equal(a->batch, batch);
    assert_ptr_equal(a->buf.base, data);
    assert_memory_equal(a->buf.base, "abcd", 4);

    memset(e, 0, sizeof e);
    for (unsigned i = 0; i < 2; i++) {
        e[i].type = CR_ENTRY_COMMAND;
        e[i].buf.base = borrowed[i];
        e[i].buf.len = 3;
    }
    ev.propose.n = 2;
    assert_int_equal(fx_step(f, 1, &ev), 0);
    memset(borrowed, 0, sizeof borrowed);
    a = cr_core_entry(&f->core[1], f->u[1].index);
    b = cr_core_entry(&f->core[1], f->u[1].index + 1);
    assert_non_null(a->batch);
    assert_ptr_equal(a->batch, b->batch);
    assert_memory_equal(a->buf.base, "\1\2\3", 3);
    assert_memory_equal(b->buf.base, "\4\5\6", 3);
    assert_int_equal(fx_persist(f, 1), 0);
    assert_int_equal(cr_core_commit(&f->core[1]),
                     cr_core_last_index(&f->core[1]));
    fx_free(f);
}

/* Initialization validates its arguments; bootstrap and load only work on
 * a fresh core; close accepts NULL. */
static void init_and_bootstrap_validate(void **state)
{
    struct fx *f = fx_new(2, NULL);
    struct cr_core c;
    struct cr_options o;
    struct cr_config cfg;
    struct cr_update u;
    struct cr_hard_state hs = {0, 0, 0};
    (void)state;
    assert_int_equal(cr_core_init(&c, 0, 1, NULL, &f->alloc, 0, 0), CR_EINVAL);
    fx_options(&o);
    o.heartbeat_interval = o.election_timeout;
    assert_int_equal(cr_core_init(&c, 1, 1, &o, &f->alloc, 0, 0), CR_EINVAL);
    fx_options(&o);
    o.max_inflight_msgs = CR__INFLIGHT_MAX + 1;
    assert_int_equal(cr_core_init(&c, 1, 1, &o, &f->alloc, 0, 0), CR_EINVAL);
    fx_options(&o);
    o.max_batch_bytes = 0;
    assert_int_equal(cr_core_init(&c, 1, 1, &o, &f->alloc, 0, 0), CR_EINVAL);
    cr_core_close(NULL);

    memset(&cfg, 0, sizeof cfg);
    assert_int_equal(cr_config_add(&cfg, 1, CR_LEARNER, "x"), 0);
    assert_int_equal(cr_core_bootstrap(&f->core[1], &cfg, &u), CR_EINVAL);
    fx_config(&cfg, 2);
    assert_int_equal(fx_bootstrap_config(f, 1, &cfg), 0);
    assert_int_equal(fx_bootstrap_config(f, 1, &cfg), CR_EINVAL);
    assert_int_equal(cr_core_load(&f->core[1], &hs, NULL, 1, NULL, 0),
                     CR_EINVAL);
    assert_int_equal(cr_core_last_index(&f->core[1]), 1);
    assert_int_equal(cr_core_commit(&f->core[1]), 1);
    fx_free(f);
}

struct trace_log
{
    unsigned n;
    bool became_leader;
};

static void on_trace(void *data,
                     const struct cr_core *c,
                     const struct cr_trace *t)
{
    struct trace_log *log = data;
    (void)c;
    log->n++;
    if (strcmp(t->event, "became_leader") == 0) {
        log->became_leader = true;
    }
}

/* The tracer sees the core's decisions. */
static void tracer_reports_decisions(void **state)
{
    struct fx *f = fx_new(1, NULL);
    struct trace_log log = {0, false};
    struct cr_tracer t = {&log, on_trace};
    (void)state;
    cr_core_set_tracer(&f->core[1], &t);
    assert_int_equal(fx_bootstrap(f, 1), 0);
    fx_elect(f, 1);
    assert_true(log.became_leader);
    assert_true(log.n >= 2);
    cr_core_set_tracer(&f->core[1], NULL);
    log.n = 0;
    assert_int_equal(fx_propose(f, 1, 1, 1), 0);
    assert_int_equal(log.n, 0);
    fx_free(f);
}

/* With an argument, runs only the tests whose names match it (cmocka's
 * pattern: * and ? wildcards). */
int main(int argc, char **argv)
{
    if (argc > 1) {
        cmocka_set_test_filter(argv[1]);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(foreign_cluster_message_rejected),
        cmocka_unit_test(answers_echo_request_context),
        cmocka_unit_test(bootstrap_entry_is_canonical),
        cmocka_unit_test(malformed_message_rejected),
        cmocka_unit_test(malformed_entries_rejected),
        cmocka_unit_test(malformed_events_rejected),
        cmocka_unit_test(error_strings),
        cmocka_unit_test(batch_refcounting),
        cmocka_unit_test(core_shares_batches),
        cmocka_unit_test(init_and_bootstrap_validate),
        cmocka_unit_test(tracer_reports_decisions),
        /* Last: see the comment on the test. */
        cmocka_unit_test(empty_config_entry_rejected),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
