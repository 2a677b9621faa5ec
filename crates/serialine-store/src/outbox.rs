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
    /// A return (`state` Returned): every serial of the block range it
    /// gives back, `serial` (the id's) first; at most
    /// [`RETURN_EVENT_SERIALS`]. Empty for any other event. Last, so a
    /// schema 5 entry without it still decodes ([`OutboxEvent::decode`]).
    pub returned: Vec<Serial>,
    /// The block the returned serials were issued in (0 otherwise).
    pub block: u64,
}

/// Most serials one return event names: its outbox entry stays under the
/// ledger's value bound (serials of up to 32 characters).
pub const RETURN_EVENT_SERIALS: usize = 100;

/// An outbox entry as schema 5 wrote it, before returns.
#[derive(Deserialize)]
struct OutboxEventV5 {
    seq: u64,
    id: [u8; 32],
    serial: Serial,
    state: UnitState,
    at_ms: u64,
}

impl OutboxEvent {
    /// An `outbox` value, written by this build or before returns.
    pub fn decode(bytes: &[u8]) -> Result<Self, postcard::Error> {
        postcard::from_bytes(bytes).or_else(|e| {
            let old: OutboxEventV5 = postcard::from_bytes(bytes).map_err(|_| e)?;
            Ok(OutboxEvent {
                seq: old.seq,
                id: old.id,
                serial: old.serial,
                state: old.state,
                at_ms: old.at_ms,
                returned: Vec::new(),
                block: 0,
            })
        })
    }

    pub fn id_hex(&self) -> String {
        hex::encode(self.id)
    }
}
