#!/usr/bin/env bash
# PostgreSQL benchmark: logtide (slot -> decoded JSONL file) vs pg_recvlogical (pgoutput ->
# file) on exactly the same WAL range, in one run. Method (protocol-notes "Measuring
# fairly"): a template slot is created before each workload; every timed run decodes a fresh
# copy of it up to the same end LSN; each run's row count must equal the workload's; runs
# are interleaved and the median is reported with peak RSS.
#
#   scripts/bench_pg.sh [rows=1000000] [single_txns=100000] [runs=3]
#
# PERF=/tmp/prof records a perf profile of each logtide streaming run (/tmp/prof.<ns>; the
# timings then include perf's overhead). LOGTIDE_BIN=path skips the release build.
# BENCH_SHAPE=narrow (default): rows (id bigint, int, text ~155 B, timestamptz).
# BENCH_SHAPE=realistic: rows shaped like an application table, ~210 bytes as text:
# (id bigint PK, user_id bigint, kind text, amount numeric(12,2), payload jsonb, created_at
# timestamptz).
# Besides its table line, each workload prints two RESULT lines (scripts/bench_lib.sh) for
# scripts/bench.sh's summary.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench_lib.sh
ROWS=${1:-1000000}
SINGLE=${2:-100000}
RUNS=${3:-3}
PORT=${BENCH_PG_PORT:-55990}
BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
W=${BENCH_DIR:-/tmp/logtide-bench-pg}
cargo build --release --quiet
LOGTIDE=${LOGTIDE_BIN:-$PWD/target/release/logtide}

# Outputs go to tmpfs (the issue's method: the tools' own work is measured, not the disk's
# fsync); BENCH_OUT=dir puts them elsewhere (e.g. on disk, to see the fsync cost).
OUT=${BENCH_OUT:-/dev/shm/logtide-bench-pg-out}
rm -rf "$W" "$OUT"; mkdir -p "$W" "$OUT"; chmod 777 "$W" "$OUT"
runuser -u postgres -- "$BIN/initdb" -D "$W/data" -A trust -U postgres >/dev/null
cat >> "$W/data/postgresql.conf" <<CONF
port = $PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$W'
wal_level = logical
max_replication_slots = 20
max_wal_senders = 20
shared_buffers = 512MB
max_wal_size = 8GB
synchronous_commit = off
autovacuum = off
CONF
runuser -u postgres -- "$BIN/pg_ctl" -D "$W/data" -l "$W/pg.log" -w start >/dev/null
trap 'runuser -u postgres -- "$BIN/pg_ctl" -D "$W/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$OUT"' EXIT
PSQL=(psql -X -q -h 127.0.0.1 -p "$PORT" -U postgres -v ON_ERROR_STOP=1)
SHAPE=${BENCH_SHAPE:-narrow}
# ROW_EXPR: the select list of one row from its id `g`; UPDATE_SQL: the one-transaction update.
case "$SHAPE" in
  narrow)
    TABLE_DDL="CREATE TABLE t (id bigint PRIMARY KEY, a int NOT NULL, b text NOT NULL, c timestamptz NOT NULL) WITH (autovacuum_enabled = off);"
    ROW_EXPR="g, g % 1000, repeat('x', 150) || g, now()"
    UPDATE_SQL="UPDATE t SET a = a + 1" ;;
  realistic)
    TABLE_DDL="CREATE TABLE t (id bigint PRIMARY KEY, user_id bigint NOT NULL, kind text NOT NULL, amount numeric(12,2) NOT NULL, payload jsonb NOT NULL, created_at timestamptz NOT NULL) WITH (autovacuum_enabled = off);"
    ROW_EXPR="g, g % 50000, (ARRAY['order_placed','order_refunded','user_signed_up','session_started'])[g % 4 + 1], (g % 100000) / 100.0, jsonb_build_object('sku', 'SKU-' || (g % 9000), 'qty', g % 7 + 1, 'ref', md5(g::text), 'ua', 'Mozilla/5.0 (X11; Linux x86_64)', 'tags', jsonb_build_array('web', 'eu')), now()"
    UPDATE_SQL="UPDATE t SET amount = amount + 1" ;;
  *) echo "BENCH_SHAPE must be narrow or realistic" >&2; exit 2 ;;
esac
"${PSQL[@]}" -d postgres -c "CREATE DATABASE bench"
"${PSQL[@]}" -d bench <<SQL
$TABLE_DDL
CREATE PUBLICATION bench_pub FOR TABLE t;
SQL

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# run_tool <tool> <slot> <endlsn> <out> -> prints "seconds rss_kb cpu_seconds"
run_tool() {
  local tool=$1 slot=$2 end=$3 out=$4
  rm -f "$out"
  local t0 t1
  t0=$(date +%s.%N)
  if [ "$tool" = logtide ]; then
    cat > "$W/logtide.toml" <<CFG
[state]
path = "$W/state-$slot"
[[sources]]
kind = "postgres"
name = "bench"
port = $PORT
user = "postgres"
database = "bench"
sslmode = "disable"
slot = "$slot"
publication = "bench_pub"
create_publication = false
backfill = "never"
[[sinks]]
kind = "file"
path = "$out"
fsync = ${BENCH_FSYNC:-true}
CFG
    WRAP=()
    [ -n "${PERF:-}" ] && WRAP=(perf record -g -o "$PERF.$(date +%s%N)" --)
    /usr/bin/time -f "%M %U %S" -o "$W/rss" "${WRAP[@]}" "$LOGTIDE" --log-level warn run --config "$W/logtide.toml" --until "$end"
  else
    /usr/bin/time -f "%M %U %S" -o "$W/rss" pg_recvlogical -h 127.0.0.1 -p "$PORT" -U postgres -d bench -S "$slot" \
      --start -E "$end" -o proto_version=1 -o publication_names=bench_pub -f "$out" --no-loop
  fi
  t1=$(date +%s.%N)
  echo "$(echo "$t1 - $t0" | bc -l) $(tail -1 "$W/rss" | awk '{print $1, $2 + $3}')"
}

count() {
  if [ "$1" = logtide ]; then wc -l < "$2"; else python3 scripts/count_pgoutput.py "$2"; fi
}

bench() {
  local name=$1 expect=$2 sql=$3
  "${PSQL[@]}" -d bench -c "SELECT pg_create_logical_replication_slot('tmpl', 'pgoutput')" >/dev/null
  eval "$sql"
  local end
  end=$("${PSQL[@]}" -d bench -At -c "SELECT pg_current_wal_insert_lsn()")
  "${PSQL[@]}" -d bench -c "CHECKPOINT" >/dev/null
  declare -A rates rss secs_of cpu
  for i in $(seq 1 "$RUNS"); do
    for tool in logtide pg_recvlogical; do
      local slot="run_${tool//_/}_$i"
      "${PSQL[@]}" -d bench -c "SELECT pg_copy_logical_replication_slot('tmpl', '$slot', false, 'pgoutput')" >/dev/null
      read -r secs kb cpus < <(run_tool "$tool" "$slot" "$end" "$OUT/out-$tool.bin")
      local n; n=$(count "$tool" "$OUT/out-$tool.bin")
      if [ "$n" != "$expect" ]; then echo "$name: $tool produced $n row changes, expected $expect: run rejected" >&2; exit 1; fi
      rates[$tool]+="$(echo "$n / $secs" | bc -l) "
      rss[$tool]+="$kb "
      secs_of[$tool]+="$secs "
      cpu[$tool]+="$cpus "
      "${PSQL[@]}" -d bench -c "SELECT pg_drop_replication_slot('$slot')" >/dev/null
    done
  done
  "${PSQL[@]}" -d bench -c "SELECT pg_drop_replication_slot('tmpl')" >/dev/null
  local lt pr lr prr
  lt=$(echo "${rates[logtide]}" | tr ' ' '\n' | grep . | median)
  pr=$(echo "${rates[pg_recvlogical]}" | tr ' ' '\n' | grep . | median)
  lr=$(echo "${rss[logtide]}" | tr ' ' '\n' | grep . | sort -g | tail -1)
  prr=$(echo "${rss[pg_recvlogical]}" | tr ' ' '\n' | grep . | sort -g | tail -1)
  printf "%-28s logtide %9.0f ev/s (peak RSS %6.1f MB)   pg_recvlogical %9.0f ev/s (peak RSS %5.1f MB)   ratio %.2f\n" \
    "$name" "$lt" "$(echo "$lr/1024" | bc -l)" "$pr" "$(echo "$prr/1024" | bc -l)" "$(echo "$lt / $pr" | bc -l)"
  local tool
  for tool in logtide pg_recvlogical; do
    # shellcheck disable=SC2086 # the lists are space-separated numbers
    bench_result "PostgreSQL $SHAPE, $name" "$tool" "$expect" ${secs_of[$tool]} -- ${rss[$tool]} -- ${cpu[$tool]}
  done
}

echo "row shape: $SHAPE ($("${PSQL[@]}" -d bench -At -c "SELECT avg(length(x::text))::int FROM (SELECT $ROW_EXPR FROM generate_series(1, 1000) g) x") bytes as text)"
bench "a) ${ROWS} inserts, 1k/tx" "$ROWS" \
  "for s in \$(seq 0 1000 $((ROWS - 1))); do echo \"INSERT INTO t SELECT \$ROW_EXPR FROM generate_series(\$s + 1, \$s + 1000) g;\"; done | \"\${PSQL[@]}\" -d bench"
bench "b) 1 tx updating ${ROWS}" "$ROWS" \
  "\"\${PSQL[@]}\" -d bench -c \"\$UPDATE_SQL\""
bench "c) ${SINGLE} single-row txs" "$SINGLE" \
  "for s in \$(seq 1 $SINGLE); do echo \"INSERT INTO t SELECT \$ROW_EXPR FROM (SELECT ($ROWS + \$s)::bigint AS g) x;\"; done | \"\${PSQL[@]}\" -d bench"

# Latency: 200 single-row inserts at 20/s into a table that a live logtide streams to a file.
# Commits must be durable here: with synchronous_commit=off the walsender only sees a commit
# after the WAL writer's next flush (wal_writer_delay, 200 ms).
"${PSQL[@]}" -d postgres -c "ALTER SYSTEM SET synchronous_commit = on" -c "SELECT pg_reload_conf()" >/dev/null
"${PSQL[@]}" -d bench -c "CREATE TABLE lat (id bigint PRIMARY KEY, note text); CREATE PUBLICATION lat_pub FOR TABLE lat"
cat > "$W/lat.toml" <<CFG
[state]
path = "$W/state-lat"
[[sources]]
kind = "postgres"
name = "lat"
port = $PORT
user = "postgres"
database = "bench"
sslmode = "disable"
slot = "lat_slot"
publication = "lat_pub"
tables = { include = ["public.lat"] }
[[sinks]]
kind = "file"
path = "$W/lat.jsonl"
CFG
: > "$W/lat.jsonl"
"$LOGTIDE" --log-level warn run --config "$W/lat.toml" &
LT=$!
# Ready when the slot exists and is active.
for _ in $(seq 1 200); do
  [ "$("${PSQL[@]}" -d bench -At -c "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'lat_slot' AND active")" = 1 ] && break
  sleep 0.05
done
cargo bench --quiet --bench pg_latency -- "host=127.0.0.1 port=$PORT user=postgres dbname=bench" lat "$W/lat.jsonl" 200 20
kill -TERM $LT; wait $LT || true
