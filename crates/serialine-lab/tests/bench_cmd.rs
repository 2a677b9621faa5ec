//! `serialine-lab bench` at a tiny size, run as a user would: every phase runs,
//! and the table and the JSON name every figure with its goal. No timing is
//! asserted: the figures belong to the machine.
//!
//! The multi-line phase runs 2 lines for 2 s (1 s inside the whole bench),
//! alone with `--only lines` and once within the JSON run.

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

/// The multi-line phase alone, small: 2 lines at 33 units/s for 2 s.
const LINES_ONLY: [&str; 7] = [
    "bench",
    "--only",
    "lines",
    "--lines",
    "2",
    "--lines-secs",
    "2",
];

fn bench(extra: &[&str]) -> String {
    run(&TINY, extra)
}

fn run(base: &[&str], extra: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_serialine-lab"))
        .args(base)
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
    // Without the multi-line phase: its rows are the next tests' concern.
    let table = bench(&["--lines", "0"]);
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
    let out = bench(&["--json", "--lines", "2", "--lines-secs", "1"]);
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
        "/lines/latency_p99_ms_median_line",
        "/lines/latency_p99_ms_worst_line",
        "/lines/rss_steady_mb",
        "/lines/cpu_percent_of_one_core",
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
    // Five goals of the single lines, four of the multi-line phase.
    assert_eq!(v["goals"].as_array().map(Vec::len), Some(9), "{v}");
    for key in ["pipeline_group", "pipeline_naive", "realistic", "lines"] {
        assert_eq!(v[key]["upstream_agrees"], true, "{key}: {v}");
    }
    assert_eq!(v["lines"]["lines"], 2, "{v}");
    assert_eq!(v["lines"]["units_per_line"], 33, "{v}");
}

#[test]
fn bench_only_lines_prints_the_multi_line_figures() {
    let table = run(&LINES_ONLY, &[]);
    for figure in [
        "2 lines in one process, 1980 units/min (33 units/s) each, 66 units per line",
        "2 of 2 agree with upstream",
        "units/min achieved per line (median line)",
        "added latency p99 per line, median line",
        "added latency p99 per line, worst line",
        "RSS steady (median sample after warm-up)",
        "RSS peak (highest sample, opening to end)",
        "RSS before the lines opened",
        "CPU of the process over the run",
        "< 5 ms",
        "< 10 ms",
        "< 128 MB",
        "< 25% of one core",
    ] {
        assert!(table.contains(figure), "no {figure:?} in:\n{table}");
    }
    // Only this phase ran.
    assert!(!table.contains("pipeline, group commit"), "{table}");
    let verdicts = table
        .lines()
        .filter(|l| l.trim_end().ends_with("met") || l.contains("missed by"))
        .count();
    assert_eq!(verdicts, 4, "four goals:\n{table}");
}

#[test]
fn bench_only_lines_json_has_every_line_agreeing() {
    let out = run(&LINES_ONLY, &["--json"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    let lines = &v["lines"];
    assert_eq!(lines["lines"], 2, "{v}");
    assert_eq!(lines["upstream_agrees"], true, "{v}");
    let per_line = lines["per_line"].as_array().expect("per_line");
    assert_eq!(per_line.len(), 2, "{v}");
    for l in per_line {
        assert_eq!(l["units"], 66, "{l}");
        assert_eq!(l["upstream_agrees"], true, "{l}");
        assert!(l["latency_p99_ms"].as_f64().is_some(), "{l}");
    }
    // Each line has its own ledger.
    assert_ne!(per_line[0]["line"], per_line[1]["line"], "{v}");
    assert!(lines["rss_samples"].as_u64().is_some_and(|n| n > 0), "{v}");
    assert_eq!(v["goals"].as_array().map(Vec::len), Some(4), "{v}");
    assert!(v.get("pipeline_group").is_none(), "{v}");
}
