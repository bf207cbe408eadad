//! Free TCP ports for servers the tests start.
//!
//! A port probed with `bind(127.0.0.1:0)` comes from the kernel's ephemeral range, which is
//! also where every outgoing connection and every other `:0` listener (parallel tests)
//! takes its port: between the probe and the server's own bind another socket can get it
//! ("Address already in use"). Ports are therefore drawn below the
//! ephemeral range (10000–32767), spread by process id, a counter and the clock, and
//! checked free by binding them once.

use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

pub fn free_port() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let seed = std::process::id()
        .wrapping_mul(2_654_435_761)
        .wrapping_add(nanos);
    for _ in 0..2000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 10_000 + (seed.wrapping_add(n.wrapping_mul(7_919)) % 22_768) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port below the ephemeral range");
}
