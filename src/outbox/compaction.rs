//! Giving old segments of the log back: once it has more than two, a segment was started since
//! the previous round (or many commits were made), and at most a third of the events in the
//! segments before the newest are still live, those are appended again (for the endpoints that
//! still have them), a snapshot and pages after it (`journal.rs`) carry forward what outlives
//! events, and the segments before them are deleted.
//!
//! The third bounds what a round copies by what it gives back (each event copied frees the
//! space of two finished ones): a backlog that is all live (a receiver down for hours) stays
//! where it was written instead of being rewritten, and read back into memory, every round.

use super::OutboxError;
use super::journal::JournalRecord;
use super::journal::PAGE;
use super::known_sandboxes::ViewChanges;
use super::live::Live;
use super::store::Store;
use std::sync::atomic::Ordering;

/// Commits at least between rounds: each writes the snapshot (the event-id window) once more.
const COMPACT_EVERY: u64 = 256;

/// A page's records and where the next page starts after; `None` past the last.
pub(super) type Page<C> = Option<(Vec<JournalRecord>, C)>;

/// Events copied per commit: what a round holds in memory at once.
const COPY_BATCH: usize = 512;

impl Store {
    /// Runs a round when one is due. The caller holds [`Store::lock_writes`].
    pub(super) fn compact_if_due(&self) -> Result<(), OutboxError> {
        self.compact(false)
    }

    /// Runs a round whenever a segment besides the one written could go: on a full disk, where
    /// the next segment only fits once old ones are given back, and no delivery may be left to
    /// start a round once every event is finished. The caller holds [`Store::lock_writes`].
    pub(super) fn compact_now(&self) -> Result<(), OutboxError> {
        self.compact(true)
    }

    /// Runs a round when one is due, taking the write lock; a round that fails is tried again
    /// later (the segments only take disk meanwhile).
    pub(super) fn give_back_segments(&self) {
        let _writing = self.lock_writes();
        if let Err(e) = self.compact_if_due() {
            tracing::debug!(error = %e, "could not give old outbox log segments back yet");
        }
    }

    /// Whether a round is due (checked again under the write lock when it runs).
    pub(super) fn compaction_due(&self) -> bool {
        matches!(self.due_round(false), Ok(Some(_)))
    }

    fn compact(&self, now: bool) -> Result<(), OutboxError> {
        let Some((committed, newest)) = self.due_round(now)? else {
            return Ok(());
        };
        self.compacted_at.store(committed, Ordering::Relaxed);
        loop {
            let copies = {
                let live = self.live();
                self.with_log(|log| live.copies_forward(log, newest, COPY_BATCH))?
            };
            if copies.is_empty() {
                break;
            }
            self.write_records(copies)?;
        }
        let snapshot = JournalRecord::Snapshot(self.live().snapshot());
        let at = self.write_records(vec![snapshot])?;
        self.write_pages()?;
        let point = {
            let mut live = self.live_mut();
            let point = live.release_point(at);
            live.forget_segments_before(point);
            point
        };
        self.with_log(|log| {
            log.release_before(point);
            Ok(())
        })
    }

    /// Writes again, a page a commit, what a snapshot leaves out because it grows with the
    /// backlog or the cluster: the entries to acknowledge, the states of deliveries tried
    /// before, the view of sandboxes (see `journal.rs`). The caller holds
    /// [`Store::lock_writes`]; results recorded meanwhile only make a page older than the log
    /// around it, as they made the whole snapshot before.
    fn write_pages(&self) -> Result<(), OutboxError> {
        self.write_paged(acks_page)?;
        self.write_paged(retries_page)?;
        self.write_paged(view_page)
    }

    /// Writes the pages `page` gives, each after the last item of the one before, until it
    /// gives none; the live set is read under its lock, and the commit is made without it.
    fn write_paged<C>(
        &self,
        page: impl Fn(&Live, Option<&C>) -> Page<C>,
    ) -> Result<(), OutboxError> {
        let mut after = None;
        loop {
            let next = page(&self.live(), after.as_ref());
            let Some((records, last)) = next else {
                return Ok(());
            };
            self.write_records(records)?;
            after = Some(last);
        }
    }

    /// When a round is due (see [`Self::compact_now`] for `now`): the last commit and the
    /// first commit of the segment written, which the round copies events forward into.
    fn due_round(&self, now: bool) -> Result<Option<(u64, u64)>, OutboxError> {
        let (committed, segments, newest) = self.with_log(|log| {
            Ok((
                log.committed(),
                log.segment_count(),
                log.newest_segment_start(),
            ))
        })?;
        let previous = self.compacted_at.load(Ordering::Relaxed);
        // Due once the log has grown past the segment written and the one before, paced by the
        // space it takes (a new segment: commits of many events fill small segments in a few
        // commits, on a small disk) as well as by commits (each small, at a cluster's rates).
        let grown = newest > previous || committed >= previous + COMPACT_EVERY;
        let due = if now {
            segments > 1
        } else {
            let older = self.live().events_in_segments_before(newest);
            segments > 2 && grown && older.live * 3 <= older.appended
        };
        Ok(due.then_some((committed, newest)))
    }
}

/// The page of entries to acknowledge after the one `after` names, and the last of them.
pub(super) fn acks_page(live: &Live, after: Option<&String>) -> Page<String> {
    let entries = live.acks_after(after.map(String::as_str), PAGE);
    let last = entries.last()?.id.clone();
    Some((vec![JournalRecord::AckQueued { entries }], last))
}

/// The page of retry states after the (endpoint, seq) `after` names, and the last of them.
pub(super) fn retries_page(live: &Live, after: Option<&(String, u64)>) -> Page<(String, u64)> {
    let after = after.map(|(endpoint, seq)| (endpoint.as_str(), *seq));
    let retries = live.retries_after(after, PAGE);
    let last = retries
        .last()
        .map(|(endpoint, seq, _)| (endpoint.clone(), *seq))?;
    let records = retries
        .into_iter()
        .map(|(endpoint, seq, state)| JournalRecord::Retry {
            endpoint,
            seq,
            state,
        })
        .collect();
    Some((records, last))
}

/// The page of the view of sandboxes after page `before`, and its number. The view holds still
/// while a round writes it: only appends change it, and they wait for the write lock.
pub(super) fn view_page(live: &Live, before: Option<&usize>) -> Page<usize> {
    let number = before.map_or(0, |n| n + 1);
    let set = live.sandboxes().page(number, PAGE);
    let removed = Vec::new();
    (!set.is_empty()).then(|| (vec![ViewChanges { set, removed }.into()], number))
}
