//! Writing the outbox's records to the log, and applying them to the live set once their commit
//! is on disk: urgent records are waited for, riding ones go with the next commit (issue 30).

use super::OutboxError;
use super::journal::JournalRecord;
use super::live::Live;
use super::log::{Committed, Location, Log, LogError, PendingCommit, Urgency};
use super::open::LOG_DIR;
use super::store::{Store, closed};
use std::sync::{PoisonError, RwLockReadGuard, RwLockWriteGuard};
use tokio::sync::MutexGuard;

impl Store {
    /// The live set, to read.
    pub(super) fn live(&self) -> RwLockReadGuard<'_, Live> {
        self.live.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The live set, to change.
    pub(super) fn live_mut(&self) -> RwLockWriteGuard<'_, Live> {
        self.live.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Taken around deciding what to append and appending it, on a thread that may block (the
    /// blocking pool, or the runtime's thread at start, before anything else writes).
    pub(super) fn lock_writes(&self) -> MutexGuard<'_, ()> {
        futures_executor::block_on(self.write_lock.lock())
    }

    /// Appends `records` in one commit, waits on this thread until it is on disk, and applies
    /// them to the live set; returns the commit's number. The caller holds [`Self::lock_writes`].
    /// Not tokio's `blocking_recv`: the outbox is opened (and an old one migrated) from within
    /// the runtime at start, where that panics.
    pub(super) fn write_records(&self, records: Vec<JournalRecord>) -> Result<u64, OutboxError> {
        futures_executor::block_on(self.write_records_awaited(records))
    }

    /// As [`Self::write_records`], for records that may wait for the next urgent commit (at most
    /// the log's linger time), applied once that is on disk; awaited, so no thread waits. The
    /// caller does not hold the write lock: it is taken only to queue them, so that appends go
    /// on meanwhile.
    pub(super) async fn write_riding(
        &self,
        records: Vec<JournalRecord>,
    ) -> Result<u64, OutboxError> {
        let pending = {
            let _writing = self.write_lock.lock().await;
            self.send(&records, Urgency::WithNext)?
        };
        self.apply_committed(records, pending.wait().await)
    }

    /// As [`Self::write_records`], awaiting the commit instead of blocking the thread; the
    /// caller holds the write lock.
    pub(super) async fn write_records_awaited(
        &self,
        records: Vec<JournalRecord>,
    ) -> Result<u64, OutboxError> {
        let pending = self.send(&records, Urgency::Now)?;
        self.apply_committed(records, pending.wait().await)
    }

    fn send(
        &self,
        records: &[JournalRecord],
        urgency: Urgency,
    ) -> Result<PendingCommit, OutboxError> {
        let encoded = records.iter().map(JournalRecord::encode).collect();
        self.with_log(|log| Ok(log.append(encoded, urgency)))
    }

    /// Applies `records` to the live set once their commit is on disk; returns its number.
    pub(super) fn apply_committed(
        &self,
        records: Vec<JournalRecord>,
        committed: Result<Committed, LogError>,
    ) -> Result<u64, OutboxError> {
        let committed = committed.inspect_err(|e| {
            if e.disk_full() {
                *self
                    .out_of_room
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(e.to_string());
            }
        })?;
        let mut live = self.live_mut();
        for (record, location) in records.into_iter().zip(committed.locations) {
            live.apply(record, committed.number, location)?;
        }
        Ok(committed.number)
    }

    /// Runs `op` on the open log.
    pub(super) fn with_log<T>(
        &self,
        op: impl FnOnce(&Log) -> Result<T, OutboxError>,
    ) -> Result<T, OutboxError> {
        let log = self.log.read().unwrap_or_else(PoisonError::into_inner);
        match log.as_ref() {
            Some(log) => op(log),
            None => Err(closed()),
        }
    }

    /// Reads the record at `location` again (without the writer in a read-only store).
    pub(super) fn read_record(&self, location: Location) -> Result<JournalRecord, OutboxError> {
        JournalRecord::decode(&super::log::read_at(&self.dir.join(LOG_DIR), location)?)
    }
}
