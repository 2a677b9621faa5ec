//! `serialine pack | unpack | contents`: the packaging hierarchy by hand
//! (a packing station's scanner, rework at the end of the line), and the
//! same decisions for the control socket and the signed MQTT commands
//! `cmd/hierarchy/pack` and `cmd/hierarchy/unpack`. The rules are the
//! ledger's (`serialine_store::hierarchy`); this finds the line whose
//! ledger holds the parent and words the answer.

use crate::unit_cmd::Common;
use clap::Args;
use serde_json::{json, Value};
use serialine::config::Config;
use serialine_core::Serial;
use serialine_store::{SerialEntry, Store, StoreError};
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct PackArgs {
    /// The parent's serial (AI 21 of its label), printed and verified.
    parent: String,
    /// The children's serials: committed units, or cases onto a pallet.
    #[arg(required = true, num_args = 1..)]
    children: Vec<String>,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Args)]
pub struct UnpackArgs {
    /// The parent's serial.
    parent: String,
    /// The children to take out (rework). Without any, --all.
    children: Vec<String>,
    /// Empty the parent for good: its code is never packed again.
    #[arg(long, conflicts_with = "children")]
    all: bool,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Args)]
pub struct ContentsArgs {
    /// A serial: its parents up to the top, and what it holds.
    serial: String,
    #[command(flatten)]
    common: Common,
}

/// The line whose ledger recorded `serial`.
fn line_of<'a>(
    lines: &'a [(String, Store)],
    serial: &Serial,
) -> Result<&'a (String, Store), String> {
    for l in lines {
        match l.1.entry(serial) {
            Ok(SerialEntry::Recorded(_)) => return Ok(l),
            Ok(_) => {}
            Err(e) => return Err(format!("ledger of line {}: {e}", l.0)),
        }
    }
    Err(format!("{serial}: never printed by a line of this service"))
}

fn serials(texts: &[String]) -> Result<Vec<Serial>, String> {
    texts
        .iter()
        .map(|t| {
            Serial::new(t.trim()).map_err(|_| {
                format!(
                    "{t:?} is not a serial (AI 21: up to 20 characters of GS1 character set 82)"
                )
            })
        })
        .collect()
}

fn refusal(e: StoreError) -> Value {
    match e {
        StoreError::HierarchyRefused {
            parent,
            why,
            offending,
        } => json!({
            "ok": false,
            "error": format!("parent {parent}: {why}"),
            "offending": offending
                .iter()
                .map(|(s, w)| json!({"serial": s.as_str(), "why": w}))
                .collect::<Vec<_>>(),
        }),
        other => json!({"ok": false, "error": other.to_string()}),
    }
}

/// Packs `children` into `parent` (blocking): `{"ok", "line", "parent",
/// "packed", "holds"}` or `{"ok": false, "error", "offending": [...]}`.
pub fn pack(lines: &[(String, Store)], parent: &str, children: &[String]) -> Value {
    let (parent, children) = match (serials(&[parent.to_string()]), serials(children)) {
        (Ok(mut p), Ok(c)) => (p.remove(0), c),
        (Err(e), _) | (_, Err(e)) => return json!({"ok": false, "error": e}),
    };
    let (id, store) = match line_of(lines, &parent) {
        Ok(l) => l,
        Err(e) => return json!({"ok": false, "error": e}),
    };
    match store.pack_blocking(&parent, &children) {
        Ok(m) => {
            tracing::info!(line = %id, parent = %parent, packed = m.children, holds = m.holds, "packed {} into {parent} (holds {})", m.children, m.holds);
            json!({"ok": true, "line": id, "parent": parent.as_str(), "packed": m.children, "holds": m.holds})
        }
        Err(e) => refusal(e),
    }
}

/// Takes `children` out of `parent`, or with `None` empties it for good.
pub fn unpack(lines: &[(String, Store)], parent: &str, children: Option<&[String]>) -> Value {
    let parent = match serials(&[parent.to_string()]) {
        Ok(mut p) => p.remove(0),
        Err(e) => return json!({"ok": false, "error": e}),
    };
    let children = match children.map(serials).transpose() {
        Ok(c) => c,
        Err(e) => return json!({"ok": false, "error": e}),
    };
    let (id, store) = match line_of(lines, &parent) {
        Ok(l) => l,
        Err(e) => return json!({"ok": false, "error": e}),
    };
    match store.unpack_blocking(&parent, children.as_deref()) {
        Ok(m) => {
            tracing::info!(line = %id, parent = %parent, taken = m.children, holds = m.holds, emptied = children.is_none(), "took {} out of {parent} (holds {})", m.children, m.holds);
            json!({"ok": true, "line": id, "parent": parent.as_str(), "taken": m.children, "holds": m.holds, "emptied": children.is_none()})
        }
        Err(e) => refusal(e),
    }
}

/// `serial`'s parents up to the top, and what it holds.
pub fn contents(lines: &[(String, Store)], serial: &str) -> Value {
    let serial = match serials(&[serial.to_string()]) {
        Ok(mut s) => s.remove(0),
        Err(e) => return json!({"ok": false, "error": e}),
    };
    let (id, store) = match line_of(lines, &serial) {
        Ok(l) => l,
        Err(e) => return json!({"ok": false, "error": e}),
    };
    let read = || -> Result<Value, StoreError> {
        let mut chain = Vec::new();
        let mut at = serial.clone();
        while let Some(p) = store.parent_of(&at)? {
            chain.push(p.as_str().to_string());
            if chain.len() > serialine_store::hierarchy::MAX_DEPTH {
                break;
            }
            at = p;
        }
        let state = store.state_of(&serial)?.to_string();
        let (parent_state, children) = match store.contents(&serial)? {
            Some((e, c)) => (
                Some(format!("{:?}", e.state).to_lowercase()),
                c.iter().map(|s| s.as_str().to_string()).collect(),
            ),
            None => (None, Vec::new()),
        };
        Ok(json!({
            "ok": true, "line": id, "serial": serial.as_str(), "state": state,
            "parents": chain, "parent_state": parent_state, "children": children,
        }))
    };
    read().unwrap_or_else(refusal)
}

fn load(common: &Common) -> Result<Config, ExitCode> {
    Config::load_with_env(&common.config, true).map_err(|e| {
        for m in e.messages() {
            eprintln!("error: {m}");
        }
        ExitCode::from(2)
    })
}

/// Asks the running service, or opens the ledgers.
fn answer(
    config: &Config,
    request: Value,
    local: impl FnOnce(&[(String, Store)]) -> Value,
) -> anyhow::Result<Value> {
    let socket = config.control_socket_path();
    // The socket answers `{"ok": true, "result": ...}`: a refusal of the
    // move is the result, not a failure of the request.
    if let Some(a) = crate::control::ask(&socket, &request)? {
        return Ok(a["result"].clone());
    }
    let lines = crate::tools::open_all(config)?;
    Ok(local(&lines))
}

fn print(v: &Value, json_out: bool, ok_text: impl FnOnce(&Value) -> String) -> ExitCode {
    if json_out {
        println!("{v}");
    } else if v["ok"] == true {
        println!("{}", ok_text(v));
    } else {
        println!(
            "refused: {}",
            v["error"].as_str().unwrap_or("no reason given")
        );
        for o in v["offending"].as_array().into_iter().flatten() {
            println!(
                "  {}: {}",
                o["serial"].as_str().unwrap_or("?"),
                o["why"].as_str().unwrap_or("?")
            );
        }
    }
    if v["ok"] == true {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

pub fn run_pack(a: PackArgs) -> anyhow::Result<ExitCode> {
    let config = match load(&a.common) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let request = json!({"cmd": "pack", "parent": a.parent, "children": a.children});
    let v = answer(&config, request, |l| pack(l, &a.parent, &a.children))?;
    Ok(print(&v, a.common.json, |v| {
        format!(
            "{} packed into {} on line {}; it holds {}",
            v["packed"],
            v["parent"].as_str().unwrap_or("?"),
            v["line"].as_str().unwrap_or("?"),
            v["holds"]
        )
    }))
}

pub fn run_unpack(a: UnpackArgs) -> anyhow::Result<ExitCode> {
    if a.children.is_empty() && !a.all {
        anyhow::bail!("name the children to take out, or --all to empty the parent for good");
    }
    let config = match load(&a.common) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let children = (!a.all).then_some(a.children.clone());
    let request = json!({"cmd": "unpack", "parent": a.parent, "children": children});
    let v = answer(&config, request, |l| {
        unpack(l, &a.parent, children.as_deref())
    })?;
    Ok(print(&v, a.common.json, |v| {
        format!(
            "{} taken out of {} on line {}; it holds {}{}",
            v["taken"],
            v["parent"].as_str().unwrap_or("?"),
            v["line"].as_str().unwrap_or("?"),
            v["holds"],
            if v["emptied"] == true {
                " (emptied for good)"
            } else {
                ""
            }
        )
    }))
}

pub fn run_contents(a: ContentsArgs) -> anyhow::Result<ExitCode> {
    let config = match load(&a.common) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let request = json!({"cmd": "contents", "serial": a.serial});
    let v = answer(&config, request, |l| contents(l, &a.serial))?;
    Ok(print(&v, a.common.json, |v| {
        let list = |k: &str| -> String {
            v[k].as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default()
        };
        let mut text = format!(
            "{} on line {}: {}",
            v["serial"].as_str().unwrap_or("?"),
            v["line"].as_str().unwrap_or("?"),
            v["state"].as_str().unwrap_or("?")
        );
        let parents = list("parents");
        text.push_str(&if parents.is_empty() {
            "; in no parent".to_string()
        } else {
            format!("; in {parents}")
        });
        if let Some(ps) = v["parent_state"].as_str() {
            text.push_str(&format!(
                "; a parent ({ps}) holding {}: {}",
                v["children"].as_array().map_or(0, |a| a.len()),
                list("children")
            ));
        }
        text
    }))
}
