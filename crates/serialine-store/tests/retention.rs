//! Retention: blocks whose serials all ended, were acknowledged and are
//! older than the cut-off leave the ledger for archive files, losing
//! nothing, and a crash in the middle of a round archives them once.

mod common;

use common::*;
use serialine_core::{RejectReason, Serial, UnitState};
use serialine_store::archive;
use serialine_store::{ArchiveOptions, SerialEntry, Store, StoreError, Transition};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

/// Block `id` of 100 serials, used up: 90 committed and acknowledged,
/// 10 rejected low grade and reported.
fn run_block(store: &Store, id: u64) -> Vec<Serial> {
    let serials = serials(&format!("R{id}-"), 0..100);
    let block = sealed_block(id, LINE, SECRET, serials.clone());
    store.add_block_blocking(&block).expect("block added");
    let taken = store.reserve_for(100, &gtin()).expect("reserve");
    assert_eq!(taken, serials, "a block is handed out in its order");
    let (good, bad) = taken.split_at(90);
    commit_through(store, good).expect("committed");
    let rejects: Vec<_> = bad
        .iter()
        .map(|s| Transition::new(s.clone(), UnitState::Sent))
        .chain(
            bad.iter()
                .map(|s| Transition::new(s.clone(), UnitState::Rejected(RejectReason::LowGrade))),
        )
        .collect();
    for r in store.apply_blocking(&rejects) {
        r.expect("rejected");
    }
    ack_outbox(store).expect("acknowledged");
    serials
}

fn later() -> SystemTime {
    SystemTime::now() + Duration::from_secs(1)
}

#[test]
fn ended_reported_blocks_leave_the_ledger_for_an_archive_losing_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let archive_dir = dir.path().join("archive");
    let (store, _) = open(dir.path());
    let first = run_block(&store, 1);
    let second = run_block(&store, 2);
    // Block 3: used up but one outcome not yet acknowledged upstream.
    let third = serials("R3-", 0..10);
    store
        .add_block_blocking(&sealed_block(3, LINE, SECRET, third.clone()))
        .expect("block 3");
    let taken = store.reserve_for(10, &gtin()).expect("reserve");
    commit_through(&store, &taken).expect("committed");
    let seqs: Vec<u64> = store
        .outbox_peek(9)
        .expect("outbox")
        .iter()
        .map(|e| e.seq)
        .collect();
    store.outbox_ack_blocking(&seqs).expect("nine acks");
    // Block 4: serials left in it.
    store
        .add_block_blocking(&sealed_block(4, LINE, SECRET, serials("R4-", 0..10)))
        .expect("block 4");
    let before = store.counts();

    // Nothing is older than a cut-off in the past.
    let past = SystemTime::now() - Duration::from_secs(3600);
    let none = store
        .archive_blocking(&ArchiveOptions::new(&archive_dir, past))
        .expect("archive runs");
    assert_eq!((none.blocks, none.serials), (0, 0));

    let report = store
        .archive_blocking(&ArchiveOptions::new(&archive_dir, later()))
        .expect("archive runs");
    assert_eq!(
        (report.blocks, report.serials),
        (2, 200),
        "blocks 1 and 2 only"
    );
    assert_eq!(report.files.len(), 1);

    // The ledger: records gone, counters moved to `archived` and balanced.
    let after = store.counts();
    assert_eq!(after.archived, 200);
    assert_eq!(after.synced, before.synced - 180);
    assert_eq!(after.rejected, before.rejected - 20);
    assert_eq!(after.reported, before.reported - 20);
    assert_eq!(after.issued, before.issued);
    assert_eq!(after.available(), before.available());
    assert_eq!(
        store.recount().expect("recount"),
        after,
        "stored counters are exact"
    );
    for s in first.iter().chain(&second) {
        assert_eq!(store.entry(s).expect("entry"), SerialEntry::NotIssued);
    }
    assert!(matches!(
        store.entry(&third[0]).expect("entry"),
        SerialEntry::Recorded(_)
    ));
    assert_eq!(store.archived_blocks().expect("archived"), (2, 200));
    // An archived block cannot come back.
    let again = store.add_block_blocking(&sealed_block(1, LINE, SECRET, first.clone()));
    assert!(
        matches!(again, Err(StoreError::DuplicateBlock { block_id: 1 })),
        "{again:?}"
    );

    // The archive: every record, as the ledger held it.
    let file = archive::read(&report.files[0]).expect("archive reads");
    assert_eq!(file.header.line, LINE);
    assert_eq!(
        file.header
            .blocks
            .iter()
            .map(|b| b.block)
            .collect::<Vec<_>>(),
        vec![1, 2]
    );
    let got: BTreeMap<String, UnitState> = archive::records_since(&archive_dir, LINE, 0, |_| true)
        .expect("records")
        .into_iter()
        .map(|(s, r)| (s.as_str().to_string(), r.state))
        .collect();
    assert_eq!(got.len(), 200);
    assert_eq!(got[first[0].as_str()], UnitState::Synced);
    assert_eq!(
        got[first[95].as_str()],
        UnitState::Rejected(RejectReason::LowGrade)
    );

    // The rest survives a reopen, and the next round has nothing to do.
    drop(store);
    let (store, _) = open(dir.path());
    assert_eq!(store.counts(), after);
    let more = store
        .archive_blocking(&ArchiveOptions::new(&archive_dir, later()))
        .expect("archive runs");
    assert_eq!(more.serials, 0);
}

#[test]
fn a_crash_between_the_file_and_the_ledger_archives_each_block_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let archive_dir = dir.path().join("archive");
    let (store, _) = open(dir.path());
    for id in 1..=3 {
        run_block(&store, id);
    }
    let before = store.counts();
    let mut opts = ArchiveOptions::new(&archive_dir, later());
    opts.serials_per_file = 150; // two rounds: blocks 1-2, then 3
    opts.stop_after_file = true;
    let e = store.archive_blocking(&opts).expect_err("stops");
    assert!(e.to_string().contains("fault injection"), "{e}");
    assert_eq!(store.counts(), before, "the ledger is unchanged");
    let files = archive::files(&archive_dir, LINE).expect("files");
    assert_eq!(files.len(), 1);
    drop(store);

    // The next start finishes the same round into the same file, then
    // archives the rest.
    let (store, _) = open(dir.path());
    opts.stop_after_file = false;
    let report = store.archive_blocking(&opts).expect("archive runs");
    assert_eq!(report.files.len(), 2);
    assert_eq!(report.files[0], files[0], "the interrupted round's file");
    assert_eq!((report.blocks, report.serials), (3, 300));
    let all = archive::records_since(&archive_dir, LINE, 0, |_| true).expect("records");
    assert_eq!(all.len(), 300, "each serial archived once");
    assert_eq!(store.counts().archived, 300);
    assert_eq!(store.recount().expect("recount"), store.counts());
}

/// Bytes of the files under `p`.
fn disk(p: &std::path::Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .map(|e| match e.path().is_dir() {
                    true => disk(&e.path()),
                    false => e.metadata().map_or(0, |m| m.len()),
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Simulated days (the `retention` example at a small scale): with the
/// records of day `d - KEEP` archived at the end of day `d`, the records
/// kept stay at about `KEEP + 1` days' worth and the ledger's disk stops
/// growing: 1.2 times day 5's size by day 24 (the example, run with these
/// numbers), against 2.3 times without retention.
#[test]
fn with_retention_the_ledger_stays_flat_over_simulated_days() {
    const PER_DAY: u64 = 2_000;
    const DAYS: usize = 24;
    const KEEP: usize = 4;
    const BLOCK: u32 = 1_000;
    let dir = tempfile::tempdir().expect("temp dir");
    let ledger = dir.path().join("ledger");
    let (store, _) = open(dir.path());
    let key = serialine_core::BlockKey::derive(SECRET);
    let mut next_block = 1;
    let mut day_ends = Vec::new();
    let mut first_period = 0;
    for day in 1..=DAYS {
        run_day(&store, &key, PER_DAY, BLOCK, &mut next_block).expect("a day's production");
        day_ends.push(SystemTime::now());
        store.checkpoint_blocking().expect("checkpoint");
        if day > KEEP {
            let before = day_ends[day - 1 - KEEP];
            store
                .archive_blocking(&ArchiveOptions::new(dir.path().join("archive"), before))
                .expect("archive");
        }
        let c = store.counts();
        let kept = c.left_pool() - c.archived;
        assert!(
            kept <= (KEEP as u64 + 1) * PER_DAY + u64::from(BLOCK),
            "day {day}: {kept} records kept"
        );
        if day == KEEP + 1 {
            first_period = disk(&ledger);
        }
    }
    let end = disk(&ledger);
    assert!(
        end < first_period * 8 / 5,
        "ledger {first_period} bytes after the first period, {end} at day {DAYS}"
    );
    let c = store.counts();
    assert_eq!(c.left_pool(), PER_DAY * DAYS as u64);
    assert_eq!(store.recount().expect("recount"), c);
    let archived =
        serialine_store::archive::records_since(&dir.path().join("archive"), LINE, 0, |_| true)
            .expect("archives read");
    assert_eq!(archived.len() as u64, c.archived);
}
