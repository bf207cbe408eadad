//! Sources behind an SSH tunnel (`ssh = { ... }`), against a private sshd the harness
//! starts on 127.0.0.1 (installing openssh-server when missing): a PostgreSQL source
//! streams through it (sshd's log shows the forwarded connection to the database, and
//! without sshd the same config fails), a dead ssh is restarted by the source's reconnect,
//! a wrong host key and a refused key fail permanently with what to fix, and no ssh
//! process outlives logtide.

use crate::common::port::free_port;

use crate::common::pg::{PgServer, PASSWORD, PASSWORD_ENV};
use crate::common::run::{logs, run_to_end, sigterm, spawn_run, wait_exit, wait_until, Workdir};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(90);

/// A running `logtide` that is killed when the test ends, also on a failed assertion.
struct Running(Child);

impl std::ops::Deref for Running {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn env() -> [(&'static str, &'static str); 1] {
    [(PASSWORD_ENV, PASSWORD)]
}

fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run command");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Installs the OpenSSH server and client when missing (Debian packages).
fn ensure_openssh() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let have = Path::new("/usr/sbin/sshd").exists()
            && Command::new("ssh").arg("-V").output().is_ok()
            && Command::new("ssh-keygen").arg("--help").output().is_ok();
        if have {
            return;
        }
        let apt = |args: &[&str]| {
            let st = Command::new("apt-get")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .expect("apt-get");
            assert!(st.success(), "apt-get {args:?} failed");
        };
        apt(&["update", "-qq"]);
        apt(&[
            "install",
            "-y",
            "-qq",
            "--no-install-recommends",
            "openssh-server",
            "openssh-client",
        ]);
    });
}

/// A private sshd on 127.0.0.1 with its own host key and one authorized client key.
struct Sshd {
    dir: tempfile::TempDir,
    port: u16,
    user: String,
    child: Option<Child>,
}

impl Sshd {
    fn start() -> Sshd {
        ensure_openssh();
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        for key in ["host_key", "client_key", "other_key", "other_host_key"] {
            sh(Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", key, "-f"])
                .arg(d.join(key)));
        }
        std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys"))
            .expect("authorized_keys");
        let user = sh(Command::new("id").arg("-un")).trim().to_owned();
        let port = free_port();
        let cfg = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\nPermitRootLogin prohibit-password\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
             StrictModes no\nUsePAM no\nAllowTcpForwarding yes\nLogLevel DEBUG1\n",
            d = d.display()
        );
        std::fs::write(d.join("sshd_config"), cfg).expect("sshd_config");
        // The privilege-separation directory sshd insists on.
        let _ = std::fs::create_dir_all("/run/sshd");
        let mut s = Sshd {
            dir,
            port,
            user,
            child: None,
        };
        s.run();
        s
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn run(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("sshd.log"))
            .expect("sshd log");
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(self.path("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn sshd");
        self.child = Some(child);
        let port = self.port;
        assert!(
            wait_until(WAIT, || std::net::TcpStream::connect(("127.0.0.1", port))
                .is_ok()),
            "sshd never listened:\n{}",
            self.log()
        );
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("sshd.log")).unwrap_or_default()
    }

    /// The server's host key line, as the README says to get it: `ssh-keyscan`.
    fn keyscan(&self) -> String {
        let port = self.port;
        let mut line = String::new();
        assert!(
            wait_until(WAIT, || {
                line = sh(Command::new("ssh-keyscan")
                    .args(["-T", "5", "-t", "ed25519", "-p"])
                    .arg(port.to_string())
                    .arg("127.0.0.1"));
                !line.trim().is_empty()
            }),
            "ssh-keyscan found no key"
        );
        line
    }

    /// `ssh = { ... }` for a source; `known_hosts` and `key` are files in the sshd's dir.
    fn ssh_toml(&self, known_hosts: &str, key: &str) -> String {
        format!(
            "ssh = {{ host = \"127.0.0.1\", port = {}, user = \"{}\", private_key = {:?}, known_hosts = {:?}, connect_timeout = \"5s\" }}\n",
            self.port,
            self.user,
            self.path(key),
            self.path(known_hosts)
        )
    }

    /// Writes `known_hosts` (the scanned line) and `bad_known_hosts` (the same host with
    /// another key).
    fn write_known_hosts(&self) {
        std::fs::write(self.path("known_hosts"), self.keyscan()).expect("known_hosts");
        let other = std::fs::read_to_string(self.path("other_host_key.pub")).expect("other key");
        let mut it = other.split_whitespace();
        let (kind, key) = (it.next().expect("type"), it.next().expect("key"));
        std::fs::write(
            self.path("bad_known_hosts"),
            format!("[127.0.0.1]:{} {kind} {key}\n", self.port),
        )
        .expect("bad known_hosts");
    }

    /// The ssh processes logtide started for this sshd (matched on its known_hosts paths,
    /// unique to this test).
    fn ssh_pids(&self) -> Vec<u32> {
        let out = Command::new("pgrep")
            .arg("-f")
            .arg(format!("UserKnownHostsFile={}", self.dir.path().display()))
            .output()
            .expect("pgrep");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Writes the config: the PostgreSQL source of `db` (its real host and port, as seen from
/// the SSH server) with `ssh`.
fn config(w: &Workdir, db: &crate::common::pg::TestDb<'_>, name: &str, ssh: &str) {
    let text = format!(
        "{}status_interval = \"1s\"\n{ssh}\n[admin]\nenabled = false\n",
        db.server.source_toml(db.name(), name)
    );
    w.write_config(&text);
}

/// Waits until the source's slot has an active walsender (rows inserted from now on are
/// streamed).
fn wait_streaming(db: &crate::common::pg::TestDb<'_>, name: &str, w: &Workdir) {
    let slot = format!("logtide_{name}");
    assert!(
        wait_until(WAIT, || db.server.slot_streaming(&slot)),
        "the source never streamed\n{}",
        logs(w)
    );
}

fn ids(w: &Workdir) -> Vec<i64> {
    w.events()
        .iter()
        .filter_map(|e| e["after"]["id"].as_i64())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_streams_through_the_tunnel_and_no_ssh_is_left() {
    let sshd = Sshd::start();
    sshd.write_known_hosts();
    let db = PgServer::get().fresh_db();
    db.exec("CREATE TABLE t (id int PRIMARY KEY, v text)").await;
    let w = Workdir::new();
    config(&w, &db, "tun", &sshd.ssh_toml("known_hosts", "client_key"));
    let mut child = Running(spawn_run(&w, &["--max-events", "3"], &env()));
    assert!(
        wait_until(WAIT, || !sshd.ssh_pids().is_empty()),
        "logtide started no ssh\n{}",
        logs(&w)
    );
    wait_streaming(&db, "tun", &w);
    db.insert_ids("t", 1, 4, 1, 1).await;
    let st = wait_exit(&mut child, WAIT);
    assert!(st.success(), "run failed: {st}\n{}", logs(&w));
    assert_eq!(ids(&w), vec![1, 2, 3], "{}", logs(&w));
    // The connections went through sshd to the database port.
    let forwarded = format!("target 127.0.0.1 port {}", db.server.port());
    assert!(
        sshd.log().contains(&forwarded),
        "sshd forwarded nothing to the database:\n{}",
        sshd.log()
    );
    assert!(logs(&w).contains("ssh tunnel up"), "{}", logs(&w));
    assert!(
        wait_until(Duration::from_secs(10), || sshd.ssh_pids().is_empty()),
        "ssh outlived logtide: {:?}",
        sshd.ssh_pids()
    );

    // The one-shot commands use the tunnel too.
    let cfg = w.config();
    let cfg = cfg.to_str().expect("utf-8 path");
    let out = run_to_end(&["check", "--config", cfg], &env());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "check failed: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run_to_end(&["status", "--config", cfg], &env());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("tun\tlag slot"), "status: {text}");
    assert!(sshd.ssh_pids().is_empty(), "ssh outlived `check`/`status`");

    // Without the SSH server the same config cannot reach the database.
    let mut sshd = sshd;
    sshd.stop();
    let out = run_to_end(&["check", "--config", cfg], &env());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "check without sshd: {err}");
    assert!(
        err.contains("ssh tunnel of source tun") && err.contains("refused"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_tunnel_is_restarted_and_sigterm_leaves_no_ssh() {
    let sshd = Sshd::start();
    sshd.write_known_hosts();
    let db = PgServer::get().fresh_db();
    db.exec("CREATE TABLE t (id int PRIMARY KEY, v text)").await;
    let w = Workdir::new();
    config(&w, &db, "tun2", &sshd.ssh_toml("known_hosts", "client_key"));
    let child = Running(spawn_run(&w, &[], &env()));
    let mut first = Vec::new();
    assert!(
        wait_until(WAIT, || {
            first = sshd.ssh_pids();
            first.len() == 1 && logs(&w).contains("ssh tunnel up")
        }),
        "no tunnel\n{}\nsshd:\n{}",
        logs(&w),
        sshd.log()
    );
    wait_streaming(&db, "tun2", &w);
    db.insert_ids("t", 1, 3, 1, 1).await;
    w.wait_events(2, WAIT);
    // Kill the ssh logtide started (by its pid): the source reconnects through a new one.
    let st = Command::new("kill")
        .arg("-KILL")
        .arg(first[0].to_string())
        .status()
        .expect("kill");
    assert!(st.success());
    assert!(
        wait_until(WAIT, || {
            let now = sshd.ssh_pids();
            now.len() == 1 && now != first
        }),
        "the tunnel was not restarted\n{}\nsshd:\n{}",
        logs(&w),
        sshd.log()
    );
    db.insert_ids("t", 3, 6, 1, 1).await;
    assert!(
        wait_until(WAIT, || ids(&w).contains(&5)),
        "rows after the restart never arrived: {:?}\n{}\nsshd:\n{}",
        ids(&w),
        logs(&w),
        sshd.log()
    );
    let mut got = ids(&w);
    got.sort();
    got.dedup();
    assert_eq!(got, vec![1, 2, 3, 4, 5]);
    assert!(
        logs(&w).contains("ssh tunnel ended, restarting it"),
        "{}",
        logs(&w)
    );
    let mut child = child;
    sigterm(&child);
    let st = wait_exit(&mut child, WAIT);
    assert!(st.success(), "{st}\n{}", logs(&w));
    assert!(
        wait_until(Duration::from_secs(10), || sshd.ssh_pids().is_empty()),
        "ssh outlived a SIGTERM'd logtide: {:?}",
        sshd.ssh_pids()
    );
}

/// `logtide run` with a bad tunnel setting: exits 3 at once with the message.
fn run_fails(sshd: &Sshd, db: &crate::common::pg::TestDb<'_>, name: &str, ssh: &str) -> String {
    let w = Workdir::new();
    config(&w, db, name, ssh);
    let cfg = w.config();
    let out = run_to_end(
        &[
            "run",
            "--config",
            cfg.to_str().expect("path"),
            "--max-events",
            "1",
        ],
        &env(),
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(3), "exit code: {err}");
    assert!(sshd.ssh_pids().is_empty(), "ssh left behind");
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_host_key_and_refused_key_fail_clearly() {
    let sshd = Sshd::start();
    sshd.write_known_hosts();
    let db = PgServer::get().fresh_db();
    let err = run_fails(
        &sshd,
        &db,
        "badhost",
        &sshd.ssh_toml("bad_known_hosts", "client_key"),
    );
    assert!(err.contains("Host key verification failed"), "{err}");
    assert!(err.contains("ssh-keyscan -p"), "{err}");
    let err = run_fails(
        &sshd,
        &db,
        "badkey",
        &sshd.ssh_toml("known_hosts", "other_key"),
    );
    assert!(err.contains("Permission denied"), "{err}");
    assert!(err.contains("authorized_keys"), "{err}");
    // Secrets stay out: the key's content is never printed.
    let key = std::fs::read_to_string(sshd.path("other_key")).expect("key");
    let body = key.lines().nth(1).expect("key body");
    assert!(!err.contains(body));
}
