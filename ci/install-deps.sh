#!/usr/bin/env bash
# Installs every build and test dependency of craft from Debian 12 packages.
# Idempotent: on a machine that already has them it changes nothing and
# touches no network. Needs root (or sudo) only when something is missing.
set -euo pipefail

packages=(
    # build
    build-essential cmake pkg-config git
    # libraries (found by CMake through pkg-config)
    libgrpc-dev libprotobuf-c-dev protobuf-c-compiler libuv1-dev
    libcmocka-dev libisal-dev
    # protoc and the Python gRPC plugin for the black-box suite's stubs
    protobuf-compiler protobuf-compiler-grpc
    # the black-box suite runs under Debian's /usr/bin/python3
    python3 python3-pytest python3-grpcio python3-protobuf python3-hypothesis
    # format check and sanitizer runtimes
    clang-format clang libclang-rt-14-dev
    # memcheck runs of craftd and craft-proxy
    valgrind
)

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null |
        grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

echo "install-deps: installing ${missing[*]}" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
