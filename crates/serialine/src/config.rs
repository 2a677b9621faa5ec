//! The daemon's configuration: one TOML file plus `SERIALINE_` environment
//! overrides, checked before anything starts.
//!
//! # Sources
//!
//! [`Config::load`] reads the TOML file and then merges environment variables
//! named `SERIALINE_<SECTION>__<KEY>` over it (figment's
//! `Env::prefixed("SERIALINE_").split("__")`), so `SERIALINE_MQTT__HOST=broker`
//! overrides `[mqtt] host`. `SERIALINE_CONFIG` is not a key: the CLI uses it to
//! name the file. Tests load without the environment
//! ([`Config::load_with_env`] with `false`, or [`Config::load_str`]).
//!
//! # Strictness
//!
//! Every table denies unknown keys, so a misspelt key is an error, never a
//! silently applied default. Deserialization errors are collected per section
//! (`[daemon]`, `[site]`, `[store]`, `[mqtt]`, `[[line]]`) and reported
//! together; once everything parses, [`Config::validate`] checks ranges and
//! cross-field rules and again reports every problem, not only the first.
//! Each message names where the value came from (the file path, or the
//! environment variable), the dotted key (`line[0].buffer.high_water_serials`)
//! and what was expected.
//!
//! # Relative paths
//!
//! Relative paths written in the file (`daemon.state_dir`, `line[].secret_file`,
//! `line[].printer.profile`, `line[].printer.map`, a `line[].printer.label`
//! path, `mqtt.password_file`, `mqtt.tls.*`) are resolved against the directory that
//! contains the config file, so a config works the same whatever the working
//! directory is. Relative paths given in an environment override are resolved
//! against the working directory, as any other command-line value would be.
//! [`Config::load_str`] has no file, so its relative paths are left as written.
//!
//! # Secrets
//!
//! The config only names secret files; [`Config::read_secret`] reads one,
//! [`Config::check_files`] checks all of them (present, non-empty, not readable
//! by group or others) the way `serialine check-config` does.

use figment::error::Kind;
use figment::providers::{Env, Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::de::{DeserializeOwned, Deserializer};
use serde::{Deserialize, Serialize, Serializer};
use serialine_core::{Expiry, Gtin, Job, Lot, Template};
use serialine_devices::camera::{CameraProfile, CameraProfileError};
use serialine_devices::label::LabelTemplate;
use serialine_devices::laser::LaserRegisterMap;
use serialine_devices::printer::FramedProfile;
use serialine_devices::transport::TransportSettings;
use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

/// Where the daemon looks for its configuration unless told otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/serialine/serialine.toml";
/// Prefix of environment variables that override config keys.
pub const ENV_PREFIX: &str = "SERIALINE_";
/// Separator between nested keys in an override's name (`SERIALINE_MQTT__PORT`).
pub const ENV_SEPARATOR: &str = "__";
/// Environment variables with [`ENV_PREFIX`] that are not config keys.
const ENV_IGNORED: &[&str] = &["config"];

/// Top-level tables, in the order they are documented.
const SECTIONS: &[&str] = &["daemon", "site", "store", "mqtt", "line"];

/// Longest site or line id; ids go into MQTT topics and the ledger's keys.
pub const MAX_ID_LEN: usize = 32;
/// `store.max_batch` bounds.
pub const MAX_BATCH_RANGE: std::ops::RangeInclusive<u32> = 1..=65536;
/// `store.max_batch_delay_ms` upper bound.
pub const MAX_BATCH_DELAY_MS: u64 = 1000;
/// `mqtt.keep_alive_secs` bounds.
pub const KEEP_ALIVE_RANGE: std::ops::RangeInclusive<u16> = 5..=3600;
/// `line[].buffer.low_water_minutes` upper bound (one week).
pub const MAX_LOW_WATER_MINUTES: u32 = 7 * 24 * 60;
/// Longest MQTT client id accepted (brokers differ; MQTT 3.1.1 only promises 23).
pub const MAX_CLIENT_ID_LEN: usize = 256;
/// A line secret shorter than this draws a warning.
pub const MIN_SECRET_LEN: usize = 16;

// ---------------------------------------------------------------------------
// The schema
// ---------------------------------------------------------------------------

/// The whole configuration. Field docs give the TOML key, its default and its
/// valid range; `config/serialine.toml` documents the same for operators.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[daemon]`: process-level settings.
    #[serde(default)]
    pub daemon: DaemonConfig,
    /// `[site]`: which plant this daemon serves (required).
    pub site: SiteConfig,
    /// `[store]`: how the ledger commits transitions.
    #[serde(default)]
    pub store: StoreConfig,
    /// `[mqtt]`: the uplink broker.
    #[serde(default)]
    pub mqtt: MqttConfig,
    /// `[[line]]`: the packaging lines, at least one.
    #[serde(rename = "line", default)]
    pub lines: Vec<LineConfig>,
    /// Where the values came from, for messages and path resolution.
    #[serde(skip)]
    origin: Origin,
}

/// `[daemon]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// Directory for durable state; each line's sled ledger lives in
    /// `<state_dir>/ledger/<line id>`.
    /// Default `/var/lib/serialine` (systemd's `StateDirectory=serialine`).
    pub state_dir: PathBuf,
    /// `plain` (journald-friendly text) or `json` (one object per line). Default `plain`.
    pub log_format: LogFormat,
    /// A tracing filter: a level (`error`, `warn`, `info`, `debug`, `trace`) or
    /// directives such as `info,serialine_store=debug`. Default `info`.
    pub log_level: String,
    /// Ping the systemd watchdog (`WatchdogSec=`) while the pipeline is healthy. Default true.
    pub watchdog: bool,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            state_dir: PathBuf::from("/var/lib/serialine"),
            log_format: LogFormat::Plain,
            log_level: "info".into(),
            watchdog: true,
        }
    }
}

/// `daemon.log_format`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines; no colours unless stderr is a terminal.
    #[default]
    Plain,
    /// One JSON object per event.
    Json,
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Plain => "plain",
            LogFormat::Json => "json",
        })
    }
}

/// `[site]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// Site id, `[A-Za-z0-9_-]{1,32}`; MQTT topics start `serialine/{site}/{line}/`.
    pub id: String,
}

/// `[store]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `group` (many transitions share one flush) or `per-transition` (one
    /// flush each; slower, for diagnosis). Default `group`.
    pub commit: CommitMode,
    /// Most transitions in one group commit, 1..=65536. Default 4096.
    pub max_batch: u32,
    /// How long a batch may wait for more transitions before it is flushed,
    /// in milliseconds, 0..=1000. Default 0: flush as soon as the committer is free.
    pub max_batch_delay_ms: u64,
    /// Directory of the lines' fence files (`<fence_dir>/<line id>.fence`):
    /// per block, how far consumption may have gone, kept outside the ledger
    /// so a restored or rolled-back ledger never reissues a serial. Must not
    /// be inside `<state_dir>/ledger`; best on another volume than the
    /// ledger's backups. Default (empty): `<state_dir>/fence`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fence_dir: Option<PathBuf>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            commit: CommitMode::Group,
            max_batch: 4096,
            max_batch_delay_ms: 0,
            fence_dir: None,
        }
    }
}

/// `store.commit`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CommitMode {
    /// Group commit: one fsync per batch.
    #[default]
    Group,
    /// One fsync per transition.
    PerTransition,
}

impl fmt::Display for CommitMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CommitMode::Group => "group",
            CommitMode::PerTransition => "per-transition",
        })
    }
}

/// `[mqtt]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// Broker host name or address. Default `127.0.0.1`.
    pub host: String,
    /// Broker TCP port, 1..=65535. Default 1883 (use 8883 with TLS).
    pub port: u16,
    /// MQTT client id; `{site}` is replaced by the site id. Default `serialine-{site}`.
    pub client_id: String,
    /// Keep-alive interval in seconds, 5..=3600. Default 30.
    pub keep_alive_secs: u16,
    /// Start a clean session (drop queued QoS 1 messages). Default false.
    pub clean_session: bool,
    /// User name, if the broker wants one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// File holding the password (requires `username`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// `[mqtt.tls]`: connect with TLS when present.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// File holding the command key (64 hex digits). When set, every
    /// `cmd/...` must be signed with it; unsigned, badly signed, stale or
    /// replayed commands are refused with a `command-refused` alarm.
    /// Required unless `allow_unsigned_commands = true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command_key_file: Option<PathBuf>,
    /// How far a command's `issued_at` may be ahead of the line's clock, in
    /// seconds, 1..=3600. Default 5.
    pub command_max_skew_secs: u32,
    /// A command older than this (by its `issued_at`) is refused, in
    /// seconds, 1..=3600. Default 30.
    pub command_max_age_secs: u32,
    /// Run without `command_key_file`: commands are accepted unsigned from
    /// anyone the broker lets publish them (still refused when retained or
    /// stale). Warned about at every start. Default false.
    pub allow_unsigned_commands: bool,
    /// File holding the key upstream signs `events/ack` with (64 hex
    /// digits). Required unless `allow_unsigned_acks = true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ack_key_file: Option<PathBuf>,
    /// Run without `ack_key_file`: anyone who may publish `events/ack` can
    /// make the line drop outbox events as synced. Warned about at every
    /// start. Default false.
    pub allow_unsigned_acks: bool,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            host: "127.0.0.1".into(),
            port: 1883,
            client_id: "serialine-{site}".into(),
            keep_alive_secs: 30,
            clean_session: false,
            username: None,
            password_file: None,
            tls: None,
            command_key_file: None,
            command_max_skew_secs: 5,
            command_max_age_secs: 30,
            allow_unsigned_commands: false,
            ack_key_file: None,
            allow_unsigned_acks: false,
        }
    }
}

/// The 32-byte key signed commands are checked with.
pub type CommandKey = [u8; 32];

impl MqttConfig {
    /// The client id with `{site}` replaced.
    pub fn client_id_for(&self, site: &str) -> String {
        self.client_id.replace("{site}", site)
    }
}

/// `[mqtt.tls]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the CA certificate(s) that sign the broker's certificate (required).
    pub ca_file: PathBuf,
    /// PEM client certificate for mutual TLS (together with `client_key_file`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of the client certificate; a secret (mode 0600).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_key_file: Option<PathBuf>,
}

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
/// apply (checked by [`Config::validate`], so a missing or misplaced key is
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

/// `line[].pipeline.camera_window` bounds.
pub const CAMERA_WINDOW_RANGE: std::ops::RangeInclusive<usize> = 1..=65536;
/// `line[].pipeline.read_deadline_ms` bounds (up to an hour).
pub const READ_DEADLINE_MS_RANGE: std::ops::RangeInclusive<u64> = 1..=3_600_000;
/// `line[].pipeline.starve_timeout_secs` bounds (up to a day).
pub const STARVE_TIMEOUT_SECS_RANGE: std::ops::RangeInclusive<u64> = 1..=86_400;

/// What a line's device files hold, read and checked
/// ([`Config::line_devices`]).
#[derive(Debug, Clone)]
pub enum PrinterDevice {
    Framed {
        transport: TransportSettings,
        profile: FramedProfile,
    },
    Laser {
        addr: String,
        map: LaserRegisterMap,
    },
    Zpl {
        addr: String,
        label: LabelTemplate,
    },
}

/// A printer's GS1 mode (FNC1) that does not fit a job's template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gs1ModeIssue {
    /// The profile does not say (`fnc1` unset) and the job is GS1.
    Unset(String),
    /// The setting makes the wrong kind of symbol for the job.
    Contradiction(String),
}

impl PrinterDevice {
    /// The config key under `printer` naming this device's file.
    pub fn file_key(&self) -> &'static str {
        match self {
            PrinterDevice::Framed { .. } => "profile",
            PrinterDevice::Laser { .. } => "map",
            PrinterDevice::Zpl { .. } => "label",
        }
    }

    /// Whether this printer makes the symbol a job with `template` needs
    /// (`job` names the job in messages): a GS1 element string must start
    /// with FNC1, or the camera reads a plain Data Matrix (`]d1`) and every
    /// unit is rejected; a Digital Link or plain text must not.
    pub fn gs1_mode_issue(&self, template: &Template, job: &str) -> Option<Gs1ModeIssue> {
        use serialine_devices::label::Symbology as LabelSymbology;
        use serialine_devices::printer::Fnc1;
        let gs1_job = matches!(template, Template::Gs1DataMatrix);
        let (setting, fnc1) = match self {
            PrinterDevice::Framed { profile, .. } => ("fnc1", profile.fnc1),
            PrinterDevice::Laser { map, .. } => ("fnc1", map.fnc1),
            // The label's gs1 flag adds FNC1 (ZPL `_1`) to a Data Matrix only.
            PrinterDevice::Zpl { label, .. } => (
                "gs1",
                Some(
                    if label.gs1 && label.symbology == LabelSymbology::DataMatrix {
                        Fnc1::Escape
                    } else {
                        Fnc1::None
                    },
                ),
            ),
        };
        let label = matches!(self, PrinterDevice::Zpl { .. });
        match (gs1_job, fnc1) {
            (true, None) => Some(Gs1ModeIssue::Unset(format!(
                "does not say how the printer is put in GS1 mode ({setting} is not set); \
                 {job} is a GS1 element string, which the printer must start with FNC1, or it \
                 prints a plain Data Matrix (]d1) that the line rejects; expected \
                 fnc1 = \"printer\" (the printer's code object is GS1 DataMatrix), \"escape\" \
                 (with fnc1_escape) or \"none\""
            ))),
            (true, Some(Fnc1::None)) => Some(Gs1ModeIssue::Contradiction(format!(
                "{setting} says the printer prints plain symbols, but {job} is a GS1 element \
                 string: every code would be a plain Data Matrix (]d1), which the line rejects; \
                 expected the printer in GS1 mode ({})",
                if label {
                    "gs1 = true with symbology = \"data_matrix\""
                } else {
                    "fnc1 = \"printer\" or \"escape\""
                }
            ))),
            (false, Some(Fnc1::Escape | Fnc1::Printer)) => {
                Some(Gs1ModeIssue::Contradiction(format!(
                    "{setting} makes every code a GS1 symbol (FNC1 first), but {job} is not a GS1 \
                     element string (a Digital Link or plain text goes in a plain symbol); \
                     expected {}",
                    if label {
                        "gs1 = false"
                    } else {
                        "fnc1 = \"none\""
                    }
                )))
            }
            _ => None,
        }
    }
}

/// A line's devices, ready to spawn.
#[derive(Debug, Clone)]
pub struct LineDevices {
    pub printer: PrinterDevice,
    pub camera_transport: TransportSettings,
    pub camera: CameraProfile,
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
}

impl Default for BufferConfig {
    fn default() -> Self {
        BufferConfig {
            low_water_serials: 20_000,
            low_water_minutes: 60,
            high_water_serials: 200_000,
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

pub use serialine_core::Grade;

// ---------------------------------------------------------------------------
// Errors and warnings
// ---------------------------------------------------------------------------

/// One problem (or warning) with the configuration: where the value came
/// from, which key, and what is wrong or expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// The config file's path, `environment variable SERIALINE_…`, or the
    /// name given to [`Config::load_str`].
    pub origin: String,
    /// Dotted key, `line[0].buffer.high_water_serials`; `None` for problems
    /// with the file as a whole (a TOML syntax error).
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(f, "{}: key {}: {}", self.origin, key, self.message),
            None => write!(f, "{}: {}", self.origin, self.message),
        }
    }
}

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file itself could not be read.
    #[error("{}: cannot read config file: {source}", file.display())]
    Read {
        file: PathBuf,
        #[source]
        source: io::Error,
    },
    /// TOML syntax errors, unknown keys, wrong types, missing keys.
    #[error("{}", Lines(.0))]
    Parse(Vec<Issue>),
    /// Values that parse but are out of range or inconsistent.
    #[error("{}", Lines(.0))]
    Invalid(Vec<Issue>),
    /// Secret or certificate files that are missing, unreadable or empty.
    #[error("{}", Lines(.0))]
    Files(Vec<Issue>),
}

impl ConfigError {
    /// The individual problems, each a complete message (some, like a TOML
    /// syntax error with its excerpt, span several lines).
    pub fn messages(&self) -> Vec<String> {
        match self {
            ConfigError::Read { .. } => vec![self.to_string()],
            ConfigError::Parse(v) | ConfigError::Invalid(v) | ConfigError::Files(v) => {
                v.iter().map(Issue::to_string).collect()
            }
        }
    }

    /// The problems with a key, if this error has them.
    pub fn issues(&self) -> &[Issue] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Parse(v) | ConfigError::Invalid(v) | ConfigError::Files(v) => v,
        }
    }
}

struct Lines<'a>(&'a [Issue]);

impl fmt::Display for Lines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{issue}")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------

/// Secret bytes read from a file. `Debug` never shows them; the bytes are
/// overwritten when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Self {
        Secret(bytes)
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        for b in self.0.iter_mut() {
            // SAFETY: `b` is a valid, aligned, exclusive reference.
            unsafe { std::ptr::write_volatile(b, 0) };
        }
    }
}

// ---------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------

/// Where a loaded config's values came from.
#[derive(Debug, Clone, Default)]
struct Origin {
    /// The file as the user named it, or `load_str`'s origin name.
    name: String,
    /// The file's directory (absolute), for relative paths.
    base_dir: Option<PathBuf>,
    /// Keys set by environment overrides (display form) -> variable name.
    env_vars: BTreeMap<String, String>,
}

impl Origin {
    fn name(&self) -> &str {
        if self.name.is_empty() {
            "configuration"
        } else {
            &self.name
        }
    }

    /// The source to name for `key`: the env var that set it, or the file.
    fn of(&self, key: &str) -> String {
        match self.env_vars.get(key) {
            Some(var) => format!("environment variable {var}"),
            None => self.name().to_string(),
        }
    }

    fn issue(&self, key: &str, message: impl Into<String>) -> Issue {
        Issue {
            origin: self.of(key),
            key: Some(key.to_string()),
            message: message.into(),
        }
    }

    /// Turns a figment error (one of a chain) into an issue.
    fn figment_issue(&self, e: figment::Error) -> Issue {
        let mut path = e.path.clone();
        let message = match &e.kind {
            // figment already put the unknown key at the end of the path,
            // except inside values serde buffers first (internally tagged
            // enums such as a transport table).
            Kind::UnknownField(field, expected) => {
                if path.last() != Some(field) {
                    path.push(field.clone());
                }
                format!(
                    "unknown key `{field}` (misspelt?); expected one of: {}",
                    expected.join(", ")
                )
            }
            Kind::MissingField(field) => {
                path.push(field.to_string());
                "missing; this key is required".to_string()
            }
            Kind::UnknownVariant(found, expected) => format!(
                "invalid value {found:?}; expected one of: {}",
                expected
                    .iter()
                    .map(|v| format!("{v:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            other => other.to_string(),
        };
        if path.is_empty() {
            return Issue {
                origin: self.name().to_string(),
                key: None,
                message,
            };
        }
        let key = display_key(&path);
        let from_env = e
            .metadata
            .as_ref()
            .is_some_and(|m| m.source.is_none() && m.name.contains("environment"));
        let origin = match self.env_vars.get(&key) {
            Some(var) => format!("environment variable {var}"),
            None if from_env => format!("environment variable {}", env_var_name(&path)),
            None => self.name().to_string(),
        };
        Issue {
            origin,
            key: Some(key),
            message,
        }
    }

    fn figment_issues(&self, e: figment::Error) -> Vec<Issue> {
        e.into_iter().map(|e| self.figment_issue(e)).collect()
    }

    /// Resolves a relative path: against the config file's directory if the
    /// file set it, against the working directory if the environment did.
    fn resolve(&self, key: &str, path: &mut PathBuf) {
        if path.as_os_str().is_empty() || path.is_absolute() {
            return;
        }
        let resolved = if self.env_vars.contains_key(key) {
            std::path::absolute(&*path).ok()
        } else {
            self.base_dir.as_ref().map(|base| base.join(&*path))
        };
        if let Some(p) = resolved {
            *path = p
                .components()
                .filter(|c| !matches!(c, Component::CurDir))
                .collect();
        }
    }
}

/// `["line", "0", "buffer"]` -> `line[0].buffer`.
fn display_key<S: AsRef<str>>(segments: &[S]) -> String {
    let mut out = String::new();
    for seg in segments {
        let seg = seg.as_ref();
        if !out.is_empty() && !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
            out.push('[');
            out.push_str(seg);
            out.push(']');
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(seg);
        }
    }
    out
}

/// `["mqtt", "port"]` -> `SERIALINE_MQTT__PORT`.
fn env_var_name<S: AsRef<str>>(segments: &[S]) -> String {
    let parts: Vec<String> = segments
        .iter()
        .map(|s| s.as_ref().to_ascii_uppercase())
        .collect();
    format!("{ENV_PREFIX}{}", parts.join(ENV_SEPARATOR))
}

/// The TOML text of the config, under the name errors should use.
struct TomlText {
    metadata: Metadata,
    text: String,
}

impl Provider for TomlText {
    fn metadata(&self) -> Metadata {
        self.metadata.clone()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Toml::string(&self.text).data()
    }
}

/// What to load.
struct Sources {
    origin_name: String,
    file: Option<PathBuf>,
    text: String,
    base_dir: Option<PathBuf>,
    env: bool,
}

impl Config {
    /// The environment provider: `SERIALINE_SECTION__KEY=value`.
    pub fn env_provider() -> Env {
        Env::prefixed(ENV_PREFIX)
            .split(ENV_SEPARATOR)
            .ignore(ENV_IGNORED)
    }

    /// Loads `path` with environment overrides, resolves relative paths and
    /// validates. Does not read secret files; see [`Config::check_files`].
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::load_with_env(path, true)
    }

    /// As [`Config::load`], with environment overrides only if `env_enabled`.
    pub fn load_with_env(path: &Path, env_enabled: bool) -> Result<Config, ConfigError> {
        let text = fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_path_buf(),
            source,
        })?;
        let base_dir = std::path::absolute(path).ok().and_then(|abs| {
            let dir = abs.parent()?;
            Some(fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf()))
        });
        Self::load_sources(Sources {
            origin_name: path.display().to_string(),
            file: Some(path.to_path_buf()),
            text,
            base_dir,
            env: env_enabled,
        })
    }

    /// Loads TOML text (no environment overrides; relative paths stay as
    /// written). `origin_name` stands for the file in messages.
    pub fn load_str(toml: &str, origin_name: &str) -> Result<Config, ConfigError> {
        Self::load_sources(Sources {
            origin_name: origin_name.to_string(),
            file: None,
            text: toml.to_string(),
            base_dir: None,
            env: false,
        })
    }

    fn load_sources(src: Sources) -> Result<Config, ConfigError> {
        let metadata = match &src.file {
            Some(file) => Metadata::from(src.origin_name.clone(), file.as_path()),
            None => Metadata::named(src.origin_name.clone()),
        };
        let mut figment = Figment::new().merge(TomlText {
            metadata,
            text: src.text,
        });
        let mut env_vars = BTreeMap::new();
        if src.env {
            let env = Self::env_provider();
            for (key, _) in env.iter() {
                let segments: Vec<&str> = key.as_str().split('.').collect();
                env_vars.insert(display_key(&segments), env_var_name(&segments));
            }
            figment = figment.merge(env);
        }
        let origin = Origin {
            name: src.origin_name,
            base_dir: src.base_dir,
            env_vars,
        };
        let mut config = extract(&figment, origin)?;
        config.resolve_paths();
        config.validate()?;
        Ok(config)
    }

    /// Environment variables that overrode keys, in key order.
    pub fn env_overrides(&self) -> Vec<&str> {
        self.origin.env_vars.values().map(String::as_str).collect()
    }

    /// The config file's path (or `load_str`'s origin name).
    pub fn origin_name(&self) -> &str {
        self.origin.name()
    }

    /// Where the sled ledger lives: `<state_dir>/ledger`.
    pub fn ledger_path(&self) -> PathBuf {
        self.daemon.state_dir.join("ledger")
    }

    /// Where line `line_id`'s ledger lives: `<state_dir>/ledger/<line_id>`.
    pub fn line_ledger_path(&self, line_id: &str) -> PathBuf {
        self.ledger_path().join(line_id)
    }

    /// Line `line_id`'s fence file: `<store.fence_dir>/<line_id>.fence`,
    /// by default `<state_dir>/fence/<line_id>.fence`.
    pub fn line_fence_path(&self, line_id: &str) -> PathBuf {
        let dir = match &self.store.fence_dir {
            Some(d) if !d.as_os_str().is_empty() => d.clone(),
            _ => self.daemon.state_dir.join("fence"),
        };
        dir.join(format!("{line_id}.fence"))
    }

    /// The MQTT client id with `{site}` filled in.
    pub fn mqtt_client_id(&self) -> String {
        self.mqtt.client_id_for(&self.site.id)
    }

    /// The client id line `line_id`'s uplink connects with: the configured
    /// id plus `-<line>` (each line has its own connection).
    pub fn mqtt_client_id_for_line(&self, line_id: &str) -> String {
        format!("{}-{line_id}", self.mqtt_client_id())
    }

    /// One-line description for `check-config` and the startup log.
    pub fn summary(&self) -> String {
        let ids: Vec<&str> = self.lines.iter().map(|l| l.id.as_str()).collect();
        format!(
            "site {}, {} line{} ({}), store at {}, mqtt {}:{}{}, commit mode {}",
            self.site.id,
            self.lines.len(),
            if self.lines.len() == 1 { "" } else { "s" },
            ids.join(", "),
            self.ledger_path().display(),
            self.mqtt.host,
            self.mqtt.port,
            if self.mqtt.tls.is_some() {
                " (TLS)"
            } else {
                ""
            },
            self.store.commit,
        )
    }

    fn resolve_paths(&mut self) {
        let origin = &self.origin;
        origin.resolve("daemon.state_dir", &mut self.daemon.state_dir);
        if let Some(p) = &mut self.store.fence_dir {
            origin.resolve("store.fence_dir", p);
        }
        if let Some(p) = &mut self.mqtt.password_file {
            origin.resolve("mqtt.password_file", p);
        }
        if let Some(p) = &mut self.mqtt.command_key_file {
            origin.resolve("mqtt.command_key_file", p);
        }
        if let Some(p) = &mut self.mqtt.ack_key_file {
            origin.resolve("mqtt.ack_key_file", p);
        }
        if let Some(tls) = &mut self.mqtt.tls {
            origin.resolve("mqtt.tls.ca_file", &mut tls.ca_file);
            if let Some(p) = &mut tls.client_cert_file {
                origin.resolve("mqtt.tls.client_cert_file", p);
            }
            if let Some(p) = &mut tls.client_key_file {
                origin.resolve("mqtt.tls.client_key_file", p);
            }
        }
        for (i, line) in self.lines.iter_mut().enumerate() {
            origin.resolve(&format!("line[{i}].secret_file"), &mut line.secret_file);
            let p = &mut line.printer;
            if let Some(path) = &mut p.profile {
                origin.resolve(&format!("line[{i}].printer.profile"), path);
            }
            if let Some(path) = &mut p.map {
                origin.resolve(&format!("line[{i}].printer.map"), path);
            }
            if let Some(LabelSource::File(path)) = &mut p.label {
                origin.resolve(&format!("line[{i}].printer.label"), path);
            }
        }
    }
}

/// Deserializes section by section so that problems in different sections
/// are all reported at once.
fn extract(figment: &Figment, origin: Origin) -> Result<Config, ConfigError> {
    // Syntax errors and the like surface when the sources are merged.
    let root = match figment.find_value("") {
        Ok(Value::Dict(_, dict)) => dict,
        Ok(_) => Dict::new(),
        Err(e) => return Err(ConfigError::Parse(origin.figment_issues(e))),
    };

    let mut issues = Vec::new();
    for key in root.keys() {
        if !SECTIONS.contains(&key.as_str()) {
            issues.push(origin.issue(
                key,
                format!(
                    "unknown section or key `{key}` (misspelt?); expected one of: {}",
                    SECTIONS.join(", ")
                ),
            ));
        }
    }

    let daemon = section::<DaemonConfig>(figment, &root, "daemon", &origin, &mut issues);
    let site = section::<SiteConfig>(figment, &root, "site", &origin, &mut issues);
    let store = section::<StoreConfig>(figment, &root, "store", &origin, &mut issues);
    let mqtt = section::<MqttConfig>(figment, &root, "mqtt", &origin, &mut issues);
    let lines = section::<Vec<LineConfig>>(figment, &root, "line", &origin, &mut issues);

    let site = match site {
        Some(Some(site)) => Some(site),
        Some(None) => {
            issues.push(origin.issue("site.id", "missing; a [site] table with `id` is required"));
            None
        }
        None => None,
    };

    match (daemon, site, store, mqtt, lines) {
        (Some(daemon), Some(site), Some(store), Some(mqtt), Some(lines)) if issues.is_empty() => {
            Ok(Config {
                daemon: daemon.unwrap_or_default(),
                site,
                store: store.unwrap_or_default(),
                mqtt: mqtt.unwrap_or_default(),
                lines: lines.unwrap_or_default(),
                origin,
            })
        }
        _ => Err(ConfigError::Parse(issues)),
    }
}

/// `Some(Some(value))` if the section parsed, `Some(None)` if it is absent,
/// `None` (with issues recorded) if it is malformed.
fn section<T: DeserializeOwned>(
    figment: &Figment,
    root: &Dict,
    key: &str,
    origin: &Origin,
    issues: &mut Vec<Issue>,
) -> Option<Option<T>> {
    if !root.contains_key(key) {
        return Some(None);
    }
    match figment.extract_inner::<T>(key) {
        Ok(v) => Some(Some(v)),
        Err(e) => {
            for mut err in e {
                // `extract_inner` appends the section to the error's path
                // instead of prepending it; put it in front.
                if err.path.last().map(String::as_str) == Some(key) {
                    err.path.pop();
                }
                err.path.insert(0, key.to_string());
                issues.push(origin.figment_issue(err));
            }
            None
        }
    }
}

// ---------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------

/// `[A-Za-z0-9_-]{1,32}`
pub fn is_valid_id(id: &str) -> bool {
    (1..=MAX_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

const ID_EXPECTED: &str = "1 to 32 characters from A-Z, a-z, 0-9, '_' and '-'";

struct Checker<'a> {
    origin: &'a Origin,
    issues: Vec<Issue>,
}

impl Checker<'_> {
    fn fail(&mut self, key: &str, message: impl Into<String>) {
        self.issues.push(self.origin.issue(key, message));
    }

    fn require(&mut self, ok: bool, key: &str, message: impl FnOnce() -> String) {
        if !ok {
            self.fail(key, message());
        }
    }

    fn id(&mut self, key: &str, id: &str) {
        self.require(is_valid_id(id), key, || {
            format!("invalid id {id:?}; expected {ID_EXPECTED}")
        });
    }

    fn path(&mut self, key: &str, path: &Path) {
        self.require(!path.as_os_str().is_empty(), key, || {
            "empty path; expected a file or directory path".into()
        });
    }

    fn host_port(&mut self, key: &str, addr: &str) {
        self.require(is_host_port(addr), key, || {
            format!("invalid address {addr:?}; expected host:port, e.g. \"192.168.10.20:502\"")
        });
    }

    fn transport(&mut self, key: &str, t: &TransportSettings) {
        match t {
            TransportSettings::Serial(s) => {
                self.require(!s.path.trim().is_empty(), &format!("{key}.path"), || {
                    "empty path; expected a serial device such as \"/dev/ttyUSB0\"".into()
                });
                self.require(s.baud >= 1, &format!("{key}.baud"), || {
                    "0 is out of range; expected a baud rate such as 115200".into()
                });
            }
            TransportSettings::Tcp(t) => {
                self.host_port(&format!("{key}.addr"), &t.addr);
                self.require(
                    t.connect_timeout_ms >= 1,
                    &format!("{key}.connect_timeout_ms"),
                    || "0 is out of range; expected at least 1 millisecond".into(),
                );
            }
        }
    }

    /// `[line.printer]`: the keys its kind needs, no others, each valid.
    fn printer(&mut self, i: usize, p: &PrinterConfig) {
        let key = |k: &str| format!("line[{i}].printer.{k}");
        let wanted: &[&str] = match p.kind {
            PrinterKind::Framed => &["transport", "profile"],
            PrinterKind::Laser => &["addr", "map"],
            PrinterKind::Zpl => &["addr", "label"],
        };
        let present = [
            ("transport", p.transport.is_some()),
            ("profile", p.profile.is_some()),
            ("addr", p.addr.is_some()),
            ("map", p.map.is_some()),
            ("label", p.label.is_some()),
        ];
        for (k, is_set) in present {
            let needed = wanted.contains(&k);
            if needed && !is_set {
                self.fail(
                    &key(k),
                    format!("missing; required when printer.kind = \"{}\"", p.kind),
                );
            } else if !needed && is_set {
                self.fail(
                    &key(k),
                    format!(
                        "not used when printer.kind = \"{}\"; expected only {}",
                        p.kind,
                        wanted.join(" and ")
                    ),
                );
            }
        }
        if let Some(t) = &p.transport {
            self.transport(&key("transport"), t);
        }
        if let Some(a) = &p.addr {
            self.host_port(&key("addr"), a);
        }
        if let Some(path) = &p.profile {
            self.path(&key("profile"), path);
        }
        if let Some(path) = &p.map {
            self.path(&key("map"), path);
        }
        match &p.label {
            Some(LabelSource::Inline(t)) => {
                if let Err(e) = t.validate() {
                    self.fail(&key("label"), e.to_string());
                }
            }
            Some(LabelSource::File(path)) => self.path(&key("label"), path),
            None => {}
        }
    }

    /// `[line.camera]`: its transport and result-line format.
    fn camera(&mut self, i: usize, cam: &CameraConfig) {
        let key = |k: &str| format!("line[{i}].camera.{k}");
        self.transport(&key("transport"), &cam.transport);
        if let Err(e) = cam.profile().compile() {
            let k = match e {
                CameraProfileError::EmptyNoRead => "no_read",
                CameraProfileError::TinyLine => "max_line",
                _ => "template",
            };
            self.fail(&key(k), e.to_string());
        }
        if cam.deadline_ms == Some(0) {
            self.fail(
                &key("deadline_ms"),
                "0 is out of range; expected at least 1 millisecond (or leave it out)",
            );
        }
    }
}

/// `host:port` with a non-zero numeric port.
fn is_host_port(addr: &str) -> bool {
    match addr.rsplit_once(':') {
        Some((host, port)) => {
            !host.trim().is_empty()
                && !host.contains(char::is_whitespace)
                && port.parse::<u16>().is_ok_and(|p| p != 0)
        }
        None => false,
    }
}

impl Config {
    /// Checks ranges and cross-field rules; reports every problem found.
    /// (File contents are checked by [`Config::check_files`].)
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut c = Checker {
            origin: &self.origin,
            issues: Vec::new(),
        };

        // [daemon]
        let d = &self.daemon;
        c.path("daemon.state_dir", &d.state_dir);
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&d.log_level) {
            c.fail(
                "daemon.log_level",
                format!(
                    "invalid filter {:?} ({e}); expected a level (error, warn, info, debug, trace) \
                     or tracing directives such as \"info,serialine_store=debug\"",
                    d.log_level
                ),
            );
        }

        // [site]
        c.id("site.id", &self.site.id);

        // [store]
        let s = &self.store;
        c.require(
            MAX_BATCH_RANGE.contains(&s.max_batch),
            "store.max_batch",
            || format!("{} is out of range; expected 1..=65536", s.max_batch),
        );
        c.require(
            s.max_batch_delay_ms <= MAX_BATCH_DELAY_MS,
            "store.max_batch_delay_ms",
            || {
                format!(
                    "{} is out of range; expected 0..={MAX_BATCH_DELAY_MS} milliseconds",
                    s.max_batch_delay_ms
                )
            },
        );

        if let Some(f) = &s.fence_dir {
            c.require(
                !f.starts_with(self.ledger_path()),
                "store.fence_dir",
                || {
                    format!(
                        "{} is inside the ledger directory {}; the fence must be outside it, or a restored ledger brings its fence back with it",
                        f.display(),
                        self.ledger_path().display()
                    )
                },
            );
        }

        // [mqtt]
        let m = &self.mqtt;
        c.require(
            !m.host.trim().is_empty() && !m.host.contains(char::is_whitespace),
            "mqtt.host",
            || {
                format!(
                    "invalid host {:?}; expected a host name or IP address",
                    m.host
                )
            },
        );
        c.require(m.port != 0, "mqtt.port", || {
            "0 is out of range; expected 1..=65535".into()
        });
        let client_id = m.client_id_for(&self.site.id);
        c.require(
            !client_id.is_empty() && client_id.len() <= MAX_CLIENT_ID_LEN,
            "mqtt.client_id",
            || {
                format!(
                    "client id {client_id:?} has {} bytes; expected 1..={MAX_CLIENT_ID_LEN}",
                    client_id.len()
                )
            },
        );
        // What each line really connects with: the id plus "-<line>".
        if !client_id.is_empty() && client_id.len() <= MAX_CLIENT_ID_LEN {
            for line in &self.lines {
                let used = self.mqtt_client_id_for_line(&line.id);
                c.require(used.len() <= MAX_CLIENT_ID_LEN, "mqtt.client_id", || {
                    format!(
                        "line {:?} connects as {used:?} (the client id plus \"-{}\"), {} bytes; expected at most {MAX_CLIENT_ID_LEN}: shorten mqtt.client_id or the line id",
                        line.id,
                        line.id,
                        used.len()
                    )
                });
            }
        }
        c.require(
            KEEP_ALIVE_RANGE.contains(&m.keep_alive_secs),
            "mqtt.keep_alive_secs",
            || {
                format!(
                    "{} is out of range; expected 5..=3600 seconds",
                    m.keep_alive_secs
                )
            },
        );
        if let Some(user) = &m.username {
            c.require(!user.is_empty(), "mqtt.username", || {
                "empty; remove the key or give a user name".into()
            });
        }
        if let Some(p) = &m.command_key_file {
            c.path("mqtt.command_key_file", p);
        }
        if let Some(p) = &m.ack_key_file {
            c.path("mqtt.ack_key_file", p);
        }
        c.require(
            (1..=3600).contains(&m.command_max_age_secs),
            "mqtt.command_max_age_secs",
            || {
                format!(
                    "{} is out of range; expected 1..=3600 seconds",
                    m.command_max_age_secs
                )
            },
        );
        c.require(
            (1..=3600).contains(&m.command_max_skew_secs),
            "mqtt.command_max_skew_secs",
            || {
                format!(
                    "{} is out of range; expected 1..=3600 seconds",
                    m.command_max_skew_secs
                )
            },
        );
        if let Some(p) = &m.password_file {
            c.path("mqtt.password_file", p);
            c.require(m.username.is_some(), "mqtt.password_file", || {
                "a password needs a user name; expected mqtt.username to be set too".into()
            });
        }
        if let Some(tls) = &m.tls {
            c.path("mqtt.tls.ca_file", &tls.ca_file);
            match (&tls.client_cert_file, &tls.client_key_file) {
                (Some(cert), Some(key)) => {
                    c.path("mqtt.tls.client_cert_file", cert);
                    c.path("mqtt.tls.client_key_file", key);
                }
                (Some(_), None) => c.fail(
                    "mqtt.tls.client_key_file",
                    "missing; client_cert_file and client_key_file go together",
                ),
                (None, Some(_)) => c.fail(
                    "mqtt.tls.client_cert_file",
                    "missing; client_cert_file and client_key_file go together",
                ),
                (None, None) => {}
            }
        }

        // [[line]]
        if self.lines.is_empty() {
            c.fail(
                "line",
                "no lines configured; expected at least one [[line]] table",
            );
        }
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, line) in self.lines.iter().enumerate() {
            let key = |k: &str| format!("line[{i}].{k}");
            c.id(&key("id"), &line.id);
            if let Some(first) = seen.insert(&line.id, i) {
                c.fail(
                    &key("id"),
                    format!(
                        "duplicate line id {:?} (also line[{first}].id); expected ids unique within the site",
                        line.id
                    ),
                );
                seen.insert(&line.id, first);
            }
            c.path(&key("secret_file"), &line.secret_file);

            let b = &line.buffer;
            c.require(
                b.low_water_serials >= 1,
                &key("buffer.low_water_serials"),
                || "0 is out of range; expected at least 1".into(),
            );
            c.require(
                b.low_water_minutes <= MAX_LOW_WATER_MINUTES,
                &key("buffer.low_water_minutes"),
                || {
                    format!(
                        "{} is out of range; expected 0..={MAX_LOW_WATER_MINUTES} minutes",
                        b.low_water_minutes
                    )
                },
            );
            c.require(
                b.high_water_serials > b.low_water_serials,
                &key("buffer.high_water_serials"),
                || {
                    format!(
                        "{} is not above line[{i}].buffer.low_water_serials ({}); expected high_water_serials > low_water_serials",
                        b.high_water_serials, b.low_water_serials
                    )
                },
            );

            c.printer(i, &line.printer);
            c.camera(i, &line.camera);
            let pl = &line.pipeline;
            c.require(
                CAMERA_WINDOW_RANGE.contains(&pl.camera_window),
                &key("pipeline.camera_window"),
                || format!("{} is out of range; expected 1..=65536", pl.camera_window),
            );
            c.require(
                READ_DEADLINE_MS_RANGE.contains(&pl.read_deadline_ms),
                &key("pipeline.read_deadline_ms"),
                || {
                    format!(
                        "{} is out of range; expected 1..=3600000 milliseconds",
                        pl.read_deadline_ms
                    )
                },
            );
            c.require(
                STARVE_TIMEOUT_SECS_RANGE.contains(&pl.starve_timeout_secs),
                &key("pipeline.starve_timeout_secs"),
                || {
                    format!(
                        "{} is out of range; expected 1..=86400 seconds",
                        pl.starve_timeout_secs
                    )
                },
            );

            if let Some(job) = &line.job {
                c.require(job.quantity >= 1, &key("job.quantity"), || {
                    "0 is out of range; expected at least 1".into()
                });
                if let Template::DigitalLink { resolver } = &job.template {
                    c.require(
                        !resolver.trim().is_empty() && !resolver.contains(char::is_whitespace),
                        &key("job.template.resolver"),
                        || {
                            format!(
                                "invalid resolver {resolver:?}; expected a host such as \"id.example.com\""
                            )
                        },
                    );
                }
            }
        }

        if c.issues.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(c.issues))
        }
    }

    /// Reads the secret file `path` that config key `key` names (display
    /// form, e.g. `line[0].secret_file`). One trailing line ending is
    /// dropped. Errors name the file and the key; the returned warnings flag
    /// a file that group or others may access (mode & 0o077 != 0).
    pub fn read_secret(&self, key: &str, path: &Path) -> Result<(Secret, Vec<Issue>), ConfigError> {
        let fail = |message: String| ConfigError::Files(vec![self.origin.issue(key, message)]);
        let shown = path.display();
        let meta = fs::metadata(path).map_err(|e| fail(file_error("secret", path, &e)))?;
        if !meta.is_file() {
            return Err(fail(format!(
                "secret file {shown} is not a regular file; expected a file holding the secret"
            )));
        }
        let mut bytes = fs::read(path).map_err(|e| fail(file_error("secret", path, &e)))?;
        if bytes.ends_with(b"\n") {
            bytes.pop();
            if bytes.ends_with(b"\r") {
                bytes.pop();
            }
        }
        let secret = Secret::new(bytes);
        if secret.is_empty() {
            return Err(fail(format!(
                "secret file {shown} is empty; expected the secret in it"
            )));
        }
        let mut warnings = Vec::new();
        if let Some(w) = self.mode_warning(key, path, &meta) {
            warnings.push(w);
        }
        Ok((secret, warnings))
    }

    /// The block secret of line `index`.
    pub fn line_secret(&self, index: usize) -> Result<(Secret, Vec<Issue>), ConfigError> {
        self.read_secret(
            &format!("line[{index}].secret_file"),
            &self.lines[index].secret_file,
        )
    }

    /// Line `index`'s devices: the printer's profile, register map or label
    /// file read, parsed and checked, and the camera profile. Errors name
    /// the file and the key that names it (`line[0].printer.profile`).
    pub fn line_devices(&self, index: usize) -> Result<LineDevices, ConfigError> {
        let line = &self.lines[index];
        let p = &line.printer;
        let key = |k: &str| format!("line[{index}].printer.{k}");
        let fail = |k: &str, message: String| {
            ConfigError::Files(vec![self.origin.issue(&key(k), message)])
        };
        let missing = |k: &str| {
            fail(
                k,
                format!("missing; required when printer.kind = \"{}\"", p.kind),
            )
        };
        fn parse<T: DeserializeOwned>(what: &str, path: &Path) -> Result<T, String> {
            let text = fs::read_to_string(path).map_err(|e| file_error(what, path, &e))?;
            toml::from_str(&text).map_err(|e| {
                format!(
                    "{what} file {} is not valid: {}",
                    path.display(),
                    e.to_string().trim_end()
                )
            })
        }
        let printer = match p.kind {
            PrinterKind::Framed => {
                let path = p.profile.as_deref().ok_or_else(|| missing("profile"))?;
                let profile: FramedProfile =
                    parse("printer profile", path).map_err(|m| fail("profile", m))?;
                profile
                    .compile()
                    .map_err(|e| fail("profile", format!("{}: {e}", path.display())))?;
                PrinterDevice::Framed {
                    transport: p.transport.clone().ok_or_else(|| missing("transport"))?,
                    profile,
                }
            }
            PrinterKind::Laser => {
                let path = p.map.as_deref().ok_or_else(|| missing("map"))?;
                let map: LaserRegisterMap =
                    parse("laser register map", path).map_err(|m| fail("map", m))?;
                map.validate()
                    .map_err(|e| fail("map", format!("{}: {e}", path.display())))?;
                PrinterDevice::Laser {
                    addr: p.addr.clone().ok_or_else(|| missing("addr"))?,
                    map,
                }
            }
            PrinterKind::Zpl => {
                let label = match p.label.as_ref().ok_or_else(|| missing("label"))? {
                    LabelSource::Inline(t) => t.clone(),
                    LabelSource::File(path) => {
                        let t: LabelTemplate =
                            parse("label template", path).map_err(|m| fail("label", m))?;
                        t.validate()
                            .map_err(|e| fail("label", format!("{}: {e}", path.display())))?;
                        t
                    }
                };
                PrinterDevice::Zpl {
                    addr: p.addr.clone().ok_or_else(|| missing("addr"))?,
                    label,
                }
            }
        };
        Ok(LineDevices {
            printer,
            camera_transport: line.camera.transport.clone(),
            camera: line.camera.profile(),
        })
    }

    /// The command key, if `mqtt.command_key_file` is set: 64 hex digits
    /// (the 32-byte key operators sign commands with).
    pub fn command_key(&self) -> Result<Option<(CommandKey, Vec<Issue>)>, ConfigError> {
        let Some(path) = self.mqtt.command_key_file.as_deref() else {
            return Ok(None);
        };
        let (secret, warnings) = self.read_secret("mqtt.command_key_file", path)?;
        let mut key = [0u8; 32];
        hex::decode_to_slice(secret.expose().trim_ascii(), &mut key).map_err(|_| {
            ConfigError::Files(vec![self.origin.issue(
                "mqtt.command_key_file",
                format!(
                    "{} does not hold a command key; expected 64 hex digits (32 bytes)",
                    path.display()
                ),
            )])
        })?;
        Ok(Some((key, warnings)))
    }

    /// The ack key, if `mqtt.ack_key_file` is set: 64 hex digits (the
    /// 32-byte key upstream signs `events/ack` with).
    pub fn ack_key(&self) -> Result<Option<(CommandKey, Vec<Issue>)>, ConfigError> {
        let Some(path) = self.mqtt.ack_key_file.as_deref() else {
            return Ok(None);
        };
        let (secret, warnings) = self.read_secret("mqtt.ack_key_file", path)?;
        let mut key = [0u8; 32];
        hex::decode_to_slice(secret.expose().trim_ascii(), &mut key).map_err(|_| {
            ConfigError::Files(vec![self.origin.issue(
                "mqtt.ack_key_file",
                format!(
                    "{} does not hold an ack key; expected 64 hex digits (32 bytes)",
                    path.display()
                ),
            )])
        })?;
        Ok(Some((key, warnings)))
    }

    /// Production needs both keys; running without one takes an explicit
    /// `allow_unsigned_*` (errors), which is then warned about at every
    /// check and start (warnings).
    pub fn auth_issues(&self) -> (Vec<Issue>, Vec<Issue>) {
        let m = &self.mqtt;
        let (mut errors, mut warnings) = (Vec::new(), Vec::new());
        match (&m.command_key_file, m.allow_unsigned_commands) {
            (None, false) => errors.push(self.origin.issue(
                "mqtt.command_key_file",
                "not set: commands would be accepted unsigned from anyone the broker lets publish on cmd/#; \
                 expected a key file (64 hex digits, e.g. `openssl rand -hex 32`), or \
                 mqtt.allow_unsigned_commands = true to run without one (not for production)",
            )),
            (None, true) => warnings.push(self.origin.issue(
                "mqtt.allow_unsigned_commands",
                "true and no mqtt.command_key_file: commands are accepted unsigned from anyone the broker lets publish on cmd/# (retained and stale ones are still refused)",
            )),
            (Some(_), _) => {}
        }
        match (&m.ack_key_file, m.allow_unsigned_acks) {
            (None, false) => errors.push(self.origin.issue(
                "mqtt.ack_key_file",
                "not set: anyone the broker lets publish events/ack could make the line drop outbox events as synced; \
                 expected the key upstream signs its acks with (64 hex digits), or \
                 mqtt.allow_unsigned_acks = true to run without one (not for production)",
            )),
            (None, true) => warnings.push(self.origin.issue(
                "mqtt.allow_unsigned_acks",
                "true and no mqtt.ack_key_file: events/ack is taken unsigned, so anyone the broker lets publish it can make the line drop outbox events as synced",
            )),
            (Some(_), _) => {}
        }
        (errors, warnings)
    }

    /// The MQTT password, if `mqtt.password_file` is set.
    pub fn mqtt_password(&self) -> Result<Option<(Secret, Vec<Issue>)>, ConfigError> {
        self.mqtt
            .password_file
            .as_deref()
            .map(|p| self.read_secret("mqtt.password_file", p))
            .transpose()
    }

    /// Checks every file the config names: line secrets, the MQTT password
    /// and TLS key are read (present, non-empty; warning if group/other may
    /// access them), the TLS CA and client certificate must be readable,
    /// parse and be within their validity period, the TLS key must be the
    /// client certificate's ([`serialine_uplink::check_tls_files`]), and
    /// each line's device files (printer profile, laser map, label file) must
    /// read, parse and check ([`Config::line_devices`]).
    /// The command and ack keys must be set (and hold 64 hex digits) unless
    /// their `allow_unsigned_*` allowance is, which is a warning
    /// ([`Config::auth_issues`]).
    /// Returns the warnings, or every problem found.
    pub fn check_files(&self) -> Result<Vec<Issue>, ConfigError> {
        let mut warnings = Vec::new();
        let mut errors = Vec::new();
        let mut secret = |key: String, path: &Path, min_len: Option<usize>| match self
            .read_secret(&key, path)
        {
            Ok((s, w)) => {
                warnings.extend(w);
                if let Some(min) = min_len.filter(|m| s.len() < *m) {
                    warnings.push(self.origin.issue(
                            &key,
                            format!(
                                "secret file {} holds only {} bytes; expected at least {min} random bytes (32 recommended)",
                                path.display(),
                                s.len()
                            ),
                        ));
                }
            }
            Err(e) => errors.extend(e.issues().iter().cloned()),
        };
        for (i, line) in self.lines.iter().enumerate() {
            secret(
                format!("line[{i}].secret_file"),
                &line.secret_file,
                Some(MIN_SECRET_LEN),
            );
        }
        if let Some(p) = &self.mqtt.password_file {
            secret("mqtt.password_file".into(), p, None);
        }
        if let Some(tls) = &self.mqtt.tls {
            if let Some(p) = &tls.client_key_file {
                secret("mqtt.tls.client_key_file".into(), p, None);
            }
            let public = [
                ("mqtt.tls.ca_file", Some(&tls.ca_file)),
                ("mqtt.tls.client_cert_file", tls.client_cert_file.as_ref()),
            ];
            for (key, path) in public {
                if let Some(path) = path {
                    if let Err(e) = fs::File::open(path) {
                        errors.push(self.origin.issue(key, file_error("certificate", path, &e)));
                    }
                }
            }
            // The contents: certificates that parse and are within their
            // validity period, a key file holding the certificate's key.
            // (Files that cannot be read are reported above.)
            let paths = serialine_uplink::TlsPaths {
                ca: tls.ca_file.clone(),
                client_cert: tls.client_cert_file.clone(),
                client_key: tls.client_key_file.clone(),
            };
            for p in serialine_uplink::check_tls_files(&paths, std::time::SystemTime::now()) {
                let key = match p.file {
                    serialine_uplink::TlsFile::Ca => "mqtt.tls.ca_file",
                    serialine_uplink::TlsFile::ClientCert => "mqtt.tls.client_cert_file",
                    serialine_uplink::TlsFile::ClientKey => "mqtt.tls.client_key_file",
                };
                errors.push(self.origin.issue(key, p.message));
            }
        }
        match self.command_key() {
            Ok(Some((_, w))) => warnings.extend(w),
            Ok(None) => {}
            Err(e) => errors.extend(e.issues().iter().cloned()),
        }
        match self.ack_key() {
            Ok(Some((_, w))) => warnings.extend(w),
            Ok(None) => {}
            Err(e) => errors.extend(e.issues().iter().cloned()),
        }
        let (e, w) = self.auth_issues();
        errors.extend(e);
        warnings.extend(w);
        for i in 0..self.lines.len() {
            match self.line_devices(i) {
                Ok(devices) => {
                    let (e, w) = self.fnc1_issues(i, &devices);
                    errors.extend(e);
                    warnings.extend(w);
                }
                Err(e) => errors.extend(e.issues().iter().cloned()),
            }
        }
        if errors.is_empty() {
            Ok(warnings)
        } else {
            Err(ConfigError::Files(errors))
        }
    }

    /// Line `index`'s printer's GS1 mode against its default job's
    /// template ([`PrinterDevice::gs1_mode_issue`]): errors for a setting
    /// that contradicts the job, a warning when the profile does not say.
    /// Jobs started over MQTT are checked when they start.
    fn fnc1_issues(&self, index: usize, devices: &LineDevices) -> (Vec<Issue>, Vec<Issue>) {
        let (mut errors, mut warnings) = (Vec::new(), Vec::new());
        let Some(job) = &self.lines[index].job else {
            return (errors, warnings);
        };
        let issue = devices
            .printer
            .gs1_mode_issue(&job.template, &format!("line[{index}].job"));
        let key = format!("line[{index}].printer.{}", devices.printer.file_key());
        match issue {
            Some(Gs1ModeIssue::Unset(m)) => warnings.push(self.origin.issue(&key, m)),
            Some(Gs1ModeIssue::Contradiction(m)) => errors.push(self.origin.issue(&key, m)),
            None => {}
        }
        (errors, warnings)
    }

    #[cfg(unix)]
    fn mode_warning(&self, key: &str, path: &Path, meta: &fs::Metadata) -> Option<Issue> {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o7777;
        (mode & 0o077 != 0).then(|| {
            self.origin.issue(
                key,
                format!(
                    "secret file {} has mode {mode:04o}, so group or others may access it; \
                     expected 0600 or 0400 owned by the daemon's user (chmod 600 {})",
                    path.display(),
                    path.display()
                ),
            )
        })
    }

    #[cfg(not(unix))]
    fn mode_warning(&self, _: &str, _: &Path, _: &fs::Metadata) -> Option<Issue> {
        None
    }
}

fn file_error(what: &str, path: &Path, e: &io::Error) -> String {
    let shown = path.display();
    match e.kind() {
        io::ErrorKind::NotFound => {
            format!("{what} file {shown} does not exist; expected a readable file")
        }
        io::ErrorKind::PermissionDenied => format!(
            "{what} file {shown} cannot be read: permission denied; expected it readable by the daemon's user"
        ),
        _ => format!("{what} file {shown} cannot be read: {e}"),
    }
}
