//! The local control socket, `<state_dir>/control.sock`: how `serialine
//! status` answers while the service runs and holds the ledgers' locks.
//!
//! A Unix socket, so only this machine reaches it, and file permissions say
//! who: mode 0660, owner and group of the service (`serialine`), in the
//! state directory (0750). One JSON request per line, one JSON answer per
//! line: `{"cmd":"status","line":"line-1"}` (`line` optional) answers
//! `{"ok":true,"status":[...]}` with the objects `serialine status --json`
//! prints; anything else answers `{"ok":false,"error":"..."}`. Requests are
//! bounded ([`MAX_REQUEST`]) and timed out ([`IO_TIMEOUT`]); a client that
//! sends garbage gets an error line, and the service carries on.

use serde::Deserialize;
use serde_json::{json, Value};
use serialine_store::Store;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// Longest request line accepted, in bytes.
pub const MAX_REQUEST: usize = 64 * 1024;
/// Longest a client may take to send its request, or to read the answer.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// One request. New commands are new variants; an unknown `cmd` is refused.
#[derive(Debug, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case", deny_unknown_fields)]
enum Request {
    Status {
        #[serde(default)]
        line: Option<String>,
    },
    /// `serialine archive`: one archive file per line at most, so a
    /// request stays short; the CLI asks again until nothing is left.
    Archive {
        before_ms: u64,
        #[serde(default)]
        line: Option<String>,
    },
    /// `serialine report`: a job's reconciliation (default: the last).
    Report {
        #[serde(default)]
        line: Option<String>,
        #[serde(default)]
        job: Option<u32>,
        /// Each report's units over time too (`serialine report --html`).
        #[serde(default)]
        series: bool,
    },
    /// `serialine return`: the line's unused serials back upstream; see
    /// `return_cmd.rs`.
    Return {
        #[serde(default)]
        line: Option<String>,
        #[serde(default)]
        gtin: Option<String>,
    },
    /// `serialine pack`, `unpack`, `contents`: the packaging hierarchy;
    /// see `pack_cmd.rs`. The answer's `result` is the move's own answer.
    Pack {
        parent: String,
        children: Vec<String>,
    },
    Unpack {
        parent: String,
        #[serde(default)]
        children: Option<Vec<String>>,
    },
    Contents {
        serial: String,
    },
    /// `serialine unit sample|decommission`; see `unit_cmd.rs`.
    Unit {
        action: String,
        serials: Vec<String>,
        reason: String,
        #[serde(default)]
        with_children: bool,
    },
}

/// A hierarchy request, run on the lines' ledgers off the runtime.
type HierarchyFn = Box<dyn FnOnce(&[(String, Store)]) -> Value + Send>;

/// What the socket serves about one line.
pub struct ControlLine {
    pub id: String,
    pub store: Store,
    pub archive_dir: PathBuf,
    /// Its uplink: a return holds its prefetch until the next job.
    pub uplink: serialine_uplink::UplinkHandle,
}

/// The line's state as the supervisor last set it ("running job ...").
pub type StateOf = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// The running server; removes its socket file when dropped.
pub struct Server {
    path: PathBuf,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// Stops serving and waits until the server's handles on the ledgers
    /// are dropped, so the ledgers can close after it.
    pub async fn shutdown(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds `path` (a stale socket file from a killed run is replaced: the
/// caller holds every line's ledger, so no other service uses it) and
/// serves it until the returned [`Server`] is dropped.
pub fn serve(path: &Path, lines: Vec<ControlLine>, state_of: StateOf) -> anyhow::Result<Server> {
    use anyhow::Context;
    use std::os::unix::fs::PermissionsExt;
    match std::fs::remove_file(path) {
        Ok(()) => tracing::info!(path = %path.display(), "replaced a stale control socket"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
    }
    let listener = UnixListener::bind(path)
        .with_context(|| format!("binding the control socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("setting the mode of {}", path.display()))?;
    let lines = Arc::new(lines);
    let task = tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let (lines, state_of) = (lines.clone(), state_of.clone());
                    tokio::spawn(async move {
                        if let Err(e) = answer(stream, &lines, &state_of).await {
                            tracing::debug!("control socket client: {e}");
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors, most likely: wait, not spin.
                    tracing::warn!("control socket: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    });
    tracing::info!(path = %path.display(), "control socket listening (serialine status)");
    Ok(Server {
        path: path.to_path_buf(),
        task: Some(task),
    })
}

async fn answer(
    stream: UnixStream,
    lines: &[ControlLine],
    state_of: &StateOf,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read.take(MAX_REQUEST as u64 + 1));
    let mut request = String::new();
    let got = tokio::time::timeout(IO_TIMEOUT, reader.read_line(&mut request)).await;
    let reply = match got {
        Err(_) => json!({"ok": false, "error": format!("no request line within {IO_TIMEOUT:?}")}),
        Ok(Err(e)) => json!({"ok": false, "error": format!("unreadable request: {e}")}),
        Ok(Ok(_)) if request.len() > MAX_REQUEST || !request.ends_with('\n') => {
            json!({"ok": false, "error": format!("a request is one line of at most {MAX_REQUEST} bytes, ended by a newline")})
        }
        Ok(Ok(_)) => match serde_json::from_str::<Request>(&request) {
            Err(e) => json!({"ok": false, "error": format!("bad request: {e}")}),
            Ok(req) => run(req, lines, state_of).await,
        },
    };
    let mut bytes = reply.to_string().into_bytes();
    bytes.push(b'\n');
    tokio::time::timeout(IO_TIMEOUT, write.write_all(&bytes))
        .await
        .map_err(|_| std::io::Error::other("client did not read the answer"))?
}

async fn run(req: Request, lines: &[ControlLine], state_of: &StateOf) -> Value {
    let stores = || -> Vec<(String, Store)> {
        lines
            .iter()
            .map(|l| (l.id.clone(), l.store.clone()))
            .collect()
    };
    let hierarchy = |f: HierarchyFn| {
        let stores = stores();
        async move {
            match tokio::task::spawn_blocking(move || f(&stores)).await {
                Ok(v) => json!({"ok": true, "result": v}),
                Err(e) => json!({"ok": false, "error": e.to_string()}),
            }
        }
    };
    match req {
        Request::Pack { parent, children } => {
            hierarchy(Box::new(move |l| {
                crate::pack_cmd::pack(l, &parent, &children)
            }))
            .await
        }
        Request::Unpack { parent, children } => {
            hierarchy(Box::new(move |l| {
                crate::pack_cmd::unpack(l, &parent, children.as_deref())
            }))
            .await
        }
        Request::Contents { serial } => {
            hierarchy(Box::new(move |l| crate::pack_cmd::contents(l, &serial))).await
        }
        Request::Return { line, gtin } => {
            let mut out = Vec::new();
            for l in lines
                .iter()
                .filter(|l| line.as_ref().is_none_or(|id| *id == l.id))
            {
                let req = match crate::return_cmd::plan(&l.store, gtin.as_deref()) {
                    Ok(r) => r,
                    Err(e) => return json!({"ok": false, "error": format!("line {}: {e:#}", l.id)}),
                };
                match crate::return_cmd::give_back(&l.id, &l.store, &l.uplink, req).await {
                    Ok(v) => out.push(v),
                    Err(e) => return json!({"ok": false, "error": format!("{e:#}")}),
                }
            }
            json!({"ok": true, "lines": out})
        }
        Request::Report { line, job, series } => {
            let mut out = Vec::new();
            for l in lines
                .iter()
                .filter(|l| line.as_ref().is_none_or(|id| *id == l.id))
            {
                let (id, store, dir) = (l.id.clone(), l.store.clone(), l.archive_dir.clone());
                let got = tokio::task::spawn_blocking(move || {
                    crate::tools::line_job_reports(
                        &id,
                        &store,
                        job,
                        series.then_some(dir.as_path()),
                    )
                })
                .await;
                match got {
                    Ok(Ok(reports)) => out.extend(reports),
                    Ok(Err(e)) => return json!({"ok": false, "error": format!("{e:#}")}),
                    Err(e) => return json!({"ok": false, "error": e.to_string()}),
                }
            }
            json!({"ok": true, "reports": out})
        }
        Request::Archive { before_ms, line } => {
            let mut out = Vec::new();
            for l in lines
                .iter()
                .filter(|l| line.as_ref().is_none_or(|id| *id == l.id))
            {
                let mut opts = serialine_store::ArchiveOptions::new(
                    &l.archive_dir,
                    std::time::UNIX_EPOCH + Duration::from_millis(before_ms),
                );
                opts.max_files = 1;
                match l.store.archive(opts).await {
                    Ok(r) => {
                        let c = l.store.counts();
                        let files: Vec<String> =
                            r.files.iter().map(|f| f.display().to_string()).collect();
                        out.push(json!({
                            "line": l.id,
                            "files": files,
                            "blocks": r.blocks,
                            "serials": r.serials,
                            "bytes": r.bytes,
                            "took_ms": r.took.as_millis() as u64,
                            "kept": c.left_pool() - c.archived,
                            "archived": c.archived,
                        }))
                    }
                    Err(e) => {
                        return json!({"ok": false, "error": format!("line {}: archiving: {e}", l.id)})
                    }
                }
            }
            json!({"ok": true, "lines": out})
        }
        Request::Unit {
            action,
            serials,
            reason,
            with_children,
        } => {
            let to = match crate::unit_cmd::target(&action, &reason) {
                Ok(to) => to,
                Err(e) => return json!({"ok": false, "error": e}),
            };
            if serials.len() > crate::unit_cmd::MAX_SERIALS {
                return json!({"ok": false, "error": format!("{} serials; at most {} per request", serials.len(), crate::unit_cmd::MAX_SERIALS)});
            }
            let stores: Vec<(String, Store)> = lines
                .iter()
                .map(|l| (l.id.clone(), l.store.clone()))
                .collect();
            // Ledger reads and durable writes block: off the runtime.
            match tokio::task::spawn_blocking(move || {
                crate::unit_cmd::apply(&stores, &serials, to, with_children)
            })
            .await
            {
                Ok(results) => {
                    for r in results.iter().filter(|r| r["ok"] == json!(true)) {
                        tracing::info!(
                            serial = r["serial"].as_str().unwrap_or(""),
                            line = r["line"].as_str().unwrap_or(""),
                            "unit {}: {} (serialine unit)",
                            r["serial"].as_str().unwrap_or(""),
                            r["state"].as_str().unwrap_or("")
                        );
                    }
                    json!({"ok": true, "results": results})
                }
                Err(e) => json!({"ok": false, "error": format!("applying: {e}")}),
            }
        }
        Request::Status { line } => {
            if let Some(id) = &line {
                if !lines.iter().any(|l| &l.id == id) {
                    let known: Vec<&str> = lines.iter().map(|l| l.id.as_str()).collect();
                    return json!({"ok": false, "error": format!("no line {id:?}; lines: {}", known.join(", "))});
                }
            }
            let mut out = Vec::new();
            for l in lines
                .iter()
                .filter(|l| line.as_ref().is_none_or(|id| *id == l.id))
            {
                // Reads of the ledger (the in-flight scan) block: off the runtime.
                let (id, store, dir) = (l.id.clone(), l.store.clone(), l.archive_dir.clone());
                let status = tokio::task::spawn_blocking(move || {
                    crate::tools::line_status(&id, &store, &dir)
                })
                .await;
                match status {
                    Ok(Ok(mut v)) => {
                        v["service"] = json!("running");
                        if let Some(state) = state_of(&l.id) {
                            v["state"] = json!(state);
                        }
                        out.push(v);
                    }
                    Ok(Err(e)) => {
                        return json!({"ok": false, "error": format!("line {}: {e:#}", l.id)})
                    }
                    Err(e) => return json!({"ok": false, "error": format!("line {}: {e}", l.id)}),
                }
            }
            json!({"ok": true, "status": out})
        }
    }
}

/// Asks the running service: its answer, or `None` when no service listens
/// at `path` (no socket file, or a stale one). Blocking, for the CLI.
pub fn ask(path: &Path, request: &Value) -> anyhow::Result<Option<Value>> {
    use anyhow::Context;
    use std::io::{BufRead, Write};
    let stream = match std::os::unix::net::UnixStream::connect(path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None)
        }
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                    "cannot reach the running service at {} (run as its user, or a member of its group)",
                    path.display()
                )
            })
        }
    };
    stream.set_read_timeout(Some(IO_TIMEOUT * 6))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut line = request.to_string();
    line.push('\n');
    (&stream)
        .write_all(line.as_bytes())
        .with_context(|| format!("writing to {}", path.display()))?;
    let mut answer = String::new();
    std::io::BufReader::new(&stream)
        .read_line(&mut answer)
        .with_context(|| format!("reading the service's answer from {}", path.display()))?;
    let v: Value = serde_json::from_str(&answer)
        .with_context(|| format!("the service at {} answered {answer:?}", path.display()))?;
    if v["ok"] != json!(true) {
        anyhow::bail!(
            "the running service refused: {}",
            v["error"].as_str().unwrap_or("no reason given")
        );
    }
    Ok(Some(v))
}
