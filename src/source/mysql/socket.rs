//! A handle on the TCP socket that `mysql_cdc` keeps private.
//!
//! The crate opens its own `TcpStream` and exposes neither the stream nor its descriptor.
//! Two things need the socket:
//! - `TCP_NODELAY`: the crate writes each packet as three small writes (length, sequence
//!   id, body). With Nagle's algorithm on, the second write waits for the server's delayed
//!   ACK, so every query and the dump request cost ~40 ms (measured: 9 round trips, 0.4 s
//!   per connect).
//! - shutdown on stop: a reader blocked in a socket read otherwise only sees the stop flag
//!   with the next packet, a heartbeat interval later.
//!
//! The socket is found without `unsafe`: the process's socket descriptors are listed from
//! `/proc/self/fd` before and after the crate connects, the new ones are duplicated with
//! `pidfd_getfd(2)` (our own process, so no ptrace rights are involved) and kept when their
//! peer is the server's address. When that finds nothing or more than one candidate
//! (another thread connected to the same server at the same moment), the connection works
//! as before, only without these two improvements.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

/// Socket descriptors (fd number, socket inode) open in this process now.
pub(super) fn snapshot() -> HashSet<(i32, u64)> {
    let mut out = HashSet::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        if let Some(ino) = target
            .to_str()
            .and_then(|t| t.strip_prefix("socket:["))
            .and_then(|t| t.strip_suffix(']'))
            .and_then(|t| t.parse::<u64>().ok())
        {
            out.insert((fd, ino));
        }
    }
    out
}

/// The one socket opened since `before` whose peer is `host:port`, if exactly one is.
pub(super) fn find_new(before: &HashSet<(i32, u64)>, host: &str, port: u16) -> Option<Socket> {
    let peers: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .map(|a| a.collect())
        .unwrap_or_default();
    let pidfd = rustix::process::pidfd_open(
        rustix::process::getpid(),
        rustix::process::PidfdFlags::empty(),
    )
    .ok()?;
    let mut found = Vec::new();
    for (fd, ino) in snapshot().difference(before) {
        let Ok(dup) =
            rustix::process::pidfd_getfd(&pidfd, *fd, rustix::process::PidfdGetfdFlags::empty())
        else {
            continue;
        };
        let peer = rustix::net::getpeername(&dup)
            .ok()
            .flatten()
            .and_then(|a| SocketAddr::try_from(a).ok());
        if peer.is_some_and(|p| peers.contains(&p)) {
            found.push((*ino, dup));
        }
    }
    if found.len() == 1 {
        found.pop().map(|(_, fd)| Socket(Arc::new(fd)))
    } else {
        tracing::debug!(
            candidates = found.len(),
            "could not identify the MySQL socket; TCP_NODELAY stays off"
        );
        None
    }
}

/// A duplicate of the connection's descriptor (same socket, so options and shutdown act
/// on the crate's connection).
#[derive(Clone, Debug)]
pub(super) struct Socket(Arc<OwnedFd>);

impl Socket {
    pub(super) fn set_nodelay(&self) {
        if let Err(e) = rustix::net::sockopt::set_tcp_nodelay(&*self.0, true) {
            tracing::debug!(error = %e, "setting TCP_NODELAY on the MySQL connection failed");
        }
    }

    /// Bounds a blocked read: a server that stops answering without closing the
    /// connection (a network partition) makes the read fail after `timeout`, and TCP
    /// keepalive probes (idle 10 s, every 5 s, 3 lost) and a 30 s limit on unacknowledged
    /// writes end a connection whose peer is gone even while nothing is read. See
    /// [`dead_after`].
    pub(super) fn bound_reads(&self, timeout: std::time::Duration) {
        use rustix::net::sockopt;
        let fd = &*self.0;
        let r = sockopt::set_socket_timeout(fd, rustix::net::sockopt::Timeout::Recv, Some(timeout))
            .and_then(|()| sockopt::set_socket_keepalive(fd, true))
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
        let _ = rustix::net::shutdown(&*self.0, rustix::net::Shutdown::Both);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_new_connection_to_the_peer_and_shuts_it_down() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let before = snapshot();
        let mut client = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let (_server, _) = listener.accept().expect("accept");
        let sock = find_new(&before, "127.0.0.1", port).expect("found");
        sock.set_nodelay();
        assert!(client.nodelay().expect("nodelay"));
        sock.shutdown();
        let mut buf = [0u8; 1];
        let n = std::io::Read::read(&mut client, &mut buf).expect("read after shutdown");
        assert_eq!(n, 0, "a shut-down socket reads end-of-file");
    }

    #[test]
    fn a_connection_to_another_peer_is_not_taken() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let before = snapshot();
        let _client = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        assert!(find_new(&before, "127.0.0.1", port.wrapping_add(1).max(1)).is_none());
    }
}
