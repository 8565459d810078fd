//! Converting an outbox written before the segment log (issue 30): the events, pending
//! deliveries, retry schedules, event ids, view of sandboxes and entries to acknowledge that
//! `outbox.redb` held are appended to the log, then their tables are dropped from the file
//! (which keeps dead letters and source state). A copy of the file as it was is kept beside it,
//! and the file gets a table an older emitter cannot open, so that it refuses to start on an
//! outbox whose events it would not see instead of running with an empty one.

use super::journal::{JournalRecord, Snapshot};
use super::known_sandboxes::ViewChanges;
use super::recent_ids::RECENT_IDS_KEPT;
use super::records::{
    ACKS, EVENT_IDS, EVENTS, EventRecord, MOVED, NEXT_SEQ, PENDING, SANDBOXES, STATE,
    STREAM_ENTRIES, decode, read_counter,
};
use super::store::Store;
use super::{DeliveryState, OutboxError, StreamEntryRef, open};
use redb::{ReadableTable, ReadableTableMetadata, TableError};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

/// What the `events` table says to an older emitter.
const MOVED_NOTE: &str = "the events of this outbox are in outbox-log/ (e2b-webhook-emitter with \
    the segment log, issue 30); run that version, or restore the outbox.redb.before-log-* copy \
    with the older one";

impl Store {
    /// Converts the tables of an outbox written before the log, once.
    pub(super) fn migrate_hot_tables(&self) -> Result<(), OutboxError> {
        let txn = self.begin_read()?;
        let events = match txn.open_table(EVENTS) {
            Ok(events) => events,
            // Converted before, or never had them.
            Err(TableError::TableDoesNotExist(_) | TableError::TableTypeMismatch { .. }) => {
                drop(txn);
                return self.mark_moved();
            }
            Err(e) => return Err(e.into()),
        };
        if !events.is_empty()? {
            let path = open::database_path(self.dir());
            let stamp = jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ");
            let copy = path.with_file_name(format!("outbox.redb.before-log-{stamp}"));
            std::fs::copy(&path, &copy).map_err(|e| {
                OutboxError::Storage(format!("cannot copy {} aside: {e}", path.display()))
            })?;
        }
        let mut endpoints: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        let mut retries = Vec::new();
        for row in txn.open_table(PENDING)?.iter()? {
            let (key, value) = row?;
            let (endpoint, seq) = key.value();
            let state: DeliveryState = decode("pending", value.value())?;
            if state.was_tried() {
                retries.push(JournalRecord::Retry {
                    endpoint: endpoint.to_owned(),
                    seq,
                    state,
                });
            }
            endpoints.entry(seq).or_default().push(endpoint.to_owned());
        }
        let mut records = Vec::new();
        for row in events.iter()? {
            let (seq, value) = row?;
            let record: EventRecord = decode("event", value.value())?;
            let Some(endpoints) = endpoints.remove(&seq.value()) else {
                continue;
            };
            records.push(JournalRecord::Appended {
                seq: seq.value(),
                appended_at_ms: record.appended_at_ms,
                source: record.source,
                event: record.event,
                entry: record.entry,
                endpoints,
                tracks_sandbox: false,
            });
        }
        let mut snapshot = Snapshot {
            next_seq: read_counter(&txn.open_table(STATE)?, NEXT_SEQ)?,
            ..Snapshot::default()
        };
        // The newest ids only (a day of them can be millions), oldest first.
        let mut newest = BinaryHeap::new();
        for row in txn.open_table(EVENT_IDS)?.iter()? {
            let (id, at) = row?;
            newest.push(Reverse((at.value(), id.value().to_owned())));
            if newest.len() > RECENT_IDS_KEPT {
                newest.pop();
            }
        }
        snapshot.event_ids = newest
            .into_sorted_vec()
            .into_iter()
            .rev()
            .map(|Reverse((at, id))| (id, at))
            .collect();
        let mut view = ViewChanges::default();
        for row in txn.open_table(SANDBOXES)?.iter()? {
            let (_, value) = row?;
            view.set.push(decode("sandbox", value.value())?);
        }
        let mut acks = Vec::new();
        for row in txn.open_table(ACKS)?.iter()? {
            let (id, generation) = row?;
            acks.push(StreamEntryRef {
                id: id.value().to_owned(),
                generation: generation.value().to_owned(),
            });
        }
        drop(events);
        drop(txn);
        // After the events: a retry state applies to a delivery pending.
        records.push(JournalRecord::Snapshot(snapshot));
        records.extend(retries);
        records.push(JournalRecord::AckQueued { entries: acks });
        records.push(view.into());
        // Converting again after a crash in between appends the same facts again: no harm.
        {
            let _writing = self.lock_writes();
            self.write_records(records)?;
        }
        let txn = self.begin_durable()?;
        txn.delete_table(EVENTS)?;
        txn.delete_table(PENDING)?;
        txn.delete_table(EVENT_IDS)?;
        txn.delete_table(SANDBOXES)?;
        txn.delete_table(ACKS)?;
        txn.delete_table(STREAM_ENTRIES)?;
        txn.open_table(STATE)?.remove(NEXT_SEQ)?;
        self.commit_durable(txn)?;
        self.mark_moved()
    }

    /// Makes sure an older emitter refuses this file (see the module's comment).
    fn mark_moved(&self) -> Result<(), OutboxError> {
        let txn = self.begin_read()?;
        if let Ok(moved) = txn.open_table(MOVED)
            && moved.get("outbox-log")?.is_some()
        {
            return Ok(());
        }
        drop(txn);
        let txn = self.begin_durable()?;
        txn.open_table(MOVED)?.insert("outbox-log", MOVED_NOTE)?;
        self.commit_durable(txn)
    }
}
