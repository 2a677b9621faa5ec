//! ZPL label printer driver over raw TCP (port 9100): one label in flight,
//! confirmed by `~HS` reporting an empty receive buffer.

use std::net::SocketAddr;
use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{sleep, timeout, Instant};

use super::status::{parse_host_status, reply_complete, HostStatus, StatusError, MAX_REPLY};
use super::zpl::{render, LabelTemplate, RenderError};
use crate::api::{PrintRequest, PrinterEvent, PrinterHandle, TriggerIds, UnitId};
use crate::session::{supervise, Device, End, Reconnect};
use crate::transport::{Attempt, Backoff};

/// Link and timing settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelSettings {
    pub addr: SocketAddr,
    /// Longest wait for a connect, a write or a `~HS` reply.
    pub request_timeout: Duration,
    /// Longest a label may take to leave the buffer before its unit is
    /// reported unknown.
    pub print_timeout: Duration,
    /// Status poll period while idle, to notice faults early.
    pub idle_poll: Duration,
    pub reconnect_initial: Duration,
    pub reconnect_max: Duration,
}

impl LabelSettings {
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            request_timeout: Duration::from_secs(2),
            print_timeout: Duration::from_secs(10),
            idle_poll: Duration::from_millis(500),
            reconnect_initial: Duration::from_millis(50),
            reconnect_max: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Error)]
pub enum LabelError {
    #[error("label printer {device}: cannot connect to {addr}: {source}")]
    Connect {
        device: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("label printer {device}: {op} timed out after {after:?}")]
    Timeout {
        device: String,
        op: &'static str,
        after: Duration,
    },
    #[error("label printer {device}: {op} failed: {source}")]
    Io {
        device: String,
        op: &'static str,
        source: std::io::Error,
    },
    #[error("label printer {device}: connection closed by the printer during {op}")]
    Closed { device: String, op: &'static str },
    #[error("label printer {device}: ~HS reply longer than {max} bytes")]
    ReplyTooLong { device: String, max: usize },
    #[error("label printer {device}: bad ~HS reply: {source}")]
    Status { device: String, source: StatusError },
    #[error("label printer {device}: cannot render unit {unit}: {source}")]
    Render {
        device: String,
        unit: UnitId,
        source: RenderError,
    },
}

/// Start the driver with default timings. Must be called inside a Tokio
/// runtime. Fails only on an unusable template.
pub fn spawn(
    name: impl Into<String>,
    addr: SocketAddr,
    template: LabelTemplate,
) -> Result<PrinterHandle, RenderError> {
    spawn_with(name, LabelSettings::new(addr), template)
}

pub fn spawn_with(
    name: impl Into<String>,
    settings: LabelSettings,
    template: LabelTemplate,
) -> Result<PrinterHandle, RenderError> {
    template.validate()?;
    let name = name.into();
    let (req_tx, req_rx) = mpsc::channel(16);
    let (ev_tx, ev_rx) = mpsc::channel(64);
    let backoff = Backoff::new(settings.reconnect_initial, 2, settings.reconnect_max);
    let driver = Driver {
        name: name.clone(),
        settings,
        template,
        events: ev_tx,
        requests: req_rx,
    };
    tokio::spawn(supervise(driver, Reconnect::with(backoff)));
    Ok(PrinterHandle {
        name,
        requests: req_tx,
        events: ev_rx,
        // One label at a time: ~HS can only say "buffer empty", not which
        // label left it.
        capacity: 1,
        trigger_ids: TriggerIds::Unknown,
    })
}

struct Driver {
    name: String,
    settings: LabelSettings,
    template: LabelTemplate,
    events: mpsc::Sender<PrinterEvent>,
    requests: mpsc::Receiver<PrintRequest>,
}

impl Device for Driver {
    type Conn = TcpStream;
    type ConnectError = LabelError;
    type Event = PrinterEvent;
    const KIND: &'static str = "label printer";
    // Ready only once ~HS says the printer can print.
    const READY_ON_CONNECT: bool = false;
    const LOSS_REPORTS_OUTAGE: bool = true;

    fn name(&self) -> &str {
        &self.name
    }

    fn events(&self) -> &mpsc::Sender<PrinterEvent> {
        &self.events
    }

    async fn connect(&mut self) -> Attempt<TcpStream, LabelError> {
        let after = self.settings.request_timeout;
        match timeout(after, TcpStream::connect(self.settings.addr)).await {
            Ok(Ok(stream)) => {
                // Small command, small answer (~HS, one label): without it
                // Nagle holds a write until the peer's delayed ACK, some
                // 40 ms per exchange.
                let _ = stream.set_nodelay(true);
                Attempt::Connected(stream)
            }
            Ok(Err(source)) => Attempt::Failed(LabelError::Connect {
                device: self.name.clone(),
                addr: self.settings.addr,
                source,
            }),
            Err(_) => Attempt::Failed(LabelError::Timeout {
                device: self.name.clone(),
                op: "connect",
                after,
            }),
        }
    }

    async fn session(&mut self, mut s: TcpStream, reconnect: &mut Reconnect) -> End {
        match self.session_inner(&mut s, reconnect).await {
            Ok(never) => match never {},
            Err(end) => end,
        }
    }
}

impl Driver {
    async fn emit(&self, ev: PrinterEvent) -> Result<(), End> {
        tracing::debug!(device = %self.name, event = ?ev, "label event");
        self.events.send(ev).await.map_err(|_| End::Stopped)
    }

    fn poll(&self) -> Duration {
        Duration::from_millis(self.template.poll_interval_ms)
    }

    async fn write(
        &self,
        s: &mut TcpStream,
        op: &'static str,
        bytes: &[u8],
    ) -> Result<(), LabelError> {
        let after = self.settings.request_timeout;
        let io = async {
            s.write_all(bytes).await?;
            s.flush().await
        };
        match timeout(after, io).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(LabelError::Io {
                device: self.name.clone(),
                op,
                source,
            }),
            Err(_) => Err(LabelError::Timeout {
                device: self.name.clone(),
                op,
                after,
            }),
        }
    }

    /// Send `~HS` and read its three frames.
    async fn host_status(&self, s: &mut TcpStream) -> Result<HostStatus, LabelError> {
        self.write(s, "send ~HS", b"~HS").await?;
        let after = self.settings.request_timeout;
        let read = async {
            let mut buf = Vec::with_capacity(96);
            let mut chunk = [0u8; 128];
            while !reply_complete(&buf) {
                let n = s.read(&mut chunk).await.map_err(|source| LabelError::Io {
                    device: self.name.clone(),
                    op: "read ~HS reply",
                    source,
                })?;
                if n == 0 {
                    return Err(LabelError::Closed {
                        device: self.name.clone(),
                        op: "read ~HS reply",
                    });
                }
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > MAX_REPLY {
                    return Err(LabelError::ReplyTooLong {
                        device: self.name.clone(),
                        max: MAX_REPLY,
                    });
                }
            }
            Ok(buf)
        };
        let buf = match timeout(after, read).await {
            Ok(res) => res?,
            Err(_) => {
                return Err(LabelError::Timeout {
                    device: self.name.clone(),
                    op: "read ~HS reply",
                    after,
                })
            }
        };
        parse_host_status(&buf).map_err(|source| LabelError::Status {
            device: self.name.clone(),
            source,
        })
    }

    /// Every status error is a link problem here: a reply we cannot parse
    /// leaves the byte stream out of step, so reconnecting resynchronises.
    async fn status_or_lost(
        &self,
        s: &mut TcpStream,
        unknown: &[UnitId],
    ) -> Result<HostStatus, End> {
        self.host_status(s)
            .await
            .map_err(|err| End::lost(err, unknown.to_vec()))
    }

    /// Poll `~HS` until the printer can print, reporting a fault once
    /// (unless the caller already did). `healthy`, on a fresh connection, is
    /// told once the printer answered: only then does the link count as
    /// working.
    async fn wait_printable(
        &self,
        s: &mut TcpStream,
        already_reported: bool,
        mut healthy: Option<&mut Reconnect>,
    ) -> Result<(), End> {
        let mut reported = already_reported;
        loop {
            let st = self.status_or_lost(s, &[]).await?;
            if let Some(reconnect) = healthy.take() {
                reconnect.healthy();
            }
            match st.fault_reason() {
                None => return Ok(()),
                Some(why) if !reported => {
                    reported = true;
                    let reason = format!("label printer {}: {why}", self.name);
                    self.emit(PrinterEvent::Fault {
                        reason,
                        unknown: vec![],
                    })
                    .await?;
                }
                Some(_) => {}
            }
            sleep(self.poll()).await;
        }
    }

    async fn session_inner(
        &mut self,
        s: &mut TcpStream,
        reconnect: &mut Reconnect,
    ) -> Result<std::convert::Infallible, End> {
        // The backoff restarts on the first ~HS reply, not on connect: a
        // printer (or a port forwarder in front of it) that accepts TCP and
        // then drops it or stays silent is retried ever more slowly.
        self.wait_printable(s, false, Some(reconnect)).await?;
        self.emit(PrinterEvent::Ready).await?;
        loop {
            let idle = sleep(self.settings.idle_poll);
            tokio::select! {
                req = self.requests.recv() => match req {
                    None => return Err(End::Stopped),
                    Some(req) => self.print(s, req).await?,
                },
                () = idle => {
                    let st = self.status_or_lost(s, &[]).await?;
                    if st.fault_reason().is_some() {
                        self.wait_printable(s, false, None).await?;
                        self.emit(PrinterEvent::Ready).await?;
                    }
                }
            }
        }
    }

    async fn print(&self, s: &mut TcpStream, req: PrintRequest) -> Result<(), End> {
        let unit = req.unit;
        let zpl = match render(&self.template, &req.code) {
            Ok(z) => z,
            Err(source) => {
                let err = LabelError::Render {
                    device: self.name.clone(),
                    unit,
                    source,
                };
                let reason = err.to_string();
                return self.emit(PrinterEvent::Refused { unit, reason }).await;
            }
        };

        // Check before sending: a label sent to a printer that is out of
        // paper would print later, after the line has moved on.
        let refuse = |reason: String| PrinterEvent::Refused { unit, reason };
        let st = match self.host_status(s).await {
            Ok(st) => st,
            Err(err) => {
                self.emit(refuse(format!("not sent: {err}"))).await?;
                return Err(End::lost(err, vec![]));
            }
        };
        if let Some(why) = st.fault_reason() {
            let reason = format!("label printer {}: {why}", self.name);
            self.emit(PrinterEvent::Fault {
                reason: reason.clone(),
                unknown: vec![],
            })
            .await?;
            self.emit(refuse(format!("not sent: {reason}"))).await?;
            self.wait_printable(s, true, None).await?;
            return self.emit(PrinterEvent::Ready).await;
        }

        if let Err(err) = self.write(s, "send label", zpl.as_bytes()).await {
            // The format ends with ^XZ, the last bytes written: a failed
            // write never delivered a complete format, so nothing prints.
            self.emit(refuse(format!("not sent: {err}"))).await?;
            return Err(End::lost(err, vec![]));
        }
        self.emit(PrinterEvent::Accepted(unit)).await?;

        let deadline = Instant::now() + self.settings.print_timeout;
        loop {
            let st = self.status_or_lost(s, &[unit]).await?;
            // Empty buffer first: the last label before paper runs out does
            // come out, and the flag rises with it.
            if st.all_printed() {
                return self.emit(PrinterEvent::Printed(unit)).await;
            }
            if let Some(why) = st.fault_reason() {
                let reason = format!("label printer {}: {why} while printing", self.name);
                self.emit(PrinterEvent::Fault {
                    reason,
                    unknown: vec![unit],
                })
                .await?;
                self.wait_printable(s, true, None).await?;
                return self.emit(PrinterEvent::Ready).await;
            }
            if Instant::now() >= deadline {
                let reason = format!(
                    "label printer {}: label not printed within {:?}",
                    self.name, self.settings.print_timeout
                );
                self.emit(PrinterEvent::Fault {
                    reason,
                    unknown: vec![unit],
                })
                .await?;
                self.wait_printable(s, true, None).await?;
                return self.emit(PrinterEvent::Ready).await;
            }
            sleep(self.poll()).await;
        }
    }
}
