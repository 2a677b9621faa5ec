//! Issue 13 §6.1 on the real binary: `serialine run` against Mosquitto over
//! mutual TLS with a CA file that did not sign the broker's certificate. The
//! daemon must say why it cannot connect: once at warn in its log (not on
//! every retry), and in systemd's `STATUS=` (read from a `NOTIFY_SOCKET` the
//! test binds). Mosquitto must be installed (`.ci/run` installs it);
//! where it is not, the tests fail: a skip would pass without proving anything.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The Mosquitto binary. Missing is a failure, not a skip: a test that
/// passes without running proves nothing, and CI installs it.
fn mosquitto() -> PathBuf {
    [
        "/usr/sbin/mosquitto",
        "/usr/bin/mosquitto",
        "/usr/local/sbin/mosquitto",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .expect(
        "mosquitto is not installed: these tests need it (.ci/run installs it; \
         locally: apt-get install mosquitto)",
    )
}

fn shipped(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../config")
        .join(name)
}

fn write(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, text).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    p
}

fn ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), Issuer::new(params, key))
}

fn leaf(issuer: &Issuer<'static, KeyPair>, names: &[&str], cn: &str) -> (String, String) {
    let mut params =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// Kills its child on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn wrong_ca_is_logged_once_at_warn_and_shown_in_systemd_status() {
    let bin = mosquitto();
    let dir = tempfile::tempdir().unwrap();
    let root = fs::canonicalize(dir.path()).unwrap();

    let (plant_ca, plant) = ca("plant CA");
    let (server, server_key) = leaf(&plant, &["127.0.0.1", "localhost"], "broker");
    let (client, client_key) = leaf(&plant, &[], "serialine-site-t-line-1");
    let (other_ca, _) = ca("some other CA");
    let plant_ca = write(&root, "plant-ca.pem", &plant_ca, 0o644);
    let server = write(&root, "server.pem", &server, 0o644);
    let server_key = write(&root, "server.key", &server_key, 0o600);
    write(&root, "other-ca.pem", &other_ca, 0o644);
    write(&root, "client.pem", &client, 0o644);
    write(&root, "client.key", &client_key, 0o600);
    write(
        &root,
        "line-1.secret",
        "uplink-tls test line secret 32 b",
        0o600,
    );

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = root.join("mosquitto.conf");
    fs::write(
        &conf,
        format!(
            "user root\nlistener {port} 127.0.0.1\nallow_anonymous true\n\
             cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
            plant_ca.display(),
            server.display(),
            server_key.display()
        ),
    )
    .unwrap();
    let _broker = Killed(
        Command::new(&bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto starts"),
    );
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "mosquitto listens"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // No job: the devices are never contacted, only the uplink runs.
    let config = root.join("serialine.toml");
    fs::write(
        &config,
        format!(
            r#"
[daemon]
state_dir = "state"
log_level = "info,serialine_uplink=debug"
watchdog = false

[site]
id = "site-t"

[mqtt]
host = "127.0.0.1"
port = {port}
# This test is about the TLS failure, not about signed commands.
allow_unsigned_commands = true
allow_unsigned_acks = true

[mqtt.tls]
ca_file = "other-ca.pem"
client_cert_file = "client.pem"
client_key_file = "client.key"

[[line]]
id = "line-1"
secret_file = "line-1.secret"

[line.printer]
kind = "framed"
profile = "{profile}"
transport = {{ kind = "tcp", addr = "127.0.0.1:9" }}

[line.camera]
transport = {{ kind = "tcp", addr = "127.0.0.1:9" }}
"#,
            profile = shipped("printer-cij-stx.toml").display(),
        ),
    )
    .unwrap();

    let notify_path = root.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let log = root.join("serialine.log");
    let mut daemon = Killed(
        Command::new(env!("CARGO_BIN_EXE_serialine"))
            .args(["run", "--config", config.to_str().unwrap()])
            .env_clear()
            .env("NOTIFY_SOCKET", &notify_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("serialine starts"),
    );

    // STATUS= names the cause.
    let mut statuses = Vec::new();
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    let shown = loop {
        if let Ok(n) = notify.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).to_string();
            if let Some(s) = msg.lines().find(|l| l.starts_with("STATUS=")) {
                statuses.push(s.to_string());
                if s.contains("line-1 uplink: not connected: UnknownIssuer") {
                    break s.to_string();
                }
            }
        }
        if let Ok(Some(st)) = daemon.0.try_wait() {
            panic!(
                "daemon exited with {st}: {}",
                fs::read_to_string(&log).unwrap_or_default()
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no STATUS= naming UnknownIssuer within 30 s; got {statuses:?}; log:\n{}",
            fs::read_to_string(&log).unwrap_or_default()
        );
    };
    assert!(shown.contains("invalid peer certificate"), "{shown}");

    // The log: the first failure at warn with its cause, the retries (same
    // cause) at debug only.
    let count = |level: &str| {
        fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(level) && l.contains("MQTT connect failed"))
            .filter(|l| l.contains("UnknownIssuer"))
            .count()
    };
    let start = Instant::now();
    while count("DEBUG") < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no retries logged within 30 s:\n{}",
            fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        count("WARN"),
        1,
        "one warn for one cause:\n{}",
        fs::read_to_string(&log).unwrap_or_default()
    );
}
