/* See proxy_partition.h. */
#include "proxy_partition.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NODES_MAX 256 /* nodes named in one spec */

/* Nodes in groups, in the order written. */
struct groups
{
    cp_node id[NODES_MAX];
    unsigned group[NODES_MAX];
    size_t n;
    unsigned n_groups;
};

static bool is_blank(char c)
{
    return c == ' ' || c == '\t';
}

static bool known(const cp_node *nodes, size_t n, cp_node id)
{
    for (size_t i = 0; i < n; i++) {
        if (nodes[i] == id) {
            return true;
        }
    }
    return false;
}

/* Reads node lists from s up to `end` (or the string's end): ',' joins
 * nodes of one group, '|' or blanks start a new one. Checks that every
 * node is known and named once. */
static int parse_groups(const char *s,
                        const char *end,
                        const cp_node *nodes,
                        size_t n_nodes,
                        struct groups *g,
                        char *errmsg)
{
    enum { START, ID, COMMA, BAR } after = START;
    const char *p = s;
    g->n = 0;
    g->n_groups = 0;
    if (end == NULL) {
        end = s + strlen(s);
    }
    while (p < end) {
        if (is_blank(*p)) {
            p++;
        } else if (*p == ',' || *p == '|') {
            if (after != ID) {
                snprintf(errmsg, CP_ERRMSG_SIZE,
                         "\"%c\" must follow a node id in \"%.60s\"", *p, s);
                return CP_EINVAL;
            }
            after = *p == ',' ? COMMA : BAR;
            p++;
        } else if (*p >= '0' && *p <= '9') {
            uint64_t v = 0;
            const char *q = p;
            while (q < end && *q >= '0' && *q <= '9' && v <= UINT32_MAX) {
                v = v * 10 + (uint64_t)(*q - '0');
                q++;
            }
            if (v == 0 || v > UINT32_MAX) {
                snprintf(errmsg, CP_ERRMSG_SIZE,
                         "node ids are 1 to 4294967295 (in \"%.60s\")", s);
                return CP_EINVAL;
            }
            if (!known(nodes, n_nodes, (cp_node)v)) {
                snprintf(errmsg, CP_ERRMSG_SIZE,
                         "node %" PRIu64
                         " is the target of no link of the "
                         "proxy",
                         v);
                return CP_EINVAL;
            }
            if (known(g->id, g->n, (cp_node)v)) {
                snprintf(errmsg, CP_ERRMSG_SIZE,
                         "node %" PRIu64 " is named twice in \"%.60s\"", v, s);
                return CP_EINVAL;
            }
            if (g->n == NODES_MAX) {
                snprintf(errmsg, CP_ERRMSG_SIZE,
                         "a partition names at most %d nodes", NODES_MAX);
                return CP_EINVAL;
            }
            if (after == START || after == ID || after == BAR) {
                g->n_groups++;
            }
            g->id[g->n] = (cp_node)v;
            g->group[g->n] = g->n_groups - 1;
            g->n++;
            after = ID;
            p = q;
        } else {
            snprintf(errmsg, CP_ERRMSG_SIZE,
                     "unexpected \"%c\" in \"%.60s\" (node lists look like "
                     "1,2|3,4,5)",
                     *p, s);
            return CP_EINVAL;
        }
    }
    if (after == COMMA || after == BAR) {
        snprintf(errmsg, CP_ERRMSG_SIZE, "\"%.60s\" ends with a separator", s);
        return CP_EINVAL;
    }
    return 0;
}

/* A growable set of cuts, sorted and deduplicated at the end. */
struct cutset
{
    struct cp_cut *v;
    size_t n, cap;
};

static int cut_add(struct cutset *cs, cp_node from, cp_node to)
{
    if (cs->n == cs->cap) {
        size_t cap = cs->cap == 0 ? 32 : cs->cap * 2;
        struct cp_cut *v = realloc(cs->v, cap * sizeof *v);
        if (v == NULL) {
            return CP_ENOMEM;
        }
        cs->v = v;
        cs->cap = cap;
    }
    cs->v[cs->n].from = from;
    cs->v[cs->n].to = to;
    cs->n++;
    return 0;
}

static int cut_cmp(const void *a, const void *b)
{
    const struct cp_cut *x = a, *y = b;
    if (x->from != y->from) {
        return x->from < y->from ? -1 : 1;
    }
    if (x->to != y->to) {
        return x->to < y->to ? -1 : 1;
    }
    return 0;
}

static int node_cmp(const void *a, const void *b)
{
    cp_node x = *(const cp_node *)a, y = *(const cp_node *)b;
    return x < y ? -1 : x > y;
}

/* Cuts both ways between nodes of different groups. */
static int cut_between_groups(struct cutset *cs, const struct groups *g)
{
    for (size_t i = 0; i < g->n; i++) {
        for (size_t j = 0; j < g->n; j++) {
            if (g->group[i] != g->group[j]) {
                int rv = cut_add(cs, g->id[i], g->id[j]);
                if (rv != 0) {
                    return rv;
                }
            }
        }
    }
    return 0;
}

/* Fills g with the known nodes by id, one group. */
static void all_nodes(const cp_node *nodes, size_t n_nodes, struct groups *g)
{
    g->n = 0;
    for (size_t i = 0; i < n_nodes && g->n < NODES_MAX; i++) {
        if (!known(g->id, g->n, nodes[i])) {
            g->id[g->n++] = nodes[i];
        }
    }
    qsort(g->id, g->n, sizeof g->id[0], node_cmp);
    memset(g->group, 0, g->n * sizeof g->group[0]);
    g->n_groups = g->n > 0 ? 1 : 0;
}

static int isolate(const char *rest,
                   const cp_node *nodes,
                   size_t n_nodes,
                   struct cutset *cs,
                   char *errmsg)
{
    struct groups g;
    int rv = parse_groups(rest, NULL, nodes, n_nodes, &g, errmsg);
    if (rv != 0) {
        return rv;
    }
    if (g.n != 1) {
        snprintf(errmsg, CP_ERRMSG_SIZE,
                 "isolate takes one node id (isolate 3)");
        return CP_EINVAL;
    }
    for (size_t i = 0; i < n_nodes; i++) {
        if (nodes[i] != g.id[0] && (rv = cut_add(cs, g.id[0], nodes[i])) == 0) {
            rv = cut_add(cs, nodes[i], g.id[0]);
        }
        if (rv != 0) {
            return rv;
        }
    }
    return 0;
}

static int components(const char *rest,
                      const cp_node *nodes,
                      size_t n_nodes,
                      struct cutset *cs,
                      char *errmsg)
{
    struct groups g;
    int rv = parse_groups(rest, NULL, nodes, n_nodes, &g, errmsg);
    if (rv != 0) {
        return rv;
    }
    if (g.n_groups < 2) {
        snprintf(errmsg, CP_ERRMSG_SIZE,
                 "components needs at least two groups (components "
                 "1,2|3,4,5)");
        return CP_EINVAL;
    }
    return cut_between_groups(cs, &g);
}

static int majorities_ring(const char *rest,
                           const cp_node *nodes,
                           size_t n_nodes,
                           struct cutset *cs,
                           char *errmsg)
{
    struct groups g;
    size_t n, m;
    int rv = parse_groups(rest, NULL, nodes, n_nodes, &g, errmsg);
    if (rv != 0) {
        return rv;
    }
    if (g.n == 0) {
        all_nodes(nodes, n_nodes, &g);
    } else if (g.n_groups != 1) {
        snprintf(errmsg, CP_ERRMSG_SIZE,
                 "majorities-ring takes one comma-separated ring of nodes "
                 "(majorities-ring 1,2,3,4,5)");
        return CP_EINVAL;
    }
    n = g.n;
    m = n / 2 + 1;
    /* Node i hears the window of m nodes that starts m/2 places before
     * it; it does not hear anyone else. */
    for (size_t i = 0; i < n; i++) {
        for (size_t k = m; k < n; k++) {
            size_t j = (i + n - m / 2 + k) % n;
            if ((rv = cut_add(cs, g.id[j], g.id[i])) != 0) {
                return rv;
            }
        }
    }
    return 0;
}

static int bridge(const char *rest,
                  const cp_node *nodes,
                  size_t n_nodes,
                  struct cutset *cs,
                  char *errmsg)
{
    struct groups g;
    int rv = parse_groups(rest, NULL, nodes, n_nodes, &g, errmsg);
    if (rv != 0) {
        return rv;
    }
    if (g.n == 0) {
        all_nodes(nodes, n_nodes, &g);
    }
    if (g.n_groups == 1) {
        /* Nodes in a row: the first half, the median one as the bridge,
         * the second half. */
        size_t half = (g.n - 1) / 2;
        if (g.n < 3) {
            snprintf(errmsg, CP_ERRMSG_SIZE,
                     "bridge needs at least 3 nodes (it has %zu)", g.n);
            return CP_EINVAL;
        }
        for (size_t i = 0; i < g.n; i++) {
            g.group[i] = i < half ? 0 : i == half ? 1 : 2;
        }
        g.n_groups = 3;
    } else if (g.n_groups != 3) {
        snprintf(errmsg, CP_ERRMSG_SIZE,
                 "bridge takes the nodes in a row (bridge 1,2,3,4,5) or "
                 "three groups, the bridge in the middle (bridge 1,2|3|4,5)");
        return CP_EINVAL;
    }
    for (size_t i = 0; i < g.n; i++) {
        for (size_t j = 0; j < g.n; j++) {
            if (g.group[i] + g.group[j] == 2 && g.group[i] != 1) {
                if ((rv = cut_add(cs, g.id[i], g.id[j])) != 0) {
                    return rv;
                }
            }
        }
    }
    return 0;
}

static int one_way(const char *rest,
                   const cp_node *nodes,
                   size_t n_nodes,
                   struct cutset *cs,
                   char *errmsg)
{
    const char *gt = strchr(rest, '>');
    struct groups a, b;
    int rv;
    if (gt == NULL || strchr(gt + 1, '>') != NULL) {
        snprintf(errmsg, CP_ERRMSG_SIZE,
                 "one-way takes FROM>TO node lists (one-way 1,2>3)");
        return CP_EINVAL;
    }
    if ((rv = parse_groups(rest, gt, nodes, n_nodes, &a, errmsg)) != 0 ||
        (rv = parse_groups(gt + 1, NULL, nodes, n_nodes, &b, errmsg)) != 0) {
        return rv;
    }
    if (a.n_groups != 1 || b.n_groups != 1) {
        snprintf(errmsg, CP_ERRMSG_SIZE,
                 "one-way takes one comma-separated list on each side of "
                 "\">\" (one-way 1,2>3)");
        return CP_EINVAL;
    }
    for (size_t i = 0; i < a.n; i++) {
        if (known(b.id, b.n, a.id[i])) {
            snprintf(errmsg, CP_ERRMSG_SIZE,
                     "node %" PRIu32 " is on both sides of \">\"", a.id[i]);
            return CP_EINVAL;
        }
    }
    for (size_t i = 0; i < a.n; i++) {
        for (size_t j = 0; j < b.n; j++) {
            if ((rv = cut_add(cs, a.id[i], b.id[j])) != 0) {
                return rv;
            }
        }
    }
    return 0;
}

int cp_partition_parse(const char *spec,
                       const cp_node *nodes,
                       size_t n_nodes,
                       struct cp_cut **cuts,
                       size_t *n_cuts,
                       char *errmsg)
{
    static const struct
    {
        const char *word;
        int (*fn)(const char *,
                  const cp_node *,
                  size_t,
                  struct cutset *,
                  char *);
    } kinds[] = {
        {"isolate", isolate},
        {"components", components},
        {"majorities-ring", majorities_ring},
        {"bridge", bridge},
        {"one-way", one_way},
    };
    struct cutset cs = {NULL, 0, 0};
    const char *p = spec;
    size_t len;
    int rv = -1;
    while (is_blank(*p)) {
        p++;
    }
    len = strcspn(p, " \t");
    if (*p >= '0' && *p <= '9') {
        rv = components(p, nodes, n_nodes, &cs, errmsg);
    } else {
        for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
            if (strlen(kinds[k].word) == len &&
                memcmp(kinds[k].word, p, len) == 0) {
                rv = kinds[k].fn(p + len, nodes, n_nodes, &cs, errmsg);
                break;
            }
        }
    }
    if (rv == -1) {
        snprintf(errmsg, CP_ERRMSG_SIZE,
                 "unknown partition \"%.60s\" (isolate N, components "
                 "1,2|3,4,5, majorities-ring, bridge, one-way 1>2)",
                 spec);
        rv = CP_EINVAL;
    }
    if (rv != 0) {
        free(cs.v);
        return rv;
    }
    if (cs.n > 1) {
        size_t w = 1;
        qsort(cs.v, cs.n, sizeof cs.v[0], cut_cmp);
        for (size_t i = 1; i < cs.n; i++) {
            if (cut_cmp(&cs.v[i], &cs.v[w - 1]) != 0) {
                cs.v[w++] = cs.v[i];
            }
        }
        cs.n = w;
    }
    if (cs.n == 0) {
        free(cs.v);
        cs.v = NULL;
    }
    *cuts = cs.v;
    *n_cuts = cs.n;
    return 0;
}

int cp_partition_faults(const struct cp_cut *cuts,
                        size_t n_cuts,
                        bool blackhole,
                        struct cp_fault **faults,
                        size_t *n_faults)
{
    struct cp_fault *v = calloc(n_cuts * 2 + 1, sizeof *v);
    size_t n = 0;
    if (v == NULL) {
        return CP_ENOMEM;
    }
    for (size_t i = 0; i < n_cuts; i++) {
        struct cp_cut back = {cuts[i].to, cuts[i].from};
        struct cp_fault *f = &v[n++];
        f->links.from = cuts[i].from;
        f->links.to = cuts[i].to;
        f->kind = CP_DROP_REQUEST;
        f->probability = 1.0;
        f->blackhole = blackhole;
        f->partition = true;
        if (bsearch(&back, cuts, n_cuts, sizeof cuts[0], cut_cmp) == NULL) {
            /* A>B but not B>A: B's calls reach A, A's answers must not
             * reach B. */
            f = &v[n++];
            f->links.from = cuts[i].to;
            f->links.to = cuts[i].from;
            f->kind = CP_DROP_RESPONSE;
            f->probability = 1.0;
            f->blackhole = blackhole;
            f->partition = true;
        }
    }
    *faults = v;
    *n_faults = n;
    return 0;
}
