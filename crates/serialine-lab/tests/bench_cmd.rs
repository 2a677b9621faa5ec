//! `serialine-lab bench` at a tiny size, run as a user would: every phase runs,
//! and the table and the JSON name every figure with its goal. No timing is
//! asserted: the figures belong to the machine.

use std::process::Command;

const TINY: [&str; 11] = [
    "bench",
    "--units",
    "300",
    "--naive-units",
    "100",
    "--buffered",
    "20000",
    "--realistic-secs",
    "2",
    "--drain-events",
    "1000",
];

fn bench(extra: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_serialine-lab"))
        .args(TINY)
        .args(extra)
        .output()
        .expect("serialine-lab bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "bench failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn bench_prints_every_figure_next_to_its_goal() {
    let table = bench(&[]);
    for figure in [
        "pipeline, group commit (300 units)",
        "added latency p50",
        "added latency p99",
        "added latency p99.9",
        "pipeline, naive: a flush per transition (100 units)",
        "group commit / naive",
        "outbox drain (1,000 events)",
        "store size per million serials",
        "RSS, 20,000 serials buffered (fresh process)",
        "peak RSS of that process (VmHWM)",
        "realistic line: 600 units/min, 40 ms print (20 units)",
        "% of one core",
        "units/min achieved",
        "peak RSS of this bench process (VmHWM)",
        "units/s",
        "events/s",
        "≥ 50,000 units/s",
        "≥ 100×",
        "< 1 ms",
        "< 64 MB",
    ] {
        assert!(table.contains(figure), "no {figure:?} in:\n{table}");
    }
    // Each of the four goals has a verdict.
    let verdicts = table
        .lines()
        .filter(|l| l.trim_end().ends_with("met") || l.contains("missed by"))
        .count();
    assert_eq!(verdicts, 5, "four goals, p99 twice:\n{table}");
}

#[test]
fn bench_json_holds_every_figure() {
    let out = bench(&["--json"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    for pointer in [
        "/pipeline_group/units_per_sec",
        "/pipeline_group/latency_p50_ms",
        "/pipeline_group/latency_p99_ms",
        "/pipeline_group/latency_p999_ms",
        "/pipeline_naive/units_per_sec",
        "/group_over_naive",
        "/outbox_drain/events_per_sec",
        "/store_mb_per_million_serials",
        "/store_mb_per_million_buffered_serials",
        "/rss_buffered/vm_rss_mb",
        "/rss_buffered/vm_hwm_mb",
        "/realistic/cpu_percent_of_one_core",
        "/bench_peak_rss_mb",
    ] {
        assert!(
            v.pointer(pointer).and_then(|x| x.as_f64()).is_some(),
            "{pointer} in {v}"
        );
    }
    assert_eq!(v["pipeline_group"]["units"], 300, "{v}");
    assert_eq!(v["pipeline_naive"]["units"], 100, "{v}");
    assert_eq!(v["rss_buffered"]["serials"], 20_000, "{v}");
    assert_eq!(v["realistic"]["units"], 20, "{v}");
    assert_eq!(v["goals"].as_array().map(Vec::len), Some(5), "{v}");
    for key in ["pipeline_group", "pipeline_naive", "realistic"] {
        assert_eq!(v[key]["upstream_agrees"], true, "{key}: {v}");
    }
}
