//! Several ledgers written and flushed at once in one process, as in a
//! daemon with several lines (and in every test binary).
//!
//! sled 0.34's transactions take a lock global to the process, and a flush
//! then holds it for reading while it waits for its log: two ledgers, one
//! flushing and one starting a transaction, deadlocked (seen in CI, hung
//! until its 90-minute limit). The ledger no longer uses sled transactions;
//! this test drives the shape that hung and turns a hang into a failure.

mod common;

use common::*;
use serialine_store::{Store, StoreOptions};
use std::sync::mpsc;
use std::time::Duration;

const LEDGERS: usize = 8;
const UNITS: u32 = 2_000;
/// Far above the run's normal time: only a hang gets here.
const HANG: Duration = Duration::from_secs(180);

#[test]
fn ledgers_flushing_at_once_in_one_process_never_deadlock() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (done_tx, done_rx) = mpsc::channel();
    for n in 0..LEDGERS {
        let path = dir.path().join(format!("ledger-{n}"));
        let done = done_tx.clone();
        std::thread::spawn(move || {
            let line = format!("line-{n}");
            let (store, _) =
                Store::open(StoreOptions::new(path, line.as_str(), SECRET)).expect("ledger opens");
            let block = sealed_block(1, &line, SECRET, serials(&format!("L{n}-"), 0..UNITS));
            store.add_block_blocking(&block).expect("block added");
            let mut committed = 0u32;
            // Small batches, each its own flush, on every ledger at once.
            while let Ok(batch) = store.reserve_for(5, &gtin()) {
                if batch.is_empty() {
                    break;
                }
                commit_through(&store, &batch).expect("transitions applied");
                committed += batch.len() as u32;
                // The uplink's acknowledgments write too.
                ack_outbox(&store).expect("acks applied");
            }
            let _ = done.send((n, committed, store.counts()));
        });
    }
    drop(done_tx);
    for _ in 0..LEDGERS {
        let (n, committed, counts) = done_rx
            .recv_timeout(HANG)
            .expect("every ledger finishes: a ledger thread hung (sled deadlock?)");
        assert_eq!(committed, UNITS, "ledger {n} committed every unit");
        assert_eq!(
            counts.committed + counts.synced,
            u64::from(UNITS),
            "ledger {n} counts"
        );
    }
}
