//! Outbox drain rate to a real broker: 20,000 outcomes in the ledger, then
//! the uplink publishes them to the embedded rumqttd (or the broker in
//! `SERIALINE_TEST_MQTT=host:port`) and the simulated upstream acknowledges;
//! the clock stops when the ledger has recorded every acknowledgment.
//! `serialine-lab bench` measures the same way (`serialine_uplink::bench`).
//!
//! `cargo run --release -p serialine-uplink --example drain_rate [events]`

use serialine_sim::broker::{EmbeddedBroker, MqttTarget};
use serialine_sim::issuer::Issuer;
use serialine_sim::upstream::Upstream;
use serialine_store::{Store, StoreOptions};
use serialine_uplink::bench::{fill_outbox, time_drain};
use serialine_uplink::UplinkConfig;
use std::time::Duration;

const SECRET: &[u8] = b"drain-rate secret";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = match std::env::args().nth(1) {
        Some(a) => a.parse()?,
        None => 20_000,
    };
    let (host, port) = match std::env::var("SERIALINE_TEST_MQTT") {
        Ok(a) => {
            let (h, p) = a
                .rsplit_once(':')
                .ok_or("SERIALINE_TEST_MQTT is not host:port")?;
            (h.to_string(), p.parse()?)
        }
        Err(_) => {
            let b = EmbeddedBroker::start()?;
            (b.host, b.port)
        }
    };
    let (site, line) = ("bench", format!("drain-{}", std::process::id()));
    let dir = tempfile::tempdir()?;
    let (store, _) = Store::open(StoreOptions::new(dir.path().join("ledger"), &line, SECRET))?;

    // Fill the outbox: n units through Sent to a verdict, every 10th rejected.
    let issuer = Issuer::new(b"drain-rate", 1_000);
    issuer.add_line(&line, SECRET);
    for _ in 0..n.div_ceil(1_000) {
        store.add_block(&issuer.issue(&line)?).await?;
    }
    fill_outbox(&store, n).await?;
    println!("outbox holds {} events", store.outbox_depth());

    let up = Upstream::new();
    let _up_task = up
        .spawn(&MqttTarget::new(&host, port, "drain-upstream"), Some(site))
        .await?;
    let cfg = UplinkConfig::new(&host, port, site, &line);
    let elapsed = time_drain(cfg, &store, n as u64, Duration::from_secs(300)).await?;
    let got = up.line(&line);
    println!(
        "drained {n} events in {:.3} s: {:.0} events/s to {host}:{port} (batches {}, raw deliveries {}, duplicates {})",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64(),
        got.batches,
        got.raw_deliveries,
        got.duplicates()
    );
    Ok(())
}
