//! The writer of the lifecycle history: events come over a bounded channel (the outbox never
//! waits for it) and are stored in batches; events older than the retention are deleted hourly.

use super::Database;
use crate::event::SandboxEvent;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Events buffered for the writer; past this they are left out of the history (and counted).
pub const BUFFER: usize = 10_000;
/// Events stored in one statement at most.
const BATCH: usize = 500;
/// Between attempts to store a batch while Postgres cannot take it.
const RETRY: Duration = Duration::from_secs(1);
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Until the schema is ready, pruning is tried this often.
const PRUNE_RETRY: Duration = Duration::from_secs(5);

/// Stores what arrives on its channel until shutdown.
pub struct HistoryWriter {
    database: Database,
    events: mpsc::Receiver<SandboxEvent>,
    retention: Duration,
}

impl HistoryWriter {
    /// A writer into `database`, keeping events for `retention`, and the sender to feed it.
    pub fn new(database: Database, retention: Duration) -> (Self, mpsc::Sender<SandboxEvent>) {
        let (tx, rx) = mpsc::channel(BUFFER);
        let writer = Self {
            database,
            events: rx,
            retention,
        };
        (writer, tx)
    }

    /// Writes batches and prunes until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut batch = Vec::with_capacity(BATCH);
        // The first pruning comes as soon as the schema is ready, then hourly.
        let mut prune_at = tokio::time::Instant::now();
        let mut failing = false;
        loop {
            if batch.is_empty() {
                tokio::select! {
                    received = self.events.recv_many(&mut batch, BATCH) => {
                        if received == 0 {
                            return;
                        }
                    }
                    _ = tokio::time::sleep_until(prune_at) => {
                        let wait = if self.prune().await { PRUNE_EVERY } else { PRUNE_RETRY };
                        prune_at = tokio::time::Instant::now() + wait;
                        continue;
                    }
                    _ = shutdown.cancelled() => return,
                }
            }
            match self.database.store_events(&batch).await {
                Ok(_) => {
                    if failing {
                        tracing::info!("storing lifecycle events in Postgres again");
                        failing = false;
                    }
                    batch.clear();
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "cannot store lifecycle events yet; retrying (events beyond the buffer are left out of the history)");
                        failing = true;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(RETRY) => {}
                        _ = shutdown.cancelled() => return,
                    }
                }
            }
        }
    }

    /// Deletes what is past the retention; false when the schema is not ready yet.
    async fn prune(&self) -> bool {
        if !self.database.is_ready() {
            return false;
        }
        let retention =
            jiff::SignedDuration::try_from(self.retention).unwrap_or(jiff::SignedDuration::MAX);
        let cutoff = jiff::Timestamp::now()
            .checked_sub(retention)
            .unwrap_or(jiff::Timestamp::MIN);
        match self.database.prune_events(cutoff).await {
            Ok(removed) => {
                tracing::debug!(removed, "lifecycle events past their retention deleted")
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot delete old lifecycle events; trying again in an hour")
            }
        }
        true
    }
}
