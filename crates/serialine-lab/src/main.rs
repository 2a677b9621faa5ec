//! `serialine-lab`: the simulated plant around Serialine's line, for the
//! demo, benchmarks, bench setups and QA. The service binary (`serialine`)
//! links none of this: no simulators, no embedded broker.
//!
//! Exit codes: 0 success, 1 failure (a phase failed, or upstream disagrees
//! with a ledger), 2 usage error.

/// The same allocator as the service, so the bench measures what runs on a
/// line (see the service's `main.rs` for why mimalloc, without THP).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod bench;
mod demo;
mod record_cmd;
mod sim_cmd;
mod sim_devices;

use clap::{Args, Parser, Subcommand};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

const ABOUT: &str =
    "Serialine's lab: a simulated line (demo), benchmarks, device simulators and a recording tap";

const LONG_ABOUT: &str = "\
serialine-lab runs Serialine's line (the same pipeline, ledger, uplink and
assembly as the service, `serialine run`) against simulated equipment on this
machine: an embedded MQTT broker, a simulated upstream issuer and consumer,
printers, a laser marker and cameras on pseudo-terminals, TCP and Modbus.

Start with `serialine-lab demo`: two simulated lines run end to end and the
summary checks, serial by serial, that upstream holds exactly the ledger's
outcomes. `serialine-lab bench` measures the line against the project's goals;
`serialine-lab sim` runs one simulator for a bench setup; `serialine-lab
record` taps a real device for replay in hil-tests.";

#[derive(Debug, Parser)]
#[command(
    name = "serialine-lab",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    propagate_version = true,
    arg_required_else_help = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a complete simulated line on this machine and print a summary.
    ///
    /// Starts an embedded MQTT broker, a simulated upstream issuer (sealed
    /// serial blocks) and upstream consumer, and two lines: line-1 with a
    /// framed-ASCII inkjet printer and a camera on pseudo-terminals, line-2
    /// with a Modbus TCP laser marker and a TCP camera. Each line runs the
    /// real pipeline and ledger: serials are prefetched, sent once, read
    /// back, committed or rejected, and reported upstream. The simulated
    /// cameras misread, miss, under-grade and show duplicate and foreign
    /// codes at small rates (--clean turns that off).
    ///
    /// Prints units/s, outcomes, duplicates caught and the latency the
    /// daemon adds per unit, then checks that upstream received every
    /// outcome in the ledger exactly once. Exits 1 if it did not.
    Demo(DemoArgs),

    /// Measure the whole line against the project's goals and print one table.
    ///
    /// Runs the demo's simulated plant (embedded MQTT broker, upstream issuer
    /// and consumer, framed inkjet and camera on pseudo-terminals, all in this
    /// process) through six phases, each announced on stderr. Each line
    /// starts once prefetch has filled its buffer, so no block arrives while
    /// it is measured.
    ///
    /// 1. Realistic line: --realistic-rate units/min (600) with a
    ///    --print-time-ms print (40 ms) for --realistic-secs (20 s). Prints the
    ///    CPU used, as % of one core: user + system time of this whole process
    ///    (daemon, simulators, broker) over the line's run. The printer
    ///    simulator prints back to back, so it is paced at the pitch (100 ms
    ///    at 600 units/min): one print-complete per pitch, as a
    ///    product-triggered printer would report. Runs first, so no other
    ///    phase's ledger or uplink works in the background.
    ///
    /// 2. Many lines in one daemon: --lines lines (8; the figure is
    ///    32; --lines 0 skips this phase) in one fresh process with a
    ///    simulated plant of its own, so that nothing earlier phases left in
    ///    this one is counted. Each line has its own line id, ledger, uplink,
    ///    and printer and camera simulators, the printer paced at
    ///    --lines-rate units/min (1980, i.e. 33 units/s: a pitch of 30.3 ms)
    ///    for --lines-secs (20 s); each buffers its run plus --lines-spare
    ///    serials (2,000). All lines open and fill their buffers first; then
    ///    their jobs start together, their phases spread over one pitch.
    ///
    ///    Takes each line's added latency p99 (as in phase 1: reservation to
    ///    durable Sent, plus camera read to durable verdict) and prints the
    ///    median line's (goal: < 5 ms) and the worst line's (goal: < 10 ms).
    ///    Compared with --lines 1, this shows what the lines cost each other
    ///    in one daemon (each ledger is its own sled instance, committing and
    ///    flushing on its own). Also the process's RSS: steady, the median of
    ///    VmRSS sampled every 200 ms after the first quarter of the run (goal:
    ///    < 128 MB); its peak, from the first line's opening to the run's
    ///    end; and before the lines opened (the broker, issuer and upstream
    ///    alone). And its CPU over the run, as % of one core (goal: < 25%).
    ///    RSS and CPU are the whole process, so they include the broker,
    ///    issuer and upstream a real daemon would not run. Each line is
    ///    checked against upstream. --only lines runs this phase alone.
    ///
    /// 3. RSS: a ledger filled with --buffered serials (1,000,000; blocks of
    ///    10,000), then opened by a fresh process that reserves one serial
    ///    and reports VmRSS and its peak (VmHWM). Goal: < 64 MB. Also the
    ///    size of that ledger on disk per million serials.
    ///
    /// 4. Pipeline, group commit: --units units (20,000), zero print time, a
    ///    perfect camera. Prints units/s (goal: >= 50,000) and the latency
    ///    the daemon adds per unit (reservation to durable Sent, plus camera
    ///    read to durable verdict) at p50, p99 (goal: < 1 ms) and p99.9. Then
    ///    the ledger's size on disk per million serials it holds.
    ///
    /// 5. Pipeline with aggregation: the same units packed as the demo's
    ///    line-1 packs them (a case packer's camera reads each case of 12,
    ///    a pallet station each pallet of 10 cases; every case and pallet
    ///    label printed on a simulated ZPL printer and read back before it
    ///    is committed with its contents). Prints its units/s beside phase
    ///    4's (aggregation must not slow the unit loop), the added latency
    ///    of both, and the cases sealed per second until the last pallet.
    ///
    /// 6. Pipeline, naive: the same with the ledger flushing once per
    ///    transition, --naive-units units (a quarter of --units); prints
    ///    units/s and the ratio group/naive (goal: >= 100x).
    ///
    /// 7. Outbox drain: --drain-events outcomes (20,000) published to the
    ///    broker and acknowledged by upstream; events/s.
    ///
    /// Every goal is printed next to its figure as "met" or "missed by N×".
    /// Missed goals do not fail the command; it exits 1 only if a phase
    /// fails or upstream disagrees with a ledger. Results are figures of the
    /// machine it runs on: its disk's fsync cost, its cores, what else runs.
    Bench(BenchArgs),

    /// Record a device's conversation with the daemon, for replay in hil-tests.
    ///
    /// A transparent tap: it connects to the device (--device tcp:HOST:PORT
    /// or serial:PATH) and lets the daemon connect in its place (--listen
    /// tcp:ADDR, or pty:PATH for a pseudo-terminal linked at PATH). Every
    /// byte passes unchanged and is written to --out as it passes, one chunk
    /// per line ("<µs> rx|tx <hex>": rx what the device received, tx what it
    /// sent), so the file is complete up to the last byte even if the tap is
    /// killed. Point the daemon's line at the tap (its printer or camera
    /// transport), run the line, then stop the tap with Ctrl-C, SIGTERM or
    /// --duration. A [replay] table in a hil-tests scenario plays the
    /// recording back against the daemon; see hil-tests/README.md.
    ///
    /// Over TCP each daemon connection gets a fresh device connection and
    /// one side closing closes the other, as a pulled cable would; a
    /// pseudo-terminal tap records one session.
    Record(record_cmd::RecordArgs),

    /// Run a simulator (printer, laser, broker, issuer, upstream) for bench
    /// setups and QA, on 127.0.0.1 until Ctrl-C.
    #[command(subcommand)]
    Sim(sim_cmd::Sim),
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// Units to produce on each line.
    #[arg(long, default_value_t = 20_000)]
    units: u64,

    /// Keep the ledgers here instead of a temporary directory.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,

    /// Only the inkjet line (skip the laser line).
    #[arg(long)]
    inkjet_only: bool,

    /// Cameras read every code perfectly.
    #[arg(long)]
    clean: bool,

    /// Seed for the simulators' fault draws and the line secrets.
    #[arg(long, default_value_t = 2026)]
    seed: u64,

    /// Print the summary as one JSON object (for scripts and tests).
    #[arg(long)]
    json: bool,

    /// Hide the progress bars.
    #[arg(long)]
    no_progress: bool,

    /// Serve Prometheus metrics on ADDR (e.g. 127.0.0.1:9898) while the
    /// demo runs: http://ADDR/metrics, each series labelled with its line.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,

    /// With --metrics: keep serving this many seconds after the summary
    /// (until SIGINT or SIGTERM), so a scraper sees the final counts.
    #[arg(long, value_name = "SECS", default_value_t = 0, requires = "metrics")]
    metrics_linger: u64,
    /// Also serve the lines over OPC UA at this address (e.g.
    /// 127.0.0.1:4840), anonymous reading allowed, on a SignAndEncrypt and an
    /// unsecured endpoint; the demo then keeps serving after its run until
    /// Ctrl-C. StartJob / StopJob answer that the demo runs its own jobs.
    #[arg(long, value_name = "ADDR:PORT")]
    opcua: Option<std::net::SocketAddr>,
}

#[derive(Debug, Args)]
struct BenchArgs {
    /// Units through the pipeline with group commit.
    #[arg(long, default_value_t = 20_000)]
    units: u64,

    /// Units through the naive pipeline (default: a quarter of --units).
    #[arg(long)]
    naive_units: Option<u64>,

    /// Outcomes in the outbox for the drain measurement.
    #[arg(long, default_value_t = 20_000)]
    drain_events: u64,

    /// Serials in the ledger whose memory is measured.
    #[arg(long, default_value_t = 1_000_000)]
    buffered: u64,

    /// Length of the realistic line's run, in seconds.
    #[arg(long, default_value_t = 20)]
    realistic_secs: u64,

    /// Units per minute on the realistic line.
    #[arg(long, default_value_t = 600.0)]
    realistic_rate: f64,

    /// Time to print one unit on the realistic line, in milliseconds.
    #[arg(long, default_value_t = 40)]
    print_time_ms: u64,

    /// Keep the ledgers here instead of a temporary directory (choose the
    /// disk: fsync cost drives the figures).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,

    /// Seed for the simulators and the line secrets.
    #[arg(long, default_value_t = 2026)]
    seed: u64,

    /// Print the results as one JSON object.
    #[arg(long)]
    json: bool,

    /// Lines run together in this process in the multi-line phase, each
    /// paced at --lines-rate; 0 skips the phase.
    #[arg(long, value_name = "N", default_value_t = 8)]
    lines: usize,

    /// Units per minute on each line of the multi-line phase (1980 is
    /// 33 units/s).
    #[arg(long, value_name = "UNITS_PER_MIN", default_value_t = 1980.0)]
    lines_rate: f64,

    /// Length of the multi-line phase's run, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 20)]
    lines_secs: u64,

    /// Serials each line of the multi-line phase buffers beyond its run.
    /// Small by default because the simulated issuer in this process
    /// remembers every serial it issues, which the RSS would count; a
    /// daemon's default is 20,000 (the ledger's memory per buffered serial
    /// is the RSS phase's figure).
    #[arg(long, value_name = "SERIALS", default_value_t = 2_000)]
    lines_spare: u64,

    /// Run only this phase: `lines`, the multi-line phase (with --lines,
    /// --lines-rate and --lines-secs), for a quick look at its figures.
    #[arg(long, value_enum, value_name = "PHASE")]
    only: Option<BenchPhase>,

    /// Internal: open the ledger the bench filled under DIR and print its
    /// memory use (the RSS phase runs this in a fresh process).
    #[arg(long, value_name = "DIR", hide = true)]
    rss_probe: Option<PathBuf>,
}

/// A phase of `bench` that can run alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum BenchPhase {
    /// N lines in one process, paced at a realistic rate.
    Lines,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => demo_cmd(args),
        Command::Bench(args) => bench_cmd(args),
        Command::Sim(sim) => sim_run(sim),
        Command::Record(args) => record_run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Hands memory that start-up work freed back to the OS (see
/// `serialine_line::open_line`'s `after_open`): mimalloc keeps freed pages
/// of a thread for its reuse, and the thread that opened a ledger may never
/// allocate again.
pub(crate) fn release_freed_memory() {
    // SAFETY: mi_collect only walks mimalloc's own heaps; it takes no
    // pointers and is safe to call from any thread at any time.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

fn record_run(args: record_cmd::RecordArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(record_cmd::run(args))?;
    Ok(ExitCode::SUCCESS)
}

fn sim_run(sim: sim_cmd::Sim) -> anyhow::Result<ExitCode> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn,rumqttd=off"))
        .with_writer(std::io::stderr)
        .try_init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(sim_cmd::run(sim))?;
    Ok(ExitCode::SUCCESS)
}

/// Quiet logging and a runtime for the commands that run a simulated plant
/// (`demo`, `bench`).
fn plant_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SERIALINE_LOG")
        // The embedded broker logs client disconnects as errors; at the end
        // of a demo those are expected.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error,rumqttd=off"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn bench_cmd(args: BenchArgs) -> anyhow::Result<ExitCode> {
    if let Some(dir) = &args.rss_probe {
        bench::rss_probe(dir)?;
        return Ok(ExitCode::SUCCESS);
    }
    let runtime = plant_runtime()?;
    let opts = bench::BenchOptions {
        units: args.units,
        naive_units: args.naive_units.unwrap_or(args.units / 4).max(1),
        drain_events: args.drain_events,
        buffered: args.buffered,
        realistic_secs: args.realistic_secs,
        realistic_rate: args.realistic_rate,
        print_time: std::time::Duration::from_millis(args.print_time_ms),
        state_dir: args.state_dir,
        seed: args.seed,
        json: args.json,
        lines: args.lines,
        lines_rate: args.lines_rate,
        lines_secs: args.lines_secs,
        lines_spare: args.lines_spare,
        only_lines: args.only == Some(BenchPhase::Lines),
    };
    let agreed = runtime.block_on(bench::run(opts))?;
    Ok(if agreed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn demo_cmd(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let runtime = plant_runtime()?;
    if let Some(addr) = args.metrics {
        // Before any line opens (their metric handles are taken at start),
        // on the plant's runtime.
        let _in_runtime = runtime.enter();
        serialine_line::prometheus::install(addr)?;
        if !args.json {
            eprintln!("serialine-lab demo: Prometheus metrics on http://{addr}/metrics");
        }
    }
    let opts = demo::DemoOptions {
        units: args.units,
        state_dir: args.state_dir,
        inkjet_only: args.inkjet_only,
        clean: args.clean,
        seed: args.seed,
        json: args.json,
        progress: !args.no_progress && std::io::stderr().is_terminal(),
        metrics_linger: std::time::Duration::from_secs(args.metrics_linger),
        opcua: args.opcua,
    };
    let agreed = runtime.block_on(demo::run(opts))?;
    Ok(if agreed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
