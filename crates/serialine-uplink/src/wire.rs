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
