//! `kind = "segment"`: change events as Segment-spec calls (`identify`, `track`, `group`,
//! `page`, `screen`, `alias`) POSTed to a `/v1/batch` endpoint — Segment, Customer.io Data
//! Pipelines, RudderStack and other Segment-compatible receivers.
//!
//! # Mapping
//!
//! Each `[[sinks.mappings]]` entry maps the events of one table (exact `schema.table` or a
//! glob; the first match wins; tables without a mapping are skipped) to one call type. The
//! row image is `after` for inserts, updates and backfill reads, and `before` for deletes
//! (with `on_delete = "track"`; deletes are skipped by default). Truncates are skipped.
//!
//! * `user_id_column`, `anonymous_id_column`, `group_id_column`, `previous_id_column`: the
//!   columns holding those ids. Ids are sent as strings (numbers are turned into their
//!   decimal text); a NULL, empty or absent value counts as missing.
//! * `event` / `event_column` (track) and `name` / `name_column` (page, screen): a fixed
//!   value or the column holding it.
//! * `timestamp_column`: the time of the call; default the transaction's commit time. A
//!   timestamp without offset is taken as UTC, a date as its midnight UTC, an integer as
//!   Unix seconds.
//! * `fields`: the columns sent as `traits` (identify, group) or `properties` (track, page,
//!   screen); default every column of the image not used above. `rename` renames them.
//! * `messageId` = `logtide-<source>-<cursor>`: the same change always gets the same id,
//!   so a receiver de-duplicates replays. Longer than Segment's 100 characters (backfill
//!   and query-mode cursors carry the row's key), it is cut to 67 characters, `~` and 32
//!   hex digits of the SHA-256 of the whole id: still one id per cursor.
//!
//! # Required fields
//!
//! Checked exactly as the Customer.io reverse-ETL document (seed 001) lists them; a row
//! that fails goes to the dead letters (or stops the sink with `on_permanent_failure =
//! "stop"`):
//!
//! | call     | required                                                              |
//! |----------|-----------------------------------------------------------------------|
//! | identify | `userId` or `anonymousId` ("You can identify people by anonymousId and/or userId") |
//! | track    | `event`, and `userId` or `anonymousId` ("Track calls require an event name … They must also include an anonymousId or a userId") |
//! | group    | `groupId`, and `userId` or `anonymousId` (every call needs one of them; the API answers 200 to a call without and drops it) |
//! | page     | `name` and `userId`                                                   |
//! | screen   | `name` and `userId`                                                   |
//! | alias    | `previousId` and `userId`                                             |
//!
//! (The seed's field list marks track's `userId` "Required" but its prose accepts an
//! `anonymousId` instead; we follow the prose, which is the stricter statement of what a
//! call needs and matches the Segment spec.)
//!
//! # Request
//!
//! `POST <endpoint>` with `{"batch":[call, ...],"sentAt":"<now>"}`, HTTP basic auth with
//! the write key (from `write_key_env`) as user name and an empty password. Splitting,
//! retries, status codes: as the http sink ([`crate::sink::http`]). A call larger than
//! `max_call_bytes` (default 32 KB, Segment's limit) is dead-lettered.

use super::batch::{
    env_secret, iso8601_ms, permanent, Attempt, ChunkSender, Delivery, Records, Rejection,
    TableRoute,
};
use super::dead_letter::{DeadLetter, DeadLetters, ResendReport};
use super::http::{basic_auth, HttpPoster, PosterSpec};
use super::{Sink, SinkError};
use crate::config::{OnDelete, SegmentCall, SegmentMapping, SegmentSinkConfig};
use crate::event::ChangeEvent;
use crate::filter::glob;
use serde_json::{Map, Value as Json};
use std::collections::HashMap;
use std::ops::Range;

/// Default chunk limits of the segment sink: events, bytes (under Segment's 500 KB).
pub const SEGMENT_DEFAULTS: (usize, usize) = (500, 490_000);

/// Maps event JSON (the envelope of [`crate::event`]) to a Segment call.
#[derive(Debug, Clone)]
pub struct Mapper {
    mappings: Vec<SegmentMapping>,
    /// `schema.table` → index of its mapping.
    cache: HashMap<String, Option<usize>>,
}

impl Mapper {
    pub fn new(mappings: Vec<SegmentMapping>) -> Self {
        Mapper {
            mappings,
            cache: HashMap::new(),
        }
    }

    fn mapping_for(&mut self, schema: &str, table: &str) -> Option<&SegmentMapping> {
        let name = format!("{schema}.{table}");
        let idx = match self.cache.get(&name) {
            Some(i) => *i,
            None => {
                let i = self.mappings.iter().position(|m| glob(&m.table, &name));
                self.cache.insert(name, i);
                i
            }
        };
        idx.and_then(|i| self.mappings.get(i))
    }

    /// The call for `event`: `Ok(None)` when the table has no mapping or the op is skipped,
    /// `Err` (what is missing) when the row cannot make a valid call.
    pub fn map(&mut self, event: &Json) -> Result<Option<Json>, String> {
        let src = &event["source"];
        let schema = src["schema"].as_str().unwrap_or_default();
        let table = src["table"].as_str().unwrap_or_default();
        let Some(m) = self.mapping_for(schema, table) else {
            return Ok(None);
        };
        map_with(m, event)
    }
}

/// Maps one event with one mapping.
pub fn map_with(m: &SegmentMapping, event: &Json) -> Result<Option<Json>, String> {
    let op = event["op"].as_str().unwrap_or_default();
    let src = &event["source"];
    let (call, image) = match op {
        "c" | "u" | "r" => (m.call, &event["after"]),
        "d" if m.on_delete == OnDelete::Track => (SegmentCall::Track, &event["before"]),
        _ => return Ok(None),
    };
    let Some(row) = image.as_object() else {
        return Err(format!("the {op} event has no row image to map"));
    };
    let id = |col: &Option<String>| -> Result<Option<String>, String> {
        match col {
            None => Ok(None),
            Some(c) => id_string(row.get(c)).map_err(|what| format!("column {c:?} {what}")),
        }
    };
    let user_id = id(&m.user_id_column)?;
    let anonymous_id = id(&m.anonymous_id_column)?;
    let mut out = Map::new();
    out.insert("type".into(), Json::from(call.as_str()));
    let table = src["table"].as_str().unwrap_or_default();
    let missing = |field: &str, col: &Option<String>| -> String {
        match col {
            Some(c) => format!(
                "{} call lacks required field {field}: column {c:?} is null, empty or absent in this row",
                call.as_str()
            ),
            None => format!("{} call lacks required field {field}", call.as_str()),
        }
    };
    // Required fields, exactly as seed 001 lists them (see the module docs).
    match call {
        SegmentCall::Identify => {
            if user_id.is_none() && anonymous_id.is_none() {
                return Err(format!(
                    "identify call needs userId or anonymousId: {} null, empty or absent in this row",
                    id_columns(m)
                ));
            }
        }
        SegmentCall::Track => {
            let name = if op == "d" {
                Some(
                    m.delete_event
                        .clone()
                        .unwrap_or_else(|| format!("{table} Deleted")),
                )
            } else {
                match (&m.event, &m.event_column) {
                    (Some(e), _) => Some(e.clone()),
                    (None, c) => id(c)?,
                }
            };
            let Some(name) = name.filter(|n| !n.is_empty()) else {
                return Err(missing("event", &m.event_column));
            };
            if user_id.is_none() && anonymous_id.is_none() {
                return Err(format!(
                    "track call needs userId or anonymousId: {} null, empty or absent in this row",
                    id_columns(m)
                ));
            }
            out.insert("event".into(), Json::from(name));
        }
        SegmentCall::Group => {
            let Some(g) = id(&m.group_id_column)? else {
                return Err(missing("groupId", &m.group_id_column));
            };
            // Every call needs userId or anonymousId; the API answers 200 to a call
            // without them and drops it, so such a row is dead-lettered here instead.
            if user_id.is_none() && anonymous_id.is_none() {
                return Err(format!(
                    "group call needs userId or anonymousId: {} null, empty or absent in this row",
                    id_columns(m)
                ));
            }
            out.insert("groupId".into(), Json::from(g));
        }
        SegmentCall::Page | SegmentCall::Screen => {
            let name = match (&m.name, &m.name_column) {
                (Some(n), _) => Some(n.clone()),
                (None, c) => id(c)?,
            };
            let Some(name) = name.filter(|n| !n.is_empty()) else {
                return Err(missing("name", &m.name_column));
            };
            if user_id.is_none() {
                return Err(missing("userId", &m.user_id_column));
            }
            out.insert("name".into(), Json::from(name));
        }
        SegmentCall::Alias => {
            let Some(p) = id(&m.previous_id_column)? else {
                return Err(missing("previousId", &m.previous_id_column));
            };
            if user_id.is_none() {
                return Err(missing("userId", &m.user_id_column));
            }
            out.insert("previousId".into(), Json::from(p));
        }
    }
    if let Some(u) = user_id {
        out.insert("userId".into(), Json::from(u));
    }
    if let Some(a) = anonymous_id {
        out.insert("anonymousId".into(), Json::from(a));
    }
    // Traits or properties.
    let used: Vec<&String> = [
        &m.user_id_column,
        &m.anonymous_id_column,
        &m.group_id_column,
        &m.previous_id_column,
        &m.event_column,
        &m.name_column,
        &m.timestamp_column,
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut fields = Map::new();
    let mut put = |col: &String, v: &Json| {
        let key = m.rename.get(col).unwrap_or(col);
        fields.insert(key.clone(), v.clone());
    };
    match &m.fields {
        Some(list) => {
            for c in list {
                if let Some(v) = row.get(c) {
                    put(c, v);
                }
            }
        }
        None => {
            for (c, v) in row {
                if !used.contains(&c) {
                    put(c, v);
                }
            }
        }
    }
    let bag = match call {
        SegmentCall::Identify | SegmentCall::Group => Some("traits"),
        SegmentCall::Track | SegmentCall::Page | SegmentCall::Screen => Some("properties"),
        SegmentCall::Alias => None,
    };
    if let Some(bag) = bag {
        out.insert(bag.into(), Json::Object(fields));
    }
    // Timestamp.
    // A row whose timestamp column is NULL (or absent) falls back to the commit time, like a
    // mapping without one: Segment would otherwise stamp the call with its arrival time.
    let ts = match &m.timestamp_column {
        Some(c) => match row.get(c) {
            None | Some(Json::Null) => src["ts_ms"].as_i64().map(iso8601_ms),
            Some(v) => {
                Some(timestamp(v).ok_or_else(|| format!("column {c:?} is not a timestamp: {v}"))?)
            }
        },
        None => src["ts_ms"].as_i64().map(iso8601_ms),
    };
    if let Some(ts) = ts {
        out.insert("timestamp".into(), Json::from(ts));
    }
    let source = src["name"].as_str().unwrap_or_default();
    let cursor = src["cursor"].as_str().unwrap_or_default();
    // Segment caps messageId at 100 characters: a longer id (a backfill row's cursor
    // carries its key) is shortened with a hash of the whole, still unique.
    let id = format!("logtide-{source}-{cursor}");
    out.insert(
        "messageId".into(),
        Json::from(crate::identity::bounded_id(&id, MESSAGE_ID_MAX).into_owned()),
    );
    out.insert(
        "context".into(),
        serde_json::json!({"library": {"name": "logtide", "version": env!("CARGO_PKG_VERSION")}}),
    );
    Ok(Some(Json::Object(out)))
}

/// Segment's limit on `messageId`.
const MESSAGE_ID_MAX: usize = 100;

fn id_columns(m: &SegmentMapping) -> String {
    let cols: Vec<String> = [&m.user_id_column, &m.anonymous_id_column]
        .into_iter()
        .flatten()
        .map(|c| format!("column {c:?}"))
        .collect();
    if cols.is_empty() {
        "no id column is mapped, and".into()
    } else {
        format!("{} is", cols.join(" and "))
    }
}

/// An id (or name) as a string; `Ok(None)` when NULL, empty or absent.
fn id_string(v: Option<&Json>) -> Result<Option<String>, String> {
    match v {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) if s.is_empty() => Ok(None),
        Some(Json::String(s)) => Ok(Some(s.clone())),
        Some(Json::Number(n)) => Ok(Some(n.to_string())),
        Some(Json::Bool(b)) => Ok(Some(b.to_string())),
        Some(other) => Err(format!("holds {other}, which is not usable as an id")),
    }
}

/// ISO 8601 with an offset: naive timestamps get `Z`, dates midnight UTC, integers are
/// Unix seconds.
fn timestamp(v: &Json) -> Option<String> {
    match v {
        Json::Number(n) => n.as_i64().map(|s| iso8601_ms(s.saturating_mul(1000))),
        Json::String(s) => {
            let b = s.as_bytes();
            if b.len() == 10 && b.get(4) == Some(&b'-') {
                return Some(format!("{s}T00:00:00Z"));
            }
            if b.len() < 19 || b.get(10) != Some(&b'T') {
                return None;
            }
            let tail = s.get(19..).unwrap_or_default();
            let has_offset = tail.ends_with('Z') || tail.contains('+') || tail.contains('-');
            Some(if has_offset {
                s.clone()
            } else {
                format!("{s}Z")
            })
        }
        _ => None,
    }
}

struct CallChunks<'a> {
    poster: &'a HttpPoster,
}

impl ChunkSender for CallChunks<'_> {
    async fn send_chunk(&mut self, records: &Records, range: Range<usize>) -> Attempt {
        let mut body = Vec::with_capacity(range.len() * 512 + 64);
        let (first, last) = (range.start, range.end.saturating_sub(1));
        body.extend_from_slice(b"{\"batch\":[");
        for i in range {
            if i > first {
                body.push(b',');
            }
            body.extend_from_slice(records.payload(i));
        }
        body.extend_from_slice(b"],\"sentAt\":\"");
        body.extend_from_slice(iso8601_ms(crate::event::now_ms()).as_bytes());
        body.extend_from_slice(b"\"}");
        let fc = records.item(first).map_or("", |i| i.cursor.as_str());
        let lc = records.item(last).map_or("", |i| i.cursor.as_str());
        self.poster.post(body, fc, lc).await
    }
}

/// The Segment-spec sink.
pub struct SegmentSink {
    name: String,
    poster: HttpPoster,
    mapper: Mapper,
    max_call_bytes: usize,
    delivery: Delivery,
    dead: DeadLetters,
    route: TableRoute,
}

impl SegmentSink {
    /// Builds the sink (reads the write key from the environment); does not contact the
    /// endpoint.
    pub async fn build(cfg: &SegmentSinkConfig) -> Result<SegmentSink, SinkError> {
        let name = &cfg.name;
        if let Err(problem) = crate::config::SinkConfig::Segment(cfg.clone()).check() {
            return Err(permanent(name, problem, None));
        }
        let key = env_secret(&cfg.write_key_env, &format!("sinks.{name}.write_key_env"))
            .map_err(|m| permanent(name, m, None))?;
        let poster = HttpPoster::new(PosterSpec {
            sink: name,
            url: &cfg.endpoint,
            timeout: cfg.timeout,
            connect_timeout: cfg.connect_timeout,
            content_type: "application/json",
            headers: Vec::new(),
            authorization: Some(basic_auth(
                key.expose(),
                &crate::config::Secret::new(String::new()),
            )),
            signing: None,
            idempotency_header: None,
        })?;
        Ok(SegmentSink {
            name: name.clone(),
            poster,
            mapper: Mapper::new(cfg.mappings.clone()),
            max_call_bytes: cfg.max_call_bytes,
            delivery: Delivery::new(name, &cfg.batch, &cfg.retry, SEGMENT_DEFAULTS),
            dead: DeadLetters::new(
                name,
                "segment",
                cfg.dead_letter_path.as_deref(),
                cfg.on_permanent_failure,
            ),
            route: TableRoute::new(&cfg.tables),
        })
    }

    /// Maps `events` (event JSON with its cursor and source) into call records and mapping
    /// failures.
    fn map_all<'a>(
        &mut self,
        events: impl Iterator<Item = (String, String, Vec<u8>, &'a Json)>,
    ) -> (Records, Records, Vec<Rejection>) {
        let mut calls = Records::default();
        let mut failed = Records::default();
        let mut failures = Vec::new();
        for (cursor, source, raw, json) in events {
            let res = self.mapper.map(json).and_then(|c| match c {
                Some(c) => {
                    let bytes = serde_json::to_vec(&c).unwrap_or_default();
                    if bytes.len() > self.max_call_bytes {
                        Err(format!(
                            "the call is {} bytes, over max_call_bytes = {}",
                            bytes.len(),
                            self.max_call_bytes
                        ))
                    } else {
                        Ok(Some(bytes))
                    }
                }
                None => Ok(None),
            });
            match res {
                Ok(Some(bytes)) => {
                    calls.push_with(cursor, source, Some(raw), |b| b.extend_from_slice(&bytes))
                }
                Ok(None) => {}
                Err(error) => {
                    failures.push(Rejection {
                        index: failed.len(),
                        error,
                    });
                    failed.push_with(cursor, source, None, |b| b.extend_from_slice(&raw));
                }
            }
        }
        (calls, failed, failures)
    }

    /// Re-sends dead letters: maps their events again (with the current mappings) and sends
    /// the calls.
    pub async fn resend(&mut self, letters: &[DeadLetter]) -> Result<ResendReport, SinkError> {
        self.delivery.resend = true;
        let items: Vec<(String, String, Vec<u8>, &Json)> = letters
            .iter()
            .map(|l| {
                (
                    l.cursor.clone(),
                    l.source.clone(),
                    serde_json::to_vec(&l.event).unwrap_or_default(),
                    &l.event,
                )
            })
            .collect();
        let (calls, failed, failures) = self.map_all(items.into_iter());
        let mut sender = CallChunks {
            poster: &self.poster,
        };
        let rejected = self.delivery.run(&mut sender, &calls).await?;
        let mut again = self.dead.to_letters(&failed, &failures);
        again.extend(self.dead.to_letters(&calls, &rejected));
        Ok(ResendReport {
            sent: calls.len() - rejected.len(),
            rejected: again,
        })
    }
}

impl Sink for SegmentSink {
    fn name(&self) -> &str {
        &self.name
    }

    /// Accepted = every mapped call was answered 2xx, and every row that could not be
    /// mapped or was rejected is in the fsynced dead-letter file.
    async fn deliver(&mut self, batch: &[ChangeEvent]) -> Result<(), SinkError> {
        let now = crate::event::now_ms();
        let mut jsons = Vec::with_capacity(batch.len());
        // Events whose JSON cannot be read back for mapping: failures like a row lacking a
        // field, never skipped as if their table were not mapped.
        let mut unreadable = Vec::new();
        for e in batch {
            if !self.route.selected(e) {
                continue;
            }
            let mut raw = Vec::with_capacity(256);
            let _ = e.write_json(&mut raw, now);
            let (cursor, source) = (e.position.cursor(), e.table.source.name.clone());
            match serde_json::from_slice::<Json>(&raw) {
                Ok(json) => jsons.push((cursor, source, raw, json)),
                Err(err) => unreadable.push((
                    cursor,
                    source,
                    raw,
                    format!(
                        "the event of {} cannot be mapped: its JSON cannot be read back ({err}); \
                         a JSON column nested deeper than 128 levels cannot be mapped",
                        e.table.qualified_name()
                    ),
                )),
            }
        }
        if jsons.is_empty() && unreadable.is_empty() {
            return Ok(());
        }
        let items: Vec<(String, String, Vec<u8>, &Json)> = jsons
            .iter()
            .map(|(c, s, r, j)| (c.clone(), s.clone(), r.clone(), j))
            .collect();
        let (calls, mut failed, mut failures) = self.map_all(items.into_iter());
        for (cursor, source, raw, error) in unreadable {
            failures.push(Rejection {
                index: failed.len(),
                error,
            });
            failed.push_with(cursor, source, None, |b| b.extend_from_slice(&raw));
        }
        // Mapping failures first: under "stop" nothing is sent.
        self.dead.settle(&failed, &failures).await?;
        let mut sender = CallChunks {
            poster: &self.poster,
        };
        let rejected = self.delivery.run(&mut sender, &calls).await?;
        self.dead.settle(&calls, &rejected).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mapping(call: SegmentCall) -> SegmentMapping {
        SegmentMapping {
            table: "public.users".into(),
            call,
            user_id_column: Some("id".into()),
            anonymous_id_column: None,
            group_id_column: None,
            previous_id_column: None,
            event: None,
            event_column: None,
            name: None,
            name_column: None,
            timestamp_column: None,
            fields: None,
            rename: Default::default(),
            on_delete: OnDelete::Skip,
            delete_event: None,
        }
    }

    fn event(op: &str, row: Json) -> Json {
        let (before, after) = if op == "d" {
            (row, Json::Null)
        } else {
            (Json::Null, row)
        };
        json!({"op": op, "before": before, "after": after, "key": null,
               "source": {"name": "app", "schema": "public", "table": "users",
                          "cursor": "00AA:0001", "ts_ms": 1_700_000_000_000i64},
               "ts_ms": 1})
    }

    #[test]
    fn identify_with_traits_and_renames() {
        let mut m = mapping(SegmentCall::Identify);
        m.rename.insert("email_address".into(), "email".into());
        let c = map_with(
            &m,
            &event(
                "c",
                json!({"id": 42, "email_address": "a@b.c", "plan": "pro"}),
            ),
        )
        .expect("ok")
        .expect("call");
        assert_eq!(c["type"], "identify");
        assert_eq!(c["userId"], "42");
        assert_eq!(c["traits"], json!({"email": "a@b.c", "plan": "pro"}));
        assert_eq!(c["messageId"], "logtide-app-00AA:0001");
        assert_eq!(c["timestamp"], "2023-11-14T22:13:20.000Z");
    }

    #[test]
    fn identify_needs_an_id() {
        let m = mapping(SegmentCall::Identify);
        let e = map_with(&m, &event("c", json!({"id": null, "x": 1}))).expect_err("must fail");
        assert!(e.contains("userId or anonymousId"), "{e}");
        let mut m = mapping(SegmentCall::Identify);
        m.user_id_column = None;
        m.anonymous_id_column = Some("anon".into());
        let c = map_with(&m, &event("u", json!({"anon": "x1"})))
            .expect("ok")
            .expect("call");
        assert_eq!(c["anonymousId"], "x1");
        assert!(c.get("userId").is_none());
    }

    #[test]
    fn track_needs_event_and_an_id() {
        let mut m = mapping(SegmentCall::Track);
        m.event_column = Some("kind".into());
        m.timestamp_column = Some("at".into());
        let c = map_with(&m, &event("c", json!({"id": 1, "kind": "Order Placed", "at": "2024-01-02T03:04:05", "total": "9.50"})))
            .expect("ok")
            .expect("call");
        assert_eq!(c["event"], "Order Placed");
        assert_eq!(c["timestamp"], "2024-01-02T03:04:05Z");
        assert_eq!(c["properties"], json!({"total": "9.50"}));
        // A NULL timestamp column: the commit time, as without a timestamp column.
        let ev = event("c", json!({"id": 1, "kind": "K", "at": null}));
        let c = map_with(&m, &ev).expect("ok").expect("call");
        assert_eq!(c["timestamp"], "2023-11-14T22:13:20.000Z");
        let e = map_with(&m, &event("c", json!({"id": 1, "kind": ""}))).expect_err("must fail");
        assert!(e.contains("event"), "{e}");
        let e = map_with(&m, &event("c", json!({"id": null, "kind": "K"}))).expect_err("must fail");
        assert!(e.contains("userId or anonymousId"), "{e}");
    }

    #[test]
    fn group_page_screen_alias_required_fields() {
        let mut g = mapping(SegmentCall::Group);
        g.user_id_column = Some("owner".into());
        g.group_id_column = Some("company".into());
        let c = map_with(
            &g,
            &event("c", json!({"company": 7, "owner": 3, "n": "ACME"})),
        )
        .expect("ok")
        .expect("call");
        assert_eq!(c["groupId"], "7");
        assert_eq!(c["userId"], "3");
        assert_eq!(c["traits"], json!({"n": "ACME"}));
        assert!(
            map_with(&g, &event("c", json!({"company": null, "owner": 3})))
                .expect_err("must fail")
                .contains("groupId")
        );
        // A group call without userId/anonymousId would be answered 200 and dropped by
        // Segment: refused here (dead-lettered by the sink).
        assert!(
            map_with(&g, &event("c", json!({"company": 7, "owner": null})))
                .expect_err("must fail")
                .contains("userId or anonymousId")
        );

        for call in [SegmentCall::Page, SegmentCall::Screen] {
            let mut p = mapping(call);
            p.name_column = Some("title".into());
            let c = map_with(&p, &event("c", json!({"id": 1, "title": "Home"})))
                .expect("ok")
                .expect("call");
            assert_eq!(c["name"], "Home");
            assert_eq!(c["type"], call.as_str());
            assert!(map_with(&p, &event("c", json!({"id": 1})))
                .expect_err("must fail")
                .contains("name"));
            assert!(map_with(&p, &event("c", json!({"id": null, "title": "H"})))
                .expect_err("must fail")
                .contains("userId"));
        }

        let mut a = mapping(SegmentCall::Alias);
        a.previous_id_column = Some("old".into());
        let c = map_with(&a, &event("c", json!({"id": 2, "old": "anon-1"})))
            .expect("ok")
            .expect("call");
        assert_eq!(c["previousId"], "anon-1");
        assert_eq!(c["userId"], "2");
        assert!(c.get("traits").is_none() && c.get("properties").is_none());
        assert!(map_with(&a, &event("c", json!({"id": 2})))
            .expect_err("must fail")
            .contains("previousId"));
        assert!(map_with(&a, &event("c", json!({"old": "x"})))
            .expect_err("must fail")
            .contains("userId"));
    }

    #[test]
    fn deletes_skip_or_track() {
        let m = mapping(SegmentCall::Identify);
        assert_eq!(
            map_with(&m, &event("d", json!({"id": 1}))).expect("ok"),
            None
        );
        let mut m = mapping(SegmentCall::Identify);
        m.on_delete = OnDelete::Track;
        let c = map_with(&m, &event("d", json!({"id": 1})))
            .expect("ok")
            .expect("call");
        assert_eq!(c["type"], "track");
        assert_eq!(c["event"], "users Deleted");
        assert_eq!(c["userId"], "1");
        assert_eq!(map_with(&m, &event("t", Json::Null)).expect("ok"), None);
    }

    #[test]
    fn unmapped_tables_are_skipped() {
        let mut mapper = Mapper::new(vec![mapping(SegmentCall::Identify)]);
        let mut e = event("c", json!({"id": 1}));
        e["source"]["table"] = json!("other");
        assert_eq!(mapper.map(&e).expect("ok"), None);
    }
}
