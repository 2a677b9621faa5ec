//! Retention: a block whose every serial has ended, been acknowledged
//! upstream and not moved since a cut-off leaves the ledger for an archive
//! file (`crate::archive`), so the ledger holds the recent past, not all of it.
//!
//! What stays of an archived block: its cursor (`used == count`), so the
//! same block is refused if it comes back and the fence still lists it, and
//! an `archived` entry (when, how many serials), so the counters balance.
//! What goes: its sealed data and its serials' records. A read of one of
//! its codes is then answered like a code never issued here (`foreign-code`
//! rather than `duplicate-read`: either rejects the pack), and a later
//! block repeating one of its serials is no longer refused by the ledger;
//! upstream never reissues a serial, and only upstream can seal a block for
//! this line.
//!
//! A round is crash-safe in three steps:
//! 1. its blocks and time are recorded (`META_ARCHIVE_INTENT`) and flushed;
//! 2. the archive file is written, synced and renamed into place;
//! 3. one journaled batch removes the records and data, writes the
//!    `archived` entries and counters, and clears the intent.
//!
//! A crash before 3 leaves the intent: the next round writes the same file
//! again (same blocks, same records: nothing can move an ended, reported
//! serial) and finishes. A crash during 3 is finished by the journal.

use super::{JournalWrite, Ledger, TreeId, META_ARCHIVE_INTENT};
use crate::archive::{self, ArchiveHeader, ArchivedBlock, ArchivedRecord};
use crate::error::StoreError;
use crate::record::{BlockUse, SerialRecord};
use serde::{Deserialize, Serialize};
use serialine_core::{BlockId, Serial, UnitState};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// What one round did.
#[derive(Debug, Clone)]
pub(crate) struct RoundOutcome {
    pub path: PathBuf,
    pub blocks: u64,
    pub serials: u64,
    pub bytes: u64,
}

/// The round in progress, as `META_ARCHIVE_INTENT` holds it.
#[derive(Debug, Serialize, Deserialize)]
struct Intent {
    created_ms: u64,
    blocks: Vec<BlockId>,
}

/// Value of the `archived` tree, per block:
/// `archived_at_ms u64 BE | serials u32 BE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ArchivedEntry {
    pub at_ms: u64,
    pub serials: u32,
}

impl ArchivedEntry {
    fn encode(&self) -> [u8; 12] {
        let mut out = [0u8; 12];
        out[..8].copy_from_slice(&self.at_ms.to_be_bytes());
        out[8..].copy_from_slice(&self.serials.to_be_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        (bytes.len() == 12).then(|| ArchivedEntry {
            at_ms: u64::from_be_bytes(bytes[..8].try_into().unwrap_or_default()),
            serials: u32::from_be_bytes(bytes[8..].try_into().unwrap_or_default()),
        })
    }
}

/// May this record leave the ledger? Ended, and upstream has the outcome.
pub(super) fn ended_and_reported(r: &SerialRecord) -> bool {
    match r.state {
        UnitState::Synced => true,
        UnitState::Rejected(_)
        | UnitState::Voided
        | UnitState::Sampled(_)
        | UnitState::Decommissioned(_)
        | UnitState::Returned => r.reported,
        _ => false,
    }
}

/// A block retention or settling may take, with its records in block order.
pub(super) type EndedBlock = (BlockId, Vec<(Serial, SerialRecord)>);

impl Ledger {
    /// One round: archives up to about `max_serials` serials of blocks
    /// whose every record ended, was reported and is older than
    /// `before_ms`, into one file in `dir`; or finishes the round a crash
    /// interrupted. `None` when there is nothing (more) to archive.
    /// `stop_after_file`: see `ArchiveOptions::stop_after_file`.
    pub(crate) fn archive_round(
        &mut self,
        before_ms: u64,
        dir: &Path,
        max_serials: u64,
        stop_after_file: bool,
    ) -> Result<Option<RoundOutcome>, StoreError> {
        let intent = match self.meta.get(META_ARCHIVE_INTENT).map_err(self.io())? {
            Some(v) => {
                let intent: Intent = postcard::from_bytes(&v)
                    .map_err(|e| self.corrupt(format!("archive intent unreadable: {e}")))?;
                tracing::info!(path = %self.path.display(), blocks = intent.blocks.len(), "finishing the archiving round a crash interrupted");
                intent
            }
            None => {
                let blocks = self.archivable(before_ms, max_serials)?;
                if blocks.is_empty() {
                    return Ok(None);
                }
                let created_ms = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                let intent = Intent { created_ms, blocks };
                let bytes = postcard::to_stdvec(&intent)
                    .map_err(|e| self.corrupt(format!("archive intent does not encode: {e}")))?;
                self.meta
                    .insert(META_ARCHIVE_INTENT, bytes)
                    .map_err(self.io())?;
                self.flush()?;
                intent
            }
        };
        let Some(&first) = intent.blocks.first() else {
            return Err(self.corrupt("archive intent names no block"));
        };

        let mut header = ArchiveHeader {
            format: archive::FORMAT.into(),
            version: archive::VERSION,
            line: self.line_id.clone(),
            created_ms: intent.created_ms,
            blocks: Vec::with_capacity(intent.blocks.len()),
        };
        let mut records: Vec<(Serial, SerialRecord)> = Vec::new();
        let mut chunk_keys = Vec::new();
        // A settled block's records are its snapshot values, not keys of
        // `serials`.
        let mut snapshot_keys = Vec::new();
        for &block_id in &intent.blocks {
            let block = self.open_block(block_id)?;
            let block_records = self.block_records(block_id, &block)?;
            if self.is_settled(block_id)? {
                for item in self.settled.scan_prefix(block_id.to_be_bytes()).keys() {
                    snapshot_keys.push(item.map_err(self.io())?.to_vec());
                }
            }
            header.blocks.push(ArchivedBlock {
                block: block_id,
                gtin: block.gtin.as_string(),
                serials: u32::try_from(block.serials.len()).unwrap_or(u32::MAX),
                issued_at: block.issued_at,
            });
            for (serial, r) in block_records {
                let r = r.ok_or_else(|| {
                    self.corrupt(format!(
                        "block {block_id} is being archived but serial {serial} has no record"
                    ))
                })?;
                if !ended_and_reported(&r) {
                    return Err(self.corrupt(format!(
                        "block {block_id} is being archived but serial {serial} is {}{}",
                        r.state,
                        if r.reported { "" } else { ", not reported" }
                    )));
                }
                records.push((serial, r));
            }
            for item in self.blocks.scan_prefix(block_id.to_be_bytes()).keys() {
                chunk_keys.push(item.map_err(self.io())?.to_vec());
            }
        }

        let name = archive::file_name(&self.line_id, intent.created_ms, first);
        let (path, bytes) = archive::write(
            dir,
            &name,
            &header,
            records.iter().map(|(s, r)| ArchivedRecord::new(s, r)),
        )?;

        if stop_after_file {
            return Err(StoreError::Archive {
                path,
                why: "stopped after the file, before the ledger changed (fault injection)".into(),
            });
        }
        let mut counts = self.counts;
        let mut writes = Vec::with_capacity(records.len() + chunk_keys.len() + 8);
        for key in snapshot_keys {
            writes.push(JournalWrite {
                tree: TreeId::Settled as u8,
                key,
                value: None,
            });
        }
        for (serial, r) in &records {
            if let Some(c) = counts.slot(r.state) {
                *c = c.saturating_sub(1);
            }
            counts.reported -= u64::from(crate::record::Counts::counts_as_reported(r));
            counts.fenced -= u64::from(r.fenced);
            counts.archived += 1;
            writes.push(JournalWrite {
                tree: TreeId::Serials as u8,
                key: serial.as_bytes().to_vec(),
                value: None,
            });
        }
        for key in chunk_keys {
            writes.push(JournalWrite {
                tree: TreeId::Blocks as u8,
                key,
                value: None,
            });
        }
        for b in &header.blocks {
            writes.push(JournalWrite {
                tree: TreeId::Archived as u8,
                key: b.block.to_be_bytes().to_vec(),
                value: Some(
                    ArchivedEntry {
                        at_ms: intent.created_ms,
                        serials: b.serials,
                    }
                    .encode()
                    .to_vec(),
                ),
            });
        }
        writes.push(self.counts_write(&counts)?);
        writes.push(JournalWrite {
            tree: TreeId::Meta as u8,
            key: META_ARCHIVE_INTENT.to_vec(),
            value: None,
        });
        self.write_journaled(&writes, |_| {})?;
        self.flush()?;
        self.counts = counts;
        Ok(Some(RoundOutcome {
            path,
            blocks: header.blocks.len() as u64,
            serials: records.len() as u64,
            bytes,
        }))
    }

    /// Used-up, not yet archived blocks whose every record ended, was
    /// reported and last moved before `before_ms`, in block id order, until
    /// about `max_serials` serials. A block is given up at its first serial
    /// that does not qualify, which for a young block is its first.
    fn archivable(&self, before_ms: u64, max_serials: u64) -> Result<Vec<BlockId>, StoreError> {
        Ok(self
            .ended_blocks(before_ms, max_serials, false)?
            .into_iter()
            .map(|(id, _)| id)
            .collect())
    }

    /// The blocks retention and settling may take, with their records:
    /// used up, not archived, every serial ended, reported and last moved
    /// before `before_ms`; settled ones too unless `skip_settled`. In block
    /// id order, until about `max_serials` serials.
    pub(super) fn ended_blocks(
        &self,
        before_ms: u64,
        max_serials: u64,
        skip_settled: bool,
    ) -> Result<Vec<EndedBlock>, StoreError> {
        let mut out = Vec::new();
        let mut total = 0u64;
        for (block_id, u) in self.cursors()? {
            if total >= max_serials {
                break;
            }
            if !used_up(&u)
                || (skip_settled && self.is_settled(block_id)?)
                || self
                    .archived
                    .contains_key(block_id.to_be_bytes())
                    .map_err(self.io())?
            {
                continue;
            }
            let block = self.open_block(block_id)?;
            if block.serials.is_empty() {
                continue;
            }
            let mut kept = Vec::with_capacity(block.serials.len());
            for (serial, r) in self.block_records(block_id, &block)? {
                match r {
                    Some(r) if ended_and_reported(&r) && r.at_ms < before_ms => {
                        kept.push((serial, r))
                    }
                    _ => break,
                }
            }
            if kept.len() == block.serials.len() {
                total += kept.len() as u64;
                out.push((block_id, kept));
            }
        }
        Ok(out)
    }

    /// Blocks archived so far and their serials.
    pub(crate) fn archived_blocks(&self) -> Result<(u64, u64), StoreError> {
        let mut blocks = 0;
        let mut serials = 0;
        for item in self.scan(&self.archived) {
            let (_, v) = item.map_err(self.io())?;
            let e = ArchivedEntry::decode(&v)
                .ok_or_else(|| self.corrupt("archived block entry unreadable"))?;
            blocks += 1;
            serials += u64::from(e.serials);
        }
        Ok((blocks, serials))
    }
}

fn used_up(u: &BlockUse) -> bool {
    u.remaining() == 0
}
