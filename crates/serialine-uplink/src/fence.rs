//! The fence handshake (issue 13 §2; payloads in the README): at start the
//! line tells upstream its ledger's identity and per-block positions on
//! `fence/hello`; upstream answers on `fence/answer` with what it has seen
//! from the line, and the store voids (fenced, reported) every serial below
//! that it does not remember (`Store::fence_upstream_blocking`).
//!
//! The hello is repeated after every reconnect and every `request_timeout`
//! until an answer arrives, once per process. Meanwhile a store that holds
//! (empty ledger, missing fence) reserves nothing and the prefetch requests
//! no block; a store with an intact fence runs on it (the offline buffer
//! keeps working) and applies the answer when the broker is back.

use crate::config::UplinkConfig;
use crate::conn::{publish, Link};
use crate::operator::Alarm;
use crate::wire::{FenceAnswer, FenceBlock, FenceHello};
use rumqttc::{AsyncClient, Publish, QoS};
use serialine_core::AlarmKind;
use serialine_store::Store;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

pub(crate) struct FenceCheck {
    pub cfg: UplinkConfig,
    pub store: Store,
    pub client: AsyncClient,
    pub link: watch::Receiver<Link>,
    pub answers: mpsc::UnboundedReceiver<Publish>,
    pub alarms: mpsc::Sender<Alarm>,
}

impl FenceCheck {
    fn alarm(&self, a: Alarm) {
        tracing::warn!(kind = %a.kind, "{}", a.message);
        if self.alarms.try_send(a).is_err() {
            tracing::error!("alarm channel full or closed; alarm only logged");
        }
    }

    pub async fn run(mut self) {
        if self.store.fence_holding() {
            self.alarm(Alarm::new(
                AlarmKind::FenceHold,
                "the line waits for upstream's fence answer before reserving a serial or requesting a block (empty ledger, or no fence to trust)",
            ));
        }
        let hello_id = format!("{}-{}", self.cfg.client_id, crate::wire::now_ms());
        let mut tick = tokio::time::interval(self.cfg.prefetch.check_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // (link generation, when) of the last hello sent.
        let mut sent: Option<(u64, Instant)> = None;
        loop {
            tokio::select! {
                r = self.link.changed() => {
                    if r.is_err() { return; }
                }
                msg = self.answers.recv() => {
                    let Some(msg) = msg else { return; };
                    if self.on_answer(&msg.payload, &hello_id).await {
                        return;
                    }
                }
                _ = tick.tick() => {}
            }
            let link = *self.link.borrow();
            if !link.ready {
                continue;
            }
            let due = match sent {
                None => true,
                Some((generation, at)) => {
                    generation != link.generation
                        || at.elapsed() >= self.cfg.prefetch.request_timeout
                }
            };
            if !due {
                continue;
            }
            let store = self.store.clone();
            let hello = match tokio::task::spawn_blocking(move || store.fence_hello()).await {
                Ok(Ok(h)) => h,
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "fence: cannot read the ledger for the handshake");
                    sent = Some((link.generation, Instant::now()));
                    continue;
                }
                Err(_) => return,
            };
            let body = serde_json::to_vec(&FenceHello {
                hello_id: hello_id.clone(),
                line: self.cfg.line.clone(),
                ledger_id: hello.ledger_id,
                holding: hello.holding,
                blocks: hello
                    .blocks
                    .iter()
                    .map(|b| FenceBlock {
                        block_id: b.block_id,
                        used: b.used,
                        count: b.count,
                        fence: b.fence,
                    })
                    .collect(),
            })
            .unwrap_or_default();
            tracing::info!(%hello_id, blocks = hello.blocks.len(), holding = hello.holding, "fence: hello to upstream");
            publish(
                &self.client,
                self.cfg.topic("fence/hello"),
                QoS::AtLeastOnce,
                false,
                body,
            )
            .await;
            sent = Some((link.generation, Instant::now()));
        }
    }

    /// True once this process's handshake is complete.
    async fn on_answer(&mut self, payload: &[u8], hello_id: &str) -> bool {
        let answer: FenceAnswer = match serde_json::from_slice(payload) {
            Ok(a) => a,
            Err(e) => {
                self.alarm(Alarm::new(
                    AlarmKind::MalformedPayload,
                    format!("fence/answer is not valid JSON of the expected shape: {e}"),
                ));
                return false;
            }
        };
        if answer.hello_id != hello_id {
            // An answer to an earlier process's hello: this one's is coming.
            tracing::debug!(got = %answer.hello_id, "fence: answer to another hello ignored");
            return false;
        }
        let seen: Vec<(u64, u32)> = answer.blocks.iter().map(|b| (b.block_id, b.seen)).collect();
        let store = self.store.clone();
        let voided =
            match tokio::task::spawn_blocking(move || store.fence_upstream_blocking(&seen)).await {
                Ok(Ok(n)) => n,
                Ok(Err(e)) => {
                    // The hold stays; the next hello asks again.
                    self.alarm(Alarm::new(
                        AlarmKind::StoreError,
                        format!("fence: upstream's answer could not be applied: {e}"),
                    ));
                    return false;
                }
                Err(_) => return true,
            };
        tracing::info!(
            known = answer.known,
            voided,
            invalidated = answer.invalidated,
            "fence: upstream answered; the line may reserve"
        );
        if voided > 0 || answer.invalidated > 0 {
            self.alarm(Alarm::new(
                AlarmKind::FenceInvalidated,
                format!(
                    "fence: upstream has seen serials this ledger does not remember: {voided} voided here (reported), {} issued to the line but never reported invalidated upstream",
                    answer.invalidated
                ),
            ));
        }
        true
    }
}
