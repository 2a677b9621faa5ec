//! Configuration loading, validation, secrets, and the `check-config` / `run`
//! CLI.
//!
//! Tests that need environment overrides run inside `figment::Jail` (which
//! serializes them and restores the environment); every other test loads
//! with the environment disabled and uses absolute paths, so neither the
//! jail's environment nor its working directory can leak into them. CLI tests
//! start the binary with a cleared environment.

use serialine::config::{
    CommitMode, Config, ConfigError, Grade, LabelSource, LogFormat, PipelineConfig, PrinterDevice,
    PrinterKind,
};
use serialine_core::Template;
use serialine_devices::camera::CameraProfile;
use serialine_devices::transport::{SerialSettings, TransportSettings};
use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tempfile::TempDir;

// ---------------------------------------------------------------------------
// helpers

fn shipped(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../config")
        .join(name)
}

/// A line's device keys (inline tables, so that keys appended after them
/// still belong to the `[[line]]` table): a framed printer using the shipped
/// profile (absolute path) and a camera, both on TCP.
macro_rules! devices {
    () => {
        concat!(
            "printer = { kind = \"framed\", profile = \"",
            env!("CARGO_MANIFEST_DIR"),
            "/../../config/printer-cij-stx.toml\", ",
            "transport = { kind = \"tcp\", addr = \"127.0.0.1:9100\" } }\n",
            "camera = { transport = { kind = \"tcp\", addr = \"127.0.0.1:2001\" } }\n",
        )
    };
}

const DEVICES: &str = devices!();

const MINIMAL: &str = concat!(
    r#"
[site]
id = "plant-x"

[[line]]
id = "line-1"
secret_file = "line-1.secret"
"#,
    devices!()
);

/// MINIMAL with both MQTT keys set (see [`write_keys`]): what passes
/// `check_files` once the line secret is in place too.
const KEYED: &str = concat!(
    r#"
[site]
id = "plant-x"

[[line]]
id = "line-1"
secret_file = "line-1.secret"
"#,
    devices!(),
    "\n[mqtt]\ncommand_key_file = \"command.key\"\nack_key_file = \"ack.key\"\n"
);

/// The command and ack key files KEYED names, next to `config`.
fn write_keys(config: &Path) {
    write_secret(
        &config.with_file_name("command.key"),
        "11".repeat(32).as_bytes(),
        0o600,
    );
    write_secret(
        &config.with_file_name("ack.key"),
        "22".repeat(32).as_bytes(),
        0o600,
    );
}

/// A temp dir (canonical path) holding `serialine.toml` with `text`.
fn config_dir(text: &str) -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = fs::canonicalize(dir.path()).unwrap().join("serialine.toml");
    fs::write(&path, text).unwrap();
    (dir, path)
}

fn load(text: &str) -> Result<Config, ConfigError> {
    let (_dir, path) = config_dir(text);
    Config::load_with_env(&path, false)
}

/// Loads `text`, expects an error, returns (config path, error, message).
fn load_err(text: &str) -> (String, ConfigError, String) {
    let (_dir, path) = config_dir(text);
    let err = Config::load_with_env(&path, false).expect_err("config should be rejected");
    let msg = err.to_string();
    (path.display().to_string(), err, msg)
}

fn write_secret(path: &Path, content: &[u8], mode: u32) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(path, content).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

const GOOD_SECRET: &[u8] = b"0123456789abcdef0123456789abcdef\n";

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

/// Every key of the schema.
const ALL_KEYS: &[&str] = &[
    "daemon.state_dir",
    "daemon.log_format",
    "daemon.log_level",
    "daemon.watchdog",
    "site.id",
    "store.commit",
    "store.max_batch",
    "store.max_batch_delay_ms",
    "mqtt.host",
    "mqtt.port",
    "mqtt.client_id",
    "mqtt.keep_alive_secs",
    "mqtt.clean_session",
    "mqtt.username",
    "mqtt.password_file",
    "mqtt.command_key_file",
    "mqtt.command_max_skew_secs",
    "mqtt.command_max_age_secs",
    "mqtt.allow_unsigned_commands",
    "mqtt.ack_key_file",
    "mqtt.allow_unsigned_acks",
    "mqtt.tls.ca_file",
    "mqtt.tls.client_cert_file",
    "mqtt.tls.client_key_file",
    "line[].id",
    "line[].secret_file",
    "line[].min_grade",
    "line[].buffer.low_water_serials",
    "line[].buffer.low_water_minutes",
    "line[].buffer.high_water_serials",
    "line[].job.gtin",
    "line[].job.lot",
    "line[].job.expiry",
    "line[].job.quantity",
    "line[].job.template.kind",
    "line[].job.template.resolver",
    "line[].printer.kind",
    "line[].printer.profile",
    "line[].printer.transport.kind",
    "line[].printer.transport.path",
    "line[].printer.transport.baud",
    "line[].printer.transport.data_bits",
    "line[].printer.transport.parity",
    "line[].printer.transport.stop_bits",
    "line[].printer.transport.flow_control",
    "line[].printer.addr",
    "line[].printer.map",
    "line[].camera.template",
    "line[].camera.no_read",
    "line[].camera.deadline_ms",
    "line[].camera.max_line",
    "line[].camera.transport.kind",
    "line[].camera.transport.addr",
    "line[].camera.transport.connect_timeout_ms",
    "line[].camera.transport.nodelay",
    "line[].camera.transport.keepalive",
    "line[].camera.transport.path",
    "line[].camera.transport.baud",
    "line[].camera.transport.data_bits",
    "line[].camera.transport.parity",
    "line[].camera.transport.stop_bits",
    "line[].camera.transport.flow_control",
    "line[].pipeline.camera_window",
    "line[].pipeline.read_deadline_ms",
    "line[].pipeline.starve_timeout_secs",
];

// ---------------------------------------------------------------------------
// shipped configs

#[test]
fn shipped_example_loads_and_validates() {
    let c = Config::load_with_env(&shipped("serialine.toml"), false).unwrap();
    assert_eq!(c.site.id, "plant-01");
    assert_eq!(c.daemon.state_dir, Path::new("/var/lib/serialine"));
    assert_eq!(c.ledger_path(), Path::new("/var/lib/serialine/ledger"));
    assert_eq!(c.store.commit, CommitMode::Group);
    assert_eq!(c.mqtt_client_id(), "serialine-plant-01");
    assert!(c.mqtt.tls.is_some());
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
    let all: BTreeSet<String> = ALL_KEYS.iter().map(|k| k.to_string()).collect();
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

// ---------------------------------------------------------------------------
// defaults and paths

#[test]
fn minimal_config_gets_documented_defaults() {
    let c = load(MINIMAL).unwrap();
    assert_eq!(c.daemon.state_dir, Path::new("/var/lib/serialine"));
    assert_eq!(c.daemon.log_format, LogFormat::Plain);
    assert_eq!(c.daemon.log_level, "info");
    assert!(c.daemon.watchdog);
    assert_eq!(c.store.commit, CommitMode::Group);
    assert_eq!(c.store.max_batch, 4096);
    assert_eq!(c.store.max_batch_delay_ms, 0);
    assert_eq!(c.mqtt.host, "127.0.0.1");
    assert_eq!(c.mqtt.port, 1883);
    assert_eq!(c.mqtt_client_id(), "serialine-plant-x");
    assert_eq!(c.mqtt.keep_alive_secs, 30);
    assert!(!c.mqtt.clean_session);
    assert!(c.mqtt.username.is_none() && c.mqtt.password_file.is_none());
    assert!(c.mqtt.tls.is_none());
    let line = &c.lines[0];
    assert_eq!(line.min_grade, Grade::C);
    assert_eq!(line.buffer.low_water_serials, 20_000);
    assert_eq!(line.buffer.low_water_minutes, 60);
    assert_eq!(line.buffer.high_water_serials, 200_000);
    assert!(line.job.is_none());
    assert!(c.env_overrides().is_empty());
}

#[test]
fn relative_paths_resolve_against_the_config_files_directory() {
    let dir = tempfile::tempdir().unwrap();
    let root = fs::canonicalize(dir.path()).unwrap();
    let etc = root.join("etc");
    fs::create_dir(&etc).unwrap();
    let path = etc.join("serialine.toml");
    fs::write(
        &path,
        r#"
        [daemon]
        state_dir = "./state"
        [site]
        id = "s"
        [mqtt]
        username = "u"
        password_file = "mqtt.pw"
        [mqtt.tls]
        ca_file = "tls/ca.pem"
        client_cert_file = "tls/client.pem"
        client_key_file = "/abs/client.key"
        [[line]]
        id = "l1"
        secret_file = "../secrets/l1.secret"
        #DEVICES#
        "#
        .replace("#DEVICES#", DEVICES),
    )
    .unwrap();
    // Load through a path with `..` in it: resolution uses the directory.
    let c = Config::load_with_env(&etc.join("../etc/serialine.toml"), false).unwrap();
    assert_eq!(c.daemon.state_dir, etc.join("state"));
    assert_eq!(c.mqtt.password_file.as_deref(), Some(&*etc.join("mqtt.pw")));
    let tls = c.mqtt.tls.as_ref().unwrap();
    assert_eq!(tls.ca_file, etc.join("tls/ca.pem"));
    assert_eq!(
        tls.client_cert_file.as_deref(),
        Some(&*etc.join("tls/client.pem"))
    );
    assert_eq!(
        tls.client_key_file.as_deref(),
        Some(Path::new("/abs/client.key"))
    );
    assert_eq!(c.lines[0].secret_file, etc.join("../secrets/l1.secret"));
}

// ---------------------------------------------------------------------------
// parse errors

#[test]
fn misspelt_key_names_file_and_key() {
    let (file, err, msg) = load_err(&format!("{MINIMAL}\n[mqtt]\nhots = \"broker\"\n"));
    assert!(matches!(err, ConfigError::Parse(_)), "{err:?}");
    assert!(
        msg.starts_with(&format!("{file}: key mqtt.hots: ")),
        "{msg}"
    );
    assert!(msg.contains("unknown key `hots`"), "{msg}");
    assert!(msg.contains("host, port"), "lists the expected keys: {msg}");
}

#[test]
fn misspelt_section_and_nested_keys_are_named() {
    let (file, _, msg) = load_err(&format!("{MINIMAL}\n[sotre]\nmax_batch = 1\n"));
    assert!(msg.starts_with(&format!("{file}: key sotre: ")), "{msg}");
    assert!(msg.contains("expected one of: daemon, site, store, mqtt, line"));

    let (file, _, msg) = load_err(&format!("{MINIMAL}\n[line.buffer]\nlow_water_serial = 5\n"));
    assert!(
        msg.starts_with(&format!("{file}: key line[0].buffer.low_water_serial: ")),
        "{msg}"
    );
}

#[test]
fn wrong_type_names_key_and_expected_type() {
    let (file, _, msg) = load_err(&format!("{MINIMAL}\n[mqtt]\nport = \"abc\"\n"));
    assert_eq!(
        msg,
        format!("{file}: key mqtt.port: invalid type: found string \"abc\", expected u16")
    );

    let (_, _, msg) = load_err(&format!("{MINIMAL}\n[daemon]\nwatchdog = \"yes\"\n"));
    assert!(msg.contains("key daemon.watchdog: invalid type"), "{msg}");
    assert!(msg.contains("expected a boolean"), "{msg}");

    let (_, _, msg) = load_err(&format!("{MINIMAL}\n[store]\ncommit = \"batch\"\n"));
    assert!(
        msg.contains("key store.commit: invalid value \"batch\""),
        "{msg}"
    );
    assert!(msg.contains("\"group\", \"per-transition\""), "{msg}");
}

#[test]
fn bad_gtin_check_digit_names_the_job_key() {
    let (file, _, msg) = load_err(&format!(
        r#"{MINIMAL}
[line.job]
gtin = "09506000134353"
lot = "L1"
expiry = "271231"
quantity = 10
template = {{ kind = "gs1-data-matrix" }}
"#
    ));
    assert!(
        msg.starts_with(&format!("{file}: key line[0].job.gtin: ")),
        "{msg}"
    );
    assert!(msg.contains("check digit 3, expected 2"), "{msg}");
}

#[test]
fn bad_lot_expiry_and_template_name_their_keys() {
    let job = |lot: &str, expiry: &str, template: &str| {
        format!(
            "{MINIMAL}\n[line.job]\ngtin = \"09506000134352\"\nlot = \"{lot}\"\n\
             expiry = \"{expiry}\"\nquantity = 1\ntemplate = {template}\n"
        )
    };
    let (_, _, msg) = load_err(&job("A B", "271231", r#"{ kind = "plain-text" }"#));
    assert!(msg.contains("key line[0].job.lot: "), "{msg}");
    let (_, _, msg) = load_err(&job("L1", "271301", r#"{ kind = "plain-text" }"#));
    assert!(msg.contains("key line[0].job.expiry: "), "{msg}");
    assert!(msg.contains("expected YYMMDD"), "{msg}");
    let (_, _, msg) = load_err(&job("L1", "271231", r#"{ kind = "qr" }"#));
    assert!(msg.contains("key line[0].job.template.kind: "), "{msg}");
    assert!(msg.contains("\"gs1-data-matrix\", \"digital-link\", \"plain-text\""));
    // Unknown keys inside the template are errors too, whatever the kind.
    for template in [
        r#"{ kind = "digital-link", resolver = "id.example.com", resolvr = "x" }"#,
        r#"{ kind = "gs1-data-matrix", resolvr = "x" }"#,
    ] {
        let (_, _, msg) = load_err(&job("L1", "271231", template));
        assert!(msg.contains("key line[0].job.template"), "{msg}");
        assert!(msg.contains("resolvr"), "{msg}");
    }

    let c = load(&job(
        "L1",
        "271231",
        r#"{ kind = "digital-link", resolver = "id.example.com" }"#,
    ))
    .unwrap();
    let j = c.lines[0].job.as_ref().unwrap();
    assert_eq!(
        j.template,
        Template::DigitalLink {
            resolver: "id.example.com".into()
        }
    );
}

#[test]
fn errors_in_several_sections_are_all_reported() {
    let (file, err, _) = load_err(
        &r#"
        [daemon]
        log_format = "xml"
        [site]
        idd = "x"
        [mqtt]
        port = 99999
        [extra]
        [[line]]
        id = "l"
        secret_file = "s"
        min_grade = "E"
        #DEVICES#
        "#
        .replace("#DEVICES#", DEVICES),
    );
    let keys: Vec<_> = err.issues().iter().filter_map(|i| i.key.clone()).collect();
    for want in [
        "extra",
        "daemon.log_format",
        "site.idd",
        "mqtt.port",
        "line[0].min_grade",
    ] {
        assert!(keys.iter().any(|k| k == want), "{want} not in {keys:?}");
    }
    assert!(err.issues().iter().all(|i| i.origin == file));
    assert_eq!(err.messages().len(), err.issues().len());
}

#[test]
fn toml_syntax_error_names_file_and_line() {
    let (file, err, msg) = load_err("[site\nid = \"x\"\n");
    assert!(matches!(err, ConfigError::Parse(_)));
    assert!(msg.starts_with(&format!("{file}: ")), "{msg}");
    assert!(msg.contains("line 1"), "{msg}");
}

#[test]
fn missing_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.toml");
    let err = Config::load_with_env(&path, false).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
    assert!(err
        .to_string()
        .starts_with(&format!("{}: cannot read config file", path.display())));
}

#[test]
fn missing_site_and_lines_are_named() {
    let (file, _, msg) = load_err(&format!(
        "[[line]]\nid = \"l\"\nsecret_file = \"s\"\n{DEVICES}"
    ));
    assert!(msg.starts_with(&format!("{file}: key site.id: ")), "{msg}");
    let (_, _, msg) = load_err(&format!(
        "[site]\n[[line]]\nid = \"l\"\nsecret_file = \"s\"\n{DEVICES}"
    ));
    assert!(msg.contains("key site.id: missing"), "{msg}");
    let (_, _, msg) = load_err("[[line]]\nid = \"l\"\n[site]\nid = \"s\"\n");
    assert!(msg.contains("key line[0].secret_file: missing"), "{msg}");
    let (file, err, msg) = load_err("[site]\nid = \"s\"\n");
    assert!(matches!(err, ConfigError::Invalid(_)));
    assert_eq!(
        msg,
        format!("{file}: key line: no lines configured; expected at least one [[line]] table")
    );
}

// ---------------------------------------------------------------------------
// validation

#[test]
fn duplicate_line_ids_are_rejected() {
    let (file, err, msg) = load_err(&format!(
        "{MINIMAL}\n[[line]]\nid = \"line-1\"\nsecret_file = \"other.secret\"\n{DEVICES}"
    ));
    assert!(matches!(err, ConfigError::Invalid(_)));
    assert!(
        msg.starts_with(&format!("{file}: key line[1].id: ")),
        "{msg}"
    );
    assert!(msg.contains("duplicate line id \"line-1\""), "{msg}");
}

#[test]
fn high_water_must_exceed_low_water() {
    for high in [100, 20_000] {
        let (file, _, msg) = load_err(&format!(
            "{MINIMAL}\n[line.buffer]\nlow_water_serials = 20000\nhigh_water_serials = {high}\n"
        ));
        assert!(
            msg.starts_with(&format!("{file}: key line[0].buffer.high_water_serials: ")),
            "{msg}"
        );
        assert!(msg.contains("expected high_water_serials > low_water_serials"));
    }
}

#[test]
fn validation_reports_every_problem_with_its_key() {
    let (_, err, _) = load_err(
        &r#"
        [daemon]
        log_level = "info,[=x"
        [site]
        id = "plant 1"
        [store]
        max_batch = 0
        max_batch_delay_ms = 5000
        [mqtt]
        host = ""
        port = 0
        keep_alive_secs = 1
        password_file = "pw"
        [mqtt.tls]
        ca_file = "ca.pem"
        client_cert_file = "c.pem"
        [[line]]
        id = "this-line-id-is-far-too-long-to-be-valid"
        secret_file = "s"
        #DEVICES#
        [line.buffer]
        low_water_serials = 0
        low_water_minutes = 20000
        [line.job]
        gtin = "09506000134352"
        lot = "L"
        expiry = "271231"
        quantity = 0
        template = { kind = "digital-link", resolver = "" }
        "#
        .replace("#DEVICES#", DEVICES),
    );
    assert!(matches!(err, ConfigError::Invalid(_)));
    let keys: BTreeSet<_> = err.issues().iter().filter_map(|i| i.key.clone()).collect();
    let want: BTreeSet<String> = [
        "daemon.log_level",
        "site.id",
        "store.max_batch",
        "store.max_batch_delay_ms",
        "mqtt.host",
        "mqtt.port",
        "mqtt.keep_alive_secs",
        "mqtt.password_file",
        "mqtt.tls.client_key_file",
        "line[0].id",
        "line[0].buffer.low_water_serials",
        "line[0].buffer.low_water_minutes",
        "line[0].job.quantity",
        "line[0].job.template.resolver",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(keys, want);
    let msg = err.to_string();
    assert!(msg.contains("expected 1..=65536"), "{msg}");
    assert!(msg.contains("expected 5..=3600 seconds"), "{msg}");
    assert!(msg.contains("expected 1 to 32 characters"), "{msg}");
}

#[test]
fn min_grade_accepts_letters_and_numbers() {
    for (written, grade) in [
        ("\"A\"", Grade::A),
        ("\"b\"", Grade::B),
        ("\"F\"", Grade::F),
        ("4", Grade::A),
        ("2", Grade::C),
        ("0", Grade::F),
    ] {
        let c = load(&format!("{MINIMAL}min_grade = {written}\n")).unwrap();
        assert_eq!(c.lines[0].min_grade, grade, "{written}");
    }
    assert_eq!(Grade::A.value(), 4);
    assert_eq!(Grade::F.letter(), 'F');
    for bad in ["\"E\"", "5", "-1", "\"AA\""] {
        let (_, _, msg) = load_err(&format!("{MINIMAL}min_grade = {bad}\n"));
        assert!(msg.contains("key line[0].min_grade: "), "{msg}");
        assert!(msg.contains("A, B, C, D or F, or a number 0..=4"), "{msg}");
    }
}

// ---------------------------------------------------------------------------
// devices: [line.printer], [line.camera], [line.pipeline]

/// MINIMAL's `[[line]]` header and keys without devices, for device tests.
const LINE_HEAD: &str = "[site]\nid = \"s\"\n[[line]]\nid = \"line-1\"\nsecret_file = \"s\"\n";

const CAMERA_TCP: &str = "[line.camera.transport]\nkind = \"tcp\"\naddr = \"127.0.0.1:2001\"\n";

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
        c.line_devices(0).unwrap().printer,
        PrinterDevice::Framed { .. }
    ));
    assert!(matches!(
        c.line_devices(1).unwrap().printer,
        PrinterDevice::Laser { .. }
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

#[test]
fn printer_and_camera_are_required() {
    let (file, _, msg) = load_err(&format!("{LINE_HEAD}{CAMERA_TCP}"));
    assert!(
        msg.contains(&format!(
            "{file}: key line[0].printer: missing; this key is required"
        )),
        "{msg}"
    );
    let (file, _, msg) = load_err(&format!("{LINE_HEAD}{DEVICES}").replace("camera =", "kamera ="));
    assert!(
        msg.contains(&format!("{file}: key line[0].kamera: unknown key")),
        "{msg}"
    );
}

#[test]
fn bad_printer_kind_names_the_key_and_the_kinds() {
    let (file, err, msg) = load_err(&format!(
        "{LINE_HEAD}[line.printer]\nkind = \"inkjet\"\n{CAMERA_TCP}"
    ));
    assert!(matches!(err, ConfigError::Parse(_)));
    assert!(
        msg.contains(&format!(
            "{file}: key line[0].printer.kind: invalid value \"inkjet\"; expected one of: \"framed\", \"laser\", \"zpl\""
        )),
        "{msg}"
    );
}

#[test]
fn printer_keys_must_match_its_kind() {
    let (file, err, _) = load_err(&format!(
        "{LINE_HEAD}[line.printer]\nkind = \"framed\"\naddr = \"10.0.0.1:502\"\n{CAMERA_TCP}"
    ));
    assert!(matches!(err, ConfigError::Invalid(_)));
    let msgs = err.messages();
    for want in [
        format!("{file}: key line[0].printer.transport: missing; required when printer.kind = \"framed\""),
        format!("{file}: key line[0].printer.profile: missing; required when printer.kind = \"framed\""),
        format!("{file}: key line[0].printer.addr: not used when printer.kind = \"framed\"; expected only transport and profile"),
    ] {
        assert!(msgs.contains(&want), "{want:?} not in {msgs:#?}");
    }
    let (_, err, _) = load_err(&format!(
        "{LINE_HEAD}[line.printer]\nkind = \"laser\"\naddr = \"no-port\"\nmap = \"m.toml\"\n{CAMERA_TCP}"
    ));
    let keys: Vec<_> = err.issues().iter().filter_map(|i| i.key.clone()).collect();
    assert_eq!(keys, ["line[0].printer.addr"]);
    assert!(err.to_string().contains("expected host:port"), "{err}");
}

#[test]
fn transport_errors_name_their_keys() {
    let (file, _, msg) = load_err(&format!(
        "{LINE_HEAD}[line.printer]\nkind = \"framed\"\nprofile = \"p.toml\"\n\
         transport = {{ kind = \"serial\", pth = \"/dev/ttyS0\" }}\n{CAMERA_TCP}"
    ));
    assert!(
        msg.contains(&format!(
            "{file}: key line[0].printer.transport.pth: unknown key"
        )),
        "{msg}"
    );
    let (_, _, msg) = load_err(&format!(
        "{LINE_HEAD}[line.printer]\nkind = \"framed\"\nprofile = \"p.toml\"\n\
         transport = {{ kind = \"usb\", path = \"/dev/ttyS0\" }}\n{CAMERA_TCP}"
    ));
    assert!(msg.contains("key line[0].printer.transport"), "{msg}");
    assert!(msg.contains("usb"), "{msg}");
    let (_, err, _) =
        load_err(&format!("{LINE_HEAD}{DEVICES}").replace("127.0.0.1:2001", "camera-without-port"));
    let keys: Vec<_> = err.issues().iter().filter_map(|i| i.key.clone()).collect();
    assert_eq!(keys, ["line[0].camera.transport.addr"]);
}

#[test]
fn camera_and_pipeline_defaults_and_ranges() {
    let c = load(MINIMAL).unwrap();
    let line = &c.lines[0];
    assert_eq!(line.camera.profile(), CameraProfile::default());
    assert_eq!(line.pipeline.camera_window, 32);
    assert_eq!(line.pipeline.read_deadline_ms, 2000);
    assert_eq!(line.pipeline.starve_timeout_secs, 600);

    let (file, err, _) = load_err(&format!(
        "{LINE_HEAD}{DEVICES}[line.pipeline]\ncamera_window = 0\nread_deadline_ms = 0\nstarve_timeout_secs = 0\n"
    ));
    let keys: BTreeSet<_> = err.issues().iter().filter_map(|i| i.key.clone()).collect();
    let want: BTreeSet<String> = [
        "line[0].pipeline.camera_window",
        "line[0].pipeline.read_deadline_ms",
        "line[0].pipeline.starve_timeout_secs",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(keys, want);
    assert!(err.issues().iter().all(|i| i.origin == file));

    let bad_camera = format!("{LINE_HEAD}{DEVICES}").replace(
        "camera = { transport",
        "camera = { template = \"{content}{grade}\", deadline_ms = 0, no_read = [\"\"], transport",
    );
    let (_, err, msg) = load_err(&bad_camera);
    let keys: BTreeSet<_> = err.issues().iter().filter_map(|i| i.key.clone()).collect();
    assert!(keys.contains("line[0].camera.template"), "{msg}");
    assert!(keys.contains("line[0].camera.deadline_ms"), "{msg}");
    assert!(msg.contains("separated by literal text"), "{msg}");
}

#[test]
fn relative_device_paths_resolve_and_files_load() {
    let (_dir, path) = config_dir(
        "[site]\nid = \"s\"\n\
         [[line]]\nid = \"a\"\nsecret_file = \"a.secret\"\n\
         printer = { kind = \"framed\", profile = \"profiles/cij.toml\", transport = { kind = \"tcp\", addr = \"127.0.0.1:9100\" } }\n\
         camera = { transport = { kind = \"tcp\", addr = \"127.0.0.1:2001\" } }\n\
         [[line]]\nid = \"b\"\nsecret_file = \"b.secret\"\n\
         printer = { kind = \"laser\", addr = \"127.0.0.1:502\", map = \"laser.toml\" }\n\
         camera = { transport = { kind = \"serial\", path = \"/dev/ttyS1\" } }\n\
         [[line]]\nid = \"c\"\nsecret_file = \"c.secret\"\n\
         printer = { kind = \"zpl\", addr = \"127.0.0.1:9100\", label = \"label.toml\" }\n\
         camera = { transport = { kind = \"tcp\", addr = \"127.0.0.1:2002\" } }\n"
    );
    let dir = path.parent().unwrap();
    let c = Config::load_with_env(&path, false).unwrap();
    assert_eq!(
        c.lines[0].printer.profile.as_deref(),
        Some(&*dir.join("profiles/cij.toml"))
    );
    assert_eq!(
        c.lines[1].printer.map.as_deref(),
        Some(&*dir.join("laser.toml"))
    );
    assert_eq!(
        c.lines[2].printer.label,
        Some(LabelSource::File(dir.join("label.toml")))
    );

    // Not there yet: each file is named with its key.
    let err = c.check_files().unwrap_err();
    let msgs = err.messages();
    let file = path.display();
    for want in [
        format!(
            "{file}: key line[0].printer.profile: printer profile file {} does not exist; expected a readable file",
            dir.join("profiles/cij.toml").display()
        ),
        format!(
            "{file}: key line[1].printer.map: laser register map file {} does not exist; expected a readable file",
            dir.join("laser.toml").display()
        ),
        format!(
            "{file}: key line[2].printer.label: label template file {} does not exist; expected a readable file",
            dir.join("label.toml").display()
        ),
    ] {
        assert!(msgs.contains(&want), "{want:?} not in {msgs:#?}");
    }

    fs::create_dir(dir.join("profiles")).unwrap();
    fs::copy(
        shipped("printer-cij-stx.toml"),
        dir.join("profiles/cij.toml"),
    )
    .unwrap();
    fs::copy(shipped("laser-modbus.toml"), dir.join("laser.toml")).unwrap();
    fs::write(
        dir.join("label.toml"),
        "symbology = \"qr\"\nmodule_size = 4\nx = 10\ny = 10\n",
    )
    .unwrap();
    match c.line_devices(0).unwrap().printer {
        PrinterDevice::Framed { transport, profile } => {
            assert_eq!(profile.buffer_depth, 8);
            assert!(matches!(transport, TransportSettings::Tcp(_)));
        }
        other => panic!("expected a framed printer, got {other:?}"),
    }
    match c.line_devices(1).unwrap().printer {
        PrinterDevice::Laser { addr, map } => {
            assert_eq!(addr, "127.0.0.1:502");
            assert_eq!(map.code_start, 100);
        }
        other => panic!("expected a laser, got {other:?}"),
    }
    match c.line_devices(2).unwrap().printer {
        PrinterDevice::Zpl { label, .. } => assert_eq!(label.module_size, 4),
        other => panic!("expected a label printer, got {other:?}"),
    }

    // A profile that parses but cannot work is named too.
    fs::write(
        dir.join("profiles/cij.toml"),
        "message = \"P{id:02}|{code}\"\ncomplete = \"D{id:02}\"\nbuffer_depth = 0\n",
    )
    .unwrap();
    let msg = c.line_devices(0).unwrap_err().to_string();
    assert!(
        msg.starts_with(&format!("{file}: key line[0].printer.profile: ")),
        "{msg}"
    );
    assert!(msg.contains("buffer_depth must be >= 1"), "{msg}");
    // And one that does not parse.
    fs::write(dir.join("profiles/cij.toml"), "mesage = 1\n").unwrap();
    let msg = c.line_devices(0).unwrap_err().to_string();
    assert!(
        msg.contains("key line[0].printer.profile: printer profile file"),
        "{msg}"
    );
    assert!(msg.contains("is not valid"), "{msg}");
}

#[test]
fn zpl_label_inline_loads_and_bad_values_are_named() {
    let zpl = |label: &str| {
        format!(
            "{LINE_HEAD}[line.printer]\nkind = \"zpl\"\naddr = \"10.0.0.9:9100\"\nlabel = {label}\n{CAMERA_TCP}"
        )
    };
    let c = load(&zpl(
        "{ symbology = \"data_matrix\", module_size = 6, x = 50, y = 50, gs1 = true, text = { x = 50, y = 300, height = 30 } }",
    ))
    .unwrap();
    let Some(LabelSource::Inline(t)) = &c.lines[0].printer.label else {
        panic!("expected an inline label");
    };
    assert!(t.gs1 && t.text.is_some());
    assert!(matches!(
        c.line_devices(0).unwrap().printer,
        PrinterDevice::Zpl { .. }
    ));

    let (file, _, msg) = load_err(&zpl(
        "{ symbology = \"data_matrix\", module_size = 6, x = 50, y = 50, colour = 1 }",
    ));
    assert!(
        msg.contains(&format!(
            "{file}: key line[0].printer.label.colour: unknown key"
        )),
        "{msg}"
    );
    let (file, _, msg) = load_err(&zpl(
        "{ symbology = \"qr\", module_size = 60, x = 0, y = 0 }",
    ));
    assert!(
        msg.contains(&format!(
            "{file}: key line[0].printer.label: label template: module_size 60"
        )),
        "{msg}"
    );
}

// ---------------------------------------------------------------------------
// environment overrides (figment::Jail serializes these tests)

#[test]
#[allow(clippy::result_large_err)] // figment::Jail's closure returns figment::Result
fn env_override_is_applied() {
    figment::Jail::expect_with(|jail| {
        jail.create_file("serialine.toml", MINIMAL)?;
        jail.set_env("SERIALINE_MQTT__PORT", 1884);
        jail.set_env("SERIALINE_STORE__COMMIT", "per-transition");
        jail.set_env("SERIALINE_CONFIG", "/ignored/by/the/loader.toml");

        let c = Config::load(Path::new("serialine.toml")).unwrap();
        assert_eq!(c.mqtt.port, 1884);
        assert_eq!(c.store.commit, CommitMode::PerTransition);
        assert_eq!(
            c.env_overrides(),
            ["SERIALINE_MQTT__PORT", "SERIALINE_STORE__COMMIT"]
        );

        let c = Config::load_with_env(Path::new("serialine.toml"), false).unwrap();
        assert_eq!(c.mqtt.port, 1883, "env disabled");
        assert!(c.env_overrides().is_empty());
        Ok(())
    });
}

#[test]
#[allow(clippy::result_large_err)] // figment::Jail's closure returns figment::Result
fn env_errors_name_the_variable() {
    figment::Jail::expect_with(|jail| {
        jail.create_file("serialine.toml", MINIMAL)?;
        let path = Path::new("serialine.toml");

        jail.set_env("SERIALINE_MQTT__PORT", "abc");
        let msg = Config::load(path).unwrap_err().to_string();
        assert_eq!(
            msg,
            "environment variable SERIALINE_MQTT__PORT: key mqtt.port: \
             invalid type: found string \"abc\", expected u16"
        );

        jail.set_env("SERIALINE_MQTT__PORT", 1884);
        jail.set_env("SERIALINE_MQTT__PROT", 1884);
        let msg = Config::load(path).unwrap_err().to_string();
        assert!(
            msg.starts_with("environment variable SERIALINE_MQTT__PROT: key mqtt.prot: "),
            "{msg}"
        );

        jail.clear_env();
        jail.set_env("SERIALINE_STORE__MAX_BATCH", 0);
        let msg = Config::load(path).unwrap_err().to_string();
        assert_eq!(
            msg,
            "environment variable SERIALINE_STORE__MAX_BATCH: key store.max_batch: \
             0 is out of range; expected 1..=65536"
        );
        Ok(())
    });
}

#[test]
#[allow(clippy::result_large_err)] // figment::Jail's closure returns figment::Result
fn env_relative_paths_resolve_against_the_working_directory() {
    figment::Jail::expect_with(|jail| {
        jail.create_dir("conf")?;
        jail.create_file("conf/serialine.toml", MINIMAL)?;
        jail.set_env("SERIALINE_DAEMON__STATE_DIR", "state");
        let c = Config::load(Path::new("conf/serialine.toml")).unwrap();
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(c.daemon.state_dir, cwd.join("state"));
        // The file's own relative path still resolves against its directory.
        let conf = fs::canonicalize("conf").unwrap();
        assert_eq!(c.lines[0].secret_file, conf.join("line-1.secret"));
        Ok(())
    });
}

// ---------------------------------------------------------------------------
// secrets

/// A config in a temp dir whose line secret is written with `content`/`mode`.
fn with_secret(content: &[u8], mode: u32) -> (TempDir, Config) {
    let (dir, path) = config_dir(KEYED);
    write_keys(&path);
    write_secret(&path.with_file_name("line-1.secret"), content, mode);
    let c = Config::load_with_env(&path, false).unwrap();
    (dir, c)
}

#[test]
fn private_secret_reads_without_warnings() {
    let (_dir, c) = with_secret(GOOD_SECRET, 0o600);
    let (secret, warnings) = c.line_secret(0).unwrap();
    assert_eq!(
        secret.expose(),
        &GOOD_SECRET[..32],
        "one trailing newline dropped"
    );
    assert!(warnings.is_empty(), "{warnings:?}");
    assert!(c.check_files().unwrap().is_empty());
}

#[test]
fn group_or_world_readable_secret_warns() {
    for mode in [0o644, 0o640, 0o604] {
        let (_dir, c) = with_secret(GOOD_SECRET, mode);
        let warnings = c.check_files().unwrap();
        assert_eq!(warnings.len(), 1, "{mode:o}: {warnings:?}");
        let w = warnings[0].to_string();
        assert!(w.contains("key line[0].secret_file"), "{w}");
        assert!(w.contains(&format!("mode {mode:04o}")), "{w}");
        assert!(w.contains("group or others"), "{w}");
    }
}

#[test]
fn short_secret_warns() {
    let (_dir, c) = with_secret(b"short", 0o600);
    let warnings = c.check_files().unwrap();
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].message.contains("only 5 bytes"), "{warnings:?}");
}

#[test]
fn missing_or_empty_secret_is_an_error_naming_file_and_key() {
    let (_dir, path) = config_dir(KEYED);
    write_keys(&path);
    let c = Config::load_with_env(&path, false).unwrap();
    let secret_path = path.with_file_name("line-1.secret");
    let err = c.check_files().unwrap_err();
    assert!(matches!(err, ConfigError::Files(_)));
    assert_eq!(
        err.to_string(),
        format!(
            "{}: key line[0].secret_file: secret file {} does not exist; expected a readable file",
            path.display(),
            secret_path.display()
        )
    );

    write_secret(&secret_path, b"\n", 0o600);
    let msg = c.line_secret(0).unwrap_err().to_string();
    assert!(msg.contains("key line[0].secret_file"), "{msg}");
    assert!(msg.contains("is empty"), "{msg}");
}

#[test]
fn check_files_reports_every_missing_file() {
    let (_dir, path) = config_dir(&format!(
        "{MINIMAL}\n[mqtt]\nusername = \"u\"\npassword_file = \"pw\"\n\
         [mqtt.tls]\nca_file = \"ca.pem\"\n"
    ));
    let c = Config::load_with_env(&path, false).unwrap();
    let err = c.check_files().unwrap_err();
    let keys: Vec<_> = err.issues().iter().filter_map(|i| i.key.clone()).collect();
    assert_eq!(
        keys,
        [
            "line[0].secret_file",
            "mqtt.password_file",
            "mqtt.tls.ca_file",
            "mqtt.command_key_file",
            "mqtt.ack_key_file"
        ]
    );
}

#[test]
fn secret_debug_is_redacted() {
    let (_dir, c) = with_secret(b"super-secret-value-0123456789", 0o600);
    let (secret, _) = c.line_secret(0).unwrap();
    assert_eq!(format!("{secret:?}"), "<redacted>");
    assert_eq!(format!("{:?}", Some(&secret)), "Some(<redacted>)");
}

// ---------------------------------------------------------------------------
// CLI

fn serialine(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_serialine"));
    cmd.args(args).env_clear();
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A valid config in a temp dir with its secret in place.
fn cli_config(secret_mode: u32) -> (TempDir, PathBuf) {
    let (dir, path) = config_dir(KEYED);
    write_keys(&path);
    write_secret(
        &path.with_file_name("line-1.secret"),
        GOOD_SECRET,
        secret_mode,
    );
    (dir, path)
}

#[test]
fn cli_check_config_ok() {
    let (_dir, path) = cli_config(0o600);
    let out = serialine(&["check-config", path.to_str().unwrap()], &[]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    let ledger = path.with_file_name("ledger");
    assert!(
        stdout.contains("config OK: site plant-x, 1 line (line-1)"),
        "{stdout}"
    );
    assert!(!stdout.contains(&ledger.display().to_string()));
    assert!(
        stdout.contains("store at /var/lib/serialine/ledger"),
        "{stdout}"
    );
    assert!(
        stdout.contains("mqtt 127.0.0.1:1883, commit mode group"),
        "{stdout}"
    );
    assert!(stderr.is_empty(), "{stderr}");
}

#[test]
fn cli_check_config_bad_key_exits_2_naming_file_and_key() {
    let (_dir, path) = cli_config(0o600);
    fs::write(&path, format!("{MINIMAL}\n[mqtt]\nhots = \"x\"\n")).unwrap();
    let out = serialine(&["check-config", path.to_str().unwrap()], &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.starts_with(&format!("error: {}: key mqtt.hots: ", path.display())),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(text(&out.stdout).is_empty());
}

#[test]
fn cli_check_config_of_shipped_example_reports_missing_secrets() {
    // The shipped example with its /etc/serialine files moved to a directory
    // that surely does not exist, its profiles beside it: the test runs (and
    // must fail on a broken check) on an installed system too, instead of
    // returning at once when /etc/serialine holds the real files.
    let dir = tempfile::tempdir().unwrap();
    let absent = dir.path().join("absent-etc");
    for entry in std::fs::read_dir(shipped("")).unwrap() {
        let from = entry.unwrap().path();
        if from.extension().is_some_and(|e| e == "toml") {
            std::fs::copy(&from, dir.path().join(from.file_name().unwrap())).unwrap();
        }
    }
    let example = dir.path().join("serialine.toml");
    let text_of = std::fs::read_to_string(shipped("serialine.toml")).unwrap();
    std::fs::write(
        &example,
        text_of.replace("/etc/serialine/", &format!("{}/", absent.display())),
    )
    .unwrap();
    let out = serialine(&["check-config", example.to_str().unwrap()], &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "key line[0].secret_file: secret file {}/line-1.secret does not exist",
            absent.display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("key line[1].secret_file"), "{stderr}");
}

#[test]
fn cli_check_config_applies_env_overrides_unless_told_not_to() {
    let (_dir, path) = cli_config(0o600);
    let file = path.to_str().unwrap();
    let env = [("SERIALINE_MQTT__PORT", "1884")];
    let out = serialine(&["check-config", file], &env);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout.contains("environment overrides: SERIALINE_MQTT__PORT"));
    assert!(stdout.contains("mqtt 127.0.0.1:1884"), "{stdout}");

    let out = serialine(&["check-config", "--no-env", file], &env);
    assert!(text(&out.stdout).contains("mqtt 127.0.0.1:1883"));

    // SERIALINE_CONFIG names the file.
    let out = serialine(&["check-config"], &[("SERIALINE_CONFIG", file)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn cli_check_config_prints_warnings() {
    let (_dir, path) = cli_config(0o644);
    let out = serialine(&["check-config", path.to_str().unwrap()], &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.starts_with("warning: "), "{stderr}");
    assert!(stderr.contains("mode 0644"), "{stderr}");
    assert!(text(&out.stdout).contains("config OK"));
}

#[test]
fn cli_run_with_bad_config_exits_2() {
    let (_dir, path) = cli_config(0o600);
    fs::write(&path, "[site]\nid = \"s\"\n").unwrap();
    let out = serialine(&["run", "--config", path.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}: key line: no lines configured",
            path.display()
        )),
        "{stderr}"
    );
}

#[test]
fn cli_run_with_missing_printer_profile_exits_2_naming_the_key() {
    let (_dir, path) = cli_config(0o600);
    let text_in = fs::read_to_string(&path).unwrap().replace(
        &format!(
            "{}/../../config/printer-cij-stx.toml",
            env!("CARGO_MANIFEST_DIR")
        ),
        "no-such-profile.toml",
    );
    fs::write(&path, text_in).unwrap();
    let out = serialine(&["run", "--config", path.to_str().unwrap()], &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let missing = path.with_file_name("no-such-profile.toml");
    assert!(
        stderr.contains(&format!(
            "{}: key line[0].printer.profile: printer profile file {} does not exist",
            path.display(),
            missing.display()
        )),
        "{stderr}"
    );
}

#[test]
fn cli_help_documents_the_subcommands() {
    let out = serialine(&["--help"], &[]);
    let help = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0));
    for want in ["check-config", "run", "SERIALINE_", "Exit status"] {
        assert!(help.contains(want), "{want} missing from:\n{help}");
    }
    let out = serialine(&["check-config", "--help"], &[]);
    let help = text(&out.stdout);
    assert!(help.contains("/etc/serialine/serialine.toml"), "{help}");
    assert!(help.contains("SERIALINE_CONFIG"), "{help}");
    assert!(help.contains("--no-env"), "{help}");
}

#[test]
fn the_command_key_is_64_hex_digits_and_a_bad_one_names_its_key() {
    let key_hex = "42".repeat(32);
    let (dir, path) = config_dir(&format!(
        "{MINIMAL}\n[mqtt]\ncommand_key_file = \"command.key\"\ncommand_max_skew_secs = 30\n"
    ));
    let key_path = dir.path().join("command.key");
    write_secret(&key_path, format!("{key_hex}\n").as_bytes(), 0o600);
    let c = Config::load_with_env(&path, false).unwrap();
    assert_eq!(c.mqtt.command_key_file.as_deref(), Some(&*key_path));
    assert_eq!(c.mqtt.command_max_skew_secs, 30);
    let (key, warnings) = c.command_key().unwrap().expect("a key");
    assert_eq!(key, [0x42; 32]);
    assert!(warnings.is_empty(), "{warnings:?}");

    write_secret(&key_path, b"not a key", 0o600);
    let err = c.command_key().unwrap_err();
    assert_eq!(
        err.issues()[0].key.as_deref(),
        Some("mqtt.command_key_file"),
        "{err}"
    );
    assert!(err.to_string().contains("64 hex digits"), "{err}");
    let keys: Vec<_> = c
        .check_files()
        .unwrap_err()
        .issues()
        .iter()
        .filter_map(|i| i.key.clone())
        .collect();
    assert!(
        keys.contains(&"mqtt.command_key_file".to_string()),
        "{keys:?}"
    );

    let (_, _, msg) = load_err(&format!("{MINIMAL}\n[mqtt]\ncommand_max_skew_secs = 0\n"));
    assert!(msg.contains("mqtt.command_max_skew_secs"), "{msg}");
}

// ---------------------------------------------------------------------------
// issue 13 §5.3: the client id length counts the "-<line>" suffix

#[test]
fn client_id_length_counts_the_line_suffix() {
    // 256 bytes after {site} substitution: fits alone, not with "-line-1".
    let id = "x".repeat(256);
    let (path, err, msg) = load_err(&format!("{MINIMAL}\n[mqtt]\nclient_id = \"{id}\"\n"));
    assert_eq!(err.issues().len(), 1, "{msg}");
    assert!(
        msg.contains(&format!(
            "{path}: key mqtt.client_id: line \"line-1\" connects as"
        )),
        "{msg}"
    );
    assert!(msg.contains("263 bytes; expected at most 256"), "{msg}");
    // 249 + "-line-1" = 256: accepted, and that is the id the daemon uses.
    let id = "x".repeat(249);
    let c = load(&format!("{MINIMAL}\n[mqtt]\nclient_id = \"{id}\"\n")).unwrap();
    c.validate().unwrap();
    assert_eq!(c.mqtt_client_id_for_line("line-1"), format!("{id}-line-1"));
}

// ---------------------------------------------------------------------------
// issue 13 §6.2: check-config loads the TLS files

struct TestPki {
    _dir: TempDir,
    config: PathBuf,
}

fn pem_ca(name: &str) -> (String, rcgen::Issuer<'static, rcgen::KeyPair>) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), Issuer::new(params, key))
}

/// (certificate, key) signed by `issuer`, valid over `years` if given.
fn pem_leaf(
    issuer: &rcgen::Issuer<'static, rcgen::KeyPair>,
    years: Option<(i32, i32)>,
) -> (String, String) {
    use rcgen::{CertificateParams, DnType, KeyPair};
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "serialine-plant-x");
    if let Some((from, to)) = years {
        params.not_before = rcgen::date_time_ymd(from, 1, 1);
        params.not_after = rcgen::date_time_ymd(to, 1, 1);
    }
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// A config with a line secret and `[mqtt.tls]` naming ca.pem, client.pem,
/// client.key, written with the given contents.
fn tls_config(ca: &str, cert: &str, key: &str) -> TestPki {
    let (dir, path) = config_dir(&format!(
        "{KEYED}\n[mqtt.tls]\nca_file = \"ca.pem\"\n\
         client_cert_file = \"client.pem\"\nclient_key_file = \"client.key\"\n"
    ));
    write_secret(&path.with_file_name("line-1.secret"), GOOD_SECRET, 0o600);
    write_keys(&path);
    fs::write(path.with_file_name("ca.pem"), ca).unwrap();
    fs::write(path.with_file_name("client.pem"), cert).unwrap();
    write_secret(&path.with_file_name("client.key"), key.as_bytes(), 0o600);
    TestPki {
        _dir: dir,
        config: path,
    }
}

/// The file problems as "key: message".
fn tls_issues(t: &TestPki) -> Vec<(String, String)> {
    let c = Config::load_with_env(&t.config, false).unwrap();
    match c.check_files() {
        Ok(w) => {
            assert!(w.is_empty(), "{w:?}");
            vec![]
        }
        Err(e) => e
            .issues()
            .iter()
            .map(|i| (i.key.clone().unwrap_or_default(), i.message.clone()))
            .collect(),
    }
}

#[test]
fn check_files_accepts_a_matching_tls_certificate_and_key() {
    let (ca, issuer) = pem_ca("plant CA");
    let (cert, key) = pem_leaf(&issuer, None);
    assert_eq!(tls_issues(&tls_config(&ca, &cert, &key)), vec![]);
}

#[test]
fn check_files_names_a_key_file_holding_a_certificate() {
    let (ca, issuer) = pem_ca("plant CA");
    let (cert, _) = pem_leaf(&issuer, None);
    let t = tls_config(&ca, &cert, &cert);
    let issues = tls_issues(&t);
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!(issues[0].0, "mqtt.tls.client_key_file");
    let key_path = t.config.with_file_name("client.key");
    assert!(
        issues[0].1.contains(&format!(
            "{}: holds a certificate, not a private key",
            key_path.display()
        )),
        "{issues:?}"
    );
}

#[test]
fn check_files_names_a_key_that_is_not_the_certificates() {
    let (ca, issuer) = pem_ca("plant CA");
    let (cert, _) = pem_leaf(&issuer, None);
    let (_, other_key) = pem_leaf(&issuer, None);
    let issues = tls_issues(&tls_config(&ca, &cert, &other_key));
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!(issues[0].0, "mqtt.tls.client_key_file");
    assert!(
        issues[0]
            .1
            .contains("does not match the public key of the certificate"),
        "{issues:?}"
    );
}

#[test]
fn check_files_names_expired_and_not_yet_valid_certificates() {
    let (ca, issuer) = pem_ca("plant CA");
    let (expired, key) = pem_leaf(&issuer, Some((2020, 2021)));
    let issues = tls_issues(&tls_config(&ca, &expired, &key));
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!(issues[0].0, "mqtt.tls.client_cert_file");
    assert!(issues[0].1.contains("expired on"), "{issues:?}");

    let (future, key) = pem_leaf(&issuer, Some((2100, 2110)));
    let issues = tls_issues(&tls_config(&ca, &future, &key));
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!(issues[0].0, "mqtt.tls.client_cert_file");
    assert!(issues[0].1.contains("not valid yet"), "{issues:?}");
}

#[test]
fn check_files_names_a_ca_file_without_a_certificate() {
    let (_, issuer) = pem_ca("plant CA");
    let (cert, key) = pem_leaf(&issuer, None);
    let issues = tls_issues(&tls_config("not a certificate\n", &cert, &key));
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!(issues[0].0, "mqtt.tls.ca_file");
    assert!(
        issues[0].1.contains("holds no PEM certificate"),
        "{issues:?}"
    );
}

#[test]
fn cli_check_config_fails_on_a_key_file_holding_a_certificate() {
    let (ca, issuer) = pem_ca("plant CA");
    let (cert, _) = pem_leaf(&issuer, None);
    let t = tls_config(&ca, &cert, &cert);
    let out = serialine(&["check-config", t.config.to_str().unwrap()], &[]);
    let stderr = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}: key mqtt.tls.client_key_file: ",
            t.config.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("holds a certificate, not a private key"),
        "{stderr}"
    );
}

/// Issue 13: production needs the command and ack keys. Without them
/// check-config (and run) exit 2 naming file and key; the explicit
/// allowances let it start, with a warning each (at every check and start).
#[test]
fn cli_check_config_requires_the_keys_or_an_explicit_allowance() {
    let (_dir, path) = config_dir(MINIMAL);
    write_secret(&path.with_file_name("line-1.secret"), GOOD_SECRET, 0o600);
    let file = path.to_str().unwrap();
    let out = serialine(&["check-config", file], &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for key in ["mqtt.command_key_file", "mqtt.ack_key_file"] {
        assert!(
            stderr.contains(&format!("error: {}: key {key}: not set", path.display())),
            "{stderr}"
        );
    }
    let out = serialine(&["run", "--config", file], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("key mqtt.command_key_file"));

    fs::write(
        &path,
        format!("{MINIMAL}\n[mqtt]\nallow_unsigned_commands = true\nallow_unsigned_acks = true\n"),
    )
    .unwrap();
    let out = serialine(&["check-config", file], &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("warning: "), "{stderr}");
    assert!(
        stderr.contains("key mqtt.allow_unsigned_commands"),
        "{stderr}"
    );
    assert!(stderr.contains("key mqtt.allow_unsigned_acks"), "{stderr}");

    // A key file that is not a key names its key.
    fs::write(&path, KEYED).unwrap();
    write_keys(&path);
    fs::write(path.with_file_name("ack.key"), "not a key").unwrap();
    let out = serialine(&["check-config", file], &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("key mqtt.ack_key_file") && stderr.contains("64 hex digits"),
        "{stderr}"
    );
}

#[test]
fn command_freshness_keys_are_checked() {
    let c = load(MINIMAL).unwrap();
    assert_eq!(c.mqtt.command_max_age_secs, 30);
    assert_eq!(c.mqtt.command_max_skew_secs, 5);
    assert!(!c.mqtt.allow_unsigned_commands && !c.mqtt.allow_unsigned_acks);
    let (_, _, msg) = load_err(&format!("{MINIMAL}\n[mqtt]\ncommand_max_age_secs = 0\n"));
    assert!(msg.contains("mqtt.command_max_age_secs"), "{msg}");
    let c = load(&format!("{MINIMAL}\n[mqtt]\ncommand_max_age_secs = 10\n")).unwrap();
    assert_eq!(c.mqtt.command_max_age_secs, 10);
}

/// Issue 13 §2: `store.fence_dir` defaults beside the ledger directory (not
/// in it), resolves relative to the file, and may not be inside the ledger.
#[test]
fn fence_dir_defaults_outside_the_ledger_and_is_refused_inside_it() {
    let c = load(&format!("[daemon]\nstate_dir = \"/srv/sl\"\n{MINIMAL}")).unwrap();
    assert_eq!(
        c.line_fence_path("line-1"),
        PathBuf::from("/srv/sl/fence/line-1.fence")
    );
    assert!(!c
        .line_fence_path("line-1")
        .starts_with(c.line_ledger_path("line-1")));

    let (_dir, path) = config_dir(&format!(
        "[daemon]\nstate_dir = \"/srv/sl\"\n[store]\nfence_dir = \"fences\"\n{MINIMAL}"
    ));
    let c = Config::load_with_env(&path, false).unwrap();
    assert_eq!(
        c.line_fence_path("line-1"),
        path.parent().unwrap().join("fences/line-1.fence")
    );

    let (file, _, msg) = load_err(&format!(
        "[daemon]\nstate_dir = \"/srv/sl\"\n[store]\nfence_dir = \"/srv/sl/ledger/f\"\n{MINIMAL}"
    ));
    assert!(
        msg.contains(&format!("{file}: key store.fence_dir: ")),
        "{msg}"
    );
    assert!(msg.contains("inside the ledger directory"), "{msg}");
}

#[test]
fn printer_gs1_mode_is_checked_against_the_job() {
    let shipped_profile = fs::read_to_string(shipped("printer-cij-stx.toml")).unwrap();
    let profile_without_fnc1: String = shipped_profile
        .lines()
        .filter(|l| !l.starts_with("fnc1"))
        .map(|l| format!("{l}\n"))
        .collect();
    let gs1 = r#"{ kind = "gs1-data-matrix" }"#;
    let dl = r#"{ kind = "digital-link", resolver = "id.example.com" }"#;
    // (errors, warnings) of check_files for a profile's fnc1 lines and a job.
    let check = |fnc1: &str, template: &str| -> (Vec<String>, Vec<String>) {
        let (_dir, path) = config_dir(&format!(
            r#"
[site]
id = "plant-x"

[[line]]
id = "line-1"
secret_file = "line-1.secret"
printer = {{ kind = "framed", profile = "p.toml", transport = {{ kind = "tcp", addr = "127.0.0.1:9100" }} }}
camera = {{ transport = {{ kind = "tcp", addr = "127.0.0.1:2001" }} }}

[line.job]
gtin = "09506000134352"
lot = "L1"
expiry = "271231"
quantity = 10
template = {template}

[mqtt]
command_key_file = "command.key"
ack_key_file = "ack.key"
"#
        ));
        write_keys(&path);
        write_secret(&path.with_file_name("line-1.secret"), GOOD_SECRET, 0o600);
        fs::write(
            path.with_file_name("p.toml"),
            format!("{profile_without_fnc1}{fnc1}\n"),
        )
        .unwrap();
        let c = Config::load_with_env(&path, false).unwrap();
        match c.check_files() {
            Ok(w) => (vec![], w.iter().map(ToString::to_string).collect()),
            Err(e) => (e.issues().iter().map(ToString::to_string).collect(), vec![]),
        }
    };
    let ok = (vec![], vec![]);
    assert_eq!(check("fnc1 = \"printer\"", gs1), ok);
    assert_eq!(check("fnc1 = \"escape\"\nfnc1_escape = \"~1\"", gs1), ok);
    assert_eq!(check("fnc1 = \"none\"", dl), ok);
    assert_eq!(check("", dl), ok);

    let (errors, warnings) = check("", gs1);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("key line[0].printer.profile: "),
        "{warnings:?}"
    );
    assert!(warnings[0].contains("fnc1 is not set"), "{warnings:?}");

    let (errors, _) = check("fnc1 = \"none\"", gs1);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("key line[0].printer.profile: "),
        "{errors:?}"
    );
    assert!(errors[0].contains("plain Data Matrix (]d1)"), "{errors:?}");

    for fnc1 in [
        "fnc1 = \"printer\"",
        "fnc1 = \"escape\"\nfnc1_escape = \"~1\"",
    ] {
        let (errors, _) = check(fnc1, dl);
        assert_eq!(errors.len(), 1, "{fnc1}: {errors:?}");
        assert!(errors[0].contains("not a GS1 element string"), "{errors:?}");
    }

    let (errors, _) = check("fnc1 = \"escape\"", gs1);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("needs fnc1_escape"), "{errors:?}");
}

#[test]
fn laser_and_label_printers_gs1_mode_against_the_job() {
    use serialine::config::Gs1ModeIssue;
    let gs1 = Template::Gs1DataMatrix;
    let dl = Template::DigitalLink {
        resolver: "id.example.com".into(),
    };
    let map_text = fs::read_to_string(shipped("laser-modbus.toml")).unwrap();
    let laser = |fnc1: &str| PrinterDevice::Laser {
        addr: "127.0.0.1:502".into(),
        map: toml::from_str(&map_text.replace("fnc1 = \"none\"", fnc1)).unwrap(),
    };
    // The shipped map marks Digital Links (config/serialine.toml's laser line).
    assert_eq!(
        laser("fnc1 = \"none\"").gs1_mode_issue(&dl, "the job"),
        None
    );
    assert!(matches!(
        laser("fnc1 = \"none\"").gs1_mode_issue(&gs1, "the job"),
        Some(Gs1ModeIssue::Contradiction(m)) if m.contains("the job is a GS1 element string")
    ));
    assert_eq!(
        laser("fnc1 = \"printer\"").gs1_mode_issue(&gs1, "the job"),
        None
    );
    assert!(matches!(
        laser("").gs1_mode_issue(&gs1, "the job"),
        Some(Gs1ModeIssue::Unset(_))
    ));
    let label = |text: &str| PrinterDevice::Zpl {
        addr: "127.0.0.1:9100".into(),
        label: toml::from_str(&format!("module_size = 4\nx = 0\ny = 0\n{text}")).unwrap(),
    };
    let dm_gs1 = label("symbology = \"data_matrix\"\ngs1 = true");
    let dm_plain = label("symbology = \"data_matrix\"");
    let qr = label("symbology = \"qr\"");
    assert_eq!(dm_gs1.gs1_mode_issue(&gs1, "j"), None);
    assert_eq!(dm_plain.gs1_mode_issue(&dl, "j"), None);
    assert_eq!(qr.gs1_mode_issue(&dl, "j"), None);
    for (p, t) in [(&dm_plain, &gs1), (&qr, &gs1), (&dm_gs1, &dl)] {
        assert!(
            matches!(
                p.gs1_mode_issue(t, "j"),
                Some(Gs1ModeIssue::Contradiction(_))
            ),
            "{p:?} {t:?}"
        );
    }
}
