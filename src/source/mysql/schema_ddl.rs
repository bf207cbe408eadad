//! DDL statements → table definitions, for the schema history ([`super::history`]).
//!
//! A small, careful parser of what the server logs for CREATE/DROP/RENAME TABLE, ALTER
//! TABLE (ADD/DROP/CHANGE/MODIFY/RENAME COLUMN, RENAME TO, primary keys, JSON checks) and
//! DROP DATABASE, and [`apply`], which changes a [`SchemaInfo`] the way the server does.
//! Everything else that names a table and might change its columns (CONVERT TO CHARACTER
//! SET, CREATE … SELECT, clauses not listed) is [`Ddl::Unknown`]: the reader re-reads that
//! table from `information_schema`. Column types are normalised to the form
//! `information_schema.COLUMNS.COLUMN_TYPE` has (`int(10) unsigned`, `enum('a','B')`),
//! MariaDB's JSON to `longtext` with the `json` flag.

use super::table::{is_hidden, ColumnMeta, SchemaInfo, HIDDEN_PREFIX};

/// `[db.]table` as written (no database: the statement's default one).
pub type TableName = (Option<String>, String);

/// What a DDL statement does to tables, as far as the history cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ddl {
    /// A new table (CREATE TABLE with a column list).
    Create {
        db: Option<String>,
        table: String,
        def: SchemaInfo,
    },
    /// `CREATE TABLE t LIKE s`.
    CreateLike {
        db: Option<String>,
        table: String,
        like_db: Option<String>,
        like: String,
    },
    Drop(Vec<(Option<String>, String)>),
    /// `RENAME TABLE a TO b, …` (also `ALTER TABLE a RENAME TO b` without other changes).
    Rename(Vec<(TableName, TableName)>),
    Alter {
        db: Option<String>,
        table: String,
        changes: Vec<Change>,
        /// `RENAME TO` among the changes, applied last.
        rename: Option<(Option<String>, String)>,
    },
    DropDatabase(String),
    /// DDL naming a table whose effect the parser does not know: re-read it.
    Unknown(Vec<(Option<String>, String)>),
    /// Not about columns or tables (indexes, views, grants, …).
    None,
}

/// One column-level change of an ALTER TABLE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Add {
        col: ColumnMeta,
        place: Place,
        primary: bool,
    },
    Drop(String),
    /// CHANGE (rename + retype) and MODIFY (`old == col.name`).
    Change {
        old: String,
        col: ColumnMeta,
        place: Place,
    },
    RenameColumn {
        old: String,
        new: String,
    },
    PrimaryKey(Vec<String>),
    DropPrimaryKey,
    /// `ADD CONSTRAINT … CHECK (json_valid(c))`: c is MariaDB JSON.
    JsonCheck(String),
    /// `DROP INDEX i`: the hidden columns of its functional key parts go with it.
    DropIndex(String),
    /// `RENAME INDEX a TO b`: its hidden columns are renamed with it.
    RenameIndex {
        old: String,
        new: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    Last,
    First,
    After(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    /// A bare word, as written.
    Word(String),
    /// A back-quoted identifier.
    Ident(String),
    /// A '…' or "…" string, unescaped.
    Str(String),
    Punct(char),
}

impl Tok {
    fn kw(&self) -> Option<String> {
        match self {
            Tok::Word(w) => Some(w.to_ascii_uppercase()),
            _ => None,
        }
    }
    fn is_kw(&self, k: &str) -> bool {
        matches!(self, Tok::Word(w) if w.eq_ignore_ascii_case(k))
    }
    fn name(&self) -> Option<String> {
        match self {
            Tok::Word(w) | Tok::Ident(w) => Some(w.clone()),
            Tok::Str(s) => Some(s.clone()),
            Tok::Punct(_) => None,
        }
    }
}

/// Tokens of a statement: comments dropped (executable `/*!…*/` and `/*M!…*/` kept),
/// `None` on an unterminated quote or comment.
fn tokenize(sql: &str) -> Option<Vec<Tok>> {
    let b = sql.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            let exec = matches!(b.get(i + 2), Some(b'!'))
                || (b.get(i + 2) == Some(&b'M') && b.get(i + 3) == Some(&b'!'));
            if exec {
                i += if b[i + 2] == b'M' { 4 } else { 3 };
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
            } else {
                i += 2 + sql.get(i + 2..)?.find("*/")? + 2;
            }
        } else if c == b'*' && b.get(i + 1) == Some(&b'/') {
            i += 2;
        } else if c == b'#' || (c == b'-' && b.get(i + 1) == Some(&b'-')) {
            match sql[i..].find('\n') {
                Some(e) => i += e + 1,
                None => break,
            }
        } else if c == b'`' || c == b'\'' || c == b'"' {
            let q = c;
            let mut s = Vec::new();
            i += 1;
            loop {
                let x = *b.get(i)?;
                if x == q {
                    if b.get(i + 1) == Some(&q) {
                        s.push(q);
                        i += 2;
                        continue;
                    }
                    i += 1;
                    break;
                }
                if x == b'\\' && q != b'`' {
                    let n = *b.get(i + 1)?;
                    s.push(match n {
                        b'n' => b'\n',
                        b't' => b'\t',
                        b'0' => 0,
                        other => other,
                    });
                    i += 2;
                    continue;
                }
                s.push(x);
                i += 1;
            }
            let s = String::from_utf8_lossy(&s).into_owned();
            out.push(if q == b'`' {
                Tok::Ident(s)
            } else {
                Tok::Str(s)
            });
        } else if c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80 {
            let start = i;
            while i < b.len()
                && (b[i].is_ascii_alphanumeric()
                    || b[i] == b'_'
                    || b[i] == b'$'
                    || b[i] >= 0x80
                    || (b[i] == b'.' && b[start].is_ascii_digit()))
            {
                i += 1;
            }
            out.push(Tok::Word(sql[start..i].to_owned()));
        } else {
            out.push(Tok::Punct(char::from(c)));
            i += 1;
        }
    }
    Some(out)
}

struct P<'a> {
    t: &'a [Tok],
    i: usize,
}

impl<'a> P<'a> {
    fn peek(&self) -> Option<&'a Tok> {
        self.t.get(self.i)
    }
    fn peek_at(&self, n: usize) -> Option<&'a Tok> {
        self.t.get(self.i + n)
    }
    fn next(&mut self) -> Option<&'a Tok> {
        let t = self.t.get(self.i);
        self.i += 1;
        t
    }
    fn eat_kw(&mut self, k: &str) -> bool {
        if self.peek().is_some_and(|t| t.is_kw(k)) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn eat_punct(&mut self, c: char) -> bool {
        if self.peek() == Some(&Tok::Punct(c)) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn done(&self) -> bool {
        self.i >= self.t.len() || self.peek() == Some(&Tok::Punct(';'))
    }
    /// `[db.]name`.
    fn table_name(&mut self) -> Option<(Option<String>, String)> {
        let a = self.next()?.name()?;
        if self.peek() == Some(&Tok::Punct('.')) {
            self.i += 1;
            let b = self.next()?.name()?;
            Some((Some(a), b))
        } else {
            Some((None, a))
        }
    }
    /// Skips a balanced `( … )` starting at the current `(`; returns its tokens.
    fn group(&mut self) -> Option<&'a [Tok]> {
        if !self.eat_punct('(') {
            return None;
        }
        let start = self.i;
        let mut depth = 1;
        while let Some(t) = self.next() {
            match t {
                Tok::Punct('(') => depth += 1,
                Tok::Punct(')') => {
                    depth -= 1;
                    if depth == 0 {
                        return self.t.get(start..self.i - 1);
                    }
                }
                _ => {}
            }
        }
        None
    }
}

/// Splits a token slice at top-level commas.
fn split_commas(t: &[Tok]) -> Vec<&[Tok]> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, x) in t.iter().enumerate() {
        match x {
            Tok::Punct('(') => depth += 1,
            Tok::Punct(')') => depth -= 1,
            Tok::Punct(',') if depth == 0 => {
                out.push(&t[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&t[start..]);
    out
}

/// Column names of a key part list `(a, b(10), c DESC)`.
fn key_columns(t: &[Tok]) -> Vec<String> {
    split_commas(t)
        .into_iter()
        .filter_map(|part| part.first()?.name())
        .collect()
}

/// The index definition after `INDEX` / `KEY` / `UNIQUE [INDEX|KEY]`: `[name] [USING t]
/// (parts) …` (CREATE INDEX: `name [USING t] ON table (parts)`, the table skipped). Returns
/// the name and the positions of the functional key parts (`((expr))`).
fn index_parts(p: &mut P<'_>) -> Option<(Option<String>, Vec<usize>)> {
    if p.eat_kw("IF") {
        p.eat_kw("NOT");
        p.eat_kw("EXISTS");
    }
    let mut name = None;
    if p.peek()? != &Tok::Punct('(') && !p.peek()?.is_kw("USING") && !p.peek()?.is_kw("ON") {
        name = p.next()?.name();
    }
    if p.eat_kw("USING") {
        p.i += 1;
    }
    if p.eat_kw("ON") {
        p.table_name()?;
    }
    let parts = split_commas(p.group()?)
        .iter()
        .enumerate()
        .filter(|(_, part)| part.first() == Some(&Tok::Punct('(')))
        .map(|(i, _)| i)
        .collect();
    Some((name, parts))
}

/// The hidden columns of an index's functional key parts ([`HIDDEN_PREFIX`]); an index
/// without a name gets the server's `functional_index[_n]`, `n` counting from `unnamed`.
fn hidden_columns(name: Option<String>, parts: &[usize], unnamed: &mut usize) -> Vec<ColumnMeta> {
    if parts.is_empty() {
        return Vec::new();
    }
    let index = name.unwrap_or_else(|| {
        *unnamed += 1;
        match *unnamed {
            1 => "functional_index".to_owned(),
            n => format!("functional_index_{n}"),
        }
    });
    parts
        .iter()
        .map(|part| ColumnMeta {
            name: format!("{HIDDEN_PREFIX}{index}!{part}!0"),
            column_type: "functional key part".to_owned(),
            charset: None,
            json: false,
        })
        .collect()
}

/// Whether `col` is a hidden column of index `index`.
fn hidden_of(col: &str, index: &str) -> bool {
    col.strip_prefix(HIDDEN_PREFIX).is_some_and(|rest| {
        rest.get(..index.len())
            .is_some_and(|n| n.eq_ignore_ascii_case(index))
            && rest.get(index.len()..).is_some_and(|r| r.starts_with('!'))
    })
}

/// The type words that name the same type under another spelling.
fn canonical_type(word: &str) -> Option<&'static str> {
    Some(match word {
        "TINYINT" | "INT1" | "BOOL" | "BOOLEAN" => "tinyint",
        "SMALLINT" | "INT2" => "smallint",
        "MEDIUMINT" | "INT3" | "MIDDLEINT" => "mediumint",
        "INT" | "INTEGER" | "INT4" => "int",
        "BIGINT" | "INT8" | "SERIAL" => "bigint",
        "DECIMAL" | "DEC" | "NUMERIC" | "FIXED" | "NUMBER" => "decimal",
        "FLOAT" | "FLOAT4" => "float",
        "DOUBLE" | "REAL" | "FLOAT8" => "double",
        "BIT" => "bit",
        "YEAR" => "year",
        "DATE" => "date",
        "TIME" => "time",
        "DATETIME" => "datetime",
        "TIMESTAMP" => "timestamp",
        "CHAR" | "CHARACTER" | "NCHAR" => "char",
        "VARCHAR" | "NVARCHAR" | "VARCHAR2" | "VARCHARACTER" => "varchar",
        "BINARY" => "binary",
        "VARBINARY" => "varbinary",
        "TINYTEXT" => "tinytext",
        "TEXT" => "text",
        "MEDIUMTEXT" | "LONG" => "mediumtext",
        "LONGTEXT" | "CLOB" => "longtext",
        "TINYBLOB" => "tinyblob",
        "BLOB" => "blob",
        "MEDIUMBLOB" => "mediumblob",
        "LONGBLOB" => "longblob",
        "JSON" => "json",
        "ENUM" => "enum",
        "SET" => "set",
        "UUID" => "uuid",
        "INET4" => "inet4",
        "INET6" => "inet6",
        "GEOMETRY" | "POINT" | "LINESTRING" | "POLYGON" | "MULTIPOINT" | "MULTILINESTRING"
        | "MULTIPOLYGON" | "GEOMETRYCOLLECTION" | "GEOMCOLLECTION" => "geometry",
        _ => return None,
    })
}

fn quote_member(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// One column definition (`name type attributes…`): the column and whether it is the
/// (inline) primary key. `None` when the type is not understood.
fn column_def(t: &[Tok], mariadb: bool) -> Option<(ColumnMeta, bool)> {
    let mut p = P { t, i: 0 };
    let name = p.next()?.name()?;
    let word = p.next()?.kw()?;
    let mut base = canonical_type(&word)?.to_owned();
    // "DOUBLE PRECISION", "CHARACTER VARYING", "NATIONAL CHAR", "LONG VARCHAR".
    if word == "DOUBLE" {
        p.eat_kw("PRECISION");
    }
    if (word == "CHAR" || word == "CHARACTER") && p.eat_kw("VARYING") {
        base = "varchar".into();
    }
    let bool_type = word == "BOOL" || word == "BOOLEAN";
    let mut column_type = base.clone();
    if p.peek() == Some(&Tok::Punct('(')) {
        let args = p.group()?;
        if base == "enum" || base == "set" {
            let members: Vec<String> = args
                .iter()
                .filter_map(|a| match a {
                    Tok::Str(s) => Some(quote_member(s)),
                    _ => None,
                })
                .collect();
            column_type = format!("{base}({})", members.join(","));
        } else {
            let nums: Vec<String> = args
                .iter()
                .filter_map(|a| match a {
                    Tok::Word(w) => Some(w.clone()),
                    _ => None,
                })
                .collect();
            column_type = format!("{base}({})", nums.join(","));
        }
    } else if bool_type {
        column_type = "tinyint(1)".into();
    }
    let mut charset = None;
    let mut primary = false;
    let mut json = base == "json";
    let (mut unsigned, mut zerofill) = (word == "SERIAL", false);
    while let Some(tok) = p.peek() {
        match tok.kw().as_deref() {
            Some("UNSIGNED") => {
                unsigned = true;
                p.i += 1;
            }
            Some("ZEROFILL") => {
                zerofill = true;
                unsigned = true;
                p.i += 1;
            }
            Some("SIGNED") => p.i += 1,
            Some("CHARACTER") | Some("CHARSET") => {
                p.i += 1;
                p.eat_kw("SET");
                p.eat_punct('=');
                charset = p.next().and_then(Tok::name).map(|s| s.to_ascii_lowercase());
            }
            Some("ASCII") => {
                charset = Some("latin1".into());
                p.i += 1;
            }
            Some("UNICODE") => {
                charset = Some("ucs2".into());
                p.i += 1;
            }
            Some("PRIMARY") => {
                primary = true;
                p.i += 1;
                p.eat_kw("KEY");
            }
            Some("CHECK") => {
                p.i += 1;
                let expr = p.group()?;
                if is_json_valid(expr, &name) {
                    json = true;
                }
            }
            Some("DEFAULT") | Some("COMMENT") | Some("COLLATE") | Some("ON") | Some("AS")
            | Some("REFERENCES") | Some("GENERATED") | Some("ALWAYS") => {
                // Skip the attribute's argument (a value, an expression or a name).
                p.i += 1;
                if let Some(Tok::Punct('(')) = p.peek() {
                    p.group()?;
                } else if tok.is_kw("ON") {
                    p.i += 1; // UPDATE
                    p.next();
                    if p.peek() == Some(&Tok::Punct('(')) {
                        p.group()?;
                    }
                } else if !tok.is_kw("GENERATED") && !tok.is_kw("ALWAYS") {
                    p.eat_punct('=');
                    // `-1`, `+1`: a sign then the number.
                    if matches!(p.peek(), Some(Tok::Punct('-' | '+'))) {
                        p.i += 1;
                    }
                    p.next();
                    if p.peek() == Some(&Tok::Punct('(')) {
                        p.group()?;
                    }
                }
            }
            _ => {
                // NOT NULL, NULL, AUTO_INCREMENT, UNIQUE, KEY, COMPRESSED, INVISIBLE,
                // VIRTUAL, STORED, PERSISTENT, BINARY, … and anything in parentheses.
                if p.peek() == Some(&Tok::Punct('(')) {
                    p.group()?;
                } else {
                    p.i += 1;
                }
            }
        }
    }
    if unsigned
        && matches!(
            base.as_str(),
            "tinyint"
                | "smallint"
                | "mediumint"
                | "int"
                | "bigint"
                | "decimal"
                | "float"
                | "double"
        )
    {
        column_type.push_str(" unsigned");
    }
    if zerofill {
        column_type.push_str(" zerofill");
    }
    if json && mariadb {
        // MariaDB's JSON is a LONGTEXT with a json_valid check.
        column_type = "longtext".into();
        if charset.is_none() {
            charset = Some("utf8mb4".into());
        }
    }
    if matches!(
        base.as_str(),
        "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob"
    ) {
        charset = None;
    }
    Some((
        ColumnMeta {
            name,
            column_type,
            charset,
            json,
        },
        primary,
    ))
}

/// `json_valid(`col`)` (any case, any quoting).
fn is_json_valid(expr: &[Tok], col: &str) -> bool {
    matches!(expr, [f, Tok::Punct('('), c, Tok::Punct(')')]
        if f.is_kw("json_valid") && c.name().is_some_and(|n| n.eq_ignore_ascii_case(col)))
}

/// The json_valid column of a CHECK constraint body, if that is all it checks.
fn json_check_column(expr: &[Tok]) -> Option<String> {
    match expr {
        [f, Tok::Punct('('), c, Tok::Punct(')')] if f.is_kw("json_valid") => c.name(),
        _ => None,
    }
}

/// Parses a query event's DDL. `mariadb` decides what `JSON` means.
pub fn parse_ddl(sql: &str, mariadb: bool) -> Ddl {
    let Some(t) = tokenize(sql) else {
        return Ddl::None;
    };
    let mut p = P { t: &t, i: 0 };
    let first = p.peek().and_then(Tok::kw).unwrap_or_default();
    match first.as_str() {
        "CREATE" => {
            p.i += 1;
            if p.eat_kw("OR") {
                p.eat_kw("REPLACE");
            }
            if p.eat_kw("TEMPORARY") {
                return Ddl::None;
            }
            if p.eat_kw("DATABASE") || p.eat_kw("SCHEMA") {
                return Ddl::None;
            }
            if p.eat_kw("UNIQUE") || p.eat_kw("INDEX") {
                // CREATE [UNIQUE] INDEX: only a functional key part changes the columns.
                p.eat_kw("INDEX");
                let Some(name) = p.peek().and_then(Tok::name) else {
                    return Ddl::None;
                };
                let Some(on) = p.t.iter().skip(p.i).position(|x| x.is_kw("ON")) else {
                    return Ddl::None;
                };
                let mut q = P {
                    t: p.t,
                    i: p.i + on + 1,
                };
                let Some((db, table)) = q.table_name() else {
                    return Ddl::None;
                };
                let Some((_, parts)) = index_parts(&mut p) else {
                    return Ddl::None;
                };
                let changes: Vec<Change> = hidden_columns(Some(name), &parts, &mut 0)
                    .into_iter()
                    .map(|col| Change::Add {
                        col,
                        place: Place::Last,
                        primary: false,
                    })
                    .collect();
                if changes.is_empty() {
                    return Ddl::None;
                }
                return Ddl::Alter {
                    db,
                    table,
                    changes,
                    rename: None,
                };
            }
            if !p.eat_kw("TABLE") {
                return Ddl::None;
            }
            if p.eat_kw("IF") {
                p.eat_kw("NOT");
                p.eat_kw("EXISTS");
            }
            let Some((db, table)) = p.table_name() else {
                return Ddl::None;
            };
            let unknown = |db: Option<String>, table: String| Ddl::Unknown(vec![(db, table)]);
            if p.eat_kw("LIKE")
                || (p.peek() == Some(&Tok::Punct('('))
                    && p.peek_at(1).is_some_and(|x| x.is_kw("LIKE")))
            {
                p.eat_punct('(');
                p.eat_kw("LIKE");
                return match p.table_name() {
                    Some((like_db, like)) => Ddl::CreateLike {
                        db,
                        table,
                        like_db,
                        like,
                    },
                    None => unknown(db, table),
                };
            }
            let Some(body) = p.group() else {
                return unknown(db, table);
            };
            // CREATE … SELECT adds the query's columns: not known here.
            while !p.done() {
                if p.peek().is_some_and(|x| x.is_kw("SELECT") || x.is_kw("AS")) {
                    return unknown(db, table);
                }
                p.i += 1;
            }
            match create_body(body, mariadb) {
                Some(def) => Ddl::Create { db, table, def },
                None => unknown(db, table),
            }
        }
        "DROP" => {
            p.i += 1;
            if p.eat_kw("DATABASE") || p.eat_kw("SCHEMA") {
                if p.eat_kw("IF") {
                    p.eat_kw("EXISTS");
                }
                return match p.next().and_then(Tok::name) {
                    Some(d) => Ddl::DropDatabase(d),
                    None => Ddl::None,
                };
            }
            if p.eat_kw("INDEX") {
                // DROP INDEX i ON t: its functional key parts' hidden columns go.
                if p.eat_kw("IF") {
                    p.eat_kw("EXISTS");
                }
                let (Some(index), true, Some((db, table))) =
                    (p.next().and_then(Tok::name), p.eat_kw("ON"), p.table_name())
                else {
                    return Ddl::None;
                };
                return Ddl::Alter {
                    db,
                    table,
                    changes: vec![Change::DropIndex(index)],
                    rename: None,
                };
            }
            if p.eat_kw("TEMPORARY") {
                return Ddl::None;
            }
            if !p.eat_kw("TABLE") {
                return Ddl::None;
            }
            if p.eat_kw("IF") {
                p.eat_kw("EXISTS");
            }
            let mut tables = Vec::new();
            while let Some(n) = p.table_name() {
                tables.push(n);
                if !p.eat_punct(',') {
                    break;
                }
            }
            Ddl::Drop(tables)
        }
        "RENAME" => {
            p.i += 1;
            if !p.eat_kw("TABLE") && !p.eat_kw("TABLES") {
                return Ddl::None;
            }
            let mut pairs = Vec::new();
            loop {
                let (Some(a), true, Some(b)) = (p.table_name(), p.eat_kw("TO"), p.table_name())
                else {
                    return Ddl::Unknown(pairs.into_iter().map(|(a, _)| a).collect());
                };
                pairs.push((a, b));
                if !p.eat_punct(',') {
                    break;
                }
            }
            Ddl::Rename(pairs)
        }
        "ALTER" => {
            p.i += 1;
            p.eat_kw("ONLINE");
            p.eat_kw("IGNORE");
            if !p.eat_kw("TABLE") {
                return Ddl::None;
            }
            if p.eat_kw("IF") {
                p.eat_kw("EXISTS");
            }
            let Some((db, table)) = p.table_name() else {
                return Ddl::None;
            };
            let rest = p.t.get(p.i..).unwrap_or_default();
            match alter_specs(rest, mariadb) {
                Some((changes, rename)) => {
                    if changes.is_empty() {
                        if let Some(to) = rename {
                            return Ddl::Rename(vec![((db, table), to)]);
                        }
                    }
                    Ddl::Alter {
                        db,
                        table,
                        changes,
                        rename,
                    }
                }
                None => Ddl::Unknown(vec![(db, table)]),
            }
        }
        _ => Ddl::None,
    }
}

/// The column list of CREATE TABLE.
fn create_body(body: &[Tok], mariadb: bool) -> Option<SchemaInfo> {
    let mut columns = Vec::new();
    let mut key_names: Vec<String> = Vec::new();
    let mut json_checks = Vec::new();
    let (mut hidden, mut unnamed) = (Vec::new(), 0);
    for item in split_commas(body) {
        let Some(head) = item.first() else { continue };
        let kw = head.kw().unwrap_or_default();
        let mut p = P { t: item, i: 0 };
        // A UNIQUE constraint's symbol names its index when the index has no name.
        let mut symbol = None;
        if kw == "CONSTRAINT" {
            p.i += 1;
            if !p.peek().is_some_and(|x| {
                x.is_kw("PRIMARY") || x.is_kw("CHECK") || x.is_kw("UNIQUE") || x.is_kw("FOREIGN")
            }) {
                symbol = p.next().and_then(Tok::name);
            }
        }
        let k = p.peek().and_then(Tok::kw).unwrap_or_default();
        match (k.as_str(), matches!(head, Tok::Word(_))) {
            ("PRIMARY", true) => {
                p.i += 1;
                p.eat_kw("KEY");
                // USING BTREE before the list.
                while p.peek().is_some_and(|x| x != &Tok::Punct('(')) {
                    p.i += 1;
                }
                key_names = key_columns(p.group()?);
            }
            ("CHECK", true) => {
                p.i += 1;
                if let Some(c) = json_check_column(p.group()?) {
                    json_checks.push(c);
                }
            }
            // Indexes and other constraints (reserved words unless back-quoted); a
            // column may be called `period`, the clause is `PERIOD FOR …`.
            ("KEY" | "INDEX" | "UNIQUE", true) => {
                p.i += 1;
                if k == "UNIQUE" && !p.eat_kw("INDEX") {
                    p.eat_kw("KEY");
                }
                let (name, parts) = index_parts(&mut p)?;
                hidden.extend(hidden_columns(name.or(symbol), &parts, &mut unnamed));
            }
            ("FULLTEXT" | "SPATIAL" | "FOREIGN", true) => {}
            ("PERIOD", true) if p.peek_at(1).is_some_and(|x| x.is_kw("FOR")) => {}
            _ => {
                let (col, primary) = column_def(item, mariadb)?;
                if primary {
                    key_names = vec![col.name.clone()];
                }
                columns.push(col);
            }
        }
    }
    for c in json_checks {
        if let Some(col) = columns.iter_mut().find(|x| x.name.eq_ignore_ascii_case(&c)) {
            mark_json(col, mariadb);
        }
    }
    let key = key_names
        .iter()
        .filter_map(|k| columns.iter().position(|c| c.name.eq_ignore_ascii_case(k)))
        .collect();
    // After every column, in index order (see `HIDDEN_PREFIX`).
    columns.extend(hidden);
    Some(SchemaInfo { columns, key })
}

fn mark_json(col: &mut ColumnMeta, mariadb: bool) {
    if mariadb && col.column_type == "longtext" {
        col.json = true;
    }
}

type Alter = (Vec<Change>, Option<(Option<String>, String)>);

/// The specifications of ALTER TABLE; `None` when one changes columns in a way the parser
/// does not follow.
fn alter_specs(t: &[Tok], mariadb: bool) -> Option<Alter> {
    let mut changes = Vec::new();
    let mut rename = None;
    for spec in split_commas(t) {
        let mut p = P { t: spec, i: 0 };
        let Some(k) = p.peek().and_then(Tok::kw) else {
            if spec.is_empty() {
                continue;
            }
            return None;
        };
        p.i += 1;
        match k.as_str() {
            "ADD" => {
                let mut symbol = None;
                if p.eat_kw("CONSTRAINT")
                    && !p.peek().is_some_and(|x| {
                        x.is_kw("PRIMARY")
                            || x.is_kw("CHECK")
                            || x.is_kw("UNIQUE")
                            || x.is_kw("FOREIGN")
                    })
                {
                    symbol = p.next().and_then(Tok::name);
                }
                let k2 = p.peek().and_then(Tok::kw).unwrap_or_default();
                match k2.as_str() {
                    "PRIMARY" => {
                        p.i += 1;
                        p.eat_kw("KEY");
                        while p.peek().is_some_and(|x| x != &Tok::Punct('(')) {
                            p.i += 1;
                        }
                        changes.push(Change::PrimaryKey(key_columns(p.group()?)));
                    }
                    "CHECK" => {
                        p.i += 1;
                        if let Some(c) = json_check_column(p.group()?) {
                            changes.push(Change::JsonCheck(c));
                        }
                    }
                    "INDEX" | "KEY" | "UNIQUE" => {
                        p.i += 1;
                        if k2 == "UNIQUE" && !p.eat_kw("INDEX") {
                            p.eat_kw("KEY");
                        }
                        let (name, parts) = index_parts(&mut p)?;
                        for col in hidden_columns(name.or(symbol), &parts, &mut 0) {
                            changes.push(Change::Add {
                                col,
                                place: Place::Last,
                                primary: false,
                            });
                        }
                    }
                    "FULLTEXT" | "SPATIAL" | "FOREIGN" | "PARTITION" | "PERIOD" | "SYSTEM" => {}
                    _ => {
                        p.eat_kw("COLUMN");
                        if p.eat_kw("IF") {
                            p.eat_kw("NOT");
                            p.eat_kw("EXISTS");
                        }
                        if p.peek() == Some(&Tok::Punct('(')) {
                            for def in split_commas(p.group()?) {
                                let (col, primary) = column_def(def, mariadb)?;
                                changes.push(Change::Add {
                                    col,
                                    place: Place::Last,
                                    primary,
                                });
                            }
                        } else {
                            let rest = &spec[p.i..];
                            let (def, place) = split_place(rest);
                            let (col, primary) = column_def(def, mariadb)?;
                            changes.push(Change::Add {
                                col,
                                place,
                                primary,
                            });
                        }
                    }
                }
            }
            "DROP" => {
                let k2 = p.peek().and_then(Tok::kw).unwrap_or_default();
                match k2.as_str() {
                    "PRIMARY" => changes.push(Change::DropPrimaryKey),
                    "INDEX" | "KEY" => {
                        p.i += 1;
                        if p.eat_kw("IF") {
                            p.eat_kw("EXISTS");
                        }
                        changes.push(Change::DropIndex(p.next()?.name()?));
                    }
                    "FOREIGN" | "CONSTRAINT" | "CHECK" | "PARTITION" | "PERIOD" | "SYSTEM" => {}
                    _ => {
                        p.eat_kw("COLUMN");
                        if p.eat_kw("IF") {
                            p.eat_kw("EXISTS");
                        }
                        changes.push(Change::Drop(p.next()?.name()?));
                    }
                }
            }
            "CHANGE" | "MODIFY" => {
                p.eat_kw("COLUMN");
                if p.eat_kw("IF") {
                    p.eat_kw("EXISTS");
                }
                let old = if k == "CHANGE" {
                    p.next()?.name()?
                } else {
                    p.peek()?.name()?
                };
                let (def, place) = split_place(&spec[p.i..]);
                let (col, _) = column_def(def, mariadb)?;
                changes.push(Change::Change { old, col, place });
            }
            "RENAME" => {
                if p.eat_kw("COLUMN") {
                    let old = p.next()?.name()?;
                    if !p.eat_kw("TO") {
                        return None;
                    }
                    let new = p.next()?.name()?;
                    changes.push(Change::RenameColumn { old, new });
                } else if p.eat_kw("INDEX") || p.eat_kw("KEY") {
                    let old = p.next()?.name()?;
                    if !p.eat_kw("TO") {
                        return None;
                    }
                    let new = p.next()?.name()?;
                    changes.push(Change::RenameIndex { old, new });
                } else {
                    if !p.eat_kw("TO") {
                        p.eat_kw("AS");
                    }
                    rename = Some(p.table_name()?);
                }
            }
            // No change to columns, their types or the key.
            "ALTER"
            | "ENGINE"
            | "COMMENT"
            | "AUTO_INCREMENT"
            | "ROW_FORMAT"
            | "ALGORITHM"
            | "LOCK"
            | "FORCE"
            | "KEY_BLOCK_SIZE"
            | "STATS_PERSISTENT"
            | "STATS_AUTO_RECALC"
            | "STATS_SAMPLE_PAGES"
            | "PAGE_CHECKSUM"
            | "PAGE_COMPRESSED"
            | "PAGE_COMPRESSION_LEVEL"
            | "TRANSACTIONAL"
            | "CHECKSUM"
            | "DELAY_KEY_WRITE"
            | "ENCRYPTED"
            | "ENCRYPTION_KEY_ID"
            | "MAX_ROWS"
            | "MIN_ROWS"
            | "PACK_KEYS"
            | "ORDER"
            | "ENABLE"
            | "DISABLE"
            | "PARTITION"
            | "REMOVE"
            | "COALESCE"
            | "REORGANIZE"
            | "TRUNCATE"
            | "ANALYZE"
            | "CHECK"
            | "OPTIMIZE"
            | "REBUILD"
            | "REPAIR"
            | "EXCHANGE"
            | "DISCARD"
            | "IMPORT"
            | "DEFAULT"
            | "CHARACTER"
            | "CHARSET"
            | "COLLATE"
            | "NOWAIT"
            | "WAIT"
            | "UNION"
            | "DATA"
            | "INDEX"
            | "TABLESPACE"
            | "STORAGE"
            | "CONNECTION"
            | "PASSWORD"
            | "INSERT_METHOD"
            | "IETF_QUOTES"
            | "SEQUENCE"
            | "WITH"
            | "WITHOUT"
            | "VALIDATION" => {
                // CHARACTER SET / DEFAULT CHARSET change the table default only; CONVERT TO
                // does change columns (below).
            }
            _ => return None,
        }
    }
    Some((changes, rename))
}

/// A column definition and its trailing `FIRST` / `AFTER col`.
fn split_place(t: &[Tok]) -> (&[Tok], Place) {
    let n = t.len();
    if n >= 1 && t[n - 1].is_kw("FIRST") {
        return (&t[..n - 1], Place::First);
    }
    if n >= 2 && t[n - 2].is_kw("AFTER") {
        if let Some(c) = t[n - 1].name() {
            return (&t[..n - 2], Place::After(c));
        }
    }
    (t, Place::Last)
}

/// Applies ALTER TABLE changes to `def`; `None` when one does not fit (a column that is
/// not there): the caller re-reads the table. Like the server, CHANGE / MODIFY / DROP /
/// RENAME COLUMN name the columns as they were before the statement, so
/// `CHANGE a b …, CHANGE b a …` swaps two names.
pub fn apply(def: &SchemaInfo, changes: &[Change], mariadb: bool) -> Option<SchemaInfo> {
    // Each column with the name it had before the statement (`None`: added by it).
    let mut cols: Vec<(Option<String>, ColumnMeta)> = def
        .columns
        .iter()
        .map(|c| (Some(c.name.clone()), c.clone()))
        .collect();
    // Key columns by their name before the statement, or new names for a new key.
    let mut key: Vec<(bool, String)> = def
        .key
        .iter()
        .filter_map(|&k| def.columns.get(k).map(|c| (true, c.name.clone())))
        .collect();
    let orig = |cols: &[(Option<String>, ColumnMeta)], name: &str| {
        cols.iter()
            .position(|(o, _)| o.as_deref().is_some_and(|o| o.eq_ignore_ascii_case(name)))
    };
    let current = |cols: &[(Option<String>, ColumnMeta)], name: &str| {
        cols.iter()
            .position(|(_, c)| c.name.eq_ignore_ascii_case(name))
    };
    let place_at = |cols: &[(Option<String>, ColumnMeta)], place: &Place| -> Option<usize> {
        Some(match place {
            Place::Last => cols.len(),
            Place::First => 0,
            Place::After(c) => current(cols, c).or_else(|| orig(cols, c))? + 1,
        })
    };
    for ch in changes {
        match ch {
            Change::Add {
                col,
                place,
                primary,
            } => {
                if is_hidden(&col.name) {
                    // A functional key part: last, its counter bumped past a name taken
                    // (an unnamed index's generated name is not known to be unique).
                    let mut col = col.clone();
                    let stem = col
                        .name
                        .trim_end_matches(|c: char| c.is_ascii_digit())
                        .to_owned();
                    let mut n = 0;
                    while current(&cols, &col.name).is_some() {
                        n += 1;
                        col.name = format!("{stem}{n}");
                    }
                    cols.push((None, col));
                    continue;
                }
                if current(&cols, &col.name).is_some() {
                    // ADD COLUMN IF NOT EXISTS of an existing column.
                    continue;
                }
                let at = place_at(&cols, place)?;
                cols.insert(at, (None, col.clone()));
                if *primary {
                    key = vec![(false, col.name.clone())];
                }
            }
            Change::Drop(name) => {
                if let Some(i) = orig(&cols, name) {
                    cols.remove(i);
                }
            }
            Change::Change { old, col, place } => {
                let i = orig(&cols, old)?;
                let (o, _) = cols.remove(i);
                let at = match place {
                    Place::Last => i,
                    other => place_at(&cols, other)?,
                };
                cols.insert(at.min(cols.len()), (o, col.clone()));
            }
            Change::RenameColumn { old, new } => {
                let i = orig(&cols, old)?;
                cols[i].1.name = new.clone();
            }
            Change::PrimaryKey(k) => key = k.iter().map(|n| (false, n.clone())).collect(),
            Change::DropPrimaryKey => key.clear(),
            Change::JsonCheck(c) => {
                let i = current(&cols, c)?;
                mark_json(&mut cols[i].1, mariadb);
            }
            Change::DropIndex(index) => cols.retain(|(_, c)| !hidden_of(&c.name, index)),
            Change::RenameIndex { old, new } => {
                for (_, c) in cols.iter_mut().filter(|(_, c)| hidden_of(&c.name, old)) {
                    let rest = &c.name[HIDDEN_PREFIX.len() + old.len()..];
                    c.name = format!("{HIDDEN_PREFIX}{new}{rest}");
                }
            }
        }
    }
    let key = key
        .iter()
        .filter_map(|(old, k)| {
            if *old {
                orig(&cols, k)
            } else {
                current(&cols, k)
            }
        })
        .collect();
    Some(SchemaInfo {
        columns: cols.into_iter().map(|(_, c)| c).collect(),
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(d: &SchemaInfo) -> Vec<&str> {
        d.columns.iter().map(|c| c.name.as_str()).collect()
    }

    fn create(sql: &str) -> SchemaInfo {
        match parse_ddl(sql, true) {
            Ddl::Create { def, .. } => def,
            other => panic!("{sql}: {other:?}"),
        }
    }

    fn alter(def: &SchemaInfo, sql: &str) -> SchemaInfo {
        match parse_ddl(sql, true) {
            Ddl::Alter { changes, .. } => apply(def, &changes, true).expect("applies"),
            other => panic!("{sql}: {other:?}"),
        }
    }

    #[test]
    fn create_table_columns_types_and_key() {
        let d = create(
            "CREATE TABLE IF NOT EXISTS `shop`.`t` (
               `id` int(10) unsigned NOT NULL AUTO_INCREMENT,
               first_name VARCHAR(40) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin DEFAULT 'a,b' COMMENT 'x(',
               doc JSON DEFAULT NULL,
               d2 LONGTEXT CHECK (json_valid(`d2`)),
               d3 longtext,
               e ENUM('A','it''s','x,y') NOT NULL,
               u UUID, n DECIMAL(10,2) ZEROFILL, b BOOL,
               g INT AS (id + 1) VIRTUAL,
               PRIMARY KEY (`id`), KEY k (first_name(10)), CONSTRAINT c3 CHECK (json_valid(d3))
             ) ENGINE=InnoDB DEFAULT CHARSET=latin1",
        );
        assert_eq!(
            names(&d),
            [
                "id",
                "first_name",
                "doc",
                "d2",
                "d3",
                "e",
                "u",
                "n",
                "b",
                "g"
            ]
        );
        assert_eq!(d.key, vec![0]);
        let c = &d.columns;
        assert_eq!(c[0].column_type, "int(10) unsigned");
        assert_eq!(c[1].column_type, "varchar(40)");
        assert_eq!(c[1].charset.as_deref(), Some("utf8mb4"));
        assert!(c[2].json && c[2].column_type == "longtext");
        assert!(c[3].json && c[4].json);
        assert_eq!(c[5].column_type, "enum('A','it''s','x,y')");
        assert_eq!(
            super::super::table::parse_members(&c[5].column_type),
            ["A", "it's", "x,y"]
        );
        assert_eq!(c[6].column_type, "uuid");
        assert_eq!(c[7].column_type, "decimal(10,2) unsigned zerofill");
        assert_eq!(c[8].column_type, "tinyint(1)");
        let inline = create("create table x (a int primary key, b text) /* generated */");
        assert_eq!(inline.key, vec![0]);
        assert!(matches!(
            parse_ddl("CREATE TABLE t2 LIKE t", true),
            Ddl::CreateLike { .. }
        ));
        assert!(matches!(
            parse_ddl("CREATE TABLE t3 AS SELECT * FROM t", true),
            Ddl::Unknown(_)
        ));
        assert!(matches!(
            parse_ddl("CREATE TABLE t3 (a int) SELECT 1 AS a", true),
            Ddl::Unknown(_)
        ));
        assert_eq!(
            parse_ddl("CREATE TEMPORARY TABLE x (a int)", true),
            Ddl::None
        );
        assert_eq!(parse_ddl("CREATE INDEX i ON t (a)", true), Ddl::None);
        // MySQL's JSON is its own type.
        match parse_ddl("CREATE TABLE j (doc JSON)", false) {
            Ddl::Create { def, .. } => assert_eq!(def.columns[0].column_type, "json"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn alter_table_column_changes() {
        let d = create(
            "CREATE TABLE p (id INT PRIMARY KEY, first_name VARCHAR(20), last_name VARCHAR(20))",
        );
        // The swap of the issue: both names exchanged in one statement.
        let s = alter(
            &d,
            "ALTER TABLE p CHANGE first_name last_name VARCHAR(20), CHANGE last_name first_name VARCHAR(20)",
        );
        assert_eq!(names(&s), ["id", "last_name", "first_name"]);
        let a = alter(&d, "ALTER TABLE p ADD COLUMN c DATE AFTER id, ADD d INT FIRST, ADD COLUMN IF NOT EXISTS c DATE");
        assert_eq!(names(&a), ["d", "id", "c", "first_name", "last_name"]);
        assert_eq!(a.key, vec![1]);
        let b = alter(&a, "ALTER TABLE p DROP COLUMN c, DROP d, MODIFY first_name TEXT FIRST, ENGINE=InnoDB, ADD INDEX i (id)");
        assert_eq!(names(&b), ["first_name", "id", "last_name"]);
        assert_eq!(b.columns[0].column_type, "text");
        let c = alter(&b, "alter table p rename column last_name to surname, drop primary key, add primary key (surname, id)");
        assert_eq!(names(&c), ["first_name", "id", "surname"]);
        assert_eq!(c.key, vec![2, 1]);
        let j = alter(&c, "ALTER TABLE p ADD COLUMN doc JSON, ADD (x INT, y INT)");
        assert!(j.columns[3].json);
        assert_eq!(names(&j), ["first_name", "id", "surname", "doc", "x", "y"]);
        assert!(matches!(
            parse_ddl("ALTER TABLE p CONVERT TO CHARACTER SET utf8mb4", true),
            Ddl::Unknown(_)
        ));
        assert_eq!(
            parse_ddl("ALTER TABLE a.p RENAME TO b.q", true),
            Ddl::Rename(vec![(
                (Some("a".into()), "p".into()),
                (Some("b".into()), "q".into())
            )])
        );
        match parse_ddl("ALTER TABLE p ADD COLUMN z INT, RENAME AS q", true) {
            Ddl::Alter {
                rename, changes, ..
            } => {
                assert_eq!(rename, Some((None, "q".into())));
                assert_eq!(changes.len(), 1);
            }
            other => panic!("{other:?}"),
        }
        // A column that is not there: the caller re-reads the table.
        match parse_ddl("ALTER TABLE p DROP COLUMN nope, CHANGE gone x INT", true) {
            Ddl::Alter { changes, .. } => assert!(apply(&d, &changes, true).is_none()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn drop_rename_and_others() {
        assert_eq!(
            parse_ddl(
                "DROP TABLE IF EXISTS `t`, d.u /* generated by server */",
                true
            ),
            Ddl::Drop(vec![(None, "t".into()), (Some("d".into()), "u".into())])
        );
        assert_eq!(
            parse_ddl("RENAME TABLE a TO b, x.c TO y.d", true),
            Ddl::Rename(vec![
                ((None, "a".into()), (None, "b".into())),
                (
                    (Some("x".into()), "c".into()),
                    (Some("y".into()), "d".into())
                )
            ])
        );
        assert_eq!(
            parse_ddl("DROP DATABASE IF EXISTS `d`", true),
            Ddl::DropDatabase("d".into())
        );
        assert_eq!(parse_ddl("GRANT SELECT ON *.* TO x", true), Ddl::None);
        assert_eq!(parse_ddl("FLUSH PRIVILEGES", true), Ddl::None);
        assert_eq!(parse_ddl("ALTER TABLE 'unterminated", true), Ddl::None);
        assert!(matches!(
            parse_ddl("ALTER TABLE t FROBNICATE", true),
            Ddl::Unknown(_)
        ));
    }

    /// MySQL's hidden columns of functional key parts (`table::HIDDEN_PREFIX`): after the
    /// columns of the CREATE, in index order; a column added later comes after them; they
    /// go with their index and follow its renames. The order is the one of the table map in
    /// `rpl_unfiltered_hidden_gcol.000001` (MySQL 8.0.17: `a`, the hidden column, `b`).
    #[test]
    fn functional_index_hidden_columns() {
        let d = create("CREATE TABLE t (a INT, INDEX i((a+1)))");
        assert_eq!(names(&d), ["a", "!hidden!i!0!0"]);
        let d = alter(&d, "ALTER TABLE t ADD COLUMN b TEXT");
        assert_eq!(names(&d), ["a", "!hidden!i!0!0", "b"]);
        let v = d.visible();
        assert_eq!(
            v.columns
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(d.for_map(3).columns.len(), 3);
        assert_eq!(d.for_map(2).columns.len(), 2);
        let d = create(
            "CREATE TABLE u (id INT, name TEXT, CONSTRAINT c UNIQUE KEY ((lower(name)), id), \
             KEY (id), INDEX ((id * 2)), INDEX ((id * 3)), PRIMARY KEY (id), KEY k2 (name(4)))",
        );
        assert_eq!(
            names(&d),
            [
                "id",
                "name",
                "!hidden!c!0!0",
                "!hidden!functional_index!0!0",
                "!hidden!functional_index_2!0!0"
            ]
        );
        assert_eq!(d.key, vec![0]);
        let e = alter(
            &d,
            "ALTER TABLE u DROP INDEX functional_index, ADD UNIQUE INDEX j (id, (id + 1)), RENAME INDEX c TO cc",
        );
        assert_eq!(
            names(&e),
            [
                "id",
                "name",
                "!hidden!cc!0!0",
                "!hidden!functional_index_2!0!0",
                "!hidden!j!1!0"
            ]
        );
        match parse_ddl("CREATE UNIQUE INDEX f USING BTREE ON s.u ((id + 7))", false) {
            Ddl::Alter {
                db, table, changes, ..
            } => {
                assert_eq!((db.as_deref(), table.as_str()), (Some("s"), "u"));
                let f = apply(&e, &changes, false).expect("applies");
                assert_eq!(names(&f)[5], "!hidden!f!0!0");
                match parse_ddl("DROP INDEX `F` ON s.u", false) {
                    Ddl::Alter { changes, .. } => {
                        let g = apply(&f, &changes, false).expect("applies");
                        assert_eq!(names(&g), names(&e));
                    }
                    other => panic!("{other:?}"),
                }
            }
            other => panic!("{other:?}"),
        }
        // A second unnamed functional index added by ALTER gets a name of its own.
        let h = alter(
            &create("CREATE TABLE v (a INT, INDEX ((a+1)))"),
            "ALTER TABLE v ADD INDEX ((a+2))",
        );
        assert_eq!(
            names(&h),
            [
                "a",
                "!hidden!functional_index!0!0",
                "!hidden!functional_index!0!1"
            ]
        );
        assert_eq!(parse_ddl("CREATE INDEX i ON t (a)", false), Ddl::None);
    }
}
