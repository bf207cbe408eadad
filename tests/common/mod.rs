//! Shared test harness: private database servers and running the logtide binary.
//! `pg.rs` (PostgreSQL), `mariadb.rs` (MariaDB) and `run.rs` (the binary) are filled in by
//! their owners; every test file does `mod common;`.
#![allow(dead_code)]
pub mod blackhole;
pub mod mariadb;
pub mod pg;
pub mod port;
pub mod run;
