//! Private MariaDB instances for tests.
//!
//! * [`MariaServer::get`]: one shared instance per test process, started lazily (log-bin,
//!   ROW, FULL image, `binlog_row_metadata=FULL`, `max_allowed_packet=256M`). Tests share it,
//!   so each takes a [`MariaServer::fresh_db`] and its own `server_id`.
//! * [`MariaServer::builder`]: a private instance with other settings
//!   (`binlog_row_metadata=MINIMAL`, `binlog_format=STATEMENT`, …); a test that restarts or
//!   kills a server must use one of these. Dropping it kills it and removes its directory.
//!
//! `mariadb-server` is installed with apt-get when `mariadbd` is missing. An instance lives
//! under `$TMPDIR/logtide-mariadb/<test pid>-<n>/` (datadir, socket, error log `err.log`,
//! printed in panics). A watchdog process outside the test's process group holds a pipe from
//! the test process and kills the server and removes the directory when the pipe closes,
//! however the test process ended.
//!
//! [`MariaBuilder::tls`] gives an instance TLS: a test CA and a server certificate (for
//! `127.0.0.1` and `localhost`) made with the `openssl` CLI in `<instance>/tls/`
//! ([`MariaServer::ca_pem`]), plus a second, unrelated CA ([`MariaServer::other_ca_pem`]);
//! optionally `require_secure_transport=ON` (the unix socket the harness uses counts as
//! secure).
//!
//! Users (TCP on 127.0.0.1, `mysql_native_password`): [`USER`] with exactly `REPLICATION
//! SLAVE, BINLOG MONITOR, SELECT` (what logtide needs), [`ADMIN`] with all privileges for the
//! tests' own writes; root has no password on the socket. Every wait is on a condition with
//! a timeout, never a bare sleep.
#![allow(dead_code)]

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Mutex, Once, OnceLock};
use std::time::{Duration, Instant};

/// The replication user logtide connects as.
pub const USER: &str = "logtide";
pub const PASSWORD: &str = "logtide-repl-pw";
/// All privileges, for the tests' own writes.
pub const ADMIN: &str = "admin";
pub const ADMIN_PASSWORD: &str = "admin-pw";
/// Environment variable the harness sets to [`PASSWORD`], for `password_env`.
pub const PASSWORD_ENV: &str = "LOGTIDE_TEST_MARIADB_PASSWORD";

const TIMEOUT: Duration = Duration::from_secs(60);

static SHARED: OnceLock<MariaServer> = OnceLock::new();
static INSTALL: Once = Once::new();
static NEXT_INSTANCE: AtomicUsize = AtomicUsize::new(0);
static NEXT_DB: AtomicUsize = AtomicUsize::new(0);
static NEXT_SERVER_ID: AtomicU32 = AtomicU32::new(100);

/// Settings of an instance to start.
#[derive(Clone)]
pub struct MariaBuilder {
    settings: Vec<(String, String)>,
    /// `Some(require_secure_transport)`: start with TLS.
    tls: Option<bool>,
}

impl MariaBuilder {
    /// A server option (`--name=value`), e.g. `("binlog-row-metadata", "MINIMAL")`.
    pub fn setting(mut self, name: &str, value: &str) -> Self {
        self.settings.retain(|(n, _)| n != name);
        self.settings.push((name.to_owned(), value.to_owned()));
        self
    }
    pub fn row_metadata(self, v: &str) -> Self {
        self.setting("binlog-row-metadata", v)
    }
    pub fn binlog_format(self, v: &str) -> Self {
        self.setting("binlog-format", v)
    }
    /// TLS with a test CA (see the module doc); `require_secure_transport` refuses
    /// unencrypted TCP connections.
    pub fn tls(mut self, require_secure_transport: bool) -> Self {
        self.tls = Some(require_secure_transport);
        self
    }
    pub fn start(self) -> MariaServer {
        MariaServer::launch(self)
    }
}

/// A running private MariaDB.
pub struct MariaServer {
    root: PathBuf,
    port: u16,
    builder: MariaBuilder,
    child: Mutex<Option<Child>>,
    watchdog: Mutex<Option<(Child, ChildStdin)>>,
}

impl MariaServer {
    /// The shared instance of this test process (every module of `tests/main.rs`).
    pub fn get() -> &'static MariaServer {
        SHARED.get_or_init(|| MariaServer::builder().start())
    }

    pub fn builder() -> MariaBuilder {
        MariaBuilder {
            settings: vec![
                ("binlog-format".into(), "ROW".into()),
                ("binlog-row-image".into(), "FULL".into()),
                ("binlog-row-metadata".into(), "FULL".into()),
                ("max-allowed-packet".into(), "256M".into()),
            ],
            tls: None,
        }
    }

    /// The test CA that signed the server certificate (instances built with `tls`).
    pub fn ca_pem(&self) -> PathBuf {
        self.root.join("tls").join("ca.pem")
    }
    /// A CA that did not sign the server certificate.
    pub fn other_ca_pem(&self) -> PathBuf {
        self.root.join("tls").join("other-ca.pem")
    }

    pub fn port(&self) -> u16 {
        self.port
    }
    pub fn socket(&self) -> PathBuf {
        self.root.join("sock")
    }
    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }
    /// The end of the error log, for panic messages.
    pub fn log(&self) -> String {
        let t = std::fs::read_to_string(self.root.join("err.log")).unwrap_or_default();
        let lines: Vec<&str> = t.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// A new database (utf8mb4) on this server.
    pub fn fresh_db(&self) -> String {
        let name = format!(
            "t{}_{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::SeqCst)
        );
        self.sql(
            "",
            &format!("CREATE DATABASE `{name}` CHARACTER SET utf8mb4"),
        );
        name
    }

    /// A `server_id` no other reader of this test process uses.
    pub fn server_id() -> u32 {
        NEXT_SERVER_ID.fetch_add(1, Ordering::SeqCst)
    }

    /// Runs SQL as root over the socket (utf8mb4) and returns the tab-separated output
    /// (no column names; NULL printed as `NULL`). Panics with the server log on failure.
    pub fn sql(&self, db: &str, sql: &str) -> String {
        let mut c = Command::new("mariadb");
        c.arg("--no-defaults")
            .arg(format!("--socket={}", self.socket().display()))
            .args([
                "-uroot",
                "--batch",
                "--raw",
                "--skip-column-names",
                "--default-character-set=utf8mb4",
            ]);
        if !db.is_empty() {
            c.arg(format!("--database={db}"));
        }
        let out = run_client(c, sql);
        assert!(
            out.status.success(),
            "SQL failed: {sql}\n{}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Like [`Self::sql`] but returns the error text instead of panicking.
    pub fn try_sql(&self, db: &str, sql: &str) -> Result<String, String> {
        let mut c = Command::new("mariadb");
        c.arg("--no-defaults")
            .arg(format!("--socket={}", self.socket().display()))
            .args([
                "-uroot",
                "--batch",
                "--raw",
                "--skip-column-names",
                "--default-character-set=utf8mb4",
            ]);
        if !db.is_empty() {
            c.arg(format!("--database={db}"));
        }
        let out = run_client(c, sql);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// The server's own SELECT output: rows of cells (`None` for NULL).
    pub fn select(&self, db: &str, sql: &str) -> Vec<Vec<Option<String>>> {
        self.sql(db, sql)
            .lines()
            .map(|l| {
                l.split('\t')
                    .map(|c| {
                        if c == "NULL" {
                            None
                        } else {
                            Some(c.to_owned())
                        }
                    })
                    .collect()
            })
            .collect()
    }

    /// `SHOW MASTER STATUS`: the current binlog file and the offset of the next event.
    /// Rows of `sql` as first column -> the others (compare with
    /// `run::consumer_text_rows`).
    pub fn rows_by_key(
        &self,
        db: &str,
        sql: &str,
    ) -> std::collections::BTreeMap<String, Vec<Option<String>>> {
        self.select(db, sql)
            .into_iter()
            .map(|mut r| {
                let k = r.remove(0).expect("key column");
                (k, r)
            })
            .collect()
    }

    pub fn binlog_position(&self) -> (String, u64) {
        let out = self.sql("", "SHOW MASTER STATUS");
        let mut f = out.split('\t');
        let file = f.next().unwrap_or_default().trim().to_owned();
        let pos = f
            .next()
            .unwrap_or("0")
            .trim()
            .parse()
            .expect("binlog position");
        (file, pos)
    }

    /// A `[[sources]]` table for this server (user [`USER`], password from [`PASSWORD_ENV`]).
    pub fn source_toml(&self, name: &str, db: &str) -> String {
        format!(
            "[[sources]]\nkind = \"mysql\"\nname = \"{name}\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"{USER}\"\npassword_env = \"{PASSWORD_ENV}\"\nserver_id = {}\nheartbeat = \"1s\"\ntables = {{ include = [\"{db}.*\"] }}\n",
            self.port,
            Self::server_id()
        )
    }

    /// Starts the server (again) and waits until it answers.
    pub fn start(&self) {
        let b = &self.builder;
        let mut c = Command::new("mariadbd");
        c.arg("--no-defaults")
            .arg(format!("--datadir={}", self.data_dir().display()))
            .arg(format!("--port={}", self.port))
            .arg(format!("--socket={}", self.socket().display()))
            .arg(format!("--pid-file={}", self.root.join("pid").display()))
            .arg(format!(
                "--log-bin={}",
                self.data_dir().join("mysql-bin").display()
            ))
            .arg(format!(
                "--log-error={}",
                self.root.join("err.log").display()
            ))
            .arg(format!("--tmpdir={}", self.root.join("tmp").display()))
            .args([
                "--server-id=1",
                "--user=root",
                "--bind-address=127.0.0.1",
                "--innodb-buffer-pool-size=64M",
                "--innodb-log-file-size=256M",
                "--skip-name-resolve",
                "--character-set-server=utf8mb4",
            ]);
        for (k, v) in &b.settings {
            c.arg(format!("--{k}={v}"));
        }
        let child = c
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mariadbd");
        *self.child.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
        let ok = wait_until(TIMEOUT, || self.try_sql("", "SELECT 1").is_ok());
        assert!(
            ok,
            "mariadbd did not start within {TIMEOUT:?}\n{}",
            self.log()
        );
    }

    /// Kills the server with SIGKILL and waits for it to be gone.
    pub fn kill9(&self) {
        if let Some(mut ch) = self.child.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = ch.kill();
            let _ = ch.wait();
        }
    }

    /// Shuts the server down cleanly.
    pub fn stop(&self) {
        let _ = self.try_sql("", "SHUTDOWN");
        if let Some(mut ch) = self.child.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let deadline = Instant::now() + TIMEOUT;
            loop {
                match ch.try_wait() {
                    Ok(Some(_)) => break,
                    _ if Instant::now() > deadline => {
                        let _ = ch.kill();
                        let _ = ch.wait();
                        break;
                    }
                    _ => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
    }

    pub fn restart(&self) {
        self.stop();
        self.start();
    }

    fn launch(mut builder: MariaBuilder) -> MariaServer {
        ensure_installed();
        super::set_env(PASSWORD_ENV, PASSWORD);
        let base = std::env::temp_dir().join("logtide-mariadb");
        remove_stale(&base);
        let root = base.join(format!(
            "{}-{}",
            std::process::id(),
            NEXT_INSTANCE.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("create instance dir");
        if let Some(require) = builder.tls {
            let dir = root.join("tls");
            make_certs(&dir);
            for (k, f) in [
                ("ssl-ca", "ca.pem"),
                ("ssl-cert", "server.pem"),
                ("ssl-key", "server.key"),
            ] {
                builder = builder.setting(k, &dir.join(f).display().to_string());
            }
            if require {
                builder = builder.setting("require-secure-transport", "ON");
            }
        }
        let server = MariaServer {
            port: free_port(),
            root,
            builder,
            child: Mutex::new(None),
            watchdog: Mutex::new(None),
        };
        // Parallel installs clash on temporary tables in a shared tmpdir: one at a time,
        // each with its own.
        static INSTALLING: Mutex<()> = Mutex::new(());
        let one = INSTALLING.lock().unwrap_or_else(|e| e.into_inner());
        std::fs::create_dir_all(server.root.join("tmp")).expect("create tmpdir");
        let out = Command::new("mariadb-install-db")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", server.data_dir().display()))
            .arg(format!("--tmpdir={}", server.root.join("tmp").display()))
            .args([
                "--auth-root-authentication-method=normal",
                "--user=root",
                "--skip-test-db",
            ])
            .output()
            .expect("run mariadb-install-db");
        assert!(
            out.status.success(),
            "mariadb-install-db failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        drop(one);
        server.spawn_watchdog();
        server.start();
        server.sql(
            "",
            &format!(
                "CREATE USER '{USER}'@'%' IDENTIFIED VIA mysql_native_password USING PASSWORD('{PASSWORD}');\
                 GRANT REPLICATION SLAVE, BINLOG MONITOR, SELECT ON *.* TO '{USER}'@'%';\
                 CREATE USER '{ADMIN}'@'%' IDENTIFIED VIA mysql_native_password USING PASSWORD('{ADMIN_PASSWORD}');\
                 GRANT ALL PRIVILEGES ON *.* TO '{ADMIN}'@'%' WITH GRANT OPTION;"
            ),
        );
        server
    }

    /// A process outside our process group that waits for EOF on a pipe only this process
    /// holds, then kills the server and removes the directory.
    fn spawn_watchdog(&self) {
        let script = format!(
            "cat >/dev/null; [ -f '{0}/pid' ] && kill -9 $(cat '{0}/pid') 2>/dev/null; rm -rf '{0}'",
            self.root.display()
        );
        let child = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn();
        if let Ok(mut child) = child {
            if let Some(stdin) = child.stdin.take() {
                *self.watchdog.lock().unwrap_or_else(|e| e.into_inner()) = Some((child, stdin));
            }
        }
    }
}

impl Drop for MariaServer {
    fn drop(&mut self) {
        self.kill9();
        let wd = self
            .watchdog
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some((mut child, stdin)) = wd {
            drop(stdin);
            let _ = child.wait();
        }
    }
}

/// A test CA (`ca.pem`), a server certificate it signed for 127.0.0.1 and localhost
/// (`server.pem`, `server.key`), and an unrelated CA (`other-ca.pem`), in `dir`.
pub fn make_certs(dir: &Path) {
    static OPENSSL: Once = Once::new();
    OPENSSL.call_once(|| {
        if !which("openssl") {
            let ok = Command::new("apt-get")
                .args(["install", "-y", "-q", "openssl"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            assert!(ok, "apt-get install openssl failed");
        }
    });
    std::fs::create_dir_all(dir).expect("create tls dir");
    let ext = dir.join("server.ext");
    std::fs::write(
        &ext,
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .expect("write server.ext");
    let ca = |name: &str, cn: &str| -> Vec<String> {
        [
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3", "-subj",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([
            format!("/CN={cn}"),
            "-addext".into(),
            "basicConstraints=critical,CA:TRUE".into(),
            "-addext".into(),
            "keyUsage=critical,keyCertSign,cRLSign".into(),
            "-keyout".into(),
            format!("{name}.key"),
            "-out".into(),
            format!("{name}.pem"),
        ])
        .collect()
    };
    let steps: Vec<Vec<String>> = vec![
        ca("ca", "logtide test CA"),
        ca("other-ca", "unrelated test CA"),
        [
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        [
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "3",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    ];
    for args in steps {
        let out = Command::new("openssl")
            .args(&args)
            .current_dir(dir)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Runs the client with `sql` on stdin (no argument-length limit).
fn run_client(mut c: Command, sql: &str) -> std::process::Output {
    use std::io::Write as _;
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mariadb client");
    let mut stdin = child.stdin.take().expect("stdin");
    let text = sql.to_owned();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(text.as_bytes());
    });
    let out = child.wait_with_output().expect("mariadb client output");
    let _ = writer.join();
    out
}

/// Polls `cond` until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

use super::port::free_port;

fn ensure_installed() {
    INSTALL.call_once(|| {
        if Path::new("/usr/sbin/mariadbd").exists() || which("mariadbd") {
            return;
        }
        let install = || {
            Command::new("apt-get")
                .args(["install", "-y", "-q", "mariadb-server", "mariadb-client"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        };
        if !install() {
            let _ = Command::new("apt-get").args(["update", "-q"]).status();
            assert!(install(), "apt-get install mariadb-server failed");
        }
    });
}

fn which(bin: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Removes instance directories of test processes that no longer exist.
fn remove_stale(base: &Path) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let Ok(rd) = std::fs::read_dir(base) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.split('-').next())
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    });
}

/// Drives `logtide::source::mysql::run` directly (no pipeline): a bounded channel, a
/// cancellation token, and the messages collected in the test.
pub struct Stream {
    rt: tokio::runtime::Runtime,
    rx: tokio::sync::mpsc::Receiver<logtide::source::SourceMessage>,
    cancel: tokio_util::sync::CancellationToken,
    task: Option<tokio::task::JoinHandle<Result<(), logtide::source::mysql::MysqlError>>>,
    _ck: tokio::sync::watch::Sender<Option<logtide::position::Position>>,
}

/// A source config for `db` on `server` (`extra` is appended TOML, e.g. column filters).
pub fn source_config(
    server: &MariaServer,
    db: &str,
    extra: &str,
) -> logtide::config::MysqlSourceConfig {
    let text = format!(
        "name = \"src\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"{USER}\"\npassword_env = \"{PASSWORD_ENV}\"\nserver_id = {}\nheartbeat = \"1s\"\nconnect_timeout = \"5s\"\ntables = {{ include = [\"{db}.*\"] }}\n{extra}",
        server.port(),
        MariaServer::server_id()
    );
    toml::from_str(&text).expect("mysql source config")
}

/// The checkpoint position `file:pos` (ordinal 0).
pub fn checkpoint(file: &str, pos: u64) -> logtide::position::Position {
    logtide::position::Position::Mysql(logtide::position::MysqlPosition {
        file: file.to_owned(),
        pos,
        ordinal: 0,
        gtid: None,
    })
}

impl Stream {
    /// Starts the source with a channel of `capacity`, resuming from `resume`.
    pub fn start(
        cfg: logtide::config::MysqlSourceConfig,
        resume: Option<logtide::position::Position>,
        capacity: usize,
    ) -> Stream {
        Stream::start_with_store(cfg, resume, capacity, None)
    }

    /// [`Stream::start`] with a state store for the source's own records (schema history).
    pub fn start_with_store(
        cfg: logtide::config::MysqlSourceConfig,
        resume: Option<logtide::position::Position>,
        capacity: usize,
        store: Option<logtide::checkpoint::CheckpointStore>,
    ) -> Stream {
        use std::sync::Arc;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let (tx, rx) = tokio::sync::mpsc::channel(capacity);
        let (ck_tx, ck_rx) = tokio::sync::watch::channel(None);
        let cancel = tokio_util::sync::CancellationToken::new();
        let filter = Arc::new(logtide::filter::Filter::new(
            cfg.tables.clone(),
            cfg.columns.clone(),
        ));
        let ctx = logtide::source::SourceContext {
            tx,
            checkpointed: ck_rx,
            resume_from: resume,
            filter,
            cancel: cancel.clone(),
            report: Default::default(),
            store,
        };
        let info = Arc::new(logtide::event::SourceInfo {
            connector: logtide::event::Connector::Mysql,
            name: cfg.name.clone(),
        });
        let task = rt.spawn(async move {
            let at = cfg.endpoint();
            logtide::source::mysql::run(&cfg, &at, info, ctx).await
        });
        Stream {
            rt,
            rx,
            cancel,
            task: Some(task),
            _ck: ck_tx,
        }
    }

    /// The next message, or `None` after `timeout` or when the source ended.
    pub fn next(&mut self, timeout: Duration) -> Option<logtide::source::SourceMessage> {
        let rx = &mut self.rx;
        self.rt.block_on(async {
            tokio::time::timeout(timeout, rx.recv())
                .await
                .ok()
                .flatten()
        })
    }

    /// Collects messages until a boundary at or after `file:pos` (the binlog position taken
    /// after the workload). Panics on timeout, or with the source's error if it stopped.
    pub fn until(
        &mut self,
        end: &(String, u64),
        timeout: Duration,
    ) -> Vec<logtide::source::SourceMessage> {
        let end = checkpoint(&end.0, end.1);
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left.min(Duration::from_millis(500))) {
                Some(m) => {
                    let done = matches!(&m, logtide::source::SourceMessage::Boundary(p) if p.reached(&end));
                    out.push(m);
                    if done {
                        return out;
                    }
                }
                None => {
                    if self.task.as_ref().is_some_and(|t| t.is_finished()) {
                        let r = self.finish();
                        panic!(
                            "source ended before {end}: {r:?}; got {} messages",
                            out.len()
                        );
                    }
                    if Instant::now() > deadline {
                        panic!(
                            "timed out waiting for a boundary at {end}; got {} messages: {:?}",
                            out.len(),
                            out.last()
                        );
                    }
                }
            }
        }
    }

    /// The change events among `msgs`.
    pub fn changes(msgs: Vec<logtide::source::SourceMessage>) -> Vec<logtide::event::ChangeEvent> {
        msgs.into_iter()
            .filter_map(|m| match m {
                logtide::source::SourceMessage::Change(c) => Some(c),
                _ => None,
            })
            .collect()
    }

    /// Waits for the source to end on its own (an error) within `timeout`.
    pub fn error(mut self, timeout: Duration) -> logtide::source::mysql::MysqlError {
        let deadline = Instant::now() + timeout;
        while !self.task.as_ref().is_some_and(|t| t.is_finished()) {
            assert!(
                Instant::now() < deadline,
                "source did not fail within {timeout:?}"
            );
            let _ = self.next(Duration::from_millis(100));
        }
        match self.finish() {
            Err(e) => e,
            Ok(()) => panic!("source ended without an error"),
        }
    }

    fn finish(&mut self) -> Result<(), logtide::source::mysql::MysqlError> {
        let task = self.task.take().expect("running");
        self.rt.block_on(task).expect("source task panicked")
    }

    /// Cancels and waits; returns how long the source took to stop.
    pub fn stop(mut self) -> Duration {
        let t = Instant::now();
        self.cancel.cancel();
        let r = self.finish();
        assert!(r.is_ok(), "cancelled source returned {r:?}");
        t.elapsed()
    }
}
