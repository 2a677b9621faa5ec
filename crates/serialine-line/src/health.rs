//! Liveness for the systemd watchdog: each line's verdict loop beats a
//! heartbeat on every turn (its timer turns it at least every quarter read
//! deadline, busy or idle). The watchdog is pinged only while every line has
//! beaten recently, so a stuck line stops the pings and systemd restarts the
//! service, instead of a timer that keeps pinging while the line is stuck.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Heartbeat {
    origin: Instant,
    last_ms: Arc<AtomicU64>,
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
        }
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

/// Whether every heartbeat is younger than `max_age`.
pub fn all_alive(beats: &[Heartbeat], max_age: Duration) -> bool {
    beats.iter().all(|b| b.age() < max_age)
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
