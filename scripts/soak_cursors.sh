#!/usr/bin/env bash
# Soak the cursor invariants (issue 11): runs tests/backfill_cursors.rs with many seeds per
# engine, in slices, so a failure names its seed range.
#
#   scripts/soak_cursors.sh [SEEDS_PER_SLICE] [SLICES] [FIRST_SEED]
#
# Defaults: 100 seeds per slice, 5 slices, first seed 1000 (the CI run uses 1..20).
# A failing scenario prints "postgres seed N" / "mariadb seed N"; re-run one with
#   LOGTIDE_CURSOR_SEED0=N LOGTIDE_CURSOR_SEEDS=1 cargo test --release --test main -- backfill_cursors::pg_seeded backfill_cursors::mysql_seeded
set -euo pipefail
cd "$(dirname "$0")/.."
per=${1:-100}
slices=${2:-5}
first=${3:-1000}
cargo test --release --test main --no-run
for ((i = 0; i < slices; i++)); do
    seed0=$((first + i * per))
    echo "== seeds ${seed0}..$((seed0 + per - 1))"
    log=$(mktemp)
    status=0
    LOGTIDE_CURSOR_SEED0=$seed0 LOGTIDE_CURSOR_SEEDS=$per \
        cargo test --release --test main -- backfill_cursors::pg_seeded backfill_cursors::mysql_seeded --nocapture >"$log" 2>&1 || status=$?
    grep -E "seed [0-9]+ .*events ok|panicked|names two|differs|test result" "$log" || true
    if [ "$status" -ne 0 ]; then
        echo "soak failed in seeds ${seed0}..$((seed0 + per - 1)); full output in $log" >&2
        exit 1
    fi
    rm -f "$log"
done
echo "soak passed: $((per * slices)) seeds per engine"
