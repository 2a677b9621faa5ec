//! On-disk encodings. Fixed layouts, not serde, so that the ledger format is
//! explicit and a damaged value is detected instead of misread.

use serde::{Deserialize, Serialize};
use serialine_core::{BlockId, UnitState};

/// Value of the `serials` tree:
/// `state u8 | flags u8 | block_id u64 BE | at_ms u64 BE | job u32 BE`
/// (schema 5; a schema 4 record, without `job`, reads as job 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SerialRecord {
    pub state: UnitState,
    /// A Rejected or Voided outcome was acknowledged upstream (the terminal
    /// report of invariant 4). Committed outcomes become Synced instead.
    pub reported: bool,
    /// Voided by the fence (see `fence.rs`): the serial may have been sent in
    /// a history the ledger lost (restored or rolled back), so it is never
    /// handed out; upstream keeps whatever outcome it already holds for it.
    pub fenced: bool,
    pub block_id: BlockId,
    /// Unix milliseconds of the last transition (for exports by time).
    pub at_ms: u64,
    /// The ledger's number of the job that sent it (`Store::begin_job`);
    /// 0: sent outside a job, or before jobs were recorded.
    pub job: u32,
}

const FLAG_REPORTED: u8 = 1;
const FLAG_FENCED: u8 = 2;
const RECORD_LEN: usize = 22;
/// A schema 4 record: no job.
const RECORD_LEN_V4: usize = 18;

impl SerialRecord {
    pub fn encode(&self) -> [u8; RECORD_LEN] {
        let mut out = [0u8; RECORD_LEN];
        out[0] = self.state.code();
        out[1] = if self.reported { FLAG_REPORTED } else { 0 }
            | if self.fenced { FLAG_FENCED } else { 0 };
        out[2..10].copy_from_slice(&self.block_id.to_be_bytes());
        out[10..18].copy_from_slice(&self.at_ms.to_be_bytes());
        out[18..].copy_from_slice(&self.job.to_be_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != RECORD_LEN && bytes.len() != RECORD_LEN_V4 {
            return None;
        }
        let state = UnitState::from_code(bytes[0])?;
        if bytes[1] & !(FLAG_REPORTED | FLAG_FENCED) != 0 {
            return None;
        }
        Some(SerialRecord {
            state,
            reported: bytes[1] & FLAG_REPORTED != 0,
            fenced: bytes[1] & FLAG_FENCED != 0,
            block_id: u64::from_be_bytes(bytes[2..10].try_into().ok()?),
            at_ms: u64::from_be_bytes(bytes[10..18].try_into().ok()?),
            job: match bytes.get(18..22) {
                Some(j) => u32::from_be_bytes(j.try_into().ok()?),
                None => 0,
            },
        })
    }
}

/// Value of the `cursors` tree: how many of a block's serials have left the
/// pool, and how many it holds. A block with `used == count` is exhausted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockUse {
    pub used: u32,
    pub count: u32,
}

impl BlockUse {
    pub fn encode(&self) -> [u8; 8] {
        let mut out = [0u8; 8];
        out[..4].copy_from_slice(&self.used.to_be_bytes());
        out[4..].copy_from_slice(&self.count.to_be_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != 8 {
            return None;
        }
        let used = u32::from_be_bytes(bytes[..4].try_into().ok()?);
        let count = u32::from_be_bytes(bytes[4..].try_into().ok()?);
        (used <= count).then_some(BlockUse { used, count })
    }

    pub fn remaining(&self) -> u32 {
        self.count - self.used
    }
}

/// Ledger-wide counters, rewritten in the same atomic batch as every batch so
/// they are exactly as durable as the transitions they count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Serials received in stored blocks.
    pub issued: u64,
    pub sent: u64,
    pub printed: u64,
    pub committed: u64,
    pub synced: u64,
    pub rejected: u64,
    pub voided: u64,
    /// Rejected or Voided outcomes acknowledged upstream.
    pub reported: u64,
    pub blocks: u64,
    /// Of `voided`, serials voided by the fence (never known to have reached
    /// a device; not units of any job). Last, so a ledger whose stored
    /// counters predate it fails to decode them and recounts.
    #[serde(default)]
    pub fenced: u64,
    /// Serials whose records left the ledger for an archive file (retention,
    /// `ledger/retention.rs`); they are out of every per-state counter above.
    /// Last, for the reason `fenced` gives.
    #[serde(default)]
    pub archived: u64,
    /// Committed units pulled for QA, and taken out of the supply chain
    /// (the after-commit states). Last, for the reason `fenced` gives.
    #[serde(default)]
    pub sampled: u64,
    #[serde(default)]
    pub decommissioned: u64,
    /// Serials given back upstream unused (`UnitState::Returned`): out of
    /// the pool for good, never on a device. Last, for the reason `fenced`
    /// gives.
    #[serde(default)]
    pub returned: u64,
}

impl Counts {
    /// Serials still in blocks, never handed to a device.
    pub fn available(&self) -> u64 {
        self.issued - self.left_pool()
    }

    /// Serials out of the pool for good: on (or maybe on) a device, or
    /// returned upstream unused (`returned`, never on a device).
    pub fn left_pool(&self) -> u64 {
        self.sent
            + self.printed
            + self.committed
            + self.synced
            + self.rejected
            + self.voided
            + self.sampled
            + self.decommissioned
            + self.archived
            + self.returned
    }

    pub fn in_flight(&self) -> u64 {
        self.sent + self.printed
    }

    pub(crate) fn slot(&mut self, state: UnitState) -> Option<&mut u64> {
        match state {
            UnitState::Available | UnitState::Reserved => None,
            UnitState::Sent => Some(&mut self.sent),
            UnitState::Printed => Some(&mut self.printed),
            UnitState::Committed => Some(&mut self.committed),
            UnitState::Synced => Some(&mut self.synced),
            UnitState::Rejected(_) => Some(&mut self.rejected),
            UnitState::Voided => Some(&mut self.voided),
            UnitState::Sampled(_) => Some(&mut self.sampled),
            UnitState::Decommissioned(_) => Some(&mut self.decommissioned),
            UnitState::Returned => Some(&mut self.returned),
        }
    }

    /// Does `r` count in [`Counts::reported`]? A Rejected or Voided outcome
    /// upstream acknowledged (a Committed one becomes Synced instead; an
    /// after-commit state keeps its flag but is counted by its own state).
    pub(crate) fn counts_as_reported(r: &SerialRecord) -> bool {
        r.reported && matches!(r.state, UnitState::Rejected(_) | UnitState::Voided)
    }

    /// Moves one serial from `from` to `to` in the per-state counters.
    pub(crate) fn shift(&mut self, from: UnitState, to: UnitState) {
        if let Some(c) = self.slot(from) {
            *c = c.saturating_sub(1);
        }
        if let Some(c) = self.slot(to) {
            *c += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serialine_core::RejectReason;

    #[test]
    fn serial_record_round_trips_and_rejects_garbage() {
        let r = SerialRecord {
            state: UnitState::Rejected(RejectReason::LowGrade),
            reported: true,
            fenced: false,
            block_id: 42,
            at_ms: 1_790_000_000_000,
            job: 7,
        };
        assert_eq!(SerialRecord::decode(&r.encode()), Some(r));
        // A schema 4 record (no job) reads as job 0.
        assert_eq!(
            SerialRecord::decode(&r.encode()[..18]),
            Some(SerialRecord { job: 0, ..r })
        );
        assert_eq!(SerialRecord::decode(&[2, 0, 0]), None);
        let mut bad = r.encode();
        bad[0] = 200;
        assert_eq!(SerialRecord::decode(&bad), None);
        bad = r.encode();
        bad[1] = 0x80;
        assert_eq!(SerialRecord::decode(&bad), None);
    }

    #[test]
    fn block_use_refuses_overuse() {
        let u = BlockUse { used: 3, count: 10 };
        assert_eq!(BlockUse::decode(&u.encode()), Some(u));
        let over = BlockUse {
            used: 11,
            count: 10,
        }
        .encode();
        assert_eq!(BlockUse::decode(&over), None);
    }
}
