//! Durable transitions per second: group commit against one flush per
//! transition, same workload, same concurrency, in one run.
//!
//! `cargo bench -p serialine-store` prints criterion's figures, then a summary
//! line with both rates and their ratio.
//!
//! Workload: `SUBMITTERS` concurrent tasks, each taking one reserved serial at a
//! time and awaiting its durable `Sent` (the pipeline's pattern: a unit's code
//! may only go to the device once its `Sent` is flushed).

use criterion::{criterion_group, Criterion, Throughput};
use serialine_core::{Block, BlockKey, Gtin, Serial, UnitState};
use serialine_store::{CommitMode, Store, StoreOptions};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The daemon's allocator: sled allocates per update, and glibc's malloc was
/// a third of the profile.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SUBMITTERS: usize = 256;
const BLOCK: u32 = 20_000;
const SECRET: &[u8] = b"bench secret";

struct Rate {
    name: &'static str,
    transitions: AtomicU64,
    nanos: AtomicU64,
}

static GROUP: Rate = Rate {
    name: "group commit",
    transitions: AtomicU64::new(0),
    nanos: AtomicU64::new(0),
};
static NAIVE: Rate = Rate {
    name: "flush per transition",
    transitions: AtomicU64::new(0),
    nanos: AtomicU64::new(0),
};

impl Rate {
    fn per_sec(&self) -> f64 {
        let t = self.transitions.load(Ordering::Relaxed) as f64;
        let s = self.nanos.load(Ordering::Relaxed) as f64 / 1e9;
        if s > 0.0 {
            t / s
        } else {
            0.0
        }
    }
}

struct Bench {
    _dir: tempfile::TempDir,
    store: Store,
    next_block: u64,
    rt: tokio::runtime::Runtime,
}

impl Bench {
    fn new(mode: CommitMode) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut opts = StoreOptions::new(dir.path().join("ledger"), "bench", SECRET);
        opts.commit = mode;
        let (store, _) = Store::open(opts).expect("ledger");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .expect("runtime");
        Bench {
            _dir: dir,
            store,
            next_block: 1,
            rt,
        }
    }

    fn refill(&mut self, need: u64) {
        let key = BlockKey::derive(SECRET);
        while self.store.buffer_depth() < need {
            let id = self.next_block;
            self.next_block += 1;
            let serials = (0..BLOCK)
                .map(|n| Serial::new(format!("B{id:06}N{n:07}")).expect("serial"))
                .collect();
            let block = Block {
                block_id: id,
                line_id: "bench".into(),
                gtin: Gtin::parse("09506000134352").expect("gtin"),
                serials,
                issued_at: 0,
            };
            let mut nonce = [0u8; 24];
            nonce[..8].copy_from_slice(&id.to_be_bytes());
            let sealed = key.seal(&block, nonce).expect("seal");
            self.store.add_block_blocking(&sealed).expect("block");
        }
    }

    /// Sends `iters` reserved serials from SUBMITTERS tasks; returns the time.
    fn run(&mut self, iters: u64, rate: &Rate) -> Duration {
        self.refill(iters);
        let serials = self.store.reserve(iters as usize).expect("reserve");
        let queue = Arc::new(Mutex::new(serials));
        let store = self.store.clone();
        let start = Instant::now();
        self.rt.block_on(async {
            let mut tasks = Vec::with_capacity(SUBMITTERS);
            for _ in 0..SUBMITTERS {
                let (queue, store) = (queue.clone(), store.clone());
                tasks.push(tokio::spawn(async move {
                    loop {
                        let next = queue.lock().expect("queue").pop();
                        let Some(s) = next else { break };
                        store
                            .transition(&s, UnitState::Sent)
                            .await
                            .expect("durable sent");
                    }
                }));
            }
            for t in tasks {
                t.await.expect("submitter");
            }
        });
        let took = start.elapsed();
        rate.transitions.fetch_add(iters, Ordering::Relaxed);
        rate.nanos
            .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
        took
    }
}

fn durable_transitions(c: &mut Criterion) {
    let mut g = c.benchmark_group("durable_sent");
    g.throughput(Throughput::Elements(1));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(8));

    let mut group = Bench::new(CommitMode::Group);
    g.bench_function("group_commit", |b| {
        b.iter_custom(|iters| group.run(iters, &GROUP))
    });
    drop(group);

    let mut naive = Bench::new(CommitMode::PerTransition);
    g.bench_function("flush_per_transition", |b| {
        b.iter_custom(|iters| naive.run(iters, &NAIVE))
    });
    g.finish();
}

criterion_group!(benches, durable_transitions);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    let (g, n) = (GROUP.per_sec(), NAIVE.per_sec());
    if g > 0.0 && n > 0.0 {
        println!();
        println!("durable transitions/s, {SUBMITTERS} concurrent submitters (all samples):");
        println!("  {:<22} {:>12.0}", GROUP.name, g);
        println!("  {:<22} {:>12.0}", NAIVE.name, n);
        println!("  group commit / per-transition flush = {:.0}x", g / n);
    }
}
