//! Sealed serial blocks from upstream (`blocks/response`):
//! `SealedBlock::from_bytes` + `BlockKey::open` on hostile bytes, the decoder
//! behind the AEAD (by sealing arbitrary plaintext under the right key), and
//! seal -> bytes -> open round trips of blocks built from the input.
//!
//! Byte 0 selects the mode, the rest is data:
//! - mode 0: wire bytes -> `from_bytes`; if they parse, `to_bytes` gives
//!   them back and `open` fails (nothing forged authenticates);
//! - mode 1: arbitrary plaintext, authentically sealed (same key derivation
//!   and associated data as `BlockKey`) -> `open` must not panic, and a
//!   block it returns is valid and matches its header;
//! - mode 2: a block from the input (serials filtered through `Serial::new`)
//!   -> `seal` -> `to_bytes` -> `from_bytes` -> `open` == block.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use libfuzzer_sys::fuzz_target;
use serialine_core::{Block, BlockError, BlockKey, Gtin, SealedBlock, Serial};
use std::sync::OnceLock;

const SECRET: &[u8] = b"fuzz";
/// Must equal `serialine_core::block::KEY_CONTEXT` (private); checked once
/// at start-up against `BlockKey` itself, see `cipher()`.
const KEY_CONTEXT: &str = "serialine 2026-11-26 block seal v1";

fn key() -> &'static BlockKey {
    static KEY: OnceLock<BlockKey> = OnceLock::new();
    KEY.get_or_init(|| BlockKey::derive(SECRET))
}

fn associated_data(block_id: u64, line_id: &str) -> Vec<u8> {
    let mut ad = block_id.to_be_bytes().to_vec();
    ad.push(line_id.len() as u8);
    ad.extend_from_slice(line_id.as_bytes());
    ad
}

/// The same cipher as `key()`, usable on arbitrary plaintext.
fn cipher() -> &'static XChaCha20Poly1305 {
    static CIPHER: OnceLock<XChaCha20Poly1305> = OnceLock::new();
    CIPHER.get_or_init(|| {
        let c = XChaCha20Poly1305::new(&blake3::derive_key(KEY_CONTEXT, SECRET).into());
        // Self-check: a block sealed by BlockKey opens with this cipher.
        let block = Block {
            block_id: 1,
            line_id: "L1".into(),
            gtin: Gtin::parse("09506000134352").expect("valid GTIN"),
            serials: vec![Serial::new("A1").expect("valid serial")],
            issued_at: 0,
        };
        let sealed = key().seal(&block, [7; 24]).expect("seals");
        c.decrypt(
            XNonce::from_slice(&sealed.nonce),
            Payload {
                msg: &sealed.ciphertext,
                aad: &associated_data(1, "L1"),
            },
        )
        .expect("fuzz target's key derivation / AD drifted from serialine_core::block");
        c
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    match sel % 3 {
        0 => wire(rest),
        1 => authentic_plaintext(sel, rest),
        _ => {
            let _ = seal_round_trip(&mut Unstructured::new(rest));
        }
    }
});

fn wire(bytes: &[u8]) {
    let Ok(sealed) = SealedBlock::from_bytes(bytes) else {
        return;
    };
    assert_eq!(
        sealed.to_bytes(),
        bytes,
        "from_bytes -> to_bytes round trip"
    );
    let _ = format!("{sealed:?}");
    match key().open(&sealed, &sealed.line_id) {
        Err(BlockError::Authentication { block_id }) => assert_eq!(block_id, sealed.block_id),
        other => panic!("forged block did not fail authentication: {other:?}"),
    }
    let other_line = format!("{}x", sealed.line_id);
    assert!(matches!(
        key().open(&sealed, &other_line),
        Err(BlockError::WrongLine { .. })
    ));
}

fn authentic_plaintext(sel: u8, plain: &[u8]) {
    let block_id = u64::from(sel >> 2);
    let line_id = "line-1";
    let nonce = [sel; 24];
    let ciphertext = cipher()
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plain,
                aad: &associated_data(block_id, line_id),
            },
        )
        .expect("encrypts");
    let sealed = SealedBlock {
        block_id,
        line_id: line_id.into(),
        nonce,
        ciphertext,
    };
    // Through the wire format too, as the uplink receives it.
    let sealed = SealedBlock::from_bytes(&sealed.to_bytes()).expect("well-formed wire bytes");
    match key().open(&sealed, line_id) {
        Ok(block) => {
            assert_eq!(block.block_id, block_id);
            assert_eq!(block.line_id, line_id);
            assert!(block.validate().is_ok());
            assert!(block.count() >= 1);
        }
        Err(e) => {
            assert!(
                !matches!(
                    e,
                    BlockError::Authentication { .. } | BlockError::WrongLine { .. }
                ),
                "authentic block refused as {e:?}"
            );
            let _ = e.to_string();
        }
    }
}

#[derive(Debug, Arbitrary)]
struct Raw {
    block_id: u64,
    line_id: String,
    gtin_body: [u8; 13],
    serials: Vec<String>,
    issued_at: u64,
    nonce: [u8; 24],
}

fn seal_round_trip(u: &mut Unstructured) -> arbitrary::Result<()> {
    let raw = Raw::arbitrary(u)?;
    let gtin = Gtin::from_body(raw.gtin_body.map(|d| d % 10)).expect("digits");
    let mut serials: Vec<Serial> = raw
        .serials
        .into_iter()
        .filter_map(|s| Serial::new(s).ok())
        .collect();
    let block = Block {
        block_id: raw.block_id,
        line_id: raw.line_id,
        gtin,
        serials: serials.clone(),
        issued_at: raw.issued_at,
    };
    let sealed = match key().seal(&block, raw.nonce) {
        Ok(s) => s,
        Err(e) => {
            // Refused only for an invalid block or an unusable line id.
            serials.sort();
            let dup = serials.windows(2).any(|w| w[0] == w[1]);
            let bad_line = block.line_id.is_empty() || block.line_id.len() > 64;
            assert!(
                serials.is_empty() || dup || bad_line,
                "valid block refused: {e}"
            );
            return Ok(());
        }
    };
    let wire = sealed.to_bytes();
    let back = SealedBlock::from_bytes(&wire).expect("sealed bytes parse");
    assert_eq!(back, sealed);
    let opened = key()
        .open(&back, &block.line_id)
        .expect("sealed block opens");
    assert_eq!(opened, block);
    // Any single flipped bit after the version byte must fail, never panic.
    if !wire.is_empty() {
        let mut bad = wire.clone();
        let i = (raw.block_id as usize) % bad.len();
        bad[i] ^= 1 << (raw.issued_at % 8);
        if let Ok(s) = SealedBlock::from_bytes(&bad) {
            assert!(
                key().open(&s, &block.line_id).is_err(),
                "tampered block opened"
            );
        }
    }
    Ok(())
}
