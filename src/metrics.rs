//! Prometheus metrics: the metric names, their descriptions, and the few helpers that
//! record them through the [`metrics`](::metrics) facade.
//!
//! Owns: the names and help texts (`describe_*!`), the `logtide_batch_seconds` buckets, the
//! process's recorder ([`install`], `metrics-exporter-prometheus`) and the text served at
//! `GET /metrics` ([`render`]). Does not own: the HTTP server ([`crate::admin`]), the live
//! state of the sources ([`crate::status`]), or what is measured — the service, pipeline,
//! backfill and sinks record with the helpers below or with `metrics::counter!` and the name
//! constants.
//!
//! Two kinds of series:
//! * **Recorded** as things happen (counters, the histogram, `logtide_backfill_done`): into
//!   the global recorder that `logtide run` installs when its admin endpoint is enabled.
//!   Without an installed recorder (other commands, `[admin] enabled = false`) the calls
//!   are no-ops. A sink needs no handle: it calls `metrics::counter!` with its `sink` label.
//! * **Read at scrape time** from each source's [`SourceStatus`] (lag, checkpoint, paused,
//!   up, slot retention): [`render`] sets them in a fresh recorder for that one scrape, so a
//!   series shows only the current value (a `logtide_checkpoint_info` of an older position
//!   is not left behind, and a lag not measured yet is absent rather than stale).
//!
//! The exporter renders families in no fixed order and numbers as Rust prints them
//! (`1`, `0.25`); see docs/operations.md.

use crate::status::{SourceStatus, StatusBoard};
use ::metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use std::collections::BTreeMap;
use std::sync::OnceLock;

pub const EVENTS_TOTAL: &str = "logtide_events_total";
pub const LAG_SECONDS: &str = "logtide_lag_seconds";
pub const LAG_BYTES: &str = "logtide_lag_bytes";
pub const BATCH_SECONDS: &str = "logtide_batch_seconds";
pub const RETRIES_TOTAL: &str = "logtide_retries_total";
pub const ERRORS_TOTAL: &str = "logtide_errors_total";
pub const DEAD_LETTERS_TOTAL: &str = "logtide_dead_letters_total";
pub const BACKFILL_ROWS_TOTAL: &str = "logtide_backfill_rows_total";
pub const BACKFILL_TABLES_SKIPPED_TOTAL: &str = "logtide_backfill_tables_skipped_total";
pub const BACKFILL_DONE: &str = "logtide_backfill_done";
pub const CHECKPOINT_INFO: &str = "logtide_checkpoint_info";
pub const CHECKPOINT_TIMESTAMP_SECONDS: &str = "logtide_checkpoint_timestamp_seconds";
pub const SOURCE_PAUSED: &str = "logtide_source_paused";
pub const SOURCE_UP: &str = "logtide_source_up";
pub const SLOT_RETAINED_BYTES: &str = "logtide_slot_retained_bytes";

/// Upper bounds (seconds) of the `logtide_batch_seconds` buckets.
pub const BATCH_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Describes every metric to the current recorder (the HELP lines).
pub fn describe() {
    describe_counter!(
        EVENTS_TOTAL,
        "Change events accepted by every sink, by source, table and op (c, u, d, t, r)."
    );
    describe_gauge!(
        LAG_SECONDS,
        "Seconds between now and the commit time of the last delivered event (0 once the source reported it is idle past that event)."
    );
    describe_gauge!(
        LAG_BYTES,
        "Server WAL/binlog position minus the stored checkpoint, in bytes, at the last check."
    );
    describe_histogram!(
        BATCH_SECONDS,
        "Time one sink took to accept a batch, retries included."
    );
    describe_counter!(
        RETRIES_TOTAL,
        "Delivery attempts repeated after a transient failure, by sink."
    );
    describe_counter!(
        ERRORS_TOTAL,
        "Failures by source and kind (source_transient, source_permanent, backfill_transient, backfill_permanent, pipeline)."
    );
    describe_counter!(
        DEAD_LETTERS_TOTAL,
        "Events a sink wrote to its dead-letter file."
    );
    describe_counter!(
        BACKFILL_ROWS_TOTAL,
        "Rows delivered by the initial backfill in this process, by table."
    );
    describe_counter!(
        BACKFILL_TABLES_SKIPPED_TOTAL,
        "Tables the backfill skipped because they were dropped while it ran, by table."
    );
    describe_gauge!(
        BACKFILL_DONE,
        "1 once the backfill of the table completed in this process."
    );
    describe_gauge!(
        CHECKPOINT_INFO,
        "Always 1; the position label is the last stored checkpoint."
    );
    describe_gauge!(
        CHECKPOINT_TIMESTAMP_SECONDS,
        "Unix time of the last stored checkpoint."
    );
    describe_gauge!(
        SOURCE_PAUSED,
        "1 while the source is paused through the admin endpoint."
    );
    describe_gauge!(
        SOURCE_UP,
        "1 while the source is connected and streaming or backfilling."
    );
    describe_gauge!(
        SLOT_RETAINED_BYTES,
        "WAL the PostgreSQL replication slot retains (pg_current_wal_lsn() - restart_lsn)."
    );
}

/// A recorder with logtide's settings (the `logtide_batch_seconds` buckets); not installed.
pub fn recorder() -> PrometheusRecorder {
    let builder = PrometheusBuilder::new();
    // Fails only for an empty bucket list; BATCH_BUCKETS is not.
    match builder.set_buckets_for_metric(Matcher::Full(BATCH_SECONDS.to_owned()), &BATCH_BUCKETS) {
        Ok(b) => b.build_recorder(),
        Err(_) => PrometheusBuilder::new().build_recorder(),
    }
}

static INSTALLED: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process's global recorder on the first call and returns its handle (the
/// same handle on every later call: a recorder is installed once per process).
pub fn install() -> PrometheusHandle {
    INSTALLED
        .get_or_init(|| {
            let recorder = recorder();
            let handle = recorder.handle();
            match ::metrics::set_global_recorder(recorder) {
                Ok(()) => describe(),
                Err(error) => tracing::warn!(%error, "another metrics recorder is installed: /metrics shows only the source gauges"),
            }
            handle
        })
        .clone()
}

/// The text of `GET /metrics`: what was recorded, then the gauges of every source read now.
pub fn render(recorded: &PrometheusHandle, board: &StatusBoard) -> String {
    let mut out = recorded.render();
    let scrape = recorder();
    ::metrics::with_local_recorder(&scrape, || {
        describe();
        for s in board.sources() {
            source_gauges(s);
        }
    });
    out.push_str(&scrape.handle().render());
    out
}

/// Sets the gauges of one source from its status, in the current recorder.
fn source_gauges(s: &SourceStatus) {
    let snap = s.snapshot();
    let name = s.name.clone();
    if let Some(l) = snap.lag_seconds {
        gauge!(LAG_SECONDS, "source" => name.clone()).set(l);
    }
    if let Some(b) = snap.lag_bytes {
        gauge!(LAG_BYTES, "source" => name.clone()).set(b as f64);
    }
    if let Some(b) = snap.slot_retained_bytes {
        gauge!(SLOT_RETAINED_BYTES, "source" => name.clone()).set(b as f64);
    }
    if let Some(p) = snap.checkpoint {
        gauge!(CHECKPOINT_INFO, "source" => name.clone(), "position" => p).set(1.0);
    }
    if let Some(ms) = s.checkpoint_ms() {
        gauge!(CHECKPOINT_TIMESTAMP_SECONDS, "source" => name.clone()).set(ms as f64 / 1000.0);
    }
    gauge!(SOURCE_PAUSED, "source" => name.clone()).set(if snap.paused { 1.0 } else { 0.0 });
    gauge!(SOURCE_UP, "source" => name).set(if snap.state.is_up() { 1.0 } else { 0.0 });
}

/// Counts delivered events: `(table, op) -> n` of one batch.
pub fn events(source: &str, counts: &BTreeMap<(String, &'static str), u64>) {
    for ((table, op), n) in counts {
        counter!(EVENTS_TOTAL, "source" => source.to_owned(), "table" => table.clone(), "op" => *op)
            .increment(*n);
    }
}

/// One sink took `secs` to accept a batch.
pub fn batch_seconds(sink: &str, secs: f64) {
    histogram!(BATCH_SECONDS, "sink" => sink.to_owned()).record(secs);
}

/// The pipeline repeated a delivery to `sink` (a sink counts its own retries the same way).
pub fn retry(sink: &str) {
    counter!(RETRIES_TOTAL, "sink" => sink.to_owned()).increment(1);
}

/// A failure of `source`, by kind (`source_transient`, `pipeline`, `panic`, …).
pub fn error(source: &str, kind: &'static str) {
    counter!(ERRORS_TOTAL, "source" => source.to_owned(), "kind" => kind).increment(1);
}

pub fn backfill_rows(source: &str, table: &str, n: u64) {
    counter!(BACKFILL_ROWS_TOTAL, "source" => source.to_owned(), "table" => table.to_owned())
        .increment(n);
}

/// A table was dropped during the backfill and skipped.
pub fn backfill_skipped(source: &str, table: &str) {
    counter!(BACKFILL_TABLES_SKIPPED_TOTAL, "source" => source.to_owned(), "table" => table.to_owned())
        .increment(1);
}

pub fn backfill_done(source: &str, table: &str, done: bool) {
    gauge!(BACKFILL_DONE, "source" => source.to_owned(), "table" => table.to_owned())
        .set(if done { 1.0 } else { 0.0 });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::SourceState;

    /// Runs `f` against a private recorder and returns what `/metrics` would show.
    fn recorded(board: &StatusBoard, f: impl FnOnce()) -> String {
        let rec = recorder();
        ::metrics::with_local_recorder(&rec, || {
            describe();
            f();
        });
        render(&rec.handle(), board)
    }

    #[test]
    fn renders_names_labels_and_histograms() {
        let board = StatusBoard::new([("app".to_owned(), "postgres")]);
        let text = recorded(&board, || {
            let mut counts = BTreeMap::new();
            counts.insert(("public.t".to_owned(), "c"), 3);
            events("app", &counts);
            events("app", &counts);
            batch_seconds("out", 0.003);
            batch_seconds("out", 100.0);
            error("app", "source_transient");
            ::metrics::counter!(DEAD_LETTERS_TOTAL, "sink" => "we\"ird\\").increment(2);
        });
        assert!(
            text.contains("logtide_events_total{source=\"app\",table=\"public.t\",op=\"c\"} 6\n"),
            "{text}"
        );
        assert!(text.contains("logtide_batch_seconds_bucket{sink=\"out\",le=\"0.001\"} 0\n"));
        assert!(text.contains("logtide_batch_seconds_bucket{sink=\"out\",le=\"0.005\"} 1\n"));
        assert!(text.contains("logtide_batch_seconds_bucket{sink=\"out\",le=\"30\"} 1\n"));
        assert!(text.contains("logtide_batch_seconds_bucket{sink=\"out\",le=\"+Inf\"} 2\n"));
        assert!(text.contains("logtide_batch_seconds_count{sink=\"out\"} 2\n"));
        assert!(text.contains("logtide_dead_letters_total{sink=\"we\\\"ird\\\\\"} 2\n"));
        assert!(text.contains("logtide_errors_total{source=\"app\",kind=\"source_transient\"} 1\n"));
        assert!(text.contains("# TYPE logtide_batch_seconds histogram\n"));
        assert!(text.contains("# HELP logtide_events_total Change events accepted"));
        assert!(text.contains("logtide_source_paused{source=\"app\"} 0\n"));
        assert!(text.contains("logtide_source_up{source=\"app\"} 0\n"));
        // One HELP/TYPE per family.
        assert_eq!(text.matches("# TYPE logtide_events_total ").count(), 1);
        assert_eq!(text.matches("# TYPE logtide_source_up ").count(), 1);
    }

    #[test]
    fn source_gauges_show_the_current_state_only() {
        let board = StatusBoard::new([("app".to_owned(), "postgres")]);
        let s = board.source("app").expect("app").clone();
        let text = recorded(&board, || {});
        assert!(!text.contains("logtide_lag_bytes"), "{text}");
        assert!(!text.contains("logtide_checkpoint_info"), "{text}");
        s.set_state(SourceState::Streaming);
        s.set_paused(true);
        s.set_lag_bytes(Some(42));
        for lsn in [16, 32] {
            s.checkpointed(&crate::position::Position::Postgres(
                crate::position::PgPosition {
                    lsn: crate::position::Lsn(lsn),
                    ordinal: 0,
                },
            ));
        }
        let text = recorded(&board, || {});
        assert!(
            text.contains("logtide_source_up{source=\"app\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("logtide_source_paused{source=\"app\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("logtide_lag_bytes{source=\"app\"} 42\n"),
            "{text}"
        );
        // The latest checkpoint only, not one series per checkpoint ever stored.
        assert_eq!(
            text.matches("logtide_checkpoint_info{").count(),
            1,
            "{text}"
        );
        assert!(text.contains("position=\"0/20#0\"} 1\n"), "{text}");
        assert!(text.contains("logtide_checkpoint_timestamp_seconds{source=\"app\"} "));
    }
}
