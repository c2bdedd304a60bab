/* See grpc_call.h. */
#include "grpc_call.h"

#include <stdint.h>
#include <string.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/support/alloc.h>

void cr_grpc_reply_init(struct cr_grpc_reply *r)
{
    memset(r, 0, sizeof *r);
    grpc_metadata_array_init(&r->md_init);
    grpc_metadata_array_init(&r->md_trail);
    r->details = grpc_empty_slice();
}

void cr_grpc_reply_destroy(struct cr_grpc_reply *r)
{
    grpc_metadata_array_destroy(&r->md_init);
    grpc_metadata_array_destroy(&r->md_trail);
    if (r->recv != NULL) {
        grpc_byte_buffer_destroy(r->recv);
        r->recv = NULL;
    }
    grpc_slice_unref(r->details);
    r->details = grpc_empty_slice();
    if (r->error_string != NULL) {
        gpr_free((void *)(uintptr_t)r->error_string);
        r->error_string = NULL;
    }
}

size_t cr_grpc_reply_ops(struct cr_grpc_reply *r, grpc_op *ops)
{
    memset(ops, 0, 3 * sizeof *ops);
    ops[0].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[0].data.recv_initial_metadata.recv_initial_metadata = &r->md_init;
    ops[1].op = GRPC_OP_RECV_MESSAGE;
    ops[1].data.recv_message.recv_message = &r->recv;
    ops[2].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[2].data.recv_status_on_client.trailing_metadata = &r->md_trail;
    ops[2].data.recv_status_on_client.status = &r->status;
    ops[2].data.recv_status_on_client.status_details = &r->details;
    ops[2].data.recv_status_on_client.error_string = &r->error_string;
    return 3;
}

size_t cr_grpc_unary_ops(grpc_byte_buffer *send,
                         struct cr_grpc_reply *r,
                         grpc_op *ops)
{
    memset(ops, 0, 3 * sizeof *ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    return 3 + cr_grpc_reply_ops(r, ops + 3);
}

void cr_grpc_arg_int(grpc_arg *args, int *n, const char *key, int value)
{
    args[*n].type = GRPC_ARG_INTEGER;
    args[*n].key = (char *)(uintptr_t)key;
    args[*n].value.integer = value;
    (*n)++;
}

grpc_byte_buffer *cr_grpc_pack(const ProtobufCMessage *msg)
{
    size_t size = protobuf_c_message_get_packed_size(msg);
    grpc_slice slice = grpc_slice_malloc(size);
    grpc_byte_buffer *bb;
    protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(slice));
    bb = grpc_raw_byte_buffer_create(&slice, 1);
    grpc_slice_unref(slice);
    return bb;
}

ProtobufCMessage *cr_grpc_unpack(const ProtobufCMessageDescriptor *d,
                                 grpc_byte_buffer *bb,
                                 size_t max)
{
    grpc_byte_buffer_reader reader;
    grpc_slice slice;
    ProtobufCMessage *msg;
    if (bb == NULL || grpc_byte_buffer_length(bb) > max ||
        !grpc_byte_buffer_reader_init(&reader, bb)) {
        return NULL;
    }
    slice = grpc_byte_buffer_reader_readall(&reader);
    grpc_byte_buffer_reader_destroy(&reader);
    msg = protobuf_c_message_unpack(d, NULL, GRPC_SLICE_LENGTH(slice),
                                    GRPC_SLICE_START_PTR(slice));
    grpc_slice_unref(slice);
    return msg;
}

void cr_grpc_common_args(grpc_arg *args, int *n, int max_message, bool server)
{
    cr_grpc_arg_int(args, n, GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, max_message);
    cr_grpc_arg_int(args, n, GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, max_message);
    cr_grpc_arg_int(args, n, GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    cr_grpc_arg_int(args, n, GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
    if (server) {
        cr_grpc_arg_int(args, n,
                        GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
                        500);
        cr_grpc_arg_int(args, n, GRPC_ARG_ALLOW_REUSEPORT, 0);
    }
}
