//! Line equipment: transports and drivers.
//!
//! Every driver runs as a task that owns its transport; the pipeline talks to
//! it through channels ([`PrinterHandle`], [`CameraHandle`]). A driver never
//! decides to resend a code: after a fault it reports which units' fate is
//! unknown, and the pipeline (with the ledger) decides.

pub mod api;
pub mod camera;
pub mod label;
pub mod laser;
pub mod printer;
mod session;
pub mod transport;

pub use api::*;
