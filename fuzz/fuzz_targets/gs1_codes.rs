//! Codes read back by the camera: `serialine_core::code::parse` for every
//! `Template` (GS1 element string, GS1 Digital Link URI, plain text), with
//! round trips through `render`.
//!
//! Input layout: byte 0 selects the template (and a mode), the rest is the
//! text (UTF-8; invalid input is converted lossily so the parsers still see
//! it).
//! - mode 0..=2: parse with template 0..=2; if it parses, rendering the
//!   result with *every* template that accepts it parses back to the same
//!   value;
//! - mode 3: the text is a Digital Link resolver; if `Template::validate`
//!   accepts it, rendering fixed code data under it must succeed and parse
//!   back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serialine_core::code::{self, CodeData, Template};
use std::borrow::Cow;

fn templates() -> [Template; 3] {
    [
        Template::Gs1DataMatrix,
        Template::DigitalLink {
            resolver: "id.example.com".into(),
        },
        Template::PlainText,
    ]
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let text: Cow<str> = match std::str::from_utf8(rest) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(rest),
    };
    let all = templates();
    match sel % 4 {
        3 => resolver(&text),
        i => {
            let t = &all[usize::from(i)];
            match code::parse(t, &text) {
                Ok(parsed) => {
                    for t2 in &all {
                        round_trip(t2, &parsed);
                    }
                }
                Err(e) => {
                    let _ = e.to_string();
                }
            }
        }
    }
});

fn round_trip(t: &Template, data: &CodeData) {
    let Ok(rendered) = code::render(t, data) else {
        // Only plain text may refuse (a '(' or ')' in lot or serial).
        assert!(matches!(t, Template::PlainText), "{t:?} refused {data:?}");
        return;
    };
    let back = code::parse(t, &rendered)
        .unwrap_or_else(|e| panic!("{t:?}: rendered {rendered:?} does not parse: {e}"));
    assert_eq!(&back, data, "{t:?}: rendered {rendered:?}");
    // The HRI escapes '(' and ')' in values, so it always reads back.
    let hri = code::render_hri(data);
    let back = code::parse(&Template::PlainText, &hri)
        .unwrap_or_else(|e| panic!("HRI {hri:?} does not parse: {e}"));
    assert_eq!(&back, data, "HRI {hri:?}");
}

fn resolver(text: &str) {
    let t = Template::DigitalLink {
        resolver: text.to_owned(),
    };
    if t.validate().is_err() {
        return;
    }
    // Lot and serial need percent-encoding in a URI ('%', '/', '?', '&').
    let data = code::parse(
        &Template::PlainText,
        concat!(
            "(01)09506000134352",
            "(17)271231",
            "(10)L&T/7",
            "(21)A%B/c?d"
        ),
    )
    .expect("fixed element string parses");
    let rendered = code::render(&t, &data)
        .unwrap_or_else(|e| panic!("validated resolver {text:?} cannot render: {e}"));
    let back = code::parse(&t, &rendered)
        .unwrap_or_else(|e| panic!("resolver {text:?}: {rendered:?} does not parse: {e}"));
    assert_eq!(back, data);
}
