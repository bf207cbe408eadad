#!/usr/bin/env bash
# Every benchmark in one run, logtide against the reference tool on the same workload each
# time (see each script's header for its method): PostgreSQL streaming vs pg_recvlogical,
# MariaDB streaming vs mariadb-binlog -v, on narrow and on realistic rows; backfill vs
# COPY TO STDOUT / mariadb --quick; the sinks (file, HTTP, NATS JetStream); NATS JetStream
# end to end vs a bare async-nats publisher (the physical limit). Private servers are
# started by the scripts; nothing else should run on the machine meanwhile.
#
#   scripts/bench.sh                     (ROWS=1000000 SINGLE=100000 RUNS=3)
#   ROWS=200000 SINGLE=20000 RUNS=3 scripts/bench.sh   (a quicker pass)
#   ROWS=2000 SINGLE=500 RUNS=1 scripts/bench.sh       (a smoke run: figures mean nothing)
#
# Every script prints its own table and RESULT lines (scripts/bench_lib.sh); at the end one
# Markdown table of all workloads is printed and written, with the machine and the sizes,
# to target/bench/summary.md (the whole output to target/bench/bench.log).
# `scripts/bench_docs.sh` puts that summary into docs/performance.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${ROWS:-1000000}
SINGLE=${SINGLE:-100000}
RUNS=${RUNS:-3}
OUT=target/bench
mkdir -p "$OUT"
cargo build --release --bin logtide >&2
export LOGTIDE_BIN=$PWD/target/release/logtide
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)

all() {
  echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), $(uname -sr);" \
    "$("$PGBIN/postgres" --version); $(mariadbd --version 2>/dev/null | awk '{print $1, $2, $3}');" \
    "$( (command -v nats-server >/dev/null && nats-server --version) || /usr/sbin/nats-server --version)"
  echo "workload sizes: ROWS=$ROWS SINGLE=$SINGLE, RUNS=$RUNS interleaved runs; logtide $(git describe --always --dirty 2>/dev/null || echo '(no git)'), $(date -u +%Y-%m-%dT%H:%MZ)"
  for shape in narrow realistic; do
    echo
    echo "== PostgreSQL streaming, $shape rows (a: inserts 1k/txn, b: one txn updating all, c: single-row txns; then latency)"
    BENCH_SHAPE=$shape bash scripts/bench_pg.sh "$ROWS" "$SINGLE" "$RUNS"
    echo
    echo "== MariaDB streaming, $shape rows"
    BENCH_SHAPE=$shape ROWS=$ROWS SINGLE=$SINGLE RUNS=$RUNS bash scripts/bench_mysql.sh
  done
  for shape in narrow realistic; do
    echo
    echo "== Backfill, $shape rows"
    BENCH_SHAPE=$shape ROWS=$ROWS RUNS=$RUNS bash scripts/bench_backfill.sh
  done
  echo
  echo "== Sinks"
  bash scripts/bench_sinks.sh "$ROWS"
  echo
  echo "== NATS JetStream end to end vs a bare async-nats publisher"
  ROWS=$ROWS RUNS=$RUNS bash scripts/bench_nats.sh
}
all | tee "$OUT/bench.log"
bash scripts/bench_summary.sh "$OUT/bench.log" >"$OUT/summary.md"
echo
echo "== Summary (also in $OUT/summary.md)"
cat "$OUT/summary.md"
