//! The three wire formats: body bytes and headers for one delivery attempt.

use crate::deliver::sign::{self, SecretSet};
use crate::event::SandboxEvent;
use serde_json::{Map, Value};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

/// How deliveries are shaped and signed (`WEBHOOK_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WireFormat {
    /// Seed 000's contract: camelCase body, `X-E2B-Signature` hex HMAC-SHA256.
    #[default]
    XE2bSignature,
    /// E2B Cloud's webhooks: its documented payload, `e2b-signature` SHA-256(secret ‖ body).
    E2bCloud,
    /// The Standard Webhooks spec (Svix-compatible).
    StandardWebhooks,
}

impl WireFormat {
    /// Every format, by name.
    pub const ALL: [(&'static str, WireFormat); 3] = [
        ("x-e2b-signature", WireFormat::XE2bSignature),
        ("e2b-cloud", WireFormat::E2bCloud),
        ("standard-webhooks", WireFormat::StandardWebhooks),
    ];

    /// The configuration name of this format.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, f)| *f == self)
            .map(|(n, _)| *n)
            .expect("every format is listed")
    }
}

impl FromStr for WireFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(s.trim()))
            .map(|(_, f)| *f)
            .ok_or_else(|| {
                format!("unknown format {s:?}; use x-e2b-signature, e2b-cloud or standard-webhooks")
            })
    }
}

impl fmt::Display for WireFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The product token sent as `User-Agent`.
pub const USER_AGENT: &str = concat!("e2b-webhook-emitter/", env!("CARGO_PKG_VERSION"));

/// A fully rendered request: the exact body and every header to send with it.
#[derive(Debug, Clone, PartialEq)]
pub struct SignedRequest {
    /// The body bytes that were signed.
    pub body: Vec<u8>,
    /// Header names (lowercase) and values, in a stable order.
    pub headers: Vec<(&'static str, String)>,
}

impl SignedRequest {
    /// The value of a header, if set.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The body of an event in the given format.
pub fn body(format: WireFormat, event: &SandboxEvent) -> Vec<u8> {
    let value = match format {
        WireFormat::XE2bSignature => seed_000_body(event),
        WireFormat::E2bCloud => e2b_cloud_body(event),
        WireFormat::StandardWebhooks => standard_webhooks_body(event),
    };
    serde_json::to_vec(&value).expect("a JSON map always serializes")
}

/// The delivery id: stable for one event and one endpoint, so receivers can de-duplicate retries.
pub fn delivery_id(endpoint_id: &str, event_id: &str) -> String {
    Uuid::new_v5(
        &Uuid::NAMESPACE_URL,
        format!("e2b-webhook-emitter:{endpoint_id}:{event_id}").as_bytes(),
    )
    .to_string()
}

/// Renders and signs one delivery attempt.
pub fn render(
    format: WireFormat,
    event: &SandboxEvent,
    endpoint_id: &str,
    secrets: &SecretSet,
    attempt: u32,
    now: jiff::Timestamp,
) -> SignedRequest {
    let body = body(format, event);
    let mut headers = vec![
        ("content-type", "application/json".to_owned()),
        ("user-agent", USER_AGENT.to_owned()),
        ("e2b-delivery-id", delivery_id(endpoint_id, event.id())),
        ("e2b-delivery-attempt", attempt.to_string()),
    ];
    match format {
        WireFormat::XE2bSignature => {
            headers.push((
                "x-e2b-signature",
                sign::x_e2b_signature(secrets.primary(), &body),
            ));
        }
        WireFormat::E2bCloud => {
            headers.push(("e2b-webhook-id", endpoint_id.to_owned()));
            headers.push(("e2b-signature-version", "v1".to_owned()));
            headers.push((
                "e2b-signature",
                sign::e2b_cloud_signature(secrets.primary(), &body),
            ));
        }
        WireFormat::StandardWebhooks => {
            let ts = now.as_second();
            headers.push(("webhook-id", event.id().to_owned()));
            headers.push(("webhook-timestamp", ts.to_string()));
            headers.push((
                "webhook-signature",
                sign::standard_webhooks_header(secrets, event.id(), ts, &body),
            ));
        }
    }
    SignedRequest { body, headers }
}

/// Seed 000's keys first, then the rest of the event in camelCase; values as received.
fn seed_000_body(event: &SandboxEvent) -> Value {
    let mut out = Map::new();
    out.insert("eventCategory".into(), Value::from("sandbox"));
    out.insert("eventLabel".into(), Value::from(event.lifecycle.label()));
    copy_fields(
        event,
        &mut out,
        &[
            ("sandbox_id", "sandboxId"),
            ("sandbox_team_id", "sandboxTeamId"),
            ("timestamp", "timestamp"),
            ("id", "id"),
        ],
    );
    out.insert("type".into(), Value::from(event.lifecycle.event_type()));
    copy_fields(
        event,
        &mut out,
        &[
            ("sandbox_execution_id", "sandboxExecutionId"),
            ("sandbox_template_id", "sandboxTemplateId"),
            ("sandbox_build_id", "sandboxBuildId"),
            ("event_data", "eventData"),
        ],
    );
    Value::Object(out)
}

/// The payload of E2B Cloud's webhooks, keys as in its documentation (seed 002) and in the order
/// shown there: the verification examples there read `event.type` and `event.sandboxId`.
fn e2b_cloud_body(event: &SandboxEvent) -> Value {
    let mut out = Map::new();
    out.insert(
        "version".into(),
        event
            .raw()
            .get("version")
            .cloned()
            .unwrap_or_else(|| "v1".into()),
    );
    copy_fields(event, &mut out, &[("id", "id")]);
    out.insert("type".into(), Value::from(event.lifecycle.event_type()));
    copy_fields(
        event,
        &mut out,
        &[
            ("event_data", "eventData"),
            ("sandbox_build_id", "sandboxBuildId"),
            ("sandbox_execution_id", "sandboxExecutionId"),
            ("sandbox_id", "sandboxId"),
            ("sandbox_team_id", "sandboxTeamId"),
            ("sandbox_template_id", "sandboxTemplateId"),
            ("timestamp", "timestamp"),
        ],
    );
    Value::Object(out)
}

/// The Standard Webhooks payload structure: `type`, `timestamp`, and the event as E2B shapes it
/// (snake_case, unknown fields included) under `data`.
fn standard_webhooks_body(event: &SandboxEvent) -> Value {
    let mut out = Map::new();
    out.insert("type".into(), Value::from(event.lifecycle.event_type()));
    if let Some(ts) = event.raw().get("timestamp") {
        out.insert("timestamp".into(), ts.clone());
    }
    out.insert("data".into(), Value::Object(event.raw().clone()));
    Value::Object(out)
}

fn copy_fields(event: &SandboxEvent, out: &mut Map<String, Value>, pairs: &[(&str, &str)]) {
    for (from, to) in pairs {
        if let Some(v) = event.raw().get(*from).filter(|v| !v.is_null()) {
            out.insert((*to).into(), v.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> SandboxEvent {
        SandboxEvent::parse(br#"{"id":"ev-1","version":"v1","event_category":"lifecycle","event_label":"kill","timestamp":"2025-10-15T12:00:00Z","sandbox_id":"test-123","sandbox_team_id":"0b8b8a4e-6f4e-4c4a-9a57-3a2f5d3b1c2d","extra":true}"#).unwrap()
    }

    #[test]
    fn camel_case_body_starts_with_the_seed_keys_in_order() {
        let body = String::from_utf8(body(WireFormat::XE2bSignature, &event())).unwrap();
        assert_eq!(
            body,
            r#"{"eventCategory":"sandbox","eventLabel":"kill","sandboxId":"test-123","sandboxTeamId":"0b8b8a4e-6f4e-4c4a-9a57-3a2f5d3b1c2d","timestamp":"2025-10-15T12:00:00Z","id":"ev-1","type":"sandbox.lifecycle.killed"}"#
        );
    }

    #[test]
    fn e2b_cloud_body_has_the_documented_keys_in_order() {
        let body = String::from_utf8(body(WireFormat::E2bCloud, &event())).unwrap();
        assert_eq!(
            body,
            r#"{"version":"v1","id":"ev-1","type":"sandbox.lifecycle.killed","sandboxId":"test-123","sandboxTeamId":"0b8b8a4e-6f4e-4c4a-9a57-3a2f5d3b1c2d","timestamp":"2025-10-15T12:00:00Z"}"#
        );
    }

    #[test]
    fn standard_webhooks_body_wraps_the_whole_event() {
        let body: Value =
            serde_json::from_slice(&body(WireFormat::StandardWebhooks, &event())).unwrap();
        assert_eq!(body["type"], "sandbox.lifecycle.killed");
        assert_eq!(body["timestamp"], "2025-10-15T12:00:00Z");
        assert_eq!(body["data"]["extra"], true);
        assert_eq!(body["data"]["event_label"], "kill");
    }

    #[test]
    fn delivery_id_is_stable_per_event_and_endpoint() {
        assert_eq!(delivery_id("a", "ev-1"), delivery_id("a", "ev-1"));
        assert_ne!(delivery_id("a", "ev-1"), delivery_id("b", "ev-1"));
        assert_ne!(delivery_id("a", "ev-1"), delivery_id("a", "ev-2"));
    }

    #[test]
    fn common_headers_are_present_in_every_format() {
        let secrets = SecretSet::parse("s3cret").unwrap();
        for (_, format) in WireFormat::ALL {
            let req = render(
                format,
                &event(),
                "primary",
                &secrets,
                3,
                jiff::Timestamp::UNIX_EPOCH,
            );
            assert_eq!(req.header("content-type"), Some("application/json"));
            assert_eq!(req.header("e2b-delivery-attempt"), Some("3"));
            assert!(
                req.header("user-agent")
                    .unwrap()
                    .starts_with("e2b-webhook-emitter/")
            );
            assert_eq!(
                req.header("e2b-delivery-id"),
                Some(delivery_id("primary", "ev-1").as_str())
            );
        }
    }

    #[test]
    fn format_names_round_trip() {
        for (name, format) in WireFormat::ALL {
            assert_eq!(name.parse::<WireFormat>().unwrap(), format);
            assert_eq!(format.to_string(), name);
        }
        assert!("xml".parse::<WireFormat>().is_err());
    }
}
