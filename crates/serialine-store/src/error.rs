use serialine_core::{BlockError, BlockId, IllegalTransition, Serial, UnitState};
use std::path::PathBuf;

/// Everything the ledger can refuse or fail at. A refused transition changes
/// nothing; an I/O error leaves the last flushed batch intact.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("ledger at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error("ledger at {path} is in use by another process (still locked after {waited:?}); is serialine already running, or a status/export command open on it?")]
    Locked {
        path: PathBuf,
        waited: std::time::Duration,
    },
    #[error("ledger at {path} was written by schema version {found}; this build reads up to {supported}. Run the newer serialine, or restore a backup made by this version")]
    NewerSchema {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("ledger at {path} belongs to line {found:?}, not {expected:?}")]
    WrongLine {
        path: PathBuf,
        expected: String,
        found: String,
    },
    #[error(
        "ledger at {path} was sealed with another line secret; refusing to open it with this one"
    )]
    WrongSecret { path: PathBuf },
    #[error("ledger at {path} is empty, but {marker} says a ledger was created there before: it has been deleted, truncated or replaced. Restore it from backup (it is the only record of what was printed); to start an empty ledger on purpose, losing that record, delete {marker}")]
    Vanished { path: PathBuf, marker: PathBuf },
    #[error("ledger at {path} is damaged: {what}. Stop the line and restore the ledger from backup; do not delete it, it is the only record of what was printed")]
    Corrupt { path: PathBuf, what: String },
    #[error("block rejected: {0}")]
    Block(#[from] BlockError),
    #[error("block {block_id} is already in the ledger (replayed or duplicate)")]
    DuplicateBlock { block_id: BlockId },
    #[error("block {block_id} repeats a serial already issued to this line in block {earlier}")]
    OverlappingBlock { block_id: BlockId, earlier: BlockId },
    #[error("serial {serial}: {source}")]
    Transition {
        serial: Serial,
        #[source]
        source: IllegalTransition,
    },
    #[error("serial {serial} was never issued to this line")]
    NotIssued { serial: Serial },
    #[error("serial {serial} is {state}, not reserved by this process; only a reserved serial may be sent")]
    NotReserved { serial: Serial, state: UnitState },
    #[error("serial {serial} is sent twice in one request")]
    RepeatedInRequest { serial: Serial },
    #[error("ledger at {path}: batch not made durable ({why}); its outcome is unknown until the ledger is reopened")]
    NotDurable { path: PathBuf, why: String },
    #[error("the ledger's committer has stopped; no transition can be made durable")]
    Closed,
    #[error("archive {path}: {why}")]
    Archive { path: PathBuf, why: String },
    #[error("ledger at {path}: no serial can be returned while the fence waits for upstream's answer (a restored or rolled-back ledger may not know every serial it sent); start the service so upstream answers, then return")]
    ReturnWhileFenced { path: PathBuf },
    #[error("parent {parent}: {why}{}", offending_text(offending))]
    HierarchyRefused {
        parent: Serial,
        why: String,
        /// Each offending serial, with why (at most 100 named).
        offending: Vec<(Serial, String)>,
    },
    #[error("fence file {path}: {why}")]
    Fence { path: PathBuf, why: String },
}

fn offending_text(offending: &[(Serial, String)]) -> String {
    if offending.is_empty() {
        return String::new();
    }
    let named: Vec<String> = offending
        .iter()
        .map(|(s, why)| format!("{s} ({why})"))
        .collect();
    format!("; offending: {}", named.join(", "))
}

impl StoreError {
    pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(sled::Error) -> StoreError + '_ {
        move |source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
