//! The upstream outbox: one event per terminal outcome, written in the same
//! durable batch as the transition, removed only when upstream acknowledges it.

use serde::{Deserialize, Serialize};
use serialine_core::{Serial, UnitState};

/// Stable, idempotent event id (invariant 5): the same outcome of the same
/// serial on the same line always has the same id, so upstream deduplicates
/// redeliveries after a crash or reconnect.
pub fn event_id(line_id: &str, serial: &Serial, state: UnitState) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"serialine outbox event v1\0");
    h.update(line_id.as_bytes());
    h.update(&[0]);
    h.update(serial.as_bytes());
    h.update(&[0]);
    h.update(state.name().as_bytes());
    *h.finalize().as_bytes()
}

/// An outcome waiting for upstream's acknowledgment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEvent {
    /// Position in the outbox: events drain in this order.
    pub seq: u64,
    pub id: [u8; 32],
    pub serial: Serial,
    pub state: UnitState,
    /// Unix milliseconds when the outcome became durable.
    pub at_ms: u64,
}

impl OutboxEvent {
    pub fn id_hex(&self) -> String {
        hex::encode(self.id)
    }
}
