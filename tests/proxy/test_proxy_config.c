/* craft-proxy's configuration (--link, --node, cluster files), counters and
 * timeline (harness/proxy/proxy_config.c, proxy_stats.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "proxy_config.h"
#include "proxy_stats.h"

static char errmsg[CP_ERRMSG_SIZE];

static void link_flags(void **state)
{
    struct cp_config c;
    static const char *const bad[] = {
        "1-2",
        "1-2=127.0.0.1:0",
        "1-*=127.0.0.1:0,127.0.0.1:1",
        "1-1=127.0.0.1:0,127.0.0.1:1",
        "1-2=127.0.0.1,127.0.0.1:1",
        "1-2=127.0.0.1:0,127.0.0.1:70000",
        "1-2=127.0.0.1:0,:1",
        "1-2=127.0.0.1:0,127.0.0.1:x",
        "1-2=::1:5,127.0.0.1:1",
    };
    (void)state;
    cp_config_init(&c);
    assert_int_equal(
        cp_config_link_arg(&c, "1-2=127.0.0.1:61012,127.0.0.1:50052", errmsg),
        0);
    assert_int_equal(
        cp_config_link_arg(&c, "2-1=[::1]:0,localhost:50051", errmsg), 0);
    assert_int_equal(c.n_links, 2);
    assert_int_equal(c.links[0].from, 1);
    assert_int_equal(c.links[0].to, 2);
    assert_string_equal(c.links[0].listen, "127.0.0.1:61012");
    assert_string_equal(c.links[0].target, "127.0.0.1:50052");
    assert_string_equal(c.links[1].listen, "[::1]:0");
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (cp_config_link_arg(&c, bad[i], errmsg) == 0) {
            fail_msg("--link %s was accepted", bad[i]);
        }
    }
    assert_int_equal(c.n_links, 2);
    assert_int_equal(
        cp_config_link_arg(&c, "1-2=127.0.0.1:0,127.0.0.1:50052", errmsg), 0);
    assert_int_equal(cp_config_finish(&c, errmsg), CP_EINVAL);
    assert_non_null(strstr(errmsg, "1-2 is given twice"));
    cp_config_close(&c);
}

static void nodes_make_a_mesh(void **state)
{
    struct cp_config c;
    (void)state;
    cp_config_init(&c);
    assert_int_equal(cp_config_node_arg(&c, "1=127.0.0.1:50051", errmsg), 0);
    assert_int_equal(cp_config_node_arg(&c, "2=127.0.0.1:50052", errmsg), 0);
    assert_int_equal(cp_config_node_arg(&c, "3=127.0.0.1:50053", errmsg), 0);
    assert_int_equal(cp_config_node_arg(&c, "3=127.0.0.1:50054", errmsg),
                     CP_EINVAL);
    assert_int_equal(cp_config_node_arg(&c, "0=127.0.0.1:1", errmsg),
                     CP_EINVAL);
    assert_int_equal(cp_config_node_arg(&c, "4", errmsg), CP_EINVAL);
    /* An explicit link wins over the generated one. */
    assert_int_equal(
        cp_config_link_arg(&c, "2-3=127.0.0.1:61023,127.0.0.1:50053", errmsg),
        0);
    assert_int_equal(cp_config_finish(&c, errmsg), 0);
    assert_int_equal(c.n_links, 6);
    for (size_t i = 0; i < c.n_links; i++) {
        const struct cp_link_spec *l = &c.links[i];
        char want[32];
        snprintf(want, sizeof want, "127.0.0.1:5005%u", (unsigned)l->to);
        assert_string_equal(l->target, want);
        if (l->from == 2 && l->to == 3) {
            assert_string_equal(l->listen, "127.0.0.1:61023");
        } else {
            assert_string_equal(l->listen, "127.0.0.1:0");
        }
        for (size_t j = 0; j < i; j++) {
            assert_false(c.links[j].from == l->from && c.links[j].to == l->to);
        }
    }
    cp_config_close(&c);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void cluster_file(void **state)
{
    struct cp_config c;
    char path[] = "/tmp/test_proxy_config.XXXXXX";
    int fd = mkstemp(path);
    (void)state;
    assert_true(fd >= 0);
    close(fd);
    write_file(path,
               "# a 2-node cluster\n"
               "\n"
               "link 1-2 127.0.0.1:61012 127.0.0.1:50052   # to node 2\n"
               "  node 1 127.0.0.1:50051\n"
               "node 2\t127.0.0.1:50052\n");
    cp_config_init(&c);
    assert_int_equal(cp_config_load(&c, path, errmsg), 0);
    assert_int_equal(cp_config_finish(&c, errmsg), 0);
    assert_int_equal(c.n_links, 2);
    assert_string_equal(c.links[0].listen, "127.0.0.1:61012");
    assert_int_equal(c.links[1].from, 2);
    assert_int_equal(c.links[1].to, 1);
    cp_config_close(&c);

    write_file(path,
               "link 1-2 127.0.0.1:61012 127.0.0.1:50052\n"
               "link 2-1 127.0.0.1:61021\n");
    cp_config_init(&c);
    assert_int_equal(cp_config_load(&c, path, errmsg), CP_EINVAL);
    assert_non_null(strstr(errmsg, ":2: expected"));
    cp_config_close(&c);

    write_file(path, "node 1 127.0.0.1:50051\nnode x 127.0.0.1:50052\n");
    cp_config_init(&c);
    assert_int_equal(cp_config_load(&c, path, errmsg), CP_EINVAL);
    assert_non_null(strstr(errmsg, ":2: node id"));
    cp_config_close(&c);

    unlink(path);
    cp_config_init(&c);
    assert_int_equal(cp_config_load(&c, path, errmsg), CP_EIO);
    assert_non_null(strstr(errmsg, "cannot open"));
    cp_config_close(&c);
}

static void unary_methods(void **state)
{
    struct cp_config c;
    (void)state;
    cp_config_init(&c);
    assert_int_equal(
        cp_config_unary_arg(&c, "/raft.RaftService/AppendEntries", errmsg), 0);
    assert_int_equal(
        cp_config_unary_arg(&c, "/raft.RaftService/AppendEntries", errmsg), 0);
    assert_int_equal(c.n_unary, 1); /* no repeats */
    assert_int_equal(cp_config_unary_arg(&c, "AppendEntries", errmsg),
                     CP_EINVAL);
    assert_non_null(strstr(errmsg, "full method name"));
    cp_config_close(&c);
}

static bool has_unary(const struct cp_config *c, const char *m)
{
    for (size_t i = 0; i < c->n_unary; i++) {
        if (strcmp(c->unary[i], m) == 0) {
            return true;
        }
    }
    return false;
}

/* proto/raft.proto: every method but the client-streaming InstallSnapshot. */
static void unary_from_raft_proto(void **state)
{
    struct cp_config c;
    (void)state;
    cp_config_init(&c);
    assert_int_equal(cp_config_unary_from(&c, CP_RAFT_PROTO, errmsg), 0);
    assert_int_equal(c.n_unary, 17);
    assert_true(has_unary(&c, "/raft.RaftService/AppendEntries"));
    assert_true(has_unary(&c, "/raft.RaftService/RequestVote"));
    assert_true(has_unary(&c, "/raft.RaftService/Delete"));
    assert_false(has_unary(&c, "/raft.RaftService/InstallSnapshot"));
    cp_config_close(&c);
}

static void unary_from_scanner(void **state)
{
    struct cp_config c;
    char path[] = "/tmp/test_proxy_proto.XXXXXX";
    int fd = mkstemp(path);
    (void)state;
    assert_true(fd >= 0);
    close(fd);
    write_file(path,
               "// service Fake { rpc Nope(A) returns (B); }\n"
               "syntax = \"proto3\";\n"
               "package a.b;\n"
               "/* rpc Hidden(A) returns (B); */\n"
               "message M { message N { string s = 1; } }\n"
               "service S {\n"
               "  option deprecated = true;\n"
               "  rpc One(M) returns (M);\n"
               "  rpc Two(stream M) returns (M);\n"
               "  rpc Three(M) returns (stream M);\n"
               "  rpc Four ( .a.b.M ) returns ( M ) { option idempotency_level "
               "= NO_SIDE_EFFECTS; }\n"
               "}\n"
               "service T { rpc Five(M) returns (M) {} }\n"
               "enum E { X = 0; }\n");
    cp_config_init(&c);
    assert_int_equal(cp_config_unary_from(&c, path, errmsg), 0);
    assert_int_equal(c.n_unary, 3);
    assert_string_equal(c.unary[0], "/a.b.S/One");
    assert_string_equal(c.unary[1], "/a.b.S/Four");
    assert_string_equal(c.unary[2], "/a.b.T/Five");
    cp_config_close(&c);

    write_file(path, "service S { rpc One(M); }\n");
    cp_config_init(&c);
    assert_int_equal(cp_config_unary_from(&c, path, errmsg), CP_EINVAL);
    assert_non_null(strstr(errmsg, "cannot read the rpc"));
    cp_config_close(&c);

    write_file(path, "message M {}\n");
    cp_config_init(&c);
    assert_int_equal(cp_config_unary_from(&c, path, errmsg), CP_EINVAL);
    assert_non_null(strstr(errmsg, "no unary method"));
    cp_config_close(&c);
    unlink(path);
}

static void counters_per_method(void **state)
{
    struct cp_link_stats s;
    struct cp_counters *a, *b;
    char name[64];
    (void)state;
    cp_stats_init(&s);
    a = cp_stats_get(&s, "/a.S/M", 6);
    a->calls++;
    b = cp_stats_get(&s, "/a.S/Mx", 7);
    assert_ptr_not_equal(a, b);
    assert_ptr_equal(cp_stats_get(&s, "/a.S/M", 6), a);
    assert_int_equal(cp_stats_get(&s, "/a.S/M", 6)->calls, 1);
    /* Past the limit, further methods share the "(other)" entry. */
    for (int i = 0; i < CP_STATS_METHODS_MAX + 5; i++) {
        int n = snprintf(name, sizeof name, "/m.S/M%d", i);
        cp_stats_get(&s, name, (size_t)n)->calls++;
    }
    assert_int_equal(s.n, CP_STATS_METHODS_MAX);
    assert_true(s.other.c.calls >= 5);
    assert_string_equal(s.other.method, CP_STATS_OTHER);
    cp_stats_close(&s);
}

static void timeline_events(void **state)
{
    struct cp_timeline t;
    uint64_t ids[] = {4, 5};
    char buf[40];
    (void)state;
    cp_timeline_init(&t);
    assert_int_equal(cp_timeline_add(&t, 1700000000123, 42, "fault-set",
                                     "drop-request 1-2", ids, 2),
                     0);
    assert_int_equal(
        cp_timeline_add(&t, 1700000000456, 43, "heal", "", NULL, 0), 0);
    assert_int_equal(t.n, 2);
    assert_int_equal(t.v[0].seq, 1);
    assert_int_equal(t.v[1].seq, 2);
    assert_string_equal(t.v[0].action, "fault-set");
    assert_string_equal(t.v[0].detail, "drop-request 1-2");
    assert_int_equal(t.v[0].n_ids, 2);
    assert_int_equal(t.v[0].ids[1], 5);
    cp_format_time(t.v[0].wall_ms, buf, sizeof buf);
    assert_string_equal(buf, "2023-11-14T22:13:20.123Z");
    cp_format_time(0, buf, sizeof buf);
    assert_string_equal(buf, "1970-01-01T00:00:00.000Z");
    cp_timeline_close(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(link_flags),
        cmocka_unit_test(nodes_make_a_mesh),
        cmocka_unit_test(cluster_file),
        cmocka_unit_test(unary_methods),
        cmocka_unit_test(unary_from_raft_proto),
        cmocka_unit_test(unary_from_scanner),
        cmocka_unit_test(counters_per_method),
        cmocka_unit_test(timeline_events),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
