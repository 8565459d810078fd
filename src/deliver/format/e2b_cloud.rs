//! The `e2b-cloud` body: the event as E2B Cloud's webhooks carry it, bytes included.
//!
//! E2B Cloud reads the orchestrator's event into its Go struct, migrates it, and marshals it
//! again with Go's `encoding/json`. So the body has the struct's key order, `event_data` keys
//! sorted at every level (Go marshals maps sorted), and `<`, `>`, `&`, U+2028 and U+2029 inside
//! strings escaped as `\u003c` and so on (Go's default HTML-safe escaping). One deliberate
//! difference: keys the struct does not know are passed on after its own, where E2B's round trip
//! would drop them — a newer orchestrator's fields reach the receiver.

use super::{Format, Signing};
use crate::deliver::sign::{self, SecretSet};
use crate::event::{Lifecycle, SandboxEvent};
use serde_json::{Map, Value};
use std::io;

/// The `e2b-cloud` format: `e2b-webhook-id`, `e2b-signature-version: v1` and `e2b-signature`,
/// SHA-256(secret ‖ body) in the endpoint's base64 encoding.
pub(super) struct E2bCloud;

impl Format for E2bCloud {
    fn body(&self, event: &SandboxEvent) -> Vec<u8> {
        go_json(&payload(event))
    }

    fn signature_headers(&self, signing: &Signing<'_>, body: &[u8]) -> Vec<(&'static str, String)> {
        vec![
            ("e2b-webhook-id", signing.webhook_id.to_string()),
            ("e2b-signature-version", "v1".to_owned()),
            ("e2b-signature", signature(signing, body)),
        ]
    }

    fn signature_lines(&self, signing: &Signing<'_>, body: &[u8]) -> Vec<String> {
        vec![signature(signing, body)]
    }

    fn signature_header(&self) -> &'static str {
        "e2b-signature"
    }

    fn signs_id_and_timestamp(&self) -> bool {
        false
    }

    fn verify(
        &self,
        secrets: &SecretSet,
        body: &[u8],
        signature: &str,
        _: Option<(&str, i64)>,
    ) -> bool {
        sign::verify_e2b_cloud(secrets, body, signature)
    }
}

fn signature(signing: &Signing<'_>, body: &[u8]) -> String {
    sign::e2b_cloud_signature(signing.secrets.primary(), body, signing.signature_encoding)
}

/// The keys of the orchestrator's event, in its order (e2b-dev/infra
/// `packages/shared/pkg/events/sandbox.go`).
const ORCHESTRATOR_KEYS: [&str; 13] = [
    "id",
    "version",
    "type",
    "timestamp",
    "event_category",
    "event_label",
    "event_data",
    "sandbox_id",
    "sandbox_execution_id",
    "sandbox_template_id",
    "sandbox_build_id",
    "sandbox_team_id",
    "events_ttl_days",
];

/// What E2B Cloud's webhooks carry (e2b-dev/docs PR #197, e2b-dev/dashboard PR #324, e2b-dev/E2B
/// issue #1103): the orchestrator's event, snake_case, in its key order, after E2B's
/// `LegacySandboxEventMigrationMapping` (`migration.go`) — a missing version reads `v1`, a v1
/// event gets its `type` from category and label, a v2 event gets `event_category` and
/// `event_label` back-filled from its type (none for `checkpointed`). `event_data` is left out
/// when empty (Go's `omitempty`), the five `sandbox_*` keys are always there, unknown keys follow.
fn payload(event: &SandboxEvent) -> Value {
    let raw = event.raw();
    let text = |key: &str| raw.get(key).and_then(Value::as_str).unwrap_or_default();
    let version = match text("version") {
        "" => "v1",
        v => v,
    };
    let event_type = match text("type") {
        "" => event.lifecycle.event_type(),
        t => t.to_owned(),
    };
    let backfilled = version == "v2"
        && !matches!(
            event.lifecycle,
            Lifecycle::Checkpointed | Lifecycle::Unknown(_)
        );
    let (category, label) = if backfilled {
        ("lifecycle", event.lifecycle.label())
    } else {
        (text("event_category"), text("event_label"))
    };
    let mut out = Map::new();
    out.insert("id".into(), Value::from(text("id")));
    out.insert("version".into(), Value::from(version));
    out.insert("type".into(), Value::from(event_type));
    if let Some(timestamp) = raw.get("timestamp").filter(|t| !t.is_null()) {
        out.insert("timestamp".into(), timestamp.clone());
    }
    out.insert("event_category".into(), Value::from(category));
    out.insert("event_label".into(), Value::from(label));
    if let Some(data) = event.event_data().filter(|d| !d.is_empty()) {
        out.insert("event_data".into(), sorted(&Value::Object(data.clone())));
    }
    for key in [
        "sandbox_id",
        "sandbox_execution_id",
        "sandbox_template_id",
        "sandbox_build_id",
        "sandbox_team_id",
    ] {
        out.insert(key.into(), Value::from(text(key)));
    }
    if let Some(ttl) = raw
        .get("events_ttl_days")
        .filter(|t| !t.is_null() && t.as_i64() != Some(0))
    {
        out.insert("events_ttl_days".into(), ttl.clone());
    }
    for (key, value) in raw {
        if !ORCHESTRATOR_KEYS.contains(&key.as_str()) {
            out.insert(key.clone(), value.clone());
        }
    }
    Value::Object(out)
}

/// `value` with every object's keys sorted, as Go marshals a `map[string]any`.
fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), sorted(&map[k])))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// Compact JSON with Go's string escaping.
fn go_json(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, GoEscaping);
    serde::Serialize::serialize(value, &mut serializer).expect("a JSON value always serializes");
    out
}

/// serde_json's compact output, plus the escapes Go's `encoding/json` adds by default.
struct GoEscaping;

impl serde_json::ser::Formatter for GoEscaping {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            let escape = match c {
                '<' => "\\u003c",
                '>' => "\\u003e",
                '&' => "\\u0026",
                '\u{2028}' => "\\u2028",
                '\u{2029}' => "\\u2029",
                _ => continue,
            };
            writer.write_all(&fragment.as_bytes()[start..i])?;
            writer.write_all(escape.as_bytes())?;
            start = i + c.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_as_go_escapes_them() {
        let value = serde_json::json!({"m": "a<b>&c\u{2028}\u{2029}\"ü\n"});
        // What Go's json.Marshal writes for the same map.
        assert_eq!(
            String::from_utf8(go_json(&value)).unwrap(),
            r#"{"m":"a\u003cb\u003e\u0026c\u2028\u2029\"ü\n"}"#
        );
    }

    #[test]
    fn event_data_is_sorted_at_every_level() {
        let event = SandboxEvent::parse(br#"{"id":"e","version":"v2","type":"sandbox.lifecycle.killed","event_data":{"kill_reason":"timeout","execution":{"vcpu_count":2,"started_at":"x","memory_mb":512,"execution_time":1},"sandbox_metadata":{"z":"1","a":"2"}},"sandbox_id":"s","sandbox_team_id":"0b8b8a4e-6f4e-4c4a-9a57-3a2f5d3b1c2d"}"#).unwrap();
        let text = String::from_utf8(E2bCloud.body(&event)).unwrap();
        assert!(
            text.contains(r#""event_data":{"execution":{"execution_time":1,"memory_mb":512,"started_at":"x","vcpu_count":2},"kill_reason":"timeout","sandbox_metadata":{"a":"2","z":"1"}}"#),
            "{text}"
        );
    }
}
