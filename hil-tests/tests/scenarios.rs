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
    assert!(outcome.ok(), "{}", outcome.details());
}

fn scenario(name: &str) {
    let path = scenarios_dir().join(format!("{name}.toml"));
    let outcome = run_scenario(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
    check(&outcome);
}

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
                    if !known.contains(&stem.as_str()) && !["crash-loop", "soak"].contains(&stem.as_str()) {
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
    kill9_once => "kill9-once",
    kill9_several => "kill9-several",
    power_loss_under_load => "power-loss",
    laser_clean => "laser-clean",
    laser_modbus_exceptions => "laser-modbus-exceptions",
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
        if let Some(o) = s.timeline.broker_outage.as_mut() {
            o.at_units = 55_000;
            o.secs = 10.0;
        }
        s.timeout_secs = 3600;
    }
    check(&run(s).expect("soak runs"));
}
