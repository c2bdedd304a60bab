/* Pieces every gRPC client of craft needs (craftd's transport, craftctl,
 * craft-bench, craft-proxy): the receiving half of a client call, to take
 * a unary answer (initial metadata, one message, status) in the same batch
 * as the request, protobuf-c messages in and out of byte buffers, and
 * channel arguments.
 *
 * The struct owns what gRPC hands it: cr_grpc_reply_destroy frees the
 * metadata, the message, the details and the error string. */
#ifndef CRAFT_GRPC_CALL_H
#define CRAFT_GRPC_CALL_H

#include <stdbool.h>
#include <stddef.h>

#include <grpc/grpc.h>
#include <protobuf-c/protobuf-c.h>

struct cr_grpc_reply
{
    grpc_metadata_array md_init, md_trail;
    grpc_byte_buffer *recv; /* NULL until a message came */
    grpc_status_code status;
    grpc_slice details;
    const char *error_string; /* gRPC's, or NULL */
};

void cr_grpc_reply_init(struct cr_grpc_reply *r);
void cr_grpc_reply_destroy(struct cr_grpc_reply *r);

/* Writes the ops that receive initial metadata, the message and the
 * status into ops (room for 3); returns their number. */
size_t cr_grpc_reply_ops(struct cr_grpc_reply *r, grpc_op *ops);

/* A whole unary call in one batch: send initial metadata (none), `send`,
 * close, then cr_grpc_reply_ops. ops has room for 6; returns 6. `send`
 * stays the caller's. */
size_t cr_grpc_unary_ops(grpc_byte_buffer *send,
                         struct cr_grpc_reply *r,
                         grpc_op *ops);

/* A protobuf-c message as a gRPC byte buffer (the caller destroys it). */
grpc_byte_buffer *cr_grpc_pack(const ProtobufCMessage *msg);

/* The message of type d in bb (free it with protobuf_c_message_free_unpacked),
 * or NULL for a missing one, one over max bytes, or a malformed one. */
ProtobufCMessage *cr_grpc_unpack(const ProtobufCMessageDescriptor *d,
                                 grpc_byte_buffer *bb,
                                 size_t max);

/* args[*n] = the integer channel argument key = value, and *n grows by
 * one: how every channel and server of craft lists its arguments. */
void cr_grpc_arg_int(grpc_arg *args, int *n, const char *key, int value);

/* The arguments craftd's and craft-proxy's servers and channels share:
 * messages up to max_message bytes both ways, keepalive pings allowed
 * without calls. A server (server true) also tolerates pings every 500 ms
 * (craftd's keepalive) and does without gRPC's default SO_REUSEPORT, so
 * that a port in use fails the start: with it, a second server on a port
 * starts without a word and the kernel shares the first one's
 * connections between the two. Appends at args[*n]. */
void cr_grpc_common_args(grpc_arg *args, int *n, int max_message, bool server);

#endif /* CRAFT_GRPC_CALL_H */
