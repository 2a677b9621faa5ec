//! Issue 15, returns of unused serials (Open-SCS `SNReturnUnallocated`):
//! the serials still buffered for a product go back upstream block by
//! block, each with a Returned record and one outbox event per block
//! range, and are never reserved again, also after a return cut short.

mod common;

use common::*;
use serialine_core::{BlockKey, Gtin, Serial, UnitState};
use serialine_store::{ReturnRequest, SerialEntry, Store, StoreOptions};
use std::collections::HashSet;
use std::path::Path;

fn other_gtin() -> Gtin {
    Gtin::parse("04006381333931").unwrap()
}

fn opts(dir: &Path) -> StoreOptions {
    let mut o = options(dir);
    o.fence = Some(dir.join("fence").join(format!("{LINE}.fence")));
    o
}

/// Upstream's empty answer to the fence's first handshake.
fn open_confirmed(dir: &Path) -> Store {
    let (store, _) = Store::open(opts(dir)).unwrap();
    store.fence_upstream_blocking(&[]).unwrap();
    store
}

/// Blocks 1 and 2 (250 serials each) for the test GTIN, block 3 (100)
/// for another product.
fn stocked(store: &Store) {
    let key = BlockKey::derive(SECRET);
    store
        .add_block_blocking(&sealed_block(1, LINE, SECRET, serials("R", 0..250)))
        .unwrap();
    store
        .add_block_blocking(&sealed_block(2, LINE, SECRET, serials("R", 250..500)))
        .unwrap();
    store
        .add_block_blocking(&seal_block_for(
            &key,
            LINE,
            3,
            other_gtin(),
            serials("O", 0..100),
        ))
        .unwrap();
}

fn request(job: u32) -> ReturnRequest {
    ReturnRequest {
        gtin: Some(gtin().as_string()),
        job,
    }
}

#[test]
fn buffered_serials_go_back_once_and_are_never_reserved_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_confirmed(dir.path());
    stocked(&store);
    // 60 handed out: 40 committed, 20 still reserved by a running job.
    let taken = store.reserve_for(60, &gtin()).unwrap();
    commit_through(&store, &taken[..40]).unwrap();
    let report = store.return_unused_blocking(&request(0)).unwrap();
    assert_eq!(report.serials, 500 - 60, "every unreserved, unsent serial");
    assert_eq!(report.kept_reserved, 20);
    assert_eq!(report.blocks, 2, "the other product's block stays");
    // Block 1: 190 left -> 2 ranges; block 2: 250 -> 3.
    assert_eq!(report.events, 5);
    let c = store.counts();
    assert_eq!(c.returned, 440);
    assert_eq!(c.available(), 20 + 100, "the reserved 20 and block 3");
    assert_eq!(store.buffer_depth_for(&gtin()).unwrap(), 0);
    assert!(
        store.reserve_for(50, &gtin()).unwrap().is_empty(),
        "nothing of the product left to reserve"
    );
    assert_eq!(store.reserve_for(100, &other_gtin()).unwrap().len(), 100);
    // The reserved 20 go on as units.
    commit_through(&store, &taken[40..]).unwrap();

    // The outbox: one event per block range, naming its serials.
    let events: Vec<_> = store
        .outbox_peek(usize::MAX)
        .unwrap()
        .into_iter()
        .filter(|e| e.state == UnitState::Returned)
        .collect();
    assert_eq!(events.len(), 5);
    let mut named: HashSet<Serial> = HashSet::new();
    for e in &events {
        let back = e.returned();
        assert!(!back.is_empty() && back.len() <= 100);
        assert_eq!(back[0], e.serial, "the id's serial first");
        assert_eq!(
            e.id,
            serialine_store::event_id(LINE, &e.serial, UnitState::Returned)
        );
        assert!(matches!(
            e.detail,
            serialine_store::EventDetail::Return { block: 1 | 2, .. }
        ));
        for s in back {
            assert!(named.insert(s.clone()), "{s} in two return events");
            assert_eq!(store.state_of(s).unwrap(), UnitState::Returned);
        }
    }
    assert_eq!(named.len(), 440);
    for s in &taken {
        assert!(!named.contains(s), "a handed-out serial is never returned");
    }

    // Upstream's ack marks every serial of each range reported.
    ack_outbox(&store).unwrap();
    for s in &named {
        match store.entry(s).unwrap() {
            SerialEntry::Recorded(r) => assert!(r.reported, "{s} reported"),
            other => panic!("{s}: {other:?}"),
        }
    }
    assert_eq!(store.recount().unwrap(), store.counts(), "counters exact");

    // A second return finds nothing more.
    let again = store.return_unused_blocking(&request(0)).unwrap();
    assert_eq!((again.serials, again.blocks, again.events), (0, 0, 0));
    assert!(store.unfinished_return().unwrap().is_none());
}

#[test]
fn a_return_cut_short_is_finished_at_the_next_open_and_nothing_goes_twice() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open_confirmed(dir.path());
        stocked(&store);
        let job = serialine_core::Job::new(
            gtin(),
            serialine_core::Lot::new("L1").unwrap(),
            serialine_core::Expiry::parse("271231").unwrap(),
            serialine_core::Template::Gs1DataMatrix,
            10,
        )
        .unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let job = runtime.block_on(store.begin_job(&job)).unwrap();
        let done = store.return_unused_until(&request(job), Some(1)).unwrap();
        assert_eq!((done.blocks, done.serials), (1, 250));
        assert_eq!(store.unfinished_return().unwrap(), Some(request(job)));
    }
    // The process is gone; the next one finds the intent.
    let store = open_confirmed(dir.path());
    let pending = store.unfinished_return().unwrap().expect("intent survives");
    assert_eq!(
        store.counts().returned,
        250,
        "the first block stays returned"
    );
    let rest = store.return_unused_blocking(&pending).unwrap();
    assert_eq!((rest.blocks, rest.serials), (1, 250));
    assert!(store.unfinished_return().unwrap().is_none());
    let c = store.counts();
    assert_eq!(c.returned, 500);
    assert!(store.reserve_for(10, &gtin()).unwrap().is_empty());
    let report = store.job_report(pending.job).unwrap();
    assert_eq!(
        report.returned, 500,
        "counted in the job that returned them"
    );
    assert_eq!(report.sent, 0, "returned serials were never sent");
    assert_eq!(store.recount().unwrap(), c);
}
