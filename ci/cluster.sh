#!/usr/bin/env bash
# A local craft cluster for trying things by hand.
#
#   ci/cluster.sh start [N]   start N (default 3) craftd on 127.0.0.1:50051..,
#                             wait for a leader, print how to talk to it
#   ci/cluster.sh status      each node's process and GetStatus
#   ci/cluster.sh stop        stop every node (SIGTERM, then kill -9 after 5 s)
#                             and remove its data and logs
#   ci/cluster.sh kill ID     kill -9 node ID (a crash: its data stays)
#   ci/cluster.sh restart ID  start node ID again on its data (after kill)
#
# Environment: CRAFTD (default build/src/craftd), CRAFTCTL (default
# build/src/craftctl; used for `status` if it has that command, otherwise
# /usr/bin/python3 with stubs generated from proto/raft.proto),
# CRAFT_CLUSTER_STATE (default /tmp/craft-cluster), CRAFT_BASE_PORT (50051).
# shellcheck disable=SC2153 # DATA, PIDS, ... come from the state file
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
state_dir=${CRAFT_CLUSTER_STATE:-/tmp/craft-cluster}
state=$state_dir/state
base_port=${CRAFT_BASE_PORT:-50051}
py=/usr/bin/python3

abspath() {
    case $1 in
    /*) echo "$1" ;;
    *) echo "$root/$1" ;;
    esac
}
craftd=$(abspath "${CRAFTD:-build/src/craftd}")
craftctl=$(abspath "${CRAFTCTL:-build/src/craftctl}")

die() {
    echo "cluster.sh: $*" >&2
    exit 1
}

# GetStatus of every endpoint through Python; `wait` instead waits (up to
# 10 s) until they agree on one leader and prints its id.
pystatus() {
    "$py" - "$root" "$@" <<'EOF'
import sys, tempfile, time
root, mode, endpoints = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
sys.path.insert(0, root + "/harness")
import grpc
from google.protobuf import text_format
from pytest_craft import cluster as cc
with tempfile.TemporaryDirectory() as d:
    pb, pb_grpc = cc.generate_stubs(d)

def status(ep):
    with grpc.insecure_channel(ep) as ch:
        return pb_grpc.RaftServiceStub(ch).GetStatus(pb.StatusRequest(), timeout=2)

if mode == "wait":
    end = time.monotonic() + 10
    while time.monotonic() < end:
        try:
            sts = [status(ep) for ep in endpoints]
            leaders = {s.current_leader for s in sts}
            if len(leaders) == 1 and 0 not in leaders and \
                    any(s.state == "LEADER" for s in sts):
                print(leaders.pop())
                sys.exit(0)
        except grpc.RpcError:
            pass
        time.sleep(0.1)
    sys.exit(1)

failed = 0
for ep in endpoints:
    try:
        s = status(ep)
    except grpc.RpcError as e:
        print(f"{ep}: unreachable ({e.code().name}: {e.details()})")
        failed += 1
        continue
    print(f"{ep}: node {s.node_id} {s.state} term={s.current_term} "
          f"leader={s.current_leader} commit={s.commit_index} "
          f"applied={s.applied_index} last={s.last_log_index} total={s.total} "
          f"digest={s.state_digest} voters={list(s.config.nodes)}")
    print("  " + text_format.MessageToString(s, as_one_line=True))
sys.exit(1 if failed == len(endpoints) else 0)
EOF
}

craftctl_has_status() {
    [ -x "$craftctl" ] && "$craftctl" --help 2>&1 | grep -q -- '--endpoints' &&
        "$craftctl" --help 2>&1 | grep -qE '^ +status'
}

# Is pid $1 still the craftd this script started (and not a reused pid)?
is_ours() {
    [ -r "/proc/$1/cmdline" ] && tr '\0' ' ' <"/proc/$1/cmdline" | grep -qF -- "$DATA/"
}

# DATA, N, PIDS, ENDPOINTS come from the state file.
load_state() {
    [ -f "$state" ] || die "no cluster is running (no $state); start one with: $0 start"
    # shellcheck disable=SC1090
    . "$state"
    BASE_PORT=${BASE_PORT:-$base_port}
    craftd=${CRAFTD:-$craftd} # the binary the cluster was started with
}

save_state() {
    cat >"$state" <<EOF
# written by ci/cluster.sh; read by status, stop, kill and restart
DATA=$DATA
N=$N
BASE_PORT=$BASE_PORT
PIDS="$PIDS"
ENDPOINTS=$ENDPOINTS
CRAFTD=$craftd
EOF
}

# Starts node $1 of the cluster in DATA (its log is appended to); $! is
# its pid.
launch() {
    local i=$1 j
    local args=(--id "$i" --listen "127.0.0.1:$((BASE_PORT + i - 1))" --data-dir "$DATA/n$i")
    for ((j = 1; j <= N; j++)); do
        if [ "$j" -ne "$i" ]; then
            args+=(--peer "$j=127.0.0.1:$((BASE_PORT + j - 1))")
        fi
    done
    # Its own session: it outlives this script and the terminal's signals.
    setsid "$craftd" "${args[@]}" </dev/null >>"$DATA/n$i.log" 2>&1 &
}

# The pid of node $1 from the state.
pid_of() {
    local i=1 pid
    for pid in $PIDS; do
        if [ "$i" -eq "$1" ]; then
            echo "$pid"
            return
        fi
        i=$((i + 1))
    done
}

node_arg() {
    case $1 in
    '' | *[!0-9]*) die "ID must be a node id, 1 to $N (got '$1')" ;;
    esac
    if [ "$1" -lt 1 ] || [ "$1" -gt "$N" ]; then
        die "ID must be 1 to $N (got $1)"
    fi
}

cmd_kill() {
    load_state
    node_arg "$1"
    local pid
    pid=$(pid_of "$1")
    if ! is_ours "$pid"; then
        die "node $1 (pid $pid) is not running"
    fi
    kill -KILL "$pid"
    while is_ours "$pid"; do sleep 0.01; done
    echo "craft: killed node $1 (pid $pid) with SIGKILL"
}

cmd_restart() {
    load_state
    node_arg "$1"
    local old new="" i=1 pid
    old=$(pid_of "$1")
    if is_ours "$old"; then
        die "node $1 (pid $old) is still running; kill it first"
    fi
    launch "$1"
    for pid in $PIDS; do
        if [ "$i" -eq "$1" ]; then
            pid=$!
        fi
        new="$new${new:+ }$pid"
        i=$((i + 1))
    done
    PIDS=$new
    save_state
    echo "craft: restarted node $1 (pid $!), log $DATA/n$1.log"
}

cmd_start() {
    local n=${1:-3}
    case $n in
    '' | *[!0-9]*) die "N must be a number of nodes, 1 to 16 (got '$n')" ;;
    esac
    if [ "$n" -lt 1 ] || [ "$n" -gt 16 ]; then
        die "N must be 1 to 16 (got $n)"
    fi
    if [ -f "$state" ]; then
        die "a cluster is already recorded in $state; run: $0 stop"
    fi
    [ -x "$craftd" ] || die "no craftd at $craftd: build it (make) or set CRAFTD"
    local i port
    for ((i = 1; i <= n; i++)); do
        port=$((base_port + i - 1))
        if (: >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            die "127.0.0.1:$port is in use; stop what listens there or set CRAFT_BASE_PORT"
        fi
    done
    mkdir -p "$state_dir"
    local data endpoints="" pids=""
    data=$(mktemp -d /tmp/craft-cluster.XXXXXX)
    for ((i = 1; i <= n; i++)); do
        endpoints="$endpoints${endpoints:+,}127.0.0.1:$((base_port + i - 1))"
    done
    DATA=$data N=$n BASE_PORT=$base_port
    for ((i = 1; i <= n; i++)); do
        launch "$i"
        pids="$pids${pids:+ }$!"
    done
    PIDS=$pids ENDPOINTS=$endpoints
    save_state
    local leader
    if ! leader=$(pystatus wait "$endpoints"); then
        echo "cluster.sh: no leader within 10 s; logs:" >&2
        tail -n 20 "$data"/n*.log >&2 || true
        cmd_stop >/dev/null
        exit 1
    fi
    local ctl=build/src/craftctl
    [ -n "${CRAFTCTL:-}" ] && ctl=$craftctl
    cat <<EOF
craft: $n nodes on $endpoints, leader node $leader
  data and logs: $data (n1.log ...), state: $state

talk to it:
  $ctl --endpoints $endpoints add 5 3
  $ctl --endpoints $endpoints status
  $0 status
  $py -c 'import sys; sys.path.insert(0, "$root/harness"); from pytest_craft import cluster as cc; import grpc, tempfile; pb, g = cc.generate_stubs(tempfile.mkdtemp()); print(g.RaftServiceStub(grpc.insecure_channel("127.0.0.1:$base_port")).Add(pb.AddRequest(num1=5, num2=3), timeout=5))'
stop it (and remove the data):
  $0 stop
EOF
}

cmd_status() {
    load_state
    local i=1 pid
    for pid in $PIDS; do
        if is_ours "$pid"; then
            echo "node $i: pid $pid running, log $DATA/n$i.log"
        else
            echo "node $i: pid $pid not running, log $DATA/n$i.log"
        fi
        i=$((i + 1))
    done
    if craftctl_has_status; then
        "$craftctl" --endpoints "$ENDPOINTS" status
    else
        pystatus status "$ENDPOINTS"
    fi
}

cmd_stop() {
    load_state
    local pid left waited=0
    for pid in $PIDS; do
        if is_ours "$pid"; then
            kill -TERM "$pid" 2>/dev/null || true
        fi
    done
    while :; do
        left=""
        for pid in $PIDS; do
            if is_ours "$pid"; then
                left="$left $pid"
            fi
        done
        [ -z "$left" ] && break
        if [ "$waited" -ge 50 ]; then
            echo "cluster.sh: still running 5 s after SIGTERM, kill -9:$left" >&2
            for pid in $left; do kill -KILL "$pid" 2>/dev/null || true; done
            sleep 0.2
            break
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    case $DATA in
    /tmp/craft-cluster.*) rm -rf "$DATA" ;;
    *) echo "cluster.sh: not removing unexpected data directory '$DATA'" >&2 ;;
    esac
    rm -f "$state"
    echo "craft: stopped $N nodes, removed $DATA"
}

case ${1:-} in
start) cmd_start "${2:-3}" ;;
status) cmd_status ;;
stop) cmd_stop ;;
kill) cmd_kill "${2:-}" ;;
restart) cmd_restart "${2:-}" ;;
*)
    sed -n '2,/^# shellcheck/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
