//! Operator commands on `cmd/#`: parsed and validated with the core types,
//! optionally authenticated with a shared-secret MAC, handed to the pipeline
//! with a oneshot for its answer, and answered on `cmd/<name>/reply`.

use crate::config::{CommandAuth, UplinkConfig};
use crate::conn::publish;
use crate::operator::{kind, Alarm};
use crate::wire::{now_ms, CommandReply};
use rumqttc::{AsyncClient, Publish, QoS};
use serde_json::{Map, Value};
use serialine_core::{Expiry, Gtin, Job, Lot, Template};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Mutex};

/// Longest nonce accepted.
const MAX_NONCE_LEN: usize = 128;

/// A validated command for the pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    StartJob(Job),
    StopJob,
    Drain,
}

impl Command {
    pub fn name(&self) -> &'static str {
        match self {
            Command::StartJob(_) => "job/start",
            Command::StopJob => "job/stop",
            Command::Drain => "drain",
        }
    }
}

/// A command and where the pipeline's answer goes: `Ok(())` or a reason to
/// show the operator.
#[derive(Debug)]
pub struct CommandRequest {
    pub command: Command,
    pub reply: oneshot::Sender<Result<(), String>>,
}

impl CommandRequest {
    pub fn respond(self, result: Result<(), String>) {
        // The uplink may have given up waiting (timeout); nothing to do then.
        let _ = self.reply.send(result);
    }
}

/// Compact JSON with object keys sorted at every level: the form the MAC
/// covers, so that signer and verifier agree whatever their JSON libraries do
/// with key order or whitespace.
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String((*k).clone()).to_string());
                out.push(':');
                write_canonical(&m[k.as_str()], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// `hex(blake3::keyed_hash(key, "<topic>\n" + canonical payload without "mac"))`,
/// where `topic` is the full command topic,
/// `serialine/<site>/<line>/cmd/<name>`. The topic is bound in so a signed
/// `job/stop` cannot be replayed onto `job/start`, nor a command signed for
/// one line onto another line that shares the key.
pub fn command_mac(key: &[u8; 32], topic: &str, payload: &Value) -> String {
    let mut v = payload.clone();
    if let Value::Object(m) = &mut v {
        m.remove("mac");
    }
    let mut msg = String::with_capacity(64);
    msg.push_str(topic);
    msg.push('\n');
    msg.push_str(&canonical_json(&v));
    hex::encode(blake3::keyed_hash(key, msg.as_bytes()).as_bytes())
}

/// Adds `ts_ms`, `nonce` and `mac` to a command payload for `topic` (the
/// full command topic), for tools and tests.
pub fn sign_command(key: &[u8; 32], topic: &str, mut payload: Value, nonce: &str) -> Value {
    if let Value::Object(m) = &mut payload {
        m.insert("ts_ms".into(), Value::from(now_ms()));
        m.insert("nonce".into(), Value::from(nonce));
    }
    let mac = command_mac(key, topic, &payload);
    if let Value::Object(m) = &mut payload {
        m.insert("mac".into(), Value::from(mac));
    }
    payload
}

/// Remembers nonces for replay refusal.
#[derive(Default)]
struct Nonces {
    seen: HashMap<String, u64>,
}

fn verify(
    auth: &CommandAuth,
    nonces: &mut Nonces,
    topic: &str,
    m: &Map<String, Value>,
) -> Result<(), String> {
    let mac = m
        .get("mac")
        .and_then(Value::as_str)
        .ok_or("unsigned: a command key is configured and the payload has no \"mac\"")?;
    let ts = m
        .get("ts_ms")
        .and_then(Value::as_u64)
        .ok_or("signed commands need an integer \"ts_ms\"")?;
    let nonce = m
        .get("nonce")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty() && n.len() <= MAX_NONCE_LEN)
        .ok_or("signed commands need a \"nonce\" of 1 to 128 characters")?;
    let given = blake3::Hash::from_hex(mac).map_err(|_| "\"mac\" is not 64 hex digits")?;
    let expected = blake3::Hash::from_hex(command_mac(&auth.key, topic, &Value::Object(m.clone())))
        .map_err(|_| "internal: MAC encoding")?;
    // blake3::Hash equality is constant-time.
    if given != expected {
        return Err("bad MAC".into());
    }
    let now = now_ms();
    let skew = auth.max_skew.as_millis() as u64;
    if ts.abs_diff(now) > skew {
        return Err(format!(
            "timestamp {ts} is {} ms from the line's clock (at most {skew} ms allowed)",
            ts.abs_diff(now)
        ));
    }
    nonces
        .seen
        .retain(|_, t| now.saturating_sub(*t) <= 2 * skew);
    if nonces.seen.insert(nonce.to_string(), ts).is_some() {
        return Err(format!("nonce {nonce:?} already used (replay)"));
    }
    Ok(())
}

fn field<'a>(m: &'a Map<String, Value>, name: &str) -> Result<&'a str, String> {
    m.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("\"{name}\" is missing or not a string"))
}

/// Parses and validates a command; errors are what the operator is told.
pub fn parse_command(name: &str, m: &Map<String, Value>) -> Result<Command, String> {
    match name {
        "job/start" => {
            let gtin = Gtin::parse(field(m, "gtin")?).map_err(|e| format!("gtin: {e}"))?;
            let lot = Lot::new(field(m, "lot")?).map_err(|e| e.to_string())?;
            let expiry = Expiry::parse(field(m, "expiry")?).map_err(|e| e.to_string())?;
            let quantity = m
                .get("quantity")
                .and_then(Value::as_u64)
                .ok_or("\"quantity\" is missing or not a positive integer")?;
            let template = match m.get("template") {
                // Shorthand for the templates without parameters.
                Some(Value::String(kind)) => {
                    serde_json::from_value::<Template>(serde_json::json!({ "kind": kind }))
                }
                Some(v) => serde_json::from_value::<Template>(v.clone()),
                None => return Err("\"template\" is missing".into()),
            }
            .map_err(|e| format!("template: {e}"))?;
            template.validate().map_err(|e| format!("template: {e}"))?;
            let job = Job::new(gtin, lot, expiry, template, quantity).map_err(|e| e.to_string())?;
            Ok(Command::StartJob(job))
        }
        "job/stop" => Ok(Command::StopJob),
        "drain" => Ok(Command::Drain),
        other => Err(format!(
            "unknown command {other:?} (known: job/start, job/stop, drain)"
        )),
    }
}

pub(crate) struct Commands {
    pub cfg: UplinkConfig,
    pub client: AsyncClient,
    pub incoming: mpsc::UnboundedReceiver<Publish>,
    pub to_pipeline: mpsc::Sender<CommandRequest>,
    pub alarms: mpsc::Sender<Alarm>,
}

impl Commands {
    pub async fn run(mut self) {
        let nonces = Arc::new(Mutex::new(Nonces::default()));
        let prefix = self.cfg.topic("cmd/");
        while let Some(p) = self.incoming.recv().await {
            let Some(name) = p.topic.strip_prefix(&prefix).map(str::to_string) else {
                continue;
            };
            let cfg = self.cfg.clone();
            let client = self.client.clone();
            let to_pipeline = self.to_pipeline.clone();
            let alarms = self.alarms.clone();
            let nonces = nonces.clone();
            // One task per command: a slow answer must not hold up the next.
            tokio::spawn(async move {
                let (request_id, result) =
                    handle(&cfg, &name, &p.payload, &to_pipeline, &alarms, &nonces).await;
                let reply = CommandReply {
                    request_id,
                    ok: result.is_ok(),
                    error: result.err(),
                };
                let body = serde_json::to_vec(&reply).unwrap_or_default();
                publish(
                    &client,
                    cfg.topic(&format!("cmd/{name}/reply")),
                    QoS::AtLeastOnce,
                    false,
                    body,
                )
                .await;
            });
        }
    }
}

async fn handle(
    cfg: &UplinkConfig,
    name: &str,
    payload: &[u8],
    to_pipeline: &mpsc::Sender<CommandRequest>,
    alarms: &mpsc::Sender<Alarm>,
    nonces: &Mutex<Nonces>,
) -> (Option<String>, Result<(), String>) {
    let raise = |k: &str, msg: String| {
        if alarms.try_send(Alarm::new(k, msg)).is_err() {
            tracing::error!("alarm channel full or closed; alarm only logged");
        }
    };
    let m = match serde_json::from_slice::<Value>(payload) {
        Ok(Value::Object(m)) => m,
        Ok(_) => {
            raise(
                kind::MALFORMED_PAYLOAD,
                format!("cmd/{name}: payload is not a JSON object"),
            );
            return (None, Err("payload must be a JSON object".into()));
        }
        Err(e) => {
            raise(
                kind::MALFORMED_PAYLOAD,
                format!("cmd/{name}: invalid JSON: {e}"),
            );
            return (None, Err(format!("invalid JSON: {e}")));
        }
    };
    let request_id = m
        .get("request_id")
        .and_then(Value::as_str)
        .map(str::to_string);
    if let Some(auth) = &cfg.command_auth {
        let topic = cfg.topic(&format!("cmd/{name}"));
        if let Err(why) = verify(auth, &mut *nonces.lock().await, &topic, &m) {
            raise(kind::COMMAND_REFUSED, format!("cmd/{name} refused: {why}"));
            return (request_id, Err(format!("refused: {why}")));
        }
    }
    let command = match parse_command(name, &m) {
        Ok(c) => c,
        Err(e) => return (request_id, Err(e)),
    };
    tracing::info!(command = name, ?request_id, "command received");
    let (tx, rx) = oneshot::channel();
    let req = CommandRequest { command, reply: tx };
    if let Err(e) = to_pipeline.try_send(req) {
        let why = match e {
            mpsc::error::TrySendError::Full(_) => {
                "the line is busy with earlier commands; try again"
            }
            mpsc::error::TrySendError::Closed(_) => "the line is not accepting commands",
        };
        return (request_id, Err(why.into()));
    }
    let result = match tokio::time::timeout(cfg.command_timeout, rx).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => Err("the line dropped the command without answering".into()),
        Err(_) => Err(format!(
            "the line did not answer within {:?}",
            cfg.command_timeout
        )),
    };
    (request_id, result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    /// Regression (fuzz/regressions/mqtt_commands/float_canonical_json_not_fixed_point):
    /// canonical JSON must be a fixed point, or the verifier's canonical form
    /// differs from the signer's and a correctly signed command is refused.
    fn canonical_json_is_a_fixed_point_for_large_floats() {
        for raw in [
            r#"{"t":[15555555555555555555555]}"#,
            r#"{"t":1.0022200055555557e28}"#,
            r#"{"a":0.1,"b":-2.5e-300,"c":1e308}"#,
        ] {
            let once: Value = serde_json::from_str(raw).unwrap();
            let canon = canonical_json(&once);
            let twice: Value = serde_json::from_str(&canon).unwrap();
            assert_eq!(once, twice, "{raw}");
            assert_eq!(canon, canonical_json(&twice), "{raw}");
        }
    }

    #[test]
    fn canonical_json_sorts_keys_recursively() {
        let v = json!({"b": 1, "a": {"z": [1, {"y": "x", "c": true}], "d": null}});
        assert_eq!(
            canonical_json(&v),
            r#"{"a":{"d":null,"z":[1,{"c":true,"y":"x"}]},"b":1}"#
        );
    }

    #[test]
    fn start_job_is_validated() {
        let good = json!({"gtin": "09506000134352", "lot": "L1", "expiry": "271231", "quantity": 10, "template": "gs1-data-matrix"});
        assert!(matches!(
            parse_command("job/start", &obj(good.clone())),
            Ok(Command::StartJob(_))
        ));
        let mut bad = good.clone();
        bad["gtin"] = json!("09506000134353");
        assert!(parse_command("job/start", &obj(bad))
            .unwrap_err()
            .starts_with("gtin"));
        let mut bad = good.clone();
        bad["expiry"] = json!("271331");
        assert!(parse_command("job/start", &obj(bad)).is_err());
        let mut bad = good;
        bad["quantity"] = json!(0);
        assert!(parse_command("job/start", &obj(bad)).is_err());
        assert!(parse_command("job/explode", &Map::new()).is_err());
    }

    #[test]
    fn mac_verification() {
        let auth = CommandAuth {
            key: [9; 32],
            max_skew: std::time::Duration::from_secs(60),
        };
        let mut nonces = Nonces::default();
        let signed = sign_command(&auth.key, "drain", json!({"request_id": "r1"}), "n1");
        assert_eq!(
            verify(&auth, &mut nonces, "drain", &obj(signed.clone())),
            Ok(())
        );
        // Replay of the same nonce.
        assert!(verify(&auth, &mut nonces, "drain", &obj(signed.clone()))
            .unwrap_err()
            .contains("replay"));
        // Same payload on another command.
        let other = sign_command(&auth.key, "drain", json!({}), "n2");
        assert_eq!(
            verify(&auth, &mut nonces, "job/stop", &obj(other)),
            Err("bad MAC".into())
        );
        // Tampered field.
        let mut t = sign_command(&auth.key, "drain", json!({"x": 1}), "n3");
        t["x"] = json!(2);
        assert_eq!(
            verify(&auth, &mut nonces, "drain", &obj(t)),
            Err("bad MAC".into())
        );
        // Unsigned.
        assert!(verify(&auth, &mut nonces, "drain", &Map::new())
            .unwrap_err()
            .starts_with("unsigned"));
        // Stale timestamp, correctly signed.
        let mut stale = json!({"ts_ms": 1000, "nonce": "n4"});
        let mac = command_mac(&auth.key, "drain", &stale);
        stale["mac"] = json!(mac);
        assert!(verify(&auth, &mut nonces, "drain", &obj(stale))
            .unwrap_err()
            .contains("timestamp"));
    }
}
