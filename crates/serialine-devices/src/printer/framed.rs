//! The framed-ASCII wire format: `START payload [checksum hex] END`, plus bare
//! ACK / NAK bytes between frames.
//!
//! [`FrameDecoder`] is a pure, incremental byte-at-a-time state machine: it
//! never panics, whatever arrives. Bytes outside a frame that are not ACK/NAK
//! are line noise: skipped and counted. A START inside a frame abandons the
//! partial frame (the device evidently restarted it) and a frame longer than
//! `max_frame` is dropped and the decoder waits for the next START, so one
//! lost END byte costs at most one frame.

use super::profile::Framing;
use bytes::BytesMut;

/// One thing decoded from the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    Ack,
    Nak,
    /// A frame's payload (checksum verified and stripped).
    Frame(Vec<u8>),
}

/// A frame that arrived but could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("bad checksum in frame {frame:?}: computed {computed:04X}, frame says {received}")]
    BadChecksum {
        frame: String,
        computed: u16,
        received: String,
    },
    #[error("frame {frame:?} is shorter than its {width}-digit checksum")]
    MissingChecksum { frame: String, width: usize },
    #[error("frame longer than {limit} bytes dropped; resyncing at the next start byte")]
    TooLong { limit: usize },
    #[error("frame abandoned after {len} bytes: a new start byte arrived before its end")]
    Restarted { len: usize },
}

/// What [`FrameDecoder::feed`] produced for one byte.
pub type Decoded = Result<Token, FrameError>;

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Idle,
    InFrame,
    /// Dropping an over-long frame until its END (or a new START).
    Skipping,
}

/// Incremental decoder for the framed-ASCII protocol.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    framing: Framing,
    state: State,
    buf: Vec<u8>,
    garbage: u64,
}

impl FrameDecoder {
    pub fn new(framing: Framing) -> Self {
        FrameDecoder {
            framing,
            state: State::Idle,
            buf: Vec::new(),
            garbage: 0,
        }
    }

    /// Bytes skipped as noise so far (outside frames, or in dropped frames).
    pub fn garbage(&self) -> u64 {
        self.garbage
    }

    /// Forgets any partial frame, e.g. after a reconnect.
    pub fn reset(&mut self) {
        self.state = State::Idle;
        self.buf.clear();
    }

    /// Feeds one byte; returns a token or error when one completes.
    pub fn feed(&mut self, b: u8) -> Option<Decoded> {
        let f = &self.framing;
        match self.state {
            State::Idle => {
                if b == f.start {
                    self.state = State::InFrame;
                    self.buf.clear();
                    None
                } else if b == f.ack {
                    Some(Ok(Token::Ack))
                } else if b == f.nak {
                    Some(Ok(Token::Nak))
                } else {
                    self.garbage += 1;
                    None
                }
            }
            State::Skipping => {
                self.garbage += 1;
                if b == f.start {
                    self.garbage -= 1;
                    self.state = State::InFrame;
                    self.buf.clear();
                } else if b == f.end {
                    self.state = State::Idle;
                }
                None
            }
            State::InFrame => {
                if b == f.end {
                    self.state = State::Idle;
                    let raw = std::mem::take(&mut self.buf);
                    Some(self.check(raw))
                } else if b == f.start {
                    let len = self.buf.len();
                    self.garbage += len as u64 + 1;
                    self.buf.clear();
                    Some(Err(FrameError::Restarted { len }))
                } else if self.buf.len() >= f.max_frame {
                    self.garbage += self.buf.len() as u64 + 2;
                    self.buf.clear();
                    self.state = State::Skipping;
                    Some(Err(FrameError::TooLong { limit: f.max_frame }))
                } else {
                    self.buf.push(b);
                    None
                }
            }
        }
    }

    /// Splits off and verifies the checksum digits.
    fn check(&mut self, mut raw: Vec<u8>) -> Decoded {
        let cs = self.framing.checksum;
        let width = cs.width();
        if width == 0 {
            return Ok(Token::Frame(raw));
        }
        if raw.len() < width {
            self.garbage += raw.len() as u64 + 2;
            return Err(FrameError::MissingChecksum {
                frame: String::from_utf8_lossy(&raw).into_owned(),
                width,
            });
        }
        let digits = raw.split_off(raw.len() - width);
        let computed = cs.compute(&raw);
        if super::checksum::Checksum::parse_hex(&digits) == Some(computed) {
            Ok(Token::Frame(raw))
        } else {
            self.garbage += (raw.len() + width) as u64 + 2;
            Err(FrameError::BadChecksum {
                frame: String::from_utf8_lossy(&raw).into_owned(),
                computed,
                received: String::from_utf8_lossy(&digits).into_owned(),
            })
        }
    }

    /// Decodes everything in `bytes`, appending results to `out`.
    pub fn feed_all(&mut self, bytes: &[u8], out: &mut Vec<Decoded>) {
        out.extend(bytes.iter().filter_map(|&b| self.feed(b)));
    }
}

/// Lets the decoder sit under `tokio_util::codec::FramedRead` too. Decode
/// errors are items, not stream errors: a bad frame must not end the stream.
impl tokio_util::codec::Decoder for FrameDecoder {
    type Item = Decoded;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Decoded>, std::io::Error> {
        let mut used = 0;
        let mut found = None;
        for &b in src.iter() {
            used += 1;
            if let Some(d) = self.feed(b) {
                found = Some(d);
                break;
            }
        }
        let _ = src.split_to(used);
        Ok(found)
    }
}

/// Why a payload cannot be framed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("payload contains control byte 0x{byte:02X} (start/end) at offset {at}")]
    ControlByte { byte: u8, at: usize },
    #[error("frame of {len} bytes exceeds the profile's max_frame {limit}")]
    TooLong { len: usize, limit: usize },
}

/// Frames `payload` (start, payload, checksum digits, end) onto `out`.
///
/// Refuses payloads containing the start or end byte: there is no escaping
/// in these protocols, so such a code could never be sent intact.
pub fn encode_frame(
    framing: &Framing,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    if let Some(at) = payload
        .iter()
        .position(|&b| b == framing.start || b == framing.end)
    {
        return Err(EncodeError::ControlByte {
            byte: payload[at],
            at,
        });
    }
    let len = payload.len() + framing.checksum.width();
    if len > framing.max_frame {
        return Err(EncodeError::TooLong {
            len,
            limit: framing.max_frame,
        });
    }
    out.push(framing.start);
    out.extend_from_slice(payload);
    framing.checksum.write_hex(payload, out);
    out.push(framing.end);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::checksum::Checksum;
    use super::*;
    use proptest::prelude::*;

    fn framing(checksum: Checksum) -> Framing {
        Framing {
            start: 0x02,
            end: 0x03,
            ack: 0x06,
            nak: 0x15,
            checksum,
            max_frame: 64,
        }
    }

    fn decode(f: Framing, bytes: &[u8]) -> (Vec<Decoded>, u64) {
        let mut d = FrameDecoder::new(f);
        let mut out = Vec::new();
        d.feed_all(bytes, &mut out);
        (out, d.garbage())
    }

    #[test]
    fn frames_acks_and_noise() {
        let f = framing(Checksum::Xor);
        let mut wire = b"xx\x06".to_vec();
        encode_frame(&f, b"D0001", &mut wire).expect("encodes");
        wire.extend_from_slice(b"\x15zz");
        let (out, garbage) = decode(f, &wire);
        assert_eq!(
            out,
            vec![
                Ok(Token::Ack),
                Ok(Token::Frame(b"D0001".to_vec())),
                Ok(Token::Nak)
            ]
        );
        assert_eq!(garbage, 4);
    }

    #[test]
    fn bad_checksum_is_a_typed_error() {
        let (out, _) = decode(framing(Checksum::Crc16), b"\x02D0001FFFF\x03");
        assert!(
            matches!(&out[..], [Err(FrameError::BadChecksum { received, .. })] if received == "FFFF")
        );
        let (out, _) = decode(framing(Checksum::Crc16), b"\x02D0\x03");
        assert!(matches!(
            &out[..],
            [Err(FrameError::MissingChecksum { .. })]
        ));
    }

    #[test]
    fn overlong_frame_resyncs_at_next_start() {
        let f = framing(Checksum::None);
        let mut wire = vec![0x02];
        wire.extend(std::iter::repeat_n(b'A', 200));
        wire.push(0x06); // inside the dropped frame: not an ACK
        wire.extend_from_slice(b"\x02ok\x03");
        let (out, _) = decode(f, &wire);
        assert_eq!(
            out,
            vec![
                Err(FrameError::TooLong { limit: 64 }),
                Ok(Token::Frame(b"ok".to_vec()))
            ]
        );
    }

    #[test]
    fn restart_inside_frame_keeps_the_new_frame() {
        let (out, _) = decode(framing(Checksum::None), b"\x02lost\x02kept\x03");
        assert_eq!(
            out,
            vec![
                Err(FrameError::Restarted { len: 4 }),
                Ok(Token::Frame(b"kept".to_vec()))
            ]
        );
    }

    #[test]
    fn refuses_unframeable_payloads() {
        let f = framing(Checksum::None);
        let mut out = Vec::new();
        assert_eq!(
            encode_frame(&f, b"a\x03b", &mut out),
            Err(EncodeError::ControlByte { byte: 3, at: 1 })
        );
        assert!(matches!(
            encode_frame(&f, &[b'a'; 65], &mut out),
            Err(EncodeError::TooLong { .. })
        ));
        assert!(out.is_empty());
    }

    fn any_checksum() -> impl Strategy<Value = Checksum> {
        prop_oneof![
            Just(Checksum::None),
            Just(Checksum::Xor),
            Just(Checksum::Sum8),
            Just(Checksum::Crc16)
        ]
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(
            cs in any_checksum(),
            bytes in proptest::collection::vec(any::<u8>(), 0..4096),
        ) {
            let mut d = FrameDecoder::new(framing(cs));
            let mut out = Vec::new();
            d.feed_all(&bytes, &mut out);
            // Every byte is accounted for as a token, part of a frame or noise.
            prop_assert!(d.garbage() <= bytes.len() as u64);
            let mut codec = FrameDecoder::new(framing(cs));
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = tokio_util::codec::Decoder::decode(&mut codec, &mut buf) {}
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn encode_then_decode_round_trips(
            cs in any_checksum(),
            payloads in proptest::collection::vec(
                proptest::collection::vec(any::<u8>().prop_filter("no framing", |b| *b != 2 && *b != 3), 0..50),
                1..10),
            noise in proptest::collection::vec(
                any::<u8>().prop_filter("noise has no control bytes", |b| ![2, 3, 6, 0x15].contains(b)), 0..8),
        ) {
            let f = framing(cs);
            let mut wire = Vec::new();
            for p in &payloads {
                wire.extend_from_slice(&noise);
                encode_frame(&f, p, &mut wire).map_err(|e| TestCaseError::fail(e.to_string()))?;
            }
            let (out, garbage) = decode(f, &wire);
            let want: Vec<Decoded> = payloads.iter().map(|p| Ok(Token::Frame(p.clone()))).collect();
            prop_assert_eq!(out, want);
            prop_assert_eq!(garbage, (noise.len() * payloads.len()) as u64);
        }
    }
}
