/* The in-memory log.
 *
 * entries[i] holds index offset + 1 + i. Entries up to `offset` are
 * compacted into the snapshot (or, after cr_core_load, were not loaded);
 * offset_term is the term at `offset` (0 when unknown). One array keeps
 * entries contiguous, so that a message or the update can point at a run
 * of them; compaction shifts it, which happens once per snapshot. */
#include <string.h>

#include "core_impl.h"

cr_index cr__log_last(const struct cr_core *c)
{
    return c->offset + c->n_entries;
}

cr_term cr__log_term(const struct cr_core *c, cr_index index)
{
    if (index == c->offset) {
        return c->offset_term;
    }
    if (index < c->offset || index > cr__log_last(c)) {
        if (c->has_snapshot && index == c->snapshot.index) {
            return c->snapshot.term;
        }
        return 0;
    }
    return c->entries[index - c->offset - 1].term;
}

struct cr_entry *cr__log_at(const struct cr_core *c, cr_index index)
{
    if (index <= c->offset || index > cr__log_last(c)) {
        return NULL;
    }
    return &c->entries[index - c->offset - 1];
}

static int reserve(struct cr_core *c, unsigned more)
{
    unsigned cap;
    struct cr_entry *e;
    if (more > UINT32_MAX / 2 - c->n_entries) {
        return CR_ETOOBIG;
    }
    if (c->n_entries + more <= c->cap_entries) {
        return 0;
    }
    cap = c->cap_entries == 0 ? 64 : c->cap_entries;
    while (cap < c->n_entries + more) {
        cap *= 2;
    }
    e = c->alloc->realloc(c->alloc->data, c->entries, cap * sizeof *e);
    if (e == NULL) {
        return CR_ENOMEM;
    }
    c->entries = e;
    c->cap_entries = cap;
    return 0;
}

static void mark_dirty(struct cr_core *c, cr_index from)
{
    if (c->dirty_from == 0 || from < c->dirty_from) {
        c->dirty_from = from;
    }
}

int cr__log_append(struct cr_core *c,
                   const struct cr_entry *entries,
                   unsigned n,
                   cr_term term)
{
    size_t copy = 0;
    uint8_t *data = NULL;
    void *batch = NULL;
    int rv;

    rv = reserve(c, n);
    if (rv != 0) {
        return rv;
    }
    for (unsigned i = 0; i < n; i++) {
        if (entries[i].batch == NULL) {
            copy += entries[i].buf.len;
        }
    }
    if (copy > 0) {
        data = cr_batch_alloc(c->alloc, copy, &batch);
        if (data == NULL) {
            return CR_ENOMEM;
        }
    }
    mark_dirty(c, cr__log_last(c) + 1);
    for (unsigned i = 0; i < n; i++) {
        struct cr_entry *e = &c->entries[c->n_entries++];
        *e = entries[i];
        if (term != 0) {
            e->term = term;
        }
        if (entries[i].batch != NULL) {
            cr_batch_ref(e->batch);
        } else if (e->buf.len > 0) {
            /* Every borrowed payload shares the one new batch. */
            memcpy(data, entries[i].buf.base, e->buf.len);
            e->buf.base = data;
            e->batch = batch;
            data += e->buf.len;
            cr_batch_ref(batch);
        } else {
            e->buf.base = NULL;
        }
    }
    /* Drop the allocation's own reference: the entries hold theirs. */
    cr_batch_unref(c->alloc, batch);
    return 0;
}

int cr__log_append_owned(struct cr_core *c,
                         cr_term term,
                         enum cr_entry_type type,
                         struct cr_buf buf,
                         void *batch)
{
    struct cr_entry *e;
    int rv = reserve(c, 1);
    if (rv != 0) {
        return rv;
    }
    mark_dirty(c, cr__log_last(c) + 1);
    e = &c->entries[c->n_entries++];
    e->term = term;
    e->type = type;
    e->buf = buf;
    e->batch = batch;
    return 0;
}

/* Completions of writes made before a truncation must not count the
 * discarded entries as durable: remember the lowest index kept by any
 * truncation still in flight (see on_persisted in core.c). */
static void note_truncation(struct cr_core *c, cr_index kept)
{
    if (c->trunc_seq <= c->durable_seq || kept < c->trunc_index) {
        c->trunc_index = kept;
    }
    c->trunc_seq = CR__SEQ_PENDING;
    if (c->durable_index > kept) {
        c->durable_index = kept;
    }
}

void cr__log_truncate(struct cr_core *c, cr_index from)
{
    cr_index last = cr__log_last(c);
    assert(from > c->offset);
    if (from > last) {
        return;
    }
    for (cr_index i = from; i <= last; i++) {
        cr_batch_unref(c->alloc, cr__log_at(c, i)->batch);
    }
    c->n_entries = (unsigned)(from - c->offset - 1);
    mark_dirty(c, from);
    note_truncation(c, from - 1);
}

void cr__log_install(struct cr_core *c, cr_index index, cr_term term)
{
    cr__log_reset(c, index, term);
    mark_dirty(c, index + 1);
    note_truncation(c, index);
}

void cr__log_compact(struct cr_core *c, cr_index upto)
{
    unsigned drop;
    if (upto <= c->offset) {
        return;
    }
    assert(upto <= cr__log_last(c));
    drop = (unsigned)(upto - c->offset);
    c->offset_term = cr__log_term(c, upto);
    for (unsigned i = 0; i < drop; i++) {
        cr_batch_unref(c->alloc, c->entries[i].batch);
    }
    memmove(c->entries, c->entries + drop,
            (c->n_entries - drop) * sizeof *c->entries);
    c->n_entries -= drop;
    c->offset = upto;
}

void cr__log_reset(struct cr_core *c, cr_index index, cr_term term)
{
    for (unsigned i = 0; i < c->n_entries; i++) {
        cr_batch_unref(c->alloc, c->entries[i].batch);
    }
    c->n_entries = 0;
    c->offset = index;
    c->offset_term = term;
}

void cr__log_free(struct cr_core *c)
{
    cr__log_reset(c, 0, 0);
    c->alloc->free(c->alloc->data, c->entries);
    c->entries = NULL;
    c->cap_entries = 0;
}

cr_index cr__log_find_conflict(const struct cr_core *c,
                               cr_index index,
                               cr_term term)
{
    cr_index last = cr__log_last(c);
    if (index > last) {
        index = last;
    }
    while (index > c->offset) {
        if (cr__log_term(c, index) <= term) {
            return index;
        }
        index--;
    }
    return index;
}

bool cr__log_config_at(const struct cr_core *c,
                       cr_index index,
                       struct cr_config *out,
                       cr_index *out_index)
{
    cr_index last = cr__log_last(c);
    if (index > last) {
        index = last;
    }
    for (cr_index i = index; i > c->offset; i--) {
        const struct cr_entry *e = cr__log_at(c, i);
        if (e->type == CR_ENTRY_CONFIG &&
            cr_config_decode(e->buf.base, e->buf.len, out) == 0) {
            *out_index = i;
            return true;
        }
    }
    if (c->has_snapshot) {
        *out = c->snapshot.config;
        *out_index = c->snapshot.config_index;
        return true;
    }
    return false;
}
