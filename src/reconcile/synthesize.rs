//! Synthesized events: what the orchestrator would have sent for a difference reconciliation
//! found.

use super::orchestrator::ListedSandbox;
use super::plan::Finding;
use crate::event::{EventError, Lifecycle, SandboxEvent};
use serde_json::{Map, Value, json};
use uuid::Uuid;

/// A sandbox as last listed, and when.
#[derive(Debug, Clone)]
pub(super) struct Seen {
    pub(super) sandbox: ListedSandbox,
    pub(super) at_ms: i64,
}

/// The event the orchestrator would have sent (`sandboxes.go` in e2b-dev/infra's orchestrator),
/// marked `"synthetic": true`: a create or resume carries the sandbox's metadata, a kill its
/// `kill_reason` and, when the sandbox was listed before it went, the `execution` block of its
/// last listing (`execution_time` up to when it was last seen running).
pub(super) fn synthesize(
    finding: &Finding,
    last_seen: Option<&Seen>,
) -> Result<SandboxEvent, EventError> {
    let mut fields = Map::new();
    fields.insert("id".into(), Value::from(Uuid::new_v4().to_string()));
    fields.insert(
        "timestamp".into(),
        Value::from(jiff::Timestamp::now().to_string()),
    );
    let mut data = Map::new();
    let (lifecycle, sandbox) = match finding {
        Finding::Missed { lifecycle, sandbox } => {
            if !sandbox.metadata.is_empty() {
                data.insert("sandbox_metadata".into(), json!(sandbox.metadata));
            }
            (lifecycle.clone(), Some(sandbox))
        }
        Finding::Gone { record, reason } => {
            // The last listing of this very execution, if it was seen.
            let seen = last_seen.filter(|seen| {
                record
                    .execution_id
                    .as_deref()
                    .is_none_or(|execution| execution == seen.sandbox.execution_id)
            });
            let listed = seen.map(|seen| &seen.sandbox);
            fields.insert("sandbox_id".into(), Value::from(record.sandbox_id.as_str()));
            // What the events said wins; the last listing fills the rest.
            if let Some(execution) = &record.execution_id {
                fields.insert(
                    "sandbox_execution_id".into(),
                    Value::from(execution.as_str()),
                );
            }
            if let Some(template) = &record.template_id {
                fields.insert("sandbox_template_id".into(), Value::from(template.as_str()));
            }
            fields.insert(
                "sandbox_team_id".into(),
                Value::from(record.team_id.as_str()),
            );
            if let Some(seen) = seen
                && let Some(started_at) = seen.sandbox.started_at
            {
                data.insert(
                    "execution".into(),
                    json!({
                        // Go's time.RFC3339: whole seconds, UTC.
                        "started_at": started_at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
                        "vcpu_count": seen.sandbox.vcpu,
                        "memory_mb": seen.sandbox.ram_mb,
                        "execution_time": (seen.at_ms - started_at.as_millisecond()).max(0),
                    }),
                );
            }
            data.insert("kill_reason".into(), Value::from(reason.as_str()));
            (Lifecycle::Killed, listed)
        }
    };
    if let Some(sandbox) = sandbox {
        for (key, value) in [
            ("sandbox_id", &sandbox.sandbox_id),
            ("sandbox_execution_id", &sandbox.execution_id),
            ("sandbox_template_id", &sandbox.template_id),
            ("sandbox_build_id", &sandbox.build_id),
            ("sandbox_team_id", &sandbox.team_id),
        ] {
            fields
                .entry(key)
                .or_insert_with(|| Value::from(value.as_str()));
        }
        if sandbox.events_ttl_days != 0 {
            fields.insert(
                "events_ttl_days".into(),
                Value::from(sandbox.events_ttl_days),
            );
        }
    }
    data.insert("synthetic".into(), Value::Bool(true));
    fields.insert("event_data".into(), Value::Object(data));
    SandboxEvent::new(lifecycle, fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::{SandboxRecord, SandboxState};
    use crate::reconcile::plan::KillReason;

    const TEAM: &str = "0b8b8a4e-6f4e-4c4a-9a57-3a2f5d3b1c2d";

    fn listed() -> ListedSandbox {
        ListedSandbox {
            sandbox_id: "s1".into(),
            team_id: TEAM.into(),
            execution_id: "e1".into(),
            template_id: "base".into(),
            build_id: "b1".into(),
            metadata: [("user".to_owned(), "ada".to_owned())].into(),
            started_at: Some(jiff::Timestamp::from_second(1_700_000_000).unwrap()),
            vcpu: 2,
            ram_mb: 512,
            events_ttl_days: 7,
        }
    }

    #[test]
    fn a_synthesized_create_is_shaped_like_the_orchestrators() {
        let create = synthesize(
            &Finding::Missed {
                lifecycle: Lifecycle::Created,
                sandbox: listed(),
            },
            None,
        )
        .unwrap();
        let raw = create.raw();
        let keys: Vec<&str> = raw.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
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
                "events_ttl_days"
            ]
        );
        assert_eq!(raw["type"], "sandbox.lifecycle.created");
        assert_eq!(raw["version"], "v2");
        assert_eq!(
            (raw["event_category"].as_str(), raw["event_label"].as_str()),
            (Some(""), Some(""))
        );
        assert_eq!(raw["sandbox_build_id"], "b1");
        assert_eq!(raw["events_ttl_days"], 7);
        assert_eq!(
            create.event_data().unwrap(),
            json!({"sandbox_metadata": {"user": "ada"}, "synthetic": true})
                .as_object()
                .unwrap()
        );
        assert!(Uuid::parse_str(create.id()).is_ok());
        let age =
            jiff::Timestamp::now().as_millisecond() - create.timestamp().unwrap().as_millisecond();
        assert!((0..5_000).contains(&age));
    }

    fn record(execution: &str) -> SandboxRecord {
        SandboxRecord {
            sandbox_id: "s1".into(),
            state: SandboxState::Running,
            team_id: TEAM.into(),
            template_id: Some("base".into()),
            execution_id: Some(execution.into()),
            updated_at_ms: 0,
        }
    }

    #[test]
    fn a_synthesized_kill_carries_the_execution_block_of_its_last_listing() {
        let seen = Seen {
            sandbox: listed(),
            at_ms: 1_700_000_090_500,
        };
        let kill = synthesize(
            &Finding::Gone {
                record: record("e1"),
                reason: KillReason::OrchestratorLost,
            },
            Some(&seen),
        )
        .unwrap();
        assert_eq!(kill.lifecycle, Lifecycle::Killed);
        assert_eq!(kill.raw()["event_label"], "");
        assert_eq!(kill.raw()["sandbox_execution_id"], "e1");
        assert_eq!(kill.raw()["sandbox_build_id"], "b1");
        assert_eq!(
            kill.event_data().unwrap(),
            json!({
                "execution": {"started_at": "2023-11-14T22:13:20Z", "vcpu_count": 2, "memory_mb": 512, "execution_time": 90_500},
                "kill_reason": "orchestrator_lost",
                "synthetic": true
            })
            .as_object()
            .unwrap()
        );

        // A listing of an earlier execution says nothing about this one.
        let other = synthesize(
            &Finding::Gone {
                record: record("e2"),
                reason: KillReason::Vanished,
            },
            Some(&seen),
        )
        .unwrap();
        assert_eq!(
            other.event_data().unwrap(),
            json!({"kill_reason": "vanished", "synthetic": true})
                .as_object()
                .unwrap()
        );
        assert_eq!(other.raw()["sandbox_execution_id"], "e2");
        assert_eq!(other.raw()["sandbox_build_id"], "");
        assert_ne!(kill.id(), other.id());
    }
}
