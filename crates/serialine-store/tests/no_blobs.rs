//! The ledger never makes sled write a value as a file of its own.
//!
//! sled 0.34 writes a log item above a quarter of its 512 KiB segment (one
//! value, or a whole leaf of up to 17 keys) as a separate "blob" file, and
//! its segment cleaner then fails on blob files a later write replaced: the
//! periodic flush thread exits on `No such file or directory`, and the
//! committer's next flush waited forever (CI's hung test processes). Schema
//! 3 stored whole sealed blocks, 64 KiB issued-serial chunks and 64 KiB
//! journal chunks; this workload made blobs at once. It checks the `blobs`
//! directory sled keeps beside its log stays empty.

mod common;

use common::*;
use serialine_store::{Store, StoreOptions};
use std::path::Path;

/// Files in sled's blob directory (none, or no directory, is the goal).
fn blob_files(ledger: &Path) -> Vec<String> {
    match std::fs::read_dir(ledger.join("blobs")) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn big_blocks_and_big_batches_never_make_a_blob() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("ledger");
    {
        let (store, _) =
            Store::open(StoreOptions::new(path.clone(), "line-1", SECRET)).expect("ledger opens");
        // Big sealed blocks: each is hundreds of KiB, its issued array 320 KiB.
        for id in 1..=3u64 {
            let first = (id - 1) as u32 * 20_000;
            let block = sealed_block(id, "line-1", SECRET, serials("B", first..first + 20_000));
            store.add_block_blocking(&block).expect("block added");
        }
        // Big batches: thousands of transitions, each batch journaled.
        let mut done = 0usize;
        while done < 24_000 {
            let batch = store.reserve_for(4_000, &gtin()).expect("reserve");
            assert!(!batch.is_empty(), "serials left");
            commit_through(&store, &batch).expect("transitions applied");
            ack_outbox(&store).expect("acks applied");
            done += batch.len();
        }
        assert_eq!(
            blob_files(&path),
            Vec::<String>::new(),
            "blobs while running"
        );
    }
    // The close and a reopen (sled consolidates pages then) make none either.
    let (store, _) =
        Store::open(StoreOptions::new(path.clone(), "line-1", SECRET)).expect("reopens");
    assert_eq!(store.counts().committed + store.counts().synced, 24_000);
    drop(store);
    assert_eq!(
        blob_files(&path),
        Vec::<String>::new(),
        "blobs after a reopen"
    );
}
