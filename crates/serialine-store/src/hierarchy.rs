//! The packaging hierarchy (issue 14): committed units packed into parents
//! (cases, then cases onto pallets), recorded by the ledger with the same
//! guarantees as a unit's lifecycle. A parent is itself a serial issued to
//! the line (a serialised case GTIN from its own blocks, AI 01 + 21), whose
//! label went through the unit lifecycle first: sent to the label printer
//! (durable before it is printed) and committed once a scanner verified it.
//!
//! The rules, enforced in one place (`ledger/hierarchy.rs`), each op whole
//! or refused with nothing changed:
//! - a child has at most one parent at any time;
//! - a parent holds only committed children (committed or acknowledged; not
//!   sampled, not decommissioned) of its own job, and is committed itself;
//! - a parent code is packed once: emptied (unpacked whole) it is never
//!   used again;
//! - no parent ends up inside its own contents;
//! - every pack and unpack goes upstream once, through the outbox, as an
//!   event with a stable id (EPCIS `AggregationEvent` ADD / DELETE).
//!
//! Trees: `parents` (parent serial -> [`ParentEntry`], postcard),
//! `parent_of` (child serial -> parent serial), `children` (parent serial,
//! 0, child serial -> empty: a parent's contents by prefix scan).

use serde::{Deserialize, Serialize};

/// Most children one request packs or unpacks (a pallet of 100 cases, a
/// case of 100 units); each event names at most
/// [`crate::outbox::RETURN_EVENT_SERIALS`].
pub const MAX_CHILDREN: usize = 1_000;

/// How deep parents nest (unit, case, bundle, pallet and some).
pub const MAX_DEPTH: usize = 8;

/// A parent's standing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ParentState {
    /// Holds its children (children may be taken out and put in: rework).
    Packed,
    /// Emptied whole: its code is used up and is never packed again.
    Emptied,
}

/// Value of the `parents` tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentEntry {
    pub state: ParentState,
    /// Children it holds now.
    pub children: u32,
    /// The job whose units it holds (its own label's job).
    pub job: u32,
    /// When it was first packed (Unix milliseconds).
    pub packed_ms: u64,
    /// How many children a full parent of its level holds, as the line
    /// that sealed it said (0: not said, a parent packed by hand). A parent
    /// sealed with fewer is a partial case (the end of a job).
    pub expected: u32,
}

/// A parent entry as schema 6 wrote it, before `expected`.
#[derive(Deserialize)]
struct ParentEntryV6 {
    state: ParentState,
    children: u32,
    job: u32,
    packed_ms: u64,
}

impl ParentEntry {
    /// Reads an entry of either layout (postcard is not self-describing:
    /// a schema 6 entry ends before `expected`, and reads as 0).
    pub fn decode(bytes: &[u8]) -> Option<ParentEntry> {
        postcard::from_bytes::<ParentEntry>(bytes).ok().or_else(|| {
            postcard::from_bytes::<ParentEntryV6>(bytes)
                .ok()
                .map(|e| ParentEntry {
                    state: e.state,
                    children: e.children,
                    job: e.job,
                    packed_ms: e.packed_ms,
                    expected: 0,
                })
        })
    }

    /// Sealed by the line with fewer children than a full parent holds.
    pub fn partial(&self) -> bool {
        self.expected > 0 && self.children < self.expected
    }
}

/// What a pack or unpack did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HierarchyMove {
    pub children: u32,
    /// Outbox events it queued.
    pub events: u32,
    /// The parent's children after it.
    pub holds: u32,
}
