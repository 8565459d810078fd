//! Copies every delivery attempt from the journal's live feed into Postgres's delivery log, in
//! batches. The feed never waits for this writer: if it falls behind, the attempts it missed
//! are left out of the log (and counted in a warning). It stops after the deliveries have
//! (`deliveries_done`), so attempts finished or canceled while the service drains are logged
//! too.

mod row;

use crate::deliver::journal::DeliveryJournal;
use crate::postgres::Database;
use crate::postgres::delivery_log::LoggedAttempt;
use std::time::Duration;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio_util::sync::CancellationToken;

/// Attempts stored in one statement at most.
const BATCH: usize = 500;
/// Attempts wait this long for more before a batch is written.
const BATCH_DELAY: Duration = Duration::from_millis(200);
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
const RETRY: Duration = Duration::from_secs(5);
/// How long the last write at a stop may take before what it holds is given up.
const LAST_WRITE: Duration = Duration::from_secs(5);
/// Attempts held in memory while Postgres cannot take them; past this the oldest are given up
/// (and logged with their number): the log is a record, delivery never waits for it.
const HELD_WHILE_FAILING: usize = BATCH * 20;

/// Writes the journal's attempts to `database` until `deliveries_done` (then what the feed
/// still holds), deleting those older than `retention` hourly.
pub async fn run(
    journal: &DeliveryJournal,
    database: Database,
    retention: Duration,
    deliveries_done: CancellationToken,
) {
    let mut feed = journal.subscribe();
    let mut batch: Vec<LoggedAttempt> = Vec::new();
    let mut prune_at = tokio::time::Instant::now();
    let mut flush_at = None;
    let mut failing = false;
    // Attempts given up during the current outage.
    let mut given_up = 0usize;
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
                    batch.push(row::logged(record));
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
                Err(RecvError::Closed) => break,
            },
            () = flush => {}
            () = tokio::time::sleep_until(prune_at) => {
                prune_at = tokio::time::Instant::now() + if prune(&database, retention).await { PRUNE_EVERY } else { RETRY };
                continue;
            }
            () = deliveries_done.cancelled() => break,
        }
        match database.store_attempts(&batch).await {
            Ok(()) => {
                if failing && given_up > 0 {
                    tracing::warn!(
                        given_up,
                        "writing the delivery log again; attempts made while its buffer was full are not in it (all were delivered or retried as usual)"
                    );
                }
                failing = false;
                given_up = 0;
                batch.clear();
                flush_at = None;
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "cannot write the delivery log yet; retrying");
                    failing = true;
                }
                // Keep at most a few batches while Postgres is away.
                if batch.len() > HELD_WHILE_FAILING {
                    if given_up == 0 {
                        tracing::warn!(
                            held = HELD_WHILE_FAILING,
                            "the delivery log's buffer is full: until Postgres is back, the oldest attempts are left out of it"
                        );
                    }
                    given_up += BATCH;
                    batch.drain(..BATCH);
                }
                flush_at = Some(tokio::time::Instant::now() + RETRY);
            }
        }
    }
    // Deliveries have stopped: what the feed still holds, then one last write.
    loop {
        match feed.try_recv() {
            Ok(record) if !record.test => batch.push(row::logged(record)),
            Ok(_) => {}
            Err(TryRecvError::Lagged(missed)) => {
                tracing::warn!(
                    missed,
                    "the delivery log fell behind; these attempts are not in it"
                );
            }
            Err(TryRecvError::Empty | TryRecvError::Closed) => break,
        }
    }
    if batch.is_empty() {
        return;
    }
    match tokio::time::timeout(LAST_WRITE, database.store_attempts(&batch)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, attempts = batch.len(), "stopping: the last delivery attempts are not in the delivery log")
        }
        Err(_) => {
            tracing::warn!(
                attempts = batch.len(),
                "stopping: the database did not answer; the last delivery attempts are not in the delivery log"
            )
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
