//! Serialine's domain, free of I/O.
//!
//! Everything the daemon decides about a serial is decided here: what a valid
//! serial, GTIN, lot and expiry are ([`serial`], [`gtin`], [`job`]), which
//! lifecycle moves are legal ([`state`]), how a block of serials is sealed for
//! transport and storage ([`block`]), how a code is rendered onto the product and
//! parsed back from a camera read ([`code`]), how an issuer draws
//! non-sequential serials ([`serialgen`]), and which alarms the line raises
//! ([`alarm`]). The store, the devices and the uplink only carry out these
//! decisions.

pub mod alarm;
pub mod block;
pub mod code;
pub mod epcis;
pub mod grade;
pub mod gtin;
pub mod job;
mod job_fields;
pub mod serial;
pub mod serialgen;
pub mod state;

pub use alarm::AlarmKind;
pub use block::{Block, BlockError, BlockId, BlockKey, SealedBlock};
pub use code::{CodeData, CodeError, Template};
pub use grade::Grade;
pub use gtin::{Gtin, GtinError};
pub use job::{Expiry, Job, JobError, Lot};
pub use serial::{Serial, SerialError};
pub use serialgen::{SerialGenError, SerialGenerator};
pub use state::{DecommissionReason, IllegalTransition, RejectReason, SamplePurpose, UnitState};
