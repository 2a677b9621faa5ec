//! Outbox drain rate to a real broker: 20,000 outcomes in the ledger, then
//! the uplink publishes them to the embedded rumqttd (or the broker in
//! `SERIALINE_TEST_MQTT=host:port`) and the simulated upstream acknowledges;
//! the clock stops when the ledger has recorded every acknowledgment.
//!
//! `cargo run --release -p serialine-uplink --example drain_rate [events]`

use serialine_core::{RejectReason, UnitState};
use serialine_sim::broker::{EmbeddedBroker, MqttTarget};
use serialine_sim::issuer::Issuer;
use serialine_sim::upstream::Upstream;
use serialine_store::{Store, StoreOptions, Transition};
use serialine_uplink::{start, UplinkConfig};
use std::time::{Duration, Instant};

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
    let mut left = n;
    while left > 0 {
        let serials = store.reserve(left.min(1_000))?;
        left -= serials.len();
        let sent: Vec<_> = serials
            .iter()
            .map(|s| Transition::new(s.clone(), UnitState::Sent))
            .collect();
        for r in store.apply(&sent).await {
            r?;
        }
        let verdicts: Vec<_> = serials
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let to = if i % 10 == 9 {
                    UnitState::Rejected(RejectReason::NoRead)
                } else {
                    UnitState::Committed
                };
                Transition::new(s.clone(), to)
            })
            .collect();
        for r in store.apply(&verdicts).await {
            r?;
        }
    }
    println!("outbox holds {} events", store.outbox_depth());

    let up = Upstream::new();
    let _up_task = up
        .spawn(&MqttTarget::new(&host, port, "drain-upstream"), Some(site))
        .await?;
    let cfg = UplinkConfig::new(&host, port, site, &line);
    let t0 = Instant::now();
    let (uplink, _cmds) = start(cfg, store.clone())?;
    up.wait_for(
        &line,
        Duration::from_secs(300),
        "every event upstream",
        |l| l.unique() == n,
    )
    .await?;
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    let deadline = Instant::now() + Duration::from_secs(300);
    while store.counts().synced + store.counts().reported < n as u64 {
        if Instant::now() > deadline {
            return Err("ledger did not record every acknowledgment within 300 s".into());
        }
        tick.tick().await;
    }
    let elapsed = t0.elapsed();
    let got = up.line(&line);
    println!(
        "drained {n} events in {:.3} s: {:.0} events/s to {host}:{port} (batches {}, raw deliveries {}, duplicates {})",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64(),
        got.batches,
        got.raw_deliveries,
        got.duplicates()
    );
    uplink.abort();
    Ok(())
}
