//! What the uplink needs to know: broker, identity, line, and the knobs of
//! prefetch, outbox sync and reporting.

use std::path::PathBuf;
use std::time::Duration;

/// TLS client settings (rustls). PEM files, read once at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPaths {
    /// CA certificate(s) the broker's certificate must chain to.
    pub ca: PathBuf,
    /// Client certificate and key, for brokers that require mutual TLS.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

/// Prefetch watermarks. The low-water mark is met only when the buffer holds
/// at least `low_water_serials` AND at least `low_water_minutes` of production
/// at the measured rate; once below it, the uplink requests blocks until the
/// buffer reaches the high-water mark (in serials, and in minutes when a rate
/// is known), so requests come in bursts rather than one per unit.
#[derive(Debug, Clone, PartialEq)]
pub struct PrefetchConfig {
    pub low_water_serials: u64,
    pub low_water_minutes: f64,
    pub high_water_serials: u64,
    pub high_water_minutes: f64,
    /// Hard cap on both marks, whatever the rate.
    pub max_buffer_serials: u64,
    /// A request not answered within this is abandoned and sent again.
    pub request_timeout: Duration,
    /// How often the buffer depth is re-checked (the store has no change
    /// notification for consumption).
    pub check_interval: Duration,
}

impl Default for PrefetchConfig {
    fn default() -> Self {
        PrefetchConfig {
            low_water_serials: 5_000,
            low_water_minutes: 30.0,
            high_water_serials: 20_000,
            high_water_minutes: 120.0,
            max_buffer_serials: 1_000_000,
            request_timeout: Duration::from_secs(10),
            check_interval: Duration::from_millis(250),
        }
    }
}

/// Outbox sync knobs.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxConfig {
    /// Most events per published batch.
    pub max_batch: usize,
    /// Longest an event waits for a batch to fill before it is published.
    pub linger: Duration,
    /// Batches published and not yet acknowledged, at most.
    pub window: usize,
    /// Unacknowledged batches are published again after this.
    pub ack_timeout: Duration,
    /// How often the outbox is looked at while there is room in the window.
    pub poll_interval: Duration,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            max_batch: 1_000,
            linger: Duration::from_millis(200),
            window: 4,
            ack_timeout: Duration::from_secs(10),
            poll_interval: Duration::from_millis(20),
        }
    }
}

/// Shared-secret authentication of commands (see the README). Freshness
/// (`command_max_age`, `command_max_skew`) applies to every command, signed
/// or not.
#[derive(Clone, PartialEq, Eq)]
pub struct CommandAuth {
    pub key: [u8; 32],
}

impl std::fmt::Debug for CommandAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandAuth")
            .field("key", &"<redacted>")
            .finish()
    }
}

/// Shared-secret authentication of `events/ack` (see the README): the key
/// upstream signs its acknowledgments with.
#[derive(Clone, PartialEq, Eq)]
pub struct AckAuth {
    pub key: [u8; 32],
}

impl std::fmt::Debug for AckAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AckAuth")
            .field("key", &"<redacted>")
            .finish()
    }
}

#[derive(Clone)]
pub struct UplinkConfig {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub keep_alive: Duration,
    /// With `false` the broker keeps the session (subscriptions and QoS 1
    /// messages) across reconnects; correctness does not depend on it.
    pub clean_session: bool,
    pub username: Option<String>,
    pub password: Option<String>,
    pub tls: Option<TlsPaths>,
    pub site: String,
    /// Must equal the store's line id: blocks are sealed for it.
    pub line: String,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    pub prefetch: PrefetchConfig,
    pub outbox: OutboxConfig,
    /// `metrics` is published this often (and the retained `status` refreshed).
    pub metrics_interval: Duration,
    /// How long the pipeline has to answer a command.
    pub command_timeout: Duration,
    pub command_auth: Option<CommandAuth>,
    /// Largest MQTT packet sent or accepted.
    pub max_packet_size: usize,
    /// A command whose `issued_at` is older than this is refused.
    pub command_max_age: Duration,
    /// A command whose `issued_at` is further than this ahead of the line's
    /// clock is refused.
    pub command_max_skew: Duration,
    /// With a key, `events/ack` must carry a valid `mac`; without, acks are
    /// taken unsigned (the caller decides whether that is allowed).
    pub ack_auth: Option<AckAuth>,
    /// The product to prefetch for before any job says otherwise (the
    /// line's default job); `None` asks for blocks of no product in
    /// particular. See [`crate::UplinkHandle::set_product`].
    pub product: Option<serialine_core::Gtin>,
}

impl std::fmt::Debug for UplinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UplinkConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("client_id", &self.client_id)
            .field("keep_alive", &self.keep_alive)
            .field("clean_session", &self.clean_session)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .field("site", &self.site)
            .field("line", &self.line)
            .field("prefetch", &self.prefetch)
            .field("outbox", &self.outbox)
            .field("metrics_interval", &self.metrics_interval)
            .field("command_auth", &self.command_auth)
            .field("command_max_age", &self.command_max_age)
            .field("command_max_skew", &self.command_max_skew)
            .field("ack_auth", &self.ack_auth)
            .finish_non_exhaustive()
    }
}

impl UplinkConfig {
    /// Defaults for everything but where to connect and which line this is.
    pub fn new(
        host: impl Into<String>,
        port: u16,
        site: impl Into<String>,
        line: impl Into<String>,
    ) -> Self {
        let site = site.into();
        let line = line.into();
        UplinkConfig {
            host: host.into(),
            port,
            client_id: format!("serialine-{site}-{line}"),
            keep_alive: Duration::from_secs(15),
            clean_session: true,
            username: None,
            password: None,
            tls: None,
            site,
            line,
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
            prefetch: PrefetchConfig::default(),
            outbox: OutboxConfig::default(),
            metrics_interval: Duration::from_secs(10),
            command_timeout: Duration::from_secs(10),
            command_auth: None,
            max_packet_size: 4 * 1024 * 1024,
            command_max_age: Duration::from_secs(30),
            command_max_skew: Duration::from_secs(5),
            ack_auth: None,
            product: None,
        }
    }

    /// `serialine/{site}/{line}/`
    pub fn prefix(&self) -> String {
        format!("serialine/{}/{}/", self.site, self.line)
    }

    pub fn topic(&self, suffix: &str) -> String {
        format!("{}{}", self.prefix(), suffix)
    }
}
