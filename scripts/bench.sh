#!/usr/bin/env bash
# Every benchmark in one run, logtide against the reference tool on the same workload each
# time (see each script's header for its method): PostgreSQL streaming vs pg_recvlogical,
# MariaDB streaming vs mariadb-binlog -v, on narrow and on realistic rows; backfill vs
# COPY TO STDOUT / mariadb --quick; the sinks (file, HTTP, NATS JetStream). Private
# servers are started by the scripts; nothing else should run on the machine meanwhile.
#
#   scripts/bench.sh                     (ROWS=1000000 SINGLE=100000 RUNS=3)
#   ROWS=200000 SINGLE=20000 RUNS=3 scripts/bench.sh   (a quicker pass)
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${ROWS:-1000000}
SINGLE=${SINGLE:-100000}
RUNS=${RUNS:-3}
cargo build --release --bin logtide >&2
export LOGTIDE_BIN=$PWD/target/release/logtide
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), $(uname -sr);" \
  "$("$PGBIN/postgres" --version); $(mariadbd --version 2>/dev/null | awk '{print $1, $2, $3}')"
echo "workload sizes: ROWS=$ROWS SINGLE=$SINGLE, medians of RUNS=$RUNS interleaved runs"
for shape in narrow realistic; do
  echo
  echo "== PostgreSQL streaming, $shape rows (a: inserts 1k/txn, b: one txn updating all, c: single-row txns; then latency)"
  BENCH_SHAPE=$shape bash scripts/bench_pg.sh "$ROWS" "$SINGLE" "$RUNS"
  echo
  echo "== MariaDB streaming, $shape rows"
  BENCH_SHAPE=$shape ROWS=$ROWS SINGLE=$SINGLE RUNS=$RUNS bash scripts/bench_mysql.sh
done
echo
echo "== Backfill"
ROWS=$ROWS RUNS=$RUNS bash scripts/bench_backfill.sh
echo
echo "== Sinks"
bash scripts/bench_sinks.sh
