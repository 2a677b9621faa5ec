//! The ledger's contract, one behaviour per test, each invariant of
//! ARCHITECTURE.md named in its test's name.

mod common;

use common::*;
use serialine_core::{RejectReason, UnitState};
use serialine_store::{event_id, SerialEntry, Store, StoreError, Transition};

fn store_with_block(dir: &std::path::Path, n: u32) -> Store {
    let (store, _) = open(dir);
    store
        .add_block_blocking(&sealed_block(1, LINE, SECRET, serials("S", 0..n)))
        .expect("block stored");
    store
}

fn send(store: &Store, n: usize) -> Vec<serialine_core::Serial> {
    let reserved = store.reserve(n).expect("reserve");
    assert_eq!(reserved.len(), n, "buffer ran dry");
    let ts: Vec<_> = reserved
        .iter()
        .map(|s| Transition::new(s.clone(), UnitState::Sent))
        .collect();
    for r in store.apply_blocking(&ts) {
        r.expect("sent");
    }
    reserved
}

#[test]
fn happy_path_reaches_synced_and_counts_follow() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_block(dir.path(), 10);
    assert_eq!(store.buffer_depth(), 10);
    let s = send(&store, 1).remove(0);
    assert_eq!(store.buffer_depth(), 9);
    for to in [UnitState::Printed, UnitState::Committed] {
        store.transition_blocking(&s, to).unwrap();
    }
    let events = store.outbox_peek(10).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].state, UnitState::Committed);
    assert_eq!(events[0].id, event_id(LINE, &s, UnitState::Committed));
    assert_eq!(store.outbox_ack_blocking(&[events[0].seq]).unwrap(), 1);
    assert_eq!(store.state_of(&s).unwrap(), UnitState::Synced);
    let c = store.counts();
    assert_eq!((c.issued, c.synced, c.committed, c.sent), (10, 1, 0, 0));
    assert_eq!(store.recount().unwrap(), c);
    assert_eq!(store.outbox_depth(), 0);
}

#[test]
fn invariant_1_at_most_once_to_a_device() {
    let dir = tempfile::tempdir().unwrap();
    let s = {
        let store = store_with_block(dir.path(), 5);
        let s = send(&store, 1).remove(0);
        // A second Sent in the same run: the reservation is gone.
        let again = store.transition_blocking(&s, UnitState::Sent);
        assert!(
            matches!(
                again,
                Err(StoreError::NotReserved {
                    state: UnitState::Sent,
                    ..
                })
            ),
            "{again:?}"
        );
        s
    };
    // After a restart the pool never hands it out again...
    let (store, recovery) = open(dir.path());
    assert_eq!(recovery.in_flight, vec![(s.clone(), UnitState::Sent)]);
    let all = store.reserve(100).unwrap();
    assert_eq!(all.len(), 4);
    assert!(!all.contains(&s));
    // ...and two sends of one serial in one request are refused.
    let t = Transition::new(all[0].clone(), UnitState::Sent);
    let rs = store.apply_blocking(&[t.clone(), t]);
    assert!(rs[0].is_ok());
    assert!(matches!(rs[1], Err(StoreError::RepeatedInRequest { .. })));
    // A unit's Printed and its verdict travel in one request, in order.
    let both = [
        Transition::new(all[0].clone(), UnitState::Printed),
        Transition::new(all[0].clone(), UnitState::Committed),
    ];
    let rs = store.apply_blocking(&both);
    assert!(rs.iter().all(|r| r.is_ok()), "{rs:?}");
    assert_eq!(store.state_of(&all[0]).unwrap(), UnitState::Committed);
}

#[test]
fn invariant_2_committed_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let committed = {
        let store = store_with_block(dir.path(), 50);
        let sent = send(&store, 20);
        let ts: Vec<_> = sent
            .iter()
            .map(|s| Transition::new(s.clone(), UnitState::Committed))
            .collect();
        assert!(store.apply_blocking(&ts).iter().all(|r| r.is_ok()));
        sent
    };
    let (store, recovery) = open(dir.path());
    assert!(recovery.in_flight.is_empty());
    assert_eq!(recovery.counts.committed, 20);
    assert_eq!(recovery.outbox_depth, 20);
    for s in &committed {
        assert_eq!(store.state_of(s).unwrap(), UnitState::Committed);
    }
}

#[test]
fn invariant_3_rejected_and_voided_are_never_reissued() {
    let dir = tempfile::tempdir().unwrap();
    let (rejected, voided) = {
        let store = store_with_block(dir.path(), 4);
        let sent = send(&store, 2);
        store
            .transition_blocking(&sent[0], UnitState::Rejected(RejectReason::LowGrade))
            .unwrap();
        store
            .transition_blocking(&sent[1], UnitState::Voided)
            .unwrap();
        (sent[0].clone(), sent[1].clone())
    };
    let (store, _) = open(dir.path());
    let rest = store.reserve(10).unwrap();
    assert_eq!(rest.len(), 2);
    assert!(!rest.contains(&rejected) && !rest.contains(&voided));
    for s in [&rejected, &voided] {
        for to in [UnitState::Sent, UnitState::Committed, UnitState::Printed] {
            assert!(store.transition_blocking(s, to).is_err(), "{s} -> {to}");
        }
    }
    // Both outcomes are queued for upstream.
    let states: Vec<_> = store
        .outbox_peek(10)
        .unwrap()
        .iter()
        .map(|e| e.state)
        .collect();
    assert_eq!(
        states,
        vec![
            UnitState::Rejected(RejectReason::LowGrade),
            UnitState::Voided
        ]
    );
}

#[test]
fn invariant_4_terminal_states_are_final_and_reported_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_block(dir.path(), 3);
    let sent = send(&store, 3);
    store
        .transition_blocking(&sent[0], UnitState::Committed)
        .unwrap();
    store
        .transition_blocking(&sent[1], UnitState::Rejected(RejectReason::Mismatch))
        .unwrap();
    store
        .transition_blocking(&sent[2], UnitState::Voided)
        .unwrap();
    let seqs: Vec<u64> = store
        .outbox_peek(10)
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(store.outbox_ack_blocking(&seqs).unwrap(), 3);
    // A repeated acknowledgment changes nothing.
    assert_eq!(store.outbox_ack_blocking(&seqs).unwrap(), 0);
    let c = store.counts();
    assert_eq!((c.synced, c.rejected, c.voided, c.reported), (1, 1, 1, 2));
    assert_eq!(store.recount().unwrap(), c);
    for s in &sent {
        // Only the after-commit moves (a later test) may follow Synced.
        for to in UnitState::KINDS
            .into_iter()
            .filter(|t| !t.is_after_commit())
        {
            assert!(
                store.transition_blocking(s, to).is_err(),
                "{s} moved to {to}"
            );
        }
        match store.entry(s).unwrap() {
            SerialEntry::Recorded(r) => assert!(r.state.is_terminal()),
            other => panic!("{s}: {other:?}"),
        }
    }
}

#[test]
fn invariant_5_event_ids_are_stable_and_distinct() {
    let s = serialine_core::Serial::new("ABC123").unwrap();
    let committed = event_id(LINE, &s, UnitState::Committed);
    assert_eq!(committed, event_id(LINE, &s, UnitState::Committed));
    assert_ne!(committed, event_id("line-2", &s, UnitState::Committed));
    assert_ne!(committed, event_id(LINE, &s, UnitState::Voided));
}

#[test]
fn invariant_6_foreign_and_committed_codes_are_recognisable() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_block(dir.path(), 2);
    let s = send(&store, 1).remove(0);
    store.transition_blocking(&s, UnitState::Committed).unwrap();
    // A second read of a committed code: the pipeline sees Committed and rejects.
    assert_eq!(store.state_of(&s).unwrap(), UnitState::Committed);
    let foreign = serialine_core::Serial::new("NEVERISSUED").unwrap();
    assert!(matches!(
        store.state_of(&foreign),
        Err(StoreError::NotIssued { .. })
    ));
    assert!(matches!(
        store.transition_blocking(&foreign, UnitState::Committed),
        Err(StoreError::NotIssued { .. })
    ));
}

#[test]
fn forged_wrong_line_replayed_and_overlapping_blocks_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_block(dir.path(), 10);
    let before = store.counts();

    let mut forged = sealed_block(2, LINE, SECRET, serials("F", 0..10));
    let last = forged.ciphertext.len() - 1;
    forged.ciphertext[last] ^= 1;
    assert!(matches!(
        store.add_block_blocking(&forged),
        Err(StoreError::Block(
            serialine_core::BlockError::Authentication { block_id: 2 }
        ))
    ));
    let other_key = sealed_block(3, LINE, b"not our secret", serials("K", 0..10));
    assert!(matches!(
        store.add_block_blocking(&other_key),
        Err(StoreError::Block(_))
    ));
    let other_line = sealed_block(4, "line-2", SECRET, serials("L", 0..10));
    assert!(matches!(
        store.add_block_blocking(&other_line),
        Err(StoreError::Block(
            serialine_core::BlockError::WrongLine { .. }
        ))
    ));
    let replay = sealed_block(1, LINE, SECRET, serials("S", 0..10));
    assert!(matches!(
        store.add_block_blocking(&replay),
        Err(StoreError::DuplicateBlock { block_id: 1 })
    ));
    let overlap = sealed_block(5, LINE, SECRET, serials("S", 9..20));
    assert!(matches!(
        store.add_block_blocking(&overlap),
        Err(StoreError::OverlappingBlock {
            block_id: 5,
            earlier: 1
        })
    ));
    assert_eq!(store.counts(), before);
    assert_eq!(store.recount().unwrap(), before);
    assert_eq!(store.reserve(100).unwrap().len(), 10);
}

#[test]
fn reserve_spans_blocks_and_release_returns_to_front() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path());
    store
        .add_block_blocking(&sealed_block(20, LINE, SECRET, serials("B", 0..3)))
        .unwrap();
    store
        .add_block_blocking(&sealed_block(10, LINE, SECRET, serials("A", 0..3)))
        .unwrap();
    let first = store.reserve(4).unwrap();
    assert_eq!(first.len(), 4);
    store.release(&first[1..]);
    let again = store.reserve(10).unwrap();
    assert_eq!(again.len(), 5, "6 serials, 1 still reserved");
    assert_eq!(&again[..3], &first[1..]);
    assert_eq!(store.state_of(&first[0]).unwrap(), UnitState::Reserved);
    assert_eq!(store.buffer_depth(), 0);
}

#[test]
fn illegal_transitions_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_block(dir.path(), 2);
    let s = store.reserve(1).unwrap().remove(0);
    // Available -> Committed skips the device: refused, nothing written.
    let err = store
        .transition_blocking(&s, UnitState::Committed)
        .unwrap_err();
    assert!(matches!(err, StoreError::Transition { .. }), "{err}");
    assert_eq!(store.recount().unwrap(), store.counts());
    assert_eq!(store.counts().left_pool(), 0);
}

#[test]
fn newer_schema_wrong_line_and_wrong_secret_refuse_to_open() {
    let dir = tempfile::tempdir().unwrap();
    drop(store_with_block(dir.path(), 1));

    let mut opts = options(dir.path());
    opts.line_id = "line-9".into();
    let e = Store::open(opts).err().expect("wrong line refused");
    assert!(matches!(e, StoreError::WrongLine { .. }), "{e}");

    let mut opts = options(dir.path());
    opts.line_secret = b"another".to_vec();
    let e = Store::open(opts).err().expect("wrong secret refused");
    assert!(matches!(e, StoreError::WrongSecret { .. }), "{e}");

    {
        let db = sled::open(dir.path().join("ledger")).unwrap();
        let meta = db.open_tree("meta").unwrap();
        meta.insert("schema_version", &99u32.to_be_bytes()).unwrap();
        db.flush().unwrap();
    }
    let e = Store::open(options(dir.path()))
        .err()
        .expect("newer schema refused");
    assert!(
        matches!(
            e,
            StoreError::NewerSchema {
                found: 99,
                supported: serialine_store::SCHEMA_VERSION,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("schema version 99"), "{e}");
}

#[test]
fn lost_counters_are_rebuilt_from_records() {
    let dir = tempfile::tempdir().unwrap();
    let expected = {
        let store = store_with_block(dir.path(), 6);
        let sent = send(&store, 3);
        store
            .transition_blocking(&sent[0], UnitState::Committed)
            .unwrap();
        store.counts()
    };
    {
        let db = sled::open(dir.path().join("ledger")).unwrap();
        db.open_tree("meta").unwrap().remove("counts").unwrap();
        db.flush().unwrap();
    }
    let (store, recovery) = open(dir.path());
    assert_eq!(recovery.counts, expected);
    assert_eq!(store.counts(), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_senders_share_flushes_and_never_collide() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path());
    store
        .add_block(&sealed_block(1, LINE, SECRET, serials("C", 0..2000)))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while let Some(s) = store.reserve(1).unwrap().pop() {
                store.transition(&s, UnitState::Sent).await.unwrap();
                mine.push(s);
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    assert_eq!(all.len(), 2000);
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 2000, "a serial was sent twice");
    assert_eq!(store.counts().sent, 2000);
}

#[test]
fn a_ledger_in_use_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (_held, _) = open(dir.path());
    let e = Store::open(options(dir.path()))
        .err()
        .expect("second open refused");
    assert!(matches!(e, StoreError::Locked { .. }), "{e}");
    assert!(e.to_string().contains("in use by another process"), "{e}");
}

#[test]
fn records_since_lists_outcomes_by_time_for_export() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_block(dir.path(), 4);
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let sent = send(&store, 3);
    store
        .transition_blocking(&sent[0], UnitState::Committed)
        .unwrap();
    store
        .transition_blocking(&sent[1], UnitState::Rejected(RejectReason::NoRead))
        .unwrap();
    let committed = store
        .records_since(before, |s| {
            matches!(s, UnitState::Committed | UnitState::Synced)
        })
        .unwrap();
    assert_eq!(committed.len(), 1);
    assert_eq!(committed[0].0, sent[0]);
    assert!(committed[0].1.at_ms >= before);
    let later = store.records_since(u64::MAX, |_| true).unwrap();
    assert!(later.is_empty());
}

#[test]
fn a_deleted_or_emptied_ledger_is_refused_not_silently_recreated() {
    let dir = tempfile::tempdir().unwrap();
    drop(store_with_block(dir.path(), 3));
    let ledger = dir.path().join("ledger");
    assert!(dir.path().join("ledger.created").exists(), "marker written");

    std::fs::remove_dir_all(&ledger).unwrap();
    let e = Store::open(options(dir.path())).err().expect("refused");
    assert!(matches!(e, StoreError::Vanished { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("Restore it from backup") && msg.contains("ledger.created"),
        "{msg}"
    );
    assert!(!ledger.join("db").exists() || Store::open(options(dir.path())).is_err());

    // Deleting the marker is the documented way to start afresh on purpose.
    std::fs::remove_file(dir.path().join("ledger.created")).unwrap();
    let (store, _) = open(dir.path());
    assert_eq!(store.counts().issued, 0);
}

#[test]
fn a_truncated_database_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(store_with_block(dir.path(), 3));
    let db = dir.path().join("ledger").join("db");
    let len = std::fs::metadata(&db).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&db)
        .unwrap()
        .set_len(len / 3)
        .unwrap();
    match Store::open(options(dir.path())) {
        Err(e) => assert!(
            matches!(
                e,
                StoreError::Vanished { .. } | StoreError::Corrupt { .. } | StoreError::Io { .. }
            ),
            "{e}"
        ),
        // sled may recover a truncated log to an earlier durable state; then
        // the block it held must still be there, never an empty ledger.
        Ok((store, _)) => assert_eq!(store.counts().issued, 3),
    }
}

#[test]
fn after_commit_samples_and_decommissioning_are_durable_reported_once_and_refused_early() {
    use serialine_core::{DecommissionReason, SamplePurpose};
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_block(dir.path(), 10);
    let s = send(&store, 3);
    let sample = UnitState::Sampled(SamplePurpose::Qa);
    let destroy = UnitState::Decommissioned(DecommissionReason::Damaged);
    commit_through_from_sent(&store, &s);
    // Committed but not acknowledged: upstream must hear of the commit first.
    let e = store.transition_blocking(&s[0], sample).unwrap_err();
    assert!(matches!(e, StoreError::Transition { .. }), "{e}");
    ack_outbox(&store).unwrap();
    store.transition_blocking(&s[0], sample).unwrap();
    store.transition_blocking(&s[1], destroy).unwrap();
    // Sampled, then destroyed after testing.
    store.transition_blocking(&s[0], destroy).unwrap();
    // Each is an outcome upstream hears once, with its own id.
    let events = store.outbox_peek(10).unwrap();
    let states: Vec<UnitState> = events.iter().map(|e| e.state).collect();
    assert_eq!(states, vec![sample, destroy, destroy]);
    assert_eq!(events[0].id, event_id(LINE, &s[0], sample));
    assert_ne!(events[0].id, events[2].id);
    ack_outbox(&store).unwrap();
    assert!(matches!(
        store.entry(&s[0]).unwrap(),
        SerialEntry::Recorded(r) if r.state == destroy && r.reported
    ));
    // Final: a decommissioned unit is never sampled, nothing goes back.
    for to in [sample, UnitState::Synced, UnitState::Committed, destroy] {
        assert!(store.transition_blocking(&s[1], to).is_err(), "{to}");
    }
    let c = store.counts();
    assert_eq!(
        (c.synced, c.sampled, c.decommissioned, c.reported),
        (1, 0, 2, 0),
        "{c:?}"
    );
    assert_eq!(c.left_pool(), 3);
    assert_eq!(store.recount().unwrap(), c);
    drop(store);
    let (store, _) = open(dir.path());
    assert_eq!(store.counts(), c, "durable");
}

fn commit_through_from_sent(store: &Store, serials: &[serialine_core::Serial]) {
    for to in [UnitState::Printed, UnitState::Committed] {
        for s in serials {
            store.transition_blocking(s, to).unwrap();
        }
    }
}
