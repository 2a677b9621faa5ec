//! Reading what the config names: device files (printer profile, laser
//! map, label template), line secrets, the command key; each problem named
//! with the file and the key that names it.

use crate::{
    config_dir, keys, load, shipped, with_printer, write_keys, write_secret, GOOD_SECRET, KEYED,
    MINIMAL,
};
use serialine::config::{Config, ConfigError, LabelSource, MarkerSpec};
use serialine_devices::transport::TransportSettings;
use std::fs;
use tempfile::TempDir;

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
    match c.line_devices(0).unwrap().marker {
        MarkerSpec::Framed { transport, profile } => {
            assert_eq!(profile.buffer_depth, 8);
            assert!(matches!(transport, TransportSettings::Tcp(_)));
        }
        other => panic!("expected a framed printer, got {other:?}"),
    }
    match c.line_devices(1).unwrap().marker {
        MarkerSpec::Laser { addr, map } => {
            assert_eq!(addr, "127.0.0.1:502");
            assert_eq!(map.code_start, 100);
        }
        other => panic!("expected a laser, got {other:?}"),
    }
    match c.line_devices(2).unwrap().marker {
        MarkerSpec::Zpl { label, .. } => assert_eq!(label.module_size, 4),
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
fn zpl_label_inline_loads() {
    let c = load(&with_printer(
        "kind = \"zpl\"\naddr = \"10.0.0.9:9100\"\nlabel = { symbology = \"data_matrix\", \
         module_size = 6, x = 50, y = 50, gs1 = true, text = { x = 50, y = 300, height = 30 } }",
    ))
    .unwrap();
    let Some(LabelSource::Inline(t)) = &c.lines[0].printer.label else {
        panic!("expected an inline label");
    };
    assert!(t.gs1 && t.text.is_some());
    assert!(matches!(
        c.line_devices(0).unwrap().marker,
        MarkerSpec::Zpl { .. }
    ));
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
    let keys = keys(&c.check_files().unwrap_err());
    assert!(keys.contains("mqtt.command_key_file"), "{keys:?}");
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
    use serialine_core::Template;
    let gs1 = Template::Gs1DataMatrix;
    let dl = Template::DigitalLink {
        resolver: "id.example.com".into(),
    };
    let map_text = fs::read_to_string(shipped("laser-modbus.toml")).unwrap();
    let laser = |fnc1: &str| MarkerSpec::Laser {
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
    let label = |text: &str| MarkerSpec::Zpl {
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
