//! Operator tools that read a ledger directly: `status`, `export` and
//! `archive`.
//!
//! A ledger is locked by the process that has it open, so these run while
//! the service is stopped (or against a copy); while it runs, its live
//! status is the retained `status` topic on MQTT.

use anyhow::Context;
use serialine::config::Config;
use serialine_core::UnitState;
use serialine_store::{archive, ArchiveOptions, Store, StoreError, StoreOptions};
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Opens one configured line's ledger, turning "in use" into advice.
fn open_line(config: &Config, index: usize) -> anyhow::Result<Store> {
    open_line_with(config, index, false)
}

/// [`open_line`] through the line's fence, as the service opens it: for
/// tools that take serials out of the pool (`serialine return`).
pub(crate) fn open_line_fenced(config: &Config, index: usize) -> anyhow::Result<Store> {
    open_line_with(config, index, true)
}

fn open_line_with(config: &Config, index: usize, fenced: bool) -> anyhow::Result<Store> {
    let line = &config.lines[index];
    let (secret, _) = config.line_secret(index)?;
    let path = config.line_ledger_path(&line.id);
    if !path.exists() {
        anyhow::bail!(
            "line {}: no ledger at {} (the line has never run here)",
            line.id,
            path.display()
        );
    }
    let mut opts = StoreOptions::new(&path, line.id.as_str(), secret.expose());
    opts.max_batch = config.store.max_batch as usize;
    if fenced {
        opts.fence = Some(config.line_fence_path(&line.id));
    }
    match Store::open(opts) {
        Ok((store, _)) => Ok(store),
        Err(e @ StoreError::Locked { .. }) => Err(anyhow::anyhow!(
            "line {}: {e}\nwhile the service runs, read serialine/{}/{}/status on MQTT instead",
            line.id,
            config.site.id,
            line.id
        )),
        Err(e) => Err(anyhow::anyhow!("line {}: {e}", line.id)),
    }
}

/// Every configured line's ledger, opened here (the service is stopped).
pub fn open_all(config: &Config) -> anyhow::Result<Vec<(String, Store)>> {
    (0..config.lines.len())
        .map(|i| Ok((config.lines[i].id.clone(), open_line(config, i)?)))
        .collect()
}

pub(crate) fn selected(config: &Config, line: Option<&str>) -> anyhow::Result<Vec<usize>> {
    let all: Vec<usize> = (0..config.lines.len()).collect();
    match line {
        None => Ok(all),
        Some(id) => match config.lines.iter().position(|l| l.id == id) {
            Some(i) => Ok(vec![i]),
            None => anyhow::bail!(
                "no line {id:?} in {}; configured lines: {}",
                config.origin_name(),
                config
                    .lines
                    .iter()
                    .map(|l| l.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
    }
}

/// One line's status as `serialine status --json` prints it: from a ledger
/// opened here, or from the running service (`control.rs`), which adds
/// `service` and `state`.
pub fn line_status(
    id: &str,
    store: &Store,
    archive_dir: &std::path::Path,
) -> anyhow::Result<serde_json::Value> {
    let c = store.counts();
    Ok(serde_json::json!({
        "line": id,
        "ledger": store.path().display().to_string(),
        "issued": c.issued,
        "blocks": c.blocks,
        "buffer": store.buffer_depth(),
        "sent": c.sent,
        "printed": c.printed,
        "committed": c.committed,
        "synced": c.synced,
        "rejected": c.rejected,
        "voided": c.voided,
        "reported": c.reported,
        "sampled": c.sampled,
        "decommissioned": c.decommissioned,
        "returned": c.returned,
        "archived": c.archived,
        "archive_dir": archive_dir.display().to_string(),
        "in_flight": store.in_flight()?.len(),
        "outbox": store.outbox_depth(),
    }))
}

/// `serialine status`: counts per state, buffer, in flight, outbox. Asks
/// the running service over its control socket; without one, reads the
/// ledgers directly.
pub fn status(config: &Config, line: Option<&str>, json: bool) -> anyhow::Result<()> {
    let socket = config.control_socket_path();
    let request = serde_json::json!({"cmd": "status", "line": line});
    let lines: Vec<serde_json::Value> = match crate::control::ask(&socket, &request)? {
        Some(answer) => answer["status"].as_array().cloned().unwrap_or_default(),
        None => selected(config, line)?
            .into_iter()
            .map(|i| {
                let id = &config.lines[i].id;
                line_status(id, &open_line(config, i)?, &config.line_archive_dir(id))
            })
            .collect::<anyhow::Result<_>>()?,
    };
    if json {
        println!("{}", serde_json::Value::Array(lines));
        return Ok(());
    }
    for v in &lines {
        let n = |k: &str| v[k].as_u64().unwrap_or(0);
        let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
        match v["service"].as_str() {
            Some(_) => println!(
                "line {} ({}): the service is running it: {}",
                s("line"),
                s("ledger"),
                v["state"].as_str().unwrap_or("state unknown")
            ),
            None => println!(
                "line {} ({}): the service is not running",
                s("line"),
                s("ledger")
            ),
        }
        println!(
            "  buffer      {} serials available ({} issued in {} blocks)",
            n("buffer"),
            n("issued"),
            n("blocks")
        );
        println!(
            "  in flight   {} (sent {}, printed {}){}",
            n("in_flight"),
            n("sent"),
            n("printed"),
            if v["service"].is_null() {
                ": reconciled at next start"
            } else {
                ""
            }
        );
        println!(
            "  committed   {} ({} acknowledged upstream)",
            n("committed") + n("synced"),
            n("synced")
        );
        println!(
            "  rejected    {}, voided {} ({} of them reported upstream)",
            n("rejected"),
            n("voided"),
            n("reported")
        );
        println!(
            "  outbox      {} event(s) waiting for upstream",
            n("outbox")
        );
        println!(
            "  archived    {} serials, in {}",
            n("archived"),
            s("archive_dir")
        );
        println!(
            "  returned    {} unused serials given back upstream",
            n("returned")
        );
    }
    Ok(())
}

/// One archiving round of one line, done here or by the running service.
#[derive(Debug, Default, serde::Deserialize)]
struct ArchiveRound {
    files: Vec<String>,
    blocks: u64,
    serials: u64,
    bytes: u64,
    took_ms: u64,
    /// Serial records the ledger keeps, and archived in all, after it.
    kept: u64,
    archived: u64,
}

/// `serialine archive`: moves what the retention rule allows out of each
/// ledger into archive files, printing each file as it is written. While
/// the service runs, it asks the service (control socket), one file at a
/// time; otherwise it opens the ledgers.
pub fn archive(config: &Config, line: Option<&str>, before: SystemTime) -> anyhow::Result<u64> {
    let socket = config.control_socket_path();
    let before_ms = before
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    let running = crate::control::ask(&socket, &serde_json::json!({"cmd": "status"}))?.is_some();
    let mut total = 0;
    for i in selected(config, line)? {
        let id = &config.lines[i].id;
        let store = if running {
            None
        } else {
            Some(open_line(config, i)?)
        };
        let round = || -> anyhow::Result<ArchiveRound> {
            let Some(store) = &store else {
                let request =
                    serde_json::json!({"cmd": "archive", "before_ms": before_ms, "line": id});
                let answer = crate::control::ask(&socket, &request)?
                    .ok_or_else(|| anyhow::anyhow!("the service stopped while archiving"))?;
                return Ok(serde_json::from_value(answer["lines"][0].clone())?);
            };
            let mut opts = ArchiveOptions::new(config.line_archive_dir(id), before);
            opts.max_files = 1;
            let r = store.archive_blocking(&opts)?;
            let c = store.counts();
            Ok(ArchiveRound {
                files: r.files.iter().map(|f| f.display().to_string()).collect(),
                blocks: r.blocks,
                serials: r.serials,
                bytes: r.bytes,
                took_ms: r.took.as_millis() as u64,
                kept: c.left_pool() - c.archived,
                archived: c.archived,
            })
        };
        let (mut files, mut serials, mut bytes) = (0u64, 0u64, 0u64);
        let last = loop {
            let r = round().with_context(|| format!("line {id}: archiving"))?;
            let Some(path) = r.files.first() else {
                break r;
            };
            println!(
                "line {id}: {} serials of {} blocks -> {path} ({} KiB, {} ms)",
                r.serials,
                r.blocks,
                r.bytes.div_ceil(1024),
                r.took_ms
            );
            files += 1;
            serials += r.serials;
            bytes += r.bytes;
        };
        println!(
            "line {id}: {serials} serials archived in {files} file(s), {} KiB{}; the ledger keeps {} serial records, {} archived in all",
            bytes.div_ceil(1024),
            if running { ", by the running service" } else { "" },
            last.kept,
            last.archived
        );
        total += serials;
    }
    Ok(total)
}

/// A job's report as JSON: its entry, its units by outcome, whether it
/// balances and what keeps it from balancing.
pub fn job_report_json(line: &str, r: &serialine_store::JobReport) -> serde_json::Value {
    let mut v = serde_json::to_value(r).unwrap_or_default();
    v["line"] = serde_json::json!(line);
    v["committed_total"] = serde_json::json!(r.committed_total());
    v["rejected_total"] = serde_json::json!(r.rejected_total());
    v["balanced"] = serde_json::json!(r.balanced());
    v
}

/// The report of `line`'s job `job` (default: its last; none before its
/// first job), from `store`'s tally of it (archived units included). With
/// `series_from` (the line's archive directory), each report also gets its
/// units over time (`report_html::job_series`, a scan) for `--html`.
pub fn line_job_reports(
    line: &str,
    store: &Store,
    job: Option<u32>,
    series_from: Option<&std::path::Path>,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let numbers: Vec<u32> = match job {
        Some(n) => vec![n],
        None => store.jobs()?.last().map(|(n, _)| *n).into_iter().collect(),
    };
    numbers
        .into_iter()
        .map(|n| {
            let r = store.job_report(n)?;
            let Some(entry) = &r.entry else {
                anyhow::bail!("line {line}: no job {n} in its ledger");
            };
            let mut v = job_report_json(line, &r);
            if let Some(dir) = series_from {
                v["series"] = crate::report_html::job_series(
                    line,
                    store,
                    dir,
                    n,
                    entry.started_ms,
                    entry.ended_ms,
                )?;
            }
            Ok(v)
        })
        .collect()
}

/// `serialine report`: a job's reconciliation per line, from the running
/// service (control socket) or the ledgers.
pub fn report(
    config: &Config,
    line: Option<&str>,
    job: Option<u32>,
    json: bool,
    html: Option<&std::path::Path>,
) -> anyhow::Result<bool> {
    let socket = config.control_socket_path();
    let series = html.is_some();
    let request = serde_json::json!({"cmd": "report", "line": line, "job": job, "series": series});
    let reports: Vec<serde_json::Value> = match crate::control::ask(&socket, &request)? {
        Some(answer) => answer["reports"].as_array().cloned().unwrap_or_default(),
        None => {
            let mut out = Vec::new();
            for i in selected(config, line)? {
                let id = &config.lines[i].id;
                let dir = config.line_archive_dir(id);
                out.extend(line_job_reports(
                    id,
                    &open_line(config, i)?,
                    job,
                    series.then_some(dir.as_path()),
                )?);
            }
            out
        }
    };
    let balanced = reports.iter().all(|r| r["balanced"] == true);
    if let Some(path) = html {
        let page = crate::report_html::render(&reports);
        let tmp = path.with_extension("html.part");
        std::fs::write(&tmp, page).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
        eprintln!("report written to {}", path.display());
    }
    if json {
        println!("{}", serde_json::Value::Array(reports));
        return Ok(balanced);
    }
    if reports.is_empty() {
        println!("no job recorded yet");
    }
    for r in &reports {
        let e = &r["entry"];
        let n = |k: &str| r[k].as_u64().unwrap_or(0);
        let at = |k: &str| {
            e[k].as_u64().map_or("-".to_string(), |ms| {
                humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms))
                    .to_string()
            })
        };
        println!(
            "line {}, job {}: GTIN {}, lot {}, expiry {}, quantity {}",
            r["line"].as_str().unwrap_or("?"),
            n("number"),
            e["gtin"].as_str().unwrap_or("?"),
            e["lot"].as_str().unwrap_or("?"),
            e["expiry"].as_str().unwrap_or("?"),
            e["quantity"]
        );
        println!(
            "  started {}, ended {} ({})",
            at("started_ms"),
            at("ended_ms"),
            e["end"].as_str().unwrap_or("still running")
        );
        let rejected: Vec<String> = r["rejected"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| format!("{k} {v}")).collect())
            .unwrap_or_default();
        println!("  sent          {}", n("sent"));
        println!(
            "  committed     {} (not yet acknowledged {}, sampled {}, decommissioned {})",
            n("committed_total"),
            n("committed"),
            n("sampled"),
            n("decommissioned")
        );
        println!(
            "  rejected      {}{}",
            n("rejected_total"),
            if rejected.is_empty() {
                String::new()
            } else {
                format!(" ({})", rejected.join(", "))
            }
        );
        println!("  voided        {}", n("voided"));
        println!("  in flight     {}", n("in_flight"));
        println!(
            "  returned      {} (unused, given back upstream; never sent)",
            n("returned")
        );
        println!(
            "  issued        {} = sent + returned + still buffered {}",
            n("sent") + n("returned") + n("buffered"),
            n("buffered")
        );
        let h = &r["hierarchy"];
        if h.is_object() {
            for l in h["levels"].as_array().into_iter().flatten() {
                println!(
                    "  level {}       {} parent(s) holding {}{}",
                    l["level"],
                    l["parents"],
                    l["children"],
                    match l["partial"].as_u64() {
                        Some(p) if p > 0 =>
                            format!(" ({p} partial: closed short at the job's end)"),
                        _ => String::new(),
                    }
                );
            }
            println!(
                "  committed now {} = in parents {} + labels {} + loose {}",
                n("committed") + n("synced"),
                h["units_in_parents"],
                h["labels"],
                h["loose"]
            );
        }
        match r["balanced"].as_bool() {
            Some(true) => println!("  balanced: sent = committed + rejected + voided + in flight"),
            _ => println!(
                "  NOT balanced: in flight after the job ended: {}",
                r["unbalanced"]
                    .as_array()
                    .map(|a| a
                        .iter()
                        .filter_map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", "))
                    .unwrap_or_default()
            ),
        }
    }
    Ok(balanced)
}

/// One line of words for a job's reconciliation.
pub fn job_summary(r: &serialine_store::JobReport) -> String {
    format!(
        "sent {} = committed {} (of which sampled {}, decommissioned {}) + rejected {} + voided {} + in flight {}: {}; {} unused serials returned",
        r.sent,
        r.committed_total(),
        r.sampled,
        r.decommissioned,
        r.rejected_total(),
        r.voided,
        r.in_flight,
        if r.balanced() { "balanced" } else { "NOT balanced" },
        r.returned
    )
}

/// Writes a job's report to `<dir>/job-<n>.json` (a temporary file,
/// renamed): what the batch record takes from the line.
pub fn write_job_report(
    dir: &std::path::Path,
    r: &serialine_store::JobReport,
) -> anyhow::Result<std::path::PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("job-{}.json", r.number));
    let tmp = dir.join(format!(".job-{}.json.part", r.number));
    let line = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let body = serde_json::to_vec_pretty(&job_report_json(&line, r))?;
    std::fs::write(&tmp, body).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(path)
}

/// Parses `--since`: an RFC 3339 time (`2026-11-26T08:00:00Z`, or just the
/// date), or a duration back from now (`8h`, `30min`, `2days`).
pub fn parse_since(s: &str) -> anyhow::Result<SystemTime> {
    let s = s.trim();
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return Ok(t);
    }
    if let Ok(t) = humantime::parse_rfc3339_weak(&format!("{s}T00:00:00Z")) {
        return Ok(t);
    }
    let back = humantime::parse_duration(s).with_context(|| {
        format!("--since {s:?}: expected a time like 2026-11-26T08:00:00Z, a date like 2026-11-26, or a duration like 8h")
    })?;
    Ok(SystemTime::now().checked_sub(back).unwrap_or(UNIX_EPOCH))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    Csv,
    Jsonl,
    /// A GS1 EPCIS 2.0 JSON-LD document: per ended job, commissioning
    /// `ObjectEvent`s (lot and expiry in `ilmd`) and the decommissioning
    /// ones, each `eventID` its CBV 2.0 event hash.
    Epcis,
}

/// Where the line's events happen, for EPCIS (GS1 Digital Link URIs).
#[derive(Debug, Default, Clone)]
pub struct EpcisPlaces {
    pub read_point: Option<String>,
    pub biz_location: Option<String>,
}

/// Most EPCs in one EPCIS event: repositories take events of this size.
const EPCS_PER_EVENT: usize = 10_000;

/// `serialine export --format epcis`: the events of every job that ended
/// at or after `since_ms`, from the ledgers and their archives, as one
/// EPCIS 2.0 document. A job still running has no events yet: its
/// commissioning event's time is its end, so ids stay the same on every
/// export.
fn export_epcis(
    config: &Config,
    line: Option<&str>,
    since_ms: u64,
    places: &EpcisPlaces,
    w: &mut impl Write,
) -> anyhow::Result<u64> {
    use serialine_core::epcis::Event;
    use serialine_core::{code::sgtin_uri, DecommissionReason, Gtin, SamplePurpose, Serial};
    let mut events = Vec::new();
    let mut units = 0;
    for i in selected(config, line)? {
        let store = open_line(config, i)?;
        let id = &config.lines[i].id;
        // The command's flags, else the line's `[line.epcis]`.
        let configured = &config.lines[i].epcis;
        let places = &EpcisPlaces {
            read_point: places
                .read_point
                .clone()
                .or_else(|| configured.read_point.clone()),
            biz_location: places
                .biz_location
                .clone()
                .or_else(|| configured.biz_location.clone()),
        };
        let mut records = archive::records_since(&config.line_archive_dir(id), id, 0, |_| true)?;
        records.extend(store.records_since(0, |_| true)?);
        records.sort_by(|a, b| a.0.cmp(&b.0));
        // Each serial's product is its block's (units and case labels come
        // from blocks of their own GTIN); an archived block's data is gone,
        // and its serials take their job's product.
        let mut block_gtins: std::collections::HashMap<u64, Gtin> = Default::default();
        for (_, r) in &records {
            if let std::collections::hash_map::Entry::Vacant(v) = block_gtins.entry(r.block_id) {
                if let Ok(g) = store.block_gtin(r.block_id) {
                    v.insert(g);
                }
            }
        }
        let parents = store.parents()?;
        for (number, job) in store.jobs()? {
            let Some(ended_ms) = job.ended_ms.filter(|t| *t >= since_ms) else {
                continue;
            };
            let gtin = Gtin::parse(&job.gtin)
                .with_context(|| format!("line {id}, job {number}: GTIN {}", job.gtin))?;
            let expiry = serialine_core::Expiry::parse(&job.expiry)
                .with_context(|| format!("line {id}, job {number}: expiry {}", job.expiry))?;
            let gtin_of = |r: &serialine_store::SerialRecord| {
                block_gtins.get(&r.block_id).copied().unwrap_or(gtin)
            };
            let epc_of = |s: &Serial, r: &serialine_store::SerialRecord| sgtin_uri(&gtin_of(r), s);
            let epc = |s: &Serial| {
                records
                    .binary_search_by(|(x, _)| x.cmp(s))
                    .map(|i| epc_of(s, &records[i].1))
                    .unwrap_or_else(|_| sgtin_uri(&gtin, s))
            };
            let mine = || records.iter().filter(|(_, r)| r.job == number);
            // One commissioning per product: the units, and their cases.
            let mut by_product: std::collections::BTreeMap<String, Vec<String>> =
                Default::default();
            for (s, r) in mine().filter(|(_, r)| {
                matches!(
                    r.state,
                    UnitState::Committed
                        | UnitState::Synced
                        | UnitState::Sampled(_)
                        | UnitState::Decommissioned(_)
                )
            }) {
                by_product
                    .entry(gtin_of(r).as_string())
                    .or_default()
                    .push(epc_of(s, r));
            }
            let commissioned: Vec<String> = by_product.values().flatten().cloned().collect();
            units += commissioned.len() as u64;
            for chunk in by_product.values().flat_map(|v| v.chunks(EPCS_PER_EVENT)) {
                events.push(
                    Event {
                        event_time_ms: ended_ms,
                        parent_id: None,
                        epcs: chunk.to_vec(),
                        action: "ADD",
                        biz_step: "commissioning",
                        disposition: "active",
                        read_point: places.read_point.clone(),
                        biz_location: places.biz_location.clone(),
                        lot_and_expiry: Some((job.lot.clone(), expiry.iso_date())),
                    }
                    .to_json(),
                );
            }
            // What became of units after their commit, one event per kind,
            // at the last such move's time (stable on re-export). Samples
            // still held as such (a sample destroyed later is in the
            // destroying event): OBSERVE, bizStep sampling, disposition
            // non_sellable_other (CBV 2.0: not for sale, for a reason CBV
            // has no word of its own for). Decommissioned: DELETE, with
            // destroying / destroyed or decommissioning / inactive, stolen.
            let samples = SamplePurpose::ALL.map(|p| {
                (
                    UnitState::Sampled(p),
                    "OBSERVE",
                    "sampling",
                    "non_sellable_other",
                )
            });
            let ends = DecommissionReason::ALL.map(|r| {
                let (biz_step, disposition) = match r {
                    DecommissionReason::Destroyed => ("destroying", "destroyed"),
                    DecommissionReason::Damaged => ("decommissioning", "inactive"),
                    DecommissionReason::Stolen => ("decommissioning", "stolen"),
                };
                (
                    UnitState::Decommissioned(r),
                    "DELETE",
                    biz_step,
                    disposition,
                )
            });
            for (state, action, biz_step, disposition) in samples.into_iter().chain(ends) {
                let moved: Vec<_> = mine().filter(|(_, r)| r.state == state).collect();
                let Some(at) = moved.iter().map(|(_, r)| r.at_ms).max() else {
                    continue;
                };
                let epcs: Vec<String> = moved.iter().map(|(s, _)| epc(s)).collect();
                for chunk in epcs.chunks(EPCS_PER_EVENT) {
                    events.push(
                        Event {
                            event_time_ms: at,
                            parent_id: None,
                            epcs: chunk.to_vec(),
                            action,
                            biz_step,
                            disposition,
                            read_point: places.read_point.clone(),
                            biz_location: places.biz_location.clone(),
                            lot_and_expiry: None,
                        }
                        .to_json(),
                    );
                }
            }
            // The hierarchy as it stands: each parent of this job holding
            // children, packed at its first pack (ADD, packing).
            for (parent, entry) in parents.iter().filter(|(_, e)| {
                e.job == number
                    && e.children > 0
                    && e.state == serialine_store::hierarchy::ParentState::Packed
            }) {
                let children: Vec<String> = store
                    .contents(parent)?
                    .map(|(_, c)| c.iter().map(&epc).collect())
                    .unwrap_or_default();
                for chunk in children.chunks(EPCS_PER_EVENT) {
                    events.push(
                        Event {
                            event_time_ms: entry.packed_ms,
                            parent_id: Some(epc(parent)),
                            epcs: chunk.to_vec(),
                            action: "ADD",
                            biz_step: "packing",
                            disposition: "in_progress",
                            read_point: places.read_point.clone(),
                            biz_location: places.biz_location.clone(),
                            lot_and_expiry: None,
                        }
                        .to_json(),
                    );
                }
            }
        }
    }
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    serde_json::to_writer_pretty(&mut *w, &serialine_core::epcis::document(events, now_ms))?;
    writeln!(w)?;
    Ok(units)
}

/// `serialine export`: committed serials (or every outcome) since a time.
pub fn export(
    config: &Config,
    line: Option<&str>,
    since: SystemTime,
    all_outcomes: bool,
    format: ExportFormat,
    places: &EpcisPlaces,
) -> anyhow::Result<u64> {
    let since_ms = since
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    let stdout = std::io::stdout();
    let mut w = std::io::BufWriter::new(stdout.lock());
    if format == ExportFormat::Epcis {
        let n = export_epcis(config, line, since_ms, places, &mut w)?;
        w.flush()?;
        return Ok(n);
    }
    if format == ExportFormat::Csv {
        writeln!(w, "line,serial,state,reason,at,parent")?;
    }
    let mut n = 0;
    for i in selected(config, line)? {
        let store = open_line(config, i)?;
        let id = &config.lines[i].id;
        let keep = |s: UnitState| {
            matches!(s, UnitState::Committed | UnitState::Synced)
                || (all_outcomes && !s.is_in_flight())
        };
        // Archived records first (they are the older), then the ledger's.
        let archived = archive::records_since(&config.line_archive_dir(id), id, since_ms, keep)?;
        let live = store.records_since(since_ms, keep)?;
        for (serial, record) in archived.into_iter().chain(live) {
            let at =
                humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(record.at_ms));
            let (state, reason) = match record.state {
                // Synced is committed and acknowledged upstream.
                UnitState::Synced => ("committed", ""),
                other => (other.name(), other.reason().unwrap_or("")),
            };
            // The packaging hierarchy: the case a unit is in, the pallet a
            // case is on (archived serials are in none).
            let parent = store.parent_of(&serial)?;
            let parent = parent.as_ref().map(|p| p.as_str());
            match format {
                ExportFormat::Csv => writeln!(
                    w,
                    "{id},{serial},{state},{reason},{at},{}",
                    parent.unwrap_or("")
                )?,
                // Epcis returned above.
                ExportFormat::Jsonl | ExportFormat::Epcis => writeln!(
                    w,
                    "{}",
                    serde_json::json!({
                        "line": id, "serial": serial.as_str(), "state": state,
                        "reason": if reason.is_empty() { None } else { Some(reason) },
                        "at": at.to_string(),
                        "parent": parent,
                    })
                )?,
            }
            n += 1;
        }
    }
    w.flush()?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_accepts_times_dates_and_durations() {
        let t = parse_since("2026-11-26T08:00:00Z").unwrap();
        assert_eq!(
            t.duration_since(UNIX_EPOCH).unwrap().as_secs(),
            1_795_680_000
        );
        assert_eq!(
            parse_since("2026-11-26").unwrap(),
            parse_since("2026-11-26T00:00:00Z").unwrap()
        );
        let ago = parse_since("8h").unwrap();
        let diff = SystemTime::now().duration_since(ago).unwrap();
        assert!(diff >= Duration::from_secs(8 * 3600));
        let e = parse_since("yesterday-ish").unwrap_err().to_string();
        assert!(e.contains("--since"), "{e}");
    }
}
