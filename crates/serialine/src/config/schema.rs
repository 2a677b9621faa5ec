//! The process-wide tables: `[daemon]`, `[site]`, `[store]`, `[mqtt]` (with
//! `[mqtt.tls]`), `[metrics]`, their defaults and serde shape. Field docs give the TOML
//! key, its default and its valid range (checked in `validate.rs`);
//! `config/serialine.toml` documents the same for operators.
//!
//! Every table denies unknown keys, so a misspelt key is an error rather
//! than a silently applied default.

use super::plan::{SiteAuth, STOP_BOUND};
use serde::{Deserialize, Serialize};
use serialine_store::StoreOptions;
use serialine_uplink::{TlsPaths, UplinkConfig};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

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
    /// Bound of each ledger's page cache, MiB, 4..=4096. Default 32.
    pub cache_mb: u32,
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
            cache_mb: (serialine_store::DEFAULT_CACHE_BYTES >> 20) as u32,
            fence_dir: None,
        }
    }
}

/// `[retention]`: how long the ledger keeps what has ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Days a serial's record stays in the ledger after its last transition,
    /// once its block is used up and every outcome in it is acknowledged
    /// upstream; then the block's records go to an archive file. 0 keeps
    /// everything (the ledger grows without bound). 0..=3650, default 30.
    pub keep_days: u32,
    /// Directory of the archive files (`<dir>/<line id>/`). Default (empty):
    /// `<state_dir>/archive`. Must not be inside `<state_dir>/ledger`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
}

impl RetentionConfig {
    /// The cut-off now: records last moved before it may be archived.
    /// `None` when `keep_days` is 0 (keep everything).
    pub fn cutoff(&self) -> Option<std::time::SystemTime> {
        let days = u64::from(self.keep_days);
        (days > 0).then(|| {
            std::time::SystemTime::now()
                .checked_sub(std::time::Duration::from_secs(days * 86_400))
                .unwrap_or(std::time::UNIX_EPOCH)
        })
    }
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            keep_days: 30,
            dir: None,
        }
    }
}

/// `store.commit`: the ledger's own setting.
pub use serialine_store::CommitMode;

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

    /// The client id line `line`'s uplink connects with: the configured id
    /// plus `-<line>` (each line has its own connection).
    pub fn client_id_for_line(&self, site: &str, line: &str) -> String {
        format!("{}-{line}", self.client_id_for(site))
    }
}

impl MqttConfig {
    /// Line `line`'s uplink on this broker (prefetch and product are the
    /// line's, set by [`Config::line_plan`]).
    pub fn uplink(&self, site: &str, line: &str, auth: &SiteAuth) -> UplinkConfig {
        let mut up = UplinkConfig::new(self.host.clone(), self.port, site, line);
        up.client_id = self.client_id_for_line(site, line);
        up.keep_alive = Duration::from_secs(self.keep_alive_secs.into());
        up.clean_session = self.clean_session;
        up.username = self.username.clone();
        up.password = auth.password.clone();
        up.tls = self.tls.as_ref().map(TlsConfig::paths);
        up.command_auth = auth.command.clone();
        up.ack_auth = auth.ack.clone();
        // A stop or drain answers once the line has drained.
        up.command_timeout = STOP_BOUND + Duration::from_secs(15);
        up.command_max_age = Duration::from_secs(self.command_max_age_secs.into());
        up.command_max_skew = Duration::from_secs(self.command_max_skew_secs.into());
        up
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

impl StoreConfig {
    /// A line's ledger options: its path and fence file, its secret, and
    /// this section's commit mode and batch bound.
    pub fn store_options(
        &self,
        path: PathBuf,
        line: &str,
        secret: &[u8],
        fence: PathBuf,
    ) -> StoreOptions {
        let mut opts = StoreOptions::new(path, line, secret);
        opts.commit = self.commit;
        opts.max_batch = self.max_batch as usize;
        opts.cache_bytes = u64::from(self.cache_mb) << 20;
        // A restored or rolled-back ledger never reissues a serial.
        opts.fence = Some(fence);
        opts
    }
}

impl TlsConfig {
    pub fn paths(&self) -> TlsPaths {
        TlsPaths {
            ca: self.ca_file.clone(),
            client_cert: self.client_cert_file.clone(),
            client_key: self.client_key_file.clone(),
        }
    }
}

/// `[metrics]`: the Prometheus endpoint. Absent (the default): no endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// `metrics.listen`: the address `/metrics` is served on, `IP:PORT`
    /// (e.g. `127.0.0.1:9898`; `0.0.0.0:9898` for a scraper on another
    /// host). Required in `[metrics]`; port 1..=65535.
    pub listen: std::net::SocketAddr,
}

/// `[opcua]`: the OPC UA server (issue 18). Off unless `enabled = true`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpcuaSection {
    /// Serve OPC UA. Default false.
    pub enabled: bool,
    /// `address:port` to listen on. Default `0.0.0.0:4840` (the OPC UA port).
    pub listen: String,
    /// Host name in the endpoint URL (`opc.tcp://<host_name>:<port>/`) and the
    /// server's certificate; clients must reach the server by it. Default
    /// (empty): the listen address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_name: Option<String>,
    /// The server's application certificate (DER) and its private key
    /// (PEM, a secret), both or neither. Default (neither): a self-signed
    /// certificate made on first start in `<state_dir>/opcua/pki/own/cert.der`
    /// (key in `<state_dir>/opcua/pki/private/private.pem`) and kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_key_file: Option<PathBuf>,
    /// Accept any client application certificate. Default false: a client's
    /// certificate must be in `<state_dir>/opcua/pki/trusted/` (a
    /// refused one is stored in `.../rejected/` for the operator to move).
    pub trust_client_certs: bool,
    /// Sessions without a user identity may browse and read. Default true.
    pub anonymous_read: bool,
    /// Sessions without a user identity may also call StartJob / StopJob.
    /// Default false (never for production).
    pub anonymous_methods: bool,
    /// Also offer an unsecured endpoint (security policy None), for
    /// anonymous sessions only (no password ever travels on it); needs
    /// `anonymous_read`. Default false.
    pub insecure_endpoint: bool,
    /// `[[opcua.user]]`: user name / password identities; they may call
    /// methods.
    #[serde(rename = "user", default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<OpcuaUserConfig>,
}

impl Default for OpcuaSection {
    fn default() -> Self {
        OpcuaSection {
            enabled: false,
            listen: "0.0.0.0:4840".into(),
            host_name: None,
            certificate_file: None,
            private_key_file: None,
            trust_client_certs: false,
            anonymous_read: true,
            anonymous_methods: false,
            insecure_endpoint: false,
            users: Vec::new(),
        }
    }
}

/// `[[opcua.user]]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpcuaUserConfig {
    /// User name, 1..=64 characters, unique.
    pub name: String,
    /// File holding the password (a secret, mode 0600); one trailing line
    /// ending is dropped.
    pub password_file: PathBuf,
}

impl OpcuaSection {
    /// Where the server keeps its certificate and the client certificates.
    pub fn pki_dir(state_dir: &std::path::Path) -> PathBuf {
        state_dir.join("opcua").join("pki")
    }
}
