//! The fence (issue 13 §2): a ledger restored from a copy, or rolled back,
//! never hands out a serial it handed out before the restore.

mod common;

use common::{sealed_block, serials, LINE, SECRET};
use serialine_core::{Serial, UnitState};
use serialine_store::{SerialEntry, Store, StoreOptions, Transition};
use std::collections::HashSet;
use std::path::Path;

fn opts(dir: &Path) -> StoreOptions {
    let mut o = StoreOptions::new(dir.join("state/ledger").join(LINE), LINE, SECRET);
    o.fence = Some(dir.join("fence").join(format!("{LINE}.fence")));
    o
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// Reserves `n` serials and takes them all the way to Committed.
fn run_units(store: &Store, n: usize) -> Vec<Serial> {
    let got = store.reserve(n).unwrap();
    assert_eq!(got.len(), n, "buffer ran dry");
    for to in [UnitState::Sent, UnitState::Printed, UnitState::Committed] {
        let ts: Vec<Transition> = got.iter().map(|s| Transition::new(s.clone(), to)).collect();
        for r in store.apply_blocking(&ts) {
            r.unwrap();
        }
    }
    got
}

/// A ledger with one block of 2,000 serials, opened once through the fence
/// and upstream's (empty) answer, then closed.
fn prepared(dir: &Path) {
    let (store, rec) = Store::open(opts(dir)).unwrap();
    assert!(
        rec.fence.as_ref().unwrap().hold.is_some(),
        "an empty ledger holds"
    );
    assert!(store.fence_holding());
    store
        .add_block_blocking(&sealed_block(1, LINE, SECRET, serials("F", 0..2000)))
        .unwrap();
    assert!(
        store.reserve(1).unwrap().is_empty(),
        "held until upstream answers"
    );
    assert_eq!(store.fence_upstream_blocking(&[]).unwrap(), 0);
    assert!(!store.fence_holding());
}

#[test]
fn a_restored_ledger_never_reserves_what_it_handed_out_before() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("state/ledger").join(LINE);
    prepared(dir.path());
    let backup = dir.path().join("backup");
    copy_dir(&ledger, &backup);

    // 500 units on the original.
    let (store, rec) = Store::open(opts(dir.path())).unwrap();
    assert_eq!(
        rec.fence.as_ref().unwrap().voided,
        0,
        "a clean close wastes nothing"
    );
    assert!(!store.fence_holding(), "an intact fence needs no upstream");
    let first: HashSet<Serial> = run_units(&store, 500).into_iter().collect();
    drop(store);

    // The copy comes back.
    std::fs::remove_dir_all(&ledger).unwrap();
    copy_dir(&backup, &ledger);
    let (store, rec) = Store::open(opts(dir.path())).unwrap();
    let report = rec.fence.clone().unwrap();
    assert!(report.voided >= 500, "{report:?}");
    assert!(report.voided <= 500 + serialine_store::FENCE_CHUNK as usize);
    for s in &first {
        match store.entry(s).unwrap() {
            SerialEntry::Recorded(r) => {
                assert_eq!(r.state, UnitState::Voided, "{s}");
                assert!(r.fenced, "{s}");
            }
            other => panic!("{s} not fenced: {other:?}"),
        }
    }
    // Reported upstream, as voided.
    let outbox: HashSet<Serial> = store
        .outbox_peek(10_000)
        .unwrap()
        .into_iter()
        .filter(|e| e.state == UnitState::Voided)
        .map(|e| e.serial)
        .collect();
    assert!(first.is_subset(&outbox));
    // 500 more: none of the first run's.
    let second = run_units(&store, 500);
    assert!(second.iter().all(|s| !first.contains(s)));
    assert_eq!(store.recount().unwrap(), store.counts());
    drop(store);

    // A clean close, then a reopen: the fence trusts the ledger again.
    let (store, rec) = Store::open(opts(dir.path())).unwrap();
    assert_eq!(rec.fence.unwrap().voided, 0);
    let third = run_units(&store, 10);
    assert!(third
        .iter()
        .all(|s| !first.contains(s) && !second.contains(s)));
}

#[test]
fn a_lost_fence_holds_until_upstream_answers_and_upstream_fences_too() {
    let dir = tempfile::tempdir().unwrap();
    prepared(dir.path());
    let (store, _) = Store::open(opts(dir.path())).unwrap();
    let first = run_units(&store, 300);
    drop(store);
    std::fs::remove_dir_all(dir.path().join("fence")).unwrap();

    let (store, rec) = Store::open(opts(dir.path())).unwrap();
    assert!(rec.fence.unwrap().hold.is_some());
    assert!(store.fence_holding());
    assert!(store.reserve(5).unwrap().is_empty());
    let hello = store.fence_hello().unwrap();
    assert_eq!(hello.blocks.len(), 1);
    assert_eq!(hello.blocks[0].used, 300);
    assert!(hello.holding);
    // Upstream has seen reports up to position 700 of block 1 (a history
    // this ledger lost), and knows nothing of block 9.
    let voided = store.fence_upstream_blocking(&[(1, 700), (9, 50)]).unwrap();
    assert_eq!(voided, 400);
    assert!(!store.fence_holding());
    let next = store.reserve(10).unwrap();
    let block = serials("F", 0..2000);
    for s in &next {
        let pos = block.iter().position(|b| b == s).unwrap();
        assert!(pos >= 700, "{s} at {pos} is below upstream's mark");
    }
    assert!(next.iter().all(|s| !first.contains(s)));
    assert_eq!(store.recount().unwrap(), store.counts());
}

#[test]
fn the_fence_may_not_live_in_the_ledger_directory() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(dir.path());
    o.fence = Some(o.path.join("fence"));
    match Store::open(o) {
        Err(e) => assert!(e.to_string().contains("inside the ledger directory"), "{e}"),
        Ok(_) => panic!("a fence inside the ledger was accepted"),
    }
}

#[test]
fn a_damaged_fence_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    prepared(dir.path());
    let path = dir.path().join("fence").join(format!("{LINE}.fence"));
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, &text[..text.len() / 2]).unwrap();
    assert!(Store::open(opts(dir.path())).is_err());
}

const CHILD_ENV: &str = "SERIALINE_STORE_FENCE_CHILD_DIR";

/// The writer for the test below: sends serials one by one, printing each
/// once its Sent is durable (the moment it may reach a printer). Ignored:
/// it is a process that test starts (`--ignored --exact`), not a test; run
/// on its own it fails rather than passing without doing anything.
#[test]
#[ignore = "the writer process of a_killed_run_then_a_rolled_back_ledger_never_reissues, started by it"]
fn fence_writer_child() {
    let dir = std::env::var(CHILD_ENV).unwrap_or_else(|_| {
        panic!("fence_writer_child is started by a_killed_run_then_a_rolled_back_ledger_never_reissues ({CHILD_ENV} unset)")
    });
    let (store, _) = Store::open(opts(Path::new(&dir))).expect("writer opens the ledger");
    use std::io::Write;
    let mut out = std::io::stdout();
    loop {
        let got = store.reserve(3).expect("reserve");
        assert!(!got.is_empty(), "buffer ran dry");
        let ts: Vec<Transition> = got
            .iter()
            .map(|s| Transition::new(s.clone(), UnitState::Sent))
            .collect();
        for (s, r) in got.iter().zip(store.apply_blocking(&ts)) {
            r.expect("sent");
            let _ = writeln!(out, "SENT {s}");
        }
        let _ = out.flush();
    }
}

/// SIGKILL mid-run (no clean close), then the storage comes back with an
/// earlier state: every serial the killed run sent is fenced, none reserved.
#[test]
fn a_killed_run_then_a_rolled_back_ledger_never_reissues() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("state/ledger").join(LINE);
    prepared(dir.path());
    let backup = dir.path().join("backup");
    copy_dir(&ledger, &backup);

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "fence_writer_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("writer starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut sent = HashSet::new();
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if let Some(s) = line.strip_prefix("SENT ") {
            sent.insert(Serial::new(s).expect("serial"));
            if sent.len() == 700 {
                child.kill().expect("SIGKILL the writer");
                break;
            }
        }
    }
    child.wait().expect("writer reaped");
    assert_eq!(sent.len(), 700, "the writer stopped early");

    std::fs::remove_dir_all(&ledger).unwrap();
    copy_dir(&backup, &ledger);
    let (store, rec) = Store::open(opts(dir.path())).unwrap();
    let voided = rec.fence.unwrap().voided;
    assert!(voided >= 700, "{voided}");
    for s in &sent {
        assert!(
            matches!(store.entry(s).unwrap(), SerialEntry::Recorded(r) if r.fenced),
            "{s} not fenced"
        );
    }
    let next = store.reserve(1000).unwrap();
    assert_eq!(next.len(), 1000);
    assert!(next.iter().all(|s| !sent.contains(s)));
}
