//! Jobs' part of [`Store`]: numbering jobs durably, and a job's report
//! from its serials' records (rules and types in `jobs.rs`).

use super::{Store, StoreError};
use crate::jobs::{JobEntry, JobReport};
use crate::ledger::{Applied, Op};
use serialine_core::Job;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Store {
    /// Records a job's start durably and returns its number (1, 2, ...):
    /// its serials' Sent transitions carry it ([`crate::Transition::in_job`]).
    pub async fn begin_job(&self, job: &Job) -> Result<u32, StoreError> {
        let op = Op::BeginJob {
            entry: JobEntry::new(job, now_ms()),
        };
        match self.submit_one(op).await? {
            Applied::Job { number } => Ok(number),
            other => Err(self.unexpected(other)),
        }
    }

    /// Records how and when job `number` ended.
    pub async fn end_job(&self, number: u32, end: &str) -> Result<(), StoreError> {
        let mut entry = self
            .read(|r| r.job(number))?
            .ok_or_else(|| StoreError::Corrupt {
                path: self.path().to_path_buf(),
                what: format!("job {number} ended but never begun"),
            })?;
        entry.ended_ms = Some(now_ms());
        entry.end = Some(end.to_string());
        match self.submit_one(Op::EndJob { number, entry }).await? {
            Applied::Job { .. } => Ok(()),
            other => Err(self.unexpected(other)),
        }
    }

    /// Every job recorded, by number.
    pub fn jobs(&self) -> Result<Vec<(u32, JobEntry)>, StoreError> {
        self.read(|r| r.jobs())
    }

    /// Job `number`'s units by outcome, from the tally the ledger keeps
    /// with every transition (no scan; archived units still count), and
    /// the serials it has in flight (the in-flight index).
    pub fn job_report(&self, number: u32) -> Result<JobReport, StoreError> {
        let (entry, tally) = self.read(|r| Ok((r.job(number)?, r.job_tally(number)?)))?;
        let mut report = JobReport::from_tally(number, entry, tally);
        if report.in_flight > 0 {
            report.unbalanced = self
                .read(|r| r.job_in_flight(number))?
                .into_iter()
                .take(100)
                .map(|s| s.as_str().to_string())
                .collect();
        }
        Ok(report)
    }

    /// The same report counted from the serials' records (and, with
    /// `archive_dir`, the line's archive files): a full scan, for audits of
    /// the tally (tests, the hil checker).
    pub fn job_report_by_scan(
        &self,
        number: u32,
        archive_dir: Option<&Path>,
    ) -> Result<JobReport, StoreError> {
        let mut report = JobReport {
            number,
            entry: self.read(|r| r.job(number))?,
            ..JobReport::default()
        };
        let mine = |r: &crate::SerialRecord| r.job == number;
        if let Some(dir) = archive_dir {
            for (serial, r) in crate::archive::records_since(dir, self.line_id(), 0, |_| true)? {
                if mine(&r) {
                    report.add(serial.as_str(), &r);
                }
            }
        }
        for (serial, r) in self.records_since(0, |_| true)? {
            if mine(&r) {
                report.add(serial.as_str(), &r);
            }
        }
        Ok(report)
    }
}
