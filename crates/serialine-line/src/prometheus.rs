//! The Prometheus endpoint: installs `metrics-exporter-prometheus` as the
//! process's metrics recorder, serving `/metrics` (any path, in fact) in the
//! Prometheus text format on one address. The service does so when the
//! configuration has `[metrics] listen`, the demo with `--metrics ADDR`.
//!
//! Install it before any line opens: the pipeline, the uplink and the
//! ledger's committer take their metric handles when they start, and a
//! handle taken before a recorder exists stays a no-op.
//!
//! Every series carries the line's id as its `line` label.

use std::net::SocketAddr;

/// The metric names the endpoint serves (the names of the families in the
/// scrape; counters end in `_total`, histograms add `_bucket`, `_sum`,
/// `_count`).
pub mod names {
    /// Units by `outcome`: `sent` (code sent to the marking device, after its
    /// durable `Sent`), `committed`, `rejected`, `voided` (counted once durable).
    pub const UNITS: &str = "serialine_units_total";
    /// Rejected units by `reason`: `mismatch`, `no-read`, `low-grade`,
    /// `duplicate`, `device-fault`.
    pub const REJECTS: &str = "serialine_rejects_total";
    /// Latency the daemon adds per unit (reservation to durable `Sent`, plus
    /// camera read to durable verdict), seconds.
    pub const ADDED_LATENCY: &str = "serialine_added_latency_seconds";
    /// 1 for the state each device (`device`: `marker`, `camera`) is in
    /// (`state`: `ok`, `faulted`, `stopped`), 0 for the others.
    pub const DEVICE_STATE: &str = "serialine_device_state";
    /// A device back to `ok` after a fault (its driver reconnected).
    pub const DEVICE_RECONNECTS: &str = "serialine_device_reconnects_total";
    /// Parents per packaging `level` (`case`, `pallet`) by `outcome`:
    /// `sealed` (committed with its contents), `partial` (of those, closed
    /// short at a job's end), `refused` (for rework), `label-rejected`.
    pub const PARENTS: &str = "serialine_parents_total";
    pub use serialine_store::BATCH_OPS_METRIC as COMMITTER_BATCH_OPS;
    pub use serialine_uplink::prom_metrics::{
        ALARMS, BUFFER_SERIALS, MQTT_CONNECTED, MQTT_CONNECTS, OUTBOX_EVENTS, OUTBOX_OLDEST_AGE,
    };
}

/// Buckets of the added-latency histogram, seconds: the goal is p99 < 1 ms,
/// a line's pitch is ~100 ms.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];
/// Buckets of the committer's batch size, transitions per flush.
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0, 4096.0,
];

#[derive(Debug, thiserror::Error)]
pub enum ExporterError {
    #[error("metrics: cannot serve the Prometheus endpoint on {addr}: {why}")]
    Listen { addr: SocketAddr, why: String },
    #[error("metrics: cannot install the Prometheus exporter for {addr}: {why}")]
    Install { addr: SocketAddr, why: String },
}

/// Serves `/metrics` on `addr` from now on, on the current tokio runtime (a
/// thread of its own outside one). Fails, naming `addr`, when it cannot
/// listen there or when a recorder is already installed.
pub fn install(addr: SocketAddr) -> Result<(), ExporterError> {
    use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder};
    let install = |why: BuildError| ExporterError::Install {
        addr,
        why: why.to_string(),
    };
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(Matcher::Full(names::ADDED_LATENCY.into()), LATENCY_BUCKETS)
        .map_err(install)?
        .set_buckets_for_metric(
            Matcher::Full(names::COMMITTER_BATCH_OPS.into()),
            BATCH_BUCKETS,
        )
        .map_err(install)?
        .install()
        .map_err(|e| match e {
            BuildError::FailedToCreateHTTPListener(why) => ExporterError::Listen { addr, why },
            other => install(other),
        })?;
    describe();
    serialine_uplink::prom_metrics::enable_gauge_sampling();
    tracing::info!(%addr, "Prometheus metrics served on http://{addr}/metrics");
    Ok(())
}

/// HELP texts and units for every family.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        names::UNITS,
        "Units by outcome: sent (after its durable Sent), committed, rejected, voided"
    );
    describe_counter!(
        names::PARENTS,
        "Parents per packaging level by outcome: sealed with their contents, partial (of those, closed short at a job end), refused for rework, label-rejected"
    );
    describe_counter!(
        names::REJECTS,
        "Rejected units by reason: mismatch, no-read, low-grade, duplicate, device-fault"
    );
    describe_histogram!(
        names::ADDED_LATENCY,
        Unit::Seconds,
        "Latency the daemon adds per unit: reservation to durable Sent plus camera read to durable verdict"
    );
    describe_gauge!(
        names::DEVICE_STATE,
        "1 for the state each device (marker, camera) is in (ok, faulted, stopped), 0 for the others"
    );
    describe_counter!(
        names::DEVICE_RECONNECTS,
        "Times a device came back to ok after a fault"
    );
    describe_histogram!(
        names::COMMITTER_BATCH_OPS,
        "Transitions made durable by one ledger flush (group commit)"
    );
    describe_counter!(
        names::ALARMS,
        "Alarms raised, by kind (as on the alarms topic)"
    );
    describe_counter!(
        names::MQTT_CONNECTS,
        "MQTT connections made; more than one means reconnects"
    );
    describe_gauge!(
        names::MQTT_CONNECTED,
        "1 while the MQTT link is up and subscribed"
    );
    describe_gauge!(
        names::BUFFER_SERIALS,
        "Serials buffered for the running (or last) job's product"
    );
    describe_gauge!(
        names::OUTBOX_EVENTS,
        "Outcomes in the durable outbox, waiting for upstream's ack"
    );
    describe_gauge!(
        names::OUTBOX_OLDEST_AGE,
        Unit::Seconds,
        "Age of the oldest outcome in the outbox (0 when empty)"
    );
}
