//! The working window: serials decrypted from stored blocks, waiting to be
//! reserved. Lives in memory only; the ledger is the truth. A reservation
//! never reached a device, so losing the pool in a crash loses nothing.

use serialine_core::{BlockId, Serial};
use std::collections::{HashMap, HashSet, VecDeque};

#[derive(Default)]
pub(crate) struct Pool {
    /// Available serials in hand-out order.
    pub window: VecDeque<(Serial, BlockId)>,
    /// Serials reserved by a caller and not yet sent.
    pub reserved: HashMap<Serial, BlockId>,
    /// Blocks whose available serials are all in `window` or `reserved`
    /// already: loading one again would hand a serial out twice.
    pub loaded: HashSet<BlockId>,
}

impl Pool {
    pub fn take(&mut self, n: usize) -> Vec<Serial> {
        let n = n.min(self.window.len());
        let mut out = Vec::with_capacity(n);
        for (serial, block) in self.window.drain(..n) {
            self.reserved.insert(serial.clone(), block);
            out.push(serial);
        }
        out
    }

    /// Gives back reservations that never reached a device (a stopped job).
    /// They go to the front so the next unit uses them first.
    pub fn release(&mut self, serials: &[Serial]) {
        for s in serials.iter().rev() {
            if let Some(b) = self.reserved.remove(s) {
                self.window.push_front((s.clone(), b));
            }
        }
    }
}
