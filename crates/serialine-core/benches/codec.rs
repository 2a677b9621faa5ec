//! Core throughput: opening sealed blocks (serials decrypted per second) and
//! rendering + parsing codes (codes per second), per template.
//!
//!     cargo bench -p serialine-core

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serialine_core::code::{self, CodeData};
use serialine_core::{Block, BlockKey, Expiry, Gtin, Lot, SerialGenerator, Template};
use std::hint::black_box;

fn block_open(c: &mut Criterion) {
    let gen = SerialGenerator::with_defaults([7; 32]);
    let serials: Vec<_> = (0..10_000u128)
        .map(|i| gen.serial_at(i).expect("serial"))
        .collect();
    let block = Block {
        block_id: 1,
        line_id: "line-1".into(),
        gtin: Gtin::parse("09506000134352").expect("gtin"),
        serials,
        issued_at: 0,
    };
    let key = BlockKey::derive(b"bench secret");
    let sealed = key.seal(&block, [1; 24]).expect("seal");
    let wire = sealed.to_bytes();
    let mut g = c.benchmark_group("block");
    g.throughput(Throughput::Elements(10_000));
    g.bench_function("open_10k_serials", |b| {
        b.iter(|| {
            let s = serialine_core::SealedBlock::from_bytes(black_box(&wire)).expect("wire");
            key.open(&s, "line-1").expect("open")
        })
    });
    g.bench_function("generate_10k_serials", |b| {
        b.iter(|| {
            for i in 0..10_000u128 {
                black_box(gen.serial_at(black_box(i)).expect("serial"));
            }
        })
    });
    g.finish();
}

fn codes(c: &mut Criterion) {
    let gen = SerialGenerator::with_defaults([9; 32]);
    let data: Vec<CodeData> = (0..1_000u128)
        .map(|i| CodeData {
            gtin: Gtin::parse("09506000134352").expect("gtin"),
            expiry: Some(Expiry::parse("271231").expect("expiry")),
            lot: Some(Lot::new("LOT-2611").expect("lot")),
            serial: gen.serial_at(i).expect("serial"),
        })
        .collect();
    let mut g = c.benchmark_group("code_render_parse");
    g.throughput(Throughput::Elements(data.len() as u64));
    for (name, t) in [
        ("gs1_element_string", Template::Gs1DataMatrix),
        (
            "digital_link",
            Template::DigitalLink {
                resolver: "id.example.com".into(),
            },
        ),
        ("plain_text", Template::PlainText),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                for d in &data {
                    let text = code::render(&t, black_box(d)).expect("render");
                    black_box(code::parse(&t, &text).expect("parse"));
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, block_open, codes);
criterion_main!(benches);
