//! `[opcua]` on the service: `serialine run` (the real binary) with a line
//! that has no default job, against simulators on 127.0.0.1 (broker, issuer,
//! upstream, a framed printer and a camera on TCP), checked by an OPC UA
//! client no one here wrote (asyncua, from PyPI) through
//! `scripts/opcua_client_test.py service`: an anonymous method call is
//! refused; over SignAndEncrypt with a user, StartJob with a bad GTIN is
//! refused and changes nothing, a good one starts the job (the line runs),
//! StopJob drains it.
//!
//! Needs `OPCUA_CLIENT_PYTHON`: an interpreter with asyncua (CI makes a
//! venv for it in `.ci/run`). Without it the test says it was skipped.

mod common;

use common::{shipped, Plant};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

const PYTHON_VAR: &str = "OPCUA_CLIENT_PYTHON";
const SITE: &str = "site-o";
const LINE: &str = "line-1";
const SECRET: &[u8] = b"opcua-test line secret, 32 bytes";

fn secret_file(path: &Path, bytes: &[u8]) {
    fs::write(path, bytes).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    l.local_addr().expect("its address").port()
}

/// The service, killed if the test ends without stopping it.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn opcua_methods_run_through_the_supervisor_for_an_asyncua_client() {
    let Some(python) = std::env::var_os(PYTHON_VAR) else {
        println!(
            "SKIPPED opcua_methods_run_through_the_supervisor_for_an_asyncua_client: \
             {PYTHON_VAR} is not set (an interpreter with asyncua; .ci/run makes one)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = fs::canonicalize(dir.path()).unwrap();

    let plant = Plant::start(SITE, LINE, SECRET, b"opcua-test issuer seed").await;
    let (printer_addr, camera_addr) = (plant.printer_addr, plant.camera_addr);

    secret_file(&root.join("line-1.secret"), SECRET);
    secret_file(&root.join("command.key"), "a5".repeat(32).as_bytes());
    secret_file(&root.join("ack.key"), "5a".repeat(32).as_bytes());
    secret_file(&root.join("mes.password"), b"opcua-test password\n");
    let port = free_port();
    let config = root.join("serialine.toml");
    fs::write(
        &config,
        format!(
            r#"
[daemon]
state_dir = "state"
log_level = "info"
watchdog = false

[site]
id = "{SITE}"

[mqtt]
host = "127.0.0.1"
port = {mqtt_port}
command_key_file = "command.key"
ack_key_file = "ack.key"

[opcua]
enabled = true
listen = "127.0.0.1:{port}"
trust_client_certs = true
insecure_endpoint = true

[[opcua.user]]
name = "mes"
password_file = "mes.password"

# No [line.job]: the line waits for a command.
[[line]]
id = "{LINE}"
secret_file = "line-1.secret"

[line.buffer]
low_water_serials = 200
low_water_minutes = 0
high_water_serials = 2000

[line.printer]
kind = "framed"
profile = "{profile}"
transport = {{ kind = "tcp", addr = "{printer_addr}" }}

[line.camera]
transport = {{ kind = "tcp", addr = "{camera_addr}" }}

[line.pipeline]
camera_window = 16
read_deadline_ms = 2000
starve_timeout_secs = 60
"#,
            mqtt_port = plant.broker.port,
            profile = shipped("printer-cij-stx.toml").display(),
        ),
    )
    .unwrap();

    let log = root.join("serialine.log");
    let mut daemon = Daemon(
        Command::new(env!("CARGO_BIN_EXE_serialine"))
            .args(["run", "--config", config.to_str().unwrap()])
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("serialine starts"),
    );

    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/opcua_client_test.py"
    );
    let out = tokio::process::Command::new(python)
        .arg(script)
        .args([
            "service",
            &format!("opc.tcp://127.0.0.1:{port}/"),
            LINE,
            "mes",
        ])
        .arg(root.join("mes.password"))
        .arg(&root)
        .output()
        .await
        .expect("the asyncua client runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    let still_running = matches!(daemon.0.try_wait(), Ok(None));
    let text = fs::read_to_string(&log).unwrap_or_default();
    assert!(
        out.status.success(),
        "asyncua client checks failed ({}):\n{stdout}\n{}\nserialine's log:\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(stdout.contains("all passed"), "{stdout}");
    assert!(still_running, "serialine exited:\n{text}");
    // The same supervisor ran both commands; the refused job never reached it.
    assert!(text.contains("OPC UA server listening"), "{text}");
    assert!(text.contains("job started"), "{text}");
    assert_eq!(text.matches("job started").count(), 1, "{text}");
    let _ = Command::new("kill")
        .args(["-TERM", &daemon.0.id().to_string()])
        .status();
    let status = tokio::task::spawn_blocking(move || {
        let s = daemon.0.wait();
        (s, daemon)
    })
    .await
    .unwrap()
    .0
    .unwrap();
    let text = fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(status.code(), Some(0), "{text}");
}
