//! The test event an operator sends to check an endpoint (`send-test`, the admin API): marked in
//! its metadata so a receiver can tell it from a real sandbox's.

use crate::event::{EventError, Lifecycle, SandboxEvent};

/// A fresh event of `lifecycle` for `sandbox_id` of `team_id`, tagged as sent by `origin`.
pub fn test_event(
    lifecycle: Lifecycle,
    sandbox_id: &str,
    team_id: &str,
    origin: &str,
) -> Result<SandboxEvent, EventError> {
    let mut fields = serde_json::Map::new();
    fields.insert("id".into(), uuid::Uuid::new_v4().to_string().into());
    fields.insert(
        "timestamp".into(),
        jiff::Timestamp::now().to_string().into(),
    );
    fields.insert(
        "event_data".into(),
        serde_json::json!({"sandbox_metadata": {"e2b-webhook-emitter": origin}}),
    );
    fields.insert("sandbox_id".into(), sandbox_id.into());
    fields.insert("sandbox_team_id".into(), team_id.into());
    SandboxEvent::new(lifecycle, fields)
}
