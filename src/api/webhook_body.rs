//! The body of a webhook registration or update, checked field by field so a refusal names the
//! field (E2B documents the fields in e2b-dev/docs `docs/sandbox/lifecycle-events-webhooks.mdx`).

use super::error::ApiError;
use serde_json::{Map, Value};
use url::Url;

/// The event types a webhook may subscribe to (E2B's list, full names).
pub const EVENT_TYPES: &[&str] = &[
    "sandbox.lifecycle.created",
    "sandbox.lifecycle.killed",
    "sandbox.lifecycle.updated",
    "sandbox.lifecycle.paused",
    "sandbox.lifecycle.resumed",
    "sandbox.lifecycle.checkpointed",
];
/// Shorter signature secrets are refused: the secret is all that proves a delivery is ours.
pub const MIN_SECRET_LENGTH: usize = 16;
const MAX_SECRET_LENGTH: usize = 512;
const MAX_NAME_LENGTH: usize = 256;
const MAX_URL_LENGTH: usize = 2048;

/// Fields as sent; `None` when absent. No `Debug`: it holds the secret.
#[derive(Default)]
pub struct WebhookFields {
    pub name: Option<String>,
    pub url: Option<Url>,
    pub enabled: Option<bool>,
    pub events: Option<Vec<String>>,
    pub signature_secret: Option<String>,
}

impl WebhookFields {
    /// Reads and checks every known field of `body`; unknown fields are ignored.
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| ApiError::Body(e.to_string()))?;
        let Value::Object(map) = value else {
            return Err(ApiError::Body("found another JSON value".into()));
        };
        Ok(Self {
            name: string(&map, "name")?.map(check_name).transpose()?,
            url: string(&map, "url")?.map(check_url).transpose()?,
            enabled: match map.get("enabled") {
                None | Some(Value::Null) => None,
                Some(Value::Bool(b)) => Some(*b),
                Some(_) => return Err(ApiError::invalid("enabled", "must be true or false")),
            },
            events: match map.get("events") {
                None | Some(Value::Null) => None,
                Some(value) => Some(check_events(value)?),
            },
            signature_secret: string(&map, "signatureSecret")?
                .map(check_secret)
                .transpose()?,
        })
    }

    /// Whether no known field was given.
    pub fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.url.is_none()
            && self.enabled.is_none()
            && self.events.is_none()
            && self.signature_secret.is_none()
    }
}

/// `field` of a registration, which must be present.
pub fn required<T>(value: Option<T>, field: &'static str) -> Result<T, ApiError> {
    value.ok_or_else(|| ApiError::invalid(field, "is required"))
}

fn string(map: &Map<String, Value>, field: &'static str) -> Result<Option<String>, ApiError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::invalid(field, "must be a string")),
    }
}

fn check_name(name: String) -> Result<String, ApiError> {
    let name = name.trim().to_owned();
    if name.is_empty() || name.chars().count() > MAX_NAME_LENGTH {
        return Err(ApiError::invalid(
            "name",
            format!("must be 1 to {MAX_NAME_LENGTH} characters"),
        ));
    }
    Ok(name)
}

fn check_url(raw: String) -> Result<Url, ApiError> {
    if raw.len() > MAX_URL_LENGTH {
        return Err(ApiError::invalid(
            "url",
            format!("must be at most {MAX_URL_LENGTH} characters"),
        ));
    }
    let url = Url::parse(raw.trim())
        .map_err(|e| ApiError::invalid("url", format!("is not a valid URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ApiError::invalid(
            "url",
            "must start with https:// or http://",
        ));
    }
    if url.host().is_none() {
        return Err(ApiError::invalid("url", "has no host"));
    }
    Ok(url)
}

fn check_events(value: &Value) -> Result<Vec<String>, ApiError> {
    let Value::Array(items) = value else {
        return Err(ApiError::invalid(
            "events",
            "must be an array of event types",
        ));
    };
    if items.is_empty() {
        return Err(ApiError::invalid(
            "events",
            "must name at least one event type",
        ));
    }
    let mut events = Vec::new();
    for item in items {
        let known = item.as_str().filter(|name| EVENT_TYPES.contains(name));
        let Some(name) = known else {
            return Err(ApiError::invalid(
                "events",
                format!("unknown event type {item}; use {}", EVENT_TYPES.join(", ")),
            ));
        };
        if !events.iter().any(|e| e == name) {
            events.push(name.to_owned());
        }
    }
    Ok(events)
}

fn check_secret(secret: String) -> Result<String, ApiError> {
    let length = secret.chars().count();
    if length < MIN_SECRET_LENGTH {
        return Err(ApiError::invalid(
            "signatureSecret",
            format!("must be at least {MIN_SECRET_LENGTH} characters"),
        ));
    }
    if length > MAX_SECRET_LENGTH {
        return Err(ApiError::invalid(
            "signatureSecret",
            format!("must be at most {MAX_SECRET_LENGTH} characters"),
        ));
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(body: &str) -> String {
        match WebhookFields::parse(body.as_bytes()) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("accepted {body}"),
        }
    }

    #[test]
    fn each_bad_field_is_named() {
        assert!(refusal(r#"{"url": "ftp://example.com/"}"#).starts_with("url:"));
        assert!(refusal(r#"{"url": "not a url"}"#).starts_with("url:"));
        assert!(refusal(r#"{"events": ["sandbox.lifecycle.exploded"]}"#).starts_with("events:"));
        assert!(refusal(r#"{"events": ["kill"]}"#).starts_with("events:"));
        assert!(refusal(r#"{"events": []}"#).starts_with("events:"));
        assert!(refusal(r#"{"signatureSecret": "short"}"#).starts_with("signatureSecret:"));
        assert!(refusal(r#"{"enabled": "yes"}"#).starts_with("enabled:"));
        assert!(refusal(r#"{"name": "  "}"#).starts_with("name:"));
        assert!(refusal(r#"[1]"#).contains("JSON object"));
    }

    #[test]
    fn a_full_registration_is_read_as_sent() {
        let fields = WebhookFields::parse(
            br#"{"name": " hook ", "url": "https://example.com/h", "enabled": false,
                 "events": ["sandbox.lifecycle.killed", "sandbox.lifecycle.killed"],
                 "signatureSecret": "0123456789abcdef", "extra": 1}"#,
        )
        .unwrap();
        assert_eq!(fields.name.as_deref(), Some("hook"));
        assert_eq!(fields.url.unwrap().as_str(), "https://example.com/h");
        assert_eq!(fields.enabled, Some(false));
        assert_eq!(fields.events.unwrap(), vec!["sandbox.lifecycle.killed"]);
        assert!(WebhookFields::parse(b"{}").unwrap().is_empty());
    }
}
