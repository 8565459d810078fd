//! The outbox's side of acknowledging after delivery: which stream entries are finished here
//! (delivered or dead-lettered for every endpoint), which dead letters still have to reach the
//! shared store, and which local events another instance has finished meanwhile.

use super::journal::JournalRecord;
use super::records::{DEAD, DEAD_EXPORT, decode};
use super::store::Store;
use super::{DeadLetter, OutboxError, StreamEntryRef};
use redb::ReadableTable;
use std::collections::HashSet;

/// Work for the Redis side. The entries are read before the dead letters, and an entry's
/// letters are kept before the record that finishes it is appended, so the dead letters of an
/// entry are always copied before the entry is acknowledged.
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
        let mut sync = StreamSync {
            acks: self.live().acks_after(None, limit),
            ..StreamSync::default()
        };
        let txn = self.begin_read()?;
        let export = txn.open_table(DEAD_EXPORT)?;
        let dead = txn.open_table(DEAD)?;
        for row in export.iter()?.take(limit) {
            let (id, _) = row?;
            if let Some(letter) = dead.get(id.value())? {
                sync.dead_letters
                    .push(decode("dead letter", letter.value())?);
            }
        }
        Ok(sync)
    }

    /// Forgets what the Redis side has done: dead letters copied, entries acknowledged.
    pub(super) fn stream_synced(&self, done: &StreamSync) -> Result<(), OutboxError> {
        if done.is_empty() {
            return Ok(());
        }
        if !done.dead_letters.is_empty() {
            let txn = self.begin_durable()?;
            {
                let mut export = txn.open_table(DEAD_EXPORT)?;
                let mut dead = txn.open_table(DEAD)?;
                for letter in &done.dead_letters {
                    export.remove(letter.id)?;
                    dead.remove(letter.id)?;
                }
            }
            self.commit_durable(txn)?;
        }
        if !done.acks.is_empty() {
            // Lost in a crash, an entry is acknowledged once more: it rides on the next commit,
            // without holding back appends meanwhile (nothing it does depends on their order).
            futures_executor::block_on(self.write_riding(vec![JournalRecord::Acknowledged {
                entries: done.acks.iter().map(|e| e.id.clone()).collect(),
            }]))?;
        }
        Ok(())
    }

    /// For each `(event id, entry id)` read from a stream: whether it is news here — a new
    /// event, or its own entry read again while its event is still pending here — as
    /// appending the batch would decide. Only news changes the view of sandboxes.
    pub(super) fn stream_news(&self, read: &[(String, String)]) -> Result<Vec<bool>, OutboxError> {
        let live = self.live();
        let mut seen = HashSet::new();
        Ok(read
            .iter()
            .map(|(event, entry)| {
                let new = seen.insert(event.as_str()) && !live.knows_event(event);
                new || live.entry_seq(entry).is_some()
            })
            .collect())
    }

    /// Stream entries whose events are still pending here.
    pub(super) fn live_entries(&self) -> Result<Vec<StreamEntryRef>, OutboxError> {
        Ok(self.live().live_entries())
    }

    /// Drops the events of `entries` for every endpoint without delivering them: another
    /// instance finished them (they are no longer pending in the consumer group).
    pub(super) fn forget_entries(&self, entries: &[String]) -> Result<usize, OutboxError> {
        let _writing = self.lock_writes();
        let here: Vec<String> = {
            let live = self.live();
            entries
                .iter()
                .filter(|id| live.entry_seq(id).is_some())
                .cloned()
                .collect()
        };
        if here.is_empty() {
            return Ok(0);
        }
        let forgotten = here.len();
        self.write_records(vec![JournalRecord::Forgotten { entries: here }])?;
        Ok(forgotten)
    }
}
