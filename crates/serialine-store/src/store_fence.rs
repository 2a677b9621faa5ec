//! The fence's part of [`Store`]: the reserve hook, the handshake's data and
//! applying upstream's answer. The rules are in `fence.rs`.

use super::{Store, StoreError};
use crate::fence;
use crate::ledger::{Applied, Op};
use crate::pool::Pool;
use serialine_core::{BlockId, Serial};
use std::collections::HashSet;

/// What the line tells upstream at start (`fence/hello`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceHello {
    /// Hex of the ledger's 16-byte identity (empty without a fence).
    pub ledger_id: String,
    pub blocks: Vec<BlockPosition>,
    /// The store holds until upstream answers.
    pub holding: bool,
}

/// One block as the line's ledger and fence see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockPosition {
    pub block_id: BlockId,
    /// Serials of the block that left the pool, per the ledger.
    pub used: u32,
    pub count: u32,
    /// Positions `0..fence` may have left the pool, per the fence.
    pub fence: u32,
}

impl Store {
    /// A fence is configured.
    pub fn has_fence(&self) -> bool {
        self.inner.fence.is_some()
    }

    /// Nothing is reserved, and no block should be requested, until upstream
    /// answers the handshake: see `fence.rs`, point 4.
    pub fn fence_holding(&self) -> bool {
        self.inner
            .fence
            .as_ref()
            .is_some_and(|f| f.lock().unwrap_or_else(|p| p.into_inner()).holding())
    }

    /// The ledger's identity and every block's position, for the handshake.
    pub fn fence_hello(&self) -> Result<FenceHello, StoreError> {
        let (ledger_id, cursors) = self.read(|r| Ok((r.ledger_id()?, r.cursors()?)))?;
        let guard = self
            .inner
            .fence
            .as_ref()
            .map(|f| f.lock().unwrap_or_else(|p| p.into_inner()));
        let blocks = cursors
            .into_iter()
            .map(|(block_id, u)| BlockPosition {
                block_id,
                used: u.used,
                count: u.count,
                fence: guard.as_ref().map_or(0, |g| g.mark(block_id)),
            })
            .collect();
        Ok(FenceHello {
            ledger_id: hex::encode(ledger_id),
            blocks,
            holding: guard.as_ref().is_some_and(|g| g.holding()),
        })
    }

    /// The reserve hook (`fence.rs`, point 1): `taken` leaves the store
    /// only once the fence is above every one of them. On a fence write
    /// failure they go back to the pool and nothing is handed out.
    pub(super) fn fence_hand_out(
        &self,
        pool: &mut Pool,
        taken: Vec<Serial>,
    ) -> Result<Vec<Serial>, StoreError> {
        let Some(f) = &self.inner.fence else {
            return Ok(taken);
        };
        let mut f = f.lock().unwrap_or_else(|p| p.into_inner());
        let outcome = (|| {
            for s in &taken {
                if f.positions.contains_key(s) {
                    continue;
                }
                let Some(&block_id) = pool.reserved.get(s) else {
                    continue;
                };
                if !f.indexed.insert(block_id) {
                    continue;
                }
                let block = self.read(|r| r.open_block(block_id))?;
                let count = u32::try_from(block.serials.len()).unwrap_or(u32::MAX);
                let at: Vec<(Serial, u32)> = block.serials.into_iter().zip(0u32..).collect();
                f.loaded(block_id, count, &at);
            }
            f.before_hand_out(&taken)
        })();
        match outcome {
            Ok(()) => Ok(taken),
            Err(e) => {
                drop(f);
                pool.release(&taken);
                Err(e)
            }
        }
    }

    /// Applies upstream's answer (`fence.rs`, point 3): for each `(block,
    /// seen)`, raises the fence to `seen` durably, then voids (fenced, and
    /// reported) every serial below it that has no record and is not reserved
    /// right now. Blocks this ledger does not hold are ignored. Ends the hold.
    /// Returns how many serials were voided.
    ///
    /// Blocking (it waits for the committer): call it off the async runtime.
    pub fn fence_upstream_blocking(&self, seen: &[(BlockId, u32)]) -> Result<usize, StoreError> {
        let Some(fm) = &self.inner.fence else {
            return Ok(0);
        };
        let mut pool = self.pool();
        let cursors = self.read(|r| r.cursors())?;
        let seen: Vec<(BlockId, u32)> = seen
            .iter()
            .filter_map(|&(b, s)| {
                let (_, u) = cursors.iter().find(|(id, _)| *id == b)?;
                (s > 0).then_some((b, s.min(u.count)))
            })
            .collect();
        fm.lock()
            .unwrap_or_else(|p| p.into_inner())
            .raise_to(&seen)?;
        let mut ops = Vec::new();
        for &(b, s) in &seen {
            let below =
                self.read(|r| fence::unrecorded_below(r, b, s, |x| pool.reserved.contains_key(x)))?;
            ops.extend(
                below
                    .into_iter()
                    .map(|serial| Op::Fence { serial, block: b }),
            );
        }
        let n = ops.len();
        if n > 0 {
            let gone: HashSet<&Serial> = ops
                .iter()
                .filter_map(|op| match op {
                    Op::Fence { serial, .. } => Some(serial),
                    _ => None,
                })
                .collect();
            for window in pool.windows.values_mut() {
                window.retain(|(s, _)| !gone.contains(s));
            }
            {
                let mut f = fm.lock().unwrap_or_else(|p| p.into_inner());
                for s in &gone {
                    f.positions.remove(*s);
                }
            }
            // The pool stays locked until the voids are durable, so no
            // reservation races them.
            let results = self
                .send_request(ops)?
                .blocking_recv()
                .map_err(|_| StoreError::Closed)?;
            for r in results {
                match r? {
                    Applied::Moved { .. } => {}
                    other => return Err(self.unexpected(other)),
                }
            }
            tracing::warn!(
                voided = n,
                "fence: upstream has seen serials this ledger does not remember; they are voided and reported, never reserved"
            );
        }
        fm.lock().unwrap_or_else(|p| p.into_inner()).confirmed = true;
        Ok(n)
    }
}
