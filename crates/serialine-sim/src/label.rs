//! ZPL label printer simulator: raw TCP on 127.0.0.1, accepts `^XA…^XZ`
//! formats, extracts the barcode's field data (undoing `^FH` hex escapes,
//! Data Matrix `_` escapes and the QR mode prefix, the way a camera would
//! decode the printed symbol), "prints" them one at a time and answers
//! `~HS` with a three-frame host status.
//!
//! Knobs: print time per label, paper out after N labels, head open and
//! pause toggles, an unserved period ([`crate::unserved`]). Printed codes go to an mpsc as `(label index, code)`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

use crate::unserved::{turn_away, Gate, UnservedPeriod};

#[derive(Debug, Clone, Default)]
pub struct LabelSimConfig {
    pub print_time: Duration,
    /// Run out of paper once this many labels are printed.
    pub paper_out_after: Option<u64>,
    /// Also append the record as JSON lines to this file.
    pub record_path: Option<PathBuf>,
    /// Accept connections but drop them or never answer, for a period from
    /// the first one (a printer still booting, a port forwarder whose
    /// printer is gone).
    pub unserved: Option<UnservedPeriod>,
}

/// One thing the printer received and what it answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelExchange {
    pub t_us: u64,
    pub conn: u64,
    /// The raw format or command text.
    pub received: String,
    /// Barcode data extracted from a format, or the `~HS` reply.
    pub outcome: String,
}

struct State {
    cfg: LabelSimConfig,
    started: Instant,
    queue: VecDeque<String>,
    paper_out: bool,
    head_open: bool,
    paused: bool,
    printed: u64,
    connections: u64,
    gate: Gate,
    records: Vec<LabelExchange>,
    record_file: Option<std::fs::File>,
    printed_tx: mpsc::UnboundedSender<(u64, String)>,
}

impl State {
    fn can_print(&self) -> bool {
        !self.paper_out && !self.head_open && !self.paused
    }

    fn record(&mut self, conn: u64, received: String, outcome: String) {
        let ex = LabelExchange {
            t_us: u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX),
            conn,
            received,
            outcome,
        };
        if let Some(f) = self.record_file.as_mut() {
            if let Ok(line) = serde_json::to_string(&ex) {
                use std::io::Write as _;
                let _ = writeln!(f, "{line}");
            }
        }
        self.records.push(ex);
    }

    /// `~HS` reply per the ZPL II manual, three STX…ETX CR LF frames.
    fn host_status(&self) -> String {
        let f = |b: bool| u8::from(b);
        let formats = self.queue.len();
        let remaining = usize::from(!self.queue.is_empty());
        format!(
            "\x02030,{},{},1245,{formats:03},0,0,0,000,0,0,0\x03\r\n\
             \x02001,0,{},0,1,2,6,0,{remaining:08},1,000\x03\r\n\
             \x021234,0\x03\r\n",
            f(self.paper_out),
            f(self.paused || self.paper_out || self.head_open),
            f(self.head_open),
        )
    }
}

struct Shared {
    state: Mutex<State>,
    wake: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running label printer simulator; dropping it stops it.
pub struct LabelSim {
    addr: SocketAddr,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for LabelSim {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl LabelSim {
    pub async fn start(
        cfg: LabelSimConfig,
        printed: mpsc::UnboundedSender<(u64, String)>,
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
        let gate = Gate::new(cfg.unserved);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                cfg,
                started: Instant::now(),
                queue: VecDeque::new(),
                paper_out: false,
                head_open: false,
                paused: false,
                printed: 0,
                connections: 0,
                gate,
                records: Vec::new(),
                record_file,
                printed_tx: printed,
            }),
            wake: Notify::new(),
        });
        let listener = crate::listen_on(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        let s = Arc::clone(&shared);
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                // The host status goes out in three frames: at once.
                let _ = stream.set_nodelay(true);
                let (conn, unserved) = {
                    let mut st = s.lock();
                    st.connections += 1;
                    (st.connections, st.gate.admit())
                };
                if let Some(how) = unserved {
                    tokio::spawn(turn_away(stream, how));
                } else {
                    tokio::spawn(serve(Arc::clone(&s), stream, conn));
                }
            }
        });
        let printer = tokio::spawn(print_loop(Arc::clone(&shared)));
        Ok(Self {
            addr,
            shared,
            tasks: vec![accept, printer],
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn load_paper(&self) {
        self.shared.lock().paper_out = false;
        self.shared.wake.notify_one();
    }

    pub fn set_paper_out(&self, on: bool) {
        self.shared.lock().paper_out = on;
        self.shared.wake.notify_one();
    }

    pub fn set_head_open(&self, open: bool) {
        self.shared.lock().head_open = open;
        self.shared.wake.notify_one();
    }

    pub fn set_paused(&self, paused: bool) {
        self.shared.lock().paused = paused;
        self.shared.wake.notify_one();
    }

    /// Labels printed so far.
    pub fn printed(&self) -> u64 {
        self.shared.lock().printed
    }

    /// Connections accepted so far, served or not.
    pub fn connections(&self) -> u64 {
        self.shared.lock().connections
    }

    /// Connections accepted during the unserved period (see
    /// [`LabelSimConfig::unserved`]) and dropped or left unanswered.
    pub fn unserved_connections(&self) -> u64 {
        self.shared.lock().gate.unserved()
    }

    pub fn records(&self) -> Vec<LabelExchange> {
        self.shared.lock().records.clone()
    }

    /// Barcode data of every format received, in order.
    pub fn formats_received(&self) -> Vec<String> {
        self.shared
            .lock()
            .records
            .iter()
            .filter(|r| r.received.starts_with("^XA"))
            .map(|r| r.outcome.clone())
            .collect()
    }
}

async fn print_loop(shared: Arc<Shared>) {
    loop {
        let (ready, print_time) = {
            let st = shared.lock();
            (!st.queue.is_empty() && st.can_print(), st.cfg.print_time)
        };
        if !ready {
            // notify_one keeps a permit, so a wake between the check and
            // this await is not lost.
            shared.wake.notified().await;
            continue;
        }
        tokio::time::sleep(print_time).await;
        let mut st = shared.lock();
        if !st.can_print() {
            continue;
        }
        if let Some(code) = st.queue.pop_front() {
            st.printed += 1;
            let n = st.printed;
            let _ = st.printed_tx.send((n, code));
            if st.cfg.paper_out_after == Some(n) {
                st.paper_out = true;
            }
        }
    }
}

async fn serve(shared: Arc<Shared>, mut stream: TcpStream, conn: u64) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        while let Some(item) = next_item(&mut buf) {
            let reply = {
                let mut st = shared.lock();
                match item {
                    Item::HostStatus => {
                        let reply = st.host_status();
                        st.record(conn, "~HS".into(), reply.clone());
                        Some(reply)
                    }
                    Item::Format(text) => {
                        let code = barcode_data(&text);
                        st.record(conn, text, code.clone().unwrap_or_default());
                        if let Some(code) = code {
                            st.queue.push_back(code);
                        }
                        None
                    }
                }
            };
            shared.wake.notify_one();
            if let Some(reply) = reply {
                if stream.write_all(reply.as_bytes()).await.is_err() {
                    return;
                }
            }
        }
        // A peer streaming garbage without ^XZ must not grow us unbounded.
        if buf.len() > 64 * 1024 {
            buf.clear();
        }
    }
}

enum Item {
    HostStatus,
    Format(String),
}

/// Take the next complete command off the front of `buf`.
fn next_item(buf: &mut Vec<u8>) -> Option<Item> {
    loop {
        let skip = buf
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(buf.len());
        buf.drain(..skip);
        if buf.len() < 3 {
            return None;
        }
        if buf.starts_with(b"~HS") {
            buf.drain(..3);
            return Some(Item::HostStatus);
        }
        if buf.starts_with(b"^XA") {
            let end = buf.windows(3).position(|w| w == b"^XZ")?;
            let text: Vec<u8> = buf.drain(..end + 3).collect();
            return Some(Item::Format(String::from_utf8_lossy(&text).into_owned()));
        }
        // Unknown byte (other ~ commands, stray text): a real printer ignores it.
        buf.drain(..1);
    }
}

/// The data of the first ^BX / ^BQ field, as a scanner would read it.
pub fn barcode_data(format: &str) -> Option<String> {
    let mut field_start = 0;
    while let Some(fd) = format[field_start..].find("^FD") {
        let fd = field_start + fd;
        let head = &format[field_start..fd];
        let data_start = fd + 3;
        let data_end = format[data_start..]
            .find("^FS")
            .map_or(format.len(), |e| data_start + e);
        let raw = &format[data_start..data_end];
        field_start = data_end;
        let hex = head
            .find("^FH")
            .map(|i| match head[i + 3..].chars().next() {
                Some(c) if c != '^' => c,
                _ => '_',
            });
        let mut data: Vec<u8> = match hex {
            Some(ind) => fh_decode(raw, ind),
            None => raw.as_bytes().to_vec(),
        };
        if let Some(i) = head.find("^BX") {
            let params = head[i + 3..].split('^').next().unwrap_or_default();
            let esc = params
                .split(',')
                .nth(6)
                .and_then(|g| g.bytes().next())
                .unwrap_or(b'_');
            data = dm_decode(&data, esc);
        } else if head.contains("^BQ") {
            // "MA," = error correction M, automatic input mode.
            if data.get(2) == Some(&b',') {
                data.drain(..3);
            }
        } else {
            continue;
        }
        return Some(String::from_utf8_lossy(&data).into_owned());
    }
    None
}

fn fh_decode(raw: &str, ind: char) -> Vec<u8> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    let ind = u8::try_from(ind).unwrap_or(b'_');
    while i < bytes.len() {
        if bytes[i] == ind && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// Data Matrix quality 200 escapes: `ee` → e, `e1` → FNC1 (dropped in
/// first position, a GS separator elsewhere).
fn dm_decode(data: &[u8], esc: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        if data[i] == esc {
            match data.get(i + 1) {
                Some(&b) if b == esc => {
                    out.push(esc);
                    i += 2;
                    continue;
                }
                Some(b'1') => {
                    if !out.is_empty() {
                        out.push(0x1d);
                    }
                    i += 2;
                    continue;
                }
                _ => {}
            }
        }
        out.push(data[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_data_matrix_gs1() {
        let f = "^XA\n^FO40,30^BXN,6,200,,,,_^FH_^FD_5F10109506000134352_1D21A_5F_5FB^FS\n^FO1,1^A0N,24,24^FH_^FDtext^FS\n^XZ\n";
        assert_eq!(
            barcode_data(f).as_deref(),
            Some("0109506000134352\u{1d}21A_B")
        );
    }

    #[test]
    fn extracts_qr() {
        let f = "^XA^FO1,1^A0N,20,20^FDhri^FS^FO40,30^BQN,2,6^FH_^FDMA,https://x/_7E^FS^XZ";
        assert_eq!(barcode_data(f).as_deref(), Some("https://x/~"));
        assert_eq!(barcode_data("^XA^FDnothing^FS^XZ"), None);
    }

    #[test]
    fn splits_stream() {
        let mut b = b"~HS\r\n^XA^FDx^FS^XZ^XA^FD".to_vec();
        assert!(matches!(next_item(&mut b), Some(Item::HostStatus)));
        assert!(matches!(next_item(&mut b), Some(Item::Format(f)) if f == "^XA^FDx^FS^XZ"));
        assert!(next_item(&mut b).is_none());
        assert_eq!(b, b"^XA^FD");
    }
}
