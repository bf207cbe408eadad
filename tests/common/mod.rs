//! Shared test harness: private database servers and running the logtide binary.
//! `pg.rs` (PostgreSQL), `mariadb.rs` (MariaDB) and `run.rs` (the binary) are filled in by
//! their owners; `tests/main.rs` declares `mod common;` once for every test module.
#![allow(dead_code)]
pub mod blackhole;
pub mod mariadb;
pub mod mysql_proto;
pub mod pg;
pub mod port;
pub mod receiver;
pub mod run;

/// Sets an environment variable of this test process (for code under test that reads a
/// secret with `std::env::var`). Every test shares the process, so a name belongs to one
/// value for the whole run: setting it again to the same value is fine, to another value
/// panics instead of changing what a concurrent test reads.
pub fn set_env(name: &str, value: &str) {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _held = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    match std::env::var(name) {
        Ok(old) if old == value => {}
        Ok(old) => {
            panic!("{name} is already set to {old:?} by another test; use a name of its own")
        }
        Err(_) => std::env::set_var(name, value),
    }
}
