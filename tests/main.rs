//! The one integration-test binary: every behaviour file in `tests/` is a module here, so
//! the harness (`common/`, `sink_util/`) and the crate are compiled and linked once, and the
//! shared PostgreSQL and MariaDB instances are started once per run instead of once per file.
//!
//! Run one file's tests by its module path, e.g.
//! `cargo test --release --test main -- pg_stream::` (several filters may follow `--`).
//!
//! Everything here shares one process: a test that stops, kills or restarts a server uses a
//! private instance (`PgServer::start_with`, `MariaServer::builder`), never the shared one;
//! ports come from `common::port::free_port` (one counter for the whole run); a config that
//! `Workdir::write_config` writes gets an admin endpoint on a port of its own; environment
//! variables are set only through `common::set_env` (each name owned by one test, one value).

mod common;
mod sink_util;

mod admin;
mod architecture;
mod backfill_cursors;
mod backfill_ondemand;
mod dead_letters_cli;
mod first_hour;
mod mysql8;
mod mysql_backfill;
mod mysql_binary;
mod mysql_crosscheck;
mod mysql_stream;
mod mysql_tls;
mod mysql_transactions;
mod mysql_types;
mod ops_cli;
mod pg_backfill;
mod pg_big_tx;
mod pg_harness;
mod pg_operators;
mod pg_recovery;
mod pg_source;
mod pg_stream;
mod pg_tls;
mod pg_types;
mod query_mode;
mod query_mysql;
mod reload;
mod replay;
mod sink_config;
mod sink_contract;
mod sink_http;
mod sink_nats;
mod sink_segment;
mod ssh_tunnel;
mod supervision;
