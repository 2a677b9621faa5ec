//! Laser marker simulator: a real Modbus TCP server (tokio-modbus) on
//! 127.0.0.1 implementing the marker register map the driver is configured
//! with (code text, length, trigger coil or register, status word, mark
//! counter), with knobs for the faults a real marker shows.
//!
//! Knobs also include an unserved period ([`crate::unserved`]): connections
//! accepted, then dropped or never answered.
//!
//! Each completed mark is forwarded as `(mark index, code)` so a camera
//! simulator can "see" what is on the product, and every Modbus request and
//! response is recorded with a µs timestamp for replay.
//!
//! The map type mirrors the driver's `LaserRegisterMap` field for field
//! (the sim does not depend on the devices crate), so the same TOML file
//! deserializes into both.

use std::collections::HashMap;
use std::future;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_modbus::server::tcp::Server;
use tokio_modbus::server::Service;
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};

use crate::unserved::{turn_away, Gate, UnservedPeriod};

/// The marker's register map (same shape as the driver's config).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaserSimMap {
    #[serde(default = "one")]
    pub unit_id: u8,
    pub code_start: u16,
    pub code_max_len: u16,
    #[serde(default)]
    pub length_register: Option<u16>,
    pub trigger: SimTrigger,
    pub status: SimStatusBits,
    pub mark_counter_register: u16,
}

fn one() -> u8 {
    1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SimTrigger {
    /// Marks on the rising edge of the coil.
    Coil { address: u16 },
    /// Marks when `value` is written; cleared to 0 when the mark completes.
    Register { address: u16, value: u16 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimStatusBits {
    pub register: u16,
    pub busy_bit: u8,
    pub error_bit: u8,
    pub interlock_open_bit: u8,
}

/// Seeded random exception injection on writes (xorshift64*, no `rand`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RandomExceptions {
    /// Each write fails with probability 1/`one_in`.
    pub one_in: u32,
    pub seed: u64,
}

/// Knobs.
#[derive(Debug, Clone)]
pub struct LaserSimConfig {
    pub map: LaserSimMap,
    /// How long one mark takes (zero: the mark completes inside the trigger
    /// write).
    pub mark_time: Duration,
    /// Whether the busy bit is set while marking.
    pub busy_while_marking: bool,
    /// Raise the error bit once this many marks are complete.
    pub error_after_marks: Option<u64>,
    /// Open the interlock once this many marks are complete.
    pub interlock_open_at_marks: Option<u64>,
    /// Every Nth write request (1-based, all writes counted) is answered
    /// with `exception_code`.
    pub exception_every_nth_write: Option<u64>,
    pub random_exceptions: Option<RandomExceptions>,
    pub exception_code: ExceptionCode,
    /// Drop every connection once, right when this many marks are complete.
    pub drop_connection_after_marks: Option<u64>,
    /// Initial value of the mark counter (to exercise the 16-bit wrap).
    pub counter_start: u16,
    /// Accept connections but drop them or never answer, for a period from
    /// the first one (a marker still booting, a gateway whose marker is
    /// gone).
    pub unserved: Option<UnservedPeriod>,
    /// Also append the record as JSON lines to this file.
    pub record_path: Option<PathBuf>,
}

impl LaserSimConfig {
    pub fn new(map: LaserSimMap) -> Self {
        Self {
            map,
            mark_time: Duration::ZERO,
            busy_while_marking: true,
            error_after_marks: None,
            interlock_open_at_marks: None,
            exception_every_nth_write: None,
            random_exceptions: None,
            exception_code: ExceptionCode::ServerDeviceFailure,
            drop_connection_after_marks: None,
            counter_start: 0,
            unserved: None,
            record_path: None,
        }
    }
}

/// One request/response exchange as the sim saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exchange {
    /// µs since the simulator started.
    pub t_us: u64,
    /// Connection number (1-based, in accept order).
    pub conn: u64,
    pub slave: u8,
    pub request: String,
    /// `Ok(response)` as Debug text, `Exception(..)`, or `(dropped)` when the
    /// connection was being killed and no answer was sent.
    pub response: String,
}

struct State {
    cfg: LaserSimConfig,
    started: Instant,
    holding: HashMap<u16, u16>,
    coils: HashMap<u16, bool>,
    marking: bool,
    forced_busy: bool,
    error: bool,
    interlock_open: bool,
    counter: u16,
    marks: u64,
    writes: u64,
    rng: u64,
    /// Bumped to kill every connection accepted before.
    generation: u64,
    dropped_once: bool,
    connections: u64,
    gate: Gate,
    records: Vec<Exchange>,
    triggered: Vec<String>,
    record_file: Option<std::fs::File>,
    marks_tx: mpsc::UnboundedSender<(u64, String)>,
}

struct Shared {
    state: Mutex<State>,
    served: watch::Sender<u64>,
    kill: watch::Sender<u64>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere must not wedge the simulator; the data is plain.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running laser simulator. Dropping it stops the server and closes all
/// connections.
pub struct LaserSim {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for LaserSim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LaserSim {
    /// Bind 127.0.0.1:0 and serve. Completed marks go to `marks`.
    pub async fn start(
        cfg: LaserSimConfig,
        marks: mpsc::UnboundedSender<(u64, String)>,
    ) -> std::io::Result<Self> {
        let record_file = match &cfg.record_path {
            Some(p) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            ),
            None => None,
        };
        let rng = cfg.random_exceptions.map_or(1, |r| r.seed | 1);
        let gate = Gate::new(cfg.unserved);
        let state = State {
            counter: cfg.counter_start,
            cfg,
            started: Instant::now(),
            holding: HashMap::new(),
            coils: HashMap::new(),
            marking: false,
            forced_busy: false,
            error: false,
            interlock_open: false,
            marks: 0,
            writes: 0,
            rng,
            generation: 0,
            dropped_once: false,
            connections: 0,
            gate,
            records: Vec::new(),
            triggered: Vec::new(),
            record_file,
            marks_tx: marks,
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            served: watch::channel(0).0,
            kill: watch::channel(0).0,
        });
        let listener = crate::listen_on(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        let server = Server::new(listener);
        let for_conns = Arc::clone(&shared);
        let task = tokio::spawn(async move {
            let on_connected = move |stream: TcpStream, _peer: SocketAddr| {
                let shared = Arc::clone(&for_conns);
                async move {
                    let unserved = {
                        let mut st = shared.lock();
                        let how = st.gate.admit();
                        if how.is_some() {
                            st.connections += 1;
                        }
                        how
                    };
                    if let Some(how) = unserved {
                        tokio::spawn(turn_away(stream, how));
                        return Ok(None);
                    }
                    Ok(Some(connect(shared, stream)))
                }
            };
            let on_error =
                |err: std::io::Error| tracing::debug!(error = %err, "laser sim connection");
            if let Err(err) = server.serve(&on_connected, on_error).await {
                tracing::warn!(error = %err, "laser sim server stopped");
            }
        });
        Ok(Self { addr, shared, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn set_error(&self, on: bool) {
        self.shared.lock().error = on;
    }

    pub fn clear_error(&self) {
        self.set_error(false);
    }

    pub fn open_interlock(&self) {
        self.shared.lock().interlock_open = true;
    }

    pub fn close_interlock(&self) {
        self.shared.lock().interlock_open = false;
    }

    /// Hold the busy bit regardless of marking (warm-up, external job).
    pub fn set_busy(&self, on: bool) {
        self.shared.lock().forced_busy = on;
    }

    /// Completed marks so far.
    pub fn marks(&self) -> u64 {
        self.shared.lock().marks
    }

    /// Every code the marker was triggered with, in order.
    pub fn triggered_codes(&self) -> Vec<String> {
        self.shared.lock().triggered.clone()
    }

    /// Connections accepted so far, served or not.
    pub fn connections(&self) -> u64 {
        self.shared.lock().connections
    }

    /// Connections accepted during the unserved period (see
    /// [`LaserSimConfig::unserved`]) and dropped or left unanswered.
    pub fn unserved_connections(&self) -> u64 {
        self.shared.lock().gate.unserved()
    }

    pub fn records(&self) -> Vec<Exchange> {
        self.shared.lock().records.clone()
    }

    /// Requests answered (or deliberately dropped) so far.
    pub fn requests_served(&self) -> u64 {
        *self.shared.served.borrow()
    }

    /// Resolve once at least `n` requests were served.
    pub async fn wait_requests(&self, n: u64) {
        let mut rx = self.shared.served.subscribe();
        // wait_for only errs when the sender is gone, which `self` prevents.
        let _ = rx.wait_for(|v| *v >= n).await;
    }
}

/// Put a killable proxy between the socket and the Modbus framing, so the
/// sim can drop a connection from inside a request handler.
fn connect(shared: Arc<Shared>, stream: TcpStream) -> (Svc, tokio::io::DuplexStream) {
    let (outer, inner) = tokio::io::duplex(4096);
    let mut kill = shared.kill.subscribe();
    let (generation, conn) = {
        let mut st = shared.lock();
        st.connections += 1;
        (st.generation, st.connections)
    };
    kill.mark_unchanged();
    tokio::spawn(async move {
        let mut stream = stream;
        let mut outer = outer;
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut stream, &mut outer) => {}
            _ = kill.changed() => {}
        }
    });
    (
        Svc {
            shared,
            generation,
            conn,
        },
        inner,
    )
}

struct Svc {
    shared: Arc<Shared>,
    generation: u64,
    conn: u64,
}

type Answer = Result<Option<Response>, ExceptionCode>;

impl Service for Svc {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = future::Ready<Answer>;

    fn call(&self, req: Self::Request) -> Self::Future {
        let answer = {
            let mut st = self.shared.lock();
            let answer = if st.generation != self.generation {
                // This connection is being killed: never answer on it, so the
                // client sees the drop, not a late reply.
                Ok(None)
            } else {
                handle(&mut st, &self.shared, &req)
            };
            let response = match &answer {
                Ok(Some(r)) => format!("{r:?}"),
                Ok(None) => "(dropped)".to_string(),
                Err(code) => format!("Exception({code:?})"),
            };
            let ex = Exchange {
                t_us: u64::try_from(st.started.elapsed().as_micros()).unwrap_or(u64::MAX),
                conn: self.conn,
                slave: req.slave,
                request: format!("{:?}", req.request),
                response,
            };
            if let Some(f) = st.record_file.as_mut() {
                if let Ok(line) = serde_json::to_string(&ex) {
                    let _ = writeln!(f, "{line}");
                }
            }
            st.records.push(ex);
            answer
        };
        self.shared.served.send_modify(|n| *n += 1);
        future::ready(answer)
    }
}

fn status_word(st: &State) -> u16 {
    let b = st.cfg.map.status;
    let set = |on: bool, bit: u8| {
        if on {
            1u16.checked_shl(u32::from(bit)).unwrap_or(0)
        } else {
            0
        }
    };
    set(st.marking || st.forced_busy, b.busy_bit)
        | set(st.error, b.error_bit)
        | set(st.interlock_open, b.interlock_open_bit)
}

fn read_holding(st: &State, addr: u16) -> u16 {
    if addr == st.cfg.map.status.register {
        status_word(st)
    } else if addr == st.cfg.map.mark_counter_register {
        st.counter
    } else {
        st.holding.get(&addr).copied().unwrap_or(0)
    }
}

fn is_read_only(st: &State, addr: u16) -> bool {
    addr == st.cfg.map.status.register || addr == st.cfg.map.mark_counter_register
}

/// Whether this write gets an injected exception.
fn inject(st: &mut State) -> bool {
    st.writes += 1;
    if let Some(n) = st.cfg.exception_every_nth_write {
        if n > 0 && st.writes.is_multiple_of(n) {
            return true;
        }
    }
    if let Some(r) = st.cfg.random_exceptions {
        // xorshift64*
        let mut x = st.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        st.rng = x;
        let v = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
        if r.one_in > 0 && v.is_multiple_of(u64::from(r.one_in)) {
            return true;
        }
    }
    false
}

fn range(addr: u16, cnt: usize) -> Result<impl Iterator<Item = u16>, ExceptionCode> {
    let end = usize::from(addr) + cnt;
    if cnt == 0 || cnt > 125 {
        return Err(ExceptionCode::IllegalDataValue);
    }
    if end > 65536 {
        return Err(ExceptionCode::IllegalDataAddress);
    }
    // end <= 65536 so every address fits u16.
    Ok((usize::from(addr)..end).filter_map(|a| u16::try_from(a).ok()))
}

fn handle(st: &mut State, shared: &Arc<Shared>, req: &SlaveRequest<'static>) -> Answer {
    if req.slave != st.cfg.map.unit_id {
        return Err(ExceptionCode::GatewayTargetDevice);
    }
    match &req.request {
        Request::ReadHoldingRegisters(addr, cnt) => {
            let words = range(*addr, usize::from(*cnt))?
                .map(|a| read_holding(st, a))
                .collect();
            Ok(Some(Response::ReadHoldingRegisters(words)))
        }
        Request::ReadCoils(addr, cnt) => {
            let coils = range(*addr, usize::from(*cnt))?
                .map(|a| st.coils.get(&a).copied().unwrap_or(false))
                .collect();
            Ok(Some(Response::ReadCoils(coils)))
        }
        Request::WriteSingleRegister(addr, value) => {
            if inject(st) {
                return Err(st.cfg.exception_code);
            }
            if is_read_only(st, *addr) {
                return Err(ExceptionCode::IllegalDataAddress);
            }
            let previous = st.holding.insert(*addr, *value);
            if let SimTrigger::Register { address, value: go } = st.cfg.map.trigger {
                if address == *addr && *value == go {
                    // A refused start leaves the register as it was; a zero
                    // mark time has already cleared it.
                    if let Err(code) = trigger(st, shared) {
                        st.holding.insert(*addr, previous.unwrap_or(0));
                        return Err(code);
                    }
                }
            }
            Ok(Some(Response::WriteSingleRegister(*addr, *value)))
        }
        Request::WriteMultipleRegisters(addr, words) => {
            if inject(st) {
                return Err(st.cfg.exception_code);
            }
            let addrs: Vec<u16> = range(*addr, words.len())?.collect();
            if addrs.iter().any(|a| is_read_only(st, *a)) {
                return Err(ExceptionCode::IllegalDataAddress);
            }
            for (a, w) in addrs.iter().zip(words.iter()) {
                st.holding.insert(*a, *w);
            }
            let n = u16::try_from(words.len()).map_err(|_| ExceptionCode::IllegalDataValue)?;
            Ok(Some(Response::WriteMultipleRegisters(*addr, n)))
        }
        Request::WriteSingleCoil(addr, on) => {
            if inject(st) {
                return Err(st.cfg.exception_code);
            }
            let was = st.coils.get(addr).copied().unwrap_or(false);
            if let SimTrigger::Coil { address } = st.cfg.map.trigger {
                if address == *addr && *on && !was {
                    trigger(st, shared)?;
                }
            }
            st.coils.insert(*addr, *on);
            Ok(Some(Response::WriteSingleCoil(*addr, *on)))
        }
        _ => Err(ExceptionCode::IllegalFunction),
    }
}

fn current_code(st: &State) -> String {
    let map = &st.cfg.map;
    let regs = map.code_max_len.div_ceil(2);
    let mut bytes: Vec<u8> = (0..regs)
        .filter_map(|i| map.code_start.checked_add(i))
        .flat_map(|a| read_holding(st, a).to_be_bytes())
        .collect();
    if let Some(len_reg) = map.length_register {
        bytes.truncate(usize::from(read_holding(st, len_reg)));
    }
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    bytes.truncate(end);
    String::from_utf8_lossy(&bytes).into_owned()
}

fn trigger(st: &mut State, shared: &Arc<Shared>) -> Result<(), ExceptionCode> {
    if st.error || st.interlock_open {
        return Err(ExceptionCode::ServerDeviceFailure);
    }
    if st.marking || st.forced_busy {
        return Err(ExceptionCode::ServerDeviceBusy);
    }
    let code = current_code(st);
    st.triggered.push(code.clone());
    st.marking = st.cfg.busy_while_marking;
    let mark_time = st.cfg.mark_time;
    if mark_time.is_zero() {
        complete_mark(st, shared, code);
    } else {
        let shared = Arc::clone(shared);
        tokio::spawn(async move {
            tokio::time::sleep(mark_time).await;
            let mut st = shared.lock();
            complete_mark(&mut st, &shared, code);
        });
    }
    Ok(())
}

fn complete_mark(st: &mut State, shared: &Shared, code: String) {
    st.marks += 1;
    st.counter = st.counter.wrapping_add(1);
    st.marking = false;
    if let SimTrigger::Register { address, .. } = st.cfg.map.trigger {
        st.holding.insert(address, 0);
    }
    let _ = st.marks_tx.send((st.marks, code));
    if st.cfg.error_after_marks == Some(st.marks) {
        st.error = true;
    }
    if st.cfg.interlock_open_at_marks == Some(st.marks) {
        st.interlock_open = true;
    }
    if st.cfg.drop_connection_after_marks == Some(st.marks) && !st.dropped_once {
        st.dropped_once = true;
        // Bumped under the lock together with the counter, so no request on
        // an old connection can observe this mark.
        st.generation += 1;
        shared.kill.send_modify(|g| *g += 1);
    }
}
