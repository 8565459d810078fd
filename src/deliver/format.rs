//! The three wire formats: body bytes and headers for one delivery attempt.

mod e2b_cloud;

use crate::deliver::sign::{self, SecretSet, SignatureEncoding};
use crate::event::SandboxEvent;
use serde::Serialize;
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
    /// E2B Cloud's webhooks: the event as E2B Cloud sends it, `e2b-signature` SHA-256(secret ‖ body).
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

/// How an endpoint identifies itself on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointIdentity {
    /// The endpoint's stable name: part of `e2b-delivery-id`.
    pub id: String,
    /// `e2b-webhook-id` (e2b-cloud): a UUID, as E2B's webhook ids are.
    pub webhook_id: Uuid,
    /// How `e2b-signature` is written (e2b-cloud).
    pub signature_encoding: SignatureEncoding,
}

impl EndpointIdentity {
    /// An identity with the default webhook id for `id` and the documented signature encoding.
    pub fn new(id: impl Into<String>) -> Self {
        let id = id.into();
        Self {
            webhook_id: default_webhook_id(&id),
            id,
            signature_encoding: SignatureEncoding::default(),
        }
    }
}

/// The `e2b-webhook-id` of an endpoint that sets none: a UUID derived from its id, so it stays
/// the same across restarts and instances.
pub fn default_webhook_id(endpoint_id: &str) -> Uuid {
    Uuid::new_v5(
        &Uuid::NAMESPACE_URL,
        format!("e2b-webhook-emitter:webhook:{endpoint_id}").as_bytes(),
    )
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
    match format {
        WireFormat::XE2bSignature => to_json(&seed_000_body(event)),
        WireFormat::E2bCloud => e2b_cloud::body(event),
        WireFormat::StandardWebhooks => to_json(&standard_webhooks_body(event)),
    }
}

fn to_json(object: &Object<'_>) -> Vec<u8> {
    serde_json::to_vec(object).expect("a JSON object always serializes")
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
    endpoint: &EndpointIdentity,
    secrets: &SecretSet,
    attempt: u32,
    now: jiff::Timestamp,
) -> SignedRequest {
    let body = body(format, event);
    let mut headers = vec![
        ("content-type", "application/json".to_owned()),
        ("user-agent", USER_AGENT.to_owned()),
        ("e2b-delivery-id", delivery_id(&endpoint.id, event.id())),
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
            headers.push(("e2b-webhook-id", endpoint.webhook_id.to_string()));
            headers.push(("e2b-signature-version", "v1".to_owned()));
            headers.push((
                "e2b-signature",
                sign::e2b_cloud_signature(secrets.primary(), &body, endpoint.signature_encoding),
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
fn seed_000_body(event: &SandboxEvent) -> Object<'_> {
    let mut out = Object::default();
    out.push("eventCategory", Part::Text("sandbox".into()));
    out.push("eventLabel", Part::Text(event.lifecycle.label().into()));
    out.copy_fields(
        event,
        &[
            ("sandbox_id", "sandboxId"),
            ("sandbox_team_id", "sandboxTeamId"),
            ("timestamp", "timestamp"),
            ("id", "id"),
        ],
    );
    out.push("type", Part::Text(event.lifecycle.event_type().into()));
    out.copy_fields(
        event,
        &[
            ("sandbox_execution_id", "sandboxExecutionId"),
            ("sandbox_template_id", "sandboxTemplateId"),
            ("sandbox_build_id", "sandboxBuildId"),
            ("event_data", "eventData"),
        ],
    );
    out
}

/// The Standard Webhooks payload structure: `type`, `timestamp`, and the event as E2B shapes it
/// (snake_case, unknown fields included) under `data`.
fn standard_webhooks_body(event: &SandboxEvent) -> Object<'_> {
    let mut out = Object::default();
    out.push("type", Part::Text(event.lifecycle.event_type().into()));
    if let Some(ts) = event.raw().get("timestamp") {
        out.push("timestamp", Part::Json(ts));
    }
    out.push("data", Part::Map(event.raw()));
    out
}

/// A JSON object written from borrowed parts of the event, in order: rendering a body copies
/// none of the event's values. Keys are distinct (each body lists its own).
#[derive(Default)]
struct Object<'a>(Vec<(&'a str, Part<'a>)>);

enum Part<'a> {
    Text(std::borrow::Cow<'a, str>),
    Json(&'a Value),
    Map(&'a Map<String, Value>),
}

impl<'a> Object<'a> {
    fn push(&mut self, key: &'a str, part: Part<'a>) {
        self.0.push((key, part));
    }

    /// The event's fields `from`, as `to`, when present and not null.
    fn copy_fields(&mut self, event: &'a SandboxEvent, pairs: &[(&'a str, &'a str)]) {
        for (from, to) in pairs {
            if let Some(v) = event.raw().get(*from).filter(|v| !v.is_null()) {
                self.push(to, Part::Json(v));
            }
        }
    }
}

impl Serialize for Object<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(key, part)| (key, part)))
    }
}

impl Serialize for Part<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Part::Text(text) => serializer.serialize_str(text),
            Part::Json(value) => value.serialize(serializer),
            Part::Map(map) => map.serialize(serializer),
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
    fn e2b_cloud_body_is_the_migrated_event_in_the_orchestrators_key_order() {
        // A v1 event: type from category and label, the missing sandbox_* keys empty.
        let body = String::from_utf8(body(WireFormat::E2bCloud, &event())).unwrap();
        assert_eq!(
            body,
            r#"{"id":"ev-1","version":"v1","type":"sandbox.lifecycle.killed","timestamp":"2025-10-15T12:00:00Z","event_category":"lifecycle","event_label":"kill","sandbox_id":"test-123","sandbox_execution_id":"","sandbox_template_id":"","sandbox_build_id":"","sandbox_team_id":"0b8b8a4e-6f4e-4c4a-9a57-3a2f5d3b1c2d","extra":true}"#
        );
    }

    fn v2(event_type: &str, extra: &str) -> SandboxEvent {
        SandboxEvent::parse(format!(r#"{{"sandbox_team_id":"0b8b8a4e-6f4e-4c4a-9a57-3a2f5d3b1c2d","sandbox_id":"s","id":"e","version":"v2","type":"{event_type}","event_category":"","event_label":""{extra}}}"#).as_bytes()).unwrap()
    }

    #[test]
    fn e2b_cloud_back_fills_the_legacy_fields_of_v2_events_as_migration_go_does() {
        for (suffix, label) in [
            ("created", "create"),
            ("killed", "kill"),
            ("paused", "pause"),
            ("resumed", "resume"),
            ("updated", "update"),
        ] {
            let b: Value = serde_json::from_slice(&body(
                WireFormat::E2bCloud,
                &v2(&format!("sandbox.lifecycle.{suffix}"), ""),
            ))
            .unwrap();
            assert_eq!(
                (b["event_category"].as_str(), b["event_label"].as_str()),
                (Some("lifecycle"), Some(label))
            );
        }
        for unlabelled in [
            "sandbox.lifecycle.checkpointed",
            "sandbox.lifecycle.migrated",
        ] {
            let b: Value =
                serde_json::from_slice(&body(WireFormat::E2bCloud, &v2(unlabelled, ""))).unwrap();
            assert_eq!(
                (b["event_category"].as_str(), b["event_label"].as_str()),
                (Some(""), Some(""))
            );
            assert_eq!(b["type"], unlabelled);
        }
    }

    #[test]
    fn e2b_cloud_drops_empty_event_data_and_zero_ttl_like_go_omitempty() {
        let keys = |e: &SandboxEvent| -> Vec<String> {
            let b: Value = serde_json::from_slice(&body(WireFormat::E2bCloud, e)).unwrap();
            b.as_object().unwrap().keys().cloned().collect()
        };
        let empty = keys(&v2(
            "sandbox.lifecycle.created",
            r#","event_data":{},"events_ttl_days":0"#,
        ));
        assert!(
            !empty.contains(&"event_data".to_owned())
                && !empty.contains(&"events_ttl_days".to_owned()),
            "{empty:?}"
        );
        let full = keys(&v2(
            "sandbox.lifecycle.created",
            r#","future":1,"events_ttl_days":7,"event_data":{"sandbox_metadata":{"a":"b"}},"timestamp":"2025-10-15T12:00:00Z""#,
        ));
        assert_eq!(
            full,
            [
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
                "future"
            ]
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
                &EndpointIdentity::new("primary"),
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
    fn e2b_cloud_headers_carry_the_webhook_id_and_the_chosen_encoding() {
        let secrets = SecretSet::parse("s3cret-16").unwrap();
        let mut endpoint = EndpointIdentity::new("primary");
        assert_eq!(endpoint.webhook_id, default_webhook_id("primary"));
        assert_ne!(default_webhook_id("primary"), default_webhook_id("other"));
        endpoint.signature_encoding = SignatureEncoding::StandardPadded;
        let req = render(
            WireFormat::E2bCloud,
            &event(),
            &endpoint,
            &secrets,
            1,
            jiff::Timestamp::UNIX_EPOCH,
        );
        assert_eq!(
            req.header("e2b-webhook-id"),
            Some(endpoint.webhook_id.to_string().as_str())
        );
        assert_eq!(req.header("e2b-signature-version"), Some("v1"));
        let signature = req.header("e2b-signature").unwrap();
        assert!(signature.ends_with('='), "{signature}");
        assert!(sign::verify_e2b_cloud(&secrets, &req.body, signature));
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
