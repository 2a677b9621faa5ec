//! The working window: serials decrypted from stored blocks, waiting to be
//! reserved. Lives in memory only; the ledger is the truth. A reservation
//! never reached a device, so losing the pool in a crash loses nothing.
//!
//! Serials are kept per product (the GTIN their block was sealed for): a
//! reservation for one product never hands out a serial issued for another,
//! and blocks of another product stay where they are, for their own job.

use serialine_core::{BlockId, Gtin, Serial};
use std::collections::{HashMap, HashSet, VecDeque};

#[derive(Default)]
pub(crate) struct Pool {
    /// Available serials in hand-out order, per product.
    pub windows: HashMap<Gtin, VecDeque<(Serial, BlockId)>>,
    /// Serials reserved by a caller and not yet sent.
    pub reserved: HashMap<Serial, BlockId>,
    /// Blocks whose available serials are all in a window or `reserved`
    /// already: loading one again would hand a serial out twice.
    pub loaded: HashSet<BlockId>,
    /// The product each block seen so far was sealed for (read from the
    /// authenticated block content, never from the request that fetched it).
    pub gtins: HashMap<BlockId, Gtin>,
}

impl Pool {
    /// Serials in the window of `gtin`, or of every product with `None`.
    pub fn window_len(&self, gtin: Option<&Gtin>) -> usize {
        match gtin {
            Some(g) => self.windows.get(g).map_or(0, VecDeque::len),
            None => self.windows.values().map(VecDeque::len).sum(),
        }
    }

    /// Reserves up to `n` serials of `gtin` (of any product with `None`).
    pub fn take(&mut self, n: usize, gtin: Option<&Gtin>) -> Vec<Serial> {
        let mut out = Vec::with_capacity(n.min(self.window_len(gtin)));
        let keys: Vec<Gtin> = match gtin {
            Some(g) => vec![*g],
            None => {
                let mut k: Vec<Gtin> = self.windows.keys().copied().collect();
                k.sort_unstable();
                k
            }
        };
        for key in keys {
            let Some(window) = self.windows.get_mut(&key) else {
                continue;
            };
            let want = (n - out.len()).min(window.len());
            for (serial, block) in window.drain(..want) {
                self.reserved.insert(serial.clone(), block);
                out.push(serial);
            }
            if out.len() == n {
                break;
            }
        }
        out
    }

    /// Puts a serial that is not reserved back at the front of its
    /// product's window, so the next unit uses it first.
    pub fn restore(&mut self, serial: Serial, block: BlockId) {
        match self.gtins.get(&block) {
            Some(g) => self
                .windows
                .entry(*g)
                .or_default()
                .push_front((serial, block)),
            // Every block in the pool had its product recorded when it was
            // loaded; without one the serial is left to the next open.
            None => tracing::error!(
                block,
                "serial of a block with no known product not returned to the pool"
            ),
        }
    }

    /// Gives back reservations that never reached a device (a stopped job).
    /// They go to the front so the next unit uses them first.
    pub fn release(&mut self, serials: &[Serial]) {
        for s in serials.iter().rev() {
            if let Some(b) = self.reserved.remove(s) {
                self.restore(s.clone(), b);
            }
        }
    }

    /// Like [`Pool::release`], but to the back of the window: for serials
    /// the caller could not use (a code that does not render), so that they
    /// are not the next ones handed out again.
    pub fn release_to_back(&mut self, serials: &[Serial]) {
        for s in serials {
            if let Some(b) = self.reserved.remove(s) {
                match self.gtins.get(&b) {
                    Some(g) => self
                        .windows
                        .entry(*g)
                        .or_default()
                        .push_back((s.clone(), b)),
                    None => tracing::error!(
                        block = b,
                        "serial of a block with no known product not returned to the pool"
                    ),
                }
            }
        }
    }

    /// Reserved serials of blocks sealed for `gtin`.
    pub fn reserved_of(&self, gtin: &Gtin) -> u64 {
        self.reserved
            .values()
            .filter(|b| self.gtins.get(b) == Some(gtin))
            .count() as u64
    }
}
