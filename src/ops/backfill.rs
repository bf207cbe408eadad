//! `logtide backfill --source S --table T`: start an on-demand backfill of one table.
//!
//! The backfill itself runs inside the service, between transactions of the stream
//! ([`crate::backfill::ondemand`]). This command checks the table can be backfilled
//! (captured, with a key that can be paginated), then hands the request to the running
//! service through its admin endpoint (`POST /sources/S/backfill/T`). With no service
//! running (nothing answers and the state store can be opened) the request is stored, and
//! the next `logtide run` starts with it. `--wait` follows the progress on `/sources/S`
//! until the job is done or failed.

use crate::backfill::ondemand::{self, Job, Jobs, JOBS_KEY};
use crate::backfill::{BackfillError, TableProgress};
use crate::checkpoint::{CheckpointError, CheckpointStore};
use crate::config::{Config, SourceConfig};
use std::time::Duration;

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The running service took it.
    Requested { table: String, admin: String },
    /// No service runs: stored for the next `logtide run`.
    Stored { table: String },
    /// Already stored and not finished.
    AlreadyStored { table: String },
    /// `--wait`: the service finished it.
    Done { table: String, rows: u64 },
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("cannot backfill {table}")]
    Table {
        table: String,
        #[source]
        source: BackfillError,
    },
    #[error("the state store {path} is held by a running logtide, but its admin endpoint did not answer ({why}); enable [admin] in the config of the running service (the request goes through it) and restart it")]
    NoEndpoint { path: String, why: String },
    #[error("the running service refused the request: {0}")]
    Refused(String),
    #[error("the on-demand backfill of {table} failed: {error}")]
    Failed { table: String, error: String },
    #[error("cannot store the request")]
    Store(#[from] CheckpointError),
}

impl RequestError {
    /// The CLI's exit code: 3 for the table or the database, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            RequestError::Table { source, .. } if source.is_source_side() => 3,
            RequestError::Failed { .. } => 3,
            _ => 1,
        }
    }
}

/// Percent-encodes a path segment (everything but unreserved characters).
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Stores a request for the next `logtide run`; `false` when the table is already queued.
pub async fn store_request(
    store: &CheckpointStore,
    source: &str,
    table: &str,
) -> Result<bool, CheckpointError> {
    let mut jobs: Jobs = store.load_backfill(source, JOBS_KEY)?.unwrap_or_default();
    if jobs.jobs.iter().any(|j| j.table == table) {
        return Ok(false);
    }
    jobs.next_run += 1;
    jobs.jobs.push(Job {
        table: table.to_owned(),
        run: jobs.next_run,
        progress: TableProgress::default(),
    });
    store.save_backfill(source, JOBS_KEY, &jobs).await?;
    Ok(true)
}

/// Validates the table on the database at `at` and hands over (or stores) the request;
/// with `wait`, follows it to the end.
pub async fn request(
    cfg: &Config,
    source: &SourceConfig,
    at: &crate::endpoint::Endpoint,
    table: &str,
    wait: bool,
) -> Result<Outcome, RequestError> {
    let table = ondemand::validate(source, at, table)
        .await
        .map_err(|e| RequestError::Table {
            table: table.to_owned(),
            source: e,
        })?;
    let base = format!("http://{}", cfg.admin.listen);
    let url = format!(
        "{base}/sources/{}/backfill/{}",
        encode_segment(source.name()),
        encode_segment(&table)
    );
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| RequestError::NoEndpoint {
            path: cfg.state.path.display().to_string(),
            why: e.to_string(),
        })?;
    if !cfg.admin.enabled {
        return store_or_fail(cfg, source, table, "the admin endpoint is disabled".into()).await;
    }
    let answer = http.post(&url).send().await;
    match answer {
        Ok(resp) if resp.status().as_u16() == 202 => {
            if !wait {
                return Ok(Outcome::Requested {
                    table,
                    admin: cfg.admin.listen.clone(),
                });
            }
            follow(
                &http,
                &format!("{base}/sources/{}", encode_segment(source.name())),
                &table,
            )
            .await
        }
        Ok(resp) => {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            Err(RequestError::Refused(format!("{status}: {}", body.trim())))
        }
        Err(e) if e.is_connect() => store_or_fail(cfg, source, table, e.to_string()).await,
        Err(e) => Err(RequestError::NoEndpoint {
            path: cfg.state.path.display().to_string(),
            why: e.to_string(),
        }),
    }
}

async fn store_or_fail(
    cfg: &Config,
    source: &SourceConfig,
    table: String,
    why: String,
) -> Result<Outcome, RequestError> {
    let store = CheckpointStore::open(&cfg.state.path).map_err(|_| RequestError::NoEndpoint {
        path: cfg.state.path.display().to_string(),
        why,
    })?;
    if store_request(&store, source.name(), &table).await? {
        Ok(Outcome::Stored { table })
    } else {
        Ok(Outcome::AlreadyStored { table })
    }
}

/// Polls `/sources/S` until the job of `table` is done or failed.
async fn follow(http: &reqwest::Client, url: &str, table: &str) -> Result<Outcome, RequestError> {
    let mut last_rows = None;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let snap: serde_json::Value = match http.get(url).send().await {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(e) => {
                return Err(RequestError::Refused(format!(
                    "the service stopped answering: {e}"
                )))
            }
        };
        let job = snap["backfills"]
            .as_array()
            .and_then(|a| a.iter().find(|j| j["table"] == table))
            .cloned()
            .unwrap_or_default();
        let rows = job["rows"].as_u64().unwrap_or(0);
        if last_rows != Some(rows) {
            eprintln!("{table}: {rows} rows");
            last_rows = Some(rows);
        }
        match job["state"].as_str() {
            Some("done") => {
                return Ok(Outcome::Done {
                    table: table.to_owned(),
                    rows,
                })
            }
            Some("failed") => {
                return Err(RequestError::Failed {
                    table: table.to_owned(),
                    error: job["error"].as_str().unwrap_or("").to_owned(),
                })
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(encode_segment("public.orders"), "public.orders");
        assert_eq!(encode_segment("s/odd name"), "s%2Fodd%20name");
        assert_eq!(encode_segment("é"), "%C3%A9");
    }
}
