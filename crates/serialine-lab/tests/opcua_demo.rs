//! `serialine-lab demo --opcua`: the demo line served over OPC UA, checked
//! by an OPC UA client no one here wrote (asyncua, from PyPI) through
//! `scripts/opcua_client_test.py demo`: browse, counters read while the
//! line runs, an alarm event, an anonymous method call refused.
//!
//! Needs `OPCUA_CLIENT_PYTHON`: an interpreter with asyncua (CI makes a
//! venv for it in `.ci/run`). Without it the test says it was skipped.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PYTHON_VAR: &str = "OPCUA_CLIENT_PYTHON";

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    l.local_addr().expect("its address").port()
}

#[test]
fn demo_serves_opcua_to_an_asyncua_client() {
    let Some(python) = std::env::var_os(PYTHON_VAR) else {
        println!(
            "SKIPPED demo_serves_opcua_to_an_asyncua_client: {PYTHON_VAR} is not set \
             (an interpreter with asyncua; .ci/run makes one)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut demo = Command::new(env!("CARGO_BIN_EXE_serialine-lab"))
        .args(["demo", "--units", "60000", "--inkjet-only", "--no-progress"])
        .arg("--opcua")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--state-dir")
        .arg(dir.path())
        // Warnings and the line's own account in the log shown on failure:
        // a line that stalls says why there.
        .env("SERIALINE_LOG", "warn,rumqttd=off,serialine_line=info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("demo.log")).unwrap())
        .spawn()
        .expect("serialine-lab demo starts");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/opcua_client_test.py"
    );
    let started = Instant::now();
    let out = Command::new(python)
        .arg(script)
        .args(["demo", &format!("opc.tcp://127.0.0.1:{port}/"), "line-1"])
        .output()
        .expect("the asyncua client runs");
    // The demo serves until Ctrl-C: stopped here either way.
    let _ = demo.kill();
    let _ = demo.wait();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "asyncua client checks failed after {:?} ({}):\n{stdout}\n{}\ndemo log:\n{}",
        started.elapsed(),
        out.status,
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(dir.path().join("demo.log")).unwrap_or_default()
    );
    assert!(stdout.contains("all passed"), "{stdout}");
    assert!(started.elapsed() < Duration::from_secs(600));
}
