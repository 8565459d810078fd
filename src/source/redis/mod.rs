//! The Redis source: consumes the orchestrator's `sandbox.events.stream` through a consumer
//! group, keeps the `wh:<team>` gate keys alive, claims what lost instances left behind and
//! trims what the group has finished.
//!
//! The group's pending list is the shared record of undelivered work. An entry is acknowledged
//! (`XACK`, by `sync`) only once its event has been delivered — or dead-lettered, the dead
//! letter copied to Redis — for every endpoint that wants it; until then it stays pending, and a
//! lost node loses nothing Redis holds. The local outbox keeps its own durable copy of what was
//! read, so a Redis that restarts without its data loses nothing already read either.
//!
//! Only the instance holding the leader lease (`lease`) reads and delivers. When it becomes
//! active it first claims every entry pending in the group, whoever read it, in stream order
//! (`XAUTOCLAIM` from `0-0` with no minimum idle time), and only then reads new ones: a new
//! instance — or the same one under a new consumer name — never delivers a sandbox's new event
//! before an older one its predecessor had read.
//!
//! The parts: this file is the source and its loop (stand by, take over, read, keep the gate
//! keys); `settings` what it is built from; `client` the connection (single node or cluster,
//! TLS); `group` the consumer group (the data set's generation, take over its pending list,
//! claim, lag, trim); `entry` one entry's event and committing a batch; `reply` parsing Redis's
//! replies; `lease` the leader lease; `reading` new entries under it, and waiting for them;
//! `gate` the `wh:<team>` keys; `sync` acknowledging after delivery; `dead_letters` the shared
//! dead letters; `intake` the stream as the entrance for the emitter's own events; `view` the
//! shared view of sandboxes, `tombstones` its sweep, `view_copy` this instance's copy of it.

mod client;
mod dead_letters;
mod entry;
mod error;
mod gate;
mod group;
mod intake;
mod keys;
mod lease;
mod reading;
mod reply;
mod settings;
mod sync;
mod tombstones;
mod view;
mod view_copy;

pub use client::{RedisConnectionSettings, RedisTls};
pub use dead_letters::{SharedDeadLetters, SharedReplay};
pub use error::RedisSourceError;
pub use intake::{IntakeProgress, StreamIntake};
pub use lease::LeaseTiming;
pub use settings::RedisSettings;
pub use view::SharedSandboxView;

use crate::event::SandboxEvent;
use crate::health::{Readiness, StreamProgress};
use crate::leadership::Leadership;
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::team_scope::TeamScope;
use crate::util::backoff::Backoff;
use client::{RedisClient, RedisConnection};
use gate::GATE_KEY_REFRESH;
use group::EntryId;
use keys::Keys;
use redis::RedisError;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

/// The source name in the outbox, the metrics and the readiness report.
const SOURCE: &str = "redis";
/// Entries per `XREADGROUP` / `XAUTOCLAIM`, and so per outbox commit.
const BATCH: usize = 256;
/// How long one wait for new entries (`XREAD BLOCK`) lasts; timers run between reads.
const BLOCK: Duration = Duration::from_secs(2);
/// How often a standby checks its connection to Redis (for readiness).
const STANDBY_PING: Duration = Duration::from_secs(2);
/// How often the group's lag is read and the stream trimmed.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(1);
/// A consumer idle this long with nothing pending is an instance that is gone (a renamed or
/// removed allocation); it is removed from the group so the consumer list stays short.
/// A live consumer touches the group every `BLOCK`.
const FORGET_CONSUMER_AFTER: Duration = Duration::from_secs(24 * 3600);
/// How often the shared view of sandboxes is rid of tombstones no entry can bring back.
const TOMBSTONE_SWEEP_EVERY: Duration = Duration::from_secs(600);
/// How often each instance copies the shared view of sandboxes into its outbox (what the view
/// is rebuilt from after Redis lost its data): a standby that takes over then has a copy at
/// most this old.
const VIEW_COPY_EVERY: Duration = Duration::from_secs(5);
/// The first delay before reconnecting; later ones grow exponentially, with jitter.
const RETRY_MIN_DELAY: Duration = Duration::from_millis(200);
/// The longest delay between reconnection attempts.
const RETRY_MAX_DELAY: Duration = Duration::from_secs(30);

/// Consumes the orchestrator's sandbox event stream into the outbox.
pub struct RedisStreamSource {
    config: RedisSettings,
    teams: TeamScope,
    outbox: Outbox,
    metrics: Arc<Metrics>,
    /// Where this source reports whether it reads (`/readyz`).
    readiness: Readiness,
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
    /// When the shared view was last copied into the outbox.
    last_view_copy: Option<Instant>,
    /// Changes to the shared view that Redis failed to take (applied once it answers again).
    unapplied_view: std::sync::Mutex<Vec<view::ViewChange>>,
    /// Where reading stands, for the reconciler's gate.
    progress: watch::Sender<StreamProgress>,
}

/// The lease and the acknowledgements: they outlive the pipeline's drain, so the lease is
/// renewed while in-flight deliveries finish and what they delivered is acknowledged.
pub struct RedisBackground {
    stop_syncing: CancellationToken,
    syncer: AbortOnDropHandle<()>,
    stop_keeping: CancellationToken,
    keeper: AbortOnDropHandle<()>,
}

impl RedisBackground {
    /// Acknowledges what is finished, then gives the lease up, and returns. In that order: the
    /// next holder takes the lease at once and claims every entry still pending, so an entry
    /// delivered here and not yet acknowledged would be delivered twice.
    pub async fn finish(self) {
        self.stop_syncing.cancel();
        let _ = self.syncer.await;
        self.stop_keeping.cancel();
        let _ = self.keeper.await;
    }
}

impl RedisStreamSource {
    /// A source for `config`, keeping the gate keys of `teams` while `leadership` is active;
    /// fails only on a connection setting the Redis client refuses (a CA it cannot parse).
    pub fn new(
        config: RedisSettings,
        teams: TeamScope,
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
            teams,
            outbox,
            readiness: metrics.readiness(),
            metrics,
            client: Arc::new(client),
            leadership,
            keys,
            addr,
            other_groups: Vec::new(),
            other_teams_seen: Default::default(),
            generation: watch::channel(None).0,
            progress: watch::channel(StreamProgress::Starting).0,
            last_sweep: None,
            last_view_copy: None,
            unapplied_view: Default::default(),
        })
    }

    /// Where reading the stream stands (readiness and lag), as it changes.
    pub fn progress(&self) -> watch::Receiver<StreamProgress> {
        self.progress.subscribe()
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
        let keeper = lease::LeaseKeeper {
            client: client.clone(),
            keys: self.keys.clone(),
            me: self.config.consumer.clone(),
            timing,
            leadership: self.leadership.clone(),
            metrics: self.metrics.clone(),
        };
        let stop_keeping = CancellationToken::new();
        let keeper = AbortOnDropHandle::new(tokio::spawn(keeper.run(stop_keeping.clone())));
        let syncer = sync::StreamSyncer {
            client,
            keys: self.keys.clone(),
            group: self.config.group.clone(),
            outbox: self.outbox.clone(),
            generation: self.generation.subscribe(),
        };
        let stop_syncing = CancellationToken::new();
        let syncer = AbortOnDropHandle::new(tokio::spawn(syncer.run(stop_syncing.clone())));
        RedisBackground {
            stop_syncing,
            syncer,
            stop_keeping,
            keeper,
        }
    }

    /// Runs until `shutdown` is cancelled; returns after the current batch is committed.
    ///
    /// Connection and outbox failures are logged, reported through readiness and retried with
    /// backoff.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), RedisSourceError> {
        let client = self.client.clone();
        self.warn_about_configuration();
        self.not_ready(format!("connecting to {}", self.addr));
        let mut backoff = Backoff::new(RETRY_MIN_DELAY, RETRY_MAX_DELAY);
        loop {
            let error = match self.consume(&client, &mut backoff, &shutdown).await {
                Ok(()) => {
                    tracing::info!(redis = %self.addr, "Redis source stopped");
                    return Ok(());
                }
                Err(error) => error,
            };
            let delay = backoff.next_delay();
            self.not_ready(error.to_string());
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

    /// Reported to readiness and to the reconciler's gate alike.
    fn not_ready(&self, detail: String) {
        self.readiness.set(SOURCE, false, detail.clone());
        self.progress.send_replace(StreamProgress::NotReady(detail));
    }

    fn warn_about_configuration(&self) {
        if self.teams.configured().is_empty() && !self.teams.accepts_registrations() {
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
            self.progress
                .send_replace(StreamProgress::Reading { lag: None });
            self.readiness.set(
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
                        self.copy_view_when_due(&mut conn).await?;
                    }
                }
            };
            // Only once the group exists: see `ensure_group` for why the order matters.
            self.refresh_gate_keys(&mut conn).await?;
            let Some(mut last_seen) = self.take_over(&mut conn, &generation, term).await? else {
                continue;
            };
            self.readiness.set(
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
                teams = self.teams.gate_teams().len(),
                "consuming the orchestrator's event stream"
            );
            let claim_interval = (self.config.claim_idle / 2)
                .clamp(Duration::from_millis(500), Duration::from_secs(30));
            let start = Instant::now();
            let mut next_gate_refresh = start + GATE_KEY_REFRESH;
            let mut gate_generation = self.teams.generation();
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
                // A team that registers (or loses) its last webhook is served at once.
                if now >= next_gate_refresh || self.teams.generation() != gate_generation {
                    gate_generation = self.teams.generation();
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
                    let full = entries.len() == BATCH;
                    self.commit(&mut conn, entries, &generation).await?;
                    if full {
                        continue;
                    }
                    // A short batch was all there was: asking again would cost a fenced read
                    // that finds nothing, at the rates a cluster runs once per event. Whatever
                    // arrived meanwhile is past `last_seen`, so the wait below returns at once.
                }
                // Nothing new: wait for the stream to grow past what was seen.
                if let Some(last) = self.wait_for_growth(&mut conn, &last_seen).await? {
                    last_seen = last;
                }
            }
        }
    }

    /// Whether `event` belongs to a served team (every team when none is configured).
    fn serves(&self, event: &SandboxEvent) -> bool {
        self.teams.serves(event.team_id())
    }

    fn redis_error(&self, error: RedisError) -> RedisSourceError {
        RedisSourceError::Redis {
            addr: self.addr.clone(),
            error,
        }
    }
}

#[async_trait::async_trait]
impl super::Source for RedisStreamSource {
    fn name(&self) -> &'static str {
        SOURCE
    }

    async fn run(self: Box<Self>, shutdown: CancellationToken) -> Result<(), super::SourceError> {
        Ok(RedisStreamSource::run(*self, shutdown).await?)
    }
}
