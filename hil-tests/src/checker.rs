//! The invariant checker: run after the daemon has stopped, over
//!
//! - the line's sled ledger (opened with the line secret),
//! - the printer simulator's byte recording (every frame the daemon sent),
//! - the camera simulator's log (what it reported for each unit),
//! - the upstream consumer's events,
//! - the issuer's record of the serials it issued to the line,
//! - the daemon's JSON logs (every alarm the pipeline raises is logged with
//!   its kind and serial, also while the broker is unreachable, so the logs
//!   are the alarm record; the MQTT alarm count is only reported).
//!
//! Each violation names the scenario, the seed, the invariant and the serial.

use crate::scenario::{Expect, StopWhen};
use serde_json::Value;
use serialine_core::code::{self, Template};
use serialine_core::{Serial, UnitState};
use serialine_devices::printer::{FrameDecoder, FramedProfile, Token};
use serialine_sim::camera::{Reported, Verdict};
use serialine_sim::recording::{Direction, Recording};
use serialine_sim::upstream::LineEvents;
use serialine_store::{event_id, Lookup, Store};
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
    /// DESIGN invariant 1..=6.
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
    /// Duplicate/foreign reports excused from the alarm check (near a kill).
    pub alarms_excused: usize,
    /// Reject signals for the pack in front of the camera the daemon
    /// logged, by kind (`duplicate-read`, `foreign-code`).
    pub reject_signals: HashMap<String, usize>,
    pub device_fault_alarms: usize,
    /// Printed codes per GTIN (14 digits).
    pub printed_per_gtin: std::collections::BTreeMap<String, usize>,
}

struct Checker<'a> {
    input: &'a CheckInput,
    report: Report,
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
    codes
}

/// (kind, serial) of every alarm the pipeline logged.
fn logged_alarms(logs: &[String]) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    for log in logs {
        for line in log.lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let fields = v.get("fields").unwrap_or(&v);
            let Some(kind) = fields.get("kind").and_then(Value::as_str) else {
                continue;
            };
            // `serial = ?Option<String>`: `Some("X")` or `None`.
            let serial = fields.get("serial").and_then(Value::as_str).and_then(|s| {
                s.strip_prefix("Some(\"")
                    .and_then(|s| s.strip_suffix("\")"))
                    .map(str::to_string)
            });
            out.push((kind.to_string(), serial));
        }
    }
    out
}

/// The kind of every reject signal the pipeline logged (`reject_signal`
/// field: one log event per pack the daemon asked to reject).
fn logged_reject_signals(logs: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for log in logs {
        for line in log.lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let fields = v.get("fields").unwrap_or(&v);
            if let Some(kind) = fields.get("reject_signal").and_then(Value::as_str) {
                out.push(kind.to_string());
            }
        }
    }
    out
}

/// Runs every check.
pub fn check(input: &CheckInput) -> Report {
    let mut c = Checker {
        input,
        report: Report::default(),
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
            |e| matches!(e.record(serial), Ok(Lookup::Recorded(r)) if r.state.has_left_pool()),
        );
        match store.record(serial) {
            Ok(Lookup::Recorded(r)) if r.state.has_left_pool() => {}
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
        match rec.state {
            UnitState::Committed | UnitState::Synced => {
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
            UnitState::Sent | UnitState::Printed if input.mid_job => {}
            other => c.violate(
                Rule::Invariant(4),
                Some(s),
                format!("left in state {other} after the run ended"),
            ),
        }
        if rec.state.is_reportable() || rec.state == UnitState::Synced {
            reportable += 1;
            let as_event = if rec.state == UnitState::Synced {
                UnitState::Committed
            } else {
                rec.state
            };
            let id = hex::encode(event_id(&input.line, serial, as_event));
            expected_ids.insert(id, (serial.clone(), as_event.name()));
        }
    }
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
            if rec.state.is_reportable() || rec.state == UnitState::Synced {
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
        *per_serial.entry(serial.as_str()).or_default() += 1;
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
    let mut own_read: HashMap<&str, Verdict> = HashMap::new();
    for r in &input.camera_log {
        own_read.entry(r.printed.as_str()).or_insert(r.verdict);
    }
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
        let near_kill = input
            .camera_kill_marks
            .iter()
            .any(|&m| i < m && i + input.alarm_tolerance >= m);
        let own_undecided = matches!(r.verdict, Verdict::Duplicate | Verdict::DoubleTrigger)
            && r.content
                .as_deref()
                .and_then(|c| own_read.get(c))
                .is_some_and(|v| !matches!(v, Verdict::Good | Verdict::LowGrade));
        if near_kill || own_undecided {
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

    // The job and the scenario's expectations.
    let counts = store.counts();
    let committed = counts.committed + counts.synced;
    let decided = if input.earlier.is_empty() {
        committed + counts.rejected + counts.voided
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
                input.units, counts.rejected, counts.voided
            ),
        );
    }
    let mins = [
        ("committed units", committed, e.min_committed),
        ("rejected units", counts.rejected, e.min_rejected),
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
    ];
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
    c.report
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
        let block = match store.record(&data.serial) {
            Ok(Lookup::Recorded(r)) => r.block_id,
            Ok(Lookup::Available { block_id }) => block_id,
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
