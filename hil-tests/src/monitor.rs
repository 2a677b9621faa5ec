//! A small MQTT client that watches a site's `status` and `alarms` topics,
//! for the harness's progress measure ("units decided") and the report.

use crate::{HilError, POLL};
use serde_json::Value;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A status payload that carries ledger counters.
#[derive(Debug, Clone)]
pub struct Status {
    /// Arrival number (monotonic across the monitor's life).
    pub seq: u64,
    pub state: String,
    /// committed + synced + rejected + voided.
    pub decided: u64,
    pub json: Value,
}

#[derive(Default)]
struct State {
    seq: u64,
    last: Option<Status>,
    alarms: Vec<Value>,
    subscribed: bool,
    devices: Vec<DeviceSeen>,
    /// The last status with counters per line (the topic's line level), for
    /// scenarios with several lines: `last` is whichever line spoke last.
    per_line: std::collections::HashMap<String, Status>,
}

/// A device state seen on `status`: each change of a device's state (or of
/// the time it entered it) is recorded once, in arrival order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSeen {
    pub device: String,
    pub state: String,
    pub since_ms: Option<u64>,
}

/// Records the devices of one status payload.
fn record_devices(seen: &mut Vec<DeviceSeen>, json: &Value) {
    let Some(devices) = json.get("devices").and_then(Value::as_array) else {
        return;
    };
    for d in devices {
        let s = DeviceSeen {
            device: d
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            state: d
                .get("state")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            since_ms: d.get("since_ms").and_then(Value::as_u64),
        };
        if seen.iter().rev().find(|x| x.device == s.device) != Some(&s) {
            seen.push(s);
        }
    }
}

/// Checks `expected` ("<device name prefix>:<state>", e.g. `printer:faulted`)
/// against what the monitor saw: those states, in this order, each with a
/// `since_ms` later than the one before for the same device. Returns what is
/// wrong.
pub fn check_device_states(seen: &[DeviceSeen], expected: &[String]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut from = 0;
    let mut last_since: Option<(String, u64)> = None;
    for want in expected {
        let Some((prefix, state)) = want.split_once(':') else {
            problems.push(format!(
                "bad expectation {want:?}; expected \"<device>:<state>\""
            ));
            continue;
        };
        let found = seen[from..]
            .iter()
            .position(|d| d.device.starts_with(prefix) && d.state == state);
        let Some(i) = found else {
            problems.push(format!(
                "status never showed {prefix} {state} (in order {expected:?}); device states seen: {:?}",
                seen.iter()
                    .map(|d| format!("{}:{}@{:?}", d.device, d.state, d.since_ms))
                    .collect::<Vec<_>>()
            ));
            break;
        };
        let d = &seen[from + i];
        match d.since_ms {
            None => problems.push(format!(
                "status shows {} {state} without since_ms",
                d.device
            )),
            Some(since) => {
                if let Some((dev, before)) = &last_since {
                    if *dev == d.device && since <= *before {
                        problems.push(format!(
                            "{} entered {state} at since_ms {since}, not after the previous state's {before}",
                            d.device
                        ));
                    }
                }
                last_since = Some((d.device.clone(), since));
            }
        }
        from += i + 1;
    }
    problems
}

/// Watches `serialine/{site}/+/status` and `serialine/{site}/+/alarms`.
pub struct Monitor {
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn decided(json: &Value) -> Option<u64> {
    let c = json.get("counts")?;
    let n = |k: &str| c.get(k).and_then(Value::as_u64).unwrap_or(0);
    // Serials voided by the fence are not units of the job (issue 13 §2).
    // Sampled and decommissioned units were committed first (issue 15).
    Some(
        (n("committed")
            + n("synced")
            + n("rejected")
            + n("voided")
            + n("sampled")
            + n("decommissioned"))
        .saturating_sub(n("fenced")),
    )
}

impl Monitor {
    /// Connects and returns once subscribed (at most 10 s).
    pub async fn start(host: &str, port: u16, site: &str) -> Result<Monitor, HilError> {
        use rumqttc::{Event, Packet, QoS};
        let mut o = rumqttc::MqttOptions::new(format!("hil-monitor-{site}"), host, port);
        o.set_max_packet_size(4 << 20, 4 << 20);
        o.set_keep_alive(Duration::from_secs(10));
        let (client, mut el) = rumqttc::AsyncClient::new(o, 64);
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        let filters = [
            format!("serialine/{site}/+/status"),
            format!("serialine/{site}/+/alarms"),
        ];
        let task = tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        for f in &filters {
                            let _ = client.try_subscribe(f.clone(), QoS::AtLeastOnce);
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => lock(&st).subscribed = true,
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let json: Value = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                        let mut s = lock(&st);
                        s.seq += 1;
                        if !p.topic.ends_with("/alarms") {
                            let State { devices, .. } = &mut *s;
                            record_devices(devices, &json);
                        }
                        if p.topic.ends_with("/alarms") {
                            s.alarms.push(json);
                        } else if let Some(d) = decided(&json) {
                            let state = json
                                .get("state")
                                .and_then(Value::as_str)
                                .unwrap_or("")
                                .to_string();
                            let status = Status {
                                seq: s.seq,
                                state,
                                decided: d,
                                json,
                            };
                            // serialine/<site>/<line>/status
                            if let Some(line) = p.topic.rsplit('/').nth(1) {
                                s.per_line.insert(line.to_string(), status.clone());
                            }
                            s.last = Some(status);
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        let m = Monitor { state, task };
        let start = Instant::now();
        while !lock(&m.state).subscribed {
            if start.elapsed() > Duration::from_secs(10) {
                return Err(HilError::Sim(format!(
                    "MQTT monitor not subscribed to {host}:{port} within 10 s"
                )));
            }
            tokio::time::sleep(POLL).await;
        }
        Ok(m)
    }

    /// Arrival number of the last message (status or alarm).
    pub fn seq(&self) -> u64 {
        lock(&self.state).seq
    }

    /// The last status that carried counters.
    pub fn status(&self) -> Option<Status> {
        lock(&self.state).last.clone()
    }

    /// The last status with counters `line` published.
    pub fn status_of(&self, line: &str) -> Option<Status> {
        lock(&self.state).per_line.get(line).cloned()
    }

    /// Every device state change seen on `status`, in arrival order.
    pub fn devices(&self) -> Vec<DeviceSeen> {
        lock(&self.state).devices.clone()
    }

    /// Every alarm payload received.
    pub fn alarms(&self) -> Vec<Value> {
        lock(&self.state).alarms.clone()
    }
}

fn lock(s: &Mutex<State>) -> MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}
