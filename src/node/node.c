/* craftd's node. See include/craft/node.h. Everything runs on the loop
 * thread but the storage's done callback, which only hands its news over
 * (a mutex and an async handle). */
#include "craft/node.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "craft/app.h"
#include "craft/storage.h"
#include "craft/transport.h"
#include "log.h"

#define SWEEP_MS 100
#define DEFAULT_WAIT_MS 10000 /* for a client without a deadline */

struct pending
{
    struct pending *next;
    struct cr_client_call *call;
    enum cr_client_kind kind;
    cr_index index; /* the entry (writes, changes) or read index */
    cr_term term;
    uint64_t read_id;
    bool index_known; /* reads: the read index has come */
    cr_id target;     /* transfers */
    uint64_t deadline;
    /* A write waiting to be proposed with the others of this loop turn. */
    bool queued;
    uint8_t *buf;
    size_t len;
    struct pending *q_prev, *q_next;
};

struct forward
{
    struct cr_node *n;
    struct cr_client_call *call;
};

struct peer_state
{
    cr_id id;
    bool down;
};

struct snap_job
{
    uv_work_t work;
    struct cr_node *n;
    struct cr_snapshot_meta meta;
    uint8_t *data;
    size_t len;
    int rv;
    char path[CR_PATH_MAX];
    char errmsg[CR_ERRMSG_SIZE];
};

struct cr_node
{
    uv_loop_t *loop;
    struct cr_node_config cfg;
    struct cr_log log;
    struct cr_core core;
    struct cr_storage *storage;
    struct cr_app *app;
    struct cr_transport *transport;
    uint64_t cluster_id;
    uv_timer_t timer;
    uv_timer_t sweep;
    uv_async_t persisted;
    pthread_mutex_t mu;
    uint64_t durable_seq; /* from the storage thread, under mu */
    cr_index durable_index;
    int storage_status;
    uint64_t stepped_seq; /* the last seq stepped into the core */
    bool in_step;
    cr_id unreachable[CR_SERVERS_MAX * 2];
    unsigned n_unreachable;
    struct pending *pending; /* writes, changes, reads, transfers */
    /* Writes to propose at the end of this loop turn, in arrival order:
     * under load many commands share one proposal and one AppendEntries. */
    struct pending *q_head, *q_tail;
    uv_check_t batcher;
    uint64_t next_read_id;
    char snapshot_path[CR_PATH_MAX];
    cr_index snapshot_index;
    bool snapshotting;
    bool joining;
    uint64_t join_next;
    struct peer_state peers[CR_SERVERS_MAX * 2];
    unsigned n_peers;
    bool stopping;
    void (*stop_done)(void *data, int status);
    void *stop_data;
    unsigned handles_open;
};

void cr_node_config_default(struct cr_node_config *c)
{
    memset(c, 0, sizeof *c);
    snprintf(c->listen, sizeof c->listen, "127.0.0.1:50051");
    snprintf(c->data_dir, sizeof c->data_dir, "data");
    /* Fast enough that failover on loopback takes well under a second,
     * slow enough for a loaded 2-core machine. */
    c->election_timeout_ms = 300;
    c->heartbeat_ms = 50;
    c->rpc_timeout_ms = 1000;
    c->snapshot_every = 10000;
    c->snapshot_trailing = 1000;
    c->segment_size = 8u << 20;
    c->log_level = CR_LOG_INFO;
}

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static const char *role_name(const struct cr_node *n)
{
    enum cr_role r = cr_core_role(&n->core);
    const struct cr_server *s =
        cr_config_get(cr_core_config(&n->core), n->cfg.id);
    if (r == CR_FOLLOWER && s != NULL && s->suffrage == CR_LEARNER) {
        return "LEARNER";
    }
    switch (r) {
        case CR_LEADER:
            return "LEADER";
        case CR_CANDIDATE:
            return "CANDIDATE";
        case CR_PRE_CANDIDATE:
            return "PRE_CANDIDATE";
        default:
            return "FOLLOWER";
    }
}

#define LOG(n, lvl, evt, ...)                                            \
    cr_logf(&(n)->log, lvl, cr_core_term(&(n)->core), role_name(n), evt, \
            __VA_ARGS__)

static const char *address_of(const struct cr_node *n, cr_id id)
{
    const struct cr_server *s = cr_config_get(cr_core_config(&n->core), id);
    if (s != NULL && s->address[0] != '\0') {
        return s->address;
    }
    for (unsigned i = 0; i < n->cfg.n_peers; i++) {
        if (n->cfg.peers[i].id == id) {
            return n->cfg.peers[i].address;
        }
    }
    return id == n->cfg.id ? n->cfg.advertise : NULL;
}

/* Where to dial id: its route if it has one, else its address. */
static const char *dial_address_of(const struct cr_node *n, cr_id id)
{
    for (unsigned i = 0; i < n->cfg.n_routes; i++) {
        if (n->cfg.routes[i].id == id) {
            return n->cfg.routes[i].address;
        }
    }
    return address_of(n, id);
}

static void fatal(struct cr_node *n, const char *evt, const char *why)
{
    LOG(n, CR_LOG_ERROR, evt, "error=\"%s\"", why);
    fprintf(stderr, "craftd: %s: %s\n", evt, why);
    exit(1);
}

/* ---------------------------------------------------------------------------
 * Stepping the core and carrying out its updates
 * ------------------------------------------------------------------------- */

static void carry_out(struct cr_node *n, const struct cr_update *u);
static void flush_unreachable(struct cr_node *n);
static void on_timer(uv_timer_t *t);
static void on_batch(uv_check_t *h);

static int step(struct cr_node *n, struct cr_event *ev, struct cr_update *out)
{
    struct cr_update u;
    int rv;
    struct cr_update *up = out != NULL ? out : &u;
    ev->now = uv_now(n->loop);
    n->in_step = true;
    rv = cr_core_step(&n->core, ev, up);
    carry_out(n, up);
    n->in_step = false;
    flush_unreachable(n);
    return rv;
}

static void step_event(struct cr_node *n, enum cr_event_type type)
{
    struct cr_event ev;
    memset(&ev, 0, sizeof ev);
    ev.type = type;
    (void)step(n, &ev, NULL);
}

static void trace(void *data, const struct cr_core *c, const struct cr_trace *t)
{
    struct cr_node *n = data;
    (void)c;
    LOG(n, CR_LOG_INFO, t->event,
        "peer=%" PRIu64 " term=%" PRIu64 " index=%" PRIu64 "%s%s%s", t->peer,
        t->term, t->index, t->reason != NULL ? " reason=\"" : "",
        t->reason != NULL ? t->reason : "", t->reason != NULL ? "\"" : "");
}

static void unqueue(struct cr_node *n, struct pending *p)
{
    if (!p->queued) {
        return;
    }
    if (p->q_prev != NULL) {
        p->q_prev->q_next = p->q_next;
    } else {
        n->q_head = p->q_next;
    }
    if (p->q_next != NULL) {
        p->q_next->q_prev = p->q_prev;
    } else {
        n->q_tail = p->q_prev;
    }
    p->queued = false;
    free(p->buf);
    p->buf = NULL;
}

static void remove_pending(struct cr_node *n, struct pending *p)
{
    struct pending **pp = &n->pending;
    unqueue(n, p);
    while (*pp != NULL && *pp != p) {
        pp = &(*pp)->next;
    }
    if (*pp == p) {
        *pp = p->next;
    }
    free(p);
}

static void fill_leader(const struct cr_node *n, struct cr_client_reply *r)
{
    r->leader = cr_core_leader(&n->core);
    r->leader_address = r->leader != 0 ? address_of(n, r->leader) : NULL;
}

static void reply_status(struct cr_node *n,
                         struct cr_client_call *call,
                         enum cr_op_status status,
                         const char *error)
{
    struct cr_client_reply r;
    memset(&r, 0, sizeof r);
    r.status = status;
    r.error = error;
    fill_leader(n, &r);
    r.config = cr_core_config(&n->core);
    r.config_index = cr_core_config_index(&n->core);
    r.cluster_id = n->cluster_id;
    r.term = cr_core_term(&n->core);
    r.last_index = cr_core_last_index(&n->core);
    cr_client_reply(call, &r);
}

/* A write that committed (or was replaced): answer its client. */
static void resolve_write(struct cr_node *n,
                          cr_index index,
                          cr_term term,
                          const struct cr_result *result)
{
    for (struct pending *p = n->pending; p != NULL;) {
        struct pending *next = p->next;
        if ((p->kind == CR_CLIENT_OPERATION || p->kind == CR_CLIENT_ADD ||
             p->kind == CR_CLIENT_JOIN || p->kind == CR_CLIENT_REMOVE) &&
            p->index == index) {
            struct cr_client_reply r;
            memset(&r, 0, sizeof r);
            fill_leader(n, &r);
            r.index = index;
            r.config = cr_core_config(&n->core);
            r.config_index = cr_core_config_index(&n->core);
            r.cluster_id = n->cluster_id;
            r.term = cr_core_term(&n->core);
            r.last_index = cr_core_last_index(&n->core);
            if (p->term != term) {
                /* Another leader's entry took its place: never applied. */
                r.status = CR_OPS_NOT_LEADER;
                r.error =
                    "leadership changed before the operation "
                    "committed; it was not applied";
            } else {
                r.status = CR_OPS_OK;
                if (result != NULL) {
                    r.result = *result;
                    r.total = result->total;
                }
                r.at_most_once =
                    cr_client_request(p->call)->command.client_id != 0;
            }
            cr_client_reply(p->call, &r);
            remove_pending(n, p);
        }
        p = next;
    }
}

static void apply_entry(struct cr_node *n,
                        cr_index index,
                        const struct cr_entry *e)
{
    if (e->type == CR_ENTRY_COMMAND) {
        struct cr_command cmd;
        struct cr_result r;
        if (cr_command_decode(e->buf.base, e->buf.len, &cmd) != 0) {
            LOG(n, CR_LOG_ERROR, "apply_skipped",
                "index=%" PRIu64 " reason=\"undecodable command\"", index);
            cr_app_skip(n->app, index);
            resolve_write(n, index, e->term, NULL);
            return;
        }
        if (cr_app_apply(n->app, index, &cmd, &r) != 0) {
            fatal(n, "apply_failed", "out of memory while applying");
        }
        LOG(n, CR_LOG_DEBUG, "applied",
            "index=%" PRIu64 " term=%" PRIu64 " result=%s dup=%d", index,
            e->term, r.text, r.duplicate);
        resolve_write(n, index, e->term, &r);
        return;
    }
    cr_app_skip(n->app, index);
    resolve_write(n, index, e->term, NULL);
}

static void serve_read(struct cr_node *n, struct pending *p)
{
    const struct cr_client_request *req = cr_client_request(p->call);
    struct cr_client_reply r;
    memset(&r, 0, sizeof r);
    fill_leader(n, &r);
    r.status = CR_OPS_OK;
    r.index = p->index;
    r.total = cr_app_total(n->app);
    if (req->command.op == CR_OP_GET) {
        r.found = cr_app_get(n->app, req->command.key, req->command.key_len,
                             &r.value, &r.value_len);
    } else {
        r.found = true;
    }
    cr_client_reply(p->call, &r);
}

static void serve_reads(struct cr_node *n)
{
    uint64_t applied = cr_app_applied(n->app);
    for (struct pending *p = n->pending; p != NULL;) {
        struct pending *next = p->next;
        if (p->kind == CR_CLIENT_READ && p->index_known &&
            p->index <= applied) {
            serve_read(n, p);
            remove_pending(n, p);
        }
        p = next;
    }
}

static void read_result(struct cr_node *n, const struct cr_read_result *rr)
{
    for (struct pending *p = n->pending; p != NULL; p = p->next) {
        if (p->kind == CR_CLIENT_READ && p->read_id == rr->id &&
            !p->index_known) {
            if (rr->status != 0) {
                reply_status(n, p->call,
                             cr_core_leader(&n->core) != 0 ? CR_OPS_NOT_LEADER
                                                           : CR_OPS_UNAVAILABLE,
                             "leadership could not be confirmed for the "
                             "read; retry");
                remove_pending(n, p);
                return;
            }
            p->index = rr->index;
            p->index_known = true;
            return;
        }
    }
}

static void sync_peers(struct cr_node *n)
{
    const struct cr_config *c = cr_core_config(&n->core);
    for (unsigned i = 0; i < c->n; i++) {
        if (c->servers[i].address[0] != '\0') {
            cr_transport_set_peer(n->transport, c->servers[i].id,
                                  dial_address_of(n, c->servers[i].id));
        }
    }
}

static void log_config(struct cr_node *n)
{
    const struct cr_config *c = cr_core_config(&n->core);
    char text[512];
    size_t len = 0;
    text[0] = '\0';
    for (unsigned i = 0; i < c->n && len < sizeof text - 64; i++) {
        len += (size_t)snprintf(
            text + len, sizeof text - len, "%s%" PRIu64 "%s", i > 0 ? "," : "",
            c->servers[i].id,
            c->servers[i].suffrage == CR_LEARNER ? "(learner)" : "");
    }
    LOG(n, CR_LOG_INFO, "config_changed",
        "index=%" PRIu64 " servers=%s voters=%u",
        cr_core_config_index(&n->core), text, cr_config_voters(c));
}

static void maybe_snapshot(struct cr_node *n);

static void restore_from(struct cr_node *n, const char *path)
{
    struct cr_snapshot_reader *r;
    struct cr_snapshot_meta meta;
    uint64_t size;
    char errmsg[CR_ERRMSG_SIZE];
    uint8_t *buf;
    size_t got = 0, chunk;
    if (cr_snapshot_reader_open(&r, path, NULL, &meta, &size, errmsg) != 0) {
        fatal(n, "snapshot_restore_failed", errmsg);
    }
    buf = malloc(size == 0 ? 1 : (size_t)size);
    if (buf == NULL) {
        fatal(n, "snapshot_restore_failed", "out of memory");
    }
    do {
        if (cr_snapshot_reader_read(r, buf + got, (size_t)size - got, &chunk) !=
            0) {
            fatal(n, "snapshot_restore_failed",
                  "the snapshot fails its "
                  "checksum");
        }
        got += chunk;
    } while (chunk > 0);
    cr_snapshot_reader_close(r);
    if (cr_app_restore(n->app, buf, got) != 0) {
        fatal(n, "snapshot_restore_failed",
              "the state in the snapshot is "
              "malformed");
    }
    free(buf);
    snprintf(n->snapshot_path, sizeof n->snapshot_path, "%s", path);
    n->snapshot_index = meta.index;
}

static void carry_out(struct cr_node *n, const struct cr_update *u)
{
    if (u->flags & CR_UPDATE_STATE) {
        LOG(n, CR_LOG_INFO, "state",
            "leader=%" PRIu64 " commit=%" PRIu64 " last_index=%" PRIu64,
            u->leader, cr_core_commit(&n->core), cr_core_last_index(&n->core));
        for (struct pending *p = n->pending; p != NULL;) {
            struct pending *next = p->next;
            if (p->kind == CR_CLIENT_TRANSFER && u->leader != 0 &&
                u->leader != n->cfg.id) {
                struct cr_client_reply r;
                memset(&r, 0, sizeof r);
                r.status = u->leader == p->target || p->target == 0
                               ? CR_OPS_OK
                               : CR_OPS_REFUSED;
                fill_leader(n, &r);
                cr_client_reply(p->call, &r);
                remove_pending(n, p);
            }
            p = next;
        }
    }
    if (u->flags & CR_UPDATE_SNAPSHOT) {
        char path[CR_PATH_MAX];
        cr_snapshot_path(path, n->cfg.data_dir, u->snapshot.index,
                         u->snapshot.term);
        restore_from(n, path);
        LOG(n, CR_LOG_INFO, "snapshot_installed",
            "index=%" PRIu64 " term=%" PRIu64, u->snapshot.index,
            u->snapshot.term);
    }
    if (u->persist_seq != 0) {
        int rv = cr_storage_submit(n->storage, u);
        if (rv == CR_EIO) {
            fatal(n, "storage_failed",
                  "the storage failed; the node stops (see the log above)");
        }
        if (rv != 0) {
            fatal(n, "storage_failed", cr_strerror(rv));
        }
    }
    for (unsigned i = 0; i < u->n_messages; i++) {
        cr_transport_send(n->transport, &u->messages[i]);
    }
    for (unsigned i = 0; i < u->n_committed; i++) {
        apply_entry(n, u->committed_first + i, &u->committed[i]);
    }
    for (unsigned i = 0; i < u->n_reads; i++) {
        read_result(n, &u->reads[i]);
    }
    if (u->flags & CR_UPDATE_CONFIG) {
        sync_peers(n);
        log_config(n);
    }
    /* Joined once a configuration with this server is committed: one that
     * is only in its log may come from a leader that was cut off, whose
     * successor never heard of the join; until then, keep asking. */
    if (n->joining &&
        cr_config_get(cr_core_config(&n->core), n->cfg.id) != NULL &&
        cr_core_config_index(&n->core) <= cr_core_commit(&n->core)) {
        n->joining = false;
        LOG(n, CR_LOG_INFO, "joined", "config_index=%" PRIu64,
            cr_core_config_index(&n->core));
    }
    serve_reads(n);
    if (!n->stopping) {
        uint64_t now = uv_now(n->loop);
        uint64_t wait = u->deadline > now ? u->deadline - now : 0;
        uv_timer_start(&n->timer, on_timer, wait, 0);
    }
    if (u->n_committed > 0) {
        maybe_snapshot(n);
    }
}

/* ---------------------------------------------------------------------------
 * Timers, persistence, transport callbacks
 * ------------------------------------------------------------------------- */

static void on_timer(uv_timer_t *t)
{
    struct cr_node *n = t->data;
    step_event(n, CR_EVENT_TICK);
}

static void on_storage_done(void *data, uint64_t seq, cr_index last, int status)
{
    struct cr_node *n = data;
    pthread_mutex_lock(&n->mu);
    if (status != 0) {
        n->storage_status = status;
    }
    if (seq > n->durable_seq) {
        n->durable_seq = seq;
        n->durable_index = last;
    }
    pthread_mutex_unlock(&n->mu);
    uv_async_send(&n->persisted);
}

static void on_persisted(uv_async_t *a)
{
    struct cr_node *n = a->data;
    struct cr_event ev;
    uint64_t seq;
    cr_index last;
    int status;
    pthread_mutex_lock(&n->mu);
    seq = n->durable_seq;
    last = n->durable_index;
    status = n->storage_status;
    pthread_mutex_unlock(&n->mu);
    if (status != 0) {
        fatal(n, "storage_failed",
              "a write or fsync failed; after a failed fsync the page cache "
              "cannot be trusted, so the node stops; check the disk, then "
              "`craftctl wal check` the data directory and restart");
    }
    if (seq <= n->stepped_seq || n->stopping) {
        return;
    }
    n->stepped_seq = seq;
    memset(&ev, 0, sizeof ev);
    ev.type = CR_EVENT_PERSISTED;
    ev.persisted.seq = seq;
    ev.persisted.last_index = last;
    (void)step(n, &ev, NULL);
}

static struct peer_state *peer_state(struct cr_node *n, cr_id id)
{
    for (unsigned i = 0; i < n->n_peers; i++) {
        if (n->peers[i].id == id) {
            return &n->peers[i];
        }
    }
    if (n->n_peers < sizeof n->peers / sizeof n->peers[0]) {
        n->peers[n->n_peers].id = id;
        n->peers[n->n_peers].down = false;
        return &n->peers[n->n_peers++];
    }
    return NULL;
}

static void on_message(void *data, const struct cr_message *m)
{
    struct cr_node *n = data;
    struct cr_event ev;
    struct peer_state *ps = peer_state(n, m->from);
    if (n->stopping) {
        return;
    }
    if (ps != NULL && ps->down) {
        ps->down = false;
        LOG(n, CR_LOG_INFO, "peer_connected", "peer=%" PRIu64, m->from);
    }
    memset(&ev, 0, sizeof ev);
    ev.type = CR_EVENT_RECEIVE;
    ev.receive.message = m;
    if (step(n, &ev, NULL) == CR_ECLUSTER) {
        LOG(n, CR_LOG_WARN, "message_rejected",
            "peer=%" PRIu64 " reason=\"another cluster\"", m->from);
    }
}

static void flush_unreachable(struct cr_node *n)
{
    while (n->n_unreachable > 0 && !n->stopping) {
        struct cr_event ev;
        cr_id id = n->unreachable[--n->n_unreachable];
        memset(&ev, 0, sizeof ev);
        ev.type = CR_EVENT_UNREACHABLE;
        ev.unreachable.id = id;
        (void)step(n, &ev, NULL);
    }
}

static void on_unreachable(void *data, cr_id peer, const char *why)
{
    struct cr_node *n = data;
    struct peer_state *ps = peer_state(n, peer);
    if (ps != NULL && !ps->down) {
        ps->down = true;
        LOG(n, CR_LOG_WARN, "peer_lost", "peer=%" PRIu64 " why=\"%s\"", peer,
            why);
    } else {
        LOG(n, CR_LOG_DEBUG, "peer_call_failed", "peer=%" PRIu64 " why=\"%s\"",
            peer, why);
    }
    for (unsigned i = 0; i < n->n_unreachable; i++) {
        if (n->unreachable[i] == peer) {
            return;
        }
    }
    if (n->n_unreachable < sizeof n->unreachable / sizeof n->unreachable[0]) {
        n->unreachable[n->n_unreachable++] = peer;
    }
    if (!n->in_step) {
        flush_unreachable(n);
    }
}

static const char *snapshot_path(void *data,
                                 const struct cr_snapshot_meta *meta)
{
    struct cr_node *n = data;
    (void)meta;
    return n->snapshot_path[0] != '\0' ? n->snapshot_path : NULL;
}

/* ---------------------------------------------------------------------------
 * Snapshots
 * ------------------------------------------------------------------------- */

static void snap_work(uv_work_t *w)
{
    struct snap_job *j = w->data;
    struct cr_snapshot_writer *sw;
    j->rv = cr_snapshot_writer_open(&sw, j->n->cfg.data_dir, NULL, &j->meta,
                                    j->errmsg);
    if (j->rv == 0) {
        j->rv = cr_snapshot_writer_write(sw, j->data, j->len);
        if (j->rv == 0) {
            j->rv = cr_snapshot_writer_commit(sw, 2, j->path);
        } else {
            cr_snapshot_writer_abort(sw);
        }
    }
}

static void snap_done(uv_work_t *w, int status)
{
    struct snap_job *j = w->data;
    struct cr_node *n = j->n;
    (void)status;
    n->snapshotting = false;
    free(j->data);
    if (j->rv != 0 || n->stopping) {
        if (j->rv != 0) {
            LOG(n, CR_LOG_WARN, "snapshot_failed", "index=%" PRIu64 " error=%s",
                j->meta.index, cr_errname(j->rv));
        }
        free(j);
        return;
    }
    {
        struct cr_event ev;
        memset(&ev, 0, sizeof ev);
        ev.type = CR_EVENT_SNAPSHOT;
        ev.snapshot.index = j->meta.index;
        ev.snapshot.trailing = n->cfg.snapshot_trailing;
        snprintf(n->snapshot_path, sizeof n->snapshot_path, "%s", j->path);
        n->snapshot_index = j->meta.index;
        (void)step(n, &ev, NULL);
        if (cr_core_first_index(&n->core) > 1) {
            (void)cr_storage_compact(n->storage,
                                     cr_core_first_index(&n->core) - 1);
        }
        LOG(n, CR_LOG_INFO, "snapshot_taken", "index=%" PRIu64 " bytes=%zu",
            j->meta.index, j->len);
    }
    free(j);
}

static void maybe_snapshot(struct cr_node *n)
{
    uint64_t applied = cr_app_applied(n->app);
    struct snap_job *j;
    if (n->snapshotting || n->stopping || n->cfg.snapshot_every == 0 ||
        applied < n->snapshot_index + n->cfg.snapshot_every) {
        return;
    }
    j = calloc(1, sizeof *j);
    if (j == NULL) {
        return;
    }
    j->n = n;
    j->meta.index = applied;
    j->meta.term = cr_core_term_at(&n->core, applied);
    if (j->meta.term == 0 ||
        cr_core_config_at(&n->core, applied, &j->meta.config,
                          &j->meta.config_index) != 0) {
        free(j);
        return;
    }
    j->len = cr_app_snapshot_size(n->app);
    j->data = malloc(j->len);
    if (j->data == NULL || cr_app_snapshot(n->app, j->data, j->len) != 0) {
        free(j->data);
        free(j);
        return;
    }
    j->work.data = j;
    n->snapshotting = true;
    if (uv_queue_work(n->loop, &j->work, snap_work, snap_done) != 0) {
        n->snapshotting = false;
        free(j->data);
        free(j);
    }
}

/* ---------------------------------------------------------------------------
 * Client calls
 * ------------------------------------------------------------------------- */

/* When to give up on a client call: a little before the client's own
 * deadline, so that our answer (outcome unknown, retry with the same
 * session) reaches it before its DEADLINE_EXCEEDED does. */
static uint64_t deadline_of(struct cr_node *n, struct cr_client_call *call)
{
    int64_t left = cr_client_time_left(call);
    int64_t margin;
    if (left > DEFAULT_WAIT_MS || left < 0) {
        left = left < 0 ? 0 : DEFAULT_WAIT_MS;
    }
    margin = left / 10 > 50 ? left / 10 : 50;
    left = left > margin ? left - margin : 0;
    return uv_now(n->loop) + (uint64_t)left;
}

static struct pending *add_pending(struct cr_node *n,
                                   struct cr_client_call *call,
                                   enum cr_client_kind kind)
{
    struct pending *p = calloc(1, sizeof *p);
    if (p == NULL) {
        reply_status(n, call, CR_OPS_REFUSED, "out of memory");
        return NULL;
    }
    p->call = call;
    p->kind = kind;
    p->deadline = deadline_of(n, call);
    p->next = n->pending;
    n->pending = p;
    return p;
}

static void on_forwarded(void *data, const struct cr_client_reply *reply)
{
    struct forward *f = data;
    struct cr_client_reply r = *reply;
    if (r.leader == 0) {
        fill_leader(f->n, &r);
    }
    cr_client_reply(f->call, &r);
    free(f);
}

/* Not the leader: pass the call on to it, once. */
static void forward(struct cr_node *n, struct cr_client_call *call)
{
    const struct cr_client_request *req = cr_client_request(call);
    struct cr_client_request fwd;
    cr_id leader = cr_core_leader(&n->core);
    const char *addr = leader != 0 ? dial_address_of(n, leader) : NULL;
    struct forward *f;
    int64_t left = cr_client_time_left(call);
    if (req->forwarded) {
        reply_status(n, call, CR_OPS_NOT_LEADER,
                     "not the leader (a forwarded request is not forwarded "
                     "again)");
        return;
    }
    if (addr == NULL || leader == n->cfg.id) {
        reply_status(n, call, CR_OPS_UNAVAILABLE,
                     "no leader is known right now; retry shortly");
        return;
    }
    f = malloc(sizeof *f);
    if (f == NULL) {
        reply_status(n, call, CR_OPS_REFUSED, "out of memory");
        return;
    }
    f->n = n;
    f->call = call;
    if (left > DEFAULT_WAIT_MS || left < 0) {
        left = DEFAULT_WAIT_MS;
    }
    /* Once only: the leader must not pass it on again. */
    fwd = *req;
    fwd.forwarded = true;
    cr_transport_forward(n->transport, addr, &fwd, (unsigned)left, on_forwarded,
                         f);
}

#define BATCH_MAX 4096

/* Proposes every write queued in this loop turn, in one proposal. */
static void on_batch(uv_check_t *h)
{
    struct cr_node *n = h->data;
    struct cr_entry *entries;
    struct pending **batch;
    struct cr_event ev;
    struct cr_update u;
    unsigned count = 0;
    cr_index first;
    cr_term term;
    int rv;
    for (struct pending *p = n->q_head; p != NULL && count < BATCH_MAX;
         p = p->q_next) {
        count++;
    }
    if (count == 0) {
        uv_check_stop(h);
        return;
    }
    entries = calloc(count, sizeof *entries);
    batch = calloc(count, sizeof *batch);
    if (entries == NULL || batch == NULL) {
        free(entries);
        free(batch);
        return; /* tried again at the next turn */
    }
    count = 0;
    for (struct pending *p = n->q_head; p != NULL && count < BATCH_MAX;
         p = p->q_next) {
        entries[count].type = CR_ENTRY_COMMAND;
        entries[count].buf.base = p->buf;
        entries[count].buf.len = p->len;
        batch[count++] = p;
    }
    /* Known before the step: in a cluster of one, the entries can commit
     * within it. */
    first = cr_core_last_index(&n->core) + 1;
    term = cr_core_term(&n->core);
    for (unsigned i = 0; i < count; i++) {
        batch[i]->index = first + i;
        batch[i]->term = term;
    }
    memset(&ev, 0, sizeof ev);
    ev.type = CR_EVENT_PROPOSE;
    ev.propose.entries = entries;
    ev.propose.n = count;
    /* The core copies the bytes; the queue lets go of them first, since
     * the step may answer (and free) some of these writes. */
    for (unsigned i = 0; i < count; i++) {
        batch[i]->buf = NULL;
        unqueue(n, batch[i]);
    }
    rv = step(n, &ev, &u);
    for (unsigned i = 0; i < count; i++) {
        free(entries[i].buf.base);
    }
    if (rv != 0) {
        for (unsigned i = 0; i < count; i++) {
            for (struct pending *q = n->pending; q != NULL; q = q->next) {
                if (q == batch[i]) {
                    struct cr_client_call *call = q->call;
                    remove_pending(n, q);
                    reply_status(
                        n, call,
                        rv == CR_ETRANSFER ? CR_OPS_REFUSED : CR_OPS_NOT_LEADER,
                        rv == CR_ETRANSFER
                            ? "a leadership transfer is in progress"
                            : "not the leader any more; not "
                              "applied");
                    break;
                }
            }
        }
    }
    free(entries);
    free(batch);
    if (n->q_head == NULL) {
        uv_check_stop(h);
    }
}

static void do_write(struct cr_node *n, struct cr_client_call *call)
{
    const struct cr_client_request *req = cr_client_request(call);
    struct cr_command cmd = req->command;
    uint8_t *buf;
    size_t len;
    struct pending *p;
    if (cr_core_role(&n->core) != CR_LEADER) {
        forward(n, call);
        return;
    }
    if (cr_storage_stalled(n->storage)) {
        reply_status(n, call, CR_OPS_REFUSED,
                     "the leader's disk is full; writes resume when space "
                     "returns");
        return;
    }
    /* The leader's clock goes into the entry: sessions expire the same
     * way on every server (§6.3). */
    cmd.time_ms = wall_ms();
    len = cr_command_size(&cmd);
    buf = malloc(len);
    if (buf == NULL) {
        reply_status(n, call, CR_OPS_REFUSED, "out of memory");
        return;
    }
    cr_command_encode(&cmd, buf);
    p = add_pending(n, call, req->kind);
    if (p == NULL) {
        free(buf);
        return;
    }
    p->buf = buf;
    p->len = len;
    p->queued = true;
    p->q_prev = n->q_tail;
    if (n->q_tail != NULL) {
        n->q_tail->q_next = p;
    } else {
        n->q_head = p;
    }
    n->q_tail = p;
    uv_check_start(&n->batcher, on_batch);
}

static void do_read(struct cr_node *n, struct cr_client_call *call)
{
    struct cr_event ev;
    struct pending *p = add_pending(n, call, CR_CLIENT_READ);
    int rv;
    if (p == NULL) {
        return;
    }
    p->read_id = ++n->next_read_id;
    memset(&ev, 0, sizeof ev);
    ev.type = CR_EVENT_READ;
    ev.read.id = p->read_id;
    rv = step(n, &ev, NULL);
    if (rv != 0) {
        for (struct pending *q = n->pending; q != NULL; q = q->next) {
            if (q == p) {
                remove_pending(n, p);
                reply_status(n, call, CR_OPS_UNAVAILABLE,
                             "no leader is known right now; retry shortly");
                break;
            }
        }
    }
}

static void do_change(struct cr_node *n, struct cr_client_call *call)
{
    const struct cr_client_request *req = cr_client_request(call);
    struct cr_event ev;
    struct cr_update u;
    struct pending *p;
    int rv;
    if (cr_core_role(&n->core) != CR_LEADER) {
        forward(n, call);
        return;
    }
    if (req->kind == CR_CLIENT_JOIN && req->cluster_id != 0 &&
        n->cluster_id != 0 && req->cluster_id != n->cluster_id) {
        reply_status(n, call, CR_OPS_INVALID,
                     "the joining server belongs to another cluster");
        return;
    }
    memset(&ev, 0, sizeof ev);
    if (req->kind == CR_CLIENT_TRANSFER) {
        ev.type = CR_EVENT_TRANSFER;
        ev.transfer.target = req->node_id;
        if (req->node_id == n->cfg.id) {
            reply_status(n, call, CR_OPS_OK, NULL);
            return;
        }
        p = add_pending(n, call, CR_CLIENT_TRANSFER);
        if (p == NULL) {
            return;
        }
        p->target = req->node_id;
        rv = step(n, &ev, &u);
        if (rv != 0) {
            remove_pending(n, p);
            reply_status(
                n, call, rv == CR_ENOTFOUND ? CR_OPS_INVALID : CR_OPS_REFUSED,
                rv == CR_ENOTFOUND ? "no such voter" : cr_strerror(rv));
        }
        return;
    }
    ev.type = CR_EVENT_CHANGE;
    ev.change.id = req->node_id;
    ev.change.address = req->address;
    ev.change.type = req->kind == CR_CLIENT_REMOVE ? CR_CHANGE_REMOVE
                     : req->voter                  ? CR_CHANGE_ADD
                                                   : CR_CHANGE_ADD_LEARNER;
    if (req->kind == CR_CLIENT_JOIN) {
        const struct cr_server *s =
            cr_config_get(cr_core_config(&n->core), req->node_id);
        if (s != NULL) {
            /* Already a member: a join retried after its answer was lost
             * succeeds again; the same id elsewhere is refused. */
            reply_status(n, call,
                         strcmp(s->address, req->address) == 0 ? CR_OPS_OK
                                                               : CR_OPS_INVALID,
                         strcmp(s->address, req->address) == 0
                             ? NULL
                             : "that node id is in use with another "
                               "address");
            return;
        }
        const char *dial = req->address;
        for (unsigned i = 0; i < n->cfg.n_routes; i++) {
            if (n->cfg.routes[i].id == req->node_id) {
                dial = n->cfg.routes[i].address;
            }
        }
        cr_transport_set_peer(n->transport, req->node_id, dial);
    }
    p = add_pending(n, call, req->kind);
    if (p == NULL) {
        return;
    }
    rv = step(n, &ev, &u);
    if (rv != 0) {
        remove_pending(n, p);
        reply_status(n, call,
                     rv == CR_ENOTFOUND || rv == CR_EINVAL || rv == CR_EFULL
                         ? CR_OPS_INVALID
                         : CR_OPS_REFUSED,
                     rv == CR_ECHANGE || rv == CR_ENOTREADY
                         ? "a configuration change is in progress; retry"
                     : rv == CR_ENOTFOUND ? "no such server"
                                          : cr_strerror(rv));
        return;
    }
    p->index = u.index;
    p->term = u.index_term;
    LOG(n, CR_LOG_INFO,
        req->kind == CR_CLIENT_REMOVE ? "remove_requested" : "join_requested",
        "peer=%" PRIu64 " index=%" PRIu64, req->node_id, u.index);
}

static void do_status(struct cr_node *n, struct cr_client_call *call)
{
    struct cr_client_reply r;
    struct cr_peer_status peers[CR_SERVERS_MAX];
    const struct cr_config *c = cr_core_config(&n->core);
    const struct cr_snapshot_meta *snap = cr_core_snapshot(&n->core);
    unsigned np = 0;
    memset(&r, 0, sizeof r);
    r.status = CR_OPS_OK;
    fill_leader(n, &r);
    r.node_id = n->cfg.id;
    r.role = role_name(n);
    r.term = cr_core_term(&n->core);
    r.commit = cr_core_commit(&n->core);
    r.applied = cr_app_applied(n->app);
    r.last_index = cr_core_last_index(&n->core);
    r.snapshot_index = snap != NULL ? snap->index : 0;
    r.config = c;
    r.config_index = cr_core_config_index(&n->core);
    r.cluster_id = n->cluster_id;
    r.total = cr_app_total(n->app);
    r.digest = cr_app_digest(n->app);
    if (cr_core_role(&n->core) == CR_LEADER) {
        for (unsigned i = 0; i < c->n; i++) {
            if (c->servers[i].id == n->cfg.id) {
                continue;
            }
            peers[np].id = c->servers[i].id;
            peers[np].match = cr_core_match(&n->core, c->servers[i].id);
            peers[np].state = cr_core_progress(&n->core, c->servers[i].id);
            np++;
        }
    }
    r.peers = peers;
    r.n_peers = np;
    cr_client_reply(call, &r);
}

static void on_client(void *data, struct cr_client_call *call)
{
    struct cr_node *n = data;
    const struct cr_client_request *req = cr_client_request(call);
    if (n->stopping) {
        reply_status(n, call, CR_OPS_UNAVAILABLE, "the server is stopping");
        return;
    }
    switch (req->kind) {
        case CR_CLIENT_STATUS:
            do_status(n, call);
            break;
        case CR_CLIENT_READ:
            do_read(n, call);
            break;
        case CR_CLIENT_OPERATION:
        case CR_CLIENT_ADD:
            do_write(n, call);
            break;
        case CR_CLIENT_JOIN:
        case CR_CLIENT_REMOVE:
        case CR_CLIENT_TRANSFER:
            do_change(n, call);
            break;
    }
}

/* ---------------------------------------------------------------------------
 * Sweeping: deadlines of clients, joining
 * ------------------------------------------------------------------------- */

static void on_join_reply(void *data, const struct cr_client_reply *r)
{
    struct cr_node *n = data;
    if (n->stopping) {
        return;
    }
    if (r->status == CR_OPS_OK) {
        LOG(n, CR_LOG_INFO, "join_accepted",
            "leader=%" PRIu64 " config_index=%" PRIu64, r->leader,
            r->config_index);
    } else {
        LOG(n, CR_LOG_WARN, "join_refused", "status=%d error=\"%s\"",
            (int)r->status, r->error != NULL ? r->error : "");
    }
}

static void on_sweep(uv_timer_t *t)
{
    struct cr_node *n = t->data;
    uint64_t now = uv_now(n->loop);
    for (struct pending *p = n->pending; p != NULL;) {
        struct pending *next = p->next;
        if (now >= p->deadline) {
            bool read = p->kind == CR_CLIENT_READ;
            /* A write may still commit: its outcome is unknown. A read has
             * no effect: it failed, definitely. */
            reply_status(n, p->call,
                         read                            ? CR_OPS_UNAVAILABLE
                         : p->kind == CR_CLIENT_TRANSFER ? CR_OPS_REFUSED
                                                         : CR_OPS_UNKNOWN,
                         read ? "the read timed out; retry"
                              : "timed out before the outcome was known; "
                                "retry with the same client id and "
                                "sequence to learn it");
            remove_pending(n, p);
        }
        p = next;
    }
    if (n->joining && now >= n->join_next && !n->stopping) {
        struct cr_client_request req;
        memset(&req, 0, sizeof req);
        req.kind = CR_CLIENT_JOIN;
        req.node_id = n->cfg.id;
        snprintf(req.address, sizeof req.address, "%s", n->cfg.advertise);
        req.voter = true;
        req.cluster_id = n->cluster_id;
        n->join_next = now + 1000;
        cr_transport_forward(n->transport, n->cfg.join, &req,
                             n->cfg.rpc_timeout_ms * 3, on_join_reply, n);
    }
}

/* ---------------------------------------------------------------------------
 * Start and stop
 * ------------------------------------------------------------------------- */

static uint64_t derive_cluster_id(const struct cr_config *c)
{
    /* The same initial voters give the same id on every first server. */
    uint64_t ids[CR_SERVERS_MAX];
    uint64_t h = 0xCBF29CE484222325ull;
    for (unsigned i = 0; i < c->n; i++) {
        unsigned j = i;
        while (j > 0 && ids[j - 1] > c->servers[i].id) {
            ids[j] = ids[j - 1];
            j--;
        }
        ids[j] = c->servers[i].id;
    }
    for (unsigned i = 0; i < c->n; i++) {
        h = (h ^ ids[i]) * 0x100000001B3ull;
    }
    return h == 0 ? 1 : h;
}

int cr_node_start(struct cr_node **out,
                  uv_loop_t *loop,
                  const struct cr_node_config *cfg,
                  char *errmsg)
{
    struct cr_node *n = calloc(1, sizeof *n);
    struct cr_storage_options so;
    struct cr_recovery rec;
    struct cr_config initial;
    struct cr_options opt;
    struct cr_transport_config tc;
    struct cr_transport_handlers th;
    struct cr_tracer tracer;
    bool bootstrap = false;
    int rv;

    if (n == NULL) {
        snprintf(errmsg, 512, "out of memory");
        return CR_ENOMEM;
    }
    n->loop = loop;
    n->cfg = *cfg;
    if (n->cfg.advertise[0] == '\0') {
        snprintf(n->cfg.advertise, sizeof n->cfg.advertise, "%s",
                 n->cfg.listen);
    }
    n->log.min = (enum cr_log_level)cfg->log_level;
    n->log.json = cfg->log_json;
    n->log.node = cfg->id;
    n->log.out = stderr;
    pthread_mutex_init(&n->mu, NULL);

    /* The initial configuration: this server and its peers, all voters. */
    memset(&initial, 0, sizeof initial);
    cr_config_add(&initial, cfg->id, CR_VOTER, n->cfg.advertise);
    for (unsigned i = 0; i < cfg->n_peers; i++) {
        cr_config_add(&initial, cfg->peers[i].id, CR_VOTER,
                      cfg->peers[i].address);
    }
    n->cluster_id = cfg->cluster_id;
    if (n->cluster_id == 0 && cfg->join[0] == '\0') {
        n->cluster_id = derive_cluster_id(&initial);
    }

    cr_storage_options_default(&so);
    so.cluster_id = n->cluster_id;
    so.segment_size = cfg->segment_size;
    rv = cr_app_new(&n->app, NULL, NULL);
    if (rv == 0) {
        rv = cr_storage_open(&n->storage, cfg->data_dir, &so, NULL, NULL,
                             on_storage_done, n, &rec, errmsg);
    }
    if (rv != 0) {
        cr_app_free(n->app);
        free(n);
        return rv;
    }
    if (rec.warning[0] != '\0') {
        LOG(n, CR_LOG_WARN, "recovery_warning", "warning=\"%s\"", rec.warning);
    }
    if (rec.cluster_id != 0) {
        n->cluster_id = rec.cluster_id;
    }
    cr_options_default(&opt);
    opt.election_timeout = cfg->election_timeout_ms;
    opt.heartbeat_interval = cfg->heartbeat_ms;
    opt.snapshot_timeout =
        10 * cfg->election_timeout_ms + 10u * cfg->rpc_timeout_ms + 10000u;
    rv = cr_core_init(&n->core, cfg->id, n->cluster_id, &opt, NULL,
                      wall_ms() ^ ((uint64_t)cfg->id << 32), uv_now(loop));
    if (rv != 0) {
        snprintf(errmsg, 512,
                 "bad timing: the election timeout (%u ms) must be longer "
                 "than the heartbeat interval (%u ms)",
                 cfg->election_timeout_ms, cfg->heartbeat_ms);
        cr_recovery_free(&rec, NULL);
        cr_storage_close(n->storage);
        cr_app_free(n->app);
        free(n);
        return CR_EINVAL;
    }
    tracer.data = n;
    tracer.emit = trace;
    cr_core_set_tracer(&n->core, &tracer);
    if (rec.has_snapshot) {
        restore_from(n, rec.snapshot_path);
    }
    if (!rec.fresh) {
        rv = cr_core_load(&n->core, &rec.hs,
                          rec.has_snapshot ? &rec.snapshot : NULL, rec.first,
                          rec.entries, rec.n);
        cr_recovery_free(&rec, NULL);
        if (rv != 0) {
            snprintf(errmsg, 512,
                     "%.200s: the recovered state does not fit together (%s); "
                     "`craftctl wal check %.200s` tells more",
                     cfg->data_dir, cr_strerror(rv), cfg->data_dir);
            cr_core_close(&n->core);
            cr_storage_close(n->storage);
            cr_app_free(n->app);
            free(n);
            return rv;
        }
    } else {
        cr_recovery_free(&rec, NULL);
        bootstrap = cfg->join[0] == '\0';
        n->joining = !bootstrap;
    }
    if (!rec.fresh && cfg->join[0] != '\0' &&
        cr_config_get(cr_core_config(&n->core), cfg->id) == NULL) {
        n->joining = true;
    }

    cr_transport_config_default(&tc);
    tc.id = cfg->id;
    tc.cluster_id = n->cluster_id;
    tc.listen = cfg->listen;
    tc.data_dir = cfg->data_dir;
    tc.rpc_timeout_ms = cfg->rpc_timeout_ms;
    tc.tls_cert = cfg->tls_cert;
    tc.tls_key = cfg->tls_key;
    tc.tls_ca = cfg->tls_ca;
    memset(&th, 0, sizeof th);
    th.data = n;
    th.on_message = on_message;
    th.on_unreachable = on_unreachable;
    th.on_client = on_client;
    th.snapshot_path = snapshot_path;
    rv = cr_transport_open(&n->transport, loop, &tc, &th, errmsg);
    if (rv != 0) {
        cr_core_close(&n->core);
        cr_storage_close(n->storage);
        cr_app_free(n->app);
        free(n);
        return rv;
    }
    for (unsigned i = 0; i < cfg->n_peers; i++) {
        cr_transport_set_peer(n->transport, cfg->peers[i].id,
                              dial_address_of(n, cfg->peers[i].id));
    }
    sync_peers(n);

    uv_timer_init(loop, &n->timer);
    n->timer.data = n;
    uv_timer_init(loop, &n->sweep);
    n->sweep.data = n;
    uv_async_init(loop, &n->persisted, on_persisted);
    n->persisted.data = n;
    uv_check_init(loop, &n->batcher);
    n->batcher.data = n;
    uv_timer_start(&n->sweep, on_sweep, SWEEP_MS, SWEEP_MS);
    n->handles_open = 4;

    LOG(n, CR_LOG_INFO, "started",
        "listen=%s advertise=%s data_dir=%s cluster=%" PRIu64
        " last_index=%" PRIu64 " commit=%" PRIu64 " voters=%u joining=%d",
        cfg->listen, n->cfg.advertise, cfg->data_dir, n->cluster_id,
        cr_core_last_index(&n->core), cr_core_commit(&n->core),
        cr_config_voters(cr_core_config(&n->core)), n->joining);
    if (bootstrap) {
        struct cr_update u;
        rv = cr_core_bootstrap(&n->core, &initial, &u);
        if (rv != 0) {
            snprintf(errmsg, 512, "cannot bootstrap: %s", cr_strerror(rv));
            return rv;
        }
        LOG(n, CR_LOG_INFO, "bootstrapped", "voters=%u", initial.n);
        carry_out(n, &u);
    } else {
        /* Hand out what the log says is committed, and arm the timer. */
        step_event(n, CR_EVENT_TICK);
    }
    *out = n;
    return 0;
}

static void on_handle_closed(uv_handle_t *h)
{
    struct cr_node *n = h->data;
    if (--n->handles_open > 0) {
        return;
    }
    {
        int status = cr_storage_close(n->storage);
        void (*done)(void *, int) = n->stop_done;
        void *data = n->stop_data;
        LOG(n, CR_LOG_INFO, "stopped", "status=%s", cr_errname(status));
        cr_core_close(&n->core);
        cr_app_free(n->app);
        pthread_mutex_destroy(&n->mu);
        free(n);
        if (done != NULL) {
            done(data, status);
        }
    }
}

static void on_transport_closed(void *data)
{
    struct cr_node *n = data;
    uv_close((uv_handle_t *)&n->timer, on_handle_closed);
    uv_close((uv_handle_t *)&n->sweep, on_handle_closed);
    uv_close((uv_handle_t *)&n->persisted, on_handle_closed);
    uv_close((uv_handle_t *)&n->batcher, on_handle_closed);
}

void cr_node_stop(struct cr_node *n,
                  void (*done)(void *data, int status),
                  void *data)
{
    if (n->stopping) {
        return;
    }
    n->stopping = true;
    n->stop_done = done;
    n->stop_data = data;
    LOG(n, CR_LOG_INFO, "stopping", "pending=%d", n->pending != NULL);
    while (n->pending != NULL) {
        struct pending *p = n->pending;
        reply_status(
            n, p->call,
            p->kind == CR_CLIENT_READ ? CR_OPS_UNAVAILABLE : CR_OPS_UNKNOWN,
            "the server is stopping");
        remove_pending(n, p);
    }
    uv_timer_stop(&n->timer);
    uv_timer_stop(&n->sweep);
    uv_check_stop(&n->batcher);
    cr_transport_close(n->transport, on_transport_closed, n);
}
