//! The README's first command, run as a user would: the real binary, a temp
//! state directory, simulators for every device and for upstream. Then the
//! ledger is opened again, independently of the demo, and checked against
//! what the demo reports upstream received.

use serialine_store::{Store, StoreOptions};
use std::process::Command;

#[test]
fn demo_line_runs_end_to_end_and_upstream_agrees_with_the_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_serialine-lab"))
        .args([
            "demo",
            "--units",
            "600",
            "--json",
            "--no-progress",
            "--state-dir",
        ])
        .arg(dir.path())
        .output()
        .expect("serialine-lab demo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).expect("JSON summary");
    let lines = summary["lines"].as_array().expect("lines");
    assert_eq!(lines.len(), 2, "inkjet and laser lines: {summary}");
    for line in lines {
        let id = line["line"].as_str().unwrap();
        let n = |k: &str| line[k].as_u64().unwrap_or_else(|| panic!("{id}.{k}"));
        // Units, and the serials of line-1's case and pallet labels.
        let (labels, labels_rejected) = (n("labels_committed"), n("labels_rejected"));
        let committed_all = n("committed") + labels;
        assert_eq!(n("sent"), 600, "{id}");
        assert_eq!(
            n("committed") + n("rejected") + n("voided"),
            600,
            "{id}: {line}"
        );
        assert!(line["upstream_agrees"].as_bool().unwrap(), "{id}: {line}");
        // The job's reconciliation from the ledger balances and counts the
        // units the pipeline reported.
        let job = &line["job"];
        assert_eq!(job["balanced"], true, "{id}: {line}");
        assert_eq!(
            job["sent"].as_u64(),
            Some(n("sent") + labels + labels_rejected),
            "{id}: {line}"
        );
        assert_eq!(
            job["committed"].as_u64(),
            Some(committed_all),
            "{id}: {line}"
        );
        assert_eq!(n("upstream_serial_mismatches"), 0, "{id}");
        assert_eq!(n("upstream_committed"), committed_all, "{id}");
        assert_eq!(
            n("upstream_rejected"),
            n("rejected") + labels_rejected,
            "{id}"
        );
        // Issue 14: line-1 packs its units into cases of 12 and its cases
        // onto pallets of 10, each parent labelled and verified; upstream
        // rebuilt the same hierarchy from the pack events.
        let levels = line["levels"].as_array().unwrap();
        if id == "line-1" {
            let level = |name: &str, k: &str| {
                levels
                    .iter()
                    .find(|l| l["name"] == name)
                    .and_then(|l| l[k].as_u64())
                    .unwrap_or_else(|| panic!("{id}: level {name}.{k}: {line}"))
            };
            let cases = level("case", "sealed");
            let refused = level("case", "refused") + level("pallet", "refused");
            assert!(
                cases >= n("committed").div_ceil(12) - level("case", "refused"),
                "{line}"
            );
            assert!(level("pallet", "sealed") >= 1, "{line}");
            assert_eq!(labels, cases + level("pallet", "sealed"), "{line}");
            let h = &job["hierarchy"];
            let hn = |k: &str| {
                h[k].as_u64()
                    .unwrap_or_else(|| panic!("{id}: hierarchy.{k}: {line}"))
            };
            assert_eq!(hn("labels"), labels, "{line}");
            assert_eq!(
                hn("units_in_parents") + hn("labels") + hn("loose"),
                committed_all,
                "{line}"
            );
            if refused == 0 {
                assert_eq!(
                    hn("loose"),
                    0,
                    "every unit in a case, every case on a pallet: {line}"
                );
                assert_eq!(hn("units_in_parents"), n("committed"), "{line}");
                assert_eq!(n("upstream_packed"), n("committed") + cases, "{line}");
            }
        } else {
            assert!(levels.is_empty(), "{id} does not aggregate: {line}");
        }

        // The ledger on disk says the same, read by a fresh process-local open.
        let secret = std::fs::read(dir.path().join(format!("{id}.secret"))).unwrap();
        let (store, recovery) = Store::open(StoreOptions::new(
            dir.path().join("ledger").join(id),
            id,
            &secret,
        ))
        .unwrap();
        assert!(recovery.in_flight.is_empty(), "{id}: units left in flight");
        let c = store.counts();
        assert_eq!(c, store.recount().unwrap(), "{id}: counters vs records");
        assert_eq!(
            c.synced, committed_all,
            "{id}: every commit acknowledged upstream"
        );
        assert_eq!(c.committed, 0, "{id}: commits still waiting for upstream");
        assert_eq!(c.rejected, n("rejected") + labels_rejected, "{id}");
        assert_eq!(
            c.reported,
            n("rejected") + labels_rejected + n("voided"),
            "{id}: decommissioned and reported"
        );
        assert_eq!(store.outbox_depth(), 0, "{id}");
    }

    // The operator tools read the same ledgers through a config file.
    let profile = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../config/printer-cij-stx.toml"
    );
    let line_cfg = |id: &str| {
        format!(
            "[[line]]\nid = \"{id}\"\nsecret_file = \"{id}.secret\"\n\
             printer = {{ kind = \"framed\", profile = \"{profile}\", transport = {{ kind = \"tcp\", addr = \"127.0.0.1:9\" }} }}\n\
             camera = {{ transport = {{ kind = \"tcp\", addr = \"127.0.0.1:9\" }} }}\n"
        )
    };
    let config = dir.path().join("serialine.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nstate_dir = \".\"\n[site]\nid = \"demo\"\n{}{}",
            line_cfg("line-1"),
            line_cfg("line-2")
        ),
    )
    .unwrap();
    let service = service_binary();
    let tool = |args: &[&str]| {
        let out = Command::new(&service)
            .args(args)
            .arg("--config")
            .arg(&config)
            .env_remove("SERIALINE_CONFIG")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let status: serde_json::Value = serde_json::from_str(&tool(&["status", "--json"])).unwrap();
    let all_committed = |line: &serde_json::Value| {
        line["committed"].as_u64().unwrap() + line["labels_committed"].as_u64().unwrap()
    };
    let outcomes: u64 = lines
        .iter()
        .map(|l| {
            all_committed(l)
                + l["rejected"].as_u64().unwrap()
                + l["voided"].as_u64().unwrap()
                + l["labels_rejected"].as_u64().unwrap()
        })
        .sum();
    for (line, s) in lines.iter().zip(status.as_array().unwrap()) {
        assert_eq!(s["line"], line["line"]);
        assert_eq!(s["synced"].as_u64(), Some(all_committed(line)), "{s}");
        assert_eq!(s["in_flight"], 0, "{s}");
        assert_eq!(s["outbox"], 0, "{s}");
    }
    let csv = tool(&["export", "--since", "1h", "--line", "line-1"]);
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(rows.len() as u64, all_committed(&lines[0]));
    assert!(rows
        .iter()
        .all(|r| r.starts_with("line-1,") && r.contains(",committed,")));
    let all = tool(&["export", "--format", "jsonl", "--all-outcomes"]);
    assert_eq!(
        all.lines().count() as u64,
        outcomes,
        "every outcome of both lines, labels included"
    );
    let nothing = tool(&["export", "--since", "2100-01-01"]);
    assert_eq!(nothing.lines().count(), 1, "header only");
}

/// The service binary (`serialine`), whose `status` and `export` read the
/// demo's ledgers: another package's binary, so it is built here (cargo
/// builds it anyway under `cargo test --workspace`; then this is a no-op).
fn service_binary() -> std::path::PathBuf {
    let lab = std::path::Path::new(env!("CARGO_BIN_EXE_serialine-lab"));
    let dir = lab.parent().expect("the lab binary has a directory");
    let target = dir.parent().expect("the profile directory has a parent");
    let mut build = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    build
        .args(["build", "--quiet", "-p", "serialine", "--bin", "serialine"])
        .arg("--target-dir")
        .arg(target)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    if dir.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    let status = build.status().expect("cargo runs");
    assert!(status.success(), "cargo build -p serialine failed");
    dir.join("serialine")
}
