//! Validation: ranges and cross-field rules on a parsed configuration
//! ([`Config::validate`], run by every load), reporting every problem with
//! its key and origin rather than only the first; and whether the command
//! and ack keys are set or explicitly waived ([`Config::auth_issues`], run by
//! `check-config` and at start, not by every load, so that tools reading a
//! config do not need the keys).

use super::line::AggregationModeConfig;
use super::{CameraConfig, Config, ConfigError, Issue, LabelSource, Origin};
use super::{LineConfig, PrinterConfig, PrinterKind};
use serialine_core::Template;
use serialine_devices::camera::CameraProfileError;
use serialine_devices::transport::TransportSettings;
use std::collections::BTreeMap;
use std::path::Path;

/// Longest site or line id; ids go into MQTT topics and the ledger's keys.
pub const MAX_ID_LEN: usize = 32;
/// `store.cache_mb` bounds: below 4 MiB sled thrashes; above 4 GiB is a
/// typo on a line controller.
const CACHE_MB_RANGE: std::ops::RangeInclusive<u32> = 4..=4096;

/// `store.max_batch` bounds.
pub const MAX_BATCH_RANGE: std::ops::RangeInclusive<u32> = 1..=65536;
/// `mqtt.keep_alive_secs` bounds.
pub const KEEP_ALIVE_RANGE: std::ops::RangeInclusive<u16> = 5..=3600;
/// `line[].buffer.low_water_minutes` upper bound (one week).
pub const MAX_LOW_WATER_MINUTES: u32 = 7 * 24 * 60;
/// Longest MQTT client id accepted (brokers differ; MQTT 3.1.1 only promises 23).
pub const MAX_CLIENT_ID_LEN: usize = 256;
/// `line[].pipeline.camera_window` bounds.
pub const CAMERA_WINDOW_RANGE: std::ops::RangeInclusive<usize> = 1..=65536;
/// `line[].pipeline.read_deadline_ms` bounds (up to an hour).
pub const READ_DEADLINE_MS_RANGE: std::ops::RangeInclusive<u64> = 1..=3_600_000;
/// `line[].pipeline.starve_timeout_secs` bounds (up to a day).
pub const STARVE_TIMEOUT_SECS_RANGE: std::ops::RangeInclusive<u64> = 1..=86_400;

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
        self.camera_at(&format!("line[{i}].camera"), cam);
    }

    /// A camera's keys under `at` (`line[0].camera`, a level's scanner).
    fn camera_at(&mut self, at: &str, cam: &CameraConfig) {
        let key = |k: &str| format!("{at}.{k}");
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

    /// `[daemon]`: the state directory and the log filter.
    fn daemon(&mut self, config: &Config) {
        let d = &config.daemon;
        self.path("daemon.state_dir", &d.state_dir);
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&d.log_level) {
            self.fail(
                "daemon.log_level",
                format!(
                    "invalid filter {:?} ({e}); expected a level (error, warn, info, debug, trace) \
                     or tracing directives such as \"info,serialine_store=debug\"",
                    d.log_level
                ),
            );
        }
    }

    /// `[store]`: the batch bound; the fence outside the ledger.
    fn store(&mut self, config: &Config) {
        let s = &config.store;
        self.require(
            MAX_BATCH_RANGE.contains(&s.max_batch),
            "store.max_batch",
            || format!("{} is out of range; expected 1..=65536", s.max_batch),
        );
        self.require(
            CACHE_MB_RANGE.contains(&s.cache_mb),
            "store.cache_mb",
            || format!("{} is out of range; expected 4..=4096 (MiB)", s.cache_mb),
        );

        if let Some(f) = &s.fence_dir {
            self.require(
                !f.starts_with(config.ledger_path()),
                "store.fence_dir",
                || {
                    format!(
                        "{} is inside the ledger directory {}; the fence must be outside it, or a restored ledger brings its fence back with it",
                        f.display(),
                        config.ledger_path().display()
                    )
                },
            );
        }
    }

    /// `[retention]`: a sane period; archives outside the ledger.
    fn retention(&mut self, config: &Config) {
        let r = &config.retention;
        self.require(r.keep_days <= 3650, "retention.keep_days", || {
            format!(
                "{} is out of range; expected 0..=3650 (days; 0 keeps everything)",
                r.keep_days
            )
        });
        if let Some(d) = &r.dir {
            self.require(
                !d.starts_with(config.ledger_path()),
                "retention.dir",
                || {
                    format!(
                        "{} is inside the ledger directory {}; archives must be outside it",
                        d.display(),
                        config.ledger_path().display()
                    )
                },
            );
        }
    }

    /// `[metrics]`: a fixed port, so the scrape config can name it.
    fn metrics(&mut self, config: &Config) {
        if let Some(m) = &config.metrics {
            self.require(m.listen.port() != 0, "metrics.listen", || {
                format!(
                    "{} has port 0 (a random port no scraper can find); expected a fixed port such as {}:9898",
                    m.listen,
                    m.listen.ip()
                )
            });
        }
    }

    /// `[mqtt]`: the broker address, the client id each line connects
    /// with, the timing bounds, and the keys that go together.
    /// `[opcua]`: checked whether enabled or not, so that switching it on
    /// never reveals an old mistake.
    fn opcua(&mut self, config: &Config) {
        let o = &config.opcua;
        self.require(
            o.listen.parse::<std::net::SocketAddr>().is_ok(),
            "opcua.listen",
            || {
                format!(
                    "invalid address {:?}; expected address:port, e.g. 0.0.0.0:4840",
                    o.listen
                )
            },
        );
        if let Some(h) = &o.host_name {
            self.require(
                !h.trim().is_empty() && !h.contains(char::is_whitespace) && !h.contains('/'),
                "opcua.host_name",
                || format!("invalid host name {h:?}"),
            );
        }
        self.require(
            o.certificate_file.is_some() == o.private_key_file.is_some(),
            "opcua.certificate_file",
            || "certificate_file and private_key_file go together: set both, or neither (a certificate is then made on first start)".into(),
        );
        self.require(
            !o.insecure_endpoint || o.anonymous_read,
            "opcua.insecure_endpoint",
            || "the unsecured endpoint carries anonymous sessions only; it needs opcua.anonymous_read = true".into(),
        );
        let mut seen = std::collections::BTreeSet::new();
        for (i, u) in o.users.iter().enumerate() {
            let key = format!("opcua.user[{i}].name");
            self.require(
                (1..=64).contains(&u.name.chars().count()) && !u.name.chars().any(char::is_control),
                &key,
                || {
                    format!(
                        "invalid user name {:?}; expected 1 to 64 printable characters",
                        u.name
                    )
                },
            );
            if !seen.insert(u.name.as_str()) {
                self.fail(&key, format!("user {:?} is named twice", u.name));
            }
        }
    }

    fn mqtt(&mut self, config: &Config) {
        let m = &config.mqtt;
        self.require(
            !m.host.trim().is_empty() && !m.host.contains(char::is_whitespace),
            "mqtt.host",
            || {
                format!(
                    "invalid host {:?}; expected a host name or IP address",
                    m.host
                )
            },
        );
        self.require(m.port != 0, "mqtt.port", || {
            "0 is out of range; expected 1..=65535".into()
        });
        let client_id = m.client_id_for(&config.site.id);
        self.require(
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
            for line in &config.lines {
                let used = config.mqtt_client_id_for_line(&line.id);
                self.require(used.len() <= MAX_CLIENT_ID_LEN, "mqtt.client_id", || {
                    format!(
                        "line {:?} connects as {used:?} (the client id plus \"-{}\"), {} bytes; expected at most {MAX_CLIENT_ID_LEN}: shorten mqtt.client_id or the line id",
                        line.id,
                        line.id,
                        used.len()
                    )
                });
            }
        }
        self.require(
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
            self.require(!user.is_empty(), "mqtt.username", || {
                "empty; remove the key or give a user name".into()
            });
        }
        if let Some(p) = &m.command_key_file {
            self.path("mqtt.command_key_file", p);
        }
        if let Some(p) = &m.ack_key_file {
            self.path("mqtt.ack_key_file", p);
        }
        self.require(
            (1..=3600).contains(&m.command_max_age_secs),
            "mqtt.command_max_age_secs",
            || {
                format!(
                    "{} is out of range; expected 1..=3600 seconds",
                    m.command_max_age_secs
                )
            },
        );
        self.require(
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
            self.path("mqtt.password_file", p);
            self.require(m.username.is_some(), "mqtt.password_file", || {
                "a password needs a user name; expected mqtt.username to be set too".into()
            });
        }
        if let Some(tls) = &m.tls {
            self.path("mqtt.tls.ca_file", &tls.ca_file);
            match (&tls.client_cert_file, &tls.client_key_file) {
                (Some(cert), Some(key)) => {
                    self.path("mqtt.tls.client_cert_file", cert);
                    self.path("mqtt.tls.client_key_file", key);
                }
                (Some(_), None) => self.fail(
                    "mqtt.tls.client_key_file",
                    "missing; client_cert_file and client_key_file go together",
                ),
                (None, Some(_)) => self.fail(
                    "mqtt.tls.client_cert_file",
                    "missing; client_cert_file and client_key_file go together",
                ),
                (None, None) => {}
            }
        }
    }

    /// `[[line]]`: at least one, ids unique, and each line's tables.
    fn lines(&mut self, config: &Config) {
        if config.lines.is_empty() {
            self.fail(
                "line",
                "no lines configured; expected at least one [[line]] table",
            );
        }
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, line) in config.lines.iter().enumerate() {
            let key = |k: &str| format!("line[{i}].{k}");
            self.id(&key("id"), &line.id);
            if let Some(first) = seen.insert(&line.id, i) {
                self.fail(
                    &key("id"),
                    format!(
                        "duplicate line id {:?} (also line[{first}].id); expected ids unique within the site",
                        line.id
                    ),
                );
                seen.insert(&line.id, first);
            }
            self.line(i, line);
        }
    }

    /// One `[[line]]`: its secret path, buffer marks, devices, pipeline
    /// bounds and default job.
    fn line(&mut self, i: usize, line: &LineConfig) {
        let key = |k: &str| format!("line[{i}].{k}");
        self.path(&key("secret_file"), &line.secret_file);

        let b = &line.buffer;
        self.require(
            b.low_water_serials >= 1,
            &key("buffer.low_water_serials"),
            || "0 is out of range; expected at least 1".into(),
        );
        self.require(
            b.low_water_minutes <= MAX_LOW_WATER_MINUTES,
            &key("buffer.low_water_minutes"),
            || {
                format!(
                    "{} is out of range; expected 0..={MAX_LOW_WATER_MINUTES} minutes",
                    b.low_water_minutes
                )
            },
        );
        self.require(
            b.high_water_serials > b.low_water_serials,
            &key("buffer.high_water_serials"),
            || {
                format!(
                    "{} is not above line[{i}].buffer.low_water_serials ({}); expected high_water_serials > low_water_serials",
                    b.high_water_serials, b.low_water_serials
                )
            },
        );

        for (k, v) in [
            ("epcis.read_point", &line.epcis.read_point),
            ("epcis.biz_location", &line.epcis.biz_location),
        ] {
            if let Some(problem) = v.as_deref().and_then(super::line::sgln_uri_problem) {
                self.require(false, &key(k), || problem.clone());
            }
        }
        self.printer(i, &line.printer);
        self.camera(i, &line.camera);
        let pl = &line.pipeline;
        self.require(
            CAMERA_WINDOW_RANGE.contains(&pl.camera_window),
            &key("pipeline.camera_window"),
            || format!("{} is out of range; expected 1..=65536", pl.camera_window),
        );
        self.require(
            READ_DEADLINE_MS_RANGE.contains(&pl.read_deadline_ms),
            &key("pipeline.read_deadline_ms"),
            || {
                format!(
                    "{} is out of range; expected 1..=3600000 milliseconds",
                    pl.read_deadline_ms
                )
            },
        );
        self.require(
            STARVE_TIMEOUT_SECS_RANGE.contains(&pl.starve_timeout_secs),
            &key("pipeline.starve_timeout_secs"),
            || {
                format!(
                    "{} is out of range; expected 1..=86400 seconds",
                    pl.starve_timeout_secs
                )
            },
        );

        self.aggregation(i, line);

        if let Some(job) = &line.job {
            self.require(job.quantity >= 1, &key("job.quantity"), || {
                "0 is out of range; expected at least 1".into()
            });
            if let Template::DigitalLink { resolver } = &job.template {
                self.require(
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
}

impl Checker<'_> {
    /// `[[line.aggregation]]`: each level's name, GTIN, count, devices and
    /// times; a scanning level has its camera, a counting one none.
    fn aggregation(&mut self, i: usize, line: &LineConfig) {
        let mut gtins = vec![];
        if let Some(job) = &line.job {
            gtins.push((job.gtin, format!("line[{i}].job.gtin")));
        }
        for (j, a) in line.aggregation.iter().enumerate() {
            let key = |k: &str| format!("line[{i}].aggregation[{j}].{k}");
            self.require(is_valid_id(&a.level), &key("level"), || {
                format!(
                    "{:?} is not a level name; expected [A-Za-z0-9_-]{{1,32}}, such as \"case\"",
                    a.level
                )
            });
            if let Some((_, other)) = gtins.iter().find(|(g, _)| *g == a.gtin) {
                self.fail(
                    &key("gtin"),
                    format!(
                        "{} is also {other}; a level's parents have their own GTIN",
                        a.gtin
                    ),
                );
            }
            gtins.push((a.gtin, key("gtin")));
            self.require(
                (1..=1000).contains(&a.per_parent),
                &key("per_parent"),
                || format!("{} is out of range; expected 1..=1000", a.per_parent),
            );
            self.host_port(&key("label_printer"), &a.label_printer);
            if let LabelSource::Inline(t) = &a.label {
                if let Err(e) = t.validate() {
                    self.fail(&key("label"), e.to_string());
                }
                self.require(t.gs1, &key("label.gs1"), || {
                    "false; a parent's code is a GS1 element string: expected gs1 = true".into()
                });
            }
            self.camera_at(&key("scanner"), &a.scanner);
            match (a.mode, &a.camera) {
                (AggregationModeConfig::Scan, None) => self.fail(
                    &key("camera"),
                    "missing; required when mode = \"scan\" (the aggregation camera); or mode = \"count\"",
                ),
                (AggregationModeConfig::Count, Some(_)) => self.fail(
                    &key("camera"),
                    "not used when mode = \"count\"; a counting level has no aggregation camera",
                ),
                (_, Some(cam)) => self.camera_at(&key("camera"), cam),
                _ => {}
            }
            self.require(
                (1..=600_000).contains(&a.label_deadline_ms),
                &key("label_deadline_ms"),
                || {
                    format!(
                        "{} is out of range; expected 1..=600000 milliseconds",
                        a.label_deadline_ms
                    )
                },
            );
            self.require(a.close_wait_ms <= 600_000, &key("close_wait_ms"), || {
                format!(
                    "{} is out of range; expected 0..=600000 milliseconds",
                    a.close_wait_ms
                )
            });
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

        c.daemon(self);
        c.id("site.id", &self.site.id);
        c.store(self);
        c.retention(self);
        c.mqtt(self);
        c.lines(self);
        c.metrics(self);
        c.opcua(self);

        if c.issues.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(c.issues))
        }
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
        let o = &self.opcua;
        if o.enabled && o.anonymous_methods {
            warnings.push(self.origin.issue(
                "opcua.anonymous_methods",
                "true: anyone who can reach the OPC UA port can start and stop jobs without an identity",
            ));
        }
        if o.enabled && o.trust_client_certs {
            warnings.push(self.origin.issue(
                "opcua.trust_client_certs",
                "true: any OPC UA client application certificate is accepted (user identities still decide who may call methods)",
            ));
        }
        (errors, warnings)
    }
}
