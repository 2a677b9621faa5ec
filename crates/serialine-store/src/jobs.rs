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

    /// Counts one of the job's records.
    pub(crate) fn add(&mut self, serial: &str, r: &SerialRecord) {
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
            // A record never holds a pool state.
            UnitState::Available | UnitState::Reserved => {}
        }
    }
}

fn reason_key(r: RejectReason) -> String {
    r.as_str().to_string()
}
