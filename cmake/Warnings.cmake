# The warning set of STYLE.md; gcc 12 and clang 14 accept all of it.
set(CR_WARNINGS
    -Wall -Wextra -Wpedantic -Wshadow -Wstrict-prototypes
    -Wmissing-prototypes -Wformat=2 -Wconversion -Wsign-conversion
    -Wimplicit-fallthrough -Wvla -Wundef)
if(CMAKE_C_COMPILER_ID STREQUAL "GNU")
    list(APPEND CR_WARNINGS -Wlogical-op -Wduplicated-cond)
endif()
if(CR_WERROR)
    list(APPEND CR_WARNINGS -Werror)
endif()

# Applies craft's warnings to a target of craft's own code.
function(cr_warnings target)
    target_compile_options(${target} PRIVATE ${CR_WARNINGS})
endfunction()
