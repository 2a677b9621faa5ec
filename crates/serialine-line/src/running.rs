//! A job running on a line: the pipeline, its alarms forwarded to the
//! uplink's `alarms` topic, and its progress to the retained `status` topic.
//! Whoever started it may watch its progress ([`RunningLine::progress`], the
//! demo draws a bar from it), wait for its end ([`RunningLine::ended`]), stop
//! it, and collect its report ([`RunningLine::finish`]).

use crate::aggregation::{
    self, AggregationMode, Children, LevelContext, LevelDevices, LevelPlan, LevelReport,
};
use crate::pipeline::{self, Alarm, DeviceHealth, LineReport, LineSpec, Progress};
use serialine_core::{Serial, Template};
use serialine_devices::{CameraHandle, PrinterHandle};
use serialine_store::Store;
use serialine_uplink::{DeviceStatus, JobInfo, LineState, StatusSnapshot, UplinkHandle};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// A line that is running; [`RunningLine::finish`] waits for its job to end.
pub struct RunningLine {
    run: LineRun,
    task: JoinHandle<Result<LineReport, pipeline::PipelineError>>,
    side: Vec<JoinHandle<()>>,
    progress: watch::Receiver<Progress>,
    /// Turns true when the pipeline task has returned: the job is over.
    ended: watch::Receiver<bool>,
    /// The ledger's number of the job (`Store::begin_job`).
    job_number: Option<u32>,
    /// `stop` came while the job still ran (not after it ended on its own).
    stopped_early: std::sync::atomic::AtomicBool,
}

/// What stays of a line once its job is over.
pub struct LineRun {
    pub store: Store,
    pub uplink: UplinkHandle,
    /// How the daemon describes the job's devices (marking device, camera).
    pub device_names: Vec<String>,
    pub stop: watch::Sender<bool>,
}

/// Starts the job's pipeline and, with `levels`, its packaging levels
/// (cases, then pallets; see [`crate::aggregation`]). The job ends once
/// the units are decided and every level has closed its last parent.
#[allow(clippy::too_many_arguments)]
pub fn start_line(
    mut spec: LineSpec,
    store: Store,
    uplink: UplinkHandle,
    printer: PrinterHandle,
    camera: CameraHandle,
    devices: Vec<String>,
    levels: Vec<(LevelPlan, LevelDevices)>,
) -> RunningLine {
    let (alarm_tx, alarm_rx) = mpsc::unbounded_channel();
    let (progress_tx, progress_rx) = watch::channel(Progress::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let job = JobInfo::from(&spec.job);
    let quantity = spec.job.quantity;
    let job_number = spec.job_number;
    let (ended_tx, ended_rx) = watch::channel(false);
    let (units_done_tx, units_done_rx) = watch::channel(false);
    let level_tasks = spawn_levels(&mut spec, &store, &alarm_tx, units_done_rx, levels);
    let pipeline = pipeline::run_line(
        spec,
        store.clone(),
        printer,
        camera,
        alarm_tx,
        progress_tx,
        stop_rx,
    );
    let task = tokio::spawn(async move {
        let report = pipeline.await;
        units_done_tx.send_replace(true);
        let mut reports = Vec::with_capacity(level_tasks.len());
        for t in level_tasks {
            match t.await {
                Ok(r) => reports.push(r),
                Err(e) => tracing::error!("an aggregation level's task failed: {e}"),
            }
        }
        ended_tx.send_replace(true);
        report.map(|mut r| {
            r.levels = reports;
            r
        })
    });
    let side = vec![
        tokio::spawn(forward_alarms(alarm_rx, uplink.clone())),
        tokio::spawn(report_progress(
            progress_rx.clone(),
            uplink.clone(),
            job,
            devices.clone(),
            quantity,
        )),
    ];
    RunningLine {
        run: LineRun {
            store,
            uplink,
            device_names: devices,
            stop: stop_tx,
        },
        task,
        side,
        progress: progress_rx,
        ended: ended_rx,
        job_number,
        stopped_early: Default::default(),
    }
}

/// Spawns each level's task, joined to the one below: a counting level
/// takes what the level below committed (the units, for cases), a scanning
/// one reads its own camera; each is told when the level below is done.
fn spawn_levels(
    spec: &mut LineSpec,
    store: &Store,
    alarms: &mpsc::UnboundedSender<Alarm>,
    units_done: watch::Receiver<bool>,
    levels: Vec<(LevelPlan, LevelDevices)>,
) -> Vec<JoinHandle<LevelReport>> {
    let mut tasks = Vec::new();
    let mut below_done = units_done;
    let mut child_gtin = spec.job.gtin;
    let mut child_template = spec.job.template.clone();
    // The count channel of the next level, filled by this one.
    let mut next_rx: Option<mpsc::UnboundedReceiver<Serial>> = None;
    let modes: Vec<AggregationMode> = levels.iter().map(|(p, _)| p.mode).collect();
    if modes.first() == Some(&AggregationMode::Count) {
        let (tx, rx) = mpsc::unbounded_channel();
        spec.committed_to = Some(tx);
        next_rx = Some(rx);
    }
    for (i, (plan, mut devices)) in levels.into_iter().enumerate() {
        let children = match (plan.mode, next_rx.take(), devices.camera.take()) {
            (AggregationMode::Count, Some(rx), _) => Children::Committed {
                rx,
                below_done: below_done.clone(),
            },
            (_, _, Some(camera)) => Children::Scanned {
                camera,
                below_done: below_done.clone(),
            },
            // A scanning level without a camera (the assembly refuses
            // that): nothing to close.
            (_, _, None) => {
                tracing::error!(level = %plan.name, "aggregation level without its camera; not run");
                continue;
            }
        };
        let sealed_to = match modes.get(i + 1) {
            Some(AggregationMode::Count) => {
                let (tx, rx) = mpsc::unbounded_channel();
                next_rx = Some(rx);
                Some(tx)
            }
            _ => None,
        };
        let (done_tx, done_rx) = watch::channel(false);
        let ctx = LevelContext {
            line: spec.line_id.clone(),
            job: spec.job.clone(),
            job_number: spec.job_number.unwrap_or(0),
            store: store.clone(),
            min_grade: spec.min_grade,
            alarms: alarms.clone(),
        };
        let (gtin, template) = (child_gtin, child_template.clone());
        child_gtin = plan.gtin;
        child_template = Template::Gs1DataMatrix;
        tasks.push(tokio::spawn(async move {
            let report =
                aggregation::run_level(ctx, plan, devices, children, gtin, template, sealed_to)
                    .await;
            done_tx.send_replace(true);
            report
        }));
        below_done = done_rx;
    }
    tasks
}

impl RunningLine {
    /// Asks the job to stop: no new code is sent, the units in flight get
    /// their verdicts (or are voided at the read deadline).
    pub fn stop(&self) {
        if !*self.ended.borrow() {
            self.stopped_early
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        self.run.stop.send_replace(true);
    }

    /// Resolves once the job is over (quantity reached, stopped, starved or
    /// failed); [`RunningLine::finish`] then returns without waiting.
    pub async fn ended(&self) {
        let mut ended = self.ended.clone();
        let _ = ended.wait_for(|e| *e).await;
    }

    /// The job's progress as it changes (units decided, device states).
    pub fn progress(&self) -> watch::Receiver<Progress> {
        self.progress.clone()
    }

    /// The line's ledger, uplink and device names.
    pub fn line(&self) -> &LineRun {
        &self.run
    }

    pub async fn finish(self) -> Result<(LineRun, LineReport), pipeline::PipelineError> {
        let line = self.run.store.line_id().to_string();
        let report = self
            .task
            .await
            .map_err(|e| pipeline::PipelineError::Device {
                line,
                what: format!("line task failed: {e}"),
            })??;
        for t in self.side {
            t.abort();
        }
        // The job's end in the ledger, so its report says how it ended. A
        // failure here loses no unit: it is logged, the report says "running".
        if let Some(number) = self.job_number {
            let end = if self
                .stopped_early
                .load(std::sync::atomic::Ordering::Relaxed)
            {
                "stopped"
            } else {
                "complete"
            };
            if let Err(e) = self.run.store.end_job(number, end).await {
                tracing::error!(line = %self.run.store.line_id(), job = number, "recording the job's end: {e}");
            }
        }
        Ok((self.run, report))
    }

    /// The ledger's number of this job, if it recorded one.
    pub fn job_number(&self) -> Option<u32> {
        self.job_number
    }
}

async fn forward_alarms(mut rx: mpsc::UnboundedReceiver<Alarm>, uplink: UplinkHandle) {
    while let Some(a) = rx.recv().await {
        let mut alarm = serialine_uplink::Alarm::new(a.kind, a.message);
        if let Some(s) = a.serial {
            alarm = alarm.with_serial(s.to_string());
        }
        uplink.raise_alarm(alarm);
    }
}

/// Publishes status on every change (at most 5 times a second) and feeds the
/// measured rate to the uplink, whose prefetch sizes the buffer in minutes.
async fn report_progress(
    mut rx: watch::Receiver<Progress>,
    uplink: UplinkHandle,
    job: JobInfo,
    devices: Vec<String>,
    quantity: u64,
) {
    let started = Instant::now();
    let mut last_publish = Instant::now() - Duration::from_secs(1);
    let mut last_states: Option<(bool, Vec<DeviceHealth>)> = None;
    while rx.changed().await.is_ok() {
        let p = rx.borrow_and_update().clone();
        // A device or pause change is published at once: throttled, it could
        // be the last change for a long while (a faulted line stands still).
        let states = (p.paused, p.devices.clone());
        let state_changed = last_states.as_ref() != Some(&states);
        last_states = Some(states);
        if state_changed
            || last_publish.elapsed() >= Duration::from_millis(200)
            || p.done() >= quantity
        {
            last_publish = Instant::now();
            let minutes = started.elapsed().as_secs_f64() / 60.0;
            if minutes > 0.0 {
                let rate = p.done() as f64 / minutes;
                uplink.set_rate(rate);
                uplink.publish_metrics(serialine_uplink::Metrics {
                    units_per_minute: rate,
                    rejects_per_minute: p.rejected as f64 / minutes,
                    latency_p50_ms: p.latency_p50_us as f64 / 1000.0,
                    latency_p99_ms: p.latency_p99_us as f64 / 1000.0,
                });
            }
            uplink.publish_status(StatusSnapshot {
                state: if p.paused {
                    LineState::Paused
                } else if p.done() >= quantity {
                    LineState::Stopped
                } else {
                    LineState::Running
                },
                job: Some(job.clone()),
                devices: device_statuses(&p.devices, &devices),
            });
        }
    }
}

/// Each device's real state and since when, named as the daemon describes
/// it (`names`, in the same order: marking device, camera) where it can.
fn device_statuses(health: &[DeviceHealth], names: &[String]) -> Vec<DeviceStatus> {
    health
        .iter()
        .enumerate()
        .map(|(i, d)| DeviceStatus {
            name: names.get(i).cloned().unwrap_or_else(|| d.name.clone()),
            state: d.state.as_str().into(),
            detail: d.detail.clone(),
            since_ms: Some(d.since_ms),
        })
        .collect()
}
