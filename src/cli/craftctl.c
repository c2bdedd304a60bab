/* craftctl: craft's command-line client and tool.
 *
 *   craftctl [--endpoints H:P,...] [--timeout S] [--json] COMMAND ...
 *            add A B | put K V | get K | cas K OLD NEW | incr K D | del K
 *            | total | status | join ID ADDRESS | remove ID | transfer [ID]
 *   craftctl wal check DIR   is the data directory healthy?
 *   craftctl wal dump DIR    every file and record, one a line
 *
 * Exit codes of the client commands: 0 success; 1 a definite failure (not
 * applied); 3 the outcome is unknown (it may have been applied); 2 usage.
 *
 * Exit codes of `wal check`: 0 healthy; 3 a torn tail that recovery cuts
 * at the next start (the normal trace of a crash); 1 damaged: a node
 * refuses to start on it; 2 usage or I/O errors. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "craft/storage.h"

#define EXIT_OK 0
#define EXIT_FAILED 1
#define EXIT_USAGE 2
#define EXIT_UNKNOWN 3

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: craftctl [--endpoints H:P,H:P,...] [--timeout S] [--json] "
        "COMMAND [ARGS]\n"
        "       craftctl wal check|dump DIR\n"
        "\n"
        "Client commands (any server takes them; a follower forwards writes "
        "to the\n"
        "leader, and craftctl follows the leader's address when told to):\n"
        "  add A B            add A+B to the running total; prints the sum, "
        "the\n"
        "                     leader, the new total and the log index:\n"
        "                     8 (leader: node 2 at 127.0.0.1:7102, total "
        "24, index 9)\n"
        "  put K V            set key K to V; prints OK\n"
        "  get K              prints the value of K (a linearizable read); "
        "exit 1\n"
        "                     if K does not exist\n"
        "  cas K OLD NEW      set K to NEW if it is OLD (\"\" OLD: K does not "
        "exist);\n"
        "                     prints true or false\n"
        "  incr K D           add the integer D to the integer at K (absent: "
        "0);\n"
        "                     prints the new value\n"
        "  del K              delete K; prints 1 if it existed, 0 if not\n"
        "  total              prints the running total (a linearizable "
        "read)\n"
        "  status             asks every endpoint: id, state, term, leader, "
        "commit,\n"
        "                     applied and last index, total, state digest; "
        "an\n"
        "                     endpoint that does not answer is shown as "
        "unreachable.\n"
        "                     Exit 0 if any endpoint answered, else 1\n"
        "  join ID ADDRESS    add server ID, reachable at ADDRESS (host:port),"
        " as a\n"
        "                     voter (it is caught up as a learner first)\n"
        "  remove ID          remove server ID from the cluster\n"
        "  transfer [ID]      hand leadership to voter ID (default: the most "
        "up to\n"
        "                     date one); prints the new leader\n"
        "\n"
        "Options:\n"
        "  --endpoints LIST   servers to try, comma-separated host:port "
        "(default:\n"
        "                     env CRAFT_ENDPOINTS, else 127.0.0.1:50051)\n"
        "  --timeout S        give up after S seconds, retries included "
        "(10; for\n"
        "                     status, each endpoint's deadline, default 2)\n"
        "  --json             print the answer as JSON (status: an array, one "
        "object\n"
        "                     per endpoint)\n"
        "  --                 ends the options (for values that start with "
        "--)\n"
        "  -h, --help         this text\n"
        "\n"
        "Retries: craftctl starts at the first endpoint, follows a "
        "not-the-leader\n"
        "answer to the leader it names, moves on to the next endpoint when "
        "one is\n"
        "down or does not answer in time (an attempt gets at most 3 s), and "
        "waits\n"
        "while no leader is known. Every write carries a random client id and "
        "a\n"
        "sequence number that all its retries share, so the servers apply it "
        "at most\n"
        "once.\n"
        "\n"
        "Exit codes:\n"
        "  0  success\n"
        "  1  definite failure: the operation was not applied (invalid, or "
        "refused\n"
        "     or unreachable on every attempt); stderr says why. Also: get of "
        "a\n"
        "     missing key, and add/incr that the state machine refused "
        "(overflow,\n"
        "     not a number), which changed nothing\n"
        "  2  usage error; stderr names the argument\n"
        "  3  outcome unknown: an attempt may have been applied (a deadline, "
        "a\n"
        "     connection lost after sending, OP_UNKNOWN). Only a retry with "
        "the same\n"
        "     client id and sequence is safe, and a new craftctl process "
        "uses a new\n"
        "     id: check with get or total before repeating the operation\n"
        "\n"
        "wal (offline, on a data directory):\n"
        "  wal check DIR      says whether a node can start on DIR; exit 0 "
        "healthy,\n"
        "                     3 a torn tail that recovery cuts, 1 damaged, "
        "2 error\n"
        "  wal dump DIR       prints every file and record of DIR\n");
}

/* ---------------------------------------------------------------------------
 * wal
 * ------------------------------------------------------------------------- */

static void print_line(void *data, const char *text)
{
    (void)data;
    printf("%s\n", text);
}

static void summary(const char *dir, const struct cr_recovery *rec)
{
    printf("%s: term=%" PRIu64 " vote=%" PRIu64 " commit=%" PRIu64
           " cluster=%" PRIu64,
           dir, rec->hs.term, rec->hs.vote, rec->hs.commit, rec->cluster_id);
    if (rec->n > 0) {
        printf(" log=%" PRIu64 "..%" PRIu64 " (%u entries)", rec->first,
               rec->first + rec->n - 1, rec->n);
    } else {
        printf(" log=empty");
    }
    if (rec->has_snapshot) {
        printf(" snapshot=%" PRIu64 "/%" PRIu64 " (%" PRIu64 " bytes)",
               rec->snapshot.index, rec->snapshot.term, rec->snapshot_size);
    }
    printf("\n");
}

static int wal(int argc, char **argv)
{
    struct cr_recovery rec;
    char errmsg[CR_ERRMSG_SIZE] = "";
    bool dump;
    int rv;
    if (argc != 3 ||
        (strcmp(argv[1], "check") != 0 && strcmp(argv[1], "dump") != 0)) {
        usage(stderr);
        return 2;
    }
    dump = strcmp(argv[1], "dump") == 0;
    rv = cr_storage_inspect(argv[2], NULL, dump ? print_line : NULL, NULL, &rec,
                            errmsg);
    if (rv == CR_ECORRUPT) {
        fprintf(dump ? stdout : stderr, "%s: damaged: %s\n", argv[2], errmsg);
        return 1;
    }
    if (rv != 0) {
        fprintf(stderr, "craftctl: %s: %s\n", argv[2],
                errmsg[0] != '\0' ? errmsg : cr_strerror(rv));
        return 2;
    }
    if (rec.fresh) {
        printf("%s: empty: no craft data\n", argv[2]);
    } else {
        summary(argv[2], &rec);
    }
    if (rec.warning[0] != '\0') {
        printf("%s: warning: %s\n", argv[2], rec.warning);
    }
    cr_recovery_free(&rec, NULL);
    if (rec.torn) {
        printf("%s: torn tail: recovery cuts it at the next start\n", argv[2]);
        return 3;
    }
    if (!dump) {
        printf("%s: healthy\n", argv[2]);
    }
    return 0;
}

/* ---------------------------------------------------------------------------
 * Output helpers
 * ------------------------------------------------------------------------- */

/* A JSON string, quoted and escaped. */
static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if (*p == '"' || *p == '\\') {
            fputc('\\', f);
            fputc(*p, f);
        } else if (*p < 0x20) {
            fprintf(f, "\\u%04x", *p);
        } else {
            fputc(*p, f);
        }
    }
    fputc('"', f);
}

struct ctx
{
    struct cr_cli cli;
    bool json;
    const char *command;
};

static const char *outcome_name(enum cr_cli_outcome o)
{
    return o == CR_CLI_OK ? "ok" : o == CR_CLI_FAILED ? "failed" : "unknown";
}

/* Reports a run that did not end in OP_OK; returns the exit code. */
static int report_failure(const struct ctx *x, const struct cr_cli_result *r)
{
    if (x->json) {
        printf("{\"outcome\": \"%s\", \"error\": ", outcome_name(r->outcome));
        json_str(stdout, r->why);
        printf(", \"attempts\": %u", r->attempts);
        if (r->client_id != 0) {
            printf(", \"client_id\": %" PRIu64 ", \"sequence\": %" PRIu64,
                   r->client_id, r->sequence);
        }
        printf("}\n");
    }
    if (r->outcome == CR_CLI_UNKNOWN) {
        fprintf(stderr,
                "craftctl: %s: outcome unknown: %s\n"
                "craftctl: the operation may or may not have been applied. "
                "Only a retry with\n"
                "craftctl: the same client id and sequence (%" PRIu64
                "/%" PRIu64
                ") is safe, and a new craftctl\n"
                "craftctl: process cannot reuse them: check with `craftctl "
                "get KEY` or\n"
                "craftctl: `craftctl total` before repeating it.\n",
                x->command, r->why, r->client_id, r->sequence);
        return EXIT_UNKNOWN;
    }
    fprintf(stderr, "craftctl: %s: failed, not applied: %s\n", x->command,
            r->why);
    return EXIT_FAILED;
}

/* The state machine said no (ADD's overflow, INCR of a text): the
 * operation went through the log but changed nothing. */
static int report_refused(const struct ctx *x, const char *error)
{
    if (x->json) {
        printf("{\"outcome\": \"refused\", \"error\": ");
        json_str(stdout, error);
        printf("}\n");
    }
    fprintf(stderr,
            "craftctl: %s: refused by the state machine: %s "
            "(nothing changed)\n",
            x->command, error[0] != '\0' ? error : "no reason given");
    return EXIT_FAILED;
}

static void json_common(const struct cr_cli_result *r,
                        const struct cr_cli_answer *a)
{
    printf("\"leader_id\": %" PRId32 ", \"leader_address\": ", a->leader_id);
    json_str(stdout, a->leader_address);
    printf(", \"attempts\": %u", r->attempts);
    if (r->client_id != 0) {
        printf(", \"client_id\": %" PRIu64 ", \"sequence\": %" PRIu64,
               r->client_id, r->sequence);
    }
}

/* ---------------------------------------------------------------------------
 * Argument parsing
 * ------------------------------------------------------------------------- */

static bool parse_i64(const char *s, int64_t *out)
{
    char *end;
    long long v;
    if (s[0] == '\0') {
        return false;
    }
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0') {
        return false;
    }
    *out = (int64_t)v;
    return true;
}

static bool parse_id(const char *s, int32_t *out)
{
    int64_t v;
    if (!parse_i64(s, &v) || v <= 0 || v > INT32_MAX) {
        return false;
    }
    *out = (int32_t)v;
    return true;
}

static int bad_arg(const struct ctx *x,
                   const char *name,
                   const char *what,
                   const char *value)
{
    fprintf(stderr, "craftctl: %s: %s must be %s, not \"%s\"\n", x->command,
            name, what, value);
    return EXIT_USAGE;
}

static int bad_count(const struct ctx *x, const char *synopsis)
{
    fprintf(stderr, "craftctl: %s: usage: craftctl %s\n", x->command, synopsis);
    return EXIT_USAGE;
}

/* ---------------------------------------------------------------------------
 * Commands
 * ------------------------------------------------------------------------- */

static int cmd_add(struct ctx *x, int argc, char **argv)
{
    Raft__AddRequest req;
    struct cr_cli_result r;
    struct cr_cli_answer a;
    const Raft__AddResponse *resp;
    int rc = EXIT_OK;
    if (argc != 2) {
        return bad_count(x, "add A B");
    }
    raft__add_request__init(&req);
    if (!parse_i64(argv[0], &req.num1)) {
        return bad_arg(x, "A", "an integer", argv[0]);
    }
    if (!parse_i64(argv[1], &req.num2)) {
        return bad_arg(x, "B", "an integer", argv[1]);
    }
    if (cr_cli_run(&x->cli, CR_CLI_ADD, &req.base, &r) != CR_CLI_OK) {
        rc = report_failure(x, &r);
        cr_cli_result_free(&r);
        return rc;
    }
    resp = (const void *)r.resp;
    cr_cli_answer_of(CR_CLI_ADD, r.resp, &a);
    if (!resp->success) {
        rc = report_refused(x, resp->error);
    } else if (x->json) {
        printf("{\"outcome\": \"ok\", \"sum\": %" PRId64 ", \"total\": %" PRId64
               ", \"index\": %" PRId64 ", ",
               resp->sum, resp->total, resp->index);
        json_common(&r, &a);
        printf("}\n");
    } else {
        printf("%" PRId64 " (leader: node %" PRId32 " at %s, total %" PRId64
               ", index %" PRId64 ")\n",
               resp->sum, resp->leader_id,
               resp->leader_address[0] != '\0' ? resp->leader_address : "?",
               resp->total, resp->index);
    }
    cr_cli_result_free(&r);
    return rc;
}

/* put, cas, incr, del: typed key-value writes. */
static int cmd_kv(struct ctx *x, enum cr_cli_method m, int argc, char **argv)
{
    Raft__KeyValueRequest req;
    struct cr_cli_result r;
    struct cr_cli_answer a;
    const Raft__OperationResponse *resp;
    int rc = EXIT_OK;
    raft__key_value_request__init(&req);
    switch (m) {
        case CR_CLI_PUT:
            if (argc != 2) {
                return bad_count(x, "put K V");
            }
            req.value = argv[1];
            break;
        case CR_CLI_CAS:
            if (argc != 3) {
                return bad_count(x, "cas K OLD NEW");
            }
            req.expected = argv[1];
            req.value = argv[2];
            break;
        case CR_CLI_INCREMENT:
            if (argc != 2) {
                return bad_count(x, "incr K D");
            }
            if (!parse_i64(argv[1], &req.delta)) {
                return bad_arg(x, "D", "an integer", argv[1]);
            }
            break;
        default:
            if (argc != 1) {
                return bad_count(x, "del K");
            }
            break;
    }
    req.key = argv[0];
    if (req.key[0] == '\0') {
        return bad_arg(x, "K", "a key of 1 to 1024 bytes", req.key);
    }
    if (cr_cli_run(&x->cli, m, &req.base, &r) != CR_CLI_OK) {
        rc = report_failure(x, &r);
        cr_cli_result_free(&r);
        return rc;
    }
    resp = (const void *)r.resp;
    cr_cli_answer_of(m, r.resp, &a);
    if (!resp->success) {
        rc = report_refused(x, a.error);
    } else if (x->json) {
        printf("{\"outcome\": \"ok\", \"result\": ");
        json_str(stdout, resp->result);
        printf(", \"index\": %" PRId64 ", ", resp->index);
        json_common(&r, &a);
        printf("}\n");
    } else {
        printf("%s\n", resp->result);
    }
    cr_cli_result_free(&r);
    return rc;
}

/* get K, total: linearizable reads. */
static int cmd_read(struct ctx *x, const char *key)
{
    Raft__ReadRequest req;
    struct cr_cli_result r;
    struct cr_cli_answer a;
    const Raft__ReadResponse *resp;
    int rc = EXIT_OK;
    raft__read_request__init(&req);
    req.key = (char *)(uintptr_t)key;
    if (cr_cli_run(&x->cli, CR_CLI_READ, &req.base, &r) != CR_CLI_OK) {
        rc = report_failure(x, &r);
        cr_cli_result_free(&r);
        return rc;
    }
    resp = (const void *)r.resp;
    cr_cli_answer_of(CR_CLI_READ, r.resp, &a);
    if (x->json) {
        printf("{\"outcome\": \"ok\", \"found\": %s, \"value\": ",
               resp->found ? "true" : "false");
        json_str(stdout, resp->value);
        printf(", \"index\": %" PRId64 ", ", resp->index);
        json_common(&r, &a);
        printf("}\n");
    } else if (resp->found) {
        printf("%s\n", resp->value);
    }
    if (!resp->found) {
        fprintf(stderr, "craftctl: get: %s: not found\n", key);
        rc = EXIT_FAILED;
    }
    cr_cli_result_free(&r);
    return rc;
}

static void print_config(const Raft__ClusterConfig *c)
{
    if (c == NULL) {
        return;
    }
    printf(" (servers:");
    for (size_t i = 0; i < c->n_servers; i++) {
        const Raft__Server *s = c->servers[i];
        printf(" %" PRId32 "=%s%s", s->id, s->address,
               s->role == RAFT__ROLE__LEARNER ? "(learner)" : "");
    }
    printf(")");
}

static void json_config(const Raft__ClusterConfig *c)
{
    printf("\"servers\": [");
    for (size_t i = 0; c != NULL && i < c->n_servers; i++) {
        const Raft__Server *s = c->servers[i];
        printf("%s{\"id\": %" PRId32 ", \"address\": ", i > 0 ? ", " : "",
               s->id);
        json_str(stdout, s->address);
        printf(", \"role\": \"%s\"}",
               s->role == RAFT__ROLE__LEARNER ? "learner" : "voter");
    }
    printf("]");
}

/* join, remove, transfer: membership and leadership. */
static int cmd_change(struct ctx *x,
                      enum cr_cli_method m,
                      int argc,
                      char **argv)
{
    Raft__JoinRequest join;
    Raft__RemoveRequest remove;
    Raft__TransferRequest transfer;
    ProtobufCMessage *req;
    struct cr_cli_result r;
    struct cr_cli_answer a;
    const Raft__ClusterConfig *config = NULL;
    int32_t id = 0;
    int rc = EXIT_OK;
    if (m == CR_CLI_JOIN_CLUSTER) {
        if (argc != 2) {
            return bad_count(x, "join ID ADDRESS");
        }
        if (!parse_id(argv[0], &id)) {
            return bad_arg(x, "ID", "a positive server id", argv[0]);
        }
        if (strchr(argv[1], ':') == NULL) {
            return bad_arg(x, "ADDRESS", "host:port", argv[1]);
        }
        raft__join_request__init(&join);
        join.node_id = id;
        join.address = argv[1];
        join.voter = true;
        req = &join.base;
    } else if (m == CR_CLI_REMOVE_NODE) {
        if (argc != 1) {
            return bad_count(x, "remove ID");
        }
        if (!parse_id(argv[0], &id)) {
            return bad_arg(x, "ID", "a positive server id", argv[0]);
        }
        raft__remove_request__init(&remove);
        remove.node_id = id;
        req = &remove.base;
    } else {
        if (argc > 1) {
            return bad_count(x, "transfer [ID]");
        }
        if (argc == 1 && !parse_id(argv[0], &id)) {
            return bad_arg(x, "ID", "a positive server id", argv[0]);
        }
        raft__transfer_request__init(&transfer);
        transfer.node_id = id;
        req = &transfer.base;
    }
    if (cr_cli_run(&x->cli, m, req, &r) != CR_CLI_OK) {
        rc = report_failure(x, &r);
        cr_cli_result_free(&r);
        return rc;
    }
    cr_cli_answer_of(m, r.resp, &a);
    if (m == CR_CLI_JOIN_CLUSTER) {
        config =
            ((const Raft__JoinResponse *)(const void *)r.resp)->cluster_config;
    } else if (m == CR_CLI_REMOVE_NODE) {
        config = ((const Raft__RemoveResponse *)(const void *)r.resp)
                     ->cluster_config;
    }
    if (x->json) {
        printf("{\"outcome\": \"ok\", ");
        json_common(&r, &a);
        if (m != CR_CLI_TRANSFER_LEADERSHIP) {
            printf(", ");
            json_config(config);
        }
        printf("}\n");
    } else if (m == CR_CLI_TRANSFER_LEADERSHIP) {
        printf("leader: node %" PRId32 " at %s\n", a.leader_id,
               a.leader_address[0] != '\0' ? a.leader_address : "?");
    } else {
        printf("node %" PRId32 " %s", id,
               m == CR_CLI_JOIN_CLUSTER ? "joined" : "removed");
        print_config(config);
        printf("\n");
    }
    cr_cli_result_free(&r);
    return rc;
}

static int cmd_status(struct ctx *x, unsigned timeout_ms)
{
    Raft__StatusResponse *resp[CR_CLI_ENDPOINTS_MAX];
    struct cr_cli_rpc_status st[CR_CLI_ENDPOINTS_MAX];
    unsigned answered = 0;
    cr_cli_status_all(&x->cli, timeout_ms, resp, st);
    if (x->json) {
        printf("[");
    } else {
        printf("%-21s %3s %-13s %5s %6s %8s %8s %8s %10s %s\n", "ENDPOINT",
               "ID", "STATE", "TERM", "LEADER", "COMMIT", "APPLIED", "LAST",
               "TOTAL", "DIGEST");
    }
    for (unsigned i = 0; i < x->cli.n_given; i++) {
        const char *ep = x->cli.endpoints[i].address;
        const Raft__StatusResponse *s = resp[i];
        if (x->json) {
            printf("%s\n  {\"endpoint\": ", i > 0 ? "," : "");
            json_str(stdout, ep);
            if (s == NULL) {
                printf(", \"reachable\": false, \"error\": ");
                json_str(stdout, st[i].details);
                printf(", \"code\": \"%s\"}",
                       cr_cli_grpc_code_name(st[i].code));
                continue;
            }
            printf(", \"reachable\": true, \"id\": %" PRId32 ", \"state\": ",
                   s->node_id);
            json_str(stdout, s->state);
            printf(", \"term\": %" PRId64 ", \"leader\": %" PRId32
                   ", \"leader_address\": ",
                   s->current_term, s->current_leader);
            json_str(stdout, s->leader_address);
            printf(", \"commit\": %" PRId64 ", \"applied\": %" PRId64
                   ", \"last_index\": %" PRId64 ", \"snapshot_index\": %" PRId64
                   ", \"total\": %" PRId64 ", \"digest\": ",
                   s->commit_index, s->applied_index, s->last_log_index,
                   s->snapshot_index, s->total);
            json_str(stdout, s->state_digest);
            printf(", \"cluster_id\": %" PRIu64 ", \"peers\": [",
                   s->cluster_id);
            for (size_t p = 0; p < s->n_peers; p++) {
                printf("%s{\"id\": %" PRId32 ", \"match_index\": %" PRId64 "}",
                       p > 0 ? ", " : "", s->peers[p]->id,
                       s->peers[p]->match_index);
            }
            printf("], ");
            json_config(s->config);
            if (s->counters != NULL) {
                const Raft__TransportCounters *k = s->counters;
                printf(
                    ", \"counters\": {\"calls_in\": %" PRIu64
                    ", \"calls_out\": %" PRIu64 ", \"calls_failed\": %" PRIu64
                    ", \"bad_input\": %" PRIu64
                    ", \"foreign_cluster\": %" PRIu64 ", \"bytes_in\": %" PRIu64
                    ", \"bytes_out\": %" PRIu64 "}",
                    k->calls_in, k->calls_out, k->calls_failed, k->bad_input,
                    k->foreign_cluster, k->bytes_in, k->bytes_out);
            }
            printf("}");
        } else if (s == NULL) {
            printf("%-21s unreachable (%s%s%s)\n", ep,
                   cr_cli_grpc_code_name(st[i].code),
                   st[i].details[0] != '\0' ? ": " : "", st[i].details);
        } else {
            char leader[16];
            if (s->current_leader > 0) {
                snprintf(leader, sizeof leader, "%" PRId32, s->current_leader);
            } else {
                snprintf(leader, sizeof leader, "-");
            }
            printf("%-21s %3" PRId32 " %-13s %5" PRId64 " %6s %8" PRId64
                   " %8" PRId64 " %8" PRId64 " %10" PRId64 " %s\n",
                   ep, s->node_id, s->state, s->current_term, leader,
                   s->commit_index, s->applied_index, s->last_log_index,
                   s->total, s->state_digest);
        }
        if (s != NULL) {
            answered++;
        }
        cr_cli_free(s != NULL ? &resp[i]->base : NULL);
    }
    if (x->json) {
        printf("\n]\n");
    }
    if (answered == 0) {
        fprintf(stderr, "craftctl: status: no endpoint answered\n");
        return EXIT_FAILED;
    }
    return EXIT_OK;
}

/* ---------------------------------------------------------------------------
 * main
 * ------------------------------------------------------------------------- */

static const char *const commands[] = {
    "add",   "put",    "get",  "cas",    "incr",     "del",
    "total", "status", "join", "remove", "transfer",
};

int main(int argc, char **argv)
{
    const char *endpoints = getenv("CRAFT_ENDPOINTS");
    struct cr_cli_options o;
    struct ctx x;
    char *args[64];
    int n_args = 0;
    bool options_done = false;
    bool timeout_given = false;
    double timeout_s = 10;
    char errmsg[CR_CLI_WHY_MAX];
    bool known = false;
    int rc;

    if (argc >= 2 && strcmp(argv[1], "wal") == 0) {
        return wal(argc - 1, argv + 1);
    }
    memset(&x, 0, sizeof x);
    x.command = "craftctl";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (options_done || strncmp(a, "--", 2) != 0) {
            if (!options_done && strcmp(a, "-h") == 0) {
                usage(stdout);
                return EXIT_OK;
            }
            if (n_args == (int)(sizeof args / sizeof args[0])) {
                fprintf(stderr, "craftctl: too many arguments\n");
                return EXIT_USAGE;
            }
            args[n_args++] = argv[i];
            continue;
        }
        if (strcmp(a, "--") == 0) {
            options_done = true;
        } else if (strcmp(a, "--help") == 0) {
            usage(stdout);
            return EXIT_OK;
        } else if (strcmp(a, "--json") == 0) {
            x.json = true;
        } else if (strcmp(a, "--endpoints") == 0) {
            if (v == NULL) {
                fprintf(stderr, "craftctl: --endpoints needs a value\n");
                return EXIT_USAGE;
            }
            endpoints = v;
            i++;
        } else if (strcmp(a, "--timeout") == 0) {
            char *end;
            if (v == NULL) {
                fprintf(stderr, "craftctl: --timeout needs a value\n");
                return EXIT_USAGE;
            }
            timeout_s = strtod(v, &end);
            if (*end != '\0' || end == v || !isfinite(timeout_s) ||
                timeout_s < 0.001 || timeout_s > 3600) {
                fprintf(stderr,
                        "craftctl: --timeout must be seconds in [0.001, "
                        "3600], not \"%s\"\n",
                        v);
                return EXIT_USAGE;
            }
            timeout_given = true;
            i++;
        } else {
            fprintf(stderr, "craftctl: unknown option %s (see --help)\n", a);
            return EXIT_USAGE;
        }
    }
    if (n_args == 0) {
        usage(stderr);
        return EXIT_USAGE;
    }
    x.command = args[0];
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        known = known || strcmp(args[0], commands[i]) == 0;
    }
    if (!known) {
        fprintf(stderr, "craftctl: unknown command \"%s\" (see --help)\n",
                args[0]);
        return EXIT_USAGE;
    }
    if (endpoints == NULL || endpoints[0] == '\0') {
        endpoints = "127.0.0.1:50051";
    }
    cr_cli_options_default(&o);
    o.timeout_ms = (unsigned)(timeout_s * 1000);
    if (cr_cli_init(&x.cli, endpoints, &o, errmsg) != 0) {
        fprintf(stderr, "craftctl: --endpoints: %s\n", errmsg);
        return EXIT_USAGE;
    }
    if (strcmp(args[0], "add") == 0) {
        rc = cmd_add(&x, n_args - 1, args + 1);
    } else if (strcmp(args[0], "put") == 0) {
        rc = cmd_kv(&x, CR_CLI_PUT, n_args - 1, args + 1);
    } else if (strcmp(args[0], "cas") == 0) {
        rc = cmd_kv(&x, CR_CLI_CAS, n_args - 1, args + 1);
    } else if (strcmp(args[0], "incr") == 0) {
        rc = cmd_kv(&x, CR_CLI_INCREMENT, n_args - 1, args + 1);
    } else if (strcmp(args[0], "del") == 0) {
        rc = cmd_kv(&x, CR_CLI_DELETE, n_args - 1, args + 1);
    } else if (strcmp(args[0], "get") == 0) {
        rc = n_args != 2 ? bad_count(&x, "get K")
             : args[1][0] == '\0'
                 ? bad_arg(&x, "K", "a key of 1 to 1024 bytes", args[1])
                 : cmd_read(&x, args[1]);
    } else if (strcmp(args[0], "total") == 0) {
        rc = n_args != 1 ? bad_count(&x, "total") : cmd_read(&x, "");
    } else if (strcmp(args[0], "status") == 0) {
        rc = n_args != 1 ? bad_count(&x, "status")
                         : cmd_status(&x, timeout_given ? o.timeout_ms : 2000);
    } else if (strcmp(args[0], "join") == 0) {
        rc = cmd_change(&x, CR_CLI_JOIN_CLUSTER, n_args - 1, args + 1);
    } else if (strcmp(args[0], "remove") == 0) {
        rc = cmd_change(&x, CR_CLI_REMOVE_NODE, n_args - 1, args + 1);
    } else {
        rc = cmd_change(&x, CR_CLI_TRANSFER_LEADERSHIP, n_args - 1, args + 1);
    }
    cr_cli_close(&x.cli);
    return rc;
}
