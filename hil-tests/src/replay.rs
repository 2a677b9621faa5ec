//! A scenario's `[replay]`: recorded printer and camera sessions stand in
//! for the simulators (`serialine_sim::replay`), and what the daemon sent is
//! compared with the recording.

use crate::scenario::ReplaySpec;
use crate::HilError;
use serialine_devices::camera::{self, CameraProfile};
use serialine_sim::camera::{Reported, Verdict};
use serialine_sim::recording::{Direction, Recorder, Recording};
use serialine_sim::replay::{self, ReplayDevice, ReplayError, ReplayReport};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// How long the daemon has to connect to both devices.
const CONNECT_BOUND: Duration = Duration::from_secs(60);

/// The running replay. Its streams stay open inside the task's result until
/// [`ReplayTask::finish`], so the daemon never sees its devices vanish
/// while it finishes the job.
pub struct ReplayTask {
    handle: JoinHandle<Result<(ReplayReport, Vec<TcpStream>), String>>,
}

impl ReplayTask {
    /// The replay has ended (to the end of the recording, or at a difference).
    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }

    /// The replay's verdict: its report, or what went wrong and where.
    pub async fn finish(self, bound: Duration) -> Result<ReplayReport, String> {
        match tokio::time::timeout(bound, self.handle).await {
            Err(_) => Err(format!(
                "replay still running {bound:?} after the daemon stopped"
            )),
            Ok(Err(e)) => Err(format!("replay task: {e}")),
            Ok(Ok(r)) => r.map(|(report, _streams)| report),
        }
    }
}

/// Loads the recordings, listens for the daemon's printer and camera
/// connections, and plays the session once both are connected. Returns the
/// printer's and the camera's addresses for the daemon's config. What the
/// daemon sends and receives is recorded to `printer` and `camera` for the
/// invariant checker, as the simulators would.
pub async fn start(
    spec: &ReplaySpec,
    printer: Recorder,
    camera: Recorder,
) -> Result<(ReplayTask, SocketAddr, SocketAddr), HilError> {
    let load = |p: &Path| Recording::load(p).map_err(|e| HilError::Sim(format!("replay: {e}")));
    let mut devices = vec![
        ReplayDevice::new("printer", load(&spec.printer)?),
        ReplayDevice::new("camera", load(&spec.camera)?),
    ];
    for (dev, rec) in devices.iter_mut().zip([printer, camera]) {
        dev.compare = spec.compare;
        dev.recorder = Some(rec);
        dev.allow = spec
            .allow
            .iter()
            .filter(|a| a.device == dev.name)
            .map(|a| a.from..a.from.saturating_add(a.len))
            .collect();
    }
    let bind = || async {
        TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|source| HilError::Io {
                what: "replay: listening for the daemon".into(),
                source,
            })
    };
    let (p_listener, c_listener) = (bind().await?, bind().await?);
    let addr = |l: &TcpListener| {
        l.local_addr().map_err(|source| HilError::Io {
            what: "replay: listener address".into(),
            source,
        })
    };
    let (p_addr, c_addr) = (addr(&p_listener)?, addr(&c_listener)?);
    let stall = Duration::from_secs_f64(spec.stall_secs);
    let handle = tokio::spawn(async move {
        let accept = |l: TcpListener, what: &'static str| async move {
            match tokio::time::timeout(CONNECT_BOUND, l.accept()).await {
                Ok(Ok((s, _))) => {
                    let _ = s.set_nodelay(true);
                    Ok(s)
                }
                Ok(Err(e)) => Err(format!("replay: accepting the daemon's {what}: {e}")),
                Err(_) => Err(format!(
                    "replay: the daemon did not connect to the {what} within {CONNECT_BOUND:?}"
                )),
            }
        };
        let (p, c) = tokio::join!(accept(p_listener, "printer"), accept(c_listener, "camera"));
        let (res, streams) = replay::replay(devices, vec![p?, c?], stall).await;
        res.map(|r| (r, streams))
            .map_err(|e: ReplayError| format!("replay: {e}"))
    });
    Ok((ReplayTask { handle }, p_addr, c_addr))
}

/// What the replayed camera reported, in the shape of the camera
/// simulator's log, for the invariant checker. A recording carries no
/// ground truth (what was printed under the camera), so a read counts as
/// good when it has content and a passing grade.
pub fn camera_log(path: &Path, min_grade: serialine_core::Grade) -> Vec<Reported> {
    let Ok(rec) = Recording::load(path) else {
        return Vec::new();
    };
    let profile = CameraProfile::default();
    rec.bytes(Direction::Tx)
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.is_empty())
        .filter_map(|l| camera::parse_line(&profile, l).ok())
        .enumerate()
        .map(|(i, read)| {
            let grade = read.grade.unwrap_or(serialine_core::Grade::A);
            let verdict = match &read.content {
                None => Verdict::NoRead,
                Some(_) if grade < min_grade => Verdict::LowGrade,
                Some(_) => Verdict::Good,
            };
            Reported {
                unit: read.unit.unwrap_or(i as u64 + 1),
                printed: read.content.clone().unwrap_or_default(),
                verdict,
                content: read.content,
                // Recorded content is kept as sent, an identifier included.
                symbology: None,
                grade,
            }
        })
        .collect()
}
