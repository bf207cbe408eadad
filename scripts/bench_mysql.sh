#!/usr/bin/env bash
# Benchmark: logtide's MySQL/MariaDB binlog source (binlog -> decoded JSONL file) against
# `mariadb-binlog --read-from-remote-server --base64-output=decode-rows -v` on the same
# binlog range, on a private mariadbd (protocol-notes.md, "Measuring fairly").
#
# Workloads (~200-byte rows):
#   bulk    ROWS inserts in 1000-row transactions
#   update  one transaction updating ROWS rows
#   single  SINGLE single-row transactions
# For each: FLUSH BINARY LOGS, note file:pos, run the workload, note the end, FLUSH again.
# Every timed run reads exactly that range: logtide from a checkpoint seeded at the start
# (a copy of a template state dir) with `--until file:end`, mariadb-binlog with
# --start-position/--stop-position. A run counts only if it produced exactly the expected
# number of row changes. Runs are interleaved (A B A B ...); medians are reported, with the
# peak RSS and CPU time from /usr/bin/time -v (wall time from date, to the nanosecond:
# time -v's is in hundredths).
#
# Usage: scripts/bench_mysql.sh            (ROWS=1000000 SINGLE=100000 RUNS=3)
#        ROWS=200000 SINGLE=20000 RUNS=1 scripts/bench_mysql.sh
# LOGTIDE_BIN=path skips the release build. PERF=/tmp/prof records a perf profile of each
# logtide run (/tmp/prof.<workload>.<run>; the timings then include perf's overhead).
# BATCH / CHANNEL set the pipeline's max_batch_events / channel_capacity (4096 / 16384).
# BENCH_SHAPE=narrow (default) or realistic: (id BIGINT PK, user_id BIGINT, kind VARCHAR,
# amount DECIMAL(12,2), payload JSON, created_at DATETIME(6)), ~210 bytes as text.
# Besides its table line, each workload prints two RESULT lines (scripts/bench_lib.sh) for
# scripts/bench.sh's summary.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench_lib.sh
ROWS=${ROWS:-1000000}
SINGLE=${SINGLE:-100000}
RUNS=${RUNS:-3}
WORKLOADS=${WORKLOADS:-"bulk update single"}
SHAPE=${BENCH_SHAPE:-narrow}
# COLS: the tables' columns; ROW: the select list of one row from its id `seq`; UPD: the update.
case "$SHAPE" in
  narrow)
    COLS="id BIGINT PRIMARY KEY, a INT, b VARCHAR(100), c DOUBLE, d DATETIME(6), e VARCHAR(40)"
    ROW="seq, seq % 1000, REPEAT('x', 90), seq * 1.5, '2024-01-01 00:00:00.123456', MD5(seq)"
    UPD="UPDATE t SET a = a + 1" ;;
  realistic)
    COLS="id BIGINT PRIMARY KEY, user_id BIGINT NOT NULL, kind VARCHAR(32) NOT NULL, amount DECIMAL(12,2) NOT NULL, payload JSON NOT NULL, created_at DATETIME(6) NOT NULL"
    ROW="seq, seq % 50000, ELT(seq % 4 + 1, 'order_placed', 'order_refunded', 'user_signed_up', 'session_started'), (seq % 100000) / 100, JSON_OBJECT('sku', CONCAT('SKU-', seq % 9000), 'qty', seq % 7 + 1, 'ref', MD5(seq), 'ua', 'Mozilla/5.0 (X11; Linux x86_64)', 'tags', JSON_ARRAY('web', 'eu')), '2024-01-01 00:00:00.123456'"
    UPD="UPDATE t SET amount = amount + 1" ;;
  *) echo "BENCH_SHAPE must be narrow or realistic" >&2; exit 2 ;;
esac

if [ -z "${LOGTIDE_BIN:-}" ]; then
  cargo build --release --bin logtide >&2
  LOGTIDE_BIN=target/release/logtide
fi
BIN=$(realpath "$LOGTIDE_BIN")
for t in mariadbd mariadb mariadb-install-db mariadb-binlog /usr/bin/time; do
  command -v "$t" >/dev/null || { echo "missing $t (apt-get install mariadb-server mariadb-client time)" >&2; exit 1; }
done

ROOT=$(mktemp -d /tmp/logtide-bench-mysql.XXXXXX)
# Outputs go to tmpfs, the issue's method (the tools' work is measured, not the disk's);
# BENCH_OUT=dir puts them elsewhere.
OUT=$(mktemp -d "${BENCH_OUT:-/dev/shm}/logtide-bench-mysql-out.XXXXXX")
chmod 777 "$OUT"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
SOCK=$ROOT/sock
export LOGTIDE_BENCH_PW=bench-pw
cleanup() {
  [ -f "$ROOT/pid" ] && kill -9 "$(cat "$ROOT/pid")" 2>/dev/null || true
  rm -rf "$OUT"
  [ -n "${KEEP:-}" ] || rm -rf "$ROOT"
}
trap cleanup EXIT

mkdir -p "$ROOT/tmp"
mariadb-install-db --no-defaults --datadir="$ROOT/data" --tmpdir="$ROOT/tmp" \
  --auth-root-authentication-method=normal --user=root --skip-test-db >"$ROOT/install.log" 2>&1
mariadbd --no-defaults --datadir="$ROOT/data" --tmpdir="$ROOT/tmp" --port="$PORT" --socket="$SOCK" \
  --pid-file="$ROOT/pid" --log-bin="$ROOT/data/mysql-bin" --log-error="$ROOT/err.log" \
  --server-id=1 --user=root --bind-address=127.0.0.1 --skip-name-resolve --binlog-format=ROW --binlog-row-image=FULL \
  --binlog-row-metadata=FULL --max-allowed-packet=256M --max-binlog-size=1G \
  --innodb-buffer-pool-size=512M --innodb-log-file-size=512M --innodb-flush-log-at-trx-commit=2 \
  --sync-binlog=0 --character-set-server=utf8mb4 >/dev/null 2>&1 &
disown # killed by cleanup: no "Killed" report from the shell
for _ in $(seq 1 300); do
  mariadb --no-defaults --socket="$SOCK" -uroot -e 'SELECT 1' >/dev/null 2>&1 && break
  sleep 0.1
done
sql() { mariadb --no-defaults --socket="$SOCK" -uroot --batch --skip-column-names "$@"; }
sql -e "CREATE USER 'logtide'@'%' IDENTIFIED VIA mysql_native_password USING PASSWORD('$LOGTIDE_BENCH_PW');
        GRANT REPLICATION SLAVE, BINLOG MONITOR, SELECT ON *.* TO 'logtide'@'%';
        CREATE DATABASE bench CHARACTER SET utf8mb4;
        CREATE TABLE bench.t ($COLS);
        CREATE TABLE bench.s ($COLS);"
echo "row shape: $SHAPE ($(sql -D bench -e "SELECT ROUND(AVG(LENGTH(CONCAT_WS(',', $ROW)))) FROM seq_1_to_1000") bytes as text)"
binlog_pos() { sql -e 'SHOW MASTER STATUS' | awk '{print $1" "$2}'; }

config() { # $1 = dir
  cat >"$1/logtide.toml" <<EOF
[state]
path = "$1/state"

[pipeline]
max_batch_events = ${BATCH:-4096}
channel_capacity = ${CHANNEL:-16384}

[[sources]]
kind = "mysql"
name = "bench"
host = "127.0.0.1"
port = $PORT
user = "logtide"
password_env = "LOGTIDE_BENCH_PW"
heartbeat = "1s"
backfill = "never"
tables = { include = ["bench.*"] }

[[sinks]]
kind = "file"
name = "out"
path = "$OUT/out.jsonl"
fsync = false
EOF
}

workload() { # $1 = name
  case $1 in
    bulk)
      for ((i = 0; i < ROWS / 1000; i++)); do
        echo "INSERT INTO bench.t SELECT $ROW FROM seq_$((i * 1000 + 1))_to_$((i * 1000 + 1000));"
      done | sql -D bench
      echo "$ROWS" ;;
    update)
      sql -D bench -e "$UPD"
      echo "$ROWS" ;;
    single)
      for ((i = 1; i <= SINGLE; i++)); do
        echo "INSERT INTO bench.s SELECT $ROW FROM seq_${i}_to_${i};"
      done | sql -D bench
      echo "$SINGLE" ;;
  esac
}

median() { sort -n | awk '{a[NR]=$1} END {if (NR==0) print "nan"; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
# /usr/bin/time -v output -> "seconds kb cpu_seconds"
timing() {
  awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,p,":"); s=(n==3)?p[1]*3600+p[2]*60+p[3]:p[1]*60+p[2]}
              /User time \(seconds\)|System time \(seconds\)/ {cpu+=$2}
              /Maximum resident set size/ {kb=$2} END {print s, kb, cpu}' "$1"
}

printf '%-8s %10s %14s %10s %14s %10s %7s\n' workload events "logtide ev/s" "RSS MB" "binlog ev/s" "RSS MB" ratio
for w in $WORKLOADS; do
  sql -e 'FLUSH BINARY LOGS'
  read -r FILE START < <(binlog_pos)
  # Seed a checkpoint at the start: a fresh source checkpoints the current end at once.
  TPL=$ROOT/tpl-$w
  mkdir -p "$TPL"
  config "$TPL"
  "$BIN" run --config "$TPL/logtide.toml" --until "$FILE:$START" >"$TPL/log" 2>&1
  EXPECTED=$(workload "$w")
  read -r _ END < <(binlog_pos)
  sql -e 'FLUSH BINARY LOGS'
  LT=() LR=() LC=() MT=() MR=() MC=()
  for r in $(seq 1 "$RUNS"); do
    D=$ROOT/run-$w-$r
    mkdir -p "$D"
    config "$D"
    cp -r "$TPL/state" "$D/state"
    rm -f "$OUT/out.jsonl"
    t0=$(date +%s.%N)
    WRAP=()
    [ -n "${PERF:-}" ] && WRAP=(perf record -g -o "$PERF.$w.$r" --)
    /usr/bin/time -v "${WRAP[@]}" "$BIN" run --config "$D/logtide.toml" --until "$FILE:$END" >"$D/log" 2>"$D/time"
    t1=$(date +%s.%N)
    GOT=$(wc -l <"$OUT/out.jsonl")
    if [ "$GOT" = "$EXPECTED" ]; then
      read -r _ kb cpu < <(timing "$D/time")
      s=$(echo "$t1 - $t0" | bc -l)
      LT+=("$s") LR+=("$kb") LC+=("$cpu")
    else
      echo "logtide run $w/$r: $GOT events, expected $EXPECTED (rejected); log: $(tail -3 "$D/log")" >&2
    fi
    rm -f "$OUT/out.jsonl"
    t0=$(date +%s.%N)
    /usr/bin/time -v mariadb-binlog --no-defaults --read-from-remote-server --host=127.0.0.1 --port="$PORT" \
      --user=logtide --password="$LOGTIDE_BENCH_PW" --base64-output=decode-rows -v \
      --start-position="$START" --stop-position="$END" "$FILE" >"$OUT/binlog.txt" 2>"$D/time2"
    t1=$(date +%s.%N)
    GOT=$(grep -cE '^### (INSERT INTO|UPDATE|DELETE FROM)' "$OUT/binlog.txt" || true)
    if [ "$GOT" = "$EXPECTED" ]; then
      read -r _ kb cpu < <(timing "$D/time2")
      s=$(echo "$t1 - $t0" | bc -l)
      MT+=("$s") MR+=("$kb") MC+=("$cpu")
    else
      echo "mariadb-binlog run $w/$r: $GOT events, expected $EXPECTED (rejected)" >&2
    fi
    rm -f "$OUT/binlog.txt"
  done
  lt=$(printf '%s\n' "${LT[@]:-}" | grep . | median)
  mt=$(printf '%s\n' "${MT[@]:-}" | grep . | median)
  lr=$(printf '%s\n' "${LR[@]:-}" | grep . | median)
  mr=$(printf '%s\n' "${MR[@]:-}" | grep . | median)
  awk -v w="$w" -v n="$EXPECTED" -v lt="$lt" -v mt="$mt" -v lr="$lr" -v mr="$mr" 'BEGIN {
    le = (lt > 0) ? n / lt : 0; me = (mt > 0) ? n / mt : 0;
    printf "%-8s %10d %14.0f %10.1f %14.0f %10.1f %7.2f\n", w, n, le, lr / 1024, me, mr / 1024, (me > 0) ? le / me : 0 }'
  case $w in
    bulk) what="$EXPECTED inserts, 1k/tx" ;;
    update) what="1 tx updating $EXPECTED" ;;
    single) what="$EXPECTED single-row txs" ;;
  esac
  bench_result "MariaDB $SHAPE, $what" logtide "$EXPECTED" "${LT[@]}" -- "${LR[@]}" -- "${LC[@]}"
  bench_result "MariaDB $SHAPE, $what" "mariadb-binlog -v" "$EXPECTED" "${MT[@]}" -- "${MR[@]}" -- "${MC[@]}"
done
