//! The consumer group: the data set's generation and creating the group, taking over its whole pending list when this instance
//! becomes active, claiming what other consumers left, reporting its lag, and trimming the
//! stream up to what the group has finished (never past a pending entry).

use super::reply::parse_autoclaim_reply;
use super::{
    BATCH, FORGET_CONSUMER_AFTER, RedisConnection, RedisSourceError, RedisStreamSource,
    TOMBSTONE_SWEEP_EVERY, tombstones, view,
};
use crate::health::StreamProgress;
use redis::streams::{
    StreamInfoConsumersReply, StreamInfoGroupsReply, StreamPendingReply, StreamTrimOptions,
    StreamTrimmingMode,
};
use redis::{AsyncCommands, RedisError};
use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;
use tokio::time::Instant;
use uuid::Uuid;

impl RedisStreamSource {
    /// Becoming active: claims every entry pending in the group, in stream order, into the
    /// outbox; forgets local events whose entries another instance finished meanwhile; then
    /// lets the dispatchers deliver. Returns the group's last delivered id (where waiting for
    /// new entries starts), or `None` when the lease was lost meanwhile.
    pub(super) async fn take_over(
        &mut self,
        conn: &mut RedisConnection,
        generation: &str,
        term: u64,
    ) -> Result<Option<String>, RedisSourceError> {
        let started = Instant::now();
        self.build_view(conn).await?;
        let mut claimed = HashSet::new();
        if !self
            .claim(conn, generation, Duration::ZERO, Some(&mut claimed))
            .await?
        {
            return Ok(None);
        }
        let local = self.outbox.live_entries().await?;
        let finished_elsewhere: Vec<String> = local
            .into_iter()
            .filter(|e| e.generation == generation && !claimed.contains(&e.id))
            .map(|e| e.id)
            .collect();
        let forgotten = if finished_elsewhere.is_empty() {
            0
        } else {
            self.outbox.forget_entries(finished_elsewhere).await?
        };
        // From now on this instance's reads go to both views alike; what others read comes
        // with the copy.
        self.copy_view_now(conn).await?;
        // A sweep the previous holder began may have stopped half-way: sweep at once.
        self.last_sweep = None;
        let groups: StreamInfoGroupsReply = conn
            .xinfo_groups(&self.config.stream)
            .await
            .map_err(|e| self.redis_error(e))?;
        let last_delivered = groups
            .groups
            .iter()
            .find(|g| g.name == self.config.group)
            .map(|g| g.last_delivered_id.clone())
            .ok_or_else(|| RedisSourceError::GroupMissing {
                stream: self.config.stream.clone(),
                group: self.config.group.clone(),
            })?;
        if self.leadership.active_term() != Some(term) {
            return Ok(None);
        }
        self.leadership.takeover_done(term);
        tracing::info!(
            consumer = %self.config.consumer,
            claimed = claimed.len(),
            finished_elsewhere = forgotten,
            took_ms = started.elapsed().as_millis() as u64,
            "took over: every entry pending in the group is in the outbox, in stream order; delivering"
        );
        Ok(Some(last_delivered))
    }

    /// The Redis data set's generation, made on first use (see `Keys::generation`).
    pub(super) async fn generation(
        &self,
        conn: &mut RedisConnection,
    ) -> Result<String, RedisSourceError> {
        let script = redis::Script::new(
            "redis.call('SET', KEYS[1], ARGV[1], 'NX') return redis.call('GET', KEYS[1])",
        );
        script
            .key(self.keys.generation())
            .arg(Uuid::new_v4().simple().to_string())
            .invoke_async(conn)
            .await
            .map_err(|e| self.redis_error(e))
    }

    /// Creates the consumer group if it is missing.
    ///
    /// A new group starts at `$`, the stream's current end, not at `0`: the orchestrator writes
    /// whenever any `wh:` key exists, so an existing stream may hold a history written for
    /// someone else or a previous installation, and replaying it would send webhooks about
    /// long-gone sandboxes. Nothing of ours is skipped, because the gate keys are set only after
    /// the group exists: every event the orchestrator publishes because of them comes after the
    /// group's start. An existing group keeps its position.
    pub(super) async fn ensure_group(
        &self,
        conn: &mut RedisConnection,
    ) -> Result<(), RedisSourceError> {
        let created: Result<(), RedisError> = conn
            .xgroup_create_mkstream(&self.config.stream, &self.config.group, "$")
            .await;
        match created {
            Ok(()) => {
                tracing::info!(
                    stream = %self.config.stream,
                    group = %self.config.group,
                    "created the consumer group at the end of the stream"
                );
                Ok(())
            }
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(self.redis_error(e)),
        }
    }

    /// Takes over entries pending in the group for at least `min_idle`, whoever read them, in
    /// stream order (fenced `XAUTOCLAIM`), and commits them to the outbox. With no minimum idle
    /// time this is the takeover: the whole pending list. Later, periodically, it picks up what
    /// another consumer left. Returns false when the lease was lost meanwhile.
    pub(super) async fn claim(
        &self,
        conn: &mut RedisConnection,
        generation: &str,
        min_idle: Duration,
        mut claimed: Option<&mut HashSet<String>>,
    ) -> Result<bool, RedisSourceError> {
        // The periodic sweep is for entries other consumers left. This instance's own are
        // pending because they wait for delivery here: sweeping them would read a receiver's
        // whole backlog from Redis again at every interval, to no end.
        let sweep = min_idle.is_zero() || self.others_hold_pending(conn).await?;
        let mut cursor = sweep.then(|| "0-0".to_owned());
        while let Some(at) = cursor.take() {
            let command = [
                "XAUTOCLAIM".to_owned(),
                self.config.stream.clone(),
                self.config.group.clone(),
                self.config.consumer.clone(),
                (min_idle.as_millis() as u64).to_string(),
                at,
                "COUNT".to_owned(),
                BATCH.to_string(),
            ];
            let Some(reply) = self.fenced(conn, &command).await? else {
                return Ok(false);
            };
            let claim = parse_autoclaim_reply(reply).map_err(|detail| {
                RedisSourceError::UnexpectedReply {
                    command: "XAUTOCLAIM",
                    detail,
                }
            })?;
            if !claim.entries.is_empty() && !min_idle.is_zero() {
                tracing::info!(
                    count = claim.entries.len(),
                    idle_ms = min_idle.as_millis() as u64,
                    "claimed entries another consumer left unacknowledged"
                );
            }
            if let Some(claimed) = claimed.as_mut() {
                claimed.extend(claim.entries.iter().map(|e| e.id.clone()));
            }
            self.commit(conn, claim.entries, generation).await?;
            // `0-0`: the sweep went round the whole pending list.
            cursor = (claim.next != "0-0").then_some(claim.next);
        }
        self.forget_replaced_consumers(conn).await?;
        Ok(true)
    }

    /// Whether a consumer other than this instance has entries pending in the group
    /// (`XPENDING`'s summary counts them per consumer).
    async fn others_hold_pending(
        &self,
        conn: &mut RedisConnection,
    ) -> Result<bool, RedisSourceError> {
        let pending: StreamPendingReply = conn
            .xpending(&self.config.stream, &self.config.group)
            .await
            .map_err(|e| self.redis_error(e))?;
        Ok(match pending {
            StreamPendingReply::Data(data) => data
                .consumers
                .iter()
                .any(|c| c.name != self.config.consumer && c.pending > 0),
            _ => false,
        })
    }

    pub(super) async fn forget_replaced_consumers(
        &self,
        conn: &mut RedisConnection,
    ) -> Result<(), RedisSourceError> {
        let reply: StreamInfoConsumersReply = conn
            .xinfo_consumers(&self.config.stream, &self.config.group)
            .await
            .map_err(|e| self.redis_error(e))?;
        let forget_after_ms = FORGET_CONSUMER_AFTER.as_millis() as usize;
        for consumer in reply.consumers.iter().filter(|c| {
            c.name != self.config.consumer && c.pending == 0 && c.idle > forget_after_ms
        }) {
            let _pending: usize = conn
                .xgroup_delconsumer(&self.config.stream, &self.config.group, &consumer.name)
                .await
                .map_err(|e| self.redis_error(e))?;
            tracing::info!(
                consumer = %consumer.name,
                idle_s = consumer.idle / 1000,
                "removed a consumer idle for a day with nothing pending (a replaced instance)"
            );
        }
        Ok(())
    }

    /// Reports the group's lag and trims the stream up to what the group has finished.
    pub(super) async fn housekeeping(
        &mut self,
        conn: &mut RedisConnection,
    ) -> Result<(), RedisSourceError> {
        // Read before XPENDING: anything handed out after this read has an id above
        // `last_delivered_id`, so the threshold below stays under it (see `trim_threshold`).
        let groups: StreamInfoGroupsReply = conn
            .xinfo_groups(&self.config.stream)
            .await
            .map_err(|e| self.redis_error(e))?;
        let Some(ours) = groups.groups.iter().find(|g| g.name == self.config.group) else {
            return Err(RedisSourceError::GroupMissing {
                stream: self.config.stream.clone(),
                group: self.config.group.clone(),
            });
        };
        if let Some(lag) = ours.lag {
            self.metrics.redis_lag.set(lag as i64);
        }
        self.progress.send_replace(StreamProgress::Reading {
            lag: ours.lag.map(|lag| lag as u64),
        });
        self.build_view(conn).await?;
        self.copy_view_when_due(conn).await?;
        let sweep_due = self
            .last_sweep
            .is_none_or(|at| at.elapsed() >= TOMBSTONE_SWEEP_EVERY);
        if !self.config.trim && !sweep_due {
            return Ok(());
        }
        let last_delivered: EntryId = parse_id("XINFO GROUPS", &ours.last_delivered_id)?;
        let pending: StreamPendingReply = conn
            .xpending(&self.config.stream, &self.config.group)
            .await
            .map_err(|e| self.redis_error(e))?;
        let oldest_pending = match pending {
            StreamPendingReply::Data(data) => Some(parse_id("XPENDING", &data.start_id)?),
            _ => None,
        };
        let min_id = trim_threshold(last_delivered, oldest_pending);
        if sweep_due && let Some(token) = self.leadership.token() {
            let swept = tombstones::forget(conn, &self.keys, &self.leadership, &token, min_id)
                .await
                .map_err(|e| self.redis_error(e))?;
            match swept {
                view::Fenced::Done(forgotten) => {
                    self.last_sweep = Some(Instant::now());
                    if forgotten > 0 {
                        tracing::debug!(
                            forgotten,
                            "forgot killed sandboxes no entry can bring back"
                        );
                    }
                }
                view::Fenced::LeaseLost => tracing::info!(
                    "stopped sweeping the shared view of sandboxes: another instance holds the leader lease and sweeps it"
                ),
            }
        }
        if !self.config.trim {
            return Ok(());
        }
        self.note_other_groups(&groups);
        let trimmed: usize = conn
            .xtrim_options(
                &self.config.stream,
                &StreamTrimOptions::minid(StreamTrimmingMode::Exact, min_id.to_string()),
            )
            .await
            .map_err(|e| self.redis_error(e))?;
        if trimmed > 0 {
            tracing::debug!(trimmed, %min_id, "trimmed acknowledged entries from the stream");
        }
        Ok(())
    }

    /// Warns when another consumer group reads the stream: trimming follows only ours.
    pub(super) fn note_other_groups(&mut self, groups: &StreamInfoGroupsReply) {
        let others: Vec<String> = groups
            .groups
            .iter()
            .map(|g| g.name.clone())
            .filter(|name| *name != self.config.group)
            .collect();
        if !others.is_empty() && others != self.other_groups {
            tracing::warn!(
                stream = %self.config.stream,
                other_groups = ?others,
                "other consumer groups read this stream, but trimming follows only group {}; set REDIS_TRIM=false if they need entries this group has finished",
                self.config.group
            );
        }
        self.other_groups = others;
    }
}

/// A stream entry id, `<milliseconds>-<sequence>`, ordered as Redis orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct EntryId {
    ms: u64,
    seq: u64,
}

impl EntryId {
    /// The smallest id above this one.
    pub(super) fn successor(self) -> Self {
        match self.seq.checked_add(1) {
            Some(seq) => Self { ms: self.ms, seq },
            None => Self {
                ms: self.ms.saturating_add(1),
                seq: 0,
            },
        }
    }
}

impl FromStr for EntryId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ms, seq) = s.split_once('-').unwrap_or((s, "0"));
        match (ms.parse(), seq.parse()) {
            (Ok(ms), Ok(seq)) => Ok(Self { ms, seq }),
            _ => Err(format!("{s:?} is not a stream entry id")),
        }
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

pub(super) fn parse_id(command: &'static str, id: &str) -> Result<EntryId, RedisSourceError> {
    id.parse()
        .map_err(|detail| RedisSourceError::UnexpectedReply { command, detail })
}

/// The `XTRIM … MINID` threshold: every entry below it has been delivered to the group and
/// acknowledged.
///
/// `last_delivered` must be read before `oldest_pending`. Entries below the oldest pending one
/// are acknowledged; entries up to `last_delivered` have been delivered. Taking the smaller of
/// the two bounds also covers entries handed out between the two reads: they are above
/// `last_delivered`, so a threshold at most its successor never removes them.
pub(super) fn trim_threshold(last_delivered: EntryId, oldest_pending: Option<EntryId>) -> EntryId {
    let after_delivered = last_delivered.successor();
    oldest_pending.map_or(after_delivered, |pending| pending.min(after_delivered))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> EntryId {
        s.parse().unwrap()
    }

    #[test]
    fn entry_ids_order_numerically_and_step_to_the_next_id() {
        assert!(id("9-5") < id("10-0"));
        assert!(id("10-2") < id("10-10"));
        assert_eq!(
            id("1700000000000-3").successor().to_string(),
            "1700000000000-4"
        );
        assert_eq!(
            id(&format!("5-{}", u64::MAX)).successor().to_string(),
            "6-0"
        );
        assert_eq!(id("42").to_string(), "42-0");
        assert!("x-1".parse::<EntryId>().is_err());
    }

    #[test]
    fn trim_keeps_the_oldest_pending_entry() {
        assert_eq!(trim_threshold(id("100-0"), Some(id("40-2"))), id("40-2"));
    }

    #[test]
    fn trim_with_nothing_pending_removes_exactly_what_was_delivered() {
        assert_eq!(trim_threshold(id("100-7"), None), id("100-8"));
        // Nothing delivered yet: the threshold is above 0-0, so nothing goes.
        assert_eq!(trim_threshold(id("0-0"), None), id("0-1"));
    }

    #[test]
    fn trim_never_passes_entries_delivered_after_the_group_was_read() {
        // XPENDING saw only entries handed out after XINFO GROUPS reported 100-7.
        assert_eq!(trim_threshold(id("100-7"), Some(id("205-0"))), id("100-8"));
    }
}
