# proto/<name>.proto -> protobuf-c code in the build tree, as a static
# library: cr_protoc_c(raft cr_proto) for craftd's wire contract,
# cr_protoc_c(proxy cp_proto) for craft-proxy's control API.
find_program(PROTOC_C protoc-c REQUIRED)
set(CR_PROTO_OUT ${PROJECT_BINARY_DIR}/proto)

function(cr_protoc_c name library)
    set(src ${PROJECT_SOURCE_DIR}/proto/${name}.proto)
    add_custom_command(
        OUTPUT ${CR_PROTO_OUT}/${name}.pb-c.c ${CR_PROTO_OUT}/${name}.pb-c.h
        COMMAND ${CMAKE_COMMAND} -E make_directory ${CR_PROTO_OUT}
        COMMAND ${PROTOC_C} --proto_path=${PROJECT_SOURCE_DIR}/proto
                --c_out=${CR_PROTO_OUT} ${src}
        DEPENDS ${src}
        COMMENT "protoc-c ${name}.proto")
    add_library(${library} STATIC ${CR_PROTO_OUT}/${name}.pb-c.c)
    target_include_directories(${library} PUBLIC ${CR_PROTO_OUT})
    target_link_libraries(${library} PUBLIC PkgConfig::PROTOBUF_C)
endfunction()

cr_protoc_c(raft cr_proto)
