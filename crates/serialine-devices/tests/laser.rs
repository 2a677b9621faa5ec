//! Laser driver against the Modbus TCP simulator over real sockets on
//! 127.0.0.1. Synchronisation is by events only (5 s timeouts).

use std::time::Duration;

use serialine_devices::laser::{self, LaserRegisterMap, LaserSettings, Trigger};
use serialine_devices::{PrintRequest, PrinterEvent, PrinterHandle, UnitId};
use serialine_sim::laser::{LaserSim, LaserSimConfig, LaserSimMap, RandomExceptions, SimTrigger};
use serialine_sim::unserved::Unserved;
use tokio::sync::mpsc;
use tokio::time::timeout;

const MAP_TOML: &str = include_str!("../../../config/laser-modbus.toml");
mod common;
use common::{next, Unanswered, WAIT};

fn maps() -> (LaserRegisterMap, LaserSimMap) {
    let d: LaserRegisterMap = toml::from_str(MAP_TOML).expect("driver map parses");
    let s: LaserSimMap = toml::from_str(MAP_TOML).expect("sim map parses");
    (d, s)
}

fn register_trigger_maps() -> (LaserRegisterMap, LaserSimMap) {
    let (mut d, mut s) = maps();
    d.trigger = Trigger::Register {
        address: 30,
        value: 1,
    };
    s.trigger = SimTrigger::Register {
        address: 30,
        value: 1,
    };
    d.length_register = None;
    s.length_register = None;
    (d, s)
}

struct Rig {
    sim: LaserSim,
    marks: mpsc::UnboundedReceiver<(u64, String)>,
    h: PrinterHandle,
}

async fn rig_with(driver_map: LaserRegisterMap, cfg: LaserSimConfig) -> Rig {
    let (tx, marks) = mpsc::unbounded_channel();
    let sim = LaserSim::start(cfg, tx).await.expect("sim starts");
    let mut settings = LaserSettings::tcp(sim.addr());
    settings.idle_poll = Duration::from_millis(30);
    settings.reconnect_initial = Duration::from_millis(10);
    settings.reconnect_max = Duration::from_millis(200);
    settings.mark_timeout = Duration::from_secs(3);
    let h = laser::spawn("laser-1", settings, driver_map).expect("valid map");
    Rig { sim, marks, h }
}

async fn rig(tune: impl FnOnce(&mut LaserSimConfig)) -> Rig {
    let (d, s) = maps();
    let mut cfg = LaserSimConfig::new(s);
    tune(&mut cfg);
    rig_with(d, cfg).await
}

/// The unit marked, reported with its mark index; returns the index.
async fn expect_marked(h: &mut PrinterHandle, want: UnitId) -> u64 {
    match next(h).await {
        PrinterEvent::Marked { unit, index } if unit == want => index,
        got => panic!("expected unit {want} marked, got {got:?} from {}", h.name),
    }
}

async fn expect(h: &mut PrinterHandle, want: PrinterEvent) {
    let got = next(h).await;
    assert_eq!(got, want, "unexpected event from {}", h.name);
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

async fn next_mark(rx: &mut mpsc::UnboundedReceiver<(u64, String)>) -> (u64, String) {
    match timeout(WAIT, rx.recv()).await {
        Ok(Some(m)) => m,
        _ => panic!("no mark forwarded by the sim within {WAIT:?}"),
    }
}

fn code(i: u64) -> String {
    format!("0109506000134352172712311\u{1d}21SN{i:05}")
}

async fn mark_ok(r: &mut Rig, unit: UnitId) {
    send(&r.h, unit, &code(unit)).await;
    expect(&mut r.h, PrinterEvent::Accepted(unit)).await;
    expect_marked(&mut r.h, unit).await;
}

#[tokio::test]
async fn marks_in_order_across_counter_wrap() {
    let mut r = rig(|c| {
        c.mark_time = Duration::from_millis(5);
        c.counter_start = 65534;
    })
    .await;
    assert_eq!(r.h.capacity, 1);
    expect(&mut r.h, PrinterEvent::Ready).await;
    for unit in 1..=5 {
        mark_ok(&mut r, unit).await;
    }
    for unit in 1..=5u64 {
        assert_eq!(next_mark(&mut r.marks).await, (unit, code(unit)));
    }
    let want: Vec<String> = (1..=5).map(code).collect();
    assert_eq!(r.sim.triggered_codes(), want);
}

#[tokio::test]
async fn register_trigger_with_instant_marks() {
    let (d, s) = register_trigger_maps();
    let mut r = rig_with(d, LaserSimConfig::new(s)).await;
    expect(&mut r.h, PrinterEvent::Ready).await;
    // A longer code first: the shorter one after it must not keep its tail.
    send(&r.h, 1, "ABCDEFGHIJ").await;
    expect(&mut r.h, PrinterEvent::Accepted(1)).await;
    let first = expect_marked(&mut r.h, 1).await;
    send(&r.h, 2, "XYZ").await;
    expect(&mut r.h, PrinterEvent::Accepted(2)).await;
    // The mark index is the marker's counter after each mark: what a camera
    // triggered by the marker numbers its results with.
    let second = expect_marked(&mut r.h, 2).await;
    assert_eq!((first, second), (1, 2));
    assert_eq!(r.sim.triggered_codes(), ["ABCDEFGHIJ", "XYZ"]);
}

#[tokio::test]
async fn waits_while_busy() {
    let mut r = rig(|_| {}).await;
    r.sim.set_busy(true);
    expect(&mut r.h, PrinterEvent::Ready).await;
    send(&r.h, 7, &code(7)).await;
    // Let the driver poll the busy marker several times.
    let seen = r.sim.requests_served();
    timeout(WAIT, r.sim.wait_requests(seen + 6))
        .await
        .expect("driver keeps polling while busy");
    assert!(r.sim.triggered_codes().is_empty(), "triggered while busy");
    assert!(r.h.events.try_recv().is_err(), "no event while busy");
    r.sim.set_busy(false);
    expect(&mut r.h, PrinterEvent::Accepted(7)).await;
    expect_marked(&mut r.h, 7).await;
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
async fn error_state_faults_then_ready_after_clear() {
    let mut r = rig(|c| c.error_after_marks = Some(1)).await;
    expect(&mut r.h, PrinterEvent::Ready).await;
    mark_ok(&mut r, 1).await;
    // The idle poll notices the error raised after mark 1.
    assert_fault(next(&mut r.h).await, "error", &[]);
    send(&r.h, 2, &code(2)).await;
    r.sim.clear_error();
    expect(&mut r.h, PrinterEvent::Ready).await;
    expect(&mut r.h, PrinterEvent::Accepted(2)).await;
    expect_marked(&mut r.h, 2).await;
    assert_eq!(r.sim.triggered_codes(), [code(1), code(2)]);
}

#[tokio::test]
async fn error_while_marking_reports_unit_unknown_and_never_resends() {
    let mut r = rig(|c| c.mark_time = Duration::from_millis(800)).await;
    expect(&mut r.h, PrinterEvent::Ready).await;
    send(&r.h, 1, &code(1)).await;
    expect(&mut r.h, PrinterEvent::Accepted(1)).await;
    r.sim.set_error(true);
    assert_fault(next(&mut r.h).await, "error while marking", &[1]);
    r.sim.clear_error();
    expect(&mut r.h, PrinterEvent::Ready).await;
    // Mark 1 is still running: unit 2 waits for it and is not credited
    // with mark 1's counter step.
    mark_ok(&mut r, 2).await;
    assert_eq!(next_mark(&mut r.marks).await, (1, code(1)));
    assert_eq!(next_mark(&mut r.marks).await, (2, code(2)));
    assert_eq!(r.sim.triggered_codes(), [code(1), code(2)]);
}

#[tokio::test]
async fn interlock_open_faults_until_closed() {
    let mut r = rig(|c| c.interlock_open_at_marks = Some(2)).await;
    expect(&mut r.h, PrinterEvent::Ready).await;
    mark_ok(&mut r, 1).await;
    mark_ok(&mut r, 2).await;
    assert_fault(next(&mut r.h).await, "interlock open", &[]);
    r.sim.close_interlock();
    expect(&mut r.h, PrinterEvent::Ready).await;
    mark_ok(&mut r, 3).await;
}

#[tokio::test]
async fn modbus_exception_refuses_the_unit() {
    // Writes: unit 1 = code, length, coil reset (state unknown after
    // connect), set, release; then unit 2's code write is the 6th and fails.
    let mut r = rig(|c| c.exception_every_nth_write = Some(6)).await;
    expect(&mut r.h, PrinterEvent::Ready).await;
    mark_ok(&mut r, 1).await;
    send(&r.h, 2, &code(2)).await;
    match next(&mut r.h).await {
        PrinterEvent::Refused { unit: 2, reason } => {
            assert!(reason.contains("write code"), "{reason}");
            assert!(reason.contains("Modbus exception"), "{reason}");
            assert!(reason.contains("register/coil 100"), "{reason}");
        }
        other => panic!("expected Refused for unit 2, got {other:?}"),
    }
    mark_ok(&mut r, 3).await;
    assert_eq!(r.sim.triggered_codes(), [code(1), code(3)]);
}

#[tokio::test]
async fn random_exceptions_leave_every_unit_in_one_outcome() {
    let mut r = rig(|c| {
        c.random_exceptions = Some(RandomExceptions {
            one_in: 3,
            seed: 0x5eed,
        })
    })
    .await;
    expect(&mut r.h, PrinterEvent::Ready).await;
    let mut printed = Vec::new();
    let mut refused = Vec::new();
    for unit in 1..=20 {
        send(&r.h, unit, &code(unit)).await;
        loop {
            match next(&mut r.h).await {
                PrinterEvent::Accepted(u) => assert_eq!(u, unit),
                PrinterEvent::Marked { unit: u, .. } => {
                    assert_eq!(u, unit);
                    printed.push(code(u));
                    break;
                }
                PrinterEvent::Refused { unit: u, .. } => {
                    assert_eq!(u, unit);
                    refused.push(u);
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert!(!refused.is_empty(), "seed should inject some exceptions");
    assert!(!printed.is_empty());
    assert_eq!(r.sim.triggered_codes(), printed);
}

#[tokio::test]
async fn disconnect_reconnects_without_resending() {
    let dir = tempfile::tempdir().expect("tempdir");
    let record = dir.path().join("laser.jsonl");
    let path = record.clone();
    let mut r = rig(move |c| {
        c.mark_time = Duration::from_millis(30);
        c.drop_connection_after_marks = Some(2);
        c.record_path = Some(path);
    })
    .await;
    expect(&mut r.h, PrinterEvent::Ready).await;
    mark_ok(&mut r, 1).await;
    send(&r.h, 2, &code(2)).await;
    expect(&mut r.h, PrinterEvent::Accepted(2)).await;
    // The link drops as mark 2 completes: its fate is unknown to the driver.
    match next(&mut r.h).await {
        PrinterEvent::Fault { unknown, .. } => assert_eq!(unknown, [2]),
        other => panic!("expected Fault after the drop, got {other:?}"),
    }
    expect(&mut r.h, PrinterEvent::Ready).await;
    mark_ok(&mut r, 3).await;

    assert_eq!(r.sim.connections(), 2);
    assert_eq!(r.sim.triggered_codes(), [code(1), code(2), code(3)]);
    // Each code went to the marker's registers exactly once.
    let code_writes = r
        .sim
        .records()
        .iter()
        .filter(|x| x.request.starts_with("WriteMultipleRegisters(100,"))
        .count();
    assert_eq!(code_writes, 3);
    let text = std::fs::read_to_string(&record).expect("record file");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), r.sim.records().len());
    assert!(lines.iter().all(|l| l["t_us"].is_u64()));
}

#[tokio::test]
async fn unfit_codes_are_refused_without_touching_the_marker() {
    let mut r = rig(|_| {}).await;
    expect(&mut r.h, PrinterEvent::Ready).await;
    send(&r.h, 1, &"X".repeat(65)).await;
    match next(&mut r.h).await {
        PrinterEvent::Refused { unit: 1, reason } => assert!(reason.contains("65 characters")),
        other => panic!("expected Refused, got {other:?}"),
    }
    send(&r.h, 2, "naïve").await;
    assert!(matches!(
        next(&mut r.h).await,
        PrinterEvent::Refused { unit: 2, .. }
    ));
    assert!(r.sim.triggered_codes().is_empty());
}

#[tokio::test]
async fn no_marker_listening_is_a_fault() {
    // Bind and drop to get a local port nobody listens on.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("local port");
    let (d, _) = maps();
    let mut settings = LaserSettings::tcp(addr);
    settings.reconnect_initial = Duration::from_millis(10);
    let mut h = laser::spawn("laser-x", settings, d).expect("valid map");
    assert_fault(next(&mut h).await, "cannot connect", &[]);
}

/// A marker that accepts the TCP connection and then drops it (`Drop`) or
/// never answers (`Silent`) for `period` from the first connection: the
/// driver counts the link healthy only once a status read is answered, so
/// it backs off instead of reconnecting at the initial delay all along.
/// Then the marker answers, the driver is Ready and marks.
async fn accept_without_answer(how: Unserved, request_timeout: Duration) {
    let u = Unanswered::new(how, request_timeout);
    let (d, s) = maps();
    let mut cfg = LaserSimConfig::new(s);
    cfg.unserved = Some(u.unserved());
    let (tx, marks) = mpsc::unbounded_channel();
    let sim = LaserSim::start(cfg, tx).await.expect("sim starts");
    let mut settings = LaserSettings::tcp(sim.addr());
    settings.request_timeout = u.request_timeout;
    settings.reconnect_initial = u.initial;
    settings.reconnect_max = u.cap;
    let h = laser::spawn("laser-1", settings, d).expect("valid map");
    let mut r = Rig { sim, marks, h };

    // One Fault per connection lost before the marker answered, then Ready.
    let faults = Unanswered::faults_until_ready(&mut r.h).await;
    u.assert_backed_off(r.sim.unserved_connections(), faults, r.sim.connections());
    mark_ok(&mut r, 1).await;
    assert_eq!(next_mark(&mut r.marks).await, (1, code(1)));
}

#[tokio::test]
async fn a_marker_that_accepts_and_drops_is_retried_with_backoff() {
    accept_without_answer(Unserved::Drop, Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_marker_that_accepts_and_stays_silent_is_retried_with_backoff() {
    accept_without_answer(Unserved::Silent, Duration::from_millis(100)).await;
}

#[test]
fn example_config_loads_and_validates() {
    let (d, s) = maps();
    d.validate().expect("example map is valid");
    assert_eq!(d.code_start, 100);
    assert_eq!(d.trigger, Trigger::Coil { address: 0 });
    assert_eq!(s.code_start, d.code_start);
    assert_eq!(s.mark_counter_register, d.mark_counter_register);
    let bad = MAP_TOML.replace("busy_bit = 0", "busy_bit = 1");
    let bad: LaserRegisterMap = toml::from_str(&bad).expect("parses");
    assert!(bad.validate().is_err());
}
