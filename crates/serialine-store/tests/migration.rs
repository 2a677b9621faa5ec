//! A ledger written by schema 1 or 2 (one sled key per issued serial in the
//! `issued` index, each stored block one value) opens under schema 4
//! (per-block arrays of serial hashes, stored blocks in chunks of at most
//! 4 KiB) with every record, outbox event and block position kept.
//!
//! The fixtures hold one history: line `line-1`, blocks 1
//! (A00000000..A00000099) and 2 (B00000000..B00000099); A0..A29 sent,
//! printed and committed, the first ten of those acknowledged upstream
//! (synced); A30..A34 sent, no verdict. `tests/fixtures/schema2-ledger` was
//! written by the schema 2 build; `tests/fixtures/schema1-ledger` by the
//! schema 1 build (`3ead0b1^`, the layout issue 16 measured), with an
//! example that opened the ledger with `tests/common`'s options and made
//! those moves through `Store::reserve`, `apply_blocking` and
//! `outbox_ack_blocking`.

mod common;

use common::*;
use serialine_core::{Serial, UnitState};
use serialine_store::{SerialEntry, Store, StoreError, Transition, SCHEMA_VERSION};
use std::path::Path;

/// The fixtures, oldest schema first.
const FIXTURES: [&str; 2] = ["schema1-ledger", "schema2-ledger"];

fn fixture_copy(dir: &Path, fixture: &str) -> std::path::PathBuf {
    let from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(fixture);
    let to = dir.join("ledger");
    std::fs::create_dir_all(&to).expect("ledger dir");
    for name in ["conf", "db"] {
        std::fs::copy(from.join(name), to.join(name)).expect("fixture file copied");
    }
    to
}

fn serial(s: &str) -> Serial {
    Serial::new(s).expect("valid serial")
}

#[test]
fn schema_1_and_2_ledgers_open_migrated_with_nothing_lost() {
    for fixture in FIXTURES {
        opens_migrated_with_nothing_lost(fixture);
    }
}

fn opens_migrated_with_nothing_lost(fixture: &str) {
    assert_eq!(SCHEMA_VERSION, 8);
    let dir = tempfile::tempdir().expect("temp dir");
    let path = fixture_copy(dir.path(), fixture);
    for round in 0..2 {
        // The second open finds schema 8 and migrates nothing.
        let (store, recovery) = Store::open(options(dir.path())).expect("ledger opens");
        assert_eq!(store.path(), path);
        let c = recovery.counts;
        assert_eq!(
            (c.issued, c.blocks, c.sent, c.committed, c.synced),
            (200, 2, 5, 20, 10),
            "{fixture}, round {round}: {c:?}"
        );
        assert_eq!(recovery.outbox_depth, 20);
        let mut in_flight: Vec<_> = recovery.in_flight.iter().map(|(s, _)| s.clone()).collect();
        in_flight.sort();
        assert_eq!(in_flight, serials("A", 30..35));
        assert!(store.recount().is_ok());

        assert!(matches!(
            store.entry(&serial("A00000003")).expect("readable"),
            SerialEntry::Recorded(r) if r.state == UnitState::Synced
        ));
        assert_eq!(
            store.entry(&serial("A00000050")).expect("readable"),
            SerialEntry::Available { block_id: 1 }
        );
        assert_eq!(
            store.entry(&serial("B00000099")).expect("readable"),
            SerialEntry::Available { block_id: 2 }
        );
        assert_eq!(
            store.entry(&serial("C00000001")).expect("readable"),
            SerialEntry::NotIssued
        );
        assert_eq!(store.buffer_depth(), 165);
    }

    // The serials left come out, once each, and never a recorded one.
    let (store, _) = Store::open(options(dir.path())).expect("ledger opens");
    let mut got = store.reserve(500).expect("reserve");
    got.sort();
    let mut want = serials("A", 35..100);
    want.extend(serials("B", 0..100));
    assert_eq!(got, want);
    // A transition of a serial still in its block, found through the index.
    store.release(&got);
    let r = store.apply_blocking(&[Transition::new(serial("C00000001"), UnitState::Sent)]);
    assert!(matches!(r[0], Err(StoreError::NotIssued { .. })), "{r:?}");
}

#[test]
fn a_block_repeating_an_issued_serial_is_refused_after_migration() {
    for fixture in FIXTURES {
        repeating_block_refused(fixture);
    }
}

fn repeating_block_refused(fixture: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    fixture_copy(dir.path(), fixture);
    let (store, _) = Store::open(options(dir.path())).expect("ledger opens");
    // B00000007 is still in block 2; A00000003 left block 1 long ago.
    for (id, repeated) in [(3, "B00000007"), (4, "A00000003")] {
        let mut s = serials("D", 0..10);
        s.push(serial(repeated));
        let block = sealed_block(id, LINE, SECRET, s);
        let err = store.add_block_blocking(&block).expect_err("refused");
        assert!(
            matches!(err, StoreError::OverlappingBlock { block_id, .. } if block_id == id),
            "{repeated}: {err:?}"
        );
    }
    assert_eq!(store.counts().blocks, 2, "nothing was stored");
    // A block of fresh serials is taken.
    store
        .add_block_blocking(&sealed_block(5, LINE, SECRET, serials("E", 0..10)))
        .expect("fresh block stored");
}

#[test]
fn schema_6_outbox_entries_drain_before_the_chunks_after_them() {
    for fixture in FIXTURES {
        old_entries_drain_first(fixture);
    }
}

/// The fixtures' 20 events are per-event `outbox` entries (schema 6 and
/// before); outcomes made after the upgrade go to `outbox_log` chunks.
/// Upstream sees the old ones first, then the new, with their ids, and
/// acknowledging all of them in any order empties both.
fn old_entries_drain_first(fixture: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    fixture_copy(dir.path(), fixture);
    let (store, _) = Store::open(options(dir.path())).expect("ledger opens");
    let before = store.outbox_peek(usize::MAX).expect("outbox readable");
    assert_eq!(before.len(), 20, "{fixture}");
    let fresh = serials("A", 35..40);
    let got = store.reserve(5).expect("reserve");
    assert_eq!(got, fresh);
    commit_through(&store, &fresh).expect("committed");
    let all = store.outbox_peek(usize::MAX).expect("outbox readable");
    assert_eq!(all.len(), 25);
    assert_eq!(
        all[..20],
        before[..],
        "{fixture}: the old entries first, as they were"
    );
    let last_old = before.last().expect("old events").seq;
    for (i, e) in all[20..].iter().enumerate() {
        assert_eq!(
            e.seq,
            last_old + 1 + i as u64,
            "{fixture}: sequence continues"
        );
        assert_eq!(e.serial, fresh[i]);
        assert_eq!(e.id, serialine_store::event_id(LINE, &e.serial, e.state));
    }
    let seqs: Vec<u64> = all.iter().rev().map(|e| e.seq).collect();
    assert_eq!(store.outbox_ack_blocking(&seqs).expect("acked"), 25);
    assert_eq!(store.outbox_depth(), 0);
    assert_eq!(
        store.counts().synced,
        35,
        "{fixture}: 10 synced before, 25 now"
    );
    drop(store);
    let db = sled::open(dir.path().join("ledger")).expect("closed ledger opens in sled");
    for tree in ["outbox", "outbox_log"] {
        assert!(
            db.open_tree(tree).expect("tree").is_empty(),
            "{fixture}: {tree}"
        );
    }
}
