//! Property test: random sequences of reservations, transitions, upstream
//! acknowledgments and restarts, run against the real ledger and against a
//! model of ARCHITECTURE.md's lifecycle. Every answer the ledger gives must be the
//! model's, and its counters must always match its records.

mod common;

use common::*;
use proptest::prelude::*;
use serialine_core::{RejectReason, SamplePurpose, Serial, UnitState};
use serialine_store::{ReturnRequest, Store, StoreError};
use std::collections::{HashMap, HashSet};

const SERIALS: u32 = 6;

#[derive(Debug, Clone)]
enum Step {
    Reserve(usize),
    Release(usize),
    Move(usize, UnitState),
    Ack(usize),
    Reopen,
    /// `Store::checkpoint`: the ledger is closed and reopened under the handle.
    Checkpoint,
    /// `Store::return_unused`: every serial neither recorded nor reserved
    /// goes back upstream (issue 15).
    Return,
    /// Upstream acknowledges everything, then a checkpoint: a block whose
    /// serials all ended settles there (issue 16, `ledger/settle.rs`), and
    /// the steps after it read and move its serials in the settled form.
    Settle,
}

fn any_state() -> impl Strategy<Value = UnitState> {
    prop_oneof![
        Just(UnitState::Available),
        Just(UnitState::Reserved),
        Just(UnitState::Sent),
        Just(UnitState::Printed),
        Just(UnitState::Committed),
        Just(UnitState::Synced),
        Just(UnitState::Voided),
        Just(UnitState::Returned),
        Just(UnitState::Sampled(SamplePurpose::Qa)),
        proptest::sample::select(RejectReason::ALL.to_vec()).prop_map(UnitState::Rejected),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    // Index SERIALS is a foreign serial, never issued.
    let idx = 0..=SERIALS as usize;
    prop_oneof![
        2 => (0..4usize).prop_map(Step::Reserve),
        1 => idx.clone().prop_map(Step::Release),
        6 => (idx, any_state()).prop_map(|(i, s)| Step::Move(i, s)),
        1 => (0..4usize).prop_map(Step::Ack),
        1 => Just(Step::Reopen),
        1 => Just(Step::Checkpoint),
        1 => Just(Step::Return),
        1 => Just(Step::Settle),
    ]
}

#[derive(Default)]
struct Model {
    /// Durable states; absent = Available.
    state: HashMap<Serial, UnitState>,
    reserved: HashSet<Serial>,
    /// Outbox: (serial, state) in order.
    outbox: Vec<(Serial, UnitState)>,
    ever_sent: HashSet<Serial>,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn ledger_follows_the_lifecycle_model(steps in proptest::collection::vec(step(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let universe: Vec<Serial> = serials("M", 0..SERIALS + 1);
        let issued = &universe[..SERIALS as usize];
        let mut store = Some(open(dir.path()).0);
        store.as_ref().unwrap()
            .add_block_blocking(&sealed_block(1, LINE, SECRET, issued.to_vec()))
            .unwrap();
        let mut m = Model::default();

        for step in steps {
            let s: &Store = store.as_ref().unwrap();
            match step {
                Step::Reserve(n) => {
                    let got = s.reserve(n).unwrap();
                    let free = issued.iter()
                        .filter(|x| !m.state.contains_key(*x) && !m.reserved.contains(*x))
                        .count();
                    prop_assert_eq!(got.len(), n.min(free));
                    for x in got {
                        prop_assert!(!m.state.contains_key(&x), "{} handed out again", x);
                        prop_assert!(m.reserved.insert(x));
                    }
                }
                Step::Release(i) => {
                    s.release(&[universe[i].clone()]);
                    m.reserved.remove(&universe[i]);
                }
                Step::Move(i, to) => {
                    let x = &universe[i];
                    let got = s.transition_blocking(x, to);
                    let foreign = i == SERIALS as usize;
                    let from = m.state.get(x).copied();
                    let expect_ok = !foreign && match from {
                        None => to == UnitState::Sent && m.reserved.contains(x),
                        Some(f) => f.can_move_to(to),
                    };
                    if to == UnitState::Sent {
                        // Asking to send consumes the reservation either way.
                        m.reserved.remove(x);
                    }
                    prop_assert_eq!(got.is_ok(), expect_ok, "{} {:?} -> {}: {:?}", x, from, to, got);
                    if foreign {
                        let not_issued = matches!(got, Err(StoreError::NotIssued { .. }));
                        prop_assert!(not_issued, "foreign serial: {:?}", got);
                    }
                    if expect_ok {
                        if to == UnitState::Sent {
                            prop_assert!(m.ever_sent.insert(x.clone()), "{} sent twice", x);
                        }
                        m.state.insert(x.clone(), to);
                        if to.is_reportable() {
                            m.outbox.push((x.clone(), to));
                        }
                    }
                }
                Step::Settle => {
                    let events = s.outbox_peek(usize::MAX).unwrap();
                    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
                    prop_assert_eq!(s.outbox_ack_blocking(&seqs).unwrap(), m.outbox.len());
                    for (x, st) in m.outbox.drain(..) {
                        if st == UnitState::Committed && m.state.get(&x) == Some(&UnitState::Committed) {
                            m.state.insert(x, UnitState::Synced);
                        }
                    }
                    s.checkpoint_blocking().unwrap();
                }
                Step::Ack(n) => {
                    let events = s.outbox_peek(n).unwrap();
                    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
                    let acked = s.outbox_ack_blocking(&seqs).unwrap();
                    prop_assert_eq!(acked, n.min(m.outbox.len()));
                    for (x, st) in m.outbox.drain(..acked) {
                        if st == UnitState::Committed && m.state.get(&x) == Some(&UnitState::Committed) {
                            m.state.insert(x, UnitState::Synced);
                        }
                    }
                }
                Step::Return => {
                    let req = ReturnRequest { gtin: None, job: 0 };
                    let got = s.return_unused_blocking(&req).unwrap();
                    let back: Vec<Serial> = issued.iter()
                        .filter(|x| !m.state.contains_key(*x) && !m.reserved.contains(*x))
                        .cloned()
                        .collect();
                    prop_assert_eq!(got.serials, back.len() as u64);
                    prop_assert_eq!(got.kept_reserved, m.reserved.len() as u64);
                    if let Some(first) = back.first() {
                        // One block of 6: one event, named by its first serial.
                        m.outbox.push((first.clone(), UnitState::Returned));
                    }
                    for x in back {
                        m.state.insert(x, UnitState::Returned);
                    }
                }
                // Unlike a reopen, the handle (and its reservations) lives on.
                Step::Checkpoint => {
                    store.as_ref().unwrap().checkpoint_blocking().unwrap();
                }
                Step::Reopen => {
                    drop(store.take());
                    let (reopened, recovery) = open(dir.path());
                    let in_flight: HashSet<Serial> = recovery.in_flight.into_iter().map(|(x, _)| x).collect();
                    let expected: HashSet<Serial> = m.state.iter()
                        .filter(|(_, st)| st.is_in_flight())
                        .map(|(x, _)| x.clone())
                        .collect();
                    prop_assert_eq!(in_flight, expected);
                    store = Some(reopened);
                    m.reserved.clear();
                }
            }
            let s = store.as_ref().unwrap();
            prop_assert_eq!(s.counts(), s.recount().unwrap());
            prop_assert_eq!(s.outbox_depth(), m.outbox.len());
            for x in issued {
                let want = match m.state.get(x) {
                    Some(st) => *st,
                    None if m.reserved.contains(x) => UnitState::Reserved,
                    None => UnitState::Available,
                };
                prop_assert_eq!(s.state_of(x).unwrap(), want, "{}", x);
            }
        }
    }
}
