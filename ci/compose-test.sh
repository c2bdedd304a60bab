#!/usr/bin/env bash
# The conformance suite against the docker compose cluster: builds the node
# and tester images, brings node1..node5 and the proxy up, checks the
# README's `add 5 3` inside a container, runs `docker compose run tester`
# over the scenarios below and tears everything down, also on failure.
#
# On a fresh Debian 12 machine it installs docker.io, docker-compose and
# mmdebstrap, starts dockerd if none runs (and stops it at the end), and
# builds debian:bookworm-slim from the machine's own apt sources when no
# registry can be reached. Images and layers stay cached for the next run.
#
#   bash ci/compose-test.sh                  # the scenarios below
#   CRAFT_SCENARIOS='ELECT-01' bash ci/compose-test.sh
#
# Every wait has a deadline; a failure prints the tail of every container's
# log.
set -euo pipefail
cd "$(dirname "$0")/.."

SCENARIOS=${CRAFT_SCENARIOS:-"ELECT-01 FAIL-01 JOIN-01 CATCHUP-01 CLIENT-01 REPL-04 NET-04"}
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-craftci}
t_start=$(date +%s)

say() { echo "compose-test: [$(($(date +%s) - t_start)) s] $*" >&2; }

# -- packages ---------------------------------------------------------------
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
missing=()
for p in docker.io docker-compose mmdebstrap; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $sudo timeout 300 apt-get update -q
    $sudo timeout 600 apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# -- dockerd ----------------------------------------------------------------
dockerd_pid=""
dockerd_log=$(mktemp /tmp/craft-dockerd.XXXXXX.log)
if ! timeout 10 docker info >/dev/null 2>&1; then
    say "starting dockerd (log: $dockerd_log)"
    $sudo dockerd >"$dockerd_log" 2>&1 &
    dockerd_pid=$!
    deadline=$(($(date +%s) + 60))
    until timeout 5 docker info >/dev/null 2>&1; do
        if [ "$(date +%s)" -ge "$deadline" ] || ! kill -0 "$dockerd_pid" 2>/dev/null; then
            say "dockerd did not come up within 60 s:"
            tail -20 "$dockerd_log" >&2
            exit 1
        fi
        sleep 1
    done
fi

# docker compose (v2) if this docker has it, else docker-compose (1.29).
if timeout 10 docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
else
    compose=(docker-compose)
fi
# Every profile, so that down removes node6 and the tester too.
dc=("${compose[@]}" --profile join --profile tester)

cleanup() {
    rc=$?
    set +e
    if [ $rc -ne 0 ]; then
        say "FAILED (exit status $rc); the last lines of every container:"
        timeout 60 "${dc[@]}" logs --no-color --tail 40 >&2
    fi
    say "tearing down"
    # Containers the tester made for joining nodes, then the project.
    ids=$(timeout 30 docker ps -aq --filter "label=craft.harness=$COMPOSE_PROJECT_NAME")
    [ -n "$ids" ] && timeout 60 docker rm -f -v $ids >/dev/null
    timeout 120 "${dc[@]}" down -v --remove-orphans --timeout 5 >/dev/null 2>&1 ||
        say "docker compose down failed"
    if [ -n "$dockerd_pid" ]; then
        say "stopping the dockerd this script started"
        $sudo kill "$dockerd_pid" 2>/dev/null
        for _ in $(seq 30); do
            kill -0 "$dockerd_pid" 2>/dev/null || break
            sleep 1
        done
        kill -0 "$dockerd_pid" 2>/dev/null && $sudo kill -9 "$dockerd_pid"
    fi
    say "done in $(($(date +%s) - t_start)) s"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# -- the base image -----------------------------------------------------------
if ! docker image inspect debian:bookworm-slim >/dev/null 2>&1; then
    if ! timeout 60 docker pull -q debian:bookworm-slim >/dev/null 2>&1; then
        say "no registry: building debian:bookworm-slim with mmdebstrap from the apt sources of this machine"
        $sudo timeout 600 mmdebstrap --quiet --variant=apt bookworm - |
            timeout 300 docker import - debian:bookworm-slim >/dev/null
    fi
fi

# -- images and cluster -------------------------------------------------------
say "building the images (${compose[*]})"
timeout 1500 "${dc[@]}" build -q
say "starting node1..node5 and the proxy"
timeout 120 "${compose[@]}" up -d

deadline=$(($(date +%s) + 90))
for i in 1 2 3 4 5; do
    while :; do
        cid=$(timeout 30 "${compose[@]}" ps -q "node$i")
        health=$(timeout 10 docker inspect --format '{{.State.Health.Status}}' "$cid" 2>/dev/null || true)
        [ "$health" = healthy ] && break
        if [ "$(date +%s)" -ge "$deadline" ]; then
            say "node$i not healthy within 90 s (health: ${health:-none})"
            exit 1
        fi
        sleep 1
    done
done
say "every node is healthy"

# The README's first command, from inside a container.
out=$(timeout 60 "${compose[@]}" exec -T node1 craftctl add 5 3)
echo "$out"
case "$out" in 8\ *) ;; *) say "craftctl add 5 3 answered: $out"; exit 1 ;; esac

# -- the suite ----------------------------------------------------------------
k=""
for s in $SCENARIOS; do k="${k:+$k or }$s"; done
say "docker compose run tester over: $SCENARIOS"
suite_log=$(mktemp /tmp/craft-compose-suite.XXXXXX.log)
set +e
timeout 1200 "${dc[@]}" run --rm -T tester testcases -k "$k" -rs 2>&1 | tee "$suite_log"
rc=${PIPESTATUS[0]}
set -e
if [ "$rc" -ne 0 ]; then
    say "the suite failed (exit status $rc)"
    exit "$rc"
fi
# Each of these scenarios must run for real: a skip is a failure here.
if grep -qE '[0-9]+ skipped' "$suite_log"; then
    say "scenarios were skipped (see above)"
    exit 1
fi
say "the compose suite passed"
