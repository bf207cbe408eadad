//! Private PostgreSQL instances for tests.
//!
//! * [`PgServer::get`]: one shared instance per test process (all of `tests/main.rs`),
//!   started lazily (`wal_level=logical`, 400 slots, 100 WAL senders: databases and slots
//!   of finished tests are not dropped, and the whole suite shares this one server). Tests share it, so each test takes a
//!   [`PgServer::fresh_db`] and its own slot/publication names.
//! * [`PgServer::start_with`] / [`PgServer::builder`]: a private instance with other
//!   settings (`wal_level=replica`, `ssl=on` with files in the data directory, a small
//!   `logical_decoding_work_mem`, ...). A test that restarts or kills a server must use one
//!   of these, never the shared one. Dropping it stops it and removes its directory.
//!
//! PostgreSQL is installed with apt-get if `/usr/lib/postgresql/*/bin/initdb` is missing.
//! Instances run as the `postgres` OS user (PostgreSQL refuses root) under
//! `/tmp/logtide-pg/<test pid>-<n>/` with the data directory, the unix socket and the
//! server log (`server.log`, printed in panics). Cleanup, also after a crash of the test
//! binary: every instance has a watchdog process that holds a pipe from the test process
//! and runs `pg_ctl stop -m immediate` + `rm -rf` when that pipe closes (the test process
//! exited, however it exited); in addition, the first instance of a test process removes
//! directories of earlier test processes that no longer exist.
//!
//! Roles (all may log in over TCP on 127.0.0.1 with a password; the unix socket is trust):
//! [`USER`] superuser + REPLICATION with a SCRAM-SHA-256 password, [`MD5_USER`] the same
//! with an md5 password (pg_hba `md5`), [`PLAIN_USER`] LOGIN only (no REPLICATION, no
//! superuser) for privilege tests, and `postgres` (socket only).
//!
//! Every wait is on a condition with a timeout (`pg_ctl -w -t`, connect retries), never a
//! bare sleep.
#![allow(dead_code)]

use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, Once, OnceLock};
use std::time::{Duration, Instant};

/// Superuser with REPLICATION and a SCRAM-SHA-256 password.
pub const USER: &str = "logtide";
pub const PASSWORD: &str = "logtide-scram-pw";
/// Superuser with REPLICATION and an md5 password (authenticated with `md5`).
pub const MD5_USER: &str = "logtide_md5";
pub const MD5_PASSWORD: &str = "logtide-md5-pw";
/// LOGIN only: no REPLICATION, no superuser (for "missing privilege" tests).
pub const PLAIN_USER: &str = "logtide_plain";
pub const PLAIN_PASSWORD: &str = "logtide-plain-pw";
/// Environment variable the harness sets to [`PASSWORD`], for `password_env` in configs.
pub const PASSWORD_ENV: &str = "LOGTIDE_TEST_PG_PASSWORD";

/// How long to wait for a server to start or stop, and for a connection.
const TIMEOUT: Duration = Duration::from_secs(60);

static SHARED: OnceLock<PgServer> = OnceLock::new();
static INSTALL: Once = Once::new();
static NEXT_INSTANCE: AtomicUsize = AtomicUsize::new(0);
static NEXT_DB: AtomicUsize = AtomicUsize::new(0);

/// A running private PostgreSQL instance.
pub struct PgServer {
    bin: PathBuf,
    root: PathBuf,
    data: PathBuf,
    port: u16,
    /// Held open for the watchdog; its closing (process exit) triggers the cleanup.
    watchdog: Mutex<Option<(Child, ChildStdin)>>,
    /// Whether Drop should stop the server (not for the shared instance: it lives until
    /// the process exits and the watchdog cleans up).
    owned: bool,
}

/// Settings and data-directory files for a private instance.
#[derive(Default)]
pub struct PgBuilder {
    settings: Vec<(String, String)>,
    files: Vec<(String, Vec<u8>, u32)>,
}

impl PgBuilder {
    /// A `postgresql.conf` setting, applied after the harness defaults (later wins).
    pub fn setting(mut self, name: &str, value: &str) -> Self {
        self.settings.push((name.to_owned(), value.to_owned()));
        self
    }

    /// A file written into the data directory before the first start, owned by postgres
    /// with the given mode (e.g. `server.key` with 0o600; `ssl_key_file = 'server.key'`).
    pub fn data_file(mut self, name: &str, contents: &[u8], mode: u32) -> Self {
        self.files.push((name.to_owned(), contents.to_vec(), mode));
        self
    }

    /// Initialises and starts the instance (panics with the server log on failure).
    pub fn start(self) -> PgServer {
        PgServer::launch(&self, true)
    }
}

impl PgServer {
    /// The shared instance of this test process (every module of `tests/main.rs`), started
    /// on first use.
    pub fn get() -> &'static PgServer {
        SHARED.get_or_init(|| PgServer::launch(&PgBuilder::default(), false))
    }

    /// A private instance with extra settings, e.g. `&[("wal_level", "replica")]`.
    pub fn start_with(settings: &[(&str, &str)]) -> PgServer {
        settings
            .iter()
            .fold(PgServer::builder(), |b, (k, v)| b.setting(k, v))
            .start()
    }

    pub fn builder() -> PgBuilder {
        PgBuilder::default()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The TCP host the server listens on.
    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// The directory holding the unix socket (usable as a libpq/tokio-postgres host).
    pub fn socket_dir(&self) -> PathBuf {
        self.root.join("sock")
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The major version, e.g. 15.
    pub fn version(&self) -> u32 {
        self.bin
            .parent()
            .and_then(|p| p.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// The server log so far (for assertions and panic messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("server.log")).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// A new empty database with a unique name, owned by [`USER`].
    pub fn fresh_db(&self) -> TestDb<'_> {
        let n = NEXT_DB.fetch_add(1, Ordering::SeqCst);
        let name = format!("t{}_{n}", std::process::id());
        self.psql("postgres", &format!("CREATE DATABASE {name} OWNER {USER}"));
        TestDb {
            server: self,
            name,
            client: tokio::sync::OnceCell::new(),
        }
    }

    /// Runs SQL with psql as `postgres` over the unix socket; returns stdout (`-At`:
    /// unaligned, tuples only, `|` between columns). Panics on error. Blocking: call it
    /// outside a runtime or before starting tasks that must make progress meanwhile.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(psql_bin(&self.bin))
            .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-U", "postgres", "-h"])
            .arg(self.socket_dir())
            .args(["-p", &self.port.to_string(), "-d", db, "-c", sql])
            .output()
            .expect("run psql");
        if !out.status.success() {
            panic!(
                "psql failed on {db}: {sql}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
    }

    /// True once `slot` has a walsender attached *and* a consistent point
    /// (`confirmed_flush_lsn` set). A slot being created already shows in
    /// `pg_replication_slots` with its walsender active while it waits for running
    /// transactions; a row committed before its consistent point is not streamed (with
    /// `backfill = "never"` it is simply not part of the capture). Waiting on this instead
    /// of "slot exists" or "slot active" closes that race.
    pub fn slot_streaming(&self, slot: &str) -> bool {
        self.psql(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_replication_slots s JOIN pg_stat_activity a ON a.pid = s.active_pid \
                 WHERE s.slot_name = '{slot}' AND a.backend_type = 'walsender' AND s.confirmed_flush_lsn IS NOT NULL"
            ),
        ) == "1"
    }

    /// A `tokio_postgres` config for `db` over TCP with [`USER`]/[`PASSWORD`] (SCRAM).
    pub fn pg_config(&self, db: &str) -> tokio_postgres::Config {
        self.pg_config_as(db, USER, PASSWORD)
    }

    pub fn pg_config_as(&self, db: &str, user: &str, password: &str) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host(self.host())
            .port(self.port)
            .user(user)
            .password(password)
            .dbname(db)
            .connect_timeout(Duration::from_secs(10));
        c
    }

    /// Connects (no TLS) and spawns the connection task on the current runtime.
    pub async fn connect_as(
        &self,
        db: &str,
        user: &str,
        password: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, conn) = self
            .pg_config_as(db, user, password)
            .connect(tokio_postgres::NoTls)
            .await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    /// A `[[sources]]` TOML entry for logtide pointing at `db` (SCRAM user, password from
    /// [`PASSWORD_ENV`], which the harness sets, `sslmode = "disable"`).
    pub fn source_toml(&self, db: &str, source_name: &str) -> String {
        format!(
            "[[sources]]\nkind = \"postgres\"\nname = \"{source_name}\"\nhost = \"{}\"\nport = {}\n\
             user = \"{USER}\"\npassword_env = \"{PASSWORD_ENV}\"\ndatabase = \"{db}\"\nsslmode = \"disable\"\n",
            self.host(),
            self.port
        )
    }

    // ---- lifecycle (use on a private instance) ----

    /// Starts a stopped (or killed) server and waits until it accepts connections.
    /// After `kill9`, retries while the old backends still hold shared memory.
    pub fn start(&self) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let out = self.pg_ctl(
                &["start", "-w", "-t", "60", "-l"],
                Some(&self.root.join("server.log")),
            );
            if out.status.success() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "pg_ctl start failed: {}\n--- server.log ---\n{}",
                    String::from_utf8_lossy(&out.stderr),
                    self.log_tail()
                );
            }
            // The previous postmaster's children exit on their own once they notice its
            // death; wait for a condition (no postgres process on our data dir) before
            // retrying.
            wait_until(Duration::from_secs(10), || self.server_pids().is_empty());
        }
    }

    /// Fast shutdown, waiting until it is down.
    pub fn stop(&self) {
        let out = self.pg_ctl(&["stop", "-w", "-t", "60", "-m", "fast"], None);
        if !out.status.success() {
            panic!(
                "pg_ctl stop failed: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                self.log_tail()
            );
        }
    }

    pub fn restart(&self) {
        self.stop();
        self.start();
    }

    /// Simulates a crash: SIGKILL to the postmaster and every backend, then waits until
    /// they are gone. Call [`PgServer::start`] to bring it back (crash recovery).
    pub fn kill9(&self) {
        let pids = self.server_pids();
        for pid in &pids {
            // The shell's builtin `kill`: no dependency on procps.
            let _ = Command::new("sh")
                .args(["-c", &format!("kill -9 {pid}")])
                .status();
        }
        let gone = wait_until(TIMEOUT, || self.server_pids().is_empty());
        assert!(
            gone,
            "postgres processes survived kill -9: {:?}",
            self.server_pids()
        );
    }

    /// `ALTER SYSTEM SET name = value` and a restart (for settings that need one).
    pub fn set_config(&self, name: &str, value: &str) {
        self.psql(
            "postgres",
            &format!("ALTER SYSTEM SET {name} = '{}'", value.replace('\'', "''")),
        );
        self.restart();
    }

    /// The postmaster and its children (by /proc, not by name).
    fn server_pids(&self) -> Vec<u32> {
        let Some(pm) = std::fs::read_to_string(self.data.join("postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<u32>().ok()))
        else {
            return Vec::new();
        };
        if !Path::new(&format!("/proc/{pm}")).exists() {
            return Vec::new();
        }
        let mut pids = vec![pm];
        if let Ok(rd) = std::fs::read_dir("/proc") {
            for e in rd.flatten() {
                let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                    continue;
                };
                let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
                // "pid (comm) state ppid ..." — comm may contain spaces: split after ')'.
                let ppid = stat
                    .rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                    .and_then(|p| p.parse::<u32>().ok());
                if ppid == Some(pm) {
                    pids.push(pid);
                }
            }
        }
        pids
    }

    fn pg_ctl(&self, args: &[&str], log: Option<&Path>) -> Output {
        let mut c = as_postgres(&self.bin.join("pg_ctl"));
        c.arg("-D").arg(&self.data).args(args);
        if let Some(l) = log {
            c.arg(l);
        }
        c.current_dir(&self.root).output().expect("run pg_ctl")
    }

    fn launch(b: &PgBuilder, owned: bool) -> PgServer {
        let bin = ensure_installed();
        // Not $TMPDIR: the postgres user must be able to traverse every parent directory,
        // and the socket path must stay short.
        let base = PathBuf::from("/tmp/logtide-pg");
        std::fs::create_dir_all(&base).expect("create temp root");
        {
            use std::os::unix::fs::PermissionsExt as _;
            // Traversable by the postgres user whatever the umask.
            let _ = std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755));
        }
        remove_stale(&base, &bin);
        let mut last_err = String::new();
        // A free port can be taken by another process between probing and binding:
        // retry with a new port.
        for _ in 0..5 {
            let n = NEXT_INSTANCE.fetch_add(1, Ordering::SeqCst);
            let root = base.join(format!("{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&root);
            std::fs::create_dir_all(root.join("sock")).expect("create instance dir");
            chown_postgres(&root);
            let server = PgServer {
                data: root.join("data"),
                root,
                port: free_port(),
                bin: bin.clone(),
                watchdog: Mutex::new(None),
                owned,
            };
            server.spawn_watchdog();
            server.initdb(b);
            let out = server.pg_ctl(
                &["start", "-w", "-t", "60", "-l"],
                Some(&server.root.join("server.log")),
            );
            if out.status.success() {
                server.create_roles();
                super::set_env(PASSWORD_ENV, PASSWORD);
                return server;
            }
            last_err = format!(
                "{}\n--- server.log ---\n{}",
                String::from_utf8_lossy(&out.stderr),
                server.log_tail()
            );
            drop(server);
        }
        panic!("cannot start a private postgres: {last_err}");
    }

    fn initdb(&self, b: &PgBuilder) {
        let out = as_postgres(&self.bin.join("initdb"))
            .arg("-D")
            .arg(&self.data)
            .args(["-U", "postgres", "-E", "UTF8", "--no-locale", "--no-sync"])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
            .current_dir(&self.root)
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut conf = format!(
            "\n# logtide test harness\nlisten_addresses = '127.0.0.1'\nport = {}\n\
             unix_socket_directories = '{}'\nwal_level = logical\nmax_replication_slots = 400\n\
             max_wal_senders = 100\nmax_connections = 200\nfsync = off\n\
             password_encryption = 'scram-sha-256'\n",
            self.port,
            self.socket_dir().display()
        );
        for (k, v) in &b.settings {
            conf.push_str(&format!("{k} = '{}'\n", v.replace('\'', "''")));
        }
        append(&self.data.join("postgresql.conf"), conf.as_bytes());
        let hba = format!(
            "local all all trust\nlocal replication all trust\n\
             host all {MD5_USER} 127.0.0.1/32 md5\nhost replication {MD5_USER} 127.0.0.1/32 md5\n\
             host all all 127.0.0.1/32 scram-sha-256\nhost replication all 127.0.0.1/32 scram-sha-256\n"
        );
        std::fs::write(self.data.join("pg_hba.conf"), hba).expect("write pg_hba.conf");
        for (name, contents, mode) in &b.files {
            let p = self.data.join(name);
            std::fs::write(&p, contents).expect("write data file");
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).expect("chmod");
        }
        chown_postgres(&self.data);
    }

    fn create_roles(&self) {
        self.psql(
            "postgres",
            &format!(
                "CREATE ROLE {USER} SUPERUSER REPLICATION LOGIN PASSWORD '{PASSWORD}';\
                 CREATE ROLE {PLAIN_USER} LOGIN PASSWORD '{PLAIN_PASSWORD}';\
                 SET password_encryption = 'md5';\
                 CREATE ROLE {MD5_USER} SUPERUSER REPLICATION LOGIN PASSWORD '{MD5_PASSWORD}';"
            ),
        );
    }

    /// A process outside our process group that waits for EOF on a pipe only this process
    /// holds, then stops the server and removes the directory.
    fn spawn_watchdog(&self) {
        let script = format!(
            "cat >/dev/null; runuser -u postgres -- '{}' -D '{}' stop -m immediate >/dev/null 2>&1; rm -rf '{}'",
            self.bin.join("pg_ctl").display(),
            self.data.display(),
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

impl Drop for PgServer {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        // Closing the pipe makes the watchdog stop the server and remove the directory;
        // wait for it so the next test starts clean.
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

/// A fresh database on a server; `exec`/`text_rows` use one cached connection as [`USER`].
pub struct TestDb<'a> {
    pub server: &'a PgServer,
    pub name: String,
    client: tokio::sync::OnceCell<tokio_postgres::Client>,
}

impl TestDb<'_> {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A new connection as [`USER`] (SCRAM over TCP); the connection task is spawned.
    pub async fn connect(&self) -> tokio_postgres::Client {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.server.connect_as(&self.name, USER, PASSWORD).await {
                Ok(c) => return c,
                // Only while the server is (re)starting: back off, then retry until the
                // deadline.
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot connect to {}: {e}", self.name),
            }
        }
    }

    /// The cached connection.
    pub async fn client(&self) -> &tokio_postgres::Client {
        self.client.get_or_init(|| self.connect()).await
    }

    /// Runs SQL statements (simple query protocol); panics with the error.
    /// Inserts rows `(g, repeat(md5(g), pad))` for ids `from..to` into `table(id, v)`,
    /// `per_tx` per transaction, on a new connection (so it survives server restarts
    /// between calls).
    pub async fn insert_ids(&self, table: &str, from: i64, to: i64, per_tx: i64, pad: usize) {
        let c = self.connect().await;
        let mut i = from;
        while i < to {
            let end = (i + per_tx).min(to);
            c.batch_execute(&format!(
                "INSERT INTO {table} SELECT g, repeat(md5(g::text), {}) FROM generate_series({i}, {}) g",
                pad.max(1),
                end - 1
            ))
            .await
            .expect("insert");
            i = end;
        }
    }

    /// The table as `key JSON -> row JSON` (`key` names one key column), read with the
    /// server's own JSON encoding: what a consumer of the events should end with.
    pub async fn json_state(
        &self,
        table: &str,
        key: &str,
    ) -> std::collections::BTreeMap<String, serde_json::Value> {
        self.text_rows(&format!(
            "SELECT json_build_object('{key}', {key})::text, row_to_json(x)::text FROM {table} x"
        ))
        .await
        .into_iter()
        .map(|r| {
            let k: serde_json::Value =
                serde_json::from_str(r[0].as_deref().expect("key")).expect("json");
            let v: serde_json::Value =
                serde_json::from_str(r[1].as_deref().expect("row")).expect("json");
            (k.to_string(), v)
        })
        .collect()
    }

    pub async fn exec(&self, sql: &str) {
        if let Err(e) = self.client().await.batch_execute(sql).await {
            panic!("{sql}: {e:?}");
        }
    }

    /// The server's own text output of a query (simple query protocol: every value exactly
    /// as the type's output function prints it in this session; `None` for NULL). Use
    /// `SELECT col::text` or plain `SELECT col`; both give the same text. For comparing
    /// decoded values with what PostgreSQL itself prints.
    pub async fn text_rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        let msgs = match self.client().await.simple_query(sql).await {
            Ok(m) => m,
            Err(e) => panic!("{sql}: {e:?}"),
        };
        msgs.into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => {
                    Some((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect())
                }
                _ => None,
            })
            .collect()
    }

    /// The type OIDs of a query's result columns (to pick the decoder for `text_rows`).
    pub async fn column_oids(&self, sql: &str) -> Vec<u32> {
        match self.client().await.prepare(sql).await {
            Ok(st) => st.columns().iter().map(|c| c.type_().oid()).collect(),
            Err(e) => panic!("{sql}: {e:?}"),
        }
    }

    /// psql as `postgres` on this database (blocking; see [`PgServer::psql`]).
    pub fn psql(&self, sql: &str) -> String {
        self.server.psql(&self.name, sql)
    }
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

fn as_postgres(program: &Path) -> Command {
    let mut c = Command::new("runuser");
    c.args(["-u", "postgres", "--"]).arg(program);
    c
}

fn chown_postgres(p: &Path) {
    let st = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(p)
        .status()
        .expect("run chown");
    assert!(st.success(), "chown postgres {}", p.display());
}

fn append(p: &Path, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(p)
        .expect("open for append");
    f.write_all(bytes).expect("append");
}

use super::port::free_port;

/// Environment variable naming the PostgreSQL major version to test against (e.g. `18`):
/// the binaries then come from `/var/cache/logtide-pg/<major>/bin` (installed by
/// `scripts/install-pg-version.sh <major>`), else the newest system installation.
pub const VERSION_ENV: &str = "LOGTIDE_PG_VERSION";

/// Where `scripts/install-pg-version.sh` puts the binaries of other majors.
fn cache_root() -> PathBuf {
    std::env::var_os("LOGTIDE_PG_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/logtide-pg"))
}

/// The major version the harness was asked for with [`VERSION_ENV`], if any.
pub fn requested_version() -> Option<u32> {
    let v = std::env::var(VERSION_ENV).ok()?;
    let v = v.trim();
    if v.is_empty() {
        return None;
    }
    match v.parse() {
        Ok(n) => Some(n),
        Err(_) => panic!("{VERSION_ENV}={v:?} is not a major version number (e.g. 18)"),
    }
}

/// psql: the one next to the server binaries, else the system's newest (the npm builds
/// ship no psql; psql talks to newer servers).
fn psql_bin(bin: &Path) -> PathBuf {
    let own = bin.join("psql");
    if own.exists() {
        return own;
    }
    find_bin()
        .map(|b| b.join("psql"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("psql"))
}

/// The binaries of the [`VERSION_ENV`] major, installing them with
/// `scripts/install-pg-version.sh` when missing; else the newest
/// `/usr/lib/postgresql/<v>/bin`, installing the package if there is none.
fn ensure_installed() -> PathBuf {
    if let Some(major) = requested_version() {
        return ensure_cached(major);
    }
    INSTALL.call_once(|| {
        if find_bin().is_some() {
            return;
        }
        let install = || {
            Command::new("apt-get")
                .args(["install", "-y", "-q", "postgresql", "postgresql-contrib"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        };
        if !install() {
            let _ = Command::new("apt-get").args(["update", "-q"]).status();
            assert!(install(), "apt-get install postgresql failed");
        }
    });
    match find_bin() {
        Some(b) => b,
        None => panic!("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb)"),
    }
}

fn ensure_cached(major: u32) -> PathBuf {
    let bin = cache_root().join(major.to_string()).join("bin");
    INSTALL.call_once(|| {
        if bin.join("initdb").exists() {
            return;
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install-pg-version.sh");
        let st = Command::new("sh")
            .arg(&script)
            .arg(major.to_string())
            .status()
            .expect("run scripts/install-pg-version.sh");
        assert!(
            st.success(),
            "{} {major} failed (needs npm and network)",
            script.display()
        );
    });
    assert!(
        bin.join("initdb").exists(),
        "{VERSION_ENV}={major} but {} has no initdb (run scripts/install-pg-version.sh {major})",
        bin.display()
    );
    bin
}

fn find_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, b)| b)
}

/// Removes instance directories of test processes that no longer exist (their watchdog
/// should have done it; this covers a watchdog killed with the process group).
fn remove_stale(base: &Path, bin: &Path) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let Ok(rd) = std::fs::read_dir(base) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.split_once('-'))
                .and_then(|(p, _)| p.parse::<u32>().ok())
            else {
                continue;
            };
            if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
                continue;
            }
            let data = e.path().join("data");
            if data.join("postmaster.pid").exists() {
                let _ = as_postgres(&bin.join("pg_ctl"))
                    .arg("-D")
                    .arg(&data)
                    .args(["stop", "-m", "immediate"])
                    .current_dir("/")
                    .output();
            }
            let _ = std::fs::remove_dir_all(e.path());
        }
    });
}
