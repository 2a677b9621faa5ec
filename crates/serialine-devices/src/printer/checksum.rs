//! Frame checksums, written as ASCII hex before the end byte.

use serde::{Deserialize, Serialize};

/// How a frame's payload is checked. The checksum covers the payload only
/// (the bytes between the start byte and the checksum digits) and is written
/// as upper-case hex ASCII: 2 digits for `xor`/`sum8`, 4 for `crc16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Checksum {
    #[default]
    None,
    /// XOR of all payload bytes.
    Xor,
    /// Sum of all payload bytes mod 256.
    Sum8,
    /// CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, not reflected, no final
    /// XOR; check value 0x29B1 for "123456789"), the variant most printer
    /// manuals call "CRC-CCITT".
    Crc16,
}

impl Checksum {
    /// Number of hex digits on the wire.
    pub fn width(self) -> usize {
        match self {
            Checksum::None => 0,
            Checksum::Xor | Checksum::Sum8 => 2,
            Checksum::Crc16 => 4,
        }
    }

    /// The checksum value of `payload` (0 for `None`).
    pub fn compute(self, payload: &[u8]) -> u16 {
        match self {
            Checksum::None => 0,
            Checksum::Xor => u16::from(payload.iter().fold(0u8, |a, b| a ^ b)),
            Checksum::Sum8 => u16::from(payload.iter().fold(0u8, |a, b| a.wrapping_add(*b))),
            Checksum::Crc16 => crc16_ccitt_false(payload),
        }
    }

    /// Appends the upper-case hex digits of `payload`'s checksum.
    pub fn write_hex(self, payload: &[u8], out: &mut Vec<u8>) {
        let v = self.compute(payload);
        let w = self.width();
        for i in (0..w).rev() {
            let nibble = ((v >> (4 * i)) & 0xF) as u8;
            out.push(b"0123456789ABCDEF"[usize::from(nibble)]);
        }
    }

    /// Parses `width()` hex digits (either case); `None` if not hex.
    pub fn parse_hex(digits: &[u8]) -> Option<u16> {
        if digits.is_empty() || digits.len() > 4 {
            return None;
        }
        digits.iter().try_fold(0u16, |acc, &d| {
            let n = char::from(d).to_digit(16)?;
            Some((acc << 4) | n as u16)
        })
    }
}

/// CRC-16/CCITT-FALSE, bitwise: at serial-line rates a table buys nothing.
fn crc16_ccitt_false(data: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        assert_eq!(Checksum::Crc16.compute(b"123456789"), 0x29B1);
        assert_eq!(Checksum::Xor.compute(&[0x01, 0x02, 0x04]), 0x07);
        assert_eq!(Checksum::Sum8.compute(&[0xFF, 0x02]), 0x01);
        let mut out = Vec::new();
        Checksum::Crc16.write_hex(b"123456789", &mut out);
        assert_eq!(out, b"29B1");
        out.clear();
        Checksum::Xor.write_hex(&[0x0A], &mut out);
        assert_eq!(out, b"0A");
        assert_eq!(Checksum::parse_hex(b"29b1"), Some(0x29B1));
        assert_eq!(Checksum::parse_hex(b"2G"), None);
        assert_eq!(Checksum::parse_hex(b""), None);
    }
}
