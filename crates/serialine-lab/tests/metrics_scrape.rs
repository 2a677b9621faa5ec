//! The Prometheus endpoint, scraped over HTTP on 127.0.0.1 while the real
//! `serialine-lab demo --metrics` runs both simulated lines:
//!
//! - the Rust side reads the scrape's families and their `line` labels and
//!   checks the counts against the demo's own summary;
//! - the Grafana dashboard (`contrib/grafana/serialine.json`) parses and asks
//!   only for metrics the endpoint serves;
//! - a port that is taken fails the demo with a message naming the address;
//! - `scripts/metrics_scrape.py` parses a scrape with `prometheus_client`'s
//!   text parser (PyPI), run with the interpreter in `METRICS_SCRAPE_PYTHON` (CI's
//!   venv, see `.ci/run`); without it the test says it skipped and why.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const LAB: &str = env!("CARGO_BIN_EXE_serialine-lab");

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// One plain HTTP/1.1 GET of `/metrics`; the body, or why not.
fn scrape(addr: SocketAddr) -> Result<String, String> {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let raw = String::from_utf8(raw).map_err(|e| e.to_string())?;
    let (head, body) = raw.split_once("\r\n\r\n").ok_or("no header end")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("not 200: {head}"));
    }
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Ok(dechunk(body));
    }
    Ok(body.to_string())
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A sample: metric name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// The text format's sample lines (comments skipped). Label values here
/// hold no escaped quotes or commas, which is all this test needs.
fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("sample line has a value");
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => {
                    let inner = rest.trim_end_matches('}');
                    let labels = inner
                        .split(',')
                        .filter(|kv| !kv.is_empty())
                        .map(|kv| {
                            let (k, v) = kv.split_once('=').expect("label k=v");
                            (k.to_string(), v.trim_matches('"').to_string())
                        })
                        .collect();
                    (n.to_string(), labels)
                }
                None => (series.to_string(), BTreeMap::new()),
            };
            (name, labels, value.parse().expect("numeric sample value"))
        })
        .collect()
}

/// `# TYPE name kind` lines: the families served.
fn families(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(n, k)| (n.to_string(), k.to_string()))
        .collect()
}

fn sum(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(n, l, _)| {
            n == name
                && want
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

/// The demo, its JSON summary, and the endpoint still serving after it.
struct Demo {
    child: Child,
    addr: SocketAddr,
    summary: serde_json::Value,
    /// A scrape taken while the lines ran (before the summary).
    during: String,
    _dir: tempfile::TempDir,
}

impl Demo {
    fn start(units: u64) -> Demo {
        let dir = tempfile::tempdir().unwrap();
        let addr = free_addr();
        let mut child = Command::new(LAB)
            .args([
                "demo",
                "--units",
                &units.to_string(),
                "--json",
                "--no-progress",
            ])
            .args(["--metrics", &addr.to_string(), "--metrics-linger", "120"])
            .arg("--state-dir")
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("serialine-lab demo starts");
        let started = Instant::now();
        let during = loop {
            if let Ok(body) = scrape(addr) {
                break body;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{addr} never answered"
            );
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                child.stderr.take().unwrap().read_to_string(&mut err).ok();
                panic!("demo exited early ({status}): {err}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let summary: serde_json::Value = serde_json::from_str(line.trim())
            .unwrap_or_else(|e| panic!("JSON summary ({e}): {line:?}"));
        // The gauges are sampled every second: let one sample land.
        std::thread::sleep(Duration::from_millis(1500));
        Demo {
            child,
            addr,
            summary,
            during,
            _dir: dir,
        }
    }

    /// SIGTERM ends the linger; the demo exits 0 (upstream agreed).
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(killed.success());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "demo after SIGTERM: {status}");
    }
}

const FAMILIES: &[(&str, &str)] = &[
    ("serialine_units_total", "counter"),
    ("serialine_rejects_total", "counter"),
    ("serialine_added_latency_seconds", "histogram"),
    ("serialine_buffer_serials", "gauge"),
    ("serialine_outbox_events", "gauge"),
    ("serialine_outbox_oldest_event_age_seconds", "gauge"),
    ("serialine_committer_batch_ops", "histogram"),
    ("serialine_device_state", "gauge"),
    ("serialine_device_reconnects_total", "counter"),
    ("serialine_parents_total", "counter"),
    ("serialine_alarms_total", "counter"),
    ("serialine_mqtt_connects_total", "counter"),
    ("serialine_mqtt_connected", "gauge"),
];

/// Metric names a PromQL expression uses: identifiers starting `serialine_`.
fn names_in_expr(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find("serialine_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr" | "definition", serde_json::Value::String(s)) => out.push(s.clone()),
                    ("query", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

#[test]
fn the_demo_serves_every_family_per_line_and_the_dashboard_uses_only_them() {
    let demo = Demo::start(800);
    let text = scrape(demo.addr).expect("scrape after the summary");
    // The endpoint served while the lines ran, in the same format.
    assert!(families(&demo.during)
        .keys()
        .all(|f| f.starts_with("serialine_")));

    let fams = families(&text);
    for (name, kind) in FAMILIES {
        assert_eq!(
            fams.get(*name).map(String::as_str),
            Some(*kind),
            "{name} in:\n{text}"
        );
    }
    let s = samples(&text);
    // Every series of ours carries a line label, and both lines appear.
    for (name, labels, _) in &s {
        assert!(labels.contains_key("line"), "{name} without a line label");
    }
    let lines = demo.summary["lines"].as_array().expect("lines").clone();
    assert_eq!(lines.len(), 2);
    for line in &lines {
        let id = line["line"].as_str().unwrap();
        let n = |k: &str| line[k].as_u64().unwrap() as f64;
        let units = |o: &str| sum(&s, "serialine_units_total", &[("line", id), ("outcome", o)]);
        assert_eq!(units("sent"), 800.0, "{id}");
        assert!(units("committed") > 0.0, "{id}");
        assert_eq!(units("committed"), n("committed"), "{id}");
        assert_eq!(units("rejected"), n("rejected"), "{id}");
        assert_eq!(units("voided"), n("voided"), "{id}");
        assert_eq!(
            sum(&s, "serialine_rejects_total", &[("line", id)]),
            n("rejected"),
            "{id}: rejects by reason add up"
        );
        for (reason, count) in line["rejected_by_reason"].as_object().unwrap() {
            assert_eq!(
                sum(
                    &s,
                    "serialine_rejects_total",
                    &[("line", id), ("reason", reason)]
                ),
                count.as_u64().unwrap() as f64,
                "{id} {reason}"
            );
        }
        assert_eq!(
            sum(&s, "serialine_added_latency_seconds_count", &[("line", id)]),
            n("committed") + n("rejected") + n("voided"),
            "{id}: every decided unit's latency"
        );
        assert!(sum(&s, "serialine_committer_batch_ops_count", &[("line", id)]) > 0.0);
        assert_eq!(
            sum(
                &s,
                "serialine_alarms_total",
                &[("line", id), ("kind", "duplicate-read")]
            ),
            n("duplicates"),
            "{id}: duplicate-read alarms"
        );
        assert_eq!(
            sum(
                &s,
                "serialine_alarms_total",
                &[("line", id), ("kind", "foreign-code")]
            ),
            n("foreign"),
            "{id}: foreign-code alarms"
        );
        assert!(sum(&s, "serialine_mqtt_connects_total", &[("line", id)]) >= 1.0);
        // Each device is in exactly one state.
        for device in ["marker", "camera"] {
            assert_eq!(
                sum(
                    &s,
                    "serialine_device_state",
                    &[("line", id), ("device", device)]
                ),
                1.0,
                "{id} {device}"
            );
        }
        // Upstream acknowledged everything before the summary (the last
        // sample is taken as the demo stops its uplinks).
        assert_eq!(
            sum(&s, "serialine_outbox_events", &[("line", id)]),
            0.0,
            "{id}"
        );
        assert_eq!(
            sum(
                &s,
                "serialine_outbox_oldest_event_age_seconds",
                &[("line", id)]
            ),
            0.0,
            "{id}"
        );
        assert!(
            sum(&s, "serialine_buffer_serials", &[("line", id)]) > 0.0,
            "{id}"
        );
    }

    // The dashboard: valid JSON, a schema version, and only served metrics.
    let path = repo_root().join("contrib/grafana/serialine.json");
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).expect("dashboard JSON");
    assert!(dash["schemaVersion"].as_u64().unwrap_or(0) >= 30);
    assert!(!dash["panels"].as_array().unwrap().is_empty());
    let mut queries = Vec::new();
    exprs(&dash, &mut queries);
    let served: BTreeSet<String> = s.iter().map(|(n, _, _)| n.clone()).collect();
    let mut used = BTreeSet::new();
    for q in &queries {
        used.extend(names_in_expr(q));
    }
    let unknown: Vec<_> = used.difference(&served).collect();
    assert!(
        unknown.is_empty(),
        "dashboard queries unknown metrics {unknown:?}"
    );
    let unused: Vec<_> = FAMILIES
        .iter()
        .filter(|(f, _)| !used.iter().any(|u| u.starts_with(f)))
        .collect();
    assert!(unused.is_empty(), "families without a panel: {unused:?}");
    eprintln!(
        "metrics_scrape: {} bytes, {} families, {} samples; dashboard: {} queries",
        text.len(),
        fams.len(),
        s.len(),
        queries.len()
    );
    demo.stop();
}

#[test]
fn a_taken_port_fails_the_demo_naming_the_address() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let out = Command::new(LAB)
        .args(["demo", "--units", "10", "--json", "--no-progress"])
        .args(["--metrics", &addr.to_string()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&addr.to_string()) && err.contains("metrics"),
        "stderr: {err}"
    );
}

/// `prometheus_client`'s own parser on a live scrape (scripts/metrics_scrape.py).
#[test]
fn prometheus_client_parses_the_scrape() {
    let Some(py) = std::env::var_os("METRICS_SCRAPE_PYTHON") else {
        eprintln!(
            "SKIPPED prometheus_client_parses_the_scrape: METRICS_SCRAPE_PYTHON is not set \
             (.ci/run sets it to a venv with prometheus-client; or run \
             `python3 -m venv V && V/bin/pip install prometheus-client` and METRICS_SCRAPE_PYTHON=V/bin/python)"
        );
        return;
    };
    let out = Command::new(py)
        .arg(repo_root().join("scripts/metrics_scrape.py"))
        .args(["--lab", LAB, "--units", "800"])
        .output()
        .expect("the Python interpreter in METRICS_SCRAPE_PYTHON runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "metrics_scrape.py:\n{stdout}\n{stderr}"
    );
    eprintln!("{}", stdout.trim());
}
