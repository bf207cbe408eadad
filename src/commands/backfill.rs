//! `backfill`: request an on-demand backfill of one table (from the running service, or
//! stored for the next start).

use super::load_tunneled;
use crate::fail;
use std::path::PathBuf;
use std::process::ExitCode;

pub async fn backfill(config: PathBuf, source: String, table: String, wait: bool) -> ExitCode {
    // The table is checked on the database, through the source's tunnel if any.
    let (cfg, tunnels) = match load_tunneled(&config, Some(&source)).await {
        Ok(t) => t,
        Err(code) => return code,
    };
    let Some(scfg) = cfg.source(&source).cloned() else {
        return ExitCode::from(2);
    };
    if matches!(scfg, logtide::config::SourceConfig::Query(_)) {
        eprintln!("error: source {source:?} is a query source: it has no backfill (its runs read from the stored cursor)");
        return ExitCode::from(2);
    }
    use logtide::ops::backfill::Outcome;
    match logtide::ops::backfill::request(&cfg, &scfg, &tunnels.endpoint(&scfg), &table, wait).await
    {
        Ok(Outcome::Requested { table, admin }) => {
            outln!("backfill of {table} requested from the running service ({admin}); follow it on /sources/{source} or with --wait");
            ExitCode::SUCCESS
        }
        Ok(Outcome::Stored { table }) => {
            outln!("no running service answered: backfill of {table} stored; it runs when `logtide run` starts");
            ExitCode::SUCCESS
        }
        Ok(Outcome::AlreadyStored { table }) => {
            outln!("backfill of {table} is already stored; it runs when `logtide run` starts");
            ExitCode::SUCCESS
        }
        Ok(Outcome::Done { table, rows }) => {
            outln!("backfill of {table} done: {rows} rows");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e.exit_code(), &e),
    }
}
