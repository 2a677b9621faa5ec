//! Time to READY after a crash, on a large ledger.
//!
//!     cargo run --release -p serialine-store --example recovery -- 10000000 [DIR [EVERY]]
//!
//! A child process fills a ledger with N serials (blocks of 10,000; every
//! serial sent, most committed and acknowledged, a few left in flight and
//! voided when the next block starts, as a job's end reconciles them, so
//! only the last block's are in flight), then is killed with SIGKILL
//! mid-write. This process then opens the ledger,
//! as the daemon does at start, and prints how long that took: schema and
//! key checks, counters, and the list of serials to reconcile. An existing
//! DIR is reused (building 10 M serials takes minutes).
//!
//! With EVERY, the child checkpoints the ledger (`Store::checkpoint`) each
//! time EVERY more serials are in it, as the daemon does at each job's end
//! (settling the blocks whose serials all ended), and prints how long each
//! took. It skips the checkpoint due at N, so the
//! kill comes EVERY serials after the last one: the worst case. Without it, the open after the kill
//! replays all the log written since the ledger was last opened.

mod common;

use serialine_core::{BlockKey, Serial, UnitState};
use serialine_store::{Store, StoreOptions, Transition};
use std::path::{Path, PathBuf};
use std::time::Instant;

const SECRET: &[u8] = b"recovery bench secret";
const LINE: &str = "bench";
const BLOCK: u32 = 10_000;
const CHILD: &str = "SERIALINE_RECOVERY_CHILD";

fn options(dir: &Path) -> StoreOptions {
    StoreOptions::new(dir.join("ledger"), LINE, SECRET)
}

/// Fills the ledger to `target` serials, then writes until killed.
fn child(dir: &Path, target: u64, every: Option<u64>) {
    let (store, _) = Store::open(options(dir)).expect("ledger");
    let mut checkpointed = store.counts().issued;
    let key = BlockKey::derive(SECRET);
    let mut next_block = store.counts().blocks + 1;
    let mut announced = false;
    // The last block's units left without a verdict.
    let mut unfinished: Vec<Serial> = Vec::new();
    loop {
        let voided: Vec<_> = unfinished
            .drain(..)
            .map(|s| Transition::new(s, UnitState::Voided))
            .collect();
        store.apply_blocking(&voided);
        let c = store.counts();
        if c.issued >= target && !announced {
            println!("FILLED {}", c.issued);
            announced = true;
        }
        let id = next_block;
        next_block += 1;
        let serials = (0..BLOCK)
            .map(|n| Serial::new(format!("R{id:07}N{n:05}")).expect("serial"))
            .collect();
        store
            .add_block_blocking(&common::seal_block(&key, LINE, id, serials))
            .expect("block");
        let reserved = store.reserve(BLOCK as usize).expect("reserve");
        for chunk in reserved.chunks(4096) {
            let sent: Vec<_> = chunk
                .iter()
                .map(|s| Transition::new(s.clone(), UnitState::Sent))
                .collect();
            store.apply_blocking(&sent);
            // All but the last few units of each block get their verdict.
            let cut = chunk.len().saturating_sub(2);
            let done: Vec<_> = chunk[..cut]
                .iter()
                .map(|s| Transition::new(s.clone(), UnitState::Committed))
                .collect();
            store.apply_blocking(&done);
            unfinished.extend_from_slice(&chunk[cut..]);
        }
        let seqs: Vec<u64> = store
            .outbox_peek(usize::MAX)
            .expect("outbox")
            .iter()
            .map(|e| e.seq)
            .collect();
        store.outbox_ack_blocking(&seqs).expect("ack");
        let issued = store.counts().issued;
        // Never at the target itself: the kill then lands as long after the
        // last checkpoint as it can, EVERY serials, the worst case.
        if every.is_some_and(|e| issued >= checkpointed + e && issued < target) {
            let took = store.checkpoint_blocking().expect("checkpoint");
            eprintln!(
                "  checkpoint at {issued} serials: ledger closed for {:.3} s",
                took.as_secs_f64()
            );
            checkpointed = issued;
        }
        if !announced && id % 10 == 0 {
            eprintln!("  {} serials in the ledger", store.counts().issued);
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let target: u64 = args
        .next()
        .map(|a| a.parse().expect("N: a number of serials"))
        .unwrap_or(1_000_000);
    let dir = args.next().map(PathBuf::from);
    let every: Option<u64> = args
        .next()
        .map(|a| a.parse().expect("EVERY: a number of serials"));
    if let Ok(d) = std::env::var(CHILD) {
        child(Path::new(&d), target, every);
        return;
    }
    let temp = tempfile::tempdir().expect("tempdir");
    let dir = dir.unwrap_or_else(|| temp.path().to_path_buf());
    std::fs::create_dir_all(&dir).expect("dir");
    eprintln!(
        "filling a ledger with {target} serials in {}",
        dir.display()
    );
    let mut child = std::process::Command::new(std::env::current_exe().expect("exe"))
        .arg(target.to_string())
        .arg(&dir)
        .args(every.map(|e| e.to_string()))
        .env(CHILD, &dir)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("child");
    let out = child.stdout.take().expect("stdout");
    use std::io::BufRead;
    for line in std::io::BufReader::new(out).lines() {
        if line.map(|l| l.starts_with("FILLED")).unwrap_or(true) {
            break;
        }
    }
    // Mid-write: the child is adding the next block when it dies.
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    let size: u64 = common::walk_size(&dir.join("ledger"));
    let start = Instant::now();
    let (store, recovery) = Store::open(options(&dir)).expect("reopen");
    let ready = start.elapsed();
    let c = recovery.counts;
    println!(
        "ledger: {} serials issued, {} committed+synced, {} to reconcile, {:.1} MB on disk",
        c.issued,
        c.committed + c.synced,
        recovery.in_flight.len(),
        size as f64 / 1e6
    );
    println!("time to READY after SIGKILL: {:.3} s", ready.as_secs_f64());
    println!(
        "store size per million serials: {:.1} MB",
        size as f64 / 1e6 / (c.issued as f64 / 1e6)
    );
    // sled keeps a page-table entry per node in memory, and a node holds at
    // most 16 keys: a ledger's resident memory grows with its history. (The
    // system allocator here; the daemon's mimalloc is measured by
    // `serialine-lab bench`.)
    println!(
        "resident memory with the ledger open: {} (peak {})",
        common::proc_status("VmRSS"),
        common::proc_status("VmHWM")
    );
    drop(store);
}
