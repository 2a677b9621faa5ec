//! Rendering one ZPL II label per code.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The 2D symbology on the label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Symbology {
    /// Data Matrix ECC 200 (`^BX…,200`).
    DataMatrix,
    /// QR Code model 2 (`^BQN,2`), error correction M, automatic mode.
    Qr,
}

/// Optional human-readable line under/next to the symbol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextField {
    pub x: u32,
    pub y: u32,
    /// Character height in dots (font 0).
    pub height: u32,
}

/// Layout of the label, from config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelTemplate {
    pub symbology: Symbology,
    /// Module (cell) size in dots; QR magnification 1..=10.
    pub module_size: u8,
    /// Field origin of the symbol, in dots.
    pub x: u32,
    pub y: u32,
    /// GS1 content: Data Matrix gets FNC1 in first position. Separators
    /// inside the code are already GS characters.
    #[serde(default)]
    pub gs1: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<TextField>,
    /// Host status poll period while a label prints (ms).
    #[serde(default = "default_poll_ms")]
    pub poll_interval_ms: u64,
}

fn default_poll_ms() -> u64 {
    50
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RenderError {
    #[error("label template: module_size {got} is outside {min}..={max} for {symbology:?}")]
    ModuleSize {
        symbology: Symbology,
        got: u8,
        min: u8,
        max: u8,
    },
    #[error("label template: poll_interval_ms must be at least 1")]
    PollInterval,
    #[error("code is empty")]
    Empty,
    #[error("code character {ch:?} at position {pos} is not ASCII (no ^CI code page is set)")]
    NotAscii { pos: usize, ch: char },
}

impl LabelTemplate {
    pub fn validate(&self) -> Result<(), RenderError> {
        let (min, max) = match self.symbology {
            Symbology::DataMatrix => (1, 50),
            Symbology::Qr => (1, 10),
        };
        if !(min..=max).contains(&self.module_size) {
            return Err(RenderError::ModuleSize {
                symbology: self.symbology,
                got: self.module_size,
                min,
                max,
            });
        }
        if self.poll_interval_ms == 0 {
            return Err(RenderError::PollInterval);
        }
        Ok(())
    }
}

/// `^FH_` hex escaping: everything ZPL would interpret (`^`, `~`, the `_`
/// indicator itself) and every control character (GS = `_1D`) goes as
/// `_XX`, so any ASCII code survives the format parser byte for byte.
fn push_hex_escaped(out: &mut String, bytes: &[u8]) {
    for &b in bytes {
        let plain = b.is_ascii_graphic() && !matches!(b, b'^' | b'~' | b'_') || b == b' ';
        if plain {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("_{b:02X}"));
        }
    }
}

fn check_ascii(code: &str) -> Result<(), RenderError> {
    if code.is_empty() {
        return Err(RenderError::Empty);
    }
    match code.chars().enumerate().find(|(_, c)| !c.is_ascii()) {
        Some((pos, ch)) => Err(RenderError::NotAscii { pos, ch }),
        None => Ok(()),
    }
}

/// Render one complete `^XA … ^XZ` format for `code`.
///
/// Data Matrix quality 200 applies its own escapes (character `_`, set
/// explicitly with ^BX's g parameter because firmware defaults differ) *after*
/// `^FH` hex decoding. So a literal `_` must reach it doubled (`_5F_5F`) and
/// FNC1 in first position is `_1`, written `_5F1` to pass ^FH untouched.
pub fn render(template: &LabelTemplate, code: &str) -> Result<String, RenderError> {
    template.validate()?;
    check_ascii(code)?;
    let mut out = String::with_capacity(code.len() * 2 + 96);
    out.push_str("^XA\n");
    let (x, y, m) = (template.x, template.y, template.module_size);
    match template.symbology {
        Symbology::DataMatrix => {
            out.push_str(&format!("^FO{x},{y}^BXN,{m},200,,,,_^FH_^FD"));
            if template.gs1 {
                out.push_str("_5F1");
            }
            for b in code.bytes() {
                if b == b'_' {
                    out.push_str("_5F_5F");
                } else {
                    push_hex_escaped(&mut out, &[b]);
                }
            }
        }
        Symbology::Qr => {
            out.push_str(&format!("^FO{x},{y}^BQN,2,{m}^FH_^FDMA,"));
            push_hex_escaped(&mut out, code.as_bytes());
        }
    }
    out.push_str("^FS\n");
    if let Some(t) = template.text {
        let h = t.height;
        out.push_str(&format!("^FO{},{}^A0N,{h},{h}^FH_^FD", t.x, t.y));
        push_hex_escaped(&mut out, human_readable(template, code).as_bytes());
        out.push_str("^FS\n");
    }
    out.push_str("^XZ\n");
    Ok(out)
}

/// The line of text under the symbol: for a GS1 label whose code parses
/// as an element string, its AIs in parentheses as GS1 prints them
/// (`(01)19506000134359(17)271231(10)LOT(21)SERIAL`); otherwise the code,
/// its separators (invisible on paper) as spaces.
fn human_readable(template: &LabelTemplate, code: &str) -> String {
    use serialine_core::code::{self, Template};
    if template.gs1 {
        if let Ok(data) = code::parse(&Template::Gs1DataMatrix, code) {
            return code::render_hri(&data);
        }
    }
    code.chars()
        .map(|c| if c.is_ascii_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn render_never_panics_and_keeps_fields_closed(code in any::<String>(), qr: bool) {
            let mut t = dm();
            if qr {
                t.symbology = Symbology::Qr;
            }
            if let Ok(zpl) = render(&t, &code) {
                // Escaping must leave exactly the template's own commands.
                prop_assert_eq!(zpl.matches("^FD").count(), 2);
                prop_assert_eq!(zpl.matches('^').count(), 12);
                prop_assert!(!zpl.contains('~'));
            }
        }
    }

    fn dm() -> LabelTemplate {
        LabelTemplate {
            symbology: Symbology::DataMatrix,
            module_size: 6,
            x: 40,
            y: 30,
            gs1: true,
            text: Some(TextField {
                x: 40,
                y: 200,
                height: 24,
            }),
            poll_interval_ms: 50,
        }
    }

    #[test]
    fn a_gs1_label_prints_its_ais_in_parentheses_under_the_symbol() {
        let zpl = render(&dm(), "01195060001343591727123110LOT7\u{1d}21CASE7").unwrap();
        let text = zpl.lines().find(|l| l.contains("^A0N")).unwrap();
        assert!(
            text.ends_with("^FD(01)19506000134359(17)271231(10)LOT7(21)CASE7^FS"),
            "{text}"
        );
        // Not GS1: the code as it is, separators as spaces.
        let mut plain = dm();
        plain.gs1 = false;
        let zpl = render(&plain, "AB\u{1d}CD").unwrap();
        assert!(zpl.contains("^FDAB CD^FS"), "{zpl}");
    }

    #[test]
    fn data_matrix_gs1_escapes() {
        let zpl = render(&dm(), "0109506000134352\u{1d}21A_B^C").unwrap();
        assert!(zpl.starts_with(
            "^XA\n^FO40,30^BXN,6,200,,,,_^FH_^FD_5F10109506000134352_1D21A_5F_5FB_5EC^FS\n"
        ));
        assert!(zpl.contains("^FO40,200^A0N,24,24^FH_^FD0109506000134352 21A_5FB_5EC^FS\n"));
        assert!(zpl.ends_with("^XZ\n"));
    }

    #[test]
    fn qr_uses_mode_prefix() {
        let mut t = dm();
        t.symbology = Symbology::Qr;
        t.text = None;
        let zpl = render(&t, "https://id.gs1.org/01/09506000134352/21/~X").unwrap();
        assert_eq!(
            zpl,
            "^XA\n^FO40,30^BQN,2,6^FH_^FDMA,https://id.gs1.org/01/09506000134352/21/_7EX^FS\n^XZ\n"
        );
    }

    #[test]
    fn refuses_what_it_cannot_print() {
        assert_eq!(render(&dm(), ""), Err(RenderError::Empty));
        assert!(matches!(
            render(&dm(), "aé"),
            Err(RenderError::NotAscii { pos: 1, .. })
        ));
        let mut t = dm();
        t.symbology = Symbology::Qr;
        t.module_size = 11;
        assert!(matches!(
            render(&t, "x"),
            Err(RenderError::ModuleSize { got: 11, .. })
        ));
    }
}
