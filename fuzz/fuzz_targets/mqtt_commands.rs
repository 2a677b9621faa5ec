//! MQTT payloads the uplink receives: operator commands on `cmd/#`
//! (`parse_command` after the JSON object check the uplink does, plus the
//! canonical JSON / MAC helpers), and the upstream `blocks/response` and
//! `events/ack` payloads (`serialine_uplink::wire`).
//!
//! Input layout: byte 0 selects the topic; for commands the topic suffix
//! may also come from the input (up to the first NUL).
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};
use serialine_core::SealedBlock;
use serialine_uplink::wire::{BlockResponse, EventsAck};
use serialine_uplink::{canonical_json, command_mac, parse_command, sign_command, Command};

const NAMES: [&str; 4] = ["job/start", "job/stop", "drain", "job/start/extra"];
const KEY: [u8; 32] = [0x5a; 32];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    match sel % 4 {
        0 => {
            // Known command name, payload = rest.
            command(NAMES[usize::from(sel >> 2) % NAMES.len()], rest);
        }
        1 => {
            // Topic suffix from the input, then the payload.
            let (name, payload) = match rest.iter().position(|&b| b == 0) {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &[][..]),
            };
            command(&String::from_utf8_lossy(name), payload);
        }
        2 => block_response(rest),
        _ => events_ack(rest),
    }
});

/// As the uplink's command handler: JSON object, then MAC helpers, then
/// `parse_command`.
fn command(name: &str, payload: &[u8]) {
    let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(payload) else {
        return;
    };
    let v = Value::Object(m.clone());

    // Canonical JSON is valid JSON for the same value, and a fixed point.
    let canon = canonical_json(&v);
    let reparsed: Value = serde_json::from_str(&canon)
        .unwrap_or_else(|e| panic!("canonical JSON {canon:?} does not parse: {e}"));
    assert_eq!(reparsed, v, "canonical JSON changed the value");
    assert_eq!(canonical_json(&reparsed), canon);

    // The MAC ignores an existing "mac" field and binds the name.
    let mac = command_mac(&KEY, name, &v);
    assert_eq!(mac.len(), 64);
    let mut with_mac = m.clone();
    with_mac.insert("mac".into(), Value::from("00"));
    assert_eq!(command_mac(&KEY, name, &Value::Object(with_mac)), mac);
    let signed = sign_command(&KEY, name, v.clone(), "nonce-1");
    let signed_mac = signed
        .get("mac")
        .and_then(Value::as_str)
        .expect("signed has mac");
    assert_eq!(command_mac(&KEY, name, &signed), signed_mac);

    match parse_command(name, &m) {
        Ok(cmd) => {
            assert_eq!(cmd.name(), name);
            if let Command::StartJob(job) = &cmd {
                let _ = format!("{job:?}");
            }
        }
        Err(e) => assert!(!e.is_empty()),
    }
    // The authentication fields (issued_at, nonce, mac) never change the outcome.
    let signed_map: &Map<String, Value> = signed.as_object().expect("object stays object");
    assert_eq!(parse_command(name, &m), parse_command(name, signed_map));
}

/// `blocks/response`: JSON, then the hex block through `SealedBlock::from_bytes`.
/// (The uplink's own hex decoder `wire::unhex` is `pub(crate)`; an equivalent
/// is used here.)
fn block_response(payload: &[u8]) {
    let Ok(resp) = serde_json::from_slice::<BlockResponse>(payload) else {
        return;
    };
    let back: BlockResponse =
        serde_json::from_str(&serde_json::to_string(&resp).expect("serializes")).expect("reparses");
    assert_eq!(back, resp);
    if let Some(hex) = &resp.block {
        if let Some(bytes) = unhex(hex) {
            if let Ok(sealed) = SealedBlock::from_bytes(&bytes) {
                assert_eq!(sealed.to_bytes(), bytes);
            }
        }
    }
}

fn events_ack(payload: &[u8]) {
    let Ok(ack) = serde_json::from_slice::<EventsAck>(payload) else {
        return;
    };
    let back: EventsAck =
        serde_json::from_str(&serde_json::to_string(&ack).expect("serializes")).expect("reparses");
    assert_eq!(back, ack);
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if b.len() % 2 != 0 {
        return None;
    }
    let nibble = |c: u8| char::from(c).to_digit(16).map(|d| d as u8);
    b.chunks(2)
        .map(|p| Some((nibble(p[0])? << 4) | nibble(p[1])?))
        .collect()
}
