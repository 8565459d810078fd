//! The outbox from outside the running service: read-only status and dead letters while it runs,
//! and with it stopped, moving the file aside and replaying dead letters.

use super::dead_letters::select_dead_letters;
use super::store::Store;
use super::{DeadLetter, MovedAside, OutboxError, OutboxStatus, ReplayReport, open};
use std::path::Path;

/// Read-only access for `status` and `dead-letters list` while the service runs.
pub struct OutboxReader {
    store: Store,
    path: std::path::PathBuf,
}

impl OutboxReader {
    /// Opens the outbox in `dir` without writing to it (a file left by an unclean exit is read
    /// through a repaired copy).
    pub fn open(dir: &Path) -> Result<Self, OutboxError> {
        Ok(Self {
            store: Store::open_read_only(dir)?,
            path: open::database_path(dir),
        })
    }

    /// Depth, oldest event and dead letters, per endpoint.
    pub fn status(&self) -> Result<OutboxStatus, OutboxError> {
        self.guarded(|store| store.status())
    }

    /// Every dead letter, oldest first.
    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>, OutboxError> {
        self.guarded(|store| store.dead_letters())
    }

    /// Every saved source state.
    pub fn states(&self) -> Result<Vec<(String, Vec<u8>)>, OutboxError> {
        self.guarded(|store| store.states())
    }

    /// A read-only open checks nothing up front (the service may be writing), so a page that
    /// is damaged shows up while reading: redb may panic on it.
    fn guarded<T>(
        &self,
        read: impl FnOnce(&Store) -> Result<T, OutboxError>,
    ) -> Result<T, OutboxError> {
        crate::util::panic::catch_quietly(|| read(&self.store)).unwrap_or_else(|panic| {
            Err(OutboxError::Damaged {
                path: self.path.clone(),
                reason: format!("redb: {panic}"),
            })
        })
    }
}

/// Moves a damaged or unwanted outbox aside (renamed, kept for inspection) so the next start
/// begins empty; refused while the service runs.
pub fn move_aside(dir: &Path) -> Result<MovedAside, OutboxError> {
    open::move_aside(dir, |_| {
        let reader = OutboxReader::open(dir).ok()?;
        let status = reader.status().ok()?;
        Some((status.events, status.dead_letters))
    })
}

/// Puts dead letters back into the outbox in `dir` (those of `endpoint` when given); needs the
/// service stopped (it holds the database) — while it runs, replay through its admin API.
pub fn replay_dead_letters(
    dir: &Path,
    ids: Option<&[u64]>,
    endpoint: Option<&str>,
) -> Result<ReplayReport, OutboxError> {
    let store = Store::open(dir, Vec::new(), false, super::FileSharing::WithReaders)?;
    let wanted = select_dead_letters(&store, ids, endpoint)?;
    store.replay(wanted.as_deref())
}
