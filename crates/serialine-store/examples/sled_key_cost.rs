//! What sled 0.34 costs on disk per key, whatever the key's and value's
//! size: the measurement behind the outbox's chunks and the settled blocks
//! (ARCHITECTURE.md, "Settled blocks").
//!
//!     cargo run --release -p serialine-store --example sled_key_cost -- [KEYS]
//!
//! Writes KEYS (default 300,000) keys three ways into fresh sled databases,
//! in batches of 500 with a flush after each (as the committer does), then
//! prints the directory's bytes per key:
//! - `serial records`: 15-character serial keys, 22-byte records, each
//!   written four times (Sent, Printed, Committed, Synced);
//! - `8-byte keys`: 8-byte hashes with 3-byte values, written once;
//! - `4,000-byte values`: one value per 1,000 keys, i.e. what a compact
//!   layout that packs a thousand serials' data into one value pays.

use std::path::Path;

fn dir_bytes(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: u64 = std::env::args().nth(1).map_or(Ok(300_000), |a| a.parse())?;
    const BATCH: u64 = 500;
    println!("{n} keys, batches of {BATCH}, a flush after each");
    for mode in ["serial records", "8-byte keys", "4,000-byte values"] {
        let dir = tempfile::tempdir()?;
        {
            let db = sled::Config::new()
                .path(dir.path())
                .cache_capacity(32 << 20)
                .open()?;
            let t = db.open_tree("t")?;
            let mut i = 0;
            while i < n {
                let end = (i + BATCH).min(n);
                match mode {
                    "serial records" => {
                        for state in 0..4u8 {
                            for j in i..end {
                                let key = format!("D{:07}N{:06}", j / 10_000, j % 10_000);
                                let mut v = [0u8; 22];
                                v[0] = state;
                                t.insert(key.as_bytes(), &v[..])?;
                            }
                            db.flush()?;
                        }
                    }
                    "8-byte keys" => {
                        for j in i..end {
                            let h = blake3::hash(&j.to_le_bytes());
                            t.insert(&h.as_bytes()[..8], &[1u8, 2, 3][..])?;
                        }
                        db.flush()?;
                    }
                    _ => {
                        if i % 1_000 == 0 {
                            t.insert(i.to_be_bytes(), vec![7u8; 4_000])?;
                            db.flush()?;
                        }
                    }
                }
                i = end;
            }
            db.flush()?;
        }
        // Opened again, as after a checkpoint: sled writes its snapshot.
        drop(sled::open(dir.path())?);
        println!(
            "{mode:>18}: {:>6.1} bytes of disk per key",
            dir_bytes(dir.path()) as f64 / n as f64
        );
    }
    Ok(())
}
