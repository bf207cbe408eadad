//! Table and column selection: pure functions over names, unit-tested here.
//!
//! Sources consult the filter once per table schema version (PostgreSQL Relation message,
//! MySQL table map) and cache the answer, so a change to an excluded table is dropped before
//! its values are decoded, and an excluded column is never decoded into an event.
//!
//! Names are `schema.table` (MySQL: `database.table`). Patterns are globs (`*`, `?`, `[..]`).

use serde::Deserialize;
use std::collections::BTreeMap;

/// Table selection as written in the config (`tables = { include = [...], exclude = [...] }`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableFilterConfig {
    /// Globs of tables to capture; empty means every table.
    #[serde(default)]
    pub include: Vec<String>,
    /// Globs of tables to drop, applied after `include`.
    #[serde(default)]
    pub exclude: Vec<String>,
}

/// Column selection for one table: either `include` (keep only these) or `exclude`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnFilterConfig {
    #[serde(default)]
    pub include: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
}

/// A compiled filter.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    tables: TableFilterConfig,
    /// Column rules keyed by table pattern (exact `schema.table` or a glob).
    columns: BTreeMap<String, ColumnFilterConfig>,
}

/// The filter would drop a key column: the events could not be keyed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the column filter for {table} removes key column {column:?}: keep key columns (edit `columns.\"{table}\"` in the source's config)")]
pub struct KeyColumnExcluded {
    pub table: String,
    pub column: String,
}

/// A filter entry that names nothing on the server: a typo here would silently capture
/// (or leak) what the user meant to leave out, so it is a configuration error.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum Unmatched {
    #[error("`tables.{list}` names {table:?}, which is not a table on the server{hint}: fix the name (see `logtide discover`) or remove the entry")]
    Table {
        /// `include` or `exclude`.
        list: &'static str,
        table: String,
        hint: &'static str,
    },
    #[error("`columns.\"{rule}\"` names table(s) that do not exist on the server: fix the name (see `logtide discover`) or remove the entry")]
    ColumnTable { rule: String },
    #[error("`columns.\"{rule}\".{list}` names column {column:?}, which {rule} does not have: fix the name (see `logtide discover`) or remove it")]
    Column {
        rule: String,
        list: &'static str,
        column: String,
    },
}

/// Several [`Unmatched`] entries, joined with "; ".
#[derive(Debug, Clone)]
pub struct UnmatchedList(pub Vec<Unmatched>);

impl std::fmt::Display for UnmatchedList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, u) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{u}")?;
        }
        Ok(())
    }
}

/// One table as the server has it, for [`Filter::unmatched`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownTable {
    pub schema: String,
    pub name: String,
    pub columns: Vec<String>,
}

/// Which columns of a table to keep, and where the key columns land after projection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Projection {
    /// Indices of kept columns in the source's column order (ascending).
    pub keep: Vec<usize>,
    /// Key column indices into `keep` order.
    pub key: Vec<usize>,
}

impl Projection {
    /// Whether every column is kept (the decoder can skip the index lookup).
    pub fn is_identity(&self, ncols: usize) -> bool {
        self.keep.len() == ncols
    }
}

impl Filter {
    /// Builds a filter; `columns` keys are table names or globs.
    pub fn new(tables: TableFilterConfig, columns: BTreeMap<String, ColumnFilterConfig>) -> Self {
        Filter { tables, columns }
    }

    /// Whether changes to `schema.table` are captured.
    pub fn table_selected(&self, schema: &str, table: &str) -> bool {
        let name = format!("{schema}.{table}");
        let included =
            self.tables.include.is_empty() || self.tables.include.iter().any(|p| glob(p, &name));
        included && !self.tables.exclude.iter().any(|p| glob(p, &name))
    }

    /// Decides which of `columns` to keep for `schema.table`, given the key column indices
    /// (into `columns`). Errors when a key column would be dropped.
    pub fn project(
        &self,
        schema: &str,
        table: &str,
        columns: &[&str],
        key: &[usize],
    ) -> Result<Projection, KeyColumnExcluded> {
        let name = format!("{schema}.{table}");
        let rules: Vec<&ColumnFilterConfig> = self
            .columns
            .iter()
            .filter(|(p, _)| glob(p, &name))
            .map(|(_, r)| r)
            .collect();
        let mut keep = Vec::with_capacity(columns.len());
        for (i, c) in columns.iter().enumerate() {
            let kept = rules.iter().all(|r| {
                (r.include.is_empty() || r.include.iter().any(|x| x == c))
                    && !r.exclude.iter().any(|x| x == c)
            });
            if kept {
                keep.push(i);
            } else if key.contains(&i) {
                return Err(KeyColumnExcluded {
                    table: name,
                    column: (*c).to_owned(),
                });
            }
        }
        let key = key
            .iter()
            .filter_map(|k| keep.iter().position(|x| x == k))
            .collect();
        Ok(Projection { keep, key })
    }

    /// The filter entries that name nothing among `tables` (every table of the source's
    /// server; PostgreSQL: partitioned tables by their root name, no partitions). Exact
    /// table names in `tables.include` / `tables.exclude` and exact `columns` keys must name
    /// a table; every column named in a `columns` rule must exist in at least one table the
    /// rule applies to. Globs are exempt from matching a table (a pattern for tables that
    /// may come later is legitimate), not their column names.
    pub fn unmatched(&self, tables: &[KnownTable]) -> Vec<Unmatched> {
        let exists = |name: &str| tables.iter().any(|t| qualify(t) == name);
        let mut out = Vec::new();
        for (list, entries) in [
            ("include", &self.tables.include),
            ("exclude", &self.tables.exclude),
        ] {
            for e in entries.iter().filter(|e| !is_glob(e)) {
                if !exists(e) {
                    out.push(Unmatched::Table {
                        list,
                        table: e.clone(),
                        hint: if e.contains('.') {
                            ""
                        } else {
                            " (write it as schema.table)"
                        },
                    });
                }
            }
        }
        for (rule, cols) in &self.columns {
            let matching: Vec<&KnownTable> =
                tables.iter().filter(|t| glob(rule, &qualify(t))).collect();
            if matching.is_empty() {
                if !is_glob(rule) {
                    out.push(Unmatched::ColumnTable { rule: rule.clone() });
                }
                continue;
            }
            for (list, names) in [("include", &cols.include), ("exclude", &cols.exclude)] {
                for c in names {
                    if !matching.iter().any(|t| t.columns.iter().any(|x| x == c)) {
                        out.push(Unmatched::Column {
                            rule: rule.clone(),
                            list,
                            column: c.clone(),
                        });
                    }
                }
            }
        }
        out
    }

    /// The column rules that apply to `schema.table` and name a column it lacks (after a
    /// schema change: the rule no longer does what it says).
    pub fn stale_columns(&self, schema: &str, table: &str, columns: &[&str]) -> Vec<Unmatched> {
        let name = format!("{schema}.{table}");
        let mut out = Vec::new();
        for (rule, cols) in self.columns.iter().filter(|(p, _)| glob(p, &name)) {
            for (list, names) in [("include", &cols.include), ("exclude", &cols.exclude)] {
                for c in names.iter().filter(|c| !columns.contains(&c.as_str())) {
                    out.push(Unmatched::Column {
                        rule: rule.clone(),
                        list,
                        column: c.clone(),
                    });
                }
            }
        }
        out
    }

    /// Whether every `tables.include` entry is an exact name (a publication can then list
    /// exactly those tables).
    pub fn include_is_exact(&self) -> bool {
        !self.tables.include.is_empty() && self.tables.include.iter().all(|p| !is_glob(p))
    }

    /// The column patterns configured, for validation messages.
    pub fn column_rules(&self) -> impl Iterator<Item = (&String, &ColumnFilterConfig)> {
        self.columns.iter()
    }
}

fn qualify(t: &KnownTable) -> String {
    format!("{}.{}", t.schema, t.name)
}

/// Whether a filter entry is a pattern rather than an exact name.
pub fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?', '['])
}

/// Glob match with `*`, `?` and `[...]`; exact names match themselves.
pub fn glob(pattern: &str, name: &str) -> bool {
    if !is_glob(pattern) {
        return pattern == name;
    }
    glob_match::glob_match(pattern, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(include: &[&str], exclude: &[&str]) -> Filter {
        Filter::new(
            TableFilterConfig {
                include: include.iter().map(|s| s.to_string()).collect(),
                exclude: exclude.iter().map(|s| s.to_string()).collect(),
            },
            BTreeMap::new(),
        )
    }

    #[test]
    fn tables_by_name_and_glob() {
        let all = f(&[], &[]);
        assert!(all.table_selected("public", "x"));
        let g = f(&["public.*", "app.order_*"], &["public.audit_*"]);
        assert!(g.table_selected("public", "users"));
        assert!(g.table_selected("app", "order_items"));
        assert!(!g.table_selected("app", "orders"));
        assert!(!g.table_selected("public", "audit_log"));
        assert!(!g.table_selected("other", "users"));
        let exact = f(&["public.users"], &[]);
        assert!(exact.table_selected("public", "users"));
        assert!(!exact.table_selected("public", "users2"));
    }

    fn known(name: &str, cols: &[&str]) -> KnownTable {
        let (s, t) = name.split_once('.').expect("schema.table");
        KnownTable {
            schema: s.into(),
            name: t.into(),
            columns: cols.iter().map(|c| c.to_string()).collect(),
        }
    }

    #[test]
    fn entries_that_name_nothing() {
        let tables = [
            known("public.users", &["id", "password_hash"]),
            known("app.t1", &["id", "a"]),
        ];
        let mut cols = BTreeMap::new();
        let ex = |v: &[&str]| ColumnFilterConfig {
            include: vec![],
            exclude: v.iter().map(|s| s.to_string()).collect(),
        };
        cols.insert("public.users".to_string(), ex(&["pasword_hash"]));
        cols.insert("public.nosuch".to_string(), ex(&["x"]));
        cols.insert("app.*".to_string(), ex(&["a", "zz"]));
        cols.insert("later.*".to_string(), ex(&["x"]));
        let flt = Filter::new(
            TableFilterConfig {
                include: vec!["public.users".into(), "public.userz".into(), "app.*".into()],
                exclude: vec!["users".into(), "nope.*".into()],
            },
            cols,
        );
        let got = flt.unmatched(&tables);
        assert_eq!(
            got,
            vec![
                Unmatched::Table {
                    list: "include",
                    table: "public.userz".into(),
                    hint: ""
                },
                Unmatched::Table {
                    list: "exclude",
                    table: "users".into(),
                    hint: " (write it as schema.table)"
                },
                Unmatched::Column {
                    rule: "app.*".into(),
                    list: "exclude",
                    column: "zz".into()
                },
                Unmatched::ColumnTable {
                    rule: "public.nosuch".into()
                },
                Unmatched::Column {
                    rule: "public.users".into(),
                    list: "exclude",
                    column: "pasword_hash".into()
                },
            ]
        );
        let msg = got[4].to_string();
        assert!(
            msg.contains("pasword_hash") && msg.contains("public.users"),
            "{msg}"
        );
        // A correct filter names something everywhere.
        let ok = Filter::new(
            TableFilterConfig {
                include: vec!["public.users".into()],
                exclude: vec![],
            },
            BTreeMap::from([("public.users".to_string(), ex(&["password_hash"]))]),
        );
        assert!(ok.unmatched(&tables).is_empty());
        assert_eq!(
            ok.stale_columns("public", "users", &["id"]).len(),
            1,
            "the column was dropped"
        );
        assert!(ok.include_is_exact());
    }

    #[test]
    fn dots_are_not_wildcards() {
        let g = f(&["public.*"], &[]);
        assert!(!g.table_selected("publicx", "t"));
    }

    #[test]
    fn columns_include_exclude_and_key() {
        let mut cols = BTreeMap::new();
        cols.insert(
            "public.users".to_string(),
            ColumnFilterConfig {
                include: vec![],
                exclude: vec!["secret".into()],
            },
        );
        cols.insert(
            "app.*".to_string(),
            ColumnFilterConfig {
                include: vec!["id".into(), "b".into()],
                exclude: vec![],
            },
        );
        let flt = Filter::new(TableFilterConfig::default(), cols);
        let p = flt
            .project("public", "users", &["id", "secret", "name"], &[0])
            .expect("ok");
        assert_eq!(p.keep, vec![0, 2]);
        assert_eq!(p.key, vec![0]);
        let p = flt
            .project("app", "t", &["a", "b", "id"], &[2])
            .expect("ok");
        assert_eq!(p.keep, vec![1, 2]);
        assert_eq!(p.key, vec![1]);
        let err = flt
            .project("public", "users", &["secret", "id"], &[0])
            .unwrap_err();
        assert_eq!(err.column, "secret");
        let p = flt.project("other", "t", &["a", "b"], &[]).expect("ok");
        assert!(p.is_identity(2));
    }
}
