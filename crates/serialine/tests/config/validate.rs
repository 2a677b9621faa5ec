//! Validation: values that parse but are out of range or inconsistent, each
//! named with its file and key, every problem reported at once.

use crate::{
    assert_names, config_dir, keys, load, load_err, minimal_with, refused, set, with_printer,
    DEVICES, LINE_HEAD, MINIMAL,
};
use serialine::config::{Config, ConfigError};
use std::path::PathBuf;

/// Each config parses but is refused by validation with one problem, naming
/// the file, the key, and what was expected.
#[test]
fn invalid_values_name_file_key_and_expectation() {
    let cases: Vec<(String, &str, &[&str])> = vec![
        (
            format!("{MINIMAL}\n[[line]]\nid = \"line-1\"\nsecret_file = \"other.secret\"\n{DEVICES}"),
            "line[1].id",
            &["duplicate line id \"line-1\""],
        ),
        (
            minimal_with("[line.buffer]\nlow_water_serials = 20000\nhigh_water_serials = 100"),
            "line[0].buffer.high_water_serials",
            &["expected high_water_serials > low_water_serials"],
        ),
        (
            minimal_with("[line.epcis]\nread_point = \"https://id.gs1.org/414/9506000134353/254/line-1\""),
            "line[0].epcis.read_point",
            &["GLN 9506000134353 has a wrong check digit"],
        ),
        (
            minimal_with("[line.epcis]\nbiz_location = \"urn:epc:id:sgln:950600.013435.0\""),
            "line[0].epcis.biz_location",
            &["expected https://id.gs1.org/414/"],
        ),
        (
            minimal_with("[line.buffer]\nlow_water_serials = 20000\nhigh_water_serials = 20000"),
            "line[0].buffer.high_water_serials",
            &["expected high_water_serials > low_water_serials"],
        ),
        (
            with_printer("kind = \"laser\"\naddr = \"no-port\"\nmap = \"m.toml\""),
            "line[0].printer.addr",
            &["expected host:port"],
        ),
        (
            format!("{LINE_HEAD}{DEVICES}").replace("127.0.0.1:2001", "camera-without-port"),
            "line[0].camera.transport.addr",
            &[],
        ),
        (
            with_printer(
                "kind = \"zpl\"\naddr = \"10.0.0.9:9100\"\nlabel = \
                 { symbology = \"qr\", module_size = 60, x = 0, y = 0 }",
            ),
            "line[0].printer.label",
            &["label template: module_size 60"],
        ),
        (
            minimal_with("[mqtt]\ncommand_max_skew_secs = 0"),
            "mqtt.command_max_skew_secs",
            &[],
        ),
        (
            minimal_with("[mqtt]\ncommand_max_age_secs = 0"),
            "mqtt.command_max_age_secs",
            &[],
        ),
        // Issue 13 §5.3: the client id length counts the "-<line>" suffix;
        // 256 bytes after {site} substitution fit alone, not with "-line-1".
        (
            minimal_with(&format!("[mqtt]\nclient_id = \"{}\"", "x".repeat(256))),
            "mqtt.client_id",
            &[
                "line \"line-1\" connects as",
                "263 bytes; expected at most 256",
            ],
        ),
        // Issue 13 §2: the fence may not be inside the ledger directory.
        (
            format!(
                "[daemon]\nstate_dir = \"/srv/sl\"\n[store]\nfence_dir = \"/srv/sl/ledger/f\"\n{MINIMAL}"
            ),
            "store.fence_dir",
            &["inside the ledger directory"],
        ),
        // Issue 16: the ledger's page cache is bounded, within reason.
        (
            minimal_with("[store]\ncache_mb = 2"),
            "store.cache_mb",
            &["2 is out of range; expected 4..=4096 (MiB)"],
        ),
        // Issue 14: a packaging level names what it lacks, with its key.
        (
            minimal_with(&aggregation_level("mode = \"scan\"", "gs1 = true", 12)),
            "line[0].aggregation[0].camera",
            &["missing; required when mode = \"scan\""],
        ),
        (
            minimal_with(&aggregation_level("mode = \"count\"", "gs1 = false", 12)),
            "line[0].aggregation[0].label.gs1",
            &["expected gs1 = true"],
        ),
        (
            minimal_with(&aggregation_level("mode = \"count\"", "gs1 = true", 0)),
            "line[0].aggregation[0].per_parent",
            &["0 is out of range; expected 1..=1000"],
        ),
    ];
    for (text, key, says) in cases {
        let err = refused(&text, key, says);
        assert!(matches!(err, ConfigError::Invalid(_)), "{key}: {err:?}");
    }
}

#[test]
fn no_lines_is_named_in_full() {
    let (file, err, msg) = load_err("[site]\nid = \"s\"\n");
    assert!(matches!(err, ConfigError::Invalid(_)));
    assert_eq!(
        msg,
        format!("{file}: key line: no lines configured; expected at least one [[line]] table")
    );
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
    assert_eq!(
        keys(&err),
        set(&[
            "daemon.log_level",
            "site.id",
            "store.max_batch",
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
        ])
    );
    let msg = err.to_string();
    assert!(msg.contains("expected 1..=65536"), "{msg}");
    assert!(msg.contains("expected 5..=3600 seconds"), "{msg}");
    assert!(msg.contains("expected 1 to 32 characters"), "{msg}");
}

#[test]
fn printer_keys_must_match_its_kind() {
    let (file, err, _) = load_err(&with_printer("kind = \"framed\"\naddr = \"10.0.0.1:502\""));
    assert!(matches!(err, ConfigError::Invalid(_)));
    let msgs = err.messages();
    for want in [
        format!("{file}: key line[0].printer.transport: missing; required when printer.kind = \"framed\""),
        format!("{file}: key line[0].printer.profile: missing; required when printer.kind = \"framed\""),
        format!("{file}: key line[0].printer.addr: not used when printer.kind = \"framed\"; expected only transport and profile"),
    ] {
        assert!(msgs.contains(&want), "{want:?} not in {msgs:#?}");
    }
}

#[test]
fn camera_and_pipeline_ranges() {
    let (file, err, _) = load_err(&format!(
        "{LINE_HEAD}{DEVICES}[line.pipeline]\ncamera_window = 0\nread_deadline_ms = 0\nstarve_timeout_secs = 0\n"
    ));
    assert_eq!(
        keys(&err),
        set(&[
            "line[0].pipeline.camera_window",
            "line[0].pipeline.read_deadline_ms",
            "line[0].pipeline.starve_timeout_secs",
        ])
    );
    assert!(err.issues().iter().all(|i| i.origin == file));

    let bad_camera = format!("{LINE_HEAD}{DEVICES}").replace(
        "camera = { transport",
        "camera = { template = \"{content}{grade}\", deadline_ms = 0, no_read = [\"\"], transport",
    );
    let (file, err, msg) = load_err(&bad_camera);
    let keys = keys(&err);
    assert!(keys.contains("line[0].camera.template"), "{msg}");
    assert!(keys.contains("line[0].camera.deadline_ms"), "{msg}");
    assert_names(
        &err,
        &file,
        "line[0].camera.template",
        &["separated by literal text"],
    );
}

#[test]
fn accepted_edge_values() {
    // 249 + "-line-1" = 256: accepted, and that is the id the daemon uses.
    let id = "x".repeat(249);
    let c = load(&minimal_with(&format!("[mqtt]\nclient_id = \"{id}\""))).unwrap();
    c.validate().unwrap();
    assert_eq!(c.mqtt_client_id_for_line("line-1"), format!("{id}-line-1"));

    let c = load(&minimal_with("[mqtt]\ncommand_max_age_secs = 10")).unwrap();
    assert_eq!(c.mqtt.command_max_age_secs, 10);
}

/// Issue 13 §2: `store.fence_dir` defaults beside the ledger directory (not
/// in it) and resolves relative to the file.
#[test]
fn fence_dir_defaults_outside_the_ledger_and_resolves_against_the_file() {
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
}

/// One `[[line.aggregation]]` of cases, with `mode`, the label's `gs1` and
/// its count; its devices on loopback.
fn aggregation_level(mode: &str, gs1: &str, per_parent: u32) -> String {
    format!(
        "[[line.aggregation]]\nlevel = \"case\"\ngtin = \"19506000134359\"\n\
         per_parent = {per_parent}\n{mode}\nlabel_printer = \"127.0.0.1:9100\"\n\
         label = {{ symbology = \"data_matrix\", module_size = 6, x = 0, y = 0, {gs1} }}\n\
         [line.aggregation.scanner.transport]\nkind = \"tcp\"\naddr = \"127.0.0.1:2002\"\n"
    )
}

/// A counting level of cases loads and plans as written.
#[test]
fn a_packaging_level_loads_into_the_line_plan() {
    let c = load(&minimal_with(&aggregation_level(
        "mode = \"count\"",
        "gs1 = true",
        12,
    )))
    .unwrap();
    let plan = c.lines[0].pipeline.plan(&c.lines[0]);
    assert_eq!(plan.aggregation.len(), 1);
    let level = &plan.aggregation[0];
    assert_eq!(
        (
            level.name.as_str(),
            level.per_parent,
            level.gtin.as_string()
        ),
        ("case", 12, "19506000134359".to_string())
    );
}
