//! The event ids appended lately, so that a source sending an event again (a stream entry read
//! again after a crash, a publisher's retry, the events file read again at start) does not
//! deliver it twice.
//!
//! The window is bounded twice: by age (the service forgets ids older than a day) and by count
//! ([`RECENT_IDS_KEPT`]). The redb outbox kept a day of ids on disk, written with every event; in
//! memory and in every snapshot a day at 1 000 events/s would be 86 million ids (gigabytes). A
//! repeat the window no longer holds is delivered again with the same event id, which receivers
//! de-duplicate on (at least once, as documented).

use hashlink::LinkedHashMap;

/// Ids remembered at most: about 6 MiB in memory, a minute at 1 000 events/s, ten at 100/s;
/// far longer than a stream entry waits to be read again or a publisher retries.
pub(super) const RECENT_IDS_KEPT: usize = 65_536;

/// Event id → when it was appended (ms), oldest first.
#[derive(Debug, Default, PartialEq)]
pub(super) struct RecentIds {
    ids: LinkedHashMap<String, i64>,
}

impl RecentIds {
    /// Remembers `id`, forgetting the oldest beyond [`RECENT_IDS_KEPT`].
    pub(super) fn remember(&mut self, id: String, appended_at_ms: i64) {
        self.ids.insert(id, appended_at_ms);
        while self.ids.len() > RECENT_IDS_KEPT {
            self.ids.pop_front();
        }
    }

    pub(super) fn contains(&self, id: &str) -> bool {
        self.ids.contains_key(id)
    }

    /// Forgets the ids appended before `before_ms`.
    pub(super) fn forget_before(&mut self, before_ms: i64) {
        self.ids.retain(|_, at| *at >= before_ms);
    }

    /// How many ids were appended before `before_ms`.
    pub(super) fn count_before(&self, before_ms: i64) -> usize {
        self.ids.values().filter(|at| **at < before_ms).count()
    }

    /// The ids, oldest first, as a snapshot carries them.
    pub(super) fn to_vec(&self) -> Vec<(String, i64)> {
        self.ids.iter().map(|(id, at)| (id.clone(), *at)).collect()
    }

    /// The window a snapshot carried (oldest first), kept to the bound.
    pub(super) fn from_snapshot(ids: Vec<(String, i64)>) -> Self {
        let mut recent = Self::default();
        let skip = ids.len().saturating_sub(RECENT_IDS_KEPT);
        for (id, at) in ids.into_iter().skip(skip) {
            recent.remember(id, at);
        }
        recent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_ids_go_beyond_the_bound() {
        let mut recent = RecentIds::default();
        for n in 0..RECENT_IDS_KEPT + 10 {
            recent.remember(format!("event-{n}"), n as i64);
        }
        assert!(!recent.contains("event-9"));
        assert!(recent.contains("event-10"));
        assert!(recent.contains(&format!("event-{}", RECENT_IDS_KEPT + 9)));
        assert_eq!(recent.to_vec().len(), RECENT_IDS_KEPT);
    }

    #[test]
    fn ids_older_than_the_cutoff_are_forgotten() {
        let mut recent = RecentIds::default();
        recent.remember("old".into(), 10);
        recent.remember("new".into(), 20);
        assert_eq!(recent.count_before(15), 1);
        recent.forget_before(15);
        assert!(!recent.contains("old"));
        assert!(recent.contains("new"));
        assert_eq!(recent.count_before(15), 0);
    }

    #[test]
    fn a_snapshot_larger_than_the_bound_keeps_its_newest_ids() {
        let ids: Vec<_> = (0..RECENT_IDS_KEPT + 3)
            .map(|n| (format!("event-{n}"), n as i64))
            .collect();
        let recent = RecentIds::from_snapshot(ids.clone());
        assert!(!recent.contains("event-2"));
        assert!(recent.contains("event-3"));
        assert_eq!(recent.to_vec(), ids[3..]);
    }
}
