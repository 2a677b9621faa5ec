//! Issue 14: the simulated packaging levels of a scenario with
//! `[aggregation]`, and the `[[line.aggregation]]` sections of the daemon's
//! config that point at them.
//!
//! Per level (cases, then pallets), wired as the demo wires them
//! (`serialine-lab`'s `sim_devices::sim_level`):
//!
//! ```text
//! unit camera ──pass_to──► case packer ──(one TAB-joined read per case)──► daemon
//! daemon ──ZPL──► case label printer ──printed──► tap ──► case scanner ──► daemon
//!                                                          └─pass_to──► pallet station ──► daemon
//! ```
//!
//! The tap between a label printer and its scanner logs every label the
//! printer printed, in order: the checker's record of what went on paper
//! (the printer simulator only counts), and the harness's trigger for a
//! kill between print and scan. A counting level has no packer: the daemon
//! takes the next children it committed.
//!
//! Every simulator is started once and lives for the whole scenario: a
//! killed daemon's connections drop, the next run's drivers reconnect, and
//! what a device did meanwhile (a label printed from its buffer, a case
//! read) reaches the next run.

use crate::checker::{HierarchyInput, LevelLog};
use crate::harness::io_err;
use crate::scenario::{AggregationMode, AggregationSpec, Scenario};
use crate::HilError;
use serialine_core::Gtin;
use serialine_devices::camera::CameraProfile;
use serialine_devices::UnitId;
use serialine_sim::aggregation::{AggregationKnobs, AggregationSim};
use serialine_sim::camera::{CameraKnobs, CameraSim};
use serialine_sim::label::{LabelSim, LabelSimConfig};
use serialine_sim::recording::Recorder;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio::task::JoinHandle;

/// Codes on their way down the line: `(unit or label index, code)`.
pub(crate) type Passed = UnboundedReceiver<(UnitId, String)>;

/// The scenario's packaging levels, from cases up.
pub(crate) struct Packaging {
    pub(crate) levels: Vec<SimLevel>,
    pub(crate) spec: AggregationSpec,
}

/// One level's simulators.
pub(crate) struct SimLevel {
    /// `"case"` or `"pallet"`: the level's name in the daemon's config.
    pub(crate) name: &'static str,
    pub(crate) gtin: Gtin,
    pub(crate) per_parent: u32,
    pub(crate) mode: AggregationMode,
    /// The case packer or pallet station and its aggregation camera's
    /// address (scan mode).
    packer: Option<(AggregationSim, SocketAddr)>,
    label: LabelSim,
    /// Every label the label printer printed, in order (the tap's log).
    printed: Arc<Mutex<Vec<String>>>,
    tap: JoinHandle<()>,
    scanner: CameraSim,
    scanner_addr: SocketAddr,
}

impl Drop for SimLevel {
    fn drop(&mut self) {
        self.tap.abort();
    }
}

impl SimLevel {
    /// Barcode data of every label format the printer received, in order.
    pub(crate) fn formats_received(&self) -> Vec<String> {
        self.label.formats_received()
    }

    /// Every label printed, in order.
    pub(crate) fn printed(&self) -> Vec<String> {
        self.printed.lock().map(|p| p.clone()).unwrap_or_default()
    }

    /// What the label scanner reported, in order.
    pub(crate) fn scanner_log(&self) -> Vec<serialine_sim::camera::Reported> {
        self.scanner.log()
    }

    fn log(&self) -> LevelLog {
        LevelLog {
            name: self.name.to_string(),
            gtin: self.gtin,
            per_parent: self.per_parent,
            scans: self.mode == AggregationMode::Scan,
            formats: self.formats_received(),
            printed: self.printed(),
            scanner: self.scanner_log(),
            packer: self.packer.as_ref().map(|(p, _)| p.log()),
        }
    }

    /// The level's `[[line.aggregation]]` section.
    fn section(&self, a: &AggregationSpec) -> String {
        let mut s = format!(
            r#"
[[line.aggregation]]
level = "{name}"
gtin = "{gtin}"
per_parent = {per}
mode = "{mode}"
label_printer = "{label}"
label = {{ symbology = "data_matrix", module_size = 6, x = 50, y = 50, gs1 = true, poll_interval_ms = 5 }}
label_deadline_ms = {deadline}
close_wait_ms = {close}

[line.aggregation.scanner.transport]
kind = "tcp"
addr = "{scanner}"
"#,
            name = self.name,
            gtin = self.gtin.as_string(),
            per = self.per_parent,
            mode = self.mode.as_str(),
            label = self.label.addr(),
            deadline = a.label_deadline_ms,
            close = a.close_wait_ms,
            scanner = self.scanner_addr,
        );
        if let Some((_, addr)) = &self.packer {
            // One result line per case, its codes by TAB: a long line.
            let _ = write!(
                s,
                r#"
[line.aggregation.camera]
template = "{{trigger}};{{content}}"
max_line = 65536

[line.aggregation.camera.transport]
kind = "tcp"
addr = "{addr}"
"#
            );
        }
        s
    }
}

/// When the case level scans, a channel for the unit camera's `pass_to`
/// (the units it read good, into the case packer) and its other end for
/// [`Packaging::start`].
pub(crate) fn unit_feed(
    s: &Scenario,
) -> (Option<UnboundedSender<(UnitId, String)>>, Option<Passed>) {
    match &s.aggregation {
        Some(a) if a.mode == AggregationMode::Scan => {
            let (tx, rx) = mpsc::unbounded_channel();
            (Some(tx), Some(rx))
        }
        _ => (None, None),
    }
}

impl Packaging {
    /// Starts every level's simulators; `units` is the unit camera's
    /// passed stream when the case level scans ([`unit_feed`]).
    pub(crate) async fn start(
        s: &Scenario,
        a: &AggregationSpec,
        root: &Path,
        units: Option<Passed>,
    ) -> Result<Packaging, HilError> {
        let gtin = |what: &str, g: &str| {
            Gtin::parse(g).map_err(|e| HilError::Sim(format!("aggregation.{what}: {e}")))
        };
        let mut plan = vec![("case", gtin("case_gtin", &a.case_gtin)?, a.per_case, a.mode)];
        if let Some(n) = a.cases_per_pallet {
            plan.push((
                "pallet",
                gtin("pallet_gtin", &a.pallet_gtin)?,
                n,
                a.pallet_mode,
            ));
        }
        let mut feed = units;
        let mut levels = Vec::new();
        for (i, (name, gtin, per_parent, mode)) in plan.iter().copied().enumerate() {
            let next_scans = plan
                .get(i + 1)
                .is_some_and(|(_, _, _, m)| *m == AggregationMode::Scan);
            let (level, next) = start_level(
                s,
                a,
                root,
                i as u64,
                (name, gtin, per_parent, mode),
                feed.take(),
                next_scans,
            )
            .await?;
            levels.push(level);
            feed = next;
        }
        Ok(Packaging {
            levels,
            spec: a.clone(),
        })
    }

    /// The `[[line.aggregation]]` sections, appended to the line's.
    pub(crate) fn config_sections(&self) -> String {
        self.levels.iter().map(|l| l.section(&self.spec)).collect()
    }

    /// The GTINs of the levels' labels.
    pub(crate) fn label_gtins(&self) -> Vec<Gtin> {
        self.levels.iter().map(|l| l.gtin).collect()
    }

    /// The case level (always there).
    pub(crate) fn cases(&self) -> &SimLevel {
        &self.levels[0]
    }

    /// Everything the checker's hierarchy rule reads; `killed_labels`: the
    /// label codes in flight at the harness's label kills.
    pub(crate) fn input(&self, unit_gtin: Gtin, killed_labels: Vec<String>) -> HierarchyInput {
        HierarchyInput {
            unit_gtin,
            levels: self.levels.iter().map(SimLevel::log).collect(),
            killed_labels,
        }
    }

    /// Writes each packer's reads and each level's printed labels into the
    /// scenario directory, for whoever inspects a kept run.
    pub(crate) fn write_logs(&self, root: &Path) -> Result<(), HilError> {
        for l in &self.levels {
            let mut text = String::new();
            if let Some((p, _)) = &l.packer {
                for r in p.log() {
                    let _ = writeln!(text, "{r:?}");
                }
                let path = root.join(format!("packer-{}.log", l.name));
                std::fs::write(&path, &text)
                    .map_err(io_err(format!("writing {}", path.display())))?;
            }
            let path = root.join(format!("label-{}-printed.log", l.name));
            let printed: String = l.printed().iter().map(|c| format!("{c:?}\n")).collect();
            std::fs::write(&path, printed)
                .map_err(io_err(format!("writing {}", path.display())))?;
        }
        Ok(())
    }
}

/// One level: its packer (scan mode, fed by `feed`), label printer, tap and
/// scanner. Returns it and, when the next level scans, the labels its
/// scanner read good (the next level's feed).
async fn start_level(
    s: &Scenario,
    a: &AggregationSpec,
    root: &Path,
    index: u64,
    (name, gtin, per_parent, mode): (&'static str, Gtin, u32, AggregationMode),
    feed: Option<Passed>,
    next_scans: bool,
) -> Result<(SimLevel, Option<Passed>), HilError> {
    let sim = |what: &str, e: String| HilError::Sim(format!("{name} {what}: {e}"));
    let packer = match mode {
        AggregationMode::Count => None,
        AggregationMode::Scan => {
            let feed = feed.ok_or_else(|| sim("packer", "nothing feeds it".into()))?;
            // Packer faults are the case packer's; the pallet station is clean.
            let faults = index == 0;
            let knobs = AggregationKnobs {
                seed: s.seed ^ (0x10 + index),
                per_case: per_parent as usize,
                // The pallet station waits twice as long: the job's last
                // case is itself read only after `flush_after`, and a
                // pallet closed before it came would leave it a pallet of
                // its own.
                flush_after: Some(Duration::from_millis(a.flush_after_ms * (1 + index))),
                missing_at: if faults {
                    a.missing_at.clone()
                } else {
                    Vec::new()
                },
                foreign_at: if faults {
                    a.foreign_at.clone()
                } else {
                    Vec::new()
                },
                already_aggregated_at: if faults {
                    a.already_aggregated_at.clone()
                } else {
                    Vec::new()
                },
                no_read_at: if faults {
                    a.no_read_at.clone()
                } else {
                    Vec::new()
                },
                ..AggregationKnobs::default()
            };
            let (packer, addr) = AggregationSim::listen("127.0.0.1:0", knobs, feed)
                .await
                .map_err(|e| sim("packer", e.to_string()))?;
            Some((packer, addr))
        }
    };
    let (label_tx, mut label_rx) = mpsc::unbounded_channel::<(u64, String)>();
    let label = LabelSim::start(
        LabelSimConfig {
            print_time: Duration::from_millis(a.label_print_time_ms),
            record_path: Some(root.join(format!("label-{name}.jsonl"))),
            ..LabelSimConfig::default()
        },
        label_tx,
    )
    .await
    .map_err(|e| sim("label printer", e.to_string()))?;
    // The tap: what was printed, logged before it goes under the scanner.
    let (scan_tx, scan_rx) = mpsc::unbounded_channel::<(UnitId, String)>();
    let printed = Arc::new(Mutex::new(Vec::new()));
    let log = printed.clone();
    let tap = tokio::spawn(async move {
        while let Some((index, code)) = label_rx.recv().await {
            if let Ok(mut l) = log.lock() {
                l.push(code.clone());
            }
            if scan_tx.send((index, code)).is_err() {
                break;
            }
        }
    });
    let (pass_to, next) = if next_scans {
        let (tx, rx) = mpsc::unbounded_channel();
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let knobs = CameraKnobs {
        seed: s.seed ^ (0x20 + index),
        read_latency: Duration::from_millis(a.scanner_read_latency_ms),
        no_read_rate: a.scanner_no_read_rate,
        low_grade_rate: a.scanner_low_grade_rate,
        pass_to,
        ..CameraKnobs::default()
    };
    let recorder = Recorder::create(root.join(format!("scanner-{name}.rec")))
        .map_err(|e| sim("scanner recorder", e.to_string()))?;
    let (scanner, scanner_addr) = CameraSim::listen(
        "127.0.0.1:0",
        &CameraProfile::default(),
        knobs,
        scan_rx,
        Some(recorder),
    )
    .await
    .map_err(|e| sim("scanner", e.to_string()))?;
    Ok((
        SimLevel {
            name,
            gtin,
            per_parent,
            mode,
            packer,
            label,
            printed,
            tap,
            scanner,
            scanner_addr,
        },
        next,
    ))
}
