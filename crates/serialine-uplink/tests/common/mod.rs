//! Shared test harness: a real broker (embedded rumqttd, or an external one
//! named by `SERIALINE_TEST_MQTT=host:port`), the simulated issuer and
//! upstream, a cuttable TCP proxy, and bounded waits.
#![allow(dead_code)]

use serde_json::Value;
use serialine_core::{Serial, UnitState};
use serialine_sim::broker::{EmbeddedBroker, MqttTarget};
use serialine_sim::issuer::{Issuer, IssuerTask};
use serialine_sim::upstream::{Upstream, UpstreamTask};
use serialine_store::{Store, StoreOptions};
use serialine_uplink::{OutboxConfig, PrefetchConfig, UplinkConfig};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Generous bound for anything that should take well under a second.
pub const WAIT: Duration = Duration::from_secs(20);

/// THE broker choice: an external broker from `SERIALINE_TEST_MQTT=host:port`
/// (CI runs the suite again against Mosquitto), else one embedded rumqttd per
/// test process. Only 127.0.0.1 is used for the embedded one.
pub fn broker() -> (String, u16) {
    if let Ok(addr) = std::env::var("SERIALINE_TEST_MQTT") {
        let (host, port) = addr
            .rsplit_once(':')
            .unwrap_or_else(|| panic!("SERIALINE_TEST_MQTT={addr:?} is not host:port"));
        let port = port
            .parse()
            .unwrap_or_else(|_| panic!("SERIALINE_TEST_MQTT={addr:?}: bad port"));
        return (host.to_string(), port);
    }
    static EMBEDDED: OnceLock<EmbeddedBroker> = OnceLock::new();
    let b = EMBEDDED.get_or_init(|| {
        EmbeddedBroker::start().unwrap_or_else(|e| panic!("cannot start the embedded broker: {e}"))
    });
    (b.host.clone(), b.port)
}

/// A name unique to this test run, so tests sharing a broker (and reruns
/// against a persistent external broker with retained messages) never meet.
pub fn unique(name: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{name}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub const SECRET: &[u8] = b"test line secret";

pub fn open_store(dir: &std::path::Path, line: &str) -> Store {
    let (store, _) = Store::open(StoreOptions::new(dir.join("ledger"), line, SECRET))
        .unwrap_or_else(|e| panic!("open store: {e}"));
    store
}

/// Every simulator a test starts serves only the test's own site: tests
/// share the broker and must not answer (or acknowledge) each other's lines.
///
/// Uplink settings tuned for tests: fast backoff, short intervals.
pub fn config(host: &str, port: u16, site: &str, line: &str) -> UplinkConfig {
    let mut c = UplinkConfig::new(host, port, site, line);
    c.client_id = unique("uplink");
    c.keep_alive = Duration::from_secs(5);
    c.backoff_min = Duration::from_millis(50);
    c.backoff_max = Duration::from_millis(500);
    c.metrics_interval = Duration::from_millis(500);
    c.prefetch = PrefetchConfig {
        // No prefetch unless a test asks for it.
        low_water_serials: 0,
        low_water_minutes: 0.0,
        high_water_serials: 0,
        high_water_minutes: 0.0,
        max_buffer_serials: 1_000_000,
        request_timeout: Duration::from_secs(3),
        check_interval: Duration::from_millis(50),
    };
    c.outbox = OutboxConfig {
        ack_timeout: Duration::from_secs(3),
        ..OutboxConfig::default()
    };
    c
}

pub async fn issuer(
    host: &str,
    port: u16,
    site: &str,
    line: &str,
    block_size: u32,
) -> (Issuer, IssuerTask) {
    let issuer = Issuer::new(unique("seed").as_bytes(), block_size);
    issuer.add_line(line, SECRET);
    let task = issuer
        .spawn(&MqttTarget::new(host, port, unique("issuer")), Some(site))
        .await
        .unwrap_or_else(|e| panic!("start issuer: {e}"));
    (issuer, task)
}

pub async fn upstream(host: &str, port: u16, site: &str) -> (Upstream, UpstreamTask) {
    let up = Upstream::new();
    let task = up
        .spawn(&MqttTarget::new(host, port, unique("upstream")), Some(site))
        .await
        .unwrap_or_else(|e| panic!("start upstream: {e}"));
    (up, task)
}

/// Stores `blocks` honest blocks straight from the issuer (no MQTT).
pub async fn preload(store: &Store, issuer: &Issuer, line: &str, blocks: usize) {
    for _ in 0..blocks {
        let sealed = issuer.issue(line).unwrap_or_else(|e| panic!("issue: {e}"));
        store
            .add_block(&sealed)
            .await
            .unwrap_or_else(|e| panic!("add block: {e}"));
    }
}

/// Runs `n` units through the lifecycle the way the pipeline does (reserve,
/// Sent durable, then a verdict), every 10th rejected. Returns the outcomes
/// in order, which is outbox order.
pub async fn produce(store: &Store, n: usize) -> Vec<(Serial, UnitState)> {
    serialine_uplink::bench::fill_outbox(store, n)
        .await
        .unwrap_or_else(|e| panic!("producing {n} outcomes: {e}"))
}

/// Waits for `fut`, failing the test with `what` after `timeout`.
pub async fn within<T>(timeout: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(timeout, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out after {timeout:?} waiting for {what}"))
}

/// Polls `cond` every 20 ms until it holds, at most `timeout`: for
/// conditions with no event to wait on (store depths).
pub async fn eventually(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    within(timeout, what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// One received publish.
#[derive(Debug, Clone)]
pub struct Msg {
    pub topic: String,
    pub retain: bool,
    pub json: Value,
}

/// A plain MQTT client that records what arrives on `filter`.
pub struct Watcher {
    pub client: rumqttc::AsyncClient,
    rx: mpsc::UnboundedReceiver<Msg>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Watcher {
    /// Returns once subscribed.
    pub async fn start(host: &str, port: u16, filter: &str) -> Watcher {
        use rumqttc::{Event, Packet, QoS};
        let mut o = rumqttc::MqttOptions::new(unique("watch"), host, port);
        o.set_max_packet_size(4 << 20, 4 << 20);
        let (client, mut el) = rumqttc::AsyncClient::new(o, 64);
        client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .unwrap_or_else(|e| panic!("subscribe: {e}"));
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, mut ready_rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = ready_tx.send(true);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let json = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                        let _ = tx.send(Msg {
                            topic: p.topic.clone(),
                            retain: p.retain,
                            json,
                        });
                    }
                    Ok(_) => {}
                    Err(e) => panic!("watcher lost its broker connection: {e}"),
                }
            }
        });
        within(WAIT, "watcher subscription", ready_rx.wait_for(|r| *r))
            .await
            .unwrap_or_else(|_| panic!("watcher task ended"));
        Watcher { client, rx, task }
    }

    /// The next message for which `pred` holds (others are skipped).
    pub async fn next_where(&mut self, what: &str, pred: impl Fn(&Msg) -> bool) -> Msg {
        let mut skipped = Vec::new();
        let found = tokio::time::timeout(WAIT, async {
            loop {
                match self.rx.recv().await {
                    Some(m) if pred(&m) => return Some(m),
                    Some(m) => skipped.push(format!("{} {}", m.topic, m.json)),
                    None => return None,
                }
            }
        })
        .await;
        match found {
            Ok(Some(m)) => m,
            Ok(None) => panic!("watcher ended while waiting for {what}; skipped: {skipped:#?}"),
            Err(_) => panic!("timed out after {WAIT:?} waiting for {what}; skipped: {skipped:#?}"),
        }
    }
}

/// A pullable cable between the uplink and the broker: a real network
/// outage in front of a real broker.
pub async fn proxy(host: &str, port: u16) -> serialine_sim::cable::Cable {
    serialine_sim::cable::Cable::start(format!("{host}:{port}"))
        .await
        .unwrap_or_else(|e| panic!("proxy to {host}:{port}: {e}"))
}
