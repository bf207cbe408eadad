//! `logtide check`: connects to every source and sink and validates what `run` needs,
//! one finding per line (`ok|warn|FAIL <scope>: <what> — <what to fix>`).
//!
//! Read-only: nothing is created (no slot, no publication) and no checkpoint is written.
//! What `run` would create is checked for feasibility instead (a free slot, the privilege
//! to create the publication).

use super::discover::{apply_filter, mysql_tables, pg_tables, TableInfo};
use super::{describe_mysql_connect_error, describe_pg_connect_error, some_names, Finding, Report};
use crate::config::{
    BackfillMode, MysqlSourceConfig, PostgresSourceConfig, QuerySourceConfig, SinkConfig,
    SourceConfig,
};
use crate::endpoint::Endpoint;
use crate::error::ErrorChain;
use crate::filter::Filter;
use crate::position::{MysqlPosition, Position};
use crate::source::mysql::validate;
use crate::source::postgres::conn::{quote_ident, ReplConnection};
use crate::source::postgres::setup;
use std::time::Duration;

/// Checks one source, connecting to `at`. `stored` is its stored checkpoint, if known
/// (MySQL: its binlog file must still be on the server).
pub async fn check_source(
    cfg: &SourceConfig,
    at: &Endpoint,
    stored: Option<&Position>,
) -> Vec<Finding> {
    let filter = cfg.filter();
    match cfg {
        SourceConfig::Postgres(c) => {
            let stored = match stored {
                Some(Position::Postgres(p)) => Some(Position::Postgres(*p)),
                _ => None,
            };
            check_postgres(c, at, &filter, stored.as_ref()).await
        }
        SourceConfig::Mysql(c) => {
            let (c, at) = (c.clone(), at.clone());
            let name = c.name.clone();
            let backfill = cfg.backfill();
            let stored = match stored {
                Some(Position::Mysql(m)) => Some(m.clone()),
                _ => None,
            };
            match tokio::task::spawn_blocking(move || {
                check_mysql(&c, &at, &filter, &backfill, stored.as_ref())
            })
            .await
            {
                Ok(f) => f,
                Err(e) => {
                    let mut r = Report::new(name);
                    r.fail(format!("inspection thread failed: {e}"), "report a bug");
                    r.findings
                }
            }
        }
        SourceConfig::Query(c) => check_query(c, at).await,
    }
}

/// Checks one sink: it can be built (secrets present, files writable, NATS reachable) and
/// a network endpoint accepts TCP connections.
/// Checks one sink; `sources` are the source names it is fed from (for per-source details
/// such as the NATS subject's stream).
pub async fn check_sink(cfg: &SinkConfig, sources: &[&str]) -> Vec<Finding> {
    let mut r = Report::new(format!("sink {}", cfg.name()));
    match crate::sink::AnySink::build(cfg).await {
        Ok(crate::sink::AnySink::Nats(n)) => {
            r.ok("configured (secrets present)");
            for source in sources {
                match n.check_stream(source).await {
                    Ok(what) => r.ok(what),
                    Err(why) => r.fail(
                        format!("source {source}: {why}"),
                        "without a stream every event would be refused",
                    ),
                }
            }
        }
        Ok(_) => r.ok("configured (secrets present, outputs open)"),
        Err(e) => {
            r.fail(
                format!("cannot start: {}", ErrorChain(&e)),
                "fix the sink's config or the service it points at",
            );
            return r.findings;
        }
    }
    if let SinkConfig::Segment(c) = cfg {
        segment_limits(&mut r, c);
    }
    let url = match cfg {
        SinkConfig::Http(c) => Some(c.url.clone()),
        SinkConfig::Segment(c) => Some(c.endpoint.clone()),
        _ => None,
    };
    if let Some(url) = url {
        match reachable(&url, Duration::from_secs(10)).await {
            Ok(addr) => r.ok(format!("{addr} accepts connections")),
            Err(e) => r.fail(
                format!("cannot reach {url}: {e}"),
                "check the URL and that the receiver is running",
            ),
        }
    }
    r.findings
}

/// Segment's documented limits: 32 KB per call, 500 KB per batch request, 2,500 calls per
/// batch. Calls or batches over them are refused by the API (or silently truncated by
/// proxies), so settings above them are a warning.
fn segment_limits(r: &mut Report, c: &crate::config::SegmentSinkConfig) {
    const CALL: usize = 32 * 1024;
    const REQUEST: usize = 500 * 1000;
    const CALLS: usize = 2500;
    if c.max_call_bytes > CALL {
        r.warn(
            format!(
                "max_call_bytes = {} is over Segment's 32 KB per call",
                c.max_call_bytes
            ),
            format!("set max_call_bytes to at most {CALL}"),
        );
    }
    if c.batch.max_bytes.is_some_and(|b| b > REQUEST) {
        r.warn(
            format!(
                "batch.max_bytes = {} is over Segment's 500 KB per batch request",
                c.batch.max_bytes.unwrap_or_default()
            ),
            "set batch.max_bytes to at most 490000",
        );
    }
    if c.batch.max_events.is_some_and(|n| n > CALLS) {
        r.warn(
            format!(
                "batch.max_events = {} is over Segment's 2,500 calls per batch",
                c.batch.max_events.unwrap_or_default()
            ),
            format!("set batch.max_events to at most {CALLS}"),
        );
    }
}

/// Opens (and closes) a TCP connection to the URL's host and port.
async fn reachable(url: &str, timeout: Duration) -> Result<String, String> {
    let u = reqwest::Url::parse(url).map_err(|e| e.to_string())?;
    let host = u.host_str().ok_or("no host in the URL")?.to_owned();
    let port = u
        .port_or_known_default()
        .ok_or("no port for the URL's scheme")?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let connect = tokio::net::TcpStream::connect((host.as_str(), port));
    match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(_)) => Ok(format!("{host}:{port}")),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("timed out after {timeout:?}")),
    }
}

struct PgServerFacts {
    version: String,
    wal_level: String,
    max_slots: i32,
    used_slots: i32,
    max_wal_senders: i32,
    superuser: bool,
    replication: bool,
    create_on_db: bool,
}

async fn pg_facts(client: &tokio_postgres::Client) -> Result<PgServerFacts, tokio_postgres::Error> {
    let r = client
        .query_one(
            "SELECT current_setting('server_version'), current_setting('wal_level'), \
                    current_setting('max_replication_slots')::int4, \
                    (SELECT count(*) FROM pg_catalog.pg_replication_slots)::int4, \
                    current_setting('max_wal_senders')::int4, \
                    r.rolsuper, r.rolreplication, \
                    has_database_privilege(current_database(), 'CREATE') \
             FROM pg_catalog.pg_roles r WHERE r.rolname = current_user",
            &[],
        )
        .await?;
    Ok(PgServerFacts {
        version: r.try_get(0)?,
        wal_level: r.try_get(1)?,
        max_slots: r.try_get(2)?,
        used_slots: r.try_get(3)?,
        max_wal_senders: r.try_get(4)?,
        superuser: r.try_get(5)?,
        replication: r.try_get(6)?,
        create_on_db: r.try_get(7)?,
    })
}

/// PostgreSQL: connection, wal_level, slots (and a slot dropped or invalidated under the
/// `stored` position), REPLICATION, the replication connection, publication (can it serve
/// the filter), the filter's entries, captured tables (replica identity, key columns,
/// SELECT) and write access.
pub async fn check_postgres(
    cfg: &PostgresSourceConfig,
    at: &Endpoint,
    filter: &Filter,
    stored: Option<&Position>,
) -> Vec<Finding> {
    let mut r = Report::new(cfg.name.clone());
    let user = &cfg.user;
    let (client, conn) = match crate::source::postgres::tls::connect_sql(cfg, at).await {
        Ok(c) => c,
        Err(e) => {
            let (what, fix) = describe_pg_connect_error(user, cfg.password_env.as_deref(), &e);
            r.fail(what, fix);
            return r.findings;
        }
    };
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(async move {
        let _ = conn.await;
    });
    let facts = match pg_facts(&client).await {
        Ok(f) => f,
        Err(e) => {
            r.fail(
                format!("cannot read the server settings: {}", ErrorChain(&e)),
                "check that the user may read pg_settings and pg_roles",
            );
            return r.findings;
        }
    };
    r.ok(format!(
        "connected to PostgreSQL {} as {user:?}",
        facts.version
    ));
    pg_tls_state(&client, cfg, &mut r).await;
    if facts.wal_level == "logical" {
        r.ok("wal_level = logical");
    } else {
        r.fail(
            format!(
                "wal_level is {:?} but logical replication needs `logical`",
                facts.wal_level
            ),
            "set wal_level = logical in postgresql.conf and restart PostgreSQL",
        );
    }
    if facts.replication || facts.superuser {
        r.ok(format!(
            "role {user:?} may replicate ({})",
            if facts.superuser {
                "superuser"
            } else {
                "REPLICATION"
            }
        ));
    } else {
        r.fail(
            format!("role {user:?} lacks the REPLICATION attribute"),
            format!(
                "run `ALTER ROLE {} REPLICATION;` as a superuser",
                quote_ident(user)
            ),
        );
    }
    if facts.max_wal_senders == 0 {
        r.fail(
            "max_wal_senders = 0: no replication connection is possible",
            "set max_wal_senders (e.g. 10) in postgresql.conf and restart PostgreSQL",
        );
    }
    let slot = cfg.slot_name();
    match setup::slot_state(&client, cfg).await {
        Ok(setup::SlotState::Ready { failover }) => r.ok(format!(
            "replication slot {slot:?} exists{}",
            match failover {
                Some(true) => " (failover = true: synchronized to standbys)",
                Some(false) => " (failover = false: a promoted standby will not have it)",
                None => "",
            }
        )),
        Ok(setup::SlotState::Lost { reason, restart }) => {
            let e = setup::SetupError::SlotInvalidated {
                slot: slot.clone(),
                source_name: cfg.name.clone(),
                reason,
                restart,
            };
            r.fail(
                format!("replication slot {slot:?} is invalidated: `run` cannot stream"),
                e.to_string(),
            )
        }
        Ok(setup::SlotState::Missing) if stored.is_some() => {
            let e = setup::SetupError::SlotDropped {
                slot: slot.clone(),
                source_name: cfg.name.clone(),
                stored: stored.map(|p| p.to_string()).unwrap_or_default(),
            };
            r.fail(
                format!("replication slot {slot:?} was dropped but a position is stored: `run` refuses to start"),
                e.to_string(),
            )
        }
        Ok(setup::SlotState::Missing) if facts.used_slots < facts.max_slots => r.ok(format!(
            "replication slot {slot:?} does not exist yet; `run` creates it ({} of max_replication_slots = {} in use)",
            facts.used_slots, facts.max_slots
        )),
        Ok(setup::SlotState::Missing) => r.fail(
            format!(
                "replication slot {slot:?} does not exist and all {} slots are in use",
                facts.max_slots
            ),
            "raise max_replication_slots (restart needed) or drop an unused slot with pg_drop_replication_slot",
        ),
        Err(e) => r.fail(format!("replication slot {slot:?} is unusable"), ErrorChain(&e).to_string()),
    }
    if facts.replication || facts.superuser {
        check_pg_replication_connection(cfg, at, &mut r).await;
    }
    let version = crate::source::postgres::conn::parse_server_version(&facts.version).unwrap_or(0);
    if version != 0 && version < setup::MIN_SERVER_VERSION {
        r.fail(
            format!("PostgreSQL {} is not supported", facts.version),
            "logtide needs PostgreSQL 12 or later; upgrade the server",
        );
    }
    check_publication(&client, cfg, filter, &facts, version, &mut r).await;
    let mut tables = match pg_tables(&client).await {
        Ok(t) => t,
        Err(e) => {
            r.fail(
                format!("cannot read the catalog: {}", ErrorChain(&e)),
                "check the user's access to pg_catalog",
            );
            return r.findings;
        }
    };
    apply_filter(&mut tables, filter);
    let backfill = SourceConfig::Postgres(cfg.clone()).backfill();
    check_tables(&mut r, &tables, filter, &backfill);
    // Replica identity: without a key pgoutput has no old row.
    for t in tables.iter().filter(|t| t.captured) {
        let name = t.qualified_name();
        match t.replica_identity.as_deref() {
            Some("nothing") => r.warn(
                format!("table {name} has REPLICA IDENTITY NOTHING: its updates and deletes fail on the server once published, and events carry no key"),
                format!("run `ALTER TABLE {} REPLICA IDENTITY DEFAULT;` (with a primary key) or `... REPLICA IDENTITY FULL;`", quote_table(t)),
            ),
            Some("default") if t.primary_key.is_empty() => r.warn(
                format!("table {name} has no primary key and REPLICA IDENTITY DEFAULT: its updates and deletes fail on the server once published, and events carry no key"),
                format!("add a primary key, or run `ALTER TABLE {} REPLICA IDENTITY FULL;`", quote_table(t)),
            ),
            _ => {}
        }
    }
    let captured: Vec<&TableInfo> = tables.iter().filter(|t| t.captured).collect();
    if facts.superuser {
        r.warn(
            format!("role {user:?} is a superuser and can write to the database"),
            "use a dedicated role with REPLICATION and SELECT only (read-only users are recommended)",
        );
    } else {
        let writable: Vec<String> = captured
            .iter()
            .filter(|t| t.can_write)
            .map(|t| t.qualified_name())
            .collect();
        if writable.is_empty() {
            r.ok(format!("role {user:?} cannot write to the captured tables"));
        } else {
            r.warn(
                format!(
                    "role {user:?} may INSERT, UPDATE or DELETE on {}",
                    some_names(&writable, 5)
                ),
                "revoke write privileges (read-only users are recommended), e.g. REVOKE INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public FROM the role",
            );
        }
    }
    drop(client);
    tasks.abort_all();
    r.findings
}

fn quote_table(t: &TableInfo) -> String {
    format!("{}.{}", quote_ident(&t.schema), quote_ident(&t.name))
}

/// Whether the SQL connection is encrypted, as the server sees it (`pg_stat_ssl`), against
/// what `sslmode` asks for: `prefer` falling back to plain text is a warning, not silence.
async fn pg_tls_state(client: &tokio_postgres::Client, cfg: &PostgresSourceConfig, r: &mut Report) {
    use crate::config::SslMode;
    let mode = crate::source::postgres::tls::mode_name(cfg.sslmode);
    let row = client
        .query_opt(
            "SELECT ssl, coalesce(version, ''), coalesce(cipher, '') FROM pg_catalog.pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await;
    let (ssl, version, cipher): (bool, String, String) = match row {
        Ok(Some(row)) => (
            row.try_get(0).unwrap_or(false),
            row.try_get(1).unwrap_or_default(),
            row.try_get(2).unwrap_or_default(),
        ),
        _ => return,
    };
    if ssl {
        let checked = if cfg.sslmode == SslMode::VerifyFull {
            "certificate and host name verified"
        } else {
            "certificate not verified"
        };
        r.ok(format!(
            "TLS {version} ({cipher}), sslmode = \"{mode}\": {checked}"
        ));
    } else if cfg.sslmode == SslMode::Disable {
        r.ok("unencrypted connection (sslmode = \"disable\")");
    } else {
        r.warn(
            format!("unencrypted connection: the server offers no TLS and sslmode = \"{mode}\""),
            "enable ssl on the server and set sslmode = \"verify-full\" (or \"require\") so the connection never falls back to plain text",
        );
    }
}

/// Opens a replication connection and runs IDENTIFY_SYSTEM (pg_hba must allow it).
async fn check_pg_replication_connection(
    cfg: &PostgresSourceConfig,
    at: &Endpoint,
    r: &mut Report,
) {
    let password = match cfg.password() {
        Ok(p) => p,
        Err(e) => {
            r.fail(ErrorChain(&e).to_string(), "set the environment variable");
            return;
        }
    };
    let attempt = async {
        let mut repl = ReplConnection::connect(cfg, at, password.as_ref()).await?;
        let id = repl.identify_system().await?;
        let _ = repl.shutdown().await;
        Ok::<_, crate::source::postgres::conn::ConnError>(id)
    };
    match tokio::time::timeout(cfg.connect_timeout + Duration::from_secs(5), attempt).await {
        Ok(Ok(id)) => r.ok(format!(
            "replication connection accepted (system {}, timeline {}, WAL at {})",
            id.system_id, id.timeline, id.xlog_pos
        )),
        Ok(Err(e)) => r.fail(
            format!("replication connection refused: {}", ErrorChain(&e)),
            "allow replication connections for the user in pg_hba.conf and check max_wal_senders",
        ),
        Err(_) => r.fail(
            "replication connection timed out",
            "check the server's replication settings and network",
        ),
    }
}

/// The publication: exists or can be created, and serves the filter (or `run` brings it in
/// line, when logtide manages it).
async fn check_publication(
    client: &tokio_postgres::Client,
    cfg: &PostgresSourceConfig,
    filter: &Filter,
    facts: &PgServerFacts,
    version: u32,
    r: &mut Report,
) {
    use crate::source::postgres::publication;
    let user = &cfg.user;
    let name = cfg.publication_name();
    let info = match publication::read(client, &name).await {
        Ok(i) => i,
        Err(e) => {
            r.fail(
                format!("cannot read publication {name:?}: {}", ErrorChain(&e)),
                "check the user's access to pg_catalog",
            );
            return;
        }
    };
    let Some(info) = info else {
        if !cfg.create_publication {
            r.fail(
                format!("publication {name:?} does not exist and create_publication = false"),
                format!(
                    "create it (e.g. `CREATE PUBLICATION {} FOR ALL TABLES;`) or set create_publication = true",
                    quote_ident(&name)
                ),
            );
            return;
        }
        let catalog = publication::catalog(client).await.unwrap_or_default();
        let sql = publication::create_sql(cfg, version, &catalog);
        if facts.superuser {
            r.ok(format!(
                "publication {name:?} does not exist yet; `run` creates it: {sql}"
            ));
        } else if sql.contains("FOR ALL TABLES") {
            r.fail(
                format!("publication {name:?} does not exist and role {user:?} cannot create it (FOR ALL TABLES needs a superuser)"),
                format!("create it as a superuser (`{sql};`), or list exact table names in tables.include"),
            );
        } else if !facts.create_on_db {
            r.fail(
                format!("publication {name:?} does not exist and role {user:?} lacks CREATE on the database"),
                format!("create it as the tables' owner (`{sql};`) or GRANT CREATE ON DATABASE {} TO {}", quote_ident(&cfg.database), quote_ident(user)),
            );
        } else {
            r.ok(format!(
                "publication {name:?} does not exist yet; `run` creates it (the role must own the tables): {sql}"
            ));
        }
        return;
    };
    let owner = if info.managed {
        "managed by logtide"
    } else {
        "not managed by logtide"
    };
    r.ok(format!(
        "publication {name:?} exists ({}, {owner}{})",
        if info.all_tables {
            "FOR ALL TABLES".to_owned()
        } else {
            format!("{} tables", info.tables.len())
        },
        if info.via_root {
            ", publish_via_partition_root"
        } else {
            ""
        }
    ));
    let tables = match publication::catalog(client).await {
        Ok(t) => t,
        Err(e) => {
            r.fail(
                format!("cannot read the catalog: {}", ErrorChain(&e)),
                "check the user's access to pg_catalog",
            );
            return;
        }
    };
    let plan = publication::plan(&info, filter, &tables);
    if plan.is_empty() {
        return;
    }
    let sql = plan.statements(&name).join("; ");
    if info.managed {
        r.ok(format!(
            "publication {name:?} differs from the filter; `run` changes it: {sql}"
        ));
    } else {
        r.fail(
            format!(
                "publication {name:?} cannot serve the filter: {}",
                if plan.add.is_empty() {
                    format!("it does not publish {}", plan.missing_ops.join(", "))
                } else {
                    format!(
                        "captured tables missing from it: {}",
                        some_names(
                            &plan.add.iter().map(publication::show).collect::<Vec<_>>(),
                            5
                        )
                    )
                }
            ),
            format!("run `{sql};` (`run` refuses to start until then)"),
        );
    }
}

/// Findings shared by the log-based sources: filter entries that name nothing, what the
/// filter captures, key columns the column filter would drop, SELECT privileges
/// (backfill).
fn check_tables(
    r: &mut Report,
    tables: &[TableInfo],
    filter: &Filter,
    backfill: &crate::config::BackfillSettings,
) {
    let known: Vec<crate::filter::KnownTable> = tables
        .iter()
        .map(|t| crate::filter::KnownTable {
            schema: t.schema.clone(),
            name: t.name.clone(),
            columns: t.columns.iter().map(|c| c.name.clone()).collect(),
        })
        .collect();
    for u in filter.unmatched(&known) {
        r.fail(
            format!("filter entry names nothing: {u}"),
            "`run` refuses to start until the entry is fixed",
        );
    }
    let captured: Vec<&TableInfo> = tables.iter().filter(|t| t.captured).collect();
    if captured.is_empty() {
        r.warn(
            format!(
                "no table is captured ({} tables on the server, all excluded by the filter or none exist)",
                tables.len()
            ),
            "check `tables.include` / `tables.exclude` against `logtide discover`",
        );
    } else {
        r.ok(format!(
            "{} tables captured, {} excluded by the filter",
            captured.len(),
            tables.len() - captured.len()
        ));
    }
    for t in &captured {
        if let Some(p) = &t.problem {
            if p.contains("key column") {
                r.fail(
                    p.clone(),
                    "keep key columns in `columns` of the source's config",
                );
            }
        }
    }
    let no_select: Vec<(String, bool)> = captured
        .iter()
        .filter(|t| !t.can_select)
        .map(|t| {
            let name = t.qualified_name();
            let needs = backfill.mode_for(&name) == BackfillMode::Initial;
            (name, needs)
        })
        .collect();
    if !no_select.is_empty() {
        let names: Vec<String> = no_select.iter().map(|(n, _)| n.clone()).collect();
        let what = format!("no SELECT privilege on {}", some_names(&names, 5));
        let fix = "GRANT SELECT ON the tables TO the user (backfill reads them)";
        if no_select.iter().any(|(_, needs)| *needs) {
            r.fail(what, fix);
        } else {
            r.warn(what, fix);
        }
    } else if !captured.is_empty() {
        r.ok("SELECT granted on every captured table");
    }
}

/// Whether the connection is encrypted, as the server sees it (`Ssl_version`,
/// `Ssl_cipher` of the session), against what `ssl_mode` asks for.
fn tls_state(
    cfg: &MysqlSourceConfig,
    conn: &mut crate::source::mysql::sql::SqlConn,
    r: &mut Report,
) {
    use crate::config::MysqlSslMode;
    let mut status = |name: &str| {
        conn.query(&format!("SHOW SESSION STATUS LIKE '{name}'"))
            .ok()
            .and_then(|rs| rs.text(0, 1))
            .unwrap_or_default()
    };
    let (version, cipher) = (status("Ssl_version"), status("Ssl_cipher"));
    let mode = cfg.ssl_mode;
    if !cipher.is_empty() {
        let checked = match mode {
            MysqlSslMode::VerifyIdentity => "certificate and host name verified",
            MysqlSslMode::VerifyCa => "certificate chain verified",
            _ => "certificate not verified",
        };
        r.ok(format!(
            "TLS {version} ({cipher}), ssl_mode = \"{}\": {checked}",
            mode.name()
        ));
    } else if mode == MysqlSslMode::Disabled {
        r.ok("unencrypted connection (ssl_mode = \"disabled\")");
    } else {
        r.warn(
            format!(
                "unencrypted connection: the server offers no TLS and ssl_mode = \"{}\"",
                mode.name()
            ),
            "enable TLS on the server (ssl_cert / ssl_key) and set ssl_mode = \"verify_identity\" (or \"required\") so the connection never falls back to plain text",
        );
    }
}

/// MySQL/MariaDB: connection, binlog settings (validate.rs), privileges, captured tables,
/// the stored position's binlog file, write grants.
pub fn check_mysql(
    cfg: &MysqlSourceConfig,
    at: &Endpoint,
    filter: &Filter,
    backfill: &crate::config::BackfillSettings,
    stored: Option<&MysqlPosition>,
) -> Vec<Finding> {
    let mut r = Report::new(cfg.name.clone());
    let mut conn = match crate::source::mysql::sql::SqlConn::open(cfg, at) {
        Ok(c) => c,
        Err(e) => {
            let (what, fix) = describe_mysql_connect_error(cfg, &e);
            r.fail(what, fix);
            return r.findings;
        }
    };
    let vars = match validate::read_settings(&mut conn) {
        Ok(v) => v,
        Err(e) => {
            r.fail(
                format!("cannot read the server variables: {}", ErrorChain(&e)),
                "check the user's privileges",
            );
            return r.findings;
        }
    };
    let var = |k: &str| {
        vars.get(k)
            .map(|v| v.to_ascii_uppercase())
            .unwrap_or_default()
    };
    let version = vars.get("version").cloned().unwrap_or_default();
    let mariadb = conn.mariadb || version.to_ascii_lowercase().contains("mariadb");
    r.ok(format!(
        "connected to {} {version} as {:?}",
        if mariadb { "MariaDB" } else { "MySQL" },
        cfg.user
    ));
    tls_state(cfg, &mut conn, &mut r);
    let problems = validate::setting_problems(&vars);
    for p in &problems {
        if let crate::source::mysql::MysqlError::Setting {
            setting,
            actual,
            wanted,
            fix,
        } = p
        {
            r.fail(
                format!("{setting} is {actual:?}, logtide needs {wanted}"),
                fix.clone(),
            );
        } else {
            r.fail(p.to_string(), "");
        }
    }
    for (k, want) in [("log_bin", "ON"), ("binlog_format", "ROW")] {
        if !problems.iter().any(|p| matches!(p, crate::source::mysql::MysqlError::Setting { setting, .. } if *setting == k)) {
            r.ok(format!("{k} = {want}"));
        }
    }
    let row_image = var("binlog_row_image");
    if row_image == "FULL" {
        r.ok("binlog_row_image = FULL");
    } else {
        r.warn(
            format!("binlog_row_image is {row_image:?}: updates carry only changed columns and deletes only the key"),
            "SET GLOBAL binlog_row_image = 'FULL' (and in the server config) for complete before/after images",
        );
    }
    if validate::partial_json_loses_documents(&vars) {
        r.warn(
            format!("binlog_row_value_options is {:?} with binlog_row_image {row_image:?}: a JSON column changed in place (JSON_SET, JSON_REPLACE, JSON_REMOVE) comes without its new document", var("binlog_row_value_options")),
            "SET GLOBAL binlog_row_image = 'FULL' (or binlog_row_value_options = '') and in the server config, for whole JSON documents",
        );
    }
    let metadata = var("binlog_row_metadata");
    if metadata == "FULL" {
        r.ok("binlog_row_metadata = FULL");
    } else {
        r.warn(
            format!(
                "binlog_row_metadata is {:?}: column names and keys come from information_schema, which is wrong when replaying across schema changes",
                if metadata.is_empty() { "unsupported" } else { metadata.as_str() }
            ),
            "SET GLOBAL binlog_row_metadata = 'FULL' (and in the server config)",
        );
    }
    match validate::privilege_problems(&mut conn, &cfg.user, mariadb) {
        Ok(missing) if missing.is_empty() => r.ok(format!(
            "user {:?} has REPLICATION SLAVE, {} and SELECT",
            cfg.user,
            if mariadb {
                "BINLOG MONITOR"
            } else {
                "REPLICATION CLIENT"
            }
        )),
        Ok(missing) => {
            for m in missing {
                if let crate::source::mysql::MysqlError::Privilege {
                    missing,
                    grant,
                    user_sql,
                    ..
                } = &m
                {
                    r.fail(
                        format!("user {:?} lacks the {missing} privilege", cfg.user),
                        format!("run `GRANT {grant} ON *.* TO {user_sql}` as an administrator"),
                    );
                } else {
                    r.fail(m.to_string(), "");
                }
            }
        }
        Err(e) => r.fail(
            format!("cannot read the user's grants: {}", ErrorChain(&e)),
            "check that SHOW GRANTS works for the user",
        ),
    }
    match validate::grant_lines(&mut conn) {
        Ok(lines) => {
            let writes = validate::write_grants(&lines);
            if writes.is_empty() {
                r.ok(format!(
                    "user {:?} cannot write (no INSERT/UPDATE/DELETE grants)",
                    cfg.user
                ));
            } else {
                let list: Vec<String> = writes.iter().map(|(p, t)| format!("{p} on {t}")).collect();
                r.warn(
                    format!("user {:?} can write: {}", cfg.user, some_names(&list, 5)),
                    "use a user with only REPLICATION SLAVE, REPLICATION CLIENT / BINLOG MONITOR and SELECT (read-only users are recommended)",
                );
            }
        }
        Err(e) => r.warn(format!("cannot read the user's grants: {e}"), ""),
    }
    if let Some(p) = stored {
        match conn.query("SHOW BINARY LOGS") {
            Ok(rs) => {
                let files: Vec<String> = (0..rs.rows.len()).filter_map(|i| rs.text(i, 0)).collect();
                if files.contains(&p.file) {
                    r.ok(format!(
                        "stored position {}:{} is still on the server",
                        p.file, p.pos
                    ));
                } else {
                    r.fail(
                        format!(
                            "stored position {}:{} is in a binlog the server no longer has (oldest: {})",
                            p.file,
                            p.pos,
                            files.first().map(String::as_str).unwrap_or("none")
                        ),
                        "the source cannot resume: re-backfill the tables and `logtide reset` the source; keep binlogs longer than logtide may be stopped",
                    );
                }
            }
            Err(e) => r.warn(
                format!("cannot list the binlogs: {}", ErrorChain(&e)),
                "grant BINLOG MONITOR / REPLICATION CLIENT",
            ),
        }
    }
    match mysql_tables(&mut conn) {
        Ok(mut tables) => {
            apply_filter(&mut tables, filter);
            check_tables(&mut r, &tables, filter, backfill);
            let keyless: Vec<String> = tables
                .iter()
                .filter(|t| t.captured && t.primary_key.is_empty())
                .map(|t| t.qualified_name())
                .collect();
            if !keyless.is_empty() {
                r.warn(
                    format!("captured tables without a primary key: {} (events carry no key, backfill cannot page them)", some_names(&keyless, 5)),
                    "add primary keys, or exclude the tables",
                );
            }
        }
        Err(e) => r.fail(
            format!("cannot read information_schema: {}", ErrorChain(&e)),
            "GRANT SELECT to the user",
        ),
    }
    r.findings
}

/// Query mode: connect and prepare the query (its columns must include the cursor and key
/// columns).
pub async fn check_query(cfg: &QuerySourceConfig, at: &Endpoint) -> Vec<Finding> {
    let mut r = Report::new(cfg.name.clone());
    match crate::source::query::result_columns(cfg, at).await {
        Ok(cols) => r.ok(format!(
            "query prepared: {} columns ({})",
            cols.len(),
            cols.iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
        Err(e) => {
            let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            let mut is_connect = false;
            while let Some(x) = cur {
                if x.downcast_ref::<tokio_postgres::Error>().is_some() {
                    is_connect = matches!(e, crate::source::query::QueryError::Connect(_));
                    break;
                }
                cur = x.source();
            }
            if is_connect {
                let (what, fix) =
                    describe_pg_connect_error(&cfg.user, cfg.password_env.as_deref(), &e);
                r.fail(what, fix);
            } else {
                r.fail(
                    format!("the query cannot be prepared: {}", ErrorChain(&e)),
                    "fix `query`, `cursor_column` or `key_columns`",
                );
            }
        }
    }
    r.findings
}
