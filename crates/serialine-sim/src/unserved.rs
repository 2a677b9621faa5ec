//! A device that accepts TCP connections before it serves them: a marker
//! still booting behind its network interface, or a port forwarder whose
//! target is down. For a period that starts with the first connection, every
//! connection accepted is dropped at once or held open without an answer;
//! after it, the simulator serves as usual. It counts the connections it did
//! not serve, which tells how hard a client hammered it.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpStream;

/// What happens to a connection accepted during the period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unserved {
    /// Closed right after the accept.
    #[default]
    Drop,
    /// Held open, every byte read and nothing answered, until the client
    /// closes it.
    Silent,
}

/// The period during which connections are accepted but not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnservedPeriod {
    pub how: Unserved,
    /// From the first connection accepted. Counted from there, not from the
    /// simulator's start, so the client's own start-up time does not eat it.
    pub period: Duration,
}

/// Decides, connection by connection, whether to serve, and counts those it
/// did not.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    period: Option<UnservedPeriod>,
    first: Option<Instant>,
    unserved: u64,
}

impl Gate {
    pub(crate) fn new(period: Option<UnservedPeriod>) -> Self {
        Gate {
            period,
            first: None,
            unserved: 0,
        }
    }

    /// A connection was just accepted: `Some(how)` when it is not to be
    /// served.
    pub(crate) fn admit(&mut self) -> Option<Unserved> {
        let p = self.period?;
        let first = *self.first.get_or_insert_with(Instant::now);
        if first.elapsed() < p.period {
            self.unserved += 1;
            Some(p.how)
        } else {
            None
        }
    }

    /// Connections accepted and not served so far.
    pub(crate) fn unserved(&self) -> u64 {
        self.unserved
    }
}

/// Deals with a connection that is not served: closes it, or swallows what
/// the client sends until it gives up.
pub(crate) async fn turn_away(mut stream: TcpStream, how: Unserved) {
    match how {
        Unserved::Drop => drop(stream),
        Unserved::Silent => {
            let mut sink = [0u8; 512];
            while let Ok(n) = stream.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_period_serves_everything() {
        let mut g = Gate::new(None);
        assert_eq!(g.admit(), None);
        assert_eq!(g.unserved(), 0);
    }

    #[test]
    fn the_period_starts_with_the_first_connection() {
        let mut g = Gate::new(Some(UnservedPeriod {
            how: Unserved::Silent,
            period: Duration::from_secs(3600),
        }));
        assert_eq!(g.admit(), Some(Unserved::Silent));
        assert_eq!(g.admit(), Some(Unserved::Silent));
        assert_eq!(g.unserved(), 2);
        let mut g = Gate::new(Some(UnservedPeriod {
            how: Unserved::Drop,
            period: Duration::ZERO,
        }));
        assert_eq!(g.admit(), None);
        assert_eq!(g.unserved(), 0);
    }
}
