//! The Redis source: consumes the orchestrator's `sandbox.events.stream` through a consumer
//! group, keeps the `wh:<team>` gate keys alive, claims what lost instances left behind and
//! trims what the group has finished.
//!
//! The group's pending list is the shared record of undelivered work. An entry is acknowledged
//! (`XACK`, by [`sync`]) only once its event has been delivered — or dead-lettered, the dead
//! letter copied to Redis — for every endpoint that wants it; until then it stays pending, and a
//! lost node loses nothing Redis holds. The local outbox keeps its own durable copy of what was
//! read, so a Redis that restarts without its data loses nothing already read either.
//!
//! Only the instance holding the leader lease ([`lease`]) reads and delivers. When it becomes
//! active it first claims every entry pending in the group, whoever read it, in stream order
//! (`XAUTOCLAIM` from `0-0` with no minimum idle time), and only then reads new ones: a new
//! instance — or the same one under a new consumer name — never delivers a sandbox's new event
//! before an older one its predecessor had read.

mod dead_letters;
mod intake;
mod keys;
mod lease;
mod sync;
mod view;

pub use dead_letters::{SharedDeadLetters, SharedReplay};
pub use intake::{IntakeProgress, StreamIntake};
pub use lease::LeaseTiming;
pub use view::SharedSandboxView;

mod client;

pub use client::{RedisConnectionSettings, RedisTls};

use crate::config::RedisConfig;
use crate::event::SandboxEvent;
use crate::leadership::Leadership;
use crate::outbox::{FromStream, MalformedInput, Outbox, OutboxError, RawInput, StreamEntryRef};
use crate::server::metrics::Metrics;
use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use client::{RedisClient, RedisConnection};
use keys::Keys;
use redis::streams::{
    StreamInfoConsumersReply, StreamInfoGroupsReply, StreamPendingReply, StreamTrimOptions,
    StreamTrimmingMode,
};
use redis::{AsyncCommands, RedisError, Value};
use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The source name in the outbox, the metrics and the readiness report.
const SOURCE: &str = "redis";
/// Entries per `XREADGROUP` / `XAUTOCLAIM`, and so per outbox commit.
const BATCH: usize = 256;
/// How long one wait for new entries (`XREAD BLOCK`) lasts; timers run between reads.
const BLOCK: Duration = Duration::from_secs(2);
/// How often a standby checks its connection to Redis (for readiness).
const STANDBY_PING: Duration = Duration::from_secs(2);
/// The orchestrator only checks that `wh:<team>` exists (`EXISTS`); the value tells an operator
/// reading the key who keeps it.
const GATE_KEY_VALUE: &str = "e2b-webhook-emitter";
/// Gate keys expire this long after the last refresh: the orchestrator keeps publishing through
/// emitter restarts and short Redis outages, and stops within minutes once the emitter is gone.
const GATE_KEY_TTL: Duration = Duration::from_secs(600);
/// How often the gate keys are refreshed (a tenth of their lifetime).
const GATE_KEY_REFRESH: Duration = Duration::from_secs(60);
/// How often the group's lag is read and the stream trimmed.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(1);
/// A consumer idle this long with nothing pending is an instance that is gone (a renamed or
/// removed allocation); it is removed from the group so the consumer list stays short.
/// A live consumer touches the group every `BLOCK`.
const FORGET_CONSUMER_AFTER: Duration = Duration::from_secs(24 * 3600);
/// How often the shared view of sandboxes is rid of tombstones no entry can bring back.
const TOMBSTONE_SWEEP_EVERY: Duration = Duration::from_secs(600);
/// The first delay before reconnecting; later ones grow exponentially, with jitter.
const RETRY_MIN_DELAY: Duration = Duration::from_millis(200);
/// The longest delay between reconnection attempts.
const RETRY_MAX_DELAY: Duration = Duration::from_secs(30);

/// Why the Redis source stopped or is retrying.
#[derive(Debug, thiserror::Error)]
pub enum RedisSourceError {
    /// A connection setting cannot be used; the source does not start.
    #[error("{setting}: {reason}")]
    InvalidSetting {
        /// `REDIS_URL`, `REDIS_CLUSTER_URL` or `REDIS_TLS_CA_BASE64`.
        setting: &'static str,
        /// What is wrong and what is expected (never the URL itself: it may hold a password).
        reason: String,
    },
    /// Connecting to Redis or a command failed; retried after a delay.
    #[error(
        "Redis at {addr}: {error}; check that Redis is reachable and that the host, port, password and TLS settings (REDIS_TLS_ENABLED, REDIS_TLS_CA_BASE64) are right"
    )]
    Redis {
        /// `host:port` of the configured node.
        addr: String,
        /// What Redis or the connection reported (in the message, not chained, so it shows once).
        error: RedisError,
    },
    /// Redis answered in a shape this source does not understand; retried after a delay.
    #[error(
        "unexpected reply from Redis to {command}: {detail}; Redis 7 or newer is required (XAUTOCLAIM, XINFO lag)"
    )]
    UnexpectedReply {
        /// The command.
        command: &'static str,
        /// What was wrong with the reply.
        detail: String,
    },
    /// Our consumer group vanished (deleted, or Redis lost its data); it is created again.
    #[error(
        "the consumer group {group} is gone from {stream} (deleted, or Redis restarted without its data); creating it again at the stream's end"
    )]
    GroupMissing {
        /// The stream.
        stream: String,
        /// The group.
        group: String,
    },
    /// A command that needs the service's consumer group found none: no instance ran yet.
    #[error(
        "there is no consumer group {group} on {stream}: no e2b-webhook-emitter instance has run against this Redis with these REDIS_STREAM/REDIS_GROUP settings"
    )]
    NoGroup {
        /// The stream.
        stream: String,
        /// The group.
        group: String,
    },
    /// The outbox could not commit a batch; the entries stay pending and are read again.
    #[error("the outbox did not commit a batch from the stream: {0}")]
    Outbox(OutboxError),
}

impl From<OutboxError> for RedisSourceError {
    fn from(error: OutboxError) -> Self {
        Self::Outbox(error)
    }
}

/// Consumes the orchestrator's sandbox event stream into the outbox.
pub struct RedisStreamSource {
    config: RedisConfig,
    team_ids: Vec<Uuid>,
    outbox: Outbox,
    metrics: Arc<Metrics>,
    client: Arc<RedisClient>,
    leadership: Leadership,
    keys: Keys,
    /// `host:port` of the configured node: the only part of the settings that is ever logged.
    addr: String,
    /// Other consumer groups on the stream, as last reported (trimming ignores them).
    other_groups: Vec<String>,
    /// Whether events of other teams were seen (explained once in the log).
    other_teams_seen: std::sync::atomic::AtomicBool,
    /// The Redis data set's generation, for [`sync`].
    generation: watch::Sender<Option<String>>,
    /// When the shared view was last rid of old tombstones.
    last_sweep: Option<Instant>,
    /// Changes to the shared view that Redis failed to take (applied once it answers again).
    unapplied_view: std::sync::Mutex<Vec<view::ViewChange>>,
}

/// The lease and the acknowledgements: they outlive the pipeline's drain, so the lease is
/// renewed while in-flight deliveries finish and what they delivered is acknowledged.
pub struct RedisBackground {
    stop: CancellationToken,
    tasks: JoinSet<()>,
}

impl RedisBackground {
    /// Acknowledges what is finished, gives the lease up, and returns.
    pub async fn finish(mut self) {
        self.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

impl RedisStreamSource {
    /// A source for `config`, keeping the gate keys of `team_ids` while `leadership` is active;
    /// fails only on a connection setting the Redis client refuses (a CA it cannot parse).
    pub fn new(
        config: RedisConfig,
        team_ids: Vec<Uuid>,
        outbox: Outbox,
        metrics: Arc<Metrics>,
        leadership: Leadership,
    ) -> Result<Self, RedisSourceError> {
        let client = RedisClient::open(&config.connection).map_err(|e| {
            // Only the error's kind and detail, never the settings: they may hold a password.
            RedisSourceError::InvalidSetting {
                setting: if config.connection.tls.is_some() {
                    "REDIS_TLS_CA_BASE64"
                } else if config.connection.cluster {
                    "REDIS_CLUSTER_URL"
                } else {
                    "REDIS_URL"
                },
                reason: format!("{:?}: {}", e.kind(), e.detail().unwrap_or("cannot be used")),
            }
        })?;
        let addr = config.connection.addr();
        let keys = Keys::new(&config.stream, &config.group);
        Ok(Self {
            config,
            team_ids,
            outbox,
            metrics,
            client: Arc::new(client),
            leadership,
            keys,
            addr,
            other_groups: Vec::new(),
            other_teams_seen: Default::default(),
            generation: watch::channel(None).0,
            last_sweep: None,
            unapplied_view: Default::default(),
        })
    }

    /// The entrance for the reconciler's events: the stream, appended to only while this
    /// instance holds the lease.
    pub fn stream_intake(&self) -> StreamIntake {
        StreamIntake::new(
            self.client.clone(),
            self.keys.clone(),
            self.config.group.clone(),
            self.addr.clone(),
            Some(self.leadership.clone()),
        )
    }

    /// The view of sandboxes every instance shares, kept by the instance that reads the stream.
    pub fn shared_view(&self) -> SharedSandboxView {
        SharedSandboxView::new(self.client.clone(), self.keys.clone(), self.addr.clone())
    }

    /// Starts the lease keeper and the acknowledger, each on its own connection.
    pub fn start_background(&self, timing: LeaseTiming) -> RedisBackground {
        let client = self.client.clone();
        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let keeper = lease::LeaseKeeper {
            client: client.clone(),
            keys: self.keys.clone(),
            me: self.config.consumer.clone(),
            timing,
            leadership: self.leadership.clone(),
            metrics: self.metrics.clone(),
        };
        tasks.spawn(keeper.run(stop.clone()));
        let syncer = sync::StreamSyncer {
            client,
            keys: self.keys.clone(),
            group: self.config.group.clone(),
            outbox: self.outbox.clone(),
            generation: self.generation.subscribe(),
        };
        tasks.spawn(syncer.run(stop.clone()));
        RedisBackground { stop, tasks }
    }

    /// Runs until `shutdown` is cancelled; returns after the current batch is committed.
    ///
    /// Connection and outbox failures are logged, reported through readiness and retried with
    /// backoff.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), RedisSourceError> {
        let client = self.client.clone();
        self.warn_about_configuration();
        self.metrics
            .set_component(SOURCE, false, format!("connecting to {}", self.addr));
        let mut backoff = Backoff::new();
        loop {
            let error = match self.consume(&client, &mut backoff, &shutdown).await {
                Ok(()) => {
                    tracing::info!(redis = %self.addr, "Redis source stopped");
                    return Ok(());
                }
                Err(error) => error,
            };
            let delay = backoff.next_delay();
            self.metrics.set_component(SOURCE, false, error.to_string());
            tracing::warn!(
                redis = %self.addr,
                retry_in_ms = delay.as_millis() as u64,
                "Redis source not consuming, retrying (entries not yet acknowledged stay pending in Redis): {error}"
            );
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    fn warn_about_configuration(&self) {
        if self.team_ids.is_empty() {
            tracing::warn!(
                "E2B_TEAM_IDS is empty: no wh:<team> gate key is kept, so the orchestrator publishes no events to {}; set E2B_TEAM_IDS to the teams whose sandboxes should send webhooks",
                self.config.stream
            );
        }
        let db = self.config.connection.db;
        if db != 0 {
            tracing::warn!(
                redis = %self.addr,
                "the Redis URL selects database {db}, but the orchestrator writes the stream and checks the gate keys in database 0; remove /{db} from the URL"
            );
        }
    }

    /// One connection's life: set up, then stand by or consume, until shutdown or an error.
    async fn consume(
        &mut self,
        client: &RedisClient,
        backoff: &mut Backoff,
        shutdown: &CancellationToken,
    ) -> Result<(), RedisSourceError> {
        let mut conn = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            conn = client.connect() => conn.map_err(|e| self.redis_error(e))?,
        };
        self.ensure_group(&mut conn).await?;
        let generation = self.generation(&mut conn).await?;
        self.apply_held_back_view(&mut conn).await?;
        self.generation.send_replace(Some(generation.clone()));
        backoff.reset();
        loop {
            self.metrics.set_component(
                SOURCE,
                true,
                format!(
                    "standing by as {} at {} (another instance holds the leader lease)",
                    self.config.consumer, self.addr
                ),
            );
            // Standby: nothing is read; the connection is checked so readiness stays true.
            let term = loop {
                if let Some(term) = self.leadership.active_term() {
                    break term;
                }
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    () = self.leadership.until_active() => {}
                    () = tokio::time::sleep(STANDBY_PING) => {
                        let _: String = redis::cmd("PING").query_async(&mut conn).await.map_err(|e| self.redis_error(e))?;
                    }
                }
            };
            // Only once the group exists: see `ensure_group` for why the order matters.
            self.refresh_gate_keys(&mut conn).await?;
            let Some(mut last_seen) = self.take_over(&mut conn, &generation, term).await? else {
                continue;
            };
            self.metrics.set_component(
                SOURCE,
                true,
                format!(
                    "active: consuming {} as {}/{} at {}",
                    self.config.stream, self.config.group, self.config.consumer, self.addr
                ),
            );
            tracing::info!(
                redis = %self.addr,
                stream = %self.config.stream,
                group = %self.config.group,
                consumer = %self.config.consumer,
                teams = self.team_ids.len(),
                "consuming the orchestrator's event stream"
            );
            let claim_interval = (self.config.claim_idle / 2)
                .clamp(Duration::from_millis(500), Duration::from_secs(30));
            let start = Instant::now();
            let mut next_gate_refresh = start + GATE_KEY_REFRESH;
            let mut next_claim = start + claim_interval;
            let mut next_housekeeping = start;
            loop {
                if shutdown.is_cancelled() {
                    return Ok(());
                }
                if self.leadership.active_term() != Some(term) {
                    tracing::info!(consumer = %self.config.consumer, "stopped reading the stream: no longer the active instance");
                    break;
                }
                let now = Instant::now();
                if now >= next_gate_refresh {
                    self.refresh_gate_keys(&mut conn).await?;
                    next_gate_refresh = now + GATE_KEY_REFRESH;
                }
                if now >= next_claim {
                    if !self
                        .claim(&mut conn, &generation, self.config.claim_idle, None)
                        .await?
                    {
                        continue;
                    }
                    next_claim = now + claim_interval;
                }
                if now >= next_housekeeping {
                    self.housekeeping(&mut conn).await?;
                    next_housekeeping = now + HOUSEKEEPING_INTERVAL;
                }
                let Some(entries) = self.read_new(&mut conn).await? else {
                    continue;
                };
                if let Some(last) = entries.last() {
                    last_seen = last.id.clone();
                    self.commit(&mut conn, entries, &generation).await?;
                    continue;
                }
                // Nothing new: wait for the stream to grow past what was seen. A plain XREAD
                // changes nothing in the group, so it needs no fence.
                let mut wait = redis::cmd("XREAD");
                wait.arg("BLOCK")
                    .arg(BLOCK.as_millis() as u64)
                    .arg("COUNT")
                    .arg(1)
                    .arg("STREAMS")
                    .arg(&self.config.stream)
                    .arg(&last_seen);
                let reply: Value = wait
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| self.redis_error(e))?;
                let grown = parse_read_reply(reply).map_err(|detail| {
                    RedisSourceError::UnexpectedReply {
                        command: "XREAD",
                        detail,
                    }
                })?;
                if let Some(last) = grown.last() {
                    last_seen = last.id.clone();
                }
            }
        }
    }

    /// The Redis data set's generation, made on first use (see [`Keys::generation`]).
    async fn generation(&self, conn: &mut RedisConnection) -> Result<String, RedisSourceError> {
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

    /// Becoming active: claims every entry pending in the group, in stream order, into the
    /// outbox; forgets local events whose entries another instance finished meanwhile; then
    /// lets the dispatchers deliver. Returns the group's last delivered id (where waiting for
    /// new entries starts), or `None` when the lease was lost meanwhile.
    async fn take_over(
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

    /// Creates the consumer group if it is missing.
    ///
    /// A new group starts at `$`, the stream's current end, not at `0`: the orchestrator writes
    /// whenever any `wh:` key exists, so an existing stream may hold a history written for
    /// someone else or a previous installation, and replaying it would send webhooks about
    /// long-gone sandboxes. Nothing of ours is skipped, because the gate keys are set only after
    /// the group exists: every event the orchestrator publishes because of them comes after the
    /// group's start. An existing group keeps its position.
    async fn ensure_group(&self, conn: &mut RedisConnection) -> Result<(), RedisSourceError> {
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

    /// Sets every team's `wh:<team>` key with a fresh expiry. Keys are never deleted: when the
    /// emitter stops they expire by themselves, after the orchestrator has kept publishing
    /// through a restart.
    async fn refresh_gate_keys(&self, conn: &mut RedisConnection) -> Result<(), RedisSourceError> {
        // One command per key: in a cluster the keys live in different slots.
        for team in &self.team_ids {
            let () = conn
                .set_ex(gate_key(team), GATE_KEY_VALUE, GATE_KEY_TTL.as_secs())
                .await
                .map_err(|e| self.redis_error(e))?;
        }
        Ok(())
    }

    /// Fenced `XREADGROUP … >`: new entries, or `None` when the lease is no longer ours.
    async fn read_new(
        &self,
        conn: &mut RedisConnection,
    ) -> Result<Option<Vec<StreamEntry>>, RedisSourceError> {
        let command = [
            "XREADGROUP",
            "GROUP",
            &self.config.group,
            &self.config.consumer,
            "COUNT",
            &BATCH.to_string(),
            "STREAMS",
            &self.config.stream,
            ">",
        ]
        .map(str::to_owned);
        let Some(reply) = self.fenced(conn, &command).await? else {
            return Ok(None);
        };
        parse_read_reply(reply)
            .map(Some)
            .map_err(|detail| RedisSourceError::UnexpectedReply {
                command: "XREADGROUP",
                detail,
            })
    }

    /// Runs `command` under the lease; `None` (and this instance steps down) when the lease
    /// is no longer ours.
    async fn fenced(
        &self,
        conn: &mut RedisConnection,
        command: &[String],
    ) -> Result<Option<Value>, RedisSourceError> {
        let Some(token) = self.leadership.token() else {
            return Ok(None);
        };
        match lease::fenced(conn, &self.keys, &token, command).await {
            Ok(reply) => Ok(Some(reply)),
            Err(e) if e.code() == Some(lease::FENCED_CODE) => {
                tracing::warn!(
                    consumer = %self.config.consumer,
                    "the leader lease is no longer ours (another instance took it): stopped reading and delivering"
                );
                self.leadership.step_down();
                Ok(None)
            }
            Err(e) => Err(self.redis_error(e)),
        }
    }

    /// Takes over entries pending in the group for at least `min_idle`, whoever read them, in
    /// stream order (fenced `XAUTOCLAIM`), and commits them to the outbox. With no minimum idle
    /// time this is the takeover: the whole pending list. Later, periodically, it picks up what
    /// another consumer left. Returns false when the lease was lost meanwhile.
    async fn claim(
        &self,
        conn: &mut RedisConnection,
        generation: &str,
        min_idle: Duration,
        mut claimed: Option<&mut HashSet<String>>,
    ) -> Result<bool, RedisSourceError> {
        let mut cursor = "0-0".to_owned();
        loop {
            let command = [
                "XAUTOCLAIM".to_owned(),
                self.config.stream.clone(),
                self.config.group.clone(),
                self.config.consumer.clone(),
                (min_idle.as_millis() as u64).to_string(),
                cursor.clone(),
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
            if claim.next == "0-0" {
                break;
            }
            cursor = claim.next;
        }
        self.forget_replaced_consumers(conn).await?;
        Ok(true)
    }

    async fn forget_replaced_consumers(
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

    /// Commits a batch to the outbox, each event with its entry (malformed entries set aside).
    /// Nothing is acknowledged here: see [`sync`].
    async fn commit(
        &self,
        conn: &mut RedisConnection,
        entries: Vec<StreamEntry>,
        generation: &str,
    ) -> Result<(), RedisSourceError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut events = Vec::with_capacity(entries.len());
        let mut malformed = Vec::new();
        let mut malformed_entries = Vec::new();
        for entry in entries {
            let reference = StreamEntryRef {
                id: entry.id.clone(),
                generation: generation.to_owned(),
            };
            let replay_to = entry.replay_to();
            let origin = entry.origin();
            match entry.decode() {
                Ok(event) => events.push((
                    event,
                    FromStream {
                        entry: reference,
                        replay_to,
                    },
                    origin,
                )),
                Err(input) => {
                    tracing::warn!(
                        stream_id = %input.position,
                        reason = %input.reason,
                        "setting aside a stream entry that is not a valid event (kept in the dead-letter store)"
                    );
                    malformed.push(input);
                    malformed_entries.push(reference);
                }
            }
        }
        // Anyone may create a `wh:<team>` key, and then the orchestrator publishes that team's
        // events too: with teams configured, others are acknowledged and counted, never kept.
        let decoded = events.len();
        let (kept, others): (Vec<_>, Vec<_>) = events
            .into_iter()
            .partition(|(event, _, _)| self.serves(event));
        let events = kept;
        let other_teams = decoded - events.len();
        if !others.is_empty() {
            let entries = others.into_iter().map(|(_, from, _)| from.entry).collect();
            self.outbox.acknowledge(entries).await?;
        }
        if other_teams > 0 {
            self.metrics.other_team_skipped(SOURCE, other_teams as u64);
            if !self
                .other_teams_seen
                .swap(true, std::sync::atomic::Ordering::Relaxed)
            {
                tracing::info!(
                    group = %self.config.group,
                    "the stream carries events of teams outside E2B_TEAM_IDS (another wh:<team> key exists); they are acknowledged and skipped, counted in other_team_events_total. An emitter serving those teams from this Redis needs a REDIS_GROUP of its own, or it loses what this one skips"
                );
            }
            tracing::debug!(
                count = other_teams,
                "skipped events of teams outside E2B_TEAM_IDS"
            );
        }
        // The view first, so it has every change before anything can be delivered and
        // acknowledged; but what was read reaches the outbox even when Redis fails meanwhile
        // (it may come back without its data), and the change is applied later.
        let changes = self.view_changes(&events).await?;
        let viewed = self.apply_view(conn, &changes).await;
        // In stream order, one append per run of entries from the same source.
        let mut events = events.into_iter().peekable();
        while let Some((event, from, origin)) = events.next() {
            let mut run = vec![(event, from)];
            while let Some((event, from, _)) = events.next_if(|(_, _, next)| *next == origin) {
                run.push((event, from));
            }
            let report = self.outbox.append_from_stream(origin, run).await?;
            if report.duplicates > 0 {
                tracing::debug!(
                    duplicates = report.duplicates,
                    "skipped events already in the outbox (entries read again after a restart)"
                );
            }
        }
        if !malformed.is_empty() {
            self.outbox.set_aside(malformed, malformed_entries).await?;
        }
        if let Err(error) = viewed {
            self.unapplied_view
                .lock()
                .expect("unapplied view changes")
                .extend(changes);
            return Err(error);
        }
        Ok(())
    }

    /// Builds the shared view of sandboxes from this instance's own when it does not exist (a
    /// new Redis, or one that lost its data; an upgrade from a version without it).
    async fn build_view(&self, conn: &mut RedisConnection) -> Result<(), RedisSourceError> {
        if view::exists(conn, &self.keys)
            .await
            .map_err(|e| self.redis_error(e))?
        {
            return Ok(());
        }
        let records = self.outbox.sandboxes().await?;
        if view::build(conn, &self.keys, &records)
            .await
            .map_err(|e| self.redis_error(e))?
        {
            tracing::info!(
                sandboxes = records.len(),
                "built the shared view of sandboxes in Redis from this instance's own"
            );
        }
        Ok(())
    }

    /// What the events of a batch change in the shared view of sandboxes: only news — what the
    /// outbox does not have from another entry already — as for the outbox's own view.
    async fn view_changes(
        &self,
        events: &[(SandboxEvent, FromStream, &'static str)],
    ) -> Result<Vec<view::ViewChange>, RedisSourceError> {
        let tracked: Vec<&(SandboxEvent, FromStream, &'static str)> = events
            .iter()
            .filter(|(_, from, _)| from.replay_to.is_none())
            .collect();
        if tracked.is_empty() {
            return Ok(Vec::new());
        }
        let news = self
            .outbox
            .stream_news(
                tracked
                    .iter()
                    .map(|(event, from, _)| (event.id().to_owned(), from.entry.id.clone()))
                    .collect(),
            )
            .await?;
        Ok(tracked
            .iter()
            .zip(news)
            .filter(|(_, news)| *news)
            .filter_map(|((event, from, _), _)| view::ViewChange::of(event, &from.entry.id))
            .collect())
    }

    /// Applies changes to the shared view (built first when Redis lost it).
    async fn apply_view(
        &self,
        conn: &mut RedisConnection,
        changes: &[view::ViewChange],
    ) -> Result<(), RedisSourceError> {
        let applied = view::apply(conn, &self.keys, changes)
            .await
            .map_err(|e| self.redis_error(e))?;
        if !applied {
            self.build_view(conn).await?;
            view::apply(conn, &self.keys, changes)
                .await
                .map_err(|e| self.redis_error(e))?;
        }
        Ok(())
    }

    /// Applies the changes a Redis failure held back, once Redis answers again.
    async fn apply_held_back_view(
        &self,
        conn: &mut RedisConnection,
    ) -> Result<(), RedisSourceError> {
        let changes =
            std::mem::take(&mut *self.unapplied_view.lock().expect("unapplied view changes"));
        if changes.is_empty() {
            return Ok(());
        }
        if let Err(error) = self.apply_view(conn, &changes).await {
            self.unapplied_view
                .lock()
                .expect("unapplied view changes")
                .splice(0..0, changes);
            return Err(error);
        }
        Ok(())
    }

    /// Reports the group's lag and trims the stream up to what the group has finished.
    async fn housekeeping(&mut self, conn: &mut RedisConnection) -> Result<(), RedisSourceError> {
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
        self.build_view(conn).await?;
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
        if sweep_due {
            let forgotten = view::forget_tombstones(conn, &self.keys, min_id)
                .await
                .map_err(|e| self.redis_error(e))?;
            self.last_sweep = Some(Instant::now());
            if forgotten > 0 {
                tracing::debug!(forgotten, "forgot killed sandboxes no entry can bring back");
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
    fn note_other_groups(&mut self, groups: &StreamInfoGroupsReply) {
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

    /// Whether `event` belongs to a served team (every team when none is configured).
    fn serves(&self, event: &SandboxEvent) -> bool {
        crate::event::team_in_scope(&self.team_ids, event.team_id())
    }

    fn redis_error(&self, error: RedisError) -> RedisSourceError {
        RedisSourceError::Redis {
            addr: self.addr.clone(),
            error,
        }
    }
}

/// The key whose existence makes the orchestrator publish `team`'s events.
fn gate_key(team: &Uuid) -> String {
    // Lowercase hyphenated, as the orchestrator formats it (Go's uuid.UUID.String()).
    format!("wh:{}", team.hyphenated())
}

/// A stream entry id, `<milliseconds>-<sequence>`, ordered as Redis orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct EntryId {
    ms: u64,
    seq: u64,
}

impl EntryId {
    /// The smallest id above this one.
    fn successor(self) -> Self {
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

fn parse_id(command: &'static str, id: &str) -> Result<EntryId, RedisSourceError> {
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
fn trim_threshold(last_delivered: EntryId, oldest_pending: Option<EntryId>) -> EntryId {
    let after_delivered = last_delivered.successor();
    oldest_pending.map_or(after_delivered, |pending| pending.min(after_delivered))
}

/// One stream entry as read.
#[derive(Debug, Clone, PartialEq)]
struct StreamEntry {
    id: String,
    /// Field/value pairs; `None` when the entry was deleted from the stream while pending.
    fields: Option<Vec<(Vec<u8>, Vec<u8>)>>,
}

impl StreamEntry {
    /// The endpoint of a replayed dead letter (`dead-letters replay` adds the field).
    fn replay_to(&self) -> Option<String> {
        let fields = self.fields.as_ref()?;
        let (_, endpoint) = fields
            .iter()
            .find(|(name, _)| name == dead_letters::REPLAY_FIELD)?;
        String::from_utf8(endpoint.clone()).ok()
    }

    /// Where the entry came from: the orchestrator (`redis`), or the emitter itself
    /// (`reconcile`, `backfill`: see [`intake`]).
    fn origin(&self) -> &'static str {
        let field = self
            .fields
            .iter()
            .flatten()
            .find(|(name, _)| name == intake::SOURCE_FIELD);
        match field.map(|(_, value)| value.as_slice()) {
            Some(b"reconcile") => "reconcile",
            Some(b"backfill") => "backfill",
            _ => SOURCE,
        }
    }

    /// The event in the `payload` field, or the entry as a malformed input with the reason.
    fn decode(self) -> Result<SandboxEvent, MalformedInput> {
        let malformed = |raw: &[u8], reason: String| MalformedInput {
            source: SOURCE.to_owned(),
            position: self.id.clone(),
            input: RawInput::from_bytes(raw),
            reason,
        };
        let Some(fields) = &self.fields else {
            return Err(malformed(
                b"",
                "the entry was deleted from the stream (XDEL or a trim by another client) before it was committed; its content is lost".to_owned(),
            ));
        };
        let Some((_, payload)) = fields.iter().find(|(name, _)| name == b"payload") else {
            // The fields as a JSON object; a value that is not UTF-8 keeps its bytes in base64.
            let as_json: serde_json::Map<String, serde_json::Value> = fields
                .iter()
                .map(|(name, value)| {
                    let value = match RawInput::from_bytes(value) {
                        RawInput {
                            raw: Some(text), ..
                        } => text.into(),
                        RawInput { raw_base64, .. } => serde_json::json!({ "base64": raw_base64 }),
                    };
                    (String::from_utf8_lossy(name).into_owned(), value)
                })
                .collect();
            return Err(malformed(
                serde_json::Value::Object(as_json).to_string().as_bytes(),
                "no `payload` field (the orchestrator writes XADD <stream> * payload <event JSON>)"
                    .to_owned(),
            ));
        };
        SandboxEvent::parse(payload).map_err(|e| malformed(payload, format!("invalid event: {e}")))
    }
}

/// Parses an `XREADGROUP` reply (RESP2 array or RESP3 map; nil when the wait timed out).
fn parse_read_reply(reply: Value) -> Result<Vec<StreamEntry>, String> {
    let streams = match reply {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(streams) => streams
            .into_iter()
            .map(|stream| match stream {
                Value::Array(mut pair) if pair.len() == 2 => Ok(pair.swap_remove(1)),
                other => Err(format!("expected [stream, entries], got {other:?}")),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Value::Map(streams) => streams.into_iter().map(|(_, entries)| entries).collect(),
        other => return Err(format!("expected an array of streams, got {other:?}")),
    };
    let mut entries = Vec::new();
    for stream_entries in streams {
        entries.extend(parse_entries(stream_entries)?);
    }
    Ok(entries)
}

/// What one `XAUTOCLAIM` call returned.
#[derive(Debug, PartialEq)]
struct Claim {
    /// The cursor for the next call; `0-0` when the scan is complete.
    next: String,
    /// Claimed entries, and the pending ids whose entries no longer exist (Redis has already
    /// dropped those from the pending list; they are recorded as deleted).
    entries: Vec<StreamEntry>,
}

/// Parses an `XAUTOCLAIM` reply: `[next, entries, deleted-ids]` (Redis 7).
fn parse_autoclaim_reply(reply: Value) -> Result<Claim, String> {
    let Value::Array(parts) = reply else {
        return Err(format!("expected an array, got {reply:?}"));
    };
    let mut parts = parts.into_iter();
    let (Some(next), Some(claimed), Some(deleted)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err("expected [next-id, entries, deleted-ids]".to_owned());
    };
    let mut entries = parse_entries(claimed)?;
    let Value::Array(deleted) = deleted else {
        return Err(format!("expected an array of deleted ids, got {deleted:?}"));
    };
    for id in deleted {
        entries.push(StreamEntry {
            id: text(id)?,
            fields: None,
        });
    }
    Ok(Claim {
        next: text(next)?,
        entries,
    })
}

/// Parses `[[id, [field, value, …] | nil], …]`.
fn parse_entries(value: Value) -> Result<Vec<StreamEntry>, String> {
    let Value::Array(entries) = value else {
        return Err(format!("expected an array of entries, got {value:?}"));
    };
    entries
        .into_iter()
        .map(|entry| {
            let Value::Array(parts) = entry else {
                return Err(format!("expected [id, fields], got {entry:?}"));
            };
            let mut parts = parts.into_iter();
            let id = text(parts.next().unwrap_or(Value::Nil))?;
            let fields = match parts.next().unwrap_or(Value::Nil) {
                Value::Nil => None,
                Value::Array(flat) => {
                    if flat.len() % 2 != 0 {
                        return Err(format!("entry {id} has an odd number of field values"));
                    }
                    let mut pairs = Vec::with_capacity(flat.len() / 2);
                    let mut flat = flat.into_iter();
                    while let (Some(name), Some(value)) = (flat.next(), flat.next()) {
                        pairs.push((bytes(name)?, bytes(value)?));
                    }
                    Some(pairs)
                }
                Value::Map(map) => Some(
                    map.into_iter()
                        .map(|(name, value)| Ok((bytes(name)?, bytes(value)?)))
                        .collect::<Result<_, String>>()?,
                ),
                other => return Err(format!("entry {id}: expected fields, got {other:?}")),
            };
            Ok(StreamEntry { id, fields })
        })
        .collect()
}

fn bytes(value: Value) -> Result<Vec<u8>, String> {
    match value {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.into_bytes()),
        Value::VerbatimString { text, .. } => Ok(text.into_bytes()),
        other => Err(format!("expected a string, got {other:?}")),
    }
}

fn text(value: Value) -> Result<String, String> {
    String::from_utf8(bytes(value)?).map_err(|e| format!("not UTF-8: {e}"))
}

/// Delays between reconnection attempts; reset once a connection is working again.
struct Backoff {
    builder: ExponentialBuilder,
    delays: ExponentialBackoff,
}

impl Backoff {
    fn new() -> Self {
        let builder = ExponentialBuilder::new()
            .with_min_delay(RETRY_MIN_DELAY)
            .with_max_delay(RETRY_MAX_DELAY)
            .with_jitter()
            .without_max_times();
        Self {
            delays: builder.build(),
            builder,
        }
    }

    fn next_delay(&mut self) -> Duration {
        self.delays.next().unwrap_or(RETRY_MAX_DELAY)
    }

    fn reset(&mut self) {
        self.delays = self.builder.build();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> EntryId {
        s.parse().unwrap()
    }

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    const EVENT: &str = r#"{"id":"e1","version":"v2","type":"sandbox.lifecycle.killed","timestamp":"2025-10-15T12:00:00Z","sandbox_id":"s1","sandbox_team_id":"0b8b8a4e-6f4e-4c4a-9a57-3a2f5d3b1c2d"}"#;

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

    #[test]
    fn read_reply_parses_resp2_entries_and_deleted_ones() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("sandbox.events.stream"),
            Value::Array(vec![
                Value::Array(vec![
                    bulk("1-0"),
                    Value::Array(vec![bulk("payload"), bulk(EVENT)]),
                ]),
                Value::Array(vec![bulk("2-0"), Value::Nil]),
            ]),
        ])]);
        let entries = parse_read_reply(reply).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].id, "1-0");
        assert_eq!(
            entries[0].fields,
            Some(vec![(b"payload".to_vec(), EVENT.as_bytes().to_vec())])
        );
        assert_eq!(entries[1].fields, None);
        assert_eq!(parse_read_reply(Value::Nil).unwrap(), Vec::new());
    }

    #[test]
    fn read_reply_parses_resp3_maps() {
        let reply = Value::Map(vec![(
            bulk("s"),
            Value::Array(vec![Value::Array(vec![
                bulk("3-1"),
                Value::Array(vec![bulk("payload"), bulk("{}")]),
            ])]),
        )]);
        assert_eq!(parse_read_reply(reply).unwrap()[0].id, "3-1");
    }

    #[test]
    fn autoclaim_reply_reports_claimed_and_deleted_entries() {
        let reply = Value::Array(vec![
            bulk("0-0"),
            Value::Array(vec![Value::Array(vec![
                bulk("5-0"),
                Value::Array(vec![bulk("payload"), bulk(EVENT)]),
            ])]),
            Value::Array(vec![bulk("4-0")]),
        ]);
        let claim = parse_autoclaim_reply(reply).unwrap();
        assert_eq!(claim.next, "0-0");
        let ids: Vec<_> = claim.entries.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["5-0", "4-0"]);
        assert_eq!(claim.entries[1].fields, None);
        assert!(parse_autoclaim_reply(Value::Array(vec![bulk("0-0")])).is_err());
    }

    fn entry(fields: &[(&str, &str)]) -> StreamEntry {
        StreamEntry {
            id: "7-0".into(),
            fields: Some(
                fields
                    .iter()
                    .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
                    .collect(),
            ),
        }
    }

    #[test]
    fn valid_payload_decodes_to_an_event() {
        let event = entry(&[("payload", EVENT)]).decode().unwrap();
        assert_eq!(event.id(), "e1");
        assert_eq!(event.lifecycle.label(), "kill");
    }

    #[test]
    fn bad_entries_become_malformed_inputs_with_position_and_reason() {
        let missing = entry(&[("data", "x")]).decode().unwrap_err();
        assert_eq!(missing.position, "7-0");
        assert_eq!(missing.source, "redis");
        assert_eq!(missing.input.raw.as_deref(), Some(r#"{"data":"x"}"#));
        assert!(missing.reason.contains("payload"), "{}", missing.reason);

        let not_json = entry(&[("payload", "{oops")]).decode().unwrap_err();
        assert_eq!(not_json.input.raw.as_deref(), Some("{oops"));
        assert!(
            not_json.reason.starts_with("invalid event"),
            "{}",
            not_json.reason
        );

        let no_sandbox = entry(&[("payload", r#"{"id":"e2","type":"sandbox.lifecycle.created","sandbox_team_id":"0b8b8a4e-6f4e-4c4a-9a57-3a2f5d3b1c2d"}"#)])
            .decode()
            .unwrap_err();
        assert!(
            no_sandbox.reason.contains("sandbox_id"),
            "{}",
            no_sandbox.reason
        );

        let deleted = StreamEntry {
            id: "8-0".into(),
            fields: None,
        }
        .decode()
        .unwrap_err();
        assert!(deleted.reason.contains("deleted"), "{}", deleted.reason);
    }

    #[test]
    fn gate_keys_use_the_orchestrators_format() {
        let team = Uuid::parse_str("0B8B8A4E-6F4E-4C4A-9A57-3A2F5D3B1C2D").unwrap();
        assert_eq!(gate_key(&team), "wh:0b8b8a4e-6f4e-4c4a-9a57-3a2f5d3b1c2d");
    }
}
