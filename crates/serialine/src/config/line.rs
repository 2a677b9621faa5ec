//! A `[[line]]` table and its sub-tables: `[line.buffer]`, `[line.job]`,
//! `[line.printer]`, `[line.camera]` and `[line.pipeline]`. Field docs give
//! the TOML key, its default and its valid range (checked in
//! `validate.rs`); the device files these tables name are read in
//! `files.rs`.

use serde::de::Deserializer;
use serde::{Deserialize, Serialize, Serializer};
use serialine_core::{Expiry, Gtin, Job, Lot, Template};
use serialine_devices::camera::CameraProfile;
use serialine_devices::label::LabelTemplate;
use serialine_devices::transport::TransportSettings;
use serialine_line::PipelinePlan;
use serialine_uplink::PrefetchConfig;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// `line[].min_grade`: ISO/IEC 15415 grade, `A`..`F` or 0..4.
pub use serialine_core::Grade;

/// `[[line]]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineConfig {
    /// Line id, `[A-Za-z0-9_-]{1,32}`, unique within the site.
    pub id: String,
    /// File holding the line's block secret (required).
    pub secret_file: PathBuf,
    /// Lowest ISO/IEC 15415 grade a camera read may have for the unit to be
    /// committed: `A`..`F` or 0..4 (A=4 .. F=0). Default `C`.
    #[serde(default)]
    pub min_grade: Grade,
    /// `[line.buffer]`: prefetch marks.
    #[serde(default)]
    pub buffer: BufferConfig,
    /// `[line.job]`: a default job to start with, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobConfig>,
    /// `[line.printer]`: the printer, laser marker or label printer (required).
    pub printer: PrinterConfig,
    /// `[line.camera]`: the verification camera (required).
    pub camera: CameraConfig,
    /// `[line.pipeline]`: in-flight window and timeouts.
    #[serde(default)]
    pub pipeline: PipelineConfig,
    /// `[line.epcis]`: where the line is, for its EPCIS events.
    #[serde(default)]
    pub epcis: EpcisConfig,
    /// `[[line.aggregation]]`: the packaging levels the line closes, from
    /// cases up (none: the line stops at the unit).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aggregation: Vec<AggregationConfig>,
}

/// `[[line.aggregation]]`: one packaging level (cases, then pallets). Its
/// parents are serials of blocks upstream seals for `gtin` (the case's or
/// pallet's own GTIN, AI 01 + 21); each gets a label from `label_printer`,
/// read back by `scanner`, before it is committed with its children.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregationConfig {
    /// What its parents are called in logs and alarms, e.g. `"case"`,
    /// `"pallet"` (`[A-Za-z0-9_-]{1,32}`).
    pub level: String,
    /// The parents' GTIN (not the job's product, nor another level's).
    pub gtin: Gtin,
    /// Children in a full parent, 1..=1000: units per case, cases per pallet.
    pub per_parent: u32,
    /// `"scan"` (default): an aggregation camera reads all codes of an
    /// open case at once (`camera`); `"count"`: a case is the next
    /// `per_parent` children committed below, in order.
    #[serde(default)]
    pub mode: AggregationModeConfig,
    /// `host:port` of the level's ZPL label printer (raw TCP, usually 9100).
    pub label_printer: String,
    /// The label layout (`LabelTemplate` keys inline, or a TOML file's path);
    /// the parent code is a GS1 element string: `gs1 = true`.
    pub label: LabelSource,
    /// The scanner that reads each label back: `[line.camera]`'s keys.
    pub scanner: CameraConfig,
    /// scan: the aggregation camera, `[line.camera]`'s keys; one result per
    /// case, `{content}` the codes separated by TAB, `NOREAD` for one not
    /// read (e.g. `template = "{trigger};{content}"`, `max_line = 65536`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub camera: Option<CameraConfig>,
    /// Longest from a label's code to its scan, printing included, in
    /// milliseconds, 1..=600000. Default 10000.
    #[serde(default = "default_label_deadline_ms")]
    pub label_deadline_ms: u64,
    /// scan: once the level below is done, how long the last (partial)
    /// case's read may take to come, in milliseconds, 0..=600000.
    /// Default 5000.
    #[serde(default = "default_close_wait_ms")]
    pub close_wait_ms: u64,
}

fn default_label_deadline_ms() -> u64 {
    10_000
}
fn default_close_wait_ms() -> u64 {
    5_000
}

/// `line[].aggregation[].mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AggregationModeConfig {
    #[default]
    Scan,
    Count,
}

impl AggregationConfig {
    /// The level as the line runs it; `label_wait`: how long a parent may
    /// wait for a label serial (the line's starve timeout).
    pub fn plan(&self, label_wait: Duration) -> serialine_line::aggregation::LevelPlan {
        use serialine_line::aggregation::{AggregationMode, LevelPlan};
        LevelPlan {
            name: self.level.clone(),
            gtin: self.gtin,
            per_parent: self.per_parent,
            mode: match self.mode {
                AggregationModeConfig::Scan => AggregationMode::Scan,
                AggregationModeConfig::Count => AggregationMode::Count,
            },
            label_deadline: Duration::from_millis(self.label_deadline_ms),
            close_wait: Duration::from_millis(self.close_wait_ms),
            label_wait,
        }
    }
}

/// `[line.epcis]`: the line's place in EPCIS events (`serialine export
/// --format epcis`; the command's flags override them). GS1 Digital Link
/// URIs of SGLNs: `https://id.gs1.org/414/{GLN}[/254/{extension}]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EpcisConfig {
    /// `readPoint`: the line itself (an SGLN with the line's extension).
    pub read_point: Option<String>,
    /// `bizLocation`: the site (its GLN).
    pub biz_location: Option<String>,
}

/// Why `uri` is not a GS1 Digital Link URI of an SGLN, if it is not.
pub fn sgln_uri_problem(uri: &str) -> Option<String> {
    let Some(rest) = uri.strip_prefix("https://id.gs1.org/414/") else {
        return Some("expected https://id.gs1.org/414/{13-digit GLN}[/254/{extension}]".into());
    };
    let (gln, ext) = match rest.split_once("/254/") {
        Some((g, e)) => (g, Some(e)),
        None => (rest, None),
    };
    let digits = gln.as_bytes();
    if digits.len() != 13 || !digits.iter().all(u8::is_ascii_digit) {
        return Some(format!("GLN {gln:?} is not 13 digits"));
    }
    let body: Vec<u8> = digits[..12].iter().map(|d| d - b'0').collect();
    if serialine_core::gtin::check_digit(&body) != digits[12] - b'0' {
        return Some(format!("GLN {gln} has a wrong check digit"));
    }
    if let Some(e) = ext {
        let ok = (1..=20).contains(&e.len())
            && e.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!%-._*".contains(&b));
        if !ok {
            return Some(format!(
                "extension {e:?} is not 1 to 20 letters, digits or ! % - . _ *"
            ));
        }
    }
    None
}

/// `line[].printer.kind`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrinterKind {
    /// Framed-ASCII printer (inkjet, TIJ) on a serial port or TCP, driven
    /// by a profile file.
    Framed,
    /// Laser marker over Modbus TCP, driven by a register map file.
    Laser,
    /// ZPL II label printer over raw TCP (port 9100).
    Zpl,
}

impl fmt::Display for PrinterKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PrinterKind::Framed => "framed",
            PrinterKind::Laser => "laser",
            PrinterKind::Zpl => "zpl",
        })
    }
}

/// `[line.printer]`: one flat table whose `kind` says which other keys
/// apply (checked by [`Config::validate`](super::Config::validate), so a missing or misplaced key is
/// named exactly):
/// - `framed`: `transport` and `profile`;
/// - `laser`: `addr` and `map`;
/// - `zpl`: `addr` and `label`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrinterConfig {
    /// `"framed"`, `"laser"` or `"zpl"`.
    pub kind: PrinterKind,
    /// framed: how to reach the printer,
    /// `{ kind = "serial", path = "/dev/ttyUSB0", ... }` or `{ kind = "tcp", addr = "host:port", ... }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<TransportSettings>,
    /// framed: the printer's profile (a `FramedProfile` TOML file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<PathBuf>,
    /// laser, zpl: `host:port` of the Modbus TCP server or the label printer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    /// laser: the marker's register map (a `LaserRegisterMap` TOML file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map: Option<PathBuf>,
    /// zpl: the label layout, an inline table (`LabelTemplate` keys) or the
    /// path of a TOML file holding one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<LabelSource>,
}

/// `line[].printer.label`: inline or from a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelSource {
    Inline(LabelTemplate),
    File(PathBuf),
}

impl Serialize for LabelSource {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            LabelSource::Inline(t) => t.serialize(s),
            LabelSource::File(p) => p.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for LabelSource {
    /// A string is a path; a table is a template, deserialized in place so
    /// that its errors keep their key (`label.module_size`).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = LabelSource;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a label template table or the path of a TOML file holding one")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<LabelSource, E> {
                Ok(LabelSource::File(PathBuf::from(v)))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<LabelSource, A::Error> {
                LabelTemplate::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(LabelSource::Inline)
            }
        }
        d.deserialize_any(V)
    }
}

/// `[line.camera]`: the transport plus the result-line format (the
/// `CameraProfile` keys, each with its default).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    /// How to reach the camera (same form as `printer.transport`).
    pub transport: TransportSettings,
    /// Result line layout: `{trigger}`, `{content}` (required), `{grade}`,
    /// `{_}` separated by literal text. Default `"{trigger};{content};{grade}"`.
    #[serde(default = "default_camera_template")]
    pub template: String,
    /// Contents meaning "nothing decoded". Default `["NOREAD", "ERROR"]`.
    #[serde(default = "default_camera_no_read")]
    pub no_read: Vec<String>,
    /// A read later than this after its unit was sent is a no-read, in
    /// milliseconds; overrides `pipeline.read_deadline_ms` when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    /// Longest result line accepted, >= 16. Default 4096.
    #[serde(default = "default_camera_max_line")]
    pub max_line: usize,
}

fn default_camera_template() -> String {
    CameraProfile::default().template
}
fn default_camera_no_read() -> Vec<String> {
    CameraProfile::default().no_read
}
fn default_camera_max_line() -> usize {
    CameraProfile::default().max_line
}

impl CameraConfig {
    /// The driver's profile.
    pub fn profile(&self) -> CameraProfile {
        CameraProfile {
            template: self.template.clone(),
            no_read: self.no_read.clone(),
            deadline_ms: self.deadline_ms,
            max_line: self.max_line,
        }
    }
}

/// `[line.pipeline]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Printed units that may await their camera read at once, 1..=65536. Default 32.
    pub camera_window: usize,
    /// A printed unit not read within this many milliseconds is a no-read,
    /// 1..=3600000. Default 2000.
    pub read_deadline_ms: u64,
    /// Longest a job waits for serials when the buffer is empty before it
    /// stops cleanly, in seconds, 1..=86400. Default 600.
    pub starve_timeout_secs: u64,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            camera_window: 32,
            read_deadline_ms: 2000,
            starve_timeout_secs: 600,
        }
    }
}

/// `[line.buffer]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BufferConfig {
    /// Request more serials when fewer than this many remain, >= 1. Default 20000.
    pub low_water_serials: u64,
    /// ... or when what remains lasts fewer than this many minutes at the
    /// current rate; 0..=10080, 0 turns the time mark off. Default 60.
    pub low_water_minutes: u32,
    /// Never hold more than this many serials; > `low_water_serials`. Default 200000.
    pub high_water_serials: u64,
    /// Give the serials still buffered for a job's product back upstream
    /// at the job's end, and request none until the next job. Default false.
    pub return_at_job_end: bool,
}

impl Default for BufferConfig {
    fn default() -> Self {
        BufferConfig {
            low_water_serials: 20_000,
            low_water_minutes: 60,
            high_water_serials: 200_000,
            return_at_job_end: false,
        }
    }
}

/// `[line.job]`: every key required.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    /// GTIN-8/12/13/14 with a valid check digit.
    pub gtin: Gtin,
    /// Lot, AI (10): 1..20 characters of GS1 CSET 82.
    pub lot: Lot,
    /// Expiry, AI (17): `YYMMDD` (`DD` = 00 means end of month).
    pub expiry: Expiry,
    /// Units to produce, >= 1.
    pub quantity: u64,
    /// How the code is rendered: `{ kind = "gs1-data-matrix" }`,
    /// `{ kind = "digital-link", resolver = "id.example.com" }` or `{ kind = "plain-text" }`.
    #[serde(
        deserialize_with = "strict_template::deserialize",
        serialize_with = "strict_template::serialize"
    )]
    pub template: Template,
}

impl JobConfig {
    /// The job this section describes.
    pub fn to_job(&self) -> Result<Job, serialine_core::JobError> {
        Job::new(
            self.gtin,
            self.lot.clone(),
            self.expiry,
            self.template.clone(),
            self.quantity,
        )
    }
}

/// `serialine_core::Template` with unknown keys denied: a mirror of its serde
/// shape (kept in step by the exhaustive conversions below).
mod strict_template {
    use super::*;

    // Empty struct variants, not unit variants: serde ignores extra keys
    // next to the tag of a unit variant even with `deny_unknown_fields`.
    #[derive(Serialize, Deserialize)]
    #[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
    enum Strict {
        Gs1DataMatrix {},
        DigitalLink { resolver: String },
        PlainText {},
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Template, D::Error> {
        Ok(match Strict::deserialize(d)? {
            Strict::Gs1DataMatrix {} => Template::Gs1DataMatrix,
            Strict::DigitalLink { resolver } => Template::DigitalLink { resolver },
            Strict::PlainText {} => Template::PlainText,
        })
    }

    pub fn serialize<S: Serializer>(t: &Template, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Template::Gs1DataMatrix => Strict::Gs1DataMatrix {},
            Template::DigitalLink { resolver } => Strict::DigitalLink {
                resolver: resolver.clone(),
            },
            Template::PlainText => Strict::PlainText {},
        }
        .serialize(s)
    }
}

impl BufferConfig {
    /// The uplink's prefetch marks for this buffer.
    pub fn prefetch(&self) -> PrefetchConfig {
        PrefetchConfig {
            low_water_serials: self.low_water_serials,
            low_water_minutes: f64::from(self.low_water_minutes),
            high_water_serials: self.high_water_serials,
            high_water_minutes: 2.0 * f64::from(self.low_water_minutes),
            // "Never hold more than high_water_serials."
            max_buffer_serials: self.high_water_serials,
            ..PrefetchConfig::default()
        }
    }
}

impl PipelineConfig {
    /// The pipeline's settings; the camera's own `deadline_ms`, where set,
    /// overrides the read deadline.
    pub fn plan(&self, line: &LineConfig) -> PipelinePlan {
        PipelinePlan {
            min_grade: line.min_grade,
            camera_window: self.camera_window,
            read_deadline: Duration::from_millis(
                line.camera.deadline_ms.unwrap_or(self.read_deadline_ms),
            ),
            starve_timeout: Duration::from_secs(self.starve_timeout_secs),
            aggregation: line
                .aggregation
                .iter()
                .map(|a| a.plan(Duration::from_secs(self.starve_timeout_secs)))
                .collect(),
        }
    }
}
