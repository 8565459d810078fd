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

impl EntryIndex {
    pub(super) fn get(&self, events: &SeqMap<LiveEvent>, id: &EntryId) -> Option<u64> {
        let hash = self.hasher.hash_one(id);
        self.seqs
            .find(hash, |seq| id_of(events, *seq) == Some(id))
            .copied()
    }

    /// Indexes event `seq`, already in `events`, under `id`; an id indexed before now finds it.
    pub(super) fn insert(&mut self, events: &SeqMap<LiveEvent>, id: &EntryId, seq: u64) {
        let hasher = &self.hasher;
        let hash = hasher.hash_one(id);
        let entry = self.seqs.entry(
            hash,
            |indexed| id_of(events, *indexed) == Some(id),
            |indexed| hasher.hash_one(id_of(events, *indexed)),
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
        let hash = self.hasher.hash_one(id);
        let found = self
            .seqs
            .find_entry(hash, |seq| id_of(events, *seq) == Some(id))
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
