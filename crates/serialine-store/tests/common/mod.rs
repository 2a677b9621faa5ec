//! Shared fixtures: a line, its secret, and blocks sealed the way upstream does.
#![allow(dead_code)]

mod drive;
#[allow(unused_imports)]
pub use drive::*;

use serialine_core::{Block, BlockKey, Gtin, SealedBlock, Serial};
use serialine_store::{Recovery, Store, StoreOptions};
use std::path::Path;

pub const LINE: &str = "line-1";
pub const SECRET: &[u8] = b"line-1 test secret";

pub fn gtin() -> Gtin {
    Gtin::parse("09506000134352").expect("valid test GTIN")
}

/// Serials `{prefix}{n:08}` for n in `range`.
pub fn serials(prefix: &str, range: std::ops::Range<u32>) -> Vec<Serial> {
    range
        .map(|n| Serial::new(format!("{prefix}{n:08}")).expect("valid test serial"))
        .collect()
}

pub fn sealed_block(block_id: u64, line: &str, secret: &[u8], serials: Vec<Serial>) -> SealedBlock {
    let block = Block {
        block_id,
        line_id: line.into(),
        gtin: gtin(),
        serials,
        issued_at: 1_790_000_000,
    };
    let mut nonce = [0u8; 24];
    nonce[..8].copy_from_slice(&block_id.to_be_bytes());
    BlockKey::derive(secret)
        .seal(&block, nonce)
        .expect("test block seals")
}

pub fn options(dir: &Path) -> StoreOptions {
    StoreOptions::new(dir.join("ledger"), LINE, SECRET)
}

pub fn open(dir: &Path) -> (Store, Recovery) {
    Store::open(options(dir)).expect("ledger opens")
}
