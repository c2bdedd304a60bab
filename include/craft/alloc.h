/* craft's allocator table.
 *
 * The core allocates only through a struct cr_alloc, so that tests can swap
 * in a counting or failing allocator and embedders can use their own. The
 * shape matches ProtobufCAllocator (data, alloc, free) so that one adapter
 * serves both. */
#ifndef CRAFT_ALLOC_H
#define CRAFT_ALLOC_H

#include <stddef.h>

struct cr_alloc
{
    void *data;
    /* Returns NULL on failure. size is never 0. */
    void *(*malloc)(void *data, size_t size);
    /* Like realloc(3): on failure returns NULL and leaves ptr untouched. */
    void *(*realloc)(void *data, void *ptr, size_t size);
    /* ptr may be NULL. */
    void (*free)(void *data, void *ptr);
};

/* The C library's malloc/realloc/free. */
extern const struct cr_alloc cr_alloc_default;

#endif /* CRAFT_ALLOC_H */
