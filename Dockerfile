# craftd and craftctl on Debian 12 (bookworm-slim).
#
#   docker build -t craft-node .      (docker-compose.yml builds it too)
#   docker run --rm craft-node --help
#
# The build stage is the same in Dockerfile.test, instruction for
# instruction, so that the second image reuses the first one's layers.

FROM debian:bookworm-slim AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        build-essential cmake pkg-config \
        libgrpc-dev libprotobuf-c-dev protobuf-c-compiler libuv1-dev libisal-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY CMakeLists.txt ./
COPY cmake cmake
COPY proto proto
COPY include include
COPY src src
COPY harness/proxy harness/proxy
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCR_BUILD_TESTS=OFF >/dev/null \
 && cmake --build /build -j"$(nproc)" --target craftd craftctl craft-proxy \
 && strip /build/src/craftd /build/src/craftctl /build/harness/proxy/craft-proxy

FROM debian:bookworm-slim
# The runtime libraries of craftd and craftctl, nothing else.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        libgrpc29 libprotobuf-c1 libuv1 libisal2 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 craft \
 && useradd --system --uid 10001 --gid craft --home-dir /var/lib/craft \
        --shell /usr/sbin/nologin craft \
 && mkdir -p /var/lib/craft \
 && chown craft:craft /var/lib/craft
COPY --from=build /build/src/craftd /build/src/craftctl /usr/local/bin/
USER craft
# The data directory is ./data (craftd's default) in the volume.
WORKDIR /var/lib/craft
VOLUME /var/lib/craft
EXPOSE 50051
# Healthy once this node answers GetStatus (any role).
HEALTHCHECK --interval=5s --timeout=5s --start-period=5s --retries=3 \
    CMD ["craftctl", "--endpoints", "127.0.0.1:50051", "--timeout", "2", "status"]
# NODE_ID=1 PEER_IDS=2,3,4,5: listen on 0.0.0.0:50051, peers at
# node<ID>:50051 (craftd --help).
ENTRYPOINT ["craftd"]
