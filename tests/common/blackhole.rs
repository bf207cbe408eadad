//! A TCP proxy that can turn into a black hole: [`Blackhole::swallow`] makes every
//! connection open at that moment stop forwarding in both directions *without closing*
//! (what a network partition looks like to both ends); connections made afterwards are
//! forwarded normally. It runs on its own thread and runtime; dropping it closes everything.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct Blackhole {
    port: u16,
    /// Connections accepted before this generation are swallowed.
    holed_before: Arc<AtomicU64>,
    accepted: Arc<AtomicU64>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Blackhole {
    /// Listens on a free local port and forwards to `127.0.0.1:target`.
    pub fn start(target: u16) -> Blackhole {
        let port = super::port::free_port();
        let holed_before = Arc::new(AtomicU64::new(0));
        let accepted = Arc::new(AtomicU64::new(0));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (h, a) = (holed_before.clone(), accepted.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("proxy runtime");
            rt.block_on(async move {
                let listener = TcpListener::bind(("127.0.0.1", port))
                    .await
                    .expect("proxy bind");
                let _ = ready_tx.send(());
                let accept = async {
                    loop {
                        let Ok((client, _)) = listener.accept().await else {
                            continue;
                        };
                        let generation = a.fetch_add(1, Ordering::SeqCst) + 1;
                        let h = h.clone();
                        tokio::spawn(async move {
                            let Ok(server) = TcpStream::connect(("127.0.0.1", target)).await else {
                                return;
                            };
                            let (cr, cw) = client.into_split();
                            let (sr, sw) = server.into_split();
                            let up = pump(cr, sw, generation, h.clone());
                            let down = pump(sr, cw, generation, h);
                            tokio::join!(up, down);
                        });
                    }
                };
                tokio::select! {
                    _ = accept => {}
                    _ = stopped => {}
                }
            });
            // Dropping the runtime closes every socket.
        });
        ready_rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("proxy started");
        Blackhole {
            port,
            holed_before,
            accepted,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// From now on, every connection open now forwards nothing more, and stays open.
    pub fn swallow(&self) {
        let now = self.accepted.load(Ordering::SeqCst);
        self.holed_before.store(now + 1, Ordering::SeqCst);
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// Copies `from` → `to` until either end closes; once the connection's generation is
/// black-holed, whatever arrives is dropped and the sockets are held open, silent.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    generation: u64,
    holed_before: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                if generation < holed_before.load(Ordering::SeqCst) {
                    // Silent even about the close.
                    std::future::pending::<()>().await;
                }
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        if generation < holed_before.load(Ordering::SeqCst) {
            // Swallowed: read on (so the sender's writes succeed) but forward nothing.
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
