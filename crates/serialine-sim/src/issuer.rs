//! The simulated upstream serial issuer.
//!
//! It holds each line's secret, draws non-sequential serials from one
//! [`SerialGenerator`] (so serials are unique across all lines, not only within
//! one), hands them out in sealed blocks with increasing block ids per line,
//! and remembers every serial it issued to each line so a test can check that
//! everything a line reports was issued to it.
//!
//! Over MQTT it answers `serialine/{site}/{line}/blocks/request` on
//! `serialine/{site}/{line}/blocks/response` and records the line's
//! `blocks/ack`. Faults can be queued: forge (flip a ciphertext byte), replay
//! (resend the last honest block), wrong line (seal for another line).

use crate::broker::{connect, split_topic, ClientError, MqttTarget};
use serde::{Deserialize, Serialize};
use serialine_core::serialgen::SerialGenerator;
use serialine_core::{Block, BlockError, BlockId, BlockKey, Gtin, SealedBlock, Serial};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

/// GTIN put in simulated blocks unless configured otherwise.
pub const DEFAULT_GTIN: &str = "09506000134352";

#[derive(Debug, thiserror::Error)]
pub enum IssuerError {
    #[error("issuer: no secret for line {line:?}; add it with Issuer::add_line")]
    UnknownLine { line: String },
    #[error("issuer: serial space exhausted at index {index}: {why}")]
    Exhausted { index: u128, why: String },
    #[error("issuer: sealing block {block_id} for line {line:?}: {source}")]
    Seal {
        line: String,
        block_id: BlockId,
        #[source]
        source: BlockError,
    },
    #[error("issuer: replay requested for line {line:?} but no honest block was issued yet")]
    NothingToReplay { line: String },
    #[error(transparent)]
    Mqtt(#[from] ClientError),
    #[error("issuer: MQTT publish on {topic}: {why}")]
    Publish { topic: String, why: String },
}

/// What the next answer for a line should be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// A fresh, correctly sealed block.
    Honest,
    /// A fresh block with one ciphertext byte flipped: fails authentication.
    Forge,
    /// The last honest block again: the line must refuse it as a duplicate.
    Replay,
    /// A fresh block sealed for another line.
    WrongLine,
    /// A fresh, honest block sealed for another product than the request
    /// asked for (`WRONG_PRODUCT_GTIN`, or the issuer's GTIN when that was
    /// asked): the line must keep it for that product, never use it for
    /// the requested one.
    WrongProduct,
}

/// The GTIN a [`Fault::WrongProduct`] block is sealed for.
pub const WRONG_PRODUCT_GTIN: &str = "00012345600012";

/// One answered request, as a test sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedBlock {
    pub block_id: BlockId,
    pub fault: Fault,
    pub serials: u32,
    /// The product the block was sealed for.
    pub gtin: Gtin,
}

#[derive(Debug, Default)]
struct LineState {
    key: Option<BlockKey>,
    next_block: BlockId,
    last_honest: Option<SealedBlock>,
    faults: VecDeque<Fault>,
    issued: HashSet<Serial>,
    blocks: Vec<IssuedBlock>,
    acked: Vec<BlockId>,
    requests: u64,
    /// Fence handshake (`crate::fence`): honest blocks' serials in order,
    /// serials the line reported on `events`, serials invalidated here, and
    /// the answers given.
    block_serials: HashMap<BlockId, Vec<Serial>>,
    reported: HashSet<Serial>,
    invalidated: HashSet<Serial>,
    fence_answers: Vec<crate::fence::FenceAnswer>,
}

struct State {
    generator: SerialGenerator,
    next_index: u128,
    block_size: u32,
    gtin: Gtin,
    nonce_key: [u8; 32],
    nonce_counter: u64,
    lines: HashMap<String, LineState>,
}

/// The issuer's state, shared by its MQTT task and the test or CLI driving
/// it. Cheap to clone.
#[derive(Clone)]
pub struct Issuer {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer").finish_non_exhaustive()
    }
}

impl Issuer {
    /// An issuer whose serials and nonces are derived from `seed`: the same
    /// seed gives the same serials, which makes runs reproducible.
    pub fn new(seed: &[u8], block_size: u32) -> Issuer {
        let key = blake3::derive_key("serialine sim issuer 2026 serial key", seed);
        let nonce_key = blake3::derive_key("serialine sim issuer 2026 nonce key", seed);
        Issuer {
            state: Arc::new(Mutex::new(State {
                generator: SerialGenerator::with_defaults(key),
                next_index: 0,
                block_size: block_size.max(1),
                gtin: default_gtin(),
                nonce_key,
                nonce_counter: 0,
                lines: HashMap::new(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent at every await-free step; a panic in a
        // test thread holding it must not hide the issuer from the others.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a line and the secret its ledger was opened with.
    pub fn add_line(&self, line: &str, secret: &[u8]) {
        let mut st = self.lock();
        let ls = st.lines.entry(line.to_string()).or_default();
        ls.key = Some(BlockKey::derive(secret));
        if ls.next_block == 0 {
            ls.next_block = 1;
        }
    }

    pub fn set_block_size(&self, n: u32) {
        self.lock().block_size = n.max(1);
    }

    pub fn set_gtin(&self, gtin: Gtin) {
        self.lock().gtin = gtin;
    }

    /// Queues what the next answers for `line` will be (after those already
    /// queued); with an empty queue every answer is honest.
    pub fn push_fault(&self, line: &str, fault: Fault) {
        self.lock()
            .lines
            .entry(line.to_string())
            .or_default()
            .faults
            .push_back(fault);
    }

    pub fn forge_next(&self, line: &str) {
        self.push_fault(line, Fault::Forge)
    }

    pub fn replay_next(&self, line: &str) {
        self.push_fault(line, Fault::Replay)
    }

    pub fn wrong_line_next(&self, line: &str) {
        self.push_fault(line, Fault::WrongLine)
    }

    /// Every serial issued to `line`, faulty blocks included (a line could
    /// only use serials from blocks it accepted, which are a subset).
    pub fn issued(&self, line: &str) -> HashSet<Serial> {
        self.lock()
            .lines
            .get(line)
            .map(|l| l.issued.clone())
            .unwrap_or_default()
    }

    pub fn was_issued(&self, line: &str, serial: &Serial) -> bool {
        self.lock()
            .lines
            .get(line)
            .is_some_and(|l| l.issued.contains(serial))
    }

    /// Every block answered to `line`, in order.
    pub fn blocks(&self, line: &str) -> Vec<IssuedBlock> {
        self.lock()
            .lines
            .get(line)
            .map(|l| l.blocks.clone())
            .unwrap_or_default()
    }

    /// Block ids the line acknowledged as durably stored, in arrival order.
    pub fn acked(&self, line: &str) -> Vec<BlockId> {
        self.lock()
            .lines
            .get(line)
            .map(|l| l.acked.clone())
            .unwrap_or_default()
    }

    pub fn requests(&self, line: &str) -> u64 {
        self.lock().lines.get(line).map_or(0, |l| l.requests)
    }

    /// Issues the next block for `line`, applying the next queued fault.
    pub fn issue(&self, line: &str) -> Result<SealedBlock, IssuerError> {
        self.issue_for(line, None, None)
    }

    /// Issues the next block for `line` sealed for `gtin` (the issuer's
    /// configured GTIN with `None`) with at most `max_serials` serials (the
    /// request's `serials_wanted`; the block size with `None`), applying the
    /// next queued fault.
    pub fn issue_for(
        &self,
        line: &str,
        gtin: Option<Gtin>,
        max_serials: Option<u64>,
    ) -> Result<SealedBlock, IssuerError> {
        let mut st = self.lock();
        let st = &mut *st;
        let ls = st.lines.entry(line.to_string()).or_default();
        ls.requests += 1;
        let Some(key) = ls.key.clone() else {
            return Err(IssuerError::UnknownLine { line: line.into() });
        };
        let fault = ls.faults.pop_front().unwrap_or(Fault::Honest);
        if fault == Fault::Replay {
            let sealed = ls
                .last_honest
                .clone()
                .ok_or_else(|| IssuerError::NothingToReplay { line: line.into() })?;
            let serials = ls
                .blocks
                .iter()
                .rev()
                .find(|b| b.block_id == sealed.block_id);
            let (serials, gtin) = serials.map_or((0, st.gtin), |b| (b.serials, b.gtin));
            ls.blocks.push(IssuedBlock {
                block_id: sealed.block_id,
                fault,
                serials,
                gtin,
            });
            return Ok(sealed);
        }

        // Disjoint index ranges: next_index only moves forward, shared by all lines.
        let start = st.next_index;
        let count = match max_serials {
            // Never more than asked for (and never an empty block).
            Some(m) => st
                .block_size
                .min(u32::try_from(m).unwrap_or(u32::MAX))
                .max(1),
            None => st.block_size,
        };
        let gtin = gtin.unwrap_or(st.gtin);
        let gtin = match fault {
            Fault::WrongProduct => {
                let other = Gtin::parse(WRONG_PRODUCT_GTIN).unwrap_or(st.gtin);
                if gtin == other {
                    st.gtin
                } else {
                    other
                }
            }
            _ => gtin,
        };
        let serials = st
            .generator
            .range(start, u64::from(count))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| IssuerError::Exhausted {
                index: start,
                why: e.to_string(),
            })?;
        st.next_index += u128::from(count);
        let block_id = ls.next_block.max(1);
        ls.next_block = block_id + 1;
        let sealed_line = match fault {
            Fault::WrongLine => format!("{line}-other"),
            _ => line.to_string(),
        };
        let block = Block {
            block_id,
            line_id: sealed_line,
            gtin,
            serials,
            issued_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        };
        // Nonces only need to be unique per key; a keyed hash of a counter is
        // unique without a randomness dependency.
        st.nonce_counter += 1;
        let mut h = blake3::Hasher::new_keyed(&st.nonce_key);
        h.update(&st.nonce_counter.to_le_bytes());
        h.update(line.as_bytes());
        let mut nonce = [0u8; 24];
        nonce.copy_from_slice(&h.finalize().as_bytes()[..24]);
        let mut sealed = key
            .seal(&block, nonce)
            .map_err(|source| IssuerError::Seal {
                line: line.into(),
                block_id,
                source,
            })?;
        ls.issued.extend(block.serials.iter().cloned());
        match fault {
            Fault::Forge => {
                let mid = sealed.ciphertext.len() / 2;
                sealed.ciphertext[mid] ^= 0x01;
            }
            Fault::Honest => {
                ls.last_honest = Some(sealed.clone());
                ls.block_serials.insert(block_id, block.serials.clone());
            }
            Fault::WrongLine | Fault::Replay | Fault::WrongProduct => {}
        }
        ls.blocks.push(IssuedBlock {
            block_id,
            fault,
            serials: count,
            gtin,
        });
        tracing::debug!(line, block_id, ?fault, serials = count, "issued block");
        Ok(sealed)
    }

    /// Connects to the broker and answers block requests of every site (or
    /// only of `site`) until the returned task is dropped. Returns once
    /// subscribed.
    pub async fn spawn(
        &self,
        target: &MqttTarget,
        site: Option<&str>,
    ) -> Result<IssuerTask, IssuerError> {
        let site = site.unwrap_or("+");
        let sim = connect(
            target,
            vec![
                format!("serialine/{site}/+/blocks/request"),
                format!("serialine/{site}/+/blocks/ack"),
                format!("serialine/{site}/+/fence/hello"),
                format!("serialine/{site}/+/events"),
            ],
        )
        .await?;
        let issuer = self.clone();
        let client = sim.client.clone();
        let mut incoming = sim.incoming;
        let conn = sim.task;
        let serve = tokio::spawn(async move {
            while let Some(p) = incoming.recv().await {
                issuer.handle(&client, &p.topic, &p.payload).await;
            }
        });
        Ok(IssuerTask { conn, serve })
    }

    async fn handle(&self, client: &rumqttc::AsyncClient, topic: &str, payload: &[u8]) {
        let Some((site, line, rest)) = split_topic(topic) else {
            return;
        };
        match rest {
            "blocks/request" => {
                let reply = self.answer(line, payload);
                let topic = format!("serialine/{site}/{line}/blocks/response");
                let body = serde_json::to_vec(&reply).unwrap_or_default();
                if let Err(e) = client
                    .publish(&topic, rumqttc::QoS::AtLeastOnce, false, body)
                    .await
                {
                    tracing::warn!(%topic, error = %e, "issuer could not answer");
                }
            }
            "blocks/ack" => match serde_json::from_slice::<BlockAck>(payload) {
                Ok(ack) => {
                    if let Some(l) = self.lock().lines.get_mut(line) {
                        l.acked.push(ack.block_id);
                    }
                }
                Err(e) => tracing::warn!(line, error = %e, "issuer: malformed block ack"),
            },
            "events" => {
                let serials = crate::fence::reported_in(payload);
                self.lock()
                    .lines
                    .entry(line.to_string())
                    .or_default()
                    .reported
                    .extend(serials);
            }
            "fence/hello" => {
                let Some(reply) = self.fence_answer(line, payload) else {
                    return;
                };
                let topic = format!("serialine/{site}/{line}/fence/answer");
                let body = serde_json::to_vec(&reply).unwrap_or_default();
                if let Err(e) = client
                    .publish(&topic, rumqttc::QoS::AtLeastOnce, false, body)
                    .await
                {
                    tracing::warn!(%topic, error = %e, "issuer could not answer the fence hello");
                }
            }
            _ => {}
        }
    }

    fn answer(&self, line: &str, payload: &[u8]) -> BlockResponse {
        let request: BlockRequest = match serde_json::from_slice(payload) {
            Ok(r) => r,
            Err(e) => {
                return BlockResponse {
                    correlation_id: String::new(),
                    block: None,
                    error: Some(format!("malformed request: {e}")),
                }
            }
        };
        let gtin = match request.gtin.as_deref().map(Gtin::parse) {
            None => None,
            Some(Ok(g)) => Some(g),
            Some(Err(e)) => {
                return BlockResponse {
                    correlation_id: request.correlation_id,
                    block: None,
                    error: Some(format!("request gtin: {e}")),
                }
            }
        };
        match self.issue_for(line, gtin, request.serials_wanted) {
            Ok(sealed) => BlockResponse {
                correlation_id: request.correlation_id,
                block: Some(hex::encode(sealed.to_bytes())),
                error: None,
            },
            Err(e) => BlockResponse {
                correlation_id: request.correlation_id,
                block: None,
                error: Some(e.to_string()),
            },
        }
    }
}

impl Issuer {
    /// Answers a `fence/hello` (see [`crate::fence`]), invalidating what it
    /// says; `None` for a malformed hello.
    fn fence_answer(&self, line: &str, payload: &[u8]) -> Option<crate::fence::FenceAnswer> {
        let hello: crate::fence::FenceHello = match serde_json::from_slice(payload) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(line, error = %e, "issuer: malformed fence hello");
                return None;
            }
        };
        let mut st = self.lock();
        let ls = st.lines.entry(line.to_string()).or_default();
        let (answer, newly) = crate::fence::answer(
            &hello,
            &ls.block_serials,
            &ls.acked,
            &ls.reported,
            &ls.invalidated,
        );
        ls.invalidated.extend(newly);
        ls.fence_answers.push(answer.clone());
        tracing::info!(line, ?answer, "issuer: fence answer");
        Some(answer)
    }

    /// Serials issued to `line` that upstream invalidated in a fence
    /// handshake (issued, acknowledged, never reported, and the line's
    /// ledger no longer holds their block).
    pub fn invalidated(&self, line: &str) -> HashSet<Serial> {
        self.lock()
            .lines
            .get(line)
            .map(|l| l.invalidated.clone())
            .unwrap_or_default()
    }

    /// Serials `line` reported on `events` (any outcome), as the issuer saw them.
    pub fn reported(&self, line: &str) -> HashSet<Serial> {
        self.lock()
            .lines
            .get(line)
            .map(|l| l.reported.clone())
            .unwrap_or_default()
    }

    /// Every fence answer given to `line`, in order.
    pub fn fence_answers(&self, line: &str) -> Vec<crate::fence::FenceAnswer> {
        self.lock()
            .lines
            .get(line)
            .map(|l| l.fence_answers.clone())
            .unwrap_or_default()
    }
}

fn default_gtin() -> Gtin {
    // A constant, not outside input: core's own tests use this GTIN.
    Gtin::parse(DEFAULT_GTIN).expect("DEFAULT_GTIN has a valid check digit")
}

/// The running MQTT side of an issuer; aborted on drop.
pub struct IssuerTask {
    conn: tokio::task::JoinHandle<()>,
    serve: tokio::task::JoinHandle<()>,
}

impl Drop for IssuerTask {
    fn drop(&mut self) {
        self.conn.abort();
        self.serve.abort();
    }
}

/// `blocks/request` payload (see the uplink README).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlockRequest {
    pub correlation_id: String,
    #[serde(default)]
    pub serials_wanted: Option<u64>,
    /// The product to seal the block for; the issuer's GTIN when absent.
    #[serde(default)]
    pub gtin: Option<String>,
}

/// `blocks/response` payload: `block` is the hex of `SealedBlock::to_bytes()`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlockResponse {
    pub correlation_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `blocks/ack` payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlockAck {
    pub block_id: BlockId,
    #[serde(default)]
    pub correlation_id: Option<String>,
}

/// Options for a standalone issuer (`serialine-lab sim issuer`).
#[derive(Debug, Clone)]
pub struct IssuerOptions {
    pub target: MqttTarget,
    /// Serve only this site (default: every site).
    pub site: Option<String>,
    /// Seeds the serial generator and nonces.
    pub seed: Vec<u8>,
    pub block_size: u32,
    /// `(line id, line secret)` for every line served.
    pub lines: Vec<(String, Vec<u8>)>,
    pub gtin: Option<Gtin>,
    /// Faults to apply to the first answers of every line, in order.
    pub faults: Vec<Fault>,
}

/// Runs an issuer until the process is stopped (or the task cancelled).
pub async fn run(options: IssuerOptions) -> Result<(), IssuerError> {
    let issuer = Issuer::new(&options.seed, options.block_size);
    if let Some(g) = options.gtin {
        issuer.set_gtin(g);
    }
    for (line, secret) in &options.lines {
        issuer.add_line(line, secret);
        for f in &options.faults {
            issuer.push_fault(line, *f);
        }
    }
    let task = issuer
        .spawn(&options.target, options.site.as_deref())
        .await?;
    tracing::info!(
        host = %options.target.host,
        port = options.target.port,
        lines = options.lines.len(),
        "simulated issuer serving block requests"
    );
    // Serve until cancelled; dropping `task` (on cancellation) stops the client.
    let _task = task;
    std::future::pending::<()>().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serialine_core::BlockKey;

    #[test]
    fn blocks_are_disjoint_increasing_and_open_for_their_line() {
        let issuer = Issuer::new(b"seed", 50);
        issuer.add_line("L1", b"s1");
        issuer.add_line("L2", b"s2");
        let mut all = HashSet::new();
        let mut last = 0;
        for _ in 0..4 {
            for (line, secret) in [("L1", b"s1"), ("L2", b"s2")] {
                let sealed = issuer.issue(line).unwrap();
                let block = BlockKey::derive(secret).open(&sealed, line).unwrap();
                assert_eq!(block.serials.len(), 50);
                for s in block.serials {
                    assert!(all.insert(s), "serial issued twice");
                }
            }
            let id = issuer.blocks("L1").last().unwrap().block_id;
            assert!(id > last);
            last = id;
        }
        assert_eq!(issuer.issued("L1").len(), 200);
    }

    #[test]
    fn faults_fail_as_intended() {
        let issuer = Issuer::new(b"seed", 10);
        issuer.add_line("L1", b"s1");
        let key = BlockKey::derive(b"s1");
        assert!(issuer.issue("L1").is_ok());
        issuer.forge_next("L1");
        issuer.replay_next("L1");
        issuer.wrong_line_next("L1");
        let forged = issuer.issue("L1").unwrap();
        assert!(matches!(
            key.open(&forged, "L1"),
            Err(BlockError::Authentication { .. })
        ));
        let replayed = issuer.issue("L1").unwrap();
        assert_eq!(replayed.block_id, 1);
        let wrong = issuer.issue("L1").unwrap();
        assert!(matches!(
            key.open(&wrong, "L1"),
            Err(BlockError::WrongLine { .. })
        ));
        assert!(matches!(
            issuer.issue("nope"),
            Err(IssuerError::UnknownLine { .. })
        ));
    }
}
