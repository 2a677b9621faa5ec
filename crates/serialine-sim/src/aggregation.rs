//! A case packer with its aggregation camera: units that passed the unit
//! camera (a [`CameraKnobs::pass_to`](crate::camera::CameraKnobs::pass_to)
//! stream) fall into a case; once the case holds `per_case` units the
//! aggregation camera reads every code in it at once and writes one result
//! line on a TCP link. Fed with the case-label scanner's passed stream
//! instead (case label codes, `per_case` = cases per pallet), the same
//! simulator is a pallet station.
//!
//! One result line is `{case};{codes}\r\n`: the case number (decimal, from
//! 1, counting every read written) and the codes in the case, in the order
//! they went in, joined by a TAB; a code the camera could not read is
//! `NOREAD` in its place. It is the camera line `{trigger};{content}` of
//! [`CameraProfile`](serialine_devices::camera::CameraProfile) with the
//! TAB-joined list as content, so the daemon parses it with that profile.
//!
//! Knobs put faults into chosen cases (or at random, from a seed): a unit
//! fallen off, a foreign unit, a unit of an earlier case, an unreadable
//! code. An open case can be read short (the end of a job) after a quiet
//! time or on [`AggregationSim::flush`]. Every read is logged as a
//! [`CaseRead`] with what is physically in the case and what was reported,
//! so a test can check what the daemon made of it.

use crate::camera::FOREIGN_GTIN;
use crate::printer::SplitMix64;
use serialine_devices::UnitId;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// What the camera writes for a code it could not decode (the first
/// `no_read` string of the default camera profile).
pub const NO_READ: &str = "NOREAD";

/// Separates the codes of one case in a result line.
pub const CODE_SEPARATOR: char = '\t';

/// Case size, end-of-job flushing and faults. `Default`: cases of 12, every
/// code read, no faults, never flushed by time.
#[derive(Debug, Clone)]
pub struct AggregationKnobs {
    pub seed: u64,
    /// Units per case (cases per pallet).
    pub per_case: usize,
    /// A case still open (fewer than `per_case`) is read as it is once no
    /// unit came for this long (the end of a job: a partial case). `None`:
    /// never.
    pub flush_after: Option<Duration>,
    /// Faults at exactly these case numbers (from 1). At most one fault per
    /// case, checked in the order of the fields; one that cannot apply to
    /// the case is passed over.
    ///
    /// One unit (the last in) fell off: the case is read with one code
    /// fewer and the unit is lost. Needs at least two units in the case (a
    /// case with nothing in it is not read).
    pub missing_at: Vec<u64>,
    /// A unit never issued to this line is in the case, last: a well-formed
    /// GS1 element string `01` + the foreign GTIN + `21FOREIGNCASE{case}`
    /// (the GTIN the unit camera's foreign codes carry, so it parses).
    pub foreign_at: Vec<u64>,
    /// The first unit of the previous case (already packed and read) is in
    /// this case in place of the last one, which is lost. Needs an earlier
    /// case.
    pub already_aggregated_at: Vec<u64>,
    /// The last code in the case is written `NOREAD` (the unit is there).
    pub no_read_at: Vec<u64>,
    /// The same faults as probabilities per case, drawn from `seed` only
    /// when above 0, so turning one on leaves the others' draws as they
    /// were.
    pub missing_rate: f64,
    pub foreign_rate: f64,
    pub already_aggregated_rate: f64,
    pub no_read_rate: f64,
    /// The AIM symbology identifier (e.g. `"]d2"`) put before every decoded
    /// code (not before `NOREAD`); `None`: none.
    pub symbology_id: Option<String>,
}

impl Default for AggregationKnobs {
    fn default() -> Self {
        AggregationKnobs {
            seed: 1,
            per_case: 12,
            flush_after: None,
            missing_at: Vec::new(),
            foreign_at: Vec::new(),
            already_aggregated_at: Vec::new(),
            no_read_at: Vec::new(),
            missing_rate: 0.0,
            foreign_rate: 0.0,
            already_aggregated_rate: 0.0,
            no_read_rate: 0.0,
            symbology_id: None,
        }
    }
}

/// What went wrong with a case (see [`AggregationKnobs`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CaseFault {
    Missing,
    Foreign,
    AlreadyAggregated,
    NoRead,
}

/// One case read, as logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseRead {
    pub case: u64,
    /// What is physically in the case (codes as received from `passed`),
    /// after the fault.
    pub contents: Vec<String>,
    /// The codes as reported (`None` = `NOREAD`), in order, without the
    /// symbology identifier.
    pub reported: Vec<Option<String>>,
    pub fault: Option<CaseFault>,
    /// Fewer than `per_case` units, read at a flush (end of job).
    pub partial: bool,
    /// Units taken out of the line by the fault (missing, displaced).
    pub lost: Vec<String>,
}

/// A running case packer and aggregation camera; dropping it stops it.
pub struct AggregationSim {
    log: Arc<Mutex<Vec<CaseRead>>>,
    flush: UnboundedSender<()>,
    task: JoinHandle<()>,
}

impl Drop for AggregationSim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AggregationSimError {
    #[error("aggregation camera simulator: per_case must be at least 1")]
    EmptyCase,
    #[error("aggregation camera simulator: cannot resolve {addr:?}: {source}")]
    Resolve {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// The error names the address.
    #[error("aggregation camera simulator: {0}")]
    Listen(#[source] std::io::Error),
}

impl AggregationSim {
    /// Listens on `addr` (use `127.0.0.1:0`), one connection at a time.
    /// Cases read while no one is connected are written to the next
    /// connection, in order.
    pub async fn listen(
        addr: &str,
        knobs: AggregationKnobs,
        passed: UnboundedReceiver<(UnitId, String)>,
    ) -> Result<(AggregationSim, SocketAddr), AggregationSimError> {
        if knobs.per_case == 0 {
            return Err(AggregationSimError::EmptyCase);
        }
        let resolve = |source| AggregationSimError::Resolve {
            addr: addr.to_owned(),
            source,
        };
        let at = tokio::net::lookup_host(addr)
            .await
            .map_err(resolve)?
            .next()
            .ok_or_else(|| {
                resolve(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no address",
                ))
            })?;
        let listener = crate::listen_on(at)
            .await
            .map_err(AggregationSimError::Listen)?;
        let local = listener.local_addr().map_err(AggregationSimError::Listen)?;
        let packer = Packer::new(knobs);
        let log = packer.log.clone();
        let (flush, flushes) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(listener, packer, passed, flushes));
        Ok((AggregationSim { log, flush, task }, local))
    }

    /// Every case read so far, in order.
    pub fn log(&self) -> Vec<CaseRead> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Reads the open case now, even if partial (a test's "end of job"),
    /// after every unit already sent on `passed` has gone in. An empty
    /// case is not read.
    pub fn flush(&self) {
        // The task is gone only once this sim is dropped.
        let _ = self.flush.send(());
    }
}

/// The task: fills cases from `passed`, reads them and writes the lines to
/// whoever is connected.
async fn run(
    listener: TcpListener,
    mut packer: Packer,
    mut passed: UnboundedReceiver<(UnitId, String)>,
    mut flushes: UnboundedReceiver<()>,
) {
    // Lines read but not yet written (no one connected, or written to a
    // link that then failed): kept for the next connection.
    let mut pending: VecDeque<Vec<u8>> = VecDeque::new();
    let mut conn: Option<TcpStream> = None;
    // When the open case got its last unit, for `flush_after`.
    let mut last_unit: Option<Instant> = None;
    let mut passed_closed = false;
    let mut flushes_closed = false;
    let mut sink = [0u8; 256];
    loop {
        if let Some(stream) = conn.as_mut() {
            if !pending.is_empty() && !write_pending(stream, &mut pending).await {
                conn = None;
            }
        }
        let due = packer
            .knobs
            .flush_after
            .and_then(|d| last_unit.map(|t| t + d));
        tokio::select! {
            // Reading first: a peer that hung up is noticed before more
            // lines are written into its closed socket and lost.
            biased;
            // The camera may get commands; this one ignores them, but reading
            // is how a closed link is noticed.
            r = read_some(conn.as_mut(), &mut sink), if conn.is_some() => {
                if matches!(r, Ok(0) | Err(_)) {
                    conn = None;
                }
            }
            accepted = listener.accept(), if conn.is_none() => {
                match accepted {
                    Ok((stream, _)) => {
                        // Each line is one small write the daemon waits for.
                        let _ = stream.set_nodelay(true);
                        conn = Some(stream);
                    }
                    // Out of descriptors and the like: usually passes; a
                    // pause keeps the loop from spinning meanwhile.
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
            f = flushes.recv(), if !flushes_closed => match f {
                None => flushes_closed = true,
                Some(()) => {
                    // A unit sent before the flush was asked for is in the
                    // case already, even if this task had not taken it yet.
                    while let Ok((_, code)) = passed.try_recv() {
                        pending.extend(packer.add(code));
                    }
                    pending.extend(packer.read());
                    last_unit = None;
                }
            },
            item = passed.recv(), if !passed_closed => match item {
                None => passed_closed = true,
                Some((_, code)) => match packer.add(code) {
                    Some(line) => {
                        pending.push_back(line);
                        last_unit = None;
                    }
                    None => last_unit = Some(Instant::now()),
                },
            },
            _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                pending.extend(packer.read());
                last_unit = None;
            }
        }
    }
}

/// Reads whatever the peer sent (to be ignored); `Ok(0)`: it hung up.
async fn read_some(conn: Option<&mut TcpStream>, buf: &mut [u8]) -> std::io::Result<usize> {
    match conn {
        Some(stream) => stream.read(buf).await,
        None => std::future::pending().await,
    }
}

/// Writes the pending lines in order, each dropped from `pending` only once
/// written; false if the link is closed or failed.
async fn write_pending(stream: &mut TcpStream, pending: &mut VecDeque<Vec<u8>>) -> bool {
    if hung_up(stream) {
        return false;
    }
    while let Some(line) = pending.front() {
        if stream.write_all(line).await.is_err() || stream.flush().await.is_err() {
            return false;
        }
        pending.pop_front();
    }
    true
}

/// Whether the peer has hung up, asked of the socket itself (input, which
/// is ignored anyway, is read off on the way). Writing into a socket whose
/// peer is gone succeeds and the lines are lost instead of queued for the
/// next connection; tokio's own readiness (`try_read`) may not know of the
/// hang-up yet, until its I/O driver has polled again.
#[cfg(unix)]
fn hung_up(stream: &TcpStream) -> bool {
    use std::io::Read as _;
    use std::os::fd::AsFd as _;
    // A second descriptor of the same socket, for a plain non-blocking
    // read that tokio's readiness cache does not gate.
    let Ok(fd) = stream.as_fd().try_clone_to_owned() else {
        return false;
    };
    let mut probe = std::net::TcpStream::from(fd);
    if probe.set_nonblocking(true).is_err() {
        return false;
    }
    let mut sink = [0u8; 256];
    loop {
        match probe.read(&mut sink) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return e.kind() != std::io::ErrorKind::WouldBlock,
        }
    }
}

/// Elsewhere the read branch of the task's loop is the only check.
#[cfg(not(unix))]
fn hung_up(_stream: &TcpStream) -> bool {
    false
}

/// The case being filled, the reads and their faults.
struct Packer {
    knobs: AggregationKnobs,
    rng: SplitMix64,
    open: Vec<String>,
    /// Reads written so far (the last case number).
    cases: u64,
    /// The first unit of the last case read, for an already aggregated
    /// unit.
    previous_first: Option<String>,
    log: Arc<Mutex<Vec<CaseRead>>>,
}

impl Packer {
    fn new(knobs: AggregationKnobs) -> Packer {
        Packer {
            rng: SplitMix64::new(knobs.seed),
            knobs,
            open: Vec::new(),
            cases: 0,
            previous_first: None,
            log: Arc::default(),
        }
    }

    /// One unit falls into the open case; the result line if that filled
    /// it.
    fn add(&mut self, code: String) -> Option<Vec<u8>> {
        self.open.push(code);
        if self.open.len() >= self.knobs.per_case {
            self.read()
        } else {
            None
        }
    }

    /// Reads the open case as it is; `None` if it is empty.
    fn read(&mut self) -> Option<Vec<u8>> {
        if self.open.is_empty() {
            return None;
        }
        let mut contents = std::mem::take(&mut self.open);
        let partial = contents.len() < self.knobs.per_case;
        let case = self.cases + 1;
        let fault = self.fault(case, contents.len());
        let mut lost = Vec::new();
        match fault {
            Some(CaseFault::Missing) => lost.extend(contents.pop()),
            Some(CaseFault::Foreign) => {
                contents.push(format!("01{FOREIGN_GTIN}21FOREIGNCASE{case}"));
            }
            Some(CaseFault::AlreadyAggregated) => {
                if let (Some(last), Some(earlier)) =
                    (contents.last_mut(), self.previous_first.clone())
                {
                    lost.push(std::mem::replace(last, earlier));
                }
            }
            Some(CaseFault::NoRead) | None => {}
        }
        let mut reported: Vec<Option<String>> = contents.iter().cloned().map(Some).collect();
        if fault == Some(CaseFault::NoRead) {
            if let Some(last) = reported.last_mut() {
                *last = None;
            }
        }
        let symbology = self.knobs.symbology_id.as_deref().unwrap_or("");
        let codes: Vec<String> = reported
            .iter()
            .map(|r| match r {
                Some(code) => format!("{symbology}{code}"),
                None => NO_READ.to_owned(),
            })
            .collect();
        let line = format!("{case};{}\r\n", codes.join(&CODE_SEPARATOR.to_string()));
        self.cases = case;
        self.previous_first = contents.first().cloned();
        if let Ok(mut log) = self.log.lock() {
            log.push(CaseRead {
                case,
                contents,
                reported,
                fault,
                partial,
                lost,
            });
        }
        Some(line.into_bytes())
    }

    /// The fault for case `case` holding `units` units, if any. A rate is
    /// drawn only when the fault can apply and is not already set by its
    /// `_at` knob.
    fn fault(&mut self, case: u64, units: usize) -> Option<CaseFault> {
        let k = &self.knobs;
        if units >= 2 && (k.missing_at.contains(&case) || self.rng.chance(k.missing_rate)) {
            return Some(CaseFault::Missing);
        }
        if k.foreign_at.contains(&case) || self.rng.chance(k.foreign_rate) {
            return Some(CaseFault::Foreign);
        }
        if self.previous_first.is_some()
            && (k.already_aggregated_at.contains(&case)
                || self.rng.chance(k.already_aggregated_rate))
        {
            return Some(CaseFault::AlreadyAggregated);
        }
        if k.no_read_at.contains(&case) || self.rng.chance(k.no_read_rate) {
            return Some(CaseFault::NoRead);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packer(knobs: AggregationKnobs) -> Packer {
        Packer::new(AggregationKnobs {
            per_case: 3,
            ..knobs
        })
    }

    fn feed(p: &mut Packer, codes: std::ops::RangeInclusive<u32>) -> Vec<String> {
        codes
            .filter_map(|i| p.add(format!("C{i}")))
            .map(|l| String::from_utf8_lossy(&l).into_owned())
            .collect()
    }

    #[test]
    fn a_full_case_is_one_line_of_tab_joined_codes() {
        let mut p = packer(AggregationKnobs::default());
        assert_eq!(
            feed(&mut p, 1..=7),
            vec!["1;C1\tC2\tC3\r\n", "2;C4\tC5\tC6\r\n"]
        );
        // The seventh waits in the open case; a read at the end takes it.
        let last = p.read().map(|l| String::from_utf8_lossy(&l).into_owned());
        assert_eq!(last.as_deref(), Some("3;C7\r\n"));
        assert!(p.read().is_none(), "an empty case is not read");
        let log = p.log.lock().expect("log").clone();
        assert!(log[2].partial && !log[1].partial);
    }

    #[test]
    fn a_fault_that_cannot_apply_is_passed_over() {
        // Case 1 has no earlier case to take a unit from; a single unit
        // cannot go missing (the case would be empty).
        let mut p = Packer::new(AggregationKnobs {
            per_case: 1,
            already_aggregated_at: vec![1],
            missing_at: vec![1, 2],
            ..AggregationKnobs::default()
        });
        feed(&mut p, 1..=2);
        let log = p.log.lock().expect("log").clone();
        assert_eq!(log[0].fault, None);
        assert_eq!(log[1].fault, None);
    }

    #[test]
    fn rates_are_drawn_from_the_seed() {
        let run = |seed: u64| -> Vec<Option<CaseFault>> {
            let mut p = packer(AggregationKnobs {
                seed,
                missing_rate: 0.1,
                foreign_rate: 0.1,
                already_aggregated_rate: 0.1,
                no_read_rate: 0.1,
                ..AggregationKnobs::default()
            });
            feed(&mut p, 1..=600);
            let log = p.log.lock().expect("log");
            log.iter().map(|c| c.fault).collect()
        };
        let a = run(5);
        assert_eq!(a, run(5), "same seed, same faults");
        for f in [
            CaseFault::Missing,
            CaseFault::Foreign,
            CaseFault::AlreadyAggregated,
            CaseFault::NoRead,
        ] {
            let n = a.iter().filter(|x| **x == Some(f)).count();
            assert!((2..=60).contains(&n), "{n} {f:?} in 200 cases");
        }
    }
}
