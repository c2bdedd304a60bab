# -DCR_SANITIZE=address,undefined builds everything with those sanitizers;
# any report aborts the program, so a test that triggers one fails.
if(CR_SANITIZE)
    set(CR_SAN_FLAGS -fsanitize=${CR_SANITIZE} -fno-omit-frame-pointer
        -fno-sanitize-recover=all)
    add_compile_options(${CR_SAN_FLAGS})
    add_link_options(-fsanitize=${CR_SANITIZE})
endif()
