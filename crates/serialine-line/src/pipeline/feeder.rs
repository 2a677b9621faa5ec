//! The sending half: reserve, render, make `Sent` durable, hand to the printer.

use super::{AlarmKind, PipelineError, SentUnit, Shared};
use serialine_core::code::{self, CodeData};
use serialine_core::UnitState;
use serialine_devices::PrintRequest;
use serialine_store::Transition;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// Most units made durable with one flush on the sending side.
const MAX_SEND_BATCH: usize = 256;

/// Returns how many units went to the printer.
pub(crate) async fn run(
    shared: Arc<Shared>,
    requests: mpsc::Sender<PrintRequest>,
    sent_tx: mpsc::UnboundedSender<SentUnit>,
    mut ready: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
) -> Result<u64, PipelineError> {
    let job = &shared.spec.job;
    let mut sent: u64 = 0;
    let mut next_unit = 1;
    let mut starving_since: Option<Instant> = None;
    // Serials whose code this job's template cannot render: never sent by
    // this job, alarmed once.
    let mut unrenderable = std::collections::HashSet::new();
    while sent < job.quantity && !*stop.borrow() {
        if !*ready.borrow() {
            // A device is faulted: nothing goes out until it is back.
            tokio::select! {
                r = ready.changed() => if r.is_err() { break },
                _ = stop.changed() => {}
            }
            continue;
        }
        let permit = tokio::select! {
            p = shared.slots.clone().acquire_owned() => p,
            _ = stop.changed() => continue,
        };
        let Ok(permit) = permit else { break };
        permit.forget();
        let want = 1 + shared
            .slots
            .available_permits()
            .min(MAX_SEND_BATCH - 1)
            .min((job.quantity - sent - 1) as usize);
        if want > 1 {
            if let Ok(p) = shared.slots.try_acquire_many((want - 1) as u32) {
                p.forget();
            }
        }
        let reserved_at = Instant::now();
        // Only serials issued for this job's product: a block sealed for
        // another GTIN stays stored for its own job.
        // Asking for as many more as there are serials known unrenderable
        // means those (returned to the window) never hide usable ones.
        let extra = unrenderable.len().min(MAX_SEND_BATCH);
        let serials = shared
            .store
            .reserve_for(want + extra, &job.gtin)
            .map_err(|e| shared.store_err(e))?;
        // Render before anything is durable: a code that cannot be rendered
        // is never sent. Its serial goes back to the pool (at the back, so it
        // is not handed out again at once) and stays counted in the buffer;
        // it is alarmed once per job.
        let mut batch = Vec::with_capacity(serials.len());
        let mut unusable = Vec::new();
        for serial in serials {
            if unrenderable.contains(&serial) {
                unusable.push(serial);
                continue;
            }
            match code::render(&job.template, &CodeData::for_job(job, serial.clone())) {
                Ok(text) => batch.push((serial, text)),
                Err(e) => {
                    shared.alarm(
                        AlarmKind::RenderError,
                        format!("cannot render serial {serial} with the job's template: {e}"),
                        Some(serial.clone()),
                    );
                    unrenderable.insert(serial.clone());
                    unusable.push(serial);
                }
            }
        }
        if !unusable.is_empty() {
            shared.store.release_to_back(&unusable);
        }
        if batch.len() > want {
            let excess: Vec<_> = batch.drain(want..).map(|(s, _)| s).collect();
            shared.store.release(&excess);
        }
        shared.slots.add_permits(want - batch.len());
        // Nothing usable (an empty buffer, or only serials this job cannot
        // render): wait for blocks as when the buffer is empty.
        if batch.is_empty() {
            let since = *starving_since.get_or_insert_with(|| {
                shared.alarm(
                    AlarmKind::LowBuffer,
                    format!(
                        "serial buffer empty: no serials for GTIN {} (the job's product); the line waits for blocks from upstream",
                        job.gtin.as_string()
                    ),
                    None,
                );
                Instant::now()
            });
            if since.elapsed() >= shared.spec.starve_timeout {
                shared.alarm(
                    AlarmKind::LowBuffer,
                    format!(
                        "no serials for {:?}: the job stops cleanly after {sent} units",
                        shared.spec.starve_timeout
                    ),
                    None,
                );
                break;
            }
            // No event announces a refill on this side: poll the buffer.
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                _ = stop.changed() => {}
            }
            continue;
        }
        starving_since = None;

        let ts: Vec<Transition> = batch
            .iter()
            .map(|(s, _)| Transition::in_job(s.clone(), UnitState::Sent, shared.spec.job_number))
            .collect();
        let results = shared.store.apply(&ts).await;
        // Waiting for room in the printer's queue below is backpressure, not
        // latency the daemon adds: a unit's clock stops when Sent is durable.
        let durable_at = Instant::now();
        let mut failure = None;
        for ((serial, text), result) in batch.into_iter().zip(results) {
            if let Err(e) = result {
                // Outcome unknown: the code must not go out. The next open of
                // the ledger tells whether it became Sent (then it is voided).
                shared.alarm(
                    AlarmKind::StoreError,
                    format!("serial {serial} not made durable, not printed: {e}"),
                    Some(serial),
                );
                shared.slots.add_permits(1);
                failure.get_or_insert(e);
                continue;
            }
            let unit = next_unit;
            next_unit += 1;
            // The verdict side learns of the unit before the printer does, so
            // a print-complete can never arrive for a unit it does not know.
            let _ = sent_tx.send(SentUnit {
                unit,
                serial,
                reserved_at,
                sent_at: durable_at,
            });
            if requests
                .send(PrintRequest { unit, code: text })
                .await
                .is_err()
            {
                return Err(PipelineError::Device {
                    line: shared.spec.line_id.clone(),
                    what: "printer driver stopped".into(),
                });
            }
            sent += 1;
            shared.instruments.sent.increment(1);
        }
        shared.progress.send_modify(|p| p.sent = sent);
        if let Some(e) = failure {
            return Err(shared.store_err(e));
        }
    }
    // Before `requests` drops: the printer driver ends after this.
    shared
        .feeding_done
        .store(true, std::sync::atomic::Ordering::Release);
    Ok(sent)
}
