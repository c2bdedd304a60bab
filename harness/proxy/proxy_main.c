/* craft-proxy: main(), flags, signals; `ctl` and `bench` are subcommands.
 * Every configuration error names the flag and the value, and the proxy
 * does not start. */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "proxy.h"
#include "proxy_bench.h"
#include "proxy_ctl.h"

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: craft-proxy [options]           run the proxy\n"
        "       craft-proxy ctl [--control ADDR] COMMAND ...\n"
        "                                       drive a running proxy\n"
        "       craft-proxy bench [options]     measure what the proxy "
        "adds\n"
        "\n"
        "craft-proxy forwards whole gRPC calls (any method, raw bytes) from "
        "one\n"
        "listener per directed link FROM-TO (node FROM calling node TO) to "
        "the\n"
        "link's target, and drops, delays, duplicates, holds or fails them "
        "on\n"
        "command: per link, per method, with a seeded generator "
        "(proto/proxy.proto).\n"
        "\n"
        "options:\n"
        "  --link FROM-TO=LISTEN,TARGET  a directed link, e.g.\n"
        "                         1-2=127.0.0.1:0,127.0.0.1:50052 (port 0: "
        "a free\n"
        "                         one); repeat it\n"
        "  --node ID=HOST:PORT    a node; every pair of --node entries gets "
        "a\n"
        "                         link each way, on a free port of "
        "--listen-host\n"
        "  --listen-host HOST     where --node links listen (127.0.0.1)\n"
        "  --cluster FILE         links and nodes, one a line: \"link 1-2 "
        "LISTEN\n"
        "                         TARGET\" or \"node 2 HOST:PORT\" (# "
        "comments)\n"
        "  --unary METHOD         a method that is unary both ways, e.g.\n"
        "                         /raft.RaftService/AppendEntries: served "
        "faster\n"
        "                         (its message comes with the call, one "
        "batch\n"
        "                         forwards it); every other method is "
        "forwarded\n"
        "                         as a stream both ways\n"
        "  --unary-from FILE      every unary method of a .proto file, e.g.\n"
        "                         proto/raft.proto (all but InstallSnapshot)\n"
        "  --control HOST:PORT    the control API, loopback only "
        "(127.0.0.1:0)\n"
        "  --seed N               seed of every link's generator (default: "
        "from\n"
        "                         the clock; the ready line prints it)\n"
        "  --max-message-bytes N  largest message forwarded (67108864)\n"
        "  --help\n"
        "\n"
        "On stdout, one line per event: each link with its bound address,\n"
        "  ts=... evt=link-add seq=1 faults=- detail=\"1-2 "
        "listen=127.0.0.1:41234 target=127.0.0.1:50052\"\n"
        "every fault switched on or off, then\n"
        "  ts=... evt=ready control=127.0.0.1:39411 seed=7 links=6\n"
        "SIGTERM or SIGINT stops it (calls in progress end with "
        "UNAVAILABLE).\n"
        "\n"
        "In front of a cluster: give the proxy every node (--node, or a "
        "cluster\n"
        "file), read each link's listen address, then start node i with\n"
        "--route j=<listen address of link i-j> for each peer j, e.g. for "
        "3 nodes\n"
        "on 127.0.0.1:50051-50053:\n"
        "  craft-proxy --seed 7 --control 127.0.0.1:7000 \\\n"
        "      --node 1=127.0.0.1:50051 --node 2=127.0.0.1:50052 --node "
        "3=127.0.0.1:50053\n"
        "  craft-proxy ctl --control 127.0.0.1:7000 links   # LISTEN of "
        "each link\n"
        "  craftd --id 1 --listen 127.0.0.1:50051 --data-dir d1 \\\n"
        "      --peer 2=127.0.0.1:50052 --peer 3=127.0.0.1:50053 \\\n"
        "      --route 2=<LISTEN of 1-2> --route 3=<LISTEN of 1-3>\n"
        "  (nodes 2 and 3 likewise). --route keeps the real addresses in "
        "the\n"
        "configuration, so leader hints still name the nodes; --peer "
        "ID=<LISTEN of\n"
        "i-ID> works too. Fixed ports: --link "
        "1-2=127.0.0.1:61012,127.0.0.1:50052.\n"
        "\n"
        "By hand (craft-proxy ctl --help for every command):\n"
        "  craft-proxy ctl --control 127.0.0.1:7000 partition isolate 1\n"
        "  craft-proxy ctl --control 127.0.0.1:7000 heal\n"
        "  craft-proxy ctl --control 127.0.0.1:7000 fault set 1-2 "
        "drop-response --p 0.3\n"
        "  craft-proxy ctl --control 127.0.0.1:7000 fault set '*' "
        "delay-request \\\n"
        "      --delay 20 --jitter 80 --method "
        "/raft.RaftService/AppendEntries\n"
        "  craft-proxy ctl --control 127.0.0.1:7000 counters\n"
        "  craft-proxy ctl --control 127.0.0.1:7000 timeline --json\n");
}

static int bad(const char *flag, const char *value, const char *why)
{
    fprintf(stderr, "craft-proxy: %s %s: %s\n", flag, value, why);
    return 2;
}

static bool parse_u64(const char *s, uint64_t *out)
{
    char *end;
    unsigned long long v;
    if (s == NULL || *s == '\0' || *s == '-' || *s == '+') {
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

struct run
{
    struct cp_proxy *proxy;
    uv_signal_t sigint, sigterm;
};

static void on_signal(uv_signal_t *s, int signum)
{
    struct run *r = s->data;
    (void)signum;
    uv_close((uv_handle_t *)&r->sigint, NULL);
    uv_close((uv_handle_t *)&r->sigterm, NULL);
    cp_proxy_stop(r->proxy, NULL, NULL);
}

int main(int argc, char **argv)
{
    struct cp_config config;
    struct cp_proxy_config pc;
    struct run r;
    char errmsg[CP_ERRMSG_SIZE];
    const char *control = "127.0.0.1:0";
    uint64_t seed, max_message = 64u << 20;
    bool seed_set = false;
    uv_loop_t loop;
    int rv;

    if (argc > 1 && strcmp(argv[1], "ctl") == 0) {
        return cp_ctl_main(argc - 1, argv + 1);
    }
    if (argc > 1 && strcmp(argv[1], "bench") == 0) {
        return cp_bench_main(argc - 1, argv + 1, argv[0]);
    }
    cp_config_init(&config);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            cp_config_close(&config);
            return 0;
        }
        if (v == NULL) {
            usage(stderr);
            cp_config_close(&config);
            return strncmp(a, "--", 2) == 0 ? bad(a, "", "needs a value")
                                            : bad("argument", a, "unknown");
        }
        i++;
        rv = 0;
        if (strcmp(a, "--link") == 0) {
            rv = cp_config_link_arg(&config, v, errmsg);
        } else if (strcmp(a, "--node") == 0) {
            rv = cp_config_node_arg(&config, v, errmsg);
        } else if (strcmp(a, "--cluster") == 0) {
            rv = cp_config_load(&config, v, errmsg);
        } else if (strcmp(a, "--unary") == 0) {
            rv = cp_config_unary_arg(&config, v, errmsg);
        } else if (strcmp(a, "--unary-from") == 0) {
            rv = cp_config_unary_from(&config, v, errmsg);
        } else if (strcmp(a, "--listen-host") == 0) {
            if (strlen(v) + 8 > sizeof config.listen_host) {
                rv = CP_EINVAL;
                snprintf(errmsg, sizeof errmsg, "too long");
            } else {
                snprintf(config.listen_host, sizeof config.listen_host, "%s",
                         v);
            }
        } else if (strcmp(a, "--control") == 0) {
            control = v;
        } else if (strcmp(a, "--seed") == 0) {
            if (!parse_u64(v, &seed)) {
                cp_config_close(&config);
                return bad(a, v, "must be a number 0 to 2^64-1");
            }
            seed_set = true;
        } else if (strcmp(a, "--max-message-bytes") == 0) {
            if (!parse_u64(v, &max_message) || max_message < 1024 ||
                max_message > INT32_MAX) {
                cp_config_close(&config);
                return bad(a, v, "must be 1024 to 2147483647");
            }
        } else {
            usage(stderr);
            cp_config_close(&config);
            return bad("option", a, "unknown (see --help)");
        }
        if (rv != 0) {
            fprintf(stderr, "craft-proxy: %s: %s\n", a, errmsg);
            cp_config_close(&config);
            return 2;
        }
    }
    if (cp_config_finish(&config, errmsg) != 0) {
        fprintf(stderr, "craft-proxy: %s\n", errmsg);
        cp_config_close(&config);
        return 2;
    }
    if (!seed_set) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^
               (uint64_t)getpid();
    }

    /* A caller or target that vanishes mid-write must not kill us. */
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    uv_loop_init(&loop);
    memset(&pc, 0, sizeof pc);
    pc.seed = seed;
    pc.control = control;
    pc.max_message_bytes = (size_t)max_message;
    pc.links = config.links;
    pc.n_links = config.n_links;
    pc.unary = (const char(*)[CP_METHOD_MAX])config.unary;
    pc.n_unary = config.n_unary;
    pc.log = stdout;
    memset(&r, 0, sizeof r);
    rv = cp_proxy_start(&r.proxy, &loop, &pc, errmsg);
    cp_config_close(&config);
    if (rv != 0) {
        fprintf(stderr, "craft-proxy: %s\n", errmsg);
        /* The proxy undoes its start on the loop. */
        uv_run(&loop, UV_RUN_DEFAULT);
        uv_loop_close(&loop);
        return 1;
    }
    uv_signal_init(&loop, &r.sigint);
    uv_signal_init(&loop, &r.sigterm);
    r.sigint.data = r.sigterm.data = &r;
    uv_signal_start(&r.sigint, on_signal, SIGINT);
    uv_signal_start(&r.sigterm, on_signal, SIGTERM);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    return 0;
}
