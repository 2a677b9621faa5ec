//! The laser marker's register map (from config) and the pure decoding of
//! what the marker reports: status bits, the mark counter, the packed code.
//!
//! Everything here is free of I/O so it can be tested exhaustively; the
//! driver only moves words between these functions and the Modbus client.

use crate::printer::Fnc1;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Modbus "write multiple registers" carries at most 123 words per request.
pub const MAX_WRITE_REGISTERS: u16 = 123;

/// Where the marker keeps what the driver needs. Addresses are 0-based
/// protocol addresses (the marker's manual may count from 1 or 40001).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaserRegisterMap {
    /// Modbus unit (slave) id; Modbus TCP gateways route on it.
    #[serde(default = "default_unit_id")]
    pub unit_id: u8,
    /// First holding register of the code text: 2 ASCII characters per
    /// register, first character in the high byte, zero padded.
    pub code_start: u16,
    /// Longest code, in characters, the marker's text field holds.
    pub code_max_len: u16,
    /// Holding register that receives the code length in characters, if the
    /// marker wants one (otherwise it stops at the first zero byte).
    #[serde(default)]
    pub length_register: Option<u16>,
    /// How a mark is started.
    pub trigger: Trigger,
    /// The status word and the meaning of its bits.
    pub status: StatusBits,
    /// Holding register counting completed marks (wraps at 65536).
    pub mark_counter_register: u16,
    /// How often the driver polls status and counter while waiting.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// How FNC1 (GS1 mode) is requested: `"printer"` (the marking file's
    /// code object is GS1 DataMatrix, which puts FNC1 first and reads each
    /// GS byte in the text as FNC1) or `"none"` (a plain symbol: Digital Link
    /// and plain-text jobs only). Registers carry no escape, so `"escape"`
    /// is refused. Absent: check-config warns for a GS1 element string job.
    #[serde(default)]
    pub fnc1: Option<Fnc1>,
}

fn default_unit_id() -> u8 {
    1
}

fn default_poll_interval_ms() -> u64 {
    20
}

/// How a mark is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Trigger {
    /// Pulse a coil: write ON then OFF. The marker starts on the rising edge.
    Coil { address: u16 },
    /// Write `value` to a holding register; the marker clears it itself.
    Register { address: u16, value: u16 },
}

/// The status register and its bits (0 = least significant).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusBits {
    pub register: u16,
    pub busy_bit: u8,
    pub error_bit: u8,
    pub interlock_open_bit: u8,
}

/// A register map that cannot work, named by field.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MapError {
    #[error("laser map: status.{field} = {bit} is not a bit of a 16-bit register (0..=15)")]
    BitOutOfRange { field: &'static str, bit: u8 },
    #[error("laser map: status.{a} and status.{b} are both bit {bit}")]
    BitShared {
        a: &'static str,
        b: &'static str,
        bit: u8,
    },
    #[error("laser map: code_max_len must be 1..={max} characters, got {got}")]
    CodeLen { got: u16, max: u16 },
    #[error("laser map: code registers {start}..+{count} run past address 65535")]
    CodeRange { start: u16, count: u16 },
    #[error("laser map: poll_interval_ms must be at least 1")]
    PollInterval,
    #[error(
        "laser map: fnc1 = \"escape\" is not supported (the code registers carry the text as \
         it is); set the marking file's code object to GS1 DataMatrix and fnc1 = \"printer\""
    )]
    Fnc1Escape,
}

impl LaserRegisterMap {
    /// Number of registers the code text occupies (always written in full
    /// so a shorter code never inherits the tail of the previous one).
    pub fn code_registers(&self) -> u16 {
        self.code_max_len.div_ceil(2)
    }

    pub fn validate(&self) -> Result<(), MapError> {
        let s = &self.status;
        let bits = [
            ("busy_bit", s.busy_bit),
            ("error_bit", s.error_bit),
            ("interlock_open_bit", s.interlock_open_bit),
        ];
        for (field, bit) in bits {
            if bit > 15 {
                return Err(MapError::BitOutOfRange { field, bit });
            }
        }
        for (i, (a, x)) in bits.iter().enumerate() {
            for (b, y) in bits.iter().skip(i + 1) {
                if x == y {
                    return Err(MapError::BitShared { a, b, bit: *x });
                }
            }
        }
        let max_chars = MAX_WRITE_REGISTERS * 2;
        if self.code_max_len == 0 || self.code_max_len > max_chars {
            return Err(MapError::CodeLen {
                got: self.code_max_len,
                max: max_chars,
            });
        }
        let count = self.code_registers();
        if self.code_start.checked_add(count - 1).is_none() {
            return Err(MapError::CodeRange {
                start: self.code_start,
                count,
            });
        }
        if self.poll_interval_ms == 0 {
            return Err(MapError::PollInterval);
        }
        if self.fnc1 == Some(Fnc1::Escape) {
            return Err(MapError::Fnc1Escape);
        }
        Ok(())
    }
}

/// The marker's condition as the status word tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaserStatus {
    pub busy: bool,
    pub error: bool,
    pub interlock_open: bool,
}

/// What the driver should do about a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaserState {
    Ready,
    Busy,
    Error,
    InterlockOpen,
}

impl LaserStatus {
    /// Interlock outranks error (opening a door usually also raises error,
    /// and "close the door" is the actionable message), error outranks busy.
    pub fn state(self) -> LaserState {
        if self.interlock_open {
            LaserState::InterlockOpen
        } else if self.error {
            LaserState::Error
        } else if self.busy {
            LaserState::Busy
        } else {
            LaserState::Ready
        }
    }

    /// Why the marker cannot mark, if it cannot.
    pub fn fault_reason(self) -> Option<&'static str> {
        match self.state() {
            LaserState::InterlockOpen => Some("laser interlock open"),
            LaserState::Error => Some("laser reports error"),
            LaserState::Ready | LaserState::Busy => None,
        }
    }
}

fn bit(word: u16, bit: u8) -> bool {
    // checked_shr keeps a bad (unvalidated) bit number from panicking.
    word.checked_shr(u32::from(bit)).is_some_and(|w| w & 1 == 1)
}

/// Decode the status word. Bits outside 0..=15 read as clear.
pub fn decode_status(word: u16, bits: &StatusBits) -> LaserStatus {
    LaserStatus {
        busy: bit(word, bits.busy_bit),
        error: bit(word, bits.error_bit),
        interlock_open: bit(word, bits.interlock_open_bit),
    }
}

/// Marks completed between two readings of the wrapping 16-bit counter.
/// Ambiguous beyond 65535 marks between polls, which a poll interval of
/// milliseconds cannot reach.
pub fn counter_delta(before: u16, now: u16) -> u16 {
    now.wrapping_sub(before)
}

/// A code the marker's text registers cannot carry.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CodeError {
    #[error("code is empty")]
    Empty,
    #[error("code has {len} characters, the marker holds at most {max}")]
    TooLong { len: usize, max: u16 },
    #[error("code character {ch:?} at position {pos} is not ASCII 0x01..=0x7F")]
    NotAscii { pos: usize, ch: char },
}

/// Pack a code into `code_registers` words: two ASCII bytes per word, high
/// byte first, zero padded to the full field. NUL is refused because it is
/// the padding and would cut the code short on the marker.
pub fn pack_code(code: &str, max_len: u16) -> Result<Vec<u16>, CodeError> {
    if code.is_empty() {
        return Err(CodeError::Empty);
    }
    if let Some((pos, ch)) = code
        .chars()
        .enumerate()
        .find(|(_, c)| !c.is_ascii() || *c == '\0')
    {
        return Err(CodeError::NotAscii { pos, ch });
    }
    let bytes = code.as_bytes();
    if bytes.len() > usize::from(max_len) {
        return Err(CodeError::TooLong {
            len: bytes.len(),
            max: max_len,
        });
    }
    let mut words = vec![0u16; usize::from(max_len.div_ceil(2))];
    for (word, pair) in words.iter_mut().zip(bytes.chunks(2)) {
        let hi = u16::from(pair[0]);
        let lo = pair.get(1).copied().map_or(0, u16::from);
        *word = (hi << 8) | lo;
    }
    Ok(words)
}

/// Inverse of [`pack_code`]: bytes up to the first NUL (or `len`, when the
/// marker has a length register). Non-ASCII bytes become U+FFFD.
pub fn unpack_code(words: &[u16], len: Option<usize>) -> String {
    let bytes = words.iter().flat_map(|w| w.to_be_bytes());
    let limit = len.unwrap_or(usize::MAX);
    let bytes: Vec<u8> = bytes.take(limit).take_while(|b| *b != 0).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bits() -> StatusBits {
        StatusBits {
            register: 10,
            busy_bit: 0,
            error_bit: 1,
            interlock_open_bit: 2,
        }
    }

    fn map() -> LaserRegisterMap {
        LaserRegisterMap {
            unit_id: 1,
            code_start: 100,
            code_max_len: 64,
            length_register: Some(99),
            trigger: Trigger::Coil { address: 0 },
            status: bits(),
            mark_counter_register: 20,
            poll_interval_ms: 20,
            fnc1: Some(Fnc1::Printer),
        }
    }

    #[test]
    fn status_priorities() {
        let b = bits();
        assert_eq!(decode_status(0, &b).state(), LaserState::Ready);
        assert_eq!(decode_status(0b001, &b).state(), LaserState::Busy);
        assert_eq!(decode_status(0b011, &b).state(), LaserState::Error);
        assert_eq!(decode_status(0b111, &b).state(), LaserState::InterlockOpen);
        assert_eq!(decode_status(0b1000, &b).state(), LaserState::Ready);
        assert_eq!(
            decode_status(0b010, &b).fault_reason(),
            Some("laser reports error")
        );
    }

    #[test]
    fn counter_wraps() {
        assert_eq!(counter_delta(5, 6), 1);
        assert_eq!(counter_delta(65535, 0), 1);
        assert_eq!(counter_delta(65534, 1), 3);
        assert_eq!(counter_delta(7, 7), 0);
    }

    #[test]
    fn pack_is_big_endian_and_padded() {
        assert_eq!(pack_code("ABC", 6), Ok(vec![0x4142, 0x4300, 0]));
        assert_eq!(
            pack_code("AB", 1),
            Err(CodeError::TooLong { len: 2, max: 1 })
        );
        assert_eq!(pack_code("", 4), Err(CodeError::Empty));
        assert!(matches!(
            pack_code("Aé", 8),
            Err(CodeError::NotAscii { pos: 1, .. })
        ));
        assert!(matches!(
            pack_code("A\0", 8),
            Err(CodeError::NotAscii { pos: 1, .. })
        ));
        // GS (FNC1 separator) is ordinary ASCII and must survive.
        let gs = "01095060001343521727123110ABC\u{1d}21X";
        assert_eq!(unpack_code(&pack_code(gs, 64).unwrap(), None), gs);
        assert_eq!(unpack_code(&[0x4142, 0x4344], Some(3)), "ABC");
    }

    #[test]
    fn validate_names_the_field() {
        assert_eq!(map().validate(), Ok(()));
        let mut m = map();
        m.status.error_bit = 16;
        assert_eq!(
            m.validate(),
            Err(MapError::BitOutOfRange {
                field: "error_bit",
                bit: 16
            })
        );
        let mut m = map();
        m.status.interlock_open_bit = 0;
        assert!(matches!(
            m.validate(),
            Err(MapError::BitShared { bit: 0, .. })
        ));
        let mut m = map();
        m.code_max_len = 247;
        assert!(matches!(m.validate(), Err(MapError::CodeLen { .. })));
        let mut m = map();
        m.code_start = 65530;
        assert!(matches!(m.validate(), Err(MapError::CodeRange { .. })));
        let mut m = map();
        m.poll_interval_ms = 0;
        assert_eq!(m.validate(), Err(MapError::PollInterval));
        let mut m = map();
        m.fnc1 = Some(Fnc1::Escape);
        assert_eq!(m.validate(), Err(MapError::Fnc1Escape));
        m.fnc1 = None;
        assert_eq!(m.validate(), Ok(()));
    }

    proptest! {
        #[test]
        fn decoding_never_panics(word: u16, b0: u8, b1: u8, b2: u8, before: u16, now: u16) {
            let b = StatusBits { register: 0, busy_bit: b0, error_bit: b1, interlock_open_bit: b2 };
            let s = decode_status(word, &b);
            let _ = s.state();
            let _ = s.fault_reason();
            prop_assert_eq!(before.wrapping_add(counter_delta(before, now)), now);
        }

        #[test]
        fn unpack_never_panics(words: Vec<u16>, len: Option<usize>) {
            let _ = unpack_code(&words, len);
        }

        #[test]
        fn pack_round_trips(code in "[\\x01-\\x7f]{1,64}", extra in 0u16..8) {
            let max = u16::try_from(code.len()).unwrap() + extra;
            let words = pack_code(&code, max).unwrap();
            prop_assert_eq!(words.len(), usize::from(max.div_ceil(2)));
            prop_assert_eq!(unpack_code(&words, None), code.clone());
            prop_assert_eq!(unpack_code(&words, Some(code.len())), code);
        }

        #[test]
        fn pack_never_panics(code in any::<String>(), max: u16) {
            let _ = pack_code(&code, max);
        }
    }
}
