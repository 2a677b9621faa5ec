//! Plays recorded device sessions back against a live driver, byte for byte.
//!
//! A session is one [`Recording`] per device of a line (a printer and its
//! camera, say), recorded with one clock ([`Recorder::create_at`]) so they
//! merge into one timeline. The replayer stands where the devices stood and
//! walks that timeline in order:
//! - a `tx` chunk (the device spoke) is written to the driver as recorded;
//! - an `rx` chunk (the driver spoke) is awaited: the driver must send those
//!   bytes, compared byte for byte at their offset in the device's stream.
//!
//! Only the order of the timeline matters, not its times: the replay runs as
//! fast as the driver answers. That is deterministic because the driver's
//! output depends on what it was told and in which order, not on when;
//! recorded chunk boundaries are not compared (a driver may write a frame in
//! one or three writes), only the byte streams.
//!
//! Where a scenario expects the driver to differ (a session recorded on a
//! real line with other serials), it either names the byte ranges that may
//! differ ([`ReplayDevice::allow`]) or turns comparison off for the device
//! ([`Compare::None`]): the driver then still faces the recorded replies in
//! the recorded order, and what it sent is recorded for the checker.

use crate::recording::{Direction, Recorder, Recording};
use serde::Deserialize;
use std::collections::VecDeque;
use std::fmt;
use std::ops::Range;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// How a device's `rx` bytes are judged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Compare {
    /// Every byte must equal the recording's, outside `allow` ranges.
    #[default]
    Exact,
    /// Only the byte count paces the replay; the content is not compared.
    None,
}

/// One device of the session.
#[derive(Debug, Clone)]
pub struct ReplayDevice {
    /// For reports: `printer`, `camera`, ...
    pub name: String,
    pub recording: Recording,
    pub compare: Compare,
    /// Offsets in the device's received (`rx`) stream that may differ.
    pub allow: Vec<Range<u64>>,
    /// Records what actually went each way during the replay.
    pub recorder: Option<Recorder>,
}

impl ReplayDevice {
    pub fn new(name: impl Into<String>, recording: Recording) -> Self {
        ReplayDevice {
            name: name.into(),
            recording,
            compare: Compare::Exact,
            allow: Vec::new(),
            recorder: None,
        }
    }
}

/// Per device figures of a replay that ran to the end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceReport {
    pub name: String,
    /// Bytes received from the driver and checked against the recording.
    pub bytes_matched: u64,
    /// Of those, bytes that differed inside an `allow` range.
    pub bytes_allowed_to_differ: u64,
    /// Bytes written to the driver.
    pub bytes_sent: u64,
}

/// A replay that ran to the end of the recording.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Timeline entries played.
    pub entries: usize,
    pub devices: Vec<DeviceReport>,
}

/// Where and why a replay stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("replay needs {expected} stream(s), one per device, got {got}")]
    Streams { expected: usize, got: usize },
    #[error(
        "{device}: the driver's byte {offset} differs from the recording (entry {entry}): \
         expected {expected}, got {got}"
    )]
    Mismatch {
        device: String,
        offset: u64,
        entry: usize,
        expected: Escaped,
        got: Escaped,
    },
    #[error(
        "{device}: waited {waited:?} for the driver's byte {offset} (entry {entry}, expecting \
         {expected}); it sent nothing"
    )]
    Stalled {
        device: String,
        offset: u64,
        entry: usize,
        waited: Duration,
        expected: Escaped,
    },
    #[error("{device}: the driver closed the connection at byte {offset} (entry {entry})")]
    Closed {
        device: String,
        offset: u64,
        entry: usize,
    },
    #[error("{device}: the driver sent {count} byte(s) more than the recording: {first}")]
    Extra {
        device: String,
        count: usize,
        first: Escaped,
    },
    #[error("{device}: {source}")]
    Io {
        device: String,
        #[source]
        source: std::io::Error,
    },
}

/// Bytes shown as escaped ASCII (`\x02P0001|...`), at most 48 of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Escaped(pub Vec<u8>);

impl fmt::Display for Escaped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MAX: usize = 48;
        f.write_str("\"")?;
        for &b in self.0.iter().take(MAX) {
            write!(f, "{}", std::ascii::escape_default(b))?;
        }
        f.write_str("\"")?;
        if self.0.len() > MAX {
            write!(f, " (+{} bytes)", self.0.len() - MAX)?;
        }
        Ok(())
    }
}

/// A device's place in the replay.
struct Live<S> {
    dev: ReplayDevice,
    stream: S,
    /// Received from the driver, not yet matched.
    pending: VecDeque<u8>,
    report: DeviceReport,
}

/// Plays the session: `streams[i]` is the connection the driver opened to
/// `devices[i]`. Each wait for the driver is bounded by `stall`. The streams
/// are handed back (still open) so the caller decides when the driver sees
/// its devices go away.
pub async fn replay<S>(
    devices: Vec<ReplayDevice>,
    streams: Vec<S>,
    stall: Duration,
) -> (Result<ReplayReport, ReplayError>, Vec<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if devices.len() != streams.len() {
        let err = ReplayError::Streams {
            expected: devices.len(),
            got: streams.len(),
        };
        return (Err(err), streams);
    }
    let mut live: Vec<Live<S>> = devices
        .into_iter()
        .zip(streams)
        .map(|(dev, stream)| Live {
            report: DeviceReport {
                name: dev.name.clone(),
                ..DeviceReport::default()
            },
            dev,
            stream,
            pending: VecDeque::new(),
        })
        .collect();
    let result = play(&mut live, stall).await;
    let streams = live.into_iter().map(|l| l.stream).collect();
    (result, streams)
}

/// The merged timeline: (time, device, entry index), in recorded order.
fn timeline(live: &[Live<impl Sized>]) -> Vec<(u64, usize, usize)> {
    let mut t: Vec<(u64, usize, usize)> = live
        .iter()
        .enumerate()
        .flat_map(|(d, l)| {
            l.dev
                .recording
                .entries()
                .iter()
                .enumerate()
                .map(move |(i, e)| (e.t_us, d, i))
        })
        .collect();
    // Stable: ties keep device order, then entry order.
    t.sort_by_key(|&(t_us, d, i)| (t_us, d, i));
    t
}

async fn play<S: AsyncRead + AsyncWrite + Unpin>(
    live: &mut [Live<S>],
    stall: Duration,
) -> Result<ReplayReport, ReplayError> {
    let order = timeline(live);
    for &(_, d, i) in &order {
        let l = &mut live[d];
        let entry = l.dev.recording.entries()[i].clone();
        match entry.dir {
            Direction::Tx => l.send(&entry.bytes).await?,
            Direction::Rx => l.expect(&entry.bytes, i + 1, stall).await?,
        }
    }
    // Bytes the driver sent beyond the recording (already here; the replay
    // does not wait for more, the driver may legitimately be idle).
    for l in live.iter_mut() {
        l.poll_ready().await?;
        if !l.pending.is_empty() {
            return Err(ReplayError::Extra {
                device: l.dev.name.clone(),
                count: l.pending.len(),
                first: Escaped(l.pending.iter().copied().collect()),
            });
        }
    }
    Ok(ReplayReport {
        entries: order.len(),
        devices: live.iter().map(|l| l.report.clone()).collect(),
    })
}

impl<S: AsyncRead + AsyncWrite + Unpin> Live<S> {
    fn io(&self, source: std::io::Error) -> ReplayError {
        ReplayError::Io {
            device: self.dev.name.clone(),
            source,
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), ReplayError> {
        self.stream.write_all(bytes).await.map_err(|e| self.io(e))?;
        self.stream.flush().await.map_err(|e| self.io(e))?;
        if let Some(r) = &self.dev.recorder {
            r.record(Direction::Tx, bytes);
        }
        self.report.bytes_sent += bytes.len() as u64;
        Ok(())
    }

    /// Reads once into `pending`; `Ok(false)` when the driver hung up.
    async fn fill(&mut self) -> Result<bool, ReplayError> {
        let mut buf = [0u8; 4096];
        let n = self.stream.read(&mut buf).await.map_err(|e| self.io(e))?;
        if let Some(r) = &self.dev.recorder {
            r.record(Direction::Rx, &buf[..n]);
        }
        self.pending.extend(&buf[..n]);
        Ok(n > 0)
    }

    /// Takes in whatever the driver has already sent, without waiting.
    async fn poll_ready(&mut self) -> Result<(), ReplayError> {
        // A zero timeout still polls the read once.
        while let Ok(read) = tokio::time::timeout(Duration::ZERO, self.fill()).await {
            if !read? {
                break;
            }
        }
        Ok(())
    }

    async fn expect(
        &mut self,
        expected: &[u8],
        entry: usize,
        stall: Duration,
    ) -> Result<(), ReplayError> {
        let mut i = 0;
        while i < expected.len() {
            let offset = self.report.bytes_matched;
            if self.pending.is_empty() {
                match tokio::time::timeout(stall, self.fill()).await {
                    Err(_) => {
                        return Err(ReplayError::Stalled {
                            device: self.dev.name.clone(),
                            offset,
                            entry,
                            waited: stall,
                            expected: Escaped(expected[i..].to_vec()),
                        })
                    }
                    Ok(Ok(true)) => {}
                    Ok(Ok(false)) => {
                        return Err(ReplayError::Closed {
                            device: self.dev.name.clone(),
                            offset,
                            entry,
                        })
                    }
                    Ok(Err(e)) => return Err(e),
                }
                continue;
            }
            let Some(got) = self.pending.pop_front() else {
                continue;
            };
            let want = expected[i];
            if got != want {
                if self.may_differ(offset) {
                    self.report.bytes_allowed_to_differ += 1;
                } else {
                    self.pending.push_front(got);
                    return Err(ReplayError::Mismatch {
                        device: self.dev.name.clone(),
                        offset,
                        entry,
                        expected: Escaped(expected[i..].to_vec()),
                        got: Escaped(self.pending.iter().copied().collect()),
                    });
                }
            }
            self.report.bytes_matched += 1;
            i += 1;
        }
        Ok(())
    }

    fn may_differ(&self, offset: u64) -> bool {
        self.dev.compare == Compare::None || self.dev.allow.iter().any(|r| r.contains(&offset))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::Recorder;
    use std::time::Instant;
    use tokio::io::duplex;

    /// A two-device session: the "printer" gets P1, answers A; the
    /// "camera" then reports R1; the printer gets P2, answers A.
    fn session(dir: &std::path::Path) -> (Recording, Recording) {
        let start = Instant::now();
        let p = Recorder::create_at(dir.join("p.rec"), start).expect("printer recorder");
        let c = Recorder::create_at(dir.join("c.rec"), start).expect("camera recorder");
        let tick = || std::thread::sleep(Duration::from_millis(2));
        p.record(Direction::Rx, b"\x02P1\x03");
        tick();
        p.record(Direction::Tx, b"\x06");
        tick();
        c.record(Direction::Tx, b"R1\r\n");
        tick();
        p.record(Direction::Rx, b"\x02P2");
        p.record(Direction::Rx, b"\x03");
        tick();
        p.record(Direction::Tx, b"\x06");
        (
            Recording::load(dir.join("p.rec")).expect("load printer"),
            Recording::load(dir.join("c.rec")).expect("load camera"),
        )
    }

    /// Plays the driver's side: its frames, checking what comes back.
    async fn driver(
        mut printer: tokio::io::DuplexStream,
        mut camera: tokio::io::DuplexStream,
        second: &'static [u8],
    ) -> Vec<u8> {
        let mut got = Vec::new();
        let mut b = [0u8; 16];
        printer.write_all(b"\x02P1\x03").await.expect("write");
        let n = printer.read(&mut b).await.expect("ack");
        got.extend(&b[..n]);
        let n = camera.read(&mut b).await.expect("read");
        got.extend(&b[..n]);
        // In one write where the recording has two chunks.
        printer.write_all(second).await.expect("write");
        let n = printer.read(&mut b).await.expect("ack");
        got.extend(&b[..n]);
        got
    }

    /// The session's printer and camera, as replay devices.
    fn session_devices(dir: &std::path::Path) -> Vec<ReplayDevice> {
        let (p, c) = session(dir);
        vec![
            ReplayDevice::new("printer", p),
            ReplayDevice::new("camera", c),
        ]
    }

    /// Replays `devices` against [`driver`] sending `second` as its second
    /// write; returns the replay's result and the driver's task.
    async fn against_driver(
        devices: Vec<ReplayDevice>,
        second: &'static [u8],
    ) -> (
        Result<ReplayReport, ReplayError>,
        tokio::task::JoinHandle<Vec<u8>>,
    ) {
        let (p_dev, p_drv) = duplex(64);
        let (c_dev, c_drv) = duplex(64);
        let drv = tokio::spawn(driver(p_drv, c_drv, second));
        let (res, _streams) = replay(devices, vec![p_dev, c_dev], Duration::from_secs(5)).await;
        (res, drv)
    }

    #[tokio::test]
    async fn a_faithful_driver_replays_cleanly_in_timeline_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (res, drv) = against_driver(session_devices(dir.path()), b"\x02P2\x03").await;
        let report = res.expect("replay");
        assert_eq!(report.entries, 6);
        assert_eq!(report.devices[0].bytes_matched, 8);
        assert_eq!(report.devices[0].bytes_sent, 2);
        assert_eq!(report.devices[1].bytes_sent, 4);
        // The camera report came between the two acknowledgments.
        assert_eq!(drv.await.expect("driver"), b"\x06R1\r\n\x06");
    }

    #[tokio::test]
    async fn a_different_byte_is_reported_with_its_offset() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (res, _drv) = against_driver(session_devices(dir.path()), b"\x02P9\x03").await;
        match res {
            Err(ReplayError::Mismatch {
                device,
                offset,
                entry,
                ..
            }) => {
                assert_eq!((device.as_str(), offset, entry), ("printer", 6, 3));
            }
            other => panic!("expected a mismatch, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn allowed_ranges_and_compare_none_let_bytes_differ() {
        let dir = tempfile::tempdir().expect("temp dir");
        for allow in [Some(6..7), None] {
            let mut devs = session_devices(dir.path());
            match allow.clone() {
                Some(r) => devs[0].allow.push(r),
                None => devs[0].compare = Compare::None,
            }
            let (res, _drv) = against_driver(devs, b"\x02P9\x03").await;
            let report = res.expect("allowed difference");
            assert_eq!(report.devices[0].bytes_allowed_to_differ, 1, "{allow:?}");
        }
    }

    #[tokio::test]
    async fn a_silent_driver_stalls_within_the_bound() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (p_dev, _p_drv) = duplex(64);
        let (c_dev, _c_drv) = duplex(64);
        let (res, _streams) = replay(
            session_devices(dir.path()),
            vec![p_dev, c_dev],
            Duration::from_millis(50),
        )
        .await;
        let e = res.expect_err("stall").to_string();
        assert!(e.contains("printer") && e.contains("byte 0"), "{e}");
    }

    #[tokio::test]
    async fn extra_bytes_after_the_recording_are_reported() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (res, _drv) =
            against_driver(session_devices(dir.path()), b"\x02P2\x03\x02P3\x03").await;
        match res {
            Err(ReplayError::Extra { device, count, .. }) => {
                assert_eq!((device.as_str(), count), ("printer", 4));
            }
            other => panic!("expected extra bytes, got {other:?}"),
        }
    }
}
