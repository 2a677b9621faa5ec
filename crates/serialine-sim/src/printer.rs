//! A framed-ASCII printer simulator: the device side of a pty pair or TCP
//! socket, speaking the same [`FramedProfile`] as the driver, with knobs for
//! NAKs, jams, disconnects, line noise and a paced "wire".
//!
//! Behaviour: each message frame is answered by ACK (taken into the buffer)
//! or NAK (bad checksum, unparseable message, buffer full, or the NAK knob).
//! Buffered codes print in order, one per `print_time`, each reported by a
//! `complete` frame and forwarded to the `printed` channel ("what is
//! physically on the product"), which a camera simulator can read. On link
//! loss the buffer is cleared (as many printers do when the host drops).

use crate::recording::{Direction, Recorder};
use serialine_devices::printer::{
    encode_frame, CompiledProfile, FrameDecoder, FrameError, FramedProfile, ProfileError, Token,
};
use serialine_devices::UnitId;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc::{self, UnboundedSender};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// A tiny seeded PRNG (SplitMix64): deterministic fault injection without a
/// `rand` dependency. Shared by the simulators.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `rate` (<= 0: never, >= 1: always).
    pub fn chance(&mut self, rate: f64) -> bool {
        rate > 0.0 && (rate >= 1.0 || self.next_f64() < rate)
    }

    /// Uniform in `0..n` (0 when n is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
}

/// Fault and timing knobs. `Default` is a perfect, instant printer.
#[derive(Debug, Clone)]
pub struct PrinterKnobs {
    /// Time to print one unit after the previous (0: at once on ACK).
    pub print_time: Duration,
    /// Buffer size; `None`: the profile's `buffer_depth`.
    pub buffer_depth: Option<usize>,
    /// Probability that a good message is NAKed anyway.
    pub nak_rate: f64,
    pub seed: u64,
    /// After this many units printed (in total), stop printing and stop
    /// answering: messages get neither ACK nor NAK.
    pub jam_after: Option<u64>,
    /// After this many units printed, drop the connection (once).
    pub disconnect_after: Option<u64>,
    /// Noise bytes written before every frame the printer sends. Never the
    /// profile's start/end/ACK/NAK bytes: a stray bare ACK is
    /// indistinguishable from a real one on any protocol of this kind.
    pub garbage_bytes: usize,
    /// Pace reading to this many bytes per second (a real UART's rate; a pty
    /// has none), e.g. 11,520 for 115200 8N1.
    pub wire_bytes_per_sec: Option<u32>,
}

impl Default for PrinterKnobs {
    fn default() -> Self {
        PrinterKnobs {
            print_time: Duration::ZERO,
            buffer_depth: None,
            nak_rate: 0.0,
            seed: 1,
            jam_after: None,
            disconnect_after: None,
            garbage_bytes: 0,
            wire_bytes_per_sec: None,
        }
    }
}

/// What the simulator saw and did, for tests to check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrinterStats {
    pub connections: u64,
    pub frames: u64,
    pub acked: u64,
    pub naked: u64,
    pub printed: u64,
    /// Frames with a bad checksum or the wrong shape.
    pub bad_frames: u64,
    /// Messages that arrived while the buffer was full (NAKed): a driver
    /// that respects `buffer_depth` never causes one.
    pub overflows: u64,
    /// Most codes ever held at once (accepted, not printed).
    pub max_outstanding: usize,
    /// Messages ignored while jammed.
    pub ignored: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// A running printer simulator; dropping it stops it (closing its link).
pub struct PrinterSim {
    stats: Arc<Mutex<PrinterStats>>,
    task: JoinHandle<()>,
}

impl Drop for PrinterSim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PrinterSim {
    /// Serves one already-open stream (e.g. a pty's device side).
    pub fn spawn<S>(
        stream: S,
        profile: &FramedProfile,
        knobs: PrinterKnobs,
        printed: Option<UnboundedSender<(UnitId, String)>>,
        recorder: Option<Recorder>,
    ) -> Result<PrinterSim, ProfileError>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let mut core = Core::new(profile, knobs, printed, recorder)?;
        let stats = core.stats.clone();
        let task = tokio::spawn(async move {
            core.serve(stream).await;
        });
        Ok(PrinterSim { stats, task })
    }

    /// Listens on `addr` (use `127.0.0.1:0`) and serves one connection at a
    /// time, accepting the next after each ends: a printer with a TCP port.
    pub async fn listen(
        addr: &str,
        profile: &FramedProfile,
        knobs: PrinterKnobs,
        printed: Option<UnboundedSender<(UnitId, String)>>,
        recorder: Option<Recorder>,
    ) -> Result<(PrinterSim, SocketAddr), SimError> {
        let mut core = Core::new(profile, knobs, printed, recorder)?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| SimError::Bind {
                addr: addr.to_owned(),
                source,
            })?;
        let local = listener.local_addr().map_err(|source| SimError::Bind {
            addr: addr.to_owned(),
            source,
        })?;
        let stats = core.stats.clone();
        let task = tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((s, _)) => {
                        let _ = s.set_nodelay(true);
                        core.serve(s).await;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "printer sim accept failed");
                        return;
                    }
                }
            }
        });
        Ok((PrinterSim { stats, task }, local))
    }

    pub fn stats(&self) -> PrinterStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// Why a simulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// State that outlives a connection.
struct Core {
    p: CompiledProfile,
    knobs: PrinterKnobs,
    depth: usize,
    rng: SplitMix64,
    stats: Arc<Mutex<PrinterStats>>,
    printed: Option<UnboundedSender<(UnitId, String)>>,
    recorder: Option<Recorder>,
    printed_total: u64,
    jammed: bool,
    disconnected_once: bool,
}

/// A connection ends (link lost or the disconnect knob).
struct Hangup;

/// Where the printer's answers go: straight to the link, or (with a wire
/// rate) through a task that delivers each chunk only when the modelled
/// wire would have carried it, so replies cost their transmission time as
/// they do on a real UART, without holding up the reading side.
enum Out {
    Direct(Box<dyn AsyncWrite + Send + Unpin>),
    Paced {
        tx: mpsc::UnboundedSender<(Instant, Vec<u8>)>,
        task: JoinHandle<()>,
    },
}

impl Out {
    fn new(wr: Box<dyn AsyncWrite + Send + Unpin>, rate: Option<u32>) -> Out {
        match rate {
            None => Out::Direct(wr),
            Some(rate) => {
                let (tx, rx) = mpsc::unbounded_channel();
                let task = tokio::spawn(paced_writer(wr, rx, rate));
                Out::Paced { tx, task }
            }
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), Hangup> {
        match self {
            Out::Direct(wr) => {
                wr.write_all(bytes).await.map_err(|_| Hangup)?;
                wr.flush().await.map_err(|_| Hangup)
            }
            Out::Paced { tx, .. } => tx
                .send((Instant::now(), bytes.to_vec()))
                .map_err(|_| Hangup),
        }
    }

    /// Delivers what is still queued, then closes the write side.
    async fn close(self) {
        match self {
            Out::Direct(mut wr) => {
                let _ = wr.shutdown().await;
            }
            Out::Paced { tx, task } => {
                drop(tx);
                let _ = task.await;
            }
        }
    }
}

async fn paced_writer(
    mut wr: Box<dyn AsyncWrite + Send + Unpin>,
    mut rx: mpsc::UnboundedReceiver<(Instant, Vec<u8>)>,
    rate: u32,
) {
    let byte_time = 1.0 / f64::from(rate.max(1));
    let mut wire_t = Instant::now();
    while let Some((queued_at, chunk)) = rx.recv().await {
        // A chunk starts when both it exists and the wire is free.
        wire_t = wire_t.max(queued_at) + Duration::from_secs_f64(byte_time * chunk.len() as f64);
        tokio::time::sleep_until(wire_t).await;
        if wr.write_all(&chunk).await.is_err() || wr.flush().await.is_err() {
            return;
        }
    }
    let _ = wr.shutdown().await;
}

impl Core {
    fn new(
        profile: &FramedProfile,
        knobs: PrinterKnobs,
        printed: Option<UnboundedSender<(UnitId, String)>>,
        recorder: Option<Recorder>,
    ) -> Result<Core, ProfileError> {
        let p = profile.compile()?;
        Ok(Core {
            depth: knobs.buffer_depth.unwrap_or(profile.buffer_depth),
            rng: SplitMix64::new(knobs.seed),
            p,
            knobs,
            stats: Arc::default(),
            printed,
            recorder,
            printed_total: 0,
            jammed: false,
            disconnected_once: false,
        })
    }

    fn stat(&self, f: impl FnOnce(&mut PrinterStats)) {
        if let Ok(mut s) = self.stats.lock() {
            f(&mut s);
        }
    }

    async fn serve<S: AsyncRead + AsyncWrite + Send + 'static>(&mut self, stream: S) {
        self.stat(|s| s.connections += 1);
        let (mut rd, wr) = tokio::io::split(stream);
        let mut out = Out::new(Box::new(wr), self.knobs.wire_bytes_per_sec);
        // A fresh Conn per connection: printers drop their message buffer
        // when the host goes away.
        let mut conn = Conn {
            decoder: FrameDecoder::new(self.p.framing),
            queue: VecDeque::new(),
            next_print: None,
        };
        let _ = self.run(&mut conn, &mut rd, &mut out).await;
        out.close().await;
    }

    async fn run<S: AsyncRead + AsyncWrite + Send>(
        &mut self,
        conn: &mut Conn,
        rd: &mut tokio::io::ReadHalf<S>,
        wr: &mut Out,
    ) -> Result<(), Hangup> {
        let mut buf = vec![0u8; 4096];
        // When the modelled wire finishes carrying the bytes read so far.
        let mut wire_t = Instant::now();
        loop {
            let print_at = conn.next_print.filter(|_| !self.jammed);
            let far = Instant::now() + Duration::from_secs(3600);
            let before = Instant::now();
            tokio::select! {
                r = rd.read(&mut buf) => {
                    let n = match r {
                        Ok(0) | Err(_) => return Err(Hangup),
                        Ok(n) => n,
                    };
                    let after = Instant::now();
                    if let Some(rec) = &self.recorder {
                        rec.record(Direction::Rx, &buf[..n]);
                    }
                    self.stat(|s| s.rx_bytes += n as u64);
                    // If the read had to wait, the wire was idle until these
                    // bytes came; if data was already waiting, it queued
                    // behind the previous bytes on the wire.
                    let base = if after - before > Duration::from_micros(200) {
                        wire_t.max(after)
                    } else {
                        wire_t
                    };
                    let byte_time = self.knobs.wire_bytes_per_sec.map(|r| 1.0 / f64::from(r.max(1)));
                    for (i, &b) in buf[..n].iter().enumerate() {
                        let Some(d) = conn.decoder.feed(b) else { continue };
                        if let Some(bt) = byte_time {
                            // Act on a frame only once its last byte would
                            // have crossed the wire.
                            tokio::time::sleep_until(base + Duration::from_secs_f64(bt * (i + 1) as f64)).await;
                        }
                        self.on_decoded(conn, wr, d).await?;
                    }
                    if let Some(bt) = byte_time {
                        wire_t = base + Duration::from_secs_f64(bt * n as f64);
                    }
                }
                _ = tokio::time::sleep_until(print_at.unwrap_or(far)), if print_at.is_some() => {
                    self.print_one(conn, wr).await?;
                    conn.next_print = (!conn.queue.is_empty()).then(|| Instant::now() + self.knobs.print_time);
                }
            }
        }
    }

    async fn on_decoded(
        &mut self,
        conn: &mut Conn,
        wr: &mut Out,
        d: Result<Token, FrameError>,
    ) -> Result<(), Hangup> {
        let payload = match d {
            Ok(Token::Frame(p)) => p,
            // A host does not send ACK/NAK to a printer: ignore.
            Ok(_) => return Ok(()),
            Err(e @ (FrameError::BadChecksum { .. } | FrameError::MissingChecksum { .. })) => {
                tracing::debug!(error = %e, "printer sim: bad frame, NAK");
                self.stat(|s| s.bad_frames += 1);
                return self.answer(wr, self.p.framing.nak).await;
            }
            Err(_) => {
                self.stat(|s| s.bad_frames += 1);
                return Ok(());
            }
        };
        self.stat(|s| s.frames += 1);
        if self.jammed {
            self.stat(|s| s.ignored += 1);
            return Ok(());
        }
        let parsed = self.p.message.matches(&payload).and_then(|m| {
            let code = String::from_utf8(m.code?.to_vec()).ok()?;
            Some((m.id?, code))
        });
        let Some((id, code)) = parsed else {
            self.stat(|s| s.bad_frames += 1);
            return self.answer(wr, self.p.framing.nak).await;
        };
        if conn.queue.len() >= self.depth {
            self.stat(|s| {
                s.overflows += 1;
                s.naked += 1;
            });
            return self.answer(wr, self.p.framing.nak).await;
        }
        if self.rng.chance(self.knobs.nak_rate) {
            self.stat(|s| s.naked += 1);
            return self.answer(wr, self.p.framing.nak).await;
        }
        conn.queue.push_back((id, code));
        let held = conn.queue.len();
        self.stat(|s| {
            s.acked += 1;
            s.max_outstanding = s.max_outstanding.max(held);
        });
        self.answer(wr, self.p.framing.ack).await?;
        if self.knobs.print_time.is_zero() {
            self.print_one(conn, wr).await?;
        } else if conn.next_print.is_none() {
            conn.next_print = Some(Instant::now() + self.knobs.print_time);
        }
        Ok(())
    }

    async fn print_one(&mut self, conn: &mut Conn, wr: &mut Out) -> Result<(), Hangup> {
        if self.jammed {
            return Ok(());
        }
        let Some((id, code)) = conn.queue.pop_front() else {
            return Ok(());
        };
        let report = self.p.complete.render(id, "");
        let mut out = self.noise();
        // The report is rendered from our own template: it always frames.
        let _ = encode_frame(&self.p.framing, report.as_bytes(), &mut out);
        self.write(wr, &out).await?;
        self.printed_total += 1;
        self.stat(|s| s.printed += 1);
        if let Some(tx) = &self.printed {
            let _ = tx.send((id, symbol_content(&self.p.profile, code)));
        }
        if self
            .knobs
            .jam_after
            .is_some_and(|n| self.printed_total >= n)
        {
            tracing::debug!(printed = self.printed_total, "printer sim: jammed");
            self.jammed = true;
        }
        if !self.disconnected_once
            && self
                .knobs
                .disconnect_after
                .is_some_and(|n| self.printed_total >= n)
        {
            self.disconnected_once = true;
            tracing::debug!(
                printed = self.printed_total,
                "printer sim: dropping the link"
            );
            return Err(Hangup);
        }
        Ok(())
    }

    /// Line noise without any protocol control byte.
    fn noise(&mut self) -> Vec<u8> {
        let f = self.p.framing;
        let mut out = Vec::with_capacity(self.knobs.garbage_bytes);
        while out.len() < self.knobs.garbage_bytes {
            let b = (self.rng.next_u64() & 0xFF) as u8;
            if ![f.start, f.end, f.ack, f.nak].contains(&b) {
                out.push(b);
            }
        }
        out
    }

    async fn answer(&mut self, wr: &mut Out, byte: u8) -> Result<(), Hangup> {
        self.write(wr, &[byte]).await
    }

    async fn write(&mut self, wr: &mut Out, bytes: &[u8]) -> Result<(), Hangup> {
        if let Some(rec) = &self.recorder {
            rec.record(Direction::Tx, bytes);
        }
        self.stat(|s| s.tx_bytes += bytes.len() as u64);
        wr.write(bytes).await
    }
}

/// State of one connection.
struct Conn {
    decoder: FrameDecoder,
    queue: VecDeque<(u64, String)>,
    next_print: Option<Instant>,
}

/// What the printed symbol holds, as a reader reports it. A printer whose
/// profile takes FNC1 as an escape in the message (`fnc1 = "escape"`)
/// encodes each escape as FNC1: the first one makes the symbol GS1 (the
/// reader says so in its symbology identifier, not in the data), the
/// others separate fields and read as GS.
pub fn symbol_content(profile: &serialine_devices::printer::FramedProfile, code: String) -> String {
    match (profile.fnc1, profile.fnc1_escape.as_deref()) {
        (Some(serialine_devices::printer::Fnc1::Escape), Some(esc)) if !esc.is_empty() => {
            let body = code.strip_prefix(esc).unwrap_or(&code);
            body.replace(esc, "\u{1d}")
        }
        _ => code,
    }
}

#[cfg(test)]
mod tests {
    use super::{symbol_content, SplitMix64};
    use serialine_devices::printer::FramedProfile;

    #[test]
    fn an_fnc1_escape_prints_as_a_gs1_symbol_whose_fields_read_as_gs() {
        let stx = include_str!("../../../config/printer-cij-stx.toml");
        let mut p: FramedProfile = toml::from_str(stx).expect("shipped profile");
        let code = "0109506000134352\u{1d}10ABC\u{1d}21XYZ";
        // The shipped profile asks the printer for GS1 mode: sent as is.
        assert_eq!(symbol_content(&p, code.into()), code);
        p.fnc1 = Some(serialine_devices::printer::Fnc1::Escape);
        p.fnc1_escape = Some("~1".into());
        let sent = p.printer_code(code).into_owned();
        assert_eq!(sent, "~10109506000134352~110ABC~121XYZ");
        assert_eq!(symbol_content(&p, sent), code);
    }

    #[test]
    fn prng_is_deterministic_and_rates_hold_roughly() {
        let mut a = SplitMix64::new(7);
        let mut b = SplitMix64::new(7);
        assert_eq!(a.next_u64(), b.next_u64());
        let hits = (0..10_000).filter(|_| a.chance(0.25)).count();
        assert!((2_200..2_800).contains(&hits), "{hits}");
        assert!(!a.chance(0.0) && a.chance(1.0));
        assert_eq!(a.below(0), 0);
    }
}
