//! The camera reader against the camera simulator (and raw bytes), over real
//! pseudo-terminal pairs and TCP on 127.0.0.1; plus the whole chain printer
//! driver → printer sim → camera sim → camera reader. No sleeps.

use serialine_core::Grade;
use serialine_devices::camera::{self, CameraProfile};
use serialine_devices::printer::{self, FramedProfile};
use serialine_devices::transport::{Link, TcpSettings, TransportSettings};
use serialine_devices::{
    CameraEvent, CameraHandle, CameraRead, PrintRequest, PrinterEvent, UnitId,
};
use serialine_sim::camera::{CameraKnobs, CameraSim, Verdict, GARBAGE_LINE};
use serialine_sim::printer::{PrinterKnobs, PrinterSim};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_serial::SerialStream;

const WAIT: Duration = Duration::from_secs(5);

fn code(unit: UnitId) -> String {
    format!("(01)09506000134352(17)271231(10)LOT7\u{1d}(21)S{unit:08}")
}

fn pty() -> (SerialStream, SerialStream) {
    let (master, slave) = SerialStream::pair().expect("opening a pseudo-terminal pair");
    (slave, master)
}

async fn next(h: &mut CameraHandle, what: &str) -> CameraEvent {
    match tokio::time::timeout(WAIT, h.events.recv()).await {
        Ok(Some(ev)) => ev,
        Ok(None) => panic!("camera reader stopped while waiting for {what}"),
        Err(_) => panic!("no camera event within {WAIT:?} while waiting for {what}"),
    }
}

async fn next_read(h: &mut CameraHandle, what: &str) -> CameraRead {
    match next(h, what).await {
        CameraEvent::Read(r) => r,
        other => panic!("expected a read ({what}), got {other:?}"),
    }
}

#[tokio::test]
async fn reports_match_what_the_simulated_camera_saw() {
    let profile = CameraProfile::default();
    let (drv, dev) = pty();
    let (tx, rx) = mpsc::unbounded_channel();
    let knobs = CameraKnobs {
        seed: 3,
        no_read_rate: 0.15,
        misread_rate: 0.15,
        foreign_rate: 0.1,
        duplicate_rate: 0.1,
        low_grade_rate: 0.15,
        ..CameraKnobs::default()
    };
    let sim = CameraSim::spawn(dev, &profile, knobs, rx, None).expect("camera sim");
    let mut h = camera::spawn("cam", Link::open(drv), &profile).expect("camera reader");
    assert_eq!(next(&mut h, "Ready").await, CameraEvent::Ready);
    let n = 60;
    for u in 1..=n {
        tx.send((u, code(u))).expect("sim alive");
    }
    let mut reads = Vec::new();
    for u in 1..=n {
        reads.push(next_read(&mut h, &format!("result for unit {u}")).await);
    }
    let log = sim.log();
    assert_eq!(log.len(), reads.len());
    let mut seen = std::collections::HashSet::new();
    for (r, rep) in reads.iter().zip(&log) {
        seen.insert(rep.verdict);
        assert_eq!(r.unit, Some(rep.unit));
        assert_eq!(r.content, rep.content, "{rep:?}");
        match rep.verdict {
            Verdict::NoRead => assert_eq!(r.content, None),
            Verdict::Good => {
                assert_eq!(r.content.as_deref(), Some(rep.printed.as_str()));
                assert_eq!(r.grade, Some(Grade::A));
            }
            Verdict::LowGrade => assert_eq!(r.grade, Some(Grade::D)),
            Verdict::Misread | Verdict::Foreign | Verdict::Duplicate => {
                assert_ne!(r.content.as_deref(), Some(rep.printed.as_str()), "{rep:?}");
            }
            // Extra result lines: their knobs are off here.
            Verdict::DoubleTrigger | Verdict::Refed | Verdict::OtherLine => {
                panic!("extra line with its knob off: {rep:?}")
            }
            Verdict::PlainSymbol => panic!("plain symbol with its knob off: {rep:?}"),
        }
    }
    assert!(
        seen.len() >= 5,
        "the knobs produced most verdicts: {seen:?}"
    );
    let gs = reads
        .iter()
        .filter_map(|r| r.content.as_deref())
        .any(|c| c.contains('\u{1d}'));
    assert!(gs, "GS separators survive the line reader");
}

#[tokio::test]
async fn malformed_lines_are_garbage_never_fatal() {
    let profile = CameraProfile {
        max_line: 64,
        ..CameraProfile::default()
    };
    let (drv, mut dev) = pty();
    let mut h = camera::spawn("cam", Link::open(drv), &profile).expect("camera reader");
    assert_eq!(next(&mut h, "Ready").await, CameraEvent::Ready);
    let mut wire = Vec::new();
    wire.extend_from_slice(b"1;(21)A\x1dB;A\n"); // LF only
    wire.extend_from_slice(b"x;ABC;A\r\n"); // bad trigger
    wire.extend_from_slice(b"2;ABC;E\r\n"); // bad grade
    wire.extend_from_slice(b"no separators\r\n");
    wire.extend_from_slice(b"3;\xff\xfe;A\r\n"); // not UTF-8
    wire.extend(std::iter::repeat_n(b'Q', 200)); // over-long
    wire.extend_from_slice(b"\r\n\r\n"); // and a blank keep-alive line
    wire.extend_from_slice(b"4;NOREAD;\r\n");
    wire.extend_from_slice(b"5;ABC;3.0\r\n");
    dev.write_all(&wire).await.expect("write");

    let r = next_read(&mut h, "read 1").await;
    assert_eq!(r.content.as_deref(), Some("(21)A\u{1d}B"));
    for want in [
        "not a decimal unit id",
        "neither A-F",
        "not found",
        "UTF-8",
        "longer than 64",
    ] {
        match next(&mut h, want).await {
            CameraEvent::Garbage { reason, .. } => assert!(reason.contains(want), "{reason}"),
            other => panic!("expected garbage ({want}), got {other:?}"),
        }
    }
    let r = next_read(&mut h, "no-read 4").await;
    assert_eq!((r.unit, r.content), (Some(4), None));
    let r = next_read(&mut h, "read 5").await;
    assert_eq!((r.unit, r.grade), (Some(5), Some(Grade::B)));
}

#[tokio::test]
async fn simulated_garbage_lines_interleave_with_reads() {
    let profile = CameraProfile::default();
    let (drv, dev) = pty();
    let (tx, rx) = mpsc::unbounded_channel();
    let knobs = CameraKnobs {
        garbage_rate: 1.0,
        ..CameraKnobs::default()
    };
    let _sim = CameraSim::spawn(dev, &profile, knobs, rx, None).expect("camera sim");
    let mut h = camera::spawn("cam", Link::open(drv), &profile).expect("camera reader");
    assert_eq!(next(&mut h, "Ready").await, CameraEvent::Ready);
    for u in 1..=3 {
        tx.send((u, code(u))).expect("sim alive");
        match next(&mut h, "garbage line").await {
            CameraEvent::Garbage { line, .. } => assert_eq!(line, GARBAGE_LINE),
            other => panic!("expected garbage, got {other:?}"),
        }
        let r = next_read(&mut h, "read after garbage").await;
        assert_eq!(r.content, Some(code(u)));
    }
}

#[tokio::test]
async fn tcp_drop_is_a_fault_then_reconnects() {
    let profile = CameraProfile::default();
    let (tx, rx) = mpsc::unbounded_channel();
    let knobs = CameraKnobs {
        disconnect_after: Some(2),
        ..CameraKnobs::default()
    };
    let (_sim, addr) = CameraSim::listen("127.0.0.1:0", &profile, knobs, rx, None)
        .await
        .expect("camera sim listens");
    let settings = TransportSettings::Tcp(TcpSettings::new(addr.to_string()));
    let mut h = camera::spawn("cam-tcp", settings, &profile).expect("camera reader");
    assert_eq!(next(&mut h, "Ready").await, CameraEvent::Ready);
    for u in 1..=4 {
        tx.send((u, code(u))).expect("sim alive");
    }
    for u in 1..=2 {
        assert_eq!(
            next_read(&mut h, "read before the drop").await.unit,
            Some(u)
        );
    }
    match next(&mut h, "Fault after the drop").await {
        CameraEvent::Fault { reason } => assert!(reason.contains("closed"), "{reason}"),
        other => panic!("expected Fault, got {other:?}"),
    }
    assert_eq!(next(&mut h, "Ready again").await, CameraEvent::Ready);
    for u in 3..=4 {
        assert_eq!(
            next_read(&mut h, "read after reconnect").await.unit,
            Some(u)
        );
    }
}

#[tokio::test]
async fn printer_to_camera_chain_over_ptys() {
    let printer_profile: FramedProfile = toml::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../config/printer-tij-crc.toml"
        ))
        .expect("TIJ profile file"),
    )
    .expect("TIJ profile parses");
    let camera_profile = CameraProfile {
        template: "<{trigger}> {content} [{grade}]".into(),
        ..CameraProfile::default()
    };
    let (p_drv, p_dev) = pty();
    let (c_drv, c_dev) = pty();
    let (on_product_tx, on_product_rx) = mpsc::unbounded_channel();
    let _psim = PrinterSim::spawn(
        p_dev,
        &printer_profile,
        PrinterKnobs::default(),
        Some(on_product_tx),
        None,
    )
    .expect("printer sim");
    let _csim = CameraSim::spawn(
        c_dev,
        &camera_profile,
        CameraKnobs::default(),
        on_product_rx,
        None,
    )
    .expect("camera sim");
    let mut p = printer::spawn("tij", Link::open(p_drv), &printer_profile).expect("printer driver");
    let mut c = camera::spawn("cam", Link::open(c_drv), &camera_profile).expect("camera reader");
    assert_eq!(next(&mut c, "camera Ready").await, CameraEvent::Ready);
    let ready = tokio::time::timeout(WAIT, p.events.recv())
        .await
        .expect("printer Ready");
    assert_eq!(ready, Some(PrinterEvent::Ready));
    for u in 1..=10 {
        p.requests
            .send(PrintRequest {
                unit: u,
                code: code(u),
            })
            .await
            .expect("printer driver alive");
        let r = next_read(&mut c, &format!("camera read of unit {u}")).await;
        assert_eq!(
            r,
            CameraRead {
                unit: Some(u),
                content: Some(code(u)),
                grade: Some(Grade::A)
            }
        );
    }
}
