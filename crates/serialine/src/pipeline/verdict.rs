//! The deciding half: match print-completes and camera reads to sent units,
//! and make each unit's outcome durable.
//!
//! Camera reads arrive in the order units pass the camera, which is the order
//! they were sent. A read whose content names a unit in flight decides that
//! unit; a no-read or an unusable read decides the oldest unit in flight (the
//! one in front of the camera).

use super::{AlarmKind, DeviceState, LineReport, PipelineError, SentUnit, Shared, Verdict};
use serialine_core::code;
use serialine_core::{RejectReason, Serial, UnitState};
use serialine_devices::{CameraEvent, CameraRead, PrinterEvent, UnitId};
use serialine_store::{StoreError, Transition};
use std::collections::{BTreeMap, HashMap};
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
    /// Percentiles are read from the histogram at most this often.
    quantiles_at: Instant,
}

pub(crate) async fn run(
    shared: Arc<Shared>,
    mut printer: mpsc::Receiver<PrinterEvent>,
    mut camera: mpsc::Receiver<CameraEvent>,
    mut sent: mpsc::UnboundedReceiver<SentUnit>,
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
        quantiles_at: Instant::now(),
    };
    let mut tick = tokio::time::interval((deadline / 4).max(Duration::from_millis(5)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
                    v.shared.alarm(AlarmKind::DeviceFault, "printer driver stopped", None);
                    v.shared.device_state(0, DeviceState::Stopped, Some("driver stopped".into()));
                }
            },
            ev = camera.recv(), if camera_open => match ev {
                Some(ev) => { quiet_since = Instant::now(); v.on_camera(ev, &mut sent) }
                None => {
                    camera_open = false;
                    v.shared.alarm(AlarmKind::DeviceFault, "camera driver stopped", None);
                    v.shared.device_state(1, DeviceState::Stopped, Some("driver stopped".into()));
                }
            },
            _ = tick.tick() => {
                v.expire_reads(deadline);
                if v.feeder_done && quiet_since.elapsed() >= deadline * 2 {
                    v.void_remaining();
                }
            }
        }
        // Fold in everything already queued so one flush covers many units.
        for _ in 0..MAX_VERDICT_BATCH {
            let mut any = false;
            if let Ok(ev) = printer.try_recv() {
                v.on_printer(ev, &mut sent);
                any = true;
            }
            if let Ok(ev) = camera.try_recv() {
                v.on_camera(ev, &mut sent);
                any = true;
            }
            if !any {
                break;
            }
        }
        v.flush().await?;
    }
    Ok(v.report)
}

impl Verdicts {
    fn on_sent(&mut self, u: SentUnit) {
        self.by_serial.insert(u.serial.clone(), u.unit);
        self.units.insert(
            u.unit,
            Unit {
                serial: u.serial,
                reserved_at: u.reserved_at,
                sent_at: u.sent_at,
                printed_at: None,
                read_at: None,
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
        // The camera's trigger id is the device's own counter (a printer's
        // wrapping message id, a laser's mark index), not our unit id; reads
        // arrive in line order, so the oldest unit in flight is the one read.
        let Some(content) = read.content else {
            if let Some(unit) = self.oldest() {
                self.mark_read(unit, now);
                self.decide(unit, Verdict::Reject(RejectReason::NoRead));
            }
            return;
        };
        let parsed = code::parse(&job.template, &content);
        let data = match parsed {
            Ok(d) => d,
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
                if let Some(unit) = self.oldest() {
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
        // Not a unit in flight: a code already committed (or decided earlier),
        // or one this line never issued. Either way the unit in front of the
        // camera does not carry its own code.
        let state = self.shared.store.lookup(&data.serial);
        let (kind, reason, what) = match state {
            Err(StoreError::NotIssued { .. }) => (
                AlarmKind::ForeignCode,
                RejectReason::Mismatch,
                "a code never issued to this line",
            ),
            Ok(UnitState::Committed | UnitState::Synced) => (
                AlarmKind::DuplicateRead,
                RejectReason::Duplicate,
                "a code already committed",
            ),
            _ => (
                AlarmKind::DuplicateRead,
                RejectReason::Duplicate,
                "a code already used on another unit",
            ),
        };
        match kind {
            AlarmKind::ForeignCode => self.report.foreign += 1,
            _ => self.report.duplicates += 1,
        }
        let victim = self.oldest();
        self.shared.alarm(
            kind,
            format!(
                "camera read {what} ({}); {}",
                data.serial,
                match victim {
                    Some(u) => format!("unit {u} rejected"),
                    None => "no unit in flight".into(),
                }
            ),
            Some(data.serial),
        );
        if let Some(unit) = victim {
            self.mark_read(unit, now);
            self.decide(unit, Verdict::Reject(reason));
        }
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
            match verdict {
                Verdict::Commit => self.report.committed += 1,
                Verdict::Reject(r) => self.report.count_reject(*r),
                Verdict::Void => self.report.voided += 1,
            }
            let sending = u.sent_at.duration_since(u.reserved_at);
            let deciding = u
                .read_at
                .map(|r| done.duration_since(r))
                .unwrap_or_default();
            let added = (sending + deciding).as_micros() as u64;
            let _ = self.report.added_latency_us.record(added.max(1));
        }
        self.shared.slots.add_permits(pending.len());
        let quantiles = if self.quantiles_at.elapsed() >= Duration::from_millis(200) {
            self.quantiles_at = Instant::now();
            Some((self.report.latency_us(0.5), self.report.latency_us(0.99)))
        } else {
            None
        };
        let r = &self.report;
        let (committed, rejected, voided, duplicates, foreign) = (
            r.committed,
            r.rejected_total(),
            r.voided,
            r.duplicates,
            r.foreign,
        );
        self.shared.progress.send_modify(|p| {
            p.committed = committed;
            p.rejected = rejected;
            p.voided = voided;
            p.duplicates = duplicates;
            p.foreign = foreign;
            if let Some((p50, p99)) = quantiles {
                p.latency_p50_us = p50;
                p.latency_p99_us = p99;
            }
        });
        Ok(())
    }
}
