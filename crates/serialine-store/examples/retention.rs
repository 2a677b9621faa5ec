//! A line's ledger over simulated days with retention: disk and memory stay
//! flat once the first retention period has passed.
//!
//!     cargo run --release -p serialine-store --example retention -- [UNITS_PER_DAY] [DAYS] [KEEP_DAYS] [BLOCK]
//!
//! Defaults: 28,512 units a day (33 units/s scaled down 100 times), 60
//! days, keep 30, blocks of 4,000. Each day is run as fast as the ledger
//! goes; the day's end is marked, the ledger checkpointed (as the daemon
//! does between jobs) and everything whose last move is older than the end
//! of day `d - KEEP_DAYS` archived. Prints, per day: the ledger's bytes on
//! disk, the archives' bytes, the process's RSS, serial records kept, and
//! the archive round's time.

#[path = "common/mod.rs"]
mod common;

use common::arg;
use serialine_core::BlockKey;
use serialine_store::{ArchiveOptions, Store, StoreOptions};
use std::time::{Instant, SystemTime};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let per_day = arg(1, 28_512);
    let days = arg(2, 60) as usize;
    let keep = arg(3, 30) as usize;
    let block = arg(4, 4_000) as u32;
    let secret = b"retention example secret";
    let dir = tempfile::tempdir()?;
    let ledger = dir.path().join("ledger");
    let archives = dir.path().join("archive");
    let (store, _) = Store::open(StoreOptions::new(&ledger, "line-1", secret))?;
    let key = BlockKey::derive(secret);
    let mut next_block = 1;
    let mut day_ends: Vec<SystemTime> = Vec::with_capacity(days);
    println!(
        "{per_day} units a day for {days} days, records kept {keep} days, blocks of {block}\n\
         day  ledger MB  B/serial kept  archive MB  RSS MB  records kept  archived  archive s"
    );
    let mut at_first_period = None;
    let mut last = (0.0, 0.0);
    for day in 1..=days {
        common::run_day(&store, &key, per_day, block, &mut next_block)?;
        day_ends.push(SystemTime::now());
        store.checkpoint_blocking()?;
        let started = Instant::now();
        let mut archived = 0;
        if day > keep {
            let before = day_ends[day - 1 - keep];
            archived = store
                .archive_blocking(&ArchiveOptions::new(&archives, before))?
                .serials;
        }
        let took = started.elapsed().as_secs_f64();
        let c = store.counts();
        let kept = c.left_pool() - c.archived;
        let disk = common::walk_size(&ledger) as f64;
        let rss = common::proc_status_mb("VmRSS");
        println!(
            "{day:>3}  {:>9.1}  {:>13.0}  {:>10.1}  {rss:>6.1}  {kept:>12}  {archived:>8}  {took:>9.2}",
            disk / 1e6,
            disk / kept.max(1) as f64,
            common::walk_size(&archives) as f64 / 1e6,
        );
        if day == keep + 1 {
            at_first_period = Some((disk, rss));
        }
        last = (disk, rss);
    }
    if let Some((disk, rss)) = at_first_period {
        println!(
            "after the first retention period (day {}) and at the end (day {days}): \
             ledger {:.1} -> {:.1} MB, RSS {rss:.1} -> {:.1} MB (peak {})",
            keep + 1,
            disk / 1e6,
            last.0 / 1e6,
            last.1,
            common::proc_status("VmHWM")
        );
    }
    Ok(())
}
