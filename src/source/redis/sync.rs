//! Acknowledging after delivery: copies new dead letters to Redis, then `XACK`s the entries
//! the outbox has finished (delivered or dead-lettered for every endpoint that wants them).
//!
//! It runs on active and standby instances alike: an entry finished here was delivered, so
//! acknowledging it is right whoever holds the lease. Both steps use what one outbox read
//! returned, so an entry is never acknowledged before its dead letters are in Redis. Entries of
//! an older Redis generation (Redis restarted without its data) are forgotten, not acknowledged:
//! their ids mean nothing to the new data set.

use super::keys::Keys;
use super::{RedisClient, RedisConnection, dead_letters};
use crate::outbox::{Outbox, StreamSync};
use redis::{AsyncCommands, RedisError};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Entries and dead letters handled per round.
const SYNC_BATCH: usize = 1024;
/// Rounds happen when the outbox reports finished work, and at least this often.
const SYNC_EVERY: Duration = Duration::from_millis(500);
/// After the outbox reports finished work, what finishes meanwhile joins the round: every round
/// ends in an outbox commit with an fsync, and appends wait for it (redb has one writer).
const SYNC_GATHER: Duration = Duration::from_millis(50);
/// Waits between reconnection attempts.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

pub(crate) struct StreamSyncer {
    pub(crate) client: Arc<RedisClient>,
    pub(crate) keys: Keys,
    pub(crate) group: String,
    pub(crate) outbox: Outbox,
    /// The generation of the Redis data set, as the consuming loop last read it.
    pub(crate) generation: watch::Receiver<Option<String>>,
}

impl StreamSyncer {
    /// Runs until `stop`, then syncs once more (after the dispatchers drained).
    pub(crate) async fn run(mut self, stop: CancellationToken) {
        let mut last_problem: Option<String> = None;
        while !stop.is_cancelled() {
            let result = match self.client.connect().await {
                Ok(mut conn) => self.sync_until(&mut conn, &stop).await,
                Err(e) => Err(SyncError::Redis(e)),
            };
            match result {
                Ok(()) => break,
                Err(e) => {
                    let problem = e.to_string();
                    if last_problem.as_deref() != Some(&problem) {
                        tracing::warn!(error = %problem, "cannot acknowledge finished stream entries yet; they stay pending in Redis and are retried");
                        last_problem = Some(problem);
                    }
                }
            }
            tokio::select! {
                () = stop.cancelled() => {}
                () = tokio::time::sleep(RECONNECT_DELAY) => {}
            }
        }
        // Last round: what the drain delivered is acknowledged now, not re-delivered by the
        // next active instance.
        let last = async {
            let mut conn = self.client.connect().await.map_err(SyncError::Redis)?;
            while self.round(&mut conn).await? {}
            Ok::<(), SyncError>(())
        };
        if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(3), last).await {
            tracing::warn!(error = %e, "could not acknowledge the last finished entries; the next active instance delivers them again");
        }
    }

    async fn sync_until(
        &mut self,
        conn: &mut RedisConnection,
        stop: &CancellationToken,
    ) -> Result<(), SyncError> {
        loop {
            while self.round(conn).await? {}
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                () = self.outbox.entries_finished() => {
                    tokio::select! {
                        () = stop.cancelled() => return Ok(()),
                        () = tokio::time::sleep(SYNC_GATHER) => {}
                    }
                }
                () = tokio::time::sleep(SYNC_EVERY) => {}
            }
        }
    }

    /// One batch; true when there may be more.
    async fn round(&mut self, conn: &mut RedisConnection) -> Result<bool, SyncError> {
        let Some(generation) = self.generation.borrow().clone() else {
            return Ok(false);
        };
        let work = self
            .outbox
            .stream_sync(SYNC_BATCH)
            .await
            .map_err(|e| SyncError::Outbox(e.to_string()))?;
        if work.is_empty() {
            return Ok(false);
        }
        dead_letters::store(conn, &self.keys, &work.dead_letters)
            .await
            .map_err(SyncError::Redis)?;
        let current: Vec<&str> = work
            .acks
            .iter()
            .filter(|a| a.generation == generation)
            .map(|a| a.id.as_str())
            .collect();
        if !current.is_empty() {
            let _acked: usize = conn
                .xack(&self.keys.stream, &self.group, &current)
                .await
                .map_err(SyncError::Redis)?;
        }
        let more = work.acks.len() >= SYNC_BATCH || work.dead_letters.len() >= SYNC_BATCH;
        self.outbox
            .stream_synced(StreamSync { ..work })
            .await
            .map_err(|e| SyncError::Outbox(e.to_string()))?;
        Ok(more)
    }
}

#[derive(Debug, thiserror::Error)]
enum SyncError {
    #[error("Redis: {0}")]
    Redis(RedisError),
    #[error("outbox: {0}")]
    Outbox(String),
}
