//! Hardware-in-loop harness: runs the real `serialine` binary against the
//! simulators (embedded broker, issuer, upstream consumer, framed printer and
//! camera on 127.0.0.1), applies a scenario's fault timeline (SIGKILL and
//! restart, broker outage through a cuttable proxy, device knobs), stops the
//! daemon with SIGTERM and checks ARCHITECTURE.md's invariants over the ledger, the
//! printer's byte recording, the camera's log, the upstream consumer's events
//! and the daemon's logs. A line that packs its units (issue 14,
//! `[aggregation]`) gets label printers, label scanners and case packers too
//! (`packaging.rs`), and the checker's hierarchy rule.
//!
//! Entry point: [`run_scenario`] (a file) or [`run`] (a loaded [`Scenario`]).

pub mod attack;
pub mod binary;
pub mod checker;
pub mod harness;
pub mod monitor;
pub mod multi_line;
mod packaging;
pub mod printer_wire;
pub mod replay;
mod rework;
mod run_parts;
pub mod scenario;

pub use checker::{Report, Violation};
pub use harness::{run, run_scenario, Outcome};
pub use scenario::Scenario;

use std::path::PathBuf;

/// Why the harness could not run a scenario (as opposed to a violation it
/// found, which is part of the [`Outcome`]).
#[derive(Debug, thiserror::Error)]
pub enum HilError {
    #[error("scenario {path}: {message}")]
    Scenario { path: PathBuf, message: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("building the serialine binary failed: {0}")]
    Build(String),
    #[error("simulator: {0}")]
    Sim(String),
    #[error("ledger: {0}")]
    Store(#[from] serialine_store::StoreError),
    #[error("scenario {scenario} (seed {seed}): {message}")]
    Run {
        scenario: String,
        seed: u64,
        message: String,
    },
}

/// Polling period of every bounded wait.
pub const POLL: std::time::Duration = std::time::Duration::from_millis(25);
