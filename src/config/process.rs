//! The process-wide tables of the file: `[state]` (where checkpoints live), `[pipeline]`
//! (batching, the channel, reconnects, the answer to a failed source) and `[admin]` (the
//! HTTP endpoint and the WAL-retention check).

use super::duration::de_duration;
use super::yes;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// `[admin]`: the HTTP endpoint of `logtide run` (metrics, health, readiness, pause/resume)
/// and the PostgreSQL WAL-retention check. See [`crate::admin`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Serve the endpoint. Default true.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// `host:port` to listen on. Default "127.0.0.1:9187" (localhost only: the endpoint has
    /// no authentication).
    #[serde(default = "default_admin_listen")]
    pub listen: String,
    /// Warn when a PostgreSQL slot retains more WAL than this, in MiB. Default 1024.
    #[serde(default = "default_wal_warn_mb")]
    pub wal_retention_warn_mb: u64,
    /// How often to check the slots' retained WAL and the lag in bytes. Default "30s".
    #[serde(
        default = "default_wal_check_interval",
        deserialize_with = "de_duration"
    )]
    pub wal_check_interval: Duration,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            enabled: true,
            listen: default_admin_listen(),
            wal_retention_warn_mb: default_wal_warn_mb(),
            wal_check_interval: default_wal_check_interval(),
        }
    }
}

impl AdminConfig {
    /// The parsed `listen` address (checked at load).
    pub fn listen_addr(&self) -> Result<std::net::SocketAddr, String> {
        self.listen.parse().map_err(|_| {
            format!(
                "{:?} is not an address: write host:port with an IP, e.g. \"127.0.0.1:9187\" or \"0.0.0.0:9187\"",
                self.listen
            )
        })
    }
}

fn default_admin_listen() -> String {
    "127.0.0.1:9187".into()
}
fn default_wal_warn_mb() -> u64 {
    1024
}
fn default_wal_check_interval() -> Duration {
    Duration::from_secs(30)
}

/// `[state]`: where checkpoints live.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// Directory of the embedded checkpoint store. Default `./logtide-state`.
    #[serde(default = "default_state_path")]
    pub path: PathBuf,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            path: default_state_path(),
        }
    }
}

fn default_state_path() -> PathBuf {
    PathBuf::from("logtide-state")
}

/// `[pipeline]`: batching between source and sinks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Most events handed to the sinks in one batch. Default 4096.
    #[serde(default = "default_max_batch")]
    pub max_batch_events: usize,
    /// Capacity of the bounded source → pipeline channel, in messages. Default 16384.
    #[serde(default = "default_channel")]
    pub channel_capacity: usize,
    /// What the process does when a source fails permanently (see the supervision rule in
    /// [`crate::service`]): `"exit"` (default) stops the other sources once they
    /// checkpointed what they delivered and exits with status 3; `"keep_running"` keeps the
    /// other sources streaming (`/health` answers 503 and `logtide_source_up` is 0 for the
    /// failed one until the process is restarted).
    #[serde(default)]
    pub on_source_failure: OnSourceFailure,
    /// First wait before reconnecting a source after a transient failure. Default "1s".
    #[serde(
        default = "default_reconnect_initial",
        deserialize_with = "de_duration"
    )]
    pub reconnect_initial_backoff: Duration,
    /// Longest wait between reconnect attempts (the backoff doubles up to it, with
    /// jitter, and starts over after a connection that stayed up). Default "60s".
    #[serde(default = "default_reconnect_max", deserialize_with = "de_duration")]
    pub reconnect_max_backoff: Duration,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            max_batch_events: default_max_batch(),
            channel_capacity: default_channel(),
            on_source_failure: OnSourceFailure::default(),
            reconnect_initial_backoff: default_reconnect_initial(),
            reconnect_max_backoff: default_reconnect_max(),
        }
    }
}

/// `[pipeline] on_source_failure`: the process's answer to a permanently failed source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnSourceFailure {
    /// Checkpoint the other sources, then exit with status 3.
    #[default]
    Exit,
    /// Keep the other sources running; `/health` stays 503.
    KeepRunning,
}

fn default_reconnect_initial() -> Duration {
    Duration::from_secs(1)
}
fn default_reconnect_max() -> Duration {
    Duration::from_secs(60)
}

fn default_max_batch() -> usize {
    4096
}
fn default_channel() -> usize {
    16384
}

#[cfg(test)]
mod tests {
    use crate::config::tests::{parse, GOOD};
    use std::time::Duration;

    #[test]
    fn admin_defaults_and_checks() {
        let c = parse(GOOD).expect("valid");
        assert!(c.admin.enabled);
        assert_eq!(c.admin.listen, "127.0.0.1:9187");
        assert_eq!(c.admin.wal_retention_warn_mb, 1024);
        assert_eq!(c.admin.wal_check_interval, Duration::from_secs(30));
        let e = parse(&format!("{GOOD}\n[admin]\nlisten = \"localhost\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("admin.listen"), "{e}");
        let e = parse(&format!("{GOOD}\n[admin]\nlisen = \"x\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("lisen"), "{e}");
        let c = parse(&format!(
            "{GOOD}\n[admin]\nenabled = false\nwal_check_interval = \"1s\"\n"
        ))
        .expect("valid");
        assert!(!c.admin.enabled);
        assert_eq!(c.admin.wal_check_interval, Duration::from_secs(1));
    }
}
