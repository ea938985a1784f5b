#!/usr/bin/env bash
# Measures the Manager with the farm simulator: every issue-#8 scenario, RUNS times each
# (default 3), each against a freshly started release `flamenco serve` on the embedded
# store, and prints one JSON line per run plus the medians.
#
# Usage: ./scripts/perf.sh [--runs N] [--duration 10s] [--workers 64] [--only NAME]
#   NAME: cycles-100k | cycles-100k-tags (the 100,000 across 10 worker tags, each worker
#         with one or two) | cycles-1k | empty-polls | may-i-run | rss-1000-workers
#         (64 busy + 936 idle registered workers) | stress-1000-busy (1,000 busy workers)
#
# Output: target/perf/<name>-<run>.json (the simulator's report) and a summary table.
# The simulator runs on the same machine as the Manager; on a 2-core machine they share
# the cores, as the targets in docs/performance.md assume.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=3
DURATION=10s
WORKERS=64
ONLY=""
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS="$2"; shift 2 ;;
        --duration) DURATION="$2"; shift 2 ;;
        --workers) WORKERS="$2"; shift 2 ;;
        --only) ONLY="$2"; shift 2 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done

cargo build --release --quiet --bin flamenco --example farm_sim
ROOT="$PWD"
FLAMENCO="$ROOT/target/release/flamenco"
SIM="$ROOT/target/release/examples/farm_sim"
OUT="$ROOT/target/perf"
mkdir -p "$OUT"

port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

manager_pid=""
stop_manager() {
    if [ -n "$manager_pid" ]; then
        kill "$manager_pid" 2>/dev/null || true
        wait "$manager_pid" 2>/dev/null || true
        manager_pid=""
    fi
}
trap stop_manager EXIT

# run NAME RUN SIM-ARGS...: a fresh Manager in a fresh directory, then the simulator.
run() {
    local name="$1" n="$2"
    shift 2
    local dir p
    dir="$(mktemp -d)"
    p="$(port)"
    cat >"$dir/flamenco-manager.yaml" <<EOF
listen: '127.0.0.1:$p'
data_dir: ./data
worker_request_rate: 0
EOF
    (cd "$dir" && exec "$FLAMENCO" serve >"$dir/manager.log" 2>&1) &
    manager_pid=$!
    for _ in $(seq 100); do
        if python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)' "$p" 2>/dev/null; then
            break
        fi
        sleep 0.1
    done
    (cd "$dir" && "$SIM" --manager "http://127.0.0.1:$p" --seed-config flamenco-manager.yaml \
        --pid "$manager_pid" "$@") >"$OUT/$name-$n.json"
    stop_manager
    rm -rf "$dir"
    echo "$name run $n: $(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("cycles/s=%.0f req/s=%.0f rss=%.1fMB" % (r["task_cycles_per_second"], r["requests_per_second"], r.get("manager_peak_rss_bytes",0)/2**20))' "$OUT/$name-$n.json")"
}

scenario() {
    local name="$1"
    shift
    if [ -n "$ONLY" ] && [ "$ONLY" != "$name" ]; then return; fi
    for n in $(seq "$RUNS"); do
        run "$name" "$n" "$@"
    done
}

scenario cycles-100k --workers "$WORKERS" --duration "$DURATION" --scenario cycles --seed-tasks 100000 --keep-queued
scenario cycles-100k-tags --workers "$WORKERS" --duration "$DURATION" --scenario cycles --seed-tasks 100000 --keep-queued --tags 10
scenario cycles-1k --workers "$WORKERS" --duration "$DURATION" --scenario cycles --seed-tasks 1000 --keep-queued
scenario empty-polls --workers "$WORKERS" --duration "$DURATION" --scenario empty-polls
scenario may-i-run --workers "$WORKERS" --duration "$DURATION" --scenario may-i-run --seed-tasks "$WORKERS"
scenario rss-1000-workers --workers "$WORKERS" --registered-workers 1000 --duration "$DURATION" --scenario cycles --seed-tasks 100000 --keep-queued
scenario stress-1000-busy --workers 1000 --duration "$DURATION" --scenario cycles --seed-tasks 100000 --keep-queued

python3 - "$OUT" "$RUNS" <<'EOF'
import json, os, statistics, sys
out, runs = sys.argv[1], int(sys.argv[2])
names = ["cycles-100k", "cycles-100k-tags", "cycles-1k", "empty-polls", "may-i-run", "rss-1000-workers", "stress-1000-busy"]
print("\nmedians of %d runs" % runs)
print("%-18s %12s %12s %10s  %s" % ("scenario", "cycles/s", "req/s", "RSS MB", "p99 ms per endpoint"))
med = {}
for name in names:
    reports = []
    for n in range(1, runs + 1):
        p = os.path.join(out, "%s-%d.json" % (name, n))
        if os.path.exists(p):
            reports.append(json.load(open(p)))
    if not reports:
        continue
    c = statistics.median(r["task_cycles_per_second"] for r in reports)
    q = statistics.median(r["requests_per_second"] for r in reports)
    m = statistics.median(r.get("manager_peak_rss_bytes", 0) for r in reports) / 2**20
    eps = sorted({e for r in reports for e in r["endpoints"]})
    p99 = ", ".join("%s %.1f" % (e, statistics.median(r["endpoints"][e]["latency_ms"]["p99"] for r in reports if e in r["endpoints"])) for e in eps)
    med[name] = c
    print("%-18s %12.0f %12.0f %10.1f  %s" % (name, c, q, m, p99))
if med.get("cycles-100k") and med.get("cycles-100k-tags"):
    print("cycle rate with 100k queued across 10 tags / untagged: %.0f %%" % (100 * med["cycles-100k-tags"] / med["cycles-100k"]))
if med.get("cycles-1k"):
    print("\ncycle rate with 100k queued / with 1k queued: %.0f %%" % (100 * med.get("cycles-100k", 0) / med["cycles-1k"]))
EOF
