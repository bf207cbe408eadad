//! The walsender of a replication connection this process declared dead.
//!
//! After a network partition the server may keep the old walsender (and with it the slot)
//! until its `wal_sender_timeout` fires; a reconnect meanwhile fails with "replication slot
//! … is active for PID …". Only a walsender *this process* connected and then found silent
//! is ended (`pg_terminate_backend`, allowed for the same role), and only while it still
//! holds the slot: another process using the slot is never touched.

use std::collections::HashMap;
use std::sync::Mutex;

static STALE: Mutex<Option<HashMap<String, i32>>> = Mutex::new(None);

/// Notes that our connection on `slot`, served by walsender `pid`, went silent.
pub(super) fn remember(slot: &str, pid: i32) {
    let mut g = STALE.lock().unwrap_or_else(|e| e.into_inner());
    g.get_or_insert_with(HashMap::new)
        .insert(slot.to_owned(), pid);
}

/// Ends the remembered walsender of `slot` if it still holds the slot.
pub(super) async fn end_if_still_active(client: &tokio_postgres::Client, slot: &str) {
    let pid = {
        let mut g = STALE.lock().unwrap_or_else(|e| e.into_inner());
        g.as_mut().and_then(|m| m.remove(slot))
    };
    let Some(pid) = pid else {
        return;
    };
    let ended = client
        .query_opt(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots \
             WHERE slot_name = $1 AND active_pid = $2",
            &[&slot, &pid],
        )
        .await;
    match ended {
        Ok(Some(_)) => {
            tracing::warn!(
                slot,
                pid,
                "ended the walsender of our silent previous connection, which still held the slot"
            )
        }
        Ok(None) => {}
        Err(error) => {
            tracing::warn!(slot, pid, %error, "cannot end the walsender of our silent previous connection; the server frees the slot after its wal_sender_timeout")
        }
    }
}
