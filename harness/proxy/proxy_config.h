/* The proxy's start-up configuration (pure): links from --link and --node
 * flags and from a cluster file, and the methods declared unary.
 *
 *   --link FROM-TO=LISTEN,TARGET   one directed link
 *   --node ID=ADDRESS              a node; every pair of --node entries
 *                                  gets a link both ways, listening on
 *                                  --listen-host with a free port
 *   --unary METHOD                 a method known to be unary both ways
 *   --unary-from FILE.proto        every unary method of the file
 *
 * The cluster file holds the same, one a line ('#' starts a comment):
 *   link 1-2 127.0.0.1:61012 127.0.0.1:50052
 *   node 3 127.0.0.1:50053
 *   unary /raft.RaftService/AppendEntries
 *   unary-from proto/raft.proto
 */
#ifndef CRAFT_PROXY_CONFIG_H
#define CRAFT_PROXY_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "proxy_fault.h"

#define CP_ADDRESS_MAX 256 /* HOST:PORT and NUL */

struct cp_link_spec
{
    cp_node from, to;
    char listen[CP_ADDRESS_MAX];
    char target[CP_ADDRESS_MAX];
};

struct cp_node_spec
{
    cp_node id;
    char address[CP_ADDRESS_MAX];
};

struct cp_config
{
    struct cp_link_spec *links;
    size_t n_links, cap_links;
    struct cp_node_spec *nodes;
    size_t n_nodes, cap_nodes;
    char listen_host[CP_ADDRESS_MAX]; /* for --node links (127.0.0.1) */
    char (*unary)[CP_METHOD_MAX];     /* declared unary, without repeats */
    size_t n_unary, cap_unary;
};

void cp_config_init(struct cp_config *c);
void cp_config_close(struct cp_config *c);

/* Checks that s is HOST:PORT ([V6]:PORT for IPv6), port 0 to 65535. */
int cp_address_check(const char *s, const char *what, char *errmsg);

/* Adds a link given as "FROM-TO=LISTEN,TARGET". */
int cp_config_link_arg(struct cp_config *c, const char *arg, char *errmsg);

/* Adds a node given as "ID=ADDRESS". */
int cp_config_node_arg(struct cp_config *c, const char *arg, char *errmsg);

/* Declares a method unary: "/package.Service/Method". */
int cp_config_unary_arg(struct cp_config *c, const char *method, char *errmsg);

/* Declares unary every method of every service of a .proto file that
 * streams neither way ("rpc M(A) returns (B)"). A scanner, not a protobuf
 * parser: it reads the package, services and rpcs, and skips the rest. */
int cp_config_unary_from(struct cp_config *c, const char *path, char *errmsg);

/* Reads a cluster file; errors name the file and the line. */
int cp_config_load(struct cp_config *c, const char *path, char *errmsg);

/* Adds the links between --node entries (both ways, for pairs that have
 * no link yet) and checks that no link is given twice. */
int cp_config_finish(struct cp_config *c, char *errmsg);

#endif /* CRAFT_PROXY_CONFIG_H */
