//! The admin endpoint of `logtide run`: Prometheus metrics, health, readiness, source status
//! and the operator's controls, served with `axum`.
//!
//! Routes:
//! * `GET /metrics` — [`crate::metrics::render`].
//! * `GET /health` — 200 while the service runs; 503 once a source failed permanently.
//! * `GET /ready` — 200 when every source is connected and streaming or backfilling (a
//!   paused source counts), 503 otherwise (starting, reconnecting, failed).
//! * `GET /sources`, `GET /sources/<name>` — JSON status ([`crate::status::SourceSnapshot`]).
//! * `POST /sources/<name>/pause` and `/resume` — flip the pause switch (see
//!   [`crate::pipeline`]); answers the source's status.
//! * `POST /sources/<name>/backfill/<schema.table>` — queue an on-demand backfill (202; the
//!   table name percent-encoded; 409 for a query source, 400 for a bad escape).
//!
//! An unknown source is 404, an unknown path 404, a known path with another method 405 (with
//! `Allow`). Every answer carries `Connection: close` and `Cache-Control: no-store`.
//!
//! Owns: the routes and the connection limits. Does not own HTTP itself (hyper, through
//! axum: a malformed request gets hyper's 400 and an oversized head its 431), what is
//! measured ([`crate::metrics`]), the state it shows ([`crate::status`]), or what pausing
//! does (the pipeline).
//!
//! At most [`MAX_CONNECTIONS`] connections are served at once (more wait in the listen
//! backlog), and a connection lives at most [`CONNECTION_DEADLINE`]: a client that sends
//! its request too slowly is disconnected. axum runs each connection in a task of its own;
//! on shutdown [`serve`] stops accepting and waits for them, which the deadline bounds.
//! There is no authentication: keep `listen` on localhost or a trusted network.

use crate::status::{SourceState, SourceStatus, StatusBoard};
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;

/// Longest a connection may stay open: time to send the request, be answered, and read it.
pub const CONNECTION_DEADLINE: Duration = Duration::from_secs(10);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 64;

/// What the handlers read: the sources' status and the recorded metrics.
#[derive(Clone)]
struct Admin {
    board: Arc<StatusBoard>,
    metrics: PrometheusHandle,
}

/// The routes, over `board` and the metrics recorded in `metrics`.
pub fn router(board: Arc<StatusBoard>, metrics: PrometheusHandle) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/sources", get(sources))
        .route("/sources/{name}", get(source))
        .route("/sources/{name}/{action}", post(pause_or_resume))
        .route("/sources/{name}/backfill/{table}", post(backfill))
        .fallback(not_found)
        .layer(axum::middleware::map_response(close))
        .with_state(Admin { board, metrics })
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.into(),
    )
        .into_response()
}

/// Pretty JSON with a final newline (readable with plain `curl`).
fn json(status: StatusCode, v: &impl serde::Serialize) -> Response {
    match serde_json::to_string_pretty(v) {
        Ok(mut body) => {
            body.push('\n');
            (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the answer: {e}\n"),
        ),
    }
}

fn no_source(name: &str) -> Response {
    text(StatusCode::NOT_FOUND, format!("no source named {name:?}\n"))
}

/// One request per connection, never cached.
async fn close(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

async fn metrics_text(State(a): State<Admin>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(&a.metrics, &a.board),
    )
        .into_response()
}

async fn health(State(a): State<Admin>) -> Response {
    let failed: Vec<String> = a
        .board
        .sources()
        .filter(|s| s.state() == SourceState::Failed)
        .map(|s| s.name.clone())
        .collect();
    if failed.is_empty() {
        text(StatusCode::OK, "ok\n")
    } else {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("failed: {}\n", failed.join(", ")),
        )
    }
}

async fn ready(State(a): State<Admin>) -> Response {
    let waiting: Vec<String> = a
        .board
        .sources()
        .filter(|s| !s.state().is_up())
        .map(|s| format!("{} ({:?})", s.name, s.state()).to_lowercase())
        .collect();
    if waiting.is_empty() {
        text(StatusCode::OK, "ready\n")
    } else {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", waiting.join(", ")),
        )
    }
}

async fn sources(State(a): State<Admin>) -> Response {
    let all: Vec<_> = a.board.sources().map(|s| s.snapshot()).collect();
    json(StatusCode::OK, &all)
}

async fn source(State(a): State<Admin>, Path(name): Path<String>) -> Response {
    match a.board.source(&name) {
        Some(s) => json(StatusCode::OK, &s.snapshot()),
        None => no_source(&name),
    }
}

async fn pause_or_resume(
    State(a): State<Admin>,
    Path((name, action)): Path<(String, String)>,
) -> Response {
    let pause = match action.as_str() {
        "pause" => true,
        "resume" => false,
        _ => return not_found().await,
    };
    let Some(s) = a.board.source(&name) else {
        return no_source(&name);
    };
    if s.set_paused(pause) {
        tracing::info!(source = %s.name, "{}", if pause { "source paused" } else { "source resumed" });
    }
    json(StatusCode::OK, &s.snapshot())
}

/// The table name is decoded here, from the raw path, so that a bad escape (`%zz`, or
/// bytes that are not UTF-8) is refused instead of passed on as typed.
async fn backfill(State(a): State<Admin>, uri: Uri) -> Response {
    let segments: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    let (Some(name), Some(table)) = (segments.get(1), segments.get(3)) else {
        return not_found().await;
    };
    let Some(name) = percent_decode(name) else {
        return text(StatusCode::BAD_REQUEST, "bad source name\n");
    };
    let Some(s) = a.board.source(&name) else {
        return no_source(&name);
    };
    if s.kind == "query" {
        return text(
            StatusCode::CONFLICT,
            format!("source {name:?} is a query source: it has no backfill\n"),
        );
    }
    let Some(table) = percent_decode(table).filter(|t| !t.is_empty()) else {
        return text(
            StatusCode::BAD_REQUEST,
            "bad table name: expected percent-encoded UTF-8\n",
        );
    };
    request_backfill(s, table)
}

fn request_backfill(s: &SourceStatus, table: String) -> Response {
    tracing::info!(source = %s.name, %table, "on-demand backfill requested");
    s.request_backfill(table);
    json(StatusCode::ACCEPTED, &s.snapshot())
}

async fn not_found() -> Response {
    text(
        StatusCode::NOT_FOUND,
        "not found; try /metrics, /health, /ready, /sources, POST /sources/<name>/pause|resume, POST /sources/<name>/backfill/<schema.table>\n",
    )
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

/// Serves until `cancel`, then lets the requests in flight finish (each connection ends by
/// [`CONNECTION_DEADLINE`] at the latest).
pub async fn serve(
    listener: TcpListener,
    board: Arc<StatusBoard>,
    metrics: PrometheusHandle,
    cancel: CancellationToken,
) {
    let listener = Limited {
        listener,
        slots: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
    };
    let served = axum::serve(listener, router(board, metrics))
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await;
    if let Err(error) = served {
        tracing::warn!(%error, "admin endpoint stopped");
    }
}

/// A listener that holds a slot of `slots` for each open connection and gives each one a
/// deadline.
struct Limited {
    listener: TcpListener,
    slots: Arc<Semaphore>,
}

impl axum::serve::Listener for Limited {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Conn, SocketAddr) {
        // The semaphore is never closed; without a slot the connection is still served.
        let slot = self.slots.clone().acquire_owned().await.ok();
        // Accept errors (e.g. out of file descriptors) are logged and retried by axum.
        let (io, peer) = axum::serve::Listener::accept(&mut self.listener).await;
        let conn = Conn {
            io,
            deadline: Box::pin(tokio::time::sleep(CONNECTION_DEADLINE)),
            _slot: slot,
        };
        (conn, peer)
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// A connection that fails its reads and writes once its deadline passed.
struct Conn {
    io: TcpStream,
    deadline: Pin<Box<Sleep>>,
    _slot: Option<OwnedSemaphorePermit>,
}

impl Conn {
    /// Checks the deadline (and asks to be woken when it passes).
    fn expired(&mut self, cx: &mut Context<'_>) -> Option<std::io::Error> {
        self.deadline.as_mut().poll(cx).is_ready().then(|| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "admin connection open longer than its deadline",
            )
        })
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if let Some(e) = this.expired(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if let Some(e) = this.expired(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if let Some(e) = this.expired(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A served endpoint on a free port; stops when the token is cancelled.
    async fn start(board: Arc<StatusBoard>) -> (SocketAddr, CancellationToken) {
        let listener = bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let cancel = CancellationToken::new();
        let handle = crate::metrics::recorder().handle();
        tokio::spawn(serve(listener, board, handle, cancel.clone()));
        (addr, cancel)
    }

    /// One raw HTTP/1.1 exchange: the whole answer, read until the server closes.
    async fn raw(addr: SocketAddr, request: Vec<u8>) -> String {
        tokio::task::spawn_blocking(move || {
            let mut s = std::net::TcpStream::connect(addr).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(20)))
                .expect("timeout");
            s.write_all(&request).expect("write");
            let mut answer = Vec::new();
            s.read_to_end(&mut answer).expect("read until close");
            String::from_utf8_lossy(&answer).into_owned()
        })
        .await
        .expect("joined")
    }

    async fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
        let answer = raw(
            addr,
            format!("{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
                .into_bytes(),
        )
        .await;
        let (head, body) = answer.split_once("\r\n\r\n").expect("head");
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status");
        (status, body.to_owned())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn routes() {
        let board = StatusBoard::new([("app".to_owned(), "postgres"), ("q".to_owned(), "query")]);
        let (addr, cancel) = start(board.clone()).await;
        let app = board.source("app").expect("app").clone();
        board
            .source("q")
            .expect("q")
            .set_state(SourceState::Streaming);
        assert_eq!(http(addr, "GET", "/health").await.0, 200);
        assert_eq!(http(addr, "GET", "/ready").await.0, 503);
        app.set_state(SourceState::Streaming);
        assert_eq!(http(addr, "GET", "/ready").await, (200, "ready\n".into()));
        assert_eq!(http(addr, "GET", "/ready?x=1").await.0, 200);
        assert_eq!(http(addr, "POST", "/sources/nope/pause").await.0, 404);
        assert_eq!(http(addr, "GET", "/sources/app/pause").await.0, 405);
        assert_eq!(http(addr, "POST", "/sources/app/jump").await.0, 404);
        let (s, body) = http(addr, "POST", "/sources/app/pause").await;
        assert_eq!(s, 200);
        assert!(body.contains("\"paused\": true"), "{body}");
        assert!(app.is_paused());
        assert_eq!(http(addr, "POST", "/sources/app/resume").await.0, 200);
        assert!(!app.is_paused());
        let (s, body) = http(addr, "POST", "/sources/app/backfill/public.orders").await;
        assert_eq!(s, 202, "{body}");
        assert!(body.contains("\"queued\""), "{body}");
        assert_eq!(
            app.take_backfill_requests(),
            vec!["public.orders".to_owned()]
        );
        let (s, body) = http(addr, "POST", "/sources/app/backfill/s%2Eodd%20name").await;
        assert_eq!(s, 202, "{body}");
        assert_eq!(app.take_backfill_requests(), vec!["s.odd name".to_owned()]);
        assert_eq!(http(addr, "POST", "/sources/app/backfill/%zz").await.0, 400);
        assert_eq!(http(addr, "POST", "/sources/app/backfill/%C3").await.0, 400);
        assert_eq!(http(addr, "POST", "/sources/q/backfill/t").await.0, 409);
        assert_eq!(http(addr, "GET", "/sources/app/backfill/t").await.0, 405);
        assert_eq!(http(addr, "POST", "/sources/x/backfill/t").await.0, 404);
        assert_eq!(http(addr, "POST", "/metrics").await.0, 405);
        assert_eq!(http(addr, "GET", "/nope").await.0, 404);
        let (s, body) = http(addr, "GET", "/sources").await;
        assert_eq!(s, 200);
        let j: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(j[0]["name"], "app");
        assert_eq!(j[0]["state"], "streaming");
        let (s, body) = http(addr, "GET", "/metrics").await;
        assert_eq!(s, 200);
        assert!(
            body.contains("logtide_source_up{source=\"app\"} 1\n"),
            "{body}"
        );
        app.set_error("boom".into(), false);
        let answer = raw(addr, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()).await;
        assert!(
            answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{answer}"
        );
        let head = answer.to_ascii_lowercase();
        assert!(head.contains("\r\nconnection: close\r\n"), "{answer}");
        assert!(head.contains("\r\ncache-control: no-store\r\n"), "{answer}");
        // Bytes that are no HTTP get a 400 from the library, and the server goes on.
        let answer = raw(addr, b"\x00\xff garbage\r\n\r\n".to_vec()).await;
        assert!(answer.starts_with("HTTP/1.1 400 "), "{answer:?}");
        assert_eq!(http(addr, "GET", "/health").await.0, 503);
        cancel.cancel();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_silent_client_is_disconnected_and_shutdown_completes() {
        let board = StatusBoard::new([("app".to_owned(), "postgres")]);
        let listener = bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let cancel = CancellationToken::new();
        let server = tokio::spawn(serve(
            listener,
            board,
            crate::metrics::recorder().handle(),
            cancel.clone(),
        ));
        let started = std::time::Instant::now();
        // Sends half a request head and nothing more.
        let answer = raw(addr, b"GET /health HTTP/1.1\r\n".to_vec()).await;
        let waited = started.elapsed();
        assert!(!answer.contains("200"), "{answer}");
        assert!(
            waited >= CONNECTION_DEADLINE - Duration::from_secs(1)
                && waited < CONNECTION_DEADLINE + Duration::from_secs(8),
            "{waited:?}"
        );
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("stops on cancel")
            .expect("joined");
    }
}
