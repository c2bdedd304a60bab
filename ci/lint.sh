#!/usr/bin/env bash
# Checks that need no test run: the tree is clang-formatted, and the Raft
# core stays pure (no I/O headers in src/core, and the built library calls
# nothing but memory and string functions of the C library).
set -euo pipefail
build=${1:-build}
cd "$(dirname "$0")/.."
status=0

files=$(git ls-files '*.c' '*.h')
if ! clang-format --dry-run --Werror $files; then
    echo "lint: the files above are not clang-formatted (run: make format)" >&2
    status=1
fi

if grep -nE '#include *[<"](uv\.h|grpc/|protobuf-c/|stdio\.h|unistd\.h|fcntl\.h|time\.h|pthread\.h)' src/core/*; then
    echo "lint: src/core includes an I/O header (above)" >&2
    status=1
fi

lib="$build/src/libcr_core.a"
if [ -f "$lib" ]; then
    allowed='^(malloc|realloc|free|memcpy|memmove|memset|memcmp|memchr|strlen|strcmp|__assert_fail|__stack_chk_fail|_GLOBAL_OFFSET_TABLE_)$'
    undefined=$(nm -u "$lib" | awk 'NF == 2 { print $2 }' | sed 's/@.*//' | sort -u |
        grep -vE "$allowed" | grep -v '^cr_' || true)
    if [ -n "$undefined" ]; then
        echo "lint: the core calls outside functions: $undefined" >&2
        status=1
    fi
else
    echo "lint: $lib not built" >&2
    status=1
fi

[ $status -eq 0 ] && echo "lint: formatting and core purity ok"
exit $status
