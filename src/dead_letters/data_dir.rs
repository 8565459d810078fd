//! The dead letters in a stopped service's data directory: replayed into its outbox file,
//! delivered when the service runs again.

use super::{DeadLetterError, DeadLetterStore, Replayed};
use crate::outbox::{DeadLetter, OutboxReader};
use std::path::PathBuf;

/// The outbox in a data directory, opened for each call.
pub(super) struct DataDirStore {
    dir: PathBuf,
}

impl DataDirStore {
    pub(super) fn new(dir: PathBuf) -> Self {
        Self { dir }
    }
}

#[async_trait::async_trait]
impl DeadLetterStore for DataDirStore {
    async fn list(&self) -> Result<Vec<DeadLetter>, DeadLetterError> {
        Ok(OutboxReader::open(&self.dir)?.dead_letters()?)
    }

    async fn replay(
        &self,
        ids: Option<&[u64]>,
        endpoint: Option<&str>,
    ) -> Result<Replayed, DeadLetterError> {
        let report = crate::outbox::replay_dead_letters(&self.dir, ids, endpoint)?;
        Ok(Replayed {
            replayed: report.replayed,
            skipped: report.skipped,
            placed: Vec::new(),
        })
    }

    fn replayed_to(&self) -> &'static str {
        "into the outbox"
    }

    fn delivered(&self) -> &'static str {
        "they are delivered when the service runs"
    }
}
