//! The outbox's live set in memory, rebuilt at start from the log's records (`journal.rs`): the
//! events still to deliver and where they are on disk, pending deliveries per endpoint, stream
//! entries to acknowledge, the event-id window and the view of sandboxes (issue 30).
//!
//! Records are applied in log order, so the state after a record is the same whether it was
//! applied while running or while reading the log back.

use super::entry_index::EntryIndex;
use super::journal::{JournalRecord, Snapshot};
use super::known_sandboxes::{KnownSandboxes, ViewChanges};
use super::live_keys::{EntryId, LiveEntry, LiveEvent, SegmentEvents, SharedStrings};
use super::log::{Location, Log};
use super::pending_deliveries::{PendingDeliveries, Tried};
use super::recent_ids::RecentIds;
use super::seq_map::SeqMap;
use super::{
    DeliveryState, OutboxError, PendingDelivery, SandboxRecord, SandboxState, StreamEntryRef,
};
use crate::event::{Lifecycle, SandboxEvent};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

/// What the log says is live.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Live {
    next_seq: u64,
    events: SeqMap<LiveEvent>,
    /// The deliveries still to make.
    pending: PendingDeliveries,
    /// Stream entry id → the seq of its event.
    entries: EntryIndex,
    /// Entries to acknowledge: id → generation.
    acks: BTreeMap<EntryId, Arc<str>>,
    /// The de-duplication window.
    event_ids: RecentIds,
    sandboxes: KnownSandboxes,
    /// Sandbox, team and template ids and generations, once each.
    strings: SharedStrings,
    /// Segment (its first commit) → its events.
    segments: BTreeMap<u64, SegmentEvents>,
}

/// What an event does to the view of sandboxes.
pub(super) enum SandboxChange {
    Keep,
    Remove,
    Set(SandboxRecord),
}

/// The change `event` makes to the view; `known` says whether its sandbox is in it.
pub(super) fn sandbox_change<E>(
    event: &SandboxEvent,
    known: impl FnOnce() -> Result<bool, E>,
    now_ms: i64,
) -> Result<SandboxChange, E> {
    let state = match event.lifecycle {
        Lifecycle::Created | Lifecycle::Resumed => SandboxState::Running,
        Lifecycle::Paused => SandboxState::Paused,
        Lifecycle::Killed => return Ok(SandboxChange::Remove),
        // An update says nothing about a sandbox paused meanwhile.
        Lifecycle::Updated | Lifecycle::Checkpointed => {
            if known()? {
                return Ok(SandboxChange::Keep);
            }
            SandboxState::Running
        }
        Lifecycle::Unknown(_) => return Ok(SandboxChange::Keep),
    };
    Ok(SandboxChange::Set(SandboxRecord::of(event, state, now_ms)))
}

impl Live {
    /// Applies one record read from (or appended to) `location`, in commit `commit`.
    pub(super) fn apply(
        &mut self,
        record: JournalRecord,
        commit: u64,
        location: Location,
    ) -> Result<(), OutboxError> {
        match record {
            JournalRecord::Appended {
                seq,
                appended_at_ms,
                event,
                entry,
                endpoints,
                tracks_sandbox,
                ..
            } => {
                let event = SandboxEvent::from_value(event)
                    .map_err(|e| OutboxError::Corrupt(format!("event {seq}: {e}")))?;
                self.event_ids.remember(event.id(), appended_at_ms);
                if tracks_sandbox {
                    let known =
                        || Ok::<_, OutboxError>(self.sandboxes.contains(event.sandbox_id()));
                    match sandbox_change(&event, known, appended_at_ms)? {
                        SandboxChange::Keep => {}
                        SandboxChange::Remove => {
                            self.sandboxes.remove(event.sandbox_id(), &mut self.strings);
                        }
                        SandboxChange::Set(record) => self.sandboxes.set(record, &mut self.strings),
                    }
                }
                self.segments.entry(location.segment).or_default().appended += 1;
                let entry = entry.map(|entry| self.live_entry(&entry));
                if endpoints.is_empty() {
                    if let Some(entry) = entry {
                        self.queue_ack(entry);
                    }
                    return Ok(());
                }
                // Only an event with somewhere to go takes a sequence number.
                self.next_seq = self.next_seq.max(seq + 1);
                // An event appended again (copied forward) keeps the state its deliveries have.
                for endpoint in endpoints {
                    self.pending.add(endpoint, seq);
                }
                let live = LiveEvent {
                    location,
                    commit,
                    entry,
                    appended_at_ms,
                    sandbox: self.strings.get(event.sandbox_id()),
                };
                self.segments.entry(location.segment).or_default().live += 1;
                let id = live.entry.as_ref().map(|e| e.id.clone());
                if let Some(copied) = self.events.insert(seq, live)
                    && let Some(entry) = self.let_go(copied)
                {
                    self.strings.release(entry.generation);
                }
                if let Some(id) = id {
                    self.entries.insert(&self.events, &id, seq);
                }
            }
            JournalRecord::Retry {
                endpoint,
                seq,
                state,
            } => self.pending.set_state(&endpoint, seq, state),
            JournalRecord::Finished { endpoint, seq } => self.finish(&endpoint, seq),
            JournalRecord::AckQueued { entries } => {
                for entry in entries {
                    let entry = self.live_entry(&entry);
                    self.queue_ack(entry);
                }
            }
            JournalRecord::Acknowledged { entries } => {
                for entry in entries {
                    if let Some(generation) = self.acks.remove(&EntryId::of(&entry)) {
                        self.strings.release(generation);
                    }
                }
            }
            JournalRecord::Forgotten { entries } => {
                for entry in entries {
                    let Some(seq) = self.entries.get(&self.events, &EntryId::of(&entry)) else {
                        continue;
                    };
                    if let Some(entry) = self.take_event(seq) {
                        self.strings.release(entry.generation);
                    }
                    self.pending.remove_everywhere(seq);
                }
            }
            JournalRecord::ViewChanged { set, removed } => {
                let changes = ViewChanges { set, removed };
                self.sandboxes.apply(changes, &mut self.strings);
            }
            JournalRecord::IdsPruned { before_ms } => self.event_ids.forget_before(before_ms),
            JournalRecord::Snapshot(snapshot) => self.restore(snapshot),
        }
        Ok(())
    }

    /// The delivery of `seq` to `endpoint` is over; the event goes once no endpoint has it, and
    /// its stream entry is queued for acknowledgement.
    fn finish(&mut self, endpoint: &str, seq: u64) {
        self.pending.remove(endpoint, seq);
        if self.pending.anywhere(seq) {
            return;
        }
        if let Some(entry) = self.take_event(seq) {
            self.queue_ack(entry);
        }
    }

    /// Takes event `seq` out of the live events and the entry index; returns its entry.
    fn take_event(&mut self, seq: u64) -> Option<LiveEntry> {
        let id = self
            .events
            .get(seq)
            .and_then(|e| Some(e.entry.as_ref()?.id.clone()));
        // The index reads ids from the events: out of it first.
        if let Some(id) = id {
            self.entries.remove(&self.events, &id);
        }
        let event = self.events.remove(seq)?;
        self.let_go(event)
    }

    /// A stream entry as the live set keeps it, its generation shared.
    fn live_entry(&mut self, entry: &StreamEntryRef) -> LiveEntry {
        LiveEntry {
            id: EntryId::of(&entry.id),
            generation: self.strings.get(&entry.generation),
        }
    }

    /// Counts `event`, taken out of the live events, out of its segment and gives back its
    /// sandbox id; returns its entry.
    fn let_go(&mut self, event: LiveEvent) -> Option<LiveEntry> {
        if let Some(segment) = self.segments.get_mut(&event.location.segment) {
            segment.live = segment.live.saturating_sub(1);
        }
        self.strings.release(event.sandbox);
        event.entry
    }

    fn queue_ack(&mut self, entry: LiveEntry) {
        if let Some(before) = self.acks.insert(entry.id, entry.generation) {
            self.strings.release(before);
        }
    }

    fn restore(&mut self, snapshot: Snapshot) {
        self.next_seq = self.next_seq.max(snapshot.next_seq);
        self.event_ids = RecentIds::from_snapshot(snapshot.event_ids);
    }

    /// What outlives events besides the entries to acknowledge, the retry states and the view
    /// of sandboxes, which follow it in pages ([`Self::acks_after`], [`Self::retries_after`],
    /// [`KnownSandboxes::page`]), to carry it forward before old segments are deleted.
    pub(super) fn snapshot(&self) -> Snapshot {
        Snapshot {
            next_seq: self.next_seq,
            event_ids: self.event_ids.to_vec(),
        }
    }

    /// Up to `limit` entries to acknowledge after id `after` (from the first when `None`).
    pub(super) fn acks_after(&self, after: Option<&str>, limit: usize) -> Vec<StreamEntryRef> {
        let from = after.map_or(Bound::Unbounded, |id| Bound::Excluded(EntryId::of(id)));
        self.acks
            .range((from, Bound::Unbounded))
            .take(limit)
            .map(|(id, generation)| StreamEntryRef {
                id: id.to_string(),
                generation: generation.to_string(),
            })
            .collect()
    }

    /// Up to `limit` states of deliveries tried before, after (endpoint, seq) `after`, by
    /// endpoint and seq: (endpoint, seq, state).
    pub(super) fn retries_after(
        &self,
        after: Option<(&str, u64)>,
        limit: usize,
    ) -> Vec<(String, u64, DeliveryState)> {
        self.pending
            .tried_after(after, limit)
            .into_iter()
            .map(|(endpoint, seq, tried)| {
                let state = self.delivery_state(seq, Some(tried));
                (endpoint.to_owned(), seq, state)
            })
            .collect()
    }

    /// The first commit still needed once commit `snapshot_commit` holds a snapshot: the
    /// segments wholly before it may be deleted.
    pub(super) fn release_point(&self, snapshot_commit: u64) -> u64 {
        self.events
            .values()
            .map(|e| e.commit)
            .min()
            .map_or(snapshot_commit, |oldest| oldest.min(snapshot_commit))
    }

    /// The events appended in the segments that start before commit `segment`, and how many
    /// of them are live.
    pub(super) fn events_in_segments_before(&self, segment: u64) -> SegmentEvents {
        self.segments
            .range(..segment)
            .fold(SegmentEvents::default(), |sum, (_, s)| SegmentEvents {
                appended: sum.appended + s.appended,
                live: sum.live + s.live,
            })
    }

    /// Forgets the counts of the segments the log deletes once commit `point` is the first
    /// it needs (every segment but the one that holds `point`, or starts after it).
    pub(super) fn forget_segments_before(&mut self, point: u64) {
        if let Some((&kept, _)) = self.segments.range(..=point).next_back() {
            self.segments = self.segments.split_off(&kept);
        }
    }

    /// The records that copy forward up to `limit` of the live events in the segments that
    /// start before commit `segment`, oldest first, which hold those segments back (an endpoint
    /// down for hours): each appended again for the endpoints that still have it, without
    /// changing the view of sandboxes a second time.
    pub(super) fn copies_forward(
        &self,
        log: &Log,
        segment: u64,
        limit: usize,
    ) -> Result<Vec<JournalRecord>, OutboxError> {
        let mut copies = Vec::new();
        let older = self
            .events
            .iter()
            .filter(|(_, e)| e.location.segment < segment)
            .take(limit);
        for (seq, event) in older {
            let JournalRecord::Appended {
                seq: stored,
                appended_at_ms,
                source,
                event,
                entry,
                ..
            } = JournalRecord::decode(&log.read(event.location)?)?
            else {
                return Err(OutboxError::Corrupt(format!(
                    "outbox log: the record of event {seq} is not the event"
                )));
            };
            let endpoints = self.pending.endpoints_with(seq);
            copies.push(JournalRecord::Appended {
                seq: stored,
                appended_at_ms,
                source,
                event,
                entry,
                endpoints,
                tracks_sandbox: false,
            });
        }
        Ok(copies)
    }

    /// The next sequence number to give out (1 in a new outbox).
    pub(super) fn next_seq(&self) -> u64 {
        self.next_seq.max(1)
    }

    /// Whether an event with this id was appended within the window.
    pub(super) fn knows_event(&self, id: &str) -> bool {
        self.event_ids.contains(id)
    }

    /// The event still pending here that stream entry `id` carries, if any.
    pub(super) fn entry_seq(&self, id: &str) -> Option<u64> {
        self.entries.get(&self.events, &EntryId::of(id))
    }

    /// Pending deliveries of `endpoint` numbered above `after`, oldest first.
    pub(super) fn pending_after(
        &self,
        endpoint: &str,
        after: u64,
        limit: usize,
    ) -> Vec<PendingDelivery> {
        self.pending
            .after(endpoint, after)
            .take(limit)
            .map(|(seq, tried)| PendingDelivery {
                seq,
                state: self.delivery_state(seq, tried),
            })
            .collect()
    }

    /// The state of delivering `seq`, as kept in `pending`, with its event's sandbox.
    fn delivery_state(&self, seq: u64, tried: Option<&Tried>) -> DeliveryState {
        let sandbox_id = self
            .events
            .get(seq)
            .map(|e| e.sandbox.to_string())
            .unwrap_or_default();
        match tried {
            Some(tried) => tried.state(sandbox_id),
            None => DeliveryState {
                sandbox_id,
                ..DeliveryState::default()
            },
        }
    }

    /// Stream entries whose events are still pending here.
    pub(super) fn live_entries(&self) -> Vec<StreamEntryRef> {
        self.events
            .values()
            .filter_map(|e| e.entry.as_ref().map(LiveEntry::to_ref))
            .collect()
    }

    /// Event ids remembered from before `cutoff_ms`.
    pub(super) fn ids_before(&self, cutoff_ms: i64) -> usize {
        self.event_ids.count_before(cutoff_ms)
    }

    /// The view of sandboxes.
    pub(super) fn sandboxes(&self) -> &KnownSandboxes {
        &self.sandboxes
    }

    /// Events not yet finished everywhere.
    pub(super) fn event_count(&self) -> u64 {
        self.events.len() as u64
    }

    /// Per endpoint with something pending, by name: how much, and its oldest delivery.
    pub(super) fn backlogs(&self) -> Vec<(String, u64, u64, DeliveryState)> {
        self.pending
            .backlogs()
            .into_iter()
            .map(|(endpoint, count, seq, tried)| {
                let state = self.delivery_state(seq, tried);
                (endpoint.to_owned(), count, seq, state)
            })
            .collect()
    }

    /// Where the `Appended` record of event `seq` is, while it is live.
    pub(super) fn event(&self, seq: u64) -> Option<&LiveEvent> {
        self.events.get(seq)
    }
}

#[cfg(test)]
#[path = "live_tests.rs"]
mod tests;
