//! Support for the sink tests: change events built directly (no database) and a private
//! `nats-server -js`.
#![allow(dead_code)]

use logtide::event::{ChangeEvent, Connector, Op, SourceInfo, TableSchema};
use logtide::position::{Lsn, PgPosition, Position};
use logtide::value::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

/// A `public.<table>` schema with columns `id`, `email`, `name`, `kind` of source `app`.
pub fn table(name: &str) -> Arc<TableSchema> {
    Arc::new(TableSchema {
        source: Arc::new(SourceInfo {
            connector: Connector::Postgres,
            name: "app".into(),
        }),
        db: "shop".into(),
        schema: "public".into(),
        name: name.into(),
        columns: vec!["id".into(), "email".into(), "name".into(), "kind".into()],
        key: vec![0],
        encoded: Default::default(),
    })
}

/// An insert of row `id` into `t` at position (lsn, ordinal).
pub fn insert(t: &Arc<TableSchema>, lsn: u64, ordinal: u64, id: i64) -> ChangeEvent {
    ChangeEvent {
        op: Op::Create,
        table: t.clone(),
        before: None,
        after: Some(vec![
            Some(Value::Int(id)),
            Some(Value::Text(format!("u{id}@example.com"))),
            Some(Value::Text(format!("User {id}"))),
            Some(Value::Text("Signed Up".into())),
        ]),
        position: Position::Postgres(PgPosition {
            lsn: Lsn(lsn),
            ordinal,
        }),
        txid: Some(lsn),
        commit_ts_ms: Some(1_700_000_000_000),
    }
}

/// `n` inserts into `public.users`, one per transaction, ids `first..first+n`.
pub fn events(first: i64, n: usize) -> Vec<ChangeEvent> {
    let t = table("users");
    (0..n as i64)
        .map(|i| insert(&t, 0x1000 + (first + i) as u64 * 16, 1, first + i))
        .collect()
}

/// The cursors of `events`.
pub fn cursors(events: &[ChangeEvent]) -> Vec<String> {
    events.iter().map(|e| e.position.cursor()).collect()
}

/// The `source.cursor` of received event JSON.
pub fn json_cursors(items: &[serde_json::Value]) -> Vec<String> {
    items
        .iter()
        .map(|j| {
            j["source"]["cursor"]
                .as_str()
                .expect("event has source.cursor")
                .to_owned()
        })
        .collect()
}

/// First occurrences, in order (what a consumer de-duplicating by cursor sees).
pub fn dedup(cursors: &[String]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    cursors
        .iter()
        .filter(|c| seen.insert((*c).clone()))
        .cloned()
        .collect()
}

/// A private `nats-server -js` on a free port with its own store directory.
pub struct NatsServer {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl NatsServer {
    pub async fn start(dir: &Path) -> NatsServer {
        // Below the ephemeral range (see `common::port`): the server binds it later, and
        // again on `restart`, when an outgoing connection could hold an ephemeral port.
        let port = crate::common::port::free_port();
        let mut s = NatsServer {
            port,
            dir: dir.to_owned(),
            child: None,
        };
        s.restart().await;
        s
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The process id of the running server.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts the server (again, same port and store) and waits until it accepts TCP.
    pub async fn restart(&mut self) {
        let bin = if Path::new("/usr/sbin/nats-server").exists() {
            "/usr/sbin/nats-server"
        } else {
            "nats-server"
        };
        let child = Command::new(bin)
            .args(["-js", "-a", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .arg("-sd")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server (install it: apt-get install nats-server)");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "nats-server did not start on port {}",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills the server (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}
