//! Webhooks registered through the events API become endpoints while the service runs: every
//! couple of seconds the enabled ones are read from Postgres (so both instances of an HA pair
//! follow a change within seconds) and each gets a route in the outbox and a dispatcher, started
//! when it has deliveries to make — the same durable, ordered, retried path as configured
//! endpoints — delivering only its team's
//! events in the `e2b-cloud` format, signed with its own secret, and never to an address inside
//! the cluster. Teams with an enabled webhook are served (their `wh:<team>` gate key is kept).

use crate::config::EndpointConfig;
use crate::deliver::dispatch::{CommitQueue, Dispatcher, OnDemand, Oversight, SharedDelivery};
use crate::deliver::format::WireFormat;
use crate::deliver::http::WebhookClient;
use crate::deliver::journal::DeliveryJournal;
use crate::deliver::retry::RetryPolicy;
use crate::deliver::shares::DeliveryShares;
use crate::deliver::sign::{SecretSet, SignatureEncoding};
use crate::event::EventFilter;
use crate::leadership::Leadership;
use crate::outbox::{Outbox, Route};
use crate::postgres::Database;
use crate::postgres::webhooks::{ENDPOINT_PREFIX, EnabledWebhooks, Registration, endpoint_id};
use crate::team_scope::TeamScope;
use crate::util::destination::DestinationPolicy;
use crate::util::secret::Secret;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How often the registered webhooks are read.
const POLL_EVERY: Duration = Duration::from_secs(2);
/// The last set read from Postgres, kept in the outbox: after a restart the known webhooks are
/// delivered to before (and while) Postgres answers.
const SNAPSHOT_KEY: &str = "registered_webhooks";

/// A saved state as `status --data-dir` shows it: the snapshot of registered webhooks holds
/// their signing secrets, so of it only how many webhooks it holds; every other state as saved.
pub fn shown_state<'a>(key: &str, value: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
    if key != SNAPSHOT_KEY {
        return value.into();
    }
    let held = serde_json::from_slice::<Vec<serde::de::IgnoredAny>>(value).map(|w| w.len());
    let shown = match held {
        Ok(count) => serde_json::json!({ "webhooks": count }),
        Err(_) => serde_json::json!({ "webhooks": "unreadable" }),
    };
    shown.to_string().into_bytes().into()
}

/// How registered webhooks are delivered.
#[derive(Clone)]
pub struct DeliverySettings {
    /// The retry schedule (the operator's).
    pub retry: RetryPolicy,
    /// Attempts in flight per team (all its webhooks together).
    pub team_concurrency: usize,
    /// Attempts in flight for all registered webhooks together.
    pub total_concurrency: usize,
    /// Attempt timeout.
    pub timeout: Duration,
    /// Bytes of a response body read at most.
    pub response_body_limit: usize,
    /// Where user URLs may connect.
    pub destinations: DestinationPolicy,
}

/// Starts, changes and stops the dispatchers of registered webhooks.
pub struct WebhookRegistry {
    database: Database,
    outbox: Outbox,
    teams: TeamScope,
    journal: Arc<DeliveryJournal>,
    leadership: Leadership,
    settings: DeliverySettings,
    /// One HTTP client, commit queue and set of shares for every registered webhook.
    shared: SharedDelivery,
    /// Registered webhooks have no operator pause: one switch, always off, for all of them.
    never_paused: watch::Sender<bool>,
    running: HashMap<Uuid, Running>,
    /// Enabled webhooks whose secret does not open here: not delivered to, their routes and
    /// queued deliveries kept (not dropped as a deleted webhook's), until the secret opens again.
    unopened: HashSet<Uuid>,
    /// True once the registered webhooks are known (from the snapshot or from Postgres):
    /// sources wait for it, so no event of a registered team passes before its route exists.
    known: watch::Sender<bool>,
    /// What the snapshot holds.
    saved: Option<u64>,
    /// The version of the rows last applied (see `Database::enabled_webhooks_version`).
    applied: Option<String>,
}

/// One registered webhook as the snapshot keeps it: its secret sealed as in Postgres (base64 of
/// the envelope), so the data directory holds no secret either.
#[derive(serde::Serialize, serde::Deserialize)]
struct Saved {
    id: Uuid,
    team_id: Uuid,
    url: String,
    events: Vec<String>,
    sealed_secret: String,
}

struct Running {
    /// Changes when anything the dispatcher was built from changes.
    fingerprint: u64,
    dispatcher: OnDemand,
    /// Its endpoint id and team, as `registered_webhook_info` exports them.
    endpoint: String,
    team: Uuid,
}

impl WebhookRegistry {
    /// A registry delivering through `outbox`, serving its teams in `teams`.
    pub fn new(
        database: Database,
        outbox: Outbox,
        teams: TeamScope,
        oversight: (Arc<DeliveryJournal>, Leadership),
        settings: DeliverySettings,
    ) -> Result<Self, crate::deliver::http::ClientError> {
        let shared = SharedDelivery {
            client: WebhookClient::restricted(
                settings.timeout,
                settings.response_body_limit,
                settings.destinations.clone(),
            )?,
            commits: CommitQueue::start(outbox.clone()),
            retry: Arc::new(settings.retry.clone()),
            shares: DeliveryShares::new(settings.team_concurrency, settings.total_concurrency),
        };
        Ok(Self {
            database,
            outbox,
            teams,
            journal: oversight.0,
            leadership: oversight.1,
            settings,
            shared,
            never_paused: watch::channel(false).0,
            running: HashMap::new(),
            unopened: HashSet::new(),
            known: watch::channel(false).0,
            saved: None,
            applied: None,
        })
    }

    /// Becomes true once the registered webhooks are known.
    pub fn known(&self) -> watch::Receiver<bool> {
        self.known.subscribe()
    }

    /// Starts delivering to the webhooks known before the last stop, if any were saved.
    pub async fn restore(&mut self) {
        let saved: Vec<Saved> = match self.outbox.load_state(SNAPSHOT_KEY).await {
            Ok(Some(bytes)) => match serde_json::from_slice(&bytes) {
                Ok(saved) => saved,
                Err(_) => return,
            },
            _ => return,
        };
        // A snapshot that does not open (another key) is ignored: Postgres tells, once it answers.
        let Some(registrations) = saved
            .into_iter()
            .map(|saved| saved.into_registration(&self.database))
            .collect::<Option<Vec<Registration>>>()
        else {
            return;
        };
        self.saved = Some(snapshot_fingerprint(&registrations));
        tracing::info!(
            webhooks = registrations.len(),
            "delivering to the registered webhooks known before the restart"
        );
        self.apply(registrations).await;
        self.known.send_replace(true);
    }

    /// Follows Postgres until `shutdown`; then lets the dispatchers drain.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(POLL_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut swept = false;
        let mut failing = false;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => break,
            }
            if !self.database.is_ready() {
                continue;
            }
            match self.read_if_changed().await {
                Ok(changed) => {
                    if failing {
                        tracing::info!("reading registered webhooks again");
                        failing = false;
                    }
                    if let Some((enabled, version)) = changed {
                        self.save(&enabled.registrations).await;
                        self.unopened = enabled.unopened;
                        self.apply(enabled.registrations).await;
                        self.applied = Some(version);
                        self.known.send_replace(true);
                    }
                    if !swept {
                        swept = self.sweep_stale().await;
                    }
                }
                // Known webhooks keep being delivered while Postgres is away.
                Err(e) if !failing => {
                    tracing::warn!(error = %e, "cannot read registered webhooks; delivering to the known ones meanwhile");
                    failing = true;
                }
                Err(_) => {}
            }
        }
        for (_, running) in self.running.drain() {
            running.dispatcher.stop().await;
        }
    }

    /// The enabled webhooks and their version, when their rows changed since the last read:
    /// thousands of rows are not read (and their secrets opened) every 2 s for nothing.
    async fn read_if_changed(
        &self,
    ) -> Result<Option<(EnabledWebhooks, String)>, crate::postgres::StoreError> {
        let version = self.database.enabled_webhooks_version().await?;
        if self.applied.as_ref() == Some(&version) {
            return Ok(None);
        }
        let enabled = self.database.enabled_webhooks().await?;
        Ok(Some((enabled, version)))
    }

    /// Keeps `registrations` in the outbox when they differ from what it holds.
    async fn save(&mut self, registrations: &[Registration]) {
        let fingerprint = snapshot_fingerprint(registrations);
        if self.saved == Some(fingerprint) {
            return;
        }
        let Ok(saved) = registrations
            .iter()
            .map(|r| {
                Ok(Saved {
                    id: r.webhook.id,
                    team_id: r.webhook.team_id,
                    url: r.webhook.url.clone(),
                    events: r.webhook.events.clone(),
                    sealed_secret: self
                        .database
                        .seal_as_text(&r.signature_secret, r.webhook.id)?,
                })
            })
            .collect::<Result<Vec<Saved>, crate::postgres::StoreError>>()
        else {
            return;
        };
        let bytes = serde_json::to_vec(&saved).unwrap_or_default();
        match self.outbox.save_state(SNAPSHOT_KEY, bytes).await {
            Ok(()) => self.saved = Some(fingerprint),
            Err(e) => {
                tracing::warn!(error = %e, "cannot keep the registered webhooks in the outbox")
            }
        }
    }

    async fn apply(&mut self, registrations: Vec<Registration>) {
        let wanted: HashMap<Uuid, Registration> = registrations
            .into_iter()
            .map(|r| (r.webhook.id, r))
            .collect();
        let gone: Vec<Uuid> = self
            .running
            .keys()
            .filter(|id| !wanted.contains_key(id) && !self.unopened.contains(id))
            .copied()
            .collect();
        for id in gone {
            self.stop(id).await;
            // Its series go with it: deleted webhooks' counters would otherwise pile up.
            self.outbox.metrics().forget_endpoint(&endpoint_id(id));
            match self.outbox.remove_route(&endpoint_id(id)).await {
                Ok(dropped) => {
                    tracing::info!(webhook = %id, dropped, "webhook deleted or disabled: no longer delivering to it")
                }
                Err(e) => {
                    tracing::warn!(webhook = %id, error = %e, "cannot drop the deliveries of a removed webhook")
                }
            }
        }
        // Its route stays: what is queued for it, and what arrives meanwhile, waits on disk for
        // the secret to open again rather than be signed with one the team may have replaced.
        let unopened: Vec<Uuid> = self.unopened.iter().copied().collect();
        for id in unopened {
            self.stop(id).await;
        }
        for (id, registration) in &wanted {
            let fingerprint = fingerprint(registration);
            if self
                .running
                .get(id)
                .is_some_and(|r| r.fingerprint == fingerprint)
            {
                continue;
            }
            self.stop(*id).await;
            match self.start(registration, fingerprint) {
                Ok(running) => {
                    self.running.insert(*id, running);
                }
                Err(e) => {
                    tracing::warn!(webhook = %id, error = %e, "cannot deliver to a registered webhook")
                }
            }
        }
        self.teams
            .set_registered(wanted.values().map(|r| r.webhook.team_id).collect());
    }

    /// Stops the dispatcher of `id`, letting its in-flight attempts finish.
    async fn stop(&mut self, id: Uuid) {
        if let Some(running) = self.running.remove(&id) {
            self.outbox
                .metrics()
                .registered_webhook_gone(&running.endpoint, &running.team.to_string());
            running.dispatcher.stop().await;
        }
    }

    fn start(&self, registration: &Registration, fingerprint: u64) -> Result<Running, String> {
        let endpoint = self.endpoint(registration)?;
        self.outbox.set_route(Route::from(&endpoint));
        // Its delivery series appear with its first attempt: thousands of idle webhooks do not
        // each keep (and export) nine series at zero.
        self.outbox
            .metrics()
            .registered_webhook(&endpoint.id, &registration.webhook.team_id.to_string());
        let dispatcher = Dispatcher::registered(
            endpoint,
            self.outbox.clone(),
            Oversight {
                journal: self.journal.clone(),
                paused: self.never_paused.subscribe(),
            },
            self.leadership.clone(),
            &self.shared,
            registration.webhook.team_id,
        );
        let dispatcher = OnDemand::start(dispatcher, &self.outbox, super::DRAIN_DEADLINE);
        tracing::info!(webhook = %registration.webhook.id, team = %registration.webhook.team_id, "delivering to a registered webhook");
        Ok(Running {
            fingerprint,
            dispatcher,
            endpoint: endpoint_id(registration.webhook.id),
            team: registration.webhook.team_id,
        })
    }

    fn endpoint(&self, registration: &Registration) -> Result<EndpointConfig, String> {
        let webhook = &registration.webhook;
        let events =
            EventFilter::parse(&webhook.events.join(","))?.for_teams(vec![webhook.team_id]);
        Ok(EndpointConfig {
            id: endpoint_id(webhook.id),
            url: url::Url::parse(&webhook.url).map_err(|e| e.to_string())?,
            format: WireFormat::E2bCloud,
            secrets: SecretSet::from_secrets(vec![Secret::new(
                registration.signature_secret.clone(),
            )])?,
            events,
            timeout: self.settings.timeout,
            response_body_limit: self.settings.response_body_limit,
            webhook_id: webhook.id,
            signature_encoding: SignatureEncoding::default(),
            // A registered URL is reached through the public roots only, as on E2B Cloud.
            trusted_ca: None,
        })
    }

    /// Drops what the outbox still holds for webhooks deleted while this instance was down.
    /// Returns whether the sweep could be done.
    async fn sweep_stale(&self) -> bool {
        let status = match self.outbox.status().await {
            Ok(status) => status,
            Err(_) => return false,
        };
        for backlog in status.endpoints {
            let Some(id) = backlog.endpoint.strip_prefix(ENDPOINT_PREFIX) else {
                continue;
            };
            let known = Uuid::parse_str(id)
                .is_ok_and(|id| self.running.contains_key(&id) || self.unopened.contains(&id));
            if !known {
                match self.outbox.remove_route(&backlog.endpoint).await {
                    Ok(dropped) => {
                        tracing::info!(endpoint = %backlog.endpoint, dropped, "dropped deliveries of a webhook that no longer exists")
                    }
                    Err(_) => return false,
                }
            }
        }
        true
    }
}

impl Saved {
    fn into_registration(self, database: &Database) -> Option<Registration> {
        let signature_secret = database.open_text(&self.sealed_secret, self.id)?;
        Some(Registration {
            webhook: crate::postgres::webhooks::Webhook {
                id: self.id,
                team_id: self.team_id,
                name: String::new(),
                url: self.url,
                enabled: true,
                events: self.events,
                created_at: jiff::Timestamp::UNIX_EPOCH,
            },
            signature_secret,
        })
    }
}

fn snapshot_fingerprint(registrations: &[Registration]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for registration in registrations {
        (registration.webhook.id, fingerprint(registration)).hash(&mut hasher);
    }
    hasher.finish()
}

fn fingerprint(registration: &Registration) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let w = &registration.webhook;
    (
        &w.team_id,
        &w.url,
        &w.events,
        &registration.signature_secret,
    )
        .hash(&mut hasher);
    hasher.finish()
}
