//! The simulated upstream's side of the fence handshake (uplink README,
//! "Fence handshake"). The issuer answers `fence/hello` from what it issued
//! to the line and what the line reported on `events` (it watches them).
//!
//! Per block the line holds: `seen` is one past the highest position of a
//! serial the line reported; the line voids everything below it that its
//! ledger does not remember. Per block the line acknowledged (stored
//! durably) but no longer holds (a wiped state directory, a ledger restored
//! from before the block came): every serial not reported is invalidated
//! here and counted in the answer. Blocks the line never acknowledged may
//! still be on their way to it and are left alone.

use serde::{Deserialize, Serialize};
use serialine_core::{BlockId, Serial};
use std::collections::{HashMap, HashSet};

/// `fence/hello`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FenceHello {
    pub hello_id: String,
    #[serde(default)]
    pub line: String,
    #[serde(default)]
    pub ledger_id: String,
    #[serde(default)]
    pub holding: bool,
    #[serde(default)]
    pub blocks: Vec<FenceBlock>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct FenceBlock {
    pub block_id: BlockId,
    #[serde(default)]
    pub used: u32,
    #[serde(default)]
    pub count: u32,
    #[serde(default)]
    pub fence: u32,
}

/// `fence/answer`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FenceAnswer {
    pub hello_id: String,
    pub known: bool,
    pub blocks: Vec<FenceSeen>,
    pub invalidated: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FenceSeen {
    pub block_id: BlockId,
    pub seen: u32,
}

/// The answer to `hello`, and the serials it newly invalidates.
pub fn answer(
    hello: &FenceHello,
    blocks: &HashMap<BlockId, Vec<Serial>>,
    acked: &[BlockId],
    reported: &HashSet<Serial>,
    invalidated: &HashSet<Serial>,
) -> (FenceAnswer, Vec<Serial>) {
    let held: HashSet<BlockId> = hello.blocks.iter().map(|b| b.block_id).collect();
    let mut seen = Vec::new();
    for b in &hello.blocks {
        let Some(serials) = blocks.get(&b.block_id) else {
            continue;
        };
        let top = serials
            .iter()
            .rposition(|s| reported.contains(s))
            .map_or(0, |p| p + 1);
        if top > 0 {
            seen.push(FenceSeen {
                block_id: b.block_id,
                seen: u32::try_from(top).unwrap_or(u32::MAX),
            });
        }
    }
    let mut newly = Vec::new();
    let mut lost: Vec<BlockId> = acked
        .iter()
        .copied()
        .filter(|b| !held.contains(b))
        .collect();
    lost.sort_unstable();
    lost.dedup();
    let mut count = 0u64;
    for b in lost {
        for s in blocks.get(&b).into_iter().flatten() {
            if !reported.contains(s) {
                count += 1;
                if !invalidated.contains(s) {
                    newly.push(s.clone());
                }
            }
        }
    }
    (
        FenceAnswer {
            hello_id: hello.hello_id.clone(),
            known: !blocks.is_empty(),
            blocks: seen,
            invalidated: count,
        },
        newly,
    )
}

/// Serials named in an `events` batch (any outcome), for the issuer's view
/// of what the line reported. Malformed batches name nothing.
pub fn reported_in(payload: &[u8]) -> Vec<Serial> {
    #[derive(Deserialize)]
    struct Ev {
        serial: String,
    }
    #[derive(Deserialize)]
    struct Batch {
        events: Vec<Ev>,
    }
    serde_json::from_slice::<Batch>(payload)
        .map(|b| {
            b.events
                .into_iter()
                .filter_map(|e| Serial::new(e.serial).ok())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u32) -> Serial {
        Serial::new(format!("S{n:06}")).unwrap()
    }

    #[test]
    fn seen_is_one_past_the_highest_reported_and_lost_blocks_are_invalidated() {
        let blocks: HashMap<BlockId, Vec<Serial>> = [
            (1, (0..10).map(s).collect()),
            (2, (10..20).map(s).collect()),
            (3, (20..30).map(s).collect()),
        ]
        .into_iter()
        .collect();
        let reported: HashSet<Serial> = [s(0), s(6), s(10)].into_iter().collect();
        let hello = FenceHello {
            hello_id: "h".into(),
            line: "l".into(),
            ledger_id: String::new(),
            holding: false,
            blocks: vec![FenceBlock {
                block_id: 1,
                used: 2,
                count: 10,
                fence: 0,
            }],
        };
        // Block 2 acked and gone: 9 unreported invalidated. Block 3 never acked.
        let (a, newly) = answer(&hello, &blocks, &[1, 2], &reported, &HashSet::new());
        assert!(a.known);
        assert_eq!(
            a.blocks,
            vec![FenceSeen {
                block_id: 1,
                seen: 7
            }]
        );
        assert_eq!(a.invalidated, 9);
        assert_eq!(newly.len(), 9);
        // Asked again: counted, not newly invalidated.
        let already: HashSet<Serial> = newly.into_iter().collect();
        let (a2, newly2) = answer(&hello, &blocks, &[1, 2], &reported, &already);
        assert_eq!(a2.invalidated, 9);
        assert!(newly2.is_empty());
        // A line upstream never issued to.
        let (a3, _) = answer(&hello, &HashMap::new(), &[], &reported, &already);
        assert!(!a3.known && a3.blocks.is_empty());
    }
}
