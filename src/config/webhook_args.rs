//! Where and how to send, as flags: shared by `run`, `sign`, `verify`, `send-test` and `receive`.

use super::{ConfigError, parse_http_url};
use crate::deliver::format::{EndpointIdentity, WireFormat, default_webhook_id};
use crate::deliver::sign::SecretSet;
use url::Url;
use uuid::Uuid;

/// Where and how to send: shared by `run`, `sign`, `verify`, `send-test` and `receive`.
#[derive(Debug, Clone, clap::Args, Default)]
pub struct WebhookArgs {
    /// Endpoint receiving the webhooks (http:// or https://).
    #[arg(
        long,
        visible_alias = "url",
        env = "WEBHOOK_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub webhook_url: Option<String>,
    /// Shared signing secret; several, space-separated, during rotation (the first signs).
    #[arg(
        long,
        visible_alias = "secret",
        env = "WEBHOOK_SECRET",
        hide_env_values = true
    )]
    pub webhook_secret: Option<String>,
    /// Wire format: x-e2b-signature, e2b-cloud or standard-webhooks.
    #[arg(
        long,
        visible_alias = "format",
        env = "WEBHOOK_FORMAT",
        default_value = "x-e2b-signature"
    )]
    pub webhook_format: String,
    /// e2b-cloud: the `e2b-webhook-id` header, a UUID (default: derived from the endpoint id).
    #[arg(long, env = "WEBHOOK_ID", value_name = "UUID")]
    pub webhook_id: Option<String>,
    /// e2b-cloud: how `e2b-signature` is written: url-safe (as E2B documents), standard or standard-padded (as E2B Cloud was seen sending). Verification accepts all three.
    #[arg(
        long,
        env = "WEBHOOK_SIGNATURE_ENCODING",
        default_value = "url-safe",
        value_name = "ENCODING"
    )]
    pub webhook_signature_encoding: String,
}

impl WebhookArgs {
    /// How the endpoint `id` configured by these flags identifies itself.
    pub fn identity(&self, id: &str) -> Result<EndpointIdentity, ConfigError> {
        Ok(EndpointIdentity {
            id: id.to_owned(),
            webhook_id: match self.webhook_id.as_deref().filter(|w| !w.trim().is_empty()) {
                Some(raw) => parse_webhook_id(raw)
                    .map_err(|e| ConfigError::new("WEBHOOK_ID (--webhook-id)", e))?,
                None => default_webhook_id(id),
            },
            signature_encoding: self
                .webhook_signature_encoding
                .parse()
                .map_err(|e: String| {
                    ConfigError::new(
                        "WEBHOOK_SIGNATURE_ENCODING (--webhook-signature-encoding)",
                        e,
                    )
                })?,
        })
    }

    /// The validated format.
    pub fn format(&self) -> Result<WireFormat, ConfigError> {
        self.webhook_format
            .parse()
            .map_err(|e: String| ConfigError::new("WEBHOOK_FORMAT (--webhook-format)", e))
    }

    /// The validated secrets.
    pub fn secrets(&self) -> Result<SecretSet, ConfigError> {
        let setting = "WEBHOOK_SECRET (--webhook-secret)";
        let raw = self.webhook_secret.as_deref().ok_or_else(|| {
            ConfigError::new(
                setting,
                "is not set; pass --webhook-secret or set WEBHOOK_SECRET",
            )
        })?;
        SecretSet::parse(raw).map_err(|e| ConfigError::new(setting, e))
    }

    /// The validated URL.
    pub fn url(&self) -> Result<Url, ConfigError> {
        let setting = "WEBHOOK_URL (--webhook-url)";
        let raw = self.webhook_url.as_deref().ok_or_else(|| {
            ConfigError::new(setting, "is not set; pass --webhook-url or set WEBHOOK_URL")
        })?;
        parse_http_url(raw).map_err(|e| ConfigError::new(setting, e))
    }
}

/// An `e2b-webhook-id`: a UUID, as E2B's webhook ids are.
pub(super) fn parse_webhook_id(raw: &str) -> Result<Uuid, String> {
    Uuid::parse_str(raw.trim()).map_err(|_| {
        format!("{raw:?} is not a UUID (E2B's webhook ids are UUIDs; `uuidgen` makes one)")
    })
}
