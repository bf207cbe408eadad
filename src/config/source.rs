//! The `[[sources]]` entries: one struct per `kind` (postgres, mysql, query), their TLS
//! modes, backfill settings and the SSH tunnel a source may be reached through.
//!
//! Pure data: what the file says. Where a running source actually connects (its `host` and
//! `port`, or an SSH tunnel's local end) is a [`crate::endpoint::Endpoint`], not a field
//! here.

use super::duration::{de_duration, parse_duration};
use super::secret::{read_secret, Secret};
use super::{default_connect_timeout, yes, ConfigError};
use crate::endpoint::Endpoint;
use crate::filter::{ColumnFilterConfig, Filter, TableFilterConfig};
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

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

    /// The database's `host` and `port` as configured (what a tunnel forwards to; without
    /// a tunnel, where the source connects).
    pub fn endpoint(&self) -> Endpoint {
        match self {
            SourceConfig::Postgres(c) => c.endpoint(),
            SourceConfig::Mysql(c) => c.endpoint(),
            SourceConfig::Query(c) => c.endpoint(),
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
    /// `host:port` as configured; see [`SourceConfig::endpoint`].
    pub fn endpoint(&self) -> Endpoint {
        Endpoint::direct(&self.host, self.port)
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
    /// `host:port` as configured; see [`SourceConfig::endpoint`].
    pub fn endpoint(&self) -> Endpoint {
        Endpoint::direct(&self.host, self.port)
    }
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
    /// `host:port` as configured; see [`SourceConfig::endpoint`].
    pub fn endpoint(&self) -> Endpoint {
        Endpoint::direct(&self.host, self.port())
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

fn default_chunk_rows() -> usize {
    20_000
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
fn default_status_interval() -> Duration {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{parse, GOOD};
    use crate::config::Config;

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
    fn ssh_and_paused_parse() {
        let text = GOOD.replace(
            "status_interval = \"2s\"",
            "status_interval = \"2s\"\npaused = true\nhost = \"db.internal\"\n\
             ssh = { host = \"bastion\", user = \"tunnel\", private_key = \"/k\", known_hosts = \"/kh\" }",
        );
        let c = parse(&text).expect("parses");
        let s = c.sources.first().expect("source");
        assert!(s.paused());
        let ssh = s.ssh().expect("ssh");
        assert_eq!((ssh.port, ssh.connect_timeout.as_secs()), (22, 10));
        // The config keeps the database's address (what the tunnel forwards to).
        assert_eq!(
            s.endpoint(),
            crate::endpoint::Endpoint::direct("db.internal", 5432)
        );
        let bad = text.replace("host = \"db.internal\"", "host = \"/run/pg\"");
        let err = parse(&bad)
            .expect_err("unix socket through ssh")
            .to_string();
        assert!(err.contains("sources.app.ssh"), "{err}");
    }
}
