//! Batching, retries and the per-event rejection search shared by the network sinks
//! (http, segment, nats).
//!
//! # What a batch is
//!
//! The pipeline hands a sink one ordered batch: whatever was waiting in the channel when the
//! sink became free, up to `pipeline.max_batch_events`. A network sink then sends it as one
//! or more **requests** ("chunks"), each closing at the sink's `batch.max_events` or
//! `batch.max_bytes` — whichever is reached first — and sends them one after the other, in
//! order. A single event larger than `max_bytes` travels alone.
//!
//! **There is no `max_wait`.** The pipeline never holds events back to fill a batch and
//! waits for a sink to accept a batch before it takes the next one, so a sink cannot merge
//! batches without breaking "accepted means delivered". In effect `max_wait` is zero: a quiet
//! stream sends each change as soon as it arrives (latency = one round trip), and a busy
//! stream sends full chunks because events pile up in the channel while a request is in
//! flight. The key is therefore not accepted in the config.
//!
//! # Retries
//!
//! A transient failure of a request (connection refused or reset, timeout, HTTP 408, 425,
//! 429, 5xx, NATS ack timeout) is retried *in the sink*, for that request only, with
//! exponential backoff (`retry.initial_backoff`, doubling, capped at `retry.max_backoff`)
//! plus up to 25% jitter; a receiver's `Retry-After` is honoured (capped at `max_backoff`).
//! Chunks already accepted are not sent again. After `retry.max_retries` the sink gives up
//! with [`SinkError::Permanent`]: the pipeline stops without checkpointing the batch, and a
//! restart delivers it again from the checkpoint.
//!
//! # Rejections and dead letters
//!
//! When the receiver rejects a request's *content* for good (an HTTP 4xx such as 400, 413
//! or 422), the chunk is split in halves and each half is sent again, left first, until the
//! rejected events are isolated; a single rejected event goes to the dead letters (see
//! [`crate::sink::dead_letter`]) or stops the sink (`on_permanent_failure = "stop"`).
//! Accepted events keep their order; k bad events among n cost about 2·k·log2(n) extra
//! requests.

use super::SinkError;
use crate::config::{BatchConfig, RetryConfig};
use crate::error::Backoff;
use crate::event::ChangeEvent;
use crate::filter::{Filter, TableFilterConfig};
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::time::Duration;

/// Encoded events of one delivery, in order: one JSON text per event in one buffer.
#[derive(Debug, Default)]
pub struct Records {
    buf: Vec<u8>,
    items: Vec<Item>,
}

/// One encoded event.
#[derive(Debug, Clone)]
pub struct Item {
    span: Range<usize>,
    /// `source.cursor` of the event.
    pub cursor: String,
    /// `source.name` of the event.
    pub source: String,
    /// The event's JSON text, kept for a dead letter when the payload is not the event
    /// itself (Segment calls); `None` when the payload is the event JSON.
    pub event: Option<Vec<u8>>,
}

impl Records {
    pub fn with_capacity(events: usize, bytes: usize) -> Self {
        Records {
            buf: Vec::with_capacity(bytes),
            items: Vec::with_capacity(events),
        }
    }

    pub fn clear(&mut self) {
        self.buf.clear();
        self.items.clear();
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Appends one payload written by `write`.
    pub fn push_with(
        &mut self,
        cursor: String,
        source: String,
        event: Option<Vec<u8>>,
        write: impl FnOnce(&mut Vec<u8>),
    ) {
        let start = self.buf.len();
        write(&mut self.buf);
        self.items.push(Item {
            span: start..self.buf.len(),
            cursor,
            source,
            event,
        });
    }

    /// Appends an event's own JSON as its payload.
    pub fn push_event(&mut self, e: &ChangeEvent, now_ms: i64) {
        self.push_with(
            e.position.cursor(),
            e.table.source.name.clone(),
            None,
            |b| {
                // Writing into a Vec cannot fail.
                let _ = e.write_json(b, now_ms);
            },
        );
    }

    /// The payload bytes of item `i`.
    pub fn payload(&self, i: usize) -> &[u8] {
        self.items
            .get(i)
            .and_then(|it| self.buf.get(it.span.clone()))
            .unwrap_or(&[])
    }

    pub fn item(&self, i: usize) -> Option<&Item> {
        self.items.get(i)
    }

    /// The event JSON of item `i`, for a dead letter.
    pub fn event_json(&self, i: usize) -> &[u8] {
        match self.items.get(i).and_then(|it| it.event.as_deref()) {
            Some(raw) => raw,
            None => self.payload(i),
        }
    }

    /// Splits `0..len` into consecutive chunks of at most `max_events` items and (unless
    /// a single item is bigger) `max_bytes` payload bytes.
    pub fn chunks(&self, max_events: usize, max_bytes: usize) -> Vec<Range<usize>> {
        let mut out = Vec::new();
        let mut start = 0;
        let mut bytes = 0usize;
        for (i, it) in self.items.iter().enumerate() {
            let n = it.span.len() + 1;
            if i > start && (i - start >= max_events || bytes + n > max_bytes) {
                out.push(start..i);
                start = i;
                bytes = 0;
            }
            bytes += n;
        }
        if start < self.items.len() {
            out.push(start..self.items.len());
        }
        out
    }
}

/// The outcome of one attempt to send one chunk.
#[derive(Debug)]
pub enum Attempt {
    /// The receiver accepted every event of the chunk.
    Accepted,
    /// Try the same chunk again later (`retry_after`: the receiver's hint).
    Retry {
        error: SinkError,
        retry_after: Option<Duration>,
    },
    /// The receiver rejected the chunk's content for good; `what` says how (status, body).
    Rejected { what: String },
    /// The sink is misconfigured or the receiver refuses us altogether: stop.
    Fatal(SinkError),
}

/// An event rejected for good.
#[derive(Debug, Clone)]
pub struct Rejection {
    /// Index into the [`Records`].
    pub index: usize,
    pub error: String,
}

/// Something that sends one chunk of [`Records`].
pub trait ChunkSender {
    fn send_chunk(
        &mut self,
        records: &Records,
        range: Range<usize>,
    ) -> impl std::future::Future<Output = Attempt> + Send;
}

/// Splitting and retry settings of one sink, with the per-sink defaults applied.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub sink: String,
    pub max_events: usize,
    pub max_bytes: usize,
    pub retry: RetryConfig,
    /// Sending dead letters again (`dead-letters resend`) rather than a stream's batch: a
    /// give-up leaves the dead-letter file as it was, no checkpoint is involved.
    pub resend: bool,
}

impl Delivery {
    pub fn new(
        sink: &str,
        batch: &BatchConfig,
        retry: &RetryConfig,
        defaults: (usize, usize),
    ) -> Self {
        Delivery {
            sink: sink.to_owned(),
            max_events: batch.max_events.unwrap_or(defaults.0).max(1),
            max_bytes: batch.max_bytes.unwrap_or(defaults.1).max(1),
            retry: retry.clone(),
            resend: false,
        }
    }

    /// Sends every record, in order: chunked, each chunk retried while transient, rejected
    /// chunks bisected down to single events. Returns the rejected events (ascending
    /// index); `Err` when a chunk could not be delivered within the retry limit or the sink
    /// is unusable — then nothing may be considered accepted.
    pub async fn run<S: ChunkSender + Send>(
        &self,
        sender: &mut S,
        records: &Records,
    ) -> Result<Vec<Rejection>, SinkError> {
        let mut rejected = Vec::new();
        for chunk in records.chunks(self.max_events, self.max_bytes) {
            // Depth-first over halves, left before right, keeps accepted events in order.
            let mut todo = vec![chunk];
            while let Some(range) = todo.pop() {
                match self.send_retrying(sender, records, range.clone()).await? {
                    None => {}
                    Some(what) if range.len() > 1 => {
                        let mid = range.start + range.len() / 2;
                        tracing::debug!(sink = %self.sink, events = range.len(), reason = %what, "request rejected, splitting it to find the rejected events");
                        todo.push(mid..range.end);
                        todo.push(range.start..mid);
                    }
                    Some(what) => rejected.push(Rejection {
                        index: range.start,
                        error: what,
                    }),
                }
            }
        }
        Ok(rejected)
    }

    /// One chunk until accepted (`None`) or rejected (`Some(why)`).
    async fn send_retrying<S: ChunkSender + Send>(
        &self,
        sender: &mut S,
        records: &Records,
        range: Range<usize>,
    ) -> Result<Option<String>, SinkError> {
        let mut backoff = Backoff::new(self.retry.initial_backoff, self.retry.max_backoff);
        let mut attempt: u32 = 0;
        loop {
            match sender.send_chunk(records, range.clone()).await {
                Attempt::Accepted => return Ok(None),
                Attempt::Rejected { what } => return Ok(Some(what)),
                Attempt::Fatal(e) => return Err(e),
                Attempt::Retry { error, retry_after } => {
                    if attempt >= self.retry.max_retries {
                        // The last attempt's cause, without its "(will retry)".
                        let (cause, source) = match error {
                            SinkError::Transient { what, source, .. }
                            | SinkError::Permanent { what, source, .. } => (what, source),
                        };
                        let then = if self.resend {
                            "run `dead-letters resend` again once the receiver works (or raise retry.max_retries)"
                        } else {
                            "nothing of this batch was checkpointed, a restart delivers it again — fix the receiver or raise retry.max_retries"
                        };
                        return Err(SinkError::Permanent {
                            sink: self.sink.clone(),
                            what: format!(
                                "gave up after {} retries of a request of {} events (first cursor {}), last error: {cause}; {then}",
                                self.retry.max_retries,
                                range.len(),
                                records.item(range.start).map_or("?", |i| i.cursor.as_str())
                            ),
                            source,
                        });
                    }
                    attempt += 1;
                    ::metrics::counter!(crate::metrics::RETRIES_TOTAL, "sink" => self.sink.clone())
                        .increment(1);
                    // At least the receiver's hint, capped like the backoff.
                    let base = backoff.next_wait();
                    let wait = retry_after.map_or(base, |h| h.max(base)).min(backoff.cap());
                    tracing::warn!(sink = %self.sink, attempt, wait_ms = wait.as_millis() as u64, error = %crate::error::ErrorChain(&error), "request failed, retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

/// A per-sink table filter with a cache of the answer per table.
#[derive(Debug)]
pub struct TableRoute {
    filter: Option<Filter>,
    cache: HashMap<(String, String), bool>,
}

impl TableRoute {
    pub fn new(tables: &TableFilterConfig) -> Self {
        let all = tables.include.is_empty() && tables.exclude.is_empty();
        TableRoute {
            filter: (!all).then(|| Filter::new(tables.clone(), BTreeMap::new())),
            cache: HashMap::new(),
        }
    }

    /// Whether every event passes (no filter configured).
    pub fn is_all(&self) -> bool {
        self.filter.is_none()
    }

    /// Whether this sink receives events of `e`'s table.
    pub fn selected(&mut self, e: &ChangeEvent) -> bool {
        let Some(f) = &self.filter else { return true };
        let t = &e.table;
        if let Some(&hit) = self.cache.get(&(t.schema.clone(), t.name.clone())) {
            return hit;
        }
        let hit = f.table_selected(&t.schema, &t.name);
        self.cache.insert((t.schema.clone(), t.name.clone()), hit);
        hit
    }
}

/// The events of `batch` this route selects.
pub fn route<'a>(route: &mut TableRoute, batch: &'a [ChangeEvent]) -> Vec<&'a ChangeEvent> {
    if route.is_all() {
        return batch.iter().collect();
    }
    batch.iter().filter(|e| route.selected(e)).collect()
}

/// Parses an HTTP `Retry-After` value: delay-seconds or an IMF-fixdate
/// (`Sun, 06 Nov 1994 08:49:37 GMT`), relative to `now_unix`.
pub fn parse_retry_after(v: &str, now_unix: i64) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    // IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT"
    let rest = v.split_once(", ")?.1;
    let mut p = rest.split(' ');
    let day: u32 = p.next()?.parse().ok()?;
    let mon = match p.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: i64 = p.next()?.parse().ok()?;
    let mut hms = p.next()?.split(':');
    let h: i64 = hms.next()?.parse().ok()?;
    let m: i64 = hms.next()?.parse().ok()?;
    let s: i64 = hms.next()?.parse().ok()?;
    let at = days_from_civil(year, mon, day) * 86_400 + h * 3600 + m * 60 + s;
    Some(Duration::from_secs(
        u64::try_from(at - now_unix).unwrap_or(0),
    ))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` of a Unix time in milliseconds.
pub fn iso8601_ms(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000);
    // civil_from_days (Howard Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000
    )
}

/// A header-safe form of `s`: visible ASCII kept, anything else percent-encoded.
pub fn header_safe(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x21..0x7f).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reads a secret from the environment variable `var`; the error names the variable and the
/// config key, never a value.
pub fn env_secret(var: &str, key: &str) -> Result<crate::config::Secret, String> {
    match std::env::var(var) {
        Ok(v) => Ok(crate::config::Secret::new(v)),
        Err(_) => Err(format!(
            "{key} names environment variable {var}, which is not set: export it before starting logtide"
        )),
    }
}

/// A transient error of sink `sink`.
pub fn transient(
    sink: &str,
    what: impl Into<String>,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
) -> SinkError {
    SinkError::Transient {
        sink: sink.to_owned(),
        what: what.into(),
        source,
    }
}

/// A permanent error.
pub fn permanent(
    sink: &str,
    what: impl Into<String>,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
) -> SinkError {
    SinkError::Permanent {
        sink: sink.to_owned(),
        what: what.into(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recs(sizes: &[usize]) -> Records {
        let mut r = Records::default();
        for (i, &n) in sizes.iter().enumerate() {
            r.push_with(format!("c{i}"), "s".into(), None, |b| {
                b.extend(std::iter::repeat_n(b'x', n))
            });
        }
        r
    }

    #[test]
    fn chunks_close_at_events_or_bytes() {
        let r = recs(&[10, 10, 10, 10, 10]);
        assert_eq!(r.chunks(2, 1000), vec![0..2, 2..4, 4..5]);
        // 11 bytes per item (payload + separator): 3 fit in 33.
        assert_eq!(r.chunks(100, 33), vec![0..3, 3..5]);
        // An item larger than max_bytes travels alone.
        let r = recs(&[5, 100, 5]);
        assert_eq!(r.chunks(100, 20), vec![0..1, 1..2, 2..3]);
        assert!(recs(&[]).chunks(10, 10).is_empty());
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after(" 3 ", 0), Some(Duration::from_secs(3)));
        // 1994-11-06T08:49:37Z = 784111777.
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", 784_111_770),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", 784_111_800),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", 0), None);
    }

    #[test]
    fn iso_times() {
        assert_eq!(iso8601_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601_ms(784_111_777_123), "1994-11-06T08:49:37.123Z");
        assert_eq!(iso8601_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn header_values_are_safe() {
        assert_eq!(header_safe("0A:01"), "0A:01");
        assert_eq!(header_safe("a b%é"), "a%20b%25%C3%A9");
    }

    struct Script {
        /// Indices whose presence makes a chunk rejected.
        bad: Vec<usize>,
        /// Transient failures to return before answering.
        flaky: u32,
        sent: Vec<Range<usize>>,
        accepted: Vec<usize>,
    }

    impl ChunkSender for Script {
        async fn send_chunk(&mut self, _r: &Records, range: Range<usize>) -> Attempt {
            self.sent.push(range.clone());
            if self.flaky > 0 {
                self.flaky -= 1;
                return Attempt::Retry {
                    error: transient("t", "flaky", None),
                    retry_after: Some(Duration::from_millis(1)),
                };
            }
            if self.bad.iter().any(|b| range.contains(b)) {
                return Attempt::Rejected {
                    what: "HTTP 400".into(),
                };
            }
            self.accepted.extend(range);
            Attempt::Accepted
        }
    }

    fn delivery(max_events: usize, max_retries: u32) -> Delivery {
        Delivery {
            sink: "t".into(),
            max_events,
            max_bytes: usize::MAX,
            resend: false,
            retry: RetryConfig {
                max_retries,
                initial_backoff: Duration::from_millis(1),
                max_backoff: Duration::from_millis(2),
            },
        }
    }

    #[tokio::test]
    async fn bisection_isolates_rejected_events_in_order() {
        let r = recs(&[1; 10]);
        let mut s = Script {
            bad: vec![3, 7],
            flaky: 0,
            sent: vec![],
            accepted: vec![],
        };
        let rej = delivery(8, 3).run(&mut s, &r).await.expect("run");
        assert_eq!(rej.iter().map(|x| x.index).collect::<Vec<_>>(), vec![3, 7]);
        assert_eq!(s.accepted, vec![0, 1, 2, 4, 5, 6, 8, 9]);
    }

    #[tokio::test]
    async fn transient_failures_retry_then_give_up() {
        let r = recs(&[1; 4]);
        let mut s = Script {
            bad: vec![],
            flaky: 2,
            sent: vec![],
            accepted: vec![],
        };
        let rej = delivery(2, 3).run(&mut s, &r).await.expect("run");
        assert!(rej.is_empty());
        assert_eq!(s.accepted, vec![0, 1, 2, 3]);
        // Accepted chunks are not sent again: 2 failures + 2 successes.
        assert_eq!(s.sent, vec![0..2, 0..2, 0..2, 2..4]);
        let mut s = Script {
            bad: vec![],
            flaky: 10,
            sent: vec![],
            accepted: vec![],
        };
        let err = delivery(2, 3).run(&mut s, &r).await.expect_err("must fail");
        assert!(!err.is_transient());
        assert!(s.accepted.is_empty());
        assert_eq!(s.sent.len(), 4);
    }
}
