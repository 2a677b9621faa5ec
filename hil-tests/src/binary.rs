//! Finding (and building) the `serialine` binary.
//!
//! `CARGO_BIN_EXE_serialine` only exists for the `serialine` crate's own
//! tests, so: `SERIALINE_BIN` (or `CARGO_BIN_EXE_serialine`) if set, else the
//! binary next to the running test executable's profile directory
//! (`<target>/<profile>/serialine`), built once per process with
//! `cargo build -p serialine` (plus `--release` when the tests run in the
//! release profile). `cargo` is on `PATH` (and in `$CARGO`) under
//! `cargo test`.

use crate::HilError;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The binary's path, building it the first time it is asked for.
pub fn serialine() -> Result<PathBuf, HilError> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(locate_and_build)
        .clone()
        .map_err(HilError::Build)
}

/// Prefixes of the variables cargo sets for a crate's own build and tests.
const CRATE_VARS: &[&str] = &[
    "CARGO_PKG_",
    "CARGO_MANIFEST_",
    "CARGO_CRATE_",
    "CARGO_BIN_",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_TARGET_TMPDIR",
    "CARGO_CFG_",
    "CARGO_RUSTC_CURRENT_DIR",
    "OUT_DIR",
];

fn locate_and_build() -> Result<PathBuf, String> {
    for var in ["SERIALINE_BIN", "CARGO_BIN_EXE_serialine"] {
        if let Some(p) = std::env::var_os(var) {
            let p = PathBuf::from(p);
            if p.is_file() {
                return Ok(p);
            }
            return Err(format!("{var}={} is not a file", p.display()));
        }
    }
    // <target>/<profile>/deps/<test exe>
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .ok_or_else(|| format!("cannot find the profile directory of {}", exe.display()))?
        .to_path_buf();
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let target_dir = profile_dir
        .parent()
        .ok_or_else(|| "no target directory".to_string())?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", "serialine", "--bin", "serialine"])
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    if release {
        cmd.arg("--release");
    }
    // The test process carries the variables cargo sets for the crate under
    // test (CARGO_MANIFEST_DIR, CARGO_PKG_NAME, ...). Build scripts track
    // some of them, so passing them on would rebuild dependencies here and
    // again in the next `cargo test`.
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if CRATE_VARS.iter().any(|p| k.starts_with(p)) {
            cmd.env_remove(&key);
        }
    }
    let out = cmd.output().map_err(|e| format!("cannot run cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo build -p serialine: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let bin = profile_dir.join("serialine");
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!("{} missing after cargo build", bin.display()))
    }
}
