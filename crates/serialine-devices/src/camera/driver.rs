//! The camera result reader task.
//!
//! Reads lines (ending in `\n` or `\r\n`; any other byte, GS 0x1D included,
//! is content), parses each with the profile's [`LineFormat`] and reports a
//! `Read`, or `Garbage` for a line it cannot parse: one bad line never stops
//! the reader. A dropped link is a `Fault`; with settings the reader
//! reconnects with backoff and reports `Ready` again.

use super::format::{CameraProfile, CameraProfileError, LineFormat};
use crate::api::{CameraEvent, CameraHandle};
use crate::session::{supervise, Device, Done, End, Reconnect};
use crate::transport::{Attempt, BoxedStream, Connector, Link, TransportError};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

const EVENT_QUEUE: usize = 1024;
/// Garbage reports quote at most this much of the offending line.
const QUOTE_LIMIT: usize = 256;

/// Starts a camera reader on the current tokio runtime.
pub fn spawn(
    name: impl Into<String>,
    link: impl Into<Link>,
    profile: &CameraProfile,
) -> Result<CameraHandle, CameraProfileError> {
    let format = profile.compile()?;
    let name = name.into();
    let (tx, rx) = mpsc::channel(EVENT_QUEUE);
    let connector = Connector::new(link.into());
    let reconnect = connector
        .backoff()
        .map_or(Reconnect::never(), Reconnect::with);
    let reader = Reader {
        name: name.clone(),
        format,
        events: tx,
        connector,
    };
    tokio::spawn(supervise(reader, reconnect));
    Ok(CameraHandle { name, events: rx })
}

struct Reader {
    name: String,
    format: LineFormat,
    events: mpsc::Sender<CameraEvent>,
    connector: Connector,
}

impl Device for Reader {
    type Conn = BoxedStream;
    type ConnectError = TransportError;
    type Event = CameraEvent;
    const KIND: &'static str = "camera";
    const READY_ON_CONNECT: bool = true;
    const LOSS_REPORTS_OUTAGE: bool = false;

    fn name(&self) -> &str {
        &self.name
    }

    fn events(&self) -> &mpsc::Sender<CameraEvent> {
        &self.events
    }

    async fn connect(&mut self) -> Attempt<BoxedStream, TransportError> {
        self.connector.attempt().await
    }

    async fn session(&mut self, stream: BoxedStream, reconnect: &mut Reconnect) -> End {
        match self.serve(stream, reconnect).await {
            Ok(reason) => End::Lost {
                reason,
                unknown: Vec::new(),
            },
            Err(done) => done.into(),
        }
    }
}

impl Reader {
    /// Reads lines until the link fails; returns why.
    async fn serve(
        &self,
        mut stream: BoxedStream,
        reconnect: &mut Reconnect,
    ) -> Result<String, Done> {
        let max = self.format.max_line();
        let mut line: Vec<u8> = Vec::with_capacity(256);
        // Dropping the rest of an over-long line, up to its newline.
        let mut skipping = false;
        let mut buf = vec![0u8; 4096];
        let mut healthy = false;
        loop {
            let n = tokio::select! {
                r = stream.read(&mut buf) => match r {
                    Ok(0) => return Ok("camera closed the connection".into()),
                    Ok(n) => n,
                    Err(e) => return Ok(format!("reading from camera: {e}")),
                },
                _ = self.events.closed() => return Err(Done),
            };
            if !healthy {
                healthy = true;
                reconnect.healthy();
            }
            for &b in &buf[..n] {
                if b == b'\n' {
                    if skipping {
                        skipping = false;
                    } else {
                        self.on_line(&line).await?;
                    }
                    line.clear();
                } else if skipping {
                } else if line.len() >= max {
                    self.emit(CameraEvent::Garbage {
                        line: quote(&line),
                        reason: format!("line longer than {max} bytes"),
                    })
                    .await?;
                    line.clear();
                    skipping = true;
                } else {
                    line.push(b);
                }
            }
        }
    }

    async fn on_line(&self, line: &[u8]) -> Result<(), Done> {
        let trimmed = line.strip_suffix(b"\r").unwrap_or(line);
        if trimmed.is_empty() {
            // Keep-alive blank lines some cameras send: not a result.
            return Ok(());
        }
        let ev = match self.format.parse(line) {
            Ok(read) => CameraEvent::Read(read),
            Err(e) => CameraEvent::Garbage {
                line: quote(trimmed),
                reason: e.to_string(),
            },
        };
        self.emit(ev).await
    }

    async fn emit(&self, ev: CameraEvent) -> Result<(), Done> {
        self.events.send(ev).await.map_err(|_| Done)
    }
}

fn quote(line: &[u8]) -> String {
    let cut = &line[..line.len().min(QUOTE_LIMIT)];
    String::from_utf8_lossy(cut).into_owned()
}
