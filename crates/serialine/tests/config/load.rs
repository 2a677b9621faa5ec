//! Loading: defaults, relative paths, environment overrides, and parse
//! errors (syntax, unknown and removed keys, wrong types, missing keys), each
//! naming the file or variable it came from and the key.

use crate::{
    assert_names, keys, load, load_err, minimal_with, refused, set, with_printer, DEVICES,
    LINE_HEAD, MINIMAL,
};
use serialine::config::{CommitMode, Config, ConfigError, Grade, LogFormat};
use serialine_core::Template;
use serialine_devices::camera::CameraProfile;
use std::fs;
use std::path::Path;

#[test]
fn minimal_config_gets_documented_defaults() {
    let c = load(MINIMAL).unwrap();
    assert_eq!(c.daemon.state_dir, Path::new("/var/lib/serialine"));
    assert_eq!(c.daemon.log_format, LogFormat::Plain);
    assert_eq!(c.daemon.log_level, "info");
    assert!(c.daemon.watchdog);
    assert_eq!(c.store.commit, CommitMode::Group);
    assert_eq!(c.store.max_batch, 4096);
    assert_eq!(c.store.cache_mb, 32);
    assert_eq!(c.mqtt.host, "127.0.0.1");
    assert_eq!(c.mqtt.port, 1883);
    assert_eq!(c.mqtt_client_id(), "serialine-plant-x");
    assert_eq!(c.mqtt.keep_alive_secs, 30);
    assert!(!c.mqtt.clean_session);
    assert!(c.mqtt.username.is_none() && c.mqtt.password_file.is_none());
    assert!(c.mqtt.tls.is_none());
    assert_eq!(c.mqtt.command_max_age_secs, 30);
    assert_eq!(c.mqtt.command_max_skew_secs, 5);
    assert!(!c.mqtt.allow_unsigned_commands && !c.mqtt.allow_unsigned_acks);
    let line = &c.lines[0];
    assert_eq!(line.min_grade, Grade::C);
    assert_eq!(line.buffer.low_water_serials, 20_000);
    assert_eq!(line.buffer.low_water_minutes, 60);
    assert_eq!(line.buffer.high_water_serials, 200_000);
    assert!(line.job.is_none());
    assert_eq!(line.camera.profile(), CameraProfile::default());
    assert_eq!(line.pipeline.camera_window, 32);
    assert_eq!(line.pipeline.read_deadline_ms, 2000);
    assert_eq!(line.pipeline.starve_timeout_secs, 600);
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

/// A `[line.job]` with the given lot, expiry and template (inline table).
fn job(lot: &str, expiry: &str, template: &str) -> String {
    format!(
        "{MINIMAL}\n[line.job]\ngtin = \"09506000134352\"\nlot = \"{lot}\"\n\
         expiry = \"{expiry}\"\nquantity = 1\ntemplate = {template}\n"
    )
}

/// Each config is refused at parse time with one problem, naming the file,
/// the key, and what was expected.
#[test]
fn parse_errors_name_file_key_and_expectation() {
    let line_without_devices = "[[line]]\nid = \"l\"\nsecret_file = \"s\"\n";
    let cases: Vec<(String, &str, &[&str])> = vec![
        // Unknown keys: misspelt, in a nested table, a whole section.
        (
            minimal_with("[mqtt]\nhots = \"broker\""),
            "mqtt.hots",
            &["unknown key `hots`", "host, port"],
        ),
        (
            minimal_with("[sotre]\nmax_batch = 1"),
            "sotre",
            &["expected one of: daemon, site, store, retention, mqtt, line"],
        ),
        (
            minimal_with("[line.buffer]\nlow_water_serial = 5"),
            "line[0].buffer.low_water_serial",
            &["unknown key"],
        ),
        (
            format!("{LINE_HEAD}{DEVICES}").replace("camera =", "kamera ="),
            "line[0].kamera",
            &["unknown key"],
        ),
        (
            with_printer(
                "kind = \"framed\"\nprofile = \"p.toml\"\n\
                 transport = { kind = \"serial\", pth = \"/dev/ttyS0\" }",
            ),
            "line[0].printer.transport.pth",
            &["unknown key"],
        ),
        (
            with_printer(
                "kind = \"zpl\"\naddr = \"10.0.0.9:9100\"\nlabel = \
                 { symbology = \"data_matrix\", module_size = 6, x = 50, y = 50, colour = 1 }",
            ),
            "line[0].printer.label.colour",
            &["unknown key"],
        ),
        // Wrong types and values.
        (
            minimal_with("[daemon]\nwatchdog = \"yes\""),
            "daemon.watchdog",
            &["invalid type", "expected a boolean"],
        ),
        (
            minimal_with("[store]\ncommit = \"batch\""),
            "store.commit",
            &["invalid value \"batch\"", "\"group\", \"per-transition\""],
        ),
        (
            with_printer("kind = \"inkjet\""),
            "line[0].printer.kind",
            &["invalid value \"inkjet\"; expected one of: \"framed\", \"laser\", \"zpl\""],
        ),
        (
            with_printer(
                "kind = \"framed\"\nprofile = \"p.toml\"\n\
                 transport = { kind = \"usb\", path = \"/dev/ttyS0\" }",
            ),
            "line[0].printer.transport.kind",
            &["invalid value \"usb\"", "\"serial\", \"tcp\""],
        ),
        // The job's GS1 values.
        (
            minimal_with(
                "[line.job]\ngtin = \"09506000134353\"\nlot = \"L1\"\nexpiry = \"271231\"\n\
                 quantity = 10\ntemplate = { kind = \"gs1-data-matrix\" }",
            ),
            "line[0].job.gtin",
            &["check digit 3, expected 2"],
        ),
        (
            job("A B", "271231", r#"{ kind = "plain-text" }"#),
            "line[0].job.lot",
            &[],
        ),
        (
            job("L1", "271301", r#"{ kind = "plain-text" }"#),
            "line[0].job.expiry",
            &["expected YYMMDD"],
        ),
        (
            job("L1", "271231", r#"{ kind = "qr" }"#),
            "line[0].job.template.kind",
            &["\"gs1-data-matrix\", \"digital-link\", \"plain-text\""],
        ),
        // Unknown keys inside the template are errors too, whatever the kind.
        (
            job(
                "L1",
                "271231",
                r#"{ kind = "digital-link", resolver = "id.example.com", resolvr = "x" }"#,
            ),
            "line[0].job.template.resolvr",
            &["resolvr"],
        ),
        (
            job(
                "L1",
                "271231",
                r#"{ kind = "gs1-data-matrix", resolvr = "x" }"#,
            ),
            "line[0].job.template.resolvr",
            &["resolvr"],
        ),
        // Missing keys and tables.
        (format!("{line_without_devices}{DEVICES}"), "site.id", &[]),
        (
            format!("[site]\n{line_without_devices}{DEVICES}"),
            "site.id",
            &["missing"],
        ),
        (
            "[[line]]\nid = \"l\"\n[site]\nid = \"s\"\n".to_string(),
            "line[0].secret_file",
            &["missing"],
        ),
        (
            format!("{LINE_HEAD}{}", crate::CAMERA_TCP),
            "line[0].printer",
            &["missing; this key is required"],
        ),
    ];
    for (text, key, says) in cases {
        let err = refused(&text, key, says);
        assert!(matches!(err, ConfigError::Parse(_)), "{key}: {err:?}");
    }
    // min_grade: letters A-D, F or their numbers.
    for bad in ["\"E\"", "5", "-1", "\"AA\""] {
        refused(
            &format!("{MINIMAL}min_grade = {bad}\n"),
            "line[0].min_grade",
            &["A, B, C, D or F, or a number 0..=4"],
        );
    }
}

#[test]
fn wrong_type_message_in_full() {
    let (file, _, msg) = load_err(&minimal_with("[mqtt]\nport = \"abc\""));
    assert_eq!(
        msg,
        format!("{file}: key mqtt.port: invalid type: found string \"abc\", expected u16")
    );
}

#[test]
fn a_digital_link_job_loads() {
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
    let keys = keys(&err);
    for want in [
        "extra",
        "daemon.log_format",
        "site.idd",
        "mqtt.port",
        "line[0].min_grade",
    ] {
        assert!(keys.contains(want), "{want} not in {keys:?}");
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

// ---------------------------------------------------------------------------
// removed keys (issue 17: every key either works or goes)

/// `store.max_batch_delay_ms` was parsed but never used. A plant's file that
/// still sets it is refused, and the message says the key was removed and
/// why instead of calling it unknown or misspelt.
#[test]
fn a_removed_key_is_refused_saying_it_was_removed_and_why() {
    for value in ["0", "5"] {
        let err = refused(
            &minimal_with(&format!(
                "[store]\nmax_batch = 64\nmax_batch_delay_ms = {value}"
            )),
            "store.max_batch_delay_ms",
            &[
                "removed",
                "because it was parsed but never used",
                "remove it",
            ],
        );
        assert!(matches!(err, ConfigError::Parse(_)), "{err:?}");
        let msg = err.to_string();
        assert!(!msg.contains("misspelt"), "{msg}");
    }
    // Problems elsewhere are still reported with it.
    let (file, err, _) = load_err(&minimal_with(
        "[store]\nmax_batch_delay_ms = 0\n[mqtt]\nport = \"abc\"",
    ));
    assert_eq!(keys(&err), set(&["store.max_batch_delay_ms", "mqtt.port"]));
    assert_names(&err, &file, "store.max_batch_delay_ms", &["removed"]);
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

        // A removed key set from the environment names the variable.
        jail.clear_env();
        jail.set_env("SERIALINE_STORE__MAX_BATCH_DELAY_MS", 0);
        let msg = Config::load(path).unwrap_err().to_string();
        assert!(
            msg.starts_with(
                "environment variable SERIALINE_STORE__MAX_BATCH_DELAY_MS: \
                 key store.max_batch_delay_ms: this key was removed"
            ),
            "{msg}"
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
