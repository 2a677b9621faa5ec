//! `serialine unit sample|decommission SERIAL...`: what became of committed
//! units after the line (QA samples, destroyed or damaged packs).
//!
//! While the service runs, the request goes over its control socket and
//! the service applies it to its open ledgers; while it is stopped, the
//! ledgers are opened here. Either way [`apply`] decides, per serial: the
//! line whose ledger recorded it, and whether its state allows the move
//! (only a unit upstream has acknowledged as committed may be sampled; a
//! committed or sampled one decommissioned). Each accepted move is durable
//! and goes upstream once through the outbox, like every outcome.

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Value};
use serialine::config::{Config, DEFAULT_CONFIG_PATH};
use serialine_core::{DecommissionReason, SamplePurpose, Serial, UnitState};
use serialine_store::{SerialEntry, Store, Transition};
use std::path::PathBuf;
use std::process::ExitCode;

/// Most serials in one request: one pallet's worth of packs at a time.
pub const MAX_SERIALS: usize = 1_000;

#[derive(Debug, Subcommand)]
pub enum UnitCommand {
    /// Record committed units pulled from the line for QA (Sampled).
    ///
    /// Each SERIAL must be committed and acknowledged upstream. Prints one
    /// line per serial: the line it belongs to and "sampled", or why it was
    /// refused (never issued, never sent, in flight, rejected, committed
    /// but not yet acknowledged upstream, already sampled or
    /// decommissioned). Exit status 1 if any was refused.
    Sample(SampleArgs),
    /// Record committed (or sampled) units taken out of the supply chain.
    ///
    /// Each SERIAL must be committed and acknowledged upstream, or sampled.
    /// Prints one line per serial as `sample` does; exit status 1 if any
    /// was refused.
    Decommission(DecommissionArgs),
}

#[derive(Debug, Args)]
pub struct SampleArgs {
    /// Serials (AI 21), as printed on the packs.
    #[arg(required = true, num_args = 1..)]
    serials: Vec<String>,
    /// Why the sample was taken.
    #[arg(long, value_enum)]
    purpose: Purpose,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Args)]
pub struct DecommissionArgs {
    /// Serials (AI 21), as printed on the packs.
    #[arg(required = true, num_args = 1..)]
    serials: Vec<String>,
    /// What happened to the packs.
    #[arg(long, value_enum)]
    reason: Reason,
    /// A SERIAL that is a parent (a case, a pallet) is decommissioned with
    /// everything packed below it, all or none. Without it, a parent
    /// holding units is refused (unpack it first).
    #[arg(long)]
    with_children: bool,
    #[command(flatten)]
    common: Common,
}

/// The options every command on units and packs takes.
#[derive(Debug, Args)]
pub struct Common {
    #[arg(short, long, value_name = "FILE", default_value = DEFAULT_CONFIG_PATH, env = "SERIALINE_CONFIG")]
    pub config: PathBuf,
    /// The answer as JSON instead of text (per serial, where there are several).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Purpose {
    /// In-process or release testing by QA.
    Qa,
    /// A retention sample, kept for the batch's shelf life.
    Retention,
    /// Taken by, or for, an authority.
    Regulatory,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Reason {
    Destroyed,
    Damaged,
    Stolen,
}

/// The request as the control socket carries it.
pub fn request(action: &str, serials: &[String], reason: &str, with_children: bool) -> Value {
    json!({"cmd": "unit", "action": action, "serials": serials, "reason": reason, "with_children": with_children})
}

/// The state a request asks for, or why it cannot be one.
pub fn target(action: &str, reason: &str) -> Result<UnitState, String> {
    UnitState::after_commit(action, reason)
}

/// Why `from` cannot move to `to`, in words an operator acts on.
fn refusal(from: UnitState, to: UnitState) -> String {
    match from {
        UnitState::Sent | UnitState::Printed => {
            format!("in flight ({from}), no verdict yet")
        }
        UnitState::Committed => {
            "committed, but upstream has not acknowledged it yet; retry once the outbox drains"
                .into()
        }
        UnitState::Rejected(_) | UnitState::Voided => {
            format!("{from}: never a released unit")
        }
        UnitState::Sampled(_) if to.is_after_commit() => format!("already {from}"),
        UnitState::Decommissioned(_) => format!("already {from}"),
        other => format!("{other} cannot become {to}"),
    }
}

/// Applies `to` to each serial in the ledger that recorded it, blocking.
/// One JSON object per serial: `{"serial", "ok", "line", "state"}` or
/// `{"serial", "ok": false, "error"}`. With `with_children`, a serial that
/// is a parent holding units is decommissioned with all of them
/// (`"with_children": n`).
pub fn apply(
    lines: &[(String, Store)],
    serials: &[String],
    to: UnitState,
    with_children: bool,
) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::with_capacity(serials.len());
    // Per line, the transitions to apply and where their answers go.
    let mut per_line: Vec<(Vec<Transition>, Vec<usize>)> =
        (0..lines.len()).map(|_| Default::default()).collect();
    for (i, text) in serials.iter().enumerate() {
        let refused = |why: String| json!({"serial": text, "ok": false, "error": why});
        let Ok(serial) = Serial::new(text.trim()) else {
            out.push(refused(
                "not a serial (AI 21: up to 20 characters of GS1 character set 82)".into(),
            ));
            continue;
        };
        let found =
            lines
                .iter()
                .enumerate()
                .find_map(|(l, (_, store))| match store.entry(&serial) {
                    Ok(SerialEntry::NotIssued) => None,
                    other => Some((l, other)),
                });
        match found {
            None | Some((_, Ok(SerialEntry::NotIssued))) => {
                out.push(refused("never issued to a line of this service".into()))
            }
            Some((l, Err(e))) => out.push(refused(format!("ledger of line {}: {e}", lines[l].0))),
            Some((_, Ok(SerialEntry::Available { .. }))) => {
                out.push(refused("never sent to a device: no unit carries it".into()))
            }
            Some((l, Ok(SerialEntry::Recorded(r)))) => {
                let store = &lines[l].1;
                let holds = store
                    .contents(&serial)
                    .ok()
                    .flatten()
                    .is_some_and(|(e, _)| e.children > 0);
                if with_children && holds && matches!(to, UnitState::Decommissioned(_)) {
                    out.push(match store.decommission_tree_blocking(&serial, to) {
                        Ok(n) => json!({
                            "serial": text, "ok": true, "line": lines[l].0,
                            "state": to.to_string(), "with_children": n - 1,
                        }),
                        Err(e) => refused(e.to_string()),
                    });
                    continue;
                }
                if !r.state.can_move_to(to) {
                    out.push(refused(refusal(r.state, to)));
                    continue;
                }
                out.push(json!({"serial": text, "ok": true, "line": lines[l].0}));
                per_line[l].0.push(Transition::new(serial, to));
                per_line[l].1.push(i);
            }
        }
    }
    for (l, (transitions, slots)) in per_line.into_iter().enumerate() {
        if transitions.is_empty() {
            continue;
        }
        let results = lines[l].1.apply_blocking(&transitions);
        for (slot, result) in slots.into_iter().zip(results) {
            match result {
                Ok(state) => out[slot]["state"] = json!(state.to_string()),
                Err(e) => {
                    out[slot]["ok"] = json!(false);
                    out[slot]["error"] = json!(e.to_string());
                }
            }
        }
    }
    out
}

pub fn run(cmd: UnitCommand) -> anyhow::Result<ExitCode> {
    let with_children = matches!(&cmd, UnitCommand::Decommission(a) if a.with_children);
    let (action, serials, reason, common) = match &cmd {
        UnitCommand::Sample(a) => (
            "sample",
            &a.serials,
            match a.purpose {
                Purpose::Qa => SamplePurpose::Qa,
                Purpose::Retention => SamplePurpose::Retention,
                Purpose::Regulatory => SamplePurpose::Regulatory,
            }
            .as_str(),
            &a.common,
        ),
        UnitCommand::Decommission(a) => (
            "decommission",
            &a.serials,
            match a.reason {
                Reason::Destroyed => DecommissionReason::Destroyed,
                Reason::Damaged => DecommissionReason::Damaged,
                Reason::Stolen => DecommissionReason::Stolen,
            }
            .as_str(),
            &a.common,
        ),
    };
    if serials.len() > MAX_SERIALS {
        anyhow::bail!(
            "{} serials given; at most {MAX_SERIALS} per command",
            serials.len()
        );
    }
    let config = match Config::load_with_env(&common.config, true) {
        Ok(c) => c,
        Err(e) => {
            for m in e.messages() {
                eprintln!("error: {m}");
            }
            return Ok(ExitCode::from(2));
        }
    };
    let to = target(action, reason).map_err(anyhow::Error::msg)?;
    let socket = config.control_socket_path();
    let ask = request(action, serials, reason, with_children);
    let results = match crate::control::ask(&socket, &ask)? {
        Some(answer) => answer["results"].as_array().cloned().unwrap_or_default(),
        None => {
            let lines = crate::tools::open_all(&config)?;
            apply(&lines, serials, to, with_children)
        }
    };
    let refused = results.iter().filter(|r| r["ok"] != json!(true)).count();
    let total = results.len();
    if common.json {
        println!("{}", Value::Array(results));
    } else {
        for r in &results {
            let serial = r["serial"].as_str().unwrap_or("?");
            match r["ok"].as_bool() {
                Some(true) => println!(
                    "{serial}: {} on line {}{}",
                    r["state"].as_str().unwrap_or("?"),
                    r["line"].as_str().unwrap_or("?"),
                    match r["with_children"].as_u64() {
                        Some(n) => format!(", with the {n} serials packed below it"),
                        None => String::new(),
                    }
                ),
                _ => println!(
                    "{serial}: refused: {}",
                    r["error"].as_str().unwrap_or("no reason given")
                ),
            }
        }
    }
    Ok(if refused == 0 {
        ExitCode::SUCCESS
    } else {
        eprintln!("{refused} of {total} refused");
        ExitCode::FAILURE
    })
}
