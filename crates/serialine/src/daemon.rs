//! `serialine run`: the service.
//!
//! Start-up, for every `[[line]]`: read the line secret, open its ledger at
//! `<state_dir>/ledger/<line id>` (recovery voids what a previous run left in
//! flight), start its MQTT uplink (prefetch, outbox, status, commands) and,
//! when the line has a default `[line.job]`, spawn its devices. Then READY
//! goes to systemd and every line runs under its own supervisor task:
//!
//! - a line with a default job starts it at once; otherwise it waits for
//!   `cmd/job/start`;
//! - `cmd/job/start` while a job runs is refused ("a job is running");
//! - `cmd/job/stop` and `cmd/drain` stop feeding codes, let the units in
//!   flight get their verdicts (or be voided at the read deadline) and answer
//!   once the line has drained;
//! - each job spawns its devices afresh (a finished job's drivers end with
//!   it) and logs its report when it ends;
//! - between jobs the ledger is checkpointed (`Store::checkpoint`), so a
//!   crash during the next job recovers without replaying this one's log.
//!
//! SIGTERM or SIGINT: STOPPING to systemd, every running job is stopped and
//! drained (at most [`STOP_BOUND`]), every uplink publishes the retained
//! `offline` status and disconnects (at most [`UPLINK_SHUTDOWN`]), and the
//! ledgers are closed (their committers flush on drop). Then `run` returns
//! `Ok` and the process exits 0.
//!
//! Start-up failures (a ledger that will not open, a device address that
//! does not resolve, an uplink that refuses its TLS files) are returned as
//! errors naming the line, so the process exits 1 and systemd's
//! `Restart=on-failure` applies. Configuration problems, device files
//! included, never get here: `run` checks them first and exits 2.

use anyhow::{anyhow, Context};
use serialine::config::{self, Config, LineConfig, LineDevices, PrinterDevice};
use serialine_core::Job;
use serialine_devices::camera;
use serialine_devices::label;
use serialine_devices::laser::{self, LaserSettings};
use serialine_devices::printer;
use serialine_devices::transport::Link;
use serialine_devices::{CameraHandle, PrinterHandle};
use serialine_line::health::Heartbeat;
use serialine_line::pipeline::{LineReport, LineSpec};
use serialine_line::running::{self as runtime, RunningLine};
use serialine_store::{Store, StoreOptions};
use serialine_uplink::{
    kind, AckAuth, Alarm, Command, CommandAuth, CommandRequest, JobInfo, LineState, LinkFault,
    PrefetchConfig, StatusSnapshot, TlsPaths, UplinkConfig, UplinkHandle,
};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};

/// Longest a stopping job may take to drain (units in flight get their
/// verdict or are voided at the read deadline well within this).
pub const STOP_BOUND: Duration = Duration::from_secs(30);
/// Longest the uplink may take to publish `offline` and disconnect.
pub const UPLINK_SHUTDOWN: Duration = Duration::from_secs(5);
/// How often an idle line beats its heartbeat (the watchdog wants a beat
/// every half `WatchdogSec`).
const IDLE_BEAT: Duration = Duration::from_secs(1);

pub async fn run(config: Config) -> anyhow::Result<()> {
    // Installed first, so a stop request during start-up is not lost.
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;

    let password = mqtt_password(&config)?;
    // No key without the explicit allowance: refuse to start (check-config
    // reports the same). With the allowance, `check_files` has warned.
    let (missing, _) = config.auth_issues();
    if !missing.is_empty() {
        return Err(config_error(config::ConfigError::Files(missing)));
    }
    let command_auth = config
        .command_key()
        .map_err(config_error)?
        .map(|(key, _)| CommandAuth { key });
    let ack_auth = config
        .ack_key()
        .map_err(config_error)?
        .map(|(key, _)| AckAuth { key });
    let board = StatusBoard::default();
    let mut lines = Vec::with_capacity(config.lines.len());
    for index in 0..config.lines.len() {
        let id = config.lines[index].id.clone();
        let line = open_line(
            &config,
            index,
            password.clone(),
            command_auth.clone(),
            ack_auth.clone(),
        )
        .await
        .with_context(|| format!("line {id}: cannot start"))?;
        lines.push(line);
    }

    let heartbeats: Vec<Heartbeat> = lines.iter().map(|l| l.heartbeat.clone()).collect();
    if config.daemon.watchdog {
        tokio::spawn(serialine::systemd::watchdog(heartbeats));
    }

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut supervisors = Vec::with_capacity(lines.len());
    for mut line in lines {
        tokio::spawn(show_uplink_fault(
            line.id.clone(),
            line.uplink.link_fault(),
            board.clone(),
        ));
        board.set(
            &line.id,
            if line.cfg.job.is_some() {
                "starting the default job".into()
            } else {
                "idle, waiting for cmd/job/start".into()
            },
        );
        // A default job starts before READY, so its devices are spawned.
        let first = match line.cfg.job.as_ref().map(config::JobConfig::to_job) {
            Some(Ok(job)) => Some(
                line.start_job(job)
                    .await
                    .with_context(|| format!("line {}: cannot start the default job", line.id))?,
            ),
            Some(Err(e)) => {
                return Err(anyhow!("line {}: default job: {e}", line.id));
            }
            None => {
                line.publish_idle(LineState::Stopped);
                None
            }
        };
        if let Some(active) = &first {
            board.set(&line.id, running_text(&active.job));
        }
        supervisors.push(tokio::spawn(line.supervise(
            first,
            shutdown_rx.clone(),
            board.clone(),
        )));
    }
    serialine::systemd::ready(&board.text());
    tracing::info!("serialine running: {}", board.text());

    let signal_name = tokio::select! {
        _ = sigterm.recv() => "SIGTERM",
        _ = sigint.recv() => "SIGINT",
    };
    tracing::info!("{signal_name} received: stopping every line");
    serialine::systemd::stopping();
    shutdown_tx.send_replace(true);

    let mut stores = Vec::new();
    let mut failed = None;
    for task in supervisors {
        match task.await {
            Ok(store) => stores.push(store),
            Err(e) => failed = Some(anyhow!("a line supervisor failed: {e}")),
        }
    }
    // Closing a ledger joins its committer, which flushes: blocking work.
    let _ = tokio::task::spawn_blocking(move || drop(stores)).await;
    match failed {
        Some(e) => Err(e),
        None => {
            tracing::info!("serialine stopped");
            Ok(())
        }
    }
}

fn mqtt_password(config: &Config) -> anyhow::Result<Option<String>> {
    let Some((secret, _)) = config.mqtt_password().map_err(config_error)? else {
        return Ok(None);
    };
    let text = std::str::from_utf8(secret.expose())
        .map_err(|_| anyhow!("mqtt.password_file: the password is not UTF-8 text"))?;
    Ok(Some(text.to_string()))
}

fn config_error(e: config::ConfigError) -> anyhow::Error {
    anyhow!("{}", e.messages().join("\n"))
}

/// The `STATUS=` line systemd shows: every line's state, in line order.
#[derive(Clone, Default)]
struct StatusBoard(Arc<Mutex<BTreeMap<String, String>>>);

impl StatusBoard {
    fn set(&self, line: &str, state: String) {
        let text = {
            let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
            m.insert(line.to_string(), state);
            Self::render(&m)
        };
        serialine::systemd::status(&text);
    }

    fn text(&self) -> String {
        Self::render(&self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn clear(&self, key: &str) {
        let text = {
            let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
            m.remove(key);
            Self::render(&m)
        };
        serialine::systemd::status(&text);
    }

    fn render(m: &BTreeMap<String, String>) -> String {
        m.iter()
            .map(|(l, s)| format!("{l}: {s}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Shows why a line's uplink cannot connect in `STATUS=` (`<line> uplink:
/// not connected: <cause> (<error>)`), from the first failed attempt until
/// it connects; updated when the cause changes, not on every retry.
async fn show_uplink_fault(
    line: String,
    mut fault: watch::Receiver<Option<LinkFault>>,
    board: StatusBoard,
) {
    let key = format!("{line} uplink");
    let mut shown: Option<String> = None;
    loop {
        let now = fault.borrow_and_update().clone();
        match now {
            Some(f) if shown.as_ref() != Some(&f.cause) => {
                board.set(&key, format!("not connected: {} ({})", f.cause, f.detail));
                shown = Some(f.cause);
            }
            None if shown.take().is_some() => board.clear(&key),
            _ => {}
        }
        if fault.changed().await.is_err() {
            return;
        }
    }
}

/// One line, opened: its ledger, uplink and what it needs to run jobs.
struct Line {
    id: String,
    cfg: LineConfig,
    devices: LineDevices,
    store: Store,
    uplink: UplinkHandle,
    commands: mpsc::Receiver<CommandRequest>,
    heartbeat: Heartbeat,
}

/// What woke a line's supervisor.
enum Event {
    Shutdown,
    JobEnded,
    Command(Option<CommandRequest>),
    IdleBeat,
}

/// A job in progress.
struct ActiveJob {
    running: RunningLine,
    job: Job,
    started: Instant,
}

async fn open_line(
    config: &Config,
    index: usize,
    mqtt_password: Option<String>,
    command_auth: Option<CommandAuth>,
    ack_auth: Option<AckAuth>,
) -> anyhow::Result<Line> {
    let cfg = config.lines[index].clone();
    let id = cfg.id.clone();
    let (secret, _) = config.line_secret(index).map_err(config_error)?;
    let devices = config.line_devices(index).map_err(config_error)?;

    let path = config.line_ledger_path(&id);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating the ledger directory {}", parent.display()))?;
    }
    let mut opts = StoreOptions::new(&path, &id, secret.expose());
    opts.commit = match config.store.commit {
        config::CommitMode::Group => serialine_store::CommitMode::Group,
        config::CommitMode::PerTransition => serialine_store::CommitMode::PerTransition,
    };
    opts.max_batch = config.store.max_batch as usize;
    // Issue 13 §2: a restored or rolled-back ledger never reissues a serial.
    opts.fence = Some(config.line_fence_path(&id));
    drop(secret);
    let (store, recovery) = tokio::task::spawn_blocking(move || {
        let opened = Store::open(opts);
        crate::release_freed_memory();
        opened
    })
    .await
    .context("the ledger opening task failed")?
    .with_context(|| format!("cannot open the ledger at {}", path.display()))?;
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
    let voided = serialine_line::pipeline::reconcile_on_start(&store)
        .await
        .context("voiding the serials a previous run left in flight")?;
    if voided > 0 {
        tracing::warn!(line = %id, voided, "recovery: voided serials left in flight");
    }

    let mut up = uplink_config(config, &cfg, mqtt_password);
    up.command_auth = command_auth;
    up.ack_auth = ack_auth;
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
        serialine_uplink::start(up, store.clone()).context("cannot start the MQTT uplink")?;
    let heartbeat = Heartbeat::new();
    heartbeat.beat();
    Ok(Line {
        id,
        cfg,
        devices,
        store,
        uplink,
        commands,
        heartbeat,
    })
}

fn uplink_config(config: &Config, line: &LineConfig, password: Option<String>) -> UplinkConfig {
    let m = &config.mqtt;
    let mut up = UplinkConfig::new(m.host.clone(), m.port, config.site.id.clone(), &line.id);
    up.client_id = config.mqtt_client_id_for_line(&line.id);
    up.keep_alive = Duration::from_secs(m.keep_alive_secs.into());
    up.clean_session = m.clean_session;
    up.username = m.username.clone();
    up.password = password;
    up.tls = m.tls.as_ref().map(|t| TlsPaths {
        ca: t.ca_file.clone(),
        client_cert: t.client_cert_file.clone(),
        client_key: t.client_key_file.clone(),
    });
    let b = &line.buffer;
    up.prefetch = PrefetchConfig {
        low_water_serials: b.low_water_serials,
        low_water_minutes: f64::from(b.low_water_minutes),
        high_water_serials: b.high_water_serials,
        high_water_minutes: 2.0 * f64::from(b.low_water_minutes),
        // "Never hold more than high_water_serials."
        max_buffer_serials: b.high_water_serials,
        ..PrefetchConfig::default()
    };
    // A stop or drain answers once the line has drained.
    up.command_timeout = STOP_BOUND + Duration::from_secs(15);
    up.command_max_age = Duration::from_secs(m.command_max_age_secs.into());
    up.command_max_skew = Duration::from_secs(m.command_max_skew_secs.into());
    // Prefetch for the default job's product from the first request on.
    up.product = line
        .job
        .as_ref()
        .and_then(|j| j.to_job().ok())
        .map(|j| j.gtin);
    up
}

type Devices = (PrinterHandle, CameraHandle, Vec<String>);

async fn resolve(addr: &str) -> anyhow::Result<SocketAddr> {
    tokio::net::lookup_host(addr)
        .await
        .with_context(|| format!("cannot resolve {addr}"))?
        .next()
        .ok_or_else(|| anyhow!("{addr} resolves to no address"))
}

/// Spawns the line's printer and camera drivers; they connect (and
/// reconnect) in the background.
async fn spawn_devices(line: &str, d: &LineDevices) -> anyhow::Result<Devices> {
    let (printer, printer_name) = match &d.printer {
        PrinterDevice::Framed { transport, profile } => (
            printer::spawn(
                format!("{line}/printer"),
                Link::from(transport.clone()),
                profile,
            )
            .context("printer profile")?,
            format!("printer ({})", transport.describe()),
        ),
        PrinterDevice::Laser { addr, map } => {
            let sock = resolve(addr).await.context("laser address")?;
            (
                laser::spawn(
                    format!("{line}/laser"),
                    LaserSettings::tcp(sock),
                    map.clone(),
                )
                .context("laser register map")?,
                format!("laser (modbus tcp {sock})"),
            )
        }
        PrinterDevice::Zpl { addr, label } => {
            let sock = resolve(addr).await.context("label printer address")?;
            (
                label::spawn(format!("{line}/label"), sock, label.clone())
                    .context("label template")?,
                format!("label printer (tcp {sock})"),
            )
        }
    };
    let camera = camera::spawn(
        format!("{line}/camera"),
        Link::from(d.camera_transport.clone()),
        &d.camera,
    )
    .context("camera profile")?;
    let names = vec![
        printer_name,
        format!("camera ({})", d.camera_transport.describe()),
    ];
    Ok((printer, camera, names))
}

impl Line {
    async fn start_job(&mut self, job: Job) -> anyhow::Result<ActiveJob> {
        // A printer in the wrong GS1 mode would print every code in a
        // symbol the line then rejects (or, for a URI, a non-GS1 one).
        match self
            .devices
            .printer
            .gs1_mode_issue(&job.template, "the job")
        {
            Some(config::Gs1ModeIssue::Contradiction(m)) => {
                return Err(anyhow!("printer {}: {m}", self.devices.printer.file_key()));
            }
            Some(config::Gs1ModeIssue::Unset(m)) => {
                tracing::warn!(line = %self.id, "printer {}: {m}", self.devices.printer.file_key())
            }
            None => {}
        }
        let (printer, camera, names) = spawn_devices(&self.id, &self.devices).await?;
        // Blocks are now requested for this job's product (and kept for it
        // after the job, until another product's job starts).
        self.uplink.set_product(Some(job.gtin));
        let p = &self.cfg.pipeline;
        let read_deadline_ms = self.cfg.camera.deadline_ms.unwrap_or(p.read_deadline_ms);
        let spec = LineSpec {
            line_id: self.id.clone(),
            job: job.clone(),
            min_grade: self.cfg.min_grade,
            camera_window: p.camera_window,
            read_deadline: Duration::from_millis(read_deadline_ms),
            starve_timeout: Duration::from_secs(p.starve_timeout_secs),
            heartbeat: self.heartbeat.clone(),
        };
        tracing::info!(
            line = %self.id,
            gtin = %job.gtin.as_string(),
            lot = %job.lot,
            expiry = %job.expiry,
            quantity = job.quantity,
            devices = %names.join(", "),
            buffered = self.store.buffer_depth_for(&job.gtin).unwrap_or(0),
            "job started"
        );
        let running = runtime::start_line(
            spec,
            self.store.clone(),
            self.uplink.clone(),
            printer,
            camera,
            names,
        );
        Ok(ActiveJob {
            running,
            job,
            started: Instant::now(),
        })
    }

    /// Stops the job (a no-op if it already ended), waits for it to drain
    /// at most [`STOP_BOUND`] and logs its report.
    async fn end_job(&self, active: ActiveJob, why: &str) -> Result<(), String> {
        let ActiveJob {
            running,
            job,
            started,
        } = active;
        running.stop();
        let outcome = match tokio::time::timeout(STOP_BOUND, running.finish()).await {
            Ok(Ok((_, report))) => {
                log_report(&report, &job, why);
                Ok(())
            }
            Ok(Err(e)) => {
                tracing::error!(line = %self.id, "job failed after {:.1?}: {e:#}", started.elapsed());
                Err(format!("the job failed: {e:#}"))
            }
            Err(_) => {
                tracing::error!(
                    line = %self.id,
                    "the job did not drain within {STOP_BOUND:?}; units still in flight are voided at the next start"
                );
                Err(format!("the line did not drain within {STOP_BOUND:?}"))
            }
        };
        self.publish_idle(if outcome.is_ok() {
            LineState::Stopped
        } else {
            LineState::Faulted
        });
        outcome
    }

    /// Between jobs the line is stopped anyway, so the ledger is closed and
    /// reopened there (`Store::checkpoint`): sled snapshots it, and a crash
    /// during the next job recovers without replaying this one's log. Not
    /// at shutdown: the next start's open does the same work.
    async fn checkpoint_between_jobs(&self) {
        match self.store.checkpoint().await {
            Ok(took) => tracing::info!(
                line = %self.id,
                closed_ms = took.as_millis() as u64,
                "ledger checkpointed between jobs: recovery after a crash replays nothing older"
            ),
            // The ledger is closed after a failed reopen: no next job can
            // run until a restart opens it again, so the operator must know.
            Err(e) => {
                let message = format!(
                    "ledger checkpoint between jobs failed, the ledger is closed until serialine restarts: {e}"
                );
                tracing::error!(line = %self.id, "{message}");
                self.uplink
                    .raise_alarm(Alarm::new(kind::STORE_ERROR, message));
            }
        }
    }

    fn publish_idle(&self, state: LineState) {
        self.uplink.publish_status(StatusSnapshot {
            state,
            job: None,
            devices: Vec::new(),
        });
    }

    /// Runs the line until shutdown: jobs, commands, idle heartbeats. Returns
    /// the ledger once the job is stopped and the uplink has said offline.
    async fn supervise(
        mut self,
        first: Option<ActiveJob>,
        mut shutdown: watch::Receiver<bool>,
        board: StatusBoard,
    ) -> Store {
        let mut job = first;
        let mut idle_beat = tokio::time::interval(IDLE_BEAT);
        idle_beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let event = tokio::select! {
                _ = shutdown.wait_for(|s| *s) => Event::Shutdown,
                _ = async {
                    match job.as_mut() {
                        Some(j) => j.running.ended().await,
                        None => std::future::pending().await,
                    }
                } => Event::JobEnded,
                req = self.commands.recv() => Event::Command(req),
                _ = idle_beat.tick(), if job.is_none() => Event::IdleBeat,
            };
            match event {
                Event::Shutdown => break,
                Event::JobEnded => {
                    if let Some(active) = job.take() {
                        let state = match self.end_job(active, "job complete").await {
                            Ok(()) => "idle, job complete".to_string(),
                            Err(e) => format!("idle, {e}"),
                        };
                        board.set(&self.id, state);
                        self.checkpoint_between_jobs().await;
                    }
                }
                Event::Command(Some(req)) => self.command(req, &mut job, &board).await,
                // The uplink is gone; only shutdown is left to wait for.
                Event::Command(None) => {
                    let _ = shutdown.wait_for(|s| *s).await;
                    break;
                }
                Event::IdleBeat => self.heartbeat.beat(),
            }
        }
        if let Some(active) = job.take() {
            board.set(&self.id, "stopping".into());
            let _ = self.end_job(active, "stopped for shutdown").await;
        }
        board.set(&self.id, "stopped".into());
        self.uplink.clone().shutdown(UPLINK_SHUTDOWN).await;
        tracing::info!(line = %self.id, "line stopped; uplink offline");
        self.store
    }

    async fn command(
        &mut self,
        req: CommandRequest,
        job: &mut Option<ActiveJob>,
        board: &StatusBoard,
    ) {
        let name = req.command.name();
        match &req.command {
            Command::StartJob(new) => {
                if job.is_some() {
                    tracing::warn!(line = %self.id, "cmd/{name} refused: a job is running");
                    req.respond(Err("a job is running".into()));
                    return;
                }
                match self.start_job(new.clone()).await {
                    Ok(active) => {
                        board.set(&self.id, running_text(&active.job));
                        *job = Some(active);
                        req.respond(Ok(()));
                    }
                    Err(e) => {
                        tracing::error!(line = %self.id, "cmd/{name}: cannot start the job: {e:#}");
                        req.respond(Err(format!("cannot start the job: {e:#}")));
                    }
                }
            }
            Command::StopJob | Command::Drain => {
                let Some(active) = job.take() else {
                    tracing::info!(line = %self.id, "cmd/{name}: no job is running");
                    req.respond(Ok(()));
                    return;
                };
                board.set(&self.id, "draining".into());
                let result = self.end_job(active, &format!("cmd/{name}")).await;
                board.set(
                    &self.id,
                    match &result {
                        Ok(()) => format!("idle, stopped by cmd/{name}"),
                        Err(e) => format!("idle, {e}"),
                    },
                );
                req.respond(result);
                self.checkpoint_between_jobs().await;
            }
        }
    }
}

fn running_text(job: &Job) -> String {
    let info = JobInfo::from(job);
    format!(
        "running, GTIN {} lot {} x {}",
        info.gtin, info.lot, info.quantity
    )
}

fn log_report(r: &LineReport, job: &Job, why: &str) {
    let rejected: Vec<String> = r.rejected.iter().map(|(k, v)| format!("{k} {v}")).collect();
    tracing::info!(
        line = %r.line,
        quantity = job.quantity,
        sent = r.sent,
        committed = r.committed,
        rejected = r.rejected_total(),
        voided = r.voided,
        duplicates = r.duplicates,
        foreign = r.foreign,
        pack_rejects = r.pack_rejects,
        elapsed_secs = format!("{:.2}", r.elapsed.as_secs_f64()),
        units_per_sec = format!("{:.0}", r.units_per_sec()),
        p99_ms = format!("{:.3}", r.latency_us(0.99) as f64 / 1000.0),
        "job ended ({why}): {} committed, {} rejected{}, {} voided, {:.0} units/s, added latency p99 {:.3} ms",
        r.committed,
        r.rejected_total(),
        if rejected.is_empty() {
            String::new()
        } else {
            format!(" ({})", rejected.join(", "))
        },
        r.voided,
        r.units_per_sec(),
        r.latency_us(0.99) as f64 / 1000.0,
    );
}
