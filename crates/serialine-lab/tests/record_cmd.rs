//! `serialine-lab record` between a printer driver and a (simulated) printer:
//! the tap passes every byte unchanged, its recording equals the device's
//! own view of the conversation, and the recording played back in the
//! device's place gives the driver the same replies.

use serialine_devices::printer::{self, FramedProfile};
use serialine_devices::transport::{Link, TcpSettings, TransportSettings};
use serialine_devices::{PrintRequest, PrinterEvent, PrinterHandle};
use serialine_sim::printer::{PrinterKnobs, PrinterSim};
use serialine_sim::recording::{Direction, Recorder, Recording};
use serialine_sim::replay::{replay, ReplayDevice};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio::net::TcpListener;

const PROFILE: &str = include_str!("../../../config/printer-cij-stx.toml");
const UNITS: u64 = 40;
/// Bound on every wait for the driver's events.
const BOUND: Duration = Duration::from_secs(20);

fn profile() -> FramedProfile {
    toml::from_str(PROFILE).expect("shipped profile")
}

/// Sends UNITS codes and returns the driver's events until every unit is
/// refused or printed.
async fn print_units(mut h: PrinterHandle) -> Vec<PrinterEvent> {
    let requests = h.requests.clone();
    tokio::spawn(async move {
        for unit in 1..=UNITS {
            let code = format!("010950600013435221TAP{unit:05}");
            if requests.send(PrintRequest { unit, code }).await.is_err() {
                return;
            }
        }
    });
    let mut events = Vec::new();
    let mut done = 0;
    while done < UNITS {
        let ev = tokio::time::timeout(BOUND, h.events.recv())
            .await
            .unwrap_or_else(|_| panic!("no driver event within {BOUND:?}; so far {events:?}"))
            .expect("driver running");
        match &ev {
            PrinterEvent::Ready => continue,
            PrinterEvent::Printed(_)
            | PrinterEvent::Marked { .. }
            | PrinterEvent::Refused { .. } => done += 1,
            PrinterEvent::Fault { reason, .. } => panic!("printer fault: {reason}"),
            PrinterEvent::Accepted(_) => {}
        }
        events.push(ev);
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tap_records_the_conversation_and_it_replays() {
    let dir = tempfile::tempdir().expect("temp dir");
    let profile = profile();
    // A printer that refuses some codes, so the replies carry information.
    let knobs = PrinterKnobs {
        nak_rate: 0.2,
        seed: 3,
        ..PrinterKnobs::default()
    };
    let sim_rec = Recorder::create(dir.path().join("device.rec")).expect("recorder");
    let (_sim, device_addr) =
        PrinterSim::listen("127.0.0.1:0", &profile, knobs, None, Some(sim_rec))
            .await
            .expect("printer simulator");

    let tap_path = dir.path().join("tap.rec");
    let mut tap = Command::new(env!("CARGO_BIN_EXE_serialine-lab"))
        .arg("record")
        .arg("--device")
        .arg(format!("tcp:{device_addr}"))
        .args(["--listen", "tcp:127.0.0.1:0", "--out"])
        .arg(&tap_path)
        .stderr(Stdio::piped())
        .spawn()
        .expect("serialine-lab record starts");
    let mut line = String::new();
    let mut stderr = BufReader::new(tap.stderr.take().expect("stderr"));
    stderr.read_line(&mut line).expect("announcement");
    // Keep reading: the tap reports on stderr and must not hit a closed pipe.
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    // "serialine-lab record: listening on 127.0.0.1:P for the daemon; device ..."
    let tap_addr = line
        .split(' ')
        .find(|w| w.starts_with("127.0.0.1:"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();

    let link = Link::from(TransportSettings::Tcp(TcpSettings::new(tap_addr)));
    let through_tap = print_units(printer::spawn("inkjet", link, &profile).expect("driver")).await;
    let _ = tap.kill();
    let _ = tap.wait();
    assert!(
        through_tap
            .iter()
            .any(|e| matches!(e, PrinterEvent::Refused { .. })),
        "the printer should have refused some codes: {through_tap:?}"
    );

    // The tap saw exactly what the device saw, each way.
    let recorded = Recording::load(&tap_path).expect("tap recording");
    let device = Recording::load(dir.path().join("device.rec")).expect("device recording");
    for dir in [Direction::Rx, Direction::Tx] {
        assert!(!recorded.bytes(dir).is_empty(), "{dir:?} empty");
        assert_eq!(recorded.bytes(dir), device.bytes(dir), "{dir:?} differs");
    }

    // Played back in the printer's place, the recording gets the same codes
    // from the driver and gives it the same answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("listen");
    let addr = listener.local_addr().expect("addr").to_string();
    let link = Link::from(TransportSettings::Tcp(TcpSettings::new(addr)));
    let driver = printer::spawn("inkjet", link, &profile).expect("driver");
    let (stream, _) = tokio::time::timeout(BOUND, listener.accept())
        .await
        .expect("driver connects")
        .expect("accept");
    let replayer = tokio::spawn(async move {
        let devices = vec![ReplayDevice::new("printer", recorded)];
        replay(devices, vec![stream], BOUND).await
    });
    let replayed = print_units(driver).await;
    let (result, _streams) = replayer.await.expect("replay task");
    let report = result.expect("the driver sent exactly the recorded bytes");
    assert_eq!(
        report.devices[0].bytes_matched,
        device.bytes(Direction::Rx).len() as u64
    );
    assert_eq!(replayed, through_tap);
}
