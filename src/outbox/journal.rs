//! The outbox's records in the segment log (issue 30): what happened to events, as small appended
//! facts the live set is rebuilt from at start (`live.rs`).
//!
//! Only [`JournalRecord::Appended`] is waited for before its event is delivered; every other
//! record rides on the next commit. Before the segments that hold them are deleted, what outlives
//! the events it came from is written again: a [`JournalRecord::Snapshot`] (the next sequence
//! number, the event-id window), then in pages of [`PAGE`] records, each a commit, the entries to
//! acknowledge ([`JournalRecord::AckQueued`]), the states of deliveries tried before
//! ([`JournalRecord::Retry`]) and the view of sandboxes ([`JournalRecord::ViewChanged`]). Each
//! page sets what it holds and clears nothing, so a round cut short by a crash harms nothing: the
//! segments it would have replaced are still there. Written whole, a view of a hundred thousand
//! sandboxes was cloned, encoded and copied twice at once (BENCHMARKS.md, issue 30's eighth
//! round).

use super::{DeliveryState, OutboxError, SandboxRecord, StreamEntryRef};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One fact, as it is appended to the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(super) enum JournalRecord {
    /// An event stored; pending for `endpoints`. With none, only its id (and its change to the
    /// view of sandboxes) is kept, and `seq` is 0: it takes no sequence number.
    Appended {
        seq: u64,
        appended_at_ms: i64,
        source: String,
        event: Value,
        /// The stream entry it came from, acknowledged once the event is finished.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        entry: Option<StreamEntryRef>,
        endpoints: Vec<String>,
        /// Whether the event changes the view of sandboxes (a replay for one endpoint does not).
        tracks_sandbox: bool,
    },
    /// A delivery failed and waits for its next attempt.
    Retry {
        endpoint: String,
        seq: u64,
        state: DeliveryState,
    },
    /// A delivery is over for an endpoint: delivered, dead-lettered, or its webhook removed.
    Finished { endpoint: String, seq: u64 },
    /// Entries with nothing (new) to deliver, to acknowledge.
    AckQueued { entries: Vec<StreamEntryRef> },
    /// Entries whose `XACK` is done.
    Acknowledged { entries: Vec<String> },
    /// Entries another instance finished: their events are dropped undelivered.
    Forgotten { entries: Vec<String> },
    /// Sandboxes set in the view and ids removed from it: after a snapshot, to carry the view
    /// forward, and to copy another instance's, never more than a page at once.
    ViewChanged {
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        set: Vec<SandboxRecord>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        removed: Vec<String>,
    },
    /// Event ids remembered before this time (ms) are forgotten.
    IdsPruned { before_ms: i64 },
    /// What outlives events and is small, as it stood at this point of the log.
    Snapshot(Snapshot),
}

/// The state a snapshot carries forward in one record: the rest grows with the backlog or the
/// cluster, and follows it in pages of other records.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct Snapshot {
    pub(super) next_seq: u64,
    /// At most `RECENT_IDS_KEPT` of them, oldest first.
    pub(super) event_ids: Vec<(String, i64)>,
}

/// Records per commit when what outlives events is written again in pages: about 0.2 MiB.
pub(super) const PAGE: usize = 1_024;

impl JournalRecord {
    pub(super) fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("journal records always serialize")
    }

    pub(super) fn decode(bytes: &[u8]) -> Result<Self, OutboxError> {
        serde_json::from_slice(bytes)
            .map_err(|e| OutboxError::Corrupt(format!("outbox log record: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back_as_written() {
        let records = [
            JournalRecord::Appended {
                seq: 3,
                appended_at_ms: 10,
                source: "redis".into(),
                event: serde_json::json!({"id": "e"}),
                entry: Some(StreamEntryRef {
                    id: "1-0".into(),
                    generation: "g".into(),
                }),
                endpoints: vec!["a".into()],
                tracks_sandbox: true,
            },
            JournalRecord::Finished {
                endpoint: "a".into(),
                seq: 3,
            },
            JournalRecord::Snapshot(Snapshot {
                next_seq: 4,
                ..Snapshot::default()
            }),
            JournalRecord::ViewChanged {
                set: Vec::new(),
                removed: vec!["sb".into()],
            },
        ];
        for record in records {
            assert_eq!(JournalRecord::decode(&record.encode()).unwrap(), record);
        }
        assert!(JournalRecord::decode(b"{\"kind\":\"unknown\"}").is_err());
    }
}
