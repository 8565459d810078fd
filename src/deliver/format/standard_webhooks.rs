//! `standard-webhooks`: the Standard Webhooks spec (Svix-compatible): `webhook-id`,
//! `webhook-timestamp` and `webhook-signature`, the event under `data`.

use super::object::{Object, Part};
use super::{Format, Signing};
use crate::deliver::sign::{self, SecretSet};
use crate::event::SandboxEvent;

/// The `standard-webhooks` format.
pub(super) struct StandardWebhooks;

impl Format for StandardWebhooks {
    fn body(&self, event: &SandboxEvent) -> Vec<u8> {
        standard_webhooks_body(event).to_json()
    }

    fn signature_headers(&self, signing: &Signing<'_>, body: &[u8]) -> Vec<(&'static str, String)> {
        vec![
            ("webhook-id", signing.message_id.to_owned()),
            ("webhook-timestamp", signing.timestamp.to_string()),
            ("webhook-signature", header(signing, body)),
        ]
    }

    fn signature_lines(&self, signing: &Signing<'_>, body: &[u8]) -> Vec<String> {
        vec![
            format!("webhook-id: {}", signing.message_id),
            format!("webhook-timestamp: {}", signing.timestamp),
            header(signing, body),
        ]
    }

    fn signature_header(&self) -> &'static str {
        "webhook-signature"
    }

    fn signs_id_and_timestamp(&self) -> bool {
        true
    }

    fn verify(
        &self,
        secrets: &SecretSet,
        body: &[u8],
        signature: &str,
        id_and_timestamp: Option<(&str, i64)>,
    ) -> bool {
        id_and_timestamp.is_some_and(|(id, ts)| {
            sign::verify_standard_webhooks(secrets, id, ts, body, signature)
        })
    }
}

fn header(signing: &Signing<'_>, body: &[u8]) -> String {
    sign::standard_webhooks_header(signing.secrets, signing.message_id, signing.timestamp, body)
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
