//! Issue 13 attacks on the command and acknowledgment topics, against the
//! real daemon: a retained command, a stale command, and forged
//! acknowledgments while upstream cannot store events. Each is something the
//! daemon must refuse (with an alarm) without changing what it does: the job
//! still runs to its end and every outcome still reaches upstream, which the
//! checker verifies; [`Attacks::finish`] verifies the refusals were seen.

use crate::harness::LINE;
use crate::HilError;
use serde::Deserialize;
use serde_json::{json, Value};
use serialine_sim::upstream::Upstream;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The keys every scenario's daemon runs with (`mqtt.command_key_file`,
/// `mqtt.ack_key_file`): production settings, so upstream signs its acks.
pub const COMMAND_KEY: [u8; 32] = [0xc0; 32];
pub const ACK_KEY: [u8; 32] = [0xac; 32];
/// The `[mqtt]` keys naming them.
pub const MQTT_KEYS: &str = "command_key_file = \"command.key\"\nack_key_file = \"ack.key\"\n";

/// Writes `command.key` and `ack.key` (64 hex digits, mode 0600) in `root`.
pub fn write_keys(root: &Path) -> Result<(), HilError> {
    for (name, key) in [("command.key", COMMAND_KEY), ("ack.key", ACK_KEY)] {
        let path = root.join(name);
        let io = |what: &str| {
            let what = format!("{what} {}", path.display());
            move |source| HilError::Io { what, source }
        };
        fs::write(&path, hex::encode(key)).map_err(io("writing"))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).map_err(io("chmod"))?;
    }
    Ok(())
}

/// `[attack]` in a scenario file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AttackSpec {
    /// Before the daemon first starts: a retained, correctly signed and
    /// fresh `cmd/job/stop`. Must be refused at every start, never run.
    pub retained_job_stop: bool,
    /// Once this many units are decided: a correctly signed `cmd/job/stop`
    /// issued 10 minutes ago (a late delivery). Must be refused.
    pub stale_job_stop_at_units: Option<u64>,
    /// From `at_units`, for `secs`: upstream cannot store (it drops batches
    /// unacknowledged) while an attacker acknowledges every batch it sees,
    /// signed with a wrong key, and once with the right key for an event the
    /// line never sent. Nothing may be dropped from the outbox.
    pub forged_acks: Option<ForgedAcks>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForgedAcks {
    pub at_units: u64,
    pub secs: f64,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The running attacks of one scenario.
pub struct Attacks {
    spec: AttackSpec,
    site: String,
    client: rumqttc::AsyncClient,
    task: tokio::task::JoinHandle<()>,
    upstream: Upstream,
    forging: Arc<AtomicBool>,
    forged_sent: Arc<AtomicU64>,
    stale_sent: bool,
    forge_window: Option<Instant>,
    forge_done: bool,
}

impl Drop for Attacks {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Attacks {
    /// Connects the attacker (subscribed to the line's `events`, so it sees
    /// every batch) and publishes the retained command if asked, before the
    /// daemon starts.
    pub async fn start(
        spec: &AttackSpec,
        host: &str,
        port: u16,
        site: &str,
        upstream: &Upstream,
    ) -> Result<Attacks, HilError> {
        use rumqttc::{Event, Packet, QoS};
        if let Some(f) = &spec.forged_acks {
            if !(f.secs > 0.0 && f.secs <= 600.0) {
                return Err(HilError::Sim(
                    "attack.forged_acks.secs: expected 0 < secs <= 600".into(),
                ));
            }
        }
        let mut o = rumqttc::MqttOptions::new(format!("hil-attacker-{site}"), host, port);
        o.set_max_packet_size(4 << 20, 4 << 20);
        o.set_keep_alive(Duration::from_secs(10));
        let (client, mut el) = rumqttc::AsyncClient::new(o, 256);
        let events = format!("serialine/{site}/{LINE}/events");
        let ack_topic = format!("serialine/{site}/{LINE}/events/ack");
        client
            .subscribe(&events, QoS::AtLeastOnce)
            .await
            .map_err(|e| HilError::Sim(format!("attacker subscribe: {e}")))?;
        let (ready_tx, mut ready_rx) = tokio::sync::watch::channel(false);
        let forging = Arc::new(AtomicBool::new(false));
        let forged_sent = Arc::new(AtomicU64::new(0));
        let (f, n, c) = (forging.clone(), forged_sent.clone(), client.clone());
        let task = tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = ready_tx.send(true);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) if f.load(Ordering::SeqCst) => {
                        let Ok(batch) = serde_json::from_slice::<Value>(&p.payload) else {
                            continue;
                        };
                        let ids: Vec<String> = batch["events"]
                            .as_array()
                            .map(|a| {
                                a.iter()
                                    .filter_map(|e| e["id"].as_str().map(str::to_string))
                                    .collect()
                            })
                            .unwrap_or_default();
                        let batch_id = batch["batch_id"].as_str().unwrap_or("").to_string();
                        let wrong = [0x66u8; 32];
                        let mut forged = vec![json!({
                            "batch_id": batch_id,
                            "ids": ids,
                            "mac": serialine_sim::upstream::ack_mac(&wrong, &ack_topic, &batch_id, &ids),
                        })];
                        if n.load(Ordering::SeqCst) == 0 {
                            // Upstream's own key, for an event never sent.
                            let never = vec![hex::encode([0x99u8; 32])];
                            forged.push(json!({
                                "batch_id": "forged",
                                "ids": never,
                                "mac": serialine_sim::upstream::ack_mac(&ACK_KEY, &ack_topic, "forged", &never),
                            }));
                        }
                        for body in forged {
                            if c.publish(&ack_topic, QoS::AtLeastOnce, false, body.to_string())
                                .await
                                .is_ok()
                            {
                                n.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(error = %e, "attacker connection lost; reconnecting");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready_rx.wait_for(|r| *r))
            .await
            .map_err(|_| HilError::Sim("attacker not subscribed within 10 s".into()))?
            .map_err(|_| HilError::Sim("attacker task ended".into()))?;
        let a = Attacks {
            spec: spec.clone(),
            site: site.to_string(),
            client,
            task,
            upstream: upstream.clone(),
            forging,
            forged_sent,
            stale_sent: false,
            forge_window: None,
            forge_done: spec.forged_acks.is_none(),
        };
        if spec.retained_job_stop {
            a.job_stop("hil-retained", now_ms(), true).await?;
        }
        Ok(a)
    }

    async fn job_stop(
        &self,
        request_id: &str,
        issued_at: u64,
        retain: bool,
    ) -> Result<(), HilError> {
        let topic = format!("serialine/{}/{LINE}/cmd/job/stop", self.site);
        let body = serialine_uplink::sign_command_at(
            &COMMAND_KEY,
            &topic,
            json!({ "request_id": request_id }),
            request_id,
            issued_at,
        );
        self.client
            .publish(&topic, rumqttc::QoS::AtLeastOnce, retain, body.to_string())
            .await
            .map_err(|e| HilError::Sim(format!("attacker publish: {e}")))
    }

    /// Called on every harness poll with the units decided so far.
    pub async fn tick(&mut self, decided: u64) -> Result<(), HilError> {
        if let Some(at) = self.spec.stale_job_stop_at_units {
            if !self.stale_sent && decided >= at {
                self.stale_sent = true;
                self.job_stop("hil-stale", now_ms().saturating_sub(600_000), false)
                    .await?;
            }
        }
        if let Some(f) = &self.spec.forged_acks {
            match self.forge_window {
                None if !self.forge_done && decided >= f.at_units => {
                    self.upstream.set_deaf(true);
                    self.forging.store(true, Ordering::SeqCst);
                    self.forge_window = Some(Instant::now());
                }
                Some(t) if t.elapsed().as_secs_f64() >= f.secs => {
                    self.forging.store(false, Ordering::SeqCst);
                    self.upstream.set_deaf(false);
                    self.forge_window = None;
                    self.forge_done = true;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Every attack has been made (the run may end).
    pub fn done(&self) -> bool {
        self.forge_done && (self.spec.stale_job_stop_at_units.is_none() || self.stale_sent)
    }

    /// Ends the attacks (upstream stores again, the retained command is
    /// cleared) and returns what went wrong: an attack not made, or not
    /// refused with its alarm, or a command the daemon ran.
    pub async fn finish(self, alarms: &[Value], logs: &[String]) -> Vec<String> {
        self.forging.store(false, Ordering::SeqCst);
        self.upstream.set_deaf(false);
        if self.spec.retained_job_stop {
            let topic = format!("serialine/{}/{LINE}/cmd/job/stop", self.site);
            let _ = self
                .client
                .publish(&topic, rumqttc::QoS::AtLeastOnce, true, Vec::new())
                .await;
        }
        let mut problems = Vec::new();
        let seen = |kind: &str, needle: &str| {
            alarms.iter().any(|a| {
                a["kind"] == kind && a["message"].as_str().is_some_and(|m| m.contains(needle))
            })
        };
        let mut expect = |made: bool, kind: &str, needle: &str, what: &str| {
            if !made {
                problems.push(format!("attack {what} was never made"));
            } else if !seen(kind, needle) {
                problems.push(format!(
                    "attack {what}: no {kind} alarm mentioning {needle:?} on MQTT"
                ));
            }
        };
        if self.spec.retained_job_stop {
            expect(true, "command-refused", "retained", "retained cmd/job/stop");
        }
        if self.spec.stale_job_stop_at_units.is_some() {
            expect(
                self.stale_sent,
                "command-refused",
                "stale",
                "stale cmd/job/stop",
            );
        }
        if self.spec.forged_acks.is_some() {
            let made = self.forge_done && self.forged_sent.load(Ordering::SeqCst) > 0;
            expect(made, "ack-refused", "bad MAC", "forged events/ack");
            expect(
                made,
                "ack-refused",
                "never sent",
                "events/ack for a never-sent event",
            );
        }
        if (self.spec.retained_job_stop || self.spec.stale_job_stop_at_units.is_some())
            && logs
                .iter()
                .flat_map(|l| l.lines())
                .any(|l| l.contains("command received") && l.contains("hil-"))
        {
            problems.push("the daemon ran an attacker's cmd/job/stop".into());
        }
        problems
    }
}
