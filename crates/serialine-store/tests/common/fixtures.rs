//! What the store's tests and examples share (`examples/common` includes
//! this file): the GTIN, blocks sealed the way upstream does, and serials
//! driven through the ledger as a line does.

use serialine_core::{Block, BlockKey, Gtin, SealedBlock, Serial, UnitState};
use serialine_store::{Store, StoreError, Transition};

/// The GTIN every test and example block is sealed for.
pub fn gtin() -> Gtin {
    Gtin::parse("09506000134352").expect("valid GTIN")
}

/// Block `id` of `line` holding `serials`, sealed under `key`, with a nonce
/// made from its id (each block's is distinct).
pub fn seal_block(key: &BlockKey, line: &str, id: u64, serials: Vec<Serial>) -> SealedBlock {
    let block = Block {
        block_id: id,
        line_id: line.into(),
        gtin: gtin(),
        serials,
        issued_at: 1_790_000_000,
    };
    let mut nonce = [0u8; 24];
    nonce[..8].copy_from_slice(&id.to_be_bytes());
    key.seal(&block, nonce).expect("block seals")
}

/// Moves `serials` through Sent, Printed and Committed, one batch a state.
pub fn commit_through(store: &Store, serials: &[Serial]) -> Result<(), StoreError> {
    for to in [UnitState::Sent, UnitState::Printed, UnitState::Committed] {
        let ts: Vec<_> = serials
            .iter()
            .map(|s| Transition::new(s.clone(), to))
            .collect();
        for r in store.apply_blocking(&ts) {
            r?;
        }
    }
    Ok(())
}

/// Acknowledges everything the outbox shows upstream, as the uplink does.
pub fn ack_outbox(store: &Store) -> Result<(), StoreError> {
    let seqs: Vec<u64> = store
        .outbox_peek(usize::MAX)?
        .iter()
        .map(|e| e.seq)
        .collect();
    store.outbox_ack_blocking(&seqs).map(|_| ())
}
