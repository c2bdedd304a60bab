/* craft-proxy's partitions (harness/proxy/proxy_partition.c): every spec
 * gives the directed cuts it promises, cuts become the drop rules of the
 * right links, and bad specs are refused with a message. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proxy_partition.h"

static const cp_node five[] = {3, 1, 5, 2, 4}; /* any order */
static char errmsg[CP_ERRMSG_SIZE];

/* The cuts of `spec` as "1>2 1>3 ..." (sorted, as returned). */
static void cuts_of(const char *spec,
                    const cp_node *nodes,
                    size_t n,
                    char *out,
                    size_t len)
{
    struct cp_cut *cuts;
    size_t n_cuts, used = 0;
    int rv = cp_partition_parse(spec, nodes, n, &cuts, &n_cuts, errmsg);
    if (rv != 0) {
        fail_msg("spec \"%s\" refused: %s", spec, errmsg);
    }
    out[0] = '\0';
    for (size_t i = 0; i < n_cuts; i++) {
        used += (size_t)snprintf(out + used, len - used, "%s%u>%u",
                                 i > 0 ? " " : "", (unsigned)cuts[i].from,
                                 (unsigned)cuts[i].to);
    }
    free(cuts);
}

static void expect(const char *spec, const char *want)
{
    char got[2048];
    cuts_of(spec, five, 5, got, sizeof got);
    if (strcmp(got, want) != 0) {
        fail_msg("spec \"%s\":\n  got  %s\n  want %s", spec, got, want);
    }
}

static void isolate(void **state)
{
    (void)state;
    expect("isolate 3", "1>3 2>3 3>1 3>2 3>4 3>5 4>3 5>3");
    expect("  isolate   3  ", "1>3 2>3 3>1 3>2 3>4 3>5 4>3 5>3");
}

static void components(void **state)
{
    const char *want = "1>3 1>4 1>5 2>3 2>4 2>5 3>1 3>2 4>1 4>2 5>1 5>2";
    (void)state;
    expect("components 1,2|3,4,5", want);
    expect("1,2|3,4,5", want);
    expect("components 1,2 3,4,5", want);
    expect("1, 2 | 3 ,4,5", want);
    /* Three groups; node 5 is in none and keeps its links. */
    expect("1|2|3,4", "1>2 1>3 1>4 2>1 2>3 2>4 3>1 3>2 4>1 4>2");
}

/* Node i of the ring hears the majority centred on itself and nobody
 * else: every node hears a majority, no two hear the same one. */
static void majorities_ring(void **state)
{
    (void)state;
    /* 1 hears 5,1,2; 2 hears 1,2,3; ... symmetric for 5 nodes. */
    expect("majorities-ring", "1>3 1>4 2>4 2>5 3>1 3>5 4>1 4>2 5>2 5>3");
    /* Another ring order, another partition. */
    expect("majorities-ring 1,3,5,2,4",
           "1>2 1>5 2>1 2>3 3>2 3>4 4>3 4>5 5>1 5>4");
    {
        /* Three nodes: each hears itself and the one before it. */
        static const cp_node three[] = {1, 2, 3};
        char got[256];
        cuts_of("majorities-ring", three, 3, got, sizeof got);
        assert_string_equal(got, "1>3 2>1 3>2");
    }
    {
        /* Four nodes: each hears 3 of them (itself and both neighbours);
         * six nodes: each hears 4, the window 2 before to 1 after. */
        static const cp_node six[] = {1, 2, 3, 4, 5, 6};
        char got[512];
        cuts_of("majorities-ring", six, 4, got, sizeof got);
        assert_string_equal(got, "1>3 2>4 3>1 4>2");
        cuts_of("majorities-ring", six, 6, got, sizeof got);
        assert_string_equal(got,
                            "1>4 1>5 2>5 2>6 3>1 3>6 4>1 4>2 5>2 5>3 "
                            "6>3 6>4");
    }
}

static void bridge(void **state)
{
    const char *want = "1>4 1>5 2>4 2>5 4>1 4>2 5>1 5>2";
    (void)state;
    expect("bridge", want);
    expect("bridge 1,2|3|4,5", want);
    expect("bridge 1,2 3 4,5", want);
    expect("bridge 1|2,3|4", "1>4 4>1");
    /* A row of nodes: first half, median, rest. */
    expect("bridge 5,4,3,2,1", "1>4 1>5 2>4 2>5 4>1 4>2 5>1 5>2");
    expect("bridge 2,1,3", "2>3 3>2");
}

static void one_way(void **state)
{
    (void)state;
    expect("one-way 1,2>3", "1>3 2>3");
    expect("one-way 4 > 5,1", "4>1 4>5");
}

static void bad_specs(void **state)
{
    static const char *const bad[] = {
        "",
        "   ",
        "isolate",
        "isolate 1 2",
        "isolate 9",
        "isolate 0",
        "isolate 99999999999",
        "components 1,2",
        "components 1,,2|3",
        "1,2|",
        "|1,2",
        "1,2|2,3",
        "1,2;3",
        "bridge 1|2",
        "bridge 1,2",
        "bridge 1,2|3|4|5",
        "one-way 1",
        "one-way 1>1",
        "one-way 1>2>3",
        "one-way 1|2>3",
        "majorities-ring 1,2|3,4",
        "partition 1|2",
        "isolate3",
    };
    (void)state;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct cp_cut *cuts = NULL;
        size_t n = 0;
        errmsg[0] = '\0';
        if (cp_partition_parse(bad[i], five, 5, &cuts, &n, errmsg) == 0) {
            free(cuts);
            fail_msg("spec \"%s\" was accepted", bad[i]);
        }
        assert_true(strlen(errmsg) > 0);
    }
    {
        static const cp_node two[] = {1, 2};
        struct cp_cut *cuts;
        size_t n;
        assert_int_equal(
            cp_partition_parse("bridge", two, 2, &cuts, &n, errmsg), CP_EINVAL);
        assert_non_null(strstr(errmsg, "at least 3"));
    }
    {
        struct cp_cut *cuts;
        size_t n;
        cp_partition_parse("isolate 9", five, 5, &cuts, &n, errmsg);
        assert_non_null(strstr(errmsg, "node 9"));
    }
}

/* The rules of a partition: a cut A>B drops requests on A-B, and answers
 * on B-A unless B>A is cut as well. */
static void cuts_to_rules(void **state)
{
    struct cp_cut *cuts;
    struct cp_fault *rules;
    size_t n_cuts, n_rules;
    char got[1024];
    size_t used = 0;
    (void)state;
    assert_int_equal(cp_partition_parse("components 1|2 one-way", five, 5,
                                        &cuts, &n_cuts, errmsg),
                     CP_EINVAL);
    assert_int_equal(
        cp_partition_parse("one-way 1>2,3", five, 5, &cuts, &n_cuts, errmsg),
        0);
    assert_int_equal(cp_partition_faults(cuts, n_cuts, true, &rules, &n_rules),
                     0);
    for (size_t i = 0; i < n_rules; i++) {
        char sel[CP_LINK_NAME_MAX];
        cp_selector_format(&rules[i].links, sel);
        used += (size_t)snprintf(got + used, sizeof got - used, "%s%s %s",
                                 i > 0 ? ", " : "",
                                 cp_fault_kind_name((int)rules[i].kind), sel);
        assert_true(rules[i].partition && rules[i].blackhole);
        assert_true(rules[i].probability == 1.0);
        assert_int_equal(cp_fault_check(&rules[i], errmsg), 0);
    }
    assert_string_equal(got,
                        "drop-request 1-2, drop-response 2-1, "
                        "drop-request 1-3, drop-response 3-1");
    free(rules);
    free(cuts);

    used = 0;
    assert_int_equal(
        cp_partition_parse("isolate 2", five, 5, &cuts, &n_cuts, errmsg), 0);
    assert_int_equal(cp_partition_faults(cuts, n_cuts, false, &rules, &n_rules),
                     0);
    assert_int_equal(n_rules, 8); /* both ways: requests only */
    for (size_t i = 0; i < n_rules; i++) {
        assert_int_equal(rules[i].kind, CP_DROP_REQUEST);
        assert_false(rules[i].blackhole);
        assert_true(rules[i].links.from == 2 || rules[i].links.to == 2);
    }
    free(rules);
    free(cuts);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(isolate),         cmocka_unit_test(components),
        cmocka_unit_test(majorities_ring), cmocka_unit_test(bridge),
        cmocka_unit_test(one_way),         cmocka_unit_test(bad_specs),
        cmocka_unit_test(cuts_to_rules),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
