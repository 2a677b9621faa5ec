//! The simulated upstream consumer of line events.
//!
//! Subscribes `serialine/+/+/events`, deduplicates by event id (invariant 5:
//! ids are stable across redelivery), and acknowledges every batch on
//! `serialine/{site}/{line}/events/ack` with the batch id and the ids it now
//! holds. It counts raw deliveries as well as unique ids, so tests can assert
//! exactly-once as upstream sees it while the wire delivers at least once.

use crate::broker::{connect, split_topic, ClientError, MqttTarget};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;

/// One event as carried in a batch (see the uplink README).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireEvent {
    /// Hex of the 32-byte stable event id.
    pub id: String,
    pub serial: String,
    /// `committed`, `rejected` or `voided`.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub at_ms: u64,
    /// A `returned` event: the block and the serials it gives back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub serials: Vec<String>,
    /// A `packed` / `unpacked` event: the children moved into or out of
    /// the parent `serial`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<String>,
}

/// `events` payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventBatch {
    pub batch_id: String,
    pub line: String,
    pub events: Vec<WireEvent>,
}

/// `events/ack` payload: the ids upstream holds durably from that batch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventsAck {
    pub batch_id: String,
    pub ids: Vec<String>,
    /// See [`ack_mac`]; present when the consumer has an ack key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// The uplink's `events/ack` MAC (crate README of serialine-uplink):
/// `hex(blake3::keyed_hash(key, "<full ack topic>\n" + canonical JSON of the
/// ack without "mac"))`. An ack holds only `batch_id` and `ids`, strings, so
/// its canonical form (keys sorted, compact) is serde_json's compact form of
/// [`EventsAck`] without `mac`.
pub fn ack_mac(key: &[u8; 32], topic: &str, batch_id: &str, ids: &[String]) -> String {
    let body = serde_json::to_string(&EventsAck {
        batch_id: batch_id.to_string(),
        ids: ids.to_vec(),
        mac: None,
    })
    .unwrap_or_default();
    let msg = format!("{topic}\n{body}");
    hex::encode(blake3::keyed_hash(key, msg.as_bytes()).as_bytes())
}

/// What upstream holds for one line.
#[derive(Debug, Clone, Default)]
pub struct LineEvents {
    /// Event id -> (serial, state).
    pub events: HashMap<String, (String, String)>,
    /// Event ids in the order they were first seen.
    pub order: Vec<String>,
    /// Every event delivery, duplicates included.
    pub raw_deliveries: u64,
    pub batches: u64,
    /// Same id delivered with different content: must stay 0.
    pub conflicts: u64,
    pub malformed: u64,
    /// Serials reported `voided` with reason `fenced`: the line lost track
    /// of them (a restored ledger); not units, and any outcome held for
    /// them before stays.
    pub fenced: std::collections::HashSet<String>,
    /// `returned` events by id: the serials each gives back, upstream's
    /// to issue again.
    pub returns: HashMap<String, Vec<String>>,
    /// The hierarchy as upstream heard it: child -> parent, from `packed`
    /// and `unpacked` events in order (a repeated id changes nothing).
    pub parent_of: HashMap<String, String>,
}

impl LineEvents {
    /// Every serial given back by a return event.
    pub fn returned_serials(&self) -> impl Iterator<Item = &String> {
        self.returns.values().flatten()
    }

    pub fn unique(&self) -> usize {
        self.events.len()
    }

    pub fn duplicates(&self) -> u64 {
        self.raw_deliveries - self.events.len() as u64
    }
}

#[derive(Default)]
struct State {
    lines: HashMap<String, LineEvents>,
    acking: bool,
    /// Signs acks when set (the line's `mqtt.ack_key_file`).
    ack_key: Option<[u8; 32]>,
    /// Batches arrive but are neither stored nor acknowledged: upstream's
    /// storage is down. The line must keep them and deliver them again.
    deaf: bool,
}

/// The consumer's state; cheap to clone.
#[derive(Clone)]
pub struct Upstream {
    state: Arc<Mutex<State>>,
    changed: Arc<watch::Sender<u64>>,
}

impl Default for Upstream {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream").finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error(transparent)]
    Mqtt(#[from] ClientError),
    #[error("upstream: timed out after {timeout:?} waiting for {what}")]
    Timeout { timeout: Duration, what: String },
}

impl Upstream {
    pub fn new() -> Upstream {
        Upstream {
            state: Arc::new(Mutex::new(State {
                lines: HashMap::new(),
                acking: true,
                ack_key: None,
                deaf: false,
            })),
            changed: Arc::new(watch::channel(0).0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// With acking off, batches are recorded but never acknowledged: the line
    /// must keep them and deliver them again.
    pub fn set_acking(&self, on: bool) {
        self.lock().acking = on;
    }

    /// While deaf, batches are dropped unrecorded and unacknowledged (as if
    /// upstream's storage were down); see `State::deaf`.
    pub fn set_deaf(&self, on: bool) {
        self.lock().deaf = on;
    }

    /// Signs every ack from now on with `key` (or stops signing with `None`).
    pub fn set_ack_key(&self, key: Option<[u8; 32]>) {
        self.lock().ack_key = key;
    }

    /// A copy of what upstream holds for `line`.
    pub fn line(&self, line: &str) -> LineEvents {
        self.lock().lines.get(line).cloned().unwrap_or_default()
    }

    /// Waits until `cond` holds for `line`'s events, re-checking on every
    /// delivery, at most `timeout`.
    pub async fn wait_for(
        &self,
        line: &str,
        timeout: Duration,
        what: &str,
        cond: impl Fn(&LineEvents) -> bool,
    ) -> Result<LineEvents, UpstreamError> {
        let mut rx = self.changed.subscribe();
        let fut = async {
            loop {
                {
                    let st = self.lock();
                    let empty = LineEvents::default();
                    let ev = st.lines.get(line).unwrap_or(&empty);
                    if cond(ev) {
                        return ev.clone();
                    }
                }
                if rx.changed().await.is_err() {
                    // The sender lives in self, so this cannot end; keep the
                    // timeout as the only exit.
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| UpstreamError::Timeout {
                timeout,
                what: format!("{what} (line {line}: {:?})", summary(&self.line(line))),
            })
    }

    /// Records a batch; returns the ack to send, if acking.
    fn record(&self, line: &str, payload: &[u8]) -> Option<EventsAck> {
        let mut st = self.lock();
        if st.deaf {
            return None;
        }
        let acking = st.acking;
        let le = st.lines.entry(line.to_string()).or_default();
        let batch: EventBatch = match serde_json::from_slice(payload) {
            Ok(b) => b,
            Err(e) => {
                le.malformed += 1;
                tracing::warn!(line, error = %e, "upstream: malformed event batch");
                return None;
            }
        };
        le.batches += 1;
        let mut ids = Vec::with_capacity(batch.events.len());
        for ev in batch.events {
            le.raw_deliveries += 1;
            if ev.state == "voided" && ev.reason.as_deref() == Some("fenced") {
                le.fenced.insert(ev.serial.clone());
            }
            if !le.events.contains_key(&ev.id) {
                match ev.state.as_str() {
                    "packed" => {
                        for c in &ev.children {
                            le.parent_of.insert(c.clone(), ev.serial.clone());
                        }
                    }
                    "unpacked" => {
                        for c in &ev.children {
                            le.parent_of.remove(c);
                        }
                    }
                    _ => {}
                }
            }
            if ev.state == "returned" {
                le.returns
                    .entry(ev.id.clone())
                    .or_insert_with(|| ev.serials.clone());
            }
            let value = (ev.serial, ev.state);
            match le.events.get(&ev.id) {
                Some(v) if *v != value => le.conflicts += 1,
                Some(_) => {}
                None => {
                    le.order.push(ev.id.clone());
                    le.events.insert(ev.id.clone(), value);
                }
            }
            ids.push(ev.id);
        }
        drop(st);
        self.changed.send_modify(|n| *n += 1);
        acking.then_some(EventsAck {
            batch_id: batch.batch_id,
            ids,
            mac: None,
        })
    }

    /// Connects and consumes events of every site (or only of `site`) until
    /// the returned task is dropped. Returns once subscribed.
    pub async fn spawn(
        &self,
        target: &MqttTarget,
        site: Option<&str>,
    ) -> Result<UpstreamTask, UpstreamError> {
        let site = site.unwrap_or("+");
        let sim = connect(target, vec![format!("serialine/{site}/+/events")]).await?;
        let me = self.clone();
        let client = sim.client.clone();
        let mut incoming = sim.incoming;
        let serve = tokio::spawn(async move {
            while let Some(p) = incoming.recv().await {
                let Some((site, line, "events")) = split_topic(&p.topic) else {
                    continue;
                };
                // "Durable" for the simulator is: recorded in memory before the ack.
                if let Some(mut ack) = me.record(line, &p.payload) {
                    let topic = format!("serialine/{site}/{line}/events/ack");
                    let key = me.lock().ack_key;
                    if let Some(key) = key {
                        ack.mac = Some(ack_mac(&key, &topic, &ack.batch_id, &ack.ids));
                    }
                    let body = serde_json::to_vec(&ack).unwrap_or_default();
                    if let Err(e) = client
                        .publish(&topic, rumqttc::QoS::AtLeastOnce, false, body)
                        .await
                    {
                        tracing::warn!(%topic, error = %e, "upstream could not acknowledge");
                    }
                }
            }
        });
        Ok(UpstreamTask {
            conn: sim.task,
            serve,
        })
    }
}

fn summary(le: &LineEvents) -> String {
    format!(
        "unique {}, raw {}, batches {}, conflicts {}, malformed {}",
        le.unique(),
        le.raw_deliveries,
        le.batches,
        le.conflicts,
        le.malformed
    )
}

/// The running MQTT side of an upstream consumer; aborted on drop.
pub struct UpstreamTask {
    conn: tokio::task::JoinHandle<()>,
    serve: tokio::task::JoinHandle<()>,
}

impl Drop for UpstreamTask {
    fn drop(&mut self) {
        self.conn.abort();
        self.serve.abort();
    }
}

/// Runs a standalone upstream consumer (`serialine-lab sim upstream`) until
/// cancelled, logging each line's totals as batches arrive.
pub async fn run(target: MqttTarget, site: Option<String>) -> Result<(), UpstreamError> {
    run_with_ack_key(target, site, None).await
}

/// [`run`], signing acks with `ack_key` when given (the lines'
/// `mqtt.ack_key_file`).
pub async fn run_with_ack_key(
    target: MqttTarget,
    site: Option<String>,
    ack_key: Option<[u8; 32]>,
) -> Result<(), UpstreamError> {
    let up = Upstream::new();
    up.set_ack_key(ack_key);
    let _task = up.spawn(&target, site.as_deref()).await?;
    tracing::info!(host = %target.host, port = target.port, "simulated upstream consuming events");
    let mut rx = up.changed.subscribe();
    while rx.changed().await.is_ok() {
        let st = up.lock();
        for (line, le) in &st.lines {
            tracing::info!(line = %line, "{}", summary(le));
        }
    }
    Ok(())
}
