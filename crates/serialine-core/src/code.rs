//! Codes on the product: GS1 element string (Data Matrix), GS1 Digital Link URI
//! (QR), plain text.
//!
//! [`render`] turns a unit's [`CodeData`] into the text a printer gets;
//! [`parse`] turns what a camera read back into [`CodeData`], checking every
//! field the way the printer-side types do; [`parse_with_form`] also says
//! which of the accepted forms was read ([`CodeForm`]). Parse errors name the
//! AI and the position: positions count characters (not bytes) from 0 in the
//! text given to [`parse`].
//!
//! # Symbology identifiers
//!
//! A camera set to transmit AIM symbology identifiers (ISO/IEC 15424) puts
//! three characters before the data; they tell whether the printer really
//! made a GS1 symbol. [`Symbology`] lists the ones Serialine knows and what
//! each means for a job:
//!
//! | identifier | symbol | GS1 element string job | Digital Link job |
//! |---|---|---|---|
//! | `]d2` | Data Matrix ECC 200 with FNC1 first: GS1 DataMatrix | accepted | refused |
//! | `]d8` | DMRE (ISO/IEC 21471 rectangular extension) with FNC1 first, as zxing-cpp reports it | accepted | refused |
//! | `]Q3` | QR Code with FNC1 first: GS1 QR Code | accepted | refused |
//! | `]C1` | GS1-128 | accepted | refused |
//! | `]d1`, `]d7` | Data Matrix (DMRE) without FNC1 | [`CodeError::NotGs1Symbol`] | accepted |
//! | `]Q1` | QR Code without FNC1 | [`CodeError::NotGs1Symbol`] | accepted |
//! | none | the camera sends no identifier | accepted (nothing to check) | accepted |
//! | any other | | [`CodeError::Symbology`] | [`CodeError::Symbology`] |
//!
//! A `]d1` read of a GS1 job carries the right data in the wrong symbol:
//! the printer did not start the symbol with FNC1 (its GS1 mode is off, see
//! the `fnc1` key of the printer profile). Such a pack is not a GS1
//! DataMatrix and a GS1 scanner downstream may not read its AIs, so [`parse`]
//! refuses it with an error that says so: the line rejects the unit and
//! raises an alarm naming the cause, rather than committing a non-conformant
//! code. A Digital Link URI is the opposite case: GS1 encodes it in a plain
//! symbol (no FNC1), so `]Q1`/`]d1` are right there and `]Q3`/`]d2` wrong.

use crate::gtin::{self, Gtin, GtinError};
use crate::job_fields::{Expiry, JobError, Lot};
use crate::serial::{Serial, SerialError};
use percent_encoding::{percent_decode, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// ASCII group separator: stands for FNC1 after a variable-length field.
pub const GS: char = '\u{1d}';

/// Everything but the RFC 3986 unreserved characters is percent-encoded in a
/// Digital Link path segment or query value.
const DL_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A symbology identifier (ISO/IEC 15424) a camera put before the data;
/// see the module docs for what each means for a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Symbology {
    /// `]d2`: GS1 DataMatrix (ECC 200, FNC1 in first position).
    Gs1DataMatrix,
    /// `]d8`: GS1 DataMatrix in a DMRE size (ISO/IEC 21471), as zxing-cpp
    /// reports it.
    Gs1DataMatrixDmre,
    /// `]Q3`: GS1 QR Code (FNC1 in first position).
    Gs1Qr,
    /// `]C1`: GS1-128.
    #[serde(rename = "gs1-128")]
    Gs1_128,
    /// `]d1`: Data Matrix without FNC1.
    DataMatrix,
    /// `]d7`: Data Matrix in a DMRE size without FNC1 (zxing-cpp).
    DataMatrixDmre,
    /// `]Q1`: QR Code (model 2) without FNC1.
    Qr,
}

impl Symbology {
    const ALL: [Symbology; 7] = [
        Symbology::Gs1DataMatrix,
        Symbology::Gs1DataMatrixDmre,
        Symbology::Gs1Qr,
        Symbology::Gs1_128,
        Symbology::DataMatrix,
        Symbology::DataMatrixDmre,
        Symbology::Qr,
    ];

    /// The three characters a reader transmits, e.g. `]d2`.
    pub fn id(self) -> &'static str {
        match self {
            Symbology::Gs1DataMatrix => "]d2",
            Symbology::Gs1DataMatrixDmre => "]d8",
            Symbology::Gs1Qr => "]Q3",
            Symbology::Gs1_128 => "]C1",
            Symbology::DataMatrix => "]d1",
            Symbology::DataMatrixDmre => "]d7",
            Symbology::Qr => "]Q1",
        }
    }

    pub fn from_id(id: &str) -> Option<Symbology> {
        Symbology::ALL.into_iter().find(|s| s.id() == id)
    }

    /// Whether the symbol started with FNC1, i.e. carries GS1 AI data.
    pub fn is_gs1(self) -> bool {
        matches!(
            self,
            Symbology::Gs1DataMatrix
                | Symbology::Gs1DataMatrixDmre
                | Symbology::Gs1Qr
                | Symbology::Gs1_128
        )
    }

    /// The symbol's name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Symbology::Gs1DataMatrix => "GS1 DataMatrix",
            Symbology::Gs1DataMatrixDmre => "GS1 DataMatrix (DMRE)",
            Symbology::Gs1Qr => "GS1 QR Code",
            Symbology::Gs1_128 => "GS1-128",
            Symbology::DataMatrix => "Data Matrix",
            Symbology::DataMatrixDmre => "Data Matrix (DMRE)",
            Symbology::Qr => "QR Code",
        }
    }
}

/// Which of the forms [`parse`] accepts a code was read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "form", rename_all = "kebab-case")]
pub enum CodeForm {
    /// GS1 element string, after the symbology identifier the camera sent
    /// (`None`: it sent none).
    ElementString { symbology: Option<Symbology> },
    /// GS1 Digital Link URI. `lot_in_query`: the lot (10) came as a query
    /// parameter, as Serialine rendered it before the canonical form (key
    /// qualifiers in the path) was adopted; still read because codes printed
    /// that way exist.
    DigitalLink {
        symbology: Option<Symbology>,
        lot_in_query: bool,
    },
    /// Human-readable `(01)…(21)…` text.
    PlainText,
}

/// A code read back, with the form it was read in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parsed {
    pub data: CodeData,
    pub form: CodeForm,
}

/// Longest quoted excerpt of the input an error carries.
const MAX_EXCERPT: usize = 24;

/// How a unit's code is written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Template {
    /// GS1 element string for a GS1 Data Matrix.
    Gs1DataMatrix,
    /// GS1 Digital Link URI for a QR code, e.g. resolver `id.example.com`.
    DigitalLink { resolver: String },
    /// Human-readable text: `(01)…(17)…(10)…(21)…`.
    PlainText,
}

impl Template {
    /// Checks what can be checked before any unit is rendered: the Digital
    /// Link resolver must be a plain `host[:port]`.
    pub fn validate(&self) -> Result<(), CodeError> {
        match self {
            Template::DigitalLink { resolver } => check_resolver(resolver),
            Template::Gs1DataMatrix | Template::PlainText => Ok(()),
        }
    }
}

/// The fields a code carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeData {
    pub gtin: Gtin,
    pub expiry: Option<Expiry>,
    pub lot: Option<Lot>,
    pub serial: Serial,
}

/// Why a code could not be rendered or parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodeError {
    #[error("code is empty: no GS1 data to read")]
    Empty,
    #[error(
        "symbology identifier {id:?} at position 0 is not one this template reads \
         (GS1 element string: ]d2, ]d8, ]Q3, ]C1; Digital Link: ]Q1, ]d1, ]d7)"
    )]
    Symbology { id: String },
    #[error(
        "symbology identifier {id} at position 0: the symbol is a plain {symbol}, not a GS1 one; \
         the printer did not start it with FNC1 (check that the printer profile's fnc1 \
         setting matches how the printer is configured)"
    )]
    NotGs1Symbol {
        id: &'static str,
        symbol: &'static str,
    },
    #[error("expected a GS1 AI at position {pos}, found {found:?}")]
    ExpectedAi { pos: usize, found: String },
    #[error("unknown AI ({ai}) at position {pos}; Serialine reads (00), (01), (10), (11), (17) and (21)")]
    UnknownAi { ai: String, pos: usize },
    #[error(
        "AI ({ai}) at position {pos} is a Digital Link path key; it cannot be a query parameter"
    )]
    MisplacedAi { ai: String, pos: usize },
    #[error("AI ({ai}) at position {pos} repeats the one at position {first}")]
    RepeatedAi {
        ai: &'static str,
        pos: usize,
        first: usize,
    },
    #[error("required AI ({ai}) is missing")]
    MissingAi { ai: &'static str },
    #[error("AI ({ai}) at position {pos}: expected {expected} digits, found {found:?}")]
    FixedLength {
        ai: &'static str,
        pos: usize,
        expected: usize,
        found: String,
    },
    #[error("AI ({ai}) at position {pos}: value is empty")]
    EmptyValue { ai: &'static str, pos: usize },
    #[error("GS (FNC1 separator) at position {pos} ends the code; an AI must follow it")]
    TrailingSeparator { pos: usize },
    #[error("AI (01) at position {pos}: {source}")]
    Gtin {
        pos: usize,
        #[source]
        source: GtinError,
    },
    #[error("AI (17) at position {pos}: {source}")]
    Expiry {
        pos: usize,
        #[source]
        source: JobError,
    },
    #[error("AI (10) at position {pos}: {source}")]
    Lot {
        pos: usize,
        #[source]
        source: JobError,
    },
    #[error("AI (21) at position {pos}: {source}")]
    Serial {
        pos: usize,
        #[source]
        source: SerialError,
    },
    #[error("AI ({ai}) at position {pos}: {value:?} is not a YYMMDD date")]
    Date {
        ai: &'static str,
        pos: usize,
        value: String,
    },
    #[error(
        "AI (00) at position {pos}: SSCC {value:?} has check digit {found}, expected {expected}"
    )]
    SsccCheckDigit {
        pos: usize,
        value: String,
        found: u8,
        expected: u8,
    },
    #[error("AI opened with '(' at position {pos} has no closing ')'")]
    UnclosedAi { pos: usize },
    #[error("'\\' at position {pos} must escape '(' or ')' (human-readable text writes them as \\( and \\))")]
    BadEscape { pos: usize },
    #[error("AI ({ai}) value {value:?} contains '(' or ')', which the plain-text template cannot show unambiguously")]
    ParenInPlainText { ai: &'static str, value: String },
    #[error("Digital Link must start with https:// or http://, found {found:?}")]
    Scheme { found: String },
    #[error("Digital Link resolver host {resolver:?}: {why}")]
    Resolver { resolver: String, why: String },
    #[error("Digital Link path segment {segment:?} at position {pos}: {why}")]
    PathSegment {
        segment: String,
        pos: usize,
        why: &'static str,
    },
    #[error("invalid percent-escape {found:?} at position {pos}")]
    PercentEscape { pos: usize, found: String },
    #[error("AI ({ai}) at position {pos}: percent-decoded value is not UTF-8")]
    NotUtf8 { ai: &'static str, pos: usize },
}

/// Renders `data` as `template` prescribes.
///
/// Fails only for a Digital Link with an unusable resolver, or plain text
/// whose lot or serial holds '(' or ')'.
pub fn render(template: &Template, data: &CodeData) -> Result<String, CodeError> {
    match template {
        Template::Gs1DataMatrix => Ok(render_element_string(data)),
        Template::DigitalLink { resolver } => render_digital_link(resolver, data),
        Template::PlainText => {
            let lot = data.lot.as_ref().map(Lot::as_str);
            for (ai, value) in [("10", lot), ("21", Some(data.serial.as_str()))] {
                if let Some(value) = value.filter(|v| v.contains(['(', ')'])) {
                    return Err(CodeError::ParenInPlainText {
                        ai,
                        value: value.to_string(),
                    });
                }
            }
            Ok(render_hri(data))
        }
    }
}

/// The GS1 human-readable interpretation, e.g.
/// `(01)09506000134352(17)271231(10)LOT1(21)SER1`, for display, logs and
/// reports.
///
/// Never fails, and always parses back to `data` with
/// [`Template::PlainText`]: a '(' or ')' in the lot or serial is written
/// escaped as `\(` or `\)`. GS1's character sets have no '\', so the escape
/// cannot be confused with data, and values without parentheses (nearly
/// all) read exactly as GS1 prints them. This is the escape zint and
/// zxing-cpp's writer take in their "(AI)value" input. Text *printed* on a
/// pack ([`render`] with [`Template::PlainText`]) refuses such values
/// instead: a person or OCR reading the pack is not expected to know it.
pub fn render_hri(data: &CodeData) -> String {
    let mut out = format!("(01){}", data.gtin);
    if let Some(expiry) = data.expiry {
        let _ = write!(out, "(17){expiry}");
    }
    if let Some(lot) = &data.lot {
        out.push_str("(10)");
        push_hri_value(&mut out, lot.as_str());
    }
    out.push_str("(21)");
    push_hri_value(&mut out, data.serial.as_str());
    out
}

fn push_hri_value(out: &mut String, value: &str) {
    for c in value.chars() {
        if matches!(c, '(' | ')') {
            out.push('\\');
        }
        out.push(c);
    }
}

/// Parses a code read back from a product, as `template` wrote it.
///
/// The Digital Link resolver of `template` is not compared: a code may have
/// been printed for another resolver. A GS1 element string read from a
/// symbol the camera identifies as not GS1 (`]d1`, `]d7`, `]Q1`) is refused
/// with [`CodeError::NotGs1Symbol`]; [`parse_with_form`] reads it anyway.
pub fn parse(template: &Template, text: &str) -> Result<CodeData, CodeError> {
    let parsed = parse_with_form(template, text)?;
    match parsed.form {
        CodeForm::ElementString { symbology: Some(s) } if !s.is_gs1() => {
            Err(CodeError::NotGs1Symbol {
                id: s.id(),
                symbol: s.name(),
            })
        }
        _ => Ok(parsed.data),
    }
}

/// Like [`parse`], and says which form the code was in; does not refuse an
/// element string from a non-GS1 symbol (the caller sees it in the form).
pub fn parse_with_form(template: &Template, text: &str) -> Result<Parsed, CodeError> {
    match template {
        Template::Gs1DataMatrix => parse_element_string(text),
        Template::DigitalLink { .. } => parse_digital_link(text),
        Template::PlainText => Ok(Parsed {
            data: parse_plain_text(text)?,
            form: CodeForm::PlainText,
        }),
    }
}

// ---------------------------------------------------------------------------
// Application identifiers and the fields they fill

/// The AIs Serialine recognizes. (00) and (11) are read and checked but carry
/// nothing into [`CodeData`], so codes from other packaging lines still parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ai {
    Sscc,
    Gtin,
    Lot,
    ProductionDate,
    Expiry,
    Serial,
}

impl Ai {
    const COUNT: usize = 6;

    fn from_code(code: &str) -> Option<Ai> {
        Some(match code {
            "00" => Ai::Sscc,
            "01" => Ai::Gtin,
            "10" => Ai::Lot,
            "11" => Ai::ProductionDate,
            "17" => Ai::Expiry,
            "21" => Ai::Serial,
            _ => return None,
        })
    }

    fn code(self) -> &'static str {
        match self {
            Ai::Sscc => "00",
            Ai::Gtin => "01",
            Ai::Lot => "10",
            Ai::ProductionDate => "11",
            Ai::Expiry => "17",
            Ai::Serial => "21",
        }
    }

    /// Digits of a fixed-length AI; `None` for variable length (up to 20
    /// characters, checked by [`Lot`] and [`Serial`]).
    fn fixed_len(self) -> Option<usize> {
        match self {
            Ai::Sscc => Some(18),
            Ai::Gtin => Some(14),
            Ai::ProductionDate | Ai::Expiry => Some(6),
            Ai::Lot | Ai::Serial => None,
        }
    }
}

/// Fields collected while parsing, with where each AI was first seen.
#[derive(Default)]
struct Fields {
    first: [Option<usize>; Ai::COUNT],
    gtin: Option<Gtin>,
    expiry: Option<Expiry>,
    lot: Option<Lot>,
    serial: Option<Serial>,
}

impl Fields {
    fn seen(&self, ai: Ai) -> Option<usize> {
        self.first[ai as usize]
    }

    /// Validates `value` for `ai` and stores it. `ai_pos` is where the AI
    /// stands, `value_pos` where its value starts.
    fn set(
        &mut self,
        ai: Ai,
        ai_pos: usize,
        value_pos: usize,
        value: String,
    ) -> Result<(), CodeError> {
        if let Some(first) = self.seen(ai) {
            return Err(CodeError::RepeatedAi {
                ai: ai.code(),
                pos: ai_pos,
                first,
            });
        }
        self.first[ai as usize] = Some(ai_pos);
        match ai.fixed_len() {
            Some(n) if value.len() != n || !value.bytes().all(|b| b.is_ascii_digit()) => {
                return Err(CodeError::FixedLength {
                    ai: ai.code(),
                    pos: value_pos,
                    expected: n,
                    found: excerpt(&value),
                });
            }
            None if value.is_empty() => {
                return Err(CodeError::EmptyValue {
                    ai: ai.code(),
                    pos: value_pos,
                });
            }
            _ => {}
        }
        let pos = value_pos;
        match ai {
            Ai::Sscc => {
                let digits: Vec<u8> = value.bytes().map(|b| b - b'0').collect();
                if let Some((&found, body)) = digits.split_last() {
                    let expected = gtin::check_digit(body);
                    if found != expected {
                        return Err(CodeError::SsccCheckDigit {
                            pos,
                            value,
                            found,
                            expected,
                        });
                    }
                }
            }
            Ai::ProductionDate => {
                // Same YYMMDD rules as an expiry date, DD = 00 included.
                if Expiry::parse(&value).is_err() {
                    return Err(CodeError::Date {
                        ai: ai.code(),
                        pos,
                        value,
                    });
                }
            }
            Ai::Gtin => {
                let gtin = Gtin::parse(&value).map_err(|source| CodeError::Gtin { pos, source })?;
                self.gtin = Some(gtin);
            }
            Ai::Expiry => {
                let expiry =
                    Expiry::parse(&value).map_err(|source| CodeError::Expiry { pos, source })?;
                self.expiry = Some(expiry);
            }
            Ai::Lot => {
                let lot = Lot::new(value).map_err(|source| CodeError::Lot { pos, source })?;
                self.lot = Some(lot);
            }
            Ai::Serial => {
                let serial =
                    Serial::new(value).map_err(|source| CodeError::Serial { pos, source })?;
                self.serial = Some(serial);
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<CodeData, CodeError> {
        Ok(CodeData {
            gtin: self.gtin.ok_or(CodeError::MissingAi { ai: "01" })?,
            expiry: self.expiry,
            lot: self.lot,
            serial: self.serial.ok_or(CodeError::MissingAi { ai: "21" })?,
        })
    }
}

/// `s` cut to [`MAX_EXCERPT`] characters, for quoting input in an error.
fn excerpt(s: &str) -> String {
    let mut chars = s.chars();
    let mut out: String = chars.by_ref().take(MAX_EXCERPT).collect();
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

fn collect(chars: &[char]) -> String {
    chars.iter().collect()
}

// ---------------------------------------------------------------------------
// GS1 element string

fn render_element_string(data: &CodeData) -> String {
    // Fixed-length AIs first so that only the lot needs a separator; the
    // serial comes last and needs none.
    let mut out = format!("01{}", data.gtin);
    if let Some(expiry) = data.expiry {
        let _ = write!(out, "17{expiry}");
    }
    if let Some(lot) = &data.lot {
        let _ = write!(out, "10{lot}{GS}");
    }
    let _ = write!(out, "21{}", data.serial);
    out
}

fn parse_element_string(text: &str) -> Result<Parsed, CodeError> {
    // Working on chars keeps every index a character position and every
    // slice on a character boundary, whatever the input holds.
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    let mut symbology = None;
    if chars.first() == Some(&']') {
        let id = collect(&chars[..chars.len().min(3)]);
        // Every identifier Serialine knows is read here; parse() refuses
        // the ones without FNC1, so the line can still tell which unit the
        // non-GS1 symbol was.
        symbology = Some(Symbology::from_id(&id).ok_or(CodeError::Symbology { id })?);
        i = 3;
    }
    // FNC1 in first position, if the reader transmits it, arrives as GS.
    if chars.get(i) == Some(&GS) {
        i += 1;
    }
    if i >= chars.len() {
        return Err(CodeError::Empty);
    }

    let mut fields = Fields::default();
    while i < chars.len() {
        let ai_pos = i;
        let code = match chars.get(i..i + 2) {
            Some(pair) if pair.iter().all(char::is_ascii_digit) => collect(pair),
            _ => {
                let end = chars.len().min(i + 4);
                return Err(CodeError::ExpectedAi {
                    pos: i,
                    found: collect(&chars[i..end]),
                });
            }
        };
        let ai = Ai::from_code(&code).ok_or(CodeError::UnknownAi { ai: code, pos: i })?;
        let value_pos = i + 2;
        let rest = chars.get(value_pos..).unwrap_or_default();
        let value_len = match ai.fixed_len() {
            // A GS cuts a short fixed field; the error then quotes the part before it.
            Some(n) => rest.iter().take(n).take_while(|&&c| c != GS).count(),
            None => rest.iter().take_while(|&&c| c != GS).count(),
        };
        fields.set(ai, ai_pos, value_pos, collect(&rest[..value_len]))?;
        i = value_pos + value_len;
        // A GS after a fixed-length field is unnecessary but harmless, so it
        // is accepted like the one that ends a variable-length field.
        if chars.get(i) == Some(&GS) {
            if i + 1 == chars.len() {
                return Err(CodeError::TrailingSeparator { pos: i });
            }
            i += 1;
        }
    }
    Ok(Parsed {
        data: fields.finish()?,
        form: CodeForm::ElementString { symbology },
    })
}

// ---------------------------------------------------------------------------
// Plain text (human-readable interpretation)

fn parse_plain_text(text: &str) -> Result<CodeData, CodeError> {
    let chars: Vec<char> = text.chars().collect();
    if chars.is_empty() {
        return Err(CodeError::Empty);
    }
    let mut fields = Fields::default();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '(' {
            let end = chars.len().min(i + 4);
            return Err(CodeError::ExpectedAi {
                pos: i,
                found: collect(&chars[i..end]),
            });
        }
        let close = chars[i + 1..]
            .iter()
            .position(|&c| c == ')')
            .map(|off| i + 1 + off)
            .ok_or(CodeError::UnclosedAi { pos: i })?;
        let code = collect(&chars[i + 1..close]);
        if code.is_empty() || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CodeError::ExpectedAi {
                pos: i,
                found: excerpt(&collect(&chars[i..=close])),
            });
        }
        let ai = Ai::from_code(&code).ok_or(CodeError::UnknownAi { ai: code, pos: i })?;
        let value_pos = close + 1;
        // The value runs to the next unescaped '('; render_hri writes '('
        // and ')' inside values as \( and \).
        let mut value = String::new();
        let mut j = value_pos;
        while let Some(&c) = chars.get(j) {
            match c {
                '(' => break,
                '\\' => match chars.get(j + 1) {
                    Some(&e @ ('(' | ')')) => {
                        value.push(e);
                        j += 2;
                    }
                    _ => return Err(CodeError::BadEscape { pos: j }),
                },
                _ => {
                    value.push(c);
                    j += 1;
                }
            }
        }
        fields.set(ai, i, value_pos, value)?;
        i = j;
    }
    fields.finish()
}

// ---------------------------------------------------------------------------
// GS1 Digital Link

/// The canonical GS1 Digital Link URI: the primary key and its key
/// qualifiers in the path in the GS1 order (`/01/{gtin}[/10/{lot}]/21/{serial}`),
/// data attributes (`17`) in the query.
fn render_digital_link(resolver: &str, data: &CodeData) -> Result<String, CodeError> {
    check_resolver(resolver)?;
    let mut out = format!("https://{resolver}/01/{}", data.gtin);
    if let Some(lot) = &data.lot {
        let _ = write!(
            out,
            "/10/{}",
            utf8_percent_encode(lot.as_str(), DL_COMPONENT)
        );
    }
    let _ = write!(
        out,
        "/21/{}",
        utf8_percent_encode(data.serial.as_str(), DL_COMPONENT)
    );
    if let Some(expiry) = data.expiry {
        let _ = write!(out, "?17={expiry}");
    }
    Ok(out)
}

/// A unit's EPC as EPCIS 2.0 writes it: the canonical GS1 Digital Link
/// URI of its SGTIN, `https://id.gs1.org/01/{gtin}/21/{serial}`.
pub fn sgtin_uri(gtin: &crate::Gtin, serial: &crate::Serial) -> String {
    format!(
        "https://id.gs1.org/01/{}/21/{}",
        gtin.as_string(),
        utf8_percent_encode(serial.as_str(), DL_COMPONENT)
    )
}

fn check_resolver(resolver: &str) -> Result<(), CodeError> {
    check_host(resolver).map_err(|why| CodeError::Resolver {
        resolver: resolver.to_string(),
        why,
    })
}

/// Checks a URI authority of the form `host[:port]`, where host is a DNS name,
/// IPv4 address or bracketed IPv6 literal. Returns why it is not one.
fn check_host(authority: &str) -> Result<(), String> {
    if authority.is_empty() {
        return Err("is empty".into());
    }
    if let Some((pos, c)) = authority
        .chars()
        .enumerate()
        .find(|(_, c)| matches!(c, '/' | '?' | '#') || c.is_whitespace())
    {
        return Err(format!(
            "{c:?} at position {pos}: give only host[:port], no path, query or fragment"
        ));
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (literal, after) = rest
            .split_once(']')
            .ok_or("IPv6 literal opened with '[' is not closed")?;
        if literal.is_empty()
            || !literal
                .chars()
                .all(|c| c.is_ascii_hexdigit() || matches!(c, ':' | '.'))
        {
            return Err(format!("{literal:?} is not an IPv6 address"));
        }
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or_else(|| format!("unexpected {after:?} after the IPv6 literal"))?,
            ),
        };
        (None, port)
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(authority), None),
        }
    };
    if let Some(host) = host {
        if host.is_empty() {
            return Err("has no host name before the port".into());
        }
        if host.len() > 253 {
            return Err("host name is longer than 253 characters".into());
        }
        for label in host.split('.') {
            if label.is_empty() {
                return Err(
                    "host name has an empty label (leading, trailing or double '.')".into(),
                );
            }
            if label.len() > 63 {
                return Err(format!("host label {label:?} is longer than 63 characters"));
            }
            if let Some(c) = label
                .chars()
                .find(|c| !c.is_ascii_alphanumeric() && *c != '-')
            {
                return Err(format!(
                    "{c:?} is not allowed in a host name (letters, digits, '-' and '.' only)"
                ));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(format!("host label {label:?} starts or ends with '-'"));
            }
        }
    }
    if let Some(port) = port {
        let valid = !port.is_empty()
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u16>().is_ok_and(|p| p != 0);
        if !valid {
            return Err(format!("port {port:?} is not a number from 1 to 65535"));
        }
    }
    Ok(())
}

/// Character position of byte offset `byte` in `text`.
fn char_pos(text: &str, byte: usize) -> usize {
    text.char_indices().take_while(|(i, _)| *i < byte).count()
}

/// Percent-decodes the value of `ai` found at byte offset `offset` of `text`,
/// rejecting malformed escapes (which `percent_decode` would pass through).
fn decode(text: &str, raw: &str, offset: usize, ai: Ai) -> Result<String, CodeError> {
    let bytes = raw.as_bytes();
    for (i, _) in bytes.iter().enumerate().filter(|(_, &b)| b == b'%') {
        let hex = |k: usize| bytes.get(i + k).is_some_and(u8::is_ascii_hexdigit);
        if !(hex(1) && hex(2)) {
            let end = bytes.len().min(i + 3);
            return Err(CodeError::PercentEscape {
                pos: char_pos(text, offset + i),
                found: String::from_utf8_lossy(&bytes[i..end]).into_owned(),
            });
        }
    }
    percent_decode(bytes)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| CodeError::NotUtf8 {
            ai: ai.code(),
            pos: char_pos(text, offset),
        })
}

fn parse_digital_link(text: &str) -> Result<Parsed, CodeError> {
    // A Digital Link URI is encoded in a plain symbol (no FNC1): ]Q1, ]d1 or
    // ]d7 is right; a GS1 symbology identifier means a GS1 element string
    // symbol, which cannot hold a URI as such.
    let (symbology, start) = match text.strip_prefix(']') {
        Some(_) => {
            let id: String = text.chars().take(3).collect();
            match Symbology::from_id(&id) {
                Some(s) if !s.is_gs1() => (Some(s), id.len()),
                _ => return Err(CodeError::Symbology { id }),
            }
        }
        None => (None, 0),
    };
    let rest = &text[start..];
    let scheme_len = ["https://", "http://"]
        .iter()
        .find(|scheme| {
            rest.get(..scheme.len())
                .is_some_and(|s| s.eq_ignore_ascii_case(scheme))
        })
        .map(|scheme| scheme.len())
        .ok_or_else(|| CodeError::Scheme {
            found: excerpt(rest),
        })?;
    // A fragment is for the browser only; nothing in it is GS1 data.
    let end = text.find('#').unwrap_or(text.len());
    let after_scheme = text.get(start + scheme_len..end).unwrap_or_default();
    let authority_len = after_scheme.find(['/', '?']).unwrap_or(after_scheme.len());
    let (host, path_and_query) = after_scheme.split_at(authority_len);
    check_host(host).map_err(|why| CodeError::Resolver {
        resolver: host.to_string(),
        why,
    })?;
    let path_start = start + scheme_len + authority_len;
    let (path, query) = match path_and_query.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (path_and_query, None),
    };

    let mut fields = Fields::default();
    parse_dl_path(text, path, path_start, &mut fields)?;
    let lot_in_path = fields.seen(Ai::Lot).is_some();
    if let Some(query) = query {
        parse_dl_query(text, query, path_start + path.len() + 1, &mut fields)?;
    }
    let lot_in_query = !lot_in_path && fields.seen(Ai::Lot).is_some();
    Ok(Parsed {
        data: fields.finish()?,
        form: CodeForm::DigitalLink {
            symbology,
            lot_in_query,
        },
    })
}

/// Reads `[/prefix…]/01/{gtin}[/10/{lot}][/21/{serial}]`; `start` is the
/// byte offset of `path` in `text`.
fn parse_dl_path(
    text: &str,
    path: &str,
    start: usize,
    fields: &mut Fields,
) -> Result<(), CodeError> {
    // (byte offset in text, raw segment)
    let mut segments = Vec::new();
    if let Some(rest) = path.strip_prefix('/') {
        let mut offset = start + 1;
        for segment in rest.split('/') {
            segments.push((offset, segment));
            offset += segment.len() + 1;
        }
    }
    // The key and its qualifiers are key/value pairs at the end of the path,
    // after any resolver prefix. Segments an odd number of places from the
    // end are keys, so a prefix segment or a value that happens to read "01"
    // is not mistaken for the primary key. If no such "01" exists, take the
    // first one so the error points at what is wrong after it.
    let n = segments.len();
    let key_index = (0..n)
        .rev()
        .find(|&i| (n - i) % 2 == 0 && segments[i].1 == "01")
        .or_else(|| segments.iter().position(|(_, s)| *s == "01"))
        .ok_or(CodeError::MissingAi { ai: "01" })?;

    let mut last_rank = 0;
    let mut i = key_index;
    while let Some(&(key_offset, key)) = segments.get(i) {
        let key_pos = char_pos(text, key_offset);
        let (ai, rank) = match key {
            "01" => (Ai::Gtin, 0),
            "10" => (Ai::Lot, 1),
            "21" => (Ai::Serial, 2),
            _ if !key.is_empty() && key.bytes().all(|b| b.is_ascii_digit()) => {
                return Err(CodeError::UnknownAi {
                    ai: excerpt(key),
                    pos: key_pos,
                })
            }
            _ => {
                return Err(CodeError::PathSegment {
                    segment: excerpt(key),
                    pos: key_pos,
                    why: "expected the key qualifier 10 or 21",
                })
            }
        };
        if let Some(first) = fields.seen(ai) {
            return Err(CodeError::RepeatedAi {
                ai: ai.code(),
                pos: key_pos,
                first,
            });
        }
        if rank < last_rank {
            return Err(CodeError::PathSegment {
                segment: key.to_string(),
                pos: key_pos,
                why: "key qualifiers must follow the GS1 order /01/{gtin}/10/{lot}/21/{serial}",
            });
        }
        let Some(&(value_offset, raw)) = segments.get(i + 1) else {
            return Err(CodeError::EmptyValue {
                ai: ai.code(),
                pos: char_pos(text, key_offset + key.len()),
            });
        };
        let mut value = decode(text, raw, value_offset, ai)?;
        // Digital Link allows GTIN-8, -12 and -13 unpadded.
        if ai == Ai::Gtin
            && matches!(value.len(), 8 | 12 | 13)
            && value.bytes().all(|b| b.is_ascii_digit())
        {
            value = format!("{value:0>14}");
        }
        fields.set(ai, key_pos, char_pos(text, value_offset), value)?;
        last_rank = rank;
        i += 2;
    }
    Ok(())
}

/// Reads the query: AIs (17), (10) and (11) as `ai=value`; parameters that
/// are not numeric AIs (e.g. `linkType`) are ignored. `start` is the byte
/// offset of `query` in `text`.
fn parse_dl_query(
    text: &str,
    query: &str,
    start: usize,
    fields: &mut Fields,
) -> Result<(), CodeError> {
    let mut offset = start;
    for param in query.split('&') {
        let param_offset = offset;
        offset += param.len() + 1;
        let (raw_key, raw_value, value_offset) = match param.split_once('=') {
            Some((k, v)) => (k, v, param_offset + k.len() + 1),
            None => (param, "", param_offset + param.len()),
        };
        // A key that does not decode cleanly cannot be a numeric AI.
        let Ok(key) = percent_decode(raw_key.as_bytes()).decode_utf8() else {
            continue;
        };
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let pos = char_pos(text, param_offset);
        let ai = match key.as_ref() {
            "10" => Ai::Lot,
            "11" => Ai::ProductionDate,
            "17" => Ai::Expiry,
            "00" | "01" | "21" => {
                return Err(CodeError::MisplacedAi {
                    ai: key.into_owned(),
                    pos,
                })
            }
            _ => {
                return Err(CodeError::UnknownAi {
                    ai: excerpt(&key),
                    pos,
                })
            }
        };
        let value = decode(text, raw_value, value_offset, ai)?;
        fields.set(ai, pos, char_pos(text, value_offset), value)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ES: &str = "01095060001343521727123110ABC123\u{1d}2112345XYZ";
    const DL: &str = "https://id.example.com/01/09506000134352/10/ABC123/21/12345XYZ?17=271231";
    /// How Serialine rendered a Digital Link before the canonical form.
    const DL_LOT_IN_QUERY: &str =
        "https://id.example.com/01/09506000134352/21/12345XYZ?17=271231&10=ABC123";
    const HRI: &str = "(01)09506000134352(17)271231(10)ABC123(21)12345XYZ";

    fn dl() -> Template {
        Template::DigitalLink {
            resolver: "id.example.com".into(),
        }
    }

    fn example() -> CodeData {
        CodeData {
            gtin: Gtin::parse("09506000134352").unwrap(),
            expiry: Some(Expiry::parse("271231").unwrap()),
            lot: Some(Lot::new("ABC123").unwrap()),
            serial: Serial::new("12345XYZ").unwrap(),
        }
    }

    fn minimal() -> CodeData {
        CodeData {
            expiry: None,
            lot: None,
            ..example()
        }
    }

    fn with_serial(serial: &str) -> CodeData {
        CodeData {
            serial: Serial::new(serial).unwrap(),
            ..example()
        }
    }

    // --- element string ---

    #[test]
    fn element_string_known_example() {
        assert_eq!(render(&Template::Gs1DataMatrix, &example()).unwrap(), ES);
        assert_eq!(parse(&Template::Gs1DataMatrix, ES).unwrap(), example());
        let min = render(&Template::Gs1DataMatrix, &minimal()).unwrap();
        assert_eq!(min, "01095060001343522112345XYZ");
        assert_eq!(parse(&Template::Gs1DataMatrix, &min).unwrap(), minimal());
    }

    #[test]
    fn element_string_lot_without_expiry() {
        let data = CodeData {
            expiry: None,
            ..example()
        };
        let text = render(&Template::Gs1DataMatrix, &data).unwrap();
        assert_eq!(text, "010950600013435210ABC123\u{1d}2112345XYZ");
        assert_eq!(parse(&Template::Gs1DataMatrix, &text).unwrap(), data);
    }

    #[test]
    fn element_string_accepts_prefixes_and_any_order() {
        let t = Template::Gs1DataMatrix;
        for prefix in ["]d2", "]Q3", "]C1", "\u{1d}", "]d2\u{1d}"] {
            assert_eq!(
                parse(&t, &format!("{prefix}{ES}")).unwrap(),
                example(),
                "{prefix:?}"
            );
        }
        let reordered = "]d2\u{1d}2112345XYZ\u{1d}10ABC123\u{1d}010950600013435217271231";
        assert_eq!(parse(&t, reordered).unwrap(), example());
        // A GS after a fixed-length field is tolerated.
        let extra_gs = "0109506000134352\u{1d}17271231\u{1d}10ABC123\u{1d}2112345XYZ";
        assert_eq!(parse(&t, extra_gs).unwrap(), example());
    }

    #[test]
    fn element_string_symbology_identifiers() {
        let t = Template::Gs1DataMatrix;
        for s in [
            Symbology::Gs1DataMatrix,
            Symbology::Gs1DataMatrixDmre,
            Symbology::Gs1Qr,
            Symbology::Gs1_128,
        ] {
            let text = format!("{}{ES}", s.id());
            assert_eq!(parse(&t, &text).unwrap(), example(), "{s:?}");
            assert_eq!(
                parse_with_form(&t, &text).unwrap().form,
                CodeForm::ElementString { symbology: Some(s) }
            );
        }
        // No identifier: nothing to check, accepted.
        assert_eq!(
            parse_with_form(&t, ES).unwrap().form,
            CodeForm::ElementString { symbology: None }
        );
        // The printer did not start the symbol with FNC1: the data is
        // there, but the symbol is not GS1. parse() refuses it, naming the
        // cause; parse_with_form() still reads it (to find the unit).
        for (s, name) in [
            (Symbology::DataMatrix, "Data Matrix"),
            (Symbology::DataMatrixDmre, "Data Matrix (DMRE)"),
            (Symbology::Qr, "QR Code"),
        ] {
            let text = format!("{}{ES}", s.id());
            let e = parse(&t, &text).unwrap_err();
            assert_eq!(
                e,
                CodeError::NotGs1Symbol {
                    id: s.id(),
                    symbol: name
                }
            );
            assert!(e.to_string().contains("did not start it with FNC1"), "{e}");
            let read = parse_with_form(&t, &text).unwrap();
            assert_eq!(read.data, example());
            assert_eq!(read.form, CodeForm::ElementString { symbology: Some(s) });
        }
        for id in ["]d0", "]d3", "]d5", "]Q0", "]Q5", "]C0", "]e0", "]z1"] {
            assert_eq!(
                parse(&t, &format!("{id}{ES}")),
                Err(CodeError::Symbology { id: id.into() }),
                "{id}"
            );
        }
    }

    #[test]
    fn element_string_skips_sscc_and_production_date() {
        let t = Template::Gs1DataMatrix;
        let text = "0109506000134352112601012112345XYZ";
        assert_eq!(parse(&t, text).unwrap(), minimal());
        let text = "0010950600013435200301095060001343522112345XYZ";
        assert!(matches!(
            parse(&t, text),
            Err(CodeError::SsccCheckDigit { pos: 2, .. })
        ));
        // 095060001234567893 has a valid check digit (3).
        let text = "000950600012345678930109506000134352211";
        assert!(parse(&t, text).is_ok(), "{:?}", parse(&t, text));
        assert!(matches!(
            parse(&t, "0109506000134352119913012112345XYZ"),
            Err(CodeError::Date {
                ai: "11",
                pos: 18,
                ..
            })
        ));
    }

    #[test]
    fn element_string_errors_name_what_and_where() {
        let t = Template::Gs1DataMatrix;
        let e = parse(&t, "0109506000134352172712").unwrap_err();
        assert_eq!(
            e.to_string(),
            "AI (17) at position 18: expected 6 digits, found \"2712\""
        );
        assert_eq!(
            parse(&t, "01095060001343521727\u{1d}21X"),
            Err(CodeError::FixedLength {
                ai: "17",
                pos: 18,
                expected: 6,
                found: "27".into()
            })
        );
        assert!(matches!(
            parse(&t, "0109506000134353211"),
            Err(CodeError::Gtin {
                pos: 2,
                source: GtinError::CheckDigit { .. }
            })
        ));
        assert_eq!(
            parse(&t, "010950600013435299123"),
            Err(CodeError::UnknownAi {
                ai: "99".into(),
                pos: 16
            })
        );
        assert_eq!(
            parse(&t, "]d2010950600013435299123")
                .unwrap_err()
                .to_string(),
            "unknown AI (99) at position 19; Serialine reads (00), (01), (10), (11), (17) and (21)"
        );
        assert_eq!(
            parse(&t, "010950600013435221A\u{1d}21B"),
            Err(CodeError::RepeatedAi {
                ai: "21",
                pos: 20,
                first: 16
            })
        );
        assert_eq!(
            parse(&t, "0109506000134352"),
            Err(CodeError::MissingAi { ai: "21" })
        );
        assert_eq!(
            parse(&t, "2112345XYZ"),
            Err(CodeError::MissingAi { ai: "01" })
        );
        assert_eq!(
            parse(&t, "010950600013435221A\u{1d}"),
            Err(CodeError::TrailingSeparator { pos: 19 })
        );
        assert_eq!(
            parse(&t, "010950600013435210\u{1d}21A"),
            Err(CodeError::EmptyValue { ai: "10", pos: 18 })
        );
        assert_eq!(
            parse(&t, "010950600013435221"),
            Err(CodeError::EmptyValue { ai: "21", pos: 18 })
        );
        assert_eq!(
            parse(&t, "010950600013435210A\u{1d}\u{1d}21B"),
            Err(CodeError::ExpectedAi {
                pos: 20,
                found: "\u{1d}21B".into()
            })
        );
        assert!(matches!(
            parse(&t, "010950600013435217271331211"),
            Err(CodeError::Expiry { pos: 18, .. })
        ));
        assert!(matches!(
            parse(&t, "0109506000134352211234567890123456789012"),
            Err(CodeError::Serial {
                pos: 18,
                source: SerialError::TooLong { len: 22 }
            })
        ));
        assert_eq!(
            parse(&t, "]d0010950600013435221A"),
            Err(CodeError::Symbology { id: "]d0".into() })
        );
        assert_eq!(parse(&t, ""), Err(CodeError::Empty));
        assert_eq!(parse(&t, "]d2\u{1d}"), Err(CodeError::Empty));
        assert_eq!(parse(&t, "]"), Err(CodeError::Symbology { id: "]".into() }));
    }

    #[test]
    fn element_string_non_ascii_is_an_error_not_a_panic() {
        let t = Template::Gs1DataMatrix;
        assert!(matches!(
            parse(&t, "01095060001343522112345XYé"),
            Err(CodeError::Serial {
                pos: 18,
                source: SerialError::BadChar { ch: 'é', pos: 7 }
            })
        ));
        assert!(matches!(
            parse(&t, "01０９506000134352211"),
            Err(CodeError::FixedLength {
                ai: "01",
                pos: 2,
                ..
            })
        ));
        assert!(matches!(
            parse(&t, "]é2x"),
            Err(CodeError::Symbology { .. })
        ));
        assert!(matches!(
            parse(&t, "0é"),
            Err(CodeError::ExpectedAi { pos: 0, .. })
        ));
    }

    // --- Digital Link ---

    #[test]
    fn digital_link_known_example() {
        assert_eq!(render(&dl(), &example()).unwrap(), DL);
        assert_eq!(parse(&dl(), DL).unwrap(), example());
        let min = render(&dl(), &minimal()).unwrap();
        assert_eq!(min, "https://id.example.com/01/09506000134352/21/12345XYZ");
        assert_eq!(parse(&dl(), &min).unwrap(), minimal());
        let lot_only = CodeData {
            expiry: None,
            ..example()
        };
        assert_eq!(
            render(&dl(), &lot_only).unwrap(),
            "https://id.example.com/01/09506000134352/10/ABC123/21/12345XYZ"
        );
    }

    #[test]
    fn digital_link_reads_both_forms_and_says_which() {
        let t = dl();
        let canonical = parse_with_form(&t, DL).unwrap();
        assert_eq!(canonical.data, example());
        assert_eq!(
            canonical.form,
            CodeForm::DigitalLink {
                symbology: None,
                lot_in_query: false
            }
        );
        let legacy = parse_with_form(&t, DL_LOT_IN_QUERY).unwrap();
        assert_eq!(legacy.data, example());
        assert_eq!(
            legacy.form,
            CodeForm::DigitalLink {
                symbology: None,
                lot_in_query: true
            }
        );
        // Without a lot there is nothing to tell apart: canonical.
        let min = parse_with_form(&t, "https://x.example/01/09506000134352/21/1").unwrap();
        assert_eq!(
            min.form,
            CodeForm::DigitalLink {
                symbology: None,
                lot_in_query: false
            }
        );
    }

    #[test]
    fn digital_link_symbology_identifiers() {
        let t = dl();
        for s in [
            Symbology::Qr,
            Symbology::DataMatrix,
            Symbology::DataMatrixDmre,
        ] {
            let read = parse_with_form(&t, &format!("{}{DL}", s.id())).unwrap();
            assert_eq!(read.data, example());
            assert_eq!(
                read.form,
                CodeForm::DigitalLink {
                    symbology: Some(s),
                    lot_in_query: false
                }
            );
        }
        // A GS1-mode symbol cannot carry a URI; unknown identifiers neither.
        for id in ["]Q3", "]d2", "]d8", "]C1", "]Q0", "]é1"] {
            assert!(
                matches!(
                    parse(&t, &format!("{id}{DL}")),
                    Err(CodeError::Symbology { .. })
                ),
                "{id}"
            );
        }
        // Positions still count from the start of the text given.
        assert_eq!(
            parse(&t, "]Q1https://id.example.com/01/09506000134352/21/A%G1"),
            Err(CodeError::PercentEscape {
                pos: 48,
                found: "%G1".into()
            })
        );
    }

    #[test]
    fn digital_link_percent_encodes_serial_and_lot() {
        let data = CodeData {
            lot: Some(Lot::new("L&1=2?").unwrap()),
            ..with_serial("A/B%C&D")
        };
        let uri = render(&dl(), &data).unwrap();
        assert_eq!(
            uri,
            "https://id.example.com/01/09506000134352/10/L%261%3D2%3F/21/A%2FB%25C%26D?17=271231"
        );
        assert_eq!(parse(&dl(), &uri).unwrap(), data);
        // Unreserved characters stay as they are.
        let uri = render(&dl(), &with_serial("a-b.c_d")).unwrap();
        assert!(uri.contains("/21/a-b.c_d?"), "{uri}");
    }

    #[test]
    fn digital_link_accepts_path_qualifiers_prefixes_and_other_params() {
        let t = dl();
        let uri = "https://id.example.com/01/09506000134352/10/ABC123/21/12345XYZ?17=271231";
        assert_eq!(parse(&t, uri).unwrap(), example());
        // The resolver need not match; http and an uppercase scheme are fine.
        let uri = "HTTP://other.example:8080/dl/v1/01/09506000134352/21/12345XYZ?linkType=gs1:pip&17=271231&10=ABC123#top";
        assert_eq!(parse(&t, uri).unwrap(), example());
        // A prefix segment that reads "01" does not confuse the key.
        let uri = "https://x.example/01/01/09506000134352/21/12345XYZ";
        assert_eq!(parse(&t, uri).unwrap(), minimal());
        // A lot or serial of "01" neither.
        let uri = "https://x.example/01/09506000134352/10/01/21/01";
        let data = parse(&t, uri).unwrap();
        assert_eq!(data.lot.unwrap().as_str(), "01");
        assert_eq!(data.serial.as_str(), "01");
        // GTIN-13 unpadded, percent-encoded key in the query, AI (11) checked and skipped.
        let uri =
            "https://[::1]:8443/01/9506000134352/21/12345XYZ?%31%37=271231&11=260101&&10=ABC123";
        assert_eq!(parse(&t, uri).unwrap(), example());
    }

    #[test]
    fn digital_link_errors() {
        let t = dl();
        let base = "https://id.example.com/01/09506000134352/21/12345XYZ";
        assert!(matches!(
            parse(&t, "ftp://id.example.com/01/09506000134352/21/1"),
            Err(CodeError::Scheme { .. })
        ));
        assert!(matches!(
            parse(&t, "https:///01/09506000134352/21/1"),
            Err(CodeError::Resolver { .. })
        ));
        assert!(matches!(
            parse(&t, "https://us er@x/01/09506000134352/21/1"),
            Err(CodeError::Resolver { .. })
        ));
        assert_eq!(
            parse(&t, "https://id.example.com/01/09506000134352/21/A%G1"),
            Err(CodeError::PercentEscape {
                pos: 45,
                found: "%G1".into()
            })
        );
        assert_eq!(
            parse(&t, "https://id.example.com/01/09506000134352/21/A%4"),
            Err(CodeError::PercentEscape {
                pos: 45,
                found: "%4".into()
            })
        );
        assert_eq!(
            parse(&t, "https://id.example.com/01/09506000134352/21/%FF"),
            Err(CodeError::NotUtf8 { ai: "21", pos: 44 })
        );
        assert!(matches!(
            parse(&t, "https://id.example.com/01/09506000134352/21/A%20B"),
            Err(CodeError::Serial {
                pos: 44,
                source: SerialError::BadChar { ch: ' ', pos: 1 }
            })
        ));
        assert_eq!(
            parse(&t, &format!("{base}?99=1")),
            Err(CodeError::UnknownAi {
                ai: "99".into(),
                pos: 53
            })
        );
        assert_eq!(
            parse(&t, &format!("{base}?21=1")),
            Err(CodeError::MisplacedAi {
                ai: "21".into(),
                pos: 53
            })
        );
        assert!(matches!(
            parse(&t, "https://x.example/01/09506000134352/10/A/21/B?10=A"),
            Err(CodeError::RepeatedAi { ai: "10", .. })
        ));
        assert!(matches!(
            parse(&t, &format!("{base}?17=271231&17=271231")),
            Err(CodeError::RepeatedAi { ai: "17", .. })
        ));
        assert!(matches!(
            parse(&t, "https://x.example/01/09506000134352/21/B/10/A"),
            Err(CodeError::PathSegment { .. })
        ));
        assert!(matches!(
            parse(&t, "https://x.example/01/09506000134352/22/A/21/B"),
            Err(CodeError::UnknownAi { .. })
        ));
        assert_eq!(
            parse(&t, "https://x.example/01/09506000134352"),
            Err(CodeError::MissingAi { ai: "21" })
        );
        assert!(matches!(
            parse(&t, "https://x.example/01/09506000134352/21"),
            Err(CodeError::EmptyValue { ai: "21", .. })
        ));
        assert!(matches!(
            parse(&t, "https://x.example/01/09506000134352/21/"),
            Err(CodeError::EmptyValue { ai: "21", .. })
        ));
        assert!(matches!(
            parse(&t, "https://x.example/01/09506000134352/21/B/"),
            Err(CodeError::PathSegment { .. })
        ));
        assert_eq!(
            parse(&t, "https://x.example/gtin/09506000134352"),
            Err(CodeError::MissingAi { ai: "01" })
        );
        assert_eq!(
            parse(&t, "https://x.example?17=271231"),
            Err(CodeError::MissingAi { ai: "01" })
        );
        assert!(matches!(
            parse(&t, &format!("{base}?17=2712")),
            Err(CodeError::FixedLength { ai: "17", .. })
        ));
        assert!(matches!(
            parse(&t, "https://x.example/01/09506000134353/21/B"),
            Err(CodeError::Gtin { .. })
        ));
        assert!(matches!(
            parse(&t, "https://x.example/01/09506000134/21/B"),
            Err(CodeError::FixedLength { ai: "01", .. })
        ));
        assert!(parse(&t, "https://é.example/01/09506000134352/21/é").is_err());
    }

    #[test]
    fn digital_link_rejects_bad_resolvers() {
        for bad in [
            "",
            "id.example.com/dl",
            "id.example.com?x",
            "id.example.com#x",
            "id example.com",
            "id.example.com\n",
            "exämple.com",
            "user@example.com",
            ":8080",
            "example.com:",
            "example.com:99999",
            "example.com:0",
            "a..b",
            ".example.com",
            "-a.example.com",
            "[::1",
            "[zz]",
            "[::1]x",
        ] {
            let t = Template::DigitalLink {
                resolver: bad.into(),
            };
            assert!(
                matches!(render(&t, &example()), Err(CodeError::Resolver { .. })),
                "{bad:?} accepted"
            );
            assert!(t.validate().is_err());
        }
        for good in [
            "id.example.com",
            "localhost:8080",
            "10.0.0.1",
            "[::1]:8443",
            "a-b.example",
        ] {
            let t = Template::DigitalLink {
                resolver: good.into(),
            };
            let uri = render(&t, &example()).unwrap();
            assert_eq!(parse(&t, &uri).unwrap(), example(), "{good}");
        }
    }

    // --- plain text ---

    #[test]
    fn plain_text_known_example() {
        let t = Template::PlainText;
        assert_eq!(render(&t, &example()).unwrap(), HRI);
        assert_eq!(parse(&t, HRI).unwrap(), example());
        assert_eq!(
            render(&t, &minimal()).unwrap(),
            "(01)09506000134352(21)12345XYZ"
        );
        let reordered = "(21)12345XYZ(10)ABC123(01)09506000134352(17)271231";
        assert_eq!(parse(&t, reordered).unwrap(), example());
    }

    #[test]
    fn hri_escapes_parentheses_and_round_trips() {
        let t = Template::PlainText;
        let data = with_serial("A(1)");
        let hri = render_hri(&data);
        assert_eq!(hri, r"(01)09506000134352(17)271231(10)ABC123(21)A\(1\)");
        assert_eq!(parse(&t, &hri).unwrap(), data);
        // A serial that would otherwise read as a second AI.
        let data = CodeData {
            lot: Some(Lot::new("L(17)271231").unwrap()),
            ..with_serial(")(")
        };
        let hri = render_hri(&data);
        assert_eq!(
            hri,
            r"(01)09506000134352(17)271231(10)L\(17\)271231(21)\)\("
        );
        assert_eq!(parse(&t, &hri).unwrap(), data);
        // Values without parentheses are written as GS1 prints them.
        assert_eq!(render_hri(&example()), HRI);
        // A backslash escapes only '(' and ')'.
        assert_eq!(
            parse(&t, r"(01)09506000134352(21)A\B"),
            Err(CodeError::BadEscape { pos: 23 })
        );
        assert_eq!(
            parse(&t, "(01)09506000134352(21)A\\"),
            Err(CodeError::BadEscape { pos: 23 })
        );
    }

    #[test]
    fn plain_text_rejects_parens_and_bad_input() {
        let t = Template::PlainText;
        assert_eq!(
            render(&t, &with_serial("A(1)")),
            Err(CodeError::ParenInPlainText {
                ai: "21",
                value: "A(1)".into()
            })
        );
        let data = CodeData {
            lot: Some(Lot::new("L)").unwrap()),
            ..example()
        };
        assert!(matches!(
            render(&t, &data),
            Err(CodeError::ParenInPlainText { ai: "10", .. })
        ));
        assert_eq!(parse(&t, ""), Err(CodeError::Empty));
        assert!(matches!(
            parse(&t, "0109506000134352"),
            Err(CodeError::ExpectedAi { pos: 0, .. })
        ));
        assert_eq!(
            parse(&t, "(01)09506000134352(21"),
            Err(CodeError::UnclosedAi { pos: 18 })
        );
        assert_eq!(
            parse(&t, "(01)09506000134352(17)2712(21)A")
                .unwrap_err()
                .to_string(),
            "AI (17) at position 22: expected 6 digits, found \"2712\""
        );
        assert_eq!(
            parse(&t, "(01)09506000134352(99)1(21)A"),
            Err(CodeError::UnknownAi {
                ai: "99".into(),
                pos: 18
            })
        );
        assert!(matches!(
            parse(&t, "(01)09506000134352(x)1"),
            Err(CodeError::ExpectedAi { pos: 18, .. })
        ));
        assert_eq!(
            parse(&t, "(01)09506000134352(10)(21)A"),
            Err(CodeError::EmptyValue { ai: "10", pos: 22 })
        );
        assert!(matches!(
            parse(&t, "(01)09506000134352(21)A(21)B"),
            Err(CodeError::RepeatedAi {
                ai: "21",
                pos: 23,
                first: 18
            })
        ));
        assert!(matches!(
            parse(&t, "(01)09506000134352(21)Aé"),
            Err(CodeError::Serial { pos: 22, .. })
        ));
    }

    // --- properties ---

    const CSET82: &str =
        "!\"%&'()*+,-./0123456789:;<=>?ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz";

    fn cset82_value(with_parens: bool) -> impl Strategy<Value = String> {
        let chars: Vec<char> = CSET82
            .chars()
            .filter(|c| with_parens || !matches!(c, '(' | ')'))
            .collect();
        prop::collection::vec(prop::sample::select(chars), 1..=20)
            .prop_map(|v| v.into_iter().collect())
    }

    fn code_data(with_parens: bool) -> impl Strategy<Value = CodeData> {
        let gtin = prop::array::uniform13(0u8..=9).prop_map(|b| Gtin::from_body(b).unwrap());
        let expiry = prop::option::of(
            (0u8..=99, 1u8..=12, 0u8..=31).prop_filter_map("no such day", |(y, m, d)| {
                Expiry::parse(&format!("{y:02}{m:02}{d:02}")).ok()
            }),
        );
        let lot = prop::option::of(cset82_value(with_parens).prop_map(|s| Lot::new(s).unwrap()));
        let serial = cset82_value(with_parens).prop_map(|s| Serial::new(s).unwrap());
        (gtin, expiry, lot, serial).prop_map(|(gtin, expiry, lot, serial)| CodeData {
            gtin,
            expiry,
            lot,
            serial,
        })
    }

    fn templates() -> [Template; 3] {
        [Template::Gs1DataMatrix, dl(), Template::PlainText]
    }

    /// Strings dense in the characters the parsers care about.
    fn tricky_text() -> impl Strategy<Value = String> {
        let chars: Vec<char> = "0123456789()]d\u{1d}%/?=&ABC".chars().collect();
        let body = prop::collection::vec(prop::sample::select(chars), 0..60)
            .prop_map(|v| v.into_iter().collect::<String>());
        let prefix = prop::sample::select(vec![
            "",
            "]d2",
            "\u{1d}01",
            "(01)",
            "https://id.example.com/",
            "https://id.example.com/01/09506000134352/",
            "http://x/01/",
            "é",
        ]);
        (prefix, body).prop_map(|(p, b)| format!("{p}{b}"))
    }

    proptest! {
        #[test]
        fn element_string_round_trips(data in code_data(true)) {
            let t = Template::Gs1DataMatrix;
            let text = render(&t, &data).unwrap();
            prop_assert_eq!(parse(&t, &text).unwrap(), data);
        }

        #[test]
        fn digital_link_round_trips(data in code_data(true)) {
            let t = dl();
            let text = render(&t, &data).unwrap();
            prop_assert_eq!(parse(&t, &text).unwrap(), data);
        }

        #[test]
        fn hri_round_trips_any_value(data in code_data(true)) {
            let text = render_hri(&data);
            prop_assert_eq!(parse(&Template::PlainText, &text).unwrap(), data);
        }

        #[test]
        fn plain_text_round_trips(data in code_data(false)) {
            let t = Template::PlainText;
            let text = render(&t, &data).unwrap();
            prop_assert_eq!(parse(&t, &text).unwrap(), data);
        }

        #[test]
        fn parse_never_panics_on_any_string(text in any::<String>()) {
            for t in templates() {
                let _ = parse(&t, &text);
            }
        }

        #[test]
        fn parse_never_panics_on_tricky_strings(text in tricky_text()) {
            for t in templates() {
                if let Err(e) = parse(&t, &text) {
                    // Formatting the error must not panic either.
                    let _ = e.to_string();
                }
            }
        }
    }
}
