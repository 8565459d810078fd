//! The orchestrator's sandbox lifecycle event: parsing, validation and the lifecycle label.

mod filter;

pub use filter::EventFilter;
use serde_json::{Map, Value};
use std::fmt;
use uuid::Uuid;

/// Why a payload is not a usable sandbox event.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EventError {
    /// The payload is not JSON, or not a JSON object.
    #[error("not a JSON object: {0}")]
    InvalidJson(String),
    /// A required field is absent or empty.
    #[error("missing required field `{0}`")]
    MissingField(&'static str),
    /// A field has the wrong type or an invalid value.
    #[error("invalid field `{field}`: {reason}")]
    InvalidField {
        /// The JSON key.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// What happened to the sandbox, from `type` (v2) or `event_category`/`event_label` (v1).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Lifecycle {
    /// `sandbox.lifecycle.created`
    Created,
    /// `sandbox.lifecycle.killed`
    Killed,
    /// `sandbox.lifecycle.paused`
    Paused,
    /// `sandbox.lifecycle.resumed`
    Resumed,
    /// `sandbox.lifecycle.updated`
    Updated,
    /// `sandbox.lifecycle.checkpointed`
    Checkpointed,
    /// A type this version does not know; kept as received.
    Unknown(String),
}

const TYPE_PREFIX: &str = "sandbox.lifecycle.";

impl Lifecycle {
    /// Parses a v2 `type` such as `sandbox.lifecycle.killed`.
    pub fn from_type(event_type: &str) -> Self {
        match event_type.strip_prefix(TYPE_PREFIX) {
            Some("created") => Self::Created,
            Some("killed") => Self::Killed,
            Some("paused") => Self::Paused,
            Some("resumed") => Self::Resumed,
            Some("updated") => Self::Updated,
            Some("checkpointed") => Self::Checkpointed,
            _ => Self::Unknown(event_type.to_owned()),
        }
    }

    /// Parses a v1 `event_label` such as `kill`.
    pub fn from_label(label: &str) -> Self {
        match label {
            "create" => Self::Created,
            "kill" => Self::Killed,
            "pause" => Self::Paused,
            "resume" => Self::Resumed,
            "update" => Self::Updated,
            "checkpoint" => Self::Checkpointed,
            other => Self::Unknown(format!("{TYPE_PREFIX}{other}")),
        }
    }

    /// Reads a name as users write it: a label (`kill`) or E2B's full type
    /// (`sandbox.lifecycle.killed`, as E2B's webhook registration takes it). A well-formed type
    /// this version does not know is accepted as [`Lifecycle::Unknown`]; anything else is an error.
    pub fn from_name(name: &str) -> Result<Self, String> {
        match name.strip_prefix(TYPE_PREFIX) {
            Some(suffix)
                if !suffix.is_empty()
                    && suffix.chars().all(|c| c.is_ascii_lowercase() || c == '_') =>
            {
                Ok(Self::from_type(name))
            }
            Some(_) => Err(format!("{name:?} is not a sandbox.lifecycle.<name> type")),
            None => match Self::from_label(name) {
                Self::Unknown(_) => Err(format!(
                    "unknown event {name:?}; use labels (create,kill,pause,resume,update,checkpoint) or types (sandbox.lifecycle.created, …)"
                )),
                known => Ok(known),
            },
        }
    }

    /// The lifecycle label used by the `x-e2b-signature` payload and event filters.
    pub fn label(&self) -> &str {
        match self {
            Self::Created => "create",
            Self::Killed => "kill",
            Self::Paused => "pause",
            Self::Resumed => "resume",
            Self::Updated => "update",
            Self::Checkpointed => "checkpoint",
            Self::Unknown(t) => t.rsplit('.').next().unwrap_or(t),
        }
    }

    /// The v2 event type string.
    pub fn event_type(&self) -> String {
        match self {
            Self::Unknown(t) => t.clone(),
            known => {
                let suffix = match known {
                    Self::Created => "created",
                    Self::Killed => "killed",
                    Self::Paused => "paused",
                    Self::Resumed => "resumed",
                    Self::Updated => "updated",
                    Self::Checkpointed => "checkpointed",
                    Self::Unknown(_) => unreachable!(),
                };
                format!("{TYPE_PREFIX}{suffix}")
            }
        }
    }
}

impl fmt::Display for Lifecycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// A validated sandbox event; the original JSON object is kept, unknown fields included.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxEvent {
    /// What happened.
    pub lifecycle: Lifecycle,
    /// The object as received (key order preserved).
    raw: Map<String, Value>,
}

impl SandboxEvent {
    /// Parses and validates one event from its JSON bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, EventError> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| EventError::InvalidJson(e.to_string()))?;
        Self::from_value(value)
    }

    /// Validates an already-parsed JSON value.
    pub fn from_value(value: Value) -> Result<Self, EventError> {
        let Value::Object(raw) = value else {
            return Err(EventError::InvalidJson(format!(
                "expected an object, got {}",
                json_kind(&value)
            )));
        };
        let id = required_str(&raw, "id")?;
        if id.is_empty() {
            return Err(EventError::MissingField("id"));
        }
        let sandbox_id = required_str(&raw, "sandbox_id")?;
        if sandbox_id.is_empty() {
            return Err(EventError::MissingField("sandbox_id"));
        }
        let team = required_str(&raw, "sandbox_team_id")?;
        Uuid::parse_str(team).map_err(|e| EventError::InvalidField {
            field: "sandbox_team_id",
            reason: format!("{team:?} is not a UUID ({e})"),
        })?;
        if let Some(ts) = optional_str(&raw, "timestamp")? {
            ts.parse::<jiff::Timestamp>()
                .map_err(|e| EventError::InvalidField {
                    field: "timestamp",
                    reason: format!("{ts:?} is not RFC 3339 ({e})"),
                })?;
        }
        if let Some(data) = raw.get("event_data")
            && !data.is_object()
            && !data.is_null()
        {
            return Err(EventError::InvalidField {
                field: "event_data",
                reason: format!("expected an object, got {}", json_kind(data)),
            });
        }
        let lifecycle = match optional_str(&raw, "type")? {
            Some(t) if !t.is_empty() => Lifecycle::from_type(t),
            _ => match optional_str(&raw, "event_label")? {
                Some(label) if !label.is_empty() => Lifecycle::from_label(label),
                _ => return Err(EventError::MissingField("type")),
            },
        };
        Ok(Self { lifecycle, raw })
    }

    /// Builds an event from its parts (used for synthesized and test events), shaped as the
    /// orchestrator marshals a v2 event (e2b-dev/infra `packages/shared/pkg/events/sandbox.go`):
    /// its key order, `event_category` and `event_label` empty, the five `sandbox_*` keys always
    /// there, `event_data` only when not empty.
    pub fn new(lifecycle: Lifecycle, mut fields: Map<String, Value>) -> Result<Self, EventError> {
        let mut raw = Map::new();
        let event_data = fields
            .remove("event_data")
            .filter(|data| data.as_object().is_some_and(|d| !d.is_empty()));
        move_key(&mut fields, &mut raw, "id");
        raw.insert("version".into(), Value::from("v2"));
        raw.insert("type".into(), Value::from(lifecycle.event_type()));
        move_key(&mut fields, &mut raw, "timestamp");
        raw.insert("event_category".into(), Value::from(""));
        raw.insert("event_label".into(), Value::from(""));
        if let Some(data) = event_data {
            raw.insert("event_data".into(), data);
        }
        for key in [
            "sandbox_id",
            "sandbox_execution_id",
            "sandbox_template_id",
            "sandbox_build_id",
            "sandbox_team_id",
        ] {
            let value = fields.remove(key).unwrap_or_else(|| Value::from(""));
            raw.insert(key.into(), value);
        }
        move_key(&mut fields, &mut raw, "events_ttl_days");
        raw.extend(fields);
        Self::from_value(Value::Object(raw))
    }

    /// The event id (unique per event).
    pub fn id(&self) -> &str {
        self.str_field("id").unwrap_or_default()
    }

    /// The sandbox this event is about.
    pub fn sandbox_id(&self) -> &str {
        self.str_field("sandbox_id").unwrap_or_default()
    }

    /// The team owning the sandbox.
    pub fn team_id(&self) -> &str {
        self.str_field("sandbox_team_id").unwrap_or_default()
    }

    /// A string field of the original object, if present.
    pub fn str_field(&self, key: &str) -> Option<&str> {
        self.raw.get(key).and_then(Value::as_str)
    }

    /// The event timestamp, when present and valid.
    pub fn timestamp(&self) -> Option<jiff::Timestamp> {
        self.str_field("timestamp")?.parse().ok()
    }

    /// `event_data`, when present.
    pub fn event_data(&self) -> Option<&Map<String, Value>> {
        self.raw.get("event_data").and_then(Value::as_object)
    }

    /// The original object.
    pub fn raw(&self) -> &Map<String, Value> {
        &self.raw
    }

    /// The original object as compact JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(&self.raw).expect("a JSON map always serializes")
    }
}

fn move_key(from: &mut Map<String, Value>, to: &mut Map<String, Value>, key: &str) {
    if let Some(value) = from.remove(key) {
        to.insert(key.into(), value);
    }
}

fn required_str<'a>(raw: &'a Map<String, Value>, key: &'static str) -> Result<&'a str, EventError> {
    optional_str(raw, key)?.ok_or(EventError::MissingField(key))
}

fn optional_str<'a>(
    raw: &'a Map<String, Value>,
    key: &'static str,
) -> Result<Option<&'a str>, EventError> {
    match raw.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(EventError::InvalidField {
            field: key,
            reason: format!("expected a string, got {}", json_kind(other)),
        }),
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Whether `team` (as events and `List` write it) is one of `teams`; every team is when `teams`
/// is empty (no team scope configured).
pub fn team_in_scope(teams: &[Uuid], team: &str) -> bool {
    teams.is_empty() || Uuid::parse_str(team).is_ok_and(|team| teams.contains(&team))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEAM: &str = "0b8b8a4e-6f4e-4c4a-9a57-3a2f5d3b1c2d";

    fn v2_killed() -> String {
        format!(
            r#"{{"id":"5f0c1c1e-7d1b-4b8e-9a3b-2c1d0e9f8a7b","version":"v2","type":"sandbox.lifecycle.killed","timestamp":"2025-10-15T12:00:00.123456789Z","event_category":"lifecycle","event_label":"kill","event_data":{{"sandbox_metadata":{{"user":"ü"}},"execution":{{"started_at":"2025-10-15T11:00:00Z","vcpu_count":2,"memory_mb":512,"execution_time":3600000}},"kill_reason":"timeout"}},"sandbox_id":"isb1x2y3","sandbox_execution_id":"exec-1","sandbox_template_id":"base","sandbox_build_id":"build-1","sandbox_team_id":"{TEAM}","events_ttl_days":7,"future_field":{{"a":1}}}}"#
        )
    }

    #[test]
    fn parses_v2_killed_with_execution_and_keeps_unknown_fields() {
        let event = SandboxEvent::parse(v2_killed().as_bytes()).unwrap();
        assert_eq!(event.lifecycle, Lifecycle::Killed);
        assert_eq!(event.lifecycle.label(), "kill");
        assert_eq!(event.sandbox_id(), "isb1x2y3");
        assert_eq!(event.team_id(), TEAM);
        let data = event.event_data().unwrap();
        assert_eq!(data["kill_reason"], "timeout");
        assert_eq!(data["execution"]["execution_time"], 3_600_000);
        assert_eq!(event.raw()["future_field"]["a"], 1);
        // Re-serialization keeps every key in the received order.
        let reparsed: Value = serde_json::from_slice(&event.to_json()).unwrap();
        let original: Value = serde_json::from_str(&v2_killed()).unwrap();
        assert_eq!(reparsed, original);
        let keys: Vec<_> = event.raw().keys().take(3).cloned().collect();
        assert_eq!(keys, ["id", "version", "type"]);
    }

    #[test]
    fn v1_events_map_from_category_and_label() {
        for (label, expected) in [
            ("create", Lifecycle::Created),
            ("kill", Lifecycle::Killed),
            ("pause", Lifecycle::Paused),
            ("resume", Lifecycle::Resumed),
            ("update", Lifecycle::Updated),
        ] {
            let json = format!(
                r#"{{"id":"e1","version":"v1","event_category":"lifecycle","event_label":"{label}","timestamp":"2025-10-15T12:00:00Z","sandbox_id":"s1","sandbox_team_id":"{TEAM}"}}"#
            );
            let event = SandboxEvent::parse(json.as_bytes()).unwrap();
            assert_eq!(event.lifecycle, expected, "label {label}");
            assert_eq!(event.lifecycle.label(), label);
        }
    }

    #[test]
    fn built_events_have_the_orchestrators_shape() {
        let mut fields = Map::new();
        fields.insert("sandbox_team_id".into(), TEAM.into());
        fields.insert("future".into(), 1.into());
        fields.insert("event_data".into(), serde_json::json!({}));
        fields.insert("sandbox_id".into(), "s1".into());
        fields.insert("id".into(), "e1".into());
        let event = SandboxEvent::new(Lifecycle::Paused, fields).unwrap();
        assert_eq!(
            String::from_utf8(event.to_json()).unwrap(),
            format!(
                r#"{{"id":"e1","version":"v2","type":"sandbox.lifecycle.paused","event_category":"","event_label":"","sandbox_id":"s1","sandbox_execution_id":"","sandbox_template_id":"","sandbox_build_id":"","sandbox_team_id":"{TEAM}","future":1}}"#
            )
        );
        assert_eq!(event.lifecycle, Lifecycle::Paused);
    }

    #[test]
    fn every_v2_type_maps_to_its_label() {
        for (suffix, label) in [
            ("created", "create"),
            ("killed", "kill"),
            ("paused", "pause"),
            ("resumed", "resume"),
            ("updated", "update"),
            ("checkpointed", "checkpoint"),
        ] {
            let lifecycle = Lifecycle::from_type(&format!("sandbox.lifecycle.{suffix}"));
            assert_eq!(lifecycle.label(), label);
            assert_eq!(
                lifecycle.event_type(),
                format!("sandbox.lifecycle.{suffix}")
            );
        }
    }

    #[test]
    fn unknown_type_is_kept_not_rejected() {
        let json = format!(
            r#"{{"id":"e1","version":"v2","type":"sandbox.lifecycle.migrated","sandbox_id":"s1","sandbox_team_id":"{TEAM}"}}"#
        );
        let event = SandboxEvent::parse(json.as_bytes()).unwrap();
        assert_eq!(
            event.lifecycle,
            Lifecycle::Unknown("sandbox.lifecycle.migrated".into())
        );
        assert_eq!(event.lifecycle.label(), "migrated");
        assert!(!EventFilter::default_labels().accepts(&event));
        assert!(EventFilter::parse("*").unwrap().accepts(&event));
        assert!(
            EventFilter::parse("sandbox.lifecycle.migrated")
                .unwrap()
                .accepts(&event),
            "a new type can be opted into by its full name"
        );
    }

    #[test]
    fn malformed_events_are_typed_errors() {
        assert!(matches!(
            SandboxEvent::parse(b"{not json"),
            Err(EventError::InvalidJson(_))
        ));
        assert!(matches!(
            SandboxEvent::parse(b"[1,2]"),
            Err(EventError::InvalidJson(_))
        ));
        let no_sandbox = format!(
            r#"{{"id":"e1","type":"sandbox.lifecycle.created","sandbox_team_id":"{TEAM}"}}"#
        );
        assert_eq!(
            SandboxEvent::parse(no_sandbox.as_bytes()),
            Err(EventError::MissingField("sandbox_id"))
        );
        let no_team = r#"{"id":"e1","type":"sandbox.lifecycle.created","sandbox_id":"s1"}"#;
        assert_eq!(
            SandboxEvent::parse(no_team.as_bytes()),
            Err(EventError::MissingField("sandbox_team_id"))
        );
        let bad_team = r#"{"id":"e1","type":"sandbox.lifecycle.created","sandbox_id":"s1","sandbox_team_id":"team_xyz"}"#;
        let err = SandboxEvent::parse(bad_team.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("sandbox_team_id"), "{err}");
        let no_kind = format!(r#"{{"id":"e1","sandbox_id":"s1","sandbox_team_id":"{TEAM}"}}"#);
        assert_eq!(
            SandboxEvent::parse(no_kind.as_bytes()),
            Err(EventError::MissingField("type"))
        );
        let bad_ts = format!(
            r#"{{"id":"e1","type":"sandbox.lifecycle.created","timestamp":"yesterday","sandbox_id":"s1","sandbox_team_id":"{TEAM}"}}"#
        );
        assert!(matches!(
            SandboxEvent::parse(bad_ts.as_bytes()),
            Err(EventError::InvalidField {
                field: "timestamp",
                ..
            })
        ));
    }
}
