//! `x-e2b-signature`, seed 000's contract: camelCase body, `X-E2B-Signature` hex HMAC-SHA256.

use super::object::{Object, Part};
use super::{Format, Signing};
use crate::deliver::sign::{self, SecretSet};
use crate::event::SandboxEvent;

/// The `x-e2b-signature` format.
pub(super) struct XE2bSignature;

impl Format for XE2bSignature {
    fn body(&self, event: &SandboxEvent) -> Vec<u8> {
        seed_000_body(event).to_json()
    }

    fn signature_headers(&self, signing: &Signing<'_>, body: &[u8]) -> Vec<(&'static str, String)> {
        vec![(
            "x-e2b-signature",
            sign::x_e2b_signature(signing.secrets.primary(), body),
        )]
    }

    fn signature_lines(&self, signing: &Signing<'_>, body: &[u8]) -> Vec<String> {
        vec![sign::x_e2b_signature(signing.secrets.primary(), body)]
    }

    fn signature_header(&self) -> &'static str {
        "x-e2b-signature"
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
        sign::verify_x_e2b(secrets, body, signature)
    }
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
