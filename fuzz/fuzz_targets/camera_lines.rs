//! Camera result lines: `camera::parse_line(&profile, line)` with the
//! default profile, a set of realistic templates, and templates taken from
//! the input itself.
//!
//! Input layout: byte 0 selects the mode, the rest is data.
//! - mode 0: default profile (`{trigger};{content};{grade}`), rest is the line;
//! - mode 1: one of the fixed templates (byte 1), rest is the line; plus a
//!   render -> parse round trip built from the input;
//! - mode 2: template text up to the first `\n`, line after it (so the
//!   fuzzer explores profile compilation and parsing together).
#![no_main]

use libfuzzer_sys::fuzz_target;
use serialine_core::Grade;
use serialine_devices::camera::{parse_line, CameraProfile, LineFormat};

/// Templates whose literals hold no alphanumerics, so an alphanumeric
/// content, a decimal trigger and a letter grade always read back.
const TEMPLATES: &[&str] = &[
    "{trigger};{content};{grade}",
    "<{content}>{_}|{grade}",
    "{content}",
    "T:{trigger}:{content}",
    "[{trigger}] {content} q={grade}",
    "{_},{trigger},{content},{grade}",
    "{content};{grade}",
    "{grade}|{content}|{trigger}",
    "{trigger}\t{_}\t{content}\t{grade}\t{_}",
];

fn with_template(t: &str) -> CameraProfile {
    CameraProfile {
        template: t.to_owned(),
        ..CameraProfile::default()
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    match sel % 3 {
        0 => {
            let p = CameraProfile::default();
            check(&p, rest);
        }
        1 => {
            let Some((&which, line)) = rest.split_first() else {
                return;
            };
            let p = with_template(TEMPLATES[usize::from(which) % TEMPLATES.len()]);
            check(&p, line);
            round_trip(&p, which, line);
        }
        _ => {
            let (t, line) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &[][..]),
            };
            let mut p = with_template(&String::from_utf8_lossy(t));
            if sel & 0x80 != 0 {
                // Exercise the no_read list and a small max_line too.
                p.no_read = vec!["-".into(), "NG".into()];
                p.max_line = 16;
            }
            check(&p, line);
        }
    }
});

fn check(p: &CameraProfile, line: &[u8]) {
    let r = parse_line(p, line);
    if let Ok(f) = p.compile() {
        // parse_line and a kept LineFormat agree.
        let direct = f.parse(line).map_err(Into::into);
        assert_eq!(r, direct);
        assert!(f.max_line() >= 16);
    }
    match r {
        Ok(read) => {
            if let Some(c) = &read.content {
                assert!(!c.trim().is_empty(), "empty content must be a no-read");
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// Render a result from input-derived values and parse it back.
fn round_trip(p: &CameraProfile, which: u8, line: &[u8]) {
    let f: LineFormat = p.compile().expect("fixed templates compile");
    let content: String = line
        .iter()
        .map(|&b| char::from(b))
        .filter(char::is_ascii_alphanumeric)
        .collect();
    if content.is_empty()
        || f.parse(content.as_bytes())
            .is_ok_and(|r| r.content.is_none())
    {
        return; // would be a no-read ("NOREAD", "error", ...)
    }
    let unit = line
        .first()
        .map(|&b| u64::from(b) * 1_000_003 + u64::from(which));
    let grade = Grade::from_value(line.len() as u8 % 5);
    let rendered = f.render(unit, Some(&content), grade);
    let read = f
        .parse(rendered.as_bytes())
        .unwrap_or_else(|e| panic!("rendered line {rendered:?} does not parse: {e}"));
    let t = &p.template;
    assert_eq!(
        read.content.as_deref(),
        Some(content.as_str()),
        "{rendered:?}"
    );
    if t.contains("{trigger}") {
        assert_eq!(read.unit, unit, "{rendered:?}");
    }
    if t.contains("{grade}") {
        assert_eq!(read.grade, grade, "{rendered:?}");
    }
}
