//! Capped exponential backoff for reconnects.
//!
//! Kept free of any clock so it can be tested without sleeping: the caller
//! asks for the next delay and does the waiting itself.

use std::time::Duration;

/// Capped exponential backoff: `initial`, then ×`factor` per failure, never
/// more than `cap`; [`Backoff::reset`] after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    factor: u32,
    cap: Duration,
    next: Duration,
}

impl Default for Backoff {
    /// 100 ms, ×2, capped at 5 s: a flapping link is retried quickly at
    /// first, and a dead device costs one attempt every 5 s.
    fn default() -> Self {
        Backoff::new(Duration::from_millis(100), 2, Duration::from_secs(5))
    }
}

impl Backoff {
    /// A factor below 1 is taken as 1 (constant delay) rather than shrinking;
    /// a zero initial delay as 1 ms, since zero would never grow and would
    /// retry in a tight loop; a cap below the initial delay as the initial.
    pub fn new(initial: Duration, factor: u32, cap: Duration) -> Self {
        let initial = initial.max(Duration::from_millis(1));
        let cap = cap.max(initial);
        Backoff {
            initial,
            factor: factor.max(1),
            cap,
            next: initial,
        }
    }

    /// The delay to wait before the next attempt; grows the one after.
    pub fn next_delay(&mut self) -> Duration {
        let now = self.next;
        self.next = self
            .next
            .checked_mul(self.factor)
            .map_or(self.cap, |d| d.min(self.cap));
        now
    }

    /// Back to the initial delay, after a successful connect.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_delays_are_raised_not_looped() {
        let mut z = Backoff::new(Duration::ZERO, 2, Duration::ZERO);
        assert_eq!(z.next_delay(), Duration::from_millis(1));
        assert_eq!(z.next_delay(), Duration::from_millis(1));
    }

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::default();
        let ms: Vec<u128> = (0..9).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn never_overflows() {
        let mut b = Backoff::new(Duration::from_secs(1), u32::MAX, Duration::MAX);
        for _ in 0..100 {
            assert!(b.next_delay() <= Duration::MAX);
        }
        let mut c = Backoff::new(Duration::from_millis(7), 0, Duration::from_secs(1));
        assert_eq!(c.next_delay(), c.next_delay());
    }
}
