//! Group commit. Callers hand operations to one committer thread; it applies
//! everything queued so far in one sled transaction, makes it durable with one
//! flush, and only then answers each caller. Durability costs one fsync per
//! batch, not per unit, and no caller ever hears "done" for a write that a
//! power cut could still take back.

use crate::error::StoreError;
use crate::ledger::{Applied, Ledger, Op};
use crate::record::Counts;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

/// How transitions are made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CommitMode {
    /// Everything queued while the previous flush ran shares the next flush.
    #[default]
    Group,
    /// One transaction and one flush per operation: the naive design, kept as
    /// the baseline that benchmarks compare against.
    PerTransition,
}

pub(crate) type OpResult = Result<Applied, StoreError>;

pub(crate) struct Request {
    pub ops: Vec<Op>,
    pub reply: oneshot::Sender<Vec<OpResult>>,
}

/// Counters as of the last durable batch, for readers on other threads.
pub(crate) type SharedCounts = Arc<Mutex<Counts>>;

pub(crate) fn spawn(
    ledger: Ledger,
    mode: CommitMode,
    max_batch: usize,
    counts: SharedCounts,
) -> std::io::Result<(mpsc::UnboundedSender<Request>, std::thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::unbounded_channel();
    let handle = std::thread::Builder::new()
        .name("serialine-committer".into())
        .spawn(move || run(ledger, rx, mode, max_batch.max(1), counts))?;
    Ok((tx, handle))
}

fn run(
    mut ledger: Ledger,
    mut rx: mpsc::UnboundedReceiver<Request>,
    mode: CommitMode,
    max_batch: usize,
    counts: SharedCounts,
) {
    let mut batch: Vec<Request> = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        let mut queued = first.ops.len();
        batch.push(first);
        while queued < max_batch {
            match rx.try_recv() {
                Ok(req) => {
                    queued += req.ops.len();
                    batch.push(req);
                }
                Err(_) => break,
            }
        }
        match mode {
            CommitMode::Group => commit_group(&mut ledger, &mut batch, &counts),
            CommitMode::PerTransition => commit_each(&mut ledger, &mut batch, &counts),
        }
    }
    // Every handle is gone: make whatever is applied durable before exiting.
    if let Err(e) = ledger.flush() {
        tracing::error!(error = %e, "final ledger flush failed");
    }
}

/// Readers must see the counters of a batch by the time its callers hear it is
/// durable, so this runs before any reply.
fn publish(ledger: &Ledger, counts: &SharedCounts) {
    let mut c = counts.lock().unwrap_or_else(|p| p.into_inner());
    *c = ledger.counts;
}

fn commit_group(ledger: &mut Ledger, batch: &mut Vec<Request>, counts: &SharedCounts) {
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

fn commit_each(ledger: &mut Ledger, batch: &mut Vec<Request>, counts: &SharedCounts) {
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
fn fail_all(ledger: &Ledger, batch: &mut Vec<Request>, e: &StoreError) {
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
