//! `serialine code ...`: render a job's codes and parse codes read back, with
//! the same code as the line (`serialine_core::code`). For people checking
//! what a printer will get or what a camera sent, and for the GS1
//! conformance suite (`scripts/gs1_conformance.py`), which compares both
//! directions against independent GS1 implementations.

use anyhow::{bail, Context};
use serde_json::{json, Value};
use serialine_core::code::{self, CodeData, Parsed, Template};
use serialine_core::serialgen::{SerialGenerator, DEFAULT_ALPHABET, DEFAULT_LEN};
use serialine_core::{Expiry, Gtin, Lot, Serial};
use std::io::{BufRead, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

const RENDER_AFTER_HELP: &str = "\
Examples:
  # Ten codes of a job, as the printer gets them (GS shown as <GS>):
  serialine code render --gtin 09506000134352 --lot ABC123 --expiry 271231 --count 10

  # The same units as Digital Link URIs and as human-readable text:
  serialine code render --gtin 9506000134352 --lot ABC123 --expiry 271231 \\
      --count 10 --format dl --resolver id.example.com
  serialine code render --gtin 9506000134352 --count 10 --format hri

  # Given serials, one per line, everything as JSON lines:
  printf 'A(1)\\nX/Y%%Z\\n' | serialine code render --gtin 96385074 --serials - --format json

Serials come from the issuer's generator (a keyed permutation over
--serial-alphabet of --serial-length characters; --seed picks the key, so
the same arguments give the same serials) unless --serials names a file.";

const PARSE_AFTER_HELP: &str = "\
Reads one code per line on stdin (a trailing CR is dropped; GS separators
raw, as a camera sends them) and prints one JSON object per line:

  {\"input\": …, \"ok\": true, \"gtin\": \"09506000134352\", \"lot\": \"ABC123\" | null,
   \"expiry\": \"271231\" | null, \"serial\": \"…\",
   \"form\": {\"form\": \"element-string\", \"symbology\": \"gs1-data-matrix\" | null}}
  {\"input\": …, \"ok\": false, \"error\": \"…\"}

\"ok\" is what the line would decide: an element string from a symbol the
camera identifies as not GS1 (]d1, ]d7, ]Q1: the printer sent no FNC1) is
not ok. A Digital Link's form says whether its lot was in the query string
(the form Serialine rendered before it put key qualifiers in the path).

Examples:
  printf '(01)09506000134352(17)271231(10)ABC123(21)12345XYZ\\n' | serialine code parse
  serialine code render --gtin 9506000134352 --lot L1 --count 3 --raw-gs | serialine code parse
  printf ']d10109506000134352211\\n' | serialine code parse   # not ok: no FNC1

Exit status: 0 if every line parsed, 1 if any did not.";

#[derive(Debug, clap::Subcommand)]
pub enum CodeCommand {
    /// Render codes for a job, as the printer gets them (or as JSON).
    #[command(after_help = RENDER_AFTER_HELP)]
    Render(RenderArgs),
    /// Parse codes read back (one per line on stdin) and print JSON lines.
    #[command(after_help = PARSE_AFTER_HELP)]
    Parse(ParseArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RenderFormat {
    /// GS1 element string for a GS1 DataMatrix, as the printer gets it;
    /// the GS separator is shown as <GS> (--raw-gs sends the 0x1D byte).
    Element,
    /// GS1 Digital Link URI (canonical: lot and serial in the path).
    Dl,
    /// Human-readable interpretation; '(' and ')' in values as \( and \).
    Hri,
    /// One JSON object per unit with the fields and all three forms.
    Json,
}

#[derive(Debug, clap::Args)]
pub struct RenderArgs {
    /// GTIN-8, -12, -13 or -14 (shorter ones are padded with zeros).
    #[arg(long)]
    gtin: String,
    /// Lot, AI (10): up to 20 characters of GS1 CSET 82.
    #[arg(long)]
    lot: Option<String>,
    /// Expiry, AI (17): YYMMDD; DD 00 means the end of the month.
    #[arg(long)]
    expiry: Option<String>,
    /// Codes to render (ignored with --serials).
    #[arg(long, default_value_t = 10)]
    count: u64,
    /// Serial length for generated serials (1..=20).
    #[arg(long, default_value_t = DEFAULT_LEN)]
    serial_length: usize,
    /// Characters of generated serials (from GS1 CSET 82, no repeats).
    #[arg(long, default_value = DEFAULT_ALPHABET)]
    serial_alphabet: String,
    /// Key for the serial generator; the same seed gives the same serials.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// First generator index.
    #[arg(long, default_value_t = 0)]
    start: u64,
    /// Read serials from this file instead, one per line ("-" = stdin).
    #[arg(long, value_name = "FILE")]
    serials: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "element")]
    format: RenderFormat,
    /// Digital Link resolver host[:port].
    #[arg(long, default_value = "id.example.com")]
    resolver: String,
    /// Write GS as the raw 0x1D byte in element strings (what a printer gets).
    #[arg(long)]
    raw_gs: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ParseAs {
    /// By the text: "http(s)://" is a Digital Link, "(" human-readable
    /// text, anything else an element string (after any ]xx identifier).
    Auto,
    Element,
    Dl,
    Hri,
}

#[derive(Debug, clap::Args)]
pub struct ParseArgs {
    /// Which template to read the lines as.
    #[arg(long = "as", value_enum, default_value = "auto")]
    as_: ParseAs,
}

pub fn run(cmd: CodeCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        CodeCommand::Render(args) => render(&args),
        CodeCommand::Parse(args) => parse(&args),
    }
}

fn render(args: &RenderArgs) -> anyhow::Result<ExitCode> {
    if !matches!(args.gtin.len(), 8 | 12 | 13 | 14) {
        bail!(
            "--gtin {:?}: expected a GTIN-8, -12, -13 or -14 ({} digits given)",
            args.gtin,
            args.gtin.len()
        );
    }
    let gtin = Gtin::parse(&format!("{:0>14}", args.gtin))
        .with_context(|| format!("--gtin {:?}", args.gtin))?;
    let lot = args
        .lot
        .as_deref()
        .map(Lot::new)
        .transpose()
        .context("--lot")?;
    let expiry = args
        .expiry
        .as_deref()
        .map(Expiry::parse)
        .transpose()
        .context("--expiry")?;
    let dl = Template::DigitalLink {
        resolver: args.resolver.clone(),
    };
    dl.validate().context("--resolver")?;

    let serials: Box<dyn Iterator<Item = anyhow::Result<Serial>>> = match &args.serials {
        Some(path) => {
            let reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
                Box::new(std::io::stdin().lock())
            } else {
                Box::new(std::io::BufReader::new(
                    std::fs::File::open(path)
                        .with_context(|| format!("--serials {}", path.display()))?,
                ))
            };
            Box::new(reader.lines().enumerate().map(|(i, line)| {
                let line = line.context("reading serials")?;
                let line = line.strip_suffix('\r').unwrap_or(&line);
                Serial::new(line).with_context(|| format!("serial on line {}", i + 1))
            }))
        }
        None => {
            let key = *blake3::hash(&args.seed.to_le_bytes()).as_bytes();
            let generator = SerialGenerator::new(key, &args.serial_alphabet, args.serial_length)
                .context("--serial-alphabet / --serial-length")?;
            let (start, count) = (u128::from(args.start), u128::from(args.count));
            Box::new((start..start + count).map(move |i| {
                generator
                    .serial_at(i)
                    .with_context(|| format!("serial index {i}"))
            }))
        }
    };

    let mut out = BufWriter::new(std::io::stdout().lock());
    for serial in serials {
        let data = CodeData {
            gtin,
            expiry,
            lot: lot.clone(),
            serial: serial?,
        };
        let element = code::render(&Template::Gs1DataMatrix, &data)?;
        let line = match args.format {
            RenderFormat::Element if args.raw_gs => element,
            RenderFormat::Element => element.replace(code::GS, "<GS>"),
            RenderFormat::Dl => code::render(&dl, &data)?,
            RenderFormat::Hri => code::render_hri(&data),
            RenderFormat::Json => {
                let mut v = fields(&data);
                v["element"] = json!(element);
                v["dl"] = json!(code::render(&dl, &data)?);
                v["hri"] = json!(code::render_hri(&data));
                v.to_string()
            }
        };
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn fields(data: &CodeData) -> Value {
    json!({
        "gtin": data.gtin.to_string(),
        "lot": data.lot.as_ref().map(|l| l.as_str()),
        "expiry": data.expiry.map(|e| e.to_string()),
        "serial": data.serial.as_str(),
    })
}

/// The template `--as auto` reads `text` with.
fn detect(text: &str) -> Template {
    // A symbology identifier is three characters starting with ']'.
    let body = match text.strip_prefix(']') {
        Some(_) => text.char_indices().nth(3).map_or("", |(i, _)| &text[i..]),
        None => text,
    };
    let lower = body.get(..8).unwrap_or(body).to_ascii_lowercase();
    if lower.starts_with("https://") || lower.starts_with("http://") {
        Template::DigitalLink {
            resolver: "any".into(),
        }
    } else if body.starts_with('(') {
        Template::PlainText
    } else {
        Template::Gs1DataMatrix
    }
}

fn parse(args: &ParseArgs) -> anyhow::Result<ExitCode> {
    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut failed = 0u64;
    for line in std::io::stdin().lock().split(b'\n') {
        let line = line.context("reading stdin")?;
        let line = line.strip_suffix(b"\r").unwrap_or(&line);
        let Ok(text) = std::str::from_utf8(line) else {
            failed += 1;
            let v = json!({
                "input": String::from_utf8_lossy(line),
                "ok": false,
                "error": "not UTF-8 text",
            });
            writeln!(out, "{v}")?;
            continue;
        };
        let template = match args.as_ {
            ParseAs::Auto => detect(text),
            ParseAs::Element => Template::Gs1DataMatrix,
            ParseAs::Dl => Template::DigitalLink {
                resolver: "any".into(),
            },
            ParseAs::Hri => Template::PlainText,
        };
        // parse() decides as the line does; parse_with_form() adds the form.
        let v = match code::parse(&template, text)
            .and_then(|_| code::parse_with_form(&template, text))
        {
            Ok(Parsed { data, form }) => {
                let mut v = fields(&data);
                v["input"] = json!(text);
                v["ok"] = json!(true);
                v["form"] = serde_json::to_value(form)?;
                v
            }
            Err(e) => {
                failed += 1;
                json!({"input": text, "ok": false, "error": e.to_string()})
            }
        };
        writeln!(out, "{v}")?;
    }
    out.flush()?;
    if failed > 0 {
        eprintln!("{failed} line(s) did not parse");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detect_picks_the_template_by_the_text() {
        assert!(matches!(
            detect("]Q1HTTPS://x/01/1"),
            Template::DigitalLink { .. }
        ));
        assert!(matches!(detect("http://x"), Template::DigitalLink { .. }));
        assert_eq!(detect("(01)1"), Template::PlainText);
        assert_eq!(detect("]d20109"), Template::Gs1DataMatrix);
        assert_eq!(detect("]é"), Template::Gs1DataMatrix);
        assert_eq!(detect(""), Template::Gs1DataMatrix);
    }
}
