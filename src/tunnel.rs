//! SSH tunnels to sources behind a bastion host (`ssh = { ... }` of a source).
//!
//! Owns the `ssh` child processes and nothing else: a source behind a tunnel is connected
//! to `127.0.0.1:<local port>` instead of its `host:port`, given to its connect functions
//! as an [`Endpoint`] ([`Keeper::endpoint`], [`Tunnels::endpoint`]); TLS keeps verifying
//! the real host name. The config is not changed, and the protocols know nothing of the
//! tunnel.
//!
//! The tunnel is the system OpenSSH client, which brings the SSH protocol, key formats and
//! known_hosts matching that operators already trust:
//!
//! ```text
//! ssh -F none -N -L 127.0.0.1:<local>:<db host>:<db port> -p <port> -i <private_key>
//!     -o BatchMode=yes -o IdentitiesOnly=yes -o ExitOnForwardFailure=yes
//!     -o StrictHostKeyChecking=yes -o UserKnownHostsFile=<known_hosts>
//!     -o GlobalKnownHostsFile=/dev/null -o ConnectTimeout=<s>
//!     -o ServerAliveInterval=<s> -o ServerAliveCountMax=3 <user>@<host>
//! ```
//!
//! * No user or system ssh config is read (`-F none`), no agent key or password is tried,
//!   and only the configured known_hosts file is trusted: an unknown or changed host key
//!   fails (permanently, with what to fix), as does a refused key.
//! * The tunnel is up when the local port accepts a connection (ssh opens it only after
//!   authentication, and with `ExitOnForwardFailure` exits if it cannot). While waiting, an
//!   exited ssh is reported with its last stderr lines (ssh prints no secrets there).
//! * Every process is owned: a [`Tunnel`] kills its ssh when dropped (`kill_on_drop`), so
//!   no ssh outlives a command, an error or a SIGTERM'd `logtide run`. The ssh runs in its
//!   own process group, so a terminal's Ctrl-C reaches only logtide, which then stops in
//!   order. (A SIGKILL'd logtide cannot clean up: its ssh then ends at the next keepalive
//!   failure at the latest, or when killed.)
//! * `logtide run` keeps one [`Keeper`] per tunneled source: before each (re)connection the
//!   service calls [`Keeper::ensure`], which restarts a dead ssh on the same local port, so
//!   a dropped tunnel is just a transient source failure retried with backoff.

use crate::config::{Config, SourceConfig, SshTunnelConfig};
use crate::endpoint::Endpoint;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;
use tokio::task::JoinSet;

/// Stderr lines of an ssh kept for error messages.
const KEEP_LINES: usize = 12;

/// Why a tunnel could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    #[error("cannot run ssh for the tunnel of source {source_name}: install the OpenSSH client (Debian: apt-get install openssh-client)")]
    Spawn {
        source_name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot pick a free local port for the tunnel of source {source_name}")]
    LocalPort {
        source_name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read sources.{source_name}.ssh.{key} ({path}): {problem}")]
    File {
        source_name: String,
        key: &'static str,
        path: String,
        problem: String,
    },
    #[error("ssh tunnel of source {source_name} via {via} failed: {said} — {fix}")]
    Failed {
        source_name: String,
        /// `user@host:port` of the SSH server.
        via: String,
        /// ssh's own last stderr lines (or what happened).
        said: String,
        fix: String,
        permanent: bool,
    },
}

impl TunnelError {
    /// Whether retrying cannot help (a wrong host key, a refused or unreadable key, no ssh
    /// binary): the operator has to fix something first.
    pub fn is_permanent(&self) -> bool {
        match self {
            TunnelError::Spawn { .. } | TunnelError::File { .. } => true,
            TunnelError::LocalPort { .. } => false,
            TunnelError::Failed { permanent, .. } => *permanent,
        }
    }
}

/// One running `ssh -N -L` process; killed when dropped.
pub struct Tunnel {
    child: tokio::process::Child,
    local_port: u16,
    stderr: Arc<Mutex<VecDeque<String>>>,
    /// The stderr reader; ends with the process.
    tasks: JoinSet<()>,
}

impl std::fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tunnel")
            .field("pid", &self.child.id())
            .field("local_port", &self.local_port)
            .finish_non_exhaustive()
    }
}

impl Tunnel {
    /// Starts ssh forwarding `127.0.0.1:local_port` to `target` as seen from the SSH
    /// server, and waits until the local port accepts.
    pub async fn start(
        source_name: &str,
        ssh: &SshTunnelConfig,
        target: (&str, u16),
        local_port: u16,
    ) -> Result<Tunnel, TunnelError> {
        for (key, path) in [
            ("private_key", &ssh.private_key),
            ("known_hosts", &ssh.known_hosts),
        ] {
            if let Err(e) = std::fs::File::open(path) {
                return Err(TunnelError::File {
                    source_name: source_name.to_owned(),
                    key,
                    path: path.display().to_string(),
                    problem: e.to_string(),
                });
            }
        }
        let mut cmd = tokio::process::Command::new("ssh");
        cmd.args(ssh_args(ssh, target, local_port))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|source| TunnelError::Spawn {
            source_name: source_name.to_owned(),
            source,
        })?;
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        let mut tasks = JoinSet::new();
        if let Some(pipe) = child.stderr.take() {
            let keep = stderr.clone();
            let name = source_name.to_owned();
            tasks.spawn(async move {
                let mut lines = tokio::io::BufReader::new(pipe).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::debug!(source = %name, ssh = %line, "ssh tunnel");
                    let mut k = keep.lock().unwrap_or_else(|p| p.into_inner());
                    if k.len() == KEEP_LINES {
                        k.pop_front();
                    }
                    k.push_back(line);
                }
            });
        }
        let mut t = Tunnel {
            child,
            local_port,
            stderr,
            tasks,
        };
        tracing::info!(source = %source_name, via = %via(ssh), local_port, "starting ssh tunnel");
        let deadline = Instant::now() + ssh.connect_timeout * 2;
        loop {
            if let Ok(Some(status)) = t.child.try_wait() {
                // Let the reader take ssh's last words.
                let _ = tokio::time::timeout(Duration::from_secs(2), t.tasks.join_next()).await;
                let said = t.last_stderr();
                let said = if said.is_empty() {
                    format!("ssh exited ({status}) without a message")
                } else {
                    said
                };
                return Err(classify(source_name, ssh, said));
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", local_port))
                .await
                .is_ok()
            {
                tracing::info!(source = %source_name, via = %via(ssh), local_port, "ssh tunnel up");
                return Ok(t);
            }
            if Instant::now() >= deadline {
                let said = t.last_stderr();
                return Err(TunnelError::Failed {
                    source_name: source_name.to_owned(),
                    via: via(ssh),
                    said: if said.is_empty() {
                        format!(
                            "the local port {local_port} did not open within {:?}",
                            ssh.connect_timeout * 2
                        )
                    } else {
                        said
                    },
                    fix: format!(
                        "check that the SSH server is reachable at {}:{} and answers within sources.{source_name}.ssh.connect_timeout",
                        ssh.host, ssh.port
                    ),
                    permanent: false,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn local_port(&self) -> u16 {
        self.local_port
    }

    /// The ssh process id (while it runs).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Whether ssh still runs.
    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// ssh's last stderr lines, joined with "; ".
    fn last_stderr(&self) -> String {
        let k = self.stderr.lock().unwrap_or_else(|p| p.into_inner());
        k.iter()
            .map(|l| l.trim())
            .filter(|l| !l.is_empty() && !l.starts_with("Warning: Permanently added"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// `user@host:port` of the SSH server, for messages.
fn via(ssh: &SshTunnelConfig) -> String {
    format!("{}@{}:{}", ssh.user, ssh.host, ssh.port)
}

/// The ssh command line (without the program).
fn ssh_args(ssh: &SshTunnelConfig, target: (&str, u16), local_port: u16) -> Vec<String> {
    let host = if target.0.contains(':') {
        format!("[{}]", target.0)
    } else {
        target.0.to_owned()
    };
    let secs = |d: Duration| d.as_secs().max(1).to_string();
    let mut args = vec![
        "-F".to_owned(),
        "none".to_owned(),
        "-N".to_owned(),
        "-L".to_owned(),
        format!("127.0.0.1:{local_port}:{host}:{}", target.1),
        "-p".to_owned(),
        ssh.port.to_string(),
        "-i".to_owned(),
        ssh.private_key.display().to_string(),
    ];
    for (k, v) in [
        ("BatchMode", "yes".to_owned()),
        ("IdentitiesOnly", "yes".to_owned()),
        ("ExitOnForwardFailure", "yes".to_owned()),
        ("StrictHostKeyChecking", "yes".to_owned()),
        ("UserKnownHostsFile", ssh.known_hosts.display().to_string()),
        ("GlobalKnownHostsFile", "/dev/null".to_owned()),
        ("UpdateHostKeys", "no".to_owned()),
        ("ConnectTimeout", secs(ssh.connect_timeout)),
        ("ServerAliveInterval", secs(ssh.keepalive_interval)),
        ("ServerAliveCountMax", "3".to_owned()),
    ] {
        args.push("-o".to_owned());
        args.push(format!("{k}={v}"));
    }
    args.push(format!("{}@{}", ssh.user, ssh.host));
    args
}

/// Turns what ssh said when it exited into an error with what to fix.
fn classify(source_name: &str, ssh: &SshTunnelConfig, said: String) -> TunnelError {
    let lower = said.to_ascii_lowercase();
    let n = source_name;
    let (fix, permanent) = if lower.contains("host key verification failed")
        || lower.contains("remote host identification has changed")
        || lower.contains("no matching host key")
    {
        (
            format!(
                "the SSH server's host key is not the one in sources.{n}.ssh.known_hosts ({}): add the server's line, e.g. from `ssh-keyscan -p {} {}` (compare its fingerprint with the server's out of band)",
                ssh.known_hosts.display(),
                ssh.port,
                ssh.host
            ),
            true,
        )
    } else if lower.contains("permission denied") || lower.contains("too many authentication") {
        (
            format!(
                "the SSH server refused the key: add the public key of sources.{n}.ssh.private_key ({}) to ~{}/.ssh/authorized_keys on {}, or fix ssh.user",
                ssh.private_key.display(),
                ssh.user,
                ssh.host
            ),
            true,
        )
    } else if lower.contains("load key")
        || lower.contains("unprotected private key")
        || lower.contains("invalid format")
        || lower.contains("no such identity")
    {
        (
            format!(
                "sources.{n}.ssh.private_key ({}) must be an OpenSSH private key without passphrase, readable only by its owner (chmod 600)",
                ssh.private_key.display()
            ),
            true,
        )
    } else if lower.contains("forwarding failed") || lower.contains("address already in use") {
        (
            "the tunnel's local port is taken or the server does not allow forwarding (AllowTcpForwarding): retrying".to_owned(),
            false,
        )
    } else {
        (
            format!(
                "check that the SSH server {}:{} is up and reachable (retrying)",
                ssh.host, ssh.port
            ),
            false,
        )
    };
    TunnelError::Failed {
        source_name: source_name.to_owned(),
        via: via(ssh),
        said: shorten(&said),
        fix,
        permanent,
    }
}

/// Drops the banner of ssh's "host key changed" warning (the fix says what to do), keeping
/// what it found: the key's fingerprint and the verdict.
fn shorten(said: &str) -> String {
    if !said.contains("@@@") && !said.contains("SOMETHING NASTY") {
        return said.to_owned();
    }
    let kept: Vec<&str> = said
        .split("; ")
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.starts_with("sha256:") || l.contains("host key") || l.contains("fingerprint")
        })
        .filter(|l| !l.contains("Add correct host key") && !l.contains("a host key has just"))
        .collect();
    kept.join(" ")
}

/// A free port on 127.0.0.1 right now (the OS picks; ssh binds it a moment later).
fn free_local_port(source_name: &str) -> Result<u16, TunnelError> {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|source| TunnelError::LocalPort {
            source_name: source_name.to_owned(),
            source,
        })
}

/// The tunnel of one source in `logtide run`: started on demand and restarted on the same
/// local port after it died.
pub struct Keeper {
    source_name: String,
    ssh: SshTunnelConfig,
    target: (String, u16),
    local_port: u16,
    tunnel: Option<Tunnel>,
}

impl Keeper {
    /// A keeper for `scfg` if it has `ssh`; picks the local port (nothing is started).
    pub fn for_source(scfg: &SourceConfig) -> Result<Option<Keeper>, TunnelError> {
        let Some(ssh) = scfg.ssh() else {
            return Ok(None);
        };
        let target = scfg.endpoint();
        Ok(Some(Keeper {
            source_name: scfg.name().to_owned(),
            ssh: ssh.clone(),
            target: (target.host, target.port),
            local_port: free_local_port(scfg.name())?,
            tunnel: None,
        }))
    }

    pub fn local_port(&self) -> u16 {
        self.local_port
    }

    /// Where the source connects: the tunnel's local end, TLS verifying the database host.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint::tunnel(self.local_port, &self.target.0)
    }

    /// Makes sure ssh runs (starting or restarting it); returns once the port accepts.
    pub async fn ensure(&mut self) -> Result<(), TunnelError> {
        if let Some(t) = &mut self.tunnel {
            if t.is_alive() {
                return Ok(());
            }
            tracing::warn!(source = %self.source_name, via = %via(&self.ssh), ssh = %t.last_stderr(), "ssh tunnel ended, restarting it");
        }
        self.tunnel = None;
        let t = Tunnel::start(
            &self.source_name,
            &self.ssh,
            (&self.target.0, self.target.1),
            self.local_port,
        )
        .await?;
        self.tunnel = Some(t);
        Ok(())
    }
}

/// The tunnels a one-shot command opened, kept alive while it uses them.
#[derive(Default)]
pub struct Tunnels {
    keepers: Vec<Keeper>,
}

impl Tunnels {
    /// Where `scfg` connects: its tunnel's local end when one was opened for it, else the
    /// configured `host:port`.
    pub fn endpoint(&self, scfg: &SourceConfig) -> Endpoint {
        self.keepers
            .iter()
            .find(|k| k.source_name == scfg.name())
            .map_or_else(|| scfg.endpoint(), Keeper::endpoint)
    }
}

/// Opens the tunnels of the sources of `cfg` (only `only` when given); each source then
/// connects to [`Tunnels::endpoint`] while the [`Tunnels`] are kept. For the one-shot
/// commands (check, discover, preview, status, replay); `logtide run` uses [`Keeper`]s.
pub async fn open(cfg: &Config, only: Option<&str>) -> Result<Tunnels, TunnelError> {
    let mut keepers = Vec::new();
    for s in cfg
        .sources
        .iter()
        .filter(|s| only.is_none_or(|n| n == s.name()))
    {
        if let Some(mut k) = Keeper::for_source(s)? {
            k.ensure().await?;
            keepers.push(k);
        }
    }
    Ok(Tunnels { keepers })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn ssh() -> SshTunnelConfig {
        SshTunnelConfig {
            host: "bastion".into(),
            port: 2222,
            user: "tunnel".into(),
            private_key: PathBuf::from("/k/id"),
            known_hosts: PathBuf::from("/k/known"),
            connect_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(15),
        }
    }

    #[test]
    fn command_line() {
        let a = ssh_args(&ssh(), ("db.internal", 5432), 40001);
        let line = a.join(" ");
        assert!(
            line.starts_with("-F none -N -L 127.0.0.1:40001:db.internal:5432 -p 2222 -i /k/id "),
            "{line}"
        );
        assert!(line.contains("-o StrictHostKeyChecking=yes -o UserKnownHostsFile=/k/known"));
        assert!(line.contains("-o BatchMode=yes"));
        assert!(line.ends_with("tunnel@bastion"));
        let v6 = ssh_args(&ssh(), ("::1", 3306), 40002).join(" ");
        assert!(v6.contains("127.0.0.1:40002:[::1]:3306"), "{v6}");
    }

    #[test]
    fn host_key_banner_is_shortened() {
        let banner = "@@@@@@@@; @    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @; @@@@@@@@; IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!; The fingerprint for the ED25519 key sent by the remote host is; SHA256:abc.; Add correct host key in /k/known to get rid of this message.; Host key for [bastion]:2222 has changed and you have requested strict checking.; Host key verification failed.";
        let e = classify("app", &ssh(), banner.into()).to_string();
        assert!(e.contains("failed: The fingerprint for the ED25519 key sent by the remote host is SHA256:abc. Host key for [bastion]:2222 has changed and you have requested strict checking. Host key verification failed. — "), "{e}");
    }

    #[test]
    fn failures_are_classified() {
        let e = classify("app", &ssh(), "Host key verification failed.".into());
        assert!(e.is_permanent());
        assert!(e.to_string().contains("ssh-keyscan -p 2222 bastion"), "{e}");
        let e = classify(
            "app",
            &ssh(),
            "tunnel@bastion: Permission denied (publickey).".into(),
        );
        assert!(e.is_permanent());
        assert!(e.to_string().contains("authorized_keys"), "{e}");
        let e = classify(
            "app",
            &ssh(),
            "ssh: connect to host bastion port 2222: Connection refused".into(),
        );
        assert!(!e.is_permanent());
    }
}
