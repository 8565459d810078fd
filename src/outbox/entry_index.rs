//! Stream entry id → the live event that carries it, as a table of sequence numbers alone: the
//! ids are read from the events themselves, so the index costs 9 bytes a pending event instead of
//! a key and a value (33).
//!
//! The index is kept in step with the events: a seq is indexed after its event is in `events`,
//! and taken out before the event is.

use super::live_keys::{EntryId, LiveEvent};
use super::seq_map::SeqMap;
use hashbrown::{DefaultHashBuilder, HashTable, hash_table::Entry};
use std::hash::BuildHasher;

#[derive(Debug, Default)]
pub(super) struct EntryIndex {
    seqs: HashTable<u64>,
    hasher: DefaultHashBuilder,
}

/// The entry id of live event `seq`.
fn id_of(events: &SeqMap<LiveEvent>, seq: u64) -> Option<&EntryId> {
    events.get(seq)?.entry.as_ref().map(|e| &e.id)
}

/// The one hash of an id, for lookups and for growing the table alike: hashed differently there
/// (it once hashed an `Option` of the id), no id indexed before a growth is found after it.
fn hash_of(hasher: &DefaultHashBuilder, id: &EntryId) -> u64 {
    hasher.hash_one(id)
}

impl EntryIndex {
    pub(super) fn get(&self, events: &SeqMap<LiveEvent>, id: &EntryId) -> Option<u64> {
        self.seqs
            .find(hash_of(&self.hasher, id), |seq| {
                id_of(events, *seq) == Some(id)
            })
            .copied()
    }

    /// Indexes event `seq`, already in `events`, under `id`; an id indexed before now finds it.
    pub(super) fn insert(&mut self, events: &SeqMap<LiveEvent>, id: &EntryId, seq: u64) {
        let hasher = &self.hasher;
        let entry = self.seqs.entry(
            hash_of(hasher, id),
            |indexed| id_of(events, *indexed) == Some(id),
            |indexed| id_of(events, *indexed).map_or(0, |id| hash_of(hasher, id)),
        );
        match entry {
            Entry::Occupied(mut found) => *found.get_mut() = seq,
            Entry::Vacant(slot) => {
                slot.insert(seq);
            }
        }
    }

    /// Takes `id` out, while its event is still in `events`; returns the seq it found.
    pub(super) fn remove(&mut self, events: &SeqMap<LiveEvent>, id: &EntryId) -> Option<u64> {
        let found = self
            .seqs
            .find_entry(hash_of(&self.hasher, id), |seq| {
                id_of(events, *seq) == Some(id)
            })
            .ok()?;
        Some(found.remove().0)
    }
}

impl PartialEq for EntryIndex {
    fn eq(&self, other: &Self) -> bool {
        let sorted = |index: &Self| {
            let mut seqs: Vec<u64> = index.seqs.iter().copied().collect();
            seqs.sort_unstable();
            seqs
        };
        sorted(self) == sorted(other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::live_keys::LiveEntry;
    use crate::outbox::log::Location;
    use std::sync::Arc;

    fn event(id: &EntryId, generation: &Arc<str>) -> LiveEvent {
        LiveEvent {
            location: Location {
                segment: 1,
                offset: 0,
            },
            commit: 1,
            entry: Some(LiveEntry {
                id: id.clone(),
                generation: generation.clone(),
            }),
            appended_at_ms: 0,
            sandbox: "sb".into(),
        }
    }

    #[test]
    fn every_id_is_found_after_the_table_grew_and_gone_once_removed() {
        let generation: Arc<str> = "g1".into();
        let ids: Vec<EntryId> = (0..5_000u64)
            .map(|n| EntryId::of(&format!("17335260{n:05}-{}", n % 3)))
            .chain((0..100).map(|n| EntryId::of(&format!("other-{n}"))))
            .collect();
        let mut events = SeqMap::default();
        let mut index = EntryIndex::default();
        for (seq, id) in (1..).zip(&ids) {
            events.insert(seq, event(id, &generation));
            index.insert(&events, id, seq);
        }
        for (seq, id) in (1..).zip(&ids) {
            assert_eq!(index.get(&events, id), Some(seq), "{id}");
        }
        for (seq, id) in (1..).zip(&ids).step_by(2) {
            assert_eq!(index.remove(&events, id), Some(seq), "{id}");
            events.remove(seq);
        }
        for (seq, id) in (1..).zip(&ids) {
            let expected = (seq % 2 == 0).then_some(seq);
            assert_eq!(index.get(&events, id), expected, "{id}");
        }
        assert_eq!(index.get(&events, &EntryId::of("1-0")), None);
    }
}
