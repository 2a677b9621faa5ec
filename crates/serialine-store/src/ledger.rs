//! The synchronous ledger: sled trees, schema checks, and the one function
//! that applies a batch of operations atomically. Only the committer thread
//! writes; anyone may read.

use crate::error::StoreError;
use crate::issued::{self, IssuedIndex, SerialKey};
use crate::outbox::{event_id, OutboxEvent};
use crate::record::{BlockUse, Counts, SerialRecord};
use serialine_core::{Block, BlockId, BlockKey, SealedBlock, Serial, UnitState};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

mod hierarchy;
mod outbox_log;
mod retention;
mod settle;
pub(crate) use hierarchy::unfit_reason;
pub(crate) use retention::RoundOutcome;
pub(crate) use settle::SettleOutcome;

/// Bumped whenever an on-disk layout changes. A ledger with a higher version
/// is refused rather than misread.
///
/// 2: a serial record may carry the `fenced` flag (see `fence.rs`). A
/// version 1 ledger is stamped 2 when opened, so an older build refuses it
/// instead of calling a fenced record damaged.
///
/// 3: the per-serial `issued` index is replaced by per-block arrays of
/// serial hashes (`issued.rs`), migrated at the first open.
///
/// 4: no value above `MAX_VALUE_BYTES` (stored blocks, issued arrays and
/// journal chunks in chunks).
///
/// 5: jobs (`jobs` tree, `jobs.rs`) and each serial record's job number;
/// a schema 4 record reads as job 0, so nothing is rewritten, but an older
/// build must refuse the longer records rather than call them damaged.
///
/// 6: returns of unused serials (`store_return.rs`): Returned records
/// (state code 80), return events in the outbox naming their serials, job
/// tallies counting them; the packaging hierarchy (`parents`, `parent_of`,
/// `children`, `hierarchy.rs`) and its pack / unpack events in the outbox.
/// Schema 5 values decode as they are; an older build must refuse what it
/// cannot read.
///
/// 7: the outbox as a log of chunks (`outbox_log`, `ledger/outbox_log.rs`),
/// up to 64 events per key. Schema 6's per-event `outbox` entries are read
/// and acknowledged where they are; an older build would not see the
/// chunks, and must refuse rather than report an empty outbox.
///
/// 8: settled blocks (`ledger/settle.rs`): a used-up block whose serials
/// all ended and were reported keeps its records as a compact snapshot
/// (`settled`) and its serials in an index of runs (`runs`), no longer in
/// `serials`. An older build would call those serials never issued.
pub const SCHEMA_VERSION: u32 = 8;

/// sled's page cache per ledger unless configured: enough for the working
/// set of a line (its open blocks, in-flight records, outbox head).
pub const DEFAULT_CACHE_BYTES: u64 = 32 * 1024 * 1024;

const META_SCHEMA: &[u8] = b"schema_version";
const META_LINE: &[u8] = b"line_id";
const META_KEY_CHECK: &[u8] = b"key_check";
const META_COUNTS: &[u8] = b"counts";
const META_OUTBOX_SEQ: &[u8] = b"outbox_seq";
/// The number of the last job begun (`jobs.rs`).
const META_JOB_SEQ: &[u8] = b"job_seq";
/// An archiving round decided and not yet removed from the ledger
/// (`ledger/retention.rs`).
const META_ARCHIVE_INTENT: &[u8] = b"archive_intent";
/// A return of unused serials begun and not finished (`store_return.rs`).
pub(crate) const META_RETURN_INTENT: &[u8] = b"return_intent";
/// Random identity of this ledger, made when it is created: a copy restored
/// from a backup has the same, a ledger made anew has another (`fence.rs`).
pub(crate) const META_LEDGER_ID: &[u8] = b"ledger_id";

/// Keys derived from the line secret: blake3 contexts fixed forever.
const INDEX_KEY_CONTEXT: &str = "serialine 2026-11-26 issued-serial index v1";
const KEY_CHECK_CONTEXT: &str = "serialine 2026-11-26 ledger key check v1";

/// One write the committer can apply.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    /// Store a block that was already opened and verified by the caller.
    AddBlock {
        sealed: Vec<u8>,
        block_id: BlockId,
        serials: Vec<Serial>,
        serial_keys: Vec<[u8; 16]>,
        /// The caller looked for these serials among settled blocks in the
        /// runs with ids below this (`Ledger::settled_overlap`); the batch
        /// looks in the runs made since.
        runs_checked_below: u32,
    },
    Transition {
        serial: Serial,
        to: UnitState,
        /// The serial's block when the pool handed it out (a Sent): saves the
        /// issued-index lookup, the pool having read it from the block itself.
        block: Option<BlockId>,
        /// The job sending it (a Sent); later moves keep the record's.
        job: Option<u32>,
    },
    /// A job starts: its number is the next after the last one recorded.
    BeginJob { entry: crate::jobs::JobEntry },
    /// Job `number` ended at `entry.ended_ms` (its entry rewritten whole).
    EndJob {
        number: u32,
        entry: crate::jobs::JobEntry,
    },
    /// Upstream acknowledged outbox entry `seq`.
    AckOutbox { seq: u64 },
    /// The fence says this serial, still in its block here, may have been
    /// sent in a history this ledger lost: void it for good (see `fence.rs`).
    Fence { serial: Serial, block: BlockId },
    /// Give these serials of `block`, never sent, back upstream: each gets
    /// a Returned record, the block's cursor passes them, and one outbox
    /// event per [`crate::outbox::RETURN_EVENT_SERIALS`] names them
    /// (`store_return.rs`). One op, so a block's return is whole or absent.
    Return {
        block: BlockId,
        serials: Vec<Serial>,
        job: u32,
    },
    /// Records (`Some`) or clears (`None`) the return in progress
    /// (`META_RETURN_INTENT`, `store_return.rs`).
    ReturnIntent { intent: Option<Vec<u8>> },
    /// Packs `children` into `parent` (`hierarchy.rs`).
    Pack {
        parent: Serial,
        children: Vec<Serial>,
    },
    /// Commits `parent`'s verified label and packs `children` into it,
    /// together (`hierarchy.rs`): the line's aggregation.
    SealParent {
        parent: Serial,
        children: Vec<Serial>,
        expected: u32,
    },
    /// Takes `children` out of `parent`, or empties it for good (`None`).
    Unpack {
        parent: Serial,
        children: Option<Vec<Serial>>,
    },
    /// Decommissions `root` and everything packed below it, together.
    DecommissionTree { root: Serial, to: UnitState },
}

/// What an applied op did, for the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    BlockAdded {
        block_id: BlockId,
        serials: u32,
    },
    Moved {
        from: UnitState,
        to: UnitState,
    },
    /// The outbox entry was removed; `None` if it was already gone (a
    /// repeated acknowledgment is harmless).
    Acked {
        event: Option<(Serial, UnitState)>,
    },
    /// A job's entry was written under this number.
    Job {
        number: u32,
    },
    /// Serials given back upstream, and the outbox events naming them.
    Returned {
        serials: u32,
        events: u32,
    },
    /// The return intent was written or cleared.
    Intent,
    /// A pack or unpack.
    Hierarchy(crate::hierarchy::HierarchyMove),
}

/// What the ledger holds for a serial: nothing (not issued to this line),
/// its block (issued, never sent), or its durable record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SerialEntry {
    /// Not in any block this line received: a foreign code.
    NotIssued,
    /// In a stored block and never sent (it may be reserved in memory).
    Available {
        block_id: BlockId,
    },
    Recorded(SerialRecord),
}

/// Cloning shares the trees: the committer owns one copy and writes; the
/// store's copy only reads (its `counts` and `next_seq` are unused).
#[derive(Clone)]
pub(crate) struct Ledger {
    pub path: PathBuf,
    pub line_id: String,
    db: sled::Db,
    serials: sled::Tree,
    inflight: sled::Tree,
    /// Schema 6's outbox, one key per event: drained, never written.
    outbox: sled::Tree,
    /// The outbox since schema 7: chunks of events (`ledger/outbox_log.rs`).
    outbox_log: sled::Tree,
    meta: sled::Tree,
    blocks: sled::Tree,
    /// Schema 2's per-serial index: read only to migrate it, then emptied.
    issued_v2: sled::Tree,
    /// Per block with serials left, its serials' hashes (`issued.rs`).
    issued_blocks: sled::Tree,
    /// Settled blocks' records (`ledger/settle.rs`, `settled.rs`).
    settled: sled::Tree,
    /// The index of settled serials: runs of (hash, block).
    runs: sled::Tree,
    cursors: sled::Tree,
    /// Blocks whose records left for an archive file (`ledger/retention.rs`).
    archived: sled::Tree,
    /// Jobs by number (`jobs.rs`).
    jobs: sled::Tree,
    /// Per job, its units by state (`jobs::JobTally`).
    job_counts: sled::Tree,
    /// The packaging hierarchy (`hierarchy.rs`).
    parents: sled::Tree,
    parent_of: sled::Tree,
    children: sled::Tree,
    /// The redo journal of the batch being applied (see [`Ledger::apply`]).
    journal: sled::Tree,
    /// Readers see a batch whole or not at all: `apply` holds it for writing
    /// while it writes the batch's keys, readers hold it for reading. Ours,
    /// per ledger, never held across a flush (unlike sled's global lock,
    /// which is what [`Ledger::apply`] avoids).
    ///
    /// It also holds the in-memory index of issued serials, which changes
    /// with the batches it guards.
    gate: Arc<RwLock<IssuedIndex>>,
    /// sled's page cache bound, kept for [`Ledger::reopen`].
    cache_bytes: u64,
    block_key: BlockKey,
    index_key: [u8; 32],
    /// Proves the secret is this ledger's, checked at every open.
    key_check: [u8; 32],
    /// Owned by the committer; published to readers after each batch.
    pub counts: Counts,
    next_seq: u64,
    /// The number of the last job begun (0: none yet).
    job_seq: u32,
}

impl Ledger {
    pub fn open(
        path: &Path,
        line_id: &str,
        line_secret: &[u8],
        cache_bytes: u64,
    ) -> Result<Self, StoreError> {
        Self::open_with_keys(
            path,
            line_id,
            cache_bytes,
            BlockKey::derive(line_secret),
            blake3::derive_key(INDEX_KEY_CONTEXT, line_secret),
            blake3::derive_key(KEY_CHECK_CONTEXT, line_secret),
        )
    }

    /// Closes the ledger and opens it again with the same keys. sled 0.34
    /// writes its page-table snapshot only while opening, and the next open
    /// replays every log entry written since the last snapshot: after a long
    /// run, that replay is most of the time to READY (15 s on a 10 M-serial
    /// ledger written in one go, 1.2 s once snapshotted). Every other handle
    /// on the ledger must be dropped first, or the file lock is never freed.
    pub fn reopen(self) -> Result<Self, StoreError> {
        let (path, line_id, cache_bytes) =
            (self.path.clone(), self.line_id.clone(), self.cache_bytes);
        let (block_key, index_key, key_check) =
            (self.block_key.clone(), self.index_key, self.key_check);
        drop(self);
        Self::open_with_keys(
            &path,
            &line_id,
            cache_bytes,
            block_key,
            index_key,
            key_check,
        )
    }

    fn open_with_keys(
        path: &Path,
        line_id: &str,
        cache_bytes: u64,
        block_key: BlockKey,
        index_key: [u8; 32],
        key_check: [u8; 32],
    ) -> Result<Self, StoreError> {
        let db = open_db(path, cache_bytes)?;
        let tree = |name: &str| db.open_tree(name).map_err(|e| map_sled(path, e));
        let mut ledger = Ledger {
            path: path.to_path_buf(),
            line_id: line_id.to_string(),
            serials: tree("serials")?,
            inflight: tree("inflight")?,
            outbox: tree("outbox")?,
            outbox_log: tree("outbox_log")?,
            meta: tree("meta")?,
            blocks: tree("blocks")?,
            issued_v2: tree("issued")?,
            issued_blocks: tree("issued_blocks")?,
            settled: tree("settled")?,
            runs: tree("runs")?,
            cursors: tree("cursors")?,
            archived: tree("archived")?,
            jobs: tree("jobs")?,
            job_counts: tree("job_counts")?,
            parents: tree("parents")?,
            parent_of: tree("parent_of")?,
            children: tree("children")?,
            journal: tree("journal")?,
            gate: Arc::new(RwLock::new(IssuedIndex::default())),
            cache_bytes,
            db,
            block_key,
            index_key,
            key_check,
            counts: Counts::default(),
            next_seq: 0,
            job_seq: 0,
        };
        ledger.finish_journal()?;
        ledger.check_or_init()?;
        ledger.load_issued()?;
        ledger.drop_runs()?;
        Ok(ledger)
    }

    fn corrupt(&self, what: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            what: what.into(),
        }
    }

    /// Held while reading one key set that a batch may be writing.
    fn read_gate(&self) -> std::sync::RwLockReadGuard<'_, IssuedIndex> {
        // A poisoned gate guards nothing of its own: the data is sled's.
        self.gate.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Iterates `tree`, each step under the read gate (a long scan must not
    /// stall the committer, and never did: sled's own lock was per step).
    fn scan<'a>(&'a self, tree: &sled::Tree) -> GatedIter<'a> {
        GatedIter {
            iter: tree.iter(),
            gate: &self.gate,
        }
    }

    fn io(&self) -> impl FnOnce(sled::Error) -> StoreError + '_ {
        |e| map_sled(&self.path, e)
    }

    /// Verifies schema, line and secret of an existing ledger, or stamps a new one.
    fn check_or_init(&mut self) -> Result<(), StoreError> {
        let key_check = self.key_check;
        let schema = self.meta.get(META_SCHEMA).map_err(self.io())?;
        let marker = marker_path(&self.path);
        let Some(schema) = schema else {
            let untouched =
                self.meta.is_empty() && self.serials.is_empty() && self.blocks.is_empty();
            if !untouched {
                return Err(self.corrupt("schema version missing from a non-empty ledger"));
            }
            // An empty ledger where one was created before is a damaged,
            // truncated or replaced one: starting on it would forget every
            // serial sent and every outcome not yet reported.
            if marker.exists() {
                return Err(StoreError::Vanished {
                    path: self.path.clone(),
                    marker,
                });
            }
            self.meta
                .insert(META_SCHEMA, &SCHEMA_VERSION.to_be_bytes())
                .map_err(self.io())?;
            self.meta
                .insert(META_LINE, self.line_id.as_bytes())
                .map_err(self.io())?;
            self.meta
                .insert(META_KEY_CHECK, key_check.as_slice())
                .map_err(self.io())?;
            self.write_counts_now()?;
            self.db.flush().map_err(self.io())?;
            self.write_marker(&marker)?;
            return Ok(());
        };
        let found = u32::from_be_bytes(
            schema
                .as_ref()
                .try_into()
                .map_err(|_| self.corrupt("schema version is not 4 bytes"))?,
        );
        if found > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema {
                path: self.path.clone(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        if found == 0 {
            return Err(self.corrupt("schema version 0"));
        }
        if found < 4 {
            // Before the stamp: a crash in the middle leaves the old schema,
            // and the next open migrates again (the same values, rewritten).
            self.migrate_to_small_values(found)?;
        }
        if found < SCHEMA_VERSION {
            // Flushed with the first batch, before any record in the new layout.
            self.meta
                .insert(META_SCHEMA, &SCHEMA_VERSION.to_be_bytes())
                .map_err(self.io())?;
            self.flush()?;
        }
        let line = self
            .meta
            .get(META_LINE)
            .map_err(self.io())?
            .ok_or_else(|| self.corrupt("line id missing"))?;
        if line.as_ref() != self.line_id.as_bytes() {
            return Err(StoreError::WrongLine {
                path: self.path.clone(),
                expected: self.line_id.clone(),
                found: String::from_utf8_lossy(&line).into_owned(),
            });
        }
        let check = self
            .meta
            .get(META_KEY_CHECK)
            .map_err(self.io())?
            .ok_or_else(|| self.corrupt("key check missing"))?;
        if check.as_ref() != key_check.as_slice() {
            return Err(StoreError::WrongSecret {
                path: self.path.clone(),
            });
        }
        if !marker.exists() {
            self.write_marker(&marker)?;
        }
        self.job_seq = match self.meta.get(META_JOB_SEQ).map_err(self.io())? {
            Some(v) => u32::from_be_bytes(
                v.as_ref()
                    .try_into()
                    .map_err(|_| self.corrupt("job sequence is not 4 bytes"))?,
            ),
            None => 0,
        };
        self.next_seq = match self.meta.get(META_OUTBOX_SEQ).map_err(self.io())? {
            Some(v) => u64::from_be_bytes(
                v.as_ref()
                    .try_into()
                    .map_err(|_| self.corrupt("outbox sequence is not 8 bytes"))?,
            ),
            None => 0,
        };
        // Counters are written atomically with every batch, so they are exact
        // after a crash; rebuilding them by a full scan is only needed when
        // they are missing or unreadable.
        let stored = self.meta.get(META_COUNTS).map_err(self.io())?;
        match stored.and_then(|v| postcard::from_bytes::<Counts>(&v).ok()) {
            Some(c) => self.counts = c,
            None => {
                tracing::warn!(path = %self.path.display(), "ledger counters missing; rebuilding them from the serial records");
                self.counts = self.recount()?;
                self.write_counts_now()?;
                self.db.flush().map_err(self.io())?;
            }
        }
        Ok(())
    }

    /// Schema 2 or 3 -> 4. Stored blocks, one value each until schema 3,
    /// become chunks of at most [`MAX_VALUE_BYTES`]; the issued-serial
    /// arrays are rewritten from the blocks in chunks of that size (schema 2
    /// had none: its per-serial index is emptied once they are flushed).
    /// Loses nothing: the arrays are derived from the blocks, and a block's
    /// old value goes only after its chunks.
    fn migrate_to_small_values(&self, found: u32) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        let mut rewritten = 0u64;
        let whole: Vec<sled::IVec> = self
            .blocks
            .iter()
            .keys()
            .filter(|k| k.as_ref().map_or(true, |k| k.len() == 8))
            .collect::<Result<_, _>>()
            .map_err(self.io())?;
        for key in whole {
            let id = decode_u64(&key).ok_or_else(|| self.corrupt("stored block key"))?;
            let Some(sealed) = self.blocks.get(&key).map_err(self.io())? else {
                continue;
            };
            for (k, chunk) in block_chunks(id, &sealed) {
                self.blocks.insert(k, chunk).map_err(self.io())?;
            }
            self.blocks.remove(&key).map_err(self.io())?;
            rewritten += 1;
        }
        self.issued_blocks.clear().map_err(self.io())?;
        let mut blocks = 0u64;
        for (block_id, u) in self.cursors()? {
            if u.remaining() == 0 {
                continue;
            }
            let block = self.open_block(block_id)?;
            let keys =
                issued::sorted_keys(block.serials.iter().map(|s| self.serial_key(s)).collect());
            for (key, value) in issued::chunks(block_id, &keys) {
                self.issued_blocks.insert(key, value).map_err(self.io())?;
            }
            blocks += 1;
        }
        self.flush()?;
        let old = self.issued_v2.len();
        if found < 3 {
            self.issued_v2.clear().map_err(self.io())?;
            self.flush()?;
        }
        tracing::info!(
            path = %self.path.display(),
            from_schema = found,
            stored_blocks_rewritten = rewritten,
            blocks_with_serials_left = blocks,
            old_index_entries = old,
            took_ms = started.elapsed().as_millis() as u64,
            "ledger migrated to schema {SCHEMA_VERSION}: no value above {MAX_VALUE_BYTES} bytes"
        );
        Ok(())
    }

    /// Loads the issued-serial index (`issued.rs`) and checks it against
    /// the block cursors: every block with serials left has its arrays,
    /// whole, and no other block has any.
    fn load_issued(&self) -> Result<(), StoreError> {
        let mut by_block: std::collections::BTreeMap<BlockId, Vec<SerialKey>> = Default::default();
        for item in self.issued_blocks.iter() {
            let (k, v) = item.map_err(self.io())?;
            let block = issued::block_of_key(&k)
                .ok_or_else(|| self.corrupt("issued_blocks key is not 12 bytes"))?;
            let keys = issued::decode_chunk(&v).ok_or_else(|| {
                self.corrupt(format!("issued serials of block {block} unreadable"))
            })?;
            by_block.entry(block).or_default().extend(keys);
        }
        let mut index = IssuedIndex::default();
        for (block_id, u) in self.cursors()? {
            let keys = by_block.remove(&block_id);
            match (u.remaining() > 0, keys) {
                (true, Some(keys)) if keys.len() == u.count as usize => {
                    index.insert(block_id, keys)
                }
                (true, other) => {
                    return Err(self.corrupt(format!(
                        "block {block_id} has {} serials left but {} of its {} issued serials are indexed",
                        u.remaining(),
                        other.map_or(0, |k| k.len()),
                        u.count
                    )))
                }
                (false, Some(_)) => {
                    return Err(self.corrupt(format!(
                        "block {block_id} is used up but its issued serials are still indexed"
                    )))
                }
                (false, None) => {}
            }
        }
        if let Some(block) = by_block.keys().next() {
            return Err(self.corrupt(format!(
                "issued serials indexed for block {block}, which has no cursor"
            )));
        }
        tracing::debug!(path = %self.path.display(), serials = index.len(), "issued serials without a record indexed");
        *self.gate.write().unwrap_or_else(|e| e.into_inner()) = index;
        Ok(())
    }

    /// Records, beside the ledger, that it exists: see [`StoreError::Vanished`].
    fn write_marker(&self, marker: &Path) -> Result<(), StoreError> {
        use std::io::Write;
        let io = |e: std::io::Error| StoreError::Io {
            path: marker.to_path_buf(),
            source: sled::Error::Io(e),
        };
        let mut f = std::fs::File::create(marker).map_err(io)?;
        writeln!(
            f,
            "serialine ledger of line {} at {}; schema {SCHEMA_VERSION}.\n\
             Do not delete: while this file exists, an empty ledger at that path is refused.",
            self.line_id,
            self.path.display()
        )
        .map_err(io)?;
        f.sync_all().map_err(io)
    }

    fn write_counts_now(&self) -> Result<(), StoreError> {
        let bytes = postcard::to_stdvec(&self.counts)
            .map_err(|e| self.corrupt(format!("counters do not encode: {e}")))?;
        self.meta.insert(META_COUNTS, bytes).map_err(self.io())?;
        Ok(())
    }

    /// Recomputes every counter by scanning the ledger. Used when counters are
    /// missing and by audits that check the stored counters are right.
    pub fn recount(&self) -> Result<Counts, StoreError> {
        let mut c = Counts::default();
        for item in self.scan(&self.cursors) {
            let (k, v) = item.map_err(self.io())?;
            let u = BlockUse::decode(&v).ok_or_else(|| {
                self.corrupt(format!("block cursor {} unreadable", hex::encode(&k)))
            })?;
            c.issued += u64::from(u.count);
            c.blocks += 1;
        }
        for item in self.scan(&self.archived) {
            let (k, v) = item.map_err(self.io())?;
            let entry = retention::ArchivedEntry::decode(&v).ok_or_else(|| {
                self.corrupt(format!("archived block {} unreadable", hex::encode(&k)))
            })?;
            c.archived += u64::from(entry.serials);
        }
        let count = |c: &mut Counts, r: &SerialRecord| {
            if let Some(slot) = c.slot(r.state) {
                *slot += 1;
            }
            if Counts::counts_as_reported(r) {
                c.reported += 1;
            }
            if r.fenced {
                c.fenced += 1;
            }
        };
        for item in self.scan(&self.serials) {
            let (k, v) = item.map_err(self.io())?;
            count(&mut c, &self.decode_record(&k, &v)?);
        }
        for block in self.settled_blocks()? {
            for r in self.snapshot_records(block)? {
                count(&mut c, &r);
            }
        }
        Ok(c)
    }

    pub fn serial_key(&self, serial: &Serial) -> [u8; 16] {
        serial_index_key(&self.index_key, serial)
    }

    pub fn block_key(&self) -> &BlockKey {
        &self.block_key
    }

    pub fn entry(&self, serial: &Serial) -> Result<SerialEntry, StoreError> {
        let index = self.read_gate();
        if let Some(v) = self.serials.get(serial.as_bytes()).map_err(self.io())? {
            let r = SerialRecord::decode(&v)
                .ok_or_else(|| self.corrupt(format!("record of serial {serial} unreadable")))?;
            return Ok(SerialEntry::Recorded(r));
        }
        if let Some(block_id) = index.block_of(&self.serial_key(serial)) {
            return Ok(SerialEntry::Available { block_id });
        }
        // Under the same gate: a settling batch moves records from
        // `serials` to the settled blocks whole.
        Ok(match self.settled_record(serial)? {
            Some((_, _, r)) => SerialEntry::Recorded(r),
            None => SerialEntry::NotIssued,
        })
    }

    /// Serials on a device without a verdict, for reconciliation.
    pub fn in_flight(&self) -> Result<Vec<(Serial, UnitState)>, StoreError> {
        let mut out = Vec::new();
        for item in self.scan(&self.inflight) {
            let (k, _) = item.map_err(self.io())?;
            let serial = std::str::from_utf8(&k)
                .ok()
                .and_then(|s| Serial::new(s).ok())
                .ok_or_else(|| self.corrupt("in-flight index holds an invalid serial"))?;
            match self.entry(&serial)? {
                SerialEntry::Recorded(r) if r.state.is_in_flight() => out.push((serial, r.state)),
                other => {
                    return Err(self.corrupt(format!(
                        "in-flight index lists {serial}, whose record is {other:?}"
                    )))
                }
            }
        }
        Ok(out)
    }

    /// A `serials` tree entry's record, or a Corrupt error naming the serial.
    fn decode_record(&self, key: &[u8], value: &[u8]) -> Result<SerialRecord, StoreError> {
        SerialRecord::decode(value).ok_or_else(|| {
            self.corrupt(format!(
                "record of serial {:?} unreadable",
                String::from_utf8_lossy(key)
            ))
        })
    }

    /// Job `number`'s entry, if it was begun.
    pub fn job(&self, number: u32) -> Result<Option<crate::jobs::JobEntry>, StoreError> {
        let _batch = self.read_gate();
        match self.jobs.get(number.to_be_bytes()).map_err(self.io())? {
            Some(v) => postcard::from_bytes(&v)
                .map(Some)
                .map_err(|e| self.corrupt(format!("job {number} unreadable: {e}"))),
            None => Ok(None),
        }
    }

    /// Job `number`'s tally (zeros before its first serial).
    pub fn job_tally(&self, number: u32) -> Result<crate::jobs::JobTally, StoreError> {
        let _batch = self.read_gate();
        match self
            .job_counts
            .get(number.to_be_bytes())
            .map_err(self.io())?
        {
            Some(v) => crate::jobs::JobTally::decode(&v)
                .map_err(|e| self.corrupt(format!("job {number}'s tally unreadable: {e}"))),
            None => Ok(Default::default()),
        }
    }

    /// Job `number`'s serials in flight, from the in-flight index.
    pub fn job_in_flight(&self, number: u32) -> Result<Vec<Serial>, StoreError> {
        let mut out = Vec::new();
        for (serial, _) in self.in_flight()? {
            if let SerialEntry::Recorded(r) = self.entry(&serial)? {
                if r.job == number {
                    out.push(serial);
                }
            }
        }
        Ok(out)
    }

    /// Every job's number and entry, in order.
    pub fn jobs(&self) -> Result<Vec<(u32, crate::jobs::JobEntry)>, StoreError> {
        let mut out = Vec::new();
        for item in self.scan(&self.jobs) {
            let (k, v) = item.map_err(self.io())?;
            let number = k
                .as_ref()
                .try_into()
                .map(u32::from_be_bytes)
                .map_err(|_| self.corrupt("job key is not 4 bytes"))?;
            let entry = postcard::from_bytes(&v)
                .map_err(|e| self.corrupt(format!("job {number} unreadable: {e}")))?;
            out.push((number, entry));
        }
        Ok(out)
    }

    /// Every serial whose last transition, at or after `since_ms`, left it
    /// in a state `keep` accepts, in serial order. A full scan: for exports.
    pub fn records_since(
        &self,
        since_ms: u64,
        mut keep: impl FnMut(UnitState) -> bool,
    ) -> Result<Vec<(Serial, SerialRecord)>, StoreError> {
        let mut out = Vec::new();
        for item in self.scan(&self.serials) {
            let (k, v) = item.map_err(self.io())?;
            let r = self.decode_record(&k, &v)?;
            if r.at_ms < since_ms || !keep(r.state) {
                continue;
            }
            let serial = std::str::from_utf8(&k)
                .ok()
                .and_then(|s| Serial::new(s).ok())
                .ok_or_else(|| self.corrupt("serials tree holds an invalid serial"))?;
            out.push((serial, r));
        }
        let before = out.len();
        for block_id in self.settled_blocks()? {
            let block = self.open_block(block_id)?;
            for (serial, r) in self.block_records(block_id, &block)? {
                if let Some(r) = r.filter(|r| r.at_ms >= since_ms && keep(r.state)) {
                    out.push((serial, r));
                }
            }
        }
        if out.len() > before {
            out.sort_by(|a, b| a.0.cmp(&b.0));
        }
        Ok(out)
    }

    /// Blocks that still hold serials never sent, in block id order.
    pub fn blocks_with_serials(&self) -> Result<Vec<(BlockId, BlockUse)>, StoreError> {
        let mut out = Vec::new();
        for item in self.scan(&self.cursors) {
            let (k, v) = item.map_err(self.io())?;
            let id = decode_u64(&k).ok_or_else(|| self.corrupt("block cursor key"))?;
            let u = BlockUse::decode(&v)
                .ok_or_else(|| self.corrupt(format!("block cursor {id} unreadable")))?;
            if u.remaining() > 0 {
                out.push((id, u));
            }
        }
        Ok(out)
    }

    /// Decrypts a stored block (the working window).
    pub fn open_block(&self, block_id: BlockId) -> Result<Block, StoreError> {
        let batch = self.read_gate();
        let bytes = self.stored_block(block_id)?;
        drop(batch);
        self.decrypt_block(block_id, &bytes)
    }

    /// [`Ledger::open_block`] for a caller that holds the gate already.
    fn open_block_ungated(&self, block_id: BlockId) -> Result<Block, StoreError> {
        let bytes = self.stored_block(block_id)?;
        self.decrypt_block(block_id, &bytes)
    }

    fn decrypt_block(&self, block_id: BlockId, bytes: &[u8]) -> Result<Block, StoreError> {
        if bytes.is_empty() {
            return Err(self.corrupt(format!("block {block_id} has a cursor but no data")));
        }
        let sealed = SealedBlock::from_bytes(bytes)
            .map_err(|e| self.corrupt(format!("stored block {block_id}: {e}")))?;
        self.block_key
            .open(&sealed, &self.line_id)
            .map_err(|e| self.corrupt(format!("stored block {block_id}: {e}")))
    }

    /// A stored block's sealed bytes, from its chunks (`block_chunks`);
    /// empty if there are none. Only chunk keys are read: a schema 3
    /// ledger's one value per block is rewritten into chunks at open, before
    /// any block is read.
    fn stored_block(&self, block_id: BlockId) -> Result<Vec<u8>, StoreError> {
        let mut bytes = Vec::new();
        for item in self.blocks.scan_prefix(block_id.to_be_bytes()) {
            let (k, v) = item.map_err(self.io())?;
            if k.len() == 12 {
                bytes.extend_from_slice(&v);
            }
        }
        Ok(bytes)
    }

    /// The return of unused serials in progress, as recorded.
    pub fn return_intent(&self) -> Result<Option<sled::IVec>, StoreError> {
        let _batch = self.read_gate();
        self.meta.get(META_RETURN_INTENT).map_err(self.io())
    }

    /// Has this serial of a block with serials left a record (it left
    /// the pool)? Such a block is never settled, so only `serials` is
    /// looked in: the pool asks it for every serial of a block it loads.
    pub fn has_record(&self, serial: &Serial) -> Result<bool, StoreError> {
        let _batch = self.read_gate();
        self.serials
            .contains_key(serial.as_bytes())
            .map_err(self.io())
    }

    /// Applies `ops` atomically. Each op succeeds or is refused on its own;
    /// refused ops write nothing. Not durable until [`Ledger::flush`].
    ///
    /// The committer is the only writer, so ops are planned against plain
    /// reads plus an overlay of the batch's own writes, and the write
    /// only applies the planned writes. Sled's read-set tracking is skipped
    /// and a key written many times in a batch (a block cursor, the counters)
    /// is written once.
    pub fn apply(&mut self, ops: &[Op]) -> Result<Vec<Result<Applied, StoreError>>, StoreError> {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let index = self.read_gate();
        let mut tx = Tx {
            index: &index,
            added: Vec::new(),
            exhausted: Vec::new(),
            path: &self.path,
            line: &self.line_id,
            serials: Overlay::new(&self.serials),
            inflight: Overlay::new(&self.inflight),
            outbox: Overlay::new(&self.outbox),
            ledger: &*self,
            settled: Overlay::new(&self.settled),
            outbox_log: &self.outbox_log,
            log: outbox_log::LogEdits::default(),
            blocks: Overlay::new(&self.blocks),
            issued_blocks: Overlay::new(&self.issued_blocks),
            cursors: Overlay::new(&self.cursors),
            jobs: Overlay::new(&self.jobs),
            job_counts: Overlay::new(&self.job_counts),
            parents: Overlay::new(&self.parents),
            parent_of: Overlay::new(&self.parent_of),
            children: Overlay::new(&self.children),
            tallies: HashMap::new(),
            meta: Vec::new(),
            whole_tree: false,
            index_key: &self.index_key,
            counts: self.counts,
            next_seq: self.next_seq,
            job_seq: self.job_seq,
            now_ms,
        };
        let results: Vec<_> = ops
            .iter()
            .map(|op| tx.apply(op))
            .collect::<Result<_, sled::Error>>()
            .map_err(self.io())?;
        let counts = self.counts_write(&tx.counts)?;
        let (new_counts, new_seq, new_job_seq) = (tx.counts, tx.next_seq, tx.job_seq);
        let mut writes = Vec::new();
        tx.serials.drain_into(TreeId::Serials, &mut writes);
        tx.inflight.drain_into(TreeId::Inflight, &mut writes);
        tx.outbox.drain_into(TreeId::Outbox, &mut writes);
        tx.settled.drain_into(TreeId::Settled, &mut writes);
        let log = std::mem::take(&mut tx.log)
            .into_writes()
            .map_err(|e| self.corrupt(format!("outbox chunk does not encode: {e}")))?;
        // In sequence order, as the per-event outbox was.
        writes.extend(log.into_iter().map(|(first, value)| JournalWrite {
            tree: TreeId::OutboxLog as u8,
            key: first.to_be_bytes().to_vec(),
            value,
        }));
        tx.blocks.drain_into(TreeId::Blocks, &mut writes);
        tx.issued_blocks
            .drain_into(TreeId::IssuedBlocks, &mut writes);
        tx.cursors.drain_into(TreeId::Cursors, &mut writes);
        let tallies = std::mem::take(&mut tx.tallies);
        for (job, tally) in tallies {
            let bytes = postcard::to_stdvec(&tally)
                .map_err(|e| self.corrupt(format!("job {job}'s tally does not encode: {e}")))?;
            tx.job_counts.insert(job.to_be_bytes(), bytes);
        }
        tx.jobs.drain_into(TreeId::Jobs, &mut writes);
        tx.parents.drain_into(TreeId::Parents, &mut writes);
        tx.parent_of.drain_into(TreeId::ParentOf, &mut writes);
        tx.children.drain_into(TreeId::Children, &mut writes);
        for (key, value) in std::mem::take(&mut tx.meta) {
            writes.push(JournalWrite {
                tree: TreeId::Meta as u8,
                key,
                value,
            });
        }
        tx.job_counts.drain_into(TreeId::JobCounts, &mut writes);
        if new_job_seq != self.job_seq {
            writes.push(JournalWrite {
                tree: TreeId::Meta as u8,
                key: META_JOB_SEQ.to_vec(),
                value: Some(new_job_seq.to_be_bytes().to_vec()),
            });
        }
        writes.push(counts);
        writes.push(JournalWrite {
            tree: TreeId::Meta as u8,
            key: META_OUTBOX_SEQ.to_vec(),
            value: Some(new_seq.to_be_bytes().to_vec()),
        });
        let (added, exhausted) = (tx.added, tx.exhausted);
        drop(index);
        self.write_journaled(&writes, |index| {
            for (block, keys) in added {
                index.insert(block, keys);
            }
            for block in exhausted {
                index.remove(block);
            }
        })?;
        self.counts = new_counts;
        self.next_seq = new_seq;
        self.job_seq = new_job_seq;
        Ok(results)
    }

    /// The journal write of `counts`, which every batch carries.
    fn counts_write(&self, counts: &Counts) -> Result<JournalWrite, StoreError> {
        let value = postcard::to_stdvec(counts)
            .map_err(|e| self.corrupt(format!("counters do not encode: {e}")))?;
        Ok(JournalWrite {
            tree: TreeId::Meta as u8,
            key: META_COUNTS.to_vec(),
            value: Some(value),
        })
    }

    /// Writes a batch so that it survives a crash whole or not at all,
    /// without sled's transactions.
    ///
    /// Why not `Transactional`: a sled 0.34 transaction (and `apply_batch`)
    /// takes a lock that is global to the process, and from then on every
    /// sled flush in the process holds that lock for reading while it waits
    /// for its log to reach disk. Two ledgers in one process (a daemon with
    /// several lines, the tests) then deadlock: one ledger's flush holds the
    /// lock and waits, another ledger's transaction waits for the lock, and
    /// the flush's I/O needs a reader that queues behind that writer
    /// (spacejam/sled#1412). Plain inserts and removes never take it.
    ///
    /// How: the batch's post-images are first written to the `journal` tree
    /// (chunks, then a marker naming how many), then to their trees, then
    /// the journal is cleared. sled recovers a prefix of its log after a
    /// crash, so a recovered marker means the whole journal was recovered:
    /// [`Ledger::finish_journal`] writes it again at the next open
    /// (idempotent: post-images), and a journal without its marker is a
    /// batch that was never applied, nor flushed, nor acknowledged.
    ///
    /// `update_index` runs with the post-images, under the write gate, so
    /// readers see the in-memory index and the trees change together.
    fn write_journaled(
        &self,
        writes: &[JournalWrite],
        update_index: impl FnOnce(&mut IssuedIndex),
    ) -> Result<(), StoreError> {
        let chunks = self.write_journal(writes)?;
        {
            let mut index = self.gate.write().unwrap_or_else(|e| e.into_inner());
            self.write_post_images(writes)?;
            update_index(&mut index);
        }
        self.clear_journal(chunks)
    }

    /// Writes the journal of `writes` and its marker; returns the chunk count.
    fn write_journal(&self, writes: &[JournalWrite]) -> Result<u32, StoreError> {
        let mut chunks: Vec<Vec<u8>> = Vec::new();
        let mut start = 0;
        let mut size = 0;
        for (i, w) in writes.iter().enumerate() {
            let len = w.key.len() + w.value.as_ref().map_or(0, Vec::len) + 16;
            if size + len > JOURNAL_CHUNK_BYTES && i > start {
                chunks.push(self.encode_journal(&writes[start..i])?);
                start = i;
                size = 0;
            }
            size += len;
        }
        chunks.push(self.encode_journal(&writes[start..])?);
        for (i, chunk) in chunks.iter().enumerate() {
            self.journal
                .insert(journal_chunk_key(i as u32), chunk.as_slice())
                .map_err(self.io())?;
        }
        self.journal
            .insert(JOURNAL_MARKER, &(chunks.len() as u32).to_be_bytes())
            .map_err(self.io())?;
        Ok(chunks.len() as u32)
    }

    fn encode_journal(&self, writes: &[JournalWrite]) -> Result<Vec<u8>, StoreError> {
        postcard::to_stdvec(writes)
            .map_err(|e| self.corrupt(format!("journal does not encode: {e}")))
    }

    fn tree_of(&self, id: u8) -> Option<&sled::Tree> {
        Some(match id {
            x if x == TreeId::Serials as u8 => &self.serials,
            x if x == TreeId::Inflight as u8 => &self.inflight,
            x if x == TreeId::Outbox as u8 => &self.outbox,
            x if x == TreeId::OutboxLog as u8 => &self.outbox_log,
            x if x == TreeId::Settled as u8 => &self.settled,
            x if x == TreeId::Runs as u8 => &self.runs,
            x if x == TreeId::Meta as u8 => &self.meta,
            x if x == TreeId::Blocks as u8 => &self.blocks,
            x if x == TreeId::IssuedV2 as u8 => &self.issued_v2,
            x if x == TreeId::IssuedBlocks as u8 => &self.issued_blocks,
            x if x == TreeId::Cursors as u8 => &self.cursors,
            x if x == TreeId::Archived as u8 => &self.archived,
            x if x == TreeId::Jobs as u8 => &self.jobs,
            x if x == TreeId::JobCounts as u8 => &self.job_counts,
            x if x == TreeId::Parents as u8 => &self.parents,
            x if x == TreeId::ParentOf as u8 => &self.parent_of,
            x if x == TreeId::Children as u8 => &self.children,
            _ => return None,
        })
    }

    fn write_post_images(&self, writes: &[JournalWrite]) -> Result<(), StoreError> {
        for w in writes {
            let tree = self
                .tree_of(w.tree)
                .ok_or_else(|| self.corrupt(format!("journal names tree {}", w.tree)))?;
            match &w.value {
                Some(v) => tree.insert(w.key.as_slice(), v.as_slice()).map(|_| ()),
                None => tree.remove(w.key.as_slice()).map(|_| ()),
            }
            .map_err(self.io())?;
        }
        Ok(())
    }

    /// Removes the marker first: a crash between the two removals leaves
    /// chunks without a marker, which the next open discards.
    fn clear_journal(&self, chunks: u32) -> Result<(), StoreError> {
        self.journal.remove(JOURNAL_MARKER).map_err(self.io())?;
        for i in 0..chunks {
            self.journal
                .remove(journal_chunk_key(i))
                .map_err(self.io())?;
        }
        Ok(())
    }

    /// At open: completes the batch a crash interrupted after its journal
    /// was whole, or discards a journal that never was (see
    /// [`Ledger::write_journaled`]).
    fn finish_journal(&self) -> Result<(), StoreError> {
        let marker = self.journal.get(JOURNAL_MARKER).map_err(self.io())?;
        let Some(marker) = marker else {
            if !self.journal.is_empty() {
                tracing::info!(path = %self.path.display(), "discarding the journal of a batch interrupted before it was complete (never applied, never acknowledged)");
                self.journal.clear().map_err(self.io())?;
                self.flush()?;
            }
            return Ok(());
        };
        let chunks = u32::from_be_bytes(
            marker
                .as_ref()
                .try_into()
                .map_err(|_| self.corrupt("journal marker is not 4 bytes"))?,
        );
        let mut writes: Vec<JournalWrite> = Vec::new();
        for i in 0..chunks {
            let chunk = self
                .journal
                .get(journal_chunk_key(i))
                .map_err(self.io())?
                .ok_or_else(|| self.corrupt(format!("journal chunk {i} of {chunks} missing")))?;
            let part: Vec<JournalWrite> = postcard::from_bytes(&chunk)
                .map_err(|e| self.corrupt(format!("journal chunk {i} unreadable: {e}")))?;
            writes.extend(part);
        }
        tracing::info!(path = %self.path.display(), writes = writes.len(), "completing the batch a crash interrupted");
        self.write_post_images(&writes)?;
        self.flush()?;
        self.clear_journal(chunks)?;
        self.journal.clear().map_err(self.io())?;
        self.flush()
    }

    /// The sequence number the next outbox event will take.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(self.io())
    }

    /// This ledger's identity (`META_LEDGER_ID`), made and flushed on first
    /// use. Made from the line, the path, the clock and the process id: it
    /// only has to differ between ledgers created for one line.
    pub(crate) fn ledger_id(&self) -> Result<[u8; 16], StoreError> {
        if let Some(v) = self.meta.get(META_LEDGER_ID).map_err(self.io())? {
            return v
                .as_ref()
                .try_into()
                .map_err(|_| self.corrupt("ledger id is not 16 bytes"));
        }
        let mut h = blake3::Hasher::new();
        h.update(b"serialine ledger id v1\0");
        h.update(self.line_id.as_bytes());
        h.update(self.path.to_string_lossy().as_bytes());
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        h.update(&nanos.to_le_bytes());
        h.update(&std::process::id().to_le_bytes());
        let mut id = [0u8; 16];
        id.copy_from_slice(&h.finalize().as_bytes()[..16]);
        self.meta
            .insert(META_LEDGER_ID, id.as_slice())
            .map_err(self.io())?;
        self.flush()?;
        Ok(id)
    }

    /// Every block's cursor, in block id order.
    pub(crate) fn cursors(&self) -> Result<Vec<(BlockId, BlockUse)>, StoreError> {
        let mut out = Vec::new();
        for item in self.scan(&self.cursors) {
            let (k, v) = item.map_err(self.io())?;
            let id = decode_u64(&k).ok_or_else(|| self.corrupt("block cursor key"))?;
            let u = BlockUse::decode(&v)
                .ok_or_else(|| self.corrupt(format!("block cursor {id} unreadable")))?;
            out.push((id, u));
        }
        Ok(out)
    }
}

/// The trees a batch writes, as named in the journal. Fixed forever: a
/// journal left by a crash is read by the next build.
#[derive(Debug, Clone, Copy)]
#[repr(u8)]
enum TreeId {
    Serials = 1,
    Inflight = 2,
    Outbox = 3,
    Meta = 4,
    Blocks = 5,
    /// Schema 2's per-serial index: only in a journal an older build left.
    IssuedV2 = 6,
    Cursors = 7,
    IssuedBlocks = 8,
    Archived = 9,
    Jobs = 10,
    JobCounts = 11,
    Parents = 12,
    ParentOf = 13,
    Children = 14,
    OutboxLog = 15,
    Settled = 16,
    Runs = 17,
}

/// One key's post-image in a batch: its new value, or `None` for removed.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct JournalWrite {
    tree: u8,
    key: Vec<u8>,
    value: Option<Vec<u8>>,
}

/// The largest value the ledger gives sled (journal chunks, stored blocks,
/// issued-serial arrays are cut to it; every other value is far smaller).
///
/// Why: sled 0.34 writes any log item above a quarter of its 512 KiB
/// segment as a file of its own (a "blob"), and a log item is one value or
/// a whole leaf of up to 17 keys when sled consolidates one. Its segment
/// cleaner then fails on blob files a later write already replaced (`No
/// such file or directory`), its periodic flush thread exits on that error,
/// and the committer's next flush waited forever (schema 3 ledgers, which
/// stored 64 KiB values; seen as hung test processes in CI). At 4 KiB a
/// full leaf stays under 80 KiB: the ledger never makes a blob, which
/// `tests/no_blobs.rs` checks.
pub(crate) const MAX_VALUE_BYTES: usize = 4096;

/// Journal chunks: at most one value's size plus its key and framing.
const JOURNAL_CHUNK_BYTES: usize = MAX_VALUE_BYTES;
const JOURNAL_MARKER: &[u8] = b"\xffcomplete";

/// The `blocks` entries of a stored block: chunk `i` of its sealed bytes
/// under the block id and `i` (the key layout of `issued_blocks`).
fn block_chunks(block_id: BlockId, sealed: &[u8]) -> impl Iterator<Item = ([u8; 12], &[u8])> {
    sealed
        .chunks(MAX_VALUE_BYTES)
        .enumerate()
        .map(move |(i, c)| (issued::chunk_key(block_id, i as u32), c))
}

fn journal_chunk_key(i: u32) -> [u8; 5] {
    let mut k = [0u8; 5];
    k[1..].copy_from_slice(&i.to_be_bytes());
    k
}

/// A sled iterator whose every step holds the ledger's read gate.
struct GatedIter<'a> {
    iter: sled::Iter,
    gate: &'a RwLock<IssuedIndex>,
}

impl Iterator for GatedIter<'_> {
    type Item = sled::Result<(sled::IVec, sled::IVec)>;

    fn next(&mut self) -> Option<Self::Item> {
        let _batch = self.gate.read().unwrap_or_else(|e| e.into_inner());
        self.iter.next()
    }
}

/// A tree as seen by a batch being planned: committed state plus the
/// batch's own writes.
struct Overlay<'a> {
    tree: &'a sled::Tree,
    pending: HashMap<Vec<u8>, Option<Vec<u8>>>,
}

impl<'a> Overlay<'a> {
    fn new(tree: &'a sled::Tree) -> Self {
        Overlay {
            tree,
            pending: HashMap::new(),
        }
    }

    fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<sled::IVec>, sled::Error> {
        match self.pending.get(key.as_ref()) {
            Some(v) => Ok(v.as_deref().map(sled::IVec::from)),
            None => self.tree.get(key),
        }
    }

    fn insert(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.pending
            .insert(key.as_ref().to_vec(), Some(value.as_ref().to_vec()));
    }

    fn remove(&mut self, key: impl AsRef<[u8]>) {
        self.pending.insert(key.as_ref().to_vec(), None);
    }

    /// Keys under `prefix`, committed and this batch's, in key order.
    fn keys_with_prefix(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, sled::Error> {
        let mut keys: std::collections::BTreeSet<Vec<u8>> = std::collections::BTreeSet::new();
        for item in self.tree.scan_prefix(prefix) {
            let (k, _) = item?;
            keys.insert(k.to_vec());
        }
        for (k, v) in &self.pending {
            if k.starts_with(prefix) {
                match v {
                    Some(_) => keys.insert(k.clone()),
                    None => keys.remove(k),
                };
            }
        }
        Ok(keys.into_iter().collect())
    }

    /// The batch's writes to this tree, in key order (so the outbox is
    /// written in sequence order).
    fn drain_into(self, tree: TreeId, out: &mut Vec<JournalWrite>) {
        let mut pending: Vec<_> = self.pending.into_iter().collect();
        pending.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        out.extend(pending.into_iter().map(|(key, value)| JournalWrite {
            tree: tree as u8,
            key,
            value,
        }));
    }
}

/// One batch being planned: the trees plus the counters it is updating.
struct Tx<'a> {
    path: &'a Path,
    line: &'a str,
    serials: Overlay<'a>,
    inflight: Overlay<'a>,
    /// Schema 6's per-event outbox: only acknowledged from.
    outbox: Overlay<'a>,
    /// The ledger as of the last batch, for what the overlays do not
    /// cover: settled serials' places (`ledger/settle.rs`).
    ledger: &'a Ledger,
    /// Settled blocks' snapshot values, rewritten when a settled serial
    /// moves.
    settled: Overlay<'a>,
    /// The committed log of chunks, and the chunks this batch touched.
    outbox_log: &'a sled::Tree,
    log: outbox_log::LogEdits,
    blocks: Overlay<'a>,
    issued_blocks: Overlay<'a>,
    cursors: Overlay<'a>,
    jobs: Overlay<'a>,
    job_counts: Overlay<'a>,
    parents: Overlay<'a>,
    parent_of: Overlay<'a>,
    children: Overlay<'a>,
    /// This batch's job tallies, loaded on first use, written at its end.
    tallies: HashMap<u32, crate::jobs::JobTally>,
    /// This batch's writes to `meta` other than the counters and sequences.
    meta: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// A decommissioning of a whole tree is under way (`hierarchy.rs`):
    /// its serials move though packed.
    whole_tree: bool,
    index_key: &'a [u8; 32],
    /// The index as of the last batch; `added` and `exhausted` are this
    /// batch's changes to it, applied with its writes.
    index: &'a IssuedIndex,
    added: Vec<(BlockId, Vec<SerialKey>)>,
    exhausted: Vec<BlockId>,
    counts: Counts,
    next_seq: u64,
    job_seq: u32,
    now_ms: u64,
}

type TxResult<T> = Result<T, sled::Error>;

impl Tx<'_> {
    fn corrupt(&self, what: String) -> StoreError {
        StoreError::Corrupt {
            path: self.path.to_path_buf(),
            what,
        }
    }

    fn apply(&mut self, op: &Op) -> TxResult<Result<Applied, StoreError>> {
        match op {
            Op::AddBlock {
                sealed,
                block_id,
                serials,
                serial_keys,
                runs_checked_below,
            } => self.add_block(sealed, *block_id, serials, serial_keys, *runs_checked_below),
            Op::Transition {
                serial,
                to,
                block,
                job,
            } => self.transition(serial, *to, *block, *job),
            Op::BeginJob { entry } => self.begin_job(entry),
            Op::EndJob { number, entry } => self.end_job(*number, entry),
            Op::AckOutbox { seq } => self.ack(*seq),
            Op::Fence { serial, block } => self.fence(serial, *block),
            Op::Return {
                block,
                serials,
                job,
            } => self.return_unused(*block, serials, *job),
            Op::Pack { parent, children } => self.pack(parent, children),
            Op::SealParent {
                parent,
                children,
                expected,
            } => self.seal_parent(parent, children, *expected),
            Op::Unpack { parent, children } => self.unpack(parent, children.as_deref()),
            Op::DecommissionTree { root, to } => self.decommission_tree(root, *to),
            Op::ReturnIntent { intent } => {
                self.meta
                    .push((META_RETURN_INTENT.to_vec(), intent.clone()));
                Ok(Ok(Applied::Intent))
            }
        }
    }

    /// A fenced serial goes from its block straight to Voided, flagged
    /// `fenced`, with a Voided outbox event: the lifecycle's Reserved ->
    /// Voided is not a move a unit makes, but this serial may already have
    /// been sent in a lost history and must never be sent from this one. A
    /// serial with a record is left alone (it already left the pool).
    fn fence(
        &mut self,
        serial: &Serial,
        block_id: BlockId,
    ) -> TxResult<Result<Applied, StoreError>> {
        let key = serial.as_bytes();
        if let Some(v) = self.serials.get(key)? {
            return Ok(match SerialRecord::decode(&v) {
                Some(r) => Ok(Applied::Moved {
                    from: r.state,
                    to: r.state,
                }),
                None => Err(self.corrupt(format!("record of serial {serial} unreadable"))),
            });
        }
        if let Err(e) = self.advance_cursor(block_id, serial, "fencing")? {
            return Ok(Err(e));
        }
        let to = UnitState::Voided;
        let record = SerialRecord {
            state: to,
            reported: false,
            fenced: true,
            block_id,
            at_ms: self.now_ms,
            // Never sent by any job of this history.
            job: 0,
        };
        self.serials.insert(key, record.encode());
        if let Err(e) = self.enqueue_event(serial, to) {
            return Ok(Err(e));
        }
        self.counts.shift(UnitState::Reserved, to);
        self.counts.fenced += 1;
        Ok(Ok(Applied::Moved {
            from: UnitState::Reserved,
            to,
        }))
    }

    /// Gives `serials` of `block_id`, none sent, back upstream: each gets
    /// a Returned record for job `job` and passes the block's cursor, and
    /// events of at most [`crate::outbox::RETURN_EVENT_SERIALS`] serials
    /// name them. A serial with a record already, or not of this block, is
    /// refused, and with it the whole op: the caller (the store, holding
    /// the pool) chose them unrecorded and unreserved.
    fn return_unused(
        &mut self,
        block_id: BlockId,
        serials: &[Serial],
        job: u32,
    ) -> TxResult<Result<Applied, StoreError>> {
        // Every check before the first write: a refused op writes nothing.
        let left = self
            .cursors
            .get(block_id.to_be_bytes())?
            .and_then(|v| BlockUse::decode(&v))
            .map_or(0, |u| u.remaining() as usize);
        let distinct: std::collections::HashSet<&Serial> = serials.iter().collect();
        if serials.is_empty() || distinct.len() != serials.len() || serials.len() > left {
            return Ok(Err(self.corrupt(format!(
                "return of block {block_id}: {} serials ({} distinct) asked, {left} left in the block",
                serials.len(),
                distinct.len()
            ))));
        }
        for serial in serials {
            if self.serials.get(serial.as_bytes())?.is_some() {
                return Ok(Err(self.corrupt(format!(
                    "return of block {block_id}: {serial} has left the pool already"
                ))));
            }
            if self.issued_block_of(&self.index_key_of(serial)) != Some(block_id) {
                return Ok(Err(StoreError::NotIssued {
                    serial: serial.clone(),
                }));
            }
        }
        for serial in serials {
            if let Err(e) = self.advance_cursor(block_id, serial, "returning")? {
                return Ok(Err(e));
            }
            let record = SerialRecord {
                state: UnitState::Returned,
                reported: false,
                fenced: false,
                block_id,
                at_ms: self.now_ms,
                job,
            };
            self.serials.insert(serial.as_bytes(), record.encode());
            self.counts.shift(UnitState::Reserved, UnitState::Returned);
            if let Err(e) = self.tally(job, UnitState::Reserved, UnitState::Returned)? {
                return Ok(Err(e));
            }
        }
        let mut events = 0u32;
        for range in serials.chunks(crate::outbox::RETURN_EVENT_SERIALS) {
            let first = &range[0];
            let event = OutboxEvent {
                seq: self.next_seq,
                id: event_id(self.line, first, UnitState::Returned),
                serial: first.clone(),
                state: UnitState::Returned,
                at_ms: self.now_ms,
                detail: crate::outbox::EventDetail::Return {
                    block: block_id,
                    serials: range.to_vec(),
                },
            };
            if let Err(e) = self.enqueue(event) {
                return Ok(Err(e));
            }
            events += 1;
        }
        Ok(Ok(Applied::Returned {
            serials: serials.len() as u32,
            events,
        }))
    }

    fn add_block(
        &mut self,
        sealed: &[u8],
        block_id: BlockId,
        serials: &[Serial],
        keys: &[SerialKey],
        runs_checked_below: u32,
    ) -> TxResult<Result<Applied, StoreError>> {
        let id = block_id.to_be_bytes();
        // The cursor, not the stored data: an archived block keeps its
        // cursor (and may not come back) but not its data.
        if self.cursors.get(id)?.is_some() {
            return Ok(Err(StoreError::DuplicateBlock { block_id }));
        }
        // A serial repeated from an earlier block is either still in that
        // block (the index) or has left it (its record).
        for k in keys {
            if let Some(earlier) = self.issued_block_of(k) {
                return Ok(Err(StoreError::OverlappingBlock { block_id, earlier }));
            }
        }
        // Runs made since the caller looked (usually none).
        let recheck = match self.ledger.run_manifest() {
            Ok(m) => m.runs.iter().any(|r| r.id >= runs_checked_below),
            Err(e) => return Ok(Err(e)),
        };
        for serial in serials {
            if let Some(v) = self.serials.get(serial.as_bytes())? {
                let earlier = SerialRecord::decode(&v).map_or(u64::MAX, |r| r.block_id);
                return Ok(Err(StoreError::OverlappingBlock { block_id, earlier }));
            }
            if !recheck {
                continue;
            }
            match self.ledger.locate_settled(serial, runs_checked_below) {
                Ok(None) => {}
                Ok(Some((earlier, _))) => {
                    return Ok(Err(StoreError::OverlappingBlock { block_id, earlier }))
                }
                Err(e) => return Ok(Err(e)),
            }
        }
        let Ok(count) = u32::try_from(keys.len()) else {
            return Ok(Err(StoreError::Corrupt {
                path: self.path.to_path_buf(),
                what: format!("block {block_id} holds more than 2^32 serials"),
            }));
        };
        let sorted = issued::sorted_keys(keys.to_vec());
        for (key, value) in issued::chunks(block_id, &sorted) {
            self.issued_blocks.insert(key, value);
        }
        self.added.push((block_id, sorted));
        for (key, chunk) in block_chunks(block_id, sealed) {
            self.blocks.insert(key, chunk);
        }
        self.cursors
            .insert(id, BlockUse { used: 0, count }.encode());
        self.counts.issued += u64::from(count);
        self.counts.blocks += 1;
        Ok(Ok(Applied::BlockAdded {
            block_id,
            serials: count,
        }))
    }

    fn transition(
        &mut self,
        serial: &Serial,
        to: UnitState,
        block: Option<BlockId>,
        job: Option<u32>,
    ) -> TxResult<Result<Applied, StoreError>> {
        let key = serial.as_bytes();
        let mut job = job.unwrap_or(0);
        let recorded = match self.serials.get(key)? {
            Some(v) => match SerialRecord::decode(&v) {
                Some(r) => Some((r, settle::Place::Tree)),
                None => {
                    return Ok(Err(
                        self.corrupt(format!("record of serial {serial} unreadable"))
                    ))
                }
            },
            None => None,
        };
        let (from, block_id, fresh, place) = match (recorded, block) {
            (Some((r, place)), _) => {
                job = r.job;
                (r.state, r.block_id, false, place)
            }
            // No record: the serial is still in its block. The caller (the
            // store's pool) has checked it holds the reservation, so the
            // lifecycle move is Reserved -> Sent.
            (None, Some(b)) => (UnitState::Reserved, b, true, settle::Place::Tree),
            (None, None) => match self.issued_block_of(&self.index_key_of(serial)) {
                Some(b) => (UnitState::Reserved, b, true, settle::Place::Tree),
                // Neither recorded nor in a block with serials left: a
                // settled serial (a unit sampled after its job), or none.
                None => match self.settled_at(serial)? {
                    Ok(Some((r, place))) => {
                        job = r.job;
                        (r.state, r.block_id, false, place)
                    }
                    Ok(None) => {
                        return Ok(Err(StoreError::NotIssued {
                            serial: serial.clone(),
                        }))
                    }
                    Err(e) => return Ok(Err(e)),
                },
            },
        };
        // Available and Reserved live in the pool, never in the ledger: a
        // record always means the serial left the pool for good.
        let allowed = to.has_left_pool() && from.can_move_to(to);
        if let Err(source) = from.transition(to).and_then(|to| match allowed {
            true => Ok(to),
            false => Err(serialine_core::IllegalTransition { from, to }),
        }) {
            return Ok(Err(StoreError::Transition {
                serial: serial.clone(),
                source,
            }));
        }
        match self.held_by_hierarchy(serial, to)? {
            Ok(None) => {}
            Ok(Some(refused)) | Err(refused) => return Ok(Err(refused)),
        }
        if fresh {
            if let Err(e) = self.advance_cursor(block_id, serial, "sending")? {
                return Ok(Err(e));
            }
        }
        let record = SerialRecord {
            state: to,
            reported: false,
            fenced: false,
            block_id,
            at_ms: self.now_ms,
            job,
        };
        if let Err(e) = self.put_record(serial, place, &record)? {
            return Ok(Err(e));
        }
        match (from.is_in_flight(), to.is_in_flight()) {
            (false, true) => {
                self.inflight.insert(key, []);
            }
            (true, false) => {
                self.inflight.remove(key);
            }
            _ => {}
        }
        if to.is_reportable() {
            if let Err(e) = self.enqueue_event(serial, to) {
                return Ok(Err(e));
            }
        }
        self.counts.shift(from, to);
        if let Err(e) = self.tally(job, from, to)? {
            return Ok(Err(e));
        }
        Ok(Ok(Applied::Moved { from, to }))
    }

    /// Counts one more serial of `block_id` as out of the pool (sent or
    /// fenced), in this batch; `doing` names the move for the error.
    fn advance_cursor(
        &mut self,
        block_id: BlockId,
        serial: &Serial,
        doing: &str,
    ) -> TxResult<Result<(), StoreError>> {
        let cid = block_id.to_be_bytes();
        let used = self.cursors.get(cid)?.and_then(|v| BlockUse::decode(&v));
        let Some(mut u) = used.filter(|u| u.used < u.count) else {
            return Ok(Err(self.corrupt(format!(
                "block {block_id} cursor missing or already exhausted while {doing} {serial}"
            ))));
        };
        u.used += 1;
        self.cursors.insert(cid, u.encode());
        if u.used == u.count {
            // Every serial of the block has a record now: the records
            // answer for them, the block's hashes go (`issued.rs`).
            for i in 0..issued::chunks_of(u.count) {
                self.issued_blocks.remove(issued::chunk_key(block_id, i));
            }
            self.exhausted.push(block_id);
        }
        Ok(Ok(()))
    }

    /// The block of an issued serial without a record, this batch included.
    fn issued_block_of(&self, key: &SerialKey) -> Option<BlockId> {
        self.added
            .iter()
            .find(|(_, keys)| keys.binary_search(key).is_ok())
            .map(|(id, _)| *id)
            .or_else(|| {
                self.index
                    .block_of(key)
                    .filter(|id| !self.exhausted.contains(id))
            })
    }

    /// Moves one serial of job `job` (0: none) in its tally.
    fn tally(
        &mut self,
        job: u32,
        from: UnitState,
        to: UnitState,
    ) -> TxResult<Result<(), StoreError>> {
        if job == 0 {
            return Ok(Ok(()));
        }
        if !self.tallies.contains_key(&job) {
            let loaded = match self.job_counts.get(job.to_be_bytes())? {
                Some(v) => match crate::jobs::JobTally::decode(&v) {
                    Ok(t) => t,
                    Err(e) => {
                        return Ok(Err(
                            self.corrupt(format!("job {job}'s tally unreadable: {e}"))
                        ))
                    }
                },
                None => crate::jobs::JobTally::default(),
            };
            self.tallies.insert(job, loaded);
        }
        if let Some(t) = self.tallies.get_mut(&job) {
            t.shift(from, to);
        }
        Ok(Ok(()))
    }

    fn begin_job(
        &mut self,
        entry: &crate::jobs::JobEntry,
    ) -> TxResult<Result<Applied, StoreError>> {
        let Some(number) = self.job_seq.checked_add(1) else {
            return Ok(Err(self.corrupt("job numbers exhausted (2^32 jobs)".into())));
        };
        let Ok(bytes) = postcard::to_stdvec(entry) else {
            return Ok(Err(self.corrupt(format!("job {number} does not encode"))));
        };
        self.jobs.insert(number.to_be_bytes(), bytes);
        self.job_seq = number;
        Ok(Ok(Applied::Job { number }))
    }

    fn end_job(
        &mut self,
        number: u32,
        entry: &crate::jobs::JobEntry,
    ) -> TxResult<Result<Applied, StoreError>> {
        if self.jobs.get(number.to_be_bytes())?.is_none() {
            return Ok(Err(
                self.corrupt(format!("job {number} ended but never begun"))
            ));
        }
        let Ok(bytes) = postcard::to_stdvec(entry) else {
            return Ok(Err(self.corrupt(format!("job {number} does not encode"))));
        };
        self.jobs.insert(number.to_be_bytes(), bytes);
        Ok(Ok(Applied::Job { number }))
    }

    /// Puts the outcome `to` of `serial` in the outbox, in this batch,
    /// under the next sequence number and its redelivery-stable id.
    fn enqueue_event(&mut self, serial: &Serial, to: UnitState) -> Result<(), StoreError> {
        let event = OutboxEvent {
            seq: self.next_seq,
            id: event_id(self.line, serial, to),
            serial: serial.clone(),
            state: to,
            at_ms: self.now_ms,
            detail: crate::outbox::EventDetail::Unit,
        };
        self.enqueue(event)
    }

    fn enqueue(&mut self, event: OutboxEvent) -> Result<(), StoreError> {
        debug_assert_eq!(event.seq, self.next_seq);
        match self.append_event(event) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(e) => return Err(map_sled(self.path, e)),
        }
        self.next_seq += 1;
        Ok(())
    }

    fn ack(&mut self, seq: u64) -> TxResult<Result<Applied, StoreError>> {
        let event = match self.event_at(seq)? {
            Ok(Some(e)) => e,
            Ok(None) => return Ok(Ok(Applied::Acked { event: None })),
            Err(e) => return Ok(Err(e)),
        };
        // The records upstream now has the outcome of: the unit's, each
        // serial of a returned range, none for a pack or unpack (the
        // parent's own outcome is its commissioning event's).
        let named: Vec<Serial> = match &event.detail {
            crate::outbox::EventDetail::Unit => vec![event.serial.clone()],
            crate::outbox::EventDetail::Return { serials, .. } => serials.clone(),
            crate::outbox::EventDetail::Pack { .. } | crate::outbox::EventDetail::Unpack { .. } => {
                Vec::new()
            }
        };
        for serial in &named {
            let found = match self.record_at(serial)? {
                Ok(f) => f,
                Err(e) => return Ok(Err(e)),
            };
            let Some((mut record, place)) = found else {
                return Ok(Err(self.corrupt(format!(
                    "outbox entry {seq} names {serial}, which has no readable record"
                ))));
            };
            match (event.state, record.state) {
                (UnitState::Committed, UnitState::Committed) => {
                    record.state = UnitState::Synced;
                    record.at_ms = self.now_ms;
                    self.counts.shift(UnitState::Committed, UnitState::Synced);
                    if let Err(e) =
                        self.tally(record.job, UnitState::Committed, UnitState::Synced)?
                    {
                        return Ok(Err(e));
                    }
                }
                (UnitState::Rejected(_) | UnitState::Voided, s)
                    if s == event.state && !record.reported =>
                {
                    record.reported = true;
                    self.counts.reported += 1;
                }
                // Upstream has the unit's end, or the serial back; the
                // counters keep it by state.
                (UnitState::Sampled(_) | UnitState::Decommissioned(_) | UnitState::Returned, s)
                    if s == event.state =>
                {
                    record.reported = true;
                }
                _ => {}
            }
            if let Err(e) = self.put_record(serial, place, &record)? {
                return Ok(Err(e));
            }
        }
        self.remove_event(seq)?;
        Ok(Ok(Applied::Acked {
            event: Some((event.serial, event.state)),
        }))
    }

    fn index_key_of(&self, serial: &Serial) -> [u8; 16] {
        serial_index_key(self.index_key, serial)
    }
}

/// `<ledger>.created`, beside the ledger directory, so that deleting or
/// emptying the directory leaves it in place.
pub(crate) fn marker_path(ledger: &Path) -> PathBuf {
    let mut name = ledger
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "ledger".into());
    name.push(".created");
    ledger.with_file_name(name)
}

/// How long `open` waits for another holder of the ledger's file lock to let
/// go: sled's I/O threads close their handle a moment after the last `Db` is
/// dropped, and a restarted service may start while its predecessor exits.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

fn open_db(path: &Path, cache_bytes: u64) -> Result<sled::Db, StoreError> {
    let started = std::time::Instant::now();
    loop {
        let opened = sled::Config::new()
            .path(path)
            .mode(sled::Mode::HighThroughput)
            // sled's default is 1 GiB per database, filled as pages are
            // read and written: the daemon's memory grew with history and
            // with every outbox backlog, and never shrank.
            .cache_capacity(cache_bytes)
            .open();
        match opened {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                if started.elapsed() >= LOCK_WAIT {
                    return Err(StoreError::Locked {
                        path: path.to_path_buf(),
                        waited: LOCK_WAIT,
                    });
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => return Err(map_sled(path, e)),
        }
    }
}

/// Key of the `issued` index: a keyed hash, so the index does not store
/// serials in clear before they are printed.
fn serial_index_key(index_key: &[u8; 32], serial: &Serial) -> [u8; 16] {
    let h = blake3::keyed_hash(index_key, serial.as_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&h.as_bytes()[..16]);
    out
}

fn decode_u64(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.try_into().ok()?))
}

fn map_sled(path: &Path, e: sled::Error) -> StoreError {
    match e {
        sled::Error::Corruption { at, .. } => StoreError::Corrupt {
            path: path.to_path_buf(),
            what: format!("sled reports corruption at {at:?}"),
        },
        sled::Error::Unsupported(why) if why.contains("version") => StoreError::Corrupt {
            path: path.to_path_buf(),
            what: why,
        },
        other => StoreError::io(path)(other),
    }
}

impl Ledger {
    /// A tree outside the atomic batches of [`Ledger::apply`] (command
    /// nonces); still written only by the committer.
    pub(crate) fn side_tree(&self, name: &str) -> Result<sled::Tree, StoreError> {
        self.db.open_tree(name).map_err(self.io())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger(dir: &Path) -> Ledger {
        Ledger::open(&dir.join("ledger"), "L", b"secret", DEFAULT_CACHE_BYTES)
            .expect("ledger opens")
    }

    /// Enough writes for several journal chunks.
    fn writes() -> Vec<JournalWrite> {
        (0u32..40)
            .map(|i| JournalWrite {
                tree: TreeId::Meta as u8,
                key: format!("probe-{i:02}").into_bytes(),
                value: Some(vec![i as u8; 4096]),
            })
            .collect()
    }

    /// A crash after the journal and its marker reached the log, before
    /// (or while) the batch's own keys were written: the next open writes
    /// them, so the batch is whole.
    #[test]
    fn a_whole_journal_is_completed_at_the_next_open() {
        let dir = tempfile::tempdir().expect("temp dir");
        let l = ledger(dir.path());
        let writes = writes();
        let chunks = l.write_journal(&writes).expect("journal written");
        assert!(chunks > 1, "the test spans several chunks");
        // Part of the batch was written when the crash came.
        l.write_post_images(&writes[..3]).expect("partial batch");
        l.flush().expect("flushed");
        drop(l);
        let l = ledger(dir.path());
        for w in &writes {
            let got = l.meta.get(&w.key).expect("readable");
            assert_eq!(got.as_deref(), w.value.as_deref(), "key {:?}", w.key);
        }
        assert!(l.journal.is_empty(), "the journal is cleared once applied");
    }

    /// A journal without its marker is a batch never applied (nor flushed,
    /// nor acknowledged): the next open discards it and writes nothing of it.
    #[test]
    fn a_journal_without_its_marker_is_discarded() {
        let dir = tempfile::tempdir().expect("temp dir");
        let l = ledger(dir.path());
        let writes = writes();
        l.write_journal(&writes).expect("journal written");
        l.journal.remove(JOURNAL_MARKER).expect("marker removed");
        l.flush().expect("flushed");
        drop(l);
        let l = ledger(dir.path());
        for w in &writes {
            assert!(l.meta.get(&w.key).expect("readable").is_none());
        }
        assert!(l.journal.is_empty());
    }
}
