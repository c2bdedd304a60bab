/* craft-proxy's fault rules and decisions (harness/proxy/proxy_fault.c):
 * selectors, the per-link generator, rule checks, and cp_decide: the same
 * seed gives the same decisions, probabilities hold within statistical
 * bounds, method and link filters apply. Seeds are fixed; a failure
 * prints the seed and the rule. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proxy_fault.h"

#define SEED 20240501u
#define AE "/raft.RaftService/AppendEntries"
#define RV "/raft.RaftService/RequestVote"

static char errmsg[CP_ERRMSG_SIZE];

static struct cp_fault rule(const char *links,
                            enum cp_fault_kind kind,
                            double p)
{
    struct cp_fault f;
    memset(&f, 0, sizeof f);
    assert_int_equal(cp_selector_parse(links, &f.links, errmsg), 0);
    f.kind = kind;
    f.probability = p;
    return f;
}

static uint64_t add(struct cp_faults *fs, struct cp_fault f)
{
    uint64_t id;
    assert_int_equal(cp_fault_check(&f, errmsg), 0);
    assert_int_equal(cp_faults_add(fs, &f, &id), 0);
    return id;
}

static void decide(const struct cp_faults *fs,
                   cp_node from,
                   cp_node to,
                   const char *method,
                   struct cp_rng *rng,
                   struct cp_decision *d)
{
    cp_decide(fs, from, to, method, strlen(method), rng, d);
}

/* ------------------------------------------------------------------------
 * Selectors and link names */

static void selectors_parse(void **state)
{
    static const struct
    {
        const char *s;
        cp_node from, to;
    } good[] = {
        {"1-2", 1, 2},       {"1-*", 1, 0}, {"*-2", 0, 2},
        {"*", 0, 0},         {"*-*", 0, 0}, {"4294967295-1", 4294967295u, 1},
        {"10-200", 10, 200},
    };
    static const char *const bad[] = {
        "",      "1",    "1-",   "-2",           "0-1", "1-0", "1-1",  "a-b",
        "1-2-3", "1 -2", "1-2 ", "4294967296-1", "**",  "*-",  "+1-2", "1-x",
    };
    struct cp_selector s;
    char buf[CP_LINK_NAME_MAX];
    (void)state;
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        assert_int_equal(cp_selector_parse(good[i].s, &s, errmsg), 0);
        assert_int_equal(s.from, good[i].from);
        assert_int_equal(s.to, good[i].to);
        cp_selector_format(&s, buf);
        if (strcmp(good[i].s, "*-*") != 0) {
            assert_string_equal(buf, good[i].s);
        }
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        errmsg[0] = '\0';
        if (cp_selector_parse(bad[i], &s, errmsg) == 0) {
            fail_msg("selector \"%s\" was accepted", bad[i]);
        }
        assert_true(strlen(errmsg) > 0);
    }
}

static void link_names_have_no_wildcards(void **state)
{
    cp_node from, to;
    char buf[CP_LINK_NAME_MAX];
    (void)state;
    assert_int_equal(cp_link_parse("3-12", &from, &to, errmsg), 0);
    assert_int_equal(from, 3);
    assert_int_equal(to, 12);
    cp_link_format(from, to, buf);
    assert_string_equal(buf, "3-12");
    assert_int_equal(cp_link_parse("1-*", &from, &to, errmsg), CP_EINVAL);
    assert_int_equal(cp_link_parse("*", &from, &to, errmsg), CP_EINVAL);
    assert_int_equal(cp_link_parse("2-2", &from, &to, errmsg), CP_EINVAL);
    assert_non_null(strstr(errmsg, "two different nodes"));
}

static void selectors_match_and_cover(void **state)
{
    struct cp_selector all = {0, 0}, from1 = {1, 0}, to2 = {0, 2}, l12 = {1, 2},
                       l13 = {1, 3};
    (void)state;
    assert_true(cp_selector_matches(&all, 5, 6));
    assert_true(cp_selector_matches(&from1, 1, 9));
    assert_false(cp_selector_matches(&from1, 9, 1));
    assert_true(cp_selector_matches(&to2, 7, 2));
    assert_false(cp_selector_matches(&to2, 2, 7));
    assert_true(cp_selector_matches(&l12, 1, 2));
    assert_false(cp_selector_matches(&l12, 2, 1));
    assert_true(cp_selector_covers(&all, &l12));
    assert_true(cp_selector_covers(&all, &from1));
    assert_true(cp_selector_covers(&from1, &l13));
    assert_false(cp_selector_covers(&from1, &to2));
    assert_false(cp_selector_covers(&l12, &from1));
    assert_false(cp_selector_covers(&from1, &all));
    assert_true(cp_selector_is_link(&l12));
    assert_false(cp_selector_is_link(&from1));
}

/* ------------------------------------------------------------------------
 * The generator */

static void rng_is_seeded_per_link(void **state)
{
    struct cp_rng a, b, c, d;
    int same_cd = 0;
    (void)state;
    cp_rng_seed(&a, SEED, "1-2");
    cp_rng_seed(&b, SEED, "1-2");
    cp_rng_seed(&c, SEED, "2-1");
    cp_rng_seed(&d, SEED + 1, "1-2");
    for (int i = 0; i < 1000; i++) {
        uint64_t x = cp_rng_next(&a), y = cp_rng_next(&b);
        uint64_t z = cp_rng_next(&c), w = cp_rng_next(&d);
        assert_int_equal(x, y);
        same_cd += x == z || x == w;
    }
    assert_int_equal(same_cd, 0);
}

static void rng_ranges(void **state)
{
    struct cp_rng r;
    double sum = 0;
    uint32_t seen_max = 0;
    (void)state;
    cp_rng_seed(&r, SEED, "range");
    for (int i = 0; i < 100000; i++) {
        double u = cp_rng_uniform(&r);
        uint32_t k = cp_rng_upto(&r, 10);
        assert_true(u >= 0.0 && u < 1.0);
        assert_true(k <= 10);
        seen_max = k > seen_max ? k : seen_max;
        sum += u;
    }
    assert_int_equal(seen_max, 10);
    /* Mean of U[0,1) over 1e5 draws: sigma 0.0009. */
    assert_true(fabs(sum / 100000 - 0.5) < 0.005);
}

/* ------------------------------------------------------------------------
 * Rule checks */

static void bad_rules_are_refused(void **state)
{
    struct cp_fault f;
    uint32_t ms;
    (void)state;
    f = rule("1-2", CP_DROP_REQUEST, 1.0);
    assert_int_equal(cp_fault_check(&f, errmsg), 0);
    f.probability = -0.1;
    assert_int_equal(cp_fault_check(&f, errmsg), CP_EINVAL);
    assert_non_null(strstr(errmsg, "outside [0, 1]"));
    f.probability = 1.5;
    assert_int_equal(cp_fault_check(&f, errmsg), CP_EINVAL);
    f.probability = NAN;
    assert_int_equal(cp_fault_check(&f, errmsg), CP_EINVAL);
    f.probability = 0.0;
    assert_int_equal(cp_fault_check(&f, errmsg), 0);
    f.kind = (enum cp_fault_kind)0;
    assert_int_equal(cp_fault_check(&f, errmsg), CP_EINVAL);
    f.kind = (enum cp_fault_kind)9;
    assert_int_equal(cp_fault_check(&f, errmsg), CP_EINVAL);

    f = rule("1-2", CP_DROP_REQUEST, 1.0);
    f.delay_ms = 5;
    assert_int_equal(cp_fault_check(&f, errmsg), CP_EINVAL);
    assert_non_null(strstr(errmsg, "no delay"));
    f = rule("1-2", CP_DELAY_REQUEST, 1.0);
    assert_int_equal(cp_fault_check(&f, errmsg), CP_EINVAL);
    f.jitter_ms = 3;
    assert_int_equal(cp_fault_check(&f, errmsg), 0);
    f.delay_ms = CP_DELAY_MAX_MS + 1;
    assert_int_equal(cp_fault_check(&f, errmsg), CP_EINVAL);
    f = rule("1-2", CP_DELAY_RESPONSE, 1.0);
    f.delay_ms = 10;
    f.blackhole = true;
    assert_int_equal(cp_fault_check(&f, errmsg), CP_EINVAL);
    assert_non_null(strstr(errmsg, "blackhole"));
    f = rule("1-2", CP_DUPLICATE, 1.0);
    assert_int_equal(cp_fault_check(&f, errmsg), 0);

    static const char *const methods[] = {
        "AppendEntries", "/raft.RaftService", "//x", "/a/", "/a/b/c", "/a b/c",
    };
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++) {
        f = rule("*", CP_RESET, 1.0);
        snprintf(f.method, sizeof f.method, "%s", methods[i]);
        if (cp_fault_check(&f, errmsg) == 0) {
            fail_msg("method \"%s\" was accepted", methods[i]);
        }
    }
    snprintf(f.method, sizeof f.method, "%s", AE);
    assert_int_equal(cp_fault_check(&f, errmsg), 0);

    assert_int_equal(cp_delay_check(-1, "delay_ms", &ms, errmsg), CP_EINVAL);
    assert_non_null(strstr(errmsg, "negative"));
    assert_int_equal(
        cp_delay_check(CP_DELAY_MAX_MS + 1, "jitter_ms", &ms, errmsg),
        CP_EINVAL);
    assert_int_equal(cp_delay_check(250, "delay_ms", &ms, errmsg), 0);
    assert_int_equal(ms, 250);
}

static void kinds_round_trip(void **state)
{
    enum cp_fault_kind k;
    (void)state;
    for (int i = CP_DROP_REQUEST; i <= CP_FAULT_KIND_MAX; i++) {
        const char *name = cp_fault_kind_name(i);
        assert_non_null(name);
        assert_int_equal(cp_fault_kind_parse(name, &k, errmsg), 0);
        assert_int_equal((int)k, i);
    }
    assert_null(cp_fault_kind_name(0));
    assert_int_equal(cp_fault_kind_parse("drop", &k, errmsg), CP_EINVAL);
    assert_non_null(strstr(errmsg, "drop-request"));
}

static void rule_set_ids(void **state)
{
    struct cp_faults fs;
    uint64_t a, b, c;
    char buf[256];
    (void)state;
    cp_faults_init(&fs);
    a = add(&fs, rule("1-2", CP_RESET, 1.0));
    b = add(&fs, rule("*", CP_HOLD, 1.0));
    assert_true(b > a);
    assert_true(cp_faults_remove(&fs, a));
    assert_false(cp_faults_remove(&fs, a));
    c = add(&fs, rule("1-*", CP_BLACKHOLE, 0.5));
    assert_true(c > b); /* ids are never reused */
    assert_null(cp_faults_find(&fs, a));
    assert_non_null(cp_faults_find(&fs, c));
    cp_fault_describe(cp_faults_find(&fs, c), buf, sizeof buf);
    assert_string_equal(buf, "blackhole 1-* p=0.5");
    assert_true(cp_faults_hold(&fs, 3, 4, AE, strlen(AE)));
    cp_faults_close(&fs);
}

/* ------------------------------------------------------------------------
 * Decisions */

/* Every decision field folded into one number, to compare runs. */
static uint64_t fold(const struct cp_decision *d)
{
    return d->reset * 3 + d->blackhole * 5 + d->drop_request * 7 +
           d->drop_response * 11 + d->hold * 13 + d->duplicate * 17 +
           (uint64_t)d->request_delay_ms * 19 +
           (uint64_t)d->response_delay_ms * 23 +
           (uint64_t)d->duplicate_delay_ms * 29 + d->drop_request_blackhole;
}

static void mixed_rules(struct cp_faults *fs)
{
    struct cp_fault f;
    add(fs, rule("1-2", CP_DROP_REQUEST, 0.2));
    add(fs, rule("*", CP_DROP_RESPONSE, 0.1));
    f = rule("1-*", CP_DELAY_REQUEST, 0.5);
    f.delay_ms = 10;
    f.jitter_ms = 90;
    add(fs, f);
    f = rule("*-2", CP_DUPLICATE, 0.05);
    f.jitter_ms = 40;
    add(fs, f);
    f = rule("*", CP_DELAY_RESPONSE, 0.3);
    snprintf(f.method, sizeof f.method, "%s", AE);
    f.delay_ms = 1;
    add(fs, f);
    add(fs, rule("2-1", CP_RESET, 0.5));
}

static void same_seed_same_decisions(void **state)
{
    struct cp_faults fs;
    struct cp_rng a, b, other;
    int differ = 0;
    (void)state;
    cp_faults_init(&fs);
    mixed_rules(&fs);
    cp_rng_seed(&a, SEED, "1-2");
    cp_rng_seed(&b, SEED, "1-2");
    cp_rng_seed(&other, SEED + 7, "1-2");
    for (int i = 0; i < 5000; i++) {
        struct cp_decision x, y, z;
        const char *m = i % 3 == 0 ? RV : AE;
        decide(&fs, 1, 2, m, &a, &x);
        decide(&fs, 1, 2, m, &b, &y);
        decide(&fs, 1, 2, m, &other, &z);
        if (memcmp(&x, &y, sizeof x) != 0) {
            fail_msg("seed %u call %d: two runs decided differently", SEED, i);
        }
        differ += fold(&x) != fold(&z);
    }
    /* Another seed gives another sequence. */
    assert_true(differ > 1000);
    cp_faults_close(&fs);
}

/* Calls on another link draw from that link's generator only. */
static void links_do_not_perturb_each_other(void **state)
{
    struct cp_faults fs;
    struct cp_rng alone, l12, l21;
    (void)state;
    cp_faults_init(&fs);
    mixed_rules(&fs);
    cp_rng_seed(&alone, SEED, "1-2");
    cp_rng_seed(&l12, SEED, "1-2");
    cp_rng_seed(&l21, SEED, "2-1");
    for (int i = 0; i < 2000; i++) {
        struct cp_decision x, y, z;
        decide(&fs, 1, 2, AE, &alone, &x);
        for (int k = 0; k < i % 4; k++) {
            decide(&fs, 2, 1, AE, &l21, &z);
        }
        decide(&fs, 1, 2, AE, &l12, &y);
        if (memcmp(&x, &y, sizeof x) != 0) {
            fail_msg("seed %u call %d on 1-2 changed with traffic on 2-1", SEED,
                     i);
        }
    }
    cp_faults_close(&fs);
}

/* Each covering rule draws once (and once more for jitter when it hits),
 * whatever the other rules decided. */
static void draws_per_call(void **state)
{
    struct cp_faults fs;
    struct cp_rng r, shadow;
    struct cp_decision d;
    struct cp_fault f;
    (void)state;
    cp_faults_init(&fs);
    add(&fs, rule("1-2", CP_RESET, 1.0));
    add(&fs, rule("1-2", CP_DROP_REQUEST, 0.0));
    add(&fs, rule("3-4", CP_DROP_REQUEST, 1.0)); /* does not cover 1-2 */
    f = rule("*", CP_DELAY_REQUEST, 1.0);
    f.jitter_ms = 5;
    add(&fs, f);
    cp_rng_seed(&r, SEED, "1-2");
    cp_rng_seed(&shadow, SEED, "1-2");
    for (int i = 0; i < 100; i++) {
        decide(&fs, 1, 2, AE, &r, &d);
        for (int k = 0; k < 4; k++) { /* 3 covering rules + 1 jitter */
            cp_rng_next(&shadow);
        }
        assert_memory_equal(&r, &shadow, sizeof r);
        assert_true(d.reset != 0 && d.drop_request == 0);
        assert_true(d.request_delay_ms <= 5);
    }
    cp_faults_close(&fs);
}

/* Hits of a rule with probability p over n calls: within 5 sigma. */
static void check_rate(double p, int n, int hits, const char *what)
{
    double sigma = sqrt(p * (1 - p) / n);
    double rate = (double)hits / n;
    if (fabs(rate - p) > 5 * sigma + 1e-12) {
        fail_msg(
            "seed %u %s: p=%g, %d hits in %d calls (rate %.4f, 5 sigma "
            "%.4f)",
            SEED, what, p, hits, n, rate, 5 * sigma);
    }
}

static void probabilities_hold(void **state)
{
    static const double ps[] = {0.0, 0.01, 0.1, 0.3, 0.5, 0.9, 1.0};
    (void)state;
    for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++) {
        struct cp_faults fs;
        struct cp_rng r;
        int hits = 0, n = 20000;
        cp_faults_init(&fs);
        add(&fs, rule("1-2", CP_DROP_REQUEST, ps[i]));
        cp_rng_seed(&r, SEED + i, "1-2");
        for (int k = 0; k < n; k++) {
            struct cp_decision d;
            decide(&fs, 1, 2, AE, &r, &d);
            hits += d.drop_request != 0;
        }
        if (ps[i] == 0.0) {
            assert_int_equal(hits, 0);
        } else if (ps[i] == 1.0) {
            assert_int_equal(hits, n);
        }
        check_rate(ps[i], n, hits, "drop-request");
        cp_faults_close(&fs);
    }
}

static void jitter_is_uniform(void **state)
{
    struct cp_faults fs;
    struct cp_fault f;
    struct cp_rng r;
    unsigned lo = UINT32_MAX, hi = 0;
    double sum = 0;
    int n = 20000;
    (void)state;
    cp_faults_init(&fs);
    f = rule("1-2", CP_DELAY_RESPONSE, 1.0);
    f.delay_ms = 50;
    f.jitter_ms = 100;
    add(&fs, f);
    cp_rng_seed(&r, SEED, "1-2");
    for (int k = 0; k < n; k++) {
        struct cp_decision d;
        decide(&fs, 1, 2, AE, &r, &d);
        lo = d.response_delay_ms < lo ? d.response_delay_ms : lo;
        hi = d.response_delay_ms > hi ? d.response_delay_ms : hi;
        sum += d.response_delay_ms;
        assert_int_equal(d.request_delay_ms, 0);
    }
    assert_int_equal(lo, 50);
    assert_int_equal(hi, 150);
    /* Mean 100, sd of U{0..100} about 29: 5 sigma of the mean is 1.03. */
    assert_true(fabs(sum / n - 100.0) < 1.1);
    cp_faults_close(&fs);
}

static void method_and_link_filters(void **state)
{
    struct cp_faults fs;
    struct cp_fault f;
    struct cp_rng r;
    struct cp_decision d;
    (void)state;
    cp_faults_init(&fs);
    f = rule("1-*", CP_DROP_REQUEST, 1.0);
    snprintf(f.method, sizeof f.method, "%s", AE);
    add(&fs, f);
    cp_rng_seed(&r, SEED, "x");
    decide(&fs, 1, 2, AE, &r, &d);
    assert_true(d.drop_request != 0);
    decide(&fs, 1, 3, AE, &r, &d);
    assert_true(d.drop_request != 0);
    decide(&fs, 1, 2, RV, &r, &d);
    assert_int_equal(d.drop_request, 0);
    decide(&fs, 2, 1, AE, &r, &d);
    assert_int_equal(d.drop_request, 0);
    /* Exact method names only: neither a prefix nor an extension. */
    decide(&fs, 1, 2, "/raft.RaftService/AppendEntriesX", &r, &d);
    assert_int_equal(d.drop_request, 0);
    cp_decide(&fs, 1, 2, AE, strlen(AE) - 1, &r, &d);
    assert_int_equal(d.drop_request, 0);
    cp_faults_close(&fs);
}

static void several_rules_combine(void **state)
{
    struct cp_faults fs;
    struct cp_fault f;
    struct cp_rng r;
    struct cp_decision d;
    uint64_t first, delay1;
    (void)state;
    cp_faults_init(&fs);
    f = rule("1-2", CP_DROP_REQUEST, 1.0);
    f.blackhole = true;
    first = add(&fs, f);
    add(&fs, rule("*", CP_DROP_REQUEST, 1.0));
    f = rule("1-2", CP_DELAY_REQUEST, 1.0);
    f.delay_ms = CP_DELAY_MAX_MS;
    delay1 = add(&fs, f);
    add(&fs, f);
    cp_rng_seed(&r, SEED, "1-2");
    decide(&fs, 1, 2, AE, &r, &d);
    assert_int_equal(d.drop_request, first);
    assert_true(d.drop_request_blackhole);
    assert_int_equal(d.delay_request, delay1);
    assert_int_equal(d.request_delay_ms, CP_DELAY_MAX_MS); /* capped sum */
    cp_faults_close(&fs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(selectors_parse),
        cmocka_unit_test(link_names_have_no_wildcards),
        cmocka_unit_test(selectors_match_and_cover),
        cmocka_unit_test(rng_is_seeded_per_link),
        cmocka_unit_test(rng_ranges),
        cmocka_unit_test(bad_rules_are_refused),
        cmocka_unit_test(kinds_round_trip),
        cmocka_unit_test(rule_set_ids),
        cmocka_unit_test(same_seed_same_decisions),
        cmocka_unit_test(links_do_not_perturb_each_other),
        cmocka_unit_test(draws_per_call),
        cmocka_unit_test(probabilities_hold),
        cmocka_unit_test(jitter_is_uniform),
        cmocka_unit_test(method_and_link_filters),
        cmocka_unit_test(several_rules_combine),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
