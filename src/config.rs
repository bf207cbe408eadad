//! The TOML configuration: serde structs validated at load, with secrets from environment
//! variables.
//!
//! Every struct denies unknown keys, so a typo fails at load with the key's name and the
//! file. Secrets are never in the file: a source names the environment variable that holds
//! its password (`password_env`), and [`Secret`] never prints its content.

use crate::filter::{ColumnFilterConfig, Filter, TableFilterConfig};
use serde::{Deserialize, Deserializer};
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A configuration problem, always naming the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config file {path}: `{key}` {problem}")]
    Invalid {
        path: PathBuf,
        key: String,
        problem: String,
    },
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub state: StateConfig,
    #[serde(default)]
    pub pipeline: PipelineConfig,
    #[serde(default, rename = "sources")]
    pub sources: Vec<SourceConfig>,
    #[serde(default, rename = "sinks")]
    pub sinks: Vec<SinkConfig>,
    #[serde(default)]
    pub admin: AdminConfig,
}

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

/// One `[[sources]]` entry; `kind` picks the connector.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SourceConfig {
    Postgres(PostgresSourceConfig),
    Mysql(MysqlSourceConfig),
    Query(QuerySourceConfig),
}

impl SourceConfig {
    pub fn name(&self) -> &str {
        match self {
            SourceConfig::Postgres(c) => &c.name,
            SourceConfig::Mysql(c) => &c.name,
            SourceConfig::Query(c) => &c.name,
        }
    }

    /// The SSH tunnel this source is reached through, if any.
    pub fn ssh(&self) -> Option<&SshTunnelConfig> {
        match self {
            SourceConfig::Postgres(c) => c.ssh.as_ref(),
            SourceConfig::Mysql(c) => c.ssh.as_ref(),
            SourceConfig::Query(c) => c.ssh.as_ref(),
        }
    }

    /// `paused = true`: the source starts paused.
    pub fn paused(&self) -> bool {
        match self {
            SourceConfig::Postgres(c) => c.paused,
            SourceConfig::Mysql(c) => c.paused,
            SourceConfig::Query(c) => c.paused,
        }
    }

    /// Sets `paused` (for comparing configs apart from it).
    pub fn set_paused(&mut self, paused: bool) {
        match self {
            SourceConfig::Postgres(c) => c.paused = paused,
            SourceConfig::Mysql(c) => c.paused = paused,
            SourceConfig::Query(c) => c.paused = paused,
        }
    }

    /// The database `host` and `port` (what a tunnel forwards to).
    pub fn endpoint(&self) -> (&str, u16) {
        match self {
            SourceConfig::Postgres(c) => (&c.host, c.port),
            SourceConfig::Mysql(c) => (&c.host, c.port),
            SourceConfig::Query(c) => (&c.host, c.port()),
        }
    }

    /// Points the source at `127.0.0.1:<local_port>` (a tunnel's local end); TLS keeps
    /// verifying the original host name.
    pub fn redirect_to_local(&mut self, local_port: u16) {
        let local = "127.0.0.1".to_owned();
        match self {
            SourceConfig::Postgres(c) => {
                c.tls_server_name = Some(std::mem::replace(&mut c.host, local));
                c.port = local_port;
            }
            SourceConfig::Mysql(c) => {
                c.tls_server_name = Some(std::mem::replace(&mut c.host, local));
                c.port = local_port;
            }
            SourceConfig::Query(c) => {
                c.tls_server_name = Some(std::mem::replace(&mut c.host, local));
                c.port_setting = Some(local_port);
            }
        }
    }

    pub fn filter(&self) -> Filter {
        let (t, c) = match self {
            SourceConfig::Postgres(c) => (&c.tables, &c.columns),
            SourceConfig::Mysql(c) => (&c.tables, &c.columns),
            SourceConfig::Query(_) => {
                return Filter::new(TableFilterConfig::default(), BTreeMap::new())
            }
        };
        Filter::new(t.clone(), c.clone())
    }
}

/// TLS mode, as libpq names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    Disable,
    #[default]
    Prefer,
    Require,
    VerifyFull,
}

/// `kind = "postgres"`: a logical replication slot with pgoutput.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSourceConfig {
    pub name: String,
    #[serde(default = "default_host")]
    pub host: String,
    #[serde(default = "default_pg_port")]
    pub port: u16,
    pub user: String,
    /// Name of the environment variable holding the password (none: trust/peer auth).
    #[serde(default)]
    pub password_env: Option<String>,
    pub database: String,
    #[serde(default)]
    pub sslmode: SslMode,
    /// PEM file of CA certificates for `verify-full` (default: the Mozilla root store).
    #[serde(default)]
    pub sslrootcert: Option<PathBuf>,
    /// Replication slot name. Default `logtide_<name>`.
    #[serde(default)]
    pub slot: Option<String>,
    /// Publication name. Default `logtide_<name>`.
    #[serde(default)]
    pub publication: Option<String>,
    /// Create the publication (FOR ALL TABLES, or the `tables.include` exact names) if it
    /// does not exist. Default true.
    #[serde(default = "yes")]
    pub create_publication: bool,
    /// How often to send a standby status update. Default "10s".
    #[serde(default = "default_status_interval", deserialize_with = "de_duration")]
    pub status_interval: Duration,
    /// Connect timeout. Default "10s".
    #[serde(default = "default_connect_timeout", deserialize_with = "de_duration")]
    pub connect_timeout: Duration,
    /// Longest wait for the server's next answer on a backfill's SQL connection (a COPY
    /// message, a catalog query); none within it and the connection is taken as silent (a
    /// proxy or partition that acknowledges TCP but forwards nothing), dropped, and the
    /// backfill resumes from its checkpoint. Default "60s".
    #[serde(default = "default_read_timeout", deserialize_with = "de_duration")]
    pub read_timeout: Duration,
    /// Initial backfill of existing rows: "initial" (first start only) or "never".
    #[serde(default)]
    pub backfill: BackfillMode,
    /// Per-table override of `backfill` (exact name or glob → mode).
    #[serde(default)]
    pub backfill_tables: BTreeMap<String, BackfillMode>,
    /// Rows per backfill chunk (one keyset SELECT). Default 20000.
    #[serde(default = "default_chunk_rows")]
    pub backfill_chunk_rows: usize,
    /// Reach the database through an SSH tunnel (`ssh = { host, user, private_key,
    /// known_hosts }`); see [`SshTunnelConfig`].
    #[serde(default)]
    pub ssh: Option<SshTunnelConfig>,
    /// Start paused (no events taken until resumed); a SIGHUP applies a changed value to a
    /// running `logtide run`. Default false.
    #[serde(default)]
    pub paused: bool,
    /// The name the server certificate must carry when `host` was rewritten to a tunnel's
    /// local end (set by [`crate::tunnel`], never read from the file).
    #[serde(skip)]
    pub tls_server_name: Option<String>,
    #[serde(default)]
    pub tables: TableFilterConfig,
    #[serde(default)]
    pub columns: BTreeMap<String, ColumnFilterConfig>,
}

impl PostgresSourceConfig {
    pub fn slot_name(&self) -> String {
        self.slot
            .clone()
            .unwrap_or_else(|| format!("logtide_{}", self.name))
    }
    pub fn publication_name(&self) -> String {
        self.publication
            .clone()
            .unwrap_or_else(|| format!("logtide_{}", self.name))
    }
    pub fn password(&self) -> Result<Option<Secret>, ConfigError> {
        read_secret(self.password_env.as_deref(), &self.name)
    }
    /// The host name TLS verifies and sends as SNI: `host`, or the real database host when
    /// `host` points at an SSH tunnel.
    pub fn tls_host(&self) -> &str {
        self.tls_server_name.as_deref().unwrap_or(&self.host)
    }
}

/// `kind = "mysql"`: a MySQL/MariaDB binary log in ROW format.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlSourceConfig {
    pub name: String,
    #[serde(default = "default_host")]
    pub host: String,
    #[serde(default = "default_mysql_port")]
    pub port: u16,
    pub user: String,
    #[serde(default)]
    pub password_env: Option<String>,
    /// Database used for metadata queries (optional).
    #[serde(default)]
    pub database: Option<String>,
    /// Replica server id this reader registers with; must be unique among replicas.
    /// Default 0x4C54 + a hash of the source name.
    #[serde(default)]
    pub server_id: Option<u32>,
    /// Heartbeat the server sends when idle; bounds shutdown latency. Default "5s".
    #[serde(default = "default_heartbeat", deserialize_with = "de_duration")]
    pub heartbeat: Duration,
    #[serde(default = "default_connect_timeout", deserialize_with = "de_duration")]
    pub connect_timeout: Duration,
    /// TLS to the server (every connection: SQL and binlog). Default "preferred".
    #[serde(default)]
    pub ssl_mode: MysqlSslMode,
    /// PEM file of CA certificates for `verify_ca` / `verify_identity` (default: the
    /// Mozilla root store).
    #[serde(default)]
    pub ssl_ca: Option<PathBuf>,
    /// Initial backfill of existing rows: "initial" (first start only) or "never".
    #[serde(default)]
    pub backfill: BackfillMode,
    /// Per-table override of `backfill` (exact name or glob → mode).
    #[serde(default)]
    pub backfill_tables: BTreeMap<String, BackfillMode>,
    /// Rows per backfill chunk (one keyset SELECT). Default 20000.
    #[serde(default = "default_chunk_rows")]
    pub backfill_chunk_rows: usize,
    /// Reach the database through an SSH tunnel (`ssh = { host, user, private_key,
    /// known_hosts }`); see [`SshTunnelConfig`].
    #[serde(default)]
    pub ssh: Option<SshTunnelConfig>,
    /// Start paused (no events taken until resumed); a SIGHUP applies a changed value to a
    /// running `logtide run`. Default false.
    #[serde(default)]
    pub paused: bool,
    /// The name the server certificate must carry when `host` was rewritten to a tunnel's
    /// local end (set by [`crate::tunnel`], never read from the file).
    #[serde(skip)]
    pub tls_server_name: Option<String>,
    #[serde(default)]
    pub tables: TableFilterConfig,
    #[serde(default)]
    pub columns: BTreeMap<String, ColumnFilterConfig>,
}

/// TLS mode of a MySQL source, as the MySQL client (`--ssl-mode`) names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MysqlSslMode {
    /// Never TLS.
    Disabled,
    /// TLS when the server offers it, else plain text; the certificate is not verified.
    #[default]
    Preferred,
    /// TLS or fail; the certificate is not verified.
    Required,
    /// TLS or fail; the certificate must chain to `ssl_ca` (or a Mozilla root).
    VerifyCa,
    /// Like `verify_ca`, and the certificate must name `host`.
    VerifyIdentity,
}

impl MysqlSslMode {
    /// The name in the config file.
    pub fn name(self) -> &'static str {
        match self {
            MysqlSslMode::Disabled => "disabled",
            MysqlSslMode::Preferred => "preferred",
            MysqlSslMode::Required => "required",
            MysqlSslMode::VerifyCa => "verify_ca",
            MysqlSslMode::VerifyIdentity => "verify_identity",
        }
    }
    /// Whether a server without TLS must be refused.
    pub fn requires_tls(self) -> bool {
        !matches!(self, MysqlSslMode::Disabled | MysqlSslMode::Preferred)
    }
}

impl MysqlSourceConfig {
    pub fn password(&self) -> Result<Option<Secret>, ConfigError> {
        read_secret(self.password_env.as_deref(), &self.name)
    }
    pub fn server_id(&self) -> u32 {
        self.server_id.unwrap_or_else(|| {
            let h = self.name.bytes().fold(2166136261u32, |h, b| {
                (h ^ u32::from(b)).wrapping_mul(16777619)
            });
            0x4C54_0000 | (h & 0xFFFF)
        })
    }
}

/// Whether existing rows are copied before streaming.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BackfillMode {
    /// On the first start of the source (no stored position), then stream.
    #[default]
    Initial,
    /// Never; stream changes only.
    Never,
}

/// The wire protocol a query-mode source speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum QueryProtocol {
    /// PostgreSQL (also Redshift and other PostgreSQL-wire databases).
    #[default]
    Postgres,
    /// MySQL / MariaDB.
    Mysql,
}

/// `kind = "query"`: scheduled incremental SELECTs over the PostgreSQL or the MySQL/MariaDB
/// wire protocol (`protocol`) for databases whose log logtide cannot read. See
/// `src/source/query/`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuerySourceConfig {
    pub name: String,
    /// "postgres" (default; also Redshift) or "mysql" (MySQL, MariaDB).
    #[serde(default)]
    pub protocol: QueryProtocol,
    #[serde(default = "default_host")]
    pub host: String,
    /// Default 5432 for postgres, 3306 for mysql; see [`QuerySourceConfig::port`].
    #[serde(default, rename = "port")]
    pub port_setting: Option<u16>,
    pub user: String,
    #[serde(default)]
    pub password_env: Option<String>,
    pub database: String,
    #[serde(default)]
    pub sslmode: SslMode,
    /// PEM file of CA certificates for `verify-full` (default: the Mozilla root store);
    /// only with `sslmode = "verify-full"`.
    #[serde(default)]
    pub sslrootcert: Option<PathBuf>,
    /// A SELECT using `{{cursor}}` and/or `{{last_sync_time}}`; both become bind parameters.
    pub query: String,
    /// Result column that only grows for new rows (id, updated_at).
    pub cursor_column: String,
    /// Result columns that, with the cursor, identify a row (ties at the boundary).
    #[serde(default)]
    pub key_columns: Vec<String>,
    /// Table name used in events, `schema.name` (e.g. "public.orders").
    pub table: String,
    /// Rows per SELECT. Default 10000.
    #[serde(default = "default_query_batch")]
    pub batch_size: usize,
    /// Most rows one run reads. Default 50000.
    #[serde(default = "default_query_max_rows")]
    pub max_rows_per_run: usize,
    /// Time between run starts. Default "1m".
    #[serde(default = "default_query_interval", deserialize_with = "de_duration")]
    pub interval: Duration,
    /// Value bound to `{{cursor}}` before anything was delivered (required when the query
    /// uses `{{cursor}}`).
    #[serde(default)]
    pub initial_cursor: Option<String>,
    /// How far below the highest delivered cursor value each run reads again, so rows
    /// committed late with an older cursor value are not missed: a duration (`"5s"`) for a
    /// date/timestamp cursor column, a number (`100`) for a numeric one, `0` for none.
    /// Default `"5s"` / `100` (by the column's type); text cursors have none. See
    /// `src/source/query/mod.rs`.
    #[serde(default)]
    pub lookback: Option<Lookback>,
    #[serde(default = "default_connect_timeout", deserialize_with = "de_duration")]
    pub connect_timeout: Duration,
    /// The longest one statement (a page of the query, the look-back bound, the start-up
    /// probe) may take before the connection counts as lost and is made anew (a server or
    /// network that stopped answering without closing the connection). Default "10m".
    #[serde(default = "default_query_timeout", deserialize_with = "de_duration")]
    pub query_timeout: Duration,
    /// Reach the database through an SSH tunnel (`ssh = { host, user, private_key,
    /// known_hosts }`); see [`SshTunnelConfig`].
    #[serde(default)]
    pub ssh: Option<SshTunnelConfig>,
    /// Start paused (no events taken until resumed); a SIGHUP applies a changed value to a
    /// running `logtide run`. Default false.
    #[serde(default)]
    pub paused: bool,
    /// The name the server certificate must carry when `host` was rewritten to a tunnel's
    /// local end (set by [`crate::tunnel`], never read from the file).
    #[serde(skip)]
    pub tls_server_name: Option<String>,
}

/// `lookback` of a query source.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookback {
    /// For date and timestamp cursor columns.
    Time(Duration),
    /// For numeric cursor columns: a non-negative decimal number, as text.
    Amount(String),
}

impl Lookback {
    /// Whether this is no lookback at all.
    pub fn is_zero(&self) -> bool {
        match self {
            Lookback::Time(d) => d.is_zero(),
            Lookback::Amount(a) => a.bytes().all(|b| b == b'0' || b == b'.'),
        }
    }
}

impl<'de> Deserialize<'de> for Lookback {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Float(f64),
            Text(String),
        }
        let amount = |t: String| {
            let (i, f) = t.split_once('.').unwrap_or((&t, "0"));
            let digits = |x: &str| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit());
            if digits(i) && digits(f) {
                Ok(Lookback::Amount(t.clone()))
            } else {
                Err(format!(
                    "lookback {t:?} is neither a duration (\"5s\") nor a non-negative number"
                ))
            }
        };
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(Lookback::Amount(n.to_string())),
            Raw::Float(f) if f.is_finite() && f >= 0.0 => Ok(Lookback::Amount(f.to_string())),
            Raw::Float(f) => Err(serde::de::Error::custom(format!(
                "lookback {f} must be a non-negative number"
            ))),
            Raw::Text(t) => match parse_duration(&t) {
                Ok(d) => Ok(Lookback::Time(d)),
                Err(_) => amount(t.trim().to_owned()).map_err(serde::de::Error::custom),
            },
        }
    }
}

impl QuerySourceConfig {
    pub fn password(&self) -> Result<Option<Secret>, ConfigError> {
        read_secret(self.password_env.as_deref(), &self.name)
    }
    /// As [`PostgresSourceConfig::tls_host`].
    pub fn tls_host(&self) -> &str {
        self.tls_server_name.as_deref().unwrap_or(&self.host)
    }
    /// The configured port, else the protocol's default (5432 / 3306).
    pub fn port(&self) -> u16 {
        self.port_setting.unwrap_or(match self.protocol {
            QueryProtocol::Postgres => default_pg_port(),
            QueryProtocol::Mysql => default_mysql_port(),
        })
    }
}

/// `ssh = { ... }` of a source: the database is reached through an SSH tunnel (a bastion
/// host). `logtide` runs the system OpenSSH client (`ssh -N -L`), checks the server's host
/// key strictly against `known_hosts`, authenticates with `private_key` only, and connects
/// the source to the tunnel's local end; `host`/`port` of the source are then resolved
/// and connected to on the SSH server's side. See [`crate::tunnel`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshTunnelConfig {
    /// The SSH server (bastion) host name or address.
    pub host: String,
    /// Default 22.
    #[serde(default = "default_ssh_port")]
    pub port: u16,
    pub user: String,
    /// The private key file (OpenSSH format, mode 0600, no passphrase).
    pub private_key: PathBuf,
    /// A known_hosts file holding the server's host key line (e.g. from
    /// `ssh-keyscan -p <port> <host>`); nothing else is trusted.
    pub known_hosts: PathBuf,
    /// Longest wait for the tunnel to be up. Default "10s".
    #[serde(default = "default_connect_timeout", deserialize_with = "de_duration")]
    pub connect_timeout: Duration,
    /// SSH keepalive (`ServerAliveInterval`; 3 unanswered ones close the tunnel). Default
    /// "15s".
    #[serde(default = "default_ssh_keepalive", deserialize_with = "de_duration")]
    pub keepalive_interval: Duration,
}

fn default_ssh_port() -> u16 {
    22
}
fn default_ssh_keepalive() -> Duration {
    Duration::from_secs(15)
}

fn default_query_batch() -> usize {
    10_000
}
fn default_query_max_rows() -> usize {
    50_000
}
fn default_query_interval() -> Duration {
    Duration::from_secs(60)
}

/// Backfill settings shared by the log-based sources.
#[derive(Debug, Clone)]
pub struct BackfillSettings {
    pub mode: BackfillMode,
    pub tables: BTreeMap<String, BackfillMode>,
    pub chunk_rows: usize,
}

impl BackfillSettings {
    /// The mode for `schema.table` (the first matching override, else the source's).
    pub fn mode_for(&self, table: &str) -> BackfillMode {
        self.tables
            .iter()
            .find(|(p, _)| crate::filter::glob(p, table))
            .map(|(_, m)| *m)
            .unwrap_or(self.mode)
    }
}

impl SourceConfig {
    pub fn backfill(&self) -> BackfillSettings {
        let (mode, tables, chunk_rows) = match self {
            SourceConfig::Postgres(c) => (c.backfill, &c.backfill_tables, c.backfill_chunk_rows),
            SourceConfig::Mysql(c) => (c.backfill, &c.backfill_tables, c.backfill_chunk_rows),
            SourceConfig::Query(_) => {
                return BackfillSettings {
                    mode: BackfillMode::Never,
                    tables: BTreeMap::new(),
                    chunk_rows: default_chunk_rows(),
                }
            }
        };
        BackfillSettings {
            mode,
            tables: tables.clone(),
            chunk_rows,
        }
    }
}

/// One `[[sinks]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SinkConfig {
    Stdout(StdoutSinkConfig),
    File(FileSinkConfig),
    Http(HttpSinkConfig),
    Segment(SegmentSinkConfig),
    Nats(NatsSinkConfig),
}

impl SinkConfig {
    pub fn name(&self) -> &str {
        match self {
            SinkConfig::Stdout(c) => &c.name,
            SinkConfig::File(c) => &c.name,
            SinkConfig::Http(c) => &c.name,
            SinkConfig::Segment(c) => &c.name,
            SinkConfig::Nats(c) => &c.name,
        }
    }
    /// Source names this sink is fed from (empty: all).
    pub fn sources(&self) -> &[String] {
        match self {
            SinkConfig::Stdout(c) => &c.sources,
            SinkConfig::File(c) => &c.sources,
            SinkConfig::Http(c) => &c.sources,
            SinkConfig::Segment(c) => &c.sources,
            SinkConfig::Nats(c) => &c.sources,
        }
    }
    /// The per-sink table filter (`tables = { include, exclude }`), for the sinks that have
    /// one (http, segment, nats); `None` means every table of the routed sources.
    pub fn tables(&self) -> Option<&TableFilterConfig> {
        match self {
            SinkConfig::Stdout(_) | SinkConfig::File(_) => None,
            SinkConfig::Http(c) => Some(&c.tables),
            SinkConfig::Segment(c) => Some(&c.tables),
            SinkConfig::Nats(c) => Some(&c.tables),
        }
    }
    /// Checks what serde cannot (sizes, mappings, templates); the message says what to fix.
    pub fn check(&self) -> Result<(), String> {
        match self {
            SinkConfig::Stdout(_) | SinkConfig::File(_) => Ok(()),
            SinkConfig::Http(c) => {
                c.batch.check()?;
                if !(c.url.starts_with("http://") || c.url.starts_with("https://")) {
                    return Err(format!(
                        "url {:?} must start with http:// or https://",
                        c.url
                    ));
                }
                Ok(())
            }
            SinkConfig::Segment(c) => {
                c.batch.check()?;
                if c.mappings.is_empty() {
                    return Err(
                        "has no [[sinks.mappings]]: map at least one table to a call".into(),
                    );
                }
                for m in &c.mappings {
                    m.check()?;
                }
                Ok(())
            }
            SinkConfig::Nats(c) => {
                c.batch.check()?;
                if c.subject.is_empty() {
                    return Err("subject must not be empty".into());
                }
                Ok(())
            }
        }
    }
}

/// `kind = "stdout"`: JSON lines on standard output.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdoutSinkConfig {
    #[serde(default = "default_sink_name")]
    pub name: String,
    #[serde(default)]
    pub sources: Vec<String>,
}

/// `kind = "file"`: JSON lines appended to a file, fsynced before a batch is accepted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    #[serde(default = "default_sink_name")]
    pub name: String,
    pub path: PathBuf,
    /// fsync after every batch (default true). false trades durability for speed.
    #[serde(default = "yes")]
    pub fsync: bool,
    #[serde(default)]
    pub sources: Vec<String>,
}

fn default_chunk_rows() -> usize {
    20_000
}
/// `batch = { ... }` of a network sink: how a delivered batch is split into requests.
///
/// The pipeline hands a sink whatever is waiting in the channel (up to
/// `pipeline.max_batch_events`); the sink sends it in chunks that close at `max_events` or
/// `max_bytes`, whichever comes first. There is no `max_wait`: see [`crate::sink::batch`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Most events in one request (default per sink: http 1000, segment 500, nats 4096).
    #[serde(default)]
    pub max_events: Option<usize>,
    /// Most payload bytes in one request (default per sink: http 1 MiB, segment 490 000 —
    /// under Segment's 500 KB batch limit —, nats 8 MiB of messages awaiting acks).
    #[serde(default)]
    pub max_bytes: Option<usize>,
}

impl BatchConfig {
    fn check(&self) -> Result<(), String> {
        if self.max_events == Some(0) {
            return Err("batch.max_events must be at least 1".into());
        }
        if self.max_bytes == Some(0) {
            return Err("batch.max_bytes must be at least 1".into());
        }
        Ok(())
    }
}

/// `retry = { ... }` of a network sink: transient failures (connection errors, timeouts,
/// 5xx, 429) are retried in the sink, per request, with exponential backoff and jitter; a
/// `Retry-After` header is honoured.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Retries of one request after its first attempt before the sink gives up and stops
    /// the pipeline (nothing is checkpointed; a restart resumes). Default 20 (with the
    /// default backoff: about 8 minutes of outage).
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// First backoff. Default "200ms".
    #[serde(default = "default_initial_backoff", deserialize_with = "de_duration")]
    pub initial_backoff: Duration,
    /// Backoff cap (also caps a `Retry-After` hint). Default "30s".
    #[serde(default = "default_max_backoff", deserialize_with = "de_duration")]
    pub max_backoff: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_retries: default_max_retries(),
            initial_backoff: default_initial_backoff(),
            max_backoff: default_max_backoff(),
        }
    }
}

fn default_max_retries() -> u32 {
    20
}
fn default_initial_backoff() -> Duration {
    Duration::from_millis(200)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(30)
}

/// What a sink does with an event the receiver rejects for good (HTTP 4xx for that one
/// event, a Segment row lacking a required field, a message over the NATS size limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnPermanentFailure {
    /// Append it to the dead-letter file (fsynced before the batch is accepted) and go on.
    #[default]
    DeadLetter,
    /// Stop the pipeline with an error naming the event; nothing after it is checkpointed.
    Stop,
}

/// `format` of the HTTP sink body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HttpFormat {
    /// `[event, event, ...]`, `Content-Type: application/json`.
    #[default]
    JsonArray,
    /// One event per line, `Content-Type: application/x-ndjson`.
    Ndjson,
}

/// `auth = { kind = "bearer", token_env = "..." }` or
/// `auth = { kind = "basic", username = "...", password_env = "..." }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum HttpAuth {
    Bearer(BearerAuth),
    Basic(BasicAuth),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BearerAuth {
    /// Environment variable holding the token (`Authorization: Bearer <token>`).
    pub token_env: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub username: String,
    /// Environment variable holding the password (unset: empty password).
    #[serde(default)]
    pub password_env: Option<String>,
}

/// `kind = "http"`: POST batches of events to a webhook.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSinkConfig {
    #[serde(default = "default_sink_name")]
    pub name: String,
    #[serde(default)]
    pub sources: Vec<String>,
    /// Tables this sink receives (globs on `schema.table`); default every table.
    #[serde(default)]
    pub tables: TableFilterConfig,
    /// The webhook URL (http:// or https://; TLS certificates are always verified).
    pub url: String,
    /// `json_array` (default) or `ndjson`.
    #[serde(default)]
    pub format: HttpFormat,
    /// Extra request headers (not secret: they may be logged).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub auth: Option<HttpAuth>,
    /// Environment variable holding the HMAC-SHA256 signing secret; unset: no signature.
    #[serde(default)]
    pub signing_secret_env: Option<String>,
    /// Default "X-Logtide-Signature" (value `v1=<hex>`).
    #[serde(default = "default_signature_header")]
    pub signature_header: String,
    /// Default "X-Logtide-Timestamp" (Unix seconds, part of the signed text).
    #[serde(default = "default_timestamp_header")]
    pub timestamp_header: String,
    /// Default "Idempotency-Key" (`<first cursor>..<last cursor>` of the request).
    #[serde(default = "default_idempotency_header")]
    pub idempotency_header: String,
    /// Whole-request timeout. Default "30s".
    #[serde(default = "default_request_timeout", deserialize_with = "de_duration")]
    pub timeout: Duration,
    /// Default "10s".
    #[serde(default = "default_connect_timeout", deserialize_with = "de_duration")]
    pub connect_timeout: Duration,
    #[serde(default)]
    pub batch: BatchConfig,
    #[serde(default)]
    pub retry: RetryConfig,
    #[serde(default)]
    pub on_permanent_failure: OnPermanentFailure,
    /// Dead-letter JSONL file. Default "<name>.dead-letters.jsonl".
    #[serde(default)]
    pub dead_letter_path: Option<PathBuf>,
}

/// The Segment-spec call a table maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SegmentCall {
    Identify,
    Track,
    Group,
    Page,
    Screen,
    Alias,
}

impl SegmentCall {
    pub fn as_str(self) -> &'static str {
        match self {
            SegmentCall::Identify => "identify",
            SegmentCall::Track => "track",
            SegmentCall::Group => "group",
            SegmentCall::Page => "page",
            SegmentCall::Screen => "screen",
            SegmentCall::Alias => "alias",
        }
    }
}

/// What a Segment mapping does with a delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnDelete {
    /// Send nothing (default).
    #[default]
    Skip,
    /// Send a `track` call named `delete_event` with the old row as properties.
    Track,
}

/// One `[[sinks.mappings]]` entry of a Segment sink: the events of `table` become `call`s.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentMapping {
    /// `schema.table` (exact or glob). The first matching mapping wins.
    pub table: String,
    pub call: SegmentCall,
    #[serde(default)]
    pub user_id_column: Option<String>,
    #[serde(default)]
    pub anonymous_id_column: Option<String>,
    /// group: the group's id.
    #[serde(default)]
    pub group_id_column: Option<String>,
    /// alias: the id merged into `userId`.
    #[serde(default)]
    pub previous_id_column: Option<String>,
    /// track: a fixed event name...
    #[serde(default)]
    pub event: Option<String>,
    /// ...or the column holding it.
    #[serde(default)]
    pub event_column: Option<String>,
    /// page/screen: a fixed name...
    #[serde(default)]
    pub name: Option<String>,
    /// ...or the column holding it.
    #[serde(default)]
    pub name_column: Option<String>,
    /// Column with the time of the call; default the transaction's commit time.
    #[serde(default)]
    pub timestamp_column: Option<String>,
    /// Columns sent as traits (identify, group) or properties (track, page, screen);
    /// default every column not used above.
    #[serde(default)]
    pub fields: Option<Vec<String>>,
    /// Renames of fields: `{ column = "traitName" }`.
    #[serde(default)]
    pub rename: BTreeMap<String, String>,
    /// `skip` (default) or `track`.
    #[serde(default)]
    pub on_delete: OnDelete,
    /// Event name of the `track` call a delete becomes. Default "<table> Deleted".
    #[serde(default)]
    pub delete_event: Option<String>,
}

impl SegmentMapping {
    fn check(&self) -> Result<(), String> {
        let t = &self.table;
        let need = |what: &str| {
            Err(format!(
                "mappings for {t:?}: a {} call needs {what}",
                self.call.as_str()
            ))
        };
        match self.call {
            SegmentCall::Identify | SegmentCall::Track
                if self.user_id_column.is_none() && self.anonymous_id_column.is_none() =>
            {
                return need("user_id_column or anonymous_id_column");
            }
            SegmentCall::Track if self.event.is_none() && self.event_column.is_none() => {
                return need("event or event_column");
            }
            SegmentCall::Group if self.group_id_column.is_none() => {
                return need("group_id_column");
            }
            SegmentCall::Group
                if self.user_id_column.is_none() && self.anonymous_id_column.is_none() =>
            {
                return need("user_id_column or anonymous_id_column");
            }
            SegmentCall::Page | SegmentCall::Screen
                if self.user_id_column.is_none()
                    || (self.name.is_none() && self.name_column.is_none()) =>
            {
                return need("user_id_column and name or name_column");
            }
            SegmentCall::Alias
                if self.user_id_column.is_none() || self.previous_id_column.is_none() =>
            {
                return need("user_id_column and previous_id_column");
            }
            _ => {}
        }
        if self.event.is_some() && self.event_column.is_some() {
            return Err(format!(
                "mappings for {t:?}: set event or event_column, not both"
            ));
        }
        if self.name.is_some() && self.name_column.is_some() {
            return Err(format!(
                "mappings for {t:?}: set name or name_column, not both"
            ));
        }
        if self.on_delete == OnDelete::Track && self.user_id_column.is_none() {
            return Err(format!(
                "mappings for {t:?}: on_delete = \"track\" needs user_id_column"
            ));
        }
        Ok(())
    }
}

/// `kind = "segment"`: Segment-spec `/v1/batch` calls (Segment, Customer.io, RudderStack).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentSinkConfig {
    #[serde(default = "default_sink_name")]
    pub name: String,
    #[serde(default)]
    pub sources: Vec<String>,
    #[serde(default)]
    pub tables: TableFilterConfig,
    /// Full URL of the batch endpoint. Default "https://api.segment.io/v1/batch"
    /// (Customer.io: "https://cdp.customer.io/v1/batch").
    #[serde(default = "default_segment_endpoint")]
    pub endpoint: String,
    /// Environment variable holding the write key (HTTP basic auth user, empty password).
    pub write_key_env: String,
    #[serde(default = "default_request_timeout", deserialize_with = "de_duration")]
    pub timeout: Duration,
    #[serde(default = "default_connect_timeout", deserialize_with = "de_duration")]
    pub connect_timeout: Duration,
    /// Largest single call; a bigger one is dead-lettered. Default 32768 (Segment's limit).
    #[serde(default = "default_max_call_bytes")]
    pub max_call_bytes: usize,
    #[serde(default)]
    pub batch: BatchConfig,
    #[serde(default)]
    pub retry: RetryConfig,
    #[serde(default)]
    pub on_permanent_failure: OnPermanentFailure,
    #[serde(default)]
    pub dead_letter_path: Option<PathBuf>,
    #[serde(default)]
    pub mappings: Vec<SegmentMapping>,
}

/// Storage of a stream the NATS sink creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NatsStorage {
    #[default]
    File,
    Memory,
}

/// `stream = { ... }` of the NATS sink: create the stream if it does not exist.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsStreamConfig {
    pub name: String,
    /// Subjects the stream captures. Default `["logtide.>"]`.
    #[serde(default = "default_nats_stream_subjects")]
    pub subjects: Vec<String>,
    /// JetStream's de-duplication window for `Nats-Msg-Id`. Default "2m".
    #[serde(default = "default_duplicate_window", deserialize_with = "de_duration")]
    pub duplicate_window: Duration,
    /// `file` (default) or `memory`.
    #[serde(default)]
    pub storage: NatsStorage,
}

/// `kind = "nats"`: publish each event to NATS JetStream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSinkConfig {
    #[serde(default = "default_sink_name")]
    pub name: String,
    #[serde(default)]
    pub sources: Vec<String>,
    #[serde(default)]
    pub tables: TableFilterConfig,
    /// Server URL(s), comma-separated. Default "nats://127.0.0.1:4222".
    #[serde(default = "default_nats_url")]
    pub url: String,
    /// Subject template; `{source}`, `{db}`, `{schema}`, `{table}`, `{op}` are replaced by
    /// the event's values with `.`, `*`, `>` and whitespace turned into `_`.
    /// Default "logtide.{source}.{schema}.{table}".
    #[serde(default = "default_nats_subject")]
    pub subject: String,
    /// Environment variable holding a token.
    #[serde(default)]
    pub token_env: Option<String>,
    /// User for user/password auth; the password comes from `password_env`.
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password_env: Option<String>,
    /// How long to wait for a publish ack (or a request). Default "10s".
    #[serde(default = "default_ack_timeout", deserialize_with = "de_duration")]
    pub ack_timeout: Duration,
    #[serde(default = "default_connect_timeout", deserialize_with = "de_duration")]
    pub connect_timeout: Duration,
    /// Create this stream when missing; unset: the stream must exist.
    #[serde(default)]
    pub stream: Option<NatsStreamConfig>,
    #[serde(default)]
    pub batch: BatchConfig,
    #[serde(default)]
    pub retry: RetryConfig,
    #[serde(default)]
    pub on_permanent_failure: OnPermanentFailure,
    #[serde(default)]
    pub dead_letter_path: Option<PathBuf>,
}

fn default_signature_header() -> String {
    "X-Logtide-Signature".into()
}
fn default_timestamp_header() -> String {
    "X-Logtide-Timestamp".into()
}
fn default_idempotency_header() -> String {
    "Idempotency-Key".into()
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_segment_endpoint() -> String {
    "https://api.segment.io/v1/batch".into()
}
fn default_max_call_bytes() -> usize {
    32 * 1024
}
fn default_nats_url() -> String {
    "nats://127.0.0.1:4222".into()
}
fn default_nats_subject() -> String {
    "logtide.{source}.{schema}.{table}".into()
}
fn default_nats_stream_subjects() -> Vec<String> {
    vec!["logtide.>".into()]
}
fn default_duplicate_window() -> Duration {
    Duration::from_secs(120)
}
fn default_ack_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_sink_name() -> String {
    "default".into()
}
fn default_host() -> String {
    "127.0.0.1".into()
}
fn default_pg_port() -> u16 {
    5432
}
fn default_mysql_port() -> u16 {
    3306
}
fn yes() -> bool {
    true
}
fn default_status_interval() -> Duration {
    Duration::from_secs(10)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_read_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_query_timeout() -> Duration {
    Duration::from_secs(600)
}
fn default_heartbeat() -> Duration {
    Duration::from_secs(5)
}

/// A password or token. `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Self {
        Secret(s)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

fn read_secret(var: Option<&str>, source: &str) -> Result<Option<Secret>, ConfigError> {
    let Some(var) = var else { return Ok(None) };
    match std::env::var(var) {
        Ok(v) => Ok(Some(Secret(v))),
        Err(_) => Err(ConfigError::Invalid {
            path: PathBuf::from("<environment>"),
            key: format!("sources.{source}.password_env"),
            problem: format!("names environment variable {var}, which is not set: export it before starting logtide"),
        }),
    }
}

/// For a file that is valid TOML but not a valid config: the error with the full key path
/// (`sources[1].connect_timeout: invalid type: ...`). serde cannot track keys inside the
/// internally tagged `[[sources]]` and `[[sinks]]` tables, so each entry is deserialized
/// again as the struct its `kind` names. `None` when the text is not TOML at all (toml's own
/// message, with line and column, is the better one then).
fn keyed_error(text: &str) -> Option<String> {
    fn entry<T: serde::de::DeserializeOwned>(v: &toml::Value, at: &str) -> Result<(), String> {
        // The struct itself has no `kind` field (the enum's tag).
        let mut v = v.clone();
        if let Some(t) = v.as_table_mut() {
            t.remove("kind");
        }
        serde_path_to_error::deserialize::<_, T>(v)
            .map(|_| ())
            .map_err(|e| {
                let key = e.path().to_string();
                if key == "." {
                    format!("{at}: {}", e.inner())
                } else {
                    format!("{at}.{key}: {}", e.inner())
                }
            })
    }
    let doc: toml::Table = toml::from_str(text).ok()?;
    let list = |k: &str| {
        doc.get(k)
            .and_then(|v| v.as_array())
            .cloned()
            .unwrap_or_default()
    };
    for (i, v) in list("sources").iter().enumerate() {
        let named = match v.get("name").and_then(|n| n.as_str()) {
            Some(n) => format!("sources[{i}] (\"{n}\")"),
            None => format!("sources[{i}]"),
        };
        let checked = match v.get("kind").and_then(|k| k.as_str()) {
            Some("postgres") => entry::<PostgresSourceConfig>(v, &named),
            Some("mysql") => entry::<MysqlSourceConfig>(v, &named),
            Some("query") => entry::<QuerySourceConfig>(v, &named),
            _ => entry::<SourceConfig>(v, &named),
        };
        if let Err(m) = checked {
            return Some(m);
        }
    }
    for (i, v) in list("sinks").iter().enumerate() {
        let named = match v.get("name").and_then(|n| n.as_str()) {
            Some(n) => format!("sinks[{i}] (\"{n}\")"),
            None => format!("sinks[{i}]"),
        };
        let checked = match v.get("kind").and_then(|k| k.as_str()) {
            Some("stdout") => entry::<StdoutSinkConfig>(v, &named),
            Some("file") => entry::<FileSinkConfig>(v, &named),
            Some("http") => entry::<HttpSinkConfig>(v, &named),
            Some("segment") => entry::<SegmentSinkConfig>(v, &named),
            Some("nats") => entry::<NatsSinkConfig>(v, &named),
            _ => entry::<SinkConfig>(v, &named),
        };
        if let Err(m) = checked {
            return Some(m);
        }
    }
    serde_path_to_error::deserialize::<_, Config>(toml::Value::Table(doc))
        .err()
        .map(|e| format!("{}: {}", e.path(), e.inner()))
}

/// Parses a duration with humantime: a number and a unit, `"500ms"`, `"5s"`, `"2m"`,
/// `"1h"`, `"1.5s"`, or several parts, `"1h 30m"` (humantime also spells the units out:
/// `sec`, `min`, `hours`, ... and knows `d` and `w`). Months and years are refused: their
/// length is a calendar convention, not a fixed duration.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    const HINT: &str = "write a number and a unit, e.g. \"500ms\", \"5s\", \"2m\" or \"1h 30m\"";
    let s = s.trim();
    let calendar = ["M", "month", "months", "y", "yr", "yrs", "year", "years"];
    if let Some(unit) = s
        .split(|c: char| !c.is_alphabetic())
        .find(|u| calendar.contains(u))
    {
        return Err(format!(
            "{s:?} is not a duration: {unit:?} is a calendar unit; {HINT}"
        ));
    }
    humantime::parse_duration(s).map_err(|e| match e {
        // humantime's own text lists months and years, which are refused above.
        humantime::DurationError::UnknownUnit { unit, .. } if !unit.is_empty() => {
            format!("{s:?} is not a duration: unknown unit {unit:?}; {HINT}")
        }
        e => format!("{s:?} is not a duration ({e}); {HINT}"),
    })
}

/// Serde adapter for duration strings.
pub fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses and validates config text; `path` is used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: keyed_error(text).unwrap_or_else(|| e.to_string()),
        })?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: String, problem: &str| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            problem: problem.to_owned(),
        };
        if self.sources.is_empty() {
            return Err(invalid(
                "sources".into(),
                "is empty: add at least one [[sources]] table",
            ));
        }
        if self.sinks.is_empty() {
            return Err(invalid(
                "sinks".into(),
                "is empty: add at least one [[sinks]] table (e.g. kind = \"stdout\")",
            ));
        }
        if self.pipeline.max_batch_events == 0 {
            return Err(invalid(
                "pipeline.max_batch_events".into(),
                "must be at least 1",
            ));
        }
        for s in &self.sources {
            if s.backfill().chunk_rows == 0 {
                return Err(invalid(
                    format!("sources.{}.backfill_chunk_rows", s.name()),
                    "must be at least 1",
                ));
            }
        }
        if self.pipeline.channel_capacity == 0 {
            return Err(invalid(
                "pipeline.channel_capacity".into(),
                "must be at least 1",
            ));
        }
        if self.pipeline.reconnect_initial_backoff.is_zero()
            || self.pipeline.reconnect_max_backoff < self.pipeline.reconnect_initial_backoff
        {
            return Err(invalid(
                "pipeline.reconnect_initial_backoff / reconnect_max_backoff".into(),
                "the initial backoff must be more than 0 and at most reconnect_max_backoff",
            ));
        }
        if let Err(problem) = self.admin.listen_addr() {
            return Err(invalid("admin.listen".into(), &problem));
        }
        if self.admin.wal_check_interval.is_zero() {
            return Err(invalid(
                "admin.wal_check_interval".into(),
                "must be more than 0",
            ));
        }
        let mut names = HashSet::new();
        for s in &self.sources {
            let n = s.name();
            if n.is_empty()
                || !n
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(invalid(
                    format!("sources.name = {n:?}"),
                    "must be non-empty and use only letters, digits, '_' and '-'",
                ));
            }
            if !names.insert(n.to_owned()) {
                return Err(invalid(
                    format!("sources.name = {n:?}"),
                    "is used twice: source names must be unique",
                ));
            }
            if let Some(ssh) = s.ssh() {
                if s.endpoint().0.starts_with('/') {
                    return Err(invalid(
                        format!("sources.{n}.ssh"),
                        "cannot forward to a unix socket: set host to the database's address as seen from the SSH server",
                    ));
                }
                if ssh.host.is_empty() || ssh.user.is_empty() {
                    return Err(invalid(
                        format!("sources.{n}.ssh"),
                        "needs host and user of the SSH server",
                    ));
                }
                if ssh.connect_timeout.is_zero() {
                    return Err(invalid(
                        format!("sources.{n}.ssh.connect_timeout"),
                        "must be more than 0",
                    ));
                }
            }
            if let SourceConfig::Query(q) = s {
                let key = |k: &str| format!("sources.{n}.{k}");
                if q.batch_size == 0 {
                    return Err(invalid(key("batch_size"), "must be at least 1"));
                }
                if q.max_rows_per_run == 0 {
                    return Err(invalid(key("max_rows_per_run"), "must be at least 1"));
                }
                if q.interval.is_zero() {
                    return Err(invalid(key("interval"), "must be more than 0"));
                }
                if q.query_timeout.is_zero() {
                    return Err(invalid(key("query_timeout"), "must be more than 0"));
                }
                if q.cursor_column.is_empty() {
                    return Err(invalid(key("cursor_column"), "must name a result column"));
                }
                if q.query.contains("{{cursor}}") && q.initial_cursor.is_none() {
                    return Err(invalid(
                        key("initial_cursor"),
                        "is required when the query uses {{cursor}}: set the value the first run binds (e.g. \"0\" or \"1970-01-01\")",
                    ));
                }
                if q.table
                    .split_once('.')
                    .is_none_or(|(a, b)| a.is_empty() || b.is_empty())
                {
                    return Err(invalid(
                        key("table"),
                        "must be schema.name, e.g. \"public.orders\"",
                    ));
                }
            }
            if let SourceConfig::Mysql(m) = s {
                if let Some(ca) = &m.ssl_ca {
                    let key = format!("sources.{n}.ssl_ca");
                    if !matches!(
                        m.ssl_mode,
                        MysqlSslMode::VerifyCa | MysqlSslMode::VerifyIdentity
                    ) {
                        return Err(invalid(
                            key,
                            &format!(
                                "is only used with ssl_mode = \"verify_ca\" or \"verify_identity\" (ssl_mode is \"{}\"): set one of them to verify the server's certificate, or remove ssl_ca",
                                m.ssl_mode.name()
                            ),
                        ));
                    }
                    if !ca.is_file() {
                        return Err(invalid(
                            key,
                            &format!("names {}, which is not a readable file", ca.display()),
                        ));
                    }
                }
            }
            // A CA file promises verification: never accept it with a mode that does not
            // verify (libpq would silently verify the chain only; logtide would not at all).
            let pg_tls = match s {
                SourceConfig::Postgres(p) => Some((p.sslmode, p.sslrootcert.as_ref())),
                SourceConfig::Query(q) => Some((q.sslmode, q.sslrootcert.as_ref())),
                SourceConfig::Mysql(_) => None,
            };
            if let Some((mode, Some(root))) = pg_tls {
                let key = format!("sources.{n}.sslrootcert");
                if mode != SslMode::VerifyFull {
                    return Err(invalid(
                        key,
                        "is only used with sslmode = \"verify-full\" (the certificate is not verified otherwise): set sslmode = \"verify-full\", or remove sslrootcert",
                    ));
                }
                if !root.is_file() {
                    return Err(invalid(
                        key,
                        &format!("names {}, which is not a readable file", root.display()),
                    ));
                }
            }
            if let SourceConfig::Postgres(p) = s {
                let slot = p.slot_name();
                if slot.is_empty()
                    || slot.len() > 63
                    || !slot
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                {
                    return Err(invalid(
                        format!("sources.{n}.slot"),
                        "must be 1-63 characters of lower-case letters, digits and '_' (PostgreSQL's rule for slot names; the default is logtide_<name>)",
                    ));
                }
            }
        }
        let mut sink_names = HashSet::new();
        for k in &self.sinks {
            if !sink_names.insert(k.name().to_owned()) {
                return Err(invalid(
                    format!("sinks.name = {:?}", k.name()),
                    "is used twice: give each sink its own name",
                ));
            }
            if let Err(problem) = k.check() {
                return Err(invalid(format!("sinks.{}", k.name()), &problem));
            }
            for s in k.sources() {
                if !names.contains(s) {
                    return Err(invalid(
                        format!("sinks.{}.sources", k.name()),
                        &format!("names source {s:?}, which is not defined in [[sources]]"),
                    ));
                }
            }
        }
        Ok(())
    }

    pub fn source(&self, name: &str) -> Option<&SourceConfig> {
        self.sources.iter().find(|s| s.name() == name)
    }

    /// Every environment variable the config names for a secret, with the key naming it.
    pub fn secret_vars(&self) -> Vec<(String, &str)> {
        let mut out = Vec::new();
        for s in &self.sources {
            let var = match s {
                SourceConfig::Postgres(c) => c.password_env.as_deref(),
                SourceConfig::Mysql(c) => c.password_env.as_deref(),
                SourceConfig::Query(c) => c.password_env.as_deref(),
            };
            if let Some(v) = var {
                out.push((format!("sources.{}.password_env", s.name()), v));
            }
        }
        for k in &self.sinks {
            let n = k.name();
            match k {
                SinkConfig::Stdout(_) | SinkConfig::File(_) => {}
                SinkConfig::Http(c) => {
                    match &c.auth {
                        Some(HttpAuth::Bearer(b)) => {
                            out.push((format!("sinks.{n}.auth.token_env"), b.token_env.as_str()))
                        }
                        Some(HttpAuth::Basic(b)) => {
                            if let Some(v) = &b.password_env {
                                out.push((format!("sinks.{n}.auth.password_env"), v.as_str()));
                            }
                        }
                        None => {}
                    }
                    if let Some(v) = &c.signing_secret_env {
                        out.push((format!("sinks.{n}.signing_secret_env"), v.as_str()));
                    }
                }
                SinkConfig::Segment(c) => {
                    out.push((format!("sinks.{n}.write_key_env"), c.write_key_env.as_str()))
                }
                SinkConfig::Nats(c) => {
                    if let Some(v) = &c.token_env {
                        out.push((format!("sinks.{n}.token_env"), v.as_str()));
                    }
                    if let Some(v) = &c.password_env {
                        out.push((format!("sinks.{n}.password_env"), v.as_str()));
                    }
                }
            }
        }
        out
    }

    /// Checks that every secret's environment variable is set, before a command binds a port,
    /// creates a file or connects: a missing one is a config error naming the variable.
    pub fn check_secrets(&self, path: &Path) -> Result<(), ConfigError> {
        let missing: Vec<_> = self
            .secret_vars()
            .into_iter()
            .filter(|(_, var)| std::env::var_os(var).is_none())
            .collect();
        let Some((key, var)) = missing.first() else {
            return Ok(());
        };
        let more = match missing.len() {
            1 => String::new(),
            n => format!(
                " ({} more not set: {})",
                n - 1,
                missing[1..]
                    .iter()
                    .map(|(_, v)| *v)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        Err(ConfigError::Invalid {
            path: path.to_owned(),
            key: key.clone(),
            problem: format!(
                "names environment variable {var}, which is not set: export it before starting logtide{more}"
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) const GOOD: &str = r#"
        [state]
        path = "/tmp/x"
        [[sources]]
        kind = "postgres"
        name = "app"
        user = "u"
        database = "d"
        status_interval = "2s"
        tables = { include = ["public.*"] }
        columns = { "public.users" = { exclude = ["secret"] } }
        [[sinks]]
        kind = "file"
        path = "/tmp/out.jsonl"
    "#;

    pub(super) fn parse(t: &str) -> Result<Config, ConfigError> {
        Config::parse(t, Path::new("test.toml"))
    }

    #[test]
    fn query_protocol_picks_the_default_port_and_checks_tls() {
        let q = |extra: &str| {
            format!(
                "[[sources]]\nkind = \"query\"\nname = \"w\"\nuser = \"u\"\ndatabase = \"d\"\n\
                 query = \"SELECT id FROM t WHERE id > {{{{cursor}}}}\"\ncursor_column = \"id\"\n\
                 table = \"d.t\"\ninitial_cursor = \"0\"\n{extra}\n[[sinks]]\nkind = \"stdout\"\n"
            )
        };
        let port = |c: &Config| match &c.sources[0] {
            SourceConfig::Query(q) => (q.protocol, q.port()),
            _ => panic!("not a query source"),
        };
        let c = parse(&q("")).expect("postgres default");
        assert_eq!(port(&c), (QueryProtocol::Postgres, 5432));
        let c = parse(&q("protocol = \"mysql\"\nsslmode = \"disable\"")).expect("mysql");
        assert_eq!(port(&c), (QueryProtocol::Mysql, 3306));
        let c = parse(&q("protocol = \"mysql\"\nport = 3307")).expect("mysql port");
        assert_eq!(port(&c), (QueryProtocol::Mysql, 3307));
        parse(&q("protocol = \"mysql\"\nsslmode = \"require\"")).expect("TLS for mysql");
        assert!(parse(&q("protocol = \"oracle\"")).is_err());
    }

    #[test]
    fn query_lookback_is_a_duration_or_an_amount() {
        let q = |extra: &str| {
            format!(
                "[[sources]]\nkind = \"query\"\nname = \"w\"\nuser = \"u\"\ndatabase = \"d\"\n\
                 query = \"SELECT id FROM t\"\ncursor_column = \"id\"\n\
                 table = \"d.t\"\n{extra}\n[[sinks]]\nkind = \"stdout\"\n"
            )
        };
        let lb = |extra: &str| match parse(&q(extra)).map(|c| c.sources[0].clone()) {
            Ok(SourceConfig::Query(q)) => Ok(q.lookback),
            Ok(_) => panic!("not a query source"),
            Err(e) => Err(e.to_string()),
        };
        assert_eq!(lb(""), Ok(None));
        assert_eq!(
            lb("lookback = \"5s\""),
            Ok(Some(Lookback::Time(Duration::from_secs(5))))
        );
        assert_eq!(
            lb("lookback = 100"),
            Ok(Some(Lookback::Amount("100".into())))
        );
        assert_eq!(
            lb("lookback = 0.5"),
            Ok(Some(Lookback::Amount("0.5".into())))
        );
        assert!(lb("lookback = 0")
            .expect("zero")
            .is_some_and(|l| l.is_zero()));
        assert!(lb("lookback = \"0s\"")
            .expect("zero")
            .is_some_and(|l| l.is_zero()));
        assert!(lb("lookback = \"soon\"").is_err());
        assert!(lb("lookback = -3").is_err());
    }

    #[test]
    fn good_config_loads_with_defaults() {
        let c = parse(GOOD).expect("valid");
        let SourceConfig::Postgres(p) = &c.sources[0] else {
            panic!("postgres")
        };
        assert_eq!(p.port, 5432);
        assert_eq!(p.slot_name(), "logtide_app");
        assert_eq!(p.status_interval, Duration::from_secs(2));
        assert_eq!(p.sslmode, SslMode::Prefer);
        assert_eq!(c.pipeline.max_batch_events, 4096);
    }

    #[test]
    fn mysql_tls_settings_are_checked_at_load() {
        let mysql = |extra: &str| {
            parse(&format!(
                "[[sources]]\nkind = \"mysql\"\nname = \"m\"\nuser = \"u\"\n{extra}\n[[sinks]]\nkind = \"stdout\"\n"
            ))
        };
        let c = mysql("").expect("valid");
        let SourceConfig::Mysql(m) = &c.sources[0] else {
            panic!("mysql")
        };
        assert_eq!(m.ssl_mode, MysqlSslMode::Preferred);
        assert!(!m.ssl_mode.requires_tls());
        let c = mysql("ssl_mode = \"verify_identity\"").expect("valid without ssl_ca");
        let SourceConfig::Mysql(m) = &c.sources[0] else {
            panic!("mysql")
        };
        assert!(m.ssl_mode.requires_tls() && m.ssl_ca.is_none());
        let e = mysql("ssl_mode = \"verify-full\"").unwrap_err().to_string();
        assert!(e.contains("verify-full"), "{e}");
        let e = mysql("ssl_mode = \"required\"\nssl_ca = \"/etc/hostname\"")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("sources.m.ssl_ca") && e.contains("verify_ca"),
            "{e}"
        );
        let e = mysql("ssl_mode = \"verify_ca\"\nssl_ca = \"/nonexistent/ca.pem\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    }

    #[test]
    fn unknown_key_is_named() {
        let e = parse(&GOOD.replace("user = \"u\"", "user = \"u\"\nhots = 1"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("hots") && e.contains("test.toml"), "{e}");
    }

    #[test]
    fn missing_key_is_named() {
        let e = parse(&GOOD.replace("database = \"d\"", ""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("database"), "{e}");
    }

    #[test]
    fn bad_duration_is_named() {
        let e = parse(&GOOD.replace("\"2s\"", "\"2 parsecs\""))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("status_interval") || e.contains("parsecs"),
            "{e}"
        );
    }

    #[test]
    fn unknown_sink_source_is_named() {
        let e = parse(&format!("{GOOD}\nsources = [\"nope\"]"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope"), "{e}");
    }

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

    #[test]
    fn ssh_and_paused_parse_and_redirect() {
        let text = GOOD.replace(
            "status_interval = \"2s\"",
            "status_interval = \"2s\"\npaused = true\nhost = \"db.internal\"\n\
             ssh = { host = \"bastion\", user = \"tunnel\", private_key = \"/k\", known_hosts = \"/kh\" }",
        );
        let c = parse(&text).expect("parses");
        let mut s = c.sources.first().expect("source").clone();
        assert!(s.paused());
        let ssh = s.ssh().expect("ssh").clone();
        assert_eq!((ssh.port, ssh.connect_timeout.as_secs()), (22, 10));
        s.redirect_to_local(40000);
        assert_eq!(s.endpoint(), ("127.0.0.1", 40000));
        match &s {
            SourceConfig::Postgres(p) => assert_eq!(p.tls_host(), "db.internal"),
            _ => panic!("postgres"),
        }
        let bad = text.replace("host = \"db.internal\"", "host = \"/run/pg\"");
        let err = parse(&bad)
            .expect_err("unix socket through ssh")
            .to_string();
        assert!(err.contains("sources.app.ssh"), "{err}");
    }

    #[test]
    fn durations() {
        let ok = |t: &str| parse_duration(t).unwrap_or_else(|e| panic!("{t}: {e}"));
        // Every form the README, config/example.toml and the tests use, and the decimals the
        // hand-written parser accepted.
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("200ms"), Duration::from_millis(200));
        assert_eq!(ok("1s"), Duration::from_secs(1));
        assert_eq!(ok(" 5s "), Duration::from_secs(5));
        assert_eq!(ok("60s"), Duration::from_secs(60));
        assert_eq!(ok("2m"), Duration::from_secs(120));
        assert_eq!(ok("10m"), Duration::from_secs(600));
        assert_eq!(ok("1h"), Duration::from_secs(3600));
        assert_eq!(ok("1.5s"), Duration::from_millis(1500));
        assert_eq!(ok("0.5m"), Duration::from_secs(30));
        assert_eq!(ok("0s"), Duration::ZERO);
        assert_eq!(ok("1h 30m"), Duration::from_secs(5400));
        for bad in ["5", "", "s", "5y", "1 month", "5x", "-1s", "1e3s"] {
            let e = parse_duration(bad).expect_err(bad);
            assert!(
                e.contains("is not a duration") && e.contains("\"5s\""),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn a_bad_duration_names_its_key() {
        let pg = |name: &str, timeout: &str| {
            format!(
                "[[sources]]\nkind = \"postgres\"\nname = \"{name}\"\nuser = \"u\"\n\
                 database = \"d\"\nconnect_timeout = \"{timeout}\"\n"
            )
        };
        let text = format!(
            "{}{}[[sinks]]\nkind = \"stdout\"\n",
            pg("a", "10s"),
            pg("b", "10 parsecs")
        );
        let err = Config::parse(&text, Path::new("t.toml"))
            .expect_err("bad duration")
            .to_string();
        assert!(
            err.contains("sources[1] (\"b\").connect_timeout")
                && err.contains("\"10 parsecs\" is not a duration: unknown unit \"parsecs\""),
            "{err}"
        );
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("hunter2".into());
        assert_eq!(format!("{s:?} {s}"), "*** ***");
    }
}

#[cfg(test)]
mod example_tests {
    use super::tests::{parse, GOOD};
    use super::*;
    #[test]
    fn example_config_is_valid() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example.toml");
        super::Config::load(&path).expect("config/example.toml must stay valid");
    }

    #[test]
    fn docker_config_is_valid() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docker/logtide.toml");
        super::Config::load(&path).expect("docker/logtide.toml must stay valid");
    }

    #[test]
    fn quickstart_config_is_valid() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/quickstart.toml");
        super::Config::load(&path).expect("config/quickstart.toml must stay valid");
    }

    /// A bad value inside `[[sources]]` / `[[sinks]]` names its key, not only the table.
    #[test]
    fn bad_values_name_their_key() {
        let with = |line: &str| {
            let t = GOOD.replace("status_interval = \"2s\"", line);
            match parse(&t) {
                Err(e) => e.to_string(),
                Ok(_) => panic!("{line} must be refused"),
            }
        };
        for (line, key) in [
            (
                "connect_timeout = 10",
                "sources[0] (\"app\").connect_timeout",
            ),
            ("port = \"5525\"", "sources[0] (\"app\").port"),
            ("sslmode = \"bogus\"", "sources[0] (\"app\").sslmode"),
            (
                "connect_timeout = \"5 parsecs\"",
                "sources[0] (\"app\").connect_timeout",
            ),
        ] {
            let msg = with(line);
            assert!(msg.contains(key), "{line}: {msg}");
            assert!(msg.contains("test.toml"), "{msg}");
        }
        let bad_sink = GOOD.replace(
            "path = \"/tmp/out.jsonl\"",
            "path = \"/tmp/o\"\nfsync = \"yes\"",
        );
        let msg = parse(&bad_sink).expect_err("refused").to_string();
        assert!(msg.contains("sinks[0].fsync"), "{msg}");
    }

    #[test]
    fn missing_secret_variables_are_named() {
        let t = GOOD.replace(
            "user = \"u\"",
            "user = \"u\"\npassword_env = \"LOGTIDE_TEST_SURELY_UNSET_VAR\"",
        );
        let cfg = parse(&t).expect("valid");
        let e = cfg
            .check_secrets(Path::new("/tmp/t.toml"))
            .expect_err("unset variable");
        let msg = e.to_string();
        assert!(msg.contains("LOGTIDE_TEST_SURELY_UNSET_VAR"), "{msg}");
        assert!(msg.contains("sources.app.password_env"), "{msg}");
        assert!(parse(GOOD)
            .expect("valid")
            .check_secrets(Path::new("x"))
            .is_ok());
    }
}
