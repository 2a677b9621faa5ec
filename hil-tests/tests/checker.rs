//! The checker itself: a hand-made run that breaks invariants 1, 4, 5 and 6
//! must be reported serial by serial, and the counters audit must pass.

use hil_tests::checker::{check, CheckInput, DeviceLog, Rule};
use hil_tests::scenario::{config_dir, Expect, StopWhen};
use serialine_core::code::{self, CodeData, Template};
use serialine_core::{Grade, Gtin, RejectReason, Serial, UnitState};
use serialine_devices::printer::{encode_frame, FramedProfile};
use serialine_sim::camera::{Reported, Verdict};
use serialine_sim::issuer::Issuer;
use serialine_sim::recording::{Direction, Recorder};
use serialine_sim::upstream::LineEvents;
use serialine_store::{event_id, Store, StoreOptions, Transition};

const LINE: &str = "line-1";
const SECRET: &[u8] = b"checker test line secret, 32 bytes";

fn code_of(serial: &Serial) -> String {
    let data = CodeData {
        gtin: Gtin::parse("09506000134352").unwrap(),
        expiry: None,
        lot: None,
        serial: serial.clone(),
    };
    code::render(&Template::Gs1DataMatrix, &data).unwrap()
}

#[tokio::test]
async fn broken_invariants_are_reported_by_serial() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = Issuer::new(b"checker test", 10);
    issuer.add_line(LINE, SECRET);
    let (store, _) =
        Store::open(StoreOptions::new(dir.path().join("ledger"), LINE, SECRET)).unwrap();
    store.add_block(&issuer.issue(LINE).unwrap()).await.unwrap();
    let s = store.reserve(3).unwrap();
    let sent: Vec<_> = s
        .iter()
        .map(|x| Transition::new(x.clone(), UnitState::Sent))
        .collect();
    for r in store.apply(&sent).await {
        r.unwrap();
    }
    let verdicts = [
        Transition::new(s[0].clone(), UnitState::Committed),
        Transition::new(s[1].clone(), UnitState::Rejected(RejectReason::NoRead)),
    ];
    for r in store.apply(&verdicts).await {
        r.unwrap();
    }
    // s[2] stays Sent: invariant 4.

    // The printer got s[0] twice (invariant 1) and s[1] once.
    let profile: FramedProfile = toml::from_str(
        &std::fs::read_to_string(config_dir().join("printer-cij-stx.toml")).unwrap(),
    )
    .unwrap();
    let compiled = profile.compile().unwrap();
    let rec_path = dir.path().join("printer.rec");
    let rec = Recorder::create(&rec_path).unwrap();
    for (id, serial) in [(1, &s[0]), (2, &s[1]), (3, &s[0])] {
        let mut out = Vec::new();
        encode_frame(
            &compiled.framing,
            compiled.message.render(id, &code_of(serial)).as_bytes(),
            &mut out,
        )
        .unwrap();
        rec.record(Direction::Rx, &out);
    }

    // The camera read s[0] fine, then showed it again on the next unit with
    // no alarm logged (invariant 6).
    let read = |unit, verdict| Reported {
        unit,
        printed: code_of(&s[0]),
        verdict,
        content: Some(code_of(&s[0])),
        symbology: None,
        grade: Grade::A,
    };
    let camera_log = vec![read(1, Verdict::Good), read(2, Verdict::Duplicate)];

    // Upstream holds s[0] committed, and s[1] as "committed" under a made-up
    // id instead of its rejection (invariant 5).
    let mut upstream = LineEvents::default();
    let hex = |b: [u8; 32]| hex::encode(b);
    upstream.events.insert(
        hex(event_id(LINE, &s[0], UnitState::Committed)),
        (s[0].to_string(), "committed".into()),
    );
    upstream
        .events
        .insert("ab".repeat(32), (s[1].to_string(), "committed".into()));

    let input = CheckInput {
        scenario: "hand-made".into(),
        seed: 42,
        line: LINE.into(),
        store: store.clone(),
        device: DeviceLog::Framed {
            recording: rec_path,
            profile,
        },
        camera_log,
        camera_kill_marks: Vec::new(),
        alarm_tolerance: 0,
        upstream,
        issued: issuer.issued(LINE),
        logs: vec![String::new()],
        mid_job: false,
        units: 3,
        expect: Expect::default(),
        stop_when: StopWhen::JobDone,
        earlier: Vec::new(),
        events: Default::default(),
        hierarchy: None,
    };
    let report = check(&input);
    let text: Vec<String> = report.violations.iter().map(|v| v.to_string()).collect();
    let has = |rule: Rule, serial: &Serial| {
        report
            .violations
            .iter()
            .any(|v| v.rule == rule && v.serial.as_deref() == Some(serial.as_str()))
    };
    assert!(has(Rule::Invariant(1), &s[0]), "{text:#?}");
    assert!(has(Rule::Invariant(4), &s[2]), "{text:#?}");
    assert!(has(Rule::Invariant(5), &s[1]), "{text:#?}");
    assert!(has(Rule::Invariant(6), &s[0]), "{text:#?}");
    assert!(
        !report.violations.iter().any(|v| v.rule == Rule::Counters),
        "{text:#?}"
    );
    assert!(
        text.iter()
            .all(|t| t.contains("scenario hand-made seed 42")),
        "{text:#?}"
    );
    assert_eq!(report.printer_frames, 3);
}

/// A JSON log line as the daemon writes it for an alarm or a reject signal.
fn log_line(fields: serde_json::Value) -> String {
    serde_json::json!({ "level": "WARN", "fields": fields }).to_string()
}

/// Issue 13: one double trigger cascading into rejecting every later good
/// unit, with a device-fault alarm at the job's normal end, must be reported;
/// the same run done right must not.
#[tokio::test]
async fn a_cascade_after_a_double_trigger_is_reported() {
    for cascade in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let issuer = Issuer::new(b"checker cascade", 10);
        issuer.add_line(LINE, SECRET);
        let (store, _) =
            Store::open(StoreOptions::new(dir.path().join("ledger"), LINE, SECRET)).unwrap();
        store.add_block(&issuer.issue(LINE).unwrap()).await.unwrap();
        let s = store.reserve(4).unwrap();
        let sent: Vec<_> = s
            .iter()
            .map(|x| Transition::new(x.clone(), UnitState::Sent))
            .collect();
        for r in store.apply(&sent).await {
            r.unwrap();
        }
        let mut verdicts = vec![Transition::new(s[0].clone(), UnitState::Committed)];
        for x in &s[1..] {
            verdicts.push(Transition::new(
                x.clone(),
                if cascade {
                    UnitState::Rejected(RejectReason::Duplicate)
                } else {
                    UnitState::Committed
                },
            ));
        }
        for r in store.apply(&verdicts).await {
            r.unwrap();
        }
        // The camera read every unit good, and unit 1's line twice.
        let read = |unit: u64, serial: &Serial, verdict| Reported {
            unit,
            printed: code_of(serial),
            verdict,
            content: Some(code_of(serial)),
            symbology: None,
            grade: Grade::A,
        };
        let mut camera_log = vec![
            read(1, &s[0], Verdict::Good),
            read(1, &s[0], Verdict::DoubleTrigger),
        ];
        for (i, x) in s.iter().enumerate().skip(1) {
            camera_log.push(read(i as u64 + 1, x, Verdict::Good));
        }
        let alarm = |kind: &str, serial: &Serial| {
            log_line(serde_json::json!({
                "message": "camera read a code already committed",
                "kind": kind,
                "serial": format!("Some(\"{serial}\")"),
            }))
        };
        let log = if cascade {
            // The old pipeline: each unit's read charged to the next one, no
            // reject signal, and "printer driver stopped" at the job's end.
            let mut lines: Vec<String> =
                s[..3].iter().map(|x| alarm("duplicate-read", x)).collect();
            lines.push(log_line(serde_json::json!({
                "message": "printer driver stopped",
                "kind": "device-fault",
                "serial": "None",
            })));
            lines.join("\n")
        } else {
            [
                alarm("duplicate-read", &s[0]),
                log_line(serde_json::json!({
                    "message": "reject signal: pack in front of the camera",
                    "reject_signal": "duplicate-read",
                    "read_serial": s[0].to_string(),
                })),
            ]
            .join("\n")
        };
        let codes: Vec<String> = s.iter().map(code_of).collect();
        let input = CheckInput {
            scenario: "cascade".into(),
            seed: 13,
            line: LINE.into(),
            store: store.clone(),
            device: DeviceLog::Codes(codes),
            camera_log,
            camera_kill_marks: Vec::new(),
            alarm_tolerance: 0,
            upstream: LineEvents::default(),
            issued: issuer.issued(LINE),
            earlier: Vec::new(),
            logs: vec![log],
            mid_job: false,
            units: 4,
            expect: Expect {
                exact_reject_signals: true,
                no_good_unit_rejected: true,
                no_device_fault_alarms: true,
                ..Expect::default()
            },
            stop_when: StopWhen::JobDone,
            events: Default::default(),
            hierarchy: None,
        };
        let report = check(&input);
        let expectation: Vec<String> = report
            .violations
            .iter()
            .filter(|v| v.rule == Rule::Expectation)
            .map(|v| v.to_string())
            .collect();
        if cascade {
            for x in &s[1..] {
                assert!(
                    report
                        .violations
                        .iter()
                        .any(|v| v.rule == Rule::Expectation
                            && v.serial.as_deref() == Some(x.as_str())),
                    "good unit {x} rejected, not reported: {expectation:#?}"
                );
            }
            assert!(
                expectation.iter().any(|t| t.contains("reject signal")),
                "{expectation:#?}"
            );
            assert!(
                expectation.iter().any(|t| t.contains("device-fault")),
                "{expectation:#?}"
            );
        } else {
            assert!(expectation.is_empty(), "{expectation:#?}");
            assert_eq!(report.reject_signals.get("duplicate-read"), Some(&1));
        }
    }
}

/// Issue 13 §2: a ledger set aside by a restore holds the history the line
/// lost. Its outcome upstream, next to the fenced void the restored ledger
/// reported for the same serial, is accepted; without the set-aside ledger
/// that outcome is one the checker cannot explain.
#[tokio::test]
async fn a_lost_history_is_accepted_only_with_its_ledger_and_a_fenced_void() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = Issuer::new(b"checker fence test", 10);
    issuer.add_line(LINE, SECRET);
    let sealed = issuer.issue(LINE).unwrap();

    // The lost history: s0 sent and committed.
    let (lost, _) = Store::open(StoreOptions::new(dir.path().join("lost"), LINE, SECRET)).unwrap();
    lost.add_block(&sealed).await.unwrap();
    let s0 = lost.reserve(1).unwrap().pop().unwrap();
    for to in [UnitState::Sent, UnitState::Committed] {
        lost.transition(&s0, to).await.unwrap();
    }

    // The restored ledger: upstream's answer fences position 0 (s0).
    let mut o = StoreOptions::new(dir.path().join("state/ledger"), LINE, SECRET);
    o.fence = Some(dir.path().join("fence/line-1.fence"));
    let (store, _) = Store::open(o).unwrap();
    store.add_block(&sealed).await.unwrap();
    let st = store.clone();
    let voided =
        tokio::task::spawn_blocking(move || st.fence_upstream_blocking(&[(sealed.block_id, 1)]))
            .await
            .unwrap()
            .unwrap();
    assert_eq!(voided, 1);

    let profile: FramedProfile = toml::from_str(
        &std::fs::read_to_string(config_dir().join("printer-cij-stx.toml")).unwrap(),
    )
    .unwrap();
    let compiled = profile.compile().unwrap();
    let rec_path = dir.path().join("printer.rec");
    let rec = Recorder::create(&rec_path).unwrap();
    let mut out = Vec::new();
    encode_frame(
        &compiled.framing,
        compiled.message.render(1, &code_of(&s0)).as_bytes(),
        &mut out,
    )
    .unwrap();
    rec.record(Direction::Rx, &out);

    let mut upstream = LineEvents::default();
    for (state, name) in [
        (UnitState::Committed, "committed"),
        (UnitState::Voided, "voided"),
    ] {
        upstream.events.insert(
            hex::encode(event_id(LINE, &s0, state)),
            (s0.to_string(), name.into()),
        );
    }
    upstream.fenced.insert(s0.to_string());
    let input = |earlier: Vec<Store>| CheckInput {
        scenario: "lost-history".into(),
        seed: 7,
        line: LINE.into(),
        store: store.clone(),
        device: DeviceLog::Framed {
            recording: rec_path.clone(),
            profile: profile.clone(),
        },
        camera_log: Vec::new(),
        camera_kill_marks: Vec::new(),
        alarm_tolerance: 0,
        upstream: upstream.clone(),
        issued: issuer.issued(LINE),
        logs: vec![String::new()],
        mid_job: false,
        units: 1,
        expect: Expect::default(),
        stop_when: StopWhen::JobDone,
        earlier,
        events: Default::default(),
        hierarchy: None,
    };
    let report = check(&input(vec![lost.clone()]));
    let text: Vec<String> = report.violations.iter().map(|v| v.to_string()).collect();
    assert!(report.violations.is_empty(), "{text:#?}");

    let report = check(&input(Vec::new()));
    let text: Vec<String> = report.violations.iter().map(|v| v.to_string()).collect();
    assert!(
        report
            .violations
            .iter()
            .any(|v| v.rule == Rule::Invariant(5) && v.serial.as_deref() == Some(s0.as_str())),
        "{text:#?}"
    );
}

/// Issue 20: the printer's side is read with the checker's own decoder,
/// written from the profile's specification (`hil_tests::printer_wire`). A
/// clean hand-made run (the printer's own noise on its TX side included)
/// passes with no violation; the same run with one malformed frame or a
/// stray byte from the host is a violation of invariant 1.
#[tokio::test]
async fn the_printer_side_is_decoded_from_the_profile_and_a_malformed_frame_is_a_violation() {
    use hil_tests::printer_wire::{self, WireSpec};
    for profile_file in ["printer-cij-stx.toml", "printer-tij-crc.toml"] {
        let dir = tempfile::tempdir().unwrap();
        let issuer = Issuer::new(b"checker wire test", 10);
        issuer.add_line(LINE, SECRET);
        let (store, _) =
            Store::open(StoreOptions::new(dir.path().join("ledger"), LINE, SECRET)).unwrap();
        store.add_block(&issuer.issue(LINE).unwrap()).await.unwrap();
        let s = store.reserve(2).unwrap();
        for serial in &s {
            for to in [UnitState::Sent, UnitState::Committed] {
                store.transition(serial, to).await.unwrap();
            }
        }
        let profile: FramedProfile =
            toml::from_str(&std::fs::read_to_string(config_dir().join(profile_file)).unwrap())
                .unwrap();
        let spec = WireSpec::from_profile(&profile).unwrap();
        let compiled = profile.compile().unwrap();
        // The frames as the daemon's driver writes them.
        let daemon_frame = |id: u64, serial: &Serial| {
            let mut out = Vec::new();
            encode_frame(
                &compiled.framing,
                compiled.message.render(id, &code_of(serial)).as_bytes(),
                &mut out,
            )
            .unwrap();
            out
        };
        // The two writers agree byte for byte.
        assert_eq!(daemon_frame(3, &s[0]), spec.frame(3, &code_of(&s[0])));

        let camera_log: Vec<Reported> = s
            .iter()
            .enumerate()
            .map(|(i, serial)| Reported {
                unit: i as u64 + 1,
                printed: code_of(serial),
                verdict: Verdict::Good,
                content: Some(code_of(serial)),
                symbology: None,
                grade: Grade::A,
            })
            .collect();
        let mut upstream = LineEvents::default();
        for serial in &s {
            upstream.events.insert(
                hex::encode(event_id(LINE, serial, UnitState::Committed)),
                (serial.to_string(), "committed".into()),
            );
        }
        let run = |extra: &[u8], name: &str| {
            let rec_path = dir.path().join(format!("{name}.rec"));
            let rec = Recorder::create(&rec_path).unwrap();
            rec.record(Direction::Rx, &daemon_frame(1, &s[0]));
            // The printer's own noise and reports: its side, not the daemon's.
            rec.record(Direction::Tx, b"\x06zz\xff");
            rec.record(Direction::Tx, &[0x02, b'?', 0x03]);
            // A frame split over two reads is still one frame.
            let f = daemon_frame(2, &s[1]);
            rec.record(Direction::Rx, &f[..4]);
            rec.record(Direction::Rx, &f[4..]);
            rec.record(Direction::Rx, extra);
            check(&CheckInput {
                scenario: name.into(),
                seed: 7,
                line: LINE.into(),
                store: store.clone(),
                device: DeviceLog::Framed {
                    recording: rec_path,
                    profile: profile.clone(),
                },
                camera_log: camera_log.clone(),
                camera_kill_marks: Vec::new(),
                alarm_tolerance: 0,
                upstream: upstream.clone(),
                issued: issuer.issued(LINE),
                logs: vec![String::new()],
                mid_job: false,
                units: 2,
                expect: Expect::default(),
                stop_when: StopWhen::JobDone,
                earlier: Vec::new(),
                events: Default::default(),
                hierarchy: None,
            })
        };
        let clean = run(&[], "clean");
        assert!(
            clean.violations.is_empty(),
            "{profile_file}: {:#?}",
            clean.violations
        );
        assert_eq!(clean.printer_frames, 2);

        // Each malformed addition must be reported, on invariant 1.
        let good = daemon_frame(9, &s[0]);
        let mut bad_sum = good.clone();
        let n = bad_sum.len();
        bad_sum[n - 2] = if bad_sum[n - 2] == b'0' { b'1' } else { b'0' };
        let mut other_message = good.clone();
        other_message[1] = b'X';
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("bad-checksum", bad_sum),
            ("cut-short", good[..good.len() - 1].to_vec()),
            ("restarted", [&good[..6], good.as_slice()].concat()),
            ("stray-ack", vec![profile.ack]),
            ("noise", b"hello".to_vec()),
            ("unmatched", other_message),
        ];
        for (name, extra) in cases {
            // The checker's own reading flags it.
            let wire = printer_wire::read(&spec, &extra);
            assert!(!wire.faults.is_empty(), "{profile_file} {name}: {wire:?}");
            let report = run(&extra, name);
            assert!(
                report
                    .violations
                    .iter()
                    .any(|v| v.rule == Rule::Invariant(1) && v.message.contains("does not allow")),
                "{profile_file} {name}: {:#?}",
                report.violations
            );
        }
    }
}

// ---- Issue 20: exact accounting. Each rule gets a hand-made broken run
// (the violation is reported) and the same run done right (none is).

use hil_tests::checker::{Report, RunEvents};

/// A ledger with `n` serials sent, then `outcomes[i]` applied to serial i.
async fn ledger(dir: &std::path::Path, outcomes: &[UnitState]) -> (Issuer, Store, Vec<Serial>) {
    let issuer = Issuer::new(b"checker accounting", 50);
    issuer.add_line(LINE, SECRET);
    let (store, _) = Store::open(StoreOptions::new(dir.join("ledger"), LINE, SECRET)).unwrap();
    store.add_block(&issuer.issue(LINE).unwrap()).await.unwrap();
    let s = store.reserve(outcomes.len()).unwrap();
    let sent: Vec<_> = s
        .iter()
        .map(|x| Transition::new(x.clone(), UnitState::Sent))
        .collect();
    for r in store.apply(&sent).await {
        r.unwrap();
    }
    let done: Vec<_> = s
        .iter()
        .zip(outcomes)
        .filter(|(_, o)| **o != UnitState::Sent)
        .map(|(x, o)| Transition::new(x.clone(), *o))
        .collect();
    for r in store.apply(&done).await {
        r.unwrap();
    }
    (issuer, store, s)
}

/// Upstream holding every reportable outcome of `store` once.
fn upstream_of(store: &Store) -> LineEvents {
    let mut up = LineEvents::default();
    for (serial, rec) in store.records_since(0, |_| true).unwrap() {
        if rec.state.is_reportable() || rec.state == UnitState::Synced {
            let st = if rec.state == UnitState::Synced {
                UnitState::Committed
            } else {
                rec.state
            };
            up.events.insert(
                hex::encode(event_id(LINE, &serial, st)),
                (serial.to_string(), st.name().into()),
            );
            up.raw_deliveries += 1;
        }
    }
    up
}

fn own_read(serial: &Serial, verdict: Verdict) -> Reported {
    Reported {
        unit: 1,
        printed: code_of(serial),
        verdict,
        content: match verdict {
            Verdict::NoRead => None,
            _ => Some(code_of(serial)),
        },
        symbology: None,
        grade: if verdict == Verdict::LowGrade {
            Grade::D
        } else {
            Grade::A
        },
    }
}

#[allow(clippy::too_many_arguments)]
fn run(
    store: &Store,
    issuer: &Issuer,
    codes: Vec<String>,
    camera_log: Vec<Reported>,
    kills: Vec<usize>,
    upstream: LineEvents,
    logs: Vec<String>,
    units: u64,
    expect: Expect,
    events: RunEvents,
    mid_job: bool,
) -> Report {
    check(&CheckInput {
        scenario: "accounting".into(),
        seed: 20,
        line: LINE.into(),
        store: store.clone(),
        device: DeviceLog::Codes(codes),
        camera_log,
        camera_kill_marks: kills,
        alarm_tolerance: 4,
        upstream,
        issued: issuer.issued(LINE),
        logs,
        mid_job,
        units,
        expect,
        stop_when: StopWhen::JobDone,
        earlier: Vec::new(),
        events,
        hierarchy: None,
    })
}

fn accounting(report: &Report) -> Vec<String> {
    report
        .violations
        .iter()
        .filter(|v| matches!(v.rule, Rule::Accounting | Rule::Expectation))
        .map(|v| v.to_string())
        .collect()
}

fn events() -> RunEvents {
    RunEvents {
        in_flight_bound: 24,
        ..RunEvents::default()
    }
}

/// Rule 1: a reject is explained by the camera's own report with the
/// matching reason, or by a device refusal; `max_rejected` caps them.
#[tokio::test]
async fn a_reject_without_a_recorded_cause_is_reported() {
    use RejectReason as R;
    let dir = tempfile::tempdir().unwrap();
    let outcomes = [
        UnitState::Rejected(R::NoRead),
        UnitState::Rejected(R::LowGrade),
        UnitState::Rejected(R::DeviceFault),
        UnitState::Rejected(R::NoRead),
    ];
    let (issuer, store, s) = ledger(dir.path(), &outcomes).await;
    let codes: Vec<String> = s.iter().map(code_of).collect();
    let up = upstream_of(&store);
    // Done right: no-read, low grade, a NAK (never printed: no report), a
    // duplicate shown on the unit's own trigger.
    let mut nak = events();
    nak.refusals = 1;
    let mut dup = own_read(&s[0], Verdict::Duplicate);
    dup.printed = code_of(&s[3]);
    let right = vec![
        own_read(&s[0], Verdict::NoRead),
        own_read(&s[1], Verdict::LowGrade),
        dup,
    ];
    let alarm = log_line(serde_json::json!({
        "kind": "duplicate-read",
        "serial": format!("Some(\"{}\")", s[0]),
    }));
    let expect = Expect {
        max_rejected: Some(4),
        ..Expect::default()
    };
    let report = run(
        &store,
        &issuer,
        codes.clone(),
        right.clone(),
        vec![],
        up.clone(),
        vec![alarm.clone()],
        4,
        expect.clone(),
        nak.clone(),
        false,
    );
    assert!(accounting(&report).is_empty(), "{:#?}", accounting(&report));
    assert_eq!(report.accounting.rejects.get("no-read"), Some(&2));

    // Broken: the low-grade unit was read good, no NAK was recorded, and
    // at most 3 rejects were expected.
    let mut broken = right;
    broken[1] = own_read(&s[1], Verdict::Good);
    let report = run(
        &store,
        &issuer,
        codes,
        broken,
        vec![],
        up,
        vec![alarm],
        4,
        Expect {
            max_rejected: Some(3),
            ..Expect::default()
        },
        events(),
        false,
    );
    let text = accounting(&report);
    for x in [&s[1], &s[2]] {
        assert!(
            report.violations.iter().any(|v| v.rule == Rule::Accounting
                && v.serial.as_deref() == Some(x.as_str())
                && v.message.contains("no recorded cause")),
            "{x}: {text:#?}"
        );
    }
    assert!(
        text.iter().any(|t| t.contains("at most 3 rejected")),
        "{text:#?}"
    );
    assert!(
        text.iter().any(|t| t.contains("device-fault rejects")),
        "{text:#?}"
    );
}

/// Rule 2: voids need an event (a kill, a jam, a link drop, a mid-job
/// stop), at most `max_voided_per_event` each.
#[tokio::test]
async fn a_void_without_an_event_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let outcomes = [UnitState::Committed, UnitState::Voided, UnitState::Voided];
    let (issuer, store, s) = ledger(dir.path(), &outcomes).await;
    let codes: Vec<String> = s.iter().map(code_of).collect();
    let camera = vec![own_read(&s[0], Verdict::Good)];
    let up = upstream_of(&store);
    // Done right: one kill, two in flight.
    let report = run(
        &store,
        &issuer,
        codes.clone(),
        camera.clone(),
        vec![1],
        up.clone(),
        vec![],
        3,
        Expect {
            max_voided_per_event: Some(2),
            ..Expect::default()
        },
        events(),
        false,
    );
    assert!(accounting(&report).is_empty(), "{:#?}", accounting(&report));
    assert_eq!(report.accounting.voided, 2);
    assert_eq!(report.accounting.void_events, 1);
    // Broken: two kills, both voids after the second (per kill, not in all).
    let mut two = events();
    two.kill_times_ms = vec![0, 1];
    let report = run(
        &store,
        &issuer,
        codes.clone(),
        camera.clone(),
        vec![1, 1],
        up.clone(),
        vec![],
        3,
        Expect {
            max_voided_per_event: Some(1),
            ..Expect::default()
        },
        two,
        false,
    );
    let text = accounting(&report);
    assert!(
        text.iter().any(|t| t.contains("voided after kill 2")),
        "{text:#?}"
    );
    assert_eq!(report.accounting.voided_per_kill, vec![0, 2]);
    // Broken: no event at all; then one kill but a bound of one per event.
    for (kills, per_event) in [(vec![], None), (vec![1], Some(1))] {
        let report = run(
            &store,
            &issuer,
            codes.clone(),
            camera.clone(),
            kills,
            up.clone(),
            vec![],
            3,
            Expect {
                max_voided_per_event: per_event,
                ..Expect::default()
            },
            events(),
            false,
        );
        let text = accounting(&report);
        assert!(text.iter().any(|t| t.contains("units voided")), "{text:#?}");
    }
}

/// Rule 3: decided units stay within the job's quantity plus the in-flight
/// bound per event.
#[tokio::test]
async fn more_units_decided_than_the_quantity_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let outcomes = [UnitState::Committed; 3];
    let (issuer, store, s) = ledger(dir.path(), &outcomes).await;
    let codes: Vec<String> = s.iter().map(code_of).collect();
    let camera: Vec<_> = s.iter().map(|x| own_read(x, Verdict::Good)).collect();
    let up = upstream_of(&store);
    let ok = run(
        &store,
        &issuer,
        codes.clone(),
        camera.clone(),
        vec![],
        up.clone(),
        vec![],
        3,
        Expect::default(),
        events(),
        false,
    );
    assert!(accounting(&ok).is_empty(), "{:#?}", accounting(&ok));
    let report = run(
        &store,
        &issuer,
        codes,
        camera,
        vec![],
        up,
        vec![],
        2,
        Expect::default(),
        events(),
        false,
    );
    let text = accounting(&report);
    assert!(
        text.iter()
            .any(|t| t.contains("3 units decided for a job of 2")),
        "{text:#?}"
    );
}

/// Rule 4: after a clean stop nothing is left Committed or in the outbox;
/// without kills or outages upstream got each id once.
#[tokio::test]
async fn a_clean_stop_with_unreported_outcomes_or_redeliveries_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let outcomes = [UnitState::Committed; 2];
    let (issuer, store, s) = ledger(dir.path(), &outcomes).await;
    let codes: Vec<String> = s.iter().map(code_of).collect();
    let camera: Vec<_> = s.iter().map(|x| own_read(x, Verdict::Good)).collect();
    let up = upstream_of(&store);
    let mut clean = events();
    clean.clean_stop = true;
    // Broken: the outbox was never drained; then upstream got one event twice.
    let report = run(
        &store,
        &issuer,
        codes.clone(),
        camera.clone(),
        vec![],
        up.clone(),
        vec![],
        2,
        Expect::default(),
        clean.clone(),
        false,
    );
    let text = accounting(&report);
    assert!(
        text.iter().any(|t| t.contains("left Committed")),
        "{text:#?}"
    );
    assert!(
        text.iter().any(|t| t.contains("outbox entries left")),
        "{text:#?}"
    );
    // Done right: every entry acknowledged.
    let seqs: Vec<u64> = store
        .outbox_peek(10)
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    store.outbox_ack(&seqs).await.unwrap();
    let up = upstream_of(&store);
    let report = run(
        &store,
        &issuer,
        codes.clone(),
        camera.clone(),
        vec![],
        up.clone(),
        vec![],
        2,
        Expect::default(),
        clean.clone(),
        false,
    );
    assert!(accounting(&report).is_empty(), "{:#?}", accounting(&report));
    let mut twice = up.clone();
    twice.raw_deliveries += 1;
    let report = run(
        &store,
        &issuer,
        codes.clone(),
        camera.clone(),
        vec![],
        twice.clone(),
        vec![],
        2,
        Expect::default(),
        clean.clone(),
        false,
    );
    let text = accounting(&report);
    assert!(
        text.iter().any(|t| t.contains("1 redelivered")),
        "{text:#?}"
    );
    // With a kill, within the stated bound.
    let report = run(
        &store,
        &issuer,
        codes,
        camera,
        vec![2],
        twice,
        vec![],
        2,
        Expect {
            max_redeliveries_per_event: Some(1),
            ..Expect::default()
        },
        clean,
        false,
    );
    assert!(accounting(&report).is_empty(), "{:#?}", accounting(&report));
}

/// Rule 5: alarms per kind, exact; an alarm for a code the camera never
/// showed is false.
#[tokio::test]
async fn a_false_alarm_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let outcomes = [UnitState::Committed, UnitState::Committed];
    let (issuer, store, s) = ledger(dir.path(), &outcomes).await;
    let codes: Vec<String> = s.iter().map(code_of).collect();
    let mut dup = own_read(&s[0], Verdict::DoubleTrigger);
    dup.unit = 1;
    let camera = vec![
        own_read(&s[0], Verdict::Good),
        dup,
        own_read(&s[1], Verdict::Good),
    ];
    let up = upstream_of(&store);
    let alarm = |kind: &str, x: &Serial| {
        log_line(serde_json::json!({ "kind": kind, "serial": format!("Some(\"{x}\")") }))
    };
    // Done right: one duplicate-read alarm for s0 (the operator's echo of
    // it is not a second alarm).
    let echo = serde_json::json!({
        "level": "WARN", "kind": "duplicate-read", "serial": format!("Some(\"{}\")", s[0]),
        "target": "serialine_uplink::operator",
    })
    .to_string();
    let right = format!("{}\n{echo}", alarm("duplicate-read", &s[0]));
    let report = run(
        &store,
        &issuer,
        codes.clone(),
        camera.clone(),
        vec![],
        up.clone(),
        vec![right],
        2,
        Expect::default(),
        events(),
        false,
    );
    assert!(accounting(&report).is_empty(), "{:#?}", accounting(&report));
    assert_eq!(report.duplicate_alarms, 1);
    // The same run with the double trigger just before a kill: excused, and
    // the excused count is capped by `max_alarms_excused`.
    let report = run(
        &store,
        &issuer,
        codes.clone(),
        camera.clone(),
        vec![2],
        up.clone(),
        vec![String::new()],
        2,
        Expect {
            max_alarms_excused: Some(0),
            ..Expect::default()
        },
        events(),
        false,
    );
    assert_eq!(report.alarms_excused, 1);
    let text = accounting(&report);
    assert!(
        text.iter()
            .any(|t| t.contains("excused from the alarm check")),
        "{text:#?}"
    );
    // Broken: a duplicate alarm for s1 (never shown twice) and a foreign
    // alarm for s0 (shown as a duplicate, not foreign).
    let broken = [
        alarm("duplicate-read", &s[0]),
        alarm("duplicate-read", &s[1]),
        alarm("foreign-code", &s[0]),
    ]
    .join("\n");
    let report = run(
        &store,
        &issuer,
        codes,
        camera,
        vec![],
        up,
        vec![broken],
        2,
        Expect::default(),
        events(),
        false,
    );
    let text = accounting(&report);
    assert!(
        report
            .violations
            .iter()
            .any(|v| v.rule == Rule::Accounting && v.serial.as_deref() == Some(s[1].as_str())),
        "{text:#?}"
    );
    assert!(
        text.iter()
            .any(|t| t.contains("2 duplicate-read alarm(s) logged")),
        "{text:#?}"
    );
    assert!(
        text.iter()
            .any(|t| t.contains("1 foreign-code alarm(s) logged")),
        "{text:#?}"
    );
}

/// Rule 6: a mid-job stop no run reconciled leaves serials in flight: a
/// violation, not an excuse.
#[tokio::test]
async fn a_mid_job_stop_without_reconciliation_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let outcomes = [UnitState::Committed, UnitState::Sent];
    let (issuer, store, s) = ledger(dir.path(), &outcomes).await;
    let codes: Vec<String> = s.iter().map(code_of).collect();
    let camera = vec![own_read(&s[0], Verdict::Good)];
    let up = upstream_of(&store);
    let mut jam = events();
    jam.mid_job_stops = 1;
    let report = run(
        &store,
        &issuer,
        codes,
        camera,
        vec![],
        up,
        vec![],
        2,
        Expect::default(),
        jam,
        true,
    );
    let text = accounting(&report);
    assert!(
        text.iter().any(|t| t.contains("no run reconciled")),
        "{text:#?}"
    );
}

/// Issue 19: a unit fault the camera injected on a unit's own read
/// (a plain symbol, `]d1`) rejects exactly that unit with the fault's reason
/// and raises exactly one alarm of the fault's kind naming its serial.
#[tokio::test]
async fn unit_faults_are_accounted_per_kind() {
    use RejectReason as R;
    let mismatch = UnitState::Rejected(R::Mismatch);
    let outcomes = [
        UnitState::Committed,
        mismatch,
        mismatch,
        UnitState::Committed,
    ];
    let dir = tempfile::tempdir().unwrap();
    let (issuer, store, s) = ledger(dir.path(), &outcomes).await;
    let codes: Vec<String> = s.iter().map(code_of).collect();
    let mut camera = vec![
        own_read(&s[0], Verdict::Good),
        own_read(&s[1], Verdict::PlainSymbol),
        own_read(&s[2], Verdict::PlainSymbol),
        own_read(&s[3], Verdict::Good),
    ];
    for r in &mut camera {
        r.symbology = Some(
            if r.verdict == Verdict::PlainSymbol {
                "]d1"
            } else {
                "]d2"
            }
            .into(),
        );
    }
    let alarm = |x: Option<&Serial>| {
        let serial = x.map_or_else(|| "None".to_string(), |x| format!("Some(\"{x}\")"));
        log_line(serde_json::json!({ "kind": "not-gs1-symbol", "serial": serial }))
    };
    let expect = Expect {
        exact_unit_faults: true,
        no_good_unit_rejected: true,
        max_rejected: Some(2),
        ..Expect::default()
    };
    let go = |store: &Store, camera: Vec<Reported>, logs: Vec<String>, expect: Expect| {
        run(
            store,
            &issuer,
            codes.clone(),
            camera,
            vec![],
            upstream_of(store),
            logs,
            4,
            expect,
            events(),
            false,
        )
    };
    // Done right.
    let right_logs = vec![format!("{}\n{}", alarm(Some(&s[1])), alarm(Some(&s[2])))];
    let report = go(&store, camera.clone(), right_logs.clone(), expect.clone());
    assert!(report.violations.is_empty(), "{:#?}", report.violations);
    let n = report.accounting.unit_faults["not-gs1-symbol"];
    assert_eq!((n.injected, n.rejected, n.alarms), (2, 2, 2));
    assert_eq!(report.accounting.rejects.get("mismatch"), Some(&2));

    // Broken: one alarm for the first plain symbol only, naming no serial
    // (an alarm rate-limited per burst).
    let report = go(&store, camera.clone(), vec![alarm(None)], expect.clone());
    let text = accounting(&report);
    for x in [&s[1], &s[2]] {
        assert!(
            report
                .violations
                .iter()
                .any(|v| v.serial.as_deref() == Some(x.as_str())
                    && v.message.contains("0 not-gs1-symbol alarm(s) naming it")),
            "{x}: {text:#?}"
        );
    }
    assert!(
        text.iter()
            .any(|t| t.contains("1 not-gs1-symbol alarm(s), 1 naming no serial")),
        "{text:#?}"
    );

    // Broken: an alarm naming a unit read good is false, checked even
    // without `exact_unit_faults`.
    let mut logs = right_logs.clone();
    logs.push(alarm(Some(&s[0])));
    let report = go(&store, camera.clone(), logs, Expect::default());
    let text = accounting(&report);
    assert!(
        report.violations.iter().any(|v| v.rule == Rule::Accounting
            && v.serial.as_deref() == Some(s[0].as_str())
            && v.message.contains("did not inject")),
        "{text:#?}"
    );

    // Broken: the daemon committed the second plain symbol's unit (the fix
    // switched off): invariant 2 and the per-kind count both say so.
    let dir2 = tempfile::tempdir().unwrap();
    let outcomes = [
        UnitState::Committed,
        mismatch,
        UnitState::Committed,
        UnitState::Committed,
    ];
    let (_, store2, s2) = ledger(dir2.path(), &outcomes).await;
    assert_eq!(s2, s, "the same issuer seed gives the same serials");
    let report = go(&store2, camera, vec![alarm(Some(&s[1]))], expect);
    let n = report.accounting.unit_faults["not-gs1-symbol"];
    assert_eq!((n.injected, n.rejected, n.alarms), (2, 1, 1));
    assert!(
        report
            .violations
            .iter()
            .any(|v| v.rule == Rule::Invariant(2) && v.serial.as_deref() == Some(s[2].as_str())),
        "{:#?}",
        report.violations
    );
    assert!(
        report.violations.iter().any(|v| v.rule == Rule::Expectation
            && v.serial.as_deref() == Some(s[2].as_str())
            && v.message.contains("not rejected (mismatch)")),
        "{:#?}",
        report.violations
    );
}

/// A ledger with a unit product's and a case product's blocks (the
/// issuer's `seed`, blocks of `block`), a job of `units` begun: its number,
/// `units` unit serials and `labels` case-label serials reserved.
async fn job_with_case_labels(
    dir: &std::path::Path,
    seed: &[u8],
    block: u32,
    units: u64,
    labels: usize,
) -> CaseLedger {
    use serialine_core::{Expiry, Job, Lot};
    let issuer = Issuer::new(seed, block);
    issuer.add_line(LINE, SECRET);
    let (store, _) = Store::open(StoreOptions::new(dir.join("ledger"), LINE, SECRET)).unwrap();
    let unit_gtin = Gtin::parse("09506000134352").unwrap();
    let case_gtin = Gtin::parse("19506000134359").unwrap();
    for g in [unit_gtin, case_gtin] {
        let block = issuer.issue_for(LINE, Some(g), None).unwrap();
        store.add_block(&block).await.unwrap();
    }
    let job = Job::new(
        unit_gtin,
        Lot::new("L1").unwrap(),
        Expiry::parse("271231").unwrap(),
        Template::Gs1DataMatrix,
        units,
    )
    .unwrap();
    let job = store.begin_job(&job).await.unwrap();
    let u = store.reserve_for(units as usize, &unit_gtin).unwrap();
    let l = store.reserve_for(labels, &case_gtin).unwrap();
    CaseLedger {
        issuer,
        store,
        job,
        u,
        l,
        unit_gtin,
        case_gtin,
    }
}

/// What [`job_with_case_labels`] made.
struct CaseLedger {
    issuer: Issuer,
    store: Store,
    job: u32,
    u: Vec<Serial>,
    l: Vec<Serial>,
    unit_gtin: Gtin,
    case_gtin: Gtin,
}

/// Moves each list of serials to its state, in job `job`, in order.
async fn move_in_job(store: &Store, job: u32, moves: &[(&[Serial], UnitState)]) {
    for (serials, to) in moves {
        let ts: Vec<_> = serials
            .iter()
            .map(|s| Transition::in_job(s.clone(), *to, Some(job)))
            .collect();
        for r in store.apply(&ts).await {
            r.unwrap();
        }
    }
}

/// Issue 14: the hierarchy rule on a hand-made ledger and hand-made device
/// logs: a label received twice and never read back, a label printed
/// twice, two partial cases in one job, a faulted case read whose units
/// were packed anyway, upstream naming another parent, and a label "in
/// flight at a kill" that ended committed are each reported; labels are
/// never taken for units (invariant 2), and a voided label holding nothing
/// is fine.
#[tokio::test]
async fn a_broken_hierarchy_is_reported_by_serial() {
    use hil_tests::checker::{HierarchyInput, LevelLog};
    use serialine_sim::aggregation::{CaseFault, CaseRead};

    let dir = tempfile::tempdir().unwrap();
    let CaseLedger {
        issuer,
        store,
        job,
        u,
        l,
        unit_gtin,
        case_gtin,
    } = job_with_case_labels(dir.path(), b"checker hierarchy", 40, 18, 4).await;
    move_in_job(
        &store,
        job,
        &[
            (&u[..], UnitState::Sent),
            (&u[..], UnitState::Committed),
            (&l[..], UnitState::Sent),
            (&l[3..], UnitState::Voided),
        ],
    )
    .await;
    // A full case and two partial ones (one job may have one, its last).
    store.seal_parent(&l[0], &u[..12], 12).await.unwrap();
    store.seal_parent(&l[1], &u[12..15], 12).await.unwrap();
    // Sealed later (by the millisecond): the job's last.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    store.seal_parent(&l[2], &u[15..18], 12).await.unwrap();

    let case_code = |s: &Serial| {
        let data = CodeData {
            gtin: case_gtin,
            expiry: None,
            lot: None,
            serial: s.clone(),
        };
        code::render(&Template::Gs1DataMatrix, &data).unwrap()
    };
    let good = |s: &Serial| Reported {
        unit: 1,
        printed: case_code(s),
        verdict: Verdict::Good,
        content: Some(case_code(s)),
        symbology: None,
        grade: Grade::A,
    };
    // The case packer read the first case with its last code not read;
    // the daemon must then have packed none of it.
    let codes: Vec<String> = u[..12].iter().map(code_of).collect();
    let mut reported: Vec<Option<String>> = codes.iter().cloned().map(Some).collect();
    reported[11] = None;
    let packer = vec![CaseRead {
        case: 1,
        contents: codes,
        reported,
        fault: Some(CaseFault::NoRead),
        partial: false,
        lost: Vec::new(),
    }];
    let level = LevelLog {
        name: "case".into(),
        gtin: case_gtin,
        per_parent: 12,
        scans: true,
        formats: vec![
            case_code(&l[0]),
            case_code(&l[1]),
            case_code(&l[1]),
            case_code(&l[2]),
        ],
        printed: vec![
            case_code(&l[0]),
            case_code(&l[1]),
            case_code(&l[2]),
            case_code(&l[2]),
        ],
        scanner: vec![good(&l[0]), good(&l[2])],
        packer: Some(packer),
    };
    // Upstream has every child where the ledger has it, but one.
    let mut upstream = LineEvents::default();
    for (parent, children) in [(&l[0], &u[..12]), (&l[1], &u[12..15]), (&l[2], &u[15..18])] {
        for c in children {
            upstream.parent_of.insert(c.to_string(), parent.to_string());
        }
    }
    upstream
        .parent_of
        .insert(u[5].to_string(), l[2].to_string());

    let report = check(&CheckInput {
        scenario: "hierarchy".into(),
        seed: 14,
        line: LINE.into(),
        store: store.clone(),
        device: DeviceLog::Codes(u.iter().map(code_of).collect()),
        camera_log: Vec::new(),
        camera_kill_marks: Vec::new(),
        alarm_tolerance: 0,
        upstream,
        issued: issuer.issued(LINE),
        logs: vec![String::new()],
        mid_job: false,
        units: 18,
        expect: Expect::default(),
        stop_when: StopWhen::JobDone,
        earlier: Vec::new(),
        events: Default::default(),
        hierarchy: Some(HierarchyInput {
            unit_gtin,
            levels: vec![level],
            killed_labels: vec![case_code(&l[0]), case_code(&l[3])],
        }),
    });
    let text: Vec<String> = report.violations.iter().map(|v| v.to_string()).collect();
    let hierarchy = |serial: Option<&Serial>, what: &str| {
        report.violations.iter().any(|v| {
            v.rule == Rule::Hierarchy
                && v.serial.as_deref() == serial.map(Serial::as_str)
                && v.message.contains(what)
        })
    };
    assert!(
        hierarchy(Some(&l[1]), "received this label 2 times"),
        "{text:#?}"
    );
    assert!(
        hierarchy(Some(&l[1]), "never read its label good"),
        "{text:#?}"
    );
    assert!(
        hierarchy(Some(&l[2]), "printed this label 2 times"),
        "{text:#?}"
    );
    assert!(hierarchy(None, "has 2 partial cases"), "{text:#?}");
    assert!(hierarchy(Some(&l[1]), "not the job's last"), "{text:#?}");
    assert!(hierarchy(Some(&u[0]), "must change nothing"), "{text:#?}");
    assert!(hierarchy(Some(&u[5]), "upstream says"), "{text:#?}");
    assert!(hierarchy(Some(&l[0]), "not voided"), "{text:#?}");
    // Nothing of the hierarchy about the voided label (upstream never heard
    // of it: invariant 5's); no label taken for a unit.
    assert!(
        !report
            .violations
            .iter()
            .any(|v| v.rule == Rule::Hierarchy && v.serial.as_deref() == Some(l[3].as_str())),
        "{text:#?}"
    );
    assert!(
        !report
            .violations
            .iter()
            .any(|v| v.rule == Rule::Invariant(2)
                && l.iter().any(|x| v.serial.as_deref() == Some(x.as_str()))),
        "{text:#?}"
    );
    let figures = report.hierarchy.expect("hierarchy figures");
    assert_eq!(
        (
            figures.levels[0].sealed,
            figures.levels[0].partial,
            figures.levels[0].voided
        ),
        (3, 2, 1)
    );
}

/// Issue 14, `[rework]`: after the line sealed two cases and refused a
/// third read (a code not read), a unit of the first case is swapped for a
/// unit of the refused read and the second case is emptied for good. With
/// the harness's moves the checker accepts it all (the swapped-in unit of
/// a faulted read, the unit taken out and the emptied case's units loose,
/// the emptied label holding nothing); without them, or with a move the
/// ledger does not show, each difference is reported by serial.
#[tokio::test]
async fn rework_is_accepted_only_as_the_harness_made_it() {
    use hil_tests::checker::{HierarchyInput, LevelLog, ReworkKind, ReworkMove, RunEvents};
    use serialine_sim::aggregation::{CaseFault, CaseRead};

    let dir = tempfile::tempdir().unwrap();
    let CaseLedger {
        issuer,
        store,
        job,
        u,
        l,
        unit_gtin,
        case_gtin,
    } = job_with_case_labels(dir.path(), b"checker rework", 60, 36, 2).await;
    move_in_job(
        &store,
        job,
        &[
            (&u[..], UnitState::Sent),
            (&u[..], UnitState::Committed),
            (&l[..], UnitState::Sent),
        ],
    )
    .await;
    store.seal_parent(&l[0], &u[..12], 12).await.unwrap();
    store.seal_parent(&l[1], &u[12..24], 12).await.unwrap();
    // Rework: u[0] out of l[0], u[24] (of the refused read) in; l[1] emptied.
    store.unpack(&l[0], Some(&u[..1])).await.unwrap();
    store.pack(&l[0], &u[24..25]).await.unwrap();
    store.unpack(&l[1], None).await.unwrap();
    let moves = vec![
        ReworkMove {
            parent: l[0].clone(),
            kind: ReworkKind::Unpack,
            children: u[..1].to_vec(),
        },
        ReworkMove {
            parent: l[0].clone(),
            kind: ReworkKind::Pack,
            children: u[24..25].to_vec(),
        },
        ReworkMove {
            parent: l[1].clone(),
            kind: ReworkKind::Empty,
            children: u[12..24].to_vec(),
        },
    ];

    let case_code = |s: &Serial| {
        let data = CodeData {
            gtin: case_gtin,
            expiry: None,
            lot: None,
            serial: s.clone(),
        };
        code::render(&Template::Gs1DataMatrix, &data).unwrap()
    };
    let good = |s: &Serial| Reported {
        unit: 1,
        printed: case_code(s),
        verdict: Verdict::Good,
        content: Some(case_code(s)),
        symbology: None,
        grade: Grade::A,
    };
    let read = |n: u64, units: &[Serial], fault: Option<CaseFault>| {
        let codes: Vec<String> = units.iter().map(code_of).collect();
        let mut reported: Vec<Option<String>> = codes.iter().cloned().map(Some).collect();
        if fault == Some(CaseFault::NoRead) {
            reported[11] = None;
        }
        CaseRead {
            case: n,
            contents: codes,
            reported,
            fault,
            partial: false,
            lost: Vec::new(),
        }
    };
    let level = LevelLog {
        name: "case".into(),
        gtin: case_gtin,
        per_parent: 12,
        scans: true,
        formats: l.iter().map(case_code).collect(),
        printed: l.iter().map(case_code).collect(),
        scanner: l.iter().map(good).collect(),
        packer: Some(vec![
            read(1, &u[..12], None),
            read(2, &u[12..24], None),
            read(3, &u[24..36], Some(CaseFault::NoRead)),
        ]),
    };
    // Upstream rebuilt the ledger's hierarchy.
    let mut upstream = LineEvents::default();
    for c in u[1..12].iter().chain(&u[24..25]) {
        upstream.parent_of.insert(c.to_string(), l[0].to_string());
    }
    let refused = log_line(serde_json::json!({"kind": "aggregation-refused"}));
    let check_with = |moves: Vec<ReworkMove>| {
        check(&CheckInput {
            scenario: "rework".into(),
            seed: 14,
            line: LINE.into(),
            store: store.clone(),
            device: DeviceLog::Codes(u.iter().map(code_of).collect()),
            camera_log: Vec::new(),
            camera_kill_marks: Vec::new(),
            alarm_tolerance: 0,
            upstream: upstream.clone(),
            issued: issuer.issued(LINE),
            logs: vec![refused.clone()],
            mid_job: false,
            units: 36,
            expect: Expect {
                all_units_packed: true,
                sealed_cases: Some(1),
                partial_cases: Some(0),
                ..Expect::default()
            },
            stop_when: StopWhen::JobDone,
            earlier: Vec::new(),
            events: RunEvents {
                rework: moves,
                ..RunEvents::default()
            },
            hierarchy: Some(HierarchyInput {
                unit_gtin,
                levels: vec![level.clone()],
                killed_labels: Vec::new(),
            }),
        })
    };
    let hierarchy_rules = |report: &hil_tests::Report| -> Vec<String> {
        report
            .violations
            .iter()
            .filter(|v| matches!(v.rule, Rule::Hierarchy | Rule::Expectation))
            .map(|v| v.to_string())
            .collect()
    };

    // As the harness made it: nothing of the hierarchy to say.
    let report = check_with(moves.clone());
    let text = hierarchy_rules(&report);
    assert!(text.is_empty(), "{text:#?}");
    let figures = report.hierarchy.expect("hierarchy figures");
    let f = &figures.levels[0];
    assert_eq!(
        (f.sealed, f.partial, f.reworked, f.emptied),
        (1, 0, 2, 1),
        "{figures}"
    );
    // 11 of the refused read, u[0], and the emptied case's 12.
    assert_eq!(figures.loose_units, 24, "{figures}");

    // Without the harness's moves: the faulted read's unit in a case, the
    // case no read of the packer, the emptied case unexplained.
    let report = check_with(Vec::new());
    let text: Vec<String> = report.violations.iter().map(|v| v.to_string()).collect();
    let hierarchy = |serial: &Serial, what: &str| {
        report.violations.iter().any(|v| {
            v.rule == Rule::Hierarchy
                && v.serial.as_deref() == Some(serial.as_str())
                && v.message.contains(what)
        })
    };
    assert!(hierarchy(&u[24], "must change nothing"), "{text:#?}");
    assert!(hierarchy(&l[0], "no read of its packer"), "{text:#?}");
    assert!(
        hierarchy(&l[1], "emptied by the harness's rework: false"),
        "{text:#?}"
    );
    assert!(hierarchy(&l[1], "holds nothing"), "{text:#?}");

    // A move the ledger does not show: u[1] said taken out, still in l[0].
    let mut wrong = moves.clone();
    wrong.insert(
        1,
        ReworkMove {
            parent: l[0].clone(),
            kind: ReworkKind::Unpack,
            children: u[1..2].to_vec(),
        },
    );
    let report = check_with(wrong);
    let text: Vec<String> = report.violations.iter().map(|v| v.to_string()).collect();
    assert!(
        report.violations.iter().any(|v| v.rule == Rule::Hierarchy
            && v.serial.as_deref() == Some(u[1].as_str())
            && v.message.contains("but in it after")),
        "{text:#?}"
    );
    assert!(
        report.violations.iter().any(|v| v.rule == Rule::Hierarchy
            && v.serial.as_deref() == Some(u[1].as_str())
            && v.message.contains("the rework left it loose")),
        "{text:#?}"
    );
}
