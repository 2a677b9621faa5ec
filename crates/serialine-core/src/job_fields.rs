//! The values a job puts on every unit besides the GTIN and the serial: the
//! lot, AI (10), and the expiry, AI (17), with the error of a job's fields.
//!
//! They sit below both [`crate::code`] (which renders and parses them) and
//! [`crate::job`] (which holds them with the template), so neither of those
//! two modules needs the other's types to describe a code.

use crate::serial::{validate_ai_value, AiValueError};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest lot GS1 allows in AI (10).
pub const MAX_LOT_LEN: usize = 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    #[error("lot {value:?}: {why}")]
    Lot { value: String, why: String },
    #[error(
        "expiry {value:?}: expected YYMMDD with month 01-12 and day 00-31 (00 = end of month)"
    )]
    Expiry { value: String },
    #[error("quantity must be at least 1")]
    ZeroQuantity,
}

/// Batch/lot number, AI (10): 1 to 20 characters of CSET 82.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Lot(String);

impl Lot {
    pub fn new(s: impl Into<String>) -> Result<Self, JobError> {
        let s = s.into();
        validate_ai_value(&s, MAX_LOT_LEN).map_err(|e| JobError::Lot {
            value: s.clone(),
            why: match e {
                AiValueError::Empty => "empty".into(),
                AiValueError::TooLong { len } => {
                    format!("{len} characters; AI (10) allows at most {MAX_LOT_LEN}")
                }
                AiValueError::BadChar { ch, pos } => {
                    format!("{ch:?} at position {pos} is outside the GS1 82-character set")
                }
            },
        })?;
        Ok(Lot(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Lot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Lot({})", self.0)
    }
}

impl fmt::Display for Lot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Lot {
    type Error = JobError;
    fn try_from(s: String) -> Result<Self, JobError> {
        Lot::new(s)
    }
}

impl From<Lot> for String {
    fn from(l: Lot) -> String {
        l.0
    }
}

/// Expiry date, AI (17), as GS1 writes it: YYMMDD, where DD = 00 means the
/// last day of the month.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Expiry {
    yy: u8,
    mm: u8,
    dd: u8,
}

impl Expiry {
    pub fn parse(s: &str) -> Result<Self, JobError> {
        let err = || JobError::Expiry {
            value: s.to_string(),
        };
        if s.len() != 6 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        let num = |i: usize| (s.as_bytes()[i] - b'0') * 10 + (s.as_bytes()[i + 1] - b'0');
        let (yy, mm, dd) = (num(0), num(2), num(4));
        if !(1..=12).contains(&mm) || dd > days_in_month(yy, mm) {
            return Err(err());
        }
        Ok(Expiry { yy, mm, dd })
    }

    pub fn as_string(&self) -> String {
        format!("{:02}{:02}{:02}", self.yy, self.mm, self.dd)
    }

    /// The date as ISO 8601 (`2027-12-31`), as EPCIS `ilmd` carries it:
    /// YY in 2000-2099 (the years a line prints now), DD 00 as the month's
    /// last day.
    pub fn iso_date(&self) -> String {
        let dd = match self.dd {
            0 => days_in_month(self.yy, self.mm),
            d => d,
        };
        format!("20{:02}-{:02}-{:02}", self.yy, self.mm, dd)
    }
}

/// GS1 reads YY within a sliding window around today; for the leap-year rule
/// only whether YY is divisible by 4 matters for 2000-2099, which covers it.
fn days_in_month(yy: u8, mm: u8) -> u8 {
    match mm {
        2 if yy.is_multiple_of(4) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

impl fmt::Debug for Expiry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Expiry({})", self.as_string())
    }
}

impl fmt::Display for Expiry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_string())
    }
}

impl TryFrom<String> for Expiry {
    type Error = JobError;
    fn try_from(s: String) -> Result<Self, JobError> {
        Expiry::parse(&s)
    }
}

impl From<Expiry> for String {
    fn from(e: Expiry) -> String {
        e.as_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_accepts_gs1_dates() {
        assert_eq!(Expiry::parse("271231").unwrap().as_string(), "271231");
        assert!(Expiry::parse("280229").is_ok(), "2028 is a leap year");
        assert!(Expiry::parse("270600").is_ok(), "DD=00 means end of month");
    }

    #[test]
    fn expiry_rejects_impossible_dates() {
        for bad in ["271301", "270230", "270229", "2712", "27123A", "270431"] {
            assert!(Expiry::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn lot_checks_charset_and_length() {
        assert!(Lot::new("L2026-11/A").is_ok());
        assert!(Lot::new("").is_err());
        assert!(Lot::new("123456789012345678901").is_err());
        let e = Lot::new("A B").unwrap_err().to_string();
        assert!(e.contains("' '"), "{e}");
    }
}
