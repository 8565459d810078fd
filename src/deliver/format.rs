//! The wire formats: body bytes and headers for one delivery attempt, and how a receiver checks
//! them. Each format is one file implementing [`Format`], registered by one line below.

mod e2b_cloud;
mod object;
mod standard_webhooks;
mod x_e2b_signature;

use crate::deliver::sign::{SecretSet, SignatureEncoding};
use crate::event::SandboxEvent;
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

/// One wire format: how a delivery's body is shaped and signed, and how a receiver checks it.
pub trait Format: Sync {
    /// The body bytes of `event`.
    fn body(&self, event: &SandboxEvent) -> Vec<u8>;
    /// The headers that sign `body`, sent after the common ones.
    fn signature_headers(&self, signing: &Signing<'_>, body: &[u8]) -> Vec<(&'static str, String)>;
    /// What `webhook sign` prints for `body`: what a sender sets, the signature last.
    fn signature_lines(&self, signing: &Signing<'_>, body: &[u8]) -> Vec<String>;
    /// The request header carrying the signature.
    fn signature_header(&self) -> &'static str;
    /// Whether the signature also covers `webhook-id` and `webhook-timestamp`.
    fn signs_id_and_timestamp(&self) -> bool;
    /// Whether `signature` signs `body` (and the id and timestamp, when the format signs them)
    /// with one of `secrets`.
    fn verify(
        &self,
        secrets: &SecretSet,
        body: &[u8],
        signature: &str,
        id_and_timestamp: Option<(&str, i64)>,
    ) -> bool;
}

/// What a signature is made from, besides the body.
pub struct Signing<'a> {
    /// The active secrets; the first signs where a format sends one signature.
    pub secrets: &'a SecretSet,
    /// `e2b-webhook-id` (e2b-cloud).
    pub webhook_id: Uuid,
    /// How `e2b-signature` is written (e2b-cloud).
    pub signature_encoding: SignatureEncoding,
    /// `webhook-id` (standard-webhooks).
    pub message_id: &'a str,
    /// `webhook-timestamp`, Unix seconds (standard-webhooks).
    pub timestamp: i64,
}

/// Declares [`WireFormat`] from one line per format: the variant, its configuration name and the
/// [`Format`] that implements it. The list, the names and the dispatch are all made from it, so a
/// format cannot be half-registered.
macro_rules! wire_formats {
    ($($(#[$attr:meta])* $variant:ident = $name:literal => $format:path,)+) => {
        /// How deliveries are shaped and signed (`WEBHOOK_FORMAT`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
        pub enum WireFormat {
            $($(#[$attr])* $variant,)+
        }

        impl WireFormat {
            /// Every format, by name.
            pub const ALL: [(&'static str, WireFormat); [$($name),+].len()] =
                [$(($name, WireFormat::$variant)),+];

            /// The configuration name of this format.
            pub fn name(self) -> &'static str {
                match self {
                    $(WireFormat::$variant => $name,)+
                }
            }

            /// How this format shapes, signs and checks a delivery.
            pub fn definition(self) -> &'static dyn Format {
                match self {
                    $(WireFormat::$variant => &$format,)+
                }
            }
        }
    };
}

wire_formats! {
    /// Seed 000's contract: camelCase body, `X-E2B-Signature` hex HMAC-SHA256.
    #[default]
    XE2bSignature = "x-e2b-signature" => x_e2b_signature::XE2bSignature,
    /// E2B Cloud's webhooks: the event as E2B Cloud sends it, `e2b-signature` SHA-256(secret ‖ body).
    E2bCloud = "e2b-cloud" => e2b_cloud::E2bCloud,
    /// The Standard Webhooks spec (Svix-compatible).
    StandardWebhooks = "standard-webhooks" => standard_webhooks::StandardWebhooks,
}

impl FromStr for WireFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(s.trim()))
            .map(|(_, f)| *f)
            .ok_or_else(|| format!("unknown format {s:?}; use {}", names_in_prose()))
    }
}

/// "a, b or c": every format name, for messages.
fn names_in_prose() -> String {
    let names: Vec<&str> = WireFormat::ALL.iter().map(|(n, _)| *n).collect();
    match names.split_last() {
        Some((last, [])) => (*last).to_owned(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
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
    format.definition().body(event)
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
    headers.extend(format.definition().signature_headers(
        &Signing {
            secrets,
            webhook_id: endpoint.webhook_id,
            signature_encoding: endpoint.signature_encoding,
            message_id: event.id(),
            timestamp: now.as_second(),
        },
        &body,
    ));
    SignedRequest { body, headers }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deliver::sign;
    use serde_json::Value;

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
