//! Returning a line's unused serials upstream (`serialine return`, the
//! control socket's `return`, and the service at a job's end with
//! `[line.buffer] return_at_job_end`): one decision of what a return
//! covers, for all three. The ledger's side (block by block, crash-safe)
//! is `Store::return_unused`.

use anyhow::Context;
use serde_json::{json, Value};
use serialine_core::Gtin;
use serialine_store::{ReturnRequest, Store};

/// What a return on command covers: the serials buffered for `gtin`
/// (default: the last job's product), counted in the last job when it made
/// that product. Refused while a job runs: the return would take the
/// serials it prints next.
pub fn plan(store: &Store, gtin: Option<&str>) -> anyhow::Result<ReturnRequest> {
    let last = store.jobs()?.into_iter().last();
    if let Some((n, e)) = &last {
        if e.ended_ms.is_none() {
            anyhow::bail!(
                "job {n} (GTIN {}, lot {}) is running; stop it first: a return gives back the serials it would print",
                e.gtin,
                e.lot
            );
        }
    }
    let gtin = match (gtin, &last) {
        (Some(g), _) => Gtin::parse(g)
            .map_err(|e| anyhow::anyhow!("--gtin {g:?}: {e}"))?
            .as_string(),
        (None, Some((_, e))) => e.gtin.clone(),
        (None, None) => {
            anyhow::bail!("no job has run on this line yet: name the product with --gtin")
        }
    };
    let job = match &last {
        Some((n, e)) if e.gtin == gtin => *n,
        _ => 0,
    };
    Ok(ReturnRequest {
        gtin: Some(gtin),
        job,
    })
}

/// Runs `req` on `line`'s ledger (blocking) and says what it did, as the
/// CLI prints it and the socket answers it.
pub fn run(line: &str, store: &Store, req: &ReturnRequest) -> anyhow::Result<Value> {
    let r = store
        .return_unused_blocking(req)
        .with_context(|| format!("line {line}: returning unused serials"))?;
    let gtin = req.gtin.clone().unwrap_or_default();
    tracing::info!(
        line,
        gtin = %gtin,
        job = req.job,
        serials = r.serials,
        blocks = r.blocks,
        events = r.events,
        "returned {} unused serials of GTIN {gtin} upstream from {} blocks ({} return events queued){}",
        r.serials,
        r.blocks,
        r.events,
        if r.kept_reserved > 0 {
            format!("; {} reserved by a running job kept", r.kept_reserved)
        } else {
            String::new()
        }
    );
    Ok(json!({
        "line": line,
        "gtin": gtin,
        "job": req.job,
        "blocks": r.blocks,
        "serials": r.serials,
        "events": r.events,
        "kept_reserved": r.kept_reserved,
        "took_ms": r.took.as_millis() as u64,
    }))
}

/// How long a return waits for a block request already out to be answered.
pub const RETURN_SETTLE: std::time::Duration = std::time::Duration::from_secs(10);

/// A return by the running service (at a job's end, at start, on the
/// socket's or an MQTT command): its prefetch held, so the buffer is not
/// filled again before the next job, and a block asked for before the hold
/// stored first, to be returned with the rest; then [`run`] off the runtime.
pub async fn give_back(
    line: &str,
    store: &Store,
    uplink: &serialine_uplink::UplinkHandle,
    req: ReturnRequest,
) -> anyhow::Result<Value> {
    uplink.hold_prefetch();
    if !uplink.prefetch_settled(RETURN_SETTLE).await {
        tracing::warn!(line, "a block request is still unanswered after {RETURN_SETTLE:?}; a block it brings later stays buffered (serialine return gives it back)");
    }
    let (id, store) = (line.to_string(), store.clone());
    tokio::task::spawn_blocking(move || run(&id, &store, &req)).await?
}

/// One line of the CLI's output for an answer of [`run`].
pub fn summary(v: &Value) -> String {
    let job = match v["job"].as_u64() {
        Some(0) | None => String::new(),
        Some(n) => format!(", counted in job {n}"),
    };
    format!(
        "line {}: returned {} unused serials of GTIN {} upstream from {} block(s), {} return event(s) queued{job}",
        v["line"].as_str().unwrap_or("?"),
        v["serials"],
        v["gtin"].as_str().unwrap_or("?"),
        v["blocks"],
        v["events"],
    )
}

/// `serialine return`: through the running service (control socket), or
/// on the ledgers when it is stopped (the events then wait in the outbox
/// for the service's next start).
pub fn cli(
    config: &serialine::config::Config,
    line: Option<&str>,
    gtin: Option<&str>,
    as_json: bool,
) -> anyhow::Result<()> {
    let socket = config.control_socket_path();
    let mut answers: Vec<Value> = Vec::new();
    let request = json!({"cmd": "return", "line": line, "gtin": gtin});
    if let Some(answer) = crate::control::ask(&socket, &request)? {
        if let Some(lines) = answer["lines"].as_array() {
            answers.extend(lines.iter().cloned());
        }
    } else {
        for i in crate::tools::selected(config, line)? {
            let id = &config.lines[i].id;
            let store = crate::tools::open_line_fenced(config, i)?;
            let req = plan(&store, gtin).with_context(|| format!("line {id}"))?;
            answers.push(run(id, &store, &req)?);
        }
    }
    if as_json {
        println!("{}", Value::Array(answers));
    } else {
        for a in &answers {
            println!("{}", summary(a));
        }
    }
    Ok(())
}
