#!/usr/bin/env bash
# The whole test suite: unit tests and behaviour tests against private PostgreSQL and
# MariaDB instances that the tests start themselves (installed here if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
# Unit tests, then the one behaviour-test binary (tests/main.rs): its tests share one
# PostgreSQL and one MariaDB server (plus private ones for tests that need other settings
# or restart a server). Four tests at a time: most of a test's time is spent waiting on
# servers and child processes, and four keep the 2 cores busy without timeouts.
cargo test --release --no-fail-fast -- --test-threads="${LOGTIDE_TEST_THREADS:-4}"
# The PostgreSQL tests once more against the newest major (18), only the PG test modules that
# exercise version-dependent behaviour (publications, slots, generated columns),
# selected by name in the one test binary.
# Two at a time: the leg is short, and the 2-core machine has just run the whole suite.
LOGTIDE_TEST_THREADS="${LOGTIDE_TEST_THREADS:-2}" PG_TESTS="pg_harness pg_operators pg_stream" bash scripts/pg_matrix.sh 18
