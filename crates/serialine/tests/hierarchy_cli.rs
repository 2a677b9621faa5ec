//! `serialine pack | unpack | contents` and `unit decommission
//! --with-children` on the real binary, on a ledger whose units and case
//! labels are committed (the service stopped: the CLI opens the ledger).

#[path = "offline/mod.rs"]
mod offline;

#[path = "../../serialine-store/tests/common/fixtures.rs"]
#[allow(dead_code)]
mod fixtures;

use fixtures::{ack_outbox, case_gtin, gtin, pallet_gtin, seal_block, seal_block_for};
use offline::{serialine, text, LINE};
use serialine_core::{BlockKey, Expiry, Job, Lot, Serial, Template, UnitState};
use serialine_store::{Store, StoreOptions, Transition};
use std::path::Path;

const SECRET: &[u8] = b"hierarchy-test line secret, 32 B";

/// 24 units and 3 case labels of one job, committed and acknowledged.
fn fill_ledger(path: &Path) -> (Vec<Serial>, Vec<Serial>) {
    let (store, _) = Store::open(StoreOptions::new(path, LINE, SECRET)).expect("ledger opens");
    let key = BlockKey::derive(SECRET);
    let units: Vec<Serial> = (0..24)
        .map(|n| Serial::new(format!("U{n:04}")).unwrap())
        .collect();
    store
        .add_block_blocking(&seal_block(&key, LINE, 1, units))
        .unwrap();
    let cases = (0..3)
        .map(|n| Serial::new(format!("CASE{n}")).unwrap())
        .collect();
    store
        .add_block_blocking(&seal_block_for(&key, LINE, 2, case_gtin(), cases))
        .unwrap();
    let pallets = vec![Serial::new("PAL0").unwrap()];
    store
        .add_block_blocking(&seal_block_for(&key, LINE, 3, pallet_gtin(), pallets))
        .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let job = Job::new(
        gtin(),
        Lot::new("CLI-1").unwrap(),
        Expiry::parse("271231").unwrap(),
        Template::Gs1DataMatrix,
        24,
    )
    .unwrap();
    let job = runtime.block_on(store.begin_job(&job)).unwrap();
    let units = store.reserve_for(24, &gtin()).unwrap();
    // Two case labels, and a pallet's (cases[2]).
    let mut cases = store.reserve_for(2, &case_gtin()).unwrap();
    cases.extend(store.reserve_for(1, &pallet_gtin()).unwrap());
    for to in [UnitState::Sent, UnitState::Committed] {
        let ts: Vec<_> = units
            .iter()
            .chain(&cases)
            .map(|s| Transition::in_job(s.clone(), to, Some(job)))
            .collect();
        for r in store.apply_blocking(&ts) {
            r.unwrap();
        }
    }
    ack_outbox(&store).unwrap();
    (units, cases)
}

#[test]
fn pack_contents_rework_and_decommission_with_children() {
    let dir = tempfile::tempdir().unwrap();
    let (units, cases) = fill_ledger(&dir.path().join("ledger").join(LINE));
    let config = offline::write_config(dir.path(), SECRET, "");
    let u: Vec<&str> = units.iter().map(|s| s.as_str()).collect();
    let c: Vec<&str> = cases.iter().map(|s| s.as_str()).collect();

    let mut args = vec!["pack", c[0]];
    args.extend(&u[..12]);
    let out = serialine(&config, &args);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!(
            "12 packed into {} on line {LINE}; it holds 12",
            c[0]
        )),
        "{}",
        text(&out)
    );

    // A second case with a unit of the first and a foreign code: refused,
    // each named, exit 1, nothing packed.
    let out = serialine(&config, &["pack", c[1], u[12], u[0], "NOT-OURS"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains(&format!("{}: already in {}", u[0], c[0])), "{t}");
    assert!(t.contains("NOT-OURS: foreign"), "{t}");
    let out = serialine(&config, &["contents", u[12], "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["parents"], serde_json::json!([]), "{v}");

    // Rework: one out, another in; then the case onto a pallet.
    assert!(serialine(&config, &["unpack", c[0], u[0]]).status.success());
    assert!(serialine(&config, &["pack", c[0], u[12]]).status.success());
    assert!(serialine(&config, &["pack", c[2], c[0]]).status.success());
    let out = serialine(&config, &["contents", u[12]]);
    assert!(
        text(&out).contains(&format!("in {}, {}", c[0], c[2])),
        "{}",
        text(&out)
    );
    let out = serialine(&config, &["contents", c[0], "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["children"].as_array().unwrap().len(), 12, "{v}");

    // The export names each serial's parent: unit -> case -> pallet.
    let out = serialine(&config, &["export", "--format", "jsonl"]);
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let parent_of = |s: &str| {
        rows.iter()
            .find(|r| r["serial"] == s)
            .map(|r| r["parent"].clone())
            .unwrap_or_default()
    };
    assert_eq!(parent_of(u[12]), serde_json::json!(c[0]));
    assert_eq!(parent_of(c[0]), serde_json::json!(c[2]));
    assert_eq!(parent_of(u[0]), serde_json::Value::Null);
    let csv = text(&serialine(&config, &["export"]));
    assert!(
        csv.starts_with("line,serial,state,reason,at,parent\n"),
        "{csv}"
    );
    assert!(
        csv.lines()
            .any(|l| l.starts_with(&format!("{LINE},{},", u[12]))
                && l.ends_with(&format!(",{}", c[0]))),
        "{csv}"
    );

    // The job's report counts the hierarchy per level.
    let out = serialine(&config, &["report", "--json"]);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let h = &r[0]["hierarchy"];
    assert_eq!(
        h["levels"],
        serde_json::json!([
            {"level": 1, "parents": 1, "children": 12, "partial": 0},
            {"level": 2, "parents": 1, "children": 1, "partial": 0}
        ]),
        "{r}"
    );
    // 24 units and 3 labels committed: 12 packed, 2 labels in use.
    assert_eq!(
        (
            h["units_in_parents"].as_u64(),
            h["labels"].as_u64(),
            h["loose"].as_u64()
        ),
        (Some(12), Some(2), Some(13)),
        "{r}"
    );
    assert!(
        text(&serialine(&config, &["report"])).contains("= in parents 12 + labels 2 + loose 13")
    );

    // The pallet alone may not be decommissioned; with its children it is.
    let out = serialine(
        &config,
        &["unit", "decommission", c[2], "--reason", "destroyed"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("unpack it first"), "{}", text(&out));
    let out = serialine(
        &config,
        &[
            "unit",
            "decommission",
            c[2],
            "--reason",
            "destroyed",
            "--with-children",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("with the 13 serials packed below it"),
        "{}",
        text(&out)
    );
    let out = serialine(&config, &["contents", u[12], "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["state"], "decommissioned(destroyed)", "{v}");

    // Emptying needs saying so.
    let out = serialine(&config, &["unpack", c[1]]);
    assert!(!out.status.success());
    assert!(text(&out).contains("--all"), "{}", text(&out));
}
