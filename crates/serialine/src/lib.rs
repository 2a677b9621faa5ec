//! The `serialine` daemon as a library: configuration now; the pipeline,
//! CLI handlers and systemd integration join it as they are built. The binary
//! (`src/main.rs`) is a thin edge over this crate.

pub mod config;
pub mod health;
pub mod pipeline;
pub mod systemd;
