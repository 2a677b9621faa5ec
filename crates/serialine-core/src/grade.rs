//! ISO/IEC 15415 print quality grades, as cameras report them.

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;

/// An ISO/IEC 15415 symbol grade: A=4, B=3, C=2, D=1, F=0 (there is no E).
/// Written in the config as a letter or as the number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Grade(u8);

impl Grade {
    pub const A: Grade = Grade(4);
    pub const B: Grade = Grade(3);
    pub const C: Grade = Grade(2);
    pub const D: Grade = Grade(1);
    pub const F: Grade = Grade(0);

    /// The grade for a numeric value 0..=4.
    pub fn from_value(v: u8) -> Option<Grade> {
        (v <= 4).then_some(Grade(v))
    }

    /// Parses what a camera or a config writes: a letter (`A`..`F`, either
    /// case) or a number `0`..`4`, also with a fraction (`3.5` grades as B:
    /// ISO/IEC 15415 rounds an overall grade down to the letter band).
    pub fn parse(s: &str) -> Option<Grade> {
        let s = s.trim();
        if let Some(g) = Grade::from_letter(s) {
            return Some(g);
        }
        let v: f32 = s.parse().ok()?;
        if !(0.0..=4.0).contains(&v) {
            return None;
        }
        Grade::from_value(v.floor() as u8)
    }

    /// The grade for a letter `A`, `B`, `C`, `D` or `F` (either case).
    pub fn from_letter(c: &str) -> Option<Grade> {
        match c.to_ascii_uppercase().as_str() {
            "A" => Some(Grade::A),
            "B" => Some(Grade::B),
            "C" => Some(Grade::C),
            "D" => Some(Grade::D),
            "F" => Some(Grade::F),
            _ => None,
        }
    }

    /// 0 (F) ..= 4 (A).
    pub fn value(self) -> u8 {
        self.0
    }

    pub fn letter(self) -> char {
        ['F', 'D', 'C', 'B', 'A'][usize::from(self.0)]
    }
}

impl Default for Grade {
    fn default() -> Self {
        Grade::C
    }
}

impl fmt::Display for Grade {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.letter())
    }
}

const GRADE_EXPECTED: &str = "a grade letter A, B, C, D or F, or a number 0..=4 (A=4 .. F=0)";

impl<'de> Deserialize<'de> for Grade {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Grade;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(GRADE_EXPECTED)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Grade, E> {
                Grade::parse(s).ok_or_else(|| E::invalid_value(de::Unexpected::Str(s), &self))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Grade, E> {
                u8::try_from(n)
                    .ok()
                    .and_then(Grade::from_value)
                    .ok_or_else(|| E::invalid_value(de::Unexpected::Unsigned(n), &self))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Grade, E> {
                u8::try_from(n)
                    .ok()
                    .and_then(Grade::from_value)
                    .ok_or_else(|| E::invalid_value(de::Unexpected::Signed(n), &self))
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Grade {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_letters_and_numbers() {
        assert_eq!(Grade::parse("a"), Some(Grade::A));
        assert_eq!(Grade::parse(" C "), Some(Grade::C));
        assert_eq!(Grade::parse("3.5"), Some(Grade::B));
        assert_eq!(Grade::parse("0"), Some(Grade::F));
        for bad in ["E", "5", "-1", "", "x", "NaN", "inf"] {
            assert_eq!(Grade::parse(bad), None, "{bad}");
        }
        assert!(Grade::A > Grade::C && Grade::D < Grade::C);
    }
}
