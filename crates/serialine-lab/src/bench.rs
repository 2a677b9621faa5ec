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
//! 4. the same pipeline with the ledger flushing per transition ("naive"),
//!    and the ratio;
//! 5. the outbox drain to the broker (`serialine_uplink::bench`, as the
//!    uplink's `drain_rate` example measures it).

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
    let plant = Plant::start(&state_dir, opts.seed, &say).await?;

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
        "bench [1/5] realistic line: {rate:.0} units/min, {} ms print, printer paced at {} ms per unit, {realistic_units} units",
        opts.print_time.as_millis(),
        pitch.as_millis()
    ));
    let realistic = pipeline(
        &plant,
        "bench-realistic",
        realistic_units,
        CommitMode::Group,
        pitch,
    )
    .await?;

    // 2. RSS with the buffer full.
    say(format!(
        "bench [2/5] RSS: filling a ledger with {} buffered serials, then opening it in a fresh process",
        thousands(opts.buffered)
    ));
    let rss = buffered_rss(&plant, opts.seed, opts.buffered).await?;

    // 3. Pipeline, group commit, and the ledger's size on disk.
    say(format!(
        "bench [3/5] pipeline, group commit: {} units, zero print time, clean camera",
        thousands(opts.units)
    ));
    let group = pipeline(
        &plant,
        "bench-group",
        opts.units,
        CommitMode::Group,
        Duration::ZERO,
    )
    .await?;

    // 4. The same with a flush per transition.
    say(format!(
        "bench [4/5] pipeline, naive (a flush per transition): {} units",
        thousands(opts.naive_units)
    ));
    let naive = pipeline(
        &plant,
        "bench-naive",
        opts.naive_units,
        CommitMode::PerTransition,
        Duration::ZERO,
    )
    .await?;

    // 5. Outbox drain.
    say(format!(
        "bench [5/5] outbox drain: {} events to the broker",
        thousands(opts.drain_events)
    ));
    let drain = drain_rate(&plant, opts.drain_events).await?;

    let results = Results {
        opts: &opts,
        group,
        naive,
        realistic,
        realistic_pitch: pitch,
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
    Ok(results.group.agrees && results.naive.agrees && results.realistic.agrees)
}

/// Runs one inkjet line with a perfect camera to the end (starting once its
/// buffer is full), waits until
/// upstream has every outcome, checks it against the ledger, then shuts the
/// line's uplink down and closes its ledger.
async fn pipeline(
    plant: &Plant,
    line: &str,
    units: u64,
    commit: CommitMode,
    print_time: Duration,
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
    naive: PipelineRun,
    realistic: PipelineRun,
    realistic_pitch: Duration,
    drain_events_per_sec: f64,
    /// The probe's report and the ledger's bytes on disk.
    rss: (RssProbe, u64),
    bench_peak_rss_kb: u64,
    wall: Duration,
}

impl Results<'_> {
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
        ];
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
            Row::plain(
                "peak RSS of this bench process (VmHWM)",
                format!("{:.1} MB", mb(self.bench_peak_rss_kb)),
            ),
        ]);
        rows
    }

    fn print_table(&self) {
        let rows = self.rows();
        let header = Row {
            figure: "figure".into(),
            value: "value".into(),
            goal: "goal".into(),
            result: "result".into(),
        };
        let width = |f: fn(&Row) -> &String| {
            std::iter::once(&header)
                .chain(&rows)
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
            self.wall.as_secs_f64()
        );
        println!();
        for r in std::iter::once(&header).chain(&rows) {
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
        println!(
            "Added latency: reservation to durable Sent, plus camera read to durable verdict."
        );
        println!(
            "Realistic line: the printer simulator is paced at {} ms per unit (the pitch); CPU% is this whole",
            self.realistic_pitch.as_millis()
        );
        println!("process (daemon, simulators, broker, issuer, upstream) over the line's run.");
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
        let goals: Vec<serde_json::Value> = self
            .rows()
            .into_iter()
            .filter(|r| !r.goal.is_empty())
            .map(|r| {
                serde_json::json!({
                    "figure": r.figure.trim(),
                    "value": r.value,
                    "goal": r.goal,
                    "result": r.result,
                })
            })
            .collect();
        let mut realistic = pipeline(&self.realistic);
        realistic["units_per_min_target"] = self.opts.realistic_rate.into();
        realistic["print_time_ms"] = (self.opts.print_time.as_secs_f64() * 1000.0).into();
        realistic["printer_pitch_ms"] = (self.realistic_pitch.as_secs_f64() * 1000.0).into();
        realistic["cpu_percent_of_one_core"] = self.cpu_percent().into();
        println!(
            "{}",
            serde_json::json!({
                "wall_secs": self.wall.as_secs_f64(),
                "pipeline_group": pipeline(&self.group),
                "pipeline_naive": pipeline(&self.naive),
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
            })
        );
    }
}
