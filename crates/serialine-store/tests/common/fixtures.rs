//! What the store's tests and examples share (`examples/common` includes
//! this file): the GTIN, blocks sealed the way upstream does, and serials
//! driven through the ledger as a line does.

use serialine_core::{Block, BlockKey, Gtin, SealedBlock, Serial, UnitState};
use serialine_store::{Store, StoreError, Transition};

/// The GTIN every test and example block is sealed for.
pub fn gtin() -> Gtin {
    Gtin::parse("09506000134352").expect("valid GTIN")
}

/// The GTIN of a case of [`gtin`]'s units (packaging indicator 1): case
/// labels come from blocks sealed for it.
pub fn case_gtin() -> Gtin {
    Gtin::parse("19506000134359").expect("valid GTIN")
}

/// Block `id` of `line` holding `serials`, sealed under `key`, with a nonce
/// made from its id (each block's is distinct).
pub fn seal_block(key: &BlockKey, line: &str, id: u64, serials: Vec<Serial>) -> SealedBlock {
    seal_block_for(key, line, id, gtin(), serials)
}

/// The GTIN of a pallet of [`case_gtin`]'s cases (indicator 2): a pallet's
/// label is never of the product it holds.
pub fn pallet_gtin() -> Gtin {
    Gtin::parse("29506000134356").expect("valid GTIN")
}

/// [`seal_block`] for another product.
pub fn seal_block_for(
    key: &BlockKey,
    line: &str,
    id: u64,
    gtin: Gtin,
    serials: Vec<Serial>,
) -> SealedBlock {
    let block = Block {
        block_id: id,
        line_id: line.into(),
        gtin,
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

/// One simulated production day: `units` serials sent, printed, committed
/// and acknowledged upstream, in batches of 1,000, with a block of
/// `block_size` serials (ids from `next_block` on) added whenever the
/// buffer runs dry.
pub fn run_day(
    store: &Store,
    key: &BlockKey,
    units: u64,
    block_size: u32,
    next_block: &mut u64,
) -> Result<(), StoreError> {
    let mut done = 0u64;
    while done < units {
        let want = (units - done).min(1_000) as usize;
        let mut batch = store.reserve_for(want, &gtin())?;
        if batch.len() < want {
            let id = *next_block;
            *next_block += 1;
            let serials = (0..block_size)
                .map(|n| Serial::new(format!("D{id:07}N{n:06}")).expect("valid serial"))
                .collect();
            store.add_block_blocking(&seal_block(key, store.line_id(), id, serials))?;
            batch.extend(store.reserve_for(want - batch.len(), &gtin())?);
        }
        commit_through(store, &batch)?;
        ack_outbox(store)?;
        done += batch.len() as u64;
    }
    Ok(())
}
