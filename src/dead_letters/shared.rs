//! The shared dead letters in Redis: replayed back onto the stream, for the active instance.

use super::{DeadLetterError, DeadLetterStore, Replayed};
use crate::outbox::DeadLetter;
use crate::source::redis::{RedisSettings, SharedDeadLetters};

/// The dead letters every instance shares in Redis; one connection per call, as calls are rare.
pub(super) struct SharedStore {
    settings: RedisSettings,
}

impl SharedStore {
    pub(super) fn new(settings: RedisSettings) -> Self {
        Self { settings }
    }
}

#[async_trait::async_trait]
impl DeadLetterStore for SharedStore {
    async fn list(&self) -> Result<Vec<DeadLetter>, DeadLetterError> {
        Ok(SharedDeadLetters::connect(&self.settings)
            .await?
            .list()
            .await?)
    }

    async fn replay(
        &self,
        ids: Option<&[u64]>,
        endpoint: Option<&str>,
    ) -> Result<Replayed, DeadLetterError> {
        let report = SharedDeadLetters::connect(&self.settings)
            .await?
            .replay(ids, endpoint)
            .await?;
        Ok(Replayed {
            replayed: report.replayed.iter().map(|(id, _)| *id).collect(),
            skipped: report.skipped,
            placed: report
                .replayed
                .into_iter()
                .map(|(id, entry)| (id, format!("back on the stream as entry {entry}")))
                .collect(),
        })
    }

    fn replayed_to(&self) -> &'static str {
        "onto the stream, for the active instance"
    }

    fn delivered(&self) -> &'static str {
        "the active instance delivers them now"
    }
}
