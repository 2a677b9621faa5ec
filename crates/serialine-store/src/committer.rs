//! Group commit. Callers hand operations to one committer thread; it applies
//! everything queued so far as one atomic batch (see `Ledger::apply`), makes it durable with one
//! flush, and only then answers each caller. Durability costs one fsync per
//! batch, not per unit, and no caller ever hears "done" for a write that a
//! power cut could still take back.

use crate::error::StoreError;
use crate::ledger::{Applied, Ledger, Op, RoundOutcome};
use crate::nonces::{commit_nonces, NonceRequest};
use crate::record::Counts;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// How transitions are made durable (`store.commit` in the service's
/// configuration: `group` or `per-transition`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CommitMode {
    /// Everything queued while the previous flush ran shares the next flush.
    #[default]
    Group,
    /// One batch and one flush per operation: the naive design, kept as
    /// the baseline that benchmarks compare against.
    PerTransition,
}

impl std::fmt::Display for CommitMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CommitMode::Group => "group",
            CommitMode::PerTransition => "per-transition",
        })
    }
}

/// The Prometheus histogram of durable batch sizes, in transitions per
/// flush (`line` label): how much group commit is saving.
pub const BATCH_OPS_METRIC: &str = "serialine_committer_batch_ops";

pub(crate) type OpResult = Result<Applied, StoreError>;

/// How long the committer has been inside one batch (apply and flush).
/// A batch takes milliseconds; one that does not return is a stalled disk
/// or storage engine, which nothing else would report while a line is
/// idle. Cheap to clone; holds no handle on the ledger.
#[derive(Debug, Clone)]
pub struct CommitterClock {
    origin: Instant,
    /// Milliseconds since `origin` at which the batch in progress started,
    /// plus one; 0 while the committer waits for work.
    busy_since: Arc<std::sync::atomic::AtomicU64>,
}

impl CommitterClock {
    fn new() -> Self {
        CommitterClock {
            origin: Instant::now(),
            busy_since: Arc::default(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64 + 1
    }

    fn enter(&self) {
        self.busy_since
            .store(self.now_ms(), std::sync::atomic::Ordering::Relaxed);
    }

    fn leave(&self) {
        self.busy_since
            .store(0, std::sync::atomic::Ordering::Relaxed);
    }

    /// How long the batch in progress has taken so far; `None` when the
    /// committer is waiting for work (or reopening for a checkpoint, which
    /// may take seconds on a large ledger and is logged on its own).
    pub fn busy_for(&self) -> Option<Duration> {
        match self.busy_since.load(std::sync::atomic::Ordering::Relaxed) {
            0 => None,
            since => Some(Duration::from_millis(self.now_ms().saturating_sub(since))),
        }
    }
}

/// What the committer reports about itself as it works.
struct Gauges {
    batch_ops: metrics::Histogram,
    clock: CommitterClock,
}

pub(crate) enum Request {
    Ops(OpsRequest),
    /// Fault injection for tests: the committer stays busy this long, as a
    /// stalled flush would.
    Stall(Duration),
    /// Close and reopen the ledger so sled snapshots it; see [`Ledger::reopen`].
    Checkpoint(oneshot::Sender<Result<Duration, StoreError>>),
    /// Check and record a command nonce; see [`crate::nonces`].
    Nonce(NonceRequest),
    /// One archiving round; see `ledger/retention.rs`.
    Archive(ArchiveRequest),
}

pub(crate) struct ArchiveRequest {
    pub before_ms: u64,
    pub dir: std::path::PathBuf,
    pub max_serials: u64,
    pub stop_after_file: bool,
    pub reply: oneshot::Sender<Result<Option<RoundOutcome>, StoreError>>,
}

pub(crate) struct OpsRequest {
    pub ops: Vec<Op>,
    pub reply: oneshot::Sender<Vec<OpResult>>,
}

/// What the last durable batch left, for readers on other threads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Durable {
    pub counts: Counts,
    /// Outbox entries below this sequence number are on disk. A reader of
    /// the outbox sees the trees as written, flushed or not; an event it
    /// publishes upstream before its batch is flushed could be lost by a
    /// crash while upstream keeps it, and the unit then end otherwise.
    pub outbox_below: u64,
}

impl Durable {
    pub fn of(ledger: &Ledger) -> Self {
        Durable {
            counts: ledger.counts,
            outbox_below: ledger.next_seq(),
        }
    }
}

pub(crate) type SharedDurable = Arc<Mutex<Durable>>;

/// The readers' handle on the ledger. Empty only while the committer reopens
/// it (readers wait on the lock meanwhile) or after a reopen failed.
pub(crate) type ReaderSlot = Arc<RwLock<Option<Ledger>>>;

pub(crate) fn spawn(
    ledger: Ledger,
    mode: CommitMode,
    max_batch: usize,
    counts: SharedDurable,
    readers: ReaderSlot,
    line_id: &str,
) -> std::io::Result<(
    mpsc::UnboundedSender<Request>,
    std::thread::JoinHandle<()>,
    CommitterClock,
)> {
    let (tx, rx) = mpsc::unbounded_channel();
    let clock = CommitterClock::new();
    let busy = clock.clone();
    // A no-op handle unless a metrics recorder was installed before the
    // ledger opened (the service and the demo install it first).
    let batch_ops = metrics::histogram!(BATCH_OPS_METRIC, "line" => line_id.to_string());
    let handle = std::thread::Builder::new()
        .name("serialine-committer".into())
        .spawn(move || {
            run(
                ledger,
                rx,
                mode,
                max_batch.max(1),
                counts,
                readers,
                Gauges {
                    batch_ops,
                    clock: busy,
                },
            )
        })?;
    Ok((tx, handle, clock))
}

fn run(
    mut ledger: Ledger,
    mut rx: mpsc::UnboundedReceiver<Request>,
    mode: CommitMode,
    max_batch: usize,
    counts: SharedDurable,
    readers: ReaderSlot,
    gauges: Gauges,
) {
    let Gauges { batch_ops, clock } = gauges;
    let mut batch: Vec<OpsRequest> = Vec::new();
    let mut nonces: Vec<NonceRequest> = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        // A checkpoint ends the batch: what was queued before it is applied
        // first, what comes after waits for the reopened ledger.
        let mut checkpoint = None;
        let mut archive = None;
        let mut queued = 0;
        let mut next = Some(first);
        while let Some(req) = next.take() {
            match req {
                Request::Ops(r) => {
                    queued += r.ops.len();
                    batch.push(r);
                }
                Request::Checkpoint(reply) => {
                    checkpoint = Some(reply);
                    break;
                }
                // Like a checkpoint, a round ends the batch: it writes
                // the ledger outside `apply`.
                Request::Archive(r) => {
                    archive = Some(r);
                    break;
                }
                Request::Nonce(n) => nonces.push(n),
                Request::Stall(d) => {
                    clock.enter();
                    std::thread::sleep(d);
                    clock.leave();
                }
            }
            if queued < max_batch {
                next = rx.try_recv().ok();
            }
        }
        // Per-transition mode flushes each operation alone: batches of one.
        if queued > 0 && mode == CommitMode::Group {
            batch_ops.record(queued as f64);
        }
        clock.enter();
        match mode {
            _ if batch.is_empty() => {}
            CommitMode::Group => commit_group(&mut ledger, &mut batch, &counts),
            CommitMode::PerTransition => commit_each(&mut ledger, &mut batch, &counts),
        }
        if !nonces.is_empty() {
            commit_nonces(&ledger, &mut nonces);
        }
        if let Some(r) = archive {
            let outcome =
                ledger.archive_round(r.before_ms, &r.dir, r.max_serials, r.stop_after_file);
            publish(&ledger, &counts);
            let _ = r.reply.send(outcome);
        }
        clock.leave();
        if let Some(reply) = checkpoint {
            // Between jobs: blocks whose serials all ended leave the
            // per-serial records for their compact form first, so the
            // snapshot sled writes at the reopen is of the smaller ledger.
            clock.enter();
            settle(&mut ledger);
            clock.leave();
            match reopen(ledger, &readers) {
                Ok((reopened, took)) => {
                    ledger = reopened;
                    let _ = reply.send(Ok(took));
                }
                Err(e) => {
                    // No ledger left to write to: callers from now on hear
                    // `Closed`, and the next start opens what is on disk.
                    tracing::error!(error = %e, "reopening the ledger for a checkpoint failed; the ledger is closed");
                    let _ = reply.send(Err(e));
                    return;
                }
            }
        }
    }
    // Every handle is gone: make whatever is applied durable before exiting.
    if let Err(e) = ledger.flush() {
        tracing::error!(error = %e, "final ledger flush failed");
    }
}

/// Settles every block that can be (`ledger/settle.rs`), in rounds of at
/// most [`SETTLE_ROUND_SERIALS`]. A failed round leaves the ledger as it
/// was (its batch is journaled) and is tried again at the next checkpoint.
fn settle(ledger: &mut Ledger) {
    let started = Instant::now();
    let mut total = crate::ledger::SettleOutcome::default();
    loop {
        match ledger.settle_round(SETTLE_ROUND_SERIALS) {
            Ok(Some(round)) => {
                total.blocks += round.blocks;
                total.serials += round.serials;
                total.merges += round.merges;
                // A round that settled nothing would be found again.
                if round.serials == 0 {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                tracing::error!(error = %e, path = %ledger.path.display(), "settling ended blocks failed; the ledger is unchanged by the round, retried at the next checkpoint");
                break;
            }
        }
    }
    if total.blocks > 0 {
        tracing::info!(
            path = %ledger.path.display(),
            blocks = total.blocks,
            serials = total.serials,
            merges = total.merges,
            took_ms = started.elapsed().as_millis() as u64,
            "settled {} serials of {} ended blocks into their compact form",
            total.serials,
            total.blocks
        );
    }
}

/// Most serials one settling round takes: its run is sorted in memory
/// (16 bytes a serial) and its batch removes that many records under the
/// write gate.
const SETTLE_ROUND_SERIALS: u64 = 250_000;

/// Closes the ledger, the readers' handle included, and opens it again.
/// Readers block on the slot's lock meanwhile instead of seeing it empty.
fn reopen(ledger: Ledger, readers: &ReaderSlot) -> Result<(Ledger, Duration), StoreError> {
    let started = Instant::now();
    ledger.flush()?;
    let mut slot = readers.write().unwrap_or_else(|p| p.into_inner());
    drop(slot.take());
    let reopened = ledger.reopen()?;
    *slot = Some(reopened.clone());
    Ok((reopened, started.elapsed()))
}

/// Readers must see the counters of a batch by the time its callers hear it is
/// durable, so this runs before any reply.
fn publish(ledger: &Ledger, counts: &SharedDurable) {
    let mut c = counts.lock().unwrap_or_else(|p| p.into_inner());
    *c = Durable::of(ledger);
}

fn commit_group(ledger: &mut Ledger, batch: &mut Vec<OpsRequest>, counts: &SharedDurable) {
    let ops: Vec<Op> = batch.iter().flat_map(|r| r.ops.iter().cloned()).collect();
    let outcome = ledger.apply(&ops).and_then(|results| {
        ledger.flush()?;
        Ok(results)
    });
    match outcome {
        Ok(results) => {
            publish(ledger, counts);
            let mut results = results.into_iter();
            for req in batch.drain(..) {
                let mine: Vec<OpResult> = results.by_ref().take(req.ops.len()).collect();
                let _ = req.reply.send(mine);
            }
        }
        Err(e) => fail_all(ledger, batch, &e),
    }
}

fn commit_each(ledger: &mut Ledger, batch: &mut Vec<OpsRequest>, counts: &SharedDurable) {
    for req in batch.drain(..) {
        let mut out = Vec::with_capacity(req.ops.len());
        for op in &req.ops {
            let r = ledger.apply(std::slice::from_ref(op)).and_then(|mut rs| {
                ledger.flush()?;
                Ok(rs.pop())
            });
            out.push(match r {
                Ok(Some(r)) => r,
                Ok(None) => Err(StoreError::Closed),
                Err(e) => Err(copy_err(ledger, &e)),
            });
        }
        publish(ledger, counts);
        let _ = req.reply.send(out);
    }
}

/// A failed batch: nobody is told their write is durable. The caller must
/// treat the outcome as unknown (a Sent serial is not printed), and the next
/// open of the ledger tells what survived.
fn fail_all(ledger: &Ledger, batch: &mut Vec<OpsRequest>, e: &StoreError) {
    tracing::error!(error = %e, "ledger batch failed; no transition in it is acknowledged");
    for req in batch.drain(..) {
        let errs = req.ops.iter().map(|_| Err(copy_err(ledger, e))).collect();
        let _ = req.reply.send(errs);
    }
}

/// StoreError holds a sled::Error, which is not Clone; each caller gets its
/// own description of the same failure.
fn copy_err(ledger: &Ledger, e: &StoreError) -> StoreError {
    StoreError::NotDurable {
        path: ledger.path.clone(),
        why: e.to_string(),
    }
}
