//! Appending: events with their deliveries (de-duplicated by id), malformed inputs set aside as
//! dead letters, and the running/paused view of sandboxes the events keep.

use super::journal::JournalRecord;
use super::known_sandboxes::ViewChanges;
use super::store::Store;
use super::{
    DeadLetter, FromStream, MalformedInput, OutboxError, RawInput, Route, SandboxRecord,
    StreamEntryRef,
};
use crate::event::SandboxEvent;
use crate::util::panic::catch_quietly;
use crate::util::time::now_ms;
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

/// What an append writes, decided under the write lock.
struct AppendPlan {
    report: AppendReport,
    records: Vec<JournalRecord>,
    letters: Vec<DeadLetter>,
}

impl Store {
    /// Appends `events` in one commit of the log; with `from` (one per event), each event
    /// remembers its stream entry, and entries with nothing (new) to deliver are queued for
    /// acknowledgement at once.
    ///
    /// Runs on the caller's task, not the blocking pool: deciding and encoding are work of
    /// microseconds, and the commit is awaited, so an event is not handed to a pool thread and
    /// back on its way to delivery (issue 30: two thread wake-ups per event fewer). Not
    /// cancel-safe: see [`super::Outbox::append`].
    pub(super) async fn append(
        &self,
        source: &str,
        events: &[SandboxEvent],
        from: Option<&[FromStream]>,
    ) -> Result<AppendReport, OutboxError> {
        self.refuse_if_out_of_room()?;
        let _writing = self.write_lock.lock().await;
        let AppendPlan {
            report,
            records,
            letters,
        } = catch_quietly(|| self.plan_append(source, events, from)).map_err(OutboxError::Task)?;
        // The letters first: an entry is acknowledged only after its letter is kept. They are
        // rare (a replay for an endpoint this instance does not have), and a redb commit.
        self.add_dead_letters(letters)?;
        if !records.is_empty() {
            self.write_records_awaited(records).await?;
        }
        Ok(report)
    }

    /// What appending `events` writes, given the live set; the caller holds the write lock.
    fn plan_append(
        &self,
        source: &str,
        events: &[SandboxEvent],
        from: Option<&[FromStream]>,
    ) -> AppendPlan {
        let now = now_ms();
        let mut report = AppendReport {
            appended_at_ms: now,
            ..AppendReport::default()
        };
        let all_routes = self.routes();
        let mut records = Vec::new();
        let mut acks = Vec::new();
        let mut letters = Vec::new();
        {
            let live = self.live();
            let mut next_seq = live.next_seq();
            let mut seen_in_batch = HashSet::new();
            for (i, event) in events.iter().enumerate() {
                let from = from.and_then(|f| f.get(i));
                let entry = from.map(|f| &f.entry);
                let replay_to = from.and_then(|f| f.replay_to.as_deref());
                let new = match (replay_to, entry) {
                    // A replay is new unless this very entry was read before.
                    (Some(_), Some(entry)) => live.entry_seq(&entry.id).is_none(),
                    _ => seen_in_batch.insert(event.id()) && !live.knows_event(event.id()),
                };
                report.is_new.push(new);
                report.seqs.push(None);
                if !new {
                    report.duplicates += 1;
                    // The same entry read again is still carried by its event; another entry
                    // with an event we already have holds no work of its own.
                    if let Some(entry) = entry
                        && live.entry_seq(&entry.id).is_none()
                    {
                        acks.push(entry.clone());
                    }
                    continue;
                }
                report.appended += 1;
                let routes: Vec<&Route> = match replay_to {
                    Some(endpoint) => all_routes.get(endpoint).into_iter().collect(),
                    None => all_routes.accepting(event).collect(),
                };
                let seq = if routes.is_empty() {
                    if let Some(endpoint) = replay_to {
                        // Never dropped: back to the dead letters, with the reason.
                        letters.push(replayed_elsewhere(source, event, entry, endpoint, now));
                    }
                    0
                } else {
                    next_seq += 1;
                    report.last_seq = Some(next_seq - 1);
                    report.seqs[i] = Some(next_seq - 1);
                    for route in &routes {
                        if !report.endpoints.contains(&route.endpoint) {
                            report.endpoints.insert(route.endpoint.clone());
                        }
                    }
                    next_seq - 1
                };
                records.push(JournalRecord::Appended {
                    seq,
                    appended_at_ms: now,
                    source: source.to_owned(),
                    event: Value::Object(event.raw().clone()),
                    entry: entry.cloned(),
                    endpoints: routes.iter().map(|r| r.endpoint.clone()).collect(),
                    tracks_sandbox: replay_to.is_none(),
                });
            }
        }
        if !acks.is_empty() {
            records.push(JournalRecord::AckQueued { entries: acks });
        }
        AppendPlan {
            report,
            records,
            letters,
        }
    }

    /// Keeps malformed inputs as dead letters; `entries` (the stream entries they were) are
    /// then queued for acknowledgement.
    pub(super) fn set_aside(
        &self,
        inputs: &[MalformedInput],
        entries: &[StreamEntryRef],
    ) -> Result<(), OutboxError> {
        self.refuse_if_out_of_room()?;
        let now = now_ms();
        let letters = inputs
            .iter()
            .map(|input| DeadLetter {
                id: 0,
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
            })
            .collect();
        self.add_dead_letters(letters)?;
        if entries.is_empty() {
            return Ok(());
        }
        let _writing = self.lock_writes();
        self.write_records(vec![JournalRecord::AckQueued {
            entries: entries.to_vec(),
        }])?;
        Ok(())
    }

    pub(super) fn prune_event_ids(&self, age: Duration) -> Result<usize, OutboxError> {
        let cutoff = now_ms() - i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
        let _writing = self.lock_writes();
        let removed = self.live().ids_before(cutoff);
        if removed > 0 {
            self.write_records(vec![JournalRecord::IdsPruned { before_ms: cutoff }])?;
        }
        Ok(removed)
    }

    pub(super) fn sandboxes(&self) -> Result<Vec<SandboxRecord>, OutboxError> {
        Ok(self.live().sandboxes().records())
    }

    /// Sets the sandboxes of `records` (a page of the view every instance shares) that this
    /// view does not hold as they are; how many.
    pub(super) fn copy_sandboxes(&self, records: &[SandboxRecord]) -> Result<usize, OutboxError> {
        self.refuse_if_out_of_room()?;
        let _writing = self.lock_writes();
        let set = self.live().sandboxes().differing(records);
        self.write_view_changes(ViewChanges {
            set,
            removed: Vec::new(),
        })
    }

    /// Removes the sandboxes whose ids are not in `ids` (the whole view every instance shares);
    /// how many.
    pub(super) fn keep_only_sandboxes(&self, ids: &HashSet<String>) -> Result<usize, OutboxError> {
        self.refuse_if_out_of_room()?;
        let _writing = self.lock_writes();
        let removed = self.live().sandboxes().absent_from(ids);
        self.write_view_changes(ViewChanges {
            set: Vec::new(),
            removed,
        })
    }

    /// Writes `changes` a page a commit; how many sandboxes they change. The caller holds
    /// [`Self::lock_writes`].
    fn write_view_changes(&self, changes: ViewChanges) -> Result<usize, OutboxError> {
        let count = changes.len();
        for page in changes.into_pages() {
            self.write_records(vec![page.into()])?;
        }
        Ok(count)
    }
}

/// The dead letter of an event replayed for an endpoint this instance does not deliver to.
fn replayed_elsewhere(
    source: &str,
    event: &SandboxEvent,
    entry: Option<&StreamEntryRef>,
    endpoint: &str,
    now: i64,
) -> DeadLetter {
    DeadLetter {
        id: 0,
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
    }
}
