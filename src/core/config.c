/* Cluster configurations: lookup, edits, and the byte encoding stored in
 * CR_ENTRY_CONFIG entries and snapshots.
 *
 * Encoding (version 1, little-endian):
 *   u8 version, u8 n, then n times:
 *   u64 id, u8 suffrage, u8 flags (bit 0: promote), u8 address length,
 *   address bytes (no NUL).
 * Entries come from peers and from disk, so decoding checks everything. */
#include <string.h>

#include "core_impl.h"

#define CONFIG_VERSION 1
#define FLAG_PROMOTE 1u

const struct cr_server *cr_config_get(const struct cr_config *c, cr_id id)
{
    for (unsigned i = 0; i < c->n; i++) {
        if (c->servers[i].id == id) {
            return &c->servers[i];
        }
    }
    return NULL;
}

int cr_config_add(struct cr_config *c,
                  cr_id id,
                  enum cr_suffrage suffrage,
                  const char *address)
{
    size_t len = address == NULL ? 0 : strlen(address);
    struct cr_server *s;
    if (id == 0 || len >= CR_ADDRESS_MAX ||
        (suffrage != CR_VOTER && suffrage != CR_LEARNER)) {
        return CR_EINVAL;
    }
    if (cr_config_get(c, id) != NULL) {
        return CR_EEXIST;
    }
    if (c->n >= CR_SERVERS_MAX) {
        return CR_EFULL;
    }
    s = &c->servers[c->n++];
    memset(s, 0, sizeof *s);
    s->id = id;
    s->suffrage = suffrage;
    if (len > 0) {
        memcpy(s->address, address, len);
    }
    return 0;
}

int cr_config_remove(struct cr_config *c, cr_id id)
{
    for (unsigned i = 0; i < c->n; i++) {
        if (c->servers[i].id == id) {
            memmove(&c->servers[i], &c->servers[i + 1],
                    (c->n - i - 1) * sizeof c->servers[0]);
            c->n--;
            return 0;
        }
    }
    return CR_ENOTFOUND;
}

unsigned cr_config_voters(const struct cr_config *c)
{
    unsigned n = 0;
    for (unsigned i = 0; i < c->n; i++) {
        if (c->servers[i].suffrage == CR_VOTER) {
            n++;
        }
    }
    return n;
}

bool cr_config_equal(const struct cr_config *a, const struct cr_config *b)
{
    if (a->n != b->n) {
        return false;
    }
    for (unsigned i = 0; i < a->n; i++) {
        const struct cr_server *x = &a->servers[i];
        const struct cr_server *y = &b->servers[i];
        if (x->id != y->id || x->suffrage != y->suffrage ||
            x->promote != y->promote || strcmp(x->address, y->address) != 0) {
            return false;
        }
    }
    return true;
}

size_t cr_config_encoded_size(const struct cr_config *c)
{
    size_t size = 2;
    for (unsigned i = 0; i < c->n; i++) {
        size += 8 + 3 + strlen(c->servers[i].address);
    }
    return size;
}

void cr_config_encode(const struct cr_config *c, void *buf)
{
    uint8_t *p = buf;
    *p++ = CONFIG_VERSION;
    *p++ = (uint8_t)c->n;
    for (unsigned i = 0; i < c->n; i++) {
        const struct cr_server *s = &c->servers[i];
        size_t len = strlen(s->address);
        for (unsigned b = 0; b < 8; b++) {
            *p++ = (uint8_t)(s->id >> (8 * b));
        }
        *p++ = (uint8_t)s->suffrage;
        *p++ = s->promote ? FLAG_PROMOTE : 0;
        *p++ = (uint8_t)len;
        memcpy(p, s->address, len);
        p += len;
    }
}

int cr_config_decode(const void *buf, size_t len, struct cr_config *c)
{
    const uint8_t *p = buf;
    const uint8_t *end;
    unsigned n;
    /* Checked before any pointer arithmetic: an empty payload may come
     * with a NULL base. */
    if (buf == NULL || len < 2 || p[0] != CONFIG_VERSION ||
        p[1] > CR_SERVERS_MAX) {
        return CR_ECORRUPT;
    }
    end = p + len;
    n = p[1];
    p += 2;
    memset(c, 0, sizeof *c);
    for (unsigned i = 0; i < n; i++) {
        struct cr_server *s = &c->servers[i];
        uint64_t id = 0;
        size_t alen;
        if (end - p < 11) {
            return CR_ECORRUPT;
        }
        for (unsigned b = 0; b < 8; b++) {
            id |= (uint64_t)p[b] << (8 * b);
        }
        p += 8;
        if (id == 0 || cr_config_get(c, id) != NULL ||
            (p[0] != CR_VOTER && p[0] != CR_LEARNER) ||
            (p[1] & ~FLAG_PROMOTE) != 0 || (p[0] == CR_VOTER && p[1] != 0)) {
            return CR_ECORRUPT;
        }
        s->id = id;
        s->suffrage = (enum cr_suffrage)p[0];
        s->promote = (p[1] & FLAG_PROMOTE) != 0;
        alen = p[2];
        p += 3;
        if (alen >= CR_ADDRESS_MAX || (size_t)(end - p) < alen ||
            memchr(p, '\0', alen) != NULL) {
            return CR_ECORRUPT;
        }
        memcpy(s->address, p, alen);
        p += alen;
        c->n = i + 1;
    }
    if (p != end) {
        return CR_ECORRUPT;
    }
    return 0;
}
