#!/usr/bin/env bash
# The README's benchmark table: craft-bench against a local 3-node cluster.
#
#   ci/bench.sh [RUNS] [SECONDS]
#
# Starts 3 craftd on 127.0.0.1 (ports 51051.., its own state directory, so
# a cluster of ci/cluster.sh keeps running), then RUNS (3) times each:
# put with 1 / 16 / 64 / 256 clients, get (a linearizable read) with 1 and
# 256, GetStatus with 256 (the transport alone, no Raft), each for SECONDS
# (5) seconds; and a failover run of 5 rounds (kill -9 the leader under
# load, restart it). Prints every run, then a markdown table of medians.
# Stops the cluster at the end, also on failure or Ctrl-C.
#
# Environment: CRAFTD, CRAFT_BENCH (default build/src/craftd and
# build/src/craft-bench), CRAFT_BASE_PORT (51051).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
runs=${1:-3}
secs=${2:-5}
case "$runs$secs" in
*[!0-9]*) echo "usage: ci/bench.sh [RUNS] [SECONDS] (whole numbers)" >&2 && exit 2 ;;
esac
if [ "$runs" -lt 1 ] || [ "$runs" -gt 20 ] || [ "$secs" -lt 1 ] || [ "$secs" -gt 600 ]; then
    echo "ci/bench.sh: RUNS must be 1..20 and SECONDS 1..600" >&2
    exit 2
fi
export CRAFT_CLUSTER_STATE=/tmp/craft-bench-cluster
export CRAFT_BASE_PORT=${CRAFT_BASE_PORT:-51051}
export CRAFTD=${CRAFTD:-$root/build/src/craftd}
bench=${CRAFT_BENCH:-$root/build/src/craft-bench}
cluster="$root/ci/cluster.sh"
py=/usr/bin/python3
out=$(mktemp -d /tmp/craft-bench.XXXXXX)

[ -x "$bench" ] || { echo "ci/bench.sh: no craft-bench at $bench: run make" >&2 && exit 1; }
[ -f "$CRAFT_CLUSTER_STATE/state" ] && bash "$cluster" stop >/dev/null 2>&1
trap 'bash "$cluster" stop >/dev/null 2>&1 || true; rm -rf "$out"' EXIT
bash "$cluster" start 3 | head -1
endpoints=127.0.0.1:$CRAFT_BASE_PORT
for i in 1 2; do endpoints="$endpoints,127.0.0.1:$((CRAFT_BASE_PORT + i))"; done

echo "machine: $(nproc) cores, $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
for r in $(seq 1 "$runs"); do
    for spec in put:1 put:16 put:64 put:256 get:1 get:256 status:256; do
        op=${spec%:*} clients=${spec#*:}
        "$bench" run --endpoints "$endpoints" --op "$op" --clients "$clients" \
            --seconds "$secs" --json 2>/dev/null >"$out/$op-$clients-$r.json"
        echo "run $r: $(cat "$out/$op-$clients-$r.json")"
    done
    "$bench" failover --endpoints "$endpoints" --rounds 5 \
        --kill-cmd "bash '$cluster' kill {id}" \
        --restart-cmd "bash '$cluster' restart {id}" --json 2>/dev/null |
        grep '^{' >"$out/failover-$r.json"
    echo "run $r: failover $(cat "$out/failover-$r.json")"
done

"$py" - "$out" "$runs" <<'EOF'
import json, statistics, sys
out, runs = sys.argv[1], int(sys.argv[2])
def load(name):
    return [json.load(open(f"{out}/{name}-{r}.json")) for r in range(1, runs + 1)]
print()
print(f"| load | ops/s | p50 ms | p99 ms | (medians of {runs}) |")
print("|---|---:|---:|---:|---|")
for spec in ["put:1", "put:16", "put:64", "put:256", "get:1", "get:256", "status:256"]:
    op, clients = spec.split(":")
    rs = load(f"{op}-{clients}")
    med = lambda k: statistics.median(r[k] for r in rs)
    errs = sum(r["errors"] for r in rs)
    print(f"| {op}, {clients} clients | {med('ops_per_s'):,.0f} | {med('p50_ms'):.2f} | "
          f"{med('p99_ms'):.2f} | errors {errs} |")
fs = load("failover")
times = sorted(t for f in fs for t in f["times_s"])
print(f"| failover (kill -9 the leader under load) | | | | median {statistics.median(times):.3f} s "
      f"of {len(times)} rounds, every acknowledged add applied once: "
      f"{all(f['total_delta'] == f['acked'] for f in fs)} |")
EOF
