//! The checker's own reading of what the framed printer received (issue 20).
//!
//! Written from the profile's specification (config/printer-*.toml and the
//! field comments of `FramedProfile`), not from the daemon's `FrameDecoder`
//! or its message `Template`: the printer simulator decodes with those, so a
//! checker that used them too would share their faults and could not see a
//! frame the daemon garbled in a way its own decoder accepts.
//!
//! The specification, as read here:
//! - a frame is `start payload checksum end`; the checksum is the payload's
//!   `xor`, `sum8` (sum mod 256) or `crc16` (CRC-16/CCITT-FALSE: poly 0x1021,
//!   init 0xFFFF, not reflected, no final XOR), written as upper-case hex,
//!   2 digits (4 for crc16), none for `none`;
//! - the payload is the `message` template with `{id}` (digits), `{id:0N}` /
//!   `{id:N}` (exactly N digits), `{code}` (the rendered code: a GS1 element
//!   string, printable ASCII and GS separators) and `{{` / `}}` for braces;
//! - payload and checksum together are at most `max_frame` bytes;
//! - ACK / NAK go bare between frames, but only from the printer: the host
//!   sends nothing but frames.
//!
//! So on the host → printer side (the recording's `rx` bytes) every byte
//! belongs to a well-formed frame that matches the message template, and
//! anything else is a [`WireFault`].

use serialine_devices::printer::{Checksum, FramedProfile};
use std::fmt;

/// One piece of the message template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Lit(Vec<u8>),
    /// `Some(n)`: exactly n digits; `None`: one or more.
    Id(Option<usize>),
    Code,
}

/// The checksums the profile documentation names, computed here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sum {
    None,
    Xor,
    Sum8,
    Crc16,
}

impl Sum {
    fn digits(self) -> usize {
        match self {
            Sum::None => 0,
            Sum::Xor | Sum::Sum8 => 2,
            Sum::Crc16 => 4,
        }
    }

    fn of(self, payload: &[u8]) -> u16 {
        match self {
            Sum::None => 0,
            Sum::Xor => u16::from(payload.iter().fold(0u8, |a, &b| a ^ b)),
            Sum::Sum8 => u16::from(payload.iter().fold(0u8, |a, &b| a.wrapping_add(b))),
            Sum::Crc16 => {
                let mut crc: u16 = 0xFFFF;
                for &b in payload {
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
        }
    }

    /// The checksum as it must appear on the wire.
    fn hex(self, payload: &[u8]) -> Vec<u8> {
        let v = self.of(payload);
        let s = match self.digits() {
            0 => String::new(),
            2 => format!("{v:02X}"),
            _ => format!("{v:04X}"),
        };
        s.into_bytes()
    }
}

/// A profile read as the wire specification.
#[derive(Debug, Clone)]
pub struct WireSpec {
    start: u8,
    end: u8,
    sum: Sum,
    message: Vec<Piece>,
    max_frame: usize,
}

impl WireSpec {
    /// Reads the profile's fields; a template this reading does not
    /// understand is an error (the checker cannot vouch for its frames).
    pub fn from_profile(p: &FramedProfile) -> Result<WireSpec, String> {
        let sum = match p.checksum {
            Checksum::None => Sum::None,
            Checksum::Xor => Sum::Xor,
            Checksum::Sum8 => Sum::Sum8,
            Checksum::Crc16 => Sum::Crc16,
        };
        let message = parse_template(&p.message)?;
        if message.iter().filter(|x| **x == Piece::Code).count() != 1 {
            return Err(format!(
                "message template {:?} must hold {{code}} exactly once",
                p.message
            ));
        }
        Ok(WireSpec {
            start: p.start,
            end: p.end,
            sum,
            message,
            max_frame: p.max_frame,
        })
    }

    /// The bytes of one message frame, written from the specification (for
    /// the checker's tests: a hand-made recording).
    pub fn frame(&self, id: u64, code: &str) -> Vec<u8> {
        let mut payload = Vec::new();
        for piece in &self.message {
            match piece {
                Piece::Lit(l) => payload.extend_from_slice(l),
                Piece::Id(None) => payload.extend_from_slice(id.to_string().as_bytes()),
                Piece::Id(Some(n)) => {
                    let m = 10u128.pow(*n as u32);
                    let s = format!("{:0width$}", u128::from(id) % m, width = *n);
                    payload.extend_from_slice(s.as_bytes());
                }
                Piece::Code => payload.extend_from_slice(code.as_bytes()),
            }
        }
        let mut out = vec![self.start];
        out.extend_from_slice(&payload);
        out.extend_from_slice(&self.sum.hex(&payload));
        out.push(self.end);
        out
    }
}

fn parse_template(t: &str) -> Result<Vec<Piece>, String> {
    let b = t.as_bytes();
    let mut out = Vec::new();
    let mut lit = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'{' if b.get(i + 1) == Some(&b'{') => {
                lit.push(b'{');
                i += 2;
            }
            b'}' if b.get(i + 1) == Some(&b'}') => {
                lit.push(b'}');
                i += 2;
            }
            b'{' => {
                let close = b[i..]
                    .iter()
                    .position(|&c| c == b'}')
                    .ok_or_else(|| format!("template {t:?}: unclosed '{{'"))?;
                let field = &t[i + 1..i + close];
                let piece = match field {
                    "code" => Piece::Code,
                    "id" => Piece::Id(None),
                    f => match f.strip_prefix("id:") {
                        Some(w) if !w.is_empty() && w.bytes().all(|c| c.is_ascii_digit()) => {
                            let n: usize = w
                                .parse()
                                .map_err(|_| format!("template {t:?}: id width {w:?}"))?;
                            if n == 0 || n > 19 {
                                return Err(format!("template {t:?}: id width {n}"));
                            }
                            Piece::Id(Some(n))
                        }
                        _ => return Err(format!("template {t:?}: unknown field {{{f}}}")),
                    },
                };
                if !lit.is_empty() {
                    out.push(Piece::Lit(std::mem::take(&mut lit)));
                }
                out.push(piece);
                i += close + 1;
            }
            b'}' => return Err(format!("template {t:?}: stray '}}'")),
            c => {
                lit.push(c);
                i += 1;
            }
        }
    }
    if !lit.is_empty() {
        out.push(Piece::Lit(lit));
    }
    Ok(out)
}

/// A message frame the printer received, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireFrame {
    /// Offset of its start byte in the received stream.
    pub at: usize,
    /// The id digits as sent.
    pub id: String,
    /// The code, as the printer would mark it.
    pub code: String,
}

/// Bytes on the host → printer side that are not a well-formed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireFault {
    /// Bytes outside any frame (the host sends only frames).
    Noise { at: usize, len: usize },
    /// A frame cut short: a new start byte, or the end of the recording,
    /// came before its end byte.
    Unfinished { at: usize, len: usize },
    /// Payload and checksum longer than `max_frame`.
    TooLong { at: usize, limit: usize },
    /// Checksum digits missing, not upper-case hex, or wrong.
    BadChecksum {
        at: usize,
        payload: String,
        sent: String,
        want: String,
    },
    /// Checksum right, payload not the message template (or its code not
    /// printable).
    Unmatched { at: usize, payload: String },
}

impl fmt::Display for WireFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireFault::Noise { at, len } => {
                write!(f, "{len} byte(s) outside any frame at byte {at}")
            }
            WireFault::Unfinished { at, len } => write!(
                f,
                "frame at byte {at} cut short after {len} byte(s), no end byte"
            ),
            WireFault::TooLong { at, limit } => {
                write!(f, "frame at byte {at} longer than max_frame {limit}")
            }
            WireFault::BadChecksum {
                at,
                payload,
                sent,
                want,
            } => write!(
                f,
                "frame at byte {at} ({payload:?}) carries checksum {sent:?}, the profile's is {want:?}"
            ),
            WireFault::Unmatched { at, payload } => write!(
                f,
                "frame at byte {at} ({payload:?}) does not match the profile's message template"
            ),
        }
    }
}

/// Everything read from one side of the wire.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WireRead {
    pub frames: Vec<WireFrame>,
    pub faults: Vec<WireFault>,
}

/// Reads the host → printer byte stream.
pub fn read(spec: &WireSpec, bytes: &[u8]) -> WireRead {
    let mut out = WireRead::default();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != spec.start {
            let at = i;
            while i < bytes.len() && bytes[i] != spec.start {
                i += 1;
            }
            out.faults.push(WireFault::Noise { at, len: i - at });
            continue;
        }
        let at = i;
        i += 1;
        let body_start = i;
        while i < bytes.len() && bytes[i] != spec.end && bytes[i] != spec.start {
            i += 1;
        }
        let body = &bytes[body_start..i];
        if i >= bytes.len() || bytes[i] == spec.start {
            // Not consumed: a start byte begins the next frame.
            out.faults.push(WireFault::Unfinished { at, len: i - at });
            continue;
        }
        i += 1; // the end byte
        if body.len() > spec.max_frame {
            out.faults.push(WireFault::TooLong {
                at,
                limit: spec.max_frame,
            });
            continue;
        }
        match frame_of(spec, at, body) {
            Ok(f) => out.frames.push(f),
            Err(fault) => out.faults.push(fault),
        }
    }
    out
}

fn frame_of(spec: &WireSpec, at: usize, body: &[u8]) -> Result<WireFrame, WireFault> {
    let w = spec.sum.digits();
    let shown = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    if body.len() < w {
        return Err(WireFault::BadChecksum {
            at,
            payload: String::new(),
            sent: shown(body),
            want: format!("{w} hex digits"),
        });
    }
    let (payload, digits) = body.split_at(body.len() - w);
    let want = spec.sum.hex(payload);
    if digits != want.as_slice() {
        return Err(WireFault::BadChecksum {
            at,
            payload: shown(payload),
            sent: shown(digits),
            want: shown(&want),
        });
    }
    let unmatched = || WireFault::Unmatched {
        at,
        payload: shown(payload),
    };
    let mut caps = Caps::default();
    if !matches(&spec.message, payload, &mut caps) {
        return Err(unmatched());
    }
    let code = caps.code.ok_or_else(unmatched)?;
    // A rendered code is printable ASCII with GS (0x1D) separators.
    if code.is_empty() || !code.iter().all(|&c| c == 0x1D || (0x20..0x7F).contains(&c)) {
        return Err(unmatched());
    }
    Ok(WireFrame {
        at,
        id: shown(caps.id.unwrap_or_default()),
        code: shown(code),
    })
}

#[derive(Default, Clone, Copy)]
struct Caps<'a> {
    id: Option<&'a [u8]>,
    code: Option<&'a [u8]>,
}

/// Whether `s` is exactly `pieces`, capturing the fields (backtracking:
/// the code may contain the template's literal characters).
fn matches<'a>(pieces: &[Piece], s: &'a [u8], caps: &mut Caps<'a>) -> bool {
    let Some((first, rest)) = pieces.split_first() else {
        return s.is_empty();
    };
    match first {
        Piece::Lit(l) => s.starts_with(l) && matches(rest, &s[l.len()..], caps),
        Piece::Id(width) => {
            let run = s.iter().take_while(|c| c.is_ascii_digit()).count();
            let lens: Vec<usize> = match width {
                Some(n) if run >= *n => vec![*n],
                Some(_) => Vec::new(),
                None => (1..=run).rev().collect(),
            };
            for n in lens {
                let saved = *caps;
                caps.id = Some(&s[..n]);
                if matches(rest, &s[n..], caps) {
                    return true;
                }
                *caps = saved;
            }
            false
        }
        Piece::Code => {
            for n in (1..=s.len()).rev() {
                let saved = *caps;
                caps.code = Some(&s[..n]);
                if matches(rest, &s[n..], caps) {
                    return true;
                }
                *caps = saved;
            }
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(checksum: &str, message: &str) -> WireSpec {
        let p: FramedProfile = toml::from_str(&format!(
            "checksum = {checksum:?}\nmessage = {message:?}\ncomplete = \"D{{id:04}}\"\nbuffer_depth = 4\nmax_frame = 64\n"
        ))
        .unwrap();
        WireSpec::from_profile(&p).unwrap()
    }

    #[test]
    fn crc16_is_ccitt_false() {
        assert_eq!(Sum::Crc16.of(b"123456789"), 0x29B1);
        assert_eq!(Sum::Xor.of(b"\x01\x02\x04"), 7);
        assert_eq!(Sum::Sum8.of(&[0xFF, 0x02]), 1);
    }

    #[test]
    fn well_formed_frames_decode() {
        let s = spec("xor", "P{id:04}|{code}");
        let mut bytes = s.frame(12345, "01x\u{1d}21A|B");
        bytes.extend(s.frame(7, "C"));
        let r = read(&s, &bytes);
        assert_eq!(r.faults, vec![]);
        assert_eq!(r.frames.len(), 2);
        assert_eq!(r.frames[0].id, "2345");
        assert_eq!(r.frames[0].code, "01x\u{1d}21A|B");
        assert_eq!(r.frames[1].id, "0007");
        let s = spec("crc16", "MSG{id};{code}!");
        let r = read(&s, &s.frame(99, "X;Y"));
        assert_eq!(r.faults, vec![]);
        assert_eq!(
            (r.frames[0].id.as_str(), r.frames[0].code.as_str()),
            ("99", "X;Y")
        );
    }

    #[test]
    fn every_malformation_is_a_fault() {
        let s = spec("xor", "P{id:04}|{code}");
        let good = s.frame(1, "CODE");
        let cases: Vec<(Vec<u8>, &str)> = vec![
            ([b"x".as_slice(), &good].concat(), "noise"),
            (good[..good.len() - 1].to_vec(), "unfinished at end"),
            ([&good[..5], good.as_slice()].concat(), "restarted"),
            (
                {
                    let mut g = good.clone();
                    g[3] = b'9';
                    g
                },
                "bad checksum",
            ),
            (s.frame(1, "").to_vec(), "empty code"),
            (
                spec("xor", "Q{id:04}|{code}").frame(1, "CODE"),
                "other template",
            ),
            (s.frame(1, &"C".repeat(80)), "too long"),
            (s.frame(1, "A\u{7}B"), "control byte in code"),
        ];
        for (bytes, what) in cases {
            let r = read(&s, &bytes);
            assert!(!r.faults.is_empty(), "{what}: {r:?}");
        }
        // Upper-case hex only: a lower-case checksum is not the profile's.
        let code = (0..100)
            .map(|i| format!("C{i}"))
            .find(|c| {
                let f = s.frame(1, c);
                f[f.len() - 3..f.len() - 1]
                    .iter()
                    .any(u8::is_ascii_alphabetic)
            })
            .unwrap();
        let mut lower = s.frame(1, &code);
        let n = lower.len();
        lower[n - 3..n - 1].make_ascii_lowercase();
        assert!(!read(&s, &lower).faults.is_empty());
    }

    #[test]
    fn templates_outside_the_specification_are_refused() {
        for t in [
            "P{id:04}",
            "P{code}{code}",
            "P{idx}{code}",
            "P{code",
            "P}{code}",
            "{id:0}{code}",
        ] {
            let p: FramedProfile = toml::from_str(&format!(
                "message = {t:?}\ncomplete = \"D\"\nbuffer_depth = 4\n"
            ))
            .unwrap();
            assert!(WireSpec::from_profile(&p).is_err(), "{t}");
        }
    }
}
