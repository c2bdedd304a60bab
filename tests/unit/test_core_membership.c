/* Membership changes one server at a time (dissertation §4.1-§4.2), and
 * the configuration encoding. */
#include <string.h>

#include "fixture.h"

static bool has(const struct cr_core *c, cr_id id, enum cr_suffrage s)
{
    const struct cr_server *server = cr_config_get(cr_core_config(c), id);
    return server != NULL && server->suffrage == s;
}

/* Dissertation §4.2.1: a new server joins as a learner, so that it cannot
 * hold up commitment while it catches up; once it has caught up within an
 * election timeout, the leader makes it a voter. */
static void add_server_joins_as_learner_and_is_promoted(void **state)
{
    struct fx *f = fx_new(4, NULL);
    const struct cr_server *s;
    cr_index index;
    (void)state;
    assert_int_equal(fx_bootstrap(f, 3), 0);
    fx_elect(f, 1);
    assert_int_equal(fx_change(f, 1, CR_CHANGE_ADD, 4), 0);
    index = f->u[1].index;
    assert_int_equal(index, cr_core_last_index(&f->core[1]));
    assert_true(f->u[1].flags & CR_UPDATE_CONFIG);
    s = cr_config_get(cr_core_config(&f->core[1]), 4);
    assert_non_null(s);
    assert_int_equal(s->suffrage, CR_LEARNER);
    assert_true(s->promote);
    assert_string_equal(s->address, "new");
    assert_int_equal(cr_config_voters(cr_core_config(&f->core[1])), 3);

    fx_flush(f);
    fx_run(f, 2 * FX_HB);
    assert_true(cr_core_commit(&f->core[1]) > index);
    for (cr_id id = 1; id <= 4; id++) {
        s = cr_config_get(cr_core_config(&f->core[id]), 4);
        assert_non_null(s);
        assert_int_equal(s->suffrage, CR_VOTER);
        assert_false(s->promote);
        assert_int_equal(cr_config_voters(cr_core_config(&f->core[id])), 4);
    }
    assert_int_equal(cr_core_last_index(&f->core[4]),
                     cr_core_last_index(&f->core[1]));
    assert_int_equal(cr_core_role(&f->core[1]), CR_LEADER);
    fx_free(f);
}

/* Dissertation §4.2.1: a learner receives the log but does not count for
 * commitment, and one added as a permanent learner is never promoted. */
static void learner_does_not_count_for_commit(void **state)
{
    struct fx *f = fx_new(4, NULL);
    cr_index commit;
    (void)state;
    assert_int_equal(fx_bootstrap(f, 3), 0);
    fx_elect(f, 1);
    assert_int_equal(fx_change(f, 1, CR_CHANGE_ADD_LEARNER, 4), 0);
    fx_flush(f);
    fx_run(f, 2 * FX_HB);
    assert_true(has(&f->core[1], 4, CR_LEARNER));
    commit = cr_core_commit(&f->core[1]);

    f->cut[2] = f->cut[3] = true;
    assert_int_equal(fx_propose(f, 1, 1, 1), 0);
    fx_flush(f);
    assert_int_equal(cr_core_last_index(&f->core[4]),
                     cr_core_last_index(&f->core[1]));
    assert_int_equal(cr_core_match(&f->core[1], 4),
                     cr_core_last_index(&f->core[1]));
    assert_int_equal(cr_core_commit(&f->core[1]), commit);
    fx_free(f);
}

/* Dissertation §4.1: at most one configuration change may be uncommitted
 * at a time. */
static void only_one_uncommitted_change(void **state)
{
    struct fx *f = fx_new(5, NULL);
    cr_index last;
    (void)state;
    assert_int_equal(fx_bootstrap(f, 3), 0);
    fx_elect(f, 1);
    assert_int_equal(fx_change(f, 1, CR_CHANGE_ADD_LEARNER, 4), 0);
    last = cr_core_last_index(&f->core[1]);
    assert_int_equal(fx_change(f, 1, CR_CHANGE_ADD_LEARNER, 5), CR_ECHANGE);
    assert_int_equal(fx_change(f, 1, CR_CHANGE_REMOVE, 3), CR_ECHANGE);
    assert_int_equal(cr_core_last_index(&f->core[1]), last);
    assert_null(cr_config_get(cr_core_config(&f->core[1]), 5));
    assert_non_null(cr_config_get(cr_core_config(&f->core[1]), 3));

    fx_flush(f);
    assert_int_equal(fx_change(f, 1, CR_CHANGE_ADD_LEARNER, 5), 0);
    fx_free(f);
}

/* Dissertation §4.1 and Ongaro's 2015 correction (raft-dev, "bug in
 * single-server membership changes"): a leader changes the configuration
 * only once it has committed an entry of its own term. */
static void no_change_before_leader_commits_own_term(void **state)
{
    struct fx *f = fx_new(4, NULL);
    cr_index last;
    (void)state;
    assert_int_equal(fx_bootstrap(f, 3), 0);
    fx_elect_votes_only(f, 1);
    last = cr_core_last_index(&f->core[1]);
    assert_int_equal(fx_change(f, 1, CR_CHANGE_ADD, 4), CR_ENOTREADY);
    assert_int_equal(cr_core_last_index(&f->core[1]), last);
    assert_null(cr_config_get(cr_core_config(&f->core[1]), 4));
    assert_false(f->u[1].flags & CR_UPDATE_CONFIG);

    fx_flush(f);
    assert_int_equal(fx_change(f, 1, CR_CHANGE_ADD, 4), 0);
    fx_free(f);
}

/* Changes on a follower or without a leader are refused. */
static void change_refused_off_leader(void **state)
{
    struct fx *f = fx_new(4, NULL);
    (void)state;
    assert_int_equal(fx_bootstrap(f, 3), 0);
    assert_int_equal(fx_change(f, 2, CR_CHANGE_ADD, 4), CR_ENOLEADER);
    fx_elect(f, 1);
    assert_int_equal(fx_change(f, 2, CR_CHANGE_ADD, 4), CR_ENOTLEADER);
    assert_int_equal(fx_change(f, 1, CR_CHANGE_ADD, 2), CR_EEXIST);
    assert_int_equal(fx_change(f, 1, CR_CHANGE_REMOVE, 4), CR_ENOTFOUND);
    assert_int_equal(fx_change(f, 1, CR_CHANGE_ADD, 0), CR_EINVAL);
    fx_free(f);
}

/* Dissertation §4.1: a server uses the latest configuration in its log,
 * committed or not: the leader from the moment it appends the entry. */
static void config_takes_effect_on_append_on_leader(void **state)
{
    struct fx *f = fx_new(4, NULL);
    (void)state;
    assert_int_equal(fx_bootstrap(f, 3), 0);
    fx_elect(f, 1);
    assert_int_equal(fx_change(f, 1, CR_CHANGE_REMOVE, 3), 0);
    assert_true(cr_core_commit(&f->core[1]) < f->u[1].index);
    assert_int_equal(cr_core_config_index(&f->core[1]), f->u[1].index);
    assert_null(cr_config_get(cr_core_config(&f->core[1]), 3));
    assert_int_equal(cr_config_voters(cr_core_config(&f->core[1])), 2);
    fx_free(f);
}

/* Dissertation §4.1: a follower uses a configuration as soon as the entry
 * is in its log, before it is durable or committed. */
static void config_takes_effect_on_append_on_follower(void **state)
{
    struct fx *f = fx_new(4, NULL);
    cr_index index;
    (void)state;
    assert_int_equal(fx_bootstrap(f, 3), 0);
    fx_elect(f, 1);
    assert_int_equal(fx_change(f, 1, CR_CHANGE_ADD_LEARNER, 4), 0);
    index = f->u[1].index;
    fx_deliver(f, 1, 2);
    assert_true(f->u[2].flags & CR_UPDATE_CONFIG);
    assert_true(has(&f->core[2], 4, CR_LEARNER));
    assert_int_equal(cr_core_config_index(&f->core[2]), index);
    assert_true(cr_core_commit(&f->core[2]) < index);
    assert_true(f->persisted_seq[2] < f->unpersisted_seq[2]);
    fx_free(f);
}

/* Sends `to` an AppendEntries with one entry after index 1 (term 1). */
static int append_one(struct fx *f,
                      cr_id to,
                      cr_id from,
                      cr_term term,
                      const struct cr_entry *e)
{
    struct cr_message m;
    fx_msg_init(&m, CR_MSG_APPEND_ENTRIES, from, to, term);
    m.append_entries.prev_index = 1;
    m.append_entries.prev_term = 1;
    m.append_entries.commit = 1;
    m.append_entries.n_entries = 1;
    m.append_entries.entries = (struct cr_entry *)e;
    return fx_receive(f, to, &m);
}

/* Dissertation §4.1: "a log entry for a configuration change can be
 * removed (if leadership changes); in this case, a server must be prepared
 * to fall back to the previous configuration in its log". */
static void config_reverts_when_entry_truncated(void **state)
{
    struct fx *f = fx_new(4, NULL);
    struct cr_config next;
    uint8_t buf[FX_CONFIG_BUF];
    struct cr_entry e;
    (void)state;
    assert_int_equal(fx_bootstrap(f, 3), 0);
    next = f->config;
    assert_int_equal(cr_config_add(&next, 4, CR_LEARNER, "s4"), 0);
    memset(&e, 0, sizeof e);
    e.term = 2;
    e.type = CR_ENTRY_CONFIG;
    e.buf.base = buf;
    e.buf.len = fx_config_encode(&next, buf);
    assert_int_equal(append_one(f, 2, 1, 2, &e), 0);
    assert_true(cr_config_equal(cr_core_config(&f->core[2]), &next));
    assert_int_equal(cr_core_config_index(&f->core[2]), 2);

    /* The leader of term 3 never had it: its entry 2 replaces it. */
    memset(&e, 0, sizeof e);
    e.term = 3;
    e.type = CR_ENTRY_NOOP;
    assert_int_equal(append_one(f, 2, 3, 3, &e), 0);
    assert_int_equal(cr_core_term_at(&f->core[2], 2), 3);
    assert_true(f->u[2].flags & CR_UPDATE_CONFIG);
    assert_true(cr_config_equal(cr_core_config(&f->core[2]), &f->config));
    assert_int_equal(cr_core_config_index(&f->core[2]), 1);
    fx_free(f);
}

/* Dissertation §4.1: a removed follower no longer counts for commitment
 * and no longer gets heartbeats once it has the entry that removes it. */
static void remove_follower(void **state)
{
    struct fx *f = fx_new(3, NULL);
    cr_index commit, index;
    (void)state;
    assert_int_equal(fx_bootstrap(f, 3), 0);
    fx_elect(f, 1);
    assert_int_equal(fx_change(f, 1, CR_CHANGE_REMOVE, 3), 0);
    index = f->u[1].index;
    fx_flush(f);
    assert_true(cr_core_commit(&f->core[1]) >= index);
    assert_int_equal(cr_config_voters(cr_core_config(&f->core[1])), 2);
    assert_int_equal(cr_config_voters(cr_core_config(&f->core[2])), 2);

    /* With 2 silent, 1 and 3 are no majority of {1, 2}. */
    commit = cr_core_commit(&f->core[1]);
    f->cut[2] = true;
    assert_int_equal(fx_propose(f, 1, 1, 1), 0);
    fx_flush(f);
    assert_int_equal(cr_core_commit(&f->core[1]), commit);
    f->cut[2] = false;

    f->now += FX_HB;
    assert_int_equal(fx_tick(f, 1), 0);
    assert_non_null(fx_upd_find(&f->u[1], CR_MSG_APPEND_ENTRIES, 2));
    assert_null(fx_upd_find(&f->u[1], FX_ANY, 3));
    fx_run(f, FX_ET);
    assert_true(cr_core_commit(&f->core[1]) > commit);
    assert_int_equal(cr_core_role(&f->core[1]), CR_LEADER);
    fx_free(f);
}

/* Dissertation §4.2.2: a leader that removes itself keeps leading (without
 * counting itself) until the new configuration commits, then steps down;
 * being outside the configuration it never campaigns again. */
static void remove_leader_steps_down_and_never_campaigns(void **state)
{
    struct fx *f = fx_new(3, NULL);
    cr_id next = 0;
    cr_index index;
    (void)state;
    assert_int_equal(fx_bootstrap(f, 3), 0);
    fx_elect(f, 1);
    assert_int_equal(fx_change(f, 1, CR_CHANGE_REMOVE, 1), 0);
    index = f->u[1].index;
    assert_int_equal(cr_core_config_index(&f->core[1]), index);
    assert_int_equal(cr_core_role(&f->core[1]), CR_LEADER);
    assert_int_equal(fx_persist(f, 1), 0);

    /* The leader and 2 hold it: not a majority of {2, 3}. */
    fx_deliver(f, 1, 2);
    assert_int_equal(fx_persist(f, 2), 0);
    fx_deliver(f, 2, 1);
    assert_true(cr_core_commit(&f->core[1]) < index);
    assert_int_equal(cr_core_role(&f->core[1]), CR_LEADER);

    fx_deliver(f, 1, 3);
    assert_int_equal(fx_persist(f, 3), 0);
    fx_deliver(f, 3, 1);
    assert_int_equal(cr_core_commit(&f->core[1]), index);
    assert_int_equal(cr_core_role(&f->core[1]), CR_FOLLOWER);
    /* It hands over to a caught-up voter rather than leave it to time. */
    assert_non_null(fx_upd_find(&f->u[1], CR_MSG_TIMEOUT_NOW, 0));

    fx_flush(f);
    for (cr_id id = 2; id <= 3; id++) {
        if (cr_core_role(&f->core[id]) == CR_LEADER) {
            next = id;
        }
    }
    assert_int_not_equal(next, 0);

    for (unsigned i = 0; i < 50; i++) {
        f->now += FX_ET / 2;
        assert_int_equal(fx_tick(f, 1), 0);
        assert_int_equal(f->u[1].role, CR_FOLLOWER);
        assert_int_equal(fx_upd_count(&f->u[1], CR_MSG_REQUEST_VOTE, 0), 0);
        fx_drop(f, 1, 0);
    }
    assert_int_equal(fx_campaign(f, 1), CR_EREMOVED);
    fx_free(f);
}

static void config_sample(struct cr_config *c)
{
    char address[CR_ADDRESS_MAX];
    memset(c, 0, sizeof *c);
    memset(address, 'a', sizeof address - 1);
    address[sizeof address - 1] = 0;
    assert_int_equal(cr_config_add(c, 1, CR_VOTER, "10.0.0.1:7000"), 0);
    assert_int_equal(cr_config_add(c, UINT64_MAX, CR_VOTER, address), 0);
    assert_int_equal(cr_config_add(c, 3, CR_LEARNER, ""), 0);
    assert_int_equal(cr_config_add(c, 4, CR_LEARNER, NULL), 0);
    c->servers[3].promote = true;
}

/* The configuration encoding round-trips exactly, up to the largest
 * configuration. */
static void config_encode_decode_round_trip(void **state)
{
    struct cr_config c, d;
    uint8_t buf[FX_CONFIG_BUF];
    size_t len;
    (void)state;
    config_sample(&c);
    len = cr_config_encoded_size(&c);
    cr_config_encode(&c, buf);
    assert_int_equal(cr_config_decode(buf, len, &d), 0);
    assert_true(cr_config_equal(&c, &d));
    assert_int_equal(d.servers[1].id, UINT64_MAX);
    assert_int_equal(strlen(d.servers[1].address), CR_ADDRESS_MAX - 1);
    assert_true(d.servers[3].promote);
    assert_false(d.servers[2].promote);

    memset(&c, 0, sizeof c);
    for (cr_id id = 1; id <= CR_SERVERS_MAX; id++) {
        assert_int_equal(cr_config_add(&c, id * 1000, CR_VOTER, "x:1"), 0);
    }
    assert_int_equal(cr_config_add(&c, 99, CR_VOTER, "x"), CR_EFULL);
    len = fx_config_encode(&c, buf);
    assert_int_equal(cr_config_decode(buf, len, &d), 0);
    assert_true(cr_config_equal(&c, &d));
    assert_int_equal(cr_config_voters(&d), CR_SERVERS_MAX);
}

/* Configuration edits validate their input. */
static void config_edits_validate(void **state)
{
    struct cr_config c;
    char address[CR_ADDRESS_MAX + 1];
    (void)state;
    memset(&c, 0, sizeof c);
    memset(address, 'a', sizeof address - 1);
    address[sizeof address - 1] = 0;
    assert_int_equal(cr_config_add(&c, 0, CR_VOTER, "x"), CR_EINVAL);
    assert_int_equal(cr_config_add(&c, 1, CR_VOTER, address), CR_EINVAL);
    assert_int_equal(cr_config_add(&c, 1, (enum cr_suffrage)7, "x"), CR_EINVAL);
    assert_int_equal(c.n, 0);
    assert_int_equal(cr_config_add(&c, 1, CR_VOTER, "x"), 0);
    assert_int_equal(cr_config_add(&c, 1, CR_LEARNER, "y"), CR_EEXIST);
    assert_int_equal(cr_config_remove(&c, 2), CR_ENOTFOUND);
    assert_int_equal(cr_config_remove(&c, 1), 0);
    assert_int_equal(c.n, 0);
    assert_null(cr_config_get(&c, 1));
}

/* Decoding rejects every malformed encoding with CR_ECORRUPT. */
static void config_decode_rejects_malformed(void **state)
{
    struct cr_config c, d;
    uint8_t good[FX_CONFIG_BUF], bad[FX_CONFIG_BUF];
    size_t len;
    /* Offsets in the encoding of the first server. */
    const size_t id = 2, suffrage = 10, flags = 11, alen = 12, addr = 13;
    (void)state;
    memset(&c, 0, sizeof c);
    assert_int_equal(cr_config_add(&c, 1, CR_VOTER, "ab"), 0);
    assert_int_equal(cr_config_add(&c, 2, CR_LEARNER, "cd"), 0);
    len = fx_config_encode(&c, good);
    assert_int_equal(cr_config_decode(good, len, &d), 0);

    /* Every proper prefix, and one extra byte. */
    for (size_t n = 0; n < len; n++) {
        assert_int_equal(cr_config_decode(good, n, &d), CR_ECORRUPT);
    }
    memcpy(bad, good, len);
    bad[len] = 0;
    assert_int_equal(cr_config_decode(bad, len + 1, &d), CR_ECORRUPT);

#define CORRUPT(offset, value)                                         \
    do {                                                               \
        memcpy(bad, good, len);                                        \
        bad[offset] = (uint8_t)(value);                                \
        assert_int_equal(cr_config_decode(bad, len, &d), CR_ECORRUPT); \
    } while (0)
    CORRUPT(0, 0);                  /* version */
    CORRUPT(0, 2);                  /* version */
    CORRUPT(1, CR_SERVERS_MAX + 1); /* too many servers */
    CORRUPT(1, 3);                  /* more servers than bytes */
    CORRUPT(id, 0);                 /* id 0 (with the rest 0) */
    CORRUPT(suffrage, 0);           /* suffrage */
    CORRUPT(suffrage, 3);           /* suffrage */
    CORRUPT(flags, 1);              /* a voter cannot be promoted */
    CORRUPT(flags, 4);              /* unknown flag */
    CORRUPT(alen, 3);               /* address runs over */
    CORRUPT(alen, 200);             /* address too long */
    CORRUPT(addr, 0);               /* NUL inside the address */
    CORRUPT(len - 3 - 2 - 8, 1);    /* duplicate id (2 -> 1) */
    CORRUPT(1, 1);                  /* fewer servers than bytes */
#undef CORRUPT
}

static uint64_t next_random(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Decoding is total: random bytes and random mutations of a valid
 * encoding give 0 or CR_ECORRUPT, never a crash; what decodes is exactly
 * the encoding of the result. */
static void config_decode_fuzz(void **state)
{
    struct cr_config c, d;
    uint8_t good[FX_CONFIG_BUF], buf[FX_CONFIG_BUF], again[FX_CONFIG_BUF];
    size_t good_len;
    uint64_t s = 12345;
    unsigned ok = 0;
    (void)state;
    config_sample(&c);
    good_len = fx_config_encode(&c, good);
    for (unsigned i = 0; i < 2000; i++) {
        size_t len;
        int rv;
        if (i % 2 == 0) {
            /* Random bytes, with plausible headers now and then. */
            len = (size_t)(next_random(&s) % 80);
            for (size_t j = 0; j < len; j++) {
                buf[j] = (uint8_t)next_random(&s);
            }
            if (len >= 2 && i % 4 == 0) {
                buf[0] = 1;
                buf[1] = (uint8_t)(next_random(&s) % 4);
            }
        } else {
            /* A valid encoding with a few bytes changed, maybe cut. */
            len = good_len;
            memcpy(buf, good, len);
            for (unsigned k = 0; k < 1 + i % 3; k++) {
                buf[next_random(&s) % len] = (uint8_t)next_random(&s);
            }
            if (i % 5 == 1) {
                len = (size_t)(next_random(&s) % (len + 1));
            }
        }
        rv = cr_config_decode(buf, len, &d);
        assert_true(rv == 0 || rv == CR_ECORRUPT);
        if (rv == 0) {
            ok++;
            assert_true(d.n <= CR_SERVERS_MAX);
            assert_int_equal(cr_config_encoded_size(&d), len);
            cr_config_encode(&d, again);
            assert_memory_equal(again, buf, len);
        }
    }
    /* Some mutations keep the encoding valid (address bytes). */
    assert_true(ok > 0);
}

/* With an argument, runs only the tests whose names match it (cmocka's
 * pattern: * and ? wildcards). */
int main(int argc, char **argv)
{
    if (argc > 1) {
        cmocka_set_test_filter(argv[1]);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(add_server_joins_as_learner_and_is_promoted),
        cmocka_unit_test(learner_does_not_count_for_commit),
        cmocka_unit_test(only_one_uncommitted_change),
        cmocka_unit_test(no_change_before_leader_commits_own_term),
        cmocka_unit_test(change_refused_off_leader),
        cmocka_unit_test(config_takes_effect_on_append_on_leader),
        cmocka_unit_test(config_takes_effect_on_append_on_follower),
        cmocka_unit_test(config_reverts_when_entry_truncated),
        cmocka_unit_test(remove_follower),
        cmocka_unit_test(remove_leader_steps_down_and_never_campaigns),
        cmocka_unit_test(config_encode_decode_round_trip),
        cmocka_unit_test(config_edits_validate),
        cmocka_unit_test(config_decode_rejects_malformed),
        cmocka_unit_test(config_decode_fuzz),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
