//! `serialine report --html FILE`: a job's reconciliation as one
//! self-contained HTML page for the batch record: the same numbers as the
//! terminal table, and two charts drawn as inline SVG (no script, no file
//! beside it, so the page prints and archives as it is): units committed
//! per interval over the job, and rejects per interval by reason.
//!
//! The charts are a handful of rectangles and labels, written here: a
//! plotting crate would bring font handling for the labels, which the
//! browser already does.
//!
//! Times come from each unit's record: the time of its last move (a commit
//! acknowledged upstream moves it to Synced moments later). A unit whose
//! last move falls outside the job's span (sampled or decommissioned days
//! later) is counted in the totals and named under the charts, not drawn.

use anyhow::Context;
use serde_json::{json, Value};
use serialine_core::UnitState;
use serialine_store::{SerialRecord, Store};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// At most this many bars per chart: a long job's minutes are grouped.
const MAX_BARS: u64 = 240;

/// Job `job`'s units over time (the `series` of a report), from `store`'s
/// records and the line's archive files in `archive_dir`: a full scan.
pub fn job_series(
    line: &str,
    store: &Store,
    archive_dir: &Path,
    job: u32,
    started_ms: u64,
    ended_ms: Option<u64>,
) -> anyhow::Result<Value> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let end = ended_ms.unwrap_or(now).max(started_ms + 1);
    let minutes = (end - started_ms).div_ceil(60_000).max(1);
    let per_bar = minutes.div_ceil(MAX_BARS).max(1);
    let bars = minutes.div_ceil(per_bar) as usize;
    let mut committed = vec![0u64; bars];
    let mut voided = vec![0u64; bars];
    let mut rejected: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut outside = 0u64;
    let mut add = |r: &SerialRecord| {
        if r.job != job || r.state == UnitState::Returned {
            return;
        }
        // A minute of grace: the last units' acknowledgment.
        if r.at_ms < started_ms || r.at_ms > end + 60_000 {
            outside += 1;
            return;
        }
        let i = (((r.at_ms - started_ms) / 60_000 / per_bar) as usize).min(bars - 1);
        match r.state {
            UnitState::Committed
            | UnitState::Synced
            | UnitState::Sampled(_)
            | UnitState::Decommissioned(_) => committed[i] += 1,
            UnitState::Voided => voided[i] += 1,
            UnitState::Rejected(reason) => {
                rejected
                    .entry(reason.as_str().to_string())
                    .or_insert_with(|| vec![0; bars])[i] += 1
            }
            _ => {}
        }
    };
    for (_, r) in serialine_store::archive::records_since(archive_dir, line, 0, |_| true)
        .with_context(|| format!("line {line}: reading its archives"))?
    {
        add(&r);
    }
    for (_, r) in store.records_since(0, |_| true)? {
        add(&r);
    }
    Ok(json!({
        "start_ms": started_ms,
        "end_ms": end,
        "minutes_per_bar": per_bar,
        "committed": committed,
        "voided": voided,
        "rejected": rejected,
        "outside": outside,
    }))
}

/// Escapes text for HTML (element content and quoted attributes).
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn time_text(ms: Option<u64>) -> String {
    ms.map_or("-".to_string(), |ms| {
        humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
    })
}

/// Colours per reject reason, in `RejectReason::ALL` order; others grey.
fn reason_colour(reason: &str) -> &'static str {
    match reason {
        "mismatch" => "#c0392b",
        "no-read" => "#e67e22",
        "low-grade" => "#8e44ad",
        "duplicate" => "#2c3e50",
        "device-fault" => "#7f8c8d",
        _ => "#95a5a6",
    }
}

/// A bar chart: `layers` stacked bottom to top (name, colour, values).
fn chart(title: &str, class: &str, series: &Value, layers: &[(String, &str, Vec<u64>)]) -> String {
    const W: f64 = 900.0;
    const H: f64 = 220.0;
    const LEFT: f64 = 56.0;
    const BOTTOM: f64 = 28.0;
    const TOP: f64 = 12.0;
    let bars = layers.first().map_or(0, |l| l.2.len()).max(1);
    let totals: Vec<u64> = (0..bars)
        .map(|i| {
            layers
                .iter()
                .map(|l| l.2.get(i).copied().unwrap_or(0))
                .sum()
        })
        .collect();
    let max = totals.iter().copied().max().unwrap_or(0).max(1);
    let plot_w = W - LEFT - 8.0;
    let plot_h = H - BOTTOM - TOP;
    // A short job is a few bars: kept narrow rather than stretched.
    let bar_w = (plot_w / bars as f64).min(60.0);
    let per_bar = series["minutes_per_bar"].as_u64().unwrap_or(1);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<figure class="{class}"><figcaption>{} (per {per_bar} min)</figcaption><svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img" aria-label="{}">"##,
        esc(title),
        esc(title)
    );
    let _ = write!(
        svg,
        r##"<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{y0}" stroke="#333"/><line x1="{LEFT}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="#333"/><text x="{lx}" y="{ty}" text-anchor="end" font-size="11">{max}</text><text x="{lx}" y="{y0}" text-anchor="end" font-size="11">0</text>"##,
        y0 = TOP + plot_h,
        x1 = LEFT + plot_w,
        lx = LEFT - 4.0,
        ty = TOP + 10.0,
    );
    for i in 0..bars {
        let mut y = TOP + plot_h;
        for (name, colour, values) in layers {
            let v = values.get(i).copied().unwrap_or(0);
            if v == 0 {
                continue;
            }
            let h = plot_h * v as f64 / max as f64;
            y -= h;
            let _ = write!(
                svg,
                r##"<rect class="bar" x="{:.2}" y="{y:.2}" width="{:.2}" height="{h:.2}" fill="{colour}"><title>{} {v}</title></rect>"##,
                LEFT + i as f64 * bar_w,
                (bar_w - 1.0).max(0.5),
                esc(name)
            );
        }
    }
    let start = series["start_ms"].as_u64();
    let end = series["end_ms"].as_u64();
    let _ = write!(
        svg,
        r##"<text x="{LEFT}" y="{H}" font-size="11">{}</text><text x="{}" y="{H}" text-anchor="end" font-size="11">{}</text></svg>"##,
        esc(&time_text(start)),
        LEFT + plot_w,
        esc(&time_text(end))
    );
    if layers.len() > 1 {
        svg.push_str(r#"<p class="legend">"#);
        for (name, colour, values) in layers {
            let n: u64 = values.iter().sum();
            let _ = write!(
                svg,
                r#"<span><i style="background:{colour}"></i>{} {n}</span> "#,
                esc(name)
            );
        }
        svg.push_str("</p>");
    }
    svg.push_str("</figure>");
    svg
}

/// The reconciliation's rows for the packaging hierarchy (none without).
fn hierarchy_rows(h: &Value) -> String {
    if !h.is_object() {
        return String::new();
    }
    let mut rows = String::new();
    for l in h["levels"].as_array().into_iter().flatten() {
        let partial = match l["partial"].as_u64() {
            Some(p) if p > 0 => format!(", {p} partial"),
            _ => String::new(),
        };
        let _ = write!(
            rows,
            r#"<tr><th>level {}</th><td>{} parent(s) holding {}{partial}</td></tr>"#,
            l["level"], l["parents"], l["children"]
        );
    }
    let _ = write!(
        rows,
        r#"<tr><th>committed now</th><td id="hierarchy">in parents {} + labels {} + loose {}</td></tr>"#,
        h["units_in_parents"], h["labels"], h["loose"]
    );
    rows
}

/// The page for `reports` (as `serialine report --json` prints them, each
/// with its `series`).
pub fn render(reports: &[Value]) -> String {
    let mut body = String::new();
    for r in reports {
        let e = &r["entry"];
        let n = |k: &str| r[k].as_u64().unwrap_or(0);
        let s = |v: &Value| esc(v.as_str().unwrap_or("?"));
        let balanced = r["balanced"] == true;
        let _ = write!(
            body,
            r#"<section class="job"><h1>Line {}, job {}</h1><p class="meta">GTIN {} · lot {} · expiry {} · quantity {} · started {} · ended {} ({})</p>"#,
            s(&r["line"]),
            n("number"),
            s(&e["gtin"]),
            s(&e["lot"]),
            s(&e["expiry"]),
            e["quantity"].as_u64().unwrap_or(0),
            esc(&time_text(e["started_ms"].as_u64())),
            esc(&time_text(e["ended_ms"].as_u64())),
            esc(e["end"].as_str().unwrap_or("still running")),
        );
        let rejected: Vec<String> = r["rejected"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| format!("{} {}", esc(k), v)).collect())
            .unwrap_or_default();
        let _ = write!(
            body,
            r#"<table class="reconciliation"><tr><th>sent</th><td id="sent">{}</td></tr><tr><th>committed</th><td id="committed">{} (not yet acknowledged {}, sampled {}, decommissioned {})</td></tr><tr><th>rejected</th><td id="rejected">{}{}</td></tr><tr><th>voided</th><td id="voided">{}</td></tr><tr><th>in flight</th><td id="in-flight">{}</td></tr><tr><th>returned unused</th><td id="returned">{}</td></tr><tr><th>issued</th><td id="issued">{} (sent + returned + still buffered {})</td></tr>{}</table>"#,
            n("sent"),
            n("committed_total"),
            n("committed"),
            n("sampled"),
            n("decommissioned"),
            n("rejected_total"),
            if rejected.is_empty() {
                String::new()
            } else {
                format!(" ({})", rejected.join(", "))
            },
            n("voided"),
            n("in_flight"),
            n("returned"),
            n("sent") + n("returned") + n("buffered"),
            n("buffered"),
            hierarchy_rows(&r["hierarchy"]),
        );
        if balanced {
            body.push_str(r#"<p class="balanced ok">Balanced: sent = committed + rejected + voided + in flight.</p>"#);
        } else {
            let names: Vec<String> = r["unbalanced"]
                .as_array()
                .map(|a| a.iter().filter_map(|v| v.as_str()).map(esc).collect())
                .unwrap_or_default();
            let _ = write!(
                body,
                r#"<p class="balanced bad">NOT balanced: in flight after the job ended: {}</p>"#,
                names.join(", ")
            );
        }
        let series = &r["series"];
        let values = |v: &Value| -> Vec<u64> {
            v.as_array()
                .map(|a| a.iter().map(|x| x.as_u64().unwrap_or(0)).collect())
                .unwrap_or_default()
        };
        body.push_str(&chart(
            "Units committed",
            "chart committed",
            series,
            &[(
                "committed".to_string(),
                "#27ae60",
                values(&series["committed"]),
            )],
        ));
        let mut layers: Vec<(String, &str, Vec<u64>)> = series["rejected"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), reason_colour(k), values(v)))
                    .collect()
            })
            .unwrap_or_default();
        layers.push(("voided".to_string(), "#bdc3c7", values(&series["voided"])));
        body.push_str(&chart(
            "Rejects and voids by reason",
            "chart rejects",
            series,
            &layers,
        ));
        let outside = series["outside"].as_u64().unwrap_or(0);
        if outside > 0 {
            let _ = write!(
                body,
                r#"<p class="note">{outside} unit(s) moved last outside the job's span (sampled or decommissioned later): counted above, not drawn.</p>"#
            );
        }
        body.push_str("</section>");
    }
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Serialine job report</title>
<style>
body {{ font-family: sans-serif; margin: 24px; color: #222; }}
h1 {{ font-size: 20px; margin-bottom: 4px; }}
.meta {{ color: #555; margin-top: 0; }}
table.reconciliation {{ border-collapse: collapse; margin: 12px 0; }}
table.reconciliation th {{ text-align: left; padding: 3px 16px 3px 0; font-weight: normal; color: #555; }}
table.reconciliation td {{ padding: 3px 0; font-variant-numeric: tabular-nums; }}
.balanced {{ font-weight: bold; padding: 6px 10px; display: inline-block; }}
.ok {{ background: #e8f6ee; color: #1e7d45; }}
.bad {{ background: #fdecea; color: #a93226; }}
figure {{ margin: 18px 0; }}
figcaption {{ font-weight: bold; margin-bottom: 4px; }}
.legend span {{ margin-right: 14px; font-size: 13px; }}
.legend i {{ display: inline-block; width: 10px; height: 10px; margin-right: 4px; }}
.note, footer {{ color: #666; font-size: 13px; }}
</style></head>
<body>
{body}
<footer>serialine {version}, generated {generated}</footer>
</body></html>
"#,
        version = env!("CARGO_PKG_VERSION"),
        generated = esc(&time_text(Some(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64)
        ))),
    )
}
