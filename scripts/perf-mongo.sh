#!/usr/bin/env bash
# The MongoDB path side by side with the embedded store (issue 17 item 3): the farm
# simulator's `cycles` scenario against a freshly started release `flamenco serve` on the
# embedded store and on a private SecantusDB, alternating, RUNS times each. For the
# MongoDB runs it also reads the database server's CPU time (utime + stime from
# /proc/<pid>/stat) before and after the simulator's run and reports it per task cycle.
#
# Usage: ./scripts/perf-mongo.sh [--runs N] [--duration 20s] [--workers 64]
#            [--seed-tasks 2000] [--flamenco PATH] [--sim PATH] [--label NAME]
#            [--stores "sqlite mongodb"] [--scenario cycles|empty-polls]
#   --flamenco / --sim: binaries to measure (default: build the release ones here), so
#   that an older Manager can be measured with the same simulator ("before" and "after").
#   SECANTUSD: the SecantusDB program (default .venv/bin/secantusd-py, see scripts/test.sh).
#
#   --scenario empty-polls: workers that only ask for a task and get none (no --keep-queued,
#   no seeding); the database figures are then per request instead of per cycle.
#
# Output: target/perf/mongo-<label>-<store>-<run>.json (the simulator's report, plus
# `db_cpu_ms`, `db_cpu_ms_per_cycle`, `db_requests` and `db_requests_per_cycle` for MongoDB,
# `_per_request` for empty-polls) and a table of the medians.
# The seeding (one simulator call with --duration 0s) is outside the measured window;
# the refills of --keep-queued (one new task per completed cycle) are inside it, as on a
# farm whose queue does not run dry.
#
# SecantusDB is a Python server: its absolute rate says nothing about MongoDB. Compare
# runs of this script with each other (an older Manager against a newer one), not with
# other servers.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=3
DURATION=20s
WORKERS=64
SEED=2000
FLAMENCO=""
SIM=""
LABEL=current
STORES="sqlite mongodb"
SCENARIO=cycles
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS="$2"; shift 2 ;;
        --duration) DURATION="$2"; shift 2 ;;
        --workers) WORKERS="$2"; shift 2 ;;
        --seed-tasks) SEED="$2"; shift 2 ;;
        --flamenco) FLAMENCO="$2"; shift 2 ;;
        --sim) SIM="$2"; shift 2 ;;
        --label) LABEL="$2"; shift 2 ;;
        --stores) STORES="$2"; shift 2 ;;
        --scenario) SCENARIO="$2"; shift 2 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
case "$SCENARIO" in
    cycles) KEEP=(--keep-queued) ;;
    empty-polls) KEEP=(); SEED=0 ;;
    *) echo "unknown scenario: $SCENARIO (cycles or empty-polls)" >&2; exit 2 ;;
esac

ROOT="$PWD"
if [ -z "$FLAMENCO" ] || [ -z "$SIM" ]; then
    cargo build --release --quiet --bin flamenco --example farm_sim
fi
FLAMENCO="${FLAMENCO:-$ROOT/target/release/flamenco}"
SIM="${SIM:-$ROOT/target/release/examples/farm_sim}"
SECANTUSD="${SECANTUSD:-$ROOT/.venv/bin/secantusd-py}"
OUT="$ROOT/target/perf"
mkdir -p "$OUT"
for exe in "$FLAMENCO" "$SIM"; do
    [ -x "$exe" ] || { echo "error: $exe is not an executable; build it first" >&2; exit 2; }
done
if [[ " $STORES " == *" mongodb "* ]] && [ ! -x "$SECANTUSD" ]; then
    echo "error: no SecantusDB at $SECANTUSD; run scripts/test.sh once (it installs it) or set SECANTUSD" >&2
    exit 2
fi

port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_port() {
    local p="$1" pid="$2" what="$3"
    for _ in $(seq 300); do
        if python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)' "$p" 2>/dev/null; then
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "error: $what exited while starting" >&2
            return 1
        fi
        sleep 0.1
    done
    echo "error: $what did not listen on port $p within 30 s" >&2
    return 1
}

# Requests the database server has answered (SecantusDB's serverStatus network.numRequests:
# every command, the drivers' monitoring included).
db_requests() {
    "$ROOT/.venv/bin/python" - "$1" <<'EOF'
import sys, pymongo
c = pymongo.MongoClient(sys.argv[1], serverSelectionTimeoutMS=5000)
print(c.admin.command("serverStatus")["network"]["numRequests"])
EOF
}

# CPU time of a process (all its threads) in milliseconds: utime + stime.
cpu_ms() {
    python3 - "$1" <<'EOF'
import os, sys
stat = open("/proc/%s/stat" % sys.argv[1]).read()
fields = stat[stat.rindex(")") + 2:].split()
ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
print(ticks * 1000 // os.sysconf("SC_CLK_TCK"))
EOF
}

manager_pid=""
db_pid=""
cleanup() {
    for pid in $manager_pid $db_pid; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    manager_pid=""
    db_pid=""
}
trap cleanup EXIT

# run STORE N: a fresh Manager (and database server) in a fresh directory, seeded, then
# the measured simulator run.
run() {
    local store="$1" n="$2" dir p dbp url="" report
    dir="$(mktemp -d)"
    p="$(port)"
    if [ "$store" = mongodb ]; then
        dbp="$(port)"
        "$SECANTUSD" --host 127.0.0.1 --port "$dbp" --storage-path :memory: \
            --log-level WARNING >"$dir/secantusd.log" 2>&1 &
        db_pid=$!
        wait_port "$dbp" "$db_pid" "SecantusDB"
        url="mongodb://127.0.0.1:$dbp/flamenco_perf?retryWrites=false"
    fi
    cat >"$dir/flamenco-manager.yaml" <<EOF
listen: '127.0.0.1:$p'
data_dir: ./data
worker_request_rate: 0
database_url: '$url'
EOF
    (cd "$dir" && exec "$FLAMENCO" serve >"$dir/manager.log" 2>&1) &
    manager_pid=$!
    wait_port "$p" "$manager_pid" "the Manager"
    if [ "$SEED" -gt 0 ]; then
        (cd "$dir" && "$SIM" --manager "http://127.0.0.1:$p" --seed-config flamenco-manager.yaml \
            --seed-tasks "$SEED" --workers 1 --duration 0s) >/dev/null
    fi
    local before=0 after=0 req_before=0 req_after=0
    if [ -n "$db_pid" ]; then
        req_before="$(db_requests "$url")"
        before="$(cpu_ms "$db_pid")"
    fi
    report="$OUT/mongo-$LABEL-$store-$n.json"
    (cd "$dir" && "$SIM" --manager "http://127.0.0.1:$p" --seed-config flamenco-manager.yaml \
        --workers "$WORKERS" --duration "$DURATION" --scenario "$SCENARIO" "${KEEP[@]}" \
        --pid "$manager_pid") >"$report.tmp"
    if [ -n "$db_pid" ]; then
        after="$(cpu_ms "$db_pid")"
        # minus the two serverStatus requests themselves
        req_after="$(($(db_requests "$url") - 2))"
    fi
    python3 - "$report.tmp" "$report" "$store" "$((after - before))" "$((req_after - req_before))" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
store, db_ms, db_requests = sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
r["store"] = store
if store == "mongodb" and str(r.get("scenario", "Cycles")).lower() != "cycles":
    # per request instead of per cycle (under the same keys, so the table reads alike)
    n = r.get("requests") or r["requests_per_second"] * r.get("seconds", 0)
    r["db_cpu_ms"] = db_ms
    r["db_cpu_ms_per_cycle"] = db_ms / n if n else None
    r["db_requests"] = db_requests
    r["db_requests_per_cycle"] = db_requests / n if n else None
elif store == "mongodb":
    cycles = r.get("task_cycles") or r["task_cycles_per_second"] * r.get("seconds", 0)
    r["db_cpu_ms"] = db_ms
    r["db_cpu_ms_per_cycle"] = db_ms / cycles if cycles else None
    r["db_requests"] = db_requests
    r["db_requests_per_cycle"] = db_requests / cycles if cycles else None
json.dump(r, open(sys.argv[2], "w"), indent=1)
EOF
    rm -f "$report.tmp"
    cleanup
    rm -rf "$dir"
    python3 - "$report" "$LABEL" "$n" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
extra = ""
if r.get("db_cpu_ms_per_cycle") is not None:
    unit = "cycle" if str(r.get("scenario", "Cycles")).lower() == "cycles" else "request"
    extra = " db_cpu=%d ms (%.2f ms/%s, %.2f requests/%s)" % (r["db_cpu_ms"], r["db_cpu_ms_per_cycle"], unit, r["db_requests_per_cycle"], unit)
print("%s %s run %s: cycles/s=%.1f req/s=%.0f%s" % (sys.argv[2], r["store"], sys.argv[3], r["task_cycles_per_second"], r["requests_per_second"], extra))
EOF
}

for n in $(seq "$RUNS"); do
    for store in $STORES; do
        run "$store" "$n"
    done
done

python3 - "$OUT" "$LABEL" "$RUNS" "$STORES" <<'EOF'
import json, os, statistics, sys
out, label, runs, stores = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].split()
print("\n%s: medians of %d runs" % (label, runs))
for store in stores:
    reports = [json.load(open(p)) for p in
               (os.path.join(out, "mongo-%s-%s-%d.json" % (label, store, n)) for n in range(1, runs + 1))
               if os.path.exists(p)]
    if not reports:
        continue
    c = statistics.median(r["task_cycles_per_second"] for r in reports)
    rq = statistics.median(r["requests_per_second"] for r in reports)
    unit = "cycle" if str(reports[0].get("scenario", "Cycles")).lower() == "cycles" else "request"
    line = "%-8s cycles/s %8.1f   requests/s %8.0f" % (store, c, rq)
    per = [r["db_cpu_ms_per_cycle"] for r in reports if r.get("db_cpu_ms_per_cycle") is not None]
    if per:
        line += "   database CPU per %s %6.2f ms" % (unit, statistics.median(per))
        line += "   database requests per %s %5.2f" % (unit, statistics.median(r["db_requests_per_cycle"] for r in reports if r.get("db_requests_per_cycle") is not None))
    print(line)
EOF
