//! `serialine run`: the real binary against simulators on 127.0.0.1 (an
//! embedded MQTT broker, the upstream issuer and consumer, a framed-ASCII
//! printer and a camera on TCP), started and stopped the way systemd does.
//!
//! Every wait is bounded and polls its condition; nothing sleeps blindly.

mod common;

use common::{shipped, Plant};
use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const SITE: &str = "site-t";
const LINE: &str = "line-1";
const QUANTITY: usize = 300;
const SECRET: &[u8] = b"run-test line secret, 32 bytes!!";

fn write_secret(path: &Path) {
    fs::write(path, SECRET).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
}

/// The daemon as a child process, its stderr in a file; killed if the test
/// ends without waiting for it.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(config: &Path, env: &[(&str, &str)]) -> Daemon {
        let log = config.with_file_name("serialine.log");
        let stderr = fs::File::create(&log).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_serialine"));
        cmd.args(["run", "--config", config.to_str().unwrap()])
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Daemon {
            child: cmd.spawn().expect("serialine starts"),
            log,
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the process to exit, at most `limit`.
    async fn wait(&mut self, limit: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < limit,
                "serialine did not exit within {limit:?}; its log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {sig} failed");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `GET /metrics` over HTTP/1.0 (a body without chunking); the body.
fn scrape_metrics(addr: std::net::SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("metrics endpoint answers");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.contains(" 200 "), "{head}");
    body.to_string()
}

/// Polls `cond` every 25 ms for at most `limit`.
async fn wait_until(
    limit: Duration,
    what: &str,
    log: impl Fn() -> String,
    cond: impl Fn() -> bool,
) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}; serialine's log:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Sends the signed command `cmd/<command>` to the line and waits for its
/// reply and, with `also`, for a message on that topic (a retained one).
async fn signed_command(
    port: u16,
    command: &str,
    payload: serde_json::Value,
    also: Option<String>,
) -> (serde_json::Value, Option<serde_json::Value>) {
    use rumqttc::{Event, Packet, QoS};
    let id = format!("run-test-{}", command.replace('/', "-"));
    let mut o = rumqttc::MqttOptions::new(id.clone(), "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(10));
    let (client, mut el) = rumqttc::AsyncClient::new(o, 8);
    let topic = format!("serialine/{SITE}/{LINE}/cmd/{command}");
    client
        .subscribe(format!("{topic}/reply"), QoS::AtLeastOnce)
        .await
        .unwrap();
    let body = serialine_uplink::sign_command(&[0xa5; 32], &topic, payload, &id);
    client
        .publish(&topic, QoS::AtLeastOnce, false, body.to_string())
        .await
        .unwrap();
    if let Some(t) = &also {
        client.subscribe(t.clone(), QoS::AtLeastOnce).await.unwrap();
    }
    let (mut reply, mut other) = (None, None);
    tokio::time::timeout(Duration::from_secs(30), async {
        while reply.is_none() || (also.is_some() && other.is_none()) {
            if let Ok(Event::Incoming(Packet::Publish(p))) = el.poll().await {
                let v = serde_json::from_slice::<serde_json::Value>(&p.payload).unwrap();
                if p.topic.ends_with("/reply") {
                    reply = Some(v);
                } else {
                    other = Some(v);
                }
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no reply to cmd/{command} (or no message on {also:?})"));
    let _ = client.disconnect().await;
    (reply.unwrap(), other)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn run_produces_a_default_job_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let root = fs::canonicalize(dir.path()).unwrap();

    let plant = Plant::start(SITE, LINE, SECRET, b"run-test issuer seed").await;
    let (upstream, printer, camera) = (&plant.upstream, &plant.printer, &plant.camera);
    let (printer_addr, camera_addr) = (plant.printer_addr, plant.camera_addr);

    write_secret(&root.join("line-1.secret"));
    for (name, byte) in [("command.key", "a5"), ("ack.key", "5a")] {
        fs::write(root.join(name), byte.repeat(32)).unwrap();
        fs::set_permissions(root.join(name), fs::Permissions::from_mode(0o600)).unwrap();
    }
    let config = root.join("serialine.toml");
    // The Prometheus endpoint too: scraped once the job is over.
    let metrics_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    fs::write(
        &config,
        format!(
            r#"
[daemon]
state_dir = "state"
log_level = "info"
watchdog = false

[metrics]
listen = "{metrics_addr}"

[site]
id = "{SITE}"

[mqtt]
host = "127.0.0.1"
port = {port}
client_id = "serialine-test-{{site}}"
keep_alive_secs = 5
command_key_file = "command.key"
ack_key_file = "ack.key"

[[line]]
id = "{LINE}"
secret_file = "line-1.secret"

[line.buffer]
low_water_serials = 200
low_water_minutes = 0
high_water_serials = 1000

[line.job]
gtin = "09506000134352"
lot = "RUN-TEST-1"
expiry = "271231"
quantity = {QUANTITY}
template = {{ kind = "gs1-data-matrix" }}

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
            port = plant.broker.port,
            profile = shipped("printer-cij-stx.toml").display(),
        ),
    )
    .unwrap();

    let mut daemon = Daemon::start(&config, &[]);
    let log = || fs::read_to_string(root.join("serialine.log")).unwrap_or_default();

    // Every unit's outcome reaches upstream.
    wait_until(
        Duration::from_secs(90),
        "upstream to hold 300 events",
        log,
        || upstream.line(LINE).unique() >= QUANTITY,
    )
    .await;
    // The job's end is logged once the pipeline has drained.
    wait_until(Duration::from_secs(30), "the job report", log, || {
        log().contains("job ended")
    })
    .await;
    // Between jobs the ledger is checkpointed: sled has written a snapshot
    // (`snap.*`), so a crash during the next job replays none of this one.
    wait_until(Duration::from_secs(30), "the checkpoint", log, || {
        log().contains("ledger checkpointed between jobs")
    })
    .await;
    let ledger = root.join("state/ledger").join(LINE);
    let snapshots = fs::read_dir(&ledger)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("snap."))
        .count();
    assert!(snapshots > 0, "no sled snapshot in {}", ledger.display());

    let events = upstream.line(LINE);
    assert_eq!(events.unique(), QUANTITY, "one event per unit");
    assert_eq!(events.conflicts, 0);
    let issued: HashSet<String> = plant
        .issuer
        .issued(LINE)
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut serials = HashSet::new();
    for (serial, state) in events.events.values() {
        assert_eq!(state, "committed", "clean equipment commits every unit");
        assert!(issued.contains(serial), "serial {serial} was never issued");
        assert!(
            serials.insert(serial.clone()),
            "serial {serial} reported twice"
        );
    }
    assert_eq!(printer.stats().printed, QUANTITY as u64);
    assert_eq!(camera.log().len(), QUANTITY);

    // `[metrics]`: the service's endpoint counts what upstream received.
    let scrape = scrape_metrics(metrics_addr);
    for want in [
        format!("serialine_units_total{{line=\"{LINE}\",outcome=\"sent\"}} {QUANTITY}"),
        format!("serialine_units_total{{line=\"{LINE}\",outcome=\"committed\"}} {QUANTITY}"),
        format!("serialine_added_latency_seconds_count{{line=\"{LINE}\"}} {QUANTITY}"),
        format!("serialine_mqtt_connected{{line=\"{LINE}\"}} 1"),
    ] {
        assert!(scrape.contains(&want), "{want} not in:\n{scrape}");
    }

    // `serialine status` while the service runs: over its control socket
    // (the ledger is locked), with the line's state; garbage on the socket
    // gets an error line and changes nothing.
    // The service binary as an operator runs it, on this config.
    let serialine = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_serialine"))
            .args(args)
            .arg("--config")
            .arg(&config)
            .env_remove("SERIALINE_CONFIG")
            .output()
            .unwrap()
    };
    let status_json = || {
        let out = serialine(&["status", "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v[0].clone()
    };
    let socket = root.join("state/control.sock");
    let mode = fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "control socket mode");
    {
        use std::io::{BufRead, Write};
        let mut s = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        s.write_all(b"{\"cmd\":\"format-disk\"}\n").unwrap();
        let mut answer = String::new();
        std::io::BufReader::new(&s).read_line(&mut answer).unwrap();
        assert!(
            answer.contains("\"ok\":false") && answer.contains("unknown variant"),
            "{answer}"
        );
    }
    // The job's reconciliation, written when it ended: balanced.
    let job_file = root.join("state/reports").join(LINE).join("job-1.json");
    wait_until(Duration::from_secs(30), "the job report", log, || {
        job_file.exists()
    })
    .await;
    let job: serde_json::Value = serde_json::from_slice(&fs::read(&job_file).unwrap()).unwrap();
    assert_eq!(job["balanced"], true, "{job}");
    assert_eq!(job["sent"], QUANTITY as u64, "{job}");
    assert_eq!(job["committed_total"], QUANTITY as u64, "{job}");
    assert_eq!(job["entry"]["lot"], "RUN-TEST-1", "{job}");
    assert_eq!(job["entry"]["end"], "complete", "{job}");
    assert!(
        log().contains("job 1 reconciliation: sent 300"),
        "{}",
        log()
    );

    let live = status_json();
    assert_eq!(live["service"], "running", "{live}");
    assert!(
        live["state"].as_str().unwrap_or("").contains("idle"),
        "{live}"
    );
    let decided =
        |v: &serde_json::Value| v["committed"].as_u64().unwrap() + v["synced"].as_u64().unwrap();
    assert_eq!(decided(&live), QUANTITY as u64, "{live}");
    assert_eq!(live["in_flight"], 0, "{live}");

    // Upstream acknowledges every outcome; then units can be sampled and
    // decommissioned through the running service, each reported upstream.
    wait_until(Duration::from_secs(30), "the outbox to drain", log, || {
        status_json()["outbox"] == 0
    })
    .await;
    let unit = |args: &[&str]| serialine(&[&["unit"], args].concat());
    let mut committed: Vec<String> = events.events.values().map(|(s, _)| s.clone()).collect();
    committed.sort();
    let out = unit(&["sample", &committed[0], "--purpose", "qa"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("sampled(qa) on line line-1"), "{text}");
    let out = unit(&[
        "decommission",
        &committed[1],
        &committed[0],
        "NEVER1SSUED",
        "--reason",
        "damaged",
    ]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "one refused: {text}");
    assert!(
        text.contains(&format!("{}: decommissioned(damaged)", committed[1])),
        "{text}"
    );
    assert!(
        text.contains(&format!("{}: decommissioned(damaged)", committed[0])),
        "sampled, then destroyed: {text}"
    );
    assert!(
        text.contains("NEVER1SSUED: refused: never issued"),
        "{text}"
    );
    let out = unit(&["sample", &committed[1], "--purpose", "qa"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("refused: already decommissioned"));
    // Issue 14, through the running service's socket: a unit is no case
    // of its own product (refused, exit 1, naming why), and where a serial
    // sits is read back.
    let out = serialine(&["pack", &committed[5], &committed[6], &committed[7]]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("not a case or pallet label"), "{text}");
    assert!(
        text.contains(&format!("{}: of the parent's own product", committed[6])),
        "{text}"
    );
    let out = serialine(&["contents", &committed[6], "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["line"].as_str(), v["parents"].as_array().map(Vec::len)),
        (Some(LINE), Some(0)),
        "{v}"
    );
    wait_until(
        Duration::from_secs(30),
        "upstream to hear of the samples",
        log,
        || {
            let ev = upstream.line(LINE);
            let states: Vec<String> = ev.events.values().map(|(_, st)| st.clone()).collect();
            states.iter().filter(|s| *s == "decommissioned").count() == 2
                && states.iter().any(|s| s == "sampled")
        },
    )
    .await;
    // The same over MQTT: a signed cmd/unit/decommission; the job's
    // retained report is on the broker too.
    let (reply, report) = signed_command(
        plant.broker.port,
        "unit/decommission",
        serde_json::json!({"request_id": "r-unit", "serials": [committed[2]], "reason": "stolen"}),
        Some(format!("serialine/{SITE}/{LINE}/jobs/1/report")),
    )
    .await;
    let report = report.expect("the retained job report");
    assert_eq!(report["balanced"], true, "{report}");
    assert_eq!(report["sent"], QUANTITY as u64, "{report}");
    assert_eq!(reply["ok"], true, "{reply}");
    let live = status_json();
    assert_eq!(
        (live["sampled"].as_u64(), live["decommissioned"].as_u64()),
        (Some(0), Some(3)),
        "{live}"
    );

    // Retention by hand while the service runs: the service archives (its
    // ledger is locked), and the archived units leave its ledger.
    wait_until(
        Duration::from_secs(30),
        "the outbox to drain again",
        log,
        || status_json()["outbox"] == 0,
    )
    .await;
    let out = serialine(&["archive", "--before", "2100-01-01"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("by the running service"), "{text}");
    let live = status_json();
    assert_eq!(
        live["archived"], QUANTITY as u64,
        "every used-up block: {text}\n{live}"
    );

    // Issue 15: the unused serials back upstream, on command: a signed
    // cmd/serials/return over MQTT, counted in the job that made the
    // product; then `serialine return` through the socket finds none left.
    let buffered = status_json()["buffer"].as_u64().unwrap();
    assert!(buffered > 0, "the prefetch left serials buffered");
    let (reply, _) = signed_command(
        plant.broker.port,
        "serials/return",
        serde_json::json!({"request_id": "r-return", "gtin": "09506000134352"}),
        None,
    )
    .await;
    assert_eq!(reply["ok"], true, "{reply}");
    let out = serialine(&["return", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let returned: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(returned[0]["serials"].as_u64(), Some(0), "{returned}");
    assert_eq!(returned[0]["job"].as_u64(), Some(1), "{returned}");
    // A block the prefetch had asked for before the return is stored first
    // and returned with the rest: at least what was buffered went back.
    let live = status_json();
    assert_eq!(
        live["buffer"].as_u64(),
        Some(0),
        "nothing refilled behind the return: {live}"
    );
    let returned_n = live["returned"].as_u64().unwrap_or(0);
    assert!(
        returned_n >= buffered,
        "{returned_n} returned, {buffered} buffered before: {live}"
    );
    let buffered = returned_n;
    wait_until(
        Duration::from_secs(30),
        "upstream to hold every returned serial",
        log,
        || upstream.line(LINE).returned_serials().count() as u64 == buffered,
    )
    .await;

    // SIGTERM: a clean stop, exit 0.
    daemon.signal("-TERM");
    let status = daemon.wait(Duration::from_secs(30)).await;
    let text = daemon.log();
    assert_eq!(status.code(), Some(0), "{text}");
    assert!(text.contains("ledger open"), "{text}");
    assert!(text.contains("job started"), "{text}");
    assert!(
        text.contains("300 committed, 0 rejected, 0 voided"),
        "{text}"
    );
    assert!(text.contains("SIGTERM received"), "{text}");
    assert!(text.contains("serialine stopped"), "{text}");
    assert!(root.join("state/ledger").join(LINE).is_dir());
    // The report after the fact, from the ledger and its archives: the
    // same job, with what became of its units since.
    let out = serialine(&["report", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reports: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let r = &reports[0];
    assert_eq!(
        (
            r["number"].as_u64(),
            r["sent"].as_u64(),
            r["committed_total"].as_u64()
        ),
        (Some(1), Some(QUANTITY as u64), Some(QUANTITY as u64)),
        "{r}"
    );
    assert_eq!(
        (r["sampled"].as_u64(), r["decommissioned"].as_u64()),
        (Some(0), Some(3)),
        "{r}"
    );
    assert_eq!(r["returned"].as_u64(), Some(buffered), "{r}");
    let text = String::from_utf8_lossy(&serialine(&["report"]).stdout).to_string();
    assert!(
        text.contains("lot RUN-TEST-1") && text.contains("balanced"),
        "{text}"
    );

    // Stopped: the socket is gone and status reads the ledger itself.
    assert!(!socket.exists(), "control socket left behind");
    let stopped = status_json();
    assert!(stopped["service"].is_null(), "{stopped}");
    assert_eq!(stopped["archived"], QUANTITY as u64, "{stopped}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_exits_1_naming_the_line_when_its_ledger_cannot_open() {
    let dir = tempfile::tempdir().unwrap();
    let root = fs::canonicalize(dir.path()).unwrap();
    write_secret(&root.join("line-1.secret"));
    // state_dir is a file: no ledger directory can be made under it.
    fs::write(root.join("state"), b"not a directory").unwrap();
    let config = root.join("serialine.toml");
    fs::write(
        &config,
        format!(
            "[daemon]\nstate_dir = \"state\"\nwatchdog = false\n[site]\nid = \"s\"\n\
             [mqtt]\nallow_unsigned_commands = true\nallow_unsigned_acks = true\n\
             [[line]]\nid = \"{LINE}\"\nsecret_file = \"line-1.secret\"\n\
             printer = {{ kind = \"framed\", profile = \"{}\", transport = {{ kind = \"tcp\", addr = \"127.0.0.1:9\" }} }}\n\
             camera = {{ transport = {{ kind = \"tcp\", addr = \"127.0.0.1:9\" }} }}\n",
            shipped("printer-cij-stx.toml").display()
        ),
    )
    .unwrap();

    let mut daemon = Daemon::start(&config, &[]);
    let status = daemon.wait(Duration::from_secs(30)).await;
    let text = daemon.log();
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(text.contains("line line-1: cannot start"), "{text}");
    assert!(
        text.contains(&root.join("state").display().to_string()),
        "{text}"
    );
    assert!(!text.contains('\u{1b}'), "no ANSI colours off a terminal");
    // Issue 13: running without keys on the explicit allowances is warned
    // about at every start.
    for key in ["mqtt.allow_unsigned_commands", "mqtt.allow_unsigned_acks"] {
        assert!(
            text.lines().any(|l| l.contains("WARN") && l.contains(key)),
            "{key}: {text}"
        );
    }

    // The same with JSON logs: every line is one JSON object.
    let mut daemon = Daemon::start(&config, &[("SERIALINE_DAEMON__LOG_FORMAT", "json")]);
    let status = daemon.wait(Duration::from_secs(30)).await;
    let text = daemon.log();
    assert_eq!(status.code(), Some(1), "{text}");
    for line in text.lines() {
        serde_json::from_str::<serde_json::Value>(line).expect(line);
    }
}
