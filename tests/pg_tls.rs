//! TLS against a private PostgreSQL with `ssl = on` and a certificate made at test time by
//! the `openssl` CLI: a test CA, a server certificate for `localhost` signed by it, and an
//! unrelated CA. Covers the SQL connection (`connect_sql`, every sslmode) and the raw
//! upgrade after SSLRequest (`tls::connect`) used by the replication connection.

use crate::common::pg::{self, PgServer};
use logtide::config::{PostgresSourceConfig, SslMode};
use logtide::endpoint::Endpoint;
use logtide::source::postgres::conn::ReplConnection;
use logtide::source::postgres::tls;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Certs {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    wrong_ca: PathBuf,
}

struct Setup {
    server: PgServer,
    certs: Certs,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
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

fn make_ca(dir: &Path, name: &str) {
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
            &format!("/CN={name}"),
        ],
    );
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        make_ca(d, "logtide-test-ca");
        make_ca(d, "unrelated-ca");
        openssl(
            d,
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
        // SAN DNS:localhost only, so connecting to 127.0.0.1 is a hostname mismatch.
        std::fs::write(
            d.join("ext.cnf"),
            "subjectAltName=DNS:localhost\nbasicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .expect("write ext");
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "logtide-test-ca.crt",
                "-CAkey",
                "logtide-test-ca.key",
                "-CAcreateserial",
                "-out",
                "server.crt",
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
            ],
        );
        let read = |n: &str| std::fs::read(d.join(n)).expect("read cert");
        let server = PgServer::builder()
            .setting("ssl", "on")
            .setting("ssl_cert_file", "server.crt")
            .setting("ssl_key_file", "server.key")
            .data_file("server.crt", &read("server.crt"), 0o644)
            .data_file("server.key", &read("server.key"), 0o600)
            .start();
        let certs = Certs {
            ca: d.join("logtide-test-ca.crt"),
            wrong_ca: d.join("unrelated-ca.crt"),
            _dir: dir,
        };
        Setup { server, certs }
    })
}

fn source(server: &PgServer, host: &str, mode: &str, root: Option<&Path>) -> PostgresSourceConfig {
    let mut t = format!(
        "name = \"tls\"\nhost = \"{host}\"\nport = {}\nuser = \"{}\"\npassword_env = \"{}\"\n\
         database = \"postgres\"\nsslmode = \"{mode}\"\nconnect_timeout = \"10s\"\n",
        server.port(),
        pg::USER,
        pg::PASSWORD_ENV,
    );
    if let Some(r) = root {
        t.push_str(&format!("sslrootcert = \"{}\"\n", r.display()));
    }
    toml::from_str(&t).expect("valid source config")
}

/// Connects with `connect_sql` to the configured host, drives the connection, and reports
/// whether the session is encrypted (pg_stat_ssl).
async fn sql_ssl(cfg: &PostgresSourceConfig) -> Result<bool, tls::TlsError> {
    sql_ssl_at(cfg, &cfg.endpoint()).await
}

/// [`sql_ssl`] connecting to `at`.
async fn sql_ssl_at(cfg: &PostgresSourceConfig, at: &Endpoint) -> Result<bool, tls::TlsError> {
    let (client, conn) = tls::connect_sql(cfg, at).await?;
    let task = tokio::spawn(conn);
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("query pg_stat_ssl");
    drop(client);
    let _ = task.await;
    Ok(row.get(0))
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[tokio::test]
async fn verify_full_with_the_right_root_is_encrypted() {
    let s = setup();
    let cfg = source(&s.server, "localhost", "verify-full", Some(&s.certs.ca));
    assert!(sql_ssl(&cfg).await.expect("verify-full connects"));
}

#[tokio::test]
async fn verify_full_rejects_a_wrong_root_the_web_roots_and_a_wrong_host() {
    let s = setup();
    for (host, root) in [
        ("localhost", Some(s.certs.wrong_ca.as_path())),
        ("localhost", None),
        ("127.0.0.1", Some(s.certs.ca.as_path())),
    ] {
        let cfg = source(&s.server, host, "verify-full", root);
        let e = sql_ssl(&cfg).await.expect_err("verify-full must fail");
        let msg = chain(&e);
        eprintln!("verify-full {host} {root:?}: {msg}");
        assert!(
            msg.contains("certificate") || msg.contains("Certificate"),
            "{msg}"
        );
        assert!(!msg.contains(pg::PASSWORD), "no secret in errors: {msg}");
    }
}

#[tokio::test]
async fn require_and_prefer_encrypt_without_verifying() {
    let s = setup();
    // The certificate's issuer is unknown and 127.0.0.1 is not in it: still accepted.
    for (host, mode) in [
        ("127.0.0.1", "require"),
        ("localhost", "require"),
        ("127.0.0.1", "prefer"),
    ] {
        let cfg = source(&s.server, host, mode, None);
        assert!(
            sql_ssl(&cfg).await.expect("connects"),
            "{mode} on {host} encrypts"
        );
    }
    let cfg = source(&s.server, "127.0.0.1", "disable", None);
    assert!(
        !sql_ssl(&cfg).await.expect("connects"),
        "disable is plain text"
    );
}

#[tokio::test]
async fn without_server_tls_prefer_falls_back_and_require_fails() {
    let plain = PgServer::get();
    let cfg = source(plain, "127.0.0.1", "prefer", None);
    assert!(!sql_ssl(&cfg).await.expect("prefer falls back to plain"));
    let cfg = source(plain, "127.0.0.1", "require", None);
    let e = sql_ssl(&cfg).await.expect_err("require must fail");
    assert!(chain(&e).contains("TLS"), "{}", chain(&e));
}

/// The replication connection itself (`ReplConnection::connect`) over TLS with `require`
/// and `prefer`: IDENTIFY_SYSTEM works and the server reports this session encrypted.
/// (Was the `#[ignore]`d `live_tls` in `src/source/postgres/mod.rs`.)
#[tokio::test]
async fn replication_connection_is_encrypted_with_require_and_prefer() {
    let s = setup();
    let password = logtide::config::Secret::new(pg::PASSWORD.into());
    for mode in ["require", "prefer"] {
        let cfg = source(&s.server, "127.0.0.1", mode, None);
        let mut conn = ReplConnection::connect(&cfg, &cfg.endpoint(), Some(&password))
            .await
            .unwrap_or_else(|e| panic!("{mode}: {e}"));
        conn.identify_system().await.expect("identify over tls");
        let rows = conn
            .simple_query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .await
            .expect("query pg_stat_ssl");
        assert_eq!(rows, vec![vec![Some("t".to_owned())]], "{mode}");
    }
}

/// The replication path: SSLRequest by hand, then `tls::connect`, then a startup message
/// through the TLS stream is answered with an authentication request.
#[tokio::test]
async fn raw_upgrade_after_ssl_request() {
    let s = setup();
    for (mode, root, ok) in [
        (SslMode::VerifyFull, Some(s.certs.ca.as_path()), true),
        (SslMode::Require, None, true),
        (SslMode::VerifyFull, Some(s.certs.wrong_ca.as_path()), false),
    ] {
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", s.server.port()))
            .await
            .expect("tcp");
        let mut buf = bytes::BytesMut::new();
        postgres_protocol::message::frontend::ssl_request(&mut buf);
        tcp.write_all(&buf).await.expect("ssl request");
        let mut answer = [0u8; 1];
        tcp.read_exact(&mut answer).await.expect("answer");
        assert_eq!(answer[0], b'S');
        let res = tls::connect(tcp, "localhost", mode, root).await;
        if !ok {
            let e = res.expect_err("wrong root must fail");
            assert!(matches!(e, tls::TlsError::Handshake { .. }), "{e:?}");
            continue;
        }
        let mut stream = res.expect("handshake");
        let mut buf = bytes::BytesMut::new();
        postgres_protocol::message::frontend::startup_message(
            [("user", pg::USER), ("database", "postgres")].into_iter(),
            &mut buf,
        )
        .expect("startup message");
        stream.write_all(&buf).await.expect("send startup");
        stream.flush().await.expect("flush");
        let mut tag = [0u8; 1];
        stream.read_exact(&mut tag).await.expect("read reply");
        assert_eq!(tag[0], b'R', "authentication request over TLS");
    }
    assert!(matches!(
        tls::client_config(SslMode::Disable, None),
        Err(tls::TlsError::Disabled)
    ));
}

/// The TLS stream's `tls-server-end-point` binding is right: with channel binding required,
/// tokio-postgres must authenticate with SCRAM-SHA-256-PLUS, which the server checks
/// against the hash of its own certificate.
#[tokio::test]
async fn scram_plus_channel_binding_is_accepted_by_the_server() {
    let s = setup();
    for (mode, root) in [
        (SslMode::Require, None),
        (SslMode::VerifyFull, Some(s.certs.ca.as_path())),
    ] {
        let mut cfg = s.server.pg_config("postgres");
        cfg.host("localhost")
            .ssl_mode(tokio_postgres::config::SslMode::Require)
            .channel_binding(tokio_postgres::config::ChannelBinding::Require);
        let tls = tls::make_tls_connect(mode, root).expect("tls");
        // Seen once under heavy machine load (5 runs in a row; not reproduced in 30+ runs
        // since): "server did not use channel binding". On failure, name the mode and
        // show the server log.
        let (client, conn) = match cfg.connect(tls).await {
            Ok(x) => x,
            Err(e) => panic!("{mode:?}: {e:?}\nLOG:\n{}", s.server.log()),
        };
        let task = tokio::spawn(conn);
        let one: i32 = client
            .query_one("SELECT 1", &[])
            .await
            .expect("query")
            .get(0);
        assert_eq!(one, 1);
        drop(client);
        let _ = task.await;
    }
}

#[tokio::test]
async fn verify_full_checks_the_database_name_behind_an_ssh_tunnel() {
    let s = setup();
    // A tunnel's endpoint points the source at 127.0.0.1 (not in the certificate) and
    // keeps the database's host name for TLS; the config is not changed.
    let cfg = source(&s.server, "localhost", "verify-full", Some(&s.certs.ca));
    let tunneled = Endpoint::tunnel(s.server.port(), &cfg.host);
    assert_eq!(tunneled.host, "127.0.0.1");
    assert_eq!(tunneled.tls_host(), "localhost");
    assert!(sql_ssl_at(&cfg, &tunneled)
        .await
        .expect("verified as localhost"));
    assert_eq!(cfg.host, "localhost");
    // The same address without the kept name fails verification.
    let plain = Endpoint::direct("127.0.0.1", s.server.port());
    assert!(sql_ssl_at(&cfg, &plain).await.is_err());
}
