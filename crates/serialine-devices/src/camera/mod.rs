//! Camera (code verifier) result readers: one result per line, over a serial
//! port or TCP, in a format described by a [`CameraProfile`].
//!
//! - [`format`]: the profile, its line template and [`parse_line`] (pure,
//!   never panics; public for fuzz targets and the simulator);
//! - [`spawn`]: the driver task.

mod driver;
pub mod format;

pub use driver::spawn;
pub use format::{
    parse_line, CameraProfile, CameraProfileError, LineError, LineFormat, ParseLineError,
};
