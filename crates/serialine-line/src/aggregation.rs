//! The packaging hierarchy on the line (issue 14): each level (cases, then
//! pallets) closes parents around the children the level below made.
//!
//! ```text
//! children ──► candidate parent ──► checked ──► label reserved, Sent durable
//!   (scan: the aggregation camera's multi-code read of an open case;
//!    count: the next N children committed below)
//!          ──► label printed ──► label scanned and graded
//!          ──► one batch: label Committed + children packed (`seal_parent`)
//! ```
//!
//! What it decides on, and never on position or assumption:
//! - a scan names the children by their codes; every code must be read,
//!   parse as the level's child product, and be a child the ledger accepts
//!   (committed, of this job, in no parent, not sampled or decommissioned)
//!   before a label is spent on it. Otherwise the case is refused, with each
//!   offending code and why, an `aggregation-refused` alarm, and nothing
//!   changes: the case goes to rework, its units stay loose;
//! - a case read short of its count is the job's last case (closed as
//!   partial) only if no other read follows it before the level ends;
//!   followed by one, it is refused (a unit is missing);
//! - the parent code comes from a block sealed for the level's own product,
//!   is durable (`Sent`) before its label is printed, and is committed only
//!   with its children, in one batch, once its scanner read it back at the
//!   minimum grade. A label not printed, not read or read low is rejected
//!   (its serial is never used again) and the case refused. A crash
//!   anywhere leaves the label in flight: voided at the next start, never
//!   printed again; its children stay loose.
//!
//! A level handles one parent at a time, so a label's scan can only be that
//! label's.

use crate::pipeline::{Alarm, AlarmKind};
use serialine_core::code::{self, CodeData};
use serialine_core::{Grade, Gtin, Job, RejectReason, Serial, Template, UnitState};
use serialine_devices::{CameraEvent, CameraHandle, PrintRequest, PrinterEvent, PrinterHandle};
use serialine_store::{Store, StoreError, Transition};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// How a level finds the children of its next parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggregationMode {
    /// An aggregation camera reads every code in the open case at once.
    Scan,
    /// The next `per_parent` children committed below, in order.
    Count,
}

/// One level of the hierarchy a line builds (cases, then pallets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LevelPlan {
    /// What its parents are called in logs and alarms ("case", "pallet").
    pub name: String,
    /// The parents' product: labels are serials of blocks sealed for it.
    pub gtin: Gtin,
    /// Children in a full parent.
    pub per_parent: u32,
    pub mode: AggregationMode,
    /// Longest a label may take from its code to its scan (printing
    /// included); later, the label is a no-read.
    pub label_deadline: Duration,
    /// Once the level below is done: how long a last (partial) read may
    /// still take to come (scan mode).
    pub close_wait: Duration,
    /// Longest a parent waits for a label serial (its product's blocks)
    /// before it is refused.
    pub label_wait: Duration,
}

/// The devices of one level.
pub struct LevelDevices {
    /// Prints the parents' labels (the ZPL label printer).
    pub label: PrinterHandle,
    /// Reads each label back and grades it.
    pub scanner: CameraHandle,
    /// The aggregation camera (scan mode): one result per case, its
    /// content the codes read, separated by TAB ([`CODE_SEPARATOR`]), a
    /// code not read as `NOREAD`.
    pub camera: Option<CameraHandle>,
    /// How the daemon describes them (label printer, scanner, camera).
    pub names: Vec<String>,
}

/// Between the codes of one multi-code read.
pub const CODE_SEPARATOR: char = '\t';

/// What one level did in a job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LevelReport {
    pub name: String,
    /// Parents committed with their children.
    pub sealed: u64,
    /// Of them, closed with fewer than a full count (the job's end).
    pub partial: u64,
    /// Parents refused (a code not read, foreign, unfit, short; a label
    /// not verified): their children stay loose, for rework.
    pub refused: u64,
    /// Labels printed (or sent) but not verified: rejected, never reused.
    pub labels_rejected: u64,
}

/// What a level's task shares with the line.
pub(crate) struct LevelContext {
    pub line: String,
    pub job: Job,
    pub job_number: u32,
    pub store: Store,
    pub min_grade: Grade,
    pub alarms: mpsc::UnboundedSender<Alarm>,
}

/// Where a level's children come from.
pub(crate) enum Children {
    /// Count mode: each child once committed below (a unit once its
    /// verdict is durable, a case once sealed), and when the level below
    /// is done.
    Committed {
        rx: mpsc::UnboundedReceiver<Serial>,
        below_done: watch::Receiver<bool>,
    },
    /// Scan mode: the aggregation camera, and when the level below is done.
    Scanned {
        camera: CameraHandle,
        below_done: watch::Receiver<bool>,
    },
}

/// Why a parent was refused.
struct Refusal {
    why: String,
    offending: Vec<(String, String)>,
}

impl Refusal {
    fn plain(why: impl Into<String>) -> Self {
        Refusal {
            why: why.into(),
            offending: Vec::new(),
        }
    }
}

struct Level {
    ctx: LevelContext,
    plan: LevelPlan,
    /// The children's product and code template.
    child_gtin: Gtin,
    child_template: Template,
    label: PrinterHandle,
    scanner: CameraHandle,
    sealed_to: Option<mpsc::UnboundedSender<Serial>>,
    report: LevelReport,
    /// `serialine_parents_total` by outcome: sealed, partial, refused,
    /// label-rejected.
    counters: [metrics::Counter; 4],
    /// Label printer request ids.
    next_label: u64,
    /// A low-label-stock alarm was raised and not yet cleared.
    starving: bool,
    /// The label printer's last word: `Ready` (or connected at spawn), or
    /// a `Fault` not yet cleared. No label serial is spent while it is down.
    label_ready: bool,
}

/// Runs one level until the level below is done and its last parent is
/// closed. Each sealed parent goes to `sealed_to` (the next level's count).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run_level(
    ctx: LevelContext,
    plan: LevelPlan,
    devices: LevelDevices,
    children: Children,
    child_gtin: Gtin,
    child_template: Template,
    sealed_to: Option<mpsc::UnboundedSender<Serial>>,
) -> LevelReport {
    let report = LevelReport {
        name: plan.name.clone(),
        ..LevelReport::default()
    };
    let counters = ["sealed", "partial", "refused", "label-rejected"].map(|outcome| {
        metrics::counter!(
            crate::prometheus::names::PARENTS,
            "line" => ctx.line.clone(),
            "level" => plan.name.clone(),
            "outcome" => outcome
        )
    });
    let mut level = Level {
        counters,
        ctx,
        plan,
        child_gtin,
        child_template,
        label: devices.label,
        scanner: devices.scanner,
        sealed_to,
        report,
        next_label: 1,
        starving: false,
        label_ready: true,
    };
    match children {
        Children::Committed { rx, below_done } => level.count(rx, below_done).await,
        Children::Scanned { camera, below_done } => level.scan(camera, below_done).await,
    }
    tracing::info!(
        line = %level.ctx.line,
        packaging = %level.plan.name,
        sealed = level.report.sealed,
        partial = level.report.partial,
        refused = level.report.refused,
        labels_rejected = level.report.labels_rejected,
        "aggregation level done"
    );
    level.report
}

impl Level {
    fn alarm(&self, kind: AlarmKind, message: String, serial: Option<Serial>) {
        tracing::warn!(
            line = %self.ctx.line,
            packaging = %self.plan.name,
            kind = kind.as_str(),
            serial = serial.as_ref().map(|s| s.as_str()),
            "{message}"
        );
        let _ = self.ctx.alarms.send(Alarm {
            line: self.ctx.line.clone(),
            kind,
            message,
            serial,
        });
    }

    /// Count mode: every `per_parent` children committed below make a
    /// parent; what is left when the level below is done, a partial one.
    async fn count(
        &mut self,
        mut rx: mpsc::UnboundedReceiver<Serial>,
        mut below_done: watch::Receiver<bool>,
    ) {
        let full = self.plan.per_parent.max(1) as usize;
        let mut open: Vec<Serial> = Vec::with_capacity(full);
        let mut counted = 0u64;
        let mut done = *below_done.borrow();
        loop {
            let child = if done {
                // Below is done: what it sent before is all there is.
                match rx.try_recv() {
                    Ok(c) => c,
                    Err(_) => break,
                }
            } else {
                tokio::select! {
                    c = rx.recv() => match c {
                        Some(c) => c,
                        None => break,
                    },
                    r = below_done.changed() => {
                        done = r.is_err() || *below_done.borrow();
                        continue;
                    }
                }
            };
            open.push(child);
            if open.len() >= full {
                counted += 1;
                let what = format!("{} {counted} (count)", self.plan.name);
                let children = std::mem::take(&mut open);
                self.close(what, children).await;
            }
        }
        if !open.is_empty() {
            counted += 1;
            let what = format!("{} {counted} (count, the job's last)", self.plan.name);
            self.close(what, open).await;
        }
    }

    /// Scan mode: one parent per multi-code read, until the level below
    /// is done and no read came for `close_wait`.
    async fn scan(&mut self, mut camera: CameraHandle, mut below_done: watch::Receiver<bool>) {
        let mut quiet_until: Option<Instant> = below_done
            .borrow()
            .then(|| Instant::now() + self.plan.close_wait);
        let full = self.plan.per_parent.max(1) as usize;
        // A short read is the job's last case only if no read follows it
        // before the level ends: held until then. Neither the line's
        // progress nor the level below's says so: reads queue while a
        // label prints, and a station may read a short pallet before the
        // job's last case reaches it; only a read after it does.
        let mut held: Option<(String, Vec<Serial>)> = None;
        loop {
            let wait = quiet_until.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                ev = camera.events.recv() => match ev {
                    None => break,
                    Some(CameraEvent::Read(read)) => {
                        self.refuse_held(held.take());
                        let codes = split_codes(read.content.as_deref());
                        if let Some((what, children)) = self.scanned(read.unit, codes) {
                            if children.len() < full {
                                held = Some((what, children));
                            } else {
                                self.close(what, children).await;
                            }
                        }
                        if quiet_until.is_some() {
                            quiet_until = Some(Instant::now() + self.plan.close_wait);
                        }
                    }
                    Some(CameraEvent::Garbage { line, reason }) => {
                        self.refuse_held(held.take());
                        let what = format!("{} read", self.plan.name);
                        self.refuse(&what, Refusal::plain(format!("not understood ({reason}): {line:?}")));
                    }
                    Some(CameraEvent::Fault { reason }) => {
                        self.alarm(
                            AlarmKind::DeviceFault,
                            format!("{} aggregation camera: {reason}", self.plan.name),
                            None,
                        );
                    }
                    Some(CameraEvent::Ready) => {}
                },
                r = below_done.changed(), if quiet_until.is_none() => {
                    if r.is_err() || *below_done.borrow() {
                        quiet_until = Some(Instant::now() + self.plan.close_wait);
                    }
                }
                _ = tokio::time::sleep_until(wait), if quiet_until.is_some() => break,
            }
        }
        // No read came after it: the job's last case, partial.
        if let Some((what, children)) = held {
            self.close(what, children).await;
        }
    }

    /// A short read another read followed: not the job's last case.
    fn refuse_held(&mut self, held: Option<(String, Vec<Serial>)>) {
        if let Some((what, children)) = held {
            let why = format!(
                "{} codes of {}: a unit is missing (another case was read after it)",
                children.len(),
                self.plan.per_parent
            );
            self.refuse(&what, Refusal::plain(why));
        }
    }

    /// A multi-code read: every code must be read and be a code of the
    /// level's child product before the ledger is even asked. Returns what
    /// the read is called and its children, or refuses it.
    fn scanned(
        &mut self,
        trigger: Option<u64>,
        codes: Vec<Option<String>>,
    ) -> Option<(String, Vec<Serial>)> {
        let what = match trigger {
            Some(t) => format!("{} read {t}", self.plan.name),
            None => format!("{} read", self.plan.name),
        };
        let mut children = Vec::with_capacity(codes.len());
        let mut offending = Vec::new();
        for (i, c) in codes.iter().enumerate() {
            match c {
                None => offending.push((format!("code {}", i + 1), "not read".to_string())),
                Some(text) => match code::parse(&self.child_template, text) {
                    Ok(d) if d.gtin == self.child_gtin => children.push(d.serial),
                    Ok(d) => offending.push((
                        text.clone(),
                        format!(
                            "foreign: a code of GTIN {}, not {}",
                            d.gtin, self.child_gtin
                        ),
                    )),
                    Err(e) => offending.push((text.clone(), format!("not a code: {e}"))),
                },
            }
        }
        if codes.is_empty() {
            self.refuse(&what, Refusal::plain("no code read"));
            return None;
        }
        if !offending.is_empty() {
            let why = format!("{} of {} codes unusable", offending.len(), codes.len());
            self.refuse(&what, Refusal { why, offending });
            return None;
        }
        Some((what, children))
    }

    /// Closes one parent around `children`, or refuses it.
    async fn close(&mut self, what: String, children: Vec<Serial>) {
        match self.try_close(&children).await {
            Ok((label, partial)) => {
                self.report.sealed += 1;
                self.report.partial += u64::from(partial);
                self.counters[0].increment(1);
                if partial {
                    self.counters[1].increment(1);
                }
                tracing::info!(
                    line = %self.ctx.line,
                    packaging = %self.plan.name,
                    parent = %label,
                    children = children.len(),
                    partial,
                    "{what}: sealed"
                );
                if let Some(tx) = &self.sealed_to {
                    let _ = tx.send(label);
                }
            }
            Err(r) => self.refuse(&what, r),
        }
    }

    fn refuse(&mut self, what: &str, r: Refusal) {
        self.report.refused += 1;
        self.counters[2].increment(1);
        let named: Vec<String> = r
            .offending
            .iter()
            .take(20)
            .map(|(code, why)| format!("{code} ({why})"))
            .collect();
        let more = r.offending.len().saturating_sub(named.len());
        let mut message = format!("{what} refused: {}", r.why);
        if !named.is_empty() {
            message.push_str(": ");
            message.push_str(&named.join(", "));
            if more > 0 {
                message.push_str(&format!(" and {more} more"));
            }
        }
        message.push_str(&format!(
            "; nothing packed, the {} goes to rework",
            self.plan.name
        ));
        self.alarm(AlarmKind::AggregationRefused, message, None);
    }

    /// Everything checked, then the label: returns it and whether the
    /// parent is partial.
    async fn try_close(&mut self, children: &[Serial]) -> Result<(Serial, bool), Refusal> {
        let full = self.plan.per_parent.max(1) as usize;
        if children.len() > full {
            return Err(Refusal::plain(format!(
                "{} codes, a full {} holds {full}",
                children.len(),
                self.plan.name
            )));
        }
        self.await_verdicts(children).await;
        let unfit = self
            .ctx
            .store
            .unfit_children(self.ctx.job_number, children)
            .map_err(|e| Refusal::plain(format!("ledger: {e}")))?;
        if !unfit.is_empty() {
            return Err(Refusal {
                why: format!("{} of {} children unfit", unfit.len(), children.len()),
                offending: unfit
                    .into_iter()
                    .map(|(s, why)| (s.to_string(), why))
                    .collect(),
            });
        }
        self.label_printer_ready().await?;
        let label = self.reserve_label().await?;
        let data = CodeData {
            gtin: self.plan.gtin,
            expiry: Some(self.ctx.job.expiry),
            lot: Some(self.ctx.job.lot.clone()),
            serial: label.clone(),
        };
        let text = match code::render(&Template::Gs1DataMatrix, &data) {
            Ok(t) => t,
            Err(e) => {
                // Never sent: back to the pool's end, alarmed.
                self.ctx.store.release_to_back(std::slice::from_ref(&label));
                return Err(Refusal::plain(format!(
                    "label serial {label} cannot be rendered: {e}"
                )));
            }
        };
        // Durable before the label is printed: a crash from here on voids
        // it at the next start, and it is never printed again.
        let sent = Transition::in_job(label.clone(), UnitState::Sent, Some(self.ctx.job_number));
        if let Some(Err(e)) = self.ctx.store.apply(&[sent]).await.into_iter().next() {
            return Err(Refusal::plain(format!("label {label} not recorded: {e}")));
        }
        if let Err(reason) = self.print_and_verify(&label, &text).await {
            self.report.labels_rejected += 1;
            self.counters[3].increment(1);
            let to = UnitState::Rejected(reason.0);
            if let Some(Err(e)) = self
                .ctx
                .store
                .apply(&[Transition::new(label.clone(), to)])
                .await
                .into_iter()
                .next()
            {
                tracing::error!(line = %self.ctx.line, %label, "recording the label's rejection: {e}; it is voided at the next start");
            }
            return Err(Refusal::plain(format!("label {label}: {}", reason.1)));
        }
        let expected = self.plan.per_parent;
        match self.ctx.store.seal_parent(&label, children, expected).await {
            Ok(_) => Ok((label, children.len() < full)),
            Err(e) => {
                // Something changed between the check and the seal (a unit
                // sampled meanwhile): the label is used up, the case reworked.
                self.report.labels_rejected += 1;
                self.counters[3].increment(1);
                let voided = Transition::new(label.clone(), UnitState::Voided);
                let _ = self.ctx.store.apply(&[voided]).await;
                Err(match e {
                    StoreError::HierarchyRefused { why, offending, .. } => Refusal {
                        why,
                        offending: offending
                            .into_iter()
                            .map(|(s, w)| (s.to_string(), w))
                            .collect(),
                    },
                    other => Refusal::plain(format!("ledger: {other}")),
                })
            }
        }
    }

    /// Children read before their own verdict is durable (the aggregation
    /// camera can be quicker than the ledger): wait for their verdicts, at
    /// most a label deadline; the ledger's check then says what they are.
    async fn await_verdicts(&self, children: &[Serial]) {
        let end = Instant::now() + self.plan.label_deadline;
        loop {
            let in_flight = children
                .iter()
                .any(|c| self.ctx.store.state_of(c).is_ok_and(|s| s.is_in_flight()));
            if !in_flight || Instant::now() >= end {
                return;
            }
            // A verdict batch takes a flush: a few milliseconds.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Waits, at most `label_wait`, until the label printer is ready: a
    /// label sent to a printer that is down would wait in its driver and
    /// print after the case was given up.
    async fn label_printer_ready(&mut self) -> Result<(), Refusal> {
        // What the printer said since the last label.
        while let Ok(ev) = self.label.events.try_recv() {
            self.note_label_event(&ev);
        }
        let end = Instant::now() + self.plan.label_wait;
        while !self.label_ready {
            let ev = tokio::select! {
                ev = self.label.events.recv() => ev,
                _ = tokio::time::sleep_until(end) => None,
            };
            match ev {
                Some(ev) => self.note_label_event(&ev),
                None => {
                    return Err(Refusal::plain(format!(
                        "the {} label printer is not ready (within {:?}); no label spent",
                        self.plan.name, self.plan.label_wait
                    )))
                }
            }
        }
        Ok(())
    }

    fn note_label_event(&mut self, ev: &PrinterEvent) {
        match ev {
            PrinterEvent::Ready => self.label_ready = true,
            PrinterEvent::Fault { reason, .. } => {
                if self.label_ready {
                    self.alarm(
                        AlarmKind::DeviceFault,
                        format!("{} label printer: {reason}", self.plan.name),
                        None,
                    );
                }
                self.label_ready = false;
            }
            _ => {}
        }
    }

    /// The next label serial of the level's product, waiting for blocks at
    /// most `label_wait`.
    async fn reserve_label(&mut self) -> Result<Serial, Refusal> {
        let end = Instant::now() + self.plan.label_wait;
        loop {
            match self.ctx.store.reserve_for(1, &self.plan.gtin) {
                Ok(mut v) if !v.is_empty() => {
                    if self.starving {
                        self.starving = false;
                        tracing::info!(line = %self.ctx.line, packaging = %self.plan.name, "label serials available again");
                    }
                    return Ok(v.remove(0));
                }
                Ok(_) => {}
                Err(e) => return Err(Refusal::plain(format!("ledger: {e}"))),
            }
            if !self.starving {
                self.starving = true;
                self.alarm(
                    AlarmKind::LowBuffer,
                    format!(
                        "no {} label serials (GTIN {}) in the buffer; the {} waits for blocks from upstream",
                        self.plan.name, self.plan.gtin, self.plan.name
                    ),
                    None,
                );
            }
            if Instant::now() >= end {
                return Err(Refusal::plain(format!(
                    "no label serial of GTIN {} within {:?}",
                    self.plan.gtin, self.plan.label_wait
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Prints `text` and waits for the scanner to read it back at the
    /// minimum grade; otherwise why not.
    async fn print_and_verify(
        &mut self,
        label: &Serial,
        text: &str,
    ) -> Result<(), (RejectReason, String)> {
        let id = self.next_label;
        self.next_label += 1;
        let end = Instant::now() + self.plan.label_deadline;
        let request = PrintRequest {
            unit: id,
            code: text.to_string(),
        };
        if self.label.requests.send(request).await.is_err() {
            return Err((
                RejectReason::DeviceFault,
                "the label printer's driver ended".into(),
            ));
        }
        // The label printer: printed, or why not.
        loop {
            let ev = tokio::select! {
                ev = self.label.events.recv() => ev,
                _ = tokio::time::sleep_until(end) => {
                    return Err((RejectReason::NoRead, format!("not printed within {:?}", self.plan.label_deadline)));
                }
            };
            match ev {
                None => {
                    return Err((
                        RejectReason::DeviceFault,
                        "the label printer's driver ended".into(),
                    ))
                }
                Some(PrinterEvent::Printed(u)) | Some(PrinterEvent::Marked { unit: u, .. })
                    if u == id =>
                {
                    break
                }
                Some(PrinterEvent::Ready) => self.label_ready = true,
                Some(PrinterEvent::Refused { unit, reason }) if unit == id => {
                    return Err((
                        RejectReason::DeviceFault,
                        format!("refused by the label printer: {reason}"),
                    ))
                }
                Some(PrinterEvent::Fault { reason, unknown }) => {
                    self.label_ready = false;
                    self.alarm(
                        AlarmKind::DeviceFault,
                        format!("{} label printer: {reason}", self.plan.name),
                        Some(label.clone()),
                    );
                    if unknown.contains(&id) {
                        return Err((
                            RejectReason::DeviceFault,
                            format!("label printer fault: {reason}"),
                        ));
                    }
                }
                Some(_) => {}
            }
        }
        // The scanner: this label's code, graded.
        loop {
            let ev = tokio::select! {
                ev = self.scanner.events.recv() => ev,
                _ = tokio::time::sleep_until(end) => {
                    return Err((RejectReason::NoRead, format!("not read by the scanner within {:?}", self.plan.label_deadline)));
                }
            };
            let read = match ev {
                None => {
                    return Err((
                        RejectReason::DeviceFault,
                        "the label scanner's driver ended".into(),
                    ))
                }
                Some(CameraEvent::Read(r)) => r,
                Some(CameraEvent::Fault { reason }) => {
                    self.alarm(
                        AlarmKind::DeviceFault,
                        format!("{} label scanner: {reason}", self.plan.name),
                        None,
                    );
                    continue;
                }
                Some(CameraEvent::Garbage { line, reason }) => {
                    tracing::warn!(line = %self.ctx.line, packaging = %self.plan.name, "label scanner line not understood ({reason}): {line:?}");
                    continue;
                }
                Some(CameraEvent::Ready) => continue,
            };
            let Some(content) = read.content else {
                return Err((RejectReason::NoRead, "the scanner read nothing".into()));
            };
            match code::parse(&Template::Gs1DataMatrix, &content) {
                Ok(d) if d.serial == *label && d.gtin == self.plan.gtin => {}
                // Another code: a stray read (a label from before), not
                // this label's verdict.
                Ok(d) => {
                    self.alarm(
                        AlarmKind::ForeignCode,
                        format!(
                            "{} label scanner read {} of GTIN {}, not the label in flight {label}",
                            self.plan.name, d.serial, d.gtin
                        ),
                        Some(d.serial),
                    );
                    continue;
                }
                Err(e) => {
                    return Err((
                        RejectReason::Mismatch,
                        format!("read {content:?}, not a label code: {e}"),
                    ))
                }
            }
            return match read.grade {
                Some(g) if g < self.ctx.min_grade => Err((
                    RejectReason::LowGrade,
                    format!("read at grade {g}, below {}", self.ctx.min_grade),
                )),
                _ => Ok(()),
            };
        }
    }
}

/// The codes of one multi-code read, in order; `None` for a code not read.
pub fn split_codes(content: Option<&str>) -> Vec<Option<String>> {
    let Some(content) = content else {
        return Vec::new();
    };
    content
        .split(CODE_SEPARATOR)
        .map(|c| c.trim_matches(['\r', ' ']))
        .map(|c| {
            let no_read =
                c.is_empty() || c.eq_ignore_ascii_case("NOREAD") || c.eq_ignore_ascii_case("ERROR");
            (!no_read).then(|| c.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    //! A level on a real ledger, its devices driven through the driver
    //! contract: a label printer that prints what it is sent and hands it
    //! to a scanner that grades it as the test says, and an aggregation
    //! camera whose reads the test writes.
    use super::*;
    use serialine_core::{Expiry, Lot};
    use serialine_devices::{CameraRead, TriggerIds};
    use serialine_sim::issuer::Issuer;
    use serialine_store::StoreOptions;

    const LINE: &str = "line-agg";
    const SECRET: &[u8] = b"aggregation level tests, 32+ bytes";

    fn unit_gtin() -> Gtin {
        Gtin::parse("09506000134352").expect("gtin")
    }
    fn case_gtin() -> Gtin {
        Gtin::parse("19506000134359").expect("gtin")
    }

    /// A label printer that prints at once and shows each label to the
    /// scanner, which reads it at the next of `grades` (then A).
    fn label_devices(grades: Vec<Grade>) -> (PrinterHandle, CameraHandle) {
        let (req_tx, mut req_rx) = mpsc::channel::<PrintRequest>(8);
        let (ev_tx, ev_rx) = mpsc::channel(8);
        let (scan_tx, scan_rx) = mpsc::channel(8);
        tokio::spawn(async move {
            let mut grades = grades.into_iter();
            while let Some(r) = req_rx.recv().await {
                let _ = ev_tx.send(PrinterEvent::Accepted(r.unit)).await;
                let _ = ev_tx.send(PrinterEvent::Printed(r.unit)).await;
                let read = CameraRead {
                    unit: None,
                    content: Some(r.code),
                    grade: Some(grades.next().unwrap_or(Grade::A)),
                };
                let _ = scan_tx.send(CameraEvent::Read(read)).await;
            }
        });
        let label = PrinterHandle {
            name: "label".into(),
            requests: req_tx,
            events: ev_rx,
            capacity: 1,
            trigger_ids: TriggerIds::Unknown,
        };
        (
            label,
            CameraHandle {
                name: "scanner".into(),
                events: scan_rx,
            },
        )
    }

    /// A ledger with a job of 40 units (38 committed, 2 still in flight)
    /// and ten case label serials.
    async fn rig() -> (tempfile::TempDir, Store, Job, u32, Vec<Serial>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let issuer = Issuer::new(b"aggregation level tests", 100);
        issuer.add_line(LINE, SECRET);
        let (store, _) = Store::open(StoreOptions::new(dir.path().join("ledger"), LINE, SECRET))
            .expect("ledger opens");
        for (gtin, n) in [(unit_gtin(), 100), (case_gtin(), 10)] {
            let block = issuer.issue_for(LINE, Some(gtin), Some(n)).expect("block");
            store.add_block(&block).await.expect("block stored");
        }
        let job = Job::new(
            unit_gtin(),
            Lot::new("AGG-T").expect("lot"),
            Expiry::parse("271231").expect("expiry"),
            Template::Gs1DataMatrix,
            40,
        )
        .expect("job");
        let number = store.begin_job(&job).await.expect("job begins");
        let units = store.reserve_for(40, &unit_gtin()).expect("units");
        for (to, range) in [(UnitState::Sent, 0..40), (UnitState::Committed, 0..38)] {
            let ts: Vec<_> = units[range]
                .iter()
                .map(|s| Transition::in_job(s.clone(), to, Some(number)))
                .collect();
            for r in store.apply(&ts).await {
                r.expect("durable");
            }
        }
        (dir, store, job, number, units)
    }

    fn context(
        store: &Store,
        job: &Job,
        number: u32,
        alarms: mpsc::UnboundedSender<Alarm>,
    ) -> LevelContext {
        LevelContext {
            line: LINE.into(),
            job: job.clone(),
            job_number: number,
            store: store.clone(),
            min_grade: Grade::C,
            alarms,
        }
    }

    fn plan(label_wait: Duration) -> LevelPlan {
        LevelPlan {
            name: "case".into(),
            gtin: case_gtin(),
            per_parent: 4,
            mode: AggregationMode::Scan,
            // Also how long a case waits for its in-flight units' verdicts.
            label_deadline: Duration::from_secs(1),
            close_wait: Duration::from_millis(200),
            label_wait,
        }
    }

    #[tokio::test]
    async fn a_scanning_level_seals_good_cases_and_refuses_each_bad_one_by_its_codes() {
        let (_dir, store, job, number, units) = rig().await;
        let code = |s: &Serial| {
            code::render(&job.template, &CodeData::for_job(&job, s.clone())).expect("code")
        };
        let read = |codes: Vec<String>| {
            CameraEvent::Read(CameraRead {
                unit: None,
                content: Some(codes.join("\t")),
                grade: None,
            })
        };
        let codes = |r: std::ops::Range<usize>| units[r].iter().map(code).collect::<Vec<_>>();
        let (cam_tx, cam_rx) = mpsc::channel(16);
        let (alarm_tx, mut alarms) = mpsc::unbounded_channel();
        let (done_tx, below_done) = watch::channel(false);
        // The third label the scanner reads at grade D: rejected.
        let (label, scanner) = label_devices(vec![Grade::A, Grade::A, Grade::D]);
        let plan = plan(Duration::from_secs(1));
        let ctx = context(&store, &job, number, alarm_tx);
        let devices = LevelDevices {
            label,
            scanner,
            camera: None,
            names: Vec::new(),
        };
        let children = Children::Scanned {
            camera: CameraHandle {
                name: "aggregation camera".into(),
                events: cam_rx,
            },
            below_done,
        };
        let level = tokio::spawn(run_level(
            ctx,
            plan,
            devices,
            children,
            unit_gtin(),
            job.template.clone(),
            None,
        ));
        let mut foreign = codes(8..11);
        foreign.push("010400638133393121NOT-OURS".into());
        let mut no_read = codes(12..15);
        no_read.push("NOREAD".into());
        let reads = vec![
            codes(0..4), // sealed
            codes(4..7), // short, another read follows
            foreign,     // a foreign code
            no_read,     // one code not read
            vec![
                code(&units[0]),
                code(&units[16]),
                code(&units[17]),
                code(&units[18]),
            ], // one already packed
            codes(36..40), // two still in flight (never decided)
            codes(20..24), // sealed
            codes(24..28), // its label read at grade D
        ];
        for r in reads {
            cam_tx.send(read(r)).await.expect("read sent");
        }
        // A short read, then another: the short one was not the job's last
        // case: a unit is missing.
        cam_tx.send(read(codes(32..35))).await.expect("read sent");
        cam_tx.send(read(codes(28..32))).await.expect("read sent");
        // The last read, short: the job's last case, partial.
        cam_tx.send(read(codes(35..36))).await.expect("read sent");
        tokio::time::sleep(Duration::from_millis(200)).await;
        done_tx.send_replace(true);
        let report = tokio::time::timeout(Duration::from_secs(30), level)
            .await
            .expect("the level ends once below is done and quiet")
            .expect("level task");
        assert_eq!(
            (
                report.sealed,
                report.partial,
                report.refused,
                report.labels_rejected
            ),
            (4, 1, 7, 1),
            "{report:?}"
        );
        let mut refusals = Vec::new();
        while let Ok(a) = alarms.try_recv() {
            if a.kind == AlarmKind::AggregationRefused {
                refusals.push(a.message);
            }
        }
        let said = |i: usize, what: &str| {
            assert!(
                refusals.get(i).is_some_and(|m| m.contains(what)),
                "refusal {i} should say {what:?}: {refusals:#?}"
            )
        };
        said(
            0,
            "3 codes of 4: a unit is missing (another case was read after it)",
        );
        said(1, "foreign: a code of GTIN 04006381333931");
        said(2, "code 4 (not read)");
        said(3, &format!("{} (already in", units[0]));
        said(4, &format!("{} (sent, not committed)", units[38]));
        said(5, "read at grade D");
        said(
            6,
            "3 codes of 4: a unit is missing (another case was read after it)",
        );
        assert_eq!(refusals.len(), 7, "{refusals:#?}");
        // In the ledger: three cases, the last partial; the refused cases'
        // units in none; the rejected label never used again.
        let parents = store.parents().expect("parents");
        assert_eq!(parents.len(), 4, "{parents:?}");
        assert_eq!(
            parents.iter().filter(|(_, e)| e.partial()).count(),
            1,
            "{parents:?}"
        );
        for (p, _) in &parents {
            assert_eq!(store.state_of(p).expect("label"), UnitState::Committed);
        }
        for u in units[4..16]
            .iter()
            .chain(&units[16..19])
            .chain(&units[24..28])
            .chain(&units[32..35])
        {
            assert_eq!(store.parent_of(u).expect("read"), None, "{u}");
        }
        assert!(store.parent_of(&units[0]).expect("read").is_some());
        let c = store.counts();
        assert_eq!(c.rejected, 1, "the label read at grade D");
    }

    #[test]
    fn a_multi_code_read_splits_at_tabs_and_keeps_no_reads_in_place() {
        assert_eq!(
            split_codes(Some("A\tNOREAD\tB\r")),
            vec![Some("A".into()), None, Some("B".into())]
        );
        assert!(split_codes(None).is_empty());
    }

    /// A label printer that is down: no label serial is spent on a case
    /// until it says it is ready again.
    #[tokio::test]
    async fn no_label_is_spent_while_the_label_printer_is_down() {
        let (_dir, store, job, number, units) = rig().await;
        let (mut label, scanner) = label_devices(Vec::new());
        // Put a fault in front of the printer's own events.
        let (ev_tx, ev_rx) = mpsc::channel(8);
        let mut printer_events = std::mem::replace(&mut label.events, ev_rx);
        ev_tx
            .send(PrinterEvent::Fault {
                reason: "paper out".into(),
                unknown: Vec::new(),
            })
            .await
            .expect("fault");
        let (alarm_tx, mut alarms) = mpsc::unbounded_channel();
        let (children_tx, children_rx) = mpsc::unbounded_channel();
        let (done_tx, below_done) = watch::channel(false);
        let ctx = context(&store, &job, number, alarm_tx);
        let mut plan = plan(Duration::from_millis(300));
        plan.mode = AggregationMode::Count;
        let devices = LevelDevices {
            label,
            scanner,
            camera: None,
            names: Vec::new(),
        };
        let level = tokio::spawn(run_level(
            ctx,
            plan,
            devices,
            Children::Committed {
                rx: children_rx,
                below_done,
            },
            unit_gtin(),
            job.template.clone(),
            None,
        ));
        for u in &units[0..4] {
            children_tx.send(u.clone()).expect("child");
        }
        // Refused after label_wait, without a label serial leaving the pool.
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(
            store.counts().issued - store.buffer_depth(),
            40,
            "no label sent"
        );
        // Back: the printer says Ready, then its own events follow.
        ev_tx.send(PrinterEvent::Ready).await.expect("ready");
        tokio::spawn(async move {
            while let Some(e) = printer_events.recv().await {
                if ev_tx.send(e).await.is_err() {
                    return;
                }
            }
        });
        for u in &units[4..8] {
            children_tx.send(u.clone()).expect("child");
        }
        drop(children_tx);
        done_tx.send_replace(true);
        let report = tokio::time::timeout(Duration::from_secs(10), level)
            .await
            .expect("level ends")
            .expect("level task");
        assert_eq!((report.sealed, report.refused), (1, 1), "{report:?}");
        let mut said = Vec::new();
        while let Ok(a) = alarms.try_recv() {
            said.push(a.message);
        }
        assert!(
            said.iter()
                .any(|m| m.contains("label printer is not ready")),
            "{said:#?}"
        );
        assert_eq!(store.parent_of(&units[0]).expect("read"), None);
        assert!(store.parent_of(&units[4]).expect("read").is_some());
    }
}
