//! The framed-ASCII printer profile, as written in `config/printer-*.toml`.

use super::checksum::Checksum;
use super::template::{Template, TemplateError};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::time::Duration;

/// ASCII GS: what Serialine's GS1 element strings carry where FNC1 separates
/// a variable-length field from the next AI.
const GS: char = '\u{1d}';

/// How a printer is made to print a GS1 DataMatrix (or GS1 QR Code): the
/// symbol must start with FNC1, and FNC1 must end every variable-length
/// field that is not last. Serialine's element string carries GS (0x1D) for
/// the separators and nothing for the leading FNC1; what turns that into
/// a GS1 symbol differs per printer, so each profile says it. Without FNC1
/// first the symbol is a plain Data Matrix: a camera reports it as `]d1`,
/// and the line rejects the unit (`serialine_core::code::CodeError::NotGs1Symbol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fnc1 {
    /// The printer's own job/layout sets the code object to GS1 DataMatrix
    /// (or GS1 QR): the printer puts FNC1 first and reads each GS in the
    /// code as FNC1. Serialine sends the element string unchanged.
    Printer,
    /// The printer takes FNC1 as an escape sequence in the message
    /// (`fnc1_escape`, e.g. `~1`): Serialine writes it before the code and
    /// in place of each GS.
    Escape,
    /// The printer prints the text as it is, a plain symbol: right for
    /// Digital Link URIs (GS1 puts them in plain QR/Data Matrix) and plain
    /// text, wrong for GS1 element string jobs (check-config refuses those).
    None,
}

impl Fnc1 {
    pub fn as_str(self) -> &'static str {
        match self {
            Fnc1::Printer => "printer",
            Fnc1::Escape => "escape",
            Fnc1::None => "none",
        }
    }
}

/// Everything that differs between framed-ASCII printers: framing bytes,
/// checksum, message and report formats, handshake and buffer size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FramedProfile {
    /// Frame start byte (STX).
    #[serde(default = "stx")]
    pub start: u8,
    /// Frame end byte (ETX).
    #[serde(default = "etx")]
    pub end: u8,
    #[serde(default)]
    pub checksum: Checksum,
    /// The message that loads one code, e.g. `"P{id:04}|{code}"`.
    pub message: String,
    /// The frame the printer sends when a unit is printed, e.g. `"D{id:04}"`.
    pub complete: String,
    /// Positive acknowledgement byte, sent bare (outside frames) in the
    /// order messages arrived.
    #[serde(default = "ack")]
    pub ack: u8,
    /// Negative acknowledgement byte: the message was not taken.
    #[serde(default = "nak")]
    pub nak: u8,
    /// A message not answered by ACK/NAK within this long is a fault.
    #[serde(default = "default_ack_timeout_ms")]
    pub ack_timeout_ms: u64,
    /// An accepted unit not reported printed within this long is a fault;
    /// absent (the default) means no limit, because print timing follows the
    /// line's product flow, which can stop for minutes.
    #[serde(default)]
    pub print_timeout_ms: Option<u64>,
    /// Codes the printer can hold at once (accepted, not yet printed).
    pub buffer_depth: usize,
    /// Longest frame (payload + checksum) accepted before resyncing.
    #[serde(default = "default_max_frame")]
    pub max_frame: usize,
    /// How FNC1 (GS1 mode) is requested; see [`Fnc1`]. Absent: the profile
    /// does not say, which check-config warns about for a GS1 element
    /// string job.
    #[serde(default)]
    pub fnc1: Option<Fnc1>,
    /// The printer's FNC1 escape sequence, for `fnc1 = "escape"` only.
    #[serde(default)]
    pub fnc1_escape: Option<String>,
}

fn stx() -> u8 {
    0x02
}
fn etx() -> u8 {
    0x03
}
fn ack() -> u8 {
    0x06
}
fn nak() -> u8 {
    0x15
}
fn default_ack_timeout_ms() -> u64 {
    1_000
}
fn default_max_frame() -> usize {
    1_024
}

/// A profile that cannot work, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    #[error("printer profile: message template: {0}")]
    Message(#[source] TemplateError),
    #[error("printer profile: complete template: {0}")]
    Complete(#[source] TemplateError),
    #[error("printer profile: message template {0:?} needs {{code}} and {{id}}")]
    MessageFields(String),
    #[error(
        "printer profile: complete template {0:?} needs {{id}} (to match reports to units) \
         and must not contain {{code}}"
    )]
    CompleteFields(String),
    #[error("printer profile: start, end, ack and nak bytes must all differ")]
    ControlBytesClash,
    #[error("printer profile: buffer_depth must be >= 1")]
    ZeroBuffer,
    #[error(
        "printer profile: buffer_depth {depth} must be below 10^{width} so an {width}-digit \
         message id is unique among the units in flight"
    )]
    BufferVsIdWidth { depth: usize, width: usize },
    #[error("printer profile: message and complete templates use different id widths")]
    IdWidthMismatch,
    #[error("printer profile: ack_timeout_ms must be >= 1")]
    ZeroAckTimeout,
    #[error("printer profile: max_frame must be >= 8")]
    TinyFrame,
    #[error(
        "printer profile: fnc1 = \"escape\" needs fnc1_escape, the printer's escape sequence \
         for FNC1 (e.g. \"~1\")"
    )]
    MissingFnc1Escape,
    #[error("printer profile: fnc1_escape is set but fnc1 is not \"escape\"; remove it or set fnc1 = \"escape\"")]
    UnusedFnc1Escape,
    #[error(
        "printer profile: fnc1_escape {0:?} must be printable ASCII without the frame's \
         start, end, ack or nak bytes"
    )]
    BadFnc1Escape(String),
}

/// The wire-level part of a profile, shared by the decoder and encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framing {
    pub start: u8,
    pub end: u8,
    pub ack: u8,
    pub nak: u8,
    pub checksum: Checksum,
    pub max_frame: usize,
}

/// A checked profile with its templates parsed.
#[derive(Debug, Clone)]
pub struct CompiledProfile {
    pub profile: FramedProfile,
    pub framing: Framing,
    pub message: Template,
    pub complete: Template,
}

impl FramedProfile {
    pub fn framing(&self) -> Framing {
        Framing {
            start: self.start,
            end: self.end,
            ack: self.ack,
            nak: self.nak,
            checksum: self.checksum,
            max_frame: self.max_frame,
        }
    }

    pub fn ack_timeout(&self) -> Duration {
        Duration::from_millis(self.ack_timeout_ms)
    }

    pub fn print_timeout(&self) -> Option<Duration> {
        self.print_timeout_ms.map(Duration::from_millis)
    }

    /// The code as this printer must get it: with `fnc1 = "escape"` the
    /// FNC1 escape goes first and in place of each GS; otherwise unchanged.
    pub fn printer_code<'a>(&self, code: &'a str) -> Cow<'a, str> {
        match (self.fnc1, &self.fnc1_escape) {
            (Some(Fnc1::Escape), Some(esc)) => {
                let mut out = String::with_capacity(code.len() + esc.len() * 3);
                out.push_str(esc);
                for c in code.chars() {
                    if c == GS {
                        out.push_str(esc);
                    } else {
                        out.push(c);
                    }
                }
                Cow::Owned(out)
            }
            _ => Cow::Borrowed(code),
        }
    }

    /// Checks the profile and parses its templates.
    pub fn compile(&self) -> Result<CompiledProfile, ProfileError> {
        let message = Template::parse(&self.message).map_err(ProfileError::Message)?;
        let complete = Template::parse(&self.complete).map_err(ProfileError::Complete)?;
        if !message.has_code() || !message.has_id() {
            return Err(ProfileError::MessageFields(self.message.clone()));
        }
        if complete.has_code() || !complete.has_id() {
            return Err(ProfileError::CompleteFields(self.complete.clone()));
        }
        let ctl = [self.start, self.end, self.ack, self.nak];
        if (0..4).any(|i| ctl[i + 1..].contains(&ctl[i])) {
            return Err(ProfileError::ControlBytesClash);
        }
        if self.buffer_depth == 0 {
            return Err(ProfileError::ZeroBuffer);
        }
        if message.id_width() != complete.id_width() {
            return Err(ProfileError::IdWidthMismatch);
        }
        if let Some(width) = message.id_width() {
            let fits = u32::try_from(width)
                .ok()
                .and_then(|w| 10usize.checked_pow(w))
                .is_none_or(|limit| self.buffer_depth < limit);
            if !fits {
                return Err(ProfileError::BufferVsIdWidth {
                    depth: self.buffer_depth,
                    width,
                });
            }
        }
        if self.ack_timeout_ms == 0 {
            return Err(ProfileError::ZeroAckTimeout);
        }
        if self.max_frame < 8 {
            return Err(ProfileError::TinyFrame);
        }
        match (self.fnc1, &self.fnc1_escape) {
            (Some(Fnc1::Escape), None) => return Err(ProfileError::MissingFnc1Escape),
            (Some(Fnc1::Escape), Some(esc)) => {
                let bad = esc.is_empty()
                    || !esc.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
                    || esc.bytes().any(|b| ctl.contains(&b));
                if bad {
                    return Err(ProfileError::BadFnc1Escape(esc.clone()));
                }
            }
            (_, Some(_)) => return Err(ProfileError::UnusedFnc1Escape),
            (_, None) => {}
        }
        Ok(CompiledProfile {
            framing: self.framing(),
            profile: self.clone(),
            message,
            complete,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> FramedProfile {
        toml::from_str("message = \"P{id:02}|{code}\"\ncomplete = \"D{id:02}\"\nbuffer_depth = 8")
            .expect("minimal profile parses")
    }

    #[test]
    fn defaults_are_stx_etx_ack_nak() {
        let p = base();
        assert_eq!((p.start, p.end, p.ack, p.nak), (2, 3, 6, 0x15));
        assert_eq!(p.checksum, Checksum::None);
        assert!(p.compile().is_ok());
    }

    #[test]
    fn inconsistent_profiles_are_rejected() {
        let mut p = base();
        p.buffer_depth = 100;
        assert!(matches!(
            p.compile(),
            Err(ProfileError::BufferVsIdWidth { .. })
        ));
        let mut p = base();
        p.nak = p.ack;
        assert_eq!(p.compile().err(), Some(ProfileError::ControlBytesClash));
        let mut p = base();
        p.complete = "D{id:02}{code}".into();
        assert!(matches!(p.compile(), Err(ProfileError::CompleteFields(_))));
        let mut p = base();
        p.message = "P{code}".into();
        assert!(matches!(p.compile(), Err(ProfileError::MessageFields(_))));
        let mut p = base();
        p.complete = "D{id:03}".into();
        assert_eq!(p.compile().err(), Some(ProfileError::IdWidthMismatch));
    }

    #[test]
    fn fnc1_modes() {
        let es = "0109506000134352\u{1d}10L1\u{1d}21S";
        let mut p = base();
        assert_eq!(p.fnc1, None);
        assert_eq!(p.printer_code(es), es);
        p.fnc1 = Some(Fnc1::Printer);
        assert_eq!(p.printer_code(es), es);
        p.fnc1 = Some(Fnc1::Escape);
        assert_eq!(p.compile().err(), Some(ProfileError::MissingFnc1Escape));
        p.fnc1_escape = Some("~1".into());
        assert!(p.compile().is_ok());
        assert_eq!(p.printer_code(es), "~10109506000134352~110L1~121S");
        for bad in ["", "~\u{2}", "\u{1d}", "é"] {
            p.fnc1_escape = Some(bad.into());
            assert!(
                matches!(p.compile(), Err(ProfileError::BadFnc1Escape(_))),
                "{bad:?}"
            );
        }
        p.fnc1 = Some(Fnc1::None);
        p.fnc1_escape = Some("~1".into());
        assert_eq!(p.compile().err(), Some(ProfileError::UnusedFnc1Escape));
        let p: FramedProfile = toml::from_str(
            "message = \"P{id:02}|{code}\"\ncomplete = \"D{id:02}\"\nbuffer_depth = 8\n\
             fnc1 = \"escape\"\nfnc1_escape = \"<FNC1>\"",
        )
        .expect("parses");
        assert_eq!(p.fnc1, Some(Fnc1::Escape));
        assert!(toml::from_str::<FramedProfile>(
            "message = \"P{id:02}|{code}\"\ncomplete = \"D{id:02}\"\nbuffer_depth = 8\nfnc1 = \"gs1\""
        )
        .is_err());
    }
}
