//! Operator commands on `cmd/#`: parsed and validated with the core types,
//! optionally authenticated with a shared-secret MAC, handed to the pipeline
//! with a oneshot for its answer, and answered on `cmd/<name>/reply`.

use crate::config::{CommandAuth, UplinkConfig};
use crate::conn::publish;
use crate::operator::Alarm;
use crate::wire::{now_ms, CommandReply};
use rumqttc::{AsyncClient, Publish, QoS};
use serde_json::{Map, Value};
use serialine_core::AlarmKind;
use serialine_core::{Expiry, Gtin, Job, Lot, Template, UnitState};
use serialine_store::Store;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Longest nonce accepted.
const MAX_NONCE_LEN: usize = 128;

/// A validated command for the pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    StartJob(Job),
    StopJob,
    Drain,
    /// `unit/sample` (`purpose`) or `unit/decommission` (`reason`): what
    /// became of committed units, `to` being the after-commit state.
    Unit {
        to: UnitState,
        serials: Vec<String>,
        /// `unit/decommission` only: a parent goes with everything packed
        /// below it (`with_children: true`).
        with_children: bool,
    },
    /// `serials/return` (`gtin` optional: default the last job's product):
    /// the serials buffered for that product back upstream, unused.
    ReturnUnused {
        gtin: Option<Gtin>,
    },
    /// `hierarchy/pack`: `children` into `parent`.
    Pack {
        parent: String,
        children: Vec<String>,
    },
    /// `hierarchy/unpack`: `children` out of `parent`, or (none) empty it
    /// for good.
    Unpack {
        parent: String,
        children: Option<Vec<String>>,
    },
}

impl Command {
    pub fn name(&self) -> &'static str {
        match self {
            Command::StartJob(_) => "job/start",
            Command::StopJob => "job/stop",
            Command::Drain => "drain",
            Command::Unit {
                to: UnitState::Sampled(_),
                ..
            } => "unit/sample",
            Command::Unit { .. } => "unit/decommission",
            Command::ReturnUnused { .. } => "serials/return",
            Command::Pack { .. } => "hierarchy/pack",
            Command::Unpack { .. } => "hierarchy/unpack",
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

/// Adds `issued_at` (now, Unix ms), `nonce` and `mac` to a command payload
/// for `topic` (the full command topic), for tools and tests.
pub fn sign_command(key: &[u8; 32], topic: &str, payload: Value, nonce: &str) -> Value {
    sign_command_at(key, topic, payload, nonce, now_ms())
}

/// [`sign_command`] with an explicit `issued_at` (Unix ms).
pub fn sign_command_at(
    key: &[u8; 32],
    topic: &str,
    mut payload: Value,
    nonce: &str,
    issued_at_ms: u64,
) -> Value {
    if let Value::Object(m) = &mut payload {
        m.insert("issued_at".into(), Value::from(issued_at_ms));
        m.insert("nonce".into(), Value::from(nonce));
    }
    let mac = command_mac(key, topic, &payload);
    if let Value::Object(m) = &mut payload {
        m.insert("mac".into(), Value::from(mac));
    }
    payload
}

/// The MAC of an `events/ack` payload: the same construction as
/// [`command_mac`], over the full ack topic
/// (`serialine/<site>/<line>/events/ack`), under the ack key. The topic
/// keeps the two apart even if one key were used for both.
pub fn ack_mac(key: &[u8; 32], topic: &str, payload: &Value) -> String {
    command_mac(key, topic, payload)
}

/// Adds `mac` to an `events/ack` payload for `topic` (the full ack topic):
/// what upstream does before publishing an ack.
pub fn sign_ack(key: &[u8; 32], topic: &str, mut payload: Value) -> Value {
    let mac = ack_mac(key, topic, &payload);
    if let Value::Object(m) = &mut payload {
        m.insert("mac".into(), Value::from(mac));
    }
    payload
}

/// Checks `mac` of a payload received on `topic` against `key`.
pub(crate) fn check_mac(key: &[u8; 32], topic: &str, m: &Map<String, Value>) -> Result<(), String> {
    let mac = m
        .get("mac")
        .and_then(Value::as_str)
        .ok_or("unsigned: a key is configured and the payload has no \"mac\"")?;
    let given = blake3::Hash::from_hex(mac).map_err(|_| "\"mac\" is not 64 hex digits")?;
    let expected = blake3::Hash::from_hex(command_mac(key, topic, &Value::Object(m.clone())))
        .map_err(|_| "internal: MAC encoding")?;
    // blake3::Hash equality is constant-time.
    if given != expected {
        return Err("bad MAC".into());
    }
    Ok(())
}

/// Checks the MAC and the presence of `nonce` of a signed command; returns
/// the nonce. Freshness is [`check_fresh`]'s, the nonce's novelty the
/// ledger's.
fn verify<'a>(
    auth: &CommandAuth,
    topic: &str,
    m: &'a Map<String, Value>,
) -> Result<&'a str, String> {
    check_mac(&auth.key, topic, m)?;
    m.get("nonce")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty() && n.len() <= MAX_NONCE_LEN)
        .ok_or_else(|| "signed commands need a \"nonce\" of 1 to 128 characters".into())
}

/// A command must say when it was issued (`issued_at`, Unix ms) and be at
/// most `max_age` old, and at most `max_skew` in the future, by the line's
/// clock at `now_ms`. Returns when it stops being fresh (Unix ms).
pub(crate) fn check_fresh(
    m: &Map<String, Value>,
    now_ms: u64,
    max_age: Duration,
    max_skew: Duration,
) -> Result<u64, String> {
    let issued = m.get("issued_at").and_then(Value::as_u64).ok_or(
        "no integer \"issued_at\" (Unix ms): without it a late or queued command cannot be told from a fresh one",
    )?;
    let (age, skew) = (max_age.as_millis() as u64, max_skew.as_millis() as u64);
    if issued > now_ms.saturating_add(skew) {
        return Err(format!(
            "issued_at {issued} is {} ms ahead of the line's clock (at most {skew} ms allowed)",
            issued - now_ms
        ));
    }
    if now_ms.saturating_sub(issued) > age {
        return Err(format!(
            "stale: issued {} ms ago, at most {age} ms allowed (late delivery, e.g. queued by the broker while the line was down, or a replay)",
            now_ms - issued
        ));
    }
    Ok(issued.saturating_add(age))
}

fn field<'a>(m: &'a Map<String, Value>, name: &str) -> Result<&'a str, String> {
    m.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("\"{name}\" is missing or not a string"))
}

/// Most serials one `unit/*` command names.
pub const MAX_UNIT_SERIALS: usize = 1_000;

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
        "unit/sample" | "unit/decommission" => {
            let to = if name == "unit/sample" {
                UnitState::after_commit("sample", field(m, "purpose")?)?
            } else {
                UnitState::after_commit("decommission", field(m, "reason")?)?
            };
            let serials: Vec<String> = m
                .get("serials")
                .and_then(Value::as_array)
                .filter(|a| !a.is_empty() && a.len() <= MAX_UNIT_SERIALS)
                .and_then(|a| a.iter().map(|v| v.as_str().map(str::to_string)).collect())
                .ok_or_else(|| {
                    format!("\"serials\" must be an array of 1 to {MAX_UNIT_SERIALS} strings")
                })?;
            let with_children = match m.get("with_children") {
                None | Some(Value::Bool(false)) => false,
                Some(Value::Bool(true)) if name == "unit/decommission" => true,
                Some(_) => {
                    return Err(
                        "\"with_children\" is a boolean, and only for unit/decommission".into(),
                    )
                }
            };
            Ok(Command::Unit {
                to,
                serials,
                with_children,
            })
        }
        "hierarchy/pack" | "hierarchy/unpack" => {
            let parent = field(m, "parent")?.to_string();
            let children: Option<Vec<String>> = match m.get("children") {
                None | Some(Value::Null) => None,
                Some(v) => Some(
                    v.as_array()
                        .filter(|a| !a.is_empty() && a.len() <= MAX_UNIT_SERIALS)
                        .and_then(|a| a.iter().map(|v| v.as_str().map(str::to_string)).collect())
                        .ok_or_else(|| {
                            format!("\"children\" must be an array of 1 to {MAX_UNIT_SERIALS} strings")
                        })?,
                ),
            };
            if name == "hierarchy/pack" {
                let children = children.ok_or("\"children\" is missing")?;
                Ok(Command::Pack { parent, children })
            } else {
                // Emptying a parent for good is said, not implied.
                if children.is_none() && m.get("all") != Some(&Value::Bool(true)) {
                    return Err("name \"children\", or \"all\": true to empty the parent for good".into());
                }
                Ok(Command::Unpack { parent, children })
            }
        }
        "serials/return" => {
            let gtin = match m.get("gtin") {
                None | Some(Value::Null) => None,
                Some(Value::String(g)) => {
                    Some(Gtin::parse(g).map_err(|e| format!("gtin: {e}"))?)
                }
                Some(_) => return Err("\"gtin\" must be a string".into()),
            };
            Ok(Command::ReturnUnused { gtin })
        }
        other => Err(format!(
            "unknown command {other:?} (known: job/start, job/stop, drain, unit/sample, unit/decommission, serials/return, hierarchy/pack, hierarchy/unpack)"
        )),
    }
}

pub(crate) struct Commands {
    pub cfg: UplinkConfig,
    pub client: AsyncClient,
    pub incoming: mpsc::UnboundedReceiver<Publish>,
    pub to_pipeline: mpsc::Sender<CommandRequest>,
    pub alarms: mpsc::Sender<Alarm>,
    /// Holds the nonces of signed commands, durably.
    pub store: Store,
}

impl Commands {
    pub async fn run(mut self) {
        let prefix = self.cfg.topic("cmd/");
        while let Some(p) = self.incoming.recv().await {
            let Some(name) = p.topic.strip_prefix(&prefix).map(str::to_string) else {
                continue;
            };
            if p.payload.is_empty() {
                // What clearing a retained command looks like: no command,
                // nobody to answer.
                tracing::debug!(topic = %p.topic, "empty command payload ignored");
                continue;
            }
            let cfg = self.cfg.clone();
            let client = self.client.clone();
            let to_pipeline = self.to_pipeline.clone();
            let alarms = self.alarms.clone();
            let store = self.store.clone();
            // One task per command: a slow answer must not hold up the next.
            tokio::spawn(async move {
                let (request_id, result) =
                    handle(&cfg, &name, &p, &to_pipeline, &alarms, &store).await;
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
    p: &Publish,
    to_pipeline: &mpsc::Sender<CommandRequest>,
    alarms: &mpsc::Sender<Alarm>,
    store: &Store,
) -> (Option<String>, Result<(), String>) {
    let raise = |k: AlarmKind, msg: String| {
        if alarms.try_send(Alarm::new(k, msg)).is_err() {
            tracing::error!("alarm channel full or closed; alarm only logged");
        }
    };
    let refuse = |request_id: Option<String>, why: String| {
        tracing::warn!(command = name, ?request_id, "command refused: {why}");
        raise(
            AlarmKind::CommandRefused,
            format!("cmd/{name} refused: {why}"),
        );
        (request_id, Err(format!("refused: {why}")))
    };
    let request_id_of = |payload: &[u8]| {
        serde_json::from_slice::<Value>(payload)
            .ok()
            .and_then(|v| v.get("request_id")?.as_str().map(str::to_string))
    };
    // A retained command is one the broker keeps for whoever subscribes
    // next: it would run again at every (re)start. Never executed.
    if p.retain {
        return refuse(
            request_id_of(&p.payload),
            "retained message: commands are never taken from the broker's retained store; publish with retain=false (and clear the retained one with an empty retained payload)".into(),
        );
    }
    let m = match serde_json::from_slice::<Value>(&p.payload) {
        Ok(Value::Object(m)) => m,
        Ok(_) => {
            raise(
                AlarmKind::MalformedPayload,
                format!("cmd/{name}: payload is not a JSON object"),
            );
            return (None, Err("payload must be a JSON object".into()));
        }
        Err(e) => {
            raise(
                AlarmKind::MalformedPayload,
                format!("cmd/{name}: invalid JSON: {e}"),
            );
            return (None, Err(format!("invalid JSON: {e}")));
        }
    };
    let request_id = m
        .get("request_id")
        .and_then(Value::as_str)
        .map(str::to_string);
    let nonce = match &cfg.command_auth {
        Some(auth) => match verify(auth, &p.topic, &m) {
            Ok(n) => Some(n),
            Err(why) => return refuse(request_id, why),
        },
        None => None,
    };
    // Signed or not, a command runs only while fresh: `issued_at` is under
    // the MAC when signed, so a late delivery cannot be dressed up as new.
    let fresh_until = match check_fresh(&m, now_ms(), cfg.command_max_age, cfg.command_max_skew) {
        Ok(t) => t,
        Err(why) => return refuse(request_id, why),
    };
    if let Some(nonce) = nonce {
        // Durable before the command runs, so a replay is refused even after
        // a restart; kept until the command would be stale anyway.
        match store.record_nonce(nonce, fresh_until).await {
            Ok(true) => {}
            Ok(false) => {
                return refuse(request_id, format!("nonce {nonce:?} already used (replay)"))
            }
            Err(e) => {
                return refuse(
                    request_id,
                    format!("the nonce could not be recorded in the ledger, so a replay could not be excluded: {e}"),
                )
            }
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
    use serialine_core::SamplePurpose;

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
    fn unit_commands_are_validated() {
        let ok = parse_command(
            "unit/sample",
            &obj(json!({"serials": ["A1", "B2"], "purpose": "retention"})),
        );
        assert_eq!(
            ok,
            Ok(Command::Unit {
                to: UnitState::Sampled(SamplePurpose::Retention),
                serials: vec!["A1".into(), "B2".into()],
                with_children: false,
            })
        );
        assert_eq!(ok.unwrap().name(), "unit/sample");
        let r = parse_command("serials/return", &obj(json!({"gtin": "09506000134352"}))).unwrap();
        assert_eq!(r.name(), "serials/return");
        assert_eq!(
            parse_command("serials/return", &obj(json!({}))),
            Ok(Command::ReturnUnused { gtin: None })
        );
        assert!(parse_command("serials/return", &obj(json!({"gtin": "09506000134353"}))).is_err());
        assert!(parse_command("serials/return", &obj(json!({"gtin": 7}))).is_err());
        assert_eq!(
            parse_command(
                "hierarchy/pack",
                &obj(json!({"parent": "C1", "children": ["A", "B"]}))
            ),
            Ok(Command::Pack {
                parent: "C1".into(),
                children: vec!["A".into(), "B".into()]
            })
        );
        assert!(parse_command("hierarchy/pack", &obj(json!({"parent": "C1"}))).is_err());
        assert!(parse_command("hierarchy/unpack", &obj(json!({"parent": "C1"}))).is_err());
        assert_eq!(
            parse_command(
                "hierarchy/unpack",
                &obj(json!({"parent": "C1", "all": true}))
            ),
            Ok(Command::Unpack {
                parent: "C1".into(),
                children: None
            })
        );
        let d = parse_command(
            "unit/decommission",
            &obj(json!({"serials": ["A1"], "reason": "stolen"})),
        )
        .unwrap();
        assert_eq!(d.name(), "unit/decommission");
        for (name, bad) in [
            (
                "unit/sample",
                json!({"serials": ["A1"], "purpose": "lunch"}),
            ),
            ("unit/sample", json!({"serials": [], "purpose": "qa"})),
            ("unit/sample", json!({"serials": [1], "purpose": "qa"})),
            ("unit/decommission", json!({"serials": ["A1"]})),
            (
                "unit/decommission",
                json!({"serials": "A1", "reason": "damaged"}),
            ),
        ] {
            assert!(parse_command(name, &obj(bad.clone())).is_err(), "{bad}");
        }
        let many: Vec<String> = (0..=MAX_UNIT_SERIALS).map(|i| format!("S{i}")).collect();
        assert!(parse_command(
            "unit/sample",
            &obj(json!({"serials": many, "purpose": "qa"}))
        )
        .is_err());
    }

    #[test]
    fn mac_verification() {
        let auth = CommandAuth { key: [9; 32] };
        let t = "serialine/s/l/cmd/drain";
        let signed = sign_command(&auth.key, t, json!({"request_id": "r1"}), "n1");
        assert_eq!(verify(&auth, t, &obj(signed.clone())), Ok("n1"));
        // Same payload on another command.
        let other = sign_command(&auth.key, t, json!({}), "n2");
        assert_eq!(
            verify(&auth, "serialine/s/l/cmd/job/stop", &obj(other)),
            Err("bad MAC".into())
        );
        // Tampered field, issued_at included.
        let mut x = sign_command(&auth.key, t, json!({"x": 1}), "n3");
        x["x"] = json!(2);
        assert_eq!(verify(&auth, t, &obj(x)), Err("bad MAC".into()));
        let mut x = sign_command(&auth.key, t, json!({}), "n3");
        x["issued_at"] = json!(now_ms() + 1);
        assert_eq!(verify(&auth, t, &obj(x)), Err("bad MAC".into()));
        // Unsigned.
        assert!(verify(&auth, t, &Map::new())
            .unwrap_err()
            .starts_with("unsigned"));
    }

    #[test]
    fn freshness_bounds_age_and_future() {
        let (age, skew) = (Duration::from_secs(30), Duration::from_secs(5));
        let now = 1_000_000_000;
        let at = |ms: u64| obj(json!({ "issued_at": ms }));
        assert_eq!(check_fresh(&at(now), now, age, skew), Ok(now + 30_000));
        assert!(check_fresh(&at(now - 30_000), now, age, skew).is_ok());
        assert!(check_fresh(&at(now - 30_001), now, age, skew)
            .unwrap_err()
            .starts_with("stale"));
        assert!(check_fresh(&at(now + 5_000), now, age, skew).is_ok());
        assert!(check_fresh(&at(now + 5_001), now, age, skew)
            .unwrap_err()
            .contains("ahead"));
        assert!(check_fresh(&Map::new(), now, age, skew)
            .unwrap_err()
            .contains("issued_at"));
        assert!(check_fresh(
            &obj(json!({"issued_at": "2026-11-30T05:00:00Z"})),
            now,
            age,
            skew
        )
        .is_err());
    }

    /// README, "Signed commands": the MAC is built from the literal strings
    /// it describes (full topic, newline, canonical JSON) and accepted.
    #[test]
    fn the_readme_mac_construction_is_what_is_checked() {
        let key = [7u8; 32];
        let topic = "serialine/site-1/line-1/cmd/job/stop";
        let msg = "serialine/site-1/line-1/cmd/job/stop\n{\"issued_at\":1764480000000,\"nonce\":\"n-1\",\"request_id\":\"r-1\"}";
        let mac = hex::encode(blake3::keyed_hash(&key, msg.as_bytes()).as_bytes());
        let payload =
            json!({"request_id": "r-1", "nonce": "n-1", "issued_at": 1764480000000u64, "mac": mac});
        assert_eq!(
            verify(&CommandAuth { key }, topic, &obj(payload)),
            Ok("n-1")
        );
    }
}
