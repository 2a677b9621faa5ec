//! Settled blocks (schema 8, `ledger/settle.rs`): at a checkpoint, a
//! used-up block whose serials all ended and were reported leaves the
//! `serials` tree for a compact snapshot and an index run. Everything that
//! read a serial's record still finds it, a settled unit can still be
//! sampled, a block repeating a settled serial is still refused, runs merge
//! as they pile up, and an archived block's serials leave the index.

mod common;

use common::*;
use serialine_core::{RejectReason, SamplePurpose, Serial, UnitState};
use serialine_store::{ArchiveOptions, SerialEntry, Store, StoreError, Transition};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, SystemTime};

fn tree_len(dir: &Path, tree: &str) -> usize {
    let db = sled::open(dir.join("ledger")).expect("closed ledger opens in sled");
    db.open_tree(tree).expect("tree").len()
}

/// Run ids present in the closed ledger's `runs` tree.
fn run_ids(dir: &Path) -> BTreeSet<u32> {
    let db = sled::open(dir.join("ledger")).expect("closed ledger opens in sled");
    db.open_tree("runs")
        .expect("tree")
        .iter()
        .keys()
        .map(|k| {
            let k = k.expect("key");
            u32::from_be_bytes([k[0], k[1], k[2], k[3]])
        })
        .collect()
}

/// A block of `n` serials under `prefix`, every one sent and ended:
/// committed and acknowledged, except every tenth rejected (reported).
fn run_block(store: &Store, id: u64, prefix: &str, n: u32) -> Vec<Serial> {
    let units = serials(prefix, 0..n);
    store
        .add_block_blocking(&sealed_block(id, LINE, SECRET, units.clone()))
        .expect("block stored");
    assert_eq!(
        store.reserve(n as usize).expect("reserve").len(),
        n as usize
    );
    let mut sent: Vec<Transition> = Vec::new();
    for u in &units {
        sent.push(Transition::new(u.clone(), UnitState::Sent));
    }
    for r in store.apply_blocking(&sent) {
        r.expect("sent");
    }
    let rejected: Vec<&Serial> = units.iter().step_by(10).collect();
    let mut ends = Vec::new();
    for (i, u) in units.iter().enumerate() {
        if i % 10 == 0 {
            ends.push(Transition::new(
                u.clone(),
                UnitState::Rejected(RejectReason::NoRead),
            ));
        } else {
            ends.push(Transition::new(u.clone(), UnitState::Printed));
        }
    }
    for r in store.apply_blocking(&ends) {
        r.expect("moved");
    }
    let commits: Vec<Transition> = units
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 10 != 0)
        .map(|(_, u)| Transition::new(u.clone(), UnitState::Committed))
        .collect();
    for r in store.apply_blocking(&commits) {
        r.expect("committed");
    }
    assert_eq!(rejected.len(), n.div_ceil(10) as usize);
    ack_outbox(store).expect("acknowledged");
    units
}

#[test]
fn a_settled_block_is_found_moved_refused_again_and_counted_as_before() {
    let dir = tempfile::tempdir().expect("temp dir");
    let units;
    {
        let (store, _) = open(dir.path());
        units = run_block(&store, 1, "A", 500);
        let before = store.counts();
        let exported_before = store.records_since(0, |_| true).expect("export");
        store.checkpoint_blocking().expect("checkpoint settles");
        assert_eq!(store.counts(), before, "settling moves no serial");
        assert_eq!(store.recount().expect("recount"), before);
        assert_eq!(
            store.records_since(0, |_| true).expect("export"),
            exported_before,
            "an export reads the settled records as it read the records"
        );
        assert!(matches!(
            store.entry(&units[3]).expect("readable"),
            SerialEntry::Recorded(r) if r.state == UnitState::Synced && r.block_id == 1
        ));
        assert!(matches!(
            store.entry(&units[10]).expect("readable"),
            SerialEntry::Recorded(r) if r.state == UnitState::Rejected(RejectReason::NoRead) && r.reported
        ));
        assert_eq!(
            store.entry(&serial("Z00000001")).expect("readable"),
            SerialEntry::NotIssued
        );
    }
    assert_eq!(
        tree_len(dir.path(), "serials"),
        0,
        "no key per settled serial"
    );
    assert!(tree_len(dir.path(), "settled") >= 3);
    assert!(tree_len(dir.path(), "runs") >= 2);

    let (store, _) = open(dir.path());
    // A settled unit taken for QA after its job: its snapshot moves.
    let sample = Transition::new(units[7].clone(), UnitState::Sampled(SamplePurpose::Qa));
    store.apply_blocking(&[sample])[0]
        .as_ref()
        .expect("a settled unit is sampled");
    assert_eq!(
        store.state_of(&units[7]).expect("readable"),
        UnitState::Sampled(SamplePurpose::Qa)
    );
    // Sent again: refused, the store seeing its settled state.
    let again = Transition::new(units[8].clone(), UnitState::Sent);
    let r = store.apply_blocking(&[again]);
    assert!(
        matches!(
            r[0],
            Err(StoreError::NotReserved {
                state: UnitState::Synced,
                ..
            })
        ),
        "{r:?}"
    );
    // A move the lifecycle forbids is refused by the ledger from it.
    let back = Transition::new(units[9].clone(), UnitState::Committed);
    let r = store.apply_blocking(&[back]);
    assert!(matches!(r[0], Err(StoreError::Transition { .. })), "{r:?}");
    assert_eq!(store.outbox_depth(), 1);
    ack_outbox(&store).expect("acknowledged");
    assert!(matches!(
        store.entry(&units[7]).expect("readable"),
        SerialEntry::Recorded(r) if r.reported
    ));
    assert_eq!(store.counts(), store.recount().expect("recount"));
    // Never reissued: a block repeating a settled serial is refused.
    let mut repeat = serials("B", 0..10);
    repeat.push(units[123].clone());
    let err = store
        .add_block_blocking(&sealed_block(2, LINE, SECRET, repeat))
        .expect_err("refused");
    assert!(
        matches!(
            err,
            StoreError::OverlappingBlock {
                block_id: 2,
                earlier: 1
            }
        ),
        "{err:?}"
    );
    store
        .add_block_blocking(&sealed_block(3, LINE, SECRET, serials("C", 0..10)))
        .expect("a fresh block is taken");
}

fn serial(s: &str) -> Serial {
    Serial::new(s).expect("valid serial")
}

#[test]
fn runs_merge_as_rounds_pile_up_and_archived_blocks_leave_the_index() {
    let dir = tempfile::tempdir().expect("temp dir");
    let prefixes: Vec<String> = (0..12).map(|i| format!("R{i:02}")).collect();
    let mut all: Vec<Vec<Serial>> = Vec::new();
    {
        let (store, _) = open(dir.path());
        for (i, p) in prefixes.iter().enumerate() {
            all.push(run_block(&store, i as u64 + 1, p, 60));
            store.checkpoint_blocking().expect("checkpoint settles");
        }
        for units in &all {
            for u in units {
                assert!(
                    matches!(store.entry(u).expect("readable"), SerialEntry::Recorded(_)),
                    "{u}"
                );
            }
        }
        assert_eq!(store.counts(), store.recount().expect("recount"));
    }
    // Twelve rounds of equal size merge like a binary counter: 12 = 8 + 4.
    let ids = run_ids(dir.path());
    assert!(ids.len() <= 3, "runs left: {ids:?}");

    let (store, _) = open(dir.path());
    // Everything ended before now: archive it all, then settle a new block
    // (its round merges away the archived entries).
    std::thread::sleep(Duration::from_millis(5));
    let archives = dir.path().join("archive");
    let report = store
        .archive_blocking(&ArchiveOptions::new(&archives, SystemTime::now()))
        .expect("archived");
    assert_eq!(report.serials, 12 * 60);
    for units in &all {
        assert_eq!(
            store.entry(&units[1]).expect("readable"),
            SerialEntry::NotIssued,
            "an archived serial is answered as never issued here"
        );
    }
    assert_eq!(store.counts(), store.recount().expect("recount"));
    let last = run_block(&store, 100, "S", 60);
    store.checkpoint_blocking().expect("checkpoint settles");
    assert!(matches!(
        store.entry(&last[5]).expect("readable"),
        SerialEntry::Recorded(_)
    ));
    drop(store);
    assert_eq!(tree_len(dir.path(), "serials"), 0);
}

#[test]
fn a_run_a_crash_left_unnamed_is_removed_at_the_next_open() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let (store, _) = open(dir.path());
        run_block(&store, 1, "A", 100);
        store.checkpoint_blocking().expect("checkpoint settles");
    }
    let named = run_ids(dir.path());
    assert_eq!(named.len(), 1);
    {
        // What a round's first step leaves when the process dies before its
        // batch: chunks of a run the manifest does not name.
        let db = sled::open(dir.path().join("ledger")).expect("sled");
        let runs = db.open_tree("runs").expect("tree");
        let mut key = 7u32.to_be_bytes().to_vec();
        key.extend_from_slice(&0u64.to_be_bytes());
        runs.insert(key, vec![0u8; 16]).expect("insert");
        db.flush().expect("flush");
    }
    assert_eq!(run_ids(dir.path()).len(), 2);
    let (store, _) = open(dir.path());
    assert_eq!(store.counts(), store.recount().expect("recount"));
    drop(store);
    assert_eq!(run_ids(dir.path()), named);
}
