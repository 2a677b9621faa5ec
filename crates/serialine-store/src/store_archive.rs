//! Retention's part of [`Store`]: archiving rounds through the committer.
//! The rules are in `ledger/retention.rs`, the file format in `archive.rs`.

use super::{Store, StoreError};
use crate::committer::{ArchiveRequest, Request};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::oneshot;

/// Most serials one archive file (and one round, during which the
/// committer does nothing else) holds: about a second of work here.
pub const DEFAULT_SERIALS_PER_FILE: u64 = 100_000;

/// What to archive, and where.
#[derive(Debug, Clone)]
pub struct ArchiveOptions {
    /// The line's archive directory; created if missing.
    pub dir: PathBuf,
    /// Only serials whose last transition is older than this.
    pub before: SystemTime,
    /// See [`DEFAULT_SERIALS_PER_FILE`].
    pub serials_per_file: u64,
    /// Fault injection for tests: each round stops after its file is
    /// written, before the ledger changes, as a crash there would.
    #[doc(hidden)]
    pub stop_after_file: bool,
    /// Stop after this many files (0: until nothing is left), so a pause
    /// between jobs is bounded; the rest goes at the next call.
    pub max_files: usize,
}

impl ArchiveOptions {
    pub fn new(dir: impl Into<PathBuf>, before: SystemTime) -> Self {
        ArchiveOptions {
            dir: dir.into(),
            before,
            serials_per_file: DEFAULT_SERIALS_PER_FILE,
            stop_after_file: false,
            max_files: 0,
        }
    }
}

/// What [`Store::archive`] did.
#[derive(Debug, Clone, Default)]
pub struct ArchiveReport {
    pub files: Vec<PathBuf>,
    pub blocks: u64,
    pub serials: u64,
    /// Compressed bytes written.
    pub bytes: u64,
    pub took: Duration,
}

impl Store {
    /// Moves the records of every block whose serials all ended, were
    /// acknowledged upstream and last moved before `opts.before` out of the
    /// ledger into archive files, one round (file) at a time; between rounds
    /// the committer serves everything else. Also finishes a round a crash
    /// interrupted. Call it where the line pauses, as the daemon does between
    /// jobs. Blocks the calling thread: off the async runtime, or through
    /// [`Store::archive`].
    pub fn archive_blocking(&self, opts: &ArchiveOptions) -> Result<ArchiveReport, StoreError> {
        let started = Instant::now();
        let before_ms = opts
            .before
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut report = ArchiveReport::default();
        while opts.max_files == 0 || report.files.len() < opts.max_files {
            let (reply, rx) = oneshot::channel();
            self.inner
                .tx
                .send(Request::Archive(ArchiveRequest {
                    before_ms,
                    dir: opts.dir.clone(),
                    max_serials: opts.serials_per_file.max(1),
                    stop_after_file: opts.stop_after_file,
                    reply,
                }))
                .map_err(|_| StoreError::Closed)?;
            let Some(round) = rx.blocking_recv().map_err(|_| StoreError::Closed)?? else {
                break;
            };
            tracing::info!(
                line = %self.inner.line_id,
                file = %round.path.display(),
                blocks = round.blocks,
                serials = round.serials,
                bytes = round.bytes,
                "archived {} serials of {} blocks to {}",
                round.serials,
                round.blocks,
                round.path.display()
            );
            report.files.push(round.path);
            report.blocks += round.blocks;
            report.serials += round.serials;
            report.bytes += round.bytes;
        }
        report.took = started.elapsed();
        Ok(report)
    }

    /// [`Store::archive_blocking`] on a blocking thread.
    pub async fn archive(&self, opts: ArchiveOptions) -> Result<ArchiveReport, StoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.archive_blocking(&opts))
            .await
            .map_err(|_| StoreError::Closed)?
    }

    /// Blocks archived so far, and their serials.
    pub fn archived_blocks(&self) -> Result<(u64, u64), StoreError> {
        self.read(|r| r.archived_blocks())
    }
}
