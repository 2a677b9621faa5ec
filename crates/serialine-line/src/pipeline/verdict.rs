//! The deciding half: match print-completes and camera reads to sent units,
//! and make each unit's outcome durable.
//!
//! Matching rules (evidence first, position last):
//!
//! - A read whose content names a serial decides that serial's unit, if it
//!   is in flight, and nothing else.
//! - A read that names a serial not in flight (already decided, from an
//!   earlier job, another line's, never issued) raises its alarm and a
//!   counted reject signal for the pack in front of the camera, but decides
//!   no unit: a camera that triggers twice, a re-fed pack or a stray code
//!   cannot cascade into rejecting good units. The unit whose own code was
//!   never read ends by the read deadline as a no-read.
//! - Only content-free results (no-read, content that is not a code of the
//!   job's template) are matched to a unit without naming it: by the result's
//!   trigger id where the camera reports one and the marking device says how
//!   its ids relate to units ([`TriggerIds`]: the framed printer's message id,
//!   the laser's mark index); otherwise by position (the oldest unit in
//!   flight, the one in front of the camera). A trigger id that names no unit
//!   in flight decides nothing.

use super::{AlarmKind, DeviceState, LineReport, PipelineError, SentUnit, Shared, Verdict};
use serialine_core::code;
use serialine_core::{RejectReason, Serial, UnitState};
use serialine_devices::{CameraEvent, CameraRead, PrinterEvent, TriggerIds, UnitId};
use serialine_store::{StoreError, Transition};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{self, error::TryRecvError};

/// Most events folded into one durable verdict batch.
const MAX_VERDICT_BATCH: usize = 1024;

struct Unit {
    serial: Serial,
    reserved_at: Instant,
    sent_at: Instant,
    printed_at: Option<Instant>,
    read_at: Option<Instant>,
    /// The id a camera triggered by the marking device reports for this
    /// unit, reduced by [`TriggerIds::reduce`]; `None` until known.
    tag: Option<u64>,
}

impl Unit {
    /// The printer said so, or the camera saw it (the print-complete may
    /// still be on its way).
    fn was_printed(&self) -> bool {
        self.printed_at.is_some() || self.read_at.is_some()
    }
}

struct Verdicts {
    shared: Arc<Shared>,
    /// Units sent and not yet decided, oldest first.
    units: BTreeMap<UnitId, Unit>,
    by_serial: HashMap<Serial, UnitId>,
    pending: Vec<(UnitId, Unit, Verdict)>,
    report: LineReport,
    feeder_done: bool,
    garbage_lines: u64,
    unparsed_reads: u64,
    /// Reads of a GS1 element string from a symbol without FNC1.
    not_gs1_reads: u64,
    /// Percentiles are read from the histogram at most this often.
    quantiles_at: Instant,
    /// How camera trigger ids name units.
    trigger_ids: TriggerIds,
}

pub(crate) async fn run(
    shared: Arc<Shared>,
    mut printer: mpsc::Receiver<PrinterEvent>,
    mut camera: mpsc::Receiver<CameraEvent>,
    mut sent: mpsc::UnboundedReceiver<SentUnit>,
    trigger_ids: TriggerIds,
) -> Result<LineReport, PipelineError> {
    let deadline = shared.spec.read_deadline;
    let mut v = Verdicts {
        report: LineReport::new(&shared.spec.line_id),
        shared,
        units: BTreeMap::new(),
        by_serial: HashMap::new(),
        pending: Vec::new(),
        feeder_done: false,
        garbage_lines: 0,
        unparsed_reads: 0,
        not_gs1_reads: 0,
        quantiles_at: Instant::now(),
        trigger_ids,
    };
    let period = (deadline / 4).max(Duration::from_millis(5));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_tick = Instant::now();
    // Once the feeder is done, units still undecided this long after the last
    // event are voided: nothing more will come for them.
    let mut quiet_since = Instant::now();
    let (mut printer_open, mut camera_open) = (true, true);
    loop {
        v.shared.spec.heartbeat.beat();
        if v.feeder_done && v.units.is_empty() && v.pending.is_empty() {
            break;
        }
        tokio::select! {
            u = sent.recv(), if !v.feeder_done => match u {
                Some(u) => v.on_sent(u),
                None => v.feeder_done = true,
            },
            ev = printer.recv(), if printer_open => match ev {
                Some(ev) => { quiet_since = Instant::now(); v.on_printer(ev, &mut sent) }
                None => {
                    printer_open = false;
                    v.pull_sent(&mut sent);
                    // The driver ends once its request channel is closed and
                    // its buffer is empty: after the feeder's last code that
                    // is the normal end of a job (or of a requested stop),
                    // not a fault. Mid-job it is one.
                    if v.shared.feeding_done.load(Ordering::Acquire) {
                        tracing::debug!(line = %v.shared.spec.line_id, "printer driver stopped after the last code");
                    } else {
                        v.shared.alarm(AlarmKind::DeviceFault, "printer driver stopped", None);
                    }
                    v.shared.device_state(0, DeviceState::Stopped, Some("driver stopped".into()));
                }
            },
            ev = camera.recv(), if camera_open => match ev {
                Some(ev) => { quiet_since = Instant::now(); v.on_camera(ev, &mut sent) }
                None => {
                    camera_open = false;
                    v.pull_sent(&mut sent);
                    // Nothing left to read once feeding is over and every
                    // unit is decided; otherwise reads are lost: a fault.
                    if v.shared.feeding_done.load(Ordering::Acquire) && v.units.is_empty() {
                        tracing::debug!(line = %v.shared.spec.line_id, "camera driver stopped after the last read");
                    } else {
                        v.shared.alarm(AlarmKind::DeviceFault, "camera driver stopped", None);
                    }
                    v.shared.device_state(1, DeviceState::Stopped, Some("driver stopped".into()));
                }
            },
            _ = tick.tick() => {
                // A tick this late means the loop was not watching: the
                // process was stopped or starved, or a flush held the loop.
                // The devices went on, and their reads may still be on the
                // way in: that time does not count against a read deadline.
                let late = last_tick.elapsed().saturating_sub(period);
                last_tick = Instant::now();
                if late > period {
                    tracing::warn!(line = %v.shared.spec.line_id, late_ms = late.as_millis() as u64, "the verdict loop did not run for a while (stopped or starved process, slow flush); read deadlines extended by that time");
                    v.extend_deadlines(late);
                    quiet_since += late;
                }
                // What the devices delivered before this tick is evidence:
                // take it first, so a read that waited in the queue (behind
                // a slow flush, on a busy runtime) is never judged no-read,
                // nor its unit voided at job end. The queues are bounded.
                if v.take_queued(&mut printer, &mut camera, &mut sent, usize::MAX) {
                    quiet_since = Instant::now();
                }
                v.expire_reads(deadline);
                if v.feeder_done && quiet_since.elapsed() >= deadline * 2 {
                    v.void_remaining();
                }
            }
        }
        // Fold in everything already queued so one flush covers many units.
        if v.take_queued(&mut printer, &mut camera, &mut sent, MAX_VERDICT_BATCH) {
            quiet_since = Instant::now();
        }
        v.flush().await?;
    }
    Ok(v.report)
}

impl Verdicts {
    /// Handles printer and camera events already queued, alternately, at
    /// most `rounds` of each; whether there was any.
    fn take_queued(
        &mut self,
        printer: &mut mpsc::Receiver<PrinterEvent>,
        camera: &mut mpsc::Receiver<CameraEvent>,
        sent: &mut mpsc::UnboundedReceiver<SentUnit>,
        rounds: usize,
    ) -> bool {
        let mut took = false;
        for _ in 0..rounds {
            let mut any = false;
            if let Ok(ev) = printer.try_recv() {
                self.on_printer(ev, sent);
                any = true;
            }
            if let Ok(ev) = camera.try_recv() {
                self.on_camera(ev, sent);
                any = true;
            }
            if !any {
                break;
            }
            took = true;
        }
        took
    }

    fn on_sent(&mut self, u: SentUnit) {
        self.by_serial.insert(u.serial.clone(), u.unit);
        let tag = match self.trigger_ids {
            TriggerIds::UnitId { .. } => Some(self.trigger_ids.reduce(u.unit)),
            TriggerIds::MarkIndex { .. } | TriggerIds::Unknown => None,
        };
        self.units.insert(
            u.unit,
            Unit {
                serial: u.serial,
                reserved_at: u.reserved_at,
                sent_at: u.sent_at,
                printed_at: None,
                read_at: None,
                tag,
            },
        );
    }

    /// Takes every sent unit already announced: an event may name a unit the
    /// feeder announced a moment ago.
    fn pull_sent(&mut self, sent: &mut mpsc::UnboundedReceiver<SentUnit>) {
        loop {
            match sent.try_recv() {
                Ok(u) => self.on_sent(u),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    self.feeder_done = true;
                    break;
                }
            }
        }
    }

    fn decide(&mut self, unit: UnitId, verdict: Verdict) {
        if let Some(u) = self.units.remove(&unit) {
            self.by_serial.remove(&u.serial);
            self.pending.push((unit, u, verdict));
        }
    }

    fn on_printer(&mut self, ev: PrinterEvent, sent: &mut mpsc::UnboundedReceiver<SentUnit>) {
        self.pull_sent(sent);
        match ev {
            PrinterEvent::Accepted(_) => {}
            PrinterEvent::Printed(unit) => {
                if let Some(u) = self.units.get_mut(&unit) {
                    u.printed_at.get_or_insert_with(Instant::now);
                }
            }
            PrinterEvent::Marked { unit, index } => {
                let tag = self.trigger_ids.reduce(index);
                if let Some(u) = self.units.get_mut(&unit) {
                    u.printed_at.get_or_insert_with(Instant::now);
                    u.tag = Some(tag);
                }
            }
            PrinterEvent::Refused { unit, reason } => {
                let serial = self.units.get(&unit).map(|u| u.serial.clone());
                self.shared.alarm(
                    AlarmKind::DeviceFault,
                    format!("printer refused unit {unit}: {reason}"),
                    serial,
                );
                self.decide(unit, Verdict::Reject(RejectReason::DeviceFault));
            }
            PrinterEvent::Fault { reason, unknown } => {
                self.shared.alarm(
                    AlarmKind::DeviceFault,
                    format!(
                        "printer fault: {reason}; line paused; {} unit(s) of unknown fate stay Sent and are never resent",
                        unknown.len()
                    ),
                    None,
                );
                self.shared.ready.send_replace(false);
                self.shared.progress.send_modify(|p| p.paused = true);
                self.shared
                    .device_state(0, DeviceState::Faulted, Some(reason));
            }
            PrinterEvent::Ready => {
                if !*self.shared.ready.borrow() {
                    tracing::info!(line = %self.shared.spec.line_id, "printer ready again; line resumes");
                }
                self.shared.ready.send_replace(true);
                self.shared.progress.send_modify(|p| p.paused = false);
                self.shared.device_state(0, DeviceState::Ok, None);
            }
        }
    }

    fn oldest(&self) -> Option<UnitId> {
        self.units.keys().next().copied()
    }

    /// The unit a content-free result (no-read, unparseable) is about: by
    /// its trigger id where both the camera and the marking device give one,
    /// else the oldest unit in flight (the one in front of the camera).
    fn content_free_target(&self, trigger: Option<UnitId>) -> Option<UnitId> {
        match (self.trigger_ids, trigger) {
            (TriggerIds::Unknown, _) | (_, None) => self.oldest(),
            (ids, Some(t)) => {
                let t = ids.reduce(t);
                let found = self
                    .units
                    .iter()
                    .find(|(_, u)| u.tag == Some(t))
                    .map(|(id, _)| *id);
                if found.is_none() {
                    // A late or repeated result for a unit already decided:
                    // it names no unit in flight, so it decides none.
                    tracing::debug!(line = %self.shared.spec.line_id, trigger = t, "content-free camera result for no unit in flight");
                }
                found
            }
        }
    }

    fn on_camera(&mut self, ev: CameraEvent, sent: &mut mpsc::UnboundedReceiver<SentUnit>) {
        self.pull_sent(sent);
        match ev {
            CameraEvent::Read(read) => self.on_read(read),
            CameraEvent::Garbage { line, reason } => {
                self.garbage_lines += 1;
                // One alarm per burst, not one per line of noise.
                if self.garbage_lines == 1 || self.garbage_lines.is_multiple_of(100) {
                    self.shared.alarm(
                        AlarmKind::MalformedFrame,
                        format!(
                            "camera sent an unreadable line ({reason}): {:?} ({} so far)",
                            line.chars().take(80).collect::<String>(),
                            self.garbage_lines
                        ),
                        None,
                    );
                }
            }
            CameraEvent::Fault { reason } => {
                self.shared.alarm(
                    AlarmKind::DeviceFault,
                    format!("camera fault: {reason}"),
                    None,
                );
                self.shared
                    .device_state(1, DeviceState::Faulted, Some(reason));
            }
            CameraEvent::Ready => self.shared.device_state(1, DeviceState::Ok, None),
        }
    }

    fn on_read(&mut self, read: CameraRead) {
        let now = Instant::now();
        let job = &self.shared.spec.job;
        // Content-free results are matched by trigger id, else by position.
        let Some(content) = read.content else {
            if let Some(unit) = self.content_free_target(read.unit) {
                self.mark_read(unit, now);
                self.decide(unit, Verdict::Reject(RejectReason::NoRead));
            }
            return;
        };
        let parsed = code::parse(&job.template, &content);
        let data = match parsed {
            Ok(d) => d,
            Err(e @ code::CodeError::NotGs1Symbol { .. }) => {
                // The right data in a non-GS1 symbol: the printer sent no
                // FNC1, so the pack does not carry a GS1 DataMatrix. Reject
                // it, the unit its serial names if there is one, and say why.
                // One alarm per read, naming the serial (as duplicate-read
                // and foreign-code do): each rejects a unit, and an operator
                // (and the hil checker) must be able to tell which.
                self.not_gs1_reads += 1;
                let serial = code::parse_with_form(&job.template, &content)
                    .ok()
                    .map(|p| p.data.serial);
                self.shared.alarm(
                    AlarmKind::NotGs1Symbol,
                    format!(
                        "camera read a code that is not a GS1 symbol, unit rejected: {e} ({} so far)",
                        self.not_gs1_reads
                    ),
                    serial.clone(),
                );
                let by_serial = serial.and_then(|s| self.by_serial.get(&s).copied());
                if let Some(unit) = by_serial.or_else(|| self.content_free_target(read.unit)) {
                    self.mark_read(unit, now);
                    self.decide(unit, Verdict::Reject(RejectReason::Mismatch));
                }
                return;
            }
            Err(e) => {
                // Often a wrong template or another line's symbology: worth
                // an operator's look, once per burst rather than per unit.
                self.unparsed_reads += 1;
                if self.unparsed_reads == 1 || self.unparsed_reads.is_multiple_of(100) {
                    self.shared.alarm(
                        AlarmKind::MalformedFrame,
                        format!(
                            "camera read content that is not a code of this job's template ({e}): {:?} ({} so far)",
                            content.chars().take(80).collect::<String>(),
                            self.unparsed_reads
                        ),
                        None,
                    );
                }
                if let Some(unit) = self.content_free_target(read.unit) {
                    self.mark_read(unit, now);
                    self.decide(unit, Verdict::Reject(RejectReason::Mismatch));
                }
                return;
            }
        };
        if let Some(&unit) = self.by_serial.get(&data.serial) {
            let fields_match = data.gtin == job.gtin
                && data.lot.as_ref().is_none_or(|l| *l == job.lot)
                && data.expiry.is_none_or(|e| e == job.expiry);
            // A camera that does not grade passes every read it decodes.
            let graded_ok = read.grade.is_none_or(|g| g >= self.shared.spec.min_grade);
            let verdict = match (fields_match, graded_ok) {
                (false, _) => Verdict::Reject(RejectReason::Mismatch),
                (true, false) => Verdict::Reject(RejectReason::LowGrade),
                (true, true) => Verdict::Commit,
            };
            self.mark_read(unit, now);
            self.decide(unit, verdict);
            return;
        }
        // Not a unit in flight: a code already committed or decided (a camera
        // that triggered twice, a re-fed pack, an earlier job's), or one this
        // line never issued (another line's, a misread that still parses).
        // The pack in front of the camera does not carry a code in flight:
        // signal its rejection, but decide no unit, for this read is no
        // evidence about any unit in flight. The unit whose own code was not
        // read ends by the read deadline as a no-read.
        let state = self.shared.store.state_of(&data.serial);
        let (kind, what) = match state {
            Err(StoreError::NotIssued { .. }) => {
                (AlarmKind::ForeignCode, "a code never issued to this line")
            }
            Ok(UnitState::Committed | UnitState::Synced) => {
                (AlarmKind::DuplicateRead, "a code already committed")
            }
            // Given back upstream unused, never printed here: if a pack
            // carries it, another line printed it.
            Ok(UnitState::Returned) => (
                AlarmKind::ForeignCode,
                "a code this line returned upstream unused (never printed here)",
            ),
            _ => (AlarmKind::DuplicateRead, "a code already decided"),
        };
        match kind {
            AlarmKind::ForeignCode => self.report.foreign += 1,
            _ => self.report.duplicates += 1,
        }
        self.report.pack_rejects += 1;
        let trigger = read
            .unit
            .map_or_else(|| "none".to_string(), |t| t.to_string());
        self.shared.alarm(
            kind,
            format!(
                "camera read {what} ({}, trigger {trigger}); reject signal for the pack in front of the camera; no unit decided",
                data.serial
            ),
            Some(data.serial.clone()),
        );
        let (duplicates, foreign, pack_rejects) = (
            self.report.duplicates,
            self.report.foreign,
            self.report.pack_rejects,
        );
        self.shared.progress.send_modify(|p| {
            p.duplicates = duplicates;
            p.foreign = foreign;
            p.pack_rejects = pack_rejects;
        });
        // The reject signal itself, one log event each: the record an
        // operator (and the hil checker) counts.
        tracing::warn!(
            line = %self.shared.spec.line_id,
            reject_signal = kind.as_str(),
            read_serial = %data.serial,
            trigger = %trigger,
            "reject signal: pack in front of the camera"
        );
    }

    fn mark_read(&mut self, unit: UnitId, at: Instant) {
        if let Some(u) = self.units.get_mut(&unit) {
            u.read_at = Some(at);
        }
    }

    /// Printed units the camera has not read within the deadline: no-read.
    fn expire_reads(&mut self, deadline: Duration) {
        let expired: Vec<UnitId> = self
            .units
            .iter()
            .filter(|(_, u)| u.printed_at.is_some_and(|t| t.elapsed() >= deadline))
            .map(|(id, _)| *id)
            .collect();
        for unit in expired {
            self.decide(unit, Verdict::Reject(RejectReason::NoRead));
        }
    }

    /// Gives every printed unit `by` more time for its read.
    fn extend_deadlines(&mut self, by: Duration) {
        for u in self.units.values_mut() {
            if let Some(t) = u.printed_at.as_mut() {
                *t += by;
            }
        }
    }

    /// Job over and nothing more will come: undecided units are voided,
    /// decommissioned and reported, never resent.
    fn void_remaining(&mut self) {
        let left: Vec<UnitId> = self.units.keys().copied().collect();
        if !left.is_empty() {
            tracing::warn!(line = %self.shared.spec.line_id, units = left.len(), "voiding units without a verdict at job end");
        }
        for unit in left {
            self.decide(unit, Verdict::Void);
        }
    }

    async fn flush(&mut self) -> Result<(), PipelineError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        let mut ts = Vec::with_capacity(pending.len() * 2);
        for (_, u, verdict) in &pending {
            if u.was_printed() {
                ts.push(Transition::new(u.serial.clone(), UnitState::Printed));
            }
            ts.push(Transition::new(u.serial.clone(), verdict.state()));
        }
        let results = self.shared.store.apply(&ts).await;
        let done = Instant::now();
        let mut results = results.into_iter();
        for (_, u, verdict) in &pending {
            if u.was_printed() {
                let _ = results.next();
            }
            match results.next() {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(self.shared.store_err(e)),
                None => return Err(self.shared.store_err(StoreError::Closed)),
            }
            // Counted once durable, like the report (invariant 2).
            let m = &self.shared.instruments;
            match verdict {
                Verdict::Commit => {
                    self.report.committed += 1;
                    m.committed.increment(1);
                    if let Some(tx) = &self.shared.spec.committed_to {
                        let _ = tx.send(u.serial.clone());
                    }
                }
                Verdict::Reject(r) => {
                    self.report.count_reject(*r);
                    m.reject(*r);
                }
                Verdict::Void => {
                    self.report.voided += 1;
                    m.voided.increment(1);
                }
            }
            let sending = u.sent_at.duration_since(u.reserved_at);
            let deciding = u
                .read_at
                .map(|r| done.duration_since(r))
                .unwrap_or_default();
            let added = (sending + deciding).as_micros() as u64;
            let _ = self.report.added_latency_us.record(added.max(1));
            m.added_latency.record((sending + deciding).as_secs_f64());
        }
        self.shared.slots.add_permits(pending.len());
        let quantiles = if self.quantiles_at.elapsed() >= Duration::from_millis(200) {
            self.quantiles_at = Instant::now();
            Some((self.report.latency_us(0.5), self.report.latency_us(0.99)))
        } else {
            None
        };
        let r = &self.report;
        let (committed, rejected, voided, duplicates, foreign, pack_rejects) = (
            r.committed,
            r.rejected_total(),
            r.voided,
            r.duplicates,
            r.foreign,
            r.pack_rejects,
        );
        self.shared.progress.send_modify(|p| {
            p.committed = committed;
            p.rejected = rejected;
            p.voided = voided;
            p.duplicates = duplicates;
            p.foreign = foreign;
            p.pack_rejects = pack_rejects;
            if let Some((p50, p99)) = quantiles {
                p.latency_p50_us = p50;
                p.latency_p99_us = p99;
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! The matching rules on a real ledger: the verdict task is driven with
    //! hand-made printer and camera events.
    use super::*;
    use crate::pipeline::{Alarm, LineSpec, Progress};
    use serialine_core::code::{CodeData, Template};
    use serialine_core::{Expiry, Grade, Gtin, Job, Lot};
    use serialine_sim::issuer::Issuer;
    use serialine_store::{Store, StoreOptions};
    use std::sync::atomic::AtomicBool;
    use tokio::sync::{watch, Semaphore};

    const LINE: &str = "line-v";
    const SECRET: &[u8] = b"verdict unit test line secret, 32+ bytes";

    type EventTx = mpsc::Sender<PrinterEvent>;
    type CameraTx = mpsc::Sender<CameraEvent>;
    type VerdictTask = tokio::task::JoinHandle<Result<LineReport, PipelineError>>;

    struct Rig {
        _dir: tempfile::TempDir,
        store: Store,
        job: Job,
        serials: Vec<Serial>,
        /// A valid serial issued to another line.
        other_line: Serial,
        shared: Arc<Shared>,
        alarms: mpsc::UnboundedReceiver<Alarm>,
    }

    async fn rig(units: usize) -> Rig {
        let dir = tempfile::tempdir().expect("tempdir");
        let issuer = Issuer::new(b"verdict tests", 50);
        issuer.add_line(LINE, SECRET);
        issuer.add_line("line-other", b"another line's secret, 32+ bytes long");
        let (store, _) = Store::open(StoreOptions::new(dir.path().join("ledger"), LINE, SECRET))
            .expect("ledger opens");
        store
            .add_block(&issuer.issue(LINE).expect("block"))
            .await
            .expect("block accepted");
        let other = issuer.issue("line-other").expect("other block");
        let other_line = issuer
            .issued("line-other")
            .into_iter()
            .next()
            .expect("other line's serials");
        drop(other);
        let serials = store.reserve(units).expect("reserve");
        let ts: Vec<_> = serials
            .iter()
            .map(|s| Transition::new(s.clone(), UnitState::Sent))
            .collect();
        for r in store.apply(&ts).await {
            r.expect("Sent durable");
        }
        let job = Job::new(
            Gtin::parse("09506000134352").expect("gtin"),
            Lot::new("LOT-V").expect("lot"),
            Expiry::parse("271231").expect("expiry"),
            Template::Gs1DataMatrix,
            units as u64,
        )
        .expect("job");
        let (alarm_tx, alarms) = mpsc::unbounded_channel();
        let (progress, _) = watch::channel(Progress::default());
        let (ready, _) = watch::channel(true);
        let shared = Arc::new(Shared {
            spec: LineSpec {
                line_id: LINE.into(),
                job: job.clone(),
                min_grade: Grade::C,
                camera_window: 16,
                read_deadline: Duration::from_millis(300),
                starve_timeout: Duration::from_secs(5),
                heartbeat: Default::default(),
                job_number: None,
                committed_to: None,
            },
            store: store.clone(),
            alarms: alarm_tx,
            progress,
            slots: Arc::new(Semaphore::new(64)),
            ready,
            feeding_done: AtomicBool::new(false),
            instruments: crate::pipeline::instruments::Instruments::new(LINE),
        });
        Rig {
            _dir: dir,
            store,
            job,
            serials,
            other_line,
            shared,
            alarms,
        }
    }

    impl Rig {
        fn code(&self, serial: &Serial) -> String {
            code::render(
                &self.job.template,
                &CodeData::for_job(&self.job, serial.clone()),
            )
            .expect("renders")
        }

        /// Unit `i` (1-based) has serial `serials[i - 1]`.
        fn good(&self, i: usize) -> CameraEvent {
            self.read(Some(i as u64), Some(self.code(&self.serials[i - 1])))
        }

        fn read(&self, trigger: Option<u64>, content: Option<String>) -> CameraEvent {
            CameraEvent::Read(CameraRead {
                unit: trigger,
                content,
                grade: Some(Grade::A),
            })
        }

        /// Runs the verdict task over `printer` then `camera` events for
        /// every unit, with the feeder done; returns its report.
        /// Starts the verdict task with every unit sent and the feeder
        /// done; returns the printer and camera event senders and the task.
        fn start(&self, ids: TriggerIds) -> (EventTx, CameraTx, VerdictTask) {
            let (sent_tx, sent_rx) = mpsc::unbounded_channel();
            let now = Instant::now();
            for (i, s) in self.serials.iter().enumerate() {
                sent_tx
                    .send(SentUnit {
                        unit: i as u64 + 1,
                        serial: s.clone(),
                        reserved_at: now,
                        sent_at: now,
                    })
                    .expect("send");
            }
            drop(sent_tx);
            self.shared.feeding_done.store(true, Ordering::Release);
            let (ptx, prx) = mpsc::channel(1024);
            let (ctx, crx) = mpsc::channel(1024);
            let task = tokio::spawn(run(self.shared.clone(), prx, crx, sent_rx, ids));
            (ptx, ctx, task)
        }

        async fn run(
            &self,
            ids: TriggerIds,
            printer: Vec<PrinterEvent>,
            camera: Vec<CameraEvent>,
        ) -> LineReport {
            let (ptx, ctx, task) = self.start(ids);
            for ev in printer {
                ptx.send(ev).await.expect("printer event");
            }
            // Camera results only once every printer event is taken (each is
            // handled as it is received): the order a real line has.
            while ptx.capacity() < ptx.max_capacity() {
                tokio::task::yield_now().await;
            }
            for ev in camera {
                ctx.send(ev).await.expect("camera event");
            }
            let report = tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("verdict task ends")
                .expect("no panic")
                .expect("no error");
            drop((ptx, ctx));
            report
        }

        fn state(&self, i: usize) -> UnitState {
            self.store.state_of(&self.serials[i - 1]).expect("recorded")
        }

        fn alarm_kinds(&mut self) -> Vec<AlarmKind> {
            self.alarms_named().into_iter().map(|(k, _)| k).collect()
        }

        /// Every alarm raised so far, with the serial it names.
        fn alarms_named(&mut self) -> Vec<(AlarmKind, Option<Serial>)> {
            let mut out = Vec::new();
            while let Ok(a) = self.alarms.try_recv() {
                out.push((a.kind, a.serial));
            }
            out
        }
    }

    fn printed(n: usize) -> Vec<PrinterEvent> {
        (1..=n as u64).map(PrinterEvent::Printed).collect()
    }

    const FRAMED: TriggerIds = TriggerIds::UnitId {
        modulus: Some(10_000),
    };

    #[tokio::test]
    async fn a_code_from_a_symbol_without_fnc1_rejects_its_own_unit() {
        let mut r = rig(4).await;
        // Unit 3's code, read from a plain Data Matrix (]d1: the printer
        // sent no FNC1), arrives with no trigger id where unit 2's result
        // is expected: its serial names the unit to reject, not the position.
        let plain = format!("]d1{}", r.code(&r.serials[2]));
        let reads = vec![
            r.good(1),
            r.read(None, Some(plain)),
            r.good(2),
            r.read(Some(4), Some(format!("]d2{}", r.code(&r.serials[3])))),
        ];
        let report = r.run(TriggerIds::Unknown, printed(4), reads).await;
        assert_eq!(r.state(1), UnitState::Committed);
        assert_eq!(r.state(2), UnitState::Committed);
        assert_eq!(r.state(3), UnitState::Rejected(RejectReason::Mismatch));
        assert_eq!(r.state(4), UnitState::Committed);
        assert_eq!((report.committed, report.rejected_total()), (3, 1));
        // One alarm, naming the rejected unit's serial.
        let unit3 = r.serials[2].clone();
        assert_eq!(
            r.alarms_named(),
            vec![(AlarmKind::NotGs1Symbol, Some(unit3))]
        );
    }

    #[tokio::test]
    async fn a_repeated_read_touches_no_other_unit() {
        let mut r = rig(6).await;
        // The camera triggers twice on unit 2: its result line comes again.
        let mut reads = vec![r.good(1), r.good(2), r.good(2)];
        reads.extend((3..=6).map(|i| r.good(i)));
        let report = r.run(TriggerIds::Unknown, printed(6), reads).await;
        for i in 1..=6 {
            assert_eq!(r.state(i), UnitState::Committed, "unit {i}");
        }
        assert_eq!((report.committed, report.rejected_total()), (6, 0));
        assert_eq!((report.duplicates, report.pack_rejects), (1, 1));
        assert!(r.alarm_kinds().contains(&AlarmKind::DuplicateRead));
    }

    #[tokio::test]
    async fn a_foreign_or_earlier_code_never_decides_a_unit() {
        let mut r = rig(5).await;
        // Unit 2 shows another line's valid code instead of its own, unit 4
        // a code committed earlier (unit 1's): neither decides anything;
        // units 2 and 4 end by the read deadline as no-reads.
        let other = r.code(&r.other_line);
        let refed = r.code(&r.serials[0]);
        let reads = vec![
            r.good(1),
            r.read(Some(2), Some(other)),
            r.good(3),
            r.read(Some(4), Some(refed)),
            r.good(5),
        ];
        let report = r.run(FRAMED, printed(5), reads).await;
        for i in [1, 3, 5] {
            assert_eq!(r.state(i), UnitState::Committed, "unit {i}");
        }
        for i in [2, 4] {
            assert_eq!(
                r.state(i),
                UnitState::Rejected(RejectReason::NoRead),
                "unit {i}"
            );
        }
        assert_eq!(
            (report.foreign, report.duplicates, report.pack_rejects),
            (1, 1, 2)
        );
        let kinds = r.alarm_kinds();
        assert!(kinds.contains(&AlarmKind::ForeignCode), "{kinds:?}");
        assert!(kinds.contains(&AlarmKind::DuplicateRead), "{kinds:?}");
    }

    #[tokio::test]
    async fn a_code_returned_upstream_is_foreign_and_decides_nothing() {
        let mut r = rig(3).await;
        let req = serialine_store::ReturnRequest { gtin: None, job: 0 };
        let store = r.store.clone();
        let done = tokio::task::spawn_blocking(move || store.return_unused_blocking(&req))
            .await
            .expect("joined")
            .expect("returned");
        assert_eq!(done.serials, 50 - 3);
        let returned = r
            .store
            .records_since(0, |s| s == UnitState::Returned)
            .expect("records")
            .into_iter()
            .next()
            .expect("a returned serial")
            .0;
        let code = r.code(&returned);
        let reads = vec![r.good(1), r.read(Some(2), Some(code)), r.good(3)];
        let report = r.run(FRAMED, printed(3), reads).await;
        assert_eq!(r.state(2), UnitState::Rejected(RejectReason::NoRead));
        assert_eq!((report.foreign, report.duplicates), (1, 0));
        assert!(r.alarm_kinds().contains(&AlarmKind::ForeignCode));
    }

    #[tokio::test]
    async fn a_content_free_read_goes_to_its_trigger_id() {
        let r = rig(4).await;
        // Unit 3's no-read arrives first (and twice), unit 2's unparseable
        // read next: by trigger id they decide units 3 and 2, not the
        // oldest unit in flight, and the repeat decides nothing.
        let reads = vec![
            r.read(Some(3), None),
            r.read(Some(3), None),
            r.read(Some(2), Some("not a code".into())),
            r.good(1),
            r.good(4),
        ];
        let report = r.run(FRAMED, printed(4), reads).await;
        assert_eq!(r.state(1), UnitState::Committed);
        assert_eq!(r.state(2), UnitState::Rejected(RejectReason::Mismatch));
        assert_eq!(r.state(3), UnitState::Rejected(RejectReason::NoRead));
        assert_eq!(r.state(4), UnitState::Committed);
        assert_eq!(report.pack_rejects, 0);
    }

    #[tokio::test]
    async fn a_content_free_read_goes_to_its_mark_index() {
        let r = rig(3).await;
        // A laser reports mark indexes (16-bit counter); the camera numbers
        // its results with them, here across the wrap.
        let printer = vec![
            PrinterEvent::Marked {
                unit: 1,
                index: 65_535,
            },
            PrinterEvent::Marked { unit: 2, index: 0 },
            PrinterEvent::Marked { unit: 3, index: 1 },
        ];
        let reads = vec![r.read(Some(65_536), None), r.good(1), r.good(3)];
        r.run(TriggerIds::MarkIndex { modulus: 1 << 16 }, printer, reads)
            .await;
        assert_eq!(r.state(1), UnitState::Committed);
        assert_eq!(r.state(2), UnitState::Rejected(RejectReason::NoRead));
        assert_eq!(r.state(3), UnitState::Committed);
    }

    #[tokio::test]
    async fn without_trigger_ids_a_no_read_goes_to_the_oldest_unit() {
        let r = rig(2).await;
        let reads = vec![r.read(None, None), r.good(2)];
        r.run(FRAMED, printed(2), reads).await;
        assert_eq!(r.state(1), UnitState::Rejected(RejectReason::NoRead));
        assert_eq!(r.state(2), UnitState::Committed);
    }

    #[tokio::test]
    async fn drivers_ending_after_the_last_unit_raise_no_alarm() {
        let mut r = rig(2).await;
        let (sent_tx, sent_rx) = mpsc::unbounded_channel();
        let now = Instant::now();
        for (i, s) in r.serials.iter().enumerate() {
            sent_tx
                .send(SentUnit {
                    unit: i as u64 + 1,
                    serial: s.clone(),
                    reserved_at: now,
                    sent_at: now,
                })
                .expect("send");
        }
        let (ptx, prx) = mpsc::channel(16);
        let (ctx, crx) = mpsc::channel(16);
        let task = tokio::spawn(run(r.shared.clone(), prx, crx, sent_rx, FRAMED));
        for ev in printed(2) {
            ptx.send(ev).await.expect("printer event");
        }
        // The job's normal end: the feeder is done, its channels and then
        // the printer driver's close while units still await their reads
        // (the race issue 13 saw: the loop sees the printer close first).
        r.shared.feeding_done.store(true, Ordering::Release);
        drop(sent_tx);
        drop(ptx);
        // Give the loop the chance to see the closed printer channel before
        // the reads (ordering only; nothing is asserted about time).
        tokio::time::sleep(Duration::from_millis(50)).await;
        for ev in [r.good(1), r.good(2)] {
            ctx.send(ev).await.expect("camera event");
        }
        let report = tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("ends")
            .expect("no panic")
            .expect("no error");
        drop(ctx);
        assert_eq!(report.committed, 2);
        let kinds = r.alarm_kinds();
        assert!(!kinds.contains(&AlarmKind::DeviceFault), "{kinds:?}");
    }

    #[tokio::test]
    async fn a_printer_driver_dying_mid_job_is_a_fault() {
        let mut r = rig(2).await;
        let (sent_tx, sent_rx) = mpsc::unbounded_channel();
        let now = Instant::now();
        sent_tx
            .send(SentUnit {
                unit: 1,
                serial: r.serials[0].clone(),
                reserved_at: now,
                sent_at: now,
            })
            .expect("send");
        let (ptx, prx) = mpsc::channel(16);
        let (ctx, crx) = mpsc::channel(16);
        let task = tokio::spawn(run(r.shared.clone(), prx, crx, sent_rx, FRAMED));
        // The driver dies while the feeder is still feeding.
        drop(ptx);
        let deadline = Instant::now() + Duration::from_secs(30);
        let alarm = loop {
            if let Ok(a) = r.alarms.try_recv() {
                break a;
            }
            assert!(Instant::now() < deadline, "no alarm raised");
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        assert_eq!(alarm.kind, AlarmKind::DeviceFault);
        assert!(
            alarm.message.contains("printer driver stopped"),
            "{alarm:?}"
        );
        drop(sent_tx);
        ctx.send(r.good(1)).await.expect("camera event");
        let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
    }

    // --- a driven verdict task: events one at a time, the feeder open ---

    /// The verdict task of one job, with its three inputs kept open so a
    /// test can send events in any order and at any time.
    struct Drive {
        sent: Option<mpsc::UnboundedSender<SentUnit>>,
        printer: mpsc::Sender<PrinterEvent>,
        camera: mpsc::Sender<CameraEvent>,
        task: tokio::task::JoinHandle<Result<LineReport, PipelineError>>,
    }

    impl Rig {
        /// Starts the verdict task with units `units` sent (unit `i` has
        /// serial `serials[i - 1]`); the feeder stays open until
        /// [`Drive::feeding_done`].
        fn drive(&self, ids: TriggerIds, units: std::ops::RangeInclusive<usize>) -> Drive {
            let (sent_tx, sent_rx) = mpsc::unbounded_channel();
            let now = Instant::now();
            for i in units {
                sent_tx
                    .send(SentUnit {
                        unit: i as u64,
                        serial: self.serials[i - 1].clone(),
                        reserved_at: now,
                        sent_at: now,
                    })
                    .expect("send");
            }
            let (printer, prx) = mpsc::channel(1024);
            let (camera, crx) = mpsc::channel(1024);
            let task = tokio::spawn(run(self.shared.clone(), prx, crx, sent_rx, ids));
            Drive {
                sent: Some(sent_tx),
                printer,
                camera,
                task,
            }
        }

        /// Waits (up to 10 s) until unit `i` has left `Sent`.
        async fn decided(&self, i: usize) -> UnitState {
            let until = Instant::now() + Duration::from_secs(10);
            loop {
                let st = self.state(i);
                if st != UnitState::Sent {
                    return st;
                }
                assert!(Instant::now() < until, "unit {i} never decided");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }

        /// Waits (up to 10 s) for the next alarm.
        async fn next_alarm(&mut self) -> Alarm {
            tokio::time::timeout(Duration::from_secs(10), self.alarms.recv())
                .await
                .expect("an alarm within 10 s")
                .expect("alarm channel open")
        }
    }

    impl Drive {
        async fn printer(&self, ev: PrinterEvent) {
            self.printer.send(ev).await.expect("printer event");
        }

        async fn camera(&self, ev: CameraEvent) {
            self.camera.send(ev).await.expect("camera event");
        }

        /// The feeder's normal end: its last code is out, its channel closes.
        fn feeding_done(&mut self, shared: &Shared) {
            shared.feeding_done.store(true, Ordering::Release);
            self.sent = None;
        }

        /// Waits for the task to end by itself (every unit decided, the
        /// feeder done), the device channels still open.
        async fn end(self) -> LineReport {
            let Drive {
                sent,
                printer,
                camera,
                task,
            } = self;
            assert!(sent.is_none(), "end() before feeding_done()");
            let report = tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("verdict task ends")
                .expect("no panic")
                .expect("no error");
            drop((printer, camera));
            report
        }
    }

    fn rejected(report: &LineReport, reason: RejectReason) -> u64 {
        report.rejected.get(reason.as_str()).copied().unwrap_or(0)
    }

    #[tokio::test]
    async fn reads_in_order_commit_each_unit_and_raise_nothing() {
        let mut r = rig(5).await;
        let reads = (1..=5).map(|i| r.good(i)).collect();
        let report = r.run(FRAMED, printed(5), reads).await;
        for i in 1..=5 {
            assert_eq!(r.state(i), UnitState::Committed, "unit {i}");
        }
        assert_eq!((report.committed, report.rejected_total()), (5, 0));
        assert_eq!(
            (report.voided, report.duplicates, report.pack_rejects),
            (0, 0, 0)
        );
        assert_eq!(r.alarm_kinds(), []);
    }

    #[tokio::test]
    async fn reads_out_of_order_decide_the_unit_their_code_names() {
        let mut r = rig(5).await;
        // The content is the evidence: each read decides the unit whose
        // serial it carries, whatever its position or trigger id says (here
        // every trigger id names another unit in flight).
        let order = [3, 1, 5, 2, 4];
        let reads = order
            .iter()
            .zip(order.iter().rev())
            .map(|(&i, &wrong)| r.read(Some(wrong as u64), Some(r.code(&r.serials[i - 1]))))
            .collect();
        let report = r.run(FRAMED, printed(5), reads).await;
        for i in 1..=5 {
            assert_eq!(r.state(i), UnitState::Committed, "unit {i}");
        }
        assert_eq!((report.committed, report.pack_rejects), (5, 0));
        assert_eq!(r.alarm_kinds(), []);
    }

    #[tokio::test]
    async fn a_read_before_its_print_complete_commits_the_unit() {
        let r = rig(2).await;
        let mut d = r.drive(FRAMED, 1..=2);
        // The camera is faster than the printer's acknowledgment.
        d.camera(r.good(1)).await;
        assert_eq!(r.decided(1).await, UnitState::Committed);
        // The print-complete of a decided unit changes nothing.
        d.printer(PrinterEvent::Printed(1)).await;
        d.printer(PrinterEvent::Printed(2)).await;
        d.camera(r.good(2)).await;
        assert_eq!(r.decided(2).await, UnitState::Committed);
        d.feeding_done(&r.shared);
        let report = d.end().await;
        assert_eq!((report.committed, report.rejected_total()), (2, 0));
        assert_eq!(r.state(1), UnitState::Committed);
    }

    #[tokio::test]
    async fn a_printed_unit_never_read_is_a_no_read_at_its_deadline_not_before() {
        let r = rig(2).await;
        let deadline = r.shared.spec.read_deadline;
        let mut d = r.drive(FRAMED, 1..=2);
        let printed_at = Instant::now();
        d.printer(PrinterEvent::Printed(1)).await;
        d.printer(PrinterEvent::Printed(2)).await;
        d.camera(r.good(2)).await;
        assert_eq!(r.decided(2).await, UnitState::Committed);
        // Well inside the deadline unit 1 still awaits its read. (Printed
        // is stamped when the task takes the event, after `printed_at`, so
        // this holds however slow the machine.)
        tokio::time::sleep(deadline / 3).await;
        if printed_at.elapsed() < deadline {
            assert_eq!(r.state(1), UnitState::Sent);
        }
        assert_eq!(
            r.decided(1).await,
            UnitState::Rejected(RejectReason::NoRead)
        );
        assert!(
            printed_at.elapsed() >= deadline,
            "no-read before the deadline"
        );
        d.feeding_done(&r.shared);
        let report = d.end().await;
        assert_eq!(report.committed, 1);
        assert_eq!(rejected(&report, RejectReason::NoRead), 1);
        assert_eq!(report.voided, 0);
    }

    #[tokio::test]
    async fn a_read_after_the_deadline_decides_nothing_and_is_alarmed() {
        let mut r = rig(2).await;
        let mut d = r.drive(FRAMED, 1..=2);
        d.printer(PrinterEvent::Printed(1)).await;
        d.printer(PrinterEvent::Printed(2)).await;
        d.camera(r.good(2)).await;
        assert_eq!(
            r.decided(1).await,
            UnitState::Rejected(RejectReason::NoRead)
        );
        // Unit 1's own code, too late: the unit is decided, and a no-read
        // stays a no-read.
        d.camera(r.good(1)).await;
        let alarm = r.next_alarm().await;
        assert_eq!(alarm.kind, AlarmKind::DuplicateRead, "{alarm:?}");
        assert_eq!(alarm.serial.as_ref(), Some(&r.serials[0]));
        assert!(alarm.message.contains("already decided"), "{alarm:?}");
        d.feeding_done(&r.shared);
        let report = d.end().await;
        assert_eq!(r.state(1), UnitState::Rejected(RejectReason::NoRead));
        assert_eq!(report.committed, 1);
        assert_eq!(rejected(&report, RejectReason::NoRead), 1);
        assert_eq!((report.duplicates, report.pack_rejects), (1, 1));
    }

    #[tokio::test]
    async fn a_stop_voids_what_was_never_printed() {
        let mut r = rig(3).await;
        let deadline = r.shared.spec.read_deadline;
        let mut d = r.drive(FRAMED, 1..=3);
        d.printer(PrinterEvent::Printed(1)).await;
        d.printer(PrinterEvent::Printed(2)).await;
        d.camera(r.good(1)).await;
        // While the feeder feeds, a unit not yet printed waits however long
        // it takes: only a printed unit has a read deadline.
        tokio::time::sleep(deadline * 3).await;
        assert_eq!(r.state(3), UnitState::Sent);
        assert_eq!(r.state(2), UnitState::Rejected(RejectReason::NoRead));
        // Stop: the feeder ends. Unit 3 can no longer be printed; once the
        // devices are quiet it is voided, never resent.
        d.feeding_done(&r.shared);
        let report = d.end().await;
        assert_eq!(r.state(1), UnitState::Committed);
        assert_eq!(r.state(2), UnitState::Rejected(RejectReason::NoRead));
        assert_eq!(r.state(3), UnitState::Voided);
        assert_eq!(
            (report.committed, report.rejected_total(), report.voided),
            (1, 1, 1)
        );
        let kinds = r.alarm_kinds();
        assert!(!kinds.contains(&AlarmKind::DeviceFault), "{kinds:?}");
    }

    #[tokio::test]
    async fn a_stop_drains_the_results_still_on_their_way() {
        let mut r = rig(3).await;
        let mut d = r.drive(FRAMED, 1..=3);
        for ev in printed(3) {
            d.printer(ev).await;
        }
        d.camera(r.good(1)).await;
        // Stop right away: unit 3's read, already on its way, still decides
        // it; unit 2, never read, ends by its deadline. Nothing is voided.
        d.feeding_done(&r.shared);
        d.camera(r.good(3)).await;
        let report = d.end().await;
        assert_eq!(r.state(1), UnitState::Committed);
        assert_eq!(r.state(2), UnitState::Rejected(RejectReason::NoRead));
        assert_eq!(r.state(3), UnitState::Committed);
        assert_eq!((report.committed, report.voided), (2, 0));
        assert_eq!(rejected(&report, RejectReason::NoRead), 1);
        assert_eq!(r.alarm_kinds(), []);
    }

    #[tokio::test]
    async fn a_read_of_a_unit_voided_by_an_earlier_job_decides_nothing() {
        let mut r = rig(2).await;
        // Job 1: unit 1 is sent, never printed, and voided at the stop.
        let mut d = r.drive(FRAMED, 1..=1);
        d.feeding_done(&r.shared);
        let first = d.end().await;
        assert_eq!(first.voided, 1);
        assert_eq!(r.state(1), UnitState::Voided);
        // Job 2: the voided pack turns up in front of the camera anyway.
        let mut d = r.drive(FRAMED, 2..=2);
        d.printer(PrinterEvent::Printed(2)).await;
        let voided = r.code(&r.serials[0]);
        d.camera(r.read(Some(2), Some(voided))).await;
        let alarm = r.next_alarm().await;
        assert_eq!(alarm.kind, AlarmKind::DuplicateRead, "{alarm:?}");
        assert_eq!(alarm.serial.as_ref(), Some(&r.serials[0]));
        d.camera(r.good(2)).await;
        d.feeding_done(&r.shared);
        let second = d.end().await;
        assert_eq!(r.state(1), UnitState::Voided);
        assert_eq!(r.state(2), UnitState::Committed);
        assert_eq!((second.committed, second.voided), (1, 0));
        assert_eq!((second.duplicates, second.pack_rejects), (1, 1));
    }

    #[tokio::test]
    async fn a_second_read_of_a_rejected_unit_does_not_overturn_it() {
        let mut r = rig(2).await;
        // Unit 1 is read with a grade below the line's minimum, then again
        // with a good one: the first verdict stands.
        let poor = CameraEvent::Read(CameraRead {
            unit: Some(1),
            content: Some(r.code(&r.serials[0])),
            grade: Some(Grade::D),
        });
        let reads = vec![poor, r.good(1), r.good(2)];
        let report = r.run(FRAMED, printed(2), reads).await;
        assert_eq!(r.state(1), UnitState::Rejected(RejectReason::LowGrade));
        assert_eq!(r.state(2), UnitState::Committed);
        assert_eq!(rejected(&report, RejectReason::LowGrade), 1);
        assert_eq!((report.duplicates, report.pack_rejects), (1, 1));
        assert_eq!(r.alarm_kinds(), [AlarmKind::DuplicateRead]);
    }

    #[tokio::test]
    async fn a_read_of_a_committed_unit_is_counted_once_per_read() {
        let mut r = rig(3).await;
        // A pack that goes round twice more: each pass is one reject signal.
        let reads = vec![r.good(1), r.good(1), r.good(2), r.good(1), r.good(3)];
        let report = r.run(TriggerIds::Unknown, printed(3), reads).await;
        for i in 1..=3 {
            assert_eq!(r.state(i), UnitState::Committed, "unit {i}");
        }
        assert_eq!((report.committed, report.rejected_total()), (3, 0));
        assert_eq!((report.duplicates, report.pack_rejects), (2, 2));
        assert_eq!(
            r.alarm_kinds(),
            [AlarmKind::DuplicateRead, AlarmKind::DuplicateRead]
        );
    }

    #[tokio::test]
    async fn a_no_read_whose_trigger_id_names_no_unit_in_flight_decides_nothing() {
        let r = rig(2).await;
        // Trigger 99 was never sent; trigger 1 is repeated after unit 1 was
        // decided. Neither falls back to the oldest unit.
        let reads = vec![
            r.read(Some(99), None),
            r.good(1),
            r.read(Some(1), None),
            r.good(2),
        ];
        let report = r.run(FRAMED, printed(2), reads).await;
        assert_eq!(r.state(1), UnitState::Committed);
        assert_eq!(r.state(2), UnitState::Committed);
        assert_eq!((report.rejected_total(), report.pack_rejects), (0, 0));
    }

    #[tokio::test]
    async fn without_marking_device_ids_a_no_read_goes_by_position() {
        let r = rig(3).await;
        // The camera numbers its results, but the marking device does not
        // say how its ids relate to units: the number is no evidence, the
        // position is. Unit 2 was read first (out of order), so unit 1 is
        // the oldest in flight when the no-read "for 3" comes.
        let reads = vec![r.good(2), r.read(Some(3), None), r.good(3)];
        let report = r.run(TriggerIds::Unknown, printed(3), reads).await;
        assert_eq!(r.state(1), UnitState::Rejected(RejectReason::NoRead));
        assert_eq!(r.state(2), UnitState::Committed);
        assert_eq!(r.state(3), UnitState::Committed);
        assert_eq!(rejected(&report, RejectReason::NoRead), 1);
    }

    #[tokio::test]
    async fn an_unparseable_read_without_trigger_id_rejects_the_oldest_as_mismatch() {
        let mut r = rig(2).await;
        let reads = vec![r.read(None, Some("]d2garbage".into())), r.good(2)];
        let report = r.run(FRAMED, printed(2), reads).await;
        assert_eq!(r.state(1), UnitState::Rejected(RejectReason::Mismatch));
        assert_eq!(r.state(2), UnitState::Committed);
        assert_eq!(rejected(&report, RejectReason::Mismatch), 1);
        assert_eq!(r.alarm_kinds(), [AlarmKind::MalformedFrame]);
    }

    #[tokio::test]
    async fn each_decided_unit_frees_its_camera_window_slot_once_durable() {
        let r = rig(3).await;
        // The feeder holds one slot per unit between reservation and
        // verdict: take them all, as a full window would.
        let held = r
            .shared
            .slots
            .clone()
            .acquire_many_owned(64)
            .await
            .expect("slots");
        held.forget();
        let mut d = r.drive(FRAMED, 1..=3);
        // Unit 3 is not printed yet, so no read deadline can decide it
        // while the slots are counted, however slow the machine.
        for ev in printed(2) {
            d.printer(ev).await;
        }
        d.camera(r.good(2)).await;
        d.camera(r.good(1)).await;
        let until = Instant::now() + Duration::from_secs(10);
        while r.shared.slots.available_permits() < 2 {
            assert!(Instant::now() < until, "slots not returned");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // A slot comes back only after its verdict is in the ledger, and
        // the undecided unit keeps its own.
        assert_eq!(r.state(1), UnitState::Committed);
        assert_eq!(r.state(2), UnitState::Committed);
        assert_eq!(r.state(3), UnitState::Sent);
        assert_eq!(r.shared.slots.available_permits(), 2);
        d.printer(PrinterEvent::Printed(3)).await;
        d.camera(r.good(3)).await;
        d.feeding_done(&r.shared);
        let report = d.end().await;
        assert_eq!(report.committed, 3);
        assert_eq!(r.shared.slots.available_permits(), 3);
    }

    /// A read the camera delivered before its unit's read deadline is the
    /// unit's evidence, however late the verdict loop gets to it. The loop
    /// waits on each verdict batch's flush; a flush slower than the read
    /// deadline (a disk hiccup) left the next read queued and the timer
    /// due, and the loop picked between them at random: half the time it
    /// judged a unit whose read was waiting a no-read.
    #[tokio::test]
    async fn a_read_queued_before_the_deadline_decides_its_unit_however_late_it_is_handled() {
        const PAIRS: usize = 8;
        let r = rig(2 * PAIRS).await;
        let deadline = r.shared.spec.read_deadline;
        let (ptx, ctx, task) = r.start(FRAMED);
        let decided = |i: usize| {
            let serial = r.serials[i - 1].clone();
            let store = r.store.clone();
            async move {
                tokio::time::timeout(Duration::from_secs(10), async move {
                    while store.state_of(&serial).ok() == Some(UnitState::Sent) {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                })
                .await
                .expect("unit decided");
            }
        };
        for pair in 0..PAIRS {
            let (a, b) = (2 * pair + 1, 2 * pair + 2);
            for unit in [a, b] {
                ptx.send(PrinterEvent::Printed(unit as u64))
                    .await
                    .expect("printed");
            }
            while ptx.capacity() < ptx.max_capacity() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            // Unit a's verdict goes to a ledger whose flush takes longer
            // than the read deadline...
            r.store
                .stall_committer(deadline + Duration::from_millis(200));
            ctx.send(r.good(a)).await.expect("read a");
            tokio::time::sleep(Duration::from_millis(50)).await;
            // ...while unit b's read arrives, well in time.
            ctx.send(r.good(b)).await.expect("read b");
            decided(a).await;
            decided(b).await;
            for unit in [a, b] {
                assert_eq!(
                    r.state(unit),
                    UnitState::Committed,
                    "pair {pair}, unit {unit}: its read was queued before its deadline"
                );
            }
        }
        drop((ptx, ctx));
        let report = tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("verdict task ends")
            .expect("no panic")
            .expect("no error");
        assert_eq!(report.committed, 2 * PAIRS as u64);
    }
}
