//! A ledger whose committer stops returning (a flush that hangs, a stalled
//! disk) is noticed while the line is idle: an error in the log, a
//! `store-error` alarm on MQTT, and the line's heartbeat held so the
//! systemd watchdog is withheld; released when the ledger writes again.
//! CI once saw sled's flush hang for good: nothing said so, and an idle
//! line would have stayed that way.

use serialine_core::AlarmKind;
use serialine_line::health::{all_alive, watch_ledger};
use serialine_line::Heartbeat;
use serialine_sim::broker::EmbeddedBroker;
use serialine_store::{Store, StoreOptions};
use serialine_uplink::UplinkConfig;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_committer_raises_an_alarm_and_holds_the_heartbeat_until_it_returns() {
    let dir = tempfile::tempdir().expect("temp dir");
    let broker = EmbeddedBroker::start().expect("broker");
    let line = "line-stall";
    let (store, _) = Store::open(StoreOptions::new(
        dir.path().join("ledger"),
        line,
        b"stall secret",
    ))
    .expect("ledger opens");
    let cfg = UplinkConfig::new("127.0.0.1", broker.port, "stall-site", line);
    let (uplink, _commands) = serialine_uplink::start(cfg, store.clone()).expect("uplink");
    let mut alarms = uplink.alarm_tap();
    let heartbeat = Heartbeat::new();
    heartbeat.beat();
    let limit = Duration::from_millis(300);
    let watch = tokio::spawn(watch_ledger(
        line.into(),
        store.committer_clock(),
        heartbeat.clone(),
        uplink.clone(),
        limit,
    ));
    assert!(all_alive(
        std::slice::from_ref(&heartbeat),
        Duration::from_secs(60)
    ));

    store.stall_committer(Duration::from_millis(2_000));
    let alarm = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match alarms.recv().await {
                Ok(a) if a.kind == AlarmKind::StoreError => return a,
                Ok(_) => continue,
                Err(e) => panic!("alarm tap: {e}"),
            }
        }
    })
    .await
    .expect("a store-error alarm while the committer is stalled");
    assert!(alarm.message.contains(line), "{}", alarm.message);
    assert!(alarm.message.contains("stalled"), "{}", alarm.message);
    // Held: not alive, however recently the line's loop beat.
    heartbeat.beat();
    assert!(heartbeat.is_held());
    assert!(!all_alive(
        std::slice::from_ref(&heartbeat),
        Duration::from_secs(60)
    ));

    // The batch returns: released, and the ledger works as before.
    tokio::time::timeout(Duration::from_secs(10), async {
        while heartbeat.is_held() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("released once the committer returns");
    heartbeat.beat();
    assert!(all_alive(
        std::slice::from_ref(&heartbeat),
        Duration::from_secs(60)
    ));
    assert_eq!(store.committer_clock().busy_for(), None);
    watch.abort();
    uplink.shutdown(Duration::from_secs(2)).await;
}
