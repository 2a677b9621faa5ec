//! The public handle: reserve serials, make transitions durable, read state.

use crate::committer::{
    self, CommitMode, OpResult, OpsRequest, ReaderSlot, Request, SharedDurable,
};
use crate::error::StoreError;
use crate::ledger::{Applied, Ledger, Op, SerialEntry};
use crate::outbox::OutboxEvent;
use crate::pool::Pool;
use crate::record::Counts;
use serialine_core::{BlockId, Gtin, SealedBlock, Serial, UnitState};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How to open a ledger.
#[derive(Clone)]
pub struct StoreOptions {
    pub path: PathBuf,
    pub line_id: String,
    /// The line's secret: blocks are opened with a key derived from it.
    pub line_secret: Vec<u8>,
    pub commit: CommitMode,
    /// Most operations one flush covers.
    pub max_batch: usize,
    /// The fence file (see `fence.rs`), outside the ledger's directory.
    /// `None`: no fence, a restored ledger may reissue serials (tests and
    /// tools only; the daemon always sets it).
    pub fence: Option<PathBuf>,
    /// Bound of sled's page cache for this ledger, in bytes.
    pub cache_bytes: u64,
}

impl std::fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreOptions")
            .field("path", &self.path)
            .field("line_id", &self.line_id)
            .field("line_secret", &"<redacted>")
            .field("commit", &self.commit)
            .field("max_batch", &self.max_batch)
            .field("fence", &self.fence)
            .field("cache_bytes", &self.cache_bytes)
            .finish()
    }
}

impl StoreOptions {
    pub fn new(path: impl Into<PathBuf>, line_id: impl Into<String>, line_secret: &[u8]) -> Self {
        StoreOptions {
            path: path.into(),
            line_id: line_id.into(),
            line_secret: line_secret.to_vec(),
            commit: CommitMode::Group,
            max_batch: 4096,
            fence: None,
            cache_bytes: crate::ledger::DEFAULT_CACHE_BYTES,
        }
    }
}

/// What the ledger held when it was opened.
#[derive(Debug, Clone)]
pub struct Recovery {
    /// Serials on a device without a verdict when the last run ended: they
    /// must be reconciled (late camera result) or voided, never sent again.
    pub in_flight: Vec<(Serial, UnitState)>,
    pub counts: Counts,
    pub outbox_depth: usize,
    /// What the fence did at open, when there is one.
    pub fence: Option<crate::fence::FenceReport>,
}

/// One requested lifecycle move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub serial: Serial,
    pub to: UnitState,
    /// The job sending the serial (a Sent); see [`Store::begin_job`].
    pub job: Option<u32>,
}

impl Transition {
    pub fn new(serial: Serial, to: UnitState) -> Self {
        Transition {
            serial,
            to,
            job: None,
        }
    }

    /// A move made by job `job` (its Sent records the job's number).
    pub fn in_job(serial: Serial, to: UnitState, job: Option<u32>) -> Self {
        Transition { serial, to, job }
    }
}

struct Inner {
    /// Shared with the committer, which swaps in a fresh handle when it
    /// reopens the ledger for a checkpoint.
    reader: ReaderSlot,
    line_id: String,
    counts: SharedDurable,
    pool: Mutex<Pool>,
    tx: mpsc::UnboundedSender<Request>,
    committer: Option<std::thread::JoinHandle<()>>,
    clock: crate::committer::CommitterClock,
    path: PathBuf,
    /// Lock order: `pool`, then `fence`.
    fence: Option<Mutex<crate::fence::FenceState>>,
}

impl Drop for Inner {
    /// Closing the channel lets the committer finish what is queued, flush and
    /// exit; waiting for it means the ledger's file lock is free when the last
    /// handle is gone, so the ledger can be reopened at once.
    fn drop(&mut self) {
        let (closed, _) = mpsc::unbounded_channel();
        drop(std::mem::replace(&mut self.tx, closed));
        if let Some(t) = self.committer.take() {
            let _ = t.join();
        }
        // Everything is flushed: this ledger and its fence agree.
        if let Some(f) = &self.fence {
            let slot = self.reader.read().unwrap_or_else(|p| p.into_inner());
            if let Some(ledger) = slot.as_ref() {
                f.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .close_clean(ledger);
            }
        }
    }
}

/// A line's ledger. Cheap to clone; all clones share one committer.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl Store {
    /// Opens (or creates) the ledger, checks it belongs to this line and this
    /// secret and was written by a schema this build reads, and reports what
    /// needs reconciliation.
    pub fn open(opts: StoreOptions) -> Result<(Store, Recovery), StoreError> {
        let mut ledger = Ledger::open(
            &opts.path,
            &opts.line_id,
            &opts.line_secret,
            opts.cache_bytes,
        )?;
        let (fence, fence_report) = match &opts.fence {
            Some(path) => {
                let (state, report) = crate::fence::open(&mut ledger, path)?;
                (Some(Mutex::new(state)), Some(report))
            }
            None => (None, None),
        };
        let recovery = Recovery {
            in_flight: ledger.in_flight()?,
            counts: ledger.counts,
            outbox_depth: ledger.outbox_len(),
            fence: fence_report,
        };
        // Everything read back from disk is durable.
        let counts = Arc::new(Mutex::new(committer::Durable::of(&ledger)));
        let reader = Arc::new(RwLock::new(Some(ledger.clone())));
        let (tx, thread, clock) = committer::spawn(
            ledger,
            opts.commit,
            opts.max_batch,
            counts.clone(),
            reader.clone(),
            &opts.line_id,
        )
        .map_err(|e| StoreError::NotDurable {
            path: opts.path.clone(),
            why: format!("cannot start the committer thread: {e}"),
        })?;
        if !recovery.in_flight.is_empty() {
            tracing::warn!(
                line = %opts.line_id,
                in_flight = recovery.in_flight.len(),
                "ledger holds serials sent without a verdict; they will be reconciled, never resent"
            );
        }
        Ok((
            Store {
                inner: Arc::new(Inner {
                    reader,
                    line_id: opts.line_id,
                    counts,
                    pool: Mutex::new(Pool::default()),
                    tx,
                    committer: Some(thread),
                    clock,
                    path: opts.path,
                    fence,
                }),
            },
            recovery,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// How long the committer has been in its current batch: watch it to
    /// notice a stalled disk or storage engine (see `CommitterClock`). It
    /// holds no handle on the ledger.
    pub fn committer_clock(&self) -> crate::committer::CommitterClock {
        self.inner.clock.clone()
    }

    /// Fault injection for tests: keeps the committer busy for `d`, as a
    /// flush that does not return would. Later requests wait behind it.
    #[doc(hidden)]
    pub fn stall_committer(&self, d: Duration) {
        let _ = self.inner.tx.send(Request::Stall(d));
    }

    pub fn line_id(&self) -> &str {
        &self.inner.line_id
    }

    /// Runs `f` on the readers' handle. A closure rather than a guard, so the
    /// lock is never held across an await or while waiting for the committer,
    /// which takes it to reopen the ledger.
    fn read<T>(&self, f: impl FnOnce(&Ledger) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let slot = self.inner.reader.read().unwrap_or_else(|p| p.into_inner());
        match slot.as_ref() {
            Some(ledger) => f(ledger),
            None => Err(StoreError::Closed),
        }
    }

    /// Makes the next open of this ledger fast, after a crash as after a
    /// clean stop: sled writes a snapshot of its page table, so that open
    /// replays no log written before now. sled 0.34 snapshots only while
    /// opening, so the committer closes and reopens the ledger: every
    /// operation waits meanwhile, about as long as opening the ledger after a
    /// crash would take now (the log since the last open, then the page
    /// table). Call it where the line pauses anyway, such as a job's end.
    /// Returns how long the ledger was closed.
    pub async fn checkpoint(&self) -> Result<Duration, StoreError> {
        self.send_checkpoint()?
            .await
            .map_err(|_| StoreError::Closed)?
    }

    pub fn checkpoint_blocking(&self) -> Result<Duration, StoreError> {
        self.send_checkpoint()?
            .blocking_recv()
            .map_err(|_| StoreError::Closed)?
    }

    fn send_checkpoint(
        &self,
    ) -> Result<oneshot::Receiver<Result<Duration, StoreError>>, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.inner
            .tx
            .send(Request::Checkpoint(reply))
            .map_err(|_| StoreError::Closed)?;
        Ok(rx)
    }

    fn pool(&self) -> MutexGuard<'_, Pool> {
        // A panic while holding the pool lock cannot leave it inconsistent in
        // a way that matters for safety: the ledger refuses a second Sent.
        self.inner.pool.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counters as of the last durable batch.
    pub fn counts(&self) -> Counts {
        self.durable().counts
    }

    fn durable(&self) -> committer::Durable {
        *self.inner.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Serials that can still be handed to a device: stored, never sent, not
    /// reserved.
    pub fn buffer_depth(&self) -> u64 {
        let reserved = self.pool().reserved.len() as u64;
        self.counts().available().saturating_sub(reserved)
    }

    /// Verifies a sealed block (AEAD, this line, no duplicate serials) and
    /// stores it durably. Returns once it is flushed, so upstream may be told.
    pub async fn add_block(&self, sealed: &SealedBlock) -> Result<(BlockId, u32), StoreError> {
        let op = self.block_op(sealed)?;
        match self.submit_one(op).await? {
            Applied::BlockAdded { block_id, serials } => Ok((block_id, serials)),
            other => Err(self.unexpected(other)),
        }
    }

    pub fn add_block_blocking(&self, sealed: &SealedBlock) -> Result<(BlockId, u32), StoreError> {
        let op = self.block_op(sealed)?;
        match self.submit_one_blocking(op)? {
            Applied::BlockAdded { block_id, serials } => Ok((block_id, serials)),
            other => Err(self.unexpected(other)),
        }
    }

    fn block_op(&self, sealed: &SealedBlock) -> Result<Op, StoreError> {
        self.read(|reader| {
            let block = reader.block_key().open(sealed, &reader.line_id)?;
            // Here, not in the batch: one lookup per serial and run, which
            // would hold up every line's commit behind a block's arrival.
            let runs_checked_below = reader.settled_overlap(block.block_id, &block.serials)?;
            Ok(Op::AddBlock {
                runs_checked_below,
                sealed: sealed.to_bytes(),
                block_id: block.block_id,
                serial_keys: block.serials.iter().map(|s| reader.serial_key(s)).collect(),
                serials: block.serials,
            })
        })
    }

    /// Reserves up to `n` serials for sending, of any product, decrypting
    /// the next stored block when the window runs dry. Fewer than `n` means
    /// the buffer is empty. For tools and tests that run no job: a line
    /// running a job reserves with [`Store::reserve_for`].
    pub fn reserve(&self, n: usize) -> Result<Vec<Serial>, StoreError> {
        self.reserve_inner(n, None)
    }

    /// Reserves up to `n` serials from blocks sealed for `gtin` only: a
    /// serial issued for one product is never printed on another. Blocks of
    /// other products stay stored, for their own job. Fewer than `n` means
    /// the buffer holds no more serials for `gtin`.
    pub fn reserve_for(&self, n: usize, gtin: &Gtin) -> Result<Vec<Serial>, StoreError> {
        self.reserve_inner(n, Some(gtin))
    }

    fn reserve_inner(&self, n: usize, gtin: Option<&Gtin>) -> Result<Vec<Serial>, StoreError> {
        let mut pool = self.pool();
        if self.fence_holding() {
            return Ok(Vec::new());
        }
        while pool.window_len(gtin) < n {
            if !self.load_next_block(&mut pool, gtin)? {
                break;
            }
        }
        let taken = pool.take(n, gtin);
        self.fence_hand_out(&mut pool, taken)
    }

    fn load_next_block(&self, pool: &mut Pool, gtin: Option<&Gtin>) -> Result<bool, StoreError> {
        self.read(|reader| Self::load_next_block_from(reader, pool, gtin))
    }

    /// Loads the next block of `gtin` (of any product with `None`) into the
    /// window. Blocks of another product are opened once to learn their
    /// product, then left stored.
    fn load_next_block_from(
        reader: &Ledger,
        pool: &mut Pool,
        gtin: Option<&Gtin>,
    ) -> Result<bool, StoreError> {
        for (block_id, usage) in reader.blocks_with_serials()? {
            if pool.loaded.contains(&block_id) {
                continue;
            }
            if let (Some(want), Some(known)) = (gtin, pool.gtins.get(&block_id)) {
                if want != known {
                    continue;
                }
            }
            let block = reader.open_block(block_id)?;
            pool.gtins.insert(block_id, block.gtin);
            if gtin.is_some_and(|g| *g != block.gtin) {
                continue;
            }
            pool.loaded.insert(block_id);
            // An untouched block (the usual case) needs no per-serial lookups:
            // its cursor is written in the same batch as every Sent.
            let untouched = usage.used == 0;
            let window = pool.windows.entry(block.gtin).or_default();
            for serial in block.serials {
                if untouched || !reader.has_record(&serial)? {
                    window.push_back((serial, block_id));
                }
            }
            return Ok(true);
        }
        Ok(false)
    }

    /// Serials of blocks sealed for `gtin` that can still be handed to a
    /// device: stored, never sent, not reserved. Blocks of other products do
    /// not count: they cannot feed a job for `gtin`.
    pub fn buffer_depth_for(&self, gtin: &Gtin) -> Result<u64, StoreError> {
        let blocks = self.read(|reader| reader.blocks_with_serials())?;
        // Blocks whose product this process has not seen yet are opened
        // without holding the pool (once per block and process: after a
        // restart, the first call opens every block that still has serials),
        // so the line is not held up meanwhile.
        let unknown: Vec<BlockId> = {
            let pool = self.pool();
            blocks
                .iter()
                .map(|(id, _)| *id)
                .filter(|id| !pool.gtins.contains_key(id))
                .collect()
        };
        for id in unknown {
            let g = self.read(|reader| reader.open_block(id))?.gtin;
            self.pool().gtins.insert(id, g);
        }
        let pool = self.pool();
        let stored: u64 = blocks
            .iter()
            .filter(|(id, _)| pool.gtins.get(id) == Some(gtin))
            .map(|(_, usage)| u64::from(usage.remaining()))
            .sum();
        Ok(stored.saturating_sub(pool.reserved_of(gtin)))
    }

    /// The product a stored block was sealed for, read from its
    /// authenticated content.
    pub fn block_gtin(&self, block_id: BlockId) -> Result<Gtin, StoreError> {
        if let Some(g) = self.pool().gtins.get(&block_id) {
            return Ok(*g);
        }
        let g = self.read(|reader| reader.open_block(block_id))?.gtin;
        self.pool().gtins.insert(block_id, g);
        Ok(g)
    }

    /// Returns reservations that were never sent.
    pub fn release(&self, serials: &[Serial]) {
        self.pool().release(serials);
    }

    /// Returns reservations the caller could not use (a code that does not
    /// render) to the back of their product's window: they stay counted in
    /// the buffer and are not the next ones handed out again.
    pub fn release_to_back(&self, serials: &[Serial]) {
        self.pool().release_to_back(serials);
    }

    /// Applies transitions as one group-committed request; each result says
    /// whether that transition is durable. `Sent` is only accepted for a
    /// serial this handle reserved, and is durable before this returns: only
    /// then may its bytes go to a device (invariant 1).
    pub async fn apply(&self, transitions: &[Transition]) -> Vec<Result<UnitState, StoreError>> {
        let (ops, slots) = self.prepare(transitions);
        let taken = taken_reservations(&ops);
        let results = match self.send_request(ops) {
            Ok(rx) => rx.await.map_err(|_| StoreError::Closed),
            Err(e) => Err(e),
        };
        let results = self.finish(slots, results);
        self.return_refused(transitions, &results, taken);
        results
    }

    pub fn apply_blocking(&self, transitions: &[Transition]) -> Vec<Result<UnitState, StoreError>> {
        let (ops, slots) = self.prepare(transitions);
        let taken = taken_reservations(&ops);
        let results = match self.send_request(ops) {
            Ok(rx) => rx.blocking_recv().map_err(|_| StoreError::Closed),
            Err(e) => Err(e),
        };
        let results = self.finish(slots, results);
        self.return_refused(transitions, &results, taken);
        results
    }

    /// One transition; see [`Store::apply`].
    pub async fn transition(
        &self,
        serial: &Serial,
        to: UnitState,
    ) -> Result<UnitState, StoreError> {
        let t = [Transition::new(serial.clone(), to)];
        self.apply(&t)
            .await
            .pop()
            .unwrap_or(Err(StoreError::Closed))
    }

    pub fn transition_blocking(
        &self,
        serial: &Serial,
        to: UnitState,
    ) -> Result<UnitState, StoreError> {
        let t = [Transition::new(serial.clone(), to)];
        self.apply_blocking(&t)
            .pop()
            .unwrap_or(Err(StoreError::Closed))
    }

    /// A `Sent` the ledger refused (or whose outcome is unknown) took its
    /// reservation out of the pool in [`Store::prepare`]. Where the ledger
    /// shows the serial still never sent, it goes back to the front of its
    /// window: otherwise it would be stranded, counted in the buffer but
    /// never handed out. The ledger, not the error, decides: a serial it
    /// recorded (or that cannot be read) is not returned.
    fn return_refused(
        &self,
        transitions: &[Transition],
        results: &[Result<UnitState, StoreError>],
        mut taken: std::collections::HashMap<Serial, BlockId>,
    ) {
        // Pushed to the front one by one, so in reverse: the request's
        // order is kept.
        for (t, r) in transitions.iter().zip(results).rev() {
            if t.to != UnitState::Sent || r.is_ok() {
                continue;
            }
            let Some(block) = taken.remove(&t.serial) else {
                continue;
            };
            match self.read(|reader| reader.entry(&t.serial)) {
                Ok(SerialEntry::Available { .. }) => {
                    tracing::warn!(serial = %t.serial, "Sent refused: serial returned to the pool");
                    self.pool().restore(t.serial.clone(), block);
                }
                other => {
                    tracing::warn!(serial = %t.serial, entry = ?other, "Sent refused and the serial is not provably unsent: not returned to the pool");
                }
            }
        }
    }

    /// Checks reservations for `Sent` and splits the request into ops to
    /// submit and results already known (refused before reaching the ledger).
    fn prepare(&self, transitions: &[Transition]) -> (Vec<Op>, Vec<Result<(), StoreError>>) {
        let mut pool = self.pool();
        let mut seen = std::collections::HashSet::new();
        let mut ops = Vec::with_capacity(transitions.len());
        let mut slots = Vec::with_capacity(transitions.len());
        for t in transitions {
            // Two Sents of one serial in a request would race for one
            // reservation; any other repeat (Printed then Committed) is a
            // sequence the ledger checks move by move.
            if t.to == UnitState::Sent && !seen.insert(&t.serial) {
                slots.push(Err(StoreError::RepeatedInRequest {
                    serial: t.serial.clone(),
                }));
                continue;
            }
            // Taking the reservation now means a second Sent of the same serial,
            // from any caller, is refused even before the ledger sees it.
            let block = match t.to {
                UnitState::Sent => pool.reserved.remove(&t.serial),
                _ => None,
            };
            if t.to == UnitState::Sent && block.is_none() {
                let state = match self.read(|r| r.entry(&t.serial)) {
                    Ok(SerialEntry::Recorded(r)) => r.state,
                    Ok(SerialEntry::NotIssued) => {
                        slots.push(Err(StoreError::NotIssued {
                            serial: t.serial.clone(),
                        }));
                        continue;
                    }
                    _ => UnitState::Available,
                };
                slots.push(Err(StoreError::NotReserved {
                    serial: t.serial.clone(),
                    state,
                }));
                continue;
            }
            ops.push(Op::Transition {
                serial: t.serial.clone(),
                to: t.to,
                block,
                job: t.job,
            });
            slots.push(Ok(()));
        }
        (ops, slots)
    }

    fn finish(
        &self,
        slots: Vec<Result<(), StoreError>>,
        results: Result<Vec<OpResult>, StoreError>,
    ) -> Vec<Result<UnitState, StoreError>> {
        let mut results = match results {
            Ok(r) => r.into_iter(),
            Err(e) => {
                let msg = e.to_string();
                return slots
                    .into_iter()
                    .map(|s| {
                        s.and(Err(StoreError::NotDurable {
                            path: self.inner.path.clone(),
                            why: msg.clone(),
                        }))
                    })
                    .collect();
            }
        };
        slots
            .into_iter()
            .map(|slot| {
                slot?;
                match results.next() {
                    Some(Ok(Applied::Moved { to, .. })) => Ok(to),
                    Some(Ok(other)) => Err(self.unexpected(other)),
                    Some(Err(e)) => Err(e),
                    None => Err(StoreError::Closed),
                }
            })
            .collect()
    }

    fn send_request(&self, ops: Vec<Op>) -> Result<oneshot::Receiver<Vec<OpResult>>, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.inner
            .tx
            .send(Request::Ops(OpsRequest { ops, reply }))
            .map_err(|_| StoreError::Closed)?;
        Ok(rx)
    }

    async fn submit_one(&self, op: Op) -> Result<Applied, StoreError> {
        let rx = self.send_request(vec![op])?;
        rx.await
            .map_err(|_| StoreError::Closed)?
            .pop()
            .unwrap_or(Err(StoreError::Closed))
    }

    fn submit_one_blocking(&self, op: Op) -> Result<Applied, StoreError> {
        let rx = self.send_request(vec![op])?;
        rx.blocking_recv()
            .map_err(|_| StoreError::Closed)?
            .pop()
            .unwrap_or(Err(StoreError::Closed))
    }

    fn unexpected(&self, a: Applied) -> StoreError {
        StoreError::Corrupt {
            path: self.inner.path.clone(),
            what: format!("committer answered with {a:?}"),
        }
    }

    /// The lifecycle state of a serial: `Available` or `Reserved` (in memory)
    /// while never sent, else its durable state. A serial never issued to
    /// this line is [`StoreError::NotIssued`].
    pub fn state_of(&self, serial: &Serial) -> Result<UnitState, StoreError> {
        Ok(match self.read(|r| r.entry(serial))? {
            SerialEntry::NotIssued => {
                return Err(StoreError::NotIssued {
                    serial: serial.clone(),
                })
            }
            SerialEntry::Available { .. } if self.pool().reserved.contains_key(serial) => {
                UnitState::Reserved
            }
            SerialEntry::Available { .. } => UnitState::Available,
            SerialEntry::Recorded(r) => r.state,
        })
    }

    /// What the ledger holds for a serial (its block, or its full record
    /// with the reported and fenced flags); [`Store::state_of`] when only the
    /// state matters. Reservations are in memory and not part of it.
    pub fn entry(&self, serial: &Serial) -> Result<SerialEntry, StoreError> {
        self.read(|r| r.entry(serial))
    }

    pub fn in_flight(&self) -> Result<Vec<(Serial, UnitState)>, StoreError> {
        self.read(|r| r.in_flight())
    }

    /// The oldest `max` outbox events whose batch is durable: only those
    /// may go upstream (see `committer::Durable`).
    pub fn outbox_peek(&self, max: usize) -> Result<Vec<OutboxEvent>, StoreError> {
        let below = self.durable().outbox_below;
        let mut events = self.read(|r| r.outbox_peek(max))?;
        events.retain(|e| e.seq < below);
        Ok(events)
    }

    /// 0 once the ledger is closed.
    pub fn outbox_depth(&self) -> usize {
        self.read(|r| Ok(r.outbox_len())).unwrap_or(0)
    }

    /// Upstream acknowledged these outbox entries: remove them, mark Committed
    /// serials Synced and rejected/voided ones reported, durably.
    pub async fn outbox_ack(&self, seqs: &[u64]) -> Result<usize, StoreError> {
        let rx = self.send_request(seqs.iter().map(|&seq| Op::AckOutbox { seq }).collect())?;
        let results = rx.await.map_err(|_| StoreError::Closed)?;
        count_acks(results)
    }

    pub fn outbox_ack_blocking(&self, seqs: &[u64]) -> Result<usize, StoreError> {
        let rx = self.send_request(seqs.iter().map(|&seq| Op::AckOutbox { seq }).collect())?;
        let results = rx.blocking_recv().map_err(|_| StoreError::Closed)?;
        count_acks(results)
    }

    /// Serials whose last transition (at or after `since_ms`, Unix ms) left
    /// them in a state `keep` accepts: `serialine export`.
    pub fn records_since(
        &self,
        since_ms: u64,
        keep: impl FnMut(UnitState) -> bool,
    ) -> Result<Vec<(Serial, crate::SerialRecord)>, StoreError> {
        self.read(|r| r.records_since(since_ms, keep))
    }

    /// Recounts every state by scanning the ledger; an audit of the stored
    /// counters.
    pub fn recount(&self) -> Result<Counts, StoreError> {
        self.read(|r| r.recount())
    }
}

impl Store {
    /// Records the nonce of a signed command, durably, unless it is already
    /// recorded: `Ok(true)` means new and now durable (the command may run),
    /// `Ok(false)` a replay (it must not). `expires_at_ms` (Unix ms) is when
    /// the command stops being fresh enough to run anyway; the entry is kept
    /// until then and pruned after, so the `nonces` tree stays bounded.
    /// An error means the nonce is not known to be durable: refuse the command.
    pub async fn record_nonce(&self, nonce: &str, expires_at_ms: u64) -> Result<bool, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.inner
            .tx
            .send(Request::Nonce(crate::nonces::NonceRequest {
                nonce: nonce.as_bytes().to_vec(),
                expires_ms: expires_at_ms,
                reply,
            }))
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// How many command nonces the ledger holds (expired ones included until
    /// the next write prunes them).
    pub fn nonce_count(&self) -> Result<usize, StoreError> {
        self.read(|r| r.nonce_count())
    }
}

/// The reservations a request's `Sent` ops took from the pool.
fn taken_reservations(ops: &[Op]) -> std::collections::HashMap<Serial, BlockId> {
    ops.iter()
        .filter_map(|op| match op {
            Op::Transition {
                serial,
                to: UnitState::Sent,
                block: Some(b),
                ..
            } => Some((serial.clone(), *b)),
            _ => None,
        })
        .collect()
}

fn count_acks(results: Vec<OpResult>) -> Result<usize, StoreError> {
    let mut n = 0;
    for r in results {
        if let Applied::Acked { event: Some(_) } = r? {
            n += 1;
        }
    }
    Ok(n)
}

// The fence's part of the public handle, kept in its own file; a child
// module, so it reaches the handle's private state.
#[path = "store_archive.rs"]
mod store_archive;
pub use store_archive::{ArchiveOptions, ArchiveReport, DEFAULT_SERIALS_PER_FILE};

#[path = "store_jobs.rs"]
mod store_jobs;

#[path = "store_fence.rs"]
mod store_fence;

#[path = "store_return.rs"]
mod store_return;

#[path = "store_hierarchy.rs"]
mod store_hierarchy;
pub use store_fence::{BlockPosition, FenceHello};
pub use store_return::{ReturnReport, ReturnRequest};

#[cfg(test)]
mod tests {
    use super::*;
    use serialine_core::{Block, BlockKey};

    /// A `Sent` refused by the ledger (here: a request whose outcome is
    /// reported as not durable, as when the flush fails) must not strand the
    /// reservation it took: the serial is back in the pool, handed out
    /// again, and the buffer count stays true.
    #[test]
    fn a_refused_sent_returns_its_serial_to_the_pool() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) =
            Store::open(StoreOptions::new(dir.path().join("ledger"), "L", b"secret")).unwrap();
        let gtin = Gtin::parse("09506000134352").unwrap();
        let block = Block {
            block_id: 1,
            line_id: "L".into(),
            gtin,
            serials: ["S1", "S2", "S3"]
                .iter()
                .map(|s| Serial::new(*s).unwrap())
                .collect(),
            issued_at: 0,
        };
        let sealed = BlockKey::derive(b"secret").seal(&block, [1; 24]).unwrap();
        store.add_block_blocking(&sealed).unwrap();
        let reserved = store.reserve_for(2, &gtin).unwrap();
        let ts: Vec<_> = reserved
            .iter()
            .map(|s| Transition::new(s.clone(), UnitState::Sent))
            .collect();
        let (ops, slots) = store.prepare(&ts);
        let taken = taken_reservations(&ops);
        assert_eq!(taken.len(), 2);
        // The committer answers with a refusal: nothing was written.
        let results = store.finish(
            slots,
            Err(StoreError::NotDurable {
                path: dir.path().into(),
                why: "flush failed".into(),
            }),
        );
        assert!(results.iter().all(Result::is_err));
        // Before the fix the two serials were neither reserved nor in the
        // window: counted in the buffer, never handed out again.
        store.return_refused(&ts, &results, taken);
        assert_eq!(store.buffer_depth_for(&gtin).unwrap(), 3);
        let again = store.reserve_for(3, &gtin).unwrap();
        assert_eq!(again.len(), 3, "every serial can be reserved again");
        assert_eq!(&again[..2], &reserved[..], "returned to the front");
        let results = store.apply_blocking(&[Transition::new(again[0].clone(), UnitState::Sent)]);
        assert!(results[0].is_ok());

        // A serial the ledger did record is not returned, whatever the error.
        let ts = vec![Transition::new(again[1].clone(), UnitState::Sent)];
        let (ops, slots) = store.prepare(&ts);
        let taken = taken_reservations(&ops);
        let rx = store.send_request(ops).unwrap();
        let applied = rx.blocking_recv().unwrap();
        assert!(applied[0].is_ok());
        let claimed_failure = vec![Err(StoreError::Closed)];
        store.return_refused(&ts, &claimed_failure, taken);
        let _ = slots;
        assert_eq!(store.state_of(&again[1]).unwrap(), UnitState::Sent);
        store.release(&again[2..]);
        assert_eq!(store.buffer_depth_for(&gtin).unwrap(), 1);
        assert_eq!(store.reserve_for(3, &gtin).unwrap(), vec![again[2].clone()]);
    }
}
