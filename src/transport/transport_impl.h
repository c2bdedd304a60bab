/* Private to src/transport. */
#ifndef CRAFT_TRANSPORT_IMPL_H
#define CRAFT_TRANSPORT_IMPL_H

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/support/time.h>
#include <protobuf-c/protobuf-c.h>

#include "craft/transport.h"
#include "grpc_call.h"
#include "raft.pb-c.h"

/* The methods of raft.RaftService, in the order of this table. */
enum cr__method {
    CR__M_REQUEST_VOTE = 0,
    CR__M_APPEND_ENTRIES,
    CR__M_SUBMIT_OPERATION,
    CR__M_FORWARD_TO_LEADER,
    CR__M_ADD,
    CR__M_JOIN_CLUSTER,
    CR__M_GET_STATUS,
    CR__M_INSTALL_SNAPSHOT,
    CR__M_TIMEOUT_NOW,
    CR__M_READ_INDEX,
    CR__M_REMOVE_NODE,
    CR__M_TRANSFER_LEADERSHIP,
    CR__M_READ,
    CR__M_PUT,
    CR__M_GET,
    CR__M_CAS,
    CR__M_INCREMENT,
    CR__M_DELETE,
    CR__M_COUNT
};

struct cr__method_info
{
    const char *path;
    const ProtobufCMessageDescriptor *request;
    const ProtobufCMessageDescriptor *response;
    bool streaming; /* client-streaming */
    bool peer;      /* between servers */
};

extern const struct cr__method_info cr__methods[CR__M_COUNT];

/* A configuration as protobuf, with the storage its arrays point into. */
struct cr__pb_config
{
    Raft__ClusterConfig pb;
    Raft__Server servers[CR_SERVERS_MAX];
    Raft__Server *server_ptrs[CR_SERVERS_MAX];
    int32_t nodes[CR_SERVERS_MAX];
};

void cr__config_to_pb(const struct cr_config *c,
                      cr_index index,
                      uint64_t version,
                      struct cr__pb_config *out);
int cr__config_from_pb(const Raft__ClusterConfig *pb,
                       struct cr_config *c,
                       const char **why);

/* An incoming request between servers as a core message. Entries (if
 * any) go to *entries, to free after the core has seen the message; their
 * bytes point into pb. CR_EINVAL (why says what), CR_ECLUSTER. */
int cr__peer_from_pb(enum cr__method m,
                     const ProtobufCMessage *pb,
                     uint64_t cluster_id,
                     struct cr_message *out,
                     struct cr_entry **entries,
                     const char **why);
/* The response to one of our calls as a core message. */
int cr__answer_from_pb(enum cr__method m,
                       const ProtobufCMessage *pb,
                       cr_id self,
                       cr_id peer,
                       uint64_t cluster_id,
                       struct cr_message *out);
/* A core message (request or answer) as a packed protobuf; NULL for
 * InstallSnapshot (streamed) or if out of memory. */
grpc_byte_buffer *cr__peer_to_pb(const struct cr_message *m,
                                 cr_id self,
                                 uint64_t cluster_id,
                                 const char *self_address);

#endif /* CRAFT_TRANSPORT_IMPL_H */
