//! The camera result reader task.
//!
//! Reads lines (ending in `\n` or `\r\n`; any other byte, GS 0x1D included,
//! is content), parses each with the profile's [`LineFormat`] and reports a
//! `Read`, or `Garbage` for a line it cannot parse: one bad line never stops
//! the reader. A dropped link is a `Fault`; with settings the reader
//! reconnects with backoff and reports `Ready` again.

use super::format::{CameraProfile, CameraProfileError, LineFormat};
use crate::api::{CameraEvent, CameraHandle};
use crate::transport::{Attempt, BoxedStream, Connector, Link};
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
    let reader = Reader {
        name: name.clone(),
        format,
        events: tx,
    };
    tokio::spawn(reader.run(Connector::new(link.into())));
    Ok(CameraHandle { name, events: rx })
}

struct Gone;

struct Reader {
    name: String,
    format: LineFormat,
    events: mpsc::Sender<CameraEvent>,
}

impl Reader {
    async fn run(self, mut connector: Connector) {
        let _ = self.connection_loop(&mut connector).await;
        tracing::debug!(camera = %self.name, "camera reader stopped");
    }

    async fn connection_loop(&self, connector: &mut Connector) -> Result<(), Gone> {
        let mut outage_reported = false;
        loop {
            let retry_in = match connector.attempt().await {
                Attempt::Connected(stream) => {
                    outage_reported = false;
                    tracing::info!(camera = %self.name, "camera connected");
                    self.emit(CameraEvent::Ready).await?;
                    let reason = self.serve(stream, connector).await?;
                    tracing::warn!(camera = %self.name, %reason, "camera fault");
                    self.emit(CameraEvent::Fault { reason }).await?;
                    if !connector.can_reconnect() {
                        return Ok(());
                    }
                    connector.next_delay()
                }
                Attempt::Failed { error, retry_in } => {
                    tracing::warn!(camera = %self.name, %error, ?retry_in, "camera connect failed");
                    if !outage_reported {
                        outage_reported = true;
                        self.emit(CameraEvent::Fault {
                            reason: error.to_string(),
                        })
                        .await?;
                    }
                    retry_in
                }
                Attempt::Exhausted => return Ok(()),
            };
            tokio::select! {
                _ = tokio::time::sleep(retry_in) => {}
                _ = self.events.closed() => return Err(Gone),
            }
        }
    }

    /// Reads lines until the link fails; returns why.
    async fn serve(
        &self,
        mut stream: BoxedStream,
        connector: &mut Connector,
    ) -> Result<String, Gone> {
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
                _ = self.events.closed() => return Err(Gone),
            };
            if !healthy {
                healthy = true;
                connector.healthy();
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

    async fn on_line(&self, line: &[u8]) -> Result<(), Gone> {
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

    async fn emit(&self, ev: CameraEvent) -> Result<(), Gone> {
        self.events.send(ev).await.map_err(|_| Gone)
    }
}

fn quote(line: &[u8]) -> String {
    let cut = &line[..line.len().min(QUOTE_LIMIT)];
    String::from_utf8_lossy(cut).into_owned()
}
