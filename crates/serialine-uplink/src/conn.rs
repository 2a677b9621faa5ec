//! The MQTT connection: one task polls rumqttc's event loop, reconnects with
//! capped exponential backoff, resubscribes after every connect, and routes
//! incoming publishes to the prefetch, outbox and command tasks.

use crate::config::UplinkConfig;
use crate::error::UplinkError;
use crate::operator::Alarm;
use crate::wire::now_ms;
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet,
    Publish, QoS, SubscribeFilter, TlsError, Transport,
};
use serialine_core::AlarmKind;
use std::time::{Duration, Instant};
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

/// Why the uplink cannot connect, while it cannot: set on the first failed
/// attempt, replaced when the cause changes, cleared once connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkFault {
    /// Stable name of the cause, what an operator searches for:
    /// `UnknownIssuer`, `CertificateExpired`, `CertificateNotValidYet`,
    /// `NameMismatch`, `BadSignature`, `BrokerAlert(<TLS alert>)` (the
    /// broker refused our client certificate), `KeyFileHoldsNoKey`,
    /// `KeyDoesNotMatchCertificate`, `BrokerRefused(<CONNACK code>)`,
    /// `ConnectionRefused`, `ConnectionClosed`, `Timeout`, `Io(<kind>)`...
    pub cause: String,
    /// The whole error as rumqttc reported it.
    pub detail: String,
    /// Failed attempts in a row.
    pub attempts: u64,
    /// When the current cause was first seen (ms since the Unix epoch).
    pub since_ms: u64,
}

impl LinkFault {
    /// A cause a retry will not cure: a certificate, key, CA or credentials
    /// problem that needs a person.
    pub fn needs_operator(&self) -> bool {
        !matches!(
            self.cause.as_str(),
            "ConnectionRefused" | "ConnectionClosed" | "Timeout"
        ) && !self.cause.starts_with("Io(")
    }
}

/// Names the cause of a failed connection attempt. rumqttc wraps the TLS
/// handshake's `rustls::Error` in `std::io::Error`s, whose `source()` skips
/// the wrapped error, so the chain is walked by hand.
pub fn classify(e: &ConnectionError) -> String {
    match e {
        ConnectionError::ConnectionRefused(code) => return format!("BrokerRefused({code:?})"),
        ConnectionError::NetworkTimeout | ConnectionError::FlushTimeout => return "Timeout".into(),
        ConnectionError::Tls(TlsError::NoValidCertInChain) => {
            return "CaFileHoldsNoCertificate".into()
        }
        ConnectionError::Tls(TlsError::NoValidClientCertInChain) => {
            return "CertFileHoldsNoCertificate".into()
        }
        ConnectionError::Tls(TlsError::NoValidKeyInChain) => return "KeyFileHoldsNoKey".into(),
        ConnectionError::Tls(TlsError::DNSName(_)) => return "InvalidServerName".into(),
        _ => {}
    }
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut io_kind = None;
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            return rustls_cause(r);
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if let Some(r) = io
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            {
                return rustls_cause(r);
            }
            io_kind.get_or_insert(io.kind());
        }
        cur = err.source();
    }
    use std::io::ErrorKind as K;
    match io_kind {
        Some(K::ConnectionRefused) => "ConnectionRefused".into(),
        Some(K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof) => {
            "ConnectionClosed".into()
        }
        Some(K::TimedOut) => "Timeout".into(),
        Some(k) => format!("Io({k:?})"),
        None => match e {
            ConnectionError::MqttState(_) => "MqttProtocol".into(),
            _ => "Other".into(),
        },
    }
}

fn rustls_cause(e: &rustls::Error) -> String {
    use rustls::{CertificateError as C, Error as E};
    match e {
        E::InvalidCertificate(c) => match c {
            C::UnknownIssuer => "UnknownIssuer".into(),
            C::Expired | C::ExpiredContext { .. } => "CertificateExpired".into(),
            C::NotValidYet | C::NotValidYetContext { .. } => "CertificateNotValidYet".into(),
            C::NotValidForName | C::NotValidForNameContext { .. } => "NameMismatch".into(),
            C::BadSignature => "BadSignature".into(),
            C::Revoked => "CertificateRevoked".into(),
            C::BadEncoding => "BadCertificateEncoding".into(),
            other => format!("InvalidCertificate({})", variant(other)),
        },
        E::AlertReceived(a) => format!("BrokerAlert({a:?})"),
        E::InconsistentKeys(_) => "KeyDoesNotMatchCertificate".into(),
        E::NoCertificatesPresented => "NoCertificatesPresented".into(),
        other => format!("Tls({})", variant(other)),
    }
}

/// The variant name of an error's Debug form, without its fields (which
/// may hold times or names that change on every attempt).
fn variant(e: &dyn std::fmt::Debug) -> String {
    let d = format!("{e:?}");
    d.split(['(', ' ', '{'])
        .next()
        .unwrap_or_default()
        .to_string()
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

/// The failures between two connections, for the log, `STATUS=` and the
/// alarm raised once the broker is reachable again.
#[derive(Default)]
struct Failures {
    /// Causes in the order first seen, with how often each was seen.
    causes: Vec<(String, u64)>,
    last: Option<String>,
    attempts: u64,
    first: Option<Instant>,
    needs_operator: bool,
}

impl Failures {
    /// Records one failed attempt; returns whether its cause differs from
    /// the previous attempt's (the first failure counts as a change).
    fn record(&mut self, fault: &LinkFault) -> bool {
        self.attempts += 1;
        self.first.get_or_insert_with(Instant::now);
        self.needs_operator |= fault.needs_operator();
        let changed = self.last.as_ref() != Some(&fault.cause);
        self.last = Some(fault.cause.clone());
        match self.causes.iter_mut().find(|(c, _)| *c == fault.cause) {
            Some((_, n)) => *n += 1,
            None => self.causes.push((fault.cause.clone(), 1)),
        }
        changed
    }

    fn summary(&self) -> String {
        self.causes
            .iter()
            .map(|(c, n)| format!("{c} x{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

pub(crate) struct Reporting {
    /// Why the uplink cannot connect, for the daemon's `STATUS=`.
    pub fault: watch::Sender<Option<LinkFault>>,
    /// Where the "could not connect" alarm goes once connected.
    pub alarms: mpsc::Sender<Alarm>,
}

pub(crate) async fn run(
    mut eventloop: EventLoop,
    client: AsyncClient,
    cfg: UplinkConfig,
    link: watch::Sender<Link>,
    inbound: Inbound,
    report: Reporting,
) {
    let prefix = cfg.prefix();
    let filters = ["blocks/response", "events/ack", "cmd/#", "fence/answer"].map(|s| cfg.topic(s));
    let mut backoff = cfg.backoff_min;
    let mut failures = Failures::default();
    let connects =
        metrics::counter!(crate::prom_metrics::MQTT_CONNECTS, "line" => cfg.line.clone());
    let connected =
        metrics::gauge!(crate::prom_metrics::MQTT_CONNECTED, "line" => cfg.line.clone());
    connected.set(0.0);
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                tracing::info!(host = %cfg.host, port = cfg.port, session_present = ack.session_present, "MQTT connected");
                backoff = cfg.backoff_min;
                connects.increment(1);
                let failed = std::mem::take(&mut failures);
                report.fault.send_replace(None);
                // Certificate, key and credential problems do not cure
                // themselves: whoever fixed them, or must fix them before
                // the next restart, learns what the line went through.
                // Plain outages are already in the log and the outbox.
                if failed.needs_operator {
                    let secs = failed.first.map_or(0.0, |t| t.elapsed().as_secs_f64());
                    let alarm = Alarm::new(
                        AlarmKind::UplinkConnectFailed,
                        format!(
                            "MQTT connection to {}:{} failed {} time(s) over {secs:.0} s before it succeeded; causes: {}",
                            cfg.host,
                            cfg.port,
                            failed.attempts,
                            failed.summary()
                        ),
                    );
                    if report.alarms.try_send(alarm).is_err() {
                        tracing::error!("uplink-connect-failed alarm not queued: alarm queue full");
                    }
                }
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
                connected.set(1.0);
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
                connected.set(0.0);
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
                connected.set(0.0);
                let cause = classify(&e);
                if was_ready {
                    tracing::warn!(host = %cfg.host, port = cfg.port, error = %e, %cause, "MQTT connection lost; the line keeps running, events wait in the outbox");
                    link.send_modify(|l| l.ready = false);
                } else {
                    let since_ms = report
                        .fault
                        .borrow()
                        .as_ref()
                        .filter(|f| f.cause == cause)
                        .map_or_else(now_ms, |f| f.since_ms);
                    let fault = LinkFault {
                        cause,
                        detail: e.to_string(),
                        attempts: failures.attempts + 1,
                        since_ms,
                    };
                    // The first failure and every change of cause at warn,
                    // with the cause; the retries in between at debug.
                    if failures.record(&fault) {
                        tracing::warn!(host = %cfg.host, port = cfg.port, cause = %fault.cause, error = %e, attempts = fault.attempts, "MQTT connect failed; retrying until it succeeds");
                    } else {
                        tracing::debug!(host = %cfg.host, port = cfg.port, cause = %fault.cause, error = %e, retry_in = ?backoff, "MQTT connect failed");
                    }
                    report.fault.send_replace(Some(fault));
                }
                // Backoff between attempts: rumqttc reconnects on the next poll.
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(cfg.backoff_max);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(cause: &str) -> LinkFault {
        LinkFault {
            cause: cause.into(),
            detail: String::new(),
            attempts: 0,
            since_ms: 0,
        }
    }

    #[test]
    fn warns_on_the_first_failure_and_each_change_of_cause_only() {
        let mut f = Failures::default();
        let changes: Vec<bool> = [
            "ConnectionRefused",
            "ConnectionRefused",
            "UnknownIssuer",
            "UnknownIssuer",
            "ConnectionRefused",
            "ConnectionRefused",
        ]
        .iter()
        .map(|c| f.record(&fault(c)))
        .collect();
        assert_eq!(changes, [true, false, true, false, true, false]);
        assert_eq!(f.attempts, 6);
        assert_eq!(f.summary(), "ConnectionRefused x4, UnknownIssuer x2");
        assert!(f.needs_operator, "UnknownIssuer needs a person");
    }

    #[test]
    fn plain_outages_do_not_need_an_operator() {
        let mut f = Failures::default();
        for c in [
            "ConnectionRefused",
            "ConnectionClosed",
            "Timeout",
            "Io(Other)",
        ] {
            f.record(&fault(c));
        }
        assert!(!f.needs_operator);
        for c in [
            "UnknownIssuer",
            "BrokerAlert(CertificateExpired)",
            "KeyFileHoldsNoKey",
            "BrokerRefused(NotAuthorized)",
        ] {
            assert!(fault(c).needs_operator(), "{c}");
        }
    }
}
