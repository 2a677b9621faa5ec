//! The CLI: `check-config` and `run` report config problems as `error:`
//! lines naming file and key and exit 2; warnings do not fail the check.

use crate::{
    check_config, config_dir, keyed_config, minimal_with, run_daemon, serialine, shipped,
    write_keys, write_secret, Run, GOOD_SECRET, KEYED, MINIMAL,
};
use std::fs;

/// Exit code 2, every stderr line an `error:`, one of them holding `says`.
fn assert_config_error(run: &Run, says: &str) {
    let stderr = &run.stderr;
    assert_eq!(run.code, Some(2), "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains(says), "{says:?} not in {stderr}");
}

#[test]
fn cli_check_config_ok() {
    let (_dir, path) = keyed_config(0o600);
    let run = check_config(&path);
    let (stdout, stderr) = (&run.stdout, &run.stderr);
    assert_eq!(run.code, Some(0), "{stdout}{stderr}");
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

/// A config that cannot be used makes `check-config` and `run` exit 2 with
/// the file and the key named.
#[test]
fn cli_config_errors_exit_2_naming_file_and_key() {
    let profile = format!(
        "{}/../../config/printer-cij-stx.toml",
        env!("CARGO_MANIFEST_DIR")
    );
    let removed = minimal_with("[store]\nmax_batch_delay_ms = 0");
    // (command, config text, what stderr says; {file} is the config's path,
    // {dir} its directory)
    let cases = [
        (
            "check-config",
            minimal_with("[mqtt]\nhots = \"x\""),
            "error: {file}: key mqtt.hots: ",
        ),
        (
            "run",
            "[site]\nid = \"s\"\n".to_string(),
            "{file}: key line: no lines configured",
        ),
        (
            "run",
            KEYED.replace(&profile, "no-such-profile.toml"),
            "{file}: key line[0].printer.profile: printer profile file \
             {dir}/no-such-profile.toml does not exist",
        ),
        // Issue 17: a removed key, in a plant's existing file.
        (
            "check-config",
            removed.clone(),
            "error: {file}: key store.max_batch_delay_ms: this key was removed from Serialine \
             because it was parsed but never used",
        ),
        (
            "run",
            removed,
            "error: {file}: key store.max_batch_delay_ms: this key was removed",
        ),
    ];
    for (command, text, says) in cases {
        let (_dir, path) = keyed_config(0o600);
        fs::write(&path, text).unwrap();
        let run = match command {
            "run" => run_daemon(&path),
            _ => check_config(&path),
        };
        let says = says
            .replace("{file}", &path.display().to_string())
            .replace("{dir}", &path.parent().unwrap().display().to_string());
        assert_config_error(&run, &says);
        if command == "check-config" {
            // One problem, one line; nothing on stdout.
            assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
            assert!(run.stdout.is_empty(), "{}", run.stdout);
        }
    }
}

#[test]
fn cli_check_config_of_shipped_example_reports_missing_secrets() {
    // The shipped example with its /etc/serialine files moved to a directory
    // that surely does not exist, its profiles beside it: the test runs (and
    // must fail on a broken check) on an installed system too, instead of
    // returning at once when /etc/serialine holds the real files.
    let dir = tempfile::tempdir().unwrap();
    let absent = dir.path().join("absent-etc");
    for entry in fs::read_dir(shipped("")).unwrap() {
        let from = entry.unwrap().path();
        if from.extension().is_some_and(|e| e == "toml") {
            fs::copy(&from, dir.path().join(from.file_name().unwrap())).unwrap();
        }
    }
    let example = dir.path().join("serialine.toml");
    let text_of = fs::read_to_string(shipped("serialine.toml")).unwrap();
    fs::write(
        &example,
        text_of.replace("/etc/serialine/", &format!("{}/", absent.display())),
    )
    .unwrap();
    let run = check_config(&example);
    assert_config_error(
        &run,
        &format!(
            "key line[0].secret_file: secret file {}/line-1.secret does not exist",
            absent.display()
        ),
    );
    assert!(
        run.stderr.contains("key line[1].secret_file"),
        "{}",
        run.stderr
    );
}

#[test]
fn cli_check_config_applies_env_overrides_unless_told_not_to() {
    let (_dir, path) = keyed_config(0o600);
    let file = path.to_str().unwrap();
    let env = [("SERIALINE_MQTT__PORT", "1884")];
    let run = serialine(&["check-config", file], &env);
    assert_eq!(run.code, Some(0));
    assert!(run
        .stdout
        .contains("environment overrides: SERIALINE_MQTT__PORT"));
    assert!(run.stdout.contains("mqtt 127.0.0.1:1884"), "{}", run.stdout);

    let run = serialine(&["check-config", "--no-env", file], &env);
    assert!(run.stdout.contains("mqtt 127.0.0.1:1883"));

    // SERIALINE_CONFIG names the file.
    let run = serialine(&["check-config"], &[("SERIALINE_CONFIG", file)]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
}

#[test]
fn cli_check_config_prints_warnings() {
    let (_dir, path) = keyed_config(0o644);
    let run = check_config(&path);
    let stderr = &run.stderr;
    assert_eq!(run.code, Some(0), "{stderr}");
    assert!(stderr.starts_with("warning: "), "{stderr}");
    assert!(stderr.contains("mode 0644"), "{stderr}");
    assert!(run.stdout.contains("config OK"));
}

#[test]
fn cli_help_documents_the_subcommands() {
    let run = serialine(&["--help"], &[]);
    let help = &run.stdout;
    assert_eq!(run.code, Some(0));
    for want in ["check-config", "run", "SERIALINE_", "Exit status"] {
        assert!(help.contains(want), "{want} missing from:\n{help}");
    }
    let run = serialine(&["check-config", "--help"], &[]);
    let help = &run.stdout;
    assert!(help.contains("/etc/serialine/serialine.toml"), "{help}");
    assert!(help.contains("SERIALINE_CONFIG"), "{help}");
    assert!(help.contains("--no-env"), "{help}");
}

/// Issue 13: production needs the command and ack keys. Without them
/// check-config (and run) exit 2 naming file and key; the explicit
/// allowances let it start, with a warning each (at every check and start).
#[test]
fn cli_check_config_requires_the_keys_or_an_explicit_allowance() {
    let (_dir, path) = config_dir(MINIMAL);
    write_secret(&path.with_file_name("line-1.secret"), GOOD_SECRET, 0o600);
    let run = check_config(&path);
    for key in ["mqtt.command_key_file", "mqtt.ack_key_file"] {
        assert_config_error(
            &run,
            &format!("error: {}: key {key}: not set", path.display()),
        );
    }
    let run = run_daemon(&path);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("key mqtt.command_key_file"));

    fs::write(
        &path,
        minimal_with("[mqtt]\nallow_unsigned_commands = true\nallow_unsigned_acks = true"),
    )
    .unwrap();
    let run = check_config(&path);
    let stderr = &run.stderr;
    assert_eq!(run.code, Some(0), "{stderr}");
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
    let run = check_config(&path);
    assert_config_error(&run, "key mqtt.ack_key_file");
    assert!(run.stderr.contains("64 hex digits"), "{}", run.stderr);
}
