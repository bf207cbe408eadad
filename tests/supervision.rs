//! Supervision against real servers: a source never stops silently. Server restarts
//! (MySQL 20 times in a row), servers down at start, a connection black-holed by a proxy,
//! permanent errors introduced while running (exit 3, or `/health` 503 with
//! `on_source_failure = "keep_running"`), and a table dropped during a backfill — for
//! PostgreSQL, MySQL and query mode over both, next to a healthy second source.

use crate::common::blackhole::Blackhole;
use crate::common::mariadb::{self, MariaServer};
use crate::common::pg::{self, PgServer};
use crate::common::port::free_port;
use crate::common::run::{logs, sigterm, spawn_run, wait_exit, wait_until, Workdir};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

fn env() -> Vec<(&'static str, &'static str)> {
    vec![
        (pg::PASSWORD_ENV, pg::PASSWORD),
        (mariadb::PASSWORD_ENV, mariadb::PASSWORD),
    ]
}

fn unique(name: &str) -> String {
    format!("sv{name}_{}", std::process::id())
}

/// Writes the config: fast reconnects, `[admin]` on `admin`, `pipeline_extra` lines, then
/// the `[[sources]]` tables (and the workdir's file sink, shared by every source).
fn write(w: &Workdir, admin: u16, pipeline_extra: &str, sources: &str) {
    w.write_config(&format!(
        "[pipeline]\nreconnect_initial_backoff = \"100ms\"\nreconnect_max_backoff = \"500ms\"\n{pipeline_extra}\n\n\
         [admin]\nlisten = \"127.0.0.1:{admin}\"\nwal_check_interval = \"1s\"\n\n{sources}"
    ));
}

/// One HTTP request to the admin endpoint; `None` when nothing answers.
fn http(port: u16, method: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// `GET /sources` as `name -> snapshot`.
fn sources(port: u16) -> std::collections::BTreeMap<String, serde_json::Value> {
    let Some((200, body)) = http(port, "GET", "/sources") else {
        return Default::default();
    };
    let all: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap_or_default();
    all.into_iter()
        .filter_map(|s| Some((s["name"].as_str()?.to_owned(), s)))
        .collect()
}

fn state(port: u16, source: &str) -> String {
    sources(port)
        .get(source)
        .and_then(|s| s["state"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Waits until every named source reports `streaming`.
fn wait_streaming(w: &Workdir, admin: u16, names: &[&str]) {
    assert!(
        wait_until(WAIT, || names
            .iter()
            .all(|n| state(admin, n) == "streaming")),
        "sources not streaming: {:?}\n{}",
        sources(admin),
        logs(w)
    );
}

/// Ids of the row events (`c`, `r`) source `source` delivered for table `table`.
fn ids(w: &Workdir, source: &str, table: &str) -> BTreeSet<i64> {
    w.events()
        .iter()
        .filter(|e| e["source"]["name"] == source && e["source"]["table"] == table)
        .filter(|e| e["op"] == "c" || e["op"] == "r")
        .filter_map(|e| e["after"]["id"].as_i64())
        .collect()
}

fn my_ids(server: &MariaServer, db: &str, table: &str) -> BTreeSet<i64> {
    server
        .select(db, &format!("SELECT id FROM {table}"))
        .into_iter()
        .filter_map(|r| r.first().cloned().flatten()?.parse().ok())
        .collect()
}

/// The table's ids, on a new connection (the server may have restarted).
async fn pg_ids(db: &pg::TestDb<'_>, table: &str) -> BTreeSet<i64> {
    db.connect()
        .await
        .query(&format!("SELECT id::bigint FROM {table}"), &[])
        .await
        .expect("select ids")
        .iter()
        .map(|r| r.get::<_, i64>(0))
        .collect()
}

/// Waits until `source` delivered exactly the ids in `want` for `table`.
fn wait_ids(w: &Workdir, source: &str, table: &str, want: &BTreeSet<i64>) {
    wait_ids_within(w, source, table, want, WAIT);
}

/// [`wait_ids`] with a bound of its own.
fn wait_ids_within(w: &Workdir, source: &str, table: &str, want: &BTreeSet<i64>, within: Duration) {
    let mut got = BTreeSet::new();
    let ok = wait_until(within, || {
        got = ids(w, source, table);
        &got == want
    });
    assert!(
        ok,
        "source {source}: missing {:?}, unexpected {:?}\n{}",
        want.difference(&got).collect::<Vec<_>>(),
        got.difference(want).collect::<Vec<_>>(),
        logs(w)
    );
}

fn mysql_query_toml(name: &str, port: u16, db: &str) -> String {
    format!(
        "[[sources]]\nkind = \"query\"\nprotocol = \"mysql\"\nname = \"{name}\"\nhost = \"127.0.0.1\"\n\
         port = {port}\nuser = \"{}\"\npassword_env = \"{}\"\ndatabase = \"{db}\"\nsslmode = \"disable\"\n\
         query = \"SELECT id, v FROM t WHERE id > {{{{cursor}}}}\"\ncursor_column = \"id\"\n\
         key_columns = [\"id\"]\ntable = \"{db}.t\"\ninterval = \"200ms\"\ninitial_cursor = \"-1\"\n",
        mariadb::USER,
        mariadb::PASSWORD_ENV
    )
}

fn pg_query_toml(name: &str, port: u16, db: &str) -> String {
    format!(
        "[[sources]]\nkind = \"query\"\nname = \"{name}\"\nhost = \"127.0.0.1\"\nport = {port}\n\
         user = \"{}\"\npassword_env = \"{}\"\ndatabase = \"{db}\"\nsslmode = \"disable\"\n\
         query = \"SELECT id, v FROM t WHERE id > {{{{cursor}}}}\"\ncursor_column = \"id\"\n\
         key_columns = [\"id\"]\ntable = \"public.t\"\ninterval = \"200ms\"\ninitial_cursor = \"-1\"\n",
        pg::USER,
        pg::PASSWORD_ENV
    )
}

fn alive(child: &mut std::process::Child) -> bool {
    child.try_wait().expect("try_wait").is_none()
}

/// The issue's race: a MySQL source that loses its server must reconnect every time (never
/// "stopped", never exit 0), while a PostgreSQL source in the same process streams on.
/// Rows written while logtide is disconnected arrive, checked against the tables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_restarted_20_times_next_to_a_healthy_postgres_loses_nothing() {
    let my = MariaServer::builder().start();
    let mdb = my.fresh_db();
    my.sql(&mdb, "CREATE TABLE t (id INT PRIMARY KEY, v TEXT)");
    let pdb = PgServer::get().fresh_db();
    pdb.exec("CREATE TABLE t (id int PRIMARY KEY, v text)")
        .await;
    let (my_name, myq_name, pg_name) = (unique("r_my"), unique("r_myq"), unique("r_pg"));
    let w = Workdir::new();
    let admin = free_port();
    write(
        &w,
        admin,
        "",
        &format!(
            "{}\n{}\n{}",
            my.source_toml(&my_name, &mdb),
            mysql_query_toml(&myq_name, my.port(), &mdb),
            pdb.server.source_toml(pdb.name(), &pg_name)
        ),
    );
    let mut child = spawn_run(&w, &[], &env());
    wait_streaming(&w, admin, &[&my_name, &myq_name, &pg_name]);
    let mut pg_next = 0;
    for round in 0..20i64 {
        let base = round * 10;
        my.sql(&mdb, &format!("INSERT INTO t VALUES ({base}, 'up')"));
        // Alternate a clean shutdown and a crash.
        if round % 2 == 0 {
            my.stop();
        } else {
            my.kill9();
        }
        pdb.insert_ids("t", pg_next, pg_next + 5, 5, 1).await;
        pg_next += 5;
        my.start();
        // Written while logtide is still disconnected (it waits its backoff).
        my.sql(
            &mdb,
            &format!(
                "INSERT INTO t VALUES ({}, 'a'), ({}, 'b'); INSERT INTO t VALUES ({}, 'c')",
                base + 1,
                base + 2,
                base + 3
            ),
        );
        assert!(
            alive(&mut child),
            "logtide exited in round {round}\n{}",
            logs(&w)
        );
    }
    let want = my_ids(&my, &mdb, "t");
    assert_eq!(want.len(), 80);
    wait_ids(&w, &my_name, "t", &want);
    wait_ids(&w, &myq_name, "t", &want);
    wait_ids(&w, &pg_name, "t", &pg_ids(&pdb, "t").await);
    assert!(alive(&mut child), "{}", logs(&w));
    let text = logs(&w);
    assert!(text.contains("reconnecting"), "{text}");
    // Neither a stop while the process runs nor a reader error demoted to a clean stop
    // (the issue's `select!` race between the reader's result and the cancel token).
    for demoted in [
        "logtide::service: source stopped",
        "stopped with an error during shutdown",
    ] {
        assert!(
            !text.contains(demoted),
            "{demoted:?} while the process ran:\n{text}"
        );
    }
    assert_eq!(http(admin, "GET", "/health").map(|r| r.0), Some(200));
    sigterm(&child);
    assert_eq!(wait_exit(&mut child, WAIT).code(), Some(0), "{}", logs(&w));
}

/// Every source kind starts while its server is down: it retries (state `reconnecting`
/// with the error, `/health` 200, the process up) and streams once the server is up;
/// then a PostgreSQL restart under query mode and the stream loses nothing either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_source_kind_waits_for_a_server_down_at_start() {
    let pgs = PgServer::start_with(&[]);
    let pdb = pgs.fresh_db();
    pdb.exec("CREATE TABLE t (id int PRIMARY KEY, v text)")
        .await;
    let my = MariaServer::builder().start();
    let mdb = my.fresh_db();
    my.sql(&mdb, "CREATE TABLE t (id INT PRIMARY KEY, v TEXT)");
    pgs.stop();
    my.stop();
    let names = ["d_pg", "d_pgq", "d_my", "d_myq"];
    let w = Workdir::new();
    let admin = free_port();
    write(
        &w,
        admin,
        "",
        &format!(
            "{}\n{}\n{}\n{}",
            pgs.source_toml(pdb.name(), names[0]),
            pg_query_toml(names[1], pgs.port(), pdb.name()),
            my.source_toml(names[2], &mdb),
            mysql_query_toml(names[3], my.port(), &mdb)
        ),
    );
    let mut child = spawn_run(&w, &[], &env());
    let ok = wait_until(WAIT, || {
        let s = sources(admin);
        names.iter().all(|n| {
            s.get(*n).is_some_and(|v| {
                v["state"] == "reconnecting" && v["error"].as_str().is_some_and(|e| !e.is_empty())
            })
        })
    });
    assert!(ok, "{:?}\n{}", sources(admin), logs(&w));
    assert_eq!(http(admin, "GET", "/health").map(|r| r.0), Some(200));
    assert_eq!(http(admin, "GET", "/ready").map(|r| r.0), Some(503));
    assert!(alive(&mut child));
    pgs.start();
    my.start();
    wait_streaming(&w, admin, &names);
    pdb.insert_ids("t", 0, 20, 5, 1).await;
    my.sql(
        &mdb,
        "INSERT INTO t VALUES (1, 'a'), (2, 'b'); INSERT INTO t VALUES (3, 'c')",
    );
    let want_pg = pg_ids(&pdb, "t").await;
    let want_my = my_ids(&my, &mdb, "t");
    wait_ids(&w, names[0], "t", &want_pg);
    wait_ids(&w, names[1], "t", &want_pg);
    wait_ids(&w, names[2], "t", &want_my);
    wait_ids(&w, names[3], "t", &want_my);
    // A PostgreSQL restart mid-stream, with rows written around it.
    pgs.restart();
    pdb.insert_ids("t", 20, 40, 5, 1).await;
    let want_pg = pg_ids(&pdb, "t").await;
    wait_ids(&w, names[0], "t", &want_pg);
    wait_ids(&w, names[1], "t", &want_pg);
    // A MariaDB restart mid-stream: the binlog source and the query source over MySQL.
    my.restart();
    my.sql(&mdb, "INSERT INTO t VALUES (4, 'd'), (5, 'e')");
    let want_my = my_ids(&my, &mdb, "t");
    wait_ids(&w, names[2], "t", &want_my);
    wait_ids(&w, names[3], "t", &want_my);
    assert_eq!(http(admin, "GET", "/health").map(|r| r.0), Some(200));
    sigterm(&child);
    assert_eq!(wait_exit(&mut child, WAIT).code(), Some(0), "{}", logs(&w));
}

/// A credential changed while running (the password rotated, the connection dropped) is
/// permanent: with `keep_running` the failed source shows its error in `/sources`,
/// `/health` answers 503, `logtide_source_up` is 0, an ERROR names it — and the MySQL
/// source next to it keeps streaming. The stopped process exits 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_error_while_running_keeps_the_others_running_with_keep_running() {
    let pdb = PgServer::get().fresh_db();
    pdb.exec("CREATE TABLE t (id int PRIMARY KEY, v text)")
        .await;
    let role = unique("sup_rot");
    pdb.server.psql(
        "postgres",
        &format!("CREATE ROLE {role} LOGIN SUPERUSER PASSWORD 'first-pw'"),
    );
    let my = MariaServer::get();
    let mdb = my.fresh_db();
    my.sql(&mdb, "CREATE TABLE t (id INT PRIMARY KEY, v TEXT)");
    let (pg_name, my_name) = (unique("k_pg"), unique("k_my"));
    let w = Workdir::new();
    let admin = free_port();
    let pg_src = pdb
        .server
        .source_toml(pdb.name(), &pg_name)
        .replace(
            &format!("user = \"{}\"", pg::USER),
            &format!("user = \"{role}\""),
        )
        .replace(pg::PASSWORD_ENV, "SUP_ROTATED_PW");
    write(
        &w,
        admin,
        "on_source_failure = \"keep_running\"",
        &format!("{pg_src}\n{}", my.source_toml(&my_name, &mdb)),
    );
    let mut e = env();
    e.push(("SUP_ROTATED_PW", "first-pw"));
    let mut child = spawn_run(&w, &[], &e);
    wait_streaming(&w, admin, &[&pg_name, &my_name]);
    pdb.insert_ids("t", 0, 5, 5, 1).await;
    wait_ids(&w, &pg_name, "t", &pg_ids(&pdb, "t").await);
    // Rotate the password and drop the role's connections.
    pdb.server.psql(
        "postgres",
        &format!(
            "ALTER ROLE {role} PASSWORD 'second-pw'; \
             SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = '{role}'"
        ),
    );
    assert!(
        wait_until(WAIT, || state(admin, &pg_name) == "failed"),
        "{:?}\n{}",
        sources(admin),
        logs(&w)
    );
    let snap = sources(admin);
    let error = snap[&pg_name]["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(error.contains("password"), "{error}");
    let (code, body) = http(admin, "GET", "/health").expect("health");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains(&pg_name), "{body}");
    let (_, metrics) = http(admin, "GET", "/metrics").expect("metrics");
    assert!(
        metrics.contains(&format!("logtide_source_up{{source=\"{pg_name}\"}} 0")),
        "{metrics}"
    );
    assert!(logs(&w).contains("ERROR"), "{}", logs(&w));
    // The other source goes on.
    my.sql(&mdb, "INSERT INTO t VALUES (1, 'x'), (2, 'y')");
    wait_ids(&w, &my_name, "t", &my_ids(my, &mdb, "t"));
    assert!(alive(&mut child));
    assert_eq!(state(admin, &pg_name), "failed", "failed stays failed");
    sigterm(&child);
    assert_eq!(wait_exit(&mut child, WAIT).code(), Some(3), "{}", logs(&w));
}

/// A privilege revoked while running: the MySQL source fails permanently, the PostgreSQL
/// source next to it checkpoints what it delivered, and the process exits 3 with an
/// ERROR that says which GRANT is missing (the default `on_source_failure = "exit"`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_error_while_running_exits_3_after_the_others_checkpointed() {
    let my = MariaServer::get();
    let mdb = my.fresh_db();
    my.sql(&mdb, "CREATE TABLE t (id INT PRIMARY KEY, v TEXT)");
    let user = unique("sup_priv");
    my.sql(
        "",
        &format!(
            "CREATE USER '{user}'@'%' IDENTIFIED BY 'priv-pw'; \
             GRANT REPLICATION SLAVE, BINLOG MONITOR, SELECT ON *.* TO '{user}'@'%'"
        ),
    );
    let pdb = PgServer::get().fresh_db();
    pdb.exec("CREATE TABLE t (id int PRIMARY KEY, v text)")
        .await;
    let (pg_name, my_name) = (unique("x_pg"), unique("x_my"));
    let w = Workdir::new();
    let admin = free_port();
    let my_src = my
        .source_toml(&my_name, &mdb)
        .replace(
            &format!("user = \"{}\"", mariadb::USER),
            &format!("user = \"{user}\""),
        )
        .replace(mariadb::PASSWORD_ENV, "SUP_PRIV_PW");
    write(
        &w,
        admin,
        "",
        &format!("{my_src}\n{}", pdb.server.source_toml(pdb.name(), &pg_name)),
    );
    let mut e = env();
    e.push(("SUP_PRIV_PW", "priv-pw"));
    let mut child = spawn_run(&w, &[], &e);
    wait_streaming(&w, admin, &[&pg_name, &my_name]);
    pdb.insert_ids("t", 0, 10, 5, 1).await;
    wait_ids(&w, &pg_name, "t", &pg_ids(&pdb, "t").await);
    my.sql(
        "",
        &format!("REVOKE REPLICATION SLAVE ON *.* FROM '{user}'@'%'"),
    );
    let ids_sql = format!("SELECT id FROM information_schema.PROCESSLIST WHERE USER = '{user}'");
    for row in my.select("", &ids_sql) {
        if let Some(Some(id)) = row.first() {
            let _ = my.try_sql("", &format!("KILL {id}"));
        }
    }
    let status = wait_exit(&mut child, WAIT);
    let text = logs(&w);
    assert_eq!(status.code(), Some(3), "{text}");
    assert!(text.contains("ERROR"), "{text}");
    assert!(text.contains("REPLICATION SLAVE"), "{text}");
    // The PostgreSQL source stored a checkpoint covering what it delivered.
    let out = crate::common::run::run_to_end(
        &["status", "--config", w.config().to_str().expect("path")],
        &[],
    );
    let status_text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(status_text.contains(&pg_name), "{status_text}");
    let last_pg = w
        .events()
        .iter()
        .filter(|e| e["source"]["name"] == pg_name.as_str())
        .filter_map(|e| e["source"]["cursor"].as_str().map(str::to_owned))
        .max()
        .expect("pg events");
    let ck = status_text
        .lines()
        .skip_while(|l| !l.contains(&pg_name))
        .find_map(|l| l.split("cursor ").nth(1).map(|c| c.trim().to_owned()))
        .expect("pg checkpoint cursor");
    assert!(ck > last_pg, "checkpoint {ck} must cover {last_pg}");
}

/// A source's TOML with its server port `port` replaced by `proxy`'s.
fn via(proxy: &Blackhole, port: u16, toml: String) -> String {
    toml.replace(
        &format!("port = {port}"),
        &format!("port = {}", proxy.port()),
    )
}

/// A PostgreSQL-side and a MySQL-side source, each connected through a [`Blackhole`].
struct Hole<'a> {
    w: &'a Workdir,
    admin: u16,
    pdb: &'a pg::TestDb<'a>,
    my: &'a MariaServer,
    mdb: &'a str,
    pg: (&'a Blackhole, &'a str),
    mysql: (&'a Blackhole, &'a str),
}

impl Hole<'_> {
    /// Rows flow; then both connections are black-holed and more rows are written: they
    /// arrive within 30 s (the dead connections detected and made anew).
    async fn rows_survive_a_black_hole(&self) {
        let (w, my, mdb) = (self.w, self.my, self.mdb);
        let ((pg_proxy, pg_name), (my_proxy, my_name)) = (self.pg, self.mysql);
        wait_streaming(w, self.admin, &[pg_name, my_name]);
        self.pdb.insert_ids("t", 0, 5, 5, 1).await;
        my.sql(mdb, "INSERT INTO t VALUES (0, 'a')");
        wait_ids(w, pg_name, "t", &pg_ids(self.pdb, "t").await);
        wait_ids(w, my_name, "t", &my_ids(my, mdb, "t"));
        let started = std::time::Instant::now();
        pg_proxy.swallow();
        my_proxy.swallow();
        self.pdb.insert_ids("t", 5, 10, 5, 1).await;
        my.sql(mdb, "INSERT INTO t VALUES (1, 'b'), (2, 'c')");
        wait_ids(w, pg_name, "t", &pg_ids(self.pdb, "t").await);
        wait_ids(w, my_name, "t", &my_ids(my, mdb, "t"));
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(30),
            "detection took {took:?}\n{}",
            logs(w)
        );
    }
}

/// A connection that stops answering without closing (a TCP proxy that black-holes it) is
/// detected within the documented bound (10 s here: 3 × status_interval / heartbeat, at
/// least 10 s) and reconnected, for PostgreSQL and MySQL; rows written meanwhile arrive.
/// A stop while the connections are black-holed still ends promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_connection_is_detected_and_reconnected() {
    let pdb = PgServer::get().fresh_db();
    pdb.exec("CREATE TABLE t (id int PRIMARY KEY, v text)")
        .await;
    let my = MariaServer::get();
    let mdb = my.fresh_db();
    my.sql(&mdb, "CREATE TABLE t (id INT PRIMARY KEY, v TEXT)");
    let pg_proxy = Blackhole::start(pdb.server.port());
    let my_proxy = Blackhole::start(my.port());
    let (pg_name, my_name) = (unique("b_pg"), unique("b_my"));
    let pg_src = via(
        &pg_proxy,
        pdb.server.port(),
        pdb.server.source_toml(pdb.name(), &pg_name),
    );
    let my_src = via(&my_proxy, my.port(), my.source_toml(&my_name, &mdb));
    let w = Workdir::new();
    let admin = free_port();
    write(
        &w,
        admin,
        "",
        &format!("{pg_src}status_interval = \"1s\"\n\n{my_src}"),
    );
    let mut child = spawn_run(&w, &[], &env());
    let hole = Hole {
        w: &w,
        admin,
        pdb: &pdb,
        my,
        mdb: &mdb,
        pg: (&pg_proxy, &pg_name),
        mysql: (&my_proxy, &my_name),
    };
    hole.rows_survive_a_black_hole().await;
    let text = logs(&w);
    assert!(text.contains("stopped answering"), "{text}");
    // Stop while both connections are black-holed again: no hang.
    pg_proxy.swallow();
    my_proxy.swallow();
    let stop = std::time::Instant::now();
    sigterm(&child);
    assert_eq!(
        wait_exit(&mut child, Duration::from_secs(20)).code(),
        Some(0),
        "{}",
        logs(&w)
    );
    assert!(
        stop.elapsed() < Duration::from_secs(15),
        "{:?}",
        stop.elapsed()
    );
}

/// Query mode over both protocols: a connection that stops answering mid-statement is
/// dropped after `query_timeout` and made anew (rows written meanwhile arrive); then a
/// permanent error (the queried column renamed) stops the process with exit 3 and an ERROR
/// that names the source, after the other query source checkpointed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_sources_survive_a_black_hole_and_fail_on_a_permanent_error() {
    let pdb = PgServer::get().fresh_db();
    pdb.exec("CREATE TABLE t (id int PRIMARY KEY, v text)")
        .await;
    let my = MariaServer::get();
    let mdb = my.fresh_db();
    my.sql(&mdb, "CREATE TABLE t (id INT PRIMARY KEY, v TEXT)");
    let pg_proxy = Blackhole::start(pdb.server.port());
    let my_proxy = Blackhole::start(my.port());
    let (pg_name, my_name) = (unique("qb_pg"), unique("qb_my"));
    let timeout = "query_timeout = \"3s\"\n";
    let w = Workdir::new();
    let admin = free_port();
    write(
        &w,
        admin,
        "",
        &format!(
            "{}{timeout}\n{}{timeout}",
            pg_query_toml(&pg_name, pg_proxy.port(), pdb.name()),
            mysql_query_toml(&my_name, my_proxy.port(), &mdb)
        ),
    );
    let mut child = spawn_run(&w, &[], &env());
    let hole = Hole {
        w: &w,
        admin,
        pdb: &pdb,
        my,
        mdb: &mdb,
        pg: (&pg_proxy, &pg_name),
        mysql: (&my_proxy, &my_name),
    };
    hole.rows_survive_a_black_hole().await;
    let text = logs(&w);
    assert!(
        text.matches("got no answer within query_timeout").count() >= 2,
        "{text}"
    );
    assert!(
        pg_proxy.connections() >= 2 && my_proxy.connections() >= 2,
        "no reconnect"
    );
    // A permanent error on the PostgreSQL side: exit 3, the MySQL query source checkpointed.
    pdb.exec("ALTER TABLE t RENAME COLUMN v TO w").await;
    let status = wait_exit(&mut child, WAIT);
    let text = logs(&w);
    assert_eq!(status.code(), Some(3), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("ERROR") && l.contains(&pg_name) && l.contains("\"v\"")),
        "no ERROR naming the source and the column\n{text}"
    );

    // Alone, over MySQL: the same permanent error exits 3 naming the column.
    my.sql(&mdb, "ALTER TABLE t CHANGE v w TEXT");
    let w = Workdir::new();
    write(
        &w,
        free_port(),
        "",
        &mysql_query_toml(&unique("qp_my"), my.port(), &mdb),
    );
    let mut child = spawn_run(&w, &[], &env());
    let status = wait_exit(&mut child, WAIT);
    let text = logs(&w);
    assert_eq!(status.code(), Some(3), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("ERROR") && l.contains("qp_my") && l.contains("'v'")),
        "no ERROR naming the source and the column\n{text}"
    );
}

/// A table dropped while the initial backfill runs is skipped (WARN and
/// `logtide_backfill_tables_skipped_total`); the other tables are backfilled and the stream
/// goes on. PostgreSQL here, MySQL below.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_dropped_during_the_backfill_is_skipped() {
    let pdb = PgServer::get().fresh_db();
    for t in ["a", "b", "c"] {
        pdb.exec(&format!("CREATE TABLE {t} (id int PRIMARY KEY, v text)"))
            .await;
        pdb.insert_ids(t, 0, 200, 200, 1).await;
    }
    let name = unique("drop_pg");
    let toml = pdb.server.source_toml(pdb.name(), &name);
    let dropped = DroppedTable {
        name: &name,
        toml: &toml,
        qualified_c: "public.c",
    };
    let w = dropped
        .start_paused_and_drop(|| async {
            pdb.exec("DROP TABLE c").await;
        })
        .await;
    pdb.insert_ids("a", 200, 205, 5, 1).await;
    dropped.the_stream_carries_on(w).await;
}

/// The same for MySQL: a dropped table's chunk read fails with 1146 and is skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mysql_table_dropped_during_the_backfill_is_skipped() {
    let my = MariaServer::get();
    let mdb = my.fresh_db();
    for t in ["a", "b", "c"] {
        my.sql(
            &mdb,
            &format!("CREATE TABLE {t} (id INT PRIMARY KEY, v TEXT)"),
        );
        my.sql(
            &mdb,
            &format!("INSERT INTO {t} SELECT seq, 'v' FROM seq_0_to_199"),
        );
    }
    let name = unique("drop_my");
    let toml = my.source_toml(&name, &mdb);
    let qualified_c = format!("{mdb}.c");
    let dropped = DroppedTable {
        name: &name,
        toml: &toml,
        qualified_c: &qualified_c,
    };
    let w = dropped
        .start_paused_and_drop(|| async {
            my.sql(&mdb, "DROP TABLE c");
        })
        .await;
    my.sql(&mdb, "INSERT INTO a SELECT seq, 'v' FROM seq_200_to_204");
    dropped.the_stream_carries_on(w).await;
}

/// One source with tables a, b, c of ids 0..200 each, backfilled 10 rows a chunk.
struct DroppedTable<'a> {
    name: &'a str,
    toml: &'a str,
    qualified_c: &'a str,
}

impl DroppedTable<'_> {
    /// Starts paused (the backfill reader fills its channel with table a and waits there),
    /// drops table c with `drop`, resumes; a and b arrive whole, c is skipped with a WARN
    /// and the metric.
    async fn start_paused_and_drop<F: std::future::Future<Output = ()>>(
        &self,
        drop: impl FnOnce() -> F,
    ) -> (Workdir, u16, std::process::Child) {
        let name = self.name;
        let w = Workdir::new();
        let admin = free_port();
        write(
            &w,
            admin,
            "",
            &format!("{}backfill_chunk_rows = 10\npaused = true\n", self.toml),
        );
        let child = spawn_run(&w, &[], &env());
        assert!(
            wait_until(WAIT, || state(admin, name) == "backfilling"),
            "{:?}\n{}",
            sources(admin),
            logs(&w)
        );
        // The three tables are planned (the state says backfilling a moment before).
        assert!(
            wait_until(WAIT, || logs(&w).contains("tables=3")),
            "the backfill never planned its tables\n{}",
            logs(&w)
        );
        drop().await;
        let resumed = http(admin, "POST", &format!("/sources/{name}/resume"));
        assert!(matches!(resumed, Some((200..=299, _))), "{resumed:?}");
        wait_streaming(&w, admin, &[name]);
        let all: BTreeSet<i64> = (0..200).collect();
        wait_ids(&w, name, "a", &all);
        wait_ids(&w, name, "b", &all);
        let text = logs(&w);
        assert!(text.contains("table dropped during the backfill"), "{text}");
        let (_, metrics) = http(admin, "GET", "/metrics").expect("metrics");
        assert!(
            metrics.contains(&format!(
                "logtide_backfill_tables_skipped_total{{source=\"{name}\",table=\"{}\"}} 1",
                self.qualified_c
            )),
            "{metrics}"
        );
        (w, admin, child)
    }

    /// Rows 200..205 of a were inserted after the resume: they stream; a stop is exit 0.
    async fn the_stream_carries_on(
        &self,
        (w, _admin, mut child): (Workdir, u16, std::process::Child),
    ) {
        wait_ids(&w, self.name, "a", &(0..205).collect());
        assert!(alive(&mut child));
        sigterm(&child);
        assert_eq!(wait_exit(&mut child, WAIT).code(), Some(0), "{}", logs(&w));
    }
}

/// A PostgreSQL backfill whose connection goes silent mid-way (a proxy that stops
/// forwarding without closing; TCP keepalive cannot see it) is dropped after
/// `read_timeout` and resumed from its checkpoint: every row arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_postgres_backfill_resumes_after_read_timeout() {
    let pdb = PgServer::get().fresh_db();
    pdb.exec("CREATE TABLE t (id int PRIMARY KEY, v text)")
        .await;
    pdb.insert_ids("t", 0, 300, 300, 1).await;
    let proxy = Blackhole::start(pdb.server.port());
    let name = unique("bf_hole");
    let src = via(
        &proxy,
        pdb.server.port(),
        pdb.server.source_toml(pdb.name(), &name),
    );
    let w = Workdir::new();
    let admin = free_port();
    // Paused: the reader has read its first chunks and waits on the delivery; what it
    // asks the server next goes into the black hole.
    write(
        &w,
        admin,
        "",
        &format!("{src}backfill_chunk_rows = 10\nread_timeout = \"3s\"\npaused = true\n"),
    );
    let mut child = spawn_run(&w, &[], &env());
    assert!(
        wait_until(WAIT, || state(admin, &name) == "backfilling"
            && logs(&w).contains("tables=1")),
        "{:?}\n{}",
        sources(admin),
        logs(&w)
    );
    proxy.swallow();
    let resumed = http(admin, "POST", &format!("/sources/{name}/resume"));
    assert!(matches!(resumed, Some((200..=299, _))), "{resumed:?}");
    wait_ids(&w, &name, "t", &(0..300).collect());
    let text = logs(&w);
    assert!(text.contains("read_timeout"), "{text}");
    wait_streaming(&w, admin, &[&name]);
    pdb.insert_ids("t", 300, 305, 5, 1).await;
    wait_ids(&w, &name, "t", &(0..305).collect());
    sigterm(&child);
    assert_eq!(wait_exit(&mut child, WAIT).code(), Some(0), "{}", logs(&w));
}

/// An on-demand backfill runs between the stream's transactions, in the pipeline: its
/// connection going silent must not hold the stream. It is dropped after `read_timeout`,
/// the job goes on from its progress on a new connection, and the stream (detected dead
/// on its own bound) reconnects; every row arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_on_demand_backfill_does_not_hold_the_stream() {
    const ROWS: i64 = 6_000;
    let pdb = PgServer::get().fresh_db();
    pdb.exec("CREATE TABLE big (id int PRIMARY KEY, v text); CREATE TABLE t (id int PRIMARY KEY, v text)")
        .await;
    pdb.insert_ids("big", 0, ROWS, 5_000, 1).await;
    let proxy = Blackhole::start(pdb.server.port());
    let name = unique("od_hole");
    let src = via(
        &proxy,
        pdb.server.port(),
        pdb.server.source_toml(pdb.name(), &name),
    );
    let w = Workdir::new();
    let admin = free_port();
    write(
        &w,
        admin,
        "",
        &format!(
            "{src}backfill = \"never\"\nbackfill_chunk_rows = 20\nread_timeout = \"3s\"\nstatus_interval = \"1s\"\n"
        ),
    );
    let mut child = spawn_run(&w, &[], &env());
    wait_streaming(&w, admin, &[&name]);
    let asked = http(
        admin,
        "POST",
        &format!("/sources/{name}/backfill/public.big"),
    );
    assert!(matches!(asked, Some((200..=299, _))), "{asked:?}");
    // A few chunks in (20 rows each, hundreds to go): both connections go silent.
    assert!(
        wait_until(WAIT, || ids(&w, &name, "big").len() >= 40),
        "{}",
        logs(&w)
    );
    proxy.swallow();
    let at_swallow = ids(&w, &name, "big").len();
    assert!(
        at_swallow < ROWS as usize,
        "the backfill ended before the black hole"
    );
    let swallowed = std::time::Instant::now();
    pdb.insert_ids("t", 0, 5, 5, 1).await;
    wait_ids(&w, &name, "t", &(0..5).collect());
    // The stream's own bound (10 s here) plus a reconnect, not the whole job's duration.
    let took = swallowed.elapsed();
    assert!(
        took < Duration::from_secs(30),
        "the stream waited {took:?}\n{}",
        logs(&w)
    );
    // Each chunk is a snapshot read plus a stored progress: on a loaded 2-core CI machine
    // a chunk can take ~50 ms, so the rest of the job gets a bound of its own.
    wait_ids_within(&w, &name, "big", &(0..ROWS).collect(), 3 * WAIT);
    let text = logs(&w);
    assert!(text.contains("read_timeout"), "{text}");
    sigterm(&child);
    assert_eq!(wait_exit(&mut child, WAIT).code(), Some(0), "{}", logs(&w));
}

/// `run --max-events N` counts across a reconnect: after a server restart the rest of the
/// N events end the run (exit 0), rather than the count starting again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_events_counts_across_a_reconnect() {
    let pgs = PgServer::start_with(&[]);
    let pdb = pgs.fresh_db();
    pdb.exec("CREATE TABLE t (id int PRIMARY KEY, v text)")
        .await;
    let name = unique("max_pg");
    let w = Workdir::new();
    let admin = free_port();
    write(&w, admin, "", &pgs.source_toml(pdb.name(), &name));
    let mut child = spawn_run(&w, &["--max-events", "6"], &env());
    wait_streaming(&w, admin, &[&name]);
    pdb.insert_ids("t", 0, 3, 1, 1).await;
    wait_ids(&w, &name, "t", &(0..3).collect());
    pgs.restart();
    pdb.insert_ids("t", 3, 6, 1, 1).await;
    let status = wait_exit(&mut child, WAIT);
    assert_eq!(status.code(), Some(0), "{}", logs(&w));
    assert_eq!(ids(&w, &name, "t"), (0..6).collect(), "{}", logs(&w));
    assert!(
        logs(&w).contains("reconnecting"),
        "no reconnect\n{}",
        logs(&w)
    );
}

/// `run --until` that stops before its position is never exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn until_not_reached_is_not_exit_0() {
    let pdb = PgServer::get().fresh_db();
    pdb.exec("CREATE TABLE t (id int PRIMARY KEY, v text)")
        .await;
    let name = unique("until_pg");
    let w = Workdir::new();
    let admin = free_port();
    write(&w, admin, "", &pdb.server.source_toml(pdb.name(), &name));
    // An LSN far beyond the server's end.
    let mut child = spawn_run(&w, &["--until", "FF/0"], &env());
    wait_streaming(&w, admin, &[&name]);
    sigterm(&child);
    let status = wait_exit(&mut child, WAIT);
    let text = logs(&w);
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(text.contains("before reaching --until"), "{text}");
}

/// Runs `openssl` in `dir` (the CLI the harness already needs for TLS servers).
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl CLI is needed for this test (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA `ca.crt`, an unrelated `other.crt`, and `server.crt`/`server.key` for `localhost`
/// only (so 127.0.0.1 is a host-name mismatch), in `dir`.
fn make_pg_certs(dir: &std::path::Path) {
    for name in ["ca", "other"] {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.crt"),
                "-days",
                "2",
                "-subj",
                &format!("/CN=supervision-{name}"),
            ],
        );
    }
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost\nbasicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write ext");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
}

/// A certificate that fails verification (an unrelated CA, or a host name the certificate
/// does not name) is a permanent error: exit 3 at once with the cause, for PostgreSQL
/// (backfill and stream) and MySQL — never "retrying" forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_verification_failures_are_permanent() {
    let certs = tempfile::tempdir().expect("tempdir");
    make_pg_certs(certs.path());
    let read = |n: &str| std::fs::read(certs.path().join(n)).expect("read cert");
    let pgs = PgServer::builder()
        .setting("ssl", "on")
        .setting("ssl_cert_file", "server.crt")
        .setting("ssl_key_file", "server.key")
        .data_file("server.crt", &read("server.crt"), 0o644)
        .data_file("server.key", &read("server.key"), 0o600)
        .start();
    let pdb = pgs.fresh_db();
    let my = MariaServer::builder().tls(false).start();
    let ca = certs.path().join("ca.crt");
    let other = certs.path().join("other.crt");
    let cases = [
        // (label, source toml)
        (
            "pg wrong CA",
            pgs.source_toml(pdb.name(), "t_pg_ca")
                .replace("host = \"127.0.0.1\"", "host = \"localhost\"")
                .replace(
                    "sslmode = \"disable\"",
                    &format!(
                        "sslmode = \"verify-full\"\nsslrootcert = {:?}",
                        other.display().to_string()
                    ),
                ),
        ),
        (
            "pg wrong host",
            pgs.source_toml(pdb.name(), "t_pg_host").replace(
                "sslmode = \"disable\"",
                &format!(
                    "sslmode = \"verify-full\"\nsslrootcert = {:?}",
                    ca.display().to_string()
                ),
            ),
        ),
        (
            "mysql wrong CA",
            format!(
                "{}ssl_mode = \"verify_identity\"\nssl_ca = {:?}\n",
                my.source_toml("t_my_ca", "mysql"),
                my.other_ca_pem().display().to_string()
            ),
        ),
    ];
    for (label, toml) in cases {
        let w = Workdir::new();
        write(&w, free_port(), "", &toml);
        let mut child = spawn_run(&w, &[], &env());
        let status = wait_exit(&mut child, Duration::from_secs(30));
        let text = logs(&w);
        assert_eq!(status.code(), Some(3), "{label}:\n{text}");
        assert!(
            text.to_lowercase().contains("certificate"),
            "{label}: the error names the certificate:\n{text}"
        );
        assert!(!text.contains("retrying"), "{label}: retried:\n{text}");
        assert!(!text.contains(pg::PASSWORD), "{label}: secret in the log");
    }
}
