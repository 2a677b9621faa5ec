//! Jobs in the ledger: numbered durably, each Sent carries its job, and a
//! job's report counts its units by outcome, balanced, from the ledger and
//! its archives.

mod common;

use common::*;
use serialine_core::{DecommissionReason, Expiry, Job, Lot, RejectReason, Template, UnitState};
use serialine_store::{ArchiveOptions, Transition};
use std::time::{Duration, SystemTime};

fn job(lot: &str) -> Job {
    Job::new(
        gtin(),
        Lot::new(lot).unwrap(),
        Expiry::parse("271231").unwrap(),
        Template::Gs1DataMatrix,
        10,
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_units_are_counted_by_outcome_and_balance_once_ended() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path());
    store
        .add_block(&sealed_block(1, LINE, SECRET, serials("J", 0..100)))
        .await
        .unwrap();
    let first = store.begin_job(&job("LOT-A")).await.unwrap();
    let second = store.begin_job(&job("LOT-B")).await.unwrap();
    assert_eq!((first, second), (1, 2));

    let send = |n: usize, job: u32| {
        let s = store.reserve_for(n, &gtin()).unwrap();
        let ts: Vec<_> = s
            .iter()
            .map(|x| Transition::in_job(x.clone(), UnitState::Sent, Some(job)))
            .collect();
        (s, ts)
    };
    let (a, ts) = send(10, first);
    for r in store.apply(&ts).await {
        r.unwrap();
    }
    let (b, ts) = send(3, second);
    for r in store.apply(&ts).await {
        r.unwrap();
    }
    let moves = |serials: &[serialine_core::Serial], to: UnitState| -> Vec<Transition> {
        serials
            .iter()
            .map(|s| Transition::new(s.clone(), to))
            .collect()
    };
    // Job 1: 6 committed (one of them acknowledged and decommissioned), 2
    // rejected low grade, 1 voided, 1 left in flight.
    for r in store.apply(&moves(&a[..6], UnitState::Committed)).await {
        r.unwrap();
    }
    for r in store
        .apply(&moves(
            &a[6..8],
            UnitState::Rejected(RejectReason::LowGrade),
        ))
        .await
    {
        r.unwrap();
    }
    for r in store.apply(&moves(&a[8..9], UnitState::Voided)).await {
        r.unwrap();
    }
    let seq = store.outbox_peek(1).unwrap()[0].seq;
    store.outbox_ack(&[seq]).await.unwrap();
    let destroy = UnitState::Decommissioned(DecommissionReason::Destroyed);
    for r in store.apply(&moves(&a[..1], destroy)).await {
        r.unwrap();
    }

    let running = store.job_report(first).unwrap();
    assert_eq!(running.sent, 10);
    assert_eq!(running.in_flight, 1);
    assert!(running.balanced(), "a running job may have units in flight");
    store.end_job(first, "job complete").await.unwrap();
    let r = store.job_report(first).unwrap();
    // The tally kept with each transition equals a count of the records.
    assert_eq!(r, store.job_report_by_scan(first, None).unwrap());
    assert_eq!(r.entry.as_ref().unwrap().lot, "LOT-A");
    assert_eq!(
        r.entry.as_ref().unwrap().end.as_deref(),
        Some("job complete")
    );
    assert_eq!(
        (
            r.sent,
            r.committed,
            r.synced,
            r.decommissioned,
            r.voided,
            r.in_flight
        ),
        (10, 5, 0, 1, 1, 1)
    );
    assert_eq!(r.rejected.get("low-grade"), Some(&2));
    assert_eq!(r.committed_total(), 6);
    assert!(!r.balanced(), "ended with a unit in flight");
    assert_eq!(r.unbalanced, vec![a[9].as_str().to_string()]);
    // The other job's units are its own.
    assert_eq!(store.job_report(second).unwrap().sent, b.len() as u64);

    // Durable, and across the archive: job 1's units still count.
    drop(store);
    let (store, recovery) = open(dir.path());
    assert_eq!(store.jobs().unwrap().len(), 2);
    // The restart voided what was in flight: job 1 balances now.
    assert!(recovery.in_flight.iter().any(|(s, _)| *s == a[9]));
    let after = store.job_report(first).unwrap();
    assert_eq!(after.sent, 10);
    let archive = dir.path().join("archive");
    // (Block 1 has serials left, so nothing leaves; the archive's own
    // test checks a record's job survives the round trip.)
    store
        .archive(ArchiveOptions::new(
            &archive,
            SystemTime::now() + Duration::from_secs(1),
        ))
        .await
        .unwrap();
    assert_eq!(store.job_report(first).unwrap().sent, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_numbers_go_on_after_a_reopen_and_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path());
    assert_eq!(store.begin_job(&job("A")).await.unwrap(), 1);
    store.checkpoint().await.unwrap();
    assert_eq!(store.begin_job(&job("B")).await.unwrap(), 2);
    drop(store);
    let (store, _) = open(dir.path());
    assert_eq!(store.begin_job(&job("C")).await.unwrap(), 3);
    assert_eq!(store.jobs().unwrap().len(), 3);
}
