//! ZPL label driver against the label printer simulator over TCP on
//! 127.0.0.1. Synchronisation is by events only (5 s timeouts).

use std::time::Duration;

use serialine_devices::label::{self, LabelSettings, LabelTemplate, Symbology, TextField};
use serialine_devices::{PrintRequest, PrinterEvent, PrinterHandle, UnitId};
use serialine_sim::label::{LabelSim, LabelSimConfig};
use serialine_sim::unserved::Unserved;
use tokio::sync::mpsc;
use tokio::time::timeout;

mod common;
use common::{next, Unanswered, WAIT};

fn dm_template() -> LabelTemplate {
    LabelTemplate {
        symbology: Symbology::DataMatrix,
        module_size: 6,
        x: 40,
        y: 30,
        gs1: true,
        text: Some(TextField {
            x: 40,
            y: 220,
            height: 24,
        }),
        poll_interval_ms: 10,
    }
}

struct Rig {
    sim: LabelSim,
    printed: mpsc::UnboundedReceiver<(u64, String)>,
    h: PrinterHandle,
}

async fn rig(cfg: LabelSimConfig, template: LabelTemplate) -> Rig {
    let (tx, printed) = mpsc::unbounded_channel();
    let sim = LabelSim::start(cfg, tx).await.expect("sim starts");
    let mut settings = LabelSettings::new(sim.addr());
    // Long idle poll: faults are found by the check before each label, which
    // keeps event order deterministic.
    settings.idle_poll = Duration::from_secs(30);
    settings.print_timeout = Duration::from_secs(3);
    let h = label::spawn_with("zebra-1", settings, template).expect("valid template");
    Rig { sim, printed, h }
}

async fn expect(h: &mut PrinterHandle, want: PrinterEvent) {
    assert_eq!(next(h).await, want, "unexpected event from {}", h.name);
}

async fn send(h: &PrinterHandle, unit: UnitId, code: &str) {
    h.requests
        .send(PrintRequest {
            unit,
            code: code.to_string(),
        })
        .await
        .expect("driver takes requests");
}

async fn next_printed(rx: &mut mpsc::UnboundedReceiver<(u64, String)>) -> (u64, String) {
    match timeout(WAIT, rx.recv()).await {
        Ok(Some(p)) => p,
        _ => panic!("no label printed by the sim within {WAIT:?}"),
    }
}

fn code(i: u64) -> String {
    // GS separator and an underscore exercise both escaping layers.
    format!("010950600013435210LOT_{i}\u{1d}21SN{i:05}")
}

async fn print_ok(r: &mut Rig, unit: UnitId, code: &str) {
    send(&r.h, unit, code).await;
    expect(&mut r.h, PrinterEvent::Accepted(unit)).await;
    expect(&mut r.h, PrinterEvent::Printed(unit)).await;
}

fn assert_fault(ev: PrinterEvent, needle: &str, want_unknown: &[UnitId]) {
    match ev {
        PrinterEvent::Fault { reason, unknown } => {
            assert!(
                reason.contains(needle),
                "fault reason {reason:?} lacks {needle:?}"
            );
            assert_eq!(unknown, want_unknown, "unknown units in fault {reason:?}");
        }
        other => panic!("expected a Fault mentioning {needle:?}, got {other:?}"),
    }
}

#[tokio::test]
async fn data_matrix_labels_print_in_order() {
    let cfg = LabelSimConfig {
        print_time: Duration::from_millis(20),
        ..LabelSimConfig::default()
    };
    let mut r = rig(cfg, dm_template()).await;
    assert_eq!(r.h.capacity, 1);
    expect(&mut r.h, PrinterEvent::Ready).await;
    for unit in 1..=3 {
        print_ok(&mut r, unit, &code(unit)).await;
    }
    for unit in 1..=3 {
        assert_eq!(next_printed(&mut r.printed).await, (unit, code(unit)));
    }
}

#[tokio::test]
async fn qr_label_round_trips_zpl_special_characters() {
    let mut t = dm_template();
    t.symbology = Symbology::Qr;
    t.gs1 = false;
    t.text = None;
    let mut r = rig(LabelSimConfig::default(), t).await;
    expect(&mut r.h, PrinterEvent::Ready).await;
    let url = "https://id.example/01/09506000134352/21/A^B~C_D";
    print_ok(&mut r, 1, url).await;
    assert_eq!(next_printed(&mut r.printed).await, (1, url.to_string()));
}

#[tokio::test]
async fn paper_out_faults_refuses_then_recovers() {
    let cfg = LabelSimConfig {
        paper_out_after: Some(2),
        ..LabelSimConfig::default()
    };
    let mut r = rig(cfg, dm_template()).await;
    expect(&mut r.h, PrinterEvent::Ready).await;
    print_ok(&mut r, 1, &code(1)).await;
    print_ok(&mut r, 2, &code(2)).await;
    send(&r.h, 3, &code(3)).await;
    assert_fault(next(&mut r.h).await, "paper out", &[]);
    match next(&mut r.h).await {
        PrinterEvent::Refused { unit: 3, reason } => assert!(reason.contains("paper out")),
        other => panic!("expected Refused for unit 3, got {other:?}"),
    }
    r.sim.load_paper();
    expect(&mut r.h, PrinterEvent::Ready).await;
    print_ok(&mut r, 4, &code(4)).await;
    assert_eq!(r.sim.formats_received(), [code(1), code(2), code(4)]);
}

#[tokio::test]
async fn head_open_while_printing_reports_unit_unknown() {
    let cfg = LabelSimConfig {
        print_time: Duration::from_millis(800),
        ..LabelSimConfig::default()
    };
    let mut r = rig(cfg, dm_template()).await;
    expect(&mut r.h, PrinterEvent::Ready).await;
    send(&r.h, 1, &code(1)).await;
    expect(&mut r.h, PrinterEvent::Accepted(1)).await;
    r.sim.set_head_open(true);
    assert_fault(next(&mut r.h).await, "print head open while printing", &[1]);
    r.sim.set_head_open(false);
    expect(&mut r.h, PrinterEvent::Ready).await;
    print_ok(&mut r, 2, &code(2)).await;
    // Label 1 was still in the printer and came out once; nothing resent.
    assert_eq!(next_printed(&mut r.printed).await, (1, code(1)));
    assert_eq!(next_printed(&mut r.printed).await, (2, code(2)));
    assert_eq!(r.sim.formats_received(), [code(1), code(2)]);
}

#[tokio::test]
async fn unprintable_code_is_refused_locally() {
    let mut r = rig(LabelSimConfig::default(), dm_template()).await;
    expect(&mut r.h, PrinterEvent::Ready).await;
    send(&r.h, 9, "café").await;
    assert!(matches!(
        next(&mut r.h).await,
        PrinterEvent::Refused { unit: 9, .. }
    ));
    assert!(r.sim.formats_received().is_empty());
}

/// A printer (or a port forwarder in front of it) that accepts the TCP
/// connection and then drops it or never answers `~HS`, for `period` from
/// the first connection: the link counts as healthy only once `~HS` is
/// answered, so the driver backs off instead of reconnecting at the initial
/// delay all along. Then the printer answers, the driver is Ready and prints.
async fn accept_without_answer(how: Unserved) {
    let u = Unanswered::new(how, Duration::from_millis(100));
    let cfg = LabelSimConfig {
        unserved: Some(u.unserved()),
        ..LabelSimConfig::default()
    };
    let (tx, mut printed) = mpsc::unbounded_channel();
    let sim = LabelSim::start(cfg, tx).await.expect("sim starts");
    let mut settings = LabelSettings::new(sim.addr());
    settings.request_timeout = u.request_timeout;
    settings.reconnect_initial = u.initial;
    settings.reconnect_max = u.cap;
    settings.idle_poll = Duration::from_secs(30);
    let mut h = label::spawn_with("zebra-1", settings, dm_template()).expect("valid template");

    // One Fault per connection lost before the printer answered, then Ready.
    let faults = Unanswered::faults_until_ready(&mut h).await;
    u.assert_backed_off(sim.unserved_connections(), faults, sim.connections());
    send(&h, 1, &code(1)).await;
    expect(&mut h, PrinterEvent::Accepted(1)).await;
    expect(&mut h, PrinterEvent::Printed(1)).await;
    assert_eq!(next_printed(&mut printed).await, (1, code(1)));
}

#[tokio::test]
async fn a_printer_that_accepts_and_drops_is_retried_with_backoff() {
    accept_without_answer(Unserved::Drop).await;
}

#[tokio::test]
async fn a_printer_that_accepts_and_stays_silent_is_retried_with_backoff() {
    accept_without_answer(Unserved::Silent).await;
}

#[test]
fn template_loads_from_toml() {
    let t: LabelTemplate = toml::from_str(
        r#"
        symbology = "data_matrix"
        module_size = 6
        x = 40
        y = 30
        gs1 = true
        text = { x = 40, y = 220, height = 24 }
        "#,
    )
    .expect("template parses");
    assert_eq!(t.poll_interval_ms, 50);
    t.validate().expect("valid");
}
