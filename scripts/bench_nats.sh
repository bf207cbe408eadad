#!/usr/bin/env bash
# NATS JetStream end to end against the physical limit: logtide streaming a MariaDB binlog
# range into a JetStream stream, against a bare async-nats publisher (benches/nats_reference.rs)
# sending the same messages (the event JSON logtide produced for that range: same payload
# sizes, same subject, same Nats-Msg-Id headers) the same way (pipeline-sized batches, at
# most NATS_ACK_WINDOW acks outstanding, every ack of a batch in before the next batch).
# Target: logtide >= 0.8x the bare publisher, with every message acknowledged before its
# checkpoint (logtide's pipeline stores a checkpoint only after the sink's acks).
#
# Setup: a private mariadbd and a private `nats-server -js` (own store directory, file
# storage unless NATS_STORAGE=memory). Workload: ROWS inserts in 1000-row transactions into
# one table, ~200-byte rows. A template checkpoint is seeded at the start of the range; one
# untimed logtide run writes the range's events to a JSONL file (the reference's payloads).
# Each timed run starts from an empty stream (deleted and re-created, so no message is
# acked as a duplicate of the previous run) and counts only if the stream then holds exactly
# ROWS messages. Runs are interleaved (logtide, reference, logtide, ...); min/median/max are
# reported, with peak RSS and CPU per message of each side and of nats-server.
# The reference's time is its publish phase only (connected, payloads in memory);
# logtide's is its whole run (start, connect, read the binlog, encode, publish, checkpoint).
#
#   scripts/bench_nats.sh                    (ROWS=1000000 RUNS=3)
#   ROWS=2000 RUNS=1 scripts/bench_nats.sh   (a smoke run)
# LOGTIDE_BIN=path skips logtide's release build; BATCH sets pipeline.max_batch_events and
# the reference's batch alike (default 4096); KEEP=1 keeps the work directory.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench_lib.sh
ROWS=${ROWS:-1000000}
RUNS=${RUNS:-3}
BATCH=${BATCH:-4096}
STORAGE=${NATS_STORAGE:-file}
case "$STORAGE" in file | memory) ;; *) echo "NATS_STORAGE must be file or memory" >&2; exit 2 ;; esac
NATS_SERVER=$(command -v nats-server || echo /usr/sbin/nats-server)
for t in mariadbd mariadb mariadb-install-db /usr/bin/time "$NATS_SERVER"; do
  command -v "$t" >/dev/null || { echo "missing $t (apt-get install mariadb-server mariadb-client time nats-server)" >&2; exit 1; }
done

if [ -z "${LOGTIDE_BIN:-}" ]; then
  cargo build --release --bin logtide >&2
  LOGTIDE_BIN=target/release/logtide
fi
BIN=$(realpath "$LOGTIDE_BIN")
REF=$(cargo bench --bench nats_reference --no-run --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "nats_reference":
        print(m["executable"])')
[ -x "$REF" ] || { echo "could not build benches/nats_reference.rs: run cargo bench --bench nats_reference --no-run" >&2; exit 1; }

ROOT=$(mktemp -d /tmp/logtide-bench-nats.XXXXXX)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
NPORT=$(free_port)
SOCK=$ROOT/sock
URL=nats://127.0.0.1:$NPORT
STREAM=LOGTIDE_BENCH
SUBJECT=bench.t
export LOGTIDE_BENCH_PW=bench-pw
NATS_PID=
cleanup() {
  [ -f "$ROOT/pid" ] && kill -9 "$(cat "$ROOT/pid")" 2>/dev/null || true
  [ -n "$NATS_PID" ] && kill "$NATS_PID" 2>/dev/null || true
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
"$NATS_SERVER" -js -a 127.0.0.1 -p "$NPORT" -sd "$ROOT/nats" >"$ROOT/nats.log" 2>&1 &
NATS_PID=$!
disown
sql() { mariadb --no-defaults --socket="$SOCK" -uroot --batch --skip-column-names "$@"; }
for _ in $(seq 1 300); do
  sql -e 'SELECT 1' >/dev/null 2>&1 && "$REF" reset "$URL" "$STREAM" 'bench.>' "$STORAGE" 2>/dev/null && break
  sleep 0.1
done
sql -e 'SELECT 1' >/dev/null || { echo "mariadbd did not start: $(tail -3 "$ROOT/err.log")" >&2; exit 1; }
"$REF" reset "$URL" "$STREAM" 'bench.>' "$STORAGE" || { echo "nats-server did not start: $(tail -3 "$ROOT/nats.log")" >&2; exit 1; }
sql -e "CREATE USER 'logtide'@'%' IDENTIFIED VIA mysql_native_password USING PASSWORD('$LOGTIDE_BENCH_PW');
        GRANT REPLICATION SLAVE, BINLOG MONITOR, SELECT ON *.* TO 'logtide'@'%';
        CREATE DATABASE bench CHARACTER SET utf8mb4;
        CREATE TABLE bench.t (id BIGINT PRIMARY KEY, a INT, b VARCHAR(100), c DOUBLE, d DATETIME(6), e VARCHAR(40));"
binlog_pos() { sql -e 'SHOW MASTER STATUS' | awk '{print $1" "$2}'; }

config() { # $1 = dir, $2 = file | nats
  local sink
  if [ "$2" = file ]; then
    sink="kind = \"file\"
path = \"$1/out.jsonl\"
fsync = false"
  else
    sink="kind = \"nats\"
url = \"$URL\"
subject = \"bench.{table}\"
stream = { name = \"$STREAM\", subjects = [\"bench.>\"], storage = \"$STORAGE\" }"
  fi
  cat >"$1/logtide.toml" <<EOF
[state]
path = "$1/state"

[pipeline]
max_batch_events = $BATCH

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
name = "out"
$sink
EOF
}

# CPU seconds (user + system) nats-server has used so far.
server_cpu() { awk '{print ($14 + $15) / 100}' "/proc/$NATS_PID/stat"; }
stream_count() { "$REF" count "$URL" "$STREAM"; }

sql -e 'FLUSH BINARY LOGS'
read -r FILE START < <(binlog_pos)
TPL=$ROOT/tpl
mkdir -p "$TPL"
config "$TPL" file
"$BIN" run --config "$TPL/logtide.toml" --until "$FILE:$START" >"$TPL/log" 2>&1
for ((i = 0; i < ROWS / 1000; i++)); do
  echo "INSERT INTO bench.t SELECT seq, seq % 1000, REPEAT('x', 90), seq * 1.5, '2024-01-01 00:00:00.123456', MD5(seq) FROM seq_$((i * 1000 + 1))_to_$((i * 1000 + 1000));"
done | sql -D bench
EXPECTED=$((ROWS / 1000 * 1000))
read -r _ END < <(binlog_pos)
sql -e 'FLUSH BINARY LOGS'

# The reference's payloads: the range's events as logtide encodes them.
CAP=$ROOT/capture
mkdir -p "$CAP"
config "$CAP" file
cp -r "$TPL/state" "$CAP/state"
"$BIN" run --config "$CAP/logtide.toml" --until "$FILE:$END" >"$CAP/log" 2>&1
GOT=$(wc -l <"$CAP/out.jsonl")
[ "$GOT" = "$EXPECTED" ] || { echo "capture run: $GOT events, expected $EXPECTED; log: $(tail -3 "$CAP/log")" >&2; exit 1; }
echo "workload: $EXPECTED inserts in 1000-row transactions, $(awk '{s += length($0)} END {printf "%.0f", s / NR}' "$CAP/out.jsonl") B per event JSON;" \
  "stream storage: $STORAGE; batch: $BATCH; $("$NATS_SERVER" --version)"

LT=() LR=() LC=() LS=() RT=() RR=() RC=() RS=()
for r in $(seq 1 "$RUNS"); do
  D=$ROOT/run-$r
  mkdir -p "$D"
  config "$D" nats
  cp -r "$TPL/state" "$D/state"
  "$REF" reset "$URL" "$STREAM" 'bench.>' "$STORAGE"
  s0=$(server_cpu)
  t0=$(date +%s.%N)
  /usr/bin/time -f "%M %U %S" -o "$D/time" "$BIN" --log-level warn run --config "$D/logtide.toml" --until "$FILE:$END" >"$D/log" 2>&1
  t1=$(date +%s.%N)
  s1=$(server_cpu)
  GOT=$(stream_count)
  if [ "$GOT" = "$EXPECTED" ]; then
    read -r kb u s < <(tail -1 "$D/time")
    LT+=("$(echo "$t1 - $t0" | bc -l)") LR+=("$kb") LC+=("$(echo "$u + $s" | bc -l)") LS+=("$(echo "$s1 - $s0" | bc -l)")
  else
    echo "logtide run $r: the stream holds $GOT messages, expected $EXPECTED (rejected); log: $(tail -3 "$D/log")" >&2
  fi

  "$REF" reset "$URL" "$STREAM" 'bench.>' "$STORAGE"
  s0=$(server_cpu)
  BENCH_BATCH=$BATCH /usr/bin/time -f "%M %U %S" -o "$D/time2" "$REF" publish "$URL" "$CAP/out.jsonl" "$SUBJECT" >"$D/ref.out"
  s1=$(server_cpu)
  GOT=$(stream_count)
  if [ "$GOT" = "$EXPECTED" ]; then
    read -r _ n secs cpu < <(grep '^REF ' "$D/ref.out")
    read -r kb _ < <(tail -1 "$D/time2")
    RT+=("$secs") RR+=("$kb") RC+=("$cpu") RS+=("$(echo "$s1 - $s0" | bc -l)")
  else
    echo "reference run $r: the stream holds $GOT messages, expected $EXPECTED (rejected)" >&2
  fi
done

W="NATS JetStream end to end ($STORAGE storage), MariaDB $EXPECTED inserts"
lres=$(bench_result "$W" logtide "$EXPECTED" "${LT[@]}" -- "${LR[@]}" -- "${LC[@]}")
rres=$(bench_result "$W" "bare async-nats publisher" "$EXPECTED" "${RT[@]}" -- "${RR[@]}" -- "${RC[@]}")
server_us() { printf '%s\n' "$@" | awk -v n="$EXPECTED" 'NF {s += $1; k++} END {if (k) printf "%.2f", s * 1e6 / n / k; else print "-"}'; }
printf '%-30s %12s %12s %12s %8s %10s %12s\n' tool "min msg/s" "median" "max" "RSS MB" "cpu us/msg" "server us/msg"
for x in "$lres|$(server_us "${LS[@]}")" "$rres|$(server_us "${RS[@]}")"; do
  IFS='|' read -r _ _ tool lo med hi rss cpu srv <<<"$x"
  printf '%-30s %12s %12s %12s %8s %10s %12s\n' "$tool" "$lo" "$med" "$hi" "$rss" "$cpu" "$srv"
done
IFS='|' read -r _ _ _ _ lmed _ <<<"$lres"
IFS='|' read -r _ _ _ _ rmed _ <<<"$rres"
awk -v l="$lmed" -v r="$rmed" 'BEGIN { if (l + 0 > 0 && r + 0 > 0) printf "ratio logtide / bare publisher (medians) = %.2f (target >= 0.80)\n", l / r }'
# The server's side of the limit: what one core of nats-server stores per second at its CPU
# cost per message in the reference runs (the stream's ingest runs on about one core).
srv=$(server_us "${RS[@]}")
awk -v s="$srv" 'BEGIN { if (s + 0 > 0) printf "nats-server: %.2f us of CPU per stored message in the reference runs, i.e. at most ~%.0f msg/s per core it gets\n", s, 1e6 / s }'
echo "$lres"
echo "$rres"
