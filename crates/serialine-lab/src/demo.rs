//! `serialine-lab demo`: a complete simulated line on this machine.
//!
//! Two lines share one daemon process, one ledger each:
//! - `line-1`: a framed-ASCII continuous-inkjet printer on a pseudo-terminal
//!   and a camera on a second pseudo-terminal;
//! - `line-2`: a laser marker on a Modbus TCP server and a camera on TCP.
//!
//! An embedded MQTT broker carries block prefetch from a simulated upstream
//! issuer and the outbox to a simulated upstream consumer that deduplicates
//! by event id. The simulated camera misreads, misses, under-grades and
//! shows duplicate and foreign codes at small rates (`--clean` turns that
//! off), so the summary shows what the line catches. At the end the demo
//! checks that upstream holds exactly the ledger's outcomes, each once.

use crate::sim_devices::{Marker, SimulatedDevices};
use anyhow::{bail, Context};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serialine_core::{Expiry, Gtin, Job, Lot, Template, UnitState};
use serialine_line::pipeline::LineReport;
use serialine_line::{LinePlan, LineRun, PipelinePlan, RunningLine};
use serialine_sim::broker::{EmbeddedBroker, MqttTarget};
use serialine_sim::camera::CameraKnobs;
use serialine_sim::issuer::{Issuer, IssuerTask};
use serialine_sim::upstream::{Upstream, UpstreamTask};
use serialine_store::{CommitMode, Store, StoreOptions};
use serialine_uplink::{PrefetchConfig, UplinkConfig};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const SITE: &str = "demo";

#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Units per line.
    pub units: u64,
    /// Where the ledgers go; a fresh temporary directory when `None`.
    pub state_dir: Option<PathBuf>,
    /// Skip the laser line.
    pub inkjet_only: bool,
    /// No camera faults.
    pub clean: bool,
    pub seed: u64,
    /// Machine-readable summary on stdout instead of the table.
    pub json: bool,
    pub progress: bool,
    /// How long the metrics endpoint stays up after the summary.
    pub metrics_linger: Duration,
    /// Serve the lines over OPC UA here, and keep serving after the run.
    pub opcua: Option<std::net::SocketAddr>,
}

/// What one demo line ran against, and its outcome.
struct DemoLine {
    run: LineRun,
    report: LineReport,
    /// The job's reconciliation from the ledger, once every outcome is
    /// reported (what the service writes at a job's end).
    job: Option<serialine_store::JobReport>,
}

/// The simulated plant around the lines: an embedded MQTT broker, the
/// upstream issuer of sealed blocks and the upstream consumer of outcomes.
/// Shared by `demo` and `bench`.
pub struct Plant {
    pub state_dir: PathBuf,
    pub broker: EmbeddedBroker,
    pub issuer: Issuer,
    pub upstream: Upstream,
    pub seed: u64,
    /// Production settings: commands must be signed with this key, and
    /// upstream signs its acks with `ack_key` (both derived from the seed).
    pub command_key: [u8; 32],
    pub ack_key: [u8; 32],
    _issuer_task: IssuerTask,
    _upstream_task: UpstreamTask,
}

impl Plant {
    pub async fn start(state_dir: &Path, seed: u64, say: &dyn Fn(String)) -> anyhow::Result<Plant> {
        let broker = EmbeddedBroker::start().context("starting the embedded MQTT broker")?;
        say(format!(
            "  embedded MQTT broker on 127.0.0.1:{}",
            broker.port
        ));
        let target = |id: &str| MqttTarget::new("127.0.0.1", broker.port, id);
        let issuer = Issuer::new(&seed.to_be_bytes(), 10_000);
        let issuer_task = issuer
            .spawn(&target("demo-issuer"), Some(SITE))
            .await
            .context("starting the simulated issuer")?;
        let upstream = Upstream::new();
        let seed_text = seed.to_string();
        let command_key = blake3::derive_key("serialine demo command key v1", seed_text.as_bytes());
        let ack_key = blake3::derive_key("serialine demo ack key v1", seed_text.as_bytes());
        upstream.set_ack_key(Some(ack_key));
        let upstream_task = upstream
            .spawn(&target("demo-upstream"), Some(SITE))
            .await
            .context("starting the simulated upstream consumer")?;
        say("  simulated upstream issuer and consumer connected".into());
        Ok(Plant {
            state_dir: state_dir.to_path_buf(),
            broker,
            issuer,
            upstream,
            seed,
            command_key,
            ack_key,
            _issuer_task: issuer_task,
            _upstream_task: upstream_task,
        })
    }

    /// Gives `line` its secret, written as a line controller would hold it
    /// (a 0600 file in the state directory), and registers it with the issuer.
    pub fn add_line(&self, line: &str) -> anyhow::Result<[u8; 32]> {
        let secret = blake3::derive_key(
            "serialine-lab demo line secret v1",
            format!("{}:{line}", self.seed).as_bytes(),
        );
        write_secret(&self.secret_path(line), &secret)?;
        self.issuer.add_line(line, &secret);
        Ok(secret)
    }

    pub fn secret_path(&self, line: &str) -> PathBuf {
        self.state_dir.join(format!("{line}.secret"))
    }

    pub fn ledger_path(&self, line: &str) -> PathBuf {
        self.state_dir.join("ledger").join(line)
    }

    pub fn mqtt(&self, line: &str) -> UplinkConfig {
        let mut up = UplinkConfig::new("127.0.0.1", self.broker.port, SITE, line);
        up.command_auth = Some(serialine_uplink::CommandAuth {
            key: self.command_key,
        });
        up.ack_auth = Some(serialine_uplink::AckAuth { key: self.ack_key });
        up
    }
}

/// One line to run on a [`Plant`].
#[derive(Debug, Clone)]
pub struct LineOptions {
    pub line: String,
    pub marker: Marker,
    pub units: u64,
    pub commit: CommitMode,
    /// The simulated inkjet's time per unit (zero: at once).
    pub print_time: Duration,
    /// No camera faults.
    pub clean: bool,
    /// Start only once prefetch has filled the buffer to its high-water mark,
    /// so that no block arrives while the line runs. Otherwise the line
    /// starts as soon as the buffer holds the whole run, and the blocks still
    /// on their way arrive during it, as they do on a line in production.
    pub ready_when_full: bool,
    /// Serials buffered beyond the run (the high-water mark is the run plus
    /// this; the low-water mark half of it, so that a run started with its
    /// buffer full ends above it and asks for no block while it runs).
    pub spare_serials: u64,
    /// Aggregate: units into cases of [`UNITS_PER_CASE`] read by a case
    /// packer's camera, cases onto pallets of [`CASES_PER_PALLET`] read by
    /// a pallet station, each parent labelled and its label verified.
    pub aggregate: bool,
}

/// The demo's packaging: cases of 12 units, pallets of 10 cases.
pub const UNITS_PER_CASE: u32 = 12;
pub const CASES_PER_PALLET: u32 = 10;
/// The demo product's case and pallet GTINs (indicator digits 1 and 2).
pub const CASE_GTIN: &str = "19506000134359";
pub const PALLET_GTIN: &str = "29506000134356";

/// The demo's two packaging levels, both scanned.
pub fn demo_levels() -> anyhow::Result<Vec<serialine_line::aggregation::LevelPlan>> {
    use serialine_line::aggregation::{AggregationMode, LevelPlan};
    let level = |name: &str, gtin: &str, per_parent, close_ms| -> anyhow::Result<LevelPlan> {
        Ok(LevelPlan {
            name: name.into(),
            gtin: Gtin::parse(gtin)?,
            per_parent,
            mode: AggregationMode::Scan,
            label_deadline: Duration::from_secs(10),
            // How long the level waits for its last (partial) read once
            // the level below is done: longer than its station waits.
            close_wait: Duration::from_millis(close_ms),
            label_wait: Duration::from_secs(30),
        })
    };
    Ok(vec![
        level("case", CASE_GTIN, UNITS_PER_CASE, 1_500)?,
        level("pallet", PALLET_GTIN, CASES_PER_PALLET, 4_000)?,
    ])
}

/// The simulators of [`demo_levels`]: a case packer and a pallet station
/// that read a case as it is once their input has been quiet for a while
/// (the job's partial case after 1 s; the pallet station waits 3 s, longer
/// than the case packer's wait and the case level's `close_wait` together,
/// so its last pallet holds the job's last case), and clean label scanners.
pub fn demo_sim_levels(seed: u64) -> Vec<crate::sim_devices::SimLevel> {
    use serialine_sim::aggregation::AggregationKnobs;
    [UNITS_PER_CASE, CASES_PER_PALLET]
        .into_iter()
        .enumerate()
        .map(|(i, per)| crate::sim_devices::SimLevel {
            packer: AggregationKnobs {
                seed: seed ^ (0x10 + i as u64),
                per_case: per as usize,
                flush_after: Some(Duration::from_millis(1_000 + 2_000 * i as u64)),
                // (i = 0: the case packer, 1 s; i = 1: the pallet station, 3 s.)
                ..AggregationKnobs::default()
            },
            scans: true,
            scanner: CameraKnobs {
                seed: seed ^ (0x20 + i as u64),
                ..CameraKnobs::default()
            },
        })
        .collect()
}

/// The spare serials the demo and the bench's single lines buffer: two
/// issuer blocks of 10,000.
pub const SPARE_SERIALS: u64 = 20_000;

/// The state directory: `dir`, created if need be, or a fresh temporary one
/// named `prefix`..., removed when the returned guard is dropped.
pub fn state_dir(
    dir: Option<&Path>,
    prefix: &str,
) -> anyhow::Result<(PathBuf, Option<tempfile::TempDir>)> {
    let (path, temp) = match dir {
        Some(d) => (d.to_path_buf(), None),
        None => {
            let temp = tempfile::Builder::new()
                .prefix(prefix)
                .tempdir()
                .context("creating a temporary state directory")?;
            (temp.path().to_path_buf(), Some(temp))
        }
    };
    std::fs::create_dir_all(&path)
        .with_context(|| format!("creating state directory {}", path.display()))?;
    Ok((path, temp))
}

pub async fn run(opts: DemoOptions) -> anyhow::Result<bool> {
    let (state_dir, _temp) = state_dir(opts.state_dir.as_deref(), "serialine-demo-")?;
    let say = |s: String| {
        if !opts.json {
            eprintln!("{s}");
        }
    };
    say(format!(
        "serialine-lab demo: state in {}",
        state_dir.display()
    ));

    let plant = Plant::start(&state_dir, opts.seed, &say).await?;
    let lines: Vec<(&str, Marker)> = if opts.inkjet_only {
        vec![("line-1", Marker::Inkjet)]
    } else {
        vec![("line-1", Marker::Inkjet), ("line-2", Marker::Laser)]
    };

    let multi = MultiProgress::new();
    if !opts.progress || opts.json {
        multi.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut runs = Vec::new();
    for (line, marker) in lines {
        let line = LineOptions {
            line: line.to_string(),
            marker,
            units: opts.units,
            commit: CommitMode::Group,
            print_time: Duration::ZERO,
            clean: opts.clean,
            ready_when_full: false,
            spare_serials: SPARE_SERIALS,
            // line-1 packs its units into cases and its cases onto pallets.
            aggregate: line == "line-1",
        };
        runs.push(start_line(&plant, &line, Some(&multi), &say).await?);
    }

    let opcua = match opts.opcua {
        Some(addr) => {
            let sources = runs
                .iter()
                .map(|r| serialine_opcua::LineSource {
                    id: r.line().store.line_id().to_string(),
                    store: r.line().store.clone(),
                    uplink: r.line().uplink.clone(),
                    // The demo runs its own jobs: no supervisor takes commands.
                    accepts_commands: false,
                })
                .collect();
            let server = serialine_opcua::serve(demo_opcua(addr, &state_dir), sources)
                .await
                .context("starting the OPC UA server")?;
            say(format!(
                "  OPC UA: {} (anonymous reading; unsecured endpoint too)",
                server.endpoint_url
            ));
            Some(server)
        }
        None => None,
    };

    let started = Instant::now();
    let mut done = Vec::new();
    for run in runs {
        let number = run.job_number();
        let (run, report) = run.finish().await?;
        done.push(DemoLine {
            run,
            report,
            job: number.map(|n| serialine_store::JobReport {
                number: n,
                ..Default::default()
            }),
        });
    }
    let wall = started.elapsed();

    // Every outcome must reach upstream exactly once before we judge.
    for d in &mut done {
        wait_outbox_drained(&d.run.store, &d.report.line).await?;
        if let Some(n) = d.job.as_ref().map(|j| j.number) {
            d.job = Some(d.run.store.job_report(n)?);
        }
    }
    let mut all_agree = true;
    let mut out = Vec::new();
    for d in &done {
        let agreement = check_agreement(&d.run.store, &plant.upstream, &d.report.line);
        all_agree &= agreement.agrees();
        out.push((d, agreement));
    }
    for d in done.iter() {
        d.run.uplink.clone().shutdown(Duration::from_secs(2)).await;
    }
    if opts.json {
        print_json(&out, wall);
    } else {
        print_table(&out, wall);
    }
    if !opts.metrics_linger.is_zero() {
        linger(opts.metrics_linger, &say).await?;
    }
    if let Some(server) = opcua {
        // The run is over but its ledgers are open: clients can still read
        // the final counters, as a plant's would between jobs.
        say(format!(
            "serving OPC UA at {} until Ctrl-C",
            server.endpoint_url
        ));
        let _ = tokio::signal::ctrl_c().await;
        server.shutdown(Duration::from_secs(2)).await;
    }
    Ok(all_agree)
}

/// Keeps the process (and its metrics endpoint) up for `how_long`, or until
/// SIGINT or SIGTERM; the state directory is removed on the way out either way.
async fn linger(how_long: Duration, say: &dyn Fn(String)) -> anyhow::Result<()> {
    use std::io::Write;
    use tokio::signal::unix::{signal, SignalKind};
    say(format!(
        "serialine-lab demo: metrics served for {} s more (Ctrl-C to end)",
        how_long.as_secs()
    ));
    // The summary is complete before anyone is told to scrape.
    let _ = std::io::stdout().flush();
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = tokio::time::sleep(how_long) => {}
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

/// The demo's OPC UA settings: anonymous reading on both endpoints, client
/// certificates trusted (a lab, not a plant), the server's certificate made
/// in the demo's state directory.
fn demo_opcua(listen: std::net::SocketAddr, state_dir: &Path) -> serialine_opcua::OpcuaConfig {
    serialine_opcua::OpcuaConfig {
        listen,
        host_name: None,
        pki_dir: state_dir.join("opcua").join("pki"),
        certificate: None,
        trust_client_certs: true,
        users: Vec::new(),
        anonymous_read: true,
        anonymous_methods: false,
        insecure_endpoint: true,
    }
}

/// Opens the line's ledger (voiding what an earlier run left in flight),
/// starts its uplink, waits until the buffer holds the whole run (READY in
/// the daemon's sense), then starts the line on its simulated devices. With
/// `bars`, the line shows a progress bar there.
pub async fn start_line(
    plant: &Plant,
    opts: &LineOptions,
    bars: Option<&MultiProgress>,
    say: &dyn Fn(String),
) -> anyhow::Result<RunningLine> {
    let open = open_line(plant, opts, say).await?;
    open.wait_ready(say).await?;
    let running = open.start().await?;
    if let Some(multi) = bars {
        let bar = multi.add(ProgressBar::new(opts.units));
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>7} [{bar:40}] {pos}/{len} units  {per_sec}  {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_prefix(opts.line.clone());
        tokio::spawn(draw_progress(running.progress(), bar, opts.units));
    }
    Ok(running)
}

/// A simulated line whose ledger is open and whose uplink runs, its job not
/// started yet. The steps of [`start_line`] apart, so that the bench's
/// multi-line run can open every line, wait until all are READY, and only
/// then start their jobs (none is measured while another still opens).
pub struct OpenSimLine {
    line: serialine_line::Line<SimulatedDevices>,
    job: Job,
    /// Serials the buffer must hold before the line is READY.
    want: u64,
}

/// Opens the line's ledger (voiding what an earlier run left in flight) and
/// starts its uplink, whose prefetch starts filling the buffer.
pub async fn open_line(
    plant: &Plant,
    opts: &LineOptions,
    say: &dyn Fn(String),
) -> anyhow::Result<OpenSimLine> {
    let line = opts.line.as_str();
    let secret = plant.add_line(line)?;
    let job = demo_job(opts.units)?;
    let mut store = StoreOptions::new(plant.ledger_path(line), line, secret.as_slice());
    store.max_batch = 4096;
    store.commit = opts.commit;
    let mut uplink = plant.mqtt(line);
    // Buffer the whole run before it starts, as a line buffers hours:
    // a block arriving mid-run is 10,000 index inserts in the ledger's
    // committer, a pause the measured latency should not include.
    let high = opts.units + opts.spare_serials;
    uplink.prefetch = PrefetchConfig {
        low_water_serials: opts.spare_serials / 2,
        high_water_serials: high,
        // The demo sizes its buffer for its own run, not for minutes of
        // a simulated line that runs thousands of units a second.
        low_water_minutes: 0.0,
        high_water_minutes: 0.0,
        max_buffer_serials: high,
        check_interval: Duration::from_millis(50),
        ..PrefetchConfig::default()
    };
    uplink.product = Some(job.gtin);
    let plan = LinePlan {
        id: line.to_string(),
        store,
        uplink,
        pipeline: PipelinePlan {
            min_grade: serialine_core::Grade::C,
            camera_window: 64,
            read_deadline: Duration::from_millis(500),
            starve_timeout: Duration::from_secs(30),
            aggregation: if opts.aggregate {
                demo_levels()?
            } else {
                Vec::new()
            },
        },
        default_job: Some(job.clone()),
    };
    let camera_seed = plant.seed
        ^ match opts.marker {
            Marker::Inkjet => 1,
            Marker::Laser => 2,
        };
    let devices = SimulatedDevices {
        marker: opts.marker,
        seed: plant.seed,
        print_time: opts.print_time,
        camera: camera_knobs(opts.clean, camera_seed),
        levels: if opts.aggregate {
            demo_sim_levels(plant.seed)
        } else {
            Vec::new()
        },
        passed: Default::default(),
    };
    // The service's own assembly: ledger recovery, in-flight voiding, uplink.
    let opened = serialine_line::open_line(plan, devices, crate::release_freed_memory)
        .await
        .with_context(|| format!("opening {line}"))?;
    if opened.voided_at_open > 0 {
        say(format!(
            "  {line}: voided {} serial(s) left in flight by an earlier run",
            opened.voided_at_open
        ));
    }
    let want = if opts.ready_when_full {
        high
    } else {
        opts.units
    };
    Ok(OpenSimLine {
        line: opened,
        job,
        want,
    })
}

impl OpenSimLine {
    /// Waits (at most 60 s) until the line is READY in the daemon's sense:
    /// ledger open, buffer filled.
    pub async fn wait_ready(&self, say: &dyn Fn(String)) -> anyhow::Result<()> {
        let (line, want) = (self.line.id.as_str(), self.want);
        let store = self.line.store.clone();
        wait_for(Duration::from_secs(60), || store.buffer_depth() >= want)
            .await
            .with_context(|| format!("{line}: waiting for {want} serials from the issuer"))?;
        say(format!(
            "  {line}: ledger open, {} serials buffered",
            store.buffer_depth()
        ));
        Ok(())
    }

    /// Starts the job on the line's simulated devices.
    pub async fn start(mut self) -> anyhow::Result<RunningLine> {
        let job = self.job.clone();
        self.line
            .start_job(job)
            .await
            .with_context(|| format!("starting the job on {}", self.line.id))
    }
}

/// Draws a line's progress bar until its job is done.
async fn draw_progress(
    mut progress: tokio::sync::watch::Receiver<serialine_line::pipeline::Progress>,
    bar: ProgressBar,
    quantity: u64,
) {
    while progress.changed().await.is_ok() {
        let p = progress.borrow_and_update().clone();
        bar.set_position(p.done());
        bar.set_message(format!(
            "{} ok, {} rejected, {} voided{}",
            p.committed,
            p.rejected,
            p.voided,
            if p.paused { ", PAUSED" } else { "" }
        ));
        if p.done() >= quantity {
            bar.finish();
            return;
        }
    }
}

/// Waits (at most 60 s) until upstream has acknowledged the whole outbox.
pub async fn wait_outbox_drained(store: &Store, line: &str) -> anyhow::Result<()> {
    wait_for(Duration::from_secs(60), || store.outbox_depth() == 0)
        .await
        .with_context(|| format!("{line}: waiting for upstream to acknowledge the outbox"))
}

fn demo_job(quantity: u64) -> anyhow::Result<Job> {
    Ok(Job::new(
        Gtin::parse("09506000134352")?,
        Lot::new("DEMO-2611")?,
        Expiry::parse("271231")?,
        Template::Gs1DataMatrix,
        quantity,
    )?)
}

fn camera_knobs(clean: bool, seed: u64) -> CameraKnobs {
    let mut k = CameraKnobs {
        seed,
        ..CameraKnobs::default()
    };
    if !clean {
        k.no_read_rate = 0.002;
        k.misread_rate = 0.002;
        k.low_grade_rate = 0.002;
        k.duplicate_rate = 0.001;
        k.foreign_rate = 0.001;
    }
    k
}

pub async fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> anyhow::Result<()> {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() >= limit {
            bail!("timed out after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

fn write_secret(path: &Path, secret: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(secret)?;
    Ok(())
}

/// Ledger against upstream, per outcome.
#[derive(Debug, Default)]
pub struct Agreement {
    ledger_committed: u64,
    ledger_rejected: u64,
    ledger_voided: u64,
    upstream_committed: u64,
    upstream_rejected: u64,
    upstream_voided: u64,
    upstream_redeliveries: u64,
    conflicts: u64,
    outbox_left: usize,
    /// Upstream events whose serial the ledger holds in another state, and
    /// children upstream places in another parent than the ledger does.
    serial_mismatches: u64,
    /// Children in a parent, as upstream rebuilt it from the pack events.
    upstream_packed: u64,
}

impl Agreement {
    pub fn agrees(&self) -> bool {
        self.ledger_committed == self.upstream_committed
            && self.ledger_rejected == self.upstream_rejected
            && self.ledger_voided == self.upstream_voided
            && self.conflicts == 0
            && self.outbox_left == 0
            && self.serial_mismatches == 0
    }
}

pub fn check_agreement(store: &Store, upstream: &Upstream, line: &str) -> Agreement {
    let c = store.counts();
    let events = upstream.line(line);
    let mut a = Agreement {
        ledger_committed: c.committed + c.synced,
        ledger_rejected: c.rejected,
        ledger_voided: c.voided,
        upstream_redeliveries: events.duplicates(),
        conflicts: events.conflicts,
        outbox_left: store.outbox_depth(),
        ..Agreement::default()
    };
    for (serial, state) in events.events.values() {
        match state.as_str() {
            "committed" => a.upstream_committed += 1,
            "rejected" => a.upstream_rejected += 1,
            "voided" => a.upstream_voided += 1,
            _ => {}
        }
        // Serial by serial: what upstream holds is what the ledger holds.
        let ledger = serialine_core::Serial::new(serial.as_str())
            .ok()
            .and_then(|s| store.state_of(&s).ok());
        // A pack or unpack names its parent, a committed label.
        let same = matches!(
            (state.as_str(), ledger),
            (
                "committed" | "packed" | "unpacked",
                Some(UnitState::Committed | UnitState::Synced)
            ) | ("rejected", Some(UnitState::Rejected(_)))
                | ("voided", Some(UnitState::Voided))
        );
        if !same {
            a.serial_mismatches += 1;
        }
    }
    // The hierarchy upstream rebuilt from the pack events is the ledger's.
    for (child, parent) in &events.parent_of {
        let ledger = serialine_core::Serial::new(child.as_str())
            .ok()
            .and_then(|c| store.parent_of(&c).ok().flatten());
        if ledger.as_ref().map(|p| p.as_str()) != Some(parent.as_str()) {
            a.serial_mismatches += 1;
        }
    }
    a.upstream_packed = events.parent_of.len() as u64;
    a
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn print_table(out: &[(&DemoLine, Agreement)], wall: Duration) {
    println!();
    println!("serialine-lab demo summary ({:.2} s)", wall.as_secs_f64());
    for (d, a) in out {
        let r = &d.report;
        println!();
        println!("{}: {}", r.line, d.run.device_names.join(", "));
        println!(
            "  units        {} sent, {:.0} units/s",
            r.sent,
            r.units_per_sec()
        );
        println!("  committed    {}", r.committed);
        let reasons: Vec<String> = r.rejected.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!(
            "  rejected     {}{}",
            r.rejected_total(),
            if reasons.is_empty() {
                String::new()
            } else {
                format!(" ({})", reasons.join(", "))
            }
        );
        println!("  voided       {}", r.voided);
        println!(
            "  caught       {} duplicate read(s), {} foreign code(s)",
            r.duplicates, r.foreign
        );
        println!(
            "  added latency per unit  p50 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms",
            ms(r.latency_us(0.50)),
            ms(r.latency_us(0.99)),
            ms(r.latency_us(0.999))
        );
        println!(
            "  upstream     {} committed, {} rejected, {} voided, each once by id ({} redeliveries deduplicated): {}",
            a.upstream_committed,
            a.upstream_rejected,
            a.upstream_voided,
            a.upstream_redeliveries,
            if a.agrees() {
                "agrees with the ledger"
            } else {
                "DISAGREES with the ledger"
            }
        );
        for l in &r.levels {
            println!(
                "  {:<12} {} sealed ({} partial), {} refused, {} label(s) rejected",
                format!("{}s", l.name),
                l.sealed,
                l.partial,
                l.refused,
                l.labels_rejected,
            );
        }
        if !r.levels.is_empty() {
            println!(
                "  upstream     holds {} children in parents, each where the ledger has it",
                a.upstream_packed
            );
        }
    }
    println!();
    println!("reconciliation (from each line's ledger, as `serialine report` shows it)");
    for (d, _) in out {
        match &d.job {
            Some(j) => {
                println!(
                "  {} job {}: sent {} = committed {} + rejected {} + voided {} + in flight {}: {}",
                d.report.line,
                j.number,
                j.sent,
                j.committed_total(),
                j.rejected_total(),
                j.voided,
                j.in_flight,
                if j.balanced() { "balanced" } else { "NOT balanced" }
            )
            }
            None => println!("  {}: no job recorded", d.report.line),
        }
        if let Some(h) = d.job.as_ref().and_then(|j| j.hierarchy.as_ref()) {
            let levels: Vec<String> = h
                .levels
                .iter()
                .map(|l| {
                    format!(
                        "level {}: {} parents ({} partial) holding {}",
                        l.level, l.parents, l.partial, l.children
                    )
                })
                .collect();
            println!(
                "    packed: {}; committed = {} units in parents + {} labels + {} loose",
                levels.join("; "),
                h.units_in_parents,
                h.labels,
                h.loose
            );
        }
    }
}

/// What each packaging level did, as the demo's and the bench's JSON say it.
pub fn levels_json(levels: &[serialine_line::aggregation::LevelReport]) -> serde_json::Value {
    levels
        .iter()
        .map(|l| {
            serde_json::json!({
                "name": l.name,
                "sealed": l.sealed,
                "partial": l.partial,
                "refused": l.refused,
                "labels_rejected": l.labels_rejected,
            })
        })
        .collect()
}

fn print_json(out: &[(&DemoLine, Agreement)], wall: Duration) {
    let lines: Vec<serde_json::Value> = out
        .iter()
        .map(|(d, a)| {
            let r = &d.report;
            serde_json::json!({
                "line": r.line,
                "sent": r.sent,
                "committed": r.committed,
                "rejected": r.rejected_total(),
                "rejected_by_reason": r.rejected,
                "voided": r.voided,
                "duplicates": r.duplicates,
                "foreign": r.foreign,
                "units_per_sec": r.units_per_sec(),
                "latency_p50_ms": ms(r.latency_us(0.50)),
                "latency_p99_ms": ms(r.latency_us(0.99)),
                "upstream_committed": a.upstream_committed,
                "upstream_rejected": a.upstream_rejected,
                "upstream_voided": a.upstream_voided,
                "upstream_serial_mismatches": a.serial_mismatches,
                "upstream_agrees": a.agrees(),
                "upstream_packed": a.upstream_packed,
                // Case and pallet labels: serials too, outside `committed`
                // (the units) and `rejected`, inside the ledger's counts.
                "labels_committed": r.levels.iter().map(|l| l.sealed).sum::<u64>(),
                "labels_rejected": r.levels.iter().map(|l| l.labels_rejected).sum::<u64>(),
                "levels": levels_json(&r.levels),
                "job": d.job.as_ref().map(|j| serde_json::json!({
                    "number": j.number,
                    "sent": j.sent,
                    "committed": j.committed_total(),
                    "rejected": j.rejected_total(),
                    "voided": j.voided,
                    "in_flight": j.in_flight,
                    "balanced": j.balanced(),
                    "hierarchy": j.hierarchy,
                })),
            })
        })
        .collect();
    println!(
        "{}",
        serde_json::json!({ "wall_secs": wall.as_secs_f64(), "lines": lines })
    );
}
