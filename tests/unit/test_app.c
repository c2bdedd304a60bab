/* The replicated state machine (src/app): commands, the running total, the
 * key-value store, client sessions (dissertation §6.3), snapshots. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "craft/app.h"
#include "craft/error.h"

/* Allocations through cmocka, so that a leak fails the test; the Nth one
 * can be made to fail. */
struct alloc_state
{
    unsigned count;
    unsigned fail_at; /* 0: never */
};

static void *t_malloc(void *data, size_t size)
{
    struct alloc_state *st = data;
    if (++st->count == st->fail_at) {
        return NULL;
    }
    return test_malloc(size);
}

static void *t_realloc(void *data, void *ptr, size_t size)
{
    struct alloc_state *st = data;
    if (++st->count == st->fail_at) {
        return NULL;
    }
    return test_realloc(ptr, size);
}

static void t_free(void *data, void *ptr)
{
    (void)data;
    test_free(ptr);
}

struct fx
{
    struct alloc_state st;
    struct cr_alloc a;
    struct cr_app *app;
    uint64_t index;
};

static struct fx *fx_new(const struct cr_app_options *o)
{
    struct fx *f = test_calloc(1, sizeof *f);
    f->a.data = &f->st;
    f->a.malloc = t_malloc;
    f->a.realloc = t_realloc;
    f->a.free = t_free;
    assert_int_equal(cr_app_new(&f->app, o, &f->a), 0);
    return f;
}

static void fx_free(struct fx *f)
{
    cr_app_free(f->app);
    test_free(f);
}

/* Parses text and applies it as client (id, seq) at time t. */
static struct cr_result run(struct fx *f,
                            const char *text,
                            uint64_t id,
                            uint64_t seq,
                            uint64_t t)
{
    struct cr_command c;
    struct cr_result r;
    char err[128];
    assert_int_equal(cr_command_parse(text, &c, err), 0);
    c.client_id = id;
    c.sequence = seq;
    c.time_ms = t;
    assert_int_equal(cr_app_apply(f->app, ++f->index, &c, &r), 0);
    return r;
}

static void assert_value(struct fx *f, const char *key, const char *want)
{
    const char *v;
    size_t n;
    if (want == NULL) {
        assert_false(cr_app_get(f->app, key, strlen(key), &v, &n));
        return;
    }
    assert_true(cr_app_get(f->app, key, strlen(key), &v, &n));
    assert_int_equal(n, strlen(want));
    assert_memory_equal(v, want, n);
}

/* The text form of every operation, and its refusals. */
static void parse_text_forms(void **state)
{
    struct cr_command c;
    char err[128];
    const char *bad[] = {"",
                         "ADD 5",
                         "ADD 5 x",
                         "ADD 1 2 3",
                         "PUT k",
                         "GET",
                         "CAS k a",
                         "INCR k",
                         "INCR k x",
                         "DEL",
                         "FOO 1",
                         "TOTAL x",
                         "ADD 99999999999999999999 1",
                         "PUT a b c d e f"};
    (void)state;
    assert_int_equal(cr_command_parse("ADD 5 3", &c, err), 0);
    assert_int_equal(c.op, CR_OP_ADD);
    assert_int_equal(c.a, 5);
    assert_int_equal(c.b, 3);
    assert_int_equal(cr_command_parse("  add -10   2 ", &c, err), 0);
    assert_int_equal(c.a, -10);
    assert_int_equal(cr_command_parse("PUT k v", &c, err), 0);
    assert_int_equal(c.op, CR_OP_PUT);
    assert_memory_equal(c.key, "k", 1);
    assert_memory_equal(c.value, "v", 1);
    assert_int_equal(cr_command_parse("CAS k old new", &c, err), 0);
    assert_int_equal(c.op, CR_OP_CAS);
    assert_memory_equal(c.expected, "old", 3);
    assert_memory_equal(c.value, "new", 3);
    assert_int_equal(cr_command_parse("INCR n -4", &c, err), 0);
    assert_int_equal(c.a, -4);
    assert_int_equal(cr_command_parse("DEL k", &c, err), 0);
    assert_int_equal(c.op, CR_OP_DEL);
    assert_int_equal(cr_command_parse("GET k", &c, err), 0);
    assert_int_equal(c.op, CR_OP_GET);
    assert_int_equal(cr_command_parse("TOTAL", &c, err), 0);
    assert_int_equal(c.op, CR_OP_TOTAL);
    for (unsigned i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        if (cr_command_parse(bad[i], &c, err) != CR_EINVAL) {
            fail_msg("\"%s\" was accepted", bad[i]);
        }
        assert_true(strlen(err) > 0);
    }
}

/* Commands survive their log encoding; garbage never decodes to one that
 * reads outside the buffer. */
static void command_encoding(void **state)
{
    struct cr_command c, d;
    char err[128];
    uint8_t buf[512];
    (void)state;
    assert_int_equal(cr_command_parse("CAS key old new", &c, err), 0);
    c.client_id = 77;
    c.sequence = 9;
    c.time_ms = 123456;
    assert_true(cr_command_size(&c) <= sizeof buf);
    cr_command_encode(&c, buf);
    assert_int_equal(cr_command_decode(buf, cr_command_size(&c), &d), 0);
    assert_int_equal(d.op, CR_OP_CAS);
    assert_int_equal(d.client_id, 77);
    assert_int_equal(d.sequence, 9);
    assert_int_equal(d.time_ms, 123456);
    assert_int_equal(d.key_len, 3);
    assert_memory_equal(d.key, "key", 3);
    assert_memory_equal(d.expected, "old", 3);
    assert_memory_equal(d.value, "new", 3);
    /* Every shorter length is refused. */
    for (size_t n = 0; n < cr_command_size(&c); n++) {
        assert_int_equal(cr_command_decode(buf, n, &d), CR_ECORRUPT);
    }
    assert_int_equal(cr_command_decode(NULL, 0, &d), CR_ECORRUPT);
    /* Random bytes: refused, or decoded within the buffer. */
    srand(7);
    for (unsigned round = 0; round < 2000; round++) {
        size_t n = (size_t)rand() % sizeof buf;
        for (size_t i = 0; i < n; i++) {
            buf[i] = (uint8_t)rand();
        }
        if (n > 0 && round % 2 == 0) {
            buf[0] = 1;
        }
        if (cr_command_decode(buf, n, &d) == 0) {
            assert_true(d.key_len + d.value_len + d.expected_len <= n);
        }
    }
}

/* ADD answers the sum and adds it to the replicated running total. */
static void add_and_total(void **state)
{
    struct fx *f = fx_new(NULL);
    struct cr_result r;
    (void)state;
    r = run(f, "ADD 5 3", 0, 0, 1);
    assert_int_equal(r.status, CR_RESULT_OK);
    assert_int_equal(r.number, 8);
    assert_string_equal(r.text, "8");
    assert_int_equal(r.total, 8);
    r = run(f, "ADD 10 -2", 0, 0, 2);
    assert_int_equal(r.number, 8);
    assert_int_equal(r.total, 16);
    r = run(f, "ADD 100 200", 0, 0, 3);
    assert_int_equal(r.number, 300);
    assert_int_equal(cr_app_total(f->app), 316);
    assert_int_equal(cr_app_applied(f->app), 3);
    /* Overflow changes nothing and says so. */
    r = run(f, "ADD 9223372036854775807 1", 0, 0, 4);
    assert_int_equal(r.status, CR_RESULT_INVALID);
    assert_int_equal(cr_app_total(f->app), 316);
    fx_free(f);
}

static void key_value_operations(void **state)
{
    struct fx *f = fx_new(NULL);
    struct cr_result r;
    (void)state;
    assert_value(f, "k", NULL);
    r = run(f, "PUT k v1", 0, 0, 1);
    assert_int_equal(r.status, CR_RESULT_OK);
    assert_value(f, "k", "v1");
    r = run(f, "CAS k nope v2", 0, 0, 2);
    assert_string_equal(r.text, "false");
    assert_value(f, "k", "v1");
    r = run(f, "CAS k v1 v2", 0, 0, 3);
    assert_string_equal(r.text, "true");
    assert_value(f, "k", "v2");
    /* An absent key matches the empty expectation only: CAS of an absent
     * key with a non-empty expectation fails. */
    r = run(f, "CAS q x y", 0, 0, 4);
    assert_string_equal(r.text, "false");
    assert_value(f, "q", NULL);
    r = run(f, "INCR n 5", 0, 0, 5);
    assert_int_equal(r.number, 5);
    r = run(f, "INCR n -7", 0, 0, 6);
    assert_string_equal(r.text, "-2");
    assert_value(f, "n", "-2");
    r = run(f, "INCR k 1", 0, 0, 7);
    assert_int_equal(r.status, CR_RESULT_INVALID);
    assert_value(f, "k", "v2");
    r = run(f, "DEL k", 0, 0, 8);
    assert_string_equal(r.text, "1");
    assert_value(f, "k", NULL);
    r = run(f, "DEL k", 0, 0, 9);
    assert_string_equal(r.text, "0");
    assert_int_equal(cr_app_keys(f->app), 1);
    /* Many keys: the table grows, every key stays reachable. */
    for (unsigned i = 0; i < 2000; i++) {
        char text[64];
        snprintf(text, sizeof text, "PUT key%u val%u", i, i);
        (void)run(f, text, 0, 0, 10 + i);
    }
    for (unsigned i = 0; i < 2000; i += 2) {
        char text[64];
        snprintf(text, sizeof text, "DEL key%u", i);
        (void)run(f, text, 0, 0, 3000 + i);
    }
    for (unsigned i = 0; i < 2000; i++) {
        char key[32], val[32];
        snprintf(key, sizeof key, "key%u", i);
        snprintf(val, sizeof val, "val%u", i);
        assert_value(f, key, i % 2 == 0 ? NULL : val);
    }
    fx_free(f);
}

/* Dissertation §6.3: a retried request (same client, same sequence) is
 * answered from the session table and not applied again. */
static void retry_applied_once(void **state)
{
    struct fx *f = fx_new(NULL);
    struct cr_result r;
    (void)state;
    r = run(f, "ADD 5 3", 42, 1, 100);
    assert_false(r.duplicate);
    assert_int_equal(r.total, 8);
    r = run(f, "ADD 5 3", 42, 1, 200);
    assert_true(r.duplicate);
    assert_int_equal(r.number, 8);
    assert_string_equal(r.text, "8");
    assert_int_equal(cr_app_total(f->app), 8);
    r = run(f, "INCR c 1", 42, 2, 300);
    r = run(f, "INCR c 1", 42, 2, 301);
    assert_true(r.duplicate);
    assert_value(f, "c", "1");
    /* An older sequence than the last: refused, not applied. */
    r = run(f, "ADD 1 1", 42, 1, 400);
    assert_int_equal(r.status, CR_RESULT_STALE);
    assert_int_equal(cr_app_total(f->app), 8);
    /* Another client's sequence is its own. */
    r = run(f, "ADD 1 1", 43, 1, 500);
    assert_false(r.duplicate);
    assert_int_equal(cr_app_total(f->app), 10);
    assert_int_equal(cr_app_sessions(f->app), 2);
    /* A retry answers what the first attempt did: the total right after
     * it, not the total now (CLIENT-02 found this one). */
    r = run(f, "ADD 5 3", 42, 1, 600);
    assert_int_equal(r.status, CR_RESULT_STALE);
    r = run(f, "ADD 1 1", 43, 1, 700);
    assert_true(r.duplicate);
    assert_int_equal(r.total, 10);
    (void)run(f, "ADD 100 0", 44, 1, 800);
    r = run(f, "ADD 1 1", 43, 1, 900);
    assert_true(r.duplicate);
    assert_int_equal(r.total, 10);
    assert_int_equal(cr_app_total(f->app), 110);
    fx_free(f);
}

/* Sessions expire by the leader's clock in the commands, the same on
 * every server; the table is bounded, least recently used first out. */
static void sessions_expire_deterministically(void **state)
{
    struct cr_app_options o;
    struct fx *f, *g;
    struct cr_result r;
    (void)state;
    cr_app_options_default(&o);
    o.session_ttl_ms = 1000;
    o.max_sessions = 3;
    f = fx_new(&o);
    (void)run(f, "ADD 1 0", 1, 1, 0);
    r = run(f, "ADD 1 0", 1, 1, 1000);
    assert_true(r.duplicate); /* within the TTL */
    r = run(f, "ADD 1 0", 1, 1, 2001);
    assert_false(r.duplicate); /* expired: applied again, by design */
    assert_int_equal(cr_app_total(f->app), 2);
    (void)run(f, "ADD 1 0", 2, 1, 2002);
    (void)run(f, "ADD 1 0", 3, 1, 2003);
    (void)run(f, "ADD 1 0", 4, 1, 2004); /* evicts client 1 */
    assert_int_equal(cr_app_sessions(f->app), 3);
    r = run(f, "ADD 1 0", 2, 1, 2005);
    assert_true(r.duplicate);
    /* The same commands give the same state on another server. */
    g = fx_new(&o);
    (void)run(g, "ADD 1 0", 1, 1, 0);
    (void)run(g, "ADD 1 0", 1, 1, 1000);
    (void)run(g, "ADD 1 0", 1, 1, 2001);
    (void)run(g, "ADD 1 0", 2, 1, 2002);
    (void)run(g, "ADD 1 0", 3, 1, 2003);
    (void)run(g, "ADD 1 0", 4, 1, 2004);
    (void)run(g, "ADD 1 0", 2, 1, 2005);
    assert_int_equal(cr_app_digest(f->app), cr_app_digest(g->app));
    (void)run(g, "PUT x y", 0, 0, 2006);
    assert_int_not_equal(cr_app_digest(f->app), cr_app_digest(g->app));
    fx_free(f);
    fx_free(g);
}

/* The digest is kept up to date by every change: two histories that end
 * in the same state (overwrites, deletes, a session that expired and
 * started again) have the same digest, and any difference shows. */
static void digest_follows_every_change(void **state)
{
    struct cr_app_options o;
    struct fx *f, *g;
    (void)state;
    cr_app_options_default(&o);
    o.session_ttl_ms = 1000;
    f = fx_new(&o);
    g = fx_new(&o);
    (void)run(f, "PUT a 1", 0, 0, 0);
    (void)run(f, "PUT b 2", 0, 0, 0);
    (void)run(f, "PUT a 3", 0, 0, 0);
    (void)run(f, "DEL b", 0, 0, 0);
    (void)run(f, "PUT s 1", 5, 1, 10);
    (void)run(f, "PUT s 2", 5, 2, 20);
    (void)run(f, "PUT s 3", 5, 3, 30);
    (void)run(f, "PUT t 1", 6, 7, 40);
    (void)run(f, "PUT t 2", 6, 1, 5000); /* 6 expired: starts again */

    (void)run(g, "PUT a 3", 0, 0, 0);
    (void)run(g, "PUT s 3", 5, 3, 30);
    (void)run(g, "PUT t 2", 6, 1, 5000);
    assert_int_not_equal(cr_app_digest(f->app), cr_app_digest(g->app));
    cr_app_skip(g->app, f->index); /* the same applied index */
    assert_int_equal(cr_app_digest(f->app), cr_app_digest(g->app));

    (void)run(f, "PUT a 4", 0, 0, 5001);
    g->index = f->index - 1;
    (void)run(g, "PUT a 5", 0, 0, 5001);
    assert_int_not_equal(cr_app_digest(f->app), cr_app_digest(g->app));
    fx_free(f);
    fx_free(g);
}

/* A snapshot restores the whole state, sessions included, on a server
 * that had nothing; damaged images are refused and change nothing. */
static void snapshot_round_trip(void **state)
{
    struct fx *f = fx_new(NULL);
    struct fx *g = fx_new(NULL);
    struct cr_result r;
    uint8_t *img;
    size_t n;
    uint64_t before;
    (void)state;
    for (unsigned i = 0; i < 300; i++) {
        char text[64];
        snprintf(text, sizeof text, "PUT k%u %u", i % 50, i);
        (void)run(f, text, i % 7 + 1, i + 1, i);
        (void)run(f, "ADD 2 3", 0, 0, i);
    }
    n = cr_app_snapshot_size(f->app);
    img = test_malloc(n);
    assert_int_equal(cr_app_snapshot(f->app, img, n), 0);
    assert_int_equal(cr_app_snapshot(f->app, img, n - 1), CR_EINVAL);
    assert_int_equal(cr_app_restore(g->app, img, n), 0);
    assert_int_equal(cr_app_digest(g->app), cr_app_digest(f->app));
    assert_int_equal(cr_app_total(g->app), 1500);
    assert_int_equal(cr_app_applied(g->app), cr_app_applied(f->app));
    /* The sessions came along: a retry is still answered from them. */
    g->index = f->index;
    r = run(g, "PUT k1 zzz", 299 % 7 + 1, 300, 999);
    assert_true(r.duplicate);
    /* Every truncation is refused; the state stays. */
    before = cr_app_digest(g->app);
    for (size_t cut = 0; cut < n; cut += 1 + cut / 8) {
        assert_int_equal(cr_app_restore(g->app, img, cut), CR_ECORRUPT);
        assert_int_equal(cr_app_digest(g->app), before);
    }
    img[0] ^= 1;
    assert_int_equal(cr_app_restore(g->app, img, n), CR_ECORRUPT);
    assert_int_equal(cr_app_digest(g->app), before);
    test_free(img);
    fx_free(f);
    fx_free(g);
}

/* Out of memory while applying or restoring: an error, nothing leaks,
 * and the state is as before. */
static void allocation_failures(void **state)
{
    (void)state;
    for (unsigned n = 1;; n++) {
        struct fx *f = fx_new(NULL);
        struct cr_command c;
        struct cr_result r;
        char err[128];
        uint64_t before;
        bool failed = false;
        f->st.count = 0;
        f->st.fail_at = n;
        for (unsigned i = 0; i < 200 && !failed; i++) {
            char text[64];
            int rv;
            snprintf(text, sizeof text, "PUT key%u value%u", i, i);
            assert_int_equal(cr_command_parse(text, &c, err), 0);
            c.client_id = i + 1;
            c.sequence = 1;
            before = cr_app_digest(f->app);
            rv = cr_app_apply(f->app, ++f->index, &c, &r);
            if (rv != 0) {
                assert_int_equal(rv, CR_ENOMEM);
                assert_int_equal(cr_app_digest(f->app), before);
                failed = true;
            }
        }
        fx_free(f);
        if (!failed) {
            break;
        }
    }
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parse_text_forms),
        cmocka_unit_test(command_encoding),
        cmocka_unit_test(add_and_total),
        cmocka_unit_test(key_value_operations),
        cmocka_unit_test(retry_applied_once),
        cmocka_unit_test(sessions_expire_deterministically),
        cmocka_unit_test(digest_follows_every_change),
        cmocka_unit_test(snapshot_round_trip),
        cmocka_unit_test(allocation_failures),
    };
    if (argc > 1) {
        cmocka_set_test_filter(argv[1]);
    }
    return cmocka_run_group_tests(tests, NULL, NULL);
}
