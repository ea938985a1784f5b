#!/usr/bin/env bash
# Measures the Manager with the farm simulator: every scenario, RUNS times each (default 3),
# each run against a freshly started release `flamenco serve` on the embedded store. The
# runs alternate (run 1 of every scenario, then run 2 of every scenario, …) so that all
# scenarios see the same background load. Prints one line per run, then the medians, every
# rate also as a fraction of the ceiling (docs/performance.md, "The ceiling").
#
# Usage: ./scripts/perf.sh [--runs N] [--duration 10s] [--workers 64] [--only NAME[,NAME…]]
#                          [--pin] [--compare BASELINE.json] [--save FILE.json]
#                          [--soak-minutes N] [--no-build]
#   NAME: ceiling (GET /healthz: the HTTP stack, no authentication, no store) |
#         ceiling-auth (GET /status-change: the stack plus authentication, no store work) |
#         wrk-ceiling (`wrk` on /healthz with the same connections, if wrk is installed) |
#         cycles-100k | cycles-100k-tags (the 100,000 across 10 worker tags, each worker
#         with one or two) | cycles-1k | empty-polls | may-i-run | rss-1000-workers
#         (64 busy + 936 idle registered workers) | stress-1000-busy (1,000 busy workers) |
#         restart-storm (1,000 signed-on workers polling; the Manager is stopped and started)
#   --pin: the Manager on core 1 and the simulator (or wrk) on core 0 (`taskset`), so the
#         figures describe the Manager on one core rather than the pair sharing two.
#   --compare: print each median's change against a summary saved earlier (--save, or
#         docs/perf-baseline.json).
#   --soak-minutes N: instead of the scenarios, one soak of N minutes (1,000 registered
#         workers, 64 busy, jobs submitted continuously, task logs kept, cleanup on with
#         5-minute ages); one row per minute (docs/performance.md, "Soak").
#
# Output: target/perf/<name>-<run>.json (the simulator's reports), target/perf/summary.json
# (every median, machine-readable) and the tables.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=3
DURATION=10s
WORKERS=64
ONLY=""
PIN=0
COMPARE=""
SAVE=""
SOAK=0
BUILD=1
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS="$2"; shift 2 ;;
        --duration) DURATION="$2"; shift 2 ;;
        --workers) WORKERS="$2"; shift 2 ;;
        --only) ONLY="$2"; shift 2 ;;
        --pin) PIN=1; shift ;;
        --compare) COMPARE="$2"; shift 2 ;;
        --save) SAVE="$2"; shift 2 ;;
        --soak-minutes) SOAK="$2"; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        *) echo "unknown argument: $1 (see the comment at the top of $0)" >&2; exit 2 ;;
    esac
done
if [ -n "$COMPARE" ] && [ ! -r "$COMPARE" ]; then
    echo "--compare: cannot read $COMPARE" >&2
    exit 2
fi
if [ "$PIN" = 1 ] && ! command -v taskset >/dev/null; then
    echo "--pin needs taskset (util-linux)" >&2
    exit 2
fi

if [ "$BUILD" = 1 ]; then
    cargo build --release --quiet --bin flamenco --example farm_sim
fi
ROOT="$PWD"
FLAMENCO="$ROOT/target/release/flamenco"
SIM="$ROOT/target/release/examples/farm_sim"
OUT="$ROOT/target/perf"
mkdir -p "$OUT"
MANAGER_CPU=()
CLIENT_CPU=()
if [ "$PIN" = 1 ]; then
    MANAGER_CPU=(taskset -c 1)
    CLIENT_CPU=(taskset -c 0)
fi

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

# start_manager DIR PORT EXTRA-CONFIG: a fresh Manager in DIR; sets manager_pid.
start_manager() {
    local dir="$1" p="$2" extra="$3"
    printf "listen: '127.0.0.1:%s'\ndata_dir: ./data\nworker_request_rate: 0\n%b" "$p" "$extra" \
        >"$dir/flamenco-manager.yaml"
    (cd "$dir" && exec "${MANAGER_CPU[@]}" "$FLAMENCO" serve >"$dir/manager.log" 2>&1) &
    manager_pid=$!
    for _ in $(seq 100); do
        if python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)' "$p" 2>/dev/null; then
            return
        fi
        sleep 0.1
    done
    echo "the Manager did not start listening on port $p; its log:" >&2
    cat "$dir/manager.log" >&2
    exit 1
}

# wrk on /healthz with the simulator's connections and request headers; writes a report in
# the simulator's shape.
run_wrk() {
    local p="$1" file="$2"
    local auth
    auth="$(printf '%s:%064d' 0123456789abcdef01234567 0 | base64 -w0)"
    "${CLIENT_CPU[@]}" wrk -t1 -c"$WORKERS" -d"$DURATION" --latency \
        -H "Authorization: Basic $auth" -H "User-Agent: Flamenco-Worker/2.5" \
        "http://127.0.0.1:$p/healthz" >"$file.txt"
    python3 - "$file.txt" "$file" <<'EOF'
import json, re, sys
text = open(sys.argv[1]).read()
rate = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
def ms(s):
    n, unit = re.match(r"([\d.]+)(us|ms|s)", s).groups()
    return float(n) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
p99 = re.search(r"99%\s+(\S+)", text)
json.dump({"scenario": "wrk-ceiling", "requests_per_second": rate, "task_cycles_per_second": 0.0,
           "endpoints": {"/healthz": {"per_second": rate,
                                      "latency_ms": {"p99": ms(p99.group(1)) if p99 else None}}}},
          open(sys.argv[2], "w"))
EOF
}

# run NAME RUN SIM-ARGS...: a fresh Manager in a fresh directory, then the simulator.
run() {
    local name="$1" n="$2"
    shift 2
    local dir p extra="" file="$OUT/$name-$n.json"
    dir="$(mktemp -d)"
    p="$(port)"
    if [ "$name" = soak ]; then
        extra="task_cleanup_max_age: 5m\njob_cleanup_max_age: 5m\n"
    fi
    start_manager "$dir" "$p" "$extra"
    if [ "$name" = wrk-ceiling ]; then
        run_wrk "$p" "$file"
    elif [ "$name" = restart-storm ]; then
        local restart
        restart="cd '$dir' && exec ${MANAGER_CPU[*]} '$FLAMENCO' serve >>'$dir/manager.log' 2>&1"
        (cd "$dir" && "${CLIENT_CPU[@]}" "$SIM" --manager "http://127.0.0.1:$p" \
            --seed-config flamenco-manager.yaml --pid "$manager_pid" --restart-with "$restart" "$@") >"$file"
    else
        (cd "$dir" && "${CLIENT_CPU[@]}" "$SIM" --manager "http://127.0.0.1:$p" \
            --seed-config flamenco-manager.yaml --pid "$manager_pid" "$@") >"$file"
    fi
    stop_manager
    # The soak's Manager log says when each cleanup ran and what it deleted.
    if [ "$name" = soak ]; then cp "$dir/manager.log" "$OUT/$name-$n-manager.log"; fi
    rm -rf "$dir"
    echo "$name run $n: $(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("cycles/s=%.0f req/s=%.0f rss=%.1fMB%s" % (r["task_cycles_per_second"], r["requests_per_second"], r.get("manager_peak_rss_bytes",0)/2**20, " all served in %s s" % r.get("all_served_seconds") if "all_served_seconds" in r else ""))' "$file")"
}

NAMES=()
declare -A SCENARIO_ARGS
scenario() {
    local name="$1"
    shift
    if [ -n "$ONLY" ] && [[ ",$ONLY," != *",$name,"* ]]; then return; fi
    NAMES+=("$name")
    SCENARIO_ARGS[$name]="$*"
}

if [ "$SOAK" -gt 0 ]; then
    RUNS=1
    scenario soak --workers "$WORKERS" --registered-workers 1000 --scenario cycles \
        --seed-tasks 1000 --soak-minutes "$SOAK"
else
    scenario ceiling --workers "$WORKERS" --duration "$DURATION" --scenario ceiling
    scenario ceiling-auth --workers "$WORKERS" --duration "$DURATION" --scenario ceiling-auth
    if command -v wrk >/dev/null; then
        scenario wrk-ceiling
    fi
    scenario cycles-100k --workers "$WORKERS" --duration "$DURATION" --scenario cycles --seed-tasks 100000 --keep-queued
    scenario cycles-100k-tags --workers "$WORKERS" --duration "$DURATION" --scenario cycles --seed-tasks 100000 --keep-queued --tags 10
    scenario cycles-1k --workers "$WORKERS" --duration "$DURATION" --scenario cycles --seed-tasks 1000 --keep-queued
    scenario empty-polls --workers "$WORKERS" --duration "$DURATION" --scenario empty-polls
    scenario may-i-run --workers "$WORKERS" --duration "$DURATION" --scenario may-i-run --seed-tasks "$WORKERS"
    scenario rss-1000-workers --workers "$WORKERS" --registered-workers 1000 --duration "$DURATION" --scenario cycles --seed-tasks 100000 --keep-queued
    scenario stress-1000-busy --workers 1000 --duration "$DURATION" --scenario cycles --seed-tasks 100000 --keep-queued
    scenario restart-storm --workers 1000 --scenario restart-storm
fi
if [ "${#NAMES[@]}" = 0 ]; then
    echo "--only $ONLY matches no scenario" >&2
    exit 2
fi

for n in $(seq "$RUNS"); do
    for name in "${NAMES[@]}"; do
        # shellcheck disable=SC2086 # the arguments are words without spaces
        run "$name" "$n" ${SCENARIO_ARGS[$name]}
    done
done

python3 - "$OUT" "$RUNS" "$PIN" "$DURATION" "$WORKERS" "$COMPARE" "$SAVE" "${NAMES[@]}" <<'EOF'
import json, os, statistics, sys, time
out, runs, pin, duration, workers, compare, save = sys.argv[1:8]
names = sys.argv[8:]
runs = int(runs)
med = lambda xs: statistics.median(xs) if xs else None
def cpu_model():
    """The CPU's model name: rates and CPU times compare only between runs on the same CPU."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None
summary = {"cpu_model": cpu_model(), "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "pinned": pin == "1",
           "runs": runs, "duration": duration, "workers": int(workers),
           "load_average_at_end": os.getloadavg()[0], "scenarios": {}}
for name in names:
    reports = [json.load(open(p)) for p in (os.path.join(out, "%s-%d.json" % (name, n)) for n in range(1, runs + 1)) if os.path.exists(p)]
    if not reports:
        continue
    s = {"requests_per_second": med([r["requests_per_second"] for r in reports]),
         "task_cycles_per_second": med([r["task_cycles_per_second"] for r in reports]),
         "runs_requests_per_second": [round(r["requests_per_second"]) for r in reports],
         "runs_task_cycles_per_second": [round(r["task_cycles_per_second"]) for r in reports]}
    for key in ("manager_cpu_us_per_request", "simulator_cpu_us_per_request"):
        xs = [r[key] for r in reports if key in r]
        if xs:
            s[key] = med(xs)
    rss = [r["manager_peak_rss_bytes"] for r in reports if "manager_peak_rss_bytes" in r]
    if rss:
        s["rss_mb"] = med(rss) / 2**20
    eps = sorted({e for r in reports for e in r.get("endpoints", {})})
    s["p99_ms"] = {e: med([r["endpoints"][e]["latency_ms"]["p99"] for r in reports if e in r["endpoints"] and r["endpoints"][e]["latency_ms"]["p99"] is not None]) for e in eps}
    if name == "restart-storm":
        s["all_served_seconds"] = med([r["all_served_seconds"] for r in reports if r.get("all_served_seconds") is not None])
        s["storm_p99_ms"] = med([r["storm"]["latency_ms"]["p99"] for r in reports])
        s["stop_seconds"] = med([r["stop_seconds"] for r in reports])
        s["first_answer_seconds"] = med([r["first_answer_seconds"] for r in reports])
    if name == "soak":
        s["minutes"] = reports[0]["minutes"]
        s["soak_summary"] = reports[0]["summary"]
    summary["scenarios"][name] = s

sc = summary["scenarios"]
ceiling = (sc.get("ceiling") or {}).get("requests_per_second")
def frac(s):
    """A scenario's rate as a fraction of the ceiling: requests, or five per task cycle.
    None for the restart storm: its rate is how often idle workers poll, not a throughput."""
    if not ceiling or "all_served_seconds" in s:
        return None
    if s["task_cycles_per_second"]:
        return 5 * s["task_cycles_per_second"] / ceiling
    return s["requests_per_second"] / ceiling
for s in sc.values():
    s["fraction_of_ceiling"] = frac(s)

print("\nmedians of %d runs, %s, %d workers, %s each" % (runs, "pinned (Manager core 1, client core 0)" if pin == "1" else "unpinned", int(workers), duration))
print("%-18s %10s %10s %8s %8s %8s %8s  %s" % ("scenario", "cycles/s", "req/s", "ceiling", "RSS MB", "mgr us", "sim us", "p99 ms per endpoint"))
for name, s in sc.items():
    f = s["fraction_of_ceiling"]
    p99 = ", ".join("%s %.1f" % (e, v) for e, v in s["p99_ms"].items() if v is not None)
    us = lambda k: "%.1f" % s[k] if k in s else "-"
    print("%-18s %10.0f %10.0f %8s %8s %8s %8s  %s" % (name, s["task_cycles_per_second"], s["requests_per_second"],
          "%.2f" % f if f is not None else "-", "%.1f" % s["rss_mb"] if "rss_mb" in s else "-",
          us("manager_cpu_us_per_request"), us("simulator_cpu_us_per_request"), p99))
print("(ceiling: the rate as a fraction of the ceiling's, a task cycle counting as five requests;"
      " mgr us / sim us: CPU microseconds per request of the Manager and of the simulator)")
if "wrk-ceiling" in sc and ceiling:
    print("simulator / wrk on the ceiling route: %.0f %%" % (100 * ceiling / sc["wrk-ceiling"]["requests_per_second"]))
if sc.get("cycles-100k") and sc.get("cycles-100k-tags") and sc["cycles-100k"]["task_cycles_per_second"]:
    print("cycle rate with 100k queued across 10 tags / untagged: %.0f %%" % (100 * sc["cycles-100k-tags"]["task_cycles_per_second"] / sc["cycles-100k"]["task_cycles_per_second"]))
if sc.get("cycles-1k") and sc["cycles-1k"]["task_cycles_per_second"]:
    print("cycle rate with 100k queued / with 1k queued: %.0f %%" % (100 * sc.get("cycles-100k", {}).get("task_cycles_per_second", 0) / sc["cycles-1k"]["task_cycles_per_second"]))
if "restart-storm" in sc:
    s = sc["restart-storm"]
    print("restart storm (1,000 workers): stop %.2f s, first answer %.2f s and all served %s s after the start command, p99 during the storm %.1f ms"
          % (s["stop_seconds"], s["first_answer_seconds"], "%.2f" % s["all_served_seconds"] if s["all_served_seconds"] is not None else "never", s["storm_p99_ms"]))
if "soak" in sc:
    print("\nsoak, per minute:")
    print("%6s %10s %10s %8s %8s %8s %8s %6s %12s %10s %8s %8s %6s" % ("minute", "cycles/s", "req/s", "p99 ms", "errors", "RSS MB", "anon MB", "fds",
          "data dir MB", "WAL MB", "mgr us", "sim us", "core"))
    num = lambda v, f: f % v if v is not None else "-"
    for r in sc["soak"]["minutes"]:
        print("%6d %10.0f %10.0f %8.1f %8d %8.1f %8.1f %6d %12.1f %10.1f %8s %8s %6s" % (r["minute"], r["cycles_per_second"], r["requests_per_second"], r["p99_ms"],
              r["transport_errors"] + r["not_2xx"], (r["rss_bytes"] or 0) / 2**20, (r["rss_anon_bytes"] or 0) / 2**20, r["open_fds"] or 0,
              r["data_dir_bytes"] / 2**20, r["wal_bytes"] / 2**20, num(r.get("manager_cpu_us_per_cycle"), "%.0f"),
              num(r.get("simulator_cpu_us_per_cycle"), "%.0f"), num(r.get("manager_core_busy_share") and 100 * r["manager_core_busy_share"], "%.0f%%")))
    print("(mgr us / sim us: CPU microseconds per task cycle of the Manager's process and of the simulator's, whose work per cycle"
          " does not depend on the database: when both move together, the machine did; core: how busy the Manager's core was, pinned runs only)")

path = os.path.join(out, "summary.json")
json.dump(summary, open(path, "w"), indent=1, sort_keys=True)
if save:
    json.dump(summary, open(save, "w"), indent=1, sort_keys=True)
    print("\nsummary saved to %s" % save)
print("summary: %s" % path)

if compare:
    base = json.load(open(compare))
    print("\nchange against %s (%s, %s, load %.1f then, %.1f now):" % (compare, base.get("date"), "pinned" if base.get("pinned") else "unpinned", base.get("load_average_at_end", 0), summary["load_average_at_end"]))
    if base.get("pinned") != summary["pinned"]:
        print("  warning: one run is pinned and the other is not; compare like with like")
    if base.get("cpu_model") != summary["cpu_model"]:
        print("  warning: the baseline ran on another CPU (%s; this one: %s): rates, latencies and CPU"
              " times do not compare, fractions of the ceiling do" % (base.get("cpu_model") or "not recorded", summary["cpu_model"]))
    print("  %-18s %-26s %12s %12s %8s" % ("scenario", "figure", "baseline", "now", "change"))
    worse = 0
    for name, s in sc.items():
        b = base.get("scenarios", {}).get(name)
        if not b:
            continue
        figures = [("task_cycles_per_second", True), ("requests_per_second", True), ("fraction_of_ceiling", True), ("rss_mb", False),
                   ("manager_cpu_us_per_request", False),
                   ("all_served_seconds", False), ("storm_p99_ms", False)]
        figures += [("p99_ms " + e, False) for e in s.get("p99_ms", {})]
        for key, higher_is_better in figures:
            if key.startswith("p99_ms "):
                e = key[7:]
                old, new = b.get("p99_ms", {}).get(e), s["p99_ms"].get(e)
            else:
                old, new = b.get(key), s.get(key)
            if not old or new is None:
                continue
            change = (new - old) / old
            bad = change < -0.10 if higher_is_better else change > 0.10
            worse += bad
            print("  %-18s %-26s %12.2f %12.2f %+7.1f%%%s" % (name, key, old, new, 100 * change, "  <-- worse by more than 10 %" if bad else ""))
    print("  %d figure(s) worse by more than 10 %%" % worse)
EOF
