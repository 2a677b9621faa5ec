//! Every scenario in `hil-tests/scenarios/`, each its own test, plus the
//! crash loop and the soak. Each runs the real `serialine` binary (built on
//! first use with `cargo build -p serialine`) against the simulators.
//!
//! `HIL_SEED=<n>` overrides every scenario's seed; `HIL_FULL=1` runs the
//! crash loop and the soak at full size; `HIL_KEEP=1` keeps every
//! scenario's directory (it is always kept when a scenario fails).

use hil_tests::scenario::scenarios_dir;
use hil_tests::{run, run_scenario, Outcome, Scenario};

fn full() -> bool {
    std::env::var("HIL_FULL").is_ok_and(|v| v == "1")
}

fn check(outcome: &Outcome) {
    eprintln!("{}", outcome.summary());
    for line in &outcome.lines {
        eprintln!("  {line}");
    }
    assert!(outcome.ok(), "{}", outcome.details());
}

fn scenario(name: &str) {
    let path = scenarios_dir().join(format!("{name}.toml"));
    let outcome = run_scenario(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
    check(&outcome);
}

/// Scenario files that reproduce a daemon bug: each has an `#[ignore]`d
/// test below naming the bug, to run with `--ignored` (and register in
/// `scenarios!` once the daemon is fixed).
const DAEMON_BUG_REPRODUCERS: &[&str] = &[];

macro_rules! scenarios {
    ($($test:ident => $file:literal),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                scenario($file);
            }
        )*

        /// Every file in scenarios/ has a test above.
        #[test]
        fn every_scenario_file_has_a_test() {
            let known = [$($file),*];
            let mut missing = Vec::new();
            for entry in std::fs::read_dir(scenarios_dir()).expect("scenarios dir") {
                let path = entry.expect("dir entry").path();
                if path.extension().is_some_and(|e| e == "toml") {
                    let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
                    Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
                    if !known.contains(&stem.as_str())
                        && !["crash-loop", "soak"].contains(&stem.as_str())
                        && !DAEMON_BUG_REPRODUCERS.contains(&stem.as_str())
                    {
                        missing.push(stem);
                    }
                }
            }
            assert!(missing.is_empty(), "scenarios without a test: {missing:?}");
        }
    };
}

scenarios! {
    clean_run => "clean",
    changeover => "changeover",
    changeover_command => "changeover-command",
    printer_nak_burst => "printer-nak-burst",
    printer_jam => "printer-jam",
    printer_cable_pull => "printer-cable-pull",
    printer_garbage_bytes => "printer-garbage",
    camera_no_read => "camera-no-read",
    camera_misread => "camera-misread",
    camera_low_grade => "camera-low-grade",
    camera_duplicate_code => "camera-duplicate",
    camera_foreign_code => "camera-foreign",
    camera_garbage_lines => "camera-garbage",
    camera_disconnect => "camera-disconnect",
    broker_outage => "broker-outage",
    broker_outage_kill9 => "broker-outage-kill9",
    kill9_once => "kill9-once",
    kill9_several => "kill9-several",
    power_loss_under_load => "power-loss",
    laser_clean => "laser-clean",
    laser_modbus_exceptions => "laser-modbus-exceptions",
    laser_accept_drop => "laser-accept-drop",
    replay_recorded_session => "replay-session",
    camera_double_trigger => "camera-double-trigger",
    camera_refed_pack => "camera-refed-pack",
    camera_other_line => "camera-other-line",
    camera_plain_symbol => "camera-plain-symbol",
    camera_double_trigger_no_read => "camera-double-trigger-no-read",
    laser_double_trigger => "laser-double-trigger",
    command_retained => "command-retained",
    command_stale => "command-stale",
    ack_forged => "ack-forged",
    ledger_restored => "ledger-restored",
    state_dir_wiped => "state-dir-wiped",
    multi_line_kill9 => "multi-line-kill9",
    big_blocks_kill9 => "big-blocks-kill9",
    daemon_frozen => "daemon-frozen",
    printer_fnc1_escape => "printer-fnc1-escape",
    after_commit_samples_and_decommissioning => "after-commit",
    after_commit_on_settled_blocks => "after-commit-settled",
    return_unused_killed_midway => "return-kill9",
    aggregation_clean => "aggregation-clean",
    aggregation_faults => "aggregation-faults",
    aggregation_partial => "aggregation-partial",
    aggregation_count => "aggregation-count",
    aggregation_kill9 => "aggregation-kill9",
    aggregation_label_faults => "aggregation-label-faults",
    aggregation_backlog => "aggregation-backlog",
    aggregation_rework => "aggregation-rework",
    aggregation_rework_repeat => "aggregation-rework-repeat",
}

/// `HIL_SCENARIO=<file>` runs that scenario file (QA's own, a replay of a
/// session recorded with `serialine-lab record`, ...); without it, nothing.
#[test]
fn scenario_file_from_env() {
    if let Ok(path) = std::env::var("HIL_SCENARIO") {
        let outcome = run_scenario(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        check(&outcome);
    }
}

/// The recorded session with one byte of what the daemon sent changed in
/// the recording: the replay names the device and the offset; allowed to
/// differ there, the same replay passes.
#[test]
fn replay_reports_where_the_daemon_differs() {
    let path = scenarios_dir().join("replay-session.toml");
    let mut s = Scenario::load(&path).expect("replay-session.toml");
    let replay = s.replay.as_mut().expect("[replay]");
    let dir = tempfile::tempdir().expect("temp dir");
    let original = std::fs::read_to_string(&replay.printer).expect("printer recording");
    // The 6th byte the daemon sends: inside the first frame's message.
    let mut changed = String::new();
    let mut done = false;
    for line in original.lines() {
        let mut parts: Vec<String> = line.split(' ').map(str::to_string).collect();
        if !done && parts.len() == 3 && parts[1] == "rx" && parts[2].len() >= 12 {
            let byte = u8::from_str_radix(&parts[2][10..12], 16).expect("hex");
            parts[2].replace_range(10..12, &format!("{:02x}", byte ^ 0x01));
            done = true;
        }
        changed.push_str(&parts.join(" "));
        changed.push('\n');
    }
    assert!(done, "no rx entry of 6 bytes in the recording");
    replay.printer = dir.path().join("changed-printer.rec");
    std::fs::write(&replay.printer, changed).expect("write the changed recording");

    let outcome = run(s.clone()).expect("replay runs");
    let found = outcome
        .report
        .violations
        .iter()
        .any(|v| v.message.contains("printer") && v.message.contains("byte 5 differs"));
    assert!(
        found,
        "expected a replay mismatch at byte 5: {}",
        outcome.details()
    );

    s.replay
        .as_mut()
        .expect("[replay]")
        .allow
        .push(hil_tests::scenario::AllowDiffer {
            device: "printer".into(),
            from: 5,
            len: 1,
            why: "changed on purpose".into(),
        });
    check(&run(s).expect("replay runs"));
}

/// Seeded kill points (`HIL_SEED` overrides): 10,000 units and 20 SIGKILLs,
/// or with `HIL_FULL=1` 100,000 units and 100 SIGKILLs.
#[test]
fn crash_loop() {
    let mut s = Scenario::load(&scenarios_dir().join("crash-loop.toml")).expect("crash-loop.toml");
    if let Some(seed) = hil_tests::harness::env_seed() {
        s.seed = seed;
    }
    if full() {
        s.units = 100_000;
        s.timeline.random_kills = 100;
        s.timeout_secs = 3600;
        scale_expect(&mut s, 10_000, 100);
    }
    eprintln!(
        "crash loop: seed {} (HIL_SEED overrides), {} units, {} kills",
        s.seed, s.units, s.timeline.random_kills
    );
    let kills = s.timeline.random_kills;
    let outcome = run(s).expect("crash loop runs");
    check(&outcome);
    assert!(outcome.kills >= kills, "only {} kills", outcome.kills);
}

/// Faults mixed in; 5,000 units in CI, 100,000 with `HIL_FULL=1`.
#[test]
fn soak() {
    let mut s = Scenario::load(&scenarios_dir().join("soak.toml")).expect("soak.toml");
    if let Some(seed) = hil_tests::harness::env_seed() {
        s.seed = seed;
    }
    if full() {
        s.units = 100_000;
        s.printer.disconnect_after = Some(40_000);
        s.camera.disconnect_after = Some(60_000);
        s.timeline.kill9_at_units = vec![10_000, 30_000, 50_000, 70_000, 90_000];
        scale_expect(&mut s, 5_000, 6);
        if let Some(o) = s.timeline.broker_outage.as_mut() {
            o.at_units = 55_000;
            o.secs = 10.0;
        }
        s.timeout_secs = 3600;
    }
    check(&run(s).expect("soak runs"));
}

/// Issue 20: a `HIL_FULL=1` run's bounds, scaled from the scenario's: the
/// rejects with the units, the committed floor from them and `events`
/// kills or link drops of `max_voided_per_event` each.
fn scale_expect(s: &mut Scenario, units_before: u64, events: u64) {
    let e = &mut s.expect;
    e.max_rejected = e.max_rejected.map(|m| m * s.units / units_before);
    e.max_alarms_excused = e.max_alarms_excused.map(|m| m * s.units / units_before);
    e.min_committed =
        s.units - e.max_rejected.unwrap_or(0) - events * e.max_voided_per_event.unwrap_or(24);
}
