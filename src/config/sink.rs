//! The `[[sinks]]` entries: one struct per `kind` (stdout, file, http, segment, nats), and
//! what the network sinks share: `batch`, `retry`, `on_permanent_failure`.

use super::duration::de_duration;
use super::{default_connect_timeout, yes};
use crate::filter::TableFilterConfig;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

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
