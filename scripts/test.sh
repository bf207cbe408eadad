#!/usr/bin/env bash
# The whole test suite: unit tests and behaviour tests against private PostgreSQL and
# MariaDB instances that the tests start themselves (installed here if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
# Behaviour tests start one private database server per test binary; two at a time fit
# 2 cores comfortably.
cargo test --release --no-fail-fast -- --test-threads="${LOGTIDE_TEST_THREADS:-4}"
# The PostgreSQL tests once more against the newest major (18), only the PG binaries that
# exercise version-dependent behaviour (publications, slots, generated columns).
# Two at a time: the leg is short, and the 2-core machine has just run the whole suite.
LOGTIDE_TEST_THREADS="${LOGTIDE_TEST_THREADS:-2}" PG_TESTS="pg_harness pg_operators pg_stream" bash scripts/pg_matrix.sh 18
