//! Startup validation over SQL: server settings and privileges, each failure an error that
//! says what to change. Grants are parsed, never printed (they may contain password hashes).

use super::error::MysqlError;
use super::sql::SqlConn;
use crate::filter::{Filter, KnownTable, UnmatchedList};
use std::collections::HashMap;

/// What validation learned about the server.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    pub mariadb: bool,
    pub version: String,
    /// `binlog_row_metadata=FULL`: names, members and key come from the table maps.
    pub metadata_full: bool,
    pub row_image: String,
}

/// The replication-related server variables, names lowercased.
pub fn read_settings(conn: &mut SqlConn) -> Result<HashMap<String, String>, MysqlError> {
    let rs = conn.query(
        "SHOW GLOBAL VARIABLES WHERE Variable_name IN ('version', 'log_bin', 'binlog_format', 'binlog_row_image', \
         'binlog_row_metadata', 'log_bin_compress', 'binlog_transaction_compression', 'binlog_row_value_options')",
    )?;
    Ok((0..rs.rows.len())
        .filter_map(|r| {
            Some((
                rs.text(r, 0)?.to_ascii_lowercase(),
                rs.text(r, 1).unwrap_or_default(),
            ))
        })
        .collect())
}

/// Every setting that stops logtide, in the order they are checked (empty: all fine).
/// `binlog_row_image`, `binlog_row_metadata` and `binlog_row_value_options` are advisory
/// and not included (see [`partial_json_loses_documents`]).
pub fn setting_problems(vars: &HashMap<String, String>) -> Vec<MysqlError> {
    let var = |k: &str| {
        vars.get(k)
            .map(|v| v.to_ascii_uppercase())
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    if var("log_bin") != "ON" {
        out.push(MysqlError::Setting {
            setting: "log_bin",
            actual: var("log_bin"),
            wanted: "ON",
            fix: "start the server with binary logging (e.g. [mysqld] log_bin=mysql-bin and server_id=1 in its config) and restart it".into(),
        });
    }
    if var("binlog_format") != "ROW" {
        out.push(MysqlError::Setting {
            setting: "binlog_format",
            actual: var("binlog_format"),
            wanted: "ROW",
            fix: "run SET GLOBAL binlog_format = 'ROW' and put binlog_format=ROW in the server config ([mysqld]); sessions already connected keep their old format until they reconnect".into(),
        });
    }
    if var("log_bin_compress") == "ON" {
        out.push(MysqlError::Setting {
            setting: "log_bin_compress",
            actual: "ON".into(),
            wanted: "OFF",
            fix: "compressed binlog events are not decoded: run SET GLOBAL log_bin_compress = OFF (and in the server config), then FLUSH BINARY LOGS".into(),
        });
    }
    out
}

/// `binlog_row_value_options=PARTIAL_JSON` with a row image other than FULL: a JSON column
/// updated in place (JSON_SET, JSON_REPLACE, JSON_REMOVE) is logged as a diff against a
/// document the before image does not carry, so its new value is not known (absent from
/// `after`, listed in `unchanged`).
pub fn partial_json_loses_documents(vars: &HashMap<String, String>) -> bool {
    let var = |k: &str| {
        vars.get(k)
            .map(|v| v.to_ascii_uppercase())
            .unwrap_or_default()
    };
    var("binlog_row_value_options").contains("PARTIAL_JSON") && var("binlog_row_image") != "FULL"
}

/// Checks settings and privileges. `user` is the configured user (for messages).
pub fn validate(conn: &mut SqlConn, user: &str) -> Result<ServerInfo, MysqlError> {
    let vars = read_settings(conn)?;
    let var = |k: &str| {
        vars.get(k)
            .map(|v| v.to_ascii_uppercase())
            .unwrap_or_default()
    };
    let version = vars.get("version").cloned().unwrap_or_default();
    let mariadb = conn.mariadb || version.to_ascii_lowercase().contains("mariadb");

    if let Some(e) = setting_problems(&vars).into_iter().next() {
        return Err(e);
    }
    let row_image = var("binlog_row_image");
    if row_image != "FULL" {
        tracing::warn!(
            binlog_row_image = %row_image,
            "binlog_row_image is not FULL: updates carry only changed columns (listed as absent/unchanged in events) and deletes only the key; set binlog_row_image=FULL for complete before/after images"
        );
    }
    if partial_json_loses_documents(&vars) {
        tracing::warn!(
            binlog_row_image = %row_image,
            binlog_row_value_options = %var("binlog_row_value_options"),
            "partial JSON updates with a row image that is not FULL: a JSON column changed in place comes without its new document (left out of `after`, listed in `unchanged`); set binlog_row_image=FULL or binlog_row_value_options='' for whole documents"
        );
    }
    let metadata = var("binlog_row_metadata");
    let metadata_full = metadata == "FULL";
    if !metadata_full {
        tracing::info!(
            binlog_row_metadata = %if metadata.is_empty() { "unsupported".to_string() } else { metadata.clone() },
            "column names and keys are read from information_schema (binlog_row_metadata=FULL puts them in the binlog and keeps names right when replaying across schema changes)"
        );
    }
    if let Some(e) = privilege_problems(conn, user, mariadb)?.into_iter().next() {
        return Err(e);
    }
    Ok(ServerInfo {
        mariadb,
        version,
        metadata_full,
        row_image,
    })
}

/// The tables of every non-system database with their columns, for
/// [`Filter::unmatched`].
pub fn known_tables(conn: &mut SqlConn) -> Result<Vec<KnownTable>, MysqlError> {
    let rs = conn.query(
        "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys') \
         ORDER BY TABLE_SCHEMA, TABLE_NAME, ORDINAL_POSITION",
    )?;
    let mut out: Vec<KnownTable> = Vec::new();
    for r in 0..rs.rows.len() {
        let (Some(schema), Some(name), Some(col)) = (rs.text(r, 0), rs.text(r, 1), rs.text(r, 2))
        else {
            continue;
        };
        match out.last_mut() {
            Some(t) if t.schema == schema && t.name == name => t.columns.push(col),
            _ => out.push(KnownTable {
                schema,
                name,
                columns: vec![col],
            }),
        }
    }
    Ok(out)
}

/// A filter entry that names no table or column of the server stops the start (a typo in
/// `exclude` would otherwise leak the column it meant to hide); a filter that captures no
/// table at all is worth a warning (tables created later are still captured).
pub fn check_filter(conn: &mut SqlConn, filter: &Filter) -> Result<(), MysqlError> {
    let known = known_tables(conn)?;
    let unmatched = filter.unmatched(&known);
    if !unmatched.is_empty() {
        return Err(MysqlError::FilterUnmatched(UnmatchedList(unmatched)));
    }
    if !known
        .iter()
        .any(|t| filter.table_selected(&t.schema, &t.name))
    {
        tracing::warn!(
            tables_on_server = known.len(),
            "the table filter captures no table of the server: no change will be delivered until a matching table is created; check `tables.include` against `logtide discover`"
        );
    }
    Ok(())
}

/// Privileges granted `ON *.*` (and whether SELECT is granted anywhere).
fn granted(lines: &[String]) -> (Vec<String>, bool) {
    let mut global = Vec::new();
    let mut select_somewhere = false;
    for l in lines {
        let u = l.to_ascii_uppercase();
        let Some(rest) = u.strip_prefix("GRANT ") else {
            continue;
        };
        let Some((privs, target)) = rest.split_once(" ON ") else {
            continue;
        };
        let on_all = target.trim_start().starts_with("*.*");
        for p in privs.split(',') {
            let p = p.trim().to_owned();
            if p == "SELECT" || p == "ALL PRIVILEGES" {
                select_somewhere = true;
            }
            if on_all {
                global.push(p);
            }
        }
    }
    (global, select_somewhere)
}

/// The `SHOW GRANTS` lines of the current user (parse them; never print them: they may
/// hold password hashes).
pub fn grant_lines(conn: &mut SqlConn) -> Result<Vec<String>, MysqlError> {
    let rs = conn.query("SHOW GRANTS")?;
    Ok((0..rs.rows.len()).filter_map(|r| rs.text(r, 0)).collect())
}

/// Every missing privilege logtide needs (empty: all granted).
pub fn privilege_problems(
    conn: &mut SqlConn,
    user: &str,
    mariadb: bool,
) -> Result<Vec<MysqlError>, MysqlError> {
    let lines = grant_lines(conn)?;
    let current = conn
        .query_value("SELECT CURRENT_USER()")?
        .unwrap_or_default();
    let user_sql = match current.rsplit_once('@') {
        Some((u, h)) => format!("'{u}'@'{h}'"),
        None => format!("'{user}'"),
    };
    let (global, select) = granted(&lines);
    let has = |p: &str| global.iter().any(|g| g == p || g == "ALL PRIVILEGES");
    let missing = |missing: &'static str, grant: &'static str| MysqlError::Privilege {
        user: user.to_owned(),
        user_sql: user_sql.clone(),
        missing,
        grant,
    };
    let mut out = Vec::new();
    if !has("REPLICATION SLAVE") {
        out.push(missing("REPLICATION SLAVE", "REPLICATION SLAVE"));
    }
    if mariadb {
        if !(has("BINLOG MONITOR") || has("REPLICATION CLIENT") || has("SUPER")) {
            out.push(missing("BINLOG MONITOR", "BINLOG MONITOR"));
        }
    } else if !(has("REPLICATION CLIENT") || has("SUPER")) {
        out.push(missing("REPLICATION CLIENT", "REPLICATION CLIENT"));
    }
    if !select {
        out.push(missing("SELECT", "SELECT"));
    }
    Ok(out)
}

/// Write privileges (INSERT, UPDATE, DELETE, ALL PRIVILEGES) in grant lines, as
/// `(privilege, target)` pairs, e.g. `("INSERT", "`app`.*")`.
pub fn write_grants(lines: &[String]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for l in lines {
        // Upper-casing ASCII keeps byte offsets, so the target keeps its original case.
        let u = l.to_ascii_uppercase();
        if !u.starts_with("GRANT ") {
            continue;
        }
        let Some(on) = u.find(" ON ") else {
            continue;
        };
        let privs = u.get(6..on).unwrap_or("");
        let to = u.rfind(" TO ").filter(|&t| t > on).unwrap_or(u.len());
        let target = l.get(on + 4..to).unwrap_or("").trim().to_owned();
        for p in privs.split(',') {
            let p = p.trim();
            if matches!(p, "INSERT" | "UPDATE" | "DELETE" | "ALL PRIVILEGES" | "ALL") {
                out.push((p.to_owned(), target.clone()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_json_is_accepted_and_flagged_only_without_full_images() {
        let vars = |opts: &str, image: &str| -> HashMap<String, String> {
            [
                ("log_bin", "ON"),
                ("binlog_format", "ROW"),
                ("binlog_row_value_options", opts),
                ("binlog_row_image", image),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
        };
        for image in ["FULL", "MINIMAL", "NOBLOB"] {
            assert!(setting_problems(&vars("PARTIAL_JSON", image)).is_empty());
        }
        assert!(!partial_json_loses_documents(&vars("PARTIAL_JSON", "FULL")));
        assert!(partial_json_loses_documents(&vars(
            "partial_json",
            "MINIMAL"
        )));
        assert!(partial_json_loses_documents(&vars(
            "PARTIAL_JSON",
            "NOBLOB"
        )));
        assert!(!partial_json_loses_documents(&vars("", "MINIMAL")));
    }

    #[test]
    fn grants_are_parsed() {
        let lines = vec![
            "GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO `u`@`%` IDENTIFIED BY PASSWORD '*AB'".to_string(),
            "GRANT SELECT ON `app`.* TO `u`@`%`".to_string(),
        ];
        let (g, s) = granted(&lines);
        assert!(g.contains(&"REPLICATION SLAVE".to_string()));
        assert!(g.contains(&"BINLOG MONITOR".to_string()));
        assert!(!g.contains(&"SELECT".to_string()));
        assert!(s);
        let (g, s) = granted(&["GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost`".to_string()]);
        assert_eq!(g, vec!["ALL PRIVILEGES".to_string()]);
        assert!(s);
    }

    #[test]
    fn write_grants_are_found() {
        let lines = vec![
            "GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO `u`@`%`".to_string(),
            "GRANT SELECT, INSERT ON `app`.* TO `u`@`%`".to_string(),
        ];
        assert_eq!(
            write_grants(&lines),
            vec![("INSERT".to_string(), "`app`.*".to_string())]
        );
        assert!(write_grants(&lines[..1]).is_empty());
    }
}
