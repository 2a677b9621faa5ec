//! Settling (schema 8): a used-up block whose every serial ended and was
//! reported upstream leaves the `serials` tree, one key per serial, for a
//! compact snapshot of its records and one run of the serial index
//! (`crate::settled` has the encodings and why). The daemon settles at each
//! checkpoint, between jobs, so the `serials` tree holds the recent past of
//! one job, not weeks of history.
//!
//! What reads a serial's record looks in `serials` first, then in the
//! settled blocks ([`Ledger::settled_record`]); a move of a settled serial
//! (a unit sampled or decommissioned after its job) rewrites its snapshot
//! value in the batch's journal like any record.
//!
//! A round is crash-safe in two steps:
//! 1. the round's run is written under the manifest's `next_id` and
//!    flushed: until the manifest names it no lookup reads it, and an open
//!    removes chunks at or above `next_id` (a round a crash cut short);
//! 2. one journaled batch writes the snapshots, removes the records and
//!    writes the manifest naming the run.
//!
//! Runs pile up one per round; when the one before the newest is at most
//! twice the newest, the two are merged (streamed, written as a new run,
//! then swapped into the manifest in one batch), so runs stay about
//! log2(serials) in number and a lookup reads one value per run. Entries of
//! archived blocks are dropped at merges; a lookup ignores them meanwhile.

use super::{JournalWrite, Ledger, TreeId, Tx, TxResult};
use crate::error::StoreError;
use crate::record::SerialRecord;
use crate::settled::{
    self, decode_snapshot, encode_run, encode_snapshot, run_key, snapshot_key, RunEntry, RunInfo,
    RunManifest, SNAPSHOT_RECORDS,
};
use serialine_core::{Block, BlockId, Serial};

/// `meta` key of the [`RunManifest`].
pub(super) const META_RUNS: &[u8] = b"settled_runs";

/// What one round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SettleOutcome {
    pub blocks: u64,
    pub serials: u64,
    /// Runs merged after the round.
    pub merges: u32,
}

impl Ledger {
    pub(super) fn run_manifest(&self) -> Result<RunManifest, StoreError> {
        match self.meta.get(META_RUNS).map_err(self.io())? {
            None => Ok(RunManifest::default()),
            Some(v) => postcard::from_bytes(&v)
                .map_err(|e| self.corrupt(format!("settled run manifest unreadable: {e}"))),
        }
    }

    fn manifest_write(&self, m: &RunManifest) -> Result<JournalWrite, StoreError> {
        let value = postcard::to_stdvec(m)
            .map_err(|e| self.corrupt(format!("settled run manifest does not encode: {e}")))?;
        Ok(JournalWrite {
            tree: TreeId::Meta as u8,
            key: META_RUNS.to_vec(),
            value: Some(value),
        })
    }

    /// The serial's 64-bit keyed hash, as the runs hold it.
    pub(crate) fn settled_hash(&self, serial: &Serial) -> u64 {
        let k = self.serial_key(serial);
        u64::from_be_bytes([k[0], k[1], k[2], k[3], k[4], k[5], k[6], k[7]])
    }

    /// Is `block` settled (its snapshot present)?
    pub(super) fn is_settled(&self, block: BlockId) -> Result<bool, StoreError> {
        self.settled
            .contains_key(snapshot_key(block, 0))
            .map_err(self.io())
    }

    /// Blocks the runs name for `hash`, from runs with id `from_id` on.
    fn run_blocks(
        &self,
        manifest: &RunManifest,
        hash: u64,
        from_id: u32,
    ) -> Result<Vec<BlockId>, StoreError> {
        let mut out = Vec::new();
        for run in manifest.runs.iter().filter(|r| r.id >= from_id) {
            let lo = run_key(run.id, 0);
            let hi = run_key(run.id, hash);
            if let Some(item) = self.runs.range(lo..=hi).next_back() {
                let (k, v) = item.map_err(self.io())?;
                let blocks = settled::blocks_for(&v, hash).ok_or_else(|| {
                    self.corrupt(format!("settled run value {} unreadable", hex::encode(&k)))
                })?;
                out.extend(blocks);
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// Where a settled serial's record is: its block and place in it. Runs
    /// with id below `from_id` are not looked at. Takes no gate (see
    /// [`Ledger::settled_record`]).
    pub(super) fn locate_settled(
        &self,
        serial: &Serial,
        from_id: u32,
    ) -> Result<Option<(BlockId, u32)>, StoreError> {
        let manifest = self.run_manifest()?;
        if manifest.runs.iter().all(|r| r.id < from_id) {
            return Ok(None);
        }
        for block in self.run_blocks(&manifest, self.settled_hash(serial), from_id)? {
            // An archived block's entries stay in its run until a merge.
            if !self.is_settled(block)? {
                continue;
            }
            let b = self.open_block_ungated(block)?;
            if let Some(pos) = b.serials.iter().position(|s| s == serial) {
                return Ok(Some((block, pos as u32)));
            }
        }
        Ok(None)
    }

    /// Refuses a block repeating a settled serial (never reissued); else
    /// the id below which runs were looked in, for the batch to look in
    /// the runs made since. No gate: runs only grow, and a merge's output,
    /// made while this looked, has an id at or above the one returned.
    pub(crate) fn settled_overlap(
        &self,
        block_id: BlockId,
        serials: &[Serial],
    ) -> Result<u32, StoreError> {
        let below = self.run_manifest()?.next_id;
        if below == 0 {
            return Ok(0);
        }
        for serial in serials {
            if let Some((earlier, _)) = self.locate_settled(serial, 0)? {
                return Err(StoreError::OverlappingBlock { block_id, earlier });
            }
        }
        Ok(below)
    }

    /// A settled serial's record and where it is. Takes no gate: the
    /// caller holds it (readers), or is the committer.
    pub(crate) fn settled_record(
        &self,
        serial: &Serial,
    ) -> Result<Option<(BlockId, u32, SerialRecord)>, StoreError> {
        let Some((block, pos)) = self.locate_settled(serial, 0)? else {
            return Ok(None);
        };
        let chunk = pos / SNAPSHOT_RECORDS as u32;
        let v = self
            .settled
            .get(snapshot_key(block, chunk))
            .map_err(self.io())?
            .ok_or_else(|| self.corrupt(format!("settled block {block} lost value {chunk}")))?;
        let records = decode_snapshot(&v).ok_or_else(|| {
            self.corrupt(format!("settled block {block} value {chunk} unreadable"))
        })?;
        let r = records
            .get(pos as usize % SNAPSHOT_RECORDS)
            .copied()
            .ok_or_else(|| self.corrupt(format!("settled block {block} short of {serial}")))?;
        Ok(Some((block, pos, r)))
    }

    /// A settled block's records, in block order.
    pub(super) fn snapshot_records(&self, block: BlockId) -> Result<Vec<SerialRecord>, StoreError> {
        let mut out = Vec::new();
        for item in self.settled.scan_prefix(block.to_be_bytes()) {
            let (k, v) = item.map_err(self.io())?;
            out.extend(decode_snapshot(&v).ok_or_else(|| {
                self.corrupt(format!("settled value {} unreadable", hex::encode(&k)))
            })?);
        }
        Ok(out)
    }

    /// Settled blocks, in id order.
    pub(super) fn settled_blocks(&self) -> Result<Vec<BlockId>, StoreError> {
        let mut out = Vec::new();
        for item in self.scan(&self.settled) {
            let (k, _) = item.map_err(self.io())?;
            if k.len() == 12 && k[8..] == [0, 0, 0, 0] {
                out.push(super::decode_u64(&k[..8]).ok_or_else(|| self.corrupt("settled key"))?);
            }
        }
        Ok(out)
    }

    /// Every record of `block` with its serial, in block order: from its
    /// snapshot if settled, else from `serials` (`None` for a serial never
    /// sent).
    pub(super) fn block_records(
        &self,
        block_id: BlockId,
        block: &Block,
    ) -> Result<Vec<(Serial, Option<SerialRecord>)>, StoreError> {
        if self.is_settled(block_id)? {
            let records = self.snapshot_records(block_id)?;
            if records.len() != block.serials.len() {
                return Err(self.corrupt(format!(
                    "settled block {block_id} holds {} records for {} serials",
                    records.len(),
                    block.serials.len()
                )));
            }
            return Ok(block
                .serials
                .iter()
                .cloned()
                .zip(records.into_iter().map(Some))
                .collect());
        }
        let mut out = Vec::with_capacity(block.serials.len());
        for serial in &block.serials {
            let _batch = self.read_gate();
            let r = match self.serials.get(serial.as_bytes()).map_err(self.io())? {
                Some(v) => Some(self.decode_record(serial.as_bytes(), &v)?),
                None => None,
            };
            out.push((serial.clone(), r));
        }
        Ok(out)
    }

    /// One round: settles used-up blocks whose every serial ended and was
    /// reported, up to about `max_serials` serials, then merges runs as
    /// they call for. `None` when there is nothing to settle.
    pub(crate) fn settle_round(
        &mut self,
        max_serials: u64,
    ) -> Result<Option<SettleOutcome>, StoreError> {
        let blocks = self.ended_blocks(u64::MAX, max_serials, true)?;
        let total: u64 = blocks.iter().map(|(_, rs)| rs.len() as u64).sum();
        if blocks.is_empty() {
            return Ok(None);
        }
        let mut manifest = self.run_manifest()?;
        let run_id = manifest.next_id;
        let mut entries: Vec<RunEntry> = Vec::with_capacity(total as usize);
        for (block, records) in &blocks {
            for (serial, _) in records {
                entries.push(RunEntry {
                    hash: self.settled_hash(serial),
                    block: *block,
                });
            }
        }
        entries.sort_unstable();
        // Step 1: the run, invisible until the manifest names it.
        for (first, value) in encode_run(&entries) {
            self.runs
                .insert(run_key(run_id, first), value)
                .map_err(self.io())?;
        }
        self.flush()?;
        // Step 2: snapshots, records out, the run named: one batch.
        let mut writes = Vec::with_capacity(total as usize + 16);
        for (block, records) in &blocks {
            let rs: Vec<SerialRecord> = records.iter().map(|(_, r)| *r).collect();
            for (i, value) in encode_snapshot(&rs).into_iter().enumerate() {
                writes.push(JournalWrite {
                    tree: TreeId::Settled as u8,
                    key: snapshot_key(*block, i as u32).to_vec(),
                    value: Some(value),
                });
            }
            for (serial, _) in records {
                writes.push(JournalWrite {
                    tree: TreeId::Serials as u8,
                    key: serial.as_bytes().to_vec(),
                    value: None,
                });
            }
        }
        manifest.next_id = run_id + 1;
        manifest.runs.push(RunInfo {
            id: run_id,
            entries: entries.len() as u64,
        });
        writes.push(self.manifest_write(&manifest)?);
        self.write_journaled(&writes, |_| {})?;
        self.flush()?;
        let mut outcome = SettleOutcome {
            blocks: blocks.len() as u64,
            serials: total,
            merges: 0,
        };
        while self.merge_if_due()? {
            outcome.merges += 1;
        }
        Ok(Some(outcome))
    }

    /// Merges the two newest runs when the older is at most twice the
    /// newer. Returns whether it merged.
    fn merge_if_due(&mut self) -> Result<bool, StoreError> {
        let mut manifest = self.run_manifest()?;
        let n = manifest.runs.len();
        if n < 2 || manifest.runs[n - 2].entries > 2 * manifest.runs[n - 1].entries {
            return Ok(false);
        }
        let (a, b) = (manifest.runs[n - 2], manifest.runs[n - 1]);
        let merged_id = manifest.next_id;
        // An entry stays while its block is settled (not archived since).
        let mut settled_now: std::collections::HashMap<BlockId, bool> = Default::default();
        let mut live = |ledger: &Ledger, block: BlockId| -> Result<bool, StoreError> {
            if let Some(&l) = settled_now.get(&block) {
                return Ok(l);
            }
            let l = ledger.is_settled(block)?;
            settled_now.insert(block, l);
            Ok(l)
        };
        // Streamed: each input read value by value, the output written
        // value by value; memory holds one value of each.
        let mut left = self.run_entries(a.id);
        let mut right = self.run_entries(b.id);
        let mut l = left.next().transpose()?;
        let mut r = right.next().transpose()?;
        let mut pending: Vec<RunEntry> = Vec::new();
        let mut count = 0u64;
        loop {
            let next = match (l, r) {
                (None, None) => break,
                (Some(x), None) => {
                    l = left.next().transpose()?;
                    x
                }
                (None, Some(y)) => {
                    r = right.next().transpose()?;
                    y
                }
                (Some(x), Some(y)) if x <= y => {
                    l = left.next().transpose()?;
                    x
                }
                (_, Some(y)) => {
                    r = right.next().transpose()?;
                    y
                }
            };
            if !live(self, next.block)? {
                continue;
            }
            // Cut only between different hashes (see `encode_run`).
            if pending.len() >= settled::RUN_ENTRIES
                && pending.last().is_some_and(|p| p.hash != next.hash)
            {
                self.write_run_value(merged_id, &pending)?;
                pending.clear();
            }
            pending.push(next);
            count += 1;
        }
        if !pending.is_empty() {
            self.write_run_value(merged_id, &pending)?;
        }
        self.flush()?;
        manifest.next_id = merged_id + 1;
        manifest.runs.truncate(n - 2);
        if count > 0 {
            manifest.runs.push(RunInfo {
                id: merged_id,
                entries: count,
            });
        }
        manifest.dropping.extend([a.id, b.id]);
        let w = self.manifest_write(&manifest)?;
        self.write_journaled(std::slice::from_ref(&w), |_| {})?;
        self.flush()?;
        self.drop_runs()?;
        Ok(true)
    }

    fn write_run_value(&self, run: u32, entries: &[RunEntry]) -> Result<(), StoreError> {
        for (first, value) in encode_run(entries) {
            self.runs
                .insert(run_key(run, first), value)
                .map_err(self.io())?;
        }
        Ok(())
    }

    /// The entries of run `id`, in order.
    fn run_entries(&self, id: u32) -> impl Iterator<Item = Result<RunEntry, StoreError>> + '_ {
        self.runs
            .scan_prefix(id.to_be_bytes())
            .flat_map(move |item| {
                let entries = item.map_err(self.io()).and_then(|(k, v)| {
                    settled::decode_run(&v).ok_or_else(|| {
                        self.corrupt(format!("settled run value {} unreadable", hex::encode(&k)))
                    })
                });
                let out: Vec<Result<RunEntry, StoreError>> = match entries {
                    Ok(es) => es.into_iter().map(Ok).collect(),
                    Err(e) => vec![Err(e)],
                };
                out
            })
    }

    /// Removes the chunks of merged runs (`dropping`) and of a round a crash
    /// cut short (ids at or above `next_id`); at open and after a merge.
    pub(super) fn drop_runs(&self) -> Result<(), StoreError> {
        let mut manifest = self.run_manifest()?;
        let mut doomed: Vec<sled::IVec> = Vec::new();
        for id in &manifest.dropping {
            for k in self.runs.scan_prefix(id.to_be_bytes()).keys() {
                doomed.push(k.map_err(self.io())?);
            }
        }
        for k in self.runs.range(run_key(manifest.next_id, 0)..).keys() {
            doomed.push(k.map_err(self.io())?);
        }
        if doomed.is_empty() && manifest.dropping.is_empty() {
            return Ok(());
        }
        for k in doomed {
            self.runs.remove(k).map_err(self.io())?;
        }
        if !manifest.dropping.is_empty() {
            manifest.dropping.clear();
            let w = self.manifest_write(&manifest)?;
            self.write_journaled(std::slice::from_ref(&w), |_| {})?;
        }
        self.flush()
    }
}

/// Where a record the batch read lives, so that its new value goes back
/// there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Place {
    /// The `serials` tree.
    Tree,
    /// Place `pos` of settled block `block`'s snapshot.
    Settled { block: BlockId, pos: u32 },
}

impl Tx<'_> {
    /// A serial's record as the batch sees it: `serials`, else its settled
    /// block's snapshot.
    pub(super) fn record_at(
        &self,
        serial: &Serial,
    ) -> TxResult<Result<Option<(SerialRecord, Place)>, StoreError>> {
        if let Some(v) = self.serials.get(serial.as_bytes())? {
            return Ok(SerialRecord::decode(&v)
                .map(|r| Some((r, Place::Tree)))
                .ok_or_else(|| self.corrupt(format!("record of serial {serial} unreadable"))));
        }
        self.settled_at(serial)
    }

    /// A settled serial's record, through the batch's own writes.
    pub(super) fn settled_at(
        &self,
        serial: &Serial,
    ) -> TxResult<Result<Option<(SerialRecord, Place)>, StoreError>> {
        let (block, pos) = match self.ledger.locate_settled(serial, 0) {
            Ok(Some(found)) => found,
            Ok(None) => return Ok(Ok(None)),
            Err(e) => return Ok(Err(e)),
        };
        let records = match self.snapshot_value(block, pos)? {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        Ok(match records.get(pos as usize % SNAPSHOT_RECORDS) {
            Some(r) => Ok(Some((*r, Place::Settled { block, pos }))),
            None => Err(self.corrupt(format!("settled block {block} short of {serial}"))),
        })
    }

    /// The records of the snapshot value holding place `pos` of `block`.
    fn snapshot_value(
        &self,
        block: BlockId,
        pos: u32,
    ) -> TxResult<Result<Vec<SerialRecord>, StoreError>> {
        let chunk = pos / SNAPSHOT_RECORDS as u32;
        Ok(match self.settled.get(snapshot_key(block, chunk))? {
            None => Err(self.corrupt(format!("settled block {block} lost value {chunk}"))),
            Some(v) => decode_snapshot(&v).ok_or_else(|| {
                self.corrupt(format!("settled block {block} value {chunk} unreadable"))
            }),
        })
    }

    /// Writes `record` where it was read from.
    pub(super) fn put_record(
        &mut self,
        serial: &Serial,
        place: Place,
        record: &SerialRecord,
    ) -> TxResult<Result<(), StoreError>> {
        let (block, pos) = match place {
            Place::Tree => {
                self.serials.insert(serial.as_bytes(), record.encode());
                return Ok(Ok(()));
            }
            Place::Settled { block, pos } => (block, pos),
        };
        let mut records = match self.snapshot_value(block, pos)? {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        let Some(slot) = records.get_mut(pos as usize % SNAPSHOT_RECORDS) else {
            return Ok(Err(
                self.corrupt(format!("settled block {block} short of {serial}"))
            ));
        };
        *slot = *record;
        let mut values = encode_snapshot(&records);
        match (values.pop(), values.is_empty()) {
            (Some(v), true) => {
                let chunk = pos / SNAPSHOT_RECORDS as u32;
                self.settled.insert(snapshot_key(block, chunk), v);
                Ok(Ok(()))
            }
            _ => Ok(Err(self.corrupt(format!(
                "settled block {block}'s value for {serial} does not re-encode as one"
            )))),
        }
    }
}
