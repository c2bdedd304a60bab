# proto/raft.proto -> protobuf-c code in the build tree, as library cr_proto.
find_program(PROTOC_C protoc-c REQUIRED)
set(CR_PROTO_OUT ${PROJECT_BINARY_DIR}/proto)
add_custom_command(
    OUTPUT ${CR_PROTO_OUT}/raft.pb-c.c ${CR_PROTO_OUT}/raft.pb-c.h
    COMMAND ${CMAKE_COMMAND} -E make_directory ${CR_PROTO_OUT}
    COMMAND ${PROTOC_C} --proto_path=${PROJECT_SOURCE_DIR}/proto
            --c_out=${CR_PROTO_OUT} ${PROJECT_SOURCE_DIR}/proto/raft.proto
    DEPENDS ${PROJECT_SOURCE_DIR}/proto/raft.proto
    COMMENT "protoc-c raft.proto")
add_library(cr_proto STATIC ${CR_PROTO_OUT}/raft.pb-c.c)
target_include_directories(cr_proto PUBLIC ${CR_PROTO_OUT})
target_link_libraries(cr_proto PUBLIC PkgConfig::PROTOBUF_C)
