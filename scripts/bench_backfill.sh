#!/usr/bin/env bash
# Backfill benchmark: logtide's initial backfill of a ROWS-row table (~200-byte rows) into a
# JSONL file, against the plain dump tools on the same table in the same run:
#   PostgreSQL: psql -c "COPY (SELECT * FROM t) TO STDOUT" > file
#   MariaDB:    mariadb --quick -e "SELECT * FROM t" > file
# Both servers are private instances (own data dir and port). Each logtide run starts from
# an empty state (so it backfills), stops after exactly ROWS events (--max-events) and must
# have written ROWS lines; each reference run must have written ROWS lines. Runs are
# interleaved (A B A B ...); medians and peak RSS (/usr/bin/time) are reported.
#
# Usage: scripts/bench_backfill.sh            (ROWS=1000000 RUNS=3)
#        ROWS=200000 RUNS=1 ENGINES=postgres scripts/bench_backfill.sh
# BENCH_SHAPE=narrow (default): (id bigint PK, int, text of 160 chars, timestamptz/datetime(6)).
# BENCH_SHAPE=realistic: rows shaped like an application table, as in bench_pg.sh and
# bench_mysql.sh: (id bigint PK, user_id bigint, kind text, amount numeric(12,2), payload
# jsonb/JSON, created_at timestamptz/datetime(6)).
# LOGTIDE_BIN=path skips the release build; PERF=/tmp/prof records a perf profile of the
# logtide runs (timings then include perf's overhead). Needs root (runs initdb as user postgres).
# Besides its table line, each engine prints two RESULT lines (scripts/bench_lib.sh) for
# scripts/bench.sh's summary.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench_lib.sh
ROWS=${ROWS:-1000000}
RUNS=${RUNS:-3}
ENGINES=${ENGINES:-"postgres mysql"}
SHAPE=${BENCH_SHAPE:-narrow}
case "$SHAPE" in
  narrow)
    PG_DDL="CREATE TABLE t (id bigint PRIMARY KEY, a int NOT NULL, b text NOT NULL, c timestamptz NOT NULL)"
    PG_ROW="g, g % 1000, repeat(md5(g::text), 5), '2024-01-01'::timestamptz + g * interval '1 second'"
    MY_DDL="CREATE TABLE bench.t (id BIGINT PRIMARY KEY, a INT NOT NULL, b VARCHAR(200) NOT NULL, c DATETIME(6) NOT NULL)"
    MY_ROW="seq, seq % 1000, REPEAT(MD5(seq), 5), '2024-01-01' + INTERVAL seq SECOND" ;;
  realistic)
    PG_DDL="CREATE TABLE t (id bigint PRIMARY KEY, user_id bigint NOT NULL, kind text NOT NULL, amount numeric(12,2) NOT NULL, payload jsonb NOT NULL, created_at timestamptz NOT NULL)"
    PG_ROW="g, g % 50000, (ARRAY['order_placed','order_refunded','user_signed_up','session_started'])[g % 4 + 1], (g % 100000) / 100.0, jsonb_build_object('sku', 'SKU-' || (g % 9000), 'qty', g % 7 + 1, 'ref', md5(g::text), 'ua', 'Mozilla/5.0 (X11; Linux x86_64)', 'tags', jsonb_build_array('web', 'eu')), '2024-01-01'::timestamptz + g * interval '1 second'"
    MY_DDL="CREATE TABLE bench.t (id BIGINT PRIMARY KEY, user_id BIGINT NOT NULL, kind VARCHAR(32) NOT NULL, amount DECIMAL(12,2) NOT NULL, payload JSON NOT NULL, created_at DATETIME(6) NOT NULL)"
    MY_ROW="seq, seq % 50000, ELT(seq % 4 + 1, 'order_placed', 'order_refunded', 'user_signed_up', 'session_started'), (seq % 100000) / 100, JSON_OBJECT('sku', CONCAT('SKU-', seq % 9000), 'qty', seq % 7 + 1, 'ref', MD5(seq), 'ua', 'Mozilla/5.0 (X11; Linux x86_64)', 'tags', JSON_ARRAY('web', 'eu')), '2024-01-01' + INTERVAL seq SECOND" ;;
  *) echo "BENCH_SHAPE must be narrow or realistic" >&2; exit 2 ;;
esac
if [ -z "${LOGTIDE_BIN:-}" ]; then
  cargo build --release --bin logtide >&2
  LOGTIDE_BIN=target/release/logtide
fi
BIN=$(realpath "$LOGTIDE_BIN")
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
ROOT=$(mktemp -d /tmp/logtide-bench-backfill.XXXXXX)
# Outputs go to tmpfs, the issue's method (the tools' work is measured, not the disk's);
# BENCH_OUT=dir puts them elsewhere.
OUT=$(mktemp -d "${BENCH_OUT:-/dev/shm}/logtide-bench-backfill-out.XXXXXX")
chmod 777 "$OUT"
chmod 777 "$ROOT"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PGPORT=$(free_port)
MYPORT=$(free_port)
MYSOCK=$ROOT/my.sock
export LOGTIDE_BENCH_PW=bench-pw
cleanup() {
  runuser -u postgres -- "$PGBIN/pg_ctl" -D "$ROOT/pg" -m immediate stop >/dev/null 2>&1 || true
  [ -f "$ROOT/my.pid" ] && kill -9 "$(cat "$ROOT/my.pid")" 2>/dev/null || true
  rm -rf "$OUT"
  [ -n "${KEEP:-}" ] || rm -rf "$ROOT"
}
trap cleanup EXIT

median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) print "nan"; else print a[int((NR+1)/2)]}'; }
# timed <out> <cmd...>: runs cmd with stdout to <out>, prints "seconds rss_kb cpu_seconds"
timed() {
  local out=$1; shift
  local t0 t1
  t0=$(date +%s.%N)
  /usr/bin/time -f "%M %U %S" -o "$ROOT/rss" "$@" >"$out"
  t1=$(date +%s.%N)
  echo "$(echo "$t1 - $t0" | bc -l) $(tail -1 "$ROOT/rss" | awk '{print $1, $2 + $3}')"
}

start_postgres() {
  runuser -u postgres -- "$PGBIN/initdb" -D "$ROOT/pg" -A trust -U postgres >/dev/null
  cat >>"$ROOT/pg/postgresql.conf" <<CONF
port = $PGPORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$ROOT'
wal_level = logical
max_replication_slots = 20
max_wal_senders = 20
shared_buffers = 512MB
synchronous_commit = off
CONF
  runuser -u postgres -- "$PGBIN/pg_ctl" -D "$ROOT/pg" -l "$ROOT/pg.log" -w start >/dev/null
  psql -X -q -h 127.0.0.1 -p "$PGPORT" -U postgres -d postgres -c "CREATE DATABASE bench"
  psql -X -q -h 127.0.0.1 -p "$PGPORT" -U postgres -d bench -v ON_ERROR_STOP=1 <<SQL
$PG_DDL;
INSERT INTO t SELECT $PG_ROW FROM generate_series(1, $ROWS) g;
VACUUM ANALYZE t;
SQL
}

start_mariadb() {
  mkdir -p "$ROOT/mytmp"
  mariadb-install-db --no-defaults --datadir="$ROOT/my" --tmpdir="$ROOT/mytmp" \
    --auth-root-authentication-method=normal --user=root --skip-test-db >"$ROOT/my-install.log" 2>&1
  mariadbd --no-defaults --datadir="$ROOT/my" --tmpdir="$ROOT/mytmp" --port="$MYPORT" --socket="$MYSOCK" \
    --pid-file="$ROOT/my.pid" --log-bin="$ROOT/my/mysql-bin" --log-error="$ROOT/my.err" \
    --server-id=1 --user=root --bind-address=127.0.0.1 --skip-name-resolve --binlog-format=ROW \
    --binlog-row-image=FULL --binlog-row-metadata=FULL --innodb-buffer-pool-size=1G \
    --innodb-flush-log-at-trx-commit=2 --sync-binlog=0 --character-set-server=utf8mb4 >/dev/null 2>&1 &
    disown # killed by cleanup: no "Killed" report from the shell
  for _ in $(seq 1 300); do
    mariadb --no-defaults --socket="$MYSOCK" -uroot -e 'SELECT 1' >/dev/null 2>&1 && break
    sleep 0.1
  done
  mariadb --no-defaults --socket="$MYSOCK" -uroot <<SQL
CREATE USER 'logtide'@'%' IDENTIFIED BY '$LOGTIDE_BENCH_PW';
GRANT REPLICATION SLAVE, BINLOG MONITOR, SELECT ON *.* TO 'logtide'@'%';
CREATE DATABASE bench CHARACTER SET utf8mb4;
$MY_DDL;
USE bench;
SET SESSION sql_log_bin = 0;
INSERT INTO bench.t SELECT $MY_ROW FROM seq_1_to_$ROWS;
ANALYZE TABLE bench.t;
SQL
}

logtide_config() { # $1 = engine, $2 = dir
  local src
  if [ "$1" = postgres ]; then
    src="kind = \"postgres\"
name = \"bench\"
host = \"127.0.0.1\"
port = $PGPORT
user = \"postgres\"
database = \"bench\"
sslmode = \"disable\"
slot = \"bf_$(basename "$2" | tr -c 'a-z0-9\n' '_')\"
tables = { include = [\"public.t\"] }"
  else
    src="kind = \"mysql\"
name = \"bench\"
host = \"127.0.0.1\"
port = $MYPORT
user = \"logtide\"
password_env = \"LOGTIDE_BENCH_PW\"
tables = { include = [\"bench.t\"] }"
  fi
  cat >"$2/logtide.toml" <<EOF
[state]
path = "$2/state"

[[sources]]
$src
backfill = "initial"
backfill_chunk_rows = ${CHUNK:-10000}

[[sinks]]
kind = "file"
name = "out"
path = "$OUT/out.jsonl"
fsync = false
EOF
}

echo "row shape: $SHAPE"
printf '%-9s %8s %13s %8s %13s %8s %6s\n' engine rows "logtide r/s" "RSS MB" "ref r/s" "RSS MB" ratio
for engine in $ENGINES; do
  if [ "$engine" = postgres ]; then start_postgres; else start_mariadb; fi
  LT=() LR=() LC=() RT=() RR=() RC=()
  for r in $(seq 1 "$RUNS"); do
    D=$ROOT/$engine-$r
    mkdir -p "$D"
    chmod 777 "$D"
    logtide_config "$engine" "$D"
    WRAP=()
    [ -n "${PERF:-}" ] && WRAP=(perf record -g -o "${PERF}.$engine" --)
    read -r s kb cpu < <(timed /dev/null "${WRAP[@]}" "$BIN" --log-level warn run --config "$D/logtide.toml" --max-events "$ROWS")
    got=$(wc -l <"$OUT/out.jsonl")
    if [ "$got" = "$ROWS" ]; then LT+=("$s") LR+=("$kb") LC+=("$cpu"); else echo "logtide $engine run $r: $got rows (rejected)" >&2; fi
    rm -f "$OUT/out.jsonl"
    if [ "$engine" = postgres ]; then
      psql -X -q -h 127.0.0.1 -p "$PGPORT" -U postgres -d bench \
        -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE NOT active" >/dev/null
      read -r s kb cpu < <(timed "$OUT/ref.txt" psql -X -q -h 127.0.0.1 -p "$PGPORT" -U postgres -d bench \
        -c "COPY (SELECT * FROM t) TO STDOUT")
    else
      read -r s kb cpu < <(timed "$OUT/ref.txt" mariadb --no-defaults --host=127.0.0.1 --port="$MYPORT" \
        -ulogtide -p"$LOGTIDE_BENCH_PW" --quick --batch --skip-column-names -e "SELECT * FROM bench.t")
    fi
    got=$(wc -l <"$OUT/ref.txt")
    if [ "$got" = "$ROWS" ]; then RT+=("$s") RR+=("$kb") RC+=("$cpu"); else echo "reference $engine run $r: $got rows (rejected)" >&2; fi
    rm -f "$OUT/ref.txt"
  done
  lt=$(printf '%s\n' "${LT[@]:-}" | grep . | median)
  rt=$(printf '%s\n' "${RT[@]:-}" | grep . | median)
  lr=$(printf '%s\n' "${LR[@]:-}" | grep . | median)
  rr=$(printf '%s\n' "${RR[@]:-}" | grep . | median)
  awk -v e="$engine" -v n="$ROWS" -v lt="$lt" -v rt="$rt" -v lr="$lr" -v rr="$rr" 'BEGIN {
    l = (lt > 0) ? n / lt : 0; f = (rt > 0) ? n / rt : 0;
    printf "%-9s %8d %13.0f %8.1f %13.0f %8.1f %6.2f\n", e, n, l, lr / 1024, f, rr / 1024, (f > 0) ? l / f : 0 }'
  if [ "$engine" = postgres ]; then
    bench_result "Backfill, PostgreSQL $SHAPE, $ROWS rows → JSONL" logtide "$ROWS" "${LT[@]}" -- "${LR[@]}" -- "${LC[@]}"
    bench_result "Backfill, PostgreSQL $SHAPE, $ROWS rows → JSONL" "COPY … TO STDOUT" "$ROWS" "${RT[@]}" -- "${RR[@]}" -- "${RC[@]}"
  else
    bench_result "Backfill, MariaDB $SHAPE, $ROWS rows → JSONL" logtide "$ROWS" "${LT[@]}" -- "${LR[@]}" -- "${LC[@]}"
    bench_result "Backfill, MariaDB $SHAPE, $ROWS rows → JSONL" "mariadb --quick" "$ROWS" "${RT[@]}" -- "${RR[@]}" -- "${RC[@]}"
  fi
done
