//! TLS to MariaDB: every connection (SQL, backfill, binlog) is upgraded to TLS in
//! logtide's connection phase; a mode that requires TLS never falls back to plain text,
//! and a server that requires TLS names the setting to change.
//!
//! One private MariaDB with TLS and `require_secure_transport=ON` (so a plain-text
//! connection would be refused: a working stream is itself proof of TLS) serves most tests;
//! the shared instance without TLS serves the refusal test.

use crate::common::mariadb::{source_config, MariaServer, Stream};
use crate::common::run::{logs, spawn_run, wait_exit, Workdir};
use logtide::source::mysql::tls::TlsError;
use logtide::source::mysql::MysqlError;
use logtide::source::ErrorClass;
use std::sync::OnceLock;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// The TLS server with require_secure_transport=ON, shared by this module's tests.
fn tls_server() -> &'static MariaServer {
    static S: OnceLock<MariaServer> = OnceLock::new();
    S.get_or_init(|| {
        let s = MariaServer::builder().tls(true).start();
        let have = s.sql("", "SELECT @@have_ssl");
        assert_eq!(
            have.trim(),
            "YES",
            "MariaDB without TLS support\n{}",
            s.log()
        );
        s
    })
}

/// TLS handshakes the server has accepted so far.
fn ssl_accepts(s: &MariaServer) -> u64 {
    let out = s.sql("", "SHOW GLOBAL STATUS LIKE 'Ssl_accepts'");
    out.split('\t')
        .nth(1)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("Ssl_accepts: {out:?}"))
}

fn ca_toml(path: &std::path::Path) -> String {
    format!("ssl_ca = {:?}\n", path.display().to_string())
}

#[test]
fn run_backfills_and_streams_over_verified_tls() {
    let server = tls_server();
    let db = server.fresh_db();
    server.sql(
        &db,
        "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20)); INSERT INTO t VALUES (1, 'a'), (2, 'b');",
    );
    let before = ssl_accepts(server);
    let w = Workdir::new();
    let source = format!(
        "{}ssl_mode = \"verify_identity\"\n{}",
        server.source_toml("tls", &db),
        ca_toml(&server.ca_pem())
    );
    w.write_config(&source);
    let mut child = spawn_run(&w, &["--max-events", "5"], &[]);
    // The two backfilled rows first, then changes from the binlog.
    w.wait_events(2, WAIT);
    server.sql(&db, "INSERT INTO t VALUES (3, 'c'), (4, 'd'), (5, 'e');");
    let status = wait_exit(&mut child, WAIT);
    assert!(status.success(), "{}", logs(&w));
    let events = w.events();
    let ops: Vec<(&str, i64)> = events
        .iter()
        .map(|e| {
            (
                e["op"].as_str().unwrap_or(""),
                e["after"]["id"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    assert_eq!(
        ops,
        vec![("r", 1), ("r", 2), ("c", 3), ("c", 4), ("c", 5)],
        "{}",
        logs(&w)
    );
    // require_secure_transport refuses plain TCP, and the server counted the handshakes
    // (at least the backfill, metadata and binlog connections).
    let after = ssl_accepts(server);
    assert!(after >= before + 2, "Ssl_accepts {before} -> {after}");
    // `logtide check` reports the TLS session.
    let out = crate::common::run::run_to_end(
        &["check", "--config", &w.config().display().to_string()],
        &[],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("TLS") && text.contains("certificate and host name verified"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn source_and_backfill_connections_are_encrypted() {
    let server = tls_server();
    let db = server.fresh_db();
    server.sql(&db, "CREATE TABLE t (id INT PRIMARY KEY)");
    for mode in ["verify_ca", "verify_identity", "required", "preferred"] {
        let extra = if mode.starts_with("verify") {
            format!("ssl_mode = \"{mode}\"\n{}", ca_toml(&server.ca_pem()))
        } else {
            format!("ssl_mode = \"{mode}\"\n")
        };
        let cfg = source_config(server, &db, &extra);
        // The backfill's SQL connection: the server sees a TLS session.
        let mut conn = logtide::backfill::mysql::connect(&cfg, &cfg.endpoint())
            .unwrap_or_else(|e| panic!("{mode}: {e:?}\n{}", server.log()));
        let rs = conn
            .query("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
            .expect("status");
        let cipher = rs.text(0, 1).unwrap_or_default();
        assert!(!cipher.is_empty(), "{mode}: no TLS cipher on the session");
        drop(conn);

        // The binlog stream.
        let mut stream = Stream::start(cfg, None, 64);
        let first = stream.next(WAIT).expect("initial boundary");
        assert!(matches!(first, logtide::source::SourceMessage::Boundary(_)));
        server.sql(&db, &format!("INSERT INTO t VALUES ({})", mode.len()));
        let end = server.binlog_position();
        let got = Stream::changes(stream.until(&end, WAIT));
        assert_eq!(got.len(), 1, "{mode}: {got:?}");
        stream.stop();
        server.sql(&db, "DELETE FROM t");
    }
}

#[test]
fn a_wrong_ca_is_a_permanent_certificate_error() {
    let server = tls_server();
    let db = server.fresh_db();
    let extra = format!(
        "ssl_mode = \"verify_ca\"\n{}",
        ca_toml(&server.other_ca_pem())
    );
    let e = Stream::start(source_config(server, &db, &extra), None, 8).error(WAIT);
    assert!(
        matches!(&e, MysqlError::Tls(TlsError::Handshake { .. })),
        "{e:?}"
    );
    assert_eq!(e.class(), ErrorClass::Permanent, "{e:?}");
    let chain = format!("{e} / {:?}", e);
    assert!(chain.contains("ssl_ca"), "{chain}");
    assert!(
        chain.contains("UnknownIssuer") || chain.to_lowercase().contains("certificate"),
        "{chain}"
    );
    // The binary says the same and exits non-zero.
    let w = Workdir::new();
    w.write_config(&format!(
        "{}ssl_mode = \"verify_ca\"\n{}",
        server.source_toml("wrongca", &db),
        ca_toml(&server.other_ca_pem())
    ));
    let mut child = spawn_run(&w, &[], &[]);
    assert!(!wait_exit(&mut child, WAIT).success(), "{}", logs(&w));
    assert!(logs(&w).contains("TLS handshake"), "{}", logs(&w));
}

#[test]
fn disabled_against_require_secure_transport_names_ssl_mode() {
    let server = tls_server();
    let db = server.fresh_db();
    let e = Stream::start(
        source_config(server, &db, "ssl_mode = \"disabled\"\n"),
        None,
        8,
    )
    .error(WAIT);
    assert!(
        matches!(&e, MysqlError::Tls(TlsError::ServerRequiresTls { .. })),
        "{e:?}"
    );
    assert_eq!(e.class(), ErrorClass::Permanent);
    let msg = e.to_string();
    assert!(
        msg.contains("ssl_mode = \"required\"") && msg.contains("refuses unencrypted"),
        "{msg}"
    );
    let w = Workdir::new();
    w.write_config(&format!(
        "{}ssl_mode = \"disabled\"\n",
        server.source_toml("plain", &db)
    ));
    let mut child = spawn_run(&w, &[], &[]);
    assert!(!wait_exit(&mut child, WAIT).success(), "{}", logs(&w));
    assert!(logs(&w).contains("ssl_mode"), "{}", logs(&w));
}

#[test]
fn required_against_a_server_without_tls_is_refused() {
    let server = MariaServer::get();
    let have = server.sql("", "SELECT @@have_ssl");
    assert_ne!(have.trim(), "YES", "the shared instance should have no TLS");
    let db = server.fresh_db();
    for mode in ["required", "verify_ca", "verify_identity"] {
        let e = Stream::start(
            source_config(server, &db, &format!("ssl_mode = \"{mode}\"\n")),
            None,
            8,
        )
        .error(WAIT);
        assert!(
            matches!(&e, MysqlError::Tls(TlsError::NotOffered { .. })),
            "{mode}: {e:?}"
        );
        assert_eq!(e.class(), ErrorClass::Permanent);
        let msg = e.to_string();
        assert!(
            msg.contains("does not offer TLS") && msg.contains(mode),
            "{msg}"
        );
    }
    // preferred goes on in plain text.
    server.sql(&db, "CREATE TABLE t (id INT PRIMARY KEY)");
    let cfg = source_config(server, &db, "ssl_mode = \"preferred\"\n");
    let mut conn = logtide::backfill::mysql::connect(&cfg, &cfg.endpoint())
        .expect("preferred connects without TLS");
    let rs = conn
        .query("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        .expect("status");
    assert_eq!(rs.text(0, 1).unwrap_or_default(), "");
    drop(conn);
    // The binary: exit non-zero with the refusal.
    let w = Workdir::new();
    w.write_config(&format!(
        "{}ssl_mode = \"required\"\n",
        server.source_toml("req", &db)
    ));
    let mut child = spawn_run(&w, &[], &[]);
    assert!(!wait_exit(&mut child, WAIT).success(), "{}", logs(&w));
    assert!(logs(&w).contains("does not offer TLS"), "{}", logs(&w));
}

#[test]
fn query_mode_over_mysql_uses_tls_too() {
    let server = tls_server();
    let db = server.fresh_db();
    server.sql(
        &db,
        "CREATE TABLE q (id INT PRIMARY KEY, v TEXT); INSERT INTO q VALUES (1, 'a'), (2, 'b'), (3, 'c')",
    );
    let before = ssl_accepts(server);
    let w = Workdir::new();
    // require_secure_transport=ON: only a TLS session can read the rows.
    w.write_config(&format!(
        "[[sources]]\nkind = \"query\"\nprotocol = \"mysql\"\nname = \"qtls\"\nhost = \"127.0.0.1\"\n\
         port = {}\nuser = \"{}\"\npassword_env = \"{}\"\ndatabase = \"{db}\"\nsslmode = \"require\"\n\
         query = \"SELECT id, v FROM q WHERE id > {{{{cursor}}}}\"\ncursor_column = \"id\"\n\
         key_columns = [\"id\"]\ntable = \"{db}.q\"\ninterval = \"1h\"\ninitial_cursor = \"0\"\n",
        server.port(),
        crate::common::mariadb::USER,
        crate::common::mariadb::PASSWORD_ENV,
    ));
    let mut child = spawn_run(&w, &["--max-events", "3"], &[]);
    assert!(wait_exit(&mut child, WAIT).success(), "{}", logs(&w));
    assert_eq!(w.events().len(), 3, "{}", logs(&w));
    assert!(ssl_accepts(server) > before);
}
