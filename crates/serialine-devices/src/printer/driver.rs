//! The framed-ASCII printer driver task.
//!
//! Pipelined, not stop-and-wait: it keeps up to `buffer_depth` codes in the
//! printer (sent and not yet reported printed), so the line stays busy while
//! ACKs and print reports travel back. ACK/NAK answer messages in the order
//! they were sent; print reports carry the message id and are matched by it.
//!
//! It never resends. When the link drops, an ACK does not come, or a write
//! stalls, every unit sent and not confirmed printed is reported in
//! `Fault { unknown }`, the connection is dropped (a late ACK on the old
//! connection could otherwise be paired with the wrong unit) and, if the
//! driver owns the settings, it reconnects with backoff and says `Ready`.
//! Requests waiting in the channel at that point, or arriving while
//! disconnected, were never sent and are `Refused`.

use super::framed::{encode_frame, FrameDecoder, Token};
use super::profile::{CompiledProfile, FramedProfile, ProfileError};
use crate::api::{PrintRequest, PrinterEvent, PrinterHandle, TriggerIds, UnitId};
use crate::session::{supervise, Device, Done, End, Reconnect};
use crate::transport::{Attempt, BoxedStream, Connector, Link, TransportError};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Room for events the pipeline has not consumed yet; the driver waits (and
/// stops reading the device) when it is full, which is the right back-pressure.
const EVENT_QUEUE: usize = 1024;

/// Starts a framed-ASCII printer driver on the current tokio runtime.
///
/// With [`Link::Settings`] the driver connects (and reconnects) itself; with
/// [`Link::Open`] it runs over that one stream and ends after it drops.
pub fn spawn(
    name: impl Into<String>,
    link: impl Into<Link>,
    profile: &FramedProfile,
) -> Result<PrinterHandle, ProfileError> {
    let compiled = profile.compile()?;
    // A camera triggered by the print-complete reports the message id: the
    // unit id modulo 10^width.
    let trigger_ids = TriggerIds::UnitId {
        modulus: compiled
            .message
            .id_width()
            .and_then(|w| u32::try_from(w).ok())
            .and_then(|w| 10u64.checked_pow(w)),
    };
    let name = name.into();
    let depth = profile.buffer_depth;
    let (req_tx, req_rx) = mpsc::channel(depth);
    let (ev_tx, ev_rx) = mpsc::channel(EVENT_QUEUE);
    let connector = Connector::new(link.into());
    let reconnect = connector
        .backoff()
        .map_or(Reconnect::never(), Reconnect::with);
    let driver = Driver {
        name: name.clone(),
        decoder: FrameDecoder::new(compiled.framing),
        p: compiled,
        requests: req_rx,
        requests_closed: false,
        events: ev_tx,
        inflight: VecDeque::with_capacity(depth),
        frame_buf: Vec::new(),
        connector,
    };
    tokio::spawn(supervise(driver, reconnect));
    Ok(PrinterHandle {
        name,
        requests: req_tx,
        events: ev_rx,
        capacity: depth,
        trigger_ids,
    })
}

/// A unit sent to the printer and not yet done with.
#[derive(Debug)]
struct Inflight {
    unit: UnitId,
    wire_id: u64,
    sent_at: Instant,
    acked_at: Option<Instant>,
    /// Reported printed before its ACK arrived: kept only so that ACK pairs
    /// with it and not with the next message.
    printed: bool,
}

struct Driver {
    name: String,
    p: CompiledProfile,
    decoder: FrameDecoder,
    requests: mpsc::Receiver<PrintRequest>,
    requests_closed: bool,
    events: mpsc::Sender<PrinterEvent>,
    inflight: VecDeque<Inflight>,
    frame_buf: Vec<u8>,
    connector: Connector,
}

impl Device for Driver {
    type Conn = BoxedStream;
    type ConnectError = TransportError;
    type Event = PrinterEvent;
    const KIND: &'static str = "printer";
    const READY_ON_CONNECT: bool = true;
    const LOSS_REPORTS_OUTAGE: bool = false;

    fn name(&self) -> &str {
        &self.name
    }

    fn events(&self) -> &mpsc::Sender<PrinterEvent> {
        &self.events
    }

    async fn connect(&mut self) -> Attempt<BoxedStream, TransportError> {
        self.connector.attempt().await
    }

    /// Everything in flight is reported unknown with the fault.
    async fn session(&mut self, stream: BoxedStream, reconnect: &mut Reconnect) -> End {
        match self.serve(stream, reconnect).await {
            Ok(reason) => {
                let unknown = self
                    .inflight
                    .drain(..)
                    .filter(|f| !f.printed)
                    .map(|f| f.unit)
                    .collect();
                End::Lost { reason, unknown }
            }
            Err(done) => done.into(),
        }
    }

    /// Requests that were queued when the link failed were never sent.
    async fn after_fault(&mut self) -> Result<(), Done> {
        while let Ok(req) = self.requests.try_recv() {
            self.refuse_unsent(req).await?;
        }
        Ok(())
    }

    /// Waits out a backoff delay, refusing requests that arrive meanwhile;
    /// done, rather than reconnecting, once the pipeline sends no more.
    async fn pause(&mut self, delay: Duration) -> Result<(), Done> {
        let until = Instant::now() + delay;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => break,
                req = self.requests.recv(), if !self.requests_closed => match req {
                    None => {
                        self.requests_closed = true;
                        return Err(Done);
                    }
                    Some(req) => self.refuse_unsent(req).await?,
                },
                _ = self.events.closed() => return Err(Done),
            }
        }
        // Closed during the session: done after the delay.
        if self.requests_closed {
            return Err(Done);
        }
        Ok(())
    }
}

impl Driver {
    /// Runs one connection until it faults (returns why) or the pipeline
    /// is done.
    async fn serve(
        &mut self,
        stream: BoxedStream,
        reconnect: &mut Reconnect,
    ) -> Result<String, Done> {
        let (mut rd, mut wr) = tokio::io::split(stream);
        self.decoder.reset();
        let mut rbuf = vec![0u8; 4096];
        let mut decoded = Vec::new();
        let mut healthy = false;
        loop {
            if self.requests_closed && self.inflight.is_empty() {
                let _ = wr.shutdown().await;
                return Err(Done);
            }
            let deadline = self.next_deadline();
            let room = !self.requests_closed && self.inflight.len() < self.p.profile.buffer_depth;
            let far = Instant::now() + Duration::from_secs(3600);
            tokio::select! {
                // Reading first: ACKs and reports free buffer room and must
                // never wait behind new sends.
                biased;
                r = rd.read(&mut rbuf) => match r {
                    Ok(0) => return Ok("printer closed the connection".into()),
                    Ok(n) => {
                        if !healthy {
                            // Something came back: the link works, so the next
                            // outage starts backing off from the beginning.
                            healthy = true;
                            reconnect.healthy();
                        }
                        decoded.clear();
                        self.decoder.feed_all(&rbuf[..n], &mut decoded);
                        for d in decoded.drain(..) {
                            self.on_decoded(d).await?;
                        }
                    }
                    Err(e) => return Ok(format!("reading from printer: {e}")),
                },
                _ = tokio::time::sleep_until(deadline.as_ref().map_or(far, |d| d.0)),
                    if deadline.is_some() =>
                {
                    let reason = deadline.map_or_else(String::new, |d| d.1);
                    return Ok(reason);
                }
                _ = self.events.closed() => return Err(Done),
                req = self.requests.recv(), if room => match req {
                    None => self.requests_closed = true,
                    Some(req) => {
                        if let Some(reason) = self.send(&mut wr, req).await? {
                            return Ok(reason);
                        }
                    }
                },
            }
        }
    }

    /// Frames and writes one code. `Some(reason)` if the link failed.
    async fn send(
        &mut self,
        wr: &mut tokio::io::WriteHalf<BoxedStream>,
        req: PrintRequest,
    ) -> Result<Option<String>, Done> {
        // The profile's FNC1 escape, if it uses one, makes the element
        // string a GS1 symbol on this printer.
        let code = self.p.profile.printer_code(&req.code);
        let message = self.p.message.render(req.unit, &code);
        self.frame_buf.clear();
        if let Err(e) = encode_frame(&self.p.framing, message.as_bytes(), &mut self.frame_buf) {
            // Nothing was sent, so this is a definite "will not print".
            self.emit(PrinterEvent::Refused {
                unit: req.unit,
                reason: format!("code cannot be sent to this printer: {e}"),
            })
            .await?;
            return Ok(None);
        }
        // Recorded before the first byte goes out: a write that fails half
        // way leaves the unit's fate unknown, and it must be reported so.
        self.inflight.push_back(Inflight {
            unit: req.unit,
            wire_id: self.p.message.wire_id(req.unit),
            sent_at: Instant::now(),
            acked_at: None,
            printed: false,
        });
        let timeout = self.p.profile.ack_timeout();
        let write = async {
            wr.write_all(&self.frame_buf).await?;
            wr.flush().await
        };
        Ok(match tokio::time::timeout(timeout, write).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(format!("writing to printer: {e}")),
            Err(_) => Some(format!(
                "printer did not take a {}-byte frame within {} ms",
                self.frame_buf.len(),
                timeout.as_millis()
            )),
        })
    }

    async fn on_decoded(&mut self, d: super::framed::Decoded) -> Result<(), Done> {
        match d {
            Ok(Token::Ack) => self.on_ack().await,
            Ok(Token::Nak) => self.on_nak().await,
            Ok(Token::Frame(payload)) => self.on_frame(&payload).await,
            Err(e) => {
                // A damaged frame may have been a print report; the unit
                // then stays outstanding until print_timeout_ms (if set) or
                // the next fault reports it unknown. Never guessed.
                tracing::warn!(printer = %self.name, error = %e, "bad frame from printer");
                Ok(())
            }
        }
    }

    async fn on_ack(&mut self) -> Result<(), Done> {
        let Some(i) = self.inflight.iter().position(|f| f.acked_at.is_none()) else {
            tracing::warn!(printer = %self.name, "ACK with no message awaiting one; ignored");
            return Ok(());
        };
        let entry = &mut self.inflight[i];
        entry.acked_at = Some(Instant::now());
        if entry.printed {
            // Accepted and Printed were reported when the report came.
            self.inflight.remove(i);
            return Ok(());
        }
        let unit = entry.unit;
        self.emit(PrinterEvent::Accepted(unit)).await
    }

    async fn on_nak(&mut self) -> Result<(), Done> {
        let Some(i) = self.inflight.iter().position(|f| f.acked_at.is_none()) else {
            tracing::warn!(printer = %self.name, "NAK with no message awaiting one; ignored");
            return Ok(());
        };
        let Some(entry) = self.inflight.remove(i) else {
            return Ok(());
        };
        if entry.printed {
            // Reported printed, then refused: contradictory. Printed wins
            // (it was on the product); say so loudly.
            tracing::error!(printer = %self.name, unit = entry.unit, "NAK for a unit already reported printed");
            return Ok(());
        }
        self.emit(PrinterEvent::Refused {
            unit: entry.unit,
            reason: "printer answered NAK".into(),
        })
        .await
    }

    async fn on_frame(&mut self, payload: &[u8]) -> Result<(), Done> {
        let Some(id) = self.p.complete.matches(payload).and_then(|m| m.id) else {
            tracing::debug!(printer = %self.name, frame = %String::from_utf8_lossy(payload), "unhandled frame");
            return Ok(());
        };
        let Some(i) = self
            .inflight
            .iter()
            .position(|f| f.wire_id == id && !f.printed)
        else {
            // E.g. a unit sent before a reconnect: already reported unknown.
            tracing::warn!(printer = %self.name, id, "print report for no unit in flight; ignored");
            return Ok(());
        };
        let entry = &mut self.inflight[i];
        let unit = entry.unit;
        if entry.acked_at.is_none() {
            entry.printed = true;
            self.emit(PrinterEvent::Accepted(unit)).await?;
        } else {
            self.inflight.remove(i);
        }
        self.emit(PrinterEvent::Printed(unit)).await
    }

    /// The earliest ACK or print deadline, with the fault it would raise.
    fn next_deadline(&self) -> Option<(Instant, String)> {
        let ack_timeout = self.p.profile.ack_timeout();
        let ack = self
            .inflight
            .iter()
            .find(|f| f.acked_at.is_none())
            .map(|f| {
                (
                    f.sent_at + ack_timeout,
                    format!(
                        "no ACK/NAK from printer for unit {} within {} ms",
                        f.unit,
                        ack_timeout.as_millis()
                    ),
                )
            });
        let print = self.p.profile.print_timeout().and_then(|t| {
            self.inflight
                .iter()
                .filter(|f| !f.printed)
                .filter_map(|f| f.acked_at.map(|a| (a + t, f.unit)))
                .min_by_key(|(at, _)| *at)
                .map(|(at, unit)| {
                    (
                        at,
                        format!(
                            "unit {unit} accepted but not reported printed within {} ms",
                            t.as_millis()
                        ),
                    )
                })
        });
        match (ack, print) {
            (Some(a), Some(p)) => Some(if a.0 <= p.0 { a } else { p }),
            (a, p) => a.or(p),
        }
    }

    async fn refuse_unsent(&mut self, req: PrintRequest) -> Result<(), Done> {
        self.emit(PrinterEvent::Refused {
            unit: req.unit,
            reason: "not sent: printer link is down".into(),
        })
        .await
    }

    async fn emit(&self, ev: PrinterEvent) -> Result<(), Done> {
        self.events.send(ev).await.map_err(|_| Done)
    }
}
