//! Jobs in the ledger: each job the line runs gets a number and an entry
//! (product, lot, expiry, quantity, start and end), and every serial it
//! sends carries that number in its record, so a job's units can be
//! counted and reconciled after the fact (`Store::job_report`), from the
//! ledger and its archives.

use crate::record::SerialRecord;
use serde::{Deserialize, Serialize};
use serialine_core::{RejectReason, UnitState};
use std::collections::BTreeMap;

/// Value of the `jobs` tree (postcard), under the job's number (u32 BE).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobEntry {
    pub gtin: String,
    pub lot: String,
    /// `YYMMDD`, as on the pack.
    pub expiry: String,
    pub quantity: u64,
    pub started_ms: u64,
    pub ended_ms: Option<u64>,
    /// How it ended: "job complete", "cmd/job/stop", ...
    pub end: Option<String>,
}

impl JobEntry {
    pub fn new(job: &serialine_core::Job, started_ms: u64) -> Self {
        JobEntry {
            gtin: job.gtin.as_string(),
            lot: job.lot.as_str().to_string(),
            expiry: job.expiry.as_string(),
            quantity: job.quantity,
            started_ms,
            ended_ms: None,
            end: None,
        }
    }
}

/// A job's units by state, kept by the ledger in the same batch as every
/// transition of one of its serials (`job_counts` tree, postcard, under the
/// job's number), so a report never scans the records and survives
/// retention.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobTally {
    pub sent: u64,
    pub in_flight: u64,
    pub committed: u64,
    pub synced: u64,
    pub sampled: u64,
    pub decommissioned: u64,
    pub voided: u64,
    pub rejected: BTreeMap<String, u64>,
    /// Serials the line gave back upstream unused at this job's end (or
    /// on command while it was the last job): never sent. Last, so a
    /// schema 5 tally without it still decodes (`JobTally::decode`).
    pub returned: u64,
}

/// A tally as schema 5 wrote it, before returns.
#[derive(Deserialize)]
struct JobTallyV5 {
    sent: u64,
    in_flight: u64,
    committed: u64,
    synced: u64,
    sampled: u64,
    decommissioned: u64,
    voided: u64,
    rejected: BTreeMap<String, u64>,
}

impl JobTally {
    /// A `job_counts` value, written by this build or before returns.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, postcard::Error> {
        postcard::from_bytes(bytes).or_else(|e| {
            let old: JobTallyV5 = postcard::from_bytes(bytes).map_err(|_| e)?;
            Ok(JobTally {
                sent: old.sent,
                in_flight: old.in_flight,
                committed: old.committed,
                synced: old.synced,
                sampled: old.sampled,
                decommissioned: old.decommissioned,
                voided: old.voided,
                rejected: old.rejected,
                returned: 0,
            })
        })
    }

    fn slot(&mut self, state: UnitState) -> Option<&mut u64> {
        Some(match state {
            UnitState::Sent | UnitState::Printed => &mut self.in_flight,
            UnitState::Committed => &mut self.committed,
            UnitState::Synced => &mut self.synced,
            UnitState::Sampled(_) => &mut self.sampled,
            UnitState::Decommissioned(_) => &mut self.decommissioned,
            UnitState::Voided => &mut self.voided,
            UnitState::Rejected(r) => self.rejected.entry(reason_key(r)).or_default(),
            UnitState::Returned => &mut self.returned,
            UnitState::Available | UnitState::Reserved => return None,
        })
    }

    /// One of the job's serials moved `from` -> `to` (Reserved -> Sent
    /// counts it as sent; Reserved -> Returned does not).
    pub(crate) fn shift(&mut self, from: UnitState, to: UnitState) {
        if from == UnitState::Reserved && to != UnitState::Returned {
            self.sent += 1;
        }
        if let Some(c) = self.slot(from) {
            *c = c.saturating_sub(1);
        }
        if let Some(c) = self.slot(to) {
            *c += 1;
        }
        self.rejected.retain(|_, n| *n > 0);
    }
}

/// A job's units by where they ended, from its serials' records.
///
/// Balances by construction: `sent = committed_total + rejected + voided +
/// in_flight`, and `committed_total = committed + synced + sampled +
/// decommissioned`. A job that has ended with units still in flight does
/// not balance: [`JobReport::unbalanced`] names them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct JobReport {
    pub number: u32,
    pub entry: Option<JobEntry>,
    /// Serials this job sent to the marking device.
    pub sent: u64,
    /// Committed, not yet acknowledged upstream.
    pub committed: u64,
    pub synced: u64,
    pub sampled: u64,
    pub decommissioned: u64,
    /// By reason (`RejectReason::as_str`).
    pub rejected: BTreeMap<String, u64>,
    pub voided: u64,
    pub in_flight: u64,
    /// Serials given back upstream unused at the job's end: never sent, so
    /// outside `sent`.
    pub returned: u64,
    /// The job's product's serials still buffered when the report was made
    /// (`issued = sent + returned + buffered`, the serials the job was given
    /// by the buffer it ran on).
    pub buffered: u64,
    /// Its packaging hierarchy, when it has one.
    pub hierarchy: Option<HierarchyCounts>,
    /// Serials still in flight after the job ended: what keeps the report
    /// from balancing (at most 100 named).
    pub unbalanced: Vec<String>,
}

impl JobReport {
    pub fn committed_total(&self) -> u64 {
        self.committed + self.synced + self.sampled + self.decommissioned
    }

    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }

    /// Every unit sent has its final outcome (or the job still runs).
    pub fn balanced(&self) -> bool {
        self.sent == self.committed_total() + self.rejected_total() + self.voided + self.in_flight
            && (self.in_flight == 0 || self.entry.as_ref().is_some_and(|e| e.ended_ms.is_none()))
    }

    /// The report of job `number` from its tally; `unbalanced` is filled
    /// by the caller from the in-flight index.
    pub(crate) fn from_tally(number: u32, entry: Option<JobEntry>, t: JobTally) -> Self {
        JobReport {
            number,
            entry,
            sent: t.sent,
            committed: t.committed,
            synced: t.synced,
            sampled: t.sampled,
            decommissioned: t.decommissioned,
            rejected: t.rejected,
            voided: t.voided,
            in_flight: t.in_flight,
            returned: t.returned,
            buffered: 0,
            hierarchy: None,
            unbalanced: Vec::new(),
        }
    }

    /// Counts one of the job's records.
    pub(crate) fn add(&mut self, serial: &str, r: &SerialRecord) {
        if r.state == UnitState::Returned {
            self.returned += 1;
            return;
        }
        self.sent += 1;
        match r.state {
            UnitState::Committed => self.committed += 1,
            UnitState::Synced => self.synced += 1,
            UnitState::Sampled(_) => self.sampled += 1,
            UnitState::Decommissioned(_) => self.decommissioned += 1,
            UnitState::Rejected(reason) => {
                *self.rejected.entry(reason_key(reason)).or_default() += 1
            }
            UnitState::Voided => self.voided += 1,
            UnitState::Sent | UnitState::Printed => {
                self.in_flight += 1;
                if self.unbalanced.len() < 100 {
                    self.unbalanced.push(serial.to_string());
                }
            }
            // A record never holds a pool state; Returned is counted above.
            UnitState::Available | UnitState::Reserved | UnitState::Returned => {}
        }
    }
}

fn reason_key(r: RejectReason) -> String {
    r.as_str().to_string()
}

/// A job's packaging hierarchy at report time, from its parents (the
/// `parents` tree: one entry per parent, never a scan of the units).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HierarchyCounts {
    /// Per level, from the parents holding units (1: cases) up: how many
    /// parents hold children now, and how many children they hold.
    pub levels: Vec<LevelCount>,
    /// The job's units in a parent, committed (or acknowledged).
    pub units_in_parents: u64,
    /// The job's parent codes (case and pallet labels) committed or
    /// acknowledged: counted in `committed` like units.
    pub labels: u64,
    /// Committed (or acknowledged) units in no parent:
    /// `committed + synced = units_in_parents + labels + loose`.
    pub loose: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LevelCount {
    pub level: u32,
    pub parents: u64,
    pub children: u64,
    /// Of `parents`, those sealed by the line with fewer children than a
    /// full one holds (partial cases, at the end of a job).
    pub partial: u64,
}
