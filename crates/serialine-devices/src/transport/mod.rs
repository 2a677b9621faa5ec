//! Byte transports to line equipment: serial ports and TCP streams.
//!
//! A driver gets its bytes through a [`Link`]: either settings it can
//! (re)connect from, with [`Backoff`] between attempts, or one already-open
//! stream (a pty in tests, a socket handed over by the caller) that cannot be
//! reopened once it drops.

mod backoff;
mod settings;

pub use backoff::Backoff;
pub use settings::{
    DataBitsSetting, FlowControlSetting, ParitySetting, SerialSettings, StopBitsSetting,
    TcpSettings, TransportSettings,
};

use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};
use tokio_serial::SerialPortBuilderExt;

/// Any duplex byte stream a driver can run over.
pub trait DeviceStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> DeviceStream for T {}

/// An open transport, type-erased so drivers need not be generic over it.
pub type BoxedStream = Box<dyn DeviceStream>;

/// Why a transport could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot open serial port {path}: {source}")]
    Serial {
        path: String,
        #[source]
        source: tokio_serial::Error,
    },
    #[error("cannot resolve {addr}: {source}")]
    Resolve {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{addr} resolves to no address")]
    NoAddress { addr: String },
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to {addr} timed out after {after:?}")]
    ConnectTimeout { addr: String, after: Duration },
}

impl TransportSettings {
    /// Opens the transport once (no retry: [`Link`] retries).
    pub async fn connect(&self) -> Result<BoxedStream, TransportError> {
        match self {
            TransportSettings::Serial(s) => open_serial(s).map(|p| Box::new(p) as BoxedStream),
            TransportSettings::Tcp(t) => connect_tcp(t).await.map(|s| Box::new(s) as BoxedStream),
        }
    }

    /// A short human name for logs and fault reasons.
    pub fn describe(&self) -> String {
        match self {
            TransportSettings::Serial(s) => format!("serial {}", s.path),
            TransportSettings::Tcp(t) => format!("tcp {}", t.addr),
        }
    }
}

fn open_serial(s: &SerialSettings) -> Result<tokio_serial::SerialStream, TransportError> {
    tokio_serial::new(&s.path, s.baud)
        .data_bits(s.data_bits.into())
        .parity(s.parity.into())
        .stop_bits(s.stop_bits.into())
        .flow_control(s.flow_control.into())
        .open_native_async()
        .map_err(|source| TransportError::Serial {
            path: s.path.clone(),
            source,
        })
}

async fn connect_tcp(t: &TcpSettings) -> Result<TcpStream, TransportError> {
    let after = Duration::from_millis(t.connect_timeout_ms);
    let attempt = async {
        let mut addrs =
            tokio::net::lookup_host(&t.addr)
                .await
                .map_err(|source| TransportError::Resolve {
                    addr: t.addr.clone(),
                    source,
                })?;
        let addr = addrs.next().ok_or_else(|| TransportError::NoAddress {
            addr: t.addr.clone(),
        })?;
        let connect_err = |source| TransportError::Connect {
            addr: t.addr.clone(),
            source,
        };
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(connect_err)?;
        // Keep-alive makes a silently vanished peer (cable pulled, device
        // power-cycled) surface as a read error instead of a hang; the OS
        // default probe interval is slow but costs nothing here.
        if t.keepalive {
            socket.set_keepalive(true).map_err(connect_err)?;
        }
        let stream = socket.connect(addr).await.map_err(connect_err)?;
        // Frames are small and latency-bound (ACK round trips), so Nagle
        // would only add delay.
        stream.set_nodelay(t.nodelay).map_err(connect_err)?;
        Ok(stream)
    };
    tokio::time::timeout(after, attempt)
        .await
        .map_err(|_| TransportError::ConnectTimeout {
            addr: t.addr.clone(),
            after,
        })?
}

/// Where a driver gets its stream from.
pub enum Link {
    /// Connect from settings, and reconnect with backoff after a drop.
    Settings(TransportSettings),
    /// One already-open stream; when it drops the driver reports a fault and
    /// stops, because it has nothing to reconnect with.
    Open(BoxedStream),
}

impl Link {
    /// Wraps an already-open stream (e.g. one side of a pty pair).
    pub fn open(stream: impl DeviceStream + 'static) -> Self {
        Link::Open(Box::new(stream))
    }

    pub fn describe(&self) -> String {
        match self {
            Link::Settings(s) => s.describe(),
            Link::Open(_) => "pre-opened stream".to_owned(),
        }
    }
}

impl From<TransportSettings> for Link {
    fn from(s: TransportSettings) -> Self {
        Link::Settings(s)
    }
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// What one connection attempt produced.
pub(crate) enum Attempt<C, E> {
    Connected(C),
    /// Failed; the supervisor retries after its backoff delay.
    Failed(E),
    /// An open stream that was already used: nothing more to connect.
    Exhausted,
}

impl<C, E> From<Result<C, E>> for Attempt<C, E> {
    fn from(r: Result<C, E>) -> Self {
        r.map_or_else(Attempt::Failed, Attempt::Connected)
    }
}

/// Hands out streams for a driver's connection loop.
pub(crate) enum Connector {
    Settings(TransportSettings),
    /// `None` once the single stream was handed out. In a `Mutex` only so
    /// that a driver owning the connector is `Sync` (its `&self` methods are
    /// awaited in a spawned task); it is reached through `get_mut`, never
    /// locked.
    Open(std::sync::Mutex<Option<BoxedStream>>),
}

impl Connector {
    pub(crate) fn new(link: Link) -> Self {
        match link {
            Link::Settings(settings) => Connector::Settings(settings),
            Link::Open(s) => Connector::Open(std::sync::Mutex::new(Some(s))),
        }
    }

    /// The backoff between reconnects; `None` for a pre-opened stream,
    /// which cannot be reopened.
    pub(crate) fn backoff(&self) -> Option<Backoff> {
        match self {
            Connector::Settings(_) => Some(Backoff::default()),
            Connector::Open(_) => None,
        }
    }

    pub(crate) async fn attempt(&mut self) -> Attempt<BoxedStream, TransportError> {
        match self {
            Connector::Open(s) => s
                .get_mut()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take()
                .map_or(Attempt::Exhausted, Attempt::Connected),
            Connector::Settings(settings) => match settings.connect().await {
                Ok(s) => Attempt::Connected(s),
                Err(error) => Attempt::Failed(error),
            },
        }
    }
}
