//! Configuration loading, validation, secrets, and the `check-config` / `run`
//! CLI: one test binary (each costs link time), one module per job of
//! `serialine::config`, the fixtures and checks they share here.
//!
//! Tests that need environment overrides run inside `figment::Jail` (which
//! serializes them and restores the environment); every other test loads
//! with the environment disabled and uses absolute paths, so neither the
//! jail's environment nor its working directory can leak into them. CLI tests
//! start the binary with a cleared environment.

mod cli;
mod files;
mod load;
mod metrics;
mod opcua;
mod shipped;
mod tls;
mod validate;

use serialine::config::{Config, ConfigError};
use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use tempfile::TempDir;

// ---------------------------------------------------------------------------
// fixtures

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

/// The smallest valid config: a site and one line. Keys appended to it
/// belong to `[[line]]` until a new table header.
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

/// MINIMAL's `[[line]]` header and keys without devices, for device tests.
const LINE_HEAD: &str = "[site]\nid = \"s\"\n[[line]]\nid = \"line-1\"\nsecret_file = \"s\"\n";

const CAMERA_TCP: &str = "[line.camera.transport]\nkind = \"tcp\"\naddr = \"127.0.0.1:2001\"\n";

const GOOD_SECRET: &[u8] = b"0123456789abcdef0123456789abcdef\n";

/// MINIMAL with `table` (e.g. `"[mqtt]\nport = 1"`) appended.
fn minimal_with(table: &str) -> String {
    format!("{MINIMAL}\n{table}\n")
}

/// A line with a `[line.printer]` table of `printer_keys` and a TCP camera.
fn with_printer(printer_keys: &str) -> String {
    format!("{LINE_HEAD}[line.printer]\n{printer_keys}\n{CAMERA_TCP}")
}

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

fn write_secret(path: &Path, content: &[u8], mode: u32) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(path, content).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// A temp dir (canonical path) holding `serialine.toml` with `text`.
fn config_dir(text: &str) -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = fs::canonicalize(dir.path()).unwrap().join("serialine.toml");
    fs::write(&path, text).unwrap();
    (dir, path)
}

/// KEYED in a temp dir with its keys and its line secret (`secret_mode`)
/// in place: a config `check_files` and `check-config` accept.
fn keyed_config(secret_mode: u32) -> (TempDir, PathBuf) {
    let (dir, path) = config_dir(KEYED);
    write_keys(&path);
    write_secret(
        &path.with_file_name("line-1.secret"),
        GOOD_SECRET,
        secret_mode,
    );
    (dir, path)
}

// ---------------------------------------------------------------------------
// loading and checking

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

/// The keys an error names.
fn keys(err: &ConfigError) -> BTreeSet<String> {
    err.issues().iter().filter_map(|i| i.key.clone()).collect()
}

fn set(keys: &[&str]) -> BTreeSet<String> {
    keys.iter().map(|k| k.to_string()).collect()
}

/// Asserts that `err` names `key` with the config file `file` as origin, the
/// message reading `"{file}: key {key}: …"` and holding each of `says`.
fn assert_names(err: &ConfigError, file: &str, key: &str, says: &[&str]) {
    let messages = err.messages();
    let prefix = format!("{file}: key {key}: ");
    let found = messages
        .iter()
        .find(|m| m.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no message for key {key} from {file} in {messages:#?}"));
    for s in says {
        assert!(found.contains(s), "{s:?} not in {found:?}");
    }
}

/// Loads `text`, which must be refused with `key` named as in
/// [`assert_names`] and nothing else; returns the error for further checks.
fn refused(text: &str, key: &str, says: &[&str]) -> ConfigError {
    let (file, err, msg) = load_err(text);
    assert_names(&err, &file, key, says);
    assert_eq!(keys(&err), set(&[key]), "{msg}");
    assert_eq!(err.messages().len(), 1, "{msg}");
    err
}

// ---------------------------------------------------------------------------
// the CLI

/// What a run of the binary printed.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs the `serialine` binary with a cleared environment plus `env`.
fn serialine(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_serialine"));
    cmd.args(args).env_clear();
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn check_config(path: &Path) -> Run {
    serialine(&["check-config", path.to_str().unwrap()], &[])
}

fn run_daemon(path: &Path) -> Run {
    serialine(&["run", "--config", path.to_str().unwrap()], &[])
}
