//! Drives serials through the ledger as a line does; shared by the store's
//! tests and examples (`examples/common` includes this file).

use serialine_core::{Serial, UnitState};
use serialine_store::{Store, StoreError, Transition};

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
