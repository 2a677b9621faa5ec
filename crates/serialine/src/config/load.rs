//! Loading: the TOML file, then `SERIALINE_` environment overrides merged
//! over it (figment), deserialized section by section so that problems in
//! several sections are reported together. [`Origin`] remembers where each
//! value came from (the file, or the environment variable that set it) so
//! that every message names it, and resolves relative paths against the
//! config file's directory. Keys that were removed from the schema are
//! named as such ([`REMOVED_KEYS`]) instead of as unknown.

use super::{Config, ConfigError, Issue, LabelSource, LineConfig};
use super::{
    DaemonConfig, MetricsConfig, MqttConfig, OpcuaSection, RetentionConfig, SiteConfig, StoreConfig,
};
use figment::error::Kind;
use figment::providers::{Env, Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Component, Path, PathBuf};

/// Prefix of environment variables that override config keys.
pub const ENV_PREFIX: &str = "SERIALINE_";
/// Separator between nested keys in an override's name (`SERIALINE_MQTT__PORT`).
pub const ENV_SEPARATOR: &str = "__";
/// Environment variables with [`ENV_PREFIX`] that are not config keys.
const ENV_IGNORED: &[&str] = &["config"];

/// Top-level tables, in the order they are documented.
const SECTIONS: &[&str] = &[
    "daemon",
    "site",
    "store",
    "retention",
    "mqtt",
    "line",
    "metrics",
    "opcua",
];

/// A key of a top-level table that the schema no longer has. A plant's
/// existing file may still set it: loading it fails (as any unknown key
/// does, so that nobody believes it still does something), but the message
/// says the key was removed and why, instead of suggesting a misspelling.
pub(super) struct RemovedKey {
    /// The table, e.g. `store`.
    pub section: &'static str,
    /// The key within it, e.g. `max_batch_delay_ms`.
    pub key: &'static str,
    /// Why it went, completing "removed because …".
    pub why: &'static str,
}

/// Keys removed from the schema (issue 17: every key either works or goes).
pub(super) const REMOVED_KEYS: &[RemovedKey] = &[RemovedKey {
    section: "store",
    key: "max_batch_delay_ms",
    why: "it was parsed but never used (the store flushes a group commit as soon as its \
          committer is free, whatever this key said, as its default 0 described)",
}];

fn removed(section: &str, key: &str) -> Option<&'static RemovedKey> {
    REMOVED_KEYS
        .iter()
        .find(|r| r.section == section && r.key == key)
}

/// Where a loaded config's values came from.
#[derive(Debug, Clone, Default)]
pub(super) struct Origin {
    /// The file as the user named it, or `load_str`'s origin name.
    name: String,
    /// The file's directory (absolute), for relative paths.
    base_dir: Option<PathBuf>,
    /// Keys set by environment overrides (display form) -> variable name.
    pub(super) env_vars: BTreeMap<String, String>,
}

impl Origin {
    pub(super) fn name(&self) -> &str {
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

    pub(super) fn issue(&self, key: &str, message: impl Into<String>) -> Issue {
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

    fn resolve_paths(&mut self) {
        let origin = &self.origin;
        origin.resolve("daemon.state_dir", &mut self.daemon.state_dir);
        if let Some(p) = &mut self.store.fence_dir {
            origin.resolve("store.fence_dir", p);
        }
        if let Some(p) = &mut self.retention.dir {
            origin.resolve("retention.dir", p);
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
        for (key, p) in [
            ("opcua.certificate_file", &mut self.opcua.certificate_file),
            ("opcua.private_key_file", &mut self.opcua.private_key_file),
        ] {
            if let Some(p) = p {
                origin.resolve(key, p);
            }
        }
        for (i, u) in self.opcua.users.iter_mut().enumerate() {
            origin.resolve(
                &format!("opcua.user[{i}].password_file"),
                &mut u.password_file,
            );
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

    // Removed keys, named as such (their generic "unknown key" error is
    // left out in `section`).
    for r in REMOVED_KEYS {
        if let Some(Value::Dict(_, table)) = root.get(r.section) {
            if table.contains_key(r.key) {
                issues.push(origin.issue(
                    &format!("{}.{}", r.section, r.key),
                    format!(
                        "this key was removed from Serialine because {}; remove it",
                        r.why
                    ),
                ));
            }
        }
    }

    let daemon = section::<DaemonConfig>(figment, &root, "daemon", &origin, &mut issues);
    let site = section::<SiteConfig>(figment, &root, "site", &origin, &mut issues);
    let store = section::<StoreConfig>(figment, &root, "store", &origin, &mut issues);
    let mqtt = section::<MqttConfig>(figment, &root, "mqtt", &origin, &mut issues);
    let lines = section::<Vec<LineConfig>>(figment, &root, "line", &origin, &mut issues);
    // Optional: absent means no endpoint; malformed has recorded its issue.
    let metrics = section::<MetricsConfig>(figment, &root, "metrics", &origin, &mut issues);
    let opcua = section::<OpcuaSection>(figment, &root, "opcua", &origin, &mut issues);
    let retention = section::<RetentionConfig>(figment, &root, "retention", &origin, &mut issues);

    let site = match site {
        Some(Some(site)) => Some(site),
        Some(None) => {
            issues.push(origin.issue("site.id", "missing; a [site] table with `id` is required"));
            None
        }
        None => None,
    };

    match (daemon, site, store, mqtt, lines, opcua, retention) {
        (
            Some(daemon),
            Some(site),
            Some(store),
            Some(mqtt),
            Some(lines),
            Some(opcua),
            Some(retention),
        ) if issues.is_empty() => Ok(Config {
            daemon: daemon.unwrap_or_default(),
            site,
            store: store.unwrap_or_default(),
            retention: retention.unwrap_or_default(),
            mqtt: mqtt.unwrap_or_default(),
            lines: lines.unwrap_or_default(),
            metrics: metrics.flatten(),
            opcua: opcua.unwrap_or_default(),
            origin,
        }),
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
                if let Kind::UnknownField(field, _) = &err.kind {
                    // Reported by `extract` as removed, not as unknown.
                    let top_level = err.path.len() == 1
                        || (err.path.len() == 2 && err.path.last() == Some(field));
                    if top_level && removed(key, field).is_some() {
                        continue;
                    }
                }
                issues.push(origin.figment_issue(err));
            }
            None
        }
    }
}
