//! The writer of the lifecycle history: events come over a bounded channel (the outbox never
//! waits for it) and are stored in batches; events older than the retention are deleted hourly.
//! While Postgres cannot take them, the channel (`EVENTS_HISTORY_BUFFER` events) and the batch
//! being retried hold what arrives; past that, events are left out of the history — counted by
//! the sender in `event_history_dropped`, and logged here when the buffer fills and, with their
//! number, when Postgres is back. Delivery never waits for any of it.

use super::Database;
use crate::event::SandboxEvent;
use prometheus_client::metrics::counter::Counter;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Events buffered for the writer unless the operator says otherwise.
pub const DEFAULT_BUFFER: usize = 10_000;
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
    /// Events the sender left out because the buffer was full (it counts them).
    dropped: Counter,
}

/// An outage as the writer tracks it, to say what it cost the history.
struct Outage {
    /// `dropped` at the last successful write before it (the buffer may fill while the first
    /// failing write waits for a connection).
    dropped_before: u64,
    /// Whether the full buffer has been reported.
    full_reported: bool,
}

impl HistoryWriter {
    /// A writer into `database`, keeping events for `retention`, buffering `buffer` events, and
    /// the sender to feed it; `dropped` is the counter the sender increments when it is full.
    pub fn new(
        database: Database,
        retention: Duration,
        buffer: usize,
        dropped: Counter,
    ) -> (Self, mpsc::Sender<SandboxEvent>) {
        let (tx, rx) = mpsc::channel(buffer.max(1));
        let writer = Self {
            database,
            events: rx,
            retention,
            dropped,
        };
        (writer, tx)
    }

    /// Writes batches and prunes until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut batch = Vec::with_capacity(BATCH);
        // The first pruning comes as soon as the schema is ready, then hourly.
        let mut prune_at = tokio::time::Instant::now();
        let mut outage: Option<Outage> = None;
        let mut dropped_at_last_write = self.dropped.get();
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
                    if let Some(outage) = outage.take() {
                        let left_out = self.dropped.get().saturating_sub(outage.dropped_before);
                        if left_out > 0 {
                            tracing::warn!(
                                left_out,
                                "storing lifecycle events in Postgres again; events received while the history's buffer was full are not in it (e2b_webhook_event_history_dropped_total); all were delivered"
                            );
                        } else {
                            tracing::info!(
                                "storing lifecycle events in Postgres again; the history missed none"
                            );
                        }
                    }
                    dropped_at_last_write = self.dropped.get();
                    batch.clear();
                }
                Err(e) => {
                    let outage = outage.get_or_insert_with(|| {
                        tracing::warn!(error = %e, buffer = self.events.max_capacity(), "cannot store lifecycle events yet; holding them and retrying (events beyond the buffer are left out of the history)");
                        Outage {
                            dropped_before: dropped_at_last_write,
                            full_reported: false,
                        }
                    });
                    if !outage.full_reported && self.events.capacity() == 0 {
                        tracing::warn!(
                            buffer = self.events.max_capacity(),
                            "the lifecycle history's buffer is full: until Postgres is back, further events are left out of the history (delivery goes on)"
                        );
                        outage.full_reported = true;
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
