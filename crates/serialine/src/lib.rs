//! The `serialine` service as a library: its configuration and systemd
//! integration. The line itself (pipeline, plan, assembly) is the
//! `serialine-line` crate; the binary (`src/main.rs`) is a thin edge over both.

pub mod config;
pub mod systemd;
