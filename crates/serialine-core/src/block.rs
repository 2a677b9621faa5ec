//! Serial blocks and their sealing.
//!
//! Upstream issues serials in blocks sealed with XChaCha20-Poly1305 under a key
//! derived from the line's secret. The block id and line id travel in clear as
//! associated data, so a block cannot be moved to another line or renumbered
//! without failing authentication. The store keeps blocks sealed; only the
//! working window is opened.

use crate::gtin::Gtin;
use crate::serial::Serial;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use std::fmt;

pub type BlockId = u64;

/// blake3 `derive_key` context: globally unique and fixed forever, since
/// changing it would make every stored block unreadable.
const KEY_CONTEXT: &str = "serialine 2026-11-26 block seal v1";

/// Sealed wire format version; the first byte of [`SealedBlock::to_bytes`].
const WIRE_VERSION: u8 = 1;
const NONCE_LEN: usize = 24;
/// Longest line id accepted; keeps the header bounded for hostile input.
pub const MAX_LINE_ID_LEN: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    #[error("block {block_id} is for line {found:?}, this is line {expected:?}")]
    WrongLine {
        block_id: BlockId,
        expected: String,
        found: String,
    },
    #[error(
        "block {block_id} failed authentication (forged, corrupted, or sealed under another key)"
    )]
    Authentication { block_id: BlockId },
    #[error("sealed block is malformed: {0}")]
    Malformed(String),
    #[error("block {block_id} content does not match its sealed header: {what}")]
    HeaderMismatch { block_id: BlockId, what: String },
    #[error("block {block_id} is empty")]
    Empty { block_id: BlockId },
    #[error("block {block_id} lists serial {serial} twice")]
    DuplicateSerial { block_id: BlockId, serial: Serial },
    #[error("block {block_id} could not be encoded: {why}")]
    Encode { block_id: BlockId, why: String },
}

/// A block of serials as upstream issued it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    pub block_id: BlockId,
    pub line_id: String,
    pub gtin: Gtin,
    pub serials: Vec<Serial>,
    /// Unix seconds.
    pub issued_at: u64,
}

impl Block {
    pub fn count(&self) -> usize {
        self.serials.len()
    }

    /// A block must be non-empty and must not list a serial twice; either would
    /// let a well-formed but wrong block put one serial on two units.
    pub fn validate(&self) -> Result<(), BlockError> {
        if self.serials.is_empty() {
            return Err(BlockError::Empty {
                block_id: self.block_id,
            });
        }
        let mut seen = std::collections::HashSet::with_capacity(self.serials.len());
        for s in &self.serials {
            if !seen.insert(s.as_str()) {
                return Err(BlockError::DuplicateSerial {
                    block_id: self.block_id,
                    serial: s.clone(),
                });
            }
        }
        Ok(())
    }
}

/// A block as it travels and rests: header in clear, serials encrypted.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedBlock {
    pub block_id: BlockId,
    pub line_id: String,
    pub nonce: [u8; NONCE_LEN],
    pub ciphertext: Vec<u8>,
}

impl fmt::Debug for SealedBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedBlock")
            .field("block_id", &self.block_id)
            .field("line_id", &self.line_id)
            .field("ciphertext_len", &self.ciphertext.len())
            .finish()
    }
}

impl SealedBlock {
    /// `version u8 | block_id u64 BE | line_len u8 | line_id | nonce[24] | ciphertext`
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(1 + 8 + 1 + self.line_id.len() + NONCE_LEN + self.ciphertext.len());
        out.push(WIRE_VERSION);
        out.extend_from_slice(&self.block_id.to_be_bytes());
        // line_id length is bounded at construction (open/seal check MAX_LINE_ID_LEN).
        out.push(self.line_id.len() as u8);
        out.extend_from_slice(self.line_id.as_bytes());
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.ciphertext);
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, BlockError> {
        let malformed = |why: &str| BlockError::Malformed(why.to_string());
        let (&version, rest) = bytes.split_first().ok_or_else(|| malformed("empty"))?;
        if version != WIRE_VERSION {
            return Err(BlockError::Malformed(format!(
                "wire version {version}, this build reads {WIRE_VERSION}"
            )));
        }
        let (id, rest) = split(rest, 8).ok_or_else(|| malformed("truncated block id"))?;
        let block_id = u64::from_be_bytes(id.try_into().map_err(|_| malformed("block id"))?);
        let (&line_len, rest) = rest
            .split_first()
            .ok_or_else(|| malformed("truncated line id length"))?;
        let line_len = usize::from(line_len);
        if line_len == 0 || line_len > MAX_LINE_ID_LEN {
            return Err(malformed("line id length out of range"));
        }
        let (line, rest) = split(rest, line_len).ok_or_else(|| malformed("truncated line id"))?;
        let line_id = std::str::from_utf8(line)
            .map_err(|_| malformed("line id is not UTF-8"))?
            .to_string();
        let (nonce, ciphertext) =
            split(rest, NONCE_LEN).ok_or_else(|| malformed("truncated nonce"))?;
        if ciphertext.len() < 16 {
            return Err(malformed("ciphertext shorter than its tag"));
        }
        Ok(SealedBlock {
            block_id,
            line_id,
            nonce: nonce.try_into().map_err(|_| malformed("nonce"))?,
            ciphertext: ciphertext.to_vec(),
        })
    }
}

fn split(b: &[u8], n: usize) -> Option<(&[u8], &[u8])> {
    (b.len() >= n).then(|| b.split_at(n))
}

/// Associated data: binds the ciphertext to its block id and line.
fn associated_data(block_id: BlockId, line_id: &str) -> Vec<u8> {
    let mut ad = Vec::with_capacity(8 + 1 + line_id.len());
    ad.extend_from_slice(&block_id.to_be_bytes());
    ad.push(line_id.len() as u8);
    ad.extend_from_slice(line_id.as_bytes());
    ad
}

/// The per-line block key. `Debug` never shows the key.
#[derive(Clone)]
pub struct BlockKey(XChaCha20Poly1305);

impl fmt::Debug for BlockKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BlockKey(<redacted>)")
    }
}

impl BlockKey {
    pub fn derive(line_secret: &[u8]) -> Self {
        let key = blake3::derive_key(KEY_CONTEXT, line_secret);
        BlockKey(XChaCha20Poly1305::new(&key.into()))
    }

    /// Seals `block`. The caller supplies a fresh random nonce (this crate does no
    /// I/O, randomness included); XChaCha's 192-bit nonce makes random nonces safe.
    pub fn seal(&self, block: &Block, nonce: [u8; NONCE_LEN]) -> Result<SealedBlock, BlockError> {
        block.validate()?;
        if block.line_id.is_empty() || block.line_id.len() > MAX_LINE_ID_LEN {
            return Err(BlockError::Encode {
                block_id: block.block_id,
                why: format!("line id must be 1..={MAX_LINE_ID_LEN} bytes"),
            });
        }
        let plain = postcard::to_stdvec(block).map_err(|e| BlockError::Encode {
            block_id: block.block_id,
            why: e.to_string(),
        })?;
        let ad = associated_data(block.block_id, &block.line_id);
        let ciphertext = self
            .0
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &plain,
                    aad: &ad,
                },
            )
            .map_err(|_| BlockError::Encode {
                block_id: block.block_id,
                why: "encryption failed".into(),
            })?;
        Ok(SealedBlock {
            block_id: block.block_id,
            line_id: block.line_id.clone(),
            nonce,
            ciphertext,
        })
    }

    /// Opens a sealed block meant for `expected_line`. Anything but an intact
    /// block sealed for this line under this key is an error, never a panic.
    pub fn open(&self, sealed: &SealedBlock, expected_line: &str) -> Result<Block, BlockError> {
        if sealed.line_id != expected_line {
            return Err(BlockError::WrongLine {
                block_id: sealed.block_id,
                expected: expected_line.to_string(),
                found: sealed.line_id.clone(),
            });
        }
        let ad = associated_data(sealed.block_id, &sealed.line_id);
        let plain = self
            .0
            .decrypt(
                XNonce::from_slice(&sealed.nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: &ad,
                },
            )
            .map_err(|_| BlockError::Authentication {
                block_id: sealed.block_id,
            })?;
        let block: Block =
            postcard::from_bytes(&plain).map_err(|e| BlockError::HeaderMismatch {
                block_id: sealed.block_id,
                what: format!("authenticated content does not decode: {e}"),
            })?;
        if block.block_id != sealed.block_id || block.line_id != sealed.line_id {
            return Err(BlockError::HeaderMismatch {
                block_id: sealed.block_id,
                what: format!(
                    "content says block {} for line {:?}",
                    block.block_id, block.line_id
                ),
            });
        }
        block.validate()?;
        Ok(block)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block() -> Block {
        Block {
            block_id: 7,
            line_id: "line-1".into(),
            gtin: Gtin::parse("09506000134352").unwrap(),
            serials: ["A1B2C3", "Q9W8E7", "ZZ00XY"]
                .iter()
                .map(|s| Serial::new(*s).unwrap())
                .collect(),
            issued_at: 1_790_000_000,
        }
    }

    fn key() -> BlockKey {
        BlockKey::derive(b"line-1 secret")
    }

    #[test]
    fn seal_open_round_trip_through_bytes() {
        let sealed = key().seal(&block(), [3; 24]).unwrap();
        let wire = sealed.to_bytes();
        let back = SealedBlock::from_bytes(&wire).unwrap();
        assert_eq!(key().open(&back, "line-1").unwrap(), block());
    }

    #[test]
    fn ciphertext_hides_serials() {
        let wire = key().seal(&block(), [3; 24]).unwrap().to_bytes();
        assert!(!wire.windows(6).any(|w| w == b"A1B2C3"));
    }

    #[test]
    fn every_tampered_byte_is_rejected() {
        let wire = key().seal(&block(), [3; 24]).unwrap().to_bytes();
        for i in 0..wire.len() {
            let mut bad = wire.clone();
            bad[i] ^= 0x01;
            let opened = SealedBlock::from_bytes(&bad).and_then(|s| key().open(&s, "line-1"));
            assert!(opened.is_err(), "flip at byte {i} accepted");
        }
    }

    #[test]
    fn wrong_line_is_named() {
        let sealed = key().seal(&block(), [3; 24]).unwrap();
        assert!(matches!(
            key().open(&sealed, "line-2"),
            Err(BlockError::WrongLine { block_id: 7, .. })
        ));
        // Relabelling the header to another line breaks the associated data.
        let mut moved = sealed.clone();
        moved.line_id = "line-2".into();
        assert_eq!(
            key().open(&moved, "line-2"),
            Err(BlockError::Authentication { block_id: 7 })
        );
    }

    #[test]
    fn wrong_key_and_renumbering_fail_authentication() {
        let sealed = key().seal(&block(), [3; 24]).unwrap();
        assert_eq!(
            BlockKey::derive(b"another secret").open(&sealed, "line-1"),
            Err(BlockError::Authentication { block_id: 7 })
        );
        let mut renumbered = sealed;
        renumbered.block_id = 8;
        assert_eq!(
            key().open(&renumbered, "line-1"),
            Err(BlockError::Authentication { block_id: 8 })
        );
    }

    #[test]
    fn truncation_is_malformed_not_a_panic() {
        let wire = key().seal(&block(), [3; 24]).unwrap().to_bytes();
        for n in 0..wire.len() {
            let r = SealedBlock::from_bytes(&wire[..n]).and_then(|s| key().open(&s, "line-1"));
            assert!(r.is_err(), "prefix of {n} bytes accepted");
        }
    }

    #[test]
    fn duplicate_serials_are_refused_at_seal() {
        let mut b = block();
        b.serials.push(b.serials[0].clone());
        assert!(matches!(
            key().seal(&b, [0; 24]),
            Err(BlockError::DuplicateSerial { .. })
        ));
    }

    #[test]
    fn debug_redacts_key() {
        assert_eq!(format!("{:?}", key()), "BlockKey(<redacted>)");
    }
}
