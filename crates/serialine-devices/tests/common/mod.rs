//! Helpers shared by the network device drivers' tests (`label`, `laser`):
//! both drivers reconnect with the same backoff, and their tests check it
//! the same way against a device that accepts and does not answer.

use std::time::Duration;

use serialine_devices::{PrinterEvent, PrinterHandle};
use serialine_sim::unserved::{Unserved, UnservedPeriod};
use tokio::time::timeout;

/// How long a test waits for any one event.
pub const WAIT: Duration = Duration::from_secs(5);

/// The driver's next event, within [`WAIT`].
pub async fn next(h: &mut PrinterHandle) -> PrinterEvent {
    match timeout(WAIT, h.events.recv()).await {
        Ok(Some(ev)) => ev,
        Ok(None) => panic!("driver {} ended its event stream", h.name),
        Err(_) => panic!("no event from driver {} within {WAIT:?}", h.name),
    }
}

/// Most connections a client can open within `period` (counted from its
/// first) when each failed attempt costs `per_attempt` (waiting for an
/// answer that never comes) and it then backs off from `initial`, doubling
/// up to `cap`. The driver can only open fewer: every gap it leaves is at
/// least that long.
pub fn backoff_bound(
    initial: Duration,
    cap: Duration,
    per_attempt: Duration,
    period: Duration,
) -> u64 {
    let (mut t, mut delay, mut n) = (Duration::ZERO, initial, 0);
    while t < period {
        n += 1;
        t += per_attempt + delay;
        delay = (delay * 2).min(cap);
    }
    n
}

/// A device that accepts connections and then drops them or stays silent
/// (`how`) for `period`, and the driver's reconnect settings.
pub struct Unanswered {
    pub how: Unserved,
    pub period: Duration,
    pub initial: Duration,
    pub cap: Duration,
    pub request_timeout: Duration,
}

impl Unanswered {
    /// Unanswered for 2 s; the driver reconnecting after 50 ms, doubling
    /// up to 1 s, and waiting `request_timeout` for an answer.
    pub fn new(how: Unserved, request_timeout: Duration) -> Unanswered {
        Unanswered {
            how,
            period: Duration::from_secs(2),
            initial: Duration::from_millis(50),
            cap: Duration::from_secs(1),
            request_timeout,
        }
    }

    /// The simulator's unserved period.
    pub fn unserved(&self) -> UnservedPeriod {
        UnservedPeriod {
            how: self.how,
            period: self.period,
        }
    }

    /// Counts the driver's Faults (none with a unit: nothing was sent)
    /// until it is Ready.
    pub async fn faults_until_ready(h: &mut PrinterHandle) -> u64 {
        let mut faults = 0u64;
        loop {
            match next(h).await {
                PrinterEvent::Fault { unknown, .. } => {
                    assert!(unknown.is_empty(), "no unit was sent");
                    faults += 1;
                }
                PrinterEvent::Ready => break,
                other => panic!("expected Faults then Ready, got {other:?}"),
            }
        }
        faults
    }

    /// The driver retried during the period, no faster than its backoff
    /// allows, with one Fault per connection lost (`unserved` of them) and
    /// then one connection that is served (`connections` in all).
    pub fn assert_backed_off(&self, unserved: u64, faults: u64, connections: u64) {
        let (period, initial, cap) = (self.period, self.initial, self.cap);
        // A dropped connection fails at once; a silent one after the timeout.
        let per_attempt = match self.how {
            Unserved::Drop => Duration::ZERO,
            Unserved::Silent => self.request_timeout,
        };
        let bound = backoff_bound(initial, cap, per_attempt, period);
        let fixed = backoff_bound(initial, initial, per_attempt, period);
        assert!(
            unserved >= 2,
            "the driver retried during the period: {unserved} connection(s)"
        );
        assert!(
            unserved <= bound,
            "{unserved} connections in {period:?}: more than a backoff from {initial:?} \
             to {cap:?} allows ({bound}); always waiting {initial:?} gives about {fixed}"
        );
        assert_eq!(faults, unserved, "one Fault per connection lost");
        assert_eq!(connections, unserved + 1, "then one that is served");
    }
}
