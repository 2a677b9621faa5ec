//! A production job: what is printed on every unit of one run.

use crate::code::{CodeData, Template};
use crate::gtin::Gtin;
use crate::serial::Serial;
use serde::{Deserialize, Serialize};

pub use crate::job_fields::{Expiry, JobError, Lot, MAX_LOT_LEN};

/// One production run: every unit gets this GTIN, lot and expiry, a fresh
/// serial, rendered with `template`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub gtin: Gtin,
    pub lot: Lot,
    pub expiry: Expiry,
    pub template: Template,
    pub quantity: u64,
}

impl Job {
    pub fn new(
        gtin: Gtin,
        lot: Lot,
        expiry: Expiry,
        template: Template,
        quantity: u64,
    ) -> Result<Self, JobError> {
        if quantity == 0 {
            return Err(JobError::ZeroQuantity);
        }
        Ok(Job {
            gtin,
            lot,
            expiry,
            template,
            quantity,
        })
    }
}

// Here rather than in `code`: a code is described by its fields alone, and
// only the job knows which fields every unit of a run carries.
impl CodeData {
    pub fn for_job(job: &Job, serial: Serial) -> Self {
        CodeData {
            gtin: job.gtin,
            expiry: Some(job.expiry),
            lot: Some(job.lot.clone()),
            serial,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn for_job_carries_job_fields() {
        let job = Job::new(
            Gtin::parse("09506000134352").unwrap(),
            Lot::new("ABC123").unwrap(),
            Expiry::parse("271231").unwrap(),
            Template::Gs1DataMatrix,
            10,
        )
        .unwrap();
        assert_eq!(
            CodeData::for_job(&job, Serial::new("12345XYZ").unwrap()),
            CodeData {
                gtin: Gtin::parse("09506000134352").unwrap(),
                expiry: Some(Expiry::parse("271231").unwrap()),
                lot: Some(Lot::new("ABC123").unwrap()),
                serial: Serial::new("12345XYZ").unwrap(),
            }
        );
    }
}
