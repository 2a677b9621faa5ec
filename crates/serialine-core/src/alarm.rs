//! Every alarm Serialine raises, in one vocabulary.
//!
//! The line (pipeline) and the uplink both raise alarms; the uplink publishes
//! them on the `alarms` topic, where [`AlarmKind::as_str`] is the `kind`
//! field. Those strings are a wire format: upstream systems and the hil
//! checker compare them, so a variant's string never changes once shipped.
//!
//! Each variant says when it is raised and what the operator should do.
//! None of them changes the ledger by itself: an alarm reports what the line
//! already did (refused a block, rejected a pack, paused, voided).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// What an alarm is about. Serialised as its kebab-case name
/// ([`AlarmKind::as_str`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AlarmKind {
    // --- raised by the line (marking device, camera, verdicts) ---
    /// `device-fault`: the printer or the camera reported a fault, refused a
    /// unit (rejected as a device fault), or its driver stopped mid-job. A
    /// printer fault pauses the line; units of unknown fate stay `Sent`,
    /// are never resent, and are voided at job end unless a late read
    /// decides them. Operator: check the device named in the message; the
    /// line resumes by itself when the printer reports ready.
    DeviceFault,
    /// `duplicate-read`: the camera read a code that is already committed or
    /// decided (a double trigger, a re-fed pack, an earlier job's pack). The
    /// pack in front of the camera gets a reject signal; no unit is decided.
    /// Operator: take the pack off the line and find how it came back.
    DuplicateRead,
    /// `foreign-code`: the camera read a code this line never issued
    /// (another line's pack, a misread that still parses). Reject signal for
    /// the pack; no unit is decided. Operator: remove the pack; check for
    /// mixed-up material or a neighbouring line in the camera's view.
    ForeignCode,
    /// `low-buffer`: the job has no serial it can use for its product (the
    /// buffer of blocks from upstream is empty for that GTIN); raised when
    /// the line starts waiting and again when it gives up after the starve
    /// timeout and ends the job cleanly. Operator: check upstream's issuer
    /// and the `block-request-failed` alarms.
    LowBuffer,
    /// `malformed-frame`: the camera sent a line that is not a result, or a
    /// read that is not a code of the job's template (often a wrong template
    /// or another symbology); once per burst (first, then every 100th). The
    /// unit read is rejected as a mismatch. Operator: check the camera's
    /// output format and the job's template.
    MalformedFrame,
    /// `render-error`: a serial cannot be rendered with the job's template
    /// (e.g. a plain-text template and a serial holding a parenthesis). That
    /// serial is never sent; it returns to the buffer. Once per serial and
    /// job. Operator: fix the template or the issuer's serial alphabet.
    RenderError,
    /// `not-gs1-symbol`: the camera read a GS1 job's code from a symbol
    /// without FNC1 first (`]d1`, `]d7`, `]Q1`), or a Digital Link job's
    /// from a GS1 symbol: the printer is not in the mode the job needs. The
    /// unit whose serial it carries is rejected (mismatch); one alarm per
    /// such read, naming that serial. Operator: put
    /// the printer's code object in GS1 mode (or out of it), and set the
    /// profile's `fnc1` key to match.
    NotGs1Symbol,

    // --- raised by the store through the line or the uplink ---
    /// `store-error`: the ledger could not read or write (a unit not made
    /// durable and therefore not printed, an ack not recorded, the outbox
    /// unreadable, a checkpoint failing and the ledger closed). Operator:
    /// check the disk; after a failed checkpoint restart serialine.
    StoreError,
    /// `job-unbalanced`: a job ended with units whose outcome the ledger
    /// does not have (still in flight: sent, no verdict), so its
    /// reconciliation does not balance; the message names them. They are
    /// voided at the next start. Operator: find those packs before the batch
    /// is released; `serialine report` shows the job.
    JobUnbalanced,

    // --- raised by the uplink: blocks of serials from upstream ---
    /// `forged-block`: a block whose seal does not authenticate under the
    /// line's key. Refused; nothing changes. Operator: check the issuer's key
    /// for this line, and who publishes on the line's topics.
    ForgedBlock,
    /// `replayed-block`: a block id already stored. Refused; nothing changes.
    /// Operator: usually a redelivery; repeated, check the issuer.
    ReplayedBlock,
    /// `wrong-line-block`: a block sealed for another line. Refused; nothing
    /// changes. Operator: check the issuer's line routing.
    WrongLineBlock,
    /// `overlapping-block`: a block whose serials overlap an earlier block's.
    /// Refused; nothing changes. Operator: the issuer handed out a serial
    /// twice; escalate upstream.
    OverlappingBlock,
    /// `invalid-block`: a block that is not hex, not a sealed block, or fails
    /// another structural check. Refused; nothing changes. Operator: check
    /// the issuer's version and payloads.
    InvalidBlock,
    /// `unsolicited-block`: a `blocks/response` with a correlation id this
    /// line did not ask for (or no longer remembers). Ignored. Operator:
    /// check who else publishes responses on the line's topic.
    UnsolicitedBlock,
    /// `block-request-failed`: upstream answered a block request with an
    /// error. The line retries after a pause. Operator: check the issuer; the
    /// buffer drains meanwhile (see `low-buffer`).
    BlockRequestFailed,
    /// `wrong-product-block`: a stored block sealed for another GTIN than its
    /// request asked for. Kept for that product's jobs, never used for the
    /// running one. Operator: check the issuer's product routing.
    WrongProductBlock,
    /// `oversized-block`: a stored block with more serials than requested;
    /// the buffer may exceed its high-water mark by that block. Operator:
    /// the issuer ignores `serials_wanted`; report upstream.
    OversizedBlock,

    // --- raised by the uplink: messages, commands, connection ---
    /// `malformed-payload`: a message on a command, `events/ack`,
    /// `blocks/response` or `fence/answer` topic that is not valid JSON of
    /// the expected shape. Ignored. Operator: check the sender's version.
    MalformedPayload,
    /// `command-refused`: a command refused before it reached the line:
    /// retained on the broker, unsigned or badly signed while a command key
    /// is configured (a MAC for another line's topic included), stale or
    /// dated in the future, a replayed nonce, or a nonce the ledger could
    /// not record. The reply says why; nothing runs. Operator: check the
    /// sender's key and clock, and clear retained command messages.
    CommandRefused,
    /// `ack-refused`: an `events/ack` refused (unsigned or badly signed while
    /// an ack key is configured, or naming events this line never sent).
    /// Nothing leaves the outbox; the events are published again.
    /// Operator: check upstream's ack key and who publishes acks.
    AckRefused,
    /// `uplink-connect-failed`: raised once connected after attempts that
    /// failed for a reason a retry does not cure (certificate, key, CA,
    /// credentials); names the causes and how often each was seen.
    /// Operator: fix the TLS files or credentials before the next restart.
    UplinkConnectFailed,

    // --- raised by the uplink: the fence handshake ---
    /// `fence-hold`: at start, the store holds (empty ledger, or no fence to
    /// trust) and reserves no serial until upstream answers the fence
    /// hello. Operator: make sure upstream is reachable and answers
    /// `fence/hello`.
    FenceHold,
    /// `fence-invalidated`: upstream's fence answer named serials this ledger
    /// does not remember; they were voided here (and reported) or are
    /// invalidated upstream. Operator: the ledger lost recent history
    /// (restored backup, lost disk); investigate before trusting counts.
    FenceInvalidated,
    /// `aggregation-refused`: a case (or pallet) was not closed: its
    /// multi-code read had a code not read, foreign, or unfit (not
    /// committed, of another job, already in a parent, sampled or
    /// decommissioned), it was short while the line still ran, or its
    /// label was not verified. Each offending code is named with why;
    /// nothing was packed. Operator: rework the case (take out what does
    /// not belong, `serialine pack` by hand or re-scan).
    AggregationRefused,
}

impl AlarmKind {
    /// Every kind, in declaration order.
    pub const ALL: [AlarmKind; 25] = [
        AlarmKind::DeviceFault,
        AlarmKind::DuplicateRead,
        AlarmKind::ForeignCode,
        AlarmKind::LowBuffer,
        AlarmKind::MalformedFrame,
        AlarmKind::RenderError,
        AlarmKind::NotGs1Symbol,
        AlarmKind::StoreError,
        AlarmKind::ForgedBlock,
        AlarmKind::ReplayedBlock,
        AlarmKind::WrongLineBlock,
        AlarmKind::OverlappingBlock,
        AlarmKind::InvalidBlock,
        AlarmKind::UnsolicitedBlock,
        AlarmKind::BlockRequestFailed,
        AlarmKind::WrongProductBlock,
        AlarmKind::OversizedBlock,
        AlarmKind::MalformedPayload,
        AlarmKind::CommandRefused,
        AlarmKind::AckRefused,
        AlarmKind::UplinkConnectFailed,
        AlarmKind::FenceHold,
        AlarmKind::FenceInvalidated,
        AlarmKind::JobUnbalanced,
        AlarmKind::AggregationRefused,
    ];

    /// The name on the wire (`alarms` topic `kind`) and in the logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            AlarmKind::DeviceFault => "device-fault",
            AlarmKind::DuplicateRead => "duplicate-read",
            AlarmKind::ForeignCode => "foreign-code",
            AlarmKind::LowBuffer => "low-buffer",
            AlarmKind::MalformedFrame => "malformed-frame",
            AlarmKind::RenderError => "render-error",
            AlarmKind::NotGs1Symbol => "not-gs1-symbol",
            AlarmKind::StoreError => "store-error",
            AlarmKind::ForgedBlock => "forged-block",
            AlarmKind::ReplayedBlock => "replayed-block",
            AlarmKind::WrongLineBlock => "wrong-line-block",
            AlarmKind::OverlappingBlock => "overlapping-block",
            AlarmKind::InvalidBlock => "invalid-block",
            AlarmKind::UnsolicitedBlock => "unsolicited-block",
            AlarmKind::BlockRequestFailed => "block-request-failed",
            AlarmKind::WrongProductBlock => "wrong-product-block",
            AlarmKind::OversizedBlock => "oversized-block",
            AlarmKind::MalformedPayload => "malformed-payload",
            AlarmKind::CommandRefused => "command-refused",
            AlarmKind::AckRefused => "ack-refused",
            AlarmKind::UplinkConnectFailed => "uplink-connect-failed",
            AlarmKind::FenceHold => "fence-hold",
            AlarmKind::FenceInvalidated => "fence-invalidated",
            AlarmKind::JobUnbalanced => "job-unbalanced",
            AlarmKind::AggregationRefused => "aggregation-refused",
        }
    }
}

impl fmt::Display for AlarmKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no alarm kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown alarm kind {0:?}")]
pub struct UnknownAlarmKind(pub String);

impl FromStr for AlarmKind {
    type Err = UnknownAlarmKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AlarmKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownAlarmKind(s.to_string()))
    }
}

// By hand rather than derived, so `as_str` stays the one place that spells
// a kind and serde cannot drift from the logs.
impl Serialize for AlarmKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for AlarmKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wire names as shipped: a change here breaks upstream systems
    /// and the hil checker.
    #[test]
    fn wire_names_are_the_shipped_ones() {
        let names: Vec<&str> = AlarmKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "device-fault",
                "duplicate-read",
                "foreign-code",
                "low-buffer",
                "malformed-frame",
                "render-error",
                "not-gs1-symbol",
                "store-error",
                "forged-block",
                "replayed-block",
                "wrong-line-block",
                "overlapping-block",
                "invalid-block",
                "unsolicited-block",
                "block-request-failed",
                "wrong-product-block",
                "oversized-block",
                "malformed-payload",
                "command-refused",
                "ack-refused",
                "uplink-connect-failed",
                "fence-hold",
                "fence-invalidated",
                "job-unbalanced",
                "aggregation-refused",
            ]
        );
    }

    #[test]
    fn names_are_unique_kebab_case_and_parse_back() {
        let mut seen = std::collections::HashSet::new();
        for k in AlarmKind::ALL {
            let s = k.as_str();
            assert!(seen.insert(s), "{s} twice");
            assert!(
                s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !s.starts_with('-')
                    && !s.ends_with('-'),
                "{s}"
            );
            assert_eq!(s.parse::<AlarmKind>(), Ok(k));
            assert_eq!(k.to_string(), s);
        }
        assert!("buffer-empty".parse::<AlarmKind>().is_err());
    }

    #[test]
    fn every_variant_is_listed_in_all() {
        // A variant missing from ALL could be raised but never parsed back.
        // This match stops compiling when a variant is added: whoever adds
        // it is sent here, next to ALL and the wire-name list above.
        for k in AlarmKind::ALL {
            match k {
                AlarmKind::DeviceFault
                | AlarmKind::DuplicateRead
                | AlarmKind::ForeignCode
                | AlarmKind::LowBuffer
                | AlarmKind::MalformedFrame
                | AlarmKind::RenderError
                | AlarmKind::NotGs1Symbol
                | AlarmKind::StoreError
                | AlarmKind::ForgedBlock
                | AlarmKind::ReplayedBlock
                | AlarmKind::WrongLineBlock
                | AlarmKind::OverlappingBlock
                | AlarmKind::InvalidBlock
                | AlarmKind::UnsolicitedBlock
                | AlarmKind::BlockRequestFailed
                | AlarmKind::WrongProductBlock
                | AlarmKind::OversizedBlock
                | AlarmKind::MalformedPayload
                | AlarmKind::CommandRefused
                | AlarmKind::AckRefused
                | AlarmKind::UplinkConnectFailed
                | AlarmKind::FenceHold
                | AlarmKind::FenceInvalidated
                | AlarmKind::JobUnbalanced
                | AlarmKind::AggregationRefused => {}
            }
        }
        let unique: std::collections::HashSet<_> = AlarmKind::ALL.into_iter().collect();
        assert_eq!(unique.len(), AlarmKind::ALL.len());
    }
}
