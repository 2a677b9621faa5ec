//! An embedded MQTT broker (rumqttd) on 127.0.0.1, for tests and `serialine-lab demo`.
//!
//! rumqttd has no in-process shutdown: the broker's threads live until the
//! process exits. Tests that need a broker outage cut the network between the
//! client and the broker instead (see the uplink tests' TCP proxy), which is
//! the more faithful failure anyway.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long [`EmbeddedBroker::start`] waits for the broker to answer a CONNECT.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest payload the embedded broker accepts. Outbox batches of 1,000 events
/// are about 150 KB; the margin keeps a larger batch from being refused.
pub const MAX_PAYLOAD: usize = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("embedded broker: cannot find a free port on 127.0.0.1: {0}")]
    NoPort(#[source] std::io::Error),
    #[error("embedded broker: cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("embedded broker: cannot start the broker thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("embedded broker on 127.0.0.1:{port} stopped at start: {why}")]
    Start { port: u16, why: String },
    #[error("embedded broker on 127.0.0.1:{port} did not accept an MQTT connection within {timeout:?} (last error: {last})")]
    NotReady {
        port: u16,
        timeout: Duration,
        last: String,
    },
}

/// A running embedded broker. Dropping it does not stop the broker (see the
/// module documentation).
#[derive(Debug, Clone)]
pub struct EmbeddedBroker {
    pub host: String,
    pub port: u16,
}

impl EmbeddedBroker {
    /// Starts a broker on a free port of 127.0.0.1 and returns once it has
    /// answered an MQTT CONNECT.
    pub fn start() -> Result<EmbeddedBroker, BrokerError> {
        // The free port is found by binding and releasing it, so another
        // process could take it in between: retry a few times on that race.
        let mut last = None;
        for _ in 0..3 {
            let port = free_port()?;
            match Self::start_on_port(port) {
                Ok(b) => return Ok(b),
                Err(e @ (BrokerError::Start { .. } | BrokerError::Bind { .. })) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(BrokerError::Start {
            port: 0,
            why: "no attempt made".into(),
        }))
    }

    /// Starts a broker on 127.0.0.1:`port` (e.g. a fixed port for the demo).
    /// Fails with [`BrokerError::Bind`] when the port is taken.
    pub fn start_on_port(port: u16) -> Result<EmbeddedBroker, BrokerError> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        // rumqttd binds in a thread of its own and only logs it when that
        // fails, and the readiness probe below cannot tell whose CONNACK it
        // got: with the port taken by another broker it used to report this
        // one ready. So the port is bound here first, and released just
        // before rumqttd binds it (both set SO_REUSEADDR; a listener that
        // never accepted leaves no TIME_WAIT behind). Only a process taking
        // the port in that instant still slips through.
        drop(TcpListener::bind(addr).map_err(|source| BrokerError::Bind { addr, source })?);
        let config = config(addr);
        let (failed_tx, failed_rx) = mpsc::channel::<String>();
        std::thread::Builder::new()
            .name(format!("rumqttd-{port}"))
            .spawn(move || {
                let mut broker = rumqttd::Broker::new(config);
                // start() blocks for the broker's lifetime; it returns only on
                // a configuration or listener error.
                let why = match broker.start() {
                    Ok(()) => "broker exited".to_string(),
                    Err(e) => e.to_string(),
                };
                let _ = failed_tx.send(why);
            })
            .map_err(BrokerError::Thread)?;
        wait_ready(port, &failed_rx)?;
        // The probe may have been answered by whoever holds the port while
        // rumqttd's listener failed; a failure already reported says so.
        if let Ok(why) = failed_rx.try_recv() {
            return Err(BrokerError::Start { port, why });
        }
        tracing::info!(%addr, "embedded MQTT broker ready");
        Ok(EmbeddedBroker {
            host: "127.0.0.1".into(),
            port,
        })
    }

    /// `host:port`.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

fn free_port() -> Result<u16, BrokerError> {
    let l = TcpListener::bind(("127.0.0.1", 0)).map_err(BrokerError::NoPort)?;
    let port = l.local_addr().map_err(BrokerError::NoPort)?.port();
    drop(l);
    Ok(port)
}

fn config(listen: SocketAddr) -> rumqttd::Config {
    let connections = rumqttd::ConnectionSettings {
        connection_timeout_ms: 10_000,
        max_payload_size: MAX_PAYLOAD,
        max_inflight_count: 500,
        auth: None,
        external_auth: None,
        // Publishing to a topic nobody subscribed to yet must not be an error.
        dynamic_filters: true,
    };
    let server = rumqttd::ServerSettings {
        name: "v4-embedded".into(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections,
    };
    rumqttd::Config {
        id: 0,
        router: rumqttd::RouterConfig {
            max_connections: 1000,
            max_outgoing_packet_count: 200,
            max_segment_size: 16 * 1024 * 1024,
            max_segment_count: 10,
            ..Default::default()
        },
        v4: Some(HashMap::from([("1".to_string(), server)])),
        ..Default::default()
    }
}

/// Readiness is an MQTT CONNECT answered with CONNACK "accepted", not just an
/// open port: the router must be up too, or the first client would race it.
fn wait_ready(port: u16, failed: &mpsc::Receiver<String>) -> Result<(), BrokerError> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(why) = failed.try_recv() {
            return Err(BrokerError::Start { port, why });
        }
        let last = match probe(port) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            return Err(BrokerError::NotReady {
                port,
                timeout: READY_TIMEOUT,
                last,
            });
        }
        // Bounded retry of a probe, not synchronisation by sleeping: each
        // attempt checks the real condition.
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One MQTT 3.1.1 CONNECT/CONNACK/DISCONNECT exchange over a plain socket.
fn probe(port: u16) -> Result<(), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_millis(1000)))
        .map_err(|e| e.to_string())?;
    let client_id = format!("serialine-probe-{port}");
    let mut var = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x0a];
    var.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    var.extend_from_slice(client_id.as_bytes());
    let mut packet = vec![0x10, var.len() as u8];
    packet.extend_from_slice(&var);
    s.write_all(&packet)
        .map_err(|e| format!("send CONNECT: {e}"))?;
    let mut ack = [0u8; 4];
    s.read_exact(&mut ack)
        .map_err(|e| format!("read CONNACK: {e}"))?;
    if ack != [0x20, 0x02, 0x00, 0x00] {
        return Err(format!("unexpected CONNACK {ack:02x?}"));
    }
    let _ = s.write_all(&[0xe0, 0x00]);
    Ok(())
}

/// Where a simulator's MQTT client connects.
#[derive(Debug, Clone)]
pub struct MqttTarget {
    pub host: String,
    pub port: u16,
    pub client_id: String,
}

impl MqttTarget {
    pub fn new(host: impl Into<String>, port: u16, client_id: impl Into<String>) -> Self {
        MqttTarget {
            host: host.into(),
            port,
            client_id: client_id.into(),
        }
    }
}

/// How long a simulator waits for its first subscription to be acknowledged.
pub const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("MQTT client {client_id} to {host}:{port}: not subscribed within {timeout:?} (last error: {last})")]
    NotReady {
        client_id: String,
        host: String,
        port: u16,
        timeout: Duration,
        last: String,
    },
}

/// A simulator's MQTT connection: the client to publish with and the
/// publishes that arrive on its subscriptions.
pub(crate) struct SimClient {
    pub client: rumqttc::AsyncClient,
    pub incoming: tokio::sync::mpsc::UnboundedReceiver<rumqttc::Publish>,
    pub task: tokio::task::JoinHandle<()>,
}

/// Connects, subscribes `filters` at QoS 1 (again after every reconnect, since
/// the session is clean) and returns once the first subscription is
/// acknowledged, so that nothing published after this returns is missed.
pub(crate) async fn connect(
    target: &MqttTarget,
    filters: Vec<String>,
) -> Result<SimClient, ClientError> {
    use rumqttc::{Event, Incoming, QoS, SubscribeFilter};
    let mut opts = rumqttc::MqttOptions::new(&target.client_id, &target.host, target.port);
    opts.set_keep_alive(Duration::from_secs(10));
    opts.set_max_packet_size(MAX_PAYLOAD, MAX_PAYLOAD);
    opts.set_clean_session(true);
    let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 256);
    let (tx, incoming) = tokio::sync::mpsc::unbounded_channel();
    let (ready_tx, mut ready_rx) =
        tokio::sync::watch::channel(Err::<(), String>("no attempt yet".into()));
    let sub_client = client.clone();
    let task = tokio::spawn(async move {
        let mut backoff = Duration::from_millis(50);
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                    backoff = Duration::from_millis(50);
                    let c = sub_client.clone();
                    let subs: Vec<SubscribeFilter> = filters
                        .iter()
                        .map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce))
                        .collect();
                    // Subscribing from this task would deadlock if the request
                    // channel were full: it is only drained by this poll loop.
                    tokio::spawn(async move {
                        if let Err(e) = c.subscribe_many(subs).await {
                            tracing::warn!(error = %e, "simulator could not subscribe");
                        }
                    });
                }
                Ok(Event::Incoming(Incoming::SubAck(_))) => {
                    let _ = ready_tx.send(Ok(()));
                }
                Ok(Event::Incoming(Incoming::Publish(p))) => {
                    if tx.send(p).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(rumqttc::ConnectionError::RequestsDone) => return,
                Err(e) => {
                    let _ = ready_tx.send_if_modified(|r| {
                        if r.is_err() {
                            *r = Err(e.to_string());
                            true
                        } else {
                            false
                        }
                    });
                    tracing::debug!(error = %e, "simulator MQTT connection lost; reconnecting");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    });
    let ready = tokio::time::timeout(SUBSCRIBE_TIMEOUT, ready_rx.wait_for(|r| r.is_ok()))
        .await
        .map(|r| r.map(|_| ()));
    match ready {
        Ok(Ok(())) => Ok(SimClient {
            client,
            incoming,
            task,
        }),
        _ => {
            let last = match &*ready_rx.borrow() {
                Err(e) => e.clone(),
                Ok(()) => "task ended".into(),
            };
            task.abort();
            Err(ClientError::NotReady {
                client_id: target.client_id.clone(),
                host: target.host.clone(),
                port: target.port,
                timeout: SUBSCRIBE_TIMEOUT,
                last,
            })
        }
    }
}

/// Splits `serialine/{site}/{line}/{rest}` into its parts.
pub fn split_topic(topic: &str) -> Option<(&str, &str, &str)> {
    let rest = topic.strip_prefix("serialine/")?;
    let (site, rest) = rest.split_once('/')?;
    let (line, rest) = rest.split_once('/')?;
    Some((site, line, rest))
}
