//! Several `[[line]]` sections in one daemon (`lines = N` in a scenario).
//!
//! Each line gets its own framed printer and camera simulators, its own
//! secret and its own ledger (`state/ledger/<line>`); they share the daemon
//! process, the site's broker, the issuer and the upstream consumer. This
//! is what a multi-line controller runs, and what single-line scenarios
//! cannot show: several ledgers committing and flushing at once in one
//! process (a deadlock between two sled databases' committers was seen in
//! CI), and a SIGKILL that cuts all of them at the same instant.
//!
//! `units_step` staggers the lines' jobs (line n runs `units + (n - 1) *
//! units_step`), so each line's end-of-job checkpoint closes and reopens its
//! sled database while the other lines' committers are busy: the pattern of
//! the CI deadlock (one database flushing on close while another's
//! transaction waits on sled's process-global lock).
//!
//! The timeline's kill points count the slowest line's units decided (so a
//! point must be below `units` to be reached while every line runs). The
//! run is over when every line's job has ended and every line's outcomes
//! are upstream. The invariant checker then runs once per line, on that
//! line's ledger, device recordings, upstream events and log lines.
//!
//! Watchdog: `timeout_secs` bounds the run. When it expires the daemon is
//! still alive, so before stopping it the harness takes every thread's
//! backtrace with gdb (when installed) into `hang-backtrace.txt` in the
//! scenario directory and `<target>/hil-hangs/`, and names the file in the
//! violation: a hang fails the scenario with evidence instead of hanging CI.

use crate::checker::{self, CheckInput, DeviceLog, Report, Violation};
use crate::harness::{self, Daemon, Marker, Outcome};
use crate::run_parts::{
    camera_knobs, camera_section, config_head, exited_on_its_own, framed_section, job_table, kill9,
    kill_point_missed, ledger_decided, ledger_path, line_section, load_profile, open_ledger,
    outcome, read_logs, run_failure, run_log, start_camera, start_printer, write_config,
    write_secret, ScenarioDir, Site,
};
use crate::scenario::Scenario;
use crate::{HilError, POLL};
use serialine_devices::printer::FramedProfile;
use serialine_sim::camera::CameraSim;
use serialine_sim::recording::Recorder;
use serialine_store::Counts;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Longest gdb may take to attach and print every thread's backtrace.
const GDB_BOUND: Duration = Duration::from_secs(60);
/// How long every line may sit stopped, its outbox empty, while its counts
/// and upstream's disagree, before the run ends (nothing more will come).
const SETTLE: Duration = Duration::from_secs(10);
/// Lines of the condensed backtrace quoted in the violation (the file has
/// every frame).
const BACKTRACE_QUOTED: usize = 160;

/// One line's simulators and identity.
struct Rig {
    id: String,
    secret: Vec<u8>,
    /// The line's framed printer simulator (a [`Marker`] for the
    /// accounting's `run_events`).
    marker: Marker,
    profile: FramedProfile,
    camera: CameraSim,
    /// The line's `[line.printer]` and `[line.camera]` tables.
    devices: String,
    /// Printer buffer depth (the in-flight bound with the camera window).
    depth: usize,
    /// This line's units over the scenario (`units` + its `units_step`s).
    units: u64,
    /// Units decided in this line's ledger at the last kill.
    ledger_base: u64,
    /// The camera log's length at each kill.
    kill_marks: Vec<usize>,
}

fn line_id(n: u32) -> String {
    format!("line-{n}")
}

/// Each line its own secret: a serial sealed for one line must not open
/// under another's.
fn secret_for(seed: u64, line: &str) -> Vec<u8> {
    format!("hil line secret, seed {seed:020}, {line}, 32+ bytes").into_bytes()
}

fn config(s: &Scenario, site: &str, mqtt_port: u16, rigs: &[Rig], quantities: &[u64]) -> String {
    let mut text = config_head(s, &format!(", {} lines", rigs.len()), site, mqtt_port);
    for (rig, &quantity) in rigs.iter().zip(quantities) {
        // A line whose units are all decided runs no job: it reconciles,
        // syncs its outbox and waits.
        let job = job_table(s, quantity, &s.job.gtin, &s.job.lot);
        text.push('\n');
        text.push_str(&line_section(
            s,
            &rig.id,
            &format!("{}.secret", rig.id),
            &job,
            &rig.devices,
        ));
    }
    text
}

/// The JSON log lines that concern `line`: those naming it, and those
/// naming no line (the daemon's own). Alarms and reject signals carry
/// `line`, so each line's check sees only its own.
fn logs_of(logs: &[String], line: &str) -> Vec<String> {
    logs.iter()
        .map(|log| {
            log.lines()
                .filter(|l| {
                    let Ok(v) = serde_json::from_str::<serde_json::Value>(l) else {
                        return true;
                    };
                    let named = v
                        .get("line")
                        .or_else(|| v.get("fields").and_then(|f| f.get("line")))
                        .and_then(serde_json::Value::as_str);
                    named.is_none_or(|n| n == line)
                })
                .fold(String::new(), |mut acc, l| {
                    acc.push_str(l);
                    acc.push('\n');
                    acc
                })
        })
        .collect()
}

/// The daemon logged `job ended` for `line` in this run.
fn job_ended(text: &str, line: &str) -> bool {
    let tag = format!("\"line\":\"{line}\"");
    text.lines()
        .any(|l| l.contains("job ended") && l.contains(&tag))
}

/// Every thread's backtrace of the live process `pid`, by gdb, bounded by
/// [`GDB_BOUND`]. Written to the scenario directory and to
/// `<target>/hil-hangs/`; returns what to put in the violation.
pub(crate) async fn capture_backtraces(pid: u32, root: &Path, name: &str, seed: u64) -> String {
    let out_path = root.join("hang-backtrace.txt");
    let spawned = std::process::Command::new("gdb")
        .args([
            "-p",
            &pid.to_string(),
            "-batch",
            "-ex",
            "thread apply all bt",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => return format!("no backtrace: gdb did not start ({e}); is it installed?"),
    };
    // The pipes are read on their own threads so a chatty gdb cannot
    // block on a full pipe while this waits for it to exit.
    let reader = |r: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = reader(child.stdout.take().map(|r| Box::new(r) as _));
    let err = reader(child.stderr.take().map(|r| Box::new(r) as _));
    let start = Instant::now();
    let mut timed_out = false;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if start.elapsed() >= GDB_BOUND {
            // gdb is our own child: end it by its id, and the daemon (still
            // ptrace-attached) is detached by the kernel.
            let _ = child.kill();
            let _ = child.wait();
            timed_out = true;
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    let text = format!(
        "gdb -p {pid} -batch -ex 'thread apply all bt'{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        if timed_out { " (timed out)" } else { "" },
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default()
    );
    let mut written = Vec::new();
    if fs::write(&out_path, &text).is_ok() {
        written.push(out_path.display().to_string());
    }
    if let Some(dir) = hangs_dir() {
        let p = dir.join(format!("{name}-seed{seed}-pid{pid}.txt"));
        if fs::create_dir_all(&dir).is_ok() && fs::write(&p, &text).is_ok() {
            written.push(p.display().to_string());
        }
    }
    format!(
        "backtraces in {}; per thread, its frames in sled and serialine:\n{}",
        if written.is_empty() {
            "(no file written)".to_string()
        } else {
            written.join(" and ")
        },
        condense(&text)
    )
}

/// A full `thread apply all bt` of the daemon is ~700 long lines; a
/// deadlock shows in which thread waits where in sled or the store. So:
/// each thread's header, its innermost frame and its first frames in
/// `sled` or `serialine`,
/// each cut to [`FRAME_CHARS`], at most [`BACKTRACE_QUOTED`] lines.
fn condense(text: &str) -> String {
    const FRAMES_PER_THREAD: usize = 6;
    const FRAME_CHARS: usize = 220;
    let mut out: Vec<String> = Vec::new();
    let mut frames = 0;
    for l in text.lines() {
        if l.starts_with("Thread ") {
            out.push(l.to_string());
            frames = 0;
        } else if l.starts_with('#') && frames < FRAMES_PER_THREAD {
            // "#7  0x... in <function> (<args>) at <file>": the innermost
            // frame (what the thread waits in), then sled's and ours.
            let function = l.split_once(" in ").map_or(l, |(_, f)| f);
            let ours = ["sled::", "<sled::", "serialine", "<serialine"]
                .iter()
                .any(|p| function.starts_with(p));
            if frames == 0 || ours {
                out.push(format!(
                    "  {}",
                    l.chars().take(FRAME_CHARS).collect::<String>()
                ));
                frames += 1;
            }
        }
    }
    if out.is_empty() {
        // No threads: gdb's own words (could not attach, ...).
        out = text.lines().take(20).map(str::to_string).collect();
    }
    if out.len() > BACKTRACE_QUOTED {
        let more = out.len() - BACKTRACE_QUOTED;
        out.truncate(BACKTRACE_QUOTED);
        out.push(format!("... {more} more lines in the file"));
    }
    out.join("\n")
}

/// `<target>/hil-hangs`: the test executable is `<target>/<profile>/deps/<exe>`.
fn hangs_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.parent()?.parent()?.join("hil-hangs"))
}

pub(crate) async fn run_async(s: Scenario, bin: PathBuf) -> Result<Outcome, HilError> {
    let started = Instant::now();
    let fail = run_failure(&s);
    let mut dir = ScenarioDir::create(&s.name)?;
    let root = dir.root.clone();
    let site = harness::site_id(&s.name);

    let ids: Vec<String> = (1..=s.lines).map(line_id).collect();
    let secrets: Vec<(String, Vec<u8>)> = ids
        .iter()
        .map(|id| (id.clone(), secret_for(s.seed, id)))
        .collect();
    let upstream_side = Site::start(&s, &site, &root, &secrets).await?;
    let Site {
        monitor,
        upstream,
        issuer,
        proxy,
        ..
    } = &upstream_side;

    let (profile_path, profile) = load_profile(&s)?;

    let clock = Instant::now();
    let mut rigs: Vec<Rig> = Vec::new();
    for (n, id) in ids.iter().enumerate() {
        let rec = |what: &str| {
            Recorder::create_at(root.join(format!("{what}-{id}.rec")), clock)
                .map_err(|e| HilError::Sim(format!("recorder: {e}")))
        };
        // Each line its own draws, so the lines do not fault in lockstep.
        let seed = s.seed.wrapping_add(1000 * n as u64);
        let (printed_tx, printed_rx) = tokio::sync::mpsc::unbounded_channel();
        let (printer, printer_addr, depth) = start_printer(
            &s,
            &profile,
            seed,
            None,
            printed_tx,
            rec("printer")?,
            &format!("printer of {id}"),
        )
        .await?;
        let cknobs = camera_knobs(&s, seed.wrapping_add(1));
        let (camera, camera_addr) = start_camera(
            cknobs,
            printed_rx,
            rec("camera")?,
            &format!("camera of {id}"),
        )
        .await?;
        let secret = secret_for(s.seed, id);
        write_secret(&root.join(format!("{id}.secret")), &secret, "a line secret")?;
        let devices = format!(
            "{}\n{}",
            framed_section(&profile_path, printer_addr),
            camera_section(camera_addr)
        );
        rigs.push(Rig {
            id: id.clone(),
            secret,
            marker: Marker::Framed(printer, profile.clone()),
            profile: profile.clone(),
            camera,
            devices,
            depth,
            units: s.units + n as u64 * s.units_step,
            ledger_base: 0,
            kill_marks: Vec::new(),
        });
    }

    let mut violations: Vec<Violation> = Vec::new();
    let harness_v = |what: String| Violation::harness(&s.name, s.seed, what);
    let mut kill_points = s.kill_points().into_iter().peekable();
    let mut kill_times_ms: Vec<u64> = Vec::new();
    let deadline = started + Duration::from_secs(s.timeout_secs);
    let mut runs = 0u32;
    let mut kills = 0u32;
    let mut clean_stop = false;
    // The run in which the watchdog found the daemon hung.
    let mut hang: Option<u32> = None;

    'runs: loop {
        let bases: Vec<u64> = rigs
            .iter()
            .map(|r| upstream_side.decided(&r.id).max(r.ledger_base))
            .collect();
        let quantities: Vec<u64> = rigs
            .iter()
            .zip(&bases)
            .map(|(r, b)| r.units.saturating_sub(*b))
            .collect();
        let config = write_config(&root, &config(&s, &site, proxy.port, &rigs, &quantities))?;
        runs += 1;
        let mut daemon = Daemon::start(&bin, &config, run_log(&root, runs))?;
        let run_seq = monitor.seq();
        // Since when every line has been idle with an empty outbox.
        let mut settled_since: Option<Instant> = None;
        loop {
            tokio::time::sleep(POLL).await;
            if let Some(what) = exited_on_its_own(&mut daemon, runs) {
                violations.push(harness_v(what));
                break 'runs;
            }
            let now: Vec<u64> = rigs.iter().map(|r| upstream_side.decided(&r.id)).collect();
            if Instant::now() >= deadline {
                // The watchdog: the daemon is alive but the lines are not
                // done. Take its threads' stacks before anything stops it.
                let per_line: Vec<String> = rigs
                    .iter()
                    .zip(&now)
                    .map(|(r, d)| {
                        format!(
                            "{}: {d} decided of {}, upstream {} unique, status {:?}",
                            r.id,
                            r.units,
                            upstream.line(&r.id).unique(),
                            monitor.status_of(&r.id).map(|st| (
                                st.state,
                                st.decided,
                                st.json["outbox_depth"].clone()
                            ))
                        )
                    })
                    .collect();
                let bt = capture_backtraces(daemon.child.id(), &root, &s.name, s.seed).await;
                violations.push(harness_v(format!(
                    "timed out (hang?) after {}s in run {runs}, the daemon alive (pid {}); {}\n{bt}\nlog tail:\n{}",
                    s.timeout_secs,
                    daemon.child.id(),
                    per_line.join("; "),
                    daemon.tail()
                )));
                hang = Some(runs);
                break;
            }
            // SIGKILL every line at once when the slowest line reached the
            // point, and this run decided something (so each point is its
            // own kill).
            if let Some(&point) = kill_points.peek() {
                let slowest = now.iter().copied().min().unwrap_or(0);
                let progressed = now.iter().sum::<u64>() > bases.iter().sum::<u64>();
                if slowest >= point && progressed {
                    kill_points.next();
                    let at = kill9(&mut daemon, &fail).await?;
                    kills += 1;
                    kill_times_ms.push(at);
                    for rig in &mut rigs {
                        rig.kill_marks.push(rig.camera.log().len());
                        // Upstream lags the ledger: the next run's job is
                        // what this ledger left undecided.
                        let path = ledger_path(&root, &rig.id);
                        if let Some(d) = ledger_decided(path, &rig.id, &rig.secret, &[]).await {
                            rig.ledger_base = d;
                        }
                    }
                    continue 'runs;
                }
            }
            // Done: every line's job ended in this run, and a fresh
            // "stopped" status of each counts what upstream holds, with
            // the outbox empty.
            daemon.log_has("");
            let mut idle = true;
            let done = rigs.iter().zip(&quantities).all(|(r, &q)| {
                let ended = q == 0 || job_ended(&daemon.text, &r.id);
                let status = monitor
                    .status_of(&r.id)
                    .filter(|st| st.seq > run_seq && st.state == "stopped");
                let drained = status
                    .as_ref()
                    .is_some_and(|st| st.json["outbox_depth"] == 0);
                idle &= ended && drained;
                let agreed = status.is_some_and(|st| {
                    st.decided + st.json["counts"]["fenced"].as_u64().unwrap_or(0)
                        == upstream.line(&r.id).unique() as u64
                });
                ended && drained && agreed
            });
            if done {
                break;
            }
            // Every line stopped with its outbox empty, yet some line's
            // counts and upstream's disagree, and stay so: the daemon is
            // not hung and nothing more will arrive. End the run (the
            // checker names the serials) instead of waiting for the
            // watchdog.
            let disagree = rigs
                .iter()
                .map(|r| {
                    let st = monitor.status_of(&r.id);
                    let fenced = st
                        .as_ref()
                        .and_then(|st| st.json["counts"]["fenced"].as_u64())
                        .unwrap_or(0);
                    (
                        r.id.as_str(),
                        st.map_or(0, |st| st.decided + fenced),
                        upstream.line(&r.id).unique() as u64,
                    )
                })
                .filter(|(_, ledger, up)| ledger != up)
                .collect::<Vec<_>>();
            if idle {
                let since = *settled_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= SETTLE {
                    violations.push(harness_v(format!(
                        "not a hang: every line stopped with its outbox empty for {SETTLE:?}, but status and upstream disagree (line, status outcomes, upstream unique): {disagree:?}"
                    )));
                    break;
                }
            } else {
                settled_since = None;
            }
        }
        if hang.is_some() {
            // The evidence is taken; a hung daemon would only sit out the
            // SIGTERM bound. The ledgers are checked as after any kill.
            daemon.signal("-9")?;
            daemon.wait(Duration::from_secs(10)).await;
        } else {
            clean_stop = harness::stop_clean(
                &mut daemon,
                runs,
                &mut violations,
                &harness_v,
                Some((&s, &root)),
            )
            .await?;
        }
        break;
    }
    if let Some(what) = kill_point_missed(kill_points.peek(), kills) {
        violations.push(harness_v(what));
    }

    // Every line checked on its own: its ledger, its devices, its events.
    let logs = read_logs(&root, runs);
    let mut counts = Counts::default();
    let mut report = Report::default();
    let mut per_line = Vec::new();
    for rig in &rigs {
        let store = open_ledger(ledger_path(&root, &rig.id), &rig.id, &rig.secret, &fail).await?;
        let input = CheckInput {
            // The line in the scenario's name: every violation names it.
            scenario: format!("{}/{}", s.name, rig.id),
            seed: s.seed,
            line: rig.id.clone(),
            store: store.clone(),
            device: DeviceLog::Framed {
                recording: root.join(format!("printer-{}.rec", rig.id)),
                profile: rig.profile.clone(),
            },
            camera_log: rig.camera.log(),
            camera_kill_marks: rig.kill_marks.clone(),
            alarm_tolerance: rig.depth + s.line.camera_window + 8,
            upstream: upstream.line(&rig.id),
            issued: issuer.issued(&rig.id),
            logs: logs_of(&logs, &rig.id),
            mid_job: false,
            units: rig.units,
            expect: s.expect.clone(),
            stop_when: s.stop_when,
            earlier: Vec::new(),
            events: checker::RunEvents {
                kill_times_ms: kill_times_ms.clone(),
                ..harness::run_events(&s, &rig.marker, kills, false, clean_stop, rig.depth, &root)
            },
            // Several lines run without packaging levels (`Scenario::validate`).
            hierarchy: None,
        };
        let r = tokio::task::spawn_blocking(move || checker::check(&input))
            .await
            .map_err(|e| fail(format!("checker task: {e}")))?;
        let c = store.counts();
        drop(store);
        per_line.push(format!(
            "{}: ledger {} committed, {} rejected, {} voided, {} in flight; printer frames {}; upstream {} unique; accounting: {}; {} violation(s)",
            rig.id,
            c.committed + c.synced,
            c.rejected,
            c.voided,
            c.sent + c.printed,
            r.printer_frames,
            r.upstream_unique,
            r.accounting,
            r.violations.len()
        ));
        add_counts(&mut counts, &c);
        merge(&mut report, r);
    }
    violations.append(&mut report.violations);
    report.violations = violations;

    Ok(Outcome {
        counts,
        lines: per_line,
        ..outcome(&s, started, runs, kills, report, &mut dir, monitor)
    })
}

/// `$sum.f += $part.f` for each field `f` named: the lines' figures summed
/// field by field.
macro_rules! add_fields {
    ($sum:expr, $part:expr; $($f:ident),+ $(,)?) => {
        $($sum.$f += $part.$f;)+
    };
}

/// Adds `part`'s values into `sum`, key by key.
fn add_map<K: Ord, V: std::ops::AddAssign + Default>(
    sum: &mut std::collections::BTreeMap<K, V>,
    part: impl IntoIterator<Item = (K, V)>,
) {
    for (k, v) in part {
        *sum.entry(k).or_default() += v;
    }
}

fn add_counts(sum: &mut Counts, c: &Counts) {
    add_fields!(sum, c; issued, sent, printed, committed, synced, rejected, voided, reported, blocks, fenced);
}

/// Sums one line's report into the scenario's (each line's own figures are
/// in [`Outcome::lines`]).
fn merge(sum: &mut Report, mut r: Report) {
    sum.violations.append(&mut r.violations);
    add_fields!(
        sum, r;
        printer_frames,
        duplicate_alarms,
        foreign_alarms,
        camera_reports,
        upstream_unique,
        alarms_excused,
        device_fault_alarms,
    );
    for (k, v) in r.reject_signals {
        *sum.reject_signals.entry(k).or_default() += v;
    }
    add_map(&mut sum.printed_per_gtin, r.printed_per_gtin);
    // The accounting summed over the lines: a kill is one event per line.
    let (a, b) = (&mut sum.accounting, r.accounting);
    add_map(&mut a.rejects, b.rejects);
    add_fields!(a, b; voided, void_events, fenced, redeliveries);
    a.voided_per_kill
        .resize(a.voided_per_kill.len().max(b.voided_per_kill.len()), 0);
    for (x, y) in a.voided_per_kill.iter_mut().zip(b.voided_per_kill) {
        *x += y;
    }
    for (k, n) in b.unit_faults {
        let t = a.unit_faults.entry(k).or_default();
        add_fields!(t, n; injected, rejected, alarms);
    }
}
