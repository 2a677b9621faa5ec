//! Payloads on the wire, as documented in the crate's README. Everything
//! received is outside input: parsed into these types, never trusted.

use serde::{Deserialize, Serialize};
use serialine_core::BlockId;

/// `blocks/request`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockRequest {
    pub correlation_id: String,
    /// How many serials would bring the buffer to the high-water mark; a
    /// hint, the issuer decides the block size.
    pub serials_wanted: u64,
    /// The product (GTIN, 14 digits) the block must be sealed for: the
    /// running job's. Absent when the line has no product yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gtin: Option<String>,
}

/// `blocks/response`: `block` is the lower-case hex of `SealedBlock::to_bytes()`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockResponse {
    pub correlation_id: String,
    #[serde(default)]
    pub block: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
}

/// `blocks/ack`: published only after the block is durably stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockAck {
    pub block_id: BlockId,
    pub correlation_id: String,
    pub serials: u32,
}

/// One outbox event in an `events` batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireEvent {
    pub id: String,
    pub serial: String,
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub at_ms: u64,
    /// A return (`state` "returned", Open-SCS `SNReturnUnallocated`): the
    /// block the serials were issued in, and every serial of the range it
    /// gives back (`serial`, the one the id is made from, first). Upstream
    /// may issue them again; the line never sends them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub serials: Vec<String>,
    /// `packed` / `unpacked` (EPCIS AggregationEvent ADD / DELETE): the
    /// children moved into or out of the parent `serial`; `reason`
    /// `emptied` when an unpack emptied the parent for good.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<String>,
    /// `packed` / `unpacked`: the event in EPCIS vocabulary, for an
    /// upstream that files it as an `AggregationEvent` as it comes: its
    /// `action` (`ADD` / `DELETE`) and `bizStep` (`packing` / `unpacking`);
    /// the parent (`serial`) is its `parentID`, `children` its `childEPCs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub biz_step: Option<String>,
}

/// `events`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventBatch {
    pub batch_id: String,
    pub line: String,
    pub events: Vec<WireEvent>,
}

/// `events/ack`: upstream holds these ids durably.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventsAck {
    pub batch_id: String,
    pub ids: Vec<String>,
    /// `ack_mac` of the rest, required when the line has an ack key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// `cmd/<name>/reply`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandReply {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `fence/hello`: the line's ledger identity and per-block positions, sent
/// at start (and again until answered). See the README, "Fence handshake".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FenceHello {
    pub hello_id: String,
    pub line: String,
    /// Hex of the ledger's 16-byte identity: a restored copy keeps it, a
    /// ledger made anew (wiped state directory) has another.
    pub ledger_id: String,
    /// The line reserves nothing and requests no block until answered.
    pub holding: bool,
    pub blocks: Vec<FenceBlock>,
}

/// One block in a `fence/hello`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FenceBlock {
    pub block_id: BlockId,
    /// Serials of the block that left the pool, per the ledger.
    pub used: u32,
    pub count: u32,
    /// Positions `0..fence` may have left the pool, per the local fence.
    pub fence: u32,
}

/// `fence/answer`: what upstream has seen from the line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FenceAnswer {
    pub hello_id: String,
    /// Upstream issued blocks to this line before.
    #[serde(default)]
    pub known: bool,
    /// Per block the line holds: positions `0..seen` are, for upstream,
    /// used by the line (reported, or beyond what the line says it used).
    #[serde(default)]
    pub blocks: Vec<FenceSeen>,
    /// Serials upstream counted as issued to the line and not reported, in
    /// blocks the line acknowledged but no longer holds: upstream has marked
    /// them invalid.
    #[serde(default)]
    pub invalidated: u64,
}

/// One block in a `fence/answer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FenceSeen {
    pub block_id: BlockId,
    pub seen: u32,
}
