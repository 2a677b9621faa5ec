//! The scenario file format (TOML, every table `deny_unknown_fields`).
//! See `hil-tests/README.md` for the documented reference.

use serde::Deserialize;
use std::path::{Path, PathBuf};

use crate::HilError;

/// One scenario: a line, a job, simulator knobs and a fault timeline.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Name shown in reports; default: the file stem.
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Seeds every simulator knob draw, the issuer and random kill points.
    /// `HIL_SEED` overrides it.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Units to produce over the whole scenario (across restarts); with
    /// several `lines`, per line (see `units_step`).
    pub units: u64,
    /// `[[line]]` sections in the one daemon's config (default 1), each with
    /// its own printer and camera simulators and its own ledger. More than
    /// one takes the multi-line harness (`multi_line.rs`): framed printer,
    /// printer and camera knobs, kills; see [`Scenario::validate`].
    #[serde(default = "default_lines")]
    pub lines: u32,
    /// With several lines: line n (from 1) runs `units + (n - 1) *
    /// units_step` units, so the lines' jobs end one after another and each
    /// line's between-jobs checkpoint (its ledger closed, flushed and
    /// reopened) falls while the other lines are still committing.
    #[serde(default)]
    pub units_step: u64,
    /// Longest the scenario may run before it is stopped and reported.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// When the harness stops the daemon (SIGTERM).
    #[serde(default)]
    pub stop_when: StopWhen,
    #[serde(default)]
    pub job: JobSpec,
    #[serde(default)]
    pub line: LineSpec,
    #[serde(default)]
    pub printer: PrinterSpec,
    #[serde(default)]
    pub camera: CameraSpec,
    #[serde(default)]
    pub laser: LaserSpec,
    #[serde(default)]
    pub timeline: Timeline,
    #[serde(default)]
    pub expect: Expect,
    /// Replay recorded device sessions instead of running the simulators.
    #[serde(default)]
    pub replay: Option<ReplaySpec>,
    /// Attacks on the command and ack topics (issue 13).
    #[serde(default)]
    pub attack: crate::attack::AttackSpec,
    /// Issue 15: once the job is over and reported, units are sampled and
    /// decommissioned through `serialine unit` on the running daemon.
    #[serde(default)]
    pub after_commit: AfterCommit,
    /// Issue 14: the line packs its units into cases (and cases onto
    /// pallets), with a case packer, label printers and label scanners
    /// simulated (`packaging.rs`).
    #[serde(default)]
    pub aggregation: Option<AggregationSpec>,
    /// Issue 14: once the job is over and reported, rework on the running
    /// daemon (`serialine pack | unpack | contents`): units swapped in and
    /// out of sealed cases, cases emptied for good. Needs `[aggregation]`.
    #[serde(default)]
    pub rework: Rework,
}

/// `[rework]` (issue 14), after the job, through the running daemon's
/// control socket, on the sealed cases in the serial order of their
/// labels:
/// - `swap`: in each of the first `swap` cases, one unit is taken out
///   (`serialine unpack CASE UNIT`) and a loose committed unit put in its
///   place (`serialine pack CASE LOOSE`); loose units come from a case the
///   packer faulted, so `swap` needs a case packer fault;
/// - `empty`: the next `empty` cases are emptied for good (`serialine
///   unpack CASE --all`); then packing one of its former units into it,
///   and emptying it again, must each be refused;
/// - `refused_pack`: a unit still in another case is packed into the first
///   case: it must be refused, naming that unit;
/// - `repeat` (with `swap`): the unit swapped into the first case is taken
///   out and put back in: a move made a second time is a new event, which
///   upstream must hear too.
///
/// Not with kills (a restarted job is another job). Then the harness waits
/// until upstream holds every rework event and the outbox is empty. The checker knows what rework changed (units out of a
/// case loose, an emptied case holding nothing, a unit of a faulted case
/// in a case by rework) and holds everything else to the hierarchy rules.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rework {
    pub swap: usize,
    pub empty: usize,
    pub refused_pack: bool,
    pub repeat: bool,
}

impl Rework {
    pub fn any(&self) -> bool {
        self.swap + self.empty > 0 || self.refused_pack || self.repeat
    }

    /// Sealed cases the rework needs: the swapped, the emptied, and one
    /// left alone whose unit the refused pack names.
    pub fn cases_needed(&self) -> usize {
        self.swap + self.empty + usize::from(self.refused_pack)
    }
}

/// `[aggregation]` (issue 14): the packaging levels the daemon's line
/// closes (`[[line.aggregation]]` in the config the harness writes), each
/// with its simulators: a ZPL label printer ([`serialine_sim::label`])
/// whose printed labels go under a label scanner (a camera simulator), and,
/// when the level scans, a case packer with its aggregation camera
/// ([`serialine_sim::aggregation`]). The case packer is fed by the units
/// the unit camera read good; the pallet station (a second packer, cases
/// per pallet) by the case labels the case scanner read good. The
/// simulators live for the whole scenario: they outlast kills, and the
/// daemon's drivers reconnect to them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregationSpec {
    /// Units per case (the case level's `per_parent`), 1..=1000.
    pub per_case: u32,
    /// Cases per pallet: a pallet level above the cases; none without it.
    #[serde(default)]
    pub cases_per_pallet: Option<u32>,
    /// The case level's mode: `scan` (default: the case packer's
    /// aggregation camera reads each case) or `count` (the next `per_case`
    /// units committed; no packer, so no packer faults).
    #[serde(default)]
    pub mode: AggregationMode,
    /// The pallet level's mode: `scan` (default: a pallet station, fed by
    /// the case labels the case scanner read good, reads each pallet) or
    /// `count` (the next `cases_per_pallet` cases sealed).
    #[serde(default)]
    pub pallet_mode: AggregationMode,
    /// The case's GTIN (its labels' blocks).
    #[serde(default = "default_case_gtin")]
    pub case_gtin: String,
    /// The pallet's GTIN.
    #[serde(default = "default_pallet_gtin")]
    pub pallet_gtin: String,
    /// The case packer reads an open case as it is once nothing came for
    /// this long: the job's last, partial one; the pallet station waits
    /// twice as long (the last case itself comes this late). Keep it well
    /// above the line's gaps between units (a flush while the line still
    /// feeds is a refused case) and below `close_wait_ms`.
    #[serde(default = "default_flush_after")]
    pub flush_after_ms: u64,
    /// `[[line.aggregation]] close_wait_ms` of every level: once the level
    /// below is done, how long the last read may take to come.
    #[serde(default = "default_close_wait")]
    pub close_wait_ms: u64,
    /// `[[line.aggregation]] label_deadline_ms` of every level.
    #[serde(default = "default_label_deadline")]
    pub label_deadline_ms: u64,
    /// Case packer faults (scan mode), at exactly these case reads (from
    /// 1, counting every read the packer wrote): a unit fell off (the read
    /// is one short), a foreign unit in the case, the previous case's
    /// first unit in place of the last one, the last code not read. Each
    /// such case must be refused and change nothing; put them in cases
    /// that are neither adjacent nor last (an already aggregated unit of a
    /// refused case is loose, so that case would be sealed; a unit missing
    /// from the last case is a partial case to the daemon).
    #[serde(default)]
    pub missing_at: Vec<u64>,
    #[serde(default)]
    pub foreign_at: Vec<u64>,
    #[serde(default)]
    pub already_aggregated_at: Vec<u64>,
    #[serde(default)]
    pub no_read_at: Vec<u64>,
    /// Every label printer's time per label (`LabelSimConfig::print_time`).
    #[serde(default)]
    pub label_print_time_ms: u64,
    /// Every label scanner's time from a label's print to its read.
    #[serde(default)]
    pub scanner_read_latency_ms: u64,
    /// Every label scanner's no-read and low-grade probabilities per label
    /// (seeded): the label is rejected and its case refused.
    #[serde(default)]
    pub scanner_no_read_rate: f64,
    #[serde(default)]
    pub scanner_low_grade_rate: f64,
}

/// `aggregation.mode`, `aggregation.pallet_mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AggregationMode {
    #[default]
    Scan,
    Count,
}

impl AggregationMode {
    /// As `[[line.aggregation]] mode` says it.
    pub fn as_str(self) -> &'static str {
        match self {
            AggregationMode::Scan => "scan",
            AggregationMode::Count => "count",
        }
    }
}

fn default_case_gtin() -> String {
    "19506000134359".into()
}
fn default_pallet_gtin() -> String {
    "29506000134356".into()
}
fn default_flush_after() -> u64 {
    1_000
}
fn default_close_wait() -> u64 {
    2_500
}
fn default_label_deadline() -> u64 {
    5_000
}

impl AggregationSpec {
    /// Any case packer fault knob set.
    pub fn packer_faults(&self) -> bool {
        !(self.missing_at.is_empty()
            && self.foreign_at.is_empty()
            && self.already_aggregated_at.is_empty()
            && self.no_read_at.is_empty())
    }
}

/// `[after_commit]`: the first committed serials (in serial order) are
/// sampled (`sample`), the next decommissioned (`decommission`), and the
/// first `sample_then_decommission` of the sampled ones decommissioned
/// after; `refused` serials never issued are asked too, each must be
/// refused.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AfterCommit {
    pub sample: usize,
    pub decommission: usize,
    pub sample_then_decommission: usize,
    pub refused: usize,
}

impl AfterCommit {
    pub fn any(&self) -> bool {
        self.sample + self.decommission + self.refused > 0
    }
}

fn default_seed() -> u64 {
    1
}
fn default_lines() -> u32 {
    1
}
fn default_timeout() -> u64 {
    120
}

/// When the run is over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopWhen {
    /// `units` decided and every outcome held by upstream.
    #[default]
    JobDone,
    /// The printer simulator has jammed and ignored at least one message
    /// (the job cannot finish): stop mid-job.
    PrinterJammed,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobSpec {
    pub gtin: String,
    pub lot: String,
    /// YYMMDD.
    pub expiry: String,
}

impl Default for JobSpec {
    fn default() -> Self {
        JobSpec {
            gtin: "09506000134352".into(),
            lot: "HIL-LOT-1".into(),
            expiry: "271231".into(),
        }
    }
}

/// The marking device the daemon drives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PrinterKind {
    /// Framed-ASCII inkjet over TCP (`[line.printer] kind = "framed"`).
    #[default]
    Framed,
    /// Modbus TCP laser marker (`[line.printer] kind = "laser"`), register
    /// map `config/laser-modbus.toml`.
    Laser,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LineSpec {
    pub printer: PrinterKind,
    /// Framed printer profile, relative to the workspace's `config/`.
    pub printer_profile: String,
    pub camera_window: usize,
    pub read_deadline_ms: u64,
    pub starve_timeout_secs: u64,
    /// Serials per block the issuer seals.
    pub block_size: u32,
    pub low_water_serials: u64,
    pub high_water_serials: u64,
    /// `[line.buffer] return_at_job_end`: the unused serials go back
    /// upstream when the job ends (issue 15).
    pub return_at_job_end: bool,
}

impl Default for LineSpec {
    fn default() -> Self {
        LineSpec {
            printer: PrinterKind::Framed,
            printer_profile: "printer-cij-stx.toml".into(),
            camera_window: 16,
            read_deadline_ms: 2000,
            starve_timeout_secs: 120,
            block_size: 500,
            low_water_serials: 300,
            high_water_serials: 1500,
            return_at_job_end: false,
        }
    }
}

/// Printer simulator knobs (`serialine_sim::printer::PrinterKnobs`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrinterSpec {
    pub nak_rate: f64,
    pub jam_after: Option<u64>,
    /// Cable pull: drop the link once after this many units printed.
    pub disconnect_after: Option<u64>,
    pub garbage_bytes: usize,
    pub print_time_ms: u64,
    /// Default: the profile's `buffer_depth`.
    pub buffer_depth: Option<usize>,
}

/// Laser simulator knobs (`serialine_sim::laser::LaserSimConfig`), used
/// when `line.printer = "laser"`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LaserSpec {
    /// Each Modbus write fails with a server-device-failure exception with
    /// probability 1/`exception_one_in` (seeded).
    pub exception_one_in: Option<u32>,
    /// Every n-th write fails with an exception.
    pub exception_every_nth_write: Option<u64>,
    /// Drop the Modbus connection once after this many marks.
    pub drop_connection_after_marks: Option<u64>,
    pub mark_time_ms: u64,
    /// For this long from the first connection, accept the daemon's
    /// connections and turn them away (`unserved`), then serve: a marker
    /// still booting, a gateway whose marker is gone. 0: serve at once.
    pub unserved_ms: u64,
    /// How a connection is turned away: `"drop"` (closed at once, the
    /// default) or `"silent"` (held open, never answered).
    pub unserved: serialine_sim::unserved::Unserved,
}

/// Camera simulator knobs (`serialine_sim::camera::CameraKnobs`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CameraSpec {
    pub no_read_rate: f64,
    pub misread_rate: f64,
    pub low_grade_rate: f64,
    pub duplicate_rate: f64,
    pub foreign_rate: f64,
    pub garbage_rate: f64,
    pub disconnect_after: Option<u64>,
    /// The camera repeats a unit's result line (double trigger).
    pub double_trigger_rate: f64,
    /// The camera repeats the n-th unit's result line once.
    pub double_trigger_at: Option<u64>,
    /// An extra result line with a code read good earlier (re-fed pack).
    pub refed_rate: f64,
    /// An extra result line with a valid code of another line's block.
    pub other_line_rate: f64,
    /// The symbology identifier the camera puts before every read, e.g.
    /// `"]d2"` (GS1 DataMatrix); default none.
    pub symbology_id: Option<String>,
    /// A unit's read comes as `]d1` (a plain Data Matrix: the printer lost
    /// GS1 mode for that pack), with this probability per unit.
    pub plain_symbol_rate: f64,
    /// ... and at exactly these units (the n-th reported, from 1).
    pub plain_symbol_at: Vec<u64>,
    /// Time from a unit's print to its result line (belt and decode).
    pub read_latency_ms: u64,
}

/// Faults the harness applies while the daemon runs. "Units" are units
/// decided (terminal outcomes) as seen by the harness: the most of the
/// upstream consumer's unique events and the retained status' counters.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeline {
    /// SIGKILL the daemon when this many units are decided, then restart it.
    pub kill9_at_units: Vec<u64>,
    /// Further kill points drawn from the seed, uniform in `1..units`.
    pub random_kills: u32,
    /// Cut the TCP link between daemon and broker, restore it `secs` later.
    pub broker_outage: Option<Outage>,
    /// Stop the daemon (SIGSTOP) at `at_units` and let it go on (SIGCONT)
    /// `secs` later: a starved or paused line controller (a VM paused, a
    /// CPU hog). The devices go on meanwhile.
    pub freeze: Option<Outage>,
    /// Issue 13 §2: at this many units decided, stop the daemon (SIGTERM),
    /// copy its ledger directory aside, restart.
    pub ledger_copy_at_units: Option<u64>,
    /// At this many units, stop the daemon, put the copy back in place of
    /// the ledger (the replaced one is kept aside for the checker), restart.
    pub ledger_restore_at_units: Option<u64>,
    /// At this many units, stop the daemon, delete its whole state directory
    /// (ledger, marker, fence; moved aside for the checker), restart.
    pub state_wipe_at_units: Option<u64>,
    /// Product changeover: the job (`[job]`) runs until `at_units` are
    /// decided; then the daemon is stopped and restarted with a job for
    /// another GTIN for the rest of `units`, the first product's blocks still
    /// buffered.
    pub changeover: Option<Changeover>,
    /// Issue 15: SIGKILL the daemon as soon as it logs the first block of
    /// its return of unused serials (a job's end with `return_at_job_end`),
    /// then restart it: the return must be finished, none sent.
    pub kill9_at_return: bool,
    /// Issue 14: SIGKILL once the case label printer has received its N-th
    /// label (from 1, over the whole scenario) and before it printed it
    /// (needs `aggregation.label_print_time_ms`), then restart. The label
    /// is printed after the kill (it was in the printer's buffer); the next
    /// start must void it, and it holds nothing.
    pub kill9_at_label_sent: Option<u64>,
    /// Issue 14: SIGKILL once the case label printer printed its N-th label
    /// and before the case scanner read it (needs
    /// `aggregation.scanner_read_latency_ms`; the read is lost with the
    /// link), then restart: the label is voided, never printed again.
    pub kill9_at_label_printed: Option<u64>,
}

/// A step on the daemon's durable state (see [`Timeline`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateStep {
    CopyLedger,
    RestoreLedger,
    WipeState,
}

impl Timeline {
    /// The state steps, by units point.
    pub fn state_steps(&self) -> Vec<(u64, StateStep)> {
        let mut v: Vec<(u64, StateStep)> = [
            (self.ledger_copy_at_units, StateStep::CopyLedger),
            (self.ledger_restore_at_units, StateStep::RestoreLedger),
            (self.state_wipe_at_units, StateStep::WipeState),
        ]
        .into_iter()
        .filter_map(|(p, s)| p.map(|p| (p, s)))
        .collect();
        v.sort_by_key(|(p, s)| (*p, *s as u8));
        v
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Changeover {
    pub at_units: u64,
    /// The second job's GTIN (14 digits).
    pub gtin: String,
    #[serde(default = "default_changeover_lot")]
    pub lot: String,
    /// How the second job starts: `restart` (default) restarts the daemon
    /// with the second job as its default job; `command` sends
    /// `cmd/job/start` to the running daemon once the first job has ended.
    #[serde(default)]
    pub by: ChangeoverBy,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChangeoverBy {
    #[default]
    Restart,
    Command,
}

fn default_changeover_lot() -> String {
    "HIL-LOT-2".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outage {
    pub at_units: u64,
    pub secs: f64,
}

/// A recorded session played back in place of the printer and camera
/// simulators (`serialine_sim::replay`). The daemon's bytes to each device
/// must equal the recording's, except where `allow` says.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplaySpec {
    /// The framed printer's recording; relative paths are from the scenario
    /// file's directory.
    pub printer: PathBuf,
    /// The camera's recording, on the same clock as the printer's.
    pub camera: PathBuf,
    /// `exact` (default) or `none`: the daemon faces the recorded replies
    /// but what it sends is not compared (a session from another line).
    #[serde(default)]
    pub compare: serialine_sim::replay::Compare,
    /// Byte ranges of what the daemon sends that may differ.
    #[serde(default)]
    pub allow: Vec<AllowDiffer>,
    /// Longest wait for the daemon's next expected byte.
    #[serde(default = "default_stall")]
    pub stall_secs: f64,
}

fn default_stall() -> f64 {
    15.0
}

/// `[[replay.allow]]`: bytes `from..from + len` of what the daemon sends to
/// `device` (`printer` or `camera`) may differ from the recording.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowDiffer {
    pub device: String,
    pub from: u64,
    pub len: u64,
    /// Why: shown nowhere, read by whoever edits the scenario.
    #[serde(default)]
    pub why: String,
}

/// Scenario-specific expectations on top of the invariants.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Expect {
    /// Every unit committed (clean equipment).
    pub all_committed: bool,
    /// At least this many units committed.
    pub min_committed: u64,
    /// At least this many duplicate-read alarms in the daemon's logs.
    pub min_duplicate_alarms: u64,
    /// At least this many foreign-code alarms in the daemon's logs.
    pub min_foreign_alarms: u64,
    /// At least this many rejected units.
    pub min_rejected: u64,
    /// The daemon's reject signals for the pack in front of the camera
    /// equal the extra packs and lines the camera simulator injected, per
    /// kind: `duplicate-read` = double triggers of a code + re-fed packs,
    /// `foreign-code` = other lines' packs. For scenarios injecting only
    /// these faults (and no kills).
    pub exact_reject_signals: bool,
    /// No unit whose own code the camera read good (and in grade) is
    /// rejected in the ledger.
    pub no_good_unit_rejected: bool,
    /// No `device-fault` alarm in the daemon's logs (clean equipment: the
    /// normal end of a job is not a fault).
    pub no_device_fault_alarms: bool,
    /// Device states the retained `status` must have shown, in this order:
    /// `"<device name prefix>:<state>"`, e.g. `["printer:faulted",
    /// "printer:ok"]`; each with a `since_ms` after the previous one's.
    pub device_states: Vec<String>,
    /// At least this many serials voided by the fence in the final ledger
    /// (issue 13 §2).
    pub min_fenced: u64,
    /// At least this many serials invalidated by the issuer in a fence
    /// handshake (issue 13 §2).
    pub min_upstream_invalidated: u64,
    /// Issue 16: at least this many serials settled into their compact
    /// form (the ledger's log of its checkpoints between jobs).
    pub min_settled_serials: u64,
    /// Issue 20: at most this many rejected units (derived from the
    /// injected faults).
    pub max_rejected: Option<u64>,
    /// Issue 20: at most this many units voided per kill, jam, link drop or
    /// mid-job stop; default: the printer buffer plus the camera window.
    pub max_voided_per_event: Option<u64>,
    /// Issue 20: at most this many upstream deliveries beyond the unique
    /// ids per kill, broker outage or state step (none without them);
    /// default: unbounded with them.
    pub max_redeliveries_per_event: Option<u64>,
    /// Every unit fault the camera injected on a unit's own read (a plain
    /// symbol: `]d1`) rejected that unit with the fault's reason and raised
    /// exactly one alarm of the fault's kind naming its serial, and no
    /// other (see `checker::UNIT_FAULTS`). For scenarios without kills.
    pub exact_unit_faults: bool,
    /// Issue 20: at most this many duplicate/foreign camera reports excused
    /// from the alarm check (near kills, or meeting their own unit).
    pub max_alarms_excused: Option<u64>,
    /// With `laser.unserved_ms`: at most this many connections the laser
    /// accepted and turned away in that period (the driver backs off; one
    /// retry every initial delay would be many more).
    pub max_unserved_connections: Option<u64>,
    /// Issue 15: at the end no serial is left buffered (all sent or
    /// returned), and at least one was returned.
    pub all_returned: bool,
    /// Issue 14: at least this many cases sealed (holding units) in the
    /// final ledger.
    pub min_sealed: u64,
    /// Issue 14: exactly this many cases sealed (partial ones included).
    pub sealed_cases: Option<u64>,
    /// Issue 14: exactly this many of them partial.
    pub partial_cases: Option<u64>,
    /// Issue 14: exactly this many pallets sealed (partial ones included).
    pub sealed_pallets: Option<u64>,
    /// Issue 14: exactly this many of them partial.
    pub partial_pallets: Option<u64>,
    /// Issue 14: exactly this many `aggregation-refused` alarms in the
    /// daemon's logs.
    pub aggregation_refused: Option<u64>,
    /// Issue 14: every committed unit is in a case, but those a packer
    /// fault took out of the line or put in a refused case.
    pub all_units_packed: bool,
    /// Issue 14: every sealed case is on a pallet (with a pallet level).
    pub all_cases_palletized: bool,
}

impl Scenario {
    /// Reads a scenario file; the name defaults to the file stem.
    pub fn load(path: &Path) -> Result<Scenario, HilError> {
        let text = std::fs::read_to_string(path).map_err(|source| HilError::Io {
            what: format!("reading scenario {}", path.display()),
            source,
        })?;
        let mut s: Scenario = toml::from_str(&text).map_err(|e| HilError::Scenario {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        if s.name.is_empty() {
            s.name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
        }
        if let Some(r) = &mut s.replay {
            let base = path.parent().unwrap_or(Path::new("."));
            r.printer = base.join(&r.printer);
            r.camera = base.join(&r.camera);
        }
        s.validate().map_err(|message| HilError::Scenario {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(s)
    }

    fn validate(&self) -> Result<(), String> {
        if self.units == 0 {
            return Err("units must be at least 1".into());
        }
        let rates = [
            ("printer.nak_rate", self.printer.nak_rate),
            ("camera.no_read_rate", self.camera.no_read_rate),
            ("camera.misread_rate", self.camera.misread_rate),
            ("camera.low_grade_rate", self.camera.low_grade_rate),
            ("camera.duplicate_rate", self.camera.duplicate_rate),
            ("camera.foreign_rate", self.camera.foreign_rate),
            ("camera.garbage_rate", self.camera.garbage_rate),
            (
                "camera.double_trigger_rate",
                self.camera.double_trigger_rate,
            ),
            ("camera.refed_rate", self.camera.refed_rate),
            ("camera.other_line_rate", self.camera.other_line_rate),
            ("camera.plain_symbol_rate", self.camera.plain_symbol_rate),
        ];
        for (k, r) in rates {
            if !(0.0..=1.0).contains(&r) {
                return Err(format!("{k} = {r}: expected a probability in 0..=1"));
            }
        }
        if let Some(id) = &self.camera.symbology_id {
            if serialine_core::code::Symbology::from_id(id).is_none() {
                return Err(format!(
                    "camera.symbology_id = {id:?}: not a symbology identifier Serialine knows (e.g. \"]d2\")"
                ));
            }
        }
        if self.line.printer != PrinterKind::Laser
            && (self.laser.unserved_ms > 0 || self.expect.max_unserved_connections.is_some())
        {
            return Err(
                "laser.unserved_ms, expect.max_unserved_connections: need line.printer = \"laser\""
                    .into(),
            );
        }
        if self.line.printer == PrinterKind::Laser && self.stop_when == StopWhen::PrinterJammed {
            return Err("stop_when = \"printer-jammed\" needs the framed printer".into());
        }
        if let Some(r) = &self.replay {
            if self.line.printer != PrinterKind::Framed {
                return Err("replay: the recorded printer must be the framed printer".into());
            }
            if !self.kill_points().is_empty() || self.stop_when != StopWhen::JobDone {
                return Err(
                    "replay: a recording is one uninterrupted session; no kills, stop_when = \"job-done\""
                        .into(),
                );
            }
            if !(r.stall_secs > 0.0 && r.stall_secs <= 600.0) {
                return Err("replay.stall_secs: expected 0 < secs <= 600".into());
            }
            if let Some(a) = r
                .allow
                .iter()
                .find(|a| !["printer", "camera"].contains(&a.device.as_str()))
            {
                return Err(format!(
                    "replay.allow: device {:?} is neither \"printer\" nor \"camera\"",
                    a.device
                ));
            }
            for p in [&r.printer, &r.camera] {
                if !p.is_file() {
                    return Err(format!("replay: recording {} not found", p.display()));
                }
            }
        }
        let t = &self.timeline;
        match (t.ledger_copy_at_units, t.ledger_restore_at_units) {
            (None, Some(_)) => {
                return Err(
                    "timeline.ledger_restore_at_units needs timeline.ledger_copy_at_units".into(),
                )
            }
            (Some(c), Some(r)) if c >= r => {
                return Err(
                    "timeline.ledger_copy_at_units must be below ledger_restore_at_units".into(),
                )
            }
            _ => {}
        }
        if let Some(c) = &self.timeline.changeover {
            if c.at_units == 0 || c.at_units >= self.units {
                return Err("timeline.changeover.at_units: expected 0 < at_units < units".into());
            }
            match serialine_core::Gtin::parse(&c.gtin) {
                Ok(g) if g.as_string() != self.job.gtin => {}
                Ok(_) => return Err("timeline.changeover.gtin: the same GTIN as [job]".into()),
                Err(e) => return Err(format!("timeline.changeover.gtin: {e}")),
            }
            if !self.kill_points().is_empty() || self.replay.is_some() {
                return Err("timeline.changeover: no kills or replay in the same scenario".into());
            }
        }
        if let Some(o) = &self.timeline.broker_outage {
            if !(o.secs > 0.0 && o.secs <= 600.0) {
                return Err("timeline.broker_outage.secs: expected 0 < secs <= 600".into());
            }
        }
        if let Some(f) = &self.timeline.freeze {
            if !(f.secs > 0.0 && f.secs <= 60.0) {
                return Err("timeline.freeze.secs: expected 0 < secs <= 60".into());
            }
        }
        self.validate_aggregation()?;
        self.validate_lines()
    }

    /// `[aggregation]` and what needs it. The packaging levels run with the
    /// one-line harness on the framed printer, without the steps that
    /// restart the daemon on another ledger or product (the checker reads
    /// one hierarchy in one ledger).
    fn validate_aggregation(&self) -> Result<(), String> {
        let t = &self.timeline;
        let e = &self.expect;
        let Some(a) = &self.aggregation else {
            let needs = [
                ("timeline.kill9_at_label_sent", t.kill9_at_label_sent.is_some()),
                (
                    "timeline.kill9_at_label_printed",
                    t.kill9_at_label_printed.is_some(),
                ),
                ("[rework]", self.rework.any()),
                (
                    "expect.min_sealed / sealed_* / partial_* / aggregation_refused / all_units_packed / all_cases_palletized",
                    e.min_sealed > 0
                        || e.sealed_cases.is_some()
                        || e.partial_cases.is_some()
                        || e.sealed_pallets.is_some()
                        || e.partial_pallets.is_some()
                        || e.aggregation_refused.is_some()
                        || e.all_units_packed
                        || e.all_cases_palletized,
                ),
            ];
            return match needs.iter().find(|(_, on)| *on) {
                Some((what, _)) => Err(format!("{what}: needs [aggregation]")),
                None => Ok(()),
            };
        };
        for (k, n) in [
            ("per_case", Some(a.per_case)),
            ("cases_per_pallet", a.cases_per_pallet),
        ] {
            if n.is_some_and(|n| !(1..=1000).contains(&n)) {
                return Err(format!("aggregation.{k}: expected 1..=1000"));
            }
        }
        let job =
            serialine_core::Gtin::parse(&self.job.gtin).map_err(|e| format!("job.gtin: {e}"))?;
        let case = serialine_core::Gtin::parse(&a.case_gtin)
            .map_err(|e| format!("aggregation.case_gtin: {e}"))?;
        let pallet = serialine_core::Gtin::parse(&a.pallet_gtin)
            .map_err(|e| format!("aggregation.pallet_gtin: {e}"))?;
        if case == job || (a.cases_per_pallet.is_some() && (pallet == job || pallet == case)) {
            return Err(
                "aggregation: the job's, the case's and the pallet's GTINs must differ".into(),
            );
        }
        if a.mode == AggregationMode::Count && a.packer_faults() {
            return Err(
                "aggregation: missing_at, foreign_at, already_aggregated_at, no_read_at are case packer faults; they need mode = \"scan\""
                    .into(),
            );
        }
        for (k, r) in [
            ("scanner_no_read_rate", a.scanner_no_read_rate),
            ("scanner_low_grade_rate", a.scanner_low_grade_rate),
        ] {
            if !(0.0..=1.0).contains(&r) {
                return Err(format!(
                    "aggregation.{k} = {r}: expected a probability in 0..=1"
                ));
            }
        }
        if a.flush_after_ms == 0 || a.flush_after_ms >= a.close_wait_ms {
            return Err(
                "aggregation.flush_after_ms: expected 0 < flush_after_ms < close_wait_ms (the last, partial case must be read before the level closes)"
                    .into(),
            );
        }
        if !(1..=600_000).contains(&a.label_deadline_ms) || a.close_wait_ms > 600_000 {
            return Err(
                "aggregation: label_deadline_ms in 1..=600000, close_wait_ms at most 600000".into(),
            );
        }
        // The window between the harness seeing the label and the device
        // acting on it is the harness's poll (25 ms) and the kill.
        if t.kill9_at_label_sent.is_some() && a.label_print_time_ms < 100 {
            return Err(
                "timeline.kill9_at_label_sent: needs aggregation.label_print_time_ms >= 100 (the kill lands before the label is printed)"
                    .into(),
            );
        }
        if t.kill9_at_label_printed.is_some() && a.scanner_read_latency_ms < 100 {
            return Err(
                "timeline.kill9_at_label_printed: needs aggregation.scanner_read_latency_ms >= 100 (the kill lands before the label is read)"
                    .into(),
            );
        }
        if [t.kill9_at_label_sent, t.kill9_at_label_printed].contains(&Some(0)) {
            return Err("timeline.kill9_at_label_*: labels count from 1".into());
        }
        if a.label_print_time_ms + a.scanner_read_latency_ms + 500 > a.label_deadline_ms {
            return Err(
                "aggregation.label_deadline_ms: leave at least 500 ms beyond label_print_time_ms + scanner_read_latency_ms"
                    .into(),
            );
        }
        if self.rework.swap > 0 && !a.packer_faults() {
            return Err(
                "rework.swap: the loose units it puts into cases come from a case the packer faulted; set aggregation.missing_at (or another case packer fault)"
                    .into(),
            );
        }
        if self.rework.repeat && self.rework.swap == 0 {
            return Err(
                "rework.repeat: needs rework.swap >= 1 (it repeats the first swap's moves)".into(),
            );
        }
        if self.rework.any()
            && (!self.kill_points().is_empty()
                || t.kill9_at_label_sent.is_some()
                || t.kill9_at_label_printed.is_some())
        {
            return Err(
                "[rework]: no kills in the same scenario (a restarted job is another job: its units may not go into the first job's cases)"
                    .into(),
            );
        }
        if (e.sealed_pallets.is_some() || e.partial_pallets.is_some() || e.all_cases_palletized)
            && a.cases_per_pallet.is_none()
        {
            return Err(
                "expect.sealed_pallets / partial_pallets / all_cases_palletized: need aggregation.cases_per_pallet"
                    .into(),
            );
        }
        let unsupported = [
            (
                "line.printer = \"laser\"",
                self.line.printer != PrinterKind::Framed,
            ),
            ("replay", self.replay.is_some()),
            (
                "stop_when = \"printer-jammed\"",
                self.stop_when != StopWhen::JobDone,
            ),
            ("timeline state steps", !t.state_steps().is_empty()),
            ("timeline.changeover", t.changeover.is_some()),
            ("[after_commit]", self.after_commit.any()),
        ];
        match unsupported.iter().find(|(_, on)| *on) {
            Some((what, _)) => Err(format!(
                "[aggregation]: {what} is not supported with packaging levels"
            )),
            None => Ok(()),
        }
    }

    /// `lines`: 1..=16. The multi-line harness covers what several lines
    /// share in one process (ledgers, committers, the uplink) under load and
    /// kills; the single-line faults stay with the single-line harness, so
    /// a multi-line scenario asking for them is refused, not half run.
    fn validate_lines(&self) -> Result<(), String> {
        if !(1..=16).contains(&self.lines) {
            return Err(format!("lines = {}: expected 1..=16", self.lines));
        }
        if self.lines == 1 {
            if self.units_step > 0 {
                return Err("units_step needs lines > 1".into());
            }
            return Ok(());
        }
        let t = &self.timeline;
        let a = &self.attack;
        let unsupported = [
            (
                "line.printer = \"laser\"",
                self.line.printer != PrinterKind::Framed,
            ),
            ("replay", self.replay.is_some()),
            (
                "stop_when = \"printer-jammed\"",
                self.stop_when != StopWhen::JobDone,
            ),
            ("printer.jam_after", self.printer.jam_after.is_some()),
            ("timeline.broker_outage", t.broker_outage.is_some()),
            ("timeline.freeze", t.freeze.is_some()),
            ("timeline state steps", !t.state_steps().is_empty()),
            ("timeline.changeover", t.changeover.is_some()),
            ("[aggregation]", self.aggregation.is_some()),
            ("camera.other_line_rate", self.camera.other_line_rate > 0.0),
            (
                "[attack]",
                a.retained_job_stop
                    || a.stale_job_stop_at_units.is_some()
                    || a.forged_acks.is_some(),
            ),
            (
                "expect.device_states",
                !self.expect.device_states.is_empty(),
            ),
            (
                "expect.min_fenced / min_upstream_invalidated",
                self.expect.min_fenced > 0 || self.expect.min_upstream_invalidated > 0,
            ),
        ];
        match unsupported.iter().find(|(_, on)| *on) {
            Some((what, _)) => Err(format!(
                "lines = {}: {what} is not supported with several lines (single-line harness only)",
                self.lines
            )),
            None => Ok(()),
        }
    }

    /// Every kill point, in order: the explicit ones plus `random_kills`
    /// drawn from the seed.
    pub fn kill_points(&self) -> Vec<u64> {
        let mut points = self.timeline.kill9_at_units.clone();
        let mut rng = serialine_sim::printer::SplitMix64::new(self.seed ^ 0x6b69_6c6c);
        for _ in 0..self.timeline.random_kills {
            points.push(1 + rng.next_u64() % self.units.saturating_sub(1).max(1));
        }
        points.sort_unstable();
        points
    }
}

/// `<workspace>/hil-tests/scenarios`.
pub fn scenarios_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios")
}

/// `<workspace>/config`.
pub fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config")
}
