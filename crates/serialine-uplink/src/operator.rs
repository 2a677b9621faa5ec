//! Operator topics: retained `status`, periodic `metrics`, `alarms`.
//!
//! The pipeline hands snapshots to the uplink through watch channels and
//! alarms through a bounded queue, so a call never waits for the broker: with
//! the broker down, status and metrics coalesce to the latest value and alarms
//! queue (the oldest are dropped past [`ALARM_QUEUE`], with a log line).

use crate::conn::{publish, Link};
use crate::wire::now_ms;
use crate::UplinkConfig;
use rumqttc::{AsyncClient, QoS};
use serde::{Deserialize, Serialize};
use serialine_core::AlarmKind;
use serialine_store::{Counts, Store};
use std::collections::VecDeque;
use tokio::sync::{mpsc, watch};

/// Alarms kept while the broker is unreachable.
pub const ALARM_QUEUE: usize = 1_000;

/// Where the line stands, as the operator sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LineState {
    Running,
    Paused,
    #[default]
    Stopped,
    Faulted,
}

/// The job being run, as shown on `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobInfo {
    pub gtin: String,
    pub lot: String,
    pub expiry: String,
    pub quantity: u64,
}

impl From<&serialine_core::Job> for JobInfo {
    fn from(j: &serialine_core::Job) -> Self {
        JobInfo {
            gtin: j.gtin.as_string(),
            lot: j.lot.as_str().to_string(),
            expiry: j.expiry.as_string(),
            quantity: j.quantity,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceStatus {
    pub name: String,
    /// `ok`, `faulted` (the driver reported a fault and not `Ready` since)
    /// or `stopped` (the driver ended).
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// When the device entered `state`, ms since the Unix epoch (UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<u64>,
}

/// What the pipeline knows about the line; the uplink adds the ledger's
/// counts, buffer depth and outbox depth when it publishes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StatusSnapshot {
    pub state: LineState,
    pub job: Option<JobInfo>,
    pub devices: Vec<DeviceStatus>,
}

/// Rates and latencies the pipeline measures.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Metrics {
    pub units_per_minute: f64,
    pub rejects_per_minute: f64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
}

/// An operator alarm (`alarms` topic, not retained).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alarm {
    /// Serialised as its wire name, e.g. `"forged-block"`.
    pub kind: AlarmKind,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    pub at_ms: u64,
}

impl Alarm {
    pub fn new(kind: AlarmKind, message: impl Into<String>) -> Alarm {
        Alarm {
            kind,
            message: message.into(),
            serial: None,
            at_ms: now_ms(),
        }
    }

    pub fn with_serial(mut self, serial: impl Into<String>) -> Alarm {
        self.serial = Some(serial.into());
        self
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BufferDepth {
    pub serials: u64,
    /// At the last measured rate; absent while the rate is unknown or zero.
    pub minutes: Option<f64>,
}

/// `status` payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusPayload {
    pub state: LineState,
    pub job: Option<JobInfo>,
    pub counts: Counts,
    pub buffer: BufferDepth,
    pub outbox_depth: usize,
    pub devices: Vec<DeviceStatus>,
    pub at_ms: u64,
}

/// `metrics` payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsPayload {
    #[serde(flatten)]
    pub metrics: Metrics,
    pub buffer: BufferDepth,
    pub outbox_depth: usize,
    pub at_ms: u64,
}

/// The buffer of the product being made (of every product while none is
/// set): only those serials can feed the running job, so only they are
/// minutes of production.
pub(crate) fn buffer_depth(
    store: &Store,
    units_per_minute: f64,
    product: Option<&serialine_core::Gtin>,
) -> BufferDepth {
    let serials = match product {
        Some(g) => store.buffer_depth_for(g).unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot read the product's buffer depth");
            0
        }),
        None => store.buffer_depth(),
    };
    BufferDepth {
        serials,
        minutes: (units_per_minute > 0.0).then(|| serials as f64 / units_per_minute),
    }
}

pub(crate) struct Operator {
    pub cfg: UplinkConfig,
    pub store: Store,
    pub client: AsyncClient,
    pub link: watch::Receiver<Link>,
    pub status: watch::Receiver<StatusSnapshot>,
    pub metrics: watch::Receiver<Metrics>,
    pub alarms: mpsc::Receiver<Alarm>,
    /// Local observers' copy of every alarm taken here.
    pub tap: tokio::sync::broadcast::Sender<Alarm>,
    /// The product being made: `buffer` counts its serials.
    pub product: watch::Receiver<Option<serialine_core::Gtin>>,
}

impl Operator {
    pub async fn run(mut self) {
        let mut pending: VecDeque<Alarm> = VecDeque::new();
        let mut dropped = 0u64;
        let line = self.cfg.line.clone();
        let mut tick = tokio::time::interval(self.cfg.metrics_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut send_status = false;
            let mut send_metrics = false;
            tokio::select! {
                r = self.link.changed() => {
                    if r.is_err() { return; }
                    // A new connection: the retained status must replace the
                    // last will's "offline" at once.
                    send_status = true;
                }
                r = self.status.changed() => {
                    if r.is_err() { return; }
                    send_status = true;
                }
                a = self.alarms.recv() => {
                    let Some(a) = a else { return; };
                    tracing::warn!(kind = %a.kind, serial = ?a.serial, "alarm: {}", a.message);
                    // Counted here, where every alarm of the line passes.
                    metrics::counter!(
                        crate::prom_metrics::ALARMS,
                        "line" => line.clone(),
                        "kind" => a.kind.as_str()
                    )
                    .increment(1);
                    // No observer is no error.
                    let _ = self.tap.send(a.clone());
                    if pending.len() >= ALARM_QUEUE {
                        pending.pop_front();
                        dropped += 1;
                        tracing::error!(dropped, "alarm queue full while the broker is unreachable; oldest alarm dropped");
                    }
                    pending.push_back(a);
                }
                _ = tick.tick() => {
                    send_status = true;
                    send_metrics = true;
                }
            }
            if !self.link.borrow().ready {
                continue;
            }
            while let Some(a) = pending.pop_front() {
                let body = serde_json::to_vec(&a).unwrap_or_default();
                publish(
                    &self.client,
                    self.cfg.topic("alarms"),
                    QoS::AtLeastOnce,
                    false,
                    body,
                )
                .await;
            }
            let rate = self.metrics.borrow().units_per_minute;
            if send_status {
                let snap = self.status.borrow_and_update().clone();
                let body = serde_json::to_vec(&StatusPayload {
                    state: snap.state,
                    job: snap.job,
                    counts: self.store.counts(),
                    buffer: buffer_depth(&self.store, rate, self.product.borrow().as_ref()),
                    outbox_depth: self.store.outbox_depth(),
                    devices: snap.devices,
                    at_ms: now_ms(),
                })
                .unwrap_or_default();
                publish(
                    &self.client,
                    self.cfg.topic("status"),
                    QoS::AtLeastOnce,
                    true,
                    body,
                )
                .await;
            }
            if send_metrics {
                let metrics = *self.metrics.borrow();
                let body = serde_json::to_vec(&MetricsPayload {
                    metrics,
                    buffer: buffer_depth(&self.store, rate, self.product.borrow().as_ref()),
                    outbox_depth: self.store.outbox_depth(),
                    at_ms: now_ms(),
                })
                .unwrap_or_default();
                publish(
                    &self.client,
                    self.cfg.topic("metrics"),
                    QoS::AtMostOnce,
                    false,
                    body,
                )
                .await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alarm_kind_is_its_wire_name_in_json() {
        let a = Alarm::new(AlarmKind::LowBuffer, "m").with_serial("S1");
        let v = serde_json::to_value(&a).expect("serialises");
        assert_eq!(v["kind"], "low-buffer");
        let back: Alarm = serde_json::from_value(v).expect("parses back");
        assert_eq!(back, a);
    }

    /// The README is the payload documentation upstream reads: it must list
    /// exactly the kinds Serialine raises.
    #[test]
    fn readme_lists_every_alarm_kind() {
        let readme = include_str!("../README.md");
        let section = readme
            .split("#### Alarm kinds")
            .nth(1)
            .and_then(|s| s.split("\n#").next())
            .expect("README has an Alarm kinds section");
        let listed: Vec<&str> = section
            .lines()
            .filter_map(|l| l.strip_prefix("| `")?.split('`').next())
            .filter(|k| *k != "kind")
            .collect();
        let all: Vec<&str> = AlarmKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(listed, all);
    }
}
