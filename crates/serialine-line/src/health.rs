//! Liveness for the systemd watchdog: each line's verdict loop beats a
//! heartbeat on every turn (its timer turns it at least every quarter read
//! deadline, busy or idle). The watchdog is pinged only while every line has
//! beaten recently, so a stuck line stops the pings and systemd restarts the
//! service, instead of a timer that keeps pinging while the line is stuck.

use serialine_core::AlarmKind;
use serialine_store::CommitterClock;
use serialine_uplink::{Alarm, UplinkHandle};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Heartbeat {
    origin: Instant,
    last_ms: Arc<AtomicU64>,
    /// Set while the line's ledger is stalled ([`watch_ledger`]): the line
    /// is not alive however recently its loop turned.
    held: Arc<AtomicBool>,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Self::new()
    }
}

impl Heartbeat {
    pub fn new() -> Self {
        Heartbeat {
            origin: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
            held: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Whether the line's ledger is stalled ([`watch_ledger`]).
    pub fn is_held(&self) -> bool {
        self.held.load(Ordering::Relaxed)
    }

    pub fn beat(&self) {
        let ms = self.origin.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    pub fn age(&self) -> Duration {
        let now = self.origin.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// Whether every heartbeat is younger than `max_age` and no line's ledger
/// is stalled.
pub fn all_alive(beats: &[Heartbeat], max_age: Duration) -> bool {
    beats.iter().all(|b| b.age() < max_age && !b.is_held())
}

/// How long one committer batch (apply and flush) may take before the line
/// is called stalled. A batch takes milliseconds; a flush that has not
/// returned in this long is a stalled disk or storage engine (CI once saw
/// sled's flush hang for good). A busy line notices anyway (its verdict
/// loop waits on the commit and stops beating); an idle one would not.
pub const LEDGER_STALL: Duration = Duration::from_secs(10);

/// Watches the committer of line `line`: once a batch has taken `limit`,
/// logs an error, raises a `store-error` alarm and holds the heartbeat (so
/// the systemd watchdog is withheld and systemd restarts the service; the
/// ledger's recovery then voids what was in flight). When the batch
/// returns, the hold is released and that is logged too. Runs until
/// aborted.
pub async fn watch_ledger(
    line: String,
    clock: CommitterClock,
    heartbeat: Heartbeat,
    uplink: UplinkHandle,
    limit: Duration,
) {
    let mut tick =
        tokio::time::interval((limit / 4).clamp(Duration::from_millis(5), Duration::from_secs(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stalled = false;
    loop {
        tick.tick().await;
        match (clock.busy_for(), stalled) {
            (Some(busy), false) if busy >= limit => {
                stalled = true;
                heartbeat.held.store(true, Ordering::Relaxed);
                let message = format!(
                    "line {line}: the ledger has not finished writing a batch for {:.0} s (disk or storage engine stalled); no unit can be committed, the watchdog is withheld so systemd restarts the service",
                    busy.as_secs_f64()
                );
                tracing::error!(line = %line, busy_ms = busy.as_millis() as u64, "{message}");
                uplink.raise_alarm(Alarm::new(AlarmKind::StoreError, message));
            }
            (None, true) => {
                stalled = false;
                heartbeat.held.store(false, Ordering::Relaxed);
                tracing::warn!(line = %line, "the ledger writes again after a stall");
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_beat_is_alive_and_a_missing_one_is_not() {
        let hb = Heartbeat::new();
        hb.beat();
        assert!(all_alive(
            std::slice::from_ref(&hb),
            Duration::from_secs(60)
        ));
        assert!(!all_alive(std::slice::from_ref(&hb), Duration::ZERO));
    }
}
