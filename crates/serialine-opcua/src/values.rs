//! One sampler per line: writes the line's variables when the pipeline
//! publishes a status and every [`crate::SAMPLE_INTERVAL`] (counters and
//! depths come from the ledger, which changes without a status). Clients
//! subscribed to a variable are notified by the stack when it changes.

use crate::nodes::{ensure_device, id, SerialineNodeManager, COUNTERS};
use crate::LineSource;
use opcua::server::SubscriptionCache;
use opcua::types::{DataValue, NodeId, Variant};
use serialine_store::Counts;
use serialine_uplink::{LineState, StatusSnapshot};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// What `State` shows: `running`, `stopped`, `faulted`, and for a paused
/// line `starved` when its buffer is empty (it waits for serials), else
/// `paused`.
pub fn state_name(state: LineState, buffer_depth: u64) -> &'static str {
    match state {
        LineState::Running => "running",
        LineState::Stopped => "stopped",
        LineState::Faulted => "faulted",
        LineState::Paused if buffer_depth == 0 => "starved",
        LineState::Paused => "paused",
    }
}

fn counter(c: &Counts, name: &str) -> u64 {
    match name {
        "Issued" => c.issued,
        "Available" => c.available(),
        "Sent" => c.sent,
        "Printed" => c.printed,
        "Committed" => c.committed,
        "Synced" => c.synced,
        "Rejected" => c.rejected,
        "Voided" => c.voided,
        "Fenced" => c.fenced,
        "Reported" => c.reported,
        "InFlight" => c.in_flight(),
        "Sampled" => c.sampled,
        "Decommissioned" => c.decommissioned,
        "Returned" => c.returned,
        _ => 0,
    }
}

pub async fn run(
    line: LineSource,
    ns: u16,
    manager: Arc<SerialineNodeManager>,
    subscriptions: Arc<SubscriptionCache>,
    stop: CancellationToken,
) {
    let mut status = line.uplink.watch_status();
    let mut tick = tokio::time::interval(crate::SAMPLE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            r = status.changed() => if r.is_err() { return },
            _ = tick.tick() => {}
        }
        let snap = status.borrow_and_update().clone();
        write(&line, ns, &manager, &subscriptions, &snap);
    }
}

fn write(
    line: &LineSource,
    ns: u16,
    manager: &SerialineNodeManager,
    subscriptions: &SubscriptionCache,
    snap: &StatusSnapshot,
) {
    let l = line.id.as_str();
    let store = &line.store;
    let counts = store.counts();
    // As on MQTT `status`: the running job's product's buffer (only those
    // serials can feed it), every product's while no job runs.
    let product = snap
        .job
        .as_ref()
        .and_then(|j| serialine_core::Gtin::parse(&j.gtin).ok());
    let buffer = match &product {
        Some(g) => store.buffer_depth_for(g).unwrap_or_else(|e| {
            tracing::error!(line = %l, "OPC UA: cannot read the product's buffer depth: {e}");
            0
        }),
        None => store.buffer_depth(),
    };
    let mut values: Vec<(NodeId, Variant)> = vec![
        (id(ns, l, "State"), state_name(snap.state, buffer).into()),
        (id(ns, l, "BufferDepth"), buffer.into()),
        (
            id(ns, l, "OutboxDepth"),
            (store.outbox_depth() as u64).into(),
        ),
        (id(ns, l, "Job.Active"), snap.job.is_some().into()),
    ];
    let job = snap.job.clone();
    values.push((
        id(ns, l, "Job.GTIN"),
        job.as_ref()
            .map(|j| j.gtin.clone())
            .unwrap_or_default()
            .into(),
    ));
    values.push((
        id(ns, l, "Job.Lot"),
        job.as_ref()
            .map(|j| j.lot.clone())
            .unwrap_or_default()
            .into(),
    ));
    values.push((
        id(ns, l, "Job.Expiry"),
        job.as_ref()
            .map(|j| j.expiry.clone())
            .unwrap_or_default()
            .into(),
    ));
    values.push((
        id(ns, l, "Job.Quantity"),
        job.as_ref().map(|j| j.quantity).unwrap_or_default().into(),
    ));
    for (name, _) in COUNTERS {
        values.push((
            id(ns, l, &format!("Counters.{name}")),
            counter(&counts, name).into(),
        ));
    }
    if !snap.devices.is_empty() {
        let mut space = manager.address_space().write();
        for d in &snap.devices {
            let node = ensure_device(&mut space, ns, l, &d.name);
            let text = match &d.detail {
                Some(detail) => format!("{}: {detail}", d.state),
                None => d.state.clone(),
            };
            values.push((node, text.into()));
        }
    }
    let result = manager.set_values(
        subscriptions,
        values
            .iter()
            .map(|(n, v)| (n, None, DataValue::new_now(v.clone()))),
    );
    if let Err(e) = result {
        tracing::error!(line = %l, "OPC UA: cannot update the line's values: {e}");
    }
}
