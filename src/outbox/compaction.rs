//! Giving old segments of the log back: once it has more than two, and not more often than
//! every so many commits, the events still live from before the previous round are appended again (for the endpoints that still have them), a
//! snapshot carries forward what outlives events, and the segments before both are deleted.

use super::OutboxError;
use super::journal::JournalRecord;
use super::store::Store;
use std::sync::atomic::Ordering;

/// Commits at least between rounds: each writes the snapshot (the event-id window) once more.
const COMPACT_EVERY: u64 = 256;

impl Store {
    /// Runs a round when one is due. The caller holds [`Store::lock_writes`].
    pub(super) fn compact_if_due(&self) -> Result<(), OutboxError> {
        let (committed, segments) =
            self.with_log(|log| Ok((log.committed(), log.segment_count())))?;
        let previous = self.compacted_at.load(Ordering::Relaxed);
        // Due once the log has grown past the segment written and the one before.
        if segments <= 2 || committed < previous + COMPACT_EVERY {
            return Ok(());
        }
        self.compacted_at.store(committed, Ordering::Relaxed);
        let copies = {
            let live = self.live();
            self.with_log(|log| live.copies_forward(log, previous))?
        };
        if !copies.is_empty() {
            self.write_records(copies)?;
        }
        let snapshot = JournalRecord::Snapshot(self.live().snapshot());
        let at = self.write_records(vec![snapshot])?;
        let point = self.live().release_point(at);
        self.with_log(|log| {
            log.release_before(point);
            Ok(())
        })
    }
}
