//! The events appended last, kept in memory as well as on disk, so that a dispatcher delivers a
//! fresh event without reading it back and decoding it again. Appends that outpace deliveries
//! push the oldest out; those, and everything after a restart, are read from disk as before.
//! Nothing here decides what is delivered: pending rows on disk do. A sequence number is kept
//! only after its append committed, and committed numbers are never given out again, so an entry
//! here is never another event than the one on disk.

use super::StoredEvent;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

/// How many events are kept. At full rate an event waits a few milliseconds between its append
/// and its delivery, a few hundred events at most; a burst beyond this is read from disk.
pub(super) const RECENT_EVENTS: usize = 1024;

/// Sequence number → event, for the newest appended events not yet finished everywhere.
pub(super) struct RecentEvents {
    events: Mutex<BTreeMap<u64, Arc<StoredEvent>>>,
    capacity: usize,
}

impl RecentEvents {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            events: Mutex::default(),
            capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<StoredEvent>>> {
        self.events.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps newly appended events, dropping the oldest beyond the capacity.
    pub(super) fn keep(&self, appended: impl IntoIterator<Item = (u64, StoredEvent)>) {
        let mut events = self.lock();
        for (seq, event) in appended {
            events.insert(seq, Arc::new(event));
        }
        while events.len() > self.capacity {
            events.pop_first();
        }
    }

    /// The events of `seqs` that are here, in order (`None` for the others).
    pub(super) fn get(&self, seqs: &[u64]) -> Vec<Option<Arc<StoredEvent>>> {
        let events = self.lock();
        seqs.iter().map(|seq| events.get(seq).cloned()).collect()
    }

    /// Forgets events removed from the outbox.
    pub(super) fn forget(&self, seqs: &[u64]) {
        let mut events = self.lock();
        for seq in seqs {
            events.remove(seq);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::SandboxEvent;

    fn stored(n: u64) -> StoredEvent {
        let json = format!(
            r#"{{"id":"e{n}","version":"v2","type":"sandbox.lifecycle.created","sandbox_id":"s{n}","sandbox_team_id":"00000000-0000-4000-8000-000000000001"}}"#
        );
        StoredEvent {
            event: SandboxEvent::parse(json.as_bytes()).expect("a valid event"),
            appended_at_ms: n as i64,
            source: "test".into(),
        }
    }

    #[test]
    fn keeps_the_newest_up_to_its_capacity() {
        let recent = RecentEvents::new(3);
        recent.keep((1..=5).map(|n| (n, stored(n))));
        let got: Vec<Option<i64>> = recent
            .get(&[1, 2, 3, 4, 5, 6])
            .iter()
            .map(|e| e.as_ref().map(|e| e.appended_at_ms))
            .collect();
        assert_eq!(got, [None, None, Some(3), Some(4), Some(5), None]);
    }

    #[test]
    fn forgets_finished_events() {
        let recent = RecentEvents::new(10);
        recent.keep((1..=3).map(|n| (n, stored(n))));
        recent.forget(&[2]);
        assert_eq!(
            recent
                .get(&[1, 2, 3])
                .iter()
                .map(Option::is_some)
                .collect::<Vec<_>>(),
            [true, false, true]
        );
    }
}
