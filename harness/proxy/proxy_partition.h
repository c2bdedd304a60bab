/* Partitions by node id (pure).
 *
 * A partition is a set of directed cuts: a cut A>B means that messages
 * from node A no longer reach node B. On gRPC links that is two things: the
 * calls A makes to B (link A-B) are dropped, and the answers A gives to B's
 * calls (link B-A) are dropped, unless B>A is cut too, in which case those
 * calls never reach A. cp_partition_faults() turns cuts into those rules.
 *
 * Spec grammar (node lists are comma-separated; groups are separated by
 * "|" or blanks):
 *   isolate N                    N against every other known node
 *   [components] G1|G2[|G3...]   nodes talk only within their group;
 *                                nodes in no group are not cut
 *   majorities-ring [LIST]       LIST (default: every known node, by id) in
 *                                a ring; each node hears only the majority
 *                                centred on itself (itself, m/2 nodes
 *                                before it and the rest after, m = n/2 + 1)
 *   bridge [A|B|C]               A and C cut from each other, B talks to
 *                                both; one list (bridge 1,2,3,4,5), or
 *                                none (the known nodes by id): its first
 *                                half, the median node as B, the rest
 *   one-way A>B                  messages from the nodes of A do not reach
 *                                those of B
 * The known nodes are the targets of the proxy's links (the servers): a
 * caller that nobody calls, like a client, is no node of a partition.
 * Every node named must be known; a node appears at most once. */
#ifndef CRAFT_PROXY_PARTITION_H
#define CRAFT_PROXY_PARTITION_H

#include <stdbool.h>
#include <stddef.h>

#include "proxy_fault.h"

struct cp_cut
{
    cp_node from, to;
};

/* Parses `spec` against the known nodes (nodes[0..n_nodes), any order).
 * On success *cuts is a malloc'd array (the caller frees it; NULL when
 * n_cuts is 0) sorted by (from, to) without repeats. */
int cp_partition_parse(const char *spec,
                       const cp_node *nodes,
                       size_t n_nodes,
                       struct cp_cut **cuts,
                       size_t *n_cuts,
                       char *errmsg);

/* The rules that carry out `cuts` (sorted as cp_partition_parse returns
 * them): DROP_REQUEST on A-B for each cut A>B, and DROP_RESPONSE on B-A
 * unless B>A is cut too; probability 1, `partition` set. *faults is
 * malloc'd (the caller frees it). */
int cp_partition_faults(const struct cp_cut *cuts,
                        size_t n_cuts,
                        bool blackhole,
                        struct cp_fault **faults,
                        size_t *n_faults);

#endif /* CRAFT_PROXY_PARTITION_H */
