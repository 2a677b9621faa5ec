//! GS1 conformance against independent implementations: runs
//! `scripts/gs1_conformance.py` (biip and zxing-cpp, from PyPI) on this
//! build's `serialine code render` / `code parse`.
//!
//! The Python with those packages is named by `GS1_CONFORMANCE_PYTHON`, which
//! `.ci/run` sets after installing them into a virtual environment. Without
//! it the test says that it was skipped and why, and passes, so
//! `cargo test --workspace` works on a machine without the packages.

use std::path::Path;
use std::process::Command;

const PYTHON_VAR: &str = "GS1_CONFORMANCE_PYTHON";

#[test]
fn codes_agree_with_biip_and_zxing_cpp() {
    let Some(python) = std::env::var_os(PYTHON_VAR) else {
        eprintln!(
            "SKIPPED gs1_conformance: {PYTHON_VAR} is not set. It names a Python with biip and \
             zxing-cpp installed; .ci/run sets it. To run it here:\n  \
             python3 -m venv /tmp/gs1venv && /tmp/gs1venv/bin/pip install biip zxing-cpp\n  \
             {PYTHON_VAR}=/tmp/gs1venv/bin/python cargo test -p serialine --test gs1_conformance -- --nocapture"
        );
        return;
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/gs1_conformance.py");
    let out = Command::new(&python)
        .arg(&script)
        .args(["--serialine", env!("CARGO_BIN_EXE_serialine")])
        .output()
        .unwrap_or_else(|e| panic!("{PYTHON_VAR}={python:?} cannot run: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The figures, for the log (cargo shows them with --nocapture or on failure).
    println!("{stdout}");
    eprint!("{stderr}");
    assert!(
        out.status.success(),
        "GS1 conformance suite failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
}
