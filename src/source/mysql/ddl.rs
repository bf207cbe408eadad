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
    /// `SAVEPOINT`, `ROLLBACK TO`, `RELEASE SAVEPOINT`: no effect on positions.
    Savepoint,
    /// `XA START/END/PREPARE/COMMIT/ROLLBACK`.
    Xa(String),
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
        "ROLLBACK" if kw(t.get(1)) == "TO" => Statement::Savepoint,
        "ROLLBACK" => Statement::Rollback,
        "SAVEPOINT" | "RELEASE" => Statement::Savepoint,
        "XA" => Statement::Xa(kw(t.get(1))),
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
        assert_eq!(classify("ROLLBACK TO `sp`"), Statement::Savepoint);
        assert_eq!(classify("SAVEPOINT `a`"), Statement::Savepoint);
        assert_eq!(
            classify("XA START X'31',X'',1"),
            Statement::Xa("START".into())
        );
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
