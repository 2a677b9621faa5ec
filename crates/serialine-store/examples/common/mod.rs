//! What the store's examples share: the tests' fixtures (a block sealed the
//! way upstream does, serials driven through the ledger), and this process's
//! memory and a directory's size, as they report them.
//! (A directory without `main.rs`, so cargo does not take it for an example.)
#![allow(dead_code)]

#[path = "../../tests/common/fixtures.rs"]
mod fixtures;
#[allow(unused_imports)]
pub use fixtures::*;

use std::path::Path;

/// The example's `n`th argument as a number (`_` allowed as a thousands
/// separator), or `default`.
pub fn arg(n: usize, default: u64) -> u64 {
    std::env::args()
        .nth(n)
        .and_then(|a| a.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// A field of this process's `/proc/self/status` (`VmRSS`, `VmHWM`), as
/// the kernel writes it ("123456 kB"), or "unknown".
pub fn proc_status(key: &str) -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix(key)?
                    .strip_prefix(':')
                    .map(|v| v.trim().to_string())
            })
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The same field in MB (0 if unreadable).
pub fn proc_status_mb(key: &str) -> f64 {
    proc_status(key)
        .trim_end_matches("kB")
        .trim()
        .parse::<f64>()
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Bytes of the files under `p`.
pub fn walk_size(p: &Path) -> u64 {
    match std::fs::read_dir(p) {
        Ok(rd) => rd
            .flatten()
            .map(|e| {
                let path = e.path();
                if path.is_dir() {
                    walk_size(&path)
                } else {
                    e.metadata().map(|m| m.len()).unwrap_or(0)
                }
            })
            .sum(),
        Err(_) => 0,
    }
}
