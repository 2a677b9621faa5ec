//! GS1 EPCIS 2.0 events for what a line did, in JSON-LD, each with its
//! CBV 2.0 event hash as `eventID` (`ni:///sha-256;<hex>?ver=CBV2.0`), so a
//! re-export gives the same ids and a repository deduplicates.
//!
//! Only the event shapes Serialine writes are built here, and the event
//! hash's pre-hash string is made for exactly those: `eventType`,
//! `eventTime` (UTC, milliseconds), `eventTimeZoneOffset`, `epcList` (each
//! `epc=` in lexical order), `action`, `bizStep` and `disposition` as CBV
//! URIs, `readPoint`/`bizLocation` ids (given already as GS1 Digital Link
//! URIs, the hash's canonical form), and `ilmd` (its fields in lexical
//! order), joined with nothing, hashed with SHA-256. The order and forms
//! follow the reference implementation, the `epcis-event-hash-generator`
//! package, against which `crates/serialine/tests/epcis.rs` checks every id.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub const CONTEXT: &str = "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld";

/// An `ObjectEvent`, or with `parent_id` an `AggregationEvent`, as
/// Serialine writes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Unix milliseconds; written in UTC with offset `+00:00`.
    pub event_time_ms: u64,
    /// An `AggregationEvent`'s `parentID` (the case's or pallet's EPC
    /// URI); `epcs` are then its `childEPCs`.
    pub parent_id: Option<String>,
    /// EPC URIs (`code::sgtin_uri`): `epcList`, or `childEPCs`.
    pub epcs: Vec<String>,
    /// `ADD` (commissioning, packing), `DELETE` (decommissioning,
    /// unpacking) or `OBSERVE` (sampling).
    pub action: &'static str,
    /// CBV bizStep, short form: `commissioning`, `decommissioning`, ...
    pub biz_step: &'static str,
    /// CBV disposition, short form: `active`, `inactive`, ...
    pub disposition: &'static str,
    /// GS1 Digital Link URIs (`https://id.gs1.org/414/{gln}[/254/{ext}]`).
    pub read_point: Option<String>,
    pub biz_location: Option<String>,
    /// `ilmd` (only with ADD): lot and expiry (`YYYY-MM-DD`).
    pub lot_and_expiry: Option<(String, String)>,
}

/// Unix milliseconds as `2026-12-06T08:00:00.123Z`.
pub fn utc_millis(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

impl Event {
    fn event_type(&self) -> &'static str {
        if self.parent_id.is_some() {
            "AggregationEvent"
        } else {
            "ObjectEvent"
        }
    }

    fn list_name(&self) -> &'static str {
        if self.parent_id.is_some() {
            "childEPCs"
        } else {
            "epcList"
        }
    }

    /// The CBV 2.0 pre-hash string.
    pub fn pre_hash(&self) -> String {
        let mut s = String::new();
        s.push_str(&format!("eventType={}", self.event_type()));
        s.push_str(&format!("eventTime={}", utc_millis(self.event_time_ms)));
        s.push_str("eventTimeZoneOffset=+00:00");
        if let Some(p) = &self.parent_id {
            s.push_str(&format!("parentID={p}"));
        }
        let mut epcs = self.epcs.clone();
        epcs.sort();
        s.push_str(self.list_name());
        for e in &epcs {
            s.push_str(&format!("epc={e}"));
        }
        s.push_str(&format!("action={}", self.action));
        s.push_str(&format!(
            "bizStep=https://ref.gs1.org/cbv/BizStep-{}",
            self.biz_step
        ));
        s.push_str(&format!(
            "disposition=https://ref.gs1.org/cbv/Disp-{}",
            self.disposition
        ));
        if let Some(r) = &self.read_point {
            s.push_str(&format!("readPointid={r}"));
        }
        if let Some(b) = &self.biz_location {
            s.push_str(&format!("bizLocationid={b}"));
        }
        if let Some((lot, expiry)) = &self.lot_and_expiry {
            s.push_str(&format!(
                "ilmdcbvmda:itemExpirationDate={expiry}cbvmda:lotNumber={lot}"
            ));
        }
        s
    }

    /// `ni:///sha-256;<hex>?ver=CBV2.0`.
    pub fn event_id(&self) -> String {
        let digest = Sha256::digest(self.pre_hash().as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("ni:///sha-256;{hex}?ver=CBV2.0")
    }

    /// The event as JSON-LD, `eventID` included.
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "type": self.event_type(),
            "eventID": self.event_id(),
            "eventTime": utc_millis(self.event_time_ms),
            "eventTimeZoneOffset": "+00:00",
            "action": self.action,
            "bizStep": self.biz_step,
            "disposition": self.disposition,
        });
        if let Some(p) = &self.parent_id {
            v["parentID"] = json!(p);
        }
        v[self.list_name()] = json!(self.epcs);
        if let Some(r) = &self.read_point {
            v["readPoint"] = json!({ "id": r });
        }
        if let Some(b) = &self.biz_location {
            v["bizLocation"] = json!({ "id": b });
        }
        if let Some((lot, expiry)) = &self.lot_and_expiry {
            v["ilmd"] = json!({
                "cbvmda:lotNumber": lot,
                "cbvmda:itemExpirationDate": expiry,
            });
        }
        v
    }
}

/// An `EPCISDocument` holding `events`.
pub fn document(events: Vec<Value>, creation_ms: u64) -> Value {
    json!({
        "@context": [CONTEXT],
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": utc_millis(creation_ms),
        "epcisBody": { "eventList": events },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_with_milliseconds() {
        assert_eq!(utc_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc_millis(1_796_544_000_123), "2026-12-06T08:00:00.123Z");
        assert_eq!(utc_millis(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    /// The id the reference implementation (`epcis-event-hash-generator`
    /// 1.9.3) computed for this event, read from its `-p` output.
    #[test]
    fn the_event_hash_matches_the_reference_implementation() {
        let e = Event {
            event_time_ms: 1_796_544_000_123,
            parent_id: None,
            epcs: vec![
                "https://id.gs1.org/01/09506000134352/21/ABC124".into(),
                "https://id.gs1.org/01/09506000134352/21/ABC123".into(),
            ],
            action: "ADD",
            biz_step: "commissioning",
            disposition: "active",
            read_point: Some("https://id.gs1.org/414/9506000134352/254/line-1".into()),
            biz_location: Some("https://id.gs1.org/414/9506000134352".into()),
            lot_and_expiry: Some(("LOT1".into(), "2027-12-31".into())),
        };
        assert_eq!(
            e.event_id(),
            "ni:///sha-256;d3b054741c0cc6709edcf7e7674fac6e8910c261e93b963dbc06229c3fb8d09e?ver=CBV2.0"
        );
    }
}
