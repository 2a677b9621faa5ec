//! Printers speaking a framed-ASCII protocol (continuous and thermal
//! inkjets), described by a [`FramedProfile`] from the config.
//!
//! - [`framed`]: the wire format, a pure encoder and never-panicking decoder
//!   (public so fuzz targets and the simulator share them);
//! - [`template`]: message / report templates (`P{id:04}|{code}`);
//! - [`profile`]: the config struct and its validation;
//! - [`spawn`]: the driver task.

pub mod checksum;
mod driver;
pub mod framed;
pub mod profile;
pub mod template;

pub use checksum::Checksum;
pub use driver::spawn;
pub use framed::{encode_frame, Decoded, EncodeError, FrameDecoder, FrameError, Token};
pub use profile::{CompiledProfile, Fnc1, FramedProfile, Framing, ProfileError};
pub use template::{Template, TemplateError};
