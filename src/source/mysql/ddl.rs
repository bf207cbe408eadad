//! Classifying the statements of binlog query events.
//!
//! In ROW format a query event is a transaction marker (`BEGIN`, `COMMIT`, `ROLLBACK`,
//! `SAVEPOINT`, `XA …`) or DDL. The reader needs to know which, plus the table of a
//! `TRUNCATE` (it becomes one `t` event). Any other DDL drops the reader's schema caches,
//! so names are re-read after `ALTER`/`RENAME`/`DROP`/`CREATE`. A DML statement here means a
//! session wrote with `binlog_format=STATEMENT`/`MIXED`: its rows are not in the binlog,
//! so the reader stops rather than lose them.

/// What a query event means to the reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Statement {
    Begin,
    Commit,
    Rollback,
    /// `SAVEPOINT name`: later rows may be undone by a `ROLLBACK TO` it.
    Savepoint(String),
    /// `ROLLBACK [WORK] TO [SAVEPOINT] name`: the rows since that savepoint are undone.
    RollbackTo(String),
    /// `RELEASE SAVEPOINT name`: that savepoint and the later ones are gone.
    Release(String),
    /// `XA START/END/PREPARE/COMMIT/ROLLBACK`.
    Xa(XaStatement),
    /// `TRUNCATE [TABLE] [db.]t`.
    Truncate {
        db: Option<String>,
        table: String,
    },
    /// INSERT/UPDATE/DELETE/REPLACE/LOAD logged as a statement.
    Dml(String),
    /// Anything else: DDL (or a harmless statement such as `FLUSH`), its own transaction.
    Other,
}

/// An XA statement as logged (`XA COMMIT X'7831',X'',1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XaStatement {
    Start,
    End,
    Prepare(Option<Xid>),
    Commit {
        xid: Option<Xid>,
        one_phase: bool,
    },
    Rollback(Option<Xid>),
    /// `XA RECOVER` and anything else.
    Other,
}

/// An XA transaction id: format id, global transaction id and branch qualifier. The server
/// logs it as `X'<gtrid hex>',X'<bqual hex>',<format>` in queries and binary in the
/// XA_PREPARE event; both parse to the same value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Xid {
    pub format: u64,
    pub gtrid: Vec<u8>,
    pub bqual: Vec<u8>,
}

impl std::fmt::Display for Xid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02X}")).collect::<String>();
        write!(
            f,
            "X'{}',X'{}',{}",
            hex(&self.gtrid),
            hex(&self.bqual),
            self.format
        )
    }
}

impl Xid {
    /// The xid of an XA_PREPARE event body: one-phase flag (1), format id (4), gtrid and
    /// bqual lengths (4 each), the data. Returns `(one_phase, xid)`.
    pub fn from_prepare_event(body: &[u8]) -> Option<(bool, Xid)> {
        let u32at = |i: usize| -> Option<u32> {
            let b = body.get(i..i + 4)?;
            Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        let one_phase = *body.first()? != 0;
        let format = u32at(1)?;
        let g = usize::try_from(u32at(5)?).ok()?;
        let b = usize::try_from(u32at(9)?).ok()?;
        let data = body.get(13..13usize.checked_add(g)?.checked_add(b)?)?;
        Some((
            one_phase,
            Xid {
                format: u64::from(format),
                gtrid: data[..g].to_vec(),
                bqual: data[g..].to_vec(),
            },
        ))
    }

    /// Parses `X'hex'|'text' [, X'hex'|'text' [, number]]` (the rest of an XA statement
    /// after its verb); the format id defaults to 1 and bqual to empty, as in the server.
    pub fn parse(text: &str) -> Option<Xid> {
        let b = text.as_bytes();
        let mut i = 0;
        let skip_ws = |i: &mut usize| {
            while *i < b.len() && b[*i].is_ascii_whitespace() {
                *i += 1;
            }
        };
        let string = |i: &mut usize| -> Option<Vec<u8>> {
            skip_ws(i);
            let hex = matches!(b.get(*i), Some(b'X' | b'x')) && b.get(*i + 1) == Some(&b'\'');
            if hex {
                *i += 1;
            }
            if b.get(*i) != Some(&b'\'') {
                return None;
            }
            *i += 1;
            let mut raw = Vec::new();
            loop {
                match *b.get(*i)? {
                    b'\'' if b.get(*i + 1) == Some(&b'\'') => {
                        raw.push(b'\'');
                        *i += 2;
                    }
                    b'\'' => {
                        *i += 1;
                        break;
                    }
                    b'\\' => {
                        raw.push(*b.get(*i + 1)?);
                        *i += 2;
                    }
                    c => {
                        raw.push(c);
                        *i += 1;
                    }
                }
            }
            if !hex {
                return Some(raw);
            }
            if raw.len() % 2 != 0 {
                return None;
            }
            raw.chunks(2)
                .map(|p| u8::from_str_radix(std::str::from_utf8(p).ok()?, 16).ok())
                .collect()
        };
        let comma = |i: &mut usize| {
            skip_ws(i);
            if b.get(*i) == Some(&b',') {
                *i += 1;
                true
            } else {
                false
            }
        };
        let gtrid = string(&mut i)?;
        let mut bqual = Vec::new();
        let mut format = 1;
        if comma(&mut i) {
            bqual = string(&mut i)?;
            if comma(&mut i) {
                skip_ws(&mut i);
                let start = i;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                format = text.get(start..i)?.parse().ok()?;
            }
        }
        Some(Xid {
            format,
            gtrid,
            bqual,
        })
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Tok {
    Word(String),
    Quoted(String),
    Dot,
    Other,
}

/// Tokens of the statement's start: comments skipped (executable `/*!…*/` comments kept),
/// words upper-cased, back-quoted identifiers kept as written.
fn tokens(sql: &str, max: usize) -> Vec<Tok> {
    let b = sql.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    while i < b.len() && out.len() < max {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            if b.get(i + 2) == Some(&b'!') {
                // Executable comment: skip the marker and version digits, keep the content.
                i += 3;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
            } else {
                match sql[i + 2..].find("*/") {
                    Some(e) => i += 2 + e + 2,
                    None => break,
                }
            }
        } else if c == b'*' && b.get(i + 1) == Some(&b'/') {
            i += 2;
        } else if c == b'#' || (c == b'-' && b.get(i + 1) == Some(&b'-')) {
            match sql[i..].find('\n') {
                Some(e) => i += e + 1,
                None => break,
            }
        } else if c == b'`' {
            let mut s = String::new();
            i += 1;
            let mut closed = false;
            while i < b.len() {
                if b[i] == b'`' {
                    if b.get(i + 1) == Some(&b'`') {
                        s.push('`');
                        i += 2;
                        continue;
                    }
                    i += 1;
                    closed = true;
                    break;
                }
                let ch = sql[i..].chars().next().unwrap_or('\u{FFFD}');
                s.push(ch);
                i += ch.len_utf8().max(1);
            }
            if !closed {
                break;
            }
            out.push(Tok::Quoted(s));
        } else if c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80 {
            let start = i;
            while i < b.len()
                && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'$' || b[i] >= 0x80)
            {
                i += 1;
            }
            out.push(Tok::Word(sql[start..i].to_owned()));
        } else if c == b'.' {
            out.push(Tok::Dot);
            i += 1;
        } else {
            out.push(Tok::Other);
            i += 1;
        }
    }
    out
}

fn kw(t: Option<&Tok>) -> String {
    match t {
        Some(Tok::Word(w)) => w.to_ascii_uppercase(),
        _ => String::new(),
    }
}

fn ident(t: Option<&Tok>) -> Option<String> {
    match t {
        Some(Tok::Word(w)) | Some(Tok::Quoted(w)) => Some(w.clone()),
        _ => None,
    }
}

/// Classifies one query event's statement.
pub fn classify(sql: &str) -> Statement {
    let t = tokens(sql, 8);
    let first = kw(t.first());
    match first.as_str() {
        "BEGIN" => Statement::Begin,
        "START" if kw(t.get(1)) == "TRANSACTION" => Statement::Begin,
        "COMMIT" => Statement::Commit,
        "ROLLBACK" => {
            let mut i = 1;
            if kw(t.get(i)) == "WORK" {
                i += 1;
            }
            if kw(t.get(i)) != "TO" {
                return Statement::Rollback;
            }
            i += 1;
            if kw(t.get(i)) == "SAVEPOINT" && ident(t.get(i + 1)).is_some() {
                i += 1;
            }
            match ident(t.get(i)) {
                Some(name) => Statement::RollbackTo(name),
                None => Statement::Other,
            }
        }
        "SAVEPOINT" => match ident(t.get(1)) {
            Some(name) => Statement::Savepoint(name),
            None => Statement::Other,
        },
        "RELEASE" if kw(t.get(1)) == "SAVEPOINT" => match ident(t.get(2)) {
            Some(name) => Statement::Release(name),
            None => Statement::Other,
        },
        "XA" => Statement::Xa(xa(sql, &kw(t.get(1)))),
        "INSERT" | "UPDATE" | "DELETE" | "REPLACE" | "LOAD" => Statement::Dml(first),
        "TRUNCATE" => {
            let mut i = 1;
            if kw(t.get(1)) == "TABLE" {
                i = 2;
            }
            let Some(a) = ident(t.get(i)) else {
                return Statement::Other;
            };
            if t.get(i + 1) == Some(&Tok::Dot) {
                match ident(t.get(i + 2)) {
                    Some(b) => Statement::Truncate {
                        db: Some(a),
                        table: b,
                    },
                    None => Statement::Other,
                }
            } else {
                Statement::Truncate { db: None, table: a }
            }
        }
        _ => Statement::Other,
    }
}

/// An XA statement; `verb` is its second word.
fn xa(sql: &str, verb: &str) -> XaStatement {
    // The xid follows the verb (`XA COMMIT X'..'`, `XA ROLLBACK X'..'`, `XA PREPARE X'..'`).
    let rest = || {
        let upper = sql.to_ascii_uppercase();
        let at = upper
            .find(verb)
            .map(|i| i + verb.len())
            .unwrap_or(sql.len());
        sql.get(at..).unwrap_or_default().to_owned()
    };
    match verb {
        "START" | "BEGIN" => XaStatement::Start,
        "END" => XaStatement::End,
        "PREPARE" => XaStatement::Prepare(Xid::parse(&rest())),
        "COMMIT" => {
            let r = rest();
            let one_phase = r.to_ascii_uppercase().contains("ONE PHASE");
            XaStatement::Commit {
                xid: Xid::parse(&r),
                one_phase,
            }
        }
        "ROLLBACK" => XaStatement::Rollback(Xid::parse(&rest())),
        _ => XaStatement::Other,
    }
}

/// The table a statement-logged INSERT/REPLACE/UPDATE/DELETE writes (`(db, table)`), when
/// it is a plain single-table statement; `None` otherwise.
pub fn dml_target(sql: &str) -> Option<(Option<String>, String)> {
    let t = tokens(sql, 12);
    let first = kw(t.first());
    let skip: &[&str] = match first.as_str() {
        "INSERT" | "REPLACE" => &["LOW_PRIORITY", "DELAYED", "HIGH_PRIORITY", "IGNORE", "INTO"],
        "DELETE" => &["LOW_PRIORITY", "QUICK", "IGNORE", "FROM"],
        "UPDATE" => &["LOW_PRIORITY", "IGNORE"],
        _ => return None,
    };
    let mut i = 1;
    while skip.contains(&kw(t.get(i)).as_str()) && matches!(t.get(i), Some(Tok::Word(_))) {
        i += 1;
    }
    let a = ident(t.get(i))?;
    if t.get(i + 1) == Some(&Tok::Dot) {
        Some((Some(a), ident(t.get(i + 2))?))
    } else {
        Some((None, a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers() {
        assert_eq!(classify("BEGIN"), Statement::Begin);
        assert_eq!(classify("COMMIT"), Statement::Commit);
        assert_eq!(classify("ROLLBACK"), Statement::Rollback);
        assert_eq!(
            classify("ROLLBACK TO `sp`"),
            Statement::RollbackTo("sp".into())
        );
        assert_eq!(
            classify("rollback work to savepoint `s 2`"),
            Statement::RollbackTo("s 2".into())
        );
        assert_eq!(
            classify("ROLLBACK TO savepoint"),
            Statement::RollbackTo("savepoint".into())
        );
        assert_eq!(classify("SAVEPOINT `a`"), Statement::Savepoint("a".into()));
        assert_eq!(
            classify("RELEASE SAVEPOINT `a``b`"),
            Statement::Release("a`b".into())
        );
        assert_eq!(
            classify("XA START X'31',X'',1"),
            Statement::Xa(XaStatement::Start)
        );
        assert_eq!(
            classify("XA END X'31',X'',1"),
            Statement::Xa(XaStatement::End)
        );
    }

    #[test]
    fn xa_ids() {
        let x = Xid {
            format: 3,
            gtrid: b"x2".to_vec(),
            bqual: b"b".to_vec(),
        };
        assert_eq!(
            classify("XA COMMIT X'7832',X'62',3"),
            Statement::Xa(XaStatement::Commit {
                xid: Some(x.clone()),
                one_phase: false
            })
        );
        assert_eq!(
            classify("xa rollback 'x2' , 'b', 3"),
            Statement::Xa(XaStatement::Rollback(Some(x.clone())))
        );
        assert_eq!(
            classify("XA COMMIT 'x2','b',3 ONE PHASE"),
            Statement::Xa(XaStatement::Commit {
                xid: Some(x.clone()),
                one_phase: true
            })
        );
        assert_eq!(x.to_string(), "X'7832',X'62',3");
        let one = Xid::parse("X'7831'").expect("xid");
        assert_eq!((one.format, one.bqual.len()), (1, 0));
        assert_eq!(Xid::parse("X'7'"), None);
        assert_eq!(Xid::parse(""), None);
        // XA_PREPARE event body: one_phase, format, gtrid len, bqual len, data.
        let mut body = vec![0u8];
        body.extend_from_slice(&3u32.to_le_bytes());
        body.extend_from_slice(&2u32.to_le_bytes());
        body.extend_from_slice(&1u32.to_le_bytes());
        body.extend_from_slice(b"x2b");
        assert_eq!(Xid::from_prepare_event(&body), Some((false, x)));
        assert_eq!(Xid::from_prepare_event(&body[..14]), None);
    }

    #[test]
    fn truncate_names() {
        assert_eq!(
            classify("TRUNCATE TABLE t1"),
            Statement::Truncate {
                db: None,
                table: "t1".into()
            }
        );
        assert_eq!(
            classify("/* c */ truncate `my db`.`a``b` "),
            Statement::Truncate {
                db: Some("my db".into()),
                table: "a`b".into()
            }
        );
        assert_eq!(
            classify("TRUNCATE x.y"),
            Statement::Truncate {
                db: Some("x".into()),
                table: "y".into()
            }
        );
    }

    #[test]
    fn dml_targets() {
        assert_eq!(
            dml_target("DELETE FROM `d`.`mem`"),
            Some((Some("d".into()), "mem".into()))
        );
        assert_eq!(
            dml_target("insert ignore into t values (1)"),
            Some((None, "t".into()))
        );
        assert_eq!(
            dml_target("UPDATE x.y SET a = 1"),
            Some((Some("x".into()), "y".into()))
        );
        assert_eq!(dml_target("LOAD DATA INFILE 'f' INTO TABLE t"), None);
    }

    #[test]
    fn ddl_and_dml() {
        assert_eq!(classify("ALTER TABLE t ADD COLUMN c INT"), Statement::Other);
        assert_eq!(
            classify("DROP TABLE IF EXISTS `t` /* generated by server */"),
            Statement::Other
        );
        assert_eq!(
            classify("-- x\ninsert into t values (1)"),
            Statement::Dml("INSERT".into())
        );
        assert_eq!(
            classify("/*!40000 ALTER TABLE `t` DISABLE KEYS */"),
            Statement::Other
        );
        assert_eq!(classify(""), Statement::Other);
        assert_eq!(classify("`unterminated"), Statement::Other);
    }
}
