//! `StartJob` and `StopJob`: the job is validated by
//! [`serialine_uplink::parse_command`], the very function `cmd/job/start`
//! goes through, and the resulting [`serialine_uplink::Command`] is handed
//! to the consumer of the line's MQTT commands
//! ([`serialine_uplink::UplinkHandle::submit_command`]): the service's
//! supervisor, which starts the job on the same durable path.

use crate::LineSource;
use opcua::types::{Argument, DataTypeId, Variant};
use serde_json::{Map, Value};

/// `OPENSCSReturnEnum` (OPC 30260, 6.4.8) values the methods answer, plus
/// one Serialine value for a refusal by the line itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum ReturnStatus {
    /// `NoError1`: done (a job started; a job stopped and drained, or none
    /// was running).
    NoError = 1,
    /// `InvalidSelectionCriteria6`: a job parameter (GTIN, lot, expiry,
    /// quantity, template) is invalid; nothing was done.
    InvalidSelectionCriteria = 6,
    /// `InsufficientPrivilegeToExecute11`: the session may not run
    /// commands (normally refused before, with `BadUserAccessDenied`).
    InsufficientPrivilegeToExecute = 11,
    /// Serialine's own value: the line refused or could not carry out a
    /// valid command (a job is running, the line did not drain, the devices
    /// did not start, commands are not supported here); `Message` says why.
    LineRefused = 1001,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MethodKind {
    StartJob,
    StopJob,
}

impl MethodKind {
    pub fn browse_name(self) -> &'static str {
        match self {
            MethodKind::StartJob => "StartJob",
            MethodKind::StopJob => "StopJob",
        }
    }
}

pub fn input_arguments(kind: MethodKind) -> Vec<Argument> {
    match kind {
        MethodKind::StartJob => vec![
            ("GTIN", DataTypeId::String).into(),
            ("Lot", DataTypeId::String).into(),
            ("Expiry", DataTypeId::String).into(),
            ("Quantity", DataTypeId::UInt64).into(),
            ("Template", DataTypeId::String).into(),
        ],
        MethodKind::StopJob => Vec::new(),
    }
}

pub fn output_arguments() -> Vec<Argument> {
    vec![
        ("ReturnStatus", DataTypeId::Int32).into(),
        ("Message", DataTypeId::String).into(),
    ]
}

fn string_arg(args: &[Variant], i: usize) -> Option<String> {
    match args.get(i) {
        Some(Variant::String(s)) => Some(s.as_ref().to_string()),
        _ => None,
    }
}

fn integer_arg(args: &[Variant], i: usize) -> Option<Value> {
    Some(match args.get(i)? {
        Variant::UInt64(n) => Value::from(*n),
        Variant::UInt32(n) => Value::from(*n),
        Variant::UInt16(n) => Value::from(*n),
        Variant::Int64(n) => Value::from(*n),
        Variant::Int32(n) => Value::from(*n),
        _ => return None,
    })
}

/// The `cmd/job/start` payload the arguments stand for. `Template` is a
/// template kind (`"gs1-data-matrix"`) or a JSON object, as on MQTT.
pub fn job_payload(args: &[Variant]) -> Result<Map<String, Value>, String> {
    let mut m = Map::new();
    for (i, key) in ["gtin", "lot", "expiry"].into_iter().enumerate() {
        let v = string_arg(args, i).ok_or_else(|| format!("{key} must be a String"))?;
        m.insert(key.into(), Value::from(v));
    }
    let q = integer_arg(args, 3).ok_or("quantity must be an integer (UInt64)")?;
    m.insert("quantity".into(), q);
    let t = string_arg(args, 4).ok_or("template must be a String")?;
    let template = if t.trim_start().starts_with('{') {
        serde_json::from_str::<Value>(&t).map_err(|e| format!("template: invalid JSON: {e}"))?
    } else {
        Value::from(t)
    };
    m.insert("template".into(), template);
    Ok(m)
}

/// Runs one method for `user`; the answer for the caller.
pub async fn run(
    kind: MethodKind,
    line: &LineSource,
    args: &[Variant],
    user: &str,
) -> (ReturnStatus, String) {
    let (name, parsed) = match kind {
        MethodKind::StartJob => (
            "job/start",
            job_payload(args).and_then(|m| serialine_uplink::parse_command("job/start", &m)),
        ),
        MethodKind::StopJob => (
            "job/stop",
            serialine_uplink::parse_command("job/stop", &Map::new()),
        ),
    };
    let command = match parsed {
        Ok(c) => c,
        Err(why) => {
            tracing::warn!(line = %line.id, user, "OPC UA {}: refused: {why}", kind.browse_name());
            return (ReturnStatus::InvalidSelectionCriteria, why);
        }
    };
    if !line.accepts_commands {
        return (
            ReturnStatus::LineRefused,
            format!(
                "{} is not supported here: nothing runs this line's commands (the lab demo runs its own jobs)",
                kind.browse_name()
            ),
        );
    }
    tracing::info!(line = %line.id, user, "OPC UA {}: command {name} handed to the line", kind.browse_name());
    match line.uplink.submit_command(command).await {
        Ok(()) => (ReturnStatus::NoError, "ok".into()),
        Err(why) => {
            tracing::warn!(line = %line.id, user, "OPC UA {}: the line refused: {why}", kind.browse_name());
            (ReturnStatus::LineRefused, why)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(gtin: &str) -> Vec<Variant> {
        vec![
            Variant::from(gtin),
            Variant::from("L1"),
            Variant::from("271231"),
            Variant::from(10u64),
            Variant::from("gs1-data-matrix"),
        ]
    }

    #[test]
    fn a_job_is_validated_as_on_mqtt() {
        let m = job_payload(&args("09506000134352")).expect("payload");
        let c = serialine_uplink::parse_command("job/start", &m);
        assert!(
            matches!(c, Ok(serialine_uplink::Command::StartJob(_))),
            "{c:?}"
        );
        let m = job_payload(&args("09506000134353")).expect("payload");
        let e = serialine_uplink::parse_command("job/start", &m).unwrap_err();
        assert!(e.contains("gtin"), "{e}");
    }

    #[test]
    fn wrong_argument_types_are_named() {
        let mut a = args("09506000134352");
        a[3] = Variant::from("ten");
        assert_eq!(
            job_payload(&a).unwrap_err(),
            "quantity must be an integer (UInt64)"
        );
    }
}
