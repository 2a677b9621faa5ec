//! How much of a 115,200-baud line the framed-ASCII printer driver keeps
//! busy, against the printer simulator over a real pty.
//!
//! A pty has no baud rate, so the simulator paces its reading to the wire:
//! 11,520 bytes/s for 8N1 (10 bits per byte), acting on each frame only once
//! its last byte would have arrived, and printing in zero time. The driver
//! can then reach the wire rate only by pipelining (up to `buffer_depth`
//! messages in the printer), never by stop-and-wait. The figure is the
//! driver→printer payload bytes over the time from the first request to the
//! last print report. The simulator paces its replies (ACK, print reports)
//! to the same rate, so a stop-and-wait driver pays the round trip a real
//! line would; a stop-and-wait run is printed first for comparison (it also
//! pays tokio's 1 ms timer resolution on every round trip, so it
//! overstates the penalty a little; the pipelined run hides that behind the
//! queued frames).

use serialine_devices::printer::{self, encode_frame, FramedProfile};
use serialine_devices::transport::{Link, SerialSettings};
use serialine_devices::{PrintRequest, PrinterEvent};
use serialine_sim::printer::{PrinterKnobs, PrinterSim};
use std::time::{Duration, Instant};
use tokio_serial::SerialStream;

const CODES: u64 = 2_000;

/// A ~44-byte GS1 element string (raw AIs, GS before the serial).
fn code(unit: u64) -> String {
    format!("01095060001343521727123110LOT7\u{1d}21S{unit:010}")
}

fn main() {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start tokio: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(run()) {
        eprintln!("wire_rate failed: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../config/printer-cij-stx.toml"
    );
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let profile: FramedProfile = toml::from_str(&text).map_err(|e| format!("{path}: {e}"))?;
    // For comparison: the same printer with a one-code buffer, which forces
    // stop-and-wait (send, wait for the print report, send the next).
    let stop_and_wait = FramedProfile {
        buffer_depth: 1,
        ..profile.clone()
    };
    println!("stop-and-wait (buffer_depth 1), for comparison:");
    measure(&stop_and_wait, CODES / 4).await?;
    println!("pipelined (config/printer-cij-stx.toml):");
    measure(&profile, CODES).await
}

async fn measure(profile: &FramedProfile, codes: u64) -> Result<(), String> {
    let profile = profile.clone();
    let line_rate = SerialSettings::new("(pty)").bytes_per_second();

    let (master, slave) = SerialStream::pair().map_err(|e| format!("pty pair: {e}"))?;
    let knobs = PrinterKnobs {
        wire_bytes_per_sec: Some(line_rate),
        ..PrinterKnobs::default()
    };
    let sim = PrinterSim::spawn(master, &profile, knobs, None, None).map_err(|e| e.to_string())?;
    let mut h = printer::spawn("bench", Link::open(slave), &profile).map_err(|e| e.to_string())?;
    match h.events.recv().await {
        Some(PrinterEvent::Ready) => {}
        other => return Err(format!("expected Ready, got {other:?}")),
    }

    // Bytes the driver will put on the wire, computed independently.
    let compiled = profile.compile().map_err(|e| e.to_string())?;
    let mut wire_bytes = 0usize;
    let mut frame = Vec::new();
    for u in 1..=codes {
        frame.clear();
        encode_frame(
            &compiled.framing,
            compiled.message.render(u, &code(u)).as_bytes(),
            &mut frame,
        )
        .map_err(|e| e.to_string())?;
        wire_bytes += frame.len();
    }

    let requests = h.requests.clone();
    let start = Instant::now();
    let feeder = tokio::spawn(async move {
        for u in 1..=codes {
            if requests
                .send(PrintRequest {
                    unit: u,
                    code: code(u),
                })
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let mut printed = 0u64;
    while printed < codes {
        match tokio::time::timeout(Duration::from_secs(10), h.events.recv()).await {
            Ok(Some(PrinterEvent::Printed(_))) => printed += 1,
            Ok(Some(PrinterEvent::Accepted(_))) => {}
            Ok(other) => {
                return Err(format!(
                    "unexpected event after {printed} prints: {other:?}"
                ))
            }
            Err(_) => return Err(format!("stalled after {printed} prints")),
        }
    }
    let elapsed = start.elapsed();
    let _ = feeder.await;
    let stats = sim.stats();
    if stats.rx_bytes != wire_bytes as u64 {
        return Err(format!(
            "sim received {} bytes, expected {wire_bytes}",
            stats.rx_bytes
        ));
    }
    let rate = wire_bytes as f64 / elapsed.as_secs_f64();
    println!(
        "  {codes} codes, {wire_bytes} bytes ({:.1} bytes/frame), buffer_depth {}, {:.2} s",
        wire_bytes as f64 / codes as f64,
        profile.buffer_depth,
        elapsed.as_secs_f64()
    );
    println!(
        "  wire rate: {rate:.0} bytes/s = {:.1}% of {}",
        100.0 * rate / f64::from(line_rate),
        fmt_thousands(line_rate)
    );
    if stats.overflows > 0 {
        return Err(format!(
            "driver overfilled the printer buffer {} times",
            stats.overflows
        ));
    }
    Ok(())
}

fn fmt_thousands(n: u32) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
