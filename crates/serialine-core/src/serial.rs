//! A serial number as GS1 AI (21) allows it.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest serial GS1 allows in AI (21).
pub const MAX_SERIAL_LEN: usize = 20;

/// The GS1 "AI encodable character set 82" (GS1 General Specifications 7.11,
/// figure 7.11-1): the characters any variable-length AI value may hold.
pub fn is_cset82(c: char) -> bool {
    matches!(c,
        '!' | '"' | '%' | '&' | '\'' | '(' | ')' | '*' | '+' | ',' | '-' | '.' | '/'
        | '0'..='9' | ':' | ';' | '<' | '=' | '>' | '?' | 'A'..='Z' | '_' | 'a'..='z')
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SerialError {
    #[error("serial is empty")]
    Empty,
    #[error("serial is {len} characters long; GS1 AI (21) allows at most {MAX_SERIAL_LEN}")]
    TooLong { len: usize },
    #[error("serial contains {ch:?} at position {pos}, outside the GS1 82-character set")]
    BadChar { ch: char, pos: usize },
}

/// One unit's serial: 1 to 20 characters of GS1 CSET 82.
///
/// Construction validates, so every `Serial` in the system can be printed and
/// encoded in a GS1 element string or Digital Link URI.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Serial(String);

impl Serial {
    pub fn new(s: impl Into<String>) -> Result<Self, SerialError> {
        let s = s.into();
        validate_ai_value(&s, MAX_SERIAL_LEN).map_err(|e| match e {
            AiValueError::Empty => SerialError::Empty,
            AiValueError::TooLong { len } => SerialError::TooLong { len },
            AiValueError::BadChar { ch, pos } => SerialError::BadChar { ch, pos },
        })?;
        Ok(Serial(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Serial({})", self.0)
    }
}

impl TryFrom<String> for Serial {
    type Error = SerialError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Serial::new(s)
    }
}

impl From<Serial> for String {
    fn from(s: Serial) -> String {
        s.0
    }
}

impl std::str::FromStr for Serial {
    type Err = SerialError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Serial::new(s)
    }
}

/// Why a variable-length AI value (serial, lot) is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AiValueError {
    Empty,
    TooLong { len: usize },
    BadChar { ch: char, pos: usize },
}

/// Checks a variable-length AI value: non-empty, at most `max` characters,
/// all in CSET 82. Shared by serial (21) and lot (10).
pub(crate) fn validate_ai_value(s: &str, max: usize) -> Result<(), AiValueError> {
    if s.is_empty() {
        return Err(AiValueError::Empty);
    }
    let len = s.chars().count();
    if len > max {
        return Err(AiValueError::TooLong { len });
    }
    if let Some((pos, ch)) = s.chars().enumerate().find(|(_, c)| !is_cset82(*c)) {
        return Err(AiValueError::BadChar { ch, pos });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_cset82_up_to_twenty() {
        assert!(Serial::new("AB12-x/9").is_ok());
        assert!(Serial::new("12345678901234567890").is_ok());
    }

    #[test]
    fn rejects_empty_long_and_foreign_chars() {
        assert_eq!(Serial::new(""), Err(SerialError::Empty));
        assert_eq!(
            Serial::new("123456789012345678901"),
            Err(SerialError::TooLong { len: 21 })
        );
        assert_eq!(
            Serial::new("AB CD"),
            Err(SerialError::BadChar { ch: ' ', pos: 2 })
        );
        assert!(matches!(
            Serial::new("A#"),
            Err(SerialError::BadChar { .. })
        ));
        assert!(matches!(Serial::new("Ä"), Err(SerialError::BadChar { .. })));
    }

    #[test]
    fn serde_validates() {
        let bad: Result<Serial, _> = serde_json_like("\"A B\"");
        assert!(bad.is_err());
    }

    fn serde_json_like(s: &str) -> Result<Serial, postcard::Error> {
        // postcard round trip of a String, then into Serial through serde's try_from
        let raw: String = s.trim_matches('"').to_string();
        let bytes = postcard::to_stdvec(&raw)?;
        postcard::from_bytes(&bytes)
    }
}
