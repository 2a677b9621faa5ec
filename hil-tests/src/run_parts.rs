//! The pieces of a scenario run that the one-line runner
//! ([`crate::harness`]) and the several-line runner ([`crate::multi_line`])
//! share, so both do them the same way: the scenario directory and whether
//! it is kept, the site's upstream side, the simulators' knobs, a SIGKILL
//! and the ledger read after it, the run logs, and the [`Outcome`].

use crate::checker::Report;
use crate::harness::{broker, io_err, Daemon, Outcome};
use crate::monitor::Monitor;
use crate::scenario::Scenario;
use crate::HilError;
use serialine_core::UnitState;
use serialine_devices::camera::CameraProfile;
use serialine_devices::printer::FramedProfile;
use serialine_devices::UnitId;
use serialine_sim::broker::{EmbeddedBroker, MqttTarget};
use serialine_sim::cable::Cable as Proxy;
use serialine_sim::camera::{CameraKnobs, CameraSim};
use serialine_sim::issuer::{Issuer, IssuerTask};
use serialine_sim::printer::{PrinterKnobs, PrinterSim};
use serialine_sim::recording::Recorder;
use serialine_sim::upstream::{Upstream, UpstreamTask};
use serialine_store::{Counts, Store, StoreOptions};
use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

/// The error for a run the harness could not carry on with (as opposed to
/// a violation it found), naming the scenario and seed.
pub(crate) fn run_failure(s: &Scenario) -> impl Fn(String) -> HilError + '_ {
    move |message| HilError::Run {
        scenario: s.name.clone(),
        seed: s.seed,
        message,
    }
}

/// The scenario's temporary directory (ledgers, logs, recordings).
pub(crate) struct ScenarioDir {
    /// Removed from disk when dropped, unless [`ScenarioDir::keep_if`]
    /// kept it.
    dir: Option<tempfile::TempDir>,
    /// Its canonical path (the daemon's config names files by it).
    pub(crate) root: PathBuf,
}

impl ScenarioDir {
    pub(crate) fn create(name: &str) -> Result<ScenarioDir, HilError> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("hil-{name}-"))
            .tempdir()
            .map_err(io_err("creating the scenario directory"))?;
        let root = fs::canonicalize(dir.path()).map_err(io_err("canonicalize"))?;
        Ok(ScenarioDir {
            dir: Some(dir),
            root,
        })
    }

    /// The directory the outcome names: kept on disk when the report has
    /// violations or `HIL_KEEP` is set; otherwise it is removed when `self`
    /// is dropped (after the simulators writing into it are gone).
    fn keep_if(&mut self, report: &Report) -> PathBuf {
        let keep = !report.violations.is_empty()
            || std::env::var("HIL_KEEP").is_ok_and(|v| v != "0" && !v.is_empty());
        match self.dir.take() {
            Some(dir) if keep => dir.keep(),
            other => {
                self.dir = other;
                self.root.clone()
            }
        }
    }
}

/// The site's side of the daemon: the broker (the daemon reaches it
/// through a cuttable proxy), the issuer, the upstream consumer and the
/// status monitor. Fields are dropped in order: the reverse of starting.
pub(crate) struct Site {
    pub(crate) monitor: Monitor,
    _upstream_task: UpstreamTask,
    pub(crate) upstream: Upstream,
    _issuer_task: IssuerTask,
    pub(crate) issuer: Issuer,
    pub(crate) proxy: Proxy,
    pub(crate) broker: EmbeddedBroker,
}

impl Site {
    /// Starts it for `site`, the issuer serving `lines` (id, secret), and
    /// writes the MQTT keys into `root`.
    pub(crate) async fn start(
        s: &Scenario,
        site: &str,
        root: &Path,
        lines: &[(String, Vec<u8>)],
    ) -> Result<Site, HilError> {
        let broker = broker()?;
        let proxy = Proxy::start(broker.addr())
            .await
            .map_err(|source| HilError::Io {
                what: "broker cable (proxy)".into(),
                source,
            })?;
        let target = |id: &str| MqttTarget::new("127.0.0.1", broker.port, format!("{id}-{site}"));
        let issuer = Issuer::new(
            format!("hil issuer {}", s.seed).as_bytes(),
            s.line.block_size,
        );
        for (id, secret) in lines {
            issuer.add_line(id, secret);
        }
        let issuer_task = issuer
            .spawn(&target("hil-issuer"), Some(site))
            .await
            .map_err(|e| HilError::Sim(format!("issuer: {e}")))?;
        let upstream = Upstream::new();
        upstream.set_ack_key(Some(crate::attack::ACK_KEY));
        let upstream_task = upstream
            .spawn(&target("hil-upstream"), Some(site))
            .await
            .map_err(|e| HilError::Sim(format!("upstream: {e}")))?;
        let monitor = Monitor::start("127.0.0.1", broker.port, site).await?;
        crate::attack::write_keys(root)?;
        Ok(Site {
            monitor,
            _upstream_task: upstream_task,
            upstream,
            _issuer_task: issuer_task,
            issuer,
            proxy,
            broker,
        })
    }

    /// The units decided by `line`: the most of upstream's unique events
    /// and the line's retained status.
    pub(crate) fn decided(&self, line: &str) -> u64 {
        let events = self.upstream.line(line);
        // Serials voided by the fence are not units (issue 13 §2); the
        // status counts them apart already.
        let up = (events.unique() as u64).saturating_sub(events.fenced.len() as u64);
        up.max(self.monitor.status_of(line).map_or(0, |st| st.decided))
    }
}

/// The scenario's printer profile: its canonical path (for the daemon's
/// config) and the profile.
pub(crate) fn load_profile(s: &Scenario) -> Result<(PathBuf, FramedProfile), HilError> {
    let profile_path = crate::scenario::config_dir().join(&s.line.printer_profile);
    let profile_path = fs::canonicalize(&profile_path).map_err(io_err(format!(
        "printer profile {}",
        profile_path.display()
    )))?;
    let profile: FramedProfile = toml::from_str(
        &fs::read_to_string(&profile_path).map_err(io_err("reading the printer profile"))?,
    )
    .map_err(|e| HilError::Sim(format!("printer profile: {e}")))?;
    Ok((profile_path, profile))
}

/// The `[line.printer]` table of a framed printer at `addr`.
pub(crate) fn framed_section(profile_path: &Path, addr: SocketAddr) -> String {
    format!(
        "[line.printer]\nkind = \"framed\"\nprofile = \"{}\"\ntransport = {{ kind = \"tcp\", addr = \"{addr}\" }}\n",
        profile_path.display()
    )
}

/// Starts a framed printer simulator of `profile` on 127.0.0.1 with the
/// scenario's `[printer]` knobs, sending what it printed to `printed`;
/// `what` names it in an error. Returns it, its address and its buffer
/// depth.
pub(crate) async fn start_printer(
    s: &Scenario,
    profile: &FramedProfile,
    seed: u64,
    jam_after: Option<u64>,
    printed: UnboundedSender<(UnitId, String)>,
    recorder: Recorder,
    what: &str,
) -> Result<(PrinterSim, SocketAddr, usize), HilError> {
    let p = &s.printer;
    let depth = p.buffer_depth.unwrap_or(profile.buffer_depth);
    let knobs = PrinterKnobs {
        print_time: Duration::from_millis(p.print_time_ms),
        buffer_depth: Some(depth),
        nak_rate: p.nak_rate,
        seed,
        jam_after,
        disconnect_after: p.disconnect_after,
        garbage_bytes: p.garbage_bytes,
        wire_bytes_per_sec: None,
    };
    let (sim, addr) =
        PrinterSim::listen("127.0.0.1:0", profile, knobs, Some(printed), Some(recorder))
            .await
            .map_err(|e| HilError::Sim(format!("{what}: {e}")))?;
    Ok((sim, addr, depth))
}

/// The camera simulator's knobs from the scenario's `[camera]`, without
/// another line's codes.
pub(crate) fn camera_knobs(s: &Scenario, seed: u64) -> CameraKnobs {
    let c = &s.camera;
    CameraKnobs {
        seed,
        no_read_rate: c.no_read_rate,
        misread_rate: c.misread_rate,
        foreign_rate: c.foreign_rate,
        duplicate_rate: c.duplicate_rate,
        low_grade_rate: c.low_grade_rate,
        garbage_rate: c.garbage_rate,
        disconnect_after: c.disconnect_after,
        double_trigger_rate: c.double_trigger_rate,
        double_trigger_at: c.double_trigger_at,
        refed_rate: c.refed_rate,
        symbology_id: c.symbology_id.clone(),
        plain_symbol_rate: c.plain_symbol_rate,
        plain_symbol_at: c.plain_symbol_at.clone(),
        read_latency: Duration::from_millis(c.read_latency_ms),
        ..CameraKnobs::default()
    }
}

/// Starts a camera simulator on 127.0.0.1 that sees what the marker
/// sends on `printed`; `what` names it in an error.
pub(crate) async fn start_camera(
    knobs: CameraKnobs,
    printed: UnboundedReceiver<(UnitId, String)>,
    recorder: Recorder,
    what: &str,
) -> Result<(CameraSim, SocketAddr), HilError> {
    CameraSim::listen(
        "127.0.0.1:0",
        &CameraProfile::default(),
        knobs,
        printed,
        Some(recorder),
    )
    .await
    .map_err(|e| HilError::Sim(format!("{what}: {e}")))
}

/// The `[line.camera]` table of a camera at `addr`.
pub(crate) fn camera_section(addr: impl std::fmt::Display) -> String {
    format!("[line.camera]\ntransport = {{ kind = \"tcp\", addr = \"{addr}\" }}\n")
}

/// Writes a line's secret file, readable by its owner only (the daemon
/// refuses a secret others can read). `what` names it in an error.
pub(crate) fn write_secret(path: &Path, secret: &[u8], what: &str) -> Result<(), HilError> {
    fs::write(path, secret).map_err(io_err(format!("writing {what}")))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .map_err(io_err(format!("chmod {what}")))
}

/// The log file of daemon run `n` (from 1).
pub(crate) fn run_log(root: &Path, n: u32) -> PathBuf {
    root.join(format!("run-{n:03}.log"))
}

/// Every run's log, in order (a missing one is empty).
pub(crate) fn read_logs(root: &Path, runs: u32) -> Vec<String> {
    (1..=runs)
        .map(|n| fs::read_to_string(run_log(root, n)).unwrap_or_default())
        .collect()
}

/// The violation text when the daemon of run `runs` exited without being
/// told to.
pub(crate) fn exited_on_its_own(daemon: &mut Daemon, runs: u32) -> Option<String> {
    let status = daemon.exited()?;
    Some(format!(
        "daemon run {runs} exited on its own with {status}; log tail:\n{}",
        daemon.tail()
    ))
}

/// The violation text when the timeline's next kill point was never reached.
pub(crate) fn kill_point_missed(next: Option<&u64>, kills: u32) -> Option<String> {
    next.map(|p| format!("kill point {p} never reached ({kills} kills delivered)"))
}

/// SIGKILLs the daemon and waits until it is gone; returns when the signal
/// was sent (Unix ms), for the checker's kill excuses.
pub(crate) async fn kill9(
    daemon: &mut Daemon,
    fail: &impl Fn(String) -> HilError,
) -> Result<u64, HilError> {
    daemon.signal("-9")?;
    if daemon.wait(Duration::from_secs(10)).await.is_none() {
        return Err(fail("the daemon survived SIGKILL for 10 s".into()));
    }
    Ok(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64))
}

/// `line`'s ledger in the scenario directory.
pub(crate) fn ledger_path(root: &Path, line: &str) -> PathBuf {
    root.join("state/ledger").join(line)
}

/// Units decided in the ledger at `path` (outcomes, the fence's voids left
/// out), read while no daemon holds it: upstream lags the ledger, so after
/// a kill the next run's job is what the ledger left undecided. Issue 14:
/// serials of blocks sealed for `labels` (the packaging levels' GTINs) are
/// labels, not units. `None` when it does not open.
pub(crate) async fn ledger_decided(
    path: PathBuf,
    line: &str,
    secret: &[u8],
    labels: &[serialine_core::Gtin],
) -> Option<u64> {
    let opts = StoreOptions::new(path, line, secret);
    let labels = labels.to_vec();
    let counted = tokio::task::spawn_blocking(move || {
        let (st, _) = Store::open(opts).ok()?;
        let c = st.counts();
        let all = (c.committed + c.synced + c.rejected + c.voided).saturating_sub(c.fenced);
        if labels.is_empty() {
            return Some(all);
        }
        let mut gtins = std::collections::HashMap::new();
        let mut decided_labels = 0u64;
        for (_, r) in st.records_since(0, |_| true).ok()? {
            let decided = matches!(
                r.state,
                UnitState::Committed | UnitState::Synced | UnitState::Rejected(_)
            ) || (r.state == UnitState::Voided && !r.fenced);
            if !decided {
                continue;
            }
            let gtin = *gtins
                .entry(r.block_id)
                .or_insert_with(|| st.block_gtin(r.block_id).ok());
            if gtin.is_some_and(|g| labels.contains(&g)) {
                decided_labels += 1;
            }
        }
        Some(all.saturating_sub(decided_labels))
    });
    counted.await.ok().flatten()
}

/// Opens the ledger at `path` for the checker, now that no daemon holds it.
pub(crate) async fn open_ledger(
    path: PathBuf,
    line: &str,
    secret: &[u8],
    fail: &impl Fn(String) -> HilError,
) -> Result<Store, HilError> {
    let opts = StoreOptions::new(path, line, secret);
    let (store, _recovery) = tokio::task::spawn_blocking(move || Store::open(opts))
        .await
        .map_err(|e| fail(format!("ledger open task: {e}")))??;
    Ok(store)
}

/// The outcome of a finished run; `dir` is kept per
/// [`ScenarioDir::keep_if`]. The caller sets `counts`, `lines` and
/// `laser_unserved` (left empty here).
pub(crate) fn outcome(
    s: &Scenario,
    started: Instant,
    runs: u32,
    kills: u32,
    report: Report,
    dir: &mut ScenarioDir,
    monitor: &Monitor,
) -> Outcome {
    Outcome {
        scenario: s.name.clone(),
        seed: s.seed,
        runs,
        kills,
        counts: Counts::default(),
        elapsed: started.elapsed(),
        dir: dir.keep_if(&report),
        report,
        mqtt_alarms: monitor.alarms().len(),
        lines: Vec::new(),
        laser_unserved: None,
    }
}

/// The daemon config's head (`[daemon]`, `[site]`, `[mqtt]`), the MQTT on
/// `mqtt_port` (the proxy's); `about` ends its first comment line.
pub(crate) fn config_head(s: &Scenario, about: &str, site: &str, mqtt_port: u16) -> String {
    format!(
        r#"# written by hil-tests for scenario {name} (seed {seed}){about}
[daemon]
state_dir = "state"
log_level = "info"
log_format = "json"
watchdog = false

[site]
id = "{site}"

[mqtt]
host = "127.0.0.1"
port = {mqtt_port}
client_id = "hil-{{site}}"
keep_alive_secs = 5
{keys}
"#,
        name = s.name,
        seed = s.seed,
        keys = crate::attack::MQTT_KEYS,
    )
}

/// A `[line.job]` table of `quantity` units of the scenario's product, or
/// none when `quantity` is 0 (the line reconciles, syncs its outbox and
/// waits).
pub(crate) fn job_table(s: &Scenario, quantity: u64, gtin: &str, lot: &str) -> String {
    if quantity == 0 {
        return String::new();
    }
    format!(
        "[line.job]\ngtin = \"{}\"\nlot = \"{}\"\nexpiry = \"{}\"\nquantity = {quantity}\ntemplate = {{ kind = \"gs1-data-matrix\" }}\n",
        gtin, lot, s.job.expiry
    )
}

/// One `[[line]]` section: `job` from [`job_table`], `devices` its
/// `[line.printer]` and `[line.camera]` tables.
pub(crate) fn line_section(
    s: &Scenario,
    id: &str,
    secret_file: &str,
    job: &str,
    devices: &str,
) -> String {
    let l = &s.line;
    format!(
        r#"[[line]]
id = "{id}"
secret_file = "{secret_file}"

[line.buffer]
low_water_serials = {low}
low_water_minutes = 0
high_water_serials = {high}
return_at_job_end = {give_back}

{job}
{devices}
[line.pipeline]
camera_window = {window}
read_deadline_ms = {deadline}
starve_timeout_secs = {starve}
"#,
        low = l.low_water_serials,
        high = l.high_water_serials,
        give_back = l.return_at_job_end,
        window = l.camera_window,
        deadline = l.read_deadline_ms,
        starve = l.starve_timeout_secs,
    )
}

/// Writes the daemon's config into `root`; returns its path.
pub(crate) fn write_config(root: &Path, text: &str) -> Result<PathBuf, HilError> {
    let path = root.join("serialine.toml");
    fs::write(&path, text).map_err(io_err("writing the daemon config"))?;
    Ok(path)
}
