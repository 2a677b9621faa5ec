//! The Prometheus metrics the uplink records, through the `metrics` facade:
//! alarms by kind, MQTT connections, and the per-line gauges sampled from the
//! store (buffer depth, outbox depth, age of the oldest outbox event). Every
//! series carries the line as its `line` label.
//!
//! Without an installed recorder (`[metrics]` unset) the counters are
//! no-ops, and the gauge sampler is not started at all: counting the outbox
//! walks the sled tree, work nobody should pay for when nobody scrapes.

use serialine_store::Store;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Alarms raised, by `kind` (the same kinds as the `alarms` topic).
pub const ALARMS: &str = "serialine_alarms_total";
/// MQTT connections made (CONNACK received); more than one is a reconnect.
pub const MQTT_CONNECTS: &str = "serialine_mqtt_connects_total";
/// 1 while the MQTT link is up and subscribed, else 0.
pub const MQTT_CONNECTED: &str = "serialine_mqtt_connected";
/// Serials buffered for the running (or last) job's product.
pub const BUFFER_SERIALS: &str = "serialine_buffer_serials";
/// Outcomes in the durable outbox, waiting for upstream's ack.
pub const OUTBOX_EVENTS: &str = "serialine_outbox_events";
/// Age of the oldest outcome in the outbox, seconds (0 when empty).
pub const OUTBOX_OLDEST_AGE: &str = "serialine_outbox_oldest_event_age_seconds";

/// How often the store's gauges are read.
pub const SAMPLE_PERIOD: Duration = Duration::from_secs(1);

static SAMPLING: AtomicBool = AtomicBool::new(false);

/// Called once an exporter is installed: uplinks started from then on sample
/// their store's gauges every [`SAMPLE_PERIOD`].
pub fn enable_gauge_sampling() {
    SAMPLING.store(true, Ordering::Release);
}

pub(crate) fn gauge_sampling() -> bool {
    SAMPLING.load(Ordering::Acquire)
}

/// The store's gauges of one line.
pub(crate) struct StoreGauges {
    buffer: metrics::Gauge,
    outbox: metrics::Gauge,
    oldest: metrics::Gauge,
}

impl StoreGauges {
    pub fn new(line: &str) -> StoreGauges {
        StoreGauges {
            buffer: metrics::gauge!(BUFFER_SERIALS, "line" => line.to_string()),
            outbox: metrics::gauge!(OUTBOX_EVENTS, "line" => line.to_string()),
            oldest: metrics::gauge!(OUTBOX_OLDEST_AGE, "line" => line.to_string()),
        }
    }

    /// Reads the store now; `product` is the running (or last) job's.
    pub fn sample(&self, store: &Store, product: Option<serialine_core::Gtin>) {
        let depth = match product {
            // The running product's buffer, as the status topic reports it;
            // an unreadable ledger falls back to every product's serials.
            Some(g) => store
                .buffer_depth_for(&g)
                .unwrap_or_else(|_| store.buffer_depth()),
            None => store.buffer_depth(),
        };
        self.buffer.set(depth as f64);
        self.outbox.set(store.outbox_depth() as f64);
        let age = store
            .outbox_peek(1)
            .ok()
            .and_then(|e| e.first().map(|e| e.at_ms))
            .map_or(0.0, |at| now_ms().saturating_sub(at) as f64 / 1000.0);
        self.oldest.set(age);
    }
}

/// Samples the store's gauges until the uplink is stopped (its task aborted;
/// a clean shutdown takes one last sample, see `UplinkHandle::shutdown`).
pub(crate) async fn sample_gauges(
    line: String,
    store: Store,
    product: tokio::sync::watch::Receiver<Option<serialine_core::Gtin>>,
) {
    let gauges = StoreGauges::new(&line);
    let mut tick = tokio::time::interval(SAMPLE_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let gtin = *product.borrow();
        gauges.sample(&store, gtin);
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
