//! The uplink's alarms as OPC UA events of `SerialineAlarmEventType`
//! (a BaseEventType with `AlarmKind`, `Serial` and `Line`), raised on the
//! line's object and on the Server object, so a client subscribed to either
//! sees them. `AlarmKind` is the MQTT `alarms` topic's `kind`.

use crate::nodes::{alarm_event_type_id, id};
use crate::LineSource;
use opcua::nodes::{BaseEventType, Event};
use opcua::server::SubscriptionCache;
use opcua::types::{ByteString, DateTime, NodeId, ObjectId, UAString};
use serialine_uplink::{Alarm, AlarmKind};
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

#[derive(Event)]
#[opcua(
    identifier = "s=SerialineAlarmEventType",
    namespace = "urn:serialine:opcua"
)]
pub struct SerialineAlarmEventType {
    base: BaseEventType,
    own_namespace_index: u16,
    pub alarm_kind: UAString,
    pub serial: UAString,
    pub line: UAString,
}

/// Severity by kind: forged or foreign data and a ledger failure are high,
/// everything else medium.
fn severity(kind: &AlarmKind) -> u16 {
    match kind {
        AlarmKind::ForgedBlock
        | AlarmKind::ReplayedBlock
        | AlarmKind::WrongLineBlock
        | AlarmKind::StoreError
        | AlarmKind::DuplicateRead
        | AlarmKind::ForeignCode => 900,
        _ => 500,
    }
}

fn event(ns: u16, line: &LineSource, a: &Alarm, counter: u64) -> SerialineAlarmEventType {
    let time =
        DateTime::from(chrono_from_ms(a.at_ms).unwrap_or_else(|| DateTime::now().as_chrono()));
    // Unique per server run: line, alarm time and a running number.
    let event_id = ByteString::from(format!("{}:{}:{counter}", line.id, a.at_ms).into_bytes());
    let base = BaseEventType::new(alarm_event_type_id(ns), event_id, a.message.clone(), time)
        .set_source_node(id(ns, &line.id, ""))
        .set_source_name(UAString::from(line.id.as_str()))
        .set_severity(severity(&a.kind));
    SerialineAlarmEventType {
        base,
        own_namespace_index: ns,
        alarm_kind: UAString::from(a.kind.as_str()),
        serial: a.serial.as_deref().map(UAString::from).unwrap_or_default(),
        line: UAString::from(line.id.as_str()),
    }
}

fn chrono_from_ms(ms: u64) -> Option<opcua::types::DateTimeUtc> {
    opcua::types::DateTimeUtc::from_timestamp_millis(i64::try_from(ms).ok()?)
}

pub async fn run(
    line: LineSource,
    ns: u16,
    subscriptions: Arc<SubscriptionCache>,
    stop: CancellationToken,
) {
    let mut tap = line.uplink.alarm_tap();
    let source = id(ns, &line.id, "");
    let server: NodeId = ObjectId::Server.into();
    let mut counter = 0u64;
    loop {
        let a = tokio::select! {
            _ = stop.cancelled() => return,
            a = tap.recv() => a,
        };
        match a {
            Ok(a) => {
                counter += 1;
                let e = event(ns, &line, &a, counter);
                subscriptions.notify_events(
                    [(&e as &dyn Event, &source), (&e as &dyn Event, &server)].into_iter(),
                );
            }
            Err(RecvError::Lagged(n)) => {
                tracing::error!(line = %line.id, missed = n, "OPC UA: alarms came faster than they could be raised as events; {n} not raised");
            }
            Err(RecvError::Closed) => return,
        }
    }
}
