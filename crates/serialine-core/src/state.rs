//! The unit lifecycle of ARCHITECTURE.md as a checked state machine.
//!
//! ```text
//! Available --reserve--> Reserved --send (durable first!)--> Sent --device ack--> Printed
//! Printed --camera match, grade >= min--> Committed --upstream ack--> Synced
//! Printed|Sent --mismatch / no-read / low grade / duplicate--> Rejected
//! Sent (unconfirmed at crash or job end) --reconcile--> Committed | Rejected | Voided
//! Synced --QA pull--> Sampled;  Synced | Sampled --destroyed, damaged, stolen--> Decommissioned
//! Available (never reached a device) --returned upstream unused--> Returned
//! ```
//! Sampling and decommissioning follow the upstream ack of the commit, so
//! upstream always hears of a unit's commissioning before its end.
//! Reserved may also fall back to Available: a reservation is in memory only and
//! nothing reached a device, so handing the serial out later is safe.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a unit was rejected; reported upstream with the decommissioned serial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RejectReason {
    /// The camera read a different code than the one sent.
    Mismatch,
    /// The camera did not read a code in time.
    NoRead,
    /// Read correctly, but the ISO/IEC 15415 grade is below the minimum.
    LowGrade,
    /// The camera read a code that was already committed.
    Duplicate,
    /// The device refused or lost the code (NAK, jam, fault) after it was sent.
    DeviceFault,
}

/// Why a committed unit was pulled from the line for QA (Open-SCS
/// `Sampled`; GS1 CBV bizStep `sampling`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SamplePurpose {
    /// In-process or release testing by QA.
    Qa,
    /// A retention sample kept for the batch's shelf life.
    Retention,
    /// Taken by, or for, an authority.
    Regulatory,
}

impl SamplePurpose {
    pub const ALL: [SamplePurpose; 3] = [
        SamplePurpose::Qa,
        SamplePurpose::Retention,
        SamplePurpose::Regulatory,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            SamplePurpose::Qa => "qa",
            SamplePurpose::Retention => "retention",
            SamplePurpose::Regulatory => "regulatory",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// Why a committed unit was taken out of the supply chain (EU FMD
/// decommissioning; GS1 CBV bizStep `decommissioning` / `destroying`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DecommissionReason {
    Destroyed,
    Damaged,
    Stolen,
}

impl DecommissionReason {
    pub const ALL: [DecommissionReason; 3] = [
        DecommissionReason::Destroyed,
        DecommissionReason::Damaged,
        DecommissionReason::Stolen,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            DecommissionReason::Destroyed => "destroyed",
            DecommissionReason::Damaged => "damaged",
            DecommissionReason::Stolen => "stolen",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl RejectReason {
    pub const ALL: [RejectReason; 5] = [
        RejectReason::Mismatch,
        RejectReason::NoRead,
        RejectReason::LowGrade,
        RejectReason::Duplicate,
        RejectReason::DeviceFault,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            RejectReason::Mismatch => "mismatch",
            RejectReason::NoRead => "no-read",
            RejectReason::LowGrade => "low-grade",
            RejectReason::Duplicate => "duplicate",
            RejectReason::DeviceFault => "device-fault",
        }
    }
}

/// Where one serial stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum UnitState {
    Available,
    Reserved,
    Sent,
    Printed,
    Committed,
    Synced,
    Rejected(RejectReason),
    Voided,
    /// A committed unit pulled for QA; see [`SamplePurpose`].
    Sampled(SamplePurpose),
    /// A committed (or sampled) unit taken out of the supply chain.
    Decommissioned(DecommissionReason),
    /// Never handed to a device, given back upstream unused (Open-SCS
    /// `SNReturnUnallocated`): upstream may issue it again elsewhere, this
    /// line never sends it. Only the ledger's return makes it.
    Returned,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("illegal transition {from} -> {to}")]
pub struct IllegalTransition {
    pub from: UnitState,
    pub to: UnitState,
}

impl UnitState {
    /// Every state, one reject reason standing for all, in lifecycle order.
    pub const KINDS: [UnitState; 11] = [
        UnitState::Available,
        UnitState::Reserved,
        UnitState::Sent,
        UnitState::Printed,
        UnitState::Committed,
        UnitState::Synced,
        UnitState::Rejected(RejectReason::Mismatch),
        UnitState::Voided,
        UnitState::Sampled(SamplePurpose::Qa),
        UnitState::Decommissioned(DecommissionReason::Destroyed),
        UnitState::Returned,
    ];

    /// Terminal states: the serial is never handed to a device again and
    /// its verdict is final (only the after-commit moves, sampling and
    /// decommissioning, may follow Synced).
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            UnitState::Synced
                | UnitState::Rejected(_)
                | UnitState::Voided
                | UnitState::Sampled(_)
                | UnitState::Decommissioned(_)
                | UnitState::Returned
        )
    }

    /// Sampled or Decommissioned: what became of a unit after its commit.
    pub fn is_after_commit(&self) -> bool {
        matches!(self, UnitState::Sampled(_) | UnitState::Decommissioned(_))
    }

    /// The serial has reached (or may have reached) a device and so can never be
    /// handed out again.
    pub fn has_left_pool(&self) -> bool {
        !matches!(self, UnitState::Available | UnitState::Reserved)
    }

    /// An outcome that must be reported upstream through the outbox.
    pub fn is_reportable(&self) -> bool {
        matches!(
            self,
            UnitState::Committed
                | UnitState::Rejected(_)
                | UnitState::Voided
                | UnitState::Sampled(_)
                | UnitState::Decommissioned(_)
                | UnitState::Returned
        )
    }

    /// Sent or Printed: on a device, with no verdict yet.
    pub fn is_in_flight(&self) -> bool {
        matches!(self, UnitState::Sent | UnitState::Printed)
    }

    /// Whether the lifecycle allows `self -> to`.
    pub fn can_move_to(&self, to: UnitState) -> bool {
        use UnitState::*;
        matches!(
            (self, to),
            (Available, Reserved)
                | (Reserved, Available)
                | (Reserved, Sent)
                | (Sent, Printed)
                | (Sent | Printed, Committed)
                | (Sent | Printed, Rejected(_))
                | (Sent | Printed, Voided)
                | (Committed, Synced)
                | (Synced, Sampled(_))
                | (Synced | Sampled(_), Decommissioned(_))
        )
    }

    pub fn transition(self, to: UnitState) -> Result<UnitState, IllegalTransition> {
        if self.can_move_to(to) {
            Ok(to)
        } else {
            Err(IllegalTransition { from: self, to })
        }
    }

    /// Stable one-word name, used in logs, MQTT payloads and counters.
    pub fn name(&self) -> &'static str {
        match self {
            UnitState::Available => "available",
            UnitState::Reserved => "reserved",
            UnitState::Sent => "sent",
            UnitState::Printed => "printed",
            UnitState::Committed => "committed",
            UnitState::Synced => "synced",
            UnitState::Rejected(_) => "rejected",
            UnitState::Voided => "voided",
            UnitState::Sampled(_) => "sampled",
            UnitState::Decommissioned(_) => "decommissioned",
            UnitState::Returned => "returned",
        }
    }

    /// Compact code for storage: stable across versions, so never renumber.
    pub fn code(&self) -> u8 {
        match self {
            UnitState::Available => 0,
            UnitState::Reserved => 1,
            UnitState::Sent => 2,
            UnitState::Printed => 3,
            UnitState::Committed => 4,
            UnitState::Synced => 5,
            UnitState::Rejected(RejectReason::Mismatch) => 16,
            UnitState::Rejected(RejectReason::NoRead) => 17,
            UnitState::Rejected(RejectReason::LowGrade) => 18,
            UnitState::Rejected(RejectReason::Duplicate) => 19,
            UnitState::Rejected(RejectReason::DeviceFault) => 20,
            UnitState::Voided => 32,
            UnitState::Sampled(SamplePurpose::Qa) => 48,
            UnitState::Sampled(SamplePurpose::Retention) => 49,
            UnitState::Sampled(SamplePurpose::Regulatory) => 50,
            UnitState::Decommissioned(DecommissionReason::Destroyed) => 64,
            UnitState::Decommissioned(DecommissionReason::Damaged) => 65,
            UnitState::Decommissioned(DecommissionReason::Stolen) => 66,
            UnitState::Returned => 80,
        }
    }

    pub fn from_code(code: u8) -> Option<UnitState> {
        Some(match code {
            0 => UnitState::Available,
            1 => UnitState::Reserved,
            2 => UnitState::Sent,
            3 => UnitState::Printed,
            4 => UnitState::Committed,
            5 => UnitState::Synced,
            16 => UnitState::Rejected(RejectReason::Mismatch),
            17 => UnitState::Rejected(RejectReason::NoRead),
            18 => UnitState::Rejected(RejectReason::LowGrade),
            19 => UnitState::Rejected(RejectReason::Duplicate),
            20 => UnitState::Rejected(RejectReason::DeviceFault),
            32 => UnitState::Voided,
            48 => UnitState::Sampled(SamplePurpose::Qa),
            49 => UnitState::Sampled(SamplePurpose::Retention),
            50 => UnitState::Sampled(SamplePurpose::Regulatory),
            64 => UnitState::Decommissioned(DecommissionReason::Destroyed),
            65 => UnitState::Decommissioned(DecommissionReason::Damaged),
            66 => UnitState::Decommissioned(DecommissionReason::Stolen),
            80 => UnitState::Returned,
            _ => return None,
        })
    }
}

impl UnitState {
    /// The qualifier of a state that has one: a reject reason, a sample
    /// purpose, a decommissioning reason (what upstream payloads and
    /// exports call `reason`).
    pub fn reason(&self) -> Option<&'static str> {
        match self {
            UnitState::Rejected(r) => Some(r.as_str()),
            UnitState::Sampled(p) => Some(p.as_str()),
            UnitState::Decommissioned(r) => Some(r.as_str()),
            _ => None,
        }
    }

    /// The after-commit state an operator asks for: `sample` with a
    /// [`SamplePurpose`], or `decommission` with a [`DecommissionReason`];
    /// otherwise why not, in words for that operator.
    pub fn after_commit(action: &str, word: &str) -> Result<UnitState, String> {
        match action {
            "sample" => SamplePurpose::parse(word).map(UnitState::Sampled).ok_or_else(|| {
                format!("unknown sample purpose {word:?}; expected qa, retention or regulatory")
            }),
            "decommission" => DecommissionReason::parse(word)
                .map(UnitState::Decommissioned)
                .ok_or_else(|| {
                    format!(
                        "unknown decommissioning reason {word:?}; expected destroyed, damaged or stolen"
                    )
                }),
            other => Err(format!(
                "unknown unit action {other:?}; expected sample or decommission"
            )),
        }
    }

    /// The state [`UnitState::name`] and [`UnitState::reason`] describe.
    pub fn from_name(name: &str, reason: Option<&str>) -> Option<UnitState> {
        use UnitState::*;
        Some(match (name, reason) {
            ("rejected", Some(r)) => Rejected(*RejectReason::ALL.iter().find(|x| x.as_str() == r)?),
            ("sampled", Some(p)) => Sampled(SamplePurpose::parse(p)?),
            ("decommissioned", Some(r)) => Decommissioned(DecommissionReason::parse(r)?),
            (name, None) => [
                Available, Reserved, Sent, Printed, Committed, Synced, Voided, Returned,
            ]
            .into_iter()
            .find(|s| s.name() == name)?,
            _ => return None,
        })
    }
}

impl fmt::Display for UnitState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnitState::Rejected(r) => write!(f, "rejected({})", r.as_str()),
            UnitState::Sampled(p) => write!(f, "sampled({})", p.as_str()),
            UnitState::Decommissioned(r) => write!(f, "decommissioned({})", r.as_str()),
            other => f.write_str(other.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use UnitState::*;

    fn all_states() -> Vec<UnitState> {
        let mut v = vec![
            Available, Reserved, Sent, Printed, Committed, Synced, Voided, Returned,
        ];
        v.extend(RejectReason::ALL.iter().map(|r| Rejected(*r)));
        v.extend(SamplePurpose::ALL.iter().map(|p| Sampled(*p)));
        v.extend(DecommissionReason::ALL.iter().map(|r| Decommissioned(*r)));
        v
    }

    #[test]
    fn happy_path_is_legal() {
        let mut s = Available;
        for next in [Reserved, Sent, Printed, Committed, Synced] {
            s = s.transition(next).unwrap();
        }
        assert_eq!(s, Synced);
    }

    #[test]
    fn after_commit_moves_follow_the_upstream_ack_only() {
        let sample = Sampled(SamplePurpose::Qa);
        let destroy = Decommissioned(DecommissionReason::Destroyed);
        assert!(Synced.can_move_to(sample));
        assert!(Synced.can_move_to(destroy));
        assert!(sample.can_move_to(destroy));
        for from in [
            Sent,
            Printed,
            Committed,
            Voided,
            Rejected(RejectReason::NoRead),
        ] {
            assert!(!from.can_move_to(sample), "{from} -> sampled");
            assert!(!from.can_move_to(destroy), "{from} -> decommissioned");
        }
        assert!(!destroy.can_move_to(sample));
        assert!(!sample.can_move_to(Sampled(SamplePurpose::Retention)));
    }

    #[test]
    fn terminal_states_go_nowhere_but_after_commit() {
        for from in all_states().into_iter().filter(|s| s.is_terminal()) {
            for to in all_states()
                .into_iter()
                .filter(|to| !(to.is_after_commit() && matches!(from, Synced | Sampled(_))))
            {
                assert_eq!(
                    from.transition(to),
                    Err(IllegalTransition { from, to }),
                    "{from} -> {to}"
                );
            }
        }
    }

    #[test]
    fn nothing_returns_to_the_pool_after_sent() {
        for from in all_states().into_iter().filter(|s| s.has_left_pool()) {
            assert!(!from.can_move_to(Available));
            assert!(!from.can_move_to(Reserved));
            assert!(!from.can_move_to(Sent), "{from} -> sent would resend");
        }
    }

    #[test]
    fn codes_round_trip_and_are_unique() {
        let states = all_states();
        for s in &states {
            assert_eq!(UnitState::from_code(s.code()), Some(*s));
        }
        let mut codes: Vec<u8> = states.iter().map(|s| s.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), states.len());
        assert_eq!(UnitState::from_code(99), None);
    }

    #[test]
    fn names_and_reasons_round_trip() {
        for s in all_states() {
            assert_eq!(UnitState::from_name(s.name(), s.reason()), Some(s), "{s}");
        }
        assert_eq!(UnitState::from_name("rejected", None), None);
        assert_eq!(UnitState::from_name("sampled", Some("lunch")), None);
    }

    #[test]
    fn illegal_transition_is_a_typed_error() {
        let e = Available.transition(Committed).unwrap_err();
        assert_eq!(e.to_string(), "illegal transition available -> committed");
    }
}
