/* See proxy_config.h. */
#include "proxy_config.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cp_config_init(struct cp_config *c)
{
    memset(c, 0, sizeof *c);
    snprintf(c->listen_host, sizeof c->listen_host, "127.0.0.1");
}

void cp_config_close(struct cp_config *c)
{
    if (c != NULL) {
        free(c->links);
        free(c->nodes);
        free(c->unary);
        memset(c, 0, sizeof *c);
    }
}

int cp_address_check(const char *s, const char *what, char *errmsg)
{
    const char *colon = strrchr(s, ':');
    size_t host_len;
    unsigned long port = 0;
    if (colon == NULL || colon == s || colon[1] == '\0' ||
        strlen(s) >= CP_ADDRESS_MAX) {
        goto bad;
    }
    host_len = (size_t)(colon - s);
    if (s[0] == '[' ? s[host_len - 1] != ']' || host_len < 3
                    : memchr(s, ':', host_len) != NULL) {
        goto bad;
    }
    for (const char *p = s; p < colon; p++) {
        if (*p <= ' ' || *p > '~' || *p == ',' || *p == '=') {
            goto bad;
        }
    }
    for (const char *p = colon + 1; *p != '\0'; p++) {
        if (*p < '0' || *p > '9' || port > 65535) {
            goto bad;
        }
        port = port * 10 + (unsigned long)(*p - '0');
    }
    if (port > 65535) {
        goto bad;
    }
    return 0;
bad:
    snprintf(errmsg, CP_ERRMSG_SIZE,
             "%s \"%.80s\" is not HOST:PORT (port 0 to 65535; [V6]:PORT)", what,
             s);
    return CP_EINVAL;
}

static int add_link(struct cp_config *c,
                    cp_node from,
                    cp_node to,
                    const char *listen,
                    size_t listen_len,
                    const char *target,
                    char *errmsg)
{
    struct cp_link_spec *l;
    int rv;
    if (c->n_links == c->cap_links) {
        size_t cap = c->cap_links == 0 ? 16 : c->cap_links * 2;
        struct cp_link_spec *v = realloc(c->links, cap * sizeof *v);
        if (v == NULL) {
            return CP_ENOMEM;
        }
        c->links = v;
        c->cap_links = cap;
    }
    l = &c->links[c->n_links];
    memset(l, 0, sizeof *l);
    l->from = from;
    l->to = to;
    if (listen_len >= sizeof l->listen || strlen(target) >= sizeof l->target) {
        snprintf(errmsg, CP_ERRMSG_SIZE, "address too long");
        return CP_EINVAL;
    }
    memcpy(l->listen, listen, listen_len);
    l->listen[listen_len] = '\0';
    snprintf(l->target, sizeof l->target, "%s", target);
    if ((rv = cp_address_check(l->listen, "listen address", errmsg)) != 0 ||
        (rv = cp_address_check(l->target, "target address", errmsg)) != 0) {
        return rv;
    }
    c->n_links++;
    return 0;
}

/* "FROM-TO" then `sep1` LISTEN `sep2` TARGET. */
static int link_from(struct cp_config *c,
                     const char *name,
                     size_t name_len,
                     const char *listen,
                     size_t listen_len,
                     const char *target,
                     char *errmsg)
{
    char buf[CP_LINK_NAME_MAX];
    cp_node from, to;
    int rv;
    if (name_len >= sizeof buf) {
        snprintf(errmsg, CP_ERRMSG_SIZE, "\"%.*s\" is not a link name",
                 (int)(name_len > 40 ? 40 : name_len), name);
        return CP_EINVAL;
    }
    memcpy(buf, name, name_len);
    buf[name_len] = '\0';
    if ((rv = cp_link_parse(buf, &from, &to, errmsg)) != 0) {
        return rv;
    }
    return add_link(c, from, to, listen, listen_len, target, errmsg);
}

int cp_config_link_arg(struct cp_config *c, const char *arg, char *errmsg)
{
    const char *eq = strchr(arg, '=');
    const char *comma = eq != NULL ? strchr(eq + 1, ',') : NULL;
    if (eq == NULL || comma == NULL) {
        snprintf(errmsg, CP_ERRMSG_SIZE,
                 "--link \"%.80s\" is not FROM-TO=LISTEN,TARGET (e.g. "
                 "1-2=127.0.0.1:0,127.0.0.1:50052)",
                 arg);
        return CP_EINVAL;
    }
    return link_from(c, arg, (size_t)(eq - arg), eq + 1,
                     (size_t)(comma - eq - 1), comma + 1, errmsg);
}

static int add_node(struct cp_config *c,
                    const char *id,
                    size_t id_len,
                    const char *address,
                    char *errmsg)
{
    struct cp_node_spec *n;
    uint64_t v = 0;
    int rv;
    for (size_t i = 0; i < id_len; i++) {
        if (id[i] < '0' || id[i] > '9' || v > UINT32_MAX) {
            v = 0;
            break;
        }
        v = v * 10 + (uint64_t)(id[i] - '0');
    }
    if (id_len == 0 || v == 0 || v > UINT32_MAX) {
        snprintf(errmsg, CP_ERRMSG_SIZE,
                 "node id \"%.*s\" is not 1 to 4294967295",
                 (int)(id_len > 40 ? 40 : id_len), id);
        return CP_EINVAL;
    }
    if ((rv = cp_address_check(address, "node address", errmsg)) != 0) {
        return rv;
    }
    for (size_t i = 0; i < c->n_nodes; i++) {
        if (c->nodes[i].id == v) {
            snprintf(errmsg, CP_ERRMSG_SIZE, "node %" PRIu64 " is given twice",
                     v);
            return CP_EINVAL;
        }
    }
    if (c->n_nodes == c->cap_nodes) {
        size_t cap = c->cap_nodes == 0 ? 8 : c->cap_nodes * 2;
        struct cp_node_spec *nv = realloc(c->nodes, cap * sizeof *nv);
        if (nv == NULL) {
            return CP_ENOMEM;
        }
        c->nodes = nv;
        c->cap_nodes = cap;
    }
    n = &c->nodes[c->n_nodes++];
    n->id = (cp_node)v;
    snprintf(n->address, sizeof n->address, "%s", address);
    return 0;
}

int cp_config_node_arg(struct cp_config *c, const char *arg, char *errmsg)
{
    const char *eq = strchr(arg, '=');
    if (eq == NULL) {
        snprintf(errmsg, CP_ERRMSG_SIZE,
                 "--node \"%.80s\" is not ID=HOST:PORT (e.g. "
                 "2=127.0.0.1:50052)",
                 arg);
        return CP_EINVAL;
    }
    return add_node(c, arg, (size_t)(eq - arg), eq + 1, errmsg);
}

int cp_config_unary_arg(struct cp_config *c, const char *method, char *errmsg)
{
    if (!cp_method_valid(method)) {
        snprintf(errmsg, CP_ERRMSG_SIZE,
                 "\"%.80s\" is not a full method name like "
                 "/raft.RaftService/AppendEntries",
                 method);
        return CP_EINVAL;
    }
    for (size_t i = 0; i < c->n_unary; i++) {
        if (strcmp(c->unary[i], method) == 0) {
            return 0;
        }
    }
    if (c->n_unary == c->cap_unary) {
        size_t cap = c->cap_unary == 0 ? 16 : c->cap_unary * 2;
        char(*v)[CP_METHOD_MAX] = realloc(c->unary, cap * sizeof *v);
        if (v == NULL) {
            return CP_ENOMEM;
        }
        c->unary = v;
        c->cap_unary = cap;
    }
    snprintf(c->unary[c->n_unary++], CP_METHOD_MAX, "%s", method);
    return 0;
}

/* A token of a .proto file: an identifier (dots included) or one
 * punctuation character; comments and string literals are skipped. */
struct scan
{
    const char *p;
    char tok[CP_METHOD_MAX];
};

static bool next_token(struct scan *s)
{
    size_t n = 0;
    for (;;) {
        while (isspace((unsigned char)*s->p)) {
            s->p++;
        }
        if (s->p[0] == '/' && s->p[1] == '/') {
            s->p += strcspn(s->p, "\n");
        } else if (s->p[0] == '/' && s->p[1] == '*') {
            const char *end = strstr(s->p + 2, "*/");
            s->p = end != NULL ? end + 2 : s->p + strlen(s->p);
        } else if (*s->p == '"' || *s->p == '\'') {
            char q = *s->p++;
            while (*s->p != '\0' && *s->p != q) {
                s->p += *s->p == '\\' && s->p[1] != '\0' ? 2 : 1;
            }
            if (*s->p == q) {
                s->p++;
            }
        } else {
            break;
        }
    }
    if (*s->p == '\0') {
        return false;
    }
    if (isalnum((unsigned char)*s->p) || *s->p == '_' || *s->p == '.') {
        while (
            (isalnum((unsigned char)*s->p) || *s->p == '_' || *s->p == '.') &&
            n + 1 < sizeof s->tok) {
            s->tok[n++] = *s->p++;
        }
    } else {
        s->tok[n++] = *s->p++;
    }
    s->tok[n] = '\0';
    return true;
}

static bool is(const struct scan *s, const char *t)
{
    return strcmp(s->tok, t) == 0;
}

/* After "rpc": NAME ( [stream] TYPE ) returns ( [stream] TYPE ). Sets
 * *unary; false if the declaration is malformed. */
static bool scan_rpc(struct scan *s, char *name, bool *unary)
{
    bool streams = false;
    if (!next_token(s) ||
        !(isalpha((unsigned char)s->tok[0]) || s->tok[0] == '_')) {
        return false;
    }
    snprintf(name, CP_METHOD_MAX, "%s", s->tok);
    for (int side = 0; side < 2; side++) {
        if (side == 1 && (!next_token(s) || !is(s, "returns"))) {
            return false;
        }
        if (!next_token(s) || !is(s, "(") || !next_token(s)) {
            return false;
        }
        if (is(s, "stream")) {
            streams = true;
            if (!next_token(s)) {
                return false;
            }
        }
        if (!next_token(s) || !is(s, ")")) {
            return false;
        }
    }
    *unary = !streams;
    return true;
}

int cp_config_unary_from(struct cp_config *c, const char *path, char *errmsg)
{
    FILE *f = fopen(path, "rb");
    char *text, package[CP_METHOD_MAX + 1] = "", service[CP_METHOD_MAX] = "";
    struct scan s;
    long len;
    int depth = 0, service_depth = -1, rv = 0;
    size_t found = 0;
    if (f == NULL) {
        snprintf(errmsg, CP_ERRMSG_SIZE, "cannot open %.200s", path);
        return CP_EIO;
    }
    if (fseek(f, 0, SEEK_END) != 0 || (len = ftell(f)) < 0 || len > (4 << 20) ||
        fseek(f, 0, SEEK_SET) != 0 ||
        (text = malloc((size_t)len + 1)) == NULL) {
        fclose(f);
        snprintf(errmsg, CP_ERRMSG_SIZE, "cannot read %.200s", path);
        return CP_EIO;
    }
    if (fread(text, 1, (size_t)len, f) != (size_t)len) {
        free(text);
        fclose(f);
        snprintf(errmsg, CP_ERRMSG_SIZE, "cannot read %.200s", path);
        return CP_EIO;
    }
    fclose(f);
    text[len] = '\0';
    s.p = text;
    while (rv == 0 && next_token(&s)) {
        if (is(&s, "{")) {
            depth++;
        } else if (is(&s, "}")) {
            if (--depth == service_depth) {
                service_depth = -1;
            }
        } else if (depth == 0 && is(&s, "package")) {
            if (next_token(&s)) {
                snprintf(package, sizeof package, "%s.", s.tok);
            }
        } else if (depth == 0 && is(&s, "service")) {
            if (next_token(&s)) {
                snprintf(service, sizeof service, "%s", s.tok);
                service_depth = depth;
            }
        } else if (service_depth >= 0 && depth == service_depth + 1 &&
                   is(&s, "rpc")) {
            char name[CP_METHOD_MAX], method[CP_METHOD_MAX * 3];
            bool unary;
            if (!scan_rpc(&s, name, &unary)) {
                snprintf(errmsg, CP_ERRMSG_SIZE,
                         "%.120s: cannot read the rpc after \"%.40s\"", path,
                         s.tok);
                rv = CP_EINVAL;
            } else if (unary) {
                snprintf(method, sizeof method, "/%s%s/%s", package, service,
                         name);
                rv = cp_config_unary_arg(c, method, errmsg);
                found++;
            }
        }
    }
    free(text);
    if (rv == 0 && found == 0) {
        snprintf(errmsg, CP_ERRMSG_SIZE, "%.200s declares no unary method",
                 path);
        rv = CP_EINVAL;
    }
    return rv;
}

/* Splits line into at most 4 blank-separated words (NUL-terminating them
 * in place); returns their number, or 5 if there are more. */
static int split(char *line, char **w)
{
    int n = 0;
    char *p = line;
    for (;;) {
        while (*p == ' ' || *p == '\t') {
            p++;
        }
        if (*p == '\0') {
            return n;
        }
        if (n == 4) {
            return 5;
        }
        w[n++] = p;
        while (*p != '\0' && *p != ' ' && *p != '\t') {
            p++;
        }
        if (*p != '\0') {
            *p++ = '\0';
        }
    }
}

int cp_config_load(struct cp_config *c, const char *path, char *errmsg)
{
    FILE *f = fopen(path, "r");
    char line[1024];
    unsigned lineno = 0;
    int rv = 0;
    if (f == NULL) {
        snprintf(errmsg, CP_ERRMSG_SIZE, "cannot open the cluster file %s",
                 path);
        return CP_EIO;
    }
    while (rv == 0 && fgets(line, sizeof line, f) != NULL) {
        char *w[4];
        char msg[CP_ERRMSG_SIZE];
        int n;
        lineno++;
        line[strcspn(line, "#\r\n")] = '\0';
        n = split(line, w);
        if (n == 0) {
            continue;
        }
        if (n == 4 && strcmp(w[0], "link") == 0) {
            rv =
                link_from(c, w[1], strlen(w[1]), w[2], strlen(w[2]), w[3], msg);
        } else if (n == 3 && strcmp(w[0], "node") == 0) {
            rv = add_node(c, w[1], strlen(w[1]), w[2], msg);
        } else if (n == 2 && strcmp(w[0], "unary") == 0) {
            rv = cp_config_unary_arg(c, w[1], msg);
        } else if (n == 2 && strcmp(w[0], "unary-from") == 0) {
            rv = cp_config_unary_from(c, w[1], msg);
        } else {
            snprintf(msg, sizeof msg,
                     "expected \"link FROM-TO LISTEN TARGET\", \"node ID "
                     "ADDRESS\", \"unary METHOD\" or \"unary-from FILE\"");
            rv = CP_EINVAL;
        }
        if (rv != 0) {
            snprintf(errmsg, CP_ERRMSG_SIZE, "%.60s:%u: %.170s", path, lineno,
                     msg);
        }
    }
    if (rv == 0 && ferror(f)) {
        snprintf(errmsg, CP_ERRMSG_SIZE, "cannot read the cluster file %s",
                 path);
        rv = CP_EIO;
    }
    fclose(f);
    return rv;
}

static bool has_link(const struct cp_config *c, cp_node from, cp_node to)
{
    for (size_t i = 0; i < c->n_links; i++) {
        if (c->links[i].from == from && c->links[i].to == to) {
            return true;
        }
    }
    return false;
}

int cp_config_finish(struct cp_config *c, char *errmsg)
{
    char listen[CP_ADDRESS_MAX];
    int rv;
    for (size_t i = 0; i < c->n_links; i++) {
        for (size_t j = i + 1; j < c->n_links; j++) {
            if (c->links[i].from == c->links[j].from &&
                c->links[i].to == c->links[j].to) {
                snprintf(errmsg, CP_ERRMSG_SIZE,
                         "link %" PRIu32 "-%" PRIu32 " is given twice",
                         c->links[i].from, c->links[i].to);
                return CP_EINVAL;
            }
        }
    }
    if (c->n_nodes == 0) {
        return 0;
    }
    if ((size_t)snprintf(listen, sizeof listen, "%s:0", c->listen_host) >=
        sizeof listen) {
        snprintf(errmsg, CP_ERRMSG_SIZE, "--listen-host is too long");
        return CP_EINVAL;
    }
    for (size_t i = 0; i < c->n_nodes; i++) {
        for (size_t j = 0; j < c->n_nodes; j++) {
            const struct cp_node_spec *a = &c->nodes[i], *b = &c->nodes[j];
            if (i == j || has_link(c, a->id, b->id)) {
                continue;
            }
            rv = add_link(c, a->id, b->id, listen, strlen(listen), b->address,
                          errmsg);
            if (rv != 0) {
                return rv;
            }
        }
    }
    return 0;
}
