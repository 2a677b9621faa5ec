//! The outbox as a log of chunks (schema 7, `ledger/outbox_log.rs`): many
//! outcomes take a key per chunk rather than per event, acknowledgments in
//! any order empty the log, ids and order are what upstream always got, and
//! a schema 6 ledger's per-event entries drain first.

mod common;

use common::*;
use serialine_core::{Serial, UnitState};
use serialine_store::{event_id, Store};
use std::path::Path;

/// The keys of `tree` in a closed ledger.
fn keys_of(dir: &Path, tree: &str) -> usize {
    let db = sled::open(dir.join("ledger")).expect("closed ledger opens in sled");
    db.open_tree(tree).expect("tree").len()
}

fn seqs_and_ids(store: &Store) -> Vec<(u64, Serial, UnitState, [u8; 32])> {
    store
        .outbox_peek(usize::MAX)
        .expect("outbox readable")
        .into_iter()
        .map(|e| (e.seq, e.serial, e.state, e.id))
        .collect()
}

#[test]
fn a_burst_of_outcomes_takes_a_key_per_chunk_and_drains_in_any_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let units = serials("A", 0..1_000);
    {
        let (store, _) = open(dir.path());
        store
            .add_block_blocking(&sealed_block(1, LINE, SECRET, units.clone()))
            .expect("block stored");
        let got = store.reserve(1_000).expect("reserve");
        assert_eq!(got.len(), 1_000);
        // Four batches of 250 outcomes each, appended to the tail chunk.
        for part in units.chunks(250) {
            commit_through(&store, part).expect("committed");
        }
        let events = seqs_and_ids(&store);
        assert_eq!(events.len(), 1_000);
        for (i, (seq, serial, state, id)) in events.iter().enumerate() {
            assert_eq!(*seq, i as u64, "sequence numbers are contiguous from 0");
            assert_eq!(serial, &units[i], "outcomes in the order they were made");
            assert_eq!(*state, UnitState::Committed);
            assert_eq!(*id, event_id(LINE, serial, *state), "unit ids are derived");
        }
        assert_eq!(store.outbox_depth(), 1_000);
    }
    // 1,000 events in 16 chunks of at most 64, and not a key per event.
    assert_eq!(keys_of(dir.path(), "outbox_log"), 16);
    assert_eq!(keys_of(dir.path(), "outbox"), 0);

    let (store, recovery) = open(dir.path());
    assert_eq!(recovery.outbox_depth, 1_000);
    let all = seqs_and_ids(&store);
    // Acknowledged from the back, odd ones first, with repeats: each event
    // once, whatever the order.
    let odd: Vec<u64> = all
        .iter()
        .rev()
        .map(|e| e.0)
        .filter(|s| s % 2 == 1)
        .collect();
    assert_eq!(store.outbox_ack_blocking(&odd).expect("acked"), 500);
    assert_eq!(
        store.outbox_ack_blocking(&odd).expect("repeat is harmless"),
        0
    );
    assert_eq!(store.outbox_depth(), 500);
    let left = seqs_and_ids(&store);
    assert!(left.iter().all(|e| e.0 % 2 == 0));
    assert_eq!(
        left,
        all.iter()
            .filter(|e| e.0 % 2 == 0)
            .cloned()
            .collect::<Vec<_>>()
    );
    let even: Vec<u64> = left.iter().map(|e| e.0).collect();
    assert_eq!(store.outbox_ack_blocking(&even).expect("acked"), 500);
    assert_eq!(store.outbox_depth(), 0);
    assert_eq!(store.counts().synced, 1_000);
    // A new outcome after the log emptied starts a chunk of its own.
    let more = serials("B", 0..3);
    store
        .add_block_blocking(&sealed_block(2, LINE, SECRET, more.clone()))
        .expect("block stored");
    assert_eq!(store.reserve(3).expect("reserve").len(), 3);
    commit_through(&store, &more).expect("committed");
    let next = seqs_and_ids(&store);
    assert_eq!(
        next.iter().map(|e| e.0).collect::<Vec<_>>(),
        vec![1_000, 1_001, 1_002]
    );
    ack_outbox(&store).expect("acked");
    drop(store);
    assert_eq!(
        keys_of(dir.path(), "outbox_log"),
        0,
        "an acknowledged chunk leaves"
    );
}

#[test]
fn one_outcome_per_batch_fills_a_chunk_before_the_next() {
    // A line at its pace: one outcome per batch. Each batch appends to the
    // tail chunk, so 130 outcomes take 3 keys, not 130.
    let dir = tempfile::tempdir().expect("temp dir");
    let units = serials("A", 0..130);
    {
        let (store, _) = open(dir.path());
        store
            .add_block_blocking(&sealed_block(1, LINE, SECRET, units.clone()))
            .expect("block stored");
        store.reserve(130).expect("reserve");
        for u in &units {
            commit_through(&store, std::slice::from_ref(u)).expect("committed");
        }
        // Upstream acknowledges as it goes, a few behind.
        let first: Vec<u64> = (0..100).collect();
        assert_eq!(store.outbox_ack_blocking(&first).expect("acked"), 100);
        assert_eq!(store.outbox_depth(), 30);
    }
    // The first chunk (0..64) is gone; 64..128 and 128..130 hold the 30.
    assert_eq!(keys_of(dir.path(), "outbox_log"), 2);
    let (store, _) = open(dir.path());
    let left: Vec<u64> = seqs_and_ids(&store).iter().map(|e| e.0).collect();
    assert_eq!(left, (100..130).collect::<Vec<_>>());
}
