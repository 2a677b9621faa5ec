//! The fence: what the ledger cannot roll back with it.
//!
//! A ledger restored from a backup, or a storage layer that comes back with
//! an earlier durable state, has forgotten serials it already sent: their
//! blocks still list them as unused. The fence is a small file kept outside
//! the ledger's directory (`StoreOptions::fence`) holding, per block, a
//! high-water mark of the positions (index in the block) that may have left
//! the pool. Invariants, enforced here and only here:
//!
//! 1. No serial at a position at or above its block's mark is handed out by
//!    [`crate::Store::reserve`] before the mark is raised above it durably
//!    (temp file, fsync, rename, fsync of the directory). Marks are raised
//!    [`CHUNK`] positions ahead, so a fsync is paid once per chunk, not per unit.
//! 2. On open, unless the fence says the last run closed this very ledger
//!    cleanly (same ledger identity and same digest of every block cursor),
//!    every serial below its block's mark that the ledger holds no record for
//!    is voided for good, flagged `fenced`, and reported upstream through the
//!    outbox (state `voided`, reason `fenced`). After a crash this wastes at
//!    most [`CHUNK`] serials per block in use; after a restore it is what
//!    keeps the lost history's serials from being printed twice.
//! 3. Upstream's answer to the start-up handshake (`serialine-uplink`,
//!    `fence/hello`) is a second fence: serials below what upstream has seen
//!    of a block are voided the same way ([`crate::Store::fence_upstream_blocking`]).
//! 4. Without a fence to trust (the file is missing or belongs to another
//!    ledger identity) or with an empty ledger (no block yet: a new line, a
//!    wiped state directory, a re-imaged controller), the store holds:
//!    nothing is reserved and the uplink requests no block until upstream
//!    has answered the handshake ([`crate::Store::fence_holding`]).

use crate::error::StoreError;
use crate::ledger::{Ledger, Op, SerialEntry};
use crate::record::BlockUse;
use serialine_core::{BlockId, Serial};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

/// How far ahead of the last position handed out a mark is raised.
pub const CHUNK: u32 = 64;

const MAGIC: &str = "serialine fence v1";

/// The fence file's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FenceFile {
    pub line: String,
    pub ledger_id: [u8; 16],
    /// Set only by a clean close: blake3 of every block cursor at that moment.
    pub clean: Option<[u8; 32]>,
    /// Block id -> positions `0..mark` may have left the pool.
    pub marks: BTreeMap<BlockId, u32>,
}

impl FenceFile {
    fn encode(&self) -> String {
        let mut s = format!(
            "{MAGIC}\nline {}\nledger {}\nclean {}\n",
            self.line,
            hex::encode(self.ledger_id),
            self.clean.map_or_else(|| "-".to_string(), hex::encode)
        );
        for (b, m) in &self.marks {
            s.push_str(&format!("block {b} {m}\n"));
        }
        s.push_str("end\n");
        s
    }

    /// Strict: a fence that does not parse is not trusted (the caller refuses
    /// to start rather than guess how far the line got).
    fn decode(text: &str) -> Result<FenceFile, String> {
        let mut lines = text.lines();
        if lines.next() != Some(MAGIC) {
            return Err(format!("first line is not {MAGIC:?}"));
        }
        let mut field = |name: &str| -> Result<String, String> {
            let l = lines.next().ok_or_else(|| format!("{name} missing"))?;
            l.strip_prefix(name)
                .and_then(|r| r.strip_prefix(' '))
                .map(str::to_string)
                .ok_or_else(|| format!("expected {name:?}, found {l:?}"))
        };
        let line = field("line")?;
        let ledger_id = hex::decode(field("ledger")?)
            .ok()
            .and_then(|v| <[u8; 16]>::try_from(v).ok())
            .ok_or("ledger id is not 32 hex digits")?;
        let clean = match field("clean")?.as_str() {
            "-" => None,
            h => Some(
                hex::decode(h)
                    .ok()
                    .and_then(|v| <[u8; 32]>::try_from(v).ok())
                    .ok_or("clean digest is not 64 hex digits")?,
            ),
        };
        let mut marks = BTreeMap::new();
        let mut ended = false;
        for l in lines {
            if l == "end" {
                ended = true;
                break;
            }
            let mut it = l.split(' ');
            let parsed = match (it.next(), it.next(), it.next(), it.next()) {
                (Some("block"), Some(b), Some(m), None) => b.parse().ok().zip(m.parse().ok()),
                _ => None,
            };
            let (b, m) = parsed.ok_or_else(|| format!("unreadable line {l:?}"))?;
            marks.insert(b, m);
        }
        if !ended {
            return Err("truncated (no \"end\" line)".into());
        }
        Ok(FenceFile {
            line,
            ledger_id,
            clean,
            marks,
        })
    }
}

fn fence_err(path: &Path, why: impl Into<String>) -> StoreError {
    StoreError::Fence {
        path: path.to_path_buf(),
        why: why.into(),
    }
}

fn read(path: &Path) -> Result<Option<FenceFile>, StoreError> {
    match std::fs::read_to_string(path) {
        Ok(text) => FenceFile::decode(&text).map(Some).map_err(|why| {
            fence_err(
                path,
                format!("{why}. It is the line's guard against reissuing serials after a restore; fix or restore it (do not delete it unless upstream can answer the start-up handshake)"),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(fence_err(path, format!("cannot read: {e}"))),
    }
}

/// Replaces the file atomically and durably: temp file, fsync, rename,
/// fsync of the directory. Only then may a serial below a new mark go out.
fn write(path: &Path, f: &FenceFile) -> Result<(), StoreError> {
    let io = |what: &str, e: std::io::Error| fence_err(path, format!("{what}: {e}"));
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| io("creating its directory", e))?;
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let mut file = std::fs::File::create(&tmp).map_err(|e| io("creating the temp file", e))?;
    file.write_all(f.encode().as_bytes())
        .map_err(|e| io("writing", e))?;
    file.sync_all().map_err(|e| io("fsync", e))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(|e| io("rename", e))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("fsync of its directory", e))
}

fn digest(cursors: &[(BlockId, BlockUse)]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"serialine fence cursors v1\0");
    for (b, u) in cursors {
        h.update(&b.to_be_bytes());
        h.update(&u.encode());
    }
    *h.finalize().as_bytes()
}

/// The fence while the store is open.
pub(crate) struct FenceState {
    pub path: PathBuf,
    pub file: FenceFile,
    /// Block position of each serial in the pool's window that was never
    /// handed out in this process. A serial handed out and given back is
    /// absent: its position was checked the first time.
    pub positions: HashMap<Serial, (BlockId, u32)>,
    /// Serials per block, to cap marks.
    pub sizes: HashMap<BlockId, u32>,
    /// Blocks whose positions were indexed in this process.
    pub indexed: std::collections::HashSet<BlockId>,
    /// Wait for upstream's handshake before anything is reserved or requested.
    pub hold: bool,
    /// Upstream answered the handshake.
    pub confirmed: bool,
}

/// What opening the fence did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FenceReport {
    /// Serials voided because the fence is ahead of the ledger.
    pub voided: usize,
    /// Why the store holds until upstream answers, if it does.
    pub hold: Option<String>,
}

/// Opens the fence beside `ledger`: voids what it must (point 2), decides
/// whether to hold (point 4), and leaves the file marked not clean before
/// anything can be reserved.
pub(crate) fn open(
    ledger: &mut Ledger,
    path: &Path,
) -> Result<(FenceState, FenceReport), StoreError> {
    if path.starts_with(&ledger.path) {
        return Err(fence_err(
            path,
            format!(
                "it is inside the ledger directory {}: it must be outside it, or a restored ledger brings its fence back with it",
                ledger.path.display()
            ),
        ));
    }
    let ledger_id = ledger.ledger_id()?;
    let cursors = ledger.cursors()?;
    let found = read(path)?;
    let mut report = FenceReport::default();
    let mut file = match found {
        Some(f) if f.line != ledger.line_id => {
            return Err(fence_err(
                path,
                format!("belongs to line {:?}, not {:?}", f.line, ledger.line_id),
            ))
        }
        Some(f) => f,
        None => {
            report.hold = Some("no fence file: how far this line got is unknown".into());
            FenceFile {
                line: ledger.line_id.clone(),
                ledger_id,
                clean: None,
                marks: BTreeMap::new(),
            }
        }
    };
    if file.ledger_id != ledger_id {
        report.hold = Some(format!(
            "the fence was written for ledger {}, this ledger is {}: it was replaced",
            hex::encode(file.ledger_id),
            hex::encode(ledger_id)
        ));
    }
    if cursors.is_empty() && report.hold.is_none() {
        report.hold = Some("the ledger holds no block".into());
    }
    let clean = file.ledger_id == ledger_id && file.clean == Some(digest(&cursors));
    if !clean {
        let mut ops = Vec::new();
        for (block_id, usage) in &cursors {
            let mark = file.marks.get(block_id).copied().unwrap_or(0);
            if mark == 0 || usage.remaining() == 0 {
                continue;
            }
            let block = ledger.open_block(*block_id)?;
            for serial in block.serials.into_iter().take(mark as usize) {
                if !ledger.has_record(&serial)? {
                    ops.push(Op::Fence {
                        serial,
                        block: *block_id,
                    });
                }
            }
        }
        if !ops.is_empty() {
            for r in ledger.apply(&ops)? {
                r?;
            }
            ledger.flush()?;
            report.voided = ops.len();
            tracing::warn!(
                fence = %path.display(),
                voided = ops.len(),
                "fence: the ledger is behind its fence (restored, rolled back, or a crash); serials that may have been sent are voided and reported, never reserved"
            );
        }
    }
    file.ledger_id = ledger_id;
    file.clean = None;
    write(path, &file)?;
    let hold = report.hold.is_some();
    Ok((
        FenceState {
            path: path.to_path_buf(),
            file,
            positions: HashMap::new(),
            sizes: cursors.iter().map(|(b, u)| (*b, u.count)).collect(),
            indexed: Default::default(),
            hold,
            confirmed: false,
        },
        report,
    ))
}

impl FenceState {
    /// The store holds reservations and block requests.
    pub fn holding(&self) -> bool {
        self.hold && !self.confirmed
    }

    /// A block entered the pool's window: remember where each serial sits.
    pub fn loaded(&mut self, block_id: BlockId, count: u32, serials: &[(Serial, u32)]) {
        self.sizes.insert(block_id, count);
        for (s, pos) in serials {
            self.positions.insert(s.clone(), (block_id, *pos));
        }
    }

    /// Point 1: before `taken` leave the store, every mark is above them.
    pub fn before_hand_out(&mut self, taken: &[Serial]) -> Result<(), StoreError> {
        let mut raise: HashMap<BlockId, u32> = HashMap::new();
        for s in taken {
            if let Some(&(b, pos)) = self.positions.get(s) {
                if pos >= self.file.marks.get(&b).copied().unwrap_or(0) {
                    let r = raise.entry(b).or_default();
                    *r = (*r).max(pos + 1);
                }
            }
        }
        if !raise.is_empty() {
            let mut next = self.file.clone();
            for (b, needed) in raise {
                let size = self.sizes.get(&b).copied().unwrap_or(u32::MAX);
                next.marks
                    .insert(b, needed.saturating_add(CHUNK).min(size).max(needed));
            }
            write(&self.path, &next)?;
            self.file = next;
        }
        for s in taken {
            self.positions.remove(s);
        }
        Ok(())
    }

    /// Raises marks to at least `seen` (point 3), durably.
    pub fn raise_to(&mut self, seen: &[(BlockId, u32)]) -> Result<(), StoreError> {
        let mut next = self.file.clone();
        let mut changed = false;
        for &(b, s) in seen {
            let m = next.marks.entry(b).or_default();
            if s > *m {
                *m = s;
                changed = true;
            }
        }
        if changed {
            write(&self.path, &next)?;
            self.file = next;
        }
        Ok(())
    }

    /// A clean close: the next open of this very ledger voids nothing.
    pub fn close_clean(&mut self, ledger: &Ledger) {
        let outcome = ledger.cursors().and_then(|c| {
            let mut next = self.file.clone();
            next.clean = Some(digest(&c));
            write(&self.path, &next)
        });
        if let Err(e) = outcome {
            tracing::warn!(error = %e, "fence: not marked clean; the next start voids the serials below its marks that were never sent");
        }
    }

    pub fn mark(&self, block_id: BlockId) -> u32 {
        self.file.marks.get(&block_id).copied().unwrap_or(0)
    }
}

/// Serials of `block_id` at positions `< seen` that have no record and are
/// not reserved right now, for [`Op::Fence`].
pub(crate) fn unrecorded_below(
    ledger: &Ledger,
    block_id: BlockId,
    seen: u32,
    reserved: impl Fn(&Serial) -> bool,
) -> Result<Vec<Serial>, StoreError> {
    let block = ledger.open_block(block_id)?;
    let mut out = Vec::new();
    for serial in block.serials.into_iter().take(seen as usize) {
        if matches!(ledger.entry(&serial)?, SerialEntry::Available { .. }) && !reserved(&serial) {
            out.push(serial);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fence_file_round_trips_and_refuses_garbage() {
        let f = FenceFile {
            line: "line-1".into(),
            ledger_id: [7; 16],
            clean: Some([9; 32]),
            marks: [(1, 256), (2, 10)].into_iter().collect(),
        };
        assert_eq!(FenceFile::decode(&f.encode()), Ok(f.clone()));
        let dirty = FenceFile { clean: None, ..f };
        assert_eq!(FenceFile::decode(&dirty.encode()), Ok(dirty.clone()));
        let text = dirty.encode();
        // Truncated (a torn write the rename should make impossible).
        assert!(FenceFile::decode(&text[..text.len() - 4]).is_err());
        assert!(FenceFile::decode("").is_err());
        assert!(FenceFile::decode(&text.replace("block 1 256", "block x 256")).is_err());
        assert!(FenceFile::decode(&text.replace("ledger 07", "ledger zz")).is_err());
    }
}
