//! Where a source's database is reached right now: the config's `host` and `port`, or the
//! local end of the source's SSH tunnel ([`crate::tunnel`]) with the database's own host
//! name, which TLS verifies and sends as SNI.
//!
//! Owns this one value and nothing else. The config stays what the file says; whoever
//! opens a source's tunnel (the service, a command) computes the [`Endpoint`] and hands it
//! to the connect functions of the engines, backfill, query mode and the ops commands.

/// The address a connection goes to, and the name its certificate must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// A host name or address (PostgreSQL also takes a unix socket directory, `/...`).
    pub host: String,
    pub port: u16,
    /// The name TLS verifies and sends as SNI when `host` is not the database's own name
    /// (a tunnel's local end); `None`: `host`.
    pub tls_server_name: Option<String>,
}

impl Endpoint {
    /// `host:port` as configured: no tunnel.
    pub fn direct(host: &str, port: u16) -> Endpoint {
        Endpoint {
            host: host.to_owned(),
            port,
            tls_server_name: None,
        }
    }

    /// `127.0.0.1:<local_port>`, a tunnel's local end forwarding to the database named
    /// `server_name`, which TLS keeps verifying.
    pub fn tunnel(local_port: u16, server_name: &str) -> Endpoint {
        Endpoint {
            host: "127.0.0.1".to_owned(),
            port: local_port,
            tls_server_name: Some(server_name.to_owned()),
        }
    }

    /// The host name TLS verifies and sends as SNI.
    pub fn tls_host(&self) -> &str {
        self.tls_server_name.as_deref().unwrap_or(&self.host)
    }

    /// `host:port`, for connecting and for messages.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tunnel_keeps_the_database_name_for_tls() {
        let direct = Endpoint::direct("db.internal", 5432);
        assert_eq!(
            (direct.addr(), direct.tls_host()),
            ("db.internal:5432".to_owned(), "db.internal")
        );
        let t = Endpoint::tunnel(40000, "db.internal");
        assert_eq!(
            (t.addr(), t.tls_host()),
            ("127.0.0.1:40000".to_owned(), "db.internal")
        );
    }
}
