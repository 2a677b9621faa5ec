//! Issue 14, the packaging hierarchy in the ledger: committed units packed
//! into verified parents (cases from their own blocks, AI 01 + 21), cases
//! onto pallets, rework, and every refusal naming its offending codes and
//! changing nothing.

mod common;

use common::*;
use serialine_core::{
    BlockKey, DecommissionReason, Expiry, Job, Lot, SamplePurpose, Serial, Template, UnitState,
};
use serialine_store::hierarchy::ParentState;
use serialine_store::{EventDetail, Store, StoreError, Transition};

/// A job whose 30 units and 4 case labels are committed, 5 units more
/// only sent, and a block of unit serials never sent.
struct Line {
    store: Store,
    _dir: tempfile::TempDir,
    job: u32,
    units: Vec<Serial>,
    sent_only: Vec<Serial>,
    cases: Vec<Serial>,
    never_sent: Serial,
}

fn line() -> Line {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path());
    store
        .add_block_blocking(&sealed_block(1, LINE, SECRET, serials("U", 0..100)))
        .unwrap();
    store
        .add_block_blocking(&seal_block_for(
            &BlockKey::derive(SECRET),
            LINE,
            2,
            case_gtin(),
            serials("C", 0..10),
        ))
        .unwrap();
    store
        .add_block_blocking(&seal_block_for(
            &BlockKey::derive(SECRET),
            LINE,
            3,
            pallet_gtin(),
            serials("P", 0..5),
        ))
        .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let job = Job::new(
        gtin(),
        Lot::new("AGG-1").unwrap(),
        Expiry::parse("271231").unwrap(),
        Template::Gs1DataMatrix,
        35,
    )
    .unwrap();
    let job = runtime.block_on(store.begin_job(&job)).unwrap();
    let units = store.reserve_for(35, &gtin()).unwrap();
    // Three case labels, and a pallet's (cases[3]).
    let mut cases = store.reserve_for(3, &case_gtin()).unwrap();
    cases.extend(store.reserve_for(1, &pallet_gtin()).unwrap());
    let apply = |serials: &[Serial], to: UnitState| {
        let ts: Vec<_> = serials
            .iter()
            .map(|s| Transition::in_job(s.clone(), to, Some(job)))
            .collect();
        for r in store.apply_blocking(&ts) {
            r.unwrap();
        }
    };
    apply(&units, UnitState::Sent);
    apply(&cases, UnitState::Sent);
    apply(&units[..30], UnitState::Committed);
    apply(&cases, UnitState::Committed);
    let never_sent = store.reserve_for(1, &gtin()).unwrap().remove(0);
    store.release(std::slice::from_ref(&never_sent));
    Line {
        store,
        _dir: dir,
        job,
        sent_only: units[30..].to_vec(),
        units: units[..30].to_vec(),
        cases,
        never_sent,
    }
}

fn refused(
    r: Result<serialine_store::hierarchy::HierarchyMove, StoreError>,
) -> Vec<(Serial, String)> {
    match r {
        Err(StoreError::HierarchyRefused { offending, .. }) => offending,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn units_pack_into_a_case_once_and_a_bad_read_changes_nothing() {
    let l = line();
    let (s, u, c) = (&l.store, &l.units, &l.cases);
    let m = s.pack_blocking(&c[0], &u[..12]).unwrap();
    assert_eq!((m.children, m.holds, m.events), (12, 12, 1));
    assert_eq!(s.parent_of(&u[0]).unwrap(), Some(c[0].clone()));
    let (entry, inside) = s.contents(&c[0]).unwrap().unwrap();
    assert_eq!(
        (entry.state, entry.children, entry.job),
        (ParentState::Packed, 12, l.job)
    );
    assert_eq!(inside.len(), 12);

    // A multi-code read with a unit of another case, one only sent, one
    // never sent, a foreign one and a repeat: the case is rejected, each
    // named with why, and nothing is packed.
    let foreign = Serial::new("NOT-OURS-1").unwrap();
    let read = vec![
        u[12].clone(),
        u[11].clone(),
        l.sent_only[0].clone(),
        l.never_sent.clone(),
        foreign.clone(),
        u[12].clone(),
    ];
    let offending = refused(s.pack_blocking(&c[1], &read));
    let why = |x: &Serial| {
        offending
            .iter()
            .find(|(s, _)| s == x)
            .map(|(_, w)| w.clone())
            .unwrap_or_default()
    };
    assert!(
        why(&u[11]).contains(&format!("already in {}", c[0])),
        "{offending:?}"
    );
    assert!(
        why(&l.sent_only[0]).contains("not committed"),
        "{offending:?}"
    );
    assert_eq!(why(&l.never_sent), "never sent");
    assert!(why(&foreign).starts_with("foreign"), "{offending:?}");
    assert_eq!(why(&u[12]), "named twice");
    assert_eq!(offending.len(), 5, "{offending:?}");
    assert_eq!(s.parent_of(&u[12]).unwrap(), None, "nothing packed");
    assert!(s.contents(&c[1]).unwrap().is_none(), "no parent made");

    // A parent whose label is not verified, or a unit as parent of itself.
    let mut unverified = s.reserve_for(1, &case_gtin()).unwrap();
    s.release(&unverified);
    refused(s.pack_blocking(&unverified.remove(0), &u[20..22]));
    // A unit is no parent of units of its own product.
    match s.pack_blocking(&u[25], &u[26..27]) {
        Err(StoreError::HierarchyRefused { why, offending, .. }) => {
            assert!(why.contains("not a case or pallet label"), "{why}");
            assert_eq!(offending.len(), 1, "{offending:?}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn rework_pallets_and_an_emptied_case_is_never_used_again() {
    let l = line();
    let (s, u, c) = (&l.store, &l.units, &l.cases);
    s.pack_blocking(&c[0], &u[..12]).unwrap();
    s.pack_blocking(&c[1], &u[12..24]).unwrap();

    // Samples and decommissioning respect the hierarchy.
    let sample = UnitState::Sampled(SamplePurpose::Qa);
    let destroy = UnitState::Decommissioned(DecommissionReason::Damaged);
    ack_outbox(s).unwrap(); // commits acknowledged: Synced
    for (x, to) in [(&u[0], sample), (&c[0], destroy)] {
        match s.transition_blocking(x, to) {
            Err(StoreError::HierarchyRefused { why, .. }) => {
                assert!(why.contains("first"), "{why}")
            }
            other => panic!("{x} -> {to}: {other:?}"),
        }
    }

    // Rework: one unit out, another in.
    let m = s.unpack_blocking(&c[0], Some(&u[..1])).unwrap();
    assert_eq!((m.children, m.holds), (1, 11));
    assert_eq!(s.parent_of(&u[0]).unwrap(), None);
    s.transition_blocking(&u[0], sample).unwrap();
    let m = s.pack_blocking(&c[0], &u[24..25]).unwrap();
    assert_eq!(m.holds, 12);
    // A sampled unit cannot go back into a case.
    let offending = refused(s.pack_blocking(&c[0], &u[..1]));
    assert!(offending[0].1.starts_with("sampled"), "{offending:?}");
    // Taking out what is not inside changes nothing.
    let offending = refused(s.unpack_blocking(&c[0], Some(&u[12..13])));
    assert_eq!(offending[0].1, "not in this parent");
    assert_eq!(s.contents(&c[0]).unwrap().unwrap().1.len(), 12);

    // Cases onto a pallet; no loops.
    s.pack_blocking(&c[3], &c[..2]).unwrap();
    assert_eq!(s.parent_of(&c[0]).unwrap(), Some(c[3].clone()));
    let offending = refused(s.pack_blocking(&c[0], &c[3..4]));
    assert!(offending[0].1.contains("holds it"), "{offending:?}");

    // Emptied whole: its units are loose, its code is used up.
    let m = s.unpack_blocking(&c[1], None).unwrap();
    assert_eq!((m.children, m.holds), (12, 0));
    assert_eq!(s.parent_of(&u[12]).unwrap(), None);
    assert_eq!(
        s.contents(&c[1]).unwrap().unwrap().0.state,
        ParentState::Emptied
    );
    match s.pack_blocking(&c[1], &u[12..13]) {
        Err(StoreError::HierarchyRefused { why, .. }) => {
            assert!(why.contains("used once"), "{why}")
        }
        other => panic!("{other:?}"),
    }

    // Upstream hears each move once, in order, with stable ids.
    let events = s.outbox_peek(usize::MAX).unwrap();
    let moves: Vec<(&str, usize)> = events
        .iter()
        .filter_map(|e| match &e.detail {
            EventDetail::Pack { children } => Some(("pack", children.len())),
            EventDetail::Unpack { children, all } => {
                Some((if *all { "empty" } else { "unpack" }, children.len()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        moves,
        vec![("unpack", 1), ("pack", 1), ("pack", 2), ("empty", 12)],
        "the first two packs were acknowledged with the commits"
    );
    let pack = events
        .iter()
        .find(|e| matches!(&e.detail, EventDetail::Pack { children } if children.len() == 2))
        .unwrap();
    assert_eq!(
        pack.id,
        serialine_store::aggregation_event_id(
            LINE,
            "pack",
            &c[3],
            &[c[1].clone(), c[0].clone()],
            pack.seq,
            pack.at_ms
        )
    );
    // Acknowledged: the parents' own records do not move.
    ack_outbox(s).unwrap();
    assert_eq!(s.state_of(&c[3]).unwrap(), UnitState::Synced);
    assert_eq!(s.recount().unwrap(), s.counts());
}

#[test]
fn the_hierarchy_survives_a_restart() {
    let l = line();
    l.store.pack_blocking(&l.cases[0], &l.units[..12]).unwrap();
    let path = l.store.path().to_path_buf();
    let Line {
        store,
        _dir,
        units,
        cases,
        ..
    } = l;
    drop(store);
    let (store, _) = Store::open(serialine_store::StoreOptions::new(&path, LINE, SECRET)).unwrap();
    assert_eq!(store.parent_of(&units[5]).unwrap(), Some(cases[0].clone()));
    assert_eq!(store.contents(&cases[0]).unwrap().unwrap().1.len(), 12);
    assert_eq!(store.parents().unwrap().len(), 1);
}

/// Issue 15, `--with-children`: a pallet decommissioned with everything
/// on it, all or none.
#[test]
fn a_parent_is_decommissioned_with_its_children_all_or_none() {
    let l = line();
    let (s, u, c) = (&l.store, &l.units, &l.cases);
    s.pack_blocking(&c[0], &u[..12]).unwrap();
    s.pack_blocking(&c[1], &u[12..24]).unwrap();
    s.pack_blocking(&c[3], &c[..2]).unwrap();
    let destroyed = UnitState::Decommissioned(DecommissionReason::Destroyed);
    // Not yet acknowledged upstream: every serial of the tree is named.
    match s.decommission_tree_blocking(&c[3], destroyed) {
        Err(StoreError::HierarchyRefused { offending, .. }) => assert_eq!(offending.len(), 27),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        s.state_of(&u[0]).unwrap(),
        UnitState::Committed,
        "nothing moved"
    );
    // A case on the pallet alone is refused: it is packed.
    ack_outbox(s).unwrap();
    assert!(matches!(
        s.decommission_tree_blocking(&c[0], destroyed),
        Err(StoreError::HierarchyRefused { .. })
    ));
    assert_eq!(s.decommission_tree_blocking(&c[3], destroyed).unwrap(), 27);
    for x in u[..24].iter().chain(&c[..2]).chain(&c[3..4]) {
        assert_eq!(s.state_of(x).unwrap(), destroyed, "{x}");
    }
    assert_eq!(
        s.state_of(&u[24]).unwrap(),
        UnitState::Synced,
        "loose units stay"
    );
    assert_eq!(s.counts().decommissioned, 27);
    assert_eq!(s.recount().unwrap(), s.counts());
}

/// Issue 15's reconciliation per level: committed = in parents + labels +
/// loose, with the parents and children of each level.
#[test]
fn the_job_report_counts_the_hierarchy_per_level() {
    let l = line();
    let (s, u, c) = (&l.store, &l.units, &l.cases);
    s.pack_blocking(&c[0], &u[..12]).unwrap();
    s.pack_blocking(&c[1], &u[12..24]).unwrap();
    s.pack_blocking(&c[3], &c[..2]).unwrap();
    let r = s.job_report(l.job).unwrap();
    let h = r.hierarchy.expect("the job has a hierarchy");
    let levels: Vec<(u32, u64, u64)> = h
        .levels
        .iter()
        .map(|l| (l.level, l.parents, l.children))
        .collect();
    assert_eq!(levels, vec![(1, 2, 24), (2, 1, 2)]);
    assert_eq!((h.units_in_parents, h.labels), (24, 3));
    // 30 units and 4 labels committed: 6 loose units and the unused label.
    assert_eq!(h.loose, 7);
    assert_eq!(
        r.committed + r.synced,
        h.units_in_parents + h.labels + h.loose
    );
}

/// The line's aggregation: a case label sent to the label printer and
/// verified is committed and packed with its units in one batch; a read
/// with one unfit unit leaves the label in flight and packs nothing; a
/// sealed label is never sealed again; a case sealed short is partial.
#[test]
fn a_verified_label_is_sealed_with_its_case_in_one_batch() {
    let l = line();
    let (s, u) = (&l.store, &l.units);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let labels = s.reserve_for(3, &case_gtin()).unwrap();
    let ts: Vec<_> = labels
        .iter()
        .map(|x| Transition::in_job(x.clone(), UnitState::Sent, Some(l.job)))
        .collect();
    for r in s.apply_blocking(&ts) {
        r.unwrap();
    }
    let before = s.counts().committed;
    // The check the line makes before printing names the same reasons.
    let read = vec![u[0].clone(), l.sent_only[0].clone(), u[0].clone()];
    let unfit = s.unfit_children(l.job, &read).unwrap();
    assert_eq!(unfit.len(), 2, "{unfit:?}");
    assert!(unfit[0].1.contains("not committed"), "{unfit:?}");
    assert_eq!(unfit[1].1, "named twice");
    // Refused at the seal: the label stays in flight, nothing is packed.
    let offending = refused(rt.block_on(s.seal_parent(&labels[0], &read, 12)));
    assert_eq!(offending.len(), 2, "{offending:?}");
    assert_eq!(s.state_of(&labels[0]).unwrap(), UnitState::Sent);
    assert_eq!(s.parent_of(&u[0]).unwrap(), None);
    assert_eq!(s.counts().committed, before);
    // A full case: the label committed and the units packed together.
    assert!(s.unfit_children(l.job, &u[..12]).unwrap().is_empty());
    let m = rt
        .block_on(s.seal_parent(&labels[0], &u[..12], 12))
        .unwrap();
    assert_eq!((m.children, m.holds), (12, 12));
    assert_eq!(s.state_of(&labels[0]).unwrap(), UnitState::Committed);
    assert_eq!(s.counts().committed, before + 1);
    let (entry, _) = s.contents(&labels[0]).unwrap().unwrap();
    assert_eq!((entry.expected, entry.partial()), (12, false));
    // Sealed once: the same label again is refused.
    refused(rt.block_on(s.seal_parent(&labels[0], &u[12..14], 12)));
    // The check now names the packed units.
    let unfit = s.unfit_children(l.job, &u[..1]).unwrap();
    assert!(unfit[0].1.starts_with("already in"), "{unfit:?}");
    // A short case at the job's end: partial, and counted as such.
    rt.block_on(s.seal_parent(&labels[1], &u[12..17], 12))
        .unwrap();
    let (entry, _) = s.contents(&labels[1]).unwrap().unwrap();
    assert!(entry.partial());
    let h = s.job_report(l.job).unwrap().hierarchy.unwrap();
    assert_eq!(
        h.levels
            .iter()
            .map(|x| (x.level, x.parents, x.children, x.partial))
            .collect::<Vec<_>>(),
        vec![(1, 2, 17, 1)]
    );
    // Each seal told upstream of the label's commit and of the pack.
    let events = s.outbox_peek(10_000).unwrap();
    let of_label: Vec<_> = events
        .iter()
        .filter(|e| e.serial == labels[0])
        .map(|e| (e.state, matches!(e.detail, EventDetail::Pack { .. })))
        .collect();
    assert_eq!(
        of_label,
        vec![(UnitState::Committed, false), (UnitState::Committed, true)]
    );
}

/// The same move made again (a unit taken out of a case and put back) is
/// a new event upstream, not a redelivery of the first: each has its id.
#[test]
fn a_move_made_again_is_a_new_event() {
    let l = line();
    let (s, u, c) = (&l.store, &l.units, &l.cases);
    s.pack_blocking(&c[0], &u[..2]).unwrap();
    // In, out, and in again: the first and the last are the same move.
    s.pack_blocking(&c[0], &u[2..3]).unwrap();
    s.unpack_blocking(&c[0], Some(&u[2..3])).unwrap();
    s.pack_blocking(&c[0], &u[2..3]).unwrap();
    let ids: Vec<[u8; 32]> = s
        .outbox_peek(10_000)
        .unwrap()
        .iter()
        .filter(|e| e.serial == c[0] && !matches!(e.detail, EventDetail::Unit))
        .map(|e| e.id)
        .collect();
    assert_eq!(ids.len(), 4);
    let distinct: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(distinct.len(), 4, "each move its own id");
}
