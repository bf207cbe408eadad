//! Typed, totally ordered replication positions and the cursor string.
//!
//! Every event carries a [`Position`]; the pipeline checkpoints positions; sources resume
//! from them. Two rules make resuming exact without buffering whole transactions:
//!
//! * **Event positions** have `ordinal >= 1` (the event's 1-based index inside its
//!   transaction), and the transaction part is known when the first change arrives:
//!   PostgreSQL's commit LSN (pgoutput's Begin carries it), MySQL's binlog file and the
//!   offset where the transaction starts.
//! * **Checkpoint positions** ("everything before this is delivered") have `ordinal == 0`
//!   and point at the *end* of the last delivered transaction: PostgreSQL's commit end LSN,
//!   MySQL's offset of the next event. Every event of a delivered transaction sorts below
//!   the checkpoint, every event of a later transaction sorts above it, so a source skips
//!   exactly the events `<= checkpoint` after a restart.
//!
//! The cursor string of a position sorts, as a plain string, in the same order as the
//! position (fixed-width upper-case hex), and is a pure function of the position, so a
//! replayed change gets the same cursor.
//!
//! # Row cursors (backfill and query mode)
//!
//! A row that was *read* rather than streamed — an initial or on-demand backfill row, a
//! query-mode row — has a [`RowPosition`]: the stream position it was read at plus the
//! row's identity ([`RowIdentity`]): a stable table id (`schema.table`, never an index), an
//! order-preserving encoding of its key and a short hash of its content. The invariant
//! every consumer relies on (it de-duplicates on `source.cursor`, and the NATS and Segment
//! sinks build their de-duplication ids from it):
//!
//! > **One cursor names one (table, key, snapshot), and a cursor delivered again carries
//! > identical content.**
//!
//! The cursor does not depend on when or in which chunk the row was read, on the chunk
//! size, on rows deleted or inserted elsewhere in the table, or on other tables being added
//! or dropped; a row read again after a crash gets the same cursor when its content is the
//! same, and a different one when it changed (two versions of one key at one snapshot are
//! both older than the stream events that follow them, so applying in cursor order still
//! ends with the table). Tables without a key are identified by their row number in a scan
//! that always starts over from the table's beginning, plus the content hash: such a cursor
//! still carries one content, but a re-read may deliver the same row under another number.
//!
//! Row cursors sort where the old backfill cursors did: `(P - 1, "R" + identity)` for a row
//! read at the stream position `P` — after every event of the transaction ending at `P`
//! (their ordinals are hex digits, below `R`) and before the next transaction's. Query-mode
//! rows have no stream position: their cursor is `R` + identity, where the key encoding
//! starts with the cursor column's value, so they sort by it.

use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// A PostgreSQL WAL location.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Lsn(pub u64);

impl fmt::Display for Lsn {
    /// PostgreSQL's own notation, `16/B374D848`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl Lsn {
    /// Writes PostgreSQL's notation (as `Display`) without the formatting machinery: one
    /// call per event.
    pub fn write_to<W: std::io::Write + ?Sized>(&self, out: &mut W) -> std::io::Result<()> {
        fn hex(out: &mut [u8; 9], v: u32) -> usize {
            const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
            let mut i = out.len();
            let mut v = v;
            loop {
                i -= 1;
                out[i] = DIGITS[(v & 0xF) as usize];
                v >>= 4;
                if v == 0 {
                    return i;
                }
            }
        }
        let mut b = [b'/'; 9];
        let i = hex(&mut b, (self.0 >> 32) as u32);
        out.write_all(&b[i..])?;
        out.write_all(b"/")?;
        let i = hex(&mut b, (self.0 & 0xFFFF_FFFF) as u32);
        out.write_all(&b[i..])
    }
}

impl FromStr for Lsn {
    type Err = PositionParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || PositionParseError::new(s, "an LSN like 16/B374D848");
        let (hi, lo) = s.split_once('/').ok_or_else(bad)?;
        let hi = u32::from_str_radix(hi, 16).map_err(|_| bad())?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| bad())?;
        Ok(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

/// A position in a PostgreSQL logical replication stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PgPosition {
    /// Event: commit LSN of its transaction. Checkpoint: end LSN of the last delivered
    /// transaction (the LSN confirmed to the server).
    pub lsn: Lsn,
    /// Event: 1-based index in its transaction. Checkpoint: 0.
    pub ordinal: u64,
}

impl PgPosition {
    /// A checkpoint position: everything before `lsn` is delivered.
    pub fn checkpoint(lsn: Lsn) -> Self {
        PgPosition { lsn, ordinal: 0 }
    }
}

/// A position in a MySQL/MariaDB binary log.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MysqlPosition {
    /// Binlog file name, e.g. `mysql-bin.000012`.
    pub file: String,
    /// Event: offset where its transaction starts. Checkpoint: offset of the first event
    /// after the last delivered transaction (where a resumed dump starts).
    pub pos: u64,
    /// Event: 1-based index in its transaction. Checkpoint: 0.
    pub ordinal: u64,
    /// GTID of the transaction (MariaDB `d-s-n`) or executed GTID set (MySQL), if known.
    /// Informational: not part of the ordering.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gtid: Option<String>,
}

impl MysqlPosition {
    /// The numeric suffix of the binlog file name (`mysql-bin.000012` → 12); files sort by it.
    pub fn file_seq(&self) -> u64 {
        binlog_file_seq(&self.file)
    }

    /// A position known only by GTID (a `--from`/`--until` given as a GTID): no file, so it
    /// sorts before every file position; the reader starts the dump by GTID from it.
    pub fn gtid_only(gtid: &str) -> Self {
        MysqlPosition {
            file: String::new(),
            pos: 0,
            ordinal: 0,
            gtid: Some(gtid.to_owned()),
        }
    }

    /// The GTID of a [`MysqlPosition::gtid_only`] position.
    pub fn start_gtid(&self) -> Option<&str> {
        match (&self.gtid, self.file.is_empty()) {
            (Some(g), true) => Some(g),
            _ => None,
        }
    }
}

/// A GTID's stream and sequence number: MariaDB `domain-server-seq` → (domain, seq); MySQL
/// `uuid:n` → (uuid, n); MySQL 8.3+ tagged `uuid:tag:n` → (`uuid:tag`, n). Sequence numbers
/// grow within a stream, so a bound compares them.
pub fn gtid_stream_seq(g: &str) -> Option<(String, u64)> {
    let g = g.trim();
    if let Some((stream, n)) = g.rsplit_once(':') {
        let (uuid, tag) = match stream.split_once(':') {
            Some((u, t)) => (u, Some(t)),
            None => (stream, None),
        };
        let uuid_ok = uuid.len() == 36 && uuid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
        // A tag: 1–32 characters of [a-z0-9_], starting with a letter or underscore.
        let tag_ok = tag.is_none_or(|t| {
            (1..=32).contains(&t.len())
                && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !t.as_bytes()[0].is_ascii_digit()
        });
        return match (uuid_ok && tag_ok, n.parse::<u64>()) {
            (true, Ok(n)) => Some((stream.to_ascii_lowercase(), n)),
            _ => None,
        };
    }
    let mut parts = g.split('-');
    let (d, srv, n) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    d.parse::<u32>().ok()?;
    srv.parse::<u32>().ok()?;
    Some((d.to_owned(), n.parse().ok()?))
}

/// Compares a transaction's GTID with a GTID bound of the same stream.
fn gtid_cmp(tx: Option<&str>, bound: &str) -> Option<Ordering> {
    let (ts, tn) = gtid_stream_seq(tx?)?;
    let (bs, bn) = gtid_stream_seq(bound)?;
    (ts == bs).then(|| tn.cmp(&bn))
}

/// The numeric suffix of a binlog file name, 0 when it has none.
///
/// Called for every event's cursor and every position comparison, so it scans the digits
/// from the end by hand (a profile showed `rsplit_once` + `parse` at ~9% of a MySQL run).
pub fn binlog_file_seq(file: &str) -> u64 {
    let b = file.as_bytes();
    let digits = b.iter().rev().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 || digits > 19 || b.len() == digits || b[b.len() - digits - 1] != b'.' {
        return 0;
    }
    b[b.len() - digits..]
        .iter()
        .fold(0u64, |n, &c| n * 10 + u64::from(c - b'0'))
}

impl Ord for MysqlPosition {
    fn cmp(&self, other: &Self) -> Ordering {
        // Same file (the common case, e.g. a bound check per event): no suffix parsing.
        let files = if self.file == other.file {
            Ordering::Equal
        } else {
            self.file_seq().cmp(&other.file_seq())
        };
        files.then((self.pos, self.ordinal).cmp(&(other.pos, other.ordinal)))
    }
}

impl PartialOrd for MysqlPosition {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A checkpoint of the query-based mode: the run state as the sortable text the query
/// source builds (`cursor`), and the fingerprints of the row versions delivered inside the
/// look-back window (`window`, opaque; stored with the checkpoint, never shown as a cursor).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct QueryPosition {
    pub cursor: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub window: String,
}

/// A row read by a backfill or a query-mode run: where it was read and what it is (see
/// the module docs, "Row cursors").
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RowPosition {
    /// The stream position (a checkpoint position) the row was read at: the initial
    /// backfill's start, an on-demand chunk's boundary. `None` in query mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<std::sync::Arc<Position>>,
    /// The row's identity ([`RowIdentity::row`]): cursor-safe text.
    pub row: String,
}

/// A position in one source's change stream.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Position {
    Postgres(PgPosition),
    Mysql(MysqlPosition),
    Query(QueryPosition),
    Row(RowPosition),
}

/// Which positions compare with each other.
#[derive(PartialEq)]
enum Family {
    Postgres,
    Mysql,
    Query,
    QueryRow,
}

impl Position {
    fn family(&self) -> Family {
        match self {
            Position::Postgres(_) => Family::Postgres,
            Position::Mysql(_) => Family::Mysql,
            Position::Query(_) => Family::Query,
            Position::Row(r) => match r.at.as_deref() {
                Some(p) => p.family(),
                None => Family::QueryRow,
            },
        }
    }

    /// The stream position an event's native fields (`lsn`, `file`/`pos`) come from: the
    /// position itself, or the one a row was read at.
    pub fn anchor(&self) -> &Position {
        match self {
            Position::Row(RowPosition { at: Some(p), .. }) => p,
            p => p,
        }
    }
}

impl PartialOrd for Position {
    /// Positions of different source kinds are not comparable (a query-mode row's cursor
    /// does not compare with the run positions either). A row position compares like its
    /// cursor string, which sorts like the position by construction.
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        match (self, other) {
            (Position::Postgres(a), Position::Postgres(b)) => Some(a.cmp(b)),
            (Position::Mysql(a), Position::Mysql(b)) => Some(a.cmp(b)),
            (Position::Query(a), Position::Query(b)) => Some(a.cmp(b)),
            (a, b) if a.family() == b.family() && a.family() != Family::Query => {
                Some(a.cursor().cmp(&b.cursor()))
            }
            _ => None,
        }
    }
}

impl Position {
    /// The cursor string: sorts like the position, identical on replay.
    pub fn cursor(&self) -> String {
        match self {
            Position::Postgres(p) => format!("{:016X}:{:016X}", p.lsn.0, p.ordinal),
            Position::Mysql(m) => format!("{:010}:{:016X}:{:016X}", m.file_seq(), m.pos, m.ordinal),
            Position::Query(q) => q.cursor.clone(),
            Position::Row(_) => {
                let mut b = Vec::with_capacity(64);
                // Writing into a Vec cannot fail.
                let _ = self.write_cursor(&mut b);
                String::from_utf8_lossy(&b).into_owned()
            }
        }
    }

    /// Writes the cursor string (as [`Position::cursor`]) without allocating.
    pub fn write_cursor<W: std::io::Write + ?Sized>(&self, out: &mut W) -> std::io::Result<()> {
        fn hex16(v: u64) -> [u8; 16] {
            const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
            let mut b = [0u8; 16];
            for (i, slot) in b.iter_mut().enumerate() {
                *slot = DIGITS[((v >> (60 - 4 * i)) & 0xF) as usize];
            }
            b
        }
        match self {
            Position::Postgres(p) => {
                out.write_all(&hex16(p.lsn.0))?;
                out.write_all(b":")?;
                out.write_all(&hex16(p.ordinal))
            }
            Position::Mysql(m) => {
                // `{:010}:` without the formatting machinery (one call per event).
                let mut b = [b'0'; 20];
                let i = crate::value::digits_into(&mut b, m.file_seq());
                out.write_all(&b[i.min(10)..])?;
                out.write_all(b":")?;
                out.write_all(&hex16(m.pos))?;
                out.write_all(b":")?;
                out.write_all(&hex16(m.ordinal))
            }
            Position::Query(q) => out.write_all(q.cursor.as_bytes()),
            Position::Row(r) => {
                match r.at.as_deref() {
                    Some(Position::Postgres(p)) => {
                        out.write_all(&hex16(p.lsn.0.saturating_sub(1)))?;
                        out.write_all(b":")?;
                    }
                    Some(Position::Mysql(m)) => {
                        let mut b = [b'0'; 20];
                        let i = crate::value::digits_into(&mut b, m.file_seq());
                        out.write_all(&b[i.min(10)..])?;
                        out.write_all(b":")?;
                        out.write_all(&hex16(m.pos.saturating_sub(1)))?;
                        out.write_all(b":")?;
                    }
                    _ => {}
                }
                out.write_all(b"R")?;
                out.write_all(r.row.as_bytes())
            }
        }
    }

    /// `true` when `self` is at or after `other` (false for different kinds). Against a
    /// GTID bound ([`MysqlPosition::gtid_only`]): when `self` carries a GTID of the same
    /// stream (MariaDB domain / MySQL server uuid) that is at or after it.
    pub fn reached(&self, other: &Position) -> bool {
        if let (Position::Mysql(m), Position::Mysql(b)) = (self, other) {
            if let Some(g) = b.start_gtid() {
                return matches!(
                    gtid_cmp(m.gtid.as_deref(), g),
                    Some(Ordering::Greater | Ordering::Equal)
                );
            }
        }
        matches!(
            self.partial_cmp(other),
            Some(Ordering::Greater | Ordering::Equal)
        )
    }

    /// `true` when `self` (an event's position) lies after the bound `other`: such an event
    /// is not delivered by a bounded run. GTID bounds compare the transaction's GTID.
    pub fn beyond(&self, other: &Position) -> bool {
        if let (Position::Mysql(m), Position::Mysql(b)) = (self, other) {
            if let Some(g) = b.start_gtid() {
                return gtid_cmp(m.gtid.as_deref(), g) == Some(Ordering::Greater);
            }
        }
        matches!(self.partial_cmp(other), Some(Ordering::Greater))
    }

    /// Whether this is a checkpoint position (ordinal 0) rather than an event's.
    pub fn is_checkpoint(&self) -> bool {
        match self {
            Position::Postgres(p) => p.ordinal == 0,
            Position::Mysql(m) => m.ordinal == 0,
            Position::Query(_) => true,
            Position::Row(_) => false,
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Postgres(p) => write!(f, "{}#{}", p.lsn, p.ordinal),
            Position::Mysql(m) => {
                write!(f, "{}:{}#{}", m.file, m.pos, m.ordinal)?;
                if let Some(g) = &m.gtid {
                    write!(f, " gtid {g}")?;
                }
                Ok(())
            }
            Position::Query(q) => write!(f, "{}", q.cursor),
            Position::Row(r) => match &r.at {
                Some(at) => write!(f, "{at} row {}", r.row),
                None => write!(f, "row {}", r.row),
            },
        }
    }
}

/// Parses a PostgreSQL cursor string back into its position. A backfill row's cursor
/// (`<position − 1>:R…`) gives the stream position the row was read at.
pub fn parse_pg_cursor(s: &str) -> Result<PgPosition, PositionParseError> {
    let bad = || {
        PositionParseError::new(
            s,
            "a PostgreSQL cursor like 0000000001A2B3C4:0000000000000001 (or a backfill row's 0000000001A2B3C4:R…)",
        )
    };
    let (l, o) = s.split_once(':').ok_or_else(bad)?;
    if o.starts_with('R') && l.len() == 16 {
        let l = u64::from_str_radix(l, 16).map_err(|_| bad())?;
        return Ok(PgPosition::checkpoint(Lsn(l.saturating_add(1))));
    }
    if l.len() != 16 || o.len() != 16 {
        return Err(bad());
    }
    Ok(PgPosition {
        lsn: Lsn(u64::from_str_radix(l, 16).map_err(|_| bad())?),
        ordinal: u64::from_str_radix(o, 16).map_err(|_| bad())?,
    })
}

/// A position given on the command line or in a cursor could not be parsed.
#[derive(Debug, thiserror::Error)]
#[error("cannot parse {input:?}: expected {expected}")]
pub struct PositionParseError {
    pub input: String,
    pub expected: &'static str,
}

impl PositionParseError {
    pub fn new(input: &str, expected: &'static str) -> Self {
        PositionParseError {
            input: input.to_owned(),
            expected,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gtid_bounds_compare_within_one_stream() {
        let at = |g: &str| {
            Position::Mysql(MysqlPosition {
                file: "mysql-bin.000003".into(),
                pos: 400,
                ordinal: 0,
                gtid: Some(g.into()),
            })
        };
        let bound = Position::Mysql(MysqlPosition::gtid_only("0-1-10"));
        assert!(at("0-1-10").reached(&bound));
        assert!(at("0-2-11").reached(&bound));
        assert!(!at("0-1-9").reached(&bound));
        assert!(
            !at("1-1-99").reached(&bound),
            "another domain is not comparable"
        );
        assert!(at("0-1-11").beyond(&bound));
        assert!(!at("0-1-10").beyond(&bound));
        let uuid = "3E11FA47-71CA-11E1-9E33-C80AA9429562";
        let mysql = Position::Mysql(MysqlPosition::gtid_only(&format!("{uuid}:5")));
        assert!(at(&format!("{}:5", uuid.to_lowercase())).reached(&mysql));
        assert!(at(&format!("{uuid}:6")).beyond(&mysql));
        assert_eq!(gtid_stream_seq("0-1"), None);
        assert_eq!(gtid_stream_seq("a-1-2"), None);
        assert_eq!(gtid_stream_seq("0-1-2"), Some(("0".into(), 2)));
        let u = "55778904-0299-11f1-b1b8-4ef0c4956feb";
        assert_eq!(
            gtid_stream_seq(&format!("{u}:mytag:3")),
            Some((format!("{u}:mytag"), 3))
        );
        assert_eq!(gtid_stream_seq(&format!("{u}:3")), Some((u.into(), 3)));
        assert_eq!(gtid_stream_seq(&format!("{u}:1tag:3")), None);
        assert_eq!(gtid_stream_seq(&format!("{u}:my-tag:3")), None);
    }

    #[test]
    fn binlog_file_seq_reads_the_numeric_suffix() {
        assert_eq!(binlog_file_seq("mysql-bin.000012"), 12);
        assert_eq!(binlog_file_seq("host.with.dots-bin.999999"), 999_999);
        assert_eq!(binlog_file_seq("binlog.1"), 1);
        assert_eq!(binlog_file_seq("nodots"), 0);
        assert_eq!(binlog_file_seq("mysql-bin."), 0);
        assert_eq!(binlog_file_seq("123"), 0);
        assert_eq!(binlog_file_seq("mysql-bin.00a1"), 0);
        assert_eq!(binlog_file_seq("x.99999999999999999999"), 0);
    }

    fn pg(lsn: u64, ordinal: u64) -> Position {
        Position::Postgres(PgPosition {
            lsn: Lsn(lsn),
            ordinal,
        })
    }

    fn my(file: &str, pos: u64, ordinal: u64) -> Position {
        Position::Mysql(MysqlPosition {
            file: file.into(),
            pos,
            ordinal,
            gtid: None,
        })
    }

    #[test]
    fn lsn_round_trips() {
        let l: Lsn = "16/B374D848".parse().expect("parse");
        assert_eq!(l.0, 0x16_B374_D848);
        assert_eq!(l.to_string(), "16/B374D848");
        assert!("16B374D848".parse::<Lsn>().is_err());
        assert!("x/1".parse::<Lsn>().is_err());
    }

    #[test]
    fn cursor_sorts_like_position() {
        let ps = [
            pg(0x10, 1),
            pg(0x10, 2),
            pg(0x10, 0xA),
            pg(0x11, 0),
            pg(0x11, 1),
            pg(0x1_0000_0000, 1),
            pg(u64::MAX, u64::MAX),
        ];
        for w in ps.windows(2) {
            assert!(w[0] < w[1]);
            assert!(
                w[0].cursor() < w[1].cursor(),
                "{} vs {}",
                w[0].cursor(),
                w[1].cursor()
            );
        }
        let ms = [
            my("bin.000009", 4, 1),
            my("bin.000009", 4000, 0),
            my("bin.000009", 4000, 1),
            my("bin.000010", 4, 1),
            my("bin.1000000", 4, 1),
        ];
        for w in ms.windows(2) {
            assert!(w[0] < w[1]);
            assert!(w[0].cursor() < w[1].cursor());
        }
    }

    #[test]
    fn checkpoint_separates_transactions() {
        // tx A: commit lsn 0x100, end 0x130; tx B commits at 0x130 exactly.
        let ck = pg(0x130, 0);
        assert!(pg(0x100, 1) < ck && pg(0x100, 999) < ck);
        assert!(pg(0x130, 1) > ck);
    }

    #[test]
    fn lsn_write_to_matches_display() {
        for v in [
            0u64,
            1,
            0xF,
            0x10,
            0x16_B374_D848,
            u64::MAX,
            0xFFFF_FFFF,
            1 << 32,
        ] {
            let mut b = Vec::new();
            Lsn(v).write_to(&mut b).expect("write");
            assert_eq!(String::from_utf8(b).expect("utf8"), Lsn(v).to_string());
        }
    }

    #[test]
    fn write_cursor_matches_cursor() {
        for p in [
            pg(0x16B3748, 1),
            pg(u64::MAX, 0),
            my("bin.000012", 0xABC, 7),
        ] {
            let mut b = Vec::new();
            p.write_cursor(&mut b).expect("write");
            assert_eq!(String::from_utf8(b).expect("utf8"), p.cursor());
        }
    }

    #[test]
    fn pg_cursor_round_trips() {
        let p = PgPosition {
            lsn: Lsn(0xABCDEF),
            ordinal: 42,
        };
        let c = Position::Postgres(p).cursor();
        assert_eq!(parse_pg_cursor(&c).expect("parse"), p);
        assert!(parse_pg_cursor("zz").is_err());
        assert_eq!(
            parse_pg_cursor("0000000000000FFF:Rpublic.t!i8000000000000001!00").expect("row"),
            PgPosition::checkpoint(Lsn(0x1000))
        );
    }

    #[test]
    fn positions_of_different_kinds_do_not_compare() {
        assert_eq!(pg(1, 1).partial_cmp(&my("b.1", 1, 1)), None);
        assert!(!pg(1, 1).reached(&my("b.1", 1, 1)));
    }

    #[test]
    fn row_positions_sort_inside_their_stream_position_and_round_trip() {
        let row = |at: Position, r: &str| {
            Position::Row(RowPosition {
                at: Some(std::sync::Arc::new(at)),
                row: r.into(),
            })
        };
        let a = row(pg(0x1000, 0), "public.t!i8000000000000001!00");
        let b = row(pg(0x1000, 0), "public.t!i8000000000000002!00");
        assert_eq!(
            a.cursor(),
            "0000000000000FFF:Rpublic.t!i8000000000000001!00"
        );
        assert!(pg(0xFFF, u64::MAX) < a && a < b && b < pg(0x1000, 1));
        assert!(pg(0xFFF, u64::MAX).cursor() < a.cursor() && b.cursor() < pg(0x1000, 1).cursor());
        assert!(!a.is_checkpoint() && a.reached(&pg(0xFFF, 5)));
        assert_eq!(a.anchor(), &pg(0x1000, 0));
        let m = row(my("bin.000007", 900, 0), "d.t!s1!00");
        assert_eq!(m.cursor(), "0000000007:0000000000000383:Rd.t!s1!00");
        assert!(my("bin.000007", 899, 9) < m && m < my("bin.000007", 900, 1));
        assert_eq!(m.partial_cmp(&a), None, "engines do not compare");
        let mut w = Vec::new();
        m.write_cursor(&mut w).expect("write");
        assert_eq!(String::from_utf8(w).expect("utf8"), m.cursor());
        // Query-mode rows: no stream position, not comparable with run positions.
        let q = Position::Row(RowPosition {
            at: None,
            row: "s.t!i8000000000000001!00".into(),
        });
        assert_eq!(q.cursor(), "Rs.t!i8000000000000001!00");
        let run = Position::Query(QueryPosition {
            cursor: "00000000000000000001:{}".into(),
            window: String::new(),
        });
        assert_eq!(q.partial_cmp(&run), None);
        assert!(!q.beyond(&run));
        for p in [a, m, q] {
            let s = serde_json::to_string(&p).expect("ser");
            assert_eq!(serde_json::from_str::<Position>(&s).expect("de"), p);
        }
    }

    #[test]
    fn serde_round_trip() {
        let p = my("mysql-bin.000003", 1234, 0);
        let s = serde_json::to_string(&p).expect("ser");
        assert_eq!(serde_json::from_str::<Position>(&s).expect("de"), p);
    }
}
