//! A running service's own dead letters, in its outbox: replayed into it, delivered at once.

use super::{DeadLetterError, DeadLetterStore, Replayed};
use crate::outbox::{DeadLetter, Outbox};

/// This instance's outbox.
pub(super) struct OutboxStore {
    outbox: Outbox,
}

impl OutboxStore {
    pub(super) fn new(outbox: Outbox) -> Self {
        Self { outbox }
    }
}

#[async_trait::async_trait]
impl DeadLetterStore for OutboxStore {
    async fn list(&self) -> Result<Vec<DeadLetter>, DeadLetterError> {
        Ok(self.outbox.dead_letters().await?)
    }

    async fn replay(
        &self,
        ids: Option<&[u64]>,
        endpoint: Option<&str>,
    ) -> Result<Replayed, DeadLetterError> {
        let report = self
            .outbox
            .replay_dead_letters(ids.map(<[u64]>::to_vec), endpoint.map(str::to_owned))
            .await?;
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
        "the running service delivers them now"
    }
}
