//! `serialine`: the line-side serialization daemon and its tools.
//!
//! Exit codes: 0 success, 1 unexpected failure, 2 configuration or usage
//! error (systemd's `RestartPreventExitStatus=2` relies on this).

// The config API is wider than what the CLI uses yet (secrets, jobs, grades
// are for the pipeline).

/// sled allocates on every update; glibc's malloc was a third of the ledger
/// committer's profile, and mimalloc measured 24% more durable transitions/s
/// (`cargo bench -p serialine-store`).
///
/// Built without transparent huge pages (`no_thp`): with THP, mimalloc's
/// eagerly committed arena was backed by 2 MB pages, and a daemon that had
/// just opened a ledger of 1 M buffered serials sat at 104 MB instead of 64 MB.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Hands memory that start-up work freed back to the OS. Opening a ledger
/// rebuilds sled's page table from its snapshot and log, with tens of MB of
/// temporaries; mimalloc keeps freed pages for reuse and purges them only on
/// later allocator activity of the same thread, which the thread that opened
/// the ledger may never have. Call it on the thread that did the work.
pub(crate) fn release_freed_memory() {
    // SAFETY: mi_collect only walks mimalloc's own heaps; it takes no
    // pointers and is safe to call from any thread at any time.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

mod code_cmd;
mod control;
mod daemon;
mod pack_cmd;
mod report_html;
mod return_cmd;
mod tools;
mod unit_cmd;

use clap::{Args, Parser, Subcommand};
use serialine::config::{self, Config, ConfigError, LogFormat, DEFAULT_CONFIG_PATH};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Exit code for configuration and usage errors (clap uses 2 for usage too).
const EXIT_CONFIG: u8 = 2;

const ABOUT: &str = "Line-side product serialization daemon: prints a unique serial on every unit";

const LONG_ABOUT: &str = "\
Serialine runs next to a packaging line. It keeps a local, crash-safe ledger of
serial numbers issued to the line by the upstream serialization system (fetched
over MQTT in sealed blocks), sends each serial to the printer or laser marker
exactly once, checks the printed code with the camera (content and ISO/IEC 15415
grade), commits good units, rejects bad ones, and reports every unit's final
state upstream.

Configuration comes from a TOML file (default /etc/serialine/serialine.toml)
and SERIALINE_<SECTION>__<KEY> environment variables that override single keys,
e.g. SERIALINE_MQTT__HOST=broker.local or SERIALINE_STORE__MAX_BATCH=1024.
Relative paths in the file are resolved against the file's directory.";

const AFTER_HELP: &str = "\
Exit status: 0 on success, 1 on an unexpected failure, 2 on a configuration or
usage error.

See config/serialine.toml for every configuration key, and
systemd/serialine.service for running it as a service.";

#[derive(Debug, Parser)]
#[command(
    name = "serialine",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = AFTER_HELP,
    propagate_version = true,
    arg_required_else_help = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// One variant per subcommand, each with its own `Args` struct and handler;
/// add a variant, an args struct and a `match` arm to add a subcommand.
#[derive(Debug, Subcommand)]
enum Command {
    /// Check a configuration file and the files it names, then print a summary.
    ///
    /// Loads the file with its SERIALINE_* environment overrides, checks every
    /// key (unknown keys, types, ranges, unique line ids, buffer marks, the
    /// default job's GTIN, lot and expiry), then reads every secret file it
    /// names (line secrets, MQTT password, TLS key): each must exist and not be
    /// empty, and draws a warning if group or others may access it. TLS
    /// certificates must be readable.
    ///
    /// Prints "config OK: ..." and any warnings and exits 0, or prints every
    /// problem, each naming the file (or environment variable) and the key,
    /// and exits 2. Run it as the daemon's user to check file permissions as
    /// the service will see them.
    CheckConfig(CheckConfigArgs),

    /// Run the daemon (as the systemd service does).
    ///
    /// Loads and checks the configuration like check-config (device profile,
    /// register map and label files included), sets up logging (plain text
    /// without colours for journald, or JSON, per daemon.log_format), then
    /// opens every line's ledger at <state_dir>/ledger/<line id>, voids what a
    /// previous run left in flight, connects each line's MQTT uplink, and
    /// tells systemd READY. A line with a default [line.job] starts it at
    /// once; otherwise it waits for cmd/job/start. cmd/job/stop and cmd/drain
    /// stop the job once the units in flight have their verdict.
    ///
    /// SIGTERM or SIGINT stops every job the same way (at most 30 s),
    /// publishes the retained "offline" status, closes the ledgers and exits
    /// 0. Exits 2 on a configuration error, 1 when a line cannot start (for
    /// example its ledger cannot be opened).
    Run(RunArgs),

    /// Show each line's ledger: buffer, in flight, outcomes, outbox, archive.
    ///
    /// While the service runs, asks it over its local control socket
    /// (<state_dir>/control.sock, mode 0660: run as the service's user or a
    /// member of its group), and shows each line's state too. While it is
    /// stopped, reads the ledgers directly. The live status for plant
    /// systems is the retained MQTT topic serialine/<site>/<line>/status.
    Status(StatusArgs),

    /// Export committed serials (or every outcome) as CSV or JSON lines, or
    /// the jobs as a GS1 EPCIS 2.0 document.
    ///
    /// CSV and JSON lines: one row per serial whose last transition is at or
    /// after --since: the line, the serial, its state (committed, rejected
    /// with its reason, voided, sampled, decommissioned, returned), when,
    /// and its parent (the case a unit is in, the pallet a case is on).
    ///
    /// --format epcis: one EPCIS 2.0 JSON-LD document with, for every job
    /// that ended at or after --since, its commissioning ObjectEvents
    /// (action ADD, bizStep commissioning, disposition active, the job's lot
    /// and expiry in ilmd, eventTime the job's end), its samples (OBSERVE,
    /// sampling/non_sellable_other, one event per purpose), its
    /// decommissioning ones (destroying/destroyed, decommissioning/inactive
    /// or /stolen) and its packaging hierarchy as it stands
    /// (AggregationEvent ADD, packing/in_progress, parentID the case's EPC).
    /// Case labels are commissioned under their own GTIN. Each
    /// eventID is the event's CBV 2.0 hash, so exporting again gives the same
    /// ids. EPCs are GS1 Digital Link URIs (https://id.gs1.org/01/.../21/...).
    ///
    /// Reads the ledgers and the line's archives directly (stop the service).
    Export(ExportArgs),
    /// A job's reconciliation: its units by outcome, and whether it balances.
    ///
    /// For each line (or --line), the job --job (its number in the line's
    /// ledger; default: the last job): product, lot, expiry, quantity, start
    /// and end, then sent = committed (of which sampled, decommissioned) +
    /// rejected (by reason) + voided + in flight. A job that ended with units
    /// in flight does not balance, and they are named. Counts the line's
    /// archives too. The service writes the same report for every job it
    /// ends under <state_dir>/reports/<line>/job-<n>.json. Asks the running
    /// service, or reads the ledgers when it is stopped. Exit status 1 when
    /// a report does not balance.
    Report(ReportArgs),

    /// Move ended records out of the ledgers into archive files (retention).
    ///
    /// A block's records leave its line's ledger once the block is used up,
    /// every serial in it has its final outcome (committed and acknowledged,
    /// or rejected / voided and reported upstream), and none moved after the
    /// cut-off: --before, or by default now minus retention.keep_days. They
    /// go to zstd-compressed JSON lines under <retention.dir>/<line id>/
    /// (default <state_dir>/archive/<line id>/; read one with `zstd -dc`).
    /// The ledger keeps each archived block's position, so it is never
    /// issued again; `serialine export` reads the archives too.
    ///
    /// The service does the same between jobs (at most 20 files per
    /// pause). While it runs, this asks it to (control socket), one file at
    /// a time; otherwise it opens the ledgers. Safe to interrupt: a round
    /// cut short is finished by the next run, into the same file.
    Archive(ArchiveArgs),
    /// Give a line's unused serials back upstream (SNReturnUnallocated).
    ///
    /// The serials still buffered for a product (--gtin; default: the last
    /// job's) are returned block by block: each gets a Returned record in
    /// the ledger and is never printed by this line again; upstream gets
    /// one event per block range of at most 100 serials, exactly once
    /// (outbox), and may issue them elsewhere. Counted in the last job's
    /// report when it made that product. Refused while a job runs, and
    /// while the fence waits for upstream (a restored ledger).
    ///
    /// Safe to interrupt: a return cut short is finished when the service
    /// next starts. While the service runs this asks it (control socket),
    /// which also stops its prefetch until the next job; otherwise it
    /// opens the ledgers. With `[line.buffer] return_at_job_end = true` the
    /// service does this at every job's end.
    Return(ReturnArgs),
    /// Pack units into a case (or cases onto a pallet) by hand: a packing
    /// station's scan, or rework.
    ///
    /// PARENT is the serial of the parent's label, printed and verified on
    /// a line of this service; each CHILD must be committed, of the same
    /// job, and in no parent (nor sampled, nor decommissioned). All are
    /// packed or none: a refusal names every offending code and why. The
    /// move goes upstream once, as an aggregation event. Asks the running
    /// service, or opens the ledgers when it is stopped.
    Pack(pack_cmd::PackArgs),
    /// Take children out of a parent (rework), or empty it for good.
    ///
    /// With CHILD serials, those come out and the parent keeps the rest
    /// (pack others in with `serialine pack`). With --all the parent is
    /// emptied and its code is never packed again. Upstream hears it once. A label
    /// printed but never used is scrapped with `serialine unit decommission
    /// LABEL --reason destroyed`.
    Unpack(pack_cmd::UnpackArgs),
    /// Where a serial sits in the packaging hierarchy: its state, its
    /// parents up to the pallet, and what it holds.
    Contents(pack_cmd::ContentsArgs),
    /// Record what became of committed units: QA samples, destroyed or
    /// damaged packs; see `unit sample --help` and `unit decommission --help`.
    #[command(subcommand)]
    Unit(unit_cmd::UnitCommand),
    /// Render a job's codes (element string, Digital Link, HRI) or parse
    /// codes read back, with the line's own GS1 code; see `code render
    /// --help` and `code parse --help`.
    #[command(subcommand)]
    Code(code_cmd::CodeCommand),
}

#[derive(Debug, Args)]
struct StatusArgs {
    #[arg(short, long, value_name = "FILE", default_value = DEFAULT_CONFIG_PATH, env = "SERIALINE_CONFIG")]
    config: PathBuf,
    /// Only this line.
    #[arg(long)]
    line: Option<String>,
    /// One JSON array instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ExportArgs {
    #[arg(short, long, value_name = "FILE", default_value = DEFAULT_CONFIG_PATH, env = "SERIALINE_CONFIG")]
    config: PathBuf,
    /// Only this line.
    #[arg(long)]
    line: Option<String>,
    /// From this time: 2026-11-26T08:00:00Z, a date (2026-11-26), or a
    /// duration back from now (8h, 2days). Default: everything.
    #[arg(long)]
    since: Option<String>,
    /// Rejected and voided serials too, not only committed ones.
    #[arg(long)]
    all_outcomes: bool,
    #[arg(long, value_enum, default_value = "csv")]
    format: tools::ExportFormat,
    /// With --format epcis: the events' readPoint, a GS1 Digital Link URI
    /// of the line's SGLN, e.g. https://id.gs1.org/414/9506000134352/254/line-1.
    /// Default: the line's `[line.epcis] read_point`.
    #[arg(long, value_name = "URI")]
    read_point: Option<String>,
    /// With --format epcis: the events' bizLocation (the site's SGLN), e.g.
    /// https://id.gs1.org/414/9506000134352. Default: the line's
    /// `[line.epcis] biz_location`.
    #[arg(long, value_name = "URI")]
    biz_location: Option<String>,
}

#[derive(Debug, Args)]
struct ReportArgs {
    #[arg(short, long, value_name = "FILE", default_value = DEFAULT_CONFIG_PATH, env = "SERIALINE_CONFIG")]
    config: PathBuf,
    /// Only this line.
    #[arg(long)]
    line: Option<String>,
    /// The job's number in the line's ledger (the service logs it when the
    /// job starts). Default: the last job.
    #[arg(long)]
    job: Option<u32>,
    /// One JSON array instead of text.
    #[arg(long)]
    json: bool,
    /// Also write the report as one self-contained HTML page for the batch
    /// record: the reconciliation, and charts of units committed and
    /// rejects by reason over the job (a scan of the job's records).
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ReturnArgs {
    #[arg(short, long, value_name = "FILE", default_value = DEFAULT_CONFIG_PATH, env = "SERIALINE_CONFIG")]
    config: PathBuf,
    /// Only this line.
    #[arg(long)]
    line: Option<String>,
    /// The product whose serials go back (GTIN-8/12/13/14). Default: the
    /// last job's product.
    #[arg(long)]
    gtin: Option<String>,
    /// One JSON array instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ArchiveArgs {
    #[arg(short, long, value_name = "FILE", default_value = DEFAULT_CONFIG_PATH, env = "SERIALINE_CONFIG")]
    config: PathBuf,
    /// Only this line.
    #[arg(long)]
    line: Option<String>,
    /// Archive what last moved before this time: 2026-11-01T00:00:00Z, a
    /// date (2026-11-01), or a duration back from now (30days, 12h).
    /// Default: now minus retention.keep_days.
    #[arg(long)]
    before: Option<String>,
}

#[derive(Debug, Args)]
struct CheckConfigArgs {
    /// Configuration file to check.
    #[arg(
        value_name = "FILE",
        default_value = DEFAULT_CONFIG_PATH,
        env = "SERIALINE_CONFIG"
    )]
    file: PathBuf,

    /// Ignore SERIALINE_* environment overrides; check the file alone.
    #[arg(long)]
    no_env: bool,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Configuration file.
    #[arg(
        short,
        long,
        value_name = "FILE",
        default_value = DEFAULT_CONFIG_PATH,
        env = "SERIALINE_CONFIG"
    )]
    config: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::CheckConfig(args) => check_config(&args),
        Command::Run(args) => run(&args),
        Command::Status(args) => status_cmd(&args),
        Command::Export(args) => export_cmd(&args),
        Command::Archive(args) => archive_cmd(&args),
        Command::Return(args) => return_cmd_main(&args),
        Command::Report(args) => report_cmd(&args),
        Command::Code(cmd) => code_cmd::run(cmd),
        Command::Unit(cmd) => unit_cmd::run(cmd),
        Command::Pack(args) => pack_cmd::run_pack(args),
        Command::Unpack(args) => pack_cmd::run_unpack(args),
        Command::Contents(args) => pack_cmd::run_contents(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Prints a config error as plain `error:` lines and returns exit code 2.
fn report_config_error(e: &ConfigError) -> ExitCode {
    for message in e.messages() {
        eprintln!("error: {message}");
    }
    ExitCode::from(EXIT_CONFIG)
}

/// Loads, validates and checks the files of a configuration: the config and
/// its warnings, or the exit code after reporting the problems.
fn load_checked(path: &Path, env: bool) -> Result<(Config, Vec<config::Issue>), ExitCode> {
    let config = Config::load_with_env(path, env).map_err(|e| report_config_error(&e))?;
    let warnings = config.check_files().map_err(|e| report_config_error(&e))?;
    Ok((config, warnings))
}

fn status_cmd(args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let config = match Config::load_with_env(&args.config, true) {
        Ok(c) => c,
        Err(e) => return Ok(report_config_error(&e)),
    };
    tools::status(&config, args.line.as_deref(), args.json)?;
    Ok(ExitCode::SUCCESS)
}

fn export_cmd(args: &ExportArgs) -> anyhow::Result<ExitCode> {
    let config = match Config::load_with_env(&args.config, true) {
        Ok(c) => c,
        Err(e) => return Ok(report_config_error(&e)),
    };
    let since = match &args.since {
        Some(s) => tools::parse_since(s)?,
        None => std::time::UNIX_EPOCH,
    };
    let n = tools::export(
        &config,
        args.line.as_deref(),
        since,
        args.all_outcomes,
        args.format,
        &tools::EpcisPlaces {
            read_point: args.read_point.clone(),
            biz_location: args.biz_location.clone(),
        },
    )?;
    eprintln!("exported {n} serial(s)");
    Ok(ExitCode::SUCCESS)
}

fn report_cmd(args: &ReportArgs) -> anyhow::Result<ExitCode> {
    let config = match Config::load_with_env(&args.config, true) {
        Ok(c) => c,
        Err(e) => return Ok(report_config_error(&e)),
    };
    let balanced = tools::report(
        &config,
        args.line.as_deref(),
        args.job,
        args.json,
        args.html.as_deref(),
    )?;
    Ok(if balanced {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn archive_cmd(args: &ArchiveArgs) -> anyhow::Result<ExitCode> {
    let config = match Config::load_with_env(&args.config, true) {
        Ok(c) => c,
        Err(e) => return Ok(report_config_error(&e)),
    };
    let before = match (&args.before, config.retention_cutoff()) {
        (Some(s), _) => tools::parse_since(s)?,
        (None, Some(cutoff)) => cutoff,
        (None, None) => {
            eprintln!(
                "{}: retention.keep_days is 0 (keep everything); pass --before to archive anyway",
                config.origin_name()
            );
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
    };
    tools::archive(&config, args.line.as_deref(), before)?;
    Ok(ExitCode::SUCCESS)
}

fn return_cmd_main(args: &ReturnArgs) -> anyhow::Result<ExitCode> {
    let config = match Config::load_with_env(&args.config, true) {
        Ok(c) => c,
        Err(e) => return Ok(report_config_error(&e)),
    };
    return_cmd::cli(
        &config,
        args.line.as_deref(),
        args.gtin.as_deref(),
        args.json,
    )?;
    Ok(ExitCode::SUCCESS)
}

fn check_config(args: &CheckConfigArgs) -> anyhow::Result<ExitCode> {
    let (config, warnings) = match load_checked(&args.file, !args.no_env) {
        Ok(v) => v,
        Err(code) => return Ok(code),
    };
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    let overrides = config.env_overrides();
    if !overrides.is_empty() {
        println!("environment overrides: {}", overrides.join(", "));
    }
    println!("config OK: {}", config.summary());
    Ok(ExitCode::SUCCESS)
}

fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let (config, warnings) = match load_checked(&args.config, true) {
        Ok(v) => v,
        Err(code) => return Ok(code),
    };
    init_tracing(&config)?;
    for w in &warnings {
        tracing::warn!("{w}");
    }
    tracing::info!(
        config = %args.config.display(),
        site = %config.site.id,
        env_overrides = ?config.env_overrides(),
        version = env!("CARGO_PKG_VERSION"),
        "configuration loaded: {}",
        config.summary()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(daemon::run(config));
    // Tasks still running (device drivers, aborted uplink tasks) are
    // dropped; committed state is already durable.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            tracing::error!("{e:#}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Logs to stderr. Plain format: no colours unless stderr is a terminal; under
/// journald (`JOURNAL_STREAM` set) no timestamps (journald adds them) and a
/// `<N>` syslog priority prefix so journald keeps each event's level. JSON
/// format: one object per event.
fn init_tracing(config: &Config) -> anyhow::Result<()> {
    use tracing_subscriber::fmt;

    let filter = tracing_subscriber::EnvFilter::try_new(&config.daemon.log_level)?;
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let installed = match config.daemon.log_format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Plain => {
            let terminal = std::io::stderr().is_terminal();
            let journal = !terminal && stderr_is_journal();
            let builder = builder.with_ansi(terminal);
            if journal {
                builder
                    .event_format(journald::Prefixed(fmt::format().without_time()))
                    .try_init()
            } else {
                builder.try_init()
            }
        }
    };
    installed.map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}

/// Whether stderr is the journal stream systemd announced in `JOURNAL_STREAM`
/// (`<device>:<inode>`, compared with stderr's, as systemd.exec(5) advises).
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    match (
        dev.parse::<u64>(),
        ino.parse::<u64>(),
        std::fs::metadata("/proc/self/fd/2"),
    ) {
        (Ok(dev), Ok(ino), Ok(meta)) => meta.dev() == dev && meta.ino() == ino,
        _ => false,
    }
}

mod journald {
    use std::fmt;
    use tracing::{Event, Level, Subscriber};
    use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
    use tracing_subscriber::fmt::FmtContext;
    use tracing_subscriber::registry::LookupSpan;

    /// Prefixes each event with its sd-daemon(3) priority, `<3>`..`<7>`.
    pub struct Prefixed<F>(pub F);

    impl<S, N, F> FormatEvent<S, N> for Prefixed<F>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
        N: for<'a> FormatFields<'a> + 'static,
        F: FormatEvent<S, N>,
    {
        fn format_event(
            &self,
            ctx: &FmtContext<'_, S, N>,
            mut writer: Writer<'_>,
            event: &Event<'_>,
        ) -> fmt::Result {
            let priority = match *event.metadata().level() {
                Level::ERROR => 3,
                Level::WARN => 4,
                Level::INFO => 6,
                Level::DEBUG | Level::TRACE => 7,
            };
            write!(writer, "<{priority}>")?;
            self.0.format_event(ctx, writer, event)
        }
    }
}
