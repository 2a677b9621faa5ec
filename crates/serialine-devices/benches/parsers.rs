//! Device protocol parsers, in frames (or lines, or status replies) per
//! second: what the drivers can digest from a wire.
//!
//!     cargo bench -p serialine-devices --bench parsers

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serialine_devices::camera::{parse_line, CameraProfile};
use serialine_devices::label::parse_host_status;
use serialine_devices::laser::{counter_delta, decode_status, unpack_code, StatusBits};
use serialine_devices::printer::{encode_frame, FrameDecoder, FramedProfile};
use std::hint::black_box;

const CODE: &str = "01095060001343521727123110LOT-2611\u{1d}21Q7RTX2KM9A4P";

fn printer_frames(c: &mut Criterion) {
    let profile: FramedProfile =
        toml::from_str(include_str!("../../../config/printer-cij-stx.toml")).expect("profile");
    let framing = profile.compile().expect("profile").framing;
    let mut wire = Vec::new();
    for id in 0..1_000u32 {
        let payload = format!("P{:04}|{CODE}", id % 10_000);
        encode_frame(&framing, payload.as_bytes(), &mut wire).expect("frame");
        wire.push(0x06); // an ACK between frames, as on a busy line
    }
    let mut g = c.benchmark_group("parsers");
    g.throughput(Throughput::Elements(1_000));
    g.bench_function("framed_printer_1k_frames", |b| {
        b.iter(|| {
            let mut d = FrameDecoder::new(framing);
            let mut out = Vec::with_capacity(2_000);
            d.feed_all(black_box(&wire), &mut out);
            out.len()
        })
    });
    let cam = CameraProfile::default();
    let lines: Vec<Vec<u8>> = (0..1_000)
        .map(|i| format!("{i};{CODE};A").into_bytes())
        .collect();
    g.bench_function("camera_1k_lines", |b| {
        b.iter(|| {
            lines
                .iter()
                .filter(|l| parse_line(&cam, black_box(l)).is_ok())
                .count()
        })
    });
    let status = b"\x02030,0,0,1245,000,0,0,0,000,0,0,0\x03\r\n\x02001,0,0,0,1,2,4,0,00000000,1,000\x03\r\n\x021234,0\x03\r\n";
    g.bench_function("zpl_host_status_1k", |b| {
        b.iter(|| {
            (0..1_000)
                .filter(|_| parse_host_status(black_box(status)).is_ok())
                .count()
        })
    });
    let bits = StatusBits {
        register: 10,
        busy_bit: 0,
        error_bit: 1,
        interlock_open_bit: 2,
    };
    let words: Vec<u16> = CODE
        .as_bytes()
        .chunks(2)
        .map(|p| u16::from(p[0]) << 8 | u16::from(*p.get(1).unwrap_or(&0)))
        .collect();
    g.bench_function("laser_modbus_1k_polls", |b| {
        b.iter(|| {
            let mut n = 0u32;
            for i in 0..1_000u16 {
                let st = decode_status(black_box(i & 7), &bits);
                n += u32::from(counter_delta(i, i.wrapping_add(1)));
                black_box(st);
            }
            black_box(unpack_code(&words, Some(CODE.len())));
            n
        })
    });
    g.finish();
}

criterion_group!(benches, printer_frames);
criterion_main!(benches);
