//! Decoder for the `pgoutput` logical replication messages (protocol versions 1 and 2).
//!
//! Owns: turning the payload of one XLogData message into a [`LogicalMessage`] that borrows
//! from the input (no allocation on the row path except the column list of a Relation
//! message). Does not own: what the values mean (see `types.rs`) or transactions (see
//! `mod.rs` and `spill.rs`).
//!
//! Format: <https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html>.
//! Bytes from the network never panic here: every read is checked and truncated or unknown
//! input is a [`PgOutputError`]. Inside a streamed transaction (between Stream Start and
//! Stream Stop, protocol 2) the Relation, Type, Insert, Update, Delete, Truncate and Message
//! messages carry the (sub)transaction's xid as a prefix; the caller says whether it is
//! inside a stream.

pub use super::tuple::{Cell, Cells, OldKind, Tuple};

/// Malformed pgoutput input.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PgOutputError {
    #[error("truncated pgoutput {message} message: needed {needed} more bytes at offset {offset}")]
    Truncated {
        message: &'static str,
        offset: usize,
        needed: usize,
    },
    #[error("empty pgoutput message")]
    Empty,
    #[error("unknown pgoutput message tag {0:#04x}")]
    UnknownTag(u8),
    #[error("unexpected byte {found:#04x} in pgoutput {message} message at offset {offset} (expected {expected})")]
    Unexpected {
        message: &'static str,
        offset: usize,
        found: u8,
        expected: &'static str,
    },
    #[error(
        "pgoutput {message} message has a string that is not NUL-terminated at offset {offset}"
    )]
    Unterminated {
        message: &'static str,
        offset: usize,
    },
    #[error("pgoutput {message} message has invalid UTF-8 in a name at offset {offset}")]
    InvalidUtf8 {
        message: &'static str,
        offset: usize,
    },
    #[error("pgoutput {message} message has a negative {what} ({value})")]
    Negative {
        message: &'static str,
        what: &'static str,
        value: i64,
    },
}

/// Checked big-endian reader over one message.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    pub(super) buf: &'a [u8],
    pos: usize,
    pub(super) message: &'static str,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], message: &'static str) -> Self {
        Reader {
            buf,
            pos: 0,
            message,
        }
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or(&[])
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], PgOutputError> {
        let end = self.pos.checked_add(n);
        match end.and_then(|e| self.buf.get(self.pos..e)) {
            Some(s) => {
                self.pos += n;
                Ok(s)
            }
            None => Err(PgOutputError::Truncated {
                message: self.message,
                offset: self.pos,
                needed: n.saturating_sub(self.buf.len().saturating_sub(self.pos)),
            }),
        }
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], PgOutputError> {
        let s = self.bytes(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    pub fn u8(&mut self) -> Result<u8, PgOutputError> {
        Ok(self.array::<1>()?[0])
    }
    pub fn i16(&mut self) -> Result<i16, PgOutputError> {
        Ok(i16::from_be_bytes(self.array()?))
    }
    pub fn u32(&mut self) -> Result<u32, PgOutputError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    pub fn i32(&mut self) -> Result<i32, PgOutputError> {
        Ok(i32::from_be_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> Result<u64, PgOutputError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    pub fn i64(&mut self) -> Result<i64, PgOutputError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    /// A NUL-terminated UTF-8 string.
    pub fn cstr(&mut self) -> Result<&'a str, PgOutputError> {
        let start = self.pos;
        let rest = self.remaining();
        let nul = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(PgOutputError::Unterminated {
                message: self.message,
                offset: start,
            })?;
        let s = std::str::from_utf8(&rest[..nul]).map_err(|_| PgOutputError::InvalidUtf8 {
            message: self.message,
            offset: start,
        })?;
        self.pos += nul + 1;
        Ok(s)
    }

    pub(super) fn unexpected(&self, found: u8, expected: &'static str) -> PgOutputError {
        PgOutputError::Unexpected {
            message: self.message,
            offset: self.pos.saturating_sub(1),
            found,
            expected,
        }
    }
}

/// One column of a Relation message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationColumn<'a> {
    /// Bit 1: part of the replica identity (every column under REPLICA IDENTITY FULL).
    pub flags: u8,
    pub name: &'a str,
    pub type_oid: u32,
    pub type_modifier: i32,
}

impl RelationColumn<'_> {
    pub fn is_key(&self) -> bool {
        self.flags & 1 != 0
    }
}

/// A Relation message: the schema of a table as the following changes encode it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation<'a> {
    pub xid: Option<u32>,
    pub oid: u32,
    pub namespace: &'a str,
    pub name: &'a str,
    /// `d` default, `n` nothing, `f` full, `i` index.
    pub replica_identity: u8,
    pub columns: Vec<RelationColumn<'a>>,
}

/// One decoded pgoutput message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogicalMessage<'a> {
    Begin {
        final_lsn: u64,
        timestamp: i64,
        xid: u32,
    },
    Commit {
        flags: u8,
        commit_lsn: u64,
        end_lsn: u64,
        timestamp: i64,
    },
    Origin {
        commit_lsn: u64,
        name: &'a str,
    },
    Relation(Relation<'a>),
    Type {
        xid: Option<u32>,
        oid: u32,
        namespace: &'a str,
        name: &'a str,
    },
    Insert {
        xid: Option<u32>,
        relation: u32,
        new: Tuple<'a>,
    },
    Update {
        xid: Option<u32>,
        relation: u32,
        old: Option<(OldKind, Tuple<'a>)>,
        new: Tuple<'a>,
    },
    Delete {
        xid: Option<u32>,
        relation: u32,
        old: (OldKind, Tuple<'a>),
    },
    Truncate {
        xid: Option<u32>,
        /// Bit 1 CASCADE, bit 2 RESTART IDENTITY.
        options: u8,
        relations: Vec<u32>,
    },
    Message {
        xid: Option<u32>,
        transactional: bool,
        lsn: u64,
        prefix: &'a str,
        content: &'a [u8],
    },
    StreamStart {
        xid: u32,
        first_segment: bool,
    },
    StreamStop,
    StreamCommit {
        xid: u32,
        flags: u8,
        commit_lsn: u64,
        end_lsn: u64,
        timestamp: i64,
    },
    StreamAbort {
        xid: u32,
        subxid: u32,
    },
}

impl LogicalMessage<'_> {
    /// The xid prefix of a message inside a stream, if any.
    pub fn stream_xid(&self) -> Option<u32> {
        match self {
            LogicalMessage::Relation(r) => r.xid,
            LogicalMessage::Type { xid, .. }
            | LogicalMessage::Insert { xid, .. }
            | LogicalMessage::Update { xid, .. }
            | LogicalMessage::Delete { xid, .. }
            | LogicalMessage::Truncate { xid, .. }
            | LogicalMessage::Message { xid, .. } => *xid,
            _ => None,
        }
    }
}

fn message_name(tag: u8) -> &'static str {
    match tag {
        b'B' => "Begin",
        b'C' => "Commit",
        b'O' => "Origin",
        b'R' => "Relation",
        b'Y' => "Type",
        b'I' => "Insert",
        b'U' => "Update",
        b'D' => "Delete",
        b'T' => "Truncate",
        b'M' => "Message",
        b'S' => "Stream Start",
        b'E' => "Stream Stop",
        b'c' => "Stream Commit",
        b'A' => "Stream Abort",
        _ => "unknown",
    }
}

/// Decodes one pgoutput message. `in_stream`: between Stream Start and Stream Stop, where
/// data messages carry an xid prefix.
pub fn parse(buf: &[u8], in_stream: bool) -> Result<LogicalMessage<'_>, PgOutputError> {
    let tag = *buf.first().ok_or(PgOutputError::Empty)?;
    let mut r = Reader::new(buf, message_name(tag));
    r.u8()?;
    let xid = |r: &mut Reader<'_>| -> Result<Option<u32>, PgOutputError> {
        if in_stream {
            r.u32().map(Some)
        } else {
            Ok(None)
        }
    };
    let msg = match tag {
        b'B' => LogicalMessage::Begin {
            final_lsn: r.u64()?,
            timestamp: r.i64()?,
            xid: r.u32()?,
        },
        b'C' => LogicalMessage::Commit {
            flags: r.u8()?,
            commit_lsn: r.u64()?,
            end_lsn: r.u64()?,
            timestamp: r.i64()?,
        },
        b'O' => LogicalMessage::Origin {
            commit_lsn: r.u64()?,
            name: r.cstr()?,
        },
        b'R' => {
            let xid = xid(&mut r)?;
            let oid = r.u32()?;
            let namespace = r.cstr()?;
            let name = r.cstr()?;
            let replica_identity = r.u8()?;
            let n = r.i16()?;
            if n < 0 {
                return Err(PgOutputError::Negative {
                    message: "Relation",
                    what: "column count",
                    value: n.into(),
                });
            }
            // Each column takes at least 10 bytes: do not trust the count for the capacity.
            let mut columns = Vec::with_capacity((n as usize).min(r.remaining().len() / 10));
            for _ in 0..n {
                columns.push(RelationColumn {
                    flags: r.u8()?,
                    name: r.cstr()?,
                    type_oid: r.u32()?,
                    type_modifier: r.i32()?,
                });
            }
            LogicalMessage::Relation(Relation {
                xid,
                oid,
                namespace,
                name,
                replica_identity,
                columns,
            })
        }
        b'Y' => LogicalMessage::Type {
            xid: xid(&mut r)?,
            oid: r.u32()?,
            namespace: r.cstr()?,
            name: r.cstr()?,
        },
        b'I' => {
            let xid = xid(&mut r)?;
            let relation = r.u32()?;
            match r.u8()? {
                b'N' => {}
                other => return Err(r.unexpected(other, "N")),
            }
            LogicalMessage::Insert {
                xid,
                relation,
                new: Tuple::parse(&mut r)?,
            }
        }
        b'U' => {
            let xid = xid(&mut r)?;
            let relation = r.u32()?;
            let mut old = None;
            let mut kind = r.u8()?;
            if kind == b'K' || kind == b'O' {
                let k = if kind == b'K' {
                    OldKind::Key
                } else {
                    OldKind::Full
                };
                old = Some((k, Tuple::parse(&mut r)?));
                kind = r.u8()?;
            }
            if kind != b'N' {
                return Err(r.unexpected(kind, "K, O or N"));
            }
            LogicalMessage::Update {
                xid,
                relation,
                old,
                new: Tuple::parse(&mut r)?,
            }
        }
        b'D' => {
            let xid = xid(&mut r)?;
            let relation = r.u32()?;
            let k = match r.u8()? {
                b'K' => OldKind::Key,
                b'O' => OldKind::Full,
                other => return Err(r.unexpected(other, "K or O")),
            };
            LogicalMessage::Delete {
                xid,
                relation,
                old: (k, Tuple::parse(&mut r)?),
            }
        }
        b'T' => {
            let xid = xid(&mut r)?;
            let n = r.u32()? as usize;
            let options = r.u8()?;
            let mut relations = Vec::with_capacity(n.min(r.remaining().len() / 4));
            for _ in 0..n {
                relations.push(r.u32()?);
            }
            LogicalMessage::Truncate {
                xid,
                options,
                relations,
            }
        }
        b'M' => {
            let xid = xid(&mut r)?;
            let flags = r.u8()?;
            let lsn = r.u64()?;
            let prefix = r.cstr()?;
            let len = r.u32()? as usize;
            LogicalMessage::Message {
                xid,
                transactional: flags & 1 != 0,
                lsn,
                prefix,
                content: r.bytes(len)?,
            }
        }
        b'S' => LogicalMessage::StreamStart {
            xid: r.u32()?,
            first_segment: r.u8()? == 1,
        },
        b'E' => LogicalMessage::StreamStop,
        b'c' => LogicalMessage::StreamCommit {
            xid: r.u32()?,
            flags: r.u8()?,
            commit_lsn: r.u64()?,
            end_lsn: r.u64()?,
            timestamp: r.i64()?,
        },
        // Protocol 4 appends abort LSN and time; we read what protocol 2 defines.
        b'A' => LogicalMessage::StreamAbort {
            xid: r.u32()?,
            subxid: r.u32()?,
        },
        other => return Err(PgOutputError::UnknownTag(other)),
    };
    Ok(msg)
}

/// Microseconds between the Unix epoch and PostgreSQL's epoch (2000-01-01 00:00:00 UTC).
pub const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;

/// PostgreSQL timestamp (µs since 2000-01-01 UTC) to Unix milliseconds (floor).
pub fn pg_timestamp_to_unix_ms(ts: i64) -> i64 {
    ts.saturating_add(PG_EPOCH_OFFSET_US).div_euclid(1000)
}

/// Unix time to PostgreSQL timestamp µs (for standby status updates).
pub fn unix_to_pg_timestamp(t: std::time::SystemTime) -> i64 {
    let us = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    us.saturating_sub(PG_EPOCH_OFFSET_US)
}

/// Builders of pgoutput frames, for tests here and in `spill.rs` / `mod.rs`.
#[cfg(test)]
pub mod build {
    pub fn begin(final_lsn: u64, ts: i64, xid: u32) -> Vec<u8> {
        let mut b = vec![b'B'];
        b.extend(final_lsn.to_be_bytes());
        b.extend(ts.to_be_bytes());
        b.extend(xid.to_be_bytes());
        b
    }
    pub fn commit(commit_lsn: u64, end_lsn: u64, ts: i64) -> Vec<u8> {
        let mut b = vec![b'C', 0];
        b.extend(commit_lsn.to_be_bytes());
        b.extend(end_lsn.to_be_bytes());
        b.extend(ts.to_be_bytes());
        b
    }
    fn xid(b: &mut Vec<u8>, xid: Option<u32>) {
        if let Some(x) = xid {
            b.extend(x.to_be_bytes());
        }
    }
    fn cstr(b: &mut Vec<u8>, s: &str) {
        b.extend(s.as_bytes());
        b.push(0);
    }
    /// columns: (flags, name, type oid)
    pub fn relation(
        x: Option<u32>,
        oid: u32,
        ns: &str,
        name: &str,
        ri: u8,
        cols: &[(u8, &str, u32)],
    ) -> Vec<u8> {
        let mut b = vec![b'R'];
        xid(&mut b, x);
        b.extend(oid.to_be_bytes());
        cstr(&mut b, ns);
        cstr(&mut b, name);
        b.push(ri);
        b.extend((cols.len() as i16).to_be_bytes());
        for (f, n, t) in cols {
            b.push(*f);
            cstr(&mut b, n);
            b.extend(t.to_be_bytes());
            b.extend((-1i32).to_be_bytes());
        }
        b
    }
    /// cells: None = null, Some(None) = unchanged toast, Some(Some(text)).
    pub fn tuple(b: &mut Vec<u8>, cells: &[Option<Option<&str>>]) {
        b.extend((cells.len() as i16).to_be_bytes());
        for c in cells {
            match c {
                None => b.push(b'n'),
                Some(None) => b.push(b'u'),
                Some(Some(t)) => {
                    b.push(b't');
                    b.extend((t.len() as i32).to_be_bytes());
                    b.extend(t.as_bytes());
                }
            }
        }
    }
    pub fn insert(x: Option<u32>, rel: u32, cells: &[Option<Option<&str>>]) -> Vec<u8> {
        let mut b = vec![b'I'];
        xid(&mut b, x);
        b.extend(rel.to_be_bytes());
        b.push(b'N');
        tuple(&mut b, cells);
        b
    }
    pub fn update(
        x: Option<u32>,
        rel: u32,
        old: Option<(u8, &[Option<Option<&str>>])>,
        new: &[Option<Option<&str>>],
    ) -> Vec<u8> {
        let mut b = vec![b'U'];
        xid(&mut b, x);
        b.extend(rel.to_be_bytes());
        if let Some((k, cells)) = old {
            b.push(k);
            tuple(&mut b, cells);
        }
        b.push(b'N');
        tuple(&mut b, new);
        b
    }
    pub fn delete(x: Option<u32>, rel: u32, kind: u8, old: &[Option<Option<&str>>]) -> Vec<u8> {
        let mut b = vec![b'D'];
        xid(&mut b, x);
        b.extend(rel.to_be_bytes());
        b.push(kind);
        tuple(&mut b, old);
        b
    }
    pub fn truncate(x: Option<u32>, rels: &[u32]) -> Vec<u8> {
        let mut b = vec![b'T'];
        xid(&mut b, x);
        b.extend((rels.len() as u32).to_be_bytes());
        b.push(0);
        for r in rels {
            b.extend(r.to_be_bytes());
        }
        b
    }
    pub fn stream_start(xid: u32, first: bool) -> Vec<u8> {
        let mut b = vec![b'S'];
        b.extend(xid.to_be_bytes());
        b.push(u8::from(first));
        b
    }
    pub fn stream_stop() -> Vec<u8> {
        vec![b'E']
    }
    pub fn stream_commit(xid: u32, commit_lsn: u64, end_lsn: u64, ts: i64) -> Vec<u8> {
        let mut b = vec![b'c'];
        b.extend(xid.to_be_bytes());
        b.push(0);
        b.extend(commit_lsn.to_be_bytes());
        b.extend(end_lsn.to_be_bytes());
        b.extend(ts.to_be_bytes());
        b
    }
    pub fn stream_abort(xid: u32, subxid: u32) -> Vec<u8> {
        let mut b = vec![b'A'];
        b.extend(xid.to_be_bytes());
        b.extend(subxid.to_be_bytes());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::build::*;
    use super::*;
    use proptest::prelude::*;

    fn all_frames() -> Vec<(Vec<u8>, bool)> {
        let cells: &[Option<Option<&str>>] = &[Some(Some("1")), None, Some(None)];
        vec![
            (begin(0x100, 5, 7), false),
            (commit(0x100, 0x130, 5), false),
            (
                {
                    let mut b = vec![b'O'];
                    b.extend(9u64.to_be_bytes());
                    b.extend(b"origin\0");
                    b
                },
                false,
            ),
            (
                relation(
                    None,
                    16384,
                    "public",
                    "t",
                    b'd',
                    &[(1, "id", 23), (0, "v", 25)],
                ),
                false,
            ),
            (
                relation(Some(9), 16384, "public", "t", b'f', &[(1, "id", 23)]),
                true,
            ),
            (insert(None, 16384, cells), false),
            (insert(Some(9), 16384, cells), true),
            (update(None, 16384, Some((b'K', cells)), cells), false),
            (update(None, 16384, Some((b'O', cells)), cells), false),
            (update(Some(3), 16384, None, cells), true),
            (delete(None, 16384, b'K', cells), false),
            (delete(Some(4), 16384, b'O', cells), true),
            (truncate(None, &[1, 2, 3]), false),
            (truncate(Some(5), &[1]), true),
            (
                {
                    let mut b = vec![b'Y'];
                    b.extend(77u32.to_be_bytes());
                    b.extend(b"public\0mood\0");
                    b
                },
                false,
            ),
            (
                {
                    let mut b = vec![b'M', 1];
                    b.extend(5u64.to_be_bytes());
                    b.extend(b"pfx\0");
                    b.extend(3u32.to_be_bytes());
                    b.extend(b"abc");
                    b
                },
                false,
            ),
            (stream_start(9, true), false),
            (stream_stop(), false),
            (stream_commit(9, 0x200, 0x230, 1), false),
            (stream_abort(9, 10), false),
        ]
    }

    #[test]
    fn decodes_begin_commit() {
        assert_eq!(
            parse(&begin(0x16B3748, 42, 731), false).expect("begin"),
            LogicalMessage::Begin {
                final_lsn: 0x16B3748,
                timestamp: 42,
                xid: 731
            }
        );
        assert_eq!(
            parse(&commit(1, 2, 3), false).expect("commit"),
            LogicalMessage::Commit {
                flags: 0,
                commit_lsn: 1,
                end_lsn: 2,
                timestamp: 3
            }
        );
    }

    #[test]
    fn decodes_relation_and_tuples() {
        let f = relation(
            None,
            16384,
            "public",
            "users",
            b'd',
            &[(1, "id", 23), (0, "doc", 25)],
        );
        let LogicalMessage::Relation(r) = parse(&f, false).expect("relation") else {
            panic!("not a relation")
        };
        assert_eq!(
            (r.oid, r.namespace, r.name, r.replica_identity),
            (16384, "public", "users", b'd')
        );
        assert_eq!(r.columns.len(), 2);
        assert!(r.columns[0].is_key() && !r.columns[1].is_key());
        assert_eq!(r.columns[1].type_oid, 25);

        let f = update(
            Some(11),
            16384,
            Some((b'K', &[Some(Some("1")), None])),
            &[Some(Some("2")), Some(None)],
        );
        let LogicalMessage::Update {
            xid,
            relation,
            old,
            new,
        } = parse(&f, true).expect("update")
        else {
            panic!("not an update")
        };
        assert_eq!((xid, relation), (Some(11), 16384));
        let (k, old) = old.expect("old");
        assert_eq!(k, OldKind::Key);
        assert_eq!(
            old.cells().collect::<Vec<_>>(),
            vec![Cell::Text(b"1"), Cell::Null]
        );
        assert_eq!(
            new.cells().collect::<Vec<_>>(),
            vec![Cell::Text(b"2"), Cell::Unchanged]
        );
    }

    #[test]
    fn stream_xid_prefix() {
        let f = insert(Some(99), 1, &[None]);
        assert_eq!(parse(&f, true).expect("in stream").stream_xid(), Some(99));
        // Without the stream flag the same bytes misparse into a typed error, not a panic.
        assert!(parse(&f, false).is_err());
    }

    #[test]
    fn every_truncation_is_an_error() {
        for (f, in_stream) in all_frames() {
            assert!(
                parse(&f, in_stream).is_ok(),
                "full frame {:?}",
                f[0] as char
            );
            for cut in 0..f.len() {
                // Stream Stop is one byte: its only prefix is empty.
                let r = parse(&f[..cut], in_stream);
                assert!(
                    r.is_err(),
                    "tag {:?} cut at {cut} parsed: {r:?}",
                    f[0] as char
                );
            }
        }
    }

    #[test]
    fn unknown_tag_and_kind() {
        assert_eq!(parse(b"Z", false), Err(PgOutputError::UnknownTag(b'Z')));
        assert_eq!(parse(b"", false), Err(PgOutputError::Empty));
        let mut f = insert(None, 1, &[None]);
        let last = f.len() - 1;
        f[last] = b'x';
        assert!(matches!(
            parse(&f, false),
            Err(PgOutputError::Unexpected { found: b'x', .. })
        ));
        let mut f = insert(None, 1, &[Some(Some("abc"))]);
        // length -1
        let at = f.len() - 7;
        f[at..at + 4].copy_from_slice(&(-1i32).to_be_bytes());
        assert!(matches!(
            parse(&f, false),
            Err(PgOutputError::Negative { .. })
        ));
    }

    #[test]
    fn epoch_conversion() {
        assert_eq!(pg_timestamp_to_unix_ms(0), 946_684_800_000);
        assert_eq!(pg_timestamp_to_unix_ms(1_999), 946_684_800_001);
        assert_eq!(pg_timestamp_to_unix_ms(-1), 946_684_799_999);
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_micros(946_684_800_000_123);
        assert_eq!(unix_to_pg_timestamp(t), 123);
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256), s in any::<bool>()) {
            let _ = parse(&bytes, s);
        }

        #[test]
        fn mutated_frames_never_panic(
            idx in 0usize..20,
            muts in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
            cut in any::<usize>(),
            s in any::<bool>(),
        ) {
            let frames = all_frames();
            let (mut f, _) = frames[idx % frames.len()].clone();
            for (at, b) in muts {
                let n = f.len();
                f[at % n] = b;
            }
            let cut = cut % (f.len() + 1);
            if let Ok(m) = parse(&f[..cut], s) {
                // Iterating a validated tuple never panics either.
                match m {
                    LogicalMessage::Insert { new, .. } => { let _ = new.cells().count(); }
                    LogicalMessage::Update { old, new, .. } => {
                        let _ = new.cells().count();
                        if let Some((_, o)) = old { let _ = o.cells().count(); }
                    }
                    LogicalMessage::Delete { old: (_, o), .. } => { let _ = o.cells().count(); }
                    _ => {}
                }
            }
        }
    }
}
