/* craftd: a craft server.
 *
 * Configuration comes from the environment of the original educational
 * Raft (NODE_ID, PEER_IDS: peers reached as node<ID>:50051, as in its
 * docker-compose file) and from flags, which override it. It is checked
 * once, at start; every error names the flag (or variable) and the value. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "craft/node.h"

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: craftd [options]\n"
        "\n"
        "  --id N                 this server's id (env NODE_ID)\n"
        "  --peer ID=HOST:PORT    a peer of the initial cluster; repeat it\n"
        "                         (env PEER_IDS=2,3: peers at node<ID>:50051)\n"
        "  --route ID=HOST:PORT   dial server ID there (e.g. a "
        "fault-injecting\n"
        "                         proxy), whatever address the configuration\n"
        "                         records for it; repeat it\n"
        "  --listen HOST:PORT     where to listen (127.0.0.1:50051; with\n"
        "                         PEER_IDS, 0.0.0.0:50051)\n"
        "  --advertise HOST:PORT  where peers reach this server (the listen\n"
        "                         address; with PEER_IDS, node<ID>:50051)\n"
        "  --data-dir DIR         where the log and snapshots live (data)\n"
        "  --join HOST:PORT       join an existing cluster through this\n"
        "                         server (env JOIN)\n"
        "  --cluster-id N         refuse traffic of other clusters (env\n"
        "                         CLUSTER_ID; default: from the voters' ids)\n"
        "  --election-timeout MS  minimum election timeout (300)\n"
        "  --heartbeat MS         heartbeat interval (50)\n"
        "  --rpc-timeout MS       deadline of calls between servers (1000)\n"
        "  --timing fast|seed     fast (the defaults above), or the\n"
        "                         original's: 20 s elections, 6 s heartbeats\n"
        "  --snapshot-every N     applied entries between snapshots (10000)\n"
        "  --snapshot-keep N      entries kept behind a snapshot, so that a\n"
        "                         follower a little behind needs no\n"
        "                         snapshot (1000)\n"
        "  --log-format text|json one line per event (text)\n"
        "  --log-level debug|info|warn|error (info; env CR_LOG_LEVEL)\n"
        "  --tls-cert F --tls-key F --tls-ca F\n"
        "                         mutual TLS between servers and clients\n");
}

static int bad(const char *what, const char *value, const char *why)
{
    fprintf(stderr, "craftd: %s %s: %s\n", what, value, why);
    return 2;
}

static bool parse_u64(const char *s, uint64_t *out)
{
    char *end;
    unsigned long long v;
    if (s == NULL || *s == '\0' || *s == '-') {
        return false;
    }
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0') {
        return false;
    }
    *out = v;
    return true;
}

static bool parse_ms(const char *s, unsigned *out)
{
    uint64_t v;
    if (!parse_u64(s, &v) || v == 0 || v > 3600000) {
        return false;
    }
    *out = (unsigned)v;
    return true;
}

/* Adds (id, addr) to a list of --peer or --route entries. */
static int add_addr(struct cr_node_peer *list,
                    unsigned *n,
                    unsigned max,
                    uint64_t id,
                    const char *addr,
                    const char *what,
                    const char *value)
{
    if (id == 0 || id > INT32_MAX) {
        return bad(what, value, "a server id must be 1 to 2147483647");
    }
    if (strlen(addr) == 0 || strlen(addr) >= CR_ADDRESS_MAX ||
        strchr(addr, ':') == NULL) {
        return bad(what, value, "the address must be HOST:PORT");
    }
    for (unsigned i = 0; i < *n; i++) {
        if (list[i].id == id) {
            return bad(what, value, "that server id is given twice");
        }
    }
    if (*n == max) {
        char why[64];
        snprintf(why, sizeof why, "too many (%u at most)", max);
        return bad(what, value, why);
    }
    list[*n].id = id;
    snprintf(list[*n].address, sizeof list[*n].address, "%s", addr);
    (*n)++;
    return 0;
}

/* Parses ID=HOST:PORT into (id, the address part). */
static int parse_id_addr(const char *what,
                         const char *val,
                         uint64_t *id,
                         const char **addr)
{
    const char *eq = strchr(val, '=');
    char num[32];
    if (eq == NULL || (size_t)(eq - val) >= sizeof num) {
        return bad(what, val, "must be ID=HOST:PORT");
    }
    memcpy(num, val, (size_t)(eq - val));
    num[eq - val] = '\0';
    if (!parse_u64(num, id)) {
        return bad(what, val, "must be ID=HOST:PORT");
    }
    *addr = eq + 1;
    return 0;
}

static int set_str(char *dst, size_t cap, const char *what, const char *value)
{
    if (value == NULL || value[0] == '\0' || strlen(value) >= cap) {
        return bad(what, value != NULL ? value : "(missing)",
                   "empty or too long");
    }
    snprintf(dst, cap, "%s", value);
    return 0;
}

static int configure(int argc, char **argv, struct cr_node_config *c)
{
    const char *env;
    uint64_t v;
    bool compose = false;
    bool listen_set = false, advertise_set = false;
    int rv;

    cr_node_config_default(c);
    env = getenv("CR_LOG_LEVEL");
    if (env != NULL) {
        if (strcmp(env, "debug") == 0) {
            c->log_level = 0;
        } else if (strcmp(env, "warn") == 0) {
            c->log_level = 2;
        } else if (strcmp(env, "error") == 0) {
            c->log_level = 3;
        }
    }
    env = getenv("NODE_ID");
    if (env != NULL && env[0] != '\0') {
        if (!parse_u64(env, &v) || v == 0 || v > INT32_MAX) {
            return bad("NODE_ID", env, "must be 1 to 2147483647");
        }
        c->id = v;
    }
    env = getenv("CLUSTER_ID");
    if (env != NULL && env[0] != '\0' && !parse_u64(env, &c->cluster_id)) {
        return bad("CLUSTER_ID", env, "must be a number");
    }
    env = getenv("JOIN");
    if (env != NULL && env[0] != '\0' &&
        (rv = set_str(c->join, sizeof c->join, "JOIN", env)) != 0) {
        return rv;
    }
    env = getenv("PEER_IDS");
    if (env != NULL && env[0] != '\0') {
        const char *p = env;
        compose = true;
        while (*p != '\0') {
            char num[32];
            char addr[CR_ADDRESS_MAX];
            size_t len = strcspn(p, ",");
            if (len == 0 || len >= sizeof num) {
                return bad("PEER_IDS", env, "must be ids like 2,3,4");
            }
            memcpy(num, p, len);
            num[len] = '\0';
            if (!parse_u64(num, &v)) {
                return bad("PEER_IDS", env, "must be ids like 2,3,4");
            }
            snprintf(addr, sizeof addr, "node%" PRIu64 ":50051", v);
            rv = add_addr(c->peers, &c->n_peers, CR_NODE_PEERS_MAX, v, addr,
                          "PEER_IDS", env);
            if (rv != 0) {
                return rv;
            }
            p += len;
            if (*p == ',') {
                p++;
            }
        }
    }

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            exit(0);
        }
        if (val == NULL) {
            if (strncmp(a, "--", 2) == 0) {
                return bad(a, "", "needs a value (see --help)");
            }
            return bad("argument", a, "unknown (see --help)");
        }
        i++;
        if (strcmp(a, "--id") == 0) {
            if (!parse_u64(val, &v) || v == 0 || v > INT32_MAX) {
                return bad(a, val, "must be 1 to 2147483647");
            }
            c->id = v;
        } else if (strcmp(a, "--peer") == 0) {
            const char *addr;
            if ((rv = parse_id_addr(a, val, &v, &addr)) != 0) {
                return rv;
            }
            if (compose) {
                /* Flags override the environment's peer list. */
                c->n_peers = 0;
                compose = false;
            }
            rv = add_addr(c->peers, &c->n_peers, CR_NODE_PEERS_MAX, v, addr, a,
                          val);
            if (rv != 0) {
                return rv;
            }
        } else if (strcmp(a, "--route") == 0) {
            const char *addr;
            if ((rv = parse_id_addr(a, val, &v, &addr)) != 0) {
                return rv;
            }
            rv = add_addr(c->routes, &c->n_routes, CR_NODE_ROUTES_MAX, v, addr,
                          a, val);
            if (rv != 0) {
                return rv;
            }
        } else if (strcmp(a, "--listen") == 0) {
            if ((rv = set_str(c->listen, sizeof c->listen, a, val)) != 0) {
                return rv;
            }
            if (strchr(val, ':') == NULL) {
                return bad(a, val, "must be HOST:PORT");
            }
            listen_set = true;
        } else if (strcmp(a, "--advertise") == 0) {
            if ((rv = set_str(c->advertise, sizeof c->advertise, a, val)) !=
                0) {
                return rv;
            }
            advertise_set = true;
        } else if (strcmp(a, "--data-dir") == 0) {
            if ((rv = set_str(c->data_dir, sizeof c->data_dir, a, val)) != 0) {
                return rv;
            }
        } else if (strcmp(a, "--join") == 0) {
            if ((rv = set_str(c->join, sizeof c->join, a, val)) != 0) {
                return rv;
            }
        } else if (strcmp(a, "--cluster-id") == 0) {
            if (!parse_u64(val, &c->cluster_id)) {
                return bad(a, val, "must be a number");
            }
        } else if (strcmp(a, "--election-timeout") == 0) {
            if (!parse_ms(val, &c->election_timeout_ms)) {
                return bad(a, val, "must be 1 to 3600000 milliseconds");
            }
        } else if (strcmp(a, "--heartbeat") == 0) {
            if (!parse_ms(val, &c->heartbeat_ms)) {
                return bad(a, val, "must be 1 to 3600000 milliseconds");
            }
        } else if (strcmp(a, "--rpc-timeout") == 0) {
            if (!parse_ms(val, &c->rpc_timeout_ms)) {
                return bad(a, val, "must be 1 to 3600000 milliseconds");
            }
        } else if (strcmp(a, "--timing") == 0) {
            if (strcmp(val, "seed") == 0) {
                c->election_timeout_ms = 20000;
                c->heartbeat_ms = 6000;
                c->rpc_timeout_ms = 5000;
            } else if (strcmp(val, "fast") != 0) {
                return bad(a, val, "must be fast or seed");
            }
        } else if (strcmp(a, "--snapshot-every") == 0) {
            if (!parse_u64(val, &c->snapshot_every)) {
                return bad(a, val, "must be a number (0: never)");
            }
        } else if (strcmp(a, "--snapshot-keep") == 0) {
            if (!parse_u64(val, &c->snapshot_trailing) ||
                c->snapshot_trailing > 100000000) {
                return bad(a, val, "must be a number of entries");
            }
        } else if (strcmp(a, "--log-format") == 0) {
            if (strcmp(val, "json") == 0) {
                c->log_json = true;
            } else if (strcmp(val, "text") != 0) {
                return bad(a, val, "must be text or json");
            }
        } else if (strcmp(a, "--log-level") == 0) {
            static const char *levels[] = {"debug", "info", "warn", "error"};
            int found = -1;
            for (int k = 0; k < 4; k++) {
                if (strcmp(val, levels[k]) == 0) {
                    found = k;
                }
            }
            if (found < 0) {
                return bad(a, val, "must be debug, info, warn or error");
            }
            c->log_level = found;
        } else if (strcmp(a, "--tls-cert") == 0) {
            c->tls_cert = val;
        } else if (strcmp(a, "--tls-key") == 0) {
            c->tls_key = val;
        } else if (strcmp(a, "--tls-ca") == 0) {
            c->tls_ca = val;
        } else {
            return bad("option", a, "unknown (see --help)");
        }
    }
    if (c->id == 0) {
        fprintf(stderr, "craftd: no server id: give --id N or NODE_ID\n");
        return 2;
    }
    for (unsigned i = 0; i < c->n_peers; i++) {
        if (c->peers[i].id == c->id) {
            return bad("--peer", c->peers[i].address,
                       "a server is not its own peer");
        }
    }
    for (unsigned i = 0; i < c->n_routes; i++) {
        if (c->routes[i].id == c->id) {
            return bad("--route", c->routes[i].address,
                       "a server does not dial itself");
        }
    }
    if (compose && !listen_set) {
        snprintf(c->listen, sizeof c->listen, "0.0.0.0:50051");
    }
    if (compose && !advertise_set) {
        snprintf(c->advertise, sizeof c->advertise, "node%" PRIu64 ":50051",
                 c->id);
    }
    if (c->heartbeat_ms >= c->election_timeout_ms) {
        fprintf(stderr,
                "craftd: --heartbeat %u: must be shorter than "
                "--election-timeout %u\n",
                c->heartbeat_ms, c->election_timeout_ms);
        return 2;
    }
    if ((c->tls_cert != NULL) != (c->tls_key != NULL) ||
        (c->tls_cert != NULL) != (c->tls_ca != NULL)) {
        fprintf(stderr,
                "craftd: --tls-cert, --tls-key and --tls-ca go "
                "together\n");
        return 2;
    }
    return 0;
}

struct app
{
    uv_loop_t *loop;
    struct cr_node *node;
    uv_signal_t sigterm, sigint;
    int status;
};

static void on_stopped(void *data, int status)
{
    struct app *a = data;
    a->status = status == 0 ? 0 : 1;
    uv_close((uv_handle_t *)&a->sigterm, NULL);
    uv_close((uv_handle_t *)&a->sigint, NULL);
}

static void on_signal(uv_signal_t *s, int signum)
{
    struct app *a = s->data;
    (void)signum;
    uv_signal_stop(&a->sigterm);
    uv_signal_stop(&a->sigint);
    cr_node_stop(a->node, on_stopped, a);
}

int main(int argc, char **argv)
{
    struct cr_node_config c;
    struct app a;
    char errmsg[512];
    int rv = configure(argc, argv, &c);
    if (rv != 0) {
        return rv;
    }
    memset(&a, 0, sizeof a);
    a.loop = uv_default_loop();
    rv = cr_node_start(&a.node, a.loop, &c, errmsg);
    if (rv != 0) {
        fprintf(stderr, "craftd: %s\n", errmsg);
        return 1;
    }
    uv_signal_init(a.loop, &a.sigterm);
    uv_signal_init(a.loop, &a.sigint);
    a.sigterm.data = &a;
    a.sigint.data = &a;
    uv_signal_start(&a.sigterm, on_signal, SIGTERM);
    uv_signal_start(&a.sigint, on_signal, SIGINT);
    uv_run(a.loop, UV_RUN_DEFAULT);
    uv_loop_close(a.loop);
    return a.status;
}
