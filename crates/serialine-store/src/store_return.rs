//! Returning unused serials upstream (Open-SCS `SNReturnUnallocated`):
//! at a job's end, or on an operator's command, the serials still buffered
//! for a product go back upstream, which may issue them elsewhere, and this
//! line never sends them.
//!
//! Crash safety, block by block: a block's return is one op of the ledger
//! (`Op::Return`): its serials' Returned records, its cursor and the outbox
//! events naming them are durable together or not at all, and the fence is
//! raised over them first, so a restored older copy of the ledger voids
//! them too (`fence.rs`). A return cut short by a crash leaves some blocks
//! returned and others buffered; its intent, recorded before the first
//! block, says so at the next start ([`Store::unfinished_return`]) so the
//! service finishes it before a job can use those serials.

use super::{Store, StoreError};
use crate::ledger::{Applied, Op};
use serialine_core::{Gtin, Serial};
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// What a return covers: the serials buffered for `gtin` (every product's
/// with `None`), counted in job `job`'s report (0: no job).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReturnRequest {
    pub gtin: Option<String>,
    pub job: u32,
}

/// What a return did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReturnReport {
    /// Blocks whose serials went back (wholly or in part).
    pub blocks: u32,
    pub serials: u64,
    /// Outbox events naming them (one per block range).
    pub events: u32,
    /// Serials reserved by a running job when the return ran: kept.
    pub kept_reserved: u64,
    pub took: Duration,
}

impl Store {
    /// Gives every serial buffered for the request's product back
    /// upstream, block by block (see the module). Holds the pool
    /// throughout, so no reservation races it; serials reserved already
    /// are kept. Blocks the calling thread: off the async runtime, or
    /// through [`Store::return_unused`].
    pub fn return_unused_blocking(&self, req: &ReturnRequest) -> Result<ReturnReport, StoreError> {
        self.return_unused_until(req, None)
    }

    /// Fault injection for tests: returns at most `stop_after` blocks and
    /// leaves the intent behind, as a crash after them would.
    #[doc(hidden)]
    pub fn return_unused_until(
        &self,
        req: &ReturnRequest,
        stop_after: Option<u32>,
    ) -> Result<ReturnReport, StoreError> {
        let started = Instant::now();
        // A serial without a record may still have been sent in a history
        // a restored ledger lost: only upstream's answer tells.
        if self.fence_holding() {
            return Err(StoreError::ReturnWhileFenced {
                path: self.path().to_path_buf(),
            });
        }
        let gtin = match &req.gtin {
            Some(g) => Some(Gtin::parse(g).map_err(|e| StoreError::Corrupt {
                path: self.path().to_path_buf(),
                what: format!("return of unused serials names GTIN {g:?}: {e}"),
            })?),
            None => None,
        };
        let intent = postcard::to_stdvec(req).map_err(|e| StoreError::Corrupt {
            path: self.path().to_path_buf(),
            what: format!("return intent does not encode: {e}"),
        })?;
        self.expect_intent(self.submit_one_blocking(Op::ReturnIntent {
            intent: Some(intent),
        })?)?;
        let mut report = ReturnReport::default();
        let mut pool = self.pool();
        let blocks = self.read(|r| r.blocks_with_serials())?;
        for (block_id, _) in blocks {
            if stop_after.is_some_and(|n| report.blocks >= n) {
                report.took = started.elapsed();
                return Ok(report);
            }
            let block = self.read(|r| r.open_block(block_id))?;
            pool.gtins.insert(block_id, block.gtin);
            if gtin.is_some_and(|g| g != block.gtin) {
                continue;
            }
            let mut serials: Vec<Serial> = Vec::new();
            let mut last_pos = 0u32;
            for (serial, pos) in block.serials.into_iter().zip(0u32..) {
                if pool.reserved.contains_key(&serial) {
                    report.kept_reserved += 1;
                    continue;
                }
                if self.read(|r| r.has_record(&serial))? {
                    continue;
                }
                last_pos = pos;
                serials.push(serial);
            }
            if serials.is_empty() {
                continue;
            }
            // Out of the window first: the pool stays locked until the
            // return is durable, so nothing can reserve them meanwhile.
            let gone: HashSet<&Serial> = serials.iter().collect();
            for window in pool.windows.values_mut() {
                window.retain(|(s, _)| !gone.contains(s));
            }
            // The fence over them before they leave: a restored older
            // ledger must not hand them out either.
            if let Some(f) = &self.inner.fence {
                let mut f = f.lock().unwrap_or_else(|p| p.into_inner());
                f.raise_to(&[(block_id, last_pos + 1)])?;
                for s in &gone {
                    f.positions.remove(*s);
                }
            }
            let n = serials.len() as u64;
            match self.submit_one_blocking(Op::Return {
                block: block_id,
                serials,
                job: req.job,
            })? {
                Applied::Returned { events, .. } => report.events += events,
                other => return Err(self.unexpected(other)),
            }
            report.blocks += 1;
            report.serials += n;
            tracing::info!(
                line = %self.line_id(),
                block = block_id,
                serials = n,
                returned_so_far = report.serials,
                "returned {n} unused serials of block {block_id} upstream"
            );
        }
        drop(pool);
        self.expect_intent(self.submit_one_blocking(Op::ReturnIntent { intent: None })?)?;
        report.took = started.elapsed();
        Ok(report)
    }

    /// [`Store::return_unused_blocking`] on a blocking thread.
    pub async fn return_unused(&self, req: ReturnRequest) -> Result<ReturnReport, StoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.return_unused_blocking(&req))
            .await
            .map_err(|_| StoreError::Closed)?
    }

    /// A return a crash cut short: run it again to finish it.
    pub fn unfinished_return(&self) -> Result<Option<ReturnRequest>, StoreError> {
        let Some(bytes) = self.read(|r| r.return_intent())? else {
            return Ok(None);
        };
        postcard::from_bytes(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                path: self.path().to_path_buf(),
                what: format!("return intent unreadable: {e}"),
            })
    }

    fn expect_intent(&self, a: Applied) -> Result<(), StoreError> {
        match a {
            Applied::Intent => Ok(()),
            other => Err(self.unexpected(other)),
        }
    }
}
