//! The MQTT connection: one task polls rumqttc's event loop, reconnects with
//! capped exponential backoff, resubscribes after every connect, and routes
//! incoming publishes to the prefetch, outbox and command tasks.

use crate::config::UplinkConfig;
use crate::error::UplinkError;
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet,
    Publish, QoS, SubscribeFilter, Transport,
};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// The last will, and what a clean shutdown publishes: retained on `status`.
pub const OFFLINE: &[u8] = br#"{"state":"offline"}"#;

/// Connection state shared with every task.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Link {
    /// Connected and subscribed: anything published now can be answered.
    pub ready: bool,
    /// Counts connections that became ready; a change means replies to
    /// anything sent before may have been lost.
    pub generation: u64,
}

/// Where incoming publishes go.
pub(crate) struct Inbound {
    pub blocks: mpsc::UnboundedSender<Publish>,
    pub acks: mpsc::UnboundedSender<Publish>,
    pub commands: mpsc::UnboundedSender<Publish>,
    /// `fence/answer` (the fence handshake).
    pub fence: mpsc::UnboundedSender<Publish>,
}

pub(crate) fn options(cfg: &UplinkConfig) -> Result<MqttOptions, UplinkError> {
    for (what, v) in [("site", &cfg.site), ("line", &cfg.line)] {
        if v.is_empty() || v.contains(['/', '+', '#']) {
            return Err(UplinkError::Config {
                what: format!("{what} {v:?} must be non-empty and free of '/', '+' and '#' (it is a topic level)"),
            });
        }
    }
    let mut o = MqttOptions::new(&cfg.client_id, &cfg.host, cfg.port);
    o.set_keep_alive(cfg.keep_alive.max(Duration::from_secs(1)));
    o.set_clean_session(cfg.clean_session);
    o.set_max_packet_size(cfg.max_packet_size, cfg.max_packet_size);
    o.set_request_channel_capacity(256);
    o.set_last_will(LastWill::new(
        cfg.topic("status"),
        OFFLINE.to_vec(),
        QoS::AtLeastOnce,
        true,
    ));
    match (&cfg.username, &cfg.password) {
        (Some(u), p) => {
            o.set_credentials(u, p.clone().unwrap_or_default());
        }
        (None, Some(_)) => {
            return Err(UplinkError::Config {
                what: "a password is set without a username".into(),
            })
        }
        (None, None) => {}
    }
    if let Some(tls) = &cfg.tls {
        let read = |what: &'static str, path: &std::path::Path| {
            std::fs::read(path).map_err(|source| UplinkError::TlsFile {
                what,
                path: path.to_path_buf(),
                source,
            })
        };
        let ca = read("CA certificate", &tls.ca)?;
        let client_auth = match (&tls.client_cert, &tls.client_key) {
            (Some(c), Some(k)) => Some((read("client certificate", c)?, read("client key", k)?)),
            (None, None) => None,
            _ => {
                return Err(UplinkError::Config {
                    what: "TLS client certificate and key must be given together".into(),
                })
            }
        };
        o.set_transport(Transport::tls(ca, client_auth, None));
    }
    Ok(o)
}

/// Publishes, logging a failure: the only failure is a closed event loop
/// (shutting down); a disconnected broker just queues.
pub(crate) async fn publish(
    client: &AsyncClient,
    topic: String,
    qos: QoS,
    retain: bool,
    body: Vec<u8>,
) -> bool {
    match client.publish(&topic, qos, retain, body).await {
        Ok(()) => true,
        Err(e) => {
            tracing::debug!(%topic, error = %e, "publish not queued");
            false
        }
    }
}

pub(crate) async fn run(
    mut eventloop: EventLoop,
    client: AsyncClient,
    cfg: UplinkConfig,
    link: watch::Sender<Link>,
    inbound: Inbound,
) {
    let prefix = cfg.prefix();
    let filters = ["blocks/response", "events/ack", "cmd/#", "fence/answer"].map(|s| cfg.topic(s));
    let mut backoff = cfg.backoff_min;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                tracing::info!(host = %cfg.host, port = cfg.port, session_present = ack.session_present, "MQTT connected");
                backoff = cfg.backoff_min;
                let c = client.clone();
                let subs: Vec<SubscribeFilter> = filters
                    .iter()
                    .map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce))
                    .collect();
                // Not awaited here: the request channel is drained by this
                // very loop, so waiting on it from here could deadlock.
                tokio::spawn(async move {
                    if let Err(e) = c.subscribe_many(subs).await {
                        tracing::debug!(error = %e, "subscribe not queued");
                    }
                });
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                link.send_modify(|l| {
                    l.ready = true;
                    l.generation += 1;
                });
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let Some(rest) = p.topic.strip_prefix(&prefix) else {
                    continue;
                };
                // Our own command replies come back through `cmd/#`.
                let to = match rest {
                    "blocks/response" => &inbound.blocks,
                    "events/ack" => &inbound.acks,
                    "fence/answer" => &inbound.fence,
                    r if r.starts_with("cmd/") && !r.ends_with("/reply") => &inbound.commands,
                    _ => continue,
                };
                // A closed receiver means that task ended (shutdown).
                let _ = to.send(p);
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                tracing::info!("MQTT disconnected cleanly");
                return;
            }
            Ok(_) => {}
            Err(ConnectionError::RequestsDone) => {
                tracing::debug!("MQTT client dropped; connection task ends");
                return;
            }
            Err(e) => {
                let was_ready = link.borrow().ready;
                if was_ready {
                    tracing::warn!(host = %cfg.host, port = cfg.port, error = %e, "MQTT connection lost; the line keeps running, events wait in the outbox");
                    link.send_modify(|l| l.ready = false);
                } else {
                    tracing::debug!(host = %cfg.host, port = cfg.port, error = %e, retry_in = ?backoff, "MQTT connect failed");
                }
                // Backoff between attempts: rumqttc reconnects on the next poll.
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(cfg.backoff_max);
            }
        }
    }
}
