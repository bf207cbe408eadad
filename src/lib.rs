//! logtide: a change-data-capture streamer.
//!
//! logtide tails PostgreSQL logical replication (pgoutput) and MySQL/MariaDB binary logs,
//! filters the changes by table and column, turns each row change into a Debezium-style JSON
//! event keyed by its replication position (the *cursor*), and delivers it to sinks.
//!
//! The flow is one way:
//!
//! ```text
//! source (protocol + type decoding + filter)
//!   -> bounded channel (backpressure)
//!   -> pipeline (batch -> deliver to every sink -> checkpoint -> confirm to the source)
//! ```
//!
//! Guarantees: at-least-once delivery, in commit order per source. A position is stored in
//! the checkpoint store only after every sink accepted the events before it, only at
//! transaction boundaries, and never moves backwards; PostgreSQL is only ever told to release
//! WAL up to the stored checkpoint. After a crash, events after the checkpoint are delivered
//! again with the same cursor, so consumers de-duplicate by cursor.

pub mod admin;
pub mod backfill;
pub mod checkpoint;
pub mod config;
pub mod endpoint;
pub mod error;
pub mod event;
pub mod filter;
pub mod identity;
pub mod json_check;
pub mod metrics;
pub mod ops;
pub mod pipeline;
pub mod position;
pub mod replay;
pub mod service;
pub mod sink;
pub mod source;
pub mod status;
pub mod tls;
pub mod tunnel;
pub mod value;
