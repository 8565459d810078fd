//! The outbox's side of acknowledging after delivery: which stream entries are finished here
//! (delivered or dead-lettered for every endpoint), which dead letters still have to reach the
//! shared store, and which local events another instance has finished meanwhile.

use super::records::{
    ACKS, DEAD, DEAD_EXPORT, EVENT_IDS, EVENTS, LiveEntry, PENDING, STREAM_ENTRIES, decode,
};
use super::store::Store;
use super::{DeadLetter, OutboxError, StreamEntryRef};
use redb::ReadableTable;
use std::collections::HashSet;

/// Work for the Redis side, read in one transaction so that the dead letters of an entry are
/// always copied before the entry is acknowledged.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct StreamSync {
    /// Dead letters to copy to the shared store, then forget here.
    pub dead_letters: Vec<DeadLetter>,
    /// Entries finished here, to acknowledge with `XACK`.
    pub acks: Vec<StreamEntryRef>,
}

impl StreamSync {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.dead_letters.is_empty() && self.acks.is_empty()
    }
}

impl Store {
    pub(super) fn stream_sync(&self, limit: usize) -> Result<StreamSync, OutboxError> {
        let txn = self.begin_read()?;
        let export = txn.open_table(DEAD_EXPORT)?;
        let dead = txn.open_table(DEAD)?;
        let acks = txn.open_table(ACKS)?;
        let mut sync = StreamSync::default();
        for row in export.iter()?.take(limit) {
            let (id, _) = row?;
            if let Some(letter) = dead.get(id.value())? {
                sync.dead_letters
                    .push(decode("dead letter", letter.value())?);
            }
        }
        for row in acks.iter()?.take(limit) {
            let (id, generation) = row?;
            sync.acks.push(StreamEntryRef {
                id: id.value().to_owned(),
                generation: generation.value().to_owned(),
            });
        }
        Ok(sync)
    }

    /// Forgets what the Redis side has done: dead letters copied, entries acknowledged.
    pub(super) fn stream_synced(&self, done: &StreamSync) -> Result<(), OutboxError> {
        if done.is_empty() {
            return Ok(());
        }
        let txn = self.begin_durable()?;
        {
            let mut export = txn.open_table(DEAD_EXPORT)?;
            let mut dead = txn.open_table(DEAD)?;
            let mut acks = txn.open_table(ACKS)?;
            for letter in &done.dead_letters {
                export.remove(letter.id)?;
                dead.remove(letter.id)?;
            }
            for entry in &done.acks {
                acks.remove(entry.id.as_str())?;
            }
        }
        self.commit_durable(txn)
    }

    /// For each `(event id, entry id)` read from a stream: whether it is news here — a new
    /// event, or its own entry read again while its event is still pending here — as
    /// appending the batch would decide. Only news changes the view of sandboxes.
    pub(super) fn stream_news(&self, read: &[(String, String)]) -> Result<Vec<bool>, OutboxError> {
        let txn = self.begin_read()?;
        let ids = txn.open_table(EVENT_IDS)?;
        let live = txn.open_table(STREAM_ENTRIES)?;
        let mut seen = HashSet::new();
        read.iter()
            .map(|(event, entry)| {
                let new = seen.insert(event.as_str()) && ids.get(event.as_str())?.is_none();
                Ok(new || live.get(entry.as_str())?.is_some())
            })
            .collect()
    }

    /// Stream entries whose events are still pending here.
    pub(super) fn live_entries(&self) -> Result<Vec<StreamEntryRef>, OutboxError> {
        let txn = self.begin_read()?;
        let live = txn.open_table(STREAM_ENTRIES)?;
        let mut out = Vec::new();
        for row in live.iter()? {
            let (id, value) = row?;
            let entry: LiveEntry = decode("stream entry", value.value())?;
            out.push(StreamEntryRef {
                id: id.value().to_owned(),
                generation: entry.generation,
            });
        }
        Ok(out)
    }

    /// Drops the events of `entries` for every endpoint without delivering them: another
    /// instance finished them (they are no longer pending in the consumer group).
    pub(super) fn forget_entries(&self, entries: &[String]) -> Result<usize, OutboxError> {
        let txn = self.begin_durable()?;
        let mut forgotten = 0;
        {
            let mut live = txn.open_table(STREAM_ENTRIES)?;
            let mut events = txn.open_table(EVENTS)?;
            let mut pending = txn.open_table(PENDING)?;
            let routes = self.routes();
            for id in entries {
                let Some(row) = live.remove(id.as_str())? else {
                    continue;
                };
                let entry: LiveEntry = decode("stream entry", row.value())?;
                drop(row);
                events.remove(entry.seq)?;
                for route in routes.all() {
                    pending.remove((route.endpoint.as_str(), entry.seq))?;
                }
                forgotten += 1;
            }
        }
        self.commit_durable(txn)?;
        Ok(forgotten)
    }
}
