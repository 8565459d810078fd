//! The event ids appended lately, so that a source sending an event again (a stream entry read
//! again after a crash, a publisher's retry, the events file read again at start) does not
//! deliver it twice.
//!
//! The window is bounded twice: by age (the service forgets ids older than a day) and by count
//! ([`RECENT_IDS_KEPT`]). The redb outbox kept a day of ids on disk, written with every event; in
//! memory and in every snapshot a day at 1 000 events/s would be 86 million ids (gigabytes). A
//! repeat the window no longer holds is delivered again with the same event id, which receivers
//! de-duplicate on (at least once, as documented).

use super::live_keys::SmallId;
use hashlink::LinkedHashMap;

/// Ids remembered at most: about 3 MiB in memory, a minute at 1 000 events/s, ten at 100/s;
/// far longer than a stream entry waits to be read again or a publisher retries.
pub(super) const RECENT_IDS_KEPT: usize = 65_536;

/// Event id → when it was appended (ms), oldest first.
#[derive(Debug, Default, PartialEq)]
pub(super) struct RecentIds {
    ids: LinkedHashMap<SmallId, i64>,
}

impl RecentIds {
    /// Remembers `id`, forgetting the oldest beyond [`RECENT_IDS_KEPT`].
    pub(super) fn remember(&mut self, id: &str, appended_at_ms: i64) {
        self.ids.insert(SmallId::of(id), appended_at_ms);
        while self.ids.len() > RECENT_IDS_KEPT {
            self.ids.pop_front();
        }
    }

    pub(super) fn contains(&self, id: &str) -> bool {
        self.ids.contains_key(&SmallId::of(id))
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
        self.ids
            .iter()
            .map(|(id, at)| (id.to_string(), *at))
            .collect()
    }

    /// The window a snapshot carried (oldest first), kept to the bound.
    pub(super) fn from_snapshot(ids: Vec<(String, i64)>) -> Self {
        let mut recent = Self::default();
        let skip = ids.len().saturating_sub(RECENT_IDS_KEPT);
        for (id, at) in ids.into_iter().skip(skip) {
            recent.remember(&id, at);
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
            recent.remember(&format!("event-{n}"), n as i64);
        }
        assert!(!recent.contains("event-9"));
        assert!(recent.contains("event-10"));
        assert!(recent.contains(&format!("event-{}", RECENT_IDS_KEPT + 9)));
        assert_eq!(recent.to_vec().len(), RECENT_IDS_KEPT);
    }

    #[test]
    fn ids_read_back_exactly_as_they_came() {
        let uuid = "0b8b8a4e-6f4e-4c4a-9a57-3a2f5d3b1c2d";
        let others = [
            "0B8B8A4E-6F4E-4C4A-9A57-3A2F5D3B1C2D",
            "0b8b8a4e6f4e4c4a9a573a2f5d3b1c2d",
            "{0b8b8a4e-6f4e-4c4a-9a57-3a2f5d3b1c2d}",
            "ev-1",
        ];
        assert!(matches!(SmallId::of(uuid), SmallId::Uuid(_)));
        let mut recent = RecentIds::default();
        for (n, id) in std::iter::once(uuid).chain(others).enumerate() {
            recent.remember(id, n as i64);
        }
        for id in std::iter::once(uuid).chain(others) {
            assert!(recent.contains(id), "{id}");
        }
        assert!(!recent.contains("0b8b8a4e-6f4e-4c4a-9a57-3a2f5d3b1c2e"));
        let back: Vec<String> = recent.to_vec().into_iter().map(|(id, _)| id).collect();
        assert_eq!(
            back,
            std::iter::once(uuid).chain(others).collect::<Vec<_>>()
        );
    }

    #[test]
    fn ids_older_than_the_cutoff_are_forgotten() {
        let mut recent = RecentIds::default();
        recent.remember("old", 10);
        recent.remember("new", 20);
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
