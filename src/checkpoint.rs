//! The checkpoint store: the position after the last accepted batch, per source, and
//! backfill progress, in an embedded `sled` database.
//!
//! Owns durability of positions, nothing else. Rules:
//! * `save` is called only with transaction-boundary positions, after every sink accepted
//!   the events before it; it is flushed to disk before it returns, so the caller may then
//!   confirm the position upstream (PostgreSQL `flush_lsn`).
//! * A position never moves backwards through `save`: a regression is ignored (and logged);
//!   only the explicit operator actions `reset` and `force` may move it.
//!
//! sled 0.34 is the last stable release; it is kept behind this small interface so it can be
//! swapped (protocol-notes: durable only after flush, reports of corruption after unclean
//! shutdown — the kill -9 tests exercise restart after an unclean stop).

use crate::position::Position;
use serde::{de::DeserializeOwned, Serialize};
use std::path::{Path, PathBuf};

/// A checkpoint store failure.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot open checkpoint store at {path} (is another logtide using it? is the directory writable?)")]
    Open {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error("checkpoint store i/o failed")]
    Io(#[from] sled::Error),
    #[error("checkpoint store holds an unreadable record under {key:?}; `logtide reset` the source or restore the state directory")]
    Corrupt {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot encode checkpoint record")]
    Encode(#[source] serde_json::Error),
}

/// Durable positions and backfill progress.
#[derive(Clone)]
pub struct CheckpointStore {
    db: sled::Db,
}

fn pos_key(source: &str) -> String {
    format!("pos/{source}")
}

fn backfill_key(source: &str, table: &str) -> String {
    format!("backfill/{source}/{table}")
}

/// How long [`CheckpointStore::open`] waits for a directory lock held by someone else.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

impl CheckpointStore {
    /// Opens (creating if needed) the store in directory `path`.
    ///
    /// The directory is locked by one process at a time. A lock still held by a process
    /// that is exiting (or by a store handle of this process whose background threads have
    /// not let go yet) is waited for up to [`LOCK_WAIT`]; after that the error says another
    /// logtide may be using the directory.
    /// True when opening failed because another process (a running `logtide run`) holds the
    /// store's lock.
    pub fn is_held_by_other(e: &CheckpointError) -> bool {
        matches!(e, CheckpointError::Open { source: sled::Error::Io(io), .. }
            if io.to_string().contains("could not acquire lock"))
    }

    pub fn open(path: &Path) -> Result<Self, CheckpointError> {
        let started = std::time::Instant::now();
        loop {
            let r = sled::Config::new()
                .path(path)
                .mode(sled::Mode::LowSpace)
                .cache_capacity(8 * 1024 * 1024)
                .open();
            match r {
                Ok(db) => return Ok(CheckpointStore { db }),
                // sled reports a held lock as a plain io error with this text.
                Err(sled::Error::Io(e))
                    if e.to_string().contains("could not acquire lock")
                        && started.elapsed() < LOCK_WAIT =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(source) => {
                    return Err(CheckpointError::Open {
                        path: path.to_owned(),
                        source,
                    })
                }
            }
        }
    }

    /// The stored position of `source`, if any.
    pub fn load(&self, source: &str) -> Result<Option<Position>, CheckpointError> {
        self.get(&pos_key(source))
    }

    /// Stores `pos` for `source` durably unless it is older than the stored one. Returns
    /// whether it was stored.
    pub async fn save(&self, source: &str, pos: &Position) -> Result<bool, CheckpointError> {
        if let Some(current) = self.load(source)? {
            if matches!(pos.partial_cmp(&current), Some(std::cmp::Ordering::Less)) {
                debug_assert!(
                    false,
                    "checkpoint regression for {source}: {pos} < {current}"
                );
                tracing::warn!(source, new = %pos, stored = %current, "ignoring checkpoint that would move backwards");
                return Ok(false);
            }
            if current == *pos {
                return Ok(true);
            }
        }
        self.put(&pos_key(source), pos).await?;
        Ok(true)
    }

    /// Every source with a stored position, and the position.
    pub fn positions(&self) -> Result<Vec<(String, Position)>, CheckpointError> {
        Ok(self
            .records::<Position>("pos/")?
            .into_iter()
            .map(|(k, p)| (k.trim_start_matches("pos/").to_owned(), p))
            .collect())
    }

    /// Sets the position of `source` to `pos` even if it moves backwards (operator replay).
    pub async fn force(&self, source: &str, pos: &Position) -> Result<(), CheckpointError> {
        self.put(&pos_key(source), pos).await
    }

    /// Forgets everything stored for `source` (position and backfill progress).
    pub async fn reset(&self, source: &str) -> Result<(), CheckpointError> {
        self.db.remove(pos_key(source))?;
        for prefix in [format!("backfill/{source}/"), format!("schema/{source}/")] {
            for item in self.db.scan_prefix(prefix.as_bytes()) {
                let (k, _) = item?;
                self.db.remove(k)?;
            }
        }
        self.db.flush_async().await?;
        Ok(())
    }

    /// Backfill progress of one table (opaque to the store).
    pub fn load_backfill<T: DeserializeOwned>(
        &self,
        source: &str,
        table: &str,
    ) -> Result<Option<T>, CheckpointError> {
        self.get(&backfill_key(source, table))
    }

    /// Stores backfill progress of one table durably.
    pub async fn save_backfill<T: Serialize>(
        &self,
        source: &str,
        table: &str,
        progress: &T,
    ) -> Result<(), CheckpointError> {
        self.put(&backfill_key(source, table), progress).await
    }

    /// Stores a source's own record (e.g. the MySQL schema history, keys `schema/…`)
    /// without flushing: it becomes durable with the next [`CheckpointStore::save`] (which
    /// flushes the whole store), so a record written before the checkpoint that depends on
    /// it is durable no later than that checkpoint.
    pub fn put_record<T: Serialize + ?Sized>(
        &self,
        key: &str,
        v: &T,
    ) -> Result<(), CheckpointError> {
        let bytes = serde_json::to_vec(v).map_err(CheckpointError::Encode)?;
        self.db.insert(key, bytes)?;
        Ok(())
    }

    /// The records under `prefix`, in key order.
    pub fn records<T: DeserializeOwned>(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, T)>, CheckpointError> {
        let mut out = Vec::new();
        for item in self.db.scan_prefix(prefix.as_bytes()) {
            let (k, v) = item?;
            let key = String::from_utf8_lossy(&k).into_owned();
            let val = serde_json::from_slice(&v).map_err(|source| CheckpointError::Corrupt {
                key: key.clone(),
                source,
            })?;
            out.push((key, val));
        }
        Ok(out)
    }

    /// Every stored (key, JSON) pair, for `logtide status` (sources' own records, such as
    /// the schema history, left out).
    pub fn dump(&self) -> Result<Vec<(String, serde_json::Value)>, CheckpointError> {
        let mut out = Vec::new();
        for item in self.db.iter() {
            let (k, v) = item?;
            if k.starts_with(b"schema/") {
                continue;
            }
            let key = String::from_utf8_lossy(&k).into_owned();
            let val = serde_json::from_slice(&v).map_err(|source| CheckpointError::Corrupt {
                key: key.clone(),
                source,
            })?;
            out.push((key, val));
        }
        Ok(out)
    }

    fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, CheckpointError> {
        match self.db.get(key)? {
            None => Ok(None),
            Some(v) => {
                serde_json::from_slice(&v)
                    .map(Some)
                    .map_err(|source| CheckpointError::Corrupt {
                        key: key.to_owned(),
                        source,
                    })
            }
        }
    }

    async fn put<T: Serialize + ?Sized>(&self, key: &str, v: &T) -> Result<(), CheckpointError> {
        let bytes = serde_json::to_vec(v).map_err(CheckpointError::Encode)?;
        self.db.insert(key, bytes)?;
        self.db.flush_async().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_waits_for_a_lock_that_is_being_released() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = CheckpointStore::open(dir.path()).expect("first open");
        let holder = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            drop(first);
        });
        let second = CheckpointStore::open(dir.path());
        holder.join().expect("holder");
        assert!(second.is_ok(), "{:?}", second.err());
    }
    use crate::position::{Lsn, PgPosition};

    fn pg(l: u64) -> Position {
        Position::Postgres(PgPosition::checkpoint(Lsn(l)))
    }

    #[tokio::test]
    async fn saves_loads_and_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let s = CheckpointStore::open(dir.path()).expect("open");
            assert_eq!(s.load("a").expect("load"), None);
            assert!(s.save("a", &pg(10)).await.expect("save"));
            s.save_backfill("a", "public.t", &serde_json::json!({"last": [5]}))
                .await
                .expect("save backfill");
        }
        let s = CheckpointStore::open(dir.path()).expect("reopen");
        assert_eq!(s.load("a").expect("load"), Some(pg(10)));
        let b: Option<serde_json::Value> = s.load_backfill("a", "public.t").expect("load");
        assert_eq!(b, Some(serde_json::json!({"last": [5]})));
        s.reset("a").await.expect("reset");
        assert_eq!(s.load("a").expect("load"), None);
        let b: Option<serde_json::Value> = s.load_backfill("a", "public.t").expect("load");
        assert_eq!(b, None);
    }

    #[tokio::test]
    #[cfg(not(debug_assertions))]
    async fn never_moves_backwards() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = CheckpointStore::open(dir.path()).expect("open");
        s.save("a", &pg(10)).await.expect("save");
        assert!(!s.save("a", &pg(5)).await.expect("save"));
        assert_eq!(s.load("a").expect("load"), Some(pg(10)));
    }

    #[tokio::test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "checkpoint regression")]
    async fn regression_trips_debug_assertion() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = CheckpointStore::open(dir.path()).expect("open");
        s.save("a", &pg(10)).await.expect("save");
        let _ = s.save("a", &pg(5)).await;
    }

    #[tokio::test]
    async fn force_moves_backwards() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = CheckpointStore::open(dir.path()).expect("open");
        s.save("a", &pg(10)).await.expect("save");
        s.force("a", &pg(5)).await.expect("force");
        assert_eq!(s.load("a").expect("load"), Some(pg(5)));
    }
}
