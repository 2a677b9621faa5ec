//! Non-sequential serials for the issuer side.
//!
//! An issuer hands out serials by index (0, 1, 2, ...) but must not hand out
//! *predictable* serials: EU FMD requires that the chance of guessing a valid
//! serial is below 1 in 10,000. [`SerialGenerator`] maps each index to a serial
//! through a keyed, format-preserving permutation of the space of all strings
//! of a fixed length over a fixed alphabet:
//!
//! * the serial has the same alphabet and length as every other serial of the
//!   generator (format preserving);
//! * distinct indices give distinct serials *by construction*, because the map
//!   is a bijection on `[0, N)` where `N = |alphabet|^len`;
//! * without the key, the serial for an index (and the index for a serial)
//!   cannot be predicted.
//!
//! # Construction
//!
//! The number space `[0, N)` is embedded in a bit domain of `2k` bits, where
//! `2k` is the smallest even bit count with `2^(2k) >= N`. A balanced Feistel
//! network with [`FEISTEL_ROUNDS`] rounds permutes that bit domain; its round
//! function is a BLAKE3 keyed hash of the round number and the right half,
//! truncated to `k` bits. Cycle walking (applying the Feistel permutation again
//! until the value falls below `N`) restricts it to a permutation of `[0, N)`.
//! Because `N > 2^(2k) / 4`, fewer than 4 walks are needed on average.
//!
//! The Feistel key is derived from the caller's 32-byte key with
//! `blake3::derive_key` and then bound to the alphabet and length, so one key
//! used for two formats yields two unrelated permutations.
//!
//! The permuted number is written in base `|alphabet|`, most significant digit
//! first, padded with the alphabet's first character.

use crate::serial::{is_cset82, Serial, SerialError, MAX_SERIAL_LEN};
use std::fmt;

/// Alphabet used by [`SerialGenerator::with_defaults`]: digits and upper-case
/// letters without `I` and `O`, which are easily confused with `1` and `0` on
/// print.
pub const DEFAULT_ALPHABET: &str = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ";

/// Serial length used by [`SerialGenerator::with_defaults`].
pub const DEFAULT_LEN: usize = 12;

/// Smallest domain (`|alphabet|^len`) a generator accepts: 2^20 serials.
/// Below this a keyed permutation offers too little protection against
/// guessing to be meaningful.
pub const MIN_DOMAIN_SIZE: u128 = 1 << 20;

/// Number of Feistel rounds.
pub const FEISTEL_ROUNDS: u8 = 10;

/// Upper bound on cycle-walking steps for one value. A true permutation of a
/// domain with `N > 2^(2k) / 4` needs fewer than 4 on average, so reaching
/// this bound means something is badly wrong; it is reported as an error
/// instead of looping forever.
const MAX_WALKS: u32 = 10_000;

/// Key-derivation context for the Feistel key (see `blake3::derive_key`).
const KDF_CONTEXT: &str = "serialine serialgen feistel v1";

/// Marks a digit lookup slot whose byte is not in the alphabet.
const NOT_IN_ALPHABET: u8 = u8::MAX;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SerialGenError {
    #[error("serial alphabet is empty")]
    EmptyAlphabet,
    #[error("serial alphabet contains {ch:?} at position {pos}, outside the GS1 82-character set")]
    AlphabetCharOutsideCset82 { ch: char, pos: usize },
    #[error("serial alphabet contains {ch:?} more than once (again at position {pos})")]
    DuplicateAlphabetChar { ch: char, pos: usize },
    #[error("serial length must be at least 1")]
    ZeroLength,
    #[error("serial length {len} exceeds the GS1 AI (21) maximum of {MAX_SERIAL_LEN}")]
    LengthTooLong { len: usize },
    #[error("{alphabet_len} characters to the power {len} does not fit in 128 bits")]
    DomainTooLarge { alphabet_len: usize, len: usize },
    #[error(
        "{alphabet_len} characters to the power {len} gives only {domain} serials; \
         at least {MIN_DOMAIN_SIZE} (2^20) are required"
    )]
    DomainTooSmall {
        alphabet_len: usize,
        len: usize,
        domain: u128,
    },
    #[error("index {index} is outside the generator's domain of {domain} serials")]
    IndexOutOfRange { index: u128, domain: u128 },
    #[error("cycle walking for index {index} did not terminate after {MAX_WALKS} steps")]
    CycleWalkExhausted { index: u128 },
    #[error("generated serial is invalid: {0}")]
    InvalidSerial(SerialError),
}

/// Keyed format-preserving permutation from indices to serials.
///
/// `serial_at(i)` is the `i`-th serial of the permutation; `index_of` inverts
/// it. The key itself is not kept, only the derived hashing state; the `Debug`
/// output shows the format but never key material.
#[derive(Clone)]
pub struct SerialGenerator {
    /// Alphabet characters (all ASCII, as CSET 82 is ASCII), digit order.
    alphabet: Vec<u8>,
    /// Maps an ASCII byte to its digit value, or [`NOT_IN_ALPHABET`].
    digit_of: [u8; 128],
    len: usize,
    /// `alphabet.len() ^ len`.
    domain: u128,
    feistel: Feistel,
}

impl SerialGenerator {
    /// A generator of `len`-character serials over `alphabet`, keyed by `key`.
    ///
    /// The alphabet must be non-empty, free of duplicates and drawn from GS1
    /// CSET 82; `len` must be 1 to [`MAX_SERIAL_LEN`]; and the domain
    /// `|alphabet|^len` must be at least [`MIN_DOMAIN_SIZE`].
    pub fn new(key: [u8; 32], alphabet: &str, len: usize) -> Result<Self, SerialGenError> {
        if alphabet.is_empty() {
            return Err(SerialGenError::EmptyAlphabet);
        }
        let mut digit_of = [NOT_IN_ALPHABET; 128];
        let mut chars = Vec::with_capacity(alphabet.len());
        for (pos, ch) in alphabet.chars().enumerate() {
            if !is_cset82(ch) {
                return Err(SerialGenError::AlphabetCharOutsideCset82 { ch, pos });
            }
            // CSET 82 is a subset of ASCII, so `ch` is a single byte below 128.
            let byte = ch as u8;
            if digit_of[usize::from(byte)] != NOT_IN_ALPHABET {
                return Err(SerialGenError::DuplicateAlphabetChar { ch, pos });
            }
            // At most 82 distinct characters, so the digit fits in a u8.
            digit_of[usize::from(byte)] = pos as u8;
            chars.push(byte);
        }
        if len == 0 {
            return Err(SerialGenError::ZeroLength);
        }
        if len > MAX_SERIAL_LEN {
            return Err(SerialGenError::LengthTooLong { len });
        }
        let alphabet_len = chars.len();
        let domain = u32::try_from(len)
            .ok()
            .and_then(|exp| (alphabet_len as u128).checked_pow(exp))
            .ok_or(SerialGenError::DomainTooLarge { alphabet_len, len })?;
        if domain < MIN_DOMAIN_SIZE {
            return Err(SerialGenError::DomainTooSmall {
                alphabet_len,
                len,
                domain,
            });
        }

        let feistel = Feistel::new(&key, &chars, len, domain);
        Ok(SerialGenerator {
            alphabet: chars,
            digit_of,
            len,
            domain,
            feistel,
        })
    }

    /// A generator of [`DEFAULT_LEN`]-character serials over
    /// [`DEFAULT_ALPHABET`] (34^12, about 2.4 * 10^18 serials).
    pub fn with_defaults(key: [u8; 32]) -> Self {
        // The default format satisfies every check in `new`.
        Self::new(key, DEFAULT_ALPHABET, DEFAULT_LEN).expect("default serial format is valid")
    }

    /// Number of distinct serials: `|alphabet|^len`.
    pub fn domain_size(&self) -> u128 {
        self.domain
    }

    /// The alphabet serials are drawn from, in digit order.
    pub fn alphabet(&self) -> &str {
        // Built from the validated `&str`, all ASCII.
        std::str::from_utf8(&self.alphabet).unwrap_or_default()
    }

    /// Length of every serial this generator produces.
    pub fn serial_len(&self) -> usize {
        self.len
    }

    /// The serial at `index`, for `index` in `[0, domain_size())`.
    pub fn serial_at(&self, index: u128) -> Result<Serial, SerialGenError> {
        if index >= self.domain {
            return Err(SerialGenError::IndexOutOfRange {
                index,
                domain: self.domain,
            });
        }
        let value = self
            .feistel
            .permute(index, self.domain)
            .ok_or(SerialGenError::CycleWalkExhausted { index })?;
        Serial::new(self.encode(value)).map_err(SerialGenError::InvalidSerial)
    }

    /// The index whose serial is `serial`, or `None` if `serial` is not of
    /// this generator's format (wrong length or a character outside the
    /// alphabet).
    ///
    /// Every well-formed serial has an index, so this tells which index a
    /// serial was drawn at, not whether it was issued; compare the index with
    /// the issued range for that.
    pub fn index_of(&self, serial: &Serial) -> Option<u128> {
        let value = self.decode(serial.as_bytes())?;
        self.feistel.unpermute(value, self.domain)
    }

    /// The serials at indices `start`, `start + 1`, ..., `start + count - 1`.
    ///
    /// Yields exactly `count` items; indices at or past the end of the domain
    /// yield [`SerialGenError::IndexOutOfRange`].
    pub fn range(
        &self,
        start: u128,
        count: u64,
    ) -> impl Iterator<Item = Result<Serial, SerialGenError>> + '_ {
        (0..count).map(move |offset| {
            // Saturating: u128::MAX is beyond any domain, so an overflowing
            // index is reported as out of range.
            self.serial_at(start.saturating_add(u128::from(offset)))
        })
    }

    /// `value` (below the domain size) as `len` base-|alphabet| digits, most
    /// significant first.
    fn encode(&self, mut value: u128) -> String {
        let base = self.alphabet.len() as u128;
        let mut buf = [0u8; MAX_SERIAL_LEN];
        let digits = &mut buf[..self.len];
        for slot in digits.iter_mut().rev() {
            *slot = self.alphabet[(value % base) as usize];
            value /= base;
        }
        // Alphabet bytes are ASCII, so each byte is one char.
        digits.iter().map(|&b| char::from(b)).collect()
    }

    /// Inverse of [`Self::encode`]; `None` on a wrong length or a byte outside
    /// the alphabet.
    fn decode(&self, bytes: &[u8]) -> Option<u128> {
        if bytes.len() != self.len {
            return None;
        }
        let base = self.alphabet.len() as u128;
        bytes.iter().try_fold(0u128, |acc, &b| {
            let digit = *self.digit_of.get(usize::from(b))?;
            if digit == NOT_IN_ALPHABET {
                return None;
            }
            // acc < base^(i) and digit < base, so this stays below the domain.
            Some(acc * base + u128::from(digit))
        })
    }
}

impl fmt::Debug for SerialGenerator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SerialGenerator")
            .field("alphabet", &self.alphabet())
            .field("len", &self.len)
            .field("rounds", &FEISTEL_ROUNDS)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// Balanced Feistel network over `2 * half_bits` bits, with cycle walking.
#[derive(Clone)]
struct Feistel {
    /// `k`: bits per half, 10 to 64.
    half_bits: u32,
    /// `2^k - 1`.
    mask: u64,
    /// BLAKE3 keyed with the format-bound Feistel key, before any input.
    /// Cloned for each round function evaluation.
    hasher: blake3::Hasher,
}

impl Feistel {
    /// Feistel network for a domain of `domain` values (`>= 2`), keyed from
    /// `key` and bound to the format (`alphabet`, `len`).
    fn new(key: &[u8; 32], alphabet: &[u8], len: usize, domain: u128) -> Self {
        let base_key = blake3::derive_key(KDF_CONTEXT, key);
        // Length-prefixed fields, so distinct formats give distinct inputs.
        let mut format = blake3::Hasher::new_keyed(&base_key);
        format.update(b"format");
        format.update(&(len as u64).to_le_bytes());
        format.update(&(alphabet.len() as u64).to_le_bytes());
        format.update(alphabet);
        let round_key: [u8; 32] = *format.finalize().as_bytes();

        // Bits needed to hold domain - 1, rounded up to an even count.
        let bits = u128::BITS - (domain - 1).leading_zeros();
        let half_bits = bits.div_ceil(2);
        let mask = if half_bits >= u64::BITS {
            u64::MAX
        } else {
            (1u64 << half_bits) - 1
        };
        Feistel {
            half_bits,
            mask,
            hasher: blake3::Hasher::new_keyed(&round_key),
        }
    }

    /// Round function: keyed hash of the round number and `half`, cut to k bits.
    #[inline]
    fn round(&self, round: u8, half: u64) -> u64 {
        let mut input = [0u8; 9];
        input[0] = round;
        input[1..].copy_from_slice(&half.to_le_bytes());
        let mut hasher = self.hasher.clone();
        hasher.update(&input);
        let hash = hasher.finalize();
        let mut word = [0u8; 8];
        word.copy_from_slice(&hash.as_bytes()[..8]);
        u64::from_le_bytes(word) & self.mask
    }

    #[inline]
    fn split(&self, x: u128) -> (u64, u64) {
        // x < 2^(2k); the high half is below 2^k <= 2^64.
        ((x >> self.half_bits) as u64, (x as u64) & self.mask)
    }

    #[inline]
    fn join(&self, left: u64, right: u64) -> u128 {
        (u128::from(left) << self.half_bits) | u128::from(right)
    }

    /// One pass of the network over the full `2k`-bit domain.
    fn encrypt(&self, x: u128) -> u128 {
        let (mut left, mut right) = self.split(x);
        for r in 0..FEISTEL_ROUNDS {
            let next = left ^ self.round(r, right);
            left = right;
            right = next;
        }
        self.join(left, right)
    }

    /// Inverse of [`Self::encrypt`].
    fn decrypt(&self, y: u128) -> u128 {
        let (mut left, mut right) = self.split(y);
        for r in (0..FEISTEL_ROUNDS).rev() {
            let prev = right ^ self.round(r, left);
            right = left;
            left = prev;
        }
        self.join(left, right)
    }

    /// The permutation of `[0, domain)`: cycle-walk `encrypt` until the value
    /// lands inside the domain. `None` only if the walk bound is reached.
    fn permute(&self, x: u128, domain: u128) -> Option<u128> {
        walk(x, domain, |v| self.encrypt(v))
    }

    /// Inverse of [`Self::permute`].
    fn unpermute(&self, y: u128, domain: u128) -> Option<u128> {
        walk(y, domain, |v| self.decrypt(v))
    }
}

/// Applies `step` to `x` until the result is below `domain`, at most
/// [`MAX_WALKS`] times.
fn walk(x: u128, domain: u128, step: impl Fn(u128) -> u128) -> Option<u128> {
    let mut v = x;
    for _ in 0..MAX_WALKS {
        v = step(v);
        if v < domain {
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: [u8; 32] = [7; 32];
    const HEX: &str = "0123456789ABCDEF";

    fn default_gen(key: [u8; 32]) -> SerialGenerator {
        SerialGenerator::with_defaults(key)
    }

    #[test]
    fn default_format() {
        let g = default_gen(KEY);
        assert_eq!(g.domain_size(), 34u128.pow(12));
        assert_eq!(g.alphabet(), DEFAULT_ALPHABET);
        assert_eq!(g.serial_len(), 12);
        assert!(!DEFAULT_ALPHABET.contains('I') && !DEFAULT_ALPHABET.contains('O'));
    }

    /// Asserts that indices `start..start + count` map to distinct serials of
    /// the generator's format that `index_of` maps back.
    fn assert_distinct_and_invertible(g: &SerialGenerator, start: u128, count: u128) {
        let mut seen = vec![false; g.domain_size() as usize];
        for i in start..start + count {
            let s = g.serial_at(i).unwrap();
            let v = g.decode(s.as_bytes()).unwrap() as usize;
            assert!(!seen[v], "collision at index {i}: {s}");
            seen[v] = true;
            assert_eq!(g.index_of(&s), Some(i));
        }
    }

    /// Hex, length 5: N = 2^20 exactly (no cycle walking). Every index maps to
    /// a distinct serial, and back. About 12 s unoptimised, so only run by
    /// default in release builds (`cargo test --release`); the sampled tests
    /// below cover debug builds.
    #[test]
    #[cfg_attr(debug_assertions, ignore = "slow unoptimised; run with --release")]
    fn bijection_on_full_small_domain() {
        let g = SerialGenerator::new(KEY, HEX, 5).unwrap();
        assert_eq!(g.domain_size(), 1 << 20);
        assert_distinct_and_invertible(&g, 0, g.domain_size());
    }

    /// Hex, length 5: a contiguous 200,000-index sample of the above.
    #[test]
    fn distinct_and_invertible_on_sample() {
        let g = SerialGenerator::new(KEY, HEX, 5).unwrap();
        assert_distinct_and_invertible(&g, 500_000, 200_000);
    }

    /// 45^4 = 4,100,625 in a 22-bit domain: cycle walking is exercised. A
    /// contiguous range of indices maps to distinct serials that invert.
    #[test]
    fn distinct_and_invertible_with_cycle_walking() {
        let alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghi";
        let g = SerialGenerator::new(KEY, alphabet, 4).unwrap();
        assert_eq!(g.domain_size(), 45u128.pow(4));
        assert_eq!(g.feistel.half_bits, 11);
        assert_distinct_and_invertible(&g, 0, 200_000);
    }

    /// The cycle-walked Feistel permutation on a domain that is not a power of
    /// two, checked exhaustively at the number level.
    #[test]
    fn walked_feistel_is_a_permutation() {
        for domain in [3000u128, 4096, 1025, 2] {
            let f = Feistel::new(&KEY, b"01", 1, domain);
            let mut seen = vec![false; domain as usize];
            for x in 0..domain {
                let y = f.permute(x, domain).unwrap();
                assert!(y < domain);
                assert!(!seen[y as usize]);
                seen[y as usize] = true;
                assert_eq!(f.unpermute(y, domain), Some(x));
            }
        }
    }

    #[test]
    fn largest_domain_uses_full_128_bits() {
        let cset82: String = (0u8..128)
            .map(char::from)
            .filter(|&c| is_cset82(c))
            .collect();
        assert_eq!(cset82.len(), 82);
        let g = SerialGenerator::new(KEY, &cset82, 20).unwrap();
        assert_eq!(g.feistel.half_bits, 64);
        for i in [0, 1, g.domain_size() / 2, g.domain_size() - 1] {
            let s = g.serial_at(i).unwrap();
            assert_eq!(s.as_str().len(), 20);
            assert_eq!(g.index_of(&s), Some(i));
        }
    }

    proptest! {
        #[test]
        fn index_of_inverts_serial_at(key in any::<[u8; 32]>(), index in 0u128..34u128.pow(12)) {
            let g = default_gen(key);
            let s = g.serial_at(index).unwrap();
            prop_assert_eq!(g.index_of(&s), Some(index));
        }
    }

    #[test]
    fn deterministic_and_key_dependent() {
        let a: Vec<Serial> = default_gen(KEY).range(0, 100).map(Result::unwrap).collect();
        let b: Vec<Serial> = default_gen(KEY).range(0, 100).map(Result::unwrap).collect();
        assert_eq!(a, b);

        let mut other_key = KEY;
        other_key[31] ^= 1;
        let c: Vec<Serial> = default_gen(other_key)
            .range(0, 100)
            .map(Result::unwrap)
            .collect();
        let same = a.iter().zip(&c).filter(|(x, y)| x == y).count();
        assert_eq!(same, 0);
    }

    #[test]
    fn format_is_bound_into_the_permutation() {
        // Same key, same alphabet, different length: the leading serial of
        // length 12 is not the length-11 serial with a digit added.
        let g12 = default_gen(KEY);
        let g11 = SerialGenerator::new(KEY, DEFAULT_ALPHABET, 11).unwrap();
        let a: Vec<u128> = (0..100)
            .map(|i| g12.decode(g12.serial_at(i).unwrap().as_bytes()).unwrap())
            .collect();
        let b: Vec<u128> = (0..100)
            .map(|i| g11.decode(g11.serial_at(i).unwrap().as_bytes()).unwrap())
            .collect();
        assert!(a.iter().zip(&b).all(|(x, y)| x / 34 != *y && x != y));
    }

    #[test]
    fn consecutive_indices_are_not_consecutive_serials() {
        let g = default_gen(KEY);
        let n = g.domain_size();
        let values: Vec<u128> = g
            .range(1_000, 1_000)
            .map(|s| g.decode(s.unwrap().as_bytes()).unwrap())
            .collect();
        let close = values
            .windows(2)
            .filter(|w| w[0].abs_diff(w[1]) < n / 1000)
            .count();
        assert!(close < 10, "{close} of 999 adjacent pairs are close");
    }

    #[test]
    fn serials_have_the_format() {
        let punct = "!\"%&'()*+,-./:;<=>?_abcdefgh";
        for (alphabet, len) in [
            (DEFAULT_ALPHABET, 12),
            (HEX, 5),
            (punct, 6),
            ("0123456789", 20),
        ] {
            let g = SerialGenerator::new(KEY, alphabet, len).unwrap();
            let last = g.domain_size() - 500;
            for s in g.range(0, 500).chain(g.range(last, 500)) {
                let s = s.unwrap();
                assert_eq!(s.as_str().chars().count(), len, "{s:?}");
                assert!(s.as_str().chars().all(|c| alphabet.contains(c)), "{s:?}");
            }
        }
    }

    #[test]
    fn index_of_rejects_foreign_serials() {
        let g = default_gen(KEY);
        let s = g.serial_at(42).unwrap();
        let short = Serial::new(&s.as_str()[..11]).unwrap();
        assert_eq!(g.index_of(&short), None);
        let long = Serial::new(format!("{}0", s.as_str())).unwrap();
        assert_eq!(g.index_of(&long), None);
        let with_i = Serial::new(format!("I{}", &s.as_str()[1..])).unwrap();
        assert_eq!(g.index_of(&with_i), None);
        let lower = Serial::new(s.as_str().to_ascii_lowercase()).unwrap();
        if lower != s {
            assert_eq!(g.index_of(&lower), None);
        }
    }

    #[test]
    fn range_yields_count_items_and_errors_past_the_end() {
        let g = SerialGenerator::new(KEY, HEX, 5).unwrap();
        let n = g.domain_size();
        let items: Vec<_> = g.range(n - 2, 4).collect();
        assert_eq!(items.len(), 4);
        assert_eq!(items[0], g.serial_at(n - 2));
        assert!(items[1].is_ok());
        assert_eq!(
            items[2],
            Err(SerialGenError::IndexOutOfRange {
                index: n,
                domain: n
            })
        );
        let far: Vec<_> = g.range(u128::MAX, 2).collect();
        assert!(far
            .iter()
            .all(|r| matches!(r, Err(SerialGenError::IndexOutOfRange { .. }))));
        assert_eq!(g.range(0, 0).count(), 0);
    }

    #[test]
    fn rejects_bad_parameters() {
        use SerialGenError::*;
        assert_eq!(
            SerialGenerator::new(KEY, "", 12).unwrap_err(),
            EmptyAlphabet
        );
        assert_eq!(
            SerialGenerator::new(KEY, "0123456789A1", 12).unwrap_err(),
            DuplicateAlphabetChar { ch: '1', pos: 11 }
        );
        assert_eq!(
            SerialGenerator::new(KEY, "0123 456789", 12).unwrap_err(),
            AlphabetCharOutsideCset82 { ch: ' ', pos: 4 }
        );
        assert_eq!(
            SerialGenerator::new(KEY, "0123#456789", 12).unwrap_err(),
            AlphabetCharOutsideCset82 { ch: '#', pos: 4 }
        );
        assert_eq!(
            SerialGenerator::new(KEY, "0123456789Ä", 12).unwrap_err(),
            AlphabetCharOutsideCset82 { ch: 'Ä', pos: 10 }
        );
        assert_eq!(
            SerialGenerator::new(KEY, DEFAULT_ALPHABET, 0).unwrap_err(),
            ZeroLength
        );
        assert_eq!(
            SerialGenerator::new(KEY, DEFAULT_ALPHABET, 21).unwrap_err(),
            LengthTooLong { len: 21 }
        );
        assert!(SerialGenerator::new(KEY, DEFAULT_ALPHABET, 20).is_ok());
        // 16^5 = 2^20 is the smallest accepted; 16^4 and 10^6 are too small.
        assert_eq!(
            SerialGenerator::new(KEY, HEX, 4).unwrap_err(),
            DomainTooSmall {
                alphabet_len: 16,
                len: 4,
                domain: 65_536
            }
        );
        assert!(matches!(
            SerialGenerator::new(KEY, "0123456789", 6),
            Err(DomainTooSmall { .. })
        ));
        assert!(matches!(
            SerialGenerator::new(KEY, "0", 20),
            Err(DomainTooSmall { domain: 1, .. })
        ));

        let g = SerialGenerator::new(KEY, HEX, 5).unwrap();
        let n = g.domain_size();
        assert!(g.serial_at(n - 1).is_ok());
        assert_eq!(
            g.serial_at(n),
            Err(IndexOutOfRange {
                index: n,
                domain: n
            })
        );
        assert!(matches!(
            g.serial_at(u128::MAX),
            Err(IndexOutOfRange { .. })
        ));
    }

    #[test]
    fn errors_describe_themselves() {
        let e = SerialGenerator::new(KEY, HEX, 4).unwrap_err().to_string();
        assert!(e.contains("1048576"), "{e}");
        let e = SerialGenerator::new(KEY, "AA", 12).unwrap_err().to_string();
        assert!(e.contains("'A'"), "{e}");
    }

    #[test]
    fn debug_redacts_the_key() {
        let key = [0x7e; 32];
        let g = SerialGenerator::new(key, HEX, 5).unwrap();
        let dbg = format!("{g:?}");
        assert!(dbg.contains("redacted"), "{dbg}");
        assert!(!dbg.contains("126"), "{dbg}");
        assert!(!dbg.to_ascii_lowercase().contains("7e7e"), "{dbg}");
        assert!(!dbg.contains(&format!("{key:?}")), "{dbg}");
        assert!(dbg.contains(HEX) && dbg.contains("len: 5"), "{dbg}");
    }
}
