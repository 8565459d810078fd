//! The stream as the entrance for events that do not come from the orchestrator: the
//! reconciler's synthesized events and `backfill`. They are appended as the orchestrator appends
//! (`XADD <stream> * payload <event JSON>`, e2b-dev/infra
//! `packages/shared/pkg/events/delivery_redis_streams.go`) plus a `source` field naming where
//! they came from, so they join the shared record of undelivered work — the group's pending
//! list, which survives the loss of a node — and are delivered, in stream order with the rest,
//! by whichever instance is active.

use super::client::{RedisClient, RedisConnection};
use super::keys::Keys;
use super::{EntryId, RedisSettings, RedisSourceError, dead_letters, lease};
use crate::event::SandboxEvent;
use crate::leadership::Leadership;
use crate::outbox::{DeadLetter, EventIntake, IntakeError, MalformedInput};
use futures_util::future::BoxFuture;
use redis::streams::StreamInfoGroupsReply;
use redis::{AsyncCommands, RedisError, Value};
use std::sync::{Arc, Mutex};

/// The stream field naming where an appended event came from (`reconcile`, `backfill`); the
/// orchestrator's own entries have none.
pub(crate) const SOURCE_FIELD: &[u8] = b"source";

/// Appends events to the orchestrator's stream.
pub struct StreamIntake {
    client: Arc<RedisClient>,
    keys: Keys,
    group: String,
    addr: String,
    /// For the active instance's reconciler: appends only while this instance holds the lease —
    /// the lease value it held when it decided ([`EventIntake::submit_under_lease`]) — so a
    /// frozen old leader that resumes cannot add what it decided before it lost it, even when it
    /// has won the lease back meanwhile.
    fence: Option<Leadership>,
    /// The first and last entries appended so far.
    appended: Mutex<Option<(EntryId, EntryId)>>,
}

/// How far the group is with what a [`StreamIntake`] appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntakeProgress {
    /// Entries of the appended range still pending (read, not yet delivered or dead-lettered).
    pub pending: u64,
    /// Whether the group has read up to the last appended entry.
    pub read: bool,
}

impl IntakeProgress {
    /// Every appended entry was read and then delivered or dead-lettered.
    pub fn finished(self) -> bool {
        self.read && self.pending == 0
    }
}

impl StreamIntake {
    pub(super) fn new(
        client: Arc<RedisClient>,
        keys: Keys,
        group: String,
        addr: String,
        fence: Option<Leadership>,
    ) -> Self {
        Self {
            client,
            keys,
            group,
            addr,
            fence,
            appended: Mutex::new(None),
        }
    }

    /// An intake for a command (`backfill`) with the service's Redis settings; checks that the
    /// service's consumer group exists, so nothing is appended that no instance would read.
    pub async fn connect(config: &RedisSettings) -> Result<Self, RedisSourceError> {
        let addr = config.connection.addr();
        let error = |error| RedisSourceError::Redis {
            addr: addr.clone(),
            error,
        };
        let client = RedisClient::open(&config.connection).map_err(error)?;
        let mut conn = client.connect().await.map_err(error)?;
        let stream_exists: bool = conn.exists(&config.stream).await.map_err(error)?;
        let group_exists = stream_exists && {
            let groups: StreamInfoGroupsReply =
                conn.xinfo_groups(&config.stream).await.map_err(error)?;
            groups.groups.iter().any(|g| g.name == config.group)
        };
        if !group_exists {
            return Err(RedisSourceError::NoGroup {
                stream: config.stream.clone(),
                group: config.group.clone(),
            });
        }
        Ok(Self::new(
            Arc::new(client),
            Keys::new(&config.stream, &config.group),
            config.group.clone(),
            addr,
            None,
        ))
    }

    fn error(&self, e: RedisError) -> IntakeError {
        IntakeError::Shared(format!("Redis at {}: {e}", self.addr))
    }

    async fn connection(&self) -> Result<RedisConnection, IntakeError> {
        self.client.connect().await.map_err(|e| self.error(e))
    }

    /// How far the group is with the entries appended so far.
    pub async fn progress(&self) -> Result<IntakeProgress, IntakeError> {
        let Some((first, last)) = *self.appended.lock().expect("appended range") else {
            return Ok(IntakeProgress {
                pending: 0,
                read: true,
            });
        };
        let mut conn = self.connection().await?;
        let groups: StreamInfoGroupsReply = conn
            .xinfo_groups(&self.keys.stream)
            .await
            .map_err(|e| self.error(e))?;
        let Some(ours) = groups.groups.iter().find(|g| g.name == self.group) else {
            return Err(IntakeError::Shared(format!(
                "the consumer group {} is gone from {} (deleted, or Redis restarted without its data)",
                self.group, self.keys.stream
            )));
        };
        let read = ours
            .last_delivered_id
            .parse::<EntryId>()
            .is_ok_and(|delivered| delivered >= last);
        // Pending entries of the range (the orchestrator's interleaved ones count too: they
        // are finished soon enough and never outnumber what was appended by much).
        let pending: Value = redis::cmd("XPENDING")
            .arg(&self.keys.stream)
            .arg(&self.group)
            .arg(first.to_string())
            .arg(last.to_string())
            .arg(10_000)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.error(e))?;
        let pending = match pending {
            Value::Array(entries) => entries.len() as u64,
            _ => 0,
        };
        Ok(IntakeProgress { pending, read })
    }

    /// Appends one event: unfenced for a command (`backfill`, no lease), else only while the
    /// lease has the value `lease` (in the same script as the `XADD`).
    async fn append(
        &self,
        conn: &mut RedisConnection,
        source: &str,
        payload: String,
        lease: Option<&str>,
    ) -> Result<String, IntakeError> {
        let command = [
            "XADD".to_owned(),
            self.keys.stream.clone(),
            "*".to_owned(),
            "payload".to_owned(),
            payload,
            String::from_utf8_lossy(SOURCE_FIELD).into_owned(),
            source.to_owned(),
        ];
        if self.fence.is_none() {
            return redis::cmd(&command[0])
                .arg(&command[1..])
                .query_async(conn)
                .await
                .map_err(|e| self.error(e));
        }
        let refused = || {
            IntakeError::Shared(
                "this instance no longer holds the leader lease; not appended".into(),
            )
        };
        let Some(token) = lease else {
            return Err(refused());
        };
        lease::fenced(conn, &self.keys, token, &command)
            .await
            .map_err(|e| {
                if e.code() == Some(lease::FENCED_CODE) {
                    refused()
                } else {
                    self.error(e)
                }
            })
    }

    /// Appends `events` in order, each under `lease` (see [`Self::append`]).
    async fn append_all(
        &self,
        source: &'static str,
        events: Vec<SandboxEvent>,
        lease: Option<String>,
    ) -> Result<Vec<bool>, IntakeError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.connection().await?;
        let mut ids = Vec::with_capacity(events.len());
        // One command after the other, in order: each is durable in Redis (as durable as
        // the orchestrator's own entries) once it returns.
        for event in &events {
            let payload = serde_json::Value::Object(event.raw().clone()).to_string();
            match self
                .append(&mut conn, source, payload, lease.as_deref())
                .await
            {
                Ok(id) => ids.push(id),
                Err(e) => {
                    self.note_appended(&ids);
                    return Err(e);
                }
            }
        }
        self.note_appended(&ids);
        // Whether each is new is decided where the active instance reads it.
        Ok(vec![true; events.len()])
    }

    fn note_appended(&self, ids: &[String]) {
        let parsed: Vec<EntryId> = ids.iter().filter_map(|id| id.parse().ok()).collect();
        let (Some(first), Some(last)) = (parsed.first(), parsed.last()) else {
            return;
        };
        let mut range = self.appended.lock().expect("appended range");
        *range = Some(match *range {
            Some((start, _)) => (start, *last),
            None => (*first, *last),
        });
    }
}

impl EventIntake for StreamIntake {
    fn submit(
        &self,
        source: &'static str,
        events: Vec<SandboxEvent>,
    ) -> BoxFuture<'_, Result<Vec<bool>, IntakeError>> {
        let lease = self.fence.as_ref().and_then(Leadership::token);
        Box::pin(self.append_all(source, events, lease))
    }

    fn submit_under_lease(
        &self,
        source: &'static str,
        events: Vec<SandboxEvent>,
        lease: Option<String>,
    ) -> BoxFuture<'_, Result<Vec<bool>, IntakeError>> {
        Box::pin(self.append_all(source, events, lease))
    }

    fn set_aside(&self, inputs: Vec<MalformedInput>) -> BoxFuture<'_, Result<(), IntakeError>> {
        Box::pin(async move {
            let now = jiff::Timestamp::now().as_millisecond();
            let letters: Vec<DeadLetter> = inputs
                .into_iter()
                .map(|input| DeadLetter {
                    id: 0,
                    endpoint: None,
                    source: input.source,
                    event_id: None,
                    sandbox_id: None,
                    label: None,
                    event: None,
                    input: input.input,
                    position: Some(input.position),
                    attempts: 0,
                    last_status: None,
                    reason: input.reason,
                    appended_at_ms: now,
                    dead_at_ms: now,
                })
                .collect();
            let mut conn = self.connection().await?;
            dead_letters::store(&mut conn, &self.keys, &letters)
                .await
                .map_err(|e| self.error(e))
        })
    }
}
