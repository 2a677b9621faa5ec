//! Serialine's ledger on `sled`.
//!
//! One ledger per line. It holds the sealed serial blocks the line received,
//! the state of every serial that left the pool, the outbox of outcomes for
//! upstream, and the line's metadata, and it enforces ARCHITECTURE.md's invariants
//! at its single write path:
//!
//! 1. **At most once to a device**: `Sent` is accepted only for a serial that
//!    has no record and that this process reserved, and it is acknowledged only
//!    after the batch holding it is flushed. A second `Sent` is an illegal
//!    transition, in this run or after any crash.
//! 2. **Nothing committed is lost**: `Committed` is acknowledged after flush.
//! 3. **Never reissued**: the pool skips every serial with a record.
//! 4. **One terminal state**: the lifecycle of [`serialine_core::state`] is
//!    checked against the durable record on every move.
//! 5. **Upstream sees each event once**: terminal outcomes enter the outbox in
//!    the same atomic batch, with ids stable across redelivery.
//! 6. **Never reissued after a restore or rollback** (with
//!    [`StoreOptions::fence`]): a fence file outside the ledger directory
//!    holds per-block high-water marks, raised durably before a serial beyond
//!    one is reserved; a ledger found behind its fence voids (flag `fenced`,
//!    reported) what it may have sent, and upstream's handshake answer does
//!    the same ([`Store::fence_upstream_blocking`]). Rules in `fence.rs`.
//!
//! Writes go through one committer thread that batches everything queued into
//! one atomic batch and one flush ([`CommitMode::Group`]).
//!
//! Time to READY after a crash is mostly sled replaying the log written since
//! the ledger was last opened (sled 0.34 writes its snapshot only when
//! opening). [`Store::checkpoint`] closes and reopens the ledger in place to
//! bound that; the daemon calls it between jobs.
//!
//! Retention ([`Store::archive`], rules in `ledger/retention.rs`): blocks
//! whose serials all ended, were reported and are older than a cut-off
//! leave the ledger for zstd JSON-lines files ([`archive`]), so the ledger
//! holds the recent past rather than all of it.
//!
//! Trees: `blocks` (sealed), `cursors` (per-block use), `issued_blocks`
//! (per block with serials left, its serials' keyed hashes, no clear text;
//! see `issued.rs`), `serials` (state records of blocks not settled),
//! `settled` and `runs` (settled blocks' records and the index of their
//! serials, see `ledger/settle.rs`),
//! `inflight` (Sent/Printed index for reconciliation), `outbox_log` (the
//! outbox, events in chunks; schema 6's per-event `outbox` drains), `meta`
//! (schema version, line id, key check, counters, outbox sequence, ledger id),
//! `archived` (per archived block: when, how many serials), `jobs` (per
//! job: product, lot, expiry, start, end; see [`Store::begin_job`]),
//! `journal` (the batch being written, see `Ledger::apply`), and,
//! outside the lifecycle's batches, `nonces` (signed command nonces with
//! their expiry, see [`Store::record_nonce`]).

pub mod archive;
mod committer;
mod error;
mod fence;
pub mod hierarchy;
mod issued;
mod jobs;
mod ledger;
mod nonces;
mod outbox;
mod pool;
mod record;
mod settled;
mod store;

pub use committer::{CommitMode, CommitterClock, BATCH_OPS_METRIC};
pub use error::StoreError;
pub use fence::{FenceReport, CHUNK as FENCE_CHUNK};
pub use jobs::{JobEntry, JobReport};
pub use ledger::{SerialEntry, DEFAULT_CACHE_BYTES, SCHEMA_VERSION};
pub use outbox::{aggregation_event_id, event_id, EventDetail, OutboxEvent};
pub use record::{BlockUse, Counts, SerialRecord};
pub use store::{
    ArchiveOptions, ArchiveReport, BlockPosition, FenceHello, Recovery, ReturnReport,
    ReturnRequest, Store, StoreOptions, Transition, DEFAULT_SERIALS_PER_FILE,
};
