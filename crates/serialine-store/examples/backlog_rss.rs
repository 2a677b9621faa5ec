//! Memory of a ledger through an outbox backlog, as during a broker outage:
//! `cargo run --release -p serialine-store --example backlog_rss -- [UNITS] [CACHE_MB]`
//!
//! Commits UNITS units (Sent, Printed, Committed: one outbox event each)
//! without acknowledging any, then acknowledges them all as the uplink does
//! when the broker is back, and prints this process's resident memory
//! before, at the peak of the backlog, and after the drain. Issue 16's goal:
//! under 64 MB throughout for 300,000 queued outcomes.

mod common;

use serialine_core::{BlockKey, Serial};
use serialine_store::{Store, StoreOptions};

/// The daemon's allocator, so the figure is the daemon's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SECRET: &[u8] = b"backlog secret";
const BLOCK: u32 = 20_000;
const BATCH: usize = 500;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let units: u32 = args.next().map_or(Ok(300_000), |a| a.parse())?;
    let cache_mb: u64 = args
        .next()
        .map_or(Ok(serialine_store::DEFAULT_CACHE_BYTES >> 20), |a| {
            a.parse()
        })?;
    let dir = tempfile::tempdir()?;
    let mut opts = StoreOptions::new(dir.path().join("ledger"), "backlog", SECRET);
    opts.cache_bytes = cache_mb << 20;
    let (store, _) = Store::open(opts)?;
    let key = BlockKey::derive(SECRET);
    let gtin = common::gtin();
    for id in 1..=u64::from(units.div_ceil(BLOCK)) {
        let serials = (0..BLOCK)
            .map(|n| Serial::new(format!("B{id:06}N{n:07}")))
            .collect::<Result<_, _>>()?;
        store.add_block_blocking(&common::seal_block(&key, "backlog", id, serials))?;
    }
    store.checkpoint_blocking()?;
    let per_buffered = common::walk_size(dir.path()) as f64 / f64::from(units);
    let before = common::proc_status_mb("VmRSS");
    let mut peak = before;
    let mut done = 0usize;
    while done < units as usize {
        let batch = store.reserve_for(BATCH.min(units as usize - done), &gtin)?;
        common::commit_through(&store, &batch)?;
        done += batch.len();
        peak = peak.max(common::proc_status_mb("VmRSS"));
    }
    let queued = store.outbox_depth();
    let at_backlog = common::proc_status_mb("VmRSS");
    while store.outbox_depth() > 0 {
        let seqs: Vec<u64> = store.outbox_peek(1_000)?.iter().map(|e| e.seq).collect();
        store.outbox_ack_blocking(&seqs)?;
        peak = peak.max(common::proc_status_mb("VmRSS"));
    }
    let after = common::proc_status_mb("VmRSS");
    store.checkpoint_blocking()?;
    let per_kept = common::walk_size(dir.path()) as f64 / f64::from(units);
    println!(
        "outbox backlog of {queued} outcomes, ledger cache {cache_mb} MiB: RSS before {before:.1} MB, \
         with the backlog {at_backlog:.1} MB, peak {peak:.1} MB, after the drain {after:.1} MB\n\
         ledger on disk: {per_buffered:.0} B per serial buffered, {per_kept:.0} B per serial kept \
         (committed and reported; after a checkpoint)"
    );
    Ok(())
}
