//! A tiny HTTP/1.1 receiver for the sink tests and the sink benchmark: keep-alive,
//! `Content-Length` bodies, and a scripted answer per request (status, headers, delay, or
//! dropping the connection). It records every request and which ones it accepted (2xx).
//!
//! Hand-rolled on tokio so the tests need no web framework.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// One received request.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The events (or calls) of the body: a JSON array, NDJSON, or a Segment `{"batch":[..]}`.
    pub fn items(&self) -> Vec<serde_json::Value> {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&self.body) {
            return match v {
                serde_json::Value::Array(a) => a,
                serde_json::Value::Object(mut o) => match o.remove("batch") {
                    Some(serde_json::Value::Array(a)) => a,
                    _ => vec![serde_json::Value::Object(o)],
                },
                other => vec![other],
            };
        }
        self.body
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .filter_map(|l| serde_json::from_slice(l).ok())
            .collect()
    }
}

/// The answer to a request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Status, extra headers, body.
    Status(u16, Vec<(String, String)>, String),
    /// Wait, then answer.
    Delay(Duration, Box<Reply>),
    /// Close the connection without answering.
    Drop,
}

impl Reply {
    pub fn ok() -> Reply {
        Reply::Status(200, vec![], "{}".into())
    }
    pub fn status(code: u16) -> Reply {
        Reply::Status(code, vec![], format!("{{\"status\":{code}}}"))
    }
    pub fn too_many(retry_after_secs: u64) -> Reply {
        Reply::Status(
            429,
            vec![("Retry-After".into(), retry_after_secs.to_string())],
            "slow down".into(),
        )
    }
    fn code(&self) -> Option<u16> {
        match self {
            Reply::Status(c, _, _) => Some(*c),
            Reply::Delay(_, r) => r.code(),
            Reply::Drop => None,
        }
    }
}

/// Decides the answer: (request, its 0-based number) → reply.
pub type Script = Arc<dyn Fn(&Request, usize) -> Reply + Send + Sync>;

#[derive(Default)]
struct Log {
    all: Vec<Request>,
    accepted: Vec<Request>,
}

/// A running receiver; stops when dropped.
pub struct Receiver {
    pub addr: SocketAddr,
    log: Arc<Mutex<Log>>,
    /// Events counted in count-only mode (NDJSON lines or array items are not parsed: one
    /// per `\n`, so use `format = "ndjson"`).
    counted: Arc<AtomicU64>,
    tasks: JoinSet<()>,
}

impl Receiver {
    /// Starts on a free port of 127.0.0.1.
    pub async fn start(script: Script) -> Receiver {
        Self::start_on(0, script, false).await
    }

    /// Starts on `port` (0: any); `count_only` keeps no requests, only counts lines.
    pub async fn start_on(port: u16, script: Script, count_only: bool) -> Receiver {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("addr");
        let log = Arc::new(Mutex::new(Log::default()));
        let counted = Arc::new(AtomicU64::new(0));
        let seq = Arc::new(AtomicU64::new(0));
        let mut tasks = JoinSet::new();
        let (l2, c2) = (log.clone(), counted.clone());
        tasks.spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    break;
                };
                let _ = sock.set_nodelay(true);
                conns.spawn(serve(
                    sock,
                    script.clone(),
                    l2.clone(),
                    c2.clone(),
                    seq.clone(),
                    count_only,
                ));
                while conns.try_join_next().is_some() {}
            }
        });
        Receiver {
            addr,
            log,
            counted,
            tasks,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Every request received, answered or not.
    pub fn requests(&self) -> Vec<Request> {
        self.log.lock().expect("lock").all.clone()
    }

    /// Requests answered 2xx.
    pub fn accepted(&self) -> Vec<Request> {
        self.log.lock().expect("lock").accepted.clone()
    }

    /// Items of the accepted requests, in arrival order.
    pub fn accepted_items(&self) -> Vec<serde_json::Value> {
        self.accepted().iter().flat_map(Request::items).collect()
    }

    pub fn counted(&self) -> u64 {
        self.counted.load(Ordering::Relaxed)
    }

    /// Stops accepting and closes every connection.
    pub fn stop(&mut self) {
        self.tasks.abort_all();
    }
}

async fn serve(
    mut sock: TcpStream,
    script: Script,
    log: Arc<Mutex<Log>>,
    counted: Arc<AtomicU64>,
    seq: Arc<AtomicU64>,
    count_only: bool,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 16);
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        // Read the head.
        let head_end = loop {
            if let Some(p) = find(&buf, b"\r\n\r\n") {
                break p;
            }
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or_default().to_owned();
        let mut parts = request_line.split(' ');
        let method = parts.next().unwrap_or_default().to_owned();
        let path = parts.next().unwrap_or_default().to_owned();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let body_start = head_end + 4;
        while buf.len() < body_start + len {
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = buf[body_start..body_start + len].to_vec();
        buf.drain(..body_start + len);
        let req = Request {
            method,
            path,
            headers,
            body,
        };
        let n = seq.fetch_add(1, Ordering::SeqCst) as usize;
        let mut reply = script(&req, n);
        let accepted = reply.code().is_some_and(|c| (200..300).contains(&c));
        if count_only {
            if accepted {
                let lines = req.body.iter().filter(|&&b| b == b'\n').count() as u64;
                counted.fetch_add(lines, Ordering::Relaxed);
            }
        } else {
            let mut l = log.lock().expect("lock");
            l.all.push(req.clone());
            if accepted {
                l.accepted.push(req);
            }
        }
        loop {
            match reply {
                Reply::Delay(d, r) => {
                    tokio::time::sleep(d).await;
                    reply = *r;
                }
                Reply::Drop => return,
                Reply::Status(code, extra, body) => {
                    let mut out = format!(
                        "HTTP/1.1 {code} X\r\ncontent-length: {}\r\ncontent-type: application/json\r\n",
                        body.len()
                    );
                    for (k, v) in extra {
                        out.push_str(&format!("{k}: {v}\r\n"));
                    }
                    out.push_str("\r\n");
                    out.push_str(&body);
                    if sock.write_all(out.as_bytes()).await.is_err() {
                        return;
                    }
                    break;
                }
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A port nothing listens on (checked free, below the ephemeral range, see `common::port`).
pub fn free_port() -> u16 {
    crate::common::port::free_port()
}

/// Waits until `cond` holds, polling every 20 ms; panics after `timeout`.
pub async fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
