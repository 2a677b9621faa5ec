//! Nonces of signed commands, so that a captured command cannot be replayed,
//! not even after a restart.
//!
//! They live in their own `nonces` tree, outside the atomic batches of the
//! serial lifecycle: a nonce shares no invariant with serials, blocks or the
//! outbox. They are still written only by the committer thread (the ledger's
//! single write path) and answered only after a flush, so a command runs only
//! once its nonce is durable. Each entry carries the time after which the
//! command it came with is refused as stale anyway; expired entries are
//! removed on every write, which keeps the tree as small as the commands of
//! one freshness window.

use crate::error::StoreError;
use crate::ledger::Ledger;
use tokio::sync::oneshot;

const TREE: &str = "nonces";

/// A nonce to check and record, answered `Ok(true)` when it was new and is
/// now durable, `Ok(false)` when it was already recorded and not expired.
pub(crate) struct NonceRequest {
    pub nonce: Vec<u8>,
    pub expires_ms: u64,
    pub reply: oneshot::Sender<Result<bool, StoreError>>,
}

impl Ledger {
    /// Checks and records one nonce (not durable until [`Ledger::flush`]),
    /// pruning expired entries first.
    pub(crate) fn record_nonce(
        &self,
        nonce: &[u8],
        expires_ms: u64,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let tree = self.side_tree(TREE)?;
        let io = |e| StoreError::io(&self.path)(e);
        let mut expired = Vec::new();
        for kv in tree.iter() {
            let (k, v) = kv.map_err(io)?;
            // An unreadable expiry is treated as expired: the worst case is
            // that one replay window is forgotten, never that the tree grows.
            let exp = <[u8; 8]>::try_from(v.as_ref()).map_or(0, u64::from_be_bytes);
            if exp < now_ms {
                expired.push(k);
            }
        }
        for k in expired {
            tree.remove(k).map_err(io)?;
        }
        if tree.contains_key(nonce).map_err(io)? {
            return Ok(false);
        }
        tree.insert(nonce, &expires_ms.to_be_bytes()).map_err(io)?;
        Ok(true)
    }

    /// Recorded nonces, for tests and audits.
    pub(crate) fn nonce_count(&self) -> Result<usize, StoreError> {
        Ok(self.side_tree(TREE)?.len())
    }
}

/// Applies queued nonce requests with one flush, then answers them.
pub(crate) fn commit_nonces(ledger: &Ledger, reqs: &mut Vec<NonceRequest>) {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let results: Vec<Result<bool, StoreError>> = reqs
        .iter()
        .map(|r| ledger.record_nonce(&r.nonce, r.expires_ms, now_ms))
        .collect();
    let flushed = ledger.flush();
    for (req, r) in reqs.drain(..).zip(results) {
        let r = match (&flushed, r) {
            (Ok(()), r) => r,
            // Not durable: the caller must refuse the command.
            (Err(e), _) => Err(StoreError::NotDurable {
                path: ledger.path.clone(),
                why: e.to_string(),
            }),
        };
        let _ = req.reply.send(r);
    }
}
