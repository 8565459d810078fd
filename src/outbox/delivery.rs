//! Delivering: the deliveries an endpoint has pending, the events they carry, and recording
//! their results (delivered, to retry, dead), which finishes events and their stream entries.

use super::records::{
    ACKS, DEAD, DEAD_EXPORT, EVENTS, NEXT_DEAD, PENDING, RecordEntry, STATE, STREAM_ENTRIES,
    decode, encode, read_counter, stored_event,
};
use super::store::Store;
use super::{DeadLetter, DeliveryState, OutboxError, PendingDelivery, RawInput, StoredEvent};
use crate::util::time::now_ms;
use redb::ReadableTable;
use serde_json::Value;

/// Only the team of a stored event: the rest is skipped over, not decoded.
#[derive(serde::Deserialize)]
struct RecordTeam {
    event: TeamOnly,
}

#[derive(serde::Deserialize)]
struct TeamOnly {
    #[serde(default)]
    sandbox_team_id: Option<Value>,
}

/// The result of one delivery, to be recorded.
#[derive(Debug, Clone)]
pub enum Completion {
    /// 2xx: forget it for this endpoint.
    Delivered {
        /// Endpoint id.
        endpoint: String,
        /// Sequence number.
        seq: u64,
    },
    /// Failed; try again later.
    Retry {
        /// Endpoint id.
        endpoint: String,
        /// Sequence number.
        seq: u64,
        /// New state (attempts, next time, error).
        state: DeliveryState,
    },
    /// The retry policy is exhausted.
    Dead {
        /// Endpoint id.
        endpoint: String,
        /// Sequence number.
        seq: u64,
        /// Final state.
        state: DeliveryState,
    },
}

impl Store {
    pub(super) fn pending_after(
        &self,
        endpoint: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<PendingDelivery>, OutboxError> {
        let txn = self.begin_read()?;
        let table = txn.open_table(PENDING)?;
        let mut out = Vec::new();
        for row in table.range((endpoint, after.saturating_add(1))..=(endpoint, u64::MAX))? {
            let (k, v) = row?;
            out.push(PendingDelivery {
                seq: k.value().1,
                state: decode("pending", v.value())?,
            });
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    pub(super) fn events(&self, seqs: &[u64]) -> Result<Vec<Option<StoredEvent>>, OutboxError> {
        let txn = self.begin_read()?;
        let table = txn.open_table(EVENTS)?;
        seqs.iter()
            .map(|seq| match table.get(*seq)? {
                Some(bytes) => stored_event(bytes.value()).map(Some),
                None => Ok(None),
            })
            .collect()
    }

    /// Records delivery results; returns the events no endpoint has pending any more (removed).
    pub(super) fn complete(&self, completions: &[Completion]) -> Result<Vec<u64>, OutboxError> {
        let mut removed_events = Vec::new();
        if completions.is_empty() {
            return Ok(removed_events);
        }
        let txn = self.begin_durable()?;
        {
            let mut events = txn.open_table(EVENTS)?;
            let mut pending = txn.open_table(PENDING)?;
            let mut dead = txn.open_table(DEAD)?;
            let mut state = txn.open_table(STATE)?;
            let mut export = txn.open_table(DEAD_EXPORT)?;
            let mut live = txn.open_table(STREAM_ENTRIES)?;
            let mut acks = txn.open_table(ACKS)?;
            let mut next_dead = read_counter(&state, NEXT_DEAD)?.max(1);
            let mut finished = Vec::new();
            for completion in completions {
                match completion {
                    Completion::Delivered { endpoint, seq } => {
                        pending.remove((endpoint.as_str(), *seq))?;
                        finished.push(*seq);
                    }
                    Completion::Retry {
                        endpoint,
                        seq,
                        state,
                    } => {
                        pending.insert((endpoint.as_str(), *seq), encode(state).as_slice())?;
                    }
                    Completion::Dead {
                        endpoint,
                        seq,
                        state,
                    } => {
                        pending.remove((endpoint.as_str(), *seq))?;
                        let stored = match events.get(*seq)? {
                            Some(bytes) => Some(stored_event(bytes.value())?),
                            None => None,
                        };
                        let letter = DeadLetter {
                            id: next_dead,
                            endpoint: Some(endpoint.clone()),
                            source: stored
                                .as_ref()
                                .map(|s| s.source.clone())
                                .unwrap_or_default(),
                            event_id: stored.as_ref().map(|s| s.event.id().to_owned()),
                            sandbox_id: Some(state.sandbox_id.clone()),
                            label: stored
                                .as_ref()
                                .map(|s| s.event.lifecycle.label().to_owned()),
                            event: stored
                                .as_ref()
                                .map(|s| Value::Object(s.event.raw().clone())),
                            input: RawInput::default(),
                            position: None,
                            attempts: state.attempts,
                            last_status: state.last_status,
                            reason: state
                                .last_error
                                .clone()
                                .unwrap_or_else(|| "retry policy exhausted".into()),
                            appended_at_ms: stored
                                .as_ref()
                                .map(|s| s.appended_at_ms)
                                .unwrap_or_default(),
                            dead_at_ms: now_ms(),
                        };
                        dead.insert(next_dead, encode(&letter).as_slice())?;
                        if self.export_dead_letters {
                            export.insert(next_dead, ())?;
                        }
                        next_dead += 1;
                        finished.push(*seq);
                    }
                }
            }
            state.insert(NEXT_DEAD, next_dead.to_be_bytes().as_slice())?;
            // An event is kept until no endpoint has it pending; only the routes of its team
            // (and the unscoped ones) can hold it.
            let routes = self.routes();
            for seq in finished {
                let team: RecordTeam = match events.get(seq)? {
                    Some(bytes) => decode("event", bytes.value())?,
                    None => continue,
                };
                let mut still_pending = false;
                for route in routes.for_team(
                    team.event
                        .sandbox_team_id
                        .as_ref()
                        .and_then(Value::as_str)
                        .unwrap_or_default(),
                ) {
                    if pending.get((route.endpoint.as_str(), seq))?.is_some() {
                        still_pending = true;
                        break;
                    }
                }
                if !still_pending && let Some(removed) = events.remove(seq)? {
                    removed_events.push(seq);
                    let record: RecordEntry = decode("event", removed.value())?;
                    if let Some(entry) = record.entry {
                        live.remove(entry.id.as_str())?;
                        acks.insert(entry.id.as_str(), entry.generation.as_str())?;
                    }
                }
            }
        }
        txn.commit()?;
        Ok(removed_events)
    }
}
