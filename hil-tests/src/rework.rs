//! Issue 14, `[rework]`: once the job is over and reported, the harness
//! reworks sealed cases through the running daemon with the service's own
//! commands (`serialine pack | unpack | contents --json`, over its control
//! socket), as an operator at the end of the line would, then waits until
//! upstream holds every move and the outbox is empty. The moves the daemon
//! accepted go to the checker ([`crate::checker::RunEvents::rework`]).

use crate::checker::{ReworkKind, ReworkMove};
use crate::harness::{Cli, LINE};
use crate::scenario::Rework;
use crate::POLL;
use serde_json::Value;
use serialine_core::Serial;
use serialine_sim::upstream::Upstream;
use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long upstream and the outbox may take to show the moves.
const SYNC_BOUND: Duration = Duration::from_secs(30);

impl Cli {
    async fn contents(&self, serial: &str) -> Result<Value, String> {
        let v = self
            .json(vec!["contents".into(), serial.to_string()])
            .await?;
        match v["ok"] == true {
            true => Ok(v),
            false => Err(format!("serialine contents {serial}: refused: {v}")),
        }
    }

    async fn pack(&self, parent: &str, children: &[String]) -> Result<Value, String> {
        let mut args = vec!["pack".to_string(), parent.to_string()];
        args.extend(children.iter().cloned());
        self.json(args).await
    }

    async fn unpack(&self, parent: &str, children: Option<&[String]>) -> Result<Value, String> {
        let mut args = vec!["unpack".to_string(), parent.to_string()];
        match children {
            Some(c) => args.extend(c.iter().cloned()),
            None => args.push("--all".into()),
        }
        self.json(args).await
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_str().map(str::to_string))
        .collect()
}

fn serials(v: &[String]) -> Result<Vec<Serial>, String> {
    v.iter()
        .map(|s| Serial::new(s.as_str()).map_err(|e| format!("{s:?}: not a serial: {e}")))
        .collect()
}

/// The move of `children` into or out of `parent`, as the checker takes it.
fn moved(parent: &str, kind: ReworkKind, children: &[String]) -> Result<ReworkMove, String> {
    Ok(ReworkMove {
        parent: Serial::new(parent).map_err(|e| format!("{parent:?}: not a serial: {e}"))?,
        kind,
        children: serials(children)?,
    })
}

/// Runs `[rework]` on the running daemon. Returns the moves it accepted,
/// in order, and what went wrong (harness violations).
pub(crate) async fn rework_step(
    bin: &Path,
    config: &Path,
    rw: &Rework,
    upstream: &Upstream,
) -> (Vec<ReworkMove>, Vec<String>) {
    let cli = Cli {
        bin: bin.to_path_buf(),
        config: config.to_path_buf(),
    };
    let mut moves = Vec::new();
    let mut problems = Vec::new();
    let before = aggregation_events(upstream);
    if let Err(e) = make_moves(&cli, rw, upstream, &mut moves, &mut problems).await {
        problems.push(format!("rework: {e}"));
    }
    wait_for_upstream(&cli, &moves, upstream, before, &mut problems).await;
    (moves, problems)
}

/// Upstream's `packed` and `unpacked` events.
fn aggregation_events(upstream: &Upstream) -> usize {
    upstream
        .line(LINE)
        .events
        .values()
        .filter(|(_, st)| st == "packed" || st == "unpacked")
        .count()
}

/// The sealed cases (parents of units, in the serial order of their
/// labels) and the loose committed units (in serial order), as upstream
/// heard them; each loose one is confirmed by the ledger (`serialine
/// contents`) when it is used.
fn cases_and_candidates(upstream: &Upstream) -> (Vec<String>, Vec<String>) {
    let line = upstream.line(LINE);
    let parents: HashSet<&String> = line.parent_of.values().collect();
    let mut cases: Vec<String> = line
        .parent_of
        .iter()
        .filter(|(child, _)| !parents.contains(child))
        .map(|(_, p)| p.clone())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    cases.sort();
    let mut loose: Vec<String> = line
        .events
        .values()
        .filter(|(s, st)| st == "committed" && !line.parent_of.contains_key(s))
        .filter(|(s, _)| !parents.contains(&s))
        .map(|(s, _)| s.clone())
        .collect();
    loose.sort();
    loose.dedup();
    (cases, loose)
}

async fn make_moves(
    cli: &Cli,
    rw: &Rework,
    upstream: &Upstream,
    moves: &mut Vec<ReworkMove>,
    problems: &mut Vec<String>,
) -> Result<(), String> {
    let (cases, candidates) = cases_and_candidates(upstream);
    if cases.len() < rw.cases_needed() {
        return Err(format!(
            "{} sealed cases, {} needed (swap {}, empty {}, refused_pack {})",
            cases.len(),
            rw.cases_needed(),
            rw.swap,
            rw.empty,
            rw.refused_pack
        ));
    }
    // Loose units: in no parent, holding nothing (not a label), committed.
    let mut loose = Vec::new();
    for s in candidates {
        if loose.len() == rw.swap {
            break;
        }
        let v = cli.contents(&s).await?;
        let state = v["state"].as_str().unwrap_or_default();
        if strings(&v["parents"]).is_empty()
            && v["parent_state"].is_null()
            && matches!(state, "committed" | "synced")
        {
            loose.push(s);
        }
    }
    if loose.len() < rw.swap {
        return Err(format!(
            "{} loose committed units, swap = {} needs as many",
            loose.len(),
            rw.swap
        ));
    }
    let ok = |v: &Value, what: &str, problems: &mut Vec<String>| -> bool {
        let accepted = v["ok"] == true;
        if !accepted {
            problems.push(format!("rework: {what} refused: {v}"));
        }
        accepted
    };
    // Swaps: one unit out, a loose one in its place.
    for (case, newcomer) in cases.iter().zip(&loose) {
        let before = strings(&cli.contents(case).await?["children"]);
        let Some(out) = before.first().cloned() else {
            return Err(format!("sealed case {case} holds nothing"));
        };
        let v = cli.unpack(case, Some(std::slice::from_ref(&out))).await?;
        if ok(&v, &format!("unpack {case} {out}"), problems) {
            if v["taken"] != 1 || v["holds"].as_u64() != Some(before.len() as u64 - 1) {
                problems.push(format!(
                    "rework: unpack {case} {out}: answer {v}, expected 1 taken, holding {}",
                    before.len() - 1
                ));
            }
            moves.push(moved(case, ReworkKind::Unpack, std::slice::from_ref(&out))?);
        }
        let v = cli.pack(case, std::slice::from_ref(newcomer)).await?;
        if ok(&v, &format!("pack {case} {newcomer}"), problems) {
            moves.push(moved(
                case,
                ReworkKind::Pack,
                std::slice::from_ref(newcomer),
            )?);
        }
        // The ledger's answer, read back.
        let after = cli.contents(case).await?;
        let mut want: Vec<String> = before.iter().filter(|s| **s != out).cloned().collect();
        want.push(newcomer.clone());
        want.sort();
        let mut got = strings(&after["children"]);
        got.sort();
        if got != want {
            problems.push(format!(
                "rework: after the swap in {case} it holds {got:?}, expected {want:?}"
            ));
        }
        let left = cli.contents(&out).await?;
        if !strings(&left["parents"]).is_empty() {
            problems.push(format!(
                "rework: {out}, taken out of {case}, is still in {:?}",
                left["parents"]
            ));
        }
    }
    // The first swap's unit out and in again: the same moves, new events.
    if rw.repeat {
        let (case, unit) = (&cases[0], &loose[0]);
        let v = cli.unpack(case, Some(std::slice::from_ref(unit))).await?;
        if ok(&v, &format!("unpack {case} {unit} (again)"), problems) {
            moves.push(moved(case, ReworkKind::Unpack, std::slice::from_ref(unit))?);
        }
        let v = cli.pack(case, std::slice::from_ref(unit)).await?;
        if ok(&v, &format!("pack {case} {unit} (again)"), problems) {
            moves.push(moved(case, ReworkKind::Pack, std::slice::from_ref(unit))?);
        }
    }
    // Emptied for good: nothing goes in again.
    for case in cases.iter().skip(rw.swap).take(rw.empty) {
        let held = strings(&cli.contents(case).await?["children"]);
        let v = cli.unpack(case, None).await?;
        if ok(&v, &format!("unpack {case} --all"), problems) {
            if v["taken"].as_u64() != Some(held.len() as u64)
                || v["holds"] != 0
                || v["emptied"] != true
            {
                problems.push(format!(
                    "rework: unpack {case} --all: answer {v}, expected {} taken, emptied, holding 0",
                    held.len()
                ));
            }
            moves.push(moved(case, ReworkKind::Empty, &held)?);
        }
        let after = cli.contents(case).await?;
        if after["parent_state"] != "emptied" || !strings(&after["children"]).is_empty() {
            problems.push(format!(
                "rework: {case} after unpack --all: parent_state {}, children {}",
                after["parent_state"], after["children"]
            ));
        }
        // One of its own former units, loose and committed now: only the
        // emptied parent can make this pack refused.
        if let Some(unit) = held.first() {
            let v = cli.pack(case, std::slice::from_ref(unit)).await?;
            if v["ok"] != false || !v["error"].as_str().is_some_and(|e| e.contains("emptied")) {
                problems.push(format!(
                    "rework: pack {case} {unit} into the emptied case: {v}, expected refused as emptied"
                ));
            }
            if v["ok"] == true {
                moves.push(moved(case, ReworkKind::Pack, std::slice::from_ref(unit))?);
            }
        }
        let v = cli.unpack(case, None).await?;
        if v["ok"] != false {
            problems.push(format!(
                "rework: unpack {case} --all a second time: {v}, expected refused"
            ));
        }
    }
    // A unit still in another case: refused, named.
    if rw.refused_pack {
        let into = &cases[0];
        let other = &cases[rw.swap + rw.empty];
        let Some(unit) = strings(&cli.contents(other).await?["children"])
            .first()
            .cloned()
        else {
            return Err(format!("sealed case {other} holds nothing"));
        };
        let v = cli.pack(into, std::slice::from_ref(&unit)).await?;
        let named = v["offending"].as_array().into_iter().flatten().any(|o| {
            o["serial"] == unit.as_str()
                && o["why"]
                    .as_str()
                    .is_some_and(|w| w.contains(other.as_str()))
        });
        if v["ok"] != false || !named {
            problems.push(format!(
                "rework: pack {into} {unit} (a unit in {other}): {v}, expected refused naming {unit} as already in {other}"
            ));
        }
        if v["ok"] == true {
            moves.push(moved(into, ReworkKind::Pack, std::slice::from_ref(&unit))?);
        }
        let still = cli.contents(&unit).await?;
        if strings(&still["parents"]).first() != Some(other) {
            problems.push(format!(
                "rework: after the refused pack {unit} is in {}, expected {other}",
                still["parents"]
            ));
        }
    }
    Ok(())
}

/// Every move's events held upstream, then the outbox empty (`serialine
/// status` over the control socket), so a clean stop leaves nothing
/// unreported.
async fn wait_for_upstream(
    cli: &Cli,
    moves: &[ReworkMove],
    upstream: &Upstream,
    before: usize,
    problems: &mut Vec<String>,
) {
    let want = before + moves.iter().map(ReworkMove::event_count).sum::<usize>();
    let deadline = Instant::now() + SYNC_BOUND;
    loop {
        let held = aggregation_events(upstream);
        if held >= want {
            break;
        }
        if Instant::now() >= deadline {
            problems.push(format!(
                "rework: upstream holds {} of the {} rework events after {SYNC_BOUND:?}",
                held.saturating_sub(before),
                want - before
            ));
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    if let Some(problem) = cli.outbox_empty_by(deadline, SYNC_BOUND).await {
        problems.push(format!("rework: {problem}"));
    }
}
