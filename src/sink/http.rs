//! `kind = "http"`: POST batches of events to a webhook, and the HTTP client the Segment
//! sink shares.
//!
//! # Request
//!
//! * Body: a JSON array of events (`format = "json_array"`, `Content-Type:
//!   application/json`) or one event per line (`format = "ndjson"`, `Content-Type:
//!   application/x-ndjson`), in stream order. Splitting, retries and dead letters:
//!   [`crate::sink::batch`], [`crate::sink::dead_letter`].
//! * `Idempotency-Key` (`idempotency_header`): `<first cursor>..<last cursor>` of the
//!   request (non-visible-ASCII percent-encoded). A retried request carries the same key;
//!   a receiver may also de-duplicate single events by `source.cursor`.
//! * Auth: `Authorization: Bearer <token>` or HTTP basic, the secret read from the named
//!   environment variable at start-up; it is marked sensitive and never logged.
//! * TLS: certificates and host names are always verified (the platform's trust store); no
//!   option turns that off. Redirects are not followed (a 3xx stops the sink: configure
//!   the final URL).
//!
//! # Signature
//!
//! With `signing_secret_env` set, each request carries
//!
//! ```text
//! X-Logtide-Timestamp: 1795385637
//! X-Logtide-Signature: v1=<hex(HMAC-SHA256(secret, "1795385637" + "." + body))>
//! ```
//!
//! A receiver verifies it by: reading the timestamp header `t` and the raw body bytes
//! (before any JSON parsing); computing `HMAC-SHA256(secret, t + "." + body)` as lower-case
//! hex; comparing it with the value after `v1=` in constant time; and rejecting the request
//! when `|now - t|` exceeds its tolerance (e.g. 5 minutes) to stop replays. Each attempt is
//! signed afresh, so a retry carries a new timestamp.
//!
//! # Status codes
//!
//! 2xx accepted; 408, 425, 429 and 5xx retried (`Retry-After` honoured); 401, 403, 404, 405,
//! 407, 3xx and other non-4xx codes stop the sink (credentials or URL to fix); any other
//! 4xx rejects the request's content: the request is split until the rejected events are
//! isolated and dead-lettered.

use super::batch::{
    env_secret, header_safe, parse_retry_after, permanent, route, transient, Attempt, ChunkSender,
    Delivery, Records, TableRoute,
};
use super::dead_letter::{DeadLetter, DeadLetters, ResendReport};
use super::{Sink, SinkError};
use crate::config::{HttpAuth, HttpFormat, HttpSinkConfig, Secret};
use crate::event::ChangeEvent;
use hmac::{Hmac, KeyInit, Mac};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use sha2::Sha256;
use std::ops::Range;
use std::time::Duration;

/// Default chunk limits of the http sink: events, bytes.
pub const HTTP_DEFAULTS: (usize, usize) = (1000, 1 << 20);

/// A configured HTTP endpoint: client, static headers, auth, signature and idempotency.
pub struct HttpPoster {
    sink: String,
    client: reqwest::Client,
    url: reqwest::Url,
    headers: HeaderMap,
    signing: Option<Signing>,
    idempotency: Option<HeaderName>,
}

struct Signing {
    secret: Secret,
    signature: HeaderName,
    timestamp: HeaderName,
}

/// What [`HttpPoster::new`] needs.
pub struct PosterSpec<'a> {
    pub sink: &'a str,
    pub url: &'a str,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub content_type: &'static str,
    pub headers: Vec<(String, String)>,
    /// `Authorization` value; marked sensitive.
    pub authorization: Option<Secret>,
    /// (secret, signature header, timestamp header).
    pub signing: Option<(Secret, &'a str, &'a str)>,
    pub idempotency_header: Option<&'a str>,
}

impl HttpPoster {
    pub fn new(spec: PosterSpec<'_>) -> Result<Self, SinkError> {
        let sink = spec.sink;
        let bad = |what: String| permanent(sink, what, None);
        let url = reqwest::Url::parse(spec.url).map_err(|e| {
            permanent(
                sink,
                format!("url {:?} is not a URL", spec.url),
                Some(Box::new(e)),
            )
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad(format!(
                "url {:?} must be http:// or https://",
                spec.url
            )));
        }
        let header_name = |n: &str| {
            HeaderName::from_bytes(n.as_bytes())
                .map_err(|_| bad(format!("{n:?} is not a valid HTTP header name")))
        };
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(spec.content_type));
        for (k, v) in &spec.headers {
            let value = HeaderValue::from_str(v).map_err(|_| {
                bad(format!(
                    "header {k:?} has a value that is not valid in HTTP"
                ))
            })?;
            headers.insert(header_name(k)?, value);
        }
        if let Some(a) = &spec.authorization {
            let mut value = HeaderValue::from_str(a.expose()).map_err(|_| {
                bad("the credential from the environment contains characters not valid in an HTTP header".into())
            })?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let signing = match spec.signing {
            Some((secret, sig, ts)) => Some(Signing {
                secret,
                signature: header_name(sig)?,
                timestamp: header_name(ts)?,
            }),
            None => None,
        };
        let idempotency = spec.idempotency_header.map(header_name).transpose()?;
        let client = reqwest::Client::builder()
            .timeout(spec.timeout)
            .connect_timeout(spec.connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("logtide/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| permanent(sink, "cannot build the HTTP client", Some(Box::new(e))))?;
        Ok(HttpPoster {
            sink: sink.to_owned(),
            client,
            url,
            headers,
            signing,
            idempotency,
        })
    }

    /// POSTs `body` once and classifies the answer.
    pub async fn post(&self, body: Vec<u8>, first_cursor: &str, last_cursor: &str) -> Attempt {
        let mut headers = self.headers.clone();
        if let Some(h) = &self.idempotency {
            let key = format!(
                "{}..{}",
                header_safe(first_cursor),
                header_safe(last_cursor)
            );
            if let Ok(v) = HeaderValue::from_str(&key) {
                headers.insert(h.clone(), v);
            }
        }
        if let Some(s) = &self.signing {
            let ts = crate::event::now_ms().div_euclid(1000).to_string();
            let sig = sign(s.secret.expose().as_bytes(), &ts, &body);
            if let (Ok(t), Ok(v)) = (HeaderValue::from_str(&ts), HeaderValue::from_str(&sig)) {
                headers.insert(s.timestamp.clone(), t);
                headers.insert(s.signature.clone(), v);
            }
        }
        let resp = self
            .client
            .post(self.url.clone())
            .headers(headers)
            .body(body)
            .send()
            .await;
        let resp = match resp {
            Ok(r) => r,
            Err(e) => return classify_error(&self.sink, e),
        };
        let status = resp.status();
        if status.is_success() {
            return Attempt::Accepted;
        }
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, crate::event::now_ms().div_euclid(1000)));
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = resp.text().await.unwrap_or_default();
        let what = format!("HTTP {status}: {}", truncate(&text, 300));
        let code = status.as_u16();
        match code {
            408 | 425 | 429 | 500..=599 => Attempt::Retry {
                error: transient(&self.sink, what, None),
                retry_after,
            },
            401 | 403 | 407 => Attempt::Fatal(permanent(
                &self.sink,
                format!("{what} — the receiver refuses our credentials: check the auth settings and the environment variable they name"),
                None,
            )),
            404 | 405 => Attempt::Fatal(permanent(
                &self.sink,
                format!("{what} — check the url"),
                None,
            )),
            300..=399 => Attempt::Fatal(permanent(
                &self.sink,
                format!(
                    "{what} — the url redirects to {}: configure the final URL (redirects are not followed)",
                    location.as_deref().unwrap_or("?")
                ),
                None,
            )),
            400..=499 => Attempt::Rejected { what },
            _ => Attempt::Fatal(permanent(&self.sink, what, None)),
        }
    }
}

fn classify_error(sink: &str, e: reqwest::Error) -> Attempt {
    if e.is_builder() {
        return Attempt::Fatal(permanent(
            sink,
            "cannot build the request",
            Some(Box::new(e.without_url())),
        ));
    }
    let what = if e.is_timeout() {
        "request timed out"
    } else if e.is_connect() {
        "cannot connect to the receiver"
    } else {
        "request failed"
    };
    Attempt::Retry {
        error: transient(sink, what, Some(Box::new(e.without_url()))),
        retry_after: None,
    }
}

/// `v1=<hex HMAC-SHA256(secret, timestamp + "." + body)>`.
pub fn sign(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    let mut out = String::with_capacity(3 + tag.len() * 2);
    out.push_str("v1=");
    for b in tag.iter() {
        out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    out
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s.trim();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].trim()
}

/// Sends chunks of event JSON as arrays or NDJSON.
struct EventChunks<'a> {
    poster: &'a HttpPoster,
    format: HttpFormat,
}

impl ChunkSender for EventChunks<'_> {
    async fn send_chunk(&mut self, records: &Records, range: Range<usize>) -> Attempt {
        let mut body = Vec::with_capacity(range.len() * 512);
        let (first, last) = (range.start, range.end.saturating_sub(1));
        match self.format {
            HttpFormat::JsonArray => {
                body.push(b'[');
                for i in range {
                    if i > first {
                        body.push(b',');
                    }
                    body.extend_from_slice(records.payload(i));
                }
                body.push(b']');
            }
            HttpFormat::Ndjson => {
                for i in range {
                    body.extend_from_slice(records.payload(i));
                    body.push(b'\n');
                }
            }
        }
        let fc = records.item(first).map_or("", |i| i.cursor.as_str());
        let lc = records.item(last).map_or("", |i| i.cursor.as_str());
        self.poster.post(body, fc, lc).await
    }
}

/// The webhook sink.
pub struct HttpSink {
    name: String,
    poster: HttpPoster,
    format: HttpFormat,
    delivery: Delivery,
    dead: DeadLetters,
    route: TableRoute,
    records: Records,
}

impl HttpSink {
    /// Builds the sink: reads secrets from the environment, validates headers and URL. Does
    /// not contact the receiver (a receiver that is down at start-up is a transient problem
    /// of the first delivery).
    pub async fn build(cfg: &HttpSinkConfig) -> Result<HttpSink, SinkError> {
        let name = &cfg.name;
        let authorization = match &cfg.auth {
            None => None,
            Some(HttpAuth::Bearer(b)) => {
                let t = env_secret(&b.token_env, &format!("sinks.{name}.auth.token_env"))
                    .map_err(|m| permanent(name, m, None))?;
                Some(Secret::new(format!("Bearer {}", t.expose())))
            }
            Some(HttpAuth::Basic(b)) => {
                let pw = match &b.password_env {
                    Some(v) => env_secret(v, &format!("sinks.{name}.auth.password_env"))
                        .map_err(|m| permanent(name, m, None))?,
                    None => Secret::new(String::new()),
                };
                Some(basic_auth(&b.username, &pw))
            }
        };
        let signing = match &cfg.signing_secret_env {
            Some(v) => Some((
                env_secret(v, &format!("sinks.{name}.signing_secret_env"))
                    .map_err(|m| permanent(name, m, None))?,
                cfg.signature_header.as_str(),
                cfg.timestamp_header.as_str(),
            )),
            None => None,
        };
        let poster = HttpPoster::new(PosterSpec {
            sink: name,
            url: &cfg.url,
            timeout: cfg.timeout,
            connect_timeout: cfg.connect_timeout,
            content_type: match cfg.format {
                HttpFormat::JsonArray => "application/json",
                HttpFormat::Ndjson => "application/x-ndjson",
            },
            headers: cfg
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            authorization,
            signing,
            idempotency_header: Some(cfg.idempotency_header.as_str()),
        })?;
        Ok(HttpSink {
            name: name.clone(),
            poster,
            format: cfg.format,
            delivery: Delivery::new(name, &cfg.batch, &cfg.retry, HTTP_DEFAULTS),
            dead: DeadLetters::new(
                name,
                "http",
                cfg.dead_letter_path.as_deref(),
                cfg.on_permanent_failure,
            ),
            route: TableRoute::new(&cfg.tables),
            records: Records::with_capacity(1024, 1 << 20),
        })
    }

    /// The dead-letter file this sink appends to.
    pub fn dead_letter_path(&self) -> &std::path::Path {
        self.dead.path()
    }

    /// Re-sends dead letters (their stored event JSON), see [`crate::ops::dead_letters::resend`].
    pub async fn resend(&mut self, letters: &[DeadLetter]) -> Result<ResendReport, SinkError> {
        self.delivery.resend = true;
        let mut records = Records::default();
        for l in letters {
            let json = serde_json::to_vec(&l.event).unwrap_or_default();
            records.push_with(l.cursor.clone(), l.source.clone(), None, |b| {
                b.extend_from_slice(&json)
            });
        }
        let mut sender = EventChunks {
            poster: &self.poster,
            format: self.format,
        };
        let rejected = self.delivery.run(&mut sender, &records).await?;
        Ok(ResendReport {
            sent: records.len() - rejected.len(),
            rejected: self.dead.to_letters(&records, &rejected),
        })
    }
}

/// `Basic base64(user:password)`.
pub fn basic_auth(user: &str, password: &Secret) -> Secret {
    use base64::Engine;
    let raw = format!("{user}:{}", password.expose());
    Secret::new(format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    ))
}

impl Sink for HttpSink {
    fn name(&self) -> &str {
        &self.name
    }

    /// Accepted = every event of the batch was answered 2xx, or was rejected for good and
    /// its dead letter is fsynced.
    async fn deliver(&mut self, batch: &[ChangeEvent]) -> Result<(), SinkError> {
        let selected = route(&mut self.route, batch);
        if selected.is_empty() {
            return Ok(());
        }
        self.records.clear();
        let now = crate::event::now_ms();
        for e in selected {
            self.records.push_event(e, now);
        }
        let mut sender = EventChunks {
            poster: &self.poster,
            format: self.format,
        };
        let rejected = self.delivery.run(&mut sender, &self.records).await?;
        self.dead.settle(&self.records, &rejected).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_a_known_vector() {
        // python3: hmac.new(b'Jefe', b'1700000000.{"a":1}', hashlib.sha256).hexdigest()
        assert_eq!(
            sign(b"Jefe", "1700000000", b"{\"a\":1}"),
            "v1=fa5f6481efc59da48b19c9dc10196c9953e5651f8304b3a318b6b87d70272e0a"
        );
    }

    #[test]
    fn basic_auth_header() {
        let s = basic_auth("key", &Secret::new(String::new()));
        assert_eq!(s.expose(), "Basic a2V5Og==");
        assert_eq!(format!("{s:?}"), "***");
    }
}
