//! Copies every delivery attempt from the journal's live feed into Postgres's delivery log, in
//! batches. The feed never waits for this writer: if it falls behind, the attempts it missed
//! are left out of the log (and counted in a warning).

use crate::deliver::journal::{DeliveryJournal, DeliveryRecord};
use crate::postgres::Database;
use crate::postgres::delivery_log::AttemptRow;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

/// Attempts stored in one statement at most.
const BATCH: usize = 500;
/// Attempts wait this long for more before a batch is written.
const BATCH_DELAY: Duration = Duration::from_millis(200);
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
const RETRY: Duration = Duration::from_secs(5);

/// Writes the journal's attempts to `database` until `shutdown`, deleting those older than
/// `retention` hourly.
pub async fn run(
    journal: &DeliveryJournal,
    database: Database,
    retention: Duration,
    shutdown: CancellationToken,
) {
    let mut feed = journal.subscribe();
    let mut batch: Vec<AttemptRow> = Vec::new();
    let mut prune_at = tokio::time::Instant::now();
    let mut flush_at = None;
    let mut failing = false;
    loop {
        let flush = async {
            match flush_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            received = feed.recv() => match received {
                Ok(record) if !record.test => {
                    batch.push(row(record));
                    flush_at.get_or_insert(tokio::time::Instant::now() + BATCH_DELAY);
                    if batch.len() < BATCH {
                        continue;
                    }
                }
                Ok(_) => continue,
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "the delivery log fell behind; these attempts are not in it");
                    continue;
                }
                Err(RecvError::Closed) => return,
            },
            () = flush => {}
            () = tokio::time::sleep_until(prune_at) => {
                prune_at = tokio::time::Instant::now() + if prune(&database, retention).await { PRUNE_EVERY } else { RETRY };
                continue;
            }
            () = shutdown.cancelled() => return,
        }
        match database.store_attempts(&batch).await {
            Ok(()) => {
                failing = false;
                batch.clear();
                flush_at = None;
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "cannot write the delivery log yet; retrying");
                    failing = true;
                }
                // Keep at most a few batches while Postgres is away.
                if batch.len() > BATCH * 20 {
                    batch.drain(..BATCH);
                }
                flush_at = Some(tokio::time::Instant::now() + RETRY);
            }
        }
    }
}

async fn prune(database: &Database, retention: Duration) -> bool {
    if !database.is_ready() {
        return false;
    }
    let retention = jiff::SignedDuration::try_from(retention).unwrap_or(jiff::SignedDuration::MAX);
    let cutoff = jiff::Timestamp::now()
        .checked_sub(retention)
        .unwrap_or(jiff::Timestamp::MIN);
    if let Err(e) = database.prune_attempts(cutoff).await {
        tracing::warn!(error = %e, "cannot delete old delivery log entries; trying again in an hour");
    }
    true
}

fn row(record: DeliveryRecord) -> AttemptRow {
    let error_class = match (&record.error, record.status) {
        (None, _) => None,
        (Some(_), Some(_)) => Some("http"),
        (Some(e), None) if e.starts_with("timed out") => Some("timeout"),
        (Some(_), None) => Some("network"),
    };
    AttemptRow {
        attempted_at: jiff::Timestamp::from_millisecond(record.at_ms)
            .unwrap_or_else(|_| jiff::Timestamp::now()),
        endpoint: record.endpoint,
        event_id: record.event_id,
        sandbox_id: record.sandbox_id,
        event_type: record.label,
        attempt: record.attempt,
        outcome: record.outcome,
        status: record.status,
        error_class: error_class.map(str::to_owned),
        error: record.error,
        duration_ms: record.latency_ms,
    }
}
