//! Message templates with `{id}` / `{id:04}` / `{code}` fields.
//!
//! The same template renders a message and matches one back, so the driver
//! (rendering `P{id:04}|{code}`, matching `D{id:04}`) and the simulator (the
//! other way round) cannot disagree about the format.
//!
//! `{id:0N}` (or `{id:N}`) is a fixed-width field of N digits, as printers'
//! message numbers are: the unit id is written modulo 10^N and wraps. A
//! report's id therefore identifies a unit only among the few in flight,
//! which is why a profile's `buffer_depth` must stay below 10^N.
//! `{{` and `}}` are literal braces.

use std::fmt::Write as _;

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Lit(Vec<u8>),
    /// Digits of the unit id; `Some(n)`: exactly n digits, wrapping.
    Id(Option<usize>),
    Code,
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    segments: Vec<Segment>,
}

/// What a template string got wrong, with the template and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("template {template:?}: unclosed '{{' at byte {at}")]
    Unclosed { template: String, at: usize },
    #[error("template {template:?}: stray '}}' at byte {at} (write '}}}}' for a literal brace)")]
    StrayBrace { template: String, at: usize },
    #[error("template {template:?}: unknown field {{{field}}} (known: id, id:0N, code)")]
    UnknownField { template: String, field: String },
    #[error("template {template:?}: field {field} may appear only once")]
    Repeated {
        template: String,
        field: &'static str,
    },
    #[error(
        "template {template:?}: {{{first}}} directly followed by {{{second}}} cannot be split \
         when read back; put a literal between them or give the id a width"
    )]
    Ambiguous {
        template: String,
        first: &'static str,
        second: &'static str,
    },
}

/// Largest id width for which `10^width` fits a u64.
const MAX_ID_WIDTH: usize = 19;

impl Template {
    pub fn parse(source: &str) -> Result<Template, TemplateError> {
        let bytes = source.as_bytes();
        let mut segments = Vec::new();
        let mut lit = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'{' if bytes.get(i + 1) == Some(&b'{') => {
                    lit.push(b'{');
                    i += 2;
                }
                b'}' if bytes.get(i + 1) == Some(&b'}') => {
                    lit.push(b'}');
                    i += 2;
                }
                b'}' => {
                    return Err(TemplateError::StrayBrace {
                        template: source.to_owned(),
                        at: i,
                    })
                }
                b'{' => {
                    let close = bytes[i..].iter().position(|&b| b == b'}').ok_or(
                        TemplateError::Unclosed {
                            template: source.to_owned(),
                            at: i,
                        },
                    )?;
                    let field = &source[i + 1..i + close];
                    let seg = parse_field(field).ok_or_else(|| TemplateError::UnknownField {
                        template: source.to_owned(),
                        field: field.to_owned(),
                    })?;
                    if !lit.is_empty() {
                        segments.push(Segment::Lit(std::mem::take(&mut lit)));
                    }
                    segments.push(seg);
                    i += close + 1;
                }
                b => {
                    lit.push(b);
                    i += 1;
                }
            }
        }
        if !lit.is_empty() {
            segments.push(Segment::Lit(lit));
        }
        let t = Template {
            source: source.to_owned(),
            segments,
        };
        t.validate()?;
        Ok(t)
    }

    fn validate(&self) -> Result<(), TemplateError> {
        let count = |f: fn(&Segment) -> bool| self.segments.iter().filter(|s| f(s)).count();
        if count(|s| matches!(s, Segment::Id(_))) > 1 {
            return Err(self.repeated("{id}"));
        }
        if count(|s| matches!(s, Segment::Code)) > 1 {
            return Err(self.repeated("{code}"));
        }
        for pair in self.segments.windows(2) {
            let clash = match (&pair[0], &pair[1]) {
                (Segment::Code, Segment::Id(_)) => Some(("code", "id")),
                (Segment::Id(None), Segment::Code) => Some(("id", "code")),
                _ => None,
            };
            if let Some((first, second)) = clash {
                return Err(TemplateError::Ambiguous {
                    template: self.source.clone(),
                    first,
                    second,
                });
            }
        }
        Ok(())
    }

    fn repeated(&self, field: &'static str) -> TemplateError {
        TemplateError::Repeated {
            template: self.source.clone(),
            field,
        }
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn has_code(&self) -> bool {
        self.segments.contains(&Segment::Code)
    }

    pub fn has_id(&self) -> bool {
        self.segments.iter().any(|s| matches!(s, Segment::Id(_)))
    }

    /// The id's fixed width, if it has one.
    pub fn id_width(&self) -> Option<usize> {
        self.segments.iter().find_map(|s| match s {
            Segment::Id(w) => *w,
            _ => None,
        })
    }

    /// How an id is written: modulo 10^width for a fixed-width field.
    pub fn wire_id(&self, id: u64) -> u64 {
        match self.id_width() {
            // 10^19 still fits in a u64, so width 19 wraps too (found by
            // the printer_frames fuzz target: it rendered 20 digits).
            Some(w) if w <= MAX_ID_WIDTH => id % 10u64.pow(w as u32),
            _ => id,
        }
    }

    /// Renders the template for one unit.
    pub fn render(&self, id: u64, code: &str) -> String {
        let mut out = String::with_capacity(self.source.len() + code.len());
        for s in &self.segments {
            match s {
                Segment::Lit(l) => out.push_str(&String::from_utf8_lossy(l)),
                Segment::Id(Some(w)) => {
                    let _ = write!(out, "{:0w$}", self.wire_id(id), w = *w);
                }
                Segment::Id(None) => {
                    let _ = write!(out, "{id}");
                }
                Segment::Code => out.push_str(code),
            }
        }
        out
    }

    /// Matches a payload against the template; on success returns the wire
    /// id (if the template has one) and the code bytes (if it has `{code}`).
    pub fn matches<'a>(&self, payload: &'a [u8]) -> Option<Match<'a>> {
        let mut rest = payload;
        let mut m = Match::default();
        for (k, seg) in self.segments.iter().enumerate() {
            match seg {
                Segment::Lit(l) => rest = rest.strip_prefix(l.as_slice())?,
                Segment::Id(w) => {
                    let n = match w {
                        Some(w) => *w,
                        None => rest.iter().take_while(|b| b.is_ascii_digit()).count(),
                    };
                    let digits = rest.get(..n)?;
                    if n == 0 || n > MAX_ID_WIDTH + 1 || !digits.iter().all(u8::is_ascii_digit) {
                        return None;
                    }
                    // Digits only, so UTF-8 and (for <= 20 digits) parseable
                    // unless it overflows, which is just a mismatch.
                    m.id = Some(std::str::from_utf8(digits).ok()?.parse().ok()?);
                    rest = &rest[n..];
                }
                Segment::Code => {
                    let code = match self.segments.get(k + 1) {
                        None => rest,
                        // The literal after {code} ends the template: the code
                        // is everything before that suffix, even if the code
                        // itself contains the literal.
                        Some(Segment::Lit(l)) if k + 2 == self.segments.len() => {
                            rest.strip_suffix(l.as_slice())?
                        }
                        Some(Segment::Lit(l)) => &rest[..find(rest, l)?],
                        // validate() rules out {code}{id}; {code}{code} too.
                        Some(_) => return None,
                    };
                    m.code = Some(code);
                    rest = &rest[code.len()..];
                }
            }
        }
        rest.is_empty().then_some(m)
    }
}

/// What [`Template::matches`] extracted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Match<'a> {
    pub id: Option<u64>,
    pub code: Option<&'a [u8]>,
}

fn parse_field(field: &str) -> Option<Segment> {
    match field {
        "code" => Some(Segment::Code),
        "id" => Some(Segment::Id(None)),
        _ => {
            let w = field.strip_prefix("id:")?;
            let w: usize = w.trim_start_matches('0').parse().ok()?;
            (1..=MAX_ID_WIDTH)
                .contains(&w)
                .then_some(Segment::Id(Some(w)))
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (fuzz/regressions/printer_frames/id_width_19_renders_20_digits):
    /// a fixed width holds for the widest id too.
    #[test]
    fn widest_fixed_id_renders_its_width_and_matches_back() {
        let t = Template::parse("{id:19}").unwrap();
        let id = 18_393_054_299_950_378_092;
        let text = t.render(id, "");
        assert_eq!(text.len(), 19, "{text}");
        assert!(t.matches(text.as_bytes()).is_some(), "{text}");
    }

    #[test]
    fn renders_and_matches_back() {
        let t = Template::parse("P{id:04}|{code}").expect("valid");
        let s = t.render(12_345, "(01)0950\u{1d}21ABC");
        assert_eq!(s, "P2345|(01)0950\u{1d}21ABC");
        let m = t.matches(s.as_bytes()).expect("matches");
        assert_eq!(m.id, Some(2345));
        assert_eq!(m.code, Some("(01)0950\u{1d}21ABC".as_bytes()));
        let d = Template::parse("D{id:04}").expect("valid");
        assert_eq!(d.matches(b"D0007").map(|m| m.id), Some(Some(7)));
        assert_eq!(d.matches(b"D007"), None);
        assert_eq!(d.matches(b"D00071"), None);
        assert_eq!(d.matches(b"X0007"), None);
        let free = Template::parse("M{id};{code};").expect("valid");
        let m = free.matches(b"M42;a;b;").expect("code keeps the ';'");
        assert_eq!((m.id, m.code), (Some(42), Some(&b"a;b"[..])));
        assert_eq!(
            Template::parse("{{{id}}}").expect("valid").render(3, ""),
            "{3}"
        );
    }

    #[test]
    fn bad_templates_are_named() {
        for (t, want) in [
            ("P{id", "unclosed"),
            ("P}", "stray"),
            ("{serial}", "unknown field"),
            ("{id}{code}", "cannot be split"),
            ("{code}{id:04}", "cannot be split"),
            ("{id}{id}", "only once"),
            ("{id:0}", "unknown field"),
        ] {
            let e = Template::parse(t).expect_err(t).to_string();
            assert!(e.contains(want), "{t}: {e}");
        }
        assert!(Template::parse("{id:04}{code}").is_ok());
    }
}
