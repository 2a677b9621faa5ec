//! Outbox sync: publishes the store's outbox in order, in batches, and
//! removes events only when upstream acknowledges them by id on `events/ack`.
//!
//! Delivery is at least once: a batch is published again after a reconnect
//! or when its ack is late, and a new process starts again from the oldest
//! event in the outbox. Event ids are stable (invariant 5), so upstream
//! deduplicates; nothing is removed from the durable outbox before upstream
//! has it, so a crash at any point loses nothing.

use crate::config::UplinkConfig;
use crate::conn::{publish, Link};
use crate::operator::Alarm;
use crate::wire::{EventBatch, EventsAck, WireEvent};
use rumqttc::{AsyncClient, Publish, QoS};
use serialine_core::AlarmKind;
use serialine_core::UnitState;
use serialine_store::{OutboxEvent, Store};
use std::collections::{HashMap, HashSet, VecDeque};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Ids this process saw acknowledged, remembered so that a repeated ack (a
/// batch published twice is acked twice) is told apart from an ack for
/// events never sent. Bounded: oldest forgotten first.
#[derive(Default)]
struct Acked {
    order: VecDeque<String>,
    set: HashSet<String>,
}

impl Acked {
    fn insert(&mut self, id: String, cap: usize) {
        if self.set.insert(id.clone()) {
            self.order.push_back(id);
        }
        while self.order.len() > cap {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }
}

struct InFlight {
    batch_id: String,
    /// Seqs of this batch not yet acknowledged.
    open: usize,
    body: Vec<u8>,
    sent: Instant,
}

pub(crate) struct OutboxSync {
    pub cfg: UplinkConfig,
    pub store: Store,
    pub client: AsyncClient,
    pub link: watch::Receiver<Link>,
    pub acks: mpsc::UnboundedReceiver<Publish>,
    pub alarms: mpsc::Sender<Alarm>,
}

pub(crate) fn wire_event(e: &OutboxEvent) -> WireEvent {
    use serialine_store::EventDetail;
    let names = |v: &[serialine_core::Serial]| -> Vec<String> {
        v.iter().map(|s| s.as_str().to_string()).collect()
    };
    let mut w = WireEvent {
        id: e.id_hex(),
        serial: e.serial.as_str().to_string(),
        state: e.state.name().to_string(),
        reason: e.state.reason().map(str::to_string),
        at_ms: e.at_ms,
        block: None,
        serials: Vec::new(),
        children: Vec::new(),
        action: None,
        biz_step: None,
    };
    match &e.detail {
        EventDetail::Unit => {}
        EventDetail::Return { block, serials } => {
            w.block = Some(*block);
            w.serials = names(serials);
        }
        EventDetail::Pack { children } => {
            w.state = "packed".into();
            w.reason = None;
            w.children = names(children);
            w.action = Some("ADD".into());
            w.biz_step = Some("packing".into());
        }
        EventDetail::Unpack { children, all } => {
            w.state = "unpacked".into();
            w.reason = all.then(|| "emptied".to_string());
            w.children = names(children);
            w.action = Some("DELETE".into());
            w.biz_step = Some("unpacking".into());
        }
    }
    w
}

/// A serial voided by the fence carries `reason: "fenced"`: the line lost
/// track of it (it may be on a pack from a lost history), so upstream keeps
/// any outcome it already holds for it.
fn fenced(store: &Store, mut w: WireEvent, e: &OutboxEvent) -> WireEvent {
    if e.state == UnitState::Voided {
        if let Ok(serialine_store::SerialEntry::Recorded(r)) = store.entry(&e.serial) {
            if r.fenced {
                w.reason = Some("fenced".into());
            }
        }
    }
    w
}

impl OutboxSync {
    fn alarm(&self, a: Alarm) {
        if self.alarms.try_send(a).is_err() {
            tracing::error!("alarm channel full or closed; alarm only logged");
        }
    }

    pub async fn run(mut self) {
        let o = self.cfg.outbox.clone();
        let topic = self.cfg.topic("events");
        let mut tick = tokio::time::interval(o.poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut inflight: VecDeque<InFlight> = VecDeque::new();
        // Event id -> (seq, batch id) for events published and not yet acked.
        let mut by_id: HashMap<String, (u64, String)> = HashMap::new();
        let mut pending_since: Option<Instant> = None;
        // Highest seq published by this process: seqs grow in outbox order.
        let mut last_seq: Option<u64> = None;
        let mut acked = Acked::default();
        loop {
            let mut resend = false;
            tokio::select! {
                r = self.link.changed() => {
                    if r.is_err() { return; }
                    // Acks for what was sent on the old connection may be lost.
                    resend = self.link.borrow_and_update().ready;
                }
                msg = self.acks.recv() => {
                    let Some(msg) = msg else { return; };
                    self.on_ack(&msg.payload, &mut by_id, &mut inflight, &mut acked).await;
                }
                _ = tick.tick() => {}
            }
            if !self.link.borrow().ready {
                continue;
            }
            if inflight
                .front()
                .is_some_and(|b| b.sent.elapsed() >= o.ack_timeout)
            {
                tracing::warn!(batches = inflight.len(), timeout = ?o.ack_timeout, "events not acknowledged in time; publishing again");
                resend = true;
            }
            if resend {
                for b in inflight.iter_mut() {
                    tracing::debug!(batch_id = %b.batch_id, "republishing batch");
                    publish(
                        &self.client,
                        topic.clone(),
                        QoS::AtLeastOnce,
                        false,
                        b.body.clone(),
                    )
                    .await;
                    b.sent = Instant::now();
                }
            }
            while inflight.len() < o.window {
                // Everything older than the newest published event is in
                // flight, so this sees every in-flight event plus up to one
                // batch of new ones.
                let events = match self.store.outbox_peek(by_id.len() + o.max_batch) {
                    Ok(e) => e,
                    Err(e) => {
                        self.alarm(Alarm::new(
                            AlarmKind::StoreError,
                            format!("cannot read the outbox: {e}"),
                        ));
                        break;
                    }
                };
                let fresh: Vec<&OutboxEvent> = events
                    .iter()
                    .filter(|e| last_seq.is_none_or(|l| e.seq > l))
                    .take(o.max_batch)
                    .collect();
                if fresh.is_empty() {
                    pending_since = None;
                    break;
                }
                if fresh.len() < o.max_batch {
                    let since = *pending_since.get_or_insert_with(Instant::now);
                    if since.elapsed() < o.linger {
                        break;
                    }
                }
                pending_since = None;
                let (first, last) = (fresh[0].seq, fresh[fresh.len() - 1].seq);
                last_seq = Some(last);
                let batch_id = format!("{}:{first}-{last}", self.cfg.line);
                let batch = EventBatch {
                    batch_id: batch_id.clone(),
                    line: self.cfg.line.clone(),
                    events: fresh
                        .iter()
                        .map(|e| fenced(&self.store, wire_event(e), e))
                        .collect(),
                };
                let body = serde_json::to_vec(&batch).unwrap_or_default();
                for e in &fresh {
                    by_id.insert(e.id_hex(), (e.seq, batch_id.clone()));
                }
                tracing::debug!(%batch_id, events = fresh.len(), "publishing events");
                if !publish(
                    &self.client,
                    topic.clone(),
                    QoS::AtLeastOnce,
                    false,
                    body.clone(),
                )
                .await
                {
                    return;
                }
                inflight.push_back(InFlight {
                    batch_id,
                    open: fresh.len(),
                    body,
                    sent: Instant::now(),
                });
            }
        }
    }

    async fn on_ack(
        &self,
        payload: &[u8],
        by_id: &mut HashMap<String, (u64, String)>,
        inflight: &mut VecDeque<InFlight>,
        acked: &mut Acked,
    ) {
        let value: serde_json::Value = match serde_json::from_slice(payload) {
            Ok(v) => v,
            Err(e) => {
                self.alarm(Alarm::new(
                    AlarmKind::MalformedPayload,
                    format!("events/ack is not valid JSON: {e}"),
                ));
                return;
            }
        };
        if let Some(auth) = &self.cfg.ack_auth {
            let topic = self.cfg.topic("events/ack");
            let checked = match &value {
                serde_json::Value::Object(m) => crate::commands::check_mac(&auth.key, &topic, m),
                _ => Err("not a JSON object".into()),
            };
            if let Err(why) = checked {
                // Dropping events as synced on an ack anyone could publish
                // would lose them: only upstream's key may do that.
                tracing::warn!("events/ack refused: {why}");
                self.alarm(Alarm::new(
                    AlarmKind::AckRefused,
                    format!("events/ack refused, nothing removed from the outbox: {why}"),
                ));
                return;
            }
        }
        let ack: EventsAck = match serde_json::from_value(value) {
            Ok(a) => a,
            Err(e) => {
                self.alarm(Alarm::new(
                    AlarmKind::MalformedPayload,
                    format!("events/ack is not valid JSON of the expected shape: {e}"),
                ));
                return;
            }
        };
        // Ids neither in flight nor acknowledged before by this process may
        // still be events an earlier process published (the oldest of the
        // outbox, not yet published again); anything else was never sent.
        let unknown: Vec<&String> = ack
            .ids
            .iter()
            .filter(|id| !by_id.contains_key(*id) && !acked.set.contains(*id))
            .collect();
        if !unknown.is_empty() {
            let o = &self.cfg.outbox;
            let head: HashSet<String> =
                match self.store.outbox_peek(by_id.len() + o.window * o.max_batch) {
                    Ok(events) => events.iter().map(OutboxEvent::id_hex).collect(),
                    Err(e) => {
                        self.alarm(Alarm::new(
                            AlarmKind::StoreError,
                            format!("cannot read the outbox to check an ack: {e}"),
                        ));
                        return;
                    }
                };
            let never: Vec<&&String> = unknown.iter().filter(|id| !head.contains(**id)).collect();
            if !never.is_empty() {
                tracing::warn!(batch_id = %ack.batch_id, never_sent = never.len(), "events/ack refused: names events this line never sent");
                self.alarm(Alarm::new(
                    AlarmKind::AckRefused,
                    format!(
                        "events/ack for batch {:?} refused, nothing removed from the outbox: {} of its {} ids were never sent by this line (first: {})",
                        ack.batch_id,
                        never.len(),
                        ack.ids.len(),
                        never[0]
                    ),
                ));
                return;
            }
        }
        let known: Vec<&String> = ack
            .ids
            .iter()
            .filter(|id| by_id.contains_key(*id))
            .collect();
        if known.is_empty() {
            // An ack for a batch already acknowledged, or sent by an earlier
            // process: what it covers is published again and acked again.
            tracing::debug!(batch_id = %ack.batch_id, "ack for nothing in flight");
            return;
        }
        let seqs: Vec<u64> = known
            .iter()
            .filter_map(|id| by_id.get(*id).map(|v| v.0))
            .collect();
        match self.store.outbox_ack(&seqs).await {
            Ok(n) => {
                tracing::debug!(batch_id = %ack.batch_id, acked = n, "events synced upstream");
                let cap = 2 * self.cfg.outbox.window * self.cfg.outbox.max_batch;
                for id in known {
                    acked.insert(id.clone(), cap);
                    if let Some((_, batch)) = by_id.remove(id) {
                        if let Some(b) = inflight.iter_mut().find(|b| b.batch_id == batch) {
                            b.open = b.open.saturating_sub(1);
                        }
                    }
                }
                inflight.retain(|b| b.open > 0);
            }
            Err(e) => {
                // Kept in flight: published again on timeout, acked again then.
                self.alarm(Alarm::new(
                    AlarmKind::StoreError,
                    format!(
                        "upstream acknowledged batch {} but the ledger could not record it: {e}",
                        ack.batch_id
                    ),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serialine_core::Serial;
    use serialine_store::EventDetail;

    /// A pack and an unpack say so in EPCIS words on the wire.
    #[test]
    fn hierarchy_events_carry_their_epcis_action_and_biz_step() {
        let s = |x: &str| Serial::new(x).expect("serial");
        let event = |detail| OutboxEvent {
            seq: 1,
            id: [7; 32],
            serial: s("CASE1"),
            state: UnitState::Committed,
            at_ms: 5,
            detail,
        };
        let packed = wire_event(&event(EventDetail::Pack {
            children: vec![s("U1"), s("U2")],
        }));
        assert_eq!(
            (
                packed.state.as_str(),
                packed.action.as_deref(),
                packed.biz_step.as_deref()
            ),
            ("packed", Some("ADD"), Some("packing"))
        );
        assert_eq!(packed.children, ["U1", "U2"]);
        let emptied = wire_event(&event(EventDetail::Unpack {
            children: vec![s("U1")],
            all: true,
        }));
        assert_eq!(
            (
                emptied.state.as_str(),
                emptied.reason.as_deref(),
                emptied.action.as_deref(),
                emptied.biz_step.as_deref()
            ),
            (
                "unpacked",
                Some("emptied"),
                Some("DELETE"),
                Some("unpacking")
            )
        );
        let unit = wire_event(&event(EventDetail::Unit));
        assert_eq!((&unit.action, &unit.biz_step), (&None, &None));
        let json = serde_json::to_string(&unit).expect("json");
        assert!(!json.contains("action"), "{json}");
    }
}
