//! Archive files: the records of blocks that left the ledger under the
//! retention rule (`Store::archive`), readable by `serialine export` and by
//! anyone with `zstd -d` and a JSON parser.
//!
//! One file per archiving round, `<line>-<UTC time>-<first block id>.jsonl.zst`:
//! zstd-compressed JSON lines, a header line naming the line and the blocks,
//! then one line per serial. A file is written under a `.part` name, synced
//! and renamed, so a file with the final name is whole; the round that wrote
//! it is then removed from the ledger in one batch (`ledger/retention.rs`).

use crate::error::StoreError;
use crate::record::SerialRecord;
use serde::{Deserialize, Serialize};
use serialine_core::{BlockId, Serial, UnitState};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

/// The header's `format`: what the file is, for a reader that finds it alone.
pub const FORMAT: &str = "serialine-ledger-archive";
pub const VERSION: u32 = 1;
/// Archive file names end so; a file without it (a `.part`) is not one.
pub const SUFFIX: &str = ".jsonl.zst";
/// zstd's default level: an archive is written once per round, between jobs.
const LEVEL: i32 = 3;

/// First line of an archive file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveHeader {
    pub format: String,
    pub version: u32,
    pub line: String,
    /// Unix milliseconds when the round was decided (kept when a round
    /// interrupted by a crash is written again, so the file is the same).
    pub created_ms: u64,
    pub blocks: Vec<ArchivedBlock>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedBlock {
    pub block: BlockId,
    pub gtin: String,
    pub serials: u32,
    /// Unix seconds, as upstream sealed it.
    pub issued_at: u64,
}

/// One serial's last record, as the ledger held it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedRecord {
    pub serial: String,
    pub block: BlockId,
    /// `synced`, `rejected` or `voided` (`UnitState::name`).
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub at_ms: u64,
    pub reported: bool,
    #[serde(default)]
    pub fenced: bool,
    /// The ledger's number of the job that sent it; absent for 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub job: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl ArchivedRecord {
    pub fn new(serial: &Serial, r: &SerialRecord) -> Self {
        ArchivedRecord {
            serial: serial.as_str().to_string(),
            block: r.block_id,
            state: r.state.name().to_string(),
            reason: r.state.reason().map(str::to_string),
            at_ms: r.at_ms,
            reported: r.reported,
            fenced: r.fenced,
            job: r.job,
        }
    }

    /// The serial and record it was made from; `None` for a line that names
    /// no state this build knows.
    pub fn record(&self) -> Option<(Serial, SerialRecord)> {
        // Only states a record can end in; an archive never holds others.
        let state = UnitState::from_name(&self.state, self.reason.as_deref())
            .filter(|s| s.is_terminal() || *s == UnitState::Committed)?;
        let serial = Serial::new(&self.serial).ok()?;
        Some((
            serial,
            SerialRecord {
                state,
                reported: self.reported,
                fenced: self.fenced,
                block_id: self.block,
                at_ms: self.at_ms,
                job: self.job,
            },
        ))
    }
}

fn err(path: &Path, why: impl std::fmt::Display) -> StoreError {
    StoreError::Archive {
        path: path.to_path_buf(),
        why: why.to_string(),
    }
}

/// The file name of a round: sortable by time, unique per first block.
pub fn file_name(line: &str, created_ms: u64, first_block: BlockId) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(created_ms);
    let stamp = humantime::format_rfc3339_seconds(t)
        .to_string()
        .replace([':', '-'], "");
    format!("{line}-{stamp}-{first_block}{SUFFIX}")
}

/// Writes `header` and `records` to `dir/name` durably: a `.part` file,
/// synced, renamed over any earlier attempt, and the directory synced.
pub fn write(
    dir: &Path,
    name: &str,
    header: &ArchiveHeader,
    records: impl IntoIterator<Item = ArchivedRecord>,
) -> Result<(PathBuf, u64), StoreError> {
    std::fs::create_dir_all(dir).map_err(|e| err(dir, format!("cannot create it: {e}")))?;
    let path = dir.join(name);
    let part = dir.join(format!("{name}.part"));
    let file = std::fs::File::create(&part).map_err(|e| err(&part, e))?;
    let mut z = zstd::Encoder::new(BufWriter::new(file), LEVEL).map_err(|e| err(&part, e))?;
    json_line(&mut z, header).map_err(|e| err(&part, e))?;
    for r in records {
        json_line(&mut z, &r).map_err(|e| err(&part, e))?;
    }
    let file = z
        .finish()
        .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
        .map_err(|e| err(&part, e))?;
    file.sync_all().map_err(|e| err(&part, e))?;
    let bytes = file.metadata().map_err(|e| err(&part, e))?.len();
    drop(file);
    std::fs::rename(&part, &path).map_err(|e| err(&path, e))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| err(dir, e))?;
    Ok((path, bytes))
}

fn json_line<T: Serialize>(w: &mut impl Write, v: &T) -> std::io::Result<()> {
    serde_json::to_writer(&mut *w, v).map_err(std::io::Error::other)?;
    w.write_all(b"\n")
}

/// One archive file, read whole.
#[derive(Debug)]
pub struct ArchiveFile {
    pub path: PathBuf,
    pub header: ArchiveHeader,
    pub records: Vec<ArchivedRecord>,
}

/// Reads one archive file, checking its header and every line.
pub fn read(path: &Path) -> Result<ArchiveFile, StoreError> {
    let file = std::fs::File::open(path).map_err(|e| err(path, e))?;
    let z = zstd::Decoder::new(file).map_err(|e| err(path, e))?;
    let mut lines = BufReader::new(z).lines();
    let first = lines
        .next()
        .ok_or_else(|| err(path, "empty: no header line"))?
        .map_err(|e| err(path, e))?;
    let header: ArchiveHeader =
        serde_json::from_str(&first).map_err(|e| err(path, format!("header: {e}")))?;
    if header.format != FORMAT || header.version > VERSION {
        return Err(err(
            path,
            format!(
                "header says {} version {}; this build reads {FORMAT} up to version {VERSION}",
                header.format, header.version
            ),
        ));
    }
    let mut records = Vec::new();
    for (i, line) in lines.enumerate() {
        let line = line.map_err(|e| err(path, format!("line {}: {e}", i + 2)))?;
        let r: ArchivedRecord =
            serde_json::from_str(&line).map_err(|e| err(path, format!("line {}: {e}", i + 2)))?;
        records.push(r);
    }
    let expected: u64 = header.blocks.iter().map(|b| u64::from(b.serials)).sum();
    if records.len() as u64 != expected {
        return Err(err(
            path,
            format!(
                "holds {} records, its header lists blocks of {expected} serials",
                records.len()
            ),
        ));
    }
    Ok(ArchiveFile {
        path: path.to_path_buf(),
        header,
        records,
    })
}

/// The archive files of `line` in `dir`, oldest first; none if `dir` does
/// not exist.
pub fn files(dir: &Path, line: &str) -> Result<Vec<PathBuf>, StoreError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(err(dir, e)),
    };
    let prefix = format!("{line}-");
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| err(dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(&prefix) && name.ends_with(SUFFIX) {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// Every archived record of `line` in `dir` whose last transition is at or
/// after `since_ms` and whose state `keep` accepts, file by file.
pub fn records_since(
    dir: &Path,
    line: &str,
    since_ms: u64,
    mut keep: impl FnMut(UnitState) -> bool,
) -> Result<Vec<(Serial, SerialRecord)>, StoreError> {
    let mut out = Vec::new();
    for path in files(dir, line)? {
        let file = read(&path)?;
        if file.header.line != line {
            return Err(err(
                &path,
                format!("belongs to line {:?}, not {line:?}", file.header.line),
            ));
        }
        for (i, r) in file.records.iter().enumerate() {
            let (serial, record) = r.record().ok_or_else(|| {
                err(
                    &path,
                    format!("line {}: state {:?} {:?} unknown", i + 2, r.state, r.reason),
                )
            })?;
            if record.at_ms >= since_ms && keep(record.state) {
                out.push((serial, record));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serialine_core::RejectReason;

    #[test]
    fn a_written_archive_reads_back_and_a_truncated_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let header = ArchiveHeader {
            format: FORMAT.into(),
            version: VERSION,
            line: "line-1".into(),
            created_ms: 1_790_000_000_000,
            blocks: vec![ArchivedBlock {
                block: 7,
                gtin: "09506000134352".into(),
                serials: 2,
                issued_at: 1_789_000_000,
            }],
        };
        let states = [
            UnitState::Synced,
            UnitState::Rejected(RejectReason::LowGrade),
        ];
        let records: Vec<ArchivedRecord> = states
            .iter()
            .zip(["A1", "B2"])
            .map(|(s, serial)| {
                ArchivedRecord::new(
                    &Serial::new(serial).unwrap(),
                    &SerialRecord {
                        state: *s,
                        reported: matches!(s, UnitState::Rejected(_)),
                        fenced: false,
                        block_id: 7,
                        at_ms: 1_789_500_000_000,
                        job: 3,
                    },
                )
            })
            .collect();
        let name = file_name("line-1", header.created_ms, 7);
        assert_eq!(name, "line-1-20260921T141320Z-7.jsonl.zst");
        let (path, _) = write(dir.path(), &name, &header, records.clone()).unwrap();
        let back = read(&path).unwrap();
        assert_eq!(back.header, header);
        assert_eq!(back.records, records);
        let got = records_since(dir.path(), "line-1", 0, |_| true).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].1.state, states[1]);
        assert!(records_since(dir.path(), "line-2", 0, |_| true)
            .unwrap()
            .is_empty());

        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let e = read(&path).unwrap_err().to_string();
        assert!(e.contains(&name), "{e}");
    }
}
