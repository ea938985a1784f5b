#!/usr/bin/env bash
# Run every cargo-fuzz target (or the ones named) for a bounded time each, one after
# the other, starting from the checked-in corpus in fuzz/corpus/<target>/.
#
#   scripts/fuzz.sh [seconds-per-target] [target ...]     (default: 60 s, all targets)
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). cargo-fuzz wants a nightly
# compiler; RUSTC_BOOTSTRAP=1 lets the stable one act as such. A crash, a panic, a
# timeout or an out-of-memory leaves its input in fuzz/artifacts/<target>/ and makes the
# script exit 1 after the remaining targets ran. See docs/fuzzing.md.
set -uo pipefail

seconds="${1:-60}"
shift || true
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
    echo "usage: scripts/fuzz.sh [seconds-per-target] [target ...]" >&2
    exit 2
fi
cd "$(dirname "$0")/.."
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is not installed: run \`cargo install cargo-fuzz --locked\`" >&2
    exit 2
fi
export RUSTC_BOOTSTRAP=1

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

failed=()
for target in "${targets[@]}"; do
    echo "=== $target: ${seconds}s ($(date -u +%H:%M:%S) UTC)"
    mkdir -p "fuzz/corpus/$target"
    if ! cargo fuzz run "$target" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1; then
        failed+=("$target")
    fi
    echo "=== $target: done ($(date -u +%H:%M:%S) UTC), corpus $(find "fuzz/corpus/$target" -type f | wc -l) files"
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "findings (inputs in fuzz/artifacts/): ${failed[*]}" >&2
    exit 1
fi
echo "all targets ran ${seconds}s without a finding"
