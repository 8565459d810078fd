//! Appending: events with their deliveries (de-duplicated by id), malformed inputs set aside as
//! dead letters, and the running/paused view of sandboxes the events keep.

use super::live::{SandboxChange, sandbox_change};
use super::records::{
    ACKS, DEAD, DEAD_EXPORT, EVENT_IDS, EVENTS, EventRecordRef, LiveEntry, NEXT_DEAD, NEXT_SEQ,
    PENDING, SANDBOXES, STATE, STREAM_ENTRIES, decode, encode, read_counter,
};
use super::store::Store;
use super::{
    DeadLetter, DeliveryState, FromStream, MalformedInput, OutboxError, RawInput, Route,
    SandboxRecord, StreamEntryRef,
};
use crate::event::SandboxEvent;
use crate::util::time::now_ms;
use redb::ReadableTable;
use serde_json::Value;
use std::collections::HashSet;
use std::time::Duration;

/// What `append` did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppendReport {
    /// Events new to the outbox.
    pub appended: usize,
    /// Events whose id was already there (skipped).
    pub duplicates: usize,
    /// For each input event, whether it was new.
    pub is_new: Vec<bool>,
    /// The highest sequence number assigned, if any.
    pub last_seq: Option<u64>,
    /// For each input event, its sequence number when it was stored for delivery.
    pub seqs: Vec<Option<u64>>,
    /// When the batch was appended (ms since the epoch).
    pub appended_at_ms: i64,
    /// The endpoints that got deliveries to make (their dispatchers are woken, no others).
    pub endpoints: std::collections::BTreeSet<String>,
}

impl Store {
    /// Appends `events`; with `from` (one per event), each event remembers its stream entry,
    /// and entries with nothing (new) to deliver are queued for acknowledgement at once.
    pub(super) fn append(
        &self,
        source: &str,
        events: &[SandboxEvent],
        from: Option<&[FromStream]>,
    ) -> Result<AppendReport, OutboxError> {
        let now = now_ms();
        let mut report = AppendReport {
            appended_at_ms: now,
            ..AppendReport::default()
        };
        let all_routes = self.routes();
        let txn = self.begin_durable()?;
        {
            let mut state = txn.open_table(STATE)?;
            let mut next_seq = read_counter(&state, NEXT_SEQ)?.max(1);
            let mut table = txn.open_table(EVENTS)?;
            let mut ids = txn.open_table(EVENT_IDS)?;
            let mut pending = txn.open_table(PENDING)?;
            let mut sandboxes = txn.open_table(SANDBOXES)?;
            let mut live = txn.open_table(STREAM_ENTRIES)?;
            let mut acks = txn.open_table(ACKS)?;
            let mut seen_in_batch = HashSet::new();
            for (i, event) in events.iter().enumerate() {
                let from = from.and_then(|f| f.get(i));
                let entry = from.map(|f| &f.entry);
                let replay_to = from.and_then(|f| f.replay_to.as_deref());
                let new = match (replay_to, entry) {
                    // A replay is new unless this very entry was read before.
                    (Some(_), Some(entry)) => live.get(entry.id.as_str())?.is_none(),
                    _ => seen_in_batch.insert(event.id()) && ids.get(event.id())?.is_none(),
                };
                report.is_new.push(new);
                report.seqs.push(None);
                if !new {
                    report.duplicates += 1;
                    // The same entry read again is still carried by its event; another entry
                    // with an event we already have holds no work of its own.
                    if let Some(entry) = entry
                        && live.get(entry.id.as_str())?.is_none()
                    {
                        acks.insert(entry.id.as_str(), entry.generation.as_str())?;
                    }
                    continue;
                }
                report.appended += 1;
                ids.insert(event.id(), now)?;
                let routes: Vec<&Route> = match replay_to {
                    Some(endpoint) => all_routes.get(endpoint).into_iter().collect(),
                    None => {
                        track_sandbox(&mut sandboxes, event, now)?;
                        all_routes.accepting(event).collect()
                    }
                };
                if routes.is_empty() {
                    if let Some(endpoint) = replay_to {
                        // Never dropped: back to the dead letters, with the reason.
                        let mut dead = txn.open_table(DEAD)?;
                        let mut export = txn.open_table(DEAD_EXPORT)?;
                        let id = read_counter(&state, NEXT_DEAD)?.max(1);
                        let letter = DeadLetter {
                            id,
                            endpoint: Some(endpoint.to_owned()),
                            source: source.to_owned(),
                            event_id: Some(event.id().to_owned()),
                            sandbox_id: Some(event.sandbox_id().to_owned()),
                            label: Some(event.lifecycle.label().to_owned()),
                            event: Some(Value::Object(event.raw().clone())),
                            input: RawInput::default(),
                            position: entry.map(|e| e.id.clone()),
                            attempts: 0,
                            last_status: None,
                            reason: format!(
                                "replayed for endpoint {endpoint:?}, which this instance does not deliver to; check the endpoints of the active instance"
                            ),
                            appended_at_ms: now,
                            dead_at_ms: now,
                        };
                        dead.insert(id, encode(&letter).as_slice())?;
                        if self.export_dead_letters {
                            export.insert(id, ())?;
                        }
                        state.insert(NEXT_DEAD, (id + 1).to_be_bytes().as_slice())?;
                    }
                    if let Some(entry) = entry {
                        acks.insert(entry.id.as_str(), entry.generation.as_str())?;
                    }
                    continue;
                }
                let seq = next_seq;
                next_seq += 1;
                if let Some(entry) = entry {
                    let row = LiveEntry {
                        seq,
                        generation: entry.generation.clone(),
                    };
                    live.insert(entry.id.as_str(), encode(&row).as_slice())?;
                }
                let record = EventRecordRef {
                    appended_at_ms: now,
                    source,
                    event: event.raw(),
                    entry,
                };
                table.insert(seq, encode(&record).as_slice())?;
                let delivery = encode(&DeliveryState {
                    sandbox_id: event.sandbox_id().to_owned(),
                    ..DeliveryState::default()
                });
                for route in routes {
                    pending.insert((route.endpoint.as_str(), seq), delivery.as_slice())?;
                    if !report.endpoints.contains(&route.endpoint) {
                        report.endpoints.insert(route.endpoint.clone());
                    }
                }
                report.last_seq = Some(seq);
                report.seqs[i] = Some(seq);
            }
            state.insert(NEXT_SEQ, next_seq.to_be_bytes().as_slice())?;
        }
        self.commit_durable(txn)?;
        Ok(report)
    }

    /// Keeps malformed inputs as dead letters; `entries` (the stream entries they were) are
    /// queued for acknowledgement in the same commit.
    pub(super) fn set_aside(
        &self,
        inputs: &[MalformedInput],
        entries: &[StreamEntryRef],
    ) -> Result<(), OutboxError> {
        let now = now_ms();
        let txn = self.begin_durable()?;
        {
            let mut state = txn.open_table(STATE)?;
            let mut dead = txn.open_table(DEAD)?;
            let mut export = txn.open_table(DEAD_EXPORT)?;
            let mut acks = txn.open_table(ACKS)?;
            for entry in entries {
                acks.insert(entry.id.as_str(), entry.generation.as_str())?;
            }
            let mut next = read_counter(&state, NEXT_DEAD)?.max(1);
            for input in inputs {
                let letter = DeadLetter {
                    id: next,
                    endpoint: None,
                    source: input.source.clone(),
                    event_id: None,
                    sandbox_id: None,
                    label: None,
                    event: None,
                    input: input.input.clone(),
                    position: Some(input.position.clone()),
                    attempts: 0,
                    last_status: None,
                    reason: input.reason.clone(),
                    appended_at_ms: now,
                    dead_at_ms: now,
                };
                dead.insert(next, encode(&letter).as_slice())?;
                if self.export_dead_letters {
                    export.insert(next, ())?;
                }
                next += 1;
            }
            state.insert(NEXT_DEAD, next.to_be_bytes().as_slice())?;
        }
        self.commit_durable(txn)
    }

    pub(super) fn prune_event_ids(&self, age: Duration) -> Result<usize, OutboxError> {
        let cutoff = now_ms() - i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
        let txn = self.begin_durable()?;
        let mut removed = 0;
        {
            let mut ids = txn.open_table(EVENT_IDS)?;
            ids.retain(|_, at| {
                let keep = at >= cutoff;
                removed += usize::from(!keep);
                keep
            })?;
        }
        txn.commit()?;
        Ok(removed)
    }

    pub(super) fn sandboxes(&self) -> Result<Vec<SandboxRecord>, OutboxError> {
        let txn = self.begin_read()?;
        let table = txn.open_table(SANDBOXES)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (_, v) = row?;
            out.push(decode("sandbox", v.value())?);
        }
        Ok(out)
    }

    /// Replaces the view of sandboxes with `records` (a copy of the view every instance
    /// shares), unless it already holds exactly them; true when it changed.
    pub(super) fn replace_sandboxes(&self, records: &[SandboxRecord]) -> Result<bool, OutboxError> {
        let mut current = self.sandboxes()?;
        let mut wanted = records.to_vec();
        current.sort_by(|a, b| a.sandbox_id.cmp(&b.sandbox_id));
        wanted.sort_by(|a, b| a.sandbox_id.cmp(&b.sandbox_id));
        if current == wanted {
            return Ok(false);
        }
        let txn = self.begin_durable()?;
        {
            let mut table = txn.open_table(SANDBOXES)?;
            table.retain(|_, _| false)?;
            for record in &wanted {
                table.insert(record.sandbox_id.as_str(), encode(record).as_slice())?;
            }
        }
        self.commit_durable(txn)?;
        Ok(true)
    }
}

/// Keeps the running/paused view of sandboxes that reconciliation compares with the orchestrators.
fn track_sandbox(
    table: &mut redb::Table<&str, &[u8]>,
    event: &SandboxEvent,
    now: i64,
) -> Result<(), OutboxError> {
    let known = || Ok::<_, OutboxError>(table.get(event.sandbox_id())?.is_some());
    match sandbox_change(event, known, now)? {
        SandboxChange::Keep => {}
        SandboxChange::Remove => {
            table.remove(event.sandbox_id())?;
        }
        SandboxChange::Set(record) => {
            table.insert(event.sandbox_id(), encode(&record).as_slice())?;
        }
    }
    Ok(())
}
