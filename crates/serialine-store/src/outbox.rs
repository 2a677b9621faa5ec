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
    /// What the event is beyond a unit's outcome. Last, so a schema 5
    /// entry without it still decodes ([`OutboxEvent::decode`]).
    pub detail: EventDetail,
}

/// The kinds of outbox events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventDetail {
    /// `serial`'s outcome `state`.
    #[default]
    Unit,
    /// A return (`state` Returned): the block the serials were issued in,
    /// and every serial of the range it gives back, `serial` (the id's)
    /// first; at most [`RETURN_EVENT_SERIALS`].
    Return { block: u64, serials: Vec<Serial> },
    /// `children` packed into the parent `serial` (EPCIS
    /// `AggregationEvent` ADD, bizStep packing); at most
    /// [`RETURN_EVENT_SERIALS`] per event.
    Pack { children: Vec<Serial> },
    /// `children` taken out of the parent `serial` (DELETE, unpacking);
    /// `all`: the parent was emptied, and its code is never used again.
    Unpack { children: Vec<Serial>, all: bool },
}

/// Most serials one return or aggregation event names: its outbox entry
/// stays under the ledger's value bound (serials of up to 32 characters).
pub const RETURN_EVENT_SERIALS: usize = 100;

/// The id of an aggregation event: the move (line, action, parent, sorted
/// children) and its place in the ledger's history (its outbox `seq` and
/// the batch's time). Stored with the event, so every redelivery carries
/// the same id and upstream deduplicates it; and the same move made again
/// later (a unit taken out and put back into the same case) is a new event
/// with a new id, not mistaken for a redelivery of the first. (A unit's
/// outcome needs no such place: a serial reaches each state once.)
pub fn aggregation_event_id(
    line_id: &str,
    action: &str,
    parent: &Serial,
    children: &[Serial],
    seq: u64,
    at_ms: u64,
) -> [u8; 32] {
    let mut sorted: Vec<&Serial> = children.iter().collect();
    sorted.sort();
    let mut h = blake3::Hasher::new();
    h.update(b"serialine aggregation event v2\0");
    h.update(line_id.as_bytes());
    h.update(&[0]);
    h.update(action.as_bytes());
    h.update(&[0]);
    h.update(parent.as_bytes());
    for c in sorted {
        h.update(&[0]);
        h.update(c.as_bytes());
    }
    h.update(&[0]);
    h.update(&seq.to_be_bytes());
    h.update(&at_ms.to_be_bytes());
    *h.finalize().as_bytes()
}

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
                detail: EventDetail::Unit,
            })
        })
    }

    /// The serials a return event gives back (none for other events).
    pub fn returned(&self) -> &[Serial] {
        match &self.detail {
            EventDetail::Return { serials, .. } => serials,
            _ => &[],
        }
    }

    pub fn id_hex(&self) -> String {
        hex::encode(self.id)
    }
}
