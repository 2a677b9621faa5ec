//! The laser marker driver task: one unit in flight, code → registers,
//! trigger, then poll the mark counter until it advances.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use thiserror::Error;
use tokio::sync::mpsc;
use tokio::time::{sleep, timeout, Instant};
use tokio_modbus::client::{Client as _, Context, Reader, Writer};
use tokio_modbus::{ExceptionCode, Slave};

use super::map::{
    counter_delta, decode_status, pack_code, CodeError, LaserRegisterMap, LaserState, LaserStatus,
    MapError, Trigger,
};
use crate::api::{PrintRequest, PrinterEvent, PrinterHandle, TriggerIds, UnitId};
use crate::session::{supervise, Device, End, Reconnect};
use crate::transport::{Attempt, Backoff};

/// How to reach the marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LaserLink {
    /// Modbus TCP (port 502 on most markers).
    Tcp { addr: SocketAddr },
    /// Modbus RTU over a serial port (8N1).
    Rtu { path: String, baud_rate: u32 },
}

impl std::fmt::Display for LaserLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LaserLink::Tcp { addr } => write!(f, "modbus-tcp://{addr}"),
            LaserLink::Rtu { path, baud_rate } => write!(f, "modbus-rtu:{path}@{baud_rate}"),
        }
    }
}

/// Link and timing settings (the register map says *what*, this says *how*).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaserSettings {
    pub link: LaserLink,
    /// Longest wait for one Modbus answer before the link counts as lost.
    pub request_timeout: Duration,
    /// Longest a mark may take (counter not advancing) before the unit is
    /// reported unknown; also bounds waiting for "busy" to clear.
    pub mark_timeout: Duration,
    /// Status poll period while no code is waiting, to notice faults early.
    pub idle_poll: Duration,
    pub reconnect_initial: Duration,
    pub reconnect_max: Duration,
}

impl LaserSettings {
    pub fn tcp(addr: SocketAddr) -> Self {
        Self {
            link: LaserLink::Tcp { addr },
            request_timeout: Duration::from_secs(1),
            mark_timeout: Duration::from_secs(10),
            idle_poll: Duration::from_millis(250),
            reconnect_initial: Duration::from_millis(50),
            reconnect_max: Duration::from_secs(5),
        }
    }

    pub fn rtu(path: impl Into<String>, baud_rate: u32) -> Self {
        Self {
            link: LaserLink::Rtu {
                path: path.into(),
                baud_rate,
            },
            ..Self::tcp(SocketAddr::from(([127, 0, 0, 1], 502)))
        }
    }
}

/// What went wrong talking to the marker, naming the device, the operation
/// and the register.
#[derive(Debug, Error)]
pub enum LaserError {
    #[error("laser {device}: cannot connect to {link}: {source}")]
    Connect {
        device: String,
        link: String,
        source: std::io::Error,
    },
    #[error("laser {device}: connecting to {link} timed out after {after:?}")]
    ConnectTimeout {
        device: String,
        link: String,
        after: Duration,
    },
    #[error("laser {device}: {op} at register/coil {address} answered Modbus exception {code}")]
    Exception {
        device: String,
        op: &'static str,
        address: u16,
        code: ExceptionCode,
    },
    #[error("laser {device}: {op} at register/coil {address} failed: {source}")]
    Transport {
        device: String,
        op: &'static str,
        address: u16,
        source: tokio_modbus::Error,
    },
    #[error("laser {device}: {op} at register/coil {address}: no answer within {after:?}")]
    Timeout {
        device: String,
        op: &'static str,
        address: u16,
        after: Duration,
    },
    #[error("laser {device}: {op} at register {address} returned {got} words, asked for {want}")]
    ShortRead {
        device: String,
        op: &'static str,
        address: u16,
        got: usize,
        want: usize,
    },
    #[error("laser {device}: code of unit {unit} does not fit the marker: {source}")]
    Code {
        device: String,
        unit: UnitId,
        source: CodeError,
    },
}

impl LaserError {
    /// True when the connection can no longer be trusted (a late answer
    /// could be matched to the wrong request), so the driver reconnects.
    pub fn link_lost(&self) -> bool {
        matches!(
            self,
            LaserError::Connect { .. }
                | LaserError::ConnectTimeout { .. }
                | LaserError::Transport { .. }
                | LaserError::Timeout { .. }
                | LaserError::ShortRead { .. }
        )
    }
}

/// Start the driver task. Must be called inside a Tokio runtime.
///
/// The driver never writes a code twice: a unit whose trigger may have
/// reached the marker without a confirmed mark is reported in
/// `Fault::unknown`; a unit not yet triggered when the marker cannot take it
/// is `Refused`.
pub fn spawn(
    name: impl Into<String>,
    settings: LaserSettings,
    map: LaserRegisterMap,
) -> Result<PrinterHandle, MapError> {
    map.validate()?;
    let name = name.into();
    let (req_tx, req_rx) = mpsc::channel(16);
    let (ev_tx, ev_rx) = mpsc::channel(64);
    let backoff = Backoff::new(settings.reconnect_initial, 2, settings.reconnect_max);
    let driver = Driver {
        name: name.clone(),
        settings,
        map,
        events: ev_tx,
        requests: req_rx,
        coil_may_be_on: AtomicBool::new(true),
    };
    tokio::spawn(supervise(driver, Reconnect::with(backoff)));
    Ok(PrinterHandle {
        name,
        requests: req_tx,
        events: ev_rx,
        // The marker holds one code in its text registers.
        capacity: 1,
        // The mark counter is a 16-bit register.
        trigger_ids: TriggerIds::MarkIndex { modulus: 1 << 16 },
    })
}

struct Driver {
    name: String,
    settings: LaserSettings,
    map: LaserRegisterMap,
    events: mpsc::Sender<PrinterEvent>,
    requests: mpsc::Receiver<PrintRequest>,
    /// The trigger coil may still be ON (unknown after connect, or its
    /// release was refused): it must go OFF first or the next set makes no
    /// rising edge and nothing is marked.
    coil_may_be_on: AtomicBool,
}

impl Device for Driver {
    type Conn = Context;
    type ConnectError = LaserError;
    type Event = PrinterEvent;
    const KIND: &'static str = "laser";
    // Ready only once the status register says the marker can mark.
    const READY_ON_CONNECT: bool = false;
    const LOSS_REPORTS_OUTAGE: bool = true;

    fn name(&self) -> &str {
        &self.name
    }

    fn events(&self) -> &mpsc::Sender<PrinterEvent> {
        &self.events
    }

    async fn connect(&mut self) -> Attempt<Context, LaserError> {
        self.open().await.into()
    }

    async fn session(&mut self, mut ctx: Context, reconnect: &mut Reconnect) -> End {
        self.coil_may_be_on.store(true, Ordering::Relaxed);
        let end = match self.session_inner(&mut ctx, reconnect).await {
            Ok(never) => match never {},
            Err(end) => end,
        };
        if let End::Stopped = end {
            let _ = ctx.disconnect().await;
        }
        end
    }
}

impl Driver {
    async fn emit(&self, ev: PrinterEvent) -> Result<(), End> {
        tracing::debug!(device = %self.name, event = ?ev, "laser event");
        self.events.send(ev).await.map_err(|_| End::Stopped)
    }

    async fn open(&self) -> Result<Context, LaserError> {
        let slave = Slave(self.map.unit_id);
        let link = self.settings.link.to_string();
        let io_err = |source| LaserError::Connect {
            device: self.name.clone(),
            link: link.clone(),
            source,
        };
        match &self.settings.link {
            LaserLink::Tcp { addr } => {
                let after = self.settings.request_timeout;
                match timeout(
                    after,
                    tokio_modbus::client::tcp::connect_slave(*addr, slave),
                )
                .await
                {
                    Ok(res) => res.map_err(io_err),
                    Err(_) => Err(LaserError::ConnectTimeout {
                        device: self.name.clone(),
                        link,
                        after,
                    }),
                }
            }
            LaserLink::Rtu { path, baud_rate } => {
                use tokio_serial::SerialPortBuilderExt as _;
                let port = tokio_serial::new(path, *baud_rate)
                    .open_native_async()
                    .map_err(|e| io_err(e.into()))?;
                Ok(tokio_modbus::client::rtu::attach_slave(port, slave))
            }
        }
    }

    /// Run one Modbus call with the request timeout, flattening the nested
    /// `Result<Result<T, ExceptionCode>, Error>` into a typed error.
    async fn call<T>(
        &self,
        op: &'static str,
        address: u16,
        fut: impl Future<Output = tokio_modbus::Result<T>>,
    ) -> Result<T, LaserError> {
        let after = self.settings.request_timeout;
        match timeout(after, fut).await {
            Err(_) => Err(LaserError::Timeout {
                device: self.name.clone(),
                op,
                address,
                after,
            }),
            Ok(Err(source)) => Err(LaserError::Transport {
                device: self.name.clone(),
                op,
                address,
                source,
            }),
            Ok(Ok(Err(code))) => Err(LaserError::Exception {
                device: self.name.clone(),
                op,
                address,
                code,
            }),
            Ok(Ok(Ok(v))) => Ok(v),
        }
    }

    async fn read_word(
        &self,
        ctx: &mut Context,
        op: &'static str,
        address: u16,
    ) -> Result<u16, LaserError> {
        let words = self
            .call(op, address, ctx.read_holding_registers(address, 1))
            .await?;
        words.first().copied().ok_or(LaserError::ShortRead {
            device: self.name.clone(),
            op,
            address,
            got: words.len(),
            want: 1,
        })
    }

    async fn read_status(&self, ctx: &mut Context) -> Result<LaserStatus, LaserError> {
        let reg = self.map.status.register;
        let word = self.read_word(ctx, "read status", reg).await?;
        Ok(decode_status(word, &self.map.status))
    }

    async fn read_counter(&self, ctx: &mut Context) -> Result<u16, LaserError> {
        let reg = self.map.mark_counter_register;
        self.read_word(ctx, "read mark counter", reg).await
    }

    fn poll(&self) -> Duration {
        Duration::from_millis(self.map.poll_interval_ms)
    }

    async fn session_inner(
        &mut self,
        ctx: &mut Context,
        reconnect: &mut Reconnect,
    ) -> Result<std::convert::Infallible, End> {
        // The backoff restarts on the first status the marker answers, not
        // on connect: a marker (or a gateway in front of it) that accepts
        // TCP and then drops it or stays silent is retried ever more slowly.
        self.wait_markable(ctx, false, Some(reconnect)).await?;
        self.emit(PrinterEvent::Ready).await?;
        loop {
            let idle = sleep(self.settings.idle_poll);
            tokio::select! {
                req = self.requests.recv() => match req {
                    None => return Err(End::Stopped),
                    Some(req) => self.mark(ctx, req).await?,
                },
                () = idle => {
                    let status = self.read_status(ctx).await;
                    match self.classify(status, vec![])? {
                        Some(s) if s.fault_reason().is_some() => {
                            self.wait_markable(ctx, false, None).await?;
                            self.emit(PrinterEvent::Ready).await?;
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    /// Split a result into: value, a device-side problem (logged, `None`),
    /// or a lost link (ends the session with `unknown`).
    fn classify<T>(
        &self,
        res: Result<T, LaserError>,
        unknown: Vec<UnitId>,
    ) -> Result<Option<T>, End> {
        match res {
            Ok(v) => Ok(Some(v)),
            Err(err) if err.link_lost() => Err(End::lost(err, unknown)),
            Err(err) => {
                tracing::warn!(device = %self.name, error = %err, "laser answered an exception");
                Ok(None)
            }
        }
    }

    /// Poll until the marker is neither in error nor interlocked. Emits a
    /// Fault when it is (unless the caller already did); the caller emits
    /// Ready afterwards. `healthy`, on a fresh connection, is told once the
    /// marker answered a status read: only then does the link count as
    /// working (a Modbus exception does not count: a gateway whose marker
    /// is gone answers with one).
    async fn wait_markable(
        &self,
        ctx: &mut Context,
        already_reported: bool,
        mut healthy: Option<&mut Reconnect>,
    ) -> Result<(), End> {
        let mut reported = already_reported;
        loop {
            let status = self.read_status(ctx).await;
            if let Some(s) = self.classify(status, vec![])? {
                if let Some(reconnect) = healthy.take() {
                    reconnect.healthy();
                }
                match s.fault_reason() {
                    None => return Ok(()),
                    Some(reason) if !reported => {
                        reported = true;
                        let reason = format!("laser {}: {reason}", self.name);
                        self.emit(PrinterEvent::Fault {
                            reason,
                            unknown: vec![],
                        })
                        .await?;
                    }
                    Some(_) => {}
                }
            }
            sleep(self.poll()).await;
        }
    }

    async fn refuse(&self, unit: UnitId, reason: String) -> Result<(), End> {
        self.emit(PrinterEvent::Refused { unit, reason }).await
    }

    /// The marker cannot take codes: report, refuse the waiting unit (it was
    /// never triggered, so it is certainly not marked), wait, then Ready.
    async fn fault_before_send(
        &self,
        ctx: &mut Context,
        unit: UnitId,
        reason: String,
    ) -> Result<(), End> {
        self.emit(PrinterEvent::Fault {
            reason: reason.clone(),
            unknown: vec![],
        })
        .await?;
        self.refuse(unit, format!("not sent: {reason}")).await?;
        self.wait_markable(ctx, true, None).await?;
        self.emit(PrinterEvent::Ready).await
    }

    /// A unit was triggered but its mark is not confirmed.
    async fn fault_in_flight(
        &self,
        ctx: &mut Context,
        unit: UnitId,
        reason: String,
    ) -> Result<(), End> {
        self.emit(PrinterEvent::Fault {
            reason,
            unknown: vec![unit],
        })
        .await?;
        self.wait_markable(ctx, true, None).await?;
        self.emit(PrinterEvent::Ready).await
    }

    async fn mark(&self, ctx: &mut Context, req: PrintRequest) -> Result<(), End> {
        let unit = req.unit;
        let words = match pack_code(&req.code, self.map.code_max_len) {
            Ok(w) => w,
            Err(source) => {
                let err = LaserError::Code {
                    device: self.name.clone(),
                    unit,
                    source,
                };
                return self.refuse(unit, err.to_string()).await;
            }
        };

        // Until the trigger is written nothing can be marked, so a lost link
        // here refuses the unit instead of reporting it unknown.
        let lost_before_trigger = |err: LaserError| async move {
            let reason = format!("not sent: {err}");
            self.refuse(unit, reason).await?;
            Err::<(), End>(End::lost(err, vec![]))
        };

        // 1. Wait until the marker is idle.
        let busy_deadline = Instant::now() + self.settings.mark_timeout;
        loop {
            match self.read_status(ctx).await {
                Err(err) if err.link_lost() => return lost_before_trigger(err).await,
                Err(err) => return self.fault_before_send(ctx, unit, err.to_string()).await,
                Ok(s) => match s.state() {
                    LaserState::Ready => break,
                    LaserState::Busy if Instant::now() < busy_deadline => sleep(self.poll()).await,
                    LaserState::Busy => {
                        let reason = format!(
                            "laser {}: busy for over {:?}",
                            self.name, self.settings.mark_timeout
                        );
                        return self.refuse(unit, reason).await;
                    }
                    LaserState::Error | LaserState::InterlockOpen => {
                        let why = s.fault_reason().unwrap_or("laser not ready");
                        let reason = format!("laser {}: {why}", self.name);
                        return self.fault_before_send(ctx, unit, reason).await;
                    }
                },
            }
        }

        // 2. Counter baseline, read right before the trigger so a late mark
        //    of an earlier (unknown) unit is never credited to this one.
        let baseline = match self.read_counter(ctx).await {
            Ok(c) => c,
            Err(err) if err.link_lost() => return lost_before_trigger(err).await,
            Err(err) => return self.refuse(unit, err.to_string()).await,
        };

        // 3. Code text, then its length.
        let start = self.map.code_start;
        let res = self
            .call(
                "write code",
                start,
                ctx.write_multiple_registers(start, &words),
            )
            .await;
        let res = match (res, self.map.length_register) {
            (Ok(()), Some(reg)) => {
                let len = u16::try_from(req.code.len()).unwrap_or(u16::MAX);
                self.call(
                    "write code length",
                    reg,
                    ctx.write_single_register(reg, len),
                )
                .await
            }
            (res, _) => res,
        };
        match res {
            Ok(()) => {}
            Err(err) if err.link_lost() => return lost_before_trigger(err).await,
            Err(err) => return self.refuse(unit, err.to_string()).await,
        }

        // 4. Trigger. An exception means the marker did not start; a lost
        //    answer means it may have.
        let res = match self.map.trigger {
            Trigger::Coil { address } => {
                let mut res = Ok(());
                if self.coil_may_be_on.load(Ordering::Relaxed) {
                    res = self
                        .call(
                            "reset trigger coil",
                            address,
                            ctx.write_single_coil(address, false),
                        )
                        .await;
                    if res.is_ok() {
                        self.coil_may_be_on.store(false, Ordering::Relaxed);
                    }
                }
                match res {
                    // The reset cannot start a mark: the unit is not sent.
                    Err(err) if err.link_lost() => return lost_before_trigger(err).await,
                    Err(err) => return self.refuse(unit, err.to_string()).await,
                    Ok(()) => {
                        self.coil_may_be_on.store(true, Ordering::Relaxed);
                        self.call(
                            "set trigger coil",
                            address,
                            ctx.write_single_coil(address, true),
                        )
                        .await
                    }
                }
            }
            Trigger::Register { address, value } => {
                self.call(
                    "write trigger register",
                    address,
                    ctx.write_single_register(address, value),
                )
                .await
            }
        };
        match res {
            Ok(()) => {}
            Err(err) if err.link_lost() => return Err(End::lost(err, vec![unit])),
            Err(err) => return self.refuse(unit, err.to_string()).await,
        }
        self.emit(PrinterEvent::Accepted(unit)).await?;

        if let Trigger::Coil { address } = self.map.trigger {
            let res = self
                .call(
                    "release trigger coil",
                    address,
                    ctx.write_single_coil(address, false),
                )
                .await;
            // The mark has started; a refused release is retried before the
            // next unit's set (see `coil_may_be_on`).
            if self.classify(res, vec![unit])?.is_some() {
                self.coil_may_be_on.store(false, Ordering::Relaxed);
            }
        }

        // 5. Wait for the counter to move.
        let deadline = Instant::now() + self.settings.mark_timeout;
        loop {
            let counter = self.read_counter(ctx).await;
            match self.classify(counter, vec![unit])? {
                Some(now) => {
                    let delta = counter_delta(baseline, now);
                    if delta >= 1 {
                        if delta > 1 {
                            tracing::warn!(device = %self.name, unit, delta,
                                "mark counter advanced by more than one mark");
                            // Which of those marks is this unit's is not
                            // known: report it printed without an index.
                            return self.emit(PrinterEvent::Printed(unit)).await;
                        }
                        let index = u64::from(now);
                        return self.emit(PrinterEvent::Marked { unit, index }).await;
                    }
                }
                None => {
                    let reason = format!("laser {}: mark counter unreadable", self.name);
                    return self.fault_in_flight(ctx, unit, reason).await;
                }
            }
            let status = self.read_status(ctx).await;
            if let Some(s) = self.classify(status, vec![unit])? {
                if let Some(why) = s.fault_reason() {
                    let reason = format!("laser {}: {why} while marking", self.name);
                    return self.fault_in_flight(ctx, unit, reason).await;
                }
            }
            if Instant::now() >= deadline {
                let reason = format!(
                    "laser {}: mark not confirmed within {:?}",
                    self.name, self.settings.mark_timeout
                );
                return self.fault_in_flight(ctx, unit, reason).await;
            }
            sleep(self.poll()).await;
        }
    }
}
