#!/usr/bin/env bash
# The logtide demo: private PostgreSQL and MariaDB instances, a sample shop schema with a live
# write workload (inserts, updates and deletes on both databases, running until stopped), and
# logtide streaming every change from both to stdout (logs on stderr). Ctrl-C stops it cleanly:
# logtide stores its checkpoint, the workload and both servers stop, the temporary directory goes.
#
#   scripts/demo.sh [--max-events N]     (extra arguments go to `logtide run`; --max-events
#                                         counts per source)
#
# What it needs and touches:
# - the database servers and clients, installed with apt-get when missing
#   (`scripts/install-deps.sh --demo`: PostgreSQL, MariaDB; it says what it installs and needs
#   root or sudo for that);
# - run as root, the PostgreSQL server runs as the `postgres` user (runuser), as PostgreSQL
#   refuses to run as root;
# - a new temporary directory (mktemp, under $LOGTIDE_DEMO_TMP or /tmp), removed at the end;
# - ports 55710 (PostgreSQL) and 55711 (MariaDB) on 127.0.0.1; override with
#   LOGTIDE_DEMO_PG_PORT and LOGTIDE_DEMO_MY_PORT;
# - the release build in ${CARGO_TARGET_DIR:-target}.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh --demo >&2
echo "building logtide (release)..." >&2
cargo build --release --quiet
LOGTIDE=${CARGO_TARGET_DIR:-$PWD/target}/release/logtide
[ -x "$LOGTIDE" ] || { echo "demo: no logtide binary at $LOGTIDE" >&2; exit 1; }
PGPORT=${LOGTIDE_DEMO_PG_PORT:-55710}
MYPORT=${LOGTIDE_DEMO_MY_PORT:-55711}
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
for p in "$PGPORT" "$MYPORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    echo "demo: port $p is in use; set LOGTIDE_DEMO_PG_PORT / LOGTIDE_DEMO_MY_PORT to free ports" >&2
    exit 1
  fi
done
D=$(mktemp -d "${LOGTIDE_DEMO_TMP:-/tmp}/logtide-demo.XXXXXX")
chmod 755 "$D"
if [ "$(id -u)" -eq 0 ]; then
  chown postgres "$D"
  as_pg() { runuser -u postgres -- "$@"; }
  MYUSER=(--user=root)
else
  as_pg() { "$@"; }
  MYUSER=()
fi

cleanup() {
  [ -n "${WORKLOAD:-}" ] && kill "$WORKLOAD" 2>/dev/null || true
  as_pg "$PGBIN/pg_ctl" -D "$D/pg" -m immediate stop >/dev/null 2>&1 || true
  [ -f "$D/my.pid" ] && kill "$(cat "$D/my.pid")" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$D"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "starting private PostgreSQL on port $PGPORT and MariaDB on port $MYPORT in $D..." >&2
as_pg "$PGBIN/initdb" -D "$D/pg" -A trust -U postgres >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$D/pg" -l "$D/pg/server.log" -w \
  -o "-p $PGPORT -k $D/pg -c listen_addresses=127.0.0.1 -c wal_level=logical" start >/dev/null
PSQL=(psql -X -q -h 127.0.0.1 -p "$PGPORT" -U postgres -v ON_ERROR_STOP=1)
"${PSQL[@]}" -d postgres -c "CREATE DATABASE shop"
"${PSQL[@]}" -d shop <<'SQL'
CREATE TABLE customers (id serial PRIMARY KEY, email text NOT NULL, plan text, created_at timestamptz DEFAULT now());
CREATE TABLE orders (id serial PRIMARY KEY, customer_id int REFERENCES customers, total numeric(10,2), status text);
INSERT INTO customers (email, plan) SELECT 'user' || g || '@example.com', 'free' FROM generate_series(1, 20) g;
SQL

mariadb-install-db --no-defaults --datadir="$D/my" --auth-root-authentication-method=normal "${MYUSER[@]}" >"$D/my-install.log" 2>&1
mariadbd --no-defaults --datadir="$D/my" --port="$MYPORT" --bind-address=127.0.0.1 --socket="$D/my.sock" \
  --pid-file="$D/my.pid" --log-bin="$D/my/binlog" --binlog-format=ROW --binlog-row-image=FULL \
  --binlog-row-metadata=FULL --server-id=1 --skip-name-resolve "${MYUSER[@]}" >"$D/my.log" 2>&1 &
up=""
for _ in $(seq 1 300); do
  mariadb --no-defaults -S "$D/my.sock" -uroot -e 'SELECT 1' >/dev/null 2>&1 && { up=1; break; }
  sleep 0.1
done
[ -n "$up" ] || { echo "demo: MariaDB did not start; its log:" >&2; tail -20 "$D/my.log" >&2; exit 1; }
MY=(mariadb --no-defaults -S "$D/my.sock" -uroot)
"${MY[@]}" <<'SQL'
DELETE FROM mysql.global_priv WHERE User = '';
FLUSH PRIVILEGES;
CREATE DATABASE shop CHARACTER SET utf8mb4;
CREATE USER 'logtide'@'%' IDENTIFIED VIA mysql_native_password USING PASSWORD('demo-pw');
GRANT REPLICATION SLAVE, BINLOG MONITOR, SELECT ON *.* TO 'logtide'@'%';
CREATE TABLE shop.products (id int AUTO_INCREMENT PRIMARY KEY, name varchar(100), price decimal(10,2), stock int UNSIGNED);
INSERT INTO shop.products (name, price, stock) VALUES ('kettle', 24.90, 10), ('mug', 6.50, 100);
SQL

cat > "$D/logtide.toml" <<CFG
[state]
path = "$D/state"

[[sources]]
kind = "postgres"
name = "pg_shop"
port = $PGPORT
user = "postgres"
database = "shop"
sslmode = "disable"

[[sources]]
kind = "mysql"
name = "maria_shop"
port = $MYPORT
user = "logtide"
password_env = "LOGTIDE_DEMO_MYSQL_PASSWORD"
tables = { include = ["shop.*"] }

[[sinks]]
kind = "stdout"
CFG
export LOGTIDE_DEMO_MYSQL_PASSWORD=demo-pw

# The live workload: a few changes per second on both databases, until the demo stops. Every
# statement keeps the data valid forever (stock is restocked before it could go below 0, old
# rows are deleted), and a failing statement stops the demo loudly instead of going quiet.
(
  i=0
  while true; do
    i=$((i + 1))
    "${PSQL[@]}" -d shop -c "INSERT INTO orders (customer_id, total, status) VALUES ($((i % 20 + 1)), $((i % 90 + 10)).99, 'new');
      UPDATE orders SET status = 'paid' WHERE id = (SELECT max(id) - 1 FROM orders);
      UPDATE customers SET plan = CASE plan WHEN 'free' THEN 'pro' ELSE 'free' END WHERE id = $((i % 20 + 1));
      DELETE FROM orders WHERE id = (SELECT max(id) - 5 FROM orders)" >/dev/null 2>"$D/workload.err" \
      || { echo "demo workload (PostgreSQL) failed: $(cat "$D/workload.err")" >&2; exit 1; }
    "${MY[@]}" -e "UPDATE shop.products SET stock = IF(stock > 0, stock - 1, 100) WHERE id = $((i % 2 + 1));
      INSERT INTO shop.products (name, price, stock) VALUES ('item $i', $((i % 50)).25, $i);
      DELETE FROM shop.products WHERE name = 'item $((i - 3))'" >/dev/null 2>"$D/workload.err" \
      || { echo "demo workload (MariaDB) failed: $(cat "$D/workload.err")" >&2; exit 1; }
    sleep 0.3
  done
) &
WORKLOAD=$!

echo "logtide is streaming (events on stdout, logs on stderr); Ctrl-C stops it" >&2
"$LOGTIDE" run --config "$D/logtide.toml" "$@"
