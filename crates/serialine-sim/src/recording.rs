//! Byte-level recordings of a simulator's conversation, for replay.
//!
//! One line per chunk, `t_us dir hex`: microseconds since the recorder was
//! created, `rx` (bytes the simulated device received from the driver) or
//! `tx` (bytes it sent), and the bytes as lower-case hex. Plain text so a
//! failing hil-test's recording can be read with `less`, diffed and replayed.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Which way bytes went, seen from the simulated device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Driver → device.
    Rx,
    /// Device → driver.
    Tx,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Direction::Rx => "rx",
            Direction::Tx => "tx",
        }
    }
}

/// Writes a recording; cheap to clone (clones share the file and clock).
#[derive(Debug, Clone)]
pub struct Recorder {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug)]
struct Inner {
    file: File,
    path: PathBuf,
    start: Instant,
    /// First write error, kept so it is reported once, not per chunk.
    failed: bool,
}

impl Recorder {
    pub fn create(path: impl AsRef<Path>) -> Result<Recorder, RecordingError> {
        Recorder::create_at(path, Instant::now())
    }

    /// A recorder whose times count from `start`. Recorders of the devices
    /// of one line share a start, so their recordings merge into one
    /// timeline for a replay (which camera read came after which print).
    pub fn create_at(path: impl AsRef<Path>, start: Instant) -> Result<Recorder, RecordingError> {
        let path = path.as_ref().to_path_buf();
        let file = File::create(&path).map_err(|source| RecordingError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(Recorder {
            inner: Arc::new(Mutex::new(Inner {
                file,
                path,
                start,
                failed: false,
            })),
        })
    }

    /// Appends one chunk. Each line is written whole and unbuffered so the
    /// file is complete up to the last chunk even if the simulator is killed;
    /// at simulated serial rates that costs nothing. A write error is logged
    /// once and recording stops: a full disk must not stop the simulation.
    pub fn record(&self, dir: Direction, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if inner.failed {
            return;
        }
        let t_us = inner.start.elapsed().as_micros();
        let line = format!("{t_us} {} {}\n", dir.as_str(), hex::encode(bytes));
        if let Err(e) = inner.file.write_all(line.as_bytes()) {
            inner.failed = true;
            tracing::warn!(path = %inner.path.display(), error = %e, "recording stopped");
        }
    }
}

/// One recorded chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub t_us: u64,
    pub dir: Direction,
    pub bytes: Vec<u8>,
}

/// A recording loaded back.
#[derive(Debug, Clone, Default)]
pub struct Recording {
    entries: Vec<Entry>,
}

/// Reading or writing a recording failed.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("recording {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("recording {path}, line {line}: {reason}")]
    Parse {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

impl Recording {
    pub fn load(path: impl AsRef<Path>) -> Result<Recording, RecordingError> {
        let path = path.as_ref();
        let io = |source| RecordingError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let mut entries = Vec::new();
        for (i, line) in BufReader::new(file).lines().enumerate() {
            let line = line.map_err(io)?;
            if line.trim().is_empty() {
                continue;
            }
            let entry = parse_entry(&line).map_err(|reason| RecordingError::Parse {
                path: path.to_path_buf(),
                line: i + 1,
                reason,
            })?;
            entries.push(entry);
        }
        Ok(Recording { entries })
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Entry> {
        self.entries.iter()
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// All bytes that went one way, concatenated.
    pub fn bytes(&self, dir: Direction) -> Vec<u8> {
        self.entries
            .iter()
            .filter(|e| e.dir == dir)
            .flat_map(|e| e.bytes.iter().copied())
            .collect()
    }
}

impl<'a> IntoIterator for &'a Recording {
    type Item = &'a Entry;
    type IntoIter = std::slice::Iter<'a, Entry>;
    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter()
    }
}

fn parse_entry(line: &str) -> Result<Entry, String> {
    let mut parts = line.split(' ');
    let (Some(t), Some(dir), Some(hex), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("expected `t_us dir hex`".into());
    };
    let t_us = t
        .parse()
        .map_err(|_| format!("time {t:?} is not microseconds"))?;
    let dir = match dir {
        "rx" => Direction::Rx,
        "tx" => Direction::Tx,
        other => return Err(format!("direction {other:?} is neither rx nor tx")),
    };
    let bytes = hex::decode(hex).map_err(|e| format!("bytes: {e}"))?;
    Ok(Entry { t_us, dir, bytes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_loads_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("rec.txt");
        let r = Recorder::create(&path).expect("create");
        r.record(Direction::Rx, b"\x02P0001|X\x03");
        r.record(Direction::Tx, b"\x06");
        r.clone().record(Direction::Tx, b"");
        let rec = Recording::load(&path).expect("load");
        let e: Vec<_> = rec.iter().collect();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].dir, Direction::Rx);
        assert_eq!(e[0].bytes, b"\x02P0001|X\x03");
        assert!(e[0].t_us <= e[1].t_us);
        assert_eq!(rec.bytes(Direction::Tx), b"\x06");
    }

    #[test]
    fn bad_lines_name_the_line() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("bad.txt");
        std::fs::write(&path, "1 rx 06\n2 up 06\n").expect("write");
        let e = Recording::load(&path)
            .expect_err("bad direction")
            .to_string();
        assert!(e.contains("line 2") && e.contains("\"up\""), "{e}");
        for bad in ["x rx 00", "1 rx 0", "1 rx zz", "1 rx"] {
            assert!(parse_entry(bad).is_err(), "{bad}");
        }
    }
}
