//! Which stored block issued a serial that has no record yet.
//!
//! Schema 2 kept one sled key per serial ever issued (`issued`, a keyed
//! hash of the serial to its block id): 120 bytes of disk per serial, and
//! sled's page table, loaded at every open, grew with it. The ledger now keeps,
//! per block that still holds serials without a record, its serials' keyed
//! hashes as sorted arrays, in memory and in the `issued_blocks` tree (one
//! value per chunk of [`CHUNK`] hashes). A block whose every serial has a
//! record drops its arrays: from then on its serials are answered by their
//! records, which is also how a later block repeating one is refused.
//!
//! Invariant: for every block whose cursor says `used < count`, the index
//! holds every serial of the block; for no other block does it hold any.

use serialine_core::BlockId;
use std::collections::BTreeMap;

/// Hashes per stored chunk: one chunk is the ledger's largest value
/// (`ledger::MAX_VALUE_BYTES`, which says why).
pub(crate) const CHUNK: usize = crate::ledger::MAX_VALUE_BYTES / 16;

/// A serial's keyed hash (see `ledger::serial_index_key`).
pub(crate) type SerialKey = [u8; 16];

#[derive(Debug, Default)]
pub(crate) struct IssuedIndex {
    /// Sorted hashes of each block that still holds serials without a record.
    blocks: BTreeMap<BlockId, Vec<SerialKey>>,
}

impl IssuedIndex {
    /// The block holding `key`, among blocks with serials left.
    pub fn block_of(&self, key: &SerialKey) -> Option<BlockId> {
        self.blocks
            .iter()
            .find(|(_, keys)| keys.binary_search(key).is_ok())
            .map(|(id, _)| *id)
    }

    /// `keys` sorted, as [`sorted_keys`] makes them and the stored chunks
    /// hold them.
    pub fn insert(&mut self, block: BlockId, keys: Vec<SerialKey>) {
        debug_assert!(keys.is_sorted(), "block {block}: issued keys unsorted");
        self.blocks.insert(block, keys);
    }

    pub fn remove(&mut self, block: BlockId) {
        self.blocks.remove(&block);
    }

    /// Hashes held, for diagnostics.
    pub fn len(&self) -> usize {
        self.blocks.values().map(Vec::len).sum()
    }
}

/// A block's serial hashes, sorted, as the index and the chunks hold them.
pub(crate) fn sorted_keys(mut keys: Vec<SerialKey>) -> Vec<SerialKey> {
    keys.sort_unstable();
    keys
}

/// The `issued_blocks` entries of `block`: key and value of each chunk of
/// its sorted hashes.
pub(crate) fn chunks(
    block: BlockId,
    sorted: &[SerialKey],
) -> impl Iterator<Item = ([u8; 12], Vec<u8>)> + '_ {
    sorted
        .chunks(CHUNK)
        .enumerate()
        .map(move |(i, chunk)| (chunk_key(block, i as u32), encode_chunk(chunk)))
}

/// `issued_blocks` key of chunk `i` of `block`.
pub(crate) fn chunk_key(block: BlockId, i: u32) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..8].copy_from_slice(&block.to_be_bytes());
    k[8..].copy_from_slice(&i.to_be_bytes());
    k
}

/// Chunks of a block of `count` serials.
pub(crate) fn chunks_of(count: u32) -> u32 {
    (count as usize).div_ceil(CHUNK) as u32
}

/// The block id of an `issued_blocks` key.
pub(crate) fn block_of_key(key: &[u8]) -> Option<BlockId> {
    (key.len() == 12).then(|| u64::from_be_bytes(key[..8].try_into().unwrap_or([0; 8])))
}

/// A chunk's value: its hashes, concatenated.
pub(crate) fn encode_chunk(keys: &[SerialKey]) -> Vec<u8> {
    keys.concat()
}

/// The hashes of a chunk value; `None` if its length is not a multiple of 16.
pub(crate) fn decode_chunk(value: &[u8]) -> Option<Vec<SerialKey>> {
    if !value.len().is_multiple_of(16) {
        return None;
    }
    Some(
        value
            .chunks_exact(16)
            .map(|c| {
                let mut k = [0u8; 16];
                k.copy_from_slice(c);
                k
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_block_of_a_key_and_forgets_removed_blocks() {
        let mut ix = IssuedIndex::default();
        ix.insert(1, sorted_keys(vec![[3; 16], [1; 16]]));
        ix.insert(2, vec![[2; 16]]);
        assert_eq!(ix.block_of(&[1; 16]), Some(1));
        assert_eq!(ix.block_of(&[2; 16]), Some(2));
        assert_eq!(ix.block_of(&[9; 16]), None);
        ix.remove(1);
        assert_eq!(ix.block_of(&[1; 16]), None);
        assert_eq!(ix.len(), 1);
    }

    #[test]
    fn chunks_round_trip_and_refuse_a_torn_value() {
        let keys = vec![[7u8; 16], [8u8; 16]];
        assert_eq!(decode_chunk(&encode_chunk(&keys)), Some(keys));
        assert_eq!(decode_chunk(&[0u8; 17]), None);
        assert_eq!(block_of_key(&chunk_key(42, 3)), Some(42));
        assert_eq!(chunks_of(CHUNK as u32), 1);
        assert_eq!(chunks_of(CHUNK as u32 + 1), 2);
        assert_eq!(chunks_of(0), 0);
    }
}
