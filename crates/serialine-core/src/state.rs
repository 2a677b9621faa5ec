//! The unit lifecycle of ARCHITECTURE.md as a checked state machine.
//!
//! ```text
//! Available --reserve--> Reserved --send (durable first!)--> Sent --device ack--> Printed
//! Printed --camera match, grade >= min--> Committed --upstream ack--> Synced
//! Printed|Sent --mismatch / no-read / low grade / duplicate--> Rejected
//! Sent (unconfirmed at crash or job end) --reconcile--> Committed | Rejected | Voided
//! ```
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("illegal transition {from} -> {to}")]
pub struct IllegalTransition {
    pub from: UnitState,
    pub to: UnitState,
}

impl UnitState {
    /// Every state, one reject reason standing for all, in lifecycle order.
    pub const KINDS: [UnitState; 8] = [
        UnitState::Available,
        UnitState::Reserved,
        UnitState::Sent,
        UnitState::Printed,
        UnitState::Committed,
        UnitState::Synced,
        UnitState::Rejected(RejectReason::Mismatch),
        UnitState::Voided,
    ];

    /// Terminal states: the serial is never handed to a device again.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            UnitState::Synced | UnitState::Rejected(_) | UnitState::Voided
        )
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
            UnitState::Committed | UnitState::Rejected(_) | UnitState::Voided
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
            _ => return None,
        })
    }
}

impl fmt::Display for UnitState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnitState::Rejected(r) => write!(f, "rejected({})", r.as_str()),
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
            Available, Reserved, Sent, Printed, Committed, Synced, Voided,
        ];
        v.extend(RejectReason::ALL.iter().map(|r| Rejected(*r)));
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
    fn terminal_states_go_nowhere() {
        for from in all_states().into_iter().filter(|s| s.is_terminal()) {
            for to in all_states() {
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
    fn illegal_transition_is_a_typed_error() {
        let e = Available.transition(Committed).unwrap_err();
        assert_eq!(e.to_string(), "illegal transition available -> committed");
    }
}
