//! `kind = "nats"`: publish each event to NATS JetStream.
//!
//! * Subject: the `subject` template (default `logtide.{source}.{schema}.{table}`) with
//!   `{source}`, `{db}`, `{schema}`, `{table}` and `{op}` replaced by the event's values,
//!   each sanitized to one subject token (`.`, `*`, `>`, whitespace and control characters
//!   become `_`; an empty value becomes `_`).
//! * Payload: the event JSON ([`crate::event`]).
//! * `Nats-Msg-Id`: `<source>:<cursor>`. JetStream drops a message whose id it has seen
//!   within the stream's `duplicate_window`, so a replayed or retried batch is stored once.
//!   JetStream sets no length limit, but keeps every id of the window in memory: an id over
//!   [`MSG_ID_MAX`] bytes (a backfill row with a long text key) is cut and ends in a hash of
//!   the whole ([`crate::identity::bounded_id`]), still one id per cursor.
//! * Pipelined publishing: the messages of a chunk (`batch.max_events`, default 16384;
//!   `batch.max_bytes`, default 16 MiB) are published back to back on one connection without
//!   waiting for their acks; at most [`NATS_ACK_WINDOW`] acks are outstanding (publishing
//!   pauses until the oldest arrives), and the rest are awaited at the end of the chunk.
//!   The chunk is accepted only when **every** ack arrived and said "stored" (or
//!   "duplicate"). Any failed or missing ack (timeout, connection lost, server restarting)
//!   fails the whole chunk, which is retried with backoff ([`crate::sink::batch`]): already
//!   stored messages come back as duplicates and are dropped by the server. There is no
//!   explicit flush: the client writes publishes as they are queued, and an ack can only
//!   arrive for a message that reached the server.
//! * Ordering: messages of one chunk are written in order on one connection, and a chunk
//!   is retried before the next one starts. One edge remains: if the connection breaks in
//!   the middle of a chunk and the client reconnects before the rest of the chunk is
//!   written, a later message may be stored before an earlier lost one is re-published.
//!   Consumers that need strict order sort by `source.cursor` within a subject.
//! * `stream = { name, subjects, duplicate_window, storage }`: create the stream on the first
//!   delivery if it does not exist (an existing stream is left as it is).
//! * A message larger than the server's `max_payload` is dead-lettered without being sent
//!   (the server would close the connection), and so is one the stream refuses as over its
//!   `max_msg_size`. Other JetStream refusals (stream full with `discard = new`, storage
//!   exhausted, no leader) are retried and stop the sink when they persist: they concern the
//!   stream, not the event. "No stream for this subject" stops the sink.

use super::batch::{
    env_secret, header_safe, permanent, transient, Attempt, ChunkSender, Delivery, Records,
    Rejection, TableRoute,
};
use super::dead_letter::{DeadLetter, DeadLetters, ResendReport};
use super::{Sink, SinkError};
use crate::config::{NatsSinkConfig, NatsStorage, NatsStreamConfig};
use crate::error::Backoff;
use crate::event::{ChangeEvent, TableSchema};
use async_nats::jetstream::{
    self,
    context::{PublishAckFuture, PublishErrorKind},
    ErrorCode,
};
use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;

/// Default chunk limits of the nats sink: messages, bytes. A chunk is the unit of retry;
/// acks are pipelined within it ([`NATS_ACK_WINDOW`]).
pub const NATS_DEFAULTS: (usize, usize) = (16_384, 16 << 20);

/// Most publish acks outstanding at once: enough to keep the server busy across a round
/// trip, small enough to bound what a failed chunk re-publishes before it notices.
pub const NATS_ACK_WINDOW: usize = 4096;

/// A compiled subject template.
#[derive(Debug, Clone)]
pub struct SubjectTemplate {
    parts: Vec<Part>,
}

#[derive(Debug, Clone)]
enum Part {
    Lit(String),
    Source,
    Db,
    Schema,
    Table,
    Op,
}

/// The values a subject is built from.
pub struct SubjectVars<'a> {
    pub source: &'a str,
    pub db: &'a str,
    pub schema: &'a str,
    pub table: &'a str,
    pub op: &'a str,
}

impl SubjectTemplate {
    pub fn parse(t: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = t;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Lit(rest[..open].to_owned()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("subject {t:?} has an unclosed '{{'"))?;
            let name = &rest[open + 1..open + close];
            parts.push(match name {
                "source" => Part::Source,
                "db" => Part::Db,
                "schema" => Part::Schema,
                "table" => Part::Table,
                "op" => Part::Op,
                _ => {
                    return Err(format!(
                        "subject {t:?} uses {{{name}}}: use {{source}}, {{db}}, {{schema}}, {{table}} or {{op}}"
                    ))
                }
            });
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Lit(rest.to_owned()));
        }
        Ok(SubjectTemplate { parts })
    }

    pub fn render(&self, v: &SubjectVars<'_>) -> String {
        let mut out = String::with_capacity(64);
        for p in &self.parts {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Source => push_token(&mut out, v.source),
                Part::Db => push_token(&mut out, v.db),
                Part::Schema => push_token(&mut out, v.schema),
                Part::Table => push_token(&mut out, v.table),
                Part::Op => push_token(&mut out, v.op),
            }
        }
        out
    }
}

/// Appends `s` as one subject token.
fn push_token(out: &mut String, s: &str) {
    if s.is_empty() {
        out.push('_');
        return;
    }
    for c in s.chars() {
        out.push(
            if c == '.' || c == '*' || c == '>' || c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            },
        );
    }
}

struct NatsChunks<'a> {
    sink: &'a str,
    js: &'a jetstream::Context,
    subjects: &'a [String],
}

impl ChunkSender for NatsChunks<'_> {
    /// Publishes `range` pipelined: up to [`NATS_ACK_WINDOW`] acks outstanding, awaited
    /// oldest first. The first failed ack fails the whole chunk; the acks still pending are
    /// dropped (the client lets them expire) and the retry re-publishes the chunk.
    async fn send_chunk(&mut self, records: &Records, range: Range<usize>) -> Attempt {
        let window = NATS_ACK_WINDOW.min(range.len()).max(1);
        let mut pending: VecDeque<(usize, PublishAckFuture)> = VecDeque::with_capacity(window);
        let mut id = String::with_capacity(64);
        for i in range {
            if pending.len() >= window {
                if let Some((j, ack)) = pending.pop_front() {
                    if let Err(e) = ack.await {
                        return classify(self.sink, e, self.subject(j));
                    }
                }
            }
            let Some(item) = records.item(i) else {
                continue;
            };
            id.clear();
            push_header_safe(&mut id, &item.source);
            id.push(':');
            push_header_safe(&mut id, &item.cursor);
            let msg = jetstream::message::PublishMessage::build()
                .payload(bytes::Bytes::copy_from_slice(records.payload(i)))
                .message_id(crate::identity::bounded_id(&id, MSG_ID_MAX).as_ref());
            match self.js.send_publish(self.subject(i).to_owned(), msg).await {
                Ok(ack) => pending.push_back((i, ack)),
                Err(e) => return classify(self.sink, e, self.subject(i)),
            }
        }
        while let Some((j, ack)) = pending.pop_front() {
            if let Err(e) = ack.await {
                return classify(self.sink, e, self.subject(j));
            }
        }
        Attempt::Accepted
    }
}

impl NatsChunks<'_> {
    fn subject(&self, i: usize) -> &str {
        self.subjects.get(i).map_or("", String::as_str)
    }
}

/// Appends `s` to `out` as [`header_safe`] would, without an intermediate string.
/// The longest `Nats-Msg-Id` sent as it is.
pub const MSG_ID_MAX: usize = 256;

fn push_header_safe(out: &mut String, s: &str) {
    if s.bytes().all(|b| (0x21..0x7f).contains(&b) && b != b'%') {
        out.push_str(s);
    } else {
        out.push_str(&header_safe(s));
    }
}

fn classify(sink: &str, e: async_nats::jetstream::context::PublishError, subject: &str) -> Attempt {
    match e.kind() {
        PublishErrorKind::StreamNotFound => Attempt::Fatal(permanent(
            sink,
            format!("no JetStream stream captures subject {subject}: create one, or set [sinks.stream] so logtide creates it"),
            Some(Box::new(e)),
        )),
        PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe | PublishErrorKind::MaxAckPending => {
            Attempt::Retry {
                error: transient(sink, format!("no ack for a publish to {subject}"), Some(Box::new(e))),
                retry_after: None,
            }
        }
        // The stream refused the message itself (over the stream's max_msg_size): narrow it
        // down and dead-letter it. Any other JetStream error (stream full with
        // discard = new, storage exhausted, no leader) is about the stream, not the event:
        // retry, and stop when it persists, rather than dead-letter the whole stream.
        PublishErrorKind::Other => match std::error::Error::source(&e)
            .and_then(|s| s.downcast_ref::<async_nats::jetstream::Error>())
            .map(async_nats::jetstream::Error::error_code)
        {
            Some(ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM) => Attempt::Rejected {
                what: format!("JetStream refused the message: {}", crate::error::ErrorChain(&e)),
            },
            Some(_) => Attempt::Retry {
                error: transient(
                    sink,
                    format!("JetStream did not store a message on {subject}: check the stream's limits (max_msgs, max_bytes with discard = new) and the server's storage"),
                    Some(Box::new(e)),
                ),
                retry_after: None,
            },
            None => Attempt::Retry {
                error: transient(sink, format!("publish to {subject} failed"), Some(Box::new(e))),
                retry_after: None,
            },
        },
        _ => Attempt::Retry {
            error: transient(sink, format!("publish to {subject} failed"), Some(Box::new(e))),
            retry_after: None,
        },
    }
}

/// What one [`NatsSink::send`] did.
struct Sent {
    /// Messages over the server's max_payload, never sent, and why.
    big_rej: Vec<Rejection>,
    big: Records,
    /// Rejections among the sent records (indices into `ok`, or the input when `None`).
    rejected: Vec<Rejection>,
    ok: Option<Records>,
}

/// The JetStream sink.
pub struct NatsSink {
    name: String,
    client: async_nats::Client,
    js: jetstream::Context,
    template: SubjectTemplate,
    stream: Option<NatsStreamConfig>,
    stream_ready: bool,
    delivery: Delivery,
    dead: DeadLetters,
    route: TableRoute,
    records: Records,
    subjects: Vec<String>,
    last_subject: Option<(Arc<TableSchema>, &'static str, String)>,
}

impl NatsSink {
    /// Builds the sink. The connection is made in the background (a server that is down at
    /// start-up delays the first delivery, it does not fail the start).
    pub async fn build(cfg: &NatsSinkConfig) -> Result<NatsSink, SinkError> {
        let name = &cfg.name;
        let template =
            SubjectTemplate::parse(&cfg.subject).map_err(|m| permanent(name, m, None))?;
        let mut opts = async_nats::ConnectOptions::new()
            .name(format!("logtide-{name}"))
            .connection_timeout(cfg.connect_timeout)
            .request_timeout(Some(cfg.ack_timeout))
            .retry_on_initial_connect();
        if let Some(t) = &cfg.token_env {
            let t = env_secret(t, &format!("sinks.{name}.token_env"))
                .map_err(|m| permanent(name, m, None))?;
            opts = opts.token(t.expose().to_owned());
        }
        if let Some(u) = &cfg.user {
            let pw = match &cfg.password_env {
                Some(v) => env_secret(v, &format!("sinks.{name}.password_env"))
                    .map_err(|m| permanent(name, m, None))?
                    .expose()
                    .to_owned(),
                None => String::new(),
            };
            opts = opts.user_and_password(u.clone(), pw);
        }
        let client = async_nats::connect_with_options(cfg.url.as_str(), opts)
            .await
            .map_err(|e| {
                permanent(
                    name,
                    format!("bad NATS url {:?}", cfg.url),
                    Some(Box::new(e)),
                )
            })?;
        let delivery = Delivery::new(name, &cfg.batch, &cfg.retry, NATS_DEFAULTS);
        let js = jetstream::ContextBuilder::new()
            .timeout(cfg.ack_timeout)
            // A chunk keeps at most NATS_ACK_WINDOW acks outstanding; the slack covers acks
            // of abandoned attempts, which hold their permit until `ack_timeout`.
            .max_ack_inflight(NATS_ACK_WINDOW * 4)
            .ack_timeout(cfg.ack_timeout)
            .backpressure_on_inflight(true)
            .build(client.clone());
        Ok(NatsSink {
            name: name.clone(),
            client,
            js,
            template,
            stream: cfg.stream.clone(),
            stream_ready: cfg.stream.is_none(),
            delivery,
            dead: DeadLetters::new(
                name,
                "nats",
                cfg.dead_letter_path.as_deref(),
                cfg.on_permanent_failure,
            ),
            route: TableRoute::new(&cfg.tables),
            records: Records::with_capacity(1024, 1 << 20),
            subjects: Vec::with_capacity(1024),
            last_subject: None,
        })
    }

    /// For `logtide check`: which JetStream stream stores the subject of an event of `source`
    /// (the template rendered with placeholder schema/table/op tokens). With
    /// `stream = {...}` configured, a missing stream is fine (created at the first delivery).
    /// `Err` says what to fix: without a stream, every publish would be refused.
    pub async fn check_stream(&self, source: &str) -> Result<String, String> {
        let subject = self.template.render(&SubjectVars {
            source,
            db: "db",
            schema: "schema",
            table: "table",
            op: "c",
        });
        let found = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            self.js.stream_by_subject(subject.clone()),
        )
        .await
        .map_err(|_| format!("no answer from the NATS server within 10 s (is it running with JetStream, -js?) while looking up the stream for {subject}"))?;
        match (found, &self.stream) {
            (Ok(name), _) => Ok(format!("JetStream stream {name:?} stores {subject}")),
            (Err(_), Some(s)) => Ok(format!(
                "no stream stores {subject} yet: stream {:?} is created at the first delivery",
                s.name
            )),
            (Err(e), None) => Err(format!(
                "no JetStream stream stores {subject} ({e}): create one (nats stream add --subjects '{}') or set `stream = {{ name = \"...\" }}` on the sink so logtide creates it",
                self.template.render(&SubjectVars { source, db: "*", schema: "*", table: "*", op: "*" })
            )),
        }
    }

    /// Creates the configured stream if it does not exist.
    async fn ensure_stream(&mut self) -> Result<(), SinkError> {
        if self.stream_ready {
            return Ok(());
        }
        let Some(s) = &self.stream else { return Ok(()) };
        let config = jetstream::stream::Config {
            name: s.name.clone(),
            subjects: s.subjects.clone(),
            duplicate_window: s.duplicate_window,
            storage: match s.storage {
                NatsStorage::File => jetstream::stream::StorageType::File,
                NatsStorage::Memory => jetstream::stream::StorageType::Memory,
            },
            ..Default::default()
        };
        let mut backoff = Backoff::new(
            self.delivery.retry.initial_backoff,
            self.delivery.retry.max_backoff,
        );
        let mut attempt = 0;
        loop {
            match self.js.get_or_create_stream(config.clone()).await {
                Ok(_) => break,
                Err(e) => {
                    use async_nats::jetstream::context::CreateStreamErrorKind as K;
                    let fatal = matches!(
                        e.kind(),
                        K::EmptyStreamName
                            | K::InvalidStreamName
                            | K::JetStream(_)
                            | K::DomainAndExternalSet
                    );
                    if fatal || attempt >= self.delivery.retry.max_retries {
                        return Err(permanent(
                            &self.name,
                            format!("cannot create JetStream stream {:?} (check the name, the subjects and that the server runs with -js)", s.name),
                            Some(Box::new(e)),
                        ));
                    }
                    attempt += 1;
                    tracing::warn!(sink = %self.name, attempt, error = %crate::error::ErrorChain(&e), "stream creation failed, retrying");
                    tokio::time::sleep(backoff.next_wait()).await;
                }
            }
        }
        self.stream_ready = true;
        Ok(())
    }

    /// Sends `records` (with `self.subjects`), oversized messages dead-lettered first.
    async fn send(&mut self, records: &Records) -> Result<Sent, SinkError> {
        self.ensure_stream().await?;
        // The server closes the connection on a message over max_payload: never send one.
        let max_payload = self.client.server_info().max_payload;
        let limit = if max_payload == 0 {
            usize::MAX
        } else {
            max_payload.saturating_sub(512)
        };
        if (0..records.len()).all(|i| records.payload(i).len() <= limit) {
            // The usual case: send the records as they are.
            let mut sender = NatsChunks {
                sink: &self.name,
                js: &self.js,
                subjects: &self.subjects,
            };
            let rejected = self.delivery.run(&mut sender, records).await?;
            return Ok(Sent {
                big_rej: Vec::new(),
                big: Records::default(),
                rejected,
                ok: None,
            });
        }
        let mut ok = Records::with_capacity(records.len(), 0);
        let mut ok_subjects = Vec::with_capacity(records.len());
        let mut big = Records::default();
        let mut big_rej = Vec::new();
        let subjects = std::mem::take(&mut self.subjects);
        for i in 0..records.len() {
            let Some(item) = records.item(i) else {
                continue;
            };
            let p = records.payload(i);
            if p.len() > limit {
                big_rej.push(Rejection {
                    index: big.len(),
                    error: format!(
                        "the event is {} bytes, over the server's max_payload of {max_payload}",
                        p.len()
                    ),
                });
                big.push_with(item.cursor.clone(), item.source.clone(), None, |b| {
                    b.extend_from_slice(p)
                });
            } else {
                ok.push_with(item.cursor.clone(), item.source.clone(), None, |b| {
                    b.extend_from_slice(p)
                });
                ok_subjects.push(subjects.get(i).cloned().unwrap_or_default());
            }
        }
        self.subjects = subjects;
        let mut sender = NatsChunks {
            sink: &self.name,
            js: &self.js,
            subjects: &ok_subjects,
        };
        let rejected = self.delivery.run(&mut sender, &ok).await?;
        Ok(Sent {
            big_rej,
            big,
            rejected,
            ok: Some(ok),
        })
    }

    /// Re-sends dead letters (their stored event JSON) to the subjects their events map to.
    pub async fn resend(&mut self, letters: &[DeadLetter]) -> Result<ResendReport, SinkError> {
        self.delivery.resend = true;
        let mut records = Records::default();
        self.subjects.clear();
        for l in letters {
            let s = &l.event["source"];
            let str_of = |k: &str| s[k].as_str().unwrap_or_default().to_owned();
            self.subjects.push(self.template.render(&SubjectVars {
                source: &str_of("name"),
                db: &str_of("db"),
                schema: &str_of("schema"),
                table: &str_of("table"),
                op: l.event["op"].as_str().unwrap_or_default(),
            }));
            let json = serde_json::to_vec(&l.event).unwrap_or_default();
            records.push_with(l.cursor.clone(), l.source.clone(), None, |b| {
                b.extend_from_slice(&json)
            });
        }
        let sent = self.send(&records).await?;
        let ok = sent.ok.as_ref().unwrap_or(&records);
        let mut again = self.dead.to_letters(&sent.big, &sent.big_rej);
        again.extend(self.dead.to_letters(ok, &sent.rejected));
        Ok(ResendReport {
            sent: ok.len() - sent.rejected.len(),
            rejected: again,
        })
    }

    fn subject_of(&mut self, e: &ChangeEvent) -> String {
        let op = e.op.code();
        if let Some((t, o, s)) = &self.last_subject {
            if Arc::ptr_eq(t, &e.table) && *o == op {
                return s.clone();
            }
        }
        let t = &e.table;
        let s = self.template.render(&SubjectVars {
            source: &t.source.name,
            db: &t.db,
            schema: &t.schema,
            table: &t.name,
            op,
        });
        self.last_subject = Some((e.table.clone(), op, s.clone()));
        s
    }
}

impl Sink for NatsSink {
    fn name(&self) -> &str {
        &self.name
    }

    /// Accepted = JetStream acked every message of the batch (stored, or recognised as a
    /// duplicate of a stored one), and any message refused for good is in the fsynced
    /// dead-letter file.
    async fn deliver(&mut self, batch: &[ChangeEvent]) -> Result<(), SinkError> {
        let mut records = std::mem::take(&mut self.records);
        records.clear();
        self.subjects.clear();
        let now = crate::event::now_ms();
        for e in batch {
            if !self.route.selected(e) {
                continue;
            }
            let s = self.subject_of(e);
            self.subjects.push(s);
            records.push_event(e, now);
        }
        let res = if records.is_empty() {
            Ok(())
        } else {
            match self.send(&records).await {
                Ok(sent) => match self.dead.settle(&sent.big, &sent.big_rej).await {
                    Ok(()) => {
                        let ok = sent.ok.as_ref().unwrap_or(&records);
                        self.dead.settle(ok, &sent.rejected).await
                    }
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            }
        };
        self.records = records;
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_sanitized_tokens() {
        let t = SubjectTemplate::parse("logtide.{source}.{schema}.{table}").expect("parse");
        let s = t.render(&SubjectVars {
            source: "app",
            db: "d",
            schema: "pub.lic",
            table: "my table*>",
            op: "c",
        });
        assert_eq!(s, "logtide.app.pub_lic.my_table__");
        let t = SubjectTemplate::parse("x.{db}.{op}").expect("parse");
        assert_eq!(
            t.render(&SubjectVars {
                source: "",
                db: "",
                schema: "",
                table: "",
                op: "d"
            }),
            "x._.d"
        );
        assert!(SubjectTemplate::parse("x.{nope}").is_err());
        assert!(SubjectTemplate::parse("x.{table").is_err());
    }
}
