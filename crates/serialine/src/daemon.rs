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
//!   crash during the next job recovers without replaying this one's log,
//!   and what the retention rule allows is archived (`Store::archive`, at
//!   most [`ARCHIVE_FILES_PER_PAUSE`] files per pause).
//!
//! With `[opcua] enabled = true` the OPC UA server (`serialine-opcua`)
//! starts once the lines are open, before READY; its `StartJob` / `StopJob`
//! reach the same supervisor as `cmd/job/*` (through the uplink's command
//! channel, `UplinkHandle::submit_command`), so they are refused and run the
//! same way. It stops first at shutdown, so no command arrives while the
//! lines stop.
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
use serialine::config::{self, Config, DeviceSpec, STOP_BOUND};
use serialine_core::Job;
use serialine_line::pipeline::LineReport;
use serialine_line::{Heartbeat, RunningLine};
use serialine_store::Store;
use serialine_uplink::{
    Alarm, AlarmKind, Command, CommandRequest, JobInfo, LineState, LinkFault, StatusSnapshot,
};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

/// Longest the uplink may take to publish `offline` and disconnect.
pub const UPLINK_SHUTDOWN: Duration = Duration::from_secs(5);
/// Longest the OPC UA server may take to close its sessions.
const OPCUA_SHUTDOWN: Duration = Duration::from_secs(2);
/// Archive files written in one pause between jobs (100,000 serials each,
/// about a second apiece here): bounds how long a `cmd/job/start` can wait
/// behind retention; what is left goes at the next pause.
pub const ARCHIVE_FILES_PER_PAUSE: usize = 20;
/// How often an idle line beats its heartbeat (the watchdog wants a beat
/// every half `WatchdogSec`).
const IDLE_BEAT: Duration = Duration::from_secs(1);

pub async fn run(config: Config) -> anyhow::Result<()> {
    // Installed first, so a stop request during start-up is not lost.
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;

    // Before any line opens: the pipeline, uplink and ledger take their
    // metric handles as they start. A port that cannot be bound is an
    // error naming the address (exit 1: it may be free on the next start).
    if let Some(m) = &config.metrics {
        serialine_line::prometheus::install(m.listen)?;
    }
    let auth = config.site_auth().map_err(config_error)?;
    let board = StatusBoard::default();
    let mut lines = Vec::with_capacity(config.lines.len());
    for index in 0..config.lines.len() {
        let id = config.lines[index].id.clone();
        let plan = config.line_plan(index, &auth).map_err(config_error)?;
        let devices = config.line_devices(index).map_err(config_error)?;
        let line = serialine_line::open_line(plan, devices, crate::release_freed_memory)
            .await
            .with_context(|| format!("line {id}: cannot start"))?;
        lines.push(Line {
            inner: line,
            archive_dir: (config.retention.keep_days > 0).then(|| config.line_archive_dir(&id)),
            retention: config.retention.clone(),
            reports_dir: config.line_reports_dir(&id),
            return_at_job_end: config.lines[index].buffer.return_at_job_end,
        });
    }
    // Jobs a crash or a kill left open: their units in flight were voided
    // as the ledgers opened, so each can be ended and reconciled now. A
    // return of unused serials a crash cut short is finished before any
    // job can reserve what it was giving back.
    for line in &lines {
        line.close_interrupted_jobs().await;
        line.finish_interrupted_return().await;
    }

    // After the lines (it shows them), before READY: a taken port or a bad
    // certificate stops the start, naming the address or the file.
    let opcua = match config.opcua_server().map_err(config_error)? {
        Some(cfg) => {
            let sources = lines
                .iter()
                .map(|l| serialine_opcua::LineSource {
                    id: l.inner.id.clone(),
                    store: l.inner.store.clone(),
                    uplink: l.inner.uplink.clone(),
                    // This supervisor consumes the line's commands.
                    accepts_commands: true,
                })
                .collect();
            Some(serialine_opcua::serve(cfg, sources).await?)
        }
        None => None,
    };

    // After the lines (it serves their ledgers), before READY: `serialine
    // status` works from the moment systemd says the service runs.
    let control = crate::control::serve(
        &config.control_socket_path(),
        lines
            .iter()
            .map(|l| crate::control::ControlLine {
                id: l.inner.id.clone(),
                store: l.inner.store.clone(),
                archive_dir: config.line_archive_dir(&l.inner.id),
                uplink: l.inner.uplink.clone(),
            })
            .collect(),
        {
            let board = board.clone();
            Arc::new(move |line: &str| board.get(line))
        },
    )?;

    let heartbeats: Vec<Heartbeat> = lines.iter().map(|l| l.inner.heartbeat.clone()).collect();
    if config.daemon.watchdog {
        tokio::spawn(serialine::systemd::watchdog(heartbeats));
    }

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut supervisors = Vec::with_capacity(lines.len());
    for mut line in lines {
        tokio::spawn(show_uplink_fault(
            line.id().to_string(),
            line.inner.uplink.link_fault(),
            board.clone(),
        ));
        board.set(
            line.id(),
            if line.inner.default_job().is_some() {
                "starting the default job".into()
            } else {
                "idle, waiting for cmd/job/start".into()
            },
        );
        // A default job starts before READY, so its devices are spawned.
        let first =
            match line.inner.default_job().cloned() {
                Some(job) => Some(line.start_job(job).await.with_context(|| {
                    format!("line {}: cannot start the default job", line.id())
                })?),
                None => {
                    line.publish_idle(LineState::Stopped);
                    None
                }
            };
        if let Some(active) = &first {
            board.set(line.id(), running_text(&active.job));
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
    // First, so that no command arrives over OPC UA while the lines stop.
    if let Some(server) = opcua {
        server.shutdown(OPCUA_SHUTDOWN).await;
    }
    // Its handles on the ledgers go before the ledgers close.
    control.shutdown().await;
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

    /// What `set` last said of `line`.
    fn get(&self, line: &str) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(line)
            .cloned()
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

/// How a job ends when the service stops: interrupted, so its unused
/// serials are not returned.
const SHUTDOWN_WHY: &str = "stopped for shutdown";

/// One line, opened (ledger, uplink, commands, heartbeat), on the devices
/// its configuration names; the service supervises it.
struct Line {
    inner: serialine_line::Line<DeviceSpec>,
    /// Where retention archives this line's records; `None` keeps them all.
    archive_dir: Option<std::path::PathBuf>,
    retention: serialine::config::RetentionConfig,
    /// Where its job reports are written.
    reports_dir: std::path::PathBuf,
    /// `[line.buffer] return_at_job_end`.
    return_at_job_end: bool,
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

impl Line {
    fn id(&self) -> &str {
        &self.inner.id
    }

    async fn start_job(&mut self, job: Job) -> anyhow::Result<ActiveJob> {
        let running = self.inner.start_job(job.clone()).await?;
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
        let number = running.job_number();
        running.stop();
        let mut drained = true;
        let outcome = match tokio::time::timeout(STOP_BOUND, running.finish()).await {
            Ok(Ok((_, report))) => {
                log_report(&report, &job, why);
                Ok(())
            }
            Ok(Err(e)) => {
                tracing::error!(line = %self.inner.id, "job failed after {:.1?}: {e:#}", started.elapsed());
                Err(format!("the job failed: {e:#}"))
            }
            Err(_) => {
                drained = false;
                tracing::error!(
                    line = %self.inner.id,
                    "the job did not drain within {STOP_BOUND:?}; units still in flight are voided at the next start"
                );
                Err(format!("the line did not drain within {STOP_BOUND:?}"))
            }
        };
        if let Some(number) = number {
            if !drained {
                if let Err(e) = self.inner.store.end_job(number, "did not drain").await {
                    tracing::error!(line = %self.inner.id, job = number, "recording the job's end: {e}");
                }
            }
            // Not at shutdown: the job was interrupted, not ended.
            if self.return_at_job_end && why != SHUTDOWN_WHY {
                let req = serialine_store::ReturnRequest {
                    gtin: Some(job.gtin.as_string()),
                    job: number,
                };
                // A failure is an alarm already; the reconciliation goes on.
                let _ = self.give_back(req).await;
            }
            self.reconcile(number).await;
        }
        self.publish_idle(if outcome.is_ok() {
            LineState::Stopped
        } else {
            LineState::Faulted
        });
        outcome
    }

    /// Gives the serials `req` names back upstream (`return_cmd.rs`), with
    /// the prefetch held so the buffer is not filled again before the next
    /// job. A failure is an alarm; what was returned stays returned, the
    /// rest buffered, and the intent finishes it at the next start.
    async fn give_back(&self, req: serialine_store::ReturnRequest) -> Result<(), String> {
        let i = &self.inner;
        let Err(e) = crate::return_cmd::give_back(&i.id, &i.store, &i.uplink, req).await else {
            return Ok(());
        };
        let message = format!("returning unused serials failed: {e:#}");
        tracing::error!(line = %self.inner.id, "{message}");
        self.inner
            .uplink
            .raise_alarm(Alarm::new(AlarmKind::StoreError, message.clone()));
        Err(message)
    }

    /// A return of unused serials a crash cut short (its intent is in the
    /// ledger): finished now, at start.
    async fn finish_interrupted_return(&self) {
        // Returning at each job's end: between jobs (the last one ended) no
        // block is requested, in this process as in the one before; the
        // next job's start requests again.
        if self.return_at_job_end
            && self
                .inner
                .store
                .jobs()
                .is_ok_and(|j| j.last().is_some_and(|(_, e)| e.ended_ms.is_some()))
        {
            self.inner.uplink.hold_prefetch();
        }
        match self.inner.store.unfinished_return() {
            Ok(Some(req)) => {
                tracing::warn!(
                    line = %self.inner.id,
                    job = req.job,
                    gtin = req.gtin.as_deref().unwrap_or("any"),
                    "a return of unused serials was cut short (the service stopped in the middle): finishing it"
                );
                let job = req.job;
                let _ = self.give_back(req).await;
                // The job's end did not get to its reconciliation either.
                if job != 0 {
                    self.reconcile(job).await;
                }
            }
            Ok(None) => {}
            Err(e) => {
                let message = format!("reading the ledger's return in progress: {e}");
                tracing::error!(line = %self.inner.id, "{message}");
                self.inner
                    .uplink
                    .raise_alarm(Alarm::new(AlarmKind::StoreError, message));
            }
        }
    }

    /// Ends and reconciles every job the ledger holds as still running: at
    /// start, that is a job the previous run never ended.
    async fn close_interrupted_jobs(&self) {
        let open: Vec<u32> = match self.inner.store.jobs() {
            Ok(jobs) => jobs
                .into_iter()
                .filter(|(_, e)| e.ended_ms.is_none())
                .map(|(n, _)| n)
                .collect(),
            Err(e) => {
                tracing::error!(line = %self.inner.id, "reading the ledger's jobs: {e}");
                return;
            }
        };
        for number in open {
            tracing::warn!(line = %self.inner.id, job = number, "job {number} was never ended (the service stopped without ending it): ending it as interrupted");
            if let Err(e) = self.inner.store.end_job(number, "interrupted").await {
                tracing::error!(line = %self.inner.id, job = number, "recording the job's end: {e}");
                continue;
            }
            self.reconcile(number).await;
        }
    }

    /// The job's reconciliation from the ledger: logged, written as JSON
    /// under `<state_dir>/reports/<line>/job-<n>.json`, and an alarm
    /// naming the units that keep it from balancing.
    async fn reconcile(&self, number: u32) {
        let store = self.inner.store.clone();
        let dir = self.reports_dir.clone();
        let result = tokio::task::spawn_blocking(move || {
            let report = store.job_report(number)?;
            let path = crate::tools::write_job_report(&dir, &report)?;
            anyhow::Ok((report, path))
        })
        .await;
        match result {
            Ok(Ok((r, path))) => {
                let line = &self.inner.id;
                let summary = crate::tools::job_summary(&r);
                self.inner
                    .uplink
                    .publish_job_report(number, &crate::tools::job_report_json(line, &r));
                if r.balanced() {
                    tracing::info!(line = %line, job = number, report = %path.display(), "job {number} reconciliation: {summary}");
                } else {
                    let message = format!(
                        "job {number} does not balance: {summary}; in flight: {}",
                        r.unbalanced.join(", ")
                    );
                    tracing::error!(line = %line, job = number, report = %path.display(), "{message}");
                    self.inner
                        .uplink
                        .raise_alarm(Alarm::new(AlarmKind::JobUnbalanced, message));
                }
            }
            Ok(Err(e)) => {
                tracing::error!(line = %self.inner.id, job = number, "job {number} reconciliation failed: {e:#}")
            }
            Err(e) => {
                tracing::error!(line = %self.inner.id, job = number, "job {number} reconciliation failed: {e}")
            }
        }
    }

    /// Between jobs the line is stopped anyway, so the ledger is closed and
    /// reopened there (`Store::checkpoint`): sled snapshots it, and a crash
    /// during the next job recovers without replaying this one's log. Not
    /// at shutdown: the next start's open does the same work.
    async fn checkpoint_between_jobs(&self) {
        match self.inner.store.checkpoint().await {
            Ok(took) => tracing::info!(
                line = %self.inner.id,
                closed_ms = took.as_millis() as u64,
                "ledger checkpointed between jobs: recovery after a crash replays nothing older"
            ),
            // The ledger is closed after a failed reopen: no next job can
            // run until a restart opens it again, so the operator must know.
            Err(e) => {
                let message = format!(
                    "ledger checkpoint between jobs failed, the ledger is closed until serialine restarts: {e}"
                );
                tracing::error!(line = %self.inner.id, "{message}");
                self.inner
                    .uplink
                    .raise_alarm(Alarm::new(AlarmKind::StoreError, message));
                return;
            }
        }
        self.archive_between_jobs().await;
    }

    /// Retention, where the line pauses: blocks whose serials all ended,
    /// were acknowledged and last moved `keep_days` ago leave the ledger
    /// for archive files. A failure leaves the ledger as it was (a round
    /// cut short is finished next time) and is an alarm: the disk fills if
    /// it keeps failing.
    async fn archive_between_jobs(&self) {
        let (Some(dir), Some(before)) = (&self.archive_dir, self.retention.cutoff()) else {
            return;
        };
        let mut opts = serialine_store::ArchiveOptions::new(dir, before);
        opts.max_files = ARCHIVE_FILES_PER_PAUSE;
        match self.inner.store.archive(opts).await {
            Ok(r) if r.serials == 0 => {}
            Ok(r) => tracing::info!(
                line = %self.inner.id,
                files = r.files.len(),
                blocks = r.blocks,
                serials = r.serials,
                bytes = r.bytes,
                took_ms = r.took.as_millis() as u64,
                "retention: {} serials older than {} days archived to {} in {:.1?}",
                r.serials,
                self.retention.keep_days,
                dir.display(),
                r.took
            ),
            Err(e) => {
                let message = format!(
                    "retention: archiving to {} failed, the records stay in the ledger: {e}",
                    dir.display()
                );
                tracing::error!(line = %self.inner.id, "{message}");
                self.inner
                    .uplink
                    .raise_alarm(Alarm::new(AlarmKind::StoreError, message));
            }
        }
    }

    fn publish_idle(&self, state: LineState) {
        self.inner.uplink.publish_status(StatusSnapshot {
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
                req = self.inner.commands.recv() => Event::Command(req),
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
                        board.set(&self.inner.id, state);
                        self.checkpoint_between_jobs().await;
                    }
                }
                Event::Command(Some(req)) => self.command(req, &mut job, &board).await,
                // The uplink is gone; only shutdown is left to wait for.
                Event::Command(None) => {
                    let _ = shutdown.wait_for(|s| *s).await;
                    break;
                }
                Event::IdleBeat => self.inner.heartbeat.beat(),
            }
        }
        if let Some(active) = job.take() {
            board.set(&self.inner.id, "stopping".into());
            let _ = self.end_job(active, SHUTDOWN_WHY).await;
        }
        board.set(&self.inner.id, "stopped".into());
        self.inner.uplink.clone().shutdown(UPLINK_SHUTDOWN).await;
        tracing::info!(line = %self.inner.id, "line stopped; uplink offline");
        // The line (and its ledger watch) ends here; the caller closes the
        // ledger with the last handle.
        self.inner.store.clone()
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
                    tracing::warn!(line = %self.inner.id, "cmd/{name} refused: a job is running");
                    req.respond(Err("a job is running".into()));
                    return;
                }
                match self.start_job(new.clone()).await {
                    Ok(active) => {
                        board.set(&self.inner.id, running_text(&active.job));
                        *job = Some(active);
                        req.respond(Ok(()));
                    }
                    Err(e) => {
                        tracing::error!(line = %self.inner.id, "cmd/{name}: cannot start the job: {e:#}");
                        req.respond(Err(format!("cannot start the job: {e:#}")));
                    }
                }
            }
            Command::Pack { .. } | Command::Unpack { .. } => {
                let stores = vec![(self.inner.id.clone(), self.inner.store.clone())];
                let command = req.command.clone();
                let answer = tokio::task::spawn_blocking(move || match &command {
                    Command::Pack { parent, children } => {
                        crate::pack_cmd::pack(&stores, parent, children)
                    }
                    Command::Unpack { parent, children } => {
                        crate::pack_cmd::unpack(&stores, parent, children.as_deref())
                    }
                    _ => serde_json::json!({"ok": false, "error": "not a hierarchy command"}),
                })
                .await;
                let result = match answer {
                    Ok(v) if v["ok"] == true => Ok(()),
                    Ok(v) => {
                        let offending: Vec<String> = v["offending"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|o| {
                                format!(
                                    "{} ({})",
                                    o["serial"].as_str().unwrap_or("?"),
                                    o["why"].as_str().unwrap_or("?")
                                )
                            })
                            .collect();
                        let why = v["error"].as_str().unwrap_or("refused").to_string();
                        Err(if offending.is_empty() {
                            why
                        } else {
                            format!("{why}; offending: {}", offending.join(", "))
                        })
                    }
                    Err(e) => Err(format!("applying failed: {e}")),
                };
                if let Err(why) = &result {
                    tracing::warn!(line = %self.inner.id, "cmd/{name} refused: {why}");
                }
                req.respond(result);
            }
            Command::ReturnUnused { gtin } => {
                if let Some(active) = job.as_ref() {
                    let why = format!(
                        "job {} is running; stop it first: a return gives back the serials it would print",
                        active.running.job_number().unwrap_or(0)
                    );
                    tracing::warn!(line = %self.inner.id, "cmd/{name} refused: {why}");
                    req.respond(Err(why));
                    return;
                }
                let gtin = gtin.map(|g| g.as_string());
                let planned = crate::return_cmd::plan(&self.inner.store, gtin.as_deref());
                match planned {
                    Ok(plan) => req.respond(self.give_back(plan).await),
                    Err(e) => {
                        tracing::warn!(line = %self.inner.id, "cmd/{name} refused: {e:#}");
                        req.respond(Err(format!("{e:#}")));
                    }
                }
            }
            Command::Unit {
                to,
                serials,
                with_children,
            } => {
                let lines = vec![(self.inner.id.clone(), self.inner.store.clone())];
                let (to, serials, with_children) = (*to, serials.clone(), *with_children);
                let results = match tokio::task::spawn_blocking(move || {
                    crate::unit_cmd::apply(&lines, &serials, to, with_children)
                })
                .await
                {
                    Ok(results) => results,
                    Err(e) => {
                        tracing::error!(line = %self.inner.id, "cmd/{name}: applying failed: {e}");
                        req.respond(Err(format!("applying failed: {e}")));
                        return;
                    }
                };
                let refused: Vec<String> = results
                    .iter()
                    .filter(|r| r["ok"] != serde_json::json!(true))
                    .map(|r| {
                        format!(
                            "{}: {}",
                            r["serial"].as_str().unwrap_or("?"),
                            r["error"].as_str().unwrap_or("refused")
                        )
                    })
                    .collect();
                tracing::info!(
                    line = %self.inner.id,
                    "cmd/{name}: {} of {} units {to}",
                    results.len() - refused.len(),
                    results.len()
                );
                req.respond(if refused.is_empty() && !results.is_empty() {
                    Ok(())
                } else {
                    Err(format!(
                        "{} of {} refused: {}",
                        refused.len(),
                        results.len(),
                        refused.join("; ")
                    ))
                });
            }
            Command::StopJob | Command::Drain => {
                let Some(active) = job.take() else {
                    tracing::info!(line = %self.inner.id, "cmd/{name}: no job is running");
                    req.respond(Ok(()));
                    return;
                };
                board.set(&self.inner.id, "draining".into());
                let result = self.end_job(active, &format!("cmd/{name}")).await;
                board.set(
                    &self.inner.id,
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
    for l in &r.levels {
        tracing::info!(
            line = %r.line,
            level = %l.name,
            sealed = l.sealed,
            partial = l.partial,
            refused = l.refused,
            labels_rejected = l.labels_rejected,
            "job ended ({why}): {} {}(s) sealed with their contents ({} partial), {} refused for rework, {} label(s) rejected",
            l.sealed,
            l.name,
            l.partial,
            l.refused,
            l.labels_rejected,
        );
    }
}
