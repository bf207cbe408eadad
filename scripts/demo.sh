#!/usr/bin/env bash
# The logtide demo: private PostgreSQL and MariaDB instances (installed if missing), a sample
# shop schema with a live write workload, and logtide streaming every change from both to
# stdout. Ctrl-C stops it cleanly (logtide stores its checkpoint, the servers are removed).
#
#   scripts/demo.sh [--max-events N]     (extra arguments go to `logtide run`)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh >&2
echo "building logtide (release)..." >&2
cargo build --release --quiet
LOGTIDE=$PWD/target/release/logtide
D=${LOGTIDE_DEMO_DIR:-/tmp/logtide-demo}
PGPORT=${LOGTIDE_DEMO_PG_PORT:-55710}
MYPORT=${LOGTIDE_DEMO_MY_PORT:-55711}
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)

cleanup() {
  [ -n "${WORKLOAD:-}" ] && kill "$WORKLOAD" 2>/dev/null || true
  runuser -u postgres -- "$PGBIN/pg_ctl" -D "$D/pg" -m immediate stop >/dev/null 2>&1 || true
  [ -f "$D/my.pid" ] && kill "$(cat "$D/my.pid")" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$D"
}
trap cleanup EXIT
cleanup
mkdir -p "$D"; chmod 777 "$D"

echo "starting private PostgreSQL on port $PGPORT and MariaDB on port $MYPORT..." >&2
runuser -u postgres -- "$PGBIN/initdb" -D "$D/pg" -A trust -U postgres >/dev/null
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$D/pg" -l "$D/pg.log" -w \
  -o "-p $PGPORT -k $D -c listen_addresses=127.0.0.1 -c wal_level=logical" start >/dev/null
PSQL=(psql -X -q -h 127.0.0.1 -p "$PGPORT" -U postgres -v ON_ERROR_STOP=1)
"${PSQL[@]}" -d postgres -c "CREATE DATABASE shop"
"${PSQL[@]}" -d shop <<'SQL'
CREATE TABLE customers (id serial PRIMARY KEY, email text NOT NULL, plan text, created_at timestamptz DEFAULT now());
CREATE TABLE orders (id serial PRIMARY KEY, customer_id int REFERENCES customers, total numeric(10,2), status text);
INSERT INTO customers (email, plan) SELECT 'user' || g || '@example.com', 'free' FROM generate_series(1, 20) g;
SQL

mariadb-install-db --no-defaults --datadir="$D/my" --auth-root-authentication-method=normal >"$D/my-install.log" 2>&1
mariadbd --no-defaults --datadir="$D/my" --port="$MYPORT" --bind-address=127.0.0.1 --socket="$D/my.sock" \
  --pid-file="$D/my.pid" --log-bin="$D/my/binlog" --binlog-format=ROW --binlog-row-image=FULL \
  --binlog-row-metadata=FULL --server-id=1 --skip-name-resolve --user=root >"$D/my.log" 2>&1 &
for _ in $(seq 1 300); do mariadb --no-defaults -S "$D/my.sock" -uroot -e 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.1; done
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

# The live workload: a few changes per second on both databases.
(
  i=0
  while true; do
    i=$((i + 1))
    "${PSQL[@]}" -d shop -c "INSERT INTO orders (customer_id, total, status) VALUES ($((i % 20 + 1)), $((i % 90 + 10)).99, 'new');
      UPDATE orders SET status = 'paid' WHERE id = $((i > 1 ? i - 1 : 1)); UPDATE customers SET plan = 'pro' WHERE id = $((i % 20 + 1))" >/dev/null 2>&1 || exit 0
    "${MY[@]}" -e "UPDATE shop.products SET stock = stock - 1 WHERE id = $((i % 2 + 1)); INSERT INTO shop.products (name, price, stock) VALUES ('item $i', $((i % 50)).25, $i)" >/dev/null 2>&1 || exit 0
    sleep 0.5
  done
) &
WORKLOAD=$!

echo "logtide is streaming (events on stdout, logs on stderr); Ctrl-C stops it" >&2
"$LOGTIDE" run --config "$D/logtide.toml" "$@"
