//! Block prefetch: keeps the line's buffer of unused serials between the
//! low- and high-water marks. A received block is verified and stored by
//! `Store::add_block` (AEAD, line, duplicates, overlap) and acknowledged
//! upstream only once the store says it is durable; anything the store
//! refuses raises an alarm and changes nothing.

use crate::config::{PrefetchConfig, UplinkConfig};
use crate::conn::{publish, Link};
use crate::operator::Alarm;
use crate::wire::{BlockAck, BlockRequest, BlockResponse};
use rumqttc::{AsyncClient, Publish, QoS};
use serialine_core::AlarmKind;
use serialine_core::{BlockError, Gtin, SealedBlock};
use serialine_store::{Store, StoreError};
use std::collections::VecDeque;
use tokio::sync::{mpsc, watch};
use tokio::time::{Duration, Instant};

/// Correlation ids remembered after their request was abandoned, so that a
/// late answer is still used instead of being called unsolicited.
const RECENT_REQUESTS: usize = 64;

/// Low- and high-water marks in serials for a production rate.
pub fn watermarks(p: &PrefetchConfig, units_per_minute: f64) -> (u64, u64) {
    let rate = if units_per_minute.is_finite() && units_per_minute > 0.0 {
        units_per_minute
    } else {
        0.0
    };
    // The minute marks follow the rate, which a fast line (or a simulated
    // one) drives into millions of serials: the hard cap bounds memory, disk
    // and the number of issued-but-unused serials a stolen ledger exposes.
    let cap = p.max_buffer_serials.max(1);
    let low = p
        .low_water_serials
        .max((rate * p.low_water_minutes).ceil() as u64)
        .min(cap);
    let high = p
        .high_water_serials
        .max((rate * p.high_water_minutes).ceil() as u64)
        .max(low)
        .min(cap);
    (low, high)
}

/// A parent product the line labels (its cases', its pallets' GTIN),
/// whose serials are kept in stock beside the job's product: between `low`
/// and `high` serials, asked for once the job's own buffer is above its
/// low mark. See `UplinkHandle::set_parent_products`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParentStock {
    pub gtin: Gtin,
    pub low: u64,
    pub high: u64,
}

pub(crate) struct Prefetch {
    pub cfg: UplinkConfig,
    pub store: Store,
    pub client: AsyncClient,
    pub link: watch::Receiver<Link>,
    pub rate: watch::Receiver<f64>,
    /// The product blocks are requested for (see `UplinkHandle::set_product`).
    pub product: watch::Receiver<Option<Gtin>>,
    /// Parent products kept in stock too (`UplinkHandle::set_parent_products`).
    pub parents: watch::Receiver<Vec<ParentStock>>,
    /// Set by `UplinkHandle::hold_prefetch`: request nothing.
    pub held: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// A request is out, unanswered (`UplinkHandle::prefetch_settled`).
    pub asking: std::sync::Arc<std::sync::atomic::AtomicBool>,
    pub responses: mpsc::UnboundedReceiver<Publish>,
    pub alarms: mpsc::Sender<Alarm>,
}

struct Outstanding {
    correlation_id: String,
    sent: Instant,
    /// What was asked for: counted against the high-water mark until
    /// answered, and checked against the block that answers it.
    serials_wanted: u64,
    gtin: Option<Gtin>,
}

impl Prefetch {
    fn alarm(&self, a: Alarm) {
        if self.alarms.try_send(a).is_err() {
            tracing::error!("alarm channel full or closed; alarm only logged");
        }
    }

    pub async fn run(mut self) {
        let p = self.cfg.prefetch.clone();
        let mut tick = tokio::time::interval(p.check_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut outstanding: Option<Outstanding> = None;
        let mut recent: VecDeque<Outstanding> = VecDeque::new();
        let mut filling = false;
        let mut not_before = Instant::now();
        let mut counter = 0u64;
        let run_id = crate::wire::now_ms();
        loop {
            self.asking
                .store(outstanding.is_some(), std::sync::atomic::Ordering::SeqCst);
            tokio::select! {
                r = self.link.changed() => {
                    if r.is_err() { return; }
                    // A request sent on a lost connection may never be
                    // answered; keep its id (a late answer is fine) and ask again.
                    if let Some(o) = outstanding.take() {
                        remember(&mut recent, o);
                    }
                }
                r = self.rate.changed() => {
                    if r.is_err() { return; }
                }
                r = self.product.changed() => {
                    if r.is_err() { return; }
                    // Another product's buffer: its own marks decide.
                    filling = false;
                }
                msg = self.responses.recv() => {
                    let Some(msg) = msg else { return; };
                    let retry = self.on_response(&msg.payload, &mut outstanding, &mut recent).await;
                    if let Some(after) = retry {
                        not_before = Instant::now() + after;
                    }
                }
                _ = tick.tick() => {}
            }
            if !self.link.borrow().ready {
                continue;
            }
            // The fence handshake first (an empty ledger, or no fence to trust).
            if self.store.fence_holding() {
                continue;
            }
            if self.held.load(std::sync::atomic::Ordering::SeqCst) {
                continue;
            }
            if let Some(o) = &outstanding {
                if o.sent.elapsed() < p.request_timeout {
                    continue;
                }
                tracing::warn!(correlation_id = %o.correlation_id, timeout = ?p.request_timeout, "block request not answered; asking again");
                if let Some(o) = outstanding.take() {
                    remember(&mut recent, o);
                }
            }
            // The buffer that matters is the product's being made: serials
            // of another product cannot feed its job.
            let product = *self.product.borrow();
            let depth = match &product {
                Some(g) => match self.store.buffer_depth_for(g) {
                    Ok(d) => d,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot read the buffer depth; no block requested");
                        continue;
                    }
                },
                None => self.store.buffer_depth(),
            };
            // Serials asked for and not yet answered count as buffered, so
            // requests never add up past the high-water mark. (A request
            // abandoned after `request_timeout` no longer counts: it is
            // presumed lost and asked again; should it still be answered,
            // that block is stored too.)
            let pending = asked_for(outstanding.as_ref(), &recent, &product, p.request_timeout);
            let (low, high) = watermarks(&p, *self.rate.borrow());
            let counted = depth + pending;
            if counted < low {
                filling = true;
            }
            // Filling ends when the buffer itself reaches high water, not
            // when a request merely asks for the rest: an issuer may answer
            // with less than asked (one block), and the buffer must keep
            // filling after that answer even when it lands between the marks.
            if depth >= high {
                filling = false;
            }
            if Instant::now() < not_before {
                continue;
            }
            // The job's product first while it is below its low mark; then
            // a parent product (case, pallet labels) below its own, so a line
            // topping its buffer up in small answers never starves its
            // labels; then the rest of the product's fill. Nothing is asked
            // while what is asked already reaches high. Exactly the room
            // left under high water: an issuer that honours it never makes
            // the buffer exceed the mark.
            let main = (filling && counted < high).then(|| (product, high - counted));
            let (product, serials_wanted) = match main {
                Some(ask) if counted < low => ask,
                _ => match self.parent_short(&recent, outstanding.as_ref(), p.request_timeout) {
                    Some(ask) => ask,
                    None => match main {
                        Some(ask) => ask,
                        None => continue,
                    },
                },
            };
            counter += 1;
            let correlation_id = format!("{}-{run_id}-{counter}", self.cfg.client_id);
            let body = serde_json::to_vec(&BlockRequest {
                correlation_id: correlation_id.clone(),
                serials_wanted,
                gtin: product.map(|g| g.as_string()),
            })
            .unwrap_or_default();
            tracing::debug!(depth, low, high, %correlation_id, "buffer below target; requesting a block");
            if publish(
                &self.client,
                self.cfg.topic("blocks/request"),
                QoS::AtLeastOnce,
                false,
                body,
            )
            .await
            {
                outstanding = Some(Outstanding {
                    correlation_id,
                    sent: Instant::now(),
                    serials_wanted,
                    gtin: product,
                });
            }
        }
    }

    /// The first parent product below its low mark, with what to ask for
    /// it (up to its high mark), counting what is asked and unanswered.
    fn parent_short(
        &self,
        recent: &VecDeque<Outstanding>,
        outstanding: Option<&Outstanding>,
        timeout: Duration,
    ) -> Option<(Option<Gtin>, u64)> {
        let parents = self.parents.borrow().clone();
        for stock in parents {
            let product = Some(stock.gtin);
            let depth = match self.store.buffer_depth_for(&stock.gtin) {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(error = %e, gtin = %stock.gtin, "cannot read a parent product's stock");
                    continue;
                }
            };
            let pending = asked_for(outstanding, recent, &product, timeout);
            let counted = depth + pending;
            if counted < stock.low.max(1) {
                return Some((product, stock.high.max(stock.low.max(1)) - counted));
            }
        }
        None
    }

    /// Handles one `blocks/response`. Returns a pause before the next request
    /// when upstream answered with an error (so a failing issuer is not hammered).
    async fn on_response(
        &mut self,
        payload: &[u8],
        outstanding: &mut Option<Outstanding>,
        recent: &mut VecDeque<Outstanding>,
    ) -> Option<Duration> {
        let resp: BlockResponse = match serde_json::from_slice(payload) {
            Ok(r) => r,
            Err(e) => {
                self.alarm(Alarm::new(
                    AlarmKind::MalformedPayload,
                    format!("blocks/response is not valid JSON of the expected shape: {e}"),
                ));
                return None;
            }
        };
        let ours = outstanding
            .as_ref()
            .is_some_and(|o| o.correlation_id == resp.correlation_id);
        let request = if ours {
            outstanding.take()
        } else if let Some(i) = recent
            .iter()
            .position(|o| o.correlation_id == resp.correlation_id)
        {
            recent.remove(i)
        } else {
            None
        };
        let Some(request) = request else {
            self.alarm(Alarm::new(
                AlarmKind::UnsolicitedBlock,
                format!(
                    "blocks/response with unknown correlation id {:?} ignored",
                    resp.correlation_id
                ),
            ));
            return None;
        };
        let hex = match (resp.block, resp.error) {
            (Some(b), None) => b,
            (_, Some(err)) => {
                self.alarm(Alarm::new(
                    AlarmKind::BlockRequestFailed,
                    format!(
                        "upstream refused block request {}: {err}",
                        resp.correlation_id
                    ),
                ));
                return Some(Duration::from_secs(1).min(self.cfg.prefetch.request_timeout));
            }
            (None, None) => {
                self.alarm(Alarm::new(
                    AlarmKind::MalformedPayload,
                    format!(
                        "blocks/response {} has neither block nor error",
                        resp.correlation_id
                    ),
                ));
                return None;
            }
        };
        let sealed = match hex::decode(&hex)
            .ok()
            .ok_or_else(|| BlockError::Malformed("block is not hex".into()))
            .and_then(|b| SealedBlock::from_bytes(&b))
        {
            Ok(s) => s,
            Err(e) => {
                self.alarm(Alarm::new(
                    AlarmKind::InvalidBlock,
                    format!("block refused: {e}"),
                ));
                return None;
            }
        };
        match self.store.add_block(&sealed).await {
            Ok((block_id, serials)) => {
                tracing::info!(
                    block_id,
                    serials,
                    "block stored durably; acknowledging upstream"
                );
                self.check_block_fits(&request, block_id, serials);
                let body = serde_json::to_vec(&BlockAck {
                    block_id,
                    correlation_id: resp.correlation_id,
                    serials,
                })
                .unwrap_or_default();
                publish(
                    &self.client,
                    self.cfg.topic("blocks/ack"),
                    QoS::AtLeastOnce,
                    false,
                    body,
                )
                .await;
            }
            Err(e) => {
                let k = match &e {
                    StoreError::Block(BlockError::Authentication { .. }) => AlarmKind::ForgedBlock,
                    StoreError::Block(BlockError::WrongLine { .. }) => AlarmKind::WrongLineBlock,
                    StoreError::DuplicateBlock { .. } => AlarmKind::ReplayedBlock,
                    StoreError::OverlappingBlock { .. } => AlarmKind::OverlappingBlock,
                    StoreError::Block(_) => AlarmKind::InvalidBlock,
                    _ => AlarmKind::StoreError,
                };
                self.alarm(Alarm::new(
                    k,
                    format!("block {} from upstream refused: {e}", sealed.block_id),
                ));
            }
        }
        None
    }
}

impl Prefetch {
    /// A stored block that is not what was asked for: it is kept (its
    /// serials are issued to this line and acknowledged), but the operator
    /// must know. One for another product never feeds the running job: the
    /// store reserves by the GTIN sealed in the block.
    fn check_block_fits(&self, request: &Outstanding, block_id: u64, serials: u32) {
        if let Some(wanted) = request.gtin {
            match self.store.block_gtin(block_id) {
                Ok(g) if g == wanted => {}
                Ok(g) => self.alarm(Alarm::new(
                    AlarmKind::WrongProductBlock,
                    format!(
                        "block {block_id} is sealed for GTIN {}, request {} asked for {}: kept for that product's jobs, not used for this one",
                        g.as_string(),
                        request.correlation_id,
                        wanted.as_string()
                    ),
                )),
                Err(e) => tracing::error!(block_id, error = %e, "cannot read the product of a stored block"),
            }
        }
        if u64::from(serials) > request.serials_wanted {
            self.alarm(Alarm::new(
                AlarmKind::OversizedBlock,
                format!(
                    "block {block_id} holds {serials} serials, request {} asked for at most {}: the buffer may exceed its high-water mark",
                    request.correlation_id, request.serials_wanted
                ),
            ));
        }
    }
}

/// Issue 20 (seen in the broker-outage scenario): a request set aside when
/// the link dropped may still be delivered (the MQTT session resends it) and
/// answered after the reconnect, next to the request asked again. Until its
/// `request_timeout` has passed it counts against the high-water mark, so
/// both answers together never exceed it.
/// Serials of `product` asked for and not yet answered: the request out,
/// and those set aside on a link drop still within their timeout.
fn asked_for(
    outstanding: Option<&Outstanding>,
    recent: &VecDeque<Outstanding>,
    product: &Option<Gtin>,
    timeout: Duration,
) -> u64 {
    outstanding
        .filter(|o| o.gtin == *product)
        .map_or(0, |o| o.serials_wanted)
        + in_flight_elsewhere(recent, product, timeout)
}

fn in_flight_elsewhere(
    recent: &VecDeque<Outstanding>,
    product: &Option<Gtin>,
    timeout: Duration,
) -> u64 {
    recent
        .iter()
        .filter(|o| o.gtin == *product && o.sent.elapsed() < timeout)
        .map(|o| o.serials_wanted)
        .sum()
}

fn remember(recent: &mut VecDeque<Outstanding>, o: Outstanding) {
    if recent.len() >= RECENT_REQUESTS {
        recent.pop_front();
    }
    recent.push_back(o);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_set_aside_on_a_link_drop_counts_until_its_timeout() {
        let gtin = Gtin::parse("09506000134352").ok();
        let req = |ago: Duration, gtin: Option<Gtin>| Outstanding {
            correlation_id: "c".into(),
            sent: Instant::now().checked_sub(ago).unwrap_or_else(Instant::now),
            serials_wanted: 500,
            gtin,
        };
        let timeout = Duration::from_secs(10);
        let mut recent = VecDeque::new();
        recent.push_back(req(Duration::from_secs(1), gtin));
        assert_eq!(in_flight_elsewhere(&recent, &gtin, timeout), 500);
        // Another product's request, or one past its timeout, does not count.
        recent.push_back(req(Duration::from_secs(1), None));
        recent.push_back(req(Duration::from_secs(11), gtin));
        assert_eq!(in_flight_elsewhere(&recent, &gtin, timeout), 500);
    }

    #[test]
    fn watermarks_take_the_larger_of_serials_and_minutes() {
        let p = PrefetchConfig {
            low_water_serials: 100,
            low_water_minutes: 10.0,
            high_water_serials: 300,
            high_water_minutes: 30.0,
            ..Default::default()
        };
        assert_eq!(watermarks(&p, 0.0), (100, 300));
        assert_eq!(watermarks(&p, f64::NAN), (100, 300));
        assert_eq!(watermarks(&p, 5.0), (100, 300));
        assert_eq!(watermarks(&p, 60.0), (600, 1800));
        // However fast the line, the buffer never exceeds the hard cap.
        assert_eq!(
            watermarks(&p, 1e9),
            (p.max_buffer_serials, p.max_buffer_serials)
        );
    }
}
