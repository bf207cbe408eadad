//! Operator commands through the logtide binary against real PostgreSQL and MariaDB:
//! `check` (good servers, wrong settings, missing privileges, wrong passwords, users that
//! can write), `discover` (capture marks in text and JSON), `preview` (events printed, slot
//! and stored checkpoint untouched) and the lag lines of `status`.

use crate::common::mariadb::{self as maria, MariaServer};
use crate::common::pg::{PgServer, TestDb, PASSWORD, PASSWORD_ENV, PLAIN_PASSWORD, PLAIN_USER};
use crate::common::run::{logs, run_to_end, spawn_run, wait_exit, Workdir};
use std::process::Output;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(90);

fn name(tag: &str) -> String {
    format!("ops{tag}_{}", std::process::id())
}

fn cmd(w: &Workdir, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let cfg = w.config();
    let mut a: Vec<&str> = vec![args[0], "--config", cfg.to_str().expect("path")];
    a.extend_from_slice(&args[1..]);
    let Output {
        status,
        stdout,
        stderr,
    } = run_to_end(&a, env);
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

fn pg_env() -> Vec<(&'static str, &'static str)> {
    vec![(PASSWORD_ENV, PASSWORD)]
}

fn line<'a>(out: &'a str, prefix: &str, contains: &str) -> Option<&'a str> {
    out.lines()
        .find(|l| l.starts_with(prefix) && l.contains(contains))
}

fn assert_line(out: &str, prefix: &str, contains: &str) {
    assert!(
        line(out, prefix, contains).is_some(),
        "no line starting {prefix:?} containing {contains:?} in:\n{out}"
    );
}

// ---------------------------------------------------------------- check: PostgreSQL

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_pg_good_source_passes_and_warns_about_writers() {
    let db = PgServer::get().fresh_db();
    db.exec("CREATE TABLE t (id int PRIMARY KEY, v text); CREATE TABLE nokey (a int, b text)")
        .await;
    let n = name("pgok");
    let w = Workdir::new();
    w.write_config(&db.server.source_toml(db.name(), &n));
    let (code, out, err) = cmd(&w, &["check"], &pg_env());
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert_line(&out, &format!("ok {n}: "), "wal_level = logical");
    assert_line(
        &out,
        &format!("ok {n}: "),
        "replication connection accepted",
    );
    assert_line(&out, &format!("ok {n}: "), "does not exist yet");
    // The harness user is a superuser: it can write.
    assert_line(&out, &format!("warn {n}: "), "is a superuser and can write");
    assert_line(
        &out,
        &format!("warn {n}: "),
        "table public.nokey has no primary key",
    );
    assert!(line(&out, "warn", "public.t has").is_none(), "{out}");
    assert_line(&out, "ok sink out: ", "configured");
    assert!(out.lines().all(|l| !l.starts_with("FAIL")), "{out}");
    // Nothing was created by check.
    assert_eq!(
        db.psql(&format!(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'logtide_{n}'"
        )),
        "0"
    );

    // A dedicated REPLICATION role with only SELECT: no write warning; with INSERT: one.
    let role = format!("opsro_{}", std::process::id());
    db.psql(&format!(
        "CREATE ROLE {role} LOGIN REPLICATION PASSWORD 'ro-pw'; GRANT SELECT ON t, nokey TO {role}; \
         CREATE PUBLICATION logtide_{n} FOR ALL TABLES"
    ));
    let toml = db
        .server
        .source_toml(db.name(), &n)
        .replace("user = \"logtide\"", &format!("user = \"{role}\""))
        .replace(PASSWORD_ENV, "LOGTIDE_TEST_RO_PW");
    w.write_config(&toml);
    let env = [("LOGTIDE_TEST_RO_PW", "ro-pw")];
    let (code, out, err) = cmd(&w, &["check"], &env);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert_line(&out, &format!("ok {n}: "), "(REPLICATION)");
    assert_line(
        &out,
        &format!("ok {n}: "),
        "cannot write to the captured tables",
    );
    assert_line(&out, &format!("ok {n}: "), "publication");
    db.psql(&format!("GRANT INSERT ON t TO {role}"));
    let (code, out, _) = cmd(&w, &["check"], &env);
    assert_eq!(code, 0, "{out}");
    assert_line(
        &out,
        &format!("warn {n}: "),
        "may INSERT, UPDATE or DELETE on public.t",
    );
}

#[test]
fn check_pg_wal_level_replica_fails() {
    let server = PgServer::start_with(&[("wal_level", "replica")]);
    let db = server.fresh_db();
    let n = name("pgwal");
    let w = Workdir::new();
    w.write_config(&server.source_toml(db.name(), &n));
    let (code, out, err) = cmd(&w, &["check"], &pg_env());
    assert_eq!(code, 3, "stdout:\n{out}\nstderr:\n{err}");
    assert_line(
        &out,
        &format!("FAIL {n}: wal_level is \"replica\""),
        "— set wal_level = logical in postgresql.conf and restart PostgreSQL",
    );
}

#[test]
fn check_pg_missing_replication_privilege_fails() {
    let db = PgServer::get().fresh_db();
    let n = name("pgplain");
    let w = Workdir::new();
    let toml = db
        .server
        .source_toml(db.name(), &n)
        .replace("user = \"logtide\"", &format!("user = \"{PLAIN_USER}\""))
        .replace(PASSWORD_ENV, "LOGTIDE_TEST_PLAIN_PW");
    w.write_config(&toml);
    let (code, out, err) = cmd(&w, &["check"], &[("LOGTIDE_TEST_PLAIN_PW", PLAIN_PASSWORD)]);
    assert_eq!(code, 3, "stdout:\n{out}\nstderr:\n{err}");
    assert_line(
        &out,
        &format!("FAIL {n}: role \"{PLAIN_USER}\" lacks the REPLICATION attribute"),
        &format!("ALTER ROLE \"{PLAIN_USER}\" REPLICATION"),
    );
    // FOR ALL TABLES needs a superuser.
    assert_line(&out, &format!("FAIL {n}: publication"), "cannot create it");
}

#[test]
fn check_pg_wrong_password_is_clear_and_not_echoed() {
    let db = PgServer::get().fresh_db();
    let n = name("pgpw");
    let w = Workdir::new();
    w.write_config(&db.server.source_toml(db.name(), &n));
    let wrong = "not-the-pw-5e3f";
    let (code, out, err) = cmd(&w, &["check"], &[(PASSWORD_ENV, wrong)]);
    assert_eq!(code, 3, "stdout:\n{out}\nstderr:\n{err}");
    assert_line(
        &out,
        &format!("FAIL {n}: authentication failed for user \"logtide\""),
        PASSWORD_ENV,
    );
    assert!(!out.contains(wrong) && !err.contains(wrong), "{out}{err}");
}

// ---------------------------------------------------------------- check: MariaDB

#[test]
fn check_mariadb_good_source_passes_and_admin_warns() {
    let server = MariaServer::get();
    let db = server.fresh_db();
    server.sql(&db, "CREATE TABLE t (id int PRIMARY KEY, v text)");
    let n = name("myok");
    let w = Workdir::new();
    w.write_config(&server.source_toml(&n, &db));
    let env = [(maria::PASSWORD_ENV, maria::PASSWORD)];
    let (code, out, err) = cmd(&w, &["check"], &env);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert_line(&out, &format!("ok {n}: "), "binlog_format = ROW");
    assert_line(
        &out,
        &format!("ok {n}: "),
        "REPLICATION SLAVE, BINLOG MONITOR and SELECT",
    );
    assert_line(&out, &format!("ok {n}: "), "cannot write");
    assert_line(&out, &format!("ok {n}: "), "1 tables captured");

    let toml = server
        .source_toml(&n, &db)
        .replace(
            &format!("user = \"{}\"", maria::USER),
            &format!("user = \"{}\"", maria::ADMIN),
        )
        .replace(maria::PASSWORD_ENV, "LOGTIDE_TEST_ADMIN_PW");
    w.write_config(&toml);
    let (code, out, err) = cmd(
        &w,
        &["check"],
        &[("LOGTIDE_TEST_ADMIN_PW", maria::ADMIN_PASSWORD)],
    );
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert_line(
        &out,
        &format!("warn {n}: user \"{}\" can write", maria::ADMIN),
        "ALL PRIVILEGES on *.*",
    );
}

#[test]
fn check_mariadb_statement_format_fails() {
    let server = MariaServer::builder().binlog_format("STATEMENT").start();
    let db = server.fresh_db();
    let n = name("mystmt");
    let w = Workdir::new();
    w.write_config(&server.source_toml(&n, &db));
    let (code, out, err) = cmd(&w, &["check"], &[(maria::PASSWORD_ENV, maria::PASSWORD)]);
    assert_eq!(code, 3, "stdout:\n{out}\nstderr:\n{err}");
    assert_line(
        &out,
        &format!("FAIL {n}: binlog_format is \"STATEMENT\", logtide needs ROW"),
        "SET GLOBAL binlog_format = 'ROW'",
    );
}

#[test]
fn check_mariadb_missing_privilege_and_wrong_password() {
    let server = MariaServer::get();
    let db = server.fresh_db();
    let user = format!("norepl_{}", std::process::id());
    server.sql(
        "",
        &format!(
            "CREATE USER '{user}'@'%' IDENTIFIED VIA mysql_native_password USING PASSWORD('np-pw'); \
             GRANT SELECT ON *.* TO '{user}'@'%'"
        ),
    );
    let n = name("mypriv");
    let w = Workdir::new();
    let toml = server
        .source_toml(&n, &db)
        .replace(
            &format!("user = \"{}\"", maria::USER),
            &format!("user = \"{user}\""),
        )
        .replace(maria::PASSWORD_ENV, "LOGTIDE_TEST_NOREPL_PW");
    w.write_config(&toml);
    let (code, out, err) = cmd(&w, &["check"], &[("LOGTIDE_TEST_NOREPL_PW", "np-pw")]);
    assert_eq!(code, 3, "stdout:\n{out}\nstderr:\n{err}");
    assert_line(
        &out,
        &format!("FAIL {n}: user \"{user}\" lacks the REPLICATION SLAVE privilege"),
        "GRANT REPLICATION SLAVE ON *.* TO",
    );

    let wrong = "wrong-pw-77aa";
    let (code, out, err) = cmd(&w, &["check"], &[("LOGTIDE_TEST_NOREPL_PW", wrong)]);
    assert_eq!(code, 3, "stdout:\n{out}\nstderr:\n{err}");
    assert_line(
        &out,
        &format!("FAIL {n}: authentication failed for user \"{user}\""),
        "LOGTIDE_TEST_NOREPL_PW",
    );
    assert!(!out.contains(wrong) && !err.contains(wrong), "{out}{err}");
}

// ---------------------------------------------------------------- discover

const FILTERS: &str = "tables = { exclude = [\"public.audit\"] }\n\
                       columns = { \"public.users\" = { exclude = [\"secret\"] } }\n";

async fn discover_schema(db: &TestDb<'_>) {
    db.exec(
        "CREATE TABLE users (id int PRIMARY KEY, name text NOT NULL, secret text); \
         CREATE TABLE audit (id bigint PRIMARY KEY, what text); \
         CREATE TABLE tags (a int, b varchar(10)); ALTER TABLE tags REPLICA IDENTITY FULL",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discover_pg_marks_what_the_filter_captures() {
    let db = PgServer::get().fresh_db();
    discover_schema(&db).await;
    let n = name("disc");
    let w = Workdir::new();
    w.write_config(&format!(
        "{}{FILTERS}",
        db.server.source_toml(db.name(), &n)
    ));

    let (code, out, err) = cmd(&w, &["discover"], &pg_env());
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert_line(&out, &format!("source {n} (postgres)"), "");
    assert_line(
        &out,
        "  + public.users  key (id)",
        "replica identity default",
    );
    assert_line(&out, "  - public.audit", "excluded by the table filter");
    assert_line(
        &out,
        "  + public.tags  no primary key",
        "replica identity full",
    );
    assert_line(&out, "      + id ", "integer");
    assert_line(&out, "      + name ", "not null");
    assert_line(&out, "      - secret ", "text");
    assert_line(&out, "      - what ", "text");
    assert_line(&out, "      + b ", "character varying(10)");

    let (code, out, err) = cmd(&w, &["discover", "--format", "json"], &pg_env());
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let tables = v[0]["tables"].as_array().expect("tables");
    let t = |name: &str| {
        tables
            .iter()
            .find(|t| t["schema"] == "public" && t["name"] == name)
            .unwrap_or_else(|| panic!("no table {name} in {out}"))
            .clone()
    };
    let col = |t: &serde_json::Value, c: &str| {
        t["columns"]
            .as_array()
            .expect("columns")
            .iter()
            .find(|x| x["name"] == c)
            .unwrap_or_else(|| panic!("no column {c}"))
            .clone()
    };
    let users = t("users");
    assert_eq!(users["captured"], true);
    assert_eq!(users["primary_key"], serde_json::json!(["id"]));
    assert_eq!(col(&users, "id")["captured"], true);
    assert_eq!(col(&users, "id")["key"], true);
    assert_eq!(col(&users, "id")["nullable"], false);
    assert_eq!(col(&users, "secret")["captured"], false);
    assert_eq!(col(&users, "secret")["nullable"], true);
    assert_eq!(col(&users, "name")["type"], "text");
    let audit = t("audit");
    assert_eq!(audit["captured"], false);
    assert_eq!(col(&audit, "id")["captured"], false);
    assert_eq!(col(&audit, "id")["type"], "bigint");
    let tags = t("tags");
    assert_eq!(tags["replica_identity"], "full");
    // REPLICA IDENTITY FULL is no key: events carry `key: null` (stream and backfill).
    assert_eq!(col(&tags, "a")["key"], false);
}

#[test]
fn discover_mariadb_marks_what_the_filter_captures() {
    let server = MariaServer::get();
    let db = server.fresh_db();
    server.sql(
        &db,
        "CREATE TABLE users (id int PRIMARY KEY, name varchar(20) NOT NULL, secret text); \
         CREATE TABLE audit (id int PRIMARY KEY)",
    );
    let n = name("mydisc");
    let w = Workdir::new();
    w.write_config(&format!(
        "{}columns = {{ \"{db}.users\" = {{ exclude = [\"secret\"] }} }}\n",
        server.source_toml(&n, &db).replace(
            "tables = {",
            &format!("tables = {{ exclude = [\"{db}.audit\"], ")
        )
    ));
    let (code, out, err) = cmd(
        &w,
        &["discover", "--format", "json"],
        &[(maria::PASSWORD_ENV, maria::PASSWORD)],
    );
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let tables = v[0]["tables"].as_array().expect("tables");
    let users = tables
        .iter()
        .find(|t| t["schema"] == db.as_str() && t["name"] == "users")
        .expect("users");
    assert_eq!(users["captured"], true);
    let cols = users["columns"].as_array().expect("cols");
    let marks: Vec<(String, bool)> = cols
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or("").to_owned(),
                c["captured"].as_bool().unwrap_or(true),
            )
        })
        .collect();
    assert_eq!(
        marks,
        vec![
            ("id".to_string(), true),
            ("name".to_string(), true),
            ("secret".to_string(), false)
        ]
    );
    assert_eq!(cols[1]["type"], "varchar(20)");
    let audit = tables
        .iter()
        .find(|t| t["schema"] == db.as_str() && t["name"] == "audit")
        .expect("audit");
    assert_eq!(audit["captured"], false);
    // Other databases on the shared server are not captured by `include = [db.*]`.
    assert!(tables
        .iter()
        .filter(|t| t["schema"] != db.as_str())
        .all(|t| t["captured"] == false));
}

// ---------------------------------------------------------------- preview + status

fn confirmed_flush(db: &TestDb<'_>, slot: &str) -> String {
    db.psql(&format!(
        "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '{slot}'"
    ))
}

fn stored_line(w: &Workdir, n: &str) -> String {
    let (code, out, err) = cmd(w, &["status"], &pg_env());
    assert_eq!(code, 0, "{out}{err}");
    out.lines()
        .find(|l| {
            l.starts_with(&format!("{n}\t")) && !l.contains("\tlag ") && !l.contains("unreachable")
        })
        .unwrap_or_else(|| panic!("no stored line for {n}: {out}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_pg_leaves_slot_and_checkpoint_untouched() {
    let db = PgServer::get().fresh_db();
    db.exec("CREATE TABLE t (id int PRIMARY KEY, v text)").await;
    let n = name("prev");
    let slot = format!("logtide_{n}");
    // The publication must predate the slot (pgoutput reads it at the slot's snapshot).
    db.psql(&format!("CREATE PUBLICATION {slot} FOR ALL TABLES"));
    db.psql(&format!(
        "SELECT 1 FROM pg_create_logical_replication_slot('{slot}', 'pgoutput')"
    ));
    let w = Workdir::new();
    w.write_config(&format!(
        "{}backfill = \"never\"\n",
        db.server.source_toml(db.name(), &n)
    ));
    // A first run stores a checkpoint after id 0.
    db.exec("INSERT INTO t VALUES (0, 'zero')").await;
    let mut child = spawn_run(&w, &["--max-events", "1"], &pg_env());
    assert!(wait_exit(&mut child, WAIT).success(), "{}", logs(&w));
    assert_eq!(w.events().len(), 1);
    let stored_before = stored_line(&w, &n);
    assert!(stored_before.contains("position"), "{stored_before}");
    for i in 1..=5 {
        db.exec(&format!("INSERT INTO t VALUES ({i}, 'v{i}')"))
            .await;
    }
    let flush_before = confirmed_flush(&db, &slot);

    let preview = |w: &Workdir| {
        let (code, out, err) = cmd(
            w,
            &[
                "preview",
                "--source",
                &n,
                "--limit",
                "3",
                "--timeout",
                "60s",
            ],
            &pg_env(),
        );
        assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
        assert!(err.contains("preview: 3 events"), "{err}");
        out.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON line"))
            .collect::<Vec<_>>()
    };
    let first = preview(&w);
    assert_eq!(first.len(), 3);
    let ids: Vec<i64> = first
        .iter()
        .map(|e| e["after"]["id"].as_i64().expect("id"))
        .collect();
    assert_eq!(ids, vec![1, 2, 3]);
    assert!(
        first
            .iter()
            .all(|e| e["op"] == "c" && e["source"]["table"] == "t"),
        "{first:?}"
    );

    // Nothing confirmed, nothing stored, nothing delivered.
    assert_eq!(confirmed_flush(&db, &slot), flush_before);
    assert_eq!(stored_line(&w, &n), stored_before);
    assert_eq!(w.events().len(), 1);

    // Previewing again shows the same events; a real run then delivers them.
    let again = preview(&w);
    let cursors = |v: &[serde_json::Value]| -> Vec<String> {
        v.iter()
            .map(|e| e["source"]["cursor"].to_string())
            .collect()
    };
    assert_eq!(cursors(&again), cursors(&first));
    let mut child = spawn_run(&w, &["--max-events", "5"], &pg_env());
    assert!(wait_exit(&mut child, WAIT).success(), "{}", logs(&w));
    let delivered = w.events();
    assert_eq!(delivered.len(), 6, "{delivered:?}");
    assert_eq!(cursors(&delivered[1..4]), cursors(&first));

    // Lag lines: this source's slot, and an unreachable source reported without stopping.
    let mut toml = format!(
        "{}backfill = \"never\"\n",
        db.server.source_toml(db.name(), &n)
    );
    toml.push_str(&format!(
        "\n{}connect_timeout = \"2s\"\n",
        db.server
            .source_toml(db.name(), "down")
            .replace(&format!("port = {}", db.server.port()), "port = 1")
    ));
    w.write_config(&toml);
    let (code, out, err) = cmd(&w, &["status"], &pg_env());
    assert_eq!(code, 0, "{out}{err}");
    let lag = line(
        &out,
        &format!("{n}\tlag slot {slot} active=no"),
        "confirmed_flush_lsn=",
    )
    .unwrap_or_else(|| panic!("no lag line: {out}"));
    let confirmed = confirmed_flush(&db, &slot);
    assert!(
        lag.contains(&format!("confirmed_flush_lsn={confirmed} ")),
        "{lag}"
    );
    assert!(
        lag.contains("behind_bytes=") && lag.contains("retained_wal_bytes="),
        "{lag}"
    );
    assert_line(&out, "down\tunreachable: cannot connect", "");
}

#[test]
fn status_mariadb_shows_binlog_lag() {
    let server = MariaServer::get();
    let db = server.fresh_db();
    let n = name("mystat");
    let w = Workdir::new();
    w.write_config(&server.source_toml(&n, &db));
    let (file, pos) = server.binlog_position();
    {
        let store = logtide::checkpoint::CheckpointStore::open(&w.state()).expect("store");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("rt");
        rt.block_on(store.force(&n, &maria::checkpoint(&file, pos)))
            .expect("force");
    }
    server.sql(
        &db,
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)",
    );
    let (cur_file, cur_pos) = server.binlog_position();
    let env = [(maria::PASSWORD_ENV, maria::PASSWORD)];
    let (code, out, err) = cmd(&w, &["status"], &env);
    assert_eq!(code, 0, "{out}{err}");
    let lag = line(&out, &format!("{n}\tlag binlog current="), "oldest=")
        .unwrap_or_else(|| panic!("no lag line: {out}"));
    assert!(lag.contains(&format!("current={cur_file}:")), "{lag}");
    assert!(lag.contains("stored_file_on_server=yes"), "{lag}");
    let behind: u64 = lag
        .split("behind_bytes=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("behind_bytes in {lag}"));
    if cur_file == file {
        assert!(behind >= cur_pos - pos && behind > 0, "{lag}");
    } else {
        assert!(behind > 0, "{lag}");
    }

    // A stored position in a binlog the server no longer has.
    let w2 = Workdir::new();
    w2.write_config(&server.source_toml(&n, &db));
    {
        let store = logtide::checkpoint::CheckpointStore::open(&w2.state()).expect("store");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("rt");
        rt.block_on(store.force(&n, &maria::checkpoint("mysql-bin.000000", 4)))
            .expect("force");
    }
    let (code, out, err) = cmd(&w2, &["status"], &env);
    assert_eq!(code, 0, "{out}{err}");
    assert_line(
        &out,
        &format!("{n}\tlag binlog"),
        "stored_file_on_server=no",
    );
    // `check` fails on it (the source could not resume) and passes on the good position.
    let (code, out, err) = cmd(&w2, &["check"], &env);
    assert_eq!(code, 3, "{out}{err}");
    assert_line(
        &out,
        &format!(
            "FAIL {n}: stored position mysql-bin.000000:4 is in a binlog the server no longer has"
        ),
        "re-backfill",
    );
    let (code, out, err) = cmd(&w, &["check"], &env);
    assert_eq!(code, 0, "{out}{err}");
    assert_line(
        &out,
        &format!("ok {n}: stored position {file}:{pos} is still on the server"),
        "",
    );
}

#[test]
fn preview_mariadb_from_the_stored_position_stores_nothing() {
    let server = MariaServer::get();
    let db = server.fresh_db();
    server.sql(&db, "CREATE TABLE t (id int PRIMARY KEY, v text)");
    let n = name("myprev");
    let w = Workdir::new();
    w.write_config(&server.source_toml(&n, &db));
    let (file, pos) = server.binlog_position();
    let stored = maria::checkpoint(&file, pos);
    {
        let store = logtide::checkpoint::CheckpointStore::open(&w.state()).expect("store");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("rt");
        rt.block_on(store.force(&n, &stored)).expect("force");
    }
    for i in 1..=4 {
        server.sql(&db, &format!("INSERT INTO t VALUES ({i}, 'v{i}')"));
    }
    let env = [(maria::PASSWORD_ENV, maria::PASSWORD)];
    let (code, out, err) = cmd(
        &w,
        &[
            "preview",
            "--source",
            &n,
            "--limit",
            "3",
            "--timeout",
            "60s",
        ],
        &env,
    );
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let ids: Vec<i64> = out
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("JSON line");
            assert_eq!(v["op"], "c", "{l}");
            v["after"]["id"].as_i64().expect("id")
        })
        .collect();
    assert_eq!(ids, vec![1, 2, 3]);
    let store = logtide::checkpoint::CheckpointStore::open(&w.state()).expect("store");
    assert_eq!(store.load(&n).expect("load"), Some(stored));
    assert!(w.events().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_query_mode_runs_the_query_once_and_times_out_quietly() {
    let db = PgServer::get().fresh_db();
    db.exec("CREATE TABLE items (id int PRIMARY KEY, name text); INSERT INTO items SELECT g, 'n' || g FROM generate_series(1, 5) g")
        .await;
    let n = name("qprev");
    let w = Workdir::new();
    w.write_config(&format!(
        "[[sources]]\nkind = \"query\"\nname = \"{n}\"\nhost = \"{}\"\nport = {}\nuser = \"{}\"\n\
         password_env = \"{PASSWORD_ENV}\"\ndatabase = \"{}\"\nsslmode = \"disable\"\n\
         query = \"SELECT id, name FROM items WHERE id > {{{{cursor}}}}\"\ncursor_column = \"id\"\n\
         key_columns = [\"id\"]\ntable = \"public.items\"\ninitial_cursor = \"0\"\n",
        db.server.host(),
        db.server.port(),
        crate::common::pg::USER,
        db.name()
    ));
    let (code, out, err) = cmd(&w, &["preview", "--source", &n, "--limit", "2"], &pg_env());
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let ids: Vec<i64> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("JSON line")["after"]["id"]
                .as_i64()
                .expect("id")
        })
        .collect();
    assert_eq!(ids, vec![1, 2]);
    // No state directory was created, so nothing was stored.
    assert!(!w.state().exists());

    // Fewer rows than the limit: the one run ends the preview well before the timeout.
    let started = std::time::Instant::now();
    let (code, out, err) = cmd(
        &w,
        &[
            "preview",
            "--source",
            &n,
            "--limit",
            "50",
            "--timeout",
            "60s",
        ],
        &pg_env(),
    );
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert_eq!(out.lines().count(), 5, "{out}");
    assert!(started.elapsed() < Duration::from_secs(50), "{err}");
    assert!(err.contains("preview: 5 events"), "{err}");

    // The query source has no discoverable tables, only result columns.
    let (code, out, err) = cmd(&w, &["discover"], &pg_env());
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let id = line(&out, "      + id ", "int4").unwrap_or_else(|| panic!("{out}"));
    assert!(id.ends_with(" key"), "{out}");
    let name_line = line(&out, "      + name ", "text").unwrap_or_else(|| panic!("{out}"));
    assert!(!name_line.ends_with("key"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_unreachable_http_sink_fails_with_exit_1() {
    let db = PgServer::get().fresh_db();
    db.exec("CREATE TABLE t (id int PRIMARY KEY)").await;
    let n = name("sink");
    let w = Workdir::new();
    // A port nothing listens on: bind, note it, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    w.write_config(&format!(
        "{}\n[[sinks]]\nkind = \"http\"\nname = \"hook\"\nurl = \"http://127.0.0.1:{port}/in\"\n",
        db.server.source_toml(db.name(), &n)
    ));
    let (code, out, err) = cmd(&w, &["check"], &pg_env());
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    assert_line(
        &out,
        "FAIL sink hook: cannot reach http://127.0.0.1:",
        "receiver is running",
    );
    assert!(
        out.lines().all(|l| !l.starts_with(&format!("FAIL {n}"))),
        "{out}"
    );
}
