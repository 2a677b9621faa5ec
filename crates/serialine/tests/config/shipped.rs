//! The shipped example (`config/serialine.toml`, which documents every key)
//! and the demo config load, and the example sets every key of the schema.

use crate::shipped;
use serialine::config::{CommitMode, Config, Grade, MarkerSpec, PipelineConfig, PrinterKind};
use serialine_core::Template;
use serialine_devices::camera::CameraProfile;
use serialine_devices::transport::{SerialSettings, TransportSettings};
use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

/// Dotted keys of a JSON tree; array entries as `name[]`.
fn keys_of(value: &serde_json::Value) -> BTreeSet<String> {
    fn walk(prefix: &str, v: &serde_json::Value, out: &mut BTreeSet<String>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v, out);
                }
            }
            serde_json::Value::Array(items) if items.iter().all(|i| i.is_object()) => {
                for item in items {
                    walk(&format!("{prefix}[]"), item, out);
                }
            }
            _ => {
                out.insert(prefix.to_string());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk("", value, &mut out);
    out
}

/// Every key of the schema: a table and keys in it (a table may take several rows).
const ALL_KEYS: &[(&str, &str)] = &[
    ("daemon", "state_dir log_format log_level watchdog"),
    ("site", "id"),
    ("store", "commit max_batch cache_mb"),
    ("retention", "keep_days"),
    (
        "mqtt",
        "host port client_id keep_alive_secs clean_session username password_file",
    ),
    (
        "mqtt",
        "command_key_file command_max_skew_secs command_max_age_secs",
    ),
    (
        "mqtt",
        "allow_unsigned_commands ack_key_file allow_unsigned_acks",
    ),
    ("mqtt.tls", "ca_file client_cert_file client_key_file"),
    ("metrics", "listen"),
    (
        "opcua",
        "enabled listen host_name certificate_file private_key_file trust_client_certs",
    ),
    (
        "opcua",
        "anonymous_read anonymous_methods insecure_endpoint",
    ),
    ("opcua.user[]", "name password_file"),
    ("line[]", "id secret_file min_grade"),
    (
        "line[].buffer",
        "low_water_serials low_water_minutes high_water_serials return_at_job_end",
    ),
    ("line[].job", "gtin lot expiry quantity"),
    ("line[].epcis", "read_point biz_location"),
    (
        "line[].aggregation[]",
        "level gtin per_parent mode label_printer label_deadline_ms close_wait_ms",
    ),
    (
        "line[].aggregation[].label",
        "symbology module_size x y gs1 poll_interval_ms",
    ),
    ("line[].aggregation[].label.text", "x y height"),
    (
        "line[].aggregation[].scanner",
        "template no_read deadline_ms max_line",
    ),
    (
        "line[].aggregation[].scanner.transport",
        "kind addr connect_timeout_ms nodelay keepalive",
    ),
    (
        "line[].aggregation[].camera",
        "template no_read deadline_ms max_line",
    ),
    (
        "line[].aggregation[].camera.transport",
        "kind addr connect_timeout_ms nodelay keepalive",
    ),
    ("line[].job.template", "kind resolver"),
    ("line[].printer", "kind profile addr map"),
    (
        "line[].printer.transport",
        "kind path baud data_bits parity stop_bits flow_control",
    ),
    ("line[].camera", "template no_read deadline_ms max_line"),
    (
        "line[].camera.transport",
        "kind addr connect_timeout_ms nodelay keepalive",
    ),
    (
        "line[].camera.transport",
        "path baud data_bits parity stop_bits flow_control",
    ),
    (
        "line[].pipeline",
        "camera_window read_deadline_ms starve_timeout_secs",
    ),
];

#[test]
fn shipped_example_loads_and_validates() {
    let c = Config::load_with_env(&shipped("serialine.toml"), false).unwrap();
    assert_eq!(c.site.id, "plant-01");
    assert_eq!(c.daemon.state_dir, Path::new("/var/lib/serialine"));
    assert_eq!(c.ledger_path(), Path::new("/var/lib/serialine/ledger"));
    assert_eq!(c.store.commit, CommitMode::Group);
    assert_eq!(c.mqtt_client_id(), "serialine-plant-01");
    assert!(c.mqtt.tls.is_some());
    assert_eq!(
        c.metrics.as_ref().map(|m| m.listen.to_string()).as_deref(),
        Some("127.0.0.1:9898")
    );
    let ids: Vec<_> = c.lines.iter().map(|l| l.id.as_str()).collect();
    assert_eq!(ids, ["line-1", "line-2"]);
    assert_eq!(
        c.lines[0].secret_file,
        Path::new("/etc/serialine/line-1.secret")
    );
    assert_eq!(c.lines[0].min_grade, Grade::C);
    assert_eq!(c.lines[1].min_grade, Grade::B, "numeric 3 is grade B");
    let job = c.lines[1].job.as_ref().unwrap().to_job().unwrap();
    assert_eq!(job.gtin.as_string(), "04006381333931");
    assert_eq!(
        job.template,
        Template::DigitalLink {
            resolver: "id.example.com".into()
        }
    );
    assert_eq!(
        c.summary(),
        "site plant-01, 2 lines (line-1, line-2), store at /var/lib/serialine/ledger, \
         mqtt 127.0.0.1:1883 (TLS), commit mode group"
    );
}

#[test]
fn shipped_example_sets_every_key() {
    let path = shipped("serialine.toml");
    let written: serde_json::Value = figment::Figment::from(
        <figment::providers::Toml as figment::providers::Format>::file_exact(&path),
    )
    .extract()
    .unwrap();
    let written = keys_of(&written);
    let all: BTreeSet<String> = ALL_KEYS
        .iter()
        .flat_map(|(table, keys)| keys.split(' ').map(move |k| format!("{table}.{k}")))
        .collect();
    assert_eq!(written, all, "config/serialine.toml must set every key");

    // Keys with defaults show up when the loaded config is serialized: if the
    // schema grows a key the example lacks, this differs.
    let config = Config::load_with_env(&path, false).unwrap();
    let effective = keys_of(&serde_json::to_value(&config).unwrap());
    assert_eq!(effective, all);
}

#[test]
fn shipped_demo_loads_with_paths_next_to_it() {
    let path = shipped("demo.toml");
    let c = Config::load_with_env(&path, false).unwrap();
    let dir = fs::canonicalize(path.parent().unwrap()).unwrap();
    assert_eq!(c.site.id, "demo");
    assert_eq!(c.lines.len(), 1);
    assert_eq!(c.lines[0].id, "line-1");
    assert_eq!(c.daemon.state_dir, dir.join("serialine-demo-state"));
    assert_eq!(c.lines[0].secret_file, dir.join("demo-line-1.secret"));
    assert!(!c.daemon.watchdog);
    assert_eq!(
        c.metrics.map(|m| m.listen.to_string()).as_deref(),
        Some("127.0.0.1:9898")
    );
    assert!(c.lines[0].job.as_ref().unwrap().to_job().is_ok());
}

#[test]
fn embedded_demo_text_keeps_relative_paths() {
    let text = fs::read_to_string(shipped("demo.toml")).unwrap();
    let c = Config::load_str(&text, "embedded demo.toml").unwrap();
    assert_eq!(c.daemon.state_dir, Path::new("./serialine-demo-state"));
    assert_eq!(c.lines[0].secret_file, Path::new("demo-line-1.secret"));
    assert_eq!(c.origin_name(), "embedded demo.toml");
}

#[test]
fn shipped_example_devices() {
    let c = Config::load_with_env(&shipped("serialine.toml"), false).unwrap();
    let l1 = &c.lines[0];
    assert_eq!(l1.printer.kind, PrinterKind::Framed);
    // Relative: the shipped profile next to the example.
    let dir = fs::canonicalize(shipped("")).unwrap();
    assert_eq!(
        l1.printer.profile.as_deref(),
        Some(&*dir.join("printer-cij-stx.toml"))
    );
    assert_eq!(
        l1.printer.transport,
        Some(TransportSettings::Serial(SerialSettings::new(
            "/dev/ttyUSB0"
        )))
    );
    assert!(
        matches!(&l1.camera.transport, TransportSettings::Tcp(t) if t.addr == "192.168.10.31:2001")
    );
    assert_eq!(l1.camera.deadline_ms, Some(1500));
    assert_eq!(l1.pipeline, PipelineConfig::default());
    let l2 = &c.lines[1];
    assert_eq!(l2.printer.kind, PrinterKind::Laser);
    assert_eq!(l2.printer.addr.as_deref(), Some("192.168.10.40:502"));
    assert_eq!(
        l2.printer.map.as_deref(),
        Some(&*dir.join("laser-modbus.toml"))
    );
    // Both shipped device files load and check.
    assert!(matches!(
        c.line_devices(0).unwrap().marker,
        MarkerSpec::Framed { .. }
    ));
    assert!(matches!(
        c.line_devices(1).unwrap().marker,
        MarkerSpec::Laser { .. }
    ));
    assert!(
        matches!(&l2.camera.transport, TransportSettings::Serial(s) if s.path == "/dev/ttyS1" && s.baud == 9600)
    );
    assert_eq!(l2.camera.profile(), CameraProfile::default());
    assert_eq!(
        c.line_ledger_path("line-2"),
        Path::new("/var/lib/serialine/ledger/line-2")
    );
}
