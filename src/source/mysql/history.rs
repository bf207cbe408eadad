//! The schema history: every captured table as it was at the reader's binlog position.
//!
//! Row images carry values, not column names or logical types; the table map carries names
//! only with `binlog_row_metadata=FULL`, and never what MariaDB's JSON (a LONGTEXT with a
//! `json_valid` check), UUID or INET columns are. `information_schema` describes today's
//! table, which is wrong for a row written before a later `ALTER` (a lagging stream, a
//! restart, a replay). So the reader keeps this history: seeded from `information_schema`
//! where nothing older is known, then changed by the DDL of query events at their binlog
//! positions ([`super::schema_ddl::parse_ddl`]: CREATE/DROP/RENAME TABLE, ALTER TABLE ADD/DROP/CHANGE/MODIFY/
//! RENAME COLUMN, RENAME TO, primary keys, DROP DATABASE). Each change is stored with the
//! checkpoints (key `schema/<source>/<file seq>:<pos>:<n>`, see
//! [`crate::checkpoint::CheckpointStore::put_record`]), so a restart or replay starting at `P`
//! begins with the schema as of `P`. DDL the parser does not understand that names a
//! captured table makes the reader re-read that table from `information_schema` (with a
//! warning), as before this history existed.
//!
//! Owns: the DDL parser and the per-position versions. Not here: reading
//! `information_schema` (`table.rs`), deciding when to read it (the reader).

use super::schema_ddl::{apply, Ddl};
use super::table::SchemaInfo;
use crate::checkpoint::{CheckpointError, CheckpointStore};
use crate::filter::Filter;
use crate::position::MysqlPosition;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;

/// The captured tables as of the reader's position, and where changes are stored.
pub struct History {
    source: String,
    store: Option<CheckpointStore>,
    mariadb: bool,
    /// `None`: known not to exist (information_schema did not describe it).
    tables: HashMap<(String, String), Option<Arc<SchemaInfo>>>,
}

/// Where a change happens: the binlog file's sequence number and the offset from which it
/// holds (the end of a DDL event, the start of the group a seed was read for).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct At {
    pub file_seq: u64,
    pub pos: u64,
}

impl History {
    pub fn new(source: &str, store: Option<CheckpointStore>, mariadb: bool) -> Self {
        History {
            source: source.to_owned(),
            store,
            mariadb,
            tables: HashMap::new(),
        }
    }

    /// Loads the stored changes up to `resume` (the schema as of that position); returns
    /// how many tables are known.
    pub fn load(
        &mut self,
        resume: &MysqlPosition,
        filter: &Filter,
    ) -> Result<usize, CheckpointError> {
        let Some(store) = &self.store else {
            return Ok(0);
        };
        let upto = (resume.file_seq(), resume.pos);
        for (key, rec) in store.records::<Record>(&record_prefix(&self.source))? {
            if key_position(&key).is_none_or(|k| k > upto) {
                continue;
            }
            if filter.table_selected(&rec.db, &rec.table) {
                self.tables
                    .insert((rec.db, rec.table), rec.def.map(Arc::new));
            }
        }
        Ok(self.tables.len())
    }

    /// What the history knows of `db.table`: `None` when nothing (read it from
    /// `information_schema`), `Some(None)` when it does not exist.
    pub fn get(&self, db: &str, table: &str) -> Option<Option<Arc<SchemaInfo>>> {
        self.tables.get(&(db.to_owned(), table.to_owned())).cloned()
    }

    /// Forgets `db.table` (it is read again when needed).
    pub fn forget(&mut self, db: &str, table: &str) {
        self.tables.remove(&(db.to_owned(), table.to_owned()));
    }

    /// Sets `db.table` from `at` on and stores the change (`n`: its index among the changes
    /// at `at`).
    pub fn set(
        &mut self,
        at: At,
        n: usize,
        db: &str,
        table: &str,
        def: Option<Arc<SchemaInfo>>,
    ) -> Result<(), CheckpointError> {
        if let Some(store) = &self.store {
            let rec = Record {
                db: db.to_owned(),
                table: table.to_owned(),
                def: def.as_deref().cloned(),
            };
            store.put_record(&record_key(&self.source, at.file_seq, at.pos, n), &rec)?;
        }
        self.tables.insert((db.to_owned(), table.to_owned()), def);
        Ok(())
    }

    /// Applies a DDL statement read at `at` (`default_db`: the query event's database).
    /// Returns the captured tables it changed in a way not followed here: the caller
    /// warns and re-reads them.
    pub fn apply_ddl(
        &mut self,
        ddl: Ddl,
        default_db: &str,
        at: At,
        filter: &Filter,
    ) -> Result<Vec<(String, String)>, CheckpointError> {
        let full =
            |n: (Option<String>, String)| (n.0.unwrap_or_else(|| default_db.to_owned()), n.1);
        let mut n = 0;
        let mut unknown = Vec::new();
        let mut set = |h: &mut History, db: &str, t: &str, def: Option<Arc<SchemaInfo>>| {
            if !filter.table_selected(db, t) {
                return Ok(());
            }
            n += 1;
            h.set(at, n - 1, db, t, def)
        };
        match ddl {
            Ddl::None => {}
            Ddl::Create { db, table, def } => {
                let (db, table) = full((db, table));
                set(self, &db, &table, Some(Arc::new(def)))?;
            }
            Ddl::CreateLike {
                db,
                table,
                like_db,
                like,
            } => {
                let (db, table) = full((db, table));
                let (ldb, like) = full((like_db, like));
                match self.get(&ldb, &like) {
                    Some(Some(def)) => set(self, &db, &table, Some(def))?,
                    _ if filter.table_selected(&db, &table) => {
                        self.forget(&db, &table);
                        unknown.push((db, table));
                    }
                    _ => {}
                }
            }
            Ddl::Drop(tables) => {
                for t in tables {
                    let (db, table) = full(t);
                    set(self, &db, &table, None)?;
                }
            }
            Ddl::Rename(pairs) => {
                for (from, to) in pairs {
                    let (fdb, ft) = full(from);
                    let (tdb, tt) = full(to);
                    let def = self.get(&fdb, &ft);
                    set(self, &fdb, &ft, None)?;
                    match def {
                        Some(d) => set(self, &tdb, &tt, d)?,
                        None => self.forget(&tdb, &tt),
                    }
                }
            }
            Ddl::Alter {
                db,
                table,
                changes,
                rename,
            } => {
                let (db, table) = full((db, table));
                let applied = match self.get(&db, &table) {
                    Some(Some(def)) => apply(&def, &changes, self.mariadb).map(Arc::new),
                    _ => None,
                };
                let known = self.get(&db, &table).is_some_and(|d| d.is_some());
                match (applied, rename) {
                    (Some(def), None) => set(self, &db, &table, Some(def))?,
                    (Some(def), Some(to)) => {
                        let (tdb, tt) = full(to);
                        set(self, &db, &table, None)?;
                        set(self, &tdb, &tt, Some(def))?;
                    }
                    (None, rename) => {
                        // Not known before (read when needed), or a change that does not fit.
                        self.forget(&db, &table);
                        if let Some(to) = rename {
                            let (tdb, tt) = full(to);
                            self.forget(&tdb, &tt);
                        }
                        if known && filter.table_selected(&db, &table) {
                            unknown.push((db, table));
                        }
                    }
                }
            }
            Ddl::DropDatabase(d) => {
                let gone: Vec<(String, String)> = self
                    .tables
                    .keys()
                    .filter(|(db, _)| *db == d)
                    .cloned()
                    .collect();
                for (db, t) in gone {
                    set(self, &db, &t, None)?;
                }
            }
            Ddl::Unknown(tables) => {
                for t in tables {
                    let (db, table) = full(t);
                    if filter.table_selected(&db, &table) {
                        self.forget(&db, &table);
                        unknown.push((db, table));
                    }
                }
            }
        }
        Ok(unknown)
    }
}

/// One stored change: the table `db.table` is `def` from the key's position on (`None`:
/// dropped).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub db: String,
    pub table: String,
    pub def: Option<SchemaInfo>,
}

/// The store key of the `n`-th change at binlog `file:pos`; keys sort like positions.
pub fn record_key(source: &str, file_seq: u64, pos: u64, n: usize) -> String {
    format!("schema/{source}/{file_seq:012}:{pos:012}:{n:06}")
}

/// The prefix of every record of `source`.
pub fn record_prefix(source: &str) -> String {
    format!("schema/{source}/")
}

/// The (file seq, pos) of a record key, to compare with a resume position.
pub fn key_position(key: &str) -> Option<(u64, u64)> {
    let tail = key.rsplit('/').next()?;
    let mut it = tail.split(':');
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_keys_sort_like_positions() {
        assert_eq!(
            key_position(&record_key("s", 12, 4711, 3)),
            Some((12, 4711))
        );
        assert!(record_key("s", 2, 9, 0) < record_key("s", 10, 1, 0));
    }
}
