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
//! silently applied default. A key that the schema once had and dropped
//! (`store.max_batch_delay_ms`, parsed but never used) is refused the same
//! way, with a message that says it was removed and why rather than calling
//! it misspelt. Deserialization errors are collected per section
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
//!
//! # Layout
//!
//! One file per job, all methods on the one [`Config`]:
//! - `schema.rs`: the `[daemon]`, `[site]`, `[store]` and `[mqtt]` tables,
//!   their defaults and serde shape;
//! - `line.rs`: a `[[line]]` table and its sub-tables (`buffer`, `job`,
//!   `printer`, `camera`, `pipeline`);
//! - `load.rs`: figment loading, environment overrides, where each value
//!   came from ([`Config::load`]), relative paths, keys that were removed;
//! - `validate.rs`: ranges and cross-field rules ([`Config::validate`]);
//! - `files.rs`: reading what the config names: secrets, keys, TLS and
//!   device files ([`Config::check_files`], [`Config::line_devices`]).

mod files;
mod line;
mod load;
mod opcua;
mod plan;
mod schema;
mod validate;

pub use files::{DeviceSpec, Gs1ModeIssue, MarkerSpec, Secret, MIN_SECRET_LEN};
pub use line::{
    BufferConfig, CameraConfig, Grade, JobConfig, LabelSource, LineConfig, PipelineConfig,
    PrinterConfig, PrinterKind,
};
pub use load::{ENV_PREFIX, ENV_SEPARATOR};
pub use plan::{SiteAuth, STOP_BOUND};
pub use schema::{
    CommandKey, CommitMode, DaemonConfig, LogFormat, MetricsConfig, MqttConfig, OpcuaSection,
    OpcuaUserConfig, RetentionConfig, SiteConfig, StoreConfig, TlsConfig,
};
pub use validate::{
    is_valid_id, CAMERA_WINDOW_RANGE, KEEP_ALIVE_RANGE, MAX_BATCH_RANGE, MAX_CLIENT_ID_LEN,
    MAX_ID_LEN, MAX_LOW_WATER_MINUTES, READ_DEADLINE_MS_RANGE, STARVE_TIMEOUT_SECS_RANGE,
};

use load::Origin;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io;
use std::path::PathBuf;

/// Where the daemon looks for its configuration unless told otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/serialine/serialine.toml";

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
    /// `[retention]`: when ended records leave the ledger for archives.
    #[serde(default)]
    pub retention: RetentionConfig,
    /// `[mqtt]`: the uplink broker.
    #[serde(default)]
    pub mqtt: MqttConfig,
    /// `[[line]]`: the packaging lines, at least one.
    #[serde(rename = "line", default)]
    pub lines: Vec<LineConfig>,
    /// `[metrics]`: the Prometheus endpoint; absent, none is served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsConfig>,
    /// `[opcua]`: the OPC UA server (off by default).
    #[serde(default)]
    pub opcua: OpcuaSection,
    /// Where the values came from, for messages and path resolution.
    #[serde(skip)]
    origin: Origin,
}

impl Config {
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

    /// The service's local control socket (`serialine status` while it
    /// runs): `<state_dir>/control.sock`.
    pub fn control_socket_path(&self) -> PathBuf {
        self.daemon.state_dir.join("control.sock")
    }

    /// Line `line_id`'s job reports: `<state_dir>/reports/<line_id>`.
    pub fn line_reports_dir(&self, line_id: &str) -> PathBuf {
        self.daemon.state_dir.join("reports").join(line_id)
    }

    /// Line `line_id`'s archive directory: `<retention.dir>/<line_id>`, by
    /// default `<state_dir>/archive/<line_id>`.
    pub fn line_archive_dir(&self, line_id: &str) -> PathBuf {
        let dir = match &self.retention.dir {
            Some(d) if !d.as_os_str().is_empty() => d.clone(),
            _ => self.daemon.state_dir.join("archive"),
        };
        dir.join(line_id)
    }

    /// The retention cut-off now: records last moved before it may be
    /// archived. `None` when `retention.keep_days` is 0 (keep everything).
    pub fn retention_cutoff(&self) -> Option<std::time::SystemTime> {
        self.retention.cutoff()
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
        self.mqtt.client_id_for_line(&self.site.id, line_id)
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
}

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
