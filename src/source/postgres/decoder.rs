//! Turning pgoutput messages into change events: relations, transactions, rows.
//!
//! Owns: the relation cache (schema, filter projection, decoding types, key), the open
//! transaction (commit LSN, ordinal, xid, commit time), routing messages of stream blocks
//! to the spill files and replaying them on Stream Commit, building row images, and the
//! idle advance. Does not own: the connection or status updates (`mod.rs`), the wire format
//! (`pgoutput.rs`), value decoding (`types.rs`). The rules are in the module doc of
//! `mod.rs`.

use super::pgoutput::{self, Cell, LogicalMessage, OldKind, Tuple};
use super::spill::SpillStore;
use super::types::{self, PgType, TypeCache};
use super::{checkpointed_lsn, setup, Out, PgError};
use crate::config::PostgresSourceConfig;
use crate::event::{ChangeEvent, Op, Row, SourceInfo, TableSchema};
use crate::filter::Filter;
use crate::position::{Lsn, PgPosition, Position};
use crate::source::SourceMessage;
use crate::value::Value;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// What the source knows about one relation (one schema version).
struct RelInfo {
    /// `schema.table`, for messages.
    qualified: String,
    /// `None` when the table filter drops it.
    schema: Option<Arc<TableSchema>>,
    /// Column count announced by the Relation message.
    ncols: usize,
    /// Indices of kept columns in relation order (ascending).
    keep: Vec<usize>,
    /// Decoding type of each kept column.
    types: Vec<PgType>,
    /// Replica identity flag of each relation column (for `K` old tuples).
    identity: Vec<bool>,
}

/// The transaction being delivered.
struct Txn {
    xid: u32,
    commit_lsn: Lsn,
    commit_ts_ms: i64,
    /// Row change messages seen so far (filtered ones included).
    ordinal: u64,
}

/// Turns pgoutput messages into events. Separate from the connection so it can be driven
/// by tests and by spill replay.
pub(super) struct Decoder<'a> {
    cfg: &'a PostgresSourceConfig,
    info: Arc<SourceInfo>,
    filter: Arc<Filter>,
    client: tokio_postgres::Client,
    types: TypeCache,
    relations: HashMap<u32, RelInfo>,
    txn: Option<Txn>,
    /// Top-level xid of the stream block being received (between Stream Start and Stop).
    stream: Option<u32>,
    spill: SpillStore,
    resume: Option<PgPosition>,
    /// LSN of the last Boundary sent.
    last_boundary: Option<Lsn>,
    next_idle_advance: Instant,
    status_interval: Duration,
}

impl<'a> Decoder<'a> {
    pub(super) fn new(
        cfg: &'a PostgresSourceConfig,
        info: Arc<SourceInfo>,
        filter: Arc<Filter>,
        client: tokio_postgres::Client,
        resume: Option<PgPosition>,
        spill_dir: PathBuf,
    ) -> Self {
        Decoder {
            cfg,
            info,
            filter,
            client,
            types: TypeCache::new(),
            relations: HashMap::new(),
            txn: None,
            stream: None,
            spill: SpillStore::new(spill_dir),
            resume,
            last_boundary: None,
            next_idle_advance: Instant::now(),
            status_interval: cfg.status_interval,
        }
    }

    /// One XLogData payload.
    pub(super) async fn handle(
        &mut self,
        data: &[u8],
        wal: Lsn,
        out: &mut Out<'_>,
    ) -> Result<(), PgError> {
        let decode = |source| PgError::Decode { lsn: wal, source };
        let msg = pgoutput::parse(data, self.stream.is_some()).map_err(decode)?;
        match msg {
            LogicalMessage::StreamStart { xid, first_segment } => {
                if self.stream.is_some() || self.txn.is_some() {
                    return Err(PgError::Protocol {
                        lsn: wal,
                        problem: "Stream Start inside a transaction or stream",
                    });
                }
                self.spill.stream_start(xid, first_segment);
                self.stream = Some(xid);
            }
            LogicalMessage::StreamStop => self.stream = None,
            LogicalMessage::StreamAbort { xid, subxid } => {
                tracing::debug!(xid, subxid, "streamed transaction aborted");
                self.spill.abort(xid, subxid)?;
            }
            LogicalMessage::StreamCommit {
                xid,
                commit_lsn,
                end_lsn,
                timestamp,
                ..
            } => {
                if self.stream.is_some() || self.txn.is_some() {
                    return Err(PgError::Protocol {
                        lsn: wal,
                        problem: "Stream Commit inside a transaction or stream",
                    });
                }
                self.replay_streamed(xid, Lsn(commit_lsn), Lsn(end_lsn), timestamp, out)
                    .await?;
            }
            m => match self.stream {
                Some(top) => {
                    let sub = m.stream_xid().unwrap_or(top);
                    self.spill.append(top, sub, data)?;
                }
                None => self.apply(m, wal, out).await?,
            },
        }
        Ok(())
    }

    /// Stream Commit: the spilled messages, decoded as one transaction.
    async fn replay_streamed(
        &mut self,
        xid: u32,
        commit_lsn: Lsn,
        end_lsn: Lsn,
        timestamp: i64,
        out: &mut Out<'_>,
    ) -> Result<(), PgError> {
        self.txn = Some(Txn {
            xid,
            commit_lsn,
            commit_ts_ms: pgoutput::pg_timestamp_to_unix_ms(timestamp),
            ordinal: 0,
        });
        if let Some(mut reader) = self.spill.take(xid)? {
            tracing::debug!(xid, commit_lsn = %commit_lsn, "replaying streamed transaction");
            while let Some(m) = reader.next_message()? {
                let msg = pgoutput::parse(m, true).map_err(|source| PgError::Decode {
                    lsn: commit_lsn,
                    source,
                })?;
                self.apply(msg, commit_lsn, out).await?;
            }
        }
        self.txn = None;
        self.boundary(end_lsn, out).await
    }

    async fn boundary(&mut self, end_lsn: Lsn, out: &mut Out<'_>) -> Result<(), PgError> {
        let pos = PgPosition::checkpoint(end_lsn);
        if self.resume.is_some_and(|r| pos <= r) {
            return Ok(());
        }
        out.send(SourceMessage::Boundary(Position::Postgres(pos)))
            .await?;
        self.last_boundary = Some(end_lsn);
        Ok(())
    }

    /// Idle advance: see the module doc.
    pub(super) async fn on_keepalive(
        &mut self,
        wal_end: Lsn,
        out: &mut Out<'_>,
    ) -> Result<(), PgError> {
        if self.txn.is_some() || self.stream.is_some() || !self.spill.is_empty() {
            return Ok(());
        }
        let now = Instant::now();
        if now < self.next_idle_advance {
            return Ok(());
        }
        if self.last_boundary.is_some_and(|b| wal_end <= b)
            || self.resume.is_some_and(|r| wal_end <= r.lsn)
        {
            return Ok(());
        }
        if let Some(sent) = self.last_boundary {
            // Something sent is not stored yet: it is in flight.
            if checkpointed_lsn(out.ctx) < sent {
                return Ok(());
            }
        }
        tracing::debug!(lsn = %wal_end, "idle: advancing the checkpoint");
        self.next_idle_advance = now + self.status_interval;
        self.boundary(wal_end, out).await
    }

    fn txn_mut(&mut self, lsn: Lsn) -> Result<&mut Txn, PgError> {
        self.txn.as_mut().ok_or(PgError::Protocol {
            lsn,
            problem: "row change outside a transaction",
        })
    }

    /// Applies one message outside a stream block (or replayed from a spill file).
    async fn apply(
        &mut self,
        msg: LogicalMessage<'_>,
        wal: Lsn,
        out: &mut Out<'_>,
    ) -> Result<(), PgError> {
        match msg {
            LogicalMessage::Begin {
                final_lsn,
                timestamp,
                xid,
            } => {
                if self.txn.is_some() {
                    return Err(PgError::Protocol {
                        lsn: wal,
                        problem: "Begin inside a transaction",
                    });
                }
                self.txn = Some(Txn {
                    xid,
                    commit_lsn: Lsn(final_lsn),
                    commit_ts_ms: pgoutput::pg_timestamp_to_unix_ms(timestamp),
                    ordinal: 0,
                });
            }
            LogicalMessage::Commit { end_lsn, .. } => {
                if self.txn.take().is_none() {
                    return Err(PgError::Protocol {
                        lsn: wal,
                        problem: "Commit without Begin",
                    });
                }
                self.boundary(Lsn(end_lsn), out).await?;
            }
            LogicalMessage::Relation(r) => self.relation(r).await?,
            LogicalMessage::Insert { relation, new, .. } => {
                let Some((pos, rel)) = self.change(relation, wal)? else {
                    return Ok(());
                };
                let after = row(rel, &new, Image::New, pos.lsn)?;
                self.emit(Op::Create, relation, None, Some(after), pos, out)
                    .await?;
            }
            LogicalMessage::Update {
                relation, old, new, ..
            } => {
                let Some((pos, rel)) = self.change(relation, wal)? else {
                    return Ok(());
                };
                let before = match &old {
                    Some((k, t)) => Some(row(rel, t, Image::Old(*k), pos.lsn)?),
                    None => None,
                };
                let mut after = row(rel, &new, Image::New, pos.lsn)?;
                if let (Some((OldKind::Full, _)), Some(b)) = (&old, &before) {
                    // Unchanged TOAST values: the full old row has them.
                    for (a, b) in after.iter_mut().zip(b) {
                        if a.is_none() {
                            a.clone_from(b);
                        }
                    }
                }
                self.emit(Op::Update, relation, before, Some(after), pos, out)
                    .await?;
            }
            LogicalMessage::Delete {
                relation,
                old: (k, t),
                ..
            } => {
                let Some((pos, rel)) = self.change(relation, wal)? else {
                    return Ok(());
                };
                let before = row(rel, &t, Image::Old(k), pos.lsn)?;
                self.emit(Op::Delete, relation, Some(before), None, pos, out)
                    .await?;
            }
            LogicalMessage::Truncate { relations, .. } => {
                for oid in relations {
                    let Some((pos, _)) = self.change(oid, wal)? else {
                        continue;
                    };
                    self.emit(Op::Truncate, oid, None, None, pos, out).await?;
                }
            }
            LogicalMessage::Type {
                oid,
                namespace,
                name,
                ..
            } => {
                tracing::debug!(oid, namespace, name, "type message");
            }
            LogicalMessage::Origin { name, .. } => tracing::trace!(origin = name, "origin message"),
            LogicalMessage::Message { prefix, .. } => {
                tracing::trace!(prefix, "logical decoding message")
            }
            LogicalMessage::StreamStart { .. }
            | LogicalMessage::StreamStop
            | LogicalMessage::StreamCommit { .. }
            | LogicalMessage::StreamAbort { .. } => {
                return Err(PgError::Protocol {
                    lsn: wal,
                    problem: "stream control message inside a spilled transaction",
                })
            }
        }
        Ok(())
    }

    /// Counts a row change and returns its position and relation when it is to be emitted
    /// (selected table, after the resume point).
    fn change(&mut self, oid: u32, wal: Lsn) -> Result<Option<(PgPosition, &RelInfo)>, PgError> {
        let resume = self.resume;
        let txn = self.txn_mut(wal)?;
        txn.ordinal += 1;
        let pos = PgPosition {
            lsn: txn.commit_lsn,
            ordinal: txn.ordinal,
        };
        let rel = self
            .relations
            .get(&oid)
            .ok_or(PgError::UnknownRelation { oid, lsn: wal })?;
        if rel.schema.is_none() || resume.is_some_and(|r| pos <= r) {
            return Ok(None);
        }
        Ok(Some((pos, rel)))
    }

    /// The schema a change of `oid` is emitted with (present when `change` said so).
    fn table(&self, oid: u32) -> Option<Arc<TableSchema>> {
        self.relations.get(&oid).and_then(|r| r.schema.clone())
    }

    async fn emit(
        &self,
        op: Op,
        oid: u32,
        before: Option<Row>,
        after: Option<Row>,
        pos: PgPosition,
        out: &mut Out<'_>,
    ) -> Result<(), PgError> {
        let (Some(txn), Some(table)) = (&self.txn, self.table(oid)) else {
            return Ok(());
        };
        let event = ChangeEvent {
            op,
            table,
            before,
            after,
            position: Position::Postgres(pos),
            txid: Some(u64::from(txn.xid)),
            commit_ts_ms: Some(txn.commit_ts_ms),
        };
        out.send(SourceMessage::Change(event)).await
    }

    /// A Relation message: (re)builds the relation's schema, filter and decoding types. A
    /// partition (a publication without `publish_via_partition_root`) is named, filtered
    /// and emitted as its partitioned root table.
    async fn relation(&mut self, r: pgoutput::Relation<'_>) -> Result<(), PgError> {
        let root = super::publication::partition_root(&self.client, r.oid).await?;
        let (namespace, name) = match &root {
            Some((s, t)) => (s.as_str(), t.as_str()),
            None => (r.namespace, r.name),
        };
        let qualified = format!("{namespace}.{name}");
        let ncols = r.columns.len();
        let identity: Vec<bool> = r.columns.iter().map(|c| c.is_key()).collect();
        if !self.filter().table_selected(namespace, name) {
            tracing::debug!(table = %qualified, oid = r.oid, "relation not selected");
            self.relations.insert(
                r.oid,
                RelInfo {
                    qualified,
                    schema: None,
                    ncols,
                    keep: Vec::new(),
                    types: Vec::new(),
                    identity,
                },
            );
            return Ok(());
        }
        let oids: Vec<u32> = r.columns.iter().map(|c| c.type_oid).collect();
        self.types
            .resolve(&self.client, &oids)
            .await
            .map_err(|source| PgError::Types {
                table: qualified.clone(),
                source,
            })?;
        let names: Vec<&str> = r.columns.iter().map(|c| c.name).collect();
        let pk = setup::primary_key(&self.client, r.oid).await?;
        let pk_idx: Option<Vec<usize>> = pk
            .iter()
            .map(|k| names.iter().position(|n| n == k))
            .collect();
        let key = event_key(pk_idx, r.replica_identity, &identity);
        for stale in self.filter().stale_columns(namespace, name, &names) {
            tracing::warn!(table = %qualified, problem = %stale, "column filter no longer matches the table (after a schema change): it does nothing until fixed");
        }
        let projection = self
            .filter()
            .project(namespace, name, &names, &key)
            .map_err(PgError::Filter)?;
        let types = projection
            .keep
            .iter()
            .map(|&i| self.types.get(oids[i]))
            .collect();
        let schema = TableSchema {
            source: self.info.clone(),
            db: self.cfg.database.clone(),
            schema: namespace.to_owned(),
            name: name.to_owned(),
            columns: projection
                .keep
                .iter()
                .map(|&i| names[i].to_owned())
                .collect(),
            key: projection.key.clone(),
            encoded: Default::default(),
        };
        tracing::debug!(table = %qualified, oid = r.oid, columns = ncols, kept = projection.keep.len(), key = ?schema.key, "relation");
        self.relations.insert(
            r.oid,
            RelInfo {
                qualified,
                schema: Some(Arc::new(schema)),
                ncols,
                keep: projection.keep,
                types,
                identity,
            },
        );
        Ok(())
    }

    fn filter(&self) -> &Filter {
        &self.filter
    }
}

/// The key columns events carry (indices into the relation's columns): the primary key;
/// else the replica identity index (REPLICA IDENTITY USING INDEX, the columns pgoutput
/// flags); else none (`key` is `null`). REPLICA IDENTITY FULL flags every column, which is
/// no key: an update would be keyed by its new row, not the row it changes. The initial and
/// on-demand backfills use the same rule (`backfill/postgres.rs`).
fn event_key(pk: Option<Vec<usize>>, replica_identity: u8, flagged: &[bool]) -> Vec<usize> {
    match pk {
        Some(k) if !k.is_empty() => k,
        _ if replica_identity == b'i' => (0..flagged.len()).filter(|&i| flagged[i]).collect(),
        _ => Vec::new(),
    }
}

/// Which image a tuple is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Image {
    New,
    Old(OldKind),
}

/// Decodes the kept columns of a tuple into a row.
fn row(rel: &RelInfo, tuple: &Tuple<'_>, image: Image, lsn: Lsn) -> Result<Row, PgError> {
    if tuple.len() != rel.ncols {
        return Err(PgError::ColumnCount {
            table: rel.qualified.clone(),
            got: tuple.len(),
            expected: rel.ncols,
            lsn,
        });
    }
    let key_only = image == Image::Old(OldKind::Key);
    let mut out = Vec::with_capacity(rel.keep.len());
    let mut k = 0;
    for (i, cell) in tuple.cells().enumerate() {
        if rel.keep.get(k) != Some(&i) {
            continue;
        }
        let ty = &rel.types[k];
        k += 1;
        let v = match cell {
            // In a `K` tuple the non-identity columns are sent as NULL: they are absent.
            Cell::Null if key_only && !rel.identity.get(i).copied().unwrap_or(false) => None,
            Cell::Null => Some(Value::Null),
            Cell::Unchanged => None,
            Cell::Text(t) => Some(types::decode_text(ty, t).map_err(|source| {
                PgError::Value {
                    table: rel.qualified.clone(),
                    column: rel
                        .schema
                        .as_ref()
                        .and_then(|s| s.columns.get(k - 1))
                        .cloned()
                        .unwrap_or_default(),
                    lsn,
                    source,
                }
            })?),
            Cell::Binary(_) => return Err(binary_err(rel, k - 1)),
        };
        out.push(v);
    }
    Ok(out)
}

fn binary_err(rel: &RelInfo, kept: usize) -> PgError {
    let column = rel
        .schema
        .as_ref()
        .and_then(|s| s.columns.get(kept))
        .cloned()
        .unwrap_or_default();
    PgError::Binary {
        table: rel.qualified.clone(),
        column,
    }
}

#[cfg(test)]
mod tests {
    use super::super::pgoutput::{self, build};
    use super::*;
    use crate::value::Value;

    /// A decoder without a server: only relations inserted by hand (no SQL look-ups).
    fn rel_info(columns: &[&str], identity: &[bool], keep: Vec<usize>, key: Vec<usize>) -> RelInfo {
        let info = Arc::new(SourceInfo {
            connector: crate::event::Connector::Postgres,
            name: "app".into(),
        });
        RelInfo {
            qualified: "public.t".into(),
            schema: Some(Arc::new(TableSchema {
                source: info,
                db: "d".into(),
                schema: "public".into(),
                name: "t".into(),
                columns: keep.iter().map(|&i| columns[i].to_owned()).collect(),
                key,
                encoded: Default::default(),
            })),
            ncols: columns.len(),
            types: keep.iter().map(|_| PgType::Other).collect(),
            keep,
            identity: identity.to_vec(),
        }
    }

    fn tuple_of(frame: &[u8]) -> Vec<Row> {
        let rel = rel_info(
            &["id", "secret", "doc"],
            &[true, false, false],
            vec![0, 2],
            vec![0],
        );
        match pgoutput::parse(frame, false).expect("frame") {
            LogicalMessage::Update { old, new, .. } => {
                let mut v = Vec::new();
                if let Some((k, t)) = old {
                    v.push(row(&rel, &t, Image::Old(k), Lsn(1)).expect("old row"));
                }
                v.push(row(&rel, &new, Image::New, Lsn(1)).expect("new row"));
                v
            }
            LogicalMessage::Delete { old: (k, t), .. } => {
                vec![row(&rel, &t, Image::Old(k), Lsn(1)).expect("row")]
            }
            LogicalMessage::Insert { new, .. } => {
                vec![row(&rel, &new, Image::New, Lsn(1)).expect("row")]
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    fn text(s: &str) -> Option<Value> {
        Some(Value::Text(s.into()))
    }

    #[test]
    fn rows_project_and_keep_toast_absent() {
        let f = build::insert(None, 1, &[Some(Some("1")), Some(Some("pw")), Some(None)]);
        assert_eq!(tuple_of(&f), vec![vec![text("1"), None]]);
        let f = build::insert(None, 1, &[Some(Some("1")), None, None]);
        assert_eq!(tuple_of(&f), vec![vec![text("1"), Some(Value::Null)]]);
    }

    #[test]
    fn key_old_tuple_leaves_other_columns_absent() {
        let f = build::update(
            None,
            1,
            Some((b'K', &[Some(Some("1")), None, None])),
            &[Some(Some("2")), Some(Some("pw")), Some(Some("d"))],
        );
        assert_eq!(
            tuple_of(&f),
            vec![vec![text("1"), None], vec![text("2"), text("d")]]
        );
        let f = build::delete(None, 1, b'O', &[Some(Some("1")), None, None]);
        assert_eq!(tuple_of(&f), vec![vec![text("1"), Some(Value::Null)]]);
    }

    #[test]
    fn keys_primary_then_identity_index_else_none() {
        assert_eq!(event_key(Some(vec![1]), b'f', &[true, true]), vec![1]);
        assert_eq!(event_key(Some(vec![]), b'i', &[false, true]), vec![1]);
        assert_eq!(event_key(None, b'f', &[true, true]), Vec::<usize>::new());
        assert_eq!(event_key(None, b'd', &[false, false]), Vec::<usize>::new());
        assert_eq!(event_key(None, b'n', &[false, false]), Vec::<usize>::new());
    }

    #[test]
    fn column_count_mismatch_is_an_error() {
        let rel = rel_info(
            &["id", "secret", "doc"],
            &[true, false, false],
            vec![0, 2],
            vec![0],
        );
        let f = build::insert(None, 1, &[Some(Some("1"))]);
        let LogicalMessage::Insert { new, .. } = pgoutput::parse(&f, false).expect("frame") else {
            panic!("insert")
        };
        assert!(matches!(
            row(&rel, &new, Image::New, Lsn(1)),
            Err(PgError::ColumnCount {
                got: 1,
                expected: 3,
                ..
            })
        ));
    }
}
