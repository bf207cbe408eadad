//! The admin endpoint of `logtide run`: Prometheus metrics, health, readiness, source status
//! and pause/resume, over a deliberately small HTTP/1.1 server.
//!
//! Routes:
//! * `GET /metrics` — [`crate::metrics::Metrics::render`].
//! * `GET /health` — 200 while the service runs; 503 once a source failed permanently.
//! * `GET /ready` — 200 when every source is connected and streaming or backfilling (a
//!   paused source counts), 503 otherwise (starting, reconnecting, failed).
//! * `GET /sources` — JSON status per source; `POST /sources/<name>/pause` and
//!   `/resume` — flip the pause switch (see [`crate::pipeline`]); 404 for an unknown source.
//!
//! Owns: accepting connections, parsing a request head, routing. Does not own what is
//! measured ([`crate::metrics`]) or what pausing does (the pipeline).
//!
//! The server reads one request per connection (bounded at [`MAX_HEAD`] bytes, within
//! [`READ_TIMEOUT`]), answers with `Connection: close`, and never panics on any bytes: the
//! parser works on checked slices and answers 400 to anything it does not understand.
//! There is no authentication: keep `listen` on localhost or a trusted network.

use crate::metrics::{Metrics, SourceState};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Largest request head (request line + headers) accepted.
pub const MAX_HEAD: usize = 8 * 1024;
/// Longest time a client may take to send its request head (and to read the answer).
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more are closed at once.
const MAX_CONNECTIONS: usize = 64;

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path without the query string.
    pub path: String,
}

/// Why a request head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadRequest {
    /// Not `METHOD SP target SP HTTP/1.x`, or not ASCII.
    Malformed,
    /// The head exceeds [`MAX_HEAD`].
    TooLarge,
}

/// Parses a request head from the bytes read so far: `Ok(None)` while the blank line that
/// ends the head has not arrived.
pub fn parse_head(buf: &[u8]) -> Result<Option<Request>, BadRequest> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        // Tolerate bare LF clients too.
        if let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            return parse_line(buf.get(..end).ok_or(BadRequest::Malformed)?).map(Some);
        }
        return if buf.len() >= MAX_HEAD {
            Err(BadRequest::TooLarge)
        } else {
            Ok(None)
        };
    };
    if end > MAX_HEAD {
        return Err(BadRequest::TooLarge);
    }
    parse_line(buf.get(..end).ok_or(BadRequest::Malformed)?).map(Some)
}

fn parse_line(head: &[u8]) -> Result<Request, BadRequest> {
    let line_end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let line = head.get(..line_end).ok_or(BadRequest::Malformed)?;
    let line = std::str::from_utf8(line).map_err(|_| BadRequest::Malformed)?;
    let line = line.trim_end_matches('\r');
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(BadRequest::Malformed);
    };
    if method.is_empty()
        || !method.bytes().all(|b| b.is_ascii_uppercase())
        || !target.starts_with('/')
        || !(version == "HTTP/1.1" || version == "HTTP/1.0")
    {
        return Err(BadRequest::Malformed);
    }
    let path = target.split(['?', '#']).next().unwrap_or(target);
    Ok(Request {
        method: method.to_owned(),
        path: path.to_owned(),
    })
}

/// An answer: status, content type, extra headers, body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub allow: Option<&'static str>,
    pub body: String,
}

impl Response {
    fn text(status: u16, body: impl Into<String>) -> Self {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            allow: None,
            body: body.into(),
        }
    }

    fn json(status: u16, v: &impl serde::Serialize) -> Self {
        match serde_json::to_string_pretty(v) {
            Ok(mut body) => {
                body.push('\n');
                Response {
                    status,
                    content_type: "application/json",
                    allow: None,
                    body,
                }
            }
            Err(e) => Response::text(500, format!("cannot encode the answer: {e}\n")),
        }
    }

    fn method_not_allowed(allow: &'static str) -> Self {
        Response {
            allow: Some(allow),
            ..Response::text(405, format!("method not allowed; use {allow}\n"))
        }
    }

    fn encode(&self) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            202 => "Accepted",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            409 => "Conflict",
            431 => "Request Header Fields Too Large",
            503 => "Service Unavailable",
            _ => "Internal Server Error",
        };
        let mut head = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n",
            self.status,
            self.content_type,
            self.body.len()
        );
        if let Some(a) = self.allow {
            head.push_str("Allow: ");
            head.push_str(a);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(self.body.as_bytes());
        out
    }
}

/// Answers one request.
pub fn route(req: &Request, metrics: &Metrics) -> Response {
    let segments: Vec<&str> = req.path.split('/').filter(|s| !s.is_empty()).collect();
    let get = req.method == "GET";
    match segments.as_slice() {
        ["metrics"] if get => Response {
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            ..Response::text(200, metrics.render())
        },
        ["health"] if get => {
            let failed: Vec<String> = metrics
                .sources()
                .filter(|s| s.state() == SourceState::Failed)
                .map(|s| s.name.clone())
                .collect();
            if failed.is_empty() {
                Response::text(200, "ok\n")
            } else {
                Response::text(503, format!("failed: {}\n", failed.join(", ")))
            }
        }
        ["ready"] if get => {
            let waiting: Vec<String> = metrics
                .sources()
                .filter(|s| !s.state().is_up())
                .map(|s| format!("{} ({:?})", s.name, s.state()).to_lowercase())
                .collect();
            if waiting.is_empty() {
                Response::text(200, "ready\n")
            } else {
                Response::text(503, format!("not ready: {}\n", waiting.join(", ")))
            }
        }
        ["sources"] if get => {
            let all: Vec<_> = metrics.sources().map(|s| s.snapshot()).collect();
            Response::json(200, &all)
        }
        ["sources", name] if get => match metrics.source(name) {
            Some(s) => Response::json(200, &s.snapshot()),
            None => Response::text(404, format!("no source named {name:?}\n")),
        },
        ["sources", name, action @ ("pause" | "resume")] => {
            let Some(s) = metrics.source(name) else {
                return Response::text(404, format!("no source named {name:?}\n"));
            };
            if req.method != "POST" {
                return Response::method_not_allowed("POST");
            }
            let pause = *action == "pause";
            if s.set_paused(pause) {
                tracing::info!(source = %s.name, "{}", if pause { "source paused" } else { "source resumed" });
            }
            Response::json(200, &s.snapshot())
        }
        ["sources", name, "backfill", table] => {
            let Some(s) = metrics.source(name) else {
                return Response::text(404, format!("no source named {name:?}\n"));
            };
            if req.method != "POST" {
                return Response::method_not_allowed("POST");
            }
            if s.kind == "query" {
                return Response::text(
                    409,
                    format!("source {name:?} is a query source: it has no backfill\n"),
                );
            }
            let Some(table) = percent_decode(table).filter(|t| !t.is_empty()) else {
                return Response::text(400, "bad table name: expected percent-encoded UTF-8\n");
            };
            tracing::info!(source = %s.name, %table, "on-demand backfill requested");
            s.request_backfill(table);
            Response::json(202, &s.snapshot())
        }
        ["metrics"] | ["health"] | ["ready"] | ["sources"] | ["sources", _] => {
            Response::method_not_allowed("GET")
        }
        _ => Response::text(
            404,
            "not found; try /metrics, /health, /ready, /sources, POST /sources/<name>/pause|resume, POST /sources/<name>/backfill/<schema.table>\n",
        ),
    }
}

/// Decodes `%XX` escapes of a path segment; `None` for a bad escape or non-UTF-8.
fn percent_decode(seg: &str) -> Option<String> {
    let b = seg.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Binds the admin listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves until `cancel`; every connection task is owned and aborted on return.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, cancel: CancellationToken) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if conns.len() >= MAX_CONNECTIONS {
                        tracing::debug!(%peer, "admin: too many connections, closing");
                        drop(stream);
                        continue;
                    }
                    let m = metrics.clone();
                    conns.spawn(async move {
                        if let Err(error) = handle(stream, &m).await {
                            tracing::debug!(%peer, %error, "admin connection failed");
                        }
                    });
                }
                Err(error) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    tracing::warn!(%error, "admin endpoint cannot accept connections");
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    }
                }
            },
        }
    }
    conns.abort_all();
    while conns.join_next().await.is_some() {}
}

async fn handle(mut stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let read = async {
        loop {
            match parse_head(&buf) {
                Ok(Some(req)) => return Ok(req),
                Ok(None) => {}
                Err(e) => return Err(Some(e)),
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return Err(None),
                Ok(n) => buf.extend_from_slice(chunk.get(..n).unwrap_or(&[])),
            }
        }
    };
    let resp = match tokio::time::timeout(READ_TIMEOUT, read).await {
        Err(_) => Response::text(408, "request head not received in time\n"),
        Ok(Err(None)) => return Ok(()),
        Ok(Err(Some(BadRequest::TooLarge))) => Response::text(431, "request head too large\n"),
        Ok(Err(Some(BadRequest::Malformed))) => Response::text(400, "malformed request\n"),
        Ok(Ok(req)) => route(&req, metrics),
    };
    let write = async {
        stream.write_all(&resp.encode()).await?;
        stream.shutdown().await
    };
    tokio::time::timeout(READ_TIMEOUT, write)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "write timed out"))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn req(method: &str, path: &str) -> Request {
        Request {
            method: method.into(),
            path: path.into(),
        }
    }

    #[test]
    fn parses_heads() {
        assert_eq!(parse_head(b"GET /metrics HTTP/1.1\r\nHost: x"), Ok(None));
        assert_eq!(
            parse_head(b"GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\n\r\n"),
            Ok(Some(req("GET", "/metrics")))
        );
        assert_eq!(
            parse_head(b"POST /sources/a/pause HTTP/1.0\n\n"),
            Ok(Some(req("POST", "/sources/a/pause")))
        );
        assert_eq!(
            parse_head(b"GET metrics HTTP/1.1\r\n\r\n"),
            Err(BadRequest::Malformed)
        );
        assert_eq!(
            parse_head(b"GET / HTTP/2\r\n\r\n"),
            Err(BadRequest::Malformed)
        );
        assert_eq!(parse_head(&vec![b'a'; MAX_HEAD]), Err(BadRequest::TooLarge));
    }

    #[test]
    fn routes() {
        let m = Metrics::new([("app".to_owned(), "postgres")]);
        assert_eq!(route(&req("GET", "/health"), &m).status, 200);
        assert_eq!(route(&req("GET", "/ready"), &m).status, 503);
        m.source("app")
            .expect("app")
            .set_state(SourceState::Streaming);
        assert_eq!(route(&req("GET", "/ready"), &m).status, 200);
        assert_eq!(route(&req("POST", "/sources/nope/pause"), &m).status, 404);
        assert_eq!(route(&req("GET", "/sources/app/pause"), &m).status, 405);
        let r = route(&req("POST", "/sources/app/pause"), &m);
        assert_eq!(r.status, 200);
        assert!(r.body.contains("\"paused\": true"), "{}", r.body);
        assert!(m.source("app").expect("app").is_paused());
        assert_eq!(route(&req("POST", "/sources/app/resume"), &m).status, 200);
        assert!(!m.source("app").expect("app").is_paused());
        let r = route(&req("POST", "/sources/app/backfill/public.orders"), &m);
        assert_eq!(r.status, 202, "{}", r.body);
        assert!(r.body.contains("\"queued\""), "{}", r.body);
        assert_eq!(
            m.source("app").expect("app").take_backfill_requests(),
            vec!["public.orders".to_owned()]
        );
        let r = route(&req("POST", "/sources/app/backfill/s%2Eodd%20name"), &m);
        assert_eq!(r.status, 202, "{}", r.body);
        assert_eq!(
            m.source("app").expect("app").take_backfill_requests(),
            vec!["s.odd name".to_owned()]
        );
        assert_eq!(
            route(&req("POST", "/sources/app/backfill/%zz"), &m).status,
            400
        );
        assert_eq!(
            route(&req("POST", "/sources/app/backfill/%C3"), &m).status,
            400
        );
        assert_eq!(
            route(&req("GET", "/sources/app/backfill/t"), &m).status,
            405
        );
        assert_eq!(route(&req("POST", "/sources/x/backfill/t"), &m).status, 404);
        assert_eq!(route(&req("POST", "/metrics"), &m).status, 405);
        assert_eq!(route(&req("GET", "/nope"), &m).status, 404);
        m.source("app")
            .expect("app")
            .set_error("boom".into(), false);
        assert_eq!(route(&req("GET", "/health"), &m).status, 503);
        let enc = String::from_utf8(route(&req("GET", "/health"), &m).encode()).expect("utf8");
        assert!(
            enc.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{enc}"
        );
    }

    proptest! {
        #[test]
        fn any_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_head(&bytes);
        }

        #[test]
        fn mutated_heads_never_panic(pos in 0usize..40, b in any::<u8>()) {
            let mut h = b"GET /sources/app/pause HTTP/1.1\r\nHost: a\r\n\r\n".to_vec();
            if let Some(x) = h.get_mut(pos) { *x = b; }
            if let Ok(Some(r)) = parse_head(&h) {
                let m = Metrics::new([("app".to_owned(), "postgres")]);
                let _ = route(&r, &m);
            }
        }
    }
}
