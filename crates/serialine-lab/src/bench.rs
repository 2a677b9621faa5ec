//! `serialine-lab bench`: the whole line's figures against the project's goals,
//! in one run, on the simulated plant of `serialine-lab demo`.
//!
//! Phases, in the order they run (the table lists them by topic):
//! 1. a realistic line (600 units/min by default): CPU% of one core. It runs
//!    first so that no ledger, uplink or device of a later phase runs in the
//!    background while the CPU time is counted;
//! 2. a ledger filled with 1 M buffered serials, then opened by a fresh
//!    process (`serialine-lab bench --rss-probe`) that reports its resident set.
//!    A fresh process because this one's RSS holds the issuer that sealed
//!    the blocks (it remembers every serial it issued), the broker and the
//!    simulators, none of which a line controller runs;
//! 3. the pipeline with group commit: units/s, added latency, then the size
//!    of its ledger on disk per million serials;
//! 4. the same pipeline with the packaging hierarchy on (issue 14): units
//!    scanned into cases of 12 by a case packer's camera, cases onto
//!    pallets of 10, each parent's label printed and verified; its units/s
//!    printed beside the pipeline's without, and the cases sealed per second;
//! 5. the same pipeline with the ledger flushing per transition ("naive"),
//!    and the ratio;
//! 6. the outbox drain to the broker (`serialine_uplink::bench`, as the
//!    uplink's `drain_rate` example measures it).
//!
//! Between 1 and 2, unless `--lines 0`: N lines in one process, each with
//! its own ledger and a printer paced at a realistic rate (33 units/s by
//! default), started together; the added latency p99 of each line (the
//! median and the worst line), the process's RSS (steady and peak) and its
//! CPU. `--only lines` runs that step alone, with a plant of its own; the
//! whole bench runs it so, in a fresh process (see
//! [`lines_in_fresh_process`]).

use crate::demo::{self, LineOptions, Plant};
use crate::sim_devices::Marker;
use anyhow::{bail, Context};
use serialine_line::pipeline::LineReport;
use serialine_sim::issuer::Issuer;
use serialine_store::{CommitMode, Store, StoreOptions};
use serialine_uplink::bench::{fill_outbox, time_drain};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The goals of the issue, each printed next to its figure.
const GOAL_UNITS_PER_SEC: f64 = 50_000.0;
const GOAL_GROUP_OVER_NAIVE: f64 = 100.0;
const GOAL_P99_MS: f64 = 1.0;
const GOAL_RSS_MB: f64 = 64.0;
/// The multi-line goals of issue 16: added latency p99 per line (median
/// line, worst line), the daemon's steady RSS, its CPU as % of one core.
const GOAL_LINES_P99_MEDIAN_MS: f64 = 5.0;
const GOAL_LINES_P99_WORST_MS: f64 = 10.0;
const GOAL_LINES_RSS_MB: f64 = 128.0;
const GOAL_LINES_CPU_PERCENT: f64 = 25.0;
/// What the table's "added latency" is.
const ADDED_LATENCY: &str =
    "Added latency: reservation to durable Sent, plus camera read to durable verdict.";
/// How often the multi-line step samples the process's VmRSS.
const RSS_SAMPLE_EVERY: Duration = Duration::from_millis(200);

/// Serials per block the issuer seals, as in the demo.
const BLOCK: u64 = 10_000;
/// The ledger the RSS probe opens, under the state directory.
const RSS_LINE: &str = "bench-rss";
/// Linux reports process CPU time in ticks of USER_HZ, which is 100 on every
/// architecture serialine targets (it is part of the kernel's ABI, unlike
/// the kernel's internal HZ).
const TICKS_PER_SEC: f64 = 100.0;

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub units: u64,
    pub naive_units: u64,
    pub drain_events: u64,
    pub buffered: u64,
    pub realistic_secs: u64,
    /// Units per minute on the realistic line.
    pub realistic_rate: f64,
    /// Printing time of one unit on the realistic line.
    pub print_time: Duration,
    /// Where the ledgers go; a fresh temporary directory when `None`.
    pub state_dir: Option<PathBuf>,
    pub seed: u64,
    pub json: bool,
    /// Lines in the multi-line step; 0 skips it.
    pub lines: usize,
    /// Units per minute on each of those lines.
    pub lines_rate: f64,
    /// Length of the multi-line run, in seconds.
    pub lines_secs: u64,
    /// Serials each of those lines buffers beyond its run.
    pub lines_spare: u64,
    /// Run the multi-line step alone.
    pub only_lines: bool,
}

/// One pipeline run and what it cost.
struct PipelineRun {
    report: LineReport,
    agrees: bool,
    /// Process CPU time (user + system) while the line ran.
    cpu: Duration,
    wall: Duration,
    ledger_bytes: u64,
    issued: u64,
}

/// What the RSS probe process reports.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct RssProbe {
    buffered: u64,
    vm_rss_kb: u64,
    vm_hwm_kb: u64,
}

pub async fn run(opts: BenchOptions) -> anyhow::Result<bool> {
    let (state_dir, _temp) = demo::state_dir(opts.state_dir.as_deref(), "serialine-bench-")?;
    let say = |s: String| eprintln!("{s}");
    say(format!(
        "serialine-lab bench: state in {}",
        state_dir.display()
    ));
    let started = Instant::now();
    let rate = opts.realistic_rate;
    if !(rate.is_finite() && rate > 0.0) {
        bail!("--realistic-rate must be a positive number of units per minute");
    }
    if !(opts.lines_rate.is_finite() && opts.lines_rate > 0.0) {
        bail!("--lines-rate must be a positive number of units per minute");
    }
    if opts.only_lines && opts.lines == 0 {
        bail!("--only lines needs --lines of at least 1");
    }
    let plant = Plant::start(&state_dir, opts.seed, &say).await?;
    if opts.only_lines {
        say(format!("bench [1/1] {}", lines_announcement(&opts)));
        let lines = multi_line(&plant, &opts).await?;
        let agrees = lines.agrees();
        let wall = started.elapsed();
        if opts.json {
            let goals = goals_json(lines.rows());
            println!(
                "{}",
                serde_json::json!({
                    "wall_secs": wall.as_secs_f64(),
                    "lines": lines.json(),
                    "goals": goals,
                })
            );
        } else {
            print_rows(&lines.rows(), wall);
            println!("{ADDED_LATENCY}");
            lines.print_notes();
        }
        return Ok(agrees);
    }
    let phases = if opts.lines > 0 { 7 } else { 6 };
    let mut phase = 0;
    let mut next = || {
        phase += 1;
        format!("bench [{phase}/{phases}]")
    };

    // 1. Realistic line. The printer simulator prints its buffered codes
    // back to back, one per `print_time`, so the line runs at the printer's
    // pace. A product-triggered printer with a 40 ms print at a 100 ms pitch
    // looks the same to the daemon (one print-complete per 100 ms, the
    // buffer kept full), so the simulator's time per unit is the pitch, or
    // the print time if that is longer.
    let pitch = Duration::from_secs_f64(60.0 / rate).max(opts.print_time);
    let realistic_units = ((rate / 60.0) * opts.realistic_secs as f64)
        .round()
        .max(1.0) as u64;
    say(format!(
        "{} realistic line: {rate:.0} units/min, {} ms print, printer paced at {} ms per unit, {realistic_units} units",
        next(),
        opts.print_time.as_millis(),
        pitch.as_millis()
    ));
    let realistic = pipeline(
        &plant,
        "bench-realistic",
        realistic_units,
        CommitMode::Group,
        pitch,
        false,
    )
    .await?;

    // N lines in one process (a fresh one), right after the realistic line
    // for the same reason: nothing of a later phase runs in the background.
    let lines = if opts.lines > 0 {
        say(format!("{} {}", next(), lines_announcement(&opts)));
        Some(lines_in_fresh_process(&opts, &state_dir).await?)
    } else {
        None
    };

    // 2. RSS with the buffer full.
    say(format!(
        "{} RSS: filling a ledger with {} buffered serials, then opening it in a fresh process",
        next(),
        thousands(opts.buffered)
    ));
    let rss = buffered_rss(&plant, opts.seed, opts.buffered).await?;

    // 3. Pipeline, group commit, and the ledger's size on disk.
    say(format!(
        "{} pipeline, group commit: {} units, zero print time, clean camera",
        next(),
        thousands(opts.units)
    ));
    let group = pipeline(
        &plant,
        "bench-group",
        opts.units,
        CommitMode::Group,
        Duration::ZERO,
        false,
    )
    .await?;

    // 3b. The same with aggregation on: must not slow the unit loop.
    say(format!(
        "{} pipeline with aggregation: {} units into cases of {}, pallets of {}, each label printed and verified",
        next(),
        thousands(opts.units),
        demo::UNITS_PER_CASE,
        demo::CASES_PER_PALLET
    ));
    let aggregated = pipeline(
        &plant,
        "bench-aggregated",
        opts.units,
        CommitMode::Group,
        Duration::ZERO,
        true,
    )
    .await?;

    // 4. The same with a flush per transition.
    say(format!(
        "{} pipeline, naive (a flush per transition): {} units",
        next(),
        thousands(opts.naive_units)
    ));
    let naive = pipeline(
        &plant,
        "bench-naive",
        opts.naive_units,
        CommitMode::PerTransition,
        Duration::ZERO,
        false,
    )
    .await?;

    // 5. Outbox drain.
    say(format!(
        "{} outbox drain: {} events to the broker",
        next(),
        thousands(opts.drain_events)
    ));
    let drain = drain_rate(&plant, opts.drain_events).await?;

    let results = Results {
        opts: &opts,
        group,
        aggregated,
        naive,
        realistic,
        realistic_pitch: pitch,
        lines,
        drain_events_per_sec: drain,
        rss,
        bench_peak_rss_kb: proc_status_kb("VmHWM")?,
        wall: started.elapsed(),
    };
    if opts.json {
        results.print_json();
    } else {
        results.print_table();
    }
    Ok(results.agrees())
}

/// Runs one inkjet line with a perfect camera to the end (starting once its
/// buffer is full; with `aggregate`, packing its units into cases and its
/// cases onto pallets as the demo's line-1 does), waits until
/// upstream has every outcome, checks it against the ledger, then shuts the
/// line's uplink down and closes its ledger.
async fn pipeline(
    plant: &Plant,
    line: &str,
    units: u64,
    commit: CommitMode,
    print_time: Duration,
    aggregate: bool,
) -> anyhow::Result<PipelineRun> {
    let opts = LineOptions {
        line: line.to_string(),
        marker: Marker::Inkjet,
        units,
        commit,
        print_time,
        clean: true,
        // A line in production receives one block per 10,000 units; a run
        // this short would receive several, and at different rates per
        // phase, so every phase starts with its buffer full.
        ready_when_full: true,
        spare_serials: demo::SPARE_SERIALS,
        aggregate,
    };
    let running = demo::start_line(plant, &opts, None, &|s| eprintln!("{s}")).await?;
    // Counted from READY: the buffer fill before it is not the line's work.
    let cpu0 = cpu_time()?;
    let t0 = Instant::now();
    let (run, report) = running.finish().await?;
    let cpu = cpu_time()?.saturating_sub(cpu0);
    let wall = t0.elapsed();
    demo::wait_outbox_drained(&run.store, line).await?;
    let agrees = demo::check_agreement(&run.store, &plant.upstream, line).agrees();
    let ledger_bytes = dir_size(&plant.ledger_path(line))?;
    let issued = run.store.counts().issued;
    run.uplink.clone().shutdown(Duration::from_secs(2)).await;
    Ok(PipelineRun {
        report,
        agrees,
        cpu,
        wall,
        ledger_bytes,
        issued,
    })
}

/// One line of the multi-line step.
/// Its fields are the JSON's: the whole bench reads them back from the
/// `--only lines --json` process it runs the step in.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct LineFigures {
    line: String,
    units: u64,
    units_per_min: f64,
    latency_p50_ms: f64,
    latency_p99_ms: f64,
    latency_p999_ms: f64,
    upstream_agrees: bool,
}

/// The multi-line step: its lines and what the process spent on them. Its
/// fields are the JSON's, which adds the figures derived from them.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct LinesRun {
    /// Units per minute each line's printer is paced at.
    units_per_min_target: f64,
    printer_pitch_ms: f64,
    units_per_line: u64,
    per_line: Vec<LineFigures>,
    /// VmRSS once the plant ran, before the first line opened.
    rss_before_lines_mb: f64,
    /// Median of the VmRSS samples taken after the run's warm-up.
    rss_steady_mb: f64,
    /// Highest VmRSS sample, from the first line's opening to the run's end.
    rss_peak_mb: f64,
    rss_samples: usize,
    /// VmHWM once the run is over: the process's peak over its whole life.
    vm_hwm_mb: f64,
    /// Process CPU time (user + system) from the first job's start to the
    /// last job's end, and that time.
    cpu_secs: f64,
    run_secs: f64,
}

fn lines_announcement(opts: &BenchOptions) -> String {
    format!(
        "{} lines in one process: {:.0} units/min each, printers paced at {:.1} ms per unit, {} s",
        opts.lines,
        opts.lines_rate,
        60_000.0 / opts.lines_rate,
        opts.lines_secs
    )
}

/// Opens `opts.lines` inkjet lines with a perfect camera, each with its own
/// ledger, uplink and printer paced at `opts.lines_rate`, waits until all are
/// READY, starts their jobs together (their phases spread over one pitch,
/// as independent lines are not in step), and runs them to the end while
/// the process's RSS is sampled. Then checks each line against upstream.
async fn multi_line(plant: &Plant, opts: &BenchOptions) -> anyhow::Result<LinesRun> {
    let say = |s: String| eprintln!("{s}");
    let n = opts.lines;
    let rate = opts.lines_rate;
    let pitch = Duration::from_secs_f64(60.0 / rate);
    let units = ((rate / 60.0) * opts.lines_secs as f64).round().max(1.0) as u64;
    // What starting the plant freed is not the lines' memory.
    crate::release_freed_memory();
    let rss_before_kb = proc_status_kb("VmRSS")?;
    let sampler = RssSampler::start();
    let mut open = Vec::with_capacity(n);
    for i in 0..n {
        let line = LineOptions {
            line: format!("bench-lines-{:02}", i + 1),
            marker: Marker::Inkjet,
            units,
            commit: CommitMode::Group,
            print_time: pitch,
            clean: true,
            ready_when_full: true,
            spare_serials: opts.lines_spare,
            aggregate: false,
        };
        open.push(demo::open_line(plant, &line, &say).await?);
    }
    // Every line's prefetch runs at once; they are waited for in turn.
    for line in &open {
        line.wait_ready(&|_| {}).await?;
    }
    say(format!(
        "  {n} lines READY ({} serials buffered each); running {units} units each",
        thousands(units + opts.lines_spare)
    ));
    let stagger = pitch / u32::try_from(n).unwrap_or(u32::MAX);
    let cpu0 = cpu_time()?;
    let t0 = Instant::now();
    sampler.mark_run_start(t0);
    let mut running = Vec::with_capacity(n);
    for (i, line) in open.into_iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(stagger).await;
        }
        running.push(line.start().await?);
    }
    let mut done = Vec::with_capacity(n);
    for line in running {
        done.push(line.finish().await?);
    }
    let cpu = cpu_time()?.saturating_sub(cpu0);
    let wall = t0.elapsed();
    // Warm-up: the first quarter of the run (jobs starting, first prints).
    let rss = sampler.stop(wall / 4).await?;
    let vm_hwm_kb = proc_status_kb("VmHWM")?;
    let mut per_line = Vec::with_capacity(n);
    for (run, r) in done {
        demo::wait_outbox_drained(&run.store, &r.line).await?;
        let agrees = demo::check_agreement(&run.store, &plant.upstream, &r.line).agrees();
        run.uplink.clone().shutdown(Duration::from_secs(2)).await;
        per_line.push(LineFigures {
            line: r.line.clone(),
            units: r.sent,
            units_per_min: r.units_per_sec() * 60.0,
            latency_p50_ms: ms(r.latency_us(0.5)),
            latency_p99_ms: ms(r.latency_us(0.99)),
            latency_p999_ms: ms(r.latency_us(0.999)),
            upstream_agrees: agrees,
        });
    }
    Ok(LinesRun {
        units_per_min_target: rate,
        printer_pitch_ms: pitch.as_secs_f64() * 1000.0,
        units_per_line: units,
        per_line,
        rss_before_lines_mb: mb(rss_before_kb),
        rss_steady_mb: mb(rss.steady_kb),
        rss_peak_mb: mb(rss.peak_kb),
        rss_samples: rss.samples,
        vm_hwm_mb: mb(vm_hwm_kb),
        cpu_secs: cpu.as_secs_f64(),
        run_secs: wall.as_secs_f64(),
    })
}

/// Runs the multi-line step in a fresh process (`serialine-lab bench --only
/// lines --json`) and reads its figures back. A fresh process because this
/// one's RSS still holds what earlier phases freed (the allocator returns
/// it to the OS slowly) and their simulators run on, which the step's RSS
/// would count; and the step's lines would stay in this process's peak.
async fn lines_in_fresh_process(opts: &BenchOptions, state_dir: &Path) -> anyhow::Result<LinesRun> {
    let exe = std::env::current_exe().context("finding this executable for the lines phase")?;
    let out = tokio::process::Command::new(exe)
        .arg("bench")
        .args(["--only", "lines", "--json"])
        .args(["--lines", &opts.lines.to_string()])
        .args(["--lines-rate", &opts.lines_rate.to_string()])
        .args(["--lines-secs", &opts.lines_secs.to_string()])
        .args(["--lines-spare", &opts.lines_spare.to_string()])
        .args(["--seed", &opts.seed.to_string()])
        .arg("--state-dir")
        .arg(state_dir.join("lines-phase"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .context("starting the lines phase's process")?
        .wait_with_output()
        .await
        .context("running the lines phase's process")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    // It exits 1 when a line disagrees with upstream, and still reports.
    let report: Result<serde_json::Value, _> = serde_json::from_str(stdout.trim());
    match report {
        Ok(mut v) => serde_json::from_value(v["lines"].take())
            .with_context(|| format!("reading the lines phase's report {stdout:?}")),
        Err(_) if !out.status.success() => {
            bail!("the lines phase's process failed ({})", out.status)
        }
        Err(e) => Err(e).with_context(|| format!("reading the lines phase's report {stdout:?}")),
    }
}

/// Samples this process's VmRSS every [`RSS_SAMPLE_EVERY`] until stopped.
struct RssSampler {
    stop: tokio::sync::oneshot::Sender<()>,
    run_start: std::sync::Arc<std::sync::OnceLock<Instant>>,
    task: tokio::task::JoinHandle<anyhow::Result<Vec<(Instant, u64)>>>,
}

struct RssFigures {
    steady_kb: u64,
    peak_kb: u64,
    samples: usize,
}

impl RssSampler {
    fn start() -> RssSampler {
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut tick = tokio::time::interval(RSS_SAMPLE_EVERY);
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = tick.tick() => samples.push((Instant::now(), proc_status_kb("VmRSS")?)),
                }
            }
            Ok(samples)
        });
        RssSampler {
            stop,
            run_start: Default::default(),
            task,
        }
    }

    fn mark_run_start(&self, at: Instant) {
        let _ = self.run_start.set(at);
    }

    /// Stops sampling. Steady: the median of the samples taken `warm_up`
    /// after the run started (all of the run's samples if the run was too
    /// short for any). Peak: the highest sample.
    async fn stop(self, warm_up: Duration) -> anyhow::Result<RssFigures> {
        let _ = self.stop.send(());
        let samples = self.task.await.context("the RSS sampler failed")??;
        let peak_kb = samples.iter().map(|&(_, kb)| kb).max().unwrap_or(0);
        let run_start = self.run_start.get().copied();
        let after = |from: Option<Instant>| -> Vec<f64> {
            samples
                .iter()
                .filter(|(t, _)| from.is_some_and(|f| *t >= f))
                .map(|&(_, kb)| kb as f64)
                .collect()
        };
        let mut steady = after(run_start.map(|t| t + warm_up));
        if steady.is_empty() {
            steady = after(run_start);
        }
        let steady_kb = median(&mut steady).map_or(0, |m| m.round() as u64);
        Ok(RssFigures {
            steady_kb,
            peak_kb,
            samples: samples.len(),
        })
    }
}

/// The median of `values` (the mean of the middle two for an even count).
fn median(values: &mut [f64]) -> Option<f64> {
    values.sort_unstable_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

impl LinesRun {
    fn agrees(&self) -> bool {
        self.per_line.iter().all(|l| l.upstream_agrees)
    }

    fn p99_median_ms(&self) -> f64 {
        let mut p99s: Vec<f64> = self.per_line.iter().map(|l| l.latency_p99_ms).collect();
        median(&mut p99s).unwrap_or(0.0)
    }

    fn p99_worst_ms(&self) -> f64 {
        self.per_line
            .iter()
            .map(|l| l.latency_p99_ms)
            .fold(0.0, f64::max)
    }

    fn cpu_percent(&self) -> f64 {
        100.0 * self.cpu_secs / self.run_secs
    }

    /// Units per minute each line achieved, the median line's.
    fn achieved_per_min(&self) -> f64 {
        let mut rates: Vec<f64> = self.per_line.iter().map(|l| l.units_per_min).collect();
        median(&mut rates).unwrap_or(0.0)
    }

    fn rows(&self) -> Vec<Row> {
        let n = self.per_line.len();
        let agree = self.per_line.iter().filter(|l| l.upstream_agrees).count();
        let rate = self.units_per_min_target;
        vec![
            Row::plain(
                format!(
                    "{n} line{} in one process, {rate:.0} units/min ({:.0} units/s) each, {} units per line",
                    if n == 1 { "" } else { "s" },
                    rate / 60.0,
                    thousands(self.units_per_line)
                ),
                format!("{agree} of {n} agree with upstream"),
            ),
            Row::plain(
                "  units/min achieved per line (median line)",
                format!("{:.0}", self.achieved_per_min()),
            ),
            Row::below(
                "  added latency p99 per line, median line",
                self.p99_median_ms(),
                GOAL_LINES_P99_MEDIAN_MS,
                " ms",
            ),
            Row::below(
                "  added latency p99 per line, worst line",
                self.p99_worst_ms(),
                GOAL_LINES_P99_WORST_MS,
                " ms",
            ),
            Row::below(
                "  RSS steady (median sample after warm-up)",
                self.rss_steady_mb,
                GOAL_LINES_RSS_MB,
                " MB",
            ),
            Row::plain(
                "  RSS peak (highest sample, opening to end)",
                format!("{:.1} MB", self.rss_peak_mb),
            ),
            Row::plain(
                "  RSS before the lines opened (broker, issuer, upstream)",
                format!("{:.1} MB", self.rss_before_lines_mb),
            ),
            Row::below(
                "  CPU of the process over the run",
                self.cpu_percent(),
                GOAL_LINES_CPU_PERCENT,
                "% of one core",
            ),
        ]
    }

    fn print_notes(&self) {
        println!(
            "{} lines: each its own ledger, uplink, printer (paced at {:.1} ms per unit) and camera; jobs",
            self.per_line.len(),
            self.printer_pitch_ms
        );
        println!(
            "started together, phases spread over one pitch. RSS sampled every {} ms ({} samples); RSS and",
            RSS_SAMPLE_EVERY.as_millis(),
            self.rss_samples
        );
        println!("CPU are the whole process: the lines, and the broker, issuer and upstream they talk to.");
        if !self.agrees() {
            println!(
                "UPSTREAM DISAGREES with a line's ledger: see `serialine-lab demo` for the check."
            );
        }
    }

    /// The fields, and the figures derived from them.
    fn json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        v["lines"] = self.per_line.len().into();
        v["units_per_min_achieved_median"] = self.achieved_per_min().into();
        v["latency_p99_ms_median_line"] = self.p99_median_ms().into();
        v["latency_p99_ms_worst_line"] = self.p99_worst_ms().into();
        v["cpu_percent_of_one_core"] = self.cpu_percent().into();
        v["upstream_agrees"] = self.agrees().into();
        v
    }
}

/// Fills a ledger with `n` serials in blocks of 10,000, closes it, and has a
/// fresh process open it and report its memory.
async fn buffered_rss(plant: &Plant, seed: u64, n: u64) -> anyhow::Result<(RssProbe, u64)> {
    let secret = plant.add_line(RSS_LINE)?;
    // An issuer of its own, dropped once the ledger is full: it remembers
    // every serial it issues.
    let issuer = Issuer::new(&(seed ^ 0x5255_5353).to_be_bytes(), BLOCK as u32);
    issuer.add_line(RSS_LINE, &secret);
    let path = plant.ledger_path(RSS_LINE);
    let (store, _) = Store::open(StoreOptions::new(&path, RSS_LINE, &secret))
        .context("opening the RSS ledger")?;
    let t0 = Instant::now();
    let mut left = n;
    while left > 0 {
        let size = left.min(BLOCK);
        issuer.set_block_size(size as u32);
        let block = issuer.issue(RSS_LINE).context("issuing a block")?;
        store
            .add_block(&block)
            .await
            .context("storing a block in the RSS ledger")?;
        left -= size;
    }
    drop(issuer);
    let buffered = store.buffer_depth();
    drop(store);
    let bytes = dir_size(&path)?;
    eprintln!(
        "  {RSS_LINE}: {} serials buffered in {:.1} s, {:.0} MB on disk",
        thousands(buffered),
        t0.elapsed().as_secs_f64(),
        bytes as f64 / 1e6
    );
    let exe = std::env::current_exe().context("finding this executable for the RSS probe")?;
    let out = tokio::process::Command::new(exe)
        .arg("bench")
        .arg("--rss-probe")
        .arg(&plant.state_dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .context("starting the RSS probe process")?
        .wait_with_output()
        .await
        .context("running the RSS probe process")?;
    if !out.status.success() {
        bail!("the RSS probe process failed ({})", out.status);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let probe: RssProbe = serde_json::from_str(stdout.trim())
        .with_context(|| format!("reading the RSS probe's report {stdout:?}"))?;
    Ok((probe, bytes))
}

/// `serialine-lab bench --rss-probe DIR`: opens the ledger the bench filled, as
/// the daemon does at start (a tokio runtime, recovery, the working window
/// decrypted by a first reservation), then prints its memory as one JSON
/// line.
pub fn rss_probe(state_dir: &Path) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let _in_runtime = runtime.enter();
    let secret_path = state_dir.join(format!("{RSS_LINE}.secret"));
    let secret = std::fs::read(&secret_path)
        .with_context(|| format!("reading {}", secret_path.display()))?;
    let path = state_dir.join("ledger").join(RSS_LINE);
    let (store, _) = Store::open(StoreOptions::new(&path, RSS_LINE, &secret))
        .with_context(|| format!("opening the ledger {}", path.display()))?;
    crate::release_freed_memory();
    let first = store
        .reserve(1)
        .context("reserving a serial from the ledger")?;
    store.release(&first);
    let probe = RssProbe {
        buffered: store.buffer_depth(),
        vm_rss_kb: proc_status_kb("VmRSS")?,
        vm_hwm_kb: proc_status_kb("VmHWM")?,
    };
    println!("{}", serde_json::to_string(&probe)?);
    Ok(())
}

/// Fills an outbox with `n` outcomes and times the uplink draining it.
async fn drain_rate(plant: &Plant, n: u64) -> anyhow::Result<f64> {
    let line = "bench-drain";
    let secret = plant.add_line(line)?;
    let (store, _) = Store::open(StoreOptions::new(plant.ledger_path(line), line, &secret))
        .context("opening the drain ledger")?;
    for _ in 0..n.div_ceil(BLOCK) {
        let block = plant.issuer.issue(line).context("issuing a block")?;
        store
            .add_block(&block)
            .await
            .context("storing a block in the drain ledger")?;
    }
    let count = usize::try_from(n).context("--drain-events is too large")?;
    fill_outbox(&store, count)
        .await
        .context("filling the outbox")?;
    let elapsed = time_drain(plant.mqtt(line), &store, n, Duration::from_secs(300))
        .await
        .context("draining the outbox")?;
    Ok(n as f64 / elapsed.as_secs_f64())
}

/// This process's CPU time so far, user plus system, all threads (including
/// those that exited), from `/proc/self/stat`.
fn cpu_time() -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").context("reading /proc/self/stat")?;
    // The command name is in parentheses and may hold spaces; fields count
    // from after it: state is field 3, utime 14 and stime 15.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("/proc/self/stat: no command name")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i - 3)
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("/proc/self/stat: field {i} is not a number"))
    };
    let ticks = tick(14)? + tick(15)?;
    Ok(Duration::from_secs_f64(ticks as f64 / TICKS_PER_SEC))
}

/// A `kB` line of `/proc/self/status`, such as `VmRSS` or `VmHWM`.
fn proc_status_kb(key: &str) -> anyhow::Result<u64> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("/proc/self/status: no {key} in kB"))
}

/// Bytes in the files under `dir`.
fn dir_size(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))? {
            let entry = entry.with_context(|| format!("listing {}", d.display()))?;
            let meta = match entry.metadata() {
                Ok(m) => m,
                // sled replaces its snapshot files as it goes.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(e).with_context(|| format!("reading {}", entry.path().display()))
                }
            };
            if meta.is_dir() {
                todo.push(entry.path());
            } else {
                total += meta.len();
            }
        }
    }
    Ok(total)
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// "met", or by what factor the value misses its goal.
fn verdict(met: bool, factor: f64) -> String {
    if met {
        "met".into()
    } else if factor.is_finite() {
        format!("missed by {factor:.1}×")
    } else {
        "missed".into()
    }
}

/// One line of the table.
struct Row {
    figure: String,
    value: String,
    goal: String,
    result: String,
}

impl Row {
    fn plain(figure: impl Into<String>, value: String) -> Row {
        Row {
            figure: figure.into(),
            value,
            goal: String::new(),
            result: String::new(),
        }
    }

    /// A figure whose goal is a floor.
    fn at_least(figure: impl Into<String>, value: f64, goal: f64, unit: &str) -> Row {
        Row {
            figure: figure.into(),
            value: format!("{}{unit}", thousands(value.round() as u64)),
            goal: format!("≥ {}{unit}", thousands(goal.round() as u64)),
            result: verdict(value >= goal, goal / value),
        }
    }

    /// A figure whose goal is a ceiling.
    fn below(figure: impl Into<String>, value: f64, goal: f64, unit: &str) -> Row {
        Row {
            figure: figure.into(),
            value: format!("{value:.1}{unit}"),
            goal: format!("< {goal:.0}{unit}"),
            result: verdict(value < goal, value / goal),
        }
    }
}

struct Results<'a> {
    opts: &'a BenchOptions,
    group: PipelineRun,
    /// The group pipeline with aggregation on.
    aggregated: PipelineRun,
    naive: PipelineRun,
    realistic: PipelineRun,
    realistic_pitch: Duration,
    /// The multi-line step, unless `--lines 0`.
    lines: Option<LinesRun>,
    drain_events_per_sec: f64,
    /// The probe's report and the ledger's bytes on disk.
    rss: (RssProbe, u64),
    bench_peak_rss_kb: u64,
    wall: Duration,
}

impl Results<'_> {
    fn agrees(&self) -> bool {
        self.group.agrees
            && self.aggregated.agrees
            && self.naive.agrees
            && self.realistic.agrees
            && self.lines.as_ref().is_none_or(LinesRun::agrees)
    }

    fn ratio(&self) -> f64 {
        self.group.report.units_per_sec() / self.naive.report.units_per_sec()
    }

    fn cpu_percent(&self) -> f64 {
        100.0 * self.realistic.cpu.as_secs_f64() / self.realistic.wall.as_secs_f64()
    }

    fn mb_per_million(bytes: u64, serials: u64) -> f64 {
        bytes as f64 / 1e6 / (serials.max(1) as f64 / 1e6)
    }

    fn rows(&self) -> Vec<Row> {
        let (g, n, r) = (
            &self.group.report,
            &self.naive.report,
            &self.realistic.report,
        );
        let (probe, rss_bytes) = &self.rss;
        let left_in_buffer = self.group.issued.saturating_sub(g.sent);
        let o = self.opts;
        let mut rows = vec![
            Row::at_least(
                format!("pipeline, group commit ({} units)", thousands(g.sent)),
                g.units_per_sec(),
                GOAL_UNITS_PER_SEC,
                " units/s",
            ),
            Row::plain(
                "  added latency p50",
                format!("{:.2} ms", ms(g.latency_us(0.5))),
            ),
            Row::below(
                "  added latency p99",
                ms(g.latency_us(0.99)),
                GOAL_P99_MS,
                " ms",
            ),
            Row::plain(
                "  added latency p99.9",
                format!("{:.1} ms", ms(g.latency_us(0.999))),
            ),
        ];
        rows.extend(self.aggregation_rows());
        rows.extend([
            Row::plain(
                format!(
                    "pipeline, naive: a flush per transition ({} units)",
                    thousands(n.sent)
                ),
                format!("{} units/s", thousands(n.units_per_sec().round() as u64)),
            ),
            Row::plain(
                "  added latency p50 / p99 / p99.9",
                format!(
                    "{:.2} / {:.1} / {:.1} ms",
                    ms(n.latency_us(0.5)),
                    ms(n.latency_us(0.99)),
                    ms(n.latency_us(0.999))
                ),
            ),
        ]);
        let ratio = self.ratio();
        rows.push(Row {
            figure: "group commit / naive, units/s".into(),
            value: format!("{ratio:.1}×"),
            goal: format!("≥ {GOAL_GROUP_OVER_NAIVE:.0}×"),
            result: verdict(
                ratio >= GOAL_GROUP_OVER_NAIVE,
                GOAL_GROUP_OVER_NAIVE / ratio,
            ),
        });
        rows.extend([
            Row::plain(
                format!("outbox drain ({} events)", thousands(o.drain_events)),
                format!(
                    "{} events/s",
                    thousands(self.drain_events_per_sec.round() as u64)
                ),
            ),
            Row::plain(
                format!(
                    "store size per million serials ({} sent + {} buffered)",
                    thousands(g.sent),
                    thousands(left_in_buffer)
                ),
                format!(
                    "{:.0} MB",
                    Self::mb_per_million(self.group.ledger_bytes, self.group.issued)
                ),
            ),
            Row::plain(
                format!(
                    "store size per million serials ({} buffered only)",
                    thousands(probe.buffered)
                ),
                format!("{:.0} MB", Self::mb_per_million(*rss_bytes, probe.buffered)),
            ),
            Row::below(
                format!(
                    "RSS, {} serials buffered (fresh process)",
                    thousands(probe.buffered)
                ),
                mb(probe.vm_rss_kb),
                GOAL_RSS_MB,
                " MB",
            ),
            Row::plain(
                "  peak RSS of that process (VmHWM)",
                format!("{:.1} MB", mb(probe.vm_hwm_kb)),
            ),
            Row::plain(
                format!(
                    "realistic line: {:.0} units/min, {} ms print ({} units)",
                    o.realistic_rate,
                    o.print_time.as_millis(),
                    thousands(r.sent)
                ),
                format!("{:.1}% of one core", self.cpu_percent()),
            ),
            Row::plain(
                "  units/min achieved",
                format!("{:.0}", r.units_per_sec() * 60.0),
            ),
            Row::below(
                "  added latency p99",
                ms(r.latency_us(0.99)),
                GOAL_P99_MS,
                " ms",
            ),
        ]);
        if let Some(lines) = &self.lines {
            rows.extend(lines.rows());
        }
        rows.push(Row::plain(
            "peak RSS of this bench process (VmHWM)",
            format!("{:.1} MB", mb(self.bench_peak_rss_kb)),
        ));
        rows
    }

    /// The pipeline with aggregation beside the one without (issue 14:
    /// aggregation must not slow the unit loop), and what it packed.
    fn aggregation_rows(&self) -> Vec<Row> {
        let (g, a) = (&self.group.report, &self.aggregated.report);
        let level = |name: &str| a.levels.iter().find(|l| l.name == name);
        let sealed = |name: &str| level(name).map_or(0, |l| l.sealed);
        let refused: u64 = a.levels.iter().map(|l| l.refused).sum();
        let cases = sealed("case");
        let secs = self.aggregated.wall.as_secs_f64().max(1e-9);
        vec![
            Row::plain(
                format!(
                    "pipeline with aggregation, cases of {} / pallets of {} ({} units)",
                    demo::UNITS_PER_CASE,
                    demo::CASES_PER_PALLET,
                    thousands(a.sent)
                ),
                format!(
                    "{} units/s ({} without: {:.2}×)",
                    thousands(a.units_per_sec().round() as u64),
                    thousands(g.units_per_sec().round() as u64),
                    a.units_per_sec() / g.units_per_sec().max(1e-9)
                ),
            ),
            Row::plain(
                "  added latency p50 / p99 (without: p50 / p99)",
                format!(
                    "{:.2} / {:.1} ms ({:.2} / {:.1} ms)",
                    ms(a.latency_us(0.5)),
                    ms(a.latency_us(0.99)),
                    ms(g.latency_us(0.5)),
                    ms(g.latency_us(0.99))
                ),
            ),
            Row::plain(
                "  cases / pallets sealed, refused; until the last pallet",
                format!(
                    "{} / {} sealed, {refused} refused; {:.1} s ({:.0} cases/s)",
                    thousands(cases),
                    thousands(sealed("pallet")),
                    secs,
                    cases as f64 / secs
                ),
            ),
        ]
    }

    fn print_table(&self) {
        print_rows(&self.rows(), self.wall);
        println!("{ADDED_LATENCY}");
        println!(
            "Realistic line: the printer simulator is paced at {} ms per unit (the pitch); CPU% is this whole",
            self.realistic_pitch.as_millis()
        );
        println!("process (daemon, simulators, broker, issuer, upstream) over the line's run.");
        if let Some(lines) = &self.lines {
            lines.print_notes();
        }
        if !(self.group.agrees && self.naive.agrees && self.realistic.agrees) {
            println!("UPSTREAM DISAGREES with a ledger: see `serialine-lab demo` for the check.");
        }
    }

    fn print_json(&self) {
        let pipeline = |p: &PipelineRun| {
            let r = &p.report;
            serde_json::json!({
                "units": r.sent,
                "units_per_sec": r.units_per_sec(),
                "latency_p50_ms": ms(r.latency_us(0.5)),
                "latency_p99_ms": ms(r.latency_us(0.99)),
                "latency_p999_ms": ms(r.latency_us(0.999)),
                "upstream_agrees": p.agrees,
                "ledger_bytes": p.ledger_bytes,
                "serials_in_ledger": p.issued,
            })
        };
        let (probe, rss_bytes) = &self.rss;
        let goals = goals_json(self.rows());
        let mut realistic = pipeline(&self.realistic);
        realistic["units_per_min_target"] = self.opts.realistic_rate.into();
        realistic["print_time_ms"] = (self.opts.print_time.as_secs_f64() * 1000.0).into();
        realistic["printer_pitch_ms"] = (self.realistic_pitch.as_secs_f64() * 1000.0).into();
        realistic["cpu_percent_of_one_core"] = self.cpu_percent().into();
        let mut aggregated = pipeline(&self.aggregated);
        aggregated["wall_secs"] = self.aggregated.wall.as_secs_f64().into();
        aggregated["levels"] = demo::levels_json(&self.aggregated.report.levels);
        let mut out = serde_json::json!({
                "wall_secs": self.wall.as_secs_f64(),
                "pipeline_group": pipeline(&self.group),
                "pipeline_naive": pipeline(&self.naive),
                "pipeline_aggregated": aggregated,
                "group_over_naive": self.ratio(),
                "outbox_drain": {
                    "events": self.opts.drain_events,
                    "events_per_sec": self.drain_events_per_sec,
                },
                "store_mb_per_million_serials":
                    Self::mb_per_million(self.group.ledger_bytes, self.group.issued),
                "store_mb_per_million_buffered_serials":
                    Self::mb_per_million(*rss_bytes, probe.buffered),
                "rss_buffered": {
                    "serials": probe.buffered,
                    "vm_rss_mb": mb(probe.vm_rss_kb),
                    "vm_hwm_mb": mb(probe.vm_hwm_kb),
                },
                "realistic": realistic,
                "bench_peak_rss_mb": mb(self.bench_peak_rss_kb),
                "goals": goals,
        });
        if let Some(lines) = &self.lines {
            out["lines"] = lines.json();
        }
        println!("{out}");
    }
}

/// The table: one row per figure, its value, goal and verdict.
fn print_rows(rows: &[Row], wall: Duration) {
    let header = Row {
        figure: "figure".into(),
        value: "value".into(),
        goal: "goal".into(),
        result: "result".into(),
    };
    let width = |f: fn(&Row) -> &String| {
        std::iter::once(&header)
            .chain(rows)
            .map(|r| f(r).chars().count())
            .max()
            .unwrap_or(0)
    };
    let (wf, wv, wg) = (
        width(|r| &r.figure),
        width(|r| &r.value),
        width(|r| &r.goal),
    );
    let pad = |s: &str, w: usize| format!("{s}{}", " ".repeat(w - s.chars().count()));
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!();
    println!(
        "serialine-lab bench summary ({:.1} s, {cores} cores, simulators, broker and upstream in this process)",
        wall.as_secs_f64()
    );
    println!();
    for r in std::iter::once(&header).chain(rows) {
        let line = format!(
            "{}  {}  {}  {}",
            pad(&r.figure, wf),
            pad(&r.value, wv),
            pad(&r.goal, wg),
            r.result
        );
        println!("{}", line.trim_end());
    }
    println!();
}

/// The rows that have a goal, for the JSON output.
fn goals_json(rows: Vec<Row>) -> Vec<serde_json::Value> {
    rows.into_iter()
        .filter(|r| !r.goal.is_empty())
        .map(|r| {
            serde_json::json!({
                "figure": r.figure.trim(),
                "value": r.value,
                "goal": r.goal,
                "result": r.result,
            })
        })
        .collect()
}
