//! The one way a line is put together: [`open_line`] opens the ledger
//! (recovery, fence), voids what a previous run left in flight and starts the
//! uplink; [`Line::start_job`] spawns the devices and runs the pipeline. The
//! service, the demo, the bench and the tests all go through here.

use crate::aggregation::{AggregationMode, LevelPlan};
use crate::devices::{DeviceError, DeviceFactory, Devices, Gs1ModeIssue};
use crate::health::Heartbeat;
use crate::pipeline::{self, LineSpec};
use crate::plan::{LinePlan, PipelinePlan};
use crate::running::{self, RunningLine};
use serialine_core::Job;
use serialine_store::{Store, StoreError};
use serialine_uplink::{CommandRequest, ParentStock, UplinkError, UplinkHandle};
use std::path::PathBuf;
use tokio::sync::mpsc;

/// Why a line could not be opened or a job not started.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    #[error("line {line}: cannot create the ledger directory {dir}: {source}")]
    LedgerDir {
        line: String,
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("line {line}: cannot open the ledger at {path}: {source}")]
    OpenLedger {
        line: String,
        path: PathBuf,
        #[source]
        source: StoreError,
    },
    #[error("line {line}: the ledger opening task failed: {what}")]
    OpenTask { line: String, what: String },
    #[error("line {line}: voiding the serials a previous run left in flight: {source}")]
    Reconcile {
        line: String,
        #[source]
        source: StoreError,
    },
    #[error("line {line}: cannot start the MQTT uplink: {source}")]
    Uplink {
        line: String,
        #[source]
        source: UplinkError,
    },
    #[error("line {line}: printer {key}: {message}")]
    Gs1Mode {
        line: String,
        key: &'static str,
        message: String,
    },
    #[error("line {line}: cannot record the job's start in the ledger: {source}")]
    BeginJob {
        line: String,
        #[source]
        source: StoreError,
    },
    #[error("line {line}: cannot spawn its devices: {source}")]
    Devices {
        line: String,
        #[source]
        source: DeviceError,
    },
}

/// A line whose ledger is open and whose uplink runs; jobs start on it.
pub struct Line<D> {
    pub id: String,
    pub store: Store,
    pub uplink: UplinkHandle,
    /// Commands from MQTT (`cmd/job/start`, `cmd/job/stop`, `cmd/drain`),
    /// for whoever supervises the line; the demo and the bench ignore them.
    pub commands: mpsc::Receiver<CommandRequest>,
    /// Beaten by every job's verdict loop (and by the supervisor when idle).
    pub heartbeat: Heartbeat,
    /// Serials a previous run left in flight, voided when the line opened.
    pub voided_at_open: usize,
    pipeline: PipelinePlan,
    default_job: Option<Job>,
    devices: D,
    /// [`crate::health::watch_ledger`] for this line; aborted with it.
    ledger_watch: tokio::task::JoinHandle<()>,
}

impl<D> Drop for Line<D> {
    fn drop(&mut self) {
        self.ledger_watch.abort();
    }
}

/// Opens the line `plan` describes. `after_open` runs on the blocking thread
/// that opened the ledger, right after it (the service hands the opening's
/// temporaries back to the OS there).
pub async fn open_line<D: DeviceFactory>(
    plan: LinePlan,
    devices: D,
    after_open: fn(),
) -> Result<Line<D>, LineError> {
    let LinePlan {
        id,
        store: opts,
        uplink: up,
        pipeline,
        default_job,
    } = plan;
    let path = opts.path.clone();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| LineError::LedgerDir {
            line: id.clone(),
            dir: dir.to_path_buf(),
            source,
        })?;
    }
    let (store, recovery) = tokio::task::spawn_blocking(move || {
        let opened = Store::open(opts);
        after_open();
        opened
    })
    .await
    .map_err(|e| LineError::OpenTask {
        line: id.clone(),
        what: e.to_string(),
    })?
    .map_err(|source| LineError::OpenLedger {
        line: id.clone(),
        path: path.clone(),
        source,
    })?;
    let c = recovery.counts;
    tracing::info!(
        line = %id,
        ledger = %path.display(),
        in_flight = recovery.in_flight.len(),
        outbox = recovery.outbox_depth,
        issued = c.issued,
        committed = c.committed + c.synced,
        rejected = c.rejected,
        voided = c.voided,
        buffered = store.buffer_depth(),
        "ledger open"
    );
    if let Some(f) = &recovery.fence {
        if f.voided > 0 {
            tracing::warn!(line = %id, voided = f.voided, "fence: the ledger is behind its fence (restored or rolled back, or a crash); serials it may have sent are voided and reported, never printed again");
        }
        if let Some(why) = &f.hold {
            tracing::warn!(line = %id, "fence: {why}; no serial is used until upstream answers the fence handshake");
        }
    }
    // A serial a previous run sent without a verdict can get none now: void
    // it (it is reported, and never sent again).
    let voided = pipeline::reconcile_on_start(&store)
        .await
        .map_err(|source| LineError::Reconcile {
            line: id.clone(),
            source,
        })?;
    if voided > 0 {
        tracing::warn!(line = %id, voided, "recovery: voided serials left in flight");
    }
    tracing::info!(
        line = %id,
        broker = %format!("{}:{}", up.host, up.port),
        client_id = %up.client_id,
        tls = up.tls.is_some(),
        signed_commands = up.command_auth.is_some(),
        signed_acks = up.ack_auth.is_some(),
        topic_prefix = %up.prefix(),
        "starting the uplink"
    );
    let (uplink, commands) =
        serialine_uplink::start(up, store.clone()).map_err(|source| LineError::Uplink {
            line: id.clone(),
            source,
        })?;
    let heartbeat = Heartbeat::new();
    heartbeat.beat();
    let ledger_watch = tokio::spawn(crate::health::watch_ledger(
        id.clone(),
        store.committer_clock(),
        heartbeat.clone(),
        uplink.clone(),
        crate::health::LEDGER_STALL,
    ));
    Ok(Line {
        id,
        store,
        uplink,
        commands,
        heartbeat,
        voided_at_open: voided,
        pipeline,
        default_job,
        devices,
        ledger_watch,
    })
}

impl<D: DeviceFactory> Line<D> {
    /// The job the plan says the line starts with, if any.
    pub fn default_job(&self) -> Option<&Job> {
        self.default_job.as_ref()
    }

    /// Spawns the job's devices and starts the pipeline on them. From now
    /// on blocks are requested for the job's product (and kept for it after
    /// the job, until another product's job starts).
    pub async fn start_job(&mut self, job: Job) -> Result<RunningLine, LineError> {
        // A printer in the wrong GS1 mode would print every code in a
        // symbol the line then rejects (or, for a URI, a non-GS1 one).
        match self.devices.gs1_mode_issue(&job.template) {
            Some((key, Gs1ModeIssue::Contradiction(message))) => {
                return Err(LineError::Gs1Mode {
                    line: self.id.clone(),
                    key,
                    message,
                })
            }
            Some((key, Gs1ModeIssue::Unset(m))) => {
                tracing::warn!(line = %self.id, "printer {key}: {m}")
            }
            None => {}
        }
        let Devices {
            printer,
            camera,
            names,
        } = self
            .devices
            .spawn(&self.id)
            .await
            .map_err(|source| LineError::Devices {
                line: self.id.clone(),
                source,
            })?;
        let p = &self.pipeline;
        let mut levels = self
            .devices
            .spawn_levels(&self.id, &p.aggregation)
            .await
            .map_err(|source| LineError::Devices {
                line: self.id.clone(),
                source,
            })?;
        crate::devices::levels_match(&self.id, p.aggregation.len(), levels.len()).map_err(
            |source| LineError::Devices {
                line: self.id.clone(),
                source,
            },
        )?;
        for (plan, devices) in p.aggregation.iter().zip(&levels) {
            if plan.mode == AggregationMode::Scan && devices.camera.is_none() {
                return Err(LineError::Devices {
                    line: self.id.clone(),
                    source: format!(
                        "the {} level scans, but has no aggregation camera",
                        plan.name
                    )
                    .into(),
                });
            }
        }
        // Durable before the first code: every serial it sends carries it.
        let number = self
            .store
            .begin_job(&job)
            .await
            .map_err(|source| LineError::BeginJob {
                line: self.id.clone(),
                source,
            })?;
        self.uplink.set_product(Some(job.gtin));
        self.uplink
            .set_parent_products(parent_stock(&job, &p.aggregation));
        let spec = LineSpec {
            line_id: self.id.clone(),
            job: job.clone(),
            min_grade: p.min_grade,
            camera_window: p.camera_window,
            read_deadline: p.read_deadline,
            starve_timeout: p.starve_timeout,
            heartbeat: self.heartbeat.clone(),
            job_number: Some(number),
            committed_to: None,
        };
        tracing::info!(
            line = %self.id,
            job = number,
            gtin = %job.gtin.as_string(),
            lot = %job.lot,
            expiry = %job.expiry,
            quantity = job.quantity,
            devices = %names.join(", "),
            buffered = self.store.buffer_depth_for(&job.gtin).unwrap_or(0),
            "job started"
        );
        Ok(running::start_line(
            spec,
            self.store.clone(),
            self.uplink.clone(),
            printer,
            camera,
            names,
            p.aggregation
                .iter()
                .cloned()
                .zip(levels.drain(..))
                .collect(),
        ))
    }
}

/// The label serials a job's levels need in stock: a level's parents for
/// the whole job (children per parent multiplied up from the units) and
/// some spare for labels rejected, asked for again at half of it.
fn parent_stock(job: &Job, levels: &[LevelPlan]) -> Vec<ParentStock> {
    let mut per = 1u64;
    levels
        .iter()
        .map(|l| {
            per = per.saturating_mul(u64::from(l.per_parent.max(1)));
            let high = job.quantity.div_ceil(per).saturating_add(10).min(100_000);
            ParentStock {
                gtin: l.gtin,
                low: (high / 2).max(1),
                high,
            }
        })
        .collect()
}
