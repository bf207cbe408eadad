//! A handle on a MySQL connection's TCP socket, shared with other threads: read bounds
//! and keepalives, and shutdown (so a read blocked on the connection — a stop, an
//! abandoned query — returns at once). The connection itself ([`super::sql::SqlConn`])
//! reads and writes through its own handle of the same socket (plain or under TLS).

use std::net::TcpStream;
use std::sync::{Arc, Mutex};

/// A duplicate of the connection's socket (same socket, so options and shutdown act on
/// the connection).
#[derive(Clone, Debug)]
pub(super) struct Socket(Arc<TcpStream>);

impl Socket {
    pub(super) fn new(stream: TcpStream) -> Socket {
        Socket(Arc::new(stream))
    }

    /// Bounds a blocked read: a server that stops answering without closing the
    /// connection (a network partition) makes the read fail after `timeout`, and TCP
    /// keepalive probes (idle 10 s, every 5 s, 3 lost) and a 30 s limit on unacknowledged
    /// writes end a connection whose peer is gone even while nothing is read. See
    /// [`dead_after`].
    pub(super) fn bound_reads(&self, timeout: std::time::Duration) {
        use rustix::net::sockopt;
        let fd = &*self.0;
        if let Err(e) = self.0.set_read_timeout(Some(timeout)) {
            tracing::debug!(error = %e, "setting the MySQL connection's read timeout failed");
        }
        let r = sockopt::set_socket_keepalive(fd, true)
            .and_then(|()| sockopt::set_tcp_keepidle(fd, std::time::Duration::from_secs(10)))
            .and_then(|()| sockopt::set_tcp_keepintvl(fd, std::time::Duration::from_secs(5)))
            .and_then(|()| sockopt::set_tcp_keepcnt(fd, 3))
            .and_then(|()| sockopt::set_tcp_user_timeout(fd, 30_000));
        if let Err(e) = r {
            tracing::debug!(error = %e, "bounding reads on the MySQL connection failed");
        }
    }

    /// Ends a blocked read on the connection (it returns end-of-file).
    pub(super) fn shutdown(&self) {
        let _ = self.0.shutdown(std::net::Shutdown::Both);
    }
}

/// How long the binlog connection may stay silent before it counts as dead: three
/// heartbeat periods (the server sends a heartbeat when it has nothing else), at least
/// 10 s.
pub(super) fn dead_after(heartbeat: std::time::Duration) -> std::time::Duration {
    (heartbeat * 3).max(std::time::Duration::from_secs(10))
}

/// Where the reader thread leaves the binlog connection's socket for the async side,
/// which shuts it down on stop.
pub(super) type StopSocket = Arc<Mutex<Option<Socket>>>;
