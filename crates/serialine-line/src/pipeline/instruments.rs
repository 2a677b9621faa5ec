//! The pipeline's Prometheus instruments (through the `metrics` facade), made
//! once per job with the line as their `line` label so the hot path only
//! bumps a handle. Without an installed recorder every handle is a no-op.
//! Names and help texts: [`crate::prometheus`].

use super::DeviceState;
use crate::prometheus::names;
use metrics::{Counter, Gauge, Histogram};
use serialine_core::RejectReason;

/// The devices of a job, by position: the marking device, then the camera.
const DEVICE_ROLES: [&str; 2] = ["marker", "camera"];
const STATES: [DeviceState; 3] = [DeviceState::Ok, DeviceState::Faulted, DeviceState::Stopped];
const REASONS: [RejectReason; 5] = [
    RejectReason::Mismatch,
    RejectReason::NoRead,
    RejectReason::LowGrade,
    RejectReason::Duplicate,
    RejectReason::DeviceFault,
];

pub(crate) struct Instruments {
    pub sent: Counter,
    pub committed: Counter,
    pub rejected: Counter,
    pub voided: Counter,
    rejects: [Counter; 5],
    pub added_latency: Histogram,
    /// Per device role, one gauge per state (1 for the state it is in).
    device_state: [[Gauge; 3]; 2],
    reconnects: [Counter; 2],
}

impl Instruments {
    pub fn new(line: &str) -> Instruments {
        let outcome = |o: &'static str| metrics::counter!(names::UNITS, "line" => line.to_string(), "outcome" => o);
        Instruments {
            sent: outcome("sent"),
            committed: outcome("committed"),
            rejected: outcome("rejected"),
            voided: outcome("voided"),
            rejects: REASONS.map(|r| {
                metrics::counter!(names::REJECTS, "line" => line.to_string(), "reason" => r.as_str())
            }),
            added_latency: metrics::histogram!(names::ADDED_LATENCY, "line" => line.to_string()),
            device_state: DEVICE_ROLES.map(|device| {
                STATES.map(|s| {
                    metrics::gauge!(
                        names::DEVICE_STATE,
                        "line" => line.to_string(),
                        "device" => device,
                        "state" => s.as_str()
                    )
                })
            }),
            reconnects: DEVICE_ROLES.map(|device| {
                metrics::counter!(
                    names::DEVICE_RECONNECTS,
                    "line" => line.to_string(),
                    "device" => device
                )
            }),
        }
    }

    pub fn reject(&self, reason: RejectReason) {
        self.rejected.increment(1);
        if let Some(i) = REASONS.iter().position(|r| *r == reason) {
            self.rejects[i].increment(1);
        }
    }

    /// Device `index` (0 the marking device, 1 the camera) went from `from`
    /// to `to`; a fault cleared by the driver's `Ready` is a reconnect.
    pub fn device_state(&self, index: usize, from: Option<DeviceState>, to: DeviceState) {
        let Some(gauges) = self.device_state.get(index) else {
            return;
        };
        for (g, s) in gauges.iter().zip(STATES) {
            g.set(if s == to { 1.0 } else { 0.0 });
        }
        if from == Some(DeviceState::Faulted) && to == DeviceState::Ok {
            if let Some(c) = self.reconnects.get(index) {
                c.increment(1);
            }
        }
    }
}
