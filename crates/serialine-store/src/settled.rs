//! On-disk encodings of settled blocks (schema 8): a block whose every
//! serial ended and was reported upstream leaves the `serials` tree for
//! two compact forms, because sled 0.34 costs about 100 bytes of disk per
//! key however small (`examples/sled_key_cost.rs`), which one key per
//! serial kept for weeks multiplies into gigabytes.
//!
//! - **Snapshot** (`settled` tree): the block's records in block order,
//!   [`SNAPSHOT_RECORDS`] per value, zstd-compressed: a serial's record is
//!   found from its place in the block.
//! - **Runs** (`runs` tree): which block holds a serial, as sorted arrays of
//!   `(keyed hash, block)` entries, [`RUN_ENTRIES`] per value, keyed by the
//!   run and the chunk's first hash so that sled's own tree finds the one
//!   chunk a hash can be in. Each settling round writes one run; runs are
//!   merged as they pile up (`ledger/settle.rs`), so a lookup reads one
//!   value per run.

use crate::record::SerialRecord;
use serde::{Deserialize, Serialize};
use serialine_core::BlockId;

/// Records per snapshot value: 180 records of 22 bytes stay under the
/// ledger's 4 KiB value bound even where zstd gains nothing.
pub(crate) const SNAPSHOT_RECORDS: usize = 180;
/// Entries per run value (16 bytes each), with room for a few equal hashes
/// that must not straddle two values.
pub(crate) const RUN_ENTRIES: usize = 248;
const RECORD_BYTES: usize = 22;
const ENTRY_BYTES: usize = 16;
const RAW: u8 = 0;
const ZSTD: u8 = 1;

/// Key of snapshot value `chunk` of `block`.
pub(crate) fn snapshot_key(block: BlockId, chunk: u32) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..8].copy_from_slice(&block.to_be_bytes());
    k[8..].copy_from_slice(&chunk.to_be_bytes());
    k
}

/// The snapshot values of a block's records, in block order.
pub(crate) fn encode_snapshot(records: &[SerialRecord]) -> Vec<Vec<u8>> {
    records
        .chunks(SNAPSHOT_RECORDS)
        .map(|part| {
            let mut raw = Vec::with_capacity(part.len() * RECORD_BYTES);
            for r in part {
                raw.extend_from_slice(&r.encode());
            }
            match zstd::bulk::compress(&raw, 3) {
                Ok(z) if z.len() + 1 < raw.len() => {
                    let mut v = Vec::with_capacity(z.len() + 1);
                    v.push(ZSTD);
                    v.extend_from_slice(&z);
                    v
                }
                _ => {
                    let mut v = Vec::with_capacity(raw.len() + 1);
                    v.push(RAW);
                    v.extend_from_slice(&raw);
                    v
                }
            }
        })
        .collect()
}

/// The records of one snapshot value; `None` if it is damaged.
pub(crate) fn decode_snapshot(value: &[u8]) -> Option<Vec<SerialRecord>> {
    let (&tag, body) = value.split_first()?;
    let raw = match tag {
        RAW => body.to_vec(),
        ZSTD => zstd::bulk::decompress(body, SNAPSHOT_RECORDS * RECORD_BYTES).ok()?,
        _ => return None,
    };
    if !raw.len().is_multiple_of(RECORD_BYTES) || raw.len() > SNAPSHOT_RECORDS * RECORD_BYTES {
        return None;
    }
    raw.chunks(RECORD_BYTES).map(SerialRecord::decode).collect()
}

/// Key of a run value: the run, then the first hash it holds.
pub(crate) fn run_key(run: u32, first_hash: u64) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..4].copy_from_slice(&run.to_be_bytes());
    k[4..].copy_from_slice(&first_hash.to_be_bytes());
    k
}

/// One index entry: a serial's keyed hash and the block that issued it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct RunEntry {
    pub hash: u64,
    pub block: BlockId,
}

/// Sorted `entries` cut into run values; equal hashes stay in one value
/// (a lookup reads the single value whose first hash is at or below its
/// own).
pub(crate) fn encode_run(entries: &[RunEntry]) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < entries.len() {
        let mut end = (start + RUN_ENTRIES).min(entries.len());
        while end < entries.len() && end > start && entries[end].hash == entries[end - 1].hash {
            end += 1;
        }
        let mut v = Vec::with_capacity((end - start) * ENTRY_BYTES);
        for e in &entries[start..end] {
            v.extend_from_slice(&e.hash.to_be_bytes());
            v.extend_from_slice(&e.block.to_be_bytes());
        }
        out.push((entries[start].hash, v));
        start = end;
    }
    out
}

/// The entries of one run value; `None` if it is damaged.
pub(crate) fn decode_run(value: &[u8]) -> Option<Vec<RunEntry>> {
    if !value.len().is_multiple_of(ENTRY_BYTES) {
        return None;
    }
    value
        .chunks(ENTRY_BYTES)
        .map(|c| {
            Some(RunEntry {
                hash: u64::from_be_bytes(c[..8].try_into().ok()?),
                block: u64::from_be_bytes(c[8..].try_into().ok()?),
            })
        })
        .collect()
}

/// The blocks one run value names for `hash`.
pub(crate) fn blocks_for(value: &[u8], hash: u64) -> Option<Vec<BlockId>> {
    let entries = decode_run(value)?;
    let from = entries.partition_point(|e| e.hash < hash);
    Some(
        entries[from..]
            .iter()
            .take_while(|e| e.hash == hash)
            .map(|e| e.block)
            .collect(),
    )
}

/// `META_RUNS`: the runs in use, oldest first, and the id the next takes.
/// A run's chunks are written before the manifest names it (a crash leaves
/// chunks of ids at or above `next_id`, removed at the next open); a merge's
/// inputs stay in `dropping` until their chunks are gone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RunManifest {
    pub next_id: u32,
    pub runs: Vec<RunInfo>,
    pub dropping: Vec<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RunInfo {
    pub id: u32,
    pub entries: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serialine_core::UnitState;

    #[test]
    fn snapshots_and_runs_round_trip_under_the_value_bound() {
        let records: Vec<SerialRecord> = (0..1_000u64)
            .map(|i| SerialRecord {
                state: if i % 7 == 0 {
                    UnitState::Voided
                } else {
                    UnitState::Synced
                },
                reported: i % 7 == 0,
                fenced: false,
                block_id: 42,
                at_ms: 1_765_000_000_000 + i * 31,
                job: 3,
            })
            .collect();
        let values = encode_snapshot(&records);
        assert_eq!(values.len(), 1_000usize.div_ceil(SNAPSHOT_RECORDS));
        let mut back = Vec::new();
        for v in &values {
            assert!(v.len() <= crate::ledger::MAX_VALUE_BYTES);
            back.extend(decode_snapshot(v).expect("decodes"));
        }
        assert_eq!(back, records);
        let total: usize = values.iter().map(Vec::len).sum();
        assert!(total < records.len() * 6, "compressed: {total} bytes");
        assert!(decode_snapshot(&[9, 1, 2]).is_none());

        let mut entries: Vec<RunEntry> = (0..1_000u64)
            .map(|i| RunEntry {
                hash: i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 1,
                block: i % 5,
            })
            .collect();
        entries.sort();
        // Equal hashes at a value's edge stay together.
        let tie = entries[RUN_ENTRIES - 1].hash;
        entries[RUN_ENTRIES].hash = tie;
        let run = encode_run(&entries);
        let mut all = Vec::new();
        for (first, v) in &run {
            assert!(v.len() <= crate::ledger::MAX_VALUE_BYTES);
            let part = decode_run(v).expect("decodes");
            assert_eq!(part[0].hash, *first);
            all.extend(part);
        }
        assert_eq!(all, entries);
        let holding: Vec<&(u64, Vec<u8>)> = run
            .iter()
            .filter(|(_, v)| decode_run(v).is_some_and(|p| p.iter().any(|e| e.hash == tie)))
            .collect();
        assert_eq!(holding.len(), 1, "a hash is in one value");
        let e = entries[500];
        let (_, v) = run
            .iter()
            .rev()
            .find(|(first, _)| *first <= e.hash)
            .expect("a value");
        assert!(blocks_for(v, e.hash).expect("decodes").contains(&e.block));
    }
}
