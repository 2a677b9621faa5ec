//! A camera (verifier) simulator: reads what the printer simulator put on
//! the product from its `printed` channel and writes one result line per
//! unit in a [`CameraProfile`]'s format, on the device side of a pty or a
//! TCP socket, with knobs for misreads, no-reads, low grades, duplicates,
//! foreign codes and garbage lines, and for extra result lines: a double
//! trigger (a line repeated), a re-fed pack (an earlier good code) and
//! another line's pack (another line's valid code). A symbology identifier
//! (`]d2`, ...) can be put before every decoded content, and a unit's read
//! can come as `]d1` instead (a plain Data Matrix: the printer lost GS1 mode
//! for that pack). Every report is logged with its [`Verdict`] so a test can
//! check what the pipeline made of it. Units read good can go on down the
//! line ([`CameraKnobs::pass_to`]), e.g. into a case packer
//! ([`crate::aggregation`]).

use crate::printer::SplitMix64;
use crate::recording::{Direction, Recorder};
use serialine_core::Grade;
use serialine_devices::camera::{CameraProfile, CameraProfileError, LineFormat};
use serialine_devices::UnitId;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::task::JoinHandle;

/// Fault knobs, each a probability per unit (checked in the order of the
/// fields; at most one applies). `Default`: every read good, grade A.
#[derive(Debug, Clone)]
pub struct CameraKnobs {
    pub seed: u64,
    pub no_read_rate: f64,
    /// Report the code with one character changed.
    pub misread_rate: f64,
    /// Report a code that was never printed on this line.
    pub foreign_rate: f64,
    /// Report an earlier unit's code again (for this unit's trigger).
    pub duplicate_rate: f64,
    /// Report the right code with `low_grade`.
    pub low_grade_rate: f64,
    pub grade: Grade,
    pub low_grade: Grade,
    /// Probability of an unparseable line before a unit's result.
    pub garbage_rate: f64,
    /// After this many result lines, drop the connection (once).
    pub disconnect_after: Option<u64>,
    /// Double trigger: after a unit's result line, the same line again
    /// (same trigger id, same content), with this probability per unit.
    pub double_trigger_rate: f64,
    /// Double trigger of exactly this unit's result line (the n-th unit
    /// reported, from 1), once.
    pub double_trigger_at: Option<u64>,
    /// A re-fed pack: before a unit's result, an extra result line (no
    /// trigger id) with a code this camera read good earlier (a pack already
    /// committed, back on the belt), with this probability per unit.
    pub refed_rate: f64,
    /// Another line's pack: before a unit's result, an extra result line
    /// (no trigger id) with the next of `other_line_codes` (valid codes
    /// issued to another line), with this probability per unit.
    pub other_line_rate: f64,
    pub other_line_codes: Vec<String>,
    /// The AIM symbology identifier (e.g. `"]d2"`) the camera puts before
    /// every decoded content; `None`: none, as before.
    pub symbology_id: Option<String>,
    /// A plain symbol: the unit's own code, read right, but from a Data
    /// Matrix without FNC1, so reported as `]d1` + code
    /// ([`PLAIN_SYMBOL_ID`]) whatever `symbology_id` says, with this
    /// probability per unit. Drawn after the duplicate and before the low
    /// grade knob.
    pub plain_symbol_rate: f64,
    /// A plain symbol at exactly these units (the n-th unit reported, from
    /// 1), unless an earlier knob already applies to that unit.
    pub plain_symbol_at: Vec<u64>,
    /// Time from a unit's print to its result line (the belt from marker
    /// to camera, and the decode); 0: at once. Constant per unit, so it
    /// delays results without slowing the line.
    pub read_latency: std::time::Duration,
    /// Units the camera read good pass the reject gate and go on down the
    /// line, e.g. into a case packer ([`crate::aggregation`]); each is sent
    /// here after its result line is written, as (unit, printed code).
    /// `None`: nothing downstream.
    pub pass_to: Option<UnboundedSender<(UnitId, String)>>,
}

impl Default for CameraKnobs {
    fn default() -> Self {
        CameraKnobs {
            seed: 1,
            no_read_rate: 0.0,
            misread_rate: 0.0,
            foreign_rate: 0.0,
            duplicate_rate: 0.0,
            low_grade_rate: 0.0,
            grade: Grade::A,
            low_grade: Grade::D,
            garbage_rate: 0.0,
            disconnect_after: None,
            double_trigger_rate: 0.0,
            double_trigger_at: None,
            refed_rate: 0.0,
            other_line_rate: 0.0,
            other_line_codes: Vec::new(),
            symbology_id: None,
            plain_symbol_rate: 0.0,
            plain_symbol_at: Vec::new(),
            read_latency: std::time::Duration::ZERO,
            pass_to: None,
        }
    }
}

/// What the simulated camera reported for a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    Good,
    NoRead,
    Misread,
    Foreign,
    Duplicate,
    LowGrade,
    /// An extra, repeated result line (the camera triggered twice): logged
    /// with the repeated line's unit and content.
    DoubleTrigger,
    /// An extra result line for a re-fed pack carrying an earlier good code;
    /// logged with the unit reported next.
    Refed,
    /// An extra result line for another line's pack (a valid code of
    /// another line's block); logged with the unit reported next.
    OtherLine,
    /// The unit's own code, read from a plain symbol (no FNC1): sent with
    /// [`PLAIN_SYMBOL_ID`] before it.
    PlainSymbol,
}

/// One logged report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reported {
    pub unit: UnitId,
    /// What was printed.
    pub printed: String,
    pub verdict: Verdict,
    /// The content reported (`None`: no-read), without the symbology
    /// identifier, so it compares with `printed`.
    pub content: Option<String>,
    /// The symbology identifier sent before `content` (`None`: none, or a
    /// no-read).
    pub symbology: Option<String>,
    pub grade: Grade,
}

/// The identifier of a plain (non-GS1) Data Matrix: ECC 200 without FNC1.
pub const PLAIN_SYMBOL_ID: &str = "]d1";

/// The GTIN of foreign codes (valid check digit, so they parse as GS1 and
/// the daemon can tell "foreign" from "garbled"); no line is issued it.
pub(crate) const FOREIGN_GTIN: &str = "09999999999994";

/// A line that never parses with a template that has separators.
pub const GARBAGE_LINE: &str = "\u{7f}~~ camera buffer overrun ~~";

/// A running camera simulator; dropping it stops it.
pub struct CameraSim {
    log: Arc<Mutex<Vec<Reported>>>,
    task: JoinHandle<()>,
}

impl Drop for CameraSim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl CameraSim {
    /// Serves one already-open stream.
    pub fn spawn<S>(
        stream: S,
        profile: &CameraProfile,
        knobs: CameraKnobs,
        printed: UnboundedReceiver<(UnitId, String)>,
        recorder: Option<Recorder>,
    ) -> Result<CameraSim, CameraProfileError>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let mut core = Core::new(profile, knobs, printed, recorder)?;
        let log = core.log.clone();
        let task = tokio::spawn(async move {
            core.serve(stream).await;
        });
        Ok(CameraSim { log, task })
    }

    /// Listens on `addr` (use `127.0.0.1:0`), one connection at a time.
    /// Units printed while no one is connected are reported to the next.
    pub async fn listen(
        addr: &str,
        profile: &CameraProfile,
        knobs: CameraKnobs,
        printed: UnboundedReceiver<(UnitId, String)>,
        recorder: Option<Recorder>,
    ) -> Result<(CameraSim, SocketAddr), CameraSimError> {
        let mut core = Core::new(profile, knobs, printed, recorder)?;
        let bind = |source| CameraSimError::Bind {
            addr: addr.to_owned(),
            source,
        };
        let listener = TcpListener::bind(addr).await.map_err(bind)?;
        let local = listener.local_addr().map_err(bind)?;
        let log = core.log.clone();
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let _ = s.set_nodelay(true);
                core.serve(s).await;
            }
        });
        Ok((CameraSim { log, task }, local))
    }

    /// Everything reported so far, in order.
    pub fn log(&self) -> Vec<Reported> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CameraSimError {
    #[error(transparent)]
    Profile(#[from] CameraProfileError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

struct Core {
    format: LineFormat,
    knobs: CameraKnobs,
    rng: SplitMix64,
    printed: UnboundedReceiver<(UnitId, String)>,
    /// Inputs closed: nothing more will be printed.
    printed_closed: bool,
    recorder: Option<Recorder>,
    log: Arc<Mutex<Vec<Reported>>>,
    history: Vec<String>,
    lines: u64,
    disconnected_once: bool,
    foreign_seq: u64,
    /// Codes reported good, for re-fed packs.
    good_history: Vec<String>,
    other_line_next: usize,
    units_reported: u64,
}

impl Core {
    fn new(
        profile: &CameraProfile,
        knobs: CameraKnobs,
        printed: UnboundedReceiver<(UnitId, String)>,
        recorder: Option<Recorder>,
    ) -> Result<Core, CameraProfileError> {
        Ok(Core {
            format: profile.compile()?,
            rng: SplitMix64::new(knobs.seed),
            knobs,
            printed,
            printed_closed: false,
            recorder,
            log: Arc::default(),
            history: Vec::new(),
            lines: 0,
            disconnected_once: false,
            foreign_seq: 0,
            good_history: Vec::new(),
            other_line_next: 0,
            units_reported: 0,
        })
    }

    async fn serve<S: AsyncRead + AsyncWrite + Send>(&mut self, stream: S) {
        let (mut rd, mut wr) = tokio::io::split(stream);
        let mut sink = [0u8; 256];
        // Units printed, each with the time its result is due (`read_latency`).
        let mut due: std::collections::VecDeque<(tokio::time::Instant, UnitId, String)> =
            std::collections::VecDeque::new();
        loop {
            let next_due = due.front().map(|(t, _, _)| *t);
            tokio::select! {
                // Cameras may get commands; this one ignores them, but reading
                // is how a closed link is noticed.
                r = rd.read(&mut sink) => match r {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if let Some(rec) = &self.recorder {
                            rec.record(Direction::Rx, &sink[..n]);
                        }
                    }
                },
                item = self.printed.recv(), if !self.printed_closed => match item {
                    None => self.printed_closed = true,
                    Some((unit, code)) if !self.knobs.read_latency.is_zero() => {
                        due.push_back((tokio::time::Instant::now() + self.knobs.read_latency, unit, code));
                    }
                    Some((unit, code)) => {
                        if !self.emit(&mut wr, unit, code).await {
                            return;
                        }
                    }
                },
                _ = tokio::time::sleep_until(next_due.unwrap_or_else(tokio::time::Instant::now)), if next_due.is_some() => {
                    if let Some((_, unit, code)) = due.pop_front() {
                        if !self.emit(&mut wr, unit, code).await {
                            return;
                        }
                    }
                },
            }
        }
    }

    /// Writes one unit's result; false once the link is closed or dropped.
    async fn emit<W: AsyncWrite + Unpin>(
        &mut self,
        wr: &mut W,
        unit: UnitId,
        code: String,
    ) -> bool {
        let (out, verdict) = self.report(unit, code.clone());
        if let Some(rec) = &self.recorder {
            rec.record(Direction::Tx, &out);
        }
        if wr.write_all(&out).await.is_err() || wr.flush().await.is_err() {
            return false;
        }
        // Only a unit whose own result said good gets past the reject gate;
        // it goes on once that result is on the wire, as the daemon saw it.
        // A send fails only once nothing downstream listens: not the
        // camera's concern.
        if verdict == Verdict::Good {
            if let Some(pass) = &self.knobs.pass_to {
                let _ = pass.send((unit, code));
            }
        }
        self.lines += 1;
        if !self.disconnected_once && self.knobs.disconnect_after.is_some_and(|n| self.lines >= n) {
            self.disconnected_once = true;
            let _ = wr.shutdown().await;
            return false;
        }
        true
    }

    /// The bytes written for one unit (maybe a garbage line first), and the
    /// verdict on the unit's own result (not on any extra line).
    fn report(&mut self, unit: UnitId, code: String) -> (Vec<u8>, Verdict) {
        let k = self.knobs.clone();
        let mut out = Vec::new();
        if self.rng.chance(k.garbage_rate) {
            out.extend_from_slice(GARBAGE_LINE.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        let (verdict, content, grade) = if self.rng.chance(k.no_read_rate) {
            (Verdict::NoRead, None, Grade::F)
        } else if self.rng.chance(k.misread_rate) {
            (Verdict::Misread, Some(misread(&code)), k.grade)
        } else if self.rng.chance(k.foreign_rate) {
            self.foreign_seq += 1;
            // A well-formed GS1 element string (valid GTIN check digit) for a
            // serial this line was never issued: what another line's product
            // would carry. It must parse, so the daemon can tell "foreign".
            let foreign = format!("01{FOREIGN_GTIN}21FOREIGN{}", self.foreign_seq);
            (Verdict::Foreign, Some(foreign), k.grade)
        } else if !self.history.is_empty() && self.rng.chance(k.duplicate_rate) {
            let i = self.rng.below(self.history.len());
            (Verdict::Duplicate, self.history.get(i).cloned(), k.grade)
        } else if k.plain_symbol_at.contains(&(self.units_reported + 1))
            || self.rng.chance(k.plain_symbol_rate)
        {
            (Verdict::PlainSymbol, Some(code.clone()), k.grade)
        } else if self.rng.chance(k.low_grade_rate) {
            (Verdict::LowGrade, Some(code.clone()), k.low_grade)
        } else {
            (Verdict::Good, Some(code.clone()), k.grade)
        };
        // Extra packs on the belt pass before this unit's: their result
        // lines come first. Drawn only when their knob is on, so other
        // scenarios' draws stay as they were.
        if !self.good_history.is_empty() && self.rng.chance(k.refed_rate) {
            let i = self.rng.below(self.good_history.len());
            let refed = self.good_history.get(i).cloned();
            self.extra_line(&mut out, unit, &code, Verdict::Refed, refed, k.grade);
        }
        if !k.other_line_codes.is_empty() && self.rng.chance(k.other_line_rate) {
            let other = k
                .other_line_codes
                .get(self.other_line_next % k.other_line_codes.len())
                .cloned();
            self.other_line_next += 1;
            self.extra_line(&mut out, unit, &code, Verdict::OtherLine, other, k.grade);
        }
        let symbology = match (verdict, &content) {
            (_, None) => None,
            (Verdict::PlainSymbol, Some(_)) => Some(PLAIN_SYMBOL_ID.to_string()),
            (_, Some(_)) => k.symbology_id.clone(),
        };
        let sent = wire_content(symbology.as_deref(), content.as_deref());
        let line = self.format.render(Some(unit), sent.as_deref(), Some(grade));
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
        self.units_reported += 1;
        let double = k.double_trigger_at == Some(self.units_reported)
            || self.rng.chance(k.double_trigger_rate);
        if verdict == Verdict::Good {
            self.good_history.push(code.clone());
        }
        if let Ok(mut log) = self.log.lock() {
            log.push(Reported {
                unit,
                printed: code.clone(),
                verdict,
                content: content.clone(),
                symbology: symbology.clone(),
                grade,
            });
            if double {
                // The same line once more, byte for byte.
                out.extend_from_slice(line.as_bytes());
                out.extend_from_slice(b"\r\n");
                log.push(Reported {
                    unit,
                    printed: code.clone(),
                    verdict: Verdict::DoubleTrigger,
                    content,
                    symbology,
                    grade,
                });
            }
        }
        self.history.push(code);
        (out, verdict)
    }

    /// One result line for a pack that is not `unit` (no trigger id: the
    /// printer never triggered for it), logged as `verdict`.
    fn extra_line(
        &mut self,
        out: &mut Vec<u8>,
        unit: UnitId,
        code: &str,
        verdict: Verdict,
        content: Option<String>,
        grade: Grade,
    ) {
        let symbology = content.as_ref().and(self.knobs.symbology_id.clone());
        let sent = wire_content(symbology.as_deref(), content.as_deref());
        let line = self.format.render(None, sent.as_deref(), Some(grade));
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
        if let Ok(mut log) = self.log.lock() {
            log.push(Reported {
                unit,
                printed: code.to_string(),
                verdict,
                content,
                symbology,
                grade,
            });
        }
    }
}

/// What goes in the line's content field: the identifier, then the data.
fn wire_content(symbology: Option<&str>, content: Option<&str>) -> Option<String> {
    content.map(|c| format!("{}{c}", symbology.unwrap_or("")))
}

/// The code with its last alphanumeric character changed: a plausible
/// misread (one wrong module cluster), still the same length.
fn misread(code: &str) -> String {
    let mut chars: Vec<char> = code.chars().collect();
    match chars.iter().rposition(char::is_ascii_alphanumeric) {
        Some(i) => {
            let c = chars[i];
            chars[i] = match c {
                '9' => '0',
                'z' => 'a',
                'Z' => 'A',
                _ => char::from(c as u8 + 1),
            };
            chars.into_iter().collect()
        }
        None => format!("{code}?"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serialine_core::code::{self, CodeError, Template};

    /// A camera core with `knobs`, fed by hand through `report`.
    fn core(knobs: CameraKnobs) -> Core {
        let (_tx, printed) = tokio::sync::mpsc::unbounded_channel();
        Core::new(&CameraProfile::default(), knobs, printed, None).expect("default profile")
    }

    fn code(serial: &str) -> String {
        format!("010950600013435217271231\u{1d}10LOT1\u{1d}21{serial}")
    }

    /// The content field of each line `report` wrote.
    fn contents(out: &[u8]) -> Vec<String> {
        let format = CameraProfile::default().compile().expect("profile");
        String::from_utf8_lossy(out)
            .split("\r\n")
            .filter(|l| !l.is_empty())
            .map(|l| {
                format
                    .parse(l.as_bytes())
                    .expect("parses")
                    .content
                    .unwrap_or_default()
            })
            .collect()
    }

    #[test]
    fn every_read_carries_the_symbology_id_and_plain_symbols_carry_d1() {
        let mut c = core(CameraKnobs {
            symbology_id: Some("]d2".into()),
            plain_symbol_at: vec![2, 4],
            ..CameraKnobs::default()
        });
        for unit in 1..=5u64 {
            let printed = code(&format!("S{unit}"));
            let sent = contents(&c.report(unit, printed.clone()).0);
            let id = if [2, 4].contains(&unit) { "]d1" } else { "]d2" };
            assert_eq!(sent, vec![format!("{id}{printed}")]);
            // What the daemon's code parser makes of it for a GS1 job.
            let parsed = code::parse(&Template::Gs1DataMatrix, &sent[0]);
            if id == "]d1" {
                assert!(
                    matches!(parsed, Err(CodeError::NotGs1Symbol { .. })),
                    "{parsed:?}"
                );
            } else {
                let data = parsed.expect("a GS1 symbol");
                assert_eq!(data.serial.as_str(), format!("S{unit}"));
            }
        }
        let log = c.log.lock().expect("log").clone();
        let verdicts: Vec<Verdict> = log.iter().map(|r| r.verdict).collect();
        use Verdict::{Good, PlainSymbol};
        assert_eq!(verdicts, vec![Good, PlainSymbol, Good, PlainSymbol, Good]);
        // The log keeps the data apart from the identifier.
        assert_eq!(log[1].content.as_deref(), Some(log[1].printed.as_str()));
        assert_eq!(log[1].symbology.as_deref(), Some(PLAIN_SYMBOL_ID));
        assert_eq!(log[0].symbology.as_deref(), Some("]d2"));
    }

    #[test]
    fn plain_symbol_rate_is_drawn_from_the_seed() {
        let run = |knobs: CameraKnobs| -> Vec<Verdict> {
            let mut c = core(knobs);
            for u in 1..=400u64 {
                c.report(u, code(&format!("S{u}")));
            }
            let log = c.log.lock().expect("log");
            log.iter().map(|r| r.verdict).collect()
        };
        let knobs = CameraKnobs {
            seed: 9,
            plain_symbol_rate: 0.05,
            ..CameraKnobs::default()
        };
        let a = run(knobs.clone());
        assert_eq!(a, run(knobs), "same seed, same draws");
        let plain = a.iter().filter(|v| **v == Verdict::PlainSymbol).count();
        assert!((5..=40).contains(&plain), "{plain} plain symbols in 400");
    }

    #[test]
    fn no_symbology_id_sends_the_code_as_before() {
        let mut c = core(CameraKnobs {
            no_read_rate: 0.5,
            ..CameraKnobs::default()
        });
        for u in 1..=20u64 {
            let printed = code(&format!("S{u}"));
            let sent = contents(&c.report(u, printed.clone()).0);
            assert!(
                sent == vec![printed] || sent == vec![String::new()],
                "{sent:?}"
            );
        }
        let log = c.log.lock().expect("log").clone();
        assert!(log.iter().all(|r| r.symbology.is_none()));
    }

    #[test]
    fn misread_changes_one_character() {
        assert_eq!(misread("(21)AB9"), "(21)AB0");
        assert_eq!(misread("x-z"), "x-a");
        assert_eq!(misread("--"), "--?");
    }
}
