//! Stream entries: each one's event (or why it is not one, kept as a dead letter) and where it
//! came from, and committing a batch of them to the outbox.

use super::{RedisConnection, RedisSourceError, RedisStreamSource, SOURCE, dead_letters, intake};
use crate::event::SandboxEvent;
use crate::outbox::{FromStream, MalformedInput, RawInput, StreamEntryRef};

impl RedisStreamSource {
    /// Commits a batch to the outbox, each event with its entry (malformed entries set aside).
    /// Nothing is acknowledged here: see [`super::sync`].
    pub(super) async fn commit(
        &self,
        conn: &mut RedisConnection,
        entries: Vec<StreamEntry>,
        generation: &str,
    ) -> Result<(), RedisSourceError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut events = Vec::with_capacity(entries.len());
        let mut malformed = Vec::new();
        let mut malformed_entries = Vec::new();
        for entry in entries {
            let reference = StreamEntryRef {
                id: entry.id.clone(),
                generation: generation.to_owned(),
            };
            let replay_to = entry.replay_to();
            let origin = entry.origin();
            match entry.decode() {
                Ok(event) => events.push((
                    event,
                    FromStream {
                        entry: reference,
                        replay_to,
                    },
                    origin,
                )),
                Err(input) => {
                    tracing::warn!(
                        stream_id = %input.position,
                        reason = %input.reason,
                        "setting aside a stream entry that is not a valid event (kept in the dead-letter store)"
                    );
                    malformed.push(input);
                    malformed_entries.push(reference);
                }
            }
        }
        // Anyone may create a `wh:<team>` key, and then the orchestrator publishes that team's
        // events too: with teams configured, others are acknowledged and counted, never kept.
        let decoded = events.len();
        let (kept, others): (Vec<_>, Vec<_>) = events
            .into_iter()
            .partition(|(event, _, _)| self.serves(event));
        let events = kept;
        let other_teams = decoded - events.len();
        if !others.is_empty() {
            let entries = others.into_iter().map(|(_, from, _)| from.entry).collect();
            self.outbox.acknowledge(entries).await?;
        }
        if other_teams > 0 {
            self.metrics.other_team_skipped(SOURCE, other_teams as u64);
            if !self
                .other_teams_seen
                .swap(true, std::sync::atomic::Ordering::Relaxed)
            {
                tracing::info!(
                    group = %self.config.group,
                    "the stream carries events of teams outside E2B_TEAM_IDS (another wh:<team> key exists); they are acknowledged and skipped, counted in other_team_events_total. An emitter serving those teams from this Redis needs a REDIS_GROUP of its own, or it loses what this one skips"
                );
            }
            tracing::debug!(
                count = other_teams,
                "skipped events of teams outside E2B_TEAM_IDS"
            );
        }
        // The view first, so it has every change before anything can be delivered and
        // acknowledged; but what was read reaches the outbox even when Redis fails meanwhile
        // (it may come back without its data), and the change is applied later.
        let changes = self.view_changes(&events).await?;
        let viewed = self.apply_view(conn, &changes).await;
        // In stream order, one append per run of entries from the same source.
        let mut events = events.into_iter().peekable();
        while let Some((event, from, origin)) = events.next() {
            let mut run = vec![(event, from)];
            while let Some((event, from, _)) = events.next_if(|(_, _, next)| *next == origin) {
                run.push((event, from));
            }
            let report = self.outbox.append_from_stream(origin, run).await?;
            if report.duplicates > 0 {
                tracing::debug!(
                    duplicates = report.duplicates,
                    "skipped events already in the outbox (entries read again after a restart)"
                );
            }
        }
        if !malformed.is_empty() {
            self.outbox.set_aside(malformed, malformed_entries).await?;
        }
        if let Err(error) = viewed {
            self.unapplied_view
                .lock()
                .expect("unapplied view changes")
                .extend(changes);
            return Err(error);
        }
        Ok(())
    }
}

/// One stream entry as read.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct StreamEntry {
    pub(super) id: String,
    /// Field/value pairs; `None` when the entry was deleted from the stream while pending.
    pub(super) fields: Option<Vec<(Vec<u8>, Vec<u8>)>>,
}

impl StreamEntry {
    /// The endpoint of a replayed dead letter (`dead-letters replay` adds the field).
    pub(super) fn replay_to(&self) -> Option<String> {
        let fields = self.fields.as_ref()?;
        let (_, endpoint) = fields
            .iter()
            .find(|(name, _)| name == dead_letters::REPLAY_FIELD)?;
        String::from_utf8(endpoint.clone()).ok()
    }

    /// Where the entry came from: the orchestrator (`redis`), or the emitter itself
    /// (`reconcile`, `backfill`: see [`super::intake`]).
    pub(super) fn origin(&self) -> &'static str {
        let field = self
            .fields
            .iter()
            .flatten()
            .find(|(name, _)| name == intake::SOURCE_FIELD);
        match field.map(|(_, value)| value.as_slice()) {
            Some(b"reconcile") => "reconcile",
            Some(b"backfill") => "backfill",
            _ => SOURCE,
        }
    }

    /// The event in the `payload` field, or the entry as a malformed input with the reason.
    pub(super) fn decode(self) -> Result<SandboxEvent, MalformedInput> {
        let malformed = |raw: &[u8], reason: String| MalformedInput {
            source: SOURCE.to_owned(),
            position: self.id.clone(),
            input: RawInput::from_bytes(raw),
            reason,
        };
        let Some(fields) = &self.fields else {
            return Err(malformed(
                b"",
                "the entry was deleted from the stream (XDEL or a trim by another client) before it was committed; its content is lost".to_owned(),
            ));
        };
        let Some((_, payload)) = fields.iter().find(|(name, _)| name == b"payload") else {
            // The fields as a JSON object; a value that is not UTF-8 keeps its bytes in base64.
            let as_json: serde_json::Map<String, serde_json::Value> = fields
                .iter()
                .map(|(name, value)| {
                    let value = match RawInput::from_bytes(value) {
                        RawInput {
                            raw: Some(text), ..
                        } => text.into(),
                        RawInput { raw_base64, .. } => serde_json::json!({ "base64": raw_base64 }),
                    };
                    (String::from_utf8_lossy(name).into_owned(), value)
                })
                .collect();
            return Err(malformed(
                serde_json::Value::Object(as_json).to_string().as_bytes(),
                "no `payload` field (the orchestrator writes XADD <stream> * payload <event JSON>)"
                    .to_owned(),
            ));
        };
        SandboxEvent::parse(payload).map_err(|e| malformed(payload, format!("invalid event: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENT: &str = r#"{"id":"e1","version":"v2","type":"sandbox.lifecycle.killed","timestamp":"2025-10-15T12:00:00Z","sandbox_id":"s1","sandbox_team_id":"0b8b8a4e-6f4e-4c4a-9a57-3a2f5d3b1c2d"}"#;

    fn entry(fields: &[(&str, &str)]) -> StreamEntry {
        StreamEntry {
            id: "7-0".into(),
            fields: Some(
                fields
                    .iter()
                    .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
                    .collect(),
            ),
        }
    }

    #[test]
    fn valid_payload_decodes_to_an_event() {
        let event = entry(&[("payload", EVENT)]).decode().unwrap();
        assert_eq!(event.id(), "e1");
        assert_eq!(event.lifecycle.label(), "kill");
    }

    #[test]
    fn bad_entries_become_malformed_inputs_with_position_and_reason() {
        let missing = entry(&[("data", "x")]).decode().unwrap_err();
        assert_eq!(missing.position, "7-0");
        assert_eq!(missing.source, "redis");
        assert_eq!(missing.input.raw.as_deref(), Some(r#"{"data":"x"}"#));
        assert!(missing.reason.contains("payload"), "{}", missing.reason);

        let not_json = entry(&[("payload", "{oops")]).decode().unwrap_err();
        assert_eq!(not_json.input.raw.as_deref(), Some("{oops"));
        assert!(
            not_json.reason.starts_with("invalid event"),
            "{}",
            not_json.reason
        );

        let no_sandbox = entry(&[("payload", r#"{"id":"e2","type":"sandbox.lifecycle.created","sandbox_team_id":"0b8b8a4e-6f4e-4c4a-9a57-3a2f5d3b1c2d"}"#)])
            .decode()
            .unwrap_err();
        assert!(
            no_sandbox.reason.contains("sandbox_id"),
            "{}",
            no_sandbox.reason
        );

        let deleted = StreamEntry {
            id: "8-0".into(),
            fields: None,
        }
        .decode()
        .unwrap_err();
        assert!(deleted.reason.contains("deleted"), "{}", deleted.reason);
    }
}
