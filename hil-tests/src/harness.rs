//! Runs one scenario: simulators up, the real daemon started (and killed and
//! restarted per the timeline), stopped with SIGTERM, then the checker.
//!
//! Every wait polls its condition every [`POLL`] within a bound; the only
//! timed waits are the scenario's own fault durations (a broker outage lasts
//! `secs`).

use crate::checker::{self, CheckInput, DeviceLog, Report, Violation};
use crate::run_parts::{
    camera_knobs, camera_section, config_head, exited_on_its_own, framed_section, job_table, kill9,
    kill_point_missed, ledger_decided, ledger_path, line_section, load_profile, open_ledger,
    outcome, read_logs, run_failure, run_log, start_camera, start_printer, write_config,
    write_secret, ScenarioDir, Site,
};
use crate::scenario::{PrinterKind, Scenario, StopWhen};
use crate::{binary, replay, HilError, POLL};
use serialine_devices::printer::FramedProfile;
use serialine_sim::broker::EmbeddedBroker;
use serialine_sim::camera::{CameraKnobs, CameraSim};
use serialine_sim::issuer::Issuer;
use serialine_sim::laser::{LaserSim, LaserSimConfig, LaserSimMap, RandomExceptions};
use serialine_sim::printer::PrinterSim;
use serialine_sim::recording::Recorder;
use serialine_sim::unserved::UnservedPeriod;
use serialine_store::{Counts, Store};
use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Longest the harness waits, after the printer jammed, for the status to
/// show the expected device states before it stops the daemon.
const JAM_STATUS_BOUND: Duration = Duration::from_secs(15);
/// The line every scenario runs.
pub const LINE: &str = "line-1";
/// Longest a SIGTERM'd daemon may take to exit (its own bound is 30 s to
/// drain plus 5 s for the uplink).
pub(crate) const TERM_BOUND: Duration = Duration::from_secs(45);
/// The daemon's minimum grade in every scenario's config.
pub(crate) const MIN_GRADE: serialine_core::Grade = serialine_core::Grade::C;

/// What a scenario run produced.
#[derive(Debug)]
pub struct Outcome {
    pub scenario: String,
    pub seed: u64,
    /// Daemon processes started.
    pub runs: u32,
    /// SIGKILLs delivered.
    pub kills: u32,
    /// The ledger's counters after the last stop.
    pub counts: Counts,
    pub report: Report,
    pub elapsed: Duration,
    /// The scenario's directory (ledger, logs, recordings); kept on disk
    /// when there are violations or `HIL_KEEP=1`.
    pub dir: PathBuf,
    pub mqtt_alarms: usize,
    /// With several lines: one line of figures per line (empty otherwise).
    pub lines: Vec<String>,
    /// Connections the laser accepted and turned away in its unserved
    /// period (`laser.unserved_ms`); `None` without one.
    pub laser_unserved: Option<u64>,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.report.violations.is_empty()
    }

    /// One line of figures.
    pub fn summary(&self) -> String {
        let c = &self.counts;
        let unserved = self
            .laser_unserved
            .map(|n| format!("; laser connections turned away {n}"))
            .unwrap_or_default();
        // Issue 14: the ledger's counts include the labels.
        let hierarchy = self
            .report
            .hierarchy
            .as_ref()
            .map(|h| format!("; hierarchy (ledger counts include labels): {h}"))
            .unwrap_or_default();
        format!(
            "scenario {} (seed {}): {:.1}s, {} run(s), {} kill(s); ledger: {} committed, {} rejected, {} voided, {} in flight; printer frames {}; alarms in logs: {} duplicate, {} foreign ({} excused near kills); mqtt alarms {}; accounting: {}{unserved}{hierarchy}; {} violation(s)",
            self.scenario,
            self.seed,
            self.elapsed.as_secs_f64(),
            self.runs,
            self.kills,
            c.committed + c.synced,
            c.rejected,
            c.voided,
            c.sent + c.printed,
            self.report.printer_frames,
            self.report.duplicate_alarms,
            self.report.foreign_alarms,
            self.report.alarms_excused,
            self.mqtt_alarms,
            self.report.accounting,
            self.report.violations.len()
        )
    }

    /// The summary and every violation (at most 50), for a test failure.
    pub fn details(&self) -> String {
        let mut s = self.summary();
        for l in &self.lines {
            let _ = write!(s, "\n  {l}");
        }
        for v in self.report.violations.iter().take(50) {
            let _ = write!(s, "\n  - {v}");
        }
        if self.report.violations.len() > 50 {
            let _ = write!(s, "\n  ... {} more", self.report.violations.len() - 50);
        }
        let _ = write!(s, "\n  files: {}", self.dir.display());
        s
    }
}

/// Loads `path` and runs it. `HIL_SEED` overrides the scenario's seed.
pub fn run_scenario(path: impl AsRef<Path>) -> Result<Outcome, HilError> {
    let mut s = Scenario::load(path.as_ref())?;
    if let Some(seed) = env_seed() {
        s.seed = seed;
    }
    run(s)
}

/// `HIL_SEED`, when set and numeric.
pub fn env_seed() -> Option<u64> {
    std::env::var("HIL_SEED").ok()?.trim().parse().ok()
}

/// Runs a loaded scenario on its own tokio runtime.
pub fn run(s: Scenario) -> Result<Outcome, HilError> {
    let bin = binary::serialine()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|source| HilError::Io {
            what: "building the tokio runtime".into(),
            source,
        })?;
    if s.lines > 1 {
        return rt.block_on(crate::multi_line::run_async(s, bin));
    }
    rt.block_on(run_async(s, bin))
}

/// One embedded broker per test process; scenarios use distinct sites.
pub(crate) fn broker() -> Result<EmbeddedBroker, HilError> {
    static B: OnceLock<Result<EmbeddedBroker, String>> = OnceLock::new();
    B.get_or_init(|| EmbeddedBroker::start().map_err(|e| e.to_string()))
        .clone()
        .map_err(HilError::Sim)
}

pub(crate) fn site_id(name: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(12)
        .collect();
    // At most 32 characters (the daemon's id rule).
    format!(
        "hil-{clean}-{}-{}",
        std::process::id() % 100_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> HilError {
    let what = what.into();
    move |source| HilError::Io { what, source }
}

/// The daemon as a child process, its stderr in a log file.
pub(crate) struct Daemon {
    pub(crate) child: Child,
    log: PathBuf,
    offset: u64,
    pub(crate) text: String,
}

impl Daemon {
    pub(crate) fn start(bin: &Path, config: &Path, log: PathBuf) -> Result<Daemon, HilError> {
        let stderr =
            fs::File::create(&log).map_err(io_err(format!("creating {}", log.display())))?;
        let child = Command::new(bin)
            .args(["run", "--config"])
            .arg(config)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(io_err(format!("starting {}", bin.display())))?;
        Ok(Daemon {
            child,
            log,
            offset: 0,
            text: String::new(),
        })
    }

    /// Reads what the log gained since the last call; true if `needle`
    /// appeared in it (or earlier).
    pub(crate) fn log_has(&mut self, needle: &str) -> bool {
        if let Ok(mut f) = fs::File::open(&self.log) {
            if f.seek(SeekFrom::Start(self.offset)).is_ok() {
                let mut buf = Vec::new();
                if let Ok(n) = f.read_to_end(&mut buf) {
                    self.offset += n as u64;
                    self.text.push_str(&String::from_utf8_lossy(&buf));
                }
            }
        }
        self.text.contains(needle)
    }

    pub(crate) fn tail(&mut self) -> String {
        self.log_has("");
        let lines: Vec<&str> = self.text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    pub(crate) fn signal(&self, sig: &str) -> Result<(), HilError> {
        let status = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .map_err(io_err("running kill"))?;
        if status.success() {
            Ok(())
        } else {
            Err(HilError::Sim(format!(
                "kill {sig} {} failed",
                self.child.id()
            )))
        }
    }

    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub(crate) async fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(s) = self.exited() {
                return Some(s);
            }
            if start.elapsed() >= limit {
                return None;
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The simulated marking device.
pub(crate) enum Marker {
    Framed(PrinterSim, FramedProfile),
    Laser(LaserSim),
    /// A recorded framed printer session played back.
    Replayed(FramedProfile),
}

/// The camera: simulated, or a recorded session played back.
enum CameraSide {
    Sim(CameraSim),
    Replayed(PathBuf),
}

impl CameraSide {
    fn log(&self, min_grade: serialine_core::Grade) -> Vec<serialine_sim::camera::Reported> {
        match self {
            CameraSide::Sim(sim) => sim.log(),
            CameraSide::Replayed(path) => crate::replay::camera_log(path, min_grade),
        }
    }
}

impl Marker {
    /// The framed printer jammed and ignored a message since.
    fn jammed(&self) -> bool {
        match self {
            Marker::Framed(sim, _) => sim.stats().ignored > 0,
            Marker::Laser(_) | Marker::Replayed(_) => false,
        }
    }
}

struct Ctx<'a> {
    s: &'a Scenario,
    root: PathBuf,
    site: String,
    mqtt_port: u16,
    /// The `[line.printer]` table.
    printer_section: String,
    camera_addr: String,
    /// Issue 14: the `[[line.aggregation]]` sections (empty without).
    aggregation_section: String,
}

impl Ctx<'_> {
    /// Writes the daemon's config; `quantity` 0 means no default job (the
    /// daemon reconciles and syncs its outbox, and waits).
    fn write_config(&self, quantity: u64) -> Result<PathBuf, HilError> {
        self.write_config_for(quantity, &self.s.job.gtin, &self.s.job.lot)
    }

    /// Like [`Ctx::write_config`], with the job's GTIN and lot given (a
    /// changeover's second job).
    fn write_config_for(&self, quantity: u64, gtin: &str, lot: &str) -> Result<PathBuf, HilError> {
        let s = self.s;
        let devices = format!(
            "{}\n\n{}",
            self.printer_section,
            camera_section(&self.camera_addr)
        );
        let text = config_head(s, "", &self.site, self.mqtt_port)
            + &line_section(
                s,
                LINE,
                "line.secret",
                &job_table(s, quantity, gtin, lot),
                &devices,
            )
            + &self.aggregation_section;
        write_config(&self.root, &text)
    }
}

fn secret_for(seed: u64) -> Vec<u8> {
    format!("hil line secret, seed {seed:020}, 32+ bytes").into_bytes()
}

async fn run_async(s: Scenario, bin: PathBuf) -> Result<Outcome, HilError> {
    let started = Instant::now();
    let fail = run_failure(&s);
    let mut dir = ScenarioDir::create(&s.name)?;
    let root = dir.root.clone();
    let site = site_id(&s.name);
    let secret = secret_for(s.seed);

    // Upstream: broker (behind a cuttable proxy for the daemon), issuer,
    // consumer, monitor.
    let upstream_side =
        Site::start(&s, &site, &root, &[(LINE.to_string(), secret.clone())]).await?;
    let Site {
        monitor,
        upstream,
        issuer,
        proxy,
        broker,
        ..
    } = &upstream_side;
    let mut attacks =
        crate::attack::Attacks::start(&s.attack, "127.0.0.1", broker.port, &site, upstream).await?;

    // Line equipment: the marker feeds what it marked to the camera. One
    // clock for every recording, so a printer's and a camera's recordings
    // merge into one timeline for a replay.
    let clock = std::time::Instant::now();
    let rec = |name: &str| {
        Recorder::create_at(root.join(name), clock)
            .map_err(|e| HilError::Sim(format!("recorder: {e}")))
    };
    let load_profile = || load_profile(&s);
    // Issue 14: units the camera reads good go on into the case packer.
    let (unit_pass, unit_feed) = crate::packaging::unit_feed(&s);
    let (marker, printer_section, tolerance, camera, camera_addr, replay_task) =
        if let Some(r) = &s.replay {
            let (profile_path, profile) = load_profile()?;
            let (task, printer_addr, camera_addr) =
                replay::start(r, rec("printer.rec")?, rec("camera.rec")?).await?;
            let depth = profile.buffer_depth;
            (
                Marker::Replayed(profile),
                framed_section(&profile_path, printer_addr),
                depth,
                CameraSide::Replayed(root.join("camera.rec")),
                camera_addr,
                Some(task),
            )
        } else {
            let (printed_tx, printed_rx) = tokio::sync::mpsc::unbounded_channel();
            let (marker, printer_section, tolerance) = match s.line.printer {
                PrinterKind::Framed => {
                    let (profile_path, profile) = load_profile()?;
                    let (sim, addr, depth) = start_printer(
                        &s,
                        &profile,
                        s.seed,
                        s.printer.jam_after,
                        printed_tx,
                        rec("printer.rec")?,
                        "printer",
                    )
                    .await?;
                    let section = framed_section(&profile_path, addr);
                    (Marker::Framed(sim, profile), section, depth)
                }
                PrinterKind::Laser => {
                    let text =
                        fs::read_to_string(crate::scenario::config_dir().join("laser-modbus.toml"))
                            .map_err(io_err("reading config/laser-modbus.toml"))?;
                    // The simulated marker answers at once: poll it as fast as it can.
                    let text = text.replace("poll_interval_ms = 20", "poll_interval_ms = 1");
                    // The scenarios' job is a GS1 element string: the marker's
                    // code object is in GS1 mode (the shipped map is set up
                    // for a Digital Link line, and the daemon refuses a job
                    // its printer's mode contradicts).
                    let text = text.replace("fnc1 = \"none\"", "fnc1 = \"printer\"");
                    let map_path = root.join("laser-map.toml");
                    fs::write(&map_path, &text).map_err(io_err("writing the laser map"))?;
                    let sim_map: LaserSimMap = toml::from_str(&text)
                        .map_err(|e| HilError::Sim(format!("laser map: {e}")))?;
                    let l = &s.laser;
                    let mut cfg = LaserSimConfig::new(sim_map);
                    cfg.mark_time = Duration::from_millis(l.mark_time_ms);
                    cfg.random_exceptions = l.exception_one_in.map(|one_in| RandomExceptions {
                        one_in,
                        seed: s.seed,
                    });
                    cfg.exception_every_nth_write = l.exception_every_nth_write;
                    cfg.drop_connection_after_marks = l.drop_connection_after_marks;
                    cfg.unserved = (l.unserved_ms > 0).then(|| UnservedPeriod {
                        how: l.unserved,
                        period: Duration::from_millis(l.unserved_ms),
                    });
                    cfg.record_path = Some(root.join("laser.jsonl"));
                    let sim = LaserSim::start(cfg, printed_tx)
                        .await
                        .map_err(|e| HilError::Sim(format!("laser: {e}")))?;
                    let section = format!(
                        "[line.printer]\nkind = \"laser\"\naddr = \"{}\"\nmap = \"{}\"\n",
                        sim.addr(),
                        map_path.display()
                    );
                    (Marker::Laser(sim), section, 1)
                }
            };
            let cknobs = CameraKnobs {
                other_line_rate: s.camera.other_line_rate,
                other_line_codes: other_line_codes(&s, issuer)?,
                pass_to: unit_pass,
                ..camera_knobs(&s, s.seed.wrapping_add(1))
            };
            let (camera, camera_addr) =
                start_camera(cknobs, printed_rx, rec("camera.rec")?, "camera").await?;
            (
                marker,
                printer_section,
                tolerance,
                CameraSide::Sim(camera),
                camera_addr,
                None,
            )
        };

    write_secret(&root.join("line.secret"), &secret, "the line secret")?;

    // Issue 14: the packaging levels' simulators, for the whole scenario.
    let packaging = match &s.aggregation {
        Some(a) => Some(crate::packaging::Packaging::start(&s, a, &root, unit_feed).await?),
        None => None,
    };
    let label_gtins = packaging
        .as_ref()
        .map(|p| p.label_gtins())
        .unwrap_or_default();

    let ctx = Ctx {
        s: &s,
        root: root.clone(),
        site: site.clone(),
        mqtt_port: proxy.port,
        printer_section,
        camera_addr: camera_addr.to_string(),
        aggregation_section: packaging
            .as_ref()
            .map(|p| p.config_sections())
            .unwrap_or_default(),
    };

    let mut violations: Vec<Violation> = Vec::new();
    let harness = |what: String| Violation::harness(&s.name, s.seed, what);
    let mut kill_points = s.kill_points().into_iter().peekable();
    let mut kill_marks: Vec<usize> = Vec::new();
    let mut outage: Option<Instant> = None;
    let mut outage_done = s.timeline.broker_outage.is_none();
    let mut freeze_done = s.timeline.freeze.is_none();
    let deadline = started + Duration::from_secs(s.timeout_secs);
    let decided = || {
        let line = upstream.line(LINE);
        // Serials voided by the fence are not units (issue 13 §2).
        let fenced = line.fenced.len() as u64;
        let up = (line.unique() as u64).saturating_sub(fenced);
        // The status counts fenced serials apart already.
        up.max(monitor.status().map_or(0, |st| st.decided))
    };
    // Issue 13 §2: steps on the daemon's durable state, and the ledgers
    // they set aside (the checker reads them too).
    let mut state_steps: std::collections::VecDeque<_> =
        s.timeline.state_steps().into_iter().collect();
    let has_state_steps = !state_steps.is_empty();
    let mut set_aside: Vec<PathBuf> = Vec::new();
    let mut runs = 0u32;
    let mut kills = 0u32;
    let mut replay_task = replay_task;
    let mut replay_result = None;
    let mut mid_job = false;
    // Issue 20: the last run ended on a SIGTERM with exit status 0.
    let mut clean_stop = false;
    // Issue 20: units decided in the ledger at the last kill.
    let mut ledger_base = 0u64;
    // Issue 20: when each SIGKILL was delivered (Unix ms).
    let mut kill_times_ms: Vec<u64> = Vec::new();
    // After a mid-job stop, one more run without a job reconciles.
    let mut reconcile_run = false;
    // A changeover by command was sent to the running daemon.
    let mut changeover_sent = false;
    // When the printer simulator first ignored a message while jammed.
    let mut jammed_at: Option<Instant> = None;
    // Issue 15: the after-commit moves the daemon accepted.
    let mut after_commit: Vec<(serialine_core::Serial, serialine_core::UnitState)> = Vec::new();
    let mut after_commit_done = !s.after_commit.any();
    // Issue 14: the rework moves the daemon accepted.
    let mut rework: Vec<checker::ReworkMove> = Vec::new();
    let mut rework_done = !s.rework.any();
    // Issue 15: the kill in the middle of a return was delivered.
    let mut return_killed = false;
    // Issue 14: the label kills still to come, and the labels they caught
    // in flight.
    let mut label_kills = LabelKills::new(&s);
    let mut killed_labels: Vec<String> = Vec::new();

    'runs: loop {
        // Issue 14: labels are outcomes too (upstream, the status), not
        // units: with packaging levels the ledger's count after the last
        // kill is the measure.
        let base = match packaging {
            Some(_) => ledger_base,
            None => decided().max(ledger_base),
        };
        let quantity = if reconcile_run {
            0
        } else {
            s.units.saturating_sub(base)
        };
        // With a state step pending, this run's job ends at its point, so
        // the step comes once every outcome is reported.
        let mut step_now = state_steps.front().copied().filter(|_| !reconcile_run);
        let quantity = match step_now {
            Some((point, _)) if point > base => quantity.min(point - base),
            _ => quantity,
        };
        if quantity == 0 {
            step_now = None;
        }
        // A changeover: the first product's job until `at_units`, then the
        // second product's for the rest.
        let config = match &s.timeline.changeover {
            Some(co) if !reconcile_run && base < co.at_units => {
                ctx.write_config(co.at_units - base)?
            }
            Some(co) if !reconcile_run => ctx.write_config_for(quantity, &co.gtin, &co.lot)?,
            _ => ctx.write_config(quantity)?,
        };
        runs += 1;
        let mut daemon = Daemon::start(&bin, &config, run_log(&root, runs))?;
        let mut run_seq = monitor.seq();
        let mut job_ended = quantity == 0;
        // Issue 14: the monitor's seq when the job was seen ended. A line
        // says `stopped` once its units are done, while its packaging
        // levels may still seal the last case or pallet (whose label and
        // pack then reach neither that status nor upstream before the
        // SIGTERM): with levels, the status that says the run is synced
        // must come after the job's end (the next one carrying counts, up
        // to a metrics interval later).
        let mut ended_seq = run_seq;
        loop {
            tokio::time::sleep(POLL).await;
            if let Some(what) = exited_on_its_own(&mut daemon, runs) {
                violations.push(harness(what));
                break 'runs;
            }
            if Instant::now() >= deadline {
                violations.push(harness(format!(
                    "timed out after {}s in run {runs}: {} decided of {}, upstream {} unique, status {:?}; log tail:\n{}",
                    s.timeout_secs,
                    decided(),
                    s.units,
                    upstream.line(LINE).unique(),
                    monitor.status().map(|st| (st.state, st.decided)),
                    daemon.tail()
                )));
                break;
            }
            // A replay that stopped at a difference ends the scenario: the
            // daemon would wait for replies that will never come.
            if replay_task.as_ref().is_some_and(|t| t.is_finished()) {
                if let Some(task) = replay_task.take() {
                    let result = task.finish(Duration::from_secs(10)).await;
                    let failed = result.is_err();
                    replay_result = Some(result);
                    if failed {
                        break;
                    }
                }
            }
            let now_decided = decided();
            attacks.tick(now_decided).await?;
            // Broker outage.
            if let Some(o) = &s.timeline.broker_outage {
                match outage {
                    None if !outage_done && now_decided >= o.at_units => {
                        proxy.cut();
                        outage = Some(Instant::now());
                    }
                    Some(t) if t.elapsed().as_secs_f64() >= o.secs => {
                        proxy.restore();
                        outage = None;
                        outage_done = true;
                    }
                    _ => {}
                }
            }
            // Freeze: the daemon stopped while the devices go on.
            if let Some(f) = &s.timeline.freeze {
                if !freeze_done && now_decided >= f.at_units {
                    freeze_done = true;
                    daemon.signal("-STOP")?;
                    tokio::time::sleep(Duration::from_secs_f64(f.secs)).await;
                    daemon.signal("-CONT")?;
                }
            }
            // SIGKILL and restart. A point is taken once this run made
            // progress (or, without a job, once it published a status), so
            // every point is its own kill. Issue 15: also in the middle of
            // the return of unused serials, at its first block; the next
            // run finishes it.
            let point_due = kill_points.peek().is_some_and(|&point| {
                let progressed = if quantity == 0 {
                    monitor.status().is_some_and(|st| st.seq > run_seq)
                } else {
                    now_decided > base
                };
                now_decided >= point && progressed && !reconcile_run
            });
            if point_due {
                kill_points.next();
            }
            let return_due = s.timeline.kill9_at_return
                && !return_killed
                && daemon.log_has("unused serials of block");
            return_killed |= return_due;
            // Issue 14: between a label's steps, as the case label printer
            // and scanner show them.
            let label_due = packaging.as_ref().and_then(|p| label_kills.due(p.cases()));
            if let Some(due) = &label_due {
                match due {
                    Ok(code) => killed_labels.push(code.clone()),
                    Err(what) => violations.push(harness(what.clone())),
                }
            }
            if point_due || return_due || label_due.is_some() {
                let at = kill9(&mut daemon, &fail).await?;
                kills += 1;
                kill_marks.push(camera.log(MIN_GRADE).len());
                kill_times_ms.push(at);
                // Issue 20, quantity: upstream lags the ledger, so the
                // next run's job is what the killed run's ledger left
                // undecided.
                if let Some(d) =
                    ledger_decided(ledger_path(&root, LINE), LINE, &secret, &label_gtins).await
                {
                    ledger_base = d;
                }
                continue 'runs;
            }
            // Done?
            let fresh = monitor
                .status()
                .filter(|st| st.seq > run_seq && st.state == "stopped");
            match s.stop_when {
                StopWhen::PrinterJammed if !reconcile_run => {
                    if marker.jammed() {
                        // The jam shows in the status only once the driver
                        // has timed out on it: stop when the status showed
                        // the expected device states, or after a bound (a
                        // loaded machine is slow, not wrong; the check
                        // after the run still reports a state never shown).
                        let since = *jammed_at.get_or_insert_with(Instant::now);
                        let shown = crate::monitor::check_device_states(
                            &monitor.devices(),
                            &s.expect.device_states,
                        )
                        .is_empty();
                        if shown || since.elapsed() >= JAM_STATUS_BOUND {
                            mid_job = true;
                            break;
                        }
                    }
                }
                _ => {
                    if !job_ended {
                        job_ended = daemon.log_has("job ended")
                            && (!changeover_sent || daemon.text.matches("job ended").count() >= 2);
                        if job_ended && packaging.is_some() {
                            ended_seq = monitor.seq();
                        }
                    }
                    let fresh = fresh.filter(|st| st.seq > ended_seq);
                    let synced = fresh.as_ref().is_some_and(|st| {
                        // Every outcome, the fence's voids included (the
                        // status' `decided` leaves them out: not units).
                        // Returns are one event per block range, not per
                        // unit; packs (issue 14) are events beside their
                        // label's outcome.
                        let up = upstream.line(LINE);
                        st.decided + st.json["counts"]["fenced"].as_u64().unwrap_or(0)
                            == up.unique() as u64
                                - up.returns.len() as u64
                                - aggregation_events(&up)
                            // After a restore or wipe upstream also holds the
                            // lost history's outcomes: an empty outbox is the
                            // line's "everything reported".
                            || (has_state_steps && st.json["outbox_depth"] == 0)
                    }) && fresh.is_some_and(|st| {
                        // Issue 20: stopped only once the daemon has
                        // deleted every acknowledged outbox entry, so a
                        // clean stop leaves nothing unreported.
                        st.json["outbox_depth"] == 0
                    });
                    if job_ended && synced && outage.is_none() && outage_done && attacks.done() {
                        // A state step ends its run's job (issue 13 §2):
                        // clean stop, copy / restore / wipe, restart.
                        if let Some((_, step)) = step_now.take() {
                            state_steps.pop_front();
                            stop_clean(&mut daemon, runs, &mut violations, &harness, None).await?;
                            state_step(&root, step, &mut set_aside)?;
                            continue 'runs;
                        }
                        // Changeover by command: the first job is over and
                        // the daemon keeps running; start the second job.
                        if let Some(co) = s.timeline.changeover.as_ref().filter(|co| {
                            co.by == crate::scenario::ChangeoverBy::Command
                                && !changeover_sent
                                && now_decided < s.units
                        }) {
                            send_job_start(
                                broker.port,
                                &site,
                                co,
                                &s.job.expiry,
                                s.units - now_decided,
                            )
                            .await?;
                            changeover_sent = true;
                            run_seq = monitor.seq();
                            job_ended = false;
                            continue;
                        }
                        // Issue 15: samples and decommissioning through
                        // the running daemon, once everything is reported.
                        if !after_commit_done {
                            after_commit_done = true;
                            match after_commit_step(&bin, &config, &s.after_commit, upstream).await
                            {
                                Ok(moves) => after_commit = moves,
                                Err(what) => violations.push(harness(what)),
                            }
                        }
                        // Issue 14: rework on the sealed cases, through
                        // the running daemon, once everything is reported.
                        if !rework_done {
                            rework_done = true;
                            let (moves, problems) =
                                crate::rework::rework_step(&bin, &config, &s.rework, upstream)
                                    .await;
                            rework = moves;
                            violations.extend(problems.into_iter().map(&harness));
                        }
                        break;
                    }
                }
            }
        }
        // Clean stop.
        clean_stop = stop_clean(&mut daemon, runs, &mut violations, &harness, None).await?;
        if mid_job && !reconcile_run && Instant::now() < deadline {
            reconcile_run = true;
            continue;
        }
        // The first product's job is done: the next run makes the second.
        if s.timeline.changeover.is_some()
            && violations.is_empty()
            && decided() < s.units
            && Instant::now() < deadline
        {
            continue;
        }
        break;
    }
    if outage.is_some() {
        proxy.restore();
    }
    if let Some(what) = kill_point_missed(kill_points.peek(), kills) {
        violations.push(harness(what));
    }
    if let Some(p) = &packaging {
        for what in label_kills.missed(p.cases()) {
            violations.push(harness(what));
        }
        if let Err(e) = p.write_logs(&root) {
            violations.push(harness(format!("writing the packaging logs: {e}")));
        }
    }
    if s.timeline.kill9_at_return {
        // The kill must have cut the return short: the next run says so.
        let finished = (2..=runs).any(|r| {
            fs::read_to_string(run_log(&root, r))
                .is_ok_and(|t| t.contains("return of unused serials was cut short"))
        });
        if !return_killed || !finished {
            violations.push(harness(format!(
                "kill9_at_return: killed in a return: {return_killed}; a later run finished a return cut short: {finished}"
            )));
        }
    }

    if let Some(task) = replay_task {
        replay_result = Some(task.finish(Duration::from_secs(10)).await);
    }
    if let Some(result) = replay_result {
        match result {
            Ok(r) => {
                for d in &r.devices {
                    tracing::info!(
                        device = %d.name,
                        matched = d.bytes_matched,
                        allowed = d.bytes_allowed_to_differ,
                        sent = d.bytes_sent,
                        "replay complete"
                    );
                }
            }
            Err(e) => violations.push(Violation {
                rule: crate::checker::Rule::Replay,
                ..harness(e)
            }),
        }
    }

    // The ledger, now that the daemon is gone.
    let store = open_ledger(ledger_path(&root, LINE), LINE, &secret, &fail).await?;
    let logs = read_logs(&root, runs);
    for problem in attacks.finish(&monitor.alarms(), &logs).await {
        violations.push(harness(problem));
    }
    let mut earlier = Vec::new();
    for path in set_aside {
        earlier.push(open_ledger(path, LINE, &secret, &fail).await?);
    }
    if let Some((p, step)) = state_steps.front() {
        violations.push(harness(format!(
            "state step {step:?} at {p} units never reached"
        )));
    }
    let input = CheckInput {
        scenario: s.name.clone(),
        seed: s.seed,
        line: LINE.to_string(),
        store: store.clone(),
        device: match &marker {
            Marker::Framed(_, profile) | Marker::Replayed(profile) => DeviceLog::Framed {
                recording: root.join("printer.rec"),
                profile: profile.clone(),
            },
            Marker::Laser(sim) => DeviceLog::Codes(sim.triggered_codes()),
        },
        camera_log: camera.log(MIN_GRADE),
        camera_kill_marks: kill_marks,
        alarm_tolerance: tolerance + s.line.camera_window + 8,
        upstream: upstream.line(LINE),
        issued: issuer.issued(LINE),
        logs,
        // A reconciling run followed a mid-job stop: nothing may be left in flight.
        mid_job: mid_job && !reconcile_run,
        units: s.units,
        expect: s.expect.clone(),
        stop_when: s.stop_when,
        earlier,
        events: checker::RunEvents {
            kill_times_ms,
            after_commit,
            rework,
            ..run_events(&s, &marker, kills, mid_job, clean_stop, tolerance, &root)
        },
        hierarchy: match &packaging {
            Some(p) => Some(
                p.input(
                    serialine_core::Gtin::parse(&s.job.gtin)
                        .map_err(|e| fail(format!("job.gtin: {e}")))?,
                    killed_labels,
                ),
            ),
            None => None,
        },
    };
    // Issue 20, no excuse without a record: a mid-job stop (a jam) that no
    // run reconciled before the deadline is a failure, not an excuse.
    if mid_job && !reconcile_run {
        violations.push(Violation {
            rule: crate::checker::Rule::Accounting,
            ..harness("stopped mid-job and no reconciling run followed before the deadline".into())
        });
    }
    let mut report = tokio::task::spawn_blocking(move || checker::check(&input))
        .await
        .map_err(|e| fail(format!("checker task: {e}")))?;
    let counts = store.counts();
    check_changeover(&s, &store, issuer, &report, &mut violations);
    if !has_state_steps {
        for m in check_job_reports(&root, &store, &read_logs(&root, runs)) {
            violations.push(Violation {
                rule: crate::checker::Rule::Accounting,
                ..harness(m)
            });
        }
    }
    drop(store);
    let invalidated = issuer.invalidated(LINE).len() as u64;
    if invalidated < s.expect.min_upstream_invalidated {
        violations.push(Violation {
            rule: crate::checker::Rule::Expectation,
            ..harness(format!(
                "expected at least {} serials invalidated upstream by the fence handshake, got {invalidated}",
                s.expect.min_upstream_invalidated
            ))
        });
    }
    violations.append(&mut report.violations);
    for m in check_unserved(&s, &marker) {
        violations.push(Violation {
            rule: crate::checker::Rule::Expectation,
            ..harness(m)
        });
    }
    for m in crate::monitor::check_device_states(&monitor.devices(), &s.expect.device_states) {
        violations.push(Violation {
            rule: crate::checker::Rule::Expectation,
            ..harness(format!("device status: {m}"))
        });
    }
    report.violations = violations;

    Ok(Outcome {
        counts,
        laser_unserved: match &marker {
            Marker::Laser(sim) if s.laser.unserved_ms > 0 => Some(sim.unserved_connections()),
            _ => None,
        },
        ..outcome(&s, started, runs, kills, report, &mut dir, monitor)
    })
}

/// Valid codes of another line's block (the scenario's product, serials
/// issued to [`OTHER_LINE`]), for the camera's other-line knob; none when
/// the knob is off, so other scenarios' serials stay as they were.
fn other_line_codes(s: &Scenario, issuer: &Issuer) -> Result<Vec<String>, HilError> {
    use serialine_core::code::{self, CodeData, Template};
    if s.camera.other_line_rate <= 0.0 {
        return Ok(Vec::new());
    }
    issuer.add_line(OTHER_LINE, &secret_for(s.seed ^ 0x0_07e4));
    issuer
        .issue(OTHER_LINE)
        .map_err(|e| HilError::Sim(format!("issuer, block for {OTHER_LINE}: {e}")))?;
    let bad = |what: &str, e: String| HilError::Sim(format!("job.{what}: {e}"));
    let gtin = serialine_core::Gtin::parse(&s.job.gtin).map_err(|e| bad("gtin", e.to_string()))?;
    let lot =
        serialine_core::Lot::new(s.job.lot.as_str()).map_err(|e| bad("lot", e.to_string()))?;
    let expiry =
        serialine_core::Expiry::parse(&s.job.expiry).map_err(|e| bad("expiry", e.to_string()))?;
    let mut serials: Vec<_> = issuer.issued(OTHER_LINE).into_iter().collect();
    serials.sort();
    serials
        .into_iter()
        .map(|serial| {
            let data = CodeData {
                gtin,
                lot: Some(lot.clone()),
                expiry: Some(expiry),
                serial,
            };
            code::render(&Template::Gs1DataMatrix, &data)
                .map_err(|e| HilError::Sim(format!("rendering another line's code: {e}")))
        })
        .collect()
}

/// The line whose codes the other-line camera knob shows.
pub const OTHER_LINE: &str = "line-2";

/// SIGTERM and wait, as at the end of a run; a failure is a violation.
/// Returns whether the daemon exited 0 within its bound.
///
/// With `backtraces` (the scenario and its directory), a daemon that does
/// not exit within [`TERM_BOUND`] is called hung (a committer that never
/// returns blocks the drain): every thread's backtrace is taken before the
/// SIGKILL and named in the violation.
pub(crate) async fn stop_clean(
    daemon: &mut Daemon,
    runs: u32,
    violations: &mut Vec<Violation>,
    harness: &impl Fn(String) -> Violation,
    backtraces: Option<(&Scenario, &Path)>,
) -> Result<bool, HilError> {
    daemon.signal("-TERM")?;
    match daemon.wait(TERM_BOUND).await {
        Some(status) if status.success() => return Ok(true),
        Some(status) => violations.push(harness(format!(
            "run {runs}: SIGTERM exit status {status}, expected 0; log tail:\n{}",
            daemon.tail()
        ))),
        None => {
            let what = match backtraces {
                Some((s, root)) => {
                    let pid = daemon.child.id();
                    let bt =
                        crate::multi_line::capture_backtraces(pid, root, &s.name, s.seed).await;
                    format!(
                        "hang: run {runs} did not exit within {TERM_BOUND:?} of SIGTERM (pid {pid});\n{bt}\nlog tail:\n{}",
                        daemon.tail()
                    )
                }
                None => format!(
                    "run {runs}: did not exit within {TERM_BOUND:?} of SIGTERM; log tail:\n{}",
                    daemon.tail()
                ),
            };
            violations.push(harness(what));
            daemon.signal("-9")?;
            daemon.wait(Duration::from_secs(10)).await;
        }
    }
    Ok(false)
}

/// Issue 13 §2: what an operator's restore (or a re-imaged controller) does
/// to the daemon's state while it is stopped. A ledger taken away is kept
/// aside, for the checker: it holds the history the line lost.
fn state_step(
    root: &Path,
    step: crate::scenario::StateStep,
    set_aside: &mut Vec<PathBuf>,
) -> Result<(), HilError> {
    use crate::scenario::StateStep;
    let ledger = root.join("state/ledger").join(LINE);
    let copy = root.join("ledger-copy");
    let aside = root.join(format!("set-aside-{}", set_aside.len() + 1));
    match step {
        StateStep::CopyLedger => copy_dir(&ledger, &copy),
        StateStep::RestoreLedger => {
            fs::rename(&ledger, &aside).map_err(io_err("setting the ledger aside"))?;
            set_aside.push(aside);
            copy_dir(&copy, &ledger)
        }
        StateStep::WipeState => {
            fs::rename(root.join("state"), &aside)
                .map_err(io_err("setting the state directory aside"))?;
            set_aside.push(aside.join("ledger").join(LINE));
            Ok(())
        }
    }
}

fn copy_dir(from: &Path, to: &Path) -> Result<(), HilError> {
    fs::create_dir_all(to).map_err(io_err(format!("creating {}", to.display())))?;
    for e in fs::read_dir(from).map_err(io_err(format!("reading {}", from.display())))? {
        let e = e.map_err(io_err("reading a directory entry"))?;
        let target = to.join(e.file_name());
        if e.file_type().map_err(io_err("file type"))?.is_dir() {
            copy_dir(&e.path(), &target)?;
        } else {
            fs::copy(e.path(), &target)
                .map_err(io_err(format!("copying to {}", target.display())))?;
        }
    }
    Ok(())
}

/// A changeover scenario shows something only if both products were
/// printed and the first product's blocks were still buffered while the
/// second ran; and whatever the scenario, no product's buffer ends above the
/// high-water mark (issue 13, sections 3 and 5).
fn check_changeover(
    s: &Scenario,
    store: &Store,
    issuer: &Issuer,
    report: &Report,
    violations: &mut Vec<Violation>,
) {
    let fail = |what: String| Violation {
        rule: crate::checker::Rule::Product,
        ..Violation::harness(&s.name, s.seed, what)
    };
    let gtins: std::collections::BTreeSet<_> = issuer.blocks(LINE).iter().map(|b| b.gtin).collect();
    for g in &gtins {
        match store.buffer_depth_for(g) {
            Ok(d) if d <= s.line.high_water_serials => {}
            Ok(d) => violations.push(fail(format!(
                "{d} serials of GTIN {} buffered, above the high-water mark {}",
                g.as_string(),
                s.line.high_water_serials
            ))),
            Err(e) => violations.push(fail(format!("buffer depth of {}: {e}", g.as_string()))),
        }
    }
    let Some(co) = &s.timeline.changeover else {
        return;
    };
    for gtin in [&s.job.gtin, &co.gtin] {
        if report
            .printed_per_gtin
            .get(gtin.as_str())
            .copied()
            .unwrap_or(0)
            == 0
        {
            violations.push(fail(format!(
                "changeover: no code printed for GTIN {gtin} ({:?})",
                report.printed_per_gtin
            )));
        }
    }
    let first = serialine_core::Gtin::parse(&s.job.gtin).ok();
    let left = first.map(|g| store.buffer_depth_for(&g).unwrap_or(0));
    if left.unwrap_or(0) == 0 {
        violations.push(fail(
            "changeover: none of the first product's serials stayed buffered, so the second job was never offered them"
                .into(),
        ));
    }
}

/// Issue 15: every job in the final ledger was ended (a killed run's at the
/// next start, as interrupted) and reconciled: its report file exists and
/// counts what the ledger counts for it (its tally, which must equal a
/// count of its records), and it balances or a
/// `job-unbalanced` alarm was logged; and every serial that left the pool,
/// but the fence's voids, was sent by one of the jobs. Not after a state
/// step: a restored ledger numbers its jobs again, the report files stay.
fn check_job_reports(root: &Path, store: &Store, logs: &[String]) -> Vec<String> {
    let mut problems = Vec::new();
    let jobs = match store.jobs() {
        Ok(j) => j,
        Err(e) => return vec![format!("jobs: reading the ledger's jobs: {e}")],
    };
    let dir = root.join("state").join("reports").join(LINE);
    let mut sent_by_jobs = 0;
    for (n, entry) in &jobs {
        if entry.ended_ms.is_none() {
            problems.push(format!("jobs: job {n} was never ended"));
        }
        let archive = root.join("state").join("archive").join(LINE);
        let (ledger, scanned) = match (
            store.job_report(*n),
            store.job_report_by_scan(*n, Some(&archive)),
        ) {
            (Ok(r), Ok(s)) => (r, s),
            (Err(e), _) | (_, Err(e)) => {
                problems.push(format!("jobs: job {n}: {e}"));
                continue;
            }
        };
        // The tally the ledger keeps with every transition is exact.
        let counts = |r: &serialine_store::JobReport| {
            (
                (r.sent, r.in_flight, r.committed, r.synced),
                (r.sampled, r.decommissioned, r.voided),
                r.rejected.clone(),
            )
        };
        if counts(&ledger) != counts(&scanned) {
            problems.push(format!(
                "jobs: job {n}'s tally {:?} differs from a count of its records {:?}",
                counts(&ledger),
                counts(&scanned)
            ));
        }
        sent_by_jobs += ledger.sent;
        let path = dir.join(format!("job-{n}.json"));
        let file: serde_json::Value = match fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
        {
            Some(v) => v,
            None => {
                problems.push(format!(
                    "jobs: job {n} has no readable report at {}",
                    path.display()
                ));
                continue;
            }
        };
        if file["sent"].as_u64() != Some(ledger.sent) {
            problems.push(format!(
                "jobs: job {n}'s report says {} sent, its ledger records {}",
                file["sent"], ledger.sent
            ));
        }
        if file["balanced"] != true && !logs.iter().any(|l| l.contains("job-unbalanced")) {
            problems.push(format!(
                "jobs: job {n} does not balance and no job-unbalanced alarm was logged"
            ));
        }
    }
    let c = store.counts();
    // Fence voids and returned serials never reached a device: no job sent them.
    let left = c.left_pool() - c.fenced - c.returned;
    if sent_by_jobs != left {
        problems.push(format!(
            "jobs: {} jobs sent {sent_by_jobs} serials, {left} left the pool (fence voids apart)",
            jobs.len()
        ));
    }
    problems
}

/// The service binary on the run's config, as an operator runs it.
pub(crate) struct Cli {
    pub(crate) bin: PathBuf,
    pub(crate) config: PathBuf,
}

impl Cli {
    /// `serialine ARGS --json --config CFG`: its JSON answer.
    pub(crate) async fn json(&self, args: Vec<String>) -> Result<serde_json::Value, String> {
        let (bin, config) = (self.bin.clone(), self.config.clone());
        let shown = args.join(" ");
        let out = tokio::task::spawn_blocking(move || {
            Command::new(&bin)
                .args(&args)
                .args(["--json", "--config"])
                .arg(&config)
                .env_remove("SERIALINE_CONFIG")
                .output()
        })
        .await
        .map_err(|e| format!("serialine {shown}: {e}"))?
        .map_err(|e| format!("serialine {shown}: {e}"))?;
        serde_json::from_slice(&out.stdout).map_err(|e| {
            format!(
                "serialine {shown}: not a JSON answer ({e}): {:?}; stderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// Waits until `serialine status` over the control socket shows an
    /// empty outbox, at most until `deadline` (`bound` after the step
    /// began); otherwise what it showed last.
    pub(crate) async fn outbox_empty_by(
        &self,
        deadline: Instant,
        bound: Duration,
    ) -> Option<String> {
        loop {
            let outbox = match self.json(vec!["status".into()]).await {
                Ok(v) => v[0]["outbox"].as_u64(),
                Err(_) => None,
            };
            if outbox == Some(0) {
                return None;
            }
            if Instant::now() >= deadline {
                return Some(format!(
                    "outbox at {outbox:?} after {bound:?} (status over the control socket)"
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Issue 15, `[after_commit]`: samples and decommissions committed units
/// with `serialine unit` (the real binary, over the running daemon's
/// control socket), asks for never-issued serials and for a decommissioned
/// one to be sampled (each must be refused), then waits (at most 30 s)
/// until upstream holds every accepted move. Returns the accepted moves.
async fn after_commit_step(
    bin: &Path,
    config: &Path,
    ac: &crate::scenario::AfterCommit,
    upstream: &serialine_sim::upstream::Upstream,
) -> Result<Vec<(serialine_core::Serial, serialine_core::UnitState)>, String> {
    use serialine_core::{Serial, UnitState};
    let mut committed: Vec<String> = upstream
        .line(LINE)
        .events
        .values()
        .filter(|(_, st)| st == "committed")
        .map(|(s, _)| s.clone())
        .collect();
    committed.sort();
    if committed.len() < ac.sample + ac.decommission {
        return Err(format!(
            "after_commit: {} committed units, {} needed",
            committed.len(),
            ac.sample + ac.decommission
        ));
    }
    let sampled = committed[..ac.sample].to_vec();
    let decommissioned = committed[ac.sample..ac.sample + ac.decommission].to_vec();
    // The service binary as an operator runs it, on the run's config.
    let cli = Cli {
        bin: bin.to_path_buf(),
        config: config.to_path_buf(),
    };
    let unit = |args: Vec<String>| {
        let cli = &cli;
        async move {
            let v = cli
                .json([vec!["unit".to_string()], args.clone()].concat())
                .await?;
            let results: Vec<serde_json::Value> = v
                .as_array()
                .cloned()
                .ok_or_else(|| format!("serialine unit {args:?}: not a list of results: {v}"))?;
            Ok::<_, String>(results)
        }
    };
    let accepted = |results: &[serde_json::Value], to: UnitState| -> Vec<(Serial, UnitState)> {
        results
            .iter()
            .filter(|r| r["ok"] == true)
            .filter_map(|r| r["serial"].as_str().and_then(|s| Serial::new(s).ok()))
            .map(|s| (s, to))
            .collect()
    };
    let mut moves = Vec::new();
    let mut problems = Vec::new();
    let sample = UnitState::Sampled(serialine_core::SamplePurpose::Qa);
    let destroy = UnitState::Decommissioned(serialine_core::DecommissionReason::Damaged);
    if !sampled.is_empty() {
        let mut args = vec!["sample".to_string()];
        args.extend(sampled.iter().cloned());
        args.extend(["--purpose".to_string(), "qa".to_string()]);
        let r = unit(args).await?;
        moves.extend(accepted(&r, sample));
    }
    let mut to_destroy = decommissioned.clone();
    to_destroy.extend(sampled.iter().take(ac.sample_then_decommission).cloned());
    if !to_destroy.is_empty() {
        let mut args = vec!["decommission".to_string()];
        args.extend(to_destroy.iter().cloned());
        args.extend(["--reason".to_string(), "damaged".to_string()]);
        let r = unit(args).await?;
        moves.extend(accepted(&r, destroy));
    }
    let expected = sampled.len() + to_destroy.len();
    if moves.len() != expected {
        problems.push(format!(
            "after_commit: {} of {expected} moves accepted",
            moves.len()
        ));
    }
    if ac.refused > 0 {
        let mut args = vec!["sample".to_string()];
        args.extend((0..ac.refused).map(|i| format!("NOTISSUED{i}")));
        args.extend(decommissioned.first().cloned());
        args.extend(["--purpose".to_string(), "qa".to_string()]);
        let r = unit(args).await?;
        for x in r.iter().filter(|x| x["ok"] == true) {
            problems.push(format!(
                "after_commit: {} accepted, must be refused",
                x["serial"]
            ));
        }
    }
    // Every accepted move reaches upstream.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let line = upstream.line(LINE);
        let held = moves
            .iter()
            .filter(|(serial, to)| {
                line.events
                    .values()
                    .any(|(s, st)| s == serial.as_str() && st == to.name())
            })
            .count();
        if held == moves.len() {
            break;
        }
        if Instant::now() >= deadline {
            problems.push(format!(
                "after_commit: upstream holds {held} of {} moves after 30 s",
                moves.len()
            ));
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    // ... and upstream's acks reach the ledger (`serialine status` over
    // the control socket), so a clean stop leaves no outbox entry.
    if let Some(problem) = cli.outbox_empty_by(deadline, Duration::from_secs(30)).await {
        problems.push(format!("after_commit: {problem}"));
    }
    match problems.is_empty() {
        true => Ok(moves),
        false => Err(problems.join("; ")),
    }
}

/// Publishes `cmd/job/start` for the changeover's second job and waits
/// (at most 10 s) until the broker has it.
async fn send_job_start(
    port: u16,
    site: &str,
    co: &crate::scenario::Changeover,
    expiry: &str,
    quantity: u64,
) -> Result<(), HilError> {
    use rumqttc::{Event, Packet, QoS};
    let mut o = rumqttc::MqttOptions::new(format!("hil-cmd-{site}"), "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(10));
    let (client, mut el) = rumqttc::AsyncClient::new(o, 8);
    let topic = format!("serialine/{site}/{LINE}/cmd/job/start");
    let body = serde_json::json!({
        "request_id": "hil-changeover",
        "gtin": co.gtin,
        "lot": co.lot,
        "expiry": expiry,
        "quantity": quantity,
        "template": "gs1-data-matrix",
    });
    // Signed and dated like any command the daemon accepts (issue 13 §4).
    let body =
        serialine_uplink::sign_command(&crate::attack::COMMAND_KEY, &topic, body, "hil-changeover");
    client
        .publish(topic, QoS::AtLeastOnce, false, body.to_string())
        .await
        .map_err(|e| HilError::Sim(format!("cmd/job/start: {e}")))?;
    let acked = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await;
    let _ = client.disconnect().await;
    match acked {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(HilError::Sim(format!("cmd/job/start: {e}"))),
        Err(_) => Err(HilError::Sim(
            "cmd/job/start not acknowledged within 10 s".into(),
        )),
    }
}

/// The laser's unserved period: the daemon did connect in it (or the
/// scenario tested nothing), and no more often than
/// `expect.max_unserved_connections`.
fn check_unserved(s: &Scenario, marker: &Marker) -> Vec<String> {
    let Marker::Laser(sim) = marker else {
        return Vec::new();
    };
    let n = sim.unserved_connections();
    let mut problems = Vec::new();
    if s.laser.unserved_ms > 0 && n == 0 {
        problems.push(format!(
            "laser: no connection in its {} ms unserved period",
            s.laser.unserved_ms
        ));
    }
    if let Some(max) = s.expect.max_unserved_connections {
        if n > max {
            problems.push(format!(
                "laser: {n} connections accepted and turned away in its {} ms unserved period, expected at most {max} (the driver must back off)",
                s.laser.unserved_ms
            ));
        }
    }
    problems
}

/// Issue 20: the faults the simulators and the harness recorded, for the
/// checker's accounting.
pub(crate) fn run_events(
    s: &Scenario,
    marker: &Marker,
    kills: u32,
    mid_job: bool,
    clean_stop: bool,
    printer_depth: usize,
    root: &Path,
) -> checker::RunEvents {
    let _ = kills;
    let mut ev = checker::RunEvents {
        in_flight_bound: (printer_depth + s.line.camera_window) as u64,
        clean_stop,
        mid_job_stops: u64::from(mid_job),
        outages: u64::from(s.timeline.broker_outage.is_some()),
        ..checker::RunEvents::default()
    };
    match marker {
        Marker::Framed(sim, _) => {
            let st = sim.stats();
            ev.refusals = st.naked;
            let p = &s.printer;
            let jammed = st.ignored > 0 || p.jam_after.is_some_and(|n| st.printed >= n);
            let dropped = p.disconnect_after.is_some_and(|n| st.printed >= n);
            ev.device_events = u64::from(jammed) + u64::from(dropped);
            ev.printer_noise = p.garbage_bytes > 0;
        }
        Marker::Laser(sim) => {
            ev.refusals = sim
                .records()
                .iter()
                .filter(|x| x.response.starts_with("Exception") || x.response == "(dropped)")
                .count() as u64;
            let dropped = s
                .laser
                .drop_connection_after_marks
                .is_some_and(|n| sim.marks() >= n);
            ev.device_events = u64::from(dropped);
        }
        Marker::Replayed(profile) => {
            // The recorded printer's NAKs, from the session's recording.
            if let (Ok(p), Ok(rec)) = (
                profile.compile(),
                serialine_sim::recording::Recording::load(root.join("printer.rec")),
            ) {
                let nak = p.framing.nak;
                ev.refusals = rec
                    .bytes(serialine_sim::recording::Direction::Tx)
                    .iter()
                    .filter(|&&b| b == nak)
                    .count() as u64;
            }
        }
    }
    ev.camera_drops = u64::from(s.camera.disconnect_after.is_some());
    ev
}

/// Issue 14: upstream's aggregation events (packs, unpacks): events beside
/// their label's outcome, not outcomes.
fn aggregation_events(up: &serialine_sim::upstream::LineEvents) -> u64 {
    up.events
        .values()
        .filter(|(_, st)| matches!(st.as_str(), "packed" | "unpacked"))
        .count() as u64
}

/// Issue 14: the timeline's kills between a case label's steps
/// (`kill9_at_label_sent`, `kill9_at_label_printed`), each taken once.
struct LabelKills {
    /// The N-th label received by the case label printer.
    sent: Option<u64>,
    /// The N-th label it printed.
    printed: Option<u64>,
}

impl LabelKills {
    fn new(s: &Scenario) -> LabelKills {
        LabelKills {
            sent: s.timeline.kill9_at_label_sent,
            printed: s.timeline.kill9_at_label_printed,
        }
    }

    /// A kill due now: `Ok(the label code in flight)`, or `Err(why the kill
    /// came too late to be between the steps)`; the kill is taken either
    /// way, so the scenario goes on. Checked before the SIGKILL, so what
    /// the devices show is what they had done when the daemon died.
    fn due(&mut self, cases: &crate::packaging::SimLevel) -> Option<Result<String, String>> {
        let at = |n: u64| usize::try_from(n - 1).unwrap_or(usize::MAX);
        if let Some(n) = self.sent {
            let received = cases.formats_received();
            if let Some(code) = received.get(at(n)) {
                self.sent = None;
                let printed = cases.printed().contains(code);
                return Some(match printed {
                    false => Ok(code.clone()),
                    true => Err(format!(
                        "kill9_at_label_sent = {n}: label {code:?} was printed before the kill; raise aggregation.label_print_time_ms"
                    )),
                });
            }
        }
        if let Some(n) = self.printed {
            let printed = cases.printed();
            if let Some(code) = printed.get(at(n)) {
                self.printed = None;
                let read = cases.scanner_log().iter().any(|r| &r.printed == code);
                return Some(match read {
                    false => Ok(code.clone()),
                    true => Err(format!(
                        "kill9_at_label_printed = {n}: label {code:?} was read before the kill; raise aggregation.scanner_read_latency_ms"
                    )),
                });
            }
        }
        None
    }

    /// The label kills never reached.
    fn missed(&self, cases: &crate::packaging::SimLevel) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(n) = self.sent {
            out.push(format!(
                "kill9_at_label_sent = {n} never reached: the case label printer received {} label(s)",
                cases.formats_received().len()
            ));
        }
        if let Some(n) = self.printed {
            out.push(format!(
                "kill9_at_label_printed = {n} never reached: the case label printer printed {} label(s)",
                cases.printed().len()
            ));
        }
        out
    }
}
