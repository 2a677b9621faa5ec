//! What a line did: live progress for operators, and the final report.

use hdrhistogram::Histogram;
use serialine_core::RejectReason;
use std::collections::BTreeMap;
use std::time::Duration;

/// Live counters, published after every durable verdict batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    pub sent: u64,
    pub committed: u64,
    pub rejected: u64,
    pub voided: u64,
    pub duplicates: u64,
    pub foreign: u64,
    /// Reject signals for the pack in front of the camera: reads of a code
    /// not in flight (duplicate or foreign), which decide no unit.
    pub pack_rejects: u64,
    pub paused: bool,
    /// Added latency per unit so far, p50 and p99, in microseconds.
    pub latency_p50_us: u64,
    pub latency_p99_us: u64,
    /// The marking device (printer, laser, label printer) then the camera,
    /// each in the state its driver last reported.
    pub devices: Vec<DeviceHealth>,
}

/// What a device's driver last reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceState {
    /// Connected and ready (the driver said so, or has said nothing else).
    #[default]
    Ok,
    /// The driver reported a fault (link dropped, device error) and has not
    /// said `Ready` since.
    Faulted,
    /// The driver ended: nothing more will come from it in this job.
    Stopped,
}

impl DeviceState {
    pub fn as_str(&self) -> &'static str {
        match self {
            DeviceState::Ok => "ok",
            DeviceState::Faulted => "faulted",
            DeviceState::Stopped => "stopped",
        }
    }
}

/// One device's state and when it entered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceHealth {
    pub name: String,
    pub state: DeviceState,
    /// When `state` was entered, ms since the Unix epoch (UTC).
    pub since_ms: u64,
    /// The fault's reason, while faulted or stopped.
    pub detail: Option<String>,
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Progress {
    pub fn done(&self) -> u64 {
        self.committed + self.rejected + self.voided
    }
}

/// The end-of-job account of one line.
#[derive(Debug, Clone)]
pub struct LineReport {
    pub line: String,
    pub sent: u64,
    pub committed: u64,
    pub rejected: BTreeMap<&'static str, u64>,
    pub voided: u64,
    pub duplicates: u64,
    pub foreign: u64,
    /// Reject signals for the pack in front of the camera (see
    /// [`Progress::pack_rejects`]); no unit in the ledger changes for them.
    pub pack_rejects: u64,
    /// Time the daemon adds per unit, in microseconds: making `Sent` durable
    /// before the code goes out, plus making the verdict durable after the
    /// camera read.
    pub added_latency_us: Histogram<u64>,
    pub elapsed: Duration,
    /// What each packaging level did, from cases up (none: no aggregation).
    pub levels: Vec<crate::aggregation::LevelReport>,
}

impl LineReport {
    pub(crate) fn new(line: &str) -> Self {
        LineReport {
            line: line.to_string(),
            sent: 0,
            committed: 0,
            rejected: BTreeMap::new(),
            voided: 0,
            duplicates: 0,
            foreign: 0,
            pack_rejects: 0,
            // 1 µs .. 1 h at 3 significant digits; the bounds are constants.
            added_latency_us: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("constant histogram bounds are valid"),
            elapsed: Duration::ZERO,
            levels: Vec::new(),
        }
    }

    pub(crate) fn count_reject(&mut self, reason: RejectReason) {
        *self.rejected.entry(reason.as_str()).or_default() += 1;
    }

    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }

    pub fn units_per_sec(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            (self.committed + self.rejected_total()) as f64 / s
        } else {
            0.0
        }
    }

    pub fn latency_us(&self, quantile: f64) -> u64 {
        self.added_latency_us.value_at_quantile(quantile)
    }
}
