//! Operator commands: `check`, `discover`, `preview`, `backfill`, `dead-letters` and the lag
//! part of `status`.
//!
//! Owns: talking to a source's server for inspection only — validation queries, catalog
//! reads, slot and binlog positions —, listing and re-sending a sink's dead letters, and
//! formatting the answers for people. Does not own streaming (`preview` drives the
//! ordinary [`crate::source::run`] through a [`crate::source::SourceContext`], like the
//! service does, but delivers to no sink, stores no checkpoint and confirms nothing to the
//! server), the dead-letter file format ([`crate::sink::dead_letter`]), the filter rules
//! ([`crate::filter`], shared with `run` so the capture marks match), or the CLI
//! (`src/commands/`).
//!
//! Nothing here prints a password: connection errors are reduced to what failed and for
//! which user.

pub mod backfill;
pub mod check;
pub mod dead_letters;
pub mod discover;
pub mod preview;
pub mod status;

use crate::config::MysqlSourceConfig;
use crate::error::ErrorChain;
use crate::source::mysql::MysqlError;
use std::fmt;

/// How serious a finding of `logtide check` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
        })
    }
}

/// One line of `logtide check`: `ok|warn|FAIL <scope>: <what> — <fix>`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    pub level: Level,
    /// The source or sink name (`sink <name>` for sinks).
    pub scope: String,
    pub what: String,
    /// What to change; empty for `ok` lines.
    pub fix: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.level, self.scope, self.what)?;
        if !self.fix.is_empty() {
            write!(f, " — {}", self.fix)?;
        }
        Ok(())
    }
}

/// Collects the findings of one source or sink.
#[derive(Debug)]
pub(crate) struct Report {
    scope: String,
    pub(crate) findings: Vec<Finding>,
}

impl Report {
    pub(crate) fn new(scope: impl Into<String>) -> Self {
        Report {
            scope: scope.into(),
            findings: Vec::new(),
        }
    }
    fn push(&mut self, level: Level, what: String, fix: String) {
        self.findings.push(Finding {
            level,
            scope: self.scope.clone(),
            what,
            fix,
        });
    }
    pub(crate) fn ok(&mut self, what: impl Into<String>) {
        self.push(Level::Ok, what.into(), String::new());
    }
    pub(crate) fn warn(&mut self, what: impl Into<String>, fix: impl Into<String>) {
        self.push(Level::Warn, what.into(), fix.into());
    }
    pub(crate) fn fail(&mut self, what: impl Into<String>, fix: impl Into<String>) {
        self.push(Level::Fail, what.into(), fix.into());
    }
}

/// Where a source's password comes from, for "check the password" advice.
fn password_hint(password_env: Option<&str>) -> String {
    match password_env {
        Some(v) => format!("check `user` and the password in the environment variable {v}"),
        None => "check `user`, and set `password_env` to the name of an environment variable holding the password".into(),
    }
}

/// A failed PostgreSQL connection as (what, fix): authentication failures name the user,
/// other failures keep the error chain (which never holds the password).
pub(crate) fn describe_pg_connect_error(
    user: &str,
    password_env: Option<&str>,
    err: &(dyn std::error::Error + 'static),
) -> (String, String) {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(pg) = e.downcast_ref::<tokio_postgres::Error>() {
            if let Some(db) = pg.as_db_error() {
                match db.code().code() {
                    "28P01" => {
                        return (
                            format!("authentication failed for user {user:?}"),
                            password_hint(password_env),
                        )
                    }
                    "28000" => {
                        return (
                            format!("the server rejected user {user:?}: {}", db.message()),
                            "allow the user from this host in pg_hba.conf, or fix `user`".into(),
                        )
                    }
                    "3D000" => {
                        return (
                            format!("cannot connect: {}", db.message()),
                            "fix `database` in the source's config".into(),
                        )
                    }
                    _ => {}
                }
            }
        }
        cur = e.source();
    }
    (
        format!("cannot connect: {}", ErrorChain(err)),
        "check host, port, sslmode and that the server is running".into(),
    )
}

/// A failed MySQL connection as (what, fix), like [`describe_pg_connect_error`].
pub(crate) fn describe_mysql_connect_error(
    cfg: &MysqlSourceConfig,
    e: &MysqlError,
) -> (String, String) {
    match e {
        MysqlError::Auth { code, message, .. } => (
            format!(
                "authentication failed for user {:?} (error {code}: {message})",
                cfg.user
            ),
            password_hint(cfg.password_env.as_deref()),
        ),
        MysqlError::Connect { .. } | MysqlError::Io { .. } => (
            format!("cannot connect: {}", ErrorChain(e)),
            "check host, port and that the server is running".into(),
        ),
        MysqlError::Tls(_) => (
            format!("cannot connect: {}", ErrorChain(e)),
            "check the source's ssl_mode and ssl_ca (README: TLS to MySQL)".into(),
        ),
        other => (
            format!("cannot connect: {}", ErrorChain(other)),
            "check the source's connection settings".into(),
        ),
    }
}

/// `schema.table` for messages.
pub(crate) fn qualified(schema: &str, table: &str) -> String {
    format!("{schema}.{table}")
}

/// The first `n` names joined, with "and N more" when there are more.
pub(crate) fn some_names(names: &[String], n: usize) -> String {
    let mut s = names.iter().take(n).cloned().collect::<Vec<_>>().join(", ");
    if names.len() > n {
        s.push_str(&format!(" and {} more", names.len() - n));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finding_lines() {
        let f = Finding {
            level: Level::Fail,
            scope: "app".into(),
            what: "wal_level is \"replica\"".into(),
            fix: "set wal_level = logical".into(),
        };
        assert_eq!(
            f.to_string(),
            "FAIL app: wal_level is \"replica\" — set wal_level = logical"
        );
        let ok = Finding {
            level: Level::Ok,
            scope: "app".into(),
            what: "connected".into(),
            fix: String::new(),
        };
        assert_eq!(ok.to_string(), "ok app: connected");
        assert_eq!(
            some_names(&["a".into(), "b".into(), "c".into()], 2),
            "a, b and 1 more"
        );
    }
}
