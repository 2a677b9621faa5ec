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
        self.beside_the_tally(&mut report)?;
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

    /// What a report shows beside the units' outcomes: the product's
    /// serials still buffered, and the job's hierarchy.
    fn beside_the_tally(&self, report: &mut JobReport) -> Result<(), StoreError> {
        let product = report
            .entry
            .as_ref()
            .and_then(|e| serialine_core::Gtin::parse(&e.gtin).ok());
        if let Some(g) = product {
            report.buffered = self.buffer_depth_for(&g)?;
        }
        report.hierarchy = self.job_hierarchy(report.number, report.committed + report.synced)?;
        Ok(())
    }

    /// Job `number`'s hierarchy (`HierarchyCounts`) from its parents, or
    /// none without any; `active` is its committed and acknowledged
    /// serials (units and labels).
    fn job_hierarchy(
        &self,
        number: u32,
        active: u64,
    ) -> Result<Option<crate::jobs::HierarchyCounts>, StoreError> {
        use crate::hierarchy::ParentState;
        use serialine_core::UnitState;
        let parents: Vec<_> = self
            .parents()?
            .into_iter()
            .filter(|(_, e)| e.job == number)
            .collect();
        if parents.is_empty() {
            return Ok(None);
        }
        // An archived serial (retention) no longer reads here: not counted.
        let alive = |s: &serialine_core::Serial| -> Result<bool, StoreError> {
            match self.state_of(s) {
                Ok(state) => Ok(matches!(state, UnitState::Committed | UnitState::Synced)),
                Err(StoreError::NotIssued { .. }) => Ok(false),
                Err(e) => Err(e),
            }
        };
        let codes: std::collections::HashSet<&serialine_core::Serial> =
            parents.iter().map(|(p, _)| p).collect();
        // A parent's level: 1 above units, one more above each level.
        let mut level_of: std::collections::HashMap<serialine_core::Serial, u32> =
            Default::default();
        let mut contents = Vec::new();
        for (p, e) in &parents {
            let children = if e.state == ParentState::Packed {
                self.contents(p)?.map(|(_, c)| c).unwrap_or_default()
            } else {
                Vec::new()
            };
            contents.push((p.clone(), children, e.partial()));
        }
        for _ in 0..crate::hierarchy::MAX_DEPTH {
            for (p, children, _) in &contents {
                let below = children
                    .iter()
                    .filter_map(|c| level_of.get(c).copied())
                    .max()
                    .unwrap_or(0);
                level_of.insert(p.clone(), below + 1);
            }
        }
        let mut counts = crate::jobs::HierarchyCounts::default();
        let mut levels: std::collections::BTreeMap<u32, (u64, u64, u64)> = Default::default();
        for (p, children, partial) in &contents {
            if alive(p)? {
                counts.labels += 1;
            }
            if children.is_empty() {
                continue;
            }
            let l = levels.entry(level_of[p]).or_default();
            l.0 += 1;
            l.1 += children.len() as u64;
            l.2 += u64::from(*partial);
            for c in children.iter().filter(|c| !codes.contains(c)) {
                if alive(c)? {
                    counts.units_in_parents += 1;
                }
            }
        }
        counts.levels = levels
            .into_iter()
            .map(
                |(level, (parents, children, partial))| crate::jobs::LevelCount {
                    level,
                    parents,
                    children,
                    partial,
                },
            )
            .collect();
        counts.loose = active.saturating_sub(counts.units_in_parents + counts.labels);
        Ok(Some(counts))
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
        self.beside_the_tally(&mut report)?;
        Ok(report)
    }
}
