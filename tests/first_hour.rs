//! The first hour of a new user, through the logtide binary: config mistakes named by their
//! key or variable before anything is created, operator commands while `run` holds the
//! checkpoint store, `check` on a NATS sink without a stream, a closed stdout pipe, and
//! position arguments that say what they accept.

use crate::common::pg::PgServer;
use crate::common::port::free_port;
use crate::common::run::{bin, run_to_end, spawn_run, wait_exit, wait_until, Workdir};
use std::process::Stdio;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

fn name(tag: &str) -> String {
    format!("fh{tag}_{}", std::process::id())
}

fn output(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let o = run_to_end(args, env);
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A config with an admin endpoint on a free port: `sources` text + a file sink.
fn write_config(w: &Workdir, admin: u16, sources: &str) {
    let text = format!(
        "[state]\npath = {:?}\n\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n\n{sources}\n\n[[sinks]]\nkind = \"file\"\nname = \"out\"\npath = {:?}\n",
        w.state(),
        w.out()
    );
    std::fs::write(w.config(), text).expect("write config");
}

#[test]
fn a_missing_secret_stops_run_before_anything_is_created() {
    let w = Workdir::new();
    let admin = free_port();
    write_config(
        &w,
        admin,
        "[[sources]]\nkind = \"postgres\"\nname = \"app\"\nuser = \"u\"\ndatabase = \"d\"\npassword_env = \"LOGTIDE_FH_NOT_SET_ANYWHERE\"\n",
    );
    let cfg = w.config();
    for cmd in ["run", "replay"] {
        let mut args = vec![cmd, "--config", cfg.to_str().expect("path")];
        if cmd == "replay" {
            args.extend(["--source", "app", "--from", "0/16B3748"]);
        }
        let (code, _, err) = output(&args, &[]);
        assert_eq!(code, 2, "{cmd}: {err}");
        assert!(err.contains("LOGTIDE_FH_NOT_SET_ANYWHERE"), "{cmd}: {err}");
        assert!(err.contains("sources.app.password_env"), "{cmd}: {err}");
        assert!(!w.state().exists(), "{cmd} created the state directory");
        assert!(!w.out().exists(), "{cmd} created the sink's file");
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", admin)).is_ok(),
            "{cmd} left the admin port bound"
        );
    }
}

#[test]
fn bad_values_and_positions_are_named() {
    let w = Workdir::new();
    let cfg = w.config();
    let cfg_s = cfg.to_str().expect("path");
    for (line, key) in [
        (
            "connect_timeout = 10",
            "sources[0] (\"app\").connect_timeout",
        ),
        ("port = \"5525\"", "sources[0] (\"app\").port"),
        ("sslmode = \"bogus\"", "sources[0] (\"app\").sslmode"),
    ] {
        write_config(
            &w,
            free_port(),
            &format!("[[sources]]\nkind = \"postgres\"\nname = \"app\"\nuser = \"u\"\ndatabase = \"d\"\n{line}\n"),
        );
        let (code, _, err) = output(&["check", "--config", cfg_s], &[]);
        assert_eq!(code, 2, "{line}: {err}");
        assert!(err.contains(key), "{line}: {err}");
        assert!(err.contains(cfg_s), "{line}: the file is named: {err}");
    }
    // A missing config file: the OS error once, not twice.
    let (code, _, err) = output(&["check", "--config", "/nonexistent/logtide.toml"], &[]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    // --until for PostgreSQL says it wants an LSN.
    write_config(
        &w,
        free_port(),
        "[[sources]]\nkind = \"postgres\"\nname = \"app\"\nuser = \"u\"\ndatabase = \"d\"\n",
    );
    let (code, _, err) = output(&["run", "--config", cfg_s, "--until", "zzz"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("LSN like 16/B374D848"), "{err}");
    assert!(
        !w.state().exists(),
        "a refused --until created the state directory"
    );
}

/// `status` works while the service runs (through its admin endpoint), the commands that
/// change the store say the service must be stopped, `check` says it did not check the
/// stored positions, and a closed stdout pipe ends a command with exit 0.
#[test]
fn operator_commands_while_the_service_runs() {
    let db = PgServer::get().fresh_db();
    let n = name("ops");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(
        db.exec("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a')"),
    );
    let w = Workdir::new();
    let admin = free_port();
    write_config(&w, admin, &db.server.source_toml(db.name(), &n));
    let cfg = w.config();
    let cfg_s = cfg.to_str().expect("path");
    let mut child = spawn_run(&w, &[], &[]);
    w.wait_events(1, WAIT);
    // The service stored a checkpoint after the backfill row (status shows it).
    let mut out = String::new();
    let ok = wait_until(WAIT, || {
        let (code, o, _) = output(&["status", "--config", cfg_s], &[]);
        out = o;
        code == 0 && out.contains("from the running service") && !out.contains("position -")
    });
    assert!(ok, "status while running:\n{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with(&format!("{n}\tposition "))),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l.starts_with(&format!("{n}\tlag "))),
        "{out}"
    );

    let (code, _, err) = output(&["reset", "--config", cfg_s, "--source", &n, "--yes"], &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("stop the service first"), "{err}");
    let (code, _, err) = output(
        &[
            "replay",
            "--config",
            cfg_s,
            "--source",
            &n,
            "--from",
            "0/16B3748",
        ],
        &[],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("stop the service first"), "{err}");
    let (_, out, err) = output(&["check", "--config", cfg_s], &[]);
    assert!(
        out.lines()
            .any(|l| l.starts_with("warn state: stored positions not checked")),
        "{out}\n{err}"
    );

    // EPIPE: the reader of stdout went away before logtide wrote.
    let st = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -o pipefail; {:?} status --config {:?} | true",
            bin().get_program(),
            cfg_s
        ))
        .stderr(Stdio::piped())
        .output()
        .expect("bash");
    assert_eq!(
        st.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    assert!(!String::from_utf8_lossy(&st.stderr).contains("panicked"));

    crate::common::run::sigterm(&child);
    assert!(wait_exit(&mut child, WAIT).success());
    // Stopped: reset works again.
    let (code, out, err) = output(&["reset", "--config", cfg_s, "--source", &n, "--yes"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    rt.block_on(db.exec(&format!("SELECT pg_drop_replication_slot('logtide_{n}')")));
}

/// A source renamed between runs: the new name starts from scratch (a new slot, a new
/// backfill), so what changed since the old name stopped would never be streamed. `run`
/// warns about the old name's checkpoint, says to rename it back or to forget it, and names
/// the slot still holding WAL; `reset` forgets a source the config no longer has, and the
/// warning is gone.
#[test]
fn a_renamed_source_is_warned_about_and_the_old_name_can_be_forgotten() {
    let db = PgServer::get().fresh_db();
    let (old, new) = (name("old"), name("new"));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(
        db.exec("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a')"),
    );
    let w = Workdir::new();
    let cfg = w.config();
    let cfg_s = cfg.to_str().expect("path");
    let run_once = |source: &str| {
        write_config(&w, free_port(), &db.server.source_toml(db.name(), source));
        let (code, _, err) = output(&["run", "--config", cfg_s, "--max-events", "1"], &[]);
        assert_eq!(code, 0, "{err}");
        err
    };
    let err = run_once(&old);
    assert!(!err.contains("no longer defines"), "{err}");
    let err = run_once(&new);
    for needle in [
        format!("checkpoint for source {old:?}, which the config no longer defines"),
        "rename it back".to_owned(),
        format!("logtide reset --source {old}"),
        format!("pg_drop_replication_slot('logtide_{old}')"),
    ] {
        assert!(err.contains(&needle), "{needle}\n{err}");
    }
    let (code, out, err) = output(
        &["reset", "--config", cfg_s, "--source", &old, "--yes"],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = output(
        &["reset", "--config", cfg_s, "--source", "never-was", "--yes"],
        &[],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("nothing stored for it"), "{err}");
    rt.block_on(db.exec("INSERT INTO t VALUES (2, 'b')"));
    let err = run_once(&new);
    assert!(!err.contains("no longer defines"), "{err}");
    for n in [&old, &new] {
        rt.block_on(db.exec(&format!("SELECT pg_drop_replication_slot('logtide_{n}')")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_fails_when_no_jetstream_stream_stores_the_subjects() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nats = crate::sink_util::NatsServer::start(dir.path()).await;
    let w = Workdir::new();
    let source = "[[sources]]\nkind = \"query\"\nname = \"q\"\nprotocol = \"postgres\"\nhost = \"127.0.0.1\"\nport = 1\nuser = \"u\"\ndatabase = \"d\"\nquery = \"SELECT 1 AS id, now() AS ts WHERE now() > {{cursor}}\"\ncursor_column = \"ts\"\ninitial_cursor = \"2020-01-01\"\ntable = \"public.t\"\n";
    let base = format!(
        "[state]\npath = {:?}\n\n{source}\n[[sinks]]\nkind = \"nats\"\nname = \"bus\"\nurl = \"{}\"\n",
        w.state(),
        nats.url()
    );
    std::fs::write(w.config(), &base).expect("config");
    let cfg = w.config();
    let cfg_s = cfg.to_str().expect("path").to_owned();
    let check = move |cfg_s: String| {
        let o = run_to_end(&["check", "--config", &cfg_s, "--source", "q"], &[]);
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let c = cfg_s.clone();
    let out = tokio::task::spawn_blocking(move || check(c))
        .await
        .expect("join");
    assert!(
        out.lines().any(|l| l.starts_with("FAIL sink bus: ")
            && l.contains("no JetStream stream stores logtide.q.")),
        "{out}"
    );
    // With `stream = {...}` logtide creates it: ok.
    std::fs::write(
        w.config(),
        format!("{base}stream = {{ name = \"FH\", subjects = [\"logtide.>\"] }}\n"),
    )
    .expect("config");
    let c = cfg_s.clone();
    let out = tokio::task::spawn_blocking(move || {
        let o = run_to_end(&["check", "--config", &c, "--source", "q"], &[]);
        String::from_utf8_lossy(&o.stdout).into_owned()
    })
    .await
    .expect("join");
    assert!(
        out.lines()
            .any(|l| l.starts_with("ok sink bus: ") && l.contains("created at the first delivery")),
        "{out}"
    );
    assert!(!out.lines().any(|l| l.starts_with("FAIL sink")), "{out}");
}

/// A MySQL filter entry that names nothing (a typo in a column exclude, a table that does
/// not exist) stops `run` before anything is read — the column it meant to hide never
/// leaks — and is a FAIL in `check`; fixed, the source runs and the column stays out.
#[test]
fn mysql_filter_entries_that_match_nothing_are_refused() {
    let my = crate::common::mariadb::MariaServer::get();
    let db = my.fresh_db();
    my.sql(
        &db,
        "CREATE TABLE users (id INT PRIMARY KEY, email TEXT, password_hash TEXT); \
         INSERT INTO users VALUES (1, 'a@x.io', 'secret')",
    );
    let env = [(
        crate::common::mariadb::PASSWORD_ENV,
        crate::common::mariadb::PASSWORD,
    )];
    let src = |tables: &str, exclude: &str| {
        my.source_toml(&name("myf"), &db).replace(
            &format!("tables = {{ include = [\"{db}.*\"] }}\n"),
            &format!(
                "backfill = \"initial\"\ntables = {tables}\n[sources.columns]\n\"{db}.users\" = {{ exclude = [\"{exclude}\"] }}\n"
            ),
        )
    };
    let w = Workdir::new();
    write_config(
        &w,
        free_port(),
        &src(
            &format!("{{ include = [\"{db}.users\"], exclude = [\"{db}.audit\"] }}"),
            "pasword_hash",
        ),
    );
    let cfg = w.config();
    let cfg = cfg.to_str().expect("utf-8 path");
    let mut child = spawn_run(&w, &[], &env);
    let st = wait_exit(&mut child, WAIT);
    let log = crate::common::run::logs(&w);
    assert_eq!(st.code(), Some(3), "{log}");
    assert!(
        log.contains("pasword_hash") && log.contains(&format!("{db}.audit")),
        "{log}"
    );
    let text = std::fs::read_to_string(w.out()).unwrap_or_default();
    assert!(!text.contains("secret"), "nothing leaked: {text}");
    let (code, out, err) = output(&["check", "-c", cfg], &env);
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("FAIL") && l.contains("pasword_hash")),
        "{out}"
    );
    // Fixed: it runs, and the column stays out.
    write_config(
        &w,
        free_port(),
        &src(
            &format!("{{ include = [\"{db}.users\"] }}"),
            "password_hash",
        ),
    );
    let mut child = spawn_run(&w, &[], &env);
    let ev = w.wait_events(1, WAIT);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        ev[0]["after"],
        serde_json::json!({"id": 1, "email": "a@x.io"})
    );
}

/// A table filter that captures no table of the server (a glob that matches nothing yet)
/// is not an error — tables may come later — but `run` says so loudly, on both engines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_that_captures_nothing_is_a_warning_on_both_engines() {
    let pg = PgServer::get().fresh_db();
    pg.exec("CREATE TABLE t (id int PRIMARY KEY)").await;
    let my = crate::common::mariadb::MariaServer::get();
    let mdb = my.fresh_db();
    my.sql(&mdb, "CREATE TABLE t (id INT PRIMARY KEY)");
    let sources = format!(
        "{}tables = {{ include = [\"public.nothing_*\"] }}\n\n{}",
        pg.server.source_toml(pg.name(), &name("pgnone")),
        my.source_toml(&name("mynone"), &mdb).replace(
            &format!("include = [\"{mdb}.*\"]"),
            &format!("include = [\"{mdb}.nothing_*\"]")
        )
    );
    let w = Workdir::new();
    write_config(&w, free_port(), &sources);
    let env = [
        (crate::common::pg::PASSWORD_ENV, crate::common::pg::PASSWORD),
        (
            crate::common::mariadb::PASSWORD_ENV,
            crate::common::mariadb::PASSWORD,
        ),
    ];
    let mut child = spawn_run(&w, &[], &env);
    let warned = wait_until(WAIT, || {
        let log = crate::common::run::logs(&w);
        log.lines()
            .filter(|l| l.contains("WARN") && l.contains("captures no table"))
            .count()
            >= 2
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(warned, "{}", crate::common::run::logs(&w));
}
