/* The default allocator: the C library's. Allocation is not I/O, so this
 * stays in the core; everything else goes through the table. */
#include <stdlib.h>

#include "craft/alloc.h"

static void *default_malloc(void *data, size_t size)
{
    (void)data;
    return malloc(size);
}

static void *default_realloc(void *data, void *ptr, size_t size)
{
    (void)data;
    return realloc(ptr, size);
}

static void default_free(void *data, void *ptr)
{
    (void)data;
    free(ptr);
}

const struct cr_alloc cr_alloc_default = {
    .data = NULL,
    .malloc = default_malloc,
    .realloc = default_realloc,
    .free = default_free,
};
