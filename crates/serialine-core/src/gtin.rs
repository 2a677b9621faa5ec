//! GTIN with its GS1 mod-10 check digit.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GtinError {
    #[error("GTIN {value:?} has {len} digits; expected 8, 12, 13 or 14")]
    Length { value: String, len: usize },
    #[error("GTIN {value:?} contains a non-digit")]
    NotDigits { value: String },
    #[error("GTIN {value:?} has check digit {found}, expected {expected}")]
    CheckDigit {
        value: String,
        found: u8,
        expected: u8,
    },
}

/// A GTIN held as the 14 digits AI (01) carries (GTIN-8/12/13 are left-padded
/// with zeros, as GS1 prescribes), its check digit verified.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Gtin([u8; 14]);

/// GS1 mod-10 check digit over the digits before it (weights 3,1,3,... from the right).
pub fn check_digit(body: &[u8]) -> u8 {
    let sum: u32 = body
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| u32::from(*d) * if i % 2 == 0 { 3 } else { 1 })
        .sum();
    ((10 - sum % 10) % 10) as u8
}

impl Gtin {
    pub fn parse(s: &str) -> Result<Self, GtinError> {
        let len = s.len();
        if !matches!(len, 8 | 12 | 13 | 14) {
            return Err(GtinError::Length {
                value: s.to_string(),
                len: s.chars().count(),
            });
        }
        if !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(GtinError::NotDigits {
                value: s.to_string(),
            });
        }
        let mut digits = [0u8; 14];
        for (slot, b) in digits[14 - len..].iter_mut().zip(s.bytes()) {
            *slot = b - b'0';
        }
        let expected = check_digit(&digits[..13]);
        if digits[13] != expected {
            return Err(GtinError::CheckDigit {
                value: s.to_string(),
                found: digits[13],
                expected,
            });
        }
        Ok(Gtin(digits))
    }

    /// Builds a valid GTIN-14 from its first 13 digits by appending the check digit.
    pub fn from_body(body: [u8; 13]) -> Option<Self> {
        if body.iter().any(|d| *d > 9) {
            return None;
        }
        let mut digits = [0u8; 14];
        digits[..13].copy_from_slice(&body);
        digits[13] = check_digit(&body);
        Some(Gtin(digits))
    }

    /// The 14-digit form used in AI (01) and Digital Link.
    pub fn as_string(&self) -> String {
        self.0.iter().map(|d| char::from(b'0' + d)).collect()
    }
}

impl fmt::Display for Gtin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_string())
    }
}

impl fmt::Debug for Gtin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Gtin({})", self.as_string())
    }
}

impl TryFrom<String> for Gtin {
    type Error = GtinError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Gtin::parse(&s)
    }
}

impl From<Gtin> for String {
    fn from(g: Gtin) -> String {
        g.as_string()
    }
}

impl std::str::FromStr for Gtin {
    type Err = GtinError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Gtin::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_gtins_validate() {
        // GS1's own examples.
        assert_eq!(
            Gtin::parse("09506000134352").unwrap().as_string(),
            "09506000134352"
        );
        assert_eq!(
            Gtin::parse("4006381333931").unwrap().as_string(),
            "04006381333931"
        );
        assert!(Gtin::parse("96385074").is_ok());
    }

    #[test]
    fn wrong_check_digit_is_named() {
        assert_eq!(
            Gtin::parse("09506000134353"),
            Err(GtinError::CheckDigit {
                value: "09506000134353".into(),
                found: 3,
                expected: 2
            })
        );
    }

    #[test]
    fn bad_shapes_rejected() {
        assert!(matches!(Gtin::parse("123"), Err(GtinError::Length { .. })));
        assert!(matches!(
            Gtin::parse("0950600013435X"),
            Err(GtinError::NotDigits { .. })
        ));
        assert!(matches!(
            Gtin::parse("095060001343５"),
            Err(GtinError::Length { .. }) | Err(GtinError::NotDigits { .. })
        ));
    }

    #[test]
    fn from_body_is_valid() {
        let g = Gtin::from_body([0, 9, 5, 0, 6, 0, 0, 0, 1, 3, 4, 3, 5]).unwrap();
        assert_eq!(g.as_string(), "09506000134352");
    }
}
