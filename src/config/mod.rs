//! The TOML configuration: serde structs validated at load, with secrets from environment
//! variables. One module per part of the file: [`source`] (`[[sources]]`), [`sink`]
//! (`[[sinks]]`), [`process`] (`[state]`, `[pipeline]`, `[admin]`), and the value types
//! [`secret`] and [`duration`]; this module owns the whole file (load, validation, errors).
//!
//! Every struct denies unknown keys, so a typo fails at load with the key's name and the
//! file. Secrets are never in the file: a source names the environment variable that holds
//! its password (`password_env`), and [`Secret`] never prints its content.
//!
//! Config is pure data: nothing here is set at run time. Where a source is reached (an SSH
//! tunnel's local end) travels as a [`crate::endpoint::Endpoint`].

pub mod duration;
pub mod process;
pub mod secret;
pub mod sink;
pub mod source;

pub use duration::{de_duration, parse_duration};
pub use process::{AdminConfig, OnSourceFailure, PipelineConfig, StateConfig};
pub use secret::Secret;
pub use sink::{
    BasicAuth, BatchConfig, BearerAuth, FileSinkConfig, HttpAuth, HttpFormat, HttpSinkConfig,
    NatsSinkConfig, NatsStorage, NatsStreamConfig, OnDelete, OnPermanentFailure, RetryConfig,
    SegmentCall, SegmentMapping, SegmentSinkConfig, SinkConfig, StdoutSinkConfig,
};
pub use source::{
    BackfillMode, BackfillSettings, Lookback, MysqlSourceConfig, MysqlSslMode,
    PostgresSourceConfig, QueryProtocol, QuerySourceConfig, SourceConfig, SshTunnelConfig, SslMode,
};

use serde::Deserialize;
use std::collections::HashSet;
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

pub(super) fn yes() -> bool {
    true
}
pub(super) fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
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
                if s.endpoint().host.starts_with('/') {
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
