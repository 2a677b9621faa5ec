//! What returns and the packaging hierarchy cost on the ledger.
//!
//!     cargo run --release -p serialine-store --example returns_and_packing -- [BLOCKS] [BLOCK] [CASES] [PER_CASE]
//!
//! Defaults: 20 blocks of 1,000 serials returned (the buffer a line gives
//! back at a job's end), then 500 cases of 12 committed units packed one
//! request each (as a packing station or the pipeline would), 50 pallets of
//! 10 of those cases, and one pallet decommissioned with everything on it.
//! Prints the time per block returned and serials/s, the time per case
//! packed (median and worst) and cases/s, and the pallet's decommissioning.

#[path = "common/mod.rs"]
mod common;

use common::{arg, case_gtin, gtin, pallet_gtin, seal_block, seal_block_for};
use serialine_core::{BlockKey, DecommissionReason, Serial, UnitState};
use serialine_store::{ReturnRequest, Store, StoreOptions, Transition};
use std::time::{Duration, Instant};

fn serials(prefix: &str, from: u64, n: u64) -> Vec<Serial> {
    (from..from + n)
        .map(|i| Serial::new(format!("{prefix}{i:09}")).expect("serial"))
        .collect()
}

fn commit(store: &Store, serials: &[Serial]) -> Result<(), Box<dyn std::error::Error>> {
    for to in [UnitState::Sent, UnitState::Committed] {
        let ts: Vec<_> = serials
            .iter()
            .map(|s| Transition::in_job(s.clone(), to, Some(0)))
            .collect();
        for r in store.apply_blocking(&ts) {
            r?;
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (blocks, block) = (arg(1, 20), arg(2, 1_000));
    let (cases, per_case) = (arg(3, 500), arg(4, 12));
    let secret = b"returns and packing example secret";
    let key = BlockKey::derive(secret);
    let dir = tempfile::tempdir()?;
    let (store, _) = Store::open(StoreOptions::new(
        dir.path().join("ledger"),
        "line-1",
        secret,
    ))?;

    // Returns: a buffer of `blocks` blocks given back.
    for b in 0..blocks {
        store.add_block_blocking(&seal_block(
            &key,
            "line-1",
            b + 1,
            serials("R", b * block, block),
        ))?;
    }
    let started = Instant::now();
    let r = store.return_unused_blocking(&ReturnRequest {
        gtin: Some(gtin().as_string()),
        job: 0,
    })?;
    let took = started.elapsed();
    println!(
        "return: {} serials of {} blocks in {:.0?} ({:.1} ms per block of {block}, {:.0} serials/s, {} events)",
        r.serials,
        r.blocks,
        took,
        took.as_secs_f64() * 1e3 / r.blocks.max(1) as f64,
        r.serials as f64 / took.as_secs_f64(),
        r.events
    );

    // Packing: units and case labels committed, then one case a request.
    let units = cases * per_case;
    let pallets = cases / 10;
    store.add_block_blocking(&seal_block(&key, "line-1", 1_000, serials("U", 0, units)))?;
    store.add_block_blocking(&seal_block_for(
        &key,
        "line-1",
        1_001,
        case_gtin(),
        serials("C", 0, cases),
    ))?;
    store.add_block_blocking(&seal_block_for(
        &key,
        "line-1",
        1_002,
        pallet_gtin(),
        serials("P", 0, pallets),
    ))?;
    let u = store.reserve_for(units as usize, &gtin())?;
    // Case labels, then the pallets' (of their own GTIN).
    let mut c = store.reserve_for(cases as usize, &case_gtin())?;
    c.extend(store.reserve_for(pallets as usize, &pallet_gtin())?);
    commit(&store, &u)?;
    commit(&store, &c)?;
    let mut times: Vec<Duration> = Vec::with_capacity(cases as usize);
    let started = Instant::now();
    for (i, chunk) in u.chunks(per_case as usize).enumerate() {
        let t = Instant::now();
        store.pack_blocking(&c[i], chunk)?;
        times.push(t.elapsed());
    }
    let took = started.elapsed();
    times.sort();
    println!(
        "pack: {cases} cases of {per_case} in {took:.0?} ({:.0} cases/s, {:.0} units/s; per case median {:.2?}, worst {:.2?})",
        cases as f64 / took.as_secs_f64(),
        units as f64 / took.as_secs_f64(),
        times[times.len() / 2],
        times[times.len() - 1]
    );
    let started = Instant::now();
    for p in 0..pallets as usize {
        store.pack_blocking(&c[cases as usize + p], &c[p * 10..p * 10 + 10])?;
    }
    println!(
        "pallets: {pallets} pallets of 10 cases in {:.0?}",
        started.elapsed()
    );
    // Acknowledged, then one pallet with its 10 cases and their units.
    let seqs: Vec<u64> = store
        .outbox_peek(usize::MAX)?
        .iter()
        .map(|e| e.seq)
        .collect();
    store.outbox_ack_blocking(&seqs)?;
    let started = Instant::now();
    let n = store.decommission_tree_blocking(
        &c[cases as usize],
        UnitState::Decommissioned(DecommissionReason::Destroyed),
    )?;
    println!(
        "decommission with children: {n} serials in {:.0?}",
        started.elapsed()
    );
    Ok(())
}
