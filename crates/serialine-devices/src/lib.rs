//! Line equipment: transports and drivers.
//!
//! Every driver runs as a task that owns its transport; the pipeline talks to
//! it through channels ([`PrinterHandle`], [`CameraHandle`]). A driver never
//! decides to resend a code: after a fault it reports which units' fate is
//! unknown, and the pipeline (with the ledger) decides.
//!
//! Every driver runs the same connection loop (`session.rs`): connect,
//! report a failed connect once per outage, run a session, report a lost
//! link with its unknown units, back off, reconnect. A driver supplies only
//! its connect and its session.

pub mod api;
pub mod camera;
pub mod label;
pub mod laser;
pub mod printer;
mod session;
pub mod transport;

pub use api::*;
