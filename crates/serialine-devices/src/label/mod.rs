//! ZPL II label printers over raw TCP (port 9100).
//!
//! One label per code, rendered from a [`LabelTemplate`] (Data Matrix or QR,
//! optional human-readable line). After sending a label the driver polls
//! `~HS` and reports the unit printed once the receive buffer is empty and
//! no label is left in the batch; paper out, head open, ribbon out and
//! pause are faults. One label is in flight at a time.

mod driver;
pub mod status;
pub mod zpl;

pub use driver::{spawn, spawn_with, LabelError, LabelSettings};
pub use status::{parse_host_status, HostStatus, StatusError};
pub use zpl::{render, LabelTemplate, RenderError, Symbology, TextField};
