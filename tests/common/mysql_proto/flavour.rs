//! The scripted answers of the protocol test server, per server flavour: the statements
//! logtide issues (validation, start position, lag, dump setup, schema seeds) and what
//! MySQL 8.0, 8.4 and 9.x answer to them. A statement not in the script is answered with
//! a syntax error *and recorded*, so a test can assert that logtide sent nothing the
//! script does not know.
//!
//! The differences that matter: 8.4 removed `SHOW MASTER STATUS` (8.2 added `SHOW BINARY
//! LOG STATUS`, 8.0 does not have it); `caching_sha2_password` is the default plugin from
//! 8.0 on and `mysql_native_password` is disabled by default from 8.4 (gone in 9.0).
//! MariaDB 10.5 (the version of `mariadb-bin.000001`): `mysql_native_password`, `SHOW
//! MASTER STATUS`, the `BINLOG MONITOR` privilege, no MySQL-only variables, and the
//! replica session variables of its dump (`@mariadb_slave_capability`,
//! `@slave_connect_state` and the GTID strictness switches).

use std::collections::BTreeMap;

/// Which server the test server pretends to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    Mysql80,
    Mysql84,
    Mysql9,
    /// MariaDB 10.5, as the server that wrote `mariadb-bin.000001`.
    Mariadb105,
}

impl Flavour {
    pub fn version(self) -> &'static str {
        match self {
            Flavour::Mysql80 => "8.0.40",
            Flavour::Mysql84 => "8.4.3",
            Flavour::Mysql9 => "9.1.0",
            Flavour::Mariadb105 => "10.5.15-MariaDB-1:10.5.15+maria~focal-log",
        }
    }

    pub fn mariadb(self) -> bool {
        self == Flavour::Mariadb105
    }

    /// `SHOW MASTER STATUS` exists (removed in 8.4).
    pub fn has_show_master_status(self) -> bool {
        matches!(self, Flavour::Mysql80 | Flavour::Mariadb105)
    }

    /// `SHOW BINARY LOG STATUS` exists (added in 8.2).
    pub fn has_show_binary_log_status(self) -> bool {
        matches!(self, Flavour::Mysql84 | Flavour::Mysql9)
    }

    /// The grants of the replication user, as docker/init/mysql.sql creates it (checked by
    /// `mysql8::compose_matches_the_flavour_script`).
    pub fn grants(self, user: &str) -> Vec<String> {
        if self.mariadb() {
            return vec![format!(
                "GRANT SELECT, REPLICATION SLAVE, BINLOG MONITOR ON *.* TO `{user}`@`%` IDENTIFIED BY PASSWORD '*0000000000000000000000000000000000000000'"
            )];
        }
        vec![format!(
            "GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT ON *.* TO `{user}`@`%`"
        )]
    }

    /// The global variables of a server set up for logtide (README: MySQL quick start).
    pub fn variables(self) -> BTreeMap<String, String> {
        let mut v = BTreeMap::new();
        if self.mariadb() {
            for (k, val) in [
                ("version", self.version()),
                ("log_bin", "ON"),
                ("binlog_format", "ROW"),
                ("binlog_row_image", "FULL"),
                ("binlog_row_metadata", "FULL"),
                ("binlog_checksum", "CRC32"),
                ("log_bin_compress", "OFF"),
                ("server_id", "1"),
            ] {
                v.insert(k.to_owned(), val.to_owned());
            }
            return v;
        }
        for (k, val) in [
            ("version", self.version()),
            ("log_bin", "ON"),
            ("binlog_format", "ROW"),
            ("binlog_row_image", "FULL"),
            ("binlog_row_metadata", "FULL"),
            ("binlog_checksum", "CRC32"),
            ("binlog_transaction_compression", "OFF"),
            ("binlog_row_value_options", ""),
            ("gtid_mode", "ON"),
            ("enforce_gtid_consistency", "ON"),
            ("server_id", "1"),
        ] {
            v.insert(k.to_owned(), val.to_owned());
        }
        v
    }
}

/// What the server answers to one statement.
#[derive(Debug, Clone)]
pub enum Answer {
    Ok,
    Err(u16, &'static str, String),
    Rows(Vec<&'static str>, Vec<Vec<Option<String>>>),
}

/// A table the server's `information_schema` describes (for fixtures whose table maps
/// carry no column names, `binlog_row_metadata=MINIMAL`, and whose DDL is not in the file).
#[derive(Debug, Clone)]
pub struct TableDef {
    pub db: String,
    pub name: String,
    /// `(name, lowercase COLUMN_TYPE, character set)`.
    pub columns: Vec<(String, String, Option<String>)>,
    pub key: Vec<String>,
}

/// The server's state a scripted answer depends on.
pub struct Status<'a> {
    pub flavour: Flavour,
    pub user: &'a str,
    pub variables: &'a BTreeMap<String, String>,
    pub file: &'a str,
    /// Where `SHOW MASTER STATUS` / `SHOW BINARY LOG STATUS` says the binlog ends.
    pub end: u64,
    pub file_size: u64,
    /// The session's `@master_binlog_checksum` once set.
    pub checksum: Option<&'a str>,
    pub tables: &'a [TableDef],
}

fn syntax_error(near: &str) -> Answer {
    Answer::Err(
        1064,
        "42000",
        format!("You have an error in your SQL syntax; check the manual that corresponds to your MySQL server version for the right syntax to use near '{near}' at line 1"),
    )
}

/// The table a `WHERE TABLE_SCHEMA = 'db' AND TABLE_NAME = 't'` query names.
fn named<'a>(sql: &str, tables: &'a [TableDef]) -> Option<&'a TableDef> {
    tables.iter().find(|t| {
        sql.contains(&format!("TABLE_SCHEMA = '{}'", t.db))
            && sql.contains(&format!("TABLE_NAME = '{}'", t.name))
    })
}

/// The (uppercased) pattern of `SHOW [GLOBAL | SESSION] VARIABLES LIKE '<pattern>'[;]`.
fn show_variables_like(up: &str) -> Option<String> {
    let rest = up.strip_prefix("SHOW ")?;
    let rest = rest
        .strip_prefix("GLOBAL ")
        .or_else(|| rest.strip_prefix("SESSION "))
        .unwrap_or(rest);
    let quoted = rest
        .strip_prefix("VARIABLES LIKE ")?
        .trim_end_matches(';')
        .trim();
    Some(quoted.strip_prefix('\'')?.strip_suffix('\'')?.to_owned())
}

/// SQL `LIKE` with `%` and `_` (no escapes), on uppercased text.
fn like(pattern: &str, text: &str) -> bool {
    fn go(p: &[u8], t: &[u8]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some((b'%', rest)) => (0..=t.len()).any(|i| go(rest, &t[i..])),
            Some((b'_', rest)) => !t.is_empty() && go(rest, &t[1..]),
            Some((c, rest)) => t.first() == Some(c) && go(rest, &t[1..]),
        }
    }
    go(pattern.as_bytes(), text.as_bytes())
}

fn one(v: &str) -> Option<String> {
    Some(v.to_owned())
}

/// The scripted answer to `sql`, `None` when the script does not know it.
pub fn answer(sql: &str, st: &Status<'_>) -> Option<Answer> {
    let norm: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    let up = norm.to_ascii_uppercase();
    let status_row = || {
        Answer::Rows(
            vec![
                "File",
                "Position",
                "Binlog_Do_DB",
                "Binlog_Ignore_DB",
                "Executed_Gtid_Set",
            ],
            vec![vec![
                one(st.file),
                one(&st.end.to_string()),
                one(""),
                one(""),
                one(""),
            ]],
        )
    };
    Some(if up.starts_with("SHOW GLOBAL VARIABLES WHERE VARIABLE_NAME IN") {
        let list = norm.split_once(" IN ").map(|(_, l)| l).unwrap_or("").to_ascii_lowercase();
        let rows = st
            .variables
            .iter()
            .filter(|(k, _)| list.contains(&format!("'{k}'")))
            .map(|(k, v)| vec![one(k), one(v)])
            .collect();
        Answer::Rows(vec!["Variable_name", "Value"], rows)
    } else if let Some(pattern) = show_variables_like(&up) {
        // `SHOW [GLOBAL | SESSION] VARIABLES LIKE 'name'` (what python-mysql-replication
        // asks for the checksum and the row metadata setting).
        let rows = st
            .variables
            .iter()
            .filter(|(k, _)| like(&pattern, &k.to_ascii_uppercase()))
            .map(|(k, v)| vec![one(k), one(v)])
            .collect();
        Answer::Rows(vec!["Variable_name", "Value"], rows)
    } else if up == "SHOW GRANTS" {
        let user = st.user;
        let rows = st.flavour.grants(user).into_iter().map(|g| vec![Some(g)]).collect();
        Answer::Rows(vec!["Grants for logtide@%"], rows)
    } else if up == "SELECT CURRENT_USER()" {
        Answer::Rows(vec!["CURRENT_USER()"], vec![vec![one(&format!("{}@%", st.user))]])
    } else if up.starts_with("SELECT ID, CHARACTER_SET_NAME FROM INFORMATION_SCHEMA.COLLATIONS") {
        let rows = [("8", "latin1"), ("33", "utf8mb3"), ("45", "utf8mb4"), ("63", "binary"), ("255", "utf8mb4")]
            .iter()
            .map(|(i, c)| vec![one(i), one(c)])
            .collect();
        Answer::Rows(vec!["ID", "CHARACTER_SET_NAME"], rows)
    } else if up == "SHOW MASTER STATUS" {
        if st.flavour.has_show_master_status() {
            status_row()
        } else {
            syntax_error("MASTER STATUS")
        }
    } else if up == "SHOW BINARY LOG STATUS" {
        if st.flavour.has_show_binary_log_status() {
            status_row()
        } else {
            syntax_error("BINARY LOG STATUS")
        }
    } else if up == "SHOW BINARY LOGS" {
        Answer::Rows(
            vec!["Log_name", "File_size", "Encrypted"],
            vec![vec![one(st.file), one(&st.file_size.to_string()), one("No")]],
        )
    } else if up.starts_with("SET @MASTER_HEARTBEAT_PERIOD")
        || up.starts_with("SET @MASTER_BINLOG_CHECKSUM")
        || up.starts_with("SET NAMES")
        || up.starts_with("SET TIME_ZONE")
    {
        Answer::Ok
    } else if up.starts_with("SET @MARIADB_SLAVE_CAPABILITY")
        || up.starts_with("SET @SLAVE_CONNECT_STATE")
        || up.starts_with("SET @SLAVE_GTID_STRICT_MODE")
        || up.starts_with("SET @SLAVE_GTID_IGNORE_DUPLICATES")
    {
        if st.flavour.mariadb() {
            Answer::Ok
        } else {
            // MySQL has no such variables; a user variable is set without complaint, but
            // logtide must not send these to MySQL: recorded as unknown.
            return None;
        }
    } else if up == "SELECT @MASTER_BINLOG_CHECKSUM" {
        Answer::Rows(vec!["@master_binlog_checksum"], vec![vec![st.checksum.map(str::to_owned)]])
    } else if up.starts_with("SELECT TABLE_SCHEMA, TABLE_NAME FROM INFORMATION_SCHEMA.TABLES") {
        // The fixture's tables are created by its own DDL, after the start position.
        Answer::Rows(vec!["TABLE_SCHEMA", "TABLE_NAME"], Vec::new())
    } else if up.starts_with("SELECT TABLE_SCHEMA, TABLE_NAME, COALESCE(TABLE_ROWS, 0) FROM INFORMATION_SCHEMA.TABLES") {
        Answer::Rows(vec!["TABLE_SCHEMA", "TABLE_NAME", "TABLE_ROWS"], Vec::new())
    } else if up.starts_with("SELECT COLUMN_NAME, LOWER(COLUMN_TYPE), CHARACTER_SET_NAME FROM INFORMATION_SCHEMA.COLUMNS") {
        let rows = named(&norm, st.tables)
            .map(|t| t.columns.iter().map(|(n, ty, cs)| vec![one(n), one(ty), cs.clone()]).collect())
            .unwrap_or_default();
        Answer::Rows(vec!["COLUMN_NAME", "COLUMN_TYPE", "CHARACTER_SET_NAME"], rows)
    } else if up.starts_with("SELECT COLUMN_NAME FROM INFORMATION_SCHEMA.COLUMNS") {
        // python-mysql-replication's names for a table map without them.
        let rows = named(&norm, st.tables)
            .map(|t| t.columns.iter().map(|(n, _, _)| vec![one(n)]).collect())
            .unwrap_or_default();
        Answer::Rows(vec!["COLUMN_NAME"], rows)
    } else if up.starts_with("SELECT C.TABLE_SCHEMA, C.TABLE_NAME, C.COLUMN_NAME, C.COLUMN_TYPE, C.IS_NULLABLE FROM INFORMATION_SCHEMA.COLUMNS") {
        Answer::Rows(vec!["TABLE_SCHEMA", "TABLE_NAME", "COLUMN_NAME", "COLUMN_TYPE", "IS_NULLABLE"], Vec::new())
    } else if up.starts_with("SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME FROM INFORMATION_SCHEMA.COLUMNS") {
        // The table filter's check at start: the tables the script describes.
        let rows = st
            .tables
            .iter()
            .flat_map(|t| t.columns.iter().map(move |(c, _, _)| vec![one(&t.db), one(&t.name), one(c)]))
            .collect();
        Answer::Rows(vec!["TABLE_SCHEMA", "TABLE_NAME", "COLUMN_NAME"], rows)
    } else if up.starts_with("SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME FROM INFORMATION_SCHEMA.KEY_COLUMN_USAGE") {
        Answer::Rows(vec!["TABLE_SCHEMA", "TABLE_NAME", "COLUMN_NAME"], Vec::new())
    } else if up.starts_with("SELECT COLUMN_NAME FROM INFORMATION_SCHEMA.STATISTICS") {
        let rows = named(&norm, st.tables)
            .map(|t| t.key.iter().map(|k| vec![one(k)]).collect())
            .unwrap_or_default();
        Answer::Rows(vec!["COLUMN_NAME"], rows)
    } else if up.starts_with("SELECT CHECK_CLAUSE FROM INFORMATION_SCHEMA.CHECK_CONSTRAINTS") {
        Answer::Rows(vec!["CHECK_CLAUSE"], Vec::new())
    } else {
        return None;
    })
}
