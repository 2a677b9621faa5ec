//! `serialine archive` on the real binary: a ledger whose blocks ended and
//! were reported is archived, `export` and `status` read across the archive,
//! and a second run has nothing to do.

// The store's own fixtures: blocks sealed, and serials driven, one way.
#[path = "offline/mod.rs"]
mod offline;

#[path = "../../serialine-store/tests/common/fixtures.rs"]
#[allow(dead_code)]
mod fixtures;

use fixtures::{ack_outbox, commit_through, gtin, seal_block};
use offline::{serialine, LINE};
use serialine_core::{BlockKey, Serial};
use serialine_store::{Store, StoreOptions};
use std::path::Path;
use std::process::Output;

const SECRET: &[u8] = b"archive-test line secret, 32 B!!";

/// Two blocks of 50 serials, every one committed and acknowledged, and a
/// third with serials left (it stays).
fn fill_ledger(path: &Path) {
    let (store, _) = Store::open(StoreOptions::new(path, LINE, SECRET)).expect("ledger opens");
    let key = BlockKey::derive(SECRET);
    for id in 1..=3u64 {
        let serials = (0..50)
            .map(|n| Serial::new(format!("A{id}X{n:04}")).expect("serial"))
            .collect();
        store
            .add_block_blocking(&seal_block(&key, LINE, id, serials))
            .expect("block added");
    }
    let taken = store.reserve_for(120, &gtin()).expect("reserve");
    commit_through(&store, &taken).expect("committed");
    ack_outbox(&store).expect("acknowledged");
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

#[test]
fn archive_moves_ended_blocks_out_and_export_still_sees_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    fill_ledger(&dir.path().join("ledger").join(LINE));
    let write_config = |extra: &str| offline::write_config(dir.path(), SECRET, extra);

    // keep_days = 0 keeps everything: without --before there is nothing to do.
    let config = write_config("[retention]\nkeep_days = 0");
    let refused = serialine(&config, &["archive"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("retention.keep_days is 0"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    // The default 30 days: these records are minutes old, nothing moves.
    let config = write_config("");
    let out = ok(serialine(&config, &["archive"]));
    assert!(out.contains("0 serials archived in 0 file(s)"), "{out}");

    let out = ok(serialine(&config, &["archive", "--before", "2100-01-01"]));
    assert!(out.contains("100 serials archived in 1 file(s)"), "{out}");
    let files: Vec<_> = std::fs::read_dir(dir.path().join("archive").join(LINE))
        .expect("archive dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].starts_with("line-1-") && files[0].ends_with("-1.jsonl.zst"));

    let status: serde_json::Value =
        serde_json::from_str(&ok(serialine(&config, &["status", "--json"]))).expect("JSON");
    assert_eq!(status[0]["archived"], 100, "{status}");
    assert_eq!(status[0]["synced"], 20, "{status}");
    let rows = ok(serialine(&config, &["export", "--format", "jsonl"]));
    assert_eq!(
        rows.lines().count(),
        120,
        "archived and live records: {rows}"
    );
    assert!(rows.contains("\"A1X0000\"") && rows.contains("\"A3X0019\""));

    let again = ok(serialine(&config, &["archive", "--before", "2100-01-01"]));
    assert!(again.contains("0 serials archived"), "{again}");
}
