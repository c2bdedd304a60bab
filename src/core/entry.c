/* Reference-counted payload batches.
 *
 * One allocation holds a header with the reference count and the payload
 * bytes of one or more entries. The leader copies a proposal once; a
 * follower copies an incoming message once; after that, the log, the
 * messages that carry entries and the node's queues share the bytes. The
 * core is single-threaded, so the count is a plain integer. */
#include <stdalign.h>

#include "core_impl.h"

struct batch_header
{
    alignas(max_align_t) size_t refs;
};

void *cr_batch_alloc(const struct cr_alloc *a, size_t size, void **batch)
{
    struct batch_header *h;
    if (size > SIZE_MAX - sizeof *h) {
        return NULL;
    }
    h = a->malloc(a->data, sizeof *h + (size == 0 ? 1 : size));
    if (h == NULL) {
        return NULL;
    }
    h->refs = 1;
    *batch = h;
    return h + 1;
}

void cr_batch_ref(void *batch)
{
    struct batch_header *h = batch;
    assert(h->refs > 0);
    h->refs++;
}

void cr_batch_unref(const struct cr_alloc *a, void *batch)
{
    struct batch_header *h = batch;
    if (h == NULL) {
        return;
    }
    assert(h->refs > 0);
    if (--h->refs == 0) {
        a->free(a->data, h);
    }
}
