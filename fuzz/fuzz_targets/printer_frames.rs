//! Framed-ASCII printer protocol: the incremental `FrameDecoder` over
//! arbitrary wire bytes, and message templates (`Template::parse` / `matches`
//! / `render`) over arbitrary template text and payloads.
//!
//! Input layout: byte 0 selects the mode and checksum, the rest is data.
//! - mode 0..=1: wire bytes through a decoder built from a compiled profile
//!   (CIJ-style `P{id:04}|{code}` / `D{id:04}` or TIJ-style `MSG{id:05};…`),
//!   checksum from byte 0, plus encode -> decode round trip of payloads cut
//!   from the input; every payload the message template matches renders
//!   back to itself, and a rendered message matches back to its id and code;
//! - mode 2: arbitrary template text (up to the first NUL) and a payload
//!   (after it) through `Template::parse` + `matches` (a match renders back
//!   to the payload), and a render -> matches round trip where the template
//!   is unambiguous.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serialine_devices::printer::{
    encode_frame, Checksum, Decoded, FrameDecoder, FramedProfile, Framing, Template, Token,
};
use tokio_util::bytes::BytesMut;
use tokio_util::codec::Decoder;

const CHECKSUMS: [Checksum; 4] = [
    Checksum::None,
    Checksum::Xor,
    Checksum::Sum8,
    Checksum::Crc16,
];

fn profile(tij: bool, checksum: Checksum, max_frame: usize) -> FramedProfile {
    let (message, complete) = if tij {
        ("MSG{id:05};{code}", "DONE{id:05}")
    } else {
        ("P{id:04}|{code}", "D{id:04}")
    };
    FramedProfile {
        start: 0x02,
        end: 0x03,
        checksum,
        message: message.into(),
        complete: complete.into(),
        ack: 0x06,
        nak: 0x15,
        ack_timeout_ms: 500,
        print_timeout_ms: None,
        buffer_depth: 4,
        max_frame,
        fnc1: None,
        fnc1_escape: None,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    match sel % 3 {
        0 | 1 => frames(sel, rest),
        _ => templates(sel, rest),
    }
});

fn frames(sel: u8, wire: &[u8]) {
    let checksum = CHECKSUMS[usize::from((sel >> 2) & 3)];
    // Small frames sometimes, to exercise the over-long / resync path.
    let max_frame = if sel & 0x10 != 0 {
        8 + usize::from(sel >> 5)
    } else {
        1024
    };
    let compiled = profile(sel % 3 == 1, checksum, max_frame)
        .compile()
        .expect("the fixed fuzz profiles are valid");
    let framing = compiled.framing;

    // Byte at a time.
    let mut d = FrameDecoder::new(framing);
    let mut out = Vec::new();
    d.feed_all(wire, &mut out);
    assert!(d.garbage() <= wire.len() as u64, "more garbage than input");
    for item in &out {
        if let Ok(Token::Frame(payload)) = item {
            assert!(payload.len() <= framing.max_frame, "frame beyond max_frame");
            assert!(!payload.contains(&framing.start) && !payload.contains(&framing.end));
            // What the driver does with a frame: match it as a report.
            if let Some(m) = compiled.complete.matches(payload) {
                assert!(m.code.is_none(), "complete template has no {{code}}");
            }
            // A frame the message template accepts is exactly what
            // rendering its id and code gives back (both fixed profiles have
            // a fixed-width id and {code} last, so nothing is ambiguous).
            if let Some(m) = compiled.message.matches(payload) {
                let id = m.id.expect("the message template has an id");
                let code = m.code.expect("the message template has a {code}");
                if let Ok(code) = std::str::from_utf8(code) {
                    assert_eq!(
                        compiled.message.render(id, code).as_bytes(),
                        payload.as_slice(),
                        "matches -> render round trip"
                    );
                }
            }
        }
        let _ = item.as_ref().map_err(ToString::to_string);
    }

    // The tokio codec path sees the same tokens and consumes everything.
    let (codec_out, left) = decode_all(FrameDecoder::new(framing), wire);
    assert_eq!(left, 0, "codec left bytes unconsumed");
    assert_eq!(codec_out, out, "codec and feed_all disagree");

    // Fed again after reset, the decoder behaves like a fresh one.
    d.reset();
    let mut again = Vec::new();
    let garbage_before = d.garbage();
    d.feed_all(wire, &mut again);
    assert_eq!(again, out);
    assert_eq!(d.garbage() - garbage_before, {
        let mut fresh = FrameDecoder::new(framing);
        fresh.feed_all(wire, &mut Vec::new());
        fresh.garbage()
    });

    // Round trip: payloads cut from the input (at 0xFF) are framed and decoded back.
    round_trip(&framing, wire);

    // render -> matches: any code, any id, read back as sent (the id modulo
    // its width).
    let id = wire
        .iter()
        .take(8)
        .fold(0u64, |a, &b| (a << 8) | u64::from(b));
    let code = String::from_utf8_lossy(wire);
    let rendered = compiled.message.render(id, &code);
    let m = compiled
        .message
        .matches(rendered.as_bytes())
        .expect("a rendered message matches its template");
    assert_eq!(m.id, Some(compiled.message.wire_id(id)));
    assert_eq!(m.code, Some(code.as_bytes()));
}

fn round_trip(framing: &Framing, input: &[u8]) {
    let mut wire = Vec::new();
    let mut want: Vec<Decoded> = Vec::new();
    for payload in input.split(|&b| b == 0xFF) {
        match encode_frame(framing, payload, &mut wire) {
            Ok(()) => want.push(Ok(Token::Frame(payload.to_vec()))),
            Err(_) => {
                // Refused: must contain a control byte or be too long.
                assert!(
                    payload.contains(&framing.start)
                        || payload.contains(&framing.end)
                        || payload.len() + framing.checksum.width() > framing.max_frame
                );
            }
        }
    }
    let mut d = FrameDecoder::new(*framing);
    let mut got = Vec::new();
    d.feed_all(&wire, &mut got);
    assert_eq!(got, want, "encode -> decode round trip");
    assert_eq!(d.garbage(), 0);
}

fn templates(sel: u8, data: &[u8]) {
    let (src, payload) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let src = String::from_utf8_lossy(src);
    let Ok(t) = Template::parse(&src) else {
        return;
    };
    assert_eq!(t.source(), src);
    // What matches accepts, rendering gives back byte for byte, where the id
    // (if any) has a fixed width: a free-width id may be read from leading
    // zeros that rendering does not write.
    if let Some(m) = t.matches(payload) {
        assert_eq!(m.id.is_some(), t.has_id());
        assert_eq!(m.code.is_some(), t.has_code());
        if let Some(w) = t.id_width() {
            assert!(m.id.is_some_and(|id| id < 10u64.saturating_pow(w as u32) || w >= 19));
        }
        let code = std::str::from_utf8(m.code.unwrap_or_default());
        if let (Ok(code), false) = (code, t.has_id() && t.id_width().is_none()) {
            assert_eq!(
                t.render(m.id.unwrap_or(0), code).as_bytes(),
                payload,
                "matches -> render round trip"
            );
        }
    }
    if let Some(w) = t.id_width() {
        assert!((1..=19).contains(&w));
    }

    // render -> matches. The id comes from the payload's first 8 bytes.
    let id = payload
        .iter()
        .take(8)
        .fold(0u64, |a, &b| (a << 8) | u64::from(b))
        >> (sel >> 3);
    let code = String::from_utf8_lossy(payload.get(8..).unwrap_or_default());
    let rendered = t.render(id, &code);
    let m = t.matches(rendered.as_bytes());
    // A free-width {id} followed by a literal starting with a digit cannot be
    // read back (greedy digits); neither can a {code} containing the literal
    // that follows it. Only assert where the template is unambiguous.
    let free_id = t.has_id() && t.id_width().is_none();
    if !free_id && !t.has_code() {
        let m = m.expect("render -> matches round trip (no {code}, fixed-width id)");
        assert_eq!(m.id, t.has_id().then(|| t.wire_id(id)));
        assert_eq!(m.code, None);
    }
    if let Some(m) = m {
        if t.has_id() && !free_id {
            assert_eq!(m.id, Some(t.wire_id(id)));
        }
    }
}

/// Drives `FrameDecoder` through its `tokio_util::codec::Decoder` impl, as
/// the driver's `FramedRead` does.
fn decode_all(mut d: FrameDecoder, wire: &[u8]) -> (Vec<Decoded>, usize) {
    let mut out = Vec::new();
    let mut buf = BytesMut::from(wire);
    while let Ok(Some(item)) = Decoder::decode(&mut d, &mut buf) {
        out.push(item);
    }
    (out, buf.len())
}
