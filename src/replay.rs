//! `logtide replay`: move a source's stored position to a position the server still holds,
//! so the next run delivers again from there (or skips ahead).
//!
//! What "still holds" means differs by engine:
//! - MySQL/MariaDB: any binlog file still listed by `SHOW BINARY LOGS`; the position may be
//!   before or after the stored one.
//! - PostgreSQL: a logical slot never goes back before its `confirmed_flush_lsn` (the server
//!   silently starts there instead). logtide confirms only what it checkpointed, so a
//!   replay can start at the stored checkpoint or later, never earlier; an earlier position
//!   is refused with what to do instead (re-backfill).
//!
//! Accepted positions: an event's `cursor` (the event itself is delivered again), or a
//! checkpoint position: `file:pos` for MySQL (a transaction boundary, such as a stored
//! position or `SHOW MASTER STATUS`) or a GTID (MariaDB `0-1-42`, MySQL `uuid:42`: the
//! stream starts with the transaction after it), an LSN (`16/B374D848`) for PostgreSQL.

use crate::checkpoint::{CheckpointError, CheckpointStore};
use crate::config::{Config, MysqlSourceConfig, PostgresSourceConfig, SourceConfig};
use crate::endpoint::Endpoint;
use crate::position::{Lsn, MysqlPosition, PgPosition, Position, PositionParseError};

/// Why a replay cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("no source named {0:?} in the config")]
    UnknownSource(String),
    #[error("--from: {0}")]
    Parse(#[from] PositionParseError),
    #[error("replay is not available for query sources: their cursor is stored by `logtide run`; use `logtide reset` to run the query from the start")]
    QuerySource,
    #[error("{0}")]
    Unavailable(String),
    #[error("cannot check the position on the server: {0}")]
    Server(String),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
}

impl ReplayError {
    /// Exit code: 2 for a bad argument, 3 for what the server cannot provide, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            ReplayError::UnknownSource(_) | ReplayError::Parse(_) | ReplayError::QuerySource => 2,
            ReplayError::Unavailable(_) | ReplayError::Server(_) => 3,
            ReplayError::Checkpoint(_) => 1,
        }
    }
}

/// The outcome: the stored position before and after.
#[derive(Debug, Clone)]
pub struct Replay {
    pub previous: Option<Position>,
    pub from: Position,
}

/// Checks `from` against the server (at `at`) and stores it as `source`'s position.
pub async fn prepare(
    cfg: &Config,
    at: &Endpoint,
    store: &CheckpointStore,
    source: &str,
    from: &str,
) -> Result<Replay, ReplayError> {
    let scfg = cfg
        .source(source)
        .ok_or_else(|| ReplayError::UnknownSource(source.to_owned()))?;
    let previous = store.load(source)?;
    let pos = match scfg {
        SourceConfig::Postgres(p) => Position::Postgres(postgres_position(p, at, from).await?),
        SourceConfig::Mysql(m) => {
            let (m, at) = (m.clone(), at.clone());
            let from = from.to_owned();
            let prev = previous.clone();
            tokio::task::spawn_blocking(move || mysql_position(&m, &at, &from, prev.as_ref()))
                .await
                .map_err(|e| ReplayError::Server(e.to_string()))??
        }
        SourceConfig::Query(_) => return Err(ReplayError::QuerySource),
    };
    store.force(source, &pos).await?;
    Ok(Replay {
        previous,
        from: pos,
    })
}

/// The checkpoint that makes the event at `(.., ordinal)` the first one delivered: the
/// source skips everything at or before a stored position.
fn before_event(ordinal: u64) -> u64 {
    ordinal.saturating_sub(1)
}

/// Parses a MySQL event cursor `SSSSSSSSSS:PPPPPPPPPPPPPPPP:OOOOOOOOOOOOOOOO` (file sequence,
/// transaction start, ordinal) into (sequence, pos, ordinal).
fn parse_mysql_cursor(s: &str) -> Option<(u64, u64, u64)> {
    let mut parts = s.split(':');
    let (seq, pos, ord) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || seq.len() != 10 || pos.len() != 16 || ord.len() != 16 {
        return None;
    }
    Some((
        seq.parse().ok()?,
        u64::from_str_radix(pos, 16).ok()?,
        u64::from_str_radix(ord, 16).ok()?,
    ))
}

fn mysql_position(
    cfg: &MysqlSourceConfig,
    at: &Endpoint,
    from: &str,
    _stored: Option<&Position>,
) -> Result<Position, ReplayError> {
    let files = crate::source::mysql::binary_logs(cfg, at)
        .map_err(|e| ReplayError::Server(crate::error::ErrorChain(&e).to_string()))?;
    let pos = if let Some((seq, pos, ord)) = parse_mysql_cursor(from) {
        let file = files
            .iter()
            .find(|f| crate::position::binlog_file_seq(f) == seq)
            .ok_or_else(|| {
                ReplayError::Unavailable(format!(
                    "binlog file number {seq} of cursor {from} is no longer on the server (oldest: {}): it was purged; re-backfill instead",
                    files.first().map(String::as_str).unwrap_or("none")
                ))
            })?;
        MysqlPosition {
            file: file.clone(),
            pos,
            ordinal: before_event(ord),
            gtid: None,
        }
    } else {
        let Position::Mysql(m) =
            crate::source::parse_position(&SourceConfig::Mysql(cfg.clone()), from)?
        else {
            return Err(ReplayError::Parse(PositionParseError::new(
                from,
                "a binlog position like mysql-bin.000012:4567 or an event cursor",
            )));
        };
        // A GTID start is checked by the server when the dump starts (a GTID no longer in
        // the binlogs stops the source with the purged-binlog error).
        if m.start_gtid().is_none() && !files.contains(&m.file) {
            return Err(ReplayError::Unavailable(format!(
                "binlog {} is not on the server (oldest: {}): it was purged or never existed; re-backfill instead",
                m.file,
                files.first().map(String::as_str).unwrap_or("none")
            )));
        }
        m
    };
    Ok(Position::Mysql(pos))
}

async fn postgres_position(
    cfg: &PostgresSourceConfig,
    at: &Endpoint,
    from: &str,
) -> Result<PgPosition, ReplayError> {
    let pos = if from.contains('/') {
        PgPosition::checkpoint(from.parse::<Lsn>()?)
    } else {
        let p = crate::position::parse_pg_cursor(from)?;
        PgPosition {
            lsn: p.lsn,
            ordinal: before_event(p.ordinal),
        }
    };
    let (client, conn) = crate::source::postgres::tls::connect_sql(cfg, at)
        .await
        .map_err(|e| ReplayError::Server(crate::error::ErrorChain(&e).to_string()))?;
    let driver = tokio::spawn(conn);
    let slot = cfg.slot_name();
    let row = client
        .query_opt(
            "SELECT confirmed_flush_lsn::text FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(|e| ReplayError::Server(e.to_string()));
    drop(client);
    let _ = driver.await;
    let confirmed: Option<String> = match row? {
        None => {
            return Err(ReplayError::Unavailable(format!(
                "replication slot {slot} does not exist: nothing can be replayed; `logtide run` creates it"
            )))
        }
        Some(r) => r.try_get(0).map_err(|e| ReplayError::Server(e.to_string()))?,
    };
    if let Some(c) = confirmed {
        let c: Lsn = c.parse().map_err(ReplayError::Parse)?;
        if pos.lsn < c {
            return Err(ReplayError::Unavailable(format!(
                "replication slot {slot} has confirmed everything up to {c}: PostgreSQL cannot stream changes before it again (a logical slot never moves back). Replay from {c} or later, or re-backfill the tables (`logtide reset --source {}` with backfill enabled)",
                cfg.name
            )));
        }
    }
    Ok(pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mysql_cursors_parse_and_bad_ones_do_not() {
        assert_eq!(
            parse_mysql_cursor("0000000012:00000000000001A2:0000000000000003"),
            Some((12, 0x1a2, 3))
        );
        assert_eq!(parse_mysql_cursor("mysql-bin.000012:4567"), None);
        assert_eq!(parse_mysql_cursor("0000000012:1A2:3"), None);
        assert_eq!(
            parse_mysql_cursor("0000000012:00000000000001A2:0000000000000003:1"),
            None
        );
    }

    #[test]
    fn an_event_cursor_replays_that_event() {
        assert_eq!(before_event(3), 2);
        assert_eq!(before_event(0), 0);
    }
}
