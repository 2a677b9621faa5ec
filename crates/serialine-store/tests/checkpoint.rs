//! `Store::checkpoint`: the ledger is closed and reopened under the line's
//! feet so sled writes a snapshot, and nobody using the store notices more
//! than a wait.

mod common;

use common::*;
use serialine_core::UnitState;
use serialine_store::Store;
use std::path::Path;

/// sled names its page-table snapshots `snap.<lsn>`; it writes one only
/// while opening a ledger, which is what a checkpoint is for.
fn snapshots(ledger: &Path) -> usize {
    std::fs::read_dir(ledger)
        .expect("ledger directory")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("snap."))
        .count()
}

async fn send_and_commit(store: &Store, n: usize) -> Vec<serialine_core::Serial> {
    let serials = store.reserve(n).expect("reserve");
    for s in &serials {
        store.transition(s, UnitState::Sent).await.expect("sent");
        store
            .transition(s, UnitState::Committed)
            .await
            .expect("committed");
    }
    serials
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_snapshots_the_ledger_and_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path());
    let ledger = dir.path().join("ledger");
    store
        .add_block(&sealed_block(1, LINE, SECRET, serials("K", 0..500)))
        .await
        .unwrap();
    let committed = send_and_commit(&store, 100).await;
    let in_flight = store.reserve(1).unwrap().pop().unwrap();
    store.transition(&in_flight, UnitState::Sent).await.unwrap();
    let before = store.counts();
    assert_eq!(snapshots(&ledger), 0, "sled snapshots only when opening");

    store.checkpoint().await.expect("checkpoint");

    assert_eq!(snapshots(&ledger), 1, "the checkpoint wrote no snapshot");
    assert_eq!(store.counts(), before);
    assert_eq!(store.state_of(&committed[0]).unwrap(), UnitState::Committed);
    assert_eq!(
        store.in_flight().unwrap(),
        vec![(in_flight.clone(), UnitState::Sent)]
    );
    assert_eq!(store.outbox_depth(), 100);
    // The reopened ledger takes writes, and still refuses a second Sent.
    let more = send_and_commit(&store, 10).await;
    assert!(store.transition(&more[0], UnitState::Sent).await.is_err());
    assert_eq!(store.recount().unwrap(), store.counts());
    let after = store.counts();
    drop(store);

    let (store, recovery) = open(dir.path());
    assert_eq!(recovery.counts, after);
    assert_eq!(recovery.in_flight, vec![(in_flight, UnitState::Sent)]);
    assert_eq!(store.state_of(&more[9]).unwrap(), UnitState::Committed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_queued_around_a_checkpoint_waits_and_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path());
    store
        .add_block(&sealed_block(1, LINE, SECRET, serials("W", 0..800)))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while let Some(s) = store.reserve(1).unwrap().pop() {
                store.transition(&s, UnitState::Sent).await.unwrap();
                store.state_of(&s).unwrap();
                store.transition(&s, UnitState::Printed).await.unwrap();
                mine.push(s);
            }
            mine
        }));
    }
    // Checkpoints land while the senders are busy: after 200, 400, 600 sent.
    // (Counts are per state: a sent serial counts as Sent, then as Printed.)
    for sent in [200, 400, 600] {
        tokio::time::timeout(std::time::Duration::from_secs(30), async {
            while store.counts().sent + store.counts().printed < sent {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{sent} serials were not sent within 30 s"));
        store
            .checkpoint()
            .await
            .expect("checkpoint while the line runs");
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 800, "a serial was lost or sent twice");
    assert_eq!(store.counts().printed, 800);
    assert_eq!(store.recount().unwrap(), store.counts());
}
