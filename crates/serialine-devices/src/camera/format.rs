//! Camera result lines: the profile, its template and the parser.
//!
//! A template such as `"{trigger};{content};{grade}"` names the fields in
//! order, separated by literal text. Fields left of `{content}` are split at
//! the first following separator, fields right of it at the last preceding
//! one, so the content itself may contain the separator (a Digital Link URI
//! with `;`) or the GS character 0x1D of a GS1 element string.
//!
//! The content is passed on exactly as the camera sent it, an AIM symbology
//! identifier (`]d2`, `]d1`, `]d8`, `]Q3`, `]Q1`, ...) included: whether the
//! symbol is right for the job is decided with the job's template by
//! `serialine_core::code::parse` (a GS1 element string from `]d1` is refused
//! there: the printer sent no FNC1). Cameras should be set to transmit the
//! identifier; without it a missing FNC1 cannot be seen.

use crate::api::{CameraRead, UnitId};
use serde::{Deserialize, Serialize};
use serialine_core::Grade;
use std::time::Duration;

/// How a camera writes its results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraProfile {
    /// Line layout with fields `{trigger}` (unit / trigger id, decimal),
    /// `{content}` (required), `{grade}` (A-F or 0-4) and `{_}` (ignored).
    #[serde(default = "default_template")]
    pub template: String,
    /// Contents meaning "nothing decoded" (compared ignoring case). A line
    /// that is just one of these is a no-read whatever the template.
    #[serde(default = "default_no_read")]
    pub no_read: Vec<String>,
    /// A read arriving later than this after its unit was triggered counts
    /// as a no-read. The driver cannot know trigger times, so the pipeline
    /// enforces this per unit (see [`CameraProfile::deadline`]); the driver
    /// only parses and reports.
    #[serde(default)]
    pub deadline_ms: Option<u64>,
    /// Longest line accepted; longer ones are reported as garbage.
    #[serde(default = "default_max_line")]
    pub max_line: usize,
}

fn default_template() -> String {
    "{trigger};{content};{grade}".to_owned()
}
fn default_no_read() -> Vec<String> {
    vec!["NOREAD".to_owned(), "ERROR".to_owned()]
}
fn default_max_line() -> usize {
    4_096
}

impl Default for CameraProfile {
    fn default() -> Self {
        CameraProfile {
            template: default_template(),
            no_read: default_no_read(),
            deadline_ms: None,
            max_line: default_max_line(),
        }
    }
}

impl CameraProfile {
    pub fn deadline(&self) -> Option<Duration> {
        self.deadline_ms.map(Duration::from_millis)
    }

    pub fn compile(&self) -> Result<LineFormat, CameraProfileError> {
        LineFormat::new(self)
    }
}

/// A camera profile that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CameraProfileError {
    #[error("camera template {template:?}: unclosed '{{' at byte {at}")]
    Unclosed { template: String, at: usize },
    #[error("camera template {template:?}: unknown field {{{field}}} (known: trigger, content, grade, _)")]
    UnknownField { template: String, field: String },
    #[error("camera template {template:?}: needs exactly one {{content}}")]
    Content { template: String },
    #[error("camera template {template:?}: {{{field}}} appears more than once")]
    Repeated {
        template: String,
        field: &'static str,
    },
    #[error("camera template {template:?}: fields must be separated by literal text")]
    Adjacent { template: String },
    #[error("camera profile: no_read strings must not be empty")]
    EmptyNoRead,
    #[error("camera profile: max_line must be >= 16")]
    TinyLine,
}

/// Why one line could not be read as a result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("not UTF-8 text")]
    NotUtf8,
    #[error("does not start with {0:?}")]
    MissingPrefix(String),
    #[error("does not end with {0:?}")]
    MissingSuffix(String),
    #[error("separator {0:?} not found")]
    MissingSeparator(String),
    #[error("trigger {0:?} is not a decimal unit id")]
    BadTrigger(String),
    #[error("grade {0:?} is neither A-F nor 0-4")]
    BadGrade(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Trigger,
    Content,
    Grade,
    Ignored,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Lit(String),
    Field(Field),
}

/// A compiled [`CameraProfile`]: parses and renders lines.
#[derive(Debug, Clone)]
pub struct LineFormat {
    segs: Vec<Seg>,
    content_at: usize,
    no_read: Vec<String>,
    max_line: usize,
}

impl LineFormat {
    pub fn new(p: &CameraProfile) -> Result<Self, CameraProfileError> {
        let t = &p.template;
        let mut segs = Vec::new();
        let mut rest = t.as_str();
        let mut offset = 0;
        while !rest.is_empty() {
            match rest.find('{') {
                Some(0) => {
                    let close = rest.find('}').ok_or_else(|| CameraProfileError::Unclosed {
                        template: t.clone(),
                        at: offset,
                    })?;
                    let field = match &rest[1..close] {
                        "trigger" => Field::Trigger,
                        "content" => Field::Content,
                        "grade" => Field::Grade,
                        "_" => Field::Ignored,
                        other => {
                            return Err(CameraProfileError::UnknownField {
                                template: t.clone(),
                                field: other.to_owned(),
                            })
                        }
                    };
                    segs.push(Seg::Field(field));
                    offset += close + 1;
                    rest = &rest[close + 1..];
                }
                found => {
                    let end = found.unwrap_or(rest.len());
                    segs.push(Seg::Lit(rest[..end].to_owned()));
                    offset += end;
                    rest = &rest[end..];
                }
            }
        }
        let count = |f: Field| segs.iter().filter(|s| **s == Seg::Field(f)).count();
        if count(Field::Content) != 1 {
            return Err(CameraProfileError::Content {
                template: t.clone(),
            });
        }
        for (f, name) in [(Field::Trigger, "trigger"), (Field::Grade, "grade")] {
            if count(f) > 1 {
                return Err(CameraProfileError::Repeated {
                    template: t.clone(),
                    field: name,
                });
            }
        }
        if segs
            .windows(2)
            .any(|w| matches!(w, [Seg::Field(_), Seg::Field(_)]))
        {
            return Err(CameraProfileError::Adjacent {
                template: t.clone(),
            });
        }
        if p.no_read.iter().any(|s| s.trim().is_empty()) {
            return Err(CameraProfileError::EmptyNoRead);
        }
        if p.max_line < 16 {
            return Err(CameraProfileError::TinyLine);
        }
        let content_at = segs
            .iter()
            .position(|s| *s == Seg::Field(Field::Content))
            .unwrap_or(0);
        Ok(LineFormat {
            segs,
            content_at,
            no_read: p.no_read.clone(),
            max_line: p.max_line,
        })
    }

    pub fn max_line(&self) -> usize {
        self.max_line
    }

    fn is_no_read(&self, s: &str) -> bool {
        let s = s.trim();
        s.is_empty()
            || self
                .no_read
                .iter()
                .any(|n| n.trim().eq_ignore_ascii_case(s))
    }

    /// Parses one line (without its line ending; a trailing `\r` is dropped).
    pub fn parse(&self, line: &[u8]) -> Result<CameraRead, LineError> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let line = std::str::from_utf8(line).map_err(|_| LineError::NotUtf8)?;
        if self.is_no_read(line) {
            return Ok(CameraRead {
                unit: None,
                content: None,
                grade: None,
            });
        }
        let mut values: [Option<&str>; 4] = [None; 4];
        let slot = |f: Field| f as usize;
        // Left of {content}: split at the first following literal.
        let mut rest = line;
        let left = &self.segs[..self.content_at];
        for (i, seg) in left.iter().enumerate() {
            match seg {
                Seg::Lit(l) => {
                    rest = rest
                        .strip_prefix(l.as_str())
                        .ok_or_else(|| LineError::MissingPrefix(l.clone()))?;
                }
                Seg::Field(f) => {
                    // Adjacent fields are rejected at compile time, so a
                    // field is followed by a literal (or by {content}, which
                    // then would be adjacent: impossible).
                    let Some(Seg::Lit(sep)) = self.segs.get(i + 1) else {
                        return Err(LineError::MissingSeparator(String::new()));
                    };
                    let at = rest
                        .find(sep.as_str())
                        .ok_or_else(|| LineError::MissingSeparator(sep.clone()))?;
                    values[slot(*f)] = Some(&rest[..at]);
                    rest = &rest[at..];
                }
            }
        }
        // Right of {content}: split at the last preceding literal.
        let right = &self.segs[self.content_at + 1..];
        for (j, seg) in right.iter().enumerate().rev() {
            match seg {
                Seg::Lit(l) => {
                    rest = rest
                        .strip_suffix(l.as_str())
                        .ok_or_else(|| LineError::MissingSuffix(l.clone()))?;
                }
                Seg::Field(f) => {
                    let Some(Seg::Lit(sep)) = self.segs.get(self.content_at + j) else {
                        return Err(LineError::MissingSeparator(String::new()));
                    };
                    let at = rest
                        .rfind(sep.as_str())
                        .ok_or_else(|| LineError::MissingSeparator(sep.clone()))?;
                    values[slot(*f)] = Some(&rest[at + sep.len()..]);
                    rest = &rest[..at + sep.len()];
                }
            }
        }
        let content = rest;
        let unit = match values[slot(Field::Trigger)].map(str::trim) {
            None | Some("") => None,
            Some(t) => Some(
                t.parse::<UnitId>()
                    .map_err(|_| LineError::BadTrigger(t.to_owned()))?,
            ),
        };
        let no_read = self.is_no_read(content);
        let grade = match values[slot(Field::Grade)].map(str::trim) {
            None | Some("") => None,
            Some(g) => match Grade::parse(g) {
                Some(g) => Some(g),
                // A no-read often carries a placeholder ("ERROR", "-") in
                // the grade column; there is nothing to grade anyway.
                None if no_read => None,
                None => return Err(LineError::BadGrade(g.to_owned())),
            },
        };
        Ok(CameraRead {
            unit,
            content: (!no_read).then(|| content.to_owned()),
            grade,
        })
    }

    /// Writes a result line (without line ending); a no-read is written as
    /// the first `no_read` string. Used by the simulator.
    pub fn render(
        &self,
        unit: Option<UnitId>,
        content: Option<&str>,
        grade: Option<Grade>,
    ) -> String {
        let mut out = String::new();
        for seg in &self.segs {
            match seg {
                Seg::Lit(l) => out.push_str(l),
                Seg::Field(Field::Trigger) => {
                    if let Some(u) = unit {
                        out.push_str(&u.to_string());
                    }
                }
                Seg::Field(Field::Content) => match content {
                    Some(c) => out.push_str(c),
                    None => out.push_str(self.no_read.first().map_or("NOREAD", String::as_str)),
                },
                Seg::Field(Field::Grade) => {
                    if let Some(g) = grade {
                        out.push(g.letter());
                    }
                }
                Seg::Field(Field::Ignored) => {}
            }
        }
        out
    }
}

/// Parses one result line with `profile` (compiling it each call: for
/// fuzzing and one-offs; the driver keeps a [`LineFormat`]).
pub fn parse_line(profile: &CameraProfile, line: &[u8]) -> Result<CameraRead, ParseLineError> {
    let format = LineFormat::new(profile)?;
    Ok(format.parse(line)?)
}

/// [`parse_line`]'s error: a bad profile or a bad line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseLineError {
    #[error(transparent)]
    Profile(#[from] CameraProfileError),
    #[error(transparent)]
    Line(#[from] LineError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fmt(t: &str) -> LineFormat {
        CameraProfile {
            template: t.into(),
            ..CameraProfile::default()
        }
        .compile()
        .expect("valid template")
    }

    #[test]
    fn parses_reads_no_reads_and_grades() {
        let f = fmt("{trigger};{content};{grade}");
        let r = f
            .parse(b"17;(01)09506000134352(21)A\x1dB;B\r")
            .expect("parses");
        assert_eq!(r.unit, Some(17));
        assert_eq!(r.content.as_deref(), Some("(01)09506000134352(21)A\u{1d}B"));
        assert_eq!(r.grade, Some(Grade::B));
        let r = f
            .parse(b"3;https://id.example/01/1;x=2;3.5")
            .expect("';' inside content");
        assert_eq!(r.content.as_deref(), Some("https://id.example/01/1;x=2"));
        assert_eq!(r.grade, Some(Grade::B));
        let r = f.parse(b"4;NOREAD;ERROR").expect("no-read");
        assert_eq!((r.unit, r.content, r.grade), (Some(4), None, None));
        assert_eq!(f.parse(b"noread").expect("bare no-read").content, None);
        let r = f.parse(b";ABC;").expect("empty trigger and grade");
        assert_eq!((r.unit, r.grade), (None, None));
    }

    #[test]
    fn symbology_identifiers_pass_through_for_the_code_parser() {
        use serialine_core::code::{self, CodeError, Template};
        let f = fmt("{trigger};{content};{grade}");
        let es = "01095060001343521727123110LOT7\u{1d}21S1";
        for (id, gs1_ok) in [
            ("]d2", true),
            ("]d8", true),
            ("]Q3", true),
            ("]d1", false),
            ("]d7", false),
            ("]Q1", false),
        ] {
            let line = format!("9;{id}{es};A");
            let r = f.parse(line.as_bytes()).expect("parses");
            let content = r.content.expect("content");
            assert_eq!(content, format!("{id}{es}"), "identifier kept");
            let parsed = code::parse(&Template::Gs1DataMatrix, &content);
            if gs1_ok {
                assert!(parsed.is_ok(), "{id}: {parsed:?}");
            } else {
                assert!(
                    matches!(parsed, Err(CodeError::NotGs1Symbol { .. })),
                    "{id}: {parsed:?}"
                );
            }
        }
    }

    #[test]
    fn malformed_lines_are_typed_errors() {
        let f = fmt("[{trigger}] {content} q={grade}");
        assert!(f.parse(b"[9] X q=A").is_ok());
        assert_eq!(
            f.parse(b"9] X q=A"),
            Err(LineError::MissingPrefix("[".into()))
        );
        assert_eq!(
            f.parse(b"[x] X q=A"),
            Err(LineError::BadTrigger("x".into()))
        );
        assert_eq!(f.parse(b"[9] X q=E"), Err(LineError::BadGrade("E".into())));
        assert_eq!(
            f.parse(b"[9] X"),
            Err(LineError::MissingSeparator(" q=".into()))
        );
        assert_eq!(f.parse(b"[9] \xff q=A"), Err(LineError::NotUtf8));
    }

    #[test]
    fn render_round_trips() {
        let f = fmt("{_},{trigger},{content},{grade}");
        let line = f.render(Some(5), Some("A,B"), Some(Grade::C));
        assert_eq!(line, ",5,A,B,C");
        let r = f.parse(line.as_bytes()).expect("parses back");
        assert_eq!(
            (r.unit, r.content.as_deref(), r.grade),
            (Some(5), Some("A,B"), Some(Grade::C))
        );
    }

    #[test]
    fn bad_profiles_are_named() {
        for (t, want) in [
            ("{trigger};{grade}", "exactly one {content}"),
            ("{trigger}{content}", "separated"),
            ("{x};{content}", "unknown field"),
            ("{content", "unclosed"),
        ] {
            let p = CameraProfile {
                template: t.into(),
                ..CameraProfile::default()
            };
            let e = p.compile().expect_err(t).to_string();
            assert!(e.contains(want), "{t}: {e}");
        }
    }

    proptest! {
        #[test]
        fn never_panics(line in proptest::collection::vec(any::<u8>(), 0..300),
                        t in prop_oneof![Just("{trigger};{content};{grade}"), Just("<{content}>{_}|{grade}"),
                                         Just("{content}"), Just("T{trigger}:{content}")]) {
            let _ = fmt(t).parse(&line);
        }
    }
}
