//! One production line, end to end:
//!
//! ```text
//! feeder:  reserve serial -> render code -> durable Sent -> printer
//! verdict: printer Printed + camera read -> match -> durable Committed | Rejected
//! ```
//!
//! The feeder and the verdict side are two tasks joined by a channel of sent
//! units. A semaphore holds the number of units between "reserved" and
//! "verdict" at the printer's buffer plus the camera's window, so the line
//! never has more codes in flight than the equipment can hold (backpressure).
//!
//! Invariants kept here, on top of the ledger's: a code goes to the printer
//! only after its `Sent` is durable; a device fault never makes the pipeline
//! resend a code (units of unknown fate stay `Sent` and are reconciled: a late
//! camera read commits or rejects them, and whatever is left at job end is
//! voided). A camera read decides only the unit whose serial it names; a
//! read of a code not in flight (already committed or decided, from an
//! earlier job or another line, never issued) raises an alarm and a counted
//! reject signal for the pack in front of the camera, and decides no unit.
//! Content-free results (no-read, unparseable) are matched by the camera's
//! trigger id where the marking device defines it, else by position (see
//! `verdict`).

mod feeder;
mod instruments;
mod report;
mod verdict;

pub use report::{DeviceHealth, DeviceState, LineReport, Progress};

use serialine_core::{Grade, Job, RejectReason, Serial, UnitState};
use serialine_devices::{CameraHandle, PrinterHandle, UnitId};
use serialine_store::{Store, StoreError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch, Semaphore};

/// What the line must do and how strict it is.
#[derive(Debug, Clone)]
pub struct LineSpec {
    pub line_id: String,
    pub job: Job,
    pub min_grade: Grade,
    /// Printed units that may await their camera read at once.
    pub camera_window: usize,
    /// A printed unit not read within this time is a no-read.
    pub read_deadline: Duration,
    /// Longest the line waits for the buffer to refill before it stops.
    pub starve_timeout: Duration,
    /// Beaten on every turn of the verdict loop, for the watchdog.
    pub heartbeat: crate::health::Heartbeat,
    /// The ledger's number of this job (`Store::begin_job`): every serial
    /// it sends carries it. `None` in tools and tests that record no job.
    pub job_number: Option<u32>,
    /// Each unit once its commit is durable, in commit order: the case
    /// level's children when it counts (`crate::aggregation`).
    pub committed_to: Option<mpsc::UnboundedSender<Serial>>,
}

/// Something an operator should know about, as it happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alarm {
    pub line: String,
    pub kind: AlarmKind,
    pub message: String,
    pub serial: Option<Serial>,
}

/// The kinds the line raises are documented with the rest in
/// [`serialine_core::alarm`]; the uplink publishes them under the same names.
pub use serialine_core::AlarmKind;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("line {line}: ledger: {source}")]
    Store {
        line: String,
        #[source]
        source: StoreError,
    },
    #[error("line {line}: {what}")]
    Device { line: String, what: String },
}

/// A unit whose code went to the printer.
#[derive(Debug, Clone)]
pub(crate) struct SentUnit {
    pub unit: UnitId,
    pub serial: Serial,
    pub reserved_at: Instant,
    /// When its `Sent` became durable (the code may go out from then on).
    pub sent_at: Instant,
}

/// What happened to one unit, for the verdict batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Commit,
    Reject(RejectReason),
    Void,
}

impl Verdict {
    pub fn state(self) -> UnitState {
        match self {
            Verdict::Commit => UnitState::Committed,
            Verdict::Reject(r) => UnitState::Rejected(r),
            Verdict::Void => UnitState::Voided,
        }
    }
}

/// Everything the line's two tasks share.
pub(crate) struct Shared {
    pub spec: LineSpec,
    pub store: Store,
    pub alarms: mpsc::UnboundedSender<Alarm>,
    pub progress: watch::Sender<Progress>,
    /// Units that may be between reservation and verdict.
    pub slots: Arc<Semaphore>,
    /// False while a device is faulted: the feeder sends nothing.
    pub ready: watch::Sender<bool>,
    /// Set by the feeder when it has sent its last code without error (job
    /// quantity reached, stop requested, or starved): from then on the
    /// printer driver ending is the normal end, not a fault.
    pub feeding_done: std::sync::atomic::AtomicBool,
    /// Prometheus counters, histograms and gauges of this job's line.
    pub instruments: instruments::Instruments,
}

impl Shared {
    pub fn alarm(&self, kind: AlarmKind, message: impl Into<String>, serial: Option<Serial>) {
        let alarm = Alarm {
            line: self.spec.line_id.clone(),
            kind,
            message: message.into(),
            serial,
        };
        tracing::warn!(line = %alarm.line, kind = kind.as_str(), serial = ?alarm.serial.as_ref().map(|s| s.to_string()), "{}", alarm.message);
        let _ = self.alarms.send(alarm);
    }

    /// Records what device `index` (0 the marking device, 1 the camera)
    /// reported. Its `since_ms` moves only when its state changes.
    pub fn device_state(&self, index: usize, state: DeviceState, detail: Option<String>) {
        let mut from = None;
        self.progress
            .send_if_modified(|p| match p.devices.get_mut(index) {
                Some(d) if d.state != state => {
                    from = Some(d.state);
                    d.state = state;
                    d.since_ms = report::now_ms();
                    d.detail = detail;
                    true
                }
                _ => false,
            });
        if from.is_some() {
            self.instruments.device_state(index, from, state);
        }
    }

    pub fn store_err(&self, source: StoreError) -> PipelineError {
        PipelineError::Store {
            line: self.spec.line_id.clone(),
            source,
        }
    }
}

/// Voids what a previous run left on a device without a verdict: after a
/// restart no camera result for it can arrive, and it must never be resent.
/// Returns how many were voided.
pub async fn reconcile_on_start(store: &Store) -> Result<usize, StoreError> {
    let in_flight = store.in_flight()?;
    if in_flight.is_empty() {
        return Ok(0);
    }
    let ts: Vec<_> = in_flight
        .iter()
        .map(|(s, _)| serialine_store::Transition::new(s.clone(), UnitState::Voided))
        .collect();
    let mut voided = 0;
    for r in store.apply(&ts).await {
        r?;
        voided += 1;
    }
    tracing::warn!(
        line = store.line_id(),
        voided,
        "voided serials left in flight by the previous run"
    );
    Ok(voided)
}

/// Runs `spec.job` on one line to completion (or until `stop` turns true),
/// then drains: units still without a verdict after the read deadline are voided.
pub async fn run_line(
    spec: LineSpec,
    store: Store,
    printer: PrinterHandle,
    camera: CameraHandle,
    alarms: mpsc::UnboundedSender<Alarm>,
    progress: watch::Sender<Progress>,
    stop: watch::Receiver<bool>,
) -> Result<LineReport, PipelineError> {
    let window = printer.capacity.max(1) + spec.camera_window.max(1);
    // Both devices start out ok: their drivers were connected when spawned,
    // and any fault from now on is reported as an event.
    let started_ms = report::now_ms();
    progress.send_modify(|p| {
        p.devices = [&printer.name, &camera.name]
            .into_iter()
            .map(|name| DeviceHealth {
                name: name.clone(),
                state: DeviceState::Ok,
                since_ms: started_ms,
                detail: None,
            })
            .collect();
    });
    let (ready, ready_rx) = watch::channel(true);
    let instruments = instruments::Instruments::new(&spec.line_id);
    for index in 0..2 {
        instruments.device_state(index, None, DeviceState::Ok);
    }
    let shared = Arc::new(Shared {
        instruments,
        spec,
        store,
        alarms,
        progress,
        slots: Arc::new(Semaphore::new(window)),
        ready,
        feeding_done: std::sync::atomic::AtomicBool::new(false),
    });
    let (sent_tx, sent_rx) = mpsc::unbounded_channel();
    let started = Instant::now();
    let feeder = tokio::spawn(feeder::run(
        shared.clone(),
        printer.requests,
        sent_tx,
        ready_rx,
        stop,
    ));
    let verdicts = verdict::run(
        shared.clone(),
        printer.events,
        camera.events,
        sent_rx,
        printer.trigger_ids,
    )
    .await;
    let fed = feeder.await.map_err(|e| PipelineError::Device {
        line: shared.spec.line_id.clone(),
        what: format!("feeder task failed: {e}"),
    })?;
    let mut report = verdicts?;
    report.sent = fed?;
    report.elapsed = started.elapsed();
    Ok(report)
}
