//! Shared fixtures: a line, its secret, and blocks sealed the way upstream does.
#![allow(dead_code)]

mod fixtures;
#[allow(unused_imports)]
pub use fixtures::*;

use serialine_core::{BlockKey, SealedBlock, Serial};
use serialine_store::{Recovery, Store, StoreOptions};
use std::path::Path;

pub const LINE: &str = "line-1";
pub const SECRET: &[u8] = b"line-1 test secret";

/// Serials `{prefix}{n:08}` for n in `range`.
pub fn serials(prefix: &str, range: std::ops::Range<u32>) -> Vec<Serial> {
    range
        .map(|n| Serial::new(format!("{prefix}{n:08}")).expect("valid test serial"))
        .collect()
}

pub fn sealed_block(block_id: u64, line: &str, secret: &[u8], serials: Vec<Serial>) -> SealedBlock {
    seal_block(&BlockKey::derive(secret), line, block_id, serials)
}

pub fn options(dir: &Path) -> StoreOptions {
    StoreOptions::new(dir.join("ledger"), LINE, SECRET)
}

pub fn open(dir: &Path) -> (Store, Recovery) {
    Store::open(options(dir)).expect("ledger opens")
}
