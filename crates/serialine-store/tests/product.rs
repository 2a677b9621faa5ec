//! Serials are bound to the product their block was sealed for (issue 13,
//! section 3): a reservation for one GTIN never hands out a serial issued for
//! another, blocks of another product stay stored for their own job, and the
//! per-product buffer depth counts only what can feed that product.

mod common;

use common::*;
use serialine_core::{BlockKey, Gtin, SealedBlock, Serial, UnitState};
use serialine_store::{SerialEntry, Store, Transition};
use std::collections::HashSet;

fn gtin_a() -> Gtin {
    Gtin::parse("09506000134352").unwrap()
}

fn gtin_b() -> Gtin {
    Gtin::parse("04006381333931").unwrap()
}

fn block_for(block_id: u64, gtin: Gtin, serials: Vec<Serial>) -> SealedBlock {
    seal_block_for(&BlockKey::derive(SECRET), LINE, block_id, gtin, serials)
}

/// Blocks 1 and 3 sealed for A (serials A…), block 2 for B (serials B…).
fn mixed_store(dir: &std::path::Path) -> Store {
    let (store, _) = open(dir);
    for (id, g, s) in [
        (1, gtin_a(), serials("A", 0..5)),
        (2, gtin_b(), serials("B", 0..5)),
        (3, gtin_a(), serials("A", 5..10)),
    ] {
        store.add_block_blocking(&block_for(id, g, s)).unwrap();
    }
    store
}

fn send(store: &Store, serials: &[Serial]) {
    let ts: Vec<_> = serials
        .iter()
        .map(|s| Transition::new(s.clone(), UnitState::Sent))
        .collect();
    for r in store.apply_blocking(&ts) {
        r.expect("sent");
    }
}

fn block_of(store: &Store, s: &Serial) -> u64 {
    match store.entry(s).unwrap() {
        SerialEntry::Available { block_id } => block_id,
        SerialEntry::Recorded(r) => r.block_id,
        SerialEntry::NotIssued => panic!("{s} not issued"),
    }
}

#[test]
fn reserve_for_hands_out_only_the_products_serials() {
    let dir = tempfile::tempdir().unwrap();
    let store = mixed_store(dir.path());
    assert_eq!(store.buffer_depth(), 15);
    assert_eq!(store.buffer_depth_for(&gtin_a()).unwrap(), 10);
    assert_eq!(store.buffer_depth_for(&gtin_b()).unwrap(), 5);
    assert_eq!(store.block_gtin(2).unwrap(), gtin_b());

    // Job B first: it gets block 2's five serials and no more, although
    // ten serials of A are buffered.
    let b = store.reserve_for(20, &gtin_b()).unwrap();
    assert_eq!(b.len(), 5);
    assert!(b.iter().all(|s| block_of(&store, s) == 2), "{b:?}");
    assert_eq!(store.buffer_depth_for(&gtin_b()).unwrap(), 0);
    assert_eq!(store.buffer_depth_for(&gtin_a()).unwrap(), 10);
    assert!(store.reserve_for(1, &gtin_b()).unwrap().is_empty());

    // Job A: both of A's blocks, none of B's.
    let a = store.reserve_for(20, &gtin_a()).unwrap();
    assert_eq!(a.len(), 10);
    assert!(a.iter().all(|s| matches!(block_of(&store, s), 1 | 3)));
    let all: HashSet<_> = a.iter().chain(&b).collect();
    assert_eq!(all.len(), 15, "no serial handed out twice");
}

#[test]
fn changeover_keeps_the_other_products_blocks_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let a_sent = {
        let store = mixed_store(dir.path());
        // Job A runs 3 units, then the line changes over to B.
        let a = store.reserve_for(3, &gtin_a()).unwrap();
        send(&store, &a);
        let b = store.reserve_for(100, &gtin_b()).unwrap();
        assert_eq!(b.len(), 5);
        assert!(b.iter().all(|s| s.as_str().starts_with('B')));
        send(&store, &b);
        // A's 7 remaining serials are kept for A.
        assert_eq!(store.buffer_depth_for(&gtin_a()).unwrap(), 7);
        assert_eq!(store.buffer_depth_for(&gtin_b()).unwrap(), 0);
        a
    };
    let (store, _) = open(dir.path());
    assert_eq!(store.buffer_depth_for(&gtin_a()).unwrap(), 7);
    assert_eq!(store.buffer_depth_for(&gtin_b()).unwrap(), 0);
    assert!(store.reserve_for(10, &gtin_b()).unwrap().is_empty());
    let a = store.reserve_for(10, &gtin_a()).unwrap();
    assert_eq!(a.len(), 7);
    assert!(a
        .iter()
        .all(|s| s.as_str().starts_with('A') && !a_sent.contains(s)));
}

#[test]
fn unusable_reservations_return_to_the_back_and_stay_counted() {
    let dir = tempfile::tempdir().unwrap();
    let store = mixed_store(dir.path());
    let first = store.reserve_for(2, &gtin_a()).unwrap();
    assert_eq!(store.buffer_depth_for(&gtin_a()).unwrap(), 8);
    // The first serial's code does not render: it goes back, last in line.
    store.release_to_back(&first[..1]);
    store.release(&first[1..]);
    assert_eq!(store.buffer_depth_for(&gtin_a()).unwrap(), 10);
    // Block 1 is in the window: the unusable serial comes after the rest
    // of it (blocks loaded later come after it).
    let next = store.reserve_for(4, &gtin_a()).unwrap();
    assert_eq!(next[0], first[1], "a released serial is used first");
    assert!(!next.contains(&first[0]), "the unusable one is not next");
    let rest = store.reserve_for(10, &gtin_a()).unwrap();
    assert_eq!(rest.len(), 6);
    assert_eq!(rest[0], first[0]);
    assert_eq!(store.buffer_depth_for(&gtin_a()).unwrap(), 0);
}
