//! The invariant checker: run after the daemon has stopped, over
//!
//! - the line's sled ledger (opened with the line secret),
//! - the printer simulator's byte recording (every frame the daemon sent),
//! - the camera simulator's log (what it reported for each unit),
//! - the upstream consumer's events,
//! - the issuer's record of the serials it issued to the line,
//! - the daemon's JSON logs (every alarm the pipeline raises is logged with
//!   its kind and serial, also while the broker is unreachable, so the logs
//!   are the alarm record; the MQTT alarm count is only reported),
//! - issue 14, with packaging levels: each level's label printer, label
//!   scanner and packer logs ([`HierarchyInput`]). Labels (serials of a
//!   level's GTIN) are not units: the unit rules leave them to
//!   [`Rule::Hierarchy`], which checks them against their own devices.
//!
//! Each violation names the scenario, the seed, the invariant and the serial.

use crate::scenario::{Expect, StopWhen};
use serde_json::Value;
use serialine_core::code::{self, Template};
use serialine_core::{AlarmKind, RejectReason, Serial, UnitState};
use serialine_devices::printer::{FrameDecoder, FramedProfile, Token};
use serialine_sim::aggregation::{CaseFault, CaseRead};
use serialine_sim::camera::{Reported, Verdict};
use serialine_sim::recording::{Direction, Recording};
use serialine_sim::upstream::LineEvents;
use serialine_store::{event_id, SerialEntry, Store};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;

/// Everything the checker reads.
pub struct CheckInput {
    pub scenario: String,
    pub seed: u64,
    pub line: String,
    pub store: Store,
    pub device: DeviceLog,
    pub camera_log: Vec<Reported>,
    /// `camera_log.len()` at each SIGKILL: reports just before a kill may
    /// never have been read by the killed daemon.
    pub camera_kill_marks: Vec<usize>,
    /// How many reports before a kill mark are excused from the alarm check
    /// (the units the daemon can hold in flight, plus slack).
    pub alarm_tolerance: usize,
    pub upstream: LineEvents,
    pub issued: HashSet<Serial>,
    /// Each daemon run's log (JSON lines).
    pub logs: Vec<String>,
    /// The last run stopped mid-job with no reconciling run after it:
    /// serials may be left Sent/Printed.
    pub mid_job: bool,
    pub units: u64,
    pub expect: Expect,
    pub stop_when: StopWhen,
    /// Ledgers a state step took away (issue 13 §2: replaced by a restored
    /// copy, or in a wiped state directory): the history the line lost. What
    /// they sent was printed; what they reported upstream holds.
    pub earlier: Vec<Store>,
    /// Issue 20: the faults the harness and the simulators recorded, which
    /// every reject and void must be explained by.
    pub events: RunEvents,
    /// Issue 14: the packaging levels' devices, when the line aggregates.
    pub hierarchy: Option<HierarchyInput>,
}

/// Issue 14: what the packaging levels' simulators recorded, for
/// [`Rule::Hierarchy`].
#[derive(Debug, Clone)]
pub struct HierarchyInput {
    /// The job's product: the children of the first level (cases).
    pub unit_gtin: serialine_core::Gtin,
    /// From cases up; each level's children are the level below's labels.
    pub levels: Vec<LevelLog>,
    /// Label codes in flight at the harness's label kills (received but not
    /// printed, or printed but not read): each must end voided, holding
    /// nothing, printed at most once.
    pub killed_labels: Vec<String>,
}

/// One packaging level's devices, as their simulators logged them.
#[derive(Debug, Clone)]
pub struct LevelLog {
    pub name: String,
    /// Its labels' product.
    pub gtin: serialine_core::Gtin,
    /// Children in a full parent.
    pub per_parent: u32,
    /// The level scans (a packer reads each parent) rather than counts.
    pub scans: bool,
    /// Codes of every label format the label printer received, in order.
    pub formats: Vec<String>,
    /// Codes of every label it printed, in order.
    pub printed: Vec<String>,
    /// What the label scanner reported.
    pub scanner: Vec<Reported>,
    /// The packer's reads (scan mode).
    pub packer: Option<Vec<CaseRead>>,
}

/// Issue 20: what the harness and the simulators recorded during the run:
/// the only causes a reject or a void may have.
#[derive(Debug, Clone, Default)]
pub struct RunEvents {
    /// Messages the marking device refused (printer NAKs, laser Modbus
    /// exceptions): one unit each at most.
    pub refusals: u64,
    /// Events that can void or fault every unit in flight: printer jams,
    /// printer or laser link drops, camera link drops.
    pub device_events: u64,
    /// The printer wrote line noise before its reports (`garbage_bytes`).
    pub printer_noise: bool,
    /// Camera link drops (a read lost with the link: a no-read).
    pub camera_drops: u64,
    /// The harness stopped the daemon in the middle of a job (a jam).
    pub mid_job_stops: u64,
    /// Broker outages.
    pub outages: u64,
    /// Units one event can leave in flight: the printer buffer plus the
    /// camera window.
    pub in_flight_bound: u64,
    /// The last run ended on a SIGTERM with exit status 0.
    pub clean_stop: bool,
    /// Unix milliseconds of each SIGKILL: a unit voided after kill k (and
    /// before kill k + 1) is charged to kill k.
    pub kill_times_ms: Vec<u64>,
    /// Issue 15: the after-commit moves the daemon accepted, in order.
    pub after_commit: Vec<(Serial, UnitState)>,
    /// Issue 14: the rework moves (`[rework]`) the daemon accepted, in
    /// order.
    pub rework: Vec<ReworkMove>,
}

/// Issue 14: a rework move on the packaging hierarchy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReworkKind {
    /// `serialine pack PARENT CHILD...`
    Pack,
    /// `serialine unpack PARENT CHILD...`
    Unpack,
    /// `serialine unpack PARENT --all`: emptied for good.
    Empty,
}

/// One rework move the daemon accepted: `children` packed into or taken
/// out of `parent` (for [`ReworkKind::Empty`], everything it held then).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReworkMove {
    pub parent: Serial,
    pub kind: ReworkKind,
    pub children: Vec<Serial>,
}

impl ReworkMove {
    /// The state its events carry upstream.
    pub fn event_state(&self) -> &'static str {
        match self.kind {
            ReworkKind::Pack => "packed",
            ReworkKind::Unpack | ReworkKind::Empty => "unpacked",
        }
    }

    /// How many events the ledger queues for it: one per
    /// [`PACK_EVENT_CHILDREN`] children; an emptied parent holding nothing
    /// still tells upstream, in one event. (Their ids carry the events'
    /// place in the ledger's history, so only the ledger knows them.)
    pub fn event_count(&self) -> usize {
        self.children.len().div_ceil(PACK_EVENT_CHILDREN).max(1)
    }
}

/// What `parent` held before the rework moves on it (`now`: what it holds
/// in the final ledger), undoing them last first, and what in the moves
/// does not fit the ledger (a unit packed by rework no longer in it, a
/// unit taken out still in it, with no later move to explain it).
fn before_rework(
    parent: &Serial,
    now: &[Serial],
    rework: &[ReworkMove],
) -> (Vec<Serial>, Vec<(Serial, String)>) {
    let mut set: Vec<Serial> = now.to_vec();
    let mut problems = Vec::new();
    for m in rework.iter().rev().filter(|m| m.parent == *parent) {
        for child in &m.children {
            let at = set.iter().position(|x| x == child);
            match (m.kind, at) {
                (ReworkKind::Pack, Some(i)) => {
                    set.remove(i);
                }
                (ReworkKind::Pack, None) => problems.push((
                    child.clone(),
                    format!("packed into {parent} by rework, but not in it after (no later move took it out)"),
                )),
                (ReworkKind::Unpack | ReworkKind::Empty, None) => set.push(child.clone()),
                (ReworkKind::Unpack | ReworkKind::Empty, Some(_)) => problems.push((
                    child.clone(),
                    format!("taken out of {parent} by rework, but in it after (no later move put it back)"),
                )),
            }
        }
    }
    set.sort();
    (set, problems)
}

/// The after-commit moves, by serial.
trait AfterCommitLog {
    fn last_by(&self, serial: &Serial) -> Option<UnitState>;
}

impl AfterCommitLog for Vec<(Serial, UnitState)> {
    fn last_by(&self, serial: &Serial) -> Option<UnitState> {
        self.iter()
            .rev()
            .find(|(s, _)| s == serial)
            .map(|(_, to)| *to)
    }
}

/// What the marking device received.
pub enum DeviceLog {
    /// The framed printer's byte recording, decoded with its profile.
    Framed {
        recording: PathBuf,
        profile: FramedProfile,
    },
    /// The codes a laser marker was triggered with, in order.
    Codes(Vec<String>),
}

/// Which rule broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// ARCHITECTURE.md invariant 1..=6.
    Invariant(u8),
    /// Stored counters differ from a recount.
    Counters,
    /// A scenario expectation (`[expect]`).
    Expectation,
    /// The harness itself (timeout, unexpected exit, bad exit code).
    Harness,
    /// A printed code's GTIN is not the GTIN its serial's block was sealed
    /// for (issue 13, section 3).
    Product,
    /// A replayed device session: the daemon sent other bytes than the
    /// recording, or stopped short of it.
    Replay,
    /// Issue 20: a reject, void, alarm or delivery no recorded event
    /// explains, or more of them than the events allow.
    Accounting,
    /// The ledger's files: sled wrote a value as a blob file, which its
    /// segment cleaner loses track of (`serialine-store` `MAX_VALUE_BYTES`).
    Ledger,
    /// Issue 15: a unit sampled or decommissioned that nobody asked for, or
    /// before upstream heard of its commit.
    AfterCommit,
    /// Issue 15: a serial returned upstream unused that reached the
    /// marking device, or a return upstream does not hold exactly once.
    Returned,
    /// Issue 14: the packaging hierarchy: a parent, child or label the
    /// ledger, the label printers, scanners, packers and upstream disagree
    /// on.
    Hierarchy,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Invariant(n) => write!(f, "invariant {n}"),
            Rule::Counters => f.write_str("counters"),
            Rule::Expectation => f.write_str("expectation"),
            Rule::Harness => f.write_str("harness"),
            Rule::Product => f.write_str("product"),
            Rule::Replay => f.write_str("replay"),
            Rule::Accounting => f.write_str("accounting"),
            Rule::Ledger => f.write_str("ledger files"),
            Rule::AfterCommit => f.write_str("after commit"),
            Rule::Returned => f.write_str("returned"),
            Rule::Hierarchy => f.write_str("hierarchy"),
        }
    }
}

/// One broken rule.
#[derive(Debug, Clone)]
pub struct Violation {
    pub scenario: String,
    pub seed: u64,
    pub rule: Rule,
    pub serial: Option<String>,
    pub message: String,
}

impl Violation {
    pub fn harness(scenario: &str, seed: u64, message: String) -> Violation {
        Violation {
            scenario: scenario.to_string(),
            seed,
            rule: Rule::Harness,
            serial: None,
            message,
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[scenario {} seed {}] {}",
            self.scenario, self.seed, self.rule
        )?;
        if let Some(s) = &self.serial {
            write!(f, " serial {s}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// What the checker found.
#[derive(Debug, Default)]
pub struct Report {
    pub violations: Vec<Violation>,
    /// Code frames the printer received.
    pub printer_frames: usize,
    pub duplicate_alarms: usize,
    pub foreign_alarms: usize,
    pub camera_reports: usize,
    pub upstream_unique: usize,
    /// Serials the ledger returned upstream unused (issue 15).
    pub returned: u64,
    /// Duplicate/foreign reports excused from the alarm check (near a kill).
    pub alarms_excused: usize,
    /// Reject signals for the pack in front of the camera the daemon
    /// logged, by kind (`duplicate-read`, `foreign-code`).
    pub reject_signals: HashMap<String, usize>,
    pub device_fault_alarms: usize,
    /// Printed codes per GTIN (14 digits).
    pub printed_per_gtin: std::collections::BTreeMap<String, usize>,
    /// Issue 20: the run's accounting, printed in the summary.
    pub accounting: Accounting,
    /// Issue 14: the hierarchy's figures, with packaging levels.
    pub hierarchy: Option<HierarchyFigures>,
}

/// Issue 14: what the packaging levels made, as the checker counted it.
#[derive(Debug, Default, Clone)]
pub struct HierarchyFigures {
    /// Per level, from cases up.
    pub levels: Vec<LevelFigures>,
    /// `aggregation-refused` alarms in the daemon's logs.
    pub refused: u64,
    /// Label scanner reads of a label not in flight (a label printed from
    /// the printer's buffer after a kill), each alarmed as a foreign code.
    pub stray_label_reads: u64,
    /// Committed units in no case.
    pub loose_units: u64,
}

#[derive(Debug, Default, Clone)]
pub struct LevelFigures {
    pub name: String,
    /// Parents holding children in the final ledger.
    pub sealed: u64,
    pub partial: u64,
    /// Labels the label printer printed.
    pub printed: u64,
    /// Label serials voided (a kill) and rejected (not verified).
    pub voided: u64,
    pub rejected: u64,
    /// Parents a rework move changed (`[rework]`), and of them those
    /// emptied for good (not counted in `sealed`).
    pub reworked: u64,
    pub emptied: u64,
}

impl fmt::Display for HierarchyFigures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for l in &self.levels {
            write!(
                f,
                "{}: {} sealed ({} partial), {} labels printed, {} voided, {} rejected; ",
                l.name, l.sealed, l.partial, l.printed, l.voided, l.rejected
            )?;
            if l.reworked > 0 {
                write!(
                    f,
                    "{} {}s reworked ({} emptied); ",
                    l.reworked, l.name, l.emptied
                )?;
            }
        }
        write!(
            f,
            "{} refused, {} stray label reads, {} loose units",
            self.refused, self.stray_label_reads, self.loose_units
        )
    }
}

/// Issue 20: rejects by cause and voids per event, as the checker counted.
#[derive(Debug, Default, Clone)]
pub struct Accounting {
    /// Rejected units by `RejectReason` name.
    pub rejects: std::collections::BTreeMap<String, u64>,
    /// Units voided (not by the fence).
    pub voided: u64,
    /// Events that may void units (kills, jams, link drops, mid-job stops).
    pub void_events: u64,
    /// Serials voided by the fence.
    pub fenced: u64,
    /// Upstream deliveries beyond the unique ids.
    pub redeliveries: u64,
    /// Units voided after each kill (before the next), when the harness
    /// recorded the kills' times.
    pub voided_per_kill: Vec<u64>,
    /// Per unit fault kind ([`UNIT_FAULTS`], by alarm kind) the camera
    /// injected at least once: what was injected and what the daemon did.
    pub unit_faults: std::collections::BTreeMap<&'static str, UnitFaultCount>,
}

/// A fault the camera injects on a unit's own read that must reject that
/// unit with `reason` and raise one alarm of kind `alarm` naming its serial.
/// `Expect::exact_unit_faults` compares, per kind, what was injected (the
/// camera log's verdicts) with the ledger's rejects and the logged alarms.
#[derive(Debug, Clone, Copy)]
pub struct UnitFault {
    pub verdict: Verdict,
    pub alarm: AlarmKind,
    pub reason: RejectReason,
}

/// Every unit fault kind the checker accounts for exactly.
pub const UNIT_FAULTS: &[UnitFault] = &[
    // A GS1 code read from a plain symbol (`]d1`: no FNC1): issue 19.
    UnitFault {
        verdict: Verdict::PlainSymbol,
        alarm: AlarmKind::NotGs1Symbol,
        reason: RejectReason::Mismatch,
    },
];

/// One [`UnitFault`] kind's count in a run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UnitFaultCount {
    /// Units whose own read the camera faulted so.
    pub injected: u64,
    /// Of those, units the ledger holds rejected with the fault's reason.
    pub rejected: u64,
    /// Alarms of the fault's kind in the daemon's logs.
    pub alarms: u64,
}

impl fmt::Display for Accounting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("rejects by cause {")?;
        for (i, (k, v)) in self.rejects.iter().enumerate() {
            write!(f, "{}{k}: {v}", if i > 0 { ", " } else { "" })?;
        }
        write!(
            f,
            "}}, {} voided over {} event(s)",
            self.voided, self.void_events
        )?;
        if self.void_events > 0 {
            write!(
                f,
                " ({:.1} per event)",
                self.voided as f64 / self.void_events as f64
            )?;
        }
        write!(
            f,
            ", {} fenced, {} upstream redeliveries",
            self.fenced, self.redeliveries
        )?;
        if !self.voided_per_kill.is_empty() {
            write!(f, ", voided per kill {:?}", self.voided_per_kill)?;
        }
        for (kind, n) in &self.unit_faults {
            write!(
                f,
                ", {kind}: {} injected, {} rejected, {} alarm(s)",
                n.injected, n.rejected, n.alarms
            )?;
        }
        Ok(())
    }
}

struct Checker<'a> {
    input: &'a CheckInput,
    report: Report,
    /// Issue 14: the ledger's label serials (of a level's GTIN), by level
    /// index; empty without packaging levels.
    labels: HashMap<Serial, usize>,
}

impl Checker<'_> {
    fn violate(&mut self, rule: Rule, serial: Option<&str>, message: impl Into<String>) {
        self.report.violations.push(Violation {
            scenario: self.input.scenario.clone(),
            seed: self.input.seed,
            rule,
            serial: serial.map(str::to_string),
            message: message.into(),
        });
    }
}

fn serial_of(content: &str) -> Option<Serial> {
    code::parse(&Template::Gs1DataMatrix, content)
        .ok()
        .map(|d| d.serial)
}

/// Codes in the frames the printer received, in order.
fn printer_codes(c: &mut Checker<'_>) -> Vec<String> {
    let (recording, profile) = match &c.input.device {
        DeviceLog::Codes(codes) => return codes.clone(),
        DeviceLog::Framed { recording, profile } => (recording, profile),
    };
    let compiled = match profile.compile() {
        Ok(p) => p,
        Err(e) => {
            c.violate(Rule::Harness, None, format!("printer profile: {e}"));
            return Vec::new();
        }
    };
    let rec = match Recording::load(recording) {
        Ok(r) => r,
        Err(e) => {
            c.violate(Rule::Harness, None, format!("printer recording: {e}"));
            return Vec::new();
        }
    };
    let received = rec.bytes(Direction::Rx);
    // Issue 20: the printer side read independently, from the profile's
    // specification (`printer_wire`): the daemon sends nothing but
    // well-formed message frames, so any other byte is a violation. (The
    // printer's own noise is on the other side, `Direction::Tx`.)
    let spec = match crate::printer_wire::WireSpec::from_profile(profile) {
        Ok(s) => s,
        Err(e) => {
            c.violate(Rule::Harness, None, format!("printer profile: {e}"));
            return Vec::new();
        }
    };
    let wire = crate::printer_wire::read(&spec, &received);
    for fault in wire.faults.iter().take(20) {
        c.violate(
            Rule::Invariant(1),
            None,
            format!("the printer received a frame the profile does not allow: {fault}"),
        );
    }
    if wire.faults.len() > 20 {
        c.violate(
            Rule::Invariant(1),
            None,
            format!(
                "{} malformed stretches in all on the printer's side",
                wire.faults.len()
            ),
        );
    }
    let codes: Vec<String> = wire.frames.into_iter().map(|f| f.code).collect();
    // The printer simulator reads with the daemon's own decoder: if it saw
    // other codes than the specification gives, what it printed (and the
    // camera read) is not what the daemon sent.
    let mut dec = FrameDecoder::new(compiled.framing);
    let mut shared = Vec::new();
    for b in received {
        if let Some(Ok(Token::Frame(payload))) = dec.feed(b) {
            if let Some(code) = compiled
                .message
                .matches(&payload)
                .and_then(|m| m.code)
                .map(|c| String::from_utf8_lossy(c).into_owned())
            {
                shared.push(code);
            }
        }
    }
    if shared != codes {
        let at = shared
            .iter()
            .zip(&codes)
            .position(|(a, b)| a != b)
            .unwrap_or(shared.len().min(codes.len()));
        c.violate(
            Rule::Invariant(1),
            None,
            format!(
                "the daemon's frame decoder reads {} code(s) from the printer's side, the \
                 specification {}; first difference at code {at}: {:?} vs {:?}",
                shared.len(),
                codes.len(),
                shared.get(at),
                codes.get(at)
            ),
        );
    }
    // What the symbols hold: with an FNC1 escape in the message, not the
    // message's text (the printer makes each escape an FNC1).
    codes
        .into_iter()
        .map(|code| serialine_sim::printer::symbol_content(profile, code))
        .collect()
}

/// Every JSON event of the daemon's logs: its target and its fields (the
/// event itself where it has no `fields` object). Lines that are not JSON
/// are skipped.
fn log_events(logs: &[String]) -> impl Iterator<Item = (Option<String>, Value)> + '_ {
    logs.iter()
        .flat_map(|log| log.lines())
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .map(|mut v| {
            let target = v.get("target").and_then(Value::as_str).map(str::to_string);
            let fields = match v.get_mut("fields") {
                Some(f) => f.take(),
                None => v,
            };
            (target, fields)
        })
}

/// (kind, serial) of every alarm the pipeline logged.
fn logged_alarms(logs: &[String]) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    for (target, fields) in log_events(logs) {
        // Issue 20: the uplink's operator task echoes every alarm it
        // publishes ("alarm: ..."); one alarm is counted once.
        let target = target.as_deref();
        if target == Some("serialine_uplink::operator") {
            continue;
        }
        let Some(kind) = fields.get("kind").and_then(Value::as_str) else {
            continue;
        };
        // Issue 14: a label scanner's read of a label not in flight is
        // not a unit's foreign code ([`stray_label_reads`]).
        if target == Some(AGGREGATION_TARGET) && kind == "foreign-code" {
            continue;
        }
        // `serial = ?Option<String>`: `Some("X")` or `None`.
        let serial = fields.get("serial").and_then(Value::as_str).and_then(|s| {
            s.strip_prefix("Some(\"")
                .and_then(|s| s.strip_suffix("\")"))
                .map(str::to_string)
        });
        out.push((kind.to_string(), serial));
    }
    out
}

/// Where the line's packaging levels log (issue 14).
const AGGREGATION_TARGET: &str = "serialine_line::aggregation";

/// Issue 14: the label scanners' reads of a label not in flight (a label
/// printed after a kill from the printer's buffer), which the levels alarm
/// as foreign codes: the serial each names. The level logs the alarm
/// without a `serial` field, so it is taken from the message ("… label
/// scanner read {serial} of GTIN …"); `None` if the message says otherwise.
fn stray_label_reads(logs: &[String]) -> Vec<Option<String>> {
    log_events(logs)
        .filter(|(target, fields)| {
            target.as_deref() == Some(AGGREGATION_TARGET)
                && fields.get("kind").and_then(Value::as_str) == Some("foreign-code")
        })
        .map(|(_, fields)| {
            let message = fields.get("message").and_then(Value::as_str).unwrap_or("");
            message
                .split_once("label scanner read ")
                .and_then(|(_, rest)| rest.split_once(" of GTIN "))
                .map(|(serial, _)| serial.to_string())
        })
        .collect()
}

/// Where the ledger's committer logs a checkpoint's settling (issue 16).
const SETTLE_TARGET: &str = "serialine_store::committer";

/// Issue 16: the serials the ledger settled into their compact form, as
/// its checkpoints logged them (`serials` of each "settled …" line).
fn settled_serials(logs: &[String]) -> u64 {
    log_events(logs)
        .filter(|(target, fields)| {
            target.as_deref() == Some(SETTLE_TARGET)
                && fields
                    .get("message")
                    .and_then(Value::as_str)
                    .is_some_and(|m| m.starts_with("settled "))
        })
        .map(|(_, fields)| fields.get("serials").and_then(Value::as_u64).unwrap_or(0))
        .sum()
}

/// The kind of every reject signal the pipeline logged (`reject_signal`
/// field: one log event per pack the daemon asked to reject).
fn logged_reject_signals(logs: &[String]) -> Vec<String> {
    log_events(logs)
        .filter_map(|(_, fields)| {
            fields
                .get("reject_signal")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .collect()
}

/// Runs every check.
pub fn check(input: &CheckInput) -> Report {
    let mut c = Checker {
        input,
        report: Report::default(),
        labels: HashMap::new(),
    };
    let store = &input.store;

    // Invariant 1 (and 3): each serial reaches the printer at most once, and
    // only after its Sent is durable.
    let codes = printer_codes(&mut c);
    c.report.printer_frames = codes.len();
    let mut sent_count: HashMap<Serial, usize> = HashMap::new();
    for code in &codes {
        match serial_of(code) {
            Some(s) => *sent_count.entry(s).or_default() += 1,
            None => c.violate(
                Rule::Invariant(1),
                None,
                format!("the printer received a code that does not parse: {code:?}"),
            ),
        }
    }
    let mut sent_sorted: Vec<(&Serial, &usize)> = sent_count.iter().collect();
    sent_sorted.sort();
    for (serial, n) in sent_sorted {
        if *n > 1 {
            c.violate(
                Rule::Invariant(1),
                Some(serial.as_str()),
                format!("sent to the printer {n} times"),
            );
        }
        let in_earlier = input.earlier.iter().any(
            |e| matches!(e.entry(serial), Ok(SerialEntry::Recorded(r)) if r.state.has_left_pool()),
        );
        match store.entry(serial) {
            Ok(SerialEntry::Recorded(r)) if r.state.has_left_pool() => {}
            _ if in_earlier => {}
            other => c.violate(
                Rule::Invariant(1),
                Some(serial.as_str()),
                format!("on the printer but the ledger has no durable Sent for it: {other:?}"),
            ),
        }
        if !input.issued.contains(serial) {
            c.violate(
                Rule::Invariant(1),
                Some(serial.as_str()),
                "on the printer but never issued to this line",
            );
        }
    }

    // Every record in the ledger.
    let records = match store.records_since(0, |_| true) {
        Ok(r) => r,
        Err(e) => {
            c.violate(Rule::Harness, None, format!("reading the ledger: {e}"));
            Vec::new()
        }
    };
    c.labels = label_serials(&mut c, &records);
    // A unit's own read, and (issue 13) a later read of its code shown on
    // another trigger (a duplicate, a repeat, a re-fed pack) while its own
    // read decided nothing: that read names the unit, so it may commit it.
    let mut own_verdict: HashMap<&str, Verdict> = HashMap::new();
    for r in &input.camera_log {
        if !matches!(
            r.verdict,
            Verdict::DoubleTrigger | Verdict::Refed | Verdict::OtherLine
        ) {
            own_verdict.entry(r.printed.as_str()).or_insert(r.verdict);
        }
    }
    let good_reads: HashSet<Serial> = input
        .camera_log
        .iter()
        .filter(|r| match r.verdict {
            Verdict::Good => true,
            Verdict::Duplicate | Verdict::DoubleTrigger | Verdict::Refed => r
                .content
                .as_deref()
                .and_then(|c| own_verdict.get(c))
                .is_some_and(|v| !matches!(v, Verdict::Good | Verdict::LowGrade)),
            _ => false,
        })
        .filter_map(|r| r.content.as_deref().and_then(serial_of))
        .collect();
    let mut reportable = 0usize;
    let mut expected_ids: HashMap<String, (Serial, &'static str)> = HashMap::new();
    for (serial, rec) in &records {
        let s = serial.as_str();
        if !input.issued.contains(serial) {
            c.violate(
                Rule::Invariant(4),
                Some(s),
                format!(
                    "the ledger holds a record ({}) for a serial never issued to the line",
                    rec.state
                ),
            );
        }
        if rec.state.is_after_commit()
            && input.events.after_commit.last_by(serial) != Some(rec.state)
        {
            c.violate(
                Rule::AfterCommit,
                Some(s),
                format!(
                    "{} in the ledger, but that is not what was last asked of it",
                    rec.state
                ),
            );
        }
        match rec.state {
            // A label is printed by its level's label printer and read by
            // its scanner: the hierarchy rule checks it there.
            UnitState::Committed
            | UnitState::Synced
            | UnitState::Sampled(_)
            | UnitState::Decommissioned(_)
                if c.labels.contains_key(serial) => {}
            UnitState::Committed
            | UnitState::Synced
            | UnitState::Sampled(_)
            | UnitState::Decommissioned(_) => {
                // Invariant 2: committed means printed and read back.
                if !sent_count.contains_key(serial) {
                    c.violate(
                        Rule::Invariant(2),
                        Some(s),
                        "committed but never sent to the printer",
                    );
                }
                if !good_reads.contains(serial) {
                    c.violate(
                        Rule::Invariant(2),
                        Some(s),
                        "committed but the camera never reported a good read of it",
                    );
                }
            }
            UnitState::Rejected(_) | UnitState::Voided => {}
            // Given back upstream unused: it must never have reached the
            // printer, in this run or any before.
            UnitState::Returned => {
                if sent_count.contains_key(serial) {
                    c.violate(
                        Rule::Returned,
                        Some(s),
                        "returned upstream as unused, but it was sent to the printer",
                    );
                }
            }
            UnitState::Sent | UnitState::Printed if input.mid_job => {}
            other => c.violate(
                Rule::Invariant(4),
                Some(s),
                format!("left in state {other} after the run ended"),
            ),
        }
        // A return is reported per block range, not per serial: below.
        if (rec.state.is_reportable() || rec.state == UnitState::Synced)
            && rec.state != UnitState::Returned
        {
            reportable += 1;
            let as_event = if rec.state == UnitState::Synced || rec.state.is_after_commit() {
                UnitState::Committed
            } else {
                rec.state
            };
            let id = hex::encode(event_id(&input.line, serial, as_event));
            expected_ids.insert(id, (serial.clone(), as_event.name()));
        }
    }
    // Issue 15: each accepted after-commit move is an outcome upstream
    // holds once, heard after the unit's commit.
    for (serial, to) in &input.events.after_commit {
        let id = hex::encode(event_id(&input.line, serial, *to));
        if expected_ids
            .insert(id.clone(), (serial.clone(), to.name()))
            .is_none()
        {
            reportable += 1;
        }
        let committed = hex::encode(event_id(&input.line, serial, UnitState::Committed));
        let at = |id: &str| input.upstream.order.iter().position(|x| x == id);
        match (at(&committed), at(&id)) {
            (Some(c_at), Some(a_at)) if c_at < a_at => {}
            (_, None) => {} // reported missing below
            _ => c.violate(
                Rule::AfterCommit,
                Some(serial.as_str()),
                format!("upstream heard {to} before the unit's commit"),
            ),
        }
    }
    // Issue 14: every pack is an event upstream holds once.
    reportable += expect_pack_events(&mut c, &mut expected_ids);
    // Issue 13 §2: the lost histories' outcomes are expected upstream too,
    // and a serial the fence voided may also hold the lost history's outcome.
    let mut fenced: HashSet<Serial> = records
        .iter()
        .filter(|(_, r)| r.fenced)
        .map(|(s, _)| s.clone())
        .collect();
    let mut decided_all: HashSet<Serial> = HashSet::new();
    for (serial, rec) in &records {
        if (rec.state.is_terminal() || rec.state == UnitState::Committed) && !rec.fenced {
            decided_all.insert(serial.clone());
        }
    }
    for e in &input.earlier {
        let earlier_records = match e.records_since(0, |_| true) {
            Ok(r) => r,
            Err(err) => {
                c.violate(
                    Rule::Harness,
                    None,
                    format!("reading a set-aside ledger: {err}"),
                );
                Vec::new()
            }
        };
        for (serial, rec) in earlier_records {
            if rec.fenced {
                fenced.insert(serial.clone());
            } else if rec.state.is_terminal() || rec.state == UnitState::Committed {
                decided_all.insert(serial.clone());
            }
            if matches!(rec.state, UnitState::Committed | UnitState::Synced)
                && !sent_count.contains_key(&serial)
            {
                c.violate(
                    Rule::Invariant(2),
                    Some(serial.as_str()),
                    "committed in a set-aside ledger but never sent to the printer",
                );
            }
            if (rec.state.is_reportable() || rec.state == UnitState::Synced)
                && rec.state != UnitState::Returned
            {
                let as_event = if rec.state == UnitState::Synced {
                    UnitState::Committed
                } else {
                    rec.state
                };
                let id = hex::encode(event_id(&input.line, &serial, as_event));
                if let std::collections::hash_map::Entry::Vacant(v) = expected_ids.entry(id) {
                    reportable += 1;
                    v.insert((serial, as_event.name()));
                }
            }
        }
    }
    // Issue 15: every return upstream holds names its first serial's id
    // and only serials the ledger returned; every returned serial is in
    // exactly one of them.
    let returned: HashSet<&Serial> = records
        .iter()
        .filter(|(_, r)| r.state == UnitState::Returned)
        .map(|(s, _)| s)
        .collect();
    let mut named: HashMap<String, usize> = HashMap::new();
    for (id, serials) in &input.upstream.returns {
        let Some(first) = serials.first().and_then(|s| Serial::new(s.as_str()).ok()) else {
            c.violate(
                Rule::Returned,
                None,
                format!("return event {id} names no serial"),
            );
            continue;
        };
        if *id != hex::encode(event_id(&input.line, &first, UnitState::Returned)) {
            c.violate(
                Rule::Returned,
                Some(first.as_str()),
                format!("return event {id} is not its first serial's id"),
            );
        }
        for s in serials {
            *named.entry(s.clone()).or_default() += 1;
            if !Serial::new(s.as_str()).is_ok_and(|x| returned.contains(&x)) {
                c.violate(
                    Rule::Returned,
                    Some(s),
                    "upstream was told it is returned; the ledger has no such return",
                );
            }
        }
        if expected_ids
            .insert(id.clone(), (first, UnitState::Returned.name()))
            .is_none()
        {
            reportable += 1;
        }
    }
    for s in &returned {
        match named.get(s.as_str()) {
            Some(1) => {}
            Some(n) => c.violate(
                Rule::Returned,
                Some(s.as_str()),
                format!("named by {n} return events upstream"),
            ),
            None if input.mid_job => {}
            None => c.violate(
                Rule::Returned,
                Some(s.as_str()),
                "returned in the ledger, but no return upstream names it",
            ),
        }
    }
    c.report.returned = returned.len() as u64;

    // Invariant 5: upstream holds each outcome exactly once, by id.
    let up = &input.upstream;
    c.report.upstream_unique = up.unique();
    if up.conflicts != 0 {
        c.violate(
            Rule::Invariant(5),
            None,
            format!(
                "upstream saw {} id(s) with conflicting content",
                up.conflicts
            ),
        );
    }
    if up.malformed != 0 {
        c.violate(
            Rule::Invariant(5),
            None,
            format!("upstream got {} malformed batch(es)", up.malformed),
        );
    }
    if up.unique() != reportable {
        c.violate(
            Rule::Invariant(5),
            None,
            format!(
                "upstream holds {} unique event(s), the ledger {} terminal outcome(s)",
                up.unique(),
                reportable
            ),
        );
    }
    let mut missing: Vec<(&String, &(Serial, &str))> = expected_ids
        .iter()
        .filter(|(id, _)| !up.events.contains_key(*id))
        .collect();
    missing.sort_by(|a, b| a.1 .0.cmp(&b.1 .0));
    for (id, (serial, state)) in missing.into_iter().take(20) {
        c.violate(
            Rule::Invariant(5),
            Some(serial.as_str()),
            format!(
                "outcome {state} (event {}) never reached upstream",
                &id[..16]
            ),
        );
    }
    let mut per_serial: HashMap<&str, usize> = HashMap::new();
    for (id, (serial, state)) in &up.events {
        // A parent's packs are events beside its label's outcome (issue 14).
        if !matches!(state.as_str(), "packed" | "unpacked") {
            *per_serial.entry(serial.as_str()).or_default() += 1;
        }
        match expected_ids.get(id) {
            Some((s, st)) if s.as_str() == serial && st == state => {}
            Some((s, st)) => c.violate(
                Rule::Invariant(5),
                Some(serial),
                format!(
                    "upstream event {} says {serial} {state}, the ledger {s} {st}",
                    &id[..16]
                ),
            ),
            None => c.violate(
                Rule::Invariant(5),
                Some(serial),
                format!(
                    "upstream holds event {} ({state}) the ledger has no such outcome for",
                    &id[..16]
                ),
            ),
        }
    }
    for (serial, n) in per_serial {
        let lost_history = n == 2 && Serial::new(serial).is_ok_and(|s| fenced.contains(&s));
        // Issue 15: a unit's after-commit outcomes follow its commit.
        let n = n.saturating_sub(
            input
                .events
                .after_commit
                .iter()
                .filter(|(s, _)| s.as_str() == serial)
                .count(),
        );
        if n > 1 && !lost_history {
            c.violate(
                Rule::Invariant(4),
                Some(serial),
                format!("upstream holds {n} different outcomes for one serial"),
            );
        }
    }

    // Invariant 6: every duplicate or foreign code the camera showed raised
    // an alarm (logged by the daemon).
    let alarms = logged_alarms(&input.logs);
    let mut alarmed: HashMap<String, usize> = HashMap::new();
    for (kind, serial) in &alarms {
        match kind.as_str() {
            "device-fault" => {
                c.report.device_fault_alarms += 1;
                continue;
            }
            "duplicate-read" => c.report.duplicate_alarms += 1,
            "foreign-code" => c.report.foreign_alarms += 1,
            _ => continue,
        }
        if let Some(s) = serial {
            *alarmed.entry(s.clone()).or_default() += 1;
        }
    }
    // A duplicate of a code whose own read did not decide its unit (it was
    // a no-read, misread, ...) may meet that unit still in flight: then it
    // is that unit's read, not a duplicate.
    let own_read = own_reads(&input.camera_log);
    let mut wanted: HashMap<String, (usize, Verdict)> = HashMap::new();
    for (i, r) in input.camera_log.iter().enumerate() {
        let shown = match r.verdict {
            Verdict::Duplicate | Verdict::Foreign | Verdict::Refed | Verdict::OtherLine => true,
            // A repeated line is a duplicate when it repeats a code.
            Verdict::DoubleTrigger => r.content.as_deref().and_then(serial_of).is_some(),
            _ => false,
        };
        if !shown {
            continue;
        }
        c.report.camera_reports += 1;
        let excused = excused_report(input, &own_read, i, r);
        if excused {
            c.report.alarms_excused += 1;
            continue;
        }
        let Some(serial) = r.content.as_deref().and_then(serial_of) else {
            c.violate(
                Rule::Harness,
                None,
                format!("camera report {i} content does not parse: {:?}", r.content),
            );
            continue;
        };
        let e = wanted
            .entry(serial.as_str().to_string())
            .or_insert((0, r.verdict));
        e.0 += 1;
    }
    let mut wanted: Vec<_> = wanted.into_iter().collect();
    wanted.sort_by(|a, b| a.0.cmp(&b.0));
    for (serial, (n, verdict)) in wanted {
        let got = alarmed.get(&serial).copied().unwrap_or(0);
        if got < n {
            c.violate(
                Rule::Invariant(6),
                Some(&serial),
                format!("the camera showed this {verdict:?} code {n} time(s); the daemon logged {got} alarm(s) for it"),
            );
        }
    }

    // Product binding: every printed code carries the GTIN its serial's
    // block was sealed for (the block reopened from the ledger).
    check_products(&mut c, &codes);

    // Counters: stored == recount.
    match store.recount() {
        Ok(r) if r == store.counts() => {}
        Ok(r) => c.violate(
            Rule::Counters,
            None,
            format!(
                "stored counters {:?} differ from a recount {r:?}",
                store.counts()
            ),
        ),
        Err(e) => c.violate(Rule::Counters, None, format!("recount failed: {e}")),
    }

    // The ledger never has sled write a value as a file of its own: sled
    // 0.34's segment cleaner fails on such files, its flush thread exits and
    // the committer's next flush hangs.
    let blobs = store.path().join("blobs");
    if let Ok(entries) = std::fs::read_dir(&blobs) {
        let files: Vec<String> = entries
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        if !files.is_empty() {
            c.violate(
                Rule::Ledger,
                None,
                format!(
                    "{} sled blob file(s) in {}: {:?}",
                    files.len(),
                    blobs.display(),
                    &files[..files.len().min(5)]
                ),
            );
        }
    }

    // The job and the scenario's expectations.
    let counts = store.counts();
    // Issue 14: labels are not units.
    let labels = LabelCounts::of(&c, &records);
    // Sampled and decommissioned units were committed first (issue 15).
    let committed = counts.committed + counts.synced + counts.sampled + counts.decommissioned
        - labels.committed;
    let decided = if input.earlier.is_empty() {
        // The fence's voids are not units (issue 13 §2).
        committed + counts.rejected + counts.voided
            - counts.fenced
            - labels.rejected
            - labels.voided
    } else {
        decided_all.len() as u64
    };
    if input.stop_when == StopWhen::JobDone && decided < input.units {
        c.violate(
            Rule::Expectation,
            None,
            format!("job incomplete: {decided} of {} units decided", input.units),
        );
    }
    let e = &input.expect;
    if e.all_committed && (committed != input.units || decided != input.units) {
        c.violate(
            Rule::Expectation,
            None,
            format!(
                "expected all {} units committed: {committed} committed, {} rejected, {} voided",
                input.units,
                counts.rejected - labels.rejected,
                counts.voided - labels.voided
            ),
        );
    }
    let mins = [
        ("committed units", committed, e.min_committed),
        (
            "rejected units",
            counts.rejected - labels.rejected,
            e.min_rejected,
        ),
        (
            "duplicate-read alarms",
            c.report.duplicate_alarms as u64,
            e.min_duplicate_alarms,
        ),
        (
            "foreign-code alarms",
            c.report.foreign_alarms as u64,
            e.min_foreign_alarms,
        ),
        (
            "serials voided by the fence",
            records.iter().filter(|(_, r)| r.fenced).count() as u64,
            e.min_fenced,
        ),
        (
            "serials returned upstream",
            counts.returned,
            u64::from(e.all_returned),
        ),
        (
            "serials settled into their compact form",
            settled_serials(&input.logs),
            e.min_settled_serials,
        ),
    ];
    if e.all_returned && counts.available() > 0 {
        c.violate(
            Rule::Expectation,
            None,
            format!(
                "{} serials still buffered after the job's end; all were to be returned",
                counts.available()
            ),
        );
    }
    for (what, got, min) in mins {
        if got < min {
            c.violate(
                Rule::Expectation,
                None,
                format!("expected at least {min} {what}, got {got}"),
            );
        }
    }
    check_camera_extras(&mut c, &records);
    check_accounting(&mut c, &records);
    check_unit_faults(&mut c, &records);
    check_hierarchy(&mut c, &records);
    c.report
}

/// Per [`UNIT_FAULTS`] kind: an alarm of the kind naming a serial whose own
/// read was not so faulted is false (always checked). With
/// `exact_unit_faults`: every injected unit is rejected with the kind's
/// reason and named by exactly one alarm of the kind, and the kind's
/// alarms are exactly the injected count (none without a serial).
fn check_unit_faults(c: &mut Checker<'_>, records: &[(Serial, serialine_store::SerialRecord)]) {
    let input = c.input;
    let exact = input.expect.exact_unit_faults;
    // A unit's own read: the first report of its printed code that is not
    // an extra line (as in the accounting).
    let mut own: HashMap<Serial, Verdict> = HashMap::new();
    for r in &input.camera_log {
        if matches!(
            r.verdict,
            Verdict::DoubleTrigger | Verdict::Refed | Verdict::OtherLine
        ) {
            continue;
        }
        if let Some(s) = serial_of(&r.printed) {
            own.entry(s).or_insert(r.verdict);
        }
    }
    let state: HashMap<&Serial, UnitState> = records.iter().map(|(s, r)| (s, r.state)).collect();
    let alarms = logged_alarms(&input.logs);
    for fault in UNIT_FAULTS {
        let kind = fault.alarm.as_str();
        let mut injected: Vec<&Serial> = own
            .iter()
            .filter(|(_, v)| **v == fault.verdict)
            .map(|(s, _)| s)
            .collect();
        injected.sort();
        let mut named: HashMap<&str, u64> = HashMap::new();
        let mut count = UnitFaultCount::default();
        let mut unnamed = 0u64;
        for (k, serial) in &alarms {
            if k != kind {
                continue;
            }
            count.alarms += 1;
            match serial {
                Some(s) => *named.entry(s.as_str()).or_default() += 1,
                None => unnamed += 1,
            }
        }
        let mut false_alarms: Vec<(&str, u64)> = named
            .iter()
            .filter(|(s, _)| {
                Serial::new(**s).map_or(true, |s| own.get(&s).copied() != Some(fault.verdict))
            })
            .map(|(s, n)| (*s, *n))
            .collect();
        false_alarms.sort();
        for (serial, n) in false_alarms.iter().take(20) {
            c.violate(
                Rule::Accounting,
                Some(serial),
                format!(
                    "{n} {kind} alarm(s) for a unit whose own read the camera did not inject as {:?}",
                    fault.verdict
                ),
            );
        }
        count.injected = injected.len() as u64;
        for serial in &injected {
            let st = state.get(serial).copied();
            if st == Some(UnitState::Rejected(fault.reason)) {
                count.rejected += 1;
            } else if exact {
                c.violate(
                    Rule::Expectation,
                    Some(serial.as_str()),
                    format!(
                        "the camera injected {:?} on this unit's read; the ledger says {}, not rejected ({})",
                        fault.verdict,
                        st.map_or_else(|| "nothing".to_string(), |s| s.to_string()),
                        fault.reason.as_str()
                    ),
                );
            }
            let n = named.get(serial.as_str()).copied().unwrap_or(0);
            if exact && n != 1 {
                c.violate(
                    Rule::Expectation,
                    Some(serial.as_str()),
                    format!(
                        "the camera injected {:?} on this unit's read; the daemon logged {n} {kind} alarm(s) naming it, expected 1",
                        fault.verdict
                    ),
                );
            }
        }
        if exact && (count.alarms != count.injected || unnamed > 0) {
            c.violate(
                Rule::Expectation,
                None,
                format!(
                    "the camera injected {} {:?} read(s); the daemon logged {} {kind} alarm(s), {unnamed} naming no serial",
                    count.injected, fault.verdict, count.alarms
                ),
            );
        }
        if count.injected > 0 || count.alarms > 0 {
            c.report.accounting.unit_faults.insert(kind, count);
        }
    }
}

/// Extra camera results (double trigger, re-fed pack, another line's pack)
/// must each cost exactly one reject signal and never a good unit; clean
/// equipment raises no device-fault alarm.
fn check_camera_extras(c: &mut Checker<'_>, records: &[(Serial, serialine_store::SerialRecord)]) {
    let input = c.input;
    let e = &input.expect;
    for kind in logged_reject_signals(&input.logs) {
        *c.report.reject_signals.entry(kind).or_default() += 1;
    }
    if e.exact_reject_signals {
        let mut injected: HashMap<&str, usize> = HashMap::new();
        for r in &input.camera_log {
            let kind = match r.verdict {
                Verdict::DoubleTrigger if r.content.as_deref().and_then(serial_of).is_some() => {
                    "duplicate-read"
                }
                Verdict::Refed => "duplicate-read",
                Verdict::OtherLine => "foreign-code",
                _ => continue,
            };
            *injected.entry(kind).or_default() += 1;
        }
        for kind in ["duplicate-read", "foreign-code"] {
            let want = injected.get(kind).copied().unwrap_or(0);
            let got = c.report.reject_signals.get(kind).copied().unwrap_or(0);
            if got != want {
                c.violate(
                    Rule::Expectation,
                    None,
                    format!("the camera showed {want} extra {kind} pack(s); the daemon logged {got} reject signal(s) of that kind"),
                );
            }
        }
    }
    if e.no_good_unit_rejected {
        let min_grade = serialine_core::Grade::C;
        let read_good: HashSet<Serial> = input
            .camera_log
            .iter()
            .filter(|r| r.verdict == Verdict::Good && r.grade >= min_grade)
            .filter(|r| r.content.as_deref() == Some(r.printed.as_str()))
            .filter_map(|r| serial_of(&r.printed))
            .collect();
        let mut bad: Vec<(&Serial, UnitState)> = records
            .iter()
            .filter(|(s, rec)| matches!(rec.state, UnitState::Rejected(_)) && read_good.contains(s))
            .map(|(s, rec)| (s, rec.state))
            .collect();
        bad.sort_by(|a, b| a.0.cmp(b.0));
        for (serial, state) in bad {
            c.violate(
                Rule::Expectation,
                Some(serial.as_str()),
                format!("the camera read this unit's own code good, yet the ledger says {state}"),
            );
        }
    }
    if e.no_device_fault_alarms && c.report.device_fault_alarms > 0 {
        let n = c.report.device_fault_alarms;
        c.violate(
            Rule::Expectation,
            None,
            format!("{n} device-fault alarm(s) logged with no device fault injected"),
        );
    }
}

/// Every printed code's GTIN equals the GTIN sealed in its serial's block.
fn check_products(c: &mut Checker<'_>, codes: &[String]) {
    let store = &c.input.store;
    let mut wrong = 0usize;
    for code in codes {
        let Ok(data) = code::parse(&Template::Gs1DataMatrix, code) else {
            continue; // already a violation of invariant 1
        };
        *c.report
            .printed_per_gtin
            .entry(data.gtin.as_string())
            .or_default() += 1;
        let block = match store.entry(&data.serial) {
            Ok(SerialEntry::Recorded(r)) => r.block_id,
            Ok(SerialEntry::Available { block_id }) => block_id,
            _ => continue, // invariant 1 reports serials the ledger lacks
        };
        match store.block_gtin(block) {
            Ok(g) if g == data.gtin => {}
            Ok(g) => {
                wrong += 1;
                if wrong <= 20 {
                    c.violate(
                        Rule::Product,
                        Some(data.serial.as_str()),
                        format!(
                            "printed as GTIN {} but its block {block} was sealed for GTIN {}",
                            data.gtin.as_string(),
                            g.as_string()
                        ),
                    );
                }
            }
            Err(e) => c.violate(
                Rule::Product,
                Some(data.serial.as_str()),
                format!("block {block} cannot be reopened: {e}"),
            ),
        }
    }
    if wrong > 20 {
        c.violate(
            Rule::Product,
            None,
            format!("{wrong} printed codes in all carry another GTIN than their block's"),
        );
    }
}

/// Issue 20: exact accounting. Every reject has a cause the simulators
/// recorded, with the matching reason; every void has an event (a kill, a
/// jam, a link drop, a mid-job stop) and at most the in-flight bound per
/// event; the job's quantity holds; a clean stop leaves nothing unreported;
/// upstream got no redelivery without a kill or an outage; every alarm, per
/// kind, matches a code the camera showed.
fn check_accounting(c: &mut Checker<'_>, records: &[(Serial, serialine_store::SerialRecord)]) {
    use serialine_core::RejectReason as R;
    let input = c.input;
    let ev = &input.events;
    let e = &input.expect;
    let kills = input.camera_kill_marks.len() as u64;
    let mut acc = Accounting::default();

    // A unit's own read: the first report of its printed code on its own
    // trigger (the extra lines name another pack).
    let mut own: HashMap<Serial, Verdict> = HashMap::new();
    for r in &input.camera_log {
        if matches!(
            r.verdict,
            Verdict::DoubleTrigger | Verdict::Refed | Verdict::OtherLine
        ) {
            continue;
        }
        if let Some(s) = serial_of(&r.printed) {
            own.entry(s).or_insert(r.verdict);
        }
    }
    let link_events = ev.device_events + kills + ev.mid_job_stops;
    // Reports whose printed code the log does not name (a replayed
    // session's camera log knows only what was read): each may explain one
    // failed read of a unit the checker cannot name.
    let mut unattributed = input
        .camera_log
        .iter()
        .filter(|r| {
            !matches!(
                r.verdict,
                Verdict::DoubleTrigger | Verdict::Refed | Verdict::OtherLine
            ) && !serial_of(&r.printed).is_some_and(|s| input.issued.contains(&s))
        })
        .count();
    let mut unexplained = 0usize;
    let mut device_fault_rejects = 0u64;
    let mut void_times: Vec<u64> = Vec::new();
    for (serial, rec) in records {
        if rec.fenced {
            acc.fenced += 1;
            continue;
        }
        // Issue 14: a label's void or reject is the hierarchy rule's.
        if c.labels.contains_key(serial) {
            continue;
        }
        let reason = match rec.state {
            UnitState::Voided => {
                acc.voided += 1;
                void_times.push(rec.at_ms);
                continue;
            }
            UnitState::Rejected(reason) => reason,
            _ => continue,
        };
        *acc.rejects.entry(reason.as_str().to_string()).or_default() += 1;
        let verdict = own.get(serial).copied();
        let explained = match (verdict, reason) {
            (Some(Verdict::NoRead), R::NoRead) => true,
            (Some(Verdict::Misread | Verdict::Foreign), R::Mismatch | R::NoRead) => true,
            // Another unit's code: its alarm names that unit, this one
            // had no read of its own.
            (Some(Verdict::Duplicate), R::Duplicate | R::Mismatch | R::NoRead) => true,
            (Some(Verdict::LowGrade), R::LowGrade) => true,
            // A plain symbol (issue 19): the read names the unit, which is
            // rejected as a mismatch (a no-read if the read was lost).
            (Some(Verdict::PlainSymbol), R::Mismatch | R::NoRead) => true,
            // Read good, but the camera's link dropped with the report.
            (Some(Verdict::Good), R::NoRead) => ev.camera_drops > 0,
            // Refused, or lost with the device's link or a jam.
            (_, R::DeviceFault) => {
                device_fault_rejects += 1;
                ev.refusals + ev.device_events > 0
            }
            // Never printed: the device stopped printing (a jam, a drop).
            (None, R::NoRead) if ev.device_events > 0 => true,
            (None, R::NoRead | R::Mismatch) if unattributed > 0 => {
                unattributed -= 1;
                true
            }
            _ => false,
        };
        if !explained {
            unexplained += 1;
            if unexplained <= 20 {
                c.violate(
                    Rule::Accounting,
                    Some(serial.as_str()),
                    format!(
                        "rejected ({}) with no recorded cause: the camera's own report was {verdict:?}, the devices recorded {} refusal(s) and {} link/jam event(s)",
                        reason.as_str(),
                        ev.refusals,
                        ev.device_events
                    ),
                );
            }
        }
    }
    if unexplained > 20 {
        c.violate(
            Rule::Accounting,
            None,
            format!("{unexplained} rejects in all with no recorded cause"),
        );
    }
    let fault_bound = ev.refusals + ev.device_events * ev.in_flight_bound;
    if device_fault_rejects > fault_bound {
        c.violate(
            Rule::Accounting,
            None,
            format!(
                "{device_fault_rejects} device-fault rejects, more than the {} refusal(s) plus {} per link/jam event ({} event(s)) allow",
                ev.refusals, ev.in_flight_bound, ev.device_events
            ),
        );
    }
    let rejected: u64 = acc.rejects.values().sum();
    if let Some(max) = e.max_rejected {
        if rejected > max {
            c.violate(
                Rule::Expectation,
                None,
                format!("expected at most {max} rejected units, got {rejected}"),
            );
        }
    }

    // Voids: each explained by an event, at most the in-flight bound each.
    acc.void_events = link_events;
    let per_event = e.max_voided_per_event.unwrap_or(ev.in_flight_bound);
    if acc.voided > link_events * per_event {
        c.violate(
            Rule::Accounting,
            None,
            format!(
                "{} units voided, more than {per_event} for each of the {link_events} kill/jam/link-drop/mid-job-stop event(s)",
                acc.voided
            ),
        );
    }
    // Per kill: the voids between it and the next kill, at most the bound
    // (times the other events, which may fall in the same interval).
    if !ev.kill_times_ms.is_empty() {
        let mut per_kill = vec![0u64; ev.kill_times_ms.len()];
        for t in &void_times {
            if let Some(k) = ev.kill_times_ms.iter().rposition(|&k| k <= *t) {
                per_kill[k] += 1;
            }
        }
        let others = 1 + ev.device_events + ev.mid_job_stops;
        for (k, n) in per_kill.iter().enumerate() {
            if *n > per_event * others {
                c.violate(
                    Rule::Accounting,
                    None,
                    format!(
                        "{n} units voided after kill {} (before the next), more than {per_event} per kill",
                        k + 1
                    ),
                );
            }
        }
        acc.voided_per_kill = per_kill;
    }
    // The fence voids, per block in use and kill or state step, at most its
    // chunk (the mark runs that far ahead of the last serial handed out) plus
    // the serials reserved but not yet durably Sent at the kill (at most the
    // in-flight bound); a clean run fences nothing.
    let blocks: HashSet<_> = records.iter().map(|(_, r)| r.block_id).collect();
    let fence_events = kills + input.earlier.len() as u64;
    let fence_bound = u64::from(serialine_store::FENCE_CHUNK) + ev.in_flight_bound;
    if input.earlier.is_empty() && acc.fenced > fence_events * fence_bound * blocks.len() as u64 {
        c.violate(
            Rule::Accounting,
            None,
            format!(
                "{} serials voided by the fence, more than {fence_bound} (its chunk + the in-flight bound) per block in use ({}) for each of {fence_events} kill(s)",
                acc.fenced,
                blocks.len()
            ),
        );
    }

    // Quantity: decided units within the job's quantity plus what each
    // event could leave in flight (decided again by the next run).
    if input.earlier.is_empty() {
        let counts = input.store.counts();
        let labels = LabelCounts::of(c, records);
        // `voided` includes the fence's voids: not units; nor are labels.
        let decided = (counts.committed + counts.synced + counts.rejected + counts.voided)
            .saturating_sub(counts.fenced)
            .saturating_sub(labels.committed + labels.rejected + labels.voided);
        let bound = input.units + link_events * ev.in_flight_bound;
        if decided > bound {
            c.violate(
                Rule::Accounting,
                None,
                format!(
                    "{decided} units decided for a job of {} (at most {bound} with {link_events} event(s) of {} in flight)",
                    input.units, ev.in_flight_bound
                ),
            );
        }
    }

    // Upstream before de-duplication.
    let up = &input.upstream;
    acc.redeliveries = up.raw_deliveries.saturating_sub(up.unique() as u64);
    if ev.clean_stop && !input.mid_job {
        let counts = input.store.counts();
        if counts.committed > 0 {
            c.violate(
                Rule::Accounting,
                None,
                format!(
                    "{} unit(s) left Committed, never Synced, after a clean stop",
                    counts.committed
                ),
            );
        }
        let depth = input.store.outbox_depth();
        if depth > 0 {
            c.violate(
                Rule::Accounting,
                None,
                format!("{depth} outbox entries left after a clean stop"),
            );
        }
    }
    let up_events = kills + ev.outages + input.earlier.len() as u64;
    let max_redeliveries = match e.max_redeliveries_per_event {
        _ if up_events == 0 => 0,
        Some(m) => m * up_events,
        None => u64::MAX,
    };
    if acc.redeliveries > max_redeliveries {
        c.violate(
            Rule::Accounting,
            None,
            format!(
                "upstream got {} deliveries for {} unique ids: {} redelivered, at most {max_redeliveries} allowed ({up_events} kill(s), outage(s), state step(s))",
                up.raw_deliveries,
                up.unique(),
                acc.redeliveries,
            ),
        );
    }

    // No excuse without a record: a mid-job stop no run reconciled.
    if input.mid_job {
        let counts = input.store.counts();
        if counts.sent + counts.printed > 0 {
            c.violate(
                Rule::Accounting,
                None,
                format!(
                    "{} serial(s) left in flight after a mid-job stop that no run reconciled",
                    counts.sent + counts.printed
                ),
            );
        }
    }

    let voided: HashSet<&Serial> = records
        .iter()
        .filter(|(s, r)| r.state == UnitState::Voided && !c.labels.contains_key(s))
        .map(|(s, _)| s)
        .collect();
    check_alarm_kinds(c, &voided);
    c.report.accounting = acc;
}

/// Issue 20: alarms per kind. The duplicate-read (foreign-code) alarms
/// logged are at least the duplicate (foreign) codes the camera showed
/// outside excused windows and at most those plus the excused ones; an
/// alarm for a code the camera never showed is false.
fn check_alarm_kinds(c: &mut Checker<'_>, voided: &HashSet<&Serial>) {
    let input = c.input;
    let mut shown: HashMap<&'static str, (u64, u64)> = HashMap::new();
    let mut shown_serials: HashSet<String> = HashSet::new();
    let own_read = own_reads(&input.camera_log);
    for (i, r) in input.camera_log.iter().enumerate() {
        let kind = match r.verdict {
            Verdict::Duplicate | Verdict::Refed => "duplicate-read",
            Verdict::DoubleTrigger if r.content.as_deref().and_then(serial_of).is_some() => {
                "duplicate-read"
            }
            Verdict::Foreign | Verdict::OtherLine => "foreign-code",
            // A read of a code this line was never issued (a misread, or a
            // replayed session's read) is a foreign code; a misread that
            // lands on an issued serial may or may not alarm.
            Verdict::Misread | Verdict::Good | Verdict::LowGrade => {
                match r.content.as_deref().and_then(serial_of) {
                    Some(s) if !input.issued.contains(&s) => {
                        shown_serials.insert(s.as_str().to_string());
                        shown.entry("foreign-code").or_default().0 += 1;
                    }
                    Some(s) if r.verdict == Verdict::Misread => {
                        shown_serials.insert(s.as_str().to_string());
                        shown.entry("foreign-code").or_default().1 += 1;
                        shown.entry("duplicate-read").or_default().1 += 1;
                    }
                    // A good read just before a kill may reach the next
                    // run again (the camera's buffer): a duplicate then. So
                    // may the read of a unit voided in flight at a kill and
                    // printed after it (its code is decided already).
                    Some(s)
                        if voided.contains(&s)
                            || input
                                .camera_kill_marks
                                .iter()
                                .any(|&m| i < m && i + input.alarm_tolerance >= m) =>
                    {
                        shown_serials.insert(s.as_str().to_string());
                        shown.entry("duplicate-read").or_default().1 += 1;
                    }
                    _ => {}
                }
                continue;
            }
            _ => continue,
        };
        if let Some(s) = r.content.as_deref().and_then(serial_of) {
            shown_serials.insert(s.as_str().to_string());
        }
        let excused = excused_report(input, &own_read, i, r);
        let e = shown.entry(kind).or_default();
        if excused {
            e.1 += 1;
        } else {
            e.0 += 1;
        }
    }
    let alarms = logged_alarms(&input.logs);
    let mut false_alarms = 0usize;
    for (kind, serial) in &alarms {
        if !matches!(kind.as_str(), "duplicate-read" | "foreign-code") {
            continue;
        }
        if let Some(s) = serial {
            if !shown_serials.contains(s) {
                false_alarms += 1;
                if false_alarms <= 20 {
                    c.violate(
                        Rule::Accounting,
                        Some(s),
                        format!("a {kind} alarm for a code the camera never showed as such"),
                    );
                }
            }
        }
    }
    for (kind, got) in [
        ("duplicate-read", c.report.duplicate_alarms as u64),
        ("foreign-code", c.report.foreign_alarms as u64),
    ] {
        let (want, excused) = shown.get(kind).copied().unwrap_or((0, 0));
        if got > want + excused {
            c.violate(
                Rule::Accounting,
                None,
                format!(
                    "{got} {kind} alarm(s) logged, the camera showed {want} such code(s) (+{excused} excused): {} false alarm(s)",
                    got - want - excused
                ),
            );
        }
        if got < want {
            c.violate(
                Rule::Accounting,
                None,
                format!("{got} {kind} alarm(s) logged, the camera showed {want} such code(s) outside excused windows"),
            );
        }
    }
    if let Some(max) = input.expect.max_alarms_excused {
        if c.report.alarms_excused as u64 > max {
            c.violate(
                Rule::Expectation,
                None,
                format!(
                    "{} duplicate/foreign reports excused from the alarm check, at most {max} expected",
                    c.report.alarms_excused
                ),
            );
        }
    }
}

/// The camera's first verdict for each printed code: what its own read was.
fn own_reads(log: &[Reported]) -> HashMap<&str, Verdict> {
    let mut own_read: HashMap<&str, Verdict> = HashMap::new();
    for r in log {
        own_read.entry(r.printed.as_str()).or_insert(r.verdict);
    }
    own_read
}

/// Report `i` of the camera log may fairly draw no alarm: it came just before
/// a kill (the killed daemon may never have read it), or it repeats a code
/// whose own read decided nothing (then it is that unit's read, not a
/// duplicate).
fn excused_report(
    input: &CheckInput,
    own_read: &HashMap<&str, Verdict>,
    i: usize,
    r: &Reported,
) -> bool {
    let near_kill = input
        .camera_kill_marks
        .iter()
        .any(|&m| i < m && i + input.alarm_tolerance >= m);
    let own_undecided = matches!(r.verdict, Verdict::Duplicate | Verdict::DoubleTrigger)
        && r.content
            .as_deref()
            .and_then(|c| own_read.get(c))
            .is_some_and(|v| !matches!(v, Verdict::Good | Verdict::LowGrade));
    near_kill || own_undecided
}

/// Issue 14: the ledger's label serials (serials of blocks sealed for a
/// level's GTIN), by level index; empty without packaging levels.
fn label_serials(
    c: &mut Checker<'_>,
    records: &[(Serial, serialine_store::SerialRecord)],
) -> HashMap<Serial, usize> {
    let Some(h) = &c.input.hierarchy else {
        return HashMap::new();
    };
    let store = &c.input.store;
    let mut level_of_block: HashMap<serialine_core::BlockId, Option<usize>> = HashMap::new();
    let mut labels = HashMap::new();
    let mut unreadable = Vec::new();
    for (serial, rec) in records {
        let level = *level_of_block.entry(rec.block_id).or_insert_with(|| {
            match store.block_gtin(rec.block_id) {
                Ok(g) => h.levels.iter().position(|l| l.gtin == g),
                Err(e) => {
                    unreadable.push((rec.block_id, e.to_string()));
                    None
                }
            }
        });
        if let Some(level) = level {
            labels.insert(serial.clone(), level);
        }
    }
    for (block, e) in unreadable {
        c.violate(
            Rule::Hierarchy,
            None,
            format!("block {block} cannot be reopened to tell labels from units: {e}"),
        );
    }
    labels
}

/// Issue 14: labels by outcome, to keep them out of the units' figures.
#[derive(Debug, Default, Clone, Copy)]
struct LabelCounts {
    /// Committed, acknowledged (or moved after commit).
    committed: u64,
    rejected: u64,
    /// Voided, not by the fence (the fence's voids are counted apart).
    voided: u64,
}

impl LabelCounts {
    fn of(c: &Checker<'_>, records: &[(Serial, serialine_store::SerialRecord)]) -> LabelCounts {
        let mut n = LabelCounts::default();
        for (serial, rec) in records {
            if !c.labels.contains_key(serial) {
                continue;
            }
            match rec.state {
                UnitState::Committed
                | UnitState::Synced
                | UnitState::Sampled(_)
                | UnitState::Decommissioned(_) => n.committed += 1,
                UnitState::Rejected(_) => n.rejected += 1,
                UnitState::Voided if !rec.fenced => n.voided += 1,
                _ => {}
            }
        }
        n
    }
}

/// Issue 14: each parent's seal (its pack) and each rework move on it
/// (`[rework]`) are events upstream must hold once. Their ids carry their
/// place in the ledger's history (outbox seq and time), which the ledger
/// does not keep once acknowledged: so per parent, upstream must hold as
/// many `packed` events as its seal's (one per [`PACK_EVENT_CHILDREN`]
/// children it was sealed with) plus the rework packs', and as many
/// `unpacked` events as the rework unpacks'; the events it holds are the
/// ones expected. Returns how many.
fn expect_pack_events(
    c: &mut Checker<'_>,
    expected_ids: &mut HashMap<String, (Serial, &'static str)>,
) -> usize {
    if c.input.hierarchy.is_none() {
        return 0;
    }
    let input = c.input;
    let parents = match input.store.parents() {
        Ok(p) => p,
        Err(e) => {
            c.violate(Rule::Harness, None, format!("reading the parents: {e}"));
            return 0;
        }
    };
    let rework = &input.events.rework;
    let mut n = 0;
    for (parent, _) in parents {
        let children = match input.store.contents(&parent) {
            Ok(Some((_, children))) => children,
            Ok(None) => continue,
            Err(e) => {
                c.violate(
                    Rule::Harness,
                    Some(parent.as_str()),
                    format!("reading its contents: {e}"),
                );
                continue;
            }
        };
        // Sealed with what it held before any rework.
        let (sealed_with, _) = before_rework(&parent, &children, rework);
        let seal = sealed_with.len().div_ceil(PACK_EVENT_CHILDREN);
        let moves = || rework.iter().filter(|m| m.parent == parent);
        let packs: usize = moves()
            .filter(|m| m.kind == ReworkKind::Pack)
            .map(ReworkMove::event_count)
            .sum();
        let unpacks: usize = moves()
            .filter(|m| m.kind != ReworkKind::Pack)
            .map(ReworkMove::event_count)
            .sum();
        for (state, want) in [("packed", seal + packs), ("unpacked", unpacks)] {
            let held: Vec<&String> = input
                .upstream
                .events
                .iter()
                .filter(|(_, (s, st))| s == parent.as_str() && st == state)
                .map(|(id, _)| id)
                .collect();
            if held.len() != want {
                c.violate(
                    Rule::Invariant(5),
                    Some(parent.as_str()),
                    format!(
                        "{want} {state} event(s) expected upstream (its seal's {seal}, rework's {}), it holds {}",
                        want - if state == "packed" { seal } else { 0 },
                        held.len()
                    ),
                );
            }
            for id in held {
                expected_ids.insert(id.clone(), (parent.clone(), state));
                n += 1;
            }
        }
    }
    n
}

/// Most children one pack event names (`serialine_store`'s
/// `RETURN_EVENT_SERIALS`).
const PACK_EVENT_CHILDREN: usize = 100;

/// One level's label devices, as the checker reads them.
#[derive(Default)]
struct LabelDevices {
    /// Times each label serial was received by its label printer.
    received: HashMap<Serial, usize>,
    /// Times each label serial was printed.
    printed: HashMap<Serial, usize>,
    /// Label serials the scanner read good (its own code, in grade).
    read_good: HashSet<Serial>,
    /// Every verdict the scanner gave each label serial.
    verdicts: HashMap<Serial, Vec<Verdict>>,
    /// Serials any read of the scanner named (strays included).
    read_any: HashSet<Serial>,
}

/// Issue 14, [`Rule::Hierarchy`]: the packaging hierarchy in the final
/// ledger against the label printers, the label scanners, the packers and
/// upstream.
///
/// - (a) every parent holding children is a label of its level's GTIN,
///   committed (or synced), received and printed by its level's label
///   printer exactly once and read back good by its scanner; a committed
///   label holds children;
/// - (b) every child is committed (or synced), of its parent's job, of the
///   level below's product (units for cases, case labels for pallets);
///   a full parent holds exactly its level's count, a partial one fewer;
///   in scan mode its children are exactly one packer read's codes;
/// - (c) no label code is received or printed twice, ever (across kills);
///   every label received left the pool durably and was issued;
/// - (d) upstream's child -> parent equals the ledger's, both ways;
/// - (e) the units of every case a packer read with a fault are in no
///   parent, nor is any unit a fault took out of the line (an earlier
///   case's unit put into a faulted case stays in its earlier parent);
///   a unit missing from a case the daemon could only take for the job's
///   last (read short after the line's last unit) is excused;
/// - (f) a voided or rejected label holds nothing and is in nothing; at
///   most one label per level is voided per kill; a rejected label's
///   scanner verdict explains it; a label in flight at a harness kill ends
///   voided and printed at most once;
/// - (g) per level and job at most one partial parent, the job's last.
///
/// Without kills, `aggregation-refused` alarms equal the packer reads that
/// could not be sealed (a fault, or a short read not sealed as partial)
/// plus the labels rejected. The `[expect]` counts close it.
fn check_hierarchy(c: &mut Checker<'_>, records: &[(Serial, serialine_store::SerialRecord)]) {
    let input = c.input;
    let Some(h) = &input.hierarchy else {
        return;
    };
    let store = &input.store;
    let min_grade = crate::harness::MIN_GRADE;
    let kills = input.camera_kill_marks.len() as u64;
    let rec: HashMap<&Serial, &serialine_store::SerialRecord> =
        records.iter().map(|(s, r)| (s, r)).collect();
    let mut figures = HierarchyFigures::default();

    // (c) and the label devices' logs.
    let mut devices: Vec<LabelDevices> = Vec::new();
    for (li, level) in h.levels.iter().enumerate() {
        let mut d = LabelDevices::default();
        for (what, codes) in [("received", &level.formats), ("printed", &level.printed)] {
            for code in codes {
                let data = match code::parse(&Template::Gs1DataMatrix, code) {
                    Ok(d) => d,
                    Err(e) => {
                        c.violate(
                            Rule::Hierarchy,
                            None,
                            format!("the {} label printer {what} a code that does not parse ({e}): {code:?}", level.name),
                        );
                        continue;
                    }
                };
                if data.gtin != level.gtin {
                    c.violate(
                        Rule::Hierarchy,
                        Some(data.serial.as_str()),
                        format!(
                            "the {} label printer {what} a code of GTIN {}, not the level's {}",
                            level.name,
                            data.gtin.as_string(),
                            level.gtin.as_string()
                        ),
                    );
                }
                let map = if what == "received" {
                    &mut d.received
                } else {
                    &mut d.printed
                };
                *map.entry(data.serial).or_default() += 1;
            }
        }
        for r in &level.scanner {
            let Some(serial) = serial_of(&r.printed) else {
                continue;
            };
            if r.verdict == Verdict::Good
                && r.content.as_deref() == Some(r.printed.as_str())
                && r.grade >= min_grade
            {
                d.read_good.insert(serial.clone());
            }
            if let Some(s) = r.content.as_deref().and_then(serial_of) {
                d.read_any.insert(s);
            }
            d.verdicts.entry(serial).or_default().push(r.verdict);
        }
        let mut received: Vec<(&Serial, &usize)> = d.received.iter().collect();
        received.sort();
        for (serial, n) in received {
            if *n > 1 {
                c.violate(
                    Rule::Hierarchy,
                    Some(serial.as_str()),
                    format!(
                        "the {} label printer received this label {n} times",
                        level.name
                    ),
                );
            }
            match rec.get(serial) {
                Some(r) if r.state.has_left_pool() => {}
                other => c.violate(
                    Rule::Hierarchy,
                    Some(serial.as_str()),
                    format!(
                        "on the {} label printer but the ledger has no durable Sent for it: {:?}",
                        level.name,
                        other.map(|r| r.state)
                    ),
                ),
            }
            if c.labels.get(serial) != Some(&li) {
                c.violate(
                    Rule::Hierarchy,
                    Some(serial.as_str()),
                    format!(
                        "on the {} label printer but not a serial of a block sealed for GTIN {}",
                        level.name,
                        level.gtin.as_string()
                    ),
                );
            }
            if !input.issued.contains(serial) {
                c.violate(
                    Rule::Hierarchy,
                    Some(serial.as_str()),
                    format!(
                        "on the {} label printer but never issued to this line",
                        level.name
                    ),
                );
            }
        }
        let mut printed: Vec<(&Serial, &usize)> = d.printed.iter().collect();
        printed.sort();
        for (serial, n) in printed {
            if *n > 1 {
                c.violate(
                    Rule::Hierarchy,
                    Some(serial.as_str()),
                    format!(
                        "the {} label printer printed this label {n} times",
                        level.name
                    ),
                );
            }
            if !d.received.contains_key(serial) {
                c.violate(
                    Rule::Hierarchy,
                    Some(serial.as_str()),
                    format!(
                        "the {} label printer printed a label it never received",
                        level.name
                    ),
                );
            }
        }
        figures.levels.push(LevelFigures {
            name: level.name.clone(),
            printed: level.printed.len() as u64,
            ..LevelFigures::default()
        });
        devices.push(d);
    }

    // The parents.
    let parents = match store.parents() {
        Ok(p) => p,
        Err(e) => {
            c.violate(Rule::Harness, None, format!("reading the parents: {e}"));
            Vec::new()
        }
    };
    // Each packer read's codes, as a set, by level: a scanned parent is one.
    let reads: Vec<HashMap<Vec<Serial>, usize>> = h
        .levels
        .iter()
        .map(|l| {
            let mut m = HashMap::new();
            for (i, r) in l.packer.iter().flatten().enumerate() {
                if let Some(set) = read_serials(r) {
                    m.insert(set, i);
                }
            }
            m
        })
        .collect();
    let mut parent_of: HashMap<Serial, Serial> = HashMap::new();
    let mut per_job: HashMap<(usize, u32), Vec<Sealed>> = HashMap::new();
    // Parents (by level) whose children are exactly a packer read's.
    let mut sealed_reads: Vec<HashSet<usize>> = vec![HashSet::new(); h.levels.len()];
    let mut partial_sets: HashSet<Vec<Serial>> = HashSet::new();
    // Issue 14, rework: where the harness's moves left each child they
    // moved (none: loose), and the parents it emptied.
    let rework = &input.events.rework;
    let mut rework_home: HashMap<Serial, Option<Serial>> = HashMap::new();
    let mut emptied_by_rework: HashSet<Serial> = HashSet::new();
    for m in rework {
        let home = (m.kind == ReworkKind::Pack).then(|| m.parent.clone());
        for child in &m.children {
            rework_home.insert(child.clone(), home.clone());
        }
        if m.kind == ReworkKind::Empty {
            emptied_by_rework.insert(m.parent.clone());
        }
    }
    for (parent, _) in &parents {
        let p = parent.as_str();
        let (entry, children) = match store.contents(parent) {
            Ok(Some(x)) => x,
            Ok(None) => continue,
            Err(e) => {
                c.violate(Rule::Harness, Some(p), format!("reading its contents: {e}"));
                continue;
            }
        };
        let Some(&li) = c.labels.get(parent) else {
            c.violate(
                Rule::Hierarchy,
                Some(p),
                "a parent that is not a label: its block is sealed for none of the levels' GTINs",
            );
            continue;
        };
        // What the line sealed it with: what it holds, the rework undone.
        let reworked = rework.iter().any(|m| m.parent == *parent);
        let (sealed_with, problems) = before_rework(parent, &children, rework);
        for (child, what) in problems {
            c.violate(Rule::Hierarchy, Some(child.as_str()), what);
        }
        let emptied = entry.state == serialine_store::hierarchy::ParentState::Emptied;
        if emptied != emptied_by_rework.contains(parent) {
            c.violate(
                Rule::Hierarchy,
                Some(p),
                format!(
                    "emptied for good in the ledger: {emptied}; emptied by the harness's rework: {}",
                    emptied_by_rework.contains(parent)
                ),
            );
        }
        if emptied && !children.is_empty() {
            c.violate(
                Rule::Hierarchy,
                Some(p),
                format!("emptied for good, yet it holds {} children", children.len()),
            );
        }
        if sealed_with.is_empty() {
            continue;
        }
        // A reworked parent is judged partial by what it was sealed with.
        let partial = match reworked {
            true => entry.expected > 0 && (sealed_with.len() as u32) < entry.expected,
            false => entry.partial(),
        };
        let level = &h.levels[li];
        let d = &devices[li];
        let figs = &mut figures.levels[li];
        figs.reworked += u64::from(reworked);
        if children.is_empty() {
            figs.emptied += 1;
        } else {
            figs.sealed += 1;
            figs.partial += u64::from(partial);
        }
        // (a)
        match rec.get(parent).map(|r| r.state) {
            Some(UnitState::Committed | UnitState::Synced) => {}
            other => c.violate(
                Rule::Hierarchy,
                Some(p),
                format!(
                    "a {} holding {} children, its label is {other:?}, not committed",
                    level.name,
                    children.len()
                ),
            ),
        }
        let printed = d.printed.get(parent).copied().unwrap_or(0);
        if printed != 1 {
            c.violate(
                Rule::Hierarchy,
                Some(p),
                format!(
                    "a sealed {}: its label printed {printed} times, expected once",
                    level.name
                ),
            );
        }
        if !d.read_good.contains(parent) {
            c.violate(
                Rule::Hierarchy,
                Some(p),
                format!(
                    "a sealed {}: its scanner never read its label good (verdicts {:?})",
                    level.name,
                    d.verdicts.get(parent)
                ),
            );
        }
        // (b)
        if entry.expected != level.per_parent {
            c.violate(
                Rule::Hierarchy,
                Some(p),
                format!(
                    "sealed as a {} of {}, the level holds {}",
                    level.name, entry.expected, level.per_parent
                ),
            );
        }
        if children.len() > level.per_parent as usize {
            c.violate(
                Rule::Hierarchy,
                Some(p),
                format!(
                    "holds {} children, a full {} {}",
                    children.len(),
                    level.name,
                    level.per_parent
                ),
            );
        }
        let child_gtin = match li {
            0 => h.unit_gtin,
            _ => h.levels[li - 1].gtin,
        };
        for child in &children {
            let s = child.as_str();
            if let Some(other) = parent_of.insert(child.clone(), parent.clone()) {
                c.violate(
                    Rule::Hierarchy,
                    Some(s),
                    format!("in two parents: {other} and {p}"),
                );
            }
            // The ledger's two trees (a parent's children, a child's
            // parent) agree.
            match store.parent_of(child) {
                Ok(Some(q)) if q == *parent => {}
                other => c.violate(
                    Rule::Hierarchy,
                    Some(s),
                    format!("among {p}'s children, but the ledger's parent_of says {other:?}"),
                ),
            }
            let Some(r) = rec.get(child) else {
                c.violate(
                    Rule::Hierarchy,
                    Some(s),
                    format!("in {} {p} but the ledger has no record of it", level.name),
                );
                continue;
            };
            if !matches!(r.state, UnitState::Committed | UnitState::Synced) {
                c.violate(
                    Rule::Hierarchy,
                    Some(s),
                    format!("in {} {p} but {}, not committed", level.name, r.state),
                );
            }
            if r.job != entry.job {
                c.violate(
                    Rule::Hierarchy,
                    Some(s),
                    format!(
                        "of job {}, in {} {p} of job {}",
                        r.job, level.name, entry.job
                    ),
                );
            }
            let right_level = match li {
                0 => !c.labels.contains_key(child),
                _ => c.labels.get(child) == Some(&(li - 1)),
            };
            let gtin = store.block_gtin(r.block_id).ok();
            if !right_level || gtin != Some(child_gtin) {
                c.violate(
                    Rule::Hierarchy,
                    Some(s),
                    format!(
                        "in {} {p} but a serial of GTIN {:?}, not the level below's {}",
                        level.name,
                        gtin.map(|g| g.as_string()),
                        child_gtin.as_string()
                    ),
                );
            }
        }
        let set = sealed_with;
        if level.scans {
            match reads[li].get(&set) {
                Some(&i) => {
                    sealed_reads[li].insert(i);
                }
                None => c.violate(
                    Rule::Hierarchy,
                    Some(p),
                    format!(
                        "a scanned {} whose {} children{} are no read of its packer",
                        level.name,
                        set.len(),
                        if reworked { " (before rework)" } else { "" }
                    ),
                ),
            }
        }
        if partial {
            partial_sets.insert(set);
        }
        per_job.entry((li, entry.job)).or_default().push(Sealed {
            packed_ms: entry.packed_ms,
            partial,
            parent: parent.clone(),
        });
        // (d), this way.
        for child in &children {
            let up = input.upstream.parent_of.get(child.as_str());
            if up.map(String::as_str) != Some(p) {
                c.violate(
                    Rule::Hierarchy,
                    Some(child.as_str()),
                    format!("in {} {p} in the ledger, upstream says {up:?}", level.name),
                );
            }
        }
    }
    // (d), the other way.
    let mut up_only: Vec<(&String, &String)> = input
        .upstream
        .parent_of
        .iter()
        .filter(|(child, parent)| {
            Serial::new(child.as_str())
                .ok()
                .and_then(|s| parent_of.get(&s))
                .map(Serial::as_str)
                != Some(parent.as_str())
        })
        .collect();
    up_only.sort();
    for (child, parent) in up_only.into_iter().take(20) {
        c.violate(
            Rule::Hierarchy,
            Some(child),
            format!("upstream has it in {parent}, the ledger does not"),
        );
    }
    // Rework: each unit a rework move took out (or out of an emptied
    // parent) is loose, each it packed is in that parent, unless a later
    // move moved it again.
    let mut moved: Vec<(&Serial, &Option<Serial>)> = rework_home.iter().collect();
    moved.sort();
    for (child, home) in moved {
        let now = parent_of.get(child);
        if now != home.as_ref() {
            c.violate(
                Rule::Hierarchy,
                Some(child.as_str()),
                format!(
                    "the rework left it {}, the ledger has it {}",
                    home.as_ref()
                        .map_or("loose".to_string(), |p| format!("in {p}")),
                    now.map_or("loose".to_string(), |p| format!("in {p}"))
                ),
            );
        }
    }
    // (g)
    let mut jobs: Vec<_> = per_job.into_iter().collect();
    jobs.sort_by_key(|(k, _)| *k);
    for ((li, job), parents) in jobs {
        let name = &h.levels[li].name;
        let partial: Vec<&Sealed> = parents.iter().filter(|p| p.partial).collect();
        if partial.len() > 1 {
            c.violate(
                Rule::Hierarchy,
                None,
                format!(
                    "job {job} has {} partial {name}s: {:?}",
                    partial.len(),
                    partial
                        .iter()
                        .map(|p| p.parent.as_str())
                        .collect::<Vec<_>>()
                ),
            );
        }
        let last = parents.iter().map(|p| p.packed_ms).max().unwrap_or(0);
        for p in partial {
            let serial = &p.parent;
            if p.packed_ms < last {
                c.violate(
                    Rule::Hierarchy,
                    Some(serial.as_str()),
                    format!("a partial {name} of job {job}, but not the job's last"),
                );
            }
        }
    }

    // (f) and the labels' outcomes.
    let mut voided_labels = 0u64;
    let mut label_records: Vec<(Serial, usize)> =
        c.labels.iter().map(|(s, l)| (s.clone(), *l)).collect();
    label_records.sort();
    for (serial, li) in &label_records {
        let (serial, li) = (serial, *li);
        let Some(r) = rec.get(serial) else { continue };
        let s = serial.as_str();
        let name = &h.levels[li].name;
        let (holds, emptied) =
            store
                .contents(serial)
                .ok()
                .flatten()
                .map_or((0, false), |(e, ch)| {
                    (
                        ch.len(),
                        e.state == serialine_store::hierarchy::ParentState::Emptied,
                    )
                });
        // Emptied for good by the harness's rework: its code is used up.
        let emptied = emptied && emptied_by_rework.contains(serial);
        match r.state {
            UnitState::Committed | UnitState::Synced if holds == 0 && !emptied => c.violate(
                Rule::Hierarchy,
                Some(s),
                format!("a {name} label committed, but it holds nothing"),
            ),
            UnitState::Voided | UnitState::Rejected(_) => {
                if holds > 0 || parent_of.contains_key(serial) {
                    c.violate(
                        Rule::Hierarchy,
                        Some(s),
                        format!(
                            "a {name} label {}, yet it holds {holds} children or is in a parent",
                            r.state
                        ),
                    );
                }
                if r.state == UnitState::Voided {
                    if !r.fenced {
                        voided_labels += 1;
                        figures.levels[li].voided += 1;
                    }
                    continue;
                }
                figures.levels[li].rejected += 1;
                let verdicts = devices[li]
                    .verdicts
                    .get(serial)
                    .cloned()
                    .unwrap_or_default();
                let explained = match r.state {
                    UnitState::Rejected(RejectReason::LowGrade) => {
                        verdicts.contains(&Verdict::LowGrade)
                    }
                    // Not read: the scanner said so, or never read it good.
                    UnitState::Rejected(RejectReason::NoRead) => {
                        !devices[li].read_good.contains(serial)
                    }
                    _ => kills > 0,
                };
                if !explained {
                    c.violate(
                        Rule::Hierarchy,
                        Some(s),
                        format!(
                            "a {name} label {} with no cause its scanner recorded (verdicts {verdicts:?})",
                            r.state
                        ),
                    );
                }
            }
            _ => {}
        }
    }
    let bound = h.levels.len() as u64 * kills;
    if voided_labels > bound {
        c.violate(
            Rule::Hierarchy,
            None,
            format!(
                "{voided_labels} labels voided, more than one per level ({}) per kill ({kills})",
                h.levels.len()
            ),
        );
    }
    for code in &h.killed_labels {
        let Some(serial) = serial_of(code) else {
            c.violate(
                Rule::Hierarchy,
                None,
                format!("the label in flight at a kill does not parse: {code:?}"),
            );
            continue;
        };
        let s = serial.as_str();
        let state = rec.get(&serial).map(|r| r.state);
        if state != Some(UnitState::Voided) {
            c.violate(
                Rule::Hierarchy,
                Some(s),
                format!("the label in flight at a kill ended {state:?}, not voided"),
            );
        }
        let printed: usize = devices.iter().filter_map(|d| d.printed.get(&serial)).sum();
        if printed > 1 {
            c.violate(
                Rule::Hierarchy,
                Some(s),
                format!("the label in flight at a kill was printed {printed} times"),
            );
        }
    }

    // (e) the packers' faults changed nothing.
    let mut excused_units: HashSet<Serial> = HashSet::new();
    let mut unsealable = 0u64;
    // Per level, the fault-free full reads not sealed and their children:
    // each was refused for its label (rejected), or after a kill.
    let mut unlabelled: Vec<(u64, HashSet<Serial>)> = vec![Default::default(); h.levels.len()];
    for (li, level) in h.levels.iter().enumerate() {
        let Some(log) = &level.packer else { continue };
        for (i, r) in log.iter().enumerate() {
            let sealed = sealed_reads[li].contains(&i);
            for lost in &r.lost {
                if let Some(s) = serial_of(lost) {
                    excused_units.insert(s.clone());
                    // Put into a case by rework: that is where it is.
                    let by_rework =
                        |p: &Serial| rework_home.get(&s).is_some_and(|h| h.as_ref() == Some(p));
                    if let Some(p) = parent_of.get(&s).filter(|p| !by_rework(p)) {
                        c.violate(
                            Rule::Hierarchy,
                            Some(s.as_str()),
                            format!(
                                "{} read {}: taken out of the line ({:?}), yet in {p}",
                                level.name, r.case, r.fault
                            ),
                        );
                    }
                }
            }
            let Some(fault) = r.fault else {
                // Refused: short while the line fed, or its label rejected.
                if !sealed {
                    unsealable += 1;
                    unlabelled[li].0 += 1;
                    unlabelled[li]
                        .1
                        .extend(r.contents.iter().filter_map(|c| serial_of(c)));
                }
                continue;
            };
            // One short, read as the line's last: to the daemon, the job's
            // partial case.
            let short_last = fault == CaseFault::Missing
                && read_serials(r).is_some_and(|set| partial_sets.contains(&set));
            if short_last {
                continue;
            }
            unsealable += 1;
            // The intruder (a foreign unit, an earlier case's unit) is last.
            let own = match fault {
                CaseFault::Foreign | CaseFault::AlreadyAggregated => {
                    &r.contents[..r.contents.len().saturating_sub(1)]
                }
                CaseFault::Missing | CaseFault::NoRead => &r.contents[..],
            };
            for code in own {
                let Some(s) = serial_of(code) else { continue };
                excused_units.insert(s.clone());
                let by_rework =
                    |p: &Serial| rework_home.get(&s).is_some_and(|h| h.as_ref() == Some(p));
                if let Some(p) = parent_of.get(&s).filter(|p| !by_rework(p)) {
                    c.violate(
                        Rule::Hierarchy,
                        Some(s.as_str()),
                        format!(
                            "{} read {} was faulted ({fault:?}) and must change nothing, yet this unit of it is in {p}",
                            level.name, r.case
                        ),
                    );
                }
            }
        }
    }

    // Alarms: refusals, and the scanner's stray reads.
    let alarms = logged_alarms(&input.logs);
    figures.refused = alarms
        .iter()
        .filter(|(k, _)| k == AlarmKind::AggregationRefused.as_str())
        .count() as u64;
    for serial in stray_label_reads(&input.logs) {
        figures.stray_label_reads += 1;
        let read = serial.as_deref().and_then(|s| Serial::new(s).ok());
        let known = read.as_ref().is_some_and(|x| {
            c.labels.contains_key(x) && devices.iter().any(|d| d.read_any.contains(x))
        });
        if !known {
            c.violate(
                Rule::Hierarchy,
                serial.as_deref(),
                "a label scanner's foreign-code alarm for no label a label scanner read",
            );
        }
    }
    // Each read a scanning level did not seal was refused once (a fault,
    // short while the line fed, its label rejected); a counting level
    // refuses a parent only for its label.
    let counted_rejects: u64 = h
        .levels
        .iter()
        .zip(&figures.levels)
        .filter(|(l, _)| !l.scans)
        .map(|(_, f)| f.rejected)
        .sum();
    if kills == 0 && figures.refused != unsealable + counted_rejects {
        c.violate(
            Rule::Hierarchy,
            None,
            format!(
                "{} aggregation-refused alarm(s) logged; the packers made {unsealable} read(s) not sealed and the counting levels had {counted_rejects} label(s) rejected",
                figures.refused
            ),
        );
    }
    // A clean read not sealed: its label was rejected (one per label).
    for ((level, figs), (reads, _)) in h.levels.iter().zip(&figures.levels).zip(&unlabelled) {
        if kills == 0 && level.scans && *reads > figs.rejected {
            c.violate(
                Rule::Hierarchy,
                None,
                format!(
                    "{reads} fault-free {} reads not sealed, {} {} label(s) rejected",
                    level.name, figs.rejected, level.name
                ),
            );
        }
    }

    // Loose units, and the expectations.
    let mut loose: Vec<&Serial> = records
        .iter()
        .filter(|(s, r)| {
            matches!(r.state, UnitState::Committed | UnitState::Synced)
                && !c.labels.contains_key(s)
                && !parent_of.contains_key(s)
        })
        .map(|(s, _)| s)
        .collect();
    loose.sort();
    figures.loose_units = loose.len() as u64;
    // Taken out by rework (or out of a parent it emptied): loose by design.
    excused_units.extend(
        rework_home
            .iter()
            .filter(|(_, home)| home.is_none())
            .map(|(s, _)| s.clone()),
    );
    let e = &input.expect;
    if e.all_units_packed {
        let spare = refused_for_label(h, &figures, &mut unlabelled, 0, &mut excused_units);
        let unexcused: Vec<&&Serial> = loose
            .iter()
            .filter(|s| !excused_units.contains(**s))
            .skip(spare)
            .collect();
        for s in unexcused.iter().take(20) {
            c.violate(
                Rule::Expectation,
                Some(s.as_str()),
                "committed but in no case, and no packer fault took it out",
            );
        }
        if unexcused.len() > 20 {
            c.violate(
                Rule::Expectation,
                None,
                format!("{} committed units in all in no case", unexcused.len()),
            );
        }
    }
    if e.all_cases_palletized && h.levels.len() > 1 {
        let mut excused = HashSet::new();
        let spare = refused_for_label(h, &figures, &mut unlabelled, 1, &mut excused);
        let mut bare: Vec<&Serial> = parents
            .iter()
            .map(|(p, _)| p)
            .filter(|p| c.labels.get(*p) == Some(&0) && !parent_of.contains_key(*p))
            .filter(|p| !excused.contains(*p))
            .filter(|p| {
                store
                    .contents(p)
                    .ok()
                    .flatten()
                    .is_some_and(|(_, ch)| !ch.is_empty())
            })
            .collect();
        bare.sort();
        for p in bare.iter().skip(spare).take(20) {
            c.violate(
                Rule::Expectation,
                Some(p.as_str()),
                "a sealed case on no pallet",
            );
        }
    }
    let level = |i: usize| figures.levels.get(i).cloned().unwrap_or_default();
    let exact = [
        ("sealed cases", level(0).sealed, e.sealed_cases),
        ("partial cases", level(0).partial, e.partial_cases),
        ("sealed pallets", level(1).sealed, e.sealed_pallets),
        ("partial pallets", level(1).partial, e.partial_pallets),
        (
            "aggregation-refused alarms",
            figures.refused,
            e.aggregation_refused,
        ),
    ];
    for (what, got, want) in exact {
        if want.is_some_and(|w| w != got) {
            c.violate(
                Rule::Expectation,
                None,
                format!("expected {} {what}, got {got}", want.unwrap_or_default()),
            );
        }
    }
    if level(0).sealed < e.min_sealed {
        c.violate(
            Rule::Expectation,
            None,
            format!(
                "expected at least {} sealed cases, got {}",
                e.min_sealed,
                level(0).sealed
            ),
        );
    }
    c.report.hierarchy = Some(figures);
}

/// Issue 14, `all_units_packed` / `all_cases_palletized`: a parent refused
/// for its label (rejected) leaves its children loose. A scanning level
/// names them (its fault-free reads not sealed, which the hierarchy rule
/// holds to one per label rejected), which go into `excused`; a counting
/// one does not (they were the next children committed), so the returned
/// number of loose children, a parent's count per label rejected, is
/// excused instead.
fn refused_for_label(
    h: &HierarchyInput,
    figures: &HierarchyFigures,
    unlabelled: &mut [(u64, HashSet<Serial>)],
    li: usize,
    excused: &mut HashSet<Serial>,
) -> usize {
    let (Some(level), Some(figs), Some(reads)) = (
        h.levels.get(li),
        figures.levels.get(li),
        unlabelled.get_mut(li),
    ) else {
        return 0;
    };
    let (_, children) = std::mem::take(reads);
    if !level.scans {
        return usize::try_from(figs.rejected * u64::from(level.per_parent)).unwrap_or(usize::MAX);
    }
    excused.extend(children);
    0
}

/// A parent sealed by the line, for rule (g).
struct Sealed {
    packed_ms: u64,
    partial: bool,
    parent: Serial,
}

/// A packer read's codes as sorted serials, or `None` if one was not read
/// or is not a code.
fn read_serials(r: &CaseRead) -> Option<Vec<Serial>> {
    let mut set = r
        .reported
        .iter()
        .map(|c| c.as_deref().and_then(serial_of))
        .collect::<Option<Vec<Serial>>>()?;
    set.sort();
    Some(set)
}
