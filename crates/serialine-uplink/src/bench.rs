//! Outbox drain measurement, shared by the `drain_rate` example and
//! `serialine-lab bench`: fill a ledger's outbox with outcomes, then time the
//! uplink draining it to a broker until the ledger has recorded upstream's
//! acknowledgment of every event.

use crate::{start, UplinkConfig, UplinkError};
use serialine_core::{RejectReason, Serial, UnitState};
use serialine_store::{Store, StoreError, Transition};
use std::time::{Duration, Instant};

/// Units taken through the lifecycle per ledger round trip while filling.
const FILL_CHUNK: usize = 1_000;

#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    #[error("ledger: {0}")]
    Store(#[from] StoreError),
    #[error("uplink: {0}")]
    Uplink(#[from] UplinkError),
    #[error("the ledger ran out of serials after {filled} of {wanted} outcomes: add blocks first")]
    OutOfSerials { filled: usize, wanted: usize },
    #[error("upstream acknowledged {acked} of {wanted} events within {limit:?}")]
    Timeout {
        acked: u64,
        wanted: u64,
        limit: Duration,
    },
}

/// Puts `n` outcomes in the outbox: `n` serials from the ledger's blocks go
/// through a durable `Sent` to a verdict, every 10th rejected (no-read), the
/// others committed. The ledger must hold `n` available serials. Returns the
/// outcomes in outbox order.
pub async fn fill_outbox(store: &Store, n: usize) -> Result<Vec<(Serial, UnitState)>, DrainError> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let filled = out.len();
        let serials = store.reserve((n - filled).min(FILL_CHUNK))?;
        if serials.is_empty() {
            return Err(DrainError::OutOfSerials { filled, wanted: n });
        }
        let sent: Vec<_> = serials
            .iter()
            .map(|s| Transition::new(s.clone(), UnitState::Sent))
            .collect();
        for r in store.apply(&sent).await {
            r?;
        }
        let verdicts: Vec<_> = serials
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let to = if (filled + i) % 10 == 9 {
                    UnitState::Rejected(RejectReason::NoRead)
                } else {
                    UnitState::Committed
                };
                Transition::new(s.clone(), to)
            })
            .collect();
        for r in store.apply(&verdicts).await {
            r?;
        }
        out.extend(verdicts.into_iter().map(|t| (t.serial, t.to)));
    }
    Ok(out)
}

/// Starts an uplink on `store` and returns the time from its start until the
/// ledger has recorded upstream's acknowledgment of `n` events (synced plus
/// reported), within `limit`. Block prefetch is turned off in `cfg`, so the
/// figure is the outbox's alone. The uplink is aborted before returning.
pub async fn time_drain(
    mut cfg: UplinkConfig,
    store: &Store,
    n: u64,
    limit: Duration,
) -> Result<Duration, DrainError> {
    cfg.prefetch.low_water_serials = 0;
    cfg.prefetch.low_water_minutes = 0.0;
    let acked = || {
        let c = store.counts();
        c.synced + c.reported
    };
    let t0 = Instant::now();
    let (uplink, _commands) = start(cfg, store.clone())?;
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    let result = loop {
        if acked() >= n {
            break Ok(t0.elapsed());
        }
        if t0.elapsed() > limit {
            break Err(DrainError::Timeout {
                acked: acked(),
                wanted: n,
                limit,
            });
        }
        tick.tick().await;
    };
    uplink.abort();
    result
}
