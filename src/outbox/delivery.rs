//! Delivering: the deliveries an endpoint has pending, the events they carry, and recording
//! their results (delivered, to retry, dead), which finishes events and their stream entries.

use super::journal::JournalRecord;
use super::store::Store;
use super::{DeadLetter, DeliveryState, OutboxError, PendingDelivery, RawInput, StoredEvent};
use crate::event::SandboxEvent;
use crate::util::time::now_ms;
use serde_json::Value;

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

impl Completion {
    /// Whether recording this makes a dead letter: a commit to redb, on a thread that may block.
    pub(super) fn makes_dead_letter(&self) -> bool {
        matches!(self, Self::Dead { .. })
    }
}

impl Store {
    pub(super) fn pending_after(
        &self,
        endpoint: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<PendingDelivery>, OutboxError> {
        Ok(self.live().pending_after(endpoint, after, limit))
    }

    pub(super) fn events(&self, seqs: &[u64]) -> Result<Vec<Option<StoredEvent>>, OutboxError> {
        let locations: Vec<_> = {
            let live = self.live();
            seqs.iter()
                .map(|seq| live.event(*seq).map(|e| e.location))
                .collect()
        };
        locations
            .into_iter()
            .map(|location| match location {
                Some(location) => self.stored_event(location).map(Some),
                None => Ok(None),
            })
            .collect()
    }

    /// The event whose `Appended` record is at `location`.
    fn stored_event(&self, location: super::log::Location) -> Result<StoredEvent, OutboxError> {
        let JournalRecord::Appended {
            appended_at_ms,
            source,
            event,
            ..
        } = self.read_record(location)?
        else {
            return Err(OutboxError::Corrupt(format!(
                "outbox log record at {location:?} is not an event"
            )));
        };
        let event = SandboxEvent::from_value(event)
            .map_err(|e| OutboxError::Corrupt(format!("event: {e}")))?;
        Ok(StoredEvent {
            event,
            appended_at_ms,
            source,
        })
    }

    /// Records delivery results; returns the events no endpoint has pending any more (removed).
    /// Dead letters are kept (in redb) before the records that finish their deliveries, and
    /// entries are acknowledged only once those records are on disk.
    ///
    /// Without `Dead` results this is work in memory and an awaited commit, for the caller's
    /// task; with them it reads their events back and commits to redb, which blocks (see
    /// [`Completion::makes_dead_letter`]).
    pub(super) async fn complete(
        &self,
        completions: &[Completion],
    ) -> Result<Vec<u64>, OutboxError> {
        if completions.is_empty() {
            return Ok(Vec::new());
        }
        let CompletionRecords {
            records,
            letters,
            finished,
        } = self.completion_records(completions)?;
        self.add_dead_letters(letters)?;
        let was_live = self.still_live(finished);
        // They ride on the next event's commit: a crash before it delivers them once more.
        self.write_riding(records).await?;
        Ok(self.removed(was_live))
    }

    /// The records of `completions`, the dead letters they make, and the events they finish.
    fn completion_records(
        &self,
        completions: &[Completion],
    ) -> Result<CompletionRecords, OutboxError> {
        let mut records = Vec::new();
        let mut letters = Vec::new();
        let mut finished = Vec::new();
        for completion in completions {
            match completion {
                Completion::Delivered { endpoint, seq } => {
                    finished.push(*seq);
                    records.push(JournalRecord::Finished {
                        endpoint: endpoint.clone(),
                        seq: *seq,
                    });
                }
                Completion::Retry {
                    endpoint,
                    seq,
                    state,
                } => records.push(JournalRecord::Retry {
                    endpoint: endpoint.clone(),
                    seq: *seq,
                    state: state.clone(),
                }),
                Completion::Dead {
                    endpoint,
                    seq,
                    state,
                } => {
                    let stored = match self.live().event(*seq).map(|e| e.location) {
                        Some(location) => Some(self.stored_event(location)?),
                        None => None,
                    };
                    letters.push(dead_letter(endpoint, state, stored.as_ref()));
                    finished.push(*seq);
                    records.push(JournalRecord::Finished {
                        endpoint: endpoint.clone(),
                        seq: *seq,
                    });
                }
            }
        }
        Ok(CompletionRecords {
            records,
            letters,
            finished,
        })
    }

    fn still_live(&self, seqs: Vec<u64>) -> Vec<u64> {
        let live = self.live();
        seqs.into_iter()
            .filter(|seq| live.event(*seq).is_some())
            .collect()
    }

    /// Of `was_live`, the events now gone from the live set, in order.
    fn removed(&self, was_live: Vec<u64>) -> Vec<u64> {
        let live = self.live();
        let mut removed: Vec<u64> = was_live
            .into_iter()
            .filter(|seq| live.event(*seq).is_none())
            .collect();
        removed.sort_unstable();
        removed.dedup();
        removed
    }
}

/// What recording delivery results writes: log records, dead letters (to redb, first), and the
/// events whose delivery is over for an endpoint.
struct CompletionRecords {
    records: Vec<JournalRecord>,
    letters: Vec<DeadLetter>,
    finished: Vec<u64>,
}

/// The dead letter of a delivery whose retry policy is exhausted.
fn dead_letter(endpoint: &str, state: &DeliveryState, stored: Option<&StoredEvent>) -> DeadLetter {
    DeadLetter {
        id: 0,
        endpoint: Some(endpoint.to_owned()),
        source: stored.map(|s| s.source.clone()).unwrap_or_default(),
        event_id: stored.map(|s| s.event.id().to_owned()),
        sandbox_id: Some(state.sandbox_id.clone()),
        label: stored.map(|s| s.event.lifecycle.label().to_owned()),
        event: stored.map(|s| Value::Object(s.event.raw().clone())),
        input: RawInput::default(),
        position: None,
        attempts: state.attempts,
        last_status: state.last_status,
        reason: state
            .last_error
            .clone()
            .unwrap_or_else(|| "retry policy exhausted".into()),
        appended_at_ms: stored.map(|s| s.appended_at_ms).unwrap_or_default(),
        dead_at_ms: now_ms(),
    }
}
