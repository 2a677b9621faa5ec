//! Parsing the `~HS` host status reply (ZPL II): three frames, each
//! `STX fields ETX CR LF`.
//!
//! String 1: `aaa,b,c,dddd,eee,f,g,h,iii,j,k,l` — comm settings, paper out,
//! pause, label length, formats in receive buffer, buffer full, comm
//! diagnostics, partial format, unused, corrupt RAM, under/over temperature.
//! String 2: `mmm,n,o,p,q,r,s,t,uuuuuuuu,v,www` — function settings, unused,
//! head up, ribbon out, thermal transfer, print mode, print width mode,
//! label waiting, labels remaining in batch, format while printing,
//! graphics stored. String 3: `xxxx,y` — password, static RAM.

use thiserror::Error;

pub const STX: u8 = 0x02;
pub const ETX: u8 = 0x03;

/// Longest reply accepted; real ones are about 80 bytes.
pub const MAX_REPLY: usize = 512;

/// What the driver uses from `~HS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HostStatus {
    pub paper_out: bool,
    pub paused: bool,
    pub formats_in_buffer: u32,
    pub buffer_full: bool,
    pub partial_format: bool,
    pub under_temperature: bool,
    pub over_temperature: bool,
    pub head_up: bool,
    pub ribbon_out: bool,
    pub labels_remaining: u32,
}

impl HostStatus {
    /// Why the printer cannot print, if it cannot. Paper and head first:
    /// they are what the operator must fix; pause often follows them.
    pub fn fault_reason(&self) -> Option<&'static str> {
        if self.paper_out {
            Some("paper out")
        } else if self.head_up {
            Some("print head open")
        } else if self.ribbon_out {
            Some("ribbon out")
        } else if self.over_temperature {
            Some("print head over temperature")
        } else if self.paused {
            Some("printer paused")
        } else {
            None
        }
    }

    /// Everything sent has been printed: no format waiting or half-received
    /// and no label of a batch left.
    pub fn all_printed(&self) -> bool {
        self.formats_in_buffer == 0 && self.labels_remaining == 0 && !self.partial_format
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StatusError {
    #[error("~HS reply has {found} complete STX…ETX frames, expected 3")]
    Frames { found: usize },
    #[error("~HS reply byte {byte:#04x} at offset {pos} outside a frame")]
    Stray { pos: usize, byte: u8 },
    #[error("~HS string {string} has {found} fields, expected at least {want}")]
    Fields {
        string: usize,
        found: usize,
        want: usize,
    },
    #[error("~HS string {string} field {field} ({name}) is {value:?}, expected {expect}")]
    Value {
        string: usize,
        field: usize,
        name: &'static str,
        value: String,
        expect: &'static str,
    },
}

/// True once `buf` holds three ETX bytes (the reply may arrive in pieces).
pub fn reply_complete(buf: &[u8]) -> bool {
    buf.iter().filter(|b| **b == ETX).count() >= 3
}

/// Split into the contents of STX…ETX frames; CR, LF and spaces between
/// frames are ignored, anything else is an error.
fn frames(buf: &[u8]) -> Result<Vec<&[u8]>, StatusError> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < buf.len() {
        match buf[i] {
            STX => {
                let rest = &buf[i + 1..];
                match rest.iter().position(|b| *b == ETX) {
                    Some(end) => {
                        out.push(&rest[..end]);
                        i += end + 2;
                    }
                    None => break,
                }
            }
            b'\r' | b'\n' | b' ' => i += 1,
            byte => return Err(StatusError::Stray { pos: i, byte }),
        }
    }
    Ok(out)
}

fn fields(frame: &[u8], string: usize, want: usize) -> Result<Vec<String>, StatusError> {
    let text = String::from_utf8_lossy(frame);
    let f: Vec<String> = text.split(',').map(|s| s.trim().to_string()).collect();
    if f.len() < want {
        return Err(StatusError::Fields {
            string,
            found: f.len(),
            want,
        });
    }
    Ok(f)
}

fn flag(
    f: &[String],
    string: usize,
    field: usize,
    name: &'static str,
) -> Result<bool, StatusError> {
    match f.get(field).map(String::as_str) {
        Some("0") => Ok(false),
        Some("1") => Ok(true),
        other => Err(StatusError::Value {
            string,
            field,
            name,
            value: other.unwrap_or_default().to_string(),
            expect: "0 or 1",
        }),
    }
}

fn number(
    f: &[String],
    string: usize,
    field: usize,
    name: &'static str,
) -> Result<u32, StatusError> {
    let v = f.get(field).map(String::as_str).unwrap_or_default();
    // from_str would accept a leading '+'; the printer sends plain digits.
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(StatusError::Value {
            string,
            field,
            name,
            value: v.to_string(),
            expect: "decimal digits",
        });
    }
    v.parse().map_err(|_| StatusError::Value {
        string,
        field,
        name,
        value: v.to_string(),
        expect: "a number below 2^32",
    })
}

/// Parse a complete `~HS` reply.
pub fn parse_host_status(buf: &[u8]) -> Result<HostStatus, StatusError> {
    let fr = frames(buf)?;
    if fr.len() < 3 {
        return Err(StatusError::Frames { found: fr.len() });
    }
    let s1 = fields(fr[0], 1, 12)?;
    let s2 = fields(fr[1], 2, 11)?;
    fields(fr[2], 3, 2)?;
    Ok(HostStatus {
        paper_out: flag(&s1, 1, 1, "paper out")?,
        paused: flag(&s1, 1, 2, "pause")?,
        formats_in_buffer: number(&s1, 1, 4, "formats in receive buffer")?,
        buffer_full: flag(&s1, 1, 5, "buffer full")?,
        partial_format: flag(&s1, 1, 7, "partial format")?,
        under_temperature: flag(&s1, 1, 10, "under temperature")?,
        over_temperature: flag(&s1, 1, 11, "over temperature")?,
        head_up: flag(&s2, 2, 2, "head up")?,
        ribbon_out: flag(&s2, 2, 3, "ribbon out")?,
        labels_remaining: number(&s2, 2, 8, "labels remaining")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const OK: &[u8] = b"\x02030,0,0,1245,000,0,0,0,000,0,0,0\x03\r\n\x02001,0,0,0,1,2,6,0,00000000,1,000\x03\r\n\x021234,0\x03\r\n";

    #[test]
    fn parses_idle_printer() {
        let s = parse_host_status(OK).unwrap();
        assert_eq!(s, HostStatus::default());
        assert!(s.all_printed());
        assert_eq!(s.fault_reason(), None);
        assert!(reply_complete(OK));
        assert!(!reply_complete(&OK[..OK.len() - 5]));
    }

    #[test]
    fn parses_flags_and_counts() {
        let r = b"\x02030,1,1,1245,002,0,0,0,000,0,0,0\x03\r\n\x02001,0,1,0,1,2,6,0,00000001,1,000\x03\r\n\x021234,0\x03\r\n";
        let s = parse_host_status(r).unwrap();
        assert!(s.paper_out && s.paused && s.head_up);
        assert_eq!(s.formats_in_buffer, 2);
        assert_eq!(s.labels_remaining, 1);
        assert!(!s.all_printed());
        assert_eq!(s.fault_reason(), Some("paper out"));
    }

    #[test]
    fn errors_name_the_field() {
        let r = b"\x02030,x,0,1245,000,0,0,0,000,0,0,0\x03\x02001,0,0,0,1,2,6,0,00000000,1,000\x03\x021234,0\x03";
        assert_eq!(
            parse_host_status(r),
            Err(StatusError::Value {
                string: 1,
                field: 1,
                name: "paper out",
                value: "x".into(),
                expect: "0 or 1"
            })
        );
        assert_eq!(
            parse_host_status(b"\x02a\x03"),
            Err(StatusError::Frames { found: 1 })
        );
        assert!(matches!(
            parse_host_status(b"junk"),
            Err(StatusError::Stray { pos: 0, byte: b'j' })
        ));
    }

    proptest! {
        #[test]
        fn parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_host_status(&bytes);
            let _ = reply_complete(&bytes);
        }

        #[test]
        fn parser_never_panics_on_framed_noise(
            a in "[0-9,x+-]{0,40}", b in "[0-9,x+-]{0,40}", c in "[0-9,]{0,10}"
        ) {
            let r = format!("\x02{a}\x03\r\n\x02{b}\x03\r\n\x02{c}\x03\r\n");
            let _ = parse_host_status(r.as_bytes());
        }
    }
}
